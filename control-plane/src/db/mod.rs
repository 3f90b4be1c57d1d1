//! The metadata database (sea-orm over SQLite or PostgreSQL, chosen by URL scheme): connects,
//! migrates, and converts rows to and from domain types by hand. Every read that an API caller
//! can reach takes a `Visibility` and applies it in SQL (`capture_scope`, `violation_scope`,
//! `site_scope`): this is where agency A is kept out of agency B's rows.
//!
//! This file holds `Db` (connect, pool accessors), those scopes, the keyset-cursor condition and
//! the conversions every table shares. The queries are `impl Db` blocks, one file per domain:
//! `captures` (captures, violations and their review, statistics), `receipts` (deletion
//! receipts), `fleet` (agents, their revocation, cameras, sites), `admin` (lane policies,
//! agencies, API keys, the audit log), `configs` (site configs and their rollout), `history`
//! (component history: samples, rollups, retention and its background task) and `leader` (leader
//! terms' fencing tokens, CR-managed sites); `writer` batches ingest's inserts and history's
//! samples; `entities` and `migration` are the tables.

mod admin;
mod captures;
mod configs;
mod entities;
mod fleet;
pub mod history;
pub mod jobs;
pub mod leader;
mod migration;
mod receipts;
pub mod retention;
pub mod sessions;
pub mod webhooks;
pub mod writer;

use sea_orm::sea_query::{Query, SelectStatement};
use sea_orm::{ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;

pub use captures::{Inserted, Reviewed};
pub use configs::NewSiteConfig;

use crate::config::HistoryConfig;
use crate::domain::{CaptureCursor, Decision, HovPolicy, Visibility};
use entities::{sites, violations};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("cannot create database directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("stored row {table}/{id} is malformed: {why}")]
    Malformed { table: &'static str, id: String, why: String },
    #[error(
        "fenced off: this replica's term (epoch {epoch}) of leader lock {lock:?} is over; another replica leads"
    )]
    Fenced { lock: String, epoch: i64 },
}

#[derive(Debug, Clone)]
pub struct Db {
    conn: DatabaseConnection,
    /// (site, camera) pairs this process has already registered in `cameras`, so that ingest
    /// writes the camera row once per process instead of once per capture.
    known_cameras: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
    /// Lane policies as ingest read them, each for at most [`POLICY_CACHE_TTL`]; see
    /// [`Db::hov_policy_for_ingest`].
    policies: std::sync::Arc<std::sync::Mutex<PolicyCache>>,
    /// How component history is kept (`[history]`); the defaults until [`Db::with_history`].
    history: HistoryConfig,
    /// Webhook endpoints as ingest read them (`webhooks::ENDPOINT_CACHE_TTL`).
    endpoints: std::sync::Arc<std::sync::Mutex<webhooks::EndpointCache>>,
    /// Told whenever jobs were inserted through this process, so that the queue's producers here
    /// claim them at once rather than at their next poll.
    jobs_inserted: std::sync::Arc<tokio::sync::Notify>,
}

type PolicyCache = std::collections::HashMap<(String, u32), (std::time::Instant, Option<HovPolicy>)>;

/// How long ingest may decide with a lane policy it read before: a change made through another
/// replica is in force for ingest here within this time (one made here, at once).
pub const POLICY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Lanes whose policy is kept at most; past it the cache starts over.
const POLICY_CACHE_MAX: usize = 10_000;

impl Db {
    /// Connects (creating a SQLite file's directory), enables WAL on SQLite, runs migrations.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let is_sqlite = url.starts_with("sqlite:");
        if is_sqlite && let Some(parent) = sqlite_parent_dir(url) {
            std::fs::create_dir_all(&parent)
                .map_err(|source| DbError::Dir { path: parent.display().to_string(), source })?;
        }
        let mut options = ConnectOptions::new(url.to_owned());
        options.sqlx_logging(false);
        if url.contains(":memory:") {
            // every pooled connection would otherwise see its own empty database
            options.max_connections(1).min_connections(1);
        }
        let conn = Database::connect(options).await?;
        if is_sqlite {
            conn.execute_unprepared("PRAGMA journal_mode=WAL").await?;
        }
        migrate(&conn).await?;
        let history = HistoryConfig::default();
        Ok(Self {
            conn,
            known_cameras: Default::default(),
            policies: Default::default(),
            history,
            endpoints: Default::default(),
            jobs_inserted: Default::default(),
        })
    }

    /// Resolves the next time jobs are inserted through this process.
    pub fn jobs_inserted(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.jobs_inserted.clone()
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        Ok(self.conn.ping().await?)
    }

    /// The PostgreSQL pool under sea-orm, for LISTEN/NOTIFY between replicas; `None` on SQLite.
    pub fn postgres_pool(&self) -> Option<&sea_orm::sqlx::PgPool> {
        (self.conn.get_database_backend() == sea_orm::DbBackend::Postgres)
            .then(|| self.conn.get_postgres_connection_pool())
    }
}

/// Rows strictly after a cursor in `(at DESC, id DESC)` order. The redundant `at <= cursor`
/// gives the planner an index bound: without it a deep page walks the index from the newest
/// row, filtering every row newer than the cursor.
fn after_cursor<C: ColumnTrait>(at: C, id: C, c: CaptureCursor) -> Condition {
    Condition::all().add(at.lte(c.captured_at)).add(
        Condition::any()
            .add(at.lt(c.captured_at))
            .add(Condition::all().add(at.eq(c.captured_at)).add(id.lt(c.id.to_string()))),
    )
}

/// The ids of the sites in a jurisdiction.
fn sites_in(jurisdiction: &str) -> SelectStatement {
    Query::select()
        .column(sites::Column::Id)
        .from(sites::Entity)
        .and_where(sites::Column::Jurisdiction.eq(jurisdiction))
        .to_owned()
}

fn site_scope(vis: &Visibility) -> Condition {
    match vis {
        Visibility::All => Condition::all(),
        Visibility::Jurisdiction { jurisdiction, .. } => {
            Condition::all().add(sites::Column::Jurisdiction.eq(jurisdiction.as_str()))
        }
    }
}

fn violation_scope(vis: &Visibility) -> Condition {
    match vis {
        Visibility::All => Condition::all(),
        Visibility::Jurisdiction { jurisdiction, .. } => {
            Condition::all().add(violations::Column::SiteId.in_subquery(sites_in(jurisdiction)))
        }
    }
}

fn capture_scope(vis: &Visibility) -> Condition {
    match vis {
        Visibility::All => Condition::all(),
        Visibility::Jurisdiction { jurisdiction, all_captures } => {
            // an agency never sees operators' test captures
            let cond = Condition::all()
                .add(entities::captures::Column::SiteId.in_subquery(sites_in(jurisdiction)))
                .add(entities::captures::Column::Decision.ne(Decision::Test.as_str()));
            if *all_captures {
                cond
            } else {
                let flagged =
                    Query::select().column(violations::Column::CaptureId).from(violations::Entity).to_owned();
                cond.add(entities::captures::Column::Id.in_subquery(flagged))
            }
        }
    }
}

/// The directory of a `sqlite://path?..` / `sqlite:path` file, when there is one to create.
fn sqlite_parent_dir(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    let parent = std::path::Path::new(path).parent()?;
    (!parent.as_os_str().is_empty()).then(|| parent.to_path_buf())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Widens through the shortest decimal form so that 12.3f32 is stored as 12.3, not 12.300000190734863.
fn f32_to_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// Applies the pending migrations, unless a newer release already migrated this database
/// further (it has migrations this binary does not know): then this release starts on the newer
/// schema as it is, which is what a rollback needs. Migrations only ever add tables, columns
/// with defaults and indexes, so an older release runs on a newer schema.
async fn migrate(conn: &DatabaseConnection) -> Result<(), DbError> {
    let known: std::collections::HashSet<String> =
        migration::Migrator::migrations().iter().map(|m| m.name().to_owned()).collect();
    let applied = conn
        .query_all(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            "SELECT version FROM seaql_migrations",
        ))
        .await
        // no table yet: a new database
        .unwrap_or_default();
    let newer: Vec<String> = applied
        .iter()
        .filter_map(|row| row.try_get::<String>("", "version").ok())
        .filter(|v| !known.contains(v))
        .collect();
    if !newer.is_empty() {
        tracing::warn!(
            ?newer,
            "the database was migrated by a newer release: starting on its schema without migrating"
        );
        return Ok(());
    }
    migration::Migrator::up(conn, None).await?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::domain::{
        Capture, CaptureMeta, Decision, ImageContentType, OccupancyStatus, SectionCount, VehicleClass,
    };

    pub(crate) async fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/lanewatch.db?mode=rwc", dir.path().display());
        let db = Db::connect(&url).await.unwrap();
        (dir, db)
    }

    pub(crate) fn capture(id: Uuid, captured_at: DateTime<Utc>) -> Capture {
        let meta = CaptureMeta {
            id,
            site_id: "a1-km12".into(),
            lane: 1,
            captured_at,
            detected_at: Some(captured_at),
            vehicle_class: VehicleClass::Truck,
            occupancy_status: OccupancyStatus::Counted,
            occupants: Some(1),
            speed_kmh: Some(88.5),
            height_m: 3.2,
            width_m: 2.5,
            camera_id: "cam0".into(),
            config_version: 3,
            sections: vec![SectionCount { section: "driver".into(), occupants: 1, confidence: 0.9 }],
            confidence: Some(0.9),
            model_version: Some("occ-1".into()),
            test: false,
        };
        Capture {
            image_key: crate::domain::image_key(&meta, ImageContentType::Jpeg, &[7u8; 32]),
            meta,
            agent_id: "agent-1".into(),
            image_sha256: [7u8; 32],
            image_bytes: 10,
            image_content_type: ImageContentType::Jpeg,
            received_at: Utc::now(),
            decision: Decision::Compliant,
            trace_parent: None,
        }
    }

    #[test]
    fn sqlite_parent_dirs() {
        assert_eq!(sqlite_parent_dir("sqlite://data/x.db?mode=rwc"), Some("data".into()));
        assert_eq!(sqlite_parent_dir("sqlite::memory:"), None);
        assert_eq!(sqlite_parent_dir("sqlite://x.db"), None);
    }

    #[tokio::test]
    async fn a_database_a_newer_release_migrated_is_used_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display());
        let db = Db::connect(&url).await.unwrap();
        // a newer release applied a migration this one does not know
        db.conn
            .execute_unprepared(
                "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m9999_future', 0)",
            )
            .await
            .unwrap();
        drop(db);
        let again = Db::connect(&url).await.expect("an older release starts on the newer schema");
        again.ping().await.unwrap();
    }
}

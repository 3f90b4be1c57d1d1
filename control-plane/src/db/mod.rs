//! The metadata database (sea-orm over SQLite or PostgreSQL, chosen by URL scheme): connects,
//! migrates, and converts rows to and from domain types by hand.

mod entities;
mod migration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use sea_orm_migration::MigratorTrait;
use uuid::Uuid;

use crate::domain::{
    Agent, AgentHello, AgentPulse, Capture, CaptureCursor, CaptureMeta, Health, ImageContentType,
    OccupancyStatus, VehicleClass,
};
use entities::{agents, captures};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("cannot create database directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("stored row {table}/{id} is malformed: {why}")]
    Malformed { table: &'static str, id: String, why: String },
}

/// Whether an insert stored a new row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct Db {
    conn: DatabaseConnection,
}

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
        migration::Migrator::up(&conn, None).await?;
        Ok(Self { conn })
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        Ok(self.conn.ping().await?)
    }

    /// At start-up no session is live, so no agent is online.
    pub async fn mark_all_offline(&self) -> Result<(), DbError> {
        agents::Entity::update_many().col_expr(agents::Column::Online, false.into()).exec(&self.conn).await?;
        Ok(())
    }

    pub async fn upsert_agent(&self, hello: &AgentHello, now: DateTime<Utc>) -> Result<(), DbError> {
        let row = agents::ActiveModel {
            id: Set(hello.agent_id.clone()),
            site_id: Set(hello.site_id.clone()),
            software_version: Set(hello.software_version.clone()),
            config_version: Set(to_i64(hello.config_version)),
            online: Set(true),
            health: Set(Health::Unknown.as_str().to_owned()),
            buffered_captures: Set(0),
            last_seen: Set(now),
            first_seen: Set(now),
        };
        agents::Entity::insert(row)
            .on_conflict(
                OnConflict::column(agents::Column::Id)
                    .update_columns([
                        agents::Column::SiteId,
                        agents::Column::SoftwareVersion,
                        agents::Column::ConfigVersion,
                        agents::Column::Online,
                        agents::Column::LastSeen,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.conn)
            .await?;
        Ok(())
    }

    pub async fn record_heartbeat(
        &self,
        agent_id: &str,
        pulse: AgentPulse,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        agents::Entity::update_many()
            .col_expr(agents::Column::LastSeen, now.into())
            .col_expr(agents::Column::Health, pulse.health.as_str().into())
            .col_expr(agents::Column::BufferedCaptures, to_i64(pulse.buffered_captures).into())
            .col_expr(agents::Column::Online, true.into())
            .filter(agents::Column::Id.eq(agent_id))
            .exec(&self.conn)
            .await?;
        Ok(())
    }

    pub async fn touch_agent(&self, agent_id: &str, now: DateTime<Utc>) -> Result<(), DbError> {
        agents::Entity::update_many()
            .col_expr(agents::Column::LastSeen, now.into())
            .filter(agents::Column::Id.eq(agent_id))
            .exec(&self.conn)
            .await?;
        Ok(())
    }

    pub async fn mark_offline(&self, agent_id: &str) -> Result<(), DbError> {
        agents::Entity::update_many()
            .col_expr(agents::Column::Online, false.into())
            .filter(agents::Column::Id.eq(agent_id))
            .exec(&self.conn)
            .await?;
        Ok(())
    }

    pub async fn agents(&self) -> Result<Vec<Agent>, DbError> {
        let rows = agents::Entity::find().order_by_asc(agents::Column::Id).all(&self.conn).await?;
        Ok(rows.into_iter().map(agent_from_row).collect())
    }

    pub async fn agent(&self, id: &str) -> Result<Option<Agent>, DbError> {
        Ok(agents::Entity::find_by_id(id.to_owned()).one(&self.conn).await?.map(agent_from_row))
    }

    pub async fn capture_exists(&self, id: Uuid) -> Result<bool, DbError> {
        let found = captures::Entity::find_by_id(id.to_string())
            .select_only()
            .column(captures::Column::Id)
            .into_tuple::<String>()
            .one(&self.conn)
            .await?;
        Ok(found.is_some())
    }

    /// Inserts the capture unless its id exists already (`ON CONFLICT (id) DO NOTHING`).
    pub async fn insert_capture(&self, c: &Capture) -> Result<Inserted, DbError> {
        let m = &c.meta;
        let row = captures::ActiveModel {
            id: Set(m.id.to_string()),
            agent_id: Set(c.agent_id.clone()),
            site_id: Set(m.site_id.clone()),
            lane: Set(i64::from(m.lane)),
            captured_at: Set(m.captured_at),
            detected_at: Set(m.detected_at),
            vehicle_class: Set(m.vehicle_class.as_str().to_owned()),
            occupancy_status: Set(m.occupancy_status.as_str().to_owned()),
            occupants: Set(m.occupants.map(i64::from)),
            speed_kmh: Set(m.speed_kmh.map(f32_to_f64)),
            height_m: Set(f32_to_f64(m.height_m)),
            width_m: Set(f32_to_f64(m.width_m)),
            camera_id: Set(m.camera_id.clone()),
            config_version: Set(to_i64(m.config_version)),
            image_key: Set(c.image_key.clone()),
            image_sha256: Set(hex::encode(c.image_sha256)),
            image_bytes: Set(to_i64(c.image_bytes)),
            image_content_type: Set(c.image_content_type.mime().to_owned()),
            received_at: Set(c.received_at),
        };
        let affected = captures::Entity::insert(row)
            .on_conflict(OnConflict::column(captures::Column::Id).do_nothing().to_owned())
            .exec_without_returning(&self.conn)
            .await?;
        Ok(if affected == 0 { Inserted::Duplicate } else { Inserted::New })
    }

    pub async fn capture(&self, id: Uuid) -> Result<Option<Capture>, DbError> {
        captures::Entity::find_by_id(id.to_string()).one(&self.conn).await?.map(capture_from_row).transpose()
    }

    /// Newest first by `(captured_at DESC, id DESC)`, strictly after `after` when given.
    pub async fn captures_page(
        &self,
        after: Option<CaptureCursor>,
        limit: u64,
    ) -> Result<Vec<Capture>, DbError> {
        let mut query = captures::Entity::find();
        if let Some(c) = after {
            query = query.filter(
                Condition::any().add(captures::Column::CapturedAt.lt(c.captured_at)).add(
                    Condition::all()
                        .add(captures::Column::CapturedAt.eq(c.captured_at))
                        .add(captures::Column::Id.lt(c.id.to_string())),
                ),
            );
        }
        let rows = query
            .order_by_desc(captures::Column::CapturedAt)
            .order_by_desc(captures::Column::Id)
            .limit(limit)
            .all(&self.conn)
            .await?;
        rows.into_iter().map(capture_from_row).collect()
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

fn agent_from_row(r: agents::Model) -> Agent {
    Agent {
        id: r.id,
        site_id: r.site_id,
        software_version: r.software_version,
        config_version: to_u64(r.config_version),
        online: r.online,
        health: Health::from_db(&r.health),
        buffered_captures: to_u64(r.buffered_captures),
        last_seen: r.last_seen,
        first_seen: r.first_seen,
    }
}

fn capture_from_row(r: captures::Model) -> Result<Capture, DbError> {
    let malformed =
        |why: &str| DbError::Malformed { table: "captures", id: r.id.clone(), why: why.to_owned() };
    let id = Uuid::parse_str(&r.id).map_err(|_| malformed("id is not a uuid"))?;
    let sha: [u8; 32] = hex::decode(&r.image_sha256)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| malformed("image_sha256 is not 32 hex bytes"))?;
    let content_type = ImageContentType::parse(&r.image_content_type)
        .ok_or_else(|| malformed("unknown image_content_type"))?;
    Ok(Capture {
        meta: CaptureMeta {
            id,
            site_id: r.site_id,
            lane: u32::try_from(r.lane).unwrap_or(0),
            captured_at: r.captured_at,
            detected_at: r.detected_at,
            vehicle_class: VehicleClass::from_db(&r.vehicle_class),
            occupancy_status: OccupancyStatus::from_db(&r.occupancy_status),
            occupants: r.occupants.map(|o| u32::try_from(o).unwrap_or(0)),
            speed_kmh: r.speed_kmh.map(|v| v as f32),
            height_m: r.height_m as f32,
            width_m: r.width_m as f32,
            camera_id: r.camera_id,
            config_version: to_u64(r.config_version),
        },
        agent_id: r.agent_id,
        image_key: r.image_key,
        image_sha256: sha,
        image_bytes: to_u64(r.image_bytes),
        image_content_type: content_type,
        received_at: r.received_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    async fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/lanewatch.db?mode=rwc", dir.path().display());
        let db = Db::connect(&url).await.unwrap();
        (dir, db)
    }

    fn capture(id: Uuid, captured_at: DateTime<Utc>) -> Capture {
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
        };
        Capture {
            image_key: crate::domain::image_key(&meta, ImageContentType::Jpeg),
            meta,
            agent_id: "agent-1".into(),
            image_sha256: [7u8; 32],
            image_bytes: 10,
            image_content_type: ImageContentType::Jpeg,
            received_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn insert_is_idempotent_and_round_trips() {
        let (_dir, db) = temp_db().await;
        let c = capture(Uuid::now_v7(), Utc.timestamp_micros(1_700_000_000_000_001).unwrap());
        assert!(!db.capture_exists(c.meta.id).await.unwrap());
        assert_eq!(db.insert_capture(&c).await.unwrap(), Inserted::New);
        assert_eq!(db.insert_capture(&c).await.unwrap(), Inserted::Duplicate);
        assert!(db.capture_exists(c.meta.id).await.unwrap());
        let back = db.capture(c.meta.id).await.unwrap().unwrap();
        assert_eq!(back.meta, c.meta);
        assert_eq!(back.image_sha256, c.image_sha256);
    }

    #[tokio::test]
    async fn keyset_pages_are_newest_first_without_gaps() {
        let (_dir, db) = temp_db().await;
        let base = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let mut all = Vec::new();
        for i in 0..7i64 {
            // two captures share each timestamp so the id breaks ties
            let at = base + chrono::Duration::milliseconds(i / 2 * 1500);
            let c = capture(Uuid::now_v7(), at);
            db.insert_capture(&c).await.unwrap();
            all.push(c);
        }
        all.sort_by_key(|c| std::cmp::Reverse((c.meta.captured_at, c.meta.id)));
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = db.captures_page(after, 3).await.unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(CaptureCursor::of);
            seen.extend(page.into_iter().map(|c| c.meta.id));
        }
        let expected: Vec<Uuid> = all.iter().map(|c| c.meta.id).collect();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn agents_upsert_heartbeat_and_offline() {
        let (_dir, db) = temp_db().await;
        let hello = AgentHello {
            agent_id: "agent-1".into(),
            site_id: "a1".into(),
            software_version: "0.1.0".into(),
            config_version: 2,
        };
        let t0 = Utc::now();
        db.upsert_agent(&hello, t0).await.unwrap();
        db.record_heartbeat("agent-1", AgentPulse { health: Health::Degraded, buffered_captures: 4 }, t0)
            .await
            .unwrap();
        db.upsert_agent(&AgentHello { software_version: "0.2.0".into(), ..hello }, t0).await.unwrap();
        let a = db.agent("agent-1").await.unwrap().unwrap();
        assert!(a.online);
        assert_eq!(a.software_version, "0.2.0");
        assert_eq!(a.health, Health::Degraded);
        assert_eq!(a.buffered_captures, 4);
        db.mark_offline("agent-1").await.unwrap();
        assert!(!db.agents().await.unwrap()[0].online);
    }

    #[test]
    fn sqlite_parent_dirs() {
        assert_eq!(sqlite_parent_dir("sqlite://data/x.db?mode=rwc"), Some("data".into()));
        assert_eq!(sqlite_parent_dir("sqlite::memory:"), None);
        assert_eq!(sqlite_parent_dir("sqlite://x.db"), None);
    }
}

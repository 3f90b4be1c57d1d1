//! The metadata database (sea-orm over SQLite or PostgreSQL, chosen by URL scheme): connects,
//! migrates, and converts rows to and from domain types by hand. Every read that an API caller
//! can reach takes a `Visibility` and applies it in SQL (`capture_scope`, `violation_scope`,
//! `site_scope`): this is where agency A is kept out of agency B's rows.

mod configs;
mod entities;
mod migration;
pub mod writer;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, OnConflict, Query, SelectStatement};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use uuid::Uuid;

pub use configs::NewSiteConfig;

use crate::domain::{
    Agency, Agent, AgentHello, AgentPulse, AgentRevocation, ApiKey, AuditEntry, Capture, CaptureCursor,
    CaptureFilter, CaptureMeta, Decision, DeletionReason, DeletionReceipt, Health, HourlyStats, HovPolicy,
    ImageContentType, OccupancyStatus, ReviewDecision, Role, SectionCount, Site, TimeWindow, ValueClass,
    VehicleClass, Violation, ViolationState, Visibility,
};
use entities::{
    agencies, agents, api_keys, audit_log, cameras, captures, deletion_receipts, lanes, revoked_agents,
    sites, violations,
};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("cannot create database directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("stored row {table}/{id} is malformed: {why}")]
    Malformed { table: &'static str, id: String, why: String },
}

/// How a review request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Reviewed {
    Done(Violation),
    /// No such violation visible to the caller.
    NotFound,
    /// Only a pending violation can be reviewed.
    AlreadyReviewed(ViolationState),
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
    /// (site, camera) pairs this process has already registered in `cameras`, so that ingest
    /// writes the camera row once per process instead of once per capture.
    known_cameras: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
    /// Lane policies as ingest read them, each for at most [`POLICY_CACHE_TTL`]; see
    /// [`Db::hov_policy_for_ingest`].
    policies: std::sync::Arc<std::sync::Mutex<PolicyCache>>,
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
        migration::Migrator::up(&conn, None).await?;
        Ok(Self { conn, known_cameras: Default::default(), policies: Default::default() })
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        Ok(self.conn.ping().await?)
    }

    /// The PostgreSQL pool under sea-orm, for LISTEN/NOTIFY between replicas; `None` on SQLite.
    pub fn postgres_pool(&self) -> Option<&sea_orm::sqlx::PgPool> {
        (self.conn.get_database_backend() == sea_orm::DbBackend::Postgres)
            .then(|| self.conn.get_postgres_connection_pool())
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
        // a site is created the first time an agent names it; an admin sets its jurisdiction
        let site = sites::ActiveModel {
            id: Set(hello.site_id.clone()),
            name: Set(hello.site_id.clone()),
            jurisdiction: Set(None),
            created_at: Set(now),
        };
        sites::Entity::insert(site)
            .on_conflict(OnConflict::column(sites::Column::Id).do_nothing().to_owned())
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

    /// Registers the cameras of `batch` this process has not seen yet (one idempotent statement
    /// each, the first time only: not part of any capture's evidence).
    async fn register_cameras(&self, batch: &[Capture]) -> Result<(), DbError> {
        // each unseen camera with the earliest receipt among its captures
        let mut unseen: std::collections::BTreeMap<(String, String), DateTime<Utc>> = Default::default();
        {
            let known = self.known_cameras.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for c in batch {
                let key = (c.meta.site_id.clone(), c.meta.camera_id.clone());
                if !known.contains(&key) {
                    let first = unseen.entry(key).or_insert(c.received_at);
                    *first = (*first).min(c.received_at);
                }
            }
        }
        for ((site_id, camera_id), first_seen) in unseen {
            let camera = cameras::ActiveModel {
                site_id: Set(site_id.clone()),
                id: Set(camera_id.clone()),
                first_seen: Set(first_seen),
            };
            cameras::Entity::insert(camera)
                .on_conflict(
                    OnConflict::columns([cameras::Column::SiteId, cameras::Column::Id])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&self.conn)
                .await?;
            self.known_cameras
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert((site_id, camera_id));
        }
        Ok(())
    }

    /// Inserts many captures in one transaction: one multi-row statement
    /// for the captures (`ON CONFLICT DO NOTHING RETURNING id` says which are new) and one for
    /// the violations of the new violation candidates. Answers per capture, in order; a capture
    /// whose id came earlier in the batch is a duplicate. All or nothing: a batch without
    /// violation candidates is the one statement, in its own implicit transaction.
    pub async fn insert_captures(&self, batch: &[Capture]) -> Result<Vec<Inserted>, DbError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.register_cameras(batch).await?;
        let mut insert = captures::Entity::insert_many(batch.iter().map(capture_row))
            .on_conflict(OnConflict::column(captures::Column::Id).do_nothing().to_owned())
            .into_query();
        insert.returning_col(captures::Column::Id);
        let statement = self.conn.get_database_backend().build(&insert);
        // the first of the batch with a new id is the one stored
        let outcomes = |rows: Vec<sea_orm::QueryResult>| -> Result<Vec<Inserted>, DbError> {
            let mut new: std::collections::HashSet<String> = Default::default();
            for row in rows {
                new.insert(row.try_get::<String>("", "id")?);
            }
            Ok(batch
                .iter()
                .map(|c| if new.remove(&c.meta.id.to_string()) { Inserted::New } else { Inserted::Duplicate })
                .collect())
        };
        if batch.iter().all(|c| c.decision != Decision::ViolationCandidate) {
            // one statement is atomic on its own: one round trip, no transaction around it
            return outcomes(self.conn.query_all(statement).await?);
        }
        let txn = self.conn.begin().await?;
        let outcomes = outcomes(txn.query_all(statement).await?)?;
        let violations: Vec<_> = batch
            .iter()
            .zip(&outcomes)
            .filter(|(c, o)| **o == Inserted::New && c.decision == Decision::ViolationCandidate)
            .map(|(c, _)| violation_row(c))
            .collect();
        if !violations.is_empty() {
            violations::Entity::insert_many(violations)
                .on_conflict(OnConflict::column(violations::Column::CaptureId).do_nothing().to_owned())
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(outcomes)
    }

    /// Inserts the capture unless its id exists already (`ON CONFLICT (id) DO NOTHING`); a new
    /// capture also records its camera and, when the policy flagged it, a pending violation, in
    /// the same transaction ([`Db::insert_captures`] of one).
    pub async fn insert_capture(&self, c: &Capture) -> Result<Inserted, DbError> {
        Ok(self.insert_captures(std::slice::from_ref(c)).await?[0]) // one answer per capture
    }

    /// A capture, when the caller may see it.
    pub async fn capture(&self, id: Uuid, vis: &Visibility) -> Result<Option<Capture>, DbError> {
        captures::Entity::find_by_id(id.to_string())
            .filter(capture_scope(vis))
            .one(&self.conn)
            .await?
            .map(capture_from_row)
            .transpose()
    }

    /// Captures the caller may see that match `filter`, newest first by
    /// `(captured_at DESC, id DESC)`, strictly after `after` when given.
    pub async fn captures_page(
        &self,
        filter: &CaptureFilter,
        vis: &Visibility,
        after: Option<CaptureCursor>,
        limit: u64,
    ) -> Result<Vec<Capture>, DbError> {
        let rows = captures_page_select(filter, vis, after, limit).all(&self.conn).await?;
        rows.into_iter().map(capture_from_row).collect()
    }

    /// `EXPLAIN ANALYZE` of the statement `captures_page` runs, one line per plan line
    /// (PostgreSQL only: the benchmark's check that a deep page walks an index).
    pub async fn explain_captures_page(
        &self,
        filter: &CaptureFilter,
        vis: &Visibility,
        after: Option<CaptureCursor>,
        limit: u64,
    ) -> Result<Vec<String>, DbError> {
        let backend = self.conn.get_database_backend();
        let select = captures_page_select(filter, vis, after, limit).build(backend);
        let explain = sea_orm::Statement::from_sql_and_values(
            backend,
            format!("EXPLAIN ANALYZE {}", select.sql),
            select.values.map(|v| v.0).unwrap_or_default(),
        );
        let rows = self.conn.query_all(explain).await?;
        rows.iter().map(|r| r.try_get_by_index::<String>(0).map_err(DbError::from)).collect()
    }

    /// The HOV policy of one lane, when one is set.
    pub async fn hov_policy(&self, site_id: &str, lane: u32) -> Result<Option<HovPolicy>, DbError> {
        let row = lanes::Entity::find_by_id((site_id.to_owned(), i64::from(lane))).one(&self.conn).await?;
        row.map(|r| {
            let windows: Vec<TimeWindow> =
                serde_json::from_str(&r.windows_json).map_err(|e| DbError::Malformed {
                    table: "lanes",
                    id: format!("{}/{}", r.site_id, r.lane_index),
                    why: format!("windows_json: {e}"),
                })?;
            Ok(HovPolicy { min_occupants: u32::try_from(r.min_occupants).unwrap_or(u32::MAX), windows })
        })
        .transpose()
    }

    /// [`Db::hov_policy`] for ingest, which reads it for every capture: served from memory when
    /// read less than [`POLICY_CACHE_TTL`] ago (a change through this process drops the entry).
    pub async fn hov_policy_for_ingest(
        &self,
        site_id: &str,
        lane: u32,
    ) -> Result<Option<HovPolicy>, DbError> {
        let key = (site_id.to_owned(), lane);
        if let Some((read_at, policy)) = self.policy_cache().get(&key)
            && read_at.elapsed() < POLICY_CACHE_TTL
        {
            return Ok(policy.clone());
        }
        let read_at = std::time::Instant::now();
        let policy = self.hov_policy(site_id, lane).await?;
        let mut cache = self.policy_cache();
        if cache.len() >= POLICY_CACHE_MAX {
            cache.clear();
        }
        // a newer entry (a write through this process while this read ran) is kept
        if cache.get(&key).is_none_or(|(at, _)| *at < read_at) {
            cache.insert(key, (read_at, policy.clone()));
        }
        Ok(policy)
    }

    fn policy_cache(&self) -> std::sync::MutexGuard<'_, PolicyCache> {
        self.policies.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub async fn set_hov_policy(&self, site_id: &str, lane: u32, policy: &HovPolicy) -> Result<(), DbError> {
        let windows = serde_json::to_string(&policy.windows).unwrap_or_else(|_| "[]".to_owned());
        let row = lanes::ActiveModel {
            site_id: Set(site_id.to_owned()),
            lane_index: Set(i64::from(lane)),
            min_occupants: Set(i64::from(policy.min_occupants)),
            windows_json: Set(windows),
        };
        lanes::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([lanes::Column::SiteId, lanes::Column::LaneIndex])
                    .update_columns([lanes::Column::MinOccupants, lanes::Column::WindowsJson])
                    .to_owned(),
            )
            .exec_without_returning(&self.conn)
            .await?;
        self.policy_cache()
            .insert((site_id.to_owned(), lane), (std::time::Instant::now(), Some(policy.clone())));
        Ok(())
    }

    /// Sites the caller may see, by id.
    pub async fn sites(&self, vis: &Visibility) -> Result<Vec<Site>, DbError> {
        let rows = sites::Entity::find()
            .filter(site_scope(vis))
            .order_by_asc(sites::Column::Id)
            .all(&self.conn)
            .await?;
        Ok(rows.into_iter().map(site_from_row).collect())
    }

    pub async fn site(&self, id: &str, vis: &Visibility) -> Result<Option<Site>, DbError> {
        let row = sites::Entity::find_by_id(id.to_owned()).filter(site_scope(vis)).one(&self.conn).await?;
        Ok(row.map(site_from_row))
    }

    /// Sets (or clears) a site's jurisdiction; `None` when there is no such site.
    pub async fn set_site_jurisdiction(
        &self,
        id: &str,
        jurisdiction: Option<&str>,
    ) -> Result<Option<Site>, DbError> {
        let done = sites::Entity::update_many()
            .col_expr(sites::Column::Jurisdiction, jurisdiction.map(str::to_owned).into())
            .filter(sites::Column::Id.eq(id))
            .exec(&self.conn)
            .await?;
        if done.rows_affected == 0 {
            return Ok(None);
        }
        self.site(id, &Visibility::All).await
    }

    pub async fn insert_agency(&self, agency: &Agency, now: DateTime<Utc>) -> Result<(), DbError> {
        let row = agencies::ActiveModel {
            id: Set(agency.id.clone()),
            name: Set(agency.name.clone()),
            jurisdiction: Set(agency.jurisdiction.clone()),
            created_at: Set(now),
        };
        agencies::Entity::insert(row).exec_without_returning(&self.conn).await?;
        Ok(())
    }

    pub async fn agencies(&self) -> Result<Vec<Agency>, DbError> {
        let rows = agencies::Entity::find().order_by_asc(agencies::Column::Id).all(&self.conn).await?;
        Ok(rows.into_iter().map(agency_from_row).collect())
    }

    pub async fn agency(&self, id: &str) -> Result<Option<Agency>, DbError> {
        Ok(agencies::Entity::find_by_id(id.to_owned()).one(&self.conn).await?.map(agency_from_row))
    }

    /// Stores a key; only the secret's hash is in `key`.
    pub async fn insert_api_key(&self, key: &ApiKey) -> Result<(), DbError> {
        let row = api_keys::ActiveModel {
            id: Set(key.id.clone()),
            name: Set(key.name.clone()),
            role: Set(key.role.as_str().to_owned()),
            agency_id: Set(key.agency_id.clone()),
            all_captures: Set(key.all_captures),
            secret_sha256: Set(key.secret_sha256.clone()),
            created_at: Set(key.created_at),
            revoked_at: Set(key.revoked_at),
        };
        api_keys::Entity::insert(row).exec_without_returning(&self.conn).await?;
        Ok(())
    }

    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, DbError> {
        api_keys::Entity::find_by_id(id.to_owned()).one(&self.conn).await?.map(api_key_from_row).transpose()
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKey>, DbError> {
        let rows = api_keys::Entity::find().order_by_asc(api_keys::Column::CreatedAt).all(&self.conn).await?;
        rows.into_iter().map(api_key_from_row).collect()
    }

    /// Revokes a key (idempotent: the first revocation time stays); `None` when there is no such key.
    pub async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> Result<Option<ApiKey>, DbError> {
        api_keys::Entity::update_many()
            .col_expr(api_keys::Column::RevokedAt, Some(now).into())
            .filter(api_keys::Column::Id.eq(id))
            .filter(api_keys::Column::RevokedAt.is_null())
            .exec(&self.conn)
            .await?;
        self.api_key(id).await
    }

    /// Revokes an agent; revoking it again keeps the first reason, actor and time.
    pub async fn revoke_agent(&self, r: &AgentRevocation) -> Result<AgentRevocation, DbError> {
        let row = revoked_agents::ActiveModel {
            agent_id: Set(r.agent_id.clone()),
            reason: Set(r.reason.clone()),
            by: Set(r.by.clone()),
            created_at: Set(r.created_at),
        };
        revoked_agents::Entity::insert(row)
            .on_conflict(OnConflict::column(revoked_agents::Column::AgentId).do_nothing().to_owned())
            .exec_without_returning(&self.conn)
            .await?;
        Ok(self.revocation(&r.agent_id).await?.unwrap_or_else(|| r.clone()))
    }

    /// Lifts an agent's revocation; whether it was revoked.
    pub async fn reinstate_agent(&self, agent_id: &str) -> Result<bool, DbError> {
        let deleted = revoked_agents::Entity::delete_by_id(agent_id.to_owned()).exec(&self.conn).await?;
        Ok(deleted.rows_affected > 0)
    }

    /// The agent's revocation; `None` when it may open sessions.
    pub async fn revocation(&self, agent_id: &str) -> Result<Option<AgentRevocation>, DbError> {
        let row = revoked_agents::Entity::find_by_id(agent_id.to_owned()).one(&self.conn).await?;
        Ok(row.map(|r| AgentRevocation {
            agent_id: r.agent_id,
            reason: r.reason,
            by: r.by,
            created_at: r.created_at,
        }))
    }

    /// Violations the caller may see, newest capture first, strictly after `after` when given.
    pub async fn violations_page(
        &self,
        state: Option<ViolationState>,
        site_id: Option<&str>,
        vis: &Visibility,
        after: Option<CaptureCursor>,
        limit: u64,
    ) -> Result<Vec<Violation>, DbError> {
        use violations::Column as V;
        let mut cond = violation_scope(vis);
        if let Some(state) = state {
            cond = cond.add(V::State.eq(state.as_str()));
        }
        if let Some(site) = site_id {
            cond = cond.add(V::SiteId.eq(site));
        }
        if let Some(c) = after {
            cond = cond.add(after_cursor(V::CapturedAt, V::Id, c));
        }
        let rows = violations::Entity::find()
            .filter(cond)
            .order_by_desc(V::CapturedAt)
            .order_by_desc(V::Id)
            .limit(limit)
            .all(&self.conn)
            .await?;
        rows.into_iter().map(violation_from_row).collect()
    }

    pub async fn violation(&self, id: Uuid, vis: &Visibility) -> Result<Option<Violation>, DbError> {
        violations::Entity::find_by_id(id.to_string())
            .filter(violation_scope(vis))
            .one(&self.conn)
            .await?
            .map(violation_from_row)
            .transpose()
    }

    pub async fn violation_of_capture(
        &self,
        capture_id: Uuid,
        vis: &Visibility,
    ) -> Result<Option<Violation>, DbError> {
        violations::Entity::find()
            .filter(violations::Column::CaptureId.eq(capture_id.to_string()))
            .filter(violation_scope(vis))
            .one(&self.conn)
            .await?
            .map(violation_from_row)
            .transpose()
    }

    /// Confirms or rejects a pending violation (a compare-and-set on its state).
    pub async fn review_violation(
        &self,
        id: Uuid,
        decision: ReviewDecision,
        reviewer: &str,
        reason: Option<&str>,
        vis: &Visibility,
        now: DateTime<Utc>,
    ) -> Result<Reviewed, DbError> {
        use violations::Column as V;
        let state = match decision {
            ReviewDecision::Confirm => ViolationState::Confirmed,
            ReviewDecision::Reject => ViolationState::Rejected,
        };
        let done = violations::Entity::update_many()
            .col_expr(V::State, state.as_str().into())
            .col_expr(V::Reviewer, Some(reviewer.to_owned()).into())
            .col_expr(V::Reason, reason.map(str::to_owned).into())
            .col_expr(V::ReviewedAt, Some(now).into())
            .filter(V::Id.eq(id.to_string()))
            .filter(V::State.eq(ViolationState::Pending.as_str()))
            .filter(violation_scope(vis))
            .exec(&self.conn)
            .await?;
        let current = self.violation(id, vis).await?;
        Ok(match current {
            None => Reviewed::NotFound,
            Some(v) if done.rows_affected == 1 => Reviewed::Done(v),
            Some(v) => Reviewed::AlreadyReviewed(v.state),
        })
    }

    pub async fn insert_audit(&self, e: &AuditEntry) -> Result<(), DbError> {
        let row = audit_log::ActiveModel {
            id: Set(e.id.to_string()),
            at: Set(e.at),
            actor: Set(e.actor.clone()),
            action: Set(e.action.clone()),
            target: Set(e.target.clone()),
            result: Set(if e.ok { "ok" } else { "error" }.to_owned()),
            message: Set(e.message.clone()),
        };
        audit_log::Entity::insert(row).exec_without_returning(&self.conn).await?;
        Ok(())
    }

    /// Audit rows, newest first, strictly after `after` when given.
    pub async fn audit_page(
        &self,
        after: Option<CaptureCursor>,
        limit: u64,
    ) -> Result<Vec<AuditEntry>, DbError> {
        use audit_log::Column as A;
        let mut query = audit_log::Entity::find();
        if let Some(c) = after {
            query = query.filter(after_cursor(A::At, A::Id, c));
        }
        let rows = query.order_by_desc(A::At).order_by_desc(A::Id).limit(limit).all(&self.conn).await?;
        rows.into_iter().map(audit_from_row).collect()
    }

    /// Stores deletion receipts in one transaction, each unless its receipt id exists already
    /// (`ON CONFLICT (receipt_id) DO NOTHING`); returns how many were new.
    pub async fn insert_receipts(&self, receipts: &[DeletionReceipt]) -> Result<u64, DbError> {
        let txn = self.conn.begin().await?;
        let mut new = 0;
        for r in receipts {
            let row = deletion_receipts::ActiveModel {
                receipt_id: Set(r.receipt_id.to_string()),
                capture_id: Set(r.capture_id.map(|id| id.to_string())),
                agent_id: Set(r.agent_id.clone()),
                site_id: Set(r.site_id.clone()),
                value_class: Set(r.value_class.as_str().to_owned()),
                captured_at: Set(r.captured_at),
                deleted_at: Set(r.deleted_at),
                reason: Set(r.reason.as_str().to_owned()),
                bytes: Set(to_i64(r.bytes)),
                received_at: Set(r.received_at),
            };
            new += deletion_receipts::Entity::insert(row)
                .on_conflict(OnConflict::column(deletion_receipts::Column::ReceiptId).do_nothing().to_owned())
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(new)
    }

    /// Deletion receipts the caller may see (an agency: those of its jurisdiction's sites),
    /// newest deletion first by `(deleted_at DESC, receipt_id DESC)`, strictly after `after`.
    pub async fn receipts_page(
        &self,
        site_id: Option<&str>,
        vis: &Visibility,
        after: Option<CaptureCursor>,
        limit: u64,
    ) -> Result<Vec<DeletionReceipt>, DbError> {
        use deletion_receipts::Column as R;
        let mut cond = match vis {
            Visibility::All => Condition::all(),
            Visibility::Jurisdiction { jurisdiction, .. } => {
                Condition::all().add(R::SiteId.in_subquery(sites_in(jurisdiction)))
            }
        };
        if let Some(site) = site_id {
            cond = cond.add(R::SiteId.eq(site));
        }
        if let Some(c) = after {
            cond = cond.add(after_cursor(R::DeletedAt, R::ReceiptId, c));
        }
        let rows = deletion_receipts::Entity::find()
            .filter(cond)
            .order_by_desc(R::DeletedAt)
            .order_by_desc(R::ReceiptId)
            .limit(limit)
            .all(&self.conn)
            .await?;
        rows.into_iter().map(receipt_from_row).collect()
    }

    /// Vehicles per site per hour in `[from, to)` among the captures the caller may see.
    pub async fn occupancy_stats(
        &self,
        site_id: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        vis: &Visibility,
    ) -> Result<Vec<HourlyStats>, DbError> {
        use captures::Column as C;
        let backend = self.conn.get_database_backend();
        let hour = match backend {
            sea_orm::DbBackend::Postgres => {
                "to_char(date_trunc('hour', captured_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:00:00Z')"
            }
            _ => "strftime('%Y-%m-%dT%H:00:00Z', captured_at)",
        };
        let counted = |cond: &str| {
            Expr::cust(format!(
                "SUM(CASE WHEN occupancy_status = 'counted' AND occupants {cond} THEN 1 ELSE 0 END)"
            ))
        };
        let mut cond = capture_scope(vis).add(C::CapturedAt.gte(from)).add(C::CapturedAt.lt(to));
        if let Some(site) = site_id {
            cond = cond.add(C::SiteId.eq(site));
        }
        let stmt = Query::select()
            .column(C::SiteId)
            .expr_as(Expr::cust(hour), Alias::new("hour"))
            .expr_as(Expr::cust("COUNT(*)"), Alias::new("vehicles"))
            .expr_as(counted("= 0"), Alias::new("o0"))
            .expr_as(counted("= 1"), Alias::new("o1"))
            .expr_as(counted("= 2"), Alias::new("o2"))
            .expr_as(counted(">= 3"), Alias::new("o3"))
            .expr_as(
                Expr::cust("SUM(CASE WHEN occupancy_status = 'counted' THEN 0 ELSE 1 END)"),
                Alias::new("unknown"),
            )
            .expr_as(
                Expr::cust(
                    "SUM(CASE WHEN EXISTS (SELECT 1 FROM violations v WHERE v.capture_id = captures.id \
                     AND v.state <> 'rejected') THEN 1 ELSE 0 END)",
                ),
                Alias::new("violations"),
            )
            .from(captures::Entity)
            .cond_where(cond)
            .add_group_by([Expr::col(C::SiteId).into(), Expr::cust(hour)])
            .order_by(C::SiteId, sea_orm::Order::Asc)
            .order_by_expr(Expr::cust(hour), sea_orm::Order::Asc)
            .to_owned();
        let rows = self.conn.query_all(backend.build(&stmt)).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let site_id: String = row.try_get("", "site_id")?;
            let hour_text: String = row.try_get("", "hour")?;
            let hour = DateTime::parse_from_rfc3339(&hour_text)
                .map_err(|_| DbError::Malformed {
                    table: "captures",
                    id: site_id.clone(),
                    why: format!("hour bucket {hour_text:?} is not a timestamp"),
                })?
                .with_timezone(&Utc);
            let n = |name: &str| -> Result<u64, DbError> { Ok(to_u64(row.try_get::<i64>("", name)?)) };
            out.push(HourlyStats {
                hour,
                vehicles: n("vehicles")?,
                occupants_0: n("o0")?,
                occupants_1: n("o1")?,
                occupants_2: n("o2")?,
                occupants_3_plus: n("o3")?,
                unknown: n("unknown")?,
                violations: n("violations")?,
                site_id,
            });
        }
        Ok(out)
    }
}

/// The statement of one captures page: `filter` within `vis`, newest first by
/// `(captured_at DESC, id DESC)`, strictly after `after` when given.
fn captures_page_select(
    filter: &CaptureFilter,
    vis: &Visibility,
    after: Option<CaptureCursor>,
    limit: u64,
) -> sea_orm::Select<captures::Entity> {
    use captures::Column as C;
    let mut cond = capture_scope(vis);

    if let Some(site) = &filter.site_id {
        cond = cond.add(C::SiteId.eq(site.as_str()));
    }
    if let Some(lane) = filter.lane {
        cond = cond.add(C::Lane.eq(i64::from(lane)));
    }
    if let Some(from) = filter.from {
        cond = cond.add(C::CapturedAt.gte(from));
    }
    if let Some(to) = filter.to {
        cond = cond.add(C::CapturedAt.lt(to));
    }
    if let Some(decision) = filter.decision {
        cond = cond.add(C::Decision.eq(decision.as_str()));
    }
    if let Some(n) = filter.min_occupants {
        cond = cond.add(C::Occupants.gte(i64::from(n)));
    }
    if let Some(n) = filter.max_occupants {
        cond = cond.add(C::Occupants.lte(i64::from(n)));
    }
    if let Some(class) = filter.vehicle_class {
        cond = cond.add(C::VehicleClass.eq(class.as_str()));
    }
    if let Some(c) = after {
        cond = cond.add(after_cursor(C::CapturedAt, C::Id, c));
    }
    captures::Entity::find().filter(cond).order_by_desc(C::CapturedAt).order_by_desc(C::Id).limit(limit)
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
            let cond = Condition::all().add(captures::Column::SiteId.in_subquery(sites_in(jurisdiction)));
            if *all_captures {
                cond
            } else {
                let flagged =
                    Query::select().column(violations::Column::CaptureId).from(violations::Entity).to_owned();
                cond.add(captures::Column::Id.in_subquery(flagged))
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
    let sections = sections_from_json(&r.sections_json).ok_or_else(|| malformed("sections_json"))?;
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
            sections,
            confidence: r.confidence.map(|v| v as f32),
            model_version: r.model_version,
        },
        decision: Decision::from_db(&r.decision),
        agent_id: r.agent_id,
        image_key: r.image_key,
        image_sha256: sha,
        image_bytes: to_u64(r.image_bytes),
        image_content_type: content_type,
        received_at: r.received_at,
    })
}

fn sections_from_json(text: &str) -> Option<Vec<SectionCount>> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value
        .as_array()?
        .iter()
        .map(|s| {
            Some(SectionCount {
                section: s.get("section")?.as_str()?.to_owned(),
                occupants: u32::try_from(s.get("occupants")?.as_u64()?).ok()?,
                confidence: s.get("confidence")?.as_f64()? as f32,
            })
        })
        .collect()
}

fn site_from_row(r: sites::Model) -> Site {
    Site { id: r.id, name: r.name, jurisdiction: r.jurisdiction, created_at: r.created_at }
}

fn agency_from_row(r: agencies::Model) -> Agency {
    Agency { id: r.id, name: r.name, jurisdiction: r.jurisdiction }
}

fn api_key_from_row(r: api_keys::Model) -> Result<ApiKey, DbError> {
    let role = Role::parse(&r.role).ok_or_else(|| DbError::Malformed {
        table: "api_keys",
        id: r.id.clone(),
        why: format!("unknown role {:?}", r.role),
    })?;
    Ok(ApiKey {
        id: r.id,
        name: r.name,
        role,
        agency_id: r.agency_id,
        all_captures: r.all_captures,
        secret_sha256: r.secret_sha256,
        created_at: r.created_at,
        revoked_at: r.revoked_at,
    })
}

fn violation_from_row(r: violations::Model) -> Result<Violation, DbError> {
    let malformed =
        |why: &str| DbError::Malformed { table: "violations", id: r.id.clone(), why: why.to_owned() };
    Ok(Violation {
        id: Uuid::parse_str(&r.id).map_err(|_| malformed("id is not a uuid"))?,
        capture_id: Uuid::parse_str(&r.capture_id).map_err(|_| malformed("capture_id is not a uuid"))?,
        site_id: r.site_id,
        captured_at: r.captured_at,
        state: ViolationState::from_db(&r.state),
        reviewer: r.reviewer,
        reason: r.reason,
        reviewed_at: r.reviewed_at,
        created_at: r.created_at,
    })
}

fn audit_from_row(r: audit_log::Model) -> Result<AuditEntry, DbError> {
    Ok(AuditEntry {
        id: Uuid::parse_str(&r.id).map_err(|_| DbError::Malformed {
            table: "audit_log",
            id: r.id.clone(),
            why: "id is not a uuid".to_owned(),
        })?,
        at: r.at,
        actor: r.actor,
        action: r.action,
        target: r.target,
        ok: r.result == "ok",
        message: r.message,
    })
}

fn receipt_from_row(r: deletion_receipts::Model) -> Result<DeletionReceipt, DbError> {
    let malformed = |why: &str| DbError::Malformed {
        table: "deletion_receipts",
        id: r.receipt_id.clone(),
        why: why.to_owned(),
    };
    let receipt_id = Uuid::parse_str(&r.receipt_id).map_err(|_| malformed("receipt_id is not a uuid"))?;
    let capture_id = r
        .capture_id
        .as_deref()
        .map(Uuid::parse_str)
        .transpose()
        .map_err(|_| malformed("capture_id is not a uuid"))?;
    Ok(DeletionReceipt {
        receipt_id,
        capture_id,
        value_class: ValueClass::parse(&r.value_class).ok_or_else(|| malformed("unknown value_class"))?,
        reason: DeletionReason::parse(&r.reason).ok_or_else(|| malformed("unknown reason"))?,
        agent_id: r.agent_id,
        site_id: r.site_id,
        captured_at: r.captured_at,
        deleted_at: r.deleted_at,
        bytes: to_u64(r.bytes),
        received_at: r.received_at,
    })
}

/// The `captures` row of a capture.
fn capture_row(c: &Capture) -> captures::ActiveModel {
    let m = &c.meta;
    let sections: Vec<serde_json::Value> = m
        .sections
        .iter()
        .map(|s| {
            serde_json::json!({
                "section": s.section,
                "occupants": s.occupants,
                "confidence": f32_to_f64(s.confidence),
            })
        })
        .collect();
    captures::ActiveModel {
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
        decision: Set(c.decision.as_str().to_owned()),
        confidence: Set(m.confidence.map(f32_to_f64)),
        model_version: Set(m.model_version.clone()),
        sections_json: Set(serde_json::Value::Array(sections).to_string()),
    }
}

/// The pending review row of a violation candidate.
fn violation_row(c: &Capture) -> violations::ActiveModel {
    violations::ActiveModel {
        id: Set(Uuid::now_v7().to_string()),
        capture_id: Set(c.meta.id.to_string()),
        site_id: Set(c.meta.site_id.clone()),
        captured_at: Set(c.meta.captured_at),
        state: Set(ViolationState::Pending.as_str().to_owned()),
        reviewer: Set(None),
        reason: Set(None),
        reviewed_at: Set(None),
        created_at: Set(c.received_at),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

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
        }
    }

    #[tokio::test]
    async fn insert_is_idempotent_and_round_trips() {
        let (_dir, db) = temp_db().await;
        let c = capture(Uuid::now_v7(), Utc.timestamp_micros(1_700_000_000_000_001).unwrap());
        assert!(db.capture(c.meta.id, &Visibility::All).await.unwrap().is_none());
        assert_eq!(db.insert_capture(&c).await.unwrap(), Inserted::New);
        assert_eq!(db.insert_capture(&c).await.unwrap(), Inserted::Duplicate);
        let back = db.capture(c.meta.id, &Visibility::All).await.unwrap().unwrap();
        assert_eq!(back.meta, c.meta);
        assert_eq!(back.image_sha256, c.image_sha256);
    }

    /// A batch answers per capture, in order: new, already stored, or repeated inside the batch;
    /// only new violation candidates get a review row.
    #[tokio::test]
    async fn a_batch_inserts_each_new_capture_once() {
        let (_dir, db) = temp_db().await;
        let at = |us: i64| Utc.timestamp_micros(1_700_000_000_000_000 + us).unwrap();
        let stored = capture(Uuid::now_v7(), at(1));
        assert_eq!(db.insert_capture(&stored).await.unwrap(), Inserted::New);
        let mut candidate = capture(Uuid::now_v7(), at(2));
        candidate.decision = Decision::ViolationCandidate;
        let plain = capture(Uuid::now_v7(), at(3));
        let mut stored_again = stored.clone();
        stored_again.decision = Decision::ViolationCandidate;
        let batch = vec![candidate.clone(), stored_again, plain.clone(), candidate.clone()];
        assert_eq!(
            db.insert_captures(&batch).await.unwrap(),
            [Inserted::New, Inserted::Duplicate, Inserted::New, Inserted::Duplicate]
        );
        for c in [&stored, &candidate, &plain] {
            assert!(db.capture(c.meta.id, &Visibility::All).await.unwrap().is_some());
        }
        let violations = db.violations_page(None, None, &Visibility::All, None, 10).await.unwrap();
        let ids: Vec<Uuid> = violations.iter().map(|v| v.capture_id).collect();
        assert_eq!(ids, [candidate.meta.id], "one review row, for the new candidate only");

        // without violation candidates, the batch is one statement, with the same answers
        let fresh = capture(Uuid::now_v7(), at(4));
        let batch = vec![plain.clone(), fresh.clone(), fresh.clone()];
        assert_eq!(
            db.insert_captures(&batch).await.unwrap(),
            [Inserted::Duplicate, Inserted::New, Inserted::Duplicate]
        );
        assert_eq!(db.capture(fresh.meta.id, &Visibility::All).await.unwrap().unwrap().meta, fresh.meta);
        assert_eq!(db.violations_page(None, None, &Visibility::All, None, 10).await.unwrap().len(), 1);
    }

    /// Ingest's cached lane policy follows a change made through this process at once.
    #[tokio::test]
    async fn ingest_sees_a_policy_change_made_here_at_once() {
        let (_dir, db) = temp_db().await;
        assert_eq!(db.hov_policy_for_ingest("s1", 0).await.unwrap(), None);
        let hov2 = HovPolicy { min_occupants: 2, windows: vec![] };
        db.set_hov_policy("s1", 0, &hov2).await.unwrap();
        assert_eq!(db.hov_policy_for_ingest("s1", 0).await.unwrap(), Some(hov2));
        let hov3 = HovPolicy { min_occupants: 3, windows: vec![] };
        db.set_hov_policy("s1", 0, &hov3).await.unwrap();
        assert_eq!(db.hov_policy_for_ingest("s1", 0).await.unwrap(), Some(hov3.clone()));
        // another replica's change (written behind this cache's back) shows within the TTL
        let hov4 = HovPolicy { min_occupants: 4, windows: vec![] };
        let other = Db { policies: Default::default(), ..db.clone() };
        other.set_hov_policy("s1", 0, &hov4).await.unwrap();
        assert_eq!(db.hov_policy_for_ingest("s1", 0).await.unwrap(), Some(hov3), "cached");
        tokio::time::sleep(POLICY_CACHE_TTL).await;
        assert_eq!(db.hov_policy_for_ingest("s1", 0).await.unwrap(), Some(hov4));
    }

    #[tokio::test]
    async fn receipts_insert_idempotently_and_page_newest_first_within_visibility() {
        let (_dir, db) = temp_db().await;
        let base = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let receipt = |site: &str, i: i64| DeletionReceipt {
            receipt_id: Uuid::now_v7(),
            capture_id: (i % 2 == 0).then(Uuid::now_v7),
            agent_id: format!("agent-{site}"),
            site_id: site.to_owned(),
            value_class: ValueClass::Statistics,
            captured_at: (i % 2 == 0).then_some(base),
            deleted_at: base + chrono::Duration::seconds(i),
            reason: DeletionReason::EvictedFull,
            bytes: 100,
            received_at: base,
        };
        let ours: Vec<_> = (0..3).map(|i| receipt("a1-km12", i)).collect();
        let theirs = receipt("b2-km3", 10);
        assert_eq!(db.insert_receipts(&ours).await.unwrap(), 3);
        assert_eq!(
            db.insert_receipts(&[ours[1].clone(), theirs.clone()]).await.unwrap(),
            1,
            "receipt id is the key"
        );
        db.insert_agency(
            &Agency { id: "ag".into(), name: "Agency".into(), jurisdiction: "north".into() },
            base,
        )
        .await
        .unwrap();
        db.upsert_agent(
            &AgentHello {
                agent_id: "agent-a1-km12".into(),
                site_id: "a1-km12".into(),
                software_version: "t".into(),
                config_version: 0,
            },
            base,
        )
        .await
        .unwrap();
        db.set_site_jurisdiction("a1-km12", Some("north")).await.unwrap();
        let all = db.receipts_page(None, &Visibility::All, None, 10).await.unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], theirs, "newest deletion first");
        let first = db.receipts_page(None, &Visibility::All, None, 2).await.unwrap();
        let cursor = CaptureCursor { captured_at: first[1].deleted_at, id: first[1].receipt_id };
        let rest = db.receipts_page(None, &Visibility::All, Some(cursor), 10).await.unwrap();
        assert_eq!([first, rest].concat(), all, "pages without gaps");
        let north = Visibility::Jurisdiction { jurisdiction: "north".into(), all_captures: false };
        let visible = db.receipts_page(None, &north, None, 10).await.unwrap();
        assert_eq!(visible.iter().rev().cloned().collect::<Vec<_>>(), ours, "only the jurisdiction's site");
        assert!(db.receipts_page(Some("b2-km3"), &north, None, 10).await.unwrap().is_empty());
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
            let page = db.captures_page(&CaptureFilter::default(), &Visibility::All, after, 3).await.unwrap();
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

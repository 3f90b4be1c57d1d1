//! Component history (`component_samples`, `component_rollups`, `component_latest`,
//! `history_rollup_state`): the samples the history writer inserts in batches, their rollups,
//! retention, the reads behind `componentHistory` and `fleetComponents`, and the background task
//! that rolls up and deletes.
//!
//! Rows: times are Unix milliseconds and statuses `ComponentStatus::code`s (small integers,
//! larger is worse), so that a period's bucket is `at_ms / period * period` and its worst
//! status is `MAX(status)` on SQLite and PostgreSQL alike. A raw sample is one component line of
//! one heartbeat, stamped when the gateway received it.
//!
//! Rollups: `history_rollup_state` holds how far rollups have got (`rolled_until_ms`; -1 before
//! the first). One step rolls the next period that ended [`ROLLUP_SETTLE`] ago into one row per
//! agent × component (samples, worst status, highest restarts, processed at the end, deepest
//! inbox, samples not RUNNING, and, through `LAG` over the samples since one period before, how
//! often it left RUNNING and how many restarts it made), and moves the mark in the same
//! transaction: a period is rolled once. Samples that arrive after their period was rolled stay
//! raw only.
//!
//! Invariants: no raw sample is deleted before its period was rolled up (raw retention is capped
//! at `rolled_until_ms`); every rollup and retention statement is bounded (one period, or
//! `history.batch_rows` rows); with several replicas on one PostgreSQL each step runs under
//! `pg_try_advisory_xact_lock(HISTORY_LOCK_KEY)` (the transaction-scoped `pg_try_advisory_lock`:
//! no connection stays pinned, and a replica that dies releases it with its transaction), so
//! one replica at a time does it and the others skip that step. SQLite is single-replica; its
//! steps open with a write, so they take SQLite's write lock before reading the mark.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, Func, Order, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement, TransactionTrait, Value,
};
use tokio::sync::watch;

use super::entities::{agents, component_latest, component_rollups, component_samples, history_rollup_state};
use super::{Db, DbError};
use crate::config::HistoryConfig;
use crate::domain::{
    ComponentHistory, ComponentSample, ComponentStatus, FleetComponentFilter, HistoryPoint, HistorySummary,
    LatestComponent, NameMatch, Resolution, StatusMatch,
};

/// The advisory lock replicas take for rollups and retention (`lwhist` in ASCII).
pub const HISTORY_LOCK_KEY: i64 = 0x6c77_6869_7374;
/// A period is rolled up only once it ended this long ago: samples are stamped when received and
/// written within the writer's queue lag (seconds), so later ones are not expected.
pub const ROLLUP_SETTLE: Duration = Duration::from_secs(60);
/// Samples per insert statement (7 parameters each: well below SQLite's 32766).
pub const INSERT_ROWS: usize = 2000;
/// Periods one maintenance pass rolls up at most (a day of 1-minute periods): a control plane
/// that was down for long catches up over a few passes instead of in one.
const MAX_PERIODS_PER_PASS: usize = 1440;

/// What one rollup step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupStep {
    /// The period starting at `bucket` became `rows` rollups.
    Rolled { bucket: DateTime<Utc>, rows: u64 },
    /// No period is ready.
    UpToDate,
    /// Another replica holds the history lock.
    Busy,
}

/// Rows one retention step deleted, per table; `busy` when another replica holds the lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub samples: u64,
    pub rollups: u64,
    pub latest: u64,
    pub busy: bool,
}

/// One history table's rows and bytes on disk, its indexes included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSize {
    pub table: &'static str,
    pub rows: u64,
    pub bytes: u64,
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintained {
    pub periods: u64,
    pub rollups: u64,
    pub deleted: u64,
}

impl Db {
    /// This handle with the history retention and rollup period of `config`.
    pub fn with_history(mut self, config: HistoryConfig) -> Self {
        self.history = config;
        self
    }

    /// Inserts samples, [`INSERT_ROWS`] per statement, each chunk with its `component_latest`
    /// update in one transaction. A sample already stored (same agent, component and
    /// millisecond) is kept once.
    pub async fn insert_component_samples(&self, samples: &[ComponentSample]) -> Result<(), DbError> {
        for chunk in samples.chunks(INSERT_ROWS) {
            let txn = self.conn.begin().await?;
            txn.execute(insert_samples(self.backend(), chunk)).await?;
            txn.execute(upsert_latest(self.backend(), chunk)).await?;
            txn.commit().await?;
        }
        Ok(())
    }

    /// Rolls up the next ready period (see the module doc), or says why not.
    pub async fn roll_up_history(&self, now: DateTime<Utc>) -> Result<RollupStep, DbError> {
        let period = self.period_ms();
        let txn = self.conn.begin().await?;
        let Some(mark) = self.lock_and_mark(&txn).await? else { return Ok(RollupStep::Busy) };
        let ready_until = floor(now.timestamp_millis() - millis(ROLLUP_SETTLE), period);
        // periods past rollup retention would be deleted at once
        let retained = floor(now.timestamp_millis() - secs_ms(self.history.rollup_retention_secs), period);
        let start = mark.max(retained);
        // skip periods without samples: the next one that has some
        let next: Option<i64> = self
            .one_i64(
                &txn,
                "SELECT MIN(at_ms) AS v FROM component_samples WHERE at_ms >= $1",
                vec![start.into()],
            )
            .await?;
        let bucket = match next.map(|at| floor(at, period).max(start)) {
            Some(bucket) if bucket + period <= ready_until => bucket,
            _ => {
                // nothing before `ready_until` is left to roll
                if ready_until > mark {
                    set_mark(&txn, ready_until).await?;
                }
                txn.commit().await?;
                return Ok(RollupStep::UpToDate);
            }
        };
        let rolled = txn
            .execute(Statement::from_sql_and_values(
                self.backend(),
                ROLL_UP,
                [bucket.into(), (bucket - period).into(), (bucket + period).into()],
            ))
            .await?
            .rows_affected();
        set_mark(&txn, bucket + period).await?;
        txn.commit().await?;
        Ok(RollupStep::Rolled { bucket: from_ms(bucket), rows: rolled })
    }

    /// Deletes at most `history.batch_rows` rows past retention from each history table: raw
    /// samples older than the raw retention and already rolled up, rollups older than theirs,
    /// and latest rows of agent × components silent for the raw retention.
    pub async fn prune_history(&self, now: DateTime<Utc>) -> Result<Pruned, DbError> {
        let txn = self.conn.begin().await?;
        let Some(mark) = self.lock_and_mark(&txn).await? else {
            return Ok(Pruned { busy: true, ..Pruned::default() });
        };
        let now_ms = now.timestamp_millis();
        let raw_cutoff = (now_ms - secs_ms(self.history.raw_retention_secs)).min(mark);
        let rollup_cutoff = now_ms - secs_ms(self.history.rollup_retention_secs);
        let latest_cutoff = now_ms - secs_ms(self.history.raw_retention_secs);
        let pruned = Pruned {
            samples: self.delete_before(&txn, "component_samples", "at_ms", raw_cutoff).await?,
            rollups: self.delete_before(&txn, "component_rollups", "bucket_ms", rollup_cutoff).await?,
            latest: self.delete_before(&txn, "component_latest", "at_ms", latest_cutoff).await?,
            busy: false,
        };
        txn.commit().await?;
        Ok(pruned)
    }

    /// One maintenance pass at `now`: rollup steps until up to date, then retention steps until
    /// nothing is left past retention; `stop` is asked between steps (a step is never cut).
    pub async fn maintain_history(
        &self,
        now: DateTime<Utc>,
        stop: impl Fn() -> bool,
    ) -> Result<Maintained, DbError> {
        let mut done = Maintained::default();
        for _ in 0..MAX_PERIODS_PER_PASS {
            match self.roll_up_history(now).await? {
                RollupStep::Rolled { rows, .. } => {
                    done.periods += 1;
                    done.rollups += rows;
                }
                RollupStep::UpToDate | RollupStep::Busy => break,
            }
            if stop() {
                return Ok(done);
            }
        }
        loop {
            let p = self.prune_history(now).await?;
            done.deleted += p.samples + p.rollups + p.latest;
            let full = self.history.batch_rows;
            if p.busy || (p.samples < full && p.rollups < full && p.latest < full) || stop() {
                return Ok(done);
            }
        }
    }

    /// A component's points in `[from, to]` (oldest first): rollups for the periods before the
    /// raw retention began (`now - raw_retention_secs`, rounded up to a period), raw samples
    /// after; and their summary.
    pub async fn component_history(
        &self,
        agent_id: &str,
        component: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<ComponentHistory, DbError> {
        let period = self.period_ms();
        let (lo, hi) = (from.timestamp_millis(), to.timestamp_millis());
        let raw_since = ceil(now.timestamp_millis() - secs_ms(self.history.raw_retention_secs), period);
        let mut points = Vec::new();
        // the state before the raw samples, for the step into the first: the newest rollup's
        let mut before_raw = None;
        if lo < raw_since {
            use component_rollups::Column as C;
            let rows = component_rollups::Entity::find()
                .filter(C::AgentId.eq(agent_id))
                .filter(C::Component.eq(component))
                .filter(C::BucketMs.gte(floor(lo, period)))
                .filter(C::BucketMs.lt(raw_since))
                .filter(C::BucketMs.lte(hi))
                .order_by_asc(C::BucketMs)
                .all(&self.conn)
                .await?;
            let period_secs = u32::try_from(self.history.rollup_secs).unwrap_or(u32::MAX);
            before_raw =
                rows.last().map(|r| (ComponentStatus::from_code(r.last_status), to_u32(r.max_restarts)));
            points.extend(rows.into_iter().map(|r| rollup_point(r, period_secs)));
        }
        if hi >= raw_since {
            use component_samples::Column as C;
            let start = lo.max(raw_since);
            let series = || {
                component_samples::Entity::find()
                    .filter(C::AgentId.eq(agent_id))
                    .filter(C::Component.eq(component))
            };
            let before = series().filter(C::AtMs.lt(start)).order_by_desc(C::AtMs).limit(1).one(&self.conn);
            // a raw sample before, if retention left one; else the newest rollup
            let prev_raw = before.await?.map(|r| (ComponentStatus::from_code(r.status), to_u32(r.restarts)));
            let mut prev = prev_raw.or(before_raw);
            let rows = series()
                .filter(C::AtMs.gte(start))
                .filter(C::AtMs.lte(hi))
                .order_by_asc(C::AtMs)
                .all(&self.conn)
                .await?;
            for r in rows {
                let (status, restarts) = (ComponentStatus::from_code(r.status), to_u32(r.restarts));
                let inbox = r.inbox_depth.map(to_u32);
                let processed = super::to_u64(r.processed);
                points.push(HistoryPoint::raw(from_ms(r.at_ms), status, restarts, processed, inbox, prev));
                prev = Some((status, restarts));
            }
        }
        let summary = HistorySummary::of(&points);
        Ok(ComponentHistory { raw_since: from_ms(raw_since), points, summary })
    }

    /// The newest sample of every agent × component seen within the raw retention that matches
    /// `filter`, by agent id and component, at most `limit`.
    pub async fn fleet_components(
        &self,
        filter: &FleetComponentFilter,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<LatestComponent>, DbError> {
        use component_latest::Column as L;
        let since = now.timestamp_millis() - secs_ms(self.history.raw_retention_secs);
        let latest = |c: L| Expr::col((component_latest::Entity, c));
        let mut q = Query::select();
        q.columns(
            [L::AgentId, L::Component, L::AtMs, L::Status, L::Restarts, L::Processed, L::InboxDepth]
                .map(|c| (component_latest::Entity, c)),
        )
        .columns([L::LastRestartMs].map(|c| (component_latest::Entity, c)))
        .column((agents::Entity, agents::Column::SiteId))
        .from(component_latest::Entity)
        .inner_join(
            agents::Entity,
            Expr::col((agents::Entity, agents::Column::Id)).equals((component_latest::Entity, L::AgentId)),
        )
        .and_where(latest(L::AtMs).gte(since))
        .order_by((component_latest::Entity, L::AgentId), Order::Asc)
        .order_by((component_latest::Entity, L::Component), Order::Asc)
        .limit(limit);
        match &filter.name {
            Some(NameMatch::Exact(name)) => {
                q.and_where(latest(L::Component).eq(name.as_str()));
            }
            Some(NameMatch::Prefix(prefix)) => {
                // substr rather than LIKE: the same case-sensitive match on both databases
                let chars = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
                let head = Func::cust(Alias::new("substr")).arg(latest(L::Component)).arg(1).arg(chars);
                q.and_where(Expr::expr(head).eq(prefix.as_str()));
            }
            None => {}
        }
        match filter.status {
            Some(StatusMatch::Is(status)) => {
                q.and_where(latest(L::Status).eq(status.code()));
            }
            Some(StatusMatch::NotRunning) => {
                q.and_where(latest(L::Status).ne(ComponentStatus::Running.code()));
            }
            None => {}
        }
        if let Some(site) = &filter.site_id {
            q.and_where(Expr::col((agents::Entity, agents::Column::SiteId)).eq(site.as_str()));
        }
        if let Some(at) = filter.restarted_since {
            q.and_where(latest(L::LastRestartMs).gte(at.timestamp_millis()));
        }
        let rows = self.conn.query_all(self.backend().build(&q)).await?;
        rows.into_iter()
            .map(|row| {
                Ok(LatestComponent {
                    agent_id: row.try_get("", "agent_id")?,
                    site_id: row.try_get("", "site_id")?,
                    component: row.try_get("", "component")?,
                    at: from_ms(row.try_get("", "at_ms")?),
                    status: ComponentStatus::from_code(row.try_get("", "status")?),
                    restarts: to_u32(row.try_get("", "restarts")?),
                    processed: super::to_u64(row.try_get("", "processed")?),
                    inbox_depth: row.try_get::<Option<i32>>("", "inbox_depth")?.map(to_u32),
                    last_restart_at: row.try_get::<Option<i64>>("", "last_restart_ms")?.map(from_ms),
                })
            })
            .collect()
    }

    /// The size of each history table (`bench history`): PostgreSQL's `pg_total_relation_size`,
    /// SQLite's pages of the table and its indexes (`dbstat`).
    pub async fn history_table_sizes(&self) -> Result<Vec<TableSize>, DbError> {
        let mut out = Vec::new();
        let txn = self.conn.begin().await?;
        for table in ["component_samples", "component_rollups", "component_latest"] {
            let rows = self.one_i64(&txn, &format!("SELECT COUNT(*) AS v FROM {table}"), vec![]).await?;
            let bytes = match self.backend() {
                DatabaseBackend::Postgres => format!("SELECT pg_total_relation_size('{table}')::bigint AS v"),
                _ => format!(
                    "SELECT SUM(pgsize) AS v FROM dbstat WHERE name = '{table}' OR name IN \
                     (SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}')"
                ),
            };
            let bytes = self.one_i64(&txn, &bytes, vec![]).await?;
            let [rows, bytes] = [rows, bytes].map(|v| super::to_u64(v.unwrap_or(0)));
            out.push(TableSize { table, rows, bytes });
        }
        txn.commit().await?;
        Ok(out)
    }

    fn backend(&self) -> DatabaseBackend {
        self.conn.get_database_backend()
    }

    fn period_ms(&self) -> i64 {
        secs_ms(self.history.rollup_secs).max(1)
    }

    /// Takes the history lock (PostgreSQL; `None` when another replica holds it) and returns
    /// the rollup mark. The first statement writes, so that SQLite takes its write lock now
    /// rather than failing to upgrade a read later.
    async fn lock_and_mark(&self, txn: &DatabaseTransaction) -> Result<Option<i64>, DbError> {
        if self.backend() == DatabaseBackend::Postgres {
            let locked = txn
                .query_one(Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    "SELECT pg_try_advisory_xact_lock($1) AS locked",
                    [HISTORY_LOCK_KEY.into()],
                ))
                .await?
                .map(|row| row.try_get::<bool>("", "locked"))
                .transpose()?;
            if locked != Some(true) {
                return Ok(None);
            }
        }
        txn.execute_unprepared(
            "INSERT INTO history_rollup_state (id, rolled_until_ms) VALUES (1, -1) ON CONFLICT (id) DO NOTHING",
        )
        .await?;
        let mark = history_rollup_state::Entity::find_by_id(1).one(txn).await?;
        Ok(Some(mark.map_or(-1, |m| m.rolled_until_ms)))
    }

    async fn one_i64(
        &self,
        txn: &DatabaseTransaction,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Option<i64>, DbError> {
        let row = txn.query_one(Statement::from_sql_and_values(self.backend(), sql, values)).await?;
        Ok(row.map(|r| r.try_get::<Option<i64>>("", "v")).transpose()?.flatten())
    }

    /// Deletes at most `history.batch_rows` rows of `table` whose `column` is before `cutoff`.
    async fn delete_before(
        &self,
        txn: &DatabaseTransaction,
        table: &str,
        column: &str,
        cutoff: i64,
    ) -> Result<u64, DbError> {
        let sql = match self.backend() {
            DatabaseBackend::Postgres => format!(
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))"
            ),
            _ => format!(
                "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {column} < $1 LIMIT $2)"
            ),
        };
        let limit = super::to_i64(self.history.batch_rows);
        let statement = Statement::from_sql_and_values(self.backend(), sql, [cutoff.into(), limit.into()]);
        Ok(txn.execute(statement).await?.rows_affected())
    }
}

/// The rollup of one period `[$1, $3)`; `LAG` also sees the period before (`$2..$1`), so the
/// step into the period counts. `processed` and the last status are the newest sample's.
const ROLL_UP: &str = "INSERT INTO component_rollups (agent_id, component, bucket_ms, samples, \
     worst_status, last_status, max_restarts, processed_end, max_inbox_depth, not_running, left_running, \
     restarts_added) \
     SELECT agent_id, component, $1, COUNT(*), MAX(status), MAX(last_status), MAX(restarts), MAX(processed_end), \
     MAX(inbox_depth), SUM(CASE WHEN status <> 0 THEN 1 ELSE 0 END), \
     SUM(CASE WHEN status <> 0 AND prev_status = 0 THEN 1 ELSE 0 END), \
     SUM(CASE WHEN prev_restarts IS NULL THEN 0 WHEN restarts >= prev_restarts \
       THEN restarts - prev_restarts ELSE restarts END) \
     FROM (SELECT agent_id, component, at_ms, status, restarts, inbox_depth, \
       LAG(status) OVER w AS prev_status, LAG(restarts) OVER w AS prev_restarts, \
       FIRST_VALUE(processed) OVER newest AS processed_end, FIRST_VALUE(status) OVER newest AS last_status \
       FROM component_samples WHERE at_ms >= $2 AND at_ms < $3 \
       WINDOW w AS (PARTITION BY agent_id, component ORDER BY at_ms), \
         newest AS (PARTITION BY agent_id, component ORDER BY at_ms DESC)) s \
     WHERE at_ms >= $1 GROUP BY agent_id, component \
     ON CONFLICT (agent_id, component, bucket_ms) DO NOTHING";

async fn set_mark(txn: &DatabaseTransaction, until_ms: i64) -> Result<(), DbError> {
    let backend = txn.get_database_backend();
    let sql = "UPDATE history_rollup_state SET rolled_until_ms = $1 WHERE id = 1";
    txn.execute(Statement::from_sql_and_values(backend, sql, [until_ms.into()])).await?;
    Ok(())
}

/// `INSERT .. VALUES (..), (..) ON CONFLICT DO NOTHING` of raw samples.
fn insert_samples(backend: DatabaseBackend, chunk: &[ComponentSample]) -> Statement {
    let mut sql = String::with_capacity(64 + chunk.len() * 48);
    sql.push_str(
        "INSERT INTO component_samples (agent_id, component, at_ms, status, restarts, processed, inbox_depth) VALUES ",
    );
    let mut values = Vec::with_capacity(chunk.len() * 7);
    for (i, s) in chunk.iter().enumerate() {
        push_row(backend, &mut sql, i, 7);
        values.extend(sample_values(s));
    }
    sql.push_str(" ON CONFLICT (agent_id, component, at_ms) DO NOTHING");
    Statement::from_sql_and_values(backend, sql, values)
}

/// The newest sample of each agent × component in `chunk` into `component_latest`, unless a
/// newer one is there; `last_restart_ms` moves when the restart count grew (within the chunk,
/// or from the stored sample to the chunk's).
fn upsert_latest(backend: DatabaseBackend, chunk: &[ComponentSample]) -> Statement {
    // per agent × component: the newest sample, and when its restart count last grew within
    // the chunk (samples in time order)
    let mut series: std::collections::HashMap<(&str, &str), Vec<&ComponentSample>> = Default::default();
    for s in chunk {
        series.entry((s.agent_id.as_ref(), s.component.as_str())).or_default().push(s);
    }
    let newest = series.into_values().map(|mut samples| {
        samples.sort_by_key(|s| s.at);
        let grew = samples.windows(2).rev().find(|w| w[1].restarts > w[0].restarts).map(|w| w[1].at);
        (samples[samples.len() - 1], grew.map(|at| at.timestamp_millis()))
    });
    let mut sql = String::from(
        "INSERT INTO component_latest (agent_id, component, at_ms, status, restarts, processed, inbox_depth, \
         last_restart_ms) VALUES ",
    );
    let mut values = Vec::with_capacity(chunk.len() * 8);
    for (i, (s, grew)) in newest.enumerate() {
        push_row(backend, &mut sql, i, 8);
        values.extend(sample_values(s));
        values.push(grew.into());
    }
    // growth within the chunk is the newest; else growth since the stored sample, dated by the
    // chunk's newest sample
    sql.push_str(
        " ON CONFLICT (agent_id, component) DO UPDATE SET \
         last_restart_ms = CASE WHEN excluded.last_restart_ms IS NOT NULL THEN excluded.last_restart_ms \
           WHEN excluded.restarts > component_latest.restarts THEN excluded.at_ms \
           ELSE component_latest.last_restart_ms END, \
         at_ms = excluded.at_ms, status = excluded.status, restarts = excluded.restarts, \
         processed = excluded.processed, inbox_depth = excluded.inbox_depth \
         WHERE excluded.at_ms > component_latest.at_ms",
    );
    Statement::from_sql_and_values(backend, sql, values)
}

/// Appends `($n, .., $m)` for the `row`-th row of `width` values; on SQLite `(?, .., ?)`:
/// SQLite looks a numbered parameter's name up in a list, so binding thousands of them is
/// quadratic (it was 94% of a 2,000-row insert's time).
fn push_row(backend: DatabaseBackend, sql: &mut String, row: usize, width: usize) {
    use std::fmt::Write as _;
    if row > 0 {
        sql.push(',');
    }
    sql.push('(');
    for col in 0..width {
        let sep = if col == 0 { "" } else { "," };
        match backend {
            DatabaseBackend::Postgres => {
                let _ = write!(sql, "{sep}${}", row * width + col + 1);
            }
            _ => {
                let _ = write!(sql, "{sep}?");
            }
        }
    }
    sql.push(')');
}

fn sample_values(s: &ComponentSample) -> [Value; 7] {
    [
        s.agent_id.as_ref().into(),
        s.component.as_str().into(),
        s.at.timestamp_millis().into(),
        s.status.code().into(),
        to_i32(s.restarts).into(),
        super::to_i64(s.processed).into(),
        s.inbox_depth.map(to_i32).into(),
    ]
}

fn rollup_point(r: component_rollups::Model, period_secs: u32) -> HistoryPoint {
    HistoryPoint {
        at: from_ms(r.bucket_ms),
        resolution: Resolution::Rollup,
        period_secs,
        samples: to_u32(r.samples),
        status: ComponentStatus::from_code(r.worst_status),
        restarts: to_u32(r.max_restarts),
        processed: super::to_u64(r.processed_end),
        inbox_depth: r.max_inbox_depth.map(to_u32),
        not_running: to_u32(r.not_running),
        left_running: to_u32(r.left_running),
        restarts_added: to_u32(r.restarts_added),
    }
}

/// The rollup and retention task: a [`Db::maintain_history`] pass every
/// `history.maintenance_interval_secs` until `shutdown` turns true (a pass in progress stops
/// after its current step).
pub async fn run_history_maintenance(db: Db, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_secs(db.history.maintenance_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        let stopped = || *shutdown.borrow();
        match db.maintain_history(Utc::now(), stopped).await {
            Ok(done) => tracing::debug!(
                periods = done.periods,
                rollups = done.rollups,
                deleted = done.deleted,
                "component history maintained"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "component history rollup or retention failed; retrying next pass")
            }
        }
    }
}

fn floor(ms: i64, period: i64) -> i64 {
    ms.div_euclid(period) * period
}

fn ceil(ms: i64, period: i64) -> i64 {
    floor(ms + period - 1, period)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn secs_ms(secs: u64) -> i64 {
    super::to_i64(secs).saturating_mul(1000)
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn to_u32(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

//! The job queue's rows (`jobs`, `job_queues`, `job_replicas`): insert (also inside another
//! write's transaction), claim, finish, the operators' batch actions, counts and the keyset
//! list, rescue of jobs orphaned by a replica that stopped, and pruning of finished jobs.
//!
//! Claiming is one statement: `UPDATE .. WHERE id IN (SELECT .. ORDER BY priority,
//! scheduled_at_ms, id LIMIT n FOR UPDATE SKIP LOCKED) RETURNING ..` on PostgreSQL, so replicas
//! claim disjoint jobs without waiting on each other; SQLite has one writer at a time, so the same
//! statement without the locking clause is atomic there. A queue with a global limit is claimed
//! under `pg_advisory_xact_lock` of the queue, after counting what all replicas run of it.
//! Finishing an attempt names the attempt it finishes (`WHERE state = 'executing' AND attempt =
//! $n`), so a job that was cancelled or rescued meanwhile is never overwritten by a late result.

use chrono::{DateTime, TimeZone, Utc};
use sea_orm::{ConnectionTrait, DatabaseBackend, QueryResult, Statement, TransactionTrait, Value};

use super::{Db, DbError};
use crate::domain::{AttemptError, Job, JobAction, JobFilter, JobState, NewJob, QueueSettings};

/// The columns every read returns, in [`job_from_row`]'s order.
const COLUMNS: &str = "id, queue, worker, args, state, priority, attempt, max_attempts, inserted_at_ms, \
    scheduled_at_ms, attempted_at_ms, finished_at_ms, attempted_by, errors";

/// The advisory lock key of a queue's global-limit claims: `lwjobs` and the queue's name hashed.
fn queue_lock_key(queue: &str) -> i64 {
    let mut h: i64 = 0x6c77_6a6f_6273;
    for b in queue.bytes() {
        h = h.wrapping_mul(31).wrapping_add(i64::from(b));
    }
    h
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// `$1, $2, ..` from `start`, `n` of them.
fn params(start: usize, n: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn job_from_row(r: &QueryResult) -> Result<Job, DbError> {
    let id: i64 = r.try_get("", "id")?;
    let malformed = |why: String| DbError::Malformed { table: "jobs", id: id.to_string(), why };
    let state: String = r.try_get("", "state")?;
    let args: String = r.try_get("", "args")?;
    let errors: String = r.try_get("", "errors")?;
    Ok(Job {
        id,
        queue: r.try_get("", "queue")?,
        worker: r.try_get("", "worker")?,
        args: serde_json::from_str(&args).map_err(|e| malformed(format!("args: {e}")))?,
        state: JobState::parse(&state).ok_or_else(|| malformed(format!("unknown state {state:?}")))?,
        priority: r.try_get("", "priority")?,
        attempt: u32::try_from(r.try_get::<i32>("", "attempt")?).unwrap_or(0),
        max_attempts: u32::try_from(r.try_get::<i32>("", "max_attempts")?).unwrap_or(0),
        inserted_at: at(r.try_get("", "inserted_at_ms")?),
        scheduled_at: at(r.try_get("", "scheduled_at_ms")?),
        attempted_at: r.try_get::<Option<i64>>("", "attempted_at_ms")?.map(at),
        finished_at: r.try_get::<Option<i64>>("", "finished_at_ms")?.map(at),
        attempted_by: r.try_get("", "attempted_by")?,
        errors: serde_json::from_str(&errors).map_err(|e| malformed(format!("errors: {e}")))?,
    })
}

/// Inserts `jobs` on `conn` (a connection or another write's transaction: a job is then
/// committed with the rows that caused it, or not at all). The id of each, in order; `None` where
/// its unique key was taken.
pub async fn insert_jobs<C: ConnectionTrait>(
    conn: &C,
    jobs: &[NewJob],
    now: DateTime<Utc>,
) -> Result<Vec<Option<i64>>, DbError> {
    let mut ids = Vec::with_capacity(jobs.len());
    for job in jobs {
        let scheduled = job.scheduled_at.unwrap_or(now).max(now - chrono::Duration::days(3650));
        let state = if scheduled > now { JobState::Scheduled } else { JobState::Available };
        let sql = "INSERT INTO jobs (queue, worker, args, state, priority, attempt, max_attempts, \
                   inserted_at_ms, scheduled_at_ms, unique_key, errors) \
                   VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9, '[]') ON CONFLICT DO NOTHING RETURNING id";
        let values: [Value; 9] = [
            job.queue.clone().into(),
            job.worker.clone().into(),
            job.args.to_string().into(),
            state.as_str().into(),
            job.priority.into(),
            i32::try_from(job.max_attempts.max(1)).unwrap_or(i32::MAX).into(),
            ms(now).into(),
            ms(scheduled).into(),
            job.unique_key.clone().into(),
        ];
        let statement = Statement::from_sql_and_values(conn.get_database_backend(), sql, values);
        let row = conn.query_one(statement).await?;
        ids.push(row.map(|r| r.try_get::<i64>("", "id")).transpose()?);
    }
    Ok(ids)
}

impl Db {
    fn jobs_backend(&self) -> DatabaseBackend {
        self.conn.get_database_backend()
    }

    /// [`insert_jobs`] on the pool.
    pub async fn insert_jobs(
        &self,
        jobs: &[NewJob],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<i64>>, DbError> {
        insert_jobs(&self.conn, jobs, now).await
    }

    /// Claims up to `limit` due jobs of `queue` for `replica`: each becomes `executing` with its
    /// attempt counted. With `global_limit`, all replicas together never run more than that.
    pub async fn claim_jobs(
        &self,
        queue: &str,
        replica: &str,
        limit: u32,
        global_limit: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Job>, DbError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let backend = self.jobs_backend();
        let lock = if backend == DatabaseBackend::Postgres { "FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE jobs SET state = 'executing', attempt = attempt + 1, attempted_at_ms = $1, attempted_by = $2 \
             WHERE id IN (SELECT id FROM jobs WHERE queue = $3 AND state IN ('available', 'scheduled', 'retryable') \
             AND scheduled_at_ms <= $1 ORDER BY priority, scheduled_at_ms, id LIMIT $4 {lock}) RETURNING {COLUMNS}"
        );
        let claim = |limit: i64| {
            Statement::from_sql_and_values(
                backend,
                sql.clone(),
                [ms(now).into(), replica.into(), queue.into(), limit.into()],
            )
        };
        let sorted = |rows: Vec<QueryResult>| -> Result<Vec<Job>, DbError> {
            let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>, _>>()?;
            jobs.sort_by_key(|j| (j.priority, j.scheduled_at, j.id));
            Ok(jobs)
        };
        let Some(global) = global_limit else {
            // one statement, atomic on its own: one round trip per claim
            return sorted(self.conn.query_all(claim(i64::from(limit))).await?);
        };
        // a global limit: count what all replicas run of the queue, under the queue's lock
        let txn = self.conn.begin().await?;
        if backend == DatabaseBackend::Postgres {
            txn.execute(Statement::from_sql_and_values(
                backend,
                "SELECT pg_advisory_xact_lock($1)",
                [queue_lock_key(queue).into()],
            ))
            .await?;
        }
        let running = txn
            .query_one(Statement::from_sql_and_values(
                backend,
                "SELECT COUNT(*) AS n FROM jobs WHERE state = 'executing' AND queue = $1",
                [queue.into()],
            ))
            .await?
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        let limit = i64::from(limit).min(i64::from(global) - running);
        if limit <= 0 {
            txn.commit().await?;
            return Ok(Vec::new());
        }
        let rows = txn.query_all(claim(limit)).await?;
        txn.commit().await?;
        sorted(rows)
    }

    /// Marks attempt `attempt` of job `id` completed; false when the job is no longer that
    /// running attempt (cancelled or rescued meanwhile).
    pub async fn complete_job(&self, id: i64, attempt: u32, now: DateTime<Utc>) -> Result<bool, DbError> {
        let result = self
            .conn
            .execute(Statement::from_sql_and_values(
                self.jobs_backend(),
                "UPDATE jobs SET state = 'completed', finished_at_ms = $1 \
                 WHERE id = $2 AND state = 'executing' AND attempt = $3",
                [ms(now).into(), id.into(), i32::try_from(attempt).unwrap_or(i32::MAX).into()],
            ))
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Records attempt `attempt`'s error; the job is `retryable` at `retry_at`, or `discarded`
    /// when `retry_at` is `None` (no attempts left, or the worker said not to retry).
    pub async fn fail_job(
        &self,
        id: i64,
        attempt: u32,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let backend = self.jobs_backend();
        let txn = self.conn.begin().await?;
        let row = txn
            .query_one(Statement::from_sql_and_values(
                backend,
                "SELECT errors FROM jobs WHERE id = $1 AND state = 'executing' AND attempt = $2",
                [id.into(), i32::try_from(attempt).unwrap_or(i32::MAX).into()],
            ))
            .await?;
        let Some(row) = row else {
            txn.commit().await?;
            return Ok(false);
        };
        let mut errors: Vec<AttemptError> =
            serde_json::from_str(&row.try_get::<String>("", "errors")?).unwrap_or_default();
        errors.push(AttemptError { attempt, at: now, error: error.chars().take(4000).collect() });
        let errors = serde_json::to_string(&errors).unwrap_or_else(|_| "[]".into());
        let (state, scheduled, finished) = match retry_at {
            Some(t) => (JobState::Retryable, Some(ms(t)), None),
            None => (JobState::Discarded, None, Some(ms(now))),
        };
        txn.execute(Statement::from_sql_and_values(
            backend,
            "UPDATE jobs SET state = $1, errors = $2, scheduled_at_ms = COALESCE($3, scheduled_at_ms), \
             finished_at_ms = $4 WHERE id = $5",
            [state.as_str().into(), errors.into(), scheduled.into(), finished.into(), id.into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Operators' batch actions on jobs by id; how many changed. Retry makes a job available
    /// now with one more attempt allowed if it used all of them (not an executing one); cancel
    /// ends a job that has not finished (a running attempt's result is then ignored); delete
    /// removes a job that is not executing.
    pub async fn act_on_jobs(
        &self,
        action: JobAction,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<u64, DbError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let list = params(2, ids.len());
        let sql = match action {
            JobAction::Retry => format!(
                "UPDATE jobs SET state = 'available', scheduled_at_ms = $1, finished_at_ms = NULL, \
                 max_attempts = CASE WHEN attempt >= max_attempts THEN attempt + 1 ELSE max_attempts END \
                 WHERE id IN ({list}) AND state <> 'executing'"
            ),
            JobAction::Cancel => format!(
                "UPDATE jobs SET state = 'cancelled', finished_at_ms = $1 \
                 WHERE id IN ({list}) AND state NOT IN ('completed', 'discarded', 'cancelled')"
            ),
            JobAction::Delete => {
                format!("DELETE FROM jobs WHERE $1 = $1 AND id IN ({list}) AND state <> 'executing'")
            }
        };
        let mut values: Vec<Value> = vec![ms(now).into()];
        values.extend(ids.iter().map(|&id| Value::from(id)));
        let result =
            self.conn.execute(Statement::from_sql_and_values(self.jobs_backend(), sql, values)).await?;
        Ok(result.rows_affected())
    }

    pub async fn job(&self, id: i64) -> Result<Option<Job>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
        let row = self
            .conn
            .query_one(Statement::from_sql_and_values(self.jobs_backend(), sql, [id.into()]))
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Jobs under `filter`, newest first, strictly before id `before`; at most `first`.
    pub async fn jobs_page(
        &self,
        filter: &JobFilter,
        before: Option<i64>,
        first: u64,
    ) -> Result<Vec<Job>, DbError> {
        let (mut clause, mut values) = job_filter(filter);
        if let Some(before) = before {
            values.push(before.into());
            clause.push(format!("id < ${}", values.len()));
        }
        values.push(i64::try_from(first).unwrap_or(i64::MAX).into());
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs {} ORDER BY id DESC LIMIT ${}",
            where_clause(&clause),
            values.len()
        );
        let rows =
            self.conn.query_all(Statement::from_sql_and_values(self.jobs_backend(), sql, values)).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// The exact number of jobs under `filter`.
    pub async fn jobs_count(&self, filter: &JobFilter) -> Result<u64, DbError> {
        let (clause, values) = job_filter(filter);
        let sql = format!("SELECT COUNT(*) AS n FROM jobs {}", where_clause(&clause));
        let row =
            self.conn.query_one(Statement::from_sql_and_values(self.jobs_backend(), sql, values)).await?;
        Ok(row.map(|r| r.try_get::<i64>("", "n")).transpose()?.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    /// Jobs per queue and state (the states with none left out).
    pub async fn job_counts(&self) -> Result<Vec<(String, JobState, u64)>, DbError> {
        let rows = self
            .conn
            .query_all(Statement::from_string(
                self.jobs_backend(),
                "SELECT queue, state, COUNT(*) AS n FROM jobs GROUP BY state, queue",
            ))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let state: String = r.try_get("", "state")?;
            if let Some(state) = JobState::parse(&state) {
                out.push((
                    r.try_get("", "queue")?,
                    state,
                    u64::try_from(r.try_get::<i64>("", "n")?).unwrap_or(0),
                ));
            }
        }
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(out)
    }

    /// Scheduled and retryable jobs whose time has come become available (so the list and the
    /// counts show them as due); how many.
    pub async fn stage_due_jobs(&self, now: DateTime<Utc>) -> Result<u64, DbError> {
        let result = self
            .conn
            .execute(Statement::from_sql_and_values(
                self.jobs_backend(),
                "UPDATE jobs SET state = 'available' WHERE state IN ('scheduled', 'retryable') AND scheduled_at_ms <= $1",
                [ms(now).into()],
            ))
            .await?;
        Ok(result.rows_affected())
    }

    /// Says this replica is alive (rescue spares the jobs of replicas seen lately).
    pub async fn beat_job_replica(&self, replica: &str, now: DateTime<Utc>) -> Result<(), DbError> {
        self.conn
            .execute(Statement::from_sql_and_values(
                self.jobs_backend(),
                "INSERT INTO job_replicas (replica_id, seen_at_ms) VALUES ($1, $2) \
                 ON CONFLICT (replica_id) DO UPDATE SET seen_at_ms = excluded.seen_at_ms",
                [replica.into(), ms(now).into()],
            ))
            .await?;
        Ok(())
    }

    /// Jobs left `executing` by replicas not seen since `stale_before` go back to `available`
    /// (their attempt stays counted, with an error saying so), or are discarded when they had
    /// no attempt left. The replicas' rows go too. How many jobs were rescued.
    pub async fn rescue_orphaned_jobs(
        &self,
        stale_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, DbError> {
        let backend = self.jobs_backend();
        let dead = "SELECT replica_id FROM job_replicas WHERE seen_at_ms < $1";
        let orphaned = format!(
            "SELECT {COLUMNS} FROM jobs WHERE state = 'executing' AND (attempted_by IN ({dead}) \
             OR attempted_by NOT IN (SELECT replica_id FROM job_replicas))"
        );
        let rows = self
            .conn
            .query_all(Statement::from_sql_and_values(backend, orphaned, [ms(stale_before).into()]))
            .await?;
        let mut rescued = 0;
        for job in rows.iter().map(job_from_row) {
            let job = job?;
            let replica = job.attempted_by.clone().unwrap_or_default();
            let error = format!("rescued: replica {replica} stopped during attempt {}", job.attempt);
            let retry = (job.attempt < job.max_attempts).then_some(now);
            if self.fail_job(job.id, job.attempt, &error, retry, now).await? {
                tracing::warn!(job_id = job.id, worker = %job.worker, %replica, "job rescued from a stopped replica");
                rescued += 1;
            }
        }
        self.conn
            .execute(Statement::from_sql_and_values(
                backend,
                "DELETE FROM job_replicas WHERE seen_at_ms < $1",
                [ms(stale_before).into()],
            ))
            .await?;
        Ok(rescued)
    }

    /// Deletes at most `limit` jobs that finished before `cutoff`; how many.
    pub async fn prune_jobs(&self, cutoff: DateTime<Utc>, limit: u64) -> Result<u64, DbError> {
        let sql = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at_ms IS NOT NULL \
                   AND finished_at_ms < $1 ORDER BY finished_at_ms LIMIT $2)";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let result = self
            .conn
            .execute(Statement::from_sql_and_values(
                self.jobs_backend(),
                sql,
                [ms(cutoff).into(), limit.into()],
            ))
            .await?;
        Ok(result.rows_affected())
    }

    /// Every queue's settings as stored; a queue configured but never stored is absent.
    pub async fn queue_settings(&self) -> Result<Vec<QueueSettings>, DbError> {
        let rows = self
            .conn
            .query_all(Statement::from_string(
                self.jobs_backend(),
                "SELECT name, paused, local_limit, global_limit FROM job_queues ORDER BY name",
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(QueueSettings {
                    name: r.try_get("", "name")?,
                    paused: r.try_get("", "paused")?,
                    local_limit: u32::try_from(r.try_get::<i32>("", "local_limit")?).unwrap_or(0),
                    global_limit: r
                        .try_get::<Option<i32>>("", "global_limit")?
                        .and_then(|g| u32::try_from(g).ok()),
                })
            })
            .collect()
    }

    /// Stores a queue's settings unless it has some (`only_new`), or replaces them.
    pub async fn put_queue_settings(
        &self,
        q: &QueueSettings,
        only_new: bool,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let conflict = if only_new {
            "DO NOTHING"
        } else {
            "DO UPDATE SET paused = excluded.paused, local_limit = excluded.local_limit, \
             global_limit = excluded.global_limit, updated_at_ms = excluded.updated_at_ms"
        };
        let sql = format!(
            "INSERT INTO job_queues (name, paused, local_limit, global_limit, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) {conflict}"
        );
        let values: [Value; 5] = [
            q.name.clone().into(),
            q.paused.into(),
            i32::try_from(q.local_limit).unwrap_or(i32::MAX).into(),
            q.global_limit.map(|g| i32::try_from(g).unwrap_or(i32::MAX)).into(),
            ms(now).into(),
        ];
        self.conn.execute(Statement::from_sql_and_values(self.jobs_backend(), sql, values)).await?;
        Ok(())
    }
}

fn where_clause(clause: &[String]) -> String {
    if clause.is_empty() { String::new() } else { format!("WHERE {}", clause.join(" AND ")) }
}

/// The filter as SQL conditions and their values (`$1..`). State, queue and worker use the
/// `jobs_state` and `jobs_worker` indexes; the argument text is a substring match.
fn job_filter(f: &JobFilter) -> (Vec<String>, Vec<Value>) {
    let (mut clause, mut values): (Vec<String>, Vec<Value>) = (Vec::new(), Vec::new());
    let mut add = |sql: &str, v: Value| {
        values.push(v);
        clause.push(sql.replace('?', &format!("${}", values.len())));
    };
    if let Some(state) = f.state {
        add("state = ?", state.as_str().into());
    }
    if let Some(queue) = &f.queue {
        add("queue = ?", queue.clone().into());
    }
    if let Some(worker) = &f.worker {
        add("worker = ?", worker.clone().into());
    }
    if let Some(text) = &f.args_contains {
        let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        add("args LIKE ? ESCAPE '\\'", format!("%{escaped}%").into());
    }
    if let Some(from) = f.from {
        add("inserted_at_ms >= ?", ms(from).into());
    }
    if let Some(to) = f.to {
        add("inserted_at_ms < ?", ms(to).into());
    }
    (clause, values)
}

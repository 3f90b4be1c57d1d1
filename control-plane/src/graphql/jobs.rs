//! The job queue and legal retention in GraphQL, with what Oban Web offers: counts by queue and
//! state, the job list filtered by queue, state, worker, argument text and time with an exact
//! count, a job's detail with every attempt's error, batch retry / cancel / delete, and queue
//! controls (pause, resume, resize) that reach every replica. Admins and operators only, every
//! mutation audited. `captureDeletions` serves retention's deletion records under the caller's
//! `Visibility` (agencies: their jurisdiction's).

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, ErrorExtensions, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{PageCursor, audited, connection, cursor, guard, page_size, parts, storage, storage_error};
use crate::auth::Action;
use crate::domain::{self, CaptureCursor, JobAction};
use crate::error::Error;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum JobState {
    Available,
    Scheduled,
    Executing,
    Retryable,
    Completed,
    Discarded,
    Cancelled,
}

impl From<domain::JobState> for JobState {
    fn from(s: domain::JobState) -> Self {
        match s {
            domain::JobState::Available => Self::Available,
            domain::JobState::Scheduled => Self::Scheduled,
            domain::JobState::Executing => Self::Executing,
            domain::JobState::Retryable => Self::Retryable,
            domain::JobState::Completed => Self::Completed,
            domain::JobState::Discarded => Self::Discarded,
            domain::JobState::Cancelled => Self::Cancelled,
        }
    }
}

impl JobState {
    fn to_domain(self) -> domain::JobState {
        domain::JobState::ALL
            .into_iter()
            .find(|s| JobState::from(*s) == self)
            .unwrap_or(domain::JobState::Available)
    }
}

/// A job with every failed attempt's error.
#[derive(SimpleObject)]
pub struct Job {
    id: ID,
    queue: String,
    worker: String,
    /// Its arguments as JSON text.
    args: String,
    state: JobState,
    /// 0 runs first.
    priority: i32,
    /// Attempts made (the running one included).
    attempt: u32,
    max_attempts: u32,
    inserted_at: DateTime<Utc>,
    /// When it is (or was) due.
    scheduled_at: DateTime<Utc>,
    attempted_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    /// The replica that ran its last attempt.
    attempted_by: Option<String>,
    /// Each failed attempt, oldest first.
    errors: Vec<JobAttemptError>,
}

#[derive(SimpleObject)]
pub struct JobAttemptError {
    attempt: u32,
    at: DateTime<Utc>,
    error: String,
}

impl From<domain::Job> for Job {
    fn from(j: domain::Job) -> Self {
        Self {
            id: ID(j.id.to_string()),
            queue: j.queue,
            worker: j.worker,
            args: j.args.to_string(),
            state: j.state.into(),
            priority: i32::from(j.priority),
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            inserted_at: j.inserted_at,
            scheduled_at: j.scheduled_at,
            attempted_at: j.attempted_at,
            finished_at: j.finished_at,
            attempted_by: j.attempted_by,
            errors: j
                .errors
                .into_iter()
                .map(|e| JobAttemptError { attempt: e.attempt, at: e.at, error: e.error })
                .collect(),
        }
    }
}

/// A queue: its settings (shared by every replica) and its jobs per state.
#[derive(SimpleObject)]
pub struct Queue {
    name: String,
    paused: bool,
    /// Jobs one replica runs at once.
    local_limit: u32,
    /// Jobs all replicas run at once; null: only the local limit.
    global_limit: Option<u32>,
    /// Jobs per state, every state listed.
    counts: Vec<StateCount>,
}

#[derive(SimpleObject)]
pub struct StateCount {
    state: JobState,
    count: u64,
}

/// A page of jobs with the exact number under the filter.
#[derive(SimpleObject)]
pub struct JobsTotal {
    total_count: u64,
}

/// One record of a capture deleted by legal retention: what, when and why.
#[derive(SimpleObject)]
pub struct CaptureDeletion {
    id: ID,
    capture_id: ID,
    site: String,
    jurisdiction: Option<String>,
    /// The capture's decision when it was deleted.
    decision: String,
    /// The class it was kept under: `statistics`, `compliant`, `violation_candidate` or
    /// `confirmed_violation`.
    value_class: String,
    captured_at: DateTime<Utc>,
    deleted_at: DateTime<Utc>,
    retention_days: u32,
    reason: String,
}

impl From<domain::CaptureDeletion> for CaptureDeletion {
    fn from(d: domain::CaptureDeletion) -> Self {
        Self {
            id: ID(d.id.to_string()),
            capture_id: ID(d.capture_id.to_string()),
            site: d.site_id,
            jurisdiction: d.jurisdiction,
            decision: d.decision,
            value_class: d.value_class,
            captured_at: d.captured_at,
            deleted_at: d.deleted_at,
            retention_days: d.retention_days,
            reason: d.reason,
        }
    }
}

async fn queues(api: &super::ApiContext) -> Result<Vec<Queue>, Error> {
    let settings = api.db.queue_settings().await.map_err(storage)?;
    let counts = api.db.job_counts().await.map_err(storage)?;
    Ok(settings
        .into_iter()
        .map(|q| Queue {
            counts: domain::JobState::ALL
                .into_iter()
                .map(|state| StateCount {
                    state: state.into(),
                    count: counts.iter().find(|(n, s, _)| *n == q.name && *s == state).map_or(0, |c| c.2),
                })
                .collect(),
            name: q.name,
            paused: q.paused,
            local_limit: q.local_limit,
            global_limit: q.global_limit,
        })
        .collect())
}

#[derive(Default)]
pub struct JobsQuery;

#[Object]
impl JobsQuery {
    /// Every queue with its settings and its jobs per state (admins and operators).
    async fn queues(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Queue>> {
        let (api, _) = guard(ctx, Action::OperateJobs)?;
        queues(api).await.map_err(|e| e.extend())
    }

    /// Jobs under the filters, newest first, with the exact number under them (`totalCount`).
    /// `args` matches a substring of the arguments' JSON text; `from`/`to` bound the insertion
    /// time, `[from, to)`.
    #[allow(clippy::too_many_arguments)]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        queue: Option<String>,
        state: Option<JobState>,
        worker: Option<String>,
        args: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Connection<String, Job, JobsTotal>> {
        let (api, _) = guard(ctx, Action::OperateJobs)?;
        let limit = page_size(first)?;
        let before = match after {
            None => None,
            Some(text) => Some(text.parse::<i64>().map_err(|_| {
                Error::invalid(format!("after {text:?} is not a cursor from this api")).extend()
            })?),
        };
        let filter = domain::JobFilter {
            queue,
            state: state.map(JobState::to_domain),
            worker,
            args_contains: args.filter(|a| !a.is_empty()),
            from,
            to,
        };
        let (rows, total) =
            futures::try_join!(api.db.jobs_page(&filter, before, limit + 1), api.db.jobs_count(&filter))
                .map_err(storage_error)?;
        let has_next = rows.len() as u64 > limit;
        let mut c =
            Connection::with_additional_fields(before.is_some(), has_next, JobsTotal { total_count: total });
        c.edges.extend(
            rows.into_iter()
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .map(|j| Edge::new(j.id.to_string(), Job::from(j))),
        );
        Ok(c)
    }

    /// One job with every attempt's error.
    async fn job(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Job>> {
        let (api, _) = guard(ctx, Action::OperateJobs)?;
        let id = id
            .parse::<i64>()
            .map_err(|_| Error::invalid(format!("job id {:?} is not a number", id.as_str())).extend())?;
        Ok(api.db.job(id).await.map_err(storage_error)?.map(Job::from))
    }

    /// Records of captures deleted by legal retention, newest first. Admins and operators see
    /// all; an agency sees those of its jurisdiction.
    async fn capture_deletions(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        site: Option<String>,
    ) -> async_graphql::Result<Connection<PageCursor, CaptureDeletion>> {
        let (api, who) = guard(ctx, Action::ReadDeletions)?;
        let limit = page_size(first)?;
        let after = cursor(after)?;
        let rows = api
            .db
            .capture_deletions(&who.visibility(), site.as_deref(), after.map(|c| c.id), limit + 1)
            .await
            .map_err(storage_error)?;
        Ok(connection(
            rows,
            limit,
            after.is_some(),
            |d| CaptureCursor { captured_at: d.deleted_at, id: d.id },
            CaptureDeletion::from,
        ))
    }
}

#[derive(Default)]
pub struct JobsMutation;

fn job_ids(ids: &[ID]) -> Result<Vec<i64>, Error> {
    if ids.is_empty() || ids.len() > 1000 {
        return Err(Error::invalid(format!("ids must name 1 to 1000 jobs, got {}", ids.len())));
    }
    ids.iter()
        .map(|id| {
            id.parse::<i64>().map_err(|_| Error::invalid(format!("job id {:?} is not a number", id.as_str())))
        })
        .collect()
}

async fn act(ctx: &Context<'_>, name: &str, action: JobAction, ids: Vec<ID>) -> async_graphql::Result<u64> {
    let (api, who) = parts(ctx)?;
    let target = format!("jobs/{}", ids.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(","));
    let result = async {
        who.authorize(Action::OperateJobs)?;
        let ids = job_ids(&ids)?;
        api.db.act_on_jobs(action, &ids, Utc::now()).await.map_err(storage)
    }
    .await;
    audited(api, who, name, &target, result).await
}

/// Changes a queue's settings (read, then written whole) for every replica.
async fn set_queue(
    ctx: &Context<'_>,
    name: &str,
    queue: String,
    change: impl FnOnce(&mut domain::QueueSettings) -> Result<(), Error>,
) -> async_graphql::Result<Queue> {
    let (api, who) = parts(ctx)?;
    let result = async {
        who.authorize(Action::OperateJobs)?;
        let settings = api.db.queue_settings().await.map_err(storage)?;
        let known: Vec<String> = settings.iter().map(|q| q.name.clone()).collect();
        let mut q = settings
            .into_iter()
            .find(|q| q.name == queue)
            .ok_or_else(|| Error::not_found(format!("no queue {queue:?} (queues: {})", known.join(", "))))?;
        change(&mut q)?;
        api.db.put_queue_settings(&q, false, Utc::now()).await.map_err(storage)?;
        let all = queues(api).await?;
        all.into_iter()
            .find(|q| q.name == queue)
            .ok_or_else(|| Error::not_found(format!("no queue {queue:?}")))
    }
    .await;
    audited(api, who, name, &format!("queue/{queue}"), result).await
}

#[Object]
impl JobsMutation {
    /// Makes jobs available now (a job that used all its attempts gets one more); not an
    /// executing one. How many changed.
    async fn retry_jobs(&self, ctx: &Context<'_>, ids: Vec<ID>) -> async_graphql::Result<u64> {
        act(ctx, "retryJobs", JobAction::Retry, ids).await
    }

    /// Cancels jobs that have not finished; a running attempt's result is then ignored.
    async fn cancel_jobs(&self, ctx: &Context<'_>, ids: Vec<ID>) -> async_graphql::Result<u64> {
        act(ctx, "cancelJobs", JobAction::Cancel, ids).await
    }

    /// Deletes jobs that are not executing.
    async fn delete_jobs(&self, ctx: &Context<'_>, ids: Vec<ID>) -> async_graphql::Result<u64> {
        act(ctx, "deleteJobs", JobAction::Delete, ids).await
    }

    /// Stops every replica claiming jobs of the queue (within one poll); running jobs finish.
    async fn pause_queue(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<Queue> {
        set_queue(ctx, "pauseQueue", name, |q| {
            q.paused = true;
            Ok(())
        })
        .await
    }

    async fn resume_queue(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<Queue> {
        set_queue(ctx, "resumeQueue", name, |q| {
            q.paused = false;
            Ok(())
        })
        .await
    }

    /// Sets how many jobs of the queue one replica (`localLimit`, 1-1000) and all replicas
    /// together (`globalLimit`, 1-10000; null: no limit across replicas) run at once.
    async fn resize_queue(
        &self,
        ctx: &Context<'_>,
        name: String,
        local_limit: u32,
        global_limit: Option<u32>,
    ) -> async_graphql::Result<Queue> {
        set_queue(ctx, "resizeQueue", name, |q| {
            if !(1..=1000).contains(&local_limit) {
                return Err(Error::invalid(format!(
                    "localLimit must be between 1 and 1000, got {local_limit}"
                )));
            }
            if let Some(g) = global_limit.filter(|g| !(1..=10_000).contains(g)) {
                return Err(Error::invalid(format!("globalLimit must be between 1 and 10000, got {g}")));
            }
            q.local_limit = local_limit;
            q.global_limit = global_limit;
            Ok(())
        })
        .await
    }
}

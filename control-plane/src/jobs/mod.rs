//! The durable job queue's runtime, with Oban's semantics (Oban is the specification; see
//! docs/DECISIONS.md for why it is our own code): named queues, each with a limit per replica
//! and optionally across replicas; scheduled jobs; retries with backoff up to `max_attempts`,
//! the error of every attempt kept; unique jobs; priorities; cancel, retry and delete; pause,
//! resume and resize at run time across replicas; history pruned after a period; rescue of jobs
//! orphaned by a replica that stopped; cron jobs run once per slot across replicas; metrics per
//! queue and state. The rows and their statements are in `db/jobs.rs`.
//!
//! One **producer** task per queue claims due jobs (`Db::claim_jobs`) up to the queue's free
//! slots and runs each on its own task under the worker's timeout; it wakes when a job is
//! inserted through [`Jobs`] on this replica, when one of its jobs finishes, and every
//! `jobs.poll_interval_ms` (for jobs inserted elsewhere and scheduled ones coming due). Queue
//! settings (paused, limits) live in `job_queues`, so a change made through any replica reaches
//! every producer within one poll. The **maintenance** task beats this replica's row in
//! `job_replicas`, stages due jobs, inserts each cron job's current slot (unique key
//! `cron:<name>:<slot>`: every replica may try, one row results), rescues the jobs of replicas
//! not seen for `jobs.rescue_after_secs`, and refreshes the `jobs{queue,state}` gauges. Only the
//! leader (`leader`, [`Crons`]) inserts cron slots.
//!
//! On shutdown producers stop claiming and wait for their running jobs (bounded by the caller's
//! grace period); a job still running when the process ends stays `executing` until rescued.

pub mod deliver;
pub mod retention;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::config::JobsConfig;
use crate::db::{Db, DbError};
use crate::domain::{Job, NewJob, QueueSettings};
use crate::metrics::Metrics;

/// Why an attempt failed, and whether to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Try again after the worker's backoff, while attempts are left.
    Retry(String),
    /// Do not try again: the job is discarded with this error.
    Discard(String),
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retry(e) | Self::Discard(e) => f.write_str(e),
        }
    }
}

/// What performs the jobs of one worker name.
pub trait Worker: Send + Sync + 'static {
    /// The name jobs are inserted with (`NewJob::worker`).
    fn name(&self) -> &'static str;
    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>>;
    /// How long to wait before attempt `attempt + 1` after attempt `attempt` failed. Oban's
    /// default: `attempt⁴ + 15 s`, plus up to 10 % jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = u64::from(attempt.min(20)).pow(4) + 15;
        jitter(Duration::from_secs(base), 0.1)
    }
    /// An attempt running longer than this fails (and is retried).
    fn timeout(&self) -> Duration {
        Duration::from_secs(300)
    }
}

/// `d` plus a random share of it up to `share`.
pub fn jitter(d: Duration, share: f64) -> Duration {
    d + d.mul_f64(rand::rng().random_range(0.0..=share))
}

/// A job inserted every `every` (at slot boundaries since the epoch), once per slot across
/// replicas.
#[derive(Debug, Clone)]
pub struct Cron {
    pub name: String,
    pub every: Duration,
    pub job: NewJob,
}

/// The cron jobs and whether this replica schedules them now: only the leader inserts cron
/// slots (`leader`); a plain list is scheduled always (one replica, and tests).
#[derive(Debug, Clone)]
pub struct Crons {
    pub list: Vec<Cron>,
    pub leader: crate::leader::Leadership,
}

impl From<Vec<Cron>> for Crons {
    fn from(list: Vec<Cron>) -> Self {
        let always =
            crate::leader::Term { fence: crate::db::leader::Fence { lock: "none".into(), epoch: 0 } };
        Self { list, leader: crate::leader::Leadership::fixed(Some(always)) }
    }
}

/// Inserts jobs and wakes this replica's producers; cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    db: Db,
}

impl Jobs {
    /// Inserts `jobs` now (waking this replica's producers); their ids (`None`: a unique key
    /// already taken).
    pub async fn insert(&self, jobs: &[NewJob]) -> Result<Vec<Option<i64>>, DbError> {
        self.db.insert_jobs(jobs, Utc::now()).await
    }
}

/// The running queue: its producers and maintenance task.
pub struct JobsRuntime {
    pub jobs: Jobs,
    tasks: JoinSet<()>,
}

impl JobsRuntime {
    /// Stores each configured queue's settings unless they are stored already (operators' run-
    /// time changes win), then starts a producer per queue and the maintenance task. Without
    /// `jobs.enabled` this replica runs nothing, but [`Jobs`] still inserts.
    pub async fn start(
        db: Db,
        replica: String,
        config: &JobsConfig,
        workers: Vec<Arc<dyn Worker>>,
        crons: impl Into<Crons>,
        metrics: Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, DbError> {
        let crons = crons.into();
        let notify = db.jobs_inserted();
        let jobs = Jobs { db: db.clone() };
        let mut tasks = JoinSet::new();
        if !config.enabled {
            return Ok(Self { jobs, tasks });
        }
        let now = Utc::now();
        for (name, limits) in &config.queues {
            let settings = QueueSettings {
                name: name.clone(),
                paused: false,
                local_limit: limits.limit,
                global_limit: limits.global_limit,
            };
            db.put_queue_settings(&settings, true, now).await?;
        }
        db.beat_job_replica(&replica, now).await?;
        let settings = Arc::new(RwLock::new(BTreeMap::new()));
        let workers: Arc<HashMap<&'static str, Arc<dyn Worker>>> =
            Arc::new(workers.into_iter().map(|w| (w.name(), w)).collect());
        let poll = Duration::from_millis(config.poll_interval_ms);
        let ctx = Arc::new(Shared { db, replica, workers, metrics, notify, settings, poll });
        refresh_settings(&ctx).await;
        for queue in config.queues.keys() {
            tasks.spawn(produce(ctx.clone(), queue.clone(), shutdown.clone()));
        }
        let rescue_after = Duration::from_secs(config.rescue_after_secs);
        tasks.spawn(maintain(ctx, crons, rescue_after, shutdown));
        Ok(Self { jobs, tasks })
    }

    /// Waits for the producers (which finish their running jobs) and the maintenance task to end
    /// after shutdown was signalled.
    pub async fn finish(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

struct Shared {
    db: Db,
    replica: String,
    workers: Arc<HashMap<&'static str, Arc<dyn Worker>>>,
    metrics: Metrics,
    notify: Arc<Notify>,
    /// The queues' settings as last read from `job_queues`.
    settings: Arc<RwLock<BTreeMap<String, QueueSettings>>>,
    poll: Duration,
}

async fn refresh_settings(ctx: &Shared) {
    match ctx.db.queue_settings().await {
        Ok(all) => {
            *ctx.settings.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
                all.into_iter().map(|q| (q.name.clone(), q)).collect();
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the queues' settings"),
    }
}

/// One queue's producer: claims what its free slots allow and runs each job on a task.
async fn produce(ctx: Arc<Shared>, queue: String, mut shutdown: watch::Receiver<bool>) {
    let mut running: JoinSet<()> = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let settings =
            ctx.settings.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&queue).cloned();
        if let Some(q) = settings.filter(|q| !q.paused) {
            let free = q.local_limit.saturating_sub(u32::try_from(running.len()).unwrap_or(u32::MAX));
            if free > 0 {
                match ctx.db.claim_jobs(&queue, &ctx.replica, free, q.global_limit, Utc::now()).await {
                    Ok(jobs) => {
                        for job in jobs {
                            running.spawn(execute(ctx.clone(), job));
                        }
                    }
                    Err(e) => tracing::warn!(%queue, error = %e, "cannot claim jobs"),
                }
            }
        }
        let notified = ctx.notify.notified();
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(ctx.poll) => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = shutdown.changed() => {}
        }
        // every attempt that has finished meanwhile frees its slot: the next claim takes them
        // all in one statement
        while running.try_join_next().is_some() {}
    }
    // stop claiming; the running attempts finish (the caller bounds this by its grace period)
    while running.join_next().await.is_some() {}
}

/// Runs one attempt and records its outcome.
async fn execute(ctx: Arc<Shared>, job: Job) {
    let started = std::time::Instant::now();
    let now = || Utc::now();
    let span = crate::traces::job_span(&job);
    let outcome = match ctx.workers.get(job.worker.as_str()) {
        None => Err((JobError::Discard(format!("no worker named {:?} on this replica", job.worker)), None)),
        Some(worker) => match tracing::Instrument::instrument(
            tokio::time::timeout(worker.timeout(), worker.perform(&job)),
            span.clone(),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err((e, Some(worker.clone()))),
            Err(_) => Err((
                JobError::Retry(format!("timed out after {} s", worker.timeout().as_secs())),
                Some(worker.clone()),
            )),
        },
    };
    ctx.metrics.job_duration_seconds.observe(started.elapsed().as_secs_f64());
    if let Err((error, _)) = &outcome {
        crate::traces::failed(&span, &error.to_string());
    }
    drop(span);
    let recorded = match &outcome {
        Ok(()) => {
            ctx.metrics.job_attempt(&job.queue, &job.worker, "completed");
            ctx.db.complete_job(job.id, job.attempt, now()).await
        }
        Err((error, worker)) => {
            let retry_at: Option<DateTime<Utc>> = match (error, worker) {
                (JobError::Retry(_), Some(w)) if job.attempt < job.max_attempts => {
                    chrono::Duration::from_std(w.backoff(job.attempt)).ok().map(|d| now() + d)
                }
                _ => None,
            };
            let outcome = if retry_at.is_some() { "retried" } else { "discarded" };
            ctx.metrics.job_attempt(&job.queue, &job.worker, outcome);
            tracing::warn!(job_id = job.id, worker = %job.worker, attempt = job.attempt, %error, outcome, "job attempt failed");
            ctx.db.fail_job(job.id, job.attempt, &error.to_string(), retry_at, now()).await
        }
    };
    match recorded {
        Ok(true) => {}
        Ok(false) => tracing::info!(
            job_id = job.id,
            "job was cancelled or rescued while it ran; its result is dropped"
        ),
        Err(e) => {
            tracing::warn!(job_id = job.id, error = %e, "cannot record a job's outcome; it will be rescued")
        }
    }
}

/// The maintenance task: replica beat, settings, due jobs, cron slots, rescue, gauges.
async fn maintain(
    ctx: Arc<Shared>,
    crons: Crons,
    rescue_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(ctx.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_slow = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let now = Utc::now();
        if let Err(e) = ctx.db.beat_job_replica(&ctx.replica, now).await {
            tracing::warn!(error = %e, "cannot beat this replica's job row");
        }
        refresh_settings(&ctx).await;
        // cron slots are unique per slot, so a deposed leader's late insert adds nothing
        let leading = crons.leader.current().is_some() && !crons.list.is_empty();
        let inserted = if leading { insert_cron_slots(&ctx.db, &crons.list, now).await } else { Ok(0) };
        match inserted {
            Ok(0) => {}
            Ok(_) => ctx.notify.notify_waiters(),
            Err(e) => tracing::warn!(error = %e, "cannot insert cron jobs"),
        }
        if last_slow.elapsed() >= Duration::from_secs(10) {
            last_slow = std::time::Instant::now();
            let stale = now - chrono::Duration::from_std(rescue_after).unwrap_or_default();
            match ctx.db.rescue_orphaned_jobs(stale, now).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(rescued = n, "jobs of stopped replicas made available again");
                    ctx.notify.notify_waiters();
                }
                Err(e) => tracing::warn!(error = %e, "cannot rescue orphaned jobs"),
            }
            if let Err(e) = ctx.db.stage_due_jobs(now).await {
                tracing::warn!(error = %e, "cannot stage due jobs");
            }
            refresh_gauges(&ctx).await;
        }
    }
}

/// Each cron job's current slot, inserted unless some replica did; how many were new.
pub async fn insert_cron_slots(db: &Db, crons: &[Cron], now: DateTime<Utc>) -> Result<usize, DbError> {
    let jobs: Vec<NewJob> = crons
        .iter()
        .map(|c| {
            let every = c.every.as_millis().max(1) as i64;
            let slot = now.timestamp_millis().div_euclid(every);
            NewJob { unique_key: Some(format!("cron:{}:{slot}", c.name)), ..c.job.clone() }
        })
        .collect();
    Ok(db.insert_jobs(&jobs, now).await?.into_iter().flatten().count())
}

async fn refresh_gauges(ctx: &Shared) {
    if let Ok(endpoints) = ctx.db.webhook_endpoints(&crate::domain::Visibility::All, None).await {
        let count = |state: &str| {
            endpoints
                .iter()
                .filter(|e| match state {
                    "disabled" => !e.enabled,
                    "failing" => e.enabled && e.failing_since.is_some(),
                    _ => e.enabled && e.failing_since.is_none(),
                })
                .count()
        };
        for state in ["ok", "failing", "disabled"] {
            let labels = crate::metrics::StateLabels { state: state.to_owned() };
            ctx.metrics
                .webhook_endpoints
                .get_or_create(&labels)
                .set(i64::try_from(count(state)).unwrap_or(i64::MAX));
        }
    }
    let Ok(counts) = ctx.db.job_counts().await else { return };
    let queues: Vec<String> =
        ctx.settings.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect();
    for queue in queues {
        for state in crate::domain::JobState::ALL {
            let n = counts.iter().find(|(q, s, _)| *q == queue && *s == state).map_or(0, |c| c.2);
            let labels =
                crate::metrics::QueueStateLabels { queue: queue.clone(), state: state.as_str().to_owned() };
            ctx.metrics.jobs.get_or_create(&labels).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

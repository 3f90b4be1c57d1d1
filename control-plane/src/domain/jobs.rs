//! The durable job queue's types (Oban's model): a job's states, what is inserted, a stored job
//! with the error of every failed attempt, the filters of the job list, a queue's settings, and
//! what retention deleted.

use chrono::{DateTime, Utc};

/// Where a job stands. `Available` (due now), `Scheduled` (due later) and `Retryable` (failed,
/// due again later) wait for a worker; `Executing` is claimed by one replica; the last three are
/// final and kept as history until pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    Available,
    Scheduled,
    Executing,
    Retryable,
    Completed,
    Discarded,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        Self::Available,
        Self::Scheduled,
        Self::Executing,
        Self::Retryable,
        Self::Completed,
        Self::Discarded,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Scheduled => "scheduled",
            Self::Executing => "executing",
            Self::Retryable => "retryable",
            Self::Completed => "completed",
            Self::Discarded => "discarded",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Discarded | Self::Cancelled)
    }
}

/// A job to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub queue: String,
    /// The worker that performs it (`retention.sweep`, `webhook.deliver`, ...).
    pub worker: String,
    pub args: serde_json::Value,
    /// 0 runs first, 9 last.
    pub priority: i16,
    pub max_attempts: u32,
    /// Not before this time; now when `None`.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// At most one job with this key exists until it is pruned (cron slots; unique-by-arguments
    /// periods, see [`NewJob::unique_for`]); inserting another is a no-op.
    pub unique_key: Option<String>,
}

impl NewJob {
    pub fn new(queue: &str, worker: &str, args: serde_json::Value) -> Self {
        Self {
            queue: queue.to_owned(),
            worker: worker.to_owned(),
            args,
            priority: 0,
            max_attempts: 20,
            scheduled_at: None,
            unique_key: None,
        }
    }

    /// Unique by worker and arguments within the period of `secs` that `now` falls in: a second
    /// insert of the same worker and arguments in that period inserts nothing.
    pub fn unique_for(mut self, secs: u64, now: DateTime<Utc>) -> Self {
        let period = now.timestamp().div_euclid(secs.max(1) as i64);
        self.unique_key = Some(format!("{}:{}:{secs}:{period}", self.worker, self.args));
        self
    }
}

/// The error of one failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub error: String,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub queue: String,
    pub worker: String,
    pub args: serde_json::Value,
    pub state: JobState,
    pub priority: i16,
    /// Attempts made so far (the running one included).
    pub attempt: u32,
    pub max_attempts: u32,
    pub inserted_at: DateTime<Utc>,
    pub scheduled_at: DateTime<Utc>,
    pub attempted_at: Option<DateTime<Utc>>,
    /// When it became completed, discarded or cancelled.
    pub finished_at: Option<DateTime<Utc>>,
    /// The replica that ran its last attempt.
    pub attempted_by: Option<String>,
    /// Every failed attempt's error, oldest first.
    pub errors: Vec<AttemptError>,
}

/// The job list's filters; every one optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub worker: Option<String>,
    /// Jobs whose arguments' JSON text contains this.
    pub args_contains: Option<String>,
    /// Inserted in `[from, to)`.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// A queue's settings, shared by every replica through the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub name: String,
    /// Replicas claim nothing from a paused queue; running jobs finish.
    pub paused: bool,
    /// Jobs one replica runs at once.
    pub local_limit: u32,
    /// Jobs all replicas together run at once; `None`: only the local limit.
    pub global_limit: Option<u32>,
}

/// What happened to a job batch action (`retryJobs`, `cancelJobs`, `deleteJobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    Retry,
    Cancel,
    Delete,
}

/// A capture that retention deleted: what, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureDeletion {
    pub id: uuid::Uuid,
    pub capture_id: uuid::Uuid,
    pub site_id: String,
    pub jurisdiction: Option<String>,
    /// The capture's decision when it was deleted (`compliant`, `violation_candidate`, ...).
    pub decision: String,
    /// The retention class it was kept under: `statistics`, `compliant`,
    /// `violation_candidate`, `confirmed_violation`.
    pub value_class: String,
    pub captured_at: DateTime<Utc>,
    pub deleted_at: DateTime<Utc>,
    /// The retention it was past.
    pub retention_days: u32,
    /// e.g. `retention: compliant captures are kept 30 days in jurisdiction north`.
    pub reason: String,
    pub image_key: String,
}

//! The `retention.sweep` worker: deletes the captures past their legal retention (the image
//! first, then the row with its deletion record, so that a step interrupted in between is
//! finished by the next sweep and no record names an image still stored), in batches of
//! `retention.batch`, until none is due. A violation under review is never selected
//! (`db/retention.rs`). The `jobs.prune` worker deletes finished jobs past
//! `jobs.history_retention_secs`.

use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;

use super::{JobError, Worker};
use crate::blob::BlobStore;
use crate::config::RetentionConfig;
use crate::db::Db;
use crate::domain::{CaptureDeletion, Job};
use crate::metrics::Metrics;

pub const SWEEP: &str = "retention.sweep";
pub const PRUNE: &str = "jobs.prune";

pub struct RetentionSweep {
    pub db: Db,
    pub blobs: BlobStore,
    pub config: RetentionConfig,
    pub metrics: Metrics,
}

impl RetentionSweep {
    /// One pass: deletes every capture due now; how many.
    pub async fn sweep(&self) -> Result<u64, JobError> {
        let mut deleted = 0;
        loop {
            let now = Utc::now();
            let due = self
                .db
                .captures_due_for_retention(&self.config, now, self.config.batch)
                .await
                .map_err(|e| JobError::Retry(format!("cannot select captures past retention: {e}")))?;
            if due.is_empty() {
                return Ok(deleted);
            }
            for d in due {
                self.blobs.delete(&d.image_key).await.map_err(|e| {
                    JobError::Retry(format!("cannot delete the image of capture {}: {e}", d.capture_id))
                })?;
                let place =
                    d.jurisdiction.as_deref().map(|j| format!(" in jurisdiction {j}")).unwrap_or_default();
                let record = CaptureDeletion {
                    id: uuid::Uuid::now_v7(),
                    capture_id: d.capture_id,
                    site_id: d.site_id,
                    jurisdiction: d.jurisdiction.clone(),
                    decision: d.decision,
                    value_class: d.value_class.to_owned(),
                    captured_at: d.captured_at,
                    deleted_at: Utc::now(),
                    retention_days: d.retention_days,
                    reason: format!(
                        "retention: {} captures are kept {} days{place}",
                        d.value_class.replace('_', " "),
                        d.retention_days
                    ),
                    image_key: d.image_key,
                };
                let removed = self.db.delete_capture_for_retention(&record).await.map_err(|e| {
                    JobError::Retry(format!("cannot delete capture {}: {e}", record.capture_id))
                })?;
                if removed {
                    deleted += 1;
                    self.metrics.retention_deleted.inc();
                    tracing::info!(capture_id = %record.capture_id, class = %record.value_class, days = record.retention_days, "capture deleted by retention");
                }
            }
        }
    }
}

impl Worker for RetentionSweep {
    fn name(&self) -> &'static str {
        SWEEP
    }

    fn perform<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let n = self.sweep().await?;
            tracing::info!(deleted = n, "retention sweep done");
            Ok(())
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(3600)
    }
}

pub struct PruneJobs {
    pub db: Db,
    pub keep: Duration,
}

impl Worker for PruneJobs {
    fn name(&self) -> &'static str {
        PRUNE
    }

    fn perform<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let cutoff = Utc::now() - chrono::Duration::from_std(self.keep).unwrap_or_default();
            let mut pruned = 0;
            loop {
                let n = self
                    .db
                    .prune_jobs(cutoff, 10_000)
                    .await
                    .map_err(|e| JobError::Retry(format!("cannot prune jobs: {e}")))?;
                pruned += n;
                if n < 10_000 {
                    break;
                }
            }
            if pruned > 0 {
                tracing::info!(pruned, "finished jobs pruned");
            }
            // expired console logins go with the job history
            let sessions = self
                .db
                .prune_console_sessions(Utc::now())
                .await
                .map_err(|e| JobError::Retry(format!("cannot prune console sessions: {e}")))?;
            if sessions > 0 {
                tracing::info!(sessions, "expired console sessions pruned");
            }
            Ok(())
        })
    }
}

//! Batched writers of the database. [`CaptureWriter`] is group commit for ingest: the captures
//! that every session finishes while a write is in progress are written together, in one
//! transaction ([`Db::insert_captures`]), by one task. Under light load a batch is one capture
//! and nothing waits; under heavy load the database does one statement and one commit for many
//! captures instead of one each. When the last batch held more than one capture (there is
//! load), the next waits up to [`LINGER`] for more before it is written, which at a few hundred
//! captures a second cut PostgreSQL's CPU per capture by about a fifth (`bench api`). A
//! capture's store still acks only after its own row committed.
//!
//! [`HistoryWriter`] is the same batching for component history, which is best effort: the
//! gateway hands it a heartbeat's samples and never waits. They queue in memory, at most
//! `history.queue_samples` (counting those being written); one task writes up to
//! [`HISTORY_BATCH`] at a time ([`Db::insert_component_samples`]: one multi-row statement, one
//! transaction). When the queue is full a heartbeat's samples are dropped, counted in
//! `lanewatch_history_samples_dropped_total{reason="queue_full"}` and logged at most once a minute, so a
//! slow database slows no session; a batch that fails to write is dropped the same way
//! (`write_failed`). Captures are never dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};

use super::{Db, DbError, Inserted};
use crate::domain::{Capture, ComponentSample};
use crate::metrics::Metrics;

/// Captures written in one transaction at most.
pub const MAX_BATCH: usize = 64;
/// How long a batch waits for more captures when the last one was not alone.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

type Reply = oneshot::Sender<Result<Inserted, Arc<DbError>>>;

/// The handle stores write through; cheap to clone. The task ends when every handle is gone.
#[derive(Clone)]
pub struct CaptureWriter {
    tx: mpsc::Sender<(Capture, Reply)>,
}

impl CaptureWriter {
    /// Starts the writer task on the current runtime.
    pub fn spawn(db: Db) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(run(db, rx));
        Self { tx }
    }

    /// Inserts `capture` (see [`Db::insert_capture`]) once its batch has committed.
    pub async fn insert(&self, capture: Capture) -> Result<Inserted, Arc<DbError>> {
        let (reply, answer) = oneshot::channel();
        let gone = || Arc::new(DbError::Db(sea_orm::DbErr::Custom("the capture writer has stopped".into())));
        self.tx.send((capture, reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<(Capture, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut last = 0usize;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if last > 1 && batch.len() < MAX_BATCH {
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < MAX_BATCH {
                let room = MAX_BATCH - batch.len();
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        last = batch.len();
        let (captures, replies): (Vec<Capture>, Vec<Reply>) = batch.drain(..).unzip();
        match db.insert_captures(&captures).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(captures = captures.len(), error = %e, "writing a batch of captures failed");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// History samples written in one statement at most.
pub const HISTORY_BATCH: usize = super::history::INSERT_ROWS;
/// Dropped samples are logged at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// The handle the gateway offers samples through; cheap to clone.
#[derive(Clone)]
pub struct HistoryWriter {
    shared: Arc<HistoryQueue>,
}

struct HistoryQueue {
    queue: Mutex<Pending>,
    capacity: usize,
    wake: Notify,
    closed: AtomicBool,
    metrics: Metrics,
}

#[derive(Default)]
struct Pending {
    samples: VecDeque<ComponentSample>,
    /// Samples taken by the task and not written yet: they count against the capacity too.
    writing: usize,
    /// Dropped since the last log line, and when that was.
    dropped: u64,
    logged_at: Option<Instant>,
}

/// The writer task; [`HistoryWriterTask::finish`] writes what is queued and ends it.
pub struct HistoryWriterTask {
    shared: Arc<HistoryQueue>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(m: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HistoryWriter {
    /// Starts the writer task on the current runtime, holding at most `capacity` samples.
    pub fn spawn(db: Db, capacity: usize, metrics: Metrics) -> (Self, HistoryWriterTask) {
        let writer = Self::unstarted(capacity, metrics);
        let task = tokio::spawn(run_history(db, writer.shared.clone()));
        let shared = writer.shared.clone();
        (writer, HistoryWriterTask { shared, task })
    }

    fn unstarted(capacity: usize, metrics: Metrics) -> Self {
        let shared = HistoryQueue {
            queue: Mutex::new(Pending::default()),
            capacity,
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            metrics,
        };
        Self { shared: Arc::new(shared) }
    }

    /// Queues one heartbeat's samples; when they do not fit, drops them all (counted) and
    /// returns false. Never waits.
    pub fn offer(&self, samples: Vec<ComponentSample>) -> bool {
        if samples.is_empty() || self.shared.closed.load(Ordering::Acquire) {
            return samples.is_empty();
        }
        let n = samples.len();
        let mut q = lock(&self.shared.queue);
        if q.samples.len() + q.writing + n > self.shared.capacity {
            self.shared.metrics.history_dropped("queue_full", n as u64);
            q.dropped += n as u64;
            let due = q.logged_at.is_none_or(|at| at.elapsed() >= DROP_LOG_EVERY);
            if due {
                tracing::warn!(
                    dropped = q.dropped,
                    capacity = self.shared.capacity,
                    "component history writer is behind the heartbeats: dropping samples (history is best effort)"
                );
                q.dropped = 0;
                q.logged_at = Some(Instant::now());
            }
            return false;
        }
        q.samples.extend(samples);
        self.shared.metrics.history_backlog.set((q.samples.len() + q.writing) as i64);
        drop(q);
        self.shared.wake.notify_one();
        true
    }

    /// Samples queued or being written.
    pub fn backlog(&self) -> usize {
        let q = lock(&self.shared.queue);
        q.samples.len() + q.writing
    }
}

impl HistoryWriterTask {
    /// Takes no more samples, writes those queued, and returns when the task has ended.
    pub async fn finish(self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the component history writer ended abnormally");
        }
    }
}

async fn run_history(db: Db, shared: Arc<HistoryQueue>) {
    let metrics = &shared.metrics;
    loop {
        let batch: Vec<ComponentSample> = {
            let mut q = lock(&shared.queue);
            let n = q.samples.len().min(HISTORY_BATCH);
            q.writing = n;
            q.samples.drain(..n).collect()
        };
        if batch.is_empty() {
            if shared.closed.load(Ordering::Acquire) {
                return;
            }
            shared.wake.notified().await;
            continue;
        }
        let n = batch.len() as u64;
        match db.insert_component_samples(&batch).await {
            Ok(()) => {
                metrics.history_samples_written.inc_by(n);
            }
            Err(e) => {
                metrics.history_dropped("write_failed", n);
                tracing::warn!(samples = n, error = %e, "writing component history failed; these samples are lost");
            }
        }
        let mut q = lock(&shared.queue);
        q.writing = 0;
        metrics.history_backlog.set(q.samples.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::db::tests::{capture, temp_db};
    use crate::domain::Visibility;

    /// Many stores at once (batches, lingering) each get their own answer: the first of an id
    /// is stored, a repeat is a duplicate, and every row is there.
    #[tokio::test]
    async fn concurrent_stores_each_get_their_own_answer() {
        let (_dir, db) = temp_db().await;
        let writer = CaptureWriter::spawn(db.clone());
        let at = |us: i64| Utc.timestamp_micros(1_700_000_000_000_000 + us).unwrap();
        let captures: Vec<Capture> = (0..300).map(|i| capture(Uuid::now_v7(), at(i))).collect();
        let first = futures::future::join_all(captures.iter().cloned().map(|c| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.insert(c).await.unwrap() })
        }))
        .await;
        assert!(first.into_iter().all(|r| r.unwrap() == Inserted::New));
        let again = futures::future::join_all(captures.iter().step_by(3).cloned().map(|c| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.insert(c).await.unwrap() })
        }))
        .await;
        assert!(again.into_iter().all(|r| r.unwrap() == Inserted::Duplicate));
        for c in &captures {
            assert!(db.capture(c.meta.id, &Visibility::All).await.unwrap().is_some(), "{}", c.meta.id);
        }
    }

    fn samples(agent: &str, n: usize, secs: i64) -> Vec<ComponentSample> {
        let agent: Arc<str> = Arc::from(agent);
        (0..n)
            .map(|i| ComponentSample {
                agent_id: agent.clone(),
                component: format!("c{i}"),
                at: Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
                status: crate::domain::ComponentStatus::Running,
                restarts: 0,
                processed: 7,
                inbox_depth: Some(1),
            })
            .collect()
    }

    /// A full queue drops a whole heartbeat and counts it, without waiting.
    #[test]
    fn a_full_history_queue_drops_and_counts() {
        let metrics = Metrics::new();
        let writer = HistoryWriter::unstarted(12, metrics.clone());
        assert!(writer.offer(samples("a", 8, 0)));
        assert!(!writer.offer(samples("a", 8, 5)), "8 more do not fit in 12");
        assert!(writer.offer(samples("a", 4, 5)));
        assert_eq!(writer.backlog(), 12);
        let text = metrics.render();
        assert!(text.contains("history_samples_dropped_total{reason=\"queue_full\"} 8"), "{text}");
        assert!(text.contains("history_backlog 12"), "{text}");
    }

    /// What was offered before `finish` is written, and the writer takes nothing after it.
    #[tokio::test]
    async fn the_history_writer_writes_everything_before_it_finishes() {
        let (_dir, db) = temp_db().await;
        let metrics = Metrics::new();
        let (writer, task) = HistoryWriter::spawn(db.clone(), 100_000, metrics.clone());
        for beat in 0..300 {
            assert!(writer.offer(samples(&format!("agent-{}", beat % 30), 8, beat)));
        }
        task.finish().await;
        assert!(!writer.offer(samples("late", 8, 0)));
        assert!(metrics.render().contains("history_samples_written_total 2400"), "{}", metrics.render());
        let now = Utc.timestamp_opt(1_700_000_400, 0).unwrap();
        let h =
            db.component_history("agent-3", "c5", now - chrono::Duration::hours(1), now, now).await.unwrap();
        assert_eq!(h.points.len(), 10, "agent-3 beat 10 times");
    }
}

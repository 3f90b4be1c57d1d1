//! Leader election for the singleton loops (cron scheduling, history maintenance and
//! retention, the LanewatchSite reconciler): one replica at a time runs them.
//!
//! A [`LeaderLock`] is the small trait behind which the lock sits: a coordination.k8s.io Lease
//! on Kubernetes (`lease.rs`, kube-lease-manager), a PostgreSQL advisory lock elsewhere
//! (`postgres.rs`), or [`Always`] for a single replica (SQLite). [`elect`] drives a lock and
//! publishes this replica's [`Leadership`]: `Some(term)` while it leads, `None` otherwise. On
//! gaining the lock it starts a new term in SQL (`Db::begin_leader_term`), whose epoch is the
//! fencing token: singleton writes check it in their transaction, so once another replica has
//! started a newer term a deposed leader's late write fails rather than lands.
//!
//! [`while_leader`] runs a singleton for each term: it starts the work when leadership is
//! gained and tells it to stop (its own stop signal, as at shutdown) as soon as leadership is
//! lost, then waits for it to finish its unit of work.

pub mod lease;
pub mod postgres;

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::db::Db;
pub use crate::db::leader::Fence;

/// Why a lock could not be taken, kept or checked.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("kubernetes lease {lease:?}: {message}")]
    Lease { lease: String, message: String },
    #[error("postgresql advisory lock {key}: {message}")]
    Postgres { key: i64, message: String },
}

/// The small trait every lock implements.
pub trait LeaderLock: Send + 'static {
    /// The lock's name; its terms' epochs are kept under it in `leader_terms`.
    fn name(&self) -> &str;
    /// Resolves when this replica's holding changes: `Ok(true)` once it holds the lock,
    /// `Ok(false)` once it no longer does. An error means the holding is unknown (treated as
    /// lost).
    fn changed(&mut self) -> BoxFuture<'_, Result<bool, LeaderError>>;
    /// Gives the lock up (at shutdown, or when a term could not start).
    fn release(&mut self) -> BoxFuture<'_, ()>;
}

/// The lock of a control plane that runs as one replica: held from the start, never lost.
pub struct Always {
    held: bool,
}

impl Always {
    pub fn new() -> Self {
        Self { held: false }
    }
}

impl Default for Always {
    fn default() -> Self {
        Self::new()
    }
}

impl LeaderLock for Always {
    fn name(&self) -> &str {
        "singletons"
    }
    fn changed(&mut self) -> BoxFuture<'_, Result<bool, LeaderError>> {
        Box::pin(async move {
            if self.held {
                std::future::pending::<()>().await;
            }
            self.held = true;
            Ok(true)
        })
    }
    fn release(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// One term of this replica's leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The fencing token singleton writes check.
    pub fence: Fence,
}

/// This replica's leadership as it changes; cheap to clone.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<Option<Term>>);

impl Leadership {
    /// A leadership fixed at `term` (tests, and callers that are always the leader).
    pub fn fixed(term: Option<Term>) -> Self {
        Self(watch::channel(term).1)
    }

    /// The term this replica leads in now, if it leads.
    pub fn current(&self) -> Option<Term> {
        self.0.borrow().clone()
    }

    /// Waits until this replica leads; `None` when the election has ended (shutdown).
    pub async fn gained(&mut self) -> Option<Term> {
        match self.0.wait_for(Option::is_some).await {
            Ok(term) => term.clone(),
            Err(_) => None,
        }
    }

    /// Waits until `term` is over (lost, replaced, or the election ended).
    pub async fn lost(&mut self, term: &Term) {
        let _ = self.0.wait_for(|now| now.as_ref() != Some(term)).await;
    }
}

/// How long [`elect`] waits after a lock error before asking again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(2);

/// Drives `lock` until shutdown, publishing this replica's leadership (and its epoch on
/// `epoch_gauge`, 0 while it does not lead); on shutdown the term ends (`None`) and the lock is
/// released. `holder` names this replica in `leader_terms`.
pub fn elect(
    mut lock: Box<dyn LeaderLock>,
    db: Db,
    holder: String,
    epoch_gauge: Gauge,
    mut shutdown: watch::Receiver<bool>,
) -> (Leadership, JoinHandle<()>) {
    let (tx, rx) = watch::channel(None::<Term>);
    let gauge = epoch_gauge.clone();
    let mut shown = rx.clone();
    tokio::spawn(async move {
        loop {
            let epoch = shown.borrow_and_update().as_ref().map_or(0, |t| t.fence.epoch);
            gauge.set(epoch);
            if shown.changed().await.is_err() {
                gauge.set(0);
                return;
            }
        }
    });
    let task = tokio::spawn(async move {
        loop {
            let changed = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                changed = lock.changed() => changed,
            };
            match changed {
                Ok(true) => match db.begin_leader_term(lock.name(), &holder, Utc::now()).await {
                    Ok(fence) => {
                        tracing::info!(lock = lock.name(), epoch = fence.epoch, %holder, "leadership gained");
                        tx.send_replace(Some(Term { fence }));
                    }
                    Err(e) => {
                        // leading without a fence would let this replica's writes race the next
                        tracing::warn!(lock = lock.name(), error = %e, "cannot start a leader term; giving the lock up");
                        lock.release().await;
                        tokio::time::sleep(RETRY_AFTER_ERROR).await;
                    }
                },
                Ok(false) => {
                    if tx.send_replace(None).is_some() {
                        tracing::warn!(lock = lock.name(), "leadership lost; stopping the singleton loops");
                    }
                }
                Err(e) => {
                    if tx.send_replace(None).is_some() {
                        tracing::warn!(lock = lock.name(), error = %e, "leadership unknown; stopping the singleton loops");
                    } else {
                        tracing::debug!(lock = lock.name(), error = %e, "leader lock unavailable");
                    }
                    tokio::time::sleep(RETRY_AFTER_ERROR).await;
                }
            }
        }
        tx.send_replace(None);
        lock.release().await;
    });
    (Leadership(rx), task)
}

/// Runs `work` for each term this replica leads in, until shutdown: `work(term, stop)` must
/// return soon after `stop` turns true, which happens when the term is over or at shutdown.
pub async fn while_leader<F, Fut>(
    what: &'static str,
    mut leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
    mut work: F,
) where
    F: FnMut(Term, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let term = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            term = leadership.gained() => term,
        };
        let Some(term) = term else { return };
        tracing::info!(singleton = what, epoch = term.fence.epoch, "starting");
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut task = tokio::spawn(work(term.clone(), stop_rx));
        let ended_by_itself = tokio::select! {
            _ = leadership.lost(&term) => false,
            _ = shutdown.wait_for(|stop| *stop) => false,
            _ = &mut task => true,
        };
        if ended_by_itself {
            tokio::select! {
                _ = leadership.lost(&term) => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        } else {
            let _ = stop_tx.send(true);
            let _ = task.await;
        }
        tracing::info!(singleton = what, epoch = term.fence.epoch, "stopped");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::db::tests::temp_db;

    /// A lock whose holding a test script flips.
    struct Scripted {
        rx: tokio::sync::mpsc::UnboundedReceiver<Result<bool, LeaderError>>,
        released: Arc<AtomicUsize>,
    }

    impl LeaderLock for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn changed(&mut self) -> BoxFuture<'_, Result<bool, LeaderError>> {
            Box::pin(async move {
                match self.rx.recv().await {
                    Some(r) => r,
                    None => std::future::pending().await,
                }
            })
        }
        fn release(&mut self) -> BoxFuture<'_, ()> {
            self.released.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn each_term_gets_a_newer_fence_and_losing_stops_the_singleton() {
        let (_dir, db) = temp_db().await;
        let (script, rx) = tokio::sync::mpsc::unbounded_channel();
        let released = Arc::new(AtomicUsize::new(0));
        let (shutdown_tx, shutdown) = watch::channel(false);
        let lock = Scripted { rx, released: released.clone() };
        let gauge = Gauge::default();
        let (leadership, election) =
            elect(Box::new(lock), db.clone(), "r1".into(), gauge.clone(), shutdown.clone());
        let (runs_tx, mut runs) = tokio::sync::mpsc::unbounded_channel();
        let singleton = tokio::spawn(while_leader(
            "test",
            leadership.clone(),
            shutdown.clone(),
            move |term, mut stop| {
                let runs_tx = runs_tx.clone();
                async move {
                    runs_tx.send(("started", term.fence.epoch)).unwrap();
                    let _ = stop.wait_for(|s| *s).await;
                    runs_tx.send(("stopped", term.fence.epoch)).unwrap();
                }
            },
        ));
        script.send(Ok(true)).unwrap();
        assert_eq!(runs.recv().await, Some(("started", 1)));
        script.send(Ok(false)).unwrap();
        assert_eq!(runs.recv().await, Some(("stopped", 1)));
        assert_eq!(leadership.current(), None);
        script.send(Ok(true)).unwrap();
        assert_eq!(runs.recv().await, Some(("started", 2)));
        tokio::task::yield_now().await;
        assert_eq!(gauge.get(), 2, "the epoch is exported while leading");
        // the first term's late write is fenced off
        let manager =
            crate::db::leader::SiteManager { site_id: "s".into(), namespace: "n".into(), name: "c".into() };
        let site = crate::db::leader::ManagedSite { manager: &manager, jurisdiction: None, lanes: &[] };
        let old = Fence { lock: "scripted".into(), epoch: 1 };
        assert!(db.claim_managed_site(&old, &site, Utc::now()).await.is_err());
        let now = leadership.current().unwrap().fence;
        assert_eq!(db.claim_managed_site(&now, &site, Utc::now()).await.unwrap(), Ok(()));
        // an unknown holding counts as lost
        script.send(Err(LeaderError::Postgres { key: 1, message: "connection reset".into() })).unwrap();
        assert_eq!(runs.recv().await, Some(("stopped", 2)));
        shutdown_tx.send(true).unwrap();
        election.await.unwrap();
        singleton.await.unwrap();
        assert_eq!(released.load(Ordering::SeqCst), 1, "the lock is released at shutdown");
    }

    #[tokio::test]
    async fn always_leads_from_the_start() {
        let (_dir, db) = temp_db().await;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (mut leadership, task) =
            elect(Box::new(Always::new()), db, "r1".into(), Gauge::default(), shutdown);
        let term = leadership.gained().await.unwrap();
        assert_eq!(term.fence, Fence { lock: "singletons".into(), epoch: 1 });
        shutdown_tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(leadership.current(), None);
    }
}

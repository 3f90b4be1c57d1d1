//! Group commit for ingest: the captures that every session finishes while a write is in
//! progress are written together, in one transaction ([`Db::insert_captures`]), by one task.
//! Under light load a batch is one capture and nothing waits; under heavy load the database does
//! one statement and one commit for many captures instead of one each. When the last batch held
//! more than one capture (there is load), the next waits up to [`LINGER`] for more before it is
//! written, which at a few hundred captures a second cut PostgreSQL's CPU per capture by about a
//! fifth (`bench api`). A capture's store still acks only after its own row committed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Db, DbError, Inserted};
use crate::domain::Capture;

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
}

//! Group commit for ingest: the captures that every session finishes while a write is in
//! progress are written together, in one transaction ([`Db::insert_captures`]), by one task.
//! Under light load a batch is one capture and nothing waits; under heavy load the database does
//! one statement and one commit for many captures instead of one each. A capture's store still
//! acks only after its own row committed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Db, DbError, Inserted};
use crate::domain::Capture;

/// Captures written in one transaction at most.
pub const MAX_BATCH: usize = 64;

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
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
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

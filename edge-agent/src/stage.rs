//! The plumbing every pipeline stage shares: the bounded [`channel`] between two stages, its
//! sending side ([`Outlet`]), its receiving side ([`Inlet`]) and the gauge introspection reads
//! its depth from ([`InboxGauge`]).
//!
//! This module sits below every stage (`acquire`, `detect`, `trigger`, `vision`, ...) and below
//! `pipeline`, which wires them together, as vector's `SourceSender` sits in `vector-core`
//! below every source and the topology: a stage imports its plumbing from here, never from
//! `pipeline`.
//!
//! The receiver of a channel lives in the component object, outside the actor, so a restart keeps
//! the queued items; the sender is shared by the stage's restarts and closed once, when the
//! stage's input ended, so shutdown drains downstream in order.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};

/// Items a channel between two stages holds before the sending stage waits.
pub const CHANNEL_CAPACITY: usize = 256;

/// The receiving side of a stage's input; shared by restarts, locked by the running one.
pub type Inlet<T> = Arc<Mutex<mpsc::Receiver<T>>>;

/// The sending side of a stage's output; shared by restarts and closed once when input ends.
pub struct Outlet<T>(Arc<std::sync::Mutex<Option<mpsc::Sender<T>>>>);

impl<T> Clone for Outlet<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Outlet<T> {
    pub fn new(tx: mpsc::Sender<T>) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(tx))))
    }

    /// An outlet that is already closed (tests).
    pub fn closed() -> Self {
        Self(Arc::new(std::sync::Mutex::new(None)))
    }

    pub async fn send(&self, item: T) -> anyhow::Result<()> {
        let tx = self.0.lock().unwrap().clone();
        match tx {
            Some(tx) => tx.send(item).await.map_err(|_| anyhow::anyhow!("downstream stage is gone")),
            None => anyhow::bail!("output already closed"),
        }
    }

    /// Drops the sender: downstream sees the end of input once queued items are consumed.
    pub fn close(&self) {
        self.0.lock().unwrap().take();
    }
}

/// How full a stage's input channel is, read when introspection asks. It holds only a weak
/// sender, so it never keeps a channel open; once every sender is gone it reads 0.
#[derive(Clone)]
pub struct InboxGauge {
    depth: Arc<dyn Fn() -> usize + Send + Sync>,
    pub capacity: usize,
}

impl InboxGauge {
    pub fn of<T: Send + 'static>(tx: &mpsc::Sender<T>) -> Self {
        let (weak, capacity) = (tx.downgrade(), tx.max_capacity());
        Self { depth: Arc::new(move || weak.upgrade().map_or(0, |tx| capacity - tx.capacity())), capacity }
    }

    /// Items queued now.
    pub fn depth(&self) -> usize {
        (self.depth)()
    }
}

impl<T: Send + 'static> Outlet<T> {
    /// The gauge of the channel this outlet feeds; `None` once closed.
    pub fn gauge(&self) -> Option<InboxGauge> {
        self.0.lock().unwrap().as_ref().map(InboxGauge::of)
    }
}

/// A bounded channel of [`CHANNEL_CAPACITY`] from one stage to the next.
pub fn channel<T>() -> (Outlet<T>, Inlet<T>) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    (Outlet::new(tx), Arc::new(Mutex::new(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gauge_reads_the_queue_and_never_keeps_the_channel_open() {
        let (out, inlet) = channel::<u32>();
        let gauge = out.gauge().expect("an open outlet has a gauge");
        assert_eq!((gauge.depth(), gauge.capacity), (0, CHANNEL_CAPACITY));
        for i in 0..3 {
            out.send(i).await.unwrap();
        }
        assert_eq!(gauge.depth(), 3);
        let mut rx = inlet.lock().await;
        assert_eq!(rx.recv().await, Some(0));
        assert_eq!(gauge.depth(), 2);
        out.close();
        assert!(out.gauge().is_none());
        // the gauge holds no sender: the receiver drains and then sees the end
        assert_eq!((rx.recv().await, rx.recv().await, rx.recv().await), (Some(1), Some(2), None));
        assert_eq!(gauge.depth(), 0);
    }
}

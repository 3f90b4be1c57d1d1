//! Durable capture buffer: captures wait here, on disk, until the control plane acknowledges them.
//!
//! # On-disk format
//! One redb 2 database file with two tables:
//! - `captures`: `u64` sequence number → record. A record is a 4-byte big-endian length `n`,
//!   `n` bytes of JSON [`CaptureMeta`], then the image bytes unchanged.
//! - `capture_ids`: capture id (`u128` of the UUID) → sequence number, for deletion on ack.
//!
//! # Invariants
//! - A capture counts as accepted only once its write transaction committed with
//!   `Durability::Immediate`; a crash after that never loses it.
//! - Sequence numbers grow monotonically (the next one is the largest stored plus one), so
//!   listing by key is oldest first, also across restarts.
//! - A capture is deleted only after the uplink received its `CaptureAck`.
//! - The stored record bytes never exceed `max_bytes`. When full, new captures are refused and
//!   counted (`refused`); nothing already stored is evicted. Richer eviction comes later.

use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use crate::domain::{Capture, CaptureMeta};

const CAPTURES: TableDefinition<u64, &[u8]> = TableDefinition::new("captures");
const CAPTURE_IDS: TableDefinition<u128, u64> = TableDefinition::new("capture_ids");

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer full: {bytes} of {max_bytes} bytes used, capture of {needed} bytes refused")]
    Full { bytes: u64, max_bytes: u64, needed: u64 },
    #[error("buffer storage error: {0}")]
    Storage(Box<redb::Error>),
    #[error("corrupt buffer record {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
    #[error("cannot create buffer directory: {0}")]
    Io(#[from] std::io::Error),
}

/// Counters of the buffer, published on every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BufferStats {
    pub captures: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Captures refused because the buffer was full, since start.
    pub refused: u64,
    /// Captures appended since start.
    pub appended: u64,
}

struct State {
    next_seq: u64,
    stats: BufferStats,
}

/// Handle to the buffer; cheap to clone. Methods block on disk I/O: call them from
/// `spawn_blocking` in async code.
#[derive(Clone)]
pub struct Buffer {
    db: Arc<Database>,
    state: Arc<Mutex<State>>,
    stats_tx: Arc<watch::Sender<BufferStats>>,
}

fn storage<E: Into<redb::Error>>(err: E) -> BufferError {
    BufferError::Storage(Box::new(err.into()))
}

impl Buffer {
    /// Opens (or creates) the buffer at `path`, recovering what a previous run left.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, BufferError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let db = Database::create(path).map_err(storage)?;
        let mut txn = db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate);
        let (next_seq, captures, bytes) = {
            let table = txn.open_table(CAPTURES).map_err(storage)?;
            txn.open_table(CAPTURE_IDS).map_err(storage)?;
            let next_seq = table.last().map_err(storage)?.map_or(0, |(k, _)| k.value() + 1);
            let mut bytes = 0u64;
            for entry in table.iter().map_err(storage)? {
                let (_, v) = entry.map_err(storage)?;
                bytes += v.value().len() as u64;
            }
            (next_seq, table.len().map_err(storage)?, bytes)
        };
        txn.commit().map_err(storage)?;
        let stats = BufferStats { captures, bytes, max_bytes, refused: 0, appended: 0 };
        let (stats_tx, _) = watch::channel(stats);
        Ok(Self {
            db: Arc::new(db),
            state: Arc::new(Mutex::new(State { next_seq, stats })),
            stats_tx: Arc::new(stats_tx),
        })
    }

    /// Current counters.
    pub fn stats(&self) -> BufferStats {
        self.state.lock().unwrap().stats
    }

    /// Watches the counters; changes on every append, refusal and delete.
    pub fn subscribe(&self) -> watch::Receiver<BufferStats> {
        self.stats_tx.subscribe()
    }

    /// Appends a capture durably. Returns its sequence number.
    pub fn append(&self, capture: &Capture) -> Result<u64, BufferError> {
        let record = encode(capture);
        // One writer at a time: the state lock also orders sequence numbers.
        let mut state = self.state.lock().unwrap();
        let needed = record.len() as u64;
        if state.stats.bytes + needed > state.stats.max_bytes {
            state.stats.refused += 1;
            self.stats_tx.send_replace(state.stats);
            return Err(BufferError::Full {
                bytes: state.stats.bytes,
                max_bytes: state.stats.max_bytes,
                needed,
            });
        }
        let seq = state.next_seq;
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut table = txn.open_table(CAPTURES).map_err(storage)?;
            table.insert(seq, record.as_slice()).map_err(storage)?;
            let mut ids = txn.open_table(CAPTURE_IDS).map_err(storage)?;
            ids.insert(capture.meta.capture_id.as_u128(), seq).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        state.next_seq += 1;
        state.stats.captures += 1;
        state.stats.bytes += needed;
        state.stats.appended += 1;
        self.stats_tx.send_replace(state.stats);
        Ok(seq)
    }

    /// Up to `limit` pending captures with a sequence number of at least `from_seq`, oldest first.
    pub fn pending(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, Capture)>, BufferError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(CAPTURES).map_err(storage)?;
        let mut out = Vec::new();
        for entry in table.range(from_seq..).map_err(storage)?.take(limit) {
            let (k, v) = entry.map_err(storage)?;
            let seq = k.value();
            out.push((seq, decode(seq, v.value())?));
        }
        Ok(out)
    }

    /// Deletes an acknowledged capture; returns whether it was still there.
    pub fn delete(&self, capture_id: Uuid) -> Result<bool, BufferError> {
        let mut state = self.state.lock().unwrap();
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate);
        let removed = {
            let mut ids = txn.open_table(CAPTURE_IDS).map_err(storage)?;
            let seq = ids.remove(capture_id.as_u128()).map_err(storage)?.map(|g| g.value());
            match seq {
                Some(seq) => {
                    let mut table = txn.open_table(CAPTURES).map_err(storage)?;

                    table.remove(seq).map_err(storage)?.map(|g| g.value().len() as u64)
                }
                None => None,
            }
        };
        txn.commit().map_err(storage)?;
        if let Some(len) = removed {
            state.stats.captures -= 1;
            state.stats.bytes -= len;
            self.stats_tx.send_replace(state.stats);
        }
        Ok(removed.is_some())
    }
}

fn encode(capture: &Capture) -> Vec<u8> {
    let meta = serde_json::to_vec(&capture.meta).expect("capture meta serializes");
    let mut out = Vec::with_capacity(4 + meta.len() + capture.image.len());
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&capture.image);
    out
}

fn decode(seq: u64, record: &[u8]) -> Result<Capture, BufferError> {
    let corrupt = |reason: String| BufferError::Corrupt { seq, reason };
    let len_bytes: [u8; 4] =
        record.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt("short record".into()))?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let meta_bytes = record.get(4..4 + len).ok_or_else(|| corrupt("meta length out of range".into()))?;
    let meta: CaptureMeta = serde_json::from_slice(meta_bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(Capture { meta, image: Bytes::copy_from_slice(&record[4 + len..]) })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{OccupancyStatus, VehicleClass};

    pub(crate) fn capture(image: &[u8]) -> Capture {
        let now = chrono::Utc::now();
        Capture {
            meta: CaptureMeta {
                capture_id: Uuid::now_v7(),
                site_id: "site-a".into(),
                lane: 1,
                captured_at: now,
                detected_at: now,
                class: VehicleClass::Car,
                occupancy: OccupancyStatus::Unknown,
                height_m: 1.5,
                width_m: 1.8,
                camera_id: "front".into(),
                config_version: 0,
                content_type: "image/jpeg".into(),
            },
            image: Bytes::copy_from_slice(image),
        }
    }

    #[test]
    fn append_reopen_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/buffer.redb");
        let (a, b, c) = (capture(b"aaa"), capture(b"bbbb"), capture(b"c"));
        {
            let buf = Buffer::open(&path, 1 << 20).unwrap();
            for cap in [&a, &b, &c] {
                buf.append(cap).unwrap();
            }
            assert_eq!(buf.stats().captures, 3);
        }
        let buf = Buffer::open(&path, 1 << 20).unwrap();
        let pending = buf.pending(0, 10).unwrap();
        let ids: Vec<_> = pending.iter().map(|(_, cap)| cap.meta.capture_id).collect();
        assert_eq!(ids, vec![a.meta.capture_id, b.meta.capture_id, c.meta.capture_id]);
        assert_eq!(pending[1].1, b, "record round-trips unchanged");
        assert!(buf.delete(b.meta.capture_id).unwrap());
        assert!(!buf.delete(b.meta.capture_id).unwrap(), "second delete is a no-op");
        let after_first = buf.pending(pending[0].0 + 1, 10).unwrap();
        assert_eq!(after_first.len(), 1);
        assert_eq!(after_first[0].1.meta.capture_id, c.meta.capture_id);
        // a new append after reopen sorts after the survivors
        let d = capture(b"dd");
        let seq = buf.append(&d).unwrap();
        assert!(seq > after_first[0].0);
        drop(buf);
        let buf = Buffer::open(&path, 1 << 20).unwrap();
        assert_eq!(buf.stats().captures, 3);
        assert_eq!(
            buf.stats().bytes,
            buf.pending(0, 10).unwrap().iter().map(|(_, c)| encode(c).len() as u64).sum::<u64>()
        );
    }

    #[test]
    fn refuses_when_full_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode(&capture(&[7u8; 1000])).len() as u64;
        let buf = Buffer::open(&dir.path().join("b.redb"), one * 2 + 10).unwrap();
        let first = capture(&[7u8; 1000]);
        buf.append(&first).unwrap();
        buf.append(&capture(&[7u8; 1000])).unwrap();
        let err = buf.append(&capture(&[7u8; 1000])).unwrap_err();
        assert!(matches!(err, BufferError::Full { .. }), "{err}");
        assert_eq!(buf.stats().refused, 1);
        assert_eq!(buf.stats().captures, 2);
        buf.delete(first.meta.capture_id).unwrap();
        buf.append(&capture(&[7u8; 1000])).unwrap();
        assert_eq!(buf.stats().captures, 2);
    }
}

//! Durable capture buffer: captures wait here, on disk, until the control plane acknowledges
//! them, they are evicted for more valuable ones, or their legal retention runs out.
//!
//! # Design: an append-only segment log
//! Every change is a record appended to the newest segment file, written with one `pwrite` and
//! made durable with one `fdatasync` (a batch of captures shares both: group commit). There is
//! no index file: opening reads the record headers of every segment (seeking over payloads) and
//! replays them into an in-memory index ([`index`]). Why not redb any more, with figures, is in
//! `docs/DECISIONS.md`.
//!
//! # On-disk format (segment log version 1)
//! The buffer path is a directory of segment files `{id:016x}.seg`, ids ascending in write order.
//! A segment starts with a 24-byte header: magic `LWSEG\0\0\x01`, the next sequence number at
//! its creation (`u64`), CRC-32 of those 16 bytes, 4 zero bytes. Records follow back to back.
//! A record is a 56-byte header and a payload; integers are big-endian, CRCs are CRC-32 (IEEE):
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `LWR\x01` |
//! | 4..8 | CRC-32 of header bytes 8..56 |
//! | 8..12 | CRC-32 of the payload |
//! | 12 | kind: 1 capture, 2 delete, 3 deletion receipt, 4 receipt ack |
//! | 13 | capture: value class (0 statistics, 1 compliant, 2 violation candidate); receipt: target (0 none, 1 capture, 2 damaged region) |
//! | 16..20 | payload length |
//! | 24..32 | capture: sequence number; delete, receipt: target sequence number (region: segment id) |
//! | 32..40 | capture: `captured_at` in unix milliseconds; region receipt: offset in the segment |
//! | 40..56 | capture: capture id; receipt, receipt ack: receipt id (UUID) |
//!
//! Other bytes are zero. A capture's payload is a 4-byte length `n`, `n` bytes of JSON
//! [`CaptureMeta`](crate::domain::CaptureMeta) and the image; a receipt's is JSON
//! [`DeletionReceipt`]; delete and ack records have none. The header carries everything the
//! index needs, so recovery never reads an image.
//!
//! # Invariants
//! - A capture counts as accepted only once its record was written and `fdatasync`ed (and, for a
//!   new segment, the segment's creation and its directory entry were synced first); a crash
//!   (kill -9, power loss) after that never loses it.
//! - The records of one operation (a capture and the receipts of what it evicted; a batch) go
//!   out in one write and one `fdatasync`. Their effect on the index is applied only through
//!   [`index::State::apply`], the function recovery replays, so memory and disk agree. If a
//!   write fails, the segment is cut back and the index is rebuilt from disk.
//! - Recovery: a record header that fails its checksum is skipped by searching forward for the
//!   next intact header; the bytes between are a damaged region, counted and reported with one
//!   deletion receipt (whose header names the region, so that the next opening does not report
//!   it again). In the newest segment, an incomplete record at the end is a write torn by the
//!   crash, never acknowledged: it is cut off, not counted. Opening starts a new segment.
//! - Payload checksums are checked when a record is read (upload, listing, compaction), not at
//!   recovery: opening 10,000 buffered 200 KB captures reads 10,000 headers, not 2 GB. A capture
//!   whose payload fails its checksum is never handed out: it is deleted with a `damaged`
//!   receipt and counted (`damaged`), and it never blocks the records after it.
//! - Sequence numbers grow monotonically (the next is past every sequence number any record or
//!   segment header names), so listing by sequence number is oldest first, across restarts too.
//! - The live capture record bytes ([`BufferStats::bytes`], what [`record_len`] counts) never
//!   exceed `max_bytes`. When a capture does not fit, [`plan_admission`] evicts the lowest value
//!   class first, oldest first within a class, but never a capture worth more than the new one;
//!   if that cannot make room, the new capture is rejected and counted (`rejected`).
//! - A capture is deleted without a [`DeletionReceipt`] only after the uplink received its
//!   `CaptureAck`. That delete record is the one record written without its own `fdatasync`
//!   (the next synced write carries it): losing it in a crash only means one more upload of a
//!   capture the control plane already stored and ignores by its id. Every other deletion (evicted when full, expired, damaged) writes a receipt
//!   record, which is the deletion; a receipt is deleted only after the control plane's
//!   `ReceiptAck` (an ack record).
//! - Expired captures (`captured_at` + the retention of their class ≤ now) are deleted on open
//!   and by the periodic [`Buffer::sweep_expired`], whether or not the uplink is connected.
//! - Compaction only ever removes the oldest segment: a segment without live records is
//!   unlinked; one with live records is compacted when the dead bytes of all segments exceed the
//!   live bytes plus one segment: its live captures and receipts are copied (checksums checked)
//!   to the newest segment and `fdatasync`ed before the old file is unlinked and the directory
//!   synced. Because delete and ack records only ever refer to records in the same or older
//!   segments, dropping the oldest segment's delete records cannot revive anything; a crash
//!   between copy and unlink leaves two identical copies, and replay keeps the later one. Disk
//!   use therefore stays under about twice the live bytes plus two segments.
//! - One process opens a buffer directory at a time (the agent's); nothing enforces it yet.

mod index;
pub use index::ClassFill;
mod segment;
mod store;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use self::index::Loc;
use self::segment::{Head, RECORD_HEADER};
use self::store::{Store, Txn, compact, recover, roll};
use crate::config::{BufferConfig, RetentionConfig};
use crate::domain::{Capture, DeletionReason, DeletionReceipt, ValueClass};

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer full: no room for a {} capture of {needed} bytes within {max_bytes} bytes", class.as_str())]
    Full { class: ValueClass, needed: u64, max_bytes: u64 },
    #[error("buffer i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "{} is a file, not a buffer directory: buffers written by agents before the segment log (redb) are not read; upload it with the older agent or move it aside",
        .0.display()
    )]
    NotADirectory(PathBuf),
}

/// Counters of the buffer, published on every change (the buffer component's typed state).
pub use crate::state::BufferStats;

/// Legal retention per value class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub statistics: TimeDelta,
    pub compliant: TimeDelta,
    pub violation_candidate: TimeDelta,
}

impl Retention {
    pub fn from_config(c: &RetentionConfig) -> Self {
        let hours = |h: u64| TimeDelta::hours(i64::try_from(h).unwrap_or(i64::MAX / 3_600_000));
        Self {
            statistics: hours(c.statistics_hours),
            compliant: hours(c.compliant_hours),
            violation_candidate: hours(c.violation_candidate_hours),
        }
    }

    pub fn of(&self, class: ValueClass) -> TimeDelta {
        match class {
            ValueClass::Statistics => self.statistics,
            ValueClass::Compliant => self.compliant,
            ValueClass::ViolationCandidate => self.violation_candidate,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::from_config(&RetentionConfig::default())
    }
}

/// How a buffer is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferOptions {
    pub max_bytes: u64,
    pub retention: Retention,
    /// A segment is closed once it holds this many bytes (a batch may run past it); compaction
    /// copies at most about this much at a time. [`BufferOptions::new`] takes a sixteenth of
    /// `max_bytes`, between 256 KiB and 16 MiB.
    pub segment_bytes: u64,
}

impl BufferOptions {
    pub fn new(max_bytes: u64) -> Self {
        let segment_bytes = (max_bytes / 16).clamp(256 << 10, 16 << 20);
        Self { max_bytes, retention: Retention::default(), segment_bytes }
    }

    pub fn from_config(c: &BufferConfig) -> Self {
        Self { retention: Retention::from_config(&c.retention), ..Self::new(c.max_bytes) }
    }
}

/// Where "now" comes from; tests pass a fixed clock.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// A buffered capture as eviction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub class: ValueClass,
    pub seq: u64,
    pub bytes: u64,
}

/// What to do with a new capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Store it after deleting these sequence numbers (possibly none).
    Admit { evict: Vec<u64> },
    /// Keep everything buffered and refuse the new capture.
    Reject,
}

/// The when-full policy. `order` lists the buffered captures in eviction order: lowest class
/// first, oldest (lowest sequence number) first within a class. Only captures of the new
/// capture's class or lower may go; if they cannot make room, the new one is rejected and
/// nothing is evicted.
pub fn plan_admission(
    order: impl IntoIterator<Item = Candidate>,
    used: u64,
    max: u64,
    class: ValueClass,
    needed: u64,
) -> Admission {
    if needed > max {
        return Admission::Reject;
    }
    let mut free = max.saturating_sub(used);
    let mut evict = Vec::new();
    for candidate in order {
        if free >= needed || candidate.class > class {
            break;
        }
        free += candidate.bytes;
        evict.push(candidate.seq);
    }
    if free >= needed { Admission::Admit { evict } } else { Admission::Reject }
}

/// Sequence numbers of the captures whose retention ended at or before `now`.
pub fn expired(
    entries: impl IntoIterator<Item = (u64, ValueClass, DateTime<Utc>)>,
    now: DateTime<Utc>,
    retention: &Retention,
) -> Vec<u64> {
    entries
        .into_iter()
        .filter(|(_, class, captured_at)| {
            captured_at.checked_add_signed(retention.of(*class)).is_none_or(|until| until <= now)
        })
        .map(|(seq, _, _)| seq)
        .collect()
}

/// Outcome of one append of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Durable under this sequence number, after evicting `evicted` captures.
    Stored { seq: u64, evicted: usize },
    /// Not stored: the buffer holds only more valuable captures (or it exceeds `max_bytes`).
    Rejected { class: ValueClass, needed: u64 },
}

/// Handle to the buffer; cheap to clone. Methods block on disk I/O: call them from
/// `spawn_blocking` in async code.
#[derive(Clone)]
pub struct Buffer {
    dir: Arc<PathBuf>,
    options: BufferOptions,
    clock: Clock,
    store: Arc<Mutex<Store>>,
    stats_tx: Arc<watch::Sender<BufferStats>>,
}

impl Buffer {
    /// The directory the buffer's segments live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens (or creates) the buffer directory at `path`, recovering what a previous run left and
    /// deleting what expired meanwhile.
    pub fn open(path: &Path, options: BufferOptions) -> Result<Self, BufferError> {
        Self::open_with_clock(path, options, Arc::new(Utc::now))
    }

    pub fn open_with_clock(path: &Path, options: BufferOptions, clock: Clock) -> Result<Self, BufferError> {
        if path.is_file() {
            return Err(BufferError::NotADirectory(path.to_owned()));
        }
        std::fs::create_dir_all(path)?;
        let store = recover(path, &options, clock())?;
        let (stats_tx, _) = watch::channel(store.state.stats);
        let buffer = Self {
            dir: Arc::new(path.to_owned()),
            options,
            clock,
            store: Arc::new(Mutex::new(store)),
            stats_tx: Arc::new(stats_tx),
        };
        if buffer.sweep_expired()? == 0 {
            // compaction of what the previous run left
            buffer.write(|_| Ok(()))?;
        }
        Ok(buffer)
    }

    /// Current counters.
    pub fn stats(&self) -> BufferStats {
        self.store.lock().unwrap().state.stats
    }

    /// The heap its in-memory index holds now (an estimate from its collections' sizes).
    pub fn index_bytes(&self) -> u64 {
        self.store.lock().unwrap().state.heap_bytes()
    }

    /// Per value class: captures, bytes and the oldest capture (the local UI's fill view).
    pub fn by_class(&self) -> Vec<ClassFill> {
        self.store.lock().unwrap().state.by_class()
    }

    /// Watches the counters; changes on every append, rejection, deletion and receipt.
    pub fn subscribe(&self) -> watch::Receiver<BufferStats> {
        self.stats_tx.subscribe()
    }

    /// Runs `f` in one transaction: its records are durable when this returns `Ok`. Then rolls
    /// to a new segment if the active one is full, and compacts. If a write fails, the index is
    /// rebuilt from what is on disk.
    fn write<R>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<R, BufferError>) -> Result<R, BufferError> {
        let now = (self.clock)();
        let mut store = self.store.lock().unwrap();
        let before = store.state.stats;
        let result = (|| {
            let mut txn = Txn::new(&mut store, now);
            let result = f(&mut txn)?;
            txn.commit()?;
            roll(&mut store, &self.dir, &self.options)?;
            compact(&mut store, &self.dir, &self.options, now)?;
            Ok(result)
        })();
        if let Err(err) = &result {
            tracing::error!(error = %err, "buffer write failed, rebuilding the index from disk");
            match recover(&self.dir, &self.options, now) {
                Ok(mut recovered) => {
                    let s = store.state.stats;
                    let r = &mut recovered.state.stats;
                    (r.appended, r.rejected, r.evicted, r.expired) =
                        (s.appended, s.rejected, s.evicted, s.expired);
                    r.damaged += s.damaged;
                    *store = recovered;
                }
                Err(again) => tracing::error!(error = %again, "buffer index not rebuilt"),
            }
        }
        if store.state.stats != before {
            self.stats_tx.send_replace(store.state.stats);
        }
        result
    }

    /// Appends one capture durably, evicting less valuable ones if needed. Returns its sequence
    /// number, or `Full` when it was rejected.
    pub fn append(&self, capture: &Capture) -> Result<u64, BufferError> {
        match self.append_batch(std::slice::from_ref(capture))?[0] {
            AppendOutcome::Stored { seq, .. } => Ok(seq),
            AppendOutcome::Rejected { class, needed } => {
                Err(BufferError::Full { class, needed, max_bytes: self.options.max_bytes })
            }
        }
    }

    /// Appends captures in one write and one `fdatasync` (group commit), in order; each is
    /// admitted or rejected by [`plan_admission`]. A capture id already buffered is not stored
    /// twice.
    pub fn append_batch(&self, captures: &[Capture]) -> Result<Vec<AppendOutcome>, BufferError> {
        let metas: Vec<([u8; 4], Vec<u8>)> = captures.iter().map(segment::capture_payload).collect();
        self.write(|t| {
            let mut outcomes = Vec::with_capacity(captures.len());
            let mut batch_ids = HashMap::new();
            for (capture, (len, meta_json)) in captures.iter().zip(&metas) {
                let meta = &capture.meta;
                if let Some(&seq) = t.state().ids.get(&meta.capture_id).or(batch_ids.get(&meta.capture_id)) {
                    outcomes.push(AppendOutcome::Stored { seq, evicted: 0 });
                    continue;
                }
                let needed = (RECORD_HEADER + 4 + meta_json.len() + capture.image.len()) as u64;
                let state = t.state();
                let plan = plan_admission(
                    state.eviction_order(),
                    state.stats.bytes,
                    state.stats.max_bytes,
                    meta.value_class,
                    needed,
                );
                match plan {
                    Admission::Reject => {
                        t.state().stats.rejected += 1;
                        outcomes.push(AppendOutcome::Rejected { class: meta.value_class, needed });
                    }
                    Admission::Admit { evict } => {
                        for &seq in &evict {
                            t.remove(seq, Some(DeletionReason::EvictedFull));
                        }
                        let seq = t.state().next_seq;
                        let head = Head::Capture {
                            seq,
                            capture_id: meta.capture_id,
                            class: meta.value_class,
                            captured_at: meta.captured_at,
                        };
                        t.log(head, &[len, meta_json, &capture.image], None);
                        t.state().stats.appended += 1;
                        batch_ids.insert(meta.capture_id, seq);
                        outcomes.push(AppendOutcome::Stored { seq, evicted: evict.len() });
                    }
                }
            }
            Ok(outcomes)
        })
    }

    /// Where capture `seq` lies now, and its segment's file.
    fn locate(&self, seq: u64) -> Option<(Loc, Arc<File>)> {
        let store = self.store.lock().unwrap();
        let loc = store.state.entries.get(&seq)?.loc;
        Some((loc, store.state.segments[&loc.segment].file.clone()))
    }

    /// Reads and checks capture `seq`: `None` if it is not buffered (any more), `Some(Err)` if
    /// its record is damaged.
    fn read(&self, seq: u64) -> Result<Option<Result<Capture, String>>, BufferError> {
        loop {
            let Some((loc, file)) = self.locate(seq) else { return Ok(None) };
            // the file stays readable through its handle even if compaction unlinks it meanwhile
            let record = segment::read_at(&file, loc.offset, loc.len)?;
            let decoded = segment::verify(&record).and_then(|(decoded, payload)| match decoded.head {
                Head::Capture { seq: s, .. } if s == seq => segment::decode_capture(payload),
                other => Err(format!("record at the capture's place is {other:?}")),
            });
            // deleted or moved while it was read: look again
            if self.locate(seq).map(|(l, _)| l) == Some(loc) {
                return Ok(Some(decoded));
            }
        }
    }

    /// Deletes a record found damaged on read, with a `damaged` receipt.
    fn discard_damaged(&self, seq: u64, reason: &str) -> Result<(), BufferError> {
        tracing::error!(seq, reason, "damaged buffer record skipped");
        self.write(|t| {
            t.remove(seq, Some(DeletionReason::Damaged));
            Ok(())
        })
    }

    /// Up to `limit` intact captures with a sequence number of at least `from_seq`, oldest first.
    /// Damaged records met on the way are skipped, deleted with a receipt and counted.
    pub fn pending(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, Capture)>, BufferError> {
        let seqs: Vec<u64> =
            self.store.lock().unwrap().state.entries.range(from_seq..).map(|(&s, _)| s).collect();
        let mut out = Vec::new();
        for seq in seqs {
            if out.len() >= limit {
                break;
            }
            match self.read(seq)? {
                Some(Ok(capture)) => out.push((seq, capture)),
                Some(Err(reason)) => self.discard_damaged(seq, &reason)?,
                None => {}
            }
        }
        Ok(out)
    }

    /// The next capture to upload that is not in `skip`: the highest value class first
    /// (violation candidates, then compliant, then statistics), oldest (lowest sequence number)
    /// first within a class, so a backlog after an outage sends its evidence first. A damaged
    /// record met on the way is deleted with a receipt and counted, as in [`Buffer::pending`].
    pub fn next_by_priority(&self, skip: &HashSet<u64>) -> Result<Option<(u64, Capture)>, BufferError> {
        loop {
            let seq = {
                let store = self.store.lock().unwrap();
                ValueClass::ALL.iter().rev().find_map(|&class| {
                    store
                        .state
                        .by_value
                        .range((class, 0)..=(class, u64::MAX))
                        .map(|&(_, seq)| seq)
                        .find(|seq| !skip.contains(seq))
                })
            };
            let Some(seq) = seq else { return Ok(None) };
            match self.read(seq)? {
                Some(Ok(capture)) => return Ok(Some((seq, capture))),
                Some(Err(reason)) => self.discard_damaged(seq, &reason)?,
                // deleted (acked, evicted, expired) since the index was read: choose again
                None => {}
            }
        }
    }

    /// Deletes an acknowledged capture; returns whether it was still there. The delete record is
    /// written but not synced: the next durable write makes it durable, and if a crash loses it
    /// the capture is uploaded again, which the control plane ignores (idempotent on the id).
    pub fn delete(&self, capture_id: Uuid) -> Result<bool, BufferError> {
        self.write(|t| match t.state().ids.get(&capture_id).copied() {
            Some(seq) => {
                t.sync = false;
                t.remove(seq, None);
                Ok(true)
            }
            None => Ok(false),
        })
    }

    /// Deletes every capture whose retention ran out, each with an `expired` receipt.
    pub fn sweep_expired(&self) -> Result<usize, BufferError> {
        let now = (self.clock)();
        let due = {
            let store = self.store.lock().unwrap();
            let entries = store.state.entries.iter().map(|(&seq, e)| (seq, e.class, e.captured_at));
            expired(entries, now, &self.options.retention)
        };
        if due.is_empty() {
            return Ok(0);
        }
        self.write(|t| {
            let mut deleted = 0;
            for &seq in &due {
                // a concurrent ack may have deleted it already
                if t.state().entries.contains_key(&seq) {
                    t.remove(seq, Some(DeletionReason::Expired));
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
    }

    /// Up to `limit` deletion receipts not yet acknowledged, oldest first. (A receipt whose own
    /// checksum fails cannot be reported; it was dropped with an error log when it was read.)
    pub fn receipts(&self, limit: usize) -> Result<Vec<DeletionReceipt>, BufferError> {
        let store = self.store.lock().unwrap();
        Ok(store.state.receipts.values().take(limit).map(|r| r.receipt.clone()).collect())
    }

    /// Deletes receipts the control plane acknowledged; returns how many were still there.
    pub fn ack_receipts(&self, receipt_ids: &[Uuid]) -> Result<usize, BufferError> {
        self.write(|t| {
            let mut removed = 0;
            for &receipt_id in receipt_ids {
                if t.state().receipts.contains_key(&receipt_id) {
                    t.log(Head::ReceiptAck { receipt_id }, &[], None);
                    removed += 1;
                }
            }
            Ok(removed)
        })
    }

    /// Overwrites byte `at` of record `seq` with its complement, bypassing the checksum.
    #[cfg(test)]
    fn corrupt_record(&self, seq: u64, at: u64) {
        use std::os::unix::fs::FileExt;
        let (loc, file) = self.locate(seq).unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, loc.offset + at).unwrap();
        file.write_all_at(&[!byte[0]], loc.offset + at).unwrap();
    }
}

/// Record size of a capture as the buffer stores it (for sizing and benchmarks).
pub fn record_len(capture: &Capture) -> u64 {
    segment::capture_record_len(capture)
}

#[cfg(test)]
pub(crate) mod tests;

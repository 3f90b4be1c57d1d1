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
mod segment;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use self::index::{Loc, SegmentInfo, State};
use self::segment::{Head, Item, RECORD_HEADER, SEGMENT_HEADER, Target};
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

/// Counters of the buffer, published on every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BufferStats {
    pub captures: u64,
    /// Stored record bytes (metadata, image and header); never above `max_bytes`.
    pub bytes: u64,
    pub max_bytes: u64,
    /// Captures appended since start.
    pub appended: u64,
    /// New captures rejected because only more valuable captures could have made room.
    pub rejected: u64,
    /// Captures deleted since start to make room for more valuable or newer ones.
    pub evicted: u64,
    /// Captures deleted since start because their retention ran out.
    pub expired: u64,
    /// Damaged records (or unreadable regions) found and deleted since start.
    pub damaged: u64,
    /// Deletion receipts waiting for the control plane's ack.
    pub receipts_pending: u64,
}

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

/// The index and the newest segment, guarded together: one writer at a time.
struct Store {
    state: State,
    /// The segment records are appended to.
    active: u64,
}

/// The records of one operation, applied to the index as they are added and written to the
/// active segment in one `pwrite` + `fdatasync` by [`Txn::commit`].
struct Txn<'a> {
    store: &'a mut Store,
    segment: u64,
    base: u64,
    buf: Vec<u8>,
    now: DateTime<Utc>,
    /// Whether commit waits for `fdatasync`; only a delete on ack does not (see the module doc).
    sync: bool,
}

impl<'a> Txn<'a> {
    fn new(store: &'a mut Store, now: DateTime<Utc>) -> Self {
        let segment = store.active;
        let base = store.state.segments[&segment].len;
        Self { store, segment, base, buf: Vec::new(), now, sync: true }
    }

    fn state(&mut self) -> &mut State {
        &mut self.store.state
    }

    /// Adds a record and applies it to the index.
    fn log(&mut self, head: Head, payload: &[&[u8]], receipt: Option<DeletionReceipt>) {
        let start = self.buf.len();
        segment::encode_record(&mut self.buf, &head, payload);
        self.apply_at(head, start, receipt);
    }

    /// Adds a record copied verbatim (compaction) and applies it.
    fn copy(&mut self, head: Head, record: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(record);
        self.apply_at(head, start, None);
    }

    fn apply_at(&mut self, head: Head, start: usize, receipt: Option<DeletionReceipt>) {
        let loc = Loc {
            segment: self.segment,
            offset: self.base + start as u64,
            len: (self.buf.len() - start) as u64,
        };
        self.store.state.apply(&head, loc, receipt);
    }

    /// Deletes capture `seq`; with a reason, by a deletion receipt.
    fn remove(&mut self, seq: u64, reason: Option<DeletionReason>) {
        let entry = self.store.state.entries.get(&seq).copied();
        let Some(reason) = reason else {
            if entry.is_some() {
                self.log(Head::Delete { seq }, &[], None);
            }
            return;
        };
        let receipt = DeletionReceipt {
            receipt_id: Uuid::now_v7(),
            capture_id: entry.map(|e| e.capture_id),
            class: entry.map(|e| e.class),
            captured_at: entry.map(|e| e.captured_at),
            deleted_at: self.now,
            reason,
            bytes: entry.map_or(0, |e| e.loc.len),
        };
        self.receipt(receipt, Target::Seq(seq));
    }

    /// Writes a deletion receipt that also deletes `target`, and counts it.
    fn receipt(&mut self, receipt: DeletionReceipt, target: Target) {
        let json = serde_json::to_vec(&receipt).expect("receipt serializes");
        tracing::info!(
            capture_id = ?receipt.capture_id,
            class = ?receipt.class,
            reason = ?receipt.reason,
            bytes = receipt.bytes,
            receipt_id = %receipt.receipt_id,
            "capture deleted before upload"
        );
        let stats = &mut self.store.state.stats;
        match receipt.reason {
            DeletionReason::EvictedFull => stats.evicted += 1,
            DeletionReason::Expired => stats.expired += 1,
            DeletionReason::Damaged => stats.damaged += 1,
        }
        self.log(Head::Receipt { receipt_id: receipt.receipt_id, target }, &[&json], Some(receipt));
    }

    /// Writes the records and waits until they are durable. On error the segment is cut back to
    /// where it was (best effort); the caller rebuilds the index.
    fn commit(self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = self.store.state.segments[&self.segment].file.clone();
        let written = file
            .write_all_at(&self.buf, self.base)
            .and_then(|()| if self.sync { file.sync_data() } else { Ok(()) });
        if written.is_err() {
            let _ = file.set_len(self.base);
        }
        written
    }
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
        let (loc, file) = self.locate(seq).unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, loc.offset + at).unwrap();
        file.write_all_at(&[!byte[0]], loc.offset + at).unwrap();
    }
}

/// Rebuilds the index from the segments in `dir`: replays every intact header in log order,
/// cuts a torn write off the newest segment, removes segments without records, reports damaged
/// regions not reported before, and starts a new active segment.
fn recover(dir: &Path, options: &BufferOptions, now: DateTime<Utc>) -> Result<Store, BufferError> {
    let ids = segment::list_segments(dir)?;
    let mut state = State {
        stats: BufferStats { max_bytes: options.max_bytes, ..Default::default() },
        ..Default::default()
    };
    let mut damaged = Vec::new();
    let mut reported = HashSet::new();
    let mut empty = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let file = File::options().read(true).write(true).open(segment::segment_path(dir, id))?;
        let scan = segment::scan(&file)?;
        let newest = i + 1 == ids.len();
        let mut len = scan.end + scan.tail;
        if scan.tail > 0 {
            if newest {
                tracing::warn!(
                    segment = id,
                    bytes = scan.tail,
                    "torn write at the end of the buffer cut off"
                );
                file.set_len(scan.end)?;
                file.sync_all()?;
                len = scan.end;
            } else {
                damaged.push((id, scan.end, scan.tail));
            }
        }
        if let Some(base) = scan.base_seq {
            state.next_seq = state.next_seq.max(base);
        }
        if scan.items.is_empty() && scan.tail == 0 {
            empty.push(id);
            continue;
        }
        let file = Arc::new(file);
        state.segments.insert(id, SegmentInfo { file: file.clone(), len, live: 0 });
        for item in scan.items {
            match item {
                Item::Record { offset, decoded } => {
                    let loc = Loc { segment: id, offset, len: decoded.record_len() };
                    let receipt = match decoded.head {
                        Head::Receipt { receipt_id, target } => {
                            if let Target::Region { segment, offset } = target {
                                reported.insert((segment, offset));
                            }
                            let read = segment::read_at(&file, offset, loc.len)?;
                            let receipt = segment::verify(&read).and_then(|(_, json)| {
                                serde_json::from_slice(json).map_err(|e| e.to_string())
                            });
                            match receipt {
                                Ok(receipt) => Some(receipt),
                                Err(reason) => {
                                    tracing::error!(%receipt_id, reason, "damaged deletion receipt dropped");
                                    None
                                }
                            }
                        }
                        _ => None,
                    };
                    state.apply(&decoded.head, loc, receipt);
                }
                Item::Damaged { offset, len } => damaged.push((id, offset, len)),
            }
        }
    }
    for id in empty {
        std::fs::remove_file(segment::segment_path(dir, id))?;
    }
    let active = ids.last().map_or(0, |id| id + 1);
    let file = segment::create_segment(dir, active, state.next_seq)?;
    state.segments.insert(active, SegmentInfo { file: Arc::new(file), len: SEGMENT_HEADER, live: 0 });
    let mut store = Store { state, active };
    let mut txn = Txn::new(&mut store, now);
    for (segment, offset, len) in damaged {
        if reported.contains(&(segment, offset)) {
            continue;
        }
        tracing::error!(segment, offset, bytes = len, "damaged buffer region skipped");
        let receipt = DeletionReceipt {
            receipt_id: Uuid::now_v7(),
            capture_id: None,
            class: None,
            captured_at: None,
            deleted_at: now,
            reason: DeletionReason::Damaged,
            bytes: len,
        };
        txn.receipt(receipt, Target::Region { segment, offset });
    }
    txn.commit()?;
    Ok(store)
}

/// Starts a new active segment once the current one reached `segment_bytes`.
fn roll(store: &mut Store, dir: &Path, options: &BufferOptions) -> Result<(), BufferError> {
    if store.state.segments[&store.active].len < options.segment_bytes {
        return Ok(());
    }
    let id = store.active + 1;
    let file = segment::create_segment(dir, id, store.state.next_seq)?;
    store.state.segments.insert(id, SegmentInfo { file: Arc::new(file), len: SEGMENT_HEADER, live: 0 });
    store.active = id;
    Ok(())
}

/// Removes the oldest segment while it holds nothing live, or while dead bytes exceed live bytes
/// plus one segment, after copying its live records forward (see the module doc).
fn compact(
    store: &mut Store,
    dir: &Path,
    options: &BufferOptions,
    now: DateTime<Utc>,
) -> Result<(), BufferError> {
    loop {
        let Some((&oldest, info)) = store.state.segments.first_key_value() else { return Ok(()) };
        if oldest == store.active {
            return Ok(());
        }
        if info.live > 0 {
            let (disk, live) = store.state.disk_and_live();
            if disk - live <= live + options.segment_bytes {
                return Ok(());
            }
            let file = info.file.clone();
            let captures: Vec<(u64, Loc)> = store
                .state
                .entries
                .iter()
                .filter(|(_, e)| e.loc.segment == oldest)
                .map(|(&seq, e)| (seq, e.loc))
                .collect();
            let receipts: Vec<DeletionReceipt> = store
                .state
                .receipts
                .values()
                .filter(|r| r.loc.segment == oldest)
                .map(|r| r.receipt.clone())
                .collect();
            let mut txn = Txn::new(store, now);
            for (seq, loc) in captures {
                let record = segment::read_at(&file, loc.offset, loc.len)?;
                match segment::verify(&record) {
                    Ok((decoded, _)) if matches!(decoded.head, Head::Capture { seq: s, .. } if s == seq) => {
                        txn.copy(decoded.head, &record);
                    }
                    Ok(_) => {
                        tracing::error!(seq, "buffer record replaced by another, deleted");
                        txn.remove(seq, Some(DeletionReason::Damaged));
                    }
                    Err(reason) => {
                        tracing::error!(seq, reason, "damaged buffer record found by compaction");
                        txn.remove(seq, Some(DeletionReason::Damaged));
                    }
                }
            }
            for receipt in receipts {
                let json = serde_json::to_vec(&receipt).expect("receipt serializes");
                txn.log(
                    Head::Receipt { receipt_id: receipt.receipt_id, target: Target::None },
                    &[&json],
                    Some(receipt),
                );
            }
            txn.commit()?;
            tracing::debug!(segment = oldest, "buffer segment compacted");
        }
        store.state.segments.remove(&oldest);
        std::fs::remove_file(segment::segment_path(dir, oldest))?;
        segment::sync_dir(dir)?;
    }
}

/// Record size of a capture as the buffer stores it (for sizing and benchmarks).
pub fn record_len(capture: &Capture) -> u64 {
    segment::capture_record_len(capture)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use bytes::Bytes;

    pub(crate) fn capture(image: &[u8]) -> Capture {
        Capture::synthetic("site-a", 1, "front", Bytes::copy_from_slice(image))
    }

    fn classed(class: ValueClass, image: &[u8]) -> Capture {
        let mut c = capture(image);
        c.meta.value_class = class;
        c
    }

    fn opts(max_bytes: u64) -> BufferOptions {
        BufferOptions::new(max_bytes)
    }

    #[test]
    fn next_by_priority_takes_the_most_valuable_class_first_then_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let buf = Buffer::open(&dir.path().join("b"), opts(1 << 24)).unwrap();
        let order = [
            ValueClass::Statistics,
            ValueClass::Compliant,
            ValueClass::ViolationCandidate,
            ValueClass::Statistics,
            ValueClass::ViolationCandidate,
            ValueClass::Compliant,
        ];
        let appended: Vec<Capture> = order.iter().map(|&c| classed(c, &[1; 10])).collect();
        buf.append_batch(&appended).unwrap();
        let mut skip = HashSet::new();
        let mut taken = Vec::new();
        while let Some((seq, capture)) = buf.next_by_priority(&skip).unwrap() {
            skip.insert(seq);
            taken.push(capture.meta.capture_id);
        }
        let id = |i: usize| appended[i].meta.capture_id;
        assert_eq!(taken, vec![id(2), id(4), id(1), id(5), id(0), id(3)]);
        // an acknowledged capture is gone; a new, more valuable one goes first
        buf.delete(id(2)).unwrap();
        let late = classed(ValueClass::ViolationCandidate, &[2; 10]);
        buf.append(&late).unwrap();
        let (_, next) = buf.next_by_priority(&HashSet::new()).unwrap().unwrap();
        assert_eq!(next.meta.capture_id, id(4));
        let (_, after) = buf.next_by_priority(&HashSet::from([next_seq(&buf, id(4))])).unwrap().unwrap();
        assert_eq!(after.meta.capture_id, late.meta.capture_id);
    }

    fn next_seq(buf: &Buffer, id: Uuid) -> u64 {
        buf.pending(0, usize::MAX).unwrap().into_iter().find(|(_, c)| c.meta.capture_id == id).unwrap().0
    }

    fn fixed_clock(t: DateTime<Utc>) -> (Clock, Arc<Mutex<DateTime<Utc>>>) {
        let now = Arc::new(Mutex::new(t));
        let read = now.clone();
        (Arc::new(move || *read.lock().unwrap()), now)
    }

    fn ids(buf: &Buffer) -> Vec<Uuid> {
        buf.pending(0, usize::MAX).unwrap().into_iter().map(|(_, c)| c.meta.capture_id).collect()
    }

    #[test]
    fn append_reopen_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/buffer");
        let (a, b, c) = (capture(b"aaa"), capture(b"bbbb"), capture(b"c"));
        {
            let buf = Buffer::open(&path, opts(1 << 20)).unwrap();
            for cap in [&a, &b, &c] {
                buf.append(cap).unwrap();
            }
            assert_eq!(buf.stats().captures, 3);
        }
        let buf = Buffer::open(&path, opts(1 << 20)).unwrap();
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
        assert_eq!(buf.append(&d).unwrap(), seq, "the same capture is not stored twice");
        drop(buf);
        let buf = Buffer::open(&path, opts(1 << 20)).unwrap();
        assert_eq!(buf.stats().captures, 3);
        assert_eq!(
            buf.stats().bytes,
            buf.pending(0, 10).unwrap().iter().map(|(_, c)| record_len(c)).sum::<u64>()
        );
        assert_eq!(buf.stats().receipts_pending, 0, "acked deletions leave no receipt");
    }

    #[test]
    fn eviction_order() {
        use ValueClass::{Compliant as C, Statistics as S, ViolationCandidate as V};
        let order = |items: &[(ValueClass, u64, u64)]| {
            let mut v: Vec<Candidate> =
                items.iter().map(|&(class, seq, bytes)| Candidate { class, seq, bytes }).collect();
            v.sort_by_key(|c| (c.class, c.seq));
            v
        };
        let admit = |evict: &[u64]| Admission::Admit { evict: evict.to_vec() };
        // (buffered (class, seq, bytes), max, new class, new bytes, expected)
        type Case<'a> = (&'a [(ValueClass, u64, u64)], u64, ValueClass, u64, Admission);
        let cases: Vec<Case> = vec![
            (&[], 100, C, 100, admit(&[])),
            (&[], 100, V, 101, Admission::Reject),
            (&[(C, 1, 50)], 100, S, 50, admit(&[])),
            (&[(C, 1, 50), (S, 2, 30), (V, 3, 10)], 100, C, 30, admit(&[2])),
            // statistics go first even when newer; then the oldest compliant
            (&[(C, 1, 40), (C, 2, 40), (S, 3, 20)], 100, C, 50, admit(&[3, 1])),
            (&[(C, 1, 40), (C, 2, 40), (S, 3, 20)], 100, V, 100, admit(&[3, 1, 2])),
            // a statistics capture never displaces a compliant one
            (&[(C, 1, 60), (S, 2, 30)], 100, S, 40, admit(&[2])),
            (&[(C, 1, 60), (S, 2, 30)], 100, S, 50, Admission::Reject),
            (&[(C, 1, 60), (C, 2, 30)], 100, S, 20, Admission::Reject),
            // violation candidates are safe from compliant captures
            (&[(V, 1, 90)], 100, C, 20, Admission::Reject),
            (&[(V, 1, 50), (V, 2, 50)], 100, V, 60, admit(&[1, 2])),
            // rejected: evicting everything allowed would not be enough, so nothing is evicted
            (&[(S, 1, 10), (V, 2, 80)], 100, C, 50, Admission::Reject),
        ];
        for (buffered, max, class, needed, expected) in cases {
            let used = buffered.iter().map(|b| b.2).sum();
            let got = plan_admission(order(buffered), used, max, class, needed);
            assert_eq!(got, expected, "buffered {buffered:?}, new {class:?} of {needed} in {max}");
        }
    }

    #[test]
    fn evicts_by_value_with_receipts_and_never_exceeds_bound() {
        let dir = tempfile::tempdir().unwrap();
        let one = record_len(&capture(&[7u8; 1000]));
        let max = one * 3 + 10;
        let buf = Buffer::open(&dir.path().join("b"), opts(max)).unwrap();
        let stat = classed(ValueClass::Statistics, &[7u8; 1000]);
        let old = capture(&[7u8; 1000]);
        let newer = capture(&[7u8; 1000]);
        for c in [&stat, &old, &newer] {
            buf.append(c).unwrap();
        }
        let viol = classed(ValueClass::ViolationCandidate, &[7u8; 1000]);
        buf.append(&viol).unwrap();
        assert_eq!(ids(&buf), vec![old.meta.capture_id, newer.meta.capture_id, viol.meta.capture_id]);
        let late = capture(&[7u8; 1000]);
        buf.append(&late).unwrap();
        assert_eq!(ids(&buf), vec![newer.meta.capture_id, viol.meta.capture_id, late.meta.capture_id]);
        let err = buf.append(&classed(ValueClass::Statistics, &[7u8; 1000])).unwrap_err();
        assert!(matches!(err, BufferError::Full { class: ValueClass::Statistics, .. }), "{err}");
        let s = buf.stats();
        assert_eq!((s.captures, s.evicted, s.rejected, s.receipts_pending), (3, 2, 1, 2));
        assert!(s.bytes <= s.max_bytes);
        let receipts = buf.receipts(10).unwrap();
        let evicted: Vec<_> = receipts.iter().map(|r| (r.capture_id, r.class, r.reason)).collect();
        assert_eq!(
            evicted,
            vec![
                (Some(stat.meta.capture_id), Some(ValueClass::Statistics), DeletionReason::EvictedFull),
                (Some(old.meta.capture_id), Some(ValueClass::Compliant), DeletionReason::EvictedFull),
            ]
        );
        assert_eq!(receipts[0].bytes, record_len(&stat));
        assert_eq!(receipts[0].captured_at, Some(stat.meta.captured_at));
    }

    #[test]
    fn size_bound_holds_for_random_batches() {
        use rand::Rng;
        let dir = tempfile::tempdir().unwrap();
        let max = 50_000;
        let buf = Buffer::open(&dir.path().join("b"), opts(max)).unwrap();
        let mut rng = rand::rng();
        for _ in 0..40 {
            let batch: Vec<Capture> = (0..rng.random_range(1..6))
                .map(|_| {
                    let class = ValueClass::ALL[rng.random_range(0..3)];
                    classed(class, &vec![1u8; rng.random_range(0..20_000)])
                })
                .collect();
            let outcomes = buf.append_batch(&batch).unwrap();
            assert_eq!(outcomes.len(), batch.len());
            let s = buf.stats();
            assert!(s.bytes <= max, "{s:?}");
            let listed = buf.pending(0, usize::MAX).unwrap();
            assert_eq!(listed.len() as u64, s.captures);
            assert_eq!(listed.iter().map(|(_, c)| record_len(c)).sum::<u64>(), s.bytes);
            assert_eq!(s.appended, s.captures + s.evicted);
        }
    }

    #[test]
    fn checksum_detects_a_corrupted_record_and_the_rest_survives() {
        let dir = tempfile::tempdir().unwrap();
        let buf = Buffer::open(&dir.path().join("b"), opts(1 << 20)).unwrap();
        let caps: Vec<Capture> = (0..3).map(|i| capture(&[i; 500])).collect();
        let seqs: Vec<u64> = caps.iter().map(|c| buf.append(c).unwrap()).collect();
        buf.corrupt_record(seqs[1], 400);
        let listed = buf.pending(0, 10).unwrap();
        assert_eq!(
            listed.iter().map(|(_, c)| c.meta.capture_id).collect::<Vec<_>>(),
            vec![caps[0].meta.capture_id, caps[2].meta.capture_id]
        );
        let s = buf.stats();
        assert_eq!((s.captures, s.damaged, s.receipts_pending), (2, 1, 1));
        let receipt = &buf.receipts(10).unwrap()[0];
        assert_eq!(receipt.reason, DeletionReason::Damaged);
        assert_eq!(receipt.capture_id, Some(caps[1].meta.capture_id), "identity comes from the index");
        assert_eq!(receipt.class, Some(ValueClass::Compliant));
    }

    /// The segment files of a buffer directory, oldest first.
    fn segments(dir: &Path) -> Vec<PathBuf> {
        segment::list_segments(dir).unwrap().into_iter().map(|id| segment::segment_path(dir, id)).collect()
    }

    /// Flips the byte `delta` away from the start of `marker` in the segment holding it.
    fn flip_near(dir: &Path, marker: &[u8], delta: isize) {
        for path in segments(dir) {
            let mut file = std::fs::read(&path).unwrap();
            if let Some(at) = file.windows(marker.len()).position(|w| w == marker) {
                file[at.checked_add_signed(delta).unwrap()] ^= 0x5a;
                std::fs::write(&path, &file).unwrap();
                return;
            }
        }
        panic!("marker not found");
    }

    fn marker() -> Vec<u8> {
        (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    #[test]
    fn flipped_bytes_in_the_file_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let marker = marker();
        let (a, b, c) = (capture(&[1; 3000]), capture(&marker), capture(&[3; 3000]));
        {
            let buf = Buffer::open(&path, opts(1 << 20)).unwrap();
            buf.append_batch(&[a.clone(), b.clone(), c.clone()]).unwrap();
        }
        flip_near(&path, &marker, 2000);
        let buf = Buffer::open(&path, opts(1 << 20)).unwrap();
        assert_eq!(ids(&buf), vec![a.meta.capture_id, c.meta.capture_id]);
        assert_eq!(buf.stats().damaged, 1);
        drop(buf);
        let buf = Buffer::open(&path, opts(1 << 20)).unwrap();
        assert_eq!(buf.stats().captures, 2, "the damaged record is gone for good");
        assert_eq!(buf.receipts(10).unwrap()[0].capture_id, Some(b.meta.capture_id));
    }

    #[test]
    fn damaged_header_is_skipped_counted_once_and_the_rest_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let marker = marker();
        let (a, b, c) = (capture(&[1; 3000]), capture(&marker), capture(&[3; 3000]));
        let b_len = record_len(&b);
        {
            let buf = Buffer::open(&path, opts(1 << 20)).unwrap();
            buf.append_batch(&[a.clone(), b.clone(), c.clone()]).unwrap();
        }
        // the image ends the record; its header starts meta, meta length and header before it
        let meta_len = serde_json::to_vec(&b.meta).unwrap().len() as isize;
        flip_near(&path, &marker, -(meta_len + 4 + RECORD_HEADER as isize) + 30);
        let buf = Buffer::open(&path, opts(1 << 20)).unwrap();
        let s = buf.stats();
        assert_eq!((s.captures, s.damaged, s.receipts_pending), (2, 1, 1));
        assert_eq!(ids(&buf), vec![a.meta.capture_id, c.meta.capture_id]);
        let receipt = &buf.receipts(10).unwrap()[0];
        assert_eq!(
            (receipt.capture_id, receipt.reason, receipt.bytes),
            (None, DeletionReason::Damaged, b_len)
        );
        drop(buf);
        let buf = Buffer::open(&path, opts(1 << 20)).unwrap();
        let s = buf.stats();
        assert_eq!((s.captures, s.damaged, s.receipts_pending), (2, 0, 1), "reported once");
        let d = capture(b"after");
        buf.append(&d).unwrap();
        assert_eq!(ids(&buf), vec![a.meta.capture_id, c.meta.capture_id, d.meta.capture_id]);
    }

    #[test]
    fn torn_write_at_the_tail_is_cut_off_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let caps: Vec<Capture> = (0..3).map(|i| capture(&[i; 1000])).collect();
        {
            let buf = Buffer::open(&path, opts(1 << 20)).unwrap();
            buf.append_batch(&caps).unwrap();
        }
        // what a kill -9 in the middle of the next write leaves: a prefix of a record
        let mut next = Vec::new();
        let head = Head::Capture {
            seq: 3,
            capture_id: Uuid::now_v7(),
            class: ValueClass::Compliant,
            captured_at: Utc::now(),
        };
        segment::encode_record(&mut next, &head, &[&[9; 1000]]);
        for cut in [10, 56, 700] {
            let newest = segments(&path).pop().unwrap();
            let mut file = std::fs::OpenOptions::new().append(true).open(&newest).unwrap();
            std::io::Write::write_all(&mut file, &next[..cut]).unwrap();
            drop(file);
            let buf = Buffer::open(&path, opts(1 << 20)).unwrap();
            assert_eq!(ids(&buf), caps.iter().map(|c| c.meta.capture_id).collect::<Vec<_>>(), "cut at {cut}");
            assert_eq!((buf.stats().damaged, buf.stats().receipts_pending), (0, 0));
        }
        let buf = Buffer::open(&path, opts(1 << 20)).unwrap();
        assert_eq!(buf.append(&capture(b"x")).unwrap(), 3, "sequence numbers go on");
    }

    #[test]
    fn compaction_bounds_disk_use_and_survives_an_interrupted_unlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let options = BufferOptions { segment_bytes: 8 << 10, ..opts(1 << 20) };
        let buf = Buffer::open(&path, options).unwrap();
        let caps: Vec<Capture> = (0..40).map(|i| classed(ValueClass::ALL[i % 3], &[i as u8; 1000])).collect();
        for c in &caps {
            buf.append(c).unwrap();
        }
        let oldest = segments(&path)[0].clone();
        let saved = std::fs::read(&oldest).unwrap();
        // keep every third capture (some in each segment), delete the rest
        let mut kept = Vec::new();
        for (i, c) in caps.iter().enumerate() {
            if i % 3 == 0 {
                kept.push(c.meta.capture_id);
            } else {
                buf.delete(c.meta.capture_id).unwrap();
            }
        }
        let disk: u64 = segments(&path).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
        let live = buf.stats().bytes;
        assert!(disk <= 2 * live + 3 * options.segment_bytes, "disk {disk}, live {live}");
        assert!(!oldest.exists(), "the oldest segment was compacted away");
        assert_eq!(ids(&buf), kept);
        drop(buf);
        // as if the unlink had not reached the disk: the old copies come back beside the new
        std::fs::write(&oldest, saved).unwrap();
        let buf = Buffer::open(&path, options).unwrap();
        assert_eq!(ids(&buf), kept, "each capture once");
        assert_eq!(buf.stats().bytes, live);
        assert_eq!(buf.stats().damaged, 0);
        let listed: Vec<Capture> = buf.pending(0, usize::MAX).unwrap().into_iter().map(|(_, c)| c).collect();
        assert_eq!(listed, caps.iter().step_by(3).cloned().collect::<Vec<_>>(), "bytes intact after copying");
        drop(buf);
        let buf = Buffer::open(&path, options).unwrap();
        assert_eq!(ids(&buf), kept);
        assert!(buf.append(&capture(b"new")).unwrap() >= 40);
    }

    #[test]
    fn refuses_a_redb_file_from_an_older_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buffer.redb");
        std::fs::write(&path, b"redb").unwrap();
        let err = Buffer::open(&path, opts(1 << 20)).err().unwrap();
        assert!(matches!(err, BufferError::NotADirectory(_)), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"redb", "left as it was");
    }

    #[test]
    fn retention_sweep_with_fixed_clock() {
        let t0 = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let retention = Retention {
            statistics: TimeDelta::hours(1),
            compliant: TimeDelta::hours(2),
            violation_candidate: TimeDelta::hours(10),
        };
        // the pure rule
        let entries = [
            (1, ValueClass::Statistics, t0),
            (2, ValueClass::Compliant, t0),
            (3, ValueClass::ViolationCandidate, t0),
            (4, ValueClass::Statistics, t0 + TimeDelta::minutes(30)),
        ];
        assert_eq!(expired(entries, t0 + TimeDelta::minutes(59), &retention), Vec::<u64>::new());
        assert_eq!(expired(entries, t0 + TimeDelta::hours(1), &retention), vec![1]);
        assert_eq!(expired(entries, t0 + TimeDelta::hours(2), &retention), vec![1, 2, 4]);
        assert_eq!(expired(entries, t0 + TimeDelta::hours(10), &retention), vec![1, 2, 3, 4]);

        // the buffer, on a fixed clock
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (clock, now) = fixed_clock(t0);
        let options = BufferOptions { retention, ..opts(1 << 20) };
        let buf = Buffer::open_with_clock(&path, options, clock.clone()).unwrap();
        let at = |class, t| {
            let mut c = classed(class, b"x");
            c.meta.captured_at = t;
            c
        };
        let stat = at(ValueClass::Statistics, t0);
        let comp = at(ValueClass::Compliant, t0);
        let viol = at(ValueClass::ViolationCandidate, t0);
        buf.append_batch(&[stat.clone(), comp.clone(), viol.clone()]).unwrap();
        *now.lock().unwrap() = t0 + TimeDelta::minutes(90);
        assert_eq!(buf.sweep_expired().unwrap(), 1);
        assert_eq!(ids(&buf), vec![comp.meta.capture_id, viol.meta.capture_id]);
        let receipt = &buf.receipts(10).unwrap()[0];
        assert_eq!(
            (receipt.capture_id, receipt.reason, receipt.deleted_at),
            (Some(stat.meta.capture_id), DeletionReason::Expired, t0 + TimeDelta::minutes(90))
        );
        drop(buf);
        // offline for a day: the sweep on open enforces retention before anything is uploaded
        *now.lock().unwrap() = t0 + TimeDelta::hours(24);
        let buf = Buffer::open_with_clock(&path, options, clock).unwrap();
        assert_eq!(buf.stats().captures, 0);
        assert_eq!(buf.stats().expired, 2);
        assert_eq!(buf.stats().receipts_pending, 3);
    }

    #[test]
    fn receipts_persist_across_reopen_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let one = record_len(&capture(&[0; 100]));
        {
            let buf = Buffer::open(&path, opts(one + 1)).unwrap();
            for _ in 0..3 {
                buf.append(&capture(&[0; 100])).unwrap();
            }
            assert_eq!(buf.stats().receipts_pending, 2);
        }
        let buf = Buffer::open(&path, opts(one + 1)).unwrap();
        assert_eq!(buf.stats().receipts_pending, 2);
        let receipts = buf.receipts(10).unwrap();
        assert_eq!(receipts.len(), 2);
        assert!(receipts[0].receipt_id < receipts[1].receipt_id, "oldest first");
        assert_eq!(buf.ack_receipts(&[receipts[0].receipt_id, Uuid::now_v7()]).unwrap(), 1);
        drop(buf);
        let buf = Buffer::open(&path, opts(one + 1)).unwrap();
        assert_eq!(buf.receipts(10).unwrap(), vec![receipts[1].clone()]);
        assert_eq!(buf.ack_receipts(&[receipts[1].receipt_id]).unwrap(), 1);
        assert_eq!(buf.stats().receipts_pending, 0);
    }

    #[test]
    fn recovers_after_a_crash_without_close() {
        // A copy of the segments taken while the buffer is open is what a kill -9 leaves: every
        // durable record, nothing closed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let crashed = dir.path().join("crashed");
        let options = BufferOptions { segment_bytes: 16 << 10, ..opts(1 << 20) };
        let buf = Buffer::open(&path, options).unwrap();
        let caps: Vec<Capture> = (0..20).map(|i| capture(&[i; 2000])).collect();
        buf.append_batch(&caps[..10]).unwrap();
        for c in &caps[10..] {
            buf.append(c).unwrap();
        }
        buf.delete(caps[0].meta.capture_id).unwrap();
        std::fs::create_dir(&crashed).unwrap();
        for segment in segments(&path) {
            std::fs::copy(&segment, crashed.join(segment.file_name().unwrap())).unwrap();
        }
        drop(buf);
        let buf = Buffer::open(&crashed, options).unwrap();
        let expected: Vec<Uuid> = caps[1..].iter().map(|c| c.meta.capture_id).collect();
        assert_eq!(ids(&buf), expected);
        assert_eq!(buf.stats().damaged, 0);
        let next = buf.append(&capture(b"after")).unwrap();
        assert_eq!(next, 20, "sequence numbers continue after recovery");
    }
}

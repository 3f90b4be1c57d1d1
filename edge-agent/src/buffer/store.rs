//! The buffer's write path over its segment log: [`Txn`], the records of one operation written
//! in one `pwrite` + `fdatasync` and applied to the index; [`recover`], which rebuilds the index
//! from the segments at open; and the segment upkeep after each write ([`roll`] to a new segment,
//! [`compact`] the oldest). The format and the invariants these keep are in the parent module's
//! doc; [`Buffer`](super::Buffer) is the only caller.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::index::{Loc, SegmentInfo, State};
use super::segment::{self, Head, Item, SEGMENT_HEADER, Target};
use super::{BufferError, BufferOptions, BufferStats};
use crate::domain::{DeletionReason, DeletionReceipt};

/// The index and the newest segment, guarded together: one writer at a time.
pub(super) struct Store {
    pub(super) state: State,
    /// The segment records are appended to.
    active: u64,
}

/// The records of one operation, applied to the index as they are added and written to the
/// active segment in one `pwrite` + `fdatasync` by [`Txn::commit`].
pub(super) struct Txn<'a> {
    store: &'a mut Store,
    segment: u64,
    base: u64,
    buf: Vec<u8>,
    now: DateTime<Utc>,
    /// Whether commit waits for `fdatasync`; only a delete on ack does not (see the module doc).
    pub(super) sync: bool,
}

impl<'a> Txn<'a> {
    pub(super) fn new(store: &'a mut Store, now: DateTime<Utc>) -> Self {
        let segment = store.active;
        let base = store.state.segments[&segment].len;
        Self { store, segment, base, buf: Vec::new(), now, sync: true }
    }

    pub(super) fn state(&mut self) -> &mut State {
        &mut self.store.state
    }

    /// Adds a record and applies it to the index.
    pub(super) fn log(&mut self, head: Head, payload: &[&[u8]], receipt: Option<DeletionReceipt>) {
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
    pub(super) fn remove(&mut self, seq: u64, reason: Option<DeletionReason>) {
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
    pub(super) fn commit(self) -> std::io::Result<()> {
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

/// Rebuilds the index from the segments in `dir`: replays every intact header in log order,
/// cuts a torn write off the newest segment, removes segments without records, reports damaged
/// regions not reported before, and starts a new active segment.
pub(super) fn recover(dir: &Path, options: &BufferOptions, now: DateTime<Utc>) -> Result<Store, BufferError> {
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
pub(super) fn roll(store: &mut Store, dir: &Path, options: &BufferOptions) -> Result<(), BufferError> {
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
pub(super) fn compact(
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

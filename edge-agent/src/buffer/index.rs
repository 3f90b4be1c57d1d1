//! The buffer's in-memory index: where every live capture and receipt lies, the eviction order,
//! per-segment live bytes for compaction, and the counters. Rebuilt at open by replaying the
//! record headers in log order through [`State::apply`], the same function every write goes
//! through once its records are durable, so recovery and normal operation cannot disagree.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::segment::{Head, Target};
use super::{BufferStats, Candidate};
use crate::domain::{DeletionReceipt, ValueClass};

/// Where a record lies: segment id, offset of its header, total length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
}

/// A live capture as the index knows it (from its header only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub capture_id: Uuid,
    pub class: ValueClass,
    pub captured_at: DateTime<Utc>,
    pub loc: Loc,
}

/// What one value class holds in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassFill {
    pub class: ValueClass,
    pub captures: u64,
    pub bytes: u64,
    pub oldest: DateTime<Utc>,
}

/// A live (not yet acknowledged) deletion receipt.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ReceiptEntry {
    pub receipt: DeletionReceipt,
    pub loc: Loc,
}

/// One segment file.
#[derive(Debug)]
pub(super) struct SegmentInfo {
    pub file: Arc<File>,
    /// Bytes written (the end of the last record).
    pub len: u64,
    /// Bytes of the records in it that the index points at.
    pub live: u64,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub next_seq: u64,
    pub entries: BTreeMap<u64, Entry>,
    /// (class, seq): iteration order is eviction order.
    pub by_value: BTreeSet<(ValueClass, u64)>,
    pub ids: HashMap<Uuid, u64>,
    /// By receipt id (UUID v7), so oldest first.
    pub receipts: BTreeMap<Uuid, ReceiptEntry>,
    pub segments: BTreeMap<u64, SegmentInfo>,
    pub stats: BufferStats,
}

impl State {
    /// Applies one durable record at `loc`. `receipt` is the decoded payload of a receipt record
    /// (`None` when that payload is unreadable: the record still deletes its target).
    pub fn apply(&mut self, head: &Head, loc: Loc, receipt: Option<DeletionReceipt>) {
        match *head {
            Head::Capture { seq, capture_id, class, captured_at } => {
                // a second copy (compaction interrupted before the old segment was removed)
                // replaces the first: both hold the same bytes
                self.remove_capture(seq);
                self.next_seq = self.next_seq.max(seq + 1);
                self.entries.insert(seq, Entry { capture_id, class, captured_at, loc });
                self.by_value.insert((class, seq));
                self.ids.insert(capture_id, seq);
                self.stats.captures += 1;
                self.stats.bytes += loc.len;
                self.add_live(loc, true);
            }
            Head::Delete { seq } => {
                self.next_seq = self.next_seq.max(seq.saturating_add(1));
                self.remove_capture(seq);
            }
            Head::Receipt { receipt_id, target } => {
                if let Target::Seq(seq) = target {
                    self.next_seq = self.next_seq.max(seq.saturating_add(1));
                    self.remove_capture(seq);
                }
                if let Some(receipt) = receipt {
                    if let Some(old) = self.receipts.remove(&receipt_id) {
                        self.add_live(old.loc, false);
                    }
                    self.receipts.insert(receipt_id, ReceiptEntry { receipt, loc });
                    self.add_live(loc, true);
                }
                self.stats.receipts_pending = self.receipts.len() as u64;
            }
            Head::ReceiptAck { receipt_id } => {
                if let Some(old) = self.receipts.remove(&receipt_id) {
                    self.add_live(old.loc, false);
                }
                self.stats.receipts_pending = self.receipts.len() as u64;
            }
        }
        if let Some(segment) = self.segments.get_mut(&loc.segment) {
            segment.len = segment.len.max(loc.offset + loc.len);
        }
    }

    /// The heap the index holds, estimated from its collections: every entry's key and value
    /// plus the B-tree's and hash table's own overhead (about a third more for B-tree nodes, a
    /// control byte per hash bucket and the table's spare capacity).
    pub fn heap_bytes(&self) -> u64 {
        use std::mem::size_of;
        let btree = |n: usize, item: usize| (n * item * 4).div_ceil(3);
        let entries = btree(self.entries.len(), size_of::<(u64, Entry)>());
        let by_value = btree(self.by_value.len(), size_of::<(ValueClass, u64)>());
        let ids = self.ids.capacity() * (size_of::<(Uuid, u64)>() + 1);
        let receipts = btree(self.receipts.len(), size_of::<(Uuid, ReceiptEntry)>());
        let segments = btree(self.segments.len(), size_of::<(u64, SegmentInfo)>());
        (entries + by_value + ids + receipts + segments) as u64
    }

    fn add_live(&mut self, loc: Loc, add: bool) {
        if let Some(segment) = self.segments.get_mut(&loc.segment) {
            if add {
                segment.live += loc.len;
            } else {
                segment.live -= loc.len;
            }
        }
    }

    fn remove_capture(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        self.by_value.remove(&(entry.class, seq));
        if self.ids.get(&entry.capture_id) == Some(&seq) {
            self.ids.remove(&entry.capture_id);
        }
        self.stats.captures -= 1;
        self.stats.bytes -= entry.loc.len;
        self.add_live(entry.loc, false);
        Some(entry)
    }

    pub fn eviction_order(&self) -> impl Iterator<Item = Candidate> + '_ {
        self.by_value.iter().map(|&(class, seq)| Candidate { class, seq, bytes: self.entries[&seq].loc.len })
    }

    /// Bytes on disk and bytes the index points at, over every segment.
    pub fn disk_and_live(&self) -> (u64, u64) {
        self.segments.values().fold((0, 0), |(d, l), s| (d + s.len, l + s.live))
    }

    /// Per value class: captures, their record bytes and the oldest one's capture time.
    pub fn by_class(&self) -> Vec<ClassFill> {
        let mut out: Vec<ClassFill> = Vec::new();
        for e in self.entries.values() {
            match out.iter_mut().find(|c| c.class == e.class) {
                Some(c) => {
                    c.captures += 1;
                    c.bytes += e.loc.len;
                    c.oldest = c.oldest.min(e.captured_at);
                }
                None => out.push(ClassFill {
                    class: e.class,
                    captures: 1,
                    bytes: e.loc.len,
                    oldest: e.captured_at,
                }),
            }
        }
        out.sort_by_key(|c| c.class);
        out
    }
}

//! Tests of the capture buffer: appends, eviction by value with receipts, the size bound,
//! checksums, damaged and torn records, compaction, retention and crash recovery; and the
//! capture helper other modules' tests feed the buffer with.

use super::*;

use bytes::Bytes;

/// A capture of `image` taken now. Its timestamps always carry nine digits of nanoseconds
/// (serde writes 0, 3, 6 or 9, as the value needs), so every such capture of the same image
/// has the same record length, whatever the clock said.
pub(crate) fn capture(image: &[u8]) -> Capture {
    use chrono::Timelike;
    let mut c = Capture::synthetic("site-a", 1, "front", Bytes::copy_from_slice(image));
    let t = c.meta.captured_at;
    let t = t.with_nanosecond(t.nanosecond() | 1).expect("a nanosecond count below one second");
    (c.meta.captured_at, c.meta.detected_at) = (t, t);
    c
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
    let (a, mut b, c) = (capture(b"aaa"), capture(b"bbbb"), capture(b"c"));
    // a traced capture's context is stored with it, for the upload that continues its trace
    b.meta.trace_parent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
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
    let stat = classed(ValueClass::Statistics, &[7u8; 1000]);
    let old = capture(&[7u8; 1000]);
    let newer = capture(&[7u8; 1000]);
    let viol = classed(ValueClass::ViolationCandidate, &[7u8; 1000]);
    let late = capture(&[7u8; 1000]);
    let refused = classed(ValueClass::Statistics, &[7u8; 1000]);
    // room for the three longest records, not for four of the shortest
    let all = [&stat, &old, &newer, &viol, &late, &refused];
    let lens = all.map(record_len);
    let (longest, shortest) = (*lens.iter().max().unwrap(), *lens.iter().min().unwrap());
    let max = longest * 3 + 10;
    assert!(max < shortest * 4);
    let buf = Buffer::open(&dir.path().join("b"), opts(max)).unwrap();
    for c in [&stat, &old, &newer] {
        buf.append(c).unwrap();
    }
    buf.append(&viol).unwrap();
    assert_eq!(ids(&buf), vec![old.meta.capture_id, newer.meta.capture_id, viol.meta.capture_id]);
    buf.append(&late).unwrap();
    assert_eq!(ids(&buf), vec![newer.meta.capture_id, viol.meta.capture_id, late.meta.capture_id]);
    let err = buf.append(&refused).unwrap_err();
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
    assert_eq!((receipt.capture_id, receipt.reason, receipt.bytes), (None, DeletionReason::Damaged, b_len));
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
    // room for any one of the captures and never for two: each append evicts the one before
    let caps: Vec<Capture> = (0..3).map(|_| capture(&[0; 100])).collect();
    let max = caps.iter().map(record_len).max().unwrap() + 1;
    assert!(max < 2 * caps.iter().map(record_len).min().unwrap());
    {
        let buf = Buffer::open(&path, opts(max)).unwrap();
        for c in &caps {
            buf.append(c).unwrap();
        }
        assert_eq!(buf.stats().receipts_pending, 2);
    }
    let buf = Buffer::open(&path, opts(max)).unwrap();
    assert_eq!(buf.stats().receipts_pending, 2);
    let receipts = buf.receipts(10).unwrap();
    assert_eq!(receipts.len(), 2);
    assert!(receipts[0].receipt_id < receipts[1].receipt_id, "oldest first");
    assert_eq!(buf.ack_receipts(&[receipts[0].receipt_id, Uuid::now_v7()]).unwrap(), 1);
    drop(buf);
    let buf = Buffer::open(&path, opts(max)).unwrap();
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

#[test]
fn the_index_memory_grows_with_its_captures_and_falls_back_when_they_go() {
    let dir = tempfile::tempdir().unwrap();
    let buf = Buffer::open(&dir.path().join("b"), opts(1 << 24)).unwrap();
    let empty = buf.index_bytes();
    for i in 0..100u8 {
        buf.append(&capture(&[i; 64])).unwrap();
    }
    let full = buf.index_bytes();
    // every capture costs at least its index entry, its place in the eviction order and its id
    let per_capture = std::mem::size_of::<(u64, index::Entry)>() + std::mem::size_of::<(Uuid, u64)>();
    assert!(full >= empty + 100 * per_capture as u64, "{empty} -> {full}");
    while let Some((_, c)) = buf.next_by_priority(&HashSet::new()).unwrap() {
        assert!(buf.delete(c.meta.capture_id).unwrap());
    }
    assert!(buf.index_bytes() < full, "acked captures leave the index: {}", buf.index_bytes());
}

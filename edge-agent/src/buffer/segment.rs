//! The buffer's on-disk format: segment files of checksummed records, how one is written,
//! read back, and scanned at recovery (torn tails truncated, damaged regions skipped). The layout
//! is documented in the parent module; this file is its only reader and writer.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Capture, CaptureMeta, ValueClass};

pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"LWSEG\0\0\x01";
/// Magic, base sequence number, CRC-32 of both, four zero bytes.
pub(super) const SEGMENT_HEADER: u64 = 24;
pub(super) const RECORD_MAGIC: [u8; 4] = *b"LWR\x01";
pub(super) const RECORD_HEADER: usize = 56;
/// Bytes read at once while looking for the next intact header after a damaged one.
const RESYNC_WINDOW: usize = 1 << 20;

const KIND_CAPTURE: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_RECEIPT: u8 = 3;
const KIND_RECEIPT_ACK: u8 = 4;

const TARGET_NONE: u8 = 0;
const TARGET_SEQ: u8 = 1;
const TARGET_REGION: u8 = 2;

/// What a deletion receipt record also deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// Nothing (a receipt copied forward by compaction).
    None,
    /// The capture with this sequence number (evicted, expired or damaged).
    Seq(u64),
    /// A damaged region found at recovery, whose header was unreadable: segment id and offset.
    Region { segment: u64, offset: u64 },
}

/// A record header: everything recovery needs, without the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Head {
    /// Payload: 4-byte big-endian length `n`, `n` bytes of JSON [`CaptureMeta`], the image.
    Capture { seq: u64, capture_id: Uuid, class: ValueClass, captured_at: DateTime<Utc> },
    /// Deletes capture `seq` (acked by the control plane). No payload.
    Delete { seq: u64 },
    /// Payload: JSON [`crate::domain::DeletionReceipt`].
    Receipt { receipt_id: Uuid, target: Target },
    /// Deletes receipt `receipt_id` (acked by the control plane). No payload.
    ReceiptAck { receipt_id: Uuid },
}

/// A header as read from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Decoded {
    pub head: Head,
    pub payload_len: u32,
    pub payload_crc: u32,
}

impl Decoded {
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER as u64 + u64::from(self.payload_len)
    }
}

pub(super) fn class_code(class: ValueClass) -> u8 {
    match class {
        ValueClass::Statistics => 0,
        ValueClass::Compliant => 1,
        ValueClass::ViolationCandidate => 2,
    }
}

fn class_from_code(code: u8) -> Option<ValueClass> {
    ValueClass::ALL.into_iter().find(|c| class_code(*c) == code)
}

/// Appends one record (header and payload) to `out`.
pub(super) fn encode_record(out: &mut Vec<u8>, head: &Head, payload: &[&[u8]]) {
    let payload_len: usize = payload.iter().map(|p| p.len()).sum();
    let mut crc = crc32fast::Hasher::new();
    for part in payload {
        crc.update(part);
    }
    let mut h = [0u8; RECORD_HEADER];
    h[..4].copy_from_slice(&RECORD_MAGIC);
    h[8..12].copy_from_slice(&crc.finalize().to_be_bytes());
    h[16..20].copy_from_slice(&u32::try_from(payload_len).expect("record under 4 GiB").to_be_bytes());
    let (kind, aux, a, b, id) = match *head {
        Head::Capture { seq, capture_id, class, captured_at } => {
            (KIND_CAPTURE, class_code(class), seq, captured_at.timestamp_millis() as u64, capture_id)
        }
        Head::Delete { seq } => (KIND_DELETE, 0, seq, 0, Uuid::nil()),
        Head::Receipt { receipt_id, target } => match target {
            Target::None => (KIND_RECEIPT, TARGET_NONE, 0, 0, receipt_id),
            Target::Seq(seq) => (KIND_RECEIPT, TARGET_SEQ, seq, 0, receipt_id),
            Target::Region { segment, offset } => (KIND_RECEIPT, TARGET_REGION, segment, offset, receipt_id),
        },
        Head::ReceiptAck { receipt_id } => (KIND_RECEIPT_ACK, 0, 0, 0, receipt_id),
    };
    h[12] = kind;
    h[13] = aux;
    h[24..32].copy_from_slice(&a.to_be_bytes());
    h[32..40].copy_from_slice(&b.to_be_bytes());
    h[40..56].copy_from_slice(&id.as_u128().to_be_bytes());
    let header_crc = crc32fast::hash(&h[8..]);
    h[4..8].copy_from_slice(&header_crc.to_be_bytes());
    out.reserve(RECORD_HEADER + payload_len);
    out.extend_from_slice(&h);
    for part in payload {
        out.extend_from_slice(part);
    }
}

/// Decodes a header; `None` when the magic, the header checksum or a field is wrong.
pub(super) fn decode_header(h: &[u8]) -> Option<Decoded> {
    let h: &[u8; RECORD_HEADER] = h.get(..RECORD_HEADER)?.try_into().ok()?;
    let be32 = |r: std::ops::Range<usize>| u32::from_be_bytes(h[r].try_into().expect("4 bytes"));
    let be64 = |r: std::ops::Range<usize>| u64::from_be_bytes(h[r].try_into().expect("8 bytes"));
    if h[..4] != RECORD_MAGIC || be32(4..8) != crc32fast::hash(&h[8..]) {
        return None;
    }
    let (a, b) = (be64(24..32), be64(32..40));
    let id = Uuid::from_u128(u128::from_be_bytes(h[40..56].try_into().expect("16 bytes")));
    let head = match h[12] {
        KIND_CAPTURE => Head::Capture {
            seq: a,
            capture_id: id,
            class: class_from_code(h[13])?,
            captured_at: DateTime::from_timestamp_millis(b as i64)?,
        },
        KIND_DELETE => Head::Delete { seq: a },
        KIND_RECEIPT => Head::Receipt {
            receipt_id: id,
            target: match h[13] {
                TARGET_NONE => Target::None,
                TARGET_SEQ => Target::Seq(a),
                TARGET_REGION => Target::Region { segment: a, offset: b },
                _ => return None,
            },
        },
        KIND_RECEIPT_ACK => Head::ReceiptAck { receipt_id: id },
        _ => return None,
    };
    Some(Decoded { head, payload_len: be32(16..20), payload_crc: be32(8..12) })
}

/// Serializes a capture's payload parts: the length-prefixed JSON meta and the image.
pub(super) fn capture_payload(capture: &Capture) -> ([u8; 4], Vec<u8>) {
    let meta = serde_json::to_vec(&capture.meta).expect("capture meta serializes");
    ((meta.len() as u32).to_be_bytes(), meta)
}

/// Record length of a capture as stored: header, meta length, meta and image.
pub(super) fn capture_record_len(capture: &Capture) -> u64 {
    let meta = serde_json::to_vec(&capture.meta).expect("capture meta serializes");
    (RECORD_HEADER + 4 + meta.len() + capture.image.len()) as u64
}

/// Checks a whole record read from disk (header, payload checksum) and returns its payload.
pub(super) fn verify(record: &[u8]) -> Result<(Decoded, &[u8]), String> {
    let decoded = decode_header(record).ok_or("record header damaged")?;
    let payload = &record[RECORD_HEADER..];
    if payload.len() as u64 != u64::from(decoded.payload_len) {
        return Err(format!(
            "record of {} payload bytes, header says {}",
            payload.len(),
            decoded.payload_len
        ));
    }
    let actual = crc32fast::hash(payload);
    if actual != decoded.payload_crc {
        return Err(format!("checksum mismatch: stored {:08x}, computed {actual:08x}", decoded.payload_crc));
    }
    Ok((decoded, payload))
}

/// Decodes a verified capture payload.
pub(super) fn decode_capture(payload: &[u8]) -> Result<Capture, String> {
    let len_bytes: [u8; 4] = payload.get(..4).and_then(|b| b.try_into().ok()).ok_or("short record")?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let meta_bytes = payload.get(4..4 + len).ok_or("meta length out of range")?;
    let meta: CaptureMeta = serde_json::from_slice(meta_bytes).map_err(|e| e.to_string())?;
    Ok(Capture { meta, image: Bytes::copy_from_slice(&payload[4 + len..]), trace: None })
}

/// Reads `len` bytes at `offset`.
pub(super) fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

pub(super) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

/// Segment ids in `dir`, ascending; other files are ignored.
pub(super) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else { continue };
        if stem.len() == 16
            && let Ok(id) = u64::from_str_radix(stem, 16)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Makes creations, renames and removals in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates segment `id` with its header, durably (the file, then the directory entry).
pub(super) fn create_segment(dir: &Path, id: u64, base_seq: u64) -> io::Result<File> {
    let path = segment_path(dir, id);
    let file = File::options().read(true).write(true).create_new(true).open(&path)?;
    let mut h = [0u8; SEGMENT_HEADER as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..16].copy_from_slice(&base_seq.to_be_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..20].copy_from_slice(&crc.to_be_bytes());
    file.write_all_at(&h, 0)?;
    file.sync_data()?;
    sync_dir(dir)?;
    Ok(file)
}

/// One item found by [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Item {
    /// An intact header (the payload is checked when it is read).
    Record { offset: u64, decoded: Decoded },
    /// Bytes whose header is unreadable, up to the next intact header or the end.
    Damaged { offset: u64, len: u64 },
}

/// What a segment holds, headers only.
#[derive(Debug)]
pub(super) struct Scan {
    /// From the segment header; `None` when that header is damaged.
    pub base_seq: Option<u64>,
    pub items: Vec<Item>,
    /// End of the last complete record. Beyond it, in the newest segment, is a torn write.
    pub end: u64,
    /// Garbage after `end` (an incomplete record or unreadable bytes).
    pub tail: u64,
}

/// Reads the headers of one segment, seeking from record to record. A header that fails its
/// checksum is skipped by searching forward for the next intact one ([`Item::Damaged`]); a
/// record that runs past the end of the file is where the scan stops (`end`).
pub(super) fn scan(file: &File) -> io::Result<Scan> {
    let file_len = file.metadata()?.len();
    let mut base_seq = None;
    if file_len >= SEGMENT_HEADER {
        let h = read_at(file, 0, SEGMENT_HEADER)?;
        if h[..8] == SEGMENT_MAGIC && h[16..20] == crc32fast::hash(&h[..16]).to_be_bytes() {
            base_seq = Some(u64::from_be_bytes(h[8..16].try_into().expect("8 bytes")));
        }
    }
    let mut items = Vec::new();
    let mut offset = SEGMENT_HEADER.min(file_len);
    let mut header = [0u8; RECORD_HEADER];
    while offset < file_len {
        if file_len - offset < RECORD_HEADER as u64 {
            break;
        }
        file.read_exact_at(&mut header, offset)?;
        match decode_header(&header) {
            Some(decoded) if offset + decoded.record_len() <= file_len => {
                items.push(Item::Record { offset, decoded });
                offset += decoded.record_len();
            }
            // a complete header whose payload the file does not hold: a torn write
            Some(_) => break,
            None => match resync(file, offset + 1, file_len)? {
                Some(next) => {
                    items.push(Item::Damaged { offset, len: next - offset });
                    offset = next;
                }
                None => break,
            },
        }
    }
    Ok(Scan { base_seq, items, end: offset, tail: file_len - offset })
}

/// The offset of the next intact record header at or after `from`.
fn resync(file: &File, from: u64, file_len: u64) -> io::Result<Option<u64>> {
    let mut start = from;
    while start + RECORD_HEADER as u64 <= file_len {
        let len = (file_len - start).min(RESYNC_WINDOW as u64);
        let window = read_at(file, start, len)?;
        for i in 0..=window.len().saturating_sub(RECORD_HEADER) {
            if window[i..i + 4] == RECORD_MAGIC && decode_header(&window[i..]).is_some() {
                return Ok(Some(start + i as u64));
            }
        }
        // the next window overlaps by a header, so none straddles two windows unseen
        start += (window.len() - RECORD_HEADER + 1) as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let t = DateTime::from_timestamp_millis(1_735_689_600_123).unwrap();
        let heads = [
            Head::Capture {
                seq: 7,
                capture_id: Uuid::now_v7(),
                class: ValueClass::ViolationCandidate,
                captured_at: t,
            },
            Head::Delete { seq: u64::MAX },
            Head::Receipt { receipt_id: Uuid::now_v7(), target: Target::None },
            Head::Receipt { receipt_id: Uuid::now_v7(), target: Target::Seq(3) },
            Head::Receipt { receipt_id: Uuid::now_v7(), target: Target::Region { segment: 2, offset: 99 } },
            Head::ReceiptAck { receipt_id: Uuid::now_v7() },
        ];
        for head in heads {
            let mut out = Vec::new();
            encode_record(&mut out, &head, &[b"ab", b"cde"]);
            let (decoded, payload) = verify(&out).unwrap();
            assert_eq!((decoded.head, payload), (head, b"abcde".as_slice()));
            for i in 0..out.len() {
                let mut bad = out.clone();
                bad[i] ^= 0x10;
                assert!(verify(&bad).is_err(), "{head:?}: flipped byte {i} undetected");
            }
        }
    }

    #[test]
    fn scan_skips_a_damaged_header_and_stops_at_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let file = create_segment(dir.path(), 0, 5).unwrap();
        let mut data = Vec::new();
        let mut offsets = Vec::new();
        for seq in 0..3 {
            offsets.push(SEGMENT_HEADER + data.len() as u64);
            encode_record(&mut data, &Head::Delete { seq }, &[&[seq as u8; 300]]);
        }
        let whole = data.len();
        encode_record(&mut data, &Head::Delete { seq: 3 }, &[&[3; 300]]);
        data.truncate(whole + 100); // torn: the header is there, not all of the payload
        data[(offsets[1] - SEGMENT_HEADER) as usize + 30] ^= 1;
        file.write_all_at(&data, SEGMENT_HEADER).unwrap();
        let scan = scan(&file).unwrap();
        assert_eq!(scan.base_seq, Some(5));
        let seqs: Vec<_> = scan
            .items
            .iter()
            .map(|i| match i {
                Item::Record { decoded: Decoded { head: Head::Delete { seq }, .. }, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![Some(0), None, Some(2)]);
        assert_eq!(scan.items[1], Item::Damaged { offset: offsets[1], len: offsets[2] - offsets[1] });
        assert_eq!((scan.end, scan.tail), (SEGMENT_HEADER + whole as u64, 100));
    }
}

//! CoLa-A (STX/ETX) and CoLa-B (0x02020202 + length + XOR checksum) framing and streaming deframers.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Framing;
use super::error::{DeframeError, EncodeError};

/// CoLa-A start of telegram.
pub const STX: u8 = 0x02;
/// CoLa-A end of telegram.
pub const ETX: u8 = 0x03;
/// CoLa-B frame start marker.
pub const COLA_B_MAGIC: [u8; 4] = [0x02, 0x02, 0x02, 0x02];
/// Default maximum payload length accepted by the deframers (a 5-echo LMS5xx scan with RSSI
/// channels in CoLa-A stays well below this).
pub const DEFAULT_MAX_PAYLOAD: usize = 256 * 1024;

/// Wraps a CoLa-A payload in STX/ETX. Fails if the payload itself contains STX or ETX.
pub fn frame_cola_a(payload: &[u8]) -> Result<Bytes, EncodeError> {
    if let Some(offset) = payload.iter().position(|&b| b == STX || b == ETX) {
        return Err(EncodeError::ControlByteInPayload { offset });
    }
    let mut out = BytesMut::with_capacity(payload.len() + 2);
    out.put_u8(STX);
    out.put_slice(payload);
    out.put_u8(ETX);
    Ok(out.freeze())
}

/// Wraps a CoLa-B payload: magic, big-endian u32 length, payload, XOR checksum of the payload.
pub fn frame_cola_b(payload: &[u8]) -> Result<Bytes, EncodeError> {
    let len = u32::try_from(payload.len()).map_err(|_| EncodeError::PayloadTooLong { len: payload.len() })?;
    let mut out = BytesMut::with_capacity(payload.len() + 9);
    out.put_slice(&COLA_B_MAGIC);
    out.put_u32(len);
    out.put_slice(payload);
    out.put_u8(xor_checksum(payload));
    Ok(out.freeze())
}

/// Frames `payload` in the given framing.
pub fn frame(framing: Framing, payload: &[u8]) -> Result<Bytes, EncodeError> {
    match framing {
        Framing::ColaA => frame_cola_a(payload),
        Framing::ColaB => frame_cola_b(payload),
    }
}

/// XOR of all bytes: the CoLa-B checksum.
pub fn xor_checksum(payload: &[u8]) -> u8 {
    payload.iter().fold(0, |acc, b| acc ^ b)
}

/// A streaming deframer: feed it whatever the transport delivered, then drain items.
///
/// Invariants shared by both implementations:
/// * never panics, whatever the input;
/// * the sequence of items depends only on the concatenated input, not on how it was split
///   into [`push`](Deframer::push) calls (as long as items are drained after each push);
/// * memory stays bounded by `max_payload` plus one push when items are drained regularly;
///   garbage is discarded as it is recognised and only counted.
pub trait Deframer {
    /// Which framing this deframer handles.
    fn framing(&self) -> Framing;
    /// Appends received bytes.
    fn push(&mut self, data: &[u8]);
    /// Next complete payload (without framing bytes) or error; `None` when more input is needed.
    fn next_item(&mut self) -> Option<Result<Bytes, DeframeError>>;
    /// Total bytes discarded since creation: garbage (including a run not yet reported),
    /// oversize telegrams and frames with a bad checksum.
    fn garbage_total(&self) -> u64;
    /// Bytes buffered and not yet resolved into an item.
    fn buffered(&self) -> usize;
}

/// Streaming CoLa-A deframer: payloads are the bytes between STX and ETX.
///
/// Bytes outside STX…ETX are garbage. An STX inside an unterminated telegram makes the
/// unterminated part garbage and restarts at the new STX. More than `max_payload` bytes
/// without ETX yield [`DeframeError::Oversize`]; the STX and those bytes are dropped.
#[derive(Debug)]
pub struct ColaADeframer {
    buf: BytesMut,
    max_payload: usize,
    /// Bytes after the STX at `buf[0]` already known to be neither STX nor ETX.
    scanned: usize,
    pending_garbage: usize,
    garbage_total: u64,
}

impl ColaADeframer {
    /// Creates a deframer accepting payloads of at most `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self { buf: BytesMut::new(), max_payload, scanned: 0, pending_garbage: 0, garbage_total: 0 }
    }

    fn skip_garbage(&mut self, n: usize) {
        self.buf.advance(n);
        self.pending_garbage += n;
        self.garbage_total += n as u64;
        self.scanned = 0;
    }

    fn take_pending_garbage(&mut self) -> Option<DeframeError> {
        if self.pending_garbage == 0 {
            return None;
        }
        let bytes = std::mem::take(&mut self.pending_garbage);
        Some(DeframeError::Garbage { framing: Framing::ColaA, bytes })
    }
}

impl Default for ColaADeframer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl Deframer for ColaADeframer {
    fn framing(&self) -> Framing {
        Framing::ColaA
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn next_item(&mut self) -> Option<Result<Bytes, DeframeError>> {
        loop {
            // Align the buffer on an STX.
            match self.buf.iter().position(|&b| b == STX) {
                None => {
                    let n = self.buf.len();
                    if n > 0 {
                        self.skip_garbage(n);
                    }
                    return None;
                }
                Some(0) => {}
                Some(p) => self.skip_garbage(p),
            }
            if let Some(g) = self.take_pending_garbage() {
                return Some(Err(g));
            }
            // buf[0] == STX; scan the payload for ETX / STX within max_payload + 1 bytes.
            let limit = self.buf.len().min(self.max_payload.saturating_add(2));
            let start = 1 + self.scanned;
            let found = self.buf[start.min(limit)..limit]
                .iter()
                .position(|&b| b == ETX || b == STX)
                .map(|i| i + start);
            match found {
                Some(i) if self.buf[i] == ETX => {
                    let mut frame = self.buf.split_to(i + 1).freeze();
                    self.scanned = 0;
                    frame.advance(1);
                    frame.truncate(i - 1);
                    return Some(Ok(frame));
                }
                Some(i) => {
                    // Unterminated telegram followed by a new STX: it is garbage.
                    self.skip_garbage(i);
                    continue;
                }
                None => {
                    let payload_seen = limit - 1;
                    if payload_seen > self.max_payload {
                        self.buf.advance(limit);
                        self.garbage_total += limit as u64;
                        self.scanned = 0;
                        return Some(Err(DeframeError::Oversize {
                            framing: Framing::ColaA,
                            len: payload_seen,
                            max: self.max_payload,
                        }));
                    }
                    self.scanned = payload_seen;
                    return None;
                }
            }
        }
    }

    fn garbage_total(&self) -> u64 {
        self.garbage_total
    }

    fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Streaming CoLa-B deframer: `02 02 02 02`, u32 BE length, payload, XOR checksum.
///
/// Bytes before the magic are garbage. A declared length above `max_payload` yields
/// [`DeframeError::Oversize`] and only the first magic byte is dropped (the search resumes
/// right after it, so a stray 0x02 in front of a real frame costs one spurious report). A checksum mismatch yields [`DeframeError::BadChecksum`] and drops the whole frame.
#[derive(Debug)]
pub struct ColaBDeframer {
    buf: BytesMut,
    max_payload: usize,
    pending_garbage: usize,
    garbage_total: u64,
}

impl ColaBDeframer {
    /// Creates a deframer accepting payloads of at most `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self { buf: BytesMut::new(), max_payload, pending_garbage: 0, garbage_total: 0 }
    }

    fn skip_garbage(&mut self, n: usize) {
        self.buf.advance(n);
        self.pending_garbage += n;
        self.garbage_total += n as u64;
    }
}

impl Default for ColaBDeframer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl Deframer for ColaBDeframer {
    fn framing(&self) -> Framing {
        Framing::ColaB
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn next_item(&mut self) -> Option<Result<Bytes, DeframeError>> {
        // Align on the magic.
        match self.buf.windows(4).position(|w| w == COLA_B_MAGIC) {
            Some(p) => {
                if p > 0 {
                    self.skip_garbage(p);
                }
            }
            None => {
                // Keep a trailing run of (at most 3) 0x02 that may start the magic.
                let keep = self.buf.iter().rev().take(3).take_while(|&&b| b == 0x02).count();
                let n = self.buf.len() - keep;
                if n > 0 {
                    self.skip_garbage(n);
                }
                return None;
            }
        }
        if self.pending_garbage > 0 {
            let bytes = std::mem::take(&mut self.pending_garbage);
            return Some(Err(DeframeError::Garbage { framing: Framing::ColaB, bytes }));
        }
        if self.buf.len() < 8 {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.max_payload {
            // Drop only the first magic byte: a stray 0x02 before a real frame also looks
            // like this, and the real magic must survive.
            self.buf.advance(1);
            self.garbage_total += 1;
            return Some(Err(DeframeError::Oversize { framing: Framing::ColaB, len, max: self.max_payload }));
        }
        let total = 8 + len + 1;
        if self.buf.len() < total {
            return None;
        }
        let mut frame = self.buf.split_to(total).freeze();
        frame.advance(8);
        let expected = frame[len];
        frame.truncate(len);
        let computed = xor_checksum(&frame);
        if computed != expected {
            self.garbage_total += total as u64;
            return Some(Err(DeframeError::BadChecksum { expected, computed, len }));
        }
        Some(Ok(frame))
    }

    fn garbage_total(&self) -> u64 {
        self.garbage_total
    }

    fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// A boxed deframer for the given framing.
pub fn deframer(framing: Framing, max_payload: usize) -> Box<dyn Deframer + Send> {
    match framing {
        Framing::ColaA => Box::new(ColaADeframer::new(max_payload)),
        Framing::ColaB => Box::new(ColaBDeframer::new(max_payload)),
    }
}

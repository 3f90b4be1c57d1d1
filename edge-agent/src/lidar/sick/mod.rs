//! SICK LMS1xx / LMS5xx `LMDscandata` telegram codec (CoLa-A and CoLa-B), no I/O.
//!
//! # Wire formats handled
//!
//! * **CoLa-A** (ASCII, usually TCP 2111): `STX (0x02) payload ETX (0x03)`. The payload is
//!   space-separated tokens: `<type> <name> <fields...>`, e.g. `sSN LMDscandata 1 1 89A27F 0 0 …`.
//!   Numbers are uppercase hex (signed fields as two's complement of their width, floats as
//!   the 8 hex digits of their IEEE-754 bits) unless prefixed with `+`/`-`, which marks
//!   decimal; the parser accepts both (and lowercase hex), the encoder writes hex like the
//!   devices do. Length-prefixed strings are `<hex length> <bytes>` and may contain spaces.
//! * **CoLa-B** (binary, usually TCP 2112): `02 02 02 02`, payload length as big-endian u32,
//!   payload, 1-byte XOR of the payload. The payload is the ASCII `<type> <name> ` (with
//!   trailing space when parameters follow) and then big-endian fixed-width fields:
//!   u16/u32/i16/i32, f32 as IEEE-754, the channel name as 5 raw bytes, length-prefixed
//!   strings as u16 length + bytes.
//!
//! `LMDscandata` field order (both framings): version u16, device number u16, serial u32,
//! device status 2×u8, telegram counter u16, scan counter u16, time since start-up u32 µs,
//! time of transmission u32 µs, digital inputs 2×u8, digital outputs 2×u8, layer angle i16,
//! scan frequency u32 (1/100 Hz), measurement frequency u32 (100 Hz), encoder count u16 +
//! (position u32, speed u16)×n, 16-bit channel count u16 + per channel (name 5 chars, scale
//! f32, offset f32, start angle i32 1/10000°, step u16 1/10000°, count u16, u16×count),
//! 8-bit channel count u16 + the same with u8 data, then the optional blocks, each behind a
//! u16 flag: position (6×f32, rotation type u8, transmit-name u8), device name (string),
//! comment (string), time (year u16, month/day/hour/minute/second u8, µs u32), event (type
//! 4 chars, encoder position u32, time u32 µs, angle i32).
//!
//! Requests encoded: `sRN LMDscandata`, `sEN LMDscandata 1|0`, `sRN DeviceIdent`.
//! Answers parsed: `sSN`/`sRA LMDscandata`, `sEA LMDscandata`, `sRA DeviceIdent`, `sFA`.
//!
//! # Invariants
//!
//! * Nothing here panics on any input; every failure is a typed error
//!   ([`DeframeError`], [`ParseError`], [`EncodeError`]) whose message names the field.
//! * The deframers' output depends only on the byte stream, not on how it was split into
//!   reads; garbage is skipped and reported with a count, oversize payloads (> the
//!   configured maximum) and bad CoLa-B checksums are reported and resynchronised past.
//! * Declared counts are checked against the data actually present; a short channel is
//!   reported as "channel DIST1 declares 761 points but 760 follow". Absent trailing
//!   optional flags (telegram ends early) read as 0; flags other than 0/1 and trailing bytes
//!   after the last field are errors.
//! * Round trip: `parse_telegram(f, &t.payload(f)?) == Ok(t)` for every encodable telegram
//!   in both framings (angles and frequencies are exact on the wire grid: 1/10000°,
//!   1/100 Hz, 100 Hz; floats travel as their IEEE-754 bits).

mod command;
mod error;
mod fields;
mod framing;
mod scan;

#[cfg(test)]
mod tests;

pub use command::{
    DEVICE_IDENT, LMD_SCANDATA, Request, ScanKind, SopasError, Telegram, encode_scan, parse_request,
    parse_telegram,
};
pub use error::{DeframeError, EncodeError, ParseError};
pub use framing::{
    COLA_B_MAGIC, ColaADeframer, ColaBDeframer, DEFAULT_MAX_PAYLOAD, Deframer, ETX, STX, deframer, frame,
    frame_cola_a, frame_cola_b, xor_checksum,
};
pub use scan::{CHANNEL_NAME_LEN, Channel, DateTime, EVENT_TYPE_LEN, Encoder, EventInfo, Position, Scan};

/// The two CoLa framings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// ASCII, STX/ETX delimited.
    ColaA,
    /// Binary, magic + length + XOR checksum.
    ColaB,
}

impl std::fmt::Display for Framing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Framing::ColaA => "cola-a",
            Framing::ColaB => "cola-b",
        })
    }
}

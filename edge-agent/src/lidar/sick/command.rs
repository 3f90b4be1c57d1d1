//! Command layer: the requests the agent sends and the telegrams it receives, in both framings.

use bytes::Bytes;

use super::Framing;
use super::error::{EncodeError, ParseError, lossy};
use super::fields::{AsciiReader, AsciiWriter, BinaryReader, BinaryWriter, FieldReader, FieldWriter};
use super::framing::frame;
use super::scan::{Scan, read_scan, write_scan};

/// Command name of the scan data telegram.
pub const LMD_SCANDATA: &str = "LMDscandata";
/// Command name of the device identification read.
pub const DEVICE_IDENT: &str = "DeviceIdent";

/// A request the agent sends to the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `sRN LMDscandata`: poll exactly one scan (answered by `sRA LMDscandata ...`).
    PollScan,
    /// `sEN LMDscandata 1` / `sEN LMDscandata 0`: start / stop the scan stream
    /// (answered by `sEA LMDscandata 1|0`, then `sSN LMDscandata ...` events).
    SubscribeScans {
        /// `true` subscribes, `false` unsubscribes.
        enabled: bool,
    },
    /// `sRN DeviceIdent`: read device type and firmware version.
    DeviceIdent,
}

impl Request {
    /// Unframed payload in the given framing.
    pub fn payload(&self, framing: Framing) -> Vec<u8> {
        let built = match self {
            Request::PollScan => build(framing, "sRN", LMD_SCANDATA, false, |_| Ok(())),
            Request::DeviceIdent => build(framing, "sRN", DEVICE_IDENT, false, |_| Ok(())),
            Request::SubscribeScans { enabled } => build(framing, "sEN", LMD_SCANDATA, true, |w| {
                w.u8(u8::from(*enabled));
                Ok(())
            }),
        };
        // The bodies above never fail to encode.
        built.unwrap_or_default()
    }

    /// Framed telegram ready to write to the socket.
    pub fn encode(&self, framing: Framing) -> Bytes {
        // Request payloads are fixed ASCII/bytes without STX/ETX and far below 4 GiB.
        frame(framing, &self.payload(framing)).unwrap_or_default()
    }
}

/// Whether an `LMDscandata` telegram is a stream event or a poll answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanKind {
    /// `sSN LMDscandata` (subscribed stream).
    Event,
    /// `sRA LMDscandata` (answer to `sRN LMDscandata`).
    Reply,
}

impl ScanKind {
    fn command_type(self) -> &'static str {
        match self {
            ScanKind::Event => "sSN",
            ScanKind::Reply => "sRA",
        }
    }
}

/// A SOPAS error code from an `sFA` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SopasError(pub u16);

impl SopasError {
    /// The SOPAS name of the code, where known.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 26] = [
            "Sopas_Ok",
            "Sopas_Error_METHODIN_ACCESSDENIED",
            "Sopas_Error_METHODIN_UNKNOWNINDEX",
            "Sopas_Error_VARIABLE_UNKNOWNINDEX",
            "Sopas_Error_LOCALCONDITIONFAILED",
            "Sopas_Error_INVALID_DATA",
            "Sopas_Error_UNKNOWN_ERROR",
            "Sopas_Error_BUFFER_OVERFLOW",
            "Sopas_Error_BUFFER_UNDERFLOW",
            "Sopas_Error_ERROR_UNKNOWN_TYPE",
            "Sopas_Error_VARIABLE_WRITE_ACCESSDENIED",
            "Sopas_Error_UNKNOWN_CMD_FOR_NAMESERVER",
            "Sopas_Error_UNKNOWN_COLA_COMMAND",
            "Sopas_Error_METHODIN_SERVER_BUSY",
            "Sopas_Error_FLEX_OUT_OF_BOUNDS",
            "Sopas_Error_EVENTREG_UNKNOWNINDEX",
            "Sopas_Error_COLA_A_VALUE_OVERFLOW",
            "Sopas_Error_COLA_A_INVALID_CHARACTER",
            "Sopas_Error_OSAI_NO_MESSAGE",
            "Sopas_Error_OSAI_NO_ANSWER_MESSAGE",
            "Sopas_Error_INTERNAL",
            "Sopas_Error_HubAddressCorrupted",
            "Sopas_Error_HubAddressDecoding",
            "Sopas_Error_HubAddressAddressExceeded",
            "Sopas_Error_HubAddressBlankExpected",
            "Sopas_Error_AsyncMethodsAreSuppressed",
        ];
        NAMES.get(usize::from(self.0)).copied()
    }
}

impl std::fmt::Display for SopasError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "sopas error {} ({n})", self.0),
            None => write!(f, "sopas error {}", self.0),
        }
    }
}

/// A telegram received from (or, in a simulator, sent by) the scanner.
#[derive(Debug, Clone, PartialEq)]
pub enum Telegram {
    /// `sSN LMDscandata ...` or `sRA LMDscandata ...`.
    Scan {
        /// Event or poll reply.
        kind: ScanKind,
        /// The decoded scan (boxed: it is far larger than the other variants).
        scan: Box<Scan>,
    },
    /// `sEA LMDscandata 1|0`: subscription state acknowledged.
    ScanSubscription {
        /// Whether the stream is now enabled.
        enabled: bool,
    },
    /// `sRA DeviceIdent <len> <name> <len> <version>`.
    DeviceIdent {
        /// Device type, e.g. `LMS10x_FieldEval`.
        name: String,
        /// Firmware version string, e.g. `V1.36-21.10.2010`.
        version: String,
    },
    /// `sFA <code>`: the device rejected the last request.
    Error(SopasError),
    /// Any other well-formed command (kept so callers can log and skip it).
    Other {
        /// Command type, e.g. `sAN`.
        command_type: String,
        /// Command name, e.g. `mLMPsetscancfg` (empty if none).
        name: String,
    },
}

impl Telegram {
    /// Unframed payload in the given framing.
    pub fn payload(&self, framing: Framing) -> Result<Vec<u8>, EncodeError> {
        match self {
            Telegram::Scan { kind, scan } => {
                build(framing, kind.command_type(), LMD_SCANDATA, true, |w| write_scan(w, scan))
            }
            Telegram::ScanSubscription { enabled } => build(framing, "sEA", LMD_SCANDATA, true, |w| {
                w.u8(u8::from(*enabled));
                Ok(())
            }),
            Telegram::DeviceIdent { name, version } => build(framing, "sRA", DEVICE_IDENT, true, |w| {
                w.flex_str(name, "device ident name")?;
                w.flex_str(version, "device ident version")
            }),
            Telegram::Error(code) => {
                let mut out = b"sFA ".to_vec();
                match framing {
                    Framing::ColaA => out.extend_from_slice(format!("{:X}", code.0).as_bytes()),
                    Framing::ColaB => out.extend_from_slice(&code.0.to_be_bytes()),
                }
                Ok(out)
            }
            Telegram::Other { command_type, name } => {
                let ok = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if command_type.len() != 3 || !ok(command_type) || !ok(name) {
                    return Err(EncodeError::InvalidString {
                        field: "command",
                        reason: "must be alphanumeric",
                    });
                }
                build(framing, command_type, name, false, |_| Ok(()))
            }
        }
    }

    /// Framed telegram.
    pub fn encode(&self, framing: Framing) -> Result<Bytes, EncodeError> {
        frame(framing, &self.payload(framing)?)
    }
}

/// Encodes a scan as a framed `sSN`/`sRA LMDscandata` telegram (for simulators and tests).
pub fn encode_scan(scan: &Scan, kind: ScanKind, framing: Framing) -> Result<Bytes, EncodeError> {
    let payload = build(framing, kind.command_type(), LMD_SCANDATA, true, |w| write_scan(w, scan))?;
    frame(framing, &payload)
}

fn build(
    framing: Framing,
    command_type: &str,
    name: &str,
    has_body: bool,
    body: impl FnOnce(&mut dyn FieldWriter) -> Result<(), EncodeError>,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(command_type.as_bytes());
    if !name.is_empty() {
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
    }
    match framing {
        Framing::ColaA => body(&mut AsciiWriter { out: &mut out })?,
        Framing::ColaB => {
            if has_body {
                out.push(b' ');
            }
            body(&mut BinaryWriter { out: &mut out })?;
        }
    }
    Ok(out)
}

/// A split command header: type (`sSN`), name (`LMDscandata`, possibly empty) and the body.
struct Header<'a> {
    command_type: &'a str,
    name: &'a str,
    body: &'a [u8],
}

fn split_header(payload: &[u8]) -> Result<Header<'_>, ParseError> {
    let bad = || ParseError::BadHeader { header: lossy(payload) };
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    if payload.len() < 3 || payload[0] != b's' || !payload[1..3].iter().all(u8::is_ascii_uppercase) {
        return Err(bad());
    }
    // ASCII-checked above.
    let command_type = std::str::from_utf8(&payload[..3]).map_err(|_| bad())?;
    let rest = &payload[3..];
    if command_type == "sFA" {
        return Ok(Header { command_type, name: "", body: rest });
    }
    let rest = match rest.split_first() {
        None => return Ok(Header { command_type, name: "", body: rest }),
        Some((b' ', r)) => r,
        Some(_) => return Err(bad()),
    };
    let end = rest.iter().position(|b| !word(b)).unwrap_or(rest.len());
    if end == 0 {
        return Err(bad());
    }
    let name = std::str::from_utf8(&rest[..end]).map_err(|_| bad())?;
    let body = match rest[end..].split_first() {
        None => &rest[end..],
        Some((b' ', r)) => r,
        Some(_) => return Err(bad()),
    };
    Ok(Header { command_type, name, body })
}

fn finish<R: FieldReader>(r: &R) -> Result<(), ParseError> {
    if r.at_end() {
        Ok(())
    } else {
        Err(ParseError::TrailingData { context: r.context(), bytes: r.remaining() })
    }
}

fn parse_body<R: FieldReader>(
    command_type: &str,
    name: &str,
    make: impl Fn(&'static str) -> R,
) -> Result<Telegram, ParseError> {
    match (command_type, name) {
        ("sSN" | "sRA", LMD_SCANDATA) => {
            let kind = if command_type == "sSN" { ScanKind::Event } else { ScanKind::Reply };
            let scan = read_scan(&mut make(super::scan::CTX))?;
            Ok(Telegram::Scan { kind, scan: Box::new(scan) })
        }
        ("sEA", LMD_SCANDATA) => {
            let mut r = make("lmdscandata subscription");
            let v = r.u8("subscription state")?;
            finish(&r)?;
            match v {
                0 | 1 => Ok(Telegram::ScanSubscription { enabled: v == 1 }),
                v => Err(ParseError::InvalidFlag {
                    context: r.context(),
                    field: "subscription state",
                    value: v.into(),
                }),
            }
        }
        ("sRA", DEVICE_IDENT) => {
            let mut r = make("deviceident");
            let name = r.flex_str("device ident name")?;
            let version = r.flex_str("device ident version")?;
            finish(&r)?;
            Ok(Telegram::DeviceIdent { name, version })
        }
        _ => Ok(Telegram::Other { command_type: command_type.to_owned(), name: name.to_owned() }),
    }
}

/// Parses one deframed payload (without STX/ETX or CoLa-B header/checksum).
pub fn parse_telegram(framing: Framing, payload: &[u8]) -> Result<Telegram, ParseError> {
    let h = split_header(payload)?;
    if h.command_type == "sFA" {
        return parse_sopas_error(framing, h.body).map(Telegram::Error);
    }
    match framing {
        Framing::ColaA => parse_body(h.command_type, h.name, |ctx| AsciiReader::new(h.body, ctx)),
        Framing::ColaB => parse_body(h.command_type, h.name, |ctx| BinaryReader::new(h.body, ctx)),
    }
}

fn parse_sopas_error(framing: Framing, body: &[u8]) -> Result<SopasError, ParseError> {
    const CTX: &str = "sopas error";
    match framing {
        Framing::ColaA => {
            let mut r = AsciiReader::new(body, CTX);
            let code = r.u16("error code")?;
            finish(&r)?;
            Ok(SopasError(code))
        }
        Framing::ColaB => {
            // Seen as `sFA` + u16 or `sFA ` + u8/u16; accept all of them.
            let body = match body.split_first() {
                Some((b' ', r)) if !r.is_empty() => r,
                _ => body,
            };
            match *body {
                [b] => Ok(SopasError(b.into())),
                [hi, lo] => Ok(SopasError(u16::from_be_bytes([hi, lo]))),
                [] => Err(ParseError::Truncated { context: CTX, field: "error code" }),
                _ => Err(ParseError::TrailingData { context: CTX, bytes: body.len() - 2 }),
            }
        }
    }
}

/// Parses a request payload (the simulator side of [`Request::payload`]).
pub fn parse_request(framing: Framing, payload: &[u8]) -> Result<Request, ParseError> {
    let h = split_header(payload)?;
    let unexpected = || ParseError::UnexpectedCommand { command: format!("{} {}", h.command_type, h.name) };
    let empty_body = match framing {
        Framing::ColaA => h.body.iter().all(|&b| b == b' '),
        Framing::ColaB => h.body.is_empty(),
    };
    match (h.command_type, h.name) {
        ("sRN", LMD_SCANDATA) if empty_body => Ok(Request::PollScan),
        ("sRN", DEVICE_IDENT) if empty_body => Ok(Request::DeviceIdent),
        ("sEN", LMD_SCANDATA) => {
            const CTX: &str = "lmdscandata subscription";
            let v = match framing {
                Framing::ColaA => {
                    let mut r = AsciiReader::new(h.body, CTX);
                    let v = r.u8("subscription state")?;
                    finish(&r)?;
                    v
                }
                Framing::ColaB => {
                    let mut r = BinaryReader::new(h.body, CTX);
                    let v = r.u8("subscription state")?;
                    finish(&r)?;
                    v
                }
            };
            match v {
                0 | 1 => Ok(Request::SubscribeScans { enabled: v == 1 }),
                v => Err(ParseError::InvalidFlag {
                    context: CTX,
                    field: "subscription state",
                    value: v.into(),
                }),
            }
        }
        _ => Err(unexpected()),
    }
}

//! Field-level readers and writers: CoLa-A hex/decimal tokens and CoLa-B big-endian binary.
//!
//! Telegram bodies are described once (in `scan.rs` / `command.rs`) against the
//! [`FieldReader`] / [`FieldWriter`] traits; the two framings only differ here.

use super::error::{EncodeError, ParseError, lossy};

/// Reads typed fields from a telegram body (after the command header).
pub(crate) trait FieldReader {
    fn context(&self) -> &'static str;
    fn u8(&mut self, field: &'static str) -> Result<u8, ParseError>;
    fn u16(&mut self, field: &'static str) -> Result<u16, ParseError>;
    fn u32(&mut self, field: &'static str) -> Result<u32, ParseError>;
    fn i16(&mut self, field: &'static str) -> Result<i16, ParseError>;
    fn i32(&mut self, field: &'static str) -> Result<i32, ParseError>;
    fn f32(&mut self, field: &'static str) -> Result<f32, ParseError>;
    /// A fixed-width string (`len` bytes in CoLa-B, one token in CoLa-A).
    fn fixed_str(&mut self, len: usize, field: &'static str) -> Result<String, ParseError>;
    /// A length-prefixed string (u16 length in CoLa-B, hex length token in CoLa-A).
    fn flex_str(&mut self, field: &'static str) -> Result<String, ParseError>;
    /// Nothing (but, in CoLa-A, spaces) is left.
    fn at_end(&self) -> bool;
    /// Bytes left unparsed.
    fn remaining(&self) -> usize;
}

/// Writes typed fields of a telegram body (after the command header).
pub(crate) trait FieldWriter {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn i16(&mut self, v: i16);
    fn i32(&mut self, v: i32);
    fn f32(&mut self, v: f32);
    fn fixed_str(&mut self, s: &str, len: usize, field: &'static str) -> Result<(), EncodeError>;
    fn flex_str(&mut self, s: &str, field: &'static str) -> Result<(), EncodeError>;
}

fn printable(bytes: &[u8], context: &'static str, field: &'static str) -> Result<String, ParseError> {
    if bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        // All bytes are ASCII, hence valid UTF-8.
        Ok(bytes.iter().map(|&b| char::from(b)).collect())
    } else {
        Err(ParseError::InvalidString { context, field })
    }
}

// ---------------------------------------------------------------------------------------------
// CoLa-A

/// Reads space-separated CoLa-A tokens. Numbers are hex (two's complement of the field width
/// for signed fields) unless they start with `+`/`-`, which marks decimal.
pub(crate) struct AsciiReader<'a> {
    buf: &'a [u8],
    pos: usize,
    context: &'static str,
}

impl<'a> AsciiReader<'a> {
    pub(crate) fn new(buf: &'a [u8], context: &'static str) -> Self {
        Self { buf, pos: 0, context }
    }

    fn skip_spaces(&mut self) {
        while self.pos < self.buf.len() && self.buf[self.pos] == b' ' {
            self.pos += 1;
        }
    }

    pub(crate) fn token(&mut self, field: &'static str) -> Result<&'a [u8], ParseError> {
        self.skip_spaces();
        let start = self.pos;
        while self.pos < self.buf.len() && self.buf[self.pos] != b' ' {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(ParseError::Truncated { context: self.context, field });
        }
        Ok(&self.buf[start..self.pos])
    }

    /// Parses a number token into an unsigned value of `bits` width or a signed one.
    fn number(&mut self, field: &'static str, bits: u32, signed: bool) -> Result<i128, ParseError> {
        let context = self.context;
        let tok = self.token(field)?;
        let bad = || ParseError::InvalidNumber { context, field, token: lossy(tok) };
        let (min, max) = if signed {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        } else {
            (0, (1i128 << bits) - 1)
        };
        match tok[0] {
            b'+' | b'-' => {
                let digits = &tok[1..];
                if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(bad());
                }
                let mut v: i128 = 0;
                for d in digits {
                    v = v * 10 + i128::from(d - b'0');
                }
                if tok[0] == b'-' {
                    v = -v;
                }
                if v < min || v > max {
                    return Err(ParseError::OutOfRange { context, field, value: v });
                }
                Ok(v)
            }
            _ => {
                if tok.len() > 16 || !tok.iter().all(u8::is_ascii_hexdigit) {
                    return Err(bad());
                }
                let mut v: i128 = 0;
                for d in tok {
                    // is_ascii_hexdigit checked above, so to_digit succeeds.
                    let digit = char::from(*d).to_digit(16).ok_or_else(bad)?;
                    v = v * 16 + i128::from(digit);
                }
                let umax = (1i128 << bits) - 1;
                if v > umax {
                    return Err(ParseError::OutOfRange { context, field, value: v });
                }
                if signed && v > max {
                    v -= 1i128 << bits;
                }
                Ok(v)
            }
        }
    }
}

macro_rules! ascii_int {
    ($name:ident, $t:ty, $bits:expr, $signed:expr) => {
        fn $name(&mut self, field: &'static str) -> Result<$t, ParseError> {
            let v = self.number(field, $bits, $signed)?;
            <$t>::try_from(v).map_err(|_| ParseError::OutOfRange { context: self.context, field, value: v })
        }
    };
}

impl FieldReader for AsciiReader<'_> {
    fn context(&self) -> &'static str {
        self.context
    }
    ascii_int!(u8, u8, 8, false);
    ascii_int!(u16, u16, 16, false);
    ascii_int!(u32, u32, 32, false);
    ascii_int!(i16, i16, 16, true);
    ascii_int!(i32, i32, 32, true);

    fn f32(&mut self, field: &'static str) -> Result<f32, ParseError> {
        let context = self.context;
        let save = self.pos;
        let tok = self.token(field)?;
        if matches!(tok[0], b'+' | b'-') {
            let ok = tok.iter().all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
            let parsed = std::str::from_utf8(tok).ok().filter(|_| ok).and_then(|s| s.parse::<f32>().ok());
            return parsed.ok_or_else(|| ParseError::InvalidNumber { context, field, token: lossy(tok) });
        }
        self.pos = save;
        let bits = self.number(field, 32, false)?;
        let bits = u32::try_from(bits).map_err(|_| ParseError::OutOfRange { context, field, value: bits })?;
        Ok(f32::from_bits(bits))
    }

    fn fixed_str(&mut self, _len: usize, field: &'static str) -> Result<String, ParseError> {
        let tok = self.token(field)?;
        printable(tok, self.context, field)
    }

    fn flex_str(&mut self, field: &'static str) -> Result<String, ParseError> {
        let len = usize::from(self.u16(field)?);
        if len == 0 {
            return Ok(String::new());
        }
        // Exactly one separator, then `len` raw bytes (which may contain spaces).
        if self.pos >= self.buf.len() || self.buf[self.pos] != b' ' {
            return Err(ParseError::Truncated { context: self.context, field });
        }
        let start = self.pos + 1;
        let end = start.checked_add(len).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(ParseError::Truncated { context: self.context, field });
        };
        if end < self.buf.len() && self.buf[end] != b' ' {
            return Err(ParseError::InvalidString { context: self.context, field });
        }
        self.pos = end;
        printable(&self.buf[start..end], self.context, field)
    }

    fn at_end(&self) -> bool {
        self.buf[self.pos.min(self.buf.len())..].iter().all(|&b| b == b' ')
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

/// Writes CoLa-A tokens, each preceded by one space, numbers as uppercase hex.
pub(crate) struct AsciiWriter<'a> {
    pub(crate) out: &'a mut Vec<u8>,
}

impl AsciiWriter<'_> {
    fn hex(&mut self, v: u32) {
        self.out.push(b' ');
        self.out.extend_from_slice(format!("{v:X}").as_bytes());
    }
}

fn check_ascii(s: &str, field: &'static str, allow_space: bool) -> Result<(), EncodeError> {
    let ok = s.bytes().all(|b| (0x21..0x7f).contains(&b) || (allow_space && b == b' '));
    if ok { Ok(()) } else { Err(EncodeError::InvalidString { field, reason: "must be printable ascii" }) }
}

impl FieldWriter for AsciiWriter<'_> {
    fn u8(&mut self, v: u8) {
        self.hex(u32::from(v));
    }
    fn u16(&mut self, v: u16) {
        self.hex(u32::from(v));
    }
    fn u32(&mut self, v: u32) {
        self.hex(v);
    }
    fn i16(&mut self, v: i16) {
        self.hex(u32::from(v as u16));
    }
    fn i32(&mut self, v: i32) {
        self.hex(v as u32);
    }
    fn f32(&mut self, v: f32) {
        self.out.push(b' ');
        self.out.extend_from_slice(format!("{:08X}", v.to_bits()).as_bytes());
    }
    fn fixed_str(&mut self, s: &str, len: usize, field: &'static str) -> Result<(), EncodeError> {
        if s.len() != len {
            return Err(EncodeError::InvalidString { field, reason: "wrong length for fixed-width string" });
        }
        check_ascii(s, field, false)?;
        self.out.push(b' ');
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }
    fn flex_str(&mut self, s: &str, field: &'static str) -> Result<(), EncodeError> {
        check_ascii(s, field, true)?;
        let len = u16::try_from(s.len()).map_err(|_| EncodeError::TooMany { field, len: s.len() })?;
        self.u16(len);
        if !s.is_empty() {
            self.out.push(b' ');
            self.out.extend_from_slice(s.as_bytes());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// CoLa-B

/// Reads big-endian fixed-width CoLa-B fields.
pub(crate) struct BinaryReader<'a> {
    buf: &'a [u8],
    pos: usize,
    context: &'static str,
}

impl<'a> BinaryReader<'a> {
    pub(crate) fn new(buf: &'a [u8], context: &'static str) -> Self {
        Self { buf, pos: 0, context }
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ParseError> {
        let bytes = self.bytes(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(ParseError::Truncated { context: self.context, field });
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
}

impl FieldReader for BinaryReader<'_> {
    fn context(&self) -> &'static str {
        self.context
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, ParseError> {
        Ok(self.take::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.take(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.take(field)?))
    }
    fn i16(&mut self, field: &'static str) -> Result<i16, ParseError> {
        Ok(i16::from_be_bytes(self.take(field)?))
    }
    fn i32(&mut self, field: &'static str) -> Result<i32, ParseError> {
        Ok(i32::from_be_bytes(self.take(field)?))
    }
    fn f32(&mut self, field: &'static str) -> Result<f32, ParseError> {
        Ok(f32::from_be_bytes(self.take(field)?))
    }
    fn fixed_str(&mut self, len: usize, field: &'static str) -> Result<String, ParseError> {
        let b = self.bytes(len, field)?;
        printable(b, self.context, field)
    }
    fn flex_str(&mut self, field: &'static str) -> Result<String, ParseError> {
        let len = usize::from(self.u16(field)?);
        let b = self.bytes(len, field)?;
        printable(b, self.context, field)
    }
    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

/// Writes big-endian fixed-width CoLa-B fields.
pub(crate) struct BinaryWriter<'a> {
    pub(crate) out: &'a mut Vec<u8>,
}

impl FieldWriter for BinaryWriter<'_> {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn i16(&mut self, v: i16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn fixed_str(&mut self, s: &str, len: usize, field: &'static str) -> Result<(), EncodeError> {
        if s.len() != len {
            return Err(EncodeError::InvalidString { field, reason: "wrong length for fixed-width string" });
        }
        check_ascii(s, field, false)?;
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }
    fn flex_str(&mut self, s: &str, field: &'static str) -> Result<(), EncodeError> {
        check_ascii(s, field, true)?;
        let len = u16::try_from(s.len()).map_err(|_| EncodeError::TooMany { field, len: s.len() })?;
        self.u16(len);
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

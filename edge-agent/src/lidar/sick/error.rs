//! Typed errors of the SICK CoLa codec: deframing, telegram parsing and encoding.

use super::Framing;

/// Something a [`Deframer`](super::Deframer) reports instead of (or before) a payload.
///
/// None of these is fatal: the deframer has already resynchronised when it reports one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeframeError {
    /// A CoLa-B frame arrived complete, but its XOR checksum does not match; the whole frame
    /// (as delimited by its declared length) was dropped.
    #[error(
        "cola-b: checksum mismatch on {len}-byte payload (telegram says {expected:#04x}, computed {computed:#04x})"
    )]
    BadChecksum {
        /// Checksum byte carried by the frame.
        expected: u8,
        /// XOR over the received payload.
        computed: u8,
        /// Payload length declared in the header.
        len: usize,
    },
    /// A telegram's payload exceeds the configured maximum. For CoLa-B `len` is the declared
    /// length; for CoLa-A it is the number of bytes seen without an ETX (`max + 1`).
    #[error("{framing}: telegram payload of {len} bytes exceeds maximum of {max}")]
    Oversize {
        /// Framing of the deframer that saw it.
        framing: Framing,
        /// Declared (CoLa-B) or observed (CoLa-A) payload length.
        len: usize,
        /// Configured maximum payload length.
        max: usize,
    },
    /// A run of bytes that belongs to no telegram (noise, a half telegram from before a
    /// reconnect, an unterminated CoLa-A telegram) was skipped. Reported once the next
    /// telegram start is found, so the report does not depend on how reads were split.
    #[error("{framing}: skipped {bytes} garbage bytes before the next telegram")]
    Garbage {
        /// Framing of the deframer that saw it.
        framing: Framing,
        /// Number of bytes skipped in this run.
        bytes: usize,
    },
}

/// Why a telegram payload could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The payload ended while `field` was still expected.
    #[error("{context}: telegram ends before field {field}")]
    Truncated {
        /// Telegram being parsed (`lmdscandata`, `deviceident`, ...).
        context: &'static str,
        /// Name of the missing field.
        field: &'static str,
    },
    /// A CoLa-A token is not a number of the expected form.
    #[error("{context}: field {field}: invalid number token {token:?}")]
    InvalidNumber {
        /// Telegram being parsed.
        context: &'static str,
        /// Field the token was meant for.
        field: &'static str,
        /// The offending token (lossily decoded, at most 32 bytes).
        token: String,
    },
    /// A number does not fit the field's wire type.
    #[error("{context}: field {field}: value {value} out of range")]
    OutOfRange {
        /// Telegram being parsed.
        context: &'static str,
        /// Field name.
        field: &'static str,
        /// The decoded value.
        value: i128,
    },
    /// A data channel declares more points than the telegram holds.
    #[error("{context}: channel {channel} declares {declared} points but {available} follow")]
    ChannelLength {
        /// Telegram being parsed.
        context: &'static str,
        /// Channel name, e.g. `DIST1`.
        channel: String,
        /// Declared number of data points.
        declared: usize,
        /// Number of points actually present.
        available: usize,
    },
    /// A block count (encoders, channels) declares more entries than the telegram holds.
    #[error("{context}: field {field} declares {declared} entries but {available} follow")]
    BlockCount {
        /// Telegram being parsed.
        context: &'static str,
        /// Count field name.
        field: &'static str,
        /// Declared count.
        declared: usize,
        /// Complete entries present.
        available: usize,
    },
    /// An optional-block flag holds something other than 0 or 1.
    #[error("{context}: field {field}: flag value {value} is neither 0 nor 1")]
    InvalidFlag {
        /// Telegram being parsed.
        context: &'static str,
        /// Flag field name.
        field: &'static str,
        /// The value found.
        value: u16,
    },
    /// A string field is not printable ASCII.
    #[error("{context}: field {field}: not printable ascii")]
    InvalidString {
        /// Telegram being parsed.
        context: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// Bytes remain after the last field of the telegram.
    #[error("{context}: {bytes} unexpected trailing bytes after the last field")]
    TrailingData {
        /// Telegram being parsed.
        context: &'static str,
        /// Number of unparsed bytes.
        bytes: usize,
    },
    /// The payload does not start with a recognisable `<type> <name>` command header.
    #[error("telegram: malformed command header {header:?}")]
    BadHeader {
        /// The header bytes (lossily decoded, at most 32 bytes).
        header: String,
    },
    /// A well-formed telegram that is not one this codec expected here.
    #[error("telegram: unexpected command {command:?}")]
    UnexpectedCommand {
        /// `<type> <name>` of the telegram.
        command: String,
    },
}

/// Why a value could not be encoded into a telegram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A numeric value does not fit the wire field (or is not finite).
    #[error("encode: field {field}: value {value} does not fit the wire type")]
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// The value, formatted.
        value: String,
    },
    /// A string field has the wrong length or characters for the wire format.
    #[error("encode: field {field}: {reason}")]
    InvalidString {
        /// Field name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A list is longer than its 16-bit count field allows.
    #[error("encode: field {field}: {len} entries exceed the 16-bit count")]
    TooMany {
        /// Count field name.
        field: &'static str,
        /// Number of entries.
        len: usize,
    },
    /// The CoLa-A payload contains STX or ETX, so it cannot be framed.
    #[error("encode: cola-a payload contains a stx/etx byte at offset {offset}")]
    ControlByteInPayload {
        /// Offset of the offending byte.
        offset: usize,
    },
    /// The payload is longer than the 32-bit CoLa-B length field allows.
    #[error("encode: cola-b payload of {len} bytes exceeds the 32-bit length field")]
    PayloadTooLong {
        /// Payload length.
        len: usize,
    },
}

pub(crate) fn lossy(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(32)];
    String::from_utf8_lossy(cut).into_owned()
}

//! The `LMDscandata` telegram body: domain types, parser and encoder (framing-independent).

use super::error::{EncodeError, ParseError};
use super::fields::{FieldReader, FieldWriter};

pub(crate) const CTX: &str = "lmdscandata";

/// Length of a channel content name on the wire (`DIST1`, `RSSI1`, `ANGL1`, ...).
pub const CHANNEL_NAME_LEN: usize = 5;
/// Length of the event type string (`FDIN`).
pub const EVENT_TYPE_LEN: usize = 4;

/// One encoder entry of the encoder block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encoder {
    /// Encoder position, ticks.
    pub position: u32,
    /// Encoder speed, ticks/mm.
    pub speed: u16,
}

/// One output channel (`DIST*`, `RSSI*`, ...). 16-bit channels use `Channel<u16>` (the
/// default), 8-bit channels `Channel<u8>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel<T = u16> {
    /// Content name, 5 ASCII characters, e.g. `DIST1`, `RSSI1`.
    pub name: String,
    /// Scale factor (wire: IEEE-754 f32).
    pub scale: f32,
    /// Scale offset (wire: IEEE-754 f32).
    pub offset: f32,
    /// Start angle in degrees (wire: i32, 1/10000°).
    pub start_angle_deg: f64,
    /// Angular step in degrees (wire: u16, 1/10000°).
    pub angular_step_deg: f64,
    /// Raw data values.
    pub values: Vec<T>,
}

impl<T: Copy + Into<f64>> Channel<T> {
    /// Whether this is a distance channel (`DIST1`…`DIST5`).
    pub fn is_distance(&self) -> bool {
        self.name.starts_with("DIST")
    }

    /// Scaled values: `value * scale + offset` (millimetres for DIST channels).
    pub fn scaled(&self) -> impl Iterator<Item = f64> + '_ {
        let (s, o) = (f64::from(self.scale), f64::from(self.offset));
        self.values.iter().map(move |&v| v.into() * s + o)
    }

    /// Values converted to metres (`(value * scale + offset) / 1000`); meaningful for DIST
    /// channels, whose scaled unit is mm. A raw value of 0 means "no echo" on LMS1xx/5xx
    /// and is passed through as `offset / 1000` — filter on [`Channel::values`] if needed.
    pub fn distances_m(&self) -> Vec<f64> {
        self.scaled().map(|mm| mm / 1000.0).collect()
    }

    /// Angle in degrees of the point with index `i`.
    pub fn angle_deg(&self, i: usize) -> f64 {
        self.start_angle_deg + self.angular_step_deg * i as f64
    }
}

/// Optional sensor mounting position block.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Position {
    /// X position.
    pub x: f32,
    /// Y position.
    pub y: f32,
    /// Z position.
    pub z: f32,
    /// Rotation about X.
    pub rot_x: f32,
    /// Rotation about Y.
    pub rot_y: f32,
    /// Rotation about Z.
    pub rot_z: f32,
    /// Type of rotation (enum8).
    pub rotation_type: u8,
    /// "Transmit device name" byte of the position block (enum8).
    pub transmit_name: u8,
}

/// Optional time-info block (device clock at the scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DateTime {
    /// Year (e.g. 2024).
    pub year: u16,
    /// Month 1–12.
    pub month: u8,
    /// Day 1–31.
    pub day: u8,
    /// Hour 0–23.
    pub hour: u8,
    /// Minute 0–59.
    pub minute: u8,
    /// Second 0–59.
    pub second: u8,
    /// Microseconds within the second.
    pub microsecond: u32,
}

/// Optional event-info block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventInfo {
    /// Event type, 4 ASCII characters (e.g. `FDIN`).
    pub kind: String,
    /// Encoder position at the event.
    pub encoder_position: u32,
    /// Time of the event, µs.
    pub time_us: u32,
    /// Angle of the event (raw, 1/10000°).
    pub angle: i32,
}

/// A fully decoded `LMDscandata` telegram.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scan {
    /// Telegram version number.
    pub version: u16,
    /// Device number.
    pub device_number: u16,
    /// Device serial number.
    pub serial_number: u32,
    /// Device status, 2 bytes (`[0, 0]` = OK).
    pub device_status: [u8; 2],
    /// Telegram counter.
    pub telegram_counter: u16,
    /// Scan counter.
    pub scan_counter: u16,
    /// Time since start-up, µs.
    pub device_time_us: u32,
    /// Time of transmission, µs.
    pub transmission_time_us: u32,
    /// Status of the digital inputs, 2 bytes.
    pub digital_inputs: [u8; 2],
    /// Status of the digital outputs, 2 bytes.
    pub digital_outputs: [u8; 2],
    /// Layer angle (LMS1xx: reserved, 0), raw.
    pub layer_angle: i16,
    /// Scan frequency in Hz (wire: u32, 1/100 Hz).
    pub scan_frequency_hz: f64,
    /// Measurement (shot) frequency in Hz (wire: u32, units of 100 Hz).
    pub measurement_frequency_hz: f64,
    /// Encoder block.
    pub encoders: Vec<Encoder>,
    /// Start angle of the first 16-bit channel in degrees (0 if there is none); derived on
    /// parse, ignored on encode (each channel carries its own).
    pub start_angle_deg: f64,
    /// Angular step of the first 16-bit channel in degrees (0 if none); derived, see above.
    pub angular_step_deg: f64,
    /// 16-bit output channels.
    pub channels: Vec<Channel<u16>>,
    /// 8-bit output channels.
    pub channels_8bit: Vec<Channel<u8>>,
    /// Position block, if flagged.
    pub position: Option<Position>,
    /// Device name, if flagged.
    pub device_name: Option<String>,
    /// Comment, if flagged.
    pub comment: Option<String>,
    /// Time info, if flagged.
    pub time: Option<DateTime>,
    /// Event info, if flagged.
    pub event: Option<EventInfo>,
}

impl Scan {
    /// First channel with this name (`DIST1`, `RSSI1`, ...).
    pub fn channel(&self, name: &str) -> Option<&Channel<u16>> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// Distances in metres of the named 16-bit DIST channel; `None` if absent or not DIST.
    pub fn distances_m(&self, name: &str) -> Option<Vec<f64>> {
        self.channel(name).filter(|c| c.is_distance()).map(Channel::distances_m)
    }

    /// Sets `start_angle_deg` / `angular_step_deg` from the first 16-bit channel.
    pub fn sync_angles_from_channels(&mut self) {
        let (start, step) =
            self.channels.first().map_or((0.0, 0.0), |c| (c.start_angle_deg, c.angular_step_deg));
        self.start_angle_deg = start;
        self.angular_step_deg = step;
    }
}

fn flag<R: FieldReader>(r: &mut R, field: &'static str) -> Result<Option<bool>, ParseError> {
    if r.at_end() {
        return Ok(None);
    }
    match r.u16(field)? {
        0 => Ok(Some(false)),
        1 => Ok(Some(true)),
        value => Err(ParseError::InvalidFlag { context: CTX, field, value }),
    }
}

fn block_count(e: ParseError, field: &'static str, declared: usize, available: usize) -> ParseError {
    match e {
        ParseError::Truncated { .. } => ParseError::BlockCount { context: CTX, field, declared, available },
        other => other,
    }
}

fn read_channel<R: FieldReader, T>(
    r: &mut R,
    mut value: impl FnMut(&mut R) -> Result<T, ParseError>,
) -> Result<Channel<T>, ParseError> {
    let name = r.fixed_str(CHANNEL_NAME_LEN, "channel content")?;
    let scale = r.f32("scale factor")?;
    let offset = r.f32("scale offset")?;
    let start = r.i32("start angle")?;
    let step = r.u16("angular step")?;
    let declared = usize::from(r.u16("number of data")?);
    let mut values = Vec::with_capacity(declared);
    for i in 0..declared {
        match value(r) {
            Ok(v) => values.push(v),
            Err(ParseError::Truncated { .. }) => {
                return Err(ParseError::ChannelLength {
                    context: CTX,
                    channel: name,
                    declared,
                    available: i,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Channel {
        name,
        scale,
        offset,
        start_angle_deg: f64::from(start) / 10_000.0,
        angular_step_deg: f64::from(step) / 10_000.0,
        values,
    })
}

/// Parses the body of an `LMDscandata` telegram (everything after the command name).
pub(crate) fn read_scan<R: FieldReader>(r: &mut R) -> Result<Scan, ParseError> {
    let mut s = Scan {
        version: r.u16("version number")?,
        device_number: r.u16("device number")?,
        serial_number: r.u32("serial number")?,
        device_status: [r.u8("device status")?, r.u8("device status")?],
        telegram_counter: r.u16("telegram counter")?,
        scan_counter: r.u16("scan counter")?,
        device_time_us: r.u32("time since start-up")?,
        transmission_time_us: r.u32("time of transmission")?,
        digital_inputs: [r.u8("digital inputs")?, r.u8("digital inputs")?],
        digital_outputs: [r.u8("digital outputs")?, r.u8("digital outputs")?],
        layer_angle: r.i16("layer angle")?,
        scan_frequency_hz: f64::from(r.u32("scan frequency")?) / 100.0,
        measurement_frequency_hz: f64::from(r.u32("measurement frequency")?) * 100.0,
        ..Scan::default()
    };

    let n = usize::from(r.u16("amount of encoder")?);
    for i in 0..n {
        let enc = (|| Ok(Encoder { position: r.u32("encoder position")?, speed: r.u16("encoder speed")? }))()
            .map_err(|e| block_count(e, "amount of encoder", n, i))?;
        s.encoders.push(enc);
    }

    let n = usize::from(r.u16("number of 16-bit channels")?);
    for i in 0..n {
        let ch = read_channel(r, |r| r.u16("16-bit channel data"))
            .map_err(|e| block_count(e, "number of 16-bit channels", n, i))?;
        s.channels.push(ch);
    }
    let n = usize::from(r.u16("number of 8-bit channels")?);
    for i in 0..n {
        let ch = read_channel(r, |r| r.u8("8-bit channel data"))
            .map_err(|e| block_count(e, "number of 8-bit channels", n, i))?;
        s.channels_8bit.push(ch);
    }
    s.sync_angles_from_channels();

    // Trailing optional blocks: each is a u16 flag; an absent flag (telegram ends) reads as 0.
    if flag(r, "position flag")? == Some(true) {
        s.position = Some(Position {
            x: r.f32("x position")?,
            y: r.f32("y position")?,
            z: r.f32("z position")?,
            rot_x: r.f32("x rotation")?,
            rot_y: r.f32("y rotation")?,
            rot_z: r.f32("z rotation")?,
            rotation_type: r.u8("rotation type")?,
            transmit_name: r.u8("transmit device name")?,
        });
    }
    if flag(r, "device name flag")? == Some(true) {
        s.device_name = Some(r.flex_str("device name")?);
    }
    if flag(r, "comment flag")? == Some(true) {
        s.comment = Some(r.flex_str("comment")?);
    }
    if flag(r, "time info flag")? == Some(true) {
        s.time = Some(DateTime {
            year: r.u16("year")?,
            month: r.u8("month")?,
            day: r.u8("day")?,
            hour: r.u8("hour")?,
            minute: r.u8("minute")?,
            second: r.u8("second")?,
            microsecond: r.u32("microseconds")?,
        });
    }
    if flag(r, "event info flag")? == Some(true) {
        s.event = Some(EventInfo {
            kind: r.fixed_str(EVENT_TYPE_LEN, "event type")?,
            encoder_position: r.u32("event encoder position")?,
            time_us: r.u32("time of event")?,
            angle: r.i32("angle of event")?,
        });
    }
    if !r.at_end() {
        return Err(ParseError::TrailingData { context: CTX, bytes: r.remaining() });
    }
    Ok(s)
}

fn to_int(v: f64, scale: f64, field: &'static str, min: f64, max: f64) -> Result<f64, EncodeError> {
    let x = (v * scale).round();
    if x.is_finite() && x >= min && x <= max {
        Ok(x)
    } else {
        Err(EncodeError::OutOfRange { field, value: v.to_string() })
    }
}

fn u32_of(v: f64, scale: f64, field: &'static str) -> Result<u32, EncodeError> {
    // Range-checked just above, so the cast is exact.
    Ok(to_int(v, scale, field, 0.0, f64::from(u32::MAX))? as u32)
}

fn count(len: usize, field: &'static str) -> Result<u16, EncodeError> {
    u16::try_from(len).map_err(|_| EncodeError::TooMany { field, len })
}

fn write_channel<W: FieldWriter + ?Sized, T: Copy>(
    w: &mut W,
    c: &Channel<T>,
    mut value: impl FnMut(&mut W, T),
) -> Result<(), EncodeError> {
    w.fixed_str(&c.name, CHANNEL_NAME_LEN, "channel content")?;
    w.f32(c.scale);
    w.f32(c.offset);
    let start = to_int(c.start_angle_deg, 10_000.0, "start angle", f64::from(i32::MIN), f64::from(i32::MAX))?;
    w.i32(start as i32);
    let step = to_int(c.angular_step_deg, 10_000.0, "angular step", 0.0, f64::from(u16::MAX))?;
    w.u16(step as u16);
    w.u16(count(c.values.len(), "number of data")?);
    for &v in &c.values {
        value(w, v);
    }
    Ok(())
}

/// Encodes the body of an `LMDscandata` telegram (everything after the command name).
/// All five trailing flags are always written.
pub(crate) fn write_scan<W: FieldWriter + ?Sized>(w: &mut W, s: &Scan) -> Result<(), EncodeError> {
    w.u16(s.version);
    w.u16(s.device_number);
    w.u32(s.serial_number);
    w.u8(s.device_status[0]);
    w.u8(s.device_status[1]);
    w.u16(s.telegram_counter);
    w.u16(s.scan_counter);
    w.u32(s.device_time_us);
    w.u32(s.transmission_time_us);
    w.u8(s.digital_inputs[0]);
    w.u8(s.digital_inputs[1]);
    w.u8(s.digital_outputs[0]);
    w.u8(s.digital_outputs[1]);
    w.i16(s.layer_angle);
    w.u32(u32_of(s.scan_frequency_hz, 100.0, "scan frequency")?);
    w.u32(u32_of(s.measurement_frequency_hz / 100.0, 1.0, "measurement frequency")?);
    w.u16(count(s.encoders.len(), "amount of encoder")?);
    for e in &s.encoders {
        w.u32(e.position);
        w.u16(e.speed);
    }
    w.u16(count(s.channels.len(), "number of 16-bit channels")?);
    for c in &s.channels {
        write_channel(w, c, |w, v| w.u16(v))?;
    }
    w.u16(count(s.channels_8bit.len(), "number of 8-bit channels")?);
    for c in &s.channels_8bit {
        write_channel(w, c, |w, v| w.u8(v))?;
    }
    match &s.position {
        None => w.u16(0),
        Some(p) => {
            w.u16(1);
            for v in [p.x, p.y, p.z, p.rot_x, p.rot_y, p.rot_z] {
                w.f32(v);
            }
            w.u8(p.rotation_type);
            w.u8(p.transmit_name);
        }
    }
    for (text, field) in [(&s.device_name, "device name"), (&s.comment, "comment")] {
        match text {
            None => w.u16(0),
            Some(t) => {
                w.u16(1);
                w.flex_str(t, field)?;
            }
        }
    }
    match &s.time {
        None => w.u16(0),
        Some(t) => {
            w.u16(1);
            w.u16(t.year);
            for v in [t.month, t.day, t.hour, t.minute, t.second] {
                w.u8(v);
            }
            w.u32(t.microsecond);
        }
    }
    match &s.event {
        None => w.u16(0),
        Some(e) => {
            w.u16(1);
            w.fixed_str(&e.kind, EVENT_TYPE_LEN, "event type")?;
            w.u32(e.encoder_position);
            w.u32(e.time_us);
            w.i32(e.angle);
        }
    }
    Ok(())
}

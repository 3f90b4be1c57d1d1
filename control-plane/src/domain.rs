//! Domain types of the control plane: agents, captures and component states, free of
//! protobuf, SQL and GraphQL; the edges convert to and from these by hand.

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VehicleClass {
    Motorcycle,
    Car,
    Van,
    Truck,
    Bus,
    Unknown,
}

impl VehicleClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Motorcycle => "motorcycle",
            Self::Car => "car",
            Self::Van => "van",
            Self::Truck => "truck",
            Self::Bus => "bus",
            Self::Unknown => "unknown",
        }
    }

    /// Reads the stored text; anything unrecognised is `Unknown`, never an error.
    pub fn from_db(s: &str) -> Self {
        match s {
            "motorcycle" => Self::Motorcycle,
            "car" => Self::Car,
            "van" => Self::Van,
            "truck" => Self::Truck,
            "bus" => Self::Bus,
            _ => Self::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OccupancyStatus {
    Unknown,
    Counted,
    Unreadable,
}

impl OccupancyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Counted => "counted",
            Self::Unreadable => "unreadable",
        }
    }

    pub fn from_db(s: &str) -> Self {
        match s {
            "counted" => Self::Counted,
            "unreadable" => Self::Unreadable,
            _ => Self::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageContentType {
    Jpeg,
    Png,
}

impl ImageContentType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "image/jpeg" => Some(Self::Jpeg),
            "image/png" => Some(Self::Png),
            _ => None,
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Ok,
    Degraded,
    Failing,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Failing => "failing",
        }
    }

    pub fn from_db(s: &str) -> Self {
        match s {
            "ok" => Self::Ok,
            "degraded" => Self::Degraded,
            "failing" => Self::Failing,
            _ => Self::Unknown,
        }
    }
}

/// What the gateway learns from an agent's Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentHello {
    pub agent_id: String,
    pub site_id: String,
    pub software_version: String,
    pub config_version: u64,
}

/// What a heartbeat updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentPulse {
    pub health: Health,
    pub buffered_captures: u64,
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub id: String,
    pub site_id: String,
    pub software_version: String,
    pub config_version: u64,
    pub online: bool,
    pub health: Health,
    pub buffered_captures: u64,
    pub last_seen: DateTime<Utc>,
    pub first_seen: DateTime<Utc>,
}

/// Capture metadata as declared by the agent, before its image arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureMeta {
    pub id: Uuid,
    pub site_id: String,
    pub lane: u32,
    pub captured_at: DateTime<Utc>,
    pub detected_at: Option<DateTime<Utc>>,
    pub vehicle_class: VehicleClass,
    pub occupancy_status: OccupancyStatus,
    /// Present only when the status is `Counted`.
    pub occupants: Option<u32>,
    pub speed_kmh: Option<f32>,
    pub height_m: f32,
    pub width_m: f32,
    pub camera_id: String,
    pub config_version: u64,
}

/// A stored capture.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    pub meta: CaptureMeta,
    pub agent_id: String,
    pub image_key: String,
    pub image_sha256: [u8; 32],
    pub image_bytes: u64,
    pub image_content_type: ImageContentType,
    pub received_at: DateTime<Utc>,
}

/// The blob key of a capture's image: `captures/<site>/<YYYY-MM-DD>/<capture_id>.<ext>`.
pub fn image_key(meta: &CaptureMeta, content_type: ImageContentType) -> String {
    format!(
        "captures/{}/{}/{}.{}",
        meta.site_id,
        meta.captured_at.format("%Y-%m-%d"),
        meta.id,
        content_type.extension()
    )
}

/// Position of a capture in the newest-first listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureCursor {
    pub captured_at: DateTime<Utc>,
    pub id: Uuid,
}

impl CaptureCursor {
    pub fn of(capture: &Capture) -> Self {
        Self { captured_at: capture.meta.captured_at, id: capture.meta.id }
    }

    /// Opaque text form: hex of `<captured_at micros>:<uuid>`.
    pub fn encode(&self) -> String {
        hex::encode(format!("{}:{}", self.captured_at.timestamp_micros(), self.id))
    }

    pub fn decode(s: &str) -> Option<Self> {
        let raw = String::from_utf8(hex::decode(s).ok()?).ok()?;
        let (micros, id) = raw.split_once(':')?;
        let captured_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some(Self { captured_at, id: Uuid::parse_str(id).ok()? })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentStatus {
    Unknown,
    Starting,
    Running,
    BackingOff,
    Stopped,
    Failed,
}

/// The supervision snapshot of one agent component, as introspection reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentState {
    pub name: String,
    pub status: ComponentStatus,
    pub restarts: u32,
    pub last_failure: Option<String>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub backoff_ms: u64,
    pub processed: u64,
    pub detail_json: String,
}

/// The outcome of a command sent to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub ok: bool,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let c = CaptureCursor {
            captured_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        let text = c.encode();
        assert_eq!(CaptureCursor::decode(&text), Some(c));
        assert_eq!(CaptureCursor::decode("zz"), None);
        assert_eq!(CaptureCursor::decode(&hex::encode("12:not-a-uuid")), None);
        assert_eq!(CaptureCursor::decode(""), None);
    }

    #[test]
    fn unknown_texts_read_as_unknown() {
        assert_eq!(VehicleClass::from_db("hovercraft"), VehicleClass::Unknown);
        assert_eq!(OccupancyStatus::from_db("x"), OccupancyStatus::Unknown);
        for v in [VehicleClass::Car, VehicleClass::Bus, VehicleClass::Motorcycle] {
            assert_eq!(VehicleClass::from_db(v.as_str()), v);
        }
    }
}

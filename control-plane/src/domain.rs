//! Domain types of the control plane: agents, captures, sites and their HOV policy, violations,
//! API-key principals and the audit trail, free of protobuf, SQL and GraphQL; the edges convert
//! to and from these by hand. Component history's types are in `domain/history.rs`, what agents
//! report and are asked live (introspection, commands, logs) in `domain/introspection.rs`, the
//! job queue's and retention's in `domain/jobs.rs`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

mod history;
mod introspection;
mod jobs;
mod webhooks;

pub use history::{
    ComponentHistory, ComponentSample, FleetComponentFilter, HistoryPoint, HistorySummary, LatestComponent,
    MAX_HISTORY_RANGE_DAYS, NameMatch, Resolution, StatusMatch, check_history_range,
};
pub use introspection::{
    AgentCommand, BufferDetail, CLUSTER_LOG_BYTES, CameraDetail, ClockOffset, CommandOutcome,
    ComponentDetail, ComponentEvent, ComponentLoad, ComponentState, ComponentStatus, DetectorDetail,
    DiagnosticCheck, Introspection, LidarDetail, LinkState, LogLine, LogPage, LogQuery, ProcessState,
    RateWindow, TriggerDetail, UplinkDetail, VisionDetail,
};
pub use jobs::{AttemptError, CaptureDeletion, Job, JobAction, JobFilter, JobState, NewJob, QueueSettings};
pub use webhooks::{EventType, WebhookAttempt, WebhookEndpoint, WebhookMessage};

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
    /// Answer its heartbeats with `HeartbeatAck`s (it measures its clock offset from them).
    pub wants_heartbeat_acks: bool,
    /// Its config file when it runs an edit made on the device that is not recorded yet.
    pub local_config: String,
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

/// Why and by whom an agent was refused its sessions (`revokeAgent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRevocation {
    pub agent_id: String,
    pub reason: String,
    /// The audit actor who revoked it.
    pub by: String,
    pub created_at: DateTime<Utc>,
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
    /// Occupants per seat section, as vision reported them.
    pub sections: Vec<SectionCount>,
    /// The lowest section confidence, when vision reported any sections.
    pub confidence: Option<f32>,
    /// The vision model that counted, when the agent reports it.
    pub model_version: Option<String>,
    /// An operator's test capture (`triggerTestCapture`), not of a vehicle: its decision is
    /// `Test`, so it is never counted in statistics nor becomes a violation.
    pub test: bool,
}

/// Occupants in one seat section (driver, front passenger, rear row N).
#[derive(Debug, Clone, PartialEq)]
pub struct SectionCount {
    pub section: String,
    pub occupants: u32,
    pub confidence: f32,
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
    /// What the lane's HOV policy makes of the occupancy, decided at ingest.
    pub decision: Decision,
    /// The `traceparent` of its ingest span (when the control plane traces), which the jobs the
    /// capture starts (webhook deliveries) carry to continue its trace; never stored with the row.
    pub trace_parent: Option<String>,
}

/// The blob key of a capture's image:
/// `captures/<site>/<YYYY-MM-DD>/<capture_id>-<first 16 hex of its SHA-256>.<ext>`. The digest
/// makes the key content-addressed: a capture re-sent with the same bytes puts the same object
/// again (harmless), and one re-sent with other bytes under the same id can never overwrite the
/// image already stored as evidence.
pub fn image_key(meta: &CaptureMeta, content_type: ImageContentType, sha256: &[u8; 32]) -> String {
    format!(
        "captures/{}/{}/{}-{}.{}",
        meta.site_id,
        meta.captured_at.format("%Y-%m-%d"),
        meta.id,
        hex::encode(&sha256[..8]),
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

/// What the lane's HOV policy makes of a capture's occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Compliant,
    ViolationCandidate,
    Unreadable,
    Unknown,
    /// An operator's test capture: no vehicle, never judged nor counted.
    Test,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compliant => "compliant",
            Self::ViolationCandidate => "violation_candidate",
            Self::Unreadable => "unreadable",
            Self::Unknown => "unknown",
            Self::Test => "test",
        }
    }

    pub fn from_db(s: &str) -> Self {
        match s {
            "compliant" => Self::Compliant,
            "violation_candidate" => Self::ViolationCandidate,
            "unreadable" => Self::Unreadable,
            "test" => Self::Test,
            _ => Self::Unknown,
        }
    }
}

/// A UTC time-of-day window `[start, end)` in minutes after midnight; `start > end` wraps midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimeWindow {
    pub start_minute: u16,
    pub end_minute: u16,
}

impl TimeWindow {
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        use chrono::Timelike;
        let minute = u16::try_from(at.hour() * 60 + at.minute()).unwrap_or(0);
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }
}

/// The HOV rule of one lane: at least `min_occupants`, in force during `windows` (always when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HovPolicy {
    pub min_occupants: u32,
    pub windows: Vec<TimeWindow>,
}

impl HovPolicy {
    pub fn in_force(&self, at: DateTime<Utc>) -> bool {
        self.windows.is_empty() || self.windows.iter().any(|w| w.contains(at))
    }
}

/// Applies a lane's policy to what vision saw. No policy, or none in force, is never a violation.
pub fn decide(meta: &CaptureMeta, policy: Option<&HovPolicy>) -> Decision {
    if meta.test {
        return Decision::Test;
    }
    match meta.occupancy_status {
        OccupancyStatus::Unknown => Decision::Unknown,
        OccupancyStatus::Unreadable => Decision::Unreadable,
        OccupancyStatus::Counted => match (policy, meta.occupants) {
            (None, _) | (_, None) => Decision::Unknown,
            (Some(p), _) if !p.in_force(meta.captured_at) => Decision::Compliant,
            (Some(p), Some(n)) if n >= p.min_occupants => Decision::Compliant,
            (Some(_), Some(_)) => Decision::ViolationCandidate,
        },
    }
}

/// A site (one agent's stretch of road); its jurisdiction decides which agency sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub id: String,
    pub name: String,
    pub jurisdiction: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An enforcement agency: it sees the sites whose jurisdiction equals its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agency {
    pub id: String,
    pub name: String,
    pub jurisdiction: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationState {
    Pending,
    Confirmed,
    Rejected,
}

impl ViolationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
        }
    }

    pub fn from_db(s: &str) -> Self {
        match s {
            "confirmed" => Self::Confirmed,
            "rejected" => Self::Rejected,
            _ => Self::Pending,
        }
    }
}

/// A violation record: a capture the policy flagged, and its human review.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub id: Uuid,
    pub capture_id: Uuid,
    pub site_id: String,
    pub captured_at: DateTime<Utc>,
    pub state: ViolationState,
    /// The API key id of the reviewer.
    pub reviewer: Option<String>,
    pub reason: Option<String>,
    pub reviewed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewDecision {
    Confirm,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Operator,
    Agency,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Agency => "agency",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "operator" => Some(Self::Operator),
            "agency" => Some(Self::Agency),
            _ => None,
        }
    }
}

/// An API key as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub agency_id: Option<String>,
    /// An agency key with this grant sees every capture of its sites, not only violations.
    pub all_captures: bool,
    pub secret_sha256: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Which rows a caller may read; every scoped query in `db` takes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    /// Sites whose jurisdiction is this one; of their captures only those with a violation
    /// record unless `all_captures`.
    Jurisdiction {
        jurisdiction: String,
        all_captures: bool,
    },
}

/// One audit-log row: who did what to which target, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// The API key id, or `anonymous-local`.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub ok: bool,
    pub message: Option<String>,
}

/// Filters of the capture listing; `None` means no constraint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaptureFilter {
    pub site_id: Option<String>,
    pub lane: Option<u32>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub decision: Option<Decision>,
    pub min_occupants: Option<u32>,
    pub max_occupants: Option<u32>,
    pub vehicle_class: Option<VehicleClass>,
}

/// Vehicles of one site in one hour, by occupancy.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyStats {
    pub site_id: String,
    pub hour: DateTime<Utc>,
    pub vehicles: u64,
    pub occupants_0: u64,
    pub occupants_1: u64,
    pub occupants_2: u64,
    pub occupants_3_plus: u64,
    pub unknown: u64,
    pub violations: u64,
}

/// Why an agent deleted a capture without uploading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionReason {
    EvictedFull,
    Expired,
    Damaged,
    Unknown,
}

impl DeletionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EvictedFull => "evicted_full",
            Self::Expired => "expired",
            Self::Damaged => "damaged",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::EvictedFull, Self::Expired, Self::Damaged, Self::Unknown].into_iter().find(|r| r.as_str() == s)
    }
}

/// How much a capture was worth keeping, as the agent classed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueClass {
    Statistics,
    Compliant,
    ViolationCandidate,
    Unknown,
}

impl ValueClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Statistics => "statistics",
            Self::Compliant => "compliant",
            Self::ViolationCandidate => "violation_candidate",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Statistics, Self::Compliant, Self::ViolationCandidate, Self::Unknown]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// An agent's proof that it deleted a capture the control plane never acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletionReceipt {
    pub receipt_id: Uuid,
    /// `None` when the agent could not read the damaged record's id.
    pub capture_id: Option<Uuid>,
    pub agent_id: String,
    pub site_id: String,
    pub value_class: ValueClass,
    /// `None` when unknown (a damaged record).
    pub captured_at: Option<DateTime<Utc>>,
    pub deleted_at: DateTime<Utc>,
    pub reason: DeletionReason,
    /// Bytes the capture occupied in the agent's buffer.
    pub bytes: u64,
    pub received_at: DateTime<Utc>,
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

    fn meta(status: OccupancyStatus, occupants: Option<u32>, hour: u32) -> CaptureMeta {
        use chrono::TimeZone;
        CaptureMeta {
            id: Uuid::now_v7(),
            site_id: "s".into(),
            lane: 0,
            captured_at: Utc.with_ymd_and_hms(2025, 3, 4, hour, 30, 0).unwrap(),
            detected_at: None,
            vehicle_class: VehicleClass::Car,
            occupancy_status: status,
            occupants,
            speed_kmh: None,
            height_m: 1.5,
            width_m: 1.8,
            camera_id: "cam0".into(),
            config_version: 1,
            sections: vec![],
            confidence: None,
            model_version: None,
            test: false,
        }
    }

    #[test]
    fn decisions_follow_the_lane_policy() {
        use OccupancyStatus::{Counted, Unknown, Unreadable};
        let hov2 = HovPolicy { min_occupants: 2, windows: vec![] };
        let peak = HovPolicy {
            min_occupants: 3,
            windows: vec![TimeWindow { start_minute: 7 * 60, end_minute: 9 * 60 }],
        };
        let night = HovPolicy {
            min_occupants: 2,
            windows: vec![TimeWindow { start_minute: 22 * 60, end_minute: 6 * 60 }],
        };
        let cases = [
            (meta(Counted, Some(1), 8), Some(&hov2), Decision::ViolationCandidate),
            (meta(Counted, Some(2), 8), Some(&hov2), Decision::Compliant),
            (meta(Counted, Some(2), 8), Some(&peak), Decision::ViolationCandidate),
            (meta(Counted, Some(2), 12), Some(&peak), Decision::Compliant),
            (meta(Counted, Some(1), 23), Some(&night), Decision::ViolationCandidate),
            (meta(Counted, Some(1), 3), Some(&night), Decision::ViolationCandidate),
            (meta(Counted, Some(1), 12), Some(&night), Decision::Compliant),
            (meta(Counted, Some(1), 8), None, Decision::Unknown),
            (meta(Unreadable, None, 8), Some(&hov2), Decision::Unreadable),
            (meta(Unknown, None, 8), Some(&hov2), Decision::Unknown),
            // an operator's test capture is never judged, whatever its count
            (CaptureMeta { test: true, ..meta(Counted, Some(1), 8) }, Some(&hov2), Decision::Test),
            (CaptureMeta { test: true, ..meta(Counted, Some(3), 8) }, Some(&hov2), Decision::Test),
        ];
        for (i, (m, policy, expected)) in cases.iter().enumerate() {
            assert_eq!(decide(m, *policy), *expected, "case {i}");
        }
    }

    #[test]
    fn unknown_texts_read_as_unknown() {
        assert_eq!(VehicleClass::from_db("hovercraft"), VehicleClass::Unknown);
        assert_eq!(OccupancyStatus::from_db("x"), OccupancyStatus::Unknown);
        assert_eq!(Decision::from_db("maybe"), Decision::Unknown);
        for d in [Decision::Compliant, Decision::ViolationCandidate, Decision::Test] {
            assert_eq!(Decision::from_db(d.as_str()), d);
        }
        for v in [VehicleClass::Car, VehicleClass::Bus, VehicleClass::Motorcycle] {
            assert_eq!(VehicleClass::from_db(v.as_str()), v);
        }
    }
}

/// One version of a site's agent config (`updateSiteConfig`, `rollbackSiteConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfigVersion {
    pub site_id: String,
    /// 1, 2, 3, … per site; stamped into `toml` as `config_version`.
    pub version: u64,
    /// The agent config file as pushed, `config_version` stamped.
    pub toml: String,
    pub comment: Option<String>,
    /// The version whose content this one restores, for a rollback.
    pub rolled_back_from: Option<u64>,
    /// The actor (API key id) that made it.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// Where one agent stands with one config version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    /// Not delivered yet (the agent is offline, or did not answer in time).
    Pending,
    /// The agent validated and wrote it; in force once it restarts its components.
    Staged,
    /// The agent's Hello reported this version: its components run with it.
    Applied,
    /// The agent refused it (validation on the device) or could not run with it (and went back
    /// to its previous config); `error` says why.
    Rejected,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Staged => "staged",
            Self::Applied => "applied",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "staged" => Self::Staged,
            "applied" => Self::Applied,
            "rejected" => Self::Rejected,
            _ => return None,
        })
    }
}

/// One agent's rollout state for one config version of its site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfigState {
    pub agent_id: String,
    pub site_id: String,
    pub version: u64,
    pub state: RolloutState,
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

//! What agents report and are asked live: their supervised components (status, load, flight
//! recorder), their process, the commands operators send them, their logs and diagnostics.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentStatus {
    Unknown,
    Starting,
    Running,
    BackingOff,
    Stopped,
    Failed,
    /// Stopped by an operator until resumed.
    Paused,
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
    /// Items waiting in its input channel and the channel's capacity; `None` for a source.
    pub inbox: Option<(u32, u32)>,
    /// Its flight recorder, oldest first (empty in heartbeats).
    pub events: Vec<ComponentEvent>,
    /// Items it could not process (quarantined, skipped) since the agent started.
    pub failed: u64,
    /// Its busy time and rates; `None` from agents too old to report them.
    pub load: Option<ComponentLoad>,
    /// What it is waiting on now (`nothing`, `input`, `downstream`, `device`,
    /// `control_plane`); `None` from older agents.
    pub waiting_on: Option<String>,
    /// The memory it holds, where the agent can measure it (a camera's frame ring, the buffer's
    /// index, the face model's sessions).
    pub memory_bytes: Option<u64>,
    /// What the component says about itself, typed by its kind; `None` in heartbeats, from older
    /// agents, and before it first published.
    pub detail: Option<ComponentDetail>,
}

/// A component's own state, one kind per kind of component (`lanewatch.v1.ComponentDetail`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ComponentDetail {
    Lidar(LidarDetail),
    Detector(DetectorDetail),
    Trigger(TriggerDetail),
    Camera(CameraDetail),
    Vision(VisionDetail),
    Buffer(BufferDetail),
    Uplink(UplinkDetail),
}

/// Where a link (scanner, camera, session) stands; `Unknown` for a value this build predates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Unknown,
    Connecting,
    Connected,
    /// A LIDAR replay reached the end of its recording.
    Finished,
    /// A camera opening its source.
    Opening,
    /// A camera delivering frames.
    Streaming,
    /// A camera without frames for longer than its stall threshold.
    Stalled,
    /// The uplink without a session.
    Disconnected,
    /// The uplink whose last session the control plane refused.
    Refused,
}

/// A scan source: the SICK driver, or a recording replayed through it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LidarDetail {
    pub source: String,
    pub origin: String,
    pub framing: String,
    pub link: LinkState,
    pub degraded: bool,
    pub secs_since_last_scan: u64,
    pub last_error: Option<String>,
    pub telegrams_ok: u64,
    pub telegrams_malformed: u64,
    pub garbage_bytes: u64,
    pub out_of_order: u64,
    pub scans_missed: u64,
    pub reconnects: u64,
    pub connect_failures: u64,
    pub sopas_errors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DetectorDetail {
    pub learnt: bool,
    pub degraded: bool,
    pub degraded_scans: u64,
    pub entries: u64,
    pub exits: u64,
    pub speeds_measured: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TriggerDetail {
    /// Triggers since the agent started, by camera id, ordered by camera id.
    pub triggers_per_camera: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CameraDetail {
    pub link: LinkState,
    pub frames: u64,
    pub pending: u64,
    pub stalls: u64,
    pub stall_after_ms: u64,
    pub last_frame_at: Option<DateTime<Utc>>,
    /// What the source opened; `None` for simulated sources.
    pub source: Option<String>,
    pub dropped_frames: u64,
    pub test_captures: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VisionDetail {
    pub frames: u64,
    pub faces: u64,
    pub released: u64,
    pub quarantined: u64,
    pub quarantine_held: u64,
    pub last_quarantine_reason: Option<String>,
    pub counted: u64,
    pub unreadable: u64,
    pub violation_candidates: u64,
    pub model: String,
    pub sessions: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BufferDetail {
    pub captures: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub appended: u64,
    pub rejected: u64,
    pub evicted: u64,
    pub expired: u64,
    pub damaged: u64,
    pub receipts_pending: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UplinkDetail {
    pub link: LinkState,
    /// Why the control plane refused the last session, while it is refused.
    pub refused: Option<String>,
    /// Empty while disconnected.
    pub session_id: String,
    pub acked: u64,
    pub buffer: BufferDetail,
}

/// What a component did lately, as its agent measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ComponentLoad {
    /// Poll time of its task plus CPU time of its threads, since it first started.
    pub busy_seconds: f64,
    pub one_minute: RateWindow,
    pub five_minutes: RateWindow,
    pub fifteen_minutes: RateWindow,
}

/// Rates over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RateWindow {
    pub processed_per_sec: f64,
    pub failed_per_sec: f64,
    /// Busy time over wall time (1.0: one core all the time).
    pub busy_ratio: f64,
}

/// One entry of a component's flight recorder: a state change, failure or restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ComponentEvent {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub message: String,
}

/// What an agent reported when asked: its supervised components and, from agents that send it,
/// its process as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Introspection {
    pub components: Vec<ComponentState>,
    pub process: Option<ProcessState>,
}

/// An agent process's own figures, read when it was asked.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcessState {
    /// CPU time (user + system) since the process started.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub threads: u32,
    pub open_fds: u32,
    pub uptime_secs: f64,
    pub buffer_volume_free_bytes: u64,
    pub buffer_volume_total_bytes: u64,
    pub software_version: String,
    pub config_version: u64,
    /// Empty without vision.
    pub model_version: String,
    /// Its clock against the control plane's, from its last heartbeat round trip.
    #[serde(default)]
    pub clock: Option<ClockOffset>,
}

/// An agent's clock against the control plane's, as the agent measured it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClockOffset {
    /// Agent minus control plane (positive: the agent is ahead).
    pub offset_ms: f64,
    /// The round trip it was measured over; the offset is right within half of it.
    pub round_trip_ms: f64,
    pub measured_at: DateTime<Utc>,
}

/// A command an operator sends to an agent over its session; there is none that runs code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentCommand {
    /// Kill a supervised component; its supervisor starts it again (its restarts count grows).
    RestartComponent {
        component: String,
    },
    /// Stop a component and keep it stopped until resumed (the uplink: hold uploads only).
    PauseComponent {
        component: String,
    },
    ResumeComponent {
        component: String,
    },
    /// Replace the agent's log filter for `for_secs`, after which its own filter comes back.
    SetLogFilter {
        filter: String,
        for_secs: u32,
    },
    /// Check the site: disk, LIDAR link, cameras, clock, model (the outcome carries the checks).
    RunDiagnostics,
    /// Take a capture on `camera` now, without a vehicle, through vision and the buffer; it is
    /// marked as a test, never counted nor a violation (the outcome names it).
    TriggerTestCapture {
        camera: String,
    },
}

impl AgentCommand {
    /// The audit log's target for this command to `agent_id`.
    pub fn target(&self, agent_id: &str) -> String {
        match self {
            Self::RestartComponent { component }
            | Self::PauseComponent { component }
            | Self::ResumeComponent { component } => format!("agent/{agent_id}/component/{component}"),
            Self::SetLogFilter { .. } => format!("agent/{agent_id}/log-filter"),
            Self::RunDiagnostics => format!("agent/{agent_id}/diagnostics"),
            Self::TriggerTestCapture { camera } => format!("agent/{agent_id}/camera/{camera}/test-capture"),
        }
    }
}

/// What a reader asks of an agent's log ring; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogQuery {
    /// The least severe level wanted: `error`, `warn`, `info`, `debug` or `trace`.
    pub level: Option<String>,
    /// Only lines whose target starts with this.
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Only lines whose message or a field value contains this, ignoring case.
    pub grep: Option<String>,
    /// At most this many lines, the newest.
    pub limit: u32,
    /// At most this many bytes of text.
    pub max_bytes: u32,
    /// Following: only lines after this sequence number.
    pub after_seq: Option<u64>,
    /// Following: how long the agent may hold the answer for a line to match (≤ 3000 ms).
    pub wait_ms: u32,
}

/// The most bytes of log text one answer carries from another replica: a NOTIFY payload is
/// under 8000 bytes, JSON included.
pub const CLUSTER_LOG_BYTES: u32 = 4096;

/// One line of an agent's log ring.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub level: String,
    pub target: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// An agent's answer to a [`LogQuery`]: the newest matching lines, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// More lines matched than the limit or byte cap let through.
    pub truncated: bool,
    /// The newest sequence number the agent's ring held; follow from here.
    pub last_seq: u64,
}

/// The outcome of a command sent to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub ok: bool,
    pub message: String,
    /// The checks of a diagnostics run; empty for other commands.
    pub checks: Vec<DiagnosticCheck>,
    /// The capture a test capture made; `None` for other commands.
    pub capture_id: Option<uuid::Uuid>,
}

/// One check of an agent's diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiagnosticCheck {
    /// `disk`, `lidar`, `camera <id>`, `clock`, `model`.
    pub name: String,
    pub ok: bool,
    /// What the check saw, with its figures.
    pub message: String,
}

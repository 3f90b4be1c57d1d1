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
    /// The memory it holds, where the agent can measure it (a camera's frame ring).
    pub memory_bytes: Option<u64>,
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

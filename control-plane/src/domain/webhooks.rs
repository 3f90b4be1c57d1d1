//! The vehicle push service's types: the event types an endpoint subscribes to, an endpoint
//! (where, which events, which site, its limits, whose it is), a message (one event for one
//! endpoint) and its delivery attempts.

use chrono::{DateTime, Utc};

/// What an endpoint can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    CaptureStored,
    ViolationFlagged,
    ViolationConfirmed,
    ViolationRejected,
    AgentOffline,
    AgentOnline,
    ConfigRejected,
    EndpointDisabled,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        Self::CaptureStored,
        Self::ViolationFlagged,
        Self::ViolationConfirmed,
        Self::ViolationRejected,
        Self::AgentOffline,
        Self::AgentOnline,
        Self::ConfigRejected,
        Self::EndpointDisabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CaptureStored => "capture.stored",
            Self::ViolationFlagged => "violation.flagged",
            Self::ViolationConfirmed => "violation.confirmed",
            Self::ViolationRejected => "violation.rejected",
            Self::AgentOffline => "agent.offline",
            Self::AgentOnline => "agent.online",
            Self::ConfigRejected => "config.rejected",
            Self::EndpointDisabled => "endpoint.disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Events about a capture: an agency endpoint receives them only for captures its key
    /// could read.
    pub fn is_about_a_capture(self) -> bool {
        matches!(
            self,
            Self::CaptureStored | Self::ViolationFlagged | Self::ViolationConfirmed | Self::ViolationRejected
        )
    }
}

/// Where events are pushed.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEndpoint {
    pub id: uuid::Uuid,
    pub url: String,
    pub description: String,
    pub event_types: Vec<EventType>,
    /// Only events of this site; all sites when `None`.
    pub site_id: Option<String>,
    /// Requests per second at most (per replica).
    pub rate_per_sec: f64,
    /// Requests in flight at most (per replica).
    pub max_concurrency: u32,
    pub enabled: bool,
    /// `whsec_…`.
    pub secret: String,
    /// The secret before the last rotation, valid (and signed with) until `previous_secret_until`.
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// An agency's endpoint: events are those its key could read.
    pub agency_id: Option<String>,
    pub jurisdiction: Option<String>,
    pub all_captures: bool,
    /// Since when every delivery failed; `None` after a success.
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl WebhookEndpoint {
    pub fn wants(&self, event: EventType, site_id: Option<&str>) -> bool {
        self.enabled
            && self.event_types.contains(&event)
            && match (&self.site_id, site_id) {
                (Some(only), Some(site)) => only == site,
                (Some(_), None) => false,
                (None, _) => true,
            }
    }
}

/// One event for one endpoint: its `webhook-id` stays the same across retries and resends.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookMessage {
    /// `msg_<uuid>`.
    pub id: String,
    pub endpoint_id: uuid::Uuid,
    pub event_type: EventType,
    pub capture_id: Option<uuid::Uuid>,
    /// The JSON body as first sent.
    pub payload: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub created_at: DateTime<Utc>,
}

/// One delivery attempt of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookAttempt {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status; `None` when no response came (refused, timeout, connect).
    pub status: Option<u16>,
    /// The start of the response body (at most 1 KiB, lossy UTF-8).
    pub body_snippet: String,
    pub latency_ms: u64,
    pub error: Option<String>,
}

//! The in-process event bus behind GraphQL subscriptions: the gateway publishes a capture once it
//! is durably stored, an agent's session opening or closing, an agent's revocation and a new site config version; the cluster link (`cluster.rs`)
//! forwards local events to other replicas and publishes theirs here, marked remote.
//!
//! Events carry ids, not rows: a subscriber re-reads a capture through its own `Visibility`, so
//! a subscription sees exactly what the same caller's query would.

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use uuid::Uuid;

/// How many events a slow subscriber may fall behind before it skips ahead.
pub const EVENT_BUFFER: usize = 1024;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A new capture's image and metadata are durable.
    CaptureStored { capture_id: Uuid, site_id: String },
    /// An agent's session opened (`online`) or closed.
    AgentStatus { agent_id: String, site_id: String, online: bool, at: DateTime<Utc> },
    /// An agent was revoked: the replica holding its session ends it.
    AgentRevoked { agent_id: String, reason: String },
    /// A site has a new config version: the replica holding each of its agents' sessions
    /// offers it (`Gateway::offer_site_config`).
    SiteConfigChanged { site_id: String, version: u64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// Published by another replica (never forwarded again).
    pub remote: bool,
}

/// A broadcast channel of events; cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        Self { tx: broadcast::channel(EVENT_BUFFER).0 }
    }

    /// Publishes an event of this replica; nobody listening is fine.
    pub fn publish(&self, kind: EventKind) {
        let _ = self.tx.send(Event { kind, remote: false });
    }

    /// Publishes an event another replica sent.
    pub fn publish_remote(&self, kind: EventKind) {
        let _ = self.tx.send(Event { kind, remote: true });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// How many receivers listen now (subscriptions, the cluster forwarder): what a caller waits
    /// on to know that a subscription it opened has registered.
    pub fn receiver_count(&self) -> usize {
        self.tx.receiver_count()
    }
}

//! The seam below the gateway: what `cluster` and `rollout` may ask of the agent sessions this
//! replica holds ([`AgentSessions`], implemented by `gateway::Gateway`), and how long a request
//! to an agent waits. Dependencies point one way: the gateway calls into `cluster` and
//! `rollout`, and they reach the sessions only through this trait, never `crate::gateway`.

use std::time::Duration;

use futures::future::BoxFuture;

use uuid::Uuid;

use crate::domain::{Agent, AgentCommand, CommandOutcome, Introspection, LogPage, LogQuery};
use crate::error::Error;
use crate::events::Events;

/// How long a request to an agent (introspection, command, config push) waits for its answer.
pub const AGENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The live agent sessions of this replica, as `cluster` and `rollout` see them.
pub trait AgentSessions: Send + Sync {
    /// Whether the agent's session is on this replica.
    fn is_online(&self, agent_id: &str) -> bool;

    /// Whether `agent` has a live session: here, or (with replicas) on another replica.
    fn counts_as_online(&self, agent: &Agent) -> bool;

    /// Stored captures and session changes, for subscriptions and other replicas.
    fn events(&self) -> &Events;

    /// Ends the agent's session on this replica with PERMISSION_DENIED; whether it had one.
    fn end_revoked_session(&self, agent_id: &str, reason: &str) -> bool;

    /// Offers the site's newest config to every agent of `site_id` whose session is here.
    fn offer_site_config(&self, site_id: &str);

    /// Asks an agent whose session is here for its supervision snapshot and process figures.
    fn local_introspection<'a>(&'a self, agent_id: &'a str) -> BoxFuture<'a, Result<Introspection, Error>>;

    /// Sends a command to an agent whose session is here and waits for its outcome; a repeated
    /// `command_id` is answered by the agent with its first outcome.
    fn local_command<'a>(
        &'a self,
        agent_id: &'a str,
        command_id: Uuid,
        command: AgentCommand,
    ) -> BoxFuture<'a, Result<CommandOutcome, Error>>;

    /// Reads the log ring of an agent whose session is here.
    fn local_logs<'a>(&'a self, agent_id: &'a str, query: LogQuery) -> BoxFuture<'a, Result<LogPage, Error>>;

    /// Claims the push of `config_version` to `agent_id`; `None` while another is in flight.
    fn begin_push(&self, agent_id: &str, config_version: u64) -> Option<PushGuard>;

    /// Pushes a config to an agent whose session is here; `Ok(())` once the agent staged it, the
    /// agent's reason (`InvalidArgument`) when it refused it.
    fn push_config<'a>(
        &'a self,
        agent_id: &'a str,
        config_version: u64,
        config_toml: String,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// A config push in flight (see [`AgentSessions::begin_push`]); ends when dropped.
pub struct PushGuard {
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl PushGuard {
    /// A claim that `release` gives up when the guard is dropped.
    pub fn new(release: impl FnOnce() + Send + 'static) -> Self {
        Self { release: Some(Box::new(release)) }
    }
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

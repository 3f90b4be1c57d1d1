//! What the control plane asks of an agent over its session, and the answers routed back by
//! request id: introspection, commands, config pushes (and offering a site's newest config to
//! its agents here). Also the gateway's side of the `sessions::AgentSessions` seam that
//! `cluster` and `rollout` use.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::Utc;
use futures::future::BoxFuture;
use lanewatch_proto::v1 as pb;
use lanewatch_proto::v1::control_message::Body as Out;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Gateway, lock};
use crate::domain::{self, AgentCommand, AgentHello, CommandOutcome};
use crate::error::{Error, ErrorKind};
use crate::events::Events;
use crate::sessions::{AGENT_REQUEST_TIMEOUT, AgentSessions, PushGuard};

/// An answer an agent sent to a control-plane request, routed by request id.
#[derive(Debug)]
pub(super) enum Reply {
    Introspection(domain::Introspection),
    Command(CommandOutcome),
    Config { staged: bool, error: String },
    Logs(Result<domain::LogPage, String>),
}

/// Removes a request's waiter however the request ends.
struct WaiterGuard<'a> {
    waiters: &'a Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    key: String,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        lock(self.waiters).remove(&self.key);
    }
}

impl Gateway {
    /// Asks an agent for its supervision snapshot, through the replica holding its session.
    pub async fn request_introspection(&self, agent_id: &str) -> Result<domain::Introspection, Error> {
        match self.shared.cluster.get() {
            Some(cluster) if !self.is_online(agent_id) => cluster.request_introspection(agent_id).await,
            _ => self.local_introspection(agent_id).await,
        }
    }

    /// Asks an agent connected to this replica for its supervision snapshot.
    pub async fn local_introspection(&self, agent_id: &str) -> Result<domain::Introspection, Error> {
        let request_id = Uuid::now_v7().to_string();
        let msg = Out::IntrospectionRequest(pb::IntrospectionRequest { request_id: request_id.clone() });
        match self.request(agent_id, request_id, msg, "introspection").await? {
            Reply::Introspection(introspection) => Ok(introspection),
            other => {
                Err(Error::new(ErrorKind::Internal, format!("unexpected reply to introspection: {other:?}")))
            }
        }
    }

    /// Sends a command to an agent, through the replica holding its session, and waits for
    /// its outcome. `command_id` makes it idempotent: the agent runs one id once and answers a
    /// repeat with the first outcome; a repeat while the first still waits is refused.
    pub async fn command(
        &self,
        agent_id: &str,
        command_id: Uuid,
        command: AgentCommand,
    ) -> Result<CommandOutcome, Error> {
        match self.shared.cluster.get() {
            Some(cluster) if !self.is_online(agent_id) => {
                cluster.request_command(agent_id, command_id, command).await
            }
            _ => self.local_command(agent_id, command_id, command).await,
        }
    }

    /// Sends a command to an agent connected to this replica and waits for its result.
    pub async fn local_command(
        &self,
        agent_id: &str,
        command_id: Uuid,
        command: AgentCommand,
    ) -> Result<CommandOutcome, Error> {
        let kind = match command {
            AgentCommand::RestartComponent { component } => {
                pb::command::Kind::RestartComponent(pb::RestartComponent { component })
            }
            AgentCommand::PauseComponent { component } => {
                pb::command::Kind::PauseComponent(pb::PauseComponent { component })
            }
            AgentCommand::ResumeComponent { component } => {
                pb::command::Kind::ResumeComponent(pb::ResumeComponent { component })
            }
            AgentCommand::SetLogFilter { filter, for_secs } => {
                pb::command::Kind::SetLogFilter(pb::SetLogFilter { filter, for_secs })
            }
            AgentCommand::RunDiagnostics => pb::command::Kind::RunDiagnostics(pb::RunDiagnostics {}),
            AgentCommand::TriggerTestCapture { camera } => {
                pb::command::Kind::TriggerTestCapture(pb::TriggerTestCapture { camera })
            }
        };
        let command_id = command_id.to_string();
        let msg = Out::Command(pb::Command { command_id: command_id.clone(), kind: Some(kind) });
        match self.request(agent_id, command_id, msg, "command").await? {
            Reply::Command(outcome) => Ok(outcome),
            other => Err(Error::new(ErrorKind::Internal, format!("unexpected reply to command: {other:?}"))),
        }
    }

    /// Reads an agent's log ring, through the replica holding its session (whose answer is cut
    /// to [`domain::CLUSTER_LOG_BYTES`] of text).
    pub async fn request_logs(
        &self,
        agent_id: &str,
        query: domain::LogQuery,
    ) -> Result<domain::LogPage, Error> {
        match self.shared.cluster.get() {
            Some(cluster) if !self.is_online(agent_id) => cluster.request_logs(agent_id, query).await,
            _ => self.local_logs(agent_id, query).await,
        }
    }

    /// Reads the log ring of an agent connected to this replica. A follower's query may be held
    /// by the agent up to its `wait_ms` for a line to match.
    pub async fn local_logs(
        &self,
        agent_id: &str,
        query: domain::LogQuery,
    ) -> Result<domain::LogPage, Error> {
        let request_id = Uuid::now_v7().to_string();
        let msg = Out::LogsRequest(super::convert::logs_request(request_id.clone(), &query));
        match self.request(agent_id, logs_key(&request_id), msg, "log request").await? {
            Reply::Logs(Ok(page)) => Ok(page),
            Reply::Logs(Err(reason)) => {
                Err(Error::invalid(format!("agent {agent_id} refused the log request: {reason}")))
            }
            other => {
                Err(Error::new(ErrorKind::Internal, format!("unexpected reply to a log request: {other:?}")))
            }
        }
    }

    /// Pushes a configuration; `Ok(())` once the agent staged it, the agent's reason otherwise.
    pub async fn push_config(
        &self,
        agent_id: &str,
        config_version: u64,
        config_toml: String,
    ) -> Result<(), Error> {
        let key = config_key(agent_id, config_version);
        let msg = Out::ConfigPush(pb::ConfigPush { config_version, config_toml });
        match self.request(agent_id, key, msg, "config push").await? {
            Reply::Config { staged: true, .. } => Ok(()),
            Reply::Config { staged: false, error } => Err(Error::invalid(format!(
                "agent {agent_id} rejected config version {config_version}: {error}"
            ))),
            other => {
                Err(Error::new(ErrorKind::Internal, format!("unexpected reply to config push: {other:?}")))
            }
        }
    }

    /// Offers the site's newest config to every agent of `site_id` whose session is on this
    /// replica (`rollout::reconcile`, in the background).
    pub fn offer_site_config(&self, site_id: &str) {
        let agents: Vec<(String, u64)> = lock(&self.shared.sessions)
            .iter()
            .filter(|(_, s)| s.site_id == site_id)
            .map(|(id, s)| (id.clone(), s.config_version))
            .collect();
        for (agent_id, reported) in agents {
            let (gateway, site_id) = (self.clone(), site_id.to_owned());
            tokio::spawn(async move {
                let db = gateway.shared.db.clone();
                crate::rollout::reconcile(&gateway, &db, &agent_id, &site_id, reported).await;
            });
        }
    }

    /// Records an agent's answer to a config push (or its later report that it could not run
    /// a staged config): staged only over pending, rejected over pending or staged.
    pub(super) async fn record_config_ack(
        &self,
        hello: &AgentHello,
        version: u64,
        staged: bool,
        error: &str,
    ) {
        use domain::RolloutState::{Pending, Staged};
        let (state, from): (_, &[_]) =
            if staged { (Staged, &[Pending]) } else { (domain::RolloutState::Rejected, &[Pending, Staged]) };
        let row = domain::AgentConfigState {
            agent_id: hello.agent_id.clone(),
            site_id: hello.site_id.clone(),
            version,
            state,
            error: (!staged).then(|| error.to_owned()),
            updated_at: Utc::now(),
        };
        match self.shared.db.set_config_state(&row, from).await {
            Ok(_) => {
                tracing::info!(agent_id = %hello.agent_id, config_version = version, state = state.as_str(), error, "config ack")
            }
            Err(e) => tracing::warn!(agent_id = %hello.agent_id, error = %e, "cannot record a config ack"),
        }
    }

    async fn request(&self, agent_id: &str, key: String, msg: Out, what: &str) -> Result<Reply, Error> {
        let offline = || Error::unavailable(format!("agent {agent_id} is offline"));
        let tx = lock(&self.shared.sessions).get(agent_id).map(|s| s.tx.clone()).ok_or_else(offline)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut waiters = lock(&self.shared.waiters);
            if waiters.contains_key(&key) {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("a {what} with id {key} is already waiting for agent {agent_id}'s answer"),
                ));
            }
            waiters.insert(key.clone(), reply_tx);
        }
        let _guard = WaiterGuard { waiters: &self.shared.waiters, key };
        let exchange = async {
            tx.send(Ok(pb::ControlMessage { body: Some(msg) })).await.map_err(|_| offline())?;
            // the session may end before the answer comes: say so then, not at the timeout
            tokio::select! {
                reply = reply_rx => reply.map_err(|_| offline()),
                () = tx.closed() => Err(Error::unavailable(format!(
                    "agent {agent_id} went offline before answering the {what}"
                ))),
            }
        };
        tokio::time::timeout(AGENT_REQUEST_TIMEOUT, exchange).await.map_err(|_| {
            Error::new(
                ErrorKind::DeadlineExceeded,
                format!(
                    "agent {agent_id} did not answer the {what} within {}s",
                    AGENT_REQUEST_TIMEOUT.as_secs()
                ),
            )
        })?
    }

    pub(super) fn route_reply(&self, key: &str, reply: Reply) {
        match lock(&self.shared.waiters).remove(key) {
            Some(waiter) => {
                let _ = waiter.send(reply);
            }
            None => tracing::debug!(request_id = key, "reply for no waiting request"),
        }
    }
}

/// What `cluster` and `rollout` need of the sessions (see `sessions.rs`).
impl AgentSessions for Gateway {
    fn is_online(&self, agent_id: &str) -> bool {
        Gateway::is_online(self, agent_id)
    }

    fn counts_as_online(&self, agent: &domain::Agent) -> bool {
        Gateway::counts_as_online(self, agent)
    }

    fn events(&self) -> &Events {
        Gateway::events(self)
    }

    fn end_revoked_session(&self, agent_id: &str, reason: &str) -> bool {
        Gateway::end_revoked_session(self, agent_id, reason)
    }

    fn offer_site_config(&self, site_id: &str) {
        Gateway::offer_site_config(self, site_id);
    }

    fn local_introspection<'a>(
        &'a self,
        agent_id: &'a str,
    ) -> BoxFuture<'a, Result<domain::Introspection, Error>> {
        Box::pin(Gateway::local_introspection(self, agent_id))
    }

    fn local_command<'a>(
        &'a self,
        agent_id: &'a str,
        command_id: Uuid,
        command: AgentCommand,
    ) -> BoxFuture<'a, Result<CommandOutcome, Error>> {
        Box::pin(Gateway::local_command(self, agent_id, command_id, command))
    }

    fn local_logs<'a>(
        &'a self,
        agent_id: &'a str,
        query: domain::LogQuery,
    ) -> BoxFuture<'a, Result<domain::LogPage, Error>> {
        Box::pin(Gateway::local_logs(self, agent_id, query))
    }

    fn begin_push(&self, agent_id: &str, config_version: u64) -> Option<PushGuard> {
        let key = config_key(agent_id, config_version);
        let claimed = lock(&self.shared.config_pushes).insert(key.clone());
        let gateway = self.clone();
        claimed.then(|| {
            PushGuard::new(move || {
                lock(&gateway.shared.config_pushes).remove(&key);
            })
        })
    }

    fn push_config<'a>(
        &'a self,
        agent_id: &'a str,
        config_version: u64,
        config_toml: String,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(Gateway::push_config(self, agent_id, config_version, config_toml))
    }
}

/// Log answers are routed apart from commands and introspection, which share the id space.
pub(super) fn logs_key(request_id: &str) -> String {
    format!("logs:{request_id}")
}

pub(super) fn config_key(agent_id: &str, config_version: u64) -> String {
    format!("config:{agent_id}:{config_version}")
}

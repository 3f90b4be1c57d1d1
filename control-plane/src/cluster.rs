//! Several control-plane replicas against one PostgreSQL database: they talk over PostgreSQL
//! LISTEN/NOTIFY on one channel, `lanewatch_cluster`, through the pool sea-orm already holds, so
//! replicas need no address of each other and no extra port (see docs/DECISIONS.md).
//!
//! Two kinds of message travel (JSON, at most `MAX_PAYLOAD_BYTES`, under PostgreSQL's 8000):
//! - events (`events::EventKind`): every replica forwards the events its own gateway published
//!   and republishes those of the others, marked remote, so subscriptions on any replica see
//!   every capture and session change, the replica holding a revoked agent's session
//!   ends it, and the replica holding a session pushes a site's new config version to it
//!   (the config text is read from the database, never carried in the notification);
//! - introspection requests, log requests (answers cut to `domain::CLUSTER_LOG_BYTES` of text)
//!   and commands for an agent whose session is not on this replica:
//!   broadcast with a request id (a command's is its command id); only the replica holding the
//!   session answers, addressed to the asker. Nobody answering within the request timeout means
//!   the agent is offline.
//!
//! NOTIFY is fire-and-forget: a message sent while a replica's listener reconnects is lost (a
//! missed subscription event, a request that times out); queries read the database and are
//! unaffected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sea_orm::sqlx::PgPool;
use sea_orm::sqlx::postgres::PgListener;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot, watch};
use uuid::Uuid;

use crate::db::Db;
use crate::domain::{
    AgentCommand, CLUSTER_LOG_BYTES, CommandOutcome, ComponentDetail, ComponentEvent, ComponentLoad,
    ComponentState, ComponentStatus, DiagnosticCheck, Introspection, LogPage, LogQuery, ProcessState,
};
use crate::error::{Error, ErrorKind};
use crate::events::EventKind;
use crate::sessions::{AGENT_REQUEST_TIMEOUT, AgentSessions};

/// The one NOTIFY channel all replicas listen on.
pub const CHANNEL: &str = "lanewatch_cluster";
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
pub const MAX_PAYLOAD_BYTES: usize = 7900;

type IntrospectionResult = Result<WireIntrospection, String>;

/// `Introspection` on the cluster channel.
#[derive(Debug, Serialize, Deserialize)]
struct WireIntrospection {
    components: Vec<WireComponent>,
    #[serde(default)]
    process: Option<ProcessState>,
}

/// A command's outcome on the cluster channel, or why the replica holding the session could
/// not get one.
#[derive(Debug, Serialize, Deserialize)]
struct CommandReply {
    outcome: Result<(bool, String), String>,
    /// A diagnostics run's checks.
    #[serde(default)]
    checks: Vec<DiagnosticCheck>,
    /// A test capture's id.
    #[serde(default)]
    capture_id: Option<Uuid>,
    /// The agent did not answer in time (else an error means it was unavailable).
    #[serde(default)]
    timed_out: bool,
}

/// What a replica waits for on the cluster channel.
enum Answer {
    Introspection(IntrospectionResult),
    Command(CommandReply),
    Logs(Result<LogPage, (bool, String)>),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
enum Message {
    Event {
        from: String,
        event: EventKind,
    },
    IntrospectionRequest {
        from: String,
        request_id: String,
        agent_id: String,
    },
    IntrospectionReply {
        to: String,
        request_id: String,
        result: IntrospectionResult,
    },
    CommandRequest {
        from: String,
        request_id: String,
        agent_id: String,
        command: AgentCommand,
    },
    CommandReply {
        to: String,
        request_id: String,
        reply: CommandReply,
    },
    LogsRequest {
        from: String,
        request_id: String,
        agent_id: String,
        query: LogQuery,
    },
    /// The error says whether the agent itself refused the query (`true`) or was unavailable.
    LogsReply {
        to: String,
        request_id: String,
        result: Result<LogPage, (bool, String)>,
    },
}

/// `ComponentState` on the cluster channel, converted by hand.
#[derive(Debug, Serialize, Deserialize)]
struct WireComponent {
    name: String,
    status: String,
    restarts: u32,
    last_failure: Option<String>,
    last_failure_at: Option<chrono::DateTime<chrono::Utc>>,
    backoff_ms: u64,
    processed: u64,
    detail_json: String,
    #[serde(default)]
    inbox: Option<(u32, u32)>,
    #[serde(default)]
    events: Vec<ComponentEvent>,
    #[serde(default)]
    failed: u64,
    #[serde(default)]
    load: Option<ComponentLoad>,
    #[serde(default)]
    waiting_on: Option<String>,
    #[serde(default)]
    memory_bytes: Option<u64>,
    #[serde(default)]
    detail: Option<ComponentDetail>,
}

impl WireComponent {
    fn from_domain(c: ComponentState) -> Self {
        let status = match c.status {
            ComponentStatus::Unknown => "unknown",
            ComponentStatus::Starting => "starting",
            ComponentStatus::Running => "running",
            ComponentStatus::BackingOff => "backing_off",
            ComponentStatus::Stopped => "stopped",
            ComponentStatus::Failed => "failed",
            ComponentStatus::Paused => "paused",
        };
        Self {
            name: c.name,
            status: status.to_owned(),
            restarts: c.restarts,
            last_failure: c.last_failure,
            last_failure_at: c.last_failure_at,
            backoff_ms: c.backoff_ms,
            processed: c.processed,
            detail_json: c.detail_json,
            inbox: c.inbox,
            events: c.events,
            failed: c.failed,
            load: c.load,
            waiting_on: c.waiting_on,
            memory_bytes: c.memory_bytes,
            detail: c.detail,
        }
    }

    fn into_domain(self) -> ComponentState {
        let status = match self.status.as_str() {
            "starting" => ComponentStatus::Starting,
            "running" => ComponentStatus::Running,
            "backing_off" => ComponentStatus::BackingOff,
            "stopped" => ComponentStatus::Stopped,
            "failed" => ComponentStatus::Failed,
            "paused" => ComponentStatus::Paused,
            _ => ComponentStatus::Unknown,
        };
        ComponentState {
            name: self.name,
            status,
            restarts: self.restarts,
            last_failure: self.last_failure,
            last_failure_at: self.last_failure_at,
            backoff_ms: self.backoff_ms,
            processed: self.processed,
            detail_json: self.detail_json,
            inbox: self.inbox,
            events: self.events,
            failed: self.failed,
            load: self.load,
            waiting_on: self.waiting_on,
            memory_bytes: self.memory_bytes,
            detail: self.detail,
        }
    }
}

struct Inner {
    replica_id: String,
    pool: PgPool,
    db: Db,
    waiters: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
}

/// This replica's link to the others; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl Cluster {
    /// Listens on the cluster channel and forwards the events of this replica's `sessions`;
    /// both tasks end when `shutdown` turns true. The caller attaches the returned cluster to
    /// its gateway (`Gateway::attach_cluster`), which routes requests through it.
    pub async fn start(
        db: &Db,
        sessions: Arc<dyn AgentSessions>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, Error> {
        let pool = db
            .postgres_pool()
            .ok_or_else(|| Error::invalid("replicas must share a postgresql database"))?
            .clone();
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(|e| Error::unavailable(format!("cannot open the cluster listener: {e}")))?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(|e| Error::unavailable(format!("cannot listen on {CHANNEL}: {e}")))?;
        let cluster = Self {
            inner: Arc::new(Inner {
                replica_id: Uuid::now_v7().to_string(),
                pool,
                db: db.clone(),
                waiters: Mutex::new(HashMap::new()),
            }),
        };
        tracing::info!(replica_id = %cluster.inner.replica_id, channel = CHANNEL, "joined the cluster");
        tokio::spawn(cluster.clone().forward(sessions.events().subscribe(), shutdown.clone()));
        tokio::spawn(cluster.clone().listen(listener, sessions, shutdown));
        Ok(cluster)
    }

    pub fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    /// Asks whichever replica holds `agent_id`'s session for its supervision snapshot.
    pub async fn request_introspection(&self, agent_id: &str) -> Result<Introspection, Error> {
        let request_id = Uuid::now_v7().to_string();
        let message = Message::IntrospectionRequest {
            from: self.inner.replica_id.clone(),
            request_id: request_id.clone(),
            agent_id: agent_id.to_owned(),
        };
        match self.ask(agent_id, request_id, &message, "introspection").await? {
            Answer::Introspection(Ok(wire)) => Ok(Introspection {
                components: wire.components.into_iter().map(WireComponent::into_domain).collect(),
                process: wire.process,
            }),
            Answer::Introspection(Err(message)) => Err(Error::unavailable(message)),
            _ => Err(Error::new(ErrorKind::Internal, "another reply to an introspection")),
        }
    }

    /// Sends a command through whichever replica holds `agent_id`'s session.
    pub async fn request_command(
        &self,
        agent_id: &str,
        command_id: Uuid,
        command: AgentCommand,
    ) -> Result<CommandOutcome, Error> {
        let request_id = command_id.to_string();
        let message = Message::CommandRequest {
            from: self.inner.replica_id.clone(),
            request_id: request_id.clone(),
            agent_id: agent_id.to_owned(),
            command,
        };
        match self.ask(agent_id, request_id, &message, "command").await? {
            Answer::Command(CommandReply { outcome: Ok((ok, message)), checks, capture_id, .. }) => {
                Ok(CommandOutcome { ok, message, checks, capture_id })
            }
            Answer::Command(CommandReply { outcome: Err(message), timed_out: true, .. }) => {
                Err(Error::new(ErrorKind::DeadlineExceeded, message))
            }
            Answer::Command(CommandReply { outcome: Err(message), .. }) => Err(Error::unavailable(message)),
            _ => Err(Error::new(ErrorKind::Internal, "another reply to a command")),
        }
    }

    /// Reads the log ring of `agent_id` through whichever replica holds its session; the answer
    /// carries at most [`CLUSTER_LOG_BYTES`] of text, to fit a notification.
    pub async fn request_logs(&self, agent_id: &str, mut query: LogQuery) -> Result<LogPage, Error> {
        query.max_bytes = match query.max_bytes {
            0 => CLUSTER_LOG_BYTES,
            n => n.min(CLUSTER_LOG_BYTES),
        };
        let request_id = Uuid::now_v7().to_string();
        let message = Message::LogsRequest {
            from: self.inner.replica_id.clone(),
            request_id: request_id.clone(),
            agent_id: agent_id.to_owned(),
            query,
        };
        match self.ask(agent_id, request_id, &message, "log request").await? {
            Answer::Logs(Ok(page)) => Ok(page),
            Answer::Logs(Err((true, message))) => Err(Error::invalid(message)),
            Answer::Logs(Err((false, message))) => Err(Error::unavailable(message)),
            _ => Err(Error::new(ErrorKind::Internal, "another reply to a log request")),
        }
    }

    /// Broadcasts a request for an online agent and waits (bounded) for the replica holding
    /// its session to answer.
    async fn ask(
        &self,
        agent_id: &str,
        request_id: String,
        message: &Message,
        what: &str,
    ) -> Result<Answer, Error> {
        let agent = self
            .inner
            .db
            .agent(agent_id)
            .await
            .map_err(|e| Error::unavailable(format!("database unavailable: {e}")))?;
        if !agent.is_some_and(|a| a.online) {
            return Err(Error::unavailable(format!("agent {agent_id} is offline")));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = lock(&self.inner.waiters);
            if waiters.contains_key(&request_id) {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("a {what} with id {request_id} is already waiting for agent {agent_id}'s answer"),
                ));
            }
            waiters.insert(request_id.clone(), tx);
        }
        let sent = self.notify(message).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(AGENT_REQUEST_TIMEOUT, rx).await,
            Err(e) => {
                lock(&self.inner.waiters).remove(&request_id);
                return Err(e);
            }
        };
        lock(&self.inner.waiters).remove(&request_id);
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            // no replica holds the session (or its answer was lost)
            Ok(Err(_)) | Err(_) => Err(Error::new(
                ErrorKind::DeadlineExceeded,
                format!(
                    "no replica answered the {what} of agent {agent_id} within {}s",
                    AGENT_REQUEST_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    async fn notify(&self, message: &Message) -> Result<(), Error> {
        let payload = serde_json::to_string(message)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot encode cluster message: {e}")))?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::exhausted(format!(
                "cluster message of {} bytes exceeds the notify limit of {MAX_PAYLOAD_BYTES}",
                payload.len()
            )));
        }
        sea_orm::sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| Error::unavailable(format!("cannot notify the cluster: {e}")))?;
        Ok(())
    }

    /// Sends this replica's own events to the others.
    async fn forward(
        self,
        mut events: broadcast::Receiver<crate::events::Event>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let event = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                event = events.recv() => event,
            };
            match event {
                Ok(event) if !event.remote => {
                    let message = Message::Event { from: self.inner.replica_id.clone(), event: event.kind };
                    if let Err(e) = self.notify(&message).await {
                        tracing::warn!(error = %e.message, "cannot forward an event to the cluster");
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::warn!(skipped, "cluster forwarder fell behind; events were not forwarded");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn listen(
        self,
        mut listener: PgListener,
        sessions: Arc<dyn AgentSessions>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let received = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                received = listener.recv() => received,
            };
            let notification = match received {
                Ok(n) => n,
                Err(e) => {
                    // PgListener reconnects by itself on the next recv; do not spin meanwhile
                    tracing::warn!(error = %e, "cluster listener failed; reconnecting");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            match serde_json::from_str::<Message>(notification.payload()) {
                Ok(message) => self.handle(message, &sessions),
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed cluster message"),
            }
        }
    }

    fn handle(&self, message: Message, sessions: &Arc<dyn AgentSessions>) {
        let me = &self.inner.replica_id;
        match message {
            Message::Event { from, event } if &from != me => {
                match &event {
                    EventKind::AgentRevoked { agent_id, reason } => {
                        sessions.end_revoked_session(agent_id, reason);
                    }
                    EventKind::SiteConfigChanged { site_id, .. } => sessions.offer_site_config(site_id),
                    _ => {}
                }
                sessions.events().publish_remote(event);
            }
            Message::Event { .. } => {}
            Message::IntrospectionRequest { from, request_id, agent_id } => {
                if &from == me || !sessions.is_online(&agent_id) {
                    return;
                }
                let cluster = self.clone();
                let sessions = Arc::clone(sessions);
                tokio::spawn(async move {
                    let result = match sessions.local_introspection(&agent_id).await {
                        Ok(found) => Ok(WireIntrospection {
                            components: found
                                .components
                                .into_iter()
                                .map(WireComponent::from_domain)
                                .collect(),
                            process: found.process,
                        }),
                        Err(e) => Err(e.message),
                    };
                    let reply = Message::IntrospectionReply { to: from, request_id, result };
                    if let Err(e) = cluster.notify(&reply).await {
                        tracing::warn!(agent_id, error = %e.message, "cannot answer a cluster introspection");
                    }
                });
            }
            Message::IntrospectionReply { to, request_id, result } => {
                self.answer(&to, &request_id, Answer::Introspection(result));
            }
            Message::CommandRequest { from, request_id, agent_id, command } => {
                if &from == me || !sessions.is_online(&agent_id) {
                    return;
                }
                let Ok(command_id) = Uuid::parse_str(&request_id) else {
                    tracing::warn!(request_id, "ignoring a cluster command whose id is not a uuid");
                    return;
                };
                let cluster = self.clone();
                let sessions = Arc::clone(sessions);
                tokio::spawn(async move {
                    let reply = match sessions.local_command(&agent_id, command_id, command).await {
                        Ok(outcome) => CommandReply {
                            outcome: Ok((outcome.ok, outcome.message)),
                            checks: outcome.checks,
                            capture_id: outcome.capture_id,
                            timed_out: false,
                        },
                        Err(e) => CommandReply {
                            timed_out: e.kind == ErrorKind::DeadlineExceeded,
                            outcome: Err(e.message),
                            checks: Vec::new(),
                            capture_id: None,
                        },
                    };
                    let reply = Message::CommandReply { to: from, request_id, reply };
                    if let Err(e) = cluster.notify(&reply).await {
                        tracing::warn!(agent_id, error = %e.message, "cannot answer a cluster command");
                    }
                });
            }
            Message::CommandReply { to, request_id, reply } => {
                self.answer(&to, &request_id, Answer::Command(reply));
            }
            Message::LogsRequest { from, request_id, agent_id, query } => {
                if &from == me || !sessions.is_online(&agent_id) {
                    return;
                }
                let cluster = self.clone();
                let sessions = Arc::clone(sessions);
                tokio::spawn(async move {
                    let result = sessions
                        .local_logs(&agent_id, query)
                        .await
                        .map_err(|e| (e.kind == ErrorKind::InvalidArgument, e.message));
                    let mut reply = Message::LogsReply { to: from, request_id, result };
                    fit_notification(&mut reply);
                    if let Err(e) = cluster.notify(&reply).await {
                        tracing::warn!(agent_id, error = %e.message, "cannot answer a cluster log request");
                    }
                });
            }
            Message::LogsReply { to, request_id, result } => {
                self.answer(&to, &request_id, Answer::Logs(result));
            }
        }
    }
}

/// Drops the oldest lines of a log reply until it fits a notification (escaping can make the
/// JSON of [`CLUSTER_LOG_BYTES`] of text longer than that), marking it truncated.
fn fit_notification(reply: &mut Message) {
    let Message::LogsReply { result: Ok(page), .. } = reply else { return };
    let fits = |page: &LogPage| {
        serde_json::to_string(page).map_or(true, |json| json.len() + 512 <= MAX_PAYLOAD_BYTES)
    };
    while !page.lines.is_empty() && !fits(page) {
        page.lines.remove(0);
        page.truncated = true;
    }
}

impl Cluster {
    /// Hands a reply meant for this replica to the request waiting for it.
    fn answer(&self, to: &str, request_id: &str, answer: Answer) {
        if to != self.inner.replica_id {
            return;
        }
        if let Some(waiter) = lock(&self.inner.waiters).remove(request_id) {
            let _ = waiter.send(answer);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

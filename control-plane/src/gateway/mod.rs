//! The agent gateway: the tonic `AgentGateway::session` bidi stream, the per-session protocol
//! (hello, heartbeats, chunked capture ingest with durable acks; a session's captures are stored
//! concurrently with receiving the next ones, up to `limits.max_stores_per_session`), the
//! registry of live sessions
//! and the routing of requests to agents and their answers (`requests.rs`).
//!
//! Who an agent is: with client certificates (`grpc.tls.client_ca_path`), the agent id is the
//! first subject common name (CN) of the certificate the TLS layer verified; subject alternative
//! names are not consulted. A Hello naming another agent is refused (UNAUTHENTICATED), and so is
//! the Hello of a revoked agent (PERMISSION_DENIED); revoking an agent ends its live session.

pub mod convert;
mod requests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::Utc;
use lanewatch_proto::v1 as pb;
use lanewatch_proto::v1::agent_message::Body as In;
use lanewatch_proto::v1::control_message::Body as Out;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::blob::BlobStore;
use crate::cluster::Cluster;
use crate::config::Limits;
use crate::db::writer::{CaptureWriter, HistoryWriter};
use crate::db::{Db, Inserted};
use crate::domain::{self, AgentHello, Capture, CommandOutcome, DeletionReceipt};
use crate::error::{Error, ErrorKind};
use crate::events::{EventKind, Events};
use crate::ingest::{Assembled, Progress, Upload};
use crate::metrics::Metrics;
use crate::traces;
use requests::{Reply, config_key, logs_key};

/// HTTP/2 flow-control windows of the gateway's server. h2's default of 64 KiB per stream makes a
/// 200 KB capture wait for several window updates, one round trip each; a session's window of
/// 4 MiB lets a few captures be in flight over a long-delay uplink while still bounding what one
/// session can make the server buffer. The connection window covers a handful of sessions that
/// share one connection (agents use one each).
pub const STREAM_WINDOW_BYTES: u32 = 4 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// The largest HTTP/2 DATA frame agents may send: a 256 KiB chunk arrives in one or two frames
/// instead of sixteen of the protocol's default 16 KiB, each of which costs a decode and a
/// flow-control update.
pub const MAX_FRAME_BYTES: u32 = 256 << 10;

/// The tonic server the gateway runs on, with the flow-control windows and frame size above;
/// the binary and `bench api` build it the same way.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

type Outbound = mpsc::Sender<Result<pb::ControlMessage, tonic::Status>>;

struct LiveSession {
    session_id: Uuid,
    site_id: String,
    /// The config version the agent's Hello reported.
    config_version: u64,
    tx: Outbound,
    /// Set to the reason when the agent is revoked; the session then ends.
    revoked: watch::Sender<Option<String>>,
}

struct Shared {
    db: Db,
    /// Ingest's capture rows, written in shared transactions (group commit).
    writer: CaptureWriter,
    blobs: BlobStore,
    limits: Limits,
    metrics: Metrics,
    sessions: Mutex<HashMap<String, LiveSession>>,
    waiters: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    /// Config pushes in flight (`config_key`), so one version goes to one agent once at a time.
    config_pushes: Mutex<HashSet<String>>,
    shutdown: watch::Receiver<bool>,
    /// Stored captures and session changes, for subscriptions and other replicas.
    events: Events,
    /// Other replicas, when several share the database (`cluster.rs`).
    cluster: std::sync::OnceLock<Cluster>,
    /// Refuse sessions without a verified client certificate (`grpc.require_client_cert`).
    require_client_certs: AtomicBool,
    /// Component history: heartbeats' component lines, when `[history]` is enabled.
    history: std::sync::OnceLock<HistoryWriter>,
}

/// The gateway's shared state; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a session ended without a protocol error.
enum End {
    AgentClosed,
    AgentGone,
    Shutdown,
}

enum Next {
    Message(Box<pb::AgentMessage>),
    Closed,
    Shutdown,
}

impl Gateway {
    /// `shutdown` turning true asks every session to end once its current capture is acked.
    pub fn new(
        db: Db,
        blobs: BlobStore,
        limits: Limits,
        metrics: Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                writer: CaptureWriter::spawn(db.clone()),
                db,
                blobs,
                limits,
                metrics,
                sessions: Mutex::new(HashMap::new()),
                waiters: Mutex::new(HashMap::new()),
                config_pushes: Mutex::new(HashSet::new()),
                shutdown,
                events: Events::new(),
                cluster: std::sync::OnceLock::new(),
                require_client_certs: AtomicBool::new(false),
                history: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The tonic service, with the decode limit set to `max_message_bytes`.
    pub fn into_service(self) -> pb::agent_gateway_server::AgentGatewayServer<Self> {
        let limit = self.shared.limits.max_message_bytes;
        pb::agent_gateway_server::AgentGatewayServer::new(self).max_decoding_message_size(limit)
    }

    /// Refuse sessions whose TLS connection carries no client certificate.
    pub fn require_client_certs(&self, required: bool) {
        self.shared.require_client_certs.store(required, Ordering::Relaxed);
    }

    /// Ends the agent's live session on this replica (if any) and tells the other replicas to
    /// end theirs; call after the revocation is stored.
    pub fn revoked(&self, agent_id: &str, reason: &str) {
        self.end_revoked_session(agent_id, reason);
        self.shared
            .events
            .publish(EventKind::AgentRevoked { agent_id: agent_id.to_owned(), reason: reason.to_owned() });
    }

    /// Ends the agent's session on this replica with PERMISSION_DENIED; whether it had one.
    pub fn end_revoked_session(&self, agent_id: &str, reason: &str) -> bool {
        match lock(&self.shared.sessions).get(agent_id) {
            Some(session) => {
                tracing::warn!(agent_id, reason, "ending the session of a revoked agent");
                session.revoked.send_replace(Some(reason.to_owned()));
                true
            }
            None => false,
        }
    }

    pub fn is_online(&self, agent_id: &str) -> bool {
        lock(&self.shared.sessions).contains_key(agent_id)
    }

    /// Whether `agent` has a live session: here, or (with replicas) on the replica whose
    /// heartbeats keep its row fresh.
    pub fn counts_as_online(&self, agent: &domain::Agent) -> bool {
        if self.is_online(&agent.id) {
            return true;
        }
        let fresh = chrono::Duration::seconds(
            i64::try_from(self.shared.limits.agent_offline_after_secs).unwrap_or(i64::MAX),
        );
        self.is_clustered() && agent.online && Utc::now() - agent.last_seen <= fresh
    }

    pub fn events(&self) -> &Events {
        &self.shared.events
    }

    /// Hands every heartbeat's component lines to `history` (best effort: never waits).
    pub fn attach_history(&self, history: HistoryWriter) {
        let _ = self.shared.history.set(history);
    }

    /// Routes requests for agents whose session sits on another replica through `cluster`.
    pub fn attach_cluster(&self, cluster: Cluster) {
        let _ = self.shared.cluster.set(cluster);
    }

    /// Whether other replicas may hold sessions (then the database's `online` flag is the truth).
    pub fn is_clustered(&self) -> bool {
        self.shared.cluster.get().is_some()
    }

    /// Drives one session to its end; never panics on input, never affects other sessions.
    async fn run_session(
        self,
        identity: Result<Option<String>, Error>,
        mut inbound: tonic::Streaming<pb::AgentMessage>,
        tx: Outbound,
    ) {
        let metrics = &self.shared.metrics;
        metrics.sessions_active.inc();
        let mut shutdown = self.shared.shutdown.clone();
        let opened = match identity {
            Ok(identity) => self.open(identity.as_deref(), &mut inbound, &tx, &mut shutdown).await,
            Err(e) => Err(e),
        };
        let outcome = match opened {
            Ok(Some((hello, session_id, mut revoked))) => {
                let outcome =
                    self.serve(&hello, session_id, &mut inbound, &tx, &mut shutdown, &mut revoked).await;
                self.close(&hello.agent_id, session_id).await;
                outcome
            }
            Ok(None) => Ok(End::AgentClosed),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(End::AgentClosed) => tracing::info!("agent closed its session"),
            Ok(End::AgentGone) => tracing::info!("agent went away"),
            Ok(End::Shutdown) => {
                let _ = tx.send(Err(tonic::Status::unavailable("control plane is shutting down"))).await;
            }
            Err(e) => {
                metrics.session_error(e.kind.metric_label());
                tracing::warn!(code = e.kind.metric_label(), error = %e.message, "session ended with an error");
                let _ = tx.send(Err(e.into())).await;
            }
        }
        metrics.sessions_active.dec();
    }

    async fn next(
        &self,
        inbound: &mut tonic::Streaming<pb::AgentMessage>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Next, Error> {
        let silence = Duration::from_secs(self.shared.limits.agent_offline_after_secs);
        let stop = async {
            if shutdown.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = stop => Ok(Next::Shutdown),
            received = tokio::time::timeout(silence, inbound.message()) => match received {
                Err(_) => Err(Error::new(
                    ErrorKind::DeadlineExceeded,
                    format!("no message from the agent for {}s", silence.as_secs()),
                )),
                Ok(Ok(Some(m))) => Ok(Next::Message(Box::new(m))),
                Ok(Ok(None)) => Ok(Next::Closed),
                Ok(Err(status)) => Err(status_to_error(&status)),
            }
        }
    }

    /// Reads Hello, checks who the agent is, records it and answers Welcome; `None` when the
    /// agent left first. `identity` is the agent id of the client certificate, if one was shown.
    async fn open(
        &self,
        identity: Option<&str>,
        inbound: &mut tonic::Streaming<pb::AgentMessage>,
        tx: &Outbound,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<(AgentHello, Uuid, watch::Receiver<Option<String>>)>, Error> {
        let first = match self.next(inbound, shutdown).await? {
            Next::Message(m) => m,
            Next::Closed | Next::Shutdown => return Ok(None),
        };
        let Some(In::Hello(hello)) = first.body else {
            return Err(Error::invalid("first message must be hello"));
        };
        if !pb::SUPPORTED_PROTOCOL_VERSIONS.contains(&hello.protocol_version) {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "protocol version {} is not supported; this control plane speaks {}..={}",
                    hello.protocol_version,
                    pb::SUPPORTED_PROTOCOL_VERSIONS.start(),
                    pb::SUPPORTED_PROTOCOL_VERSIONS.end()
                ),
            ));
        }
        let hello = convert::hello(&hello)?;
        match identity {
            Some(certified) if certified != hello.agent_id => {
                return Err(Error::unauthenticated(format!(
                    "certificate is for agent {certified}, hello says {}",
                    hello.agent_id
                )));
            }
            Some(_) => {}
            None if self.shared.require_client_certs.load(Ordering::Relaxed) => {
                return Err(Error::unauthenticated(format!(
                    "agent {} presented no client certificate",
                    hello.agent_id
                )));
            }
            None => {}
        }
        let revocation = self.shared.db.revocation(&hello.agent_id).await.map_err(|e| {
            Error::unavailable(format!("cannot check whether agent {} is revoked: {e}", hello.agent_id))
        })?;
        if let Some(r) = revocation {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("agent {} is revoked: {}", hello.agent_id, r.reason),
            ));
        }
        self.shared
            .db
            .upsert_agent(&hello, Utc::now())
            .await
            .map_err(|e| Error::unavailable(format!("cannot record agent {}: {e}", hello.agent_id)))?;
        let session_id = Uuid::now_v7();
        let limits = &self.shared.limits;
        #[allow(clippy::needless_update)]
        let welcome = Out::Welcome(pb::Welcome {
            session_id: session_id.to_string(),
            protocol_version: pb::PROTOCOL_VERSION,
            heartbeat_interval_ms: limits.heartbeat_interval_ms,
            max_chunk_bytes: limits.max_chunk_bytes,
            max_image_bytes: limits.max_image_bytes,
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            accepts_deletion_receipts: true,
            // fields added to the contract later keep their defaults until this gateway uses them
            ..Default::default()
        });
        let (revoke_tx, revoked) = watch::channel(None);
        {
            let mut sessions = lock(&self.shared.sessions);
            sessions.insert(
                hello.agent_id.clone(),
                LiveSession {
                    session_id,
                    site_id: hello.site_id.clone(),
                    config_version: hello.config_version,
                    tx: tx.clone(),
                    revoked: revoke_tx,
                },
            );
            self.shared.metrics.agents_online.set(sessions.len() as i64);
        }
        self.shared.events.publish(EventKind::AgentStatus {
            agent_id: hello.agent_id.clone(),
            site_id: hello.site_id.clone(),
            online: true,
            at: Utc::now(),
        });
        tracing::info!(
            agent_id = %hello.agent_id,
            site_id = %hello.site_id,
            software_version = %hello.software_version,
            %session_id,
            "agent session opened"
        );
        if tx.send(Ok(pb::ControlMessage { body: Some(welcome) })).await.is_err() {
            self.close(&hello.agent_id, session_id).await;
            return Ok(None);
        }
        // record a local edit and the config the agent runs, and offer the site's newest (an agent
        // offline during an edit gets it here); in the background: the push awaits the replies
        let (gateway, agent) = (self.clone(), hello.clone());
        tokio::spawn(async move {
            let db = gateway.shared.db.clone();
            crate::rollout::session_opened(&gateway, &db, &agent).await;
        });
        Ok(Some((hello, session_id, revoked)))
    }

    async fn close(&self, agent_id: &str, session_id: Uuid) {
        let removed = {
            let mut sessions = lock(&self.shared.sessions);
            let ours = sessions.get(agent_id).is_some_and(|s| s.session_id == session_id);
            if ours {
                sessions.remove(agent_id);
            }
            self.shared.metrics.agents_online.set(sessions.len() as i64);
            ours
        };
        if removed {
            if let Err(e) = self.shared.db.mark_offline(agent_id).await {
                tracing::warn!(agent_id, error = %e, "cannot mark agent offline");
            }
            let site_id = match self.shared.db.agent(agent_id).await {
                Ok(Some(agent)) => agent.site_id,
                _ => String::new(),
            };
            self.shared.events.publish(EventKind::AgentStatus {
                agent_id: agent_id.to_owned(),
                site_id,
                online: false,
                at: Utc::now(),
            });
        }
        tracing::info!(agent_id, %session_id, "agent session closed");
    }

    async fn serve(
        &self,
        hello: &AgentHello,
        session_id: Uuid,
        inbound: &mut tonic::Streaming<pb::AgentMessage>,
        tx: &Outbound,
        shutdown: &mut watch::Receiver<bool>,
        revoked: &mut watch::Receiver<Option<String>>,
    ) -> Result<End, Error> {
        let mut stores = JoinSet::new();
        let end = self.serve_messages(hello, session_id, inbound, tx, shutdown, revoked, &mut stores).await;
        // Stores still running when the session ends finish on their own; their acks are lost
        // with the session, so the agent re-sends and gets DUPLICATE: nothing is stored twice.
        stores.detach_all();
        end
    }

    /// The message loop of [`Self::serve`]. A completed capture is stored in `stores` while the
    /// next ones are received, at most `limits.max_stores_per_session` at a time; each is acked
    /// when its blob and row are durable, so acks may overtake each other.
    #[allow(clippy::too_many_arguments)]
    async fn serve_messages(
        &self,
        hello: &AgentHello,
        session_id: Uuid,
        inbound: &mut tonic::Streaming<pb::AgentMessage>,
        tx: &Outbound,
        shutdown: &mut watch::Receiver<bool>,
        revoked: &mut watch::Receiver<Option<String>>,
        stores: &mut JoinSet<Result<pb::CaptureAck, Error>>,
    ) -> Result<End, Error> {
        let limits = self.shared.limits;
        let mut upload: Option<Upload> = None;
        // the trace spans of the capture being received: its ingest, and the receive under it
        let mut upload_spans: Option<traces::Receiving> = None;
        let mut stopping = false;
        let history_agent: Arc<str> = Arc::from(hello.agent_id.as_str());
        let mut history_at = chrono::DateTime::<Utc>::MIN_UTC;
        loop {
            // On shutdown, a capture being received may still finish, and captures being stored
            // are acked; then the session ends.
            let receiving = !(stopping && upload.is_none());
            if !receiving && stores.is_empty() {
                return Ok(End::Shutdown);
            }
            // at the store limit, no more is read: the agent's uploads wait in flow control
            let reading = receiving && stores.len() < limits.max_stores_per_session.max(1);
            // a revocation ends the session between messages; a capture being received is
            // dropped unacked and stays in the agent's buffer
            let next = tokio::select! {
                Ok(()) = revoked.changed() => {
                    let reason = revoked.borrow().clone().unwrap_or_default();
                    return Err(Error::new(
                        ErrorKind::PermissionDenied,
                        format!("agent {} is revoked: {reason}", hello.agent_id),
                    ));
                }
                Some(stored) = stores.join_next(), if !stores.is_empty() => {
                    if tx.send(Ok(ack_message(stored)?)).await.is_err() {
                        return Ok(End::AgentGone);
                    }
                    continue;
                }
                next = self.next(inbound, shutdown), if reading => next?,
            };
            let msg = match next {
                Next::Message(m) => m,
                // the agent may still read: the captures being stored are acked first
                Next::Closed => {
                    while let Some(stored) = stores.join_next().await {
                        if tx.send(Ok(ack_message(stored)?)).await.is_err() {
                            return Ok(End::AgentGone);
                        }
                    }
                    return Ok(End::AgentClosed);
                }
                Next::Shutdown => {
                    stopping = true;
                    *shutdown = watch::channel(false).1; // stop selecting on the fired signal
                    continue;
                }
            };
            let received_at = Utc::now();
            let wants_heartbeat_acks = hello.wants_heartbeat_acks;
            let Some(body) = msg.body else {
                return Err(Error::invalid("agent message has no body"));
            };
            match body {
                In::Hello(_) => return Err(Error::invalid("hello is only allowed as the first message")),
                In::Heartbeat(h) => {
                    if wants_heartbeat_acks {
                        let ack = pb::HeartbeatAck {
                            heartbeat_sent_at: h.sent_at,
                            received_at: Some(convert::to_timestamp(received_at)),
                            replied_at: Some(convert::to_timestamp(Utc::now())),
                        };
                        if tx
                            .send(Ok(pb::ControlMessage { body: Some(Out::HeartbeatAck(ack)) }))
                            .await
                            .is_err()
                        {
                            return Ok(End::AgentGone);
                        }
                    }
                    if let Err(e) =
                        self.shared.db.record_heartbeat(&hello.agent_id, convert::pulse(&h), Utc::now()).await
                    {
                        tracing::warn!(agent_id = %hello.agent_id, error = %e, "cannot record heartbeat");
                    }
                    if let Some(history) = self.shared.history.get() {
                        // a sample is keyed by its millisecond: a session's are never equal
                        let at = Utc::now().max(history_at + chrono::Duration::milliseconds(1));
                        history_at = at;
                        let samples = h.components.into_iter().map(convert::component);
                        history.offer(
                            samples
                                .map(|c| domain::ComponentSample::of(history_agent.clone(), c, at))
                                .collect(),
                        );
                    }
                }
                In::CaptureStart(start) => {
                    if let Some(current) = &upload {
                        return Err(Error::invalid(format!(
                            "capture_start while capture {} is in progress",
                            current.capture_id()
                        )));
                    }
                    let req = convert::capture_start(&start, &hello.site_id, &limits)?;
                    let (traceparent, now) = (req.traceparent.as_deref(), Utc::now());
                    let spans =
                        traces::receiving(&req.meta, req.size_bytes, &hello.agent_id, traceparent, now);
                    upload_spans = Some(spans);
                    upload = Some(Upload::new(req.meta, req.content_type, req.size_bytes, req.sha256));
                }
                In::CaptureChunk(chunk) => {
                    let Some(current) = upload.take() else {
                        return Err(Error::invalid(format!(
                            "capture_chunk for capture {:?} without capture_start",
                            chunk.capture_id
                        )));
                    };
                    match current.push(&chunk.capture_id, chunk.offset, chunk.data, limits.max_chunk_bytes)? {
                        Progress::Partial(next) => upload = Some(next),
                        Progress::Complete(assembled) => {
                            let gateway = self.clone();
                            let agent_id = hello.agent_id.clone();
                            // received and verified: the ingest span goes on into the store
                            let ingest = upload_spans
                                .take()
                                .map_or_else(tracing::Span::none, traces::Receiving::received);
                            stores.spawn(tracing::Instrument::instrument(
                                async move { gateway.store(&agent_id, session_id, assembled).await },
                                ingest,
                            ));
                        }
                    }
                }
                In::DeletionReceipt(r) => {
                    let receipt = convert::deletion_receipt(&r, hello, Utc::now())?;
                    let ack = self.store_receipts(&hello.agent_id, session_id, &[receipt]).await?;
                    if tx.send(Ok(pb::ControlMessage { body: Some(Out::ReceiptAck(ack)) })).await.is_err() {
                        return Ok(End::AgentGone);
                    }
                }
                In::Introspection(r) => {
                    let introspection = domain::Introspection {
                        components: r.components.into_iter().map(convert::component).collect(),
                        process: r.process.map(convert::process),
                    };
                    self.route_reply(&r.request_id, Reply::Introspection(introspection));
                }
                In::CommandResult(r) => {
                    self.route_reply(
                        &r.command_id,
                        Reply::Command(CommandOutcome {
                            ok: r.ok,
                            message: r.message,
                            checks: r
                                .checks
                                .into_iter()
                                .map(|c| domain::DiagnosticCheck {
                                    name: c.name,
                                    ok: c.ok,
                                    message: c.message,
                                })
                                .collect(),
                            capture_id: Uuid::parse_str(&r.capture_id).ok(),
                        }),
                    );
                }
                In::Logs(r) => {
                    let key = logs_key(&r.request_id);
                    self.route_reply(&key, Reply::Logs(convert::logs_response(r)));
                }
                In::ConfigAck(a) => {
                    let staged = a.outcome == pb::ConfigOutcome::Staged as i32;
                    self.record_config_ack(hello, a.config_version, staged, &a.error).await;
                    self.route_reply(
                        &config_key(&hello.agent_id, a.config_version),
                        Reply::Config { staged, error: a.error },
                    );
                }
                // messages added to the contract later (e.g. by a newer agent) are ignored here,
                // so a regenerated proto keeps this gateway compiling and serving
                #[allow(unreachable_patterns)]
                _ => {
                    tracing::debug!(agent_id = %hello.agent_id, "ignoring an agent message this gateway does not handle")
                }
            }
        }
    }

    /// Stores deletion receipts durably (idempotent on the receipt id); returns the ack to send.
    async fn store_receipts(
        &self,
        agent_id: &str,
        session_id: Uuid,
        receipts: &[DeletionReceipt],
    ) -> Result<pb::ReceiptAck, Error> {
        let new = self.shared.db.insert_receipts(receipts).await.map_err(|e| {
            Error::unavailable(format!("cannot store {} deletion receipts: database: {e}", receipts.len()))
        })?;
        for r in receipts {
            tracing::info!(
                agent_id,
                %session_id,
                receipt_id = %r.receipt_id,
                capture_id = ?r.capture_id,
                reason = r.reason.as_str(),
                "deletion receipt stored"
            );
        }
        tracing::debug!(agent_id, received = receipts.len(), new, "deletion receipts stored");
        Ok(pb::ReceiptAck { receipt_ids: receipts.iter().map(|r| r.receipt_id.to_string()).collect() })
    }

    /// Stores a verified capture: blob first, then metadata; returns the ack to send.
    ///
    /// There is no read before the put: the blob key is content-addressed, so a re-sent capture
    /// (an agent that missed its ack) puts identical bytes under the same key, and the row's
    /// `ON CONFLICT DO NOTHING` answers DUPLICATE; one re-sent under the same id with other bytes
    /// lands under another key and never replaces the stored evidence. The common case costs one
    /// statement; a duplicate costs one more put.
    async fn store(&self, agent_id: &str, session_id: Uuid, a: Assembled) -> Result<pb::CaptureAck, Error> {
        let started = tokio::time::Instant::now();
        let metrics = &self.shared.metrics;
        let id = a.meta.id;
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            metrics.ingested("failed");
            let message = format!("cannot store capture {id}: {what}: {e}");
            traces::failed(&tracing::Span::current(), &message);
            Error::unavailable(message)
        };
        let policy = self
            .shared
            .db
            .hov_policy_for_ingest(&a.meta.site_id, a.meta.lane)
            .await
            .map_err(|e| unavailable("database", &e))?;
        let image_key = domain::image_key(&a.meta, a.content_type, &a.sha256);
        let image_bytes = a.data.len() as u64;
        let decision = domain::decide(&a.meta, policy.as_ref());
        tracing::Span::current().record("capture.decision", decision.as_str());
        let put = self.shared.blobs.put_verified(&image_key, a.data, a.content_type.mime(), a.sha256);
        tracing::Instrument::instrument(put, traces::blob_put(image_bytes))
            .await
            .map_err(|e| unavailable("blob store", &e))?;
        let capture = Capture {
            meta: a.meta,
            agent_id: agent_id.to_owned(),
            image_key,
            image_sha256: a.sha256,
            image_bytes,
            image_content_type: a.content_type,
            received_at: Utc::now(),
            decision,
            trace_parent: traces::traceparent_of(&tracing::Span::current()),
        };
        // the row commits with others' in one transaction (group commit): this waits for it
        let commit = self.shared.writer.insert(capture.clone());
        let outcome = match tracing::Instrument::instrument(commit, traces::db_commit())
            .await
            .map_err(|e| unavailable("database", &e))?
        {
            Inserted::New => {
                metrics.capture_bytes.inc_by(image_bytes);
                self.shared.events.publish(EventKind::CaptureStored {
                    capture_id: id,
                    site_id: capture.meta.site_id.clone(),
                });
                pb::AckOutcome::Stored
            }
            Inserted::Duplicate => {
                if let Ok(Some(first)) = self.shared.db.capture(id, &domain::Visibility::All).await
                    && first.image_key != capture.image_key
                {
                    tracing::warn!(
                        agent_id, capture_id = %id, kept = %first.image_key, unreferenced = %capture.image_key,
                        "capture re-sent with other image bytes: the first stays; the new object is unreferenced"
                    );
                }
                pb::AckOutcome::Duplicate
            }
        };
        let label = if outcome == pb::AckOutcome::Stored { "stored" } else { "duplicate" };
        metrics.ingested(label);
        metrics.ingest_duration_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(agent_id, %session_id, capture_id = %id, outcome = label, "capture ingested");
        Ok(pb::CaptureAck { capture_id: id.to_string(), outcome: outcome as i32 })
    }
}

/// The ack of a finished store, or the error that ends the session.
fn ack_message(
    stored: Result<Result<pb::CaptureAck, Error>, tokio::task::JoinError>,
) -> Result<pb::ControlMessage, Error> {
    let ack =
        stored.map_err(|e| Error::new(ErrorKind::Internal, format!("storing a capture failed: {e}")))??;
    Ok(pb::ControlMessage { body: Some(Out::CaptureAck(ack)) })
}

fn status_to_error(status: &tonic::Status) -> Error {
    let kind = match status.code() {
        // tonic reports a message over max_decoding_message_size as OUT_OF_RANGE
        tonic::Code::ResourceExhausted | tonic::Code::OutOfRange => ErrorKind::ResourceExhausted,
        // tonic reports bytes that do not decode as protobuf as INTERNAL: the agent sent them,
        // so it is the agent's argument that is malformed, not our server.
        tonic::Code::InvalidArgument | tonic::Code::Internal => {
            return Error::new(
                ErrorKind::InvalidArgument,
                format!("malformed agent message: {}", status.message()),
            );
        }
        tonic::Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        _ => ErrorKind::Unavailable,
    };
    Error::new(kind, format!("reading agent message: {}", status.message()))
}

/// The agent id a client certificate (DER) is for: its first subject common name.
pub fn certificate_agent_id(der: &[u8]) -> Result<String, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::unauthenticated(format!("cannot parse the client certificate: {e}")))?;
    let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
    match cn {
        Some(id) if !id.trim().is_empty() => Ok(id.to_owned()),
        _ => Err(Error::unauthenticated("the client certificate has no subject common name (the agent id)")),
    }
}

#[tonic::async_trait]
impl pb::agent_gateway_server::AgentGateway for Gateway {
    type SessionStream = ReceiverStream<Result<pb::ControlMessage, tonic::Status>>;

    async fn session(
        &self,
        request: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<tonic::Response<Self::SessionStream>, tonic::Status> {
        let peer = request.remote_addr();
        let identity = match request.peer_certs() {
            Some(certs) => match certs.first() {
                Some(leaf) => certificate_agent_id(leaf).map(Some),
                None => Ok(None),
            },
            None => Ok(None),
        };
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let gateway = self.clone();
        let span = tracing::info_span!("session", peer = ?peer);
        tokio::spawn(tracing::Instrument::instrument(gateway.run_session(identity, inbound, tx), span));
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests;

//! Uplink: the agent's session with the control plane. Uploads buffered captures, sends
//! heartbeats, answers introspection, stages pushed configs and runs operator commands.
//!
//! Only this module and `wire` know protobuf types. A capture leaves the buffer only when its
//! `CaptureAck` (STORED or DUPLICATE) arrived; after a session error everything unacked is sent
//! again (ingest is idempotent on the capture id).
//!
//! Captures go by value, not by age ([`Buffer::next_by_priority`]): after an outage the backlog
//! sends violation candidates first, then compliant, then statistics, oldest first within a
//! class; a more valuable capture made meanwhile overtakes the rest of the backlog. Image bytes
//! pass a token bucket when `max_upload_bytes_per_sec` is set ([`throttle`]).
//!
//! Deletion receipts (captures the buffer deleted without upload) are sent only to a control
//! plane whose `Welcome` set `accepts_deletion_receipts`, and leave the buffer only when their
//! `ReceiptAck` arrived; unacked receipts are sent again in the next session.
//!
//! A `ConfigPush` is validated with this machine's checks (files must exist here) and must keep
//! the agent id and site; it is then written atomically over the config file and acked STAGED
//! (else REJECTED with the reason), and `reload` asks `main.rs` to rebuild the components with
//! it. A config the agent could not run is reported as a REJECTED `ConfigAck` after each
//! Welcome (`apply_failure`), since the session that staged it is gone by then.
//!
//! With `client_cert_path`/`client_key_path` the agent shows its certificate (mutual TLS). A
//! session the control plane refuses (PERMISSION_DENIED: revoked; UNAUTHENTICATED: wrong or
//! missing certificate) is logged as an error and retried after the longest backoff only, and
//! the component's state says `refused` with the message until a session opens again.
//!
//! The component's state (`UplinkState`: link, session id, acked, buffer) is published
//! beside the sessions whenever the session state, the acked count or the buffer changes, each
//! time from the live values ([`publish_state`]), not only when a session opens or ends.

pub mod throttle;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use lanewatch_proto::v1 as pb;
use lanewatch_proto::v1::agent_gateway_client::AgentGatewayClient;
use pb::{agent_message, command, control_message};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use uuid::Uuid;

use crate::buffer::Buffer;
use crate::config::ControlPlaneConfig;
use crate::logs::Logs;
use crate::state::{ComponentState, UplinkLink, UplinkState};
use crate::supervisor::{ComponentCtx, ComponentStatus, Registry, RunFuture, SupervisorHandle};
use crate::test_capture::TestCameras;

const DEFAULT_MAX_CHUNK_BYTES: usize = 64 * 1024;
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a staged config's ack has to leave before the components are rebuilt.
const ACK_BEFORE_RELOAD: Duration = Duration::from_millis(200);
/// Most deletion receipts sent and not yet acknowledged.
const MAX_RECEIPTS_IN_FLIGHT: usize = 256;
/// How long a test capture may take its camera; the control plane gives a command 5 s.
const TEST_CAPTURE_WAIT: Duration = Duration::from_secs(4);

/// Everything the uplink needs; shared by restarts.
pub struct UplinkComponent {
    pub control_plane: ControlPlaneConfig,
    pub config_dir: Option<PathBuf>,
    pub agent_id: String,
    pub site_id: String,
    pub config_version: u64,
    /// The agent's config file; staged pushes are written here.
    pub config_path: PathBuf,
    pub buffer: Buffer,
    pub registry: Registry,
    /// Set once the supervisor runs; needed for RestartComponent commands.
    pub supervisor: Arc<OnceLock<SupervisorHandle>>,
    /// Told the version of each config staged, so that the agent rebuilds its components
    /// with it (`main.rs`); `None`: staged configs wait for the next start.
    pub reload: Option<mpsc::UnboundedSender<u64>>,
    /// A staged config version this agent could not run (and why): reported to the control
    /// plane as a REJECTED `ConfigAck` after each Welcome.
    pub apply_failure: Option<(u64, String)>,
    /// Captures the control plane acknowledged, counted across restarts (the state's `acked`).
    pub acked: Arc<AtomicU64>,
    /// The results of the last commands run, by command id, kept across restarts: a command
    /// sent again (a retry after a lost answer) gets its first result and is not run twice.
    pub commands: RecentCommands,
    /// The agent's log ring and filter: `LogsRequest`s and `SetLogFilter` commands.
    pub logs: Logs,
    /// Uploads paused by an operator (`PauseComponent` of the uplink), across restarts; the
    /// session stays open meanwhile, for commands and heartbeats.
    pub paused: Arc<AtomicBool>,
    /// This agent's clock against the control plane's, from the last heartbeat round trip.
    pub clock: Arc<std::sync::Mutex<Option<wire::ClockOffset>>>,
    /// The cameras of this generation, for `TriggerTestCapture` commands.
    pub test_cameras: TestCameras,
    /// Traces each upload (`traces.rs`) when the agent traces.
    pub tracer: Option<Arc<crate::traces::CaptureTracer>>,
}

/// The results of the last [`RecentCommands::CAPACITY`] commands, oldest first.
#[derive(Clone, Default)]
pub struct RecentCommands(Arc<std::sync::Mutex<std::collections::VecDeque<pb::CommandResult>>>);

impl RecentCommands {
    pub const CAPACITY: usize = 256;

    fn get(&self, command_id: &str) -> Option<pb::CommandResult> {
        let recent = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.iter().find(|r| r.command_id == command_id).cloned()
    }

    fn record(&self, result: &pb::CommandResult) {
        let mut recent = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == Self::CAPACITY {
            recent.pop_front();
        }
        recent.push_back(result.clone());
    }
}

impl crate::supervisor::Component for UplinkComponent {
    fn name(&self) -> String {
        "uplink".into()
    }

    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        if self.paused.load(Ordering::SeqCst) {
            ctx.registry.update(&ctx.name, |s| s.status = ComponentStatus::Paused);
        }
        let (link, link_rx) = watch::channel(Link::default());
        let published = publish_state(ctx.clone(), self.buffer.clone(), self.acked.clone(), link_rx);
        let me = Uplink {
            cp: self.control_plane.clone(),
            config_dir: self.config_dir.clone(),
            agent_id: self.agent_id.clone(),
            site_id: self.site_id.clone(),
            config_version: self.config_version,
            config_path: self.config_path.clone(),
            buffer: self.buffer.clone(),
            registry: self.registry.clone(),
            supervisor: self.supervisor.clone(),
            reload: self.reload.clone(),
            apply_failure: self.apply_failure.clone(),
            ctx,
            acked: self.acked.clone(),
            commands: self.commands.clone(),
            logs: self.logs.clone(),
            paused: self.paused.clone(),
            clock: self.clock.clone(),
            test_cameras: self.test_cameras.clone(),
            tracer: self.tracer.clone(),
            link,
            bucket: throttle::TokenBucket::new(self.control_plane.max_upload_bytes_per_sec),
        };
        Box::pin(async move {
            tokio::select! {
                result = me.run() => result,
                never = published => match never {},
            }
        })
    }
}

/// The session's side of the uplink's state; [`publish_state`] adds the live counts.
#[derive(Debug, Clone, Default)]
struct Link {
    /// The open session's id; `None` while disconnected.
    session_id: Option<String>,
    /// Why the control plane last refused a session; cleared when one opens.
    refused: Option<String>,
}

/// Publishes the uplink's state now and again whenever the session state (`link`, also
/// touched after each ack) or the buffer changes, reading the acked count and the buffer's
/// counters as they are at that moment. Runs until dropped with the component's run.
async fn publish_state(
    ctx: ComponentCtx,
    buffer: Buffer,
    acked: Arc<AtomicU64>,
    mut link: watch::Receiver<Link>,
) -> std::convert::Infallible {
    let mut stats = buffer.subscribe();
    loop {
        let Link { session_id, refused } = link.borrow_and_update().clone();
        stats.borrow_and_update();
        let (state, refused) = match (&session_id, refused) {
            (Some(_), _) => (UplinkLink::Connected, None),
            (None, Some(message)) => (UplinkLink::Refused, Some(message)),
            (None, None) => (UplinkLink::Disconnected, None),
        };
        ctx.state(ComponentState::Uplink(UplinkState {
            state,
            refused,
            session_id: session_id.unwrap_or_default(),
            acked: acked.load(Ordering::SeqCst),
            buffer: buffer.stats(),
        }));
        // neither sender goes away while this runs (the uplink and the buffer hold them)
        tokio::select! {
            changed = link.changed() => if changed.is_err() { std::future::pending::<()>().await },
            changed = stats.changed() => if changed.is_err() { std::future::pending::<()>().await },
        }
    }
}

struct Uplink {
    cp: ControlPlaneConfig,
    config_dir: Option<PathBuf>,
    agent_id: String,
    site_id: String,
    config_version: u64,
    config_path: PathBuf,
    buffer: Buffer,
    registry: Registry,
    supervisor: Arc<OnceLock<SupervisorHandle>>,
    reload: Option<mpsc::UnboundedSender<u64>>,
    apply_failure: Option<(u64, String)>,
    ctx: ComponentCtx,
    acked: Arc<AtomicU64>,
    commands: RecentCommands,
    logs: Logs,
    paused: Arc<AtomicBool>,
    clock: Arc<std::sync::Mutex<Option<wire::ClockOffset>>>,
    test_cameras: TestCameras,
    tracer: Option<Arc<crate::traces::CaptureTracer>>,
    /// What the state says about the session ([`publish_state`]).
    link: watch::Sender<Link>,
    /// Shared by the sessions of one run, so reconnecting does not refill the burst.
    bucket: throttle::TokenBucket,
}

/// Whether a session status means the control plane refuses this agent (not a passing fault).
fn is_refusal(code: tonic::Code) -> bool {
    matches!(code, tonic::Code::PermissionDenied | tonic::Code::Unauthenticated)
}

/// Exponential backoff with jitter (50–100 % of the step).
pub fn jittered(step_ms: u64) -> Duration {
    let low = step_ms / 2;
    Duration::from_millis(rand::rng().random_range(low..=step_ms.max(low)))
}

struct Session {
    tx: mpsc::Sender<pb::AgentMessage>,
    in_flight: HashSet<Uuid>,
    /// Sequence numbers sent (or skipped as too large) in this session.
    sent: HashSet<u64>,
    max_chunk_bytes: usize,
    max_image_bytes: u64,
    /// `None` when the control plane does not take deletion receipts.
    receipts_in_flight: Option<HashSet<Uuid>>,
    /// The traced uploads awaiting their ack; those of a session that ends unacked end with it.
    uploads: HashMap<Uuid, crate::traces::UploadSpan>,
}

impl Session {
    async fn send(&self, body: agent_message::Body) -> anyhow::Result<()> {
        self.tx
            .send(pb::AgentMessage { body: Some(body) })
            .await
            .map_err(|_| anyhow::anyhow!("session stream closed"))
    }
}

impl Uplink {
    async fn run(mut self) -> anyhow::Result<()> {
        let mut step_ms = self.cp.reconnect_min_ms;
        loop {
            let mut welcomed = false;
            let result = self.session(&mut welcomed).await;
            self.link.send_modify(|l| l.session_id = None);
            if welcomed {
                step_ms = self.cp.reconnect_min_ms;
            }
            match result {
                Ok(()) => tracing::info!("control plane ended the session"),
                Err(err) => match err.downcast_ref::<tonic::Status>() {
                    Some(status) if is_refusal(status.code()) => {
                        tracing::error!(
                            code = ?status.code(),
                            message = status.message(),
                            "control plane refused this agent; retrying after the longest backoff"
                        );
                        self.link.send_modify(|l| l.refused = Some(status.message().to_owned()));
                        step_ms = self.cp.reconnect_max_ms;
                    }
                    Some(status) => {
                        tracing::warn!(code = ?status.code(), message = status.message(), "session failed")
                    }
                    None => tracing::warn!(error = format!("{err:#}"), "session failed"),
                },
            }
            let delay = jittered(step_ms);
            tracing::info!(delay_ms = delay.as_millis() as u64, "reconnecting to control plane");
            tokio::time::sleep(delay).await;
            step_ms = (step_ms.saturating_mul(2)).min(self.cp.reconnect_max_ms);
        }
    }

    async fn connect(&self) -> anyhow::Result<AgentGatewayClient<tonic::transport::Channel>> {
        let keepalive = Duration::from_millis(self.cp.heartbeat_interval_ms.max(1000));
        let mut endpoint = Endpoint::from_shared(self.cp.url.clone())
            .context("invalid control plane url")?
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(Some(Duration::from_secs(30)))
            // a partition that drops packets without closing the connection (a blackhole)
            // would otherwise leave the session waiting for acks forever: HTTP/2 pings that
            // go unanswered end it, and the backoff loop reconnects
            .http2_keep_alive_interval(keepalive)
            .keep_alive_timeout(keepalive * 3)
            .keep_alive_while_idle(true);
        if self.cp.url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.cp.ca_path {
                let path = crate::config::resolve(self.config_dir.as_deref(), ca);
                let pem =
                    tokio::fs::read(&path).await.with_context(|| format!("reading ca {}", path.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&self.cp.client_cert_path, &self.cp.client_key_path) {
                let dir = self.config_dir.as_deref();
                let (cert, key) = (crate::config::resolve(dir, cert), crate::config::resolve(dir, key));
                let cert_pem = tokio::fs::read(&cert)
                    .await
                    .with_context(|| format!("reading client certificate {}", cert.display()))?;
                let key_pem = tokio::fs::read(&key)
                    .await
                    .with_context(|| format!("reading client key {}", key.display()))?;
                tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
            }
            endpoint = endpoint.tls_config(tls).context("tls config")?;
        }
        let channel = endpoint.connect().await.context("connecting to control plane")?;
        Ok(AgentGatewayClient::new(channel).max_decoding_message_size(16 << 20))
    }

    async fn session(&mut self, welcomed: &mut bool) -> anyhow::Result<()> {
        let mut client = self.connect().await?;
        let (tx, rx) = mpsc::channel(64);
        // a local edit the control plane has not recorded travels with the Hello
        let local_config = if crate::config::local_edit_marker(&self.config_path).exists() {
            tokio::fs::read_to_string(&self.config_path).await.unwrap_or_default()
        } else {
            String::new()
        };
        let hello = pb::Hello {
            protocol_version: pb::PROTOCOL_VERSION,
            agent_id: self.agent_id.clone(),
            site_id: self.site_id.clone(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            config_version: self.config_version,
            wants_heartbeat_acks: true,
            local_config,
        };
        tx.send(pb::AgentMessage { body: Some(agent_message::Body::Hello(hello)) }).await.ok();
        let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
        let first = tokio::time::timeout(WELCOME_TIMEOUT, inbound.message())
            .await
            .context("no welcome in time")??;
        let welcome = match first.and_then(|m| m.body) {
            Some(control_message::Body::Welcome(w)) => w,
            other => anyhow::bail!("expected welcome, got {other:?}"),
        };
        *welcomed = true;
        tracing::info!(session_id = %welcome.session_id, protocol_version = welcome.protocol_version, server_version = %welcome.server_version, "session open");
        self.link.send_replace(Link { session_id: Some(welcome.session_id.clone()), refused: None });
        let interval_ms = if welcome.heartbeat_interval_ms > 0 {
            u64::from(welcome.heartbeat_interval_ms)
        } else {
            self.cp.heartbeat_interval_ms
        };
        let mut heartbeat = tokio::time::interval(Duration::from_millis(interval_ms));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut session = Session {
            tx,
            in_flight: HashSet::new(),
            sent: HashSet::new(),
            max_chunk_bytes: if welcome.max_chunk_bytes > 0 {
                welcome.max_chunk_bytes as usize
            } else {
                DEFAULT_MAX_CHUNK_BYTES
            },
            max_image_bytes: welcome.max_image_bytes,
            receipts_in_flight: welcome.accepts_deletion_receipts.then(HashSet::new),
            uploads: HashMap::new(),
        };
        if let Some((config_version, error)) = &self.apply_failure {
            // the control plane records it idempotently; sent each session until a config applies
            let ack = pb::ConfigAck {
                config_version: *config_version,
                outcome: pb::ConfigOutcome::Rejected as i32,
                error: error.clone(),
            };
            session.send(agent_message::Body::ConfigAck(ack)).await?;
        }
        let mut stats = self.buffer.subscribe();
        loop {
            self.fill_window(&mut session).await?;
            self.send_receipts(&mut session).await?;
            self.ctx.wait_on(crate::load::WaitingOn::ControlPlane);
            tokio::select! {
                message = inbound.message() => match message? {
                    Some(message) => self.handle(&mut session, message).await?,
                    None => return Ok(()),
                },
                _ = heartbeat.tick() => self.heartbeat(&session).await?,
                changed = stats.changed() => changed.context("buffer gone")?,
            }
        }
    }

    /// Sends pending captures, most valuable first, until `max_in_flight` are unacknowledged.
    async fn fill_window(&mut self, session: &mut Session) -> anyhow::Result<()> {
        if self.paused.load(Ordering::SeqCst) {
            return Ok(());
        }
        while session.in_flight.len() < self.cp.max_in_flight {
            let buffer = self.buffer.clone();
            let sent = std::mem::take(&mut session.sent);
            let (sent, next) = tokio::task::spawn_blocking(move || {
                let next = buffer.next_by_priority(&sent);
                (sent, next)
            })
            .await?;
            session.sent = sent;
            let Some((seq, capture)) = next? else { return Ok(()) };
            session.sent.insert(seq);
            let id = capture.meta.capture_id;
            if session.max_image_bytes > 0 && capture.image.len() as u64 > session.max_image_bytes {
                tracing::error!(capture_id = %id, size = capture.image.len(), max = session.max_image_bytes, "capture larger than the control plane accepts, skipped this session");
                self.ctx.failed(1);
                continue;
            }
            if !session.in_flight.insert(id) {
                continue;
            }
            let id_text = id.to_string();
            let (upload, traceparent) = match &self.tracer {
                Some(tracer) => tracer.upload(&capture.meta),
                None => (None, None),
            };
            let start = wire::capture_start(&capture, traceparent.as_deref());
            session.send(agent_message::Body::CaptureStart(start)).await?;
            if let Some(upload) = upload {
                session.uploads.insert(id, upload);
            }
            // under a cap, a chunk is at most one second of it, so the control plane keeps
            // hearing from us while we wait for tokens
            let chunk_bytes = match self.cp.max_upload_bytes_per_sec {
                0 => session.max_chunk_bytes,
                rate => session.max_chunk_bytes.min(usize::try_from(rate).unwrap_or(usize::MAX)),
            };
            for chunk in wire::chunks(&id_text, &capture.image, chunk_bytes) {
                self.bucket.take(chunk.data.len()).await;
                session.send(agent_message::Body::CaptureChunk(chunk)).await?;
            }
            tracing::debug!(capture_id = %id, seq, class = capture.meta.value_class.as_str(), bytes = capture.image.len(), "capture sent");
        }
        Ok(())
    }

    /// Sends the buffered deletion receipts that are not in flight yet, oldest first.
    async fn send_receipts(&mut self, session: &mut Session) -> anyhow::Result<()> {
        let Some(in_flight) = session.receipts_in_flight.as_mut() else { return Ok(()) };
        let pending = self.buffer.stats().receipts_pending as usize;
        if pending <= in_flight.len() || in_flight.len() >= MAX_RECEIPTS_IN_FLIGHT {
            return Ok(());
        }
        let buffer = self.buffer.clone();
        let want =
            in_flight.len() + (MAX_RECEIPTS_IN_FLIGHT - in_flight.len()).min(pending - in_flight.len());
        let receipts = tokio::task::spawn_blocking(move || buffer.receipts(want)).await??;
        let fresh: Vec<_> = receipts.into_iter().filter(|r| in_flight.insert(r.receipt_id)).collect();
        for receipt in fresh {
            tracing::debug!(receipt_id = %receipt.receipt_id, reason = ?receipt.reason, "deletion receipt sent");
            session.send(agent_message::Body::DeletionReceipt(wire::deletion_receipt(&receipt))).await?;
        }
        Ok(())
    }

    async fn heartbeat(&self, session: &Session) -> anyhow::Result<()> {
        let snapshots = self.registry.snapshots();
        let stats = self.buffer.stats();
        session
            .send(agent_message::Body::Heartbeat(pb::Heartbeat {
                sent_at: Some(wire::timestamp(chrono::Utc::now())),
                health: wire::health(&snapshots) as i32,
                buffered_captures: stats.captures,
                buffered_bytes: stats.bytes,
                components: snapshots.iter().map(wire::component_state).collect(),
            }))
            .await
    }

    async fn handle(&mut self, session: &mut Session, message: pb::ControlMessage) -> anyhow::Result<()> {
        match message.body {
            Some(control_message::Body::CaptureAck(ack)) => {
                let outcome = pb::AckOutcome::try_from(ack.outcome).unwrap_or(pb::AckOutcome::Unspecified);
                let id = Uuid::parse_str(&ack.capture_id)
                    .with_context(|| format!("ack for malformed capture id {:?}", ack.capture_id))?;
                session.in_flight.remove(&id);
                if let Some(upload) = session.uploads.remove(&id) {
                    crate::traces::acked(upload, outcome.as_str_name());
                }
                match outcome {
                    pb::AckOutcome::Stored | pb::AckOutcome::Duplicate => {
                        let buffer = self.buffer.clone();
                        tokio::task::spawn_blocking(move || buffer.delete(id)).await??;
                        self.acked.fetch_add(1, Ordering::SeqCst);
                        self.ctx.processed(1);
                        // the buffer's change may have been published before the count grew
                        self.link.send_modify(|_| {});
                        tracing::debug!(capture_id = %id, ?outcome, "capture acknowledged");
                    }
                    pb::AckOutcome::Unspecified => {
                        tracing::warn!(capture_id = %id, "ack without outcome, capture kept for the next session");
                    }
                }
            }
            Some(control_message::Body::ReceiptAck(ack)) => {
                let mut ids = Vec::with_capacity(ack.receipt_ids.len());
                for text in &ack.receipt_ids {
                    match Uuid::parse_str(text) {
                        Ok(id) => ids.push(id),
                        Err(_) => tracing::warn!(receipt_id = %text, "ack for malformed receipt id ignored"),
                    }
                }
                if let Some(in_flight) = session.receipts_in_flight.as_mut() {
                    for id in &ids {
                        in_flight.remove(id);
                    }
                }
                let buffer = self.buffer.clone();
                let removed = tokio::task::spawn_blocking(move || buffer.ack_receipts(&ids)).await??;
                tracing::debug!(acked = ack.receipt_ids.len(), removed, "deletion receipts acknowledged");
            }
            Some(control_message::Body::ConfigPush(push)) => {
                let ack = self.stage_config(&push).await;
                let staged = ack.outcome == pb::ConfigOutcome::Staged as i32;
                session.send(agent_message::Body::ConfigAck(ack)).await?;
                if staged && let Some(reload) = &self.reload {
                    // the agent drains and rebuilds its components with the staged file; this
                    // session ends then, and the next Hello reports the new version. The ack
                    // gets a moment to leave first (were it lost, that Hello still shows the
                    // control plane the version runs).
                    tokio::time::sleep(ACK_BEFORE_RELOAD).await;
                    let _ = reload.send(push.config_version);
                }
            }
            Some(control_message::Body::IntrospectionRequest(req)) => {
                let snapshots = self.registry.snapshots();
                // vision names its model in its state
                let model = snapshots.iter().find_map(|s| match &s.state {
                    ComponentState::Vision(v) => Some(v.model.clone()),
                    _ => None,
                });
                let (dir, version) = (self.buffer.dir().to_owned(), self.config_version);
                let process = tokio::task::spawn_blocking(move || {
                    crate::process::report(&dir, version, model.as_deref().unwrap_or_default())
                })
                .await?;
                let clock = *self.clock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let clock = clock.map(|c| pb::ClockOffset {
                    offset_ms: c.offset_ms,
                    round_trip_ms: c.round_trip_ms,
                    measured_at: Some(wire::timestamp(c.measured_at)),
                });
                session
                    .send(agent_message::Body::Introspection(pb::IntrospectionResponse {
                        request_id: req.request_id,
                        components: snapshots.iter().map(wire::component_state_with_events).collect(),
                        process: Some(pb::ProcessState { clock, ..wire::process_state(&process) }),
                    }))
                    .await?;
            }
            Some(control_message::Body::LogsRequest(req)) => {
                // a follower's request may wait for lines: answered beside the session loop
                let (ring, tx) = (self.logs.ring.clone(), session.tx.clone());
                tokio::spawn(async move {
                    let response = match wire::log_query(&req) {
                        Ok((query, wait)) => {
                            wire::logs_response(req.request_id, ring.wait_query(&query, wait).await)
                        }
                        Err(error) => {
                            pb::LogsResponse { request_id: req.request_id, error, ..Default::default() }
                        }
                    };
                    let _ =
                        tx.send(pb::AgentMessage { body: Some(agent_message::Body::Logs(response)) }).await;
                });
            }
            Some(control_message::Body::HeartbeatAck(ack)) => {
                if let Some(offset) = wire::clock_offset(&ack, chrono::Utc::now()) {
                    *self.clock.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(offset);
                }
            }
            Some(control_message::Body::Command(cmd)) => self.command(session, cmd).await?,
            Some(control_message::Body::Welcome(_)) => tracing::warn!("unexpected second welcome ignored"),
            None => tracing::warn!("empty control message ignored"),
        }
        Ok(())
    }

    async fn stage_config(&self, push: &pb::ConfigPush) -> pb::ConfigAck {
        let rejected = |error: String| {
            tracing::warn!(config_version = push.config_version, error = %error, "config push rejected");
            pb::ConfigAck {
                config_version: push.config_version,
                outcome: pb::ConfigOutcome::Rejected as i32,
                error,
            }
        };
        let config = match crate::config::parse_and_validate(&push.config_toml, self.config_dir.as_deref()) {
            Ok(config) => config,
            Err(err) => return rejected(err.to_string()),
        };
        if let Err(reason) = same_identity(&config, &self.agent_id, &self.site_id) {
            return rejected(reason);
        }
        let text = crate::config::stamp_config_version(&push.config_toml, push.config_version);
        if let Err(err) = write_atomically(&self.config_path, text.as_bytes()).await {
            return rejected(format!("cannot write config: {err:#}"));
        }
        // a config from the control plane supersedes any local edit it had not recorded
        let _ = tokio::fs::remove_file(crate::config::local_edit_marker(&self.config_path)).await;
        tracing::info!(config_version = push.config_version, path = %self.config_path.display(), "config staged");
        pb::ConfigAck {
            config_version: push.config_version,
            outcome: pb::ConfigOutcome::Staged as i32,
            error: String::new(),
        }
    }

    /// Runs a command once per command id: a repeated id is answered with the first result.
    async fn command(&self, session: &Session, cmd: pb::Command) -> anyhow::Result<()> {
        if let Some(earlier) = self.commands.get(&cmd.command_id) {
            tracing::info!(command_id = %cmd.command_id, "command repeated; answering with its first result");
            return session.send(agent_message::Body::CommandResult(earlier)).await;
        }
        let answer = |ok: bool, message: String| {
            let result = pb::CommandResult {
                command_id: cmd.command_id.clone(),
                ok,
                message,
                checks: Vec::new(),
                capture_id: String::new(),
            };
            self.commands.record(&result);
            agent_message::Body::CommandResult(result)
        };
        match cmd.kind.clone() {
            Some(command::Kind::Ping(_)) => session.send(answer(true, "pong".into())).await,
            Some(command::Kind::RestartComponent(restart)) => {
                let Some(supervisor) = self.supervisor.get().cloned() else {
                    return session.send(answer(false, "supervisor not running".into())).await;
                };
                tracing::info!(command_id = %cmd.command_id, component = %restart.component, "restart requested");
                if restart.component == self.ctx.name {
                    // restarting ourselves ends this session: answer first
                    session.send(answer(true, format!("restarting {}", restart.component))).await?;
                    tokio::task::yield_now().await;
                    let _ = supervisor.restart(&restart.component).await;
                    return Ok(());
                }
                match supervisor.restart(&restart.component).await {
                    Ok(()) => session.send(answer(true, format!("restarting {}", restart.component))).await,
                    Err(err) => session.send(answer(false, err)).await,
                }
            }
            Some(command::Kind::SetLogFilter(set)) => {
                tracing::info!(command_id = %cmd.command_id, filter = %set.filter, for_secs = set.for_secs, "log filter requested");
                let (ok, message) = match self.logs.filter.set_for(&set.filter, set.for_secs) {
                    Ok(message) => (true, message),
                    Err(message) => (false, message),
                };
                session.send(answer(ok, message)).await
            }
            Some(command::Kind::PauseComponent(pause)) => {
                tracing::info!(command_id = %cmd.command_id, component = %pause.component, "pause requested");
                let result = if pause.component == self.ctx.name {
                    self.pause_uploads(true)
                } else {
                    match self.supervisor.get() {
                        Some(supervisor) => supervisor
                            .pause(&pause.component)
                            .await
                            .map(|()| format!("pausing {}", pause.component)),
                        None => Err("supervisor not running".into()),
                    }
                };
                session.send(answer(result.is_ok(), result.unwrap_or_else(|e| e))).await
            }
            Some(command::Kind::ResumeComponent(resume)) => {
                tracing::info!(command_id = %cmd.command_id, component = %resume.component, "resume requested");
                let result = if resume.component == self.ctx.name {
                    self.pause_uploads(false)
                } else {
                    match self.supervisor.get() {
                        Some(supervisor) => supervisor
                            .resume(&resume.component)
                            .await
                            .map(|()| format!("resuming {}", resume.component)),
                        None => Err("supervisor not running".into()),
                    }
                };
                session.send(answer(result.is_ok(), result.unwrap_or_else(|e| e))).await
            }
            Some(command::Kind::RunDiagnostics(_)) => {
                tracing::info!(command_id = %cmd.command_id, "diagnostics requested");
                let (snapshots, dir) = (self.registry.snapshots(), self.buffer.dir().to_owned());
                let clock = *self.clock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let checks =
                    tokio::task::spawn_blocking(move || crate::diagnostics::run(&snapshots, &dir, clock))
                        .await?;
                let failed = checks.iter().filter(|c| !c.ok).count();
                let message = match failed {
                    0 => format!("all {} checks passed", checks.len()),
                    n => format!("{n} of {} checks failed", checks.len()),
                };
                let result = pb::CommandResult {
                    command_id: cmd.command_id.clone(),
                    ok: true,
                    message,
                    capture_id: String::new(),
                    checks: checks
                        .into_iter()
                        .map(|c| pb::DiagnosticCheck { name: c.name, ok: c.ok, message: c.message })
                        .collect(),
                };
                self.commands.record(&result);
                session.send(agent_message::Body::CommandResult(result)).await
            }
            Some(command::Kind::TriggerTestCapture(test)) => {
                tracing::info!(command_id = %cmd.command_id, camera = %test.camera, "test capture requested");
                let component = format!("acquire-{}", test.camera);
                let status = self.registry.get(&component).map(|s| s.status);
                let taken = match status {
                    Some(
                        status @ (ComponentStatus::Paused
                        | ComponentStatus::Stopped
                        | ComponentStatus::Failed),
                    ) => Err(format!("camera {} is {}", test.camera, status.as_str())),
                    _ => self.test_cameras.take(&test.camera, TEST_CAPTURE_WAIT).await,
                };
                let result = match taken {
                    Ok(capture_id) => pb::CommandResult {
                        command_id: cmd.command_id.clone(),
                        ok: true,
                        message: format!("test capture {capture_id} taken on camera {}", test.camera),
                        checks: Vec::new(),
                        capture_id: capture_id.to_string(),
                    },
                    Err(message) => pb::CommandResult {
                        command_id: cmd.command_id.clone(),
                        ok: false,
                        message,
                        checks: Vec::new(),
                        capture_id: String::new(),
                    },
                };
                self.commands.record(&result);
                session.send(agent_message::Body::CommandResult(result)).await
            }
            None => session.send(answer(false, "unknown command".into())).await,
        }
    }

    /// Holds (or lets go of) uploads; the session stays open. Says what changed.
    fn pause_uploads(&self, pause: bool) -> Result<String, String> {
        set_uploads_paused(&self.paused, &self.ctx.registry, &self.ctx.name, pause)
    }
}

/// A pushed file must not turn this device into another agent, or another site's agent.
fn same_identity(config: &crate::config::AgentConfig, agent_id: &str, site_id: &str) -> Result<(), String> {
    if config.agent_id != agent_id {
        return Err(format!("agent_id: is {:?}, but this agent is {agent_id:?}", config.agent_id));
    }
    if config.site_id != site_id {
        return Err(format!("site_id: is {:?}, but this agent is at site {site_id:?}", config.site_id));
    }
    Ok(())
}

pub use crate::config::write_atomically;
pub use pause::set_uploads_paused;

mod pause;
#[cfg(test)]
mod tests;

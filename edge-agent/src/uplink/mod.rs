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
//! the component's detail says `refused: <message>` until a session opens again.

pub mod throttle;
pub mod wire;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use lanewatch_proto::v1 as pb;
use lanewatch_proto::v1::agent_gateway_client::AgentGatewayClient;
use pb::{agent_message, command, control_message};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use uuid::Uuid;

use crate::buffer::Buffer;
use crate::config::ControlPlaneConfig;
use crate::supervisor::{ComponentCtx, Registry, RunFuture, SupervisorHandle};

const DEFAULT_MAX_CHUNK_BYTES: usize = 64 * 1024;
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a staged config's ack has to leave before the components are rebuilt.
const ACK_BEFORE_RELOAD: Duration = Duration::from_millis(200);
/// Most deletion receipts sent and not yet acknowledged.
const MAX_RECEIPTS_IN_FLIGHT: usize = 256;

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
}

impl crate::supervisor::Component for UplinkComponent {
    fn name(&self) -> String {
        "uplink".into()
    }

    fn run(&self, ctx: ComponentCtx) -> RunFuture {
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
            acked: 0,
            refused: None,
            bucket: throttle::TokenBucket::new(self.control_plane.max_upload_bytes_per_sec),
        };
        Box::pin(me.run())
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
    acked: u64,
    /// Why the control plane last refused a session; cleared when one opens.
    refused: Option<String>,
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
            self.set_detail(false, "");
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
                        self.refused = Some(status.message().to_owned());
                        self.set_detail(false, "");
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

    fn set_detail(&self, connected: bool, session_id: &str) {
        let state = match (&self.refused, connected) {
            (_, true) => "connected".to_owned(),
            (Some(message), false) => format!("refused: {message}"),
            (None, false) => "disconnected".to_owned(),
        };
        self.ctx.detail(serde_json::json!({
            "state": state,
            "connected": connected,
            "session_id": session_id,
            "acked": self.acked,
            "buffer": self.buffer.stats(),
        }));
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
        let hello = pb::Hello {
            protocol_version: pb::PROTOCOL_VERSION,
            agent_id: self.agent_id.clone(),
            site_id: self.site_id.clone(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            config_version: self.config_version,
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
        self.refused = None;
        tracing::info!(session_id = %welcome.session_id, protocol_version = welcome.protocol_version, server_version = %welcome.server_version, "session open");
        self.set_detail(true, &welcome.session_id);
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
                continue;
            }
            if !session.in_flight.insert(id) {
                continue;
            }
            let id_text = id.to_string();
            session.send(agent_message::Body::CaptureStart(wire::capture_start(&capture))).await?;
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
                match outcome {
                    pb::AckOutcome::Stored | pb::AckOutcome::Duplicate => {
                        let buffer = self.buffer.clone();
                        tokio::task::spawn_blocking(move || buffer.delete(id)).await??;
                        self.acked += 1;
                        self.ctx.processed(1);
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
                let components = self.registry.snapshots().iter().map(wire::component_state).collect();
                session
                    .send(agent_message::Body::Introspection(pb::IntrospectionResponse {
                        request_id: req.request_id,
                        components,
                    }))
                    .await?;
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
        tracing::info!(config_version = push.config_version, path = %self.config_path.display(), "config staged");
        pb::ConfigAck {
            config_version: push.config_version,
            outcome: pb::ConfigOutcome::Staged as i32,
            error: String::new(),
        }
    }

    async fn command(&self, session: &Session, cmd: pb::Command) -> anyhow::Result<()> {
        let result = |ok: bool, message: String| {
            agent_message::Body::CommandResult(pb::CommandResult {
                command_id: cmd.command_id.clone(),
                ok,
                message,
            })
        };
        match cmd.kind.clone() {
            Some(command::Kind::Ping(_)) => session.send(result(true, "pong".into())).await,
            Some(command::Kind::RestartComponent(restart)) => {
                let Some(supervisor) = self.supervisor.get().cloned() else {
                    return session.send(result(false, "supervisor not running".into())).await;
                };
                if restart.component == self.ctx.name {
                    // restarting ourselves ends this session: answer first
                    session.send(result(true, format!("restarting {}", restart.component))).await?;
                    tokio::task::yield_now().await;
                    let _ = supervisor.restart(&restart.component).await;
                    return Ok(());
                }
                match supervisor.restart(&restart.component).await {
                    Ok(()) => session.send(result(true, format!("restarting {}", restart.component))).await,
                    Err(err) => session.send(result(false, err)).await,
                }
            }
            None => session.send(result(false, "unknown command".into())).await,
        }
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

/// Writes a file via a temporary sibling and a rename, so readers never see half a file.
pub async fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    tokio::fs::write(&tmp, bytes).await.with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::File::open(&tmp).await?.sync_all().await?;
    tokio::fs::rename(&tmp, path).await.with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::agent_gateway_server::{AgentGateway, AgentGatewayServer};
    use sha2::{Digest, Sha256};
    use std::sync::Mutex;

    type Stored = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

    /// A gateway that welcomes, checks each upload (contiguous chunks, size, hash) and acks it.
    #[derive(Clone, Default)]
    struct FakeGateway {
        hellos: Arc<Mutex<Vec<pb::Hello>>>,
        stored: Stored,
        /// Welcome says it takes deletion receipts, and it acks each one.
        takes_receipts: bool,
        receipts: Arc<Mutex<Vec<pb::DeletionReceipt>>>,
    }

    #[tonic::async_trait]
    impl AgentGateway for FakeGateway {
        type SessionStream = ReceiverStream<Result<pb::ControlMessage, tonic::Status>>;

        async fn session(
            &self,
            request: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
        ) -> Result<tonic::Response<Self::SessionStream>, tonic::Status> {
            let mut inbound = request.into_inner();
            let (tx, rx) = mpsc::channel(16);
            let me = self.clone();
            tokio::spawn(async move {
                let send = |body| pb::ControlMessage { body: Some(body) };
                let mut current: Option<(pb::CaptureStart, Vec<u8>)> = None;
                while let Ok(Some(msg)) = inbound.message().await {
                    match msg.body {
                        Some(agent_message::Body::Hello(h)) => {
                            me.hellos.lock().unwrap().push(h);
                            let welcome = pb::Welcome {
                                session_id: "s1".into(),
                                protocol_version: 1,
                                heartbeat_interval_ms: 1000,
                                max_chunk_bytes: 1000,
                                max_image_bytes: 1 << 20,
                                server_version: "test".into(),
                                accepts_deletion_receipts: me.takes_receipts,
                            };
                            tx.send(Ok(send(control_message::Body::Welcome(welcome)))).await.unwrap();
                        }
                        Some(agent_message::Body::CaptureStart(start)) => current = Some((start, vec![])),
                        Some(agent_message::Body::CaptureChunk(chunk)) => {
                            let (start, data) = current.as_mut().unwrap();
                            assert_eq!(chunk.offset, data.len() as u64, "contiguous offsets");
                            assert!(chunk.data.len() <= 1000);
                            data.extend_from_slice(&chunk.data);
                            if data.len() as u64 == start.image_size_bytes {
                                assert_eq!(Sha256::digest(&data[..]).to_vec(), start.image_sha256);
                                let id = chunk.capture_id.clone();
                                me.stored.lock().unwrap().push((id.clone(), data.clone()));
                                let ack =
                                    pb::CaptureAck { capture_id: id, outcome: pb::AckOutcome::Stored as i32 };
                                tx.send(Ok(send(control_message::Body::CaptureAck(ack)))).await.unwrap();
                                current = None;
                            }
                        }
                        Some(agent_message::Body::DeletionReceipt(receipt)) => {
                            assert!(
                                me.takes_receipts,
                                "receipt sent to a control plane that does not take them"
                            );
                            let ack = pb::ReceiptAck { receipt_ids: vec![receipt.receipt_id.clone()] };
                            me.receipts.lock().unwrap().push(receipt);
                            tx.send(Ok(send(control_message::Body::ReceiptAck(ack)))).await.unwrap();
                        }
                        _ => {}
                    }
                }
            });
            Ok(tonic::Response::new(ReceiverStream::new(rx)))
        }
    }

    async fn serve(gateway: FakeGateway) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentGatewayServer::new(gateway))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    /// Waits (bounded) until the buffer holds no capture; `what` names the wait in a failure.
    async fn wait_until_drained(buffer: &Buffer, what: &str) {
        let mut stats = buffer.subscribe();
        tokio::time::timeout(Duration::from_secs(20), stats.wait_for(|s| s.captures == 0))
            .await
            .unwrap_or_else(|_| panic!("timed out: {what}"))
            .unwrap();
    }

    fn start_uplink(
        addr: std::net::SocketAddr,
        buffer: &Buffer,
        dir: &std::path::Path,
    ) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let registry = Registry::default();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        std::mem::forget(stop);
        let uplink = UplinkComponent {
            control_plane: ControlPlaneConfig { url: format!("http://{addr}"), ..Default::default() },
            config_dir: None,
            agent_id: "agent-a".into(),
            site_id: "site-a".into(),
            config_version: 4,
            config_path: dir.join("agent.toml"),
            buffer: buffer.clone(),
            registry: registry.clone(),
            supervisor: Default::default(),
            reload: None,
            apply_failure: None,
        };
        let ctx = ComponentCtx { name: "uplink".into(), registry, shutdown };
        tokio::spawn(crate::supervisor::Component::run(&uplink, ctx))
    }

    /// A buffer holding two deletion receipts (two captures evicted) and one capture.
    fn buffer_with_receipts(dir: &std::path::Path) -> Buffer {
        let one = crate::buffer::record_len(&crate::buffer::tests::capture(&[0; 100]));
        let buffer = Buffer::open(&dir.join("b"), crate::buffer::BufferOptions::new(one + 1)).unwrap();
        for _ in 0..3 {
            buffer.append(&crate::buffer::tests::capture(&[0; 100])).unwrap();
        }
        assert_eq!(buffer.stats().receipts_pending, 2);
        buffer
    }

    #[tokio::test]
    async fn sends_receipts_and_deletes_them_only_on_ack() {
        let gateway = FakeGateway { takes_receipts: true, ..Default::default() };
        let addr = serve(gateway.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let buffer = buffer_with_receipts(dir.path());
        let expected: Vec<String> =
            buffer.receipts(10).unwrap().iter().map(|r| r.receipt_id.to_string()).collect();
        let task = start_uplink(addr, &buffer, dir.path());
        let mut stats = buffer.subscribe();
        tokio::time::timeout(
            Duration::from_secs(20),
            stats.wait_for(|s| s.receipts_pending == 0 && s.captures == 0),
        )
        .await
        .expect("receipts acked and capture uploaded")
        .unwrap();
        task.abort();
        let sent: Vec<String> =
            gateway.receipts.lock().unwrap().iter().map(|r| r.receipt_id.clone()).collect();
        assert_eq!(sent, expected, "oldest first");
        let first = gateway.receipts.lock().unwrap()[0].clone();
        assert_eq!(first.reason, pb::DeletionReason::EvictedFull as i32);
        assert_eq!(first.value_class, pb::CaptureValueClass::Compliant as i32);
    }

    #[tokio::test]
    async fn keeps_receipts_for_a_control_plane_that_does_not_take_them() {
        let gateway = FakeGateway::default();
        let addr = serve(gateway.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let buffer = buffer_with_receipts(dir.path());
        let task = start_uplink(addr, &buffer, dir.path());
        wait_until_drained(&buffer, "capture uploaded").await;
        task.abort();
        assert_eq!(buffer.stats().receipts_pending, 2, "receipts wait for a control plane that acks them");
    }

    #[tokio::test]
    async fn uploads_buffered_captures_and_deletes_them_on_ack() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gateway = FakeGateway::default();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentGatewayServer::new(gateway.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );

        let dir = tempfile::tempdir().unwrap();
        let buffer = Buffer::open(&dir.path().join("b"), crate::buffer::BufferOptions::new(1 << 24)).unwrap();
        let images: Vec<Vec<u8>> = vec![vec![1; 10], (0..5000).map(|i| i as u8).collect(), vec![3; 1000]];
        for image in &images {
            buffer.append(&crate::buffer::tests::capture(image)).unwrap();
        }
        let registry = Registry::default();
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let uplink = UplinkComponent {
            control_plane: ControlPlaneConfig { url: format!("http://{addr}"), ..Default::default() },
            config_dir: None,
            agent_id: "agent-a".into(),
            site_id: "site-a".into(),
            config_version: 4,
            config_path: dir.path().join("agent.toml"),
            buffer: buffer.clone(),
            registry: registry.clone(),
            supervisor: Default::default(),
            reload: None,
            apply_failure: None,
        };
        let ctx = ComponentCtx { name: "uplink".into(), registry, shutdown };
        let task = tokio::spawn(crate::supervisor::Component::run(&uplink, ctx));
        wait_until_drained(&buffer, "buffer drained").await;
        task.abort();
        let hello = gateway.hellos.lock().unwrap()[0].clone();
        assert_eq!(
            (hello.agent_id.as_str(), hello.site_id.as_str(), hello.config_version, hello.protocol_version),
            ("agent-a", "site-a", 4, pb::PROTOCOL_VERSION)
        );
        let stored: Vec<Vec<u8>> = gateway.stored.lock().unwrap().iter().map(|(_, d)| d.clone()).collect();
        assert_eq!(stored, images, "uploaded oldest first, bytes unchanged");
    }

    #[tokio::test]
    async fn uploads_a_backlog_by_value_then_age() {
        use crate::domain::ValueClass::{Compliant, Statistics, ViolationCandidate};
        let gateway = FakeGateway::default();
        let addr = serve(gateway.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let buffer = Buffer::open(&dir.path().join("b"), crate::buffer::BufferOptions::new(1 << 24)).unwrap();
        let mut expected = Vec::new();
        for (i, class) in
            [Statistics, Compliant, ViolationCandidate, Statistics, ViolationCandidate, Compliant]
                .into_iter()
                .enumerate()
        {
            let mut capture = crate::buffer::tests::capture(&[i as u8; 100]);
            capture.meta.value_class = class;
            buffer.append(&capture).unwrap();
            expected.push((class, capture.meta.capture_id.to_string()));
        }
        expected.sort_by_key(|(class, _)| std::cmp::Reverse(*class)); // stable: oldest first within a class
        let task = start_uplink(addr, &buffer, dir.path());
        wait_until_drained(&buffer, "backlog uploaded").await;
        task.abort();
        let stored: Vec<String> = gateway.stored.lock().unwrap().iter().map(|(id, _)| id.clone()).collect();
        let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
        assert_eq!(stored, expected, "violation candidates, compliant, statistics; oldest first in each");
    }

    #[test]
    fn a_pushed_config_keeps_the_agent_and_site() {
        let text = "version = 1\nagent_id = \"agent-a\"\nsite_id = \"site-a\"\n\n[[cameras]]\nid = \"front\"\nlanes = [0]\n\n[cameras.source]\nkind = \"simulator\"\n";
        let config = crate::config::parse_and_validate(text, None).unwrap();
        assert_eq!(same_identity(&config, "agent-a", "site-a"), Ok(()));
        let err = same_identity(&config, "agent-b", "site-a").unwrap_err();
        assert!(err.starts_with("agent_id:"), "{err}");
        let err = same_identity(&config, "agent-a", "site-b").unwrap_err();
        assert!(err.starts_with("site_id:"), "{err}");
    }

    #[test]
    fn jitter_stays_within_half_to_full_step() {
        for _ in 0..100 {
            let d = jittered(1000).as_millis();
            assert!((500..=1000).contains(&d));
        }
    }
}

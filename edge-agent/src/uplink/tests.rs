//! Tests of the uplink against a fake control plane on 127.0.0.1:0 that welcomes, checks
//! each upload and acks it: uploads by value then age, deletion receipts, the state it
//! publishes, and the identity check on pushed configs.

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
                        assert!(me.takes_receipts, "receipt sent to a control plane that does not take them");
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
    start_uplink_in(addr, buffer, dir, &Registry::default())
}

/// [`start_uplink`], publishing its snapshot in `registry`.
fn start_uplink_in(
    addr: std::net::SocketAddr,
    buffer: &Buffer,
    dir: &std::path::Path,
    registry: &Registry,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let registry = registry.clone();
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
        acked: Default::default(),
        commands: Default::default(),
        logs: crate::logs::Logs::detached(),
        paused: Default::default(),
        clock: Default::default(),
        test_cameras: Default::default(),
        tracer: None,
    };
    let ctx = ComponentCtx::new("uplink", &registry, shutdown);
    tokio::spawn(crate::supervisor::Component::run(&uplink, ctx))
}

/// A buffer holding two deletion receipts (two captures evicted) and one capture.
fn buffer_with_receipts(dir: &std::path::Path) -> Buffer {
    // room for any one of the captures and never for two: each append evicts the one before
    let caps: Vec<_> = (0..3).map(|_| crate::buffer::tests::capture(&[0; 100])).collect();
    let max = caps.iter().map(crate::buffer::record_len).max().unwrap() + 1;
    let buffer = Buffer::open(&dir.join("b"), crate::buffer::BufferOptions::new(max)).unwrap();
    for capture in &caps {
        buffer.append(capture).unwrap();
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
    let sent: Vec<String> = gateway.receipts.lock().unwrap().iter().map(|r| r.receipt_id.clone()).collect();
    assert_eq!(sent, expected, "oldest first");
    let first = gateway.receipts.lock().unwrap()[0].clone();
    assert_eq!(first.reason, pb::DeletionReason::EvictedFull as i32);
    assert_eq!(first.value_class, pb::CaptureValueClass::Compliant as i32);
}

/// Waits (bounded) until the uplink's state satisfies `f`; `what` names the wait in a failure.
async fn wait_for_state(
    registry: &Registry,
    what: &str,
    f: impl Fn(&UplinkState) -> bool,
) -> (crate::supervisor::ComponentSnapshot, UplinkState) {
    let mut changes = registry.subscribe();
    let reached = async {
        loop {
            if let Some(s) = registry.get("uplink")
                && let ComponentState::Uplink(state) = &s.state
                && f(state)
            {
                let state = state.clone();
                return (s, state);
            }
            changes.changed().await.unwrap();
        }
    };
    match tokio::time::timeout(Duration::from_secs(20), reached).await {
        Ok(reached) => reached,
        Err(_) => panic!("timed out: {what}; uplink is {:?}", registry.get("uplink")),
    }
}

#[tokio::test]
async fn state_reports_what_was_acked_and_what_the_buffer_holds() {
    // a control plane that acks captures but takes no receipts: those stay in the buffer
    let gateway = FakeGateway::default();
    let addr = serve(gateway.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let buffer = buffer_with_receipts(dir.path());
    let registry = Registry::default();
    let task = start_uplink_in(addr, &buffer, dir.path(), &registry);
    wait_for_state(&registry, "first capture acked", |s| s.connected() && s.acked == 1).await;
    // captures made while the session is open are acked and counted too (one at a time: the
    // buffer has room for one)
    for acked in 2..=3 {
        buffer.append(&crate::buffer::tests::capture(&[acked; 100])).unwrap();
        wait_for_state(&registry, "next capture acked", |s| s.acked == u64::from(acked)).await;
    }
    let (snapshot, state) = wait_for_state(&registry, "the state read", |_| true).await;
    task.abort();
    assert_eq!(state.state, UplinkLink::Connected);
    assert_eq!(state.session_id, "s1");
    assert_eq!(state.acked, gateway.stored.lock().unwrap().len() as u64, "what the control plane acked");
    assert_eq!(state.acked, snapshot.processed);
    let stats = buffer.stats();
    assert_eq!(state.buffer, stats, "what the buffer holds");
    assert_eq!(
        (stats.captures, stats.appended, stats.evicted, stats.receipts_pending),
        (0, 5, 2, 2),
        "{stats:?}"
    );
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
    let task = start_uplink_in(addr, &buffer, dir.path(), &Registry::default());
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
    for (i, class) in [Statistics, Compliant, ViolationCandidate, Statistics, ViolationCandidate, Compliant]
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

#[test]
fn recent_commands_keep_the_newest_results_within_their_capacity() {
    let recent = RecentCommands::default();
    let result = |i: usize| pb::CommandResult {
        command_id: format!("c{i}"),
        ok: true,
        message: format!("m{i}"),
        ..Default::default()
    };
    for i in 0..=RecentCommands::CAPACITY {
        recent.record(&result(i));
    }
    assert_eq!(recent.get("c0"), None, "the oldest is dropped");
    assert_eq!(recent.get("c1"), Some(result(1)));
    assert_eq!(recent.get(&format!("c{}", RecentCommands::CAPACITY)), Some(result(RecentCommands::CAPACITY)));
    assert_eq!(recent.0.lock().unwrap().len(), RecentCommands::CAPACITY);
}

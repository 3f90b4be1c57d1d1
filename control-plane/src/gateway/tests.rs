//! In-process tests of the session protocol: a real tonic server on port 0, the generated client.

use sha2::Digest;
use tokio_stream::StreamExt;

use super::*;
use crate::config::BlobConfig;

struct Harness {
    _dir: tempfile::TempDir,
    gateway: Gateway,
    db: Db,
    addr: std::net::SocketAddr,
    shutdown: watch::Sender<bool>,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display())).await.unwrap();
    let blobs = BlobStore::open(&BlobConfig::Local { dir: dir.path().join("blobs") }).await.unwrap();
    let limits = Limits { max_chunk_bytes: 1024, max_image_bytes: 4096, ..Limits::default() };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let gateway = Gateway::new(db.clone(), blobs, limits, Metrics::new(), shutdown_rx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = gateway.clone().into_service();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    Harness { _dir: dir, gateway, db, addr, shutdown: shutdown_tx }
}

type Session = (mpsc::Sender<pb::AgentMessage>, tonic::Streaming<pb::ControlMessage>);

async fn connect(h: &Harness, first: In) -> Result<Session, tonic::Status> {
    let mut client =
        pb::agent_gateway_client::AgentGatewayClient::connect(format!("http://{}", h.addr)).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    tx.send(pb::AgentMessage { body: Some(first) }).await.unwrap();
    let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
    match inbound.message().await? {
        Some(pb::ControlMessage { body: Some(Out::Welcome(_)) }) => Ok((tx, inbound)),
        other => panic!("expected welcome, got {other:?}"),
    }
}

fn hello(agent: &str) -> In {
    In::Hello(pb::Hello {
        protocol_version: 1,
        agent_id: agent.into(),
        site_id: "a1".into(),
        software_version: "0.1.0".into(),
        config_version: 1,
        wants_heartbeat_acks: false,
        local_config: String::new(),
    })
}

fn capture(id: Uuid, image: &[u8]) -> Vec<In> {
    let start = In::CaptureStart(pb::CaptureStart {
        meta: Some(pb::CaptureMeta {
            capture_id: id.to_string(),
            site_id: "a1".into(),
            captured_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            vehicle_class: 99,
            ..Default::default()
        }),
        image_size_bytes: image.len() as u64,
        image_sha256: sha2::Sha256::digest(image).to_vec(),
        image_content_type: "image/jpeg".into(),
    });
    let mut msgs = vec![start];
    let mut offset = 0;
    for chunk in image.chunks(1000) {
        msgs.push(In::CaptureChunk(pb::CaptureChunk {
            capture_id: id.to_string(),
            offset,
            data: chunk.to_vec().into(),
        }));
        offset += chunk.len() as u64;
    }
    msgs
}

async fn send_all(tx: &mpsc::Sender<pb::AgentMessage>, msgs: Vec<In>) {
    for m in msgs {
        tx.send(pb::AgentMessage { body: Some(m) }).await.unwrap();
    }
}

async fn next_ack(inbound: &mut tonic::Streaming<pb::ControlMessage>) -> pb::CaptureAck {
    match inbound.message().await.unwrap() {
        Some(pb::ControlMessage { body: Some(Out::CaptureAck(a)) }) => a,
        other => panic!("expected ack, got {other:?}"),
    }
}

#[tokio::test]
async fn capture_is_stored_once_then_duplicate() {
    let h = harness().await;
    let (tx, mut inbound) = connect(&h, hello("agent-1")).await.unwrap();
    assert!(h.gateway.is_online("agent-1"));
    let image: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
    let id = Uuid::now_v7();
    send_all(&tx, capture(id, &image)).await;
    let ack = next_ack(&mut inbound).await;
    assert_eq!(
        (ack.capture_id.as_str(), ack.outcome),
        (id.to_string().as_str(), pb::AckOutcome::Stored as i32)
    );
    send_all(&tx, capture(id, &image)).await;
    assert_eq!(next_ack(&mut inbound).await.outcome, pb::AckOutcome::Duplicate as i32);
    let stored = h.db.capture(id, &crate::domain::Visibility::All).await.unwrap().unwrap();
    assert_eq!(stored.meta.vehicle_class, domain::VehicleClass::Unknown);
    assert_eq!(stored.image_bytes, 2500);
    drop(tx);
    assert!(inbound.next().await.is_none());
}

#[tokio::test]
async fn protocol_errors_end_only_that_session() {
    let h = harness().await;
    let err = connect(&h, In::Heartbeat(pb::Heartbeat::default())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "first message must be hello");

    let mut old = match hello("agent-2") {
        In::Hello(h) => h,
        _ => unreachable!(),
    };
    old.protocol_version = 7;
    let err = connect(&h, In::Hello(old)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("protocol version 7 is not supported"), "{}", err.message());

    let (good_tx, mut good_in) = connect(&h, hello("agent-good")).await.unwrap();
    let (tx, mut inbound) = connect(&h, hello("agent-bad")).await.unwrap();
    let mut msgs = capture(Uuid::now_v7(), &[1u8; 100]);
    if let In::CaptureChunk(c) = &mut msgs[1] {
        c.data = vec![2u8; 100].into(); // wrong bytes: digest mismatch
    }
    send_all(&tx, msgs).await;
    let err = inbound.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("image sha256 mismatch for capture"), "{}", err.message());

    let id = Uuid::now_v7();
    send_all(&good_tx, capture(id, &[3u8; 10])).await;
    assert_eq!(next_ack(&mut good_in).await.outcome, pb::AckOutcome::Stored as i32);
}

#[tokio::test]
async fn introspection_is_routed_and_offline_agents_error() {
    let h = harness().await;
    let err = h.gateway.request_introspection("nobody").await.unwrap_err();
    assert_eq!(err.message, "agent nobody is offline");

    let (tx, mut inbound) = connect(&h, hello("agent-3")).await.unwrap();
    let agent = tokio::spawn(async move {
        while let Ok(Some(msg)) = inbound.message().await {
            if let Some(Out::IntrospectionRequest(r)) = msg.body {
                let reply = pb::IntrospectionResponse {
                    request_id: r.request_id,
                    components: vec![pb::ComponentState {
                        name: "uplink".into(),
                        status: pb::ComponentStatus::Running as i32,
                        restarts: 2,
                        ..Default::default()
                    }],
                    process: Some(pb::ProcessState { rss_bytes: 1 << 20, threads: 9, ..Default::default() }),
                };
                tx.send(pb::AgentMessage { body: Some(In::Introspection(reply)) }).await.unwrap();
                return tx;
            }
        }
        panic!("no introspection request");
    });
    let found = h.gateway.request_introspection("agent-3").await.unwrap();
    let process = found.process.expect("the process figures");
    assert_eq!((process.rss_bytes, process.threads), (1 << 20, 9));
    let components = found.components;
    assert_eq!(components.len(), 1);
    assert_eq!(components[0].status, domain::ComponentStatus::Running);
    assert_eq!(components[0].restarts, 2);
    drop(agent.await.unwrap());
    // the session ends when the agent hangs up, and the agent is then offline
    // (bounded at 10 s; a loaded 2-core CI machine can take well over a second)
    for _ in 0..1000 {
        if !h.gateway.is_online("agent-3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!h.gateway.is_online("agent-3"));
    assert!(!h.db.agent("agent-3").await.unwrap().unwrap().online);
}

#[tokio::test]
async fn introspection_times_out_when_the_agent_is_silent() {
    let h = harness().await;
    let (tx, mut inbound) = connect(&h, hello("agent-4")).await.unwrap();
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    tokio::time::pause();
    let err = h.gateway.request_introspection("agent-4").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::DeadlineExceeded);
    drop(tx);
    drain.abort();
}

#[tokio::test]
async fn oversized_message_and_chunk_are_resource_exhausted() {
    let h = harness().await;
    let (tx, mut inbound) = connect(&h, hello("agent-5")).await.unwrap();
    let id = Uuid::now_v7();
    let mut msgs = capture(id, &[1u8; 10]);
    msgs.truncate(1);
    msgs.push(In::CaptureChunk(pb::CaptureChunk {
        capture_id: id.to_string(),
        offset: 0,
        data: vec![0u8; 2 << 20].into(),
    }));
    send_all(&tx, msgs).await;
    let err = inbound.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    let (tx, mut inbound) = connect(&h, hello("agent-6")).await.unwrap();
    let mut msgs = capture(id, &[1u8; 2000]);
    msgs.truncate(1);
    msgs.push(In::CaptureChunk(pb::CaptureChunk {
        capture_id: id.to_string(),
        offset: 0,
        data: vec![1u8; 2000].into(),
    }));
    send_all(&tx, msgs).await;
    let err = inbound.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
}

#[tokio::test]
async fn shutdown_lets_the_capture_in_flight_finish() {
    let h = harness().await;
    let (tx, mut inbound) = connect(&h, hello("agent-7")).await.unwrap();
    let image = vec![9u8; 2500];
    let id = Uuid::now_v7();
    let mut msgs = capture(id, &image);
    let rest = msgs.split_off(2);
    send_all(&tx, msgs).await;
    // a session handles its messages in order: once a receipt sent after the capture's first
    // part is acked, that part has arrived, and the capture is in flight
    let receipt_id = Uuid::now_v7();
    send_all(&tx, vec![In::DeletionReceipt(receipt(receipt_id))]).await;
    match inbound.message().await.unwrap() {
        Some(pb::ControlMessage { body: Some(Out::ReceiptAck(ack)) }) => {
            assert_eq!(ack.receipt_ids, vec![receipt_id.to_string()]);
        }
        other => panic!("expected receipt ack, got {other:?}"),
    }
    h.shutdown.send(true).unwrap();
    send_all(&tx, rest).await;
    assert_eq!(next_ack(&mut inbound).await.outcome, pb::AckOutcome::Stored as i32);
    let err = inbound.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.message(), "control plane is shutting down");
}

#[tokio::test]
async fn deletion_receipts_are_stored_once_and_acked() {
    let h = harness().await;
    let mut client =
        pb::agent_gateway_client::AgentGatewayClient::connect(format!("http://{}", h.addr)).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    tx.send(pb::AgentMessage { body: Some(hello("agent-r")) }).await.unwrap();
    let mut inbound = client.session(ReceiverStream::new(rx)).await.unwrap().into_inner();
    match inbound.message().await.unwrap() {
        Some(pb::ControlMessage { body: Some(Out::Welcome(w)) }) => assert!(w.accepts_deletion_receipts),
        other => panic!("expected welcome, got {other:?}"),
    }
    let receipt_id = Uuid::now_v7();
    let receipt = receipt(receipt_id);
    // sent twice, as after a lost ack: acked twice, stored once
    for _ in 0..2 {
        send_all(&tx, vec![In::DeletionReceipt(receipt.clone())]).await;
        match inbound.message().await.unwrap() {
            Some(pb::ControlMessage { body: Some(Out::ReceiptAck(ack)) }) => {
                assert_eq!(ack.receipt_ids, vec![receipt_id.to_string()]);
            }
            other => panic!("expected receipt ack, got {other:?}"),
        }
    }
    let stored = h.db.receipts_page(None, &domain::Visibility::All, None, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let r = &stored[0];
    assert_eq!(
        (r.receipt_id, r.agent_id.as_str(), r.site_id.as_str(), r.reason, r.value_class, r.bytes),
        (
            receipt_id,
            "agent-r",
            "a1",
            domain::DeletionReason::EvictedFull,
            domain::ValueClass::Statistics,
            1234
        )
    );

    // a malformed receipt ends the session with INVALID_ARGUMENT
    let bad = pb::DeletionReceipt { receipt_id: "nope".into(), ..receipt };
    send_all(&tx, vec![In::DeletionReceipt(bad)]).await;
    let status = inbound.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
}

/// A deletion receipt of a 1234-byte statistics capture evicted from a full buffer.
fn receipt(receipt_id: Uuid) -> pb::DeletionReceipt {
    pb::DeletionReceipt {
        receipt_id: receipt_id.to_string(),
        capture_id: Uuid::now_v7().to_string(),
        value_class: pb::CaptureValueClass::Statistics as i32,
        captured_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
        deleted_at: Some(prost_types::Timestamp { seconds: 1_700_000_100, nanos: 0 }),
        reason: pb::DeletionReason::EvictedFull as i32,
        bytes: 1234,
    }
}

async fn next_push(inbound: &mut tonic::Streaming<pb::ControlMessage>) -> pb::ConfigPush {
    let next = tokio::time::timeout(Duration::from_secs(15), inbound.message()).await;
    match next.expect("a config push in time").unwrap() {
        Some(pb::ControlMessage { body: Some(Out::ConfigPush(p)) }) => p,
        other => panic!("expected a config push, got {other:?}"),
    }
}

async fn wait_config_state(db: &Db, version: u64, state: domain::RolloutState) -> domain::AgentConfigState {
    for _ in 0..600 {
        if let Some(s) = db.config_state("agent-1", version).await.unwrap().filter(|s| s.state == state) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("agent-1 never reached {} for version {version}", state.as_str());
}

fn config_ack(version: u64, outcome: pb::ConfigOutcome, error: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(In::ConfigAck(pb::ConfigAck {
            config_version: version,
            outcome: outcome as i32,
            error: error.into(),
        })),
    }
}

/// On Hello the site's newest config goes to an agent reporting an older one (the version it
/// reports is marked applied); the agent's answer is recorded; a rejected version is not pushed
/// again on reconnect, and a newer one is offered to the connected agent.
#[tokio::test]
async fn newest_config_is_pushed_on_hello_and_a_rejected_one_never_again() {
    use domain::RolloutState::*;
    let h = harness().await;
    let new = crate::db::NewSiteConfig {
        site_id: "a1",
        comment: None,
        rolled_back_from: None,
        created_by: "key-1",
        created_at: Utc::now(),
        fence: None,
    };
    let text = |v: u64| format!("config_version = {v}\n");
    for _ in 0..2 {
        h.db.insert_site_config(&new, text).await.unwrap();
    }

    // hello reports version 1: applied; version 2 is pushed and rejected
    let (tx, mut inbound) = connect(&h, hello("agent-1")).await.unwrap();
    let push = next_push(&mut inbound).await;
    assert_eq!((push.config_version, push.config_toml.as_str()), (2, "config_version = 2\n"));
    tx.send(config_ack(2, pb::ConfigOutcome::Rejected, "cameras[0].source.path: missing")).await.unwrap();
    let rejected = wait_config_state(&h.db, 2, Rejected).await;
    assert_eq!(rejected.error.as_deref(), Some("cameras[0].source.path: missing"));
    wait_config_state(&h.db, 1, Applied).await;
    drop(tx);
    assert!(inbound.next().await.is_none());

    // reconnecting on version 1 does not bring version 2 back
    let (tx, mut inbound) = connect(&h, hello("agent-1")).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(700), inbound.message()).await;
    assert!(quiet.is_err(), "no push of a rejected version: {quiet:?}");

    // a newer version reaches the connected agent; staged does not undo a later applied
    h.db.insert_site_config(&new, text).await.unwrap();
    h.gateway.offer_site_config("a1");
    assert_eq!(next_push(&mut inbound).await.config_version, 3);
    tx.send(config_ack(3, pb::ConfigOutcome::Staged, "")).await.unwrap();
    wait_config_state(&h.db, 3, Staged).await;
    drop(tx);
}

/// Every heartbeat's component lines become history samples, stamped when received, of the
/// session's agent.
#[tokio::test]
async fn heartbeats_become_component_history() {
    let h = harness().await;
    let (writer, task) = HistoryWriter::spawn(h.db.clone(), 1000, Metrics::new());
    h.gateway.attach_history(writer);
    let before = Utc::now();
    let (tx, mut inbound) = connect(&h, hello("agent-h")).await.unwrap();
    for restarts in [0, 1] {
        let camera = pb::ComponentState {
            name: "acquire-front".into(),
            status: if restarts == 0 { pb::ComponentStatus::Running } else { pb::ComponentStatus::BackingOff }
                as i32,
            restarts,
            processed: 40,
            inbox_depth: 2,
            inbox_capacity: 4,
            ..Default::default()
        };
        let source = pb::ComponentState { name: "sense".into(), status: 2, ..Default::default() };
        let beat = pb::Heartbeat { components: vec![camera, source], ..Default::default() };
        tx.send(pb::AgentMessage { body: Some(In::Heartbeat(beat)) }).await.unwrap();
    }
    // the session has handled every message once it ends; then the writer writes what it got
    drop(tx);
    assert!(inbound.next().await.is_none());
    task.finish().await;
    let now = Utc::now();
    let history = h.db.component_history("agent-h", "acquire-front", before, now, now).await.unwrap();
    let seen: Vec<_> = history.points.iter().map(|p| (p.status, p.restarts, p.inbox_depth)).collect();
    use domain::ComponentStatus::{BackingOff, Running};
    assert_eq!(seen, [(Running, 0, Some(2)), (BackingOff, 1, Some(2))]);
    assert!(history.points.iter().all(|p| p.at >= before && p.at <= now && p.processed == 40));
    assert_eq!(history.summary.left_running, 1);
    let sense = h.db.component_history("agent-h", "sense", before, now, now).await.unwrap();
    assert_eq!(sense.points.len(), 2);
    assert!(sense.points.iter().all(|p| p.inbox_depth.is_none()), "a source has no inbox");
}

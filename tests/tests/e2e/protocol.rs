//! The wire contract at the gateway: idempotent ingest, version refusal, tolerance of unknown
//! enum values, and isolation of malformed or oversized sessions.

use anyhow::Result;
use lanewatch_proto::v1::{self, AckOutcome, agent_message};
use lanewatch_tests::grpc::{self, Session};
use lanewatch_tests::{Blob, ControlPlane, Db, Postgres};
use serde_json::json;
use tonic::Code;

async fn resend_is_stored_once(cp: &ControlPlane) -> Result<()> {
    let image = lanewatch_tests::noise_jpeg(320, 240, 1);
    let meta = grpc::meta("site-r");
    let id = meta.capture_id.clone();

    let mut first = Session::open(&cp.grpc_url(), "agent-r", "site-r").await?;
    assert_eq!(first.upload(meta.clone(), &image).await?, AckOutcome::Stored);
    // Re-sent on the same session (an agent that missed the ack) ...
    assert_eq!(first.upload(meta.clone(), &image).await?, AckOutcome::Duplicate);
    drop(first);
    // ... and on a new session after a reconnect.
    let mut second = Session::open(&cp.grpc_url(), "agent-r", "site-r").await?;
    assert_eq!(second.upload(meta.clone(), &image).await?, AckOutcome::Duplicate);

    // ... and under the same id with other bytes (a faulty agent): not stored again, and the
    // stored evidence is not replaced
    let other = lanewatch_tests::noise_jpeg(320, 240, 2);
    assert_ne!(other, image);
    let mut third = Session::open(&cp.grpc_url(), "agent-r", "site-r").await?;
    assert_eq!(third.upload(meta, &other).await?, AckOutcome::Duplicate);

    let captures = cp.all_captures().await?;
    let stored: Vec<_> = captures.iter().filter(|c| c["id"] == id.as_str()).collect();
    assert_eq!(stored.len(), 1, "stored exactly once: {captures:?}");
    let served = cp.get(stored[0]["imageUrl"].as_str().unwrap_or_default()).await?.bytes().await?;
    assert_eq!(served.as_ref(), image.as_slice(), "the first image stays the capture's image");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_capture_is_stored_once() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    resend_is_stored_once(&cp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_capture_is_stored_once_on_postgres() -> Result<()> {
    let pg = Postgres::fresh_database()?;
    let cp = ControlPlane::start(Db::Url(pg.url.clone()), Blob::Local).await?;
    resend_is_stored_once(&cp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_end_only_their_own_session() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    // A healthy agent session, open throughout.
    let mut healthy = Session::open(&cp.grpc_url(), "agent-ok", "site-ok").await?;

    // Bytes that are not a protobuf message at all.
    let status = grpc::raw_session(&cp.grpc_url(), vec![vec![0xFF; 64]]).await?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed"), "clear message: {status:?}");

    // A message larger than the gateway's decoding limit (1 MiB by default).
    let mut big = Session::open(&cp.grpc_url(), "agent-big", "site-big").await?;
    big.send(agent_message::Body::CaptureChunk(v1::CaptureChunk {
        capture_id: uuid::Uuid::now_v7().to_string(),
        offset: 0,
        data: vec![7; 2 << 20].into(),
    }))
    .await?;
    let status = big.ended_with().await?;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // A chunk for a capture that was never started.
    let mut stray = Session::open(&cp.grpc_url(), "agent-stray", "site-stray").await?;
    stray
        .send(agent_message::Body::CaptureChunk(v1::CaptureChunk {
            capture_id: uuid::Uuid::now_v7().to_string(),
            offset: 0,
            data: vec![1; 10].into(),
        }))
        .await?;
    assert_eq!(stray.ended_with().await?.code(), Code::InvalidArgument);

    // A capture whose image does not match its declared checksum.
    let mut liar = Session::open(&cp.grpc_url(), "agent-liar", "site-liar").await?;
    let meta = grpc::meta("site-liar");
    liar.send(agent_message::Body::CaptureStart(v1::CaptureStart {
        meta: Some(meta.clone()),
        image_size_bytes: 4,
        image_sha256: vec![0; 32],
        image_content_type: "image/jpeg".into(),
    }))
    .await?;
    liar.send(agent_message::Body::CaptureChunk(v1::CaptureChunk {
        capture_id: meta.capture_id,
        offset: 0,
        data: vec![1, 2, 3, 4].into(),
    }))
    .await?;
    let status = liar.ended_with().await?;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("sha256"), "{status:?}");

    // The healthy session and the server are unharmed.
    let image = lanewatch_tests::noise_jpeg(64, 64, 3);
    assert_eq!(healthy.upload(grpc::meta("site-ok"), &image).await?, AckOutcome::Stored);
    assert_eq!(cp.get(&cp.http_url("/healthz")).await?.status(), 200);
    assert_eq!(cp.all_captures().await?.len(), 1, "nothing from the bad sessions was stored");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_are_refused_with_clear_statuses() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;

    let mut future = grpc::hello("agent-future", "site-f");
    future.protocol_version = 99;
    let status = Session::open_with_hello(&cp.grpc_url(), future).await?.err().expect("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("99") && status.message().contains("1..=1"), "{status:?}");

    let status =
        Session::open_with_hello(&cp.grpc_url(), grpc::hello("", "site-f")).await?.err().expect("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("agent_id"), "{status:?}");

    // A session that starts with anything but Hello.
    let heartbeat = prost::Message::encode_to_vec(&v1::AgentMessage {
        body: Some(agent_message::Body::Heartbeat(v1::Heartbeat::default())),
    });
    let status = grpc::raw_session(&cp.grpc_url(), vec![heartbeat]).await?;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("hello"), "{status:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_enum_values_from_newer_agents_are_stored_as_unknown() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let mut session = Session::open(&cp.grpc_url(), "agent-new", "site-new").await?;
    let mut meta = grpc::meta("site-new");
    meta.vehicle_class = 99; // a class this control plane has never heard of
    meta.occupancy = Some(v1::Occupancy { status: 42, occupants: 0, sections: vec![], ..Default::default() });
    let image = lanewatch_tests::noise_jpeg(64, 64, 4);
    assert_eq!(session.upload(meta.clone(), &image).await?, AckOutcome::Stored);
    let data = cp
        .graphql("{ captures(first: 5) { nodes { id vehicleClass occupancy { status } } } }", json!({}))
        .await?;
    let node = &data["captures"]["nodes"][0];
    assert_eq!(node["id"], meta.capture_id.as_str());
    assert_eq!(node["vehicleClass"], "UNKNOWN");
    assert_eq!(node["occupancy"]["status"], "UNKNOWN");
    Ok(())
}

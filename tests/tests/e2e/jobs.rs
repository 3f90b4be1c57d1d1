//! The job queue and the push service on the real binaries: two control-plane replicas on one
//! PostgreSQL; replica A takes a webhook delivery to a receiver that holds the request open and
//! is killed (SIGKILL) in the middle of it; replica B rescues the orphaned job once A's row is
//! stale and delivers it under the same `webhook-id`, after which the job is completed and the
//! receiver got the event twice (A's cut-off attempt and B's), never a third time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use lanewatch_tests::grpc::{Session, meta};
use lanewatch_tests::{Blob, ControlPlane, Db, Postgres};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// A receiver on 127.0.0.1 that holds its first request open (up to a minute) and answers the
/// others 200; the `webhook-id` of each request it got.
async fn holding_receiver() -> Result<(String, Arc<Mutex<Vec<String>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let ids: Arc<Mutex<Vec<String>>> = Default::default();
    let got = ids.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let got = got.clone();
            tokio::spawn(async move {
                let Some(request) = lanewatch_tests::read_http_request(&mut stream).await else { return };
                let id = lanewatch_tests::header(&request, "webhook-id").unwrap_or_default();
                let first = {
                    let mut ids = got.lock().unwrap();
                    ids.push(id);
                    ids.len() == 1
                };
                if first {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    Ok((format!("http://{addr}/hook"), ids))
}

const CONFIG: &str = "\n[jobs]\nrescue_after_secs = 5\npoll_interval_ms = 200\n\
    [webhooks]\nallow_cidrs = [\"127.0.0.1/32\"]\ntimeout_ms = 120000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_delivery_is_rescued_and_the_delivery_runs_once_more() -> Result<()> {
    let pg = Postgres::fresh_database()?;
    let (url, received) = holding_receiver().await?;
    let mut a = ControlPlane::start_with(Db::Url(pg.url.clone()), Blob::Local, CONFIG).await?;
    let created = a
        .graphql(
            "mutation($url: String!) { createWebhookEndpoint(input: { url: $url, eventTypes: [CAPTURE_STORED] }) {
               endpoint { id } } }",
            json!({ "url": url }),
        )
        .await?;
    let endpoint =
        created["createWebhookEndpoint"]["endpoint"]["id"].as_str().context("endpoint id")?.to_owned();
    // a capture stored through replica a: its push job commits with it, and a takes it
    let mut session = Session::open(&a.grpc_url(), "agent-rescue", "site-rescue").await?;
    session.upload(meta("site-rescue"), b"jpeg bytes").await?;
    a.wait_for("replica a's attempt reached the receiver", || async {
        Ok((received.lock().unwrap().len() == 1).then_some(()))
    })
    .await?;
    drop(session);

    // b starts, a dies in the middle of its attempt
    let b = ControlPlane::start_with(Db::Url(pg.url.clone()), Blob::Local, CONFIG).await?;
    a.proc.signal(nix::sys::signal::Signal::SIGKILL);
    a.proc.wait(Duration::from_secs(10))?;
    let job = b
        .wait_for("replica b rescued and completed the job", || async {
            let data = b
                .graphql(
                    "{ jobs(queue: \"webhooks\") { totalCount edges { node { state attempt attemptedBy errors { attempt error } } } } }",
                    json!({}),
                )
                .await?;
            let node = data["jobs"]["edges"][0]["node"].clone();
            Ok((node["state"] == "COMPLETED").then_some((data["jobs"]["totalCount"].clone(), node)))
        })
        .await?;
    let (total, node) = job;
    assert_eq!(total, 1, "one job: {node}");
    assert_eq!(node["attempt"], 2, "a's cut-off attempt and b's: {node}");
    let rescued = node["errors"][0]["error"].as_str().unwrap_or_default();
    assert!(
        rescued.starts_with("rescued: replica ") && rescued.ends_with("stopped during attempt 1"),
        "{node}"
    );
    let ids = received.lock().unwrap().clone();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids[0].starts_with("msg_") && ids[0] == ids[1], "the same webhook-id: {ids:?}");
    // b recorded its attempt, delivered; the job is final: it cannot run again
    let messages = b
        .graphql(
            "query($e: ID!) { webhookMessages(endpointId: $e) { state lastStatus } }",
            json!({ "e": endpoint }),
        )
        .await?;
    assert_eq!(messages["webhookMessages"], json!([{ "state": "delivered", "lastStatus": 200 }]));
    Ok(())
}

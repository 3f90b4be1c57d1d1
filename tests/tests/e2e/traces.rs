//! Traces on the real binaries with a real collector (rotel on 127.0.0.1): an agent exporting
//! over OTLP/HTTP and a control plane exporting over OTLP/gRPC, every capture sampled. One
//! capture's spans from both sides arrive under one trace id: the agent's stages and upload, the
//! gateway's ingest, blob put and commit as children of the upload, and the capture's webhook
//! delivery as a child of the ingest; the receiver gets the same trace in a `traceparent`
//! header. A capture uploaded hours after it was taken starts a trace of its own that links to
//! its roadside one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use lanewatch_tests::collector::{Collector, Span};
use lanewatch_tests::grpc::{Session, meta};
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// A webhook receiver on 127.0.0.1 answering 200; the `traceparent` header of each request.
async fn receiver() -> Result<(String, Arc<Mutex<Vec<String>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let got = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let got = got.clone();
            tokio::spawn(async move {
                let Some(request) = lanewatch_tests::read_http_request(&mut stream).await else { return };
                got.lock()
                    .unwrap()
                    .push(lanewatch_tests::header(&request, "traceparent").unwrap_or_default());
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    Ok((format!("http://{addr}/hook"), seen))
}

fn telemetry_toml(endpoint: &str, protocol: &str) -> String {
    format!(
        "\n[telemetry]\nenabled = true\nendpoint = \"{endpoint}\"\nprotocol = \"{protocol}\"\nsample_ratio = 1.0\n"
    )
}

fn named<'a>(spans: &'a [Span], trace: &str, service: &str, name: &str) -> Option<&'a Span> {
    spans.iter().find(|s| s.trace_id == trace && s.service == service && s.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_captures_spans_from_the_roadside_to_the_webhook_share_one_trace() -> Result<()> {
    let collector = Collector::start()?;
    let (hook_url, traceparents) = receiver().await?;
    let cp_toml = format!(
        "{}\n[jobs]\npoll_interval_ms = 200\n[webhooks]\nallow_cidrs = [\"127.0.0.1/32\"]\n",
        telemetry_toml(&collector.grpc_endpoint, "grpc")
    );
    let cp = ControlPlane::start_with(Db::Sqlite, Blob::Local, &cp_toml).await?;
    cp.graphql(
        "mutation($url: String!) { createWebhookEndpoint(input: { url: $url, eventTypes: [CAPTURE_STORED] }) {
           endpoint { id } } }",
        json!({ "url": hook_url }),
    )
    .await?;
    let _agent = AgentBuilder::new(&cp, "trace-site")
        .extra_toml(&telemetry_toml(&collector.http_endpoint, "http"))
        .start()?;
    let captures = cp
        .wait_for("a capture stored", || async {
            let all = cp.all_captures().await?;
            Ok((!all.is_empty()).then_some(all))
        })
        .await?;
    let capture_id = captures[0]["id"].as_str().context("capture id")?.to_owned();

    // the agent's root span of that capture names it; its trace holds everything else
    let wanted = format!("capture.id: Str({capture_id})");
    let trace = collector.wait_for("the capture's roadside root span", Duration::from_secs(60), |spans| {
        spans
            .iter()
            .find(|s| s.service == "lanewatch-agent" && s.name == "capture" && s.attributes.contains(&wanted))
            .map(|s| s.trace_id.clone())
    })?;
    let spans = collector.wait_for("the whole trace", Duration::from_secs(60), |spans| {
        let have = |service: &str, name: &str| named(spans, &trace, service, name).is_some();
        let agent = ["capture", "detect", "trigger", "acquire", "buffer", "upload"];
        let control =
            ["capture.ingest", "capture.receive", "blob.put", "db.commit", "job.perform", "webhook.deliver"];
        (agent.iter().all(|n| have("lanewatch-agent", n))
            && control.iter().all(|n| have("lanewatch-control", n)))
        .then(|| spans.to_vec())
    })?;
    let span = |service: &str, name: &str| named(&spans, &trace, service, name).expect("present");
    let root = span("lanewatch-agent", "capture");
    assert_eq!(root.parent_id, "", "the roadside root starts the trace");
    for stage in ["detect", "trigger", "acquire", "buffer"] {
        assert_eq!(span("lanewatch-agent", stage).parent_id, root.span_id, "{stage} under the root");
    }
    let upload = span("lanewatch-agent", "upload");
    assert_eq!(upload.parent_id, root.span_id, "an upload in time is a child of the capture");
    let ingest = span("lanewatch-control", "capture.ingest");
    assert_eq!(ingest.parent_id, upload.span_id, "the gateway continues the agent's upload");
    for child in ["capture.receive", "blob.put", "db.commit"] {
        assert_eq!(span("lanewatch-control", child).parent_id, ingest.span_id, "{child} under the ingest");
    }
    let job = span("lanewatch-control", "job.perform");
    assert_eq!(job.parent_id, ingest.span_id, "the capture's delivery job continues its ingest");
    let deliver = span("lanewatch-control", "webhook.deliver");
    assert_eq!(deliver.parent_id, job.span_id);
    let headers = traceparents.lock().unwrap().clone();
    assert!(
        headers.iter().any(|h| h.starts_with(&format!("00-{trace}-{}-", deliver.span_id))),
        "the receiver continues the same trace: {headers:?}"
    );

    // a capture that reaches the gateway hours after it was taken: a new trace, linked
    let roadside = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut late = meta("trace-site");
    late.captured_at = Some((std::time::SystemTime::now() - Duration::from_secs(3 * 3600)).into());
    late.traceparent = roadside.to_owned();
    let late_id = late.capture_id.clone();
    let mut session = Session::open(&cp.grpc_url(), "agent-late", "trace-site").await?;
    session.upload(late, b"late jpeg").await?;
    let wanted = format!("capture.id: Str({late_id})");
    let ingest = collector.wait_for("the late capture's ingest", Duration::from_secs(60), |spans| {
        spans.iter().find(|s| s.name == "capture.ingest" && s.attributes.contains(&wanted)).cloned()
    })?;
    assert_ne!(ingest.trace_id, "0af7651916cd43dd8448eb211c80319c", "not a child of a span hours old");
    assert_eq!(ingest.parent_id, "");
    assert_eq!(ingest.linked_traces, ["0af7651916cd43dd8448eb211c80319c"], "linked to its roadside trace");
    Ok(())
}

//! The vehicle push service end to end inside the control plane, on SQLite and on PostgreSQL,
//! against a real HTTP receiver on 127.0.0.1 (allowlisted): endpoints registered through
//! GraphQL, push jobs committed with the captures that cause them, Standard Webhooks signatures
//! checked by the receiver (the spec's known-answer vector is in `webhooks::sign`'s tests), the
//! same `webhook-id` across retries, every attempt recorded, an agency's endpoint getting only
//! what its key could read, secret rotation with two valid signatures, resend and recover, and an
//! endpoint disabled after failing for its period, with its `endpoint.disabled` event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use lanewatch_control_plane::auth::Principal;
use lanewatch_control_plane::blob::BlobStore;
use lanewatch_control_plane::config::{
    BlobConfig, ImageLinksConfig, JobsConfig, Limits, QueueLimits, WebhooksConfig,
};
use lanewatch_control_plane::db::Db;
use lanewatch_control_plane::domain::{
    AgentConfigState, AgentHello, Capture, CaptureMeta, Decision, ImageContentType, JobFilter, JobState,
    OccupancyStatus, Role, RolloutState, VehicleClass, Visibility,
};
use lanewatch_control_plane::gateway::Gateway;
use lanewatch_control_plane::graphql::{self, ApiContext};
use lanewatch_control_plane::jobs::deliver::Deliver;
use lanewatch_control_plane::jobs::{JobsRuntime, Worker};
use lanewatch_control_plane::links::ImageLinks;
use lanewatch_control_plane::metrics::Metrics;
use lanewatch_control_plane::webhooks::{Cidr, ClientOptions, DeliveryClient, Secret, verify};
use serde_json::{Value, json};
use uuid::Uuid;

#[macro_use]
mod support;
use support::{Backend, PgDatabase};

/// What the receiver got: headers and body of each request.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(HeaderMap, String)>>>);

/// A receiver on 127.0.0.1 that answers each request with the next status of `statuses` (the
/// last one repeats).
async fn receiver(statuses: Vec<u16>) -> (String, Received) {
    let received = Received::default();
    let answers = Arc::new(Mutex::new(statuses));
    let got = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (got, answers) = (got.clone(), answers.clone());
            async move {
                got.0.lock().unwrap().push((headers, body));
                let mut answers = answers.lock().unwrap();
                let status = if answers.len() > 1 { answers.remove(0) } else { answers[0] };
                (StatusCode::from_u16(status).unwrap(), format!("receiver says {status}"))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), received)
}

struct Plane {
    db: Db,
    /// Where the deliveries' latencies are observed.
    metrics: Metrics,
    schema: graphql::LanewatchSchema,
    _runtime: JobsRuntime,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

async fn plane(backend: Backend, webhooks: WebhooksConfig) -> Plane {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (pg, url) = match backend {
        Backend::Sqlite => (None, format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display())),
        Backend::Postgres => {
            let (pg, url) = PgDatabase::create().await;
            (Some(pg), url)
        }
    };
    let db = Db::connect(&url).await.unwrap();
    let blobs = BlobStore::open(&BlobConfig::Local { dir: dir.path().join("blobs") }).await.unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let gateway =
        Gateway::new(db.clone(), blobs.clone(), Limits::default(), Metrics::new(), shutdown.clone());
    let links = ImageLinks::new(
        "http://cp.test".into(),
        &ImageLinksConfig { ttl_secs: 300, signing_key: Some(vec![7; 32]) },
        blobs.clone(),
    );
    let schema = graphql::schema(ApiContext { db: db.clone(), gateway, blobs, links: links.clone() });
    let client = DeliveryClient::new(ClientOptions {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        max_body_bytes: 64,
        allow: vec![Cidr::parse("127.0.0.1/32").unwrap()],
    })
    .unwrap();
    let metrics = Metrics::new();
    let deliver: Arc<dyn Worker> = Arc::new(
        Deliver::new(db.clone(), client, links, webhooks)
            .observe_with(metrics.webhook_delivery_seconds.clone()),
    );
    let config = JobsConfig {
        poll_interval_ms: 50,
        queues: [("webhooks".to_owned(), QueueLimits { limit: 4, global_limit: None })].into(),
        ..Default::default()
    };
    let runtime =
        JobsRuntime::start(db.clone(), "r1".into(), &config, vec![deliver], vec![], Metrics::new(), shutdown)
            .await
            .unwrap();
    for (site, jurisdiction) in [("north-1", Some("north")), ("south-1", None)] {
        let hello = AgentHello {
            agent_id: format!("agent-{site}"),
            site_id: site.into(),
            software_version: "t".into(),
            config_version: 0,
            wants_heartbeat_acks: false,
            local_config: String::new(),
        };
        db.upsert_agent(&hello, Utc::now()).await.unwrap();
        db.set_site_jurisdiction(site, jurisdiction).await.unwrap();
    }
    Plane { db, metrics, schema, _runtime: runtime, _stop: stop, _dir: dir, _pg: pg }
}

fn fast() -> WebhooksConfig {
    WebhooksConfig { retry_schedule_secs: vec![0; 7], ..Default::default() }
}

fn principal(role: Role) -> Principal {
    let agency = role == Role::Agency;
    Principal {
        key_id: Some(format!("key-{}", role.as_str())),
        role,
        agency_id: agency.then(|| "agency-1".to_owned()),
        jurisdiction: agency.then(|| "north".to_owned()),
        all_captures: false,
    }
}

async fn run(p: &Plane, who: Role, query: &str, vars: Value) -> Value {
    let request = async_graphql::Request::new(query)
        .variables(async_graphql::Variables::from_json(vars))
        .data(principal(who));
    serde_json::to_value(p.schema.execute(request).await).unwrap()
}

const CREATE: &str = "mutation($url: String!, $events: [WebhookEvent!]!) {
  createWebhookEndpoint(input: { url: $url, eventTypes: $events, description: \"e2e\" }) { secret endpoint { id agencyId } } }";

async fn create(p: &Plane, who: Role, url: &str, events: &[&str]) -> (String, Secret) {
    let created = run(p, who, CREATE, json!({ "url": url, "events": events })).await;
    let c = &created["data"]["createWebhookEndpoint"];
    let secret = Secret::parse(c["secret"].as_str().unwrap_or_else(|| panic!("{created}"))).unwrap();
    (c["endpoint"]["id"].as_str().unwrap().to_owned(), secret)
}

/// Stores a capture (and, as ingest does, its push jobs in the same transaction).
async fn capture(db: &Db, site: &str, decision: Decision) -> Uuid {
    let meta = CaptureMeta {
        id: Uuid::now_v7(),
        site_id: site.into(),
        lane: 0,
        captured_at: Utc::now(),
        detected_at: None,
        vehicle_class: VehicleClass::Car,
        occupancy_status: OccupancyStatus::Counted,
        occupants: Some(1),
        speed_kmh: Some(88.0),
        height_m: 1.5,
        width_m: 1.8,
        camera_id: "cam0".into(),
        config_version: 1,
        sections: vec![],
        confidence: Some(0.9),
        model_version: Some("m@1".into()),
        test: false,
    };
    let id = meta.id;
    let c = Capture {
        image_key: format!("captures/{site}/{id}.jpg"),
        meta,
        agent_id: format!("agent-{site}"),
        image_sha256: [1; 32],
        image_bytes: 4,
        image_content_type: ImageContentType::Jpeg,
        received_at: Utc::now(),
        decision,
        trace_parent: None,
    };
    db.insert_capture(&c).await.unwrap();
    id
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The request verifies with `secret` (Standard Webhooks: id.timestamp.body).
fn verifies(secret: &Secret, h: &HeaderMap, body: &str) -> bool {
    let ts: i64 = header(h, "webhook-timestamp").parse().unwrap_or(0);
    verify(secret, header(h, "webhook-signature"), header(h, "webhook-id"), ts, body.as_bytes())
}

both!(
    a_stored_capture_is_pushed_signed_and_retried_under_one_id,
    an_agency_endpoint_gets_only_what_its_key_could_read,
    a_failing_endpoint_is_disabled_and_others_are_told,
    fleet_events_reach_operators_endpoints_only,
);

async fn a_stored_capture_is_pushed_signed_and_retried_under_one_id(backend: Backend) {
    let p = plane(backend, fast()).await;
    let (url, received) = receiver(vec![500, 200]).await;
    let (endpoint, secret) = create(&p, Role::Operator, &url, &["CAPTURE_STORED", "VIOLATION_FLAGGED"]).await;
    let id = capture(&p.db, "south-1", Decision::ViolationCandidate).await;
    // its push jobs were committed with it: one per event
    let jobs = p.db.jobs_page(&JobFilter::default(), None, 10).await.unwrap();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let got = wait_for("two events delivered, the first after a retry", async || {
        let got = received.0.lock().unwrap().clone();
        (got.len() >= 3).then_some(got)
    })
    .await;
    // every request is signed; the retried one keeps its webhook-id
    for (h, body) in &got {
        assert!(verifies(&secret, h, body), "{h:?}");
        assert_eq!(header(h, "content-type"), "application/json");
    }
    let ids: Vec<&str> = got.iter().map(|(h, _)| header(h, "webhook-id")).collect();
    assert_eq!(ids.iter().filter(|i| **i == ids[0]).count(), 2, "the retry of the 500 kept its id: {ids:?}");
    // the payload: the capture's metadata and a time-limited image URL, never the image
    let body: Value = serde_json::from_str(&got[0].1).unwrap();
    let c = &body["data"]["capture"];
    assert_eq!(c["id"], id.to_string(), "{body}");
    assert_eq!((c["site"].as_str(), c["decision"].as_str()), (Some("south-1"), Some("violation_candidate")));
    assert!(c["image_url"].as_str().unwrap().starts_with(&format!("http://cp.test/images/{id}?")), "{body}");
    assert!(c["image_url_expires_at"].is_string());
    let types: Vec<String> = got
        .iter()
        .map(|(_, b)| serde_json::from_str::<Value>(b).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(types.contains(&"capture.stored".to_owned()) && types.contains(&"violation.flagged".to_owned()));
    // the attempts are recorded: status, body snippet, latency
    let completed = JobFilter { state: Some(JobState::Completed), ..Default::default() };
    wait_for("both jobs completed", async || (p.db.jobs_count(&completed).await.unwrap() == 2).then_some(()))
        .await;
    let messages = run(
        &p,
        Role::Operator,
        "query($e: ID!) { webhookMessages(endpointId: $e) { id state attempts lastStatus } }",
        json!({ "e": endpoint }),
    )
    .await;
    let messages = messages["data"]["webhookMessages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 2);
    let retried = messages.iter().find(|m| m["attempts"] == 2).unwrap_or_else(|| panic!("{messages:?}"));
    assert_eq!((retried["state"].as_str(), retried["lastStatus"].as_u64()), (Some("delivered"), Some(200)));
    let attempts = run(
        &p,
        Role::Operator,
        "query($m: ID!) { webhookAttempts(messageId: $m) { attempt status bodySnippet latencyMs } }",
        json!({ "m": retried["id"] }),
    )
    .await;
    let attempts = &attempts["data"]["webhookAttempts"];
    assert_eq!(attempts[0]["status"], 500, "{attempts}");
    // every attempt's latency was observed: 3 requests
    let text = p.metrics.render();
    assert!(text.contains("lanewatch_webhook_delivery_seconds_count 3"), "{text}");
    assert_eq!(attempts[0]["bodySnippet"], "receiver says 500");
    assert_eq!(attempts[1]["status"], 200);

    // rotation: both secrets sign during the overlap
    let rotated = run(
        &p,
        Role::Operator,
        "mutation($e: ID!) { rotateWebhookSecret(id: $e, overlapSecs: 600) { secret } }",
        json!({ "e": endpoint }),
    )
    .await;
    let new_secret =
        Secret::parse(rotated["data"]["rotateWebhookSecret"]["secret"].as_str().unwrap()).unwrap();
    // resend one message under its id: the receiver sees it again, signed with both secrets
    let resent = run(
        &p,
        Role::Operator,
        "mutation($m: ID!) { resendWebhookMessage(messageId: $m) }",
        json!({ "m": retried["id"] }),
    )
    .await;
    assert!(resent["errors"].is_null(), "{resent}");
    let (h, body) = wait_for("the resend", async || received.0.lock().unwrap().get(3).cloned()).await;
    assert_eq!(header(&h, "webhook-id"), retried["id"].as_str().unwrap());
    assert_eq!(header(&h, "webhook-signature").split(' ').count(), 2);
    assert!(verifies(&secret, &h, &body) && verifies(&new_secret, &h, &body));
    // agencies manage no operator's endpoint; bad input is refused with a clear code
    let hidden = run(
        &p,
        Role::Agency,
        "mutation($e: ID!) { deleteWebhookEndpoint(id: $e) }",
        json!({ "e": endpoint }),
    )
    .await;
    assert_eq!(hidden["errors"][0]["extensions"]["code"], "NOT_FOUND", "{hidden}");
    let plain = run(
        &p,
        Role::Operator,
        CREATE,
        json!({ "url": "http://example.com/hook", "events": ["CAPTURE_STORED"] }),
    )
    .await;
    assert!(
        plain["errors"][0]["message"].as_str().unwrap().contains("https is required off loopback"),
        "{plain}"
    );
    let none =
        run(&p, Role::Operator, CREATE, json!({ "url": "https://example.com/hook", "events": [] })).await;
    assert_eq!(none["errors"][0]["extensions"]["code"], "INVALID_ARGUMENT", "{none}");
}

async fn an_agency_endpoint_gets_only_what_its_key_could_read(backend: Backend) {
    let p = plane(backend, fast()).await;
    let (url, received) = receiver(vec![204]).await;
    let (endpoint, _) =
        create(&p, Role::Agency, &url, &["CAPTURE_STORED", "VIOLATION_FLAGGED", "VIOLATION_CONFIRMED"]).await;
    // another jurisdiction's capture, and one of its own that is no violation (no all_captures)
    capture(&p.db, "south-1", Decision::ViolationCandidate).await;
    capture(&p.db, "north-1", Decision::Compliant).await;
    let flagged = capture(&p.db, "north-1", Decision::ViolationCandidate).await;
    let jobs = p.db.jobs_page(&JobFilter::default(), None, 10).await.unwrap();
    assert_eq!(jobs.len(), 2, "only the visible violation's two events: {jobs:?}");
    assert!(jobs.iter().all(|j| j.args["capture_id"] == flagged.to_string()));
    wait_for("both delivered", async || (received.0.lock().unwrap().len() == 2).then_some(())).await;
    // a review is pushed too, committed with the review
    let violation = p.db.violation_of_capture(flagged, &Visibility::All).await.unwrap().unwrap();
    let reviewed = run(
        &p,
        Role::Operator,
        "mutation($id: ID!) { reviewViolation(id: $id, decision: CONFIRM) { state } }",
        json!({ "id": violation.id.to_string() }),
    )
    .await;
    assert!(reviewed["errors"].is_null(), "{reviewed}");
    let (_, body) =
        wait_for("violation.confirmed", async || received.0.lock().unwrap().get(2).cloned()).await;
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["data"]["capture"]["id"].as_str()),
        (Some("violation.confirmed"), Some(flagged.to_string().as_str()))
    );
    let listed = run(&p, Role::Agency, "{ webhookEndpoints { id agencyId } }", json!({})).await;
    assert_eq!(listed["data"]["webhookEndpoints"], json!([{ "id": endpoint, "agencyId": "agency-1" }]));
}

async fn a_failing_endpoint_is_disabled_and_others_are_told(backend: Backend) {
    let config =
        WebhooksConfig { retry_schedule_secs: vec![1; 7], disable_after_secs: 1, ..Default::default() };
    let p = plane(backend, config).await;
    let (bad_url, _) = receiver(vec![503]).await;
    let (ops_url, ops) = receiver(vec![200]).await;
    let (bad, _) = create(&p, Role::Operator, &bad_url, &["CAPTURE_STORED"]).await;
    create(&p, Role::Admin, &ops_url, &["ENDPOINT_DISABLED"]).await;
    let since = Utc::now();
    capture(&p.db, "south-1", Decision::Compliant).await;
    let (_, body) =
        wait_for("the endpoint.disabled event", async || ops.0.lock().unwrap().first().cloned()).await;
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], "endpoint.disabled");
    assert_eq!(event["data"]["endpoint"]["id"], bad.as_str(), "{event}");
    let listed =
        run(&p, Role::Operator, "{ webhookEndpoints { id enabled disabledReason } }", json!({})).await;
    let row = listed["data"]["webhookEndpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == bad.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["enabled"], false, "{row}");
    assert!(row["disabledReason"].as_str().unwrap().starts_with("every delivery failed since"), "{row}");
    // recovered after the receiver is fixed and the endpoint enabled again
    let enable = "mutation($e: ID!, $u: String!) { updateWebhookEndpoint(id: $e, input: { url: $u, eventTypes: [CAPTURE_STORED] }) { enabled failingSince } }";
    let (good_url, good) = receiver(vec![200]).await;
    let enabled = run(&p, Role::Operator, enable, json!({ "e": bad, "u": good_url })).await;
    assert_eq!(
        enabled["data"]["updateWebhookEndpoint"],
        json!({ "enabled": true, "failingSince": null }),
        "{enabled}"
    );
    let recovered = run(
        &p,
        Role::Operator,
        "mutation($e: ID!, $s: DateTime!) { recoverWebhookMessages(endpointId: $e, since: $s) }",
        json!({ "e": bad, "s": since.to_rfc3339() }),
    )
    .await;
    assert_eq!(recovered["data"]["recoverWebhookMessages"], 1, "{recovered}");
    wait_for("the recovered delivery", async || (good.0.lock().unwrap().len() == 1).then_some(())).await;
}

async fn fleet_events_reach_operators_endpoints_only(backend: Backend) {
    let p = plane(backend, fast()).await;
    let (url, received) = receiver(vec![200]).await;
    let (agency_url, agency_received) = receiver(vec![200]).await;
    create(&p, Role::Operator, &url, &["AGENT_ONLINE", "AGENT_OFFLINE", "CONFIG_REJECTED"]).await;
    create(&p, Role::Agency, &agency_url, &["AGENT_ONLINE", "AGENT_OFFLINE", "CONFIG_REJECTED"]).await;
    let hello = AgentHello {
        agent_id: "agent-north-1".into(),
        site_id: "north-1".into(),
        software_version: "t".into(),
        config_version: 3,
        wants_heartbeat_acks: false,
        local_config: String::new(),
    };
    p.db.upsert_agent(&hello, Utc::now()).await.unwrap();
    p.db.mark_offline("agent-north-1").await.unwrap();
    p.db.mark_offline("agent-north-1").await.unwrap(); // already offline: no second event
    let rejected = AgentConfigState {
        agent_id: "agent-north-1".into(),
        site_id: "north-1".into(),
        version: 4,
        state: RolloutState::Rejected,
        error: Some("cameras[0].source.path: no such file".into()),
        updated_at: Utc::now(),
    };
    assert!(p.db.set_config_state(&rejected, &[RolloutState::Pending]).await.unwrap());
    let got = wait_for("three fleet events", async || {
        let got = received.0.lock().unwrap().clone();
        (got.len() >= 3).then_some(got)
    })
    .await;
    let mut types: Vec<String> = got
        .iter()
        .map(|(_, b)| serde_json::from_str::<Value>(b).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(types, ["agent.offline", "agent.online", "config.rejected"]);
    let rejected: Value =
        serde_json::from_str(&got.iter().find(|(_, b)| b.contains("config.rejected")).unwrap().1).unwrap();
    assert_eq!(rejected["data"]["config"]["error"], "cameras[0].source.path: no such file", "{rejected}");
    let completed = JobFilter { state: Some(JobState::Completed), ..Default::default() };
    wait_for("every job done", async || (p.db.jobs_count(&completed).await.unwrap() == 3).then_some(()))
        .await;
    assert!(agency_received.0.lock().unwrap().is_empty(), "an agency does not read the fleet");
    assert_eq!(
        p.db.jobs_count(&JobFilter::default()).await.unwrap(),
        3,
        "no job for the agency, no second offline"
    );
}

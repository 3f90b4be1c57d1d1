//! The reconciler's kube client against scripted API-server exchanges (tower-test's mock
//! service, in the style of kube-rs's controller-rs): each scenario expects the requests the
//! reconciler must make, checks them, answers with JSON, and then checks what reached SQL.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::crd::{AgentConfigSource, ConfigMapKeyRef, LanewatchSite, LanewatchSiteSpec};
use super::reconcile::{Context, ReconcileError, reconcile};
use crate::blob::BlobStore;
use crate::config::{BlobConfig, Limits};
use crate::db::Db;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
// a site config the validator accepts: the rollout tests' own
use crate::rollout::tests::VALID;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

struct Harness {
    _dir: tempfile::TempDir,
    _shutdown: watch::Sender<bool>,
    db: Db,
    ctx: Arc<Context>,
}

async fn harness() -> (Harness, Handle) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display())).await.unwrap();
    let blobs = BlobStore::open(&BlobConfig::Local { dir: dir.path().join("blobs") }).await.unwrap();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let gateway = Gateway::new(db.clone(), blobs, Limits::default(), Metrics::new(), shutdown_rx);
    let fence = db.begin_leader_term("singletons", "test", chrono::Utc::now()).await.unwrap();
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "lw");
    let ctx = Context {
        client,
        db: db.clone(),
        sessions: Arc::new(gateway),
        namespace: "lw".into(),
        field_manager: "lanewatch-control-plane".into(),
        fence,
    };
    (Harness { _dir: dir, _shutdown: shutdown, db, ctx: Arc::new(ctx) }, handle)
}

fn site(name: &str, site_id: &str, config: AgentConfigSource) -> Arc<LanewatchSite> {
    let mut s = LanewatchSite::new(
        name,
        LanewatchSiteSpec {
            site_id: site_id.into(),
            jurisdiction: Some("CA".into()),
            lanes: vec![],
            agent_config: config,
        },
    );
    s.metadata.namespace = Some("lw".into());
    s.metadata.generation = Some(3);
    Arc::new(s)
}

fn inline(text: &str) -> AgentConfigSource {
    AgentConfigSource { inline: Some(text.into()), config_map_ref: None }
}

/// Expects the next request to be `method path`, returns its JSON body, and answers `answer`.
async fn expect(handle: &mut Handle, method: Method, path: &str, status: StatusCode, answer: Value) -> Value {
    let (request, send) = handle.next_request().await.expect("the reconciler made no further request");
    assert_eq!(request.method(), method, "{}", request.uri());
    assert_eq!(request.uri().path(), path);
    let content_type = request.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let query = request.uri().query().unwrap_or_default().to_owned();
    let body = request.into_body().collect_bytes().await.unwrap();
    if method == Method::PATCH {
        assert_eq!(
            content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "status by server-side apply"
        );
        assert!(
            query.contains("fieldManager=lanewatch-control-plane") && query.contains("force=true"),
            "{query}"
        );
    }
    let response =
        Response::builder().status(status).body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap();
    send.send_response(response);
    if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() }
}

const STATUS_PATH: &str = "/apis/lanewatch.io/v1alpha1/namespaces/lw/lanewatchsites/north/status";

fn condition<'a>(patch: &'a Value, type_: &str) -> &'a Value {
    patch["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap()
}

#[tokio::test]
async fn a_valid_site_is_stored_claimed_and_reported_ready() {
    let (h, mut api) = harness().await;
    let resource = site("north", "s1", inline(VALID));
    let echo = serde_json::to_value(resource.as_ref()).unwrap();
    let server =
        tokio::spawn(async move { expect(&mut api, Method::PATCH, STATUS_PATH, StatusCode::OK, echo).await });
    reconcile(resource, h.ctx.clone()).await.unwrap();
    let patch = server.await.unwrap();
    assert_eq!(patch["apiVersion"], "lanewatch.io/v1alpha1");
    assert_eq!(patch["kind"], "LanewatchSite");
    assert_eq!(patch["status"]["observedGeneration"], 3);
    assert_eq!(condition(&patch, "Ready")["status"], "True");
    assert_eq!(condition(&patch, "Degraded")["status"], "False");
    assert_eq!(patch["status"]["rollout"]["version"], 1);
    let stored = h.db.site_config("s1", None).await.unwrap().unwrap();
    assert_eq!(stored.created_by, "kubernetes:lw/north");
    assert!(stored.toml.contains("config_version = 1"), "{}", stored.toml);
    let manager = h.db.site_manager("s1").await.unwrap().unwrap();
    assert_eq!((manager.namespace.as_str(), manager.name.as_str()), ("lw", "north"));
    let refused = crate::rollout::ensure_not_managed(&h.db, "s1").await.unwrap_err();
    assert_eq!(refused.kind, crate::error::ErrorKind::FailedPrecondition);
    assert!(refused.message.contains("LanewatchSite lw/north"), "{}", refused.message);
}

#[tokio::test]
async fn an_invalid_config_sets_degraded_with_the_line_and_stores_nothing() {
    let (h, mut api) = harness().await;
    let broken = VALID.replace("= 900", "= 0");
    let resource = site("north", "s1", inline(&broken));
    let echo = serde_json::to_value(resource.as_ref()).unwrap();
    let server =
        tokio::spawn(async move { expect(&mut api, Method::PATCH, STATUS_PATH, StatusCode::OK, echo).await });
    reconcile(resource, h.ctx.clone()).await.unwrap();
    let patch = server.await.unwrap();
    let degraded = condition(&patch, "Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("InvalidConfig"))
    );
    let message = degraded["message"].as_str().unwrap();
    assert!(message.contains("simulator.flow_veh_h_per_lane (line 13)"), "the field and its line: {message}");
    assert_eq!(condition(&patch, "Ready")["status"], "False");
    assert_eq!(h.db.site_config("s1", None).await.unwrap(), None, "nothing stored");
    assert_eq!(h.db.site_manager("s1").await.unwrap(), None, "nothing claimed");
}

#[tokio::test]
async fn the_config_comes_from_a_configmap_and_a_missing_one_is_degraded() {
    let (h, mut api) = harness().await;
    let from_map = AgentConfigSource {
        inline: None,
        config_map_ref: Some(ConfigMapKeyRef { name: "north-agent".into(), key: "agent.toml".into() }),
    };
    let resource = site("north", "s1", from_map);
    let echo = serde_json::to_value(resource.as_ref()).unwrap();
    let map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "north-agent", "namespace": "lw"},
                     "data": {"agent.toml": VALID}});
    let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                           "code": 404, "message": "configmaps \"north-agent\" not found"});
    let cm_path = "/api/v1/namespaces/lw/configmaps/north-agent";
    let server = tokio::spawn(async move {
        expect(&mut api, Method::GET, cm_path, StatusCode::OK, map).await;
        let first = expect(&mut api, Method::PATCH, STATUS_PATH, StatusCode::OK, echo.clone()).await;
        expect(&mut api, Method::GET, cm_path, StatusCode::NOT_FOUND, not_found).await;
        let second = expect(&mut api, Method::PATCH, STATUS_PATH, StatusCode::OK, echo).await;
        (first, second)
    });
    reconcile(resource.clone(), h.ctx.clone()).await.unwrap();
    assert_eq!(h.db.site_config("s1", None).await.unwrap().unwrap().version, 1);
    reconcile(resource, h.ctx.clone()).await.unwrap();
    let (first, second) = server.await.unwrap();
    assert_eq!(condition(&first, "Ready")["status"], "True");
    assert_eq!(condition(&second, "Degraded")["reason"], "ConfigMapNotFound");
    assert_eq!(h.db.site_config("s1", None).await.unwrap().unwrap().version, 1, "the stored version stays");
}

#[tokio::test]
async fn a_second_resource_for_the_same_site_is_refused_an_unchanged_status_is_not_rewritten_and_a_deposed_leader_writes_nothing()
 {
    let (h, mut api) = harness().await;
    let north = site("north", "s1", inline(VALID));
    let other = site("south", "s1", inline(VALID));
    let (echo_n, echo_s) =
        (serde_json::to_value(north.as_ref()).unwrap(), serde_json::to_value(other.as_ref()).unwrap());
    let server = tokio::spawn(async move {
        let first = expect(&mut api, Method::PATCH, STATUS_PATH, StatusCode::OK, echo_n).await;
        let south = "/apis/lanewatch.io/v1alpha1/namespaces/lw/lanewatchsites/south/status";
        let patch = expect(&mut api, Method::PATCH, south, StatusCode::OK, echo_s).await;
        (first, patch, api)
    });
    reconcile(north.clone(), h.ctx.clone()).await.unwrap();
    reconcile(other, h.ctx.clone()).await.unwrap();
    let (first, patch, mut api) = server.await.unwrap();
    // north as it reads back with the status written: reconciling it again writes nothing
    let mut written = (*north).clone();
    written.status = Some(serde_json::from_value(first["status"].clone()).unwrap());
    // (a write would wait for the mock's answer, which never comes)
    let again =
        tokio::time::timeout(std::time::Duration::from_secs(5), reconcile(Arc::new(written), h.ctx.clone()));
    assert!(again.await.expect("an unchanged status must not be patched again").is_ok());
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), api.next_request()).await.is_err(),
        "no request was made"
    );
    let degraded = condition(&patch, "Degraded");
    assert_eq!(degraded["reason"], "SiteConflict");
    assert!(degraded["message"].as_str().unwrap().contains("LanewatchSite lw/north"), "{degraded}");
    // another replica starts a newer term: this one's writes fail before any status is written
    h.db.begin_leader_term("singletons", "other", chrono::Utc::now()).await.unwrap();
    let changed = site("north", "s1", inline(&VALID.replace("seed = 1", "seed = 2")));
    let err = reconcile(changed, h.ctx.clone()).await.unwrap_err();
    assert!(matches!(err, ReconcileError::Db(crate::db::DbError::Fenced { .. })), "{err}");
    assert_eq!(h.db.site_config("s1", None).await.unwrap().unwrap().version, 1);
}

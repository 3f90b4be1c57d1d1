//! Who sees what, through the real HTTP router (in-process, `tower::ServiceExt::oneshot`): the
//! permission matrix of roles × queries and mutations × own and other jurisdiction, on SQLite
//! and on PostgreSQL (a fresh database per test at 127.0.0.1:5432; unreachable is a failure),
//! plus filters and pagination, the audit log, key hashing, and the `create-api-key` command.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::BodyExt;
use lanewatch_control_plane::auth::{self, KeyRequest};
use lanewatch_control_plane::blob::BlobStore;
use lanewatch_control_plane::config::{BlobConfig, ImageLinksConfig, Limits};
use lanewatch_control_plane::db::Db;
use lanewatch_control_plane::domain::{
    self, AgentHello, Capture, CaptureMeta, HovPolicy, ImageContentType, OccupancyStatus, Role, VehicleClass,
};
use lanewatch_control_plane::gateway::Gateway;
use lanewatch_control_plane::graphql::{self, ApiContext};
use lanewatch_control_plane::http::{self, AppState};
use lanewatch_control_plane::links::ImageLinks;
use lanewatch_control_plane::metrics::Metrics;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};
use sha2::Digest;
use tower::ServiceExt;
use uuid::Uuid;

mod support;
use support::{Backend, PgDatabase};

/// No `Authorization` header.
const NO_KEY: Option<&str> = None;

struct App {
    router: Router,
    db: Db,
    url: String,
    _shutdown: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

async fn app(backend: Backend, allow_anonymous: bool) -> App {
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
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let gateway = Gateway::new(db.clone(), blobs.clone(), Limits::default(), Metrics::new(), rx);
    let config = ImageLinksConfig {
        ttl_secs: 300,
        signing_key: Some(b"access-test-url-signing-key-0123456789".to_vec()),
    };
    let links = ImageLinks::new("http://cp.test".into(), &config, blobs.clone());
    let schema =
        graphql::schema(ApiContext { db: db.clone(), gateway, blobs: blobs.clone(), links: links.clone() });
    let router = http::router(
        AppState { schema, db: db.clone(), blobs, metrics: Metrics::new(), allow_anonymous, links },
        None,
    );
    App { router, db, url, _shutdown: shutdown, _dir: dir, _pg: pg }
}

impl App {
    async fn request<S: AsRef<str> + ?Sized>(
        &self,
        method: &str,
        uri: &str,
        key: Option<&S>,
        body: Option<Value>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", key.as_ref()));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let response = self.router.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, bytes)
    }

    /// POSTs a GraphQL query; returns the HTTP status and the JSON body.
    async fn gql<S: AsRef<str> + ?Sized>(
        &self,
        key: Option<&S>,
        query: &str,
        variables: Value,
    ) -> (StatusCode, Value) {
        let (status, bytes) = self
            .request("POST", "/graphql", key, Some(json!({ "query": query, "variables": variables })))
            .await;
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The data of a query that must succeed.
    async fn data<S: AsRef<str> + ?Sized>(&self, key: Option<&S>, query: &str, variables: Value) -> Value {
        let (status, body) = self.gql(key, query, variables).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("errors").is_none(), "{query}: {body}");
        body["data"].clone()
    }

    /// The `extensions.code` of a query that must fail.
    async fn error_code<S: AsRef<str> + ?Sized>(
        &self,
        key: Option<&S>,
        query: &str,
        variables: Value,
    ) -> String {
        let (_, body) = self.gql(key, query, variables).await;
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{query}: expected an error, got {body}"))
            .to_owned()
    }
}

struct Keys {
    admin: String,
    operator: String,
    /// Agency A (jurisdiction "ja"), violations only.
    agency_a: String,
    /// Agency A with the all-captures grant.
    agency_a_all: String,
    /// Agency B (jurisdiction "jb").
    agency_b: String,
}

/// One capture per (site, occupants) as seen at `at`, stored with its image and decided under
/// the site's lane policy.
struct Seeded {
    keys: Keys,
    /// site-a: compliant (2 occupants), violation (1 occupant); same for site-b.
    a_ok: Uuid,
    a_bad: Uuid,
    b_ok: Uuid,
    b_bad: Uuid,
    at: DateTime<Utc>,
}

fn meta(
    site: &str,
    lane: u32,
    occupants: Option<u32>,
    class: VehicleClass,
    at: DateTime<Utc>,
) -> CaptureMeta {
    CaptureMeta {
        id: Uuid::now_v7(),
        site_id: site.into(),
        lane,
        captured_at: at,
        detected_at: None,
        vehicle_class: class,
        occupancy_status: if occupants.is_some() {
            OccupancyStatus::Counted
        } else {
            OccupancyStatus::Unreadable
        },
        occupants,
        speed_kmh: None,
        height_m: 1.5,
        width_m: 1.8,
        camera_id: "cam0".into(),
        config_version: 7,
        sections: vec![domain::SectionCount { section: "driver".into(), occupants: 1, confidence: 0.875 }],
        confidence: Some(0.875),
        model_version: Some("occupancy-v3".into()),
        test: false,
    }
}

async fn store(app: &App, blobs_dir: &std::path::Path, m: CaptureMeta) -> Uuid {
    let policy = app.db.hov_policy(&m.site_id, m.lane).await.unwrap();
    let image = format!("jpeg bytes of {}", m.id).into_bytes();
    let blobs = BlobStore::open(&BlobConfig::Local { dir: blobs_dir.to_path_buf() }).await.unwrap();
    let sha256: [u8; 32] = sha2::Sha256::digest(&image).into();
    let image_key = domain::image_key(&m, ImageContentType::Jpeg, &sha256);
    blobs.put(&image_key, image.clone().into(), "image/jpeg").await.unwrap();
    let id = m.id;
    let capture = Capture {
        decision: domain::decide(&m, policy.as_ref()),
        trace_parent: None,
        meta: m,
        agent_id: "agent".into(),
        image_key,
        image_sha256: sha2::Sha256::digest(&image).into(),
        image_bytes: image.len() as u64,
        image_content_type: ImageContentType::Jpeg,
        received_at: Utc::now(),
    };
    app.db.insert_capture(&capture).await.unwrap();
    id
}

async fn key(app: &App, role: Role, agency: Option<&str>, all_captures: bool) -> String {
    let req = KeyRequest {
        name: format!("{role:?} key"),
        role,
        agency_id: agency.map(str::to_owned),
        all_captures,
    };
    auth::issue_key(&app.db, req, Utc::now()).await.unwrap().1
}

async fn seed(app: &App) -> Seeded {
    let now = Utc::now();
    for (agent, site) in [("agent-a", "site-a"), ("agent-b", "site-b")] {
        let hello = AgentHello {
            agent_id: agent.into(),
            site_id: site.into(),
            software_version: "0.1.0".into(),
            config_version: 1,
            wants_heartbeat_acks: false,
            local_config: String::new(),
        };
        app.db.upsert_agent(&hello, now).await.unwrap();
        app.db.set_hov_policy(site, 0, &HovPolicy { min_occupants: 2, windows: vec![] }).await.unwrap();
    }
    app.db.set_site_jurisdiction("site-a", Some("ja")).await.unwrap().unwrap();
    app.db.set_site_jurisdiction("site-b", Some("jb")).await.unwrap().unwrap();
    for (id, name, j) in [("agency-a", "Agency A", "ja"), ("agency-b", "Agency B", "jb")] {
        let agency = domain::Agency { id: id.into(), name: name.into(), jurisdiction: j.into() };
        app.db.insert_agency(&agency, now).await.unwrap();
    }
    let keys = Keys {
        admin: key(app, Role::Admin, None, false).await,
        operator: key(app, Role::Operator, None, false).await,
        agency_a: key(app, Role::Agency, Some("agency-a"), false).await,
        agency_a_all: key(app, Role::Agency, Some("agency-a"), true).await,
        agency_b: key(app, Role::Agency, Some("agency-b"), false).await,
    };
    let at = Utc.with_ymd_and_hms(2025, 3, 4, 8, 15, 0).unwrap();
    let blobs = app._dir.path().join("blobs");
    let a_ok = store(app, &blobs, meta("site-a", 0, Some(2), VehicleClass::Car, at)).await;
    let a_bad =
        store(app, &blobs, meta("site-a", 0, Some(1), VehicleClass::Car, at + chrono::Duration::minutes(1)))
            .await;
    let b_ok = store(app, &blobs, meta("site-b", 0, Some(3), VehicleClass::Van, at)).await;
    let b_bad =
        store(app, &blobs, meta("site-b", 0, Some(1), VehicleClass::Car, at + chrono::Duration::minutes(2)))
            .await;
    Seeded { keys, a_ok, a_bad, b_ok, b_bad, at }
}

fn ids(v: &Value, path: &str) -> Vec<String> {
    let mut out: Vec<String> = v[path]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no {path} edges in {v}"))
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

const CAPTURES: &str =
    "{ captures(first: 50) { edges { node { id site decision violation { id site } } } } }";
const VIOLATIONS: &str = "{ violations(first: 50) { edges { node { id site state capture { id site } } } } }";

/// The core matrix, run on both backends.
async fn permission_matrix(backend: Backend) {
    let app = app(backend, false).await;
    let s = seed(&app).await;
    let k = &s.keys;

    // authentication: no key, a malformed key, an unknown key
    let (status, body) = app.gql(NO_KEY, "{ me { role } }", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("missing api key"), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let (status, _) = app.gql(Some("nonsense"), "{ me { role } }", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let forged = format!("lw_{}_{}", auth::parse_token(&k.admin).unwrap().0, "ab".repeat(32));
    let (status, _) = app.gql(Some(&forged), "{ me { role } }", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.data(Some(&k.agency_a), "{ me { role } }", json!({})).await["me"]["role"], "AGENCY");

    // fleet: operators and admins only
    for key in [&k.admin, &k.operator] {
        let agents = app.data(Some(key), "{ agents { id site } }", json!({})).await;
        assert_eq!(agents["agents"].as_array().unwrap().len(), 2);
    }
    for key in [&k.agency_a, &k.agency_a_all, &k.agency_b] {
        assert_eq!(app.error_code(Some(key), "{ agents { id } }", json!({})).await, "PERMISSION_DENIED");
        assert_eq!(
            app.error_code(Some(key), "{ agent(id: \"agent-a\") { id } }", json!({})).await,
            "PERMISSION_DENIED"
        );
    }

    // sites: agencies see their jurisdiction only
    let site_ids = |v: Value| {
        sorted(v["sites"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect())
    };
    assert_eq!(
        site_ids(app.data(Some(&k.operator), "{ sites { id } }", json!({})).await),
        ["site-a", "site-b"]
    );
    assert_eq!(site_ids(app.data(Some(&k.agency_a), "{ sites { id } }", json!({})).await), ["site-a"]);
    assert_eq!(site_ids(app.data(Some(&k.agency_b), "{ sites { id } }", json!({})).await), ["site-b"]);

    // captures: operators all; agencies their sites, only violations unless granted
    let all = sorted([s.a_ok, s.a_bad, s.b_ok, s.b_bad].iter().map(Uuid::to_string).collect());
    assert_eq!(ids(&app.data(Some(&k.admin), CAPTURES, json!({})).await, "captures"), all);
    assert_eq!(ids(&app.data(Some(&k.operator), CAPTURES, json!({})).await, "captures"), all);
    assert_eq!(
        ids(&app.data(Some(&k.agency_a), CAPTURES, json!({})).await, "captures"),
        [s.a_bad.to_string()]
    );
    assert_eq!(
        ids(&app.data(Some(&k.agency_a_all), CAPTURES, json!({})).await, "captures"),
        sorted(vec![s.a_ok.to_string(), s.a_bad.to_string()])
    );
    assert_eq!(
        ids(&app.data(Some(&k.agency_b), CAPTURES, json!({})).await, "captures"),
        [s.b_bad.to_string()]
    );
    // ... also when asked by id or by the other site's filter
    let one = "query($id: ID!) { capture(id: $id) { id } }";
    for (key, id, visible) in [
        (&k.agency_a, s.b_bad, false),
        (&k.agency_a, s.a_ok, false),
        (&k.agency_a, s.a_bad, true),
        (&k.agency_a_all, s.a_ok, true),
        (&k.agency_a_all, s.b_ok, false),
        (&k.agency_b, s.a_bad, false),
        (&k.operator, s.b_ok, true),
    ] {
        let got = app.data(Some(key), one, json!({ "id": id })).await;
        assert_eq!(!got["capture"].is_null(), visible, "capture {id}");
    }
    let other_site = "{ captures(site: \"site-b\") { edges { node { id } } } }";
    assert!(ids(&app.data(Some(&k.agency_a_all), other_site, json!({})).await, "captures").is_empty());

    // violations, and nested paths from them and from captures
    let v = app.data(Some(&k.admin), VIOLATIONS, json!({})).await;
    let edges = v["violations"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2);
    let violation_of = |capture: Uuid| {
        edges.iter().find(|e| e["node"]["capture"]["id"] == capture.to_string()).unwrap()["node"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (va, vb) = (violation_of(s.a_bad), violation_of(s.b_bad));
    for (key, expected) in [(&k.agency_a, &va), (&k.agency_a_all, &va), (&k.agency_b, &vb)] {
        let got = app.data(Some(key), VIOLATIONS, json!({})).await;
        let edges = got["violations"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 1, "{got}");
        assert_eq!(&edges[0]["node"]["id"], expected.as_str());
        let site = edges[0]["node"]["site"].as_str().unwrap();
        assert_eq!(edges[0]["node"]["capture"]["site"], site);
    }
    let violation_by_id =
        "query($id: ID!) { violation(id: $id) { id capture { id } evidencePackage { violationId } } }";
    assert!(app.data(Some(&k.agency_a), violation_by_id, json!({ "id": vb })).await["violation"].is_null());
    assert!(!app.data(Some(&k.agency_b), violation_by_id, json!({ "id": vb })).await["violation"].is_null());
    let nested = app.data(Some(&k.agency_a_all), CAPTURES, json!({})).await;
    for e in nested["captures"]["edges"].as_array().unwrap() {
        let node = &e["node"];
        assert_eq!(node["site"], "site-a");
        if node["id"] == s.a_bad.to_string() {
            assert_eq!(node["decision"], "VIOLATION_CANDIDATE");
            assert_eq!(node["violation"]["id"], va.as_str());
        } else {
            assert_eq!(node["decision"], "COMPLIANT");
            assert!(node["violation"].is_null());
        }
    }

    // review: operators and admins; a denial is audited too
    let review = "mutation($id: ID!, $d: ReviewDecision!, $r: String) { \
                  reviewViolation(id: $id, decision: $d, reason: $r) { id state reviewer reason } }";
    for key in [&k.agency_a, &k.agency_b] {
        let code = app.error_code(Some(key), review, json!({ "id": va, "d": "CONFIRM" })).await;
        assert_eq!(code, "PERMISSION_DENIED");
    }
    assert_eq!(
        app.error_code(Some(&k.operator), review, json!({ "id": vb, "d": "REJECT" })).await,
        "INVALID_ARGUMENT"
    );
    let rejected =
        app.data(Some(&k.operator), review, json!({ "id": vb, "d": "REJECT", "r": "plate glare" })).await;
    assert_eq!(rejected["reviewViolation"]["state"], "REJECTED");
    assert_eq!(rejected["reviewViolation"]["reason"], "plate glare");
    let confirmed = app.data(Some(&k.operator), review, json!({ "id": va, "d": "CONFIRM" })).await;
    assert_eq!(confirmed["reviewViolation"]["state"], "CONFIRMED");
    let operator_id = auth::parse_token(&k.operator).unwrap().0;
    assert_eq!(confirmed["reviewViolation"]["reviewer"], operator_id);
    assert_eq!(
        app.error_code(Some(&k.admin), review, json!({ "id": va, "d": "REJECT", "r": "x" })).await,
        "FAILED_PRECONDITION"
    );
    let unknown = Uuid::now_v7().to_string();
    assert_eq!(
        app.error_code(Some(&k.admin), review, json!({ "id": unknown, "d": "CONFIRM" })).await,
        "NOT_FOUND"
    );

    // the evidence package of the confirmed violation, for its own agency only
    let evidence = "query($id: ID!) { violation(id: $id) { state evidencePackage { violationId decision \
                    modelVersion configVersion reviewer capture { id lane site } \
                    images { url sha256 bytes contentType } } } }";
    let got = app.data(Some(&k.agency_a), evidence, json!({ "id": va })).await;
    let package = &got["violation"]["evidencePackage"];
    assert_eq!(package["violationId"], va.as_str());
    assert_eq!(package["decision"], "VIOLATION_CANDIDATE");
    assert_eq!(package["modelVersion"], "occupancy-v3");
    assert_eq!(package["configVersion"], 7);
    assert_eq!(package["reviewer"], operator_id);
    let image = &package["images"][0];
    let expected = hex::encode(sha2::Sha256::digest(format!("jpeg bytes of {}", s.a_bad).as_bytes()));
    assert_eq!(image["sha256"], expected);
    let url = image["url"].as_str().unwrap();
    let signed = url.strip_prefix("http://cp.test").unwrap().to_owned();
    assert!(signed.starts_with(&format!("/images/{}?expires=", s.a_bad)), "{url}");
    // a signed link works without a key until it expires; a tampered one is refused with 403
    let (status, bytes) = app.request("GET", &signed, NO_KEY, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, format!("jpeg bytes of {}", s.a_bad).as_bytes());
    let tampered = format!("{}0", &signed[..signed.len() - 1]).replace("0", "1");
    let (status, body) = app.request("GET", &tampered, NO_KEY, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("signature is invalid"));
    let other = signed.replace(&s.a_bad.to_string(), &s.b_ok.to_string());
    assert_eq!(app.request("GET", &other, NO_KEY, None).await.0, StatusCode::FORBIDDEN);
    let expired = format!("/images/{}?expires=1&sig={}", s.a_bad, "00".repeat(32));
    assert_eq!(app.request("GET", &expired, NO_KEY, None).await.0, StatusCode::FORBIDDEN);
    assert!(app.data(Some(&k.agency_b), evidence, json!({ "id": va })).await["violation"].is_null());
    let pending = app.data(Some(&k.admin), evidence, json!({ "id": vb })).await;
    assert!(pending["violation"]["evidencePackage"].is_null(), "rejected has no evidence: {pending}");

    // images follow the same visibility
    let image = |id: Uuid| format!("/images/{id}");
    assert_eq!(app.request("GET", &image(s.a_bad), NO_KEY, None).await.0, StatusCode::UNAUTHORIZED);
    let (status, bytes) = app.request("GET", &image(s.a_bad), Some(&k.agency_a), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, format!("jpeg bytes of {}", s.a_bad).into_bytes());
    assert_eq!(app.request("GET", &image(s.b_bad), Some(&k.agency_a), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.request("GET", &image(s.a_ok), Some(&k.agency_a), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.request("GET", &image(s.a_ok), Some(&k.agency_a_all), None).await.0, StatusCode::OK);
    assert_eq!(app.request("GET", &image(s.b_ok), Some(&k.operator), None).await.0, StatusCode::OK);

    // aggregates: per site per hour, scoped like captures (site-b's violation was rejected)
    let stats = "query($from: DateTime!, $to: DateTime!) { occupancyStats(from: $from, to: $to) { \
                 site hour vehicles violations violationRate occupancy { zero one two threePlus unknown } } }";
    let range = json!({ "from": s.at - chrono::Duration::hours(1), "to": s.at + chrono::Duration::hours(1) });
    let got = app.data(Some(&k.admin), stats, range.clone()).await;
    let rows = got["occupancyStats"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{got}");
    assert_eq!(rows[0]["site"], "site-a");
    assert_eq!(rows[0]["hour"], "2025-03-04T08:00:00+00:00");
    assert_eq!(rows[0]["vehicles"], 2);
    assert_eq!(rows[0]["occupancy"], json!({ "zero": 0, "one": 1, "two": 1, "threePlus": 0, "unknown": 0 }));
    assert_eq!(rows[0]["violations"], 1);
    assert_eq!(rows[0]["violationRate"], 0.5);
    assert_eq!(rows[1]["occupancy"]["threePlus"], 1);
    assert_eq!(rows[1]["violations"], 0);
    let got = app.data(Some(&k.agency_a_all), stats, range).await;
    let rows = got["occupancyStats"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["site"], "site-a");

    // administration: admins only, every attempt audited
    let create_agency =
        "mutation { createAgency(name: \"Agency C\", jurisdiction: \"jc\") { id jurisdiction } }";
    for key in [&k.operator, &k.agency_a] {
        assert_eq!(app.error_code(Some(key), create_agency, json!({})).await, "PERMISSION_DENIED");
    }
    let agency_c = app.data(Some(&k.admin), create_agency, json!({})).await["createAgency"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let set_j =
        "mutation { setSiteJurisdiction(site: \"site-b\", jurisdiction: \"jc\") { id jurisdiction } }";
    assert_eq!(app.error_code(Some(&k.operator), set_j, json!({})).await, "PERMISSION_DENIED");
    assert_eq!(app.data(Some(&k.admin), set_j, json!({})).await["setSiteJurisdiction"]["jurisdiction"], "jc");
    let create_key = "mutation($agency: ID) { createApiKey(name: \"c\", role: AGENCY, agencyId: $agency) { secret key { id role } } }";
    assert_eq!(
        app.error_code(Some(&k.operator), create_key, json!({ "agency": agency_c })).await,
        "PERMISSION_DENIED"
    );
    assert_eq!(app.error_code(Some(&k.admin), create_key, json!({})).await, "INVALID_ARGUMENT");
    let created = app.data(Some(&k.admin), create_key, json!({ "agency": agency_c })).await;
    let secret = created["createApiKey"]["secret"].as_str().unwrap().to_owned();
    let new_id = created["createApiKey"]["key"]["id"].as_str().unwrap().to_owned();
    // agency C's new key sees site-b, which moved to its jurisdiction above; agency B lost it
    assert_eq!(site_ids(app.data(Some(&secret), "{ sites { id } }", json!({})).await), ["site-b"]);
    assert!(site_ids(app.data(Some(&k.agency_b), "{ sites { id } }", json!({})).await).is_empty());
    let revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }";
    assert_eq!(app.error_code(Some(&secret), revoke, json!({ "id": new_id })).await, "PERMISSION_DENIED");
    assert!(
        !app.data(Some(&k.admin), revoke, json!({ "id": new_id })).await["revokeApiKey"]["revokedAt"]
            .is_null()
    );
    assert_eq!(app.gql(Some(&secret), "{ me { role } }", json!({})).await.0, StatusCode::UNAUTHORIZED);
    for key in [&k.operator, &k.agency_a] {
        assert_eq!(app.error_code(Some(key), "{ apiKeys { id } }", json!({})).await, "PERMISSION_DENIED");
        assert_eq!(app.error_code(Some(key), "{ agencies { id } }", json!({})).await, "PERMISSION_DENIED");
        assert_eq!(
            app.error_code(Some(key), "{ auditLog { edges { node { id } } } }", json!({})).await,
            "PERMISSION_DENIED"
        );
    }

    // the audit log holds successes and denials, newest first, with who and what
    let audit = app
        .data(
            Some(&k.admin),
            "{ auditLog(first: 100) { edges { node { actor action target result message at } } } }",
            json!({}),
        )
        .await;
    let rows: Vec<&Value> =
        audit["auditLog"]["edges"].as_array().unwrap().iter().map(|e| &e["node"]).collect();
    let agency_a_id = auth::parse_token(&k.agency_a).unwrap().0;
    let denied_review = rows
        .iter()
        .find(|r| r["actor"] == agency_a_id && r["action"] == "reviewViolation")
        .expect("the agency's denied review is audited");
    assert_eq!(denied_review["result"], "ERROR");
    assert_eq!(denied_review["target"], format!("violation/{va}"));
    assert!(denied_review["message"].as_str().unwrap().contains("permission denied"));
    let confirmed_row = rows
        .iter()
        .find(|r| {
            r["actor"] == operator_id
                && r["action"] == "reviewViolation"
                && r["result"] == "OK"
                && r["target"] == format!("violation/{va}")
        })
        .expect("the confirmation is audited");
    assert!(confirmed_row["message"].is_null());
    for action in ["createAgency", "setSiteJurisdiction", "createApiKey", "revokeApiKey"] {
        assert!(rows.iter().any(|r| r["action"] == action && r["result"] == "OK"), "{action} ok");
        assert!(rows.iter().any(|r| r["action"] == action && r["result"] == "ERROR"), "{action} denied");
    }
    let times: Vec<&str> = rows.iter().map(|r| r["at"].as_str().unwrap()).collect();
    let mut newest_first = times.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, newest_first);

    // the database holds hashes, never a secret
    let conn = Database::connect(&app.url).await.unwrap();
    let backend_db = conn.get_database_backend();
    let rows = conn
        .query_all(Statement::from_string(backend_db, "SELECT id, name, role, secret_sha256 FROM api_keys"))
        .await
        .unwrap();
    assert!(rows.len() >= 6);
    let secrets: Vec<&str> = [&k.admin, &k.operator, &k.agency_a, &k.agency_b, &secret]
        .iter()
        .map(|t| auth::parse_token(t).unwrap().1)
        .collect();
    for row in rows {
        let hash: String = row.try_get("", "secret_sha256").unwrap();
        assert_eq!(hash.len(), 64);
        for s in &secrets {
            assert!(!hash.contains(s), "a secret is stored in api_keys");
        }
    }
    let one_secret = auth::parse_token(&k.admin).unwrap();
    let stored: String = conn
        .query_one(Statement::from_sql_and_values(
            backend_db,
            if backend == Backend::Postgres {
                "SELECT secret_sha256 FROM api_keys WHERE id = $1"
            } else {
                "SELECT secret_sha256 FROM api_keys WHERE id = ?"
            },
            [one_secret.0.into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "secret_sha256")
        .unwrap();
    assert_eq!(stored, hex::encode(sha2::Sha256::digest(one_secret.1.as_bytes())));
}

#[tokio::test]
async fn permission_matrix_on_sqlite() {
    permission_matrix(Backend::Sqlite).await;
}

#[tokio::test]
async fn permission_matrix_on_postgres() {
    permission_matrix(Backend::Postgres).await;
}

#[tokio::test]
async fn anonymous_local_access_acts_as_operator() {
    let app = app(Backend::Sqlite, true).await;
    let s = seed(&app).await;
    let me = app.data(NO_KEY, "{ me { role keyId } }", json!({})).await;
    assert_eq!(me["me"], json!({ "role": "OPERATOR", "keyId": null }));
    assert_eq!(ids(&app.data(NO_KEY, CAPTURES, json!({})).await, "captures").len(), 4);
    assert_eq!(app.request("GET", &format!("/images/{}", s.b_ok), NO_KEY, None).await.0, StatusCode::OK);
    let denied = "mutation { createAgency(name: \"x\", jurisdiction: \"y\") { id } }";
    assert_eq!(app.error_code(NO_KEY, denied, json!({})).await, "PERMISSION_DENIED");
    // a key that is sent must still be valid
    assert_eq!(app.gql(Some("lw_00_00"), "{ me { role } }", json!({})).await.0, StatusCode::UNAUTHORIZED);
    let audit =
        app.data(Some(&s.keys.admin), "{ auditLog { edges { node { actor result } } } }", json!({})).await;
    assert_eq!(
        audit["auditLog"]["edges"][0]["node"],
        json!({ "actor": "anonymous-local", "result": "ERROR" })
    );
}

#[tokio::test]
async fn capture_filters_and_pagination() {
    let app = app(Backend::Sqlite, false).await;
    let s = seed(&app).await;
    let blobs = app._dir.path().join("blobs");
    let base = Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap();
    let mut expected_lane1 = Vec::new();
    for i in 0..12u32 {
        let occupants = if i % 4 == 3 { None } else { Some(i % 4) };
        let class = if i % 2 == 0 { VehicleClass::Car } else { VehicleClass::Bus };
        let lane = i % 2;
        // pairs share a timestamp so that the id breaks ties
        let at = base + chrono::Duration::minutes(i64::from(i / 2));
        let id = store(&app, &blobs, meta("site-a", lane, occupants, class, at)).await;
        if lane == 1 {
            expected_lane1.push((at, id));
        }
    }
    expected_lane1.sort_by(|a, b| b.cmp(a));
    let expected: Vec<String> = expected_lane1.iter().map(|(_, id)| id.to_string()).collect();
    let page = "query($after: String) { captures(first: 2, after: $after, site: \"site-a\", lane: 1, \
                from: \"2025-05-01T00:00:00Z\", to: \"2025-05-02T00:00:00Z\") { \
                edges { node { id lane } } pageInfo { hasNextPage endCursor } } }";
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let got = app.data(Some(&s.keys.operator), page, json!({ "after": after })).await;
        for e in got["captures"]["edges"].as_array().unwrap() {
            assert_eq!(e["node"]["lane"], 1);
            seen.push(e["node"]["id"].as_str().unwrap().to_owned());
        }
        if got["captures"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = got["captures"]["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, expected, "lane 1, newest first, no gaps");

    let count = |filter: &'static str| {
        let app = &app;
        let key = s.keys.operator.clone();
        async move {
            let q = format!(
                "{{ captures(first: 100, from: \"2025-05-01T00:00:00Z\", {filter}) {{ edges {{ node {{ id }} }} }} }}"
            );
            app.data(Some(&key), &q, json!({})).await["captures"]["edges"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("minOccupants: 2").await, 3);
    assert_eq!(count("maxOccupants: 1").await, 6);
    assert_eq!(count("minOccupants: 1, maxOccupants: 1").await, 3);
    assert_eq!(count("vehicleClass: BUS").await, 6);
    assert_eq!(count("decision: UNREADABLE").await, 3);
    assert_eq!(count("decision: VIOLATION_CANDIDATE").await, 3, "lane 0 has a policy: 0 and 1 occupant cars");
    assert_eq!(count("decision: UNKNOWN").await, 3, "lane 1 has no policy");
    assert_eq!(count("to: \"2025-05-01T00:01:00Z\"").await, 2, "to is exclusive");
    assert_eq!(count("site: \"site-b\"").await, 0);
    let bad = app
        .error_code(Some(&s.keys.operator), "{ captures(first: 0) { edges { node { id } } } }", json!({}))
        .await;
    assert_eq!(bad, "INVALID_ARGUMENT");

    // violations filter by state and site, paginated
    let v = "query($after: String) { violations(first: 1, after: $after, state: PENDING, site: \"site-a\") { \
             edges { node { id site state } } pageInfo { hasNextPage endCursor } } }";
    let mut n = 0;
    let mut after = Value::Null;
    loop {
        let got = app.data(Some(&s.keys.admin), v, json!({ "after": after })).await;
        for e in got["violations"]["edges"].as_array().unwrap() {
            assert_eq!(e["node"]["site"], "site-a");
            assert_eq!(e["node"]["state"], "PENDING");
            n += 1;
        }
        if got["violations"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = got["violations"]["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(n, 4, "the seeded one and three new 0/1-occupant cars in lane 0");
}

#[tokio::test]
async fn query_depth_stays_limited() {
    let app = app(Backend::Sqlite, false).await;
    let s = seed(&app).await;
    let deep = "{ violations { edges { node { capture { violation { capture { violation { capture { violation { capture { violation { capture { id } } } } } } } } } } } } }";
    let (_, body) = app.gql(Some(&s.keys.admin), deep, json!({})).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("nested too deep"), "{body}");
}

/// The bootstrap command: prints a working secret once, and refuses bad input clearly.
#[tokio::test]
async fn create_api_key_command() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}/cli.sqlite?mode=rwc", dir.path().display());
    let config = dir.path().join("control.toml");
    std::fs::write(&config, format!("version = 1\n[database]\nurl = \"{db_url}\"\n")).unwrap();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_lanewatch-control"))
            .arg("create-api-key")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&["--name", "bootstrap", "--role", "admin"]);
    assert_eq!(code, Some(0), "{stderr}");
    let token = stdout.trim().to_owned();
    assert!(auth::parse_token(&token).is_some(), "{stdout}");
    assert!(stderr.contains("shown only once"), "{stderr}");

    let (code, _, stderr) = run(&["--name", "x", "--role", "agency"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("an agency key needs an agency id"), "{stderr}");
    let (code, _, stderr) = run(&["--name", "x", "--role", "agency", "--agency", "nope"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no agency with id \"nope\""), "{stderr}");
    let (code, _, stderr) = run(&["--name", "x", "--role", "superuser"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("superuser"), "{stderr}");

    // the printed secret authenticates against the same database; the file never holds it
    let db = Db::connect(&db_url).await.unwrap();
    let who = auth::authenticate(&db, Some(&format!("Bearer {token}")), false).await.unwrap();
    assert_eq!(who.role, Role::Admin);
    let secret = auth::parse_token(&token).unwrap().1.to_owned();
    let raw = std::fs::read(dir.path().join("cli.sqlite")).unwrap();
    let wal = std::fs::read(dir.path().join("cli.sqlite-wal")).unwrap_or_default();
    let contains = |hay: &[u8]| hay.windows(secret.len()).any(|w| w == secret.as_bytes());
    assert!(!contains(&raw) && !contains(&wal), "the secret is in the database file");
}

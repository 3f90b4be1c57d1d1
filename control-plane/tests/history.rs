//! Component history on SQLite and on PostgreSQL (a fresh database per test at 127.0.0.1:5432;
//! unreachable is a failure): rollups summarize each period once and only once it settled,
//! retention deletes in bounded batches and never a raw sample before its period was rolled up,
//! reads give raw samples within the raw retention and rollups before it, `fleetComponents`'
//! newest samples and filters, one replica at a time under the advisory lock, and the GraphQL
//! queries' roles and input checks. Every time is explicit: nothing waits for the clock.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use lanewatch_control_plane::auth::Principal;
use lanewatch_control_plane::blob::BlobStore;
use lanewatch_control_plane::config::{BlobConfig, HistoryConfig, ImageLinksConfig, Limits};
use lanewatch_control_plane::db::Db;
use lanewatch_control_plane::db::history::{HISTORY_LOCK_KEY, RollupStep};
use lanewatch_control_plane::domain::{
    AgentHello, ComponentSample, ComponentStatus, FleetComponentFilter, NameMatch, Resolution, Role,
    StatusMatch,
};
use lanewatch_control_plane::gateway::Gateway;
use lanewatch_control_plane::graphql::{self, ApiContext};
use lanewatch_control_plane::links::ImageLinks;
use lanewatch_control_plane::metrics::Metrics;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

mod support;
use support::{Backend, PgDatabase};

use ComponentStatus::{BackingOff, Failed, Running};

/// A fresh database of `backend` with `history`; the guards keep it.
struct Store {
    db: Db,
    url: String,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

async fn store(backend: Backend, history: HistoryConfig) -> Store {
    let dir = tempfile::tempdir().unwrap();
    let (pg, url) = match backend {
        Backend::Sqlite => (None, format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display())),
        Backend::Postgres => {
            let (pg, url) = PgDatabase::create().await;
            (Some(pg), url)
        }
    };
    let db = Db::connect(&url).await.unwrap().with_history(history);
    Store { db, url, _dir: dir, _pg: pg }
}

/// A minute boundary, the start of every test's timeline.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

fn sample(
    agent: &str,
    component: &str,
    at: DateTime<Utc>,
    status: ComponentStatus,
    restarts: u32,
    processed: u64,
) -> ComponentSample {
    ComponentSample {
        agent_id: Arc::from(agent),
        component: component.to_owned(),
        at,
        status,
        restarts,
        processed,
        inbox_depth: (component != "sense").then_some(u32::try_from(processed % 7).unwrap()),
    }
}

/// Three minutes of a camera, a heartbeat every 5 s: minute 0 runs; in minute 1 it stalls
/// twice (backing off, failed, running again: 2 restarts); in minute 2 the agent restarts (its
/// counts start over) and the camera restarts once more.
fn camera_timeline(agent: &str) -> Vec<ComponentSample> {
    let mut out = Vec::new();
    for i in 0..36u32 {
        let secs = i64::from(i) * 5;
        let (status, restarts) = match secs {
            65 => (BackingOff, 1),
            70 => (Failed, 1),
            90 => (BackingOff, 2),
            66..=119 => (Running, if secs < 90 { 1 } else { 2 }),
            150 => (Running, 0),
            155 => (BackingOff, 1),
            156..=179 => (Running, 1),
            120..=149 => (Running, 2),
            _ => (Running, 0),
        };
        let processed = if secs >= 150 { u64::from(i - 29) } else { u64::from(i) * 10 };
        out.push(sample(agent, "acquire-front", at(secs), status, restarts, processed));
    }
    out
}

async fn backends() -> [Backend; 2] {
    [Backend::Sqlite, Backend::Postgres]
}

#[tokio::test]
async fn rollups_summarize_each_settled_period_once() {
    for backend in backends().await {
        let s = store(backend, HistoryConfig::default()).await;
        s.db.insert_component_samples(&camera_timeline("agent-a")).await.unwrap();
        let source: Vec<_> = (0..36).map(|i| sample("agent-b", "sense", at(i * 5), Running, 0, 0)).collect();
        s.db.insert_component_samples(&source).await.unwrap();
        // the raw view of the same three minutes, for comparison
        let raw = s.db.component_history("agent-a", "acquire-front", at(0), at(180), at(600)).await.unwrap();
        assert!(raw.points.iter().all(|p| p.resolution == Resolution::Raw), "{backend:?}");
        assert_eq!(raw.points.len(), 36, "{backend:?}");

        // minute 0 ended at 60 s; it is rolled only once it settled (60 s later)
        assert_eq!(s.db.roll_up_history(at(119)).await.unwrap(), RollupStep::UpToDate, "{backend:?}");
        let now = at(600);
        for minute in 0..3 {
            let step = s.db.roll_up_history(now).await.unwrap();
            assert_eq!(step, RollupStep::Rolled { bucket: at(minute * 60), rows: 2 }, "{backend:?}");
        }
        assert_eq!(s.db.roll_up_history(now).await.unwrap(), RollupStep::UpToDate, "{backend:?}");
        assert_eq!(
            s.db.roll_up_history(now).await.unwrap(),
            RollupStep::UpToDate,
            "rolled once: {backend:?}"
        );

        // read far enough later that all of it is past the raw retention: rollups only
        let later = at(600) + Duration::days(2);
        let h = s.db.component_history("agent-a", "acquire-front", at(0), at(180), later).await.unwrap();
        let points: Vec<_> = h.points.iter().map(|p| p.resolution).collect();
        assert_eq!(points, [Resolution::Rollup; 3], "{backend:?}");
        let [m0, m1, m2] = [&h.points[0], &h.points[1], &h.points[2]];
        assert_eq!(
            (m0.samples, m0.status, m0.not_running, m0.left_running),
            (12, Running, 0, 0),
            "{backend:?}"
        );
        assert_eq!((m0.processed, m0.inbox_depth, m0.period_secs), (110, Some(6), 60), "{backend:?}");
        assert_eq!((m1.samples, m1.status, m1.restarts), (12, Failed, 2), "{backend:?}");
        assert_eq!((m1.not_running, m1.left_running, m1.restarts_added), (3, 2, 2), "{backend:?}");
        assert_eq!(m1.processed, 230, "processed at the end of the minute: {backend:?}");
        assert_eq!((m2.restarts_added, m2.left_running, m2.processed), (1, 1, 6), "{backend:?}");
        // the rollups add up to what the raw samples do
        assert_eq!(h.summary.samples, raw.summary.samples, "{backend:?}");
        assert_eq!(h.summary.left_running, raw.summary.left_running, "{backend:?}");
        assert_eq!(h.summary.restarts, raw.summary.restarts, "{backend:?}");
        assert_eq!(h.summary.not_running, raw.summary.not_running, "{backend:?}");
        assert_eq!((raw.summary.left_running, raw.summary.restarts), (3, 3), "{backend:?}");
        let source = s.db.component_history("agent-b", "sense", at(0), at(180), later).await.unwrap();
        assert!(source.points.iter().all(|p| p.inbox_depth.is_none()), "a source has no inbox: {backend:?}");
    }
}

#[tokio::test]
async fn retention_deletes_in_batches_and_never_a_sample_not_rolled_up() {
    for backend in backends().await {
        let config = HistoryConfig { batch_rows: 100, ..HistoryConfig::default() };
        let s = store(backend, config).await;
        let mut samples = Vec::new();
        for beat in 0..10 {
            for c in 0..25 {
                samples.push(sample("agent-a", &format!("c{c:02}"), at(beat * 5), Running, 0, 1));
            }
        }
        samples.extend((0..10).map(|i| sample("agent-a", "late", at(60 + i), Running, 0, 1)));
        s.db.insert_component_samples(&samples).await.unwrap();

        // two days later nothing was rolled up yet: the raw samples stay
        let now = at(0) + Duration::days(2);
        let pruned = s.db.prune_history(now).await.unwrap();
        assert_eq!((pruned.samples, pruned.rollups), (0, 0), "{backend:?}");
        assert_eq!(pruned.latest, 26, "latest rows of silent components go: {backend:?}");

        assert!(matches!(s.db.roll_up_history(now).await.unwrap(), RollupStep::Rolled { rows: 25, .. }));
        assert!(matches!(s.db.roll_up_history(now).await.unwrap(), RollupStep::Rolled { rows: 1, .. }));
        assert_eq!(s.db.roll_up_history(now).await.unwrap(), RollupStep::UpToDate, "{backend:?}");
        let deleted: Vec<u64> = {
            let mut out = Vec::new();
            loop {
                let p = s.db.prune_history(now).await.unwrap();
                out.push(p.samples);
                if p.samples == 0 {
                    break out;
                }
            }
        };
        assert_eq!(deleted, [100, 100, 60, 0], "bounded batches: {backend:?}");
        let h = s.db.component_history("agent-a", "c07", at(0), at(120), now).await.unwrap();
        assert_eq!(h.points.len(), 1, "the rollup is what is left: {backend:?}");
        assert_eq!((h.points[0].resolution, h.points[0].samples), (Resolution::Rollup, 10), "{backend:?}");

        // a month later the rollups go too, as one maintenance pass
        let done = s.db.maintain_history(at(0) + Duration::days(31), || false).await.unwrap();
        assert_eq!((done.periods, done.deleted), (0, 26), "{backend:?}");
        let h = s.db.component_history("agent-a", "c07", at(0), at(120), now).await.unwrap();
        assert!(h.points.is_empty(), "{backend:?}");
    }
}

#[tokio::test]
async fn reads_are_raw_within_the_retention_and_rollups_before() {
    for backend in backends().await {
        let config = HistoryConfig { raw_retention_secs: 3600, ..HistoryConfig::default() };
        let s = store(backend, config).await;
        // three hours, a sample a minute (the agent beat slowly), one stall in each hour
        let samples: Vec<_> = (0..180)
            .map(|m| {
                let status = if m % 60 == 30 { BackingOff } else { Running };
                sample("agent-a", "trigger", at(m * 60 + 1), status, u32::try_from(m / 60).unwrap(), 5)
            })
            .collect();
        s.db.insert_component_samples(&samples).await.unwrap();
        let now = at(3 * 3600);
        let done = s.db.maintain_history(now, || false).await.unwrap();
        assert_eq!(done.periods, 179, "the last minute has not settled: {backend:?}");
        assert!(done.deleted >= 100, "the raw samples past the hour went: {backend:?}");

        let h = s.db.component_history("agent-a", "trigger", at(0), now, now).await.unwrap();
        assert_eq!(h.raw_since, at(2 * 3600), "{backend:?}");
        let rollups = h.points.iter().take_while(|p| p.resolution == Resolution::Rollup).count();
        assert_eq!((rollups, h.points.len()), (120, 180), "{backend:?}");
        assert!(h.points[120..].iter().all(|p| p.resolution == Resolution::Raw && p.at > h.raw_since));
        assert_eq!(h.summary.samples, 180, "{backend:?}");
        assert_eq!((h.summary.left_running, h.summary.restarts), (3, 2), "{backend:?}");
        assert_eq!((h.summary.worst, h.summary.last), (Some(BackingOff), Some(Running)), "{backend:?}");
        // a range within the raw retention alone
        let recent =
            s.db.component_history("agent-a", "trigger", now - Duration::minutes(10), now, now).await;
        assert!(recent.unwrap().points.iter().all(|p| p.resolution == Resolution::Raw));
    }
}

async fn hello(db: &Db, agent: &str, site: &str) {
    let hello = AgentHello {
        agent_id: agent.into(),
        site_id: site.into(),
        software_version: "0.1.0".into(),
        config_version: 1,
        wants_heartbeat_acks: false,
        local_config: String::new(),
    };
    db.upsert_agent(&hello, t0()).await.unwrap();
}

#[tokio::test]
async fn fleet_components_answer_from_each_newest_sample() {
    for backend in backends().await {
        let s = store(backend, HistoryConfig::default()).await;
        hello(&s.db, "agent-a", "north-1").await;
        hello(&s.db, "agent-b", "south-1").await;
        s.db.insert_component_samples(&camera_timeline("agent-a")).await.unwrap();
        let b = [
            sample("agent-b", "acquire-front", at(0), Running, 0, 1),
            sample("agent-b", "acquire-front", at(5), Failed, 4, 1),
            sample("agent-b", "acquire-rear", at(5), Running, 0, 1),
            sample("agent-b", "uplink", at(5), Running, 0, 1),
        ];
        s.db.insert_component_samples(&b).await.unwrap();
        // an older sample written late does not replace the newest
        s.db.insert_component_samples(&[sample("agent-b", "uplink", at(1), Failed, 0, 1)]).await.unwrap();
        let now = at(600);
        let find = |filter: FleetComponentFilter| {
            let db = s.db.clone();
            async move {
                let rows = db.fleet_components(&filter, now, 100).await.unwrap();
                rows.into_iter()
                    .map(|r| format!("{}/{}:{}", r.agent_id, r.component, r.status.as_str()))
                    .collect::<Vec<_>>()
            }
        };
        let all = find(FleetComponentFilter::default()).await;
        assert_eq!(
            all,
            [
                "agent-a/acquire-front:running",
                "agent-b/acquire-front:failed",
                "agent-b/acquire-rear:running",
                "agent-b/uplink:running"
            ],
            "{backend:?}"
        );
        let stalled = find(FleetComponentFilter {
            name: Some(NameMatch::parse("acquire-*")),
            status: Some(StatusMatch::NotRunning),
            ..Default::default()
        });
        assert_eq!(stalled.await, ["agent-b/acquire-front:failed"], "{backend:?}");
        let site = find(FleetComponentFilter { site_id: Some("north-1".into()), ..Default::default() });
        assert_eq!(site.await, ["agent-a/acquire-front:running"], "{backend:?}");
        let exact =
            find(FleetComponentFilter { name: Some(NameMatch::parse("uplink")), ..Default::default() });
        assert_eq!(exact.await, ["agent-b/uplink:running"], "{backend:?}");
        // agent-a's camera last restarted at 155 s (after the agent restarted), agent-b's at 5 s
        let restarted =
            |since: i64| FleetComponentFilter { restarted_since: Some(at(since)), ..Default::default() };
        assert_eq!(find(restarted(100)).await, ["agent-a/acquire-front:running"], "{backend:?}");
        assert_eq!(find(restarted(5)).await.len(), 2, "{backend:?}");
        let latest = s.db.fleet_components(&restarted(100), now, 10).await.unwrap();
        assert_eq!((latest[0].last_restart_at, latest[0].site_id.as_str()), (Some(at(155)), "north-1"));
        assert_eq!(s.db.fleet_components(&FleetComponentFilter::default(), now, 2).await.unwrap().len(), 2);
        // a day later the samples are past the raw retention
        let everything = FleetComponentFilter::default();
        let gone = s.db.fleet_components(&everything, now + Duration::days(1), 10).await.unwrap();
        assert!(gone.is_empty(), "{backend:?}");
    }
}

#[tokio::test]
async fn one_replica_at_a_time_maintains_history_on_postgres() {
    let s = store(Backend::Postgres, HistoryConfig::default()).await;
    let replica = Db::connect(&s.url).await.unwrap();
    s.db.insert_component_samples(&camera_timeline("agent-a")).await.unwrap();
    // another replica in the middle of a step holds the lock (on one connection: a session lock)
    let mut one = sea_orm::ConnectOptions::new(s.url.clone());
    one.max_connections(1).min_connections(1);
    let other = Database::connect(one).await.unwrap();
    other.execute_unprepared(&format!("SELECT pg_advisory_lock({HISTORY_LOCK_KEY})")).await.unwrap();
    let now = at(600);
    assert_eq!(s.db.roll_up_history(now).await.unwrap(), RollupStep::Busy);
    assert!(replica.prune_history(now).await.unwrap().busy);
    other.execute_unprepared(&format!("SELECT pg_advisory_unlock({HISTORY_LOCK_KEY})")).await.unwrap();
    // the two replicas take turns; each period is rolled once
    let mut rolled = Vec::new();
    for db in [&s.db, &replica, &s.db, &replica] {
        if let RollupStep::Rolled { bucket, .. } = db.roll_up_history(now).await.unwrap() {
            rolled.push(bucket);
        }
    }
    assert_eq!(rolled, [at(0), at(60), at(120)]);
}

// ---- GraphQL ----

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

async fn run(schema: &graphql::LanewatchSchema, who: Role, query: &str, vars: Value) -> Value {
    let request = async_graphql::Request::new(query)
        .variables(async_graphql::Variables::from_json(vars))
        .data(principal(who));
    serde_json::to_value(schema.execute(request).await).unwrap()
}

fn error_code(answer: &Value) -> (&str, &str) {
    let e = &answer["errors"][0];
    (e["extensions"]["code"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""))
}

const HISTORY: &str = "query($a: ID!, $c: String!, $from: DateTime!, $to: DateTime!) {
  componentHistory(agentId: $a, component: $c, from: $from, to: $to) {
    agentId component rawSince points { at resolution periodSecs status restarts processed inboxDepth }
    summary { samples notRunning leftRunning restarts worstStatus lastStatus } } }";

const FLEET: &str = "query($f: FleetComponentFilter, $first: Int! = 1000) {
  fleetComponents(filter: $f, first: $first) { agentId site agentOnline component status restarts lastRestartAt } }";

#[tokio::test]
async fn history_queries_are_for_operators_and_admins_and_check_their_input() {
    let s = store(Backend::Sqlite, HistoryConfig::default()).await;
    let blobs = BlobStore::open(&BlobConfig::Local { dir: s._dir.path().join("blobs") }).await.unwrap();
    let (_shutdown, rx) = tokio::sync::watch::channel(false);
    let gateway = Gateway::new(s.db.clone(), blobs.clone(), Limits::default(), Metrics::new(), rx);
    let links = ImageLinks::new(
        "http://cp.test".into(),
        &ImageLinksConfig { ttl_secs: 300, signing_key: Some(vec![7; 32]) },
        blobs.clone(),
    );
    let schema = graphql::schema(ApiContext { db: s.db.clone(), gateway, blobs, links });
    hello(&s.db, "agent-a", "north-1").await;
    // the resolvers read at the real now: a timeline that ended a minute ago
    let start = Utc::now() - Duration::minutes(4);
    let shifted: Vec<_> = camera_timeline("agent-a")
        .into_iter()
        .map(|mut x| {
            x.at = start + (x.at - t0());
            x
        })
        .collect();
    s.db.insert_component_samples(&shifted).await.unwrap();
    let range = |from: DateTime<Utc>, to: DateTime<Utc>| json!({ "a": "agent-a", "c": "acquire-front", "from": from.to_rfc3339(), "to": to.to_rfc3339() });
    let now = Utc::now();

    for role in [Role::Operator, Role::Admin] {
        let answer = run(&schema, role, HISTORY, range(now - Duration::hours(1), now)).await;
        let h = &answer["data"]["componentHistory"];
        assert_eq!(h["points"].as_array().map(Vec::len), Some(36), "{answer}");
        assert_eq!(h["points"][0]["resolution"], "RAW", "{answer}");
        assert_eq!(h["points"][14]["status"], "FAILED", "{answer}");
        assert_eq!(h["summary"]["leftRunning"], 3, "{answer}");
        assert_eq!(h["summary"]["restarts"], 3, "{answer}");
        assert_eq!(h["summary"]["worstStatus"], "FAILED", "{answer}");
        let fleet = run(&schema, role, FLEET, json!({ "f": { "name": "acquire-*" } })).await;
        let rows = &fleet["data"]["fleetComponents"];
        assert_eq!(rows[0]["component"], "acquire-front", "{fleet}");
        assert_eq!(
            (&rows[0]["site"], &rows[0]["agentOnline"]),
            (&json!("north-1"), &json!(false)),
            "{fleet}"
        );
    }
    for query in [HISTORY, FLEET] {
        let answer = run(&schema, Role::Agency, query, range(now - Duration::hours(1), now)).await;
        let (code, message) = error_code(&answer);
        assert_eq!(code, "PERMISSION_DENIED", "{answer}");
        assert!(message.contains("role agency"), "{answer}");
    }

    let invalid = [
        (range(now, now - Duration::hours(1)), "is after to"),
        (range(now - Duration::days(40), now), "longer than 31 days"),
        (
            json!({ "a": "agent-a", "c": " ", "from": now.to_rfc3339(), "to": now.to_rfc3339() }),
            "component must not be empty",
        ),
    ];
    for (vars, expected) in invalid {
        let answer = run(&schema, Role::Operator, HISTORY, vars).await;
        assert_eq!(error_code(&answer).0, "INVALID_ARGUMENT", "{answer}");
        assert!(error_code(&answer).1.contains(expected), "{expected}: {answer}");
    }
    let unknown =
        json!({ "a": "agent-nobody", "c": "uplink", "from": now.to_rfc3339(), "to": now.to_rfc3339() });
    let answer = run(&schema, Role::Operator, HISTORY, unknown).await;
    assert_eq!(error_code(&answer), ("NOT_FOUND", "no agent with id \"agent-nobody\""), "{answer}");
    for (vars, expected) in [
        (
            json!({ "f": { "status": "stalled" } }),
            "filter.status: unknown status \"stalled\"; one of RUNNING",
        ),
        (json!({ "f": { "name": "*" } }), "filter.name must name a component"),
        (json!({ "first": 0 }), "first must be between 1 and 10000"),
    ] {
        let answer = run(&schema, Role::Operator, FLEET, vars).await;
        assert_eq!(error_code(&answer).0, "INVALID_ARGUMENT", "{answer}");
        assert!(error_code(&answer).1.contains(expected), "{expected}: {answer}");
    }
    let answer = run(&schema, Role::Operator, FLEET, json!({ "f": { "status": "not_running" } })).await;
    assert_eq!(answer["data"]["fleetComponents"], json!([]), "its camera runs again: {answer}");
}

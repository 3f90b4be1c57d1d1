//! The durable job queue and legal retention, on SQLite and on PostgreSQL (a fresh database per
//! test at 127.0.0.1:5432): claims in priority order and only when due, unique keys, attempts
//! with their errors and discard after the last, cancel / retry / delete, the global limit
//! across replicas, rescue of a stopped replica's job (run once more, then never again), cron
//! slots inserted once by any number of replicas, pruning, the running queue with pause and
//! resume, and the retention sweep deleting exactly what is due with its records. Times are
//! explicit where the statements take them; the runtime tests wait on outcomes, bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use lanewatch_control_plane::auth::Principal;
use lanewatch_control_plane::blob::BlobStore;
use lanewatch_control_plane::config::{
    BlobConfig, ImageLinksConfig, JobsConfig, Limits, QueueLimits, RetentionConfig, RetentionDays,
};
use lanewatch_control_plane::db::Db;
use lanewatch_control_plane::domain::{
    self, AgentHello, Capture, CaptureMeta, Decision, ImageContentType, Job, JobAction, JobFilter, JobState,
    NewJob, OccupancyStatus, QueueSettings, ReviewDecision, Role, VehicleClass, Visibility,
};
use lanewatch_control_plane::gateway::Gateway;
use lanewatch_control_plane::graphql::{self, ApiContext};
use lanewatch_control_plane::jobs::retention::RetentionSweep;
use lanewatch_control_plane::jobs::{Cron, JobError, JobsRuntime, Worker, insert_cron_slots};
use lanewatch_control_plane::links::ImageLinks;
use lanewatch_control_plane::metrics::Metrics;
use serde_json::json;
use uuid::Uuid;

#[macro_use]
mod support;
use support::{Backend, PgDatabase};

struct Store {
    db: Db,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

async fn store(backend: Backend) -> Store {
    let dir = tempfile::tempdir().unwrap();
    let (pg, url) = match backend {
        Backend::Sqlite => (None, format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display())),
        Backend::Postgres => {
            let (pg, url) = PgDatabase::create().await;
            (Some(pg), url)
        }
    };
    Store { db: Db::connect(&url).await.unwrap(), _dir: dir, _pg: pg }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn job(queue: &str, n: u32) -> NewJob {
    NewJob::new(queue, "test.work", json!({ "n": n }))
}

both!(
    claims_due_jobs_in_priority_order_once_and_keeps_unique_keys_unique,
    failed_attempts_keep_their_errors_and_the_last_one_discards,
    operators_cancel_retry_and_delete,
    the_global_limit_holds_across_replicas,
    a_stopped_replicas_job_is_rescued_and_runs_once_more,
    cron_slots_are_inserted_once_and_finished_jobs_are_pruned,
    the_running_queue_works_pauses_and_resumes,
    retention_deletes_exactly_what_is_due_and_records_it,
);

async fn claims_due_jobs_in_priority_order_once_and_keeps_unique_keys_unique(backend: Backend) {
    let s = store(backend).await;
    let db = &s.db;
    let mut low = job("q", 1);
    low.priority = 5;
    let high = job("q", 2);
    let mut later = job("q", 3);
    later.scheduled_at = Some(at(60));
    let other = job("other", 4);
    let ids = db.insert_jobs(&[low, high, later, other], at(0)).await.unwrap();
    assert!(ids.iter().all(Option::is_some), "{ids:?}");
    // a unique key: the second insert in the same period is a no-op
    let unique = job("q", 5).unique_for(300, at(0));
    assert!(db.insert_jobs(std::slice::from_ref(&unique), at(0)).await.unwrap()[0].is_some());
    assert_eq!(db.insert_jobs(std::slice::from_ref(&unique), at(10)).await.unwrap(), [None]);
    assert!(db.insert_jobs(&[job("q", 5).unique_for(300, at(301))], at(301)).await.unwrap()[0].is_some());

    let claimed = db.claim_jobs("q", "r1", 10, None, at(1)).await.unwrap();
    let order: Vec<(i64, i16)> =
        claimed.iter().map(|j| (j.args["n"].as_i64().unwrap(), j.priority)).collect();
    assert_eq!(order, [(2, 0), (5, 0), (1, 5)], "priority first, then oldest; not the scheduled one");
    assert!(claimed.iter().all(|j| j.state == JobState::Executing && j.attempt == 1));
    assert!(claimed.iter().all(|j| j.attempted_by.as_deref() == Some("r1")));
    assert!(db.claim_jobs("q", "r2", 10, None, at(1)).await.unwrap().is_empty(), "claimed once");
    let due = db.claim_jobs("q", "r2", 10, None, at(60)).await.unwrap();
    assert_eq!(due.len(), 1, "the scheduled job once due (and the one unique in its next period is not yet)");
    assert_eq!(due[0].args["n"], 3);

    assert!(db.complete_job(claimed[0].id, 1, at(2)).await.unwrap());
    assert!(!db.complete_job(claimed[0].id, 1, at(3)).await.unwrap(), "finished once");
    let done = db.job(claimed[0].id).await.unwrap().unwrap();
    assert_eq!((done.state, done.finished_at), (JobState::Completed, Some(at(2))));
    let counts = db.job_counts().await.unwrap();
    assert!(counts.contains(&("q".to_owned(), JobState::Completed, 1)), "{counts:?}");
    assert!(counts.contains(&("other".to_owned(), JobState::Available, 1)), "{counts:?}");
}

async fn failed_attempts_keep_their_errors_and_the_last_one_discards(backend: Backend) {
    let s = store(backend).await;
    let db = &s.db;
    let mut j = job("q", 1);
    j.max_attempts = 2;
    let id = db.insert_jobs(&[j], at(0)).await.unwrap()[0].unwrap();
    let first = db.claim_jobs("q", "r1", 1, None, at(0)).await.unwrap();
    assert!(db.fail_job(id, first[0].attempt, "receiver said 503", Some(at(30)), at(1)).await.unwrap());
    let retryable = db.job(id).await.unwrap().unwrap();
    assert_eq!((retryable.state, retryable.scheduled_at), (JobState::Retryable, at(30)));
    assert!(db.claim_jobs("q", "r1", 1, None, at(29)).await.unwrap().is_empty(), "not before its backoff");
    let second = db.claim_jobs("q", "r1", 1, None, at(30)).await.unwrap();
    assert_eq!(second[0].attempt, 2);
    // a late result of the first attempt changes nothing
    assert!(!db.complete_job(id, 1, at(31)).await.unwrap());
    assert!(db.fail_job(id, 2, "timed out after 30 s", None, at(32)).await.unwrap());
    let discarded = db.job(id).await.unwrap().unwrap();
    assert_eq!(discarded.state, JobState::Discarded);
    let errors: Vec<(u32, &str)> = discarded.errors.iter().map(|e| (e.attempt, e.error.as_str())).collect();
    assert_eq!(errors, [(1, "receiver said 503"), (2, "timed out after 30 s")]);
    assert_eq!(discarded.errors[0].at, at(1));
}

async fn operators_cancel_retry_and_delete(backend: Backend) {
    let s = store(backend).await;
    let db = &s.db;
    let ids: Vec<i64> = db
        .insert_jobs(&[job("q", 1), job("q", 2), job("q", 3)], at(0))
        .await
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let running = db.claim_jobs("q", "r1", 1, None, at(0)).await.unwrap();
    assert_eq!(running[0].id, ids[0]);
    // cancel: a waiting one and the running one (whose result is then ignored)
    assert_eq!(db.act_on_jobs(JobAction::Cancel, &[ids[0], ids[1]], at(1)).await.unwrap(), 2);
    assert!(!db.complete_job(ids[0], 1, at(2)).await.unwrap());
    assert_eq!(db.job(ids[0]).await.unwrap().unwrap().state, JobState::Cancelled);
    // retry a cancelled one: available now, with an attempt allowed
    assert_eq!(db.act_on_jobs(JobAction::Retry, &[ids[1]], at(3)).await.unwrap(), 1);
    let retried = db.job(ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (retried.state, retried.scheduled_at, retried.finished_at),
        (JobState::Available, at(3), None)
    );
    // delete: not an executing one (the oldest due, ids[2], is claimed now)
    let busy = db.claim_jobs("q", "r1", 1, None, at(3)).await.unwrap();
    assert_eq!(busy[0].id, ids[2]);
    assert_eq!(db.act_on_jobs(JobAction::Delete, &[busy[0].id, ids[1]], at(4)).await.unwrap(), 1);
    assert!(db.job(busy[0].id).await.unwrap().is_some(), "an executing job is not deleted");
    // the list: filters and exact counts
    let all = JobFilter::default();
    assert_eq!(db.jobs_count(&all).await.unwrap(), 2);
    let cancelled = JobFilter { state: Some(JobState::Cancelled), ..Default::default() };
    assert_eq!(db.jobs_count(&cancelled).await.unwrap(), 1);
    let by_args = JobFilter { args_contains: Some("\"n\":3".into()), ..Default::default() };
    let page = db.jobs_page(&by_args, None, 10).await.unwrap();
    assert_eq!(page.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[2]]);
    let page = db.jobs_page(&all, None, 1).await.unwrap();
    let next = db.jobs_page(&all, Some(page[0].id), 10).await.unwrap();
    assert_eq!(page.len() + next.len(), 2);
    assert!(page[0].id > next[0].id, "newest first");
    let wild = JobFilter { args_contains: Some("%".into()), ..Default::default() };
    assert_eq!(db.jobs_count(&wild).await.unwrap(), 0, "% is matched literally");
}

async fn the_global_limit_holds_across_replicas(backend: Backend) {
    let s = store(backend).await;
    let db = &s.db;
    let jobs: Vec<NewJob> = (0..6).map(|n| job("g", n)).collect();
    db.insert_jobs(&jobs, at(0)).await.unwrap();
    let (a, b) = tokio::join!(
        db.claim_jobs("g", "r1", 3, Some(4), at(0)),
        db.claim_jobs("g", "r2", 3, Some(4), at(0))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 4, "{} + {}", a.len(), b.len());
    assert!(db.claim_jobs("g", "r3", 3, Some(4), at(0)).await.unwrap().is_empty());
    db.complete_job(a[0].id, 1, at(1)).await.unwrap();
    assert_eq!(db.claim_jobs("g", "r3", 3, Some(4), at(1)).await.unwrap().len(), 1, "one slot freed");
}

async fn a_stopped_replicas_job_is_rescued_and_runs_once_more(backend: Backend) {
    let s = store(backend).await;
    let db = &s.db;
    db.beat_job_replica("dead", at(0)).await.unwrap();
    db.beat_job_replica("alive", at(0)).await.unwrap();
    let ids: Vec<i64> =
        db.insert_jobs(&[job("q", 1), job("q", 2)], at(0)).await.unwrap().into_iter().flatten().collect();
    db.claim_jobs("q", "dead", 1, None, at(0)).await.unwrap();
    db.claim_jobs("q", "alive", 1, None, at(0)).await.unwrap();
    db.beat_job_replica("alive", at(100)).await.unwrap();
    assert_eq!(db.rescue_orphaned_jobs(at(60), at(100)).await.unwrap(), 1);
    let rescued = db.job(ids[0]).await.unwrap().unwrap();
    assert_eq!(rescued.state, JobState::Retryable);
    assert!(rescued.errors[0].error.contains("replica dead stopped during attempt 1"), "{rescued:?}");
    assert_eq!(db.job(ids[1]).await.unwrap().unwrap().state, JobState::Executing, "alive's job stays");
    // the dead replica's late result is ignored; the rescued job runs once more, on another
    assert!(!db.complete_job(ids[0], 1, at(101)).await.unwrap());
    let again = db.claim_jobs("q", "alive", 5, None, at(100)).await.unwrap();
    assert_eq!(again.iter().map(|j| (j.id, j.attempt)).collect::<Vec<_>>(), [(ids[0], 2)]);
    assert!(db.complete_job(ids[0], 2, at(102)).await.unwrap());
    assert_eq!(db.rescue_orphaned_jobs(at(60), at(200)).await.unwrap(), 0);
}

async fn cron_slots_are_inserted_once_and_finished_jobs_are_pruned(backend: Backend) {
    let s = store(backend).await;
    let db = &s.db;
    let cron = Cron { name: "sweep".into(), every: Duration::from_secs(60), job: job("maintenance", 0) };
    // three replicas in the same minute: one job
    let crons = std::slice::from_ref(&cron);
    let (a, b, c) = tokio::join!(
        insert_cron_slots(db, crons, at(5)),
        insert_cron_slots(db, crons, at(30)),
        insert_cron_slots(db, crons, at(59))
    );
    assert_eq!(a.unwrap() + b.unwrap() + c.unwrap(), 1);
    assert_eq!(insert_cron_slots(db, crons, at(60)).await.unwrap(), 1, "the next minute's slot");
    let claimed = db.claim_jobs("maintenance", "r", 5, None, at(61)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    db.complete_job(claimed[0].id, 1, at(62)).await.unwrap();
    db.fail_job(claimed[1].id, 1, "no", None, at(500)).await.unwrap();
    assert_eq!(db.prune_jobs(at(100), 100).await.unwrap(), 1, "only what finished before the cutoff");
    assert_eq!(db.jobs_count(&JobFilter::default()).await.unwrap(), 1);
}

/// Counts its runs; fails the first `fail_first` attempts of each job.
struct Counting {
    runs: Arc<AtomicU32>,
    fail_first: u32,
}

impl Worker for Counting {
    fn name(&self) -> &'static str {
        "test.work"
    }
    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            self.runs.fetch_add(1, Ordering::SeqCst);
            if job.attempt <= self.fail_first {
                Err(JobError::Retry(format!("attempt {} fails", job.attempt)))
            } else {
                Ok(())
            }
        })
    }
    fn backoff(&self, _attempt: u32) -> Duration {
        Duration::ZERO
    }
}

async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn the_running_queue_works_pauses_and_resumes(backend: Backend) {
    let s = store(backend).await;
    let db = s.db.clone();
    let runs = Arc::new(AtomicU32::new(0));
    let config = JobsConfig {
        poll_interval_ms: 50,
        queues: [("work".to_owned(), QueueLimits { limit: 2, global_limit: None })].into(),
        ..Default::default()
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let worker = Arc::new(Counting { runs: runs.clone(), fail_first: 1 });
    let runtime =
        JobsRuntime::start(db.clone(), "r1".into(), &config, vec![worker], vec![], Metrics::new(), shutdown)
            .await
            .unwrap();
    let jobs = runtime.jobs.clone();
    let ids: Vec<i64> = jobs
        .insert(&(0..5).map(|n| job("work", n)).collect::<Vec<_>>())
        .await
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let completed = JobFilter { state: Some(JobState::Completed), ..Default::default() };
    wait_until("every job completed after one retry", async || db.jobs_count(&completed).await.unwrap() == 5)
        .await;
    assert_eq!(runs.load(Ordering::SeqCst), 10, "two attempts each");
    let one = db.job(ids[0]).await.unwrap().unwrap();
    assert_eq!((one.attempt, one.errors.len()), (2, 1), "{one:?}");

    // paused through the database (as any replica's operator would): nothing more runs
    let paused = QueueSettings { name: "work".into(), paused: true, local_limit: 2, global_limit: None };
    db.put_queue_settings(&paused, false, Utc::now()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // more than one poll: the pause is seen
    let more: Vec<i64> = jobs.insert(&[job("work", 9)]).await.unwrap().into_iter().flatten().collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        db.job(more[0]).await.unwrap().unwrap().state,
        JobState::Available,
        "a paused queue claims nothing"
    );
    db.put_queue_settings(&QueueSettings { paused: false, ..paused }, false, Utc::now()).await.unwrap();
    wait_until("the resumed queue ran it", async || db.jobs_count(&completed).await.unwrap() == 6).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), runtime.finish()).await.expect("the runtime stops");
}

/// A capture at `site` with `decision`, captured `days` ago, its image in `blobs`.
async fn capture(
    db: &Db,
    blobs: &BlobStore,
    site: &str,
    decision: Decision,
    days: i64,
    now: DateTime<Utc>,
) -> Uuid {
    let meta = CaptureMeta {
        id: Uuid::now_v7(),
        site_id: site.into(),
        lane: 0,
        captured_at: now - chrono::Duration::days(days),
        detected_at: None,
        vehicle_class: VehicleClass::Car,
        occupancy_status: OccupancyStatus::Counted,
        occupants: Some(1),
        speed_kmh: None,
        height_m: 1.5,
        width_m: 1.8,
        camera_id: "cam0".into(),
        config_version: 1,
        sections: vec![],
        confidence: None,
        model_version: None,
        test: decision == Decision::Test,
    };
    let sha: [u8; 32] = [7; 32];
    let image_key = domain::image_key(&meta, ImageContentType::Jpeg, &sha);
    blobs.put(&image_key, bytes::Bytes::from_static(b"jpeg"), "image/jpeg").await.unwrap();
    let id = meta.id;
    let c = Capture {
        meta,
        agent_id: format!("agent-{site}"),
        image_key,
        image_sha256: sha,
        image_bytes: 4,
        image_content_type: ImageContentType::Jpeg,
        received_at: now,
        decision,
        trace_parent: None,
    };
    db.insert_capture(&c).await.unwrap();
    id
}

async fn retention_deletes_exactly_what_is_due_and_records_it(backend: Backend) {
    let s = store(backend).await;
    let db = &s.db;
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::open(&BlobConfig::Local { dir: dir.path().to_path_buf() }).await.unwrap();
    let now = Utc::now();
    for site in ["north-1", "south-1"] {
        let hello = AgentHello {
            agent_id: format!("agent-{site}"),
            site_id: site.into(),
            software_version: "t".into(),
            config_version: 0,
            wants_heartbeat_acks: false,
            local_config: String::new(),
        };
        db.upsert_agent(&hello, now).await.unwrap();
    }
    db.set_site_jurisdiction("north-1", Some("north")).await.unwrap();
    // defaults: statistics 30, compliant 90, violations 180, confirmed 1825; north keeps compliant 7
    let mut config = RetentionConfig::default();
    config.jurisdictions.insert("north".into(), RetentionDays { compliant: 7, ..config.defaults });
    config.batch = 2; // several batches
    use Decision::*;
    let mut due = Vec::new();
    let mut kept = Vec::new();
    for (site, decision, days, is_due) in [
        ("south-1", Compliant, 91, true),
        ("south-1", Compliant, 89, false),
        ("north-1", Compliant, 8, true), // the jurisdiction's own days
        ("north-1", Compliant, 6, false),
        ("south-1", Unknown, 31, true),
        ("south-1", Test, 31, true),
        ("south-1", Unreadable, 29, false),
    ] {
        let id = capture(db, &blobs, site, decision, days, now).await;
        if is_due { due.push(id) } else { kept.push(id) }
    }
    // violations: pending (never deleted, however old), rejected (a candidate's days), confirmed
    let pending = capture(db, &blobs, "south-1", ViolationCandidate, 4000, now).await;
    let rejected = capture(db, &blobs, "south-1", ViolationCandidate, 181, now).await;
    let confirmed_young = capture(db, &blobs, "south-1", ViolationCandidate, 400, now).await;
    let confirmed_old = capture(db, &blobs, "south-1", ViolationCandidate, 1826, now).await;
    for (capture_id, decision) in [
        (rejected, ReviewDecision::Reject),
        (confirmed_young, ReviewDecision::Confirm),
        (confirmed_old, ReviewDecision::Confirm),
    ] {
        let v = db.violation_of_capture(capture_id, &Visibility::All).await.unwrap().unwrap();
        db.review_violation(v.id, decision, "reviewer", Some("checked"), &Visibility::All, now)
            .await
            .unwrap();
    }
    due.extend([rejected, confirmed_old]);
    kept.extend([pending, confirmed_young]);

    let sweep = RetentionSweep { db: db.clone(), blobs: blobs.clone(), config, metrics: Metrics::new() };
    assert_eq!(sweep.sweep().await.unwrap(), due.len() as u64);
    for id in &due {
        assert!(db.capture(*id, &Visibility::All).await.unwrap().is_none(), "{id} is past retention");
    }
    for id in &kept {
        let c =
            db.capture(*id, &Visibility::All).await.unwrap().unwrap_or_else(|| panic!("{id} must be kept"));
        assert!(blobs.get(&c.image_key).await.is_ok(), "its image too");
    }
    assert_eq!(std::fs::read_dir(dir.path()).map(|d| count_files(dir.path(), d)).unwrap(), kept.len());
    // a record per deletion: what, when, why; agencies see their jurisdiction's only
    let records = db.capture_deletions(&Visibility::All, None, None, 100).await.unwrap();
    let mut recorded: Vec<Uuid> = records.iter().map(|r| r.capture_id).collect();
    recorded.sort();
    due.sort();
    assert_eq!(recorded, due);
    let north = records.iter().find(|r| r.site_id == "north-1").unwrap();
    assert_eq!((north.value_class.as_str(), north.retention_days), ("compliant", 7));
    assert_eq!(north.reason, "retention: compliant captures are kept 7 days in jurisdiction north");
    let confirmed = records.iter().find(|r| r.capture_id == confirmed_old).unwrap();
    assert_eq!(confirmed.value_class, "confirmed_violation");
    let agency = Visibility::Jurisdiction { jurisdiction: "north".into(), all_captures: true };
    let theirs = db.capture_deletions(&agency, None, None, 100).await.unwrap();
    assert_eq!(theirs.iter().map(|r| r.capture_id).collect::<Vec<_>>(), [north.capture_id]);
    assert_eq!(sweep.sweep().await.unwrap(), 0, "nothing left due");
}

fn count_files(root: &std::path::Path, _top: std::fs::ReadDir) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p)
            .map(|d| {
                d.filter_map(Result::ok).map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
            })
            .unwrap_or(0)
    }
    walk(root)
}

fn principal(role: Role) -> Principal {
    let agency = role == Role::Agency;
    Principal {
        key_id: Some(format!("key-{}", role.as_str())),
        role,
        agency_id: agency.then(|| "agency-1".to_owned()),
        jurisdiction: agency.then(|| "north".to_owned()),
        all_captures: true,
    }
}

async fn run(
    schema: &graphql::LanewatchSchema,
    who: Role,
    query: &str,
    vars: serde_json::Value,
) -> serde_json::Value {
    let request = async_graphql::Request::new(query)
        .variables(async_graphql::Variables::from_json(vars))
        .data(principal(who));
    serde_json::to_value(schema.execute(request).await).unwrap()
}

fn code(answer: &serde_json::Value) -> &str {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

const QUEUES: &str = "{ queues { name paused localLimit globalLimit counts { state count } } }";
const JOBS: &str = "query($state: JobState, $args: String, $after: String) {
  jobs(first: 2, state: $state, args: $args, after: $after) { totalCount edges { cursor node { id state attempt worker args } }
  pageInfo { hasNextPage } } }";

#[tokio::test]
async fn the_job_api_is_for_operators_and_admins_audited_and_checks_its_input() {
    let s = store(Backend::Sqlite).await;
    let db = s.db.clone();
    let blobs = BlobStore::open(&BlobConfig::Local { dir: s._dir.path().join("blobs") }).await.unwrap();
    let (_shutdown, rx) = tokio::sync::watch::channel(false);
    let gateway = Gateway::new(db.clone(), blobs.clone(), Limits::default(), Metrics::new(), rx);
    let links = ImageLinks::new(
        "http://cp.test".into(),
        &ImageLinksConfig { ttl_secs: 300, signing_key: Some(vec![7; 32]) },
        blobs.clone(),
    );
    let schema = graphql::schema(ApiContext { db: db.clone(), gateway, blobs, links });
    let now = Utc::now();
    for q in JobsConfig::default().queues.keys() {
        let settings = QueueSettings { name: q.clone(), paused: false, local_limit: 3, global_limit: None };
        db.put_queue_settings(&settings, true, now).await.unwrap();
    }
    let ids: Vec<i64> = db
        .insert_jobs(&(0..5).map(|n| job("webhooks", n)).collect::<Vec<_>>(), now)
        .await
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let mut one = db.claim_jobs("webhooks", "r1", 1, None, now).await.unwrap();
    let failed = one.remove(0);
    db.fail_job(failed.id, 1, "receiver said 500", None, now).await.unwrap();

    // agencies may not see the queue; they read deletion records (none here)
    assert_eq!(code(&run(&schema, Role::Agency, QUEUES, json!({})).await), "PERMISSION_DENIED");
    let deletions =
        run(&schema, Role::Agency, "{ captureDeletions { edges { node { id } } } }", json!({})).await;
    assert!(deletions["errors"].is_null(), "{deletions}");

    let queues = run(&schema, Role::Operator, QUEUES, json!({})).await;
    let webhooks = queues["data"]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "webhooks")
        .unwrap()
        .clone();
    let count = |q: &serde_json::Value, st: &str| {
        q["counts"].as_array().unwrap().iter().find(|c| c["state"] == st).unwrap()["count"].as_u64().unwrap()
    };
    assert_eq!((count(&webhooks, "AVAILABLE"), count(&webhooks, "DISCARDED")), (4, 1), "{webhooks}");

    // the list: exact totals, pages, filters; the detail has every attempt's error
    let page = run(&schema, Role::Operator, JOBS, json!({})).await;
    assert_eq!(page["data"]["jobs"]["totalCount"], 5, "{page}");
    assert_eq!(page["data"]["jobs"]["pageInfo"]["hasNextPage"], true);
    let cursor = page["data"]["jobs"]["edges"][1]["cursor"].clone();
    let next = run(&schema, Role::Operator, JOBS, json!({ "after": cursor })).await;
    assert_eq!(next["data"]["jobs"]["edges"].as_array().unwrap().len(), 2, "{next}");
    let discarded = run(&schema, Role::Operator, JOBS, json!({ "state": "DISCARDED" })).await;
    assert_eq!(discarded["data"]["jobs"]["totalCount"], 1);
    let by_args = run(&schema, Role::Operator, JOBS, json!({ "args": "\"n\":3" })).await;
    assert_eq!(by_args["data"]["jobs"]["edges"][0]["node"]["args"], "{\"n\":3}", "{by_args}");
    let detail = run(
        &schema,
        Role::Admin,
        "query($id: ID!) { job(id: $id) { state errors { attempt error } } }",
        json!({ "id": failed.id.to_string() }),
    )
    .await;
    assert_eq!(
        detail["data"]["job"]["errors"],
        json!([{ "attempt": 1, "error": "receiver said 500" }]),
        "{detail}"
    );
    let bad = run(&schema, Role::Operator, JOBS, json!({ "after": "x" })).await;
    assert_eq!(code(&bad), "INVALID_ARGUMENT", "{bad}");

    // batch actions
    let retried = run(
        &schema,
        Role::Operator,
        "mutation($ids: [ID!]!) { retryJobs(ids: $ids) }",
        json!({ "ids": [failed.id.to_string()] }),
    )
    .await;
    assert_eq!(retried["data"]["retryJobs"], 1, "{retried}");
    assert_eq!(db.job(failed.id).await.unwrap().unwrap().state, JobState::Available);
    let cancelled = run(
        &schema,
        Role::Admin,
        "mutation($ids: [ID!]!) { cancelJobs(ids: $ids) }",
        json!({ "ids": [ids[1].to_string(), ids[2].to_string()] }),
    )
    .await;
    assert_eq!(cancelled["data"]["cancelJobs"], 2, "{cancelled}");
    let deleted = run(
        &schema,
        Role::Operator,
        "mutation($ids: [ID!]!) { deleteJobs(ids: $ids) }",
        json!({ "ids": [ids[1].to_string()] }),
    )
    .await;
    assert_eq!(deleted["data"]["deleteJobs"], 1, "{deleted}");
    let refused = run(
        &schema,
        Role::Agency,
        "mutation($ids: [ID!]!) { deleteJobs(ids: $ids) }",
        json!({ "ids": [ids[2].to_string()] }),
    )
    .await;
    assert_eq!(code(&refused), "PERMISSION_DENIED");
    let empty = run(&schema, Role::Operator, "mutation { retryJobs(ids: []) }", json!({})).await;
    assert_eq!(code(&empty), "INVALID_ARGUMENT");

    // queue controls, stored for every replica
    let paused =
        run(&schema, Role::Operator, "mutation { pauseQueue(name: \"webhooks\") { paused } }", json!({}))
            .await;
    assert_eq!(paused["data"]["pauseQueue"]["paused"], true, "{paused}");
    let stored = db.queue_settings().await.unwrap();
    assert!(stored.iter().any(|q| q.name == "webhooks" && q.paused), "{stored:?}");
    let resized = run(&schema, Role::Operator, "mutation { resizeQueue(name: \"webhooks\", localLimit: 7, globalLimit: 20) { localLimit globalLimit paused } }", json!({})).await;
    assert_eq!(
        resized["data"]["resizeQueue"],
        json!({ "localLimit": 7, "globalLimit": 20, "paused": true }),
        "{resized}"
    );
    let zero = run(
        &schema,
        Role::Operator,
        "mutation { resizeQueue(name: \"webhooks\", localLimit: 0) { name } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&zero), "INVALID_ARGUMENT", "{zero}");
    let unknown =
        run(&schema, Role::Operator, "mutation { resumeQueue(name: \"nope\") { name } }", json!({})).await;
    assert_eq!(code(&unknown), "NOT_FOUND", "{unknown}");
    assert!(
        unknown["errors"][0]["message"].as_str().unwrap().contains("queues: maintenance, webhooks"),
        "{unknown}"
    );
    run(&schema, Role::Operator, "mutation { resumeQueue(name: \"webhooks\") { name } }", json!({})).await;

    // every mutation attempt is audited, refusals included
    let audit = db.audit_page(None, 100).await.unwrap();
    let rows: Vec<(String, String, bool)> =
        audit.iter().map(|a| (a.action.clone(), a.target.clone(), a.ok)).collect();
    for (action, target, ok) in [
        ("retryJobs", format!("jobs/{}", failed.id), true),
        ("cancelJobs", format!("jobs/{},{}", ids[1], ids[2]), true),
        ("deleteJobs", format!("jobs/{}", ids[2]), false),
        ("pauseQueue", "queue/webhooks".to_owned(), true),
        ("resizeQueue", "queue/webhooks".to_owned(), false),
        ("resumeQueue", "queue/nope".to_owned(), false),
    ] {
        assert!(rows.contains(&(action.to_owned(), target.clone(), ok)), "{action} {target} {ok}: {rows:?}");
    }
}

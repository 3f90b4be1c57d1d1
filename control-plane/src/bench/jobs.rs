//! `lanewatch-control bench jobs`: the job queue and the push service on a real database (the
//! PostgreSQL of `--database-url`, or SQLite in a temp directory).
//!
//! - `jobs_per_s`: `--jobs` no-op jobs through the running queue (producer, claim, task, record),
//!   and `jobs_vs_raw_skip_locked` against a bare loop on the same database in the same run that
//!   claims batches of the same size with `FOR UPDATE SKIP LOCKED` and completes each row with
//!   one `UPDATE` (SQLite: the same statements without the locking clause), as many workers.
//! - `webhook_deliveries_per_s`: `--deliveries` signed deliveries to a receiver on 127.0.0.1.
//! - `rate_cap_error`: an endpoint capped at `--rate` per second: `|measured - cap| / cap`, the
//!   measured rate taken over the receiver's arrival times.
//! - `job_list_p99_ms_1m`: the console's job list (a page and its exact count, filtered by
//!   queue and state) over `--list-rows` jobs (1,000,000).
//!
//! Measures only: it asserts nothing about the figures.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures::future::BoxFuture;
use lanewatch_control_plane::blob::BlobStore;
use lanewatch_control_plane::config::{
    BlobConfig, ImageLinksConfig, JobsConfig, QueueLimits, WebhooksConfig,
};
use lanewatch_control_plane::db::Db;
use lanewatch_control_plane::db::webhooks::delivery_job;
use lanewatch_control_plane::domain::{
    EventType, Job, JobFilter, JobState, NewJob, QueueSettings, WebhookEndpoint,
};
use lanewatch_control_plane::jobs::deliver::Deliver;
use lanewatch_control_plane::jobs::{JobError, JobsRuntime, Worker};
use lanewatch_control_plane::links::ImageLinks;
use lanewatch_control_plane::metrics::Metrics;
use lanewatch_control_plane::webhooks::{Cidr, ClientOptions, DeliveryClient, Secret};
use sea_orm::{ConnectionTrait, Database, Statement};

use super::{print_report, round};

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Jobs through the queue (and through the raw loop).
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Jobs run at once (the queue's limit, the raw loop's workers).
    #[arg(long, default_value_t = 10)]
    workers: u32,
    /// Webhook deliveries for the throughput figure.
    #[arg(long, default_value_t = 2_000)]
    deliveries: usize,
    /// The capped endpoint's rate (per second) and how many deliveries measure it.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    #[arg(long, default_value_t = 250)]
    rate_deliveries: usize,
    /// Jobs in the table for the list query.
    #[arg(long, default_value_t = 1_000_000)]
    list_rows: u64,
}

pub fn run(runtime: &tokio::runtime::Runtime, database_url: Option<&str>, args: &JobsArgs) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("lanewatch-bench-jobs-{}", uuid::Uuid::now_v7().simple()));
    let report = runtime.block_on(jobs(database_url, &dir, args));
    let _ = std::fs::remove_dir_all(&dir);
    print_report(args.json, report)
}

struct Noop;

impl Worker for Noop {
    fn name(&self) -> &'static str {
        "bench.noop"
    }
    fn perform<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async { Ok(()) })
    }
}

async fn jobs(
    database_url: Option<&str>,
    dir: &std::path::Path,
    args: &JobsArgs,
) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(dir)?;
    let url = database_url
        .map_or_else(|| format!("sqlite://{}/bench.sqlite?mode=rwc", dir.display()), str::to_owned);
    let db = Db::connect(&url).await.context("cannot open the database")?;
    if db.jobs_count(&JobFilter::default()).await? > 0 {
        anyhow::bail!("the database already holds jobs: give bench jobs an empty one");
    }
    let conn = Database::connect(&url).await?;
    let backend = conn.get_database_backend();

    // the raw loop first, on its own table
    conn.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS bench_raw (id BIGINT PRIMARY KEY, state TEXT NOT NULL)",
    )
    .await?;
    conn.execute_unprepared("CREATE INDEX IF NOT EXISTS bench_raw_new ON bench_raw (id) WHERE state = 'new'")
        .await?;
    insert_series(&conn, "INSERT INTO bench_raw (id, state) SELECT n, 'new' FROM", args.jobs as u64).await?;
    let lock = if backend == sea_orm::DbBackend::Postgres { "FOR UPDATE SKIP LOCKED" } else { "" };
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.workers {
        let conn = conn.clone();
        let claim = format!(
            "UPDATE bench_raw SET state = 'executing' WHERE id IN \
             (SELECT id FROM bench_raw WHERE state = 'new' ORDER BY id LIMIT 1 {lock}) RETURNING id"
        );
        workers.spawn(async move {
            loop {
                let rows = conn.query_all(Statement::from_string(backend, claim.clone())).await?;
                if rows.is_empty() {
                    return anyhow::Ok(());
                }
                for r in rows {
                    let id: i64 = r.try_get("", "id")?;
                    conn.execute(Statement::from_sql_and_values(
                        backend,
                        "UPDATE bench_raw SET state = 'done' WHERE id = $1",
                        [id.into()],
                    ))
                    .await?;
                }
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    let raw_per_s = args.jobs as f64 / started.elapsed().as_secs_f64();
    conn.execute_unprepared("DROP TABLE bench_raw").await?;

    // the queue
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let config = JobsConfig {
        poll_interval_ms: 100,
        queues: [
            ("bench".to_owned(), QueueLimits { limit: args.workers, global_limit: None }),
            ("webhooks".to_owned(), QueueLimits { limit: 50, global_limit: None }),
        ]
        .into(),
        ..Default::default()
    };
    let batch: Vec<NewJob> =
        (0..args.jobs).map(|n| NewJob::new("bench", "bench.noop", serde_json::json!({ "n": n }))).collect();
    let blobs = BlobStore::open(&BlobConfig::Local { dir: dir.join("blobs") }).await?;
    let links = ImageLinks::new(
        "http://cp.bench".into(),
        &ImageLinksConfig { ttl_secs: 300, signing_key: Some(vec![1; 32]) },
        blobs,
    );
    let client = DeliveryClient::new(ClientOptions {
        allow: vec![Cidr::parse("127.0.0.1/32").map_err(|e| anyhow::anyhow!("{e}"))?],
        ..ClientOptions::default()
    })?;
    let deliver = Deliver::new(db.clone(), client, links, WebhooksConfig::default());
    // the jobs are inserted while the queue is paused, so that both figures time the work
    // through the queue only (the raw loop's rows were there before its clock started too)
    let settings = |paused| QueueSettings {
        name: "bench".into(),
        paused,
        local_limit: args.workers,
        global_limit: None,
    };
    db.put_queue_settings(&settings(true), false, Utc::now()).await?;
    for chunk in batch.chunks(500) {
        db.insert_jobs(chunk, Utc::now()).await?;
    }
    let runtime = JobsRuntime::start(
        db.clone(),
        "bench".into(),
        &config,
        vec![Arc::new(Noop), Arc::new(deliver)],
        vec![],
        Metrics::new(),
        shutdown,
    )
    .await?;
    db.put_queue_settings(&settings(false), false, Utc::now()).await?;
    let started = Instant::now();
    let done =
        JobFilter { queue: Some("bench".into()), state: Some(JobState::Completed), ..Default::default() };
    wait_count(&db, &done, args.jobs as u64).await?;
    let jobs_per_s = args.jobs as f64 / started.elapsed().as_secs_f64();

    // deliveries to a local receiver: throughput, then a capped endpoint's rate
    let (url, arrivals) = receiver().await?;
    let fast = endpoint(&db, &url, 10_000.0, 50).await?;
    let started = Instant::now();
    let jobs: Vec<NewJob> = (0..args.deliveries)
        .map(|n| delivery_job(fast, EventType::EndpointDisabled, None, serde_json::json!({ "n": n })))
        .collect();
    db.insert_jobs(&jobs, Utc::now()).await?;
    wait_arrivals(&arrivals, args.deliveries).await?;
    let deliveries_per_s = args.deliveries as f64 / started.elapsed().as_secs_f64();
    arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    let capped = endpoint(&db, &url, args.rate, 50).await?;
    let jobs: Vec<NewJob> = (0..args.rate_deliveries)
        .map(|n| delivery_job(capped, EventType::EndpointDisabled, None, serde_json::json!({ "n": n })))
        .collect();
    db.insert_jobs(&jobs, Utc::now()).await?;
    wait_arrivals(&arrivals, args.rate_deliveries).await?;
    let times = arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let span = times.last().zip(times.first()).map_or(0.0, |(l, f)| l.duration_since(*f).as_secs_f64());
    let measured = (times.len().saturating_sub(1)) as f64 / span.max(1e-9);
    let rate_cap_error = (measured - args.rate).abs() / args.rate;
    let _ = stop.send(true);
    runtime.finish().await;

    // the list query over many jobs
    conn.execute_unprepared("DELETE FROM jobs").await?;
    let states = ["completed", "completed", "completed", "discarded", "available"];
    let now_ms = Utc::now().timestamp_millis();
    let sql = format!(
        "INSERT INTO jobs (queue, worker, args, state, priority, attempt, max_attempts, inserted_at_ms, \
         scheduled_at_ms, errors) SELECT CASE WHEN n % 3 = 0 THEN 'webhooks' ELSE 'maintenance' END, \
         'webhook.deliver', '{{\"n\":' || n || '}}', CASE n % 5 {} END, 0, 1, 8, {now_ms} - n, {now_ms} - n, '[]' FROM",
        states.iter().enumerate().map(|(i, s)| format!("WHEN {i} THEN '{s}'")).collect::<Vec<_>>().join(" ")
    );
    let seeded = Instant::now();
    insert_series(&conn, &sql, args.list_rows).await?;
    if backend == sea_orm::DbBackend::Postgres {
        conn.execute_unprepared("VACUUM ANALYZE jobs").await?;
    } else {
        conn.execute_unprepared("ANALYZE").await?;
    }
    let seed_secs = seeded.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for i in 0..100 {
        let filter = JobFilter {
            queue: Some(if i % 2 == 0 { "webhooks" } else { "maintenance" }.into()),
            state: Some(if i % 3 == 0 { JobState::Discarded } else { JobState::Available }),
            ..Default::default()
        };
        let t = Instant::now();
        let (page, _count) = futures::try_join!(db.jobs_page(&filter, None, 21), db.jobs_count(&filter))?;
        times.push(t.elapsed());
        anyhow::ensure!(!page.is_empty(), "the list found no job");
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    Ok(serde_json::json!({
        "database": if backend == sea_orm::DbBackend::Postgres { "postgresql" } else { "sqlite" },
        "jobs": args.jobs,
        "workers": args.workers,
        "jobs_per_s": round(jobs_per_s),
        "raw_skip_locked_per_s": round(raw_per_s),
        "jobs_vs_raw_skip_locked": round(jobs_per_s / raw_per_s),
        "webhook_deliveries_per_s": round(deliveries_per_s),
        "rate_cap_per_s": args.rate,
        "rate_measured_per_s": round(measured),
        "rate_cap_error": round(rate_cap_error),
        "list_rows": args.list_rows,
        "list_seed_secs": round(seed_secs),
        "job_list_p50_ms_1m": round(p(0.5)),
        "job_list_p99_ms_1m": round(p(0.99)),
    }))
}

/// `INSERT … SELECT … FROM` the numbers 1..=n (generate_series, or a recursive CTE on SQLite).
async fn insert_series(
    conn: &sea_orm::DatabaseConnection,
    insert_select_from: &str,
    n: u64,
) -> anyhow::Result<()> {
    let sql = match conn.get_database_backend() {
        sea_orm::DbBackend::Postgres => format!("{insert_select_from} generate_series(1, {n}) AS s(n)"),
        _ => format!(
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) {insert_select_from} s"
        ),
    };
    conn.execute_unprepared(&sql).await?;
    Ok(())
}

async fn wait_count(db: &Db, filter: &JobFilter, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while db.jobs_count(filter).await? < n {
        anyhow::ensure!(Instant::now() < deadline, "the queue did not finish within 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

type Arrivals = Arc<Mutex<Vec<Instant>>>;

async fn receiver() -> anyhow::Result<(String, Arrivals)> {
    let arrivals: Arrivals = Default::default();
    let got = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let got = got.clone();
            async move {
                got.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Instant::now());
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/hook"), arrivals))
}

async fn wait_arrivals(arrivals: &Arrivals, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len() < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the receiver did not get every delivery within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn endpoint(db: &Db, url: &str, rate: f64, concurrency: u32) -> anyhow::Result<uuid::Uuid> {
    let e = WebhookEndpoint {
        id: uuid::Uuid::now_v7(),
        url: url.to_owned(),
        description: "bench".into(),
        event_types: vec![EventType::EndpointDisabled],
        site_id: None,
        rate_per_sec: rate,
        max_concurrency: concurrency,
        enabled: true,
        secret: Secret::generate().to_string(),
        previous_secret: None,
        previous_secret_until: None,
        agency_id: None,
        jurisdiction: None,
        all_captures: false,
        failing_since: None,
        disabled_reason: None,
        created_by: "bench".into(),
        created_at: Utc::now(),
    };
    db.put_webhook_endpoint(&e, Utc::now()).await?;
    Ok(e.id)
}

//! `lanewatch-control bench api`: seeds a fresh PostgreSQL database with captures, times the
//! captures page exactly as GraphQL runs it, and compares end-to-end ingest (gRPC session → S3
//! → PostgreSQL → ack) with raw S3 `PutObject` of the same sizes. Measures only: it asserts
//! nothing about the figures.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lanewatch_control_plane::blob::BlobStore;
use lanewatch_control_plane::config::{BlobConfig, Limits, S3Config};
use lanewatch_control_plane::db::Db;
use lanewatch_control_plane::domain::{CaptureCursor, CaptureFilter, Decision, Visibility};
use lanewatch_control_plane::gateway::Gateway;
use lanewatch_control_plane::metrics::Metrics;
use lanewatch_proto::v1 as pb;
use rand::Rng;
use sea_orm::sqlx::{self, PgPool, Row};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

pub mod history;
pub mod jobs;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Seeds captures, times captures pages and compares ingest with raw S3 puts.
    Api(ApiArgs),
    /// Component history's sustained write rate and bytes per agent for 10,000 agents
    /// (`bench/history.rs`).
    History(history::HistoryArgs),
    /// The job queue against a bare SKIP LOCKED loop, webhook deliveries and rate caps, and
    /// the job list over 1,000,000 jobs (`bench/jobs.rs`).
    Jobs(jobs::JobsArgs),
}

#[derive(clap::Args)]
pub struct ApiArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Captures to seed (the database must be fresh: no captures yet).
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Captures-page queries to time.
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// S3 endpoint; without it a SeaweedFS server is started from `--weed`.
    #[arg(long, requires_all = ["s3_access_key", "s3_secret_key"])]
    s3_endpoint: Option<String>,
    #[arg(long, default_value = "lanewatch-bench")]
    s3_bucket: String,
    #[arg(long)]
    s3_access_key: Option<String>,
    #[arg(long)]
    s3_secret_key: Option<String>,
    /// Captures uploaded through the gateway (and raw puts made, before and after). Enough for
    /// a few seconds per phase: ingest's pipeline takes longer than a single put to fill and to
    /// drain, and over about a second that would weigh on its rate.
    #[arg(long, default_value_t = 3000)]
    ingest_captures: usize,
    /// Size of each uploaded image.
    #[arg(long, default_value_t = 200_000)]
    image_bytes: usize,
    /// Concurrent agent sessions (a small fleet's; each may have `limits.max_stores_per_session`
    /// captures being stored), and as many raw puts in flight.
    #[arg(long, default_value_t = 8)]
    sessions: usize,
    /// The SeaweedFS binary used when no S3 endpoint is given.
    #[arg(long, default_value = ".tools/bin/weed")]
    weed: PathBuf,
}

impl std::fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiArgs")
            .field("rows", &self.rows)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("ingest_captures", &self.ingest_captures)
            .field("image_bytes", &self.image_bytes)
            .finish_non_exhaustive()
    }
}

/// Runs `bench api` against `database_url`; prints the report to stdout.
pub fn run_api(runtime: &tokio::runtime::Runtime, database_url: &str, args: &ApiArgs) -> ExitCode {
    print_report(args.json, runtime.block_on(api(database_url, args)))
}

/// Prints a bench's report (one JSON line with `json`, else a table) or why it failed.
fn print_report(json: bool, report: anyhow::Result<serde_json::Value>) -> ExitCode {
    match report {
        Ok(report) => {
            if json {
                println!("{report}");
            } else {
                print_table(&report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn api(database_url: &str, args: &ApiArgs) -> anyhow::Result<serde_json::Value> {
    if !database_url.starts_with("postgres") {
        bail!("bench api needs a postgresql database (--database-url postgres://..)");
    }
    let db = Db::connect(database_url).await.context("cannot open the database")?;
    let pool = db.postgres_pool().context("not a postgresql database")?.clone();
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM captures LIMIT 1) AS c")
        .fetch_one(&pool)
        .await?;
    if existing > 0 {
        bail!("the database already holds captures; give the bench a fresh one");
    }

    eprintln!("seeding {} captures", args.rows);
    let seed_secs = seed(&pool, args.rows).await.context("seeding captures")?.as_secs_f64();
    eprintln!("seeded in {seed_secs:.1}s; timing {} captures pages", args.queries);
    let pages = time_pages(&db, &pool, args.queries).await.context("timing captures pages")?;

    let mut weed = None;
    let s3 = match (&args.s3_endpoint, &args.s3_access_key, &args.s3_secret_key) {
        (Some(endpoint), Some(key), Some(secret)) => s3_config(endpoint, &args.s3_bucket, key, secret),
        _ => {
            let server = Weed::start(&args.weed).context("starting seaweedfs")?;
            let config = s3_config(&server.endpoint, &args.s3_bucket, WEED_KEY, WEED_SECRET);
            weed = Some(server);
            config
        }
    };
    let blobs = BlobStore::open(&BlobConfig::S3(s3)).await.context("cannot open the s3 bucket")?;
    eprintln!("timing {} uploads of {} bytes", args.ingest_captures, args.image_bytes);
    let ingest = time_ingest(&db, &blobs, args).await.context("timing ingest");
    drop(weed);
    let ingest = ingest?;

    let mut report = serde_json::json!({
        "rows": args.rows,
        "seed_secs": round(seed_secs),
        "seed_rows_per_sec": round(args.rows as f64 / seed_secs.max(1e-9)),
    });
    merge(&mut report, pages);
    merge(&mut report, ingest);
    Ok(report)
}

fn s3_config(endpoint: &str, bucket: &str, key: &str, secret: &str) -> S3Config {
    S3Config {
        bucket: bucket.to_owned(),
        endpoint_url: Some(endpoint.to_owned()),
        region: "us-east-1".to_owned(),
        force_path_style: true,
        create_bucket: true,
        access_key_id: key.to_owned(),
        secret_access_key: secret.to_owned(),
    }
}

// ---- seeding ----

const SITES: u32 = 20;
const SEED_BATCH: u64 = 50_000;

/// One batch of captures, generated by the server over `generate_series($1, $2)`: 20 sites
/// (skewed: site-00 busiest), 3 lanes, captured_at spread over the last 30 days, mostly cars,
/// 86% compliant / 8% violation candidates / 4% unreadable / 2% unknown.
const SEED_SQL: &str = "\
INSERT INTO captures (id, agent_id, site_id, lane, captured_at, detected_at, vehicle_class, \
  occupancy_status, occupants, speed_kmh, height_m, width_m, camera_id, config_version, image_key, \
  image_sha256, image_bytes, image_content_type, received_at, decision, confidence, model_version, \
  sections_json) \
SELECT id, 'agent-' || site, 'site-' || site, lane, at, at - interval '40 milliseconds', \
  (ARRAY['car','car','car','car','car','van','van','truck','bus','motorcycle'])[1 + floor(r1 * 10)::int], \
  CASE WHEN r2 < 0.95 THEN 'counted' WHEN r2 < 0.98 THEN 'unreadable' ELSE 'unknown' END, \
  CASE WHEN r2 < 0.95 THEN 1 + floor(r3 * r3 * 4)::bigint END, \
  40 + r1 * 80, 1.5, 1.8, 'front', 1, \
  'captures/site-' || site || '/' || to_char(at, 'YYYY-MM-DD') || '/' || id || '.jpg', \
  md5(id) || md5(id || '.'), 180000 + floor(r3 * 40000)::bigint, 'image/jpeg', \
  at + interval '2 seconds', \
  CASE WHEN r4 < 0.86 THEN 'compliant' WHEN r4 < 0.94 THEN 'violation_candidate' \
    WHEN r4 < 0.98 THEN 'unreadable' ELSE 'unknown' END, \
  0.5 + r3 * 0.5, 'occupancy-v3', '[]' \
FROM (SELECT md5('lanewatch-bench-' || g)::uuid::text AS id, \
  lpad(floor(20 * power(random(), 2))::int::text, 2, '0') AS site, \
  1 + floor(random() * 3)::bigint AS lane, \
  now() - random() * interval '30 days' AS at, \
  random() AS r1, random() AS r2, random() AS r3, random() AS r4 \
  FROM generate_series($1::bigint, $2::bigint) AS g) AS x";

/// Seeds `rows` captures in batches (each one statement, so one transaction) on two
/// connections, then the sites and the violations of the violation candidates; vacuums and
/// analyzes.
async fn seed(pool: &PgPool, rows: u64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    sqlx::query(
        "INSERT INTO sites (id, name, jurisdiction, created_at) \
         SELECT 'site-' || lpad(s::text, 2, '0'), 'Site ' || s, \
           CASE WHEN s % 2 = 0 THEN 'north' ELSE 'south' END, now() - interval '60 days' \
         FROM generate_series(0, $1::int - 1) AS s ON CONFLICT DO NOTHING",
    )
    .bind(i32::try_from(SITES)?)
    .execute(pool)
    .await?;
    let next = Arc::new(AtomicU64::new(0));
    let workers = (0..2).map(|_| {
        let next = next.clone();
        async move {
            loop {
                let lo = next.fetch_add(SEED_BATCH, Ordering::Relaxed);
                if lo >= rows {
                    return anyhow::Ok(());
                }
                let hi = (lo + SEED_BATCH).min(rows) - 1;
                sqlx::query(SEED_SQL).bind(i64::try_from(lo)?).bind(i64::try_from(hi)?).execute(pool).await?;
            }
        }
    });
    futures::future::try_join_all(workers).await?;
    sqlx::query(
        "INSERT INTO violations (id, capture_id, site_id, captured_at, state, created_at) \
         SELECT md5('violation-' || id)::uuid::text, id, site_id, captured_at, 'pending', received_at \
         FROM captures WHERE decision = 'violation_candidate'",
    )
    .execute(pool)
    .await?;
    // vacuumed as well as analyzed: otherwise autovacuum of the freshly inserted rows starts at
    // some point within the next minute, in the middle of whatever is being timed
    sqlx::query("VACUUM (ANALYZE) captures").execute(pool).await?;
    sqlx::query("VACUUM (ANALYZE) violations").execute(pool).await?;
    // and the seeding's writes flushed: otherwise the checkpoint they set off writes them back
    // during the timings (it needs a superuser or pg_checkpoint; without, the bench says so)
    if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("warning: cannot checkpoint after seeding ({e}); timings may include its write-back");
    }
    Ok(start.elapsed())
}

// ---- captures pages ----

/// GraphQL's default page (`first: 20`), over-fetched by one as the resolver does.
const PAGE_LIMIT: u64 = 21;

#[derive(Clone, Copy, PartialEq, Eq)]
enum PageKind {
    First,
    Deep,
    Site,
    Decision,
    TimeRange,
}

impl PageKind {
    const ALL: [PageKind; 5] = [Self::First, Self::Deep, Self::Site, Self::Decision, Self::TimeRange];

    fn name(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Deep => "deep",
            Self::Site => "site",
            Self::Decision => "decision",
            Self::TimeRange => "time_range",
        }
    }

    /// 2 first, 3 deep, 2 site, 1 decision, 2 time-range pages in every 10.
    fn of(i: usize) -> Self {
        match i % 10 {
            0 | 1 => Self::First,
            2..=4 => Self::Deep,
            5 | 6 => Self::Site,
            7 => Self::Decision,
            _ => Self::TimeRange,
        }
    }
}

/// Times `queries` captures pages through `Db::captures_page` with an operator's visibility:
/// first pages, deep keyset pages after cursors at random rows, and filtered pages.
async fn time_pages(db: &Db, pool: &PgPool, queries: usize) -> anyhow::Result<serde_json::Value> {
    let cursors = random_cursors(pool, 200).await?;
    if cursors.is_empty() {
        bail!("no captures to page through");
    }
    let vis = Visibility::All;
    let now = Utc::now();
    let mut rng = rand::rng();
    let mut all = Vec::with_capacity(queries);
    let mut by_kind: Vec<(PageKind, Vec<f64>)> = PageKind::ALL.iter().map(|k| (*k, Vec::new())).collect();
    for i in 0..queries {
        let kind = PageKind::of(i);
        let deep = rng.random_bool(0.5);
        let cursor = cursors[rng.random_range(0..cursors.len())];
        let mut filter = CaptureFilter::default();
        let after = match kind {
            PageKind::First => None,
            PageKind::Deep => Some(cursor),
            PageKind::Site => {
                filter.site_id = Some(format!("site-{:02}", rng.random_range(0..SITES)));
                deep.then_some(cursor)
            }
            PageKind::Decision => {
                let decisions = [Decision::ViolationCandidate, Decision::Unreadable, Decision::Unknown];
                filter.decision = Some(decisions[rng.random_range(0..decisions.len())]);
                deep.then_some(cursor)
            }
            PageKind::TimeRange => {
                let from = now - chrono::Duration::minutes(rng.random_range(60..30 * 24 * 60));
                let to = from + chrono::Duration::days(1);
                filter.from = Some(from);
                filter.to = Some(to);
                deep.then_some(CaptureCursor {
                    captured_at: from + chrono::Duration::hours(12),
                    id: Uuid::max(),
                })
            }
        };
        let start = Instant::now();
        let page = db.captures_page(&filter, &vis, after, PAGE_LIMIT).await?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        std::hint::black_box(page);
        all.push(ms);
        if let Some((_, v)) = by_kind.iter_mut().find(|(k, _)| *k == kind) {
            v.push(ms);
        }
    }
    let deep_cursor = cursors[cursors.len() / 2];
    let plan =
        db.explain_captures_page(&CaptureFilter::default(), &vis, Some(deep_cursor), PAGE_LIMIT).await?;
    eprintln!("explain analyze of a deep captures page:\n  {}", plan.join("\n  "));
    let first_line = plan.first().cloned().unwrap_or_default();
    let uses_index = plan.iter().any(|l| l.contains("Index Scan") || l.contains("Index Only Scan"));
    let mut out = serde_json::json!({
        "captures_page_queries": all.len(),
        "captures_page_p50_ms": round(percentile(&mut all, 0.50)),
        "captures_page_p99_ms": round(percentile(&mut all, 0.99)),
        "captures_page_max_ms": round(percentile(&mut all, 1.0)),
        "deep_page_plan": first_line,
        "deep_page_uses_index": uses_index,
    });
    for (kind, mut v) in by_kind {
        out[format!("captures_page_{}_p99_ms", kind.name())] = round(percentile(&mut v, 0.99)).into();
    }
    Ok(out)
}

/// Cursors of `n` rows picked at random (one table scan).
async fn random_cursors(pool: &PgPool, n: i64) -> anyhow::Result<Vec<CaptureCursor>> {
    let rows = sqlx::query(
        "SELECT (extract(epoch FROM captured_at) * 1000000)::bigint AS micros, id \
         FROM captures ORDER BY random() LIMIT $1",
    )
    .bind(n)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let micros: i64 = r.try_get("micros")?;
            let id: String = r.try_get("id")?;
            let captured_at =
                DateTime::<Utc>::from_timestamp_micros(micros).context("captured_at out of range")?;
            Ok(CaptureCursor { captured_at, id: Uuid::parse_str(&id)? })
        })
        .collect()
}

/// The value at quantile `q` (nearest rank); 0 for no samples.
fn percentile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let rank = (q * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

// ---- ingest vs raw s3 ----

/// Uploads captures through an in-process gateway on `sessions` agent sessions, and makes the
/// same number of raw puts of the same sizes, under keys of the same shape, with as many puts in
/// flight as the gateway may have (`sessions` × `limits.max_stores_per_session`), once before
/// and once after the uploads (the baseline is their mean, so a server that slows or speeds up
/// as it fills does not favour either side); all timed to the end. Raw puts are the SDK's
/// plain `PutObject` (which hashes each body for its signature); the gateway signs with the
/// digest it already verified. The agents' sessions are opened and their messages built
/// before the clock starts (an agent does that on its own machine); sending them is timed.
async fn time_ingest(db: &Db, blobs: &BlobStore, args: &ApiArgs) -> anyhow::Result<serde_json::Value> {
    let sessions = args.sessions.clamp(1, args.ingest_captures.max(1));
    let images: Vec<Bytes> = (0..args.ingest_captures)
        .map(|_| {
            let mut image = vec![0u8; args.image_bytes];
            rand::rng().fill(&mut image[..]);
            Bytes::from(image)
        })
        .collect();
    // warm the bucket and the connection pool outside the timings
    for i in 0..sessions {
        blobs.put(&format!("bench-warm/{i}.jpg"), images[0].clone(), "image/jpeg").await?;
    }

    let limits = Limits::default();
    let put_concurrency = sessions * limits.max_stores_per_session;
    let start = Instant::now();
    raw_puts(blobs, &images, put_concurrency).await?;
    let raw_before_secs = start.elapsed().as_secs_f64();

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let gateway = Gateway::new(db.clone(), blobs.clone(), limits, Metrics::new(), stop_rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(
        lanewatch_control_plane::gateway::server_builder()
            .add_service(gateway.into_service())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move {
                    let _ = stop_rx.wait_for(|stop| *stop).await;
                },
            ),
    );
    // sessions are opened and each agent's messages built (digests, chunks) before the clock
    // starts: a real agent does that work on its own machine, and its session is long-lived
    let opened = futures::future::try_join_all(
        split(&images, sessions).into_iter().enumerate().map(|(i, part)| open_session(&url, i, part)),
    )
    .await;
    let start = Instant::now();
    let uploads = match opened {
        Ok(opened) => futures::future::try_join_all(opened.into_iter().map(upload_session)).await.map(drop),
        Err(e) => Err(e),
    };
    let ingest_secs = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = server.await;
    uploads?;
    let start = Instant::now();
    raw_puts(blobs, &images, put_concurrency).await?;
    let raw_after_secs = start.elapsed().as_secs_f64();
    let raw_secs = (raw_before_secs + raw_after_secs) / 2.0;

    let n = args.ingest_captures as f64;
    let ingest_rate = n / ingest_secs.max(1e-9);
    let raw_rate = n / raw_secs.max(1e-9);
    Ok(serde_json::json!({
        "ingest_captures": args.ingest_captures,
        "image_bytes": args.image_bytes,
        "ingest_sessions": sessions,
        "s3_puts_in_flight": put_concurrency,
        "ingest_per_sec": round(ingest_rate),
        "raw_s3_put_per_sec": round(raw_rate),
        "raw_s3_put_per_sec_before": round(n / raw_before_secs.max(1e-9)),
        "raw_s3_put_per_sec_after": round(n / raw_after_secs.max(1e-9)),
        "ingest_vs_raw_s3": round(ingest_rate / raw_rate),
    }))
}

/// `items` in `parts` nearly equal consecutive slices.
fn split<T>(items: &[T], parts: usize) -> Vec<&[T]> {
    let size = items.len().div_ceil(parts.max(1)).max(1);
    items.chunks(size).collect()
}

async fn raw_puts(blobs: &BlobStore, images: &[Bytes], concurrency: usize) -> anyhow::Result<()> {
    let workers = split(images, concurrency).into_iter().map(|part| async move {
        for image in part {
            blobs
                .put(
                    &format!("bench-raw/bench-site/{}/{}.jpg", Utc::now().format("%Y-%m-%d"), Uuid::now_v7()),
                    image.clone(),
                    "image/jpeg",
                )
                .await?;
        }
        anyhow::Ok(())
    });
    futures::future::try_join_all(workers).await?;
    Ok(())
}

/// An agent session after its welcome, with the messages it will send.
struct OpenSession {
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::ControlMessage>,
    messages: Vec<pb::AgentMessage>,
    captures: usize,
}

/// Opens one agent session (hello, welcome) and builds its capture messages.
async fn open_session(url: &str, index: usize, images: &[Bytes]) -> anyhow::Result<OpenSession> {
    use pb::agent_message::Body as In;
    use pb::control_message::Body as Out;
    use sha2::Digest;
    let mut client = pb::agent_gateway_client::AgentGatewayClient::connect(url.to_owned())
        .await
        .context("connecting to the gateway")?
        .max_encoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(32);
    let hello = pb::Hello {
        protocol_version: pb::PROTOCOL_VERSION,
        agent_id: format!("bench-agent-{index}"),
        site_id: "bench-site".to_owned(),
        software_version: "bench".to_owned(),
        config_version: 0,
        wants_heartbeat_acks: false,
        local_config: String::new(),
    };
    tx.send(pb::AgentMessage { body: Some(In::Hello(hello)) }).await?;
    let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
    let chunk = match inbound.message().await? {
        Some(pb::ControlMessage { body: Some(Out::Welcome(w)) }) => w.max_chunk_bytes.max(1) as usize,
        other => bail!("expected welcome, got {other:?}"),
    };
    let messages: Vec<Vec<pb::AgentMessage>> = images
        .iter()
        .map(|image| {
            let now = std::time::SystemTime::now();
            let id = Uuid::now_v7().to_string();
            let meta = pb::CaptureMeta {
                capture_id: id.clone(),
                site_id: "bench-site".to_owned(),
                lane: 1,
                captured_at: Some(now.into()),
                vehicle_class: pb::VehicleClass::Car as i32,
                occupancy: Some(pb::Occupancy::default()),
                speed_kmh: None,
                height_m: 1.5,
                width_m: 1.8,
                camera_id: "front".to_owned(),
                detected_at: Some(now.into()),
                config_version: 0,
                test: false,
                traceparent: String::new(),
            };
            let start = In::CaptureStart(pb::CaptureStart {
                meta: Some(meta),
                image_size_bytes: image.len() as u64,
                image_sha256: sha2::Sha256::digest(image).to_vec(),
                image_content_type: "image/jpeg".to_owned(),
            });
            std::iter::once(start)
                .chain((0..image.len()).step_by(chunk).map(|offset| {
                    In::CaptureChunk(pb::CaptureChunk {
                        capture_id: id.clone(),
                        offset: offset as u64,
                        data: image.slice(offset..(offset + chunk).min(image.len())),
                    })
                }))
                .map(|body| pb::AgentMessage { body: Some(body) })
                .collect()
        })
        .collect();
    Ok(OpenSession {
        tx,
        inbound,
        messages: messages.into_iter().flatten().collect(),
        captures: images.len(),
    })
}

/// Sends every capture of an opened session back to back, then waits for all acks.
async fn upload_session(session: OpenSession) -> anyhow::Result<()> {
    use pb::control_message::Body as Out;
    let OpenSession { tx, mut inbound, messages, captures } = session;
    let sender = tokio::spawn(async move {
        for message in messages {
            if tx.send(message).await.is_err() {
                break;
            }
        }
        tx // held open until every ack is in
    });
    let mut acked = 0;
    while acked < captures {
        match inbound.message().await? {
            Some(pb::ControlMessage { body: Some(Out::CaptureAck(ack)) }) => {
                if ack.outcome() != pb::AckOutcome::Stored {
                    bail!("capture {} acked as {:?}", ack.capture_id, ack.outcome());
                }
                acked += 1;
            }
            Some(_) => {}
            None => bail!("session ended after {acked} of {captures} acks"),
        }
    }
    drop(sender.await?);
    Ok(())
}

// ---- seaweedfs ----

const WEED_KEY: &str = "lanewatch-bench";
const WEED_SECRET: &str = "lanewatch-bench-secret";

/// A SeaweedFS server (master, volume, filer, S3) on 127.0.0.1 with free ports and telemetry
/// off, its data in a temp directory; killed and removed when dropped.
struct Weed {
    child: std::process::Child,
    dir: PathBuf,
    endpoint: String,
}

impl Weed {
    fn start(weed: &Path) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("lanewatch-bench-weed-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(dir.join("data"))?;
        let iam = serde_json::json!({
            "identities": [{
                "name": "lanewatch",
                "credentials": [{ "accessKey": WEED_KEY, "secretKey": WEED_SECRET }],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]
            }]
        });
        std::fs::write(dir.join("s3.json"), iam.to_string())?;
        let ports = free_ports(8)?;
        let log = std::fs::File::create(dir.join("weed.log"))?;
        let child = std::process::Command::new(weed)
            .arg("server")
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-dir={}", dir.join("data").display()))
            .arg(format!("-master.port={}", ports[0]))
            .arg(format!("-master.port.grpc={}", ports[1]))
            .arg(format!("-volume.port={}", ports[2]))
            .arg(format!("-volume.port.grpc={}", ports[3]))
            .arg("-filer")
            .arg(format!("-filer.port={}", ports[4]))
            .arg(format!("-filer.port.grpc={}", ports[5]))
            .arg("-s3")
            .arg(format!("-s3.port={}", ports[6]))
            .arg(format!("-s3.port.grpc={}", ports[7]))
            // its Iceberg and Lance listeners default to fixed ports (8181, 9101): off, or two
            // servers started side by side collide
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", dir.join("s3.json").display()))
            .arg("-master.telemetry=false")
            .arg("-master.volumeSizeLimitMB=1024")
            .arg("-volume.max=8")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", weed.display()))?;
        let mut server = Self { child, dir, endpoint: format!("http://127.0.0.1:{}", ports[6]) };
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = ("127.0.0.1", ports[6]);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("seaweedfs exited with {status}; log in {}", server.dir.display());
            }
            if Instant::now() > deadline {
                bail!("seaweedfs s3 gateway not up within 60s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // the gateway listens before the filer has registered with the master
        std::thread::sleep(Duration::from_millis(1500));
        Ok(server)
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    // hold every listener until all ports are chosen so that no two are the same
    let listeners = (0..n).map(|_| StdListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

// ---- report ----

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

fn print_table(report: &serde_json::Value) {
    let Some(fields) = report.as_object() else { return };
    let width = fields.keys().map(String::len).max().unwrap_or(0);
    println!("{:<width$}  value", "measure");
    for (key, value) in fields {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("{key:<width$}  {value}");
    }
}

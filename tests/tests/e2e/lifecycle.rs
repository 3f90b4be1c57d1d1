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

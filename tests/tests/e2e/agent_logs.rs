//! An agent's logs read remotely through `lanewatch logs` (the `agentLogs` query) on real
//! binaries: filters by level, target and text, JSON, clear errors for a bad level, an unknown
//! agent and a role that may not read them, and `--follow`, which prints the lines the agent
//! writes after it started (and ends, with an error, when the agent's session does).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db, Proc, bin};
use serde_json::{Value, json};

use crate::cli::{ok, refused};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanewatch_logs_reads_filters_and_follows_an_agents_log() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let admin = cp.create_admin_key()?;
    let operator = cp.create_key(&admin, "OPERATOR").await?;
    let agency = cp.create_key(&admin, "AGENCY").await?;
    let agent = AgentBuilder::new(&cp, "site-logs").start()?;
    // the uplink logs "session open" once its session is up
    cp.wait_for("the session open line", || async {
        let data = cp
            .graphql(
                "query($id: ID!) { agentLogs(agentId: $id, grep: \"session open\") { lines { seq } } }",
                json!({ "id": agent.id }),
            )
            .await;
        Ok(data.ok().filter(|d| d["agentLogs"]["lines"].as_array().is_some_and(|l| !l.is_empty())))
    })
    .await?;

    let text = ok(&cp, &operator, &["logs", &agent.id, "--grep", "SESSION OPEN"])?;
    let line = text.lines().next().context("a line")?;
    assert!(line.contains(" INFO lanewatch_edge_agent::uplink: session open session_id="), "{text}");
    let warnings = ok(&cp, &operator, &["logs", &agent.id, "--grep", "session open", "--level", "warn"])?;
    assert!(warnings.is_empty(), "info lines are below warn: {warnings}");
    let other = ok(
        &cp,
        &operator,
        &["logs", &agent.id, "--grep", "session open", "--target", "lanewatch_edge_agent::camera"],
    )?;
    assert!(other.is_empty(), "{other}");
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    assert!(ok(&cp, &operator, &["logs", &agent.id, "--since", &future])?.is_empty());

    let page: Value =
        serde_json::from_str(&ok(&cp, &operator, &["logs", &agent.id, "--limit", "2", "--json"])?)?;
    let lines = page["lines"].as_array().context("lines")?;
    assert_eq!(lines.len(), 2, "{page}");
    assert_eq!(page["truncated"], true, "an agent that started has logged more than 2 lines: {page}");
    assert!(lines[0]["seq"].as_u64() < lines[1]["seq"].as_u64(), "oldest first: {page}");
    assert_eq!(lines[1]["seq"], page["lastSeq"], "{page}");

    refused(&cp, Some(&operator), &["logs", &agent.id, "--level", "loud"], "unknown log level \"loud\"")?;
    refused(&cp, Some(&operator), &["logs", "agent-nobody"], "no agent with id \"agent-nobody\"")?;
    refused(&cp, Some(&agency), &["logs", &agent.id], "permission denied: role agency")?;
    refused(&cp, Some(&operator), &["logs", &agent.id, "--since", "soon"], "write e.g. 30s, 10m or 1h 30m")?;

    // --follow prints the newest line, then what comes after: a restart of a component is
    // logged by the supervisor (restarting the uplink would end the session, and the follow)
    let trigger = cp.wait_running(&agent.id, "trigger").await?;
    ok(&cp, &operator, &["exec", &agent.id, "restart", &trigger])?;
    let dir = tempfile::tempdir()?;
    let url = cp.http_url("");
    let mut follower = Proc::spawn(
        "lanewatch-logs",
        Command::new(bin("lanewatch")).args([
            "logs",
            &agent.id,
            "--follow",
            "--json",
            "--limit",
            "1",
            "--target",
            "lanewatch_edge_agent::supervisor",
            "--grep",
            "restart requested",
            "--url",
            url.trim_end_matches('/'),
            "--api-key",
            &operator,
        ]),
        dir.path(),
    )?;
    let followed = |proc: &Proc| -> Vec<Value> {
        std::fs::read_to_string(&proc.stdout_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let first = cp
        .wait_for("the follower's first line", || async { Ok(followed(&follower).first().cloned()) })
        .await?;
    assert_eq!(first["message"], "restart requested", "{first}");
    ok(&cp, &operator, &["exec", &agent.id, "restart", &trigger])?;
    let next = cp
        .wait_for("a followed restart line", || async {
            Ok(followed(&follower).into_iter().find(|l| l["seq"].as_u64() > first["seq"].as_u64()))
        })
        .await?;
    assert_eq!(next["message"], "restart requested", "{next}");
    assert_eq!(next["target"], "lanewatch_edge_agent::supervisor", "{next}");
    assert!(next["fields"].to_string().contains(&trigger), "{next}");
    assert!(follower.try_status().is_none(), "the follower keeps following: {}", follower.stderr());
    follower.terminate(Duration::from_secs(10))?;
    Ok(())
}

//! Component history on real binaries: the agent's heartbeats become history that
//! `lanewatch history` prints as a timeline (and `--json`), and `fleetComponents` answers from
//! each component's newest sample; a component restart shows in both, and both still answer
//! after the agent went offline. Clear errors for an unknown agent, a role that may not read
//! the fleet, a bad `--since` and a range over 31 days.

use std::time::Duration;

use anyhow::{Context, Result};
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db};
use serde_json::{Value, json};

use crate::cli::{ok, refused};

const HISTORY: &str = "query($a: ID!, $c: String!, $from: DateTime!, $to: DateTime!) {
  componentHistory(agentId: $a, component: $c, from: $from, to: $to) {
    points { at resolution status restarts restartsAdded } summary { samples restarts lastStatus } } }";

const FLEET: &str = "query($f: FleetComponentFilter) {
  fleetComponents(filter: $f) { agentId site agentOnline component status restarts lastRestartAt } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanewatch_history_reads_an_agents_components_also_after_it_went_offline() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let admin = cp.create_admin_key()?;
    let operator = cp.create_key(&admin, "OPERATOR").await?;
    let agency = cp.create_key(&admin, "AGENCY").await?;
    let mut agent = AgentBuilder::new(&cp, "site-history").start()?;
    let trigger = cp.wait_running(&agent.id, "trigger").await?;
    let since = chrono::Utc::now() - chrono::Duration::minutes(5);
    let history = || async {
        let vars = json!({ "a": agent.id, "c": trigger, "from": since.to_rfc3339(),
            "to": (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339() });
        cp.graphql(HISTORY, vars).await.map(|d| d["componentHistory"].clone())
    };
    // the trigger's history has begun (restarts 0); a restart is in it once it runs again
    cp.wait_for("the trigger's first sample", || async {
        let h = history().await?;
        Ok(h["points"].as_array().is_some_and(|p| !p.is_empty()).then_some(()))
    })
    .await?;
    ok(&cp, &operator, &["exec", &agent.id, "restart", &trigger])?;
    let seen = cp
        .wait_for("the restart in the trigger's history", || async {
            let h = history().await?;
            let restarted = h["summary"]["restarts"].as_u64().is_some_and(|r| r >= 1);
            Ok((restarted && h["summary"]["lastStatus"] == "RUNNING").then_some(h))
        })
        .await?;
    let points = seen["points"].as_array().context("points")?;
    assert!(points.iter().all(|p| p["resolution"] == "RAW"), "minutes old: raw samples: {seen}");
    assert!(points.iter().any(|p| p["restartsAdded"].as_u64() >= Some(1)), "{seen}");

    // the CLI's timeline and summary
    let text = ok(&cp, &operator, &["history", &agent.id, &trigger, "--since", "10m"])?;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with(&format!("{trigger} on {}, ", agent.id)), "{text}");
    for column in ["FROM", "TO", "STATUS", "RESTARTS", "PROCESSED", "INBOX", "SAMPLES", "RESOLUTION"] {
        assert!(lines[1].contains(column), "{text}");
    }
    assert!(lines.iter().any(|l| l.contains("  running  ") && l.ends_with("raw")), "{text}");
    let summary = lines.last().context("a summary")?;
    assert!(summary.starts_with("summary: ") && summary.contains("; restarted "), "{text}");
    let answer: Value = serde_json::from_str(&ok(&cp, &admin, &["history", &agent.id, &trigger, "--json"])?)?;
    assert!(answer["summary"]["restarts"].as_u64() >= Some(1), "{answer}");
    assert_eq!(answer["component"], trigger.as_str(), "{answer}");

    // the fleet's newest states: the trigger restarted and runs
    let fleet = cp.graphql(FLEET, json!({ "f": { "name": trigger, "site": "site-history" } })).await?;
    let row = &fleet["fleetComponents"][0];
    assert_eq!((&row["agentId"], &row["agentOnline"]), (&json!(agent.id), &json!(true)), "{fleet}");
    assert_eq!(row["status"], "RUNNING", "{fleet}");
    assert!(row["restarts"].as_u64() >= Some(1) && row["lastRestartAt"].is_string(), "{fleet}");
    let stalled = cp.graphql(FLEET, json!({ "f": { "name": trigger, "status": "NOT_RUNNING" } })).await?;
    assert_eq!(stalled["fleetComponents"], json!([]), "{stalled}");

    // offline: the history stays readable, and the fleet shows what the agent reported last
    agent.proc.terminate(Duration::from_secs(20))?;
    cp.wait_offline(&agent.id).await?;
    let after = history().await?;
    let (before_n, after_n) = (points.len(), after["points"].as_array().map_or(0, Vec::len));
    assert!(after_n >= before_n, "the history is kept: {before_n} points, then {after_n}");
    let text = ok(&cp, &operator, &["history", &agent.id, &trigger, "--since", "10m"])?;
    assert!(text.lines().last().is_some_and(|l| l.starts_with("summary: ")), "{text}");
    let fleet = cp.graphql(FLEET, json!({ "f": { "name": trigger } })).await?;
    assert_eq!(fleet["fleetComponents"][0]["agentOnline"], false, "{fleet}");
    assert!(fleet["fleetComponents"][0]["restarts"].as_u64() >= Some(1), "{fleet}");

    refused(
        &cp,
        Some(&operator),
        &["history", "agent-nobody", "uplink"],
        "no agent with id \"agent-nobody\"",
    )?;
    refused(&cp, Some(&agency), &["history", &agent.id, "uplink"], "permission denied: role agency")?;
    refused(
        &cp,
        Some(&operator),
        &["history", &agent.id, "uplink", "--since", "soon"],
        "write e.g. 30s, 10m",
    )?;
    refused(
        &cp,
        Some(&operator),
        &["history", &agent.id, "uplink", "--since", "40d"],
        "longer than 31 days",
    )?;
    Ok(())
}

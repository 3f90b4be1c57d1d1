//! The `lanewatch` command line against a real control plane and agent: `agents`, `inspect`
//! and `captures`, as tables and as `--json`, and the clear errors and non-zero exits of an
//! unknown agent or component, an offline agent, a refused or missing key, a role that may not
//! read the fleet, bad arguments and an unreachable control plane.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result};
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db, run_to_exit_with_stdout};
use serde_json::Value;

/// Runs `lanewatch ARGS --url URL [--api-key KEY]`.
pub(crate) fn lanewatch(
    cp: &ControlPlane,
    key: Option<&str>,
    args: &[&str],
) -> Result<(ExitStatus, String, String)> {
    let url = cp.http_url("");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--url", url.trim_end_matches('/')]);
    if let Some(key) = key {
        all.extend(["--api-key", key]);
    }
    run_to_exit_with_stdout("lanewatch", &all, Duration::from_secs(30))
}

/// A command that must succeed; its stdout.
pub(crate) fn ok(cp: &ControlPlane, key: &str, args: &[&str]) -> Result<String> {
    let (status, stdout, stderr) = lanewatch(cp, Some(key), args)?;
    assert!(status.success(), "lanewatch {args:?} exits 0: {status}\n{stdout}\n{stderr}");
    Ok(stdout)
}

/// A command that must fail; its stderr, which must contain `expected`.
pub(crate) fn refused(cp: &ControlPlane, key: Option<&str>, args: &[&str], expected: &str) -> Result<String> {
    let (status, stdout, stderr) = lanewatch(cp, key, args)?;
    assert!(!status.success(), "lanewatch {args:?} must fail:\n{stdout}");
    assert!(stderr.contains(expected), "lanewatch {args:?} says `{expected}`:\n{stderr}");
    Ok(stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_the_fleet_inspects_an_agent_and_lists_captures() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let admin = cp.create_admin_key()?;
    let mut agent = AgentBuilder::new(&cp, "site-cli").flow(2500).start()?;
    cp.wait_for("two captures", || async { Ok((cp.all_captures().await?.len() >= 2).then_some(())) }).await?;

    // agents: a table, and the API's answer with --json
    let table = ok(&cp, &admin, &["agents"])?;
    let header = table.lines().next().context("a header")?;
    for column in ["AGENT", "SITE", "ONLINE", "HEALTH", "VERSION", "CONFIG", "BUFFERED", "LAST SEEN"] {
        assert!(header.contains(column), "{table}");
    }
    let row = table.lines().find(|l| l.starts_with(&agent.id)).with_context(|| format!("a row:\n{table}"))?;
    assert!(row.contains("site-cli") && row.contains(" yes "), "{row}");
    let agents: Value = serde_json::from_str(&ok(&cp, &admin, &["agents", "--json"])?)?;
    assert_eq!(agents[0]["id"], agent.id.as_str(), "{agents}");
    assert_eq!(agents[0]["online"], true, "{agents}");

    // inspect: the live state as a tree, one component as JSON with its typed state
    let tree = ok(&cp, &admin, &["inspect", &agent.id])?;
    for expected in [
        "components:",
        "- uplink",
        "status: RUNNING",
        "kind: uplink",
        "acked: ",
        "site: site-cli",
        "process:",
        "rssBytes: ",
    ] {
        assert!(tree.contains(expected), "`{expected}` in:\n{tree}");
    }
    let uplink: Value = serde_json::from_str(&ok(&cp, &admin, &["inspect", &agent.id, "uplink", "--json"])?)?;
    assert_eq!(uplink["name"], "uplink", "{uplink}");
    assert_eq!(uplink["state"]["kind"], "uplink", "{uplink}");
    assert_eq!(uplink["state"]["link"], "CONNECTED", "{uplink}");
    assert!(uplink["state"]["acked"].as_u64().is_some_and(|n| n >= 1), "{uplink}");
    let stderr = refused(&cp, Some(&admin), &["inspect", &agent.id, "nope"], "has no component \"nope\"")?;
    assert!(stderr.contains("uplink"), "the error lists the components: {stderr}");
    refused(&cp, Some(&admin), &["inspect", "agent-nobody"], "no agent with id \"agent-nobody\"")?;

    // captures: filtered, limited, as JSON
    let captures: Value = serde_json::from_str(&ok(
        &cp,
        &admin,
        &["captures", "--site", "site-cli", "--limit", "2", "--json"],
    )?)?;
    let captures = captures.as_array().context("an array")?;
    assert_eq!(captures.len(), 2, "{captures:?}");
    assert!(captures.iter().all(|c| c["site"] == "site-cli" && c["decision"] == "UNKNOWN"), "{captures:?}");
    let table = ok(&cp, &admin, &["captures", "--decision", "unknown", "--limit", "1"])?;
    assert!(table.starts_with("CAPTURED AT") && table.contains("site-cli"), "{table}");
    assert!(table.contains("--limit shows more"), "{table}");
    refused(&cp, Some(&admin), &["captures", "--decision", "maybe"], "unknown decision \"MAYBE\"")?;
    refused(&cp, Some(&admin), &["captures", "--limit", "0"], "--limit must be between 1 and 500")?;

    // keys and roles: a refused key, and an agency (which may not read the fleet)
    refused(&cp, Some("lw_nope_00"), &["agents"], "refused the API key")?;
    let agency_key = cp.create_key(&admin, "AGENCY").await?;
    refused(&cp, Some(&agency_key), &["agents"], "permission denied")?;
    refused(&cp, Some(&agency_key), &["inspect", &agent.id], "permission denied")?;

    // an offline agent cannot be inspected live, and says so; the fleet table still lists it
    let status = agent.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    cp.wait_offline(&agent.id).await?;
    refused(&cp, Some(&admin), &["inspect", &agent.id], "offline")?;
    let table = ok(&cp, &admin, &["agents"])?;
    let row = table.lines().find(|l| l.starts_with(&agent.id)).context("still listed")?;
    assert!(row.contains(" no "), "{row}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_says_when_it_needs_a_key_or_cannot_reach_the_control_plane() -> Result<()> {
    let cp = ControlPlane::start_with(Db::Sqlite, Blob::Local, "\n[auth]\nallow_anonymous_local = false\n")
        .await?;
    refused(&cp, None, &["agents"], "wants an API key: pass --api-key or set LANEWATCH_API_KEY")?;
    // a port bound for the whole test but never listening: connecting is refused, and no
    // other process can take it meanwhile
    let reserved = tokio::net::TcpSocket::new_v4()?;
    reserved.bind("127.0.0.1:0".parse()?)?;
    let url = format!("http://{}", reserved.local_addr()?);
    let (status, _, stderr) = run_to_exit_with_stdout(
        "lanewatch",
        &["agents", "--url", &url, "--api-key", "lw_x_y"],
        Duration::from_secs(30),
    )?;
    assert!(!status.success());
    assert!(stderr.contains("cannot reach the control plane at http://127.0.0.1:"), "{stderr}");
    Ok(())
}

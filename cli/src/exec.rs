//! `lanewatch exec AGENT …`: the commands an operator sends to an agent over its session —
//! restart, pause and resume a component, set the log filter for a while, take a test capture
//! on a camera — and `lanewatch diagnose AGENT`, which runs the agent's checks of its site. Each is authorized (operators and
//! admins), audited, and idempotent by its command id (`--command-id`).

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::api::Api;

/// One command as the CLI names it, with the mutation that sends it.
pub enum Exec<'a> {
    Restart {
        component: &'a str,
    },
    Pause {
        component: &'a str,
    },
    Resume {
        component: &'a str,
    },
    LogFilter {
        filter: &'a str,
        for_secs: u64,
    },
    /// A test capture on `camera`; then waits up to `wait` for it to be stored (zero: no wait).
    TestCapture {
        camera: &'a str,
        wait: std::time::Duration,
    },
}

const PAUSE: &str = "mutation($agent: ID!, $component: String!, $id: ID) {
  pauseComponent(agentId: $agent, component: $component, commandId: $id) { commandId message } }";
const RESUME: &str = "mutation($agent: ID!, $component: String!, $id: ID) {
  resumeComponent(agentId: $agent, component: $component, commandId: $id) { commandId message } }";
const LOG_FILTER: &str = "mutation($agent: ID!, $filter: String!, $for: Int!, $id: ID) {
  setAgentLogFilter(agentId: $agent, filter: $filter, forSecs: $for, commandId: $id) { commandId message } }";

const TEST_CAPTURE: &str = "mutation($agent: ID!, $camera: String!, $id: ID) {
  triggerTestCapture(agentId: $agent, camera: $camera, commandId: $id) { commandId message captureId } }";
const CAPTURE: &str = "query($id: ID!) { capture(id: $id) {
  id site lane cameraId capturedAt decision modelVersion occupancy { status occupants } sections { section occupants } imageUrl } }";

const DIAGNOSE: &str = "mutation($agent: ID!, $id: ID) {
  runDiagnostics(agentId: $agent, commandId: $id) { commandId message ok checks { name ok message } } }";

/// Runs the agent's diagnostics and prints each check; fails (exit 1) when one did not pass.
pub async fn diagnose(api: &Api, agent_id: &str, command_id: Option<&str>, as_json: bool) -> Result<()> {
    let data = api.query(DIAGNOSE, json!({ "agent": agent_id, "id": command_id })).await?;
    let report = &data["runDiagnostics"];
    if as_json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        let checks = report["checks"].as_array().cloned().unwrap_or_default();
        let width = checks.iter().filter_map(|c| c["name"].as_str()).map(str::len).max().unwrap_or(0);
        for c in &checks {
            let mark = if c["ok"] == true { "ok  " } else { "FAIL" };
            println!(
                "{mark} {:<width$}  {}",
                c["name"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            );
        }
        println!("{agent_id}: {}", report["message"].as_str().unwrap_or(""));
    }
    if report["ok"] != true {
        bail!("{agent_id}: {}", report["message"].as_str().unwrap_or("a check failed"));
    }
    Ok(())
}

/// Sends `exec` to `agent_id` and prints the agent's answer.
pub async fn run(
    api: &Api,
    agent_id: &str,
    exec: Exec<'_>,
    command_id: Option<&str>,
    as_json: bool,
) -> Result<()> {
    let result = match exec {
        Exec::Restart { component } => {
            crate::fleet::restart_component(api, agent_id, component, command_id).await?
        }
        Exec::Pause { component } => {
            let vars = json!({ "agent": agent_id, "component": component, "id": command_id });
            api.query(PAUSE, vars).await?["pauseComponent"].clone()
        }
        Exec::Resume { component } => {
            let vars = json!({ "agent": agent_id, "component": component, "id": command_id });
            api.query(RESUME, vars).await?["resumeComponent"].clone()
        }
        Exec::LogFilter { filter, for_secs } => {
            let vars = json!({ "agent": agent_id, "filter": filter, "for": for_secs, "id": command_id });
            api.query(LOG_FILTER, vars).await?["setAgentLogFilter"].clone()
        }
        Exec::TestCapture { camera, wait } => {
            let vars = json!({ "agent": agent_id, "camera": camera, "id": command_id });
            let mut result = api.query(TEST_CAPTURE, vars).await?["triggerTestCapture"].clone();
            if !wait.is_zero() {
                let id = result["captureId"].as_str().unwrap_or_default().to_owned();
                if !as_json {
                    println!("{agent_id}: {}; waiting for it to be stored", text(&result["message"]));
                }
                result["capture"] = stored(api, agent_id, &id, wait).await?;
                if !as_json {
                    let c = &result["capture"];
                    println!(
                        "stored: capture {} decision {} occupants {} image {}",
                        text(&c["id"]),
                        text(&c["decision"]),
                        c["occupancy"]["occupants"].as_u64().map_or("-".into(), |n| n.to_string()),
                        text(&c["imageUrl"])
                    );
                    return Ok(());
                }
            }
            result
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("{agent_id}: {} (command {})", text(&result["message"]), text(&result["commandId"]));
    }
    Ok(())
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_owned()
}

/// Asks for capture `id` every half second until the control plane has it, for at most `wait`.
async fn stored(api: &Api, agent_id: &str, id: &str, wait: std::time::Duration) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let capture = api.query(CAPTURE, json!({ "id": id })).await?["capture"].clone();
        if !capture.is_null() {
            return Ok(capture);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "test capture {id} was not stored within {} s: {agent_id} keeps it in its buffer until \
                 its uplink delivers it (is the uplink paused, or the agent offline?), unless vision \
                 quarantined it (a face it could not mask: see `lanewatch logs {agent_id} --grep quarantined`)",
                wait.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

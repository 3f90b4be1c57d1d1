//! `lanewatch exec AGENT …`: the commands an operator sends to an agent over its session —
//! restart, pause and resume a component, set the log filter for a while — and `lanewatch
//! diagnose AGENT`, which runs the agent's checks of its site. Each is authorized (operators and
//! admins), audited, and idempotent by its command id (`--command-id`).

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::api::Api;

/// One command as the CLI names it, with the mutation that sends it.
pub enum Exec<'a> {
    Restart { component: &'a str },
    Pause { component: &'a str },
    Resume { component: &'a str },
    LogFilter { filter: &'a str, for_secs: u64 },
}

const PAUSE: &str = "mutation($agent: ID!, $component: String!, $id: ID) {
  pauseComponent(agentId: $agent, component: $component, commandId: $id) { commandId message } }";
const RESUME: &str = "mutation($agent: ID!, $component: String!, $id: ID) {
  resumeComponent(agentId: $agent, component: $component, commandId: $id) { commandId message } }";
const LOG_FILTER: &str = "mutation($agent: ID!, $filter: String!, $for: Int!, $id: ID) {
  setAgentLogFilter(agentId: $agent, filter: $filter, forSecs: $for, commandId: $id) { commandId message } }";

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
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
        println!("{agent_id}: {} (command {})", text(&result["message"]), text(&result["commandId"]));
    }
    Ok(())
}

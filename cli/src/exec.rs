//! `lanewatch exec AGENT …`: the commands an operator sends to an agent over its session —
//! restart, pause and resume a component, set the log filter for a while. Each is authorized
//! (operators and admins), audited, and idempotent by its command id (`--command-id`).

use anyhow::Result;
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

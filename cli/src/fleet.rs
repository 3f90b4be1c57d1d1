//! The fleet commands over the public GraphQL API: `lanewatch agents` (the fleet as a table),
//! `lanewatch inspect AGENT [COMPONENT]` (an agent's live supervised state, as a readable tree
//! or JSON), `lanewatch captures` (the newest captures, filtered) and the `restartComponent`
//! mutation that `lanewatch exec` and `lanewatch top` send. Each read takes `--json`, which
//! prints the API's answer for scripts instead of the human view.

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::api::{Api, DECISIONS};

const AGENTS: &str =
    "{ agents { id site online health version configVersion bufferedCaptures lastSeen revoked } }";

/// An agent with its live process and components; `lanewatch top` asks it on every refresh.
pub(crate) const INSPECT: &str =
    "query($id: ID!) { agent(id: $id) { id site online health version configVersion
  bufferedCaptures lastSeen revoked revokedReason
  process { cpuSeconds cpuRatio rssBytes threads openFds uptimeSecs bufferVolumeFreeBytes
    bufferVolumeTotalBytes softwareVersion configVersion modelVersion clockOffsetMs clockRoundTripMs }
  components { name status waitingOn memoryBytes restarts processed failed busySeconds busyRatio
    rates { oneMinute { processedPerSec failedPerSec busyRatio } fiveMinutes { processedPerSec failedPerSec busyRatio }
      fifteenMinutes { processedPerSec failedPerSec busyRatio } }
    backoffMs lastFailure lastFailureAt inbox { depth capacity }
    events(last: 10) { at kind message } state { __typename ...State } } } }
fragment State on ComponentState {
  ... on LidarState { source origin framing link degraded secsSinceLastScan lastError telegramsOk
    telegramsMalformed garbageBytes outOfOrder scansMissed reconnects connectFailures sopasErrors }
  ... on DetectorState { learnt degraded degradedScans entries exits speedsMeasured }
  ... on TriggerState { triggersPerCamera { camera count } }
  ... on CameraState { link frames pending stalls stallAfterMs lastFrameAt device droppedFrames testCaptures }
  ... on VisionState { frames faces released quarantined quarantineHeld lastQuarantineReason counted
    unreadable violationCandidates model sessions }
  ... on BufferState { captures bytes maxBytes appended rejected evicted expired damaged receiptsPending }
  ... on UplinkState { link refused sessionId acked
    buffer { captures bytes maxBytes appended rejected evicted expired damaged receiptsPending } } }";

const CAPTURES: &str = "query($first: Int!, $site: String, $decision: Decision) {
  captures(first: $first, site: $site, decision: $decision) { edges { node {
    id agentId site lane capturedAt vehicleClass decision confidence occupancy { status occupants }
    sections { section occupants confidence } imageUrl } } pageInfo { hasNextPage } } }";

pub async fn agents(api: &Api, as_json: bool) -> Result<()> {
    let data = api.query(AGENTS, json!({})).await?;
    let agents = data["agents"].as_array().cloned().unwrap_or_default();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&agents)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let online = match (a["online"].as_bool(), a["revoked"].as_bool()) {
                (_, Some(true)) => "revoked",
                (Some(true), _) => "yes",
                _ => "no",
            };
            vec![
                text(&a["id"]),
                text(&a["site"]),
                online.to_owned(),
                text(&a["health"]).to_lowercase(),
                text(&a["version"]),
                text(&a["configVersion"]),
                text(&a["bufferedCaptures"]),
                time(&a["lastSeen"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["AGENT", "SITE", "ONLINE", "HEALTH", "VERSION", "CONFIG", "BUFFERED", "LAST SEEN"], &rows)
    );
    if agents.is_empty() {
        println!("(no agent has connected yet)");
    }
    Ok(())
}

pub async fn inspect(api: &Api, agent_id: &str, component: Option<&str>, as_json: bool) -> Result<()> {
    let data = api.query(INSPECT, json!({ "id": agent_id })).await?;
    let mut agent = data["agent"].clone();
    if agent.is_null() {
        bail!("no agent with id {agent_id:?} (`lanewatch agents` lists them)");
    }
    // the state's GraphQL type names its kind: `CameraState` reads `kind: camera`
    let mut components = agent["components"].as_array().cloned().unwrap_or_default();
    for c in &mut components {
        if let Some(state) = c["state"].as_object_mut()
            && let Some(Value::String(kind)) = state.remove("__typename")
        {
            let kind = kind.strip_suffix("State").unwrap_or(&kind).to_lowercase();
            let mut typed = serde_json::Map::from_iter([("kind".to_owned(), Value::String(kind))]);
            typed.extend(std::mem::take(state));
            c["state"] = Value::Object(typed);
        }
    }
    if let Some(name) = component {
        let names: Vec<String> = components.iter().map(|c| text(&c["name"])).collect();
        let Some(found) = components.into_iter().find(|c| c["name"] == name) else {
            bail!("agent {agent_id} has no component {name:?}; it has: {}", names.join(", "));
        };
        if as_json {
            println!("{}", serde_json::to_string_pretty(&found)?);
        } else {
            print!("{}", tree(&found, 0));
        }
        return Ok(());
    }
    agent["components"] = Value::Array(components);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&agent)?);
    } else {
        print!("{}", tree(&agent, 0));
    }
    Ok(())
}

pub async fn captures(
    api: &Api,
    site: Option<&str>,
    decision: Option<&str>,
    limit: u32,
    as_json: bool,
) -> Result<()> {
    let decision = decision.map(|d| d.trim().to_uppercase().replace(['-', ' '], "_"));
    if let Some(d) = &decision
        && !DECISIONS.contains(&d.as_str())
    {
        bail!("unknown decision {d:?}; one of: {}", DECISIONS.join(", ").to_lowercase().replace('_', "-"));
    }
    if !(1..=500).contains(&limit) {
        bail!("--limit must be between 1 and 500, got {limit}");
    }
    let data = api.query(CAPTURES, json!({ "first": limit, "site": site, "decision": decision })).await?;
    let captures: Vec<Value> =
        data["captures"]["edges"].as_array().into_iter().flatten().map(|e| e["node"].clone()).collect();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&captures)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = captures
        .iter()
        .map(|c| {
            let occupants = match c["occupancy"]["status"].as_str() {
                Some("COUNTED") => text(&c["occupancy"]["occupants"]),
                Some(other) => other.to_lowercase(),
                None => "?".to_owned(),
            };
            vec![
                time(&c["capturedAt"]),
                text(&c["site"]),
                text(&c["lane"]),
                text(&c["vehicleClass"]).to_lowercase(),
                occupants,
                text(&c["decision"]).to_lowercase().replace('_', " "),
                text(&c["id"]),
            ]
        })
        .collect();
    print!("{}", table(&["CAPTURED AT", "SITE", "LANE", "CLASS", "OCCUPANTS", "DECISION", "ID"], &rows));
    if captures.is_empty() {
        println!("(no capture matches)");
    } else if data["captures"]["pageInfo"]["hasNextPage"] == true {
        println!("(newest {} shown; --limit shows more)", captures.len());
    }
    Ok(())
}

const RESTART: &str = "mutation($agent: ID!, $component: String!, $id: ID) {
  restartComponent(agentId: $agent, component: $component, commandId: $id) { commandId message } }";

/// Sends `restartComponent`; the API's `CommandResult` (`commandId`, the agent's `message`).
pub(crate) async fn restart_component(
    api: &Api,
    agent_id: &str,
    component: &str,
    command_id: Option<&str>,
) -> Result<Value> {
    let data =
        api.query(RESTART, json!({ "agent": agent_id, "component": component, "id": command_id })).await?;
    Ok(data["restartComponent"].clone())
}

/// A scalar as a table cell: strings without quotes, null as `-`.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A timestamp to the second, in UTC (`2026-12-03 14:04:28Z`); other values as [`text`].
fn time(v: &Value) -> String {
    match v.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%SZ").to_string(),
        None => text(v),
    }
}

/// Left-aligned columns, two spaces apart, each as wide as its widest cell.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A JSON value as an indented tree: `key: value` for scalars, nested blocks for the rest;
/// components are headed by their name.
fn tree(v: &Value, depth: usize) -> String {
    let pad = "  ".repeat(depth);
    let mut out = String::new();
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(o) if o.is_empty() => out += &format!("{pad}{k}: {{}}\n"),
                    Value::Array(a) if a.is_empty() => out += &format!("{pad}{k}: []\n"),
                    Value::Object(_) | Value::Array(_) => {
                        out += &format!("{pad}{k}:\n{}", tree(v, depth + 1))
                    }
                    scalar => out += &format!("{pad}{k}: {}\n", text(scalar)),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(o) if o.get("name").is_some_and(Value::is_string) => {
                        let mut rest = o.clone();
                        let name = rest.remove("name").map(|n| text(&n)).unwrap_or_default();
                        out += &format!("{pad}- {name}\n{}", tree(&Value::Object(rest), depth + 1));
                    }
                    Value::Object(_) | Value::Array(_) => {
                        out += &format!("{pad}-\n{}", tree(item, depth + 1))
                    }
                    scalar => out += &format!("{pad}- {}\n", text(scalar)),
                }
            }
        }
        scalar => out += &format!("{pad}{}\n", text(scalar)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_to_the_second_in_utc() {
        assert_eq!(time(&json!("2026-12-03T15:04:28.118383399+01:00")), "2026-12-03 14:04:28Z");
        assert_eq!(time(&json!(null)), "-");
    }

    #[test]
    fn tables_align_their_columns() {
        let rows = vec![vec!["agent-a".to_owned(), "1".to_owned()], vec!["b".to_owned(), "12345".to_owned()]];
        assert_eq!(table(&["ID", "N"], &rows), "ID       N\nagent-a  1\nb        12345\n");
    }

    #[test]
    fn trees_nest_and_name_components() {
        let v = json!({ "id": "a", "components": [{ "name": "uplink", "state": { "acked": 3 }, "restarts": 0 }] });
        assert_eq!(
            tree(&v, 0),
            "components:\n  - uplink\n    restarts: 0\n    state:\n      acked: 3\nid: a\n"
        );
    }
}

//! The fleet overview (every agent with health, online, versions, rollout state, backlog and last
//! seen; sortable and filterable, live) and an agent's page (its live supervision tree, recent
//! logs with a level filter, and the commands of live introspection: restart, pause, resume, a
//! test capture, diagnostics).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::charts;
use super::layout::{self, ago, badge, encode, error_box};
use super::live::{self, Wake};
use super::{Console, Mutating, Viewer, render};

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct AgentRow {
    id: String,
    site: String,
    online: bool,
    last_seen: DateTime<Utc>,
    version: String,
    config_version: i64,
    health: String,
    buffered_captures: i64,
    revoked: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rollout {
    agent_id: String,
    version: i64,
    state: String,
}

#[derive(Deserialize)]
struct SiteRollout {
    version: i64,
    rollout: Vec<Rollout>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FleetData {
    agents: Vec<AgentRow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SiteConfigData {
    site_config: Option<SiteRollout>,
}

/// Filters and order of the overview, from its query string.
#[derive(Deserialize, Default, Clone)]
pub struct FleetFilter {
    /// Text in the agent id, site or version.
    #[serde(default)]
    q: String,
    /// `online`, `offline` or empty for all.
    #[serde(default)]
    status: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    desc: Option<String>,
}

impl FleetFilter {
    fn query_string(&self) -> String {
        format!(
            "q={}&status={}&sort={}{}",
            encode(&self.q),
            encode(&self.status),
            encode(&self.sort),
            if self.desc.is_some() { "&desc=1" } else { "" }
        )
    }
}

const COLUMNS: &[(&str, &str)] = &[
    ("id", "Agent"),
    ("site", "Site"),
    ("health", "Health"),
    ("online", "Online"),
    ("version", "Software"),
    ("config", "Config"),
    ("rollout", "Rollout"),
    ("backlog", "Buffered"),
    ("seen", "Last seen"),
];

struct Row {
    agent: AgentRow,
    /// The site's newest config version and this agent's rollout state of it.
    rollout: Option<(i64, String)>,
}

/// How stale the live overview's rollout column may get without an event.
const ROLLOUT_EVERY: Duration = Duration::from_secs(10);

/// Each agent's rollout state of its site's newest config version: (version, state) by agent.
type Rollouts = std::collections::HashMap<String, (i64, String)>;

async fn agents(console: &Console, viewer: &Viewer) -> Result<Vec<AgentRow>, String> {
    let data: FleetData = console
        .api(
            viewer,
            "{ agents { id site online lastSeen version configVersion health bufferedCaptures revoked } }",
            json!({}),
        )
        .await
        .map_err(|e| e.message)?;
    Ok(data.agents)
}

/// The rollout column: a query per site, so the live view re-reads it only when an event says a
/// config or a session changed.
async fn rollouts(console: &Console, viewer: &Viewer, agents: &[AgentRow]) -> Result<Rollouts, String> {
    let mut sites: Vec<&str> = agents.iter().map(|a| a.site.as_str()).collect();
    sites.sort_unstable();
    sites.dedup();
    let mut rollouts = Rollouts::new();
    for site in sites {
        let config: SiteConfigData = console
            .api(
                viewer,
                "query($s: String!) { siteConfig(siteId: $s) { version rollout { agentId version state } } }",
                json!({ "s": site }),
            )
            .await
            .map_err(|e| e.message)?;
        if let Some(c) = config.site_config {
            for r in c.rollout.into_iter().filter(|r| r.version == c.version) {
                rollouts.insert(r.agent_id, (c.version, r.state));
            }
        }
    }
    Ok(rollouts)
}

/// The table's rows: the agents under the filter, in its order, with their rollout state.
fn rows(agents: Vec<AgentRow>, rollouts: &Rollouts, filter: &FleetFilter) -> Vec<Row> {
    let q = filter.q.to_lowercase();
    let mut rows: Vec<Row> = agents
        .into_iter()
        .filter(|a| {
            q.is_empty()
                || a.id.to_lowercase().contains(&q)
                || a.site.to_lowercase().contains(&q)
                || a.version.to_lowercase().contains(&q)
        })
        .filter(|a| match filter.status.as_str() {
            "online" => a.online,
            "offline" => !a.online,
            _ => true,
        })
        .map(|a| Row { rollout: rollouts.get(&a.id).cloned(), agent: a })
        .collect();
    rows.sort_by(|x, y| {
        let (a, b) = (&x.agent, &y.agent);
        match filter.sort.as_str() {
            "site" => a.site.cmp(&b.site),
            "health" => a.health.cmp(&b.health),
            "online" => a.online.cmp(&b.online),
            "version" => a.version.cmp(&b.version),
            "config" => a.config_version.cmp(&b.config_version),
            "rollout" => x.rollout.as_ref().map(|r| &r.1).cmp(&y.rollout.as_ref().map(|r| &r.1)),
            "backlog" => a.buffered_captures.cmp(&b.buffered_captures),
            "seen" => a.last_seen.cmp(&b.last_seen),
            _ => a.id.cmp(&b.id),
        }
        .then_with(|| a.id.cmp(&b.id))
    });
    if filter.desc.is_some() {
        rows.reverse();
    }
    rows
}

/// The rows of a page load: agents and rollouts read now.
async fn read_rows(console: &Console, viewer: &Viewer, filter: &FleetFilter) -> Result<Vec<Row>, String> {
    let agents = agents(console, viewer).await?;
    let rollouts = rollouts(console, viewer, &agents).await?;
    Ok(rows(agents, &rollouts, filter))
}

fn summary(rows: &[Row]) -> Markup {
    let online = rows.iter().filter(|r| r.agent.online).count();
    let degraded = rows.iter().filter(|r| matches!(r.agent.health.as_str(), "DEGRADED" | "FAILING")).count();
    let backlog: i64 = rows.iter().map(|r| r.agent.buffered_captures).sum();
    html! {
        dl.stats {
            div { dt { "Agents online" } dd { (online) " / " (rows.len()) } }
            div { dt { "Degraded or failing" } dd { (degraded) } }
            div { dt { "Buffered captures" } dd { (backlog) } }
        }
    }
}

fn table_body(rows: &[Row], now: DateTime<Utc>) -> Markup {
    html! {
        @if rows.is_empty() {
            tr { td colspan=(COLUMNS.len()) .muted { "No agents match." } }
        }
        @for r in rows {
            @let a = &r.agent;
            tr data-agent=(a.id) {
                th scope="row" { a href={ "/agents/" (encode(&a.id)) } { (a.id) } }
                td { (a.site) }
                td { (badge(&a.health)) }
                td {
                    @if a.revoked { (badge("REVOKED")) }
                    @else if a.online { (badge("ONLINE")) }
                    @else { (badge("OFFLINE")) }
                }
                td { (a.version) }
                td { "v" (a.config_version) }
                td {
                    @match &r.rollout {
                        Some((v, state)) => { (badge(state)) " v" (v) }
                        None => span.muted { "—" },
                    }
                }
                td.num { (a.buffered_captures) }
                td { (ago(&a.last_seen, now)) }
            }
        }
    }
}

pub async fn overview(
    State(console): State<Console>,
    viewer: Viewer,
    Query(filter): Query<FleetFilter>,
) -> Response {
    let rows = read_rows(&console, &viewer, &filter).await;
    let now = Utc::now();
    let body = html! {
        form.filters method="get" action="/" role="search" {
            label for="q" { "Filter" }
            input #q type="search" name="q" value=(filter.q) placeholder="agent, site or version";
            label for="status" { "Status" }
            select #status name="status" {
                @for (v, l) in [("", "all"), ("online", "online"), ("offline", "offline")] {
                    option value=(v) selected[filter.status == v] { (l) }
                }
            }
            input type="hidden" name="sort" value=(filter.sort);
            button type="submit" { "Apply" }
        }
        @match &rows {
            Err(e) => (error_box(e)),
            Ok(rows) => {
                div hx-ext="sse" sse-connect={ "/live/fleet?" (filter.query_string()) } {
                    div #fleet-summary sse-swap="fleet-summary" { (summary(rows)) }
                    table.data #fleet {
                        caption.sr { "Agents; column headers sort" }
                        thead { tr {
                            @for (key, label) in COLUMNS {
                                @let current = filter.sort == *key || (filter.sort.is_empty() && *key == "id");
                                @let desc = current && filter.desc.is_none();
                                th scope="col" aria-sort=(if !current { "none" } else if filter.desc.is_some() { "descending" } else { "ascending" }) {
                                    a href={ "/?q=" (encode(&filter.q)) "&status=" (encode(&filter.status)) "&sort=" (key) @if desc { "&desc=1" } } { (label) }
                                }
                            }
                        } }
                        tbody sse-swap="fleet" { (table_body(rows, now)) }
                    }
                }
            }
        }
    };
    render(layout::page("Fleet", &viewer, "/", body))
}

pub async fn overview_live(
    State(console): State<Console>,
    viewer: Viewer,
    Query(filter): Query<FleetFilter>,
) -> Response {
    let c = console.clone();
    // agents every period (last seen, backlog); the rollout column (a query per site) when an
    // event woke the view
    let event_seen = Arc::new(AtomicBool::new(true));
    let wake = Wake {
        on_event: live::fleet_event,
        on_jobs: false,
        every: Duration::from_secs(2),
        event_seen: Some(event_seen.clone()),
    };
    // (when read, the column): re-read on an event, and at the latest every ROLLOUT_EVERY, for a
    // state recorded just after the event that woke the view
    let cached: Arc<tokio::sync::Mutex<(Option<tokio::time::Instant>, Rollouts)>> = Arc::default();
    live::stream(&console, wake, move || {
        let (c, viewer, filter) = (c.clone(), viewer.clone(), filter.clone());
        let (event_seen, cached) = (event_seen.clone(), cached.clone());
        async move {
            let result = async {
                let agents = agents(&c, &viewer).await?;
                let mut cached = cached.lock().await;
                let stale = cached.0.is_none_or(|at| at.elapsed() >= ROLLOUT_EVERY);
                if event_seen.swap(false, Ordering::SeqCst) || stale {
                    *cached =
                        (Some(tokio::time::Instant::now()), self::rollouts(&c, &viewer, &agents).await?);
                }
                Ok::<_, String>(rows(agents, &cached.1, &filter))
            }
            .await;
            match result {
                Ok(rows) => vec![
                    ("fleet-summary", summary(&rows).into_string()),
                    ("fleet", table_body(&rows, Utc::now()).into_string()),
                ],
                Err(e) => vec![("fleet-summary", error_box(&e).into_string())],
            }
        }
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentData {
    agent: Option<AgentDetail>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentDetail {
    #[serde(flatten)]
    row: AgentRow,
    revoked_reason: Option<String>,
    components: Vec<ComponentRow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ComponentRow {
    name: String,
    status: String,
    restarts: i64,
    last_failure: Option<String>,
    processed: i64,
    failed: i64,
    inbox: Option<Inbox>,
    busy_ratio: Option<f64>,
    waiting_on: Option<String>,
}

#[derive(Deserialize)]
struct Inbox {
    depth: i64,
    capacity: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogsData {
    agent_logs: Logs,
}

#[derive(Deserialize)]
struct Logs {
    lines: Vec<LogLine>,
}

#[derive(Deserialize)]
struct LogLine {
    at: DateTime<Utc>,
    level: String,
    target: String,
    message: String,
}

#[derive(Deserialize, Default, Clone)]
pub struct AgentQuery {
    /// The lowest log level shown.
    #[serde(default)]
    level: String,
    /// The component whose last hour is charted (the first one when empty).
    #[serde(default)]
    history: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryData {
    component_history: ComponentHistory,
}

#[derive(Deserialize)]
struct ComponentHistory {
    points: Vec<charts::HistoryPoint>,
}

/// A component's last hour as a chart.
async fn history_chart(console: &Console, viewer: &Viewer, id: &str, component: &str) -> Markup {
    let to = Utc::now();
    let from = to - chrono::Duration::hours(1);
    let query = "query($id: ID!, $c: String!, $from: DateTime!, $to: DateTime!) { componentHistory(agentId: $id, \
        component: $c, from: $from, to: $to) { points { at status processed restartsAdded } } }";
    let vars = json!({ "id": id, "c": component, "from": from.to_rfc3339(), "to": to.to_rfc3339() });
    match console.api::<HistoryData>(viewer, query, vars).await {
        Ok(d) => charts::history(component, &d.component_history.points, from, to),
        Err(e) => error_box(&e.message),
    }
}

const AGENT_QUERY: &str = "query($id: ID!) { agent(id: $id) { id site online lastSeen version configVersion health \
    bufferedCaptures revoked revokedReason components { name status restarts lastFailure processed failed \
    inbox { depth capacity } busyRatio waitingOn } } }";

async fn components(console: &Console, viewer: &Viewer, id: &str) -> Result<Option<AgentDetail>, String> {
    let data: AgentData =
        console.api(viewer, AGENT_QUERY, json!({ "id": id })).await.map_err(|e| e.message)?;
    Ok(data.agent)
}

fn components_table(agent: &AgentDetail) -> Markup {
    html! {
        @for c in &agent.components {
            tr data-component=(c.name) {
                th scope="row" { (c.name) }
                td { (badge(&c.status)) }
                td.num { (c.restarts) }
                td.num { @if let Some(i) = &c.inbox { (i.depth) " / " (i.capacity) } @else { "—" } }
                td.num { @if let Some(b) = c.busy_ratio { (format!("{:.0} %", b * 100.0)) } @else { "—" } }
                td.num { (c.processed) }
                td.num { (c.failed) }
                td { @if let Some(w) = &c.waiting_on { (w) } }
                td { @if let Some(f) = &c.last_failure { span.muted { (f) } } }
            }
        }
    }
}

fn agent_header(a: &AgentDetail, now: DateTime<Utc>) -> Markup {
    let r = &a.row;
    html! {
        dl.stats {
            div { dt { "Site" } dd { (r.site) } }
            div { dt { "Health" } dd { (badge(&r.health)) } }
            div { dt { "Session" } dd { @if r.online { (badge("ONLINE")) } @else { (badge("OFFLINE")) } } }
            div { dt { "Software" } dd { (r.version) } }
            div { dt { "Config" } dd { "v" (r.config_version) } }
            div { dt { "Buffered" } dd { (r.buffered_captures) } }
            div { dt { "Last seen" } dd { (ago(&r.last_seen, now)) } }
        }
        @if r.revoked { (error_box(&format!("revoked: {}", a.revoked_reason.as_deref().unwrap_or("no reason given")))) }
    }
}

async fn logs(console: &Console, viewer: &Viewer, id: &str, level: &str) -> Result<Vec<LogLine>, String> {
    let level = if level.is_empty() { serde_json::Value::Null } else { json!(level) };
    let data: LogsData = console
        .api(
            viewer,
            "query($id: ID!, $level: String) { agentLogs(agentId: $id, level: $level, limit: 50) { lines { at level target message } } }",
            json!({ "id": id, "level": level }),
        )
        .await
        .map_err(|e| e.message)?;
    Ok(data.agent_logs.lines)
}

fn logs_list(lines: &[LogLine]) -> Markup {
    html! {
        @if lines.is_empty() { li.muted { "No log lines at this level." } }
        @for l in lines.iter().rev() {
            li class={ "log " (l.level.to_lowercase()) } {
                (layout::time(&l.at)) " " strong { (l.level) } " " span.muted { (l.target) } " " (l.message)
            }
        }
    }
}

pub async fn agent(
    State(console): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<AgentQuery>,
) -> Response {
    let now = Utc::now();
    let detail = components(&console, &viewer, &id).await;
    let body = match detail {
        Err(e) => error_box(&e),
        Ok(None) => error_box(&format!("no agent with id {id}")),
        Ok(Some(a)) => {
            let log_lines = logs(&console, &viewer, &id, &q.level).await;
            let names: Vec<&str> = a.components.iter().map(|c| c.name.as_str()).collect();
            let charted = if q.history.is_empty() {
                names.first().copied().unwrap_or_default()
            } else {
                q.history.as_str()
            };
            let chart = history_chart(&console, &viewer, &id, charted).await;
            html! {
                div hx-ext="sse" sse-connect={ "/live/agents/" (encode(&id)) "?level=" (encode(&q.level)) } {
                    div #agent-header sse-swap="agent-header" { (agent_header(&a, now)) }
                    section aria-labelledby="components-h" {
                        h2 #components-h { "Components" }
                        form.command hx-post={ "/agents/" (encode(&id)) "/command" } hx-target="#command-result" {
                            label for="component" { "Component" }
                            select #component name="component" {
                                @for n in &names { option value=(n) { (n) } }
                            }
                            button name="action" value="restart" type="submit" { "Restart" }
                            button name="action" value="pause" type="submit" { "Pause" }
                            button name="action" value="resume" type="submit" { "Resume" }
                            button name="action" value="diagnostics" type="submit" { "Run diagnostics" }
                        }
                        div #command-result aria-live="polite" {}
                        table.data #components {
                            thead { tr {
                                th scope="col" { "Component" } th scope="col" { "Status" } th scope="col" { "Restarts" }
                                th scope="col" { "Inbox" } th scope="col" { "Busy" } th scope="col" { "Processed" }
                                th scope="col" { "Failed" } th scope="col" { "Waiting on" } th scope="col" { "Last failure" }
                            } }
                            tbody sse-swap="components" { (components_table(&a)) }
                        }
                    }
                    section aria-labelledby="history-h" {
                        h2 #history-h { "History, last hour" }
                        form.filters method="get" {
                            input type="hidden" name="level" value=(q.level);
                            label for="history" { "Component" }
                            select #history name="history" {
                                @for n in &names { option value=(n) selected[*n == charted] { (n) } }
                            }
                            button type="submit" { "Show" }
                        }
                        (chart)
                    }
                    section aria-labelledby="logs-h" {
                        h2 #logs-h { "Recent logs" }
                        form.filters method="get" {
                            label for="level" { "Lowest level" }
                            select #level name="level" {
                                @for l in ["", "ERROR", "WARN", "INFO", "DEBUG"] {
                                    option value=(l) selected[q.level == l] { @if l.is_empty() { "any" } @else { (l) } }
                                }
                            }
                            button type="submit" { "Show" }
                        }
                        @match &log_lines {
                            Err(e) => (error_box(e)),
                            Ok(lines) => ul.logs #logs sse-swap="logs" tabindex="0" aria-label="Recent log lines, newest first" { (logs_list(lines)) },
                        }
                    }
                }
            }
        }
    };
    render(layout::page(&format!("Agent {id}"), &viewer, "/", body))
}

pub async fn agent_live(
    State(console): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<AgentQuery>,
) -> Response {
    let c = console.clone();
    // components come from live introspection, asked of the agent: a short period, so that a
    // restart shows within half a second
    let wake = Wake {
        on_event: live::fleet_event,
        on_jobs: false,
        every: Duration::from_millis(250),
        event_seen: None,
    };
    live::stream(&console, wake, move || {
        let (c, viewer, id, level) = (c.clone(), viewer.clone(), id.clone(), q.level.clone());
        async move {
            let mut out = Vec::new();
            match components(&c, &viewer, &id).await {
                Ok(Some(a)) => {
                    out.push(("agent-header", agent_header(&a, Utc::now()).into_string()));
                    out.push(("components", components_table(&a).into_string()));
                }
                Ok(None) => {
                    out.push(("agent-header", error_box(&format!("no agent with id {id}")).into_string()))
                }
                Err(e) => out.push(("agent-header", error_box(&e).into_string())),
            }
            if let Ok(lines) = logs(&c, &viewer, &id, &level).await {
                out.push(("logs", logs_list(&lines).into_string()));
            }
            out
        }
    })
}

#[derive(Deserialize)]
pub struct CommandForm {
    action: String,
    component: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommandAnswer {
    result: CommandMessage,
}

#[derive(Deserialize)]
struct CommandMessage {
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiagnosticsAnswer {
    run_diagnostics: Diagnostics,
}

#[derive(Deserialize)]
struct Diagnostics {
    ok: bool,
    checks: Vec<Check>,
}

#[derive(Deserialize)]
struct Check {
    name: String,
    ok: bool,
    message: String,
}

pub async fn command(
    State(console): State<Console>,
    Mutating(viewer): Mutating,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CommandForm>,
) -> Response {
    let component = form.component.unwrap_or_default();
    let markup = match form.action.as_str() {
        action @ ("restart" | "pause" | "resume") => {
            let field = format!("{action}Component");
            let query = format!(
                "mutation($id: ID!, $c: String!) {{ result: {field}(agentId: $id, component: $c) {{ message }} }}"
            );
            match console.api::<CommandAnswer>(&viewer, &query, json!({ "id": id, "c": component })).await {
                Ok(a) => layout::ok_box(&a.result.message),
                Err(e) => error_box(&e.message),
            }
        }
        "diagnostics" => {
            let query =
                "mutation($id: ID!) { runDiagnostics(agentId: $id) { ok checks { name ok message } } }";
            match console.api::<DiagnosticsAnswer>(&viewer, query, json!({ "id": id })).await {
                Ok(a) => html! {
                    div class=(if a.run_diagnostics.ok { "ok" } else { "error" }) role="status" {
                        @if a.run_diagnostics.ok { "All checks passed." } @else { "Some checks failed." }
                        ul { @for c in &a.run_diagnostics.checks {
                            li { @if c.ok { "✓ " } @else { "✗ " } strong { (c.name) } ": " (c.message) }
                        } }
                    }
                },
                Err(e) => error_box(&e.message),
            }
        }
        other => error_box(&format!("unknown command {other:?}: restart, pause, resume or diagnostics")),
    };
    render(markup)
}

//! Site configs: the list of sites, and a site's page with its newest agent config in an editor,
//! the validator's error inline (field and line) when a push is refused, the diff of each version
//! against the one before, who changed what, the per-agent rollout of the newest version (live),
//! and rollback to any earlier version. Pushing goes through `updateSiteConfig`, the same
//! validated, audited path as the API and the CLI.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use similar::{ChangeTag, TextDiff};

use super::charts::{self, Hourly};
use super::inputs::opt;
use super::layout::{self, badge, encode, error_box};
use super::live::{self, Wake};
use super::{Console, Mutating, Viewer, render};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Site {
    id: String,
    name: String,
    jurisdiction: Option<String>,
}

#[derive(Deserialize)]
struct SitesData {
    sites: Vec<Site>,
}

pub async fn list(State(console): State<Console>, viewer: Viewer) -> Response {
    let body = match console.api::<SitesData>(&viewer, "{ sites { id name jurisdiction } }", json!({})).await
    {
        Err(e) => error_box(&e.message),
        Ok(d) => html! {
            table.data {
                thead { tr { th scope="col" { "Site" } th scope="col" { "Name" } th scope="col" { "Jurisdiction" } } }
                tbody {
                    @if d.sites.is_empty() { tr { td colspan="3" .muted { "No sites yet: a site appears when its first agent connects." } } }
                    @for s in &d.sites {
                        tr {
                            th scope="row" { a href={ "/sites/" (encode(&s.id)) } { (s.id) } }
                            td { (s.name) }
                            td { (s.jurisdiction.as_deref().unwrap_or("—")) }
                        }
                    }
                }
            }
        },
    };
    render(layout::page("Sites", &viewer, "/sites", body))
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct SiteConfig {
    version: i64,
    toml: String,
    comment: Option<String>,
    rolled_back_from: Option<i64>,
    created_by: String,
    created_at: DateTime<Utc>,
    rollout: Vec<Rollout>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Rollout {
    agent_id: String,
    version: i64,
    state: String,
    error: Option<String>,
    updated_at: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryData {
    site_config_history: Vec<SiteConfig>,
}

const CONFIG_FIELDS: &str = "version toml comment rolledBackFrom createdBy createdAt rollout { agentId version state error updatedAt }";

async fn history(console: &Console, viewer: &Viewer, site: &str) -> Result<Vec<SiteConfig>, String> {
    let query =
        format!("query($s: String!) {{ siteConfigHistory(siteId: $s, first: 20) {{ {CONFIG_FIELDS} }} }}");
    let data: HistoryData = console.api(viewer, &query, json!({ "s": site })).await.map_err(|e| e.message)?;
    Ok(data.site_config_history)
}

fn rollout_table(newest: Option<&SiteConfig>) -> Markup {
    html! {
        @match newest {
            None => p.muted { "No config stored for this site yet: its agents run their local files." },
            Some(c) => table.data #rollout {
                caption { "Rollout of version " (c.version) }
                thead { tr { th scope="col" { "Agent" } th scope="col" { "Version" } th scope="col" { "State" } th scope="col" { "Updated" } th scope="col" { "Error" } } }
                tbody {
                    @if c.rollout.is_empty() { tr { td colspan="5" .muted { "No agent has been offered it yet." } } }
                    @for r in &c.rollout {
                        tr data-agent=(r.agent_id) {
                            th scope="row" { a href={ "/agents/" (encode(&r.agent_id)) } { (r.agent_id) } }
                            td { "v" (r.version) }
                            td { (badge(&r.state)) }
                            td { (layout::time(&r.updated_at)) }
                            td { @if let Some(e) = &r.error { span.error-text { (e) } } }
                        }
                    }
                }
            },
        }
    }
}

/// The unified line diff from `old` to `new`, as a `<pre>` with marked lines.
fn diff(old: &str, new: &str) -> Markup {
    let d = TextDiff::from_lines(old, new);
    html! {
        pre.diff {
            @for change in d.iter_all_changes() {
                @let (class, sign) = match change.tag() {
                    ChangeTag::Delete => ("del", "-"),
                    ChangeTag::Insert => ("ins", "+"),
                    ChangeTag::Equal => ("eq", " "),
                };
                span class=(class) { (sign) " " (change.value().trim_end_matches('\n')) "\n" }
            }
        }
    }
}

fn versions(site: &str, configs: &[SiteConfig]) -> Markup {
    html! {
        @for (i, c) in configs.iter().enumerate() {
            details open[i == 0] {
                summary {
                    "v" (c.version) " · " (c.created_by) " · " (layout::time(&c.created_at))
                    @if let Some(from) = c.rolled_back_from { " · rollback to v" (from) }
                    @if let Some(m) = &c.comment { " · " em { (m) } }
                }
                @if let Some(prev) = configs.get(i + 1) {
                    (diff(&prev.toml, &c.toml))
                } @else {
                    p.muted { "The first stored version." }
                }
                @if i > 0 {
                    form hx-post={ "/sites/" (encode(site)) "/rollback" } hx-target="#push-result" {
                        input type="hidden" name="version" value=(c.version);
                        button type="submit" { "Roll back to v" (c.version) }
                    }
                }
            }
        }
    }
}

fn editor(site: &str, text: &str, error: Option<&str>) -> Markup {
    html! {
        form #config-form hx-post={ "/sites/" (encode(site)) } hx-target="#config-editor" {
            @if let Some(e) = error { (error_box(e)) }
            label for="toml" { "Agent config (TOML)" }
            textarea #toml name="toml" rows="24" spellcheck="false" aria-describedby="toml-help" { (text) }
            p #toml-help .muted { "Validated as the agents validate it; a refused config is not stored." }
            label for="comment" { "Comment" }
            input #comment name="comment" size="60" placeholder="what changed and why";
            button type="submit" { "Validate and push" }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatsData {
    occupancy_stats: Vec<Hourly>,
}

/// The site's last 24 hours as a chart.
async fn day_chart(console: &Console, viewer: &Viewer, site: &str) -> Markup {
    let to = Utc::now();
    let from = to - chrono::Duration::hours(24);
    let query = "query($s: String, $from: DateTime!, $to: DateTime!) { occupancyStats(site: $s, from: $from, to: $to) { \
        hour vehicles occupancy { zero one two threePlus unknown } violations violationRate } }";
    match console
        .api::<StatsData>(
            viewer,
            query,
            json!({ "s": site, "from": from.to_rfc3339(), "to": to.to_rfc3339() }),
        )
        .await
    {
        Ok(d) => charts::hourly(site, &d.occupancy_stats),
        Err(e) => error_box(&e.message),
    }
}

pub async fn site(State(console): State<Console>, viewer: Viewer, Path(site): Path<String>) -> Response {
    let body = match history(&console, &viewer, &site).await {
        Err(e) => error_box(&e),
        Ok(configs) => {
            let text = configs.first().map(|c| c.toml.clone()).unwrap_or_default();
            let chart = day_chart(&console, &viewer, &site).await;
            html! {
                div hx-ext="sse" sse-connect={ "/live/sites/" (encode(&site)) } {
                    section aria-labelledby="day-h" {
                        h2 #day-h { "Last 24 hours" }
                        div #day-chart sse-swap="chart" { (chart) }
                    }
                    section aria-labelledby="rollout-h" {
                        h2 #rollout-h { "Rollout" }
                        div #rollout-live sse-swap="rollout" { (rollout_table(configs.first())) }
                    }
                }
                section aria-labelledby="edit-h" {
                    h2 #edit-h { "Edit" }
                    div #push-result aria-live="polite" {}
                    div #config-editor { (editor(&site, &text, None)) }
                }
                section aria-labelledby="versions-h" {
                    h2 #versions-h { "Versions" }
                    div #versions { (versions(&site, &configs)) }
                }
            }
        }
    };
    render(layout::page(&format!("Site {site}"), &viewer, "/sites", body))
}

pub async fn site_live(State(console): State<Console>, viewer: Viewer, Path(site): Path<String>) -> Response {
    let c = console.clone();
    let wake =
        Wake { on_event: live::site_event, on_jobs: false, every: Duration::from_secs(5), event_seen: None };
    live::stream(&console, wake, move || {
        let (c, viewer, site) = (c.clone(), viewer.clone(), site.clone());
        async move {
            let chart = day_chart(&c, &viewer, &site).await.into_string();
            match history(&c, &viewer, &site).await {
                Ok(configs) => {
                    vec![("rollout", rollout_table(configs.first()).into_string()), ("chart", chart)]
                }
                Err(e) => vec![("rollout", error_box(&e).into_string())],
            }
        }
    })
}

#[derive(Deserialize)]
pub struct PushForm {
    toml: String,
    #[serde(default)]
    comment: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pushed {
    c: SiteConfig,
}

/// Validates and pushes; the editor comes back with the error inline, or with the stored text.
pub async fn push(
    State(console): State<Console>,
    Mutating(viewer): Mutating,
    Path(site): Path<String>,
    axum::Form(form): axum::Form<PushForm>,
) -> Response {
    let query = format!(
        "mutation($s: String!, $t: String!, $m: String) {{ c: updateSiteConfig(siteId: $s, toml: $t, comment: $m) {{ {CONFIG_FIELDS} }} }}"
    );
    match console
        .api::<Pushed>(&viewer, &query, json!({ "s": site, "t": form.toml, "m": opt(&form.comment) }))
        .await
    {
        Ok(p) => render(html! {
            (layout::ok_box(&format!("Stored v{} and pushed it to the site's online agents.", p.c.version)))
            (editor(&site, &p.c.toml, None))
        }),
        Err(e) => render(editor(&site, &form.toml, Some(&e.message))),
    }
}

#[derive(Deserialize)]
pub struct RollbackForm {
    version: i64,
}

pub async fn rollback(
    State(console): State<Console>,
    Mutating(viewer): Mutating,
    Path(site): Path<String>,
    axum::Form(form): axum::Form<RollbackForm>,
) -> Response {
    let query = format!(
        "mutation($s: String!, $v: Int!) {{ c: rollbackSiteConfig(siteId: $s, version: $v, comment: \"console rollback\") {{ {CONFIG_FIELDS} }} }}"
    );
    match console.api::<Pushed>(&viewer, &query, json!({ "s": site, "v": form.version })).await {
        Ok(p) => render(layout::ok_box(&format!(
            "Stored v{} with the content of v{} and pushed it; reload to see it in the editor.",
            p.c.version, form.version
        ))),
        Err(e) => render(error_box(&e.message)),
    }
}

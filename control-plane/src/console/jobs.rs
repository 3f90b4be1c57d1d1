//! The job queue page, with what Oban Web offers: counts by queue × state (live), queue controls
//! (pause, resume, resize, reaching every replica), the job list filtered by queue, state, worker,
//! argument text and time with the exact count under the filter (live; it holds still while
//! jobs are selected), batch retry / cancel / delete, and a job's detail with every attempt's
//! error. Admins and operators only, as in GraphQL, whose mutations audit every action.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::gql::PageInfo;
use super::inputs::{opt, opt_time, query};
use super::layout::{self, badge, encode, error_box};
use super::live::{self, Wake};
use super::{Console, Mutating, Viewer, render};

const STATES: &[&str] =
    &["AVAILABLE", "SCHEDULED", "EXECUTING", "RETRYABLE", "COMPLETED", "DISCARDED", "CANCELLED"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Queue {
    name: String,
    paused: bool,
    local_limit: i64,
    global_limit: Option<i64>,
    counts: Vec<StateCount>,
}

#[derive(Deserialize)]
struct StateCount {
    state: String,
    count: i64,
}

#[derive(Deserialize)]
struct QueuesData {
    queues: Vec<Queue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Job {
    id: String,
    queue: String,
    worker: String,
    args: String,
    state: String,
    priority: i64,
    attempt: i64,
    max_attempts: i64,
    inserted_at: DateTime<Utc>,
    scheduled_at: DateTime<Utc>,
    attempted_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    attempted_by: Option<String>,
    errors: Vec<AttemptError>,
}

#[derive(Deserialize)]
struct AttemptError {
    attempt: i64,
    at: DateTime<Utc>,
    error: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobPage {
    nodes: Vec<Job>,
    total_count: i64,
    page_info: PageInfo,
}

#[derive(Deserialize)]
struct JobsData {
    jobs: JobPage,
}

const JOB_FIELDS: &str = "id queue worker args state priority attempt maxAttempts insertedAt scheduledAt \
    attemptedAt finishedAt attemptedBy errors { attempt at error }";

/// The list's filters, from the query string.
#[derive(Deserialize, Default, Clone)]
pub struct JobFilter {
    #[serde(default)]
    queue: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    worker: String,
    #[serde(default)]
    args: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    after: String,
}

impl JobFilter {
    fn query_string(&self, after: &str) -> String {
        query(&[
            ("queue", &self.queue),
            ("state", &self.state),
            ("worker", &self.worker),
            ("args", &self.args),
            ("from", &self.from),
            ("to", &self.to),
            ("after", after),
        ])
    }
}

async fn queues(console: &Console, viewer: &Viewer) -> Result<Vec<Queue>, String> {
    let data: QueuesData = console
        .api(viewer, "{ queues { name paused localLimit globalLimit counts { state count } } }", json!({}))
        .await
        .map_err(|e| e.message)?;
    Ok(data.queues)
}

async fn jobs(console: &Console, viewer: &Viewer, f: &JobFilter) -> Result<JobPage, String> {
    let query = format!(
        "query($q: String, $s: JobState, $w: String, $a: String, $from: DateTime, $to: DateTime, $after: String) {{ \
         jobs(first: 50, after: $after, queue: $q, state: $s, worker: $w, args: $a, from: $from, to: $to) {{ \
         nodes {{ {JOB_FIELDS} }} totalCount pageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let vars = json!({
        "q": opt(&f.queue), "s": opt(&f.state), "w": opt(&f.worker), "a": opt(&f.args),
        "from": opt_time("from", &f.from)?, "to": opt_time("to", &f.to)?, "after": opt(&f.after),
    });
    let data: JobsData = console.api(viewer, &query, vars).await.map_err(|e| e.message)?;
    Ok(data.jobs)
}

fn counts_table(queues: &[Queue]) -> Markup {
    html! {
        table.data #queue-counts {
            caption.sr { "Jobs per queue and state; a count links to those jobs" }
            thead { tr {
                th scope="col" { "Queue" } th scope="col" { "Limits" }
                @for s in STATES { th scope="col" { (s.to_lowercase()) } }
            } }
            tbody {
                @for q in queues {
                    tr data-queue=(q.name) {
                        th scope="row" { (q.name) @if q.paused { " " (badge("PAUSED")) } }
                        td { (q.local_limit) " local" @if let Some(g) = q.global_limit { ", " (g) " global" } }
                        @for s in STATES {
                            @let n = q.counts.iter().find(|c| c.state == *s).map_or(0, |c| c.count);
                            td.num data-state=(s) {
                                @if n > 0 { a href={ "/jobs?queue=" (encode(&q.name)) "&state=" (s) } { (n) } } @else { span.muted { "0" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn job_rows(page: &JobPage) -> Markup {
    html! {
        p #jobs-total { strong { (page.total_count) } " jobs match" }
        table.data #job-list {
            thead { tr {
                th scope="col" { span.sr { "Select" } }
                th scope="col" { "Id" } th scope="col" { "Queue" } th scope="col" { "Worker" } th scope="col" { "State" }
                th scope="col" { "Attempt" } th scope="col" { "Inserted" } th scope="col" { "Arguments" }
            } }
            tbody {
                @if page.nodes.is_empty() { tr { td colspan="8" .muted { "No jobs match." } } }
                @for j in &page.nodes {
                    tr data-job=(j.id) {
                        td { input type="checkbox" name="ids" value=(j.id) form="batch" aria-label={ "select job " (j.id) }; }
                        th scope="row" { a href={ "/jobs/" (j.id) } { (j.id) } }
                        td { (j.queue) } td { (j.worker) } td { (badge(&j.state)) }
                        td.num { (j.attempt) " / " (j.max_attempts) }
                        td { (layout::time(&j.inserted_at)) }
                        td { code.args { (truncate(&j.args, 120)) } }
                    }
                }
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

pub async fn page(State(console): State<Console>, viewer: Viewer, Query(f): Query<JobFilter>) -> Response {
    let (queues, list) = tokio::join!(queues(&console, &viewer), jobs(&console, &viewer, &f));
    let body = match (queues, list) {
        (Err(e), _) | (_, Err(e)) => error_box(&e),
        (Ok(queues), Ok(list)) => html! {
            div hx-ext="sse" sse-connect={ "/live/jobs?" (f.query_string(&f.after)) } {
                section aria-labelledby="queues-h" {
                    h2 #queues-h { "Queues" }
                    div #queues sse-swap="queues" { (counts_table(&queues)) }
                    form.command #queue-controls hx-post="/queues" hx-target="#queue-result" {
                        label for="queue-name" { "Queue" }
                        select #queue-name name="name" {
                            @for q in &queues { option value=(q.name) { (q.name) } }
                        }
                        button type="submit" name="action" value="pause" { "Pause" }
                        button type="submit" name="action" value="resume" { "Resume" }
                        label for="local" { "Local limit" } input #local name="local_limit" size="3" inputmode="numeric";
                        label for="global" { "Global limit" } input #global name="global_limit" size="3" inputmode="numeric" placeholder="none";
                        button type="submit" name="action" value="resize" { "Resize" }
                    }
                    div #queue-result aria-live="polite" {}
                }
                section aria-labelledby="jobs-h" {
                    h2 #jobs-h { "Jobs" }
                    form.filters method="get" action="/jobs" role="search" {
                        label for="f-queue" { "Queue" }
                        select #f-queue name="queue" {
                            option value="" { "any" }
                            @for q in &queues { option value=(q.name) selected[f.queue == q.name] { (q.name) } }
                        }
                        label for="f-state" { "State" }
                        select #f-state name="state" {
                            option value="" { "any" }
                            @for s in STATES { option value=(s) selected[f.state == *s] { (s.to_lowercase()) } }
                        }
                        label for="f-worker" { "Worker" } input #f-worker name="worker" value=(f.worker) size="14";
                        label for="f-args" { "Arguments contain" } input #f-args name="args" value=(f.args) size="14";
                        label for="f-from" { "From (UTC)" } input #f-from type="datetime-local" name="from" value=(f.from);
                        label for="f-to" { "To (UTC)" } input #f-to type="datetime-local" name="to" value=(f.to);
                        button type="submit" { "Apply" }
                    }
                    form #batch hx-post="/jobs/batch" hx-target="#batch-result" {
                        span { "Selected jobs: " }
                        button type="submit" name="action" value="retry" { "Retry" }
                        button type="submit" name="action" value="cancel" { "Cancel" }
                        button type="submit" name="action" value="delete" { "Delete" }
                    }
                    div #batch-result aria-live="polite" {}
                    div #jobs sse-swap="jobs" data-hold-while-selected { (job_rows(&list)) }
                    @if list.page_info.has_next_page && let Some(end) = &list.page_info.end_cursor {
                        p { a.button href={ "/jobs?" (f.query_string(end)) } rel="next" { "Older jobs" } }
                    }
                }
            }
        },
    };
    render(layout::page("Jobs", &viewer, "/jobs", body))
}

pub async fn live(State(console): State<Console>, viewer: Viewer, Query(f): Query<JobFilter>) -> Response {
    let c = console.clone();
    let wake =
        Wake { on_event: live::no_event, on_jobs: true, every: Duration::from_secs(1), event_seen: None };
    live::stream(&console, wake, move || {
        let (c, viewer, f) = (c.clone(), viewer.clone(), f.clone());
        async move {
            let (q, j) = tokio::join!(queues(&c, &viewer), jobs(&c, &viewer, &f));
            let mut out = Vec::new();
            match q {
                Ok(q) => out.push(("queues", counts_table(&q).into_string())),
                Err(e) => out.push(("queues", error_box(&e).into_string())),
            }
            if let Ok(j) = j {
                out.push(("jobs", job_rows(&j).into_string()));
            }
            out
        }
    })
}

#[derive(Deserialize)]
struct JobData {
    job: Option<Job>,
}

pub async fn detail(State(console): State<Console>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let query = format!("query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}");
    let body = match console.api::<JobData>(&viewer, &query, json!({ "id": id })).await {
        Err(e) => error_box(&e.message),
        Ok(JobData { job: None }) => error_box(&format!("no job with id {id} (pruned, or never existed)")),
        Ok(JobData { job: Some(j) }) => html! {
            dl.facts {
                dt { "State" } dd { (badge(&j.state)) }
                dt { "Queue, worker" } dd { (j.queue) ", " (j.worker) }
                dt { "Priority" } dd { (j.priority) }
                dt { "Attempt" } dd { (j.attempt) " of " (j.max_attempts) }
                dt { "Inserted" } dd { (layout::time(&j.inserted_at)) }
                dt { "Scheduled" } dd { (layout::time(&j.scheduled_at)) }
                dt { "Last attempted" } dd { @if let Some(t) = &j.attempted_at { (layout::time(t)) } @else { "never" } @if let Some(by) = &j.attempted_by { " by " (by) } }
                dt { "Finished" } dd { @if let Some(t) = &j.finished_at { (layout::time(t)) } @else { "—" } }
            }
            h2 { "Arguments" }
            pre.args { (pretty(&j.args)) }
            h2 { "Attempts that failed" }
            @if j.errors.is_empty() { p.muted { "None." } }
            ol.errors {
                @for e in &j.errors {
                    li { "Attempt " (e.attempt) ", " (layout::time(&e.at)) pre { (e.error) } }
                }
            }
            form #batch hx-post="/jobs/batch" hx-target="#batch-result" {
                input type="hidden" name="ids" value=(j.id);
                button type="submit" name="action" value="retry" { "Retry" }
                button type="submit" name="action" value="cancel" { "Cancel" }
                button type="submit" name="action" value="delete" { "Delete" }
            }
            div #batch-result aria-live="polite" {}
        },
    };
    render(layout::page(&format!("Job {id}"), &viewer, "/jobs", body))
}

fn pretty(args: &str) -> String {
    serde_json::from_str::<serde_json::Value>(args)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| args.to_owned())
}

/// A batch action's form: `ids` repeats, one per selected job.
pub async fn batch(
    State(console): State<Console>,
    Mutating(viewer): Mutating,
    axum::Form(pairs): axum::Form<Vec<(String, String)>>,
) -> Response {
    let action = pairs.iter().find(|(k, _)| k == "action").map(|(_, v)| v.clone()).unwrap_or_default();
    let ids: Vec<&String> = pairs.iter().filter(|(k, _)| k == "ids").map(|(_, v)| v).collect();
    if ids.is_empty() {
        return render(error_box("select one or more jobs first"));
    }
    let field = match action.as_str() {
        "retry" => "retryJobs",
        "cancel" => "cancelJobs",
        "delete" => "deleteJobs",
        other => return render(error_box(&format!("unknown action {other:?}: retry, cancel or delete"))),
    };
    let query = format!("mutation($ids: [ID!]!) {{ n: {field}(ids: $ids) }}");
    #[derive(Deserialize)]
    struct Changed {
        n: i64,
    }
    match console.api::<Changed>(&viewer, &query, json!({ "ids": ids })).await {
        Ok(c) => render(layout::ok_box(&format!("{action}: {} of {} jobs changed", c.n, ids.len()))),
        Err(e) => render(error_box(&e.message)),
    }
}

#[derive(Deserialize)]
pub struct QueueForm {
    name: String,
    action: String,
    #[serde(default)]
    local_limit: String,
    #[serde(default)]
    global_limit: String,
}

pub async fn queue(
    State(console): State<Console>,
    Mutating(viewer): Mutating,
    axum::Form(form): axum::Form<QueueForm>,
) -> Response {
    let (query, vars) = match form.action.as_str() {
        "pause" => {
            ("mutation($n: String!) { q: pauseQueue(name: $n) { name paused } }", json!({ "n": form.name }))
        }
        "resume" => {
            ("mutation($n: String!) { q: resumeQueue(name: $n) { name paused } }", json!({ "n": form.name }))
        }
        "resize" => {
            let local = match form.local_limit.trim().parse::<i64>() {
                Ok(n) => n,
                Err(_) => {
                    return render(error_box(&format!(
                        "local limit must be a whole number, got {:?}",
                        form.local_limit
                    )));
                }
            };
            let global = match form.global_limit.trim() {
                "" => serde_json::Value::Null,
                g => match g.parse::<i64>() {
                    Ok(n) => json!(n),
                    Err(_) => {
                        return render(error_box(&format!(
                            "global limit must be a whole number or empty, got {g:?}"
                        )));
                    }
                },
            };
            (
                "mutation($n: String!, $l: Int!, $g: Int) { q: resizeQueue(name: $n, localLimit: $l, globalLimit: $g) { name paused } }",
                json!({ "n": form.name, "l": local, "g": global }),
            )
        }
        other => return render(error_box(&format!("unknown action {other:?}: pause, resume or resize"))),
    };
    #[derive(Deserialize)]
    struct Changed {
        q: QueueState,
    }
    #[derive(Deserialize)]
    struct QueueState {
        name: String,
        paused: bool,
    }
    match console.api::<Changed>(&viewer, query, vars).await {
        Ok(c) => render(layout::ok_box(&format!(
            "queue {}: {} ({})",
            c.q.name,
            form.action,
            if c.q.paused { "paused" } else { "running" }
        ))),
        Err(e) => render(error_box(&e.message)),
    }
}

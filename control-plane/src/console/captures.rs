//! Captures: a browser filtered by site, lane, time, decision, occupants and class (its first
//! page live), a capture's detail (the anonymized image, per-section counts, confidence, model
//! and config versions), the violation review queue (confirm, or reject with a reason; keyboard
//! shortcuts in `console.js`; the next item follows each decision) and the evidence package
//! download. Images are the stored ones: the agent anonymized them before they left the roadside,
//! and the console links only to the API's signed `/images/{id}` URLs.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::gql::Page;
use super::inputs::{opt, opt_int, opt_time, query};
use super::layout::{self, badge, encode, error_box};
use super::live::{self, Wake};
use super::{Console, Mutating, Viewer, render};

const CAPTURE_FIELDS: &str = "id agentId site lane capturedAt vehicleClass occupancy { status occupants } \
    sections { section occupants confidence } decision confidence modelVersion cameraId configVersion \
    imageSha256 imageBytes imageUrl thumbnailUrl(width: 320) violation { id state reviewer reason }";

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Capture {
    id: String,
    agent_id: String,
    site: String,
    lane: i64,
    captured_at: DateTime<Utc>,
    vehicle_class: String,
    occupancy: Occupancy,
    sections: Vec<Section>,
    decision: String,
    confidence: Option<f64>,
    model_version: Option<String>,
    camera_id: String,
    config_version: i64,
    image_sha256: String,
    image_bytes: i64,
    image_url: String,
    thumbnail_url: String,
    violation: Option<ViolationRef>,
}

#[derive(Deserialize, Clone)]
struct Occupancy {
    status: String,
    occupants: Option<i64>,
}

#[derive(Deserialize, Clone)]
struct Section {
    section: String,
    occupants: i64,
    confidence: f64,
}

#[derive(Deserialize, Clone)]
struct ViolationRef {
    id: String,
    state: String,
    reviewer: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct CapturesData {
    captures: Page<Capture>,
}

/// The browser's filters, from its query string (empty fields: no filter).
#[derive(Deserialize, Default, Clone)]
pub struct CaptureFilter {
    #[serde(default)]
    site: String,
    #[serde(default)]
    lane: String,
    /// `datetime-local` values, read as UTC.
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    min_occupants: String,
    #[serde(default)]
    max_occupants: String,
    #[serde(default)]
    class: String,
    #[serde(default)]
    after: String,
}

impl CaptureFilter {
    fn variables(&self) -> Result<serde_json::Value, String> {
        Ok(json!({
            "site": opt(&self.site),
            "lane": opt_int("lane", &self.lane)?,
            "from": opt_time("from", &self.from)?,
            "to": opt_time("to", &self.to)?,
            "decision": opt(&self.decision),
            "min": opt_int("minimum occupants", &self.min_occupants)?,
            "max": opt_int("maximum occupants", &self.max_occupants)?,
            "class": opt(&self.class),
            "after": opt(&self.after),
        }))
    }

    fn query_string(&self, after: &str) -> String {
        query(&[
            ("site", &self.site),
            ("lane", &self.lane),
            ("from", &self.from),
            ("to", &self.to),
            ("decision", &self.decision),
            ("min_occupants", &self.min_occupants),
            ("max_occupants", &self.max_occupants),
            ("class", &self.class),
            ("after", after),
        ])
    }
}

async fn captures(
    console: &Console,
    viewer: &Viewer,
    filter: &CaptureFilter,
) -> Result<Page<Capture>, String> {
    let query = format!(
        "query($site: String, $lane: Int, $from: DateTime, $to: DateTime, $decision: Decision, $min: Int, \
         $max: Int, $class: VehicleClass, $after: String) {{ captures(first: 24, after: $after, site: $site, \
         lane: $lane, from: $from, to: $to, decision: $decision, minOccupants: $min, maxOccupants: $max, \
         vehicleClass: $class) {{ nodes {{ {CAPTURE_FIELDS} }} pageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let data: CapturesData = console.api(viewer, &query, filter.variables()?).await.map_err(|e| e.message)?;
    Ok(data.captures)
}

fn occupants(c: &Capture) -> String {
    match (c.occupancy.status.as_str(), c.occupancy.occupants) {
        ("COUNTED", Some(n)) => format!("{n} occupant{}", if n == 1 { "" } else { "s" }),
        (status, _) => status.to_lowercase(),
    }
}

fn alt(c: &Capture) -> String {
    format!("Anonymized capture of a {} in lane {} at {}", c.vehicle_class.to_lowercase(), c.lane, c.site)
}

fn cards(page: &Page<Capture>) -> Markup {
    html! {
        @if page.nodes.is_empty() { p.muted { "No captures match." } }
        @for c in &page.nodes {
            a.card href={ "/captures/" (c.id) } data-capture=(c.id) data-decision=(c.decision) {
                img src=(c.thumbnail_url) alt=(alt(c)) loading="lazy" width="320" height="180";
                span.meta {
                    (badge(&c.decision)) " "
                    strong { (c.site) } " · lane " (c.lane) " · " (occupants(c)) br;
                    span.muted { (layout::time(&c.captured_at)) }
                }
            }
        }
    }
}

const DECISIONS: &[&str] = &["COMPLIANT", "VIOLATION_CANDIDATE", "UNREADABLE", "UNKNOWN", "TEST"];
const CLASSES: &[&str] = &["MOTORCYCLE", "CAR", "VAN", "TRUCK", "BUS", "UNKNOWN"];

fn select(id: &str, label: &str, values: &[&str], current: &str) -> Markup {
    html! {
        label for=(id) { (label) }
        select id=(id) name=(id) {
            option value="" selected[current.is_empty()] { "any" }
            @for v in values { option value=(v) selected[current == *v] { (v.replace('_', " ").to_lowercase()) } }
        }
    }
}

pub async fn browse(
    State(console): State<Console>,
    viewer: Viewer,
    Query(f): Query<CaptureFilter>,
) -> Response {
    let page = captures(&console, &viewer, &f).await;
    let body = html! {
        form.filters method="get" action="/captures" role="search" {
            label for="site" { "Site" } input #site name="site" value=(f.site) size="10";
            label for="lane" { "Lane" } input #lane name="lane" value=(f.lane) size="3" inputmode="numeric";
            label for="from" { "From (UTC)" } input #from type="datetime-local" name="from" value=(f.from);
            label for="to" { "To (UTC)" } input #to type="datetime-local" name="to" value=(f.to);
            (select("decision", "Decision", DECISIONS, &f.decision))
            label for="min_occupants" { "Occupants ≥" } input #min_occupants name="min_occupants" value=(f.min_occupants) size="2" inputmode="numeric";
            label for="max_occupants" { "≤" } input #max_occupants name="max_occupants" value=(f.max_occupants) size="2" inputmode="numeric";
            (select("class", "Class", CLASSES, &f.class))
            button type="submit" { "Apply" }
        }
        @match &page {
            Err(e) => (error_box(e)),
            Ok(page) => {
                @if f.after.is_empty() {
                    div hx-ext="sse" sse-connect={ "/live/captures?" (f.query_string("")) } {
                        div.grid #captures sse-swap="captures" { (cards(page)) }
                    }
                } @else {
                    div.grid #captures { (cards(page)) }
                }
                @if page.page_info.has_next_page && let Some(end) = &page.page_info.end_cursor {
                    p { a.button href={ "/captures?" (f.query_string(end)) } rel="next" { "Older captures" } }
                }
            }
        }
    };
    render(layout::page("Captures", &viewer, "/captures", body))
}

pub async fn browse_live(
    State(console): State<Console>,
    viewer: Viewer,
    Query(f): Query<CaptureFilter>,
) -> Response {
    let c = console.clone();
    let wake = Wake {
        on_event: live::capture_event,
        on_jobs: false,
        every: Duration::from_secs(30),
        event_seen: None,
    };
    live::stream(&console, wake, move || {
        let (c, viewer, f) = (c.clone(), viewer.clone(), f.clone());
        async move {
            match captures(&c, &viewer, &f).await {
                Ok(page) => vec![("captures", cards(&page).into_string())],
                Err(e) => vec![("captures", error_box(&e).into_string())],
            }
        }
    })
}

#[derive(Deserialize)]
struct CaptureData {
    capture: Option<Capture>,
}

fn capture_facts(c: &Capture) -> Markup {
    html! {
        dl.facts {
            dt { "Decision" } dd { (badge(&c.decision)) }
            dt { "Site, lane" } dd { (c.site) ", lane " (c.lane) }
            dt { "Captured" } dd { (layout::time(&c.captured_at)) }
            dt { "Agent, camera" } dd { (c.agent_id) ", " (c.camera_id) }
            dt { "Vehicle" } dd { (c.vehicle_class.to_lowercase()) }
            dt { "Occupants" } dd { (occupants(c)) }
            dt { "Confidence" } dd { @if let Some(x) = c.confidence { (format!("{x:.2}")) } @else { "—" } }
            dt { "Model" } dd { (c.model_version.as_deref().unwrap_or("—")) }
            dt { "Config" } dd { "v" (c.config_version) }
            dt { "Image" } dd { code { (c.image_sha256) } " (" (c.image_bytes) " bytes)" }
            @if let Some(v) = &c.violation {
                dt { "Violation" } dd {
                    (badge(&v.state))
                    @if let Some(r) = &v.reviewer { " by " (r) }
                    @if let Some(r) = &v.reason { " — " (r) }
                    @if v.state == "CONFIRMED" { " " a href={ "/violations/" (v.id) "/evidence" } download { "Evidence package" } }
                }
            }
        }
        table.data {
            caption { "Occupants per seat section" }
            thead { tr { th scope="col" { "Section" } th scope="col" { "Occupants" } th scope="col" { "Confidence" } } }
            tbody {
                @for s in &c.sections {
                    tr { th scope="row" { (s.section) } td.num { (s.occupants) } td.num { (format!("{:.2}", s.confidence)) } }
                }
            }
        }
    }
}

pub async fn detail(State(console): State<Console>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let query = format!("query($id: ID!) {{ capture(id: $id) {{ {CAPTURE_FIELDS} }} }}");
    let data = console.api::<CaptureData>(&viewer, &query, json!({ "id": id })).await;
    let body = match data {
        Err(e) => error_box(&e.message),
        Ok(CaptureData { capture: None }) => error_box(&format!("no capture with id {id}")),
        Ok(CaptureData { capture: Some(c) }) => html! {
            div.detail {
                img.evidence src=(c.image_url) alt=(alt(&c));
                div { (capture_facts(&c)) }
            }
        },
    };
    render(layout::page("Capture", &viewer, "/captures", body))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pending {
    id: String,
    captured_at: DateTime<Utc>,
    site: String,
    capture: Option<Capture>,
}

#[derive(Deserialize)]
struct ViolationsData {
    violations: Page<Pending>,
}

async fn pending(console: &Console, viewer: &Viewer) -> Result<Vec<Pending>, String> {
    let query = format!(
        "{{ violations(first: 50, state: PENDING) {{ nodes {{ id capturedAt site capture {{ {CAPTURE_FIELDS} }} }} \
         pageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let data: ViolationsData = console.api(viewer, &query, json!({})).await.map_err(|e| e.message)?;
    Ok(data.violations.nodes)
}

/// The item under review: its image, facts and the decision form.
fn current(item: Option<&Pending>, note: Option<Markup>) -> Markup {
    html! {
        @if let Some(n) = note { (n) }
        @match item {
            None => p.muted #review-empty { "Nothing to review. New violation candidates appear in the queue below as they arrive." },
            Some(v) => {
                article.review data-violation=(v.id) {
                    @if let Some(c) = &v.capture {
                        div.detail {
                            img.evidence src=(c.image_url) alt=(alt(c));
                            div { (capture_facts(c)) }
                        }
                    } @else {
                        p { "Violation at " (v.site) ", " (layout::time(&v.captured_at)) }
                    }
                    form.decide hx-post={ "/review/" (v.id) } hx-target="#review-current" {
                        // Reject comes first: Enter in the reason field submits with it
                        label for="reason" { "Reason to reject" }
                        input #reason name="reason" placeholder="e.g. child seat counted as empty" aria-keyshortcuts="r";
                        button #reject type="submit" name="decision" value="REJECT" { "Reject (r, then Enter)" }
                        button #confirm type="submit" name="decision" value="CONFIRM" aria-keyshortcuts="c" { "Confirm (c)" }
                    }
                }
            }
        }
    }
}

fn queue(items: &[Pending]) -> Markup {
    html! {
        p { strong #pending-count { (items.len()) } " pending" @if items.len() == 50 { " (the oldest 50 shown)" } }
        ol.queue {
            @for v in items {
                li data-violation=(v.id) { (v.site) " · " (layout::time(&v.captured_at)) }
            }
        }
    }
}

pub async fn review(State(console): State<Console>, viewer: Viewer) -> Response {
    let items = pending(&console, &viewer).await;
    let body = match &items {
        Err(e) => error_box(e),
        Ok(items) => html! {
            p.muted { "Keys: " kbd { "c" } " confirms, " kbd { "r" } " goes to the reason; Enter there rejects. The next item follows each decision." }
            div #review-current { (current(items.first(), None)) }
            section aria-labelledby="queue-h" hx-ext="sse" sse-connect="/live/review" {
                h2 #queue-h { "Queue" }
                div #review-queue sse-swap="review-queue" { (queue(items)) }
            }
        },
    };
    render(layout::page("Violation review", &viewer, "/review", body))
}

pub async fn review_live(State(console): State<Console>, viewer: Viewer) -> Response {
    let c = console.clone();
    let wake = Wake {
        on_event: live::capture_event,
        on_jobs: false,
        every: Duration::from_secs(2),
        event_seen: None,
    };
    live::stream(&console, wake, move || {
        let (c, viewer) = (c.clone(), viewer.clone());
        async move {
            match pending(&c, &viewer).await {
                Ok(items) => vec![("review-queue", queue(&items).into_string())],
                Err(e) => vec![("review-queue", error_box(&e).into_string())],
            }
        }
    })
}

#[derive(Deserialize)]
pub struct DecideForm {
    decision: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reviewed {
    review_violation: ViolationRef,
}

/// Records a decision and answers with the next item.
pub async fn decide(
    State(console): State<Console>,
    Mutating(viewer): Mutating,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<DecideForm>,
) -> Response {
    let reason =
        if form.reason.trim().is_empty() { serde_json::Value::Null } else { json!(form.reason.trim()) };
    let result = console
        .api::<Reviewed>(
            &viewer,
            "mutation($id: ID!, $d: ReviewDecision!, $r: String) { reviewViolation(id: $id, decision: $d, reason: $r) { id state reviewer reason } }",
            json!({ "id": id, "d": form.decision, "r": reason }),
        )
        .await;
    let note = match &result {
        Ok(r) => layout::ok_box(&format!(
            "Violation {} {}.",
            r.review_violation.id,
            r.review_violation.state.to_lowercase()
        )),
        Err(e) => error_box(&e.message),
    };
    let items = match pending(&console, &viewer).await {
        Ok(items) => items,
        Err(e) => return render(error_box(&e)),
    };
    // after an error, stay on the same item
    let next = match result {
        Ok(_) => items.first(),
        Err(_) => items.iter().find(|v| v.id == id).or(items.first()),
    };
    render(current(next, Some(note)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EvidenceData {
    violation: Option<EvidenceViolation>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EvidenceViolation {
    evidence_package: Option<serde_json::Value>,
}

/// The evidence package of a confirmed violation as a JSON file: the capture's metadata, the
/// decision and the versions that produced it, and each image's signed URL and SHA-256.
pub async fn evidence(State(console): State<Console>, viewer: Viewer, Path(id): Path<String>) -> Response {
    let query = "query($id: ID!) { violation(id: $id) { evidencePackage { violationId state reviewer reviewedAt \
        decision modelVersion configVersion generatedAt capture { id site lane capturedAt agentId cameraId \
        vehicleClass occupancy { status occupants } sections { section occupants confidence } confidence } \
        images { cameraId url sha256 bytes contentType } } } }";
    match console.api::<EvidenceData>(&viewer, query, json!({ "id": id })).await {
        Err(e) => (StatusCode::BAD_REQUEST, format!("{}\n", e.message)).into_response(),
        Ok(EvidenceData { violation: None }) => {
            (StatusCode::NOT_FOUND, format!("no violation with id {id}\n")).into_response()
        }
        Ok(EvidenceData { violation: Some(EvidenceViolation { evidence_package: None }) }) => {
            (StatusCode::CONFLICT, format!("violation {id} is not confirmed: it has no evidence package\n"))
                .into_response()
        }
        Ok(EvidenceData { violation: Some(EvidenceViolation { evidence_package: Some(p) }) }) => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"evidence-{}.json\"", encode(&id)),
                ),
            ],
            serde_json::to_string_pretty(&p).unwrap_or_default(),
        )
            .into_response(),
    }
}

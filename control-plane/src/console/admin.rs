//! Administration: API keys (create, shown once; revoke), agencies (create) and site
//! jurisdictions, the audit log, the edge's
//! deletion receipts and the cloud's retention deletion records. Each part is read with its own
//! GraphQL operation, so an operator sees the parts an operator may read (deletions, receipts)
//! and an inline "permission denied" for the rest, exactly as the API answers.

use axum::extract::{Path, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::layout::{self, badge, error_box};
use super::{Console, Mutating, Viewer, render};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiKey {
    id: String,
    name: String,
    role: String,
    agency_id: Option<String>,
    all_captures: bool,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeysData {
    api_keys: Vec<ApiKey>,
    agencies: Vec<Agency>,
}

#[derive(Deserialize)]
struct Agency {
    id: String,
    name: String,
    jurisdiction: String,
}

#[derive(Deserialize)]
struct Nodes<T> {
    nodes: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditData {
    audit_log: Nodes<AuditEntry>,
}

#[derive(Deserialize)]
struct AuditEntry {
    at: DateTime<Utc>,
    actor: String,
    action: String,
    target: String,
    result: String,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeletionsData {
    capture_deletions: Nodes<CaptureDeletion>,
    deletion_receipts: Nodes<Receipt>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaptureDeletion {
    capture_id: String,
    site: String,
    value_class: String,
    deleted_at: DateTime<Utc>,
    reason: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Receipt {
    capture_id: Option<String>,
    agent_id: String,
    site: String,
    value_class: String,
    deleted_at: DateTime<Utc>,
    reason: String,
    bytes: i64,
}

fn keys_section(d: &KeysData) -> Markup {
    html! {
        table.data #keys {
            thead { tr {
                th scope="col" { "Key" } th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Agency" }
                th scope="col" { "Created" } th scope="col" { "State" } th scope="col" { span.sr { "Actions" } }
            } }
            tbody {
                @for k in &d.api_keys {
                    tr data-key=(k.id) {
                        th scope="row" { code { (k.id) } }
                        td { (k.name) }
                        td { (badge(&k.role)) @if k.all_captures { " all captures" } }
                        td { (k.agency_id.as_deref().unwrap_or("—")) }
                        td { (layout::time(&k.created_at)) }
                        td { @if let Some(t) = &k.revoked_at { "revoked " (layout::time(t)) } @else { "live" } }
                        td { @if k.revoked_at.is_none() {
                            form hx-post={ "/admin/keys/" (k.id) "/revoke" } hx-target="#key-result" hx-confirm={ "Revoke key " (k.id) "? Its sessions end at once." } {
                                button type="submit" { "Revoke" }
                            }
                        } }
                    }
                }
            }
        }
        form.command hx-post="/admin/keys" hx-target="#key-result" {
            label for="key-name" { "Name" } input #key-name name="name" required;
            label for="key-role" { "Role" }
            select #key-role name="role" { option value="OPERATOR" { "operator" } option value="ADMIN" { "admin" } option value="AGENCY" { "agency" } }
            label for="key-agency" { "Agency" }
            select #key-agency name="agency_id" {
                option value="" { "—" }
                @for a in &d.agencies { option value=(a.id) { (a.name) " (" (a.jurisdiction) ")" } }
            }
            button type="submit" { "Create key" }
        }
        div #key-result aria-live="polite" {}
        h3 { "Agencies and jurisdictions" }
        ul { @for a in &d.agencies { li { (a.name) " — jurisdiction " code { (a.jurisdiction) } " — id " code { (a.id) } } } }
        form.command hx-post="/admin/agencies" hx-target="#agency-result" {
            label for="agency-name" { "Agency" } input #agency-name name="name" required;
            label for="agency-jurisdiction" { "Jurisdiction" } input #agency-jurisdiction name="jurisdiction" required;
            button type="submit" { "Create agency" }
        }
        form.command hx-post="/admin/jurisdiction" hx-target="#agency-result" {
            label for="j-site" { "Site" } input #j-site name="site" required;
            label for="j-jurisdiction" { "Jurisdiction" } input #j-jurisdiction name="jurisdiction" placeholder="empty: none";
            button type="submit" { "Set the site's jurisdiction" }
        }
        div #agency-result aria-live="polite" {}
    }
}

pub async fn page(State(console): State<Console>, viewer: Viewer) -> Response {
    let keys = console
        .api::<KeysData>(
            &viewer,
            "{ apiKeys { id name role agencyId allCaptures createdAt revokedAt } agencies { id name jurisdiction } }",
            json!({}),
        )
        .await;
    let audit = console
        .api::<AuditData>(
            &viewer,
            "{ auditLog(first: 50) { nodes { at actor action target result message } } }",
            json!({}),
        )
        .await;
    let deletions = console
        .api::<DeletionsData>(
            &viewer,
            "{ captureDeletions(first: 50) { nodes { captureId site valueClass deletedAt reason } } \
               deletionReceipts(first: 50) { nodes { captureId agentId site valueClass deletedAt reason bytes } } }",
            json!({}),
        )
        .await;
    let body = html! {
        section aria-labelledby="keys-h" {
            h2 #keys-h { "API keys and agencies" }
            @match &keys { Ok(d) => (keys_section(d)), Err(e) => (error_box(&e.message)) }
        }
        section aria-labelledby="audit-h" {
            h2 #audit-h { "Audit log" }
            @match &audit {
                Err(e) => (error_box(&e.message)),
                Ok(a) => table.data #audit {
                    thead { tr { th scope="col" { "At" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Result" } th scope="col" { "Message" } } }
                    tbody { @for e in &a.audit_log.nodes {
                        tr { td { (layout::time(&e.at)) } td { (e.actor) } td { (e.action) } td { code { (e.target) } } td { (badge(&e.result)) } td { (e.message.as_deref().unwrap_or("")) } }
                    } }
                },
            }
        }
        section aria-labelledby="deletions-h" {
            h2 #deletions-h { "Deletions" }
            @match &deletions {
                Err(e) => (error_box(&e.message)),
                Ok(d) => {
                    h3 { "Cloud retention" }
                    table.data #capture-deletions {
                        thead { tr { th scope="col" { "Capture" } th scope="col" { "Site" } th scope="col" { "Class" } th scope="col" { "Deleted" } th scope="col" { "Why" } } }
                        tbody { @for r in &d.capture_deletions.nodes {
                            tr { td { code { (r.capture_id) } } td { (r.site) } td { (r.value_class) } td { (layout::time(&r.deleted_at)) } td { (r.reason) } }
                        } }
                    }
                    h3 { "Edge receipts" }
                    table.data #receipts {
                        thead { tr { th scope="col" { "Capture" } th scope="col" { "Agent" } th scope="col" { "Site" } th scope="col" { "Class" } th scope="col" { "Deleted" } th scope="col" { "Why" } th scope="col" { "Bytes" } } }
                        tbody { @for r in &d.deletion_receipts.nodes {
                            tr { td { code { (r.capture_id.as_deref().unwrap_or("—")) } } td { (r.agent_id) } td { (r.site) } td { (r.value_class) } td { (layout::time(&r.deleted_at)) } td { (r.reason) } td.num { (r.bytes) } }
                        } }
                    }
                }
            }
        }
    };
    render(layout::page("Admin", &viewer, "/admin", body))
}

#[derive(Deserialize)]
pub struct KeyForm {
    name: String,
    role: String,
    #[serde(default)]
    agency_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    create_api_key: CreatedKey,
}

#[derive(Deserialize)]
struct CreatedKey {
    key: KeyId,
    secret: String,
}

#[derive(Deserialize)]
struct KeyId {
    id: String,
}

pub async fn create_key(
    State(console): State<Console>,
    Mutating(viewer): Mutating,
    axum::Form(form): axum::Form<KeyForm>,
) -> Response {
    let agency = if form.agency_id.is_empty() { serde_json::Value::Null } else { json!(form.agency_id) };
    let result = console
        .api::<Created>(
            &viewer,
            "mutation($n: String!, $r: Role!, $a: ID) { createApiKey(name: $n, role: $r, agencyId: $a) { key { id } secret } }",
            json!({ "n": form.name, "r": form.role, "a": agency }),
        )
        .await;
    render(match result {
        Ok(c) => html! {
            div.ok role="status" {
                "Key " code { (c.create_api_key.key.id) } " created. Copy its secret now; it is never shown again: "
                input readonly value=(c.create_api_key.secret) aria-label="new key secret" size="80";
            }
        },
        Err(e) => error_box(&e.message),
    })
}

pub async fn revoke_key(
    State(console): State<Console>,
    Mutating(viewer): Mutating,
    Path(id): Path<String>,
) -> Response {
    let result = console
        .api::<serde_json::Value>(
            &viewer,
            "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }",
            json!({ "id": id }),
        )
        .await;
    render(match result {
        Ok(_) => layout::ok_box(&format!("Key {id} revoked; reload to see it.")),
        Err(e) => error_box(&e.message),
    })
}

#[derive(Deserialize)]
pub struct AgencyForm {
    name: String,
    jurisdiction: String,
}

pub async fn create_agency(
    State(console): State<Console>,
    Mutating(viewer): Mutating,
    axum::Form(form): axum::Form<AgencyForm>,
) -> Response {
    let result = console
        .api::<serde_json::Value>(
            &viewer,
            "mutation($n: String!, $j: String!) { createAgency(name: $n, jurisdiction: $j) { id } }",
            json!({ "n": form.name, "j": form.jurisdiction }),
        )
        .await;
    render(match result {
        Ok(v) => layout::ok_box(&format!(
            "Agency {} created with id {}; reload to see it.",
            form.name,
            v["createAgency"]["id"].as_str().unwrap_or("?")
        )),
        Err(e) => error_box(&e.message),
    })
}

#[derive(Deserialize)]
pub struct JurisdictionForm {
    site: String,
    #[serde(default)]
    jurisdiction: String,
}

pub async fn set_jurisdiction(
    State(console): State<Console>,
    Mutating(viewer): Mutating,
    axum::Form(form): axum::Form<JurisdictionForm>,
) -> Response {
    let jurisdiction = if form.jurisdiction.trim().is_empty() {
        serde_json::Value::Null
    } else {
        json!(form.jurisdiction.trim())
    };
    let result = console
        .api::<serde_json::Value>(
            &viewer,
            "mutation($s: String!, $j: String) { setSiteJurisdiction(site: $s, jurisdiction: $j) { id jurisdiction } }",
            json!({ "s": form.site, "j": jurisdiction }),
        )
        .await;
    render(match result {
        Ok(v) => layout::ok_box(&format!(
            "Site {} is now in jurisdiction {}.",
            form.site,
            v["setSiteJurisdiction"]["jurisdiction"].as_str().unwrap_or("(none)")
        )),
        Err(e) => error_box(&e.message),
    })
}

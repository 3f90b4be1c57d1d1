//! The vehicle push service in GraphQL: endpoints (registered by admins and operators, or by an
//! agency for its own jurisdiction), their secrets (shown when created and when rotated, with
//! the old one valid through an overlap), their messages with every attempt, resending one
//! message and recovering every failed one since a time. Every mutation is audited.

use async_graphql::{Context, Enum, ErrorExtensions, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{audited, parse_uuid, parts, storage, storage_error};
use crate::auth::Principal;
use crate::db::webhooks::delivery_job;
use crate::domain::{self, Role, Visibility};
use crate::error::{Error, ErrorKind};
use crate::webhooks::sign::Secret;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum WebhookEvent {
    CaptureStored,
    ViolationFlagged,
    ViolationConfirmed,
    ViolationRejected,
    AgentOffline,
    AgentOnline,
    ConfigRejected,
    EndpointDisabled,
}

impl WebhookEvent {
    fn to_domain(self) -> domain::EventType {
        match self {
            Self::CaptureStored => domain::EventType::CaptureStored,
            Self::ViolationFlagged => domain::EventType::ViolationFlagged,
            Self::ViolationConfirmed => domain::EventType::ViolationConfirmed,
            Self::ViolationRejected => domain::EventType::ViolationRejected,
            Self::AgentOffline => domain::EventType::AgentOffline,
            Self::AgentOnline => domain::EventType::AgentOnline,
            Self::ConfigRejected => domain::EventType::ConfigRejected,
            Self::EndpointDisabled => domain::EventType::EndpointDisabled,
        }
    }

    fn from_domain(e: domain::EventType) -> Self {
        [
            Self::CaptureStored,
            Self::ViolationFlagged,
            Self::ViolationConfirmed,
            Self::ViolationRejected,
            Self::AgentOffline,
            Self::AgentOnline,
            Self::ConfigRejected,
            Self::EndpointDisabled,
        ]
        .into_iter()
        .find(|w| w.to_domain() == e)
        .unwrap_or(Self::CaptureStored)
    }
}

/// Where events are pushed (the secret is never listed: it is shown on create and rotate).
#[derive(SimpleObject)]
pub struct WebhookEndpoint {
    id: ID,
    url: String,
    description: String,
    event_types: Vec<WebhookEvent>,
    /// Only this site's events; null: every site.
    site: Option<String>,
    rate_limit_per_sec: f64,
    max_concurrency: u32,
    enabled: bool,
    /// The agency it belongs to; null for an operators' endpoint.
    agency_id: Option<String>,
    /// Since when every delivery failed; null after a success.
    failing_since: Option<DateTime<Utc>>,
    /// Why it was disabled, when it was.
    disabled_reason: Option<String>,
    /// Until when the secret before the last rotation still signs too.
    previous_secret_until: Option<DateTime<Utc>>,
    created_by: String,
    created_at: DateTime<Utc>,
}

impl From<domain::WebhookEndpoint> for WebhookEndpoint {
    fn from(e: domain::WebhookEndpoint) -> Self {
        Self {
            id: ID(e.id.to_string()),
            url: e.url,
            description: e.description,
            event_types: e.event_types.into_iter().map(WebhookEvent::from_domain).collect(),
            site: e.site_id,
            rate_limit_per_sec: e.rate_per_sec,
            max_concurrency: e.max_concurrency,
            enabled: e.enabled,
            agency_id: e.agency_id,
            failing_since: e.failing_since,
            disabled_reason: e.disabled_reason,
            previous_secret_until: e.previous_secret_until,
            created_by: e.created_by,
            created_at: e.created_at,
        }
    }
}

/// An endpoint with its signing secret, shown this once.
#[derive(SimpleObject)]
pub struct WebhookEndpointWithSecret {
    endpoint: WebhookEndpoint,
    /// `whsec_…`: verify `webhook-signature` with it (Standard Webhooks).
    secret: String,
}

#[derive(InputObject)]
pub struct WebhookEndpointInput {
    /// https (plain http only to a loopback receiver).
    url: String,
    #[graphql(default)]
    description: String,
    event_types: Vec<WebhookEvent>,
    site: Option<String>,
    #[graphql(default = 10.0)]
    rate_limit_per_sec: f64,
    #[graphql(default = 4)]
    max_concurrency: u32,
    #[graphql(default = true)]
    enabled: bool,
}

/// One event for one endpoint (its id is the `webhook-id` header, the same across retries).
#[derive(SimpleObject)]
pub struct WebhookMessage {
    id: ID,
    event_type: WebhookEvent,
    capture_id: Option<ID>,
    /// The JSON body as sent.
    payload: String,
    /// `pending`, `delivered` or `failed`.
    state: String,
    attempts: u32,
    last_status: Option<u16>,
    created_at: DateTime<Utc>,
}

impl From<domain::WebhookMessage> for WebhookMessage {
    fn from(m: domain::WebhookMessage) -> Self {
        Self {
            id: ID(m.id),
            event_type: WebhookEvent::from_domain(m.event_type),
            capture_id: m.capture_id.map(|c| ID(c.to_string())),
            payload: m.payload,
            state: m.state,
            attempts: m.attempts,
            last_status: m.last_status,
            created_at: m.created_at,
        }
    }
}

/// One delivery attempt.
#[derive(SimpleObject)]
pub struct WebhookAttempt {
    attempt: u32,
    at: DateTime<Utc>,
    /// The receiver's status; null when none came (refused, timeout, connection).
    status: Option<u16>,
    /// The start of the receiver's answer.
    body_snippet: String,
    latency_ms: u64,
    error: Option<String>,
}

/// May `who` manage `e`? Admins and operators any; an agency its own.
fn owns(who: &Principal, e: &domain::WebhookEndpoint) -> bool {
    match who.role {
        Role::Admin | Role::Operator => true,
        Role::Agency => e.agency_id.is_some() && e.agency_id == who.agency_id,
    }
}

/// The endpoint `id` if the caller may manage it; NOT_FOUND otherwise (an agency learns
/// nothing of others' endpoints).
async fn endpoint_for(
    api: &super::ApiContext,
    who: &Principal,
    id: &ID,
) -> Result<domain::WebhookEndpoint, Error> {
    let id = parse_uuid("endpoint id", id)?;
    match api.db.webhook_endpoint(id).await.map_err(storage)? {
        Some(e) if owns(who, &e) => Ok(e),
        _ => Err(Error::not_found(format!("no webhook endpoint {id}"))),
    }
}

fn check_input(input: &WebhookEndpointInput) -> Result<(), Error> {
    let url = reqwest::Url::parse(&input.url)
        .map_err(|e| Error::invalid(format!("url {:?} is not a url: {e}", input.url)))?;
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err(Error::invalid(format!("url {:?}: https is required off loopback", input.url))),
        other => return Err(Error::invalid(format!("url {:?}: scheme {other:?} is not https", input.url))),
    }
    if input.event_types.is_empty() {
        return Err(Error::invalid("eventTypes must name at least one event"));
    }
    if !(0.01..=10_000.0).contains(&input.rate_limit_per_sec) {
        return Err(Error::invalid(format!(
            "rateLimitPerSec must be 0.01 to 10000, got {}",
            input.rate_limit_per_sec
        )));
    }
    if !(1..=1000).contains(&input.max_concurrency) {
        return Err(Error::invalid(format!(
            "maxConcurrency must be 1 to 1000, got {}",
            input.max_concurrency
        )));
    }
    if input.description.len() > 1000 {
        return Err(Error::invalid("description is longer than 1000 bytes"));
    }
    Ok(())
}

fn apply(e: &mut domain::WebhookEndpoint, input: WebhookEndpointInput) {
    let mut events: Vec<domain::EventType> =
        input.event_types.into_iter().map(WebhookEvent::to_domain).collect();
    events.sort();
    events.dedup();
    e.url = input.url;
    e.description = input.description;
    e.event_types = events;
    e.site_id = input.site.filter(|s| !s.is_empty());
    e.rate_per_sec = input.rate_limit_per_sec;
    e.max_concurrency = input.max_concurrency;
    if input.enabled && !e.enabled {
        // enabled again by a person: the failure streak starts over
        e.failing_since = None;
        e.disabled_reason = None;
    }
    e.enabled = input.enabled;
}

#[derive(Default)]
pub struct WebhooksQuery;

#[Object]
impl WebhooksQuery {
    /// The endpoints the caller manages: all for admins and operators, its own for an agency.
    async fn webhook_endpoints(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<WebhookEndpoint>> {
        let (api, who) = parts(ctx)?;
        let all = api
            .db
            .webhook_endpoints(&who.visibility(), who.agency_id.as_deref())
            .await
            .map_err(storage_error)?;
        Ok(all.into_iter().filter(|e| owns(who, e)).map(WebhookEndpoint::from).collect())
    }

    /// An endpoint's messages, newest first (at most `first`, 1-100), before message `before`.
    async fn webhook_messages(
        &self,
        ctx: &Context<'_>,
        endpoint_id: ID,
        #[graphql(default = 20)] first: i32,
        before: Option<ID>,
    ) -> async_graphql::Result<Vec<WebhookMessage>> {
        let (api, who) = parts(ctx)?;
        let e = endpoint_for(api, who, &endpoint_id).await.map_err(|e| e.extend())?;
        let first = super::page_size(first)?;
        let rows = api
            .db
            .webhook_messages(e.id, None, before.as_ref().map(|b| b.as_str()), first)
            .await
            .map_err(storage_error)?;
        Ok(rows.into_iter().map(WebhookMessage::from).collect())
    }

    /// Every delivery attempt of a message, oldest first.
    async fn webhook_attempts(
        &self,
        ctx: &Context<'_>,
        message_id: ID,
    ) -> async_graphql::Result<Vec<WebhookAttempt>> {
        let (api, who) = parts(ctx)?;
        let m = api.db.webhook_message(&message_id).await.map_err(storage_error)?;
        let Some(m) = m else {
            return Err(Error::not_found(format!("no webhook message {}", message_id.as_str())).extend());
        };
        endpoint_for(api, who, &ID(m.endpoint_id.to_string())).await.map_err(|e| e.extend())?;
        let attempts = api.db.webhook_attempts(&m.id).await.map_err(storage_error)?;
        Ok(attempts
            .into_iter()
            .map(|a| WebhookAttempt {
                attempt: a.attempt,
                at: a.at,
                status: a.status,
                body_snippet: a.body_snippet,
                latency_ms: a.latency_ms,
                error: a.error,
            })
            .collect())
    }
}

#[derive(Default)]
pub struct WebhooksMutation;

#[Object]
impl WebhooksMutation {
    /// Registers an endpoint; its secret is in the answer, once. An agency's endpoint receives
    /// only the events its key could read through this API.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: WebhookEndpointInput,
    ) -> async_graphql::Result<WebhookEndpointWithSecret> {
        let (api, who) = parts(ctx)?;
        let id = Uuid::now_v7();
        let result = async {
            check_input(&input)?;
            let secret = Secret::generate().to_string();
            let now = Utc::now();
            let (jurisdiction, all_captures) = match who.visibility() {
                Visibility::Jurisdiction { jurisdiction, all_captures } => (Some(jurisdiction), all_captures),
                Visibility::All => (None, false),
            };
            let mut e = domain::WebhookEndpoint {
                id,
                url: String::new(),
                description: String::new(),
                event_types: Vec::new(),
                site_id: None,
                rate_per_sec: 1.0,
                max_concurrency: 1,
                enabled: false,
                secret: secret.clone(),
                previous_secret: None,
                previous_secret_until: None,
                agency_id: if who.role == Role::Agency { who.agency_id.clone() } else { None },
                jurisdiction,
                all_captures,
                failing_since: None,
                disabled_reason: None,
                created_by: who.actor(),
                created_at: now,
            };
            apply(&mut e, input);
            api.db.put_webhook_endpoint(&e, now).await.map_err(storage)?;
            Ok(WebhookEndpointWithSecret { endpoint: e.into(), secret })
        }
        .await;
        audited(api, who, "createWebhookEndpoint", &format!("webhook_endpoint/{id}"), result).await
    }

    /// Replaces an endpoint's settings (enabling a disabled one starts its failure streak over).
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: WebhookEndpointInput,
    ) -> async_graphql::Result<WebhookEndpoint> {
        let (api, who) = parts(ctx)?;
        let result = async {
            let mut e = endpoint_for(api, who, &id).await?;
            check_input(&input)?;
            apply(&mut e, input);
            api.db.put_webhook_endpoint(&e, Utc::now()).await.map_err(storage)?;
            Ok(WebhookEndpoint::from(e))
        }
        .await;
        audited(api, who, "updateWebhookEndpoint", &format!("webhook_endpoint/{}", id.as_str()), result).await
    }

    async fn delete_webhook_endpoint(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let (api, who) = parts(ctx)?;
        let result = async {
            let e = endpoint_for(api, who, &id).await?;
            api.db.delete_webhook_endpoint(e.id).await.map_err(storage)
        }
        .await;
        audited(api, who, "deleteWebhookEndpoint", &format!("webhook_endpoint/{}", id.as_str()), result).await
    }

    /// A new secret for the endpoint; deliveries are signed with both the new and the old one for
    /// `overlapSecs` (0-604800, a day by default), so receivers can switch without a gap.
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default = 86400)] overlap_secs: u32,
    ) -> async_graphql::Result<WebhookEndpointWithSecret> {
        let (api, who) = parts(ctx)?;
        let result = async {
            if overlap_secs > 604_800 {
                return Err(Error::invalid(format!(
                    "overlapSecs must be at most 604800, got {overlap_secs}"
                )));
            }
            let mut e = endpoint_for(api, who, &id).await?;
            let now = Utc::now();
            let secret = Secret::generate().to_string();
            e.previous_secret = Some(std::mem::replace(&mut e.secret, secret.clone()));
            e.previous_secret_until = Some(now + chrono::Duration::seconds(i64::from(overlap_secs)));
            api.db.put_webhook_endpoint(&e, now).await.map_err(storage)?;
            Ok(WebhookEndpointWithSecret { endpoint: e.into(), secret })
        }
        .await;
        audited(api, who, "rotateWebhookSecret", &format!("webhook_endpoint/{}", id.as_str()), result).await
    }

    /// Sends a message again now, under the same `webhook-id`; the job's id.
    async fn resend_webhook_message(&self, ctx: &Context<'_>, message_id: ID) -> async_graphql::Result<ID> {
        let (api, who) = parts(ctx)?;
        let result = async {
            let m = api.db.webhook_message(&message_id).await.map_err(storage)?;
            let m =
                m.ok_or_else(|| Error::not_found(format!("no webhook message {}", message_id.as_str())))?;
            let e = endpoint_for(api, who, &ID(m.endpoint_id.to_string())).await?;
            let ids = api.db.insert_jobs(&[resend_job(&e, &m)], Utc::now()).await.map_err(storage)?;
            let id = ids
                .into_iter()
                .flatten()
                .next()
                .ok_or_else(|| Error::new(ErrorKind::Internal, "no job inserted"))?;
            Ok(ID(id.to_string()))
        }
        .await;
        audited(api, who, "resendWebhookMessage", &format!("webhook_message/{}", message_id.as_str()), result)
            .await
    }

    /// Sends again every message of the endpoint that failed since `since`; how many.
    async fn recover_webhook_messages(
        &self,
        ctx: &Context<'_>,
        endpoint_id: ID,
        since: DateTime<Utc>,
    ) -> async_graphql::Result<u64> {
        let (api, who) = parts(ctx)?;
        let result = async {
            let e = endpoint_for(api, who, &endpoint_id).await?;
            let failed = api.db.webhook_messages(e.id, Some(since), None, 10_000).await.map_err(storage)?;
            let jobs: Vec<_> = failed.iter().map(|m| resend_job(&e, m)).collect();
            api.db.insert_jobs(&jobs, Utc::now()).await.map_err(storage)?;
            Ok(jobs.len() as u64)
        }
        .await;
        audited(
            api,
            who,
            "recoverWebhookMessages",
            &format!("webhook_endpoint/{}", endpoint_id.as_str()),
            result,
        )
        .await
    }
}

/// A delivery job for message `m` again, keeping its id (and so its `webhook-id`).
fn resend_job(e: &domain::WebhookEndpoint, m: &domain::WebhookMessage) -> domain::NewJob {
    let mut job = delivery_job(e.id, m.event_type, m.capture_id, payload_data(&m.payload));
    job.args["message_id"] = serde_json::Value::String(m.id.clone());
    job
}

/// The `data` of a payload as first sent (used again for events that carry no capture).
fn payload_data(payload: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(payload).map(|p| p["data"].clone()).unwrap_or_default()
}

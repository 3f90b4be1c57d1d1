//! Administration: the caller (`me`), agencies, API keys and the audit log as queries, and the
//! audited admin mutations (agencies, site jurisdictions, lane policies, API keys, agent
//! revocation and reinstatement), with the GraphQL objects they answer with.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::fleet::{Agent, Site};
use super::{PageCursor, audited, connection, cursor, guard, page_size, parts, storage, storage_error};
use crate::auth::{Action, KeyRequest};
use crate::domain::{self, CaptureCursor};
use crate::error::{Error, ErrorKind};

#[derive(Default)]
pub struct MeQuery;

#[Object]
impl MeQuery {
    /// Who this request acts as.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Me> {
        let (_, who) = parts(ctx)?;
        Ok(Me {
            key_id: who.key_id.clone().map(ID),
            role: Role::from_domain(who.role),
            agency_id: who.agency_id.clone().map(ID),
            all_captures: who.all_captures,
        })
    }
}

#[derive(Default)]
pub struct AdminQuery;

#[Object]
impl AdminQuery {
    /// Enforcement agencies (admins).
    async fn agencies(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Agency>> {
        let (api, _) = guard(ctx, Action::Administer)?;
        Ok(api.db.agencies().await.map_err(storage_error)?.into_iter().map(Agency::from).collect())
    }

    /// API keys without their secrets (admins).
    async fn api_keys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiKey>> {
        let (api, _) = guard(ctx, Action::Administer)?;
        Ok(api.db.api_keys().await.map_err(storage_error)?.into_iter().map(ApiKey::from).collect())
    }

    /// Every mutation attempt, newest first (admins).
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<PageCursor, AuditEntry>> {
        let (api, _) = guard(ctx, Action::ReadAudit)?;
        let limit = page_size(first)?;
        let after = cursor(after)?;
        let rows = api.db.audit_page(after, limit + 1).await.map_err(storage_error)?;
        Ok(connection(
            rows,
            limit,
            after.is_some(),
            |e| CaptureCursor { captured_at: e.at, id: e.id },
            AuditEntry::from,
        ))
    }
}

#[derive(Default)]
pub struct AdminMutation;

#[Object]
impl AdminMutation {
    /// Creates an enforcement agency (admins).
    async fn create_agency(
        &self,
        ctx: &Context<'_>,
        name: String,
        jurisdiction: String,
    ) -> async_graphql::Result<Agency> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::Administer)?;
            let name = name.trim();
            let jurisdiction = jurisdiction.trim();
            if name.is_empty() || jurisdiction.is_empty() {
                return Err(Error::invalid("agency name and jurisdiction must not be empty"));
            }
            let agency = domain::Agency {
                id: Uuid::now_v7().to_string(),
                name: name.to_owned(),
                jurisdiction: jurisdiction.to_owned(),
            };
            api.db.insert_agency(&agency, Utc::now()).await.map_err(storage)?;
            Ok(Agency::from(agency))
        }
        .await;
        let target = match &result {
            Ok(a) => format!("agency/{}", a.id.as_str()),
            Err(_) => format!("agency/{}", name.trim()),
        };
        audited(api, who, "createAgency", &target, result).await
    }

    /// Sets or clears (null) the jurisdiction of a site (admins).
    async fn set_site_jurisdiction(
        &self,
        ctx: &Context<'_>,
        site: String,
        jurisdiction: Option<String>,
    ) -> async_graphql::Result<Site> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::Administer)?;
            crate::rollout::ensure_not_managed(&api.db, &site).await?;
            let jurisdiction = jurisdiction.as_deref().map(str::trim);
            if jurisdiction == Some("") {
                return Err(Error::invalid("jurisdiction must not be empty; pass null to clear it"));
            }
            let updated = api.db.set_site_jurisdiction(&site, jurisdiction).await.map_err(storage)?;
            updated.map(Site::from).ok_or_else(|| Error::not_found(format!("no site with id {site:?}")))
        }
        .await;
        audited(api, who, "setSiteJurisdiction", &format!("site/{site}"), result).await
    }

    /// Sets the HOV policy of one lane of a site (admins); captures ingested afterwards are
    /// decided under it.
    async fn set_lane_policy(
        &self,
        ctx: &Context<'_>,
        site: String,
        lane: u32,
        min_occupants: u32,
        #[graphql(default)] windows: Vec<TimeWindow>,
    ) -> async_graphql::Result<LanePolicy> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::Administer)?;
            crate::rollout::ensure_not_managed(&api.db, &site).await?;
            if !(1..=9).contains(&min_occupants) {
                return Err(Error::invalid(format!(
                    "minOccupants must be between 1 and 9, got {min_occupants}"
                )));
            }
            let mut parsed = Vec::with_capacity(windows.len());
            for (i, w) in windows.iter().enumerate() {
                let (Ok(start_minute), Ok(end_minute)) =
                    (u16::try_from(w.start_minute), u16::try_from(w.end_minute))
                else {
                    return Err(Error::invalid(format!("windows[{i}] minutes must be in 0..1440")));
                };
                if start_minute >= 1440 || end_minute >= 1440 || start_minute == end_minute {
                    return Err(Error::invalid(format!(
                        "windows[{i}] must have distinct start and end minutes in 0..1440"
                    )));
                }
                parsed.push(domain::TimeWindow { start_minute, end_minute });
            }
            if api.db.site(&site, &domain::Visibility::All).await.map_err(storage)?.is_none() {
                return Err(Error::not_found(format!("no site with id {site:?}")));
            }
            let policy = domain::HovPolicy { min_occupants, windows: parsed };
            api.db.set_hov_policy(&site, lane, &policy).await.map_err(storage)?;
            Ok(LanePolicy { site: site.clone(), lane, min_occupants, windows })
        }
        .await;
        audited(api, who, "setLanePolicy", &format!("site/{site}/lane/{lane}"), result).await
    }

    /// Creates an API key (admins); the secret is in the answer once and never again.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        name: String,
        role: Role,
        agency_id: Option<ID>,
        #[graphql(default)] all_captures: bool,
    ) -> async_graphql::Result<CreatedApiKey> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::Administer)?;
            let req = KeyRequest {
                name: name.clone(),
                role: role.to_domain(),
                agency_id: agency_id.map(|a| a.0),
                all_captures,
            };
            let (key, secret) = crate::auth::issue_key(&api.db, req, Utc::now()).await?;
            Ok(CreatedApiKey { key: ApiKey::from(key), secret })
        }
        .await;
        let target = match &result {
            Ok(k) => format!("api_key/{}", k.key.id.as_str()),
            Err(_) => format!("api_key/{}", name.trim()),
        };
        audited(api, who, "createApiKey", &target, result).await
    }

    /// Revokes an API key (admins); requests with it fail from then on.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ApiKey> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::Administer)?;
            let key = api.db.revoke_api_key(&id, Utc::now()).await.map_err(storage)?;
            key.map(ApiKey::from)
                .ok_or_else(|| Error::not_found(format!("no api key with id {:?}", id.as_str())))
        }
        .await;
        audited(api, who, "revokeApiKey", &format!("api_key/{}", id.as_str()), result).await
    }

    /// Revokes an agent (admins): its live session ends and its sessions are refused until
    /// `reinstateAgent`; its buffered captures stay on the device meanwhile.
    async fn revoke_agent(&self, ctx: &Context<'_>, id: ID, reason: String) -> async_graphql::Result<Agent> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::Administer)?;
            let reason = reason.trim();
            if reason.is_empty() {
                return Err(Error::invalid("a reason is required to revoke an agent"));
            }
            let agent = api.db.agent(&id).await.map_err(storage)?.ok_or_else(|| no_agent(id.as_str()))?;
            let revocation = domain::AgentRevocation {
                agent_id: agent.id.clone(),
                reason: reason.to_owned(),
                by: who.actor(),
                created_at: Utc::now(),
            };
            let stored = api.db.revoke_agent(&revocation).await.map_err(storage)?;
            api.gateway.revoked(&stored.agent_id, &stored.reason);
            Ok(Agent::from_domain(agent, &api.gateway))
        }
        .await;
        audited(api, who, "revokeAgent", &format!("agent/{}", id.as_str()), result).await
    }

    /// Lifts an agent's revocation (admins); its next reconnect is let in.
    async fn reinstate_agent(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Agent> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::Administer)?;
            let agent = api.db.agent(&id).await.map_err(storage)?.ok_or_else(|| no_agent(id.as_str()))?;
            if !api.db.reinstate_agent(&agent.id).await.map_err(storage)? {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("agent {} is not revoked", agent.id),
                ));
            }
            Ok(Agent::from_domain(agent, &api.gateway))
        }
        .await;
        audited(api, who, "reinstateAgent", &format!("agent/{}", id.as_str()), result).await
    }
}

fn no_agent(id: &str) -> Error {
    Error::not_found(format!("no agent with id {id:?}"))
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Role {
    Admin,
    Operator,
    Agency,
}

impl Role {
    fn from_domain(r: domain::Role) -> Self {
        match r {
            domain::Role::Admin => Self::Admin,
            domain::Role::Operator => Self::Operator,
            domain::Role::Agency => Self::Agency,
        }
    }

    fn to_domain(self) -> domain::Role {
        match self {
            Self::Admin => domain::Role::Admin,
            Self::Operator => domain::Role::Operator,
            Self::Agency => domain::Role::Agency,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AuditResult {
    Ok,
    Error,
}

/// The caller: its key (none for anonymous local access), role and agency.
#[derive(SimpleObject)]
pub struct Me {
    key_id: Option<ID>,
    role: Role,
    agency_id: Option<ID>,
    all_captures: bool,
}

#[derive(SimpleObject)]
pub struct Agency {
    id: ID,
    name: String,
    jurisdiction: String,
}

impl From<domain::Agency> for Agency {
    fn from(a: domain::Agency) -> Self {
        Self { id: ID(a.id), name: a.name, jurisdiction: a.jurisdiction }
    }
}

/// An API key as listed: never its secret.
#[derive(SimpleObject)]
pub struct ApiKey {
    id: ID,
    name: String,
    role: Role,
    agency_id: Option<ID>,
    all_captures: bool,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<domain::ApiKey> for ApiKey {
    fn from(k: domain::ApiKey) -> Self {
        Self {
            id: ID(k.id),
            name: k.name,
            role: Role::from_domain(k.role),
            agency_id: k.agency_id.map(ID),
            all_captures: k.all_captures,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct CreatedApiKey {
    key: ApiKey,
    /// The bearer token `lw_<id>_<secret>`; shown only in this answer.
    secret: String,
}

#[derive(SimpleObject)]
pub struct AuditEntry {
    id: ID,
    at: DateTime<Utc>,
    /// The API key id, or `anonymous-local`.
    actor: String,
    action: String,
    target: String,
    result: AuditResult,
    message: Option<String>,
}

impl From<domain::AuditEntry> for AuditEntry {
    fn from(e: domain::AuditEntry) -> Self {
        Self {
            id: ID(e.id.to_string()),
            at: e.at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            result: if e.ok { AuditResult::Ok } else { AuditResult::Error },
            message: e.message,
        }
    }
}

/// A UTC time-of-day window in minutes after midnight; start > end wraps midnight.
#[derive(InputObject, SimpleObject, Clone, Copy)]
#[graphql(input_name = "TimeWindowInput")]
pub struct TimeWindow {
    start_minute: i32,
    end_minute: i32,
}

#[derive(SimpleObject)]
pub struct LanePolicy {
    site: String,
    lane: u32,
    min_occupants: u32,
    windows: Vec<TimeWindow>,
}

//! The GraphQL API (async-graphql): schema, GraphQL object types converted by hand from domain
//! types, Relay pagination, audited admin and review mutations, and live agent introspection.
//!
//! Who sees what is decided in one place: every resolver that reads or writes starts with
//! `guard` (the role × action matrix of `auth`), and every database read takes the principal's
//! `Visibility`, which `db` applies in SQL; nested fields (a violation's capture, a capture's
//! violation) go through the same two steps, so no path leads into another agency's rows.

use async_graphql::connection::{Connection, CursorType, Edge};
use async_graphql::{
    ComplexObject, Context, Enum, ErrorExtensions, ID, InputObject, Object, Schema, SchemaBuilder,
    SimpleObject, Subscription,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::{Action, KeyRequest, Principal};
use crate::blob::BlobStore;
use crate::db::{Db, Reviewed};
use crate::domain::{self, CaptureCursor};
use crate::error::{Error, ErrorKind};
use crate::events::EventKind;
use crate::gateway::Gateway;
use crate::links::ImageLinks;

pub type LanewatchSchema = Schema<Query, Mutation, SubscriptionRoot>;

/// What resolvers need, put into the schema's data. The request's `Principal` is added per
/// request by the HTTP layer.
#[derive(Clone)]
pub struct ApiContext {
    pub db: Db,
    pub gateway: Gateway,
    pub blobs: BlobStore,
    /// Time-limited image URLs (presigned S3 or HMAC-signed `/images/{id}`).
    pub links: ImageLinks,
}

pub const MAX_DEPTH: usize = 10;
pub const MAX_COMPLEXITY: usize = 1000;
pub const MAX_PAGE: i32 = 100;

/// The schema without runtime data (enough for the SDL).
pub fn builder() -> SchemaBuilder<Query, Mutation, SubscriptionRoot> {
    Schema::build(Query, Mutation, SubscriptionRoot).limit_depth(MAX_DEPTH).limit_complexity(MAX_COMPLEXITY)
}

pub fn schema(ctx: ApiContext) -> LanewatchSchema {
    builder().data(ctx).finish()
}

fn parts<'c>(ctx: &Context<'c>) -> async_graphql::Result<(&'c ApiContext, &'c Principal)> {
    let api = ctx.data::<ApiContext>()?;
    let who = ctx
        .data::<Principal>()
        .map_err(|_| Error::unauthenticated("request carries no authenticated principal").extend())?;
    Ok((api, who))
}

/// The resolver-level guard: the caller's principal, if its role may perform `action`.
fn guard<'c>(ctx: &Context<'c>, action: Action) -> async_graphql::Result<(&'c ApiContext, &'c Principal)> {
    let (api, who) = parts(ctx)?;
    who.authorize(action).map_err(|e| e.extend())?;
    Ok((api, who))
}

fn storage(e: crate::db::DbError) -> Error {
    Error::unavailable(format!("database unavailable: {e}"))
}

fn storage_error(e: crate::db::DbError) -> async_graphql::Error {
    storage(e).extend()
}

fn page_size(first: i32) -> async_graphql::Result<u64> {
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(Error::invalid(format!("first must be between 1 and {MAX_PAGE}, got {first}")).extend());
    }
    Ok(u64::try_from(first).unwrap_or(20))
}

fn cursor(after: Option<String>) -> async_graphql::Result<Option<CaptureCursor>> {
    match after {
        None => Ok(None),
        Some(text) => PageCursor::decode_cursor(&text)
            .map(|c| Some(c.0))
            .map_err(|_| Error::invalid(format!("after {text:?} is not a cursor from this api")).extend()),
    }
}

/// A Relay connection from one over-fetched keyset page (`limit + 1` rows).
fn connection<D, N>(
    mut rows: Vec<D>,
    limit: u64,
    had_after: bool,
    key: impl Fn(&D) -> CaptureCursor,
    node: impl Fn(D) -> N,
) -> Connection<PageCursor, N>
where
    N: async_graphql::OutputType,
{
    let has_next = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let mut c = Connection::new(had_after, has_next);
    c.edges.extend(rows.into_iter().map(|d| Edge::new(PageCursor(key(&d)), node(d))));
    c
}

fn parse_uuid(what: &str, id: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(id).map_err(|_| Error::invalid(format!("{what} {id:?} is not a uuid")))
}

pub struct Query;

#[Object]
impl Query {
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

    /// Every agent that ever connected, by id (operators and admins).
    async fn agents(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Agent>> {
        let (api, _) = guard(ctx, Action::ReadFleet)?;
        let agents = api.db.agents().await.map_err(storage_error)?;
        Ok(agents.into_iter().map(|a| Agent::from_domain(a, &api.gateway)).collect())
    }

    async fn agent(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Agent>> {
        let (api, _) = guard(ctx, Action::ReadFleet)?;
        Ok(api.db.agent(&id).await.map_err(storage_error)?.map(|a| Agent::from_domain(a, &api.gateway)))
    }

    /// Sites the caller may see (an agency: those in its jurisdiction).
    async fn sites(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Site>> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        Ok(api
            .db
            .sites(&who.visibility())
            .await
            .map_err(storage_error)?
            .into_iter()
            .map(Site::from)
            .collect())
    }

    /// Captures the caller may see, newest first by capture time; `from` is inclusive, `to`
    /// exclusive. An agency key without the all-captures grant sees only flagged captures.
    #[allow(clippy::too_many_arguments)]
    async fn captures(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        site: Option<String>,
        lane: Option<u32>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        decision: Option<Decision>,
        min_occupants: Option<u32>,
        max_occupants: Option<u32>,
        vehicle_class: Option<VehicleClass>,
    ) -> async_graphql::Result<Connection<PageCursor, Capture>> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        let limit = page_size(first)?;
        let after = cursor(after)?;
        let filter = domain::CaptureFilter {
            site_id: site,
            lane,
            from,
            to,
            decision: decision.map(Decision::to_domain),
            min_occupants,
            max_occupants,
            vehicle_class: vehicle_class.map(VehicleClass::to_domain),
        };
        let rows = api
            .db
            .captures_page(&filter, &who.visibility(), after, limit + 1)
            .await
            .map_err(storage_error)?;
        Ok(connection(rows, limit, after.is_some(), CaptureCursor::of, Capture::from_domain))
    }

    async fn capture(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Capture>> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        let id = parse_uuid("capture id", &id).map_err(|e| e.extend())?;
        let found = api.db.capture(id, &who.visibility()).await.map_err(storage_error)?;
        Ok(found.map(Capture::from_domain))
    }

    /// Violation records the caller may see, newest capture first.
    async fn violations(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        state: Option<ViolationState>,
        site: Option<String>,
    ) -> async_graphql::Result<Connection<PageCursor, Violation>> {
        let (api, who) = guard(ctx, Action::ReadViolations)?;
        let limit = page_size(first)?;
        let after = cursor(after)?;
        let rows = api
            .db
            .violations_page(
                state.map(ViolationState::to_domain),
                site.as_deref(),
                &who.visibility(),
                after,
                limit + 1,
            )
            .await
            .map_err(storage_error)?;
        Ok(connection(
            rows,
            limit,
            after.is_some(),
            |v| CaptureCursor { captured_at: v.captured_at, id: v.id },
            Violation,
        ))
    }

    async fn violation(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Violation>> {
        let (api, who) = guard(ctx, Action::ReadViolations)?;
        let id = parse_uuid("violation id", &id).map_err(|e| e.extend())?;
        Ok(api.db.violation(id, &who.visibility()).await.map_err(storage_error)?.map(Violation))
    }

    /// Vehicles per site per hour in `[from, to)`: occupancy distribution and violation rate,
    /// over the captures the caller may see.
    async fn occupancy_stats(
        &self,
        ctx: &Context<'_>,
        site: Option<String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> async_graphql::Result<Vec<HourlyStats>> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        if to <= from || to - from > chrono::Duration::days(93) {
            return Err(Error::invalid("occupancyStats needs from < to, at most 93 days apart").extend());
        }
        let rows = api
            .db
            .occupancy_stats(site.as_deref(), from, to, &who.visibility())
            .await
            .map_err(storage_error)?;
        Ok(rows.into_iter().map(HourlyStats::from).collect())
    }

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

    /// Proofs that agents deleted captures without uploading them (evicted when their buffer
    /// was full, expired, damaged), newest deletion first. Admins and operators see all; an
    /// agency sees those of its jurisdiction's sites.
    async fn deletion_receipts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        site: Option<String>,
    ) -> async_graphql::Result<Connection<PageCursor, DeletionReceipt>> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        let limit = page_size(first)?;
        let after = cursor(after)?;
        let rows = api
            .db
            .receipts_page(site.as_deref(), &who.visibility(), after, limit + 1)
            .await
            .map_err(storage_error)?;
        Ok(connection(
            rows,
            limit,
            after.is_some(),
            |r| CaptureCursor { captured_at: r.deleted_at, id: r.receipt_id },
            DeletionReceipt::from,
        ))
    }

    /// A site's agent config: the newest version, or `version` (admins and operators).
    async fn site_config(
        &self,
        ctx: &Context<'_>,
        site_id: String,
        version: Option<u64>,
    ) -> async_graphql::Result<Option<SiteConfig>> {
        let (api, _) = guard(ctx, Action::ConfigureSites)?;
        let config = api.db.site_config(&site_id, version).await.map_err(storage_error)?;
        Ok(config.map(SiteConfig::from))
    }

    /// A site's config versions, newest first (admins and operators).
    async fn site_config_history(
        &self,
        ctx: &Context<'_>,
        site_id: String,
        #[graphql(default = 20)] first: i32,
    ) -> async_graphql::Result<Vec<SiteConfig>> {
        let (api, _) = guard(ctx, Action::ConfigureSites)?;
        let limit = page_size(first)?;
        let history = api.db.site_config_history(&site_id, limit).await.map_err(storage_error)?;
        Ok(history.into_iter().map(SiteConfig::from).collect())
    }
}

pub struct Mutation;

/// Authorizes, runs and audits one mutation: the audit row records the outcome, denials included.
async fn audited<T>(
    api: &ApiContext,
    who: &Principal,
    action: &str,
    target: &str,
    result: Result<T, Error>,
) -> async_graphql::Result<T> {
    let entry = domain::AuditEntry {
        id: Uuid::now_v7(),
        at: Utc::now(),
        actor: who.actor(),
        action: action.to_owned(),
        target: target.to_owned(),
        ok: result.is_ok(),
        message: result.as_ref().err().map(|e| e.message.clone()),
    };
    if let Err(e) = api.db.insert_audit(&entry).await {
        tracing::error!(action, target, error = %e, "cannot write the audit log");
        return Err(Error::unavailable(format!("audit log unavailable: {e}")).extend());
    }
    if let Err(e) = &result {
        tracing::info!(actor = %entry.actor, action, target, code = e.kind.metric_label(), "mutation refused");
    }
    result.map_err(|e| e.extend())
}

#[Object]
impl Mutation {
    /// Confirms or rejects a pending violation (operators and admins); a reason is required to reject.
    async fn review_violation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        decision: ReviewDecision,
        reason: Option<String>,
    ) -> async_graphql::Result<Violation> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::ReviewViolation)?;
            let id = parse_uuid("violation id", &id)?;
            let reason = reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
            let decision = match decision {
                ReviewDecision::Confirm => domain::ReviewDecision::Confirm,
                ReviewDecision::Reject => domain::ReviewDecision::Reject,
            };
            if decision == domain::ReviewDecision::Reject && reason.is_none() {
                return Err(Error::invalid("a reason is required to reject a violation"));
            }
            let reviewed = api
                .db
                .review_violation(id, decision, &who.actor(), reason, &who.visibility(), Utc::now())
                .await
                .map_err(storage)?;
            match reviewed {
                Reviewed::Done(v) => Ok(Violation(v)),
                Reviewed::NotFound => Err(Error::not_found(format!("no violation with id {id}"))),
                Reviewed::AlreadyReviewed(state) => Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("violation {id} was already reviewed: {}", state.as_str()),
                )),
            }
        }
        .await;
        audited(api, who, "reviewViolation", &format!("violation/{}", id.as_str()), result).await
    }

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

    /// Stores a new version of a site's agent config (admins and operators) and pushes it to
    /// the site's online agents, answering once they acked (or after a few seconds). The text
    /// is validated as the agent validates it; an error names the field and its line, and
    /// nothing is stored. Offline agents get it when they reconnect.
    async fn update_site_config(
        &self,
        ctx: &Context<'_>,
        site_id: String,
        toml: String,
        comment: Option<String>,
    ) -> async_graphql::Result<SiteConfig> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::ConfigureSites)?;
            let actor = who.actor();
            let new = new_site_config(&site_id, comment.as_deref(), None, &actor);
            crate::rollout::publish(&api.db, &api.gateway, &new, &toml).await.map(SiteConfig::from)
        }
        .await;
        let target = config_target(&site_id, &result);
        audited(api, who, "updateSiteConfig", &target, result).await
    }

    /// Makes the content of an earlier `version` the site's newest version (admins and
    /// operators), pushed like `updateSiteConfig`.
    async fn rollback_site_config(
        &self,
        ctx: &Context<'_>,
        site_id: String,
        version: u64,
        comment: Option<String>,
    ) -> async_graphql::Result<SiteConfig> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::ConfigureSites)?;
            let earlier =
                api.db.site_config(&site_id, Some(version)).await.map_err(storage)?.ok_or_else(|| {
                    Error::not_found(format!("site {site_id:?} has no config version {version}"))
                })?;
            let actor = who.actor();
            let comment = comment.unwrap_or_else(|| format!("rollback to version {version}"));
            let new = new_site_config(&site_id, Some(&comment), Some(version), &actor);
            crate::rollout::publish(&api.db, &api.gateway, &new, &earlier.toml).await.map(SiteConfig::from)
        }
        .await;
        let target = config_target(&site_id, &result);
        audited(api, who, "rollbackSiteConfig", &target, result).await
    }
}

fn new_site_config<'a>(
    site_id: &'a str,
    comment: Option<&'a str>,
    rolled_back_from: Option<u64>,
    actor: &'a str,
) -> crate::db::NewSiteConfig<'a> {
    crate::db::NewSiteConfig {
        site_id,
        comment: comment.map(str::trim).filter(|c| !c.is_empty()),
        rolled_back_from,
        created_by: actor,
        created_at: Utc::now(),
    }
}

/// The audit target of a config mutation: the version it stored, when it stored one.
fn config_target(site_id: &str, result: &Result<SiteConfig, Error>) -> String {
    match result {
        Ok(c) => format!("site/{site_id}/config/{}", c.version),
        Err(_) => format!("site/{site_id}/config"),
    }
}

fn no_agent(id: &str) -> Error {
    Error::not_found(format!("no agent with id {id:?}"))
}

/// Why an agent deleted a capture without uploading it.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum DeletionReason {
    EvictedFull,
    Expired,
    Damaged,
    Unknown,
}

/// How much a capture was worth keeping, as its agent classed it.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ValueClass {
    Statistics,
    Compliant,
    ViolationCandidate,
    Unknown,
}

/// An agent's proof that it deleted a capture the control plane never received.
#[derive(SimpleObject)]
pub struct DeletionReceipt {
    receipt_id: ID,
    /// Null when the agent could not read the damaged record's id.
    capture_id: Option<ID>,
    agent_id: String,
    site: String,
    value_class: ValueClass,
    /// Null when unknown (a damaged record).
    captured_at: Option<DateTime<Utc>>,
    deleted_at: DateTime<Utc>,
    reason: DeletionReason,
    /// Bytes the capture occupied in the agent's buffer.
    bytes: u64,
}

impl From<domain::DeletionReceipt> for DeletionReceipt {
    fn from(r: domain::DeletionReceipt) -> Self {
        Self {
            receipt_id: ID(r.receipt_id.to_string()),
            capture_id: r.capture_id.map(|id| ID(id.to_string())),
            agent_id: r.agent_id,
            site: r.site_id,
            value_class: match r.value_class {
                domain::ValueClass::Statistics => ValueClass::Statistics,
                domain::ValueClass::Compliant => ValueClass::Compliant,
                domain::ValueClass::ViolationCandidate => ValueClass::ViolationCandidate,
                domain::ValueClass::Unknown => ValueClass::Unknown,
            },
            captured_at: r.captured_at,
            deleted_at: r.deleted_at,
            reason: match r.reason {
                domain::DeletionReason::EvictedFull => DeletionReason::EvictedFull,
                domain::DeletionReason::Expired => DeletionReason::Expired,
                domain::DeletionReason::Damaged => DeletionReason::Damaged,
                domain::DeletionReason::Unknown => DeletionReason::Unknown,
            },
            bytes: r.bytes,
        }
    }
}

/// Live updates over WebSocket (`/graphql/ws`), fed by the gateway's event bus (and, with
/// replicas, by the others'). Authorization is checked when subscribing; visibility per event.
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Captures as they are durably stored, optionally of one site; each is re-read through the
    /// caller's visibility, so an agency sees exactly what its `captures` query would show.
    async fn capture_added(
        &self,
        ctx: &Context<'_>,
        site: Option<String>,
    ) -> async_graphql::Result<BoxStream<'static, Capture>> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        let db = api.db.clone();
        let visibility = who.visibility();
        let events = tokio_stream::wrappers::BroadcastStream::new(api.gateway.events().subscribe());
        Ok(events
            .filter_map(move |event| {
                let db = db.clone();
                let visibility = visibility.clone();
                let site = site.clone();
                async move {
                    let event = match event {
                        Ok(event) => event,
                        Err(lagged) => {
                            tracing::warn!(error = %lagged, "captureAdded subscriber fell behind");
                            return None;
                        }
                    };
                    let EventKind::CaptureStored { capture_id, site_id } = event.kind else { return None };
                    if site.as_ref().is_some_and(|s| *s != site_id) {
                        return None;
                    }
                    match db.capture(capture_id, &visibility).await {
                        Ok(found) => found.map(Capture::from_domain),
                        Err(e) => {
                            tracing::warn!(%capture_id, error = %e, "captureAdded cannot read a capture");
                            None
                        }
                    }
                }
            })
            .boxed())
    }

    /// Agents going online or offline (operators and admins).
    async fn agent_status_changed(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<BoxStream<'static, AgentStatusChange>> {
        guard(ctx, Action::ReadFleet)?;
        let (api, _) = parts(ctx)?;
        let events = tokio_stream::wrappers::BroadcastStream::new(api.gateway.events().subscribe());
        Ok(events
            .filter_map(|event| async move {
                match event.ok()?.kind {
                    EventKind::AgentStatus { agent_id, site_id, online, at } => {
                        Some(AgentStatusChange { agent_id: ID(agent_id), site: site_id, online, at })
                    }
                    EventKind::CaptureStored { .. }
                    | EventKind::AgentRevoked { .. }
                    | EventKind::SiteConfigChanged { .. } => None,
                }
            })
            .boxed())
    }
}

/// An agent's session opened (`online`) or closed.
#[derive(SimpleObject, Clone)]
pub struct AgentStatusChange {
    agent_id: ID,
    site: String,
    online: bool,
    at: DateTime<Utc>,
}

/// The opaque Relay cursor of a keyset page: `(timestamp, uuid)`.
#[derive(Debug, Clone, Copy)]
pub struct PageCursor(pub CaptureCursor);

impl CursorType for PageCursor {
    type Error = String;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        CaptureCursor::decode(s).map(PageCursor).ok_or_else(|| "invalid cursor".to_owned())
    }

    fn encode_cursor(&self) -> String {
        self.0.encode()
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Health {
    Unknown,
    Ok,
    Degraded,
    Failing,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ComponentStatus {
    Unknown,
    Starting,
    Running,
    BackingOff,
    Stopped,
    Failed,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum VehicleClass {
    Motorcycle,
    Car,
    Van,
    Truck,
    Bus,
    Unknown,
}

impl VehicleClass {
    fn from_domain(v: domain::VehicleClass) -> Self {
        match v {
            domain::VehicleClass::Motorcycle => Self::Motorcycle,
            domain::VehicleClass::Car => Self::Car,
            domain::VehicleClass::Van => Self::Van,
            domain::VehicleClass::Truck => Self::Truck,
            domain::VehicleClass::Bus => Self::Bus,
            domain::VehicleClass::Unknown => Self::Unknown,
        }
    }

    fn to_domain(self) -> domain::VehicleClass {
        match self {
            Self::Motorcycle => domain::VehicleClass::Motorcycle,
            Self::Car => domain::VehicleClass::Car,
            Self::Van => domain::VehicleClass::Van,
            Self::Truck => domain::VehicleClass::Truck,
            Self::Bus => domain::VehicleClass::Bus,
            Self::Unknown => domain::VehicleClass::Unknown,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum OccupancyStatus {
    Unknown,
    Counted,
    Unreadable,
}

/// What the lane's HOV policy made of a capture at ingest.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Decision {
    Compliant,
    ViolationCandidate,
    Unreadable,
    Unknown,
}

impl Decision {
    fn from_domain(d: domain::Decision) -> Self {
        match d {
            domain::Decision::Compliant => Self::Compliant,
            domain::Decision::ViolationCandidate => Self::ViolationCandidate,
            domain::Decision::Unreadable => Self::Unreadable,
            domain::Decision::Unknown => Self::Unknown,
        }
    }

    fn to_domain(self) -> domain::Decision {
        match self {
            Self::Compliant => domain::Decision::Compliant,
            Self::ViolationCandidate => domain::Decision::ViolationCandidate,
            Self::Unreadable => domain::Decision::Unreadable,
            Self::Unknown => domain::Decision::Unknown,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ViolationState {
    Pending,
    Confirmed,
    Rejected,
}

impl ViolationState {
    fn from_domain(s: domain::ViolationState) -> Self {
        match s {
            domain::ViolationState::Pending => Self::Pending,
            domain::ViolationState::Confirmed => Self::Confirmed,
            domain::ViolationState::Rejected => Self::Rejected,
        }
    }

    fn to_domain(self) -> domain::ViolationState {
        match self {
            Self::Pending => domain::ViolationState::Pending,
            Self::Confirmed => domain::ViolationState::Confirmed,
            Self::Rejected => domain::ViolationState::Rejected,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ReviewDecision {
    Confirm,
    Reject,
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
pub struct Site {
    id: ID,
    name: String,
    /// Null until an admin sets it; agencies see only sites of their jurisdiction.
    jurisdiction: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<domain::Site> for Site {
    fn from(s: domain::Site) -> Self {
        Self { id: ID(s.id), name: s.name, jurisdiction: s.jurisdiction, created_at: s.created_at }
    }
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

#[derive(SimpleObject)]
pub struct OccupancyDistribution {
    zero: u64,
    one: u64,
    two: u64,
    three_plus: u64,
    /// Not counted by vision (unknown or unreadable).
    unknown: u64,
}

#[derive(SimpleObject)]
pub struct HourlyStats {
    site: String,
    /// Start of the hour (UTC).
    hour: DateTime<Utc>,
    vehicles: u64,
    occupancy: OccupancyDistribution,
    /// Captures with a violation record that was not rejected.
    violations: u64,
    /// `violations / vehicles`.
    violation_rate: f64,
}

impl From<domain::HourlyStats> for HourlyStats {
    fn from(s: domain::HourlyStats) -> Self {
        let violation_rate = if s.vehicles == 0 { 0.0 } else { s.violations as f64 / s.vehicles as f64 };
        Self {
            site: s.site_id,
            hour: s.hour,
            vehicles: s.vehicles,
            occupancy: OccupancyDistribution {
                zero: s.occupants_0,
                one: s.occupants_1,
                two: s.occupants_2,
                three_plus: s.occupants_3_plus,
                unknown: s.unknown,
            },
            violations: s.violations,
            violation_rate,
        }
    }
}

/// One version of a site's agent config.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct SiteConfig {
    site: String,
    /// 1, 2, 3, … per site; the agent reports it as `Agent.configVersion` once it runs it.
    version: u64,
    /// The agent config file (TOML) as pushed, `config_version` stamped.
    toml: String,
    comment: Option<String>,
    /// The version whose content this one restores, for a rollback.
    rolled_back_from: Option<u64>,
    /// The API key (or `anonymous-local`) that made it.
    created_by: String,
    created_at: DateTime<Utc>,
}

impl From<domain::SiteConfigVersion> for SiteConfig {
    fn from(c: domain::SiteConfigVersion) -> Self {
        Self {
            site: c.site_id,
            version: c.version,
            toml: c.toml,
            comment: c.comment,
            rolled_back_from: c.rolled_back_from,
            created_by: c.created_by,
            created_at: c.created_at,
        }
    }
}

#[ComplexObject]
impl SiteConfig {
    /// Each agent's state with this version, by agent id.
    async fn rollout(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AgentConfigRollout>> {
        let (api, _) = guard(ctx, Action::ConfigureSites)?;
        let states = api.db.config_states(&self.site, self.version).await.map_err(storage_error)?;
        Ok(states.into_iter().map(AgentConfigRollout::from).collect())
    }
}

/// Where one agent stands with one config version.
#[derive(SimpleObject)]
pub struct AgentConfigRollout {
    agent_id: ID,
    version: u64,
    state: RolloutState,
    /// The agent's reason, when it rejected the version (or could not run it).
    error: Option<String>,
    updated_at: DateTime<Utc>,
}

impl From<domain::AgentConfigState> for AgentConfigRollout {
    fn from(s: domain::AgentConfigState) -> Self {
        Self {
            agent_id: ID(s.agent_id),
            version: s.version,
            state: RolloutState::from_domain(s.state),
            error: s.error,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum RolloutState {
    /// Stored, not delivered yet (the agent is offline or did not answer).
    Pending,
    /// Validated and written by the agent; in force once its components restarted.
    Staged,
    /// The agent reported (in its Hello) that it runs this version.
    Applied,
    /// The agent refused the version or could not run it and went back to its previous one.
    Rejected,
}

impl RolloutState {
    fn from_domain(s: domain::RolloutState) -> Self {
        match s {
            domain::RolloutState::Pending => Self::Pending,
            domain::RolloutState::Staged => Self::Staged,
            domain::RolloutState::Applied => Self::Applied,
            domain::RolloutState::Rejected => Self::Rejected,
        }
    }
}

pub struct Agent {
    agent: domain::Agent,
    online: bool,
}

impl Agent {
    fn from_domain(agent: domain::Agent, gateway: &Gateway) -> Self {
        // the row says online until the session's end is recorded; the registry is the truth
        let online = agent.online && gateway.counts_as_online(&agent);
        Self { agent, online }
    }
    async fn revocation(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<domain::AgentRevocation>> {
        let (api, _) = guard(ctx, Action::ReadFleet)?;
        api.db.revocation(&self.agent.id).await.map_err(storage_error)
    }
}

#[Object]
impl Agent {
    async fn id(&self) -> ID {
        ID(self.agent.id.clone())
    }
    async fn site(&self) -> &str {
        &self.agent.site_id
    }
    async fn online(&self) -> bool {
        self.online
    }
    async fn last_seen(&self) -> DateTime<Utc> {
        self.agent.last_seen
    }
    /// Software version the agent reported.
    async fn version(&self) -> &str {
        &self.agent.software_version
    }
    async fn config_version(&self) -> u64 {
        self.agent.config_version
    }
    async fn health(&self) -> Health {
        match self.agent.health {
            domain::Health::Unknown => Health::Unknown,
            domain::Health::Ok => Health::Ok,
            domain::Health::Degraded => Health::Degraded,
            domain::Health::Failing => Health::Failing,
        }
    }
    async fn buffered_captures(&self) -> u64 {
        self.agent.buffered_captures
    }
    /// Whether the agent is revoked: its sessions are refused.
    async fn revoked(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        Ok(self.revocation(ctx).await?.is_some())
    }
    /// Why the agent was revoked; null when it is not.
    async fn revoked_reason(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        Ok(self.revocation(ctx).await?.map(|r| r.reason))
    }
    /// Supervised components, asked live from the agent; an error when it is offline.
    async fn components(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Component>> {
        let (api, _) = guard(ctx, Action::ReadFleet)?;
        let states = api.gateway.request_introspection(&self.agent.id).await.map_err(|e| e.extend())?;
        Ok(states.into_iter().map(Component::from_domain).collect())
    }
}

#[derive(SimpleObject)]
pub struct Component {
    name: String,
    status: ComponentStatus,
    restarts: u32,
    last_failure: Option<String>,
    last_failure_at: Option<DateTime<Utc>>,
    backoff_ms: u64,
    processed: u64,
    detail_json: String,
}

impl Component {
    fn from_domain(c: domain::ComponentState) -> Self {
        let status = match c.status {
            domain::ComponentStatus::Unknown => ComponentStatus::Unknown,
            domain::ComponentStatus::Starting => ComponentStatus::Starting,
            domain::ComponentStatus::Running => ComponentStatus::Running,
            domain::ComponentStatus::BackingOff => ComponentStatus::BackingOff,
            domain::ComponentStatus::Stopped => ComponentStatus::Stopped,
            domain::ComponentStatus::Failed => ComponentStatus::Failed,
        };
        Self {
            name: c.name,
            status,
            restarts: c.restarts,
            last_failure: c.last_failure,
            last_failure_at: c.last_failure_at,
            backoff_ms: c.backoff_ms,
            processed: c.processed,
            detail_json: c.detail_json,
        }
    }
}

#[derive(SimpleObject)]
pub struct Occupancy {
    status: OccupancyStatus,
    /// Present only when the status is COUNTED.
    occupants: Option<u32>,
}

#[derive(SimpleObject)]
pub struct SectionCount {
    section: String,
    occupants: u32,
    confidence: f64,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Capture {
    id: ID,
    agent_id: String,
    site: String,
    lane: u32,
    captured_at: DateTime<Utc>,
    detected_at: Option<DateTime<Utc>>,
    vehicle_class: VehicleClass,
    occupancy: Occupancy,
    /// Occupants per seat section, as vision reported them.
    sections: Vec<SectionCount>,
    decision: Decision,
    /// The lowest section confidence, when vision reported sections.
    confidence: Option<f64>,
    model_version: Option<String>,
    speed_kmh: Option<f64>,
    height_m: f64,
    width_m: f64,
    camera_id: String,
    config_version: u64,
    image_sha256: String,
    image_bytes: u64,
    #[graphql(skip)]
    capture_id: Uuid,
    #[graphql(skip)]
    image_key: String,
}

#[ComplexObject]
impl Capture {
    /// Absolute, time-limited URL of the image (`blob.presign_ttl_secs`): a presigned S3 URL, or
    /// a signed `/images/{id}` link that needs no API key until it expires.
    async fn image_url(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        let (api, _) = guard(ctx, Action::ReadCaptures)?;
        api.links.url(self.capture_id, &self.image_key, Utc::now()).await.map_err(|e| e.extend())
    }

    /// The violation record of this capture, when it has one the caller may see.
    async fn violation(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Violation>> {
        let (api, who) = guard(ctx, Action::ReadViolations)?;
        let found =
            api.db.violation_of_capture(self.capture_id, &who.visibility()).await.map_err(storage_error)?;
        Ok(found.map(Violation))
    }
}

/// Widens through the shortest decimal form so that 12.3f32 reads 12.3.
fn widen(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

impl Capture {
    fn from_domain(c: domain::Capture) -> Self {
        let m = c.meta;
        let status = match m.occupancy_status {
            domain::OccupancyStatus::Unknown => OccupancyStatus::Unknown,
            domain::OccupancyStatus::Counted => OccupancyStatus::Counted,
            domain::OccupancyStatus::Unreadable => OccupancyStatus::Unreadable,
        };
        Self {
            id: ID(m.id.to_string()),
            capture_id: m.id,
            agent_id: c.agent_id,
            site: m.site_id,
            lane: m.lane,
            captured_at: m.captured_at,
            detected_at: m.detected_at,
            vehicle_class: VehicleClass::from_domain(m.vehicle_class),
            occupancy: Occupancy { status, occupants: m.occupants },
            sections: m
                .sections
                .into_iter()
                .map(|s| SectionCount {
                    section: s.section,
                    occupants: s.occupants,
                    confidence: widen(s.confidence),
                })
                .collect(),
            decision: Decision::from_domain(c.decision),
            confidence: m.confidence.map(widen),
            model_version: m.model_version,
            speed_kmh: m.speed_kmh.map(widen),
            height_m: widen(m.height_m),
            width_m: widen(m.width_m),
            camera_id: m.camera_id,
            config_version: m.config_version,
            image_key: c.image_key,
            image_sha256: hex::encode(c.image_sha256),
            image_bytes: c.image_bytes,
        }
    }
}

/// A capture the HOV policy flagged, and its review.
pub struct Violation(domain::Violation);

#[Object]
impl Violation {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn site(&self) -> &str {
        &self.0.site_id
    }
    async fn captured_at(&self) -> DateTime<Utc> {
        self.0.captured_at
    }
    async fn state(&self) -> ViolationState {
        ViolationState::from_domain(self.0.state)
    }
    /// The API key id of the reviewer.
    async fn reviewer(&self) -> Option<&str> {
        self.0.reviewer.as_deref()
    }
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn reviewed_at(&self) -> Option<DateTime<Utc>> {
        self.0.reviewed_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The flagged capture.
    async fn capture(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Capture>> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        let found = api.db.capture(self.0.capture_id, &who.visibility()).await.map_err(storage_error)?;
        Ok(found.map(Capture::from_domain))
    }
    /// Everything needed to prosecute, once confirmed; null while pending or when rejected.
    /// Image hashes are recomputed from the stored bytes and must equal those verified at ingest.
    async fn evidence_package(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<EvidencePackage>> {
        let (api, who) = guard(ctx, Action::ReadViolations)?;
        if self.0.state != domain::ViolationState::Confirmed {
            return Ok(None);
        }
        let Some(c) = api.db.capture(self.0.capture_id, &who.visibility()).await.map_err(storage_error)?
        else {
            return Ok(None);
        };
        let bytes = api.blobs.get(&c.image_key).await.map_err(|e| {
            Error::unavailable(format!("image of capture {} is unavailable: {e}", c.meta.id)).extend()
        })?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if digest != c.image_sha256 {
            tracing::error!(capture_id = %c.meta.id, "stored image does not match its ingest sha256");
            return Err(Error::new(
                ErrorKind::Internal,
                format!("image of capture {} failed its integrity check", c.meta.id),
            )
            .extend());
        }
        let image = EvidenceImage {
            camera_id: c.meta.camera_id.clone(),
            url: api.links.url(c.meta.id, &c.image_key, Utc::now()).await.map_err(|e| e.extend())?,
            sha256: hex::encode(digest),
            bytes: bytes.len() as u64,
            content_type: c.image_content_type.mime().to_owned(),
        };
        Ok(Some(EvidencePackage {
            violation_id: ID(self.0.id.to_string()),
            state: ViolationState::from_domain(self.0.state),
            reviewer: self.0.reviewer.clone(),
            reviewed_at: self.0.reviewed_at,
            model_version: c.meta.model_version.clone(),
            config_version: c.meta.config_version,
            decision: Decision::from_domain(c.decision),
            images: vec![image],
            generated_at: Utc::now(),
            capture: Capture::from_domain(c),
        }))
    }
}

#[derive(SimpleObject)]
pub struct EvidenceImage {
    camera_id: String,
    url: String,
    /// SHA-256 of the image bytes as stored, hex.
    sha256: String,
    bytes: u64,
    content_type: String,
}

/// The evidence of a confirmed violation: capture metadata, the decision and the versions that
/// produced it, and each image with its content hash.
#[derive(SimpleObject)]
pub struct EvidencePackage {
    violation_id: ID,
    state: ViolationState,
    reviewer: Option<String>,
    reviewed_at: Option<DateTime<Utc>>,
    capture: Capture,
    decision: Decision,
    model_version: Option<String>,
    config_version: u64,
    images: Vec<EvidenceImage>,
    generated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDL_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");

    #[test]
    fn committed_sdl_matches_code() {
        let sdl = builder().finish().sdl();
        if std::env::var_os("LANEWATCH_BLESS").is_some() {
            std::fs::write(SDL_PATH, &sdl).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(SDL_PATH).unwrap_or_default();
        assert!(
            committed == sdl,
            "control-plane/schema.graphql drifted from the code; rerun with LANEWATCH_BLESS=1 and commit it"
        );
    }

    #[tokio::test]
    async fn captures_page_through_opaque_cursors_newest_first() {
        use crate::domain::{CaptureMeta, ImageContentType};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display())).await.unwrap();
        let blobs =
            crate::blob::BlobStore::open(&crate::config::BlobConfig::Local { dir: dir.path().join("b") })
                .await
                .unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let gateway =
            Gateway::new(db.clone(), blobs.clone(), Default::default(), crate::metrics::Metrics::new(), rx);
        let schema =
            schema(ApiContext { db: db.clone(), gateway, blobs: blobs.clone(), links: test_links(&blobs) });
        let operator = |q: async_graphql::Request| q.data(Principal::anonymous_local());
        let mut ids = Vec::new();
        for i in 0..5 {
            let meta = CaptureMeta {
                id: uuid::Uuid::now_v7(),
                site_id: "a1".into(),
                lane: 0,
                captured_at: DateTime::from_timestamp(1_700_000_000 + i, 0).unwrap(),
                detected_at: None,
                vehicle_class: domain::VehicleClass::Van,
                occupancy_status: domain::OccupancyStatus::Unreadable,
                occupants: None,
                speed_kmh: Some(12.3),
                height_m: 2.0,
                width_m: 1.9,
                camera_id: "cam0".into(),
                config_version: 1,
                sections: vec![],
                confidence: None,
                model_version: None,
            };
            ids.push(meta.id.to_string());
            let capture = domain::Capture {
                image_key: domain::image_key(&meta, ImageContentType::Png, &[1; 32]),
                meta,
                agent_id: "agent-1".into(),
                image_sha256: [1; 32],
                image_bytes: 3,
                image_content_type: ImageContentType::Png,
                received_at: Utc::now(),
                decision: domain::Decision::Unreadable,
            };
            db.insert_capture(&capture).await.unwrap();
        }
        ids.reverse();
        let mut seen = Vec::new();
        let mut after = serde_json::Value::Null;
        loop {
            let q = async_graphql::Request::new(
                "query($after: String) { captures(first: 2, after: $after) { \
                 edges { cursor node { id vehicleClass speedKmh imageUrl occupancy { status occupants } } } \
                 pageInfo { hasNextPage endCursor } } }",
            )
            .variables(async_graphql::Variables::from_json(serde_json::json!({ "after": after })));
            let data = schema.execute(operator(q)).await.into_result().unwrap().data.into_json().unwrap();
            let page = &data["captures"];
            for edge in page["edges"].as_array().unwrap() {
                let node = &edge["node"];
                assert_eq!(node["vehicleClass"], "VAN");
                assert_eq!(node["speedKmh"], 12.3);
                assert_eq!(node["occupancy"]["status"], "UNREADABLE");
                assert!(node["occupancy"]["occupants"].is_null());
                let id = node["id"].as_str().unwrap().to_owned();
                let url = node["imageUrl"].as_str().unwrap();
                assert!(url.starts_with(&format!("http://cp.test/images/{id}?expires=")), "{url}");
                seen.push(id);
            }
            if page["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(seen, ids);

        let bad = schema.execute(operator("{ captures(first: 101) { nodes { id } } }".into())).await;
        assert!(bad.errors[0].message.contains("between 1 and 100"), "{:?}", bad.errors);
        let bad = schema.execute(operator("{ captures(after: \"nope\") { nodes { id } } }".into())).await;
        assert!(bad.errors[0].message.contains("not a cursor"), "{:?}", bad.errors);
        let offline = schema.execute(operator("{ agents { id } agent(id: \"x\") { id } }".into())).await;
        assert!(offline.errors.is_empty(), "{:?}", offline.errors);
        let anonymous = schema.execute("{ agents { id } }").await;
        assert!(anonymous.errors[0].message.contains("no authenticated principal"), "{:?}", anonymous.errors);
    }

    fn test_links(blobs: &BlobStore) -> ImageLinks {
        let config = crate::config::ImageLinksConfig { ttl_secs: 300, signing_key: None };
        ImageLinks::new("http://cp.test".into(), &config, blobs.clone())
    }

    #[test]
    fn widening_keeps_short_decimals() {
        assert_eq!(widen(12.3), 12.3);
        assert_eq!(widen(88.5), 88.5);
    }
}

//! The GraphQL API (async-graphql): the schema and its limits, the context resolvers read, the
//! auth and storage-error helpers every resolver shares, Relay pagination, and the Query,
//! Mutation and Subscription roots merged from the per-domain modules below.
//!
//! Who sees what is decided in one place: every resolver that reads or writes starts with
//! `guard` (the role × action matrix of `auth`), and every database read takes the principal's
//! `Visibility`, which `db` applies in SQL; nested fields (a violation's capture, a capture's
//! violation) go through the same two steps, so no path leads into another agency's rows.
//!
//! GraphQL objects are converted by hand from domain types, next to the resolvers of their
//! domain: `captures` (captures, violations, statistics, deletion receipts), `fleet` (agents,
//! their live introspection, sites, the commands operators send them), `logs` (agents' logs), `configs` (site configs and their rollout), `admin` (the
//! caller, agencies, API keys, the audit log, jurisdictions, lane policies, agent revocation),
//! `history` (components' history from heartbeats, and the fleet's latest component states)
//! and `subscriptions` (live updates). The order of the merged objects is the order of the
//! fields in the committed SDL (`control-plane/schema.graphql`).

mod admin;
mod captures;
mod component_state;
mod configs;
mod fleet;
mod history;
mod jobs;
mod logs;
mod subscriptions;
#[cfg(test)]
mod tests;
mod webhooks;

use async_graphql::connection::{Connection, CursorType, Edge};
use async_graphql::{Context, ErrorExtensions, MergedObject, Schema, SchemaBuilder};
use chrono::Utc;
use uuid::Uuid;

pub use admin::{Agency, ApiKey, AuditEntry, AuditResult, CreatedApiKey, LanePolicy, Me, Role, TimeWindow};
pub use captures::{
    Capture, CaptureCounts, Decision, DecisionCount, DeletionReason, DeletionReceipt, EvidenceImage,
    EvidencePackage, HourlyStats, Occupancy, OccupancyDistribution, OccupancyStatus, ReviewDecision,
    SectionCount, ValueClass, VehicleClass, Violation, ViolationState,
};
pub use configs::{AgentConfigRollout, RolloutState, SiteConfig};
pub use fleet::{Agent, Component, ComponentStatus, Health, Site};
pub use subscriptions::{AgentStatusChange, SubscriptionRoot};

use crate::auth::{Action, Principal};
use crate::blob::BlobStore;
use crate::db::Db;
use crate::domain::{self, CaptureCursor};
use crate::error::Error;
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

// The query root. No doc comment: it would become the type's description in the SDL.
#[derive(MergedObject, Default)]
pub struct Query(
    admin::MeQuery,
    fleet::FleetQuery,
    captures::CapturesQuery,
    admin::AdminQuery,
    captures::DeletionReceiptsQuery,
    configs::ConfigsQuery,
    logs::LogsQuery,
    history::HistoryQuery,
    jobs::JobsQuery,
    webhooks::WebhooksQuery,
);

// The mutation root, every field audited (`audited`). No doc comment, as for `Query`.
#[derive(MergedObject, Default)]
pub struct Mutation(
    captures::CapturesMutation,
    admin::AdminMutation,
    configs::ConfigsMutation,
    fleet::FleetMutation,
    jobs::JobsMutation,
    webhooks::WebhooksMutation,
);

/// The schema without runtime data (enough for the SDL).
pub fn builder() -> SchemaBuilder<Query, Mutation, SubscriptionRoot> {
    Schema::build(Query::default(), Mutation::default(), SubscriptionRoot)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
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

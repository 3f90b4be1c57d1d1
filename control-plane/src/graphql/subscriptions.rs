//! Live updates over WebSocket: the `captureAdded` and `agentStatusChanged` subscriptions, fed
//! by the gateway's event bus, each event re-checked against the subscriber's visibility, and
//! `agentLogs`, which follows an agent's log ring (`logs::follow`).

use async_graphql::{Context, ID, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::captures::Capture;
use super::logs::LogLine;
use super::{guard, parts};
use crate::auth::Action;
use crate::events::EventKind;

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

    /// An agent's log lines as it writes them, matching the filters (as the `agentLogs` query
    /// takes them), starting with the newest `last` (operators and admins). Ends with an error
    /// when the agent goes offline.
    async fn agent_logs(
        &self,
        ctx: &Context<'_>,
        agent_id: ID,
        level: Option<String>,
        target: Option<String>,
        grep: Option<String>,
        #[graphql(default = 0)] last: u32,
    ) -> async_graphql::Result<BoxStream<'static, async_graphql::Result<LogLine>>> {
        super::logs::follow(ctx, agent_id, level, target, grep, last.min(1000)).await
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

//! Component history: `componentHistory` (one component of one agent over a range: raw samples
//! within the raw retention, rollups before it, and what the range adds up to) and
//! `fleetComponents` (the newest sample of every agent × component, filtered: "which agents
//! have a stalled camera now?"). Both read what heartbeats reported, so they answer for agents
//! that are offline now; operators and admins only.

use std::collections::HashMap;

use async_graphql::{Context, Enum, ErrorExtensions, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{ComponentStatus, guard, storage_error};
use crate::auth::Action;
use crate::domain;
use crate::error::Error;

/// `fleetComponents` answers at most this many.
const MAX_FLEET_COMPONENTS: i32 = 10_000;

#[derive(Default)]
pub struct HistoryQuery;

#[Object]
impl HistoryQuery {
    /// One component's history as the agent's heartbeats reported it, oldest first, from
    /// `from` to `to` (at most 31 days): raw samples (one per heartbeat) within the raw
    /// retention (`[history] raw_retention_secs`, 24 h by default), rollups of
    /// `[history] rollup_secs` (a minute) before it; each point says which. An unknown agent is
    /// NOT_FOUND; `from` after `to` or a longer range INVALID_ARGUMENT (operators and admins).
    async fn component_history(
        &self,
        ctx: &Context<'_>,
        agent_id: ID,
        component: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> async_graphql::Result<ComponentHistory> {
        let (api, _) = guard(ctx, Action::ReadFleet)?;
        let component = component.trim();
        if component.is_empty() {
            return Err(Error::invalid("component must not be empty").extend());
        }
        domain::check_history_range(from, to).map_err(|e| Error::invalid(e).extend())?;
        if api.db.agent(&agent_id).await.map_err(storage_error)?.is_none() {
            return Err(Error::not_found(format!("no agent with id {:?}", agent_id.as_str())).extend());
        }
        let history = api
            .db
            .component_history(&agent_id, component, from, to, Utc::now())
            .await
            .map_err(storage_error)?;
        Ok(ComponentHistory {
            agent_id,
            component: component.to_owned(),
            from,
            to,
            raw_since: history.raw_since,
            points: history.points.into_iter().map(HistoryPoint::from).collect(),
            summary: HistorySummary::from(history.summary),
        })
    }

    /// The newest sample of every agent × component reported within the raw retention, by agent
    /// id and component, at most `first` (1-10000), filtered; e.g. "which agents have a camera
    /// that is not running?": `fleetComponents(filter: { name: "acquire-*", status: "NOT_RUNNING" })`.
    /// An offline agent's components show what it reported last (operators and admins).
    async fn fleet_components(
        &self,
        ctx: &Context<'_>,
        filter: Option<FleetComponentFilter>,
        #[graphql(default = 1000)] first: i32,
    ) -> async_graphql::Result<Vec<FleetComponent>> {
        let (api, _) = guard(ctx, Action::ReadFleet)?;
        if !(1..=MAX_FLEET_COMPONENTS).contains(&first) {
            let message = format!("first must be between 1 and {MAX_FLEET_COMPONENTS}, got {first}");
            return Err(Error::invalid(message).extend());
        }
        let filter = filter.unwrap_or_default().into_domain().map_err(|e| e.extend())?;
        let limit = u64::try_from(first).unwrap_or(1000);
        let now = Utc::now();
        let latest = api.db.fleet_components(&filter, now, limit).await.map_err(storage_error)?;
        let agents: HashMap<String, domain::Agent> =
            api.db.agents().await.map_err(storage_error)?.into_iter().map(|a| (a.id.clone(), a)).collect();
        Ok(latest
            .into_iter()
            .map(|l| {
                let online =
                    agents.get(&l.agent_id).is_some_and(|a| a.online && api.gateway.counts_as_online(a));
                FleetComponent::new(l, online)
            })
            .collect())
    }
}

/// Which row a history point is.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum HistoryResolution {
    /// One heartbeat's sample.
    Raw,
    /// The summary of one rollup period (`periodSecs`) of samples.
    Rollup,
}

/// One component's history over a range.
#[derive(SimpleObject)]
pub struct ComponentHistory {
    agent_id: ID,
    component: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// Raw samples are kept from here on; points before are rollups.
    raw_since: DateTime<Utc>,
    /// Oldest first.
    points: Vec<HistoryPoint>,
    summary: HistorySummary,
}

/// A raw sample, or the rollup of one period of samples.
#[derive(SimpleObject)]
pub struct HistoryPoint {
    /// The sample's time, or the start of the rollup's period.
    at: DateTime<Utc>,
    resolution: HistoryResolution,
    /// The rollup's period; 0 for a raw sample.
    period_secs: u32,
    /// Samples summarized (1 for a raw sample).
    samples: u32,
    /// The status; a rollup's is the worst its period saw.
    status: ComponentStatus,
    /// The restart count; a rollup's is the highest its period saw.
    restarts: u32,
    /// Items processed; a rollup's is the count at the end of its period.
    processed: u64,
    /// Items in its input channel; a rollup's is the deepest its period saw. Null for a source.
    inbox_depth: Option<u32>,
    /// Samples whose status was not RUNNING.
    not_running: u32,
    /// Times it went from RUNNING to another status, the step into this point included.
    left_running: u32,
    /// Restarts since the previous point (or during the period).
    restarts_added: u32,
}

impl From<domain::HistoryPoint> for HistoryPoint {
    fn from(p: domain::HistoryPoint) -> Self {
        Self {
            at: p.at,
            resolution: match p.resolution {
                domain::Resolution::Raw => HistoryResolution::Raw,
                domain::Resolution::Rollup => HistoryResolution::Rollup,
            },
            period_secs: p.period_secs,
            samples: p.samples,
            status: p.status.into(),
            restarts: p.restarts,
            processed: p.processed,
            inbox_depth: p.inbox_depth,
            not_running: p.not_running,
            left_running: p.left_running,
            restarts_added: p.restarts_added,
        }
    }
}

/// What the points of a range add up to.
#[derive(SimpleObject)]
pub struct HistorySummary {
    samples: u64,
    /// Samples whose status was not RUNNING.
    not_running: u64,
    /// Times the component left RUNNING (e.g. a camera that stalled and was restarted).
    left_running: u64,
    /// Restarts in the range (a restart count that went down, because the agent restarted,
    /// counts from zero).
    restarts: u64,
    /// The worst status seen; null without points.
    worst_status: Option<ComponentStatus>,
    /// The newest point's status; null without points.
    last_status: Option<ComponentStatus>,
}

impl From<domain::HistorySummary> for HistorySummary {
    fn from(s: domain::HistorySummary) -> Self {
        Self {
            samples: s.samples,
            not_running: s.not_running,
            left_running: s.left_running,
            restarts: s.restarts,
            worst_status: s.worst.map(ComponentStatus::from),
            last_status: s.last.map(ComponentStatus::from),
        }
    }
}

/// Which components `fleetComponents` answers; every field that is set must match.
#[derive(InputObject, Default)]
pub struct FleetComponentFilter {
    /// A component name (`uplink`), or a prefix ending in `*` (`acquire-*`).
    name: Option<String>,
    /// A status (`RUNNING`, `BACKING_OFF`, `FAILED`, …, as `ComponentStatus`), or `NOT_RUNNING`
    /// for any other than RUNNING.
    status: Option<String>,
    /// The agent's site.
    site: Option<String>,
    /// Only components whose restart count grew at or after this time.
    restarted_since: Option<DateTime<Utc>>,
}

impl FleetComponentFilter {
    fn into_domain(self) -> Result<domain::FleetComponentFilter, Error> {
        let name = match self.name.as_deref().map(str::trim) {
            None => None,
            Some("" | "*") => return Err(Error::invalid("filter.name must name a component or a prefix*")),
            Some(name) => Some(domain::NameMatch::parse(name)),
        };
        let status = self
            .status
            .as_deref()
            .map(domain::StatusMatch::parse)
            .transpose()
            .map_err(|e| Error::invalid(format!("filter.status: {e}")))?;
        Ok(domain::FleetComponentFilter {
            name,
            status,
            site_id: self.site.map(|s| s.trim().to_owned()),
            restarted_since: self.restarted_since,
        })
    }
}

/// The newest sample of one agent × component.
#[derive(SimpleObject)]
pub struct FleetComponent {
    agent_id: ID,
    site: String,
    /// Whether the agent has a live session now; if not, the sample is what it reported last.
    agent_online: bool,
    component: String,
    /// When the sample was received.
    at: DateTime<Utc>,
    status: ComponentStatus,
    restarts: u32,
    processed: u64,
    /// Null for a source.
    inbox_depth: Option<u32>,
    /// When its restart count last grew, as far as the history saw it.
    last_restart_at: Option<DateTime<Utc>>,
}

impl FleetComponent {
    fn new(l: domain::LatestComponent, agent_online: bool) -> Self {
        Self {
            agent_id: ID(l.agent_id),
            site: l.site_id,
            agent_online,
            component: l.component,
            at: l.at,
            status: l.status.into(),
            restarts: l.restarts,
            processed: l.processed,
            inbox_depth: l.inbox_depth,
            last_restart_at: l.last_restart_at,
        }
    }
}

//! The fleet: the `agents`, `agent` and `sites` queries, the GraphQL objects of agents (with
//! their revocation and the components they report in live introspection) and sites, and the
//! commands operators send to agents (`restartComponent`, `pauseComponent`, `resumeComponent`,
//! `setAgentLogFilter`, `runDiagnostics`).

use async_graphql::{ComplexObject, Context, Enum, ErrorExtensions, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use uuid::Uuid;

use super::component_state::ComponentState;
use super::{audited, guard, parse_uuid, parts, storage, storage_error};
use crate::auth::Action;
use crate::domain;
use crate::error::{Error, ErrorKind};
use crate::gateway::Gateway;

#[derive(Default)]
pub struct FleetQuery;

#[Object]
impl FleetQuery {
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
}

#[derive(Default)]
pub struct FleetMutation;

#[Object]
impl FleetMutation {
    /// Restarts one supervised component of an agent (operators and admins), through the
    /// replica holding its session. `commandId` (a UUID; one is made when omitted) makes it
    /// idempotent: the agent runs an id once and answers a repeat with its first outcome. An
    /// unknown agent is NOT_FOUND, an offline one UNAVAILABLE, no answer within 5 s
    /// DEADLINE_EXCEEDED, and a component the agent does not have FAILED_PRECONDITION.
    async fn restart_component(
        &self,
        ctx: &Context<'_>,
        agent_id: ID,
        component: String,
        command_id: Option<ID>,
    ) -> async_graphql::Result<CommandResult> {
        let command = domain::AgentCommand::RestartComponent { component: component.trim().to_owned() };
        send(ctx, "restartComponent", agent_id, command, command_id).await
    }

    /// Stops a component and keeps it stopped (status PAUSED) until `resumeComponent`, or until
    /// the agent restarts or applies a new config. Pausing the `uplink` holds uploads only: the
    /// session stays open, for commands and heartbeats. Errors and idempotency as for
    /// `restartComponent`; pausing a paused component is FAILED_PRECONDITION.
    async fn pause_component(
        &self,
        ctx: &Context<'_>,
        agent_id: ID,
        component: String,
        command_id: Option<ID>,
    ) -> async_graphql::Result<CommandResult> {
        let command = domain::AgentCommand::PauseComponent { component: component.trim().to_owned() };
        send(ctx, "pauseComponent", agent_id, command, command_id).await
    }

    /// Starts a paused component again (a resume is not counted as a restart).
    async fn resume_component(
        &self,
        ctx: &Context<'_>,
        agent_id: ID,
        component: String,
        command_id: Option<ID>,
    ) -> async_graphql::Result<CommandResult> {
        let command = domain::AgentCommand::ResumeComponent { component: component.trim().to_owned() };
        send(ctx, "resumeComponent", agent_id, command, command_id).await
    }

    /// Replaces an agent's log filter (`RUST_LOG` syntax, e.g. `info,lanewatch_edge_agent::uplink=debug`)
    /// for `forSecs` (1-86400); then the agent's own filter comes back by itself. A filter the
    /// agent cannot parse is FAILED_PRECONDITION with its reason; other errors as for
    /// `restartComponent`.
    async fn set_agent_log_filter(
        &self,
        ctx: &Context<'_>,
        agent_id: ID,
        filter: String,
        for_secs: u32,
        command_id: Option<ID>,
    ) -> async_graphql::Result<CommandResult> {
        let command = domain::AgentCommand::SetLogFilter { filter: filter.trim().to_owned(), for_secs };
        send(ctx, "setAgentLogFilter", agent_id, command, command_id).await
    }

    /// Takes a test capture on one of an agent's cameras now (operators and admins): its newest
    /// frame goes through vision (faces masked, occupants counted) and the buffer like any
    /// capture and is uploaded, with decision `TEST`: never counted in statistics, never a
    /// violation, never shown to agencies. The result's `captureId` names it; query
    /// `capture(id:)` once it is stored. A camera the agent does not have, or one paused,
    /// stopped or without a frame within 4 s, is FAILED_PRECONDITION with the agent's reason;
    /// other errors and idempotency as for `restartComponent`.
    async fn trigger_test_capture(
        &self,
        ctx: &Context<'_>,
        agent_id: ID,
        camera: String,
        command_id: Option<ID>,
    ) -> async_graphql::Result<CommandResult> {
        let command = domain::AgentCommand::TriggerTestCapture { camera: camera.trim().to_owned() };
        send(ctx, "triggerTestCapture", agent_id, command, command_id).await
    }

    /// Checks the site now (operators and admins): the buffer's disk (free space, a probe
    /// written and synced), the LIDAR link, every camera (streaming, frames, stalls, drops), the
    /// clock against the control plane's, the face model. Each check says what it saw; `ok` is
    /// whether all passed. Errors and idempotency as for `restartComponent`.
    async fn run_diagnostics(
        &self,
        ctx: &Context<'_>,
        agent_id: ID,
        command_id: Option<ID>,
    ) -> async_graphql::Result<Diagnostics> {
        let (command_id, outcome) =
            send_for(ctx, "runDiagnostics", agent_id, domain::AgentCommand::RunDiagnostics, command_id)
                .await?;
        Ok(Diagnostics {
            command_id,
            message: outcome.message,
            ok: outcome.checks.iter().all(|c| c.ok),
            checks: outcome
                .checks
                .into_iter()
                .map(|c| DiagnosticCheck { name: c.name, ok: c.ok, message: c.message })
                .collect(),
        })
    }
}

/// What an agent's diagnostics found.
#[derive(SimpleObject)]
pub struct Diagnostics {
    command_id: ID,
    /// e.g. `all 6 checks passed`.
    message: String,
    /// Whether every check passed.
    ok: bool,
    checks: Vec<DiagnosticCheck>,
}

/// One check of a diagnostics run.
#[derive(SimpleObject)]
pub struct DiagnosticCheck {
    /// `disk`, `lidar`, `camera <id>`, `clock`, `model`.
    name: String,
    ok: bool,
    /// What it saw, with its figures.
    message: String,
}

/// Authorizes (operators and admins), checks, sends and audits one command to an agent.
async fn send(
    ctx: &Context<'_>,
    action: &str,
    agent_id: ID,
    command: domain::AgentCommand,
    command_id: Option<ID>,
) -> async_graphql::Result<CommandResult> {
    let (command_id, outcome) = send_for(ctx, action, agent_id, command, command_id).await?;
    Ok(CommandResult {
        command_id,
        message: outcome.message,
        capture_id: outcome.capture_id.map(|id| ID(id.to_string())),
    })
}

/// [`send`], answering the command id and the agent's whole outcome (a diagnostics run's
/// checks).
async fn send_for(
    ctx: &Context<'_>,
    action: &str,
    agent_id: ID,
    command: domain::AgentCommand,
    command_id: Option<ID>,
) -> async_graphql::Result<(ID, domain::CommandOutcome)> {
    let (api, who) = parts(ctx)?;
    let result = async {
        who.authorize(Action::OperateAgents)?;
        let command_id = match &command_id {
            Some(id) => parse_uuid("commandId", id)?,
            None => Uuid::now_v7(),
        };
        match &command {
            domain::AgentCommand::RestartComponent { component }
            | domain::AgentCommand::PauseComponent { component }
            | domain::AgentCommand::ResumeComponent { component }
                if component.is_empty() =>
            {
                return Err(Error::invalid("component must not be empty"));
            }
            domain::AgentCommand::TriggerTestCapture { camera } if camera.is_empty() => {
                return Err(Error::invalid("camera must not be empty"));
            }
            domain::AgentCommand::SetLogFilter { filter, .. } if filter.is_empty() => {
                return Err(Error::invalid("filter must not be empty"));
            }
            domain::AgentCommand::SetLogFilter { for_secs, .. } if !(1..=86_400).contains(for_secs) => {
                return Err(Error::invalid(format!("forSecs must be between 1 and 86400, got {for_secs}")));
            }
            _ => {}
        }
        if api.db.agent(&agent_id).await.map_err(storage)?.is_none() {
            return Err(Error::not_found(format!("no agent with id {:?}", agent_id.as_str())));
        }
        let outcome = api.gateway.command(&agent_id, command_id, command.clone()).await?;
        if !outcome.ok {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("agent {} refused the command: {}", agent_id.as_str(), outcome.message),
            ));
        }
        Ok((ID(command_id.to_string()), outcome))
    }
    .await;
    audited(api, who, action, &command.target(&agent_id), result).await
}

/// What an agent answered to a command it ran.
#[derive(SimpleObject)]
pub struct CommandResult {
    command_id: ID,
    /// The agent's own words, e.g. `restarting uplink`.
    message: String,
    /// The capture a `triggerTestCapture` made; null for other commands.
    capture_id: Option<ID>,
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
    /// Stopped by an operator until resumed (`resumeComponent`).
    Paused,
}

impl From<domain::ComponentStatus> for ComponentStatus {
    fn from(s: domain::ComponentStatus) -> Self {
        match s {
            domain::ComponentStatus::Unknown => Self::Unknown,
            domain::ComponentStatus::Starting => Self::Starting,
            domain::ComponentStatus::Running => Self::Running,
            domain::ComponentStatus::BackingOff => Self::BackingOff,
            domain::ComponentStatus::Stopped => Self::Stopped,
            domain::ComponentStatus::Failed => Self::Failed,
            domain::ComponentStatus::Paused => Self::Paused,
        }
    }
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

pub struct Agent {
    agent: domain::Agent,
    online: bool,
    /// Asked from the agent at most once per object, however many of its fields a query reads.
    introspection: tokio::sync::OnceCell<Result<domain::Introspection, Error>>,
}

impl Agent {
    pub(super) fn from_domain(agent: domain::Agent, gateway: &Gateway) -> Self {
        // the row says online until the session's end is recorded; the registry is the truth
        let online = agent.online && gateway.counts_as_online(&agent);
        Self { agent, online, introspection: tokio::sync::OnceCell::new() }
    }

    async fn introspection(&self, ctx: &Context<'_>) -> async_graphql::Result<&domain::Introspection> {
        let (api, _) = guard(ctx, Action::ReadFleet)?;
        let asked = self
            .introspection
            .get_or_init(|| async { api.gateway.request_introspection(&self.agent.id).await })
            .await;
        asked.as_ref().map_err(|e| e.extend())
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
        let found = self.introspection(ctx).await?;
        Ok(found.components.iter().cloned().map(Component::from_domain).collect())
    }
    /// The agent process (CPU, memory, threads, descriptors, uptime, the buffer's disk, versions),
    /// asked live with the components; null from agents too old to report it.
    async fn process(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Process>> {
        Ok(self.introspection(ctx).await?.process.clone().map(Process))
    }
}

/// An agent process's own figures, read when it was asked.
pub struct Process(domain::ProcessState);

#[Object]
impl Process {
    /// CPU time (user + system) since the process started, in seconds.
    async fn cpu_seconds(&self) -> f64 {
        self.0.cpu_seconds
    }
    /// `cpuSeconds / uptimeSecs`: the share of one core used on average since start.
    async fn cpu_ratio(&self) -> f64 {
        if self.0.uptime_secs > 0.0 { self.0.cpu_seconds / self.0.uptime_secs } else { 0.0 }
    }
    async fn rss_bytes(&self) -> u64 {
        self.0.rss_bytes
    }
    async fn threads(&self) -> u32 {
        self.0.threads
    }
    async fn open_fds(&self) -> u32 {
        self.0.open_fds
    }
    async fn uptime_secs(&self) -> f64 {
        self.0.uptime_secs
    }
    /// Free space on the filesystem of the agent's capture buffer.
    async fn buffer_volume_free_bytes(&self) -> u64 {
        self.0.buffer_volume_free_bytes
    }
    async fn buffer_volume_total_bytes(&self) -> u64 {
        self.0.buffer_volume_total_bytes
    }
    async fn software_version(&self) -> &str {
        &self.0.software_version
    }
    async fn config_version(&self) -> u64 {
        self.0.config_version
    }
    /// The face model vision runs; null without vision.
    async fn model_version(&self) -> Option<&str> {
        Some(self.0.model_version.as_str()).filter(|m| !m.is_empty())
    }
    /// The agent's clock minus the control plane's, in milliseconds, measured by the agent over
    /// its last heartbeat round trip (right within half of `clockRoundTripMs`); null until one
    /// was measured, and from older agents.
    async fn clock_offset_ms(&self) -> Option<f64> {
        self.0.clock.map(|c| c.offset_ms)
    }
    async fn clock_round_trip_ms(&self) -> Option<f64> {
        self.0.clock.map(|c| c.round_trip_ms)
    }
    async fn clock_measured_at(&self) -> Option<DateTime<Utc>> {
        self.0.clock.map(|c| c.measured_at)
    }
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Component {
    name: String,
    status: ComponentStatus,
    restarts: u32,
    last_failure: Option<String>,
    last_failure_at: Option<DateTime<Utc>>,
    backoff_ms: u64,
    processed: u64,
    /// Items it could not process (quarantined, skipped) since the agent started.
    failed: u64,
    /// What the component says about itself, typed by its kind (`LidarState`, `CameraState`,
    /// `UplinkState`, ...); null before it first published and from agents too old to send it.
    state: Option<ComponentState>,
    /// The same state as a JSON object, as older agents send it.
    #[graphql(deprecation = "use `state`, which is typed")]
    detail_json: String,
    /// Its input channel; null for a source, which has none.
    inbox: Option<Inbox>,
    /// Its busy time since it first started, in seconds: the poll time of its task plus the CPU
    /// time of the threads working for it (inference, buffer writes, camera grabbing). Null from
    /// agents too old to report it.
    busy_seconds: Option<f64>,
    /// Busy time over wall time in the last minute (1.0: one core busy all the time).
    busy_ratio: Option<f64>,
    /// Processed and failed per second, and busy ratio, over 1, 5 and 15 minutes.
    rates: Option<ComponentRates>,
    /// What it is waiting on now: `nothing` (working), `input` (its inbox is empty),
    /// `downstream` (the next stage's inbox is full), `device` (the next scan or frame),
    /// `control_plane`. Null from older agents.
    waiting_on: Option<String>,
    /// The memory it holds, where the agent can measure it (a camera's frame ring, the
    /// buffer's index, the face model's sessions); null elsewhere.
    memory_bytes: Option<u64>,
    #[graphql(skip)]
    events: Vec<domain::ComponentEvent>,
}

/// A component's rates over the last 1, 5 and 15 minutes (over its lifetime while younger).
#[derive(SimpleObject)]
pub struct ComponentRates {
    one_minute: RateWindow,
    five_minutes: RateWindow,
    fifteen_minutes: RateWindow,
}

#[derive(SimpleObject)]
pub struct RateWindow {
    processed_per_sec: f64,
    failed_per_sec: f64,
    busy_ratio: f64,
}

impl From<domain::RateWindow> for RateWindow {
    fn from(w: domain::RateWindow) -> Self {
        Self {
            processed_per_sec: w.processed_per_sec,
            failed_per_sec: w.failed_per_sec,
            busy_ratio: w.busy_ratio,
        }
    }
}

#[ComplexObject]
impl Component {
    /// Its flight recorder: the `last` (at most 32 kept) state changes, failures and restarts,
    /// oldest first.
    async fn events(&self, #[graphql(default = 32)] last: u32) -> Vec<ComponentEvent> {
        let skip = self.events.len().saturating_sub(last as usize);
        self.events[skip..].iter().cloned().map(ComponentEvent::from).collect()
    }
}

/// One entry of a component's flight recorder.
#[derive(SimpleObject)]
pub struct ComponentEvent {
    at: DateTime<Utc>,
    /// `started`, `restarting`, `restart_requested`, `failed`, `escalated`, `stopped`, `paused`
    /// or `resumed`.
    kind: String,
    message: String,
}

impl From<domain::ComponentEvent> for ComponentEvent {
    fn from(e: domain::ComponentEvent) -> Self {
        Self { at: e.at, kind: e.kind, message: e.message }
    }
}

/// A component's input channel when the agent was asked.
#[derive(SimpleObject)]
pub struct Inbox {
    /// Items waiting.
    depth: u32,
    capacity: u32,
}

impl Component {
    fn from_domain(c: domain::ComponentState) -> Self {
        let status = c.status.into();
        Self {
            name: c.name,
            status,
            restarts: c.restarts,
            last_failure: c.last_failure,
            last_failure_at: c.last_failure_at,
            backoff_ms: c.backoff_ms,
            processed: c.processed,
            failed: c.failed,
            state: c.detail.map(ComponentState::from),
            detail_json: c.detail_json,
            inbox: c.inbox.map(|(depth, capacity)| Inbox { depth, capacity }),
            waiting_on: c.waiting_on,
            memory_bytes: c.memory_bytes,
            busy_seconds: c.load.map(|l| l.busy_seconds),
            busy_ratio: c.load.map(|l| l.one_minute.busy_ratio),
            rates: c.load.map(|l| ComponentRates {
                one_minute: l.one_minute.into(),
                five_minutes: l.five_minutes.into(),
                fifteen_minutes: l.fifteen_minutes.into(),
            }),
            events: c.events,
        }
    }
}

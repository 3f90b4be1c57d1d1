//! Supervision: every pipeline component runs as a ractor actor under one root supervisor that
//! restarts failed components with exponential backoff and escalates repeated failures.
//!
//! A component is a [`Component`]: an object whose `run` future does its work until its input
//! ends (or, for sources, until shutdown). The [`ComponentActor`] runs that future in its first
//! message; an error or panic fails the actor, and ractor reports `ActorFailed` to the
//! [`Supervisor`]. Channel receivers live in the component object, outside the actor, so queued
//! items survive a restart. Supervision state is published in the [`Registry`] as
//! [`ComponentSnapshot`]s that heartbeats and introspection read.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::SupervisionConfig;
use crate::load::{Busy, Load, Rates, WaitingOn};
use crate::stage::InboxGauge;
use crate::state::ComponentState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    Starting,
    Running,
    BackingOff,
    Stopped,
    Failed,
    /// Stopped by an operator and kept stopped until resumed (for the uplink: uploads held, the
    /// session kept).
    Paused,
}

impl ComponentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::BackingOff => "backing_off",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Paused => "paused",
        }
    }
}

/// What the supervisor and the component itself say about one component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentSnapshot {
    pub name: String,
    pub status: ComponentStatus,
    pub restarts: u32,
    pub last_failure: Option<String>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub backoff_ms: u64,
    pub processed: u64,
    /// Items it could not process (quarantined, skipped) since the agent started.
    pub failed: u64,
    /// What the component says about itself, typed by its kind (`state`).
    pub state: ComponentState,
    /// Processed and failed per second and busy time over 1, 5 and 15 minutes (`load`), as
    /// they are when the snapshot is read.
    pub rates: Rates,
    /// What it is waiting on now, as it last said (`nothing` while it works).
    pub waiting_on: WaitingOn,
    /// The memory it holds, where that can be measured (a camera's frame ring); `None` elsewhere.
    pub memory_bytes: Option<u64>,
    /// Items waiting in the component's input channel, and its capacity; `None` for a source.
    pub inbox: Option<Inbox>,
    /// The flight recorder: the last [`ComponentSnapshot::EVENTS`] events, oldest first.
    pub events: VecDeque<ComponentEvent>,
}

/// One entry of a component's flight recorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentEvent {
    pub at: DateTime<Utc>,
    /// `started`, `restarting`, `restart_requested`, `failed`, `escalated`, `stopped`,
    /// `paused` or `resumed`.
    pub kind: &'static str,
    pub message: String,
}

/// A component's input channel as a snapshot shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Inbox {
    pub depth: usize,
    pub capacity: usize,
}

impl ComponentSnapshot {
    /// How many events the flight recorder keeps.
    pub const EVENTS: usize = 32;

    pub fn record(&mut self, kind: &'static str, message: impl Into<String>) {
        if self.events.len() == Self::EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(ComponentEvent { at: Utc::now(), kind, message: message.into() });
    }

    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            status: ComponentStatus::Starting,
            restarts: 0,
            last_failure: None,
            last_failure_at: None,
            backoff_ms: 0,
            processed: 0,
            failed: 0,
            state: ComponentState::Empty,
            rates: Rates::default(),
            waiting_on: WaitingOn::Nothing,
            memory_bytes: None,
            inbox: None,
            events: VecDeque::new(),
        }
    }
}

/// Shared registry of component snapshots; every update bumps a watch so waiters need no polling.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<RwLock<BTreeMap<String, ComponentSnapshot>>>,
    /// The gauges of the components' input channels, read at each snapshot.
    inboxes: Arc<RwLock<BTreeMap<String, InboxGauge>>>,
    /// Each component's load (busy time, sampled counters), kept across its restarts.
    loads: Arc<RwLock<BTreeMap<String, Arc<Load>>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            inner: Default::default(),
            inboxes: Default::default(),
            loads: Default::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl Registry {
    pub fn update(&self, name: &str, f: impl FnOnce(&mut ComponentSnapshot)) {
        {
            let mut map = self.inner.write().unwrap();
            f(map.entry(name.to_owned()).or_insert_with(|| ComponentSnapshot::new(name)));
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Gives `name`'s snapshots the depth of its input channel.
    pub fn set_inbox(&self, name: &str, gauge: InboxGauge) {
        self.inboxes.write().unwrap().insert(name.to_owned(), gauge);
    }

    pub fn get(&self, name: &str) -> Option<ComponentSnapshot> {
        let mut snapshot = self.inner.read().unwrap().get(name).cloned()?;
        self.fill_inbox(&mut snapshot);
        Some(snapshot)
    }

    /// Fills in what is read when asked: the inbox depth and the rates.
    fn fill_inbox(&self, snapshot: &mut ComponentSnapshot) {
        if let Some(gauge) = self.inboxes.read().unwrap().get(&snapshot.name) {
            snapshot.inbox = Some(Inbox { depth: gauge.depth(), capacity: gauge.capacity });
        }
        if let Some(load) = self.loads.read().unwrap().get(&snapshot.name) {
            snapshot.rates = load.rates(snapshot.processed, snapshot.failed);
            snapshot.waiting_on = load.waiting_on();
        }
    }

    /// `name`'s load, made on first use.
    pub fn load(&self, name: &str) -> Arc<Load> {
        if let Some(load) = self.loads.read().unwrap().get(name) {
            return load.clone();
        }
        self.loads.write().unwrap().entry(name.to_owned()).or_default().clone()
    }

    /// Samples every component's counters now (for the rates).
    pub fn sample(&self) {
        let counters: Vec<(String, u64, u64)> =
            self.inner.read().unwrap().values().map(|s| (s.name.clone(), s.processed, s.failed)).collect();
        for (name, processed, failed) in counters {
            self.load(&name).sample(processed, failed);
        }
    }

    /// Samples the counters every [`crate::load::SAMPLE_EVERY`] until this registry is dropped
    /// (the task holds it weakly).
    pub fn start_sampling(&self) {
        let inner = Arc::downgrade(&self.inner);
        let (inboxes, loads, changed) =
            (self.inboxes.clone(), Arc::downgrade(&self.loads), self.changed.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::load::SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let (Some(inner), Some(loads)) = (inner.upgrade(), loads.upgrade()) else { return };
                Registry { inner, inboxes: inboxes.clone(), loads, changed: changed.clone() }.sample();
            }
        });
    }

    pub fn snapshots(&self) -> Vec<ComponentSnapshot> {
        let mut snapshots: Vec<ComponentSnapshot> = self.inner.read().unwrap().values().cloned().collect();
        for snapshot in &mut snapshots {
            self.fill_inbox(snapshot);
        }
        snapshots
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// What a component gets to run with.
#[derive(Clone)]
pub struct ComponentCtx {
    pub name: String,
    pub registry: Registry,
    /// Becomes true when the agent shuts down; sources stop, others drain their input.
    pub shutdown: watch::Receiver<bool>,
    /// Its load, looked up once (it is touched at every await).
    load: Arc<Load>,
}

impl ComponentCtx {
    pub fn new(name: &str, registry: &Registry, shutdown: watch::Receiver<bool>) -> Self {
        Self { name: name.to_owned(), load: registry.load(name), registry: registry.clone(), shutdown }
    }

    pub fn processed(&self, n: u64) {
        self.registry.update(&self.name, |s| s.processed += n);
    }

    /// Says how much memory the component holds now (where it can measure it).
    pub fn memory(&self, bytes: u64) {
        self.registry.update(&self.name, |s| s.memory_bytes = Some(bytes));
    }

    /// Counts items the component could not process (quarantined, skipped).
    pub fn failed(&self, n: u64) {
        self.registry.update(&self.name, |s| s.failed += n);
    }

    /// Says what the component waits on from now; [`WaitingOn::Nothing`] when it works again.
    /// A stage calls it around its awaits (`lanewatch inspect` shows it).
    pub fn wait_on(&self, on: WaitingOn) {
        self.load.wait_on(on);
    }

    /// Awaits `f` as waiting on `on`, then working again.
    pub async fn waiting<F: Future>(&self, on: WaitingOn, f: F) -> F::Output {
        self.load.wait_on(on);
        let out = f.await;
        self.load.wait_on(WaitingOn::Nothing);
        out
    }

    /// The component's busy counter, for CPU time spent on its behalf outside its task
    /// (blocking sections, its threads).
    pub fn busy(&self) -> Busy {
        self.load.busy.clone()
    }

    /// Resolves once the agent shuts down (or the shutdown signal is gone).
    pub async fn shutting_down(&mut self) {
        let _ = self.shutdown.wait_for(|s| *s).await;
    }

    /// Publishes the component's typed state.
    pub fn state(&self, state: ComponentState) {
        self.registry.update(&self.name, |s| s.state = state);
    }
}

pub type RunFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A supervised unit of work. `run` is called again after each restart.
pub trait Component: Send + Sync + 'static {
    fn name(&self) -> String;
    fn run(&self, ctx: ComponentCtx) -> RunFuture;
}

/// The actor that runs one component's `run` future.
pub struct ComponentActor;

pub struct ComponentArgs {
    component: Arc<dyn Component>,
    ctx: ComponentCtx,
}

impl Actor for ComponentActor {
    type Msg = ();
    type State = ComponentArgs;
    type Arguments = ComponentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        args: ComponentArgs,
    ) -> Result<ComponentArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn post_start(
        &self,
        myself: ActorRef<()>,
        _state: &mut ComponentArgs,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_message(())?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<()>,
        _msg: (),
        state: &mut ComponentArgs,
    ) -> Result<(), ActorProcessingErr> {
        state.ctx.registry.update(&state.ctx.name, |s| {
            s.status = ComponentStatus::Running;
            s.backoff_ms = 0;
            s.record("started", "");
        });
        // its task's poll time is its busy time (with what its threads add through `ctx.busy()`)
        match state.ctx.load.monitor.instrument(state.component.run(state.ctx.clone())).await {
            Ok(()) => {
                myself.stop(Some("finished".into()));
                Ok(())
            }
            Err(err) => Err(format!("{err:#}").into()),
        }
    }
}

/// Sent when a component failed too often; the agent exits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("component {component} failed {failures} times in {window_secs}s: {last_error}")]
pub struct Escalation {
    pub component: String,
    pub failures: usize,
    pub window_secs: u64,
    pub last_error: String,
}

pub enum SupervisorMsg {
    /// (Re)start a component now.
    Spawn(String),
    /// Operator asked to restart a component.
    Restart(String, RpcReplyPort<Result<(), String>>),
    /// Operator asked to stop a component and keep it stopped.
    Pause(String, RpcReplyPort<Result<(), String>>),
    /// Operator asked to start a paused component again.
    Resume(String, RpcReplyPort<Result<(), String>>),
    /// Kill every component and stop restarting.
    Shutdown(RpcReplyPort<()>),
}

struct Child {
    component: Arc<dyn Component>,
    cell: Option<ActorCell>,
    failures: VecDeque<Instant>,
    restart_requested: bool,
    started: bool,
    /// Paused by an operator: not started again until resumed.
    paused: bool,
}

pub struct SupervisorState {
    children: BTreeMap<String, Child>,
    by_id: HashMap<ActorId, String>,
    shutting_down: bool,
    escalated: bool,
}

pub struct Supervisor {
    pub config: SupervisionConfig,
    pub registry: Registry,
    pub shutdown: watch::Receiver<bool>,
    pub escalate: mpsc::UnboundedSender<Escalation>,
}

impl Supervisor {
    /// Starts the supervisor with its components.
    pub async fn start(self, components: Vec<Arc<dyn Component>>) -> anyhow::Result<SupervisorHandle> {
        let (actor, join) = Actor::spawn(None, self, components)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start supervisor: {e}"))?;
        Ok(SupervisorHandle { actor, join: Arc::new(tokio::sync::Mutex::new(Some(join))) })
    }

    async fn spawn_child(&self, myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, name: &str) {
        if state.shutting_down || state.escalated {
            return;
        }
        let Some(child) = state.children.get_mut(name) else { return };
        if child.cell.is_some() || child.paused {
            return;
        }
        let restart = std::mem::replace(&mut child.started, true);
        self.registry.update(name, |s| {
            s.status = ComponentStatus::Starting;
            s.restarts += u32::from(restart);
            if restart {
                s.record("restarting", format!("restart {}", s.restarts));
            }
        });
        let ctx = ComponentCtx::new(name, &self.registry, self.shutdown.clone());
        let args = ComponentArgs { component: child.component.clone(), ctx };
        match Actor::spawn_linked(None, ComponentActor, args, myself.get_cell()).await {
            Ok((actor, _join)) => {
                state.by_id.insert(actor.get_id(), name.to_owned());
                child.cell = Some(actor.get_cell());
            }
            Err(err) => {
                tracing::error!(component = name, error = %err, "cannot spawn component");
                self.failed(myself, state, name, format!("cannot spawn: {err}"));
            }
        }
    }

    fn failed(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        name: &str,
        error: String,
    ) {
        let Some(child) = state.children.get_mut(name) else { return };
        child.cell = None;
        if child.paused {
            // it failed while being paused: it stays stopped
            self.registry.update(name, |s| {
                s.status = ComponentStatus::Paused;
                s.last_failure = Some(error.clone());
                s.last_failure_at = Some(Utc::now());
                s.record("paused", format!("failed while pausing: {error}"));
            });
            return;
        }
        let now = Instant::now();
        let window = Duration::from_secs(self.config.window_secs);
        child.failures.push_back(now);
        while child.failures.front().is_some_and(|t| now.duration_since(*t) > window) {
            child.failures.pop_front();
        }
        let failures = child.failures.len();
        let at = Utc::now();
        if failures > self.config.max_restarts as usize {
            tracing::error!(component = name, failures, window_secs = self.config.window_secs, error = %error, "component failed too often, escalating");
            self.registry.update(name, |s| {
                s.status = ComponentStatus::Failed;
                s.last_failure = Some(error.clone());
                s.last_failure_at = Some(at);
                s.backoff_ms = 0;
                s.record(
                    "escalated",
                    format!("{failures} failures within {}s: {error}", self.config.window_secs),
                );
            });
            state.escalated = true;
            let _ = self.escalate.send(Escalation {
                component: name.to_owned(),
                failures,
                window_secs: self.config.window_secs,
                last_error: error,
            });
            return;
        }
        let exp = (failures as u32).saturating_sub(1).min(30);
        let backoff_ms =
            self.config.backoff_min_ms.saturating_mul(1u64 << exp).min(self.config.backoff_max_ms);
        tracing::warn!(component = name, failures, backoff_ms, error = %error, "component failed, restarting after backoff");
        self.registry.update(name, |s| {
            s.status = ComponentStatus::BackingOff;
            s.record("failed", format!("{error} (restart in {backoff_ms} ms)"));
            s.last_failure = Some(error);
            s.last_failure_at = Some(at);
            s.backoff_ms = backoff_ms;
        });
        let myself = myself.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            let _ = myself.send_message(SupervisorMsg::Spawn(name));
        });
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Vec<Arc<dyn Component>>;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        components: Self::Arguments,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut children = BTreeMap::new();
        for component in components {
            let name = component.name();
            self.registry.update(&name, |_| {});
            myself.send_message(SupervisorMsg::Spawn(name.clone()))?;
            children.insert(
                name,
                Child {
                    component,
                    cell: None,
                    failures: VecDeque::new(),
                    restart_requested: false,
                    started: false,
                    paused: false,
                },
            );
        }
        Ok(SupervisorState { children, by_id: HashMap::new(), shutting_down: false, escalated: false })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Spawn(name) => self.spawn_child(&myself, state, &name).await,
            SupervisorMsg::Restart(name, reply) => {
                let result = match state.children.get_mut(&name) {
                    None => Err(unknown(&name, &state.children)),
                    Some(child) if child.paused => Err(format!("{name} is paused: resume it instead")),
                    Some(child) => {
                        tracing::info!(component = %name, "restart requested");
                        match &child.cell {
                            Some(cell) => {
                                child.restart_requested = true;
                                self.registry.update(&name, |s| s.record("restart_requested", ""));
                                cell.kill();
                            }
                            // backing off or stopped: start it now
                            None => {
                                let _ = myself.send_message(SupervisorMsg::Spawn(name.clone()));
                            }
                        }
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Pause(name, reply) => {
                let result = match state.children.get_mut(&name) {
                    None => Err(unknown(&name, &state.children)),
                    Some(child) if child.paused => Err(format!("{name} is already paused")),
                    Some(child) => {
                        tracing::info!(component = %name, "pause requested");
                        child.paused = true;
                        child.restart_requested = false;
                        match &child.cell {
                            // it shows as paused once it has stopped (ActorTerminated)
                            Some(cell) => cell.kill(),
                            None => self.registry.update(&name, |s| {
                                s.status = ComponentStatus::Paused;
                                s.backoff_ms = 0;
                                s.record("paused", "");
                            }),
                        }
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Resume(name, reply) => {
                let result = match state.children.get_mut(&name) {
                    None => Err(unknown(&name, &state.children)),
                    Some(child) if !child.paused => Err(format!("{name} is not paused")),
                    Some(child) => {
                        tracing::info!(component = %name, "resume requested");
                        child.paused = false;
                        // a resume is not a restart: its count stays
                        child.started = false;
                        child.failures.clear();
                        self.registry.update(&name, |s| s.record("resumed", ""));
                        if child.cell.is_none() {
                            self.spawn_child(&myself, state, &name).await;
                        }
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Shutdown(reply) => {
                state.shutting_down = true;
                for child in state.children.values() {
                    if let Some(cell) = &child.cell {
                        cell.kill();
                    }
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(name) = state.by_id.remove(&cell.get_id()) {
                    self.failed(&myself, state, &name, err.to_string());
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let Some(name) = state.by_id.remove(&cell.get_id()) else { return Ok(()) };
                let Some(child) = state.children.get_mut(&name) else { return Ok(()) };
                child.cell = None;
                if child.paused && !state.shutting_down {
                    tracing::info!(component = %name, "component paused");
                    self.registry.update(&name, |s| {
                        s.status = ComponentStatus::Paused;
                        s.record("paused", "");
                    });
                } else if child.restart_requested && !state.shutting_down {
                    child.restart_requested = false;
                    self.spawn_child(&myself, state, &name).await;
                } else {
                    tracing::info!(component = %name, reason = reason.as_deref().unwrap_or(""), "component stopped");
                    self.registry.update(&name, |s| {
                        s.status = ComponentStatus::Stopped;
                        s.record("stopped", reason.clone().unwrap_or_default());
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// An unknown component's error, naming the ones there are.
fn unknown(name: &str, children: &BTreeMap<String, Child>) -> String {
    let known: Vec<&str> = children.keys().map(String::as_str).collect();
    format!("unknown component {name:?}; this agent runs {}", known.join(", "))
}

/// How the rest of the agent talks to the supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    actor: ActorRef<SupervisorMsg>,
    join: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl SupervisorHandle {
    /// Asks the supervisor to restart a component.
    pub async fn restart(&self, component: &str) -> Result<(), String> {
        ractor::call!(self.actor, SupervisorMsg::Restart, component.to_owned())
            .map_err(|e| format!("supervisor unavailable: {e}"))?
    }

    /// Stops a component and keeps it stopped until [`SupervisorHandle::resume`].
    pub async fn pause(&self, component: &str) -> Result<(), String> {
        ractor::call!(self.actor, SupervisorMsg::Pause, component.to_owned())
            .map_err(|e| format!("supervisor unavailable: {e}"))?
    }

    /// Starts a paused component again.
    pub async fn resume(&self, component: &str) -> Result<(), String> {
        ractor::call!(self.actor, SupervisorMsg::Resume, component.to_owned())
            .map_err(|e| format!("supervisor unavailable: {e}"))?
    }

    /// Kills every component and stops the supervisor.
    pub async fn shutdown(&self) {
        let _ = ractor::call!(self.actor, SupervisorMsg::Shutdown);
        // let the kills land before stopping the supervisor itself
        tokio::task::yield_now().await;
        self.actor.stop(Some("shutdown".into()));
        if let Some(join) = self.join.lock().await.take() {
            let _ = join.await;
        }
    }
}

#[cfg(test)]
mod tests;

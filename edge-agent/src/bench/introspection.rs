//! `lanewatch-agent bench introspection`: what introspection costs the pipeline. The same chain
//! of stages (a source, three stages that each hash every item, a sink) moves the same items
//! twice per round: once as plain tasks with no logging at all, once supervised as the agent
//! runs its components — every run instrumented by its `TaskMonitor`, the counters sampled, the
//! log ring recording, and an inspector reading every snapshot (with its flight recorder, its
//! rates and its busy time) and encoding it as the uplink would, 20 times a second. Rounds
//! alternate and each figure is the median; `overhead_ratio` is the throughput with
//! introspection over the throughput without, in the same run.
//!
//! Each run is on a current-thread runtime of its own, so the log subscriber installed for it
//! (`tracing::subscriber::set_default`) covers all of its tasks and nothing else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing_subscriber::layer::SubscriberExt as _;

use crate::logs::{DEFAULT_RING_BYTES, LogFilter, LogRing};
use crate::stage::{Inlet, Outlet, channel};
use crate::supervisor::{Component, ComponentCtx, Registry, RunFuture, Supervisor};

#[derive(Debug, Clone)]
pub struct IntrospectionBenchOptions {
    /// Items through the chain per run.
    pub items: u64,
    /// Rounds (each: one run without introspection, one with).
    pub rounds: usize,
}

#[derive(Debug, Serialize)]
pub struct IntrospectionReport {
    pub items: u64,
    pub rounds: usize,
    pub stages: usize,
    /// Items per second through the chain, median over the rounds.
    pub items_per_s_without: f64,
    pub items_per_s_with: f64,
    /// `items_per_s_with / items_per_s_without` (target ≥ 0.97).
    pub overhead_ratio: f64,
    /// Snapshots the inspector read during the runs with introspection.
    pub inspections: u64,
    /// Log lines the ring held at the end of the last run with introspection.
    pub ring_lines: usize,
}

const STAGES: usize = 3;
/// Bytes each stage hashes per item: a stand-in for a stage's own work.
const WORK_BYTES: usize = 512;
/// How often the inspector reads every snapshot in the runs with introspection.
const INSPECT_EVERY: Duration = Duration::from_millis(50);

pub fn run(options: &IntrospectionBenchOptions) -> anyhow::Result<IntrospectionReport> {
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let (mut inspections, mut ring_lines) = (0, 0);
    for _ in 0..options.rounds.max(1) {
        without.push(options.items as f64 / runtime()?.block_on(plain(options.items))?.as_secs_f64());
        let (elapsed, seen, lines) = runtime()?.block_on(supervised(options.items))?;
        with.push(options.items as f64 / elapsed.as_secs_f64());
        inspections += seen;
        ring_lines = lines;
    }
    let (items_per_s_without, items_per_s_with) = (median(&mut without), median(&mut with));
    Ok(IntrospectionReport {
        items: options.items,
        rounds: options.rounds.max(1),
        stages: STAGES,
        items_per_s_without,
        items_per_s_with,
        overhead_ratio: items_per_s_with / items_per_s_without,
        inspections,
        ring_lines,
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The chain as plain tasks, unsupervised, logging nowhere: the stricter baseline (what
/// supervision itself costs counts as overhead too).
async fn plain(items: u64) -> anyhow::Result<Duration> {
    let _logging = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
    let (components, done) = chain(items);
    let registry = Registry::default();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    for c in components {
        let ctx = ComponentCtx::new(&c.name(), &registry, shutdown.clone());
        tokio::spawn(c.run(ctx));
    }
    done.await?;
    Ok(start.elapsed())
}

/// The chain as the agent runs it, with every part of introspection at work.
async fn supervised(items: u64) -> anyhow::Result<(Duration, u64, usize)> {
    let ring = LogRing::new(DEFAULT_RING_BYTES);
    let (_filter, filter_layer) = LogFilter::new("info").map_err(anyhow::Error::msg)?;
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(filter_layer).with(ring.layer()),
    );
    let (components, done) = chain(items);
    let registry = Registry::default();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let (escalate, _escalations) = tokio::sync::mpsc::unbounded_channel();
    let config = crate::config::SupervisionConfig {
        max_restarts: 5,
        window_secs: 60,
        backoff_min_ms: 100,
        backoff_max_ms: 1000,
    };
    let start = Instant::now();
    let supervisor =
        Supervisor { config, registry: registry.clone(), shutdown, escalate }.start(components).await?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let inspector = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut seen = 0u64;
            let mut tick = tokio::time::interval(INSPECT_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => return seen,
                }
                registry.sample();
                for snapshot in registry.snapshots() {
                    std::hint::black_box(crate::uplink::wire::introspection_bytes(&snapshot));
                    seen += 1;
                }
            }
        })
    };
    done.await?;
    let elapsed = start.elapsed();
    let _ = stop.send(());
    let seen = inspector.await?;
    supervisor.shutdown().await;
    Ok((elapsed, seen, ring.counts().0))
}

/// A source of `items` items, [`STAGES`] hashing stages and a sink; the receiver resolves when
/// the sink has taken the last item.
fn chain(items: u64) -> (Vec<Arc<dyn Component>>, tokio::sync::oneshot::Receiver<()>) {
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let (first_out, mut inlet) = channel::<Vec<u8>>();
    let mut components: Vec<Arc<dyn Component>> = vec![Arc::new(Source { items, output: first_out })];
    for i in 0..STAGES {
        let (output, next) = channel();
        components.push(Arc::new(Hash { name: format!("stage-{i}"), input: inlet, output }));
        inlet = next;
    }
    let done_tx = Arc::new(std::sync::Mutex::new(Some(done_tx)));
    components.push(Arc::new(Sink { items, input: inlet, done: done_tx }));
    (components, done)
}

struct Source {
    items: u64,
    output: Outlet<Vec<u8>>,
}

impl Component for Source {
    fn name(&self) -> String {
        "source".into()
    }
    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        let (items, output) = (self.items, self.output.clone());
        Box::pin(async move {
            for i in 0..items {
                output.send(i.to_le_bytes().repeat(WORK_BYTES / 8)).await?;
                ctx.processed(1);
                tracing::debug!(i, "item made");
            }
            output.close();
            // sources run until shutdown, as the agent's do
            let mut ctx = ctx;
            ctx.shutting_down().await;
            Ok(())
        })
    }
}

struct Hash {
    name: String,
    input: Inlet<Vec<u8>>,
    output: Outlet<Vec<u8>>,
}

impl Component for Hash {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        let (input, output) = (self.input.clone(), self.output.clone());
        Box::pin(async move {
            let mut input = input.lock().await;
            let mut n = 0u64;
            while let Some(mut item) = input.recv().await {
                let digest = Sha256::digest(&item);
                item[..8].copy_from_slice(&digest[..8]);
                output.send(item).await?;
                ctx.processed(1);
                n += 1;
                tracing::debug!(n, "item hashed");
                if n.is_multiple_of(10_000) {
                    tracing::info!(n, stage = %ctx.name, "items hashed");
                }
            }
            output.close();
            Ok(())
        })
    }
}

struct Sink {
    items: u64,
    input: Inlet<Vec<u8>>,
    done: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
}

impl Component for Sink {
    fn name(&self) -> String {
        "sink".into()
    }
    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        let (items, input, done) = (self.items, self.input.clone(), self.done.clone());
        Box::pin(async move {
            let mut input = input.lock().await;
            let mut n = 0;
            while let Some(item) = input.recv().await {
                std::hint::black_box(item);
                ctx.processed(1);
                n += 1;
                if n == items
                    && let Some(done) = done.lock().unwrap().take()
                {
                    let _ = done.send(());
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_runs_move_every_item_and_the_report_adds_up() {
        let report = run(&IntrospectionBenchOptions { items: 2_000, rounds: 1 }).unwrap();
        assert_eq!((report.items, report.rounds, report.stages), (2_000, 1, STAGES));
        assert!(report.items_per_s_with > 0.0 && report.items_per_s_without > 0.0, "{report:?}");
        assert!((report.overhead_ratio - report.items_per_s_with / report.items_per_s_without).abs() < 1e-9);
    }
}

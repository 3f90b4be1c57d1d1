//! The supervisor's restarts, backoff, escalation, flight recorder, restart requests and
//! pauses, on a component that fails when told to.

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// Fails its first `fail_times` runs, then runs until shutdown.
struct Flaky {
    runs: Arc<AtomicU32>,
    fail_times: u32,
    panic: bool,
}

impl Component for Flaky {
    fn name(&self) -> String {
        "flaky".into()
    }
    fn run(&self, mut ctx: ComponentCtx) -> RunFuture {
        let runs = self.runs.clone();
        let fail_times = self.fail_times;
        let panic = self.panic;
        Box::pin(async move {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= fail_times {
                if panic {
                    panic!("boom {n}");
                }
                anyhow::bail!("failure {n}");
            }
            ctx.processed(1);
            ctx.shutting_down().await;
            Ok(())
        })
    }
}

fn config(max_restarts: u32) -> SupervisionConfig {
    SupervisionConfig { max_restarts, window_secs: 60, backoff_min_ms: 100, backoff_max_ms: 1000 }
}

async fn wait_until(registry: &Registry, f: impl Fn(&ComponentSnapshot) -> bool) -> ComponentSnapshot {
    let mut rx = registry.subscribe();
    loop {
        if let Some(s) = registry.get("flaky").filter(|s| f(s)) {
            return s;
        }
        tokio::time::timeout(Duration::from_secs(600), rx.changed()).await.expect("state reached").unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn restarts_with_growing_backoff_then_runs() {
    let registry = Registry::default();
    let (_stop_tx, shutdown) = watch::channel(false);
    let (esc_tx, mut esc_rx) = mpsc::unbounded_channel();
    let runs = Arc::new(AtomicU32::new(0));
    let sup = Supervisor { config: config(5), registry: registry.clone(), shutdown, escalate: esc_tx };
    let started = Instant::now();
    let handle =
        sup.start(vec![Arc::new(Flaky { runs: runs.clone(), fail_times: 3, panic: false })]).await.unwrap();

    let mut backoffs = vec![];
    for _ in 0..3 {
        let s = wait_until(&registry, |s| {
            s.status == ComponentStatus::BackingOff && !backoffs.contains(&s.backoff_ms)
        })
        .await;
        backoffs.push(s.backoff_ms);
    }
    assert_eq!(backoffs, vec![100, 200, 400]);
    let s = wait_until(&registry, |s| s.status == ComponentStatus::Running && s.processed == 1).await;
    assert_eq!(s.restarts, 3);
    assert_eq!(s.last_failure.as_deref(), Some("failure 3"));
    assert!(s.last_failure_at.is_some());
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(esc_rx.try_recv().is_err());
    // the flight recorder has every step, in order
    let kinds: Vec<&str> = s.events.iter().map(|e| e.kind).collect();
    let cycle = ["started", "failed", "restarting"];
    let expected: Vec<&str> = cycle.iter().cycle().take(9).copied().chain(["started"]).collect();
    assert_eq!(kinds, expected);
    assert_eq!(s.events[1].message, "failure 1 (restart in 100 ms)");
    assert_eq!(s.events[2].message, "restart 1");
    handle.shutdown().await;
}

#[test]
fn the_flight_recorder_keeps_the_newest_events() {
    let mut s = ComponentSnapshot::new("c");
    for i in 0..ComponentSnapshot::EVENTS + 5 {
        s.record("failed", format!("failure {i}"));
    }
    assert_eq!(s.events.len(), ComponentSnapshot::EVENTS);
    assert_eq!(s.events.front().unwrap().message, "failure 5");
    assert_eq!(s.events.back().unwrap().message, format!("failure {}", ComponentSnapshot::EVENTS + 4));
}

#[tokio::test(start_paused = true)]
async fn too_many_failures_escalate() {
    let registry = Registry::default();
    let (_stop_tx, shutdown) = watch::channel(false);
    let (esc_tx, mut esc_rx) = mpsc::unbounded_channel();
    let runs = Arc::new(AtomicU32::new(0));
    let sup = Supervisor { config: config(2), registry: registry.clone(), shutdown, escalate: esc_tx };
    let handle =
        sup.start(vec![Arc::new(Flaky { runs: runs.clone(), fail_times: 100, panic: true })]).await.unwrap();
    let esc = esc_rx.recv().await.unwrap();
    assert_eq!(esc.component, "flaky");
    assert_eq!(esc.failures, 3);
    assert!(esc.to_string().starts_with("component flaky failed 3 times in 60s: "), "{esc}");
    assert!(esc.last_error.contains("boom 3"), "{esc}");
    let s = registry.get("flaky").unwrap();
    assert_eq!(s.status, ComponentStatus::Failed);
    assert_eq!(s.restarts, 2);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    handle.shutdown().await;
}

/// A supervisor with one `Flaky` that never fails, once it runs.
async fn running_flaky() -> (Registry, SupervisorHandle, Arc<AtomicU32>, watch::Sender<bool>) {
    let registry = Registry::default();
    let (stop_tx, shutdown) = watch::channel(false);
    let (esc_tx, _esc_rx) = mpsc::unbounded_channel();
    let runs = Arc::new(AtomicU32::new(0));
    let sup = Supervisor { config: config(2), registry: registry.clone(), shutdown, escalate: esc_tx };
    let handle =
        sup.start(vec![Arc::new(Flaky { runs: runs.clone(), fail_times: 0, panic: false })]).await.unwrap();
    wait_until(&registry, |s| s.status == ComponentStatus::Running && s.processed == 1).await;
    (registry, handle, runs, stop_tx)
}

#[tokio::test(start_paused = true)]
async fn restart_request_restarts_a_running_component() {
    let (registry, handle, _runs, _stop) = running_flaky().await;
    handle.restart("flaky").await.unwrap();
    let s = wait_until(&registry, |s| s.processed == 2).await;
    assert_eq!(s.restarts, 1);
    assert_eq!(s.last_failure, None);
    assert!(handle.restart("nope").await.is_err());
    handle.shutdown().await;
}

#[tokio::test]
async fn a_paused_component_stays_stopped_until_resumed() {
    let (registry, handle, runs, _stop) = running_flaky().await;

    handle.pause("flaky").await.unwrap();
    let paused = wait_until(&registry, |s| s.status == ComponentStatus::Paused).await;
    assert_eq!(paused.events.back().map(|e| e.kind), Some("paused"));
    assert_eq!(handle.pause("flaky").await.unwrap_err(), "flaky is already paused");
    assert_eq!(handle.restart("flaky").await.unwrap_err(), "flaky is paused: resume it instead");
    let err = handle.pause("nope").await.unwrap_err();
    assert_eq!(err, "unknown component \"nope\"; this agent runs flaky");
    // a supervisor round trip later it is still paused: nothing restarted it
    handle.resume("nope").await.unwrap_err();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(registry.get("flaky").unwrap().status, ComponentStatus::Paused);

    handle.resume("flaky").await.unwrap();
    let resumed = wait_until(&registry, |s| s.status == ComponentStatus::Running && s.processed == 2).await;
    assert_eq!(resumed.restarts, 0, "a resume is not counted as a restart");
    let kinds: Vec<_> = resumed.events.iter().map(|e| e.kind).collect();
    assert!(kinds.ends_with(&["paused", "resumed", "started"]), "{kinds:?}");
    assert_eq!(handle.resume("flaky").await.unwrap_err(), "flaky is not paused");
    handle.shutdown().await;
}

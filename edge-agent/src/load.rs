//! What each component does over time: items processed and failed per second, and how busy it
//! is, over the last 1, 5 and 15 minutes; and what it is waiting on now ([`WaitingOn`]).
//!
//! Busy time is the time a component spends working, not waiting: the poll time of its task
//! (`tokio-metrics`' `TaskMonitor`, which the supervisor wraps every run in) plus the CPU time
//! of the threads working for it — blocking sections measured with the thread's CPU clock
//! ([`Busy::measure`]: inference, buffer writes) and camera threads, which report their own
//! ([`crate::sources::CameraSource::thread_cpu`]). The registry samples each component's
//! counters every [`SAMPLE_EVERY`] into a ring covering the longest window; a rate is the
//! difference between now and the oldest sample inside its window, over the time between them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_metrics::TaskMonitor;

/// How often the registry samples every component's counters.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The windows rates are given over: 1, 5 and 15 minutes.
pub const WINDOWS: [Duration; 3] =
    [Duration::from_secs(60), Duration::from_secs(300), Duration::from_secs(900)];
/// Samples kept: the longest window, and one more for its start.
const SAMPLES: usize = (900 / 10) + 1;

/// CPU and poll time spent for one component, in nanoseconds; cheap to clone.
#[derive(Clone, Default)]
pub struct Busy(Arc<AtomicU64>);

impl Busy {
    pub fn add(&self, spent: Duration) {
        self.0.fetch_add(u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    /// Runs `work` on this thread and counts the CPU time it took (for blocking sections).
    pub fn measure<T>(&self, work: impl FnOnce() -> T) -> T {
        let start = thread_cpu();
        let out = work();
        self.add(thread_cpu().saturating_sub(start));
        out
    }
}

/// The CPU time (user and system) the calling thread has used, from the kernel's per-thread
/// clock (the accounting `/proc/self/task/<tid>/schedstat` shows, to the nanosecond).
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// A component's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    processed: u64,
    failed: u64,
    busy: Duration,
}

/// What a component is waiting on now, as it last said ([`crate::supervisor::ComponentCtx::wait_on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum WaitingOn {
    /// Nothing: it is working (or has not said).
    Nothing = 0,
    /// The next item of its input channel.
    Input = 1,
    /// Room in the next stage's input channel (downstream is slower).
    Downstream = 2,
    /// Its device: the next scan or frame.
    Device = 3,
    /// The control plane: a message, an ack, the next heartbeat.
    ControlPlane = 4,
}

impl WaitingOn {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Input,
            2 => Self::Downstream,
            3 => Self::Device,
            4 => Self::ControlPlane,
            _ => Self::Nothing,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nothing => "nothing",
            Self::Input => "input",
            Self::Downstream => "downstream",
            Self::Device => "device",
            Self::ControlPlane => "control_plane",
        }
    }
}

/// One component's load: its task monitor, its busy counter, what it waits on and its samples.
/// Kept by the registry across the component's restarts.
pub struct Load {
    pub monitor: TaskMonitor,
    pub busy: Busy,
    waiting: std::sync::atomic::AtomicU8,
    samples: Mutex<VecDeque<Sample>>,
}

impl Load {
    pub fn new() -> Self {
        let start = Sample { at: Instant::now(), processed: 0, failed: 0, busy: Duration::ZERO };
        Self {
            monitor: TaskMonitor::new(),
            busy: Busy::default(),
            waiting: std::sync::atomic::AtomicU8::new(0),
            samples: Mutex::new(VecDeque::from([start])),
        }
    }

    /// Says what the component waits on from now (one atomic store: cheap at every await).
    pub fn wait_on(&self, on: WaitingOn) {
        self.waiting.store(on as u8, Ordering::Relaxed);
    }

    pub fn waiting_on(&self) -> WaitingOn {
        WaitingOn::from_u8(self.waiting.load(Ordering::Relaxed))
    }

    /// All the busy time so far: task polls and the threads' CPU.
    pub fn busy_total(&self) -> Duration {
        self.monitor.cumulative().total_poll_duration + self.busy.total()
    }

    /// Records the counters now; the oldest sample goes once the ring is full.
    pub fn sample(&self, processed: u64, failed: u64) {
        let now = Sample { at: Instant::now(), processed, failed, busy: self.busy_total() };
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(now);
    }

    /// Rates and busy ratios over each of [`WINDOWS`], up to the counters given (now).
    pub fn rates(&self, processed: u64, failed: u64) -> Rates {
        let now = Sample { at: Instant::now(), processed, failed, busy: self.busy_total() };
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let over = |window: Duration| -> Window {
            // the oldest sample inside the window (a young component: its first sample)
            let Some(from) =
                samples.iter().find(|s| now.at.duration_since(s.at) <= window + SAMPLE_EVERY / 2)
            else {
                return Window::default();
            };
            let secs = now.at.duration_since(from.at).as_secs_f64();
            if secs <= 0.0 {
                return Window::default();
            }
            let per_sec = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            Window {
                processed_per_sec: per_sec(now.processed, from.processed),
                failed_per_sec: per_sec(now.failed, from.failed),
                busy_ratio: now.busy.saturating_sub(from.busy).as_secs_f64() / secs,
            }
        };
        Rates {
            m1: over(WINDOWS[0]),
            m5: over(WINDOWS[1]),
            m15: over(WINDOWS[2]),
            busy_seconds: now.busy.as_secs_f64(),
        }
    }
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

/// A component's rates over the last 1, 5 and 15 minutes (over its lifetime while younger).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    pub m1: Window,
    pub m5: Window,
    pub m15: Window,
    /// All its busy time since the agent started it first.
    pub busy_seconds: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Window {
    pub processed_per_sec: f64,
    pub failed_per_sec: f64,
    /// Busy time over wall time: 1.0 is one core (or one task) busy all the time; more than 1
    /// when several threads work for the component at once.
    pub busy_ratio: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rates_cover_each_window_and_forget_what_is_older() {
        let load = Load::new();
        // 10 items per sample period (1/s) for 15 minutes, with one failure per minute
        let (mut processed, mut failed) = (0, 0);
        for i in 1..=90u64 {
            tokio::time::advance(SAMPLE_EVERY).await;
            processed += 10;
            if i % 6 == 0 {
                failed += 1;
            }
            load.sample(processed, failed);
        }
        let rates = load.rates(processed, failed);
        for w in [rates.m1, rates.m5, rates.m15] {
            assert!((w.processed_per_sec - 1.0).abs() < 1e-9, "{rates:?}");
            assert!((w.failed_per_sec - 1.0 / 60.0).abs() < 1e-9, "{rates:?}");
        }
        // then a burst: 600 items in the last minute
        for _ in 0..6 {
            tokio::time::advance(SAMPLE_EVERY).await;
            processed += 100;
            load.sample(processed, failed);
        }
        let rates = load.rates(processed, failed);
        assert!((rates.m1.processed_per_sec - 10.0).abs() < 1e-9, "{rates:?}");
        assert!((rates.m5.processed_per_sec - (600.0 + 240.0) / 300.0).abs() < 1e-9, "{rates:?}");
        assert!((rates.m15.processed_per_sec - (600.0 + 840.0) / 900.0).abs() < 1e-9, "{rates:?}");
        assert_eq!(rates.m1.failed_per_sec, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_young_component_is_rated_over_its_lifetime() {
        let load = Load::new();
        assert_eq!(load.rates(0, 0), Rates::default(), "nothing to rate at once");
        tokio::time::advance(Duration::from_secs(20)).await;
        let rates = load.rates(40, 2);
        assert!((rates.m1.processed_per_sec - 2.0).abs() < 1e-9, "{rates:?}");
        assert!((rates.m15.processed_per_sec - 2.0).abs() < 1e-9, "{rates:?}");
        assert!((rates.m1.failed_per_sec - 0.1).abs() < 1e-9, "{rates:?}");
    }

    #[test]
    fn blocking_work_counts_its_cpu_time_and_sleeping_does_not() {
        let busy = Busy::default();
        // spin until this thread has used 30 ms of CPU, however long that takes on a busy machine
        busy.measure(|| {
            let start = thread_cpu();
            while thread_cpu() - start < Duration::from_millis(30) {
                std::hint::black_box(0);
            }
        });
        let after_spin = busy.total();
        assert!(after_spin >= Duration::from_millis(30), "{after_spin:?}");
        busy.measure(|| std::thread::sleep(Duration::from_millis(200)));
        let slept = busy.total() - after_spin;
        assert!(slept < Duration::from_millis(100), "sleeping is not busy: {slept:?}");
    }

    #[tokio::test]
    async fn a_component_says_what_it_waits_on_and_works_again_after() {
        let registry = crate::supervisor::Registry::default();
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let ctx = crate::supervisor::ComponentCtx::new("detect", &registry, shutdown);
        registry.update("detect", |_| {});
        assert_eq!(registry.get("detect").unwrap().waiting_on, WaitingOn::Nothing);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(1);
        let waiting = ctx.waiting(WaitingOn::Input, rx.recv());
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        assert_eq!(registry.get("detect").unwrap().waiting_on, WaitingOn::Input);
        tx.send(7).await.unwrap();
        assert_eq!(waiting.await, Some(7));
        assert_eq!(registry.get("detect").unwrap().waiting_on, WaitingOn::Nothing);
        ctx.wait_on(WaitingOn::Device);
        assert_eq!(registry.get("detect").unwrap().waiting_on.as_str(), "device");
    }

    #[tokio::test]
    async fn a_monitored_task_counts_its_poll_time_not_its_waits() {
        let load = Load::new();
        load.monitor
            .instrument(async {
                tokio::time::sleep(Duration::from_millis(200)).await;
            })
            .await;
        assert!(
            load.busy_total() < Duration::from_millis(100),
            "waiting is not busy: {:?}",
            load.busy_total()
        );
        load.monitor
            .instrument(async {
                let start = std::time::Instant::now();
                while start.elapsed() < Duration::from_millis(30) {
                    std::hint::black_box(0);
                }
            })
            .await;
        assert!(load.busy_total() >= Duration::from_millis(30), "{:?}", load.busy_total());
    }
}

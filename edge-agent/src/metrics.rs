//! The agent's Prometheus metrics (`prometheus-client`), served at `/metrics` on the local UI's
//! listener: latency histograms the stages observe (scan to trigger, vision per frame, trigger to
//! buffered per capture), and, read at each scrape from what introspection already keeps, every component's
//! status, restarts, throughput, inbox and busy ratio, the cameras' frames and stalls, the LIDAR
//! link, vision's counters, the buffer's fill per value class and the uplink's link and backlog.
//!
//! Names follow Prometheus conventions: the `lanewatch_agent_` prefix, base units (seconds,
//! bytes), `_total` counters, and labels with bounded values only (component, camera and class
//! names come from the config; statuses are a fixed set).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::buffer::Buffer;
use crate::state::{CameraLink, ComponentState, LinkState, UplinkLink};
use crate::supervisor::{ComponentSnapshot, ComponentStatus};

/// The statuses `component_status` has a series for.
const STATUSES: [ComponentStatus; 6] = [
    ComponentStatus::Starting,
    ComponentStatus::Running,
    ComponentStatus::BackingOff,
    ComponentStatus::Stopped,
    ComponentStatus::Failed,
    ComponentStatus::Paused,
];

/// What the stages observe; cheap to clone, kept across config generations.
#[derive(Clone)]
pub struct StageMetrics {
    /// From the scan a vehicle entered in to the trigger's camera requests (sensing, detection).
    pub scan_to_trigger_seconds: Histogram,
    /// Decode, detect, count, anonymize, re-check and encode of one frame.
    pub vision_frame_seconds: Histogram,
    /// From the frame taken at the trigger instant to its capture being durable in the buffer
    /// (the vehicle's exit, vision, the buffer's commit).
    pub trigger_to_buffered_seconds: Histogram,
}

impl std::fmt::Debug for StageMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageMetrics").finish_non_exhaustive()
    }
}

impl Default for StageMetrics {
    fn default() -> Self {
        Self {
            scan_to_trigger_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 12)),
            vision_frame_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            trigger_to_buffered_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
        }
    }
}

/// The running generation's components, as the collector reads them at a scrape.
pub type Snapshots = watch::Receiver<Option<crate::supervisor::Registry>>;

/// The whole registry: the stage histograms and the collector of introspection's state.
pub struct AgentMetrics {
    registry: Registry,
}

impl AgentMetrics {
    pub fn new(stages: &StageMetrics, components: Snapshots, buffer: Buffer) -> Self {
        let mut registry = Registry::with_prefix("lanewatch_agent");
        registry.register(
            "vision_frame_seconds",
            "Time vision took for one frame: decode, detect, count, anonymize, re-check, encode",
            stages.vision_frame_seconds.clone(),
        );
        registry.register(
            "scan_to_trigger_seconds",
            "Time from the scan a vehicle entered in to the trigger's camera requests",
            stages.scan_to_trigger_seconds.clone(),
        );
        registry.register(
            "trigger_to_buffered_seconds",
            "Time from the frame taken at the trigger instant to its capture being durable in the buffer",
            stages.trigger_to_buffered_seconds.clone(),
        );
        registry.register_collector(Box::new(StateCollector { components, buffer }));
        Self { registry }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabel {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    component: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CameraLabel {
    camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

struct StateCollector {
    components: Snapshots,
    buffer: Buffer,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

/// One metric family with a value per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut f = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in series {
        metric.encode(f.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One metric without labels.
fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    let kind = metric.metric_type();
    metric.encode(encoder.encode_descriptor(name, help, None, kind)?)
}

fn label(s: &ComponentSnapshot) -> ComponentLabel {
    ComponentLabel { component: s.name.clone() }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snaps: Vec<ComponentSnapshot> =
            self.components.borrow().as_ref().map(|r| r.snapshots()).unwrap_or_default();
        let e = &mut encoder;
        family(
            e,
            "component_status",
            "1 for the component's current status, 0 for the others",
            MetricType::Gauge,
            snaps.iter().flat_map(|s| {
                STATUSES.iter().map(move |st| {
                    let labels = StatusLabels { component: s.name.clone(), status: st.as_str().to_owned() };
                    (labels, ConstGauge::new(i64::from(s.status == *st)))
                })
            }),
        )?;
        family(
            e,
            "component_restarts",
            "Restarts of the component by its supervisor",
            MetricType::Counter,
            snaps.iter().map(|s| (label(s), ConstCounter::new(u64::from(s.restarts)))),
        )?;
        family(
            e,
            "component_processed",
            "Items the component processed",
            MetricType::Counter,
            snaps.iter().map(|s| (label(s), ConstCounter::new(s.processed))),
        )?;
        family(
            e,
            "component_failed",
            "Items the component failed on",
            MetricType::Counter,
            snaps.iter().map(|s| (label(s), ConstCounter::new(s.failed))),
        )?;
        family(
            e,
            "component_busy_ratio",
            "Busy time over wall time in the last minute (1 is one core)",
            MetricType::Gauge,
            snaps.iter().map(|s| (label(s), ConstGauge::new(s.rates.m1.busy_ratio))),
        )?;
        family(
            e,
            "component_inbox_depth",
            "Items waiting in the component's input channel",
            MetricType::Gauge,
            snaps
                .iter()
                .filter_map(|s| s.inbox.as_ref().map(|i| (label(s), ConstGauge::new(i.depth as i64)))),
        )?;
        family(
            e,
            "component_inbox_capacity",
            "Capacity of the component's input channel",
            MetricType::Gauge,
            snaps
                .iter()
                .filter_map(|s| s.inbox.as_ref().map(|i| (label(s), ConstGauge::new(i.capacity as i64)))),
        )?;
        let cameras: Vec<(CameraLabel, &crate::state::CameraState)> = snaps
            .iter()
            .filter_map(|s| match &s.state {
                ComponentState::Camera(c) => {
                    Some((CameraLabel { camera: s.name.trim_start_matches("acquire-").to_owned() }, c))
                }
                _ => None,
            })
            .collect();
        family(
            e,
            "camera_frames",
            "Frames the camera delivered",
            MetricType::Counter,
            cameras.iter().map(|(l, c)| (l.clone(), ConstCounter::new(c.frames))),
        )?;
        family(
            e,
            "camera_stalls",
            "Times the camera stopped delivering frames for longer than its stall bound",
            MetricType::Counter,
            cameras.iter().map(|(l, c)| (l.clone(), ConstCounter::new(c.stalls))),
        )?;
        family(
            e,
            "camera_streaming",
            "1 while the camera delivers frames",
            MetricType::Gauge,
            cameras
                .iter()
                .map(|(l, c)| (l.clone(), ConstGauge::new(i64::from(c.state == CameraLink::Streaming)))),
        )?;
        for s in &snaps {
            match &s.state {
                ComponentState::Lidar(l) => {
                    single(
                        e,
                        "lidar_connected",
                        "1 while the LIDAR link is up",
                        ConstGauge::new(i64::from(l.state == LinkState::Connected)),
                    )?;
                    single(
                        e,
                        "lidar_degraded",
                        "1 while the LIDAR sees too few echoes",
                        ConstGauge::new(i64::from(l.degraded)),
                    )?;
                    single(
                        e,
                        "lidar_seconds_since_scan",
                        "Seconds since the last scan arrived",
                        ConstGauge::new(l.secs_since_last_scan as i64),
                    )?;
                }
                ComponentState::Vision(v) => {
                    single(e, "vision_frames", "Frames vision processed", ConstCounter::new(v.frames))?;
                    single(
                        e,
                        "vision_quarantined",
                        "Captures quarantined (anonymization not proven)",
                        ConstCounter::new(v.quarantined),
                    )?;
                    single(
                        e,
                        "vision_violation_candidates",
                        "Captures decided violation candidates",
                        ConstCounter::new(v.violation_candidates),
                    )?;
                    single(
                        e,
                        "vision_unreadable",
                        "Captures whose occupancy was unreadable",
                        ConstCounter::new(v.unreadable),
                    )?;
                }
                ComponentState::Uplink(u) => {
                    single(
                        e,
                        "uplink_connected",
                        "1 while the session with the control plane is open",
                        ConstGauge::new(i64::from(u.state == UplinkLink::Connected)),
                    )?;
                    single(
                        e,
                        "uplink_acked_captures",
                        "Captures the control plane acknowledged",
                        ConstCounter::new(u.acked),
                    )?;
                }
                _ => {}
            }
        }
        let stats = self.buffer.stats();
        let classes = self.buffer.by_class();
        let now = chrono::Utc::now();
        single(e, "buffer_max_bytes", "The buffer's bound", ConstGauge::new(stats.max_bytes as i64))?;
        single(
            e,
            "buffer_captures",
            "Captures waiting in the buffer (the uplink's backlog)",
            ConstGauge::new(stats.captures as i64),
        )?;
        single(
            e,
            "buffer_evicted_captures",
            "Captures evicted to make room",
            ConstCounter::new(stats.evicted),
        )?;
        single(
            e,
            "buffer_receipts_pending",
            "Deletion receipts waiting for the control plane",
            ConstGauge::new(stats.receipts_pending as i64),
        )?;
        let all = crate::domain::ValueClass::ALL;
        family(
            e,
            "buffer_class_bytes",
            "Buffered bytes per value class",
            MetricType::Gauge,
            all.iter().map(|c| {
                let bytes = classes.iter().find(|f| f.class == *c).map_or(0, |f| f.bytes);
                (ClassLabel { class: c.as_str().to_owned() }, ConstGauge::new(bytes as i64))
            }),
        )?;
        family(
            e,
            "buffer_class_oldest_seconds",
            "Age of the oldest buffered capture per value class (0 when none)",
            MetricType::Gauge,
            all.iter().map(|c| {
                let age = classes
                    .iter()
                    .find(|f| f.class == *c)
                    .map_or(0.0, |f| (now - f.oldest).num_milliseconds() as f64 / 1000.0);
                (ClassLabel { class: c.as_str().to_owned() }, ConstGauge::new(age.max(0.0)))
            }),
        )?;
        Ok(())
    }
}

/// The handler's shared state.
pub type Shared = Arc<AgentMetrics>;

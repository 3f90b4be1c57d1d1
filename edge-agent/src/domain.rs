//! Domain types that flow through the pipeline: scans, frames, detections, captures.
//!
//! None of these know protobuf; `uplink::wire` converts captures at the edge.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Vehicle classes the agent distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VehicleClass {
    Unknown,
    Motorcycle,
    Car,
    Van,
    Truck,
    Bus,
}

/// One sweep of the overhead scan plane: range per beam, beams ordered by angle.
#[derive(Debug, Clone)]
pub struct Scan {
    pub t: DateTime<Utc>,
    pub ranges_m: Vec<f32>,
}

/// Geometry of the scan plane, shared by scan sources and the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanGeometry {
    pub mounting_height_m: f64,
    /// Lateral position of the scanner, metres from the right road edge.
    pub mount_y_m: f64,
    pub fov_deg: f64,
    pub angular_step_deg: f64,
    pub lanes: u32,
    pub lane_width_m: f64,
}

impl ScanGeometry {
    pub fn beams(&self) -> usize {
        (self.fov_deg / self.angular_step_deg).round() as usize + 1
    }

    /// Angle of beam `i` from the vertical, radians; negative points towards lane 0.
    pub fn beam_angle(&self, i: usize) -> f64 {
        (-self.fov_deg / 2.0 + i as f64 * self.angular_step_deg).to_radians()
    }
}

/// A vehicle detection event emitted by `detect`.
#[derive(Debug, Clone, PartialEq)]
pub enum Detection {
    Entry { track: u64, lane: u32, t: DateTime<Utc> },
    Exit { track: u64, lane: u32, t: DateTime<Utc>, max_height_m: f32, width_m: f32, class: VehicleClass },
}

/// A camera frame. Simulated frames stay raw until one becomes a capture.
#[derive(Debug, Clone)]
pub struct Frame {
    pub t: DateTime<Utc>,
    pub payload: FramePayload,
}

#[derive(Debug, Clone)]
pub enum FramePayload {
    Rgb { width: u32, height: u32, pixels: Arc<Vec<u8>> },
    Encoded { bytes: Bytes, content_type: &'static str },
}

/// What the trigger stage asks of one camera's acquire stage.
#[derive(Debug, Clone, PartialEq)]
pub enum AcquireRequest {
    /// `speed_kmh`: the vehicle's speed measured on entry (a second scan plane), when it was.
    Take {
        track: u64,
        lane: u32,
        detected_at: DateTime<Utc>,
        trigger_at: DateTime<Utc>,
        speed_kmh: Option<f64>,
    },
    Finalize {
        track: u64,
        max_height_m: f32,
        width_m: f32,
        class: VehicleClass,
    },
    /// An operator's test capture (`test_capture`): the newest frame, now, as capture
    /// `capture_id` in `lane`; answered once the capture was made.
    Test {
        capture_id: Uuid,
        lane: u32,
        reply: TestReply,
    },
}

/// Where an acquire stage answers a test capture: once, with `Ok` when the capture was made.
#[derive(Debug, Clone)]
pub struct TestReply(Arc<std::sync::Mutex<Option<TestAnswer>>>);

/// The sending side of a test capture's answer: `Ok` once made, else why not.
type TestAnswer = tokio::sync::oneshot::Sender<Result<(), String>>;

impl TestReply {
    pub fn new(tx: TestAnswer) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(tx))))
    }

    /// Answers; later answers are ignored.
    pub fn send(&self, result: Result<(), String>) {
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(result);
        }
    }

    /// The asker gave up (timed out) or was answered already.
    pub fn abandoned(&self) -> bool {
        self.0.lock().unwrap().as_ref().is_none_or(|tx| tx.is_closed())
    }
}

impl PartialEq for TestReply {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Occupancy as vision saw it: `Unknown` when no vision ran (the site has no `[vision]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OccupancyStatus {
    Unknown,
    /// Vision counted the occupants of the vehicle (all its cameras fused).
    Counted {
        occupants: u32,
        sections: Vec<SectionCount>,
        /// The weakest section's confidence, 0..1.
        confidence: f32,
        /// The face model that counted (file name and a short hash).
        model: String,
    },
    /// Vision ran but could not read the windows (tinted, glare, no driver found).
    Unreadable {
        model: String,
    },
}

/// Occupants vision counted in one seat section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionCount {
    pub section: String,
    pub occupants: u32,
    pub confidence: f32,
}

/// How much a capture is worth keeping, lowest first: when the buffer is full, the lowest class
/// goes first. Ordered by declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueClass {
    /// Only the counts matter (e.g. vision saw the vehicle is not in an HOV lane).
    Statistics,
    Compliant,
    /// Vision counted too few occupants for the lane: potential evidence.
    ViolationCandidate,
}

impl ValueClass {
    pub const ALL: [ValueClass; 3] = [Self::Statistics, Self::Compliant, Self::ViolationCandidate];

    /// The class of a capture whose occupancy is `occupancy`, before any lane policy: without
    /// vision every capture is `Compliant`; the vision stage applies the policy
    /// (`vision::occupancy::decide`), which alone makes violation candidates.
    pub fn from_occupancy(occupancy: OccupancyStatus) -> Self {
        match occupancy {
            OccupancyStatus::Unknown
            | OccupancyStatus::Counted { .. }
            | OccupancyStatus::Unreadable { .. } => Self::Compliant,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Statistics => "statistics",
            Self::Compliant => "compliant",
            Self::ViolationCandidate => "violation_candidate",
        }
    }
}

impl Default for ValueClass {
    fn default() -> Self {
        Self::from_occupancy(OccupancyStatus::Unknown)
    }
}

/// Metadata of one capture, as stored in the buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureMeta {
    pub capture_id: Uuid,
    pub site_id: String,
    pub lane: u32,
    pub captured_at: DateTime<Utc>,
    pub detected_at: DateTime<Utc>,
    pub class: VehicleClass,
    pub occupancy: OccupancyStatus,
    pub height_m: f32,
    pub width_m: f32,
    pub camera_id: String,
    pub config_version: u64,
    pub content_type: String,
    /// Absent in records written before value classes existed: those read as the default.
    #[serde(default)]
    pub value_class: ValueClass,
    /// Speed measured on entry, km/h; absent without a second scan plane (and in older records).
    #[serde(default)]
    pub speed_kmh: Option<f32>,
    /// Taken on an operator's request (a test capture), not of a vehicle: never counted in
    /// statistics, never a violation candidate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
    /// The W3C `traceparent` of the capture's roadside trace (`traces.rs`), set as the buffer
    /// stores it when the agent traces, kept with it until the upload, which continues it (or
    /// links to it when late). Absent without tracing and in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
}

/// Why the agent deleted a capture the control plane never acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionReason {
    EvictedFull,
    Expired,
    Damaged,
}

/// Proof of such a deletion, kept durably until the control plane acknowledged it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletionReceipt {
    pub receipt_id: Uuid,
    /// `None` when a damaged record's id could not be recovered.
    pub capture_id: Option<Uuid>,
    pub class: Option<ValueClass>,
    pub captured_at: Option<DateTime<Utc>>,
    pub deleted_at: DateTime<Utc>,
    pub reason: DeletionReason,
    pub bytes: u64,
}

/// Instants of one capture's way through the stages, carried with it (never stored) while the
/// agent traces (`traces.rs` turns them into spans).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageMarks {
    /// The trigger's request for this vehicle reached the camera's acquire stage.
    pub requested_at: Option<DateTime<Utc>>,
    /// Acquire had the frame and the vehicle's exit, and encoded the image.
    pub made_at: Option<DateTime<Utc>>,
    /// Vision took the capture in.
    pub vision_started: Option<DateTime<Utc>>,
    /// Vision released it (all the vehicle's cameras fused, the lane's policy applied).
    pub vision_released: Option<DateTime<Utc>>,
}

impl StageMarks {
    /// Marks of a capture acquire just made, `requested_at` being when its request arrived.
    pub fn made(requested_at: Option<DateTime<Utc>>) -> Box<Self> {
        Box::new(Self { requested_at, made_at: Some(Utc::now()), ..Self::default() })
    }
}

/// A capture: one vehicle, one camera image.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    pub meta: CaptureMeta,
    pub image: Bytes,
    /// When the stages handled it, while the agent traces (`traces.rs`); never stored.
    pub trace: Option<Box<StageMarks>>,
}

impl Capture {
    /// A car's capture taken now with placeholder vehicle facts (1.5 m × 1.8 m, compliant, no
    /// occupancy known): what benches and tests feed the buffer, the uplink and vision.
    pub fn synthetic(site_id: &str, lane: u32, camera_id: &str, image: Bytes) -> Self {
        let now = Utc::now();
        Self {
            meta: CaptureMeta {
                capture_id: Uuid::now_v7(),
                site_id: site_id.into(),
                lane,
                captured_at: now,
                detected_at: now,
                class: VehicleClass::Car,
                occupancy: OccupancyStatus::Unknown,
                height_m: 1.5,
                width_m: 1.8,
                camera_id: camera_id.into(),
                config_version: 0,
                content_type: "image/jpeg".into(),
                value_class: ValueClass::Compliant,
                speed_kmh: None,
                test: false,
                trace_parent: None,
            },
            image,
            trace: None,
        }
    }
}

/// This agent's clock against the control plane's, from one heartbeat round trip (the uplink
/// measures it; diagnostics and introspection report it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockOffset {
    /// Agent minus control plane, in milliseconds.
    pub offset_ms: f64,
    pub round_trip_ms: f64,
    pub measured_at: DateTime<Utc>,
}

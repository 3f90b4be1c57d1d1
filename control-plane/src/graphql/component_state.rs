//! `Component.state`: a component's own state as a GraphQL union, one object per kind of
//! component (LIDAR, detector, trigger, camera, vision, buffer, uplink), converted by hand from
//! `domain::ComponentDetail`. Ask for the fields of the kinds wanted with inline fragments:
//! `state { __typename ... on CameraState { link frames stalls } }`.

use async_graphql::{Enum, SimpleObject, Union};
use chrono::{DateTime, Utc};

use crate::domain;

/// What a component says about itself, typed by its kind.
#[derive(Union)]
pub enum ComponentState {
    Lidar(LidarState),
    Detector(DetectorState),
    Trigger(TriggerState),
    Camera(CameraState),
    Vision(VisionState),
    Buffer(BufferState),
    Uplink(UplinkState),
}

/// Where a link (a scanner, a camera, the uplink's session) stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum LinkState {
    /// A value this control plane predates.
    Unknown,
    Connecting,
    Connected,
    /// A LIDAR replay reached the end of its recording.
    Finished,
    /// A camera opening its source.
    Opening,
    /// A camera delivering frames.
    Streaming,
    /// A camera without frames for longer than its stall threshold.
    Stalled,
    /// The uplink without a session.
    Disconnected,
    /// The uplink whose last session the control plane refused.
    Refused,
}

/// The scan source: the SICK driver (or a recording replayed through it).
#[derive(SimpleObject)]
pub struct LidarState {
    /// `tcp` or `replay`.
    source: String,
    /// The scanner's address or the recording's path.
    origin: String,
    /// `cola-a` or `cola-b`.
    framing: String,
    link: LinkState,
    /// No scan for longer than the driver's threshold.
    degraded: bool,
    secs_since_last_scan: u64,
    last_error: Option<String>,
    telegrams_ok: u64,
    telegrams_malformed: u64,
    garbage_bytes: u64,
    out_of_order: u64,
    scans_missed: u64,
    reconnects: u64,
    connect_failures: u64,
    sopas_errors: u64,
}

/// A detector (one per scan plane).
#[derive(SimpleObject)]
pub struct DetectorState {
    /// The empty road has been learnt; nothing is detected before.
    learnt: bool,
    /// Most beams lack an echo (sensor dropout).
    degraded: bool,
    degraded_scans: u64,
    entries: u64,
    exits: u64,
    /// Entries whose speed a second scan plane measured.
    speeds_measured: u64,
}

/// The trigger: camera triggers sent since the agent started.
#[derive(SimpleObject)]
pub struct TriggerState {
    triggers_per_camera: Vec<CameraCount>,
}

#[derive(SimpleObject)]
pub struct CameraCount {
    camera: String,
    count: u64,
}

/// One camera's acquire component.
#[derive(SimpleObject)]
pub struct CameraState {
    link: LinkState,
    /// Frames since its last (re)start.
    frames: u64,
    /// Triggers waiting for their frame or their vehicle's exit.
    pending: u64,
    /// Stalls since the agent started.
    stalls: u64,
    stall_after_ms: u64,
    last_frame_at: Option<DateTime<Utc>>,
    /// What its source opened (V4L2 device, file, pipeline, GigE camera); null for simulated
    /// cameras.
    device: Option<String>,
    /// Frames its grabbing thread dropped while the component was busy.
    dropped_frames: u64,
    /// Operators' test captures since the agent started.
    test_captures: u64,
}

/// The vision stage: anonymization and occupant counting.
#[derive(SimpleObject)]
pub struct VisionState {
    frames: u64,
    faces: u64,
    released: u64,
    quarantined: u64,
    /// Captures its quarantine holds now.
    quarantine_held: u64,
    last_quarantine_reason: Option<String>,
    counted: u64,
    unreadable: u64,
    violation_candidates: u64,
    /// `<file>@<sha256 prefix>`.
    model: String,
    /// ONNX Runtime sessions: frames processed at once.
    sessions: u64,
}

/// The durable capture buffer.
#[derive(SimpleObject)]
pub struct BufferState {
    captures: u64,
    /// Stored record bytes; never above `maxBytes`.
    bytes: u64,
    max_bytes: u64,
    appended: u64,
    rejected: u64,
    evicted: u64,
    expired: u64,
    damaged: u64,
    receipts_pending: u64,
}

/// The uplink: its session and what it delivered.
#[derive(SimpleObject)]
pub struct UplinkState {
    link: LinkState,
    /// Why the control plane refused its last session, while refused.
    refused: Option<String>,
    /// Empty while disconnected.
    session_id: String,
    /// Captures acknowledged since the agent started.
    acked: u64,
    /// The buffer when this was published.
    buffer: BufferState,
}

impl From<domain::LinkState> for LinkState {
    fn from(l: domain::LinkState) -> Self {
        match l {
            domain::LinkState::Unknown => Self::Unknown,
            domain::LinkState::Connecting => Self::Connecting,
            domain::LinkState::Connected => Self::Connected,
            domain::LinkState::Finished => Self::Finished,
            domain::LinkState::Opening => Self::Opening,
            domain::LinkState::Streaming => Self::Streaming,
            domain::LinkState::Stalled => Self::Stalled,
            domain::LinkState::Disconnected => Self::Disconnected,
            domain::LinkState::Refused => Self::Refused,
        }
    }
}

impl From<domain::BufferDetail> for BufferState {
    fn from(b: domain::BufferDetail) -> Self {
        Self {
            captures: b.captures,
            bytes: b.bytes,
            max_bytes: b.max_bytes,
            appended: b.appended,
            rejected: b.rejected,
            evicted: b.evicted,
            expired: b.expired,
            damaged: b.damaged,
            receipts_pending: b.receipts_pending,
        }
    }
}

impl From<domain::ComponentDetail> for ComponentState {
    fn from(d: domain::ComponentDetail) -> Self {
        use domain::ComponentDetail as D;
        match d {
            D::Lidar(l) => Self::Lidar(LidarState {
                source: l.source,
                origin: l.origin,
                framing: l.framing,
                link: l.link.into(),
                degraded: l.degraded,
                secs_since_last_scan: l.secs_since_last_scan,
                last_error: l.last_error,
                telegrams_ok: l.telegrams_ok,
                telegrams_malformed: l.telegrams_malformed,
                garbage_bytes: l.garbage_bytes,
                out_of_order: l.out_of_order,
                scans_missed: l.scans_missed,
                reconnects: l.reconnects,
                connect_failures: l.connect_failures,
                sopas_errors: l.sopas_errors,
            }),
            D::Detector(d) => Self::Detector(DetectorState {
                learnt: d.learnt,
                degraded: d.degraded,
                degraded_scans: d.degraded_scans,
                entries: d.entries,
                exits: d.exits,
                speeds_measured: d.speeds_measured,
            }),
            D::Trigger(t) => Self::Trigger(TriggerState {
                triggers_per_camera: t
                    .triggers_per_camera
                    .into_iter()
                    .map(|(camera, count)| CameraCount { camera, count })
                    .collect(),
            }),
            D::Camera(c) => Self::Camera(CameraState {
                link: c.link.into(),
                frames: c.frames,
                pending: c.pending,
                stalls: c.stalls,
                stall_after_ms: c.stall_after_ms,
                last_frame_at: c.last_frame_at,
                device: c.source,
                dropped_frames: c.dropped_frames,
                test_captures: c.test_captures,
            }),
            D::Vision(v) => Self::Vision(VisionState {
                frames: v.frames,
                faces: v.faces,
                released: v.released,
                quarantined: v.quarantined,
                quarantine_held: v.quarantine_held,
                last_quarantine_reason: v.last_quarantine_reason,
                counted: v.counted,
                unreadable: v.unreadable,
                violation_candidates: v.violation_candidates,
                model: v.model,
                sessions: v.sessions,
            }),
            D::Buffer(b) => Self::Buffer(b.into()),
            D::Uplink(u) => Self::Uplink(UplinkState {
                link: u.link.into(),
                refused: u.refused,
                session_id: u.session_id,
                acked: u.acked,
                buffer: u.buffer.into(),
            }),
        }
    }
}

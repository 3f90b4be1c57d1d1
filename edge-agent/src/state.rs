//! The typed state each component publishes for introspection: one struct per kind of
//! component (LIDAR link, detector, trigger, camera, vision, buffer, uplink), a schema rather
//! than free JSON. The supervisor's snapshot holds a [`ComponentState`]; the uplink converts it
//! to `lanewatch.v1.ComponentDetail` (and, for control planes that predate it, to the JSON of
//! `detail_json`, which is this enum serialized).
//!
//! This module sits below the supervisor and every stage and imports nothing of ours, so a stage,
//! a scan source and the buffer can all name their state without a cycle.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What a component says about itself; `Empty` until it first published.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ComponentState {
    #[default]
    Empty,
    Lidar(LidarState),
    Detector(DetectorState),
    Trigger(TriggerState),
    Camera(CameraState),
    Vision(VisionState),
    Buffer(BufferStats),
    Uplink(UplinkState),
}

/// A scan source (the SICK driver, or a recording replayed through it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LidarState {
    /// `tcp`, `replay`.
    pub source: String,
    /// The scanner's address or the recording's path.
    pub origin: String,
    /// `cola-a` or `cola-b`.
    pub framing: String,
    pub state: LinkState,
    /// No scan for longer than the driver's degraded threshold.
    pub degraded: bool,
    pub secs_since_last_scan: u64,
    pub last_error: Option<String>,
    #[serde(flatten)]
    pub counters: DriverCounters,
}

/// Where a scan source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Connecting,
    Connected,
    /// A replay reached the end of its recording.
    Finished,
}

/// Counters of one scan source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DriverCounters {
    /// `LMDscandata` telegrams parsed, checked and passed on.
    pub telegrams_ok: u64,
    /// Telegrams that failed to parse or convert, oversize and bad-checksum frames.
    pub telegrams_malformed: u64,
    /// Bytes that belonged to no telegram (noise, half telegrams, dropped frames).
    pub garbage_bytes: u64,
    /// Scans dropped because their counter repeated or went backwards.
    pub out_of_order: u64,
    /// Scans the counter says were never received.
    pub scans_missed: u64,
    /// Connections re-established after a loss.
    pub reconnects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// `sFA` answers of the device.
    pub sopas_errors: u64,
}

/// The detector (one per scan plane).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DetectorState {
    /// The empty road has been learnt; before that nothing is detected.
    pub learnt: bool,
    /// Most beams lack an echo (sensor dropout).
    pub degraded: bool,
    pub degraded_scans: u64,
    pub entries: u64,
    pub exits: u64,
    /// Entries whose speed the second scan plane measured.
    pub speeds_measured: u64,
}

/// The trigger: camera triggers sent since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TriggerState {
    pub triggers_per_camera: BTreeMap<String, u64>,
}

/// One camera's acquire component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CameraState {
    pub state: CameraLink,
    /// Frames received since this (re)start.
    pub frames: u64,
    /// Triggers waiting for their frame or their vehicle's exit.
    pub pending: u64,
    /// Stalls since the agent started.
    pub stalls: u64,
    pub stall_after_ms: u64,
    pub last_frame_at: Option<DateTime<Utc>>,
    /// What the camera's source says of itself; `None` for sources that say nothing.
    pub source: Option<CameraSourceState>,
    /// Test captures taken on operators' request since the agent started.
    pub test_captures: u64,
}

/// Where a camera stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraLink {
    Opening,
    Streaming,
    Stalled,
}

/// A camera source that runs on a thread of its own (OpenCV, GigE Vision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CameraSourceState {
    /// What it opened (device, file, pipeline, camera name).
    pub source: String,
    /// Frames the thread grabbed that the component was too busy to take.
    pub dropped_frames: u64,
}

/// The vision stage's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VisionState {
    pub frames: u64,
    pub faces: u64,
    pub released: u64,
    pub quarantined: u64,
    /// Captures the quarantine holds now.
    pub quarantine_held: u64,
    pub last_quarantine_reason: Option<String>,
    pub counted: u64,
    pub unreadable: u64,
    pub violation_candidates: u64,
    /// `<file>@<sha256 prefix>`.
    pub model: String,
    /// ONNX Runtime sessions, i.e. frames processed at once.
    pub sessions: u64,
}

/// Counters of the buffer, published on every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BufferStats {
    pub captures: u64,
    /// Stored record bytes (metadata, image and header); never above `max_bytes`.
    pub bytes: u64,
    pub max_bytes: u64,
    /// Captures appended since start.
    pub appended: u64,
    /// New captures rejected because only more valuable captures could have made room.
    pub rejected: u64,
    /// Captures deleted since start to make room for more valuable or newer ones.
    pub evicted: u64,
    /// Captures deleted since start because their retention ran out.
    pub expired: u64,
    /// Damaged records (or unreadable regions) found and deleted since start.
    pub damaged: u64,
    /// Deletion receipts waiting for the control plane's ack.
    pub receipts_pending: u64,
}

/// The uplink: its session and what it has delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UplinkState {
    pub state: UplinkLink,
    /// Why the control plane last refused a session; `None` unless `state` is `refused`.
    pub refused: Option<String>,
    /// The open session's id; empty while disconnected.
    pub session_id: String,
    /// Captures the control plane acknowledged since the agent started.
    pub acked: u64,
    /// The buffer as it was when this was published.
    pub buffer: BufferStats,
}

/// Where the uplink's session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkLink {
    Connected,
    Disconnected,
    Refused,
}

impl UplinkState {
    pub fn connected(&self) -> bool {
        self.state == UplinkLink::Connected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON form (`detail_json`) keeps the keys older readers look for.
    #[test]
    fn the_json_form_is_tagged_by_kind_and_flattens_the_lidar_counters() {
        let lidar = ComponentState::Lidar(LidarState {
            source: "tcp".into(),
            origin: "127.0.0.1:2112".into(),
            framing: "cola-a".into(),
            state: LinkState::Connected,
            degraded: false,
            secs_since_last_scan: 0,
            last_error: None,
            counters: DriverCounters { telegrams_ok: 7, ..Default::default() },
        });
        let json = serde_json::to_value(&lidar).unwrap();
        assert_eq!(json["kind"], "lidar");
        assert_eq!(json["state"], "connected");
        assert_eq!(json["telegrams_ok"], 7);
        assert_eq!(
            serde_json::to_value(ComponentState::Empty).unwrap(),
            serde_json::json!({ "kind": "empty" })
        );
    }
}

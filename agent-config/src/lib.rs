//! The edge agent's configuration: the typed, versioned TOML file, its validation and error
//! locations. One crate, used by the agent (which reads the file) and by the control plane (which
//! validates a site's config before it pushes it), so both refuse the same files with the same
//! words.
//!
//! The file is parsed once with serde (`deny_unknown_fields`), then validated semantically.
//! Every error names the field path and the line it sits on, so an operator can fix a device's
//! file from a single log line. What only the device can check (that a certificate or replay file
//! exists on its disk) goes through [`HostChecks`]: the agent checks its own files, the control
//! plane passes [`RemoteHost`] and leaves those checks to the agent's staging of the push.
//!
//! This file holds the schema; `validate.rs` the parser and validator, `vision.rs` the
//! `[vision]` section, `local_ui.rs` the `[local_ui]` one, `telemetry.rs` the `[telemetry]` one
//! (which the control plane's config file has too).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

mod local_ui;
mod telemetry;
mod validate;
mod vision;
pub use local_ui::*;
pub use telemetry::*;
pub use validate::*;
pub use vision::*;

/// The only config file format version this agent reads.
pub const CONFIG_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub version: u32,
    /// Version stamped by the control plane when it pushed this file; 0 for a local file.
    #[serde(default)]
    pub config_version: u64,
    pub agent_id: String,
    pub site_id: String,
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    #[serde(default)]
    pub control_plane: ControlPlaneConfig,
    #[serde(default)]
    pub buffer: BufferConfig,
    #[serde(default)]
    pub supervision: SupervisionConfig,
    #[serde(default)]
    pub site: SiteConfig,
    #[serde(default)]
    pub lidar: LidarConfig,
    #[serde(default)]
    pub simulator: SimulatorConfig,
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    /// Occupant counting and anonymization; absent: no vision runs.
    #[serde(default)]
    pub vision: Option<VisionConfig>,
    /// The agent's web UI.
    #[serde(default)]
    pub local_ui: LocalUiConfig,
    /// Traces of captures exported over OTLP; off by default. The exporter is built when the
    /// agent starts: a pushed change to this section applies at the next start.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneConfig {
    pub url: String,
    pub ca_path: Option<PathBuf>,
    /// This agent's client certificate (PEM) for mutual TLS; its subject CN is the agent id.
    pub client_cert_path: Option<PathBuf>,
    /// The private key (PEM) of `client_cert_path`; both or neither.
    pub client_key_path: Option<PathBuf>,
    pub heartbeat_interval_ms: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub max_in_flight: usize,
    /// Cap on uploaded image bytes per second (token bucket, one second of burst); 0 = unlimited.
    pub max_upload_bytes_per_sec: u64,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:7400".into(),
            ca_path: None,
            client_cert_path: None,
            client_key_path: None,
            heartbeat_interval_ms: 5000,
            reconnect_min_ms: 200,
            reconnect_max_ms: 10_000,
            max_in_flight: 8,
            max_upload_bytes_per_sec: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    pub path: PathBuf,
    /// Bound on the stored capture records; when reached, the lowest-value captures are evicted.
    pub max_bytes: u64,
    pub retention: RetentionConfig,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self { path: "agent-data/buffer".into(), max_bytes: 1 << 30, retention: Default::default() }
    }
}

/// Legal retention per value class: a capture not uploaded within its class's period is deleted
/// on the edge (with a deletion receipt), connected or not.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub statistics_hours: u64,
    pub compliant_hours: u64,
    pub violation_candidate_hours: u64,
    /// How often expired captures are looked for.
    pub sweep_interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            statistics_hours: 24,
            compliant_hours: 72,
            violation_candidate_hours: 720,
            sweep_interval_secs: 60,
        }
    }
}

/// Longest retention the agent accepts: ten years.
pub const MAX_RETENTION_HOURS: u64 = 10 * 366 * 24;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    pub max_restarts: u32,
    pub window_secs: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self { max_restarts: 5, window_secs: 60, backoff_min_ms: 100, backoff_max_ms: 10_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteConfig {
    pub lanes: u32,
    pub lane_width_m: f64,
}

impl Default for SiteConfig {
    fn default() -> Self {
        Self { lanes: 3, lane_width_m: 3.5 }
    }
}

/// Where scans come from. Every source goes through the SICK `LMDscandata` codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LidarSourceKind {
    /// The in-process simulated SICK scanner, served on 127.0.0.1:0 and read over TCP.
    Simulator,
    /// A SICK LMS1xx/LMS5xx at `address`.
    Sick,
    /// A recording made with `lanewatch-agent record`, replayed at `speed`.
    Replay,
}

/// SICK CoLa framing on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LidarFraming {
    /// ASCII, STX/ETX (usually TCP 2111).
    ColaA,
    /// Binary, magic + length + checksum (usually TCP 2112).
    ColaB,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LidarConfig {
    pub source: LidarSourceKind,
    /// Scan rate of the simulated scanner (a real one reports its own).
    pub scan_hz: u32,
    pub mounting_height_m: f64,
    /// Roll of the scanner about the road axis: 0 when its 90° beam points straight down;
    /// positive turns the beams towards the left road edge.
    pub mounting_angle_deg: f64,
    /// Lateral position of the scan plane's origin (the scanner), metres from the right road
    /// edge; the road's centre when absent.
    pub mount_y_m: Option<f64>,
    pub fov_deg: f64,
    pub angular_step_deg: f64,
    /// `host:port` of the scanner (`source = "sick"`).
    pub address: Option<String>,
    /// Framing spoken to the scanner (`sick`) or by the simulated scanner (`simulator`).
    pub framing: LidarFraming,
    /// Reconnect backoff bounds (exponential with jitter).
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// Without scans for this long the sense component reports `degraded`.
    pub degraded_after_secs: u64,
    /// Recording to replay (`source = "replay"`), relative to this file.
    pub path: Option<PathBuf>,
    /// Replay speed: 1.0 = real time, 0 = as fast as possible.
    pub speed: f64,
    /// A second scan plane this far upstream of the main one measures each vehicle's speed (a
    /// speed trap); cameras with `distance_from_lidar_m` then trigger after distance / speed.
    /// The simulator serves that plane itself; a real site needs `speed_plane_address`.
    pub speed_plane_offset_m: Option<f64>,
    /// `host:port` of the scanner of the speed plane (`source = "sick"`), same framing.
    pub speed_plane_address: Option<String>,
}

impl Default for LidarConfig {
    fn default() -> Self {
        Self {
            source: LidarSourceKind::Simulator,
            scan_hz: 50,
            mounting_height_m: 6.5,
            mounting_angle_deg: 0.0,
            mount_y_m: None,
            fov_deg: 90.0,
            angular_step_deg: 0.25,
            address: None,
            framing: LidarFraming::ColaB,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5000,
            degraded_after_secs: 10,
            path: None,
            speed: 1.0,
            speed_plane_offset_m: None,
            speed_plane_address: None,
        }
    }
}

impl LidarConfig {
    /// Lateral scanner position: the configured one or the road's centre.
    pub fn mount_y_m(&self, site: &SiteConfig) -> f64 {
        self.mount_y_m.unwrap_or(f64::from(site.lanes) * site.lane_width_m / 2.0)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    pub seed: u64,
    pub flow_veh_h_per_lane: u32,
    pub speed_kmh_mean: f64,
    pub speed_kmh_stddev: f64,
    pub class_mix: ClassMix,
    pub ground_truth_path: Option<PathBuf>,
    /// Face photos (`astronaut.png`, `lfw_subset.npy`) for simulated cabins; absent: no people.
    pub face_photos_path: Option<PathBuf>,
    /// In a lane with a `[[vision.policy]]`, the share of vehicles carrying fewer occupants
    /// than the policy's minimum (the rest meet it: drivers pick the HOV lane by occupancy).
    /// Other lanes keep the general occupancy mix.
    pub hov_violation_share: f64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            flow_veh_h_per_lane: 900,
            speed_kmh_mean: 100.0,
            speed_kmh_stddev: 10.0,
            class_mix: ClassMix::default(),
            ground_truth_path: None,
            face_photos_path: None,
            hov_violation_share: 0.15,
        }
    }
}

/// Share of each vehicle class in simulated traffic; the shares sum to 1.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassMix {
    pub motorcycle: f64,
    pub car: f64,
    pub van: f64,
    pub truck: f64,
    pub bus: f64,
}

impl Default for ClassMix {
    fn default() -> Self {
        Self { motorcycle: 0.02, car: 0.80, van: 0.10, truck: 0.06, bus: 0.02 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: String,
    pub lanes: Vec<u32>,
    #[serde(default = "defaults::trigger_delay_ms")]
    pub trigger_delay_ms: u64,
    #[serde(default = "defaults::fps")]
    pub fps: u32,
    #[serde(default = "defaults::ring_frames")]
    pub ring_frames: usize,
    #[serde(default)]
    pub source: CameraSourceConfig,
    /// No frame for this long: the camera is stalled, its source is torn down and reopened
    /// (through the supervisor, with backoff). Default: ten frame periods, at least 2000 ms.
    #[serde(default)]
    pub stall_after_ms: Option<u64>,
    /// Distance along the road from the LIDAR's scan plane to the point the camera aims at.
    /// With a measured speed the trigger fires after distance / speed; without one, after
    /// `trigger_delay_ms`.
    #[serde(default)]
    pub distance_from_lidar_m: Option<f64>,
}

impl CameraConfig {
    /// The stall threshold in force: `stall_after_ms`, or ten frame periods (at least 2000 ms).
    pub fn stall_after_ms(&self) -> u64 {
        self.stall_after_ms.unwrap_or_else(|| (10_000 / u64::from(self.fps.max(1))).max(2000))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CameraSourceConfig {
    /// Renders the simulated scene.
    Simulator {
        #[serde(default = "defaults::width")]
        width: u32,
        #[serde(default = "defaults::height")]
        height: u32,
    },
    /// Loops over the JPEG/PNG files of a directory (or one file), passing their bytes through.
    FileReplay { path: PathBuf },
    /// OpenCV `VideoCapture`: a V4L2 device (`/dev/video0` or an index such as `0`), a video
    /// file, an image sequence (`frames/%04d.jpg`) or a GStreamer pipeline (`... ! appsink`).
    /// Relative file paths are relative to the config file. Files and sequences are paced at the
    /// camera's `fps` and start over at their end.
    Opencv {
        uri: String,
        /// `VideoCapture` backend; `any` lets OpenCV choose.
        #[serde(default)]
        backend: OpencvBackend,
        /// Capture size and rate asked of a device (hints: a device may pick the nearest).
        width: Option<u32>,
        height: Option<u32>,
        fps: Option<f64>,
    },
    /// A GigE Vision camera through Aravis (libaravis-0.8).
    Gige {
        /// Aravis device id (`vendor-model-serial`, or the camera's IP address); the first
        /// camera found when absent.
        device_id: Option<String>,
        exposure_us: Option<f64>,
        gain_db: Option<f64>,
        /// GenICam pixel format name such as `Mono8`, `RGB8Packed`, `BayerRG8`.
        pixel_format: Option<String>,
        /// GVSP packet size in bytes; negotiated with the camera when absent.
        packet_size: Option<u32>,
    },
}

/// The `VideoCapture` API an OpenCV camera is opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpencvBackend {
    #[default]
    Any,
    V4l2,
    Ffmpeg,
    Gstreamer,
    /// Image sequences (`%04d` patterns).
    Images,
}

impl Default for CameraSourceConfig {
    fn default() -> Self {
        Self::Simulator { width: defaults::width(), height: defaults::height() }
    }
}

pub mod defaults {
    pub fn shutdown_grace_secs() -> u64 {
        10
    }
    pub fn trigger_delay_ms() -> u64 {
        150
    }
    pub fn fps() -> u32 {
        10
    }
    pub fn ring_frames() -> usize {
        32
    }
    pub fn width() -> u32 {
        640
    }
    pub fn height() -> u32 {
        360
    }
}

impl AgentConfig {
    /// Camera ids by lane, used by the trigger stage.
    pub fn cameras_by_lane(&self) -> BTreeMap<u32, Vec<String>> {
        let mut map: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for cam in &self.cameras {
            for lane in &cam.lanes {
                map.entry(*lane).or_default().push(cam.id.clone());
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const MINIMAL: &str =
        "version = 1\nagent_id = \"a\"\nsite_id = \"s\"\n\n[[cameras]]\nid = \"front\"\nlanes = [0, 1]\n";

    #[test]
    fn remote_validation_names_field_and_line() {
        let text = MINIMAL.replace("lanes = [0, 1]", "lanes = [0, 9]");
        let err = parse_and_validate(&text, &RemoteHost).unwrap_err();
        assert_eq!(err.to_string(), "cameras[0].lanes (line 7): lane 9 is outside the site's lanes 0..3");
        let err =
            parse_and_validate("version = 1\nagent_id = \"a\"\nsite_id = \"s\"\nbogus = 1\n", &RemoteHost)
                .unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
    }

    #[test]
    fn remote_validation_leaves_device_files_to_the_device() {
        // a certificate that exists only on the device is not the control plane's to check
        let text = MINIMAL.replace(
            "[[cameras]]",
            "[control_plane]\nurl = \"https://cp:7400\"\nclient_cert_path = \"/etc/lanewatch/agent.pem\"\nclient_key_path = \"/etc/lanewatch/agent.key\"\n\n[[cameras]]",
        );
        parse_and_validate(&text, &RemoteHost).expect("valid remotely");

        struct Missing;
        impl HostChecks for Missing {
            fn file(&self, path: &Path) -> Result<(), String> {
                Err(format!("file {} does not exist", path.display()))
            }
            fn replay_images(&self, _: &Path) -> Result<(), String> {
                Ok(())
            }
            fn lidar_recording(&self, _: &Path) -> Result<(), String> {
                Ok(())
            }
        }
        let err = parse_and_validate(&text, &Missing).unwrap_err();
        assert_eq!(err.field, "control_plane.client_cert_path");
        assert!(err.message.contains("/etc/lanewatch/agent.pem"), "{err}");
    }

    #[test]
    fn stamped_version_is_read_back() {
        let stamped = stamp_config_version(MINIMAL, 12);
        assert_eq!(parse_and_validate(&stamped, &RemoteHost).unwrap().config_version, 12);
    }
}

//! Agent configuration: the typed, versioned TOML file, its validation and error locations.
//!
//! The file is parsed once with serde (`deny_unknown_fields`), then validated semantically.
//! Every error names the field path and the line it sits on, so an operator can fix a device's
//! file from a single log line. Config pushes from the control plane go through the same
//! [`parse_and_validate`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
        Self { path: "agent-data/buffer.redb".into(), max_bytes: 1 << 30, retention: Default::default() }
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

impl LidarFraming {
    pub fn framing(self) -> crate::lidar::sick::Framing {
        match self {
            LidarFraming::ColaA => crate::lidar::sick::Framing::ColaA,
            LidarFraming::ColaB => crate::lidar::sick::Framing::ColaB,
        }
    }
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
}

impl Default for CameraSourceConfig {
    fn default() -> Self {
        Self::Simulator { width: defaults::width(), height: defaults::height() }
    }
}

pub(crate) mod defaults {
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

/// Why a config file was refused: the field path, its line (1-based) when known, and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    pub field: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.field.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.field, self.message),
            (false, None) => write!(f, "{}: {}", self.field, self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => write!(f, "{}", self.message),
        }
    }
}

/// Errors of loading a config file from disk.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read agent config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid agent config {path}: {source}")]
    Invalid { path: PathBuf, source: ConfigError },
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<AgentConfig, LoadError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
    parse_and_validate(&text, path.parent())
        .map_err(|source| LoadError::Invalid { path: path.to_owned(), source })
}

/// Parses and validates config text; relative file paths are checked against `base_dir`.
pub fn parse_and_validate(text: &str, base_dir: Option<&Path>) -> Result<AgentConfig, ConfigError> {
    let config: AgentConfig = toml::from_str(text).map_err(|err| de_error(text, &err))?;
    let problems = validate(&config, base_dir);
    match problems.into_iter().next() {
        None => Ok(config),
        Some((field, message)) => Err(ConfigError { line: line_of_field(text, &field), field, message }),
    }
}

fn de_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let line = err.span().map(|span| line_of_offset(text, span.start));
    let message = err.message().trim().to_owned();
    // serde names the offending key in its message; the span gives the line, and the path is
    // recovered from the table headers above the span.
    let field = err.span().map(|span| field_path_at(text, span.start)).unwrap_or_default();
    ConfigError { field, line, message }
}

/// Best-effort dotted path of the key at byte `offset`, using the nearest table header above.
fn field_path_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let header = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = if key.starts_with('[') { "" } else { key };
    match (header, key.is_empty()) {
        (Some(h), false) => format!("{h}.{key}"),
        (Some(h), true) => h,
        (None, _) => key.to_owned(),
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Line of a dotted field path such as `cameras[1].lanes` or `simulator.class_mix`, falling back
/// to the closest parent that exists in the text.
pub fn line_of_field(text: &str, field: &str) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut item = doc.as_item();
    let mut best = None;
    for segment in field.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let Some(next) = item.get(name) else { break };
        item = next;
        if let Some(span) = item.span() {
            best = Some(span.start);
        }
        if let Some(index) = index {
            let Some(next) = item.get(index) else { break };
            item = next;
            if let Some(span) = item.span() {
                best = Some(span.start);
            }
        }
    }
    best?;
    best.map(|offset| line_of_offset(text, offset))
}

/// Below this an upload cap is a typo rather than a link: one 200 KB image would take minutes.
const MIN_UPLOAD_BYTES_PER_SEC: u64 = 1024;

fn range_check<T: PartialOrd + fmt::Display>(
    out: &mut Vec<(String, String)>,
    field: &str,
    value: T,
    min: T,
    max: T,
) {
    if !(value >= min && value <= max) {
        out.push((field.into(), format!("must be between {min} and {max}, got {value}")));
    }
}

/// Semantic checks, in file order; returns `(field path, reason)` for each problem.
pub fn validate(c: &AgentConfig, base_dir: Option<&Path>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if c.version != CONFIG_FORMAT_VERSION {
        out.push((
            "version".into(),
            format!("unsupported config version {}, expected {CONFIG_FORMAT_VERSION}", c.version),
        ));
    }
    for (field, value) in [("agent_id", &c.agent_id), ("site_id", &c.site_id)] {
        if value.trim().is_empty() {
            out.push((field.into(), "must not be empty".into()));
        }
    }
    range_check(&mut out, "shutdown_grace_secs", c.shutdown_grace_secs, 0, 3600);

    let cp = &c.control_plane;
    if !(cp.url.starts_with("http://") || cp.url.starts_with("https://")) {
        out.push((
            "control_plane.url".into(),
            format!("must start with http:// or https://, got {:?}", cp.url),
        ));
    }
    range_check(&mut out, "control_plane.heartbeat_interval_ms", cp.heartbeat_interval_ms, 100, 600_000);
    range_check(&mut out, "control_plane.reconnect_min_ms", cp.reconnect_min_ms, 1, 600_000);
    range_check(
        &mut out,
        "control_plane.reconnect_max_ms",
        cp.reconnect_max_ms,
        cp.reconnect_min_ms.max(1),
        3_600_000,
    );
    range_check(&mut out, "control_plane.max_in_flight", cp.max_in_flight, 1, 1024);
    if cp.max_upload_bytes_per_sec != 0 {
        range_check(
            &mut out,
            "control_plane.max_upload_bytes_per_sec",
            cp.max_upload_bytes_per_sec,
            MIN_UPLOAD_BYTES_PER_SEC,
            u64::MAX,
        );
    }
    if let Some(ca) = &cp.ca_path
        && !resolve(base_dir, ca).is_file()
    {
        out.push(("control_plane.ca_path".into(), format!("file {} does not exist", ca.display())));
    }
    match (&cp.client_cert_path, &cp.client_key_path) {
        (Some(_), None) => out.push((
            "control_plane.client_cert_path".into(),
            "needs control_plane.client_key_path as well".into(),
        )),
        (None, Some(_)) => out.push((
            "control_plane.client_key_path".into(),
            "needs control_plane.client_cert_path as well".into(),
        )),
        (Some(cert), Some(key)) => {
            if !cp.url.starts_with("https://") {
                out.push((
                    "control_plane.client_cert_path".into(),
                    format!("is only used with an https:// url, got {:?}", cp.url),
                ));
            }
            for (field, path) in [("client_cert_path", cert), ("client_key_path", key)] {
                if !resolve(base_dir, path).is_file() {
                    out.push((
                        format!("control_plane.{field}"),
                        format!("file {} does not exist", path.display()),
                    ));
                }
            }
        }
        (None, None) => {}
    }

    range_check(&mut out, "buffer.max_bytes", c.buffer.max_bytes, 1 << 20, u64::MAX);
    let r = &c.buffer.retention;
    for (name, hours) in [
        ("statistics_hours", r.statistics_hours),
        ("compliant_hours", r.compliant_hours),
        ("violation_candidate_hours", r.violation_candidate_hours),
    ] {
        range_check(&mut out, &format!("buffer.retention.{name}"), hours, 1, MAX_RETENTION_HOURS);
    }
    range_check(&mut out, "buffer.retention.sweep_interval_secs", r.sweep_interval_secs, 1, 3600);
    let s = &c.supervision;
    range_check(&mut out, "supervision.max_restarts", s.max_restarts, 0, 1000);
    range_check(&mut out, "supervision.window_secs", s.window_secs, 1, 86_400);
    range_check(&mut out, "supervision.backoff_min_ms", s.backoff_min_ms, 1, 600_000);
    range_check(&mut out, "supervision.backoff_max_ms", s.backoff_max_ms, s.backoff_min_ms.max(1), 3_600_000);

    range_check(&mut out, "site.lanes", c.site.lanes, 1, 8);
    range_check(&mut out, "site.lane_width_m", c.site.lane_width_m, 2.0, 6.0);

    let l = &c.lidar;
    range_check(&mut out, "lidar.scan_hz", l.scan_hz, 1, 200);
    range_check(&mut out, "lidar.mounting_height_m", l.mounting_height_m, 4.5, 20.0);
    range_check(&mut out, "lidar.fov_deg", l.fov_deg, 10.0, 170.0);
    range_check(&mut out, "lidar.angular_step_deg", l.angular_step_deg, 0.05, 5.0);
    range_check(&mut out, "lidar.mounting_angle_deg", l.mounting_angle_deg, -45.0, 45.0);
    if let Some(y) = l.mount_y_m {
        let road = f64::from(c.site.lanes) * c.site.lane_width_m;
        range_check(&mut out, "lidar.mount_y_m", y, 0.0, road);
    }
    range_check(&mut out, "lidar.reconnect_min_ms", l.reconnect_min_ms, 1, 600_000);
    range_check(&mut out, "lidar.reconnect_max_ms", l.reconnect_max_ms, l.reconnect_min_ms.max(1), 3_600_000);
    range_check(&mut out, "lidar.degraded_after_secs", l.degraded_after_secs, 1, 86_400);
    validate_lidar_source(l, base_dir, &mut out);

    let sim = &c.simulator;
    range_check(&mut out, "simulator.flow_veh_h_per_lane", sim.flow_veh_h_per_lane, 1, 3000);
    range_check(&mut out, "simulator.speed_kmh_mean", sim.speed_kmh_mean, 10.0, 200.0);
    range_check(&mut out, "simulator.speed_kmh_stddev", sim.speed_kmh_stddev, 0.0, 50.0);
    let m = &sim.class_mix;
    let shares =
        [("motorcycle", m.motorcycle), ("car", m.car), ("van", m.van), ("truck", m.truck), ("bus", m.bus)];
    for (name, share) in shares {
        if !(0.0..=1.0).contains(&share) {
            out.push((
                format!("simulator.class_mix.{name}"),
                format!("must be between 0 and 1, got {share}"),
            ));
        }
    }
    let sum: f64 = shares.iter().map(|(_, s)| s).sum();
    if (sum - 1.0).abs() > 0.01 {
        out.push(("simulator.class_mix".into(), format!("shares must sum to 1, got {sum:.3}")));
    }

    if c.cameras.is_empty() {
        out.push(("cameras".into(), "at least one camera is required".into()));
    }
    let mut ids = HashSet::new();
    for (i, cam) in c.cameras.iter().enumerate() {
        let at = |f: &str| format!("cameras[{i}].{f}");
        if cam.id.trim().is_empty()
            || !cam.id.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            out.push((at("id"), format!("must be non-empty letters, digits, '-' or '_', got {:?}", cam.id)));
        }
        if !ids.insert(cam.id.as_str()) {
            out.push((at("id"), format!("duplicate camera id {:?}", cam.id)));
        }
        if cam.lanes.is_empty() {
            out.push((at("lanes"), "must list at least one lane".into()));
        }
        if let Some(bad) = cam.lanes.iter().find(|&&lane| lane >= c.site.lanes) {
            out.push((at("lanes"), format!("lane {bad} is outside the site's lanes 0..{}", c.site.lanes)));
        }
        range_check(&mut out, &at("trigger_delay_ms"), cam.trigger_delay_ms, 0, 10_000);
        range_check(&mut out, &at("fps"), cam.fps, 1, 120);
        range_check(&mut out, &at("ring_frames"), cam.ring_frames, 2, 1024);
        match &cam.source {
            CameraSourceConfig::Simulator { width, height } => {
                range_check(&mut out, &at("source.width"), *width, 16, 4096);
                range_check(&mut out, &at("source.height"), *height, 16, 4096);
            }
            CameraSourceConfig::FileReplay { path } => {
                let full = resolve(base_dir, path);
                match replay_files(&full) {
                    Ok(files) if files.is_empty() => out.push((
                        at("source.path"),
                        format!("{} holds no .jpg, .jpeg or .png file", path.display()),
                    )),
                    Ok(_) => {}
                    Err(err) => {
                        out.push((at("source.path"), format!("cannot read {}: {err}", path.display())))
                    }
                }
            }
        }
    }
    out
}

/// Checks the fields that belong to the chosen `[lidar] source` (and refuses the others).
fn validate_lidar_source(l: &LidarConfig, base_dir: Option<&Path>, out: &mut Vec<(String, String)>) {
    let only = |out: &mut Vec<(String, String)>, field: &str, set: bool, source: &str| {
        if set {
            out.push((format!("lidar.{field}"), format!("is only used with source = \"{source}\"")));
        }
    };
    match l.source {
        LidarSourceKind::Sick => match &l.address {
            None => out.push(("lidar.address".into(), "is required with source = \"sick\"".into())),
            Some(address) => {
                if let Err(reason) = check_host_port(address) {
                    out.push(("lidar.address".into(), reason));
                }
            }
        },
        _ => only(out, "address", l.address.is_some(), "sick"),
    }
    match l.source {
        LidarSourceKind::Replay => {
            range_check(out, "lidar.speed", l.speed, 0.0, 1000.0);
            match &l.path {
                None => out.push(("lidar.path".into(), "is required with source = \"replay\"".into())),
                Some(path) => {
                    let full = resolve(base_dir, path);
                    if let Err(err) = crate::lidar::recording::read_header_of(&full) {
                        out.push(("lidar.path".into(), format!("{err:#}")));
                    }
                }
            }
        }
        _ => only(out, "path", l.path.is_some(), "replay"),
    }
}

/// `host:port` with a non-empty host and a port in 1..=65535.
fn check_host_port(address: &str) -> Result<(), String> {
    let bad = || format!("must be host:port, got {address:?}");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("port must be 1..=65535, got {port:?}")),
    }
}

/// Resolves a path from the config against the config file's directory.
pub fn resolve(base_dir: Option<&Path>, path: &Path) -> PathBuf {
    match base_dir {
        Some(dir) if path.is_relative() && !dir.as_os_str().is_empty() => dir.join(path),
        _ => path.to_owned(),
    }
}

/// The image files a file-replay camera loops over: one file, or a directory's images by name.
pub fn replay_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
    };
    if path.is_file() {
        return Ok(if is_image(path) { vec![path.to_owned()] } else { vec![] });
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Stamps `config_version` into pushed config text without disturbing the rest of the file.
pub fn stamp_config_version(text: &str, version: u64) -> String {
    if let Ok(doc) = toml_edit::Document::parse(text)
        && let Some(span) = doc.as_table().get("config_version").and_then(|item| item.span())
    {
        let mut out = String::with_capacity(text.len() + 8);
        out.push_str(&text[..span.start]);
        out.push_str(&version.to_string());
        out.push_str(&text[span.end..]);
        return out;
    }
    // A key before any table header belongs to the root table.
    format!("config_version = {version}\n{text}")
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
    use super::*;

    const EXAMPLE: &str = include_str!("../agent.example.toml");

    #[test]
    fn example_parses_and_validates() {
        let config = parse_and_validate(EXAMPLE, None).expect("example config is valid");
        assert_eq!(config.agent_id, "agent-a");
        assert_eq!(config.cameras.len(), 1);
        assert_eq!(config.simulator.flow_veh_h_per_lane, 900);
        assert_eq!(config.buffer, BufferConfig::default(), "example shows the buffer defaults");
    }

    const MINIMAL: &str = "version = 1\nagent_id = \"a\"\nsite_id = \"s\"\n\n[simulator]\nflow_veh_h_per_lane = 900\n\n[[cameras]]\nid = \"front\"\nlanes = [0, 1]\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse_and_validate(MINIMAL, None).unwrap();
        assert_eq!(c.site.lanes, 3);
        assert_eq!(c.cameras[0].fps, 10);
        assert_eq!(c.cameras[0].source, CameraSourceConfig::Simulator { width: 640, height: 360 });
    }

    #[test]
    fn bad_inputs_name_field_and_line() {
        // (replace this, with this, expected rendered error)
        let cases: &[(&str, &str, &str)] = &[
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 0",
                "simulator.flow_veh_h_per_lane (line 6): must be between 1 and 3000, got 0",
            ),
            (
                "lanes = [0, 1]",
                "lanes = [0, 5]",
                "cameras[0].lanes (line 10): lane 5 is outside the site's lanes 0..3",
            ),
            ("version = 1", "version = 2", "version (line 1): unsupported config version 2, expected 1"),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\nbogus = 1",
                "simulator.bogus (line 7): unknown field `bogus`, expected one of `seed`, `flow_veh_h_per_lane`, `speed_kmh_mean`, `speed_kmh_stddev`, `class_mix`, `ground_truth_path`",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = \"fast\"",
                "simulator.flow_veh_h_per_lane (line 6): invalid type: string \"fast\", expected u32",
            ),
            (
                "lanes = [0, 1]",
                "lanes = [0, 1]\nfps = 0",
                "cameras[0].fps (line 11): must be between 1 and 120, got 0",
            ),
            (
                "id = \"front\"\nlanes = [0, 1]",
                "id = \"front\"\nlanes = [0]\n\n[[cameras]]\nid = \"front\"\nlanes = [1]",
                "cameras[1].id (line 13): duplicate camera id \"front\"",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\nclass_mix = { motorcycle = 0.5, car = 0.8, van = 0.1, truck = 0.06, bus = 0.02 }",
                "simulator.class_mix (line 7): shares must sum to 1, got 1.480",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\n[lidar]\nscan_hz = 500",
                "lidar.scan_hz (line 8): must be between 1 and 200, got 500",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\n[control_plane]\nmax_upload_bytes_per_sec = 10",
                "control_plane.max_upload_bytes_per_sec (line 8): must be between 1024 and 18446744073709551615, got 10",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\n[buffer.retention]\ncompliant_hours = 0",
                "buffer.retention.compliant_hours (line 8): must be between 1 and 87840, got 0",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\n[buffer]\nmax_bytes = 1000\n[buffer.retention]\nstatistics_hours = 2",
                "buffer.max_bytes (line 8): must be between 1048576 and 18446744073709551615, got 1000",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\n[buffer.retention]\nstatistics_hours = 2\nkeep_forever = true",
                "buffer.retention.keep_forever (line 9): unknown field `keep_forever`, expected one of `statistics_hours`, `compliant_hours`, `violation_candidate_hours`, `sweep_interval_secs`",
            ),
            (
                "lanes = [0, 1]",
                "lanes = [0, 1]\n[cameras.source]\nkind = \"file_replay\"\npath = \"/nonexistent/lanewatch\"",
                "cameras[0].source.path (line 13): cannot read /nonexistent/lanewatch: No such file or directory (os error 2)",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(MINIMAL.contains(from), "{from}");
            let text = MINIMAL.replacen(from, to, 1);
            let err = parse_and_validate(&text, None).expect_err(to);
            assert_eq!(&err.to_string(), expected, "for input:\n{text}");
        }
    }

    #[test]
    fn client_certificate_needs_its_key_and_https() {
        let err = |cp: &str| {
            let text = MINIMAL.replacen(
                "flow_veh_h_per_lane = 900",
                &format!("flow_veh_h_per_lane = 900\n[control_plane]\n{cp}"),
                1,
            );
            parse_and_validate(&text, None).unwrap_err().to_string()
        };
        let https = "url = \"https://cp.example:7400\"\n";
        assert_eq!(
            err(&format!("{https}client_cert_path = \"a.pem\"")),
            "control_plane.client_cert_path (line 9): needs control_plane.client_key_path as well"
        );
        assert_eq!(
            err(&format!("{https}client_key_path = \"a.key\"")),
            "control_plane.client_key_path (line 9): needs control_plane.client_cert_path as well"
        );
        assert_eq!(
            err("client_cert_path = \"a.pem\"\nclient_key_path = \"a.key\""),
            "control_plane.client_cert_path (line 8): is only used with an https:// url, got \"http://127.0.0.1:7400\""
        );
        assert_eq!(
            err(&format!(
                "{https}client_cert_path = \"/nonexistent/a.pem\"\nclient_key_path = \"/nonexistent/a.key\""
            )),
            "control_plane.client_cert_path (line 9): file /nonexistent/a.pem does not exist"
        );
    }

    #[test]
    fn missing_agent_id_is_reported() {
        let err = parse_and_validate("version = 1\nsite_id = \"s\"\n", None).unwrap_err();
        assert!(err.message.contains("missing field `agent_id`"), "{err}");
    }

    #[test]
    fn file_replay_needs_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{MINIMAL}[cameras.source]\nkind = \"file_replay\"\npath = {:?}\n", dir.path());
        let err = parse_and_validate(&text, None).unwrap_err();
        assert_eq!(err.field, "cameras[0].source.path");
        std::fs::write(dir.path().join("a.jpg"), b"\xff\xd8").unwrap();
        parse_and_validate(&text, None).unwrap();
    }

    #[test]
    fn lidar_sources_check_their_own_fields() {
        let with = |lidar: &str| parse_and_validate(&format!("{MINIMAL}\n[lidar]\n{lidar}\n"), None);
        let err = |lidar: &str| with(lidar).unwrap_err().to_string();
        assert_eq!(err("source = \"sick\""), "lidar.address (line 12): is required with source = \"sick\"");
        assert_eq!(
            err("source = \"sick\"\naddress = \"scanner\""),
            "lidar.address (line 14): must be host:port, got \"scanner\""
        );
        assert_eq!(
            err("source = \"sick\"\naddress = \"scanner:0\""),
            "lidar.address (line 14): port must be 1..=65535, got \"0\""
        );
        let sick = with("source = \"sick\"\naddress = \"10.0.0.5:2111\"\nframing = \"cola_a\"").unwrap();
        assert_eq!(sick.lidar.framing, LidarFraming::ColaA);
        assert_eq!(sick.lidar.address.as_deref(), Some("10.0.0.5:2111"));
        assert_eq!(
            err("address = \"10.0.0.5:2111\""),
            "lidar.address (line 13): is only used with source = \"sick\""
        );
        assert_eq!(err("source = \"replay\""), "lidar.path (line 12): is required with source = \"replay\"");
        let missing = err("source = \"replay\"\npath = \"/nonexistent/scans.lwrec\"");
        assert!(
            missing.starts_with("lidar.path (line 14): recording /nonexistent/scans.lwrec: "),
            "{missing}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scans.lwrec");
        std::fs::write(&path, b"not a recording").unwrap();
        let bad = err(&format!("source = \"replay\"\npath = {path:?}"));
        assert!(bad.ends_with("not a lanewatch scan recording (bad magic at offset 0)"), "{bad}");
        std::fs::write(&path, crate::lidar::recording::encode_header(crate::lidar::sick::Framing::ColaB))
            .unwrap();
        let replay = with(&format!("source = \"replay\"\npath = {path:?}\nspeed = 0")).unwrap();
        assert_eq!(replay.lidar.speed, 0.0);
        assert_eq!(
            err(&format!("source = \"replay\"\npath = {path:?}\nspeed = -1")),
            "lidar.speed (line 15): must be between 0 and 1000, got -1"
        );
        assert_eq!(
            err("framing = \"cola_c\""),
            "lidar.framing (line 13): unknown variant `cola_c`, expected `cola_a` or `cola_b`"
        );
        assert_eq!(err("mount_y_m = 20.0"), "lidar.mount_y_m (line 13): must be between 0 and 10.5, got 20");
    }

    #[test]
    fn stamps_config_version() {
        let stamped = stamp_config_version(MINIMAL, 7);
        assert_eq!(parse_and_validate(&stamped, None).unwrap().config_version, 7);
        let restamped = stamp_config_version(&stamped, 9);
        assert_eq!(parse_and_validate(&restamped, None).unwrap().config_version, 9);
    }
}

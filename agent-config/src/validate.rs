//! Reading and checking a config file: the one parser (`parse_and_validate`), the semantic
//! validator every field goes through, the error that names a field and its line, the
//! [`HostChecks`] seam for what only the device can check, and `stamp_config_version`.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use crate::*;

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

/// What only the machine that runs the agent can check: files named by the config.
///
/// Each method returns the reason a path is unusable, in words that follow the field name.
pub trait HostChecks {
    /// A regular file (a certificate, a key) exists at `path`.
    fn file(&self, path: &Path) -> Result<(), String>;
    /// `path` is an image, or a directory holding images, that a file-replay camera can loop over.
    fn replay_images(&self, path: &Path) -> Result<(), String>;
    /// `path` is a scan recording the LIDAR replay source can read.
    fn lidar_recording(&self, path: &Path) -> Result<(), String>;
}

/// The control plane's view of a device: it cannot see the device's disk, so the file checks
/// pass here and are made by the agent when it stages a pushed config (and rejects it, naming
/// the field, if a file is missing there).
#[derive(Debug, Clone, Copy, Default)]
pub struct RemoteHost;

impl HostChecks for RemoteHost {
    fn file(&self, _: &Path) -> Result<(), String> {
        Ok(())
    }
    fn replay_images(&self, _: &Path) -> Result<(), String> {
        Ok(())
    }
    fn lidar_recording(&self, _: &Path) -> Result<(), String> {
        Ok(())
    }
}

/// Parses and validates config text; files named by it are checked through `host`.
pub fn parse_and_validate(text: &str, host: &dyn HostChecks) -> Result<AgentConfig, ConfigError> {
    let config: AgentConfig = toml::from_str(text).map_err(|err| de_error(text, &err))?;
    let problems = validate(&config, host);
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

pub(crate) fn range_check<T: PartialOrd + fmt::Display>(
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
pub fn validate(c: &AgentConfig, host: &dyn HostChecks) -> Vec<(String, String)> {
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
        && let Err(reason) = host.file(ca)
    {
        out.push(("control_plane.ca_path".into(), reason));
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
                if let Err(reason) = host.file(path) {
                    out.push((format!("control_plane.{field}"), reason));
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

    crate::local_ui::validate_local_ui(&c.local_ui, host, &mut out);
    out.extend(c.telemetry.problems("telemetry"));

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
    validate_lidar_source(l, host, &mut out);
    validate_speed_plane(l, &mut out);

    let sim = &c.simulator;
    range_check(&mut out, "simulator.flow_veh_h_per_lane", sim.flow_veh_h_per_lane, 1, 3000);
    range_check(&mut out, "simulator.speed_kmh_mean", sim.speed_kmh_mean, 10.0, 200.0);
    range_check(&mut out, "simulator.speed_kmh_stddev", sim.speed_kmh_stddev, 0.0, 50.0);
    range_check(&mut out, "simulator.hov_violation_share", sim.hov_violation_share, 0.0, 1.0);
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
        if let Some(stall) = cam.stall_after_ms {
            let period_ms = 1000 / u64::from(cam.fps.max(1));
            range_check(&mut out, &at("stall_after_ms"), stall, (2 * period_ms).max(100), 600_000);
        }
        if let Some(d) = cam.distance_from_lidar_m {
            range_check(&mut out, &at("distance_from_lidar_m"), d, 0.0, 200.0);
        }
        match &cam.source {
            CameraSourceConfig::Simulator { width, height } => {
                range_check(&mut out, &at("source.width"), *width, 16, 4096);
                range_check(&mut out, &at("source.height"), *height, 16, 4096);
            }
            CameraSourceConfig::FileReplay { path } => {
                if let Err(reason) = host.replay_images(path) {
                    out.push((at("source.path"), reason));
                }
            }
            // A device or file that is missing now may appear later: the camera component
            // reports and retries it instead of the config being refused.
            CameraSourceConfig::Opencv { uri, width, height, fps, .. } => {
                if uri.trim().is_empty() {
                    out.push((at("source.uri"), "must not be empty".into()));
                }
                if let Some(w) = width {
                    range_check(&mut out, &at("source.width"), *w, 16, 8192);
                }
                if let Some(h) = height {
                    range_check(&mut out, &at("source.height"), *h, 16, 8192);
                }
                if let Some(f) = fps {
                    range_check(&mut out, &at("source.fps"), *f, 0.1, 1000.0);
                }
            }
            CameraSourceConfig::Gige { device_id, exposure_us, gain_db, packet_size, .. } => {
                if device_id.as_deref().is_some_and(|id| id.trim().is_empty()) {
                    out.push((at("source.device_id"), "must not be empty when set".into()));
                }
                if let Some(e) = exposure_us {
                    range_check(&mut out, &at("source.exposure_us"), *e, 1.0, 10_000_000.0);
                }
                if let Some(g) = gain_db {
                    range_check(&mut out, &at("source.gain_db"), *g, 0.0, 100.0);
                }
                if let Some(p) = packet_size {
                    range_check(&mut out, &at("source.packet_size"), *p, 576, 16_384);
                }
            }
        }
    }
    validate_vision(c, host, &mut out);
    out
}

/// Checks the fields that belong to the chosen `[lidar] source` (and refuses the others).
fn validate_lidar_source(l: &LidarConfig, host: &dyn HostChecks, out: &mut Vec<(String, String)>) {
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
                    if let Err(reason) = host.lidar_recording(path) {
                        out.push(("lidar.path".into(), reason));
                    }
                }
            }
        }
        _ => only(out, "path", l.path.is_some(), "replay"),
    }
}

/// The speed plane: an offset, and with a real scanner its address.
fn validate_speed_plane(l: &LidarConfig, out: &mut Vec<(String, String)>) {
    if let Some(offset) = l.speed_plane_offset_m {
        range_check(out, "lidar.speed_plane_offset_m", offset, 0.5, 50.0);
    }
    let field = "lidar.speed_plane_address".to_owned();
    match (l.source, l.speed_plane_offset_m, &l.speed_plane_address) {
        (LidarSourceKind::Replay, Some(_), _) => out.push((
            "lidar.speed_plane_offset_m".into(),
            "is not available with source = \"replay\" (a recording holds one plane)".into(),
        )),
        (LidarSourceKind::Sick, Some(_), None) => {
            out.push((field, "is required with source = \"sick\" and speed_plane_offset_m".into()))
        }
        (LidarSourceKind::Sick, None, Some(_)) => {
            out.push((field, "needs lidar.speed_plane_offset_m as well".into()))
        }
        (LidarSourceKind::Sick, Some(_), Some(address)) => {
            if let Err(reason) = check_host_port(address) {
                out.push((field, reason));
            }
        }
        (_, _, Some(_)) => out.push((field, "is only used with source = \"sick\"".into())),
        _ => {}
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

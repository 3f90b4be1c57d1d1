//! `RunDiagnostics`: a structured check of the site, run on the agent when an operator asks —
//! the buffer's disk (free space, and a probe written and synced), the LIDAR link (the scan
//! source running and delivering), every camera (streaming, recent frames, stalls, drops), the
//! clock against the control plane's, and the face model. Each check says what it saw, in
//! words and as figures; none changes anything but the probe file it removes.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::domain::ClockOffset;
use crate::state::{CameraLink, ComponentState};
use crate::supervisor::{ComponentSnapshot, ComponentStatus};

/// The largest clock offset that passes.
pub const MAX_CLOCK_OFFSET_MS: f64 = 500.0;
/// Below this free space on the buffer's volume the disk check fails.
pub const MIN_FREE_BYTES: u64 = 256 << 20;
const PROBE_BYTES: usize = 1 << 20;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// `disk`, `lidar`, `camera <id>`, `clock`, `model`.
    pub name: String,
    pub ok: bool,
    pub message: String,
}

impl Check {
    fn new(name: impl Into<String>, ok: bool, message: impl Into<String>) -> Self {
        Self { name: name.into(), ok, message: message.into() }
    }
}

/// Runs every check (blocking: the disk probe writes and syncs a file).
pub fn run(snapshots: &[ComponentSnapshot], buffer_dir: &Path, clock: Option<ClockOffset>) -> Vec<Check> {
    let mut checks = vec![disk(buffer_dir), lidar(snapshots)];
    let mut cameras: Vec<_> = snapshots.iter().filter(|s| s.name.starts_with("acquire-")).collect();
    cameras.sort_by(|a, b| a.name.cmp(&b.name));
    checks.extend(cameras.into_iter().map(camera));
    checks.push(clock_check(clock));
    checks.push(model(snapshots));
    checks
}

fn disk(dir: &Path) -> Check {
    let (free, total) = match rustix::fs::statvfs(dir) {
        Ok(s) => (s.f_bavail * s.f_frsize, s.f_blocks * s.f_frsize),
        Err(e) => {
            return Check::new(
                "disk",
                false,
                format!("cannot read the buffer's volume {}: {e}", dir.display()),
            );
        }
    };
    let probe = dir.join(".lanewatch-diagnostics-probe");
    let start = Instant::now();
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&vec![0x5a; PROBE_BYTES])?;
        f.sync_all()
    });
    let took_ms = start.elapsed().as_secs_f64() * 1000.0;
    let _ = std::fs::remove_file(&probe);
    let gib = |b: u64| b as f64 / f64::from(1 << 30);
    match written {
        Err(e) => {
            Check::new("disk", false, format!("cannot write to the buffer directory {}: {e}", dir.display()))
        }
        Ok(()) if free < MIN_FREE_BYTES => Check::new(
            "disk",
            false,
            format!(
                "{:.2} GiB free of {:.1} GiB: below the {} MiB minimum",
                gib(free),
                gib(total),
                MIN_FREE_BYTES >> 20
            ),
        ),
        Ok(()) => Check::new(
            "disk",
            true,
            format!(
                "{:.1} GiB free of {:.1} GiB; 1 MiB written and synced in {took_ms:.1} ms",
                gib(free),
                gib(total)
            ),
        ),
    }
}

fn not_running(s: &ComponentSnapshot) -> Option<String> {
    (s.status != ComponentStatus::Running).then(|| {
        let why = s.last_failure.as_deref().map(|f| format!(" (last failure: {f})")).unwrap_or_default();
        let status = serde_json::to_value(s.status).ok().and_then(|v| v.as_str().map(str::to_owned));
        format!("{} is {}{why}", s.name, status.unwrap_or_default())
    })
}

fn lidar(snapshots: &[ComponentSnapshot]) -> Check {
    let Some(sense) = snapshots.iter().find(|s| s.name == "sense") else {
        return Check::new("lidar", false, "this agent runs no scan source");
    };
    if let Some(problem) = not_running(sense) {
        return Check::new("lidar", false, problem);
    }
    let rate = sense.rates.m1.processed_per_sec;
    let (source, degraded) = match &sense.state {
        ComponentState::Lidar(l) => (format!("{} {}", l.source, l.origin), l.degraded),
        _ => ("the scan source".to_owned(), false),
    };
    if rate <= 0.0 {
        return Check::new("lidar", false, format!("{source}: no scan in the last minute"));
    }
    if degraded {
        return Check::new(
            "lidar",
            false,
            format!("{source}: degraded, {rate:.1} scans/s over the last minute"),
        );
    }
    Check::new("lidar", true, format!("{source}: {rate:.1} scans/s over the last minute"))
}

fn camera(s: &ComponentSnapshot) -> Check {
    let name = format!("camera {}", s.name.trim_start_matches("acquire-"));
    if let Some(problem) = not_running(s) {
        return Check::new(name, false, problem);
    }
    let ComponentState::Camera(c) = &s.state else {
        return Check::new(name, false, "it has not reported its state yet");
    };
    let dropped = c.source.as_ref().map_or(0, |s| s.dropped_frames);
    let figures = format!(
        "{} frames, {} stalls, {dropped} dropped, {:.2} captures/s over the last minute",
        c.frames, c.stalls, s.rates.m1.processed_per_sec
    );
    match c.state {
        CameraLink::Streaming => Check::new(name, true, format!("streaming: {figures}")),
        CameraLink::Opening => Check::new(name, false, format!("opening: {figures}")),
        CameraLink::Stalled => Check::new(name, false, format!("stalled: {figures}")),
    }
}

fn clock_check(clock: Option<ClockOffset>) -> Check {
    match clock {
        None => Check::new("clock", false, "not measured yet: no heartbeat has been answered"),
        Some(c) if c.offset_ms.abs() > MAX_CLOCK_OFFSET_MS => Check::new(
            "clock",
            false,
            format!(
                "{:+.1} ms off the control plane's (±{:.1}): over {MAX_CLOCK_OFFSET_MS} ms",
                c.offset_ms,
                c.round_trip_ms / 2.0
            ),
        ),
        Some(c) => Check::new(
            "clock",
            true,
            format!("{:+.1} ms off the control plane's (±{:.1})", c.offset_ms, c.round_trip_ms / 2.0),
        ),
    }
}

fn model(snapshots: &[ComponentSnapshot]) -> Check {
    let Some(vision) = snapshots.iter().find(|s| s.name == "vision") else {
        return Check::new("model", true, "vision is off: no model to load");
    };
    if let Some(problem) = not_running(vision) {
        return Check::new("model", false, problem);
    }
    let model = match &vision.state {
        ComponentState::Vision(v) => Some(v.model.as_str()).filter(|m| !m.is_empty()),
        _ => None,
    };
    match model {
        Some(model) => Check::new("model", true, format!("{model} loaded")),
        None => Check::new("model", false, "vision runs without a model version"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::Registry;

    fn snapshots() -> Vec<ComponentSnapshot> {
        let registry = Registry::default();
        registry.update("sense", |s| {
            s.status = ComponentStatus::Running;
            s.state = ComponentState::Lidar(crate::state::LidarState {
                source: "sick".into(),
                origin: "10.0.0.5:2112".into(),
                framing: "cola-a".into(),
                state: crate::state::LinkState::Connected,
                degraded: false,
                secs_since_last_scan: 0,
                last_error: None,
                counters: Default::default(),
            });
            s.rates.m1.processed_per_sec = 25.0;
        });
        registry.update("acquire-front", |s| {
            s.status = ComponentStatus::Running;
            s.state = ComponentState::Camera(crate::state::CameraState {
                state: CameraLink::Streaming,
                frames: 900,
                pending: 0,
                stalls: 0,
                stall_after_ms: 2000,
                last_frame_at: None,
                source: Some(crate::state::CameraSourceState {
                    source: "/dev/video0".into(),
                    dropped_frames: 2,
                }),
                test_captures: 0,
            });
        });
        registry.update("acquire-rear", |s| {
            s.status = ComponentStatus::BackingOff;
            s.last_failure = Some("camera rear stalled: no frame for 2000 ms".into());
        });
        registry.update("vision", |s| {
            s.status = ComponentStatus::Running;
            s.state = ComponentState::Vision(crate::state::VisionState {
                model: "centerface-int8".into(),
                ..Default::default()
            });
        });
        // (no load is sampled for them, so the rates set here stay as they are)
        registry.snapshots()
    }

    #[test]
    fn every_check_says_what_it_saw() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ClockOffset { offset_ms: 1.5, round_trip_ms: 0.8, measured_at: chrono::Utc::now() };
        let checks = run(&snapshots(), dir.path(), Some(clock));
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["disk", "lidar", "camera front", "camera rear", "clock", "model"]);
        let by = |n: &str| checks.iter().find(|c| c.name == n).unwrap();
        assert!(by("disk").message.contains("1 MiB written and synced"), "{:?}", by("disk"));
        assert!(!dir.path().join(".lanewatch-diagnostics-probe").exists(), "the probe is removed");
        assert_eq!(
            (by("lidar").ok, by("lidar").message.as_str()),
            (true, "sick 10.0.0.5:2112: 25.0 scans/s over the last minute")
        );
        assert!(
            by("camera front").ok && by("camera front").message.contains("900 frames, 0 stalls, 2 dropped")
        );
        assert!(!by("camera rear").ok);
        assert!(
            by("camera rear")
                .message
                .contains("acquire-rear is backing_off (last failure: camera rear stalled"),
            "{:?}",
            by("camera rear")
        );
        assert_eq!(by("clock").message, "+1.5 ms off the control plane's (±0.4)");
        assert_eq!((by("model").ok, by("model").message.as_str()), (true, "centerface-int8 loaded"));
    }

    #[test]
    fn no_clock_a_far_clock_and_an_unwritable_disk_fail() {
        assert!(!clock_check(None).ok);
        let far = ClockOffset { offset_ms: -900.0, round_trip_ms: 2.0, measured_at: chrono::Utc::now() };
        assert!(clock_check(Some(far)).message.contains("over 500 ms"));
        let disk = disk(Path::new("/proc/self"));
        assert!(!disk.ok, "{disk:?}");
        assert!(disk.message.starts_with("cannot write to the buffer directory /proc/self"), "{disk:?}");
        assert!(model(&[]).ok, "no vision, nothing to load");
    }
}

//! `[vision]`: the face model and its spec, anonymization, the seat-section polygons of each
//! camera (calibration) and the per-lane occupancy policy. Absent: the agent runs no vision.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;

use crate::{AgentConfig, CameraSourceConfig, HostChecks, range_check};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    /// `libonnxruntime.so`; absent: the `ORT_DYLIB_PATH` the agent was started with.
    #[serde(default)]
    pub runtime_path: Option<PathBuf>,
    /// Frames processed at once, each by its own ONNX Runtime session; default: the cores the
    /// agent may use. Several frames side by side use the cores better than one frame split
    /// across them (decoding, encoding and the small late layers do not parallelize).
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    /// Threads ONNX Runtime uses inside one inference, per worker; default 1 (the workers
    /// already use the cores). Raise it and lower `workers` where latency matters more than
    /// throughput.
    #[serde(default = "defaults::intra_threads")]
    pub intra_threads: usize,
    /// Register the CUDA execution provider (falls back to the CPU when it is unavailable).
    #[serde(default)]
    pub cuda: bool,
    pub face_model: ModelSpec,
    #[serde(default)]
    pub anonymize: AnonymizeConfig,
    /// A face counts as an occupant from this detector score (0.2, the anonymization threshold:
    /// on the simulator's tuning photos real but occluded, blurred or dim faces score 0.2-0.5
    /// and nothing else scores above 0.2).
    #[serde(default = "defaults::count_threshold")]
    pub count_threshold: f32,
    /// Below this luma standard deviation (0-255) inside a camera's seat sections, its frame is
    /// unreadable (tinted glass, glare, night) unless a face was counted in it. Calibrate per
    /// site: an empty cabin behind clear glass must stay above it.
    #[serde(default = "defaults::min_contrast")]
    pub min_contrast: f32,
    /// A vehicle whose count confidence (its weakest section's) is below this is unreadable
    /// rather than counted: a face seen at a score between `anonymize.threshold` and
    /// `count_threshold` lowers its section's confidence. 0 turns the rule off.
    #[serde(default = "defaults::min_confidence")]
    pub min_confidence: f32,
    /// Captures that failed the anonymization check stay here (never uploaded).
    #[serde(default = "defaults::quarantine_path")]
    pub quarantine_path: PathBuf,
    /// Oldest quarantined captures are deleted beyond this many.
    #[serde(default = "defaults::quarantine_max_files")]
    pub quarantine_max_files: usize,
    /// How long a vehicle's captures wait for the other cameras of its lane before fusion.
    #[serde(default = "defaults::fuse_wait_ms")]
    pub fuse_wait_ms: u64,
    /// Seat sections per camera; a camera not listed is anonymized but counts nobody.
    #[serde(default)]
    pub cameras: Vec<VisionCameraConfig>,
    /// HOV/HOT rules; a lane without a rule in force records statistics only.
    #[serde(default)]
    pub policy: Vec<LanePolicyConfig>,
}

/// How to feed a model and read its output, so a site can swap in its own detector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub path: PathBuf,
    #[serde(default)]
    pub decoder: Decoder,
    #[serde(default)]
    pub layout: TensorLayout,
    #[serde(default)]
    pub channels: ChannelOrder,
    /// Per channel (in `channels` order): `(pixel - mean) / std`, pixels 0-255.
    #[serde(default = "defaults::mean")]
    pub mean: [f32; 3],
    #[serde(default = "defaults::std")]
    pub std: [f32; 3],
    /// Frames are scaled so that their longer side is this many pixels.
    #[serde(default = "defaults::input_max_side")]
    pub input_max_side: u32,
    /// Input height and width are rounded to a multiple of this.
    #[serde(default = "defaults::stride")]
    pub stride: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decoder {
    /// CenterFace: heatmap, scale, offset and landmark maps at stride 4.
    #[default]
    Centerface,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorLayout {
    #[default]
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    #[default]
    Bgr,
    Rgb,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnonymizeConfig {
    pub method: AnonymizeMethod,
    /// Every detection from this score is masked (deliberately low).
    pub threshold: f32,
    /// The mask is the detected box scaled by this about its centre.
    pub mask_scale: f32,
    /// The anonymized frame is searched again; a detection from this score quarantines it.
    pub recheck_threshold: f32,
}

impl Default for AnonymizeConfig {
    fn default() -> Self {
        Self { method: AnonymizeMethod::Blur, threshold: 0.2, mask_scale: 1.3, recheck_threshold: 0.4 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnonymizeMethod {
    Blur,
    Pixelate,
    Fill,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionCameraConfig {
    /// A camera id of `[[cameras]]`.
    pub id: String,
    pub sections: Vec<SeatSectionConfig>,
}

/// A seat section as the camera sees it: a polygon in frame pixels (x right, y down).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeatSectionConfig {
    /// `driver`, `front_passenger` or `rear_row_<n>` (n from 1).
    pub name: String,
    pub polygon: Vec<[f32; 2]>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanePolicyConfig {
    pub lanes: Vec<u32>,
    /// 2 for HOV2+, 3 for HOV3+.
    pub min_occupants: u32,
    /// `"HH:MM-HH:MM"` in UTC; empty: always in force.
    #[serde(default)]
    pub windows_utc: Vec<String>,
}

mod defaults {
    use std::path::PathBuf;

    pub fn workers() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from).min(16)
    }
    pub fn intra_threads() -> usize {
        1
    }
    pub fn count_threshold() -> f32 {
        0.2
    }
    pub fn min_contrast() -> f32 {
        12.0
    }
    pub fn min_confidence() -> f32 {
        0.0
    }
    pub fn quarantine_path() -> PathBuf {
        PathBuf::from("quarantine")
    }
    pub fn quarantine_max_files() -> usize {
        1000
    }
    pub fn fuse_wait_ms() -> u64 {
        3000
    }
    pub fn mean() -> [f32; 3] {
        [0.0; 3]
    }
    pub fn std() -> [f32; 3] {
        [1.0; 3]
    }
    pub fn input_max_side() -> u32 {
        640
    }
    pub fn stride() -> u32 {
        32
    }
}

/// Whether `name` is a seat section name: `driver`, `front_passenger` or `rear_row_<n>`, n ≥ 1.
pub fn is_section_name(name: &str) -> bool {
    matches!(name, "driver" | "front_passenger")
        || name.strip_prefix("rear_row_").and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n >= 1)
}

/// Parses `"HH:MM-HH:MM"` into minutes of the day `[start, end)`; `end < start` wraps midnight.
pub fn parse_window(text: &str) -> Option<(u32, u32)> {
    let minutes = |s: &str| {
        let (h, m) = s.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = text.split_once('-')?;
    Some((minutes(a)?, minutes(b)?))
}

pub(crate) fn validate_vision(c: &AgentConfig, host: &dyn HostChecks, out: &mut Vec<(String, String)>) {
    let Some(v) = &c.vision else { return };
    if let Some(path) = &v.runtime_path
        && let Err(reason) = host.file(path)
    {
        out.push(("vision.runtime_path".into(), reason));
    }
    range_check(out, "vision.workers", v.workers, 1, 16);
    range_check(out, "vision.intra_threads", v.intra_threads, 1, 64);
    let m = &v.face_model;
    if let Err(reason) = host.file(&m.path) {
        out.push(("vision.face_model.path".into(), reason));
    }
    range_check(out, "vision.face_model.stride", m.stride, 1, 256);
    range_check(out, "vision.face_model.input_max_side", m.input_max_side, m.stride.max(16), 8192);
    if m.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
        out.push(("vision.face_model.std".into(), format!("must be finite and non-zero, got {:?}", m.std)));
    }
    let a = &v.anonymize;
    range_check(out, "vision.anonymize.threshold", a.threshold, 0.01, 1.0);
    range_check(out, "vision.anonymize.mask_scale", a.mask_scale, 0.05, 4.0);
    range_check(out, "vision.anonymize.recheck_threshold", a.recheck_threshold, 0.01, 1.0);
    range_check(out, "vision.count_threshold", v.count_threshold, a.threshold, 1.0);
    range_check(out, "vision.min_contrast", v.min_contrast, 0.0, 128.0);
    range_check(out, "vision.min_confidence", v.min_confidence, 0.0, 1.0);
    range_check(out, "vision.quarantine_max_files", v.quarantine_max_files, 1, 1_000_000);
    range_check(out, "vision.fuse_wait_ms", v.fuse_wait_ms, 0, 60_000);

    let mut seen = HashSet::new();
    for (i, cam) in v.cameras.iter().enumerate() {
        let at = |f: &str| format!("vision.cameras[{i}].{f}");
        let Some(camera) = c.cameras.iter().find(|k| k.id == cam.id) else {
            out.push((at("id"), format!("no camera {:?} in [[cameras]]", cam.id)));
            continue;
        };
        if !seen.insert(cam.id.as_str()) {
            out.push((at("id"), format!("duplicate vision camera {:?}", cam.id)));
        }
        let frame = match camera.source {
            CameraSourceConfig::Simulator { width, height } => Some((width, height)),
            _ => None,
        };
        let mut names = HashSet::new();
        for (j, s) in cam.sections.iter().enumerate() {
            let at = |f: &str| format!("vision.cameras[{i}].sections[{j}].{f}");
            if !is_section_name(&s.name) {
                out.push((
                    at("name"),
                    format!("must be driver, front_passenger or rear_row_<n>, got {:?}", s.name),
                ));
            }
            if !names.insert(s.name.as_str()) {
                out.push((at("name"), format!("duplicate section {:?}", s.name)));
            }
            if s.polygon.len() < 3 {
                out.push((at("polygon"), format!("needs at least 3 points, got {}", s.polygon.len())));
            }
            if let Some((w, h)) = frame
                && let Some([x, y]) = s.polygon.iter().find(|[x, y]| {
                    !(x.is_finite() && y.is_finite())
                        || *x < 0.0
                        || *y < 0.0
                        || *x > w as f32
                        || *y > h as f32
                })
            {
                out.push((at("polygon"), format!("point ({x}, {y}) is outside the camera's {w}x{h} frame")));
            }
        }
    }
    for (i, p) in v.policy.iter().enumerate() {
        let at = |f: &str| format!("vision.policy[{i}].{f}");
        if let Some(bad) = p.lanes.iter().find(|&&lane| lane >= c.site.lanes) {
            out.push((at("lanes"), format!("lane {bad} is outside the site's lanes 0..{}", c.site.lanes)));
        }
        range_check(out, &at("min_occupants"), p.min_occupants, 1, 9);
        for w in &p.windows_utc {
            if parse_window(w).is_none() {
                out.push((at("windows_utc"), format!("{w:?} is not \"HH:MM-HH:MM\"")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_names_and_windows() {
        assert!(is_section_name("driver"));
        assert!(is_section_name("rear_row_2"));
        assert!(!is_section_name("rear_row_0"));
        assert!(!is_section_name("boot"));
        assert_eq!(parse_window("06:30-09:00"), Some((390, 540)));
        assert_eq!(parse_window("22:00-02:00"), Some((1320, 120)));
        assert_eq!(parse_window("25:00-02:00"), None);
    }
}

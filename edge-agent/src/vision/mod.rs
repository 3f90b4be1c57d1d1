//! Vision: the stage between acquire and buffer when a site has `[vision]`. Per capture it
//! decodes the image, finds faces (ONNX Runtime, `model`), counts them into seat sections
//! (`occupancy`), masks every face (`anonymize`), searches the masked frame again and encodes
//! JPEG only when nothing is found; otherwise the capture goes to the `quarantine` and is never
//! released. A vehicle's captures from the cameras of its lane are fused into one occupancy
//! and decision, which every released capture of that vehicle carries.
//!
//! Invariant: with vision configured, every capture the buffer receives went through
//! [`Vision::process`] and passed the re-detection check; a capture that fails any step
//! (undecodable, inference error, face left) is quarantined, never passed on (fail closed).
//!
//! The re-detection searches only where masking changed the frame, and this is why it finds
//! what a search of the whole anonymized frame would. The first pass ran the same detector, at
//! the same input size, on the same frame, at `anonymize.threshold` ≤ `recheck_threshold`, and
//! every face it found was masked (a mask covers the face's box scaled about its centre, so
//! it exists for every box inside the frame). Masking changes pixels only inside the masked
//! rectangles. So:
//! - nothing masked: the frame is unchanged, and the re-check's answer is the first pass's
//!   faces at `recheck_threshold` (none, since any face found would have been masked);
//! - otherwise: away from every mask the pixels are those of the first pass, which found no
//!   face there at a threshold at or below the re-check's; a face can only appear (or stay)
//!   where a mask touched its receptive field. Each region searched covers a masked face's
//!   box and mask grown on every side by half the larger of their sides (at least a stride),
//!   snapped to the network's stride grid so that the crop's pixels and feature grid are the
//!   full input's there ([`recheck_regions`]); a face left visible inside or overlapping a
//!   mask (a mask too small, a blur too weak) has its centre well inside. What this gives up
//!   is the influence of a mask on a detection beyond that margin, which for a convolutional
//!   detector like CenterFace is negligible next to the evidence at the face itself; the
//!   cases that matter are covered by tests (`a_face_left_visible_by_a_small_mask_is_caught`
//!   here, the quarantine end-to-end test) and `bench vision` judges every released frame
//!   with a separate full-resolution detector (`faces_released`).
//!
//! When `anonymize.threshold` exceeds `recheck_threshold` the whole frame is searched.

pub mod anonymize;
pub mod model;
pub mod occupancy;
pub mod quarantine;

use crate::view::{CameraFrame, SiteView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lanewatch_agent_config::{AgentConfig, SeatSectionConfig, VisionConfig};
use opencv::core::{Mat, Rect, Vector};
use opencv::prelude::*;

use self::model::{Face, FaceDetector};
use self::occupancy::{FrameCounts, count_frame, decide, fuse};
use self::quarantine::Quarantine;
use crate::domain::{Capture, OccupancyStatus};
use crate::load::WaitingOn;
use crate::stage::{Inlet, Outlet};
use crate::state::ComponentState;
use crate::supervisor::{Component, ComponentCtx, RunFuture};

const JPEG_QUALITY: i32 = 85;

#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// ONNX Runtime could not be found or loaded.
    #[error("{0}")]
    Runtime(String),
    #[error("face model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("face model {path} has the wrong shape: {reason}")]
    ModelShape { path: PathBuf, reason: String },
    #[error("corrupt image: {0}")]
    CorruptImage(String),
    #[error("frame: {0}")]
    Frame(String),
    #[error("inference: {0}")]
    Inference(String),
}

/// What became of one capture.
#[derive(Debug)]
pub enum Processed {
    /// Anonymized, checked and encoded: may be buffered. `faces`: the boxes masked (pixels).
    Released { capture: Capture, counts: Option<FrameCounts>, faces: Vec<[f32; 4]> },
    /// Kept on the edge, never uploaded.
    Quarantined { capture: Capture, reason: String, counts: Option<FrameCounts>, faces: usize },
}

/// The face detector with the site's vision settings.
pub struct Vision {
    pub detector: FaceDetector,
    pub config: VisionConfig,
    sections: HashMap<String, Vec<SeatSectionConfig>>,
}

/// Where ONNX Runtime is: `[vision] runtime_path`, else the `ORT_DYLIB_PATH` the agent got.
pub fn runtime_path(
    config: &VisionConfig,
    config_dir: Option<&Path>,
    env_path: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    match (&config.runtime_path, env_path) {
        (Some(p), _) => Ok(crate::config::resolve(config_dir, p)),
        (None, Some(p)) => Ok(p.to_owned()),
        (None, None) => anyhow::bail!(
            "vision.runtime_path: no onnx runtime configured: set vision.runtime_path or ORT_DYLIB_PATH to libonnxruntime.so (scripts/setup.sh puts it in .tools/onnxruntime)"
        ),
    }
}

impl Vision {
    /// Loads the runtime and the model; errors name the file and the problem.
    pub fn load(
        config: &VisionConfig,
        config_dir: Option<&Path>,
        runtime: &Path,
    ) -> Result<Self, VisionError> {
        model::init_runtime(runtime)?;
        let mut config = config.clone();
        config.face_model.path = crate::config::resolve(config_dir, &config.face_model.path);
        if !config.face_model.path.is_file() {
            return Err(VisionError::Model {
                path: config.face_model.path.clone(),
                reason: "file does not exist (scripts/setup.sh makes .tools/models/centerface-dyn.onnx)"
                    .into(),
            });
        }
        let detector =
            FaceDetector::load(&config.face_model, config.workers, config.intra_threads, config.cuda)?;
        let sections = config.cameras.iter().map(|c| (c.id.clone(), c.sections.clone())).collect();
        Ok(Self { detector, config, sections })
    }

    /// The seat sections of `camera_id` (empty: the camera counts nobody).
    pub fn sections(&self, camera_id: &str) -> &[SeatSectionConfig] {
        self.sections.get(camera_id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Decode → detect → count → anonymize → re-detect where masked → encode. Blocking (runs
    /// inference).
    pub fn process(&self, mut capture: Capture) -> Processed {
        match self.try_process(&capture) {
            Ok(Checked { jpeg, residual, counts, faces }) => {
                if residual.is_empty() {
                    capture.image = jpeg;
                    capture.meta.content_type = "image/jpeg".into();
                    Processed::Released { capture, counts, faces }
                } else {
                    let faces = faces.len();
                    let best = residual.iter().map(|f| f.score).fold(0.0, f32::max);
                    capture.image = jpeg;
                    capture.meta.content_type = "image/jpeg".into();
                    Processed::Quarantined {
                        capture,
                        reason: format!(
                            "{} face(s) still detectable after anonymization (best score {best:.2})",
                            residual.len()
                        ),
                        counts,
                        faces,
                    }
                }
            }
            Err(err) => {
                // keep no bytes of a frame that was not anonymized
                capture.image = Bytes::new();
                Processed::Quarantined { capture, reason: err.to_string(), counts: None, faces: 0 }
            }
        }
    }

    fn try_process(&self, capture: &Capture) -> Result<Checked, VisionError> {
        let mut frame = decode(&capture.image, &capture.meta.content_type)?;
        let c = &self.config;
        let prepared = self.detector.prepare(&frame)?;
        let faces = self.detector.detect_in(&prepared, prepared.full(), c.anonymize.threshold)?;
        let sections = self.sections(&capture.meta.camera_id);
        let counts = if sections.is_empty() {
            None
        } else {
            let contrast = contrast(&frame, sections)?;
            Some(count_frame(&faces, sections, c.count_threshold, contrast, c.min_contrast))
        };
        drop(prepared);
        let masked = anonymize::anonymize(&mut frame, &faces, c.anonymize.method, c.anonymize.mask_scale)?;
        let residual = self.recheck(&frame, &faces, &masked)?;
        let jpeg = encode_jpeg(&frame)?;
        let faces = faces.iter().map(|f| [f.x0, f.y0, f.x1, f.y1]).collect();
        Ok(Checked { jpeg, residual, counts, faces })
    }

    /// The fail-closed check: faces at `recheck_threshold` or above in the anonymized `frame`,
    /// searched where masking changed it (see the module doc for why that is enough).
    fn recheck(&self, frame: &Mat, faces: &[Face], masked: &[Rect]) -> Result<Vec<Face>, VisionError> {
        let a = &self.config.anonymize;
        if masked.is_empty() && a.threshold <= a.recheck_threshold {
            // the frame is unchanged: the same detector on the same pixels finds the same faces
            return Ok(faces.iter().filter(|f| f.score >= a.recheck_threshold).copied().collect());
        }
        let prepared = self.detector.prepare(frame)?;
        let regions = if a.threshold <= a.recheck_threshold {
            recheck_regions(prepared.input, prepared.scale(), faces, masked, self.detector.stride())
        } else {
            vec![prepared.full()]
        };
        let mut residual = Vec::new();
        for region in regions {
            residual.extend(self.detector.detect_in(&prepared, region, a.recheck_threshold)?);
        }
        Ok(residual)
    }
}

/// Share of the input above which the re-check runs once on the whole input rather than on
/// crops (merged crops do not overlap, but each run has a fixed cost).
const FULL_RECHECK_SHARE: f64 = 0.85;

/// The input regions (input pixels, on the stride grid) the re-check searches: around each
/// masked face, the union of its box and its mask, grown on every side by half its larger
/// side (at least one stride), snapped outwards to the stride grid; overlapping regions are merged,
/// and past [`FULL_RECHECK_SHARE`] of the input the whole input is searched.
/// `input` is the network input size, `scale` frame pixels per input pixel.
pub fn recheck_regions(
    input: (i32, i32),
    scale: (f32, f32),
    faces: &[Face],
    masked: &[Rect],
    stride: i32,
) -> Vec<Rect> {
    let (iw, ih) = input;
    let (sx, sy) = scale;
    let full = Rect::new(0, 0, iw, ih);
    let mut regions: Vec<Rect> = Vec::new();
    let boxes = faces.iter().map(|f| (f.x0, f.y0, f.x1, f.y1));
    let masks =
        masked.iter().map(|r| (r.x as f32, r.y as f32, (r.x + r.width) as f32, (r.y + r.height) as f32));
    for (x0, y0, x1, y1) in boxes.chain(masks) {
        let (x0, y0, x1, y1) = (x0 / sx, y0 / sy, x1 / sx, y1 / sy);
        let margin = ((x1 - x0).max(y1 - y0) / 2.0).max(stride as f32);
        let snap_down = |v: f32| ((v / stride as f32).floor() as i32 * stride).max(0);
        let snap_up = |v: f32, max: i32| ((v / stride as f32).ceil() as i32 * stride).min(max);
        let (rx0, ry0) = (snap_down(x0 - margin), snap_down(y0 - margin));
        let (rx1, ry1) = (snap_up(x1 + margin, iw), snap_up(y1 + margin, ih));
        if rx1 > rx0 && ry1 > ry0 {
            regions.push(Rect::new(rx0, ry0, rx1 - rx0, ry1 - ry0));
        }
    }
    // merge until no two overlap (the union of two grid-aligned rects is grid-aligned)
    let mut merged = true;
    while merged {
        merged = false;
        'outer: for i in 0..regions.len() {
            for j in i + 1..regions.len() {
                if (regions[i] & regions[j]).area() > 0 {
                    let b = regions.swap_remove(j);
                    regions[i] |= b;
                    merged = true;
                    break 'outer;
                }
            }
        }
    }
    let area: i64 = regions.iter().map(|r| i64::from(r.area())).sum();
    if area as f64 >= FULL_RECHECK_SHARE * f64::from(full.area()) {
        return vec![full];
    }
    regions
}

struct Checked {
    jpeg: Bytes,
    residual: Vec<Face>,
    counts: Option<FrameCounts>,
    /// The boxes of the faces found and masked, in frame pixels.
    faces: Vec<[f32; 4]>,
}

/// Decodes JPEG/PNG bytes into a BGR frame.
pub fn decode(bytes: &[u8], content_type: &str) -> Result<Mat, VisionError> {
    let buf = Vector::<u8>::from_slice(bytes);
    let mat = opencv::imgcodecs::imdecode(&buf, opencv::imgcodecs::IMREAD_COLOR).map_err(|err| {
        VisionError::CorruptImage(format!("{content_type} of {} bytes: {err}", bytes.len()))
    })?;
    if mat.empty() || mat.cols() < 8 || mat.rows() < 8 {
        return Err(VisionError::CorruptImage(format!(
            "cannot decode {content_type} of {} bytes",
            bytes.len()
        )));
    }
    Ok(mat)
}

/// Encodes a BGR frame as JPEG.
pub fn encode_jpeg(frame: &Mat) -> Result<Bytes, VisionError> {
    let mut out = Vector::<u8>::new();
    let params = Vector::<i32>::from_slice(&[opencv::imgcodecs::IMWRITE_JPEG_QUALITY, JPEG_QUALITY]);
    opencv::imgcodecs::imencode(".jpg", frame, &mut out, &params)
        .map_err(|err| VisionError::Frame(format!("jpeg encoding: {err}")))?;
    Ok(Bytes::from(out.to_vec()))
}

/// A BGR frame from packed RGB pixels.
pub fn mat_from_rgb(width: u32, height: u32, rgb: &[u8]) -> Result<Mat, VisionError> {
    let cv = |err: opencv::Error| VisionError::Frame(format!("frame: {err}"));
    let mut m =
        Mat::new_rows_cols_with_default(height as i32, width as i32, opencv::core::CV_8UC3, 0.0.into())
            .map_err(cv)?;
    let data = m.data_bytes_mut().map_err(cv)?;
    for (dst, src) in data.chunks_exact_mut(3).zip(rgb.chunks_exact(3)) {
        dst.copy_from_slice(&[src[2], src[1], src[0]]);
    }
    Ok(m)
}

/// Luma standard deviation over the bounding box of a camera's sections.
fn contrast(frame: &Mat, sections: &[SeatSectionConfig]) -> Result<f32, VisionError> {
    let cv = |err: opencv::Error| VisionError::Frame(format!("contrast: {err}"));
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, 0f32, 0f32);
    for p in sections.iter().flat_map(|s| &s.polygon) {
        (x0, y0, x1, y1) = (x0.min(p[0]), y0.min(p[1]), x1.max(p[0]), y1.max(p[1]));
    }
    let (w, h) = (frame.cols(), frame.rows());
    let clamp = |v: f32, max: i32| (v as i32).clamp(0, max);
    let rect = Rect::new(clamp(x0, w), clamp(y0, h), 0, 0);
    let rect = Rect::new(rect.x, rect.y, clamp(x1, w) - rect.x, clamp(y1, h) - rect.y);
    if rect.width <= 0 || rect.height <= 0 {
        return Err(VisionError::Frame(format!(
            "the seat sections lie outside the {w}x{h} frame: check the calibration polygons of this camera"
        )));
    }
    let roi = Mat::roi(frame, rect).map_err(cv)?;
    let mut gray = Mat::default();
    opencv::imgproc::cvt_color_def(&roi, &mut gray, opencv::imgproc::COLOR_BGR2GRAY).map_err(cv)?;
    let (mut mean, mut dev) = (Vector::<f64>::new(), Vector::<f64>::new());
    opencv::core::mean_std_dev_def(&gray, &mut mean, &mut dev).map_err(cv)?;
    Ok(dev.get(0).map_err(cv)? as f32)
}

/// One vehicle's captures waiting for the other cameras of its lane.
struct Group {
    expected: usize,
    deadline: tokio::time::Instant,
    released: Vec<Capture>,
    counts: Vec<FrameCounts>,
    received: usize,
}

/// Counters the component publishes (its typed state for introspection).
pub use crate::state::VisionState as VisionStats;

/// The `vision` component: acquire's captures in, anonymized and counted captures out.
/// Who watches vision's output besides the buffer: the local UI's view (released frames) and
/// the frame-time histogram.
#[derive(Clone)]
pub struct Observers {
    pub view: SiteView,
    pub frame_seconds: prometheus_client::metrics::histogram::Histogram,
}

pub struct VisionComponent {
    pub vision: Arc<Vision>,
    pub quarantine: Arc<Quarantine>,
    pub input: Inlet<Capture>,
    pub output: Outlet<Capture>,
    /// Cameras per lane: a vehicle is fused once each has sent its capture.
    pub lane_cameras: BTreeMap<u32, usize>,
    pub stats: Arc<std::sync::Mutex<VisionStats>>,
    /// Where released frames are shown to the local UI.
    pub view: SiteView,
    /// Time per frame (`lanewatch_agent_vision_frame_seconds`).
    pub frame_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl VisionComponent {
    pub fn new(
        config: &AgentConfig,
        vision: Vision,
        quarantine: Quarantine,
        input: Inlet<Capture>,
        output: Outlet<Capture>,
        observers: Observers,
    ) -> Self {
        let Observers { view, frame_seconds } = observers;
        let lane_cameras =
            config.cameras_by_lane().into_iter().map(|(lane, cams)| (lane, cams.len())).collect();
        let stats = VisionStats {
            model: vision.detector.model_version.clone(),
            sessions: vision.detector.sessions() as u64,
            ..Default::default()
        };
        Self {
            vision: Arc::new(vision),
            quarantine: Arc::new(quarantine),
            input,
            output,
            lane_cameras,
            stats: Arc::new(std::sync::Mutex::new(stats)),
            view,
            frame_seconds,
        }
    }
}

impl Component for VisionComponent {
    fn name(&self) -> String {
        "vision".into()
    }

    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        let (vision, quarantine, input, output) =
            (self.vision.clone(), self.quarantine.clone(), self.input.clone(), self.output.clone());
        let (lane_cameras, stats, view) = (self.lane_cameras.clone(), self.stats.clone(), self.view.clone());
        let frame_seconds = self.frame_seconds.clone();
        Box::pin(async move {
            let mut input = input.lock().await;
            let wait = Duration::from_millis(vision.config.fuse_wait_ms);
            let mut groups: BTreeMap<(u32, DateTime<Utc>), Group> = BTreeMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            stats.lock().unwrap().quarantine_held = quarantine.len() as u64;
            if let Some(bytes) = vision.detector.session_bytes {
                ctx.memory(bytes);
            }
            ctx.state(ComponentState::Vision(stats.lock().unwrap().clone()));
            // up to `workers` captures are processed at once; results are taken in arrival order
            let workers = vision.detector.sessions().max(1);
            let mut processing = futures::stream::FuturesOrdered::new();
            let mut open = true;
            while open || !processing.is_empty() {
                // its input, or the inference in flight
                ctx.wait_on(if processing.is_empty() { WaitingOn::Input } else { WaitingOn::Nothing });
                let processed = tokio::select! {
                    next = input.recv(), if open && processing.len() < workers => {
                        match next {
                            Some(mut capture) => {
                                if let Some(marks) = capture.trace.as_mut() {
                                    marks.vision_started = Some(chrono::Utc::now());
                                }
                                let (v, busy, timer) = (vision.clone(), ctx.busy(), frame_seconds.clone());
                                processing.push_back(tokio::task::spawn_blocking(move || {
                                    let started = std::time::Instant::now();
                                    let out = busy.measure(|| v.process(capture));
                                    timer.observe(started.elapsed().as_secs_f64());
                                    out
                                }));
                            }
                            None => open = false,
                        }
                        None
                    }
                    Some(done) = futures::StreamExt::next(&mut processing), if !processing.is_empty() => {
                        Some(done.context("vision task")?)
                    }
                    _ = tick.tick() => None,
                };
                if let Some(processed) = processed {
                    let meta = match &processed {
                        Processed::Released { capture, .. } | Processed::Quarantined { capture, .. } => {
                            &capture.meta
                        }
                    };
                    let key = (meta.lane, meta.detected_at);
                    // a test capture is one camera's alone: its group is complete at once
                    let cameras = if meta.test { 1 } else { lane_cameras.get(&key.0).copied().unwrap_or(1) };
                    let group = groups.entry(key).or_insert_with(|| Group {
                        expected: cameras.max(1),
                        deadline: tokio::time::Instant::now() + wait,
                        released: Vec::new(),
                        counts: Vec::new(),
                        received: 0,
                    });
                    group.received += 1;
                    let quarantined = match processed {
                        Processed::Released { capture, counts, faces } => {
                            // the view gets released frames only: anonymized and re-checked
                            view.released_frame(
                                &capture.meta.camera_id,
                                CameraFrame {
                                    at: capture.meta.captured_at,
                                    capture_id: capture.meta.capture_id,
                                    jpeg: capture.image.clone(),
                                    sections: vision
                                        .sections(&capture.meta.camera_id)
                                        .iter()
                                        .map(|s| (s.name.clone(), s.polygon.clone()))
                                        .collect(),
                                    faces: faces.clone(),
                                },
                            );
                            let mut s = stats.lock().unwrap();
                            s.frames += 1;
                            s.faces += faces.len() as u64;
                            group.counts.extend(counts);
                            group.released.push(capture);
                            None
                        }
                        Processed::Quarantined { capture, reason, counts, faces } => {
                            let mut s = stats.lock().unwrap();
                            s.frames += 1;
                            s.faces += faces as u64;
                            s.quarantined += 1;
                            group.counts.extend(counts);
                            Some((capture, reason))
                        }
                    };
                    if let Some((capture, reason)) = quarantined {
                        ctx.failed(1);
                        tracing::warn!(capture_id = %capture.meta.capture_id, camera = %capture.meta.camera_id, %reason, "capture quarantined");
                        let q = quarantine.clone();
                        let image = (!capture.image.is_empty()).then(|| capture.image.clone());
                        let meta = capture.meta.clone();
                        let why = reason.clone();
                        tokio::task::spawn_blocking(move || q.put(&meta, &why, &[], image.as_deref()))
                            .await
                            .context("quarantine task")?
                            .context("writing quarantine")?;
                        let mut s = stats.lock().unwrap();
                        s.quarantine_held = quarantine.len() as u64;
                        s.last_quarantine_reason = Some(reason);
                    }
                }
                let now = tokio::time::Instant::now();
                let ready: Vec<_> = groups
                    .iter()
                    .filter(|(_, g)| g.received >= g.expected || g.deadline <= now)
                    .map(|(k, _)| *k)
                    .collect();
                for key in ready {
                    let group = groups.remove(&key).expect("present");
                    release(&vision, group, &output, &stats, &ctx).await?;
                }
                ctx.state(ComponentState::Vision(stats.lock().unwrap().clone()));
            }
            for (_, group) in std::mem::take(&mut groups) {
                release(&vision, group, &output, &stats, &ctx).await?;
            }
            ctx.state(ComponentState::Vision(stats.lock().unwrap().clone()));
            output.close();
            Ok(())
        })
    }
}

/// Fuses a vehicle's frames, stamps occupancy and decision on its released captures and sends
/// them on.
async fn release(
    vision: &Vision,
    group: Group,
    output: &Outlet<Capture>,
    stats: &std::sync::Mutex<VisionStats>,
    ctx: &ComponentCtx,
) -> anyhow::Result<()> {
    let occupancy = if group.counts.is_empty() {
        OccupancyStatus::Unknown
    } else {
        fuse(&group.counts, &vision.detector.model_version, vision.config.min_confidence)
    };
    for mut capture in group.released {
        // a test capture shows no vehicle: its count is reported, never judged
        let decision = if capture.meta.test {
            occupancy::Decision::Statistics
        } else {
            decide(&occupancy, capture.meta.lane, capture.meta.captured_at, &vision.config.policy)
        };
        capture.meta.occupancy = occupancy.clone();
        capture.meta.value_class = decision.value_class();
        if let Some(marks) = capture.trace.as_mut() {
            marks.vision_released = Some(chrono::Utc::now());
        }
        {
            let mut s = stats.lock().unwrap();
            s.released += 1;
            match (&occupancy, decision) {
                (_, occupancy::Decision::ViolationCandidate) => s.violation_candidates += 1,
                (OccupancyStatus::Unreadable { .. }, _) => s.unreadable += 1,
                (OccupancyStatus::Counted { .. }, _) => s.counted += 1,
                _ => {}
            }
        }
        tracing::info!(capture_id = %capture.meta.capture_id, lane = capture.meta.lane, ?decision, "capture anonymized and counted");
        output.send(capture).await?;
        ctx.processed(1);
    }
    Ok(())
}

/// Builds the vision component of `config` (which has `[vision]`): runtime, model, quarantine.
pub fn component(
    config: &AgentConfig,
    config_dir: Option<&Path>,
    ort_dylib_path: Option<&Path>,
    input: Inlet<Capture>,
    output: Outlet<Capture>,
    observers: Observers,
) -> anyhow::Result<VisionComponent> {
    let v = config.vision.as_ref().context("no [vision] section")?;
    let runtime = runtime_path(v, config_dir, ort_dylib_path)?;
    let vision = Vision::load(v, config_dir, &runtime)?;
    let dir = crate::config::resolve(config_dir, &v.quarantine_path);
    let quarantine = Quarantine::open(&dir, v.quarantine_max_files)?;
    tracing::info!(model = %vision.detector.model_version, runtime = %runtime.display(), quarantine = %dir.display(), "vision loaded");
    Ok(VisionComponent::new(config, vision, quarantine, input, output, observers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools")
    }

    fn capture(image: &[u8]) -> Capture {
        Capture::synthetic("s", 0, "front", Bytes::copy_from_slice(image))
    }

    fn load(config: &VisionConfig) -> Vision {
        let t = tools();
        Vision::load(config, None, &t.join("onnxruntime/libonnxruntime.so"))
            .expect("scripts/setup.sh provides .tools")
    }

    fn astronaut_jpeg() -> Bytes {
        let astronaut = image::open(tools().join("faces/astronaut.png")).unwrap().to_rgb8();
        let frame = mat_from_rgb(astronaut.width(), astronaut.height(), astronaut.as_raw()).unwrap();
        encode_jpeg(&frame).unwrap()
    }

    fn face(x0: f32, y0: f32, x1: f32, y1: f32) -> Face {
        Face { x0, y0, x1, y1, score: 0.9, landmarks: [[0.0; 2]; 5] }
    }

    #[test]
    fn recheck_regions_cover_each_mask_with_a_margin_on_the_stride_grid() {
        // a 640 x 360 frame at 320 x 192 input: 2 frame pixels per input pixel across, 1.875 down
        let (input, scale) = ((320, 192), (2.0, 360.0 / 192.0));
        let f = face(300.0, 150.0, 340.0, 190.0); // 20 x ~21 input pixels
        let mask = anonymize::mask_rect(&f, 1.3, 640, 360).unwrap();
        let regions = recheck_regions(input, scale, &[f], &[mask], 32);
        assert_eq!(regions.len(), 1);
        let r = regions[0];
        assert!(r.x % 32 == 0 && r.y % 32 == 0, "{r:?} on the grid");
        // the mask spans input x ~148..172; margin = max(26 / 2 input px, 32) = 32 on each side
        assert!(r.x <= 148 - 32 && r.x + r.width >= 172 + 32, "{r:?}");
        assert!(r.width < 320, "a crop, not the whole input: {r:?}");
        // two faces far apart stay two crops; many close ones merge into the whole input
        let (a, b) = (face(40.0, 40.0, 60.0, 60.0), face(580.0, 300.0, 600.0, 320.0));
        assert_eq!(recheck_regions(input, scale, &[a, b], &[], 32).len(), 2);
        let crowd: Vec<Face> =
            (0..8).map(|i| face(i as f32 * 80.0, 20.0, i as f32 * 80.0 + 60.0, 340.0)).collect();
        assert_eq!(recheck_regions(input, scale, &crowd, &[], 32), vec![Rect::new(0, 0, 320, 192)]);
    }

    /// The crop re-check still catches a face that masking left visible.
    #[test]
    fn a_face_left_visible_by_a_small_mask_is_caught() {
        let mut config = crate::bench::vision::vision_config(&tools());
        config.anonymize.mask_scale = 0.1;
        let vision = load(&config);
        match vision.process(capture(&astronaut_jpeg())) {
            Processed::Quarantined { reason, faces, .. } => {
                assert!(faces >= 1);
                assert!(reason.contains("still detectable after anonymization"), "{reason}");
            }
            other => panic!("a visible face was released: {other:?}"),
        }
    }

    /// Frames processed side by side (one session each) find what one at a time finds.
    #[test]
    fn frames_side_by_side_match_one_at_a_time() {
        let mut config = crate::bench::vision::vision_config(&tools());
        config.workers = 3;
        let vision = load(&config);
        assert_eq!(vision.detector.sessions(), 3);
        let frame = decode(&astronaut_jpeg(), "image/jpeg").unwrap();
        let alone = vision.detector.detect(&frame, 0.2).unwrap();
        assert!(!alone.is_empty());
        std::thread::scope(|s| {
            let runs: Vec<_> =
                (0..6).map(|_| s.spawn(|| vision.detector.detect(&frame, 0.2).unwrap())).collect();
            for run in runs {
                assert_eq!(run.join().unwrap(), alone);
            }
        });
    }

    /// Needs scripts/setup.sh's `.tools` (ONNX Runtime and the rewritten CenterFace).
    #[test]
    fn corrupt_images_are_quarantined_and_faces_never_released() {
        let t = tools();
        let vision = load(&crate::bench::vision::vision_config(&t));
        // corrupt: quarantined with a reason naming the problem, keeping no bytes
        match vision.process(capture(b"\xff\xd8\xff garbage")) {
            Processed::Quarantined { reason, capture, .. } => {
                assert!(reason.starts_with("corrupt image"), "{reason}");
                assert!(capture.image.is_empty());
            }
            other => panic!("corrupt image released: {other:?}"),
        }
        // a real face: found, masked, released without a detectable face
        let jpeg = astronaut_jpeg();
        let frame = decode(&jpeg, "image/jpeg").unwrap();
        assert!(!vision.detector.detect(&frame, 0.5).unwrap().is_empty(), "the astronaut's face is found");
        let Processed::Released { capture: out, faces, .. } = vision.process(capture(&jpeg)) else {
            panic!("anonymized frame quarantined");
        };
        assert!(!faces.is_empty());
        let after = decode(&out.image, "image/jpeg").unwrap();
        assert!(vision.detector.detect(&after, 0.2).unwrap().is_empty(), "no face left at the low threshold");
    }
}

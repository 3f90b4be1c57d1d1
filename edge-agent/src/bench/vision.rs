//! `lanewatch-agent bench vision`: occupant counting and anonymization against ground truth,
//! and against `deface` on the same frames.
//!
//! Vehicles with known occupants are rendered by the simulator's cabin renderer from the
//! held-out face photos (never used for tuning; `--tuning` for tuning) as a front camera
//! (driver, front passenger) and a side camera (rear rows) see them; each frame goes through
//! [`Vision::process`] exactly as in the agent (JPEG in, anonymized JPEG out, `workers` frames
//! at once, each on its own ONNX Runtime session), the two frames are fused and the HOV2+
//! policy decides. The pipeline's model is the agent's default, CenterFace quantized to 8 bits
//! by `scripts/onnx_quantize.py` (`--model` runs another, e.g. the float one).
//!
//! A separate judge, CenterFace in float at the frames' full resolution (whatever model and
//! input size the pipeline runs), decides what is a face: anonymization recall is, of the
//! ground-truth faces the judge finds (score ≥ 0.5) in the raw frame, the share it no longer
//! finds in the output; `faces_released` counts the judge's detections in released frames.
//! `deface` (its own venv, its default options: float CenterFace at full resolution) runs on
//! the same JPEGs and is judged the same way; its throughput is the marginal one (a run on all
//! frames minus a run on one, so Python's start-up is not counted against it), and the
//! speedup's base is the pipeline's rate in passes just before and after it.
//! `inference_bound_ratio`: the pipeline's frame rate over the bare ONNX Runtime rate of the
//! same model at the pipeline's input size with the same parallelism (`bare_inference_fps`;
//! `bare_inference_fps_full` at the full frame size).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use lanewatch_agent_config::{
    AnonymizeConfig, LanePolicyConfig, ModelSpec, SeatSectionConfig, VisionCameraConfig, VisionConfig,
};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::domain::{Capture, OccupancyStatus, VehicleClass};
use crate::sim::GroundTruth;
use crate::sim::faces::{FaceLibrary, FaceSet, PlacedFace, render_cabin};
use crate::vision::model::FaceDetector;
use crate::vision::occupancy::{Decision, decide, fuse};
use crate::vision::{Processed, Vision};

pub struct VisionBenchOptions {
    pub vehicles: usize,
    pub seed: u64,
    /// The photos the cabins are built from: tune on `Tuning`, report on `HeldOut`.
    pub face_set: FaceSet,
    /// Overrides the pipeline's `face_model.input_max_side`.
    pub input_max_side: Option<u32>,
    /// Override `count_threshold` and `min_confidence` (for tuning).
    pub count_threshold: Option<f32>,
    pub min_confidence: Option<f32>,
    /// The pipeline's face model instead of [`vision_config`]'s.
    pub model: Option<PathBuf>,
    /// `.tools` of the workspace: onnxruntime/, models/, faces/, deface-venv/.
    pub tools_dir: PathBuf,
    pub skip_deface: bool,
    /// Where traced passes export their spans (OTLP/gRPC); `None`: no traced passes.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct VisionReport {
    pub exact_count_accuracy: f64,
    pub violation_precision: f64,
    pub violation_recall: f64,
    pub unreadable_rate: f64,
    pub faces_released: u64,
    pub anonymization_recall: f64,
    pub deface_speedup: Option<f64>,
    pub inference_bound_ratio: f64,
    /// The pipeline's frame rate with every capture traced (stage marks, spans, OTLP export to
    /// `--otlp-endpoint`) over its rate with tracing off, in alternating passes of the same run;
    /// `None` without a collector.
    pub tracing_overhead_ratio: Option<f64>,
    /// Spans the traced passes handed to the exporter.
    pub traced_spans: Option<u64>,
    /// Exact counts over the vehicles the pipeline counted (not unreadable) whose glass is
    /// clear; `exact_count_accuracy` is over all clear-glass vehicles (unreadable ones count
    /// as wrong).
    pub exact_count_accuracy_counted: f64,
    /// Clear-glass vehicles the pipeline called unreadable, over clear-glass vehicles.
    pub unreadable_clear_rate: f64,
    pub vehicles: usize,
    pub frames: usize,
    /// The pipeline's network input, `<width>x<height>`, and the full frame's.
    pub inference_input: String,
    pub full_input: String,
    pub pipeline_fps: f64,
    /// Decoding and the first detection pass alone, per frame.
    pub first_pass_fps: f64,
    /// Bare ONNX Runtime inference at the pipeline's input size, and at the full frame size.
    pub bare_inference_fps: f64,
    pub bare_inference_fps_full: f64,
    /// Frames processed at once (sessions), and threads per inference.
    pub workers: usize,
    pub intra_threads: usize,
    pub deface_fps: Option<f64>,
    /// The pipeline's rate in the passes just before and after deface's (the speedup's base).
    pub pipeline_fps_around_deface: Option<f64>,
    pub deface_anonymization_recall: Option<f64>,
    /// Whether the pipeline's anonymization recall is at least deface's on these frames.
    pub recall_at_least_deface: Option<bool>,
    /// Share of ground-truth faces on which deface and the pipeline agree (both hid it or not).
    pub deface_recall_agreement: Option<f64>,
    pub quarantined: usize,
    /// Lowest section contrast of a clear-glass frame and highest of a tinted one.
    pub contrast_clear_min: f32,
    pub contrast_tinted_max: f32,
    /// Per section: [exact, under, over] counts over readable vehicles.
    pub sections: std::collections::BTreeMap<String, [u64; 3]>,
    /// Up to 20 clear-glass vehicles not counted exactly: truth and what the pipeline said.
    pub miscounts: Vec<Miscount>,
    pub face_set: &'static str,
    pub model: String,
}

#[derive(Debug, Serialize)]
pub struct Miscount {
    pub vehicle: usize,
    /// Per section: (true occupants, counted; `None` when unreadable).
    pub sections: std::collections::BTreeMap<String, (u32, Option<u32>)>,
    /// Per camera, per section: detector scores at or above the anonymization threshold.
    pub scores: std::collections::BTreeMap<String, Vec<f32>>,
}

const W: u32 = 640;
const H: u32 = 360;

fn square(name: &str, x0: f32, y0: f32, x1: f32, y1: f32) -> SeatSectionConfig {
    SeatSectionConfig { name: name.into(), polygon: vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1]] }
}

/// The bench site's calibration: a front and a side camera.
fn cameras() -> Vec<VisionCameraConfig> {
    vec![
        VisionCameraConfig {
            id: "front".into(),
            sections: vec![
                square("front_passenger", 40.0, 60.0, 300.0, 280.0),
                square("driver", 340.0, 60.0, 600.0, 280.0),
            ],
        },
        VisionCameraConfig {
            id: "side".into(),
            sections: vec![
                square("rear_row_1", 20.0, 90.0, 315.0, 270.0),
                square("rear_row_2", 325.0, 90.0, 620.0, 270.0),
            ],
        },
    ]
}

pub fn vision_config(tools: &Path) -> VisionConfig {
    VisionConfig {
        runtime_path: None,
        workers: std::thread::available_parallelism().map_or(1, usize::from),
        intra_threads: 1,
        cuda: false,
        face_model: ModelSpec {
            path: tools.join("models/centerface-int8.onnx"),
            decoder: Default::default(),
            layout: Default::default(),
            channels: Default::default(),
            mean: [0.0; 3],
            std: [1.0; 3],
            input_max_side: 640,
            stride: 32,
        },
        anonymize: AnonymizeConfig::default(),
        count_threshold: 0.2,
        // calibrated on the tuning set: clear-glass frames (an empty cabin too) stay above 4.5,
        // tinted ones below 3 (`contrast_clear_min`, `contrast_tinted_max`)
        min_contrast: 3.5,
        min_confidence: 0.0,
        quarantine_path: "quarantine".into(),
        quarantine_max_files: 1000,
        fuse_wait_ms: 0,
        cameras: cameras(),
        policy: vec![LanePolicyConfig { lanes: vec![0], min_occupants: 2, windows_utc: vec![] }],
    }
}

fn truth(rng: &mut rand::rngs::StdRng, id: u64) -> GroundTruth {
    let row0 = if rng.random_bool(0.55) { 1 } else { 2 };
    let row1 = [0, 0, 0, 1, 1, 2, 3][rng.random_range(0..7)];
    let mut rows = vec![row0, row1];
    if rng.random_bool(0.15) {
        rows.push(rng.random_range(0..4));
    }
    GroundTruth {
        vehicle_id: id,
        lane: 0,
        class: VehicleClass::Car,
        speed_kmh: 100.0,
        length_m: 4.5,
        width_m: 1.8,
        height_m: 1.5,
        occupants_per_row: rows,
        crosses_scan_plane_at: chrono::Utc::now(),
    }
}

/// The traced passes: every capture marked, its spans built as the buffer stage builds them and
/// exported in batches over OTLP/gRPC, sampling everything (the most tracing can cost).
struct Traced {
    runtime: tokio::runtime::Runtime,
    telemetry: lanewatch_telemetry::Telemetry,
    tracer: std::sync::Arc<crate::traces::CaptureTracer>,
    spans: std::sync::atomic::AtomicU64,
}

impl Traced {
    fn start(endpoint: &str) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let config = lanewatch_telemetry::TelemetryConfig {
            enabled: true,
            endpoint: endpoint.to_owned(),
            sample_ratio: 1.0,
            ..Default::default()
        };
        let problems = config.problems("--otlp-endpoint");
        if let Some((_, why)) = problems.first() {
            anyhow::bail!("--otlp-endpoint {endpoint:?}: {why}");
        }
        let telemetry = {
            let _enter = runtime.enter();
            lanewatch_telemetry::Telemetry::install(&config, "lanewatch-agent-bench", "bench")?
                .context("telemetry is enabled")?
        };
        let tracer = crate::traces::CaptureTracer::new(&telemetry);
        Ok(Self { runtime, telemetry, tracer, spans: Default::default() })
    }

    fn process(&self, vision: &Vision, mut capture: Capture) {
        let now = chrono::Utc::now();
        let mut marks = crate::domain::StageMarks::made(Some(now));
        marks.vision_started = Some(now);
        capture.trace = Some(marks);
        let (Processed::Released { mut capture, .. } | Processed::Quarantined { mut capture, .. }) =
            vision.process(capture);
        if let Some(marks) = capture.trace.as_mut() {
            marks.vision_released = Some(chrono::Utc::now());
        }
        let root = self.tracer.begin(&mut capture);
        let emitted = self.tracer.stored(root, &capture.meta);
        self.spans.fetch_add(emitted as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits until the collector took every span built so far.
    fn flush(&self) -> anyhow::Result<()> {
        self.telemetry
            .provider()
            .force_flush()
            .map_err(|e| anyhow::anyhow!("exporting to the collector: {e}"))
    }

    /// Exports what is pending and stops the exporter.
    fn finish(self) -> anyhow::Result<u64> {
        let Self { runtime, telemetry, spans, .. } = self;
        runtime
            .block_on(async move { tokio::task::spawn_blocking(move || telemetry.shutdown()).await })?
            .map_err(|e| anyhow::anyhow!("stopping the bench's exporter: {e}"))?;
        Ok(spans.into_inner())
    }
}

fn capture(camera: &str, jpeg: Bytes) -> Capture {
    Capture::synthetic("bench", 0, camera, jpeg)
}

/// The judge: CenterFace in float (the model the pipeline's 8-bit one was quantized from) at
/// the full resolution of the bench's frames.
pub fn judge(tools: &Path, runtime: &Path) -> anyhow::Result<FaceDetector> {
    let mut config = vision_config(tools);
    config.face_model.path = tools.join("models/centerface-dyn.onnx");
    config.face_model.input_max_side = W.max(H);
    // one frame at a time, on every core
    config.intra_threads = config.workers;
    config.workers = 1;
    let vision = Vision::load(&config, None, runtime)?;
    Ok(vision.detector)
}

/// Ground-truth faces the judge finds (score ≥ 0.5, centre inside the true box) in `jpeg`.
fn found(judge: &FaceDetector, jpeg: &[u8], faces: &[PlacedFace]) -> anyhow::Result<Vec<bool>> {
    let frame = crate::vision::decode(jpeg, "image/jpeg")?;
    let dets = judge.detect(&frame, 0.5)?;
    Ok(faces
        .iter()
        .map(|f| {
            dets.iter().any(|d| {
                let [cx, cy] = d.centre();
                cx >= f.x0 && cx <= f.x1 && cy >= f.y0 && cy <= f.y1
            })
        })
        .collect())
}

struct Frame {
    vehicle: usize,
    camera: &'static str,
    raw_jpeg: Bytes,
    faces: Vec<PlacedFace>,
}

pub fn run(o: &VisionBenchOptions, ort_dylib_path: Option<&Path>) -> anyhow::Result<VisionReport> {
    let tools = &o.tools_dir;
    let library = FaceLibrary::load(&tools.join("faces"))?;
    let photos = library.set(o.face_set);
    let mut config = vision_config(tools);
    if let Some(side) = o.input_max_side {
        config.face_model.input_max_side = side;
    }
    if let Some(t) = o.count_threshold {
        config.count_threshold = t;
    }
    if let Some(c) = o.min_confidence {
        config.min_confidence = c;
    }
    if let Some(m) = &o.model {
        config.face_model.path = m.clone();
    }
    let runtime =
        ort_dylib_path.map(Path::to_owned).unwrap_or_else(|| tools.join("onnxruntime/libonnxruntime.so"));
    let vision = Vision::load(&config, None, &runtime)?;
    let judge = judge(tools, &runtime)?;

    // render every vehicle as both cameras see it
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let truths: Vec<GroundTruth> =
        (0..o.vehicles).map(|i| truth(&mut rng, o.seed * 100_000 + i as u64)).collect();
    let mut frames = Vec::new();
    for (i, t) in truths.iter().enumerate() {
        for (k, cam) in config.cameras.iter().enumerate() {
            let (rgb, faces) =
                render_cabin(t, &cam.sections, W, H, photos, k as u64 + 1, crate::sim::camera::TINT_SHARE);
            let mat = crate::vision::mat_from_rgb(W, H, &rgb)?;
            let raw_jpeg = crate::vision::encode_jpeg(&mat)?;
            frames.push(Frame { vehicle: i, camera: if k == 0 { "front" } else { "side" }, raw_jpeg, faces });
        }
    }

    // the pipeline as the agent runs it (`workers` frames at once, each on its own session),
    // in two rounds alternating with the first pass alone and bare inference with the same
    // parallelism, so that the ratios hold on a machine whose load varies
    let (tw, th) = vision.detector.input_size(W as i32, H as i32);
    let (fw, fh) = judge.input_size(W as i32, H as i32);
    let workers = vision.detector.sessions();
    parallel(workers * 2, workers, |_| Ok(vision.detector.time_inference(tw, th, 1).map(drop)?))?; // warm-up
    let slots: Vec<std::sync::Mutex<Option<Processed>>> = frames.iter().map(|_| Default::default()).collect();
    let traced = o.otlp_endpoint.as_deref().map(Traced::start).transpose()?;
    let (mut pipeline_secs, mut first_secs, mut bare_secs, mut traced_secs) = (0.0, 0.0, 0.0, 0.0);
    // a traced pass pays for its export too: it ends when the collector took its spans
    let traced_pass = |traced: &Traced| -> anyhow::Result<f64> {
        let secs = parallel(frames.len(), workers, |i| {
            traced.process(&vision, capture(frames[i].camera, frames[i].raw_jpeg.clone()));
            Ok(())
        })?;
        let flushing = Instant::now();
        traced.flush()?;
        Ok(secs + flushing.elapsed().as_secs_f64())
    };
    for round in 0..2 {
        // the traced pass goes first in the second round, so neither side always runs warmer
        if let (1, Some(traced)) = (round, &traced) {
            traced_secs += traced_pass(traced)?;
        }
        pipeline_secs += parallel(frames.len(), workers, |i| {
            let p = vision.process(capture(frames[i].camera, frames[i].raw_jpeg.clone()));
            if round == 0 {
                *slots[i].lock().unwrap() = Some(p);
            }
            Ok(())
        })?;
        if let (0, Some(traced)) = (round, &traced) {
            traced_secs += traced_pass(traced)?;
        }
        first_secs += parallel(frames.len(), workers, |i| {
            let frame = crate::vision::decode(&frames[i].raw_jpeg, "image/jpeg")?;
            vision.detector.detect(&frame, config.anonymize.threshold)?;
            Ok(())
        })?;
        bare_secs +=
            parallel(frames.len(), workers, |_| Ok(vision.detector.time_inference(tw, th, 1).map(drop)?))?;
    }
    let processed: Vec<Processed> =
        slots.into_iter().map(|s| s.into_inner().unwrap().expect("every frame processed")).collect();
    let passes = 2.0 * frames.len() as f64;
    let pipeline_fps = passes / pipeline_secs;
    let first_pass_fps = passes / first_secs;
    let bare_inference_fps = passes / bare_secs;

    // counting and decisions
    let mut per_vehicle: Vec<Vec<crate::vision::occupancy::FrameCounts>> = vec![Vec::new(); truths.len()];
    let mut quarantined = 0;
    let mut outputs: Vec<Bytes> = Vec::new();
    let mut released = Vec::new();
    let mut frame_scores: Vec<std::collections::BTreeMap<String, Vec<f32>>> = Vec::new();
    for (f, p) in frames.iter().zip(&processed) {
        let (counts, capture, ok) = match p {
            Processed::Released { counts, capture, .. } => (counts, capture, true),
            Processed::Quarantined { counts, capture, .. } => (counts, capture, false),
        };
        frame_scores.push(
            counts
                .iter()
                .flat_map(|c| c.sections.iter().map(move |s| (c.readable, s)))
                .map(|(readable, (name, seen))| {
                    let mut v = seen.counted.clone();
                    if seen.best_below > 0.0 {
                        v.push(seen.best_below);
                    }
                    (if readable { name.clone() } else { format!("{name} (unreadable)") }, v)
                })
                .collect(),
        );
        quarantined += usize::from(!ok);
        per_vehicle[f.vehicle].extend(counts.iter().cloned());
        outputs.push(capture.image.clone());
        released.push(ok);
    }
    // section contrast of clear and tinted frames: what `min_contrast` must separate
    let (mut contrast_clear_min, mut contrast_tinted_max) = (f32::MAX, 0f32);
    for (f, p) in frames.iter().zip(&processed) {
        let (Processed::Released { counts: Some(c), .. } | Processed::Quarantined { counts: Some(c), .. }) =
            p
        else {
            continue;
        };
        if crate::sim::faces::tinted(truths[f.vehicle].vehicle_id, crate::sim::camera::TINT_SHARE) {
            contrast_tinted_max = contrast_tinted_max.max(c.contrast);
        } else {
            contrast_clear_min = contrast_clear_min.min(c.contrast);
        }
    }
    let now = chrono::Utc::now();
    let (mut exact, mut readable_truth, mut unreadable) = (0u64, 0u64, 0u64);
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    let (mut counted_clear, mut exact_counted) = (0u64, 0u64);
    let mut sections: std::collections::BTreeMap<String, [u64; 3]> = Default::default();
    let mut miscounts = Vec::new();
    for (i, (t, counts)) in truths.iter().zip(&per_vehicle).enumerate() {
        let occupancy = fuse(counts, &vision.detector.model_version, config.min_confidence);
        let decision = decide(&occupancy, 0, now, &config.policy);
        let tinted = crate::sim::faces::tinted(t.vehicle_id, crate::sim::camera::TINT_SHARE);
        let total: u32 = ["driver", "front_passenger", "rear_row_1", "rear_row_2"]
            .iter()
            .map(|s| crate::sim::faces::occupants_in(t, s))
            .sum();
        unreadable += u64::from(decision == Decision::Unreadable);
        let truly_violating = !tinted && total < 2;
        match (decision == Decision::ViolationCandidate, truly_violating) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            _ => {}
        }
        if tinted {
            continue;
        }
        readable_truth += 1;
        let got = match &occupancy {
            OccupancyStatus::Counted { occupants, sections: got, .. } => {
                counted_clear += 1;
                exact += u64::from(*occupants == total);
                exact_counted += u64::from(*occupants == total);
                for name in ["driver", "front_passenger", "rear_row_1", "rear_row_2"] {
                    let want = crate::sim::faces::occupants_in(t, name);
                    let have = got.iter().find(|s| s.section == name).map_or(0, |s| s.occupants);
                    let e = sections.entry(name.into()).or_default();
                    e[usize::from(have != want) + usize::from(have > want)] += 1;
                }
                if *occupants == total {
                    continue;
                }
                Some(got)
            }
            _ => None,
        };
        if miscounts.len() < 20 {
            let mut m = Miscount { vehicle: i, sections: Default::default(), scores: Default::default() };
            for name in ["driver", "front_passenger", "rear_row_1", "rear_row_2"] {
                let want = crate::sim::faces::occupants_in(t, name);
                let have = got.map(|g| g.iter().find(|s| s.section == name).map_or(0, |s| s.occupants));
                m.sections.insert(name.into(), (want, have));
            }
            for (f, scores) in frames.iter().zip(&frame_scores).filter(|(f, _)| f.vehicle == i) {
                for (section, s) in scores {
                    m.scores.insert(format!("{}/{section}", f.camera), s.clone());
                }
            }
            miscounts.push(m);
        }
    }

    // anonymization recall and faces released, on the frames' own outputs
    let (mut before, mut after, mut faces_released) = (0u64, 0u64, 0u64);
    let mut ours_hid = Vec::new();
    for ((f, out), ok) in frames.iter().zip(&outputs).zip(&released) {
        let was = found(&judge, &f.raw_jpeg, &f.faces)?;
        let still = if out.is_empty() { vec![false; f.faces.len()] } else { found(&judge, out, &f.faces)? };
        if *ok && !out.is_empty() {
            let dets = judge.detect(&crate::vision::decode(out, "image/jpeg")?, 0.5)?;
            faces_released += dets.len() as u64;
        }
        for (w, s) in was.iter().zip(&still) {
            if *w {
                before += 1;
                after += u64::from(*s);
                ours_hid.push(!*s);
            }
        }
    }
    let anonymization_recall = if before == 0 { 1.0 } else { 1.0 - after as f64 / before as f64 };

    // deface, between two more timed pipeline passes over the same frames (their mean is the
    // pipeline's rate against deface; the first pass above gives the outputs)
    let mut deface = None;
    let mut against_deface = pipeline_fps;
    if !o.skip_deface {
        let pass = || -> anyhow::Result<f64> {
            let secs = parallel(frames.len(), workers, |i| {
                vision.process(capture(frames[i].camera, frames[i].raw_jpeg.clone()));
                Ok(())
            })?;
            Ok(frames.len() as f64 / secs)
        };
        let before = pass()?;
        deface = Some(run_deface(&judge, tools, &frames)?);
        let after = pass()?;
        against_deface = (before + after) / 2.0;
    }
    // bare inference at the full frame size, interleaved with the pipeline's size
    let (mut at_size, mut full) = (0.0, 0.0);
    for _ in 0..10 {
        at_size += vision.detector.time_inference(tw, th, 2)?;
        full += vision.detector.time_inference(fw, fh, 2)?;
    }
    let bare_inference_fps_full = bare_inference_fps * at_size / full;
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Ok(VisionReport {
        exact_count_accuracy: ratio(exact, readable_truth),
        exact_count_accuracy_counted: ratio(exact_counted, counted_clear),
        unreadable_clear_rate: ratio(readable_truth - counted_clear, readable_truth),
        violation_precision: ratio(tp, tp + fp),
        violation_recall: ratio(tp, tp + fn_),
        unreadable_rate: ratio(unreadable, truths.len() as u64),
        faces_released,
        anonymization_recall,
        deface_speedup: deface.as_ref().map(|d| against_deface / d.fps),
        inference_bound_ratio: pipeline_fps / bare_inference_fps,
        tracing_overhead_ratio: traced.as_ref().map(|_| (passes / traced_secs) / pipeline_fps),
        traced_spans: traced.map(Traced::finish).transpose()?,
        vehicles: truths.len(),
        frames: frames.len(),
        inference_input: format!("{tw}x{th}"),
        full_input: format!("{fw}x{fh}"),
        pipeline_fps,
        first_pass_fps,
        bare_inference_fps,
        bare_inference_fps_full,
        workers,
        intra_threads: config.intra_threads,
        deface_fps: deface.as_ref().map(|d| d.fps),
        pipeline_fps_around_deface: deface.as_ref().map(|_| against_deface),
        deface_anonymization_recall: deface.as_ref().map(|d| d.recall),
        recall_at_least_deface: deface.as_ref().map(|d| anonymization_recall >= d.recall),
        deface_recall_agreement: deface.as_ref().map(|d| {
            let agree = d.hid.iter().zip(&ours_hid).filter(|(a, b)| a == b).count();
            agree as f64 / ours_hid.len().max(1) as f64
        }),
        quarantined,
        contrast_clear_min,
        contrast_tinted_max,
        sections,
        miscounts,
        face_set: match o.face_set {
            FaceSet::Tuning => "tuning",
            FaceSet::HeldOut => "held_out",
        },
        model: vision.detector.model_version.clone(),
    })
}

/// Runs `work` on every index of `0..n` from `threads` threads; the seconds it took, or the
/// first error.
fn parallel(
    n: usize,
    threads: usize,
    work: impl Fn(usize) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<f64> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(None);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    if let Err(e) = work(i) {
                        failed.lock().unwrap().get_or_insert(e);
                        next.store(n, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    match failed.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(secs),
    }
}

struct DefaceResult {
    fps: f64,
    recall: f64,
    /// Per ground-truth face the detector found in the raw frame: whether deface hid it.
    hid: Vec<bool>,
}

/// Runs deface with its default options (threshold 0.2, mask scale 1.3, blur, full
/// resolution; the ONNX Runtime backend, which its `auto` picks when installed).
fn run_deface(judge: &FaceDetector, tools: &Path, frames: &[Frame]) -> anyhow::Result<DefaceResult> {
    let exe = tools.join("deface-venv/bin/deface");
    anyhow::ensure!(
        exe.is_file(),
        "{} is missing: run scripts/setup.sh (or pass --skip-deface)",
        exe.display()
    );
    let dir = tempfile::tempdir()?;
    let mut inputs = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let p = dir.path().join(format!("f{i:05}.jpg"));
        std::fs::write(&p, &f.raw_jpeg)?;
        inputs.push(p);
    }
    let time = |files: &[PathBuf]| -> anyhow::Result<f64> {
        let t0 = Instant::now();
        let out = std::process::Command::new(&exe)
            .args(["--backend", "onnxrt"])
            .args(files)
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        anyhow::ensure!(out.status.success(), "deface failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(t0.elapsed().as_secs_f64())
    };
    let one = time(&inputs[..1])?;
    let all = time(&inputs)?;
    let fps = (inputs.len() - 1) as f64 / (all - one).max(1e-6);
    let (mut before, mut after, mut hid) = (0u64, 0u64, Vec::new());
    for (f, p) in frames.iter().zip(&inputs) {
        let out = p.with_file_name(format!("{}_anonymized.jpg", p.file_stem().unwrap().to_string_lossy()));
        let bytes =
            std::fs::read(&out).with_context(|| format!("reading deface output {}", out.display()))?;
        let was = found(judge, &f.raw_jpeg, &f.faces)?;
        let still = found(judge, &bytes, &f.faces)?;
        for (w, s) in was.iter().zip(&still) {
            if *w {
                before += 1;
                after += u64::from(*s);
                hid.push(!*s);
            }
        }
    }
    Ok(DefaceResult { fps, recall: if before == 0 { 1.0 } else { 1.0 - after as f64 / before as f64 }, hid })
}

/// What `bench face-scan` found: JPEG images carved out of the files, and faces in them.
#[derive(Debug, Serialize)]
pub struct FaceScan {
    pub files: usize,
    pub images: usize,
    pub faces: usize,
    /// Highest face score seen (0 when none).
    pub best_score: f32,
}

/// Runs the face detector (score ≥ `threshold`) over every JPEG embedded in the files under
/// `paths` (the buffer's files, a blob directory), carving `FF D8 FF … FF D9` runs out of them,
/// so it needs no knowledge of the storage format.
pub fn face_scan(
    paths: &[PathBuf],
    tools: &Path,
    threshold: f32,
    ort: Option<&Path>,
) -> anyhow::Result<FaceScan> {
    let runtime = ort.map(Path::to_owned).unwrap_or_else(|| tools.join("onnxruntime/libonnxruntime.so"));
    let judge = judge(tools, &runtime)?;
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p)?.filter_map(|e| e.ok().map(|e| e.path())));
        } else if p.is_file() {
            files.push(p);
        }
    }
    let mut scan = FaceScan { files: files.len(), images: 0, faces: 0, best_score: 0.0 };
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let mut at = 0;
        while let Some(start) = find(&bytes[at..], &[0xFF, 0xD8, 0xFF]).map(|i| at + i) {
            // try each end marker until one decodes (an FF D9 may occur inside entropy data)
            let mut end_from = start + 3;
            let mut decoded = false;
            while let Some(end) = find(&bytes[end_from..], &[0xFF, 0xD9]).map(|i| end_from + i + 2) {
                if let Ok(frame) = crate::vision::decode(&bytes[start..end], "image/jpeg") {
                    let faces = judge.detect(&frame, threshold)?;
                    scan.images += 1;
                    scan.faces += faces.len();
                    scan.best_score = faces.iter().map(|f| f.score).fold(scan.best_score, f32::max);
                    at = end;
                    decoded = true;
                    break;
                }
                end_from = end;
            }
            if !decoded {
                at = start + 3;
            }
        }
    }
    Ok(scan)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

//! The face detector: an ONNX model run by ONNX Runtime (loaded at run time from
//! `libonnxruntime.so`, `ort`'s `load-dynamic`), fed and decoded as its [`ModelSpec`] says.
//! CenterFace is the one decoder so far: heatmap, log-scale, offset and landmark maps at
//! stride 4, then non-maximum suppression.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use lanewatch_agent_config::{ChannelOrder, Decoder, ModelSpec, TensorLayout};
use opencv::core::{Mat, Rect, Size};
use opencv::prelude::*;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{Tensor, ValueType};

use super::VisionError;

/// One face, in the coordinates of the frame it was found in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    pub score: f32,
    /// Eyes, nose, mouth corners.
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    pub fn centre(&self) -> [f32; 2] {
        [(self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0]
    }

    fn area(&self) -> f32 {
        (self.x1 - self.x0).max(0.0) * (self.y1 - self.y0).max(0.0)
    }

    pub fn iou(&self, o: &Face) -> f32 {
        let w = (self.x1.min(o.x1) - self.x0.max(o.x0)).max(0.0);
        let h = (self.y1.min(o.y1) - self.y0.max(o.y0)).max(0.0);
        let inter = w * h;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

static RUNTIME: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Loads ONNX Runtime from `path` once per process. A later call with another path gets the
/// first outcome: the library cannot be swapped while the process lives.
pub fn init_runtime(path: &Path) -> Result<(), VisionError> {
    let outcome = RUNTIME.get_or_init(|| {
        if !path.is_file() {
            return Err(format!(
                "onnx runtime library {} does not exist (run scripts/setup.sh, or set vision.runtime_path or ORT_DYLIB_PATH)",
                path.display()
            ));
        }
        let p = path.to_owned();
        // ort panics when the library cannot be loaded or is an incompatible version
        std::panic::catch_unwind(move || {
            ort::init_from(p.display().to_string()).with_name("lanewatch").commit()
        })
        .map_err(|panic| {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".into());
            format!("cannot load onnx runtime {}: {reason}", path.display())
        })?
        .map_err(|err| format!("cannot initialise onnx runtime {}: {err}", path.display()))?;
        Ok(path.to_owned())
    });
    match outcome {
        Ok(_) => Ok(()),
        Err(reason) => Err(VisionError::Runtime(reason.clone())),
    }
}

/// A loaded detector: one ONNX Runtime session per worker, each running one frame at a time.
pub struct FaceDetector {
    /// One session per worker: a frame takes a free one, so frames run side by side.
    states: Vec<Mutex<State>>,
    /// Where the next search for a free session starts.
    next: AtomicUsize,
    spec: ModelSpec,
    /// Per channel (BGR byte order) and byte value: the normalized network input.
    lut: [[f32; 256]; 3],
    /// `<file name>@<first 12 hex of its SHA-256>`.
    pub model_version: String,
    /// What building the sessions added to the process's resident memory (weights, optimized
    /// graphs, the runtime's first arenas): the memory the vision component reports. `None`
    /// where `/proc` cannot tell. Loading happens while the pipeline is built, before its
    /// components run, so their allocations stay out of the measurement.
    pub session_bytes: Option<u64>,
}

/// The session and the input tensors it was fed, kept per input shape so that a frame costs
/// no allocation beyond what ONNX Runtime does for its outputs.
struct State {
    session: Session,
    inputs: HashMap<(i32, i32), Tensor<f32>>,
}

/// Input tensors kept at most (crops of the re-detection come in a few shapes).
const CACHED_INPUTS: usize = 16;

/// A frame resized to the network's input size, ready for [`FaceDetector::detect_in`].
pub struct Prepared {
    /// BGR, `input` wide and high, continuous.
    resized: Mat,
    /// Network input width and height.
    pub input: (i32, i32),
    /// Frame width and height.
    pub frame: (i32, i32),
}

impl Prepared {
    /// Frame pixels per input pixel, horizontally and vertically.
    pub fn scale(&self) -> (f32, f32) {
        (self.frame.0 as f32 / self.input.0 as f32, self.frame.1 as f32 / self.input.1 as f32)
    }

    /// The whole input.
    pub fn full(&self) -> Rect {
        Rect::new(0, 0, self.input.0, self.input.1)
    }
}

impl std::fmt::Debug for FaceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceDetector").field("model", &self.model_version).finish()
    }
}

impl FaceDetector {
    /// Loads the model into `sessions` sessions (one per worker) and checks that its inputs
    /// and outputs fit the spec's decoder. Each session runs with all graph optimizations,
    /// `intra_threads` threads inside an operator and one between (the graph is a chain), and
    /// memory patterns planned per input shape.
    pub fn load(
        spec: &ModelSpec,
        sessions: usize,
        intra_threads: usize,
        cuda: bool,
    ) -> Result<Self, VisionError> {
        let path = &spec.path;
        let bytes = std::fs::read(path).map_err(|err| VisionError::Model {
            path: path.clone(),
            reason: format!("cannot read the model file: {err}"),
        })?;
        let model_err = |reason: String| VisionError::Model { path: path.clone(), reason };
        let new_session = || -> Result<Session, VisionError> {
            let mut builder = Session::builder()
                .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3))
                .and_then(|b| b.with_intra_threads(intra_threads.max(1)))
                .and_then(|b| b.with_inter_threads(1))
                .and_then(|b| b.with_parallel_execution(false))
                .and_then(|b| b.with_memory_pattern(true))
                .map_err(|err| model_err(format!("session options: {err}")))?;
            if cuda {
                builder = builder
                    .with_execution_providers([
                        ort::execution_providers::CUDAExecutionProvider::default().build()
                    ])
                    .map_err(|err| model_err(format!("cuda execution provider: {err}")))?;
            }
            builder
                .commit_from_memory(&bytes)
                .map_err(|err| model_err(format!("not a loadable onnx model: {err}")))
        };
        let rss_before = crate::process::rss_bytes();
        let first = new_session()?;
        check_shapes(spec, &first)
            .map_err(|reason| VisionError::ModelShape { path: path.clone(), reason })?;
        let mut states = vec![Mutex::new(State { session: first, inputs: HashMap::new() })];
        for _ in 1..sessions.max(1) {
            states.push(Mutex::new(State { session: new_session()?, inputs: HashMap::new() }));
        }
        let session_bytes =
            crate::process::rss_bytes().zip(rss_before).map(|(after, before)| after.saturating_sub(before));
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self {
            states,
            next: AtomicUsize::new(0),
            lut: lut(spec),
            spec: spec.clone(),
            model_version: format!("{name}@{}", &digest[..12]),
            session_bytes,
        })
    }

    /// A session for this call: the first free one, else waits for one.
    fn state(&self) -> MutexGuard<'_, State> {
        let n = self.states.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(state) = self.states[(start + i) % n].try_lock() {
                return state;
            }
        }
        self.states[start % n].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sessions, i.e. frames that can be processed at once.
    pub fn sessions(&self) -> usize {
        self.states.len()
    }

    /// Network input size for a frame of `width` × `height`: the longer side scaled to
    /// `input_max_side`, both rounded to the stride.
    pub fn input_size(&self, width: i32, height: i32) -> (i32, i32) {
        input_size(&self.spec, width, height)
    }

    /// The model's stride: input sizes and crop origins are multiples of it.
    pub fn stride(&self) -> i32 {
        self.spec.stride.max(4) as i32
    }

    /// Faces scoring at least `threshold` in a BGR frame, in frame coordinates.
    pub fn detect(&self, bgr: &Mat, threshold: f32) -> Result<Vec<Face>, VisionError> {
        let prepared = self.prepare(bgr)?;
        self.detect_in(&prepared, prepared.full(), threshold)
    }

    /// Resizes `bgr` to the network input size (OpenCV, once per frame).
    pub fn prepare(&self, bgr: &Mat) -> Result<Prepared, VisionError> {
        let (w, h) = (bgr.cols(), bgr.rows());
        if w <= 0 || h <= 0 {
            return Err(VisionError::Frame("empty frame".into()));
        }
        let (tw, th) = self.input_size(w, h);
        let mut resized = Mat::default();
        if (tw, th) == (w, h) {
            bgr.copy_to(&mut resized)
        } else {
            let interpolation =
                if tw < w { opencv::imgproc::INTER_AREA } else { opencv::imgproc::INTER_LINEAR };
            opencv::imgproc::resize(bgr, &mut resized, Size::new(tw, th), 0.0, 0.0, interpolation)
        }
        .map_err(|err| VisionError::Frame(format!("resize: {err}")))?;
        if resized.typ() != opencv::core::CV_8UC3 || !resized.is_continuous() {
            return Err(VisionError::Frame(format!(
                "expected a continuous 8-bit BGR frame, got type {}",
                bgr.typ()
            )));
        }
        Ok(Prepared { resized, input: (tw, th), frame: (w, h) })
    }

    /// Faces scoring at least `threshold` inside `region` of the prepared input (input pixels;
    /// origin and size multiples of the stride, or reaching the input's edge), in frame
    /// coordinates. On a crop the network sees exactly the pixels of the full input there, on
    /// the same stride grid.
    pub fn detect_in(
        &self,
        prepared: &Prepared,
        region: Rect,
        threshold: f32,
    ) -> Result<Vec<Face>, VisionError> {
        let (iw, ih) = prepared.input;
        let stride = self.stride();
        let region = region & Rect::new(0, 0, iw, ih);
        if region.width <= 0 || region.height <= 0 {
            return Ok(Vec::new());
        }
        // the crop's size rounds up to the stride; beyond the input it is zero-padded
        let (cw, ch) = (round_up(region.width, stride), round_up(region.height, stride));
        let px =
            prepared.resized.data_bytes().map_err(|err| VisionError::Frame(format!("frame data: {err}")))?;
        let mut state = self.state();
        let State { session, inputs } = &mut *state;
        let tensor = input_tensor(&self.spec, inputs, cw, ch)?;
        let (_, data) = tensor.extract_tensor_mut();
        fill_input(&self.spec, &self.lut, px, iw as usize, region, (cw as usize, ch as usize), data);
        let mut faces = run_session(&self.spec, session, &*tensor, cw, ch, threshold)?;
        drop(state);
        let (sx, sy) = prepared.scale();
        let (w, h) = (prepared.frame.0 as f32, prepared.frame.1 as f32);
        let (ox, oy) = (region.x as f32, region.y as f32);
        faces.retain(|f| f.x0 < region.width as f32 && f.y0 < region.height as f32);
        for f in &mut faces {
            f.x0 = ((f.x0 + ox) * sx).clamp(0.0, w);
            f.x1 = ((f.x1 + ox) * sx).clamp(0.0, w);
            f.y0 = ((f.y0 + oy) * sy).clamp(0.0, h);
            f.y1 = ((f.y1 + oy) * sy).clamp(0.0, h);
            for l in &mut f.landmarks {
                l[0] = (l[0] + ox) * sx;
                l[1] = (l[1] + oy) * sy;
            }
        }
        Ok(faces)
    }

    /// Seconds per inference of a `tw` × `th` input (the input tensor kept for that size), over
    /// `runs` runs: the bare ONNX Runtime rate, without decoding, resizing or post-processing.
    pub fn time_inference(&self, tw: i32, th: i32, runs: u32) -> Result<f64, VisionError> {
        let mut state = self.state();
        let State { session, inputs } = &mut *state;
        let tensor = input_tensor(&self.spec, inputs, tw, th)?;
        let started = std::time::Instant::now();
        for _ in 0..runs.max(1) {
            session.run(ort::inputs![&*tensor]).map_err(|err| VisionError::Inference(format!("{err}")))?;
        }
        Ok(started.elapsed().as_secs_f64() / f64::from(runs.max(1)))
    }
}

/// The kept input tensor for `cw` × `ch` (zeros when new).
fn input_tensor<'a>(
    spec: &ModelSpec,
    inputs: &'a mut HashMap<(i32, i32), Tensor<f32>>,
    cw: i32,
    ch: i32,
) -> Result<&'a mut Tensor<f32>, VisionError> {
    if !inputs.contains_key(&(cw, ch)) {
        if inputs.len() >= CACHED_INPUTS {
            inputs.clear();
        }
        let shape: Vec<i64> = match spec.layout {
            TensorLayout::Nchw => vec![1, 3, i64::from(ch), i64::from(cw)],
            TensorLayout::Nhwc => vec![1, i64::from(ch), i64::from(cw), 3],
        };
        let tensor = Tensor::from_array((shape, vec![0f32; 3 * (cw * ch) as usize]))
            .map_err(|err| VisionError::Inference(format!("input tensor: {err}")))?;
        inputs.insert((cw, ch), tensor);
    }
    Ok(inputs.get_mut(&(cw, ch)).expect("inserted above"))
}

/// Runs the network on an input of `tw` × `th` and decodes (input coordinates).
fn run_session(
    spec: &ModelSpec,
    session: &mut Session,
    tensor: &Tensor<f32>,
    tw: i32,
    th: i32,
    threshold: f32,
) -> Result<Vec<Face>, VisionError> {
    let outputs =
        session.run(ort::inputs![tensor]).map_err(|err| VisionError::Inference(format!("{err}")))?;
    let extract = |i: usize| {
        outputs[i]
            .try_extract_tensor::<f32>()
            .map(|(_, data)| data)
            .map_err(|err| VisionError::Inference(format!("output {i}: {err}")))
    };
    match spec.decoder {
        Decoder::Centerface => {
            let (heat, scale, offset, landmarks) = (extract(0)?, extract(1)?, extract(2)?, extract(3)?);
            let (gw, gh) = ((tw / 4) as usize, (th / 4) as usize);
            if heat.len() != gw * gh || scale.len() != 2 * gw * gh {
                return Err(VisionError::Inference(format!(
                    "heatmap of {} cells for a {tw}x{th} input, expected {}",
                    heat.len(),
                    gw * gh
                )));
            }
            let faces = decode_centerface(heat, scale, offset, landmarks, gw, gh, threshold);
            Ok(nms(faces, NMS_IOU))
        }
    }
}

/// Overlap above which two detections are one face.
pub const NMS_IOU: f32 = 0.3;

fn round_up(v: i32, to: i32) -> i32 {
    (v + to - 1) / to * to
}

/// See [`FaceDetector::input_size`].
pub fn input_size(spec: &ModelSpec, width: i32, height: i32) -> (i32, i32) {
    let stride = spec.stride.max(4) as i32;
    let scale = spec.input_max_side as f32 / width.max(height) as f32;
    let round = |v: i32| (((v as f32 * scale) / stride as f32).round() as i32).max(1) * stride;
    (round(width), round(height))
}

/// The network channel each byte of a BGR pixel feeds.
fn destination(spec: &ModelSpec) -> [usize; 3] {
    match spec.channels {
        ChannelOrder::Bgr => [0, 1, 2],
        ChannelOrder::Rgb => [2, 1, 0],
    }
}

/// Per BGR byte position and byte value, the network input value: `(v - mean) / std` of the
/// channel that byte feeds.
fn lut(spec: &ModelSpec) -> [[f32; 256]; 3] {
    let mut lut = [[0f32; 256]; 3];
    for (table, nc) in lut.iter_mut().zip(destination(spec)) {
        for (v, out) in table.iter_mut().enumerate() {
            *out = (v as f32 - spec.mean[nc]) / spec.std[nc];
        }
    }
    lut
}

/// Writes `region` of a packed BGR image `width` pixels wide into `out`, a `size.0` × `size.1`
/// input (zero beyond the region), through the lookup table, in the network's layout and
/// channel order.
fn fill_input(
    spec: &ModelSpec,
    lut: &[[f32; 256]; 3],
    bgr: &[u8],
    width: usize,
    region: Rect,
    size: (usize, usize),
    out: &mut [f32],
) {
    let (cw, ch) = size;
    let (rx, ry) = (region.x as usize, region.y as usize);
    let (rw, rh) = ((region.width as usize).min(cw), (region.height as usize).min(ch));
    let plane = cw * ch;
    if rw < cw || rh < ch {
        out.fill(0.0);
    }
    let dst = destination(spec);
    for r in 0..rh {
        let row = &bgr[((ry + r) * width + rx) * 3..((ry + r) * width + rx + rw) * 3];
        match spec.layout {
            TensorLayout::Nchw => {
                let (a, rest) = out.split_at_mut(plane);
                let (b, c) = rest.split_at_mut(plane);
                let mut planes = [a, b, c];
                planes.swap(0, dst[0]); // Rgb: blue feeds channel 2
                let [p0, p1, p2] = planes;
                let at = r * cw;
                let (p0, p1, p2) = (&mut p0[at..at + rw], &mut p1[at..at + rw], &mut p2[at..at + rw]);
                for (i, px) in row.chunks_exact(3).enumerate() {
                    p0[i] = lut[0][usize::from(px[0])];
                    p1[i] = lut[1][usize::from(px[1])];
                    p2[i] = lut[2][usize::from(px[2])];
                }
            }
            TensorLayout::Nhwc => {
                let at = r * cw * 3;
                for (i, px) in row.chunks_exact(3).enumerate() {
                    for c in 0..3 {
                        out[at + i * 3 + dst[c]] = lut[c][usize::from(px[c])];
                    }
                }
            }
        }
    }
}

/// Checks input and output shapes against the decoder; returns the input's name.
fn check_shapes(spec: &ModelSpec, session: &Session) -> Result<String, String> {
    let dims = |t: &ValueType| match t {
        ValueType::Tensor { shape, .. } => Some(shape.to_vec()),
        _ => None,
    };
    let [input] = session.inputs.as_slice() else {
        return Err(format!("expects 1 input, the model has {}", session.inputs.len()));
    };
    let shape = dims(&input.input_type).ok_or("the input is not a tensor")?;
    let channel_axis = match spec.layout {
        TensorLayout::Nchw => 1,
        TensorLayout::Nhwc => 3,
    };
    if shape.len() != 4 || !(shape[channel_axis] == 3 || shape[channel_axis] == -1) {
        return Err(format!("input shape {shape:?} is not a batch of 3-channel images ({:?})", spec.layout));
    }
    let spatial = match spec.layout {
        TensorLayout::Nchw => [shape[2], shape[3]],
        TensorLayout::Nhwc => [shape[1], shape[2]],
    };
    if spatial.iter().any(|d| *d != -1) {
        return Err(format!(
            "input shape {shape:?} is fixed; the detector needs dynamic height and width \
             (scripts/setup.sh rewrites centerface.onnx into centerface-dyn.onnx)"
        ));
    }
    match spec.decoder {
        Decoder::Centerface => {
            let channels: Vec<i64> = session
                .outputs
                .iter()
                .filter_map(|o| dims(&o.output_type))
                .map(|d| d.get(1).copied().unwrap_or(0))
                .collect();
            if channels != [1, 2, 2, 10] {
                return Err(format!(
                    "centerface decoding needs 4 outputs with 1, 2, 2 and 10 channels (heatmap, scale, offset, landmarks), the model has {channels:?}"
                ));
            }
        }
    }
    Ok(input.name.clone())
}

/// Decodes CenterFace maps (each `gh` × `gw`, stride 4) into faces in input coordinates.
pub fn decode_centerface(
    heat: &[f32],
    scale: &[f32],
    offset: &[f32],
    landmarks: &[f32],
    gw: usize,
    gh: usize,
    threshold: f32,
) -> Vec<Face> {
    let plane = gw * gh;
    let (size_w, size_h) = ((gw * 4) as f32, (gh * 4) as f32);
    let mut faces = Vec::new();
    for r in 0..gh {
        for c in 0..gw {
            let i = r * gw + c;
            let score = heat[i];
            if score < threshold {
                continue;
            }
            let s0 = scale[i].exp() * 4.0;
            let s1 = scale[plane + i].exp() * 4.0;
            let (o0, o1) = (offset[i], offset[plane + i]);
            let x0 = ((c as f32 + o1 + 0.5) * 4.0 - s1 / 2.0).clamp(0.0, size_w);
            let y0 = ((r as f32 + o0 + 0.5) * 4.0 - s0 / 2.0).clamp(0.0, size_h);
            let mut lm = [[0f32; 2]; 5];
            if landmarks.len() >= 10 * plane {
                for (j, l) in lm.iter_mut().enumerate() {
                    l[0] = landmarks[(j * 2 + 1) * plane + i] * s1 + x0;
                    l[1] = landmarks[(j * 2) * plane + i] * s0 + y0;
                }
            }
            faces.push(Face {
                x0,
                y0,
                x1: (x0 + s1).min(size_w),
                y1: (y0 + s0).min(size_h),
                score,
                landmarks: lm,
            });
        }
    }
    faces
}

/// Greedy non-maximum suppression: keeps the best-scoring of boxes overlapping above `iou`.
pub fn nms(mut faces: Vec<Face>, iou: f32) -> Vec<Face> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Face> = Vec::new();
    for f in faces {
        if kept.iter().all(|k| k.iou(&f) <= iou) {
            kept.push(f);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_one_peak_into_a_box() {
        // 4 x 4 grid (16 x 16 input); one peak at row 1, column 2
        let (gw, gh) = (4, 4);
        let mut heat = vec![0.0; 16];
        heat[4 + 2] = 0.9;
        heat[0] = 0.1; // below threshold
        let scale = vec![(8.0f32 / 4.0).ln(); 32]; // 8 px high and wide
        let offset = vec![0.0; 32];
        let landmarks = vec![0.5; 160];
        let faces = decode_centerface(&heat, &scale, &offset, &landmarks, gw, gh, 0.5);
        assert_eq!(faces.len(), 1);
        let f = faces[0];
        // centre (2 + 0.5) * 4 = 10, (1 + 0.5) * 4 = 6; 8 px box
        assert!((f.x0 - 6.0).abs() < 1e-4 && (f.x1 - 14.0).abs() < 1e-4, "{f:?}");
        assert!((f.y0 - 2.0).abs() < 1e-4 && (f.y1 - 10.0).abs() < 1e-4, "{f:?}");
        assert_eq!(f.centre(), [10.0, 6.0]);
        assert!((f.landmarks[0][0] - 10.0).abs() < 1e-4, "landmark at half the box");
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let face = |x0: f32, score: f32| Face {
            x0,
            y0: 0.0,
            x1: x0 + 10.0,
            y1: 10.0,
            score,
            landmarks: [[0.0; 2]; 5],
        };
        let kept = nms(vec![face(0.0, 0.6), face(1.0, 0.9), face(50.0, 0.3)], 0.3);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].x0, 50.0);
    }

    #[test]
    fn input_size_scales_the_long_side_and_rounds_to_the_stride() {
        let spec = ModelSpec {
            path: "m.onnx".into(),
            decoder: Decoder::Centerface,
            layout: TensorLayout::Nchw,
            channels: ChannelOrder::Bgr,
            mean: [0.0; 3],
            std: [1.0; 3],
            input_max_side: 640,
            stride: 32,
        };
        assert_eq!(input_size(&spec, 640, 360), (640, 352));
        assert_eq!(input_size(&spec, 1280, 720), (640, 352));
        assert_eq!(input_size(&spec, 100, 10), (640, 64));
        let rgb = ModelSpec { channels: ChannelOrder::Rgb, mean: [1.0, 0.0, 0.0], ..spec.clone() };
        let mut data = vec![9.0; 3];
        fill_input(&rgb, &lut(&rgb), &[1, 2, 3], 1, Rect::new(0, 0, 1, 1), (1, 1), &mut data);
        assert_eq!(data, vec![2.0, 2.0, 1.0], "rgb order flips bgr pixels; mean of the red channel");
        let nhwc = ModelSpec { layout: TensorLayout::Nhwc, ..rgb };
        fill_input(&nhwc, &lut(&nhwc), &[1, 2, 3], 1, Rect::new(0, 0, 1, 1), (1, 1), &mut data);
        assert_eq!(data, vec![2.0, 2.0, 1.0]);
    }
}

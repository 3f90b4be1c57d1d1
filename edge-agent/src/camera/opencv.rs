//! The OpenCV camera (`kind = "opencv"`): one `VideoCapture` on a [`ThreadedCamera`] thread.
//!
//! The uri is a V4L2 device (`/dev/video0`, or an index such as `0`), a video file, an image
//! sequence (`frames/%04d.jpg`) or a GStreamer pipeline ending in `appsink`. Devices and
//! pipelines deliver at their own rate; files and sequences are paced at the camera's `fps`
//! and reopened from the start at their end (a file that vanished then fails to open, which
//! is reported like an unplugged device). Frames are converted from OpenCV's BGR to RGB.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use opencv::core::{CV_8U, Mat};
use opencv::prelude::*;
use opencv::{imgproc, videoio};

use super::{FrameSink, ThreadedCamera};
use crate::config::OpencvBackend;
use crate::domain::{Frame, FramePayload};

/// What an OpenCV camera opens.
#[derive(Debug, Clone, PartialEq)]
pub struct OpencvSpec {
    pub camera_id: String,
    /// As configured, relative paths already resolved against the config file's directory.
    pub uri: String,
    pub backend: OpencvBackend,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    /// Pace of files and image sequences (the camera's `fps`).
    pub pace_fps: u32,
}

impl OpencvSpec {
    /// Whether the uri is a live source (a device or a GStreamer pipeline) that sets its own pace.
    pub fn is_live(&self) -> bool {
        let uri = self.uri.trim();
        uri.parse::<i32>().is_ok()
            || uri.starts_with("/dev/")
            || uri.contains('!')
            || matches!(self.backend, OpencvBackend::V4l2 | OpencvBackend::Gstreamer)
    }

    fn describe(&self) -> String {
        format!("opencv source {:?}", self.uri)
    }

    fn api(&self) -> i32 {
        match self.backend {
            OpencvBackend::Any => videoio::CAP_ANY,
            OpencvBackend::V4l2 => videoio::CAP_V4L2,
            OpencvBackend::Ffmpeg => videoio::CAP_FFMPEG,
            OpencvBackend::Gstreamer => videoio::CAP_GSTREAMER,
            OpencvBackend::Images => videoio::CAP_IMAGES,
        }
    }
}

/// Opens the source on its own thread; frames follow.
pub fn open(spec: OpencvSpec) -> anyhow::Result<ThreadedCamera> {
    let camera_id = spec.camera_id.clone();
    ThreadedCamera::spawn(&camera_id, spec.describe(), move |sink| run(&spec, sink))
}

fn open_capture(spec: &OpencvSpec) -> anyhow::Result<videoio::VideoCapture> {
    let what =
        || format!("camera {}: cannot open {} (backend {:?})", spec.camera_id, spec.describe(), spec.backend);
    let mut cap = match spec.uri.trim().parse::<i32>() {
        Ok(index) => videoio::VideoCapture::new(index, spec.api()),
        Err(_) => videoio::VideoCapture::from_file(&spec.uri, spec.api()),
    }
    .with_context(what)?;
    if !cap.is_opened().with_context(what)? {
        anyhow::bail!("{}", what());
    }
    // hints: a device may pick the nearest mode, a file ignores them
    let hints = [
        (videoio::CAP_PROP_FRAME_WIDTH, spec.width.map(f64::from)),
        (videoio::CAP_PROP_FRAME_HEIGHT, spec.height.map(f64::from)),
        (videoio::CAP_PROP_FPS, spec.fps),
    ];
    for (prop, value) in hints {
        if let Some(value) = value {
            let _ = cap.set(prop, value);
        }
    }
    Ok(cap)
}

fn run(spec: &OpencvSpec, sink: &FrameSink) -> anyhow::Result<()> {
    let live = spec.is_live();
    let mut cap = open_capture(spec)?;
    tracing::info!(camera = %spec.camera_id, uri = %spec.uri, live, "opencv source opened");
    let period = Duration::from_secs_f64(1.0 / f64::from(spec.pace_fps.max(1)));
    let mut next = Instant::now();
    let mut bgr = Mat::default();
    let mut empty_in_a_row = 0u32;
    while !sink.stopped() {
        if !live {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next = (next + period).max(Instant::now() - period);
        }
        let got = cap
            .read(&mut bgr)
            .with_context(|| format!("camera {}: reading {}", spec.camera_id, spec.describe()))?;
        if !got || bgr.empty() {
            empty_in_a_row += 1;
            if live || empty_in_a_row > 1 {
                anyhow::bail!("camera {}: {} delivers no frame", spec.camera_id, spec.describe());
            }
            // end of a file or sequence: start over (fails if the file went away)
            cap = open_capture(spec)?;
            continue;
        }
        empty_in_a_row = 0;
        let t = chrono::Utc::now();
        let payload =
            to_rgb(&bgr).with_context(|| format!("camera {}: converting a frame", spec.camera_id))?;
        if !sink.send(Frame { t, payload }) {
            break;
        }
    }
    Ok(())
}

/// An 8-bit BGR, BGRA or grey `Mat` as an RGB frame payload.
fn to_rgb(mat: &Mat) -> anyhow::Result<FramePayload> {
    anyhow::ensure!(mat.depth() == CV_8U, "unsupported pixel depth {} (8-bit expected)", mat.depth());
    let code = match mat.channels() {
        1 => imgproc::COLOR_GRAY2RGB,
        3 => imgproc::COLOR_BGR2RGB,
        4 => imgproc::COLOR_BGRA2RGB,
        n => anyhow::bail!("unsupported channel count {n}"),
    };
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(mat, &mut rgb, code)?;
    let pixels = rgb.data_bytes()?.to_vec();
    Ok(FramePayload::Rgb { width: rgb.cols() as u32, height: rgb.rows() as u32, pixels: Arc::new(pixels) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::CameraSource;

    fn spec(uri: &str) -> OpencvSpec {
        OpencvSpec {
            camera_id: "front".into(),
            uri: uri.into(),
            backend: OpencvBackend::Any,
            width: None,
            height: None,
            fps: None,
            pace_fps: 50,
        }
    }

    #[test]
    fn live_sources_are_recognised() {
        assert!(spec("0").is_live());
        assert!(spec("/dev/video2").is_live());
        assert!(spec("videotestsrc ! videoconvert ! appsink").is_live());
        assert!(!spec("clips/lane.mp4").is_live());
        assert!(!spec("frames/%04d.jpg").is_live());
    }

    #[tokio::test]
    async fn image_sequence_loops_as_rgb_frames() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3u8 {
            let img = image::RgbImage::from_pixel(48, 32, image::Rgb([200, 40 * i, 10]));
            img.save(dir.path().join(format!("f{i:04}.png"))).unwrap();
        }
        let uri = dir.path().join("f%04d.png").to_string_lossy().into_owned();
        let mut cam = open(spec(&uri)).unwrap();
        let mut greens = vec![];
        for _ in 0..5 {
            let frame = cam.next_frame().await.unwrap();
            match frame.payload {
                FramePayload::Rgb { width, height, pixels } => {
                    assert_eq!((width, height), (48, 32));
                    assert_eq!(pixels[0], 200, "red channel first");
                    greens.push(pixels[1]);
                }
                FramePayload::Encoded { .. } => panic!("raw frames expected"),
            }
        }
        assert_eq!(greens, vec![0, 40, 80, 0, 40], "starts over at the end");
    }

    #[tokio::test]
    async fn a_missing_file_names_camera_and_source() {
        let mut cam = open(spec("/nonexistent/lanewatch/clip.mp4")).unwrap();
        let err = format!("{:#}", cam.next_frame().await.unwrap_err());
        assert!(
            err.starts_with("camera front: cannot open opencv source \"/nonexistent/lanewatch/clip.mp4\""),
            "{err}"
        );
    }
}

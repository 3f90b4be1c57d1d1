//! Real cameras: OpenCV `VideoCapture` ([`opencv`]: V4L2 devices, video files, image sequences,
//! GStreamer pipelines) and GigE Vision through Aravis ([`gige`]), both behind the
//! [`CameraSource`] seam as a [`ThreadedCamera`].
//!
//! Camera I/O blocks (a `read` waits for the sensor, Aravis pops buffers with a timeout), so each
//! open source runs on its own OS thread, never on the async runtime. The thread opens the
//! device, grabs frames, stamps each with the wall clock at the grab and hands them to the
//! acquire component through a small bounded channel; when the channel is full the newest frame
//! is dropped (counted), so a slow consumer never makes the device queue stale frames. Dropping
//! the [`ThreadedCamera`] asks the thread to stop; it releases the device at its next grab.
//! A failure to open or to read ends the thread with an error naming the camera and the
//! source; the acquire component returns it and the supervisor reopens the source with backoff.
//! The agent waits for every camera thread to end before its process exits
//! ([`wait_for_camera_threads`]): OpenCV's and GStreamer's C++ statics are destroyed at exit,
//! and a thread still inside them then crashes the process (SIGSEGV after a clean drain).

pub mod gige;
pub mod opencv;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::config::{CameraConfig, CameraSourceConfig, SiteConfig};
use crate::domain::Frame;
use crate::sim::SharedWorld;
use crate::sim::camera::{CameraView, SimCamera};
use crate::sources::{CameraSource, FileReplayCamera, OpenCamera};

/// How each (re)start of `cam`'s acquire component opens its source.
pub fn opener(
    cam: &CameraConfig,
    site: &SiteConfig,
    config_dir: Option<&std::path::Path>,
    world: &SharedWorld,
) -> anyhow::Result<OpenCamera> {
    let (id, fps) = (cam.id.clone(), cam.fps);
    Ok(match &cam.source {
        CameraSourceConfig::Simulator { width, height } => {
            let view = CameraView::for_lanes(*width, *height, &cam.lanes, site.lanes, site.lane_width_m);
            let world = world.clone();
            Arc::new(move || Ok(Box::new(SimCamera::new(world.clone(), view, fps)) as Box<dyn CameraSource>))
        }
        CameraSourceConfig::FileReplay { path } => {
            // listed once: a file that vanishes later fails its read, naming the file
            let full = crate::config::resolve(config_dir, path);
            let files =
                crate::config::replay_files(&full).with_context(|| format!("listing {}", full.display()))?;
            Arc::new(
                move || Ok(Box::new(FileReplayCamera::new(files.clone(), fps)?) as Box<dyn CameraSource>),
            )
        }
        CameraSourceConfig::Opencv { uri, backend, width, height, fps: hint } => {
            let is_path = !(uri.trim().parse::<i32>().is_ok() || uri.contains('!') || uri.contains("://"));
            let uri = if is_path {
                crate::config::resolve(config_dir, std::path::Path::new(uri)).to_string_lossy().into_owned()
            } else {
                uri.clone()
            };
            let spec = opencv::OpencvSpec {
                camera_id: id,
                uri,
                backend: *backend,
                width: *width,
                height: *height,
                fps: *hint,
                pace_fps: fps,
            };
            Arc::new(move || Ok(Box::new(opencv::open(spec.clone())?) as Box<dyn CameraSource>))
        }
        CameraSourceConfig::Gige { device_id, exposure_us, gain_db, pixel_format, packet_size } => {
            let spec = gige::GigeSpec {
                camera_id: id,
                device_id: device_id.clone(),
                exposure_us: *exposure_us,
                gain_db: *gain_db,
                pixel_format: pixel_format.clone(),
                packet_size: *packet_size,
            };
            Arc::new(move || Ok(Box::new(gige::open(spec.clone())?) as Box<dyn CameraSource>))
        }
    })
}

/// Frames queued between the camera thread and the acquire component.
const QUEUE_FRAMES: usize = 4;

/// The camera thread's end of the channel.
pub struct FrameSink {
    tx: mpsc::Sender<anyhow::Result<Frame>>,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    /// The thread's CPU time in nanoseconds, as of its last frame.
    cpu_ns: Arc<AtomicU64>,
}

impl FrameSink {
    /// Hands a frame over; `false` once the source was dropped (the thread should return).
    pub fn send(&self, frame: Frame) -> bool {
        if self.stopped() {
            return false;
        }
        let cpu = u64::try_from(crate::load::thread_cpu().as_nanos()).unwrap_or(u64::MAX);
        self.cpu_ns.store(cpu, Ordering::Relaxed);
        match self.tx.try_send(Ok(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether the source was dropped.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.tx.is_closed()
    }
}

/// A [`CameraSource`] whose blocking I/O runs on a dedicated thread.
pub struct ThreadedCamera {
    rx: mpsc::Receiver<anyhow::Result<Frame>>,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    cpu_ns: Arc<AtomicU64>,
    describe: String,
}

impl ThreadedCamera {
    /// Starts `body` on a new thread named after the camera. `describe` names the source in
    /// errors (e.g. `opencv source "/dev/video0"`). `body` returns when [`FrameSink::send`] says
    /// so (`Ok`) or when the device fails (`Err`); either way the consumer sees an error next.
    pub fn spawn(
        camera_id: &str,
        describe: String,
        body: impl FnOnce(&FrameSink) -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let cpu_ns = Arc::new(AtomicU64::new(0));
        let sink = FrameSink { tx, stop: stop.clone(), dropped: dropped.clone(), cpu_ns: cpu_ns.clone() };
        let what = describe.clone();
        let live = LiveThread::enter();
        std::thread::Builder::new()
            .name(format!("camera-{camera_id}"))
            .spawn(move || {
                let _live = live;
                let end = match body(&sink) {
                    Ok(()) => anyhow::anyhow!("{what} ended"),
                    Err(err) => err,
                };
                if !sink.stopped() {
                    // the queue may be full: wait for room, the consumer must see why we ended
                    let _ = sink.tx.blocking_send(Err(end));
                }
            })
            .map_err(|err| anyhow::anyhow!("cannot start the thread of {describe}: {err}"))?;
        Ok(Self { rx, stop, dropped, cpu_ns, describe })
    }

    /// Frames dropped because the consumer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Camera threads not yet ended, and a condition signalled as each ends.
static LIVE_THREADS: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// Counts one camera thread as live until dropped (on the thread, when it ends).
struct LiveThread;

impl LiveThread {
    fn enter() -> Self {
        *LIVE_THREADS.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        Self
    }
}

impl Drop for LiveThread {
    fn drop(&mut self) {
        let mut live = LIVE_THREADS.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *live -= 1;
        LIVE_THREADS.1.notify_all();
    }
}

/// Blocks until every camera thread has ended (their cameras were dropped, so each stops at its
/// next grab) or `within` passed; the number still live. The agent calls it before it exits.
pub fn wait_for_camera_threads(within: std::time::Duration) -> usize {
    let live = LIVE_THREADS.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (live, _) = LIVE_THREADS
        .1
        .wait_timeout_while(live, within, |n| *n > 0)
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *live
}

impl Drop for ThreadedCamera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl CameraSource for ThreadedCamera {
    fn next_frame(&mut self) -> BoxFuture<'_, anyhow::Result<Frame>> {
        Box::pin(async move {
            match self.rx.recv().await {
                Some(frame) => frame,
                None => anyhow::bail!("{} thread ended", self.describe),
            }
        })
    }

    fn state(&self) -> Option<crate::state::CameraSourceState> {
        Some(crate::state::CameraSourceState {
            source: self.describe.clone(),
            dropped_frames: self.dropped(),
        })
    }

    fn thread_cpu(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed)))
    }
}

/// Expands 8-bit grey pixels to RGB.
pub fn grey_to_rgb(grey: &[u8]) -> Vec<u8> {
    grey.iter().flat_map(|&v| [v, v, v]).collect()
}

/// The colour of each position of a 2×2 Bayer tile, row-major: 0 red, 1 green, 2 blue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BayerPattern(pub [u8; 4]);

impl BayerPattern {
    pub const RG: Self = Self([0, 1, 1, 2]);
    pub const GR: Self = Self([1, 0, 2, 1]);
    pub const GB: Self = Self([1, 2, 0, 1]);
    pub const BG: Self = Self([2, 1, 1, 0]);
}

/// Demosaics an 8-bit Bayer image by 2×2 tiles: every pixel of a tile gets the tile's red,
/// mean green and blue. Half the chroma resolution, which evidence images and occupant
/// counting tolerate; odd last rows/columns reuse the tile before them.
pub fn debayer_tiles(raw: &[u8], width: usize, height: usize, pattern: BayerPattern) -> Vec<u8> {
    let mut out = vec![0u8; width * height * 3];
    if width < 2 || height < 2 || raw.len() < width * height {
        return out;
    }
    for ty in (0..height).step_by(2) {
        let y0 = ty.min(height - 2);
        for tx in (0..width).step_by(2) {
            let x0 = tx.min(width - 2);
            let mut sum = [0u32; 3];
            let mut count = [0u32; 3];
            for (i, (dx, dy)) in [(0, 0), (1, 0), (0, 1), (1, 1)].into_iter().enumerate() {
                let c = usize::from(pattern.0[i]);
                sum[c] += u32::from(raw[(y0 + dy) * width + x0 + dx]);
                count[c] += 1;
            }
            let rgb = [0, 1, 2].map(|c| (sum[c] / count[c].max(1)) as u8);
            for y in ty..(ty + 2).min(height) {
                for x in tx..(tx + 2).min(width) {
                    out[(y * width + x) * 3..][..3].copy_from_slice(&rgb);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_waits_for_camera_threads_to_leave_their_device() {
        let released = Arc::new(AtomicBool::new(false));
        let flag = released.clone();
        let cam = ThreadedCamera::spawn("w", "slow source".into(), move |sink| {
            while !sink.stopped() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            // releasing a device takes a while
            std::thread::sleep(std::time::Duration::from_millis(100));
            flag.store(true, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        drop(cam);
        assert_eq!(wait_for_camera_threads(std::time::Duration::from_secs(10)), 0);
        assert!(released.load(Ordering::SeqCst), "the wait returned before the thread ended");
    }
    use crate::domain::FramePayload;

    #[test]
    fn debayer_rg_tile() {
        // R G
        // G B
        let raw = [200, 100, 50, 10];
        let rgb = debayer_tiles(&raw, 2, 2, BayerPattern::RG);
        assert_eq!(&rgb[..3], &[200, 75, 10]);
        assert_eq!(rgb.len(), 12);
        assert!(rgb.chunks(3).all(|p| p == [200, 75, 10]));
        let bg = debayer_tiles(&raw, 2, 2, BayerPattern::BG);
        assert_eq!(&bg[..3], &[10, 75, 200]);
    }

    #[test]
    fn grey_expands() {
        assert_eq!(grey_to_rgb(&[1, 2]), vec![1, 1, 1, 2, 2, 2]);
    }

    #[tokio::test]
    async fn threaded_camera_delivers_then_reports_the_end() {
        let mut cam = ThreadedCamera::spawn("t", "test source".into(), |sink| {
            for i in 0..2u8 {
                let frame = Frame {
                    t: chrono::Utc::now(),
                    payload: FramePayload::Rgb { width: 1, height: 1, pixels: Arc::new(vec![i, i, i]) },
                };
                if !sink.send(frame) {
                    return Ok(());
                }
            }
            anyhow::bail!("device unplugged")
        })
        .unwrap();
        for _ in 0..2 {
            cam.next_frame().await.unwrap();
        }
        let err = cam.next_frame().await.unwrap_err();
        assert_eq!(err.to_string(), "device unplugged");
    }
}

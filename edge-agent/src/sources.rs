//! Sensor source seams: a [`ScanSource`] yields LIDAR scans, a [`CameraSource`] yields frames.
//!
//! Scans come from the SICK driver (`lidar::driver`, also fed by the simulated scanner of
//! `sim::sick_server` over TCP) or from a recording (`lidar::recording`); frames from the
//! simulator (`sim::camera`), image files, OpenCV `VideoCapture` or GigE Vision (`camera/`).
//! [`FileReplayCamera`] loops over image files and passes their bytes through unchanged.
//! A camera source is made by an [`OpenCamera`] each time its acquire component (re)starts, so
//! a restart after a stall or a failure tears the old source down and opens it afresh.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::domain::{Frame, FramePayload, Scan, ScanGeometry};
use crate::state::{CameraSourceState, LidarState};

pub trait ScanSource: Send + 'static {
    fn geometry(&self) -> ScanGeometry;
    /// Waits for and returns the next scan. Cancel-safe: dropping the future loses no scan.
    fn next_scan(&mut self) -> BoxFuture<'_, anyhow::Result<Scan>>;
    /// Health and counters: the sense component's typed state.
    fn state(&self) -> Option<LidarState> {
        None
    }
}

pub trait CameraSource: Send + 'static {
    /// Waits for and returns the next frame.
    fn next_frame(&mut self) -> BoxFuture<'_, anyhow::Result<Frame>>;
    /// Health and counters, part of the acquire component's typed state.
    fn state(&self) -> Option<CameraSourceState> {
        None
    }
    /// The CPU time the source's own thread has used (as of its last frame), for sources that
    /// grab on a thread of their own; the acquire component counts it as its busy time.
    fn thread_cpu(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Opens a camera's source; called at every (re)start of its acquire component. It must not
/// block: sources with blocking I/O open on their own thread and report failures as frames' errors.
pub type OpenCamera = std::sync::Arc<dyn Fn() -> anyhow::Result<Box<dyn CameraSource>> + Send + Sync>;

/// Loops over the images of a directory (sorted by name) at `fps`, stamped with the time they
/// are "taken"; the file bytes are passed through unchanged.
pub struct FileReplayCamera {
    files: Vec<PathBuf>,
    next: usize,
    interval: tokio::time::Interval,
}

impl FileReplayCamera {
    pub fn new(files: Vec<PathBuf>, fps: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(!files.is_empty(), "file replay has no image files");
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(fps)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Ok(Self { files, next: 0, interval })
    }
}

pub fn content_type_of(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "image/png",
        _ => "image/jpeg",
    }
}

impl CameraSource for FileReplayCamera {
    fn next_frame(&mut self) -> BoxFuture<'_, anyhow::Result<Frame>> {
        Box::pin(async move {
            self.interval.tick().await;
            let path = &self.files[self.next % self.files.len()];
            self.next += 1;
            let bytes = tokio::fs::read(path)
                .await
                .with_context(|| format!("reading replay image {}", path.display()))?;
            Ok(Frame {
                t: chrono::Utc::now(),
                payload: FramePayload::Encoded {
                    bytes: Bytes::from(bytes),
                    content_type: content_type_of(path),
                },
            })
        })
    }
}

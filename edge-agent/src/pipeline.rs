//! Pipeline wiring: builds the sources, bounded channels and components from the config.
//!
//! sense → detect → trigger → acquire-<camera> → buffer → uplink. Each arrow is a bounded
//! mpsc channel whose receiver lives outside the actor (so a restart keeps queued items) and
//! whose sender is an [`Outlet`] that a stage closes when its input ended, so shutdown drains
//! downstream in order.
//!
//! Vision seam: infer/anonymize does not exist yet. It will sit between acquire and buffer as
//! one more stage on the capture channel; until then captures carry occupancy `unknown` and
//! the simulated frames show no people.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{Mutex, mpsc};

use crate::acquire::AcquireComponent;
use crate::buffer::{Buffer, BufferError};
use crate::config::{AgentConfig, CameraSourceConfig};
use crate::detect::DetectComponent;
use crate::domain::{Capture, Scan, ScanGeometry};
use crate::sim::camera::{CameraView, SimCamera};
use crate::sim::lidar::SimScanSource;
use crate::sim::{SharedWorld, TrafficParams, World};
use crate::sources::{CameraSource, FileReplayCamera, ScanSource};
use crate::supervisor::{Component, ComponentCtx, RunFuture};
use crate::trigger::{CameraRoute, TriggerComponent};

const CHANNEL_CAPACITY: usize = 256;

/// The sending side of a stage's output; shared by restarts and closed once when input ends.
pub struct Outlet<T>(Arc<std::sync::Mutex<Option<mpsc::Sender<T>>>>);

impl<T> Clone for Outlet<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Outlet<T> {
    pub fn new(tx: mpsc::Sender<T>) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(tx))))
    }

    /// An outlet that is already closed (tests).
    pub fn closed() -> Self {
        Self(Arc::new(std::sync::Mutex::new(None)))
    }

    pub async fn send(&self, item: T) -> anyhow::Result<()> {
        let tx = self.0.lock().unwrap().clone();
        match tx {
            Some(tx) => tx.send(item).await.map_err(|_| anyhow::anyhow!("downstream stage is gone")),
            None => anyhow::bail!("output already closed"),
        }
    }

    /// Drops the sender: downstream sees the end of input once queued items are consumed.
    pub fn close(&self) {
        self.0.lock().unwrap().take();
    }
}

fn channel<T>() -> (Outlet<T>, Arc<Mutex<mpsc::Receiver<T>>>) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    (Outlet::new(tx), Arc::new(Mutex::new(rx)))
}

/// Everything main needs after building.
pub struct Pipeline {
    pub components: Vec<Arc<dyn Component>>,
    pub buffer: Buffer,
}

/// Builds the pipeline stages (not the uplink) from a validated config.
pub fn build(config: &AgentConfig, config_dir: Option<&Path>) -> anyhow::Result<Pipeline> {
    let buffer_path = crate::config::resolve(config_dir, &config.buffer.path);
    let buffer = Buffer::open(&buffer_path, config.buffer.max_bytes)
        .with_context(|| format!("opening buffer {}", buffer_path.display()))?;

    let mut world = World::new(
        TrafficParams::from_config(&config.simulator, config.site.lanes, config.site.lane_width_m),
        config.simulator.seed,
        chrono::Utc::now(),
    );
    if let Some(path) = &config.simulator.ground_truth_path {
        world.write_ground_truth_to(&crate::config::resolve(config_dir, path))?;
    }
    let world = SharedWorld::new(world);
    let geometry = ScanGeometry {
        mounting_height_m: config.lidar.mounting_height_m,
        mount_y_m: f64::from(config.site.lanes) * config.site.lane_width_m / 2.0,
        fov_deg: config.lidar.fov_deg,
        angular_step_deg: config.lidar.angular_step_deg,
        lanes: config.site.lanes,
        lane_width_m: config.site.lane_width_m,
    };
    let scan_source: Box<dyn ScanSource> =
        Box::new(SimScanSource::new(world.clone(), geometry, config.lidar.scan_hz, config.simulator.seed));

    let (scan_out, scan_in) = channel::<Scan>();
    let (det_out, det_in) = channel();
    // every acquire stage gets its own outlet on the one capture channel
    let (cap_tx, cap_rx) = mpsc::channel::<Capture>(CHANNEL_CAPACITY);
    let cap_in = Arc::new(Mutex::new(cap_rx));

    let mut components: Vec<Arc<dyn Component>> = vec![
        Arc::new(SenseComponent { source: Arc::new(Mutex::new(scan_source)), output: scan_out }),
        Arc::new(DetectComponent { geometry, input: scan_in, output: det_out }),
    ];
    let mut routes = Vec::new();
    for cam in &config.cameras {
        let source: Box<dyn CameraSource> = match &cam.source {
            CameraSourceConfig::Simulator { width, height } => {
                let view = CameraView::for_lanes(
                    *width,
                    *height,
                    &cam.lanes,
                    config.site.lanes,
                    config.site.lane_width_m,
                );
                Box::new(SimCamera::new(world.clone(), view, cam.fps))
            }
            CameraSourceConfig::FileReplay { path } => {
                let full: PathBuf = crate::config::resolve(config_dir, path);
                let files = crate::config::replay_files(&full)
                    .with_context(|| format!("listing {}", full.display()))?;
                Box::new(FileReplayCamera::new(files, cam.fps)?)
            }
        };
        let (req_out, req_in) = channel();
        routes.push(CameraRoute {
            camera_id: cam.id.clone(),
            lanes: cam.lanes.clone(),
            trigger_delay_ms: cam.trigger_delay_ms,
            output: req_out,
        });
        components.push(Arc::new(AcquireComponent {
            camera_id: cam.id.clone(),
            site_id: config.site_id.clone(),
            config_version: config.config_version,
            ring_frames: cam.ring_frames,
            source: Arc::new(Mutex::new(source)),
            input: req_in,
            output: Outlet::new(cap_tx.clone()),
        }));
    }
    drop(cap_tx);
    components.insert(2, Arc::new(TriggerComponent { input: det_in, routes }));
    components.push(Arc::new(BufferWriterComponent {
        buffer: buffer.clone(),
        input: cap_in,
        retry: Default::default(),
    }));
    Ok(Pipeline { components, buffer })
}

/// The `sense` component: reads scans from the scan source until shutdown.
pub struct SenseComponent {
    pub source: Arc<Mutex<Box<dyn ScanSource>>>,
    pub output: Outlet<Scan>,
}

impl Component for SenseComponent {
    fn name(&self) -> String {
        "sense".into()
    }

    fn run(&self, mut ctx: ComponentCtx) -> RunFuture {
        let (source, output) = (self.source.clone(), self.output.clone());
        Box::pin(async move {
            let mut source = source.lock().await;
            loop {
                tokio::select! {
                    biased;
                    () = ctx.shutting_down() => break,
                    scan = source.next_scan() => {
                        output.send(scan.context("reading scan")?).await?;
                        ctx.processed(1);
                    }
                }
            }
            tracing::info!("scan source stopped");
            output.close();
            Ok(())
        })
    }
}

/// The `buffer` component: appends captures durably; a capture whose write failed is retried
/// after the restart.
pub struct BufferWriterComponent {
    pub buffer: Buffer,
    pub input: Arc<Mutex<mpsc::Receiver<Capture>>>,
    pub retry: Arc<std::sync::Mutex<Option<Capture>>>,
}

impl Component for BufferWriterComponent {
    fn name(&self) -> String {
        "buffer".into()
    }

    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        let (buffer, input, retry) = (self.buffer.clone(), self.input.clone(), self.retry.clone());
        Box::pin(async move {
            let mut input = input.lock().await;
            loop {
                let next = retry.lock().unwrap().take();
                let capture = match next {
                    Some(capture) => capture,
                    None => match input.recv().await {
                        Some(capture) => capture,
                        None => break,
                    },
                };
                let b = buffer.clone();
                let c = capture.clone();
                let result =
                    tokio::task::spawn_blocking(move || b.append(&c)).await.context("buffer append task")?;
                match result {
                    Ok(seq) => {
                        tracing::debug!(capture_id = %capture.meta.capture_id, seq, lane = capture.meta.lane, "capture buffered");
                        ctx.processed(1);
                    }
                    Err(err @ BufferError::Full { .. }) => {
                        tracing::warn!(capture_id = %capture.meta.capture_id, error = %err, "capture refused");
                    }
                    Err(err) => {
                        *retry.lock().unwrap() = Some(capture);
                        return Err(err).context("appending capture");
                    }
                }
                ctx.detail(serde_json::to_value(buffer.stats())?);
            }
            Ok(())
        })
    }
}

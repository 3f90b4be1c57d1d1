//! Pipeline wiring: builds the sources, bounded channels and components from the config.
//!
//! sense → detect → trigger → acquire-<camera> → buffer → uplink. Each arrow is a bounded
//! mpsc channel ([`crate::stage`]) whose receiver lives outside the actor (so a restart keeps
//! queued items) and whose sender is an [`Outlet`] that a stage closes when its input ended, so
//! shutdown drains downstream in order.
//!
//! With `[vision]`, acquire → vision → buffer: the vision stage anonymizes, checks and counts
//! every capture before the buffer sees it (`vision/`); without it captures carry occupancy
//! `unknown`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{Mutex, mpsc};

use crate::acquire::AcquireComponent;
use crate::buffer::{AppendOutcome, Buffer, BufferOptions};
use crate::config::{AgentConfig, LidarSourceKind};
use crate::detect::{DetectComponent, DetectionLog};
use crate::domain::{Capture, Scan, ScanGeometry};
use crate::lidar::driver::{SickScanSource, SickSettings};
use crate::lidar::recording::ReplayScanSource;
use crate::load::WaitingOn;
use crate::sim::sick_server::{SickServer, SickServerConfig};
use crate::sim::{SharedWorld, TrafficParams, World};
use crate::sources::ScanSource;
use crate::stage::{CHANNEL_CAPACITY, InboxGauge, Inlet, Outlet, channel};
use crate::state::ComponentState;
use crate::supervisor::{Component, ComponentCtx, RunFuture};
use crate::test_capture::TestCameras;
use crate::trigger::{CameraRoute, TriggerComponent};

/// Everything main needs after building.
pub struct Pipeline {
    pub components: Vec<Arc<dyn Component>>,
    pub buffer: Buffer,
    /// Each stage's input channel by component name, for introspection (`Registry::set_inbox`).
    pub inboxes: Vec<(String, InboxGauge)>,
    /// The cameras' acquire inboxes, for operators' test captures (the uplink's commands).
    pub test_cameras: TestCameras,
}

/// Lab and test options that are not part of the device config.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Appends every detection as a JSON line to this file.
    pub detections_out: Option<PathBuf>,
    /// Appends every capture the buffer accepted as a JSON line to this file ([`AcceptedLog`]).
    pub accepted_log: Option<PathBuf>,
    /// `ORT_DYLIB_PATH` of the agent's environment: ONNX Runtime when `[vision]` names none.
    pub ort_dylib_path: Option<PathBuf>,
    /// What the local UI shows; kept across generations.
    pub view: crate::view::SiteView,
    /// The latency histograms the stages observe; kept across generations.
    pub metrics: crate::metrics::StageMetrics,
    /// Traces of captures (`[telemetry]` on); `None`: nothing is marked or emitted.
    pub tracer: Option<std::sync::Arc<crate::traces::CaptureTracer>>,
}

/// Builds the pipeline stages (not the uplink) from a validated config.
pub fn build(config: &AgentConfig, config_dir: Option<&Path>) -> anyhow::Result<Pipeline> {
    build_with(config, config_dir, &BuildOptions::default())
}

/// [`build`] with lab options. Must run inside the tokio runtime (the simulated scanner and
/// the scan source spawn tasks there).
pub fn build_with(
    config: &AgentConfig,
    config_dir: Option<&Path>,
    options: &BuildOptions,
) -> anyhow::Result<Pipeline> {
    let buffer = open_buffer(config, config_dir)?;
    build_on(config, config_dir, options, buffer)
}

/// Opens the capture buffer of `[buffer]`; it outlives the pipelines built on it.
pub fn open_buffer(config: &AgentConfig, config_dir: Option<&Path>) -> anyhow::Result<Buffer> {
    let buffer_path = crate::config::resolve(config_dir, &config.buffer.path);
    Buffer::open(&buffer_path, BufferOptions::from_config(&config.buffer))
        .with_context(|| format!("opening buffer {}", buffer_path.display()))
}

/// [`build_with`] on a buffer that is already open: the rebuild hook of a config applied in
/// place (the process, and the buffer with everything not yet acked, stay; `[buffer]` changes
/// take effect at the next start).
pub fn build_on(
    config: &AgentConfig,
    config_dir: Option<&Path>,
    options: &BuildOptions,
    buffer: Buffer,
) -> anyhow::Result<Pipeline> {
    let mut world = World::new(
        TrafficParams::from_config(&config.simulator, config.site.lanes, config.site.lane_width_m),
        config.simulator.seed,
        chrono::Utc::now(),
    );
    if let Some(path) = &config.simulator.ground_truth_path {
        world.write_ground_truth_to(&crate::config::resolve(config_dir, path))?;
    }
    if let Some(vision) = &config.vision {
        let hov: Vec<(u32, u32)> =
            vision.policy.iter().flat_map(|p| p.lanes.iter().map(|&lane| (lane, p.min_occupants))).collect();
        world.set_hov_lanes(&hov, config.simulator.hov_violation_share);
    }
    let world = SharedWorld::new(world);
    let geometry = ScanGeometry {
        mounting_height_m: config.lidar.mounting_height_m,
        mount_y_m: config.lidar.mount_y_m(&config.site),
        fov_deg: config.lidar.fov_deg,
        angular_step_deg: config.lidar.angular_step_deg,
        lanes: config.site.lanes,
        lane_width_m: config.site.lane_width_m,
    };
    let main_scans = scan_source(config, config_dir, &world, geometry, None)?;
    // the speed trap's upstream plane: a second scanner (simulated: the same world)
    let speed_plane = match config.lidar.speed_plane_offset_m {
        Some(offset_m) => {
            Some((offset_m, scan_source(config, config_dir, &world, geometry, Some(offset_m))?))
        }
        None => None,
    };
    let detections_log = match &options.detections_out {
        Some(path) => Some(DetectionLog::create(path)?),
        None => None,
    };

    let (scan_out, scan_in) = channel::<Scan>();
    let (det_out, det_in) = channel();
    // every acquire stage gets its own outlet on the one capture channel
    let (cap_tx, cap_rx) = mpsc::channel::<Capture>(CHANNEL_CAPACITY);
    let cap_in: Inlet<Capture> = Arc::new(Mutex::new(cap_rx));
    let mut inboxes: Vec<(String, InboxGauge)> = Vec::new();
    inboxes.extend(scan_out.gauge().map(|g| ("detect".to_owned(), g)));
    inboxes.extend(det_out.gauge().map(|g| ("trigger".to_owned(), g)));
    let captures_gauge = InboxGauge::of(&cap_tx);

    let mut components: Vec<Arc<dyn Component>> = vec![Arc::new(SenseComponent {
        name: "sense",
        source: Arc::new(Mutex::new(main_scans)),
        output: scan_out,
    })];
    let speed = speed_plane.map(|(offset_m, source)| {
        let (up_out, up_in) = channel::<Scan>();
        components.push(Arc::new(SenseComponent {
            name: "sense-speed",
            source: Arc::new(Mutex::new(source)),
            output: up_out,
        }));
        crate::detect::SpeedPlane { offset_m, input: up_in }
    });
    components.push(Arc::new(DetectComponent {
        geometry,
        input: scan_in,
        speed,
        output: det_out,
        log: detections_log,
        view: options.view.clone(),
    }));
    let trigger_at = components.len();
    let mut routes = Vec::new();
    let test_cameras = TestCameras::default();
    for cam in &config.cameras {
        let open = crate::camera::opener(cam, &config.site, config_dir, &world)?;
        // a simulated camera that vision counts through shows cabins with faces
        let open = crate::sim::camera::cabin_opener(config, cam, config_dir, &world)?.unwrap_or(open);
        let (req_out, req_in) = channel();
        inboxes.extend(req_out.gauge().map(|g| (format!("acquire-{}", cam.id), g)));
        test_cameras.insert(&cam.id, cam.lanes.first().copied().unwrap_or(0), req_out.clone());
        routes.push(CameraRoute {
            camera_id: cam.id.clone(),
            lanes: cam.lanes.clone(),
            trigger_delay_ms: cam.trigger_delay_ms,
            distance_from_lidar_m: cam.distance_from_lidar_m,
            output: req_out,
        });
        components.push(Arc::new(AcquireComponent {
            camera_id: cam.id.clone(),
            site_id: config.site_id.clone(),
            config_version: config.config_version,
            ring_frames: cam.ring_frames,
            open,
            stall_after: std::time::Duration::from_millis(cam.stall_after_ms()),
            stalls: Default::default(),
            tests: Default::default(),
            input: req_in,
            output: Outlet::new(cap_tx.clone()),
            trace: options.tracer.is_some(),
        }));
    }
    drop(cap_tx);
    components.insert(
        trigger_at,
        Arc::new(TriggerComponent {
            input: det_in,
            routes,
            scan_to_trigger: options.metrics.scan_to_trigger_seconds.clone(),
        }),
    );
    // with [vision], every capture passes the vision stage (anonymize, check, count) before the
    // buffer sees it; a vision that cannot load refuses the start, naming the problem
    let cap_in = match &config.vision {
        None => {
            inboxes.push(("buffer".to_owned(), captures_gauge));
            cap_in
        }
        Some(_) => {
            inboxes.push(("vision".to_owned(), captures_gauge));
            let (vision_out, vision_in) = channel();
            inboxes.extend(vision_out.gauge().map(|g| ("buffer".to_owned(), g)));
            let ort = options.ort_dylib_path.as_deref();
            let observers = crate::vision::Observers {
                view: options.view.clone(),
                frame_seconds: options.metrics.vision_frame_seconds.clone(),
            };
            let vision = crate::vision::component(config, config_dir, ort, cap_in, vision_out, observers)?;
            components.push(Arc::new(vision));
            vision_in
        }
    };
    let accepted_log = match &options.accepted_log {
        Some(path) => Some(AcceptedLog::open(path)?),
        None => None,
    };
    components.push(Arc::new(BufferWriterComponent {
        buffer: buffer.clone(),
        metrics: options.metrics.clone(),
        tracer: options.tracer.clone(),
        input: cap_in,
        retry: Default::default(),
        accepted_log,
        sweep_every: std::time::Duration::from_secs(config.buffer.retention.sweep_interval_secs),
    }));
    Ok(Pipeline { components, buffer, inboxes, test_cameras })
}

/// The scan source of `[lidar] source`. Every kind goes through the SICK codec: the simulator
/// is a simulated SICK scanner on 127.0.0.1:0 read by the real driver over TCP.
/// With `speed_plane_offset_m`, the scanner of the speed plane that far upstream instead.
fn scan_source(
    config: &AgentConfig,
    config_dir: Option<&Path>,
    world: &SharedWorld,
    geometry: ScanGeometry,
    speed_plane_offset_m: Option<f64>,
) -> anyhow::Result<Box<dyn ScanSource>> {
    let l = &config.lidar;
    let speed_plane = speed_plane_offset_m.is_some();
    let settings = |address: String| SickSettings {
        address,
        framing: crate::config::framing(l.framing),
        reconnect_min: std::time::Duration::from_millis(l.reconnect_min_ms),
        reconnect_max: std::time::Duration::from_millis(l.reconnect_max_ms),
        degraded_after: std::time::Duration::from_secs(l.degraded_after_secs),
        mounting_angle_deg: l.mounting_angle_deg,
    };
    Ok(match l.source {
        LidarSourceKind::Simulator => {
            let listener =
                std::net::TcpListener::bind("127.0.0.1:0").context("binding the simulated sick scanner")?;
            let server = SickServer::from_std(
                listener,
                world.clone(),
                SickServerConfig {
                    framing: crate::config::framing(l.framing),
                    scan_hz: l.scan_hz,
                    geometry,
                    mounting_angle_deg: l.mounting_angle_deg,
                    seed: config.simulator.seed ^ u64::from(speed_plane),
                    serial_number: 0x00A1_B2C3 + u32::from(speed_plane),
                    plane_x_m: -speed_plane_offset_m.unwrap_or(0.0),
                },
            )
            .context("starting the simulated sick scanner")?;
            let source = SickScanSource::new(settings(server.local_addr().to_string()), geometry);
            Box::new(source.with_guard(Box::new(server)))
        }
        LidarSourceKind::Sick => {
            let address = if speed_plane {
                l.speed_plane_address.clone().context("lidar.speed_plane_address is required")?
            } else {
                l.address.clone().context("lidar.address is required with source = \"sick\"")?
            };
            Box::new(SickScanSource::new(settings(address), geometry))
        }
        LidarSourceKind::Replay => {
            anyhow::ensure!(!speed_plane, "a lidar recording holds no speed plane");
            let path = l.path.as_ref().context("lidar.path is required with source = \"replay\"")?;
            Box::new(ReplayScanSource::open(
                &crate::config::resolve(config_dir, path),
                l.speed,
                geometry,
                l.mounting_angle_deg,
                std::time::Duration::from_secs(l.degraded_after_secs),
            )?)
        }
    })
}

/// How often the sense component publishes its source's health.
const SENSE_DETAIL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The `sense` component: reads scans from the scan source until shutdown, and publishes the
/// source's health and counters in its snapshot detail.
pub struct SenseComponent {
    /// `sense`, or `sense-speed` for the speed trap's upstream plane.
    pub name: &'static str,
    pub source: Arc<Mutex<Box<dyn ScanSource>>>,
    pub output: Outlet<Scan>,
}

impl Component for SenseComponent {
    fn name(&self) -> String {
        self.name.into()
    }

    fn run(&self, mut ctx: ComponentCtx) -> RunFuture {
        let (source, output) = (self.source.clone(), self.output.clone());
        Box::pin(async move {
            let mut source = source.lock().await;
            let mut publish = tokio::time::interval(SENSE_DETAIL_EVERY);
            publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ctx.wait_on(WaitingOn::Device);
                let scan = tokio::select! {
                    biased;
                    () = ctx.shutting_down() => break,
                    _ = publish.tick() => None,
                    scan = source.next_scan() => Some(scan),
                };
                ctx.wait_on(WaitingOn::Nothing);
                match scan {
                    Some(scan) => {
                        ctx.waiting(WaitingOn::Downstream, output.send(scan.context("reading scan")?))
                            .await?;
                        ctx.processed(1);
                    }
                    None => {
                        if let Some(state) = source.state() {
                            ctx.state(ComponentState::Lidar(state));
                        }
                    }
                }
            }
            if let Some(state) = source.state() {
                ctx.state(ComponentState::Lidar(state));
            }
            tracing::info!("scan source stopped");
            output.close();
            Ok(())
        })
    }
}

/// Most captures appended in one write transaction (group commit).
const GROUP_COMMIT_MAX: usize = 32;

/// The `buffer` component: appends captures durably, several per transaction when they queue up
/// together, and sweeps expired captures every `sweep_every`. Captures whose write failed are
/// retried after the restart.
pub struct BufferWriterComponent {
    pub buffer: Buffer,
    /// Observes trigger-to-durable time per capture.
    pub metrics: crate::metrics::StageMetrics,
    /// Emits each stored capture's trace (`traces.rs`) when the agent traces.
    pub tracer: Option<Arc<crate::traces::CaptureTracer>>,
    pub input: Inlet<Capture>,
    pub retry: Arc<std::sync::Mutex<Vec<Capture>>>,
    pub sweep_every: std::time::Duration,
    pub accepted_log: Option<AcceptedLog>,
}

/// Appends one JSON line per capture the buffer accepted (`lanewatch-agent --accepted-log`):
/// `{"capture_id":"..","value_class":"compliant","captured_at":".."}`, written after the
/// group commit and `fsync`'d once per group, for tests that check nothing accepted is lost.
/// A kill between the commit and the write leaves an accepted capture unlisted (never the
/// reverse), and possibly a last line cut short, which readers skip.
#[derive(Clone)]
pub struct AcceptedLog {
    file: Arc<std::sync::Mutex<std::fs::File>>,
}

impl AcceptedLog {
    /// Opens `path` for appending, creating it; a restarted agent continues the same file.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening accepted log {}", path.display()))?;
        Ok(Self { file: Arc::new(std::sync::Mutex::new(file)) })
    }

    /// Appends the lines of one group commit and syncs them to disk.
    pub fn append<'a>(&self, captures: impl IntoIterator<Item = &'a Capture>) -> std::io::Result<()> {
        use std::io::Write;
        let mut text = String::new();
        for c in captures {
            let line = serde_json::json!({
                "capture_id": c.meta.capture_id,
                "value_class": c.meta.value_class.as_str(),
                "captured_at": c.meta.captured_at,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        if text.is_empty() {
            return Ok(());
        }
        let mut file = self.file.lock().unwrap();
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }
}

impl Component for BufferWriterComponent {
    fn name(&self) -> String {
        "buffer".into()
    }

    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        let (buffer, input, retry) = (self.buffer.clone(), self.input.clone(), self.retry.clone());
        let accepted_log = self.accepted_log.clone();
        let metrics = self.metrics.clone();
        let tracer = self.tracer.clone();
        let sweep_every = self.sweep_every;
        Box::pin(async move {
            let mut input = input.lock().await;
            let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + sweep_every, sweep_every);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let mut batch = std::mem::take(&mut *retry.lock().unwrap());
                if batch.is_empty() {
                    ctx.wait_on(WaitingOn::Input);
                    tokio::select! {
                            next = input.recv() => match next {
                                Some(capture) => batch.push(capture),
                                None => break,
                            },
                            _ = sweep.tick() => {
                                let b = buffer.clone();
                                let deleted = tokio::task::spawn_blocking(move || b.sweep_expired())
                                    .await
                                    .context("retention sweep task")?
                                    .context("sweeping expired captures")?;
                                if deleted > 0 {
                                    tracing::info!(deleted, "expired captures deleted");
                                }
                                ctx.state(ComponentState::Buffer(buffer.stats()));
                    ctx.memory(buffer.index_bytes());
                                continue;
                            }
                        }
                }
                ctx.wait_on(WaitingOn::Nothing);
                while batch.len() < GROUP_COMMIT_MAX {
                    match input.try_recv() {
                        Ok(capture) => batch.push(capture),
                        Err(_) => break,
                    }
                }
                // traced: each capture's root span starts, and its traceparent is stored with it
                // (a retried write keeps the one it got)
                let roots: Vec<Option<crate::traces::Root>> = match &tracer {
                    Some(tracer) => batch
                        .iter_mut()
                        .map(|c| c.meta.trace_parent.is_none().then(|| tracer.begin(c)))
                        .collect(),
                    None => Vec::new(),
                };
                let b = buffer.clone();
                let captures = batch.clone();
                let busy = ctx.busy();
                let result = tokio::task::spawn_blocking(move || busy.measure(|| b.append_batch(&captures)))
                    .await
                    .context("buffer append task")?;
                match result {
                    Ok(outcomes) => {
                        if let Some(log) = &accepted_log {
                            let stored = batch
                                .iter()
                                .zip(&outcomes)
                                .filter(|(_, o)| matches!(o, AppendOutcome::Stored { .. }))
                                .map(|(c, _)| c.clone());
                            let stored: Vec<Capture> = stored.collect();
                            let log = log.clone();
                            tokio::task::spawn_blocking(move || log.append(&stored))
                                .await
                                .context("accepted log task")?
                                .context("writing accepted log")?;
                        }
                        let mut roots = roots.into_iter();
                        for (capture, outcome) in batch.iter().zip(outcomes) {
                            let capture_id = capture.meta.capture_id;
                            let root = roots.next().flatten();
                            match outcome {
                                AppendOutcome::Stored { seq, evicted } => {
                                    if let (Some(tracer), Some(root)) = (&tracer, root) {
                                        tracer.stored(root, &capture.meta);
                                    }
                                    tracing::debug!(%capture_id, seq, evicted, lane = capture.meta.lane, "capture buffered");
                                    // captured_at: the frame taken at the trigger instant
                                    let since = chrono::Utc::now() - capture.meta.captured_at;
                                    metrics
                                        .trigger_to_buffered_seconds
                                        .observe(since.num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
                                    ctx.processed(1);
                                }
                                AppendOutcome::Rejected { class, needed } => {
                                    tracing::warn!(%capture_id, class = class.as_str(), bytes = needed, "buffer full, capture rejected");
                                }
                            }
                        }
                    }
                    Err(err) => {
                        *retry.lock().unwrap() = batch;
                        return Err(err).context("appending captures");
                    }
                }
                ctx.state(ComponentState::Buffer(buffer.stats()));
                ctx.memory(buffer.index_bytes());
            }
            Ok(())
        })
    }
}

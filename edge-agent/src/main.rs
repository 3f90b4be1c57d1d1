//! `lanewatch-agent`: the edge agent binary, the composition root that wires and runs everything.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lanewatch_edge_agent::bench;
use lanewatch_edge_agent::config::{self, AgentConfig};
use lanewatch_edge_agent::generation::{self, Generation, uplink_connected};
use lanewatch_edge_agent::lidar::recording;
use lanewatch_edge_agent::lidar::sick::Framing;
use lanewatch_edge_agent::logs::Logs;
use lanewatch_edge_agent::metrics::{AgentMetrics, StageMetrics};
use lanewatch_edge_agent::pipeline;
use lanewatch_edge_agent::sim::sick_server;
use lanewatch_edge_agent::supervisor::Escalation;
use lanewatch_edge_agent::traces::CaptureTracer;
use lanewatch_edge_agent::ui;
use lanewatch_edge_agent::uplink::write_atomically;
use lanewatch_edge_agent::view::SiteView;
use lanewatch_telemetry::Telemetry;
use tokio::sync::{mpsc, watch};

const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(name = "lanewatch-agent", version, about = "Lanewatch edge agent")]
struct Cli {
    /// Agent config file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Written as JSON {"agent_id","pid"} once the pipeline runs.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Appends every vehicle detection as a JSON line to this file (labs, replay comparisons).
    #[arg(long)]
    detections_out: Option<PathBuf>,
    /// Appends every capture the buffer accepted as a JSON line to this file, synced per group
    /// commit (tests that check nothing accepted is lost).
    #[arg(long)]
    accepted_log: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validates a config file: prints "ok" (exit 0) or the error (exit 2).
    CheckConfig { path: PathBuf },
    /// Measures parts of the agent on this machine, in temporary directories.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Records a SICK scanner's raw telegram stream to a file, for `[lidar] source = "replay"`.
    Record {
        /// The scanner, host:port.
        #[arg(long)]
        address: String,
        #[arg(long, value_enum, default_value = "cola_b")]
        framing: FramingArg,
        /// The recording to write.
        #[arg(long)]
        out: PathBuf,
        /// Stop after this long (default: until SIGINT/SIGTERM or the scanner disconnects).
        #[arg(long)]
        duration_secs: Option<u64>,
    },
    /// Serves a simulated SICK scanner (the agent's simulator) over TCP until SIGINT/SIGTERM.
    SimulateSick {
        /// Address to listen on, e.g. 127.0.0.1:2112 or 127.0.0.1:0.
        #[arg(long, default_value = "127.0.0.1:2112")]
        listen: String,
        /// Framing to speak (default: the config's `[lidar] framing`, else cola_b).
        #[arg(long, value_enum)]
        framing: Option<FramingArg>,
        /// Agent config whose site, `[lidar]` and `[simulator]` describe the scene (defaults if absent).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Written as JSON {"addr","pid"} once listening.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Reads a password on stdin and prints its argon2 hash for `[local_ui] password_hash`.
    HashPassword,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Capture buffer: append throughput against raw fsync'd writes, recovery after SIGKILL.
    Buffer {
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 200_000)]
        image_bytes: usize,
        #[arg(long, default_value_t = 200)]
        append_captures: usize,
        /// Captures per transaction in the group-commit measurement.
        #[arg(long, default_value_t = 8)]
        group: usize,
        #[arg(long, default_value_t = 10_000)]
        recovery_captures: usize,
        #[arg(long, default_value_t = 200_000)]
        recovery_image_bytes: usize,
    },
    /// Introspection's cost: a chain of stages with and without supervision instrumentation,
    /// counter sampling, the log ring and an inspector reading every snapshot 20 times a second.
    Introspection {
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 200_000)]
        items: u64,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Sensing: the simulator and the real detector over scenarios with ground truth, faster
    /// than real time (precision, recall, class, speed, trigger error, processing time).
    Sensing {
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Simulated seconds of each main scenario.
        #[arg(long, default_value_t = 300.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Vision: occupant counting and anonymization on simulated cabins built from held-out face
    /// photos, against deface on the same frames (needs scripts/setup.sh's .tools).
    Vision {
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 150)]
        vehicles: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The workspace's .tools directory (onnxruntime/, models/, faces/, deface-venv/).
        #[arg(long, default_value = ".tools")]
        tools_dir: PathBuf,
        /// Do not run deface (no deface_speedup).
        #[arg(long)]
        skip_deface: bool,
        /// An OTLP/gRPC collector (e.g. `http://127.0.0.1:4317`): the pipeline also runs with
        /// every capture traced and exported there (`tracing_overhead_ratio`).
        #[arg(long)]
        otlp_endpoint: Option<String>,
        /// Build the cabins from the tuning photos (for tuning) instead of the held-out ones.
        #[arg(long)]
        tuning: bool,
        /// Run the detector at this longer input side instead of the configured one.
        #[arg(long)]
        input_max_side: Option<u32>,
        /// Override vision.count_threshold (for tuning).
        #[arg(long)]
        count_threshold: Option<f32>,
        /// Override vision.min_confidence (for tuning).
        #[arg(long)]
        min_confidence: Option<f32>,
        /// The pipeline's face model instead of the default (the judge stays the float model).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Counts faces (detector score ≥ threshold) in every JPEG embedded in the given files or
    /// directories: the no-un-anonymized-frame check of the end-to-end tests (internal).
    #[command(hide = true)]
    FaceScan {
        #[arg(long, default_value = ".tools")]
        tools_dir: PathBuf,
        #[arg(long, default_value_t = 0.5)]
        threshold: f32,
        paths: Vec<PathBuf>,
    },
    /// The child the buffer benchmark kills (internal).
    #[command(hide = true)]
    BufferCrashWriter {
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        image_bytes: usize,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FramingArg {
    #[value(name = "cola_a")]
    ColaA,
    #[value(name = "cola_b")]
    ColaB,
}

impl From<FramingArg> for Framing {
    fn from(arg: FramingArg) -> Self {
        match arg {
            FramingArg::ColaA => Framing::ColaA,
            FramingArg::ColaB => Framing::ColaB,
        }
    }
}

fn main() -> ExitCode {
    lanewatch_edge_agent::process::mark_started();
    // Both rustls back ends are compiled into the workspace (the AWS SDK brings aws-lc-rs), so
    // rustls cannot pick one by itself: choose ring, the one tonic's TLS is built with.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // 1. tracing: stderr and the ring that operators read remotely (`lanewatch logs`)
    let logs = Logs::install();

    // 2. arguments
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { path }) => {
            return match config::load(&path) {
                Ok(_) => {
                    println!("ok");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        Some(Command::HashPassword) => {
            let mut password = String::new();
            let read = std::io::stdin().read_line(&mut password);
            let password = password.trim_end_matches(['\r', '\n']);
            return match read.map_err(anyhow::Error::from).and_then(|_| {
                anyhow::ensure!(password.len() >= 12, "the password must have at least 12 characters");
                lanewatch_edge_agent::ui::hash_password(password)
            }) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        Some(Command::Bench(bench)) => {
            return match run_bench(bench) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Record { address, framing, out, duration_secs }) => {
            return run_tool(async move {
                let duration = duration_secs.map(Duration::from_secs);
                let stop = async {
                    terminated().await;
                };
                let summary = recording::record(&address, framing.into(), &out, duration, stop).await?;
                tracing::info!(
                    out = %out.display(),
                    records = summary.records,
                    bytes = summary.bytes,
                    duration_s = summary.duration_us as f64 / 1e6,
                    "recording written"
                );
                Ok(())
            });
        }
        Some(Command::SimulateSick { listen, framing, config: path, ready_file }) => {
            let config = match path.as_deref().map(config::load).transpose() {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("error: {err}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let config_dir = path.as_deref().and_then(Path::parent).map(Path::to_path_buf);
            let config = config.map_or_else(sick_server::Scene::default, |c| sick_server::Scene {
                site: c.site,
                lidar: c.lidar,
                simulator: c.simulator,
            });
            let framing = framing.map_or(config::framing(config.lidar.framing), Framing::from);
            return run_tool(async move {
                let stop = async {
                    terminated().await;
                };
                sick_server::run_standalone(
                    &listen,
                    &config,
                    config_dir.as_deref(),
                    framing,
                    ready_file.as_deref(),
                    stop,
                )
                .await
            });
        }
        None => {}
    }
    let Some(config_path) = cli.config else {
        eprintln!("error: --config <PATH> is required");
        return ExitCode::from(EXIT_CONFIG);
    };

    // 3. config, validated once
    let config = match config::load(&config_path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // 3b. traces ([telemetry]): one exporter for the process; a pushed change applies at the
    // next start
    let telemetry = {
        let _runtime = runtime.enter(); // the gRPC exporter's channel needs the runtime
        match Telemetry::install(&config.telemetry, "lanewatch-agent", &config.agent_id) {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("error: telemetry: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    };
    let tracer = telemetry.as_ref().map(CaptureTracer::new);
    let code = match runtime.block_on(run(
        config,
        config_path,
        cli.ready_file,
        cli.detections_out,
        cli.accepted_log,
        logs,
        tracer,
    )) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    };
    // the spans still pending go out before the exporter stops
    if let Some(telemetry) = telemetry {
        let flushed =
            runtime.block_on(async move { tokio::task::spawn_blocking(move || telemetry.shutdown()).await });
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "traces: the last spans were not exported");
        }
    }
    // Dropping the runtime drops what its tasks still held (cameras among them); then every
    // camera thread must leave OpenCV/Aravis before exit destroys their C++ statics.
    drop(runtime);
    let live = lanewatch_edge_agent::camera::wait_for_camera_threads(std::time::Duration::from_secs(5));
    if live > 0 {
        tracing::warn!(live, "camera threads still running at exit");
    }
    code
}

/// Runs a one-shot tool (`record`, `simulate-sick`) to completion: exit 0, or 1 with the error.
fn run_tool(tool: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tool) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// How long a config applied in place has to bring the uplink back to the control plane (a
/// Welcome) before the agent gives up on it and goes back to the config it ran before.
const APPLY_PROBATION: Duration = Duration::from_secs(60);

/// The config the components run with, and the file text it was read from (written back when
/// a newer one cannot run).
struct Running {
    config: AgentConfig,
    text: String,
}

/// A config applied in place that has not proved itself yet (see [`APPLY_PROBATION`]).
struct Probation {
    previous: Running,
    version: u64,
    until: tokio::time::Instant,
}

/// What ends a generation of components.
enum Ended {
    Signal(&'static str),
    Escalation(Escalation),
    Reload(u64),
    ProbationOver,
}

async fn run(
    config: AgentConfig,
    config_path: PathBuf,
    ready_file: Option<PathBuf>,
    detections_out: Option<PathBuf>,
    accepted_log: Option<PathBuf>,
    logs: Logs,
    tracer: Option<Arc<CaptureTracer>>,
) -> anyhow::Result<ExitCode> {
    let config_dir = config_path.parent().map(Path::to_path_buf);
    let ort_dylib_path = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    let view = SiteView::default();
    let stage_metrics = StageMetrics::default();
    let options = pipeline::BuildOptions {
        detections_out,
        accepted_log,
        ort_dylib_path,
        view: view.clone(),
        metrics: stage_metrics.clone(),
        tracer,
    };
    // the buffer (and everything in it not yet acked) outlives the generations of components
    let buffer = pipeline::open_buffer(&config, config_dir.as_deref())?;
    let text = tokio::fs::read_to_string(&config_path).await.context("reading the config file")?;
    let mut running = Running { config, text };
    let (reload_tx, mut reloads) = mpsc::unbounded_channel();
    let mut apply_failure: Option<(u64, String)> = None;
    let mut probation: Option<Probation> = None;
    let mut signal = std::pin::pin!(terminated());
    let mut ready_written = false;
    // the local UI: up before the first generation and across all of them ([local_ui] changes
    // take effect at the next start)
    let (current_tx, current_rx) = watch::channel(None);
    let (components_tx, components_rx) = watch::channel(None);
    let metrics = Arc::new(AgentMetrics::new(&stage_metrics, components_rx, buffer.clone()));
    let (ui_stop, ui_stopped) = watch::channel(false);
    let ui_addr = match running.config.local_ui.enabled {
        true => {
            let deps = ui::UiDeps {
                view,
                logs: logs.clone(),
                buffer: buffer.clone(),
                current: current_rx,
                config_path: config_path.clone(),
                reload: reload_tx.clone(),
                metrics,
            };
            // the site keeps capturing without its UI: a UI that cannot start is an error in the
            // log (and a null `ui_url` in the ready file), not an outage
            match ui::start(&running.config.local_ui, deps, ui_stopped).await {
                Ok(addr) => {
                    let scheme = if running.config.local_ui.tls.is_some() { "https" } else { "http" };
                    tracing::info!(url = %format!("{scheme}://{addr}/"), "local ui");
                    Some(format!("{scheme}://{addr}/"))
                }
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "local ui not started; the agent runs without it"
                    );
                    None
                }
            }
        }
        false => None,
    };

    // 4. build, 5. spawn: a generation of components per config (a staged config is applied by
    // draining the stages and building the next generation in this process)
    loop {
        let start = Generation::start(
            &running.config,
            &config_path,
            &options,
            &buffer,
            &reload_tx,
            apply_failure.clone(),
            &logs,
        )
        .await;
        let mut generation = match (start, probation.take()) {
            (Ok(generation), p) => {
                probation = p;
                generation
            }
            (Err(err), Some(p)) => {
                let reason = format!("cannot start with config version {}: {err:#}", p.version);
                running = fall_back(&config_path, p, &reason, &mut apply_failure).await?;
                continue;
            }
            (Err(err), None) => return Err(err),
        };
        let _ = components_tx.send(Some(generation.registry.clone()));
        let _ = current_tx.send(Some(ui::Current {
            registry: generation.registry.clone(),
            supervisor: generation.supervisor.clone(),
            config: Arc::new(running.config.clone()),
            uploads_paused: generation.uploads_paused.clone(),
        }));
        tracing::info!(
            agent_id = %running.config.agent_id,
            site_id = %running.config.site_id,
            config_version = running.config.config_version,
            components = generation.stage_names.len() + 1,
            "agent running"
        );

        // 6. ready file
        if !ready_written && let Some(path) = &ready_file {
            let ready = serde_json::json!({
                "agent_id": running.config.agent_id,
                "pid": std::process::id(),
                "ui_url": ui_addr,
            });
            write_atomically(path, ready.to_string().as_bytes()).await.context("writing ready file")?;
            ready_written = true;
        }

        // 7. wait for a signal, an escalation, a staged config or the end of a probation
        let mut changes = generation.registry.subscribe();
        let ended = loop {
            if uplink_connected(&generation.registry)
                && let Some(p) = probation.take()
            {
                tracing::info!(
                    config_version = p.version,
                    "config applied: the control plane is reachable with it"
                );
            }
            let probation_over = async {
                match &probation {
                    Some(p) => tokio::time::sleep_until(p.until).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                name = &mut signal => break Ended::Signal(name),
                Some(escalation) = generation.escalations.recv() => break Ended::Escalation(escalation),
                Some(version) = reloads.recv() => break Ended::Reload(version),
                () = probation_over => break Ended::ProbationOver,
                // a component's state changed: look at the uplink again
                Ok(()) = changes.changed() => {}
            }
        };
        let grace = Duration::from_secs(running.config.shutdown_grace_secs);
        match ended {
            Ended::Signal(name) => {
                tracing::info!(signal = name, "shutting down");
                let _ = ui_stop.send(true);
                return Ok(generation.drain_and_flush(&buffer, grace, terminated()).await);
            }
            Ended::Escalation(escalation) => match probation.take() {
                Some(p) => {
                    generation.stop(grace).await;
                    let reason = format!("config version {} failed: {escalation}", p.version);
                    running = fall_back(&config_path, p, &reason, &mut apply_failure).await?;
                }
                None => {
                    eprintln!("error: {escalation}");
                    generation.supervisor.shutdown().await;
                    return Ok(ExitCode::from(generation::EXIT_ESCALATED));
                }
            },
            Ended::ProbationOver => {
                let p = probation.take().expect("a probation ended");
                generation.stop(grace).await;
                let reason = format!(
                    "config version {} did not reach the control plane within {}s",
                    p.version,
                    APPLY_PROBATION.as_secs()
                );
                running = fall_back(&config_path, p, &reason, &mut apply_failure).await?;
            }
            Ended::Reload(version) => {
                // a connected uplink proved the config in probation; otherwise the last one
                // that did stays the one to go back to
                let proven = uplink_connected(&generation.registry);
                tracing::info!(config_version = version, "applying a staged config: draining the components");
                generation.stop(grace).await;
                let loaded = match tokio::fs::read_to_string(&config_path).await {
                    Ok(text) => config::parse_and_validate(&text, config_dir.as_deref())
                        .map(|config| Running { config, text })
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(format!("cannot read {}: {e}", config_path.display())),
                };
                match loaded {
                    Ok(next) => {
                        let current = std::mem::replace(&mut running, next);
                        let previous = match probation.take() {
                            // the config being replaced never proved itself
                            Some(p) if !proven => p.previous,
                            _ => current,
                        };
                        if previous.config.buffer != running.config.buffer {
                            tracing::warn!("[buffer] changes take effect at the next start of the agent");
                        }
                        apply_failure = None;
                        probation = Some(Probation {
                            previous,
                            version: running.config.config_version,
                            until: tokio::time::Instant::now() + APPLY_PROBATION,
                        });
                    }
                    Err(reason) => {
                        tracing::error!(config_version = version, error = %reason, "staged config cannot be loaded; keeping the running one");
                        write_atomically(&config_path, running.text.as_bytes())
                            .await
                            .context("restoring the config file")?;
                        apply_failure = Some((version, format!("cannot apply: {reason}")));
                    }
                }
            }
        }
    }
}

/// Goes back to the config that ran before `p`: its file text is written back, and the
/// failure is reported to the control plane once a session opens.
async fn fall_back(
    config_path: &Path,
    p: Probation,
    reason: &str,
    apply_failure: &mut Option<(u64, String)>,
) -> anyhow::Result<Running> {
    tracing::error!(
        config_version = p.version,
        reason,
        previous = p.previous.config.config_version,
        "going back to the previous config"
    );
    write_atomically(config_path, p.previous.text.as_bytes())
        .await
        .context("restoring the previous config file")?;
    *apply_failure = Some((
        p.version,
        format!("cannot apply: {reason}; running version {} again", p.previous.config.config_version),
    ));
    Ok(p.previous)
}

fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Buffer {
            json,
            image_bytes,
            append_captures,
            group,
            recovery_captures,
            recovery_image_bytes,
        } => {
            let options = bench::BenchOptions {
                image_bytes,
                append_captures,
                group,
                recovery_captures,
                recovery_image_bytes,
            };
            let exe = std::env::current_exe().context("locating this executable")?;
            let report = bench::run(&options, &exe)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        BenchCommand::Vision {
            json,
            vehicles,
            seed,
            tools_dir,
            skip_deface,
            otlp_endpoint,
            tuning,
            input_max_side,
            count_threshold,
            min_confidence,
            model,
        } => {
            let options = bench::vision::VisionBenchOptions {
                vehicles,
                seed,
                face_set: if tuning {
                    lanewatch_edge_agent::sim::faces::FaceSet::Tuning
                } else {
                    lanewatch_edge_agent::sim::faces::FaceSet::HeldOut
                },
                input_max_side,
                count_threshold,
                min_confidence,
                model,
                tools_dir,
                skip_deface,
                otlp_endpoint,
            };
            let ort = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
            let report = bench::vision::run(&options, ort.as_deref())?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Ok(())
        }
        BenchCommand::FaceScan { tools_dir, threshold, paths } => {
            let ort = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
            let scan = bench::vision::face_scan(&paths, &tools_dir, threshold, ort.as_deref())?;
            println!("{}", serde_json::to_string(&scan)?);
            Ok(())
        }
        BenchCommand::Introspection { json, items, rounds } => {
            let options = bench::introspection::IntrospectionBenchOptions { items, rounds };
            let report = bench::introspection::run(&options)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Ok(())
        }
        BenchCommand::Sensing { json, seconds, seed } => {
            let report = bench::sensing::run(&bench::sensing::SensingOptions { seconds, seed });
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        BenchCommand::BufferCrashWriter { path, count, image_bytes } => {
            bench::crash_writer(&path, count, image_bytes)
        }
    }
}

/// Resolves with the signal's name on SIGTERM or SIGINT.
async fn terminated() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "sigterm",
                _ = tokio::signal::ctrl_c() => "sigint",
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for sigterm");
                let _ = tokio::signal::ctrl_c().await;
                "sigint"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "sigint"
    }
}

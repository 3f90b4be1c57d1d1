//! `lanewatch-agent`: the edge agent binary, the composition root that wires and runs everything.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lanewatch_edge_agent::config::{self, AgentConfig};
use lanewatch_edge_agent::lidar::recording;
use lanewatch_edge_agent::lidar::sick::Framing;
use lanewatch_edge_agent::pipeline;
use lanewatch_edge_agent::sim::sick_server;
use lanewatch_edge_agent::supervisor::{ComponentStatus, Registry, Supervisor};
use lanewatch_edge_agent::uplink::{UplinkComponent, write_atomically};
use lanewatch_edge_agent::{bench, bench_sensing};
use tokio::sync::{mpsc, watch};

const EXIT_CONFIG: u8 = 2;
const EXIT_ESCALATED: u8 = 3;

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
    /// The child the buffer benchmark kills (internal).
    #[command(hide = true)]
    BufferCrashWriter {
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        image_bytes: usize,
        #[arg(long, action = clap::ArgAction::Set)]
        quick_repair: bool,
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
    // Both rustls back ends are compiled into the workspace (the AWS SDK brings aws-lc-rs), so
    // rustls cannot pick one by itself: choose ring, the one tonic's TLS is built with.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // 1. tracing
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

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
            let framing = framing.map_or(config.lidar.framing.framing(), Framing::from);
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
    match runtime.block_on(run(config, config_path, cli.ready_file, cli.detections_out, cli.accepted_log)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
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

async fn run(
    config: AgentConfig,
    config_path: PathBuf,
    ready_file: Option<PathBuf>,
    detections_out: Option<PathBuf>,
    accepted_log: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let config_dir = config_path.parent().map(Path::to_path_buf);

    // 4. build the pipeline and the uplink
    let options = pipeline::BuildOptions { detections_out, accepted_log };
    let pipeline =
        pipeline::build_with(&config, config_dir.as_deref(), &options).context("building pipeline")?;
    let registry = Registry::default();
    let supervisor_handle = Arc::new(OnceLock::new());
    let mut components = pipeline.components;
    let stage_names: Vec<String> = components.iter().map(|c| c.name()).collect();
    components.push(Arc::new(UplinkComponent {
        control_plane: config.control_plane.clone(),
        config_dir: config_dir.clone(),
        agent_id: config.agent_id.clone(),
        site_id: config.site_id.clone(),
        config_version: config.config_version,
        config_path: config_path.clone(),
        buffer: pipeline.buffer.clone(),
        registry: registry.clone(),
        supervisor: supervisor_handle.clone(),
    }));

    // 5. spawn supervised components
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (escalate_tx, mut escalations) = mpsc::unbounded_channel();
    let supervisor = Supervisor {
        config: config.supervision.clone(),
        registry: registry.clone(),
        shutdown: shutdown_rx,
        escalate: escalate_tx,
    }
    .start(components)
    .await?;
    let _ = supervisor_handle.set(supervisor.clone());
    tracing::info!(agent_id = %config.agent_id, site_id = %config.site_id, components = stage_names.len() + 1, "agent running");

    // 6. ready file
    if let Some(path) = &ready_file {
        let ready = serde_json::json!({ "agent_id": config.agent_id, "pid": std::process::id() });
        write_atomically(path, ready.to_string().as_bytes()).await.context("writing ready file")?;
    }

    // 7. wait for a signal or an escalation
    tokio::select! {
        signal = terminated() => tracing::info!(signal, "shutting down"),
        Some(escalation) = escalations.recv() => {
            eprintln!("error: {escalation}");
            supervisor.shutdown().await;
            return Ok(ExitCode::from(EXIT_ESCALATED));
        }
    }

    // 8. drain: stop the source, let the stages drain in order, let the uplink flush
    let deadline = tokio::time::Instant::now() + Duration::from_secs(config.shutdown_grace_secs);
    let _ = shutdown_tx.send(true);
    let drained = async {
        let mut changes = registry.subscribe();
        let stages_done = |r: &Registry| {
            stage_names.iter().all(|n| {
                r.get(n)
                    .is_some_and(|s| matches!(s.status, ComponentStatus::Stopped | ComponentStatus::Failed))
            })
        };
        while !stages_done(&registry) {
            if changes.changed().await.is_err() {
                break;
            }
        }
        tracing::info!(buffered = pipeline.buffer.stats().captures, "pipeline drained, flushing uplink");
        let mut stats = pipeline.buffer.subscribe();
        let _ = stats.wait_for(|s| s.captures == 0).await;
    };
    let code = tokio::select! {
        () = drained => { tracing::info!("buffer flushed"); ExitCode::SUCCESS }
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!(buffered = pipeline.buffer.stats().captures, "grace period over, unacked captures stay buffered");
            ExitCode::SUCCESS
        }
        signal = terminated() => { tracing::warn!(signal, "second signal, stopping now"); ExitCode::SUCCESS }
        Some(escalation) = escalations.recv() => { eprintln!("error: {escalation}"); ExitCode::from(EXIT_ESCALATED) }
    };

    // 9. stop everything; nothing half-written is lost (buffer writes are transactions)
    supervisor.shutdown().await;
    tracing::info!("agent stopped");
    Ok(code)
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
        BenchCommand::Sensing { json, seconds, seed } => {
            let report = bench_sensing::run(&bench_sensing::SensingOptions { seconds, seed });
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        BenchCommand::BufferCrashWriter { path, count, image_bytes, quick_repair } => {
            bench::crash_writer(&path, count, image_bytes, quick_repair)
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

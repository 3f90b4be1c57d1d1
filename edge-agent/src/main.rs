//! `lanewatch-agent`: the edge agent binary, the composition root that wires and runs everything.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lanewatch_edge_agent::config::{self, AgentConfig};
use lanewatch_edge_agent::pipeline;
use lanewatch_edge_agent::supervisor::{ComponentStatus, Registry, Supervisor};
use lanewatch_edge_agent::uplink::{UplinkComponent, write_atomically};
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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validates a config file: prints "ok" (exit 0) or the error (exit 2).
    CheckConfig { path: PathBuf },
}

fn main() -> ExitCode {
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
    if let Some(Command::CheckConfig { path }) = cli.command {
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
    match runtime.block_on(run(config, config_path, cli.ready_file)) {
        Ok(code) => code,
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
) -> anyhow::Result<ExitCode> {
    let config_dir = config_path.parent().map(Path::to_path_buf);

    // 4. build the pipeline and the uplink
    let pipeline = pipeline::build(&config, config_dir.as_deref()).context("building pipeline")?;
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

//! `lanewatch`: the operator and SRE command line. `lanewatch demo` runs a small fleet on the
//! embedded defaults: one control plane (SQLite + local image directory) and three simulated
//! agents at three highway sites, each a real `lanewatch-control` / `lanewatch-agent` process.
//!
//! The CLI depends on no Lanewatch crate: it drives the real binaries (found next to itself) and
//! the public GraphQL API, exactly as an operator would.

mod api;
mod demo;
mod process;

use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::demo::DemoArgs;
use crate::process::sibling_binary;

#[derive(Parser)]
#[command(name = "lanewatch", version, about = "Lanewatch operator and SRE command line")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a demo fleet: a control plane on embedded defaults and three simulated agents.
    Demo(DemoArgs),
    /// Run a benchmark; it runs in the binary that owns the code it measures, with these arguments
    /// (e.g. `lanewatch bench sensing --json`). Build with `--release` for figures worth quoting.
    Bench {
        #[arg(value_enum)]
        which: Bench,
        /// Passed on unchanged (`--json`, `--database-url`, …).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Bench {
    /// Vehicle detection against simulator ground truth (`lanewatch-agent bench sensing`).
    Sensing,
    /// The agent's durable buffer (`lanewatch-agent bench buffer`).
    Buffer,
    /// Occupant counting and anonymization against ground truth and deface
    /// (`lanewatch-agent bench vision`).
    Vision,
    /// The control plane's captures query and ingest (`lanewatch-control bench api`).
    Api,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Bench { which, args } => return bench(which, &args),
        Cmd::Demo(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(demo::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Replaces this process with the owning binary's bench command, so its output and exit code
/// are the benchmark's own.
fn bench(which: Bench, args: &[String]) -> ExitCode {
    let (binary, name) = match which {
        Bench::Sensing => ("lanewatch-agent", "sensing"),
        Bench::Buffer => ("lanewatch-agent", "buffer"),
        Bench::Vision => ("lanewatch-agent", "vision"),
        Bench::Api => ("lanewatch-control", "api"),
    };
    let path = match sibling_binary(binary) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let err = Command::new(&path).arg("bench").arg(name).args(args).exec();
    eprintln!("error: cannot run {}: {err}", path.display());
    ExitCode::FAILURE
}

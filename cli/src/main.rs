//! `lanewatch`: the operator and SRE command line. `lanewatch demo` runs a small fleet on the
//! embedded defaults: one control plane (SQLite + local image directory) and three simulated
//! agents at three highway sites, each a real `lanewatch-control` / `lanewatch-agent` process.
//! `agents`, `inspect`, `top`, `logs`, `history`, `diagnose`, `captures` and `exec` work on a
//! control plane's fleet through its GraphQL API (`--url`, `--api-key` or `LANEWATCH_URL`,
//! `LANEWATCH_API_KEY`, as `lanewatch demo` prints).
//!
//! The CLI depends on no Lanewatch crate: it drives the real binaries (found next to itself) and
//! the public GraphQL API, exactly as an operator would.

mod api;
mod bench;
mod demo;
mod exec;
mod fleet;
mod history;
mod logs;
mod process;
mod top;

use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::api::Api;
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
    /// The fleet: every agent with its site, health, versions, buffered captures, last seen.
    Agents {
        #[command(flatten)]
        api: ApiArgs,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// An agent's live supervised state (asked from the agent now), or one component's.
    Inspect {
        #[command(flatten)]
        api: ApiArgs,
        /// The agent's id.
        agent: String,
        /// One component (e.g. `uplink`, `acquire-front`); all of them without it.
        component: Option<String>,
        /// Print the state as JSON instead of a tree.
        #[arg(long)]
        json: bool,
    },
    /// A live view of one agent, like htop: its process and a sortable table of its components,
    /// asked again every `--interval`; `r` restarts the selected component (after a y/n).
    Top {
        #[command(flatten)]
        api: ApiArgs,
        /// The agent's id.
        agent: String,
        /// How often to ask the agent again (`500ms`, `1s`, `1m`).
        #[arg(long, default_value = "1s", value_parser = top::parse_interval)]
        interval: std::time::Duration,
    },
    /// The newest captures, optionally of one site or decision.
    Captures {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        site: Option<String>,
        /// compliant, violation-candidate, unreadable or unknown.
        #[arg(long)]
        decision: Option<String>,
        /// How many (1-500).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// An agent's recent log lines from the ring it keeps in memory, filtered; `--follow` keeps
    /// printing new ones.
    Logs {
        #[command(flatten)]
        api: ApiArgs,
        /// The agent's id.
        agent: String,
        /// The least severe level: error, warn, info, debug or trace.
        #[arg(long)]
        level: Option<String>,
        /// Only lines of targets starting with this (e.g. `lanewatch_edge_agent::uplink`).
        #[arg(long)]
        target: Option<String>,
        /// Only lines since then: a duration back (`10m`, `1h`) or an RFC 3339 time.
        #[arg(long, value_parser = logs::parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only lines whose message or a field contains this text (ignoring case).
        #[arg(long)]
        grep: Option<String>,
        /// How many of the newest matching lines (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Keep printing lines as the agent writes them (until interrupted or the agent goes offline).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print JSON (with --follow, one object per line).
        #[arg(long)]
        json: bool,
    },
    /// A component's history as the agent's heartbeats reported it, also for an agent offline
    /// now: a timeline of its status, restarts, processed and inbox, and what the range adds up to.
    History {
        #[command(flatten)]
        api: ApiArgs,
        /// The agent's id.
        agent: String,
        /// The component, as `lanewatch inspect AGENT` names it (e.g. `acquire-front`).
        component: String,
        /// From when: a duration back (`24h`, `30m`) or an RFC 3339 time; at most 31 days back.
        #[arg(long, default_value = "1h", value_parser = logs::parse_since)]
        since: chrono::DateTime<chrono::Utc>,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check an agent's site now: disk, LIDAR link, cameras, clock, model (operators and admins;
    /// audited). Exits 1 when a check fails.
    Diagnose {
        #[command(flatten)]
        api: ApiArgs,
        /// The agent's id.
        agent: String,
        /// A UUID for the command: sending the same id again (a retry) does not run it twice.
        #[arg(long)]
        command_id: Option<String>,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a command to an agent (operators and admins; audited).
    Exec {
        #[command(flatten)]
        api: ApiArgs,
        /// The agent's id.
        agent: String,
        #[command(subcommand)]
        command: ExecCommand,
        /// A UUID for the command: sending the same id again (a retry) does not run it twice.
        #[arg(long, global = true)]
        command_id: Option<String>,
        /// Print the API's answer as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ExecCommand {
    /// Restart one supervised component (its supervisor starts it again).
    Restart {
        /// The component, as `lanewatch inspect AGENT` names it (e.g. `uplink`).
        component: String,
    },
    /// Stop a component and keep it stopped until resumed; the uplink holds uploads only.
    Pause {
        /// The component, as `lanewatch inspect AGENT` names it (e.g. `acquire-front`).
        component: String,
    },
    /// Start a paused component again.
    Resume { component: String },
    /// Replace the agent's log filter for a while (`RUST_LOG` syntax); its own comes back after.
    LogFilter {
        /// e.g. `info,lanewatch_edge_agent::uplink=debug`.
        filter: String,
        /// How long it lasts: `30s`, `10m`, `1h` (at most 24h).
        #[arg(long = "for", value_parser = logs::parse_duration)]
        duration: std::time::Duration,
    },
    /// Take a capture on a camera now, without a vehicle: through vision and the buffer, marked
    /// as a test (never counted, never a violation); then wait for it to be stored.
    TestCapture {
        /// The camera's id (the component `acquire-<id>`).
        camera: String,
        /// How long to wait for the control plane to have it: `30s`, `2m`; `0s`: do not wait.
        #[arg(long, default_value = "30s", value_parser = logs::parse_duration)]
        wait: std::time::Duration,
    },
}

/// Where the control plane is and the key to use.
#[derive(clap::Args)]
struct ApiArgs {
    /// The control plane's HTTP address.
    #[arg(long, env = "LANEWATCH_URL", default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// An API key (`lw_<id>_<secret>`); without one, only a loopback control plane that allows
    /// anonymous local requests answers.
    #[arg(long, env = "LANEWATCH_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
}

impl ApiArgs {
    fn api(&self) -> anyhow::Result<Api> {
        Api::new(&self.url, self.api_key.clone())
    }
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
    /// Component history's write rate and size for 10,000 agents (`lanewatch-control bench history`).
    History,
    /// Introspection's overhead on the pipeline (`lanewatch-agent bench introspection`), the round
    /// trip of a full inspect on loopback (measured here: `--inspects N`, default 300), and the
    /// heartbeat-history write path (`lanewatch-control bench history`, `--history-secs N`,
    /// default 10); other arguments go to the agent's bench.
    Introspection,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
    };
    let result = match cli.command {
        Cmd::Bench { which: Bench::Introspection, args } => {
            runtime().and_then(|rt| rt.block_on(bench::introspection(&args)))
        }
        Cmd::Bench { which, args } => return bench(which, &args),
        Cmd::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(args))),
        Cmd::Agents { api, json } => {
            runtime().and_then(|rt| rt.block_on(async { fleet::agents(&api.api()?, json).await }))
        }
        Cmd::Inspect { api, agent, component, json } => runtime().and_then(|rt| {
            rt.block_on(async { fleet::inspect(&api.api()?, &agent, component.as_deref(), json).await })
        }),
        Cmd::Exec { api, agent, command, command_id, json } => runtime().and_then(|rt| {
            let exec = match &command {
                ExecCommand::Restart { component } => exec::Exec::Restart { component },
                ExecCommand::Pause { component } => exec::Exec::Pause { component },
                ExecCommand::Resume { component } => exec::Exec::Resume { component },
                ExecCommand::LogFilter { filter, duration } => {
                    exec::Exec::LogFilter { filter, for_secs: duration.as_secs() }
                }
                ExecCommand::TestCapture { camera, wait } => exec::Exec::TestCapture { camera, wait: *wait },
            };
            rt.block_on(async { exec::run(&api.api()?, &agent, exec, command_id.as_deref(), json).await })
        }),
        Cmd::Diagnose { api, agent, command_id, json } => runtime().and_then(|rt| {
            rt.block_on(async { exec::diagnose(&api.api()?, &agent, command_id.as_deref(), json).await })
        }),
        Cmd::Logs { api, agent, level, target, since, grep, limit, follow, json } => {
            runtime().and_then(|rt| {
                let args = logs::LogsArgs {
                    agent: &agent,
                    level: level.as_deref(),
                    target: target.as_deref(),
                    since,
                    grep: grep.as_deref(),
                    limit,
                    follow,
                    json,
                };
                rt.block_on(async { logs::run(&api.api()?, &args).await })
            })
        }
        Cmd::History { api, agent, component, since, json } => runtime().and_then(|rt| {
            rt.block_on(async { history::run(&api.api()?, &agent, &component, since, json).await })
        }),
        Cmd::Top { api, agent, interval } => {
            runtime().and_then(|rt| rt.block_on(async { top::run(api.api()?, &agent, interval).await }))
        }
        Cmd::Captures { api, site, decision, limit, json } => runtime().and_then(|rt| {
            rt.block_on(async {
                fleet::captures(&api.api()?, site.as_deref(), decision.as_deref(), limit, json).await
            })
        }),
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
        Bench::History => ("lanewatch-control", "history"),
        Bench::Introspection => unreachable!("lanewatch bench introspection runs in this binary"),
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

//! `lanewatch`: the operator and SRE command line. `lanewatch demo` runs a small fleet on the
//! embedded defaults: one control plane (SQLite + local image directory) and three simulated
//! agents at three highway sites, each a real `lanewatch-control` / `lanewatch-agent` process.
//!
//! The CLI depends on no Lanewatch crate: it drives the real binaries (found next to itself) and
//! the public GraphQL API, exactly as an operator would.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

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

#[derive(clap::Args)]
struct DemoArgs {
    /// HTTP port of the control plane (console, GraphQL, metrics); 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// gRPC port agents connect to; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    grpc_port: u16,
    /// Where the demo keeps its database, images, agent buffers and logs.
    #[arg(long, default_value = ".lanewatch-demo")]
    data_dir: PathBuf,
    /// Drain and exit once the first capture is queryable (for smoke tests and timing).
    #[arg(long)]
    stop_after_first_capture: bool,
}

/// The demo's three sites: (site id, lanes, flow veh/h/lane).
const SITES: &[(&str, u32, u32)] =
    &[("i405-nb-mp12", 3, 1400), ("sr520-eb-mp3", 2, 1100), ("i90-wb-mp7", 2, 900)];

/// How long children get to drain after SIGTERM before they are killed.
const DRAIN: Duration = Duration::from_secs(20);

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
            .and_then(|rt| rt.block_on(demo(args))),
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

/// A child process in its own process group (so that Ctrl-C reaches only the demo, which then
/// stops the fleet in order: agents first, so they can flush, then the control plane).
struct Managed {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Managed {
    fn spawn(name: &str, cmd: &mut Command, logs: &Path) -> Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name: name.to_owned(), child, log })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then wait up to `grace`, then SIGKILL. Returns whether it exited cleanly.
    async fn stop(&mut self, grace: Duration) -> bool {
        if let Some(status) = self.exited() {
            return status.success();
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.exited() {
                if !status.success() {
                    eprintln!("{} exited with {status}; see {}", self.name, self.log.display());
                }
                return status.success();
            }
            if Instant::now() > deadline {
                eprintln!("{} did not drain within {grace:?}; killing it", self.name);
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the lanewatch binary")?;
    let path = exe.parent().context("binary directory")?.join(name);
    if !path.exists() {
        bail!(
            "{} not found next to lanewatch; build the workspace (`cargo build --workspace --bins`)",
            path.display()
        );
    }
    Ok(path)
}

/// Waits (bounded) for a ready file written atomically by a starting binary.
async fn ready_file(path: &Path, proc: &mut Managed) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text).context("parsing ready file");
        }
        if let Some(status) = proc.exited() {
            bail!("{} exited with {status} while starting; see {}", proc.name, proc.log.display());
        }
        if Instant::now() > deadline {
            bail!("{} not ready within 60s; see {}", proc.name, proc.log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn control_config(dir: &Path, http_port: u16, grpc_port: u16) -> String {
    format!(
        "# Demo control plane: embedded defaults (SQLite + local image directory), loopback only.\n\
         version = 1\n\n[grpc]\nlisten = \"127.0.0.1:{grpc_port}\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
         [database]\nurl = \"sqlite://{}?mode=rwc\"\n\n[blob]\nkind = \"local\"\ndir = {:?}\n",
        dir.join("control/lanewatch.db").display(),
        dir.join("control/images"),
    )
}

fn agent_config(dir: &Path, site: &str, lanes: u32, flow: u32, seed: u64, grpc: &str) -> String {
    let lane_list: Vec<String> = (0..lanes).map(|l| l.to_string()).collect();
    format!(
        "# Demo agent for {site}: simulated traffic, LIDAR and camera.\n\
         version = 1\nagent_id = \"agent-{site}\"\nsite_id = \"{site}\"\n\n\
         [control_plane]\nurl = \"http://{grpc}\"\n\n[buffer]\npath = {:?}\n\n\
         [site]\nlanes = {lanes}\n\n[simulator]\nseed = {seed}\nflow_veh_h_per_lane = {flow}\n\
         ground_truth_path = {:?}\n\n\
         [[cameras]]\nid = \"front\"\nlanes = [{}]\ntrigger_delay_ms = 120\nfps = 10\n\n\
         [cameras.source]\nkind = \"simulator\"\n",
        dir.join("buffer"),
        dir.join("ground-truth.jsonl"),
        lane_list.join(", "),
    )
}

async fn demo(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let data = std::path::absolute(&args.data_dir)?;
    let logs = data.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    std::fs::create_dir_all(data.join("control"))?;

    let control_toml = data.join("control/control.toml");
    std::fs::write(&control_toml, control_config(&data, args.http_port, args.grpc_port))?;
    let control_ready = data.join("control/ready.json");
    let _ = std::fs::remove_file(&control_ready);
    let mut control = Managed::spawn(
        "control-plane",
        Command::new(sibling_binary("lanewatch-control")?)
            .arg("--config")
            .arg(&control_toml)
            .arg("--ready-file")
            .arg(&control_ready),
        &logs,
    )?;
    let ready = ready_file(&control_ready, &mut control).await?;
    let http = ready["http_addr"].as_str().context("control plane ready file: http_addr")?.to_owned();
    let grpc = ready["grpc_addr"].as_str().context("control plane ready file: grpc_addr")?.to_owned();

    let mut agents = Vec::new();
    for (i, (site, lanes, flow)) in SITES.iter().enumerate() {
        let dir = data.join("agents").join(site);
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("agent.toml");
        std::fs::write(&config, agent_config(&dir, site, *lanes, *flow, 1000 + i as u64, &grpc))?;
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut agent = Managed::spawn(
            &format!("agent-{site}"),
            Command::new(sibling_binary("lanewatch-agent")?)
                .arg("--config")
                .arg(&config)
                .arg("--ready-file")
                .arg(&ready),
            &logs,
        )?;
        if let Err(e) = ready_file(&ready, &mut agent).await {
            agents.push(agent);
            shutdown(&mut agents, &mut control).await;
            return Err(e);
        }
        agents.push(agent);
    }

    println!("Lanewatch demo fleet is up ({} agents at {} sites)", agents.len(), SITES.len());
    println!("  console    http://{http}/");
    println!("  GraphQL    http://{http}/graphql   (GraphiQL in a browser)");
    println!("  metrics    http://{http}/metrics");
    println!("  agent gRPC {grpc} (plaintext, loopback only)");
    println!("  data+logs  {}", data.display());
    println!("Ctrl-C drains the agents, then the control plane, and exits.");

    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let mut first_seen = false;
    let mut last_report = Instant::now();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome: Result<()> = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if let Some(status) = control.exited() {
            break Err(anyhow::anyhow!("control plane exited with {status}; see {}", control.log.display()));
        }
        if let Some(agent) =
            agents.iter_mut().find_map(|a| a.exited().map(|s| (a.name.clone(), s, a.log.clone())))
        {
            break Err(anyhow::anyhow!("{} exited with {}; see {}", agent.0, agent.1, agent.2.display()));
        }
        if !first_seen || last_report.elapsed() > Duration::from_secs(15) {
            match count_captures(&client, &http).await {
                Ok(Some((total, newest))) => {
                    if !first_seen {
                        first_seen = true;
                        println!(
                            "first capture queryable {:.1}s after start: {newest}",
                            started.elapsed().as_secs_f64()
                        );
                        if args.stop_after_first_capture {
                            break Ok(());
                        }
                    } else {
                        println!("{total} captures so far; newest: {newest}");
                    }
                    last_report = Instant::now();
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "graphql poll failed"),
            }
        }
    };
    println!("draining the fleet");
    let clean = shutdown(&mut agents, &mut control).await;
    outcome?;
    if !clean {
        bail!("not every process drained cleanly; see the logs in {}", logs.display());
    }
    println!("stopped cleanly");
    Ok(())
}

/// Stops agents first (so they flush to a live control plane), then the control plane.
async fn shutdown(agents: &mut [Managed], control: &mut Managed) -> bool {
    // Signal every agent at once so they drain in parallel, then collect them.
    for agent in agents.iter_mut() {
        if agent.exited().is_none() {
            let _ = kill(Pid::from_raw(agent.child.id() as i32), Signal::SIGTERM);
        }
    }
    let mut clean = true;
    for agent in agents.iter_mut() {
        clean &= agent.stop(DRAIN).await;
    }
    clean &= control.stop(DRAIN).await;
    clean
}

/// Total captures (first page, up to 100) and a description of the newest one.
async fn count_captures(client: &reqwest::Client, http: &str) -> Result<Option<(String, String)>> {
    let body = serde_json::json!({
        "query": "{ captures(first: 100) { edges { node { id site lane vehicleClass capturedAt } } pageInfo { hasNextPage } } }"
    });
    let response: serde_json::Value =
        client.post(format!("http://{http}/graphql")).json(&body).send().await?.json().await?;
    let edges = response["data"]["captures"]["edges"].as_array().cloned().unwrap_or_default();
    let Some(newest) = edges.first() else { return Ok(None) };
    let n = &newest["node"];
    let more = response["data"]["captures"]["pageInfo"]["hasNextPage"].as_bool() == Some(true);
    let total = if more { format!("{}+", edges.len()) } else { edges.len().to_string() };
    Ok(Some((
        total,
        format!(
            "{} at {} lane {} ({}) {}",
            n["id"].as_str().unwrap_or("?"),
            n["site"].as_str().unwrap_or("?"),
            n["lane"],
            n["vehicleClass"].as_str().unwrap_or("?"),
            n["capturedAt"].as_str().unwrap_or("?")
        ),
    )))
}

//! `lanewatch demo`: a small fleet on the embedded defaults, one control plane (SQLite + local
//! image directory) and three simulated agents at three highway sites, each a real
//! `lanewatch-control` / `lanewatch-agent` process, vision on. The demo sets each site's HOV lane
//! policy through GraphQL with an admin key of its own, then reports when the first capture,
//! the first counted capture and the first violation candidate became queryable, and how many
//! captures fall under each decision.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::api::{Api, DECISIONS, GraphqlErrors};
use crate::process::{DRAIN, Managed, ready_file, sibling_binary};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// HTTP port of the control plane (console, GraphQL, metrics); 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// gRPC port agents connect to; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    grpc_port: u16,
    /// Port of the first agent's local web UI (the next agents take the next ports); 0 picks
    /// free ones.
    #[arg(long, default_value_t = 8090)]
    ui_port: u16,
    /// Where the demo keeps its database, images, agent buffers and logs.
    #[arg(long, default_value = ".lanewatch-demo")]
    data_dir: PathBuf,
    /// Drain and exit once the first capture is queryable (for smoke tests and timing).
    #[arg(long)]
    stop_after_first_capture: bool,
    /// Drain and exit once a counted capture and a violation candidate are queryable.
    #[arg(long)]
    stop_after_first_violation: bool,
    /// What `scripts/setup.sh` installed: ONNX Runtime, the face models and the face photos the
    /// simulated cabins are drawn from.
    #[arg(long, default_value = ".tools")]
    tools_dir: PathBuf,
}

/// One demo site: a highway location with an HOV lane (its leftmost) under a policy.
struct DemoSite {
    id: &'static str,
    lanes: u32,
    flow_veh_h_per_lane: u32,
    /// Occupants the HOV lane requires: 2 for HOV 2+, 3 for HOV 3+.
    hov_min_occupants: u32,
}

/// The demo's three sites; SR 520's HOV lane is 3+, the others 2+.
const SITES: &[DemoSite] = &[
    DemoSite { id: "i405-nb-mp12", lanes: 3, flow_veh_h_per_lane: 1400, hov_min_occupants: 2 },
    DemoSite { id: "sr520-eb-mp3", lanes: 2, flow_veh_h_per_lane: 1100, hov_min_occupants: 3 },
    DemoSite { id: "i90-wb-mp7", lanes: 2, flow_veh_h_per_lane: 900, hov_min_occupants: 2 },
];

/// A control plane this command started, ready.
pub(crate) struct ControlPlane {
    pub control: Managed,
    pub control_toml: PathBuf,
    /// Its HTTP and gRPC addresses, as its ready file says.
    pub http: String,
    pub grpc: String,
}

/// Starts a control plane on embedded defaults under `data/control` (`0` ports: any free one),
/// its log in `logs`, and waits until it is ready; stopped again if it never gets there.
pub(crate) async fn start_control_plane(
    data: &Path,
    logs: &Path,
    http_port: u16,
    grpc_port: u16,
) -> Result<ControlPlane> {
    std::fs::create_dir_all(data.join("control"))?;
    let control_toml = data.join("control/control.toml");
    std::fs::write(&control_toml, control_config(data, http_port, grpc_port))?;
    let control_ready = data.join("control/ready.json");
    let _ = std::fs::remove_file(&control_ready);
    let mut control = Managed::spawn(
        "control-plane",
        Command::new(sibling_binary("lanewatch-control")?)
            .arg("--config")
            .arg(&control_toml)
            .arg("--ready-file")
            .arg(&control_ready),
        logs,
    )?;
    let addrs = async {
        let ready = ready_file(&control_ready, &mut control).await?;
        let addr = |key: &str| {
            ready[key].as_str().map(str::to_owned).with_context(|| format!("control plane ready file: {key}"))
        };
        Ok::<_, anyhow::Error>((addr("http_addr")?, addr("grpc_addr")?))
    }
    .await;
    match addrs {
        Ok((http, grpc)) => Ok(ControlPlane { control, control_toml, http, grpc }),
        Err(e) => {
            control.stop(DRAIN).await;
            Err(e)
        }
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

/// Paths of what vision needs, checked before any process starts.
struct VisionTools {
    runtime: PathBuf,
    model: PathBuf,
    faces: PathBuf,
}

impl VisionTools {
    fn find(dir: &Path) -> Result<Self> {
        let dir = std::path::absolute(dir)?;
        let tools = Self {
            runtime: dir.join("onnxruntime/libonnxruntime.so"),
            model: dir.join("models/centerface-int8.onnx"),
            faces: dir.join("faces"),
        };
        for path in [&tools.runtime, &tools.model, &tools.faces.join("lfw_subset.npy")] {
            if !path.exists() {
                bail!("{} is missing: run scripts/setup.sh (or pass --tools-dir)", path.display());
            }
        }
        Ok(tools)
    }
}

/// Seat sections of a 640 x 360 cabin view (the simulator's camera frame): the front row seen
/// through the windscreen, the rear bench below it.
const CABIN_SECTIONS: &str = "[[vision.cameras.sections]]\nname = \"front_passenger\"\npolygon = [[40, 40], [300, 40], [300, 200], [40, 200]]\n\
     [[vision.cameras.sections]]\nname = \"driver\"\npolygon = [[340, 40], [600, 40], [600, 200], [340, 200]]\n\
     [[vision.cameras.sections]]\nname = \"rear_row_1\"\npolygon = [[60, 210], [580, 210], [580, 340], [60, 340]]\n";

/// A demo agent: simulated traffic, LIDAR and one cabin camera per lane, vision on (the 8-bit
/// CenterFace from setup), and the site's HOV lane under its policy.
fn agent_config(
    dir: &Path,
    site: &DemoSite,
    seed: u64,
    grpc: &str,
    ui_port: u16,
    tools: &VisionTools,
) -> String {
    let DemoSite { id, lanes, flow_veh_h_per_lane: flow, hov_min_occupants } = site;
    let hov_lane = lanes - 1;
    let mut text = format!(
        "# Demo agent for {id}: simulated traffic, LIDAR and cabin cameras; lane {hov_lane} is HOV {hov_min_occupants}+.\n\
         version = 1\nagent_id = \"agent-{id}\"\nsite_id = \"{id}\"\n\n\
         [control_plane]\nurl = \"http://{grpc}\"\n\n[buffer]\npath = {:?}\n\n\
         [local_ui]\nlisten = \"127.0.0.1:{ui_port}\"\n\n\
         [site]\nlanes = {lanes}\n\n[simulator]\nseed = {seed}\nflow_veh_h_per_lane = {flow}\n\
         ground_truth_path = {:?}\nface_photos_path = {:?}\n\n",
        dir.join("buffer"),
        dir.join("ground-truth.jsonl"),
        tools.faces,
    );
    for lane in 0..*lanes {
        text += &format!(
            "[[cameras]]\nid = \"lane-{lane}\"\nlanes = [{lane}]\ntrigger_delay_ms = 120\nfps = 10\n\
             [cameras.source]\nkind = \"simulator\"\n\n"
        );
    }
    text += &format!(
        "[vision]\nruntime_path = {:?}\nworkers = 1\nquarantine_path = {:?}\nfuse_wait_ms = 500\n\
         [vision.face_model]\npath = {:?}\n\n",
        tools.runtime,
        dir.join("quarantine"),
        tools.model,
    );
    for lane in 0..*lanes {
        text += &format!("[[vision.cameras]]\nid = \"lane-{lane}\"\n{CABIN_SECTIONS}\n");
    }
    text += &format!("[[vision.policy]]\nlanes = [{hov_lane}]\nmin_occupants = {hov_min_occupants}\n");
    text
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let since = chrono::Utc::now();
    let tools = VisionTools::find(&args.tools_dir)?;
    let data = std::path::absolute(&args.data_dir)?;
    let logs = data.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let ControlPlane { mut control, control_toml, http, grpc } =
        start_control_plane(&data, &logs, args.http_port, args.grpc_port).await?;

    // The control plane decides on violations with its own lane policies (admins set them): the
    // demo gets an admin key, and puts each site's HOV lane under its policy as soon as the
    // site's agent has said Hello (which creates the site), before its first capture.
    let (api, admin_key) = match demo_admin_api(&http, &control_toml, &data).await {
        Ok(api) => api,
        Err(e) => {
            shutdown(&mut [], &mut control).await;
            return Err(e);
        }
    };

    let mut agents = Vec::new();
    let mut ui_urls = Vec::new();
    for (i, site) in SITES.iter().enumerate() {
        let dir = data.join("agents").join(site.id);
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("agent.toml");
        let ui_port = if args.ui_port == 0 { 0 } else { args.ui_port.saturating_add(i as u16) };
        std::fs::write(&config, agent_config(&dir, site, 1000 + i as u64, &grpc, ui_port, &tools))?;
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut agent = Managed::spawn(
            &format!("agent-{}", site.id),
            Command::new(sibling_binary("lanewatch-agent")?)
                .arg("--config")
                .arg(&config)
                .arg("--ready-file")
                .arg(&ready),
            &logs,
        )?;
        let up = match ready_file(&ready, &mut agent).await {
            Ok(ready) => {
                ui_urls.push(ready["ui_url"].as_str().unwrap_or("off").to_owned());
                set_policy(&api, site).await
            }
            Err(e) => Err(e),
        };
        agents.push(agent);
        if let Err(e) = up {
            shutdown(&mut agents, &mut control).await;
            return Err(e);
        }
    }

    println!("Lanewatch demo fleet is up ({} agents at {} sites)", agents.len(), SITES.len());
    for (site, ui) in SITES.iter().zip(&ui_urls) {
        println!(
            "  site {:<13} {} lanes, lane {} is HOV {}+ (agent-{}, local UI {ui})",
            site.id,
            site.lanes,
            site.lanes - 1,
            site.hov_min_occupants,
            site.id
        );
    }
    println!("  console    http://{http}/");
    println!("  GraphQL    http://{http}/graphql   (GraphiQL in a browser)");
    println!("  metrics    http://{http}/metrics");
    println!("  agent gRPC {grpc} (plaintext, loopback only)");
    println!("  admin key  {}", data.join("control/demo-admin.key").display());
    println!("For the lanewatch command line:");
    println!("  export LANEWATCH_URL=http://{http} LANEWATCH_API_KEY={admin_key}");
    println!("  data+logs  {}", data.display());
    println!(
        "Vision is on: occupants are counted per seat section and faces blurred before anything is stored."
    );
    println!(
        "Decisions: compliant or violation candidate in the HOV lanes, unreadable when vision could not \
         count, unknown where no lane policy applies (general-purpose lanes)."
    );
    println!("Ctrl-C drains the agents, then the control plane, and exits.");

    let mut milestones = Milestones::default();
    let mut last_report: Option<Instant> = None;
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
        let stats = match fleet_stats(&api, since).await {
            Ok(stats) => stats,
            Err(e) => {
                tracing::debug!(error = %e, "graphql poll failed");
                continue;
            }
        };
        let at = started.elapsed().as_secs_f64();
        let mut news = false;
        if let (None, Some(newest)) = (milestones.first_capture, &stats.newest) {
            milestones.first_capture = Some(at);
            println!("first capture queryable {at:.1}s after start: {newest}");
            news = true;
        }
        if let (None, Some(counted)) = (milestones.first_counted, &stats.newest_counted) {
            milestones.first_counted = Some(at);
            println!("first counted capture {at:.1}s after start: {counted}");
            news = true;
        }
        if let (None, Some(violation)) = (milestones.first_violation, &stats.newest_violation) {
            milestones.first_violation = Some(at);
            println!("first violation candidate {at:.1}s after start: {violation}");
            news = true;
        }
        if (news || last_report.is_none_or(|t| t.elapsed() > Duration::from_secs(15))) && stats.total > 0 {
            println!("{}", stats.summary());
            last_report = Some(Instant::now());
        }
        if args.stop_after_first_capture && milestones.first_capture.is_some() {
            break Ok(());
        }
        if args.stop_after_first_violation
            && milestones.first_counted.is_some()
            && milestones.first_violation.is_some()
        {
            break Ok(());
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

const SET_LANE_POLICY: &str = "mutation($site: String!, $lane: Int!, $min: Int!) {
  setLanePolicy(site: $site, lane: $lane, minOccupants: $min) { site lane minOccupants } }";

/// How long the demo waits for an agent's site to appear (its Hello) before it gives up on
/// setting the site's lane policy.
const SITE_APPEARS_WITHIN: Duration = Duration::from_secs(20);

/// The API with an admin key for the demo (kept in the data directory and reused by later
/// runs), checked against the control plane with an admin-only query.
async fn demo_admin_api(http: &str, control_toml: &Path, data: &Path) -> Result<(Api, String)> {
    let path = data.join("control/demo-admin.key");
    if let Ok(saved) = std::fs::read_to_string(&path) {
        let saved = saved.trim().to_owned();
        let api = Api::new(http, Some(saved.clone()))?;
        match check_admin_key(&api).await {
            Ok(()) => return Ok((api, saved)),
            Err(e) => {
                tracing::info!(error = %e, path = %path.display(), "the saved demo admin key is refused; making a new one")
            }
        }
    }
    let key = create_admin_key(control_toml)?;
    let api = Api::new(http, Some(key.clone()))?;
    check_admin_key(&api)
        .await
        .context("the control plane refused the admin key lanewatch-control create-api-key just made")?;
    std::fs::write(&path, format!("{key}\n")).with_context(|| format!("writing {}", path.display()))?;
    Ok((api, key))
}

pub(crate) fn create_admin_key(control_toml: &Path) -> Result<String> {
    let out = Command::new(sibling_binary("lanewatch-control")?)
        .arg("create-api-key")
        .arg("--config")
        .arg(control_toml)
        .args(["--name", "demo-admin", "--role", "admin"])
        .output()
        .context("running lanewatch-control create-api-key")?;
    if !out.status.success() {
        bail!("create-api-key failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

async fn check_admin_key(api: &Api) -> Result<()> {
    api.query("{ apiKeys { id } }", serde_json::json!({})).await.map(drop)
}

/// Puts the site's HOV lane under its policy. A site exists once its agent said Hello, so a
/// NOT_FOUND answer is retried until [`SITE_APPEARS_WITHIN`].
async fn set_policy(api: &Api, site: &DemoSite) -> Result<()> {
    let variables =
        serde_json::json!({ "site": site.id, "lane": site.lanes - 1, "min": site.hov_min_occupants });
    let deadline = Instant::now() + SITE_APPEARS_WITHIN;
    loop {
        match api.query(SET_LANE_POLICY, variables.clone()).await {
            Ok(_) => return Ok(()),
            Err(e)
                if Instant::now() < deadline
                    && e.downcast_ref::<GraphqlErrors>().is_some_and(|g| g.has_code("NOT_FOUND")) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "setting the HOV {}+ policy of lane {} at {}",
                    site.hov_min_occupants,
                    site.lanes - 1,
                    site.id
                )));
            }
        }
    }
}

/// Seconds after start at which the demo first saw each kind of capture.
#[derive(Default)]
struct Milestones {
    first_capture: Option<f64>,
    first_counted: Option<f64>,
    first_violation: Option<f64>,
}

/// Stops agents first (so they flush to a live control plane), then the control plane.
pub(crate) async fn shutdown(agents: &mut [Managed], control: &mut Managed) -> bool {
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

/// What the fleet has stored since the demo started, as the public GraphQL API reports it.
struct FleetStats {
    total: u64,
    /// Captures per decision, in [`DECISIONS`] order.
    by_decision: Vec<(String, u64)>,
    newest: Option<String>,
    newest_counted: Option<String>,
    newest_violation: Option<String>,
}

impl FleetStats {
    fn summary(&self) -> String {
        let parts: Vec<String> = DECISIONS
            .iter()
            .map(|d| {
                let n = self.by_decision.iter().find(|(k, _)| k == d).map_or(0, |(_, n)| *n);
                format!("{n} {}", d.to_lowercase().replace('_', " "))
            })
            .collect();
        format!("{} captures: {}", self.total, parts.join(", "))
    }
}

const FLEET_STATS: &str = "query($since: DateTime!) {
  captureCounts(from: $since) { total byDecision { decision count } }
  newest: captures(first: 1, from: $since) { edges { node { ...c } } }
  counted: captures(first: 1, from: $since, minOccupants: 0) { edges { node { ...c } } }
  violation: captures(first: 1, from: $since, decision: VIOLATION_CANDIDATE) { edges { node { ...c } } }
}
fragment c on Capture { id site lane vehicleClass capturedAt decision occupancy { status occupants }
  sections { section occupants } }";

async fn fleet_stats(api: &Api, since: chrono::DateTime<chrono::Utc>) -> Result<FleetStats> {
    let data = api.query(FLEET_STATS, serde_json::json!({ "since": since.to_rfc3339() })).await?;
    let data = &data;
    let counts = &data["captureCounts"];
    let first = |name: &str| data[name]["edges"].get(0).map(|e| describe(&e["node"]));
    Ok(FleetStats {
        total: counts["total"].as_u64().unwrap_or(0),
        by_decision: counts["byDecision"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| (d["decision"].as_str().unwrap_or("?").to_owned(), d["count"].as_u64().unwrap_or(0)))
            .collect(),
        newest: first("newest"),
        newest_counted: first("counted"),
        newest_violation: first("violation"),
    })
}

/// One line about a capture: where, what, and what vision made of it.
fn describe(n: &serde_json::Value) -> String {
    let occupancy = match n["occupancy"]["status"].as_str() {
        Some("COUNTED") => {
            let sections: Vec<String> = n["sections"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| format!("{} {}", s["section"].as_str().unwrap_or("?"), s["occupants"]))
                .collect();
            format!("{} occupants ({})", n["occupancy"]["occupants"], sections.join(", "))
        }
        Some(other) => format!("occupancy {}", other.to_lowercase()),
        None => "occupancy ?".to_owned(),
    };
    format!(
        "{} at {} lane {} ({}), {}, {}",
        n["id"].as_str().unwrap_or("?"),
        n["site"].as_str().unwrap_or("?"),
        n["lane"],
        n["vehicleClass"].as_str().unwrap_or("?").to_lowercase(),
        occupancy,
        n["decision"].as_str().unwrap_or("?").to_lowercase().replace('_', " "),
    )
}

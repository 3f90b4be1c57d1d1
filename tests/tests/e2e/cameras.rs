//! Real camera sources end to end: an OpenCV camera reading an image sequence, and a GigE Vision
//! camera (Debian's `arv-fake-gv-camera-0.8`, through Aravis) inside a private network namespace,
//! deliver their frames into captures; a source that vanishes or a camera that is killed makes
//! the agent report the camera failed or stalled, keep running, and capture again once the
//! source is back.
//!
//! GigE discovery broadcasts on every interface, so the fake camera and the agent run in a
//! network namespace of their own (`unshare --net`, only `lo` up); the agent reaches the control
//! plane through a relay whose listening socket this test opens inside that namespace.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use lanewatch_tests::{AgentBuilder, Blob, CameraSource, ControlPlane, Db, Proc, WAIT};
use serde_json::{Value, json};

const FAKE_CAMERA: &str = "arv-fake-gv-camera-0.8";

/// Supervision that lets a camera be gone for a while without escalating.
const PATIENT_SUPERVISION: &str =
    "\n[supervision]\nmax_restarts = 200\nwindow_secs = 60\nbackoff_min_ms = 100\nbackoff_max_ms = 500\n";

/// Captures of `agent_id` captured after `after`, oldest first.
async fn captures_of(cp: &ControlPlane, agent_id: &str, after: DateTime<Utc>) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let data = cp
            .graphql(
                "query($after: String) { captures(first: 100, after: $after) {
                    edges { cursor node { id agentId cameraId capturedAt imageUrl speedKmh } }
                    pageInfo { hasNextPage endCursor } } }",
                json!({ "after": cursor }),
            )
            .await?;
        let conn = &data["captures"];
        out.extend(conn["edges"].as_array().into_iter().flatten().map(|e| e["node"].clone()));
        if conn["pageInfo"]["hasNextPage"] != true {
            break;
        }
        cursor = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    let at = |c: &Value| c["capturedAt"].as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok());
    let mut captures: Vec<Value> =
        out.into_iter().filter(|c| c["agentId"] == agent_id && at(c).is_some_and(|t| t > after)).collect();
    captures.sort_by_key(at);
    Ok(captures)
}

async fn capture_image(cp: &ControlPlane, capture: &Value) -> Result<image::RgbImage> {
    let url = capture["imageUrl"].as_str().context("imageUrl")?;
    let bytes = cp.get(url).await?.bytes().await?;
    Ok(image::load_from_memory(&bytes).context("decoding the capture's image")?.to_rgb8())
}

/// Mean colour of an image.
fn mean_rgb(img: &image::RgbImage) -> [f64; 3] {
    let mut sum = [0f64; 3];
    for p in img.pixels() {
        for c in 0..3 {
            sum[c] += f64::from(p[c]);
        }
    }
    let n = f64::from(img.width() * img.height()).max(1.0);
    sum.map(|s| s / n)
}

/// The agent's component `name` as introspection shows it, with its typed state.
async fn component(cp: &ControlPlane, agent_id: &str, name: &str) -> Result<Option<Value>> {
    let components = cp.components(agent_id).await?;
    Ok(components.into_iter().find(|c| c["name"] == name))
}

fn write_sequence(dir: &Path, frames: u32, rgb: [u8; 3]) -> Result<()> {
    for i in 0..frames {
        let img = image::RgbImage::from_pixel(160, 120, image::Rgb(rgb));
        img.save(dir.join(format!("f{i:04}.png")))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencv_image_sequence_becomes_captures_and_a_vanished_source_is_survived() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let root = tempfile::tempdir()?;
    let frames = root.path().join("frames");
    std::fs::create_dir(&frames)?;
    write_sequence(&frames, 10, [20, 200, 40])?;
    let uri = frames.join("f%04d.png");
    let mut agent = AgentBuilder::new(&cp, "site-cv")
        .flow(2500)
        .camera(CameraSource::Toml(format!("kind = \"opencv\"\nuri = {:?}\n", uri.to_str().unwrap())))
        .extra_toml(PATIENT_SUPERVISION)
        .start()?;

    let start = DateTime::<Utc>::UNIX_EPOCH;
    let first = cp
        .wait_for("captures from the opencv camera", || async {
            let c = captures_of(&cp, &agent.id, start).await?;
            Ok((c.len() >= 2).then_some(c))
        })
        .await?;
    for capture in &first[..2] {
        assert_eq!(capture["cameraId"], "front");
        let img = capture_image(&cp, capture).await?;
        assert_eq!(img.dimensions(), (160, 120), "the sequence's frame size");
        let [r, g, b] = mean_rgb(&img);
        assert!(g > 150.0 && r < 70.0 && b < 90.0, "the sequence's green frames, got {r:.0},{g:.0},{b:.0}");
    }

    // The sequence vanishes: the camera's restarts fail, naming camera and source; the agent lives.
    let gone = root.path().join("gone");
    std::fs::rename(&frames, &gone)?;
    let failed = cp
        .wait_for("the camera reported failing", || async {
            let c = component(&cp, &agent.id, "acquire-front").await?;
            Ok(c.filter(|c| {
                c["restarts"].as_i64().unwrap_or(0) >= 1
                    && c["lastFailure"].as_str().is_some_and(|f| f.contains("cannot open opencv source"))
            }))
        })
        .await?;
    let failure = failed["lastFailure"].as_str().unwrap();
    assert!(failure.contains("camera front") && failure.contains("f%04d.png"), "{failure}");
    assert!(agent.proc.try_status().is_none(), "the agent keeps running:\n{}", agent.proc.stderr());

    // It comes back: captures resume.
    std::fs::rename(&gone, &frames)?;
    let back = Utc::now();
    cp.wait_for("captures after the source is back", || async {
        Ok((!captures_of(&cp, &agent.id, back).await?.is_empty()).then_some(()))
    })
    .await?;
    assert!(agent.proc.try_status().is_none(), "the agent keeps running:\n{}", agent.proc.stderr());
    let status = agent.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}\n{}", agent.proc.stderr());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speed_plane_measures_speeds_and_captures_still_flow() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let agent = AgentBuilder::new(&cp, "site-speed")
        .flow(2500)
        .camera_toml("distance_from_lidar_m = 4.0")
        .extra_toml("\n[lidar]\nspeed_plane_offset_m = 4.0\n")
        .start()?;
    let detect = cp
        .wait_for("speeds measured at entry", || async {
            let c = component(&cp, &agent.id, "detect").await?;
            Ok(c.filter(|c| c["state"]["speedsMeasured"].as_u64().unwrap_or(0) >= 3))
        })
        .await?;
    assert_eq!(detect["status"], "RUNNING", "{detect}");
    let sense =
        component(&cp, &agent.id, "sense-speed").await?.context("the speed plane's sense component")?;
    assert_eq!(sense["status"], "RUNNING", "{sense}");
    // the speed measured on entry travels with the captures (the simulator drives 10..200 km/h)
    let with_speed = cp
        .wait_for("captures carrying a measured speed", || async {
            let captures = captures_of(&cp, &agent.id, DateTime::<Utc>::UNIX_EPOCH).await?;
            let speeds: Vec<f64> = captures.iter().filter_map(|c| c["speedKmh"].as_f64()).collect();
            Ok((speeds.len() >= 3).then_some(speeds))
        })
        .await?;
    assert!(with_speed.iter().all(|s| (10.0..=200.0).contains(s)), "plausible speeds: {with_speed:?}");
    Ok(())
}

/// A private network namespace (only `lo`, up), held by a sleeping process.
struct NetNs {
    holder: Proc,
    _dir: tempfile::TempDir,
}

impl NetNs {
    /// `None` (after saying so loudly) when this machine does not permit `unshare --net`.
    fn create() -> Result<Option<Self>> {
        let probe = Command::new("unshare").args(["--net", "true"]).output().context("running unshare")?;
        if !probe.status.success() {
            eprintln!(
                "\n!!!!!!!! SKIPPED: GigE camera test needs `unshare --net`, which this machine refuses: {} !!!!!!!!\n",
                String::from_utf8_lossy(&probe.stderr).trim()
            );
            return Ok(None);
        }
        let dir = tempfile::Builder::new().prefix("lanewatch-netns-").tempdir()?;
        let mut holder = Proc::spawn(
            "netns",
            Command::new("unshare").args([
                "--net",
                "sh",
                "-c",
                "ip link set lo up && echo up && exec sleep 600",
            ]),
            dir.path(),
        )?;
        let deadline = Instant::now() + WAIT;
        while !std::fs::read_to_string(&holder.stdout_path)?.contains("up") {
            if let Some(status) = holder.try_status() {
                bail!("the namespace holder exited with {status}: {}", holder.stderr());
            }
            if Instant::now() > deadline {
                bail!("the namespace did not come up: {}", holder.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Some(Self { holder, _dir: dir }))
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.pid())
    }

    /// `nsenter` prefix that runs a command inside.
    fn enter(&self) -> Vec<String> {
        vec!["nsenter".into(), format!("--net={}", self.path())]
    }

    /// Starts the fake GigE camera inside, on its loopback.
    fn fake_camera(&self, log_dir: &Path) -> Result<Proc> {
        Proc::spawn(
            "fake-camera",
            Command::new("nsenter").arg(format!("--net={}", self.path())).args([
                FAKE_CAMERA,
                "-i",
                "127.0.0.1",
            ]),
            log_dir,
        )
    }

    /// Relays TCP connections to `127.0.0.1:<port>` inside the namespace to `target` outside;
    /// returns the port. The listening socket is made by a thread that entered the namespace.
    async fn relay_to(&self, target: String) -> Result<(u16, tokio::task::JoinHandle<()>)> {
        let ns = self.path();
        let listener = std::thread::spawn(move || -> Result<std::net::TcpListener> {
            let file = std::fs::File::open(&ns).with_context(|| format!("opening {ns}"))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the namespace")?;
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))??;
        let port = listener.local_addr()?.port();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok((port, task))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gige_fake_camera_delivers_captures_and_a_killed_camera_is_survived() -> Result<()> {
    assert!(
        Command::new(FAKE_CAMERA).arg("--help").output().is_ok_and(|o| o.status.success()),
        "{FAKE_CAMERA} is missing: run scripts/setup.sh (Debian package aravis-tools)"
    );
    let Some(ns) = NetNs::create()? else { return Ok(()) };
    let logs = tempfile::Builder::new().prefix("lanewatch-gige-").tempdir()?;
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let target = cp.grpc_url().trim_start_matches("http://").to_owned();
    let (port, relay) = ns.relay_to(target).await?;
    let mut camera = ns.fake_camera(logs.path())?;
    let mut agent = AgentBuilder::new(&cp, "site-gige")
        .flow(2500)
        .control_url(&format!("http://127.0.0.1:{port}"))
        .wrapper(ns.enter())
        .camera(CameraSource::Toml("kind = \"gige\"\n".into()))
        .camera_toml("stall_after_ms = 1000")
        .extra_toml(PATIENT_SUPERVISION)
        .start()?;

    let start = DateTime::<Utc>::UNIX_EPOCH;
    let first = cp
        .wait_for("captures from the fake gige camera", || async {
            Ok(Some(captures_of(&cp, &agent.id, start).await?).filter(|c| c.len() >= 2))
        })
        .await
        .with_context(|| {
            format!("agent stderr:\n{}\nfake camera stderr:\n{}", agent.proc.stderr(), camera.stderr())
        })?;
    for capture in &first[..2] {
        assert_eq!(capture["cameraId"], "front");
        let img = capture_image(&cp, capture).await?;
        assert_ne!(img.dimensions(), (640, 360), "not the simulator's frame");
        let [r, g, b] = mean_rgb(&img);
        assert!(
            (r - g).abs() < 8.0 && (g - b).abs() < 8.0,
            "the fake camera's Mono8 frames are grey: {r},{g},{b}"
        );
    }

    // The camera dies: the agent sees the stall, keeps running and keeps trying.
    camera.signal(nix::sys::signal::Signal::SIGKILL);
    camera.wait(Duration::from_secs(10))?;
    let stalled = cp
        .wait_for("the camera reported stalled", || async {
            let c = component(&cp, &agent.id, "acquire-front").await?;
            Ok(c.filter(|c| c["state"]["stalls"].as_u64().unwrap_or(0) >= 1))
        })
        .await
        .with_context(|| agent.proc.stderr())?;
    assert!(stalled["lastFailure"].as_str().is_some_and(|f| f.contains("camera front stalled")), "{stalled}");
    assert!(agent.proc.try_status().is_none(), "the agent keeps running:\n{}", agent.proc.stderr());

    // The camera returns: captures resume.
    let _camera = ns.fake_camera(logs.path())?;
    let back = Utc::now();
    cp.wait_for("captures after the camera is back", || async {
        Ok((!captures_of(&cp, &agent.id, back).await?.is_empty()).then_some(()))
    })
    .await
    .with_context(|| agent.proc.stderr())?;
    assert!(agent.proc.try_status().is_none(), "the agent keeps running:\n{}", agent.proc.stderr());
    let status = agent.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}\n{}", agent.proc.stderr());
    relay.abort();
    Ok(())
}

//! Sensing end to end: scans always travel as SICK `LMDscandata` telegrams over TCP (from the
//! agent's in-process simulated scanner, from a `simulate-sick` process, or recorded with
//! `lanewatch-agent record` and replayed), and replaying one recording twice finds the same vehicles.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db, Proc, WAIT, bin, run_to_exit, wait_ready_file};
use serde_json::Value;
use tempfile::TempDir;

/// A `lanewatch-agent simulate-sick` process.
struct Scanner {
    proc: Proc,
    addr: String,
    _dir: TempDir,
}

/// Starts a simulated SICK scanner of a two-lane site with busy traffic.
fn simulated_scanner(framing: &str) -> Result<Scanner> {
    let dir = tempfile::Builder::new().prefix("lanewatch-scanner-").tempdir()?;
    let config = dir.path().join("scene.toml");
    std::fs::write(
        &config,
        "version = 1\nagent_id = \"scanner\"\nsite_id = \"lab\"\n\n[site]\nlanes = 2\n\n\
         [simulator]\nseed = 7\nflow_veh_h_per_lane = 2500\n\n[[cameras]]\nid = \"front\"\nlanes = [0, 1]\n",
    )?;
    let ready = dir.path().join("ready.json");
    let mut proc = Proc::spawn(
        "simulate-sick",
        Command::new(bin("lanewatch-agent"))
            .args(["simulate-sick", "--listen", "127.0.0.1:0", "--framing", framing, "--config"])
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "info"),
        dir.path(),
    )?;
    let ready = wait_ready_file(&ready, &mut proc)?;
    let addr = ready["addr"].as_str().context("ready file names the address")?.to_owned();
    Ok(Scanner { proc, addr, _dir: dir })
}

/// Polls `stderr()` of a process until it contains `needle`, bounded by [`WAIT`].
fn wait_for_log(proc: &mut Proc, needle: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if proc.stderr().contains(needle) {
            return Ok(());
        }
        if let Some(status) = proc.try_status() {
            bail!("{} exited with {status} before logging {needle:?}; stderr:\n{}", proc.name, proc.stderr());
        }
        if Instant::now() > deadline {
            bail!("{} did not log {needle:?} within {WAIT:?}; stderr:\n{}", proc.name, proc.stderr());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `sense` component as the agent reports it now, and its driver's typed state.
async fn sense(cp: &ControlPlane, agent_id: &str) -> Result<(Value, Value)> {
    let c = cp.component(agent_id, "sense").await?;
    let state = c["state"].clone();
    Ok((c, state))
}

async fn first_capture(cp: &ControlPlane, site: &str) -> Result<Value> {
    cp.wait_for("a capture from the site", || async {
        let captures = cp.all_captures().await?;
        Ok(captures.into_iter().find(|c| c["site"] == site))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_simulator_is_read_through_the_sick_driver_over_tcp() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let mut agent = AgentBuilder::new(&cp, "site-sim-tcp").flow(2500).start()?;
    let capture = first_capture(&cp, "site-sim-tcp").await?;
    assert_ne!(capture["vehicleClass"], "UNKNOWN", "{capture}");
    let log = agent.proc.stderr();
    assert!(log.contains("simulated sick scanner listening"), "{log}");
    assert!(log.contains("connected to sick scanner"), "{log}");
    agent.proc.terminate(Duration::from_secs(20))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reads_a_sick_scanner_and_outlives_it() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let mut scanner = simulated_scanner("cola_a")?;
    let mut agent = AgentBuilder::new(&cp, "site-sick")
        .extra_toml(&format!(
            "\n[lidar]\nsource = \"sick\"\naddress = {:?}\nframing = \"cola_a\"\nreconnect_max_ms = 500\n",
            scanner.addr
        ))
        .start()?;
    let capture = first_capture(&cp, "site-sick").await?;
    assert!(capture["lane"].as_i64().is_some_and(|l| (0..2).contains(&l)), "{capture}");
    // the driver's own state, read from the running agent
    let (_, detail) = sense(&cp, &agent.id).await?;
    assert_eq!(detail["__typename"], "LidarState", "{detail}");
    assert_eq!(detail["link"], "CONNECTED", "{detail}");
    assert_eq!(
        (detail["source"].as_str(), detail["origin"].as_str()),
        (Some("sick"), Some(scanner.addr.as_str())),
        "{detail}"
    );

    // the scanner goes away: the agent keeps retrying instead of failing, several times over
    scanner.proc.terminate(Duration::from_secs(10))?;
    let (c, detail) = cp
        .wait_for("the driver retrying the lost scanner", || async {
            let (c, detail) = sense(&cp, &agent.id).await?;
            Ok((detail["link"] == "CONNECTING" && detail["connectFailures"].as_u64() >= Some(3))
                .then_some((c, detail)))
        })
        .await?;
    assert_eq!(c["status"], "RUNNING", "retrying is not failing: {c} {detail}");
    assert!(agent.proc.try_status().is_none(), "agent exited: {}", agent.proc.stderr());
    agent.proc.terminate(Duration::from_secs(20))?;
    Ok(())
}

/// Replays `recording` as fast as possible and returns the detections without their times.
fn replay_detections(cp: &ControlPlane, site: &str, recording: &Path, out: PathBuf) -> Result<Vec<Value>> {
    let mut agent = AgentBuilder::new(cp, site)
        .extra_toml(&format!("\n[lidar]\nsource = \"replay\"\npath = {recording:?}\nspeed = 0\n"))
        .arg("--detections-out")
        .arg(&out)
        .start()?;
    wait_for_log(&mut agent.proc, "replay finished")?;
    // stopping drains the pipeline in order: every replayed scan reaches the detector
    let status = agent.proc.terminate(Duration::from_secs(30))?;
    assert!(status.success(), "{status}: {}", agent.proc.stderr());
    let text = std::fs::read_to_string(&out)?;
    text.lines()
        .map(|line| {
            let mut value: Value = serde_json::from_str(line)?;
            value.as_object_mut().context("detection is an object")?.remove("t");
            Ok(value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_recording_twice_finds_the_same_vehicles() -> Result<()> {
    let scanner = simulated_scanner("cola_b")?;
    let dir = tempfile::tempdir()?;
    let recording = dir.path().join("site.lwrec");
    let recording_arg = recording.to_str().context("utf-8 path")?;
    let (status, stderr) = run_to_exit(
        "lanewatch-agent",
        &[
            "record",
            "--address",
            &scanner.addr,
            "--framing",
            "cola_b",
            "--out",
            recording_arg,
            "--duration-secs",
            "12",
        ],
        Duration::from_secs(60),
    )?;
    assert!(status.success(), "record failed: {stderr}");
    assert!(stderr.contains("recording written"), "{stderr}");

    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let first = replay_detections(&cp, "site-replay-1", &recording, dir.path().join("first.jsonl"))?;
    let second = replay_detections(&cp, "site-replay-2", &recording, dir.path().join("second.jsonl"))?;
    let exits = first.iter().filter(|d| d["event"] == "exit").count();
    assert!(exits >= 2, "12 s of busy traffic hold vehicles: {first:#?}");
    assert_eq!(first, second, "two replays of one recording detect the same vehicles");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_recording_stops_the_agent_naming_the_offset() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let dir = tempfile::tempdir()?;
    // a valid header (CoLa-B) and a record cut short after 10 of its 16 header bytes
    let recording = dir.path().join("cut.lwrec");
    let mut bytes = b"LWSICKRC".to_vec();
    bytes.extend_from_slice(&[1, 0, 2, 0]);
    bytes.extend_from_slice(&[0; 10]);
    std::fs::write(&recording, bytes)?;
    let config = dir.path().join("agent.toml");
    let builder = AgentBuilder::new(&cp, "site-cut")
        .extra_toml(&format!("\n[lidar]\nsource = \"replay\"\npath = {recording:?}\n"));
    std::fs::write(&config, builder.config_toml(dir.path()))?;
    let (status, stderr) =
        run_to_exit("lanewatch-agent", &["--config", config.to_str().unwrap()], Duration::from_secs(30))?;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("recording truncated at offset 12: record header needs 16 bytes, 10 present"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

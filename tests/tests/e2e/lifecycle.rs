//! Processes start, report their supervised state, drain on SIGTERM and exit cleanly, and keep
//! what they accepted across a restart.

use anyhow::Result;
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_components_are_introspectable_through_graphql() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let agent = AgentBuilder::new(&cp, "site-i").start()?;
    let components = cp
        .wait_for("the agent's live component state", || async {
            let data = cp
                .graphql(
                    "query($id: ID!) { agent(id: $id) { online components { name status restarts processed inbox { depth capacity } } } }",
                    json!({ "id": agent.id }),
                )
                .await?;
            Ok(data["agent"]["components"].as_array().filter(|c| !c.is_empty()).cloned())
        })
        .await?;
    // the process reports itself with the components: this very agent process
    let process = cp
        .graphql(
            "query($id: ID!) { agent(id: $id) { process { rssBytes threads openFds uptimeSecs cpuSeconds
               bufferVolumeFreeBytes bufferVolumeTotalBytes softwareVersion configVersion modelVersion } } }",
            json!({ "id": agent.id }),
        )
        .await?["agent"]["process"]
        .clone();
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.proc.pid()))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|t| t.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    // this very process: its memory as the kernel reports it (the two reads are moments apart)
    let rss = process["rssBytes"].as_u64().unwrap();
    assert!(
        rss > 1 << 20 && rss / 2 < rss_kb * 1024 && rss_kb * 1024 / 2 < rss,
        "{process} vs VmRSS {rss_kb} kB"
    );
    assert!(process["threads"].as_u64().unwrap() >= 2, "a runtime and a camera at least: {process}");
    assert!(process["openFds"].as_u64().unwrap() >= 3, "{process}");
    assert!(process["uptimeSecs"].as_f64().unwrap() > 0.0, "{process}");
    assert!(
        process["bufferVolumeTotalBytes"].as_u64() >= process["bufferVolumeFreeBytes"].as_u64(),
        "{process}"
    );
    assert!(process["bufferVolumeFreeBytes"].as_u64().unwrap() > 0, "{process}");
    assert_eq!(process["softwareVersion"], env!("CARGO_PKG_VERSION"), "{process}");
    assert_eq!(process["modelVersion"], serde_json::Value::Null, "no vision, no model: {process}");
    // its clock against the control plane's, from a heartbeat round trip: both run on this
    // machine's one clock, so the true offset is 0 and the estimate is off by at most half the
    // round trip (the two legs' difference)
    let clock = cp
        .wait_for("a clock offset", || async {
            let data = cp
                .graphql(
                    "query($id: ID!) { agent(id: $id) { process { clockOffsetMs clockRoundTripMs clockMeasuredAt } } }",
                    json!({ "id": agent.id }),
                )
                .await?;
            let process = data["agent"]["process"].clone();
            Ok((!process["clockOffsetMs"].is_null()).then_some(process))
        })
        .await?;
    let (offset, rtt) =
        (clock["clockOffsetMs"].as_f64().unwrap(), clock["clockRoundTripMs"].as_f64().unwrap());
    assert!(rtt >= 0.0 && offset.abs() <= rtt / 2.0 + 1.0, "{clock}");

    let names: Vec<&str> = components.iter().filter_map(|c| c["name"].as_str()).collect();
    for expected in ["sense", "detect", "trigger", "uplink"] {
        assert!(names.iter().any(|n| n.starts_with(expected)), "{expected} in {names:?}");
    }
    for c in &components {
        assert_eq!(c["status"], "RUNNING", "{c}");
        assert_eq!(c["restarts"], 0, "{c}");
    }
    // every stage but the sources reports its input channel (256 items deep)
    for c in &components {
        let name = c["name"].as_str().unwrap();
        let source = name == "sense" || name == "uplink";
        assert_eq!(c["inbox"].is_null(), source, "{c}");
        if !source {
            assert_eq!(c["inbox"]["capacity"], 256, "{c}");
            assert!(c["inbox"]["depth"].as_u64().unwrap() <= 256, "{c}");
        }
    }

    // Introspection tells the truth: the uplink's acked count is what the control plane stored,
    // and its buffer block accounts for every capture appended (still buffered, acked and
    // deleted, or evicted). Captures keep arriving, so this waits for a moment between two.
    let (acked, buffer) = cp
        .wait_for("the uplink's state to match the stored captures", || async {
            let data = cp
                .graphql(
                    &format!(
                        "query($id: ID!) {{ captureCounts {{ total }}
                           agent(id: $id) {{ components {{ name processed state {{ ...State }} }} }} }}
                         {}",
                        lanewatch_tests::STATE_FRAGMENT
                    ),
                    json!({ "id": agent.id }),
                )
                .await?;
            let stored = data["captureCounts"]["total"].as_u64().unwrap_or(0);
            let components = data["agent"]["components"].as_array().cloned().unwrap_or_default();
            let Some(uplink) = components.iter().find(|c| c["name"] == "uplink") else { return Ok(None) };
            let state = &uplink["state"];
            let (acked, buffer) = (state["acked"].as_u64(), state["buffer"].clone());
            let field = |name: &str| buffer[name].as_u64();
            let accounted = || {
                Some(field("captures")? + stored + field("evicted")? + field("expired")? + field("damaged")?)
            };
            let consistent = stored >= 3
                && acked == Some(stored)
                && uplink["processed"].as_u64() == Some(stored)
                && field("appended").is_some()
                && field("appended") == accounted();
            Ok(consistent.then_some((stored, buffer)))
        })
        .await?;
    assert!(acked >= 3);
    let (bytes, max_bytes) = (buffer["bytes"].as_u64().unwrap(), buffer["maxBytes"].as_u64().unwrap());
    assert!(bytes <= max_bytes, "{buffer}");
    assert_eq!(bytes == 0, buffer["captures"] == 0, "bytes buffered iff captures buffered: {buffer}");

    // the load figures are the components' own: the scanner's source works all the time, so its
    // rate over its (short) life is its count over that life, and it has been busy
    let data = cp
        .graphql(
            "query($id: ID!) { agent(id: $id) { process { uptimeSecs } components { name processed failed waitingOn memoryBytes
               busySeconds busyRatio rates { oneMinute { processedPerSec failedPerSec busyRatio }
               fifteenMinutes { processedPerSec } } } } }",
            json!({ "id": agent.id }),
        )
        .await?;
    let uptime = data["agent"]["process"]["uptimeSecs"].as_f64().unwrap();
    let components = data["agent"]["components"].as_array().unwrap();
    let sense = components.iter().find(|c| c["name"] == "sense").unwrap();
    let (processed, rate) = (
        sense["processed"].as_f64().unwrap(),
        sense["rates"]["oneMinute"]["processedPerSec"].as_f64().unwrap(),
    );
    assert!(uptime < 60.0, "this test reads a young agent: {uptime}s");
    let lifetime_rate = processed / uptime;
    assert!(rate > lifetime_rate / 2.0 && rate < lifetime_rate * 2.0, "{sense} over {uptime}s");
    assert_eq!(
        sense["rates"]["fifteenMinutes"]["processedPerSec"],
        sense["rates"]["oneMinute"]["processedPerSec"]
    );
    assert!(sense["busySeconds"].as_f64().unwrap() > 0.0, "{sense}");
    // what each is waiting on; the uplink, answering between the control plane's messages,
    // says it waits on the control plane
    let uplink = components.iter().find(|c| c["name"] == "uplink").unwrap();
    assert_eq!(uplink["waitingOn"], "control_plane", "{uplink}");
    for c in components {
        // a camera measures the frames its ring holds, the buffer its index (the buffer may
        // be empty between two acks: then its index holds only its segments); the others (no
        // vision here) say nothing
        let name = c["name"].as_str().unwrap();
        if name.starts_with("acquire-") || name == "buffer" {
            assert!(c["memoryBytes"].as_u64().unwrap() > 0, "{c}");
        } else {
            assert!(c["memoryBytes"].is_null(), "{c}");
        }
        let waiting = c["waitingOn"].as_str().unwrap_or("");
        assert!(["nothing", "input", "downstream", "device", "control_plane"].contains(&waiting), "{c}");
        let busy = c["busyRatio"].as_f64().unwrap();
        assert!((0.0..4.0).contains(&busy), "{c}");
        assert_eq!(c["failed"], 0, "{c}");
        assert_eq!(c["rates"]["oneMinute"]["failedPerSec"], 0.0, "{c}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly_and_accepted_captures_survive() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let mut agent = AgentBuilder::new(&cp, "site-d").flow(2500).start()?;
    cp.wait_for("a capture", || async { Ok((!cp.all_captures().await?.is_empty()).then_some(())) }).await?;

    let status = agent.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "agent drains and exits 0: {status}\n{}", agent.proc.stderr());
    let before = cp.all_captures().await?.len();

    // Restarted on the same buffer, it goes on delivering; nothing is stored twice.
    agent.restart()?;
    cp.wait_for("more captures after the restart", || async {
        Ok((cp.all_captures().await?.len() > before).then_some(()))
    })
    .await?;
    let captures = cp.all_captures().await?;
    let mut ids: Vec<&str> = captures.iter().map(|c| c["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), captures.len(), "no capture stored twice");

    let mut cp = cp;
    let status = cp.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "control plane drains and exits 0: {status}\n{}", cp.proc.stderr());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_component_is_restarted_then_escalates_to_a_nonzero_exit() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let frames = tempfile::tempdir()?;
    let frame = frames.path().join("frame.jpg");
    std::fs::write(&frame, lanewatch_tests::noise_jpeg(64, 64, 5))?;
    let mut agent = AgentBuilder::new(&cp, "site-crash")
        .camera(lanewatch_tests::CameraSource::Replay(frames.path().into()))
        .extra_toml("\n[supervision]\nmax_restarts = 3\nwindow_secs = 60\nbackoff_min_ms = 50\nbackoff_max_ms = 200\n")
        .start()?;
    cp.wait_for("the camera component running", || async {
        let data = cp
            .graphql(
                "query($id: ID!) { agent(id: $id) { components { name status } } }",
                json!({ "id": agent.id }),
            )
            .await?;
        let running = data["agent"]["components"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["name"].as_str().is_some_and(|n| n.contains("front")) && c["status"] == "RUNNING")
        });
        Ok(running.then_some(()))
    })
    .await?;

    // The camera's source disappears: every restart of its component fails again.
    std::fs::remove_file(&frame)?;
    let status = agent.proc.wait(Duration::from_secs(30))?;
    let stderr = agent.proc.stderr();
    assert_eq!(status.code(), Some(3), "escalation exits 3: {status}\n{stderr}");
    assert!(stderr.contains("failed 4 times in 60s"), "names the component and its failures:\n{stderr}");
    assert!(stderr.contains("frame.jpg"), "and the last error:\n{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_graphiql_are_served() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    assert_eq!(cp.get(&cp.http_url("/healthz")).await?.status(), 200);
    assert_eq!(cp.get(&cp.http_url("/readyz")).await?.status(), 200);
    let metrics = cp.get(&cp.http_url("/metrics")).await?.text().await?;
    for name in ["sessions_active", "captures_ingested_total", "agents_online"] {
        assert!(metrics.contains(name), "/metrics exposes {name}:\n{metrics}");
    }
    let graphiql = cp.get(&cp.http_url("/graphql")).await?;
    assert_eq!(graphiql.status(), 200);
    assert!(graphiql.text().await?.to_lowercase().contains("graphiql"));
    let console = cp.get(&cp.http_url("/")).await?.text().await?;
    assert!(console.contains("Lanewatch"), "the console is served at /");
    Ok(())
}

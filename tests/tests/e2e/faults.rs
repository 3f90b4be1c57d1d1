//! Store and forward under faults: whatever breaks (the agent killed with SIGKILL, the control
//! plane restarted or killed, the network cut, blackholed or slowed, the S3 server or the
//! database away for a while, the agent's buffer full), every capture the agent accepted ends
//! up in the control plane exactly once, or has a deletion receipt that says why not.
//!
//! What the agent accepted comes from `lanewatch-agent --accepted-log` (one JSON line per
//! capture, written after the buffer's commit). Each scenario runs its faults for a bounded
//! time, then heals, then waits (bounded) until the invariant holds for every accepted capture.
//!
//! PostgreSQL is really restarted: the machine's server is shared with other tests, so the
//! database scenario runs the control plane on a server of its own
//! ([`lanewatch_tests::PrivatePostgres`]: `initdb` into a temp dir, a free loopback port), stops
//! it for a few seconds (once a fast shutdown, once an immediate one, which is a crash to
//! PostgreSQL) and starts it again on the same port and data. This replaced a test that only cut
//! connections through a proxy: a restart does all that did (connections reset, new ones
//! refused) and also loses the server's in-flight transactions and replays its WAL.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use lanewatch_tests::proxy::{Mode, Proxy};
use lanewatch_tests::{Agent, AgentBuilder, Blob, ControlPlane, Db, PrivatePostgres, SeaweedFs, Shutdown};
use nix::sys::signal::Signal;
use rand::Rng;
use serde_json::Value;

/// What one check found, printed for the record.
#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    stored: usize,
    receipted: usize,
}

/// Capture ids in an accepted log; a last line cut short by a kill is skipped.
fn accepted_ids(path: &Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|v| v["capture_id"].as_str().map(str::to_owned))
        .collect())
}

/// Waits (bounded) until every capture in `logs` is stored or receipted, then checks that no
/// capture is stored twice.
async fn assert_nothing_lost(cp: &ControlPlane, logs: &[&Path]) -> Result<Tally> {
    let mut accepted = HashSet::new();
    for log in logs {
        accepted.extend(accepted_ids(log)?);
    }
    if accepted.is_empty() {
        bail!("the agents accepted no capture; the scenario proved nothing");
    }
    let missing = cp
        .wait_for("every accepted capture stored or receipted", || async {
            let stored: HashSet<String> =
                cp.all_captures().await?.iter().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect();
            let receipted: HashSet<String> = cp
                .all_receipts()
                .await?
                .iter()
                .filter_map(|r| r["captureId"].as_str().map(str::to_owned))
                .collect();
            let missing: Vec<&String> =
                accepted.iter().filter(|id| !stored.contains(*id) && !receipted.contains(*id)).collect();
            Ok(missing.is_empty().then_some(()))
        })
        .await;
    if let Err(e) = missing {
        let stored: HashSet<String> =
            cp.all_captures().await?.iter().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect();
        let lost: Vec<&String> = accepted.iter().filter(|id| !stored.contains(*id)).take(10).collect();
        bail!("{e:#}\nfirst captures neither stored nor receipted: {lost:?}");
    }
    let captures = cp.all_captures().await?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for c in &captures {
        *seen.entry(c["id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "captures stored more than once: {twice:?}");
    let receipts = cp.all_receipts().await?;
    let receipted: HashSet<&str> = receipts.iter().filter_map(|r| r["captureId"].as_str()).collect();
    let tally = Tally {
        accepted: accepted.len(),
        stored: accepted.iter().filter(|id| seen.contains_key(*id)).count(),
        receipted: accepted.iter().filter(|id| receipted.contains(id.as_str())).count(),
    };
    eprintln!("invariant holds: {tally:?}");
    Ok(tally)
}

/// An agent that makes captures quickly and logs what its buffer accepted.
fn busy_agent(cp: &ControlPlane, site: &str, log: &Path) -> AgentBuilder {
    AgentBuilder::new(cp, site).flow(3000).arg("--accepted-log").arg(log)
}

fn log_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(format!("{name}.accepted.jsonl"))
}

/// Waits (bounded) until the agent accepted at least `n` captures.
async fn wait_accepted(cp: &ControlPlane, log: &Path, n: usize) -> Result<()> {
    cp.wait_for(&format!("{n} accepted captures"), || async {
        Ok((accepted_ids(log)?.len() >= n).then_some(()))
    })
    .await
}

/// Lets the agent run for `ms`, bounded and short.
async fn run_for(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_during_upload_loses_nothing() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let logs = tempfile::tempdir()?;
    let log = log_in(&logs, "kill");
    // a tight cap keeps a backlog uploading, so the kills land mid-upload
    let capped = "max_upload_bytes_per_sec = 15000";
    let mut agent: Agent = busy_agent(&cp, "site-kill", &log).control_plane_toml(capped).start()?;
    wait_accepted(&cp, &log, 1).await?;
    for round in 0..8 {
        let wait = rand::rng().random_range(2500..4500);
        run_for(wait).await;
        agent.proc.signal(Signal::SIGKILL);
        tokio::task::block_in_place(|| agent.proc.wait(Duration::from_secs(10)))?;
        let buffered = accepted_ids(&log)?.len();
        eprintln!("round {round}: agent killed after {wait} ms ({buffered} accepted so far), restarting");
        if round == 7 {
            // the last start drains the backlog without the cap
            let config = std::fs::read_to_string(&agent.config_path)?;
            std::fs::write(&agent.config_path, config.replace(capped, "max_upload_bytes_per_sec = 0"))?;
        }
        tokio::task::block_in_place(|| agent.restart())?;
    }
    let tally = assert_nothing_lost(&cp, &[&log]).await?;
    assert!(tally.stored > 0 && tally.stored + tally.receipted >= tally.accepted, "{tally:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_restarts_lose_nothing() -> Result<()> {
    let mut cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let logs = tempfile::tempdir()?;
    let (log_a, log_b) = (log_in(&logs, "a"), log_in(&logs, "b"));
    let _a = busy_agent(&cp, "site-cp-a", &log_a).start()?;
    let _b = busy_agent(&cp, "site-cp-b", &log_b).start()?;
    wait_accepted(&cp, &log_a, 1).await?;
    for signal in [Signal::SIGTERM, Signal::SIGKILL, Signal::SIGTERM, Signal::SIGKILL] {
        run_for(1500).await;
        eprintln!("restarting the control plane with {signal}");
        cp.restart(signal).await?;
    }
    run_for(1000).await;
    assert_nothing_lost(&cp, &[&log_a, &log_b]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_cuts_and_delays_lose_nothing() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let proxy = Proxy::start(cp.grpc_addr).await?;
    let logs = tempfile::tempdir()?;
    let log = log_in(&logs, "partition");
    let _agent =
        busy_agent(&cp, "site-partition", &log).control_url(&format!("http://{}", proxy.addr)).start()?;
    wait_accepted(&cp, &log, 1).await?;
    for (mode, ms) in [
        (Mode::Pass, 1500),
        (Mode::Cut, 2000),
        (Mode::Pass, 1500),
        (Mode::Blackhole, 5000),
        (Mode::Pass, 1500),
        (Mode::Delay(300), 2000),
        (Mode::Cut, 1000),
        (Mode::Pass, 0),
    ] {
        eprintln!("proxy: {mode:?} for {ms} ms");
        proxy.set(mode);
        run_for(ms).await;
    }
    assert_nothing_lost(&cp, &[&log]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_ends_sessions_unavailable_and_loses_nothing() -> Result<()> {
    let mut s3 = SeaweedFs::start()?;
    let cp = ControlPlane::start(Db::Sqlite, s3.blob("lanewatch-faults")).await?;
    let logs = tempfile::tempdir()?;
    let log = log_in(&logs, "s3");
    let agent = busy_agent(&cp, "site-s3", &log).start()?;
    cp.wait_for("a first stored capture", || async {
        Ok((!cp.all_captures().await?.is_empty()).then_some(()))
    })
    .await?;
    tokio::task::block_in_place(|| s3.stop());
    run_for(3000).await;
    tokio::task::block_in_place(|| s3.restart())?;
    let tally = assert_nothing_lost(&cp, &[&log]).await?;
    assert!(tally.stored > 0);
    let cp_log = cp.all_stderr();
    assert!(
        cp_log.contains("cannot store capture") && cp_log.contains("blob store"),
        "the control plane never failed a store while S3 was down; log:\n{}",
        lanewatch_tests::tail(&cp_log, 4000)
    );
    let agent_log = agent.proc.stderr();
    assert!(
        agent_log.contains("Unavailable"),
        "the agent's session did not end with UNAVAILABLE; log:\n{}",
        lanewatch_tests::tail(&agent_log, 4000)
    );
    // every stored capture's image is there, byte for byte as hashed
    for c in cp.all_captures().await? {
        let bytes = cp.get(c["imageUrl"].as_str().unwrap_or_default()).await?.bytes().await?;
        assert_eq!(lanewatch_tests::sha256_hex(&bytes), c["imageSha256"].as_str().unwrap_or_default(), "{c}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_loses_nothing() -> Result<()> {
    let mut pg = tokio::task::block_in_place(PrivatePostgres::start)?;
    let cp = ControlPlane::start(Db::Url(pg.url.clone()), Blob::Local).await?;
    let logs = tempfile::tempdir()?;
    let log = log_in(&logs, "pg");
    let _agent = busy_agent(&cp, "site-pg", &log).start()?;
    cp.wait_for("a first stored capture", || async {
        Ok((!cp.all_captures().await?.is_empty()).then_some(()))
    })
    .await?;
    for how in [Shutdown::Fast, Shutdown::Immediate] {
        let before = accepted_ids(&log)?.len();
        let pid = pg.pid();
        eprintln!("stopping postgres (pid {pid:?}, {how:?} shutdown) with {before} captures accepted");
        tokio::task::block_in_place(|| pg.stop(how))?;
        run_for(3000).await;
        tokio::task::block_in_place(|| pg.start_again())?;
        assert_ne!(pg.pid(), pid, "a new postmaster");
        run_for(1500).await;
        let after = accepted_ids(&log)?.len();
        eprintln!("postgres restarted; {after} captures accepted");
    }
    assert_nothing_lost(&cp, &[&log]).await?;
    let cp_log = cp.all_stderr();
    assert!(
        ["connection", "database", "pool"].iter().any(|w| cp_log.to_lowercase().contains(w)),
        "the control plane never noticed the database was down; log:\n{}",
        lanewatch_tests::tail(&cp_log, 4000)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_evicts_with_receipts_and_loses_nothing() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let proxy = Proxy::start(cp.grpc_addr).await?;
    proxy.set(Mode::Cut); // the control plane is unreachable until the buffer overflowed
    let logs = tempfile::tempdir()?;
    let log = log_in(&logs, "full");
    let agent = busy_agent(&cp, "site-full", &log)
        .control_url(&format!("http://{}", proxy.addr))
        .buffer_toml("max_bytes = 1048576")
        // larger frames fill the smallest allowed buffer within seconds
        .extra_toml("width = 1280\nheight = 720\n")
        .start()?;
    cp.wait_for("the agent's buffer to evict", || async {
        Ok(agent.proc.stderr().contains("capture deleted before upload").then_some(()))
    })
    .await?;
    run_for(1000).await;
    proxy.set(Mode::Pass);
    let tally = assert_nothing_lost(&cp, &[&log]).await?;
    assert!(tally.receipted > 0, "evictions must leave receipts: {tally:?}");
    let receipts = cp.all_receipts().await?;
    assert!(
        receipts.iter().all(|r| r["reason"] == "EVICTED_FULL" && r["site"] == "site-full"),
        "{receipts:?}"
    );
    Ok(())
}

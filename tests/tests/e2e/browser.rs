//! The fleet console in a real browser: `tests/browser/console.mjs` (playwright-core driving
//! Debian's chromium, axe-core on every page) against a control plane that requires a login, a
//! simulated agent, and a bare session through which this test uploads violation candidates while
//! the browser watches, timing each from its ack to its card in the page.
//!
//! Data with markup in it (`<script>`) goes in through a config comment, an API key's name and an
//! agent id; the script checks that none of it runs and that it shows as text. Screenshots, the
//! evidence download and the measurements land in `tests/browser/artifacts/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use lanewatch_proto::v1;
use lanewatch_tests::grpc::{Session, meta};
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db, noise_jpeg, workspace_root};
use serde_json::json;

const MARKUP: &str = "<script>window.__xss=1</script>";

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default()
}

async fn gql(
    cp: &ControlPlane,
    key: &str,
    query: &str,
    variables: serde_json::Value,
) -> Result<serde_json::Value> {
    let answer = cp.graphql_with_key(key, query, variables).await?;
    if !answer["errors"].is_null() {
        bail!("{query}: {answer}");
    }
    Ok(answer["data"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_logs_in_updates_live_reviews_configures_operates_and_escapes() -> Result<()> {
    let browser_dir = workspace_root().join("tests/browser");
    if !browser_dir.join("node_modules/playwright-core").exists() {
        bail!(
            "tests/browser/node_modules is missing: run scripts/setup.sh (it installs playwright-core and chromium)"
        );
    }
    let cp =
        ControlPlane::start_with(Db::Sqlite, Blob::Local, "[auth]\nallow_anonymous_local = false\n").await?;
    let admin = cp.create_admin_key()?;
    let operator = cp.create_key(&admin, "OPERATOR").await?;
    gql(
        &cp,
        &admin,
        "mutation($n: String!) { createApiKey(name: $n, role: OPERATOR) { secret } }",
        json!({ "n": MARKUP }),
    )
    .await?;

    // the simulated agent, its config taken over by the control plane with a comment in markup
    let site = "site-ui";
    let agent = AgentBuilder::new(&cp, site).flow(1500).start()?;
    cp.wait_for("the agent online", || async {
        let data =
            gql(&cp, &admin, "query($id: ID!) { agent(id: $id) { online } }", json!({ "id": agent.id }))
                .await?;
        Ok((data["agent"]["online"] == true).then_some(()))
    })
    .await?;
    let original = std::fs::read_to_string(&agent.config_path)?;
    gql(
        &cp,
        &admin,
        "mutation($s: String!, $t: String!, $c: String) { updateSiteConfig(siteId: $s, toml: $t, comment: $c) { version } }",
        json!({ "s": site, "t": original, "c": MARKUP }),
    )
    .await?;

    // a bare session whose agent id has markup in it; its lane 1 asks for 2 occupants, and its
    // captures count 1: violation candidates
    let bare_site = "site-bare";
    let bare_agent = format!("bare-{MARKUP}");
    // (a first session makes the site known; the uploads use another, opened when they start)
    drop(Session::open(&cp.grpc_url(), &bare_agent, bare_site).await?);
    gql(
        &cp,
        &admin,
        "mutation($s: String!) { setLanePolicy(site: $s, lane: 1, minOccupants: 2) { minOccupants } }",
        json!({ "s": bare_site }),
    )
    .await?;

    let artifacts = browser_dir.join("artifacts");
    let sync = tempfile::tempdir()?;
    std::fs::create_dir_all(&artifacts)?;
    let mut node = tokio::process::Command::new("node")
        .arg(browser_dir.join("console.mjs"))
        .current_dir(&browser_dir)
        .env("LW_URL", format!("http://{}", cp.http_addr))
        .env("LW_OPERATOR_KEY", &operator)
        .env("LW_ADMIN_KEY", &admin)
        .env("LW_AGENT", &agent.id)
        .env("LW_SITE", site)
        .env("LW_BARE_SITE", bare_site)
        .env("LW_BARE_AGENT", &bare_agent)
        .env("LW_ARTIFACTS", &artifacts)
        .env("LW_SYNC", sync.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run node (scripts/setup.sh installs it)")?;

    // once the browser watches the captures page: 20 uploads, each timed at its ack
    let ready: PathBuf = sync.path().join("captures-ready");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !ready.exists() {
        if tokio::time::Instant::now() > deadline || node.try_wait()?.is_some() {
            let out = node.wait_with_output().await?;
            bail!(
                "the browser never reached the captures page:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut session = Session::open(&cp.grpc_url(), &bare_agent, bare_site).await?;
    let mut acked = BTreeMap::new();
    for i in 0..20u64 {
        let mut m = meta(bare_site);
        m.occupancy = Some(v1::Occupancy {
            status: v1::OccupancyStatus::Counted as i32,
            occupants: 1,
            ..Default::default()
        });
        let id = m.capture_id.clone();
        let outcome = session
            .upload(m, &noise_jpeg(320, 180, i))
            .await
            .with_context(|| format!("upload {i}; control plane:\n{}", cp.all_stderr()))?;
        acked.insert(id, now_ms());
        assert_eq!(outcome, v1::AckOutcome::Stored, "upload {i}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    std::fs::write(sync.path().join("uploads.json"), serde_json::to_vec(&acked)?)?;

    let out = tokio::time::timeout(Duration::from_secs(300), node.wait_with_output())
        .await
        .context("the browser tests ran past 300 s")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    if !out.status.success() {
        bail!(
            "browser tests failed ({}):\n{stdout}\n{stderr}\ncontrol plane:\n{}",
            out.status,
            cp.all_stderr()
        );
    }
    println!("browser measurements: {stdout}");
    drop(agent);
    Ok(())
}

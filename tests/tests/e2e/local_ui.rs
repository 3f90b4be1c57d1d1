//! The agent's local web UI on the real binaries:
//! - in a browser (`tests/browser/agent.mjs`: every page, axe-core, screenshots, a component
//!   restarted and watched recovering, CSRF, an agent id with markup that would run script): a seat-section
//!   polygon calibrated on the device is applied in place, recorded by the control plane as a new
//!   version of the site's config made by the agent, and the next capture is made under it;
//! - the invariant that the UI never serves un-anonymized pixels: every frame it serves is byte
//!   for byte a capture the control plane stored (which vision released), and the face detector
//!   finds no face in any of them; an agent without vision serves no frame at all;
//! - a password-protected UI over https: login, wrong passwords, CSRF and the login limit;
//! - an agent whose UI cannot start (its port is taken) still captures.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db, bin, face_scan, sha256_hex, workspace_root};
use serde_json::json;

use crate::vision::vision_agent;

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?)
}

/// The capture id in the first `frame.jpg?c=<id>` of a cameras page.
fn frame_capture(html: &str) -> Option<String> {
    let at = html.find("/frame.jpg?c=")? + "/frame.jpg?c=".len();
    Some(html[at..at + 36].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_ui_serves_only_frames_vision_released() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let agent = vision_agent(&cp, "site-ui-frames", "").start()?;
    let ui = agent.ui_url.clone().context("the ready file names the ui")?;
    let http = client()?;
    let frames = tempfile::tempdir()?;
    let mut seen = HashSet::new();
    // five distinct frames, each compared with the capture the control plane stored under its id
    while seen.len() < 5 {
        let page = http.get(format!("{ui}cameras")).send().await?.text().await?;
        let Some(id) = frame_capture(&page) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if seen.contains(&id) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let frame = http.get(format!("{ui}cameras/front/frame.jpg?c={id}")).send().await?;
        // the frame may have been replaced since the page: the header names the bytes' capture
        let served = frame.headers()["x-capture-id"].to_str()?.to_owned();
        let bytes = frame.bytes().await?;
        std::fs::write(frames.path().join(format!("{served}.jpg")), &bytes)?;
        let stored = cp
            .wait_for(&format!("capture {served} stored"), || async {
                let data = cp
                    .graphql("query($id: ID!) { capture(id: $id) { imageSha256 } }", json!({ "id": served }))
                    .await?;
                Ok(data["capture"]["imageSha256"].as_str().map(str::to_owned))
            })
            .await?;
        assert_eq!(sha256_hex(&bytes), stored, "the UI served other bytes than capture {served} holds");
        seen.insert(served);
    }
    let scan = face_scan(&[frames.path()])?;
    assert_eq!(scan.images, 5);
    assert_eq!(scan.faces, 0, "a served frame shows a face (best score {})", scan.best_score);
    let missing = http.get(format!("{ui}cameras/nope/frame.jpg")).send().await?;
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);

    // without vision nothing is anonymized, so nothing is shown
    let plain = AgentBuilder::new(&cp, "site-ui-plain").start()?;
    let plain_ui = plain.ui_url.clone().context("ui")?;
    cp.wait_running(&plain.id, "acquire").await?;
    let page = http.get(format!("{plain_ui}cameras")).send().await?.text().await?;
    assert!(page.contains("Vision is off on this agent"), "{page}");
    assert!(frame_capture(&page).is_none());
    let frame = http.get(format!("{plain_ui}cameras/front/frame.jpg")).send().await?;
    assert_eq!(frame.status(), reqwest::StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_ui_over_https_needs_a_login_and_the_csrf_token() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    // the CLI makes the hash from a password on stdin
    let mut hasher = std::process::Command::new(bin("lanewatch-agent"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    use std::io::Write;
    hasher.stdin.take().context("stdin")?.write_all(b"correct horse battery\n")?;
    let out = hasher.wait_with_output()?;
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout)?.trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let pki = tempfile::tempdir()?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?.self_signed(&key)?;
    let (cert_path, key_path) = (pki.path().join("ui.pem"), pki.path().join("ui.key"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let agent = AgentBuilder::new(&cp, "site-ui-tls")
        .local_ui_toml(&format!(
            "listen = \"127.0.0.1:0\"\npassword_hash = {hash:?}\nlogin_attempts_per_minute = 5\n\
             tls = {{ cert_path = {cert_path:?}, key_path = {key_path:?} }}\n"
        ))
        .start()?;
    let ui = agent.ui_url.clone().context("ui")?;
    assert!(ui.starts_with("https://127.0.0.1:"), "{ui}");
    let ui = ui.replace("127.0.0.1", "localhost");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes())?)
        .build()?;

    let r = http.get(format!("{ui}components")).send().await?;
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER, "a login comes first");
    assert_eq!(r.headers()["location"], "/login?next=%2Fcomponents");
    let login = |password: &'static str| {
        http.post(format!("{ui}login")).form(&[("password", password), ("next", "/components")]).send()
    };
    let wrong = login("hunter2").await?;
    assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(wrong.text().await?.contains("wrong password"));
    let ok = login("correct horse battery").await?;
    assert_eq!(ok.status(), reqwest::StatusCode::SEE_OTHER);
    let set = ok.headers()["set-cookie"].to_str()?.to_owned();
    assert!(set.contains("Secure") && set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let cookie = set.split(';').next().context("cookie")?.to_owned();
    let page = http.get(format!("{ui}components")).header("cookie", &cookie).send().await?.text().await?;
    assert!(page.contains("id=\"components\""));
    let token = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .context("csrf token")?
        .to_owned();
    let restart = |token: Option<String>| {
        let mut r = http
            .post(format!("{ui}components/command"))
            .header("cookie", &cookie)
            .form(&[("action", "restart"), ("component", "trigger")]);
        if let Some(t) = token {
            r = r.header("x-csrf-token", t);
        }
        r.send()
    };
    assert_eq!(restart(None).await?.status(), reqwest::StatusCode::FORBIDDEN);
    let done = restart(Some(token)).await?;
    assert_eq!(done.status(), reqwest::StatusCode::OK);
    assert!(done.text().await?.contains("restarting trigger"));
    // 2 attempts so far; the limit is 5 a minute
    for _ in 0..3 {
        assert_eq!(login("nope").await?.status(), reqwest::StatusCode::UNAUTHORIZED);
    }
    let throttled = login("correct horse battery").await?;
    assert_eq!(throttled.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_in_a_browser_is_applied_recorded_by_the_control_plane_and_used_by_the_next_capture()
-> Result<()> {
    let browser_dir = workspace_root().join("tests/browser");
    if !browser_dir.join("node_modules/playwright-core").exists() {
        bail!(
            "tests/browser/node_modules is missing: run scripts/setup.sh (it installs playwright-core and chromium)"
        );
    }
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let site = "site-ui-calib";
    let agent = vision_agent(&cp, site, "").agent_id("agent-<img src=x onerror=window.__xss=1>").start()?;
    let ui = agent.ui_url.clone().context("ui")?;
    let artifacts = browser_dir.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let out = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new("node")
            .arg(browser_dir.join("agent.mjs"))
            .current_dir(&browser_dir)
            .env("LW_UI", &ui)
            .env("LW_ARTIFACTS", &artifacts)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the browser tests ran past 240 s")??;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{stderr}");
    if !out.status.success() {
        bail!("agent UI browser tests failed ({}):\n{stdout}\n{stderr}", out.status);
    }
    println!("agent UI measurements: {stdout}");

    // the control plane recorded the edit as the site's next version, made by the agent
    let recorded = cp
        .wait_for("the local edit recorded", || async {
            let data = cp
                .graphql(
                    "query($s: String!) { siteConfigHistory(siteId: $s) { version toml createdBy comment } }",
                    json!({ "s": site }),
                )
                .await?;
            Ok(data["siteConfigHistory"].as_array().and_then(|h| {
                h.iter().find(|v| v["createdBy"].as_str().is_some_and(|b| b.starts_with("agent:"))).cloned()
            }))
        })
        .await?;
    assert_eq!(recorded["createdBy"], format!("agent:{}", agent.id));
    assert!(recorded["toml"].as_str().unwrap_or("").contains("polygon = [[44.0, 44.0]"), "{recorded}");
    let version = recorded["version"].as_u64().context("version")?;
    // the agent runs that version, and the next capture is made under it
    cp.wait_for(&format!("a capture under config version {version}"), || async {
        let data = cp.graphql("{ captures(first: 20) { nodes { configVersion } } }", json!({})).await?;
        let nodes = data["captures"]["nodes"].as_array().cloned().unwrap_or_default();
        Ok(nodes.iter().any(|n| n["configVersion"].as_u64() == Some(version)).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_ui_cannot_start_still_captures() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    // the port is taken
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let agent = AgentBuilder::new(&cp, "site-ui-taken")
        .local_ui_toml(&format!("listen = \"127.0.0.1:{port}\"\n"))
        .start()?;
    assert_eq!(agent.ui_url, None, "no UI was started");
    cp.wait_for("a capture from the agent without its UI", || async {
        let n = cp.all_captures().await?.iter().filter(|c| c["agentId"] == agent.id.as_str()).count();
        Ok((n > 0).then_some(()))
    })
    .await?;
    assert!(agent.proc.stderr().contains("local ui not started"), "the log says why");
    drop(taken);
    Ok(())
}

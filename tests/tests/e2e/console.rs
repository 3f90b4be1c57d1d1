//! The fleet console over plain HTTP, on the real binary (the browser test in `browser.rs` drives
//! the pages themselves): anonymous viewing on loopback only where allowed, logins that exchange
//! an API key for a session, the per-address login limit, a revoked key or a logout ending its
//! sessions at once, CSRF refusals, an agency's key seeing what GraphQL lets it see, and the
//! live stream ending when the control plane drains.

use std::time::Duration;

use anyhow::{Context, Result};
use lanewatch_tests::{Blob, ControlPlane, Db};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?)
}

/// The `lw_session=…` pair of a response's `Set-Cookie`.
fn session_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("lw_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

/// The CSRF token a page carries.
fn csrf(html: &str) -> Option<String> {
    let start = html.find("name=\"csrf-token\" content=\"")? + "name=\"csrf-token\" content=\"".len();
    Some(html[start..].split('"').next()?.to_owned())
}

async fn login(cp: &ControlPlane, key: &str) -> Result<reqwest::Response> {
    Ok(client()?.post(cp.http_url("/login")).form(&[("key", key), ("next", "/jobs")]).send().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_viewers_on_loopback_act_as_operators_and_still_need_the_csrf_token() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let http = client()?;
    let page = http.get(cp.http_url("/jobs")).send().await?;
    assert_eq!(page.status(), StatusCode::OK);
    let cookie = session_cookie(&page).context("an anonymous session cookie")?;
    assert!(cookie.starts_with("lw_session=anon."), "{cookie}");
    let html = page.text().await?;
    assert!(html.contains("operator · anonymous (loopback)"), "{html}");
    assert!(html.contains("id=\"queue-counts\""), "an operator sees the queues");
    let token = csrf(&html).context("csrf token")?;

    let pause = |token: Option<String>| {
        let mut r = http
            .post(cp.http_url("/queues"))
            .header(COOKIE, &cookie)
            .form(&[("name", "webhooks"), ("action", "pause")]);
        if let Some(t) = token {
            r = r.header("x-csrf-token", t);
        }
        r.send()
    };
    let refused = pause(None).await?;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await?.contains("CSRF"), "the refusal says why");
    // another anonymous viewer's token is not this one's
    let other = http.get(cp.http_url("/")).send().await?.text().await?;
    assert_eq!(pause(csrf(&other)).await?.status(), StatusCode::FORBIDDEN);
    let done = pause(Some(token)).await?;
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await?.contains("queue webhooks: pause (paused)"));
    // a cookie that is no (longer a) session falls back to the anonymous loopback viewer
    let stale = http.get(cp.http_url("/jobs")).header(COOKIE, "lw_session=0123abcd").send().await?;
    assert_eq!(stale.status(), StatusCode::OK);
    assert!(stale.text().await?.contains("anonymous (loopback)"));
    let queues = cp.graphql("{ queues { name paused } }", json!({})).await?;
    let webhooks = queues["queues"].as_array().context("queues")?.iter().find(|q| q["name"] == "webhooks");
    assert_eq!(webhooks.context("webhooks queue")?["paused"], true);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_exchange_a_key_for_a_session_that_logout_or_revocation_ends_and_attempts_are_limited()
-> Result<()> {
    let cp = ControlPlane::start_with(
        Db::Sqlite,
        Blob::Local,
        "[auth]\nallow_anonymous_local = false\n[console]\nlogin_attempts_per_minute = 6\n",
    )
    .await?;
    let admin = cp.create_admin_key()?;
    let operator = cp.create_key(&admin, "OPERATOR").await?;
    let agency = cp.create_key(&admin, "AGENCY").await?;
    let http = client()?;

    // without a session: the login page, remembering where the viewer was going
    let r = http.get(cp.http_url("/captures?site=a")).send().await?;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/login?next=%2Fcaptures%3Fsite%3Da");
    assert_eq!(http.get(cp.http_url("/live/fleet")).send().await?.status(), StatusCode::UNAUTHORIZED);

    // a wrong key: the form again, with the reason (attempt 1)
    let wrong = login(&cp, "lw_00_11").await?;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.text().await?.contains("invalid or revoked api key"));

    // the operator's key (attempt 2): a session cookie and the page asked for
    let ok = login(&cp, &operator).await?;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(ok.headers()[LOCATION], "/jobs");
    let operator_cookie = session_cookie(&ok).context("session cookie")?;
    let set = ok.headers()[SET_COOKIE].to_str()?.to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let jobs = http.get(cp.http_url("/jobs")).header(COOKIE, &operator_cookie).send().await?.text().await?;
    assert!(jobs.contains("id=\"queue-counts\""));
    let token = csrf(&jobs).context("csrf")?;

    // an agency's key (attempt 3) sees what GraphQL lets it: captures yes, the job queue no
    let agency_cookie = session_cookie(&login(&cp, &agency).await?).context("agency session")?;
    let denied = http.get(cp.http_url("/jobs")).header(COOKIE, &agency_cookie).send().await?.text().await?;
    assert!(denied.contains("permission denied: role agency may not operate the job queue"), "{denied}");
    let captures =
        http.get(cp.http_url("/captures")).header(COOKIE, &agency_cookie).send().await?.text().await?;
    assert!(captures.contains("No captures match."), "{captures}");

    // logout ends that session (the agency's); the operator's lives on
    let agency_page = http.get(cp.http_url("/")).header(COOKIE, &agency_cookie).send().await?.text().await?;
    let out = http
        .post(cp.http_url("/logout"))
        .header(COOKIE, &agency_cookie)
        .header("x-csrf-token", csrf(&agency_page).context("csrf")?)
        .send()
        .await?;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        http.get(cp.http_url("/")).header(COOKIE, &agency_cookie).send().await?.status(),
        StatusCode::SEE_OTHER
    );

    // revoking the operator's key ends its session at once
    let key_id = operator.split('_').nth(1).context("key id")?;
    let revoked = cp
        .graphql_with_key(
            &admin,
            "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
            json!({ "id": key_id }),
        )
        .await?;
    assert!(revoked["errors"].is_null(), "{revoked}");
    let after = http.get(cp.http_url("/jobs")).header(COOKIE, &operator_cookie).send().await?;
    assert_eq!(after.status(), StatusCode::SEE_OTHER, "a revoked key's session is over");
    let stale = http
        .post(cp.http_url("/queues"))
        .header(COOKIE, &operator_cookie)
        .header("x-csrf-token", token)
        .form(&[("name", "webhooks"), ("action", "pause")])
        .send()
        .await?;
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);

    // attempts 4 to 6 pass the limit (and fail: wrong keys); the 7th within the minute is refused
    for _ in 0..3 {
        assert_eq!(login(&cp, "lw_00_11").await?.status(), StatusCode::UNAUTHORIZED);
    }
    let throttled = login(&cp, &admin).await?;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = throttled.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=60).contains(&wait), "retry after {wait} s");
    assert!(throttled.text().await?.contains("too many login attempts"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_pushes_a_change_and_ends_when_the_control_plane_drains() -> Result<()> {
    let mut cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let http = client()?;
    let mut stream = http.get(cp.http_url("/live/jobs")).send().await?;
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while !(text.contains("event: queues") && text.contains("event: jobs")) {
        let chunk =
            tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await??.context("stream ended")?;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // a change is pushed: pausing a queue shows in the next `queues` fragment
    cp.graphql("mutation { pauseQueue(name: \"webhooks\") { paused } }", json!({})).await?;
    let mut pushed = String::new();
    while !pushed.contains("paused</span>") {
        let chunk =
            tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await??.context("stream ended")?;
        pushed.push_str(&String::from_utf8_lossy(&chunk));
    }
    // a graceful stop ends the stream rather than waiting out the grace period on it
    cp.proc.signal(nix::sys::signal::Signal::SIGTERM);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived the drain");
    let status = cp.proc.wait(Duration::from_secs(10))?;
    assert!(status.success(), "{status}");
    Ok(())
}

//! Commands to agents through GraphQL (`restartComponent`, `pauseComponent`, `resumeComponent`,
//! `setAgentLogFilter`; `triggerTestCapture` in `test_capture.rs`) and `lanewatch exec`, on real binaries: who may send them (admins and
//! operators, never agencies), the audit row of every attempt, an unknown agent or component,
//! an offline agent, an agent that does not answer (a bare session that never replies), and a
//! command id sent twice (run once).

use std::time::Duration;

use anyhow::{Context, Result};
use lanewatch_tests::grpc::Session;
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db, run_to_exit_with_stdout};
use serde_json::{Value, json};

const RESTART: &str = "mutation($agent: ID!, $component: String!, $id: ID) {
  restartComponent(agentId: $agent, component: $component, commandId: $id) { commandId message } }";

/// Sends `restartComponent` as the holder of `key`; the whole response.
async fn restart(
    cp: &ControlPlane,
    key: &str,
    agent: &str,
    component: &str,
    id: Option<&str>,
) -> Result<Value> {
    cp.graphql_with_key(key, RESTART, json!({ "agent": agent, "component": component, "id": id })).await
}

pub(crate) fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

/// The component's restart count, as the agent reports it live.
async fn restarts(cp: &ControlPlane, agent: &str, component: &str) -> Result<u64> {
    cp.component(agent, component).await?["restarts"].as_u64().context("restarts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_component_is_authorized_audited_idempotent_and_explains_its_errors() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let admin = cp.create_admin_key()?;
    let operator = cp.create_key(&admin, "OPERATOR").await?;
    let agency = cp.create_key(&admin, "AGENCY").await?;
    let mut agent = AgentBuilder::new(&cp, "site-cmd").start()?;
    let trigger = cp.wait_running(&agent.id, "trigger").await?;
    assert_eq!(restarts(&cp, &agent.id, &trigger).await?, 0);

    // an operator restarts it; the same command id sent again is not run again
    let id = uuid::Uuid::now_v7().to_string();
    let first = restart(&cp, &operator, &agent.id, &trigger, Some(&id)).await?;
    assert!(first["errors"].is_null(), "{first}");
    assert_eq!(first["data"]["restartComponent"]["commandId"], id.as_str());
    assert_eq!(first["data"]["restartComponent"]["message"], format!("restarting {trigger}"));
    cp.wait_for("the restart counted", || async {
        Ok((restarts(&cp, &agent.id, &trigger).await? == 1).then_some(()))
    })
    .await?;
    let again = restart(&cp, &operator, &agent.id, &trigger, Some(&id)).await?;
    assert_eq!(again["data"], first["data"], "a repeat gets the first answer: {again}");
    // a command with another id is run: the count reaches 2, never 3 (the repeat ran nothing;
    // the agent answers a restart once its supervisor has counted it)
    let admin_restart = restart(&cp, &admin, &agent.id, &trigger, None).await?;
    assert!(admin_restart["errors"].is_null(), "{admin_restart}");
    let count = cp
        .wait_for("the second restart counted", || async {
            let n = restarts(&cp, &agent.id, &trigger).await?;
            Ok((n >= 2).then_some(n))
        })
        .await?;
    assert_eq!(count, 2, "the repeated command id restarted the component again");
    // the component's flight recorder tells the same story, with times
    let data = cp
        .graphql(
            "query($id: ID!) { agent(id: $id) { components { name events { at kind message } } } }",
            json!({ "id": agent.id }),
        )
        .await?;
    let components = data["agent"]["components"].as_array().context("components")?;
    let events =
        components.iter().find(|c| c["name"] == trigger.as_str()).context("trigger")?["events"].clone();
    let kinds: Vec<&str> =
        events.as_array().context("events")?.iter().filter_map(|e| e["kind"].as_str()).collect();
    // (the second restart's `started` may not be recorded yet: it comes when the new run begins)
    let (counted, rest) = kinds.split_at(kinds.len().min(6));
    assert_eq!(
        counted,
        ["started", "restart_requested", "restarting", "started", "restart_requested", "restarting"],
        "{events}"
    );
    assert!(rest.is_empty() || rest == ["started"], "{events}");
    assert_eq!(events[2]["message"], "restart 1", "{events}");

    // refusals, each with a clear code
    let refused = restart(&cp, &agency, &agent.id, &trigger, None).await?;
    assert_eq!(code(&refused), "PERMISSION_DENIED", "{refused}");
    let unknown = restart(&cp, &admin, &agent.id, "nope", None).await?;
    assert_eq!(code(&unknown), "FAILED_PRECONDITION", "{unknown}");
    assert!(
        unknown["errors"][0]["message"].as_str().unwrap().contains("unknown component \"nope\""),
        "{unknown}"
    );
    let nobody = restart(&cp, &admin, "agent-nobody", &trigger, None).await?;
    assert_eq!(code(&nobody), "NOT_FOUND", "{nobody}");
    let bad_id = restart(&cp, &admin, &agent.id, &trigger, Some("not-a-uuid")).await?;
    assert_eq!(code(&bad_id), "INVALID_ARGUMENT", "{bad_id}");

    // `lanewatch exec` sends the same command
    let url = cp.http_url("");
    let (status, stdout, stderr) = run_to_exit_with_stdout(
        "lanewatch",
        &["exec", &agent.id, "restart", &trigger, "--url", url.trim_end_matches('/'), "--api-key", &operator],
        Duration::from_secs(30),
    )?;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with(&format!("{}: restarting {trigger} (command ", agent.id)), "{stdout}");
    let (status, _, stderr) = run_to_exit_with_stdout(
        "lanewatch",
        &["exec", &agent.id, "restart", &trigger, "--url", url.trim_end_matches('/'), "--api-key", &agency],
        Duration::from_secs(30),
    )?;
    assert!(!status.success());
    assert!(stderr.contains("permission denied: role agency may not send commands to agents"), "{stderr}");

    // every attempt is in the audit log, refusals included
    let audit = cp
        .graphql_with_key(
            &admin,
            "{ auditLog(first: 50) { edges { node { action target result } } } }",
            json!({}),
        )
        .await?;
    let rows: Vec<(String, String)> = audit["data"]["auditLog"]["edges"]
        .as_array()
        .context("audit")?
        .iter()
        .map(|e| &e["node"])
        .filter(|n| n["action"] == "restartComponent")
        .map(|n| {
            (n["target"].as_str().unwrap_or("").to_owned(), n["result"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    let target = format!("agent/{}/component/{trigger}", agent.id);
    let count = |t: &str, r: &str| rows.iter().filter(|(target, result)| target == t && result == r).count();
    assert_eq!(count(&target, "OK"), 4, "{rows:?}"); // first, repeat, admin's, the CLI's
    assert_eq!(count(&target, "ERROR"), 3, "{rows:?}"); // agency (GraphQL and CLI), bad id
    assert_eq!(count(&format!("agent/{}/component/nope", agent.id), "ERROR"), 1, "{rows:?}");
    assert_eq!(count(&format!("agent/agent-nobody/component/{trigger}"), "ERROR"), 1, "{rows:?}");

    // an offline agent
    let status = agent.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    cp.wait_offline(&agent.id).await?;
    let offline = restart(&cp, &admin, &agent.id, &trigger, None).await?;
    assert_eq!(code(&offline), "UNAVAILABLE", "{offline}");
    assert!(offline["errors"][0]["message"].as_str().unwrap().contains("is offline"), "{offline}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_the_agent_never_answers_times_out() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let admin = cp.create_admin_key()?;
    // a bare session that keeps beating but never answers a command
    let session = Session::open(&cp.grpc_url(), "agent-mute", "site-mute").await?;
    let heartbeats = async {
        loop {
            let beat = lanewatch_proto::v1::agent_message::Body::Heartbeat(Default::default());
            if session.send(beat).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let mute = |query: &'static str, vars: Value| {
        let (cp, admin) = (&cp, &admin);
        async move { cp.graphql_with_key(admin, query, vars).await }
    };
    let on_mute = json!({ "agent": "agent-mute", "component": "uplink" });
    let asked = async {
        futures::try_join!(
            restart(&cp, &admin, "agent-mute", "uplink", None),
            mute(PAUSE, on_mute.clone()),
            mute(RESUME, on_mute.clone()),
            mute(LOG_FILTER, json!({ "agent": "agent-mute", "filter": "debug", "for": 60 })),
            mute("query { agentLogs(agentId: \"agent-mute\") { lastSeq } }", json!({})),
            mute(DIAGNOSE, json!({ "agent": "agent-mute" })),
            mute(TEST_CAPTURE, json!({ "agent": "agent-mute", "camera": "front" })),
        )
    };
    let answers = tokio::select! {
        answers = asked => answers?,
        () = heartbeats => anyhow::bail!("the session ended"),
    };
    let (restarted, paused, resumed, filtered, logs, diagnosed, tested) = answers;
    for answer in [restarted, paused, resumed, filtered, diagnosed, tested] {
        assert_eq!(code(&answer), "DEADLINE_EXCEEDED", "{answer}");
        let message = answer["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("did not answer the command within 5s"), "{answer}");
    }
    assert_eq!(code(&logs), "DEADLINE_EXCEEDED", "{logs}");
    assert!(
        logs["errors"][0]["message"].as_str().unwrap().contains("did not answer the log request"),
        "{logs}"
    );
    Ok(())
}

const PAUSE: &str = "mutation($agent: ID!, $component: String!, $id: ID) {
  pauseComponent(agentId: $agent, component: $component, commandId: $id) { commandId message } }";
const RESUME: &str = "mutation($agent: ID!, $component: String!, $id: ID) {
  resumeComponent(agentId: $agent, component: $component, commandId: $id) { commandId message } }";
const DIAGNOSE: &str = "mutation($agent: ID!, $id: ID) {
  runDiagnostics(agentId: $agent, commandId: $id) { commandId message ok checks { name ok message } } }";
const TEST_CAPTURE: &str = "mutation($agent: ID!, $camera: String!) {
  triggerTestCapture(agentId: $agent, camera: $camera) { commandId captureId } }";
const LOG_FILTER: &str = "mutation($agent: ID!, $filter: String!, $for: Int!, $id: ID) {
  setAgentLogFilter(agentId: $agent, filter: $filter, forSecs: $for, commandId: $id) { commandId message } }";

/// A component's status as the agent reports it live.
async fn status(cp: &ControlPlane, agent: &str, component: &str) -> Result<String> {
    Ok(cp.component(agent, component).await?["status"].as_str().unwrap_or("").to_owned())
}

async fn wait_status(cp: &ControlPlane, agent: &str, component: &str, want: &str) -> Result<()> {
    cp.wait_for(&format!("{component} {want}"), || async {
        Ok((status(cp, agent, component).await.ok().as_deref() == Some(want)).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_the_log_filter_are_authorized_audited_and_explain_their_errors() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let admin = cp.create_admin_key()?;
    let operator = cp.create_key(&admin, "OPERATOR").await?;
    let agency = cp.create_key(&admin, "AGENCY").await?;
    let mut agent = AgentBuilder::new(&cp, "site-ops").start()?;
    let trigger = cp.wait_running(&agent.id, "trigger").await?;
    let send = |key: &str, query: &'static str, vars: Value| {
        let (cp, key) = (&cp, key.to_owned());
        async move { cp.graphql_with_key(&key, query, vars).await }
    };
    let on =
        |component: &str, id: Option<&str>| json!({ "agent": agent.id, "component": component, "id": id });

    // an operator pauses the trigger: it stops and stays stopped; the same id again is answered
    // with the first outcome, and another pause is refused
    let id = uuid::Uuid::now_v7().to_string();
    let paused = send(&operator, PAUSE, on(&trigger, Some(&id))).await?;
    assert_eq!(paused["data"]["pauseComponent"]["message"], format!("pausing {trigger}"), "{paused}");
    wait_status(&cp, &agent.id, &trigger, "PAUSED").await?;
    let again = send(&operator, PAUSE, on(&trigger, Some(&id))).await?;
    assert_eq!(again["data"], paused["data"], "{again}");
    let twice = send(&operator, PAUSE, on(&trigger, None)).await?;
    assert_eq!(code(&twice), "FAILED_PRECONDITION", "{twice}");
    assert!(twice["errors"][0]["message"].as_str().unwrap().contains("is already paused"), "{twice}");
    let restart_paused = restart(&cp, &operator, &agent.id, &trigger, None).await?;
    assert!(restart_paused.to_string().contains("is paused: resume it instead"), "{restart_paused}");
    assert_eq!(status(&cp, &agent.id, &trigger).await?, "PAUSED");
    // resumed by the CLI; a resume is not a restart
    let resumed = crate::cli::ok(&cp, &admin, &["exec", &agent.id, "resume", &trigger])?;
    assert!(resumed.starts_with(&format!("{}: resuming {trigger} (command ", agent.id)), "{resumed}");
    wait_status(&cp, &agent.id, &trigger, "RUNNING").await?;
    assert_eq!(restarts(&cp, &agent.id, &trigger).await?, 0);

    // pausing the uplink holds uploads and keeps the session: the agent still answers
    let held = crate::cli::ok(&cp, &operator, &["exec", &agent.id, "pause", "uplink"])?;
    assert!(held.contains("uplink paused: uploads held, the session stays open"), "{held}");
    assert_eq!(status(&cp, &agent.id, "uplink").await?, "PAUSED");
    crate::cli::ok(&cp, &operator, &["exec", &agent.id, "resume", "uplink"])?;
    wait_status(&cp, &agent.id, "uplink", "RUNNING").await?;

    // the log filter: set for a while by the CLI, refused when the agent cannot parse it
    let set = crate::cli::ok(
        &cp,
        &operator,
        &["exec", &agent.id, "log-filter", "info,lanewatch_edge_agent::uplink=debug", "--for", "10m"],
    )?;
    assert!(set.contains("in force for 600s, then \"info\" again"), "{set}");
    let bad =
        send(&operator, LOG_FILTER, json!({ "agent": agent.id, "filter": "lanewatch=loud", "for": 60 }))
            .await?;
    assert_eq!(code(&bad), "FAILED_PRECONDITION", "{bad}");
    assert!(bad["errors"][0]["message"].as_str().unwrap().contains("invalid log filter"), "{bad}");
    let forever = send(&admin, LOG_FILTER, json!({ "agent": agent.id, "filter": "debug", "for": 0 })).await?;
    assert_eq!(code(&forever), "INVALID_ARGUMENT", "{forever}");
    // the uplink's debug lines now reach the ring
    let line = cp
        .wait_for("an uplink debug line", || async {
            let data = cp
                .graphql(
                    "query($id: ID!) { agentLogs(agentId: $id, target: \"lanewatch_edge_agent::uplink\", limit: 1000) {
                        lines { level message } } }",
                    json!({ "id": agent.id }),
                )
                .await?;
            let lines = data["agentLogs"]["lines"].as_array().cloned().unwrap_or_default();
            Ok(lines.into_iter().find(|l| l["level"] == "debug"))
        })
        .await?;
    assert!(line["message"].as_str().is_some_and(|m| !m.is_empty()), "{line}");

    // refusals with clear codes
    for (query, vars) in [
        (PAUSE, on(&trigger, None)),
        (RESUME, on(&trigger, None)),
        (LOG_FILTER, json!({ "agent": agent.id, "filter": "debug", "for": 60 })),
    ] {
        let refused = send(&agency, query, vars).await?;
        assert_eq!(code(&refused), "PERMISSION_DENIED", "{refused}");
    }
    let unknown = send(&admin, PAUSE, on("nope", None)).await?;
    assert_eq!(code(&unknown), "FAILED_PRECONDITION", "{unknown}");
    assert!(unknown.to_string().contains("unknown component \\\"nope\\\"; this agent runs"), "{unknown}");
    let nobody = send(&admin, RESUME, json!({ "agent": "agent-nobody", "component": "uplink" })).await?;
    assert_eq!(code(&nobody), "NOT_FOUND", "{nobody}");

    // every attempt is audited, refusals included
    let rows = cp.audit_rows(&admin, 100).await?;
    let count =
        |a: &str, t: &str, r: &str| rows.iter().filter(|(x, y, z)| x == a && y == t && z == r).count();
    let on_trigger = format!("agent/{}/component/{trigger}", agent.id);
    let on_uplink = format!("agent/{}/component/uplink", agent.id);
    let on_filter = format!("agent/{}/log-filter", agent.id);
    assert_eq!(count("pauseComponent", &on_trigger, "OK"), 2, "{rows:?}"); // first and repeat
    assert_eq!(count("pauseComponent", &on_trigger, "ERROR"), 2, "{rows:?}"); // twice, agency
    assert_eq!(count("resumeComponent", &on_trigger, "OK"), 1, "{rows:?}");
    assert_eq!(count("resumeComponent", &on_trigger, "ERROR"), 1, "{rows:?}"); // agency
    assert_eq!(count("pauseComponent", &on_uplink, "OK"), 1, "{rows:?}");
    assert_eq!(count("resumeComponent", &on_uplink, "OK"), 1, "{rows:?}");
    assert_eq!(count("setAgentLogFilter", &on_filter, "OK"), 1, "{rows:?}");
    assert_eq!(count("setAgentLogFilter", &on_filter, "ERROR"), 3, "{rows:?}"); // bad, 0 s, agency

    // an offline agent
    let exited = agent.proc.terminate(Duration::from_secs(20))?;
    assert!(exited.success(), "{exited}");
    cp.wait_offline(&agent.id).await?;
    for (query, vars) in [
        (PAUSE, on(&trigger, None)),
        (LOG_FILTER, json!({ "agent": agent.id, "filter": "debug", "for": 60 })),
        ("query($agent: ID!) { agentLogs(agentId: $agent) { lastSeq } }", json!({ "agent": agent.id })),
    ] {
        let offline = send(&admin, query, vars).await?;
        assert_eq!(code(&offline), "UNAVAILABLE", "{offline}");
        assert!(offline.to_string().contains("is offline"), "{offline}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_check_the_site_and_are_authorized_audited_and_explain_their_errors() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let admin = cp.create_admin_key()?;
    let operator = cp.create_key(&admin, "OPERATOR").await?;
    let agency = cp.create_key(&admin, "AGENCY").await?;
    let mut agent = AgentBuilder::new(&cp, "site-diag").start()?;
    // what the checks need to pass: a camera streaming, scans arriving, the clock measured
    let camera = cp.wait_running(&agent.id, "acquire-").await?;
    cp.wait_for("the camera streaming, scans and the clock measured", || async {
        let state = cp.component_state(&agent.id, &camera).await?;
        let data = cp
            .graphql(
                "query($id: ID!) { agent(id: $id) { process { clockOffsetMs } } }",
                json!({ "id": agent.id }),
            )
            .await?;
        let clock = !data["agent"]["process"]["clockOffsetMs"].is_null();
        let scans = cp.component(&agent.id, "sense").await?["processed"].as_u64().unwrap_or(0) > 0;
        Ok((state["link"] == "STREAMING" && clock && scans).then_some(()))
    })
    .await?;

    let text = crate::cli::ok(&cp, &operator, &["diagnose", &agent.id])?;
    for line in [
        "ok   disk",
        "ok   lidar",
        &format!("ok   camera {}", camera.trim_start_matches("acquire-")),
        "ok   clock",
        "ok   model",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "{line:?} in:\n{text}");
    }
    assert!(text.contains("1 MiB written and synced in"), "{text}");
    assert!(text.contains("scans/s over the last minute"), "{text}");
    assert!(text.contains("vision is off: no model to load"), "{text}");
    assert!(text.trim_end().ends_with("checks passed"), "{text}");

    // idempotent by command id, refused to agencies, a failing check fails the command line
    let id = uuid::Uuid::now_v7().to_string();
    let first = cp.graphql_with_key(&operator, DIAGNOSE, json!({ "agent": agent.id, "id": id })).await?;
    assert_eq!(first["data"]["runDiagnostics"]["ok"], true, "{first}");
    let again = cp.graphql_with_key(&operator, DIAGNOSE, json!({ "agent": agent.id, "id": id })).await?;
    assert_eq!(again["data"], first["data"], "a repeat gets the first answer: {again}");
    let refused = cp.graphql_with_key(&agency, DIAGNOSE, json!({ "agent": agent.id })).await?;
    assert_eq!(code(&refused), "PERMISSION_DENIED", "{refused}");
    crate::cli::ok(&cp, &operator, &["exec", &agent.id, "pause", &camera])?;
    wait_status(&cp, &agent.id, &camera, "PAUSED").await?;
    let (status, stdout, stderr) = crate::cli::lanewatch(&cp, Some(&operator), &["diagnose", &agent.id])?;
    assert!(!status.success(), "a failing check exits non-zero:\n{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("FAIL camera") && l.contains("is paused")), "{stdout}");
    assert!(stderr.contains("1 of ") && stderr.contains("checks failed"), "{stderr}");

    let rows = cp.audit_rows(&admin, 100).await?;
    let target = format!("agent/{}/diagnostics", agent.id);
    let count =
        |r: &str| rows.iter().filter(|(a, t, x)| a == "runDiagnostics" && *t == target && x == r).count();
    assert_eq!((count("OK"), count("ERROR")), (4, 1), "{rows:?}");

    let exited = agent.proc.terminate(Duration::from_secs(20))?;
    assert!(exited.success(), "{exited}");
    cp.wait_offline(&agent.id).await?;
    crate::cli::refused(&cp, Some(&operator), &["diagnose", &agent.id], "is offline")?;
    Ok(())
}

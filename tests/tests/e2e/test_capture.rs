//! Test captures (`triggerTestCapture`, `lanewatch exec AGENT test-capture CAMERA`) on real
//! binaries, with vision on: the capture goes through anonymization and counting, is stored with
//! decision TEST (never counted in statistics, never a violation, never shown to agencies), and
//! the command is authorized, audited, idempotent by command id, and explains an unknown or
//! paused camera and an offline agent. (A command the agent never answers: `commands.rs`.)

use std::time::Duration;

use anyhow::{Context, Result};
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db, face_scan, tools};
use serde_json::{Value, json};

use crate::commands::code;

const TEST_CAPTURE: &str = "mutation($agent: ID!, $camera: String!, $id: ID) {
  triggerTestCapture(agentId: $agent, camera: $camera, commandId: $id) { commandId message captureId } }";
const CAPTURE: &str = "query($id: ID!) { capture(id: $id) {
  id decision cameraId modelVersion occupancy { status occupants } imageUrl violation { id } } }";

fn vision_agent(cp: &ControlPlane, site: &str) -> AgentBuilder {
    let t = tools();
    // lane 0 is an HOV 2+ lane: a capture there would be judged, a test capture never is;
    // traffic is as thin as the simulator allows, so the test's own capture is alone
    let vision = format!(
        "\n[vision]\nruntime_path = {:?}\nquarantine_path = \"quarantine\"\nfuse_wait_ms = 500\n\
         [vision.face_model]\npath = {:?}\n[vision.anonymize]\nmethod = \"blur\"\n\
         [[vision.cameras]]\nid = \"front\"\n\
         [[vision.cameras.sections]]\nname = \"driver\"\npolygon = [[0, 0], [640, 0], [640, 360], [0, 360]]\n\
         [[vision.policy]]\nlanes = [0]\nmin_occupants = 2\n",
        t.join("onnxruntime/libonnxruntime.so"),
        t.join("models/centerface-int8.onnx"),
    );
    AgentBuilder::new(cp, site)
        .flow(1)
        .simulator_toml(&format!("face_photos_path = {:?}", t.join("faces")))
        .extra_toml(&vision)
}

async fn stored(cp: &ControlPlane, id: &str) -> Result<Value> {
    cp.wait_for("the test capture stored", || async {
        let data = cp.graphql(CAPTURE, json!({ "id": id })).await?;
        Ok(Some(data["capture"].clone()).filter(|c| !c.is_null()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_capture_goes_through_vision_is_never_counted_and_the_command_explains_itself() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let admin = cp.create_admin_key()?;
    let operator = cp.create_key(&admin, "OPERATOR").await?;
    let agency = cp.create_key(&admin, "AGENCY").await?;
    let mut agent = vision_agent(&cp, "site-test-capture").start()?;
    cp.wait_for("the camera streaming", || async {
        let state = cp.component_state(&agent.id, "acquire-front").await?;
        Ok((state["link"] == "STREAMING").then_some(()))
    })
    .await
    .with_context(|| agent.proc.stderr())?;
    let send = |key: &str, camera: &str, id: Option<&str>| {
        let (cp, key, vars) = (&cp, key.to_owned(), json!({ "agent": agent.id, "camera": camera, "id": id }));
        async move { cp.graphql_with_key(&key, TEST_CAPTURE, vars).await }
    };

    // an operator takes one; the answer names the capture, which is stored as a TEST
    let command_id = uuid::Uuid::now_v7().to_string();
    let taken = send(&operator, "front", Some(&command_id)).await?;
    assert!(taken["errors"].is_null(), "{taken}");
    let capture_id =
        taken["data"]["triggerTestCapture"]["captureId"].as_str().context("captureId")?.to_owned();
    assert_eq!(
        taken["data"]["triggerTestCapture"]["message"],
        format!("test capture {capture_id} taken on camera front"),
        "{taken}"
    );
    let capture = stored(&cp, &capture_id).await?;
    assert_eq!(capture["decision"], "TEST", "{capture}");
    assert_eq!(capture["cameraId"], "front", "{capture}");
    assert!(capture["violation"].is_null(), "a test capture is never a violation: {capture}");
    // vision ran on it: counted (or unreadable) by the face model, never left unknown
    assert_ne!(capture["occupancy"]["status"], "UNKNOWN", "{capture}");
    assert!(
        capture["modelVersion"].as_str().is_some_and(|m| m.starts_with("centerface-int8.onnx@")),
        "{capture}"
    );
    // and it was anonymized like every capture: no face in what the control plane received
    let received = tempfile::tempdir()?;
    let image = cp.get(capture["imageUrl"].as_str().context("imageUrl")?).await?.bytes().await?;
    std::fs::write(received.path().join("test.jpg"), &image)?;
    let scan = face_scan(&[received.path()])?;
    assert_eq!((scan.images, scan.faces), (1, 0), "{scan:?}");

    // the same command id again: the first answer, no second capture
    let again = send(&operator, "front", Some(&command_id)).await?;
    assert_eq!(again["data"], taken["data"], "{again}");
    let state = cp.component_state(&agent.id, "acquire-front").await?;
    assert_eq!(state["testCaptures"], 1, "{state}");
    // vision says what it ran and what its face model's sessions hold
    let vision = cp.component(&agent.id, "vision").await?;
    assert_eq!(vision["state"]["__typename"], "VisionState", "{vision}");
    assert!(vision["state"]["sessions"].as_u64().is_some_and(|n| n >= 1), "{vision}");
    assert!(vision["state"]["released"].as_u64().is_some_and(|n| n >= 1), "{vision}");
    let memory = cp
        .graphql(
            "query($id: ID!) { agent(id: $id) { components { name memoryBytes } } }",
            json!({ "id": agent.id }),
        )
        .await?;
    let memory_of = |name: &str| {
        memory["agent"]["components"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .map(|c| c["memoryBytes"].clone())
    };
    assert!(memory_of("vision").and_then(|m| m.as_u64()).is_some_and(|b| b > 1 << 20), "{memory}");

    // counted under TEST only: statistics leave it out, agencies never see it
    let counts = cp
        .graphql("{ captureCounts { total byDecision { decision count } } }", json!({}))
        .await?["captureCounts"]
        .clone();
    let by = |d: &str| {
        counts["byDecision"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["decision"] == d))
            .map(|c| c["count"].clone())
    };
    assert_eq!(by("TEST"), Some(json!(1)), "{counts}");
    let stats = cp
        .graphql(
            "query($from: DateTime!, $to: DateTime!) { occupancyStats(from: $from, to: $to) { vehicles } }",
            json!({
                "from": (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339(),
                "to": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
            }),
        )
        .await?;
    let vehicles: u64 = stats["occupancyStats"]
        .as_array()
        .context("stats")?
        .iter()
        .filter_map(|h| h["vehicles"].as_u64())
        .sum();
    assert_eq!(
        vehicles,
        counts["total"].as_u64().unwrap() - 1,
        "statistics count vehicles only: {stats} {counts}"
    );
    let seen_by_agency = cp.graphql_with_key(&agency, CAPTURE, json!({ "id": capture_id })).await?;
    assert!(seen_by_agency["data"]["capture"].is_null(), "{seen_by_agency}");

    // the command line takes one and waits until it is stored
    let text = crate::cli::ok(&cp, &operator, &["exec", &agent.id, "test-capture", "front"])?;
    assert!(text.contains("taken on camera front; waiting for it to be stored"), "{text}");
    assert!(text.contains("decision TEST"), "{text}");

    // refusals, each with a clear code and the agent's own reason
    let refused = send(&agency, "front", None).await?;
    assert_eq!(code(&refused), "PERMISSION_DENIED", "{refused}");
    let unknown = send(&operator, "rear", None).await?;
    assert_eq!(code(&unknown), "FAILED_PRECONDITION", "{unknown}");
    assert!(
        unknown.to_string().contains("no camera \\\"rear\\\" at this agent (cameras: front)"),
        "{unknown}"
    );
    crate::cli::ok(&cp, &operator, &["exec", &agent.id, "pause", "acquire-front"])?;
    cp.wait_for("the camera paused", || async {
        Ok((cp.component(&agent.id, "acquire-front").await?["status"] == "PAUSED").then_some(()))
    })
    .await?;
    let paused = send(&operator, "front", None).await?;
    assert_eq!(code(&paused), "FAILED_PRECONDITION", "{paused}");
    assert!(paused.to_string().contains("camera front is paused"), "{paused}");
    let empty = send(&operator, " ", None).await?;
    assert_eq!(code(&empty), "INVALID_ARGUMENT", "{empty}");

    // every attempt is audited
    let rows = cp.audit_rows(&admin, 100).await?;
    let target = format!("agent/{}/camera/front/test-capture", agent.id);
    let count = |t: &str, r: &str| {
        rows.iter().filter(|(a, x, y)| a == "triggerTestCapture" && x == t && y == r).count()
    };
    assert_eq!(count(&target, "OK"), 3, "{rows:?}"); // first, repeat, CLI
    assert_eq!(count(&target, "ERROR"), 2, "{rows:?}"); // agency, paused
    assert_eq!(count(&format!("agent/{}/camera/rear/test-capture", agent.id), "ERROR"), 1, "{rows:?}");

    // an offline agent
    agent.proc.terminate(Duration::from_secs(20))?;
    cp.wait_offline(&agent.id).await?;
    let offline = send(&operator, "front", None).await?;
    assert_eq!(code(&offline), "UNAVAILABLE", "{offline}");
    Ok(())
}

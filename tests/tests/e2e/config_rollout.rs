//! Config rollout through GraphQL: an edit is validated on the server (errors name the field
//! and line), stored as the site's next version, pushed over the session, staged and applied by
//! the agent in place (same process, components rebuilt, new captures show the change), and
//! tracked per agent; a config the device refuses, or cannot run, is tracked as rejected with
//! its reason while the agent keeps (or goes back to) its old one; rollback is a new version; an agent offline during the edit
//! gets it on reconnect; agencies are refused; and with two replicas on PostgreSQL and
//! SeaweedFS an edit on the replica without the session reaches the agent.

use anyhow::{Context, Result, bail};
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db, Postgres, SeaweedFs};
use serde_json::{Value, json};
use std::time::Duration;

const UPDATE: &str = "mutation($site: String!, $toml: String!, $comment: String) {
    updateSiteConfig(siteId: $site, toml: $toml, comment: $comment) {
        version toml comment createdBy rollout { agentId version state error } } }";
const ROLLBACK: &str = "mutation($site: String!, $version: Int!) {
    rollbackSiteConfig(siteId: $site, version: $version) {
        version rolledBackFrom comment toml rollout { agentId state error } } }";
const CONFIG: &str = "query($site: String!, $version: Int) {
    siteConfig(siteId: $site, version: $version) { version toml rollout { agentId version state error } } }";
const HISTORY: &str = "query($site: String!) { siteConfigHistory(siteId: $site) { version rolledBackFrom } }";

/// Stores `toml` as the site's next version; returns the mutation's answer.
async fn update(cp: &ControlPlane, site: &str, toml: &str) -> Result<Value> {
    let data = cp.graphql(UPDATE, json!({ "site": site, "toml": toml, "comment": "e2e" })).await?;
    Ok(data["updateSiteConfig"].clone())
}

/// Waits until `agent`'s rollout state for `version` is `state`; returns its rollout entry.
async fn wait_rollout(
    cp: &ControlPlane,
    site: &str,
    version: u64,
    agent: &str,
    state: &str,
) -> Result<Value> {
    cp.wait_for(&format!("agent {agent} {state} for version {version}"), || async {
        let data = cp.graphql(CONFIG, json!({ "site": site, "version": version })).await?;
        let rollout = data["siteConfig"]["rollout"].as_array().cloned().unwrap_or_default();
        Ok(rollout.into_iter().find(|r| r["agentId"] == agent && r["state"] == state))
    })
    .await
}

/// Waits until the agent's Hello reported `version` and it is online.
async fn wait_agent_version(cp: &ControlPlane, agent: &str, version: u64) -> Result<()> {
    cp.wait_for(&format!("agent {agent} online with config version {version}"), || async {
        let data = cp
            .graphql("query($id: ID!) { agent(id: $id) { online configVersion } }", json!({ "id": agent }))
            .await?;
        Ok((data["agent"]["online"] == true && data["agent"]["configVersion"] == version).then_some(()))
    })
    .await
}

/// Waits for a capture taken by `camera` under config `version`.
async fn wait_capture(cp: &ControlPlane, camera: &str, version: u64) -> Result<()> {
    cp.wait_for(&format!("a capture of camera {camera} under config version {version}"), || async {
        let data = cp
            .graphql("{ captures(first: 100) { edges { node { cameraId configVersion } } } }", json!({}))
            .await?;
        let edges = data["captures"]["edges"].as_array().cloned().unwrap_or_default();
        Ok(edges
            .iter()
            .any(|e| e["node"]["cameraId"] == camera && e["node"]["configVersion"] == version)
            .then_some(()))
    })
    .await
}

/// The names of the agent's live components.
async fn component_names(cp: &ControlPlane, agent: &str) -> Result<Vec<String>> {
    let data = cp
        .graphql("query($id: ID!) { agent(id: $id) { components { name status } } }", json!({ "id": agent }))
        .await?;
    let components = data["agent"]["components"].as_array().context("components")?;
    Ok(components.iter().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect())
}

fn replace(text: &str, from: &str, to: &str) -> Result<String> {
    if !text.contains(from) {
        bail!("{from:?} not in the config:\n{text}");
    }
    Ok(text.replacen(from, to, 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_apply_in_place_invalid_and_device_rejected_ones_do_not_and_rollback_restores() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let site = "site-rollout";
    let mut agent = AgentBuilder::new(&cp, site).flow(2500).start()?;
    let pid = agent.proc.pid();
    wait_agent_version(&cp, &agent.id, 0).await?;
    let original = std::fs::read_to_string(&agent.config_path)?;

    // version 1: the agent's own file, taken over by the control plane
    let v1 = update(&cp, site, &original).await?;
    assert_eq!(v1["version"], 1);
    assert!(v1["toml"].as_str().unwrap_or("").starts_with("config_version = 1\n"), "{v1}");
    wait_rollout(&cp, site, 1, &agent.id, "APPLIED").await?;
    wait_agent_version(&cp, &agent.id, 1).await?;

    // version 2: the camera is renamed; the agent rebuilds its components in the same process
    let side = replace(&original, "id = \"front\"", "id = \"side\"")?;
    let v2 = update(&cp, site, &side).await?;
    assert_eq!(v2["version"], 2);
    let state = v2["rollout"][0]["state"].as_str().unwrap_or("");
    assert!(
        ["STAGED", "APPLIED"].contains(&state),
        "the online agent answered before the mutation did: {v2}"
    );
    wait_rollout(&cp, site, 2, &agent.id, "APPLIED").await?;
    wait_agent_version(&cp, &agent.id, 2).await?;
    wait_capture(&cp, "side", 2).await?;
    let names = component_names(&cp, &agent.id).await?;
    assert!(
        names.contains(&"acquire-side".to_owned()) && !names.contains(&"acquire-front".to_owned()),
        "{names:?}"
    );
    assert!(agent.proc.try_status().is_none(), "applied in place, the process kept running");
    assert_eq!(agent.proc.pid(), pid);
    let on_disk = std::fs::read_to_string(&agent.config_path)?;
    assert!(on_disk.starts_with("config_version = 2\n") && on_disk.contains("\"side\""), "{on_disk}");

    // invalid on the server: refused naming the field and line, nothing stored
    let bad = replace(&side, "flow_veh_h_per_lane = 2500", "flow_veh_h_per_lane = 0")?;
    let body = cp.graphql_raw(UPDATE, json!({ "site": site, "toml": bad })).await?;
    let message = body["errors"][0]["message"].as_str().unwrap_or("").to_owned();
    assert!(message.contains("simulator.flow_veh_h_per_lane (line"), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_ARGUMENT", "{body}");
    let other_site = cp.graphql_raw(UPDATE, json!({ "site": "elsewhere", "toml": side })).await?;
    assert!(
        other_site["errors"][0]["message"].as_str().unwrap_or("").contains("site_id (line"),
        "{other_site}"
    );
    let history = cp.graphql(HISTORY, json!({ "site": site })).await?;
    assert_eq!(history["siteConfigHistory"].as_array().map(Vec::len), Some(2), "{history}");

    // valid on the server, refused by the device (a replay directory it does not have)
    let missing = replace(
        &side,
        "kind = \"simulator\"",
        "kind = \"file_replay\"\npath = \"/nonexistent/lanewatch-frames\"",
    )?;
    let v3 = update(&cp, site, &missing).await?;
    assert_eq!(v3["version"], 3);
    let rejected = wait_rollout(&cp, site, 3, &agent.id, "REJECTED").await?;
    assert!(rejected["error"].as_str().unwrap_or("").contains("/nonexistent/lanewatch-frames"), "{rejected}");
    // it keeps running version 2, is not sent version 3 again, and keeps delivering
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_agent_version(&cp, &agent.id, 2).await?;
    let before = cp.all_captures().await?.len();
    cp.wait_for("captures under version 2 after the rejection", || async {
        Ok((cp.all_captures().await?.len() > before).then_some(()))
    })
    .await?;
    assert!(std::fs::read_to_string(&agent.config_path)?.starts_with("config_version = 2\n"));

    // valid on the device too, but its components cannot start (the ground truth file cannot
    // be created under /dev/null): the agent goes back to version 2 and reports why
    let unstartable =
        replace(&side, "seed = 7", "seed = 7\nground_truth_path = \"/dev/null/lanewatch-gt/truth.jsonl\"")?;
    assert_eq!(update(&cp, site, &unstartable).await?["version"], 4);
    let failed = wait_rollout(&cp, site, 4, &agent.id, "REJECTED").await?;
    let error = failed["error"].as_str().unwrap_or("");
    assert!(error.contains("cannot apply") && error.contains("running version 2 again"), "{failed}");
    wait_agent_version(&cp, &agent.id, 2).await?;
    assert!(
        std::fs::read_to_string(&agent.config_path)?.starts_with("config_version = 2\n"),
        "previous file back"
    );
    let before = cp.all_captures().await?.len();
    cp.wait_for("captures after going back to version 2", || async {
        Ok((cp.all_captures().await?.len() > before).then_some(()))
    })
    .await?;

    // rollback to version 1: a new version 5 with version 1's content
    let v5 = cp.graphql(ROLLBACK, json!({ "site": site, "version": 1 })).await?["rollbackSiteConfig"].clone();
    assert_eq!((v5["version"].as_u64(), v5["rolledBackFrom"].as_u64()), (Some(5), Some(1)), "{v5}");
    assert!(v5["toml"].as_str().unwrap_or("").starts_with("config_version = 5\n"), "{v5}");
    wait_rollout(&cp, site, 5, &agent.id, "APPLIED").await?;
    wait_agent_version(&cp, &agent.id, 5).await?;
    wait_capture(&cp, "front", 5).await?;
    let missing_version = cp.graphql_raw(ROLLBACK, json!({ "site": site, "version": 99 })).await?;
    assert_eq!(missing_version["errors"][0]["extensions"]["code"], "NOT_FOUND", "{missing_version}");
    assert!(agent.proc.try_status().is_none(), "still the same process:\n{}", agent.proc.stderr());

    // every attempt is audited, refused ones included
    let admin = cp.create_admin_key()?;
    let entries = cp.audit_rows(&admin, 50).await?;
    for expected in [
        ("updateSiteConfig", format!("site/{site}/config/2"), "OK"),
        ("updateSiteConfig", format!("site/{site}/config"), "ERROR"),
        ("rollbackSiteConfig", format!("site/{site}/config/5"), "OK"),
    ] {
        assert!(
            entries.iter().any(|(a, t, r)| a == expected.0 && *t == expected.1 && r == expected.2),
            "{expected:?} in {entries:?}"
        );
    }
    let status = agent.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_agent_gets_the_edit_on_reconnect_and_agencies_are_refused() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let site = "site-offline";
    let mut agent = AgentBuilder::new(&cp, site).flow(2500).start()?;
    wait_agent_version(&cp, &agent.id, 0).await?;
    let original = std::fs::read_to_string(&agent.config_path)?;
    let status = agent.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    cp.wait_for("the agent offline", || async {
        let data =
            cp.graphql("query($id: ID!) { agent(id: $id) { online } }", json!({ "id": agent.id })).await?;
        Ok((data["agent"]["online"] == false).then_some(()))
    })
    .await?;

    let rear = replace(&original, "id = \"front\"", "id = \"rear\"")?;
    let v1 = update(&cp, site, &rear).await?;
    assert_eq!(v1["rollout"][0]["state"], "PENDING", "offline agents stay pending: {v1}");

    agent.restart()?;
    wait_rollout(&cp, site, 1, &agent.id, "APPLIED").await?;
    wait_agent_version(&cp, &agent.id, 1).await?;
    wait_capture(&cp, "rear", 1).await?;

    // an agency may neither edit nor read site configs; the attempt is audited
    let admin = cp.create_admin_key()?;
    let agency = cp
        .graphql_with_key(
            &admin,
            "mutation { createAgency(name: \"Highway Patrol\", jurisdiction: \"north\") { id } }",
            json!({}),
        )
        .await?;
    let agency_id = agency["data"]["createAgency"]["id"].as_str().context("agency id")?.to_owned();
    let key = cp
        .graphql_with_key(
            &admin,
            "mutation($a: ID) { createApiKey(name: \"patrol\", role: AGENCY, agencyId: $a) { secret } }",
            json!({ "a": agency_id }),
        )
        .await?;
    let token = key["data"]["createApiKey"]["secret"].as_str().context("agency token")?.to_owned();
    let refused = cp.graphql_with_key(&token, UPDATE, json!({ "site": site, "toml": original })).await?;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "PERMISSION_DENIED", "{refused}");
    let refused = cp.graphql_with_key(&token, ROLLBACK, json!({ "site": site, "version": 1 })).await?;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "PERMISSION_DENIED", "{refused}");
    let read = cp.graphql_with_key(&token, CONFIG, json!({ "site": site })).await?;
    assert_eq!(read["errors"][0]["extensions"]["code"], "PERMISSION_DENIED", "{read}");
    let history = cp.graphql(HISTORY, json!({ "site": site })).await?;
    assert_eq!(history["siteConfigHistory"].as_array().map(Vec::len), Some(1), "nothing stored: {history}");
    let audit = cp
        .graphql_with_key(
            &admin,
            "{ auditLog(first: 20) { edges { node { action actor result } } } }",
            json!({}),
        )
        .await?;
    let denied = audit["data"]["auditLog"]["edges"].as_array().context("audit")?.iter().filter(|e| {
        e["node"]["action"] == "updateSiteConfig"
            && e["node"]["result"] == "ERROR"
            && e["node"]["actor"] != "anonymous-local"
    });
    assert_eq!(denied.count(), 1, "{audit}");
    Ok(())
}

const CLUSTER: &str = "\n[cluster]\nenabled = true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_on_the_replica_without_the_session_reaches_the_agent_on_postgres() -> Result<()> {
    let pg = Postgres::fresh_database()?;
    let s3 = SeaweedFs::start()?;
    let a = ControlPlane::start_with(Db::Url(pg.url.clone()), s3.blob("lanewatch-rollout"), CLUSTER).await?;
    let b = ControlPlane::start_with(Db::Url(pg.url.clone()), s3.blob("lanewatch-rollout"), CLUSTER).await?;
    let site = "site-replicas-rollout";
    let agent = AgentBuilder::new(&a, site).flow(2500).start()?;
    wait_agent_version(&b, &agent.id, 0).await?;
    let original = std::fs::read_to_string(&agent.config_path)?;

    // the session is on a; the edit is made on b and answered once the agent staged it
    let side = replace(&original, "id = \"front\"", "id = \"side\"")?;
    let v1 = update(&b, site, &side).await?;
    assert_eq!(v1["version"], 1);
    let state = v1["rollout"][0]["state"].as_str().unwrap_or("");
    assert!(["STAGED", "APPLIED"].contains(&state), "{v1}");
    wait_rollout(&b, site, 1, &agent.id, "APPLIED").await?;
    wait_agent_version(&a, &agent.id, 1).await?;
    // the new camera's captures, with their images in the bucket, are readable on b
    wait_capture(&b, "side", 1).await?;

    // a config the device refuses, edited on b: rejected with the agent's reason
    let missing =
        replace(&side, "kind = \"simulator\"", "kind = \"file_replay\"\npath = \"/nonexistent/frames-b\"")?;
    update(&b, site, &missing).await?;
    let rejected = wait_rollout(&a, site, 2, &agent.id, "REJECTED").await?;
    assert!(rejected["error"].as_str().unwrap_or("").contains("/nonexistent/frames-b"), "{rejected}");

    // a rollback on a, to the version the agent runs: a new version 3, applied
    let v3 = a.graphql(ROLLBACK, json!({ "site": site, "version": 1 })).await?["rollbackSiteConfig"].clone();
    assert_eq!(v3["version"], 3, "{v3}");
    wait_rollout(&b, site, 3, &agent.id, "APPLIED").await?;
    wait_capture(&b, "side", 3).await?;
    let captures = b.all_captures().await?;
    let url = captures[0]["imageUrl"].as_str().context("imageUrl")?;
    let bytes = b.get(url).await?.error_for_status()?.bytes().await?;
    assert_eq!(captures[0]["imageBytes"].as_u64(), Some(bytes.len() as u64));
    Ok(())
}

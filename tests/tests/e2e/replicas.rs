//! Two control-plane replicas on one PostgreSQL database and one S3 bucket (`[cluster]`): an
//! agent connected to replica A is introspectable and takes commands through GraphQL on replica
//! B (the request travels over PostgreSQL NOTIFY to the replica holding the session), and its
//! captures are visible on B.

use anyhow::Result;
use lanewatch_tests::{AgentBuilder, ControlPlane, Db, Postgres, SeaweedFs};
use serde_json::json;

const CLUSTER: &str = "\n[cluster]\nenabled = true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_session_on_replica_a_answers_introspection_asked_on_replica_b() -> Result<()> {
    let pg = Postgres::fresh_database()?;
    let s3 = SeaweedFs::start()?;
    let a = ControlPlane::start_with(Db::Url(pg.url.clone()), s3.blob("lanewatch-replicas"), CLUSTER).await?;
    let b = ControlPlane::start_with(Db::Url(pg.url.clone()), s3.blob("lanewatch-replicas"), CLUSTER).await?;
    let agent = AgentBuilder::new(&a, "site-replicas").flow(2500).start()?;

    let query = "query($id: ID!) { agent(id: $id) { online components { name status } } }";
    let components = b
        .wait_for("the agent's components through replica b", || async {
            let data = b.graphql(query, json!({ "id": agent.id })).await?;
            let online = data["agent"]["online"] == true;
            Ok(data["agent"]["components"].as_array().filter(|c| online && !c.is_empty()).cloned())
        })
        .await?;
    let names: Vec<&str> = components.iter().filter_map(|c| c["name"].as_str()).collect();
    for expected in ["sense", "detect", "uplink"] {
        assert!(names.iter().any(|n| n.starts_with(expected)), "{expected} in {names:?}");
    }
    // replica a answers the same from its own session
    let direct = a.graphql(query, json!({ "id": agent.id })).await?;
    assert_eq!(direct["agent"]["components"].as_array().map(Vec::len), Some(components.len()));

    // a command asked on b reaches the agent through a; its repeat (same id) is answered alike
    let restart = "mutation($id: ID!, $c: String!, $cmd: ID) {
      restartComponent(agentId: $id, component: $c, commandId: $cmd) { commandId message } }";
    let detect = *names.iter().find(|n| n.starts_with("detect")).expect("a detect component");
    let command_id = uuid::Uuid::now_v7().to_string();
    let vars = json!({ "id": agent.id, "c": detect, "cmd": command_id });
    let first = b.graphql(restart, vars.clone()).await?;
    assert_eq!(first["restartComponent"]["message"], format!("restarting {detect}"), "{first}");
    assert_eq!(first["restartComponent"]["commandId"], command_id.as_str(), "{first}");
    assert_eq!(b.graphql(restart, vars).await?, first);
    let unknown = b.graphql_raw(restart, json!({ "id": agent.id, "c": "nope" })).await?;
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "FAILED_PRECONDITION", "{unknown}");

    // captures the agent uploads to a are readable, with their images, on b
    let captures = b
        .wait_for("a capture through replica b", || async {
            let c = b.all_captures().await?;
            Ok((!c.is_empty()).then_some(c))
        })
        .await?;
    let url = captures[0]["imageUrl"].as_str().expect("imageUrl");
    let bytes = b.get(url).await?.error_for_status()?.bytes().await?;
    assert_eq!(captures[0]["imageBytes"].as_u64(), Some(bytes.len() as u64));
    Ok(())
}

//! The LanewatchSite controller against a real Kubernetes cluster: ignored by default (no
//! kube-apiserver can be installed here, see docs/OPERATIONS.md); run it with `KUBECONFIG` set
//! and `--run-ignored ignored-only`. It applies the CRD (server-side apply), creates a resource in
//! `LANEWATCH_TEST_NAMESPACE` (default `default`), runs the controller over a fresh SQLite
//! database until the resource is Ready with its config stored, then deletes the resource.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use lanewatch_control_plane::blob::BlobStore;
use lanewatch_control_plane::config::{BlobConfig, Limits};
use lanewatch_control_plane::db::Db;
use lanewatch_control_plane::gateway::Gateway;
use lanewatch_control_plane::k8s::crd::{AgentConfigSource, LanewatchSite, LanewatchSiteSpec};
use lanewatch_control_plane::k8s::{Context, reconcile_sites};
use lanewatch_control_plane::metrics::Metrics;
use tokio::sync::watch;

const AGENT_CONFIG: &str = r#"version = 1
agent_id = "a1"
site_id = "{site}"

[control_plane]
url = "http://127.0.0.1:1"

[site]
lanes = 2

[simulator]
seed = 1
flow_veh_h_per_lane = 900

[[cameras]]
id = "front"
lanes = [0, 1]

[cameras.source]
kind = "simulator"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real cluster: set KUBECONFIG and pass --run-ignored ignored-only"]
async fn a_site_on_a_real_cluster_is_stored_and_becomes_ready() {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!("skipped: KUBECONFIG is not set, so there is no cluster to test against");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default().await.expect("a client from KUBECONFIG");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let apply = PatchParams::apply("lanewatch-test").force();
    crds.patch("lanewatchsites.lanewatch.io", &apply, &Patch::Apply(LanewatchSite::crd())).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // the CRD becomes established

    let namespace = std::env::var("LANEWATCH_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let name = format!("lw-test-{}", uuid::Uuid::now_v7().simple());
    let config = AGENT_CONFIG.replace("{site}", &name);
    let spec = LanewatchSiteSpec {
        site_id: name.clone(),
        jurisdiction: None,
        lanes: vec![],
        agent_config: AgentConfigSource { inline: Some(config), config_map_ref: None },
    };
    let sites: Api<LanewatchSite> = Api::namespaced(client.clone(), &namespace);
    sites.create(&PostParams::default(), &LanewatchSite::new(&name, spec)).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display())).await.unwrap();
    let blobs = BlobStore::open(&BlobConfig::Local { dir: dir.path().join("blobs") }).await.unwrap();
    let (stop_tx, stop) = watch::channel(false);
    let gateway = Gateway::new(db.clone(), blobs, Limits::default(), Metrics::new(), stop.clone());
    let fence = db.begin_leader_term("singletons", "test", chrono::Utc::now()).await.unwrap();
    let ctx = Context {
        client,
        db: db.clone(),
        sessions: Arc::new(gateway),
        namespace: namespace.clone(),
        field_manager: "lanewatch-test".into(),
        fence,
    };
    let controller = tokio::spawn(reconcile_sites(ctx, stop));
    let mut ready = false;
    for _ in 0..60 {
        let site = sites.get(&name).await.unwrap();
        let conditions = site.status.map(|s| s.conditions).unwrap_or_default();
        if conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = sites.delete(&name, &DeleteParams::default()).await;
    stop_tx.send(true).unwrap();
    let _ = controller.await;
    assert!(ready, "the resource did not become Ready within 60 s");
    assert_eq!(db.site_config(&name, None).await.unwrap().unwrap().version, 1);
}

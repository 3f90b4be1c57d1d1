//! LanewatchSite resources against kmock's Kubernetes API emulator (`tests/kmock/apiserver.py`
//! in `.tools/kmock-venv`, which scripts/setup.sh installs; no real kube-apiserver can be
//! installed here, see docs/OPERATIONS.md): the real `lanewatch-control` with
//! `[kubernetes] enabled` creates and takes its leader Lease, lists and watches the
//! LanewatchSites, stores a resource's config as the site's next version through the validated
//! rollout, writes the resource's status, refuses GraphQL edits of the site naming the
//! resource, and marks a resource whose config the validator refuses Degraded with the field
//! and line, storing nothing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lanewatch_tests::{Blob, ControlPlane, Db, workspace_root};
use serde_json::{Value, json};

const VALID: &str = r#"version = 1
agent_id = "a1"
site_id = "s1"

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

const SITES: &str = "/apis/lanewatch.io/v1alpha1/namespaces/lw/lanewatchsites";

/// The emulator; it stops when its standard input closes (at drop) or after 180 s.
struct Kmock {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Kmock {
    fn start() -> Result<Self> {
        let root = workspace_root();
        let python = root.join(".tools/kmock-venv/bin/python");
        anyhow::ensure!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
        let mut child = Command::new(python)
            .arg(root.join("tests/kmock/apiserver.py"))
            .args(["--max-secs", "180"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start kmock")?;
        let stdout = child.stdout.take().context("kmock's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).context("kmock did not start within 30 s")?;
        let ready: Value = serde_json::from_str(&line).with_context(|| format!("kmock said {line:?}"))?;
        let url = ready["url"].as_str().context("kmock's url")?.to_owned();
        Ok(Self { child, url, http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()? })
    }

    /// A kubeconfig for the emulator (plain http, no credentials), namespace `lw`.
    fn kubeconfig(&self, dir: &std::path::Path) -> Result<std::path::PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kmock\n  cluster:\n    server: {}\n\
             users:\n- name: kmock\n  user: {{}}\ncontexts:\n- name: kmock\n  context:\n    cluster: kmock\n\
             \x20   user: kmock\n    namespace: lw\ncurrent-context: kmock\n",
            self.url
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    async fn create_site(&self, name: &str, site_id: &str, toml: &str) -> Result<()> {
        let body = json!({
            "apiVersion": "lanewatch.io/v1alpha1", "kind": "LanewatchSite",
            "metadata": { "name": name, "namespace": "lw" },
            "spec": { "siteId": site_id, "jurisdiction": "CA",
                      "lanes": [{ "lane": 0, "minOccupants": 2 }],
                      "agentConfig": { "inline": toml } },
        });
        let response = self.http.post(format!("{}{SITES}", self.url)).json(&body).send().await?;
        anyhow::ensure!(response.status().is_success(), "create {name}: {}", response.text().await?);
        Ok(())
    }

    async fn get(&self, path: &str) -> Result<Value> {
        Ok(self.http.get(format!("{}{path}", self.url)).send().await?.json().await?)
    }
}

impl Drop for Kmock {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn condition<'a>(site: &'a Value, type_: &str) -> Option<&'a Value> {
    site["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanewatch_sites_from_the_emulated_api_are_rolled_out_with_their_status() -> Result<()> {
    let kmock = Kmock::start()?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = kmock.kubeconfig(dir.path())?;
    // one resource exists before the control plane starts (list), one comes later (watch)
    kmock.create_site("north", "s1", VALID).await?;
    let toml =
        "[kubernetes]\nenabled = true\nnamespace = \"lw\"\nlease_duration_secs = 10\nlease_grace_secs = 3\n";
    let env = [("KUBECONFIG", kubeconfig.to_str().context("path")?), ("POD_NAME", "control-0")];
    let cp = ControlPlane::start_with_env(Db::Sqlite, Blob::Local, toml, &env).await?;

    let north = cp
        .wait_for("north Ready", || async {
            let site = kmock.get(&format!("{SITES}/north")).await?;
            Ok(condition(&site, "Ready").filter(|c| c["status"] == "True").map(|_| site.clone()))
        })
        .await?;
    assert_eq!(north["status"]["rollout"]["version"], 1, "{north}");
    assert_eq!(condition(&north, "Degraded").context("Degraded")?["status"], "False");
    let stored = cp.graphql("{ siteConfig(siteId: \"s1\") { version createdBy toml } }", json!({})).await?;
    assert_eq!(stored["siteConfig"]["createdBy"], "kubernetes:lw/north", "{stored}");
    assert!(stored["siteConfig"]["toml"].as_str().unwrap_or_default().contains("config_version = 1"));
    let sites = cp.graphql("{ sites { id jurisdiction } }", json!({})).await?;
    let s1 = sites["sites"].as_array().and_then(|s| s.iter().find(|s| s["id"] == "s1")).context("site s1")?;
    assert_eq!(s1["jurisdiction"], "CA", "{sites}");

    // one source of truth: GraphQL edits of the managed site are refused, naming the resource
    let refused = cp
        .graphql_raw(
            "mutation($t: String!) { updateSiteConfig(siteId: \"s1\", toml: $t) { version } }",
            json!({ "t": VALID.replace("seed = 1", "seed = 2") }),
        )
        .await?;
    let message = refused["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("LanewatchSite lw/north"), "{refused}");

    // a resource created now arrives through the watch; its bad config stores nothing
    let broken = VALID.replace("site_id = \"s1\"", "site_id = \"s2\"").replace("= 900", "= 0");
    kmock.create_site("south", "s2", &broken).await?;
    let south = cp
        .wait_for("south Degraded", || async {
            let site = kmock.get(&format!("{SITES}/south")).await?;
            Ok(condition(&site, "Degraded").filter(|c| c["status"] == "True").map(|_| site.clone()))
        })
        .await?;
    let degraded = condition(&south, "Degraded").context("Degraded")?;
    assert_eq!(degraded["reason"], "InvalidConfig", "{south}");
    assert!(degraded["message"].as_str().unwrap_or_default().contains("(line 13)"), "{south}");
    let none = cp.graphql("{ siteConfig(siteId: \"s2\") { version } }", json!({})).await?;
    assert_eq!(none["siteConfig"], Value::Null, "nothing stored for a refused config");

    // the leader Lease was created and is held by this replica
    let lease =
        kmock.get("/apis/coordination.k8s.io/v1/namespaces/lw/leases/lanewatch-control-plane").await?;
    assert_eq!(lease["spec"]["holderIdentity"], "control-0", "{lease}");
    let metrics = kmock.http.get(cp.http_url("/metrics")).send().await?.text().await?;
    assert!(metrics.lines().any(|l| l == "lanewatch_leader_epoch 1"), "the first term leads:\n{metrics}");
    if cp.proc.stderr().contains("panicked") {
        bail!("the control plane panicked:\n{}", cp.proc.stderr());
    }
    Ok(())
}

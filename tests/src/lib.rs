//! The end-to-end harness: starts the real `lanewatch-control` and `lanewatch-agent` binaries on
//! port 0 with a fresh database and blob store, and gives tests typed handles to drive them.
//!
//! Everything here talks to 127.0.0.1 only, every wait is bounded, and every process it starts is
//! killed when its handle drops, so a failing test never leaves servers behind.
//!
//! Binaries are looked up next to the test executable (`target/<profile>/`), or in
//! `LANEWATCH_BIN_DIR`; build them first with `cargo build --workspace --bins` (the test command
//! in the README does).

mod agent;
pub mod collector;
pub mod grpc;
pub mod proxy;
pub mod services;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub use agent::{Agent, AgentBuilder, CameraSource};
pub use services::{Postgres, PrivatePostgres, SeaweedFs, Shutdown};

/// How long any single wait in the harness may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Where the workspace's binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LANEWATCH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

/// The path of one of the workspace's binaries, with a clear failure when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found; build the binaries first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// The workspace root (for fixtures and tools installed by the setup script).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A child process that is killed when dropped, with its output captured to files.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> Result<Self> {
        let stdout_path = log_dir.join(format!("{name}.stdout.log"));
        let stderr_path = log_dir.join(format!("{name}.stderr.log"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path)?)
            .stderr(std::fs::File::create(&stderr_path)?)
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        Ok(Self { name: name.to_owned(), child: Some(child), stdout_path, stderr_path })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    /// Stderr so far, for assertions and failure messages.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Whether the process has exited, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait(within)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
        }
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self, within: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_status() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {within:?}; stderr:\n{}", self.name, self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for a JSON file written (atomically) by a starting binary.
pub fn wait_ready_file(path: &Path, proc: &mut Proc) -> Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text).context("ready file is JSON");
        }
        if let Some(status) = proc.try_status() {
            bail!("{} exited with {status} before it was ready; stderr:\n{}", proc.name, proc.stderr());
        }
        if Instant::now() > deadline {
            bail!("{} not ready within {WAIT:?}; stderr:\n{}", proc.name, proc.stderr());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where the control plane keeps metadata.
#[derive(Clone, Debug)]
pub enum Db {
    /// A fresh SQLite file in the control plane's temp dir (the embedded default).
    Sqlite,
    /// A database URL, e.g. from [`Postgres::fresh_database`].
    Url(String),
}

/// Where the control plane keeps images.
#[derive(Clone, Debug)]
pub enum Blob {
    /// A directory in the control plane's temp dir (the embedded default).
    Local,
    /// An S3 server, e.g. [`SeaweedFs`].
    S3 { endpoint: String, bucket: String, access_key: String, secret_key: String },
}

/// Every field of every kind of `Component.state`, as a fragment to append to a query.
pub const STATE_FRAGMENT: &str = "fragment State on ComponentState {
  ... on LidarState { source origin framing link degraded secsSinceLastScan lastError telegramsOk
    telegramsMalformed garbageBytes outOfOrder scansMissed reconnects connectFailures sopasErrors }
  ... on DetectorState { learnt degraded degradedScans entries exits speedsMeasured }
  ... on TriggerState { triggersPerCamera { camera count } }
  ... on CameraState { link frames pending stalls stallAfterMs lastFrameAt device droppedFrames testCaptures }
  ... on VisionState { frames faces released quarantined quarantineHeld lastQuarantineReason counted
    unreadable violationCandidates model sessions }
  ... on BufferState { captures bytes maxBytes appended rejected evicted expired damaged receiptsPending }
  ... on UplinkState { link refused sessionId acked
    buffer { captures bytes maxBytes appended rejected evicted expired damaged receiptsPending } } }";

/// A running control plane.
pub struct ControlPlane {
    pub proc: Proc,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub dir: TempDir,
    /// Whether the agent gateway speaks TLS (its certificate names `localhost` and 127.0.0.1).
    pub tls: bool,
    http: reqwest::Client,
    config_path: PathBuf,
    ready_path: PathBuf,
    /// Starts so far (1 + restarts), to keep each run's logs.
    starts: u32,
    /// Environment variables the process gets besides the test's (e.g. `KUBECONFIG`).
    env: Vec<(String, String)>,
}

impl ControlPlane {
    pub async fn start(db: Db, blob: Blob) -> Result<Self> {
        Self::start_with(db, blob, "").await
    }

    /// Starts with extra TOML appended to the generated config (e.g. a `[limits]` table).
    pub async fn start_with(db: Db, blob: Blob, extra_toml: &str) -> Result<Self> {
        Self::start_inner(db, blob, "", extra_toml, Vec::new()).await
    }

    /// [`ControlPlane::start_with`], the process also given `env` (e.g. `KUBECONFIG`).
    pub async fn start_with_env(db: Db, blob: Blob, extra_toml: &str, env: &[(&str, &str)]) -> Result<Self> {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Self::start_inner(db, blob, "", extra_toml, env).await
    }

    /// Starts with TLS on the agent gateway, serving `cert_pem`/`key_pem` (files in `tls_dir`).
    pub async fn start_tls(db: Db, blob: Blob, cert: &Path, key: &Path) -> Result<Self> {
        let grpc = format!("tls = {{ cert_path = {cert:?}, key_path = {key:?} }}\n");
        let mut cp = Self::start_inner(db, blob, &grpc, "", Vec::new()).await?;
        cp.tls = true;
        Ok(cp)
    }

    /// Starts with mutual TLS on the agent gateway: agents must show a certificate issued by
    /// `client_ca` (PEM file) whose subject CN is their agent id.
    pub async fn start_tls_with_client_ca(
        db: Db,
        blob: Blob,
        cert: &Path,
        key: &Path,
        client_ca: &Path,
    ) -> Result<Self> {
        let grpc =
            format!("tls = {{ cert_path = {cert:?}, key_path = {key:?}, client_ca_path = {client_ca:?} }}\n");
        let mut cp = Self::start_inner(db, blob, &grpc, "", Vec::new()).await?;
        cp.tls = true;
        Ok(cp)
    }

    /// Creates an admin API key with `lanewatch-control create-api-key` on this control
    /// plane's config and database; returns the bearer token.
    pub fn create_admin_key(&self) -> Result<String> {
        let output = Command::new(bin("lanewatch-control"))
            .arg("create-api-key")
            .arg("--config")
            .arg(&self.config_path)
            .args(["--name", "e2e-admin", "--role", "admin"])
            .output()?;
        if !output.status.success() {
            bail!("create-api-key failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }

    /// An API key of `role` (`OPERATOR` or `AGENCY`; an agency key belongs to a new agency of
    /// jurisdiction `north`), made through GraphQL by the holder of the admin key `admin`.
    pub async fn create_key(&self, admin: &str, role: &str) -> Result<String> {
        let agency = if role == "AGENCY" {
            let created = self
                .graphql_with_key(
                    admin,
                    "mutation { createAgency(name: \"Patrol\", jurisdiction: \"north\") { id } }",
                    json!({}),
                )
                .await?;
            Some(created["data"]["createAgency"]["id"].as_str().context("agency id")?.to_owned())
        } else {
            None
        };
        let created = self
            .graphql_with_key(
                admin,
                "mutation($r: Role!, $a: ID) { createApiKey(name: \"e2e\", role: $r, agencyId: $a) { secret } }",
                json!({ "r": role, "a": agency }),
            )
            .await?;
        Ok(created["data"]["createApiKey"]["secret"]
            .as_str()
            .with_context(|| format!("a key: {created}"))?
            .to_owned())
    }

    /// Waits until GraphQL shows `agent_id` offline.
    pub async fn wait_offline(&self, agent_id: &str) -> Result<()> {
        self.wait_for("the agent offline", || async {
            let data = self
                .graphql("query($id: ID!) { agent(id: $id) { online } }", json!({ "id": agent_id }))
                .await?;
            Ok((data["agent"]["online"] == false).then_some(()))
        })
        .await
    }

    /// An agent's supervised components as it reports them now (name, status, restarts,
    /// processed, inbox, …), asked live through GraphQL: what a test reads of a running agent's
    /// internal state.
    /// Each component's typed `state` comes with every field of its kind (and `__typename`:
    /// `LidarState`, `CameraState`, `UplinkState`, ...).
    pub async fn components(&self, agent_id: &str) -> Result<Vec<Value>> {
        let query = format!(
            "query($id: ID!) {{ agent(id: $id) {{ components {{ name status restarts processed lastFailure
                inbox {{ depth capacity }} state {{ __typename ...State }} }} }} }} {STATE_FRAGMENT}"
        );
        let data = self.graphql(&query, json!({ "id": agent_id })).await?;
        data["agent"]["components"].as_array().cloned().context("the agent's components")
    }

    /// One component of [`ControlPlane::components`].
    pub async fn component(&self, agent_id: &str, name: &str) -> Result<Value> {
        let components = self.components(agent_id).await?;
        components.into_iter().find(|c| c["name"] == name).with_context(|| format!("no component {name}"))
    }

    /// The typed state a running agent's component reports now (`Component.state`): e.g. a
    /// camera's `{ "__typename": "CameraState", "link": "STREAMING", "frames": 42, ... }`; null
    /// before the component first published.
    pub async fn component_state(&self, agent_id: &str, name: &str) -> Result<Value> {
        Ok(self.component(agent_id, name).await?["state"].clone())
    }

    /// Waits until a component whose name starts with `prefix` runs; its name.
    pub async fn wait_running(&self, agent_id: &str, prefix: &str) -> Result<String> {
        self.wait_for(&format!("a {prefix} component running"), || async {
            let Ok(components) = self.components(agent_id).await else { return Ok(None) };
            Ok(components
                .iter()
                .find(|c| {
                    c["name"].as_str().is_some_and(|n| n.starts_with(prefix)) && c["status"] == "RUNNING"
                })
                .and_then(|c| c["name"].as_str().map(str::to_owned)))
        })
        .await
    }

    /// The newest `first` audit rows as (action, target, result), read with an admin key.
    pub async fn audit_rows(&self, admin: &str, first: u32) -> Result<Vec<(String, String, String)>> {
        let audit = self
            .graphql_with_key(
                admin,
                "query($first: Int!) { auditLog(first: $first) { edges { node { action target result } } } }",
                json!({ "first": first }),
            )
            .await?;
        let edges = audit["data"]["auditLog"]["edges"]
            .as_array()
            .with_context(|| format!("the audit log: {audit}"))?;
        Ok(edges
            .iter()
            .map(|e| {
                let s = |k: &str| e["node"][k].as_str().unwrap_or("").to_owned();
                (s("action"), s("target"), s("result"))
            })
            .collect())
    }

    /// Runs a GraphQL query as the holder of `token` and returns the whole response body.
    pub async fn graphql_with_key(&self, token: &str, query: &str, variables: Value) -> Result<Value> {
        let response = self
            .http
            .post(self.http_url("/graphql"))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?;
        response.json().await.context("graphql response is JSON")
    }

    async fn start_inner(
        db: Db,
        blob: Blob,
        grpc_extra: &str,
        extra_toml: &str,
        env: Vec<(String, String)>,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("lanewatch-cp-").tempdir()?;
        let db_url = match db {
            Db::Sqlite => format!("sqlite://{}/lanewatch.db?mode=rwc", dir.path().display()),
            Db::Url(url) => url,
        };
        let blob_toml = match &blob {
            Blob::Local => format!("kind = \"local\"\ndir = {:?}\n", dir.path().join("blobs")),
            Blob::S3 { endpoint, bucket, access_key, secret_key } => format!(
                "kind = \"s3\"\nbucket = {bucket:?}\nendpoint_url = {endpoint:?}\nregion = \"us-east-1\"\n\
                 force_path_style = true\ncreate_bucket = true\naccess_key_id = {access_key:?}\n\
                 secret_access_key = {secret_key:?}\n"
            ),
        };
        let config = format!(
            "version = 1\nshutdown_grace_secs = 5\n\n[grpc]\nlisten = \"127.0.0.1:0\"\n{grpc_extra}\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\n[database]\nurl = {db_url:?}\n\n[blob]\n{blob_toml}\n\
             [limits]\nheartbeat_interval_ms = 500\nagent_offline_after_secs = 3\n{extra_toml}"
        );
        let config_path = dir.path().join("control.toml");
        std::fs::write(&config_path, config)?;
        let ready_path = dir.path().join("ready.json");
        let mut proc = Self::spawn(&config_path, &ready_path, dir.path(), "lanewatch-control", &[], &env)?;
        let ready = tokio::task::block_in_place(|| wait_ready_file(&ready_path, &mut proc))?;
        let addr = |key: &str| -> Result<SocketAddr> {
            ready[key]
                .as_str()
                .ok_or_else(|| anyhow!("ready file lacks {key}: {ready}"))?
                .parse()
                .context("ready file address")
        };
        Ok(Self {
            grpc_addr: addr("grpc_addr")?,
            http_addr: addr("http_addr")?,
            proc,
            dir,
            tls: false,
            http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?,
            config_path,
            ready_path,
            starts: 1,
            env,
        })
    }

    fn spawn(
        config: &Path,
        ready: &Path,
        dir: &Path,
        name: &str,
        extra: &[String],
        env: &[(String, String)],
    ) -> Result<Proc> {
        let _ = std::fs::remove_file(ready);
        Proc::spawn(
            name,
            Command::new(bin("lanewatch-control"))
                .arg("--config")
                .arg(config)
                .arg("--ready-file")
                .arg(ready)
                .args(extra)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .env("RUST_LOG", "info"),
            dir,
        )
    }

    /// Stops the control plane with `signal` (SIGTERM: graceful; SIGKILL: a crash), waits for
    /// it to exit, and starts it again with the same config, database and blob store on the
    /// SAME ports (the addresses of the first start, passed as `--grpc-listen`/`--http-listen`),
    /// so agents reconnect to the address they know. A bind that fails because the port is
    /// briefly still held is retried, bounded.
    pub async fn restart(&mut self, signal: nix::sys::signal::Signal) -> Result<()> {
        self.proc.signal(signal);
        let within = Duration::from_secs(20);
        tokio::task::block_in_place(|| self.proc.wait(within))?;
        self.starts += 1;
        let name = format!("lanewatch-control.{}", self.starts);
        let extra =
            [format!("--grpc-listen={}", self.grpc_addr), format!("--http-listen={}", self.http_addr)];
        let deadline = Instant::now() + WAIT;
        loop {
            let mut proc =
                Self::spawn(&self.config_path, &self.ready_path, self.dir.path(), &name, &extra, &self.env)?;
            match tokio::task::block_in_place(|| wait_ready_file(&self.ready_path, &mut proc)) {
                Ok(_) => {
                    self.proc = proc;
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline && format!("{e:#}").contains("cannot bind") => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e.context("restarting the control plane on its ports")),
            }
        }
    }

    /// Stderr of every start so far, for failure messages.
    pub fn all_stderr(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            let name = if i == 1 { "lanewatch-control".to_owned() } else { format!("lanewatch-control.{i}") };
            out.push_str(
                &std::fs::read_to_string(self.dir.path().join(format!("{name}.stderr.log")))
                    .unwrap_or_default(),
            );
        }
        out
    }

    pub fn grpc_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.grpc_addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// Runs a GraphQL query and returns `data`, failing on any GraphQL error.
    pub async fn graphql(&self, query: &str, variables: Value) -> Result<Value> {
        let body = self.graphql_raw(query, variables).await?;
        if let Some(errors) = body.get("errors") {
            bail!("graphql errors: {errors}");
        }
        Ok(body["data"].clone())
    }

    /// Runs a GraphQL query and returns the whole response body (`data` and `errors`).
    pub async fn graphql_raw(&self, query: &str, variables: Value) -> Result<Value> {
        let response = self
            .http
            .post(self.http_url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?;
        response.json().await.context("graphql response is JSON")
    }

    pub async fn get(&self, url: &str) -> Result<reqwest::Response> {
        Ok(self.http.get(url).send().await?)
    }

    /// All captures, newest first, following the connection's pages.
    pub async fn all_captures(&self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let data = self
                .graphql(
                    "query($after: String) { captures(first: 100, after: $after) {
                        edges { cursor node { id agentId site lane capturedAt vehicleClass
                          occupancy { status occupants } imageUrl imageSha256 imageBytes } }
                        pageInfo { hasNextPage endCursor } } }",
                    json!({ "after": after }),
                )
                .await?;
            let conn = &data["captures"];
            for edge in conn["edges"].as_array().cloned().unwrap_or_default() {
                out.push(edge["node"].clone());
            }
            if conn["pageInfo"]["hasNextPage"].as_bool() != Some(true) {
                return Ok(out);
            }
            after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        }
    }

    /// All deletion receipts, newest deletion first, following the connection's pages.
    pub async fn all_receipts(&self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let data = self
                .graphql(
                    "query($after: String) { deletionReceipts(first: 100, after: $after) {
                        edges { node { receiptId captureId agentId site valueClass capturedAt
                          deletedAt reason bytes } }
                        pageInfo { hasNextPage endCursor } } }",
                    json!({ "after": after }),
                )
                .await?;
            let conn = &data["deletionReceipts"];
            for edge in conn["edges"].as_array().cloned().unwrap_or_default() {
                out.push(edge["node"].clone());
            }
            if conn["pageInfo"]["hasNextPage"].as_bool() != Some(true) {
                return Ok(out);
            }
            after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        }
    }

    /// Polls `check` until it yields a value, bounded by [`WAIT`].
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let deadline = Instant::now() + WAIT;
        let mut last_err = String::new();
        loop {
            match check().await {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last_err = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what} (last error: {last_err}); control plane stderr:\n{}",
                    tail(&self.proc.stderr(), 4000)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What `scripts/setup.sh` installs for vision: ONNX Runtime, the face models, the face photos.
pub fn tools() -> PathBuf {
    workspace_root().join(".tools")
}

/// What the face detector found in a set of images.
#[derive(Debug, serde::Deserialize)]
pub struct FaceScan {
    pub images: usize,
    pub faces: usize,
    /// The highest face score seen (in assertion messages).
    pub best_score: f32,
}

/// Faces the detector (the float CenterFace, at full resolution) finds in every JPEG embedded
/// in `paths` (files or directories, read as raw bytes: buffer segments too).
pub fn face_scan(paths: &[&Path]) -> Result<FaceScan> {
    let out = Command::new(bin("lanewatch-agent"))
        .args(["bench", "face-scan", "--tools-dir"])
        .arg(tools())
        .args(paths)
        .output()?;
    anyhow::ensure!(out.status.success(), "face-scan failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).context("face-scan output")
}

/// Runs `lanewatch-agent` (or another binary) to completion on a config, returning status and stderr.
pub fn run_to_exit(binary: &str, args: &[&str], within: Duration) -> Result<(ExitStatus, String)> {
    let (status, _stdout, stderr) = run_to_exit_with_stdout(binary, args, within)?;
    Ok((status, stderr))
}

/// Like [`run_to_exit`], also returning stdout.
pub fn run_to_exit_with_stdout(
    binary: &str,
    args: &[&str],
    within: Duration,
) -> Result<(ExitStatus, String, String)> {
    let dir = tempfile::tempdir()?;
    let mut proc = Proc::spawn(binary, Command::new(bin(binary)).args(args), dir.path())?;
    let status = proc.wait(within)?;
    let stdout = std::fs::read_to_string(&proc.stdout_path).unwrap_or_default();
    Ok((status, stdout, proc.stderr()))
}

/// Writes `text` to a new temp file and returns it (kept alive by the returned handle).
pub fn temp_file(name: &str, text: &str) -> Result<(TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(name);
    std::fs::File::create(&path)?.write_all(text.as_bytes())?;
    Ok((dir, path))
}

/// A real JPEG of `width`×`height` noise: noise defeats compression, so the file is large
/// (about 3 MB at 1600×1200 and quality 95) and exercises chunked upload.
pub fn noise_jpeg(width: u32, height: u32, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let img = image::RgbImage::from_fn(width, height, |_, _| image::Rgb(rng.random()));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&img)
        .expect("jpeg encoding");
    out
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The last `n` bytes of a log, on a char boundary.
pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Reads one HTTP/1.1 request (the head, then the body its `content-length` announces) from a
/// test receiver's connection; `None` when the peer closed it first. Header lookups on the
/// result: [`header`].
pub async fn read_http_request(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        let n = stream.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize =
                header(&text[..head_end], "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            if buf.len() >= head_end + 4 + length {
                return Some(text);
            }
        }
    }
}

/// The value of header `name` (any case) in an HTTP request's text.
pub fn header(request: &str, name: &str) -> Option<String> {
    let head = request.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

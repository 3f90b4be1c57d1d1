//! A test agent: [`AgentBuilder`] writes a `lanewatch-agent` config (simulated traffic and
//! cameras unless told otherwise) against a [`ControlPlane`] and starts the real binary;
//! [`Agent`] is its running handle.

use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

use crate::{ControlPlane, Proc, bin, wait_ready_file};

/// How a test agent's camera gets frames.
#[derive(Clone, Debug)]
pub enum CameraSource {
    /// The simulator renders the scene.
    Simulator,
    /// Image files are replayed unchanged.
    Replay(PathBuf),
    /// These lines are the `[cameras.source]` table (e.g. `kind = "opencv"` and its `uri`).
    Toml(String),
}

/// Builds and starts a `lanewatch-agent` against a control plane.
pub struct AgentBuilder {
    agent_id: String,
    site_id: String,
    control_url: String,
    lanes: u32,
    flow: u32,
    camera: CameraSource,
    ca_path: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    extra_toml: String,
    control_plane_toml: String,
    buffer_toml: String,
    camera_toml: String,
    simulator_toml: String,
    local_ui_toml: String,
    args: Vec<std::ffi::OsString>,
    wrapper: Vec<std::ffi::OsString>,
}

impl AgentBuilder {
    pub fn new(cp: &ControlPlane, site: &str) -> Self {
        Self {
            agent_id: format!("agent-{site}"),
            site_id: site.to_owned(),
            control_url: cp.grpc_url(),
            lanes: 2,
            flow: 2000,
            camera: CameraSource::Simulator,
            ca_path: None,
            client_cert: None,
            extra_toml: String::new(),
            control_plane_toml: String::new(),
            buffer_toml: String::new(),
            camera_toml: String::new(),
            simulator_toml: String::new(),
            local_ui_toml: "listen = \"127.0.0.1:0\"\n".to_owned(),
            args: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// Connect to this URL instead of the control plane's (e.g. a [`proxy::Proxy`] in between).
    pub fn control_url(mut self, url: &str) -> Self {
        self.control_url = url.to_owned();
        self
    }

    pub fn camera(mut self, camera: CameraSource) -> Self {
        self.camera = camera;
        self
    }

    /// Trust this CA certificate (PEM) for the control plane's TLS.
    pub fn ca_path(mut self, path: &Path) -> Self {
        self.ca_path = Some(path.to_owned());
        self
    }

    /// Show this client certificate and key (PEM files) to the control plane (mutual TLS).
    pub fn client_cert(mut self, cert: &Path, key: &Path) -> Self {
        self.client_cert = Some((cert.to_owned(), key.to_owned()));
        self
    }

    /// The agent id (default `agent-<site>`).
    pub fn agent_id(mut self, id: &str) -> Self {
        self.agent_id = id.to_owned();
        self
    }

    pub fn flow(mut self, veh_h_per_lane: u32) -> Self {
        self.flow = veh_h_per_lane;
        self
    }

    /// An extra command-line argument for `lanewatch-agent` (e.g. `--detections-out`).
    pub fn arg(mut self, arg: impl Into<std::ffi::OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Extra lines for the `[control_plane]` table (e.g. `max_upload_bytes_per_sec = 1000`).
    pub fn control_plane_toml(mut self, toml: &str) -> Self {
        self.control_plane_toml.push_str(toml);
        self.control_plane_toml.push('\n');
        self
    }

    /// Extra lines for the `[buffer]` table (e.g. `max_bytes = 1048576`).
    pub fn buffer_toml(mut self, toml: &str) -> Self {
        self.buffer_toml.push_str(toml);
        self.buffer_toml.push('\n');
        self
    }

    /// Extra lines for the `[[cameras]]` table (e.g. `stall_after_ms = 500`).
    pub fn camera_toml(mut self, toml: &str) -> Self {
        self.camera_toml.push_str(toml);
        self.camera_toml.push('\n');
        self
    }

    /// Extra lines for the `[simulator]` table (e.g. `face_photos_path = ".."`).
    pub fn simulator_toml(mut self, toml: &str) -> Self {
        self.simulator_toml.push_str(toml);
        self.simulator_toml.push('\n');
        self
    }

    /// Runs the agent through this command prefix, e.g. `nsenter --net=/proc/PID/ns/net`.
    pub fn wrapper<I: Into<std::ffi::OsString>>(mut self, prefix: impl IntoIterator<Item = I>) -> Self {
        self.wrapper = prefix.into_iter().map(Into::into).collect();
        self
    }

    /// Extra TOML appended at the end of the file, i.e. into the `[cameras.source]` table
    /// unless it opens tables of its own.
    /// Lines of the `[local_ui]` table (default: a free loopback port).
    pub fn local_ui_toml(mut self, toml: &str) -> Self {
        self.local_ui_toml = toml.to_owned();
        self
    }

    pub fn extra_toml(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self
    }

    /// The config file text this builder produces (also used by config tests).
    pub fn config_toml(&self, data_dir: &Path) -> String {
        let source = match &self.camera {
            CameraSource::Simulator => "kind = \"simulator\"\n".to_owned(),
            CameraSource::Replay(path) => format!("kind = \"file_replay\"\npath = {path:?}\n"),
            CameraSource::Toml(lines) => format!("{lines}\n"),
        };
        let lanes: Vec<String> = (0..self.lanes).map(|l| l.to_string()).collect();
        let mut ca = self.ca_path.as_ref().map(|p| format!("ca_path = {p:?}\n")).unwrap_or_default();
        if let Some((cert, key)) = &self.client_cert {
            ca.push_str(&format!("client_cert_path = {cert:?}\nclient_key_path = {key:?}\n"));
        }
        format!(
            "version = 1\nagent_id = {:?}\nsite_id = {:?}\nshutdown_grace_secs = 5\n\n\
             [control_plane]\nurl = {:?}\nheartbeat_interval_ms = 500\nreconnect_min_ms = 100\n\
             reconnect_max_ms = 1000\n{}{ca}\n[buffer]\npath = {:?}\n{}\n[site]\nlanes = {}\n\n\
             [local_ui]\n{}\n[simulator]\nseed = 7\nflow_veh_h_per_lane = {}\n{}\n\
             [[cameras]]\nid = \"front\"\nlanes = [{}]\ntrigger_delay_ms = 100\nfps = 10\n{}\n\
             [cameras.source]\n{source}\n{}",
            self.agent_id,
            self.site_id,
            self.control_url,
            self.control_plane_toml,
            data_dir.join("buffer"),
            self.buffer_toml,
            self.lanes,
            self.local_ui_toml,
            self.flow,
            self.simulator_toml,
            lanes.join(", "),
            self.camera_toml,
            self.extra_toml,
        )
    }

    pub fn start(self) -> Result<Agent> {
        let dir = tempfile::Builder::new().prefix("lanewatch-agent-").tempdir()?;
        Agent::start_in(self, dir)
    }
}

/// A running agent.
pub struct Agent {
    pub id: String,
    /// The local UI's base URL (`http://127.0.0.1:<port>/`), from the ready file.
    pub ui_url: Option<String>,
    pub proc: Proc,
    pub dir: TempDir,
    pub config_path: PathBuf,
    args: Vec<std::ffi::OsString>,
    wrapper: Vec<std::ffi::OsString>,
}

impl Agent {
    fn start_in(builder: AgentBuilder, dir: TempDir) -> Result<Self> {
        let config_path = dir.path().join("agent.toml");
        std::fs::write(&config_path, builder.config_toml(dir.path()))?;
        let proc = Self::spawn(&builder.agent_id, &config_path, dir.path(), &builder.args, &builder.wrapper)?;
        let mut agent = Agent {
            id: builder.agent_id,
            ui_url: None,
            proc,
            dir,
            config_path,
            args: builder.args,
            wrapper: builder.wrapper,
        };
        let ready = wait_ready_file(&agent.dir.path().join("ready.json"), &mut agent.proc)?;
        agent.ui_url = ready["ui_url"].as_str().map(str::to_owned);
        Ok(agent)
    }

    fn spawn(
        id: &str,
        config: &Path,
        dir: &Path,
        args: &[std::ffi::OsString],
        wrapper: &[std::ffi::OsString],
    ) -> Result<Proc> {
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = match wrapper.split_first() {
            Some((program, prefix)) => {
                let mut cmd = Command::new(program);
                cmd.args(prefix).arg(bin("lanewatch-agent"));
                cmd
            }
            None => Command::new(bin("lanewatch-agent")),
        };
        Proc::spawn(
            id,
            cmd.arg("--config")
                .arg(config)
                .arg("--ready-file")
                .arg(&ready)
                .args(args)
                .env("RUST_LOG", "info"),
            dir,
        )
    }

    /// Starts the agent again on the same config and buffer (after a stop or a kill).
    pub fn restart(&mut self) -> Result<()> {
        self.proc = Self::spawn(&self.id, &self.config_path, self.dir.path(), &self.args, &self.wrapper)?;
        let ready = wait_ready_file(&self.dir.path().join("ready.json"), &mut self.proc)?;
        self.ui_url = ready["ui_url"].as_str().map(str::to_owned);
        Ok(())
    }
}

//! The binaries the CLI drives: found next to itself, started in their own process group with
//! their output in a log file, waited for through their ready files, and stopped with SIGTERM
//! and a grace period.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long children get to drain after SIGTERM before they are killed.
pub const DRAIN: Duration = Duration::from_secs(20);

/// A child process in its own process group (so that Ctrl-C reaches only the demo, which then
/// stops the fleet in order: agents first, so they can flush, then the control plane).
pub struct Managed {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Managed {
    pub fn spawn(name: &str, cmd: &mut Command, logs: &Path) -> Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name: name.to_owned(), child, log })
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then wait up to `grace`, then SIGKILL. Returns whether it exited cleanly.
    pub async fn stop(&mut self, grace: Duration) -> bool {
        if let Some(status) = self.exited() {
            return status.success();
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.exited() {
                if !status.success() {
                    eprintln!("{} exited with {status}; see {}", self.name, self.log.display());
                }
                return status.success();
            }
            if Instant::now() > deadline {
                eprintln!("{} did not drain within {grace:?}; killing it", self.name);
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the lanewatch binary")?;
    let path = exe.parent().context("binary directory")?.join(name);
    if !path.exists() {
        bail!(
            "{} not found next to lanewatch; build the workspace (`cargo build --workspace --bins`)",
            path.display()
        );
    }
    Ok(path)
}

/// Waits (bounded) for a ready file written atomically by a starting binary.
pub async fn ready_file(path: &Path, proc: &mut Managed) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text).context("parsing ready file");
        }
        if let Some(status) = proc.exited() {
            bail!("{} exited with {status} while starting; see {}", proc.name, proc.log.display());
        }
        if Instant::now() > deadline {
            bail!("{} not ready within 60s; see {}", proc.name, proc.log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

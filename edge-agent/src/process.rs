//! What the agent process reports about itself in introspection: CPU time, resident memory,
//! threads, open file descriptors and uptime (from `/proc/self`, through `procfs`), free and
//! total space on the buffer's filesystem (`statvfs`, through `rustix`), and the versions it
//! runs. Read at the moment of asking; nothing samples in the background, so an agent nobody
//! inspects pays nothing.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

/// The process as introspection shows it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ProcessReport {
    /// CPU time (user + system) since the process started.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub threads: u32,
    pub open_fds: u32,
    pub uptime_secs: f64,
    pub buffer_volume_free_bytes: u64,
    pub buffer_volume_total_bytes: u64,
    pub software_version: String,
    pub config_version: u64,
    /// The face model vision runs; empty without vision.
    pub model_version: String,
}

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Marks the process start (the agent's `main` calls it first); uptime counts from here.
pub fn mark_started() {
    STARTED.get_or_init(Instant::now);
}

/// The process's resident memory now; `None` where `/proc` cannot tell.
pub fn rss_bytes() -> Option<u64> {
    let stat = procfs::process::Process::myself().and_then(|me| me.stat()).ok()?;
    Some(stat.rss * procfs::page_size())
}

/// Reads the report now. A figure the host cannot give (no `/proc`, say) is 0 and logged once
/// at debug level: introspection must answer even then.
pub fn report(buffer_dir: &Path, config_version: u64, model_version: &str) -> ProcessReport {
    let mut report = ProcessReport {
        uptime_secs: STARTED.get_or_init(Instant::now).elapsed().as_secs_f64(),
        software_version: env!("CARGO_PKG_VERSION").to_owned(),
        config_version,
        model_version: model_version.to_owned(),
        ..Default::default()
    };
    match procfs::process::Process::myself().and_then(|me| Ok((me.stat()?, me.fd_count()?))) {
        Ok((stat, fds)) => {
            let ticks = procfs::ticks_per_second() as f64;
            report.cpu_seconds = (stat.utime + stat.stime) as f64 / ticks;
            report.rss_bytes = stat.rss * procfs::page_size();
            report.threads = u32::try_from(stat.num_threads).unwrap_or(0);
            report.open_fds = u32::try_from(fds).unwrap_or(u32::MAX);
        }
        Err(e) => tracing::debug!(error = %e, "cannot read /proc/self"),
    }
    match rustix::fs::statvfs(buffer_dir) {
        Ok(fs) => {
            report.buffer_volume_free_bytes = fs.f_bavail.saturating_mul(fs.f_frsize);
            report.buffer_volume_total_bytes = fs.f_blocks.saturating_mul(fs.f_frsize);
        }
        Err(e) => tracing::debug!(error = %e, path = %buffer_dir.display(), "cannot statvfs the buffer"),
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_reads_this_process() {
        mark_started();
        let dir = tempfile::tempdir().unwrap();
        let held: Vec<std::fs::File> =
            (0..5).map(|i| std::fs::File::create(dir.path().join(i.to_string())).unwrap()).collect();
        let before = report(dir.path(), 7, "centerface-int8");
        assert_eq!((before.config_version, before.model_version.as_str()), (7, "centerface-int8"));
        assert_eq!(before.software_version, env!("CARGO_PKG_VERSION"));
        assert!(before.rss_bytes > 1 << 20, "{before:?}");
        assert!(before.threads >= 1 && before.open_fds >= 5, "{before:?}");
        assert!(before.buffer_volume_total_bytes >= before.buffer_volume_free_bytes, "{before:?}");
        assert!(before.buffer_volume_free_bytes > 0, "{before:?}");
        // the descriptors counted are this process's: closing five shows up
        drop(held);
        let after = report(dir.path(), 7, "");
        assert!(after.open_fds + 5 <= before.open_fds, "{before:?} {after:?}");
        assert!(after.uptime_secs >= before.uptime_secs && after.cpu_seconds >= before.cpu_seconds);
    }
}

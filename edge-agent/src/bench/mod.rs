//! `lanewatch-agent bench buffer`: measures the capture buffer against raw sequential writes of
//! the same bytes to a plain file with `fdatasync` after each record (the call the buffer makes),
//! how fast a backlog drains against how fast it was ingested (`drain_vs_ingest`), and its
//! recovery after the writing process was killed. Raw and buffer runs alternate, three rounds,
//! and each figure is the median, so a disk's drift hits both alike. Numbers, not assertions: a
//! fast disk and a slow one give different figures, the ratios travel better.
//!
//! The other benches live beside it: [`sensing`] (`bench sensing`), [`vision`]
//! (`bench vision`) and [`introspection`] (`bench introspection`).

pub mod introspection;
pub mod sensing;
pub mod vision;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use rand::RngCore;
use serde::Serialize;
use uuid::Uuid;

use crate::buffer::{AppendOutcome, Buffer, BufferOptions, record_len};
use crate::domain::{Capture, ValueClass};

/// What to measure, and how much.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Image size of every capture (a 1080p JPEG is about 200 KB).
    pub image_bytes: usize,
    /// Captures per append measurement.
    pub append_captures: usize,
    /// Captures per transaction in the group-commit measurement.
    pub group: usize,
    /// Captures in the buffer whose recovery is timed.
    pub recovery_captures: usize,
    /// Image size of those captures.
    pub recovery_image_bytes: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            image_bytes: 200_000,
            append_captures: 200,
            group: 8,
            recovery_captures: 10_000,
            recovery_image_bytes: 200_000,
        }
    }
}

/// The figures, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub image_bytes: usize,
    pub record_bytes: u64,
    pub append_captures: usize,
    /// Segment size of the buffer (`BufferOptions::new(u64::MAX)`).
    pub segment_bytes: u64,
    /// Raw sequential writes of the same record bytes to a plain file, `fdatasync` after each.
    pub raw_fsync_per_s: f64,
    /// `Buffer::append`: one capture per write and `fdatasync` (the default options).
    pub append_per_s: f64,
    /// Buffer appends per second over raw `fdatasync`'d writes per second: 1.0 is as fast as raw.
    pub append_vs_raw_fsync: f64,
    /// Raw writes with one `fdatasync` per `group` records.
    pub raw_fsync_group_per_s: f64,
    /// `Buffer::append_batch` of `group` captures per write and `fdatasync` (group commit).
    pub append_group_per_s: f64,
    pub append_group_vs_raw_fsync_group: f64,
    pub group: usize,
    pub recovery_captures: usize,
    pub recovery_image_bytes: usize,
    /// Opening the buffer the killed writer left: reading every record header, cutting off a
    /// torn tail, starting a new segment.
    pub recovery_10k_s: f64,
    /// Captures found after recovery (should equal `recovery_captures`).
    pub recovered_captures: u64,
    /// Bytes of segment files the recovery opened.
    pub recovery_disk_bytes: u64,
    /// Time the killed writer needed to fill the buffer, with group commit.
    pub recovery_fill_s: f64,
    /// Ingest of the drain measurement's backlog (`append_batch` of `group`, classes mixed).
    pub ingest_per_s: f64,
    /// Draining that backlog as the uplink does after an outage: choose the next capture by
    /// value (`next_by_priority`), read it (checksum verified), delete it on its ack (a delete record
    /// each, synced with the next durable write, as `Buffer::delete` does).
    /// The network is not part of it: this is the buffer's share of the drain.
    pub drain_per_s: f64,
    /// Drain over ingest: above 1.0 the buffer empties a backlog faster than it filled.
    pub drain_vs_ingest: f64,
}

/// Runs every measurement in temporary directories. `exe` is this binary: the recovery
/// measurement runs it as a child writer and kills it with SIGKILL.
pub fn run(options: &BenchOptions, exe: &Path) -> anyhow::Result<BenchReport> {
    let dir = tempfile::tempdir().context("creating temporary directory")?;
    let pool = payloads(options.image_bytes, 16);
    let captures: Vec<Capture> =
        (0..options.append_captures).map(|i| capture(pool[i % pool.len()].clone())).collect();
    let record_bytes = record_len(&captures[0]);

    let (mut raw, mut raw_group, mut append, mut append_group) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        let path = |name: &str| dir.path().join(format!("{name}-{round}"));
        raw.push(raw_fsync(&path("raw"), &captures, 1)?);
        append.push(append_rate(&path("append"), &captures, 1)?);
        raw_group.push(raw_fsync(&path("raw-group"), &captures, options.group)?);
        append_group.push(append_rate(&path("append-group"), &captures, options.group)?);
    }
    let (raw, raw_group, append, append_group) =
        (median(raw), median(raw_group), median(append), median(append_group));

    let (ingest, drain) = drain_vs_ingest(&dir.path().join("drain"), &captures, options.group)?;
    let (recovery_s, recovered, disk_bytes, fill) = recovery(dir.path(), exe, options)?;

    Ok(BenchReport {
        image_bytes: options.image_bytes,
        record_bytes,
        append_captures: options.append_captures,
        segment_bytes: BufferOptions::new(u64::MAX).segment_bytes,
        raw_fsync_per_s: raw,
        append_per_s: append,
        append_vs_raw_fsync: append / raw,
        raw_fsync_group_per_s: raw_group,
        append_group_per_s: append_group,
        append_group_vs_raw_fsync_group: append_group / raw_group,
        group: options.group,
        recovery_captures: options.recovery_captures,
        recovery_image_bytes: options.recovery_image_bytes,
        recovery_10k_s: recovery_s.as_secs_f64(),
        recovered_captures: recovered,
        recovery_disk_bytes: disk_bytes,
        recovery_fill_s: fill.as_secs_f64(),
        ingest_per_s: ingest,
        drain_per_s: drain,
        drain_vs_ingest: drain / ingest,
    })
}

impl BenchReport {
    /// The human table.
    pub fn table(&self) -> String {
        let mb = |per_s: f64| per_s * self.record_bytes as f64 / 1e6;
        let mut out = format!(
            "capture buffer benchmark: records of {} bytes ({} byte images), {} captures per run\n\n",
            self.record_bytes, self.image_bytes, self.append_captures
        );
        out += &format!("{:<44} {:>12} {:>10} {:>10}\n", "measurement", "captures/s", "MB/s", "vs raw");
        let mut row = |name: &str, per_s: f64, ratio: Option<f64>| {
            let ratio = ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
            out += &format!("{name:<44} {per_s:>12.1} {:>10.1} {ratio:>10}\n", mb(per_s));
        };
        row("raw write + fdatasync, each record", self.raw_fsync_per_s, None);
        row("buffer append", self.append_per_s, Some(self.append_vs_raw_fsync));
        row(&format!("raw write, fdatasync every {}", self.group), self.raw_fsync_group_per_s, None);
        row(
            &format!("buffer append_batch of {} (group commit)", self.group),
            self.append_group_per_s,
            Some(self.append_group_vs_raw_fsync_group),
        );
        out += &format!(
            "\nbacklog drain after an outage (by value, delete on ack), same run:\n  ingest {:.1} captures/s, drain {:.1} captures/s, drain_vs_ingest {:.2}\n",
            self.ingest_per_s, self.drain_per_s, self.drain_vs_ingest
        );
        out += &format!(
            "\nrecovery after SIGKILL of the writer, {} captures of {} byte images (filled in {:.1} s):\n",
            self.recovery_captures, self.recovery_image_bytes, self.recovery_fill_s
        );
        out += &format!(
            "  {:.3} s, {} captures recovered from {:.1} GB of segments\n",
            self.recovery_10k_s,
            self.recovered_captures,
            self.recovery_disk_bytes as f64 / 1e9
        );
        out
    }
}

fn payloads(bytes: usize, count: usize) -> Vec<Bytes> {
    let mut rng = rand::rng();
    (0..count)
        .map(|_| {
            let mut v = vec![0u8; bytes];
            rng.fill_bytes(&mut v);
            Bytes::from(v)
        })
        .collect()
}

fn capture(image: Bytes) -> Capture {
    Capture::synthetic("bench", 0, "front", image)
}

/// Rounds of the alternating raw/buffer append measurements.
const ROUNDS: usize = 3;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn per_s(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Sequential writes of each capture's record size to a plain file, `fdatasync` every `group`
/// (the same call the buffer makes; the file grows as the buffer's segments do).
fn raw_fsync(path: &Path, captures: &[Capture], group: usize) -> anyhow::Result<f64> {
    let records: Vec<Vec<u8>> = captures
        .iter()
        .map(|c| {
            let mut r = vec![0u8; record_len(c) as usize - c.image.len()];
            r.extend_from_slice(&c.image);
            r
        })
        .collect();
    let mut file = std::fs::File::create(path)?;
    file.sync_all()?;
    let start = Instant::now();
    for chunk in records.chunks(group.max(1)) {
        for record in chunk {
            file.write_all(record)?;
        }
        file.sync_data()?;
    }
    Ok(per_s(records.len(), start.elapsed()))
}

/// Fills a buffer with `captures` (value classes mixed) by group commit, then drains it the
/// way the uplink does; returns (ingest, drain) in captures per second.
fn drain_vs_ingest(path: &Path, captures: &[Capture], group: usize) -> anyhow::Result<(f64, f64)> {
    let buffer = Buffer::open(path, BufferOptions::new(u64::MAX))?;
    let mixed: Vec<Capture> = captures
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut c = c.clone();
            c.meta.capture_id = Uuid::now_v7();
            c.meta.value_class = ValueClass::ALL[i % ValueClass::ALL.len()];
            c
        })
        .collect();
    let start = Instant::now();
    for chunk in mixed.chunks(group.max(1)) {
        buffer.append_batch(chunk)?;
    }
    let ingest = per_s(mixed.len(), start.elapsed());
    let start = Instant::now();
    let mut drained = 0;
    let none = std::collections::HashSet::new();
    while let Some((_, capture)) = buffer.next_by_priority(&none)? {
        anyhow::ensure!(buffer.delete(capture.meta.capture_id)?, "drained capture was not buffered");
        drained += 1;
    }
    anyhow::ensure!(drained == mixed.len(), "drained {drained} of {} captures", mixed.len());
    Ok((ingest, per_s(drained, start.elapsed())))
}

fn append_rate(path: &Path, captures: &[Capture], group: usize) -> anyhow::Result<f64> {
    let buffer = Buffer::open(path, BufferOptions::new(u64::MAX))?;
    let start = Instant::now();
    for chunk in captures.chunks(group.max(1)) {
        let outcomes = buffer.append_batch(chunk)?;
        anyhow::ensure!(
            outcomes.iter().all(|o| matches!(o, AppendOutcome::Stored { .. })),
            "bench capture rejected"
        );
    }
    Ok(per_s(captures.len(), start.elapsed()))
}

/// Fills a buffer in a child process, kills it with SIGKILL once it reported the last commit,
/// and times opening what it left. Returns (open time, captures found, bytes on disk, fill time).
fn recovery(
    dir: &Path,
    exe: &Path,
    options: &BenchOptions,
) -> anyhow::Result<(Duration, u64, u64, Duration)> {
    let path = dir.join("recovery");
    let start = Instant::now();
    let mut child = Command::new(exe)
        .args(["bench", "buffer-crash-writer", "--path"])
        .arg(&path)
        .args(["--count", &options.recovery_captures.to_string()])
        .args(["--image-bytes", &options.recovery_image_bytes.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting the writer {}", exe.display()))?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("writer stdout")?).read_line(&mut line)?;
    let fill = start.elapsed();
    // SIGKILL on Unix: no destructor runs, nothing is closed
    child.kill().context("killing the writer")?;
    child.wait()?;
    anyhow::ensure!(line.trim() == "ready", "writer failed before it was ready: {line:?}");
    let mut disk_bytes = 0;
    for entry in std::fs::read_dir(&path)? {
        disk_bytes += entry?.metadata()?.len();
    }
    let start = Instant::now();
    let buffer = Buffer::open(&path, BufferOptions::new(u64::MAX))?;
    let elapsed = start.elapsed();
    let recovered = buffer.stats().captures;
    drop(buffer);
    std::fs::remove_dir_all(&path)?;
    Ok((elapsed, recovered, disk_bytes, fill))
}

/// The child of the recovery measurement: appends `count` captures in groups of 64, prints
/// "ready" and waits to be killed.
pub fn crash_writer(path: &Path, count: usize, image_bytes: usize) -> anyhow::Result<()> {
    let buffer = Buffer::open(path, BufferOptions::new(u64::MAX))?;
    let pool = payloads(image_bytes, 16);
    let mut written = 0;
    while written < count {
        let n = (count - written).min(64);
        let batch: Vec<Capture> = (0..n).map(|i| capture(pool[(written + i) % pool.len()].clone())).collect();
        buffer.append_batch(&batch)?;
        written += n;
    }
    println!("ready");
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

//! Recordings of a scanner's raw byte stream (`lanewatch-agent record`) and their replay as a
//! [`ScanSource`] through the same deframe/parse path as a live scanner.
//!
//! # File format (version 1, little-endian)
//!
//! ```text
//! header  (12 bytes): magic "LWSICKRC" | version u16 = 1 | framing u8 (1 = CoLa-A, 2 = CoLa-B) | flags u8 = 0
//! record  (16 + n):   received_at u64 (µs since the Unix epoch) | n u32 | crc32 u32 (of the bytes) | bytes
//! ```
//!
//! A record holds the bytes of one socket read exactly as they arrived, so a replay sees the
//! same splits, garbage and telegrams as the live driver did.
//!
//! # Invariants
//!
//! * Reading checks everything: magic, version, framing, flags, `0 < n <= MAX_RECORD_BYTES`,
//!   the CRC-32 of every record, timestamps that never go backwards, and that the file does not
//!   end inside a header or record. Every failure is a [`RecordingError`] naming the byte offset
//!   of the header or record at fault; nothing panics on any file.
//! * A replay at speed `s > 0` delivers each record `Δt / s` after the first (Δt from the
//!   recorded timestamps); at speed 0 as fast as the pipeline takes scans. Scan times follow the
//!   recorded timeline, starting at the moment the replay starts, whatever the speed.
//! * Scans are never dropped by the replay: it waits for the sense stage, so two replays of one
//!   file feed the detector identical scan sequences.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::driver::{AbortOnDrop, DriverStatus, LinkState, TelegramDecoder};
use super::sick::{Framing, Request};
use crate::domain::{Scan, ScanGeometry};
use crate::sources::ScanSource;

pub const MAGIC: [u8; 8] = *b"LWSICKRC";
pub const FORMAT_VERSION: u16 = 1;
pub const HEADER_BYTES: usize = 12;
pub const RECORD_HEADER_BYTES: usize = 16;
/// Largest record accepted (one socket read is far smaller).
pub const MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;

/// Why a recording cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot read recording: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a lanewatch scan recording (bad magic at offset 0)")]
    BadMagic,
    #[error("unsupported recording version {version} at offset 8, expected {FORMAT_VERSION}")]
    UnsupportedVersion { version: u16 },
    #[error("unknown framing {value} at offset 10")]
    BadFraming { value: u8 },
    #[error("unknown flags {value:#04x} at offset 11")]
    BadFlags { value: u8 },
    #[error("recording truncated at offset {offset}: {what} needs {needed} bytes, {available} present")]
    Truncated { offset: u64, what: &'static str, needed: usize, available: usize },
    #[error("record at offset {offset}: length {len} outside 1..={MAX_RECORD_BYTES}")]
    BadLength { offset: u64, len: u32 },
    #[error(
        "record at offset {offset}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    BadChecksum { offset: u64, stored: u32, computed: u32 },
    #[error("record at offset {offset}: timestamp {received_at_us} µs is before the previous record's")]
    TimeGoesBackwards { offset: u64, received_at_us: u64 },
}

/// One recorded socket read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// Receive time, µs since the Unix epoch.
    pub received_at_us: u64,
    pub bytes: Vec<u8>,
}

fn framing_code(framing: Framing) -> u8 {
    match framing {
        Framing::ColaA => 1,
        Framing::ColaB => 2,
    }
}

/// The file header for `framing`.
pub fn encode_header(framing: Framing) -> [u8; HEADER_BYTES] {
    let mut out = [0u8; HEADER_BYTES];
    out[..8].copy_from_slice(&MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[10] = framing_code(framing);
    out
}

/// One record: timestamp, length, CRC-32, bytes.
pub fn encode_record(received_at_us: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + bytes.len());
    out.extend_from_slice(&received_at_us.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

/// Reads as much of `buf` as the reader has; returns how much was filled.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// A reader of a recording file.
pub type FileReader = RecordingReader<std::io::BufReader<std::fs::File>>;

/// A checked, streaming reader of a recording.
pub struct RecordingReader<R> {
    r: R,
    offset: u64,
    framing: Framing,
    last_us: u64,
}

impl FileReader {
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        Self::new(std::io::BufReader::new(std::fs::File::open(path)?))
    }
}

impl<R: Read> RecordingReader<R> {
    /// Reads and checks the header.
    pub fn new(mut r: R) -> Result<Self, RecordingError> {
        let mut header = [0u8; HEADER_BYTES];
        let got = fill(&mut r, &mut header)?;
        if got >= MAGIC.len() && header[..8] != MAGIC {
            return Err(RecordingError::BadMagic);
        }
        if got < HEADER_BYTES {
            return Err(RecordingError::Truncated {
                offset: 0,
                what: "file header",
                needed: HEADER_BYTES,
                available: got,
            });
        }
        let version = u16::from_le_bytes([header[8], header[9]]);
        if version != FORMAT_VERSION {
            return Err(RecordingError::UnsupportedVersion { version });
        }
        let framing = match header[10] {
            1 => Framing::ColaA,
            2 => Framing::ColaB,
            value => return Err(RecordingError::BadFraming { value }),
        };
        if header[11] != 0 {
            return Err(RecordingError::BadFlags { value: header[11] });
        }
        Ok(Self { r, offset: HEADER_BYTES as u64, framing, last_us: 0 })
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The next record, `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record>, RecordingError> {
        let offset = self.offset;
        let mut head = [0u8; RECORD_HEADER_BYTES];
        let got = fill(&mut self.r, &mut head)?;
        if got == 0 {
            return Ok(None);
        }
        if got < RECORD_HEADER_BYTES {
            return Err(RecordingError::Truncated {
                offset,
                what: "record header",
                needed: RECORD_HEADER_BYTES,
                available: got,
            });
        }
        // the slices have exactly the lengths of the arrays
        let received_at_us = u64::from_le_bytes(head[0..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
        let stored = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default());
        if len == 0 || len > MAX_RECORD_BYTES {
            return Err(RecordingError::BadLength { offset, len });
        }
        let mut bytes = vec![0u8; len as usize];
        let got = fill(&mut self.r, &mut bytes)?;
        if got < bytes.len() {
            return Err(RecordingError::Truncated {
                offset,
                what: "record",
                needed: RECORD_HEADER_BYTES + bytes.len(),
                available: RECORD_HEADER_BYTES + got,
            });
        }
        let computed = crc32fast::hash(&bytes);
        if computed != stored {
            return Err(RecordingError::BadChecksum { offset, stored, computed });
        }
        if received_at_us < self.last_us {
            return Err(RecordingError::TimeGoesBackwards { offset, received_at_us });
        }
        self.last_us = received_at_us;
        self.offset += (RECORD_HEADER_BYTES + bytes.len()) as u64;
        Ok(Some(Record { offset, received_at_us, bytes }))
    }
}

/// Checks the header of the recording at `path` (config validation).
pub fn read_header_of(path: &Path) -> anyhow::Result<Framing> {
    let reader = RecordingReader::open(path).with_context(|| format!("recording {}", path.display()))?;
    Ok(reader.framing())
}

/// What a full check of a recording found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    pub framing: Framing,
    pub records: u64,
    pub bytes: u64,
    pub duration_us: u64,
}

/// Reads the whole recording at `path`, checking every record.
pub fn verify(path: &Path) -> anyhow::Result<RecordingSummary> {
    let context = || format!("recording {}", path.display());
    let mut reader = RecordingReader::open(path).with_context(context)?;
    let (mut records, mut bytes, mut first, mut last) = (0u64, 0u64, None, 0u64);
    while let Some(record) = reader.next_record().with_context(context)? {
        records += 1;
        bytes += record.bytes.len() as u64;
        first.get_or_insert(record.received_at_us);
        last = record.received_at_us;
    }
    let duration_us = first.map_or(0, |f| last - f);
    Ok(RecordingSummary { framing: reader.framing(), records, bytes, duration_us })
}

/// `lanewatch-agent record`: subscribes to the scanner at `address` and writes every socket read
/// to `out` until `duration` passed, `stop` resolved or the scanner closed the connection.
pub async fn record(
    address: &str,
    framing: Framing,
    out: &Path,
    duration: Option<Duration>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<RecordingSummary> {
    let mut stream =
        tokio::time::timeout(super::driver::CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
            .await
            .with_context(|| format!("connecting to scanner {address} timed out"))?
            .with_context(|| format!("connecting to scanner {address}"))?;
    let file = tokio::fs::File::create(out).await.with_context(|| format!("creating {}", out.display()))?;
    let mut file = tokio::io::BufWriter::new(file);
    file.write_all(&encode_header(framing)).await?;
    stream.write_all(&Request::SubscribeScans { enabled: true }.encode(framing)).await?;
    tracing::info!(address, framing = %framing, out = %out.display(), "recording");

    let deadline = duration.map(|d| Instant::now() + d);
    let until_deadline = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline, stop);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut records, mut bytes, mut first, mut last) = (0u64, 0u64, None, 0u64);
    loop {
        let n = tokio::select! {
            () = &mut until_deadline => break,
            () = &mut stop => break,
            read = stream.read(&mut buf) => read.context("reading from scanner")?,
        };
        if n == 0 {
            tracing::warn!(address, "scanner closed the connection, recording ends");
            break;
        }
        let now_us = u64::try_from(Utc::now().timestamp_micros()).unwrap_or(0).max(last);
        file.write_all(&encode_record(now_us, &buf[..n])).await?;
        records += 1;
        bytes += n as u64;
        first.get_or_insert(now_us);
        last = now_us;
    }
    file.flush().await?;
    file.into_inner().sync_all().await?;
    let _ = stream.write_all(&Request::SubscribeScans { enabled: false }.encode(framing)).await;
    let duration_us = first.map_or(0, |f| last - f);
    Ok(RecordingSummary { framing, records, bytes, duration_us })
}

/// Replays a recording as a [`ScanSource`]; after the last record it waits forever (state
/// `finished`), so a lab agent keeps serving what it detected.
pub struct ReplayScanSource {
    path: PathBuf,
    speed: f64,
    geometry: ScanGeometry,
    mounting_angle_deg: f64,
    status: DriverStatus,
    framing: Framing,
    scans: Option<mpsc::Receiver<anyhow::Result<Scan>>>,
    /// Set once the replay failed: every later call fails the same way.
    failed: Option<String>,
    task: Option<AbortOnDrop>,
}

impl ReplayScanSource {
    /// Checks the whole recording first, so a damaged file fails before the agent runs.
    pub fn open(
        path: &Path,
        speed: f64,
        geometry: ScanGeometry,
        mounting_angle_deg: f64,
        degraded_after: Duration,
    ) -> anyhow::Result<Self> {
        let summary = verify(path)?;
        tracing::info!(
            path = %path.display(),
            records = summary.records,
            bytes = summary.bytes,
            duration_s = summary.duration_us as f64 / 1e6,
            speed,
            "replaying scan recording"
        );
        let status = DriverStatus::new("replay", path.display().to_string(), summary.framing, degraded_after);
        Ok(Self {
            path: path.to_owned(),
            speed,
            geometry,
            mounting_angle_deg,
            status,
            framing: summary.framing,
            scans: None,
            failed: None,
            task: None,
        })
    }

    pub fn status(&self) -> DriverStatus {
        self.status.clone()
    }

    fn start(&mut self) {
        let (scan_tx, scan_rx) = mpsc::channel(64);
        let decoder =
            TelegramDecoder::new(self.framing, self.geometry, self.mounting_angle_deg, self.status.clone());
        let replay =
            tokio::spawn(replay(self.path.clone(), self.speed, decoder, self.status.clone(), scan_tx));
        self.task = Some(AbortOnDrop(replay.abort_handle()));
        self.scans = Some(scan_rx);
    }
}

/// Records read per blocking file access.
const READ_BATCH: usize = 64;

/// Reads up to [`READ_BATCH`] records on the blocking pool; an error ends the batch. The
/// blocking task is short so that it never holds up timers (paused-clock tests included).
async fn read_batch(
    path: PathBuf,
    reader: Option<FileReader>,
) -> (Option<FileReader>, Vec<Result<Record, RecordingError>>) {
    let read = tokio::task::spawn_blocking(move || {
        let mut reader = match reader {
            Some(reader) => reader,
            None => match RecordingReader::open(&path) {
                Ok(reader) => reader,
                Err(err) => return (None, vec![Err(err)]),
            },
        };
        let mut batch = Vec::new();
        while batch.len() < READ_BATCH {
            match reader.next_record() {
                Ok(Some(record)) => batch.push(Ok(record)),
                Ok(None) => break,
                Err(err) => {
                    batch.push(Err(err));
                    break;
                }
            }
        }
        (Some(reader), batch)
    })
    .await;
    match read {
        Ok(result) => result,
        Err(err) => (None, vec![Err(RecordingError::Io(std::io::Error::other(err)))]),
    }
}

async fn replay(
    path: PathBuf,
    speed: f64,
    mut decoder: TelegramDecoder,
    status: DriverStatus,
    scans: mpsc::Sender<anyhow::Result<Scan>>,
) {
    status.update_state(LinkState::Connected);
    let started = Instant::now();
    let started_utc = Utc::now();
    let mut first_us = None;
    let mut out = Vec::new();
    let mut reader = None;
    loop {
        let (next_reader, batch) = read_batch(path.clone(), reader).await;
        reader = next_reader;
        if batch.is_empty() {
            break;
        }
        for record in batch {
            let record = match record {
                Ok(record) => record,
                Err(err) => {
                    let err = anyhow::Error::new(err).context(format!("recording {}", path.display()));
                    let _ = scans.send(Err(err)).await;
                    return;
                }
            };
            let since_first_us = record.received_at_us - *first_us.get_or_insert(record.received_at_us);
            let since_first = Duration::from_micros(since_first_us);
            if speed > 0.0 {
                tokio::time::sleep_until(started + since_first.div_f64(speed)).await;
            }
            let received_at: DateTime<Utc> =
                started_utc + chrono::Duration::microseconds(since_first_us as i64);
            decoder.push(&record.bytes, received_at, &mut out);
            for scan in out.drain(..) {
                if scans.send(Ok(scan)).await.is_err() {
                    return;
                }
            }
        }
    }
    status.update_state(LinkState::Finished);
    let counters = status.counters();
    tracing::info!(
        path = %path.display(),
        scans = counters.telegrams_ok,
        malformed = counters.telegrams_malformed,
        "replay finished"
    );
}

impl ScanSource for ReplayScanSource {
    fn geometry(&self) -> ScanGeometry {
        self.geometry
    }

    fn next_scan(&mut self) -> BoxFuture<'_, anyhow::Result<Scan>> {
        Box::pin(async move {
            if let Some(failed) = &self.failed {
                anyhow::bail!("{failed}");
            }
            if self.scans.is_none() {
                self.start();
            }
            let scans = self.scans.as_mut().context("scan queue")?;
            match scans.recv().await {
                Some(Ok(scan)) => Ok(scan),
                Some(Err(err)) => {
                    self.failed = Some(format!("{err:#}"));
                    Err(err)
                }
                // the recording is over: nothing more will come
                None => std::future::pending().await,
            }
        })
    }

    fn state(&self) -> Option<crate::state::LidarState> {
        Some(self.status.lidar_state())
    }
}

#[cfg(test)]
mod tests;

//! The SICK LMS1xx/LMS5xx scan source: TCP connection, `sEN LMDscandata 1`, deframing and
//! parsing, conversion of `LMDscandata` to the domain [`Scan`], reconnects and health counters.
//!
//! The byte path is shared with replay ([`TelegramDecoder`]): whatever arrives, live or from a
//! recording, goes through the same deframer, parser, counter checks and conversion.
//!
//! # Invariants
//!
//! * Nothing the scanner sends fails the agent: malformed, truncated, bad-checksum and
//!   out-of-order telegrams are counted and logged (rate-limited), then skipped.
//! * Connection errors never end the source: it reconnects with exponential backoff and
//!   jitter, forever; after `degraded_after` without a scan the snapshot says `degraded`.
//! * A scan counter that repeats or goes backwards drops that telegram (`out_of_order`); a
//!   gap counts the scans in between as `scans_missed`. After a reconnect the counter and the
//!   device clock are learnt afresh (the device may have restarted).
//! * Scan times come from the device clock (`time since start-up`), anchored to the receive
//!   time of the first telegram and re-anchored when they drift more than [`MAX_CLOCK_DRIFT`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::sick::{self, DeframeError, Deframer, Framing, Request, Telegram};
use crate::domain::{Scan, ScanGeometry};
use crate::sources::ScanSource;
use crate::state::LidarState;

/// A connection that delivers no byte for this long is dropped and re-established.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Device-clock scan times further than this from the receive time are re-anchored.
pub const MAX_CLOCK_DRIFT: Duration = Duration::from_secs(1);
/// At most one warning of each kind per this interval; the rest are counted as suppressed.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// Consecutive out-of-order scans after which the driver accepts the new counter.
const OUT_OF_ORDER_RESYNC: u32 = 10;
/// Scans buffered between the connection task and the sense stage.
const SCAN_QUEUE: usize = 64;

/// How to reach and read one scanner.
#[derive(Debug, Clone)]
pub struct SickSettings {
    /// `host:port`.
    pub address: String,
    pub framing: Framing,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub degraded_after: Duration,
    pub mounting_angle_deg: f64,
}

/// Why an `LMDscandata` telegram could not become a domain scan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error("lmdscandata has no 16-bit DIST1 channel")]
    NoDistanceChannel,
    #[error("channel DIST1 has angular step {step_deg} degrees")]
    BadAngularStep { step_deg: f64 },
}

/// Converts one telegram to the domain scan of `geometry`, resampling by angle.
///
/// The scanner's 90° beam points straight down when `mounting_angle_deg` is 0 and device angles
/// grow towards the left road edge, so the domain beam at `θ` from the vertical is the device
/// angle `90° + mounting_angle_deg + θ`. Beams on the telegram's grid take the DIST1 value
/// as is (`(value × scale + offset) / 1000` m); others interpolate linearly between the two
/// neighbours. A raw 0 (no echo) and beams outside the telegram's sector are `NaN`.
pub fn to_domain_scan(
    scan: &sick::Scan,
    geometry: &ScanGeometry,
    mounting_angle_deg: f64,
    t: DateTime<Utc>,
) -> Result<Scan, ConvertError> {
    let dist = scan.channel("DIST1").ok_or(ConvertError::NoDistanceChannel)?;
    // NaN and non-positive steps alike
    if dist.angular_step_deg.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(ConvertError::BadAngularStep { step_deg: dist.angular_step_deg });
    }
    let (scale, offset) = (f64::from(dist.scale), f64::from(dist.offset));
    let metres = |i: usize| -> Option<f64> {
        let raw = *dist.values.get(i)?;
        (raw != 0).then(|| (f64::from(raw) * scale + offset) / 1000.0)
    };
    let n = dist.values.len();
    let ranges_m = (0..geometry.beams())
        .map(|i| {
            let device_deg = 90.0 + mounting_angle_deg + geometry.beam_angle(i).to_degrees();
            let j = (device_deg - dist.start_angle_deg) / dist.angular_step_deg;
            let nearest = j.round();
            let value = if (j - nearest).abs() < 1e-6 {
                (nearest >= 0.0 && nearest < n as f64).then(|| metres(nearest as usize)).flatten()
            } else if j < 0.0 || j > (n.saturating_sub(1)) as f64 {
                None
            } else {
                let lo = j.floor() as usize;
                let frac = j - j.floor();
                match (metres(lo), metres(lo + 1)) {
                    (Some(a), Some(b)) => Some(a + (b - a) * frac),
                    (a, b) => {
                        if frac < 0.5 {
                            a
                        } else {
                            b
                        }
                    }
                }
            };
            value.map_or(f32::NAN, |m| m as f32)
        })
        .collect();
    Ok(Scan { t, ranges_m })
}

pub use crate::state::{DriverCounters, LinkState};

#[derive(Debug)]
struct StatusInner {
    counters: DriverCounters,
    state: LinkState,
    /// Last scan passed on, or when the source started.
    last_progress: Instant,
    last_error: Option<String>,
}

/// Shared, cheaply cloned health of one scan source.
#[derive(Debug, Clone)]
pub struct DriverStatus {
    inner: Arc<Mutex<StatusInner>>,
    source: &'static str,
    origin: String,
    framing: Framing,
    degraded_after: Duration,
}

impl DriverStatus {
    pub fn new(source: &'static str, origin: String, framing: Framing, degraded_after: Duration) -> Self {
        let inner = StatusInner {
            counters: DriverCounters::default(),
            state: LinkState::Connecting,
            last_progress: Instant::now(),
            last_error: None,
        };
        Self { inner: Arc::new(Mutex::new(inner)), source, origin, framing, degraded_after }
    }

    pub fn counters(&self) -> DriverCounters {
        self.inner.lock().unwrap().counters.clone()
    }

    pub fn state(&self) -> LinkState {
        self.inner.lock().unwrap().state
    }

    /// No scan for longer than `degraded_after` while not finished.
    pub fn degraded(&self) -> bool {
        let inner = self.inner.lock().unwrap();
        inner.state != LinkState::Finished && inner.last_progress.elapsed() > self.degraded_after
    }

    pub fn update_state(&self, state: LinkState) {
        self.update(|s| s.state = state);
    }

    fn update(&self, f: impl FnOnce(&mut StatusInner)) {
        f(&mut self.inner.lock().unwrap());
    }

    fn count(&self, f: impl FnOnce(&mut DriverCounters)) {
        self.update(|s| f(&mut s.counters));
    }

    /// The sense component's state: source, link, `degraded`, last error and the counters.
    pub fn lidar_state(&self) -> LidarState {
        let degraded = self.degraded();
        let inner = self.inner.lock().unwrap();
        LidarState {
            source: self.source.to_owned(),
            origin: self.origin.clone(),
            framing: self.framing.to_string(),
            state: inner.state,
            degraded,
            secs_since_last_scan: inner.last_progress.elapsed().as_secs(),
            last_error: inner.last_error.clone(),
            counters: inner.counters.clone(),
        }
    }
}

/// At most one log line per interval; counts what it held back.
#[derive(Debug)]
struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    const fn new() -> Self {
        Self { last: None, suppressed: 0 }
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Maps the device's µs clock (u32, wraps after ~71 min) to UTC.
#[derive(Debug, Default)]
struct DeviceClock {
    /// (extended device µs, UTC) at the anchor.
    anchor: Option<(i64, DateTime<Utc>)>,
    last_raw: u32,
    extended: i64,
}

impl DeviceClock {
    fn at(&mut self, device_us: u32, received_at: DateTime<Utc>) -> DateTime<Utc> {
        let Some((anchor_us, anchor_t)) = self.anchor else {
            return self.reanchor(device_us, received_at);
        };
        let step = device_us.wrapping_sub(self.last_raw);
        if step >= 1 << 31 {
            // the device clock went backwards: it restarted
            return self.reanchor(device_us, received_at);
        }
        self.extended += i64::from(step);
        self.last_raw = device_us;
        let t = anchor_t + chrono::Duration::microseconds(self.extended - anchor_us);
        let drift = (t - received_at).abs().to_std().unwrap_or(Duration::MAX);
        if drift > MAX_CLOCK_DRIFT {
            return self.reanchor(device_us, received_at);
        }
        t
    }

    fn reanchor(&mut self, device_us: u32, received_at: DateTime<Utc>) -> DateTime<Utc> {
        self.last_raw = device_us;
        self.anchor = Some((self.extended, received_at));
        received_at
    }
}

/// Bytes in, domain scans out: deframing, parsing, counter checks, clock, conversion, counters.
pub struct TelegramDecoder {
    framing: Framing,
    deframer: Box<dyn Deframer + Send>,
    geometry: ScanGeometry,
    mounting_angle_deg: f64,
    status: DriverStatus,
    /// Garbage of deframers replaced by [`TelegramDecoder::reset`].
    garbage_before: u64,
    last_counter: Option<u16>,
    out_of_order_run: u32,
    clock: DeviceClock,
    malformed_log: LogLimiter,
    order_log: LogLimiter,
}

impl TelegramDecoder {
    pub fn new(
        framing: Framing,
        geometry: ScanGeometry,
        mounting_angle_deg: f64,
        status: DriverStatus,
    ) -> Self {
        Self {
            framing,
            deframer: sick::deframer(framing, sick::DEFAULT_MAX_PAYLOAD),
            geometry,
            mounting_angle_deg,
            status,
            garbage_before: 0,
            last_counter: None,
            out_of_order_run: 0,
            clock: DeviceClock::default(),
            malformed_log: LogLimiter::new(),
            order_log: LogLimiter::new(),
        }
    }

    /// Starts afresh for a new connection: a half telegram of the old one counts as garbage,
    /// the scan counter and the device clock are learnt again.
    pub fn reset(&mut self) {
        let old =
            std::mem::replace(&mut self.deframer, sick::deframer(self.framing, sick::DEFAULT_MAX_PAYLOAD));
        let leftover = old.buffered() as u64;
        self.garbage_before += old.garbage_total() + leftover;
        self.sync_garbage();
        self.last_counter = None;
        self.out_of_order_run = 0;
        self.clock = DeviceClock::default();
    }

    fn sync_garbage(&self) {
        let total = self.garbage_before + self.deframer.garbage_total();
        self.status.count(|c| c.garbage_bytes = total);
    }

    /// Feeds received bytes; appends the scans they completed to `out`.
    pub fn push(&mut self, bytes: &[u8], received_at: DateTime<Utc>, out: &mut Vec<Scan>) {
        self.deframer.push(bytes);
        while let Some(item) = self.deframer.next_item() {
            match item {
                Ok(payload) => self.telegram(&payload, received_at, out),
                Err(DeframeError::Garbage { bytes, .. }) => {
                    tracing::debug!(bytes, framing = %self.framing, "skipped garbage bytes");
                }
                Err(err) => {
                    self.status.count(|c| c.telegrams_malformed += 1);
                    self.warn_malformed(&err.to_string());
                }
            }
        }
        self.sync_garbage();
    }

    fn warn_malformed(&mut self, error: &str) {
        self.status.update(|s| s.last_error = Some(error.to_owned()));
        if let Some(suppressed) = self.malformed_log.allow() {
            tracing::warn!(error, suppressed, framing = %self.framing, "malformed telegram skipped");
        }
    }

    fn telegram(&mut self, payload: &[u8], received_at: DateTime<Utc>, out: &mut Vec<Scan>) {
        let telegram = match sick::parse_telegram(self.framing, payload) {
            Ok(telegram) => telegram,
            Err(err) => {
                self.status.count(|c| c.telegrams_malformed += 1);
                self.warn_malformed(&err.to_string());
                return;
            }
        };
        match telegram {
            Telegram::Scan { scan, .. } => self.scan(&scan, received_at, out),
            Telegram::ScanSubscription { enabled } => {
                tracing::info!(enabled, "scan subscription acknowledged")
            }
            Telegram::DeviceIdent { name, version } => tracing::info!(name, version, "scanner identified"),
            Telegram::Error(code) => {
                self.status.count(|c| c.sopas_errors += 1);
                self.status.update(|s| s.last_error = Some(code.to_string()));
                if let Some(suppressed) = self.malformed_log.allow() {
                    tracing::warn!(error = %code, suppressed, "scanner refused a request");
                }
            }
            Telegram::Other { command_type, name } => {
                tracing::debug!(command_type, name, "unexpected telegram ignored");
            }
        }
    }

    fn scan(&mut self, scan: &sick::Scan, received_at: DateTime<Utc>, out: &mut Vec<Scan>) {
        let counter = scan.scan_counter;
        if let Some(last) = self.last_counter {
            let step = counter.wrapping_sub(last);
            if step == 0 || step >= 1 << 15 {
                self.out_of_order_run += 1;
                if self.out_of_order_run < OUT_OF_ORDER_RESYNC {
                    self.status.count(|c| c.out_of_order += 1);
                    if let Some(suppressed) = self.order_log.allow() {
                        tracing::warn!(counter, last, suppressed, "out-of-order scan dropped");
                    }
                    return;
                }
                tracing::warn!(counter, last, "scan counter jumped back for good, following it");
            } else if step > 1 {
                self.status.count(|c| c.scans_missed += u64::from(step - 1));
            }
        }
        let t = self.clock.at(scan.device_time_us, received_at);
        match to_domain_scan(scan, &self.geometry, self.mounting_angle_deg, t) {
            Ok(domain) => {
                self.last_counter = Some(counter);
                self.out_of_order_run = 0;
                self.status.update(|s| {
                    s.counters.telegrams_ok += 1;
                    s.last_progress = Instant::now();
                });
                out.push(domain);
            }
            Err(err) => {
                self.status.count(|c| c.telegrams_malformed += 1);
                self.warn_malformed(&err.to_string());
            }
        }
    }
}

/// Exponential backoff with "equal jitter": the delay is uniform in [d/2, d].
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), attempt: 0 }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        self.attempt = self.attempt.saturating_add(1);
        let full = self.min.saturating_mul(factor).min(self.max);
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

/// Aborts a spawned task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A [`ScanSource`] reading a SICK scanner over TCP. The connection runs in its own task from
/// the first [`ScanSource::next_scan`] on, so waiting for a scan is cancel-safe.
pub struct SickScanSource {
    settings: SickSettings,
    geometry: ScanGeometry,
    status: DriverStatus,
    scans: Option<mpsc::Receiver<Scan>>,
    task: Option<AbortOnDrop>,
    /// Kept alive as long as the source (e.g. the in-process simulated scanner).
    _guard: Option<Box<dyn Send>>,
}

impl SickScanSource {
    pub fn new(settings: SickSettings, geometry: ScanGeometry) -> Self {
        let status =
            DriverStatus::new("sick", settings.address.clone(), settings.framing, settings.degraded_after);
        Self { settings, geometry, status, scans: None, task: None, _guard: None }
    }

    /// Keeps `guard` alive as long as this source.
    pub fn with_guard(mut self, guard: Box<dyn Send>) -> Self {
        self._guard = Some(guard);
        self
    }

    pub fn status(&self) -> DriverStatus {
        self.status.clone()
    }

    fn start(&mut self) {
        let (tx, rx) = mpsc::channel(SCAN_QUEUE);
        let decoder = TelegramDecoder::new(
            self.settings.framing,
            self.geometry,
            self.settings.mounting_angle_deg,
            self.status.clone(),
        );
        let task = tokio::spawn(drive(self.settings.clone(), decoder, self.status.clone(), tx));
        self.task = Some(AbortOnDrop(task.abort_handle()));
        self.scans = Some(rx);
    }
}

impl ScanSource for SickScanSource {
    fn geometry(&self) -> ScanGeometry {
        self.geometry
    }

    fn next_scan(&mut self) -> BoxFuture<'_, anyhow::Result<Scan>> {
        Box::pin(async move {
            if self.scans.is_none() {
                self.start();
            }
            let scans = self.scans.as_mut().context("scan queue")?;
            scans.recv().await.context("sick connection task ended")
        })
    }

    fn state(&self) -> Option<LidarState> {
        Some(self.status.lidar_state())
    }
}

/// Connects, streams, and reconnects with backoff until the consumer is gone.
async fn drive(
    settings: SickSettings,
    mut decoder: TelegramDecoder,
    status: DriverStatus,
    tx: mpsc::Sender<Scan>,
) {
    let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
    let mut connected_before = false;
    let mut failure_log = LogLimiter::new();
    loop {
        status.update(|s| s.state = LinkState::Connecting);
        let result =
            stream_once(&settings, &mut decoder, &status, &tx, &mut connected_before, &mut backoff).await;
        if tx.is_closed() {
            return;
        }
        let error = match result {
            Ok(()) => "scanner closed the connection".to_owned(),
            Err(err) => format!("{err:#}"),
        };
        status.update(|s| {
            s.state = LinkState::Connecting;
            s.last_error = Some(error.clone());
        });
        decoder.reset();
        let delay = backoff.next_delay();
        if let Some(suppressed) = failure_log.allow() {
            tracing::warn!(
                address = %settings.address,
                error,
                retry_in_ms = delay.as_millis() as u64,
                suppressed,
                "scanner connection lost"
            );
        }
        tokio::time::sleep(delay).await;
    }
}

/// One connection: connect, subscribe, read until EOF or error.
async fn stream_once(
    settings: &SickSettings,
    decoder: &mut TelegramDecoder,
    status: &DriverStatus,
    tx: &mpsc::Sender<Scan>,
    connected_before: &mut bool,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&settings.address)).await;
    let mut stream = match connect {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            status.count(|c| c.connect_failures += 1);
            return Err(err).context("connecting to scanner");
        }
        Err(_) => {
            status.count(|c| c.connect_failures += 1);
            anyhow::bail!("connecting to scanner timed out after {CONNECT_TIMEOUT:?}");
        }
    };
    let _ = stream.set_nodelay(true);
    status.update(|s| {
        s.state = LinkState::Connected;
        if *connected_before {
            s.counters.reconnects += 1;
        }
    });
    tracing::info!(address = %settings.address, framing = %settings.framing, "connected to sick scanner");
    *connected_before = true;
    stream
        .write_all(&Request::SubscribeScans { enabled: true }.encode(settings.framing))
        .await
        .context("subscribing to scans")?;

    let mut buf = vec![0u8; 64 * 1024];
    let mut scans = Vec::new();
    loop {
        let n = match tokio::time::timeout(STALL_TIMEOUT, stream.read(&mut buf)).await {
            Ok(read) => read.context("reading from scanner")?,
            Err(_) => anyhow::bail!("no data from scanner for {STALL_TIMEOUT:?}"),
        };
        if n == 0 {
            return Ok(());
        }
        decoder.push(&buf[..n], Utc::now(), &mut scans);
        if !scans.is_empty() {
            backoff.reset();
        }
        for scan in scans.drain(..) {
            if tx.send(scan).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests;

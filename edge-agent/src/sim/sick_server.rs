//! A simulated SICK LMS5xx on TCP: scans the simulated world at the scan rate and speaks the
//! real `LMDscandata` protocol (CoLa-A or CoLa-B), so simulation exercises the real driver.
//!
//! Answers `sRN DeviceIdent`, `sEN LMDscandata 1|0` (with `sEA LMDscandata 1|0`) and
//! `sRN LMDscandata` (the latest scan as `sRA`); anything else gets `sFA` with SOPAS error 12
//! (unknown CoLa command). Subscribed clients get every scan as `sSN LMDscandata`.
//!
//! The device scans whether or not anyone listens, like a real one: the scan counter counts
//! scan periods since power-up (a late tick leaves a gap), the telegram counter counts
//! scan telegrams produced, time since start-up and time of transmission are µs of the device clock,
//! DIST1 carries millimetres with scale 1.0 (0 = no echo). A client too slow for the stream
//! loses scans (it sees a counter gap), it never stalls the scanner or other clients.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use chrono::{Datelike, Timelike};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::SharedWorld;
use super::lidar::{Weather, scan_world_at};
use crate::domain::ScanGeometry;
use crate::lidar::driver::AbortOnDrop;
use crate::lidar::sick::{
    self, Channel, Deframer, Framing, Request, ScanKind, SopasError, Telegram, encode_scan,
};

/// Device type and firmware the simulated scanner reports.
pub const DEVICE_NAME: &str = "LMS511-10100 lanewatch-sim";
pub const DEVICE_VERSION: &str = "V3.10";
/// SOPAS error answered to requests the simulator does not know.
const UNKNOWN_COMMAND: SopasError = SopasError(12);
/// Scans kept for clients that fall behind before they lose some.
const STREAM_BACKLOG: usize = 64;

/// What the simulated scanner is.
#[derive(Debug, Clone)]
pub struct SickServerConfig {
    pub framing: Framing,
    pub scan_hz: u32,
    pub geometry: ScanGeometry,
    pub mounting_angle_deg: f64,
    pub seed: u64,
    pub serial_number: u32,
    /// Where the scan plane crosses the road, metres along it: 0 for the main plane, negative
    /// upstream (the speed plane of a speed trap).
    pub plane_x_m: f64,
}

/// One scan as the simulated scanner produced it (for tests and tools).
#[derive(Debug, Clone)]
pub struct ProducedScan {
    pub scan: Arc<sick::Scan>,
    /// The `sSN LMDscandata` telegram, framed.
    pub frame: Bytes,
}

struct Shared {
    config: SickServerConfig,
    stream: broadcast::Sender<ProducedScan>,
    latest: Mutex<Option<ProducedScan>>,
    telegram_counter: Mutex<u16>,
}

/// A running simulated scanner; stops when dropped.
pub struct SickServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _tasks: Vec<AbortOnDrop>,
}

impl SickServer {
    /// Binds `addr` (e.g. `127.0.0.1:0`) and starts scanning `world`.
    pub async fn bind(addr: &str, world: SharedWorld, config: SickServerConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Self::start(listener, world, config)
    }

    /// Starts on an already bound listener (from synchronous code inside the runtime).
    pub fn from_std(
        listener: std::net::TcpListener,
        world: SharedWorld,
        config: SickServerConfig,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        Self::start(TcpListener::from_std(listener)?, world, config)
    }

    fn start(listener: TcpListener, world: SharedWorld, config: SickServerConfig) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            stream: broadcast::channel(STREAM_BACKLOG).0,
            latest: Mutex::new(None),
            telegram_counter: Mutex::new(0),
        });
        let scanner = tokio::spawn(scan_loop(shared.clone(), world));
        let acceptor = tokio::spawn(accept_loop(shared.clone(), listener));
        tracing::info!(%addr, framing = %shared.config.framing, scan_hz = shared.config.scan_hz, "simulated sick scanner listening");
        Ok(Self {
            addr,
            shared,
            _tasks: vec![AbortOnDrop(scanner.abort_handle()), AbortOnDrop(acceptor.abort_handle())],
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn framing(&self) -> Framing {
        self.shared.config.framing
    }

    /// Every scan produced from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ProducedScan> {
        self.shared.stream.subscribe()
    }
}

impl Shared {
    fn next_telegram_counter(&self) -> u16 {
        let mut counter = self.telegram_counter.lock().unwrap();
        *counter = counter.wrapping_add(1);
        *counter
    }
}

/// The scene a standalone simulated scanner shows: an agent config's sections.
#[derive(Debug, Clone, Default)]
pub struct Scene {
    pub site: crate::config::SiteConfig,
    pub lidar: crate::config::LidarConfig,
    pub simulator: crate::config::SimulatorConfig,
}

/// `lanewatch-agent simulate-sick`: the simulated scanner of `scene` (site, `[lidar]` geometry
/// and scan rate, `[simulator]` traffic), listening on `listen`, until `stop` resolves. Writes
/// `{"addr","pid"}` as JSON to `ready_file` once it listens.
pub async fn run_standalone(
    listen: &str,
    config: &Scene,
    config_dir: Option<&std::path::Path>,
    framing: Framing,
    ready_file: Option<&std::path::Path>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut world = super::World::new(
        super::TrafficParams::from_config(&config.simulator, config.site.lanes, config.site.lane_width_m),
        config.simulator.seed,
        chrono::Utc::now(),
    );
    if let Some(path) = &config.simulator.ground_truth_path {
        world.write_ground_truth_to(&crate::config::resolve(config_dir, path))?;
    }
    let l = &config.lidar;
    let geometry = ScanGeometry {
        mounting_height_m: l.mounting_height_m,
        mount_y_m: l.mount_y_m(&config.site),
        fov_deg: l.fov_deg,
        angular_step_deg: l.angular_step_deg,
        lanes: config.site.lanes,
        lane_width_m: config.site.lane_width_m,
    };
    let server_config = SickServerConfig {
        framing,
        scan_hz: l.scan_hz,
        geometry,
        mounting_angle_deg: l.mounting_angle_deg,
        seed: config.simulator.seed,
        serial_number: 0x00A1_B2C3,
        plane_x_m: 0.0,
    };
    let server = SickServer::bind(listen, SharedWorld::new(world), server_config)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    if let Some(path) = ready_file {
        let ready = serde_json::json!({ "addr": server.local_addr().to_string(), "pid": std::process::id() });
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, ready.to_string())
            .await
            .with_context(|| format!("writing {}", tmp.display()))?;
        tokio::fs::rename(&tmp, path).await.with_context(|| format!("writing {}", path.display()))?;
    }
    stop.await;
    tracing::info!(addr = %server.local_addr(), "simulated sick scanner stopped");
    Ok(())
}

/// Range in metres to the DIST1 wire value: millimetres, 0 for no echo.
fn to_mm(range_m: f32) -> u16 {
    if !range_m.is_finite() || range_m <= 0.0 {
        return 0;
    }
    (f64::from(range_m) * 1000.0).round().clamp(1.0, f64::from(u16::MAX)) as u16
}

fn device_us(since: Instant) -> u32 {
    // the device clock is a u32 of µs since power-up and wraps like the real one
    (since.elapsed().as_micros() % (1u128 << 32)) as u32
}

async fn scan_loop(shared: Arc<Shared>, world: SharedWorld) {
    let config = &shared.config;
    let period = std::time::Duration::from_secs_f64(1.0 / f64::from(config.scan_hz.max(1)));
    let power_up = Instant::now();
    let mut interval = tokio::time::interval_at(power_up, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x5ca7);
    let g = config.geometry;
    let start_angle_deg = 90.0 + config.mounting_angle_deg - g.fov_deg / 2.0;
    let shots_hz = f64::from(config.scan_hz) * 360.0 / g.angular_step_deg;
    loop {
        // ticks stay on the period grid (a skipped one leaves a counter gap)
        let tick = interval.tick().await;
        let scan_counter =
            (tick.duration_since(power_up).as_secs_f64() / period.as_secs_f64()).round() as u64;
        let device_time_us = device_us(power_up);
        let (t, values) = {
            let (t, world) = world.sync_now();
            let ranges = scan_world_at(&world, &g, config.plane_x_m, Weather::CLEAR, &mut rng);
            (t, ranges.into_iter().map(to_mm).collect::<Vec<_>>())
        };
        let scan = sick::Scan {
            version: 1,
            device_number: 1,
            serial_number: config.serial_number,
            telegram_counter: shared.next_telegram_counter(),
            scan_counter: (scan_counter % (1 << 16)) as u16,
            device_time_us,
            transmission_time_us: device_us(power_up),
            digital_outputs: [0, 0],
            scan_frequency_hz: f64::from(config.scan_hz),
            measurement_frequency_hz: (shots_hz / 100.0).round() * 100.0,
            channels: vec![Channel {
                name: "DIST1".into(),
                scale: 1.0,
                offset: 0.0,
                start_angle_deg,
                angular_step_deg: g.angular_step_deg,
                values,
            }],
            time: Some(sick::DateTime {
                year: u16::try_from(t.year()).unwrap_or(0),
                month: t.month() as u8,
                day: t.day() as u8,
                hour: t.hour() as u8,
                minute: t.minute() as u8,
                second: t.second() as u8,
                microsecond: t.timestamp_subsec_micros() % 1_000_000,
            }),
            ..sick::Scan::default()
        };
        let mut scan = scan;
        scan.sync_angles_from_channels();
        let frame = match encode_scan(&scan, ScanKind::Event, config.framing) {
            Ok(frame) => frame,
            Err(err) => {
                tracing::error!(error = %err, "simulated scan does not encode");
                continue;
            }
        };
        let produced = ProducedScan { scan: Arc::new(scan), frame };
        *shared.latest.lock().unwrap() = Some(produced.clone());
        // no receivers is fine: nobody is subscribed
        let _ = shared.stream.send(produced);
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tracing::debug!(%peer, "simulated scanner: client connected");
                tokio::spawn(serve(shared.clone(), stream, peer));
            }
            Err(err) => {
                tracing::warn!(error = %err, "simulated scanner: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One client: answers requests and, while subscribed, streams scans.
async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let framing = shared.config.framing;
    let mut deframer = sick::deframer(framing, 4096);
    let mut scans: Option<broadcast::Receiver<ProducedScan>> = None;
    let mut buf = BytesMut::with_capacity(4096);
    let result: std::io::Result<()> = async {
        loop {
            tokio::select! {
                read = stream.read_buf(&mut buf) => {
                    if read? == 0 {
                        return Ok(());
                    }
                    deframer.push(&buf);
                    buf.clear();
                    let answers = answer_requests(&shared, deframer.as_mut(), &mut scans);
                    for answer in answers {
                        stream.write_all(&answer).await?;
                    }
                }
                produced = next_scan(&mut scans) => match produced {
                    Ok(produced) => stream.write_all(&produced.frame).await?,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(%peer, missed, "simulated scanner: slow client lost scans");
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
            }
        }
    }
    .await;
    match result {
        Ok(()) => tracing::debug!(%peer, "simulated scanner: client disconnected"),
        Err(err) => tracing::debug!(%peer, error = %err, "simulated scanner: client connection ended"),
    }
}

async fn next_scan(
    scans: &mut Option<broadcast::Receiver<ProducedScan>>,
) -> Result<ProducedScan, broadcast::error::RecvError> {
    match scans {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Framed answers to the complete requests in the deframer; updates the subscription.
fn answer_requests(
    shared: &Shared,
    deframer: &mut (dyn Deframer + Send),
    scans: &mut Option<broadcast::Receiver<ProducedScan>>,
) -> Vec<Bytes> {
    let framing = shared.config.framing;
    let mut answers = Vec::new();
    while let Some(item) = deframer.next_item() {
        let payload = match item {
            Ok(payload) => payload,
            Err(err) => {
                tracing::debug!(error = %err, "simulated scanner: bad request bytes");
                continue;
            }
        };
        let answer = match sick::parse_request(framing, &payload) {
            Ok(Request::DeviceIdent) => {
                Telegram::DeviceIdent { name: DEVICE_NAME.into(), version: DEVICE_VERSION.into() }
            }
            Ok(Request::SubscribeScans { enabled }) => {
                *scans = enabled.then(|| shared.stream.subscribe());
                Telegram::ScanSubscription { enabled }
            }
            Ok(Request::PollScan) => match shared.latest.lock().unwrap().clone() {
                Some(latest) => {
                    Telegram::Scan { kind: ScanKind::Reply, scan: Box::new((*latest.scan).clone()) }
                }
                // not one scan yet: the device is still starting
                None => Telegram::Error(SopasError(13)),
            },
            Err(err) => {
                tracing::debug!(error = %err, "simulated scanner: unknown request");
                Telegram::Error(UNKNOWN_COMMAND)
            }
        };
        match answer.encode(framing) {
            Ok(frame) => answers.push(frame),
            Err(err) => tracing::error!(error = %err, "simulated scanner: answer does not encode"),
        }
    }
    answers
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::ClassMix;
    use crate::sim::{TrafficParams, World};

    pub(crate) fn geometry() -> ScanGeometry {
        ScanGeometry {
            mounting_height_m: 6.5,
            mount_y_m: 3.5,
            fov_deg: 90.0,
            angular_step_deg: 0.25,
            lanes: 2,
            lane_width_m: 3.5,
        }
    }

    pub(crate) fn world(flow: f64, seed: u64) -> SharedWorld {
        let params = TrafficParams {
            lanes: 2,
            lane_width_m: 3.5,
            flow_veh_h_per_lane: flow,
            speed_kmh_mean: 100.0,
            speed_kmh_stddev: 10.0,
            class_mix: ClassMix::default(),
        };
        SharedWorld::new(World::new(params, seed, chrono::Utc::now()))
    }

    fn config(framing: Framing) -> SickServerConfig {
        SickServerConfig {
            framing,
            scan_hz: 100,
            geometry: geometry(),
            mounting_angle_deg: 0.0,
            seed: 3,
            serial_number: 0x00A1_B2C3,
            plane_x_m: 0.0,
        }
    }

    /// Sends `request`, reads until one telegram other than a scan event arrives.
    async fn ask(stream: &mut TcpStream, framing: Framing, request: &[u8]) -> Telegram {
        stream.write_all(request).await.unwrap();
        let mut deframer = sick::deframer(framing, sick::DEFAULT_MAX_PAYLOAD);
        let mut buf = [0u8; 8192];
        loop {
            while let Some(item) = deframer.next_item() {
                let t = sick::parse_telegram(framing, &item.unwrap()).unwrap();
                if !matches!(t, Telegram::Scan { kind: ScanKind::Event, .. }) {
                    return t;
                }
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "server closed");
            deframer.push(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn answers_requests_in_both_framings() {
        for framing in [Framing::ColaA, Framing::ColaB] {
            let server = SickServer::bind("127.0.0.1:0", world(0.0, 1), config(framing)).await.unwrap();
            let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
            let t = ask(&mut stream, framing, &Request::DeviceIdent.encode(framing)).await;
            assert_eq!(t, Telegram::DeviceIdent { name: DEVICE_NAME.into(), version: DEVICE_VERSION.into() });
            // wait for the first scan, then poll it
            server.subscribe().recv().await.unwrap();
            let Telegram::Scan { kind, scan } =
                ask(&mut stream, framing, &Request::PollScan.encode(framing)).await
            else {
                panic!("expected a scan")
            };
            assert_eq!(kind, ScanKind::Reply);
            assert_eq!(scan.serial_number, 0x00A1_B2C3);
            assert_eq!(scan.scan_frequency_hz, 100.0);
            assert_eq!(scan.measurement_frequency_hz, 144_000.0);
            assert_eq!((scan.start_angle_deg, scan.angular_step_deg), (45.0, 0.25));
            let dist = scan.channel("DIST1").unwrap();
            assert_eq!((dist.scale, dist.offset, dist.values.len()), (1.0, 0.0, 361));
            // straight down onto the empty road at 6.5 m, give or take the noise
            assert!((i32::from(dist.values[180]) - 6500).abs() < 100, "{}", dist.values[180]);
            let on = Request::SubscribeScans { enabled: true }.encode(framing);
            assert_eq!(ask(&mut stream, framing, &on).await, Telegram::ScanSubscription { enabled: true });
            let off = Request::SubscribeScans { enabled: false }.encode(framing);
            assert_eq!(ask(&mut stream, framing, &off).await, Telegram::ScanSubscription { enabled: false });
            let unknown = sick::frame(framing, b"sMN SetAccessMode 3 F4724744").unwrap();
            assert_eq!(ask(&mut stream, framing, &unknown).await, Telegram::Error(UNKNOWN_COMMAND));
        }
    }

    #[tokio::test]
    async fn streams_counted_timestamped_scans_to_subscribers() {
        let framing = Framing::ColaB;
        let server = SickServer::bind("127.0.0.1:0", world(0.0, 1), config(framing)).await.unwrap();
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        stream.write_all(&Request::SubscribeScans { enabled: true }.encode(framing)).await.unwrap();
        let mut deframer = sick::deframer(framing, sick::DEFAULT_MAX_PAYLOAD);
        let mut scans = Vec::new();
        let mut buf = [0u8; 8192];
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while scans.len() < 10 {
                let n = stream.read(&mut buf).await.unwrap();
                deframer.push(&buf[..n]);
                while let Some(item) = deframer.next_item() {
                    if let Telegram::Scan { kind: ScanKind::Event, scan } =
                        sick::parse_telegram(framing, &item.unwrap()).unwrap()
                    {
                        scans.push(*scan);
                    }
                }
            }
        })
        .await
        .expect("ten scans within 10 s");
        for pair in scans.windows(2) {
            assert!(pair[1].scan_counter > pair[0].scan_counter);
            assert!(pair[1].telegram_counter > pair[0].telegram_counter);
            assert!(pair[1].device_time_us > pair[0].device_time_us);
            assert!(pair[1].transmission_time_us >= pair[1].device_time_us);
        }
        assert!(scans.iter().all(|s| s.time.is_some_and(|t| t.year >= 2024)));
    }
}

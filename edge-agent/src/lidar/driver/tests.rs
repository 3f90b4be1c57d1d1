//! Tests of the SICK scan source: conversion, the decoder's counters, and the driver against the
//! simulated scanner over real loopback TCP (through a fault-injecting proxy).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::lidar::sick::{Channel, ScanKind, encode_scan, frame};
use crate::sim::sick_server::{ProducedScan, SickServer, SickServerConfig};

fn geometry() -> ScanGeometry {
    ScanGeometry {
        mounting_height_m: 6.5,
        mount_y_m: 3.5,
        fov_deg: 90.0,
        angular_step_deg: 0.25,
        lanes: 2,
        lane_width_m: 3.5,
    }
}

fn telegram(counter: u16, start_deg: f64, step_deg: f64, values: Vec<u16>) -> sick::Scan {
    let mut scan = sick::Scan {
        version: 1,
        device_number: 1,
        serial_number: 7,
        telegram_counter: counter,
        scan_counter: counter,
        device_time_us: u32::from(counter) * 20_000,
        transmission_time_us: u32::from(counter) * 20_000 + 300,
        scan_frequency_hz: 50.0,
        measurement_frequency_hz: 72_000.0,
        channels: vec![Channel {
            name: "DIST1".into(),
            scale: 1.0,
            offset: 0.0,
            start_angle_deg: start_deg,
            angular_step_deg: step_deg,
            values,
        }],
        ..sick::Scan::default()
    };
    scan.sync_angles_from_channels();
    scan
}

fn ramp(n: usize) -> Vec<u16> {
    (0..n).map(|i| 6000 + i as u16).collect()
}

#[test]
fn converts_dist1_by_angle_onto_the_configured_beams() {
    let g = geometry();
    let t = Utc::now();
    // the same grid: beam i is value i, in metres
    let same = to_domain_scan(&telegram(1, 45.0, 0.25, ramp(361)), &g, 0.0, t).unwrap();
    assert_eq!(same.ranges_m.len(), 361);
    assert_eq!(same.ranges_m[0], 6.0);
    assert_eq!(same.ranges_m[360], 6.36);
    // an LMS111-like sector (-45°..225°, 0.5°): the vertical beam is device angle 90°
    let wide = to_domain_scan(&telegram(1, -45.0, 0.5, ramp(541)), &g, 0.0, t).unwrap();
    assert_eq!(wide.ranges_m[180], 6.27, "device 90° is index 270");
    // beam 1 (-44.75°) is device 45.25°, halfway between indices 180 and 181
    assert!((wide.ranges_m[1] - 6.1805).abs() < 1e-5, "{}", wide.ranges_m[1]);
    // a mounting roll of 1° shifts the vertical beam by 4 indices of 0.25°
    let rolled = to_domain_scan(&telegram(1, 45.0, 0.25, ramp(361)), &g, 1.0, t).unwrap();
    assert_eq!(rolled.ranges_m[180], 6.184);
    assert!(rolled.ranges_m[360].is_nan(), "outside the telegram's sector");
    // no echo is NaN, not 0 m
    let mut values = ramp(361);
    values[10] = 0;
    let gap = to_domain_scan(&telegram(1, 45.0, 0.25, values), &g, 0.0, t).unwrap();
    assert!(gap.ranges_m[10].is_nan());
    // scale and offset apply before the unit change
    let mut scaled = telegram(1, 45.0, 0.25, ramp(361));
    scaled.channels[0].scale = 2.0;
    scaled.channels[0].offset = 10.0;
    assert_eq!(to_domain_scan(&scaled, &g, 0.0, t).unwrap().ranges_m[0], 12.01);
    let mut rssi = telegram(1, 45.0, 0.25, ramp(361));
    rssi.channels[0].name = "RSSI1".into();
    assert_eq!(to_domain_scan(&rssi, &g, 0.0, t).unwrap_err(), ConvertError::NoDistanceChannel);
}

fn decoder(framing: Framing) -> (TelegramDecoder, DriverStatus) {
    let status = DriverStatus::new("sick", "test".into(), framing, Duration::from_secs(10));
    (TelegramDecoder::new(framing, geometry(), 0.0, status.clone()), status)
}

fn event(counter: u16, framing: Framing) -> Bytes {
    encode_scan(&telegram(counter, 45.0, 0.25, ramp(361)), ScanKind::Event, framing).unwrap()
}

#[test]
fn decoder_counts_every_kind_of_trouble_and_keeps_going() {
    for framing in [Framing::ColaA, Framing::ColaB] {
        let (mut decoder, status) = decoder(framing);
        let mut stream = Vec::new();
        stream.extend_from_slice(&event(1, framing));
        stream.extend_from_slice(b"noise!"); // 6 garbage bytes
        stream.extend_from_slice(&event(2, framing));
        stream.extend_from_slice(&event(2, framing)); // repeated
        stream.extend_from_slice(&event(1, framing)); // backwards
        stream.extend_from_slice(&frame(framing, b"sSN LMDscandata 1 2 zz").unwrap()); // malformed
        stream.extend_from_slice(&event(6, framing)); // 3, 4, 5 missed
        let mut bad = event(7, framing).to_vec();
        let at = bad.len() / 2;
        bad[at] = if framing == Framing::ColaA { b'Z' } else { bad[at] ^ 0x55 };
        stream.extend_from_slice(&bad); // bad checksum / bad number
        stream.extend_from_slice(&event(8, framing));
        let truncated = event(9, framing);
        stream.extend_from_slice(&truncated[..truncated.len() / 2]); // cut by a reconnect

        let mut scans = Vec::new();
        // byte by byte: the result must not depend on how reads split the stream
        for chunk in stream.chunks(7) {
            decoder.push(chunk, Utc::now(), &mut scans);
        }
        assert_eq!(scans.len(), 4, "{framing}: scans 1, 2, 6, 8");
        let c = status.counters();
        assert_eq!(c.telegrams_ok, 4, "{framing}");
        assert_eq!(c.telegrams_malformed, 2, "{framing}");
        assert_eq!(c.out_of_order, 2, "{framing}");
        assert_eq!(c.scans_missed, 4, "{framing}: 3, 4, 5 and 7");
        let garbage_before_reset = c.garbage_bytes;
        decoder.reset();
        let c = status.counters();
        assert!(c.garbage_bytes >= garbage_before_reset + truncated.len() as u64 / 2, "{framing}: {c:?}");
        // after the reconnect the counter is learnt afresh: an older counter is fine
        decoder.push(&event(3, framing), Utc::now(), &mut scans);
        assert_eq!(scans.len(), 5, "{framing}");
        assert_eq!(status.counters().out_of_order, 2);
    }
}

#[test]
fn scan_times_follow_the_device_clock() {
    let (mut decoder, _) = decoder(Framing::ColaB);
    let t0 = Utc::now();
    let mut scans = Vec::new();
    // received with jitter, stamped by the device 20 ms apart
    for (i, jitter_ms) in [0i64, 7, 2, 15].into_iter().enumerate() {
        let received = t0 + chrono::Duration::milliseconds(i as i64 * 20 + jitter_ms);
        decoder.push(&event(i as u16 + 1, Framing::ColaB), received, &mut scans);
    }
    let times: Vec<i64> = scans.iter().map(|s| (s.t - t0).num_milliseconds()).collect();
    assert_eq!(times, vec![0, 20, 40, 60]);
}

/// What the test proxy does to the stream from the scanner to the driver.
enum Fault {
    /// Writes these bytes between two telegrams.
    Inject(Vec<u8>),
    /// Corrupts one byte of the next telegram.
    Corrupt,
    /// Sends the next telegram twice.
    Duplicate,
    /// Closes the connection.
    Drop,
}

/// A proxy between driver and scanner that forwards whole telegrams and applies faults.
async fn proxy(
    upstream: std::net::SocketAddr,
    framing: Framing,
) -> (std::net::SocketAddr, mpsc::UnboundedSender<Fault>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut faults) = mpsc::unbounded_channel::<Fault>();
    tokio::spawn(async move {
        let mut pending: VecDeque<Fault> = VecDeque::new();
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let mut server = TcpStream::connect(upstream).await.unwrap();
            let mut deframer = sick::deframer(framing, sick::DEFAULT_MAX_PAYLOAD);
            let (mut from_client, mut from_server) = (vec![0u8; 4096], vec![0u8; 65536]);
            'conn: loop {
                tokio::select! {
                    n = client.read(&mut from_client) => match n {
                        Ok(n) if n > 0 => { let _ = server.write_all(&from_client[..n]).await; }
                        _ => break 'conn,
                    },
                    fault = faults.recv() => match fault {
                        Some(Fault::Drop) => break 'conn,
                        Some(fault) => pending.push_back(fault),
                        None => return,
                    },
                    n = server.read(&mut from_server) => {
                        let Ok(n) = n else { break 'conn };
                        if n == 0 { break 'conn; }
                        deframer.push(&from_server[..n]);
                        while let Some(Ok(payload)) = deframer.next_item() {
                            let mut out = frame(framing, &payload).unwrap().to_vec();
                            match pending.pop_front() {
                                Some(Fault::Inject(bytes)) => out = [bytes, out].concat(),
                                Some(Fault::Corrupt) => {
                                    let at = out.len() / 2;
                                    out[at] = if framing == Framing::ColaA { b'Z' } else { out[at] ^ 0x55 };
                                }
                                Some(Fault::Duplicate) => out = [out.clone(), out].concat(),
                                Some(Fault::Drop) | None => {}
                            }
                            if client.write_all(&out).await.is_err() { break 'conn; }
                        }
                    }
                }
            }
        }
    });
    (addr, tx)
}

fn server_config(framing: Framing) -> SickServerConfig {
    SickServerConfig {
        framing,
        scan_hz: 100,
        geometry: geometry(),
        mounting_angle_deg: 0.0,
        seed: 9,
        serial_number: 1,
        plane_x_m: 0.0,
    }
}

fn settings(address: String, framing: Framing) -> SickSettings {
    SickSettings {
        address,
        framing,
        reconnect_min: Duration::from_millis(10),
        reconnect_max: Duration::from_millis(100),
        degraded_after: Duration::from_secs(10),
        mounting_angle_deg: 0.0,
    }
}

/// What the simulated scanner produced, as the collector task of [`collect`] recorded it.
#[derive(Default)]
struct Produced {
    scans: Mutex<Vec<ProducedScan>>,
    /// Woken after each scan recorded.
    grew: tokio::sync::Notify,
}

/// Collects what the simulated scanner produces from now on.
fn collect(server: &SickServer) -> Arc<Produced> {
    let produced = Arc::new(Produced::default());
    let mut rx = server.subscribe();
    let sink = produced.clone();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(p) => {
                    sink.scans.lock().unwrap().push(p);
                    sink.grew.notify_waiters();
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    panic!("the test's collector fell {n} scans behind the scanner")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    produced
}

/// The ranges the driver must produce for a telegram on the configured grid.
fn expected_ranges(p: &ProducedScan) -> Vec<f32> {
    let values = &p.scan.channel("DIST1").unwrap().values;
    values.iter().map(|&mm| if mm == 0 { f32::NAN } else { (f64::from(mm) / 1000.0) as f32 }).collect()
}

fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

/// Index in `produced` of the scan equal to `scan`, searching from `from`.
fn find(produced: &Mutex<Vec<ProducedScan>>, scan: &Scan, from: usize) -> Option<usize> {
    let produced = produced.lock().unwrap();
    (from..produced.len()).find(|&i| same(&expected_ranges(&produced[i]), &scan.ranges_m))
}

/// Like [`find`], but waits for the collector task (which runs beside the driver) to record the
/// scan, up to 5 s: on a loaded machine the driver can see a scan before the collector does.
async fn find_eventually(produced: &Produced, scan: &Scan, from: usize) -> Option<usize> {
    let found = async {
        loop {
            // registered before looking, so a scan recorded in between still wakes it
            let grew = produced.grew.notified();
            let mut grew = std::pin::pin!(grew);
            grew.as_mut().enable();
            if let Some(at) = find(&produced.scans, scan, from) {
                return at;
            }
            grew.await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), found).await.ok()
}

async fn take(source: &mut SickScanSource, n: usize) -> Vec<Scan> {
    let mut out = Vec::new();
    for _ in 0..n {
        let scan = tokio::time::timeout(Duration::from_secs(10), source.next_scan())
            .await
            .expect("a scan within 10 s")
            .expect("the source does not fail");
        out.push(scan);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_yields_the_simulated_scanners_scans_over_tcp() {
    for framing in [Framing::ColaA, Framing::ColaB] {
        let server = SickServer::bind(
            "127.0.0.1:0",
            crate::sim::sick_server::tests::world(2000.0, 4),
            server_config(framing),
        )
        .await
        .unwrap();
        let produced = collect(&server);
        let mut source = SickScanSource::new(settings(server.local_addr().to_string(), framing), geometry());
        let scans = take(&mut source, 30).await;
        // every scan is one the scanner produced, in order, none twice
        let mut from = 0;
        for scan in &scans {
            let at = find_eventually(&produced, scan, from)
                .await
                .unwrap_or_else(|| panic!("{framing}: scan not produced"));
            from = at + 1;
        }
        let c = source.status().counters();
        assert!(c.telegrams_ok >= 30, "{framing}: {c:?}");
        assert_eq!((c.telegrams_malformed, c.garbage_bytes, c.out_of_order, c.reconnects), (0, 0, 0, 0));
        assert_eq!(source.status().state(), LinkState::Connected);
        let state = source.state().unwrap();
        assert!(!state.degraded, "{state:?}");
        assert_eq!(state.state, LinkState::Connected, "{state:?}");
        assert!(state.counters.telegrams_ok >= 30, "{state:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_survives_garbage_corruption_duplicates_and_dropped_connections() {
    for framing in [Framing::ColaA, Framing::ColaB] {
        let server = SickServer::bind(
            "127.0.0.1:0",
            crate::sim::sick_server::tests::world(0.0, 4),
            server_config(framing),
        )
        .await
        .unwrap();
        let (addr, faults) = proxy(server.local_addr(), framing).await;
        let mut source = SickScanSource::new(settings(addr.to_string(), framing), geometry());
        let status = source.status();
        take(&mut source, 5).await;

        faults.send(Fault::Inject(b"\xff\xfenoise from a bad cable\x00\x01".to_vec())).unwrap();
        take(&mut source, 5).await;
        assert_eq!(status.counters().garbage_bytes, 26, "{framing}");

        faults.send(Fault::Corrupt).unwrap();
        take(&mut source, 5).await;
        assert_eq!(status.counters().telegrams_malformed, 1, "{framing}");

        faults.send(Fault::Duplicate).unwrap();
        take(&mut source, 5).await;
        assert_eq!(status.counters().out_of_order, 1, "{framing}");

        faults.send(Fault::Drop).unwrap();
        take(&mut source, 5).await;
        let c = status.counters();
        assert_eq!(c.reconnects, 1, "{framing}: {c:?}");
        assert_eq!(status.state(), LinkState::Connected);
        assert!(!status.degraded());
        assert!(status.lidar_state().last_error.is_some());
    }
}

#[tokio::test(start_paused = true)]
async fn a_long_outage_is_reported_as_degraded() {
    // a port nobody listens on: bound for the whole test (without SO_REUSEADDR, never
    // listening), so no other process can take it and connecting is refused
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = reserved.local_addr().unwrap();
    let mut source = SickScanSource::new(settings(addr.to_string(), Framing::ColaB), geometry());
    let status = source.status();
    assert!(!status.degraded());
    // nothing arrives, the source keeps trying instead of failing
    let waited = tokio::time::timeout(Duration::from_secs(30), source.next_scan()).await;
    assert!(waited.is_err(), "no scan and no error from an unreachable scanner");
    assert!(status.degraded());
    assert_eq!(status.state(), LinkState::Connecting);
    let state = status.lidar_state();
    assert!(state.degraded, "{state:?}");
    assert!(state.secs_since_last_scan >= 30, "{state:?}");
    drop(reserved);
}

#[test]
fn backoff_grows_with_jitter_up_to_the_cap() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
    for (i, d) in delays.iter().enumerate() {
        let full = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(2));
        assert!(*d >= full / 2 && *d <= full, "attempt {i}: {d:?} outside [{:?}, {full:?}]", full / 2);
    }
    b.reset();
    assert!(b.next_delay() <= Duration::from_millis(100));
}

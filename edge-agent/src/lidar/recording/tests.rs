//! Tests of recordings: the checked file format, record → replay over real TCP, deterministic
//! detections from replays, real-time pacing, and damaged files.

use std::sync::{Arc, Mutex};

use rand::SeedableRng;

use super::*;
use crate::detect::Detector;
use crate::domain::{Detection, VehicleClass};
use crate::lidar::sick::{Channel, ScanKind, encode_scan};
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

fn file_of(framing: Framing, records: &[(u64, &[u8])]) -> Vec<u8> {
    let mut out = encode_header(framing).to_vec();
    for (t, bytes) in records {
        out.extend_from_slice(&encode_record(*t, bytes));
    }
    out
}

fn read_all(bytes: &[u8]) -> Result<Vec<Record>, RecordingError> {
    let mut reader = RecordingReader::new(bytes)?;
    let mut out = Vec::new();
    while let Some(record) = reader.next_record()? {
        out.push(record);
    }
    Ok(out)
}

#[test]
fn format_round_trips_and_every_damage_names_its_offset() {
    let file = file_of(Framing::ColaA, &[(10, b"abc"), (20, b"defgh"), (20, b"i")]);
    let records = read_all(&file).unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(
        (records[0].offset, records[0].received_at_us, records[0].bytes.as_slice()),
        (12, 10, &b"abc"[..])
    );
    assert_eq!(records[1].offset, 12 + 16 + 3);
    assert_eq!(RecordingReader::new(&file[..]).unwrap().framing(), Framing::ColaA);

    // every cut inside a header or a record is reported, at the start of what it cut
    for cut in 1..file.len() {
        let clean = [HEADER_BYTES, 31, 52, file.len()].contains(&cut);
        let result = read_all(&file[..cut]);
        assert_eq!(result.is_ok(), clean, "cut at {cut}: {result:?}");
        if let Err(err) = result {
            let msg = err.to_string();
            assert!(
                msg.starts_with("recording truncated at offset") || matches!(err, RecordingError::BadMagic),
                "{msg}"
            );
        }
    }
    let err = read_all(&file[..40]).unwrap_err().to_string();
    assert_eq!(err, "recording truncated at offset 31: record header needs 16 bytes, 9 present");
    let err = read_all(&file[..5]).unwrap_err().to_string();
    assert_eq!(err, "recording truncated at offset 0: file header needs 12 bytes, 5 present");

    let mut flipped = file.clone();
    flipped[12 + 16 + 1] ^= 1;
    assert!(matches!(read_all(&flipped), Err(RecordingError::BadChecksum { offset: 12, .. })));
    let mut magic = file.clone();
    magic[0] = b'X';
    assert!(matches!(read_all(&magic), Err(RecordingError::BadMagic)));
    let mut version = file.clone();
    version[8] = 9;
    assert!(matches!(read_all(&version), Err(RecordingError::UnsupportedVersion { version: 9 })));
    let mut framing = file.clone();
    framing[10] = 7;
    assert!(matches!(read_all(&framing), Err(RecordingError::BadFraming { value: 7 })));
    let mut length = file.clone();
    length[12 + 8..12 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        read_all(&length).unwrap_err().to_string(),
        format!("record at offset 12: length {} outside 1..={MAX_RECORD_BYTES}", u32::MAX)
    );
    let backwards = file_of(Framing::ColaB, &[(20, b"a"), (10, b"b")]);
    assert!(matches!(read_all(&backwards), Err(RecordingError::TimeGoesBackwards { offset: 29, .. })));
}

fn scanner_config(framing: Framing) -> SickServerConfig {
    SickServerConfig {
        framing,
        scan_hz: 100,
        geometry: geometry(),
        mounting_angle_deg: 0.0,
        seed: 5,
        serial_number: 1,
        plane_x_m: 0.0,
    }
}

/// Reads scans until the replay is finished (it then waits forever).
async fn replay_all(source: &mut ReplayScanSource) -> Vec<Scan> {
    let status = source.status();
    let mut scans = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(500), source.next_scan()).await {
            Ok(scan) => scans.push(scan.expect("replay does not fail")),
            Err(_) if status.state() == LinkState::Finished => return scans,
            Err(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_then_replay_yields_the_scanners_scans() {
    for framing in [Framing::ColaA, Framing::ColaB] {
        let world = crate::sim::sick_server::tests::world(2000.0, 8);
        let server = SickServer::bind("127.0.0.1:0", world, scanner_config(framing)).await.unwrap();
        let produced: Arc<Mutex<Vec<ProducedScan>>> = Arc::default();
        let mut rx = server.subscribe();
        let sink = produced.clone();
        tokio::spawn(async move {
            while let Ok(p) = rx.recv().await {
                sink.lock().unwrap().push(p);
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scans.lwrec");
        let addr = server.local_addr().to_string();
        let summary = record(&addr, framing, &path, Some(Duration::from_millis(600)), std::future::pending())
            .await
            .unwrap();
        assert!(summary.records > 0, "{summary:?}");
        assert_eq!(verify(&path).unwrap(), summary);

        let mut source =
            ReplayScanSource::open(&path, 0.0, geometry(), 0.0, Duration::from_secs(10)).unwrap();
        let scans = replay_all(&mut source).await;
        assert!(scans.len() >= 20, "{framing}: {} scans", scans.len());
        // each replayed scan is the next one the scanner produced (in order, none repeated)
        let produced = produced.lock().unwrap();
        let expected: Vec<Vec<f32>> = produced
            .iter()
            .map(|p| {
                let values = &p.scan.channel("DIST1").unwrap().values;
                values.iter().map(|&mm| (f64::from(mm) / 1000.0) as f32).collect()
            })
            .collect();
        let first =
            expected.iter().position(|e| *e == scans[0].ranges_m).expect("first replayed scan was produced");
        let mut at = first;
        for scan in &scans {
            let found = (at..expected.len())
                .find(|&i| expected[i] == scan.ranges_m)
                .expect("replayed scan was produced");
            at = found + 1;
        }
        let c = source.status().counters();
        assert_eq!((c.telegrams_ok, c.telegrams_malformed, c.out_of_order), (scans.len() as u64, 0, 0));
        assert_eq!(source.state().unwrap().state, LinkState::Finished);
    }
}

/// A CoLa-B recording of `seconds` of 50 Hz scans of a world with known vehicles.
fn synthetic_recording(path: &Path, seconds: f64) {
    let g = geometry();
    let params = crate::sim::TrafficParams {
        lanes: 2,
        lane_width_m: 3.5,
        flow_veh_h_per_lane: 0.0,
        speed_kmh_mean: 100.0,
        speed_kmh_stddev: 10.0,
        class_mix: crate::config::ClassMix::default(),
    };
    let mut world = crate::sim::World::new(params, 2, Utc::now());
    world.insert_vehicle(0, VehicleClass::Car, 100.0, -40.0);
    world.insert_vehicle(1, VehicleClass::Truck, 80.0, -50.0);
    world.insert_vehicle(0, VehicleClass::Van, 90.0, -110.0);
    world.insert_vehicle(1, VehicleClass::Car, 110.0, -120.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut file = encode_header(Framing::ColaB).to_vec();
    let t0_us = 1_700_000_000_000_000u64;
    for step in 0..(seconds * 50.0) as u32 {
        world.advance_to(f64::from(step) / 50.0);
        let values = crate::sim::lidar::scan_world(&world, &g, &mut rng)
            .into_iter()
            .map(|r| (f64::from(r) * 1000.0).round() as u16)
            .collect();
        let mut scan = crate::lidar::sick::Scan {
            version: 1,
            scan_counter: step as u16,
            telegram_counter: step as u16,
            device_time_us: step * 20_000,
            transmission_time_us: step * 20_000 + 250,
            scan_frequency_hz: 50.0,
            measurement_frequency_hz: 72_000.0,
            channels: vec![Channel {
                name: "DIST1".into(),
                scale: 1.0,
                offset: 0.0,
                start_angle_deg: 45.0,
                angular_step_deg: 0.25,
                values,
            }],
            ..Default::default()
        };
        scan.sync_angles_from_channels();
        let frame = encode_scan(&scan, ScanKind::Event, Framing::ColaB).unwrap();
        // split like socket reads sometimes are
        let (a, b) = frame.split_at(frame.len() / 3);
        let t = t0_us + u64::from(step) * 20_000;
        file.extend_from_slice(&encode_record(t, a));
        file.extend_from_slice(&encode_record(t + 50, b));
    }
    std::fs::write(path, file).unwrap();
}

/// Detections without their wall-clock times (a replay starts its timeline when it starts).
fn detect(scans: &[Scan]) -> Vec<serde_json::Value> {
    let mut detector = Detector::new(geometry());
    let mut out = Vec::new();
    for scan in scans {
        for event in detector.process(scan) {
            let mut line = crate::detect::DetectionLog::line(&event);
            line.as_object_mut().unwrap().remove("t");
            out.push(line);
        }
    }
    out
}

#[tokio::test]
async fn replaying_one_file_twice_gives_identical_detections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synthetic.lwrec");
    synthetic_recording(&path, 12.0);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut source =
            ReplayScanSource::open(&path, 0.0, geometry(), 0.0, Duration::from_secs(10)).unwrap();
        let scans = replay_all(&mut source).await;
        assert_eq!(scans.len(), 600);
        runs.push(detect(&scans));
    }
    assert_eq!(runs[0], runs[1]);
    let exits: Vec<_> = runs[0].iter().filter(|d| d["event"] == "exit").collect();
    assert_eq!(exits.len(), 4, "{:#?}", runs[0]);
    let classes: Vec<&str> = exits.iter().map(|d| d["class"].as_str().unwrap()).collect();
    assert!(classes.contains(&"truck") && classes.contains(&"van"), "{classes:?}");
    // scan times come from the device clock: 20 ms apart whatever the replay speed
    let mut source = ReplayScanSource::open(&path, 0.0, geometry(), 0.0, Duration::from_secs(10)).unwrap();
    let scans = replay_all(&mut source).await;
    assert!(scans.windows(2).all(|w| (w[1].t - w[0].t).num_microseconds() == Some(20_000)));
}

#[tokio::test(start_paused = true)]
async fn replay_keeps_the_recorded_pace_at_its_speed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paced.lwrec");
    synthetic_recording(&path, 2.0);
    let mut source = ReplayScanSource::open(&path, 2.0, geometry(), 0.0, Duration::from_secs(10)).unwrap();
    let started = Instant::now();
    source.next_scan().await.unwrap();
    for _ in 1..100 {
        source.next_scan().await.unwrap();
    }
    // 100 scans recorded over 1.98 s (plus the split's 50 µs), replayed at twice the speed
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(990) && elapsed < Duration::from_millis(1000), "{elapsed:?}");
}

#[tokio::test]
async fn a_truncated_recording_is_refused_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.lwrec");
    synthetic_recording(&path, 1.0);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let err = ReplayScanSource::open(&path, 1.0, geometry(), 0.0, Duration::from_secs(10))
        .err()
        .expect("a cut recording is refused");
    let msg = format!("{err:#}");
    assert!(msg.contains(&format!("recording {}", path.display())), "{msg}");
    assert!(msg.contains("recording truncated at offset"), "{msg}");
    // the offset is the last record's, which starts where the full file's last record starts
    let mut reader = RecordingReader::new(&bytes[..]).unwrap();
    let mut last = 0;
    while let Some(record) = reader.next_record().unwrap() {
        last = record.offset;
    }
    assert!(msg.contains(&format!("offset {last}:")), "{msg}");
    let err = read_header_of(&dir.path().join("missing.lwrec")).unwrap_err();
    assert!(format!("{err:#}").contains("No such file"), "{err:#}");
}

#[test]
fn detections_of_a_replay_are_real_detections() {
    // guard against a vacuous comparison: the detector sees vehicles in the synthetic recording
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.lwrec");
    synthetic_recording(&path, 12.0);
    let mut reader = RecordingReader::open(&path).unwrap();
    let status = DriverStatus::new("replay", "t".into(), Framing::ColaB, Duration::from_secs(10));
    let mut decoder = TelegramDecoder::new(Framing::ColaB, geometry(), 0.0, status);
    let mut scans = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        decoder.push(&record.bytes, Utc::now(), &mut scans);
    }
    let mut detector = Detector::new(geometry());
    let entries = scans
        .iter()
        .flat_map(|s| detector.process(s))
        .filter(|d| matches!(d, Detection::Entry { .. }))
        .count();
    assert_eq!(entries, 4);
}

//! Unit and property tests for the SICK CoLa codec.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// A real-looking LMS111 CoLa-A scan: 50 Hz, 541 points, 0.5°, start -45°, one DIST1 channel.
fn lms111_payload(points: usize, declared: usize) -> String {
    let mut s = String::from(
        "sSN LMDscandata 1 1 89A27F 0 0 343 347 27477BA9 2747813B 0 0 7 0 0 1388 168 0 1 DIST1 3F800000 00000000 FFF92230 1388",
    );
    s.push_str(&format!(" {declared:X}"));
    for i in 0..points {
        // A flat road at ~6 m with a "vehicle" between points 200 and 260.
        let v = if (200..260).contains(&i) { 0x0BB8 + i } else { 0x1770 + (i % 7) };
        s.push_str(&format!(" {v:X}"));
    }
    s.push_str(" 0 0 0 0 0 0");
    s
}

fn parse_a(payload: &str) -> Result<Telegram, ParseError> {
    parse_telegram(Framing::ColaA, payload.as_bytes())
}

fn scan_of(t: Telegram) -> Scan {
    match t {
        Telegram::Scan { scan, .. } => *scan,
        other => panic!("expected a scan, got {other:?}"),
    }
}

#[test]
fn parses_lms111_cola_a_example() {
    let t = parse_a(&lms111_payload(541, 541)).expect("parses");
    let Telegram::Scan { kind, scan } = t else { panic!("not a scan") };
    assert_eq!(kind, ScanKind::Event);
    assert_eq!(scan.version, 1);
    assert_eq!(scan.device_number, 1);
    assert_eq!(scan.serial_number, 0x89A27F);
    assert_eq!(scan.device_status, [0, 0]);
    assert_eq!(scan.telegram_counter, 0x343);
    assert_eq!(scan.scan_counter, 0x347);
    assert_eq!(scan.device_time_us, 0x27477BA9);
    assert_eq!(scan.transmission_time_us, 0x2747813B);
    assert_eq!(scan.digital_inputs, [0, 0]);
    assert_eq!(scan.digital_outputs, [7, 0]);
    assert_eq!(scan.layer_angle, 0);
    assert_eq!(scan.scan_frequency_hz, 50.0);
    assert_eq!(scan.measurement_frequency_hz, 36_000.0);
    assert!(scan.encoders.is_empty());
    assert_eq!(scan.start_angle_deg, -45.0);
    assert_eq!(scan.angular_step_deg, 0.5);
    assert_eq!(scan.channels.len(), 1);
    let ch = &scan.channels[0];
    assert_eq!(ch.name, "DIST1");
    assert_eq!((ch.scale, ch.offset), (1.0, 0.0));
    assert_eq!(ch.values.len(), 541);
    assert_eq!(ch.angle_deg(540), 225.0);
    assert!(scan.channels_8bit.is_empty());
    assert_eq!((scan.position, scan.device_name.clone(), scan.comment.clone()), (None, None, None));
    assert_eq!((scan.time, scan.event.clone()), (None, None));
    let m = scan.distances_m("DIST1").expect("dist channel");
    assert_eq!(m[0], 6.0);
    assert_eq!(m[200], (0x0BB8 + 200) as f64 / 1000.0);
    assert_eq!(scan.distances_m("RSSI1"), None);
}

#[test]
fn short_channel_is_named_in_error() {
    let err = parse_a(&lms111_payload(540, 541).replace(" 0 0 0 0 0 0", "")).expect_err("short");
    assert_eq!(err.to_string(), "lmdscandata: channel DIST1 declares 541 points but 540 follow");
    assert!(matches!(err, ParseError::ChannelLength { declared: 541, available: 540, .. }));
}

#[test]
fn bad_block_counts_and_flags_are_typed() {
    let base = "sSN LMDscandata 1 1 89A27F 0 0 343 347 27477BA9 2747813B 0 0 7 0 0 1388 168";
    let err = parse_a(&format!("{base} 2 10 20")).expect_err("encoders");
    assert_eq!(err.to_string(), "lmdscandata: field amount of encoder declares 2 entries but 1 follow");
    let err = parse_a(&format!("{base} 0 2 DIST1 3F800000 0 0 1388 1 5")).expect_err("channels");
    assert!(matches!(
        err,
        ParseError::BlockCount { field: "number of 16-bit channels", declared: 2, available: 1, .. }
    ));
    let err = parse_a(&format!("{base} 0 0 0 2")).expect_err("flag");
    assert_eq!(err.to_string(), "lmdscandata: field position flag: flag value 2 is neither 0 nor 1");
    let err = parse_a(&format!("{base} 0 0 0 0 0 0 0 0 7")).expect_err("trailing");
    assert!(matches!(err, ParseError::TrailingData { .. }));
    let err = parse_a(&format!("{base} 0 0 0 0 0 0 0 0")).map(|_| ()).err();
    assert_eq!(err, None);
    let err = parse_a(&format!("{base} 0 1 DIST1 3F800000 0 0 1388 1 1G 0")).expect_err("hex");
    assert_eq!(err.to_string(), "lmdscandata: field 16-bit channel data: invalid number token \"1G\"");
    let err = parse_a(&format!("{base} 0 1 DIST1 3F800000 0 0 1388 1 10000 0")).expect_err("range");
    assert!(matches!(err, ParseError::OutOfRange { value: 0x10000, .. }));
    let err = parse_a("sSN LMDscandata 1 1").expect_err("truncated");
    assert_eq!(err.to_string(), "lmdscandata: telegram ends before field serial number");
}

#[test]
fn absent_trailing_flags_are_tolerated() {
    let base = "sRA LMDscandata 1 1 89A27F 0 0 343 347 27477BA9 2747813B 0 0 7 0 0 1388 168 0 0 0";
    let scan = scan_of(parse_a(base).expect("no flags at all"));
    assert_eq!(scan.device_name, None);
    let scan = scan_of(parse_a(&format!("{base} 0 0")).expect("two flags"));
    assert_eq!(scan.comment, None);
}

#[test]
fn parses_optional_blocks_and_decimal_tokens() {
    let p = "sRA LMDscandata 1 1 89A27F 0 0 343 347 27477BA9 2747813B 0 0 7 0 FF38 1388 168 \
             1 +1000 -0 \
             1 DIST1 40000000 3F800000 -450000 +5000 2 +100 C8 \
             1 RSSI1 3F800000 00000000 FFF92230 1388 2 FE 0 \
             1 3F800000 40000000 40400000 0 0 3F800000 1 0 \
             1 B not defined \
             1 4 left \
             1 7E8 3 F 8 1E 2D 3E8 \
             1 FDIN 10 20 FFFFFFFF";
    let Telegram::Scan { kind, scan } = parse_a(p).expect("parses") else { panic!("not a scan") };
    assert_eq!(kind, ScanKind::Reply);
    assert_eq!(scan.layer_angle, -200);
    assert_eq!(scan.encoders, vec![Encoder { position: 1000, speed: 0 }]);
    let d = &scan.channels[0];
    assert_eq!((d.scale, d.offset, d.start_angle_deg, d.angular_step_deg), (2.0, 1.0, -45.0, 0.5));
    assert_eq!(d.values, vec![100, 200]);
    assert_eq!(d.distances_m(), vec![0.201, 0.401]);
    assert_eq!(scan.channels_8bit[0].values, vec![0xFE, 0]);
    let pos = scan.position.expect("position");
    assert_eq!((pos.x, pos.y, pos.z, pos.rot_z, pos.rotation_type), (1.0, 2.0, 3.0, 1.0, 1));
    assert_eq!(scan.device_name.as_deref(), Some("not defined"));
    assert_eq!(scan.comment.as_deref(), Some("left"));
    let t = scan.time.expect("time");
    assert_eq!(
        (t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond),
        (2024, 3, 15, 8, 30, 45, 1000)
    );
    let e = scan.event.clone().expect("event");
    assert_eq!((e.kind.as_str(), e.encoder_position, e.time_us, e.angle), ("FDIN", 16, 32, -1));
    // And it survives both framings.
    for f in [Framing::ColaA, Framing::ColaB] {
        let t = Telegram::Scan { kind, scan: scan.clone() };
        let back = parse_telegram(f, &t.payload(f).expect("encodes")).expect("reparses");
        assert_eq!(back, t, "{f}");
    }
}

#[test]
fn encodes_requests_in_both_framings() {
    let a = |r: Request| r.encode(Framing::ColaA).to_vec();
    assert_eq!(a(Request::PollScan), b"\x02sRN LMDscandata\x03");
    assert_eq!(a(Request::SubscribeScans { enabled: true }), b"\x02sEN LMDscandata 1\x03");
    assert_eq!(a(Request::SubscribeScans { enabled: false }), b"\x02sEN LMDscandata 0\x03");
    assert_eq!(a(Request::DeviceIdent), b"\x02sRN DeviceIdent\x03");

    let b = Request::PollScan.encode(Framing::ColaB).to_vec();
    let mut want = vec![2, 2, 2, 2, 0, 0, 0, 15];
    want.extend_from_slice(b"sRN LMDscandata");
    want.push(xor_checksum(b"sRN LMDscandata"));
    assert_eq!(b, want);
    let b = Request::SubscribeScans { enabled: true }.encode(Framing::ColaB).to_vec();
    let mut want = vec![2, 2, 2, 2, 0, 0, 0, 17];
    want.extend_from_slice(b"sEN LMDscandata \x01");
    want.push(0x33);
    assert_eq!(want[want.len() - 1], xor_checksum(b"sEN LMDscandata \x01"));
    assert_eq!(b, want);

    for f in [Framing::ColaA, Framing::ColaB] {
        for r in [Request::PollScan, Request::DeviceIdent, Request::SubscribeScans { enabled: true }] {
            assert_eq!(parse_request(f, &r.payload(f)), Ok(r));
        }
    }
    assert!(matches!(
        parse_request(Framing::ColaA, b"sWN LMDscandatacfg 1"),
        Err(ParseError::UnexpectedCommand { .. })
    ));
}

#[test]
fn parses_answers() {
    assert_eq!(parse_a("sEA LMDscandata 1"), Ok(Telegram::ScanSubscription { enabled: true }));
    assert_eq!(parse_a("sEA LMDscandata 0"), Ok(Telegram::ScanSubscription { enabled: false }));
    assert!(matches!(parse_a("sEA LMDscandata 2"), Err(ParseError::InvalidFlag { .. })));
    assert_eq!(
        parse_a("sRA DeviceIdent 10 LMS10x_FieldEval 10 V1.36-21.10.2010"),
        Ok(Telegram::DeviceIdent { name: "LMS10x_FieldEval".into(), version: "V1.36-21.10.2010".into() })
    );
    assert!(parse_a("sRA DeviceIdent 11 LMS10x_FieldEval 10 V1.36-21.10.2010").is_err());
    let Ok(Telegram::Error(e)) = parse_a("sFA 5") else { panic!("sFA") };
    assert_eq!(e, SopasError(5));
    assert_eq!(e.to_string(), "sopas error 5 (Sopas_Error_INVALID_DATA)");
    assert_eq!(parse_telegram(Framing::ColaB, b"sFA\x00\x0B"), Ok(Telegram::Error(SopasError(0x0B))));
    assert_eq!(parse_telegram(Framing::ColaB, b"sFA \x0B"), Ok(Telegram::Error(SopasError(0x0B))));
    assert_eq!(
        parse_a("sAN mLMPsetscancfg 0 1388 1 1388 FFF92230 225510"),
        Ok(Telegram::Other { command_type: "sAN".into(), name: "mLMPsetscancfg".into() })
    );
    assert!(matches!(parse_a("hello"), Err(ParseError::BadHeader { .. })));
    for t in [
        Telegram::ScanSubscription { enabled: true },
        Telegram::DeviceIdent { name: "LMS5xx_1".into(), version: "V2.10".into() },
        Telegram::Error(SopasError(0x0C)),
    ] {
        for f in [Framing::ColaA, Framing::ColaB] {
            let p = t.payload(f).expect("encodes");
            assert_eq!(parse_telegram(f, &p), Ok(t.clone()), "{f}");
        }
    }
    let b = Telegram::ScanSubscription { enabled: true }.payload(Framing::ColaB).expect("enc");
    assert_eq!(b, b"sEA LMDscandata \x01");
}

fn drain(d: &mut dyn Deframer) -> Vec<Result<Vec<u8>, DeframeError>> {
    std::iter::from_fn(|| d.next_item()).map(|r| r.map(|b| b.to_vec())).collect()
}

#[test]
fn cola_a_deframer_handles_garbage_partials_and_oversize() {
    let mut d = ColaADeframer::new(32);
    d.push(b"xx\x02sEA LMDscan");
    assert_eq!(drain(&mut d), vec![Err(DeframeError::Garbage { framing: Framing::ColaA, bytes: 2 })]);
    d.push(b"data 1\x03\x02sFA 5\x03\x03junk\x02sRN");
    d.push(b" DeviceIdent\x03");
    assert_eq!(
        drain(&mut d),
        vec![
            Ok(b"sEA LMDscandata 1".to_vec()),
            Ok(b"sFA 5".to_vec()),
            Err(DeframeError::Garbage { framing: Framing::ColaA, bytes: 5 }),
            Ok(b"sRN DeviceIdent".to_vec()),
        ]
    );
    d.push(&[b'\x02'; 1]);
    d.push(&[b'A'; 40]);
    let items = drain(&mut d);
    assert_eq!(items[0], Err(DeframeError::Oversize { framing: Framing::ColaA, len: 33, max: 32 }));
    d.push(b"\x03\x02ok\x03");
    assert_eq!(
        drain(&mut d),
        vec![Err(DeframeError::Garbage { framing: Framing::ColaA, bytes: 8 }), Ok(b"ok".to_vec())]
    );
    // Unterminated telegram followed by a new one.
    d.push(b"\x02sSN LMD\x02sEA LMDscandata 0\x03");
    assert_eq!(
        drain(&mut d),
        vec![
            Err(DeframeError::Garbage { framing: Framing::ColaA, bytes: 8 }),
            Ok(b"sEA LMDscandata 0".to_vec())
        ]
    );
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.garbage_total(), 2 + 5 + 34 + 8 + 8);
}

#[test]
fn cola_b_deframer_handles_checksum_oversize_and_splits() {
    let good = frame_cola_b(b"sEA LMDscandata \x01").expect("frame");
    let mut bad = good.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xFF;
    let mut d = ColaBDeframer::new(64);
    d.push(b"\x00\x01\x05");
    assert_eq!(drain(&mut d), vec![]);
    d.push(&bad);
    d.push(&good[..5]);
    let items = drain(&mut d);
    assert_eq!(items[0], Err(DeframeError::Garbage { framing: Framing::ColaB, bytes: 3 }));
    assert!(matches!(items[1], Err(DeframeError::BadChecksum { len: 17, .. })));
    assert_eq!(items.len(), 2);
    d.push(&good[5..]);
    assert_eq!(drain(&mut d), vec![Ok(b"sEA LMDscandata \x01".to_vec())]);
    d.push(&[2, 2, 2, 2, 0, 0, 1, 0]);
    assert_eq!(
        drain(&mut d),
        vec![Err(DeframeError::Oversize { framing: Framing::ColaB, len: 256, max: 64 })]
    );
    d.push(&good);
    assert_eq!(
        drain(&mut d),
        vec![
            Err(DeframeError::Garbage { framing: Framing::ColaB, bytes: 7 }),
            Ok(b"sEA LMDscandata \x01".to_vec())
        ]
    );
}

#[test]
fn lms111_round_trips_through_both_framings() {
    let scan = scan_of(parse_a(&lms111_payload(541, 541)).expect("parses"));
    for f in [Framing::ColaA, Framing::ColaB] {
        let wire = encode_scan(&scan, ScanKind::Event, f).expect("encodes");
        let mut d = deframer(f, DEFAULT_MAX_PAYLOAD);
        d.push(&wire);
        let payload = d.next_item().expect("one item").expect("payload");
        assert!(d.next_item().is_none());
        assert_eq!(scan_of(parse_telegram(f, &payload).expect("parses")), scan, "{f}");
    }
    // The CoLa-A encoding reproduces the device's own text.
    let wire = encode_scan(&scan, ScanKind::Event, Framing::ColaA).expect("encodes");
    assert_eq!(&wire[1..wire.len() - 1], lms111_payload(541, 541).as_bytes());
    // CoLa-B: fixed layout, DIST1 at offset 64 of the frame (no encoders).
    let wire = encode_scan(&scan, ScanKind::Event, Framing::ColaB).expect("encodes");
    assert_eq!(&wire[8..24], b"sSN LMDscandata ");
    assert_eq!(&wire[64..69], b"DIST1");
    assert_eq!(&wire[77..81], &(-450_000i32).to_be_bytes());
    assert_eq!(wire.len(), 8 + 16 + 40 + 21 + 541 * 2 + 2 + 10 + 1);
}

#[test]
fn encode_rejects_unrepresentable_values() {
    let mut scan = Scan::default();
    scan.channels.push(Channel {
        name: "DIST".into(),
        scale: 1.0,
        offset: 0.0,
        start_angle_deg: 0.0,
        angular_step_deg: 0.5,
        values: vec![],
    });
    assert!(matches!(
        encode_scan(&scan, ScanKind::Event, Framing::ColaB),
        Err(EncodeError::InvalidString { .. })
    ));
    scan.channels[0].name = "DIST1".into();
    scan.channels[0].angular_step_deg = -1.0;
    assert!(matches!(
        encode_scan(&scan, ScanKind::Event, Framing::ColaA),
        Err(EncodeError::OutOfRange { .. })
    ));
    scan.channels[0].angular_step_deg = 0.5;
    scan.scan_frequency_hz = f64::NAN;
    assert!(matches!(
        encode_scan(&scan, ScanKind::Event, Framing::ColaA),
        Err(EncodeError::OutOfRange { .. })
    ));
    scan.scan_frequency_hz = 25.0;
    scan.comment = Some("a\x03b".into());
    assert!(matches!(
        encode_scan(&scan, ScanKind::Event, Framing::ColaA),
        Err(EncodeError::InvalidString { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Property tests

fn ascii(min: usize, max: usize, space: bool) -> impl Strategy<Value = String> {
    let lo = if space { 0x20u8 } else { 0x21u8 };
    prop::collection::vec(lo..0x7f, min..=max).prop_map(|b| b.into_iter().map(char::from).collect())
}

fn finite_f32() -> impl Strategy<Value = f32> {
    any::<u32>().prop_map(f32::from_bits).prop_filter("not nan", |f| !f.is_nan())
}

fn channel<T: Arbitrary + std::fmt::Debug + Clone + 'static>(
    max: usize,
) -> impl Strategy<Value = Channel<T>> {
    (
        prop::sample::select(vec!["DIST1", "DIST2", "RSSI1", "RSSI2", "ANGL1"]),
        finite_f32(),
        finite_f32(),
        any::<i32>(),
        any::<u16>(),
        prop::collection::vec(any::<T>(), 0..max),
    )
        .prop_map(|(name, scale, offset, start, step, values)| Channel {
            name: name.to_owned(),
            scale,
            offset,
            start_angle_deg: f64::from(start) / 10_000.0,
            angular_step_deg: f64::from(step) / 10_000.0,
            values,
        })
}

fn arb_scan(trailer: bool, eight_bit: bool) -> impl Strategy<Value = Scan> {
    let header = (
        any::<(u16, u16, u32, [u8; 2], u16, u16)>(),
        any::<(u32, u32, [u8; 2], [u8; 2], i16, u32, u32)>(),
        prop::collection::vec(any::<(u32, u16)>(), 0..3),
    );
    let chans = (
        prop::collection::vec(channel::<u16>(40), 0..3),
        prop::collection::vec(channel::<u8>(40), 0..if eight_bit { 3 } else { 1 }),
    );
    let position = (any::<bool>(), prop::array::uniform6(finite_f32()), any::<(u8, u8)>()).prop_map(
        |(on, f, (rotation_type, transmit_name))| {
            on.then_some(Position {
                x: f[0],
                y: f[1],
                z: f[2],
                rot_x: f[3],
                rot_y: f[4],
                rot_z: f[5],
                rotation_type,
                transmit_name,
            })
        },
    );
    let time = prop::option::of(any::<(u16, u8, u8, u8, u8, u8, u32)>().prop_map(
        |(year, month, day, hour, minute, second, microsecond)| DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            microsecond,
        },
    ));
    let event = prop::option::of(
        (ascii(4, 4, false), any::<(u32, u32, i32)>()).prop_map(|(kind, (p, t, a))| EventInfo {
            kind,
            encoder_position: p,
            time_us: t,
            angle: a,
        }),
    );
    let texts = (prop::option::of(ascii(0, 20, true)), prop::option::of(ascii(0, 20, true)));
    (header, chans, (position, texts, time, event), Just(trailer)).prop_map(
        move |((h, s, enc), (channels, channels_8bit), (position, (name, comment), time, event), trailer)| {
            let mut scan = Scan {
                version: h.0,
                device_number: h.1,
                serial_number: h.2,
                device_status: h.3,
                telegram_counter: h.4,
                scan_counter: h.5,
                device_time_us: s.0,
                transmission_time_us: s.1,
                digital_inputs: s.2,
                digital_outputs: s.3,
                layer_angle: s.4,
                scan_frequency_hz: f64::from(s.5) / 100.0,
                measurement_frequency_hz: f64::from(s.6) * 100.0,
                encoders: enc.into_iter().map(|(position, speed)| Encoder { position, speed }).collect(),
                channels,
                channels_8bit: if eight_bit { channels_8bit } else { vec![] },
                ..Scan::default()
            };
            if trailer {
                scan.position = position;
                scan.device_name = name;
                scan.comment = comment;
                scan.time = time;
                scan.event = event;
            }
            scan.sync_angles_from_channels();
            scan
        },
    )
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![Just(Framing::ColaA), Just(Framing::ColaB)]
}

/// Splits `data` at the given (arbitrary) cut points, pushing and draining after each chunk.
fn chunked(f: Framing, data: &[u8], cuts: &[usize], max: usize) -> Vec<Result<Vec<u8>, DeframeError>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let mut d = deframer(f, max);
    let mut out = vec![];
    let mut prev = 0;
    for c in cuts.into_iter().chain([data.len()]) {
        d.push(&data[prev..c]);
        out.extend(drain(d.as_mut()));
        prev = c;
    }
    out
}

fn telegram_stream() -> impl Strategy<Value = (Framing, Vec<Vec<u8>>, Vec<Vec<u8>>)> {
    (
        framing(),
        prop::collection::vec((arb_scan(true, true), prop::collection::vec(any::<u8>(), 0..12)), 1..4),
    )
        .prop_map(|(f, parts)| {
            let payloads: Vec<Vec<u8>> = parts
                .iter()
                .map(|(s, _)| {
                    Telegram::Scan { kind: ScanKind::Event, scan: Box::new(s.clone()) }
                        .payload(f)
                        .unwrap_or_default()
                })
                .collect();
            let garbage = parts.into_iter().map(|(_, g)| g).collect();
            (f, payloads, garbage)
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_scan_round_trips(scan in arb_scan(true, true), f in framing(), reply in any::<bool>()) {
        let kind = if reply { ScanKind::Reply } else { ScanKind::Event };
        let wire = encode_scan(&scan, kind, f).expect("arbitrary scans are encodable");
        let mut d = deframer(f, DEFAULT_MAX_PAYLOAD);
        d.push(&wire);
        let payload = d.next_item().expect("item").expect("payload");
        prop_assert!(d.next_item().is_none());
        prop_assert_eq!(parse_telegram(f, &payload), Ok(Telegram::Scan { kind, scan: Box::new(scan) }));
    }

    #[test]
    fn prop_deframers_and_parsers_never_panic(data in prop::collection::vec(any::<u8>(), 0..600),
                                              cuts in prop::collection::vec(any::<usize>(), 0..8),
                                              max in 0usize..300) {
        for f in [Framing::ColaA, Framing::ColaB] {
            let items = chunked(f, &data, &cuts, max);
            for p in items.into_iter().flatten() {
                prop_assert!(p.len() <= max);
                let _ = parse_telegram(f, &p);
                let _ = parse_request(f, &p);
            }
            let _ = parse_telegram(f, &data);
            let mut prefixed = b"sSN LMDscandata ".to_vec();
            prefixed.extend_from_slice(&data);
            let _ = parse_telegram(f, &prefixed);
        }
    }

    #[test]
    fn prop_cola_a_token_soup_never_panics(tokens in prop::collection::vec(
        prop_oneof![Just("0".to_owned()), Just("1".to_owned()), Just("FFFF".to_owned()), Just("-7".to_owned()),
                    Just("DIST1".to_owned()), Just("3F800000".to_owned()), "[0-9A-Fa-f+ -]{0,6}"], 0..80)) {
        let text = format!("sSN LMDscandata {}", tokens.join(" "));
        let _ = parse_telegram(Framing::ColaA, text.as_bytes());
    }

    #[test]
    fn prop_arbitrary_splits_yield_same_items((f, payloads, garbage) in telegram_stream(),
                                              cuts in prop::collection::vec(any::<usize>(), 0..12)) {
        let mut stream = vec![];
        for (p, g) in payloads.iter().zip(&garbage) {
            stream.extend_from_slice(g);
            stream.extend_from_slice(&frame(f, p).expect("frames"));
        }
        let whole = chunked(f, &stream, &[], DEFAULT_MAX_PAYLOAD);
        let split = chunked(f, &stream, &cuts, DEFAULT_MAX_PAYLOAD);
        prop_assert_eq!(&whole, &split);
        // With garbage free of frame-start bytes every telegram comes out intact, in order.
        let clean = garbage.iter().all(|g| !g.iter().any(|&b| b == STX || (f == Framing::ColaA && b == ETX)));
        if clean {
            let got: Vec<Vec<u8>> = split.into_iter().filter_map(Result::ok).collect();
            prop_assert_eq!(got, payloads);
        }
    }

    #[test]
    fn prop_truncated_telegrams_are_errors(scan in arb_scan(false, true), cut in any::<prop::sample::Index>(), f in framing()) {
        let scan = if f == Framing::ColaA { Scan { channels_8bit: vec![], ..scan } } else { scan };
        let t = Telegram::Scan { kind: ScanKind::Event, scan: Box::new(scan) };
        let payload = t.payload(f).expect("encodes");
        // Everything up to and including the 8-bit channel block is mandatory; the five
        // trailing flags (10 bytes in both framings when all are 0) may be absent.
        let mandatory = payload.len() - 10;
        let k = cut.index(mandatory);
        let res = parse_telegram(f, &payload[..k]);
        if k < "sSN LMDscandata".len() {
            // A cut inside the header leaves another (nameless or unknown) command, never a scan.
            prop_assert!(!matches!(res, Ok(Telegram::Scan { .. })), "cut at {} of {}", k, payload.len());
        } else {
            prop_assert!(res.is_err(), "cut at {} of {}", k, payload.len());
        }
        for k in mandatory..payload.len() {
            let res = parse_telegram(f, &payload[..k]);
            if f == Framing::ColaB && (k - mandatory) % 2 == 1 {
                // Half a flag is a truncation, not an absent flag.
                prop_assert!(res.is_err());
            } else {
                prop_assert_eq!(res, Ok(t.clone()));
            }
        }
    }

    #[test]
    fn prop_corruption_is_detected_or_harmless(scan in arb_scan(true, true), at in any::<prop::sample::Index>(),
                                               flip in 1u8..=255, f in framing()) {
        let wire = encode_scan(&scan, ScanKind::Event, f).expect("encodes");
        let mut bad = wire.to_vec();
        let i = at.index(bad.len());
        bad[i] ^= flip;
        let items = chunked(f, &bad, &[], DEFAULT_MAX_PAYLOAD);
        if f == Framing::ColaB && (8..wire.len()).contains(&i) {
            // Payload or checksum byte: the checksum catches every single-byte corruption.
            prop_assert!(matches!(items.as_slice(), [Err(DeframeError::BadChecksum { .. })]), "{:?}", items);
        }
        for p in items.into_iter().flatten() {
            let _ = parse_telegram(f, &p);
        }
    }
}

//! Protobuf ↔ domain conversion for the gateway, with the validation that names each
//! offending field; the only place besides the session loop that knows `lanewatch.v1` types.

use chrono::{DateTime, SubsecRound, Utc};
use lanewatch_proto::v1 as pb;
use uuid::Uuid;

use crate::config::Limits;
use crate::domain::{
    AgentHello, AgentPulse, BufferDetail, CameraDetail, CaptureMeta, ComponentDetail, ComponentState,
    ComponentStatus, DeletionReason, DeletionReceipt, DetectorDetail, Health, ImageContentType, LidarDetail,
    LinkState, OccupancyStatus, SectionCount, TriggerDetail, UplinkDetail, ValueClass, VehicleClass,
    VisionDetail,
};
use crate::error::Error;

/// A validated CaptureStart.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRequest {
    pub meta: CaptureMeta,
    pub content_type: ImageContentType,
    pub size_bytes: u64,
    pub sha256: [u8; 32],
    /// The agent's upload span (`traceparent`), when it traces; a malformed one is ignored later.
    pub traceparent: Option<String>,
}

/// Site ids become part of blob keys, so they are plain path segments.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub fn hello(h: &pb::Hello) -> Result<AgentHello, Error> {
    if h.agent_id.trim().is_empty() {
        return Err(Error::invalid("hello.agent_id must not be empty"));
    }
    if h.site_id.trim().is_empty() {
        return Err(Error::invalid("hello.site_id must not be empty"));
    }
    if !valid_segment(&h.site_id) {
        return Err(Error::invalid(format!(
            "hello.site_id {:?} may only contain ascii letters, digits, '-', '_' and '.'",
            h.site_id
        )));
    }
    Ok(AgentHello {
        agent_id: h.agent_id.clone(),
        site_id: h.site_id.clone(),
        software_version: h.software_version.clone(),
        config_version: h.config_version,
        wants_heartbeat_acks: h.wants_heartbeat_acks,
        local_config: h.local_config.clone(),
    })
}

/// A time as protobuf carries it.
pub fn to_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn pulse(h: &pb::Heartbeat) -> AgentPulse {
    let health = match pb::Health::try_from(h.health) {
        Ok(pb::Health::Ok) => Health::Ok,
        Ok(pb::Health::Degraded) => Health::Degraded,
        Ok(pb::Health::Failing) => Health::Failing,
        Ok(pb::Health::Unspecified) | Err(_) => Health::Unknown,
    };
    AgentPulse { health, buffered_captures: h.buffered_captures }
}

fn timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(t.nanos).ok()?;
    DateTime::from_timestamp(t.seconds, nanos).map(|d| d.trunc_subsecs(6))
}

pub fn capture_start(
    s: &pb::CaptureStart,
    session_site: &str,
    limits: &Limits,
) -> Result<StartRequest, Error> {
    let m = s.meta.as_ref().ok_or_else(|| Error::invalid("capture_start.meta is missing"))?;
    let id = Uuid::parse_str(&m.capture_id).map_err(|_| {
        Error::invalid(format!("capture_start.meta.capture_id {:?} is not a uuid", m.capture_id))
    })?;
    if m.site_id != session_site {
        return Err(Error::invalid(format!(
            "capture_start.meta.site_id {:?} does not match the session's site {session_site:?}",
            m.site_id
        )));
    }
    let captured_at = m
        .captured_at
        .as_ref()
        .ok_or_else(|| Error::invalid("capture_start.meta.captured_at is missing"))
        .and_then(|t| {
            timestamp(t).ok_or_else(|| Error::invalid("capture_start.meta.captured_at is out of range"))
        })?;
    let detected_at = match &m.detected_at {
        None => None,
        Some(t) => Some(
            timestamp(t).ok_or_else(|| Error::invalid("capture_start.meta.detected_at is out of range"))?,
        ),
    };
    if !(1..=limits.max_image_bytes).contains(&s.image_size_bytes) {
        return Err(Error::invalid(format!(
            "capture_start.image_size_bytes {} is outside 1..={}",
            s.image_size_bytes, limits.max_image_bytes
        )));
    }
    let sha256: [u8; 32] = s.image_sha256.as_slice().try_into().map_err(|_| {
        Error::invalid(format!("capture_start.image_sha256 has {} bytes, expected 32", s.image_sha256.len()))
    })?;
    let content_type = ImageContentType::parse(&s.image_content_type).ok_or_else(|| {
        Error::invalid(format!(
            "capture_start.image_content_type {:?} is not image/jpeg or image/png",
            s.image_content_type
        ))
    })?;
    let vehicle_class = match pb::VehicleClass::try_from(m.vehicle_class) {
        Ok(pb::VehicleClass::Motorcycle) => VehicleClass::Motorcycle,
        Ok(pb::VehicleClass::Car) => VehicleClass::Car,
        Ok(pb::VehicleClass::Van) => VehicleClass::Van,
        Ok(pb::VehicleClass::Truck) => VehicleClass::Truck,
        Ok(pb::VehicleClass::Bus) => VehicleClass::Bus,
        Ok(pb::VehicleClass::Unspecified) | Err(_) => VehicleClass::Unknown,
    };
    let occupancy = m.occupancy.clone().unwrap_or_default();
    let occupancy_status = match pb::OccupancyStatus::try_from(occupancy.status) {
        Ok(pb::OccupancyStatus::Counted) => OccupancyStatus::Counted,
        Ok(pb::OccupancyStatus::Unreadable) => OccupancyStatus::Unreadable,
        Ok(pb::OccupancyStatus::Unspecified) | Err(_) => OccupancyStatus::Unknown,
    };
    let occupants = (occupancy_status == OccupancyStatus::Counted).then_some(occupancy.occupants);
    let finite = |field: &str, v: f32| {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(Error::invalid(format!("capture_start.meta.{field} is not finite")))
        }
    };
    let sections = occupancy
        .sections
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            if sc.confidence.is_finite() && (0.0..=1.0).contains(&sc.confidence) {
                Ok(SectionCount {
                    section: sc.section.clone(),
                    occupants: sc.occupants,
                    confidence: sc.confidence,
                })
            } else {
                Err(Error::invalid(format!(
                    "capture_start.meta.occupancy.sections[{i}].confidence {} is outside 0..=1",
                    sc.confidence
                )))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    // agents that predate the capture-level confidence: the weakest section's
    let confidence = match occupancy.confidence {
        Some(c) if c.is_finite() && (0.0..=1.0).contains(&c) => Some(c),
        Some(c) => {
            return Err(Error::invalid(format!(
                "capture_start.meta.occupancy.confidence {c} is outside 0..=1"
            )));
        }
        None => sections.iter().map(|sc| sc.confidence).reduce(f32::min),
    };
    let model_version = (!occupancy.model_version.is_empty()).then(|| occupancy.model_version.clone());
    Ok(StartRequest {
        meta: CaptureMeta {
            id,
            site_id: m.site_id.clone(),
            lane: m.lane,
            captured_at,
            detected_at,
            vehicle_class,
            occupancy_status,
            occupants,
            speed_kmh: m.speed_kmh.map(|v| finite("speed_kmh", v)).transpose()?,
            height_m: finite("height_m", m.height_m)?,
            width_m: finite("width_m", m.width_m)?,
            camera_id: m.camera_id.clone(),
            config_version: m.config_version,
            sections,
            confidence,
            model_version,
            test: m.test,
        },
        content_type,
        size_bytes: s.image_size_bytes,
        sha256,
        traceparent: (!m.traceparent.is_empty()).then(|| m.traceparent.clone()),
    })
}

/// A validated DeletionReceipt of the session's agent, received at `now`.
pub fn deletion_receipt(
    r: &pb::DeletionReceipt,
    hello: &AgentHello,
    now: DateTime<Utc>,
) -> Result<DeletionReceipt, Error> {
    let receipt_id = Uuid::parse_str(&r.receipt_id).map_err(|_| {
        Error::invalid(format!("deletion_receipt.receipt_id {:?} is not a uuid", r.receipt_id))
    })?;
    let capture_id = if r.capture_id.is_empty() {
        None
    } else {
        Some(Uuid::parse_str(&r.capture_id).map_err(|_| {
            Error::invalid(format!("deletion_receipt.capture_id {:?} is not a uuid", r.capture_id))
        })?)
    };
    let captured_at = match &r.captured_at {
        None => None,
        Some(t) => {
            Some(timestamp(t).ok_or_else(|| Error::invalid("deletion_receipt.captured_at is out of range"))?)
        }
    };
    let deleted_at = r
        .deleted_at
        .as_ref()
        .ok_or_else(|| Error::invalid("deletion_receipt.deleted_at is missing"))
        .and_then(|t| {
            timestamp(t).ok_or_else(|| Error::invalid("deletion_receipt.deleted_at is out of range"))
        })?;
    let value_class = match pb::CaptureValueClass::try_from(r.value_class) {
        Ok(pb::CaptureValueClass::Statistics) => ValueClass::Statistics,
        Ok(pb::CaptureValueClass::Compliant) => ValueClass::Compliant,
        Ok(pb::CaptureValueClass::ViolationCandidate) => ValueClass::ViolationCandidate,
        Ok(pb::CaptureValueClass::Unspecified) | Err(_) => ValueClass::Unknown,
    };
    let reason = match pb::DeletionReason::try_from(r.reason) {
        Ok(pb::DeletionReason::EvictedFull) => DeletionReason::EvictedFull,
        Ok(pb::DeletionReason::Expired) => DeletionReason::Expired,
        Ok(pb::DeletionReason::Damaged) => DeletionReason::Damaged,
        Ok(pb::DeletionReason::Unspecified) | Err(_) => DeletionReason::Unknown,
    };
    Ok(DeletionReceipt {
        receipt_id,
        capture_id,
        agent_id: hello.agent_id.clone(),
        site_id: hello.site_id.clone(),
        value_class,
        captured_at,
        deleted_at,
        reason,
        bytes: r.bytes,
        received_at: now,
    })
}

pub fn component(c: pb::ComponentState) -> ComponentState {
    let status = match pb::ComponentStatus::try_from(c.status) {
        Ok(pb::ComponentStatus::Starting) => ComponentStatus::Starting,
        Ok(pb::ComponentStatus::Running) => ComponentStatus::Running,
        Ok(pb::ComponentStatus::BackingOff) => ComponentStatus::BackingOff,
        Ok(pb::ComponentStatus::Stopped) => ComponentStatus::Stopped,
        Ok(pb::ComponentStatus::Failed) => ComponentStatus::Failed,
        Ok(pb::ComponentStatus::Paused) => ComponentStatus::Paused,
        Ok(pb::ComponentStatus::Unspecified) | Err(_) => ComponentStatus::Unknown,
    };
    ComponentState {
        name: c.name,
        status,
        restarts: c.restarts,
        last_failure: (!c.last_failure.is_empty()).then_some(c.last_failure),
        last_failure_at: c.last_failure_at.as_ref().and_then(timestamp),
        backoff_ms: c.backoff_ms,
        processed: c.processed,
        detail_json: c.detail_json,
        inbox: (c.inbox_capacity > 0).then_some((c.inbox_depth, c.inbox_capacity)),
        events: c
            .events
            .into_iter()
            .filter_map(|e| {
                let at = e.at.as_ref().and_then(timestamp)?;
                Some(crate::domain::ComponentEvent { at, kind: e.kind, message: e.message })
            })
            .collect(),
        failed: c.failed,
        waiting_on: (!c.waiting_on.is_empty()).then_some(c.waiting_on),
        memory_bytes: c.has_memory_bytes.then_some(c.memory_bytes),
        detail: c.detail.and_then(|d| d.kind).map(component_detail),
        load: c.rates_1m.map(|one_minute| {
            let window = |r: pb::ComponentRates| crate::domain::RateWindow {
                processed_per_sec: r.processed_per_sec,
                failed_per_sec: r.failed_per_sec,
                busy_ratio: r.busy_ratio,
            };
            crate::domain::ComponentLoad {
                busy_seconds: c.busy_seconds,
                one_minute: window(one_minute),
                five_minutes: c.rates_5m.map(window).unwrap_or_default(),
                fifteen_minutes: c.rates_15m.map(window).unwrap_or_default(),
            }
        }),
    }
}

fn component_detail(kind: pb::component_detail::Kind) -> ComponentDetail {
    use pb::component_detail::Kind;
    let text = |s: String| (!s.is_empty()).then_some(s);
    let buffer = |b: pb::BufferDetail| BufferDetail {
        captures: b.captures,
        bytes: b.bytes,
        max_bytes: b.max_bytes,
        appended: b.appended,
        rejected: b.rejected,
        evicted: b.evicted,
        expired: b.expired,
        damaged: b.damaged,
        receipts_pending: b.receipts_pending,
    };
    match kind {
        Kind::Lidar(l) => ComponentDetail::Lidar(LidarDetail {
            link: match pb::LidarLink::try_from(l.link) {
                Ok(pb::LidarLink::Connecting) => LinkState::Connecting,
                Ok(pb::LidarLink::Connected) => LinkState::Connected,
                Ok(pb::LidarLink::Finished) => LinkState::Finished,
                Ok(pb::LidarLink::Unspecified) | Err(_) => LinkState::Unknown,
            },
            source: l.source,
            origin: l.origin,
            framing: l.framing,
            degraded: l.degraded,
            secs_since_last_scan: l.secs_since_last_scan,
            last_error: text(l.last_error),
            telegrams_ok: l.telegrams_ok,
            telegrams_malformed: l.telegrams_malformed,
            garbage_bytes: l.garbage_bytes,
            out_of_order: l.out_of_order,
            scans_missed: l.scans_missed,
            reconnects: l.reconnects,
            connect_failures: l.connect_failures,
            sopas_errors: l.sopas_errors,
        }),
        Kind::Detector(d) => ComponentDetail::Detector(DetectorDetail {
            learnt: d.learnt,
            degraded: d.degraded,
            degraded_scans: d.degraded_scans,
            entries: d.entries,
            exits: d.exits,
            speeds_measured: d.speeds_measured,
        }),
        Kind::Trigger(t) => {
            let mut triggers_per_camera: Vec<(String, u64)> = t.triggers_per_camera.into_iter().collect();
            triggers_per_camera.sort();
            ComponentDetail::Trigger(TriggerDetail { triggers_per_camera })
        }
        Kind::Camera(c) => ComponentDetail::Camera(CameraDetail {
            link: match pb::CameraLink::try_from(c.link) {
                Ok(pb::CameraLink::Opening) => LinkState::Opening,
                Ok(pb::CameraLink::Streaming) => LinkState::Streaming,
                Ok(pb::CameraLink::Stalled) => LinkState::Stalled,
                Ok(pb::CameraLink::Unspecified) | Err(_) => LinkState::Unknown,
            },
            frames: c.frames,
            pending: c.pending,
            stalls: c.stalls,
            stall_after_ms: c.stall_after_ms,
            last_frame_at: c.last_frame_at.as_ref().and_then(timestamp),
            source: text(c.source),
            dropped_frames: c.dropped_frames,
            test_captures: c.test_captures,
        }),
        Kind::Vision(v) => ComponentDetail::Vision(VisionDetail {
            frames: v.frames,
            faces: v.faces,
            released: v.released,
            quarantined: v.quarantined,
            quarantine_held: v.quarantine_held,
            last_quarantine_reason: text(v.last_quarantine_reason),
            counted: v.counted,
            unreadable: v.unreadable,
            violation_candidates: v.violation_candidates,
            model: v.model,
            sessions: v.sessions,
        }),
        Kind::Buffer(b) => ComponentDetail::Buffer(buffer(b)),
        Kind::Uplink(u) => ComponentDetail::Uplink(UplinkDetail {
            link: match pb::UplinkLink::try_from(u.link) {
                Ok(pb::UplinkLink::Connected) => LinkState::Connected,
                Ok(pb::UplinkLink::Disconnected) => LinkState::Disconnected,
                Ok(pb::UplinkLink::Refused) => LinkState::Refused,
                Ok(pb::UplinkLink::Unspecified) | Err(_) => LinkState::Unknown,
            },
            refused: text(u.refused),
            session_id: u.session_id,
            acked: u.acked,
            buffer: u.buffer.map(buffer).unwrap_or_default(),
        }),
    }
}

pub fn process(p: pb::ProcessState) -> crate::domain::ProcessState {
    crate::domain::ProcessState {
        cpu_seconds: p.cpu_seconds,
        rss_bytes: p.rss_bytes,
        threads: p.threads,
        open_fds: p.open_fds,
        uptime_secs: p.uptime_secs,
        buffer_volume_free_bytes: p.buffer_volume_free_bytes,
        buffer_volume_total_bytes: p.buffer_volume_total_bytes,
        software_version: p.software_version,
        config_version: p.config_version,
        model_version: p.model_version,
        clock: p.clock.and_then(|c| {
            Some(crate::domain::ClockOffset {
                offset_ms: c.offset_ms,
                round_trip_ms: c.round_trip_ms,
                measured_at: timestamp(c.measured_at.as_ref()?)?,
            })
        }),
    }
}

/// A log query as the `LogsRequest` with `request_id`.
pub fn logs_request(request_id: String, q: &crate::domain::LogQuery) -> pb::LogsRequest {
    pb::LogsRequest {
        request_id,
        level: q.level.clone().unwrap_or_default(),
        target: q.target.clone().unwrap_or_default(),
        since: q.since.map(to_timestamp),
        grep: q.grep.clone().unwrap_or_default(),
        limit: q.limit,
        max_bytes: q.max_bytes,
        after_seq: q.after_seq.unwrap_or(0),
        has_after_seq: q.after_seq.is_some(),
        wait_ms: q.wait_ms,
    }
}

/// An agent's log answer: its lines, or why it could not answer.
pub fn logs_response(r: pb::LogsResponse) -> Result<crate::domain::LogPage, String> {
    if !r.error.is_empty() {
        return Err(r.error);
    }
    let lines = r
        .lines
        .into_iter()
        .map(|l| crate::domain::LogLine {
            seq: l.seq,
            at: l.at.as_ref().and_then(timestamp).unwrap_or_default(),
            level: l.level,
            target: l.target,
            message: l.message,
            fields: l.fields.into_iter().map(|f| (f.name, f.value)).collect(),
        })
        .collect();
    Ok(crate::domain::LogPage { lines, truncated: r.truncated, last_seq: r.last_seq })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn start() -> pb::CaptureStart {
        pb::CaptureStart {
            meta: Some(pb::CaptureMeta {
                capture_id: Uuid::now_v7().to_string(),
                site_id: "a1".into(),
                lane: 2,
                captured_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 123_456_789 }),
                vehicle_class: 99,
                occupancy: Some(pb::Occupancy { status: 1, occupants: 3, ..Default::default() }),
                speed_kmh: Some(101.5),
                height_m: 1.4,
                width_m: 1.8,
                camera_id: "cam0".into(),
                detected_at: None,
                config_version: 4,
                test: false,
                traceparent: String::new(),
            }),
            image_size_bytes: 3,
            image_sha256: sha2::Sha256::digest(b"abc").to_vec(),
            image_content_type: "image/jpeg".into(),
        }
    }

    #[test]
    fn unknown_enum_numbers_are_stored_as_unknown() {
        let r = capture_start(&start(), "a1", &Limits::default()).unwrap();
        assert_eq!(r.meta.vehicle_class, VehicleClass::Unknown);
        assert_eq!(r.meta.occupants, Some(3));
        assert_eq!(r.meta.captured_at.timestamp_subsec_nanos(), 123_456_000);
        assert_eq!((r.meta.confidence, r.meta.model_version), (None, None), "an older agent's capture");
    }

    #[test]
    fn occupancy_confidence_and_model_version_are_stored() {
        let mut s = start();
        let o = s.meta.as_mut().unwrap().occupancy.as_mut().unwrap();
        o.sections = vec![pb::SectionCount { section: "driver".into(), occupants: 1, confidence: 0.9 }];
        o.confidence = Some(0.6);
        o.model_version = "centerface-dyn.onnx@8461abe8aed5".into();
        let r = capture_start(&s, "a1", &Limits::default()).unwrap();
        assert_eq!(r.meta.confidence, Some(0.6));
        assert_eq!(r.meta.model_version.as_deref(), Some("centerface-dyn.onnx@8461abe8aed5"));
        s.meta.as_mut().unwrap().occupancy.as_mut().unwrap().confidence = Some(1.5);
        let e = capture_start(&s, "a1", &Limits::default()).unwrap_err();
        assert!(e.message.contains("occupancy.confidence"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        type Mutation = Box<dyn Fn(&mut pb::CaptureStart)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("capture_id", Box::new(|s| s.meta.as_mut().unwrap().capture_id = "x".into())),
            ("site_id", Box::new(|s| s.meta.as_mut().unwrap().site_id = "b2".into())),
            ("captured_at", Box::new(|s| s.meta.as_mut().unwrap().captured_at = None)),
            ("image_size_bytes", Box::new(|s| s.image_size_bytes = 0)),
            ("image_size_bytes", Box::new(|s| s.image_size_bytes = u64::MAX)),
            ("image_sha256", Box::new(|s| s.image_sha256 = vec![1, 2])),
            ("image_content_type", Box::new(|s| s.image_content_type = "image/gif".into())),
            ("meta", Box::new(|s| s.meta = None)),
        ];
        for (field, mutate) in cases {
            let mut s = start();
            mutate(&mut s);
            let e = capture_start(&s, "a1", &Limits::default()).unwrap_err();
            assert!(e.message.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn hello_requires_ids() {
        let mut h = pb::Hello {
            protocol_version: 1,
            agent_id: "a".into(),
            site_id: "s".into(),
            ..Default::default()
        };
        assert!(hello(&h).is_ok());
        h.site_id.clear();
        assert!(hello(&h).unwrap_err().message.contains("site_id"));
        h.agent_id.clear();
        assert!(hello(&h).unwrap_err().message.contains("agent_id"));
    }
}

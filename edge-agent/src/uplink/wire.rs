//! Conversions between domain types and `lanewatch.v1` protobuf messages, and image chunking.

use lanewatch_proto::v1 as pb;
use sha2::{Digest, Sha256};

pub use crate::domain::ClockOffset;
use crate::domain::{Capture, DeletionReason, DeletionReceipt, OccupancyStatus, ValueClass, VehicleClass};
use crate::logs::{LogPage, LogQuery};
use crate::state::{BufferStats, CameraLink, ComponentState, LinkState, UplinkLink};
use crate::supervisor::{ComponentSnapshot, ComponentStatus};

pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn vehicle_class(class: VehicleClass) -> pb::VehicleClass {
    match class {
        VehicleClass::Unknown => pb::VehicleClass::Unspecified,
        VehicleClass::Motorcycle => pb::VehicleClass::Motorcycle,
        VehicleClass::Car => pb::VehicleClass::Car,
        VehicleClass::Van => pb::VehicleClass::Van,
        VehicleClass::Truck => pb::VehicleClass::Truck,
        VehicleClass::Bus => pb::VehicleClass::Bus,
    }
}

fn occupancy(status: &OccupancyStatus) -> pb::Occupancy {
    match status {
        OccupancyStatus::Unknown => pb::Occupancy {
            status: pb::OccupancyStatus::Unspecified as i32,
            occupants: 0,
            sections: vec![],
            confidence: None,
            model_version: String::new(),
        },
        OccupancyStatus::Unreadable { model } => pb::Occupancy {
            status: pb::OccupancyStatus::Unreadable as i32,
            occupants: 0,
            sections: vec![],
            confidence: None,
            model_version: model.clone(),
        },
        OccupancyStatus::Counted { occupants, sections, confidence, model } => pb::Occupancy {
            status: pb::OccupancyStatus::Counted as i32,
            occupants: *occupants,
            sections: sections
                .iter()
                .map(|s| pb::SectionCount {
                    section: s.section.clone(),
                    occupants: s.occupants,
                    confidence: s.confidence,
                })
                .collect(),
            confidence: Some(*confidence),
            model_version: model.clone(),
        },
    }
}

/// The `CaptureStart` announcing a capture: metadata, exact size, SHA-256 and content type, and
/// the trace context of the upload's span when it is traced.
pub fn capture_start(capture: &Capture, traceparent: Option<&str>) -> pb::CaptureStart {
    let m = &capture.meta;
    pb::CaptureStart {
        meta: Some(pb::CaptureMeta {
            capture_id: m.capture_id.to_string(),
            site_id: m.site_id.clone(),
            lane: m.lane,
            captured_at: Some(timestamp(m.captured_at)),
            vehicle_class: vehicle_class(m.class) as i32,
            occupancy: Some(occupancy(&m.occupancy)),
            speed_kmh: m.speed_kmh,
            height_m: m.height_m,
            width_m: m.width_m,
            camera_id: m.camera_id.clone(),
            detected_at: Some(timestamp(m.detected_at)),
            config_version: m.config_version,
            test: m.test,
            traceparent: traceparent.unwrap_or_default().to_owned(),
        }),
        image_size_bytes: capture.image.len() as u64,
        image_sha256: Sha256::digest(&capture.image).to_vec(),
        image_content_type: m.content_type.clone(),
    }
}

fn value_class(class: Option<ValueClass>) -> pb::CaptureValueClass {
    match class {
        None => pb::CaptureValueClass::Unspecified,
        Some(ValueClass::Statistics) => pb::CaptureValueClass::Statistics,
        Some(ValueClass::Compliant) => pb::CaptureValueClass::Compliant,
        Some(ValueClass::ViolationCandidate) => pb::CaptureValueClass::ViolationCandidate,
    }
}

pub fn deletion_receipt(r: &DeletionReceipt) -> pb::DeletionReceipt {
    let reason = match r.reason {
        DeletionReason::EvictedFull => pb::DeletionReason::EvictedFull,
        DeletionReason::Expired => pb::DeletionReason::Expired,
        DeletionReason::Damaged => pb::DeletionReason::Damaged,
    };
    pb::DeletionReceipt {
        receipt_id: r.receipt_id.to_string(),
        capture_id: r.capture_id.map(|id| id.to_string()).unwrap_or_default(),
        value_class: value_class(r.class) as i32,
        captured_at: r.captured_at.map(timestamp),
        deleted_at: Some(timestamp(r.deleted_at)),
        reason: reason as i32,
        bytes: r.bytes,
    }
}

/// Splits an image into chunks of at most `max_chunk_bytes`, with contiguous offsets from 0.
/// An empty image yields one empty chunk so the receiver still sees the end of the upload.
/// Chunks are slices of the image's buffer, not copies.
pub fn chunks(capture_id: &str, image: &bytes::Bytes, max_chunk_bytes: usize) -> Vec<pb::CaptureChunk> {
    let size = max_chunk_bytes.max(1);
    if image.is_empty() {
        return vec![pb::CaptureChunk {
            capture_id: capture_id.to_owned(),
            offset: 0,
            data: Default::default(),
        }];
    }
    (0..image.len())
        .step_by(size)
        .map(|offset| pb::CaptureChunk {
            capture_id: capture_id.to_owned(),
            offset: offset as u64,
            data: image.slice(offset..(offset + size).min(image.len())),
        })
        .collect()
}

pub fn process_state(p: &crate::process::ProcessReport) -> pb::ProcessState {
    pb::ProcessState {
        cpu_seconds: p.cpu_seconds,
        rss_bytes: p.rss_bytes,
        threads: p.threads,
        open_fds: p.open_fds,
        uptime_secs: p.uptime_secs,
        buffer_volume_free_bytes: p.buffer_volume_free_bytes,
        buffer_volume_total_bytes: p.buffer_volume_total_bytes,
        software_version: p.software_version.clone(),
        config_version: p.config_version,
        model_version: p.model_version.clone(),
        clock: None,
    }
}

pub fn component_state(s: &ComponentSnapshot) -> pb::ComponentState {
    let status = match s.status {
        ComponentStatus::Starting => pb::ComponentStatus::Starting,
        ComponentStatus::Running => pb::ComponentStatus::Running,
        ComponentStatus::BackingOff => pb::ComponentStatus::BackingOff,
        ComponentStatus::Stopped => pb::ComponentStatus::Stopped,
        ComponentStatus::Failed => pb::ComponentStatus::Failed,
        ComponentStatus::Paused => pb::ComponentStatus::Paused,
    };
    pb::ComponentState {
        name: s.name.clone(),
        status: status as i32,
        restarts: s.restarts,
        last_failure: s.last_failure.clone().unwrap_or_default(),
        last_failure_at: s.last_failure_at.map(timestamp),
        backoff_ms: s.backoff_ms,
        processed: s.processed,
        detail_json: serde_json::to_string(&s.state).unwrap_or_default(),
        inbox_depth: s.inbox.map_or(0, |i| u32::try_from(i.depth).unwrap_or(u32::MAX)),
        inbox_capacity: s.inbox.map_or(0, |i| u32::try_from(i.capacity).unwrap_or(u32::MAX)),
        events: Vec::new(),
        failed: s.failed,
        busy_seconds: s.rates.busy_seconds,
        rates_1m: Some(rates(&s.rates.m1)),
        rates_5m: Some(rates(&s.rates.m5)),
        rates_15m: Some(rates(&s.rates.m15)),
        waiting_on: s.waiting_on.as_str().to_owned(),
        memory_bytes: s.memory_bytes.unwrap_or(0),
        has_memory_bytes: s.memory_bytes.is_some(),
        detail: None,
    }
}

fn rates(w: &crate::load::Window) -> pb::ComponentRates {
    pb::ComponentRates {
        processed_per_sec: w.processed_per_sec,
        failed_per_sec: w.failed_per_sec,
        busy_ratio: w.busy_ratio,
    }
}

/// [`component_state`] with the flight recorder, for introspection answers (heartbeats stay
/// compact without it).
pub fn component_state_with_events(s: &ComponentSnapshot) -> pb::ComponentState {
    let events = s
        .events
        .iter()
        .map(|e| pb::ComponentEvent {
            at: Some(timestamp(e.at)),
            kind: e.kind.to_owned(),
            message: e.message.clone(),
        })
        .collect();
    pb::ComponentState { events, detail: detail(&s.state), ..component_state(s) }
}

/// A component's typed state on the wire; `None` before it published one.
pub fn detail(state: &ComponentState) -> Option<pb::ComponentDetail> {
    use pb::component_detail::Kind;
    let kind = match state {
        ComponentState::Empty => return None,
        ComponentState::Lidar(l) => Kind::Lidar(pb::LidarDetail {
            source: l.source.clone(),
            origin: l.origin.clone(),
            framing: l.framing.clone(),
            link: match l.state {
                LinkState::Connecting => pb::LidarLink::Connecting,
                LinkState::Connected => pb::LidarLink::Connected,
                LinkState::Finished => pb::LidarLink::Finished,
            } as i32,
            degraded: l.degraded,
            secs_since_last_scan: l.secs_since_last_scan,
            last_error: l.last_error.clone().unwrap_or_default(),
            telegrams_ok: l.counters.telegrams_ok,
            telegrams_malformed: l.counters.telegrams_malformed,
            garbage_bytes: l.counters.garbage_bytes,
            out_of_order: l.counters.out_of_order,
            scans_missed: l.counters.scans_missed,
            reconnects: l.counters.reconnects,
            connect_failures: l.counters.connect_failures,
            sopas_errors: l.counters.sopas_errors,
        }),
        ComponentState::Detector(d) => Kind::Detector(pb::DetectorDetail {
            learnt: d.learnt,
            degraded: d.degraded,
            degraded_scans: d.degraded_scans,
            entries: d.entries,
            exits: d.exits,
            speeds_measured: d.speeds_measured,
        }),
        ComponentState::Trigger(t) => Kind::Trigger(pb::TriggerDetail {
            triggers_per_camera: t.triggers_per_camera.clone().into_iter().collect(),
        }),
        ComponentState::Camera(c) => Kind::Camera(pb::CameraDetail {
            link: match c.state {
                CameraLink::Opening => pb::CameraLink::Opening,
                CameraLink::Streaming => pb::CameraLink::Streaming,
                CameraLink::Stalled => pb::CameraLink::Stalled,
            } as i32,
            frames: c.frames,
            pending: c.pending,
            stalls: c.stalls,
            stall_after_ms: c.stall_after_ms,
            last_frame_at: c.last_frame_at.map(timestamp),
            source: c.source.as_ref().map(|s| s.source.clone()).unwrap_or_default(),
            dropped_frames: c.source.as_ref().map_or(0, |s| s.dropped_frames),
            test_captures: c.test_captures,
        }),
        ComponentState::Vision(v) => Kind::Vision(pb::VisionDetail {
            frames: v.frames,
            faces: v.faces,
            released: v.released,
            quarantined: v.quarantined,
            quarantine_held: v.quarantine_held,
            last_quarantine_reason: v.last_quarantine_reason.clone().unwrap_or_default(),
            counted: v.counted,
            unreadable: v.unreadable,
            violation_candidates: v.violation_candidates,
            model: v.model.clone(),
            sessions: v.sessions,
        }),
        ComponentState::Buffer(b) => Kind::Buffer(buffer_detail(b)),
        ComponentState::Uplink(u) => Kind::Uplink(pb::UplinkDetail {
            link: match u.state {
                UplinkLink::Connected => pb::UplinkLink::Connected,
                UplinkLink::Disconnected => pb::UplinkLink::Disconnected,
                UplinkLink::Refused => pb::UplinkLink::Refused,
            } as i32,
            refused: u.refused.clone().unwrap_or_default(),
            session_id: u.session_id.clone(),
            acked: u.acked,
            buffer: Some(buffer_detail(&u.buffer)),
        }),
    };
    Some(pb::ComponentDetail { kind: Some(kind) })
}

fn buffer_detail(b: &BufferStats) -> pb::BufferDetail {
    pb::BufferDetail {
        captures: b.captures,
        bytes: b.bytes,
        max_bytes: b.max_bytes,
        appended: b.appended,
        rejected: b.rejected,
        evicted: b.evicted,
        expired: b.expired,
        damaged: b.damaged,
        receipts_pending: b.receipts_pending,
    }
}

/// The offset an ack received at `now` (agent clock) shows, as NTP computes it; `None` for an
/// ack without its times.
pub fn clock_offset(ack: &pb::HeartbeatAck, now: chrono::DateTime<chrono::Utc>) -> Option<ClockOffset> {
    let time = |t: &Option<prost_types::Timestamp>| {
        let t = t.as_ref()?;
        chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
    };
    let (sent, received, replied) =
        (time(&ack.heartbeat_sent_at)?, time(&ack.received_at)?, time(&ack.replied_at)?);
    let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0;
    Some(ClockOffset {
        offset_ms: (ms(sent - received) + ms(now - replied)) / 2.0,
        round_trip_ms: ms(now - sent) - ms(replied - received),
        measured_at: now,
    })
}

/// The longest a `LogsRequest` may wait for a matching line.
pub const MAX_LOGS_WAIT_MS: u32 = 3000;

/// A `LogsRequest` as a ring query and how long to wait for a line; a bad level is an error.
pub fn log_query(req: &pb::LogsRequest) -> Result<(LogQuery, std::time::Duration), String> {
    let level = match req.level.as_str() {
        "" => None,
        text => Some(crate::logs::parse_level(text)?),
    };
    let since = req
        .since
        .as_ref()
        .map(|t| {
            chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
                .ok_or_else(|| format!("since {}s is out of range", t.seconds))
        })
        .transpose()?;
    let query = LogQuery {
        level,
        target: Some(req.target.clone()).filter(|t| !t.is_empty()),
        since,
        grep: Some(req.grep.clone()).filter(|g| !g.is_empty()),
        after_seq: req.has_after_seq.then_some(req.after_seq),
        limit: req.limit as usize,
        max_bytes: req.max_bytes as usize,
    };
    let wait = std::time::Duration::from_millis(u64::from(req.wait_ms.min(MAX_LOGS_WAIT_MS)));
    Ok((query, wait))
}

pub fn logs_response(request_id: String, page: LogPage) -> pb::LogsResponse {
    let lines = page
        .lines
        .into_iter()
        .map(|l| pb::LogLine {
            seq: l.seq,
            at: Some(timestamp(l.at)),
            level: l.level.as_str().to_ascii_lowercase(),
            target: l.target,
            message: l.message,
            fields: l.fields.into_iter().map(|(name, value)| pb::LogField { name, value }).collect(),
        })
        .collect();
    pb::LogsResponse {
        request_id,
        lines,
        truncated: page.truncated,
        last_seq: page.last_seq,
        error: String::new(),
    }
}

/// The bytes a snapshot takes in an introspection answer (`bench introspection` encodes every
/// snapshot as the uplink would, without knowing the wire types).
pub fn introspection_bytes(s: &ComponentSnapshot) -> usize {
    prost::Message::encoded_len(&component_state_with_events(s))
}

pub fn health(snapshots: &[ComponentSnapshot]) -> pb::Health {
    if snapshots.iter().any(|s| s.status == ComponentStatus::Failed) {
        pb::Health::Failing
    } else if snapshots.iter().all(|s| s.status == ComponentStatus::Running) {
        pb::Health::Ok
    } else {
        pb::Health::Degraded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn the_clock_offset_is_taken_from_the_round_trip() {
        let at = |ms: i64| chrono::DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap();
        // the agent is 250 ms ahead; 20 ms each way, 5 ms at the control plane
        let ack = pb::HeartbeatAck {
            heartbeat_sent_at: Some(timestamp(at(250))),
            received_at: Some(timestamp(at(20))),
            replied_at: Some(timestamp(at(25))),
        };
        let offset = clock_offset(&ack, at(250 + 45)).unwrap();
        assert!((offset.offset_ms - 250.0).abs() < 1e-6, "{offset:?}");
        assert!((offset.round_trip_ms - 40.0).abs() < 1e-6, "{offset:?}");
        assert_eq!(clock_offset(&pb::HeartbeatAck::default(), at(0)), None);
    }

    #[test]
    fn chunks_are_contiguous_and_bounded() {
        let image = Bytes::from((0..=255u8).cycle().take(10_000).collect::<Vec<_>>());
        for max in [1, 7, 4096, 10_000, 20_000] {
            let chunks = chunks("c", &image, max);
            let mut next = 0u64;
            let mut joined = Vec::new();
            for c in &chunks {
                assert_eq!(c.offset, next);
                assert!(!c.data.is_empty() && c.data.len() <= max);
                next += c.data.len() as u64;
                joined.extend_from_slice(&c.data);
            }
            assert_eq!(joined, image.to_vec());
            assert_eq!(chunks.len(), image.len().div_ceil(max));
        }
        assert_eq!(chunks("c", &Bytes::new(), 10).len(), 1);
    }

    #[test]
    fn capture_start_has_size_hash_and_unknown_occupancy() {
        let capture = crate::buffer::tests::capture(b"abc");
        let start = capture_start(&capture, None);
        assert_eq!(start.image_size_bytes, 3);
        assert_eq!(
            hex::encode(&start.image_sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let meta = start.meta.unwrap();
        assert_eq!(meta.occupancy.unwrap().status, pb::OccupancyStatus::Unspecified as i32);
        assert_eq!(meta.vehicle_class, pb::VehicleClass::Car as i32);
    }

    #[test]
    fn counted_occupancy_carries_confidence_and_model() {
        let mut capture = crate::buffer::tests::capture(b"abc");
        capture.meta.occupancy = OccupancyStatus::Counted {
            occupants: 2,
            sections: vec![crate::domain::SectionCount {
                section: "driver".into(),
                occupants: 1,
                confidence: 0.8,
            }],
            confidence: 0.7,
            model: "m.onnx@abc".into(),
        };
        let o = capture_start(&capture, None).meta.unwrap().occupancy.unwrap();
        assert_eq!((o.status, o.occupants), (pb::OccupancyStatus::Counted as i32, 2));
        assert_eq!((o.confidence, o.model_version.as_str()), (Some(0.7), "m.onnx@abc"));
        assert_eq!(o.sections[0].confidence, 0.8);
        capture.meta.occupancy = OccupancyStatus::Unreadable { model: "m.onnx@abc".into() };
        let o = capture_start(&capture, None).meta.unwrap().occupancy.unwrap();
        assert_eq!((o.confidence, o.model_version.as_str()), (None, "m.onnx@abc"));
    }
}

//! The roadside part of a capture's trace, exported over OTLP when `[telemetry]` is on.
//!
//! Stages mark instants on the capture as it passes (`domain::StageMarks`: when acquire got the
//! trigger's request, when it made the capture, when vision took and released it); nothing is
//! recorded while tracing is off. When the buffer stores the capture, its trace is emitted at
//! once with the instants as explicit span times: the root `capture` (from the vehicle's entry to
//! the durable write) with `detect` (entry scan → the trigger's request reached the camera),
//! `trigger` (→ the frame at the trigger instant), `acquire` (→ the vehicle's exit and the
//! encoded image), `vision` (→ anonymized, counted and released) and `buffer` (the write).
//! Emitting after the buffer lets the sampler see the value class that vision decided: violation
//! candidates are always kept. The root's `traceparent` is stored with the capture; the uplink's
//! `upload` span continues it when the capture is sent, as a child, or as a new trace with a link
//! when the capture waited in the buffer longer than `late_after_secs` (an outage's backlog).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use lanewatch_telemetry::opentelemetry::trace::{
    Span as _, SpanBuilder, SpanKind, TraceContextExt as _, Tracer as _,
};
use lanewatch_telemetry::opentelemetry::{Context, KeyValue};
use lanewatch_telemetry::opentelemetry_sdk::trace::{SdkTracer, Span};
use lanewatch_telemetry::{Continuation, Telemetry, VALUE_CLASS};

use crate::domain::{Capture, CaptureMeta, OccupancyStatus, StageMarks};

/// The agent's capture tracer: one per process, shared by the stages of every generation.
#[derive(Debug, Clone)]
pub struct CaptureTracer {
    tracer: SdkTracer,
    late_after: Duration,
}

/// A traced upload's span, ended by the control plane's ack.
pub type UploadSpan = Span;

/// A capture's root span between the buffer's write starting and its end.
pub struct Root {
    span: Span,
    marks: Option<Box<StageMarks>>,
    buffer_started: DateTime<Utc>,
}

impl CaptureTracer {
    pub fn new(telemetry: &Telemetry) -> Arc<Self> {
        Arc::new(Self { tracer: telemetry.tracer("lanewatch-agent"), late_after: telemetry.late_after() })
    }

    /// Starts `capture`'s root span (the sampler decides here, on its value class) and stamps its
    /// `traceparent` on the metadata, so the buffer stores it. Call just before the write.
    pub fn begin(&self, capture: &mut Capture) -> Root {
        let meta = &capture.meta;
        let mut attributes = vec![
            KeyValue::new("capture.id", meta.capture_id.to_string()),
            KeyValue::new("site.id", meta.site_id.clone()),
            KeyValue::new("camera.id", meta.camera_id.clone()),
            KeyValue::new("lane", i64::from(meta.lane)),
            KeyValue::new(VALUE_CLASS, meta.value_class.as_str()),
            KeyValue::new("vehicle.class", format!("{:?}", meta.class).to_lowercase()),
            KeyValue::new("config.version", meta.config_version as i64),
            KeyValue::new("test", meta.test),
        ];
        if let OccupancyStatus::Counted { occupants, .. } = &meta.occupancy {
            attributes.push(KeyValue::new("occupants", i64::from(*occupants)));
        }
        let builder = SpanBuilder::from_name("capture")
            .with_kind(SpanKind::Internal)
            .with_start_time(SystemTime::from(meta.detected_at.min(meta.captured_at)))
            .with_attributes(attributes);
        let span = self.tracer.build_with_context(builder, &Context::new());
        capture.meta.trace_parent = lanewatch_telemetry::traceparent(span.span_context());
        Root { span, marks: capture.trace.take(), buffer_started: Utc::now() }
    }

    /// The capture is durable: emits its stage spans and ends the root (a no-op when it was not
    /// sampled). Returns how many spans it emitted, the root included.
    pub fn stored(&self, root: Root, meta: &CaptureMeta) -> usize {
        let Root { mut span, marks, buffer_started } = root;
        if !span.span_context().is_sampled() {
            return 0;
        }
        let now = Utc::now();
        let parent = Context::new().with_remote_span_context(span.span_context().clone());
        let marks = marks.unwrap_or_default();
        let entry = meta.detected_at.min(meta.captured_at);
        let mut stages: Vec<(&'static str, DateTime<Utc>, DateTime<Utc>)> = Vec::with_capacity(5);
        if let Some(requested) = marks.requested_at {
            stages.push(("detect", entry, requested));
            stages.push(("trigger", requested, meta.captured_at.max(requested)));
        }
        if let Some(made) = marks.made_at {
            stages.push(("acquire", meta.captured_at, made.max(meta.captured_at)));
        }
        if let (Some(started), Some(released)) = (marks.vision_started, marks.vision_released) {
            stages.push(("vision", started, released));
        }
        stages.push(("buffer", buffer_started, now));
        let emitted = stages.len() + 1;
        for (name, start, end) in stages {
            let builder = SpanBuilder::from_name(name).with_start_time(SystemTime::from(start));
            let mut child = self.tracer.build_with_context(builder, &parent);
            child.end_with_timestamp(SystemTime::from(end.max(start)));
        }
        span.end_with_timestamp(SystemTime::from(now));
        emitted
    }

    /// The span of sending a buffered capture, ended by its ack (dropping it ends it too), and
    /// the `traceparent` the control plane continues: the upload span's when it is recorded,
    /// else the capture's own (which carries the sampler's "not sampled" on).
    pub fn upload(&self, meta: &CaptureMeta) -> (Option<UploadSpan>, Option<String>) {
        let Some(stored) = meta.trace_parent.as_deref() else { return (None, None) };
        let Some(capture_span) = lanewatch_telemetry::parse(stored) else { return (None, None) };
        if !capture_span.is_sampled() {
            return (None, Some(stored.to_owned()));
        }
        let age = (Utc::now() - meta.captured_at).to_std().unwrap_or_default();
        let continuation = Continuation::of(Some(stored), age, self.late_after);
        let builder = SpanBuilder::from_name("upload")
            .with_kind(SpanKind::Client)
            .with_attributes(vec![
                KeyValue::new("capture.id", meta.capture_id.to_string()),
                KeyValue::new(VALUE_CLASS, meta.value_class.as_str()),
                KeyValue::new("buffered.seconds", age.as_secs_f64()),
            ])
            .with_links(continuation.links());
        let span = self.tracer.build_with_context(builder, &continuation.parent());
        let traceparent =
            lanewatch_telemetry::traceparent(span.span_context()).or_else(|| Some(stored.to_owned()));
        (Some(span), traceparent)
    }
}

/// Ends an upload span with the control plane's answer.
pub fn acked(mut span: UploadSpan, outcome: &str) {
    span.set_attribute(KeyValue::new("ack.outcome", outcome.to_owned()));
    span.end();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ValueClass;
    use lanewatch_telemetry::TelemetryConfig;
    use lanewatch_telemetry::opentelemetry::trace::SpanContext;
    use lanewatch_telemetry::opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};

    /// The span context `meta` was traced under, if any.
    fn capture_span(meta: &CaptureMeta) -> Option<SpanContext> {
        meta.trace_parent.as_deref().and_then(lanewatch_telemetry::parse)
    }

    fn tracer(ratio: f64) -> (Telemetry, Arc<CaptureTracer>, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        let config = TelemetryConfig { enabled: true, sample_ratio: ratio, ..TelemetryConfig::default() };
        let telemetry = Telemetry::with_exporter(exporter.clone(), &config, "lanewatch-agent", "a1");
        let tracer = CaptureTracer::new(&telemetry);
        (telemetry, tracer, exporter)
    }

    fn finished(telemetry: &Telemetry, exporter: &InMemorySpanExporter) -> Vec<SpanData> {
        telemetry.provider().force_flush().unwrap();
        exporter.get_finished_spans().unwrap()
    }

    fn capture(class: ValueClass) -> Capture {
        let mut c = Capture::synthetic("s1", 1, "front", bytes::Bytes::from_static(b"jpeg"));
        let t = Utc::now() - chrono::Duration::milliseconds(400);
        c.meta.detected_at = t;
        c.meta.captured_at = t + chrono::Duration::milliseconds(150);
        c.meta.value_class = class;
        let mut marks = StageMarks::made(Some(t + chrono::Duration::milliseconds(20)));
        marks.made_at = Some(t + chrono::Duration::milliseconds(300));
        marks.vision_started = Some(t + chrono::Duration::milliseconds(310));
        marks.vision_released = Some(t + chrono::Duration::milliseconds(390));
        c.trace = Some(marks);
        c
    }

    #[test]
    fn a_stored_capture_has_its_stage_spans_in_order_under_one_root() {
        let (telemetry, tracer, exporter) = tracer(1.0);
        let mut c = capture(ValueClass::Compliant);
        let root = tracer.begin(&mut c);
        assert!(c.trace.is_none(), "the marks leave the capture before it is stored");
        let traceparent = c.meta.trace_parent.clone().expect("stamped");
        assert_eq!(tracer.stored(root, &c.meta), 6, "the root and five stages");
        let spans = finished(&telemetry, &exporter);
        let root = spans.iter().find(|s| s.name == "capture").unwrap();
        assert_eq!(lanewatch_telemetry::traceparent(&root.span_context).unwrap(), traceparent);
        assert_eq!(root.start_time, SystemTime::from(c.meta.detected_at));
        let names: Vec<&str> =
            spans.iter().filter(|s| s.name != "capture").map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["detect", "trigger", "acquire", "vision", "buffer"]);
        for s in spans.iter().filter(|s| s.name != "capture") {
            assert_eq!(s.span_context.trace_id(), root.span_context.trace_id());
            assert_eq!(s.parent_span_id, root.span_context.span_id());
            assert!(s.start_time <= s.end_time, "{}", s.name);
            assert!(
                s.start_time >= root.start_time && s.end_time <= root.end_time,
                "{} inside the root",
                s.name
            );
        }
        let trigger = spans.iter().find(|s| s.name == "trigger").unwrap();
        assert_eq!(trigger.end_time, SystemTime::from(c.meta.captured_at));
    }

    #[test]
    fn violation_candidates_are_kept_when_others_are_not() {
        let (telemetry, tracer, exporter) = tracer(0.0);
        let mut ordinary = capture(ValueClass::Compliant);
        let root = tracer.begin(&mut ordinary);
        assert_eq!(tracer.stored(root, &ordinary.meta), 0, "not sampled: nothing emitted");
        assert!(ordinary.meta.trace_parent.as_deref().unwrap().ends_with("-00"), "not sampled, said so");
        let mut violation = capture(ValueClass::ViolationCandidate);
        let root = tracer.begin(&mut violation);
        tracer.stored(root, &violation.meta);
        assert!(violation.meta.trace_parent.as_deref().unwrap().ends_with("-01"));
        let spans = finished(&telemetry, &exporter);
        assert_eq!(spans.len(), 6, "the violation's root and five stages, nothing of the other");
        let unsampled = tracer.upload(&ordinary.meta);
        assert!(unsampled.0.is_none());
        assert_eq!(unsampled.1, ordinary.meta.trace_parent, "the decision travels on");
    }

    #[test]
    fn an_upload_continues_the_capture_or_links_to_it_when_late() {
        let (telemetry, tracer, exporter) = tracer(1.0);
        let mut c = capture(ValueClass::Compliant);
        let root = tracer.begin(&mut c);
        tracer.stored(root, &c.meta);
        let capture_span = capture_span(&c.meta).unwrap();
        let (span, traceparent) = tracer.upload(&c.meta);
        acked(span.unwrap(), "stored");
        let sent = lanewatch_telemetry::parse(&traceparent.unwrap()).unwrap();
        assert_eq!(sent.trace_id(), capture_span.trace_id());
        let mut late = c.meta.clone();
        late.captured_at = Utc::now() - chrono::Duration::hours(3);
        let (span, traceparent) = tracer.upload(&late);
        acked(span.unwrap(), "stored");
        let sent_late = lanewatch_telemetry::parse(&traceparent.unwrap()).unwrap();
        assert_ne!(sent_late.trace_id(), capture_span.trace_id(), "a new trace");
        let spans = finished(&telemetry, &exporter);
        let uploads: Vec<&SpanData> = spans.iter().filter(|s| s.name == "upload").collect();
        assert_eq!(uploads[0].parent_span_id, capture_span.span_id());
        assert!(uploads[0].links.links.is_empty());
        assert_eq!(uploads[1].links.links[0].span_context.span_id(), capture_span.span_id());
    }

    #[test]
    fn an_untraced_capture_uploads_without_context() {
        let (_telemetry, tracer, _exporter) = tracer(1.0);
        let c = Capture::synthetic("s1", 0, "front", bytes::Bytes::new());
        let (span, traceparent) = tracer.upload(&c.meta);
        assert!(span.is_none() && traceparent.is_none());
    }
}

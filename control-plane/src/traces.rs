//! The control plane's part of a capture's trace: `tracing` spans under the target
//! `lanewatch::trace`, which the subscriber turns into OpenTelemetry spans (tracing-opentelemetry)
//! when `[telemetry]` is on, and which are disabled (debug level) and cost nothing otherwise.
//!
//! - `capture.ingest`: from `CaptureStart` to the ack, continuing the agent's upload span (the
//!   `traceparent` of the capture's metadata) as its child, or, for a capture that arrives later
//!   than `late_after_secs` after it was taken, as a new trace that links to it; its children are
//!   `capture.receive` (chunks and the SHA-256 check), `blob.put` and `db.commit`.
//! - `job.perform`: one attempt of a job whose arguments carry a `traceparent` (the capture's
//!   webhook deliveries carry their ingest span's), so deliveries continue the capture's trace;
//!   `webhook.deliver` inside it is the request to the receiver.

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lanewatch_telemetry::opentelemetry::trace::TraceContextExt as _;
use lanewatch_telemetry::{Continuation, Telemetry};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::domain::{CaptureMeta, Job};

/// The target of every span that belongs to a capture's trace.
pub const TARGET: &str = "lanewatch::trace";

/// The job argument that carries a trace context.
pub const TRACEPARENT_ARG: &str = "traceparent";

static LATE_AFTER: OnceLock<Duration> = OnceLock::new();

/// Sets when a capture counts as late (`[telemetry] late_after_secs`); once, at start-up.
pub fn configure(late_after: Duration) {
    let _ = LATE_AFTER.set(late_after);
}

fn late_after() -> Duration {
    LATE_AFTER.get().copied().unwrap_or(Duration::from_secs(600))
}

/// The layer exporting the spans of `TARGET` through `telemetry`'s tracer.
pub fn layer<S>(telemetry: &Telemetry) -> impl Layer<S> + use<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let targets = tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::DEBUG);
    tracing_opentelemetry::layer()
        .with_tracer(telemetry.tracer("lanewatch-control"))
        .with_tracked_inactivity(false)
        .with_filter(targets)
}

/// The span of one capture's ingest, under the agent's upload span or linked to it when late.
pub fn ingest_span(
    meta: &CaptureMeta,
    agent_id: &str,
    traceparent: Option<&str>,
    now: DateTime<Utc>,
) -> tracing::Span {
    let span = tracing::debug_span!(
        target: TARGET,
        "capture.ingest",
        otel.kind = "server",
        capture.id = %meta.id,
        site.id = %meta.site_id,
        agent.id = agent_id,
        lane = meta.lane,
        test = meta.test,
        capture.decision = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let age = (now - meta.captured_at).to_std().unwrap_or_default();
    continue_from(&span, &Continuation::of(traceparent, age, late_after()));
    span
}

/// The spans of a capture being received: its ingest and, under it, the receive (the chunks and
/// the SHA-256 check).
pub struct Receiving {
    ingest: tracing::Span,
    _receive: tracing::Span,
}

impl Receiving {
    /// Received and verified: the receive ends; the ingest goes on into the store.
    pub fn received(self) -> tracing::Span {
        self.ingest
    }
}

/// The spans of a capture of `bytes` announced by `agent_id` at `now`, continuing `traceparent`.
pub fn receiving(
    meta: &CaptureMeta,
    bytes: u64,
    agent_id: &str,
    traceparent: Option<&str>,
    now: DateTime<Utc>,
) -> Receiving {
    let ingest = ingest_span(meta, agent_id, traceparent, now);
    let receive = tracing::debug_span!(target: TARGET, parent: &ingest, "capture.receive", bytes);
    Receiving { ingest, _receive: receive }
}

/// Putting a capture's image in the blob store, under the current (ingest) span.
pub fn blob_put(bytes: u64) -> tracing::Span {
    tracing::debug_span!(target: TARGET, "blob.put", otel.kind = "client", bytes)
}

/// Waiting for a capture's row to commit (with others', one transaction), under the ingest span.
pub fn db_commit() -> tracing::Span {
    tracing::debug_span!(target: TARGET, "db.commit", otel.kind = "client")
}

/// The span of one attempt of `job`: a child of the trace its arguments name, if any.
pub fn job_span(job: &Job) -> tracing::Span {
    let span = tracing::debug_span!(
        target: TARGET,
        "job.perform",
        otel.kind = "consumer",
        job.id = job.id,
        job.queue = %job.queue,
        job.worker = %job.worker,
        job.attempt = job.attempt,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let traceparent = job.args.get(TRACEPARENT_ARG).and_then(|v| v.as_str());
    // a retry hours later is still the same delivery of the same capture: a child, not a link
    continue_from(&span, &Continuation::of(traceparent, Duration::ZERO, Duration::MAX));
    span
}

fn continue_from(span: &tracing::Span, continuation: &Continuation) {
    // an empty parent makes a root rather than a child of whatever span is current (a session)
    let _ = span.set_parent(continuation.parent());
    for link in continuation.links() {
        span.add_link_with_attributes(link.span_context, link.attributes);
    }
}

/// Marks `span` as failed with `why` (an attempt's error, a failed store).
pub fn failed(span: &tracing::Span, why: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", why);
}

/// The `traceparent` of `span` when tracing is on (what the jobs it starts carry): sampled or
/// not, so that they follow its decision.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    lanewatch_telemetry::traceparent(cx.span().span_context())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanewatch_telemetry::opentelemetry_sdk::trace::InMemorySpanExporter;
    use lanewatch_telemetry::{TelemetryConfig, traceparent};
    use tracing_subscriber::layer::SubscriberExt as _;

    fn meta(captured_at: DateTime<Utc>) -> CaptureMeta {
        crate::db::tests::capture(uuid::Uuid::now_v7(), captured_at).meta
    }

    fn collect(f: impl FnOnce()) -> Vec<lanewatch_telemetry::opentelemetry_sdk::trace::SpanData> {
        let exporter = InMemorySpanExporter::default();
        let config = TelemetryConfig { enabled: true, sample_ratio: 1.0, ..TelemetryConfig::default() };
        let telemetry = Telemetry::with_exporter(exporter.clone(), &config, "lanewatch-control", "test");
        let subscriber = tracing_subscriber::registry().with(layer(&telemetry));
        tracing::subscriber::with_default(subscriber, f);
        telemetry.provider().force_flush().unwrap();
        exporter.get_finished_spans().unwrap()
    }

    const AGENT_SPAN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn an_ingest_in_time_is_a_child_of_the_agents_span_and_its_jobs_continue_it() {
        let now = Utc::now();
        let spans = collect(|| {
            let ingest = ingest_span(&meta(now), "a1", Some(AGENT_SPAN), now);
            let carried = traceparent_of(&ingest).expect("traced");
            drop(ingest);
            let job = Job {
                id: 1,
                queue: "webhooks".into(),
                worker: "webhook.deliver".into(),
                args: serde_json::json!({ TRACEPARENT_ARG: carried }),
                state: crate::domain::JobState::Executing,
                priority: 0,
                attempt: 1,
                max_attempts: 5,
                inserted_at: now,
                scheduled_at: now,
                attempted_at: Some(now),
                finished_at: None,
                attempted_by: None,
                errors: Vec::new(),
            };
            drop(job_span(&job));
        });
        let agent = lanewatch_telemetry::parse(AGENT_SPAN).unwrap();
        let ingest = spans.iter().find(|s| s.name == "capture.ingest").unwrap();
        assert_eq!(ingest.span_context.trace_id(), agent.trace_id());
        assert_eq!(ingest.parent_span_id, agent.span_id());
        let job = spans.iter().find(|s| s.name == "job.perform").unwrap();
        assert_eq!(job.span_context.trace_id(), agent.trace_id());
        assert_eq!(job.parent_span_id, ingest.span_context.span_id());
    }

    #[test]
    fn a_late_ingest_starts_its_own_trace_linked_to_the_agents() {
        let now = Utc::now();
        let spans = collect(|| {
            drop(ingest_span(&meta(now - chrono::Duration::hours(5)), "a1", Some(AGENT_SPAN), now))
        });
        let agent = lanewatch_telemetry::parse(AGENT_SPAN).unwrap();
        let ingest = &spans[0];
        assert_ne!(ingest.span_context.trace_id(), agent.trace_id());
        assert_eq!(ingest.links.links.len(), 1);
        assert_eq!(ingest.links.links[0].span_context.span_id(), agent.span_id());
        assert!(traceparent(&ingest.span_context).is_some());
    }

    #[test]
    fn without_the_layer_spans_are_disabled_and_carry_nothing() {
        // as `main` builds it with `[telemetry]` off: log lines at info, no exporting layer
        use tracing_subscriber::Layer as _;
        let lines = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::EnvFilter::new("info"));
        let subscriber = tracing_subscriber::registry().with(lines);
        tracing::subscriber::with_default(subscriber, || {
            let span = ingest_span(&meta(Utc::now()), "a1", Some(AGENT_SPAN), Utc::now());
            assert!(span.is_disabled());
            assert_eq!(traceparent_of(&span), None);
        });
    }
}

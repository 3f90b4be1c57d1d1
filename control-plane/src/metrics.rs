//! Prometheus metrics of the control plane (prometheus-client), rendered by `GET /metrics`, all
//! named `lanewatch_*` (base units, `_total` counters, bounded labels). The alert rules in
//! `helm/lanewatch/files/lanewatch.rules.yml` are written against these names.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueStateLabels {
    pub queue: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub certificate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobOutcomeLabels {
    pub queue: String,
    pub worker: String,
    pub outcome: String,
}

/// Every metric the control plane exports; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub sessions_active: Gauge,
    pub captures_ingested: Family<OutcomeLabels, Counter>,
    pub capture_bytes: Counter,
    pub ingest_duration_seconds: Histogram,
    pub session_errors: Family<CodeLabels, Counter>,
    pub agents_online: Gauge,
    pub history_samples_written: Counter,
    /// Component history samples lost: `queue_full` (the writer was behind) or `write_failed`.
    pub history_samples_dropped: Family<ReasonLabels, Counter>,
    pub history_backlog: Gauge,
    /// Jobs per queue and state, as last counted (every 10 s).
    pub jobs: Family<QueueStateLabels, Gauge>,
    /// Job attempts finished here, by queue, worker and outcome (completed, retried, discarded).
    pub job_attempts: Family<JobOutcomeLabels, Counter>,
    pub job_duration_seconds: Histogram,
    /// Captures and images retention deleted.
    pub retention_deleted: Counter,
    /// Webhook endpoints by state (`ok`, `failing`, `disabled`), as last counted (every 10 s).
    pub webhook_endpoints: Family<StateLabels, Gauge>,
    /// When each TLS certificate this replica serves or trusts expires (Unix seconds).
    pub tls_certificate_expiry: Family<CertificateLabels, Gauge>,
    /// Each webhook delivery attempt, from request to answer (or failure).
    pub webhook_delivery_seconds: Histogram,
    /// The epoch of this replica's leader term; 0 while it does not lead (`leader`).
    pub leader_epoch: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lanewatch");
        let sessions_active = Gauge::default();
        let captures_ingested = Family::<OutcomeLabels, Counter>::default();
        let capture_bytes = Counter::default();
        let ingest_duration_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let session_errors = Family::<CodeLabels, Counter>::default();
        let agents_online = Gauge::default();
        let history_samples_written = Counter::default();
        let history_samples_dropped = Family::<ReasonLabels, Counter>::default();
        let history_backlog = Gauge::default();
        let jobs = Family::<QueueStateLabels, Gauge>::default();
        let job_attempts = Family::<JobOutcomeLabels, Counter>::default();
        let job_duration_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        let retention_deleted = Counter::default();
        let webhook_endpoints = Family::<StateLabels, Gauge>::default();
        let tls_certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        let webhook_delivery_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let leader_epoch = Gauge::default();
        registry.register(
            "leader_epoch",
            "The epoch of this replica's leader term (it runs the singleton loops); 0 while it does not lead",
            leader_epoch.clone(),
        );
        registry.register(
            "webhook_delivery_seconds",
            "Time of one webhook delivery attempt, from the request to the answer or the failure",
            webhook_delivery_seconds.clone(),
        );
        registry.register(
            "webhook_endpoints",
            "Webhook endpoints by state: ok, failing (deliveries failing, retried), disabled",
            webhook_endpoints.clone(),
        );
        for state in ["ok", "failing", "disabled"] {
            let _ = webhook_endpoints.get_or_create(&StateLabels { state: state.to_owned() });
        }
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When a TLS certificate this replica serves or trusts expires, by certificate (grpc, client_ca)",
            tls_certificate_expiry.clone(),
        );
        registry.register("jobs", "Jobs in the queue, by queue and state", jobs.clone());
        registry.register(
            "job_attempts",
            "Job attempts finished by this replica, by queue, worker and outcome",
            job_attempts.clone(),
        );
        registry.register("job_duration_seconds", "Time one job attempt ran", job_duration_seconds.clone());
        registry.register(
            "retention_deleted_captures",
            "Captures (rows and images) deleted by legal retention",
            retention_deleted.clone(),
        );
        registry.register("sessions_active", "Live agent sessions", sessions_active.clone());
        registry.register(
            "captures_ingested",
            "Captures finished by the gateway, by outcome",
            captures_ingested.clone(),
        );
        registry.register("capture_bytes", "Image bytes stored", capture_bytes.clone());
        registry.register(
            "ingest_duration_seconds",
            "Time from a capture's last chunk to its ack",
            ingest_duration_seconds.clone(),
        );
        registry.register(
            "session_errors",
            "Sessions ended by an error, by gRPC code",
            session_errors.clone(),
        );
        registry.register("agents_online", "Agents with a live session", agents_online.clone());
        registry.register(
            "history_samples_written",
            "Component history samples (one per component per heartbeat) written",
            history_samples_written.clone(),
        );
        registry.register(
            "history_samples_dropped",
            "Component history samples dropped, by reason (queue_full, write_failed)",
            history_samples_dropped.clone(),
        );
        registry.register(
            "history_backlog",
            "Component history samples waiting for the writer",
            history_backlog.clone(),
        );
        for reason in ["queue_full", "write_failed"] {
            let _ = history_samples_dropped.get_or_create(&ReasonLabels { reason: reason.to_owned() });
        }
        // Export every ingest outcome from the start, so that rates and alerts see zeros rather
        // than absent series.
        for kind in crate::error::ErrorKind::ALL {
            let _ = session_errors.get_or_create(&CodeLabels { code: kind.metric_label().to_owned() });
        }
        for outcome in ["stored", "duplicate", "failed"] {
            let _ = captures_ingested.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() });
        }
        Self {
            registry: Arc::new(registry),
            sessions_active,
            captures_ingested,
            capture_bytes,
            ingest_duration_seconds,
            session_errors,
            agents_online,
            history_samples_written,
            history_samples_dropped,
            history_backlog,
            jobs,
            job_attempts,
            job_duration_seconds,
            retention_deleted,
            webhook_endpoints,
            tls_certificate_expiry,
            leader_epoch,
            webhook_delivery_seconds,
        }
    }

    pub fn job_attempt(&self, queue: &str, worker: &str, outcome: &str) {
        let labels = JobOutcomeLabels {
            queue: queue.to_owned(),
            worker: worker.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.job_attempts.get_or_create(&labels).inc();
    }

    pub fn history_dropped(&self, reason: &str, samples: u64) {
        self.history_samples_dropped
            .get_or_create(&ReasonLabels { reason: reason.to_owned() })
            .inc_by(samples);
    }

    pub fn ingested(&self, outcome: &str) {
        self.captures_ingested.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
    }

    pub fn session_error(&self, code: &str) {
        self.session_errors.get_or_create(&CodeLabels { code: code.to_owned() }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric() {
        let m = Metrics::new();
        m.ingested("stored");
        m.session_error("invalid_argument");
        m.capture_bytes.inc_by(10);
        let text = m.render();
        for name in [
            "sessions_active",
            "captures_ingested_total{outcome=\"stored\"} 1",
            "capture_bytes_total 10",
            "ingest_duration_seconds_bucket",
            "session_errors_total{code=\"invalid_argument\"} 1",
            "agents_online",
            "history_samples_written_total 0",
            "history_samples_dropped_total{reason=\"queue_full\"} 0",
            "history_backlog 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}

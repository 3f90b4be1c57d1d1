//! The `[telemetry]` section, in the agent's file and (the same type) in the control plane's:
//! whether traces are exported, where (OTLP over gRPC or HTTP), how many captures are sampled,
//! and when an upload counts as late. Off by default: then no exporter exists and nothing is
//! recorded. Only the data and its checks live here; `lanewatch-telemetry` builds the exporter.

use serde::Deserialize;

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// OTLP/gRPC (the collector's port 4317); `https://` endpoints use TLS.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318), plain `http://` only.
    Http,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Export traces. Off: no exporter, no span is recorded, no cost on the capture path.
    pub enabled: bool,
    /// The collector: `http://host:4317` for gRPC, `http://host:4318` for HTTP (the path
    /// `/v1/traces` is added).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Share of ordinary captures (and of requests without a sampled parent) whose traces are
    /// kept, 0..=1. Violation candidates are always sampled.
    pub sample_ratio: f64,
    /// A capture that reaches the control plane later than this after it was taken (an outage's
    /// backlog) starts a trace of its own that links to its roadside trace, instead of being a
    /// child of it.
    pub late_after_secs: u64,
    /// The longest one export may take before it is abandoned (the spans are dropped).
    pub export_timeout_ms: u64,
    /// `service.name` of the spans; by default `OTEL_SERVICE_NAME`, else the binary's name.
    pub service_name: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: OtlpProtocol::Grpc,
            sample_ratio: 0.05,
            late_after_secs: 600,
            export_timeout_ms: 10_000,
            service_name: None,
        }
    }
}

impl TelemetryConfig {
    /// What is wrong with the section, as (field under `prefix`, reason) pairs; empty when valid.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let field = |name: &str| format!("{prefix}.{name}");
        if !(0.0..=1.0).contains(&self.sample_ratio) || self.sample_ratio.is_nan() {
            out.push((field("sample_ratio"), format!("must be between 0 and 1, got {}", self.sample_ratio)));
        }
        let scheme = self.endpoint.split_once("://").map(|(s, _)| s);
        match (scheme, self.protocol) {
            (Some("http"), _) | (Some("https"), OtlpProtocol::Grpc) => {}
            (Some("https"), OtlpProtocol::Http) => out.push((
                field("endpoint"),
                "https is supported over gRPC only: use protocol = \"grpc\", or a plain http:// collector"
                    .into(),
            )),
            _ => out.push((
                field("endpoint"),
                format!("must be an http:// or https:// URL of an OTLP collector, got {:?}", self.endpoint),
            )),
        }
        if !(1..=30 * 86_400).contains(&self.late_after_secs) {
            out.push((
                field("late_after_secs"),
                format!("must be between 1 and 2592000, got {}", self.late_after_secs),
            ));
        }
        if !(100..=120_000).contains(&self.export_timeout_ms) {
            out.push((
                field("export_timeout_ms"),
                format!("must be between 100 and 120000, got {}", self.export_timeout_ms),
            ));
        }
        if self.service_name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            out.push((field("service_name"), "must not be empty when set".into()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(c: &TelemetryConfig) -> Vec<String> {
        c.problems("telemetry").into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let c = TelemetryConfig::default();
        assert!(!c.enabled);
        assert!(fields(&c).is_empty());
    }

    #[test]
    fn bad_values_name_their_field() {
        let c = TelemetryConfig {
            sample_ratio: 1.5,
            endpoint: "collector:4317".into(),
            late_after_secs: 0,
            export_timeout_ms: 5,
            service_name: Some(" ".into()),
            ..TelemetryConfig::default()
        };
        assert_eq!(
            fields(&c),
            [
                "telemetry.sample_ratio",
                "telemetry.endpoint",
                "telemetry.late_after_secs",
                "telemetry.export_timeout_ms",
                "telemetry.service_name"
            ]
        );
        let tls_over_http = TelemetryConfig {
            endpoint: "https://otel:4318".into(),
            protocol: OtlpProtocol::Http,
            ..TelemetryConfig::default()
        };
        let problems = tls_over_http.problems("telemetry");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].1.contains("gRPC only"), "{problems:?}");
        let tls_grpc = TelemetryConfig { endpoint: "https://otel:4317".into(), ..TelemetryConfig::default() };
        assert!(fields(&tls_grpc).is_empty());
    }
}

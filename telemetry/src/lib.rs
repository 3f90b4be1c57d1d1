//! `lanewatch-telemetry`: the OpenTelemetry tracing both binaries share, so neither writes it
//! twice: the tracer provider that the `[telemetry]` config section (`agent-config`) asks for,
//! exporting over OTLP (gRPC with tonic, or HTTP with protobuf bodies), the capture sampler
//! (violation candidates always kept), and the W3C trace context that travels with each capture.
//! Of ours it depends only on `agent-config`, the leaf where the section's type lives.
//!
//! With `[telemetry] enabled = false` (the default) `Telemetry::install` builds nothing: no
//! provider, no exporter thread, and the binaries skip every span of the capture path.

mod context;
mod http;
mod sampler;

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanExporter};

pub use context::{Continuation, parse, traceparent};
pub use lanewatch_agent_config::{OtlpProtocol, TelemetryConfig};
pub use sampler::{CaptureSampler, VALUE_CLASS};

/// The SDK types a binary needs to start spans with explicit times and parents.
pub use opentelemetry;
pub use opentelemetry_sdk;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP {protocol} exporter for {endpoint}: {source}")]
    Exporter {
        protocol: &'static str,
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("the OTLP exporter must be built inside the Tokio runtime")]
    NoRuntime,
}

/// An installed tracer provider; dropping it without `shutdown` loses unexported spans.
#[derive(Debug, Clone)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    late_after: Duration,
}

impl Telemetry {
    /// The provider `config` asks for, exporting as `default_service` unless the config or
    /// `OTEL_SERVICE_NAME` names the service; `None` when tracing is off. `instance` becomes
    /// `service.instance.id` (an agent id, a pod name). A gRPC exporter must be built inside a
    /// Tokio runtime.
    pub fn install(
        config: &TelemetryConfig,
        default_service: &'static str,
        instance: &str,
    ) -> Result<Option<Self>, TelemetryError> {
        if !config.enabled {
            return Ok(None);
        }
        let timeout = Duration::from_millis(config.export_timeout_ms);
        let fail = |source| TelemetryError::Exporter {
            protocol: config.protocol.as_str(),
            endpoint: config.endpoint.clone(),
            source,
        };
        let exporter = match config.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(timeout)
                .with_tls_config(tonic_tls(&config.endpoint))
                .build(),
            OtlpProtocol::Http => {
                let client = http::OnRuntime::current(timeout).map_err(|_| TelemetryError::NoRuntime)?;
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(client)
                    .with_endpoint(format!("{}/v1/traces", config.endpoint.trim_end_matches('/')))
                    .with_timeout(timeout)
                    .build()
            }
        }
        .map_err(fail)?;
        Ok(Some(Self::with_exporter(exporter, config, default_service, instance)))
    }

    /// A provider exporting to `exporter` in batches (tests pass the SDK's in-memory exporter).
    pub fn with_exporter(
        exporter: impl SpanExporter + 'static,
        config: &TelemetryConfig,
        default_service: &'static str,
        instance: &str,
    ) -> Self {
        let mut resource = Resource::builder();
        let from_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|s| !s.is_empty());
        match &config.service_name {
            Some(name) => resource = resource.with_service_name(name.clone()),
            None if !from_env => resource = resource.with_service_name(default_service),
            None => {}
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.instance.id", instance.to_owned()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(CaptureSampler::new(config.sample_ratio))
            .with_resource(resource)
            .build();
        Self { provider, late_after: Duration::from_secs(config.late_after_secs) }
    }

    /// The tracer of one part of a binary (its instrumentation scope), e.g. `lanewatch.capture`.
    pub fn tracer(&self, scope: &'static str) -> SdkTracer {
        use opentelemetry::trace::TracerProvider as _;
        self.provider.tracer(scope)
    }

    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// After how long a capture's next step links to its trace instead of continuing it.
    pub fn late_after(&self) -> Duration {
        self.late_after
    }

    /// Exports what is pending and stops the exporter (at drain); errors are reported, not fatal.
    pub fn shutdown(&self) -> Result<(), String> {
        self.provider.shutdown().map_err(|e| format!("exporting the last spans failed: {e}"))
    }
}

/// TLS for an `https://` collector: the system's roots through tonic's rustls (ring).
fn tonic_tls(endpoint: &str) -> opentelemetry_otlp::tonic_types::transport::ClientTlsConfig {
    let tls = opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new();
    if endpoint.starts_with("https://") { tls.with_enabled_roots() } else { tls }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, Tracer as _};
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    #[test]
    fn off_builds_nothing() {
        let off = TelemetryConfig::default();
        assert!(Telemetry::install(&off, "lanewatch-test", "i-1").unwrap().is_none());
    }

    #[test]
    fn spans_reach_the_exporter_with_the_resource() {
        let exporter = InMemorySpanExporter::default();
        let config = TelemetryConfig { enabled: true, sample_ratio: 1.0, ..TelemetryConfig::default() };
        let telemetry = Telemetry::with_exporter(exporter.clone(), &config, "lanewatch-test", "i-1");
        let mut span = telemetry.tracer("lanewatch.test").start("work");
        span.end();
        telemetry.provider().force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "work");
        assert_eq!(spans[0].instrumentation_scope.name(), "lanewatch.test");
        telemetry.shutdown().unwrap();
    }
}

//! A real OpenTelemetry collector for the trace tests: `rotel-agent` (the PyPI package rotel,
//! installed by `scripts/setup.sh` into `.tools/bin`) on 127.0.0.1, OTLP over gRPC and HTTP,
//! printing every span it receives (its debug exporter, `detailed`) to stdout, which this
//! parses. Killed when dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::Proc;
use crate::services::PortLease;

/// One span as the collector printed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    /// `service.name` of the resource that sent it.
    pub service: String,
    pub trace_id: String,
    /// Empty for a root.
    pub parent_id: String,
    pub span_id: String,
    pub name: String,
    /// The `Str(...)`/`Int(...)` attribute lines, as `key: value`.
    pub attributes: Vec<String>,
    /// Trace ids this span links to.
    pub linked_traces: Vec<String>,
}

pub struct Collector {
    proc: Proc,
    _dir: TempDir,
    _ports: PortLease,
    pub grpc_endpoint: String,
    pub http_endpoint: String,
}

impl Collector {
    /// `.tools/bin/rotel-agent` of the workspace.
    pub fn binary() -> Result<PathBuf> {
        let path = crate::workspace_root().join(".tools/bin/rotel-agent");
        anyhow::ensure!(
            path.exists(),
            "{} not found: run the README's test command (scripts/test.sh), which installs rotel from PyPI",
            path.display()
        );
        Ok(path)
    }

    /// Starts the collector and waits until its gRPC port accepts connections.
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("lanewatch-otel-").tempdir()?;
        let ports = PortLease::reserve(2)?;
        let (grpc, http) = (ports.ports[0], ports.ports[1]);
        let proc = Proc::spawn(
            "rotel",
            Command::new(Self::binary()?)
                .arg("start")
                .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
                .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
                .args([
                    "--exporter",
                    "blackhole",
                    "--debug-log",
                    "traces",
                    "--debug-log-verbosity",
                    "detailed",
                ]),
            dir.path(),
        )?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
            if Instant::now() > deadline {
                bail!("rotel did not listen on {grpc} within 15 s; stderr:\n{}", proc.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            proc,
            _dir: dir,
            _ports: ports,
            grpc_endpoint: format!("http://127.0.0.1:{grpc}"),
            http_endpoint: format!("http://127.0.0.1:{http}"),
        })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Result<Vec<Span>> {
        let text = std::fs::read_to_string(&self.proc.stdout_path).context("reading rotel's output")?;
        Ok(parse(&text))
    }

    /// Waits (up to `within`) until `check` finds what it wants among the spans received.
    pub fn wait_for<T>(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&[Span]) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans()?;
            if let Some(found) = check(&spans) {
                return Ok(found);
            }
            if Instant::now() > deadline {
                let names: Vec<String> = spans
                    .iter()
                    .take(40)
                    .map(|s| format!("{}:{}@{}", s.service, s.name, &s.trace_id))
                    .collect();
                bail!(
                    "collector: {what} not seen within {within:?}; {} spans received, the first: {names:?}",
                    spans.len()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Parses rotel's debug output: `ResourceSpans` blocks (whose `service.name` applies to the
/// spans under them), then per span `Trace ID`, `Parent ID`, `ID`, `Name`, its attributes
/// (`-> key: Str(value)`) and links (`SpanLink #n` with `-> Trace ID: …`).
pub fn parse(text: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut service = String::new();
    let mut current: Option<Span> = None;
    let mut in_links = false;
    for line in text.lines() {
        let trimmed = line.trim();
        let field = |name: &str| {
            trimmed
                .strip_prefix(name)
                .and_then(|rest| rest.trim_start().strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        if trimmed.starts_with("ResourceSpans #") {
            spans.extend(current.take());
            service.clear();
        } else if let Some(rest) = trimmed.strip_prefix("-> service.name:") {
            if current.is_none() {
                service = rest.trim().trim_start_matches("Str(").trim_end_matches(')').to_owned();
            }
        } else if trimmed.starts_with("Span #") {
            spans.extend(current.take());
            current = Some(Span { service: service.clone(), ..Span::default() });
            in_links = false;
        } else if let Some(span) = current.as_mut() {
            if trimmed.starts_with("Links:") || trimmed.starts_with("SpanLink #") {
                in_links = true;
            } else if let Some(v) = field("Trace ID") {
                span.trace_id = v;
            } else if let Some(v) = field("Parent ID") {
                span.parent_id = v;
            } else if let Some(v) = field("ID") {
                span.span_id = v;
            } else if let Some(v) = field("Name") {
                span.name = v;
            } else if let Some(rest) = trimmed.strip_prefix("-> ") {
                if !in_links {
                    span.attributes.push(rest.to_owned());
                } else if let Some(trace) = rest.strip_prefix("Trace ID:") {
                    span.linked_traces.push(trace.trim().to_owned());
                }
            }
        }
    }
    spans.extend(current);
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spans_with_their_service() {
        let text = "ResourceSpans #0\nResource attributes:\n     -> service.name: Str(lanewatch-agent)\n\
            ScopeSpans #0\nSpan #0\n    Trace ID       : aa\n    Parent ID      : \n    ID             : 01\n\
            \x20   Name           : capture\nAttributes:\n     -> lane: Int(1)\n\
            Span #1\n    Trace ID       : aa\n    Parent ID      : 01\n    ID             : 02\n    Name           : buffer\n\
            ResourceSpans #0\nResource attributes:\n     -> service.name: Str(lanewatch-control)\n\
            Span #0\n    Trace ID       : bb\n    Parent ID      : \n    ID             : 03\n    Name           : capture.ingest\n\
            Attributes:\n     -> capture.id: Str(x)\nLinks:\nSpanLink #0\n     -> Trace ID: aa\n     -> ID: 01\n\
            \x20    -> Attributes::\n          -> k: Str(v)\n";
        let spans = parse(text);
        assert_eq!(spans.len(), 3);
        assert_eq!(
            (spans[0].service.as_str(), spans[0].name.as_str(), spans[0].parent_id.as_str()),
            ("lanewatch-agent", "capture", "")
        );
        assert_eq!(spans[0].attributes, ["lane: Int(1)"]);
        assert_eq!((spans[1].parent_id.as_str(), spans[1].span_id.as_str()), ("01", "02"));
        assert_eq!((spans[2].service.as_str(), spans[2].trace_id.as_str()), ("lanewatch-control", "bb"));
        assert_eq!(spans[2].linked_traces, ["aa"]);
        assert_eq!(spans[2].attributes, ["capture.id: Str(x)"], "a link's attributes are not the span's");
    }
}

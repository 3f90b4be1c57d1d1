//! W3C trace context as it travels with a capture (`traceparent`, version 00), through the
//! SDK's `TraceContextPropagator`, and the rule for continuing it: a capture that arrives in
//! time continues its roadside trace as a child; one that arrives late (an outage's backlog)
//! starts a trace of its own with a link to the roadside one, so no span pretends to last hours.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Link, SpanContext, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The `traceparent` header value of `span`, e.g.
/// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`; `None` for an invalid context.
pub fn traceparent(span: &SpanContext) -> Option<String> {
    if !span.is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    let cx = Context::new().with_remote_span_context(span.clone());
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The span context a `traceparent` names; `None` when the text is not a valid version-00 value
/// (a malformed one is ignored rather than refusing the capture it came with).
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// How a step continues a capture's trace.
#[derive(Debug, Clone)]
pub enum Continuation {
    /// In time: a child of the capture's span.
    Child(Context),
    /// Late: a new trace whose first span links to the capture's.
    Linked(Link),
    /// No (valid) trace context came with the capture.
    Fresh,
}

impl Continuation {
    /// For a capture whose context is `traceparent` and that is `age` old at this step.
    pub fn of(traceparent: Option<&str>, age: Duration, late_after: Duration) -> Self {
        let Some(span) = traceparent.and_then(parse) else { return Self::Fresh };
        if age > late_after {
            let attributes = vec![
                KeyValue::new("lanewatch.link", "capture"),
                KeyValue::new("lanewatch.late_by_seconds", age.as_secs_f64()),
            ];
            Self::Linked(Link::new(span, attributes, 0))
        } else {
            Self::Child(Context::new().with_remote_span_context(span))
        }
    }

    /// The parent context to start the step's span under (empty for a new trace).
    pub fn parent(&self) -> Context {
        match self {
            Self::Child(cx) => cx.clone(),
            Self::Linked(_) | Self::Fresh => Context::new(),
        }
    }

    /// The links the step's span carries.
    pub fn links(&self) -> Vec<Link> {
        match self {
            Self::Linked(link) => vec![link.clone()],
            Self::Child(_) | Self::Fresh => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    fn span(sampled: bool) -> SpanContext {
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            flags,
            false,
            TraceState::default(),
        )
    }

    #[test]
    fn traceparent_round_trips_with_its_sampled_flag() {
        let text = traceparent(&span(true)).unwrap();
        assert_eq!(text, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let back = parse(&text).unwrap();
        assert_eq!((back.trace_id(), back.span_id()), (span(true).trace_id(), span(true).span_id()));
        assert!(back.is_sampled());
        let unsampled = traceparent(&span(false)).unwrap();
        assert!(unsampled.ends_with("-00"));
        assert!(!parse(&unsampled).unwrap().is_sampled());
        assert_eq!(traceparent(&SpanContext::empty_context()), None);
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in ["", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf9-01"] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_late_capture_links_instead_of_being_a_child() {
        let text = traceparent(&span(true)).unwrap();
        let late_after = Duration::from_secs(600);
        let fresh = Continuation::of(Some(&text), Duration::from_secs(3), late_after);
        assert!(matches!(fresh, Continuation::Child(_)));
        assert_eq!(fresh.parent().span().span_context().trace_id(), span(true).trace_id());
        assert!(fresh.links().is_empty());
        let late = Continuation::of(Some(&text), Duration::from_secs(4 * 3600), late_after);
        assert!(!late.parent().has_active_span());
        let links = late.links();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].span_context.span_id(), span(true).span_id());
        assert!(matches!(Continuation::of(None, Duration::ZERO, late_after), Continuation::Fresh));
        assert!(matches!(Continuation::of(Some("junk"), Duration::ZERO, late_after), Continuation::Fresh));
    }
}

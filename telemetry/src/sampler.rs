//! The sampler both binaries use: violation candidates are always kept (they are the
//! captures someone will ask about), anything else follows its parent's decision, or the
//! configured ratio when it has no parent.

use opentelemetry::trace::{Link, SpanKind, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};

/// The attribute a span about a capture carries with its value class; `violation_candidate`
/// makes the sampler keep it.
pub const VALUE_CLASS: &str = "lanewatch.value_class";

/// `ParentBased(TraceIdRatioBased(ratio))`, except that a span whose `lanewatch.value_class` is
/// `violation_candidate` is always recorded and sampled.
#[derive(Debug, Clone)]
pub struct CaptureSampler {
    inner: Sampler,
}

impl CaptureSampler {
    pub fn new(ratio: f64) -> Self {
        Self { inner: Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))) }
    }
}

impl ShouldSample for CaptureSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let violation = attributes
            .iter()
            .any(|kv| kv.key.as_str() == VALUE_CLASS && kv.value.as_str() == "violation_candidate");
        if violation {
            use opentelemetry::trace::TraceContextExt as _;
            let trace_state =
                parent_context.map(|cx| cx.span().span_context().trace_state().clone()).unwrap_or_default();
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state,
            };
        }
        self.inner.should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(sampler: &CaptureSampler, class: &str, trace_id: u128) -> SamplingDecision {
        let attributes = [KeyValue::new(VALUE_CLASS, class.to_owned())];
        sampler
            .should_sample(None, TraceId::from(trace_id), "capture", &SpanKind::Internal, &attributes, &[])
            .decision
    }

    #[test]
    fn violation_candidates_are_always_sampled() {
        let never = CaptureSampler::new(0.0);
        for id in 1..200u128 {
            assert_eq!(decide(&never, "violation_candidate", id * 7919), SamplingDecision::RecordAndSample);
            assert_eq!(decide(&never, "compliant", id * 7919), SamplingDecision::Drop);
        }
    }

    #[test]
    fn other_captures_follow_the_ratio() {
        let half = CaptureSampler::new(0.5);
        // the ratio sampler reads the trace id's low 64 bits: spread them over the range
        let kept = (0..1000u128)
            .map(|i| (i * (u64::MAX as u128 / 1000)) | 1 << 100)
            .filter(|&id| decide(&half, "compliant", id) == SamplingDecision::RecordAndSample)
            .count();
        assert!((400..=600).contains(&kept), "kept {kept} of 1000 at ratio 0.5");
    }
}

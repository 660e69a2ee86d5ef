//! Cutting a batch of finished spans into OTLP `ExportTraceServiceRequest`s that each fit a
//! size limit: a UDP datagram for [`super::otlp_udp`], a request the X-Ray OTLP endpoint takes
//! for [`super::xray_otlp`]. Encoding is `opentelemetry-proto`'s transform and `prost`, the code
//! the OTLP/HTTP exporter runs, never a hand-written encoder.
//!
//! A batch too large is split in halves until every part fits, never truncated; a span too
//! large on its own is left out and counted, so one huge span costs itself, not its batch.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::SpanData;
use prost::Message;

/// The requests a batch became.
#[derive(Debug, Default)]
pub struct Split {
    pub requests: Vec<ExportTraceServiceRequest>,
    /// Spans too large for a request on their own, left out.
    pub oversize: usize,
}

impl Split {
    /// Spans in the requests.
    pub fn span_count(&self) -> usize {
        self.requests.iter().map(span_count).sum()
    }
}

/// Spans in one request.
pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// `spans` as requests whose protobuf length `fits`; as few as halving gives.
pub fn split(
    spans: &[SpanData],
    resource: &ResourceAttributesWithSchema,
    fits: &dyn Fn(usize) -> bool,
) -> Split {
    let mut out = Split::default();
    split_into(spans, resource, fits, &mut out);
    out
}

fn split_into(
    spans: &[SpanData],
    resource: &ResourceAttributesWithSchema,
    fits: &dyn Fn(usize) -> bool,
    out: &mut Split,
) {
    if spans.is_empty() {
        return;
    }
    let request = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans.to_vec(), resource),
    };
    if fits(request.encoded_len()) {
        out.requests.push(request);
    } else if spans.len() == 1 {
        out.oversize += 1;
    } else {
        let (left, right) = spans.split_at(spans.len() / 2);
        split_into(left, resource, fits, out);
        split_into(right, resource, fits, out);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use opentelemetry::KeyValue;

    pub(crate) use apuntador_harness::spans::server_span as span;

    #[test]
    fn every_span_lands_in_exactly_one_request_under_the_limit() {
        let batch: Vec<SpanData> = (0..101)
            .map(|n| span(n, vec![KeyValue::new("payload", "x".repeat(300))]))
            .collect();
        let limit = 4_000;
        let out = split(&batch, &ResourceAttributesWithSchema::default(), &|n| {
            n <= limit
        });
        assert_eq!(out.oversize, 0);
        assert!(out.requests.len() > 10, "{}", out.requests.len());
        assert!(out.requests.iter().all(|r| r.encoded_len() <= limit));
        let mut ids: Vec<Vec<u8>> = out
            .requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.span_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 101, "each span once");
        assert_eq!(out.span_count(), 101);
    }

    #[test]
    fn a_span_too_large_alone_is_counted_and_the_rest_go() {
        let batch = vec![
            span(1, vec![]),
            span(2, vec![KeyValue::new("payload", "x".repeat(10_000))]),
            span(3, vec![]),
        ];
        let out = split(&batch, &ResourceAttributesWithSchema::default(), &|n| {
            n <= 2_000
        });
        assert_eq!(out.oversize, 1);
        assert_eq!(out.span_count(), 2);
    }
}

//! Finished spans made in a test, for exporters tested without a tracer.

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::SpanData;

/// The parent every [`server_span`] has, as a remote caller's span id.
pub const PARENT: u64 = 0x5399_5c3f_42cd_8ad8;

/// A sampled, finished `GET /health` server span whose id is `n + 1`, under [`PARENT`], with
/// `attributes`.
pub fn server_span(n: u64, attributes: Vec<KeyValue>) -> SpanData {
    let mut span = opentelemetry_sdk::testing::trace::new_test_export_span_data();
    span.span_context = SpanContext::new(
        TraceId::from(0x6b12_f9c3_0000_0000_0000_0000_0000_0001u128),
        SpanId::from(n + 1),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    span.parent_span_id = SpanId::from(PARENT);
    span.span_kind = SpanKind::Server;
    span.name = "GET /health".into();
    span.attributes = attributes;
    span
}

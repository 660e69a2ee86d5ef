//! Spans of unsampled Lambda invocations, sent as `T1U` over the OTLP-over-UDP transport when
//! `TRACE_SEND_UNSAMPLED=true`: X-Ray then sees every invocation (Transaction Search can count
//! and search all of them) while only sampled ones become traces. This is what AWS's own SDKs
//! do inside Lambda (aws-otel-js-instrumentation `aws-batch-unsampled-span-processor.ts` and the
//! Python and Java equivalents: an always-record sampler, a processor that takes the spans the
//! batch processor ignores, the `aws.trace.flag.sampled=false` attribute, the `T1U` prefix).
//!
//! Two parts, both off unless the switch is on:
//! - [`RecordUnsampled`] wraps the sampler so a span it would drop is recorded instead, still
//!   unsampled (its trace flags say so, and the header it propagates says `Sampled=0`).
//! - [`SampledOnly`] wraps the batch processor, which exports whatever it is handed (the SDK's
//!   `BatchSpanProcessor` does not look at the sampled flag), so those spans never go as `T1S`.
//! - [`UnsampledSpans`] keeps those spans (at most [`MAX_QUEUED`]; beyond, dropped and
//!   counted) and sends them at the flush Lambda's loop makes after the response is posted,
//!   so no request pays for them. The batch processor still exports sampled spans only.
//!
//! Recording every span costs what a sampled request costs on the request path (span_cost
//! bench); the default stays off.

use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::trace::{Link, Span as _, SpanKind, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    SamplingDecision, SamplingResult, ShouldSample, Span, SpanData, SpanExporter, SpanProcessor,
};

use super::otlp_udp::OtlpUdpExporter;
use super::udp_link::Throttle;

/// The attribute AWS's SDKs put on the spans of unsampled traces.
pub const UNSAMPLED_ATTRIBUTE: &str = "aws.trace.flag.sampled";

/// Unsampled spans held between two flushes; more are dropped and counted.
pub const MAX_QUEUED: usize = 2048;

/// A sampler that records what `inner` would drop.
#[derive(Debug, Clone)]
pub struct RecordUnsampled<S> {
    inner: S,
}

impl<S> RecordUnsampled<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: ShouldSample + Clone + 'static> ShouldSample for RecordUnsampled<S> {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let mut result =
            self.inner
                .should_sample(parent_context, trace_id, name, span_kind, attributes, links);
        if result.decision == SamplingDecision::Drop {
            result.decision = SamplingDecision::RecordOnly;
        }
        result
    }
}

/// Hands `inner` the spans of sampled traces only.
#[derive(Debug)]
pub struct SampledOnly<P> {
    inner: P,
}

impl<P> SampledOnly<P> {
    pub fn new(inner: P) -> Self {
        Self { inner }
    }
}

impl<P: SpanProcessor> SpanProcessor for SampledOnly<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

#[derive(Debug, Default)]
struct Queue {
    spans: Vec<SpanData>,
    overflow: Throttle,
}

/// Keeps the spans of unsampled traces until the next flush, then sends them as `T1U`.
#[derive(Debug)]
pub struct UnsampledSpans {
    exporter: OtlpUdpExporter,
    queue: Mutex<Queue>,
}

impl UnsampledSpans {
    /// `exporter` must be [`OtlpUdpExporter::unsampled`].
    pub fn new(exporter: OtlpUdpExporter) -> Self {
        Self {
            exporter,
            queue: Mutex::new(Queue::default()),
        }
    }

    fn send_queued(&self) {
        let spans = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut queue.spans)
        };
        if !spans.is_empty() {
            self.exporter.send(spans);
        }
    }
}

impl SpanProcessor for UnsampledSpans {
    fn on_start(&self, span: &mut Span, _cx: &Context) {
        if !span.span_context().is_sampled() {
            span.set_attribute(KeyValue::new(UNSAMPLED_ATTRIBUTE, false));
        }
    }

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.spans.len() < MAX_QUEUED {
            queue.spans.push(span);
            return;
        }
        super::metrics::record_spans_dropped(1);
        if let Some(count) = queue.overflow.note(1) {
            tracing::warn!(
                target: "apuntador::telemetry",
                dropped_spans = count,
                "unsampled spans dropped: more than {MAX_QUEUED} between two flushes (warned at most once a minute)"
            );
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.send_queued();
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.send_queued();
        Ok(())
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        SpanExporter::set_resource(&mut self.exporter, resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::xray_daemon::DaemonAddress;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceState, Tracer, TracerProvider as _,
    };
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use std::net::UdpSocket;

    #[test]
    fn a_dropped_decision_becomes_record_only_and_a_sampled_one_stays() {
        let sampler = RecordUnsampled::new(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let parent = |flags| {
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(7u128),
                SpanId::from(9u64),
                flags,
                true,
                TraceState::default(),
            ))
        };
        let decide = |cx: &Context| {
            sampler
                .should_sample(
                    Some(cx),
                    TraceId::from(7u128),
                    "x",
                    &SpanKind::Server,
                    &[],
                    &[],
                )
                .decision
        };
        assert_eq!(
            decide(&parent(TraceFlags::default())),
            SamplingDecision::RecordOnly
        );
        assert_eq!(
            decide(&parent(TraceFlags::SAMPLED)),
            SamplingDecision::RecordAndSample
        );
    }

    /// The SDK's batch processor exports unsampled spans it is handed; the wrapper keeps them
    /// from going out as `T1S`.
    #[test]
    fn the_batch_processor_sees_sampled_spans_only() {
        use opentelemetry_sdk::trace::{BatchSpanProcessor, InMemorySpanExporter};
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_sampler(RecordUnsampled::new(Sampler::AlwaysOff))
            .with_span_processor(SampledOnly::new(
                BatchSpanProcessor::builder(exporter.clone()).build(),
            ))
            .build();
        provider.tracer("test").in_span("unsampled", |_| {});
        provider.force_flush().unwrap();
        assert!(exporter.get_finished_spans().unwrap().is_empty());
    }

    #[test]
    fn unsampled_spans_wait_for_the_flush_and_go_as_t1u_with_the_attribute() {
        let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address =
            DaemonAddress::parse(Some(&listener.local_addr().unwrap().to_string())).unwrap();
        let provider = SdkTracerProvider::builder()
            .with_sampler(RecordUnsampled::new(Sampler::AlwaysOff))
            .with_span_processor(UnsampledSpans::new(OtlpUdpExporter::unsampled(&address)))
            .build();
        let tracer = provider.tracer("test");
        tracer.in_span("GET /health", |_| {});
        let mut buf = vec![0u8; 70_000];
        assert!(listener.recv(&mut buf).is_err(), "nothing before the flush");
        provider.force_flush().unwrap();
        listener.set_nonblocking(false).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let n = listener.recv(&mut buf).unwrap();
        let datagram = &buf[..n];
        let body = datagram
            .strip_prefix(super::super::otlp_udp::PROTOCOL_HEADER)
            .unwrap();
        assert!(body.starts_with(b"T1U"));
        let text = {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&body[3..])
                .unwrap();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        assert!(text.contains(UNSAMPLED_ATTRIBUTE), "{text}");
        assert!(text.contains("GET /health"));
    }
}

//! The OTLP-over-UDP transport (`OTEL_TRACES_EXPORTER=otlp-udp`): what AWS's own OpenTelemetry
//! SDKs (ADOT Python, Java and JavaScript) send inside Lambda instead of X-Ray segment
//! documents. Each datagram is the daemon protocol's header line, `{"format":"json","version":1}`
//! and a newline, then `T1S` (sampled spans) and the base64 of an OTLP
//! `ExportTraceServiceRequest` in protobuf, to `AWS_XRAY_DAEMON_ADDRESS`, the X-Ray endpoint
//! Lambda runs for a function with active tracing (reference: aws-otel-python-instrumentation,
//! `aws-opentelemetry-distro/src/amazon/opentelemetry/distro/otlp_udp_exporter.py`). No layer,
//! no collector, no HTTP round trip, and not the segment-document format AWS is retiring.
//!
//! What this module adds to the reference exporter, which sends a batch as one datagram:
//! - **The datagram limit.** A batch whose datagram would exceed [`MAX_DATAGRAM`] is split in
//!   halves until each part fits, never truncated; a single span too large on its own is
//!   dropped and counted.
//! - **Encoding as the OTLP exporter encodes** ([`super::otlp_batch`]): `opentelemetry-proto`'s
//!   transform and `prost`, the code the OTLP/HTTP exporter runs, not a hand-written encoder.
//! - **A missing endpoint costs nothing.** The link is the daemon transport's
//!   ([`super::udp_link`]): a non-blocking socket, losses counted and logged at most once a
//!   minute, the spans lost as UDP intends.
//!
//! Unsampled invocations go as `T1U` when `TRACE_SEND_UNSAMPLED=true` ([`super::unsampled`]):
//! that is what lets Transaction Search count every invocation, at the cost of recording
//! every span.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::Message;

use super::otlp_batch;
use super::udp_link::{UdpLink, export_result};
use super::xray_daemon::DaemonAddress;

/// The line every datagram starts with (the ADOT SDKs' form: no spaces).
pub const PROTOCOL_HEADER: &[u8] = b"{\"format\":\"json\",\"version\":1}\n";

/// What follows the header line for sampled spans.
pub const SAMPLED_PREFIX: &[u8] = b"T1S";

/// What follows the header line for spans of unsampled invocations ([`super::unsampled`]).
pub const UNSAMPLED_PREFIX: &[u8] = b"T1U";

/// Largest datagram sent: the IPv4 UDP payload limit.
pub const MAX_DATAGRAM: usize = 65_507;

/// Counters of one export.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub datagrams: usize,
    /// Spans too large for a datagram on their own.
    pub oversize: usize,
    /// Datagrams the socket would not take, or that had no socket.
    pub failed: usize,
}

/// The span exporter of the OTLP-over-UDP transport.
#[derive(Debug)]
pub struct OtlpUdpExporter {
    resource: ResourceAttributesWithSchema,
    link: UdpLink,
    /// [`SAMPLED_PREFIX`] or [`UNSAMPLED_PREFIX`].
    prefix: &'static [u8],
}

/// Length of the datagram carrying a request of `encoded` protobuf bytes.
fn datagram_len(encoded: usize) -> usize {
    PROTOCOL_HEADER.len() + SAMPLED_PREFIX.len() + encoded.div_ceil(3) * 4
}

/// The datagram carrying `request` after `prefix`.
fn datagram(request: &ExportTraceServiceRequest, prefix: &[u8]) -> Vec<u8> {
    let encoded = request.encode_to_vec();
    let mut out = Vec::with_capacity(datagram_len(encoded.len()));
    out.extend_from_slice(PROTOCOL_HEADER);
    out.extend_from_slice(prefix);
    out.extend_from_slice(STANDARD.encode(encoded).as_bytes());
    out
}

impl OtlpUdpExporter {
    /// Sends sampled spans (`T1S`). Never fails on the endpoint: an address that does not
    /// resolve is looked up again once a minute, spans being dropped meanwhile.
    pub fn new(address: &DaemonAddress) -> Self {
        Self {
            resource: ResourceAttributesWithSchema::default(),
            link: UdpLink::new(address, "X-Ray UDP endpoint"),
            prefix: SAMPLED_PREFIX,
        }
    }

    /// Sends the spans of unsampled invocations (`T1U`).
    pub fn unsampled(address: &DaemonAddress) -> Self {
        Self {
            prefix: UNSAMPLED_PREFIX,
            ..Self::new(address)
        }
    }

    /// The datagrams for `spans`: as few as fit under [`MAX_DATAGRAM`], each span in one of
    /// them; the count of spans too large alone.
    pub fn datagrams(&self, spans: &[SpanData]) -> (Vec<Vec<u8>>, usize) {
        let (datagrams, oversize) = self.counted_datagrams(spans);
        (datagrams.into_iter().map(|(d, _)| d).collect(), oversize)
    }

    /// [`Self::datagrams`], each with the count of spans it holds.
    fn counted_datagrams(&self, spans: &[SpanData]) -> (Vec<(Vec<u8>, usize)>, usize) {
        let split = otlp_batch::split(spans, &self.resource, &|encoded| {
            datagram_len(encoded) <= MAX_DATAGRAM
        });
        let datagrams = split
            .requests
            .iter()
            .map(|r| (datagram(r, self.prefix), otlp_batch::span_count(r)))
            .collect();
        (datagrams, split.oversize)
    }

    /// Encodes and sends one batch; never blocks on the network.
    pub fn send(&self, batch: Vec<SpanData>) -> Sent {
        let (datagrams, oversize) = self.counted_datagrams(&batch);
        let delivery = self.link.deliver(
            datagrams.iter().map(|(d, spans)| (d.as_slice(), *spans)),
            oversize,
            "each alone is over the OTLP datagram limit",
        );
        Sent {
            datagrams: delivery.sent,
            oversize,
            failed: delivery.failed,
        }
    }
}

impl SpanExporter for OtlpUdpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let sent = self.send(batch);
        export_result(sent.datagrams, sent.failed, "X-Ray UDP endpoint")
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.resource = ResourceAttributesWithSchema::from(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::super::otlp_batch::tests::span;
    use super::*;
    use opentelemetry::KeyValue;
    use std::net::UdpSocket;
    use std::time::Duration;

    /// The spans of a datagram, checked as the X-Ray endpoint reads it.
    fn decode(datagram: &[u8]) -> ExportTraceServiceRequest {
        assert!(datagram.len() <= MAX_DATAGRAM, "{} bytes", datagram.len());
        let body = datagram
            .strip_prefix(PROTOCOL_HEADER)
            .expect("the header line");
        let payload = body.strip_prefix(SAMPLED_PREFIX).expect("T1S");
        let bytes = STANDARD.decode(payload).expect("base64");
        ExportTraceServiceRequest::decode(bytes.as_slice()).expect("an ExportTraceServiceRequest")
    }

    #[test]
    fn a_batch_is_one_datagram_the_endpoint_can_read() {
        let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let address =
            DaemonAddress::parse(Some(&listener.local_addr().unwrap().to_string())).unwrap();
        let exporter = OtlpUdpExporter::new(&address);
        let sent = exporter.send(vec![span(1, vec![]), span(2, vec![])]);
        assert_eq!(
            sent,
            Sent {
                datagrams: 1,
                ..Sent::default()
            }
        );
        let mut buf = vec![0u8; 70_000];
        let n = listener.recv(&mut buf).unwrap();
        let request = decode(&buf[..n]);
        assert_eq!(otlp_batch::span_count(&request), 2);
        let first = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(first.parent_span_id, 0x5399_5c3f_42cd_8ad8u64.to_be_bytes());
        assert_eq!(
            first.trace_id,
            0x6b12_f9c3_0000_0000_0000_0000_0000_0001u128.to_be_bytes()
        );
    }

    #[test]
    fn unsampled_spans_go_as_t1u_and_the_size_estimate_is_exact() {
        let address = DaemonAddress::parse(Some("127.0.0.1:9")).unwrap();
        let exporter = OtlpUdpExporter::unsampled(&address);
        let (datagrams, _) = exporter.datagrams(&[span(1, vec![])]);
        let body = datagrams[0].strip_prefix(PROTOCOL_HEADER).unwrap();
        assert!(body.starts_with(UNSAMPLED_PREFIX), "{:?}", &body[..3]);
        for n in 0..7 {
            let request = ExportTraceServiceRequest {
                resource_spans: vec![Default::default(); n],
            };
            assert_eq!(
                datagram(&request, SAMPLED_PREFIX).len(),
                datagram_len(request.encoded_len())
            );
        }
    }

    #[test]
    fn large_batches_are_split_and_a_span_too_large_alone_is_dropped() {
        let exporter = OtlpUdpExporter::new(&DaemonAddress::parse(Some("127.0.0.1:9")).unwrap());
        let batch: Vec<SpanData> = (0..300)
            .map(|n| span(n, vec![KeyValue::new("payload", "x".repeat(500))]))
            .collect();
        let (datagrams, oversize) = exporter.datagrams(&batch);
        assert_eq!(oversize, 0);
        assert!(datagrams.len() > 2, "{} datagrams", datagrams.len());
        let total: usize = datagrams
            .iter()
            .map(|d| otlp_batch::span_count(&decode(d)))
            .sum();
        assert_eq!(total, 300, "every span once, none truncated");

        let huge = span(7, vec![KeyValue::new("payload", "x".repeat(MAX_DATAGRAM))]);
        let (datagrams, oversize) = exporter.datagrams(&[span(1, vec![]), huge, span(2, vec![])]);
        assert_eq!(oversize, 1);
        let total: usize = datagrams
            .iter()
            .map(|d| otlp_batch::span_count(&decode(d)))
            .sum();
        assert_eq!(total, 2, "the others still go");
    }

    #[test]
    fn no_endpoint_costs_counted_failures() {
        let closed = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().to_string()
        };
        let exporter = OtlpUdpExporter::new(&DaemonAddress::parse(Some(&closed)).unwrap());
        let mut failed = 0;
        for _ in 0..3 {
            let sent = exporter.send(vec![span(1, vec![])]);
            failed += sent.failed;
        }
        // On loopback a send to a closed port fails every other time (the ICMP answer).
        assert!(failed >= 1, "{failed}");
        let unresolvable =
            OtlpUdpExporter::new(&DaemonAddress::parse(Some("no-such-host.invalid:2000")).unwrap());
        assert_eq!(unresolvable.send(vec![span(1, vec![])]).failed, 1);
    }
}

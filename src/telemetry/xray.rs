//! X-Ray identifiers: the `1-xxxxxxxx-yyyyyyyyyyyyyyyyyyyyyyyy` form of a trace id, and the
//! parent context carried by an X-Ray trace header (`Root=…;Parent=…;Sampled=…;Lineage=…`).

use opentelemetry::Context;
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_aws::trace::XrayIdGenerator;
use opentelemetry_aws::trace::xray_propagator::{span_context_from_str, span_context_to_string};
use opentelemetry_sdk::trace::IdGenerator;

/// `1-` + the first 8 hex digits (epoch seconds) + `-` + the remaining 24.
pub fn xray_trace_id(trace_id: TraceId) -> String {
    String::from_utf8_lossy(&xray_trace_id_bytes(trace_id)).into_owned()
}

/// [`xray_trace_id`] without an allocation (it is written on every response and log line).
pub fn xray_trace_id_bytes(trace_id: TraceId) -> [u8; 35] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 35];
    out[0] = b'1';
    out[1] = b'-';
    out[10] = b'-';
    for (i, byte) in trace_id.to_bytes().iter().enumerate() {
        let at = if i < 4 { 2 + 2 * i } else { 11 + 2 * (i - 4) };
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
    }
    out
}

/// How old a trace id's time may be: X-Ray refuses segments of traces older than 30 days.
const MAX_TRACE_AGE_SECS: u64 = 30 * 24 * 3600;
/// How far ahead of this clock a trace id's time may be (X-Ray's allowance for skew).
const MAX_TRACE_SKEW_SECS: u64 = 5 * 60;

/// The remote parent described by an X-Ray trace header, as a context to start a span in.
/// `Sampled=0/1` becomes the parent's sampled flag and `Lineage` (like any other key) rides in
/// the trace state. Returns `None` for a header without a valid `Root` and `Parent`, and for a
/// `Root` whose time X-Ray would refuse (older than 30 days or from the future): joining it
/// would lose the whole trace, so the request starts a fresh one instead.
pub fn parent_from_header(header: &str) -> Option<Context> {
    let span_context = span_context_from_str(header.trim())?;
    (span_context.is_valid() && acceptable_time(span_context.trace_id()))
        .then(|| Context::new().with_remote_span_context(span_context))
}

/// Whether X-Ray would store a trace with this id: its first 32 bits are epoch seconds.
pub fn acceptable_time(trace_id: TraceId) -> bool {
    let secs = u64::from(u32::from_be_bytes(
        trace_id.to_bytes()[..4].try_into().unwrap_or_default(),
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs + MAX_TRACE_AGE_SECS >= now && secs <= now + MAX_TRACE_SKEW_SECS
}

/// The X-Ray trace header (`X-Amzn-Trace-Id`) that names the span of `cx` as the parent of an
/// outgoing call; `None` outside any span.
pub fn header_of(cx: &Context) -> Option<String> {
    span_context_to_string(cx.span().span_context())
}

/// A new trace id in X-Ray form (first 32 bits are the current time), for responses whose
/// request is not traced.
pub fn new_trace_id() -> TraceId {
    XrayIdGenerator::default().new_trace_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header of now (X-Ray refuses trace ids older than 30 days).
    fn header() -> String {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        format!(
            "Root=1-{secs:08x}-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1"
        )
    }

    #[test]
    fn formats_trace_ids_the_x_ray_way() {
        let id = TraceId::from_hex("5759e988bd862e3fe1be46a994272793").unwrap();
        assert_eq!(xray_trace_id(id), "1-5759e988-bd862e3fe1be46a994272793");
    }

    #[test]
    fn header_gives_trace_parent_sampling_and_lineage() {
        let header = header();
        let cx = parent_from_header(&header).unwrap();
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            xray_trace_id(sc.trace_id()),
            header["Root=".len()..header.find(';').unwrap()]
        );
        assert_eq!(sc.span_id().to_string(), "53995c3f42cd8ad8");
        assert!(sc.is_sampled());
        assert!(sc.is_remote());
        assert_eq!(sc.trace_state().get("lineage"), Some("a87bd80c:1"));
    }

    #[test]
    fn not_sampled_header_is_honoured() {
        let header = header().replace("Sampled=1", "Sampled=0");
        let cx = parent_from_header(&header).unwrap();
        assert!(!cx.span().span_context().is_sampled());
    }

    #[test]
    fn a_parent_round_trips_through_the_header() {
        let sent = header();
        let cx = parent_from_header(&sent).unwrap();
        let header = header_of(&cx).unwrap();
        assert!(
            header.starts_with(&sent[..sent.find(";Lineage").unwrap()]),
            "{header}"
        );
        assert_eq!(header_of(&Context::new()), None);
    }

    #[test]
    fn garbage_headers_have_no_parent() {
        assert!(parent_from_header("").is_none());
        assert!(parent_from_header("Root=nope").is_none());
        assert!(parent_from_header("Root=1-5759e988-bd862e3fe1be46a994272793").is_none());
    }

    #[test]
    fn a_root_x_ray_would_refuse_starts_a_fresh_trace() {
        let stale = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        assert!(parent_from_header(stale).is_none(), "2016 is too old");
        let future = "Root=1-ffffff00-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        assert!(
            parent_from_header(future).is_none(),
            "2106 is too far ahead"
        );
        assert!(acceptable_time(new_trace_id()));
    }

    #[test]
    fn new_ids_start_with_the_current_time() {
        let id = xray_trace_id(new_trace_id());
        let secs = u64::from_str_radix(&id[2..10], 16).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(secs) < 5, "{id}");
    }
}

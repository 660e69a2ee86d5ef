//! X-Ray identifiers: the `1-xxxxxxxx-yyyyyyyyyyyyyyyyyyyyyyyy` form of a trace id, and the
//! parent context carried by an X-Ray trace header (`Root=…;Parent=…;Sampled=…;Lineage=…`).
//!
//! What a caller writes in that header is hostile until checked: a parent is joined only if
//! X-Ray would store its trace ([`joinable`]), and of the header's other keys only a
//! well-formed `Lineage` (which AWS uses to detect recursive invocation loops) is kept, and
//! sent on only to AWS ([`aws_header_of`]); any other key a caller adds would otherwise ride
//! in the trace state into every span and every downstream call.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceId, TraceState};
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
/// `Sampled=0/1` becomes the parent's sampled flag; a well-formed `Lineage` rides in the trace
/// state, and nothing else does. Returns `None` for a header without a valid `Root` and
/// `Parent`, and for a `Root` whose time X-Ray would refuse (older than 30 days or from the
/// future): joining it would lose the whole trace, so the request starts a fresh one instead.
pub fn parent_from_header(header: &str) -> Option<Context> {
    joinable(
        &Context::new().with_remote_span_context(span_context_from_str(header.trim())?),
        true,
    )
}

/// The Root of an `X-Amzn-Trace-Id` value, if it has a valid one.
pub fn root_of_header(header: &str) -> Option<TraceId> {
    span_context_from_str(header.trim()).map(|sc| sc.trace_id())
}

/// The incoming parent a request may join, whichever propagator read it (`X-Amzn-Trace-Id`
/// or `traceparent`), or `None` for a fresh trace: a valid span context, with its trace state
/// cut down to a well-formed `lineage`, unless its trace id is X-Ray-shaped and X-Ray would
/// refuse it (joining would lose the trace). X-Ray-shaped: read from an X-Ray header
/// (`from_xray_header`), or an id whose first 32 bits read as a time between 2016 and now,
/// as X-Ray's and the ADOT SDKs' generators make them, in whatever header it came. A random
/// W3C id (any other time part) is joined as it is.
pub fn joinable(cx: &Context, from_xray_header: bool) -> Option<Context> {
    let span = cx.span();
    let incoming = span.span_context();
    let trace_id = incoming.trace_id();
    if !incoming.is_valid()
        || (from_xray_header || xray_shaped(trace_id)) && !acceptable_time(trace_id)
    {
        return None;
    }
    Some(Context::new().with_remote_span_context(lineage_only(incoming)))
}

/// `sc` with its trace state cut down to a well-formed `lineage`.
fn lineage_only(sc: &SpanContext) -> SpanContext {
    let trace_state = sc
        .trace_state()
        .get("lineage")
        .filter(|value| well_formed_lineage(value))
        .and_then(|value| TraceState::from_key_value([("lineage", value)]).ok())
        .unwrap_or_default();
    SpanContext::new(
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags(),
        sc.is_remote(),
        trace_state,
    )
}

/// AWS's `Lineage` value: up to ten `|`-separated entries of 8 hex digits, a colon and a
/// count (`a87bd80c:1`), optionally behind a version (`1:a87bd80c:0`).
pub fn well_formed_lineage(value: &str) -> bool {
    let entry = |e: &str| {
        let parts: Vec<&str> = e.split(':').collect();
        let (hash, count) = match parts.as_slice() {
            [hash, count] => (*hash, *count),
            [version, hash, count] if is_number(version) => (*hash, *count),
            _ => return false,
        };
        hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()) && is_number(count)
    };
    let entries: Vec<&str> = value.split('|').collect();
    !value.is_empty() && entries.len() <= 10 && entries.into_iter().all(entry)
}

fn is_number(text: &str) -> bool {
    (1..=5).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// 2016-01-01, before X-Ray's first trace ids.
const XRAY_ERA_START_SECS: u64 = 1_451_606_400;

/// The first 32 bits of a trace id, which X-Ray reads as epoch seconds, and the time now.
fn id_time(trace_id: TraceId) -> (u64, u64) {
    let secs = u64::from(u32::from_be_bytes(
        trace_id.to_bytes()[..4].try_into().unwrap_or_default(),
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs, now)
}

/// Whether X-Ray would store a trace with this id: its first 32 bits are epoch seconds.
pub fn acceptable_time(trace_id: TraceId) -> bool {
    let (secs, now) = id_time(trace_id);
    secs + MAX_TRACE_AGE_SECS >= now && secs <= now + MAX_TRACE_SKEW_SECS
}

/// Whether the id looks made by an X-Ray id generator: its time part lies between 2016 and
/// now (plus X-Ray's allowance for skew).
fn xray_shaped(trace_id: TraceId) -> bool {
    let (secs, now) = id_time(trace_id);
    (XRAY_ERA_START_SECS..=now + MAX_TRACE_SKEW_SECS).contains(&secs)
}

/// The X-Ray trace header (`X-Amzn-Trace-Id`) that names the span of `cx` as the parent of a
/// call to AWS: `Root`, `Parent`, `Sampled` and a well-formed `Lineage`, nothing else; `None`
/// outside any span. Third parties (the OAuth providers) get no trace header at all.
pub fn aws_header_of(cx: &Context) -> Option<String> {
    span_context_to_string(&lineage_only(cx.span().span_context()))
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
        let header = aws_header_of(&cx).unwrap();
        assert_eq!(header, sent);
        assert_eq!(aws_header_of(&Context::new()), None);
    }

    /// Review item 2: unknown keys of the incoming header were kept as trace state and sent
    /// on in every outgoing `X-Amzn-Trace-Id`.
    #[test]
    fn only_root_parent_sampled_and_a_well_formed_lineage_travel() {
        let sent = header().replace(
            ";Lineage=a87bd80c:1",
            &format!(
                ";Self=1-5759e988-x;Foo={};Lineage=a87bd80c:1",
                "x".repeat(200)
            ),
        );
        let cx = parent_from_header(&sent).unwrap();
        let span = cx.span();
        let state = span.span_context().trace_state();
        assert_eq!(state.get("self"), None);
        assert_eq!(state.get("foo"), None);
        assert_eq!(state.get("lineage"), Some("a87bd80c:1"));
        let out = aws_header_of(&cx).unwrap();
        assert_eq!(out, header(), "{out}");

        let bad_lineage = header().replace("a87bd80c:1", "evil;Injected=1");
        let cx = parent_from_header(&bad_lineage).unwrap();
        assert!(!aws_header_of(&cx).unwrap().contains("Lineage"));
        for good in ["a87bd80c:1", "12326a9d:0|68fd508a:5", "1:a87bd80c:0"] {
            assert!(well_formed_lineage(good), "{good}");
        }
        for bad in [
            "",
            "a87bd80c",
            "a87bd80:1",
            "zzzzzzzz:1",
            "a87bd80c:x",
            "a87bd80c:123456",
        ] {
            assert!(!well_formed_lineage(bad), "{bad}");
        }
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

    /// Review of issue 23: the stale-id check applied to every W3C parent refused nearly all
    /// random ids (their first 32 bits read as a time far from now).
    #[test]
    fn random_w3c_ids_are_joined_and_stale_x_ray_shaped_ones_are_not() {
        use opentelemetry::trace::{SpanId, TraceFlags};
        let cx = |id: u128| {
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(id),
                SpanId::from(7u64),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ))
        };
        let random_past = cx(0x0a1b2c3d_bd862e3f_e1be46a9_94272793);
        let random_future = cx(0xf1e2d3c4_bd862e3f_e1be46a9_94272793);
        let stale_xray = cx(0x5759e988_bd862e3f_e1be46a9_94272793);
        assert!(joinable(&random_past, false).is_some(), "1975: not X-Ray's");
        assert!(
            joinable(&random_future, false).is_some(),
            "2098: not X-Ray's"
        );
        assert!(
            joinable(&stale_xray, false).is_none(),
            "2016: X-Ray-shaped and stale"
        );
        assert!(
            joinable(&random_future, true).is_none(),
            "from an X-Ray header, any time X-Ray refuses"
        );
        let fresh = cx(u128::from_be_bytes(new_trace_id().to_bytes()));
        assert!(joinable(&fresh, false).is_some() && joinable(&fresh, true).is_some());
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

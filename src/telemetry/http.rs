//! The request layer: a SERVER span per traced request, parented on the X-Ray header (the
//! Lambda context's under Lambda, the incoming `X-Amzn-Trace-Id`/`traceparent` in server mode),
//! HTTP and FaaS attributes, status Error on 5xx, one access-log line per request, the
//! request's metrics (route, status class, latency; the cold start; [`super::metrics`]), and
//! `X-Trace-ID` on every response.
//!
//! In server mode the sampler is asked before the span is built ([`super::sampling`]): an
//! unsampled request runs under a bare OpenTelemetry context with its ids (log lines and
//! AWS calls' `X-Amzn-Trace-Id: …;Sampled=0` carry them) and gets no span at all. Under Lambda
//! the span is always built and the header's `Sampled` decides.
//!
//! The span also carries the X-Ray annotations ([`super::annotations`]): route, status, cold
//! start, service version, the OAuth provider a route names, and the error class an error
//! response leaves in its extensions ([`crate::error::ErrorClass`]).
//!
//! Health checks (`/health`, `/health/public`) get neither a span nor an access line unless
//! `TRACE_HEALTH_CHECKS=true`; they still get an `X-Trace-ID`, and are counted in the metrics
//! (under their own route, so the other routes' figures stay apart).
//!
//! Everything read from the request is the caller's: an incoming parent is joined only as
//! [`xray::joinable`] allows (a trace X-Ray would store, no caller-chosen trace-state keys),
//! and its `Sampled=1` is bounded by the sampler ([`sampling::UpstreamBounded`]);
//! `client.address` comes from the socket peer, or from the `X-Forwarded-For` entry the
//! configured number of trusted proxies vouch for (`TRUSTED_PROXY_HOPS`); values X-Ray limits
//! are clipped and marked ([`super::limits`]) so no span is refused for its length.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use opentelemetry::Context;
use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceId};
use opentelemetry_aws::trace::XrayIdGenerator;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::trace::{IdGenerator, Sampler, SamplingDecision, ShouldSample};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::APP_VERSION;
use crate::error::ErrorClass;
use crate::oauth::provider::ProviderId;

use super::annotations;
use super::lambda::take_cold_start;
use super::limits::{SPAN_PATH, XRAY_HTTP_FIELD, clip, truncate};
use super::metrics;
use super::sampling;
use super::xray::{self, new_trace_id, parent_from_header, xray_trace_id_bytes};

/// The response header that gives clients the trace id of their request.
pub const TRACE_ID_HEADER: HeaderName = HeaderName::from_static("x-trace-id");

/// Longest path kept on a span's `url.path` and matched by sampling rules (`url.full`, what
/// X-Ray shows, is clipped further to X-Ray's 250).
const MAX_PATH: usize = 2048;

/// Paths that load balancers and uptime checks poll.
pub(crate) const HEALTH_PATHS: [&str; 2] = ["/health", "/health/public"];

/// Shared state of the request layer.
#[derive(Clone)]
pub struct RequestTracing {
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    trace_health_checks: bool,
    /// Shared, not boxed: axum clones the layer's state for every request.
    sampler: Arc<dyn ShouldSample>,
    /// Proxies in front of a server whose `X-Forwarded-For` entries are trusted.
    trusted_proxy_hops: usize,
}

impl RequestTracing {
    /// With the SDK's default sampler (parent-based, always on) until [`Self::with_sampler`].
    pub fn new(
        propagator: Arc<dyn TextMapPropagator + Send + Sync>,
        trace_health_checks: bool,
    ) -> Self {
        Self {
            propagator,
            trace_health_checks,
            sampler: Arc::new(Sampler::ParentBased(Box::new(Sampler::AlwaysOn))),
            trusted_proxy_hops: 0,
        }
    }

    /// How many proxies in front of a server append to `X-Forwarded-For` (an ALB: 1); the
    /// client is the entry the outermost of them added. 0 (the default): the socket peer.
    pub fn with_trusted_proxy_hops(mut self, hops: usize) -> Self {
        self.trusted_proxy_hops = hops;
        self
    }

    /// The `X-Forwarded-For` hops trusted to name the client (the rate limiter reads it too).
    pub fn trusted_proxy_hops(&self) -> usize {
        self.trusted_proxy_hops
    }

    /// The sampler server-mode requests are decided by before their span is built: the
    /// tracer provider's, so both decide alike.
    pub fn with_sampler(mut self, sampler: Box<dyn ShouldSample>) -> Self {
        self.sampler = Arc::from(sampler);
        self
    }
}

/// Lambda facts about the current invocation, read from the request extensions that
/// `lambda_http` sets.
struct Invocation {
    request_id: String,
    function_name: String,
    function_arn: String,
    parent: Option<Context>,
    gateway_request_id: Option<String>,
    source_ip: Option<String>,
}

fn invocation(request: &Request) -> Option<Invocation> {
    let lambda = request.lambda_context_ref()?;
    let (gateway_request_id, source_ip) = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            (ctx.request_id.clone(), ctx.http.source_ip.clone())
        }
        Some(RequestContext::ApiGatewayV1(ctx)) => {
            (ctx.request_id.clone(), ctx.identity.source_ip.clone())
        }
        _ => (None, None),
    };
    Some(Invocation {
        request_id: lambda.request_id.clone(),
        function_name: lambda.env_config.function_name.clone(),
        function_arn: lambda.invoked_function_arn.clone(),
        parent: lambda.xray_trace_id.as_deref().and_then(parent_from_header),
        gateway_request_id,
        source_ip,
    })
}

/// The `X-Forwarded-For` entry added by the outermost of `hops` trusted proxies (each appends
/// the address it was reached from, so that is the `hops`-th from the right), if it is an IP
/// address. Entries further left are the caller's to write; with fewer entries than trusted
/// hops the chain is not the one configured, and nothing is taken. Several headers are read
/// as one list, in order; entries are split as bytes, so what a caller writes to the left
/// (even bytes that are not text) cannot spoil the entry the proxy added.
pub(crate) fn forwarded_for(headers: &HeaderMap, hops: usize) -> Option<String> {
    if hops == 0 {
        return None;
    }
    let mut entries: Vec<&[u8]> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        entries.extend(value.as_bytes().split(|b| *b == b','));
    }
    let at = entries.len().checked_sub(hops)?;
    std::str::from_utf8(entries[at])
        .ok()?
        .trim()
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

/// The URL X-Ray shows for the request (`url.full`): scheme, host and path, never the query
/// (it can hold an OAuth code), clipped to what X-Ray accepts.
fn full_url(
    request: &Request,
    host: Option<&str>,
    under_lambda: bool,
    path: &str,
) -> Option<String> {
    let host = host?;
    let forwarded = request
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok());
    let scheme = match forwarded {
        Some("https") => "https",
        Some("http") => "http",
        _ if under_lambda => "https",
        _ => "http",
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Some(clip(&format!("{scheme}://{host}{path}"), XRAY_HTTP_FIELD).into_owned())
}

/// The host the caller asked for (`Host`, else the URI's authority), without the port, if it
/// looks like a host name or an address: X-Ray sampling rules match on it (`server.address`),
/// and the caller writes it.
fn server_address(request: &Request) -> Option<String> {
    let raw = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))?;
    let host = match raw.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => raw.rsplit_once(':').map_or(raw, |(host, _port)| host),
    };
    let plausible = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    plausible.then(|| host.to_ascii_lowercase())
}

/// Axum middleware that wraps every request in its span. Runs outermost.
pub async fn trace_requests(
    State(tracing_state): State<RequestTracing>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    // A known method, else `_OTHER` (OpenTelemetry's convention): an extension method is
    // the caller's to make as long as the request head allows.
    let method = method_name(request.method());
    // Bounded: it becomes an attribute and rule patterns are matched against it.
    let path = truncate(request.uri().path(), MAX_PATH).to_owned();
    let lambda = invocation(&request);
    let parent = match &lambda {
        Some(invocation) => invocation.parent.clone(),
        // Whichever header the propagators read it from: a parent X-Ray would refuse (older
        // than 30 days, or ahead) starts a fresh trace, and only `Lineage` of its trace state
        // is kept.
        None => {
            let cx = tracing_state
                .propagator
                .extract(&HeaderExtractor(request.headers()));
            let from_xray_header = request
                .headers()
                .get("x-amzn-trace-id")
                .and_then(|v| v.to_str().ok())
                .and_then(xray::root_of_header)
                .is_some_and(|root| root == cx.span().span_context().trace_id());
            xray::joinable(&cx, from_xray_header)
        }
    };

    // Consumed by every invocation, traced or not: only the sandbox's first one is cold.
    let cold_start = lambda.as_ref().map(|_| take_cold_start());
    if cold_start == Some(true) {
        metrics::record_cold_start();
    }

    // The parent's trace id, else a fresh one: what an unsampled or span-less request answers.
    let own_trace_id = || {
        parent
            .as_ref()
            .map(|cx| cx.span().span_context().trace_id())
            .unwrap_or_else(new_trace_id)
    };

    // axum matches the route before a `Router::layer` middleware runs (the layer wraps each
    // route, and the fallback), so the template is known on the way in, even if the handler
    // panics.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());

    if !tracing_state.trace_health_checks && HEALTH_PATHS.contains(&path.as_str()) {
        let trace_id = own_trace_id();
        let mut response = next.run(request).await;
        metrics::record_request(
            route.as_deref(),
            response.status().as_u16(),
            started.elapsed(),
        );
        set_trace_header(&mut response, trace_id);
        return response;
    }
    let span_name = match &route {
        Some(route) if method != OTHER_METHOD => format!("{method} {route}"),
        Some(route) => format!("HTTP {route}"),
        None if method != OTHER_METHOD => method.to_owned(),
        None => "HTTP".to_owned(),
    };
    let host = server_address(&request);

    // Server mode decides before building the span: an unsampled request runs under a bare
    // context carrying its ids (log lines and AWS calls see them, `Sampled=0`), which
    // costs a fraction of a span. Under Lambda the header's decision rules and the span is
    // always built (its fields feed the log lines' `function_request_id`).
    let decide_here = lambda.is_none();
    if decide_here {
        // The trace id a root request is decided on. An unsampled one keeps it; a sampled one's
        // span gets its id from the SDK (the decision, made here, is what carries over).
        let trace_id = own_trace_id();
        let mut facts = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", path.clone()),
        ];
        if let Some(route) = &route {
            facts.push(KeyValue::new("http.route", route.clone()));
        }
        if let Some(host) = &host {
            facts.push(KeyValue::new("server.address", host.clone()));
        }
        let result = tracing_state.sampler.should_sample(
            parent.as_ref(),
            trace_id,
            &span_name,
            &SpanKind::Server,
            &facts,
            &[],
        );
        if result.decision != SamplingDecision::RecordAndSample {
            let span_context = SpanContext::new(
                trace_id,
                XrayIdGenerator::default().new_span_id(),
                TraceFlags::default(),
                false,
                result.trace_state,
            );
            let cx = Context::new().with_remote_span_context(span_context);
            let mut response = next.run(request).with_context(cx.clone()).await;
            let _attached = cx.attach();
            access_line(method, route.as_deref(), response.status(), started);
            set_trace_header(&mut response, trace_id);
            return response;
        }
    }

    // The span starts with what a sampler matches on (method, path, route, host; X-Ray rules
    // and route ratios) and the two fields log lines copy; the rest is added only when the
    // span is sampled, so an unsampled request pays for little more than its ids.
    let span = tracing::info_span!(
        "request",
        otel.name = span_name.as_str(),
        otel.kind = "server",
        "http.request.method" = method,
        "url.path" = clip(&path, SPAN_PATH).as_ref(),
        "http.route" = route.as_deref(),
        "server.address" = host.as_deref(),
        "faas.invocation_id" = lambda.as_ref().map(|i| i.request_id.as_str()),
        "faas.coldstart" = cold_start,
        "cloud.resource_id" = lambda.as_ref().map(|i| i.function_arn.as_str()),
    );
    if let Some(parent) = parent.clone() {
        let _ = span.set_parent(parent);
    }
    // Here in server mode only a sampled request is left.
    let cx = if decide_here {
        sampling::with_decision(true, || span.context())
    } else {
        span.context()
    };
    let otel = cx.span();
    let recording = otel.is_recording();
    if recording {
        otel.set_attributes(request_attributes(
            &request,
            lambda.as_ref(),
            route.as_deref(),
            &path,
            host.as_deref(),
            cold_start,
            tracing_state.trusted_proxy_hops,
        ));
    }
    let span_trace_id = otel.span_context().trace_id();
    let trace_id = if span_trace_id != TraceId::INVALID {
        span_trace_id
    } else {
        own_trace_id()
    };

    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status();
    let error_class = response
        .extensions()
        .get::<ErrorClass>()
        .map(|c| c.0.clone());
    if recording {
        let code = i64::from(status.as_u16());
        otel.set_attributes([
            KeyValue::new("http.response.status_code", code),
            KeyValue::new(annotations::HTTP_STATUS_CODE, code),
        ]);
        if status.is_server_error() {
            otel.set_status(Status::error(format!("HTTP {status}")));
        }
        if let Some(class) = error_class {
            otel.set_attributes([
                KeyValue::new("error.type", class.clone()),
                KeyValue::new(annotations::ERROR_TYPE, class),
            ]);
        }
    }
    span.in_scope(|| access_line(method, route.as_deref(), status, started));
    set_trace_header(&mut response, trace_id);
    response
}

/// What `http.request.method` says of a method this service does not know.
const OTHER_METHOD: &str = "_OTHER";

/// The method's name if it is one of HTTP's, else `_OTHER`.
fn method_name(method: &Method) -> &'static str {
    [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::CONNECT,
        Method::TRACE,
    ]
    .iter()
    .find(|known| *known == method)
    .map_or(OTHER_METHOD, |known| known.as_str())
}

/// The access line and the request's metrics: one per request, traced or not.
fn access_line(method: &str, route: Option<&str>, status: StatusCode, started: Instant) {
    let elapsed = started.elapsed();
    metrics::record_request(route, status.as_u16(), elapsed);
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    tracing::info!(
        method,
        route = route.unwrap_or("(unmatched)"),
        status = status.as_u16(),
        duration_ms = (duration_ms * 1000.0).round() / 1000.0,
        "request completed"
    );
}

/// The attributes a sampled request span gets beyond the ones it starts with.
fn request_attributes(
    request: &Request,
    lambda: Option<&Invocation>,
    route: Option<&str>,
    path: &str,
    host: Option<&str>,
    cold_start: Option<bool>,
    trusted_proxy_hops: usize,
) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(16);
    if let Some(agent) = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(KeyValue::new(
            "user_agent.original",
            clip(agent, XRAY_HTTP_FIELD).into_owned(),
        ));
    }
    if let Some(url) = full_url(request, host, lambda.is_some(), path) {
        attributes.push(KeyValue::new("url.full", url));
    }
    let client_address = lambda
        .and_then(|i| i.source_ip.clone())
        .or_else(|| forwarded_for(request.headers(), trusted_proxy_hops))
        .or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        });
    if let Some(address) = client_address {
        attributes.push(KeyValue::new("client.address", address));
    }
    if let Some(invocation) = lambda {
        attributes.extend([
            KeyValue::new("faas.trigger", "http"),
            KeyValue::new("faas.name", invocation.function_name.clone()),
            KeyValue::new("cloud.provider", "aws"),
            KeyValue::new("cloud.platform", "aws_lambda"),
        ]);
        if let Some(id) = &invocation.gateway_request_id {
            attributes.push(KeyValue::new("aws.api_gateway.request_id", id.clone()));
        }
    }
    if let Some(route) = route {
        attributes.push(KeyValue::new(annotations::HTTP_ROUTE, route.to_owned()));
        if let Some(provider) = provider_in_path(route, path) {
            attributes.push(KeyValue::new(annotations::OAUTH_PROVIDER, provider));
        }
    }
    if let Some(cold) = cold_start {
        attributes.push(KeyValue::new(annotations::COLD_START, cold));
    }
    attributes.push(KeyValue::new(annotations::SERVICE_VERSION, APP_VERSION));
    attributes.push(annotations::annotation_keys_attribute());
    attributes
}

/// The provider a route like `/oauth/token/{provider}` names, if it is one this service knows
/// (so an unknown name from a hostile path never becomes an annotation value).
fn provider_in_path(route: &str, path: &str) -> Option<&'static str> {
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(template, _)| *template == "{provider}")
        .and_then(|(_, segment)| {
            let decoded = percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .ok()?;
            ProviderId::parse(&decoded)
        })
        .map(ProviderId::as_str)
}

fn set_trace_header(response: &mut Response, trace_id: TraceId) {
    if let Ok(value) = HeaderValue::from_bytes(&xray_trace_id_bytes(trace_id)) {
        response.headers_mut().insert(TRACE_ID_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_providers_become_annotations() {
        assert_eq!(
            provider_in_path("/oauth/token/{provider}", "/oauth/token/dropbox"),
            Some("dropbox")
        );
        assert_eq!(
            provider_in_path("/oauth/token/{provider}", "/oauth/token/evil%20value"),
            None
        );
        assert_eq!(
            provider_in_path("/oauth/token/{provider}", "/oauth/token/%64ropbox"),
            Some("dropbox"),
            "decoded as the router decodes it"
        );
        assert_eq!(provider_in_path("/health", "/health"), None);
    }

    /// Review item 4: the first entry, which the client writes, became `client.address`.
    #[test]
    fn the_client_is_the_entry_the_outermost_trusted_proxy_added() {
        let headers = |value: &str| {
            let mut map = HeaderMap::new();
            map.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
            map
        };
        let forged = headers("198.51.100.7, 203.0.113.9");
        assert_eq!(
            forwarded_for(&forged, 0),
            None,
            "no proxy trusted: the peer"
        );
        assert_eq!(
            forwarded_for(&forged, 1).as_deref(),
            Some("203.0.113.9"),
            "behind one load balancer: the entry it appended"
        );
        assert_eq!(forwarded_for(&forged, 2).as_deref(), Some("198.51.100.7"));
        assert_eq!(
            forwarded_for(&forged, 3),
            None,
            "a shorter chain than configured"
        );
        assert_eq!(
            forwarded_for(&headers(" 2001:db8::1 "), 1).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(forwarded_for(&headers(&"x".repeat(70_000)), 1), None);
        assert_eq!(forwarded_for(&headers("1.2.3.4, evil<script>"), 1), None);
        let mut binary = HeaderMap::new();
        binary.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.9").unwrap(),
        );
        assert_eq!(
            forwarded_for(&binary, 1).as_deref(),
            Some("203.0.113.9"),
            "bytes that are not text to the left do not hide the trusted entry"
        );
        let mut two = HeaderMap::new();
        two.append("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
        two.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        assert_eq!(forwarded_for(&two, 1).as_deref(), Some("203.0.113.9"));
    }

    #[test]
    fn the_url_x_ray_shows_has_no_query_and_fits_its_limit() {
        let request = |path: &str| {
            Request::builder()
                .uri(path)
                .header("x-forwarded-proto", "https")
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let r = request("/oauth/callback/dropbox?code=secret");
        assert_eq!(
            full_url(&r, Some("api.example.com"), false, r.uri().path()).as_deref(),
            Some("https://api.example.com/oauth/callback/dropbox")
        );
        let long = "/".to_owned() + &"a".repeat(1000);
        let url = full_url(&request(&long), Some("api.example.com"), false, &long).unwrap();
        assert_eq!(url.len(), XRAY_HTTP_FIELD);
        assert!(url.ends_with(super::super::limits::CUT_MARK));
        assert_eq!(full_url(&request("/"), None, false, "/"), None);
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(method_name(&Method::GET), "GET");
        assert_eq!(method_name(&Method::PATCH), "PATCH");
        let long = Method::from_bytes("X".repeat(300).as_bytes()).unwrap();
        assert_eq!(method_name(&long), OTHER_METHOD);
    }

    #[test]
    fn server_address_is_the_host_without_port_when_plausible() {
        let with_host = |value: &str| {
            let request = Request::builder()
                .uri("/x")
                .header(header::HOST, value)
                .body(axum::body::Body::empty())
                .unwrap();
            server_address(&request)
        };
        assert_eq!(
            with_host("API.example.com:8443").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            with_host("[2001:db8::1]:80").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(with_host("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(with_host("evil\"host"), None);
        assert_eq!(with_host(&"a".repeat(300)), None);
    }
}

//! The request layer: one SERVER span per request, parented on the X-Ray header (the Lambda
//! context's under Lambda, the incoming `X-Amzn-Trace-Id`/`traceparent` in server mode), HTTP
//! and FaaS attributes, status Error on 5xx, one access-log line, and `X-Trace-ID` on every
//! response.
//!
//! The span also carries the X-Ray annotations ([`super::annotations`]): route, status, cold
//! start, service version, the OAuth provider a route names, and the error class an error
//! response leaves in its extensions ([`crate::error::ErrorClass`]).
//!
//! Health checks (`/health`, `/health/public`) get neither a span nor an access line unless
//! `TRACE_HEALTH_CHECKS=true`; they still get an `X-Trace-ID`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_http::HeaderExtractor;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::APP_VERSION;
use crate::error::ErrorClass;
use crate::oauth::provider::ProviderId;

use super::annotations;
use super::lambda::take_cold_start;
use super::xray::{acceptable_time, new_trace_id, parent_from_header, xray_trace_id_bytes};

/// The response header that gives clients the trace id of their request.
pub const TRACE_ID_HEADER: HeaderName = HeaderName::from_static("x-trace-id");

/// Longest `User-Agent` kept on a span: the header is the caller's to fill, and X-Ray's
/// daemon takes at most 64 KB per document.
const MAX_USER_AGENT: usize = 256;

/// Paths that load balancers and uptime checks poll.
const HEALTH_PATHS: [&str; 2] = ["/health", "/health/public"];

/// Shared state of the request layer.
#[derive(Clone)]
pub struct RequestTracing {
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    trace_health_checks: bool,
}

impl RequestTracing {
    pub fn new(
        propagator: Arc<dyn TextMapPropagator + Send + Sync>,
        trace_health_checks: bool,
    ) -> Self {
        Self {
            propagator,
            trace_health_checks,
        }
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

/// The first `X-Forwarded-For` entry, if it is an IP address: the caller can write anything
/// there, and the value ends up in the span (`client.address`, X-Ray's `client_ip`).
fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-forwarded-for")?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    first
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
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
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let lambda = invocation(&request);
    let parent = match &lambda {
        Some(invocation) => invocation.parent.clone(),
        None => {
            let cx = tracing_state
                .propagator
                .extract(&HeaderExtractor(request.headers()));
            // An X-Ray header whose Root X-Ray would refuse (older than 30 days, or ahead):
            // joining it would lose the trace, so the request starts a fresh one. A W3C
            // `traceparent` carries no time in its id and is taken as it is.
            let refused_xray = request.headers().contains_key("x-amzn-trace-id")
                && !request.headers().contains_key("traceparent")
                && !acceptable_time(cx.span().span_context().trace_id());
            (cx.span().span_context().is_valid() && !refused_xray).then_some(cx)
        }
    };

    // Consumed by every invocation, traced or not: only the sandbox's first one is cold.
    let cold_start = lambda.as_ref().map(|_| take_cold_start());

    if !tracing_state.trace_health_checks && HEALTH_PATHS.contains(&path.as_str()) {
        let trace_id = parent
            .as_ref()
            .map(|cx| cx.span().span_context().trace_id())
            .unwrap_or_else(new_trace_id);
        let mut response = next.run(request).await;
        set_trace_header(&mut response, trace_id);
        return response;
    }

    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| truncate(v, MAX_USER_AGENT).to_owned());
    let client_address = lambda
        .as_ref()
        .and_then(|i| i.source_ip.clone())
        .or_else(|| forwarded_for(request.headers()))
        .or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        });
    // axum matches the route before a `Router::layer` middleware runs (the layer wraps each
    // route, and the fallback), so the template is known on the way in, even if the handler
    // panics.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let span_name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let provider = route
        .as_deref()
        .and_then(|route| provider_in_path(route, &path));
    let host = server_address(&request);

    let span = tracing::info_span!(
        "request",
        otel.name = span_name.as_str(),
        otel.kind = "server",
        otel.status_description = Empty,
        "http.request.method" = method.as_str(),
        "url.path" = path.as_str(),
        "server.address" = host.as_deref(),
        "http.route" = route.as_deref(),
        "http.response.status_code" = Empty,
        "user_agent.original" = user_agent.as_deref(),
        "client.address" = client_address.as_deref(),
        "faas.trigger" = lambda.as_ref().map(|_| "http"),
        "faas.invocation_id" = lambda.as_ref().map(|i| i.request_id.as_str()),
        "faas.coldstart" = cold_start,
        "faas.name" = lambda.as_ref().map(|i| i.function_name.as_str()),
        "cloud.provider" = lambda.as_ref().map(|_| "aws"),
        "cloud.platform" = lambda.as_ref().map(|_| "aws_lambda"),
        "cloud.resource_id" = lambda.as_ref().map(|i| i.function_arn.as_str()),
        "aws.api_gateway.request_id" = lambda
            .as_ref()
            .and_then(|i| i.gateway_request_id.as_deref()),
        "error.type" = Empty,
        { annotations::HTTP_ROUTE } = route.as_deref(),
        { annotations::HTTP_STATUS_CODE } = Empty,
        { annotations::COLD_START } = cold_start,
        { annotations::OAUTH_PROVIDER } = provider,
        { annotations::ERROR_TYPE } = Empty,
        { annotations::SERVICE_VERSION } = APP_VERSION,
    );
    let keys = annotations::annotation_keys_attribute();
    span.set_attribute(keys.key, keys.value);
    if let Some(parent) = parent.clone() {
        let _ = span.set_parent(parent);
    }
    let span_trace_id = span.context().span().span_context().trace_id();
    let trace_id = if span_trace_id != TraceId::INVALID {
        span_trace_id
    } else {
        parent
            .as_ref()
            .map(|cx| cx.span().span_context().trace_id())
            .unwrap_or_else(new_trace_id)
    };

    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    span.record(annotations::HTTP_STATUS_CODE, i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_description", format!("HTTP {status}"));
    }
    if let Some(ErrorClass(class)) = response.extensions().get::<ErrorClass>() {
        span.record("error.type", class.as_str());
        span.record(annotations::ERROR_TYPE, class.as_str());
    }
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        tracing::info!(
            method = method.as_str(),
            route = route.as_deref().unwrap_or("(unmatched)"),
            status = status.as_u16(),
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            "request completed"
        );
    });
    set_trace_header(&mut response, trace_id);
    response
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

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
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

    #[test]
    fn only_an_ip_address_is_taken_from_x_forwarded_for() {
        let headers = |value: &str| {
            let mut map = HeaderMap::new();
            map.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
            map
        };
        assert_eq!(
            forwarded_for(&headers("203.0.113.9, 10.0.0.1")).as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            forwarded_for(&headers(" 2001:db8::1 ")).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(forwarded_for(&headers(&"x".repeat(70_000))), None);
        assert_eq!(forwarded_for(&headers("evil<script>")), None);
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

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ñññ", 3), "ñ");
        assert_eq!(
            truncate(&"x".repeat(1000), MAX_USER_AGENT).len(),
            MAX_USER_AGENT
        );
    }
}

//! The request layer: one SERVER span per request, parented on the X-Ray header (the Lambda
//! context's under Lambda, the incoming `X-Amzn-Trace-Id`/`traceparent` in server mode), HTTP
//! and FaaS attributes, status Error on 5xx, one access-log line, and `X-Trace-ID` on every
//! response.
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

use super::lambda::take_cold_start;
use super::xray::{new_trace_id, parent_from_header, xray_trace_id};

/// The response header that gives clients the trace id of their request.
pub const TRACE_ID_HEADER: HeaderName = HeaderName::from_static("x-trace-id");

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

fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-forwarded-for")?.to_str().ok()?;
    value
        .split(',')
        .next()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
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
            cx.span().span_context().is_valid().then_some(cx)
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
        .map(str::to_owned);
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

    let span = tracing::info_span!(
        "request",
        otel.name = %span_name,
        otel.kind = "server",
        otel.status_description = Empty,
        "http.request.method" = %method,
        "url.path" = %path,
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
        "aws.api_gateway.request_id" = lambda.as_ref().and_then(|i| i.gateway_request_id.as_deref()),
    );
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
    if status.is_server_error() {
        span.record("otel.status_description", format!("HTTP {status}"));
    }
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        tracing::info!(
            method = %method,
            route = route.as_deref().unwrap_or("(unmatched)"),
            status = status.as_u16(),
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            "request completed"
        );
    });
    set_trace_header(&mut response, trace_id);
    response
}

fn set_trace_header(response: &mut Response, trace_id: TraceId) {
    if let Ok(value) = HeaderValue::from_str(&xray_trace_id(trace_id)) {
        response.headers_mut().insert(TRACE_ID_HEADER, value);
    }
}

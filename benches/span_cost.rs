//! What the telemetry of one traced server-mode request costs at the least, piece by piece,
//! measured in-process on one thread: no HTTP server and no load generator share the cores, so
//! the figures are the floor under what `benches/lambda.rs` sees through wrk
//! (docs/benchmark.md "Server-mode telemetry cost" compares the two).
//!
//! The pieces, each built as production builds it:
//! - ids: a fresh X-Ray trace id and span id, the context a request runs under (attached and
//!   detached), and the `X-Trace-ID` value;
//! - the access line: the `request completed` event through the production subscriber
//!   ([`telemetry::subscriber`]: log layer and OpenTelemetry layer) into a batched sink whose
//!   writer discards;
//! - the request span as the request layer builds it today: a `tracing` span with its fields,
//!   given its parent, its attributes and status set through `tracing-opentelemetry`, entered
//!   and left twice (two polls), closed, handed to the SDK's batch processor;
//! - the same span built on the SDK tracer directly (no `tracing` span): what the SDK alone
//!   costs the request's thread;
//! - OTLP encoding: what the OTLP/HTTP exporter does to each span on its own thread before the
//!   POST (SpanData to protobuf structures, then protobuf bytes), in batches of 512. The POST
//!   itself is not counted.
//!
//! - an X-Ray sampling rules decision ([`RuleCache::decide`]): 25 rules and `Default` as an
//!   account would write them against a request path, and the heaviest rules X-Ray accepts (25
//!   `URLPath` patterns of 128 characters, none matching) against a 2 KiB path, the case the
//!   second security review timed at about 20 ms with the former backtracking matcher.
//!
//! - metrics ([`telemetry::metrics`]): one request and its provider call recorded, and one
//!   Lambda invocation's Embedded Metric Format documents written.
//!
//! Every figure is the best of several rounds (the minimum resists this machine's noise), in
//! nanoseconds per request. Run with `cargo bench --bench span_cost`; `scripts/bench.sh` runs it
//! too.

use std::hint::black_box;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use apuntador_backend::config::Config;
use apuntador_backend::routes::{self, AppState};
use apuntador_backend::telemetry::annotations;
use apuntador_backend::telemetry::http::RequestTracing;
use apuntador_backend::telemetry::log_sink::LogSink;
use apuntador_backend::telemetry::logs::{FixedFields, LogFormat};
use apuntador_backend::telemetry::sampling::xray_rules::{RuleCache, SamplingRule, ServiceFacts};
use apuntador_backend::telemetry::subscriber;
use apuntador_backend::telemetry::xray::{new_trace_id, xray_trace_id_bytes};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_aws::trace::{XrayIdGenerator, XrayPropagator};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, InMemorySpanExporter, Sampler, SdkTracer,
    SdkTracerProvider, SpanData, SpanExporter,
};
use prost::Message;
use tower::ServiceExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const ROUNDS: usize = 7;
const ITERATIONS: usize = 20_000;
const BATCH: usize = 512;

/// Nanoseconds per call of `f`, the best of [`ROUNDS`] rounds of `iterations`.
fn best_of(iterations: usize, f: impl FnMut()) -> f64 {
    best_of_then(iterations, f, || {})
}

/// [`best_of`], with `between` run after each round, off the clock.
fn best_of_then(iterations: usize, mut f: impl FnMut(), mut between: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / iterations as f64);
        between();
    }
    best
}

/// The provider of the span-building rows: the batch processor's queue holds a whole round
/// (production's 2048 would drop spans at this loop's pace, which no server reaches), and
/// rounds are flushed in between.
fn provider() -> SdkTracerProvider {
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(2 * ITERATIONS)
        .build();
    SdkTracerProvider::builder()
        .with_id_generator(XrayIdGenerator::default())
        .with_span_processor(
            BatchSpanProcessor::builder(Discard)
                .with_batch_config(config)
                .build(),
        )
        .with_resource(resource())
        .build()
}

/// Spans the span-building rows handed to [`Discard`]: all of them, or the batch processor
/// dropped some and the rows are flattered.
static EXPORTED: AtomicUsize = AtomicUsize::new(0);

/// The exporter of the span-building rows: counts each batch and drops it, so the rows measure
/// the request's thread, not an export.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        EXPORTED.fetch_add(batch.len(), Ordering::Relaxed);
        drop(black_box(batch));
        Ok(())
    }
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "apuntador-backend"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("deployment.environment.name", "production"),
            KeyValue::new("cloud.provider", "aws"),
            KeyValue::new("cloud.platform", "aws_ecs"),
            KeyValue::new("aws.ecs.launchtype", "fargate"),
        ])
        .build()
}

/// The attributes a sampled server-mode `GET /health` span carries beyond the sampler's facts
/// (src/telemetry/http.rs `request_attributes`).
fn request_attributes() -> Vec<KeyValue> {
    vec![
        KeyValue::new("user_agent.original", "ELB-HealthChecker/2.0".to_owned()),
        KeyValue::new("client.address", "10.0.1.17".to_owned()),
        KeyValue::new(annotations::HTTP_ROUTE, "/health".to_owned()),
        KeyValue::new(annotations::SERVICE_VERSION, env!("CARGO_PKG_VERSION")),
        annotations::annotation_keys_attribute(),
    ]
}

/// The sampler's facts, which the span starts with.
fn facts() -> Vec<KeyValue> {
    vec![
        KeyValue::new("http.request.method", "GET".to_owned()),
        KeyValue::new("url.path", "/health".to_owned()),
        KeyValue::new("http.route", "/health".to_owned()),
        KeyValue::new("server.address", "api.example.com".to_owned()),
    ]
}

fn status_attributes() -> [KeyValue; 2] {
    [
        KeyValue::new("http.response.status_code", 200_i64),
        KeyValue::new(annotations::HTTP_STATUS_CODE, 200_i64),
    ]
}

/// The context an unsampled request runs under (src/telemetry/http.rs).
fn unsampled_context(trace_id: TraceId) -> Context {
    let span_context = SpanContext::new(
        trace_id,
        XrayIdGenerator::default().new_span_id(),
        TraceFlags::default(),
        false,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(span_context)
}

/// Nanoseconds per sampling decision over `rules` (and `Default`) for a request to `path`.
fn rules_decision(patterns: &[String], path: &str, iterations: usize) -> f64 {
    let mut rules: Vec<SamplingRule> = patterns
        .iter()
        .enumerate()
        .map(|(i, pattern)| {
            serde_json::from_value(serde_json::json!({
                "RuleName": format!("rule-{i:02}"), "Priority": 10 + i, "FixedRate": 0.05,
                "ReservoirSize": 1, "ServiceName": "*", "ServiceType": "*", "Host": "*",
                "HTTPMethod": "*", "URLPath": pattern, "ResourceARN": "*", "Version": 1,
                "Attributes": {}
            }))
            .unwrap()
        })
        .collect();
    rules.push(
        serde_json::from_value(serde_json::json!({
            "RuleName": "Default", "Priority": 10000, "FixedRate": 0.05, "ReservoirSize": 1,
            "Version": 1
        }))
        .unwrap(),
    );
    let cache = RuleCache::with_client_id(ServiceFacts::default(), "0".repeat(24));
    cache.update_rules(rules, Instant::now(), 1.8e9);
    let attributes = [
        KeyValue::new("http.request.method", "GET"),
        KeyValue::new("url.path", path.to_owned()),
        KeyValue::new("server.address", "api.example.com"),
    ];
    best_of(iterations, || {
        black_box(cache.decide(Instant::now(), new_trace_id(), black_box(&attributes)));
    })
}

fn ids() -> f64 {
    best_of(ITERATIONS * 5, || {
        let trace_id = new_trace_id();
        let cx = unsampled_context(trace_id);
        drop(black_box(cx.attach()));
        black_box(HeaderValue::from_bytes(&xray_trace_id_bytes(trace_id)).ok());
    })
}

/// `f` under the production subscriber, its log lines into a batched sink that discards.
fn under_production_subscriber<T>(provider: &SdkTracerProvider, f: impl FnOnce() -> T) -> T {
    let sink = LogSink::batched_to(Box::new(io::sink()));
    let dispatch = tracing::Dispatch::new(subscriber(
        provider.tracer("apuntador-backend"),
        &sink,
        "info",
        LogFormat::Json,
        FixedFields::service("apuntador-backend"),
    ));
    let result = tracing::dispatcher::with_default(&dispatch, f);
    sink.finish();
    result
}

fn access_line(provider: &SdkTracerProvider) -> f64 {
    let _attached = unsampled_context(new_trace_id()).attach();
    let started = Instant::now();
    under_production_subscriber(provider, || {
        best_of(ITERATIONS * 5, || {
            // The same event as src/telemetry/http.rs `access_line` (same target, so the same
            // filters apply).
            let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(
                target: "apuntador_backend::telemetry::http",
                method = "GET",
                route = "/health",
                status = 200_u16,
                duration_ms = (duration_ms * 1000.0).round() / 1000.0,
                "request completed"
            );
        })
    })
}

fn tracing_span(provider: &SdkTracerProvider) -> f64 {
    under_production_subscriber(provider, || {
        best_of_then(
            ITERATIONS,
            || {
                let span = tracing::span!(
                    target: "apuntador_backend::telemetry::http",
                    tracing::Level::INFO,
                    "request",
                    otel.name = "GET /health",
                    otel.kind = "server",
                    "http.request.method" = "GET",
                    "url.path" = "/health",
                    "http.route" = Some("/health"),
                    "server.address" = Some("api.example.com"),
                    "faas.invocation_id" = None::<&str>,
                    "faas.coldstart" = None::<bool>,
                );
                let cx = span.context();
                let otel = cx.span();
                otel.set_attributes(request_attributes());
                drop(span.enter());
                drop(span.enter());
                otel.set_attributes(status_attributes());
                drop(span);
            },
            || {
                let _ = provider.force_flush();
            },
        )
    })
}

/// A SERVER span named like the request layer's `GET /health`, started on `tracer` directly.
fn start_request_span(
    tracer: &SdkTracer,
    attributes: Vec<KeyValue>,
) -> opentelemetry_sdk::trace::Span {
    tracer
        .span_builder("GET /health")
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(tracer, &Context::new())
}

fn sdk_span(provider: &SdkTracerProvider) -> f64 {
    let tracer = provider.tracer("apuntador-backend");
    best_of_then(
        ITERATIONS,
        || {
            let mut attributes = facts();
            attributes.extend(request_attributes());
            let span = start_request_span(&tracer, attributes);
            let cx = Context::new().with_span(span);
            drop(black_box(cx.clone().attach()));
            let otel = cx.span();
            otel.set_attributes(status_attributes());
            otel.end();
        },
        || {
            let _ = provider.force_flush();
        },
    )
}

/// Spans as the request layer exports them, captured once to be encoded.
fn exported_spans() -> Vec<SpanData> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_id_generator(XrayIdGenerator::default())
        .with_simple_exporter(exporter.clone())
        .with_resource(resource())
        .build();
    let tracer = provider.tracer("apuntador-backend");
    for _ in 0..BATCH {
        let mut attributes = facts();
        attributes.extend(request_attributes());
        attributes.extend(status_attributes());
        start_request_span(&tracer, attributes).end();
    }
    let spans = exporter.get_finished_spans().unwrap_or_default();
    let _ = provider.shutdown();
    spans
}

/// Nanoseconds per span, and the bytes a span takes on the wire.
fn otlp_encoding() -> (f64, usize) {
    let spans = exported_spans();
    assert_eq!(spans.len(), BATCH, "every span captured");
    let resource = ResourceAttributesWithSchema::from(&resource());
    let batches_per_round = 8;
    let mut best = f64::MAX;
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        // Cloned before the clock starts: the exporter owns its batch.
        let batches: Vec<Vec<SpanData>> = (0..batches_per_round).map(|_| spans.clone()).collect();
        let start = Instant::now();
        for batch in batches {
            let request = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(batch, &resource),
            };
            bytes = black_box(request.encode_to_vec()).len();
        }
        let per_span = start.elapsed().as_nanos() as f64 / (batches_per_round * BATCH) as f64;
        best = best.min(per_span);
    }
    (best, bytes / BATCH)
}

/// The production router on an empty configuration, its request layer tracing health checks
/// or not, deciding with `sampler`.
fn router(trace_health_checks: bool, sampler: Sampler) -> Router {
    let empty = |_: &str| None;
    let config = Arc::new(Config::from_lookup(&empty).expect("the empty configuration is valid"));
    let runtime = current_thread();
    let state = runtime
        .block_on(AppState::new(config))
        .expect("router state");
    let tracing_state =
        RequestTracing::new(Arc::new(XrayPropagator::default()), trace_health_checks)
            .with_sampler(Box::new(sampler));
    routes::router(state, tracing_state)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Nanoseconds per `GET /health` through each of `routers` in-process (no socket, no HTTP
/// parsing), under the production subscriber. The routers take turns round by round, so
/// this machine's drift weighs on all of them alike (their differences are the figures).
fn through_routers<const N: usize>(provider: &SdkTracerProvider, routers: [Router; N]) -> [f64; N] {
    let runtime = current_thread();
    let mut best = [f64::MAX; N];
    under_production_subscriber(provider, || {
        for _ in 0..ROUNDS {
            for (router, best) in routers.iter().zip(best.iter_mut()) {
                let start = Instant::now();
                for _ in 0..ITERATIONS {
                    let request = Request::get("/health")
                        .header(header::HOST, "api.example.com")
                        .header(header::USER_AGENT, "ELB-HealthChecker/2.0")
                        .body(Body::empty())
                        .expect("request");
                    let response = runtime.block_on(router.clone().oneshot(request));
                    black_box(response.ok());
                }
                *best = best.min(start.elapsed().as_nanos() as f64 / ITERATIONS as f64);
                let _ = provider.force_flush();
            }
        }
    });
    best
}

/// The metrics of one request that made one provider call: recorded (on the request's thread),
/// then, as under Lambda, the invocation's documents written to a buffer (after the response).
fn metrics_cost() -> (f64, f64) {
    use apuntador_backend::telemetry::metrics::Metrics;
    use std::time::Duration;
    let metrics = Metrics::new("Apuntador", "apuntador-backend");
    let record = || {
        metrics.request(
            black_box(Some("/oauth/token/{provider}")),
            200,
            Duration::from_micros(1234),
        );
        metrics.dependency("googledrive", Duration::from_micros(987), false);
    };
    let recorded = best_of(ITERATIONS, record);
    let _ = metrics.drain(0, &[]);
    let drained = best_of(ITERATIONS, || {
        record();
        black_box(metrics.drain(
            1_700_000_000_000,
            &[
                (
                    "function_request_id",
                    "6d68ca91-49c9-448d-89b8-7ca3e6dc66aa",
                ),
                ("trace_id", "1-6b04aa01-0123456789abcdef01234567"),
            ],
        ));
    });
    (recorded, drained - recorded)
}

fn main() {
    let provider = provider();
    let [untraced, unsampled, sampled] = through_routers(
        &provider,
        [
            router(false, Sampler::AlwaysOn),
            router(true, Sampler::AlwaysOff),
            router(true, Sampler::AlwaysOn),
        ],
    );
    let ids = ids();
    let access_line = access_line(&provider);
    let tracing_span = tracing_span(&provider);
    let sdk_span = sdk_span(&provider);
    let _ = provider.shutdown();
    // The sampled router row, the tracing span row and the SDK span row.
    let ended = 3 * ROUNDS * ITERATIONS;
    let exported = EXPORTED.load(Ordering::Relaxed);
    assert_eq!(
        exported, ended,
        "the batch processor dropped spans: the span rows would be flattered"
    );
    let (encoding, span_bytes) = otlp_encoding();
    let everyday: Vec<String> = (0..25).map(|i| format!("/api/v{i}/*")).collect();
    let rules_everyday = rules_decision(&everyday, "/oauth/token/dropbox", ITERATIONS);
    let heaviest: Vec<String> = (0..25)
        .map(|_| "*".to_owned() + &"a".repeat(126) + "b")
        .collect();
    let rules_heaviest = rules_decision(&heaviest, &("/".to_owned() + &"a".repeat(2047)), 200);

    println!();
    println!("| piece of one traced request | ns |");
    println!("|---|---:|");
    println!("| ids, context, X-Trace-ID | {ids:.0} |");
    println!("| access line (production subscriber, batched sink) | {access_line:.0} |");
    println!(
        "| request span through tracing-opentelemetry (as the request layer builds it) | {tracing_span:.0} |"
    );
    println!("| the same span on the SDK tracer directly | {sdk_span:.0} |");
    println!(
        "| OTLP encoding on the exporter's thread ({span_bytes} bytes a span) | {encoding:.0} |"
    );
    println!("| `GET /health` through the router, in-process, untraced | {untraced:.0} |");
    println!(
        "| request layer, nothing sampled (ids, access line): + | {:.0} |",
        unsampled - untraced
    );
    println!(
        "| request layer, sampled (ids, access line, span): + | {:.0} |",
        sampled - untraced
    );
    println!(
        "| on the request's thread: ids + access line + span | {:.0} |",
        ids + access_line + tracing_span
    );
    println!(
        "| with the exporter's thread: + OTLP encoding (POST not counted) | {:.0} |",
        ids + access_line + tracing_span + encoding
    );
    let (metrics_recorded, metrics_written) = metrics_cost();
    println!(
        "| metrics: a request and its provider call recorded (request's thread) | {metrics_recorded:.0} |"
    );
    println!(
        "| metrics: one invocation's two EMF documents written (after the response) | {metrics_written:.0} |"
    );
    println!(
        "| X-Ray rules decision: 25 rules and Default, a 20-byte path | {rules_everyday:.0} |"
    );
    println!(
        "| X-Ray rules decision: 25 legal 128-character `URLPath` patterns, a 2 KiB path | {rules_heaviest:.0} |"
    );
}

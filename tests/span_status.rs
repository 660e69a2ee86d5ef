//! Span status of failing requests, checked with the SDK's in-memory exporter. A test binary of
//! its own: `tracing` caches callsite interest process-wide, so a thread-local subscriber must
//! not share the process with tests that run without one.

use std::collections::HashMap;
use std::sync::Arc;

use apuntador_backend::config::Config;
use apuntador_backend::routes::{AppState, router_with};
use apuntador_backend::telemetry::http::RequestTracing;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use opentelemetry::trace::{Status, TracerProvider as _};
use opentelemetry_aws::trace::XrayPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

async fn explode() -> &'static str {
    panic!("database password is hunter2")
}

async fn app() -> Router {
    let map: HashMap<&str, &str> = HashMap::new();
    let config = Arc::new(Config::from_lookup(&|n| map.get(n).map(|v| v.to_string())).unwrap());
    let tracing = RequestTracing::new(Arc::new(XrayPropagator::default()), false);
    let extra: Router<AppState> = Router::new().route("/probe/panic", get(explode));
    router_with(AppState::new(config).await.unwrap(), tracing, extra)
}

#[tokio::test]
async fn server_errors_and_panics_mark_the_span_as_error() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("span-status-test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let panicked = app().await.oneshot(get("/probe/panic")).await.unwrap();
    let missing = app().await.oneshot(get("/nowhere")).await.unwrap();
    assert_eq!(panicked.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();

    let span = spans
        .iter()
        .find(|s| s.name == "GET /probe/panic")
        .expect("span named after the route, even when the handler panics");
    assert!(
        span.attributes
            .iter()
            .any(|kv| kv.key.as_str() == "http.route" && kv.value.as_str() == "/probe/panic"),
        "{:?}",
        span.attributes
    );
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert!(
        span.events.iter().any(|e| e.name == "internal error"),
        "the error is recorded on the span: {:?}",
        span.events
    );
    let trace_id = format!("{:032x}", span.span_context.trace_id());
    assert_eq!(
        panicked.headers()["x-trace-id"].to_str().unwrap(),
        format!("1-{}-{}", &trace_id[..8], &trace_id[8..]),
        "X-Trace-ID is the span's trace id"
    );
    let not_found = spans
        .iter()
        .find(|s| s.name == "GET")
        .expect("unmatched request span");
    assert!(
        !matches!(not_found.status, Status::Error { .. }),
        "a 404 is not a server error"
    );
}

//! Span status of failing requests, and the X-Ray annotations a request span carries, checked
//! with the SDK's in-memory exporter. A test binary of its own: `tracing` caches callsite interest process-wide, so a thread-local subscriber must
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
    app_with(&[]).await
}

async fn app_with(vars: &[(&str, &str)]) -> Router {
    let map: HashMap<&str, &str> = vars.iter().copied().collect();
    let config = Arc::new(Config::from_lookup(&|n| map.get(n).map(|v| v.to_string())).unwrap());
    let tracing = RequestTracing::new(Arc::new(XrayPropagator::default()), false);
    let extra: Router<AppState> = Router::new().route("/probe/panic", get(explode));
    router_with(AppState::new(config).await.unwrap(), tracing, extra)
}

/// Spans of this thread, kept in memory until the provider is flushed.
fn capture() -> (
    InMemorySpanExporter,
    SdkTracerProvider,
    tracing::subscriber::DefaultGuard,
) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("span-status-test")));
    let guard = tracing::subscriber::set_default(subscriber);
    (exporter, provider, guard)
}

#[tokio::test]
async fn server_errors_and_panics_mark_the_span_as_error() {
    let (exporter, provider, _guard) = capture();

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
    assert_eq!(
        attribute(span, "error_type").as_deref(),
        Some("internal_error")
    );
    assert_eq!(
        attribute(span, "error.type").as_deref(),
        Some("internal_error")
    );
    let not_found = spans
        .iter()
        .find(|s| s.name == "GET")
        .expect("unmatched request span");
    assert!(
        !matches!(not_found.status, Status::Error { .. }),
        "a 404 is not a server error"
    );
    assert_eq!(
        attribute(not_found, "error_type").as_deref(),
        Some("not_found")
    );
    assert_eq!(
        attribute(not_found, "http_route"),
        None,
        "no route, no template"
    );
}

fn attribute(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

#[tokio::test]
async fn the_device_platform_is_annotated_once_the_request_names_it() {
    let (exporter, provider, _guard) = capture();

    let dir = std::env::temp_dir().join(format!("apuntador-span-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = std::process::Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", "/CN=x", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-keyout"])
        .arg(dir.join("device.key"))
        .output()
        .expect("openssl is installed");
    assert!(output.status.success());
    let csr = String::from_utf8(output.stdout).unwrap();
    let base = dir.display().to_string();
    let app = app_with(&[
        ("ENVIRONMENT", "local"),
        ("INFRASTRUCTURE_BASE_DIR", base.as_str()),
        ("TRUSTED_CLIENT_CERT_HEADER", "X-Client-Cert"),
    ])
    .await;
    let body =
        serde_json::json!({"csr": csr, "device_id": "span-probe-device", "platform": "Android"});
    let enrolled = app
        .clone()
        .oneshot(
            Request::post("/device/enroll")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(enrolled.status(), StatusCode::CREATED);
    let body = axum::body::to_bytes(enrolled.into_body(), 1 << 20)
        .await
        .unwrap();
    let certificate = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    // A guarded route learns the platform from the certificate's record.
    let status = app
        .clone()
        .oneshot(
            Request::get("/device/status/span-probe-device")
                .header(
                    "x-client-cert",
                    percent_encoding::utf8_percent_encode(
                        &certificate,
                        percent_encoding::NON_ALPHANUMERIC,
                    )
                    .to_string(),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    let invalid = app
        .oneshot(
            Request::post("/device/enroll")
                .header("content-type", "application/json")
                .body(Body::from(
                    r#"{"csr":"x","device_id":"d","platform":"amiga"}"#,
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let enrolments: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "POST /device/enroll")
        .collect();
    assert_eq!(enrolments.len(), 2, "{spans:?}");
    let status = spans
        .iter()
        .find(|s| s.name == "GET /device/status/{device_id}")
        .expect("status span");
    assert_eq!(
        attribute(status, "device_platform").as_deref(),
        Some("android"),
        "{:?}",
        status.attributes
    );
    assert_eq!(
        attribute(enrolments[0], "device_platform").as_deref(),
        Some("android"),
        "{:?}",
        enrolments[0].attributes
    );
    assert_eq!(
        attribute(enrolments[0], "http_status_code").as_deref(),
        Some("201")
    );
    assert_eq!(
        attribute(enrolments[1], "device_platform"),
        None,
        "a platform that failed validation is not an annotation"
    );
    assert_eq!(
        attribute(enrolments[1], "error_type").as_deref(),
        Some("validation_error")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! Every route and error contract through the production layer stack, in process.

use std::collections::HashMap;
use std::sync::Arc;

use apuntador_backend::config::Config;
use apuntador_backend::error::FieldError;
use apuntador_backend::routes::extract::{ApiJson, FromJson};
use apuntador_backend::routes::{AppState, router, router_with};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::helpers::{self, Answer, tracing};

/// The config key of this test process (a published sample key would be refused: the router
/// runs as production here).
fn api_key() -> &'static str {
    crate::support::config_api_key()
}

fn config(vars: &[(&str, &str)]) -> Arc<Config> {
    helpers::config(
        &[
            ("CONFIG_API_KEY", api_key()),
            ("SECRET_KEY", crate::support::secret_key()),
            // No origin is allowed unless configured (outside ENVIRONMENT=local).
            (
                "ALLOWED_ORIGINS",
                "http://localhost:3000,http://localhost:5173,tauri://localhost",
            ),
        ],
        vars,
    )
}

async fn app() -> Router {
    helpers::app(config(&[])).await
}

/// The answer and its JSON body.
async fn send(app: Router, request: Request<Body>) -> (Answer, Value) {
    let answer = helpers::send(&app, request).await;
    let body = answer.body.clone();
    (answer, body)
}

fn get_req(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn assert_xray_id(value: Option<&str>) -> String {
    let value = value.expect("X-Trace-ID header");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 3, "{value}");
    assert_eq!(parts[0], "1");
    assert_eq!(parts[1].len(), 8, "{value}");
    assert_eq!(parts[2].len(), 24, "{value}");
    assert!(
        parts[1..]
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit())),
        "{value}"
    );
    value.to_owned()
}

#[tokio::test]
async fn root_and_health_answer_with_the_version() {
    let (res, body) = send(app().await, get_req("/")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"message": "Apuntador OAuth Backend", "version": "1.0.41", "docs": null})
    );
    let (_, body) = send(app().await, get_req("/health")).await;
    assert_eq!(
        body,
        json!({"status": "ok", "version": "1.0.41", "message": "Service is healthy"})
    );
    let (res, body) = send(app().await, get_req("/health/public")).await;
    assert_eq!(
        body,
        json!({"status": "ok", "version": "1.0.41", "message": "Public endpoint (no mTLS)"})
    );
    assert_xray_id(res.header("x-trace-id"));
}

#[tokio::test]
async fn the_docs_are_off_by_default_and_on_with_enable_docs() {
    for path in ["/openapi.json", "/docs", "/redoc", "/docs/init.js"] {
        let (res, body) = send(app().await, get_req(path)).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            res.header("content-type"),
            Some("application/problem+json"),
            "{path}"
        );
        assert_eq!(body["status"], 404);
    }
    let docs = helpers::app(config(&[("ENABLE_DOCS", "true")])).await;
    let (res, body) = send(docs.clone(), get_req("/")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(body["docs"], "/docs", "the root points to the page");
    let (res, document) = send(docs.clone(), get_req("/openapi.json")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["version"], "1.0.41");
    let (res, _) = send(docs, get_req("/docs")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
}

#[tokio::test]
async fn every_response_gets_a_distinct_x_ray_trace_id() {
    let (a, _) = send(app().await, get_req("/")).await;
    let (b, _) = send(app().await, get_req("/nowhere")).await;
    let a = assert_xray_id(a.header("x-trace-id"));
    let b = assert_xray_id(b.header("x-trace-id"));
    assert_ne!(a, b);
}

#[tokio::test]
async fn incoming_x_ray_header_sets_the_trace_id() {
    let root = format!(
        "1-{}-bd862e3fe1be46a994272793",
        apuntador_harness::epoch_hex()
    );
    let request = Request::get("/config/providers")
        .header(
            "x-amzn-trace-id",
            format!("Root={root};Parent=53995c3f42cd8ad8;Sampled=1"),
        )
        .body(Body::empty())
        .unwrap();
    let (res, _) = send(app().await, request).await;
    assert_eq!(res.header("x-trace-id"), Some(root.as_str()));
}

#[tokio::test]
async fn an_x_ray_header_x_ray_would_refuse_gets_a_fresh_trace() {
    let stale = "1-5759e988-bd862e3fe1be46a994272793";
    let request = Request::get("/config/providers")
        .header(
            "x-amzn-trace-id",
            format!("Root={stale};Parent=53995c3f42cd8ad8;Sampled=1"),
        )
        .body(Body::empty())
        .unwrap();
    let (res, _) = send(app().await, request).await;
    let fresh = res.header("x-trace-id").expect("X-Trace-ID").to_owned();
    assert_ne!(fresh, stale, "a 2016 Root is not joined");
    assert!(fresh.starts_with("1-") && fresh.len() == 35, "{fresh}");
}

#[tokio::test]
async fn unknown_path_is_a_404_problem_with_cors() {
    let request = Request::get("/healthz")
        .header("origin", "http://localhost:3000")
        .body(Body::empty())
        .unwrap();
    let (res, body) = send(app().await, request).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(body["status"], 404);
    assert_eq!(body["instance"], "/healthz");
    assert_eq!(
        body["type"],
        "https://datatracker.ietf.org/doc/html/rfc7231#section-6.5.4"
    );
    assert_xray_id(res.header("x-trace-id"));
}

#[tokio::test]
async fn wrong_method_is_a_405_problem_with_allow() {
    let request = Request::post("/config/providers")
        .body(Body::empty())
        .unwrap();
    let (res, body) = send(app().await, request).await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    let allow = res.header("allow").expect("Allow header");
    assert!(allow.split(',').any(|m| m.trim() == "GET"), "{allow}");
    assert_eq!(body["status"], 405);
    assert_eq!(body["instance"], "/config/providers");
}

#[tokio::test]
async fn config_needs_the_bearer_key() {
    let cases = [
        (None, "Missing Authorization header"),
        (
            Some("InvalidFormat".to_owned()),
            "Invalid Authorization header format. Expected: Bearer <token>",
        ),
        (
            Some("Bearer a b".to_owned()),
            "Invalid Authorization header format. Expected: Bearer <token>",
        ),
        (
            Some("Basic abc".to_owned()),
            "Invalid Authorization header format. Expected: Bearer <token>",
        ),
        (Some("Bearer wrong-token".to_owned()), "Invalid API key"),
        (
            Some(format!("Bearer {}", &api_key()[..api_key().len() - 1])),
            "Invalid API key",
        ),
    ];
    for (authorization, detail) in cases {
        let mut request = Request::get("/config/providers");
        if let Some(value) = &authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let (res, body) = send(app().await, request.body(Body::empty()).unwrap()).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(body["detail"], detail, "{authorization:?}");
        assert!(
            res.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer"))
        );
        assert!(!body.to_string().contains(api_key()));
    }
}

#[tokio::test]
async fn config_lists_providers_with_the_app_version() {
    let state = AppState::new(config(&[("ENABLED_CLOUD_PROVIDERS", "dropbox,onedrive")]))
        .await
        .unwrap();
    let app = router(state, tracing());
    let request = Request::get("/config/providers")
        .header(header::AUTHORIZATION, format!("bearer {}", api_key()))
        .body(Body::empty())
        .unwrap();
    let (res, body) = send(app, request).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"providers": {
            "googledrive": {"enabled": false, "requires_mtls": true},
            "dropbox": {"enabled": true, "requires_mtls": true},
            "onedrive": {"enabled": true, "requires_mtls": true}},
          "version": "1.0.41", "cache_ttl": 3600})
    );
}

#[tokio::test]
async fn config_without_a_key_configured_is_unavailable() {
    let map: HashMap<&str, &str> = HashMap::new();
    let cfg = Arc::new(Config::from_lookup(&|n| map.get(n).map(|v| v.to_string())).unwrap());
    let request = Request::get("/config/providers")
        .header(header::AUTHORIZATION, "Bearer anything")
        .body(Body::empty())
        .unwrap();
    let (res, body) = send(
        router(AppState::new(cfg).await.unwrap(), tracing()),
        request,
    )
    .await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["detail"].as_str().unwrap().contains("CONFIG_API_KEY"));
}

#[tokio::test]
async fn preflight_is_answered_before_any_auth() {
    let request = Request::options("/config/providers")
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .body(Body::empty())
        .unwrap();
    let (res, _) = send(app().await, request).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(res.header("access-control-max-age"), Some("600"));
    assert!(
        res.header("access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    assert_xray_id(res.header("x-trace-id"));
}

#[tokio::test]
async fn trace_id_is_exposed_to_allowed_origins_only() {
    let allowed = Request::get("/")
        .header("origin", "tauri://localhost")
        .body(Body::empty())
        .unwrap();
    let (res, _) = send(app().await, allowed).await;
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("tauri://localhost")
    );
    assert_eq!(
        res.header("access-control-expose-headers"),
        Some("x-trace-id")
    );
    let foreign = Request::get("/")
        .header("origin", "https://evil.example")
        .body(Body::empty())
        .unwrap();
    let (res, _) = send(app().await, foreign).await;
    assert_eq!(res.header("access-control-allow-origin"), None);
}

// --- the pipeline, probed with routes mounted under the production layers ---

#[derive(Debug, Deserialize)]
struct Greeting {
    name: String,
    times: u8,
}

impl FromJson for Greeting {
    type Raw = Self;

    fn from_json(raw: Self) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        if raw.name.len() < 3 {
            errors.push(FieldError::new(
                "string_too_short",
                &["body", "name"],
                "String should have at least 3 characters",
            ));
        }
        if raw.times == 0 {
            errors.push(FieldError::new(
                "greater_than",
                &["body", "times"],
                "Input should be greater than 0",
            ));
        }
        if errors.is_empty() {
            Ok(raw)
        } else {
            Err(errors)
        }
    }
}

async fn greet(ApiJson(g): ApiJson<Greeting>) -> String {
    g.name.repeat(g.times as usize)
}

async fn explode() -> &'static str {
    panic!("database password is hunter2")
}

async fn probe_app(vars: &[(&str, &str)]) -> Router {
    let extra: Router<AppState> = Router::new()
        .route("/probe/greet", post(greet))
        .route("/probe/panic", get(explode));
    router_with(AppState::new(config(vars)).await.unwrap(), tracing(), extra)
}

fn post_json(path: &str, content_type: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .header("origin", "http://localhost:3000")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn valid_json_reaches_the_handler() {
    let (res, _) = send(
        probe_app(&[]).await,
        post_json(
            "/probe/greet",
            "application/json; charset=utf-8",
            r#"{"name":"abc","times":2,"extra":1}"#,
        ),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (res, body) = send(
        probe_app(&[]).await,
        post_json("/probe/greet", "application/json", r#"{"name": "#),
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(body["status"], 400);
    assert_eq!(body["instance"], "/probe/greet");
}

#[tokio::test]
async fn failed_validation_is_422_with_field_errors() {
    let (res, body) = send(
        probe_app(&[]).await,
        post_json(
            "/probe/greet",
            "application/json",
            r#"{"name":"ab","times":0}"#,
        ),
    )
    .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    assert_eq!(body["errors"][0]["loc"], json!(["body", "name"]));
    assert_eq!(body["errors"][1]["loc"], json!(["body", "times"]));
    let (res, body) = send(
        probe_app(&[]).await,
        post_json("/probe/greet", "application/json", r#"{"name":"abc"}"#),
    )
    .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["errors"][0],
        json!({"type": "missing", "loc": ["body", "times"], "msg": "Field required"})
    );
}

#[tokio::test]
async fn wrong_media_type_is_415() {
    let (res, body) = send(
        probe_app(&[]).await,
        post_json("/probe/greet", "text/plain", r#"{"name":"abc","times":1}"#),
    )
    .await;
    assert_eq!(res.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("application/json")
    );
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let big = format!(r#"{{"name":"{}","times":1}}"#, "a".repeat(200));
    let (res, body) = send(
        probe_app(&[("MAX_BODY_BYTES", "100")]).await,
        post_json("/probe/greet", "application/json", &big),
    )
    .await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["status"], 413);
    let small = r#"{"name":"abc","times":1}"#;
    let (res, _) = send(
        probe_app(&[("MAX_BODY_BYTES", "100")]).await,
        post_json("/probe/greet", "application/json", small),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
}

#[tokio::test]
async fn a_panic_is_a_500_problem_without_internal_detail() {
    let request = Request::get("/probe/panic")
        .header("origin", "http://localhost:3000")
        .body(Body::empty())
        .unwrap();
    let (res, body) = send(probe_app(&[]).await, request).await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["title"], "Internal Server Error");
    assert!(!body.to_string().contains("hunter2"));
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_xray_id(res.header("x-trace-id"));
}

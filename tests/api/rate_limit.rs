//! Server mode's per-client rate limits (issue 26 item 4) through the production router: a
//! client past its budget gets `429 rate_limited` problem+json with `Retry-After` (traced, with
//! CORS), others and the health checks are not affected, the sensitive routes have their own
//! tighter budget, `X-Forwarded-For` counts only as far as the trusted proxies vouch, and without
//! `RATE_LIMIT_PER_MINUTE` (the default) nothing is limited.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;

use apuntador_backend::routes::{AppState, router};

use crate::helpers::{self, Answer};

const BASE: &[(&str, &str)] = &[
    ("ENVIRONMENT", "local"),
    ("SECRET_KEY", "rate-limit-secret-rate-limit-secret-0123"),
];

async fn app(vars: &[(&str, &str)]) -> Router {
    helpers::app(helpers::config(BASE, vars)).await
}

/// [`app`] behind `hops` trusted proxies (`TRUSTED_PROXY_HOPS`, which the request layer reads).
async fn behind_proxies(vars: &[(&str, &str)], hops: usize) -> Router {
    let state = AppState::new(helpers::config(BASE, vars))
        .await
        .expect("state");
    router(state, helpers::tracing().with_trusted_proxy_hops(hops))
}

/// `method path` from `peer`, with these header lines.
async fn from(
    app: &Router,
    peer: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::from("{}")).expect("request");
    let peer: SocketAddr = format!("{peer}:40000").parse().expect("peer");
    request.extensions_mut().insert(ConnectInfo(peer));
    helpers::send(app, request).await
}

/// `GET /` from `peer`.
async fn root(app: &Router, peer: &str, headers: &[(&str, &str)]) -> Answer {
    from(app, peer, "GET", "/", headers).await
}

#[tokio::test]
async fn a_client_past_its_budget_gets_429_with_retry_after() {
    // 60 a minute: a burst of 10.
    let app = app(&[("RATE_LIMIT_PER_MINUTE", "60")]).await;
    for i in 0..10 {
        let answer = root(&app, "192.0.2.1", &[]).await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.text);
    }
    let refused = root(&app, "192.0.2.1", &[("origin", "http://localhost:3000")]).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(refused.body["error"], "rate_limited");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.header("x-trace-id").is_some());
    assert_eq!(
        refused.header("access-control-allow-origin"),
        Some("http://localhost:3000"),
        "readable by the browser that sent it"
    );

    let other = root(&app, "192.0.2.2", &[]).await;
    assert_eq!(other.status, 200, "another client is not limited");
    for _ in 0..20 {
        let health = from(&app, "192.0.2.1", "GET", "/health", &[]).await;
        assert_eq!(health.status, 200, "health checks are never limited");
    }
}

#[tokio::test]
async fn the_sensitive_routes_have_their_own_tighter_budget() {
    // Sensitive: 6 a minute, a burst of 1.
    let app = app(&[
        ("RATE_LIMIT_PER_MINUTE", "600"),
        ("RATE_LIMIT_SENSITIVE_PER_MINUTE", "6"),
    ])
    .await;
    let first = from(&app, "192.0.2.7", "POST", "/device/enroll", &[]).await;
    assert_ne!(first.status, 429, "{}", first.text);
    let second = from(&app, "192.0.2.7", "POST", "/oauth/token/dropbox", &[]).await;
    assert_eq!(second.status, 429, "{}", second.text);
    assert_eq!(second.header("retry-after"), Some("10"));
    let general = root(&app, "192.0.2.7", &[]).await;
    assert_eq!(general.status, 200, "the general budget is apart");
}

#[tokio::test]
async fn forwarded_for_counts_only_as_far_as_trusted_proxies_vouch() {
    let app = behind_proxies(&[("RATE_LIMIT_PER_MINUTE", "6")], 1).await;
    // Behind one trusted proxy (the peer), the client is the entry it appended: a caller
    // rotating the entries to its left does not get a fresh budget.
    let first = root(
        &app,
        "10.0.0.1",
        &[("x-forwarded-for", "198.51.100.1, 203.0.113.9")],
    )
    .await;
    assert_eq!(first.status, 200);
    let rotated = root(
        &app,
        "10.0.0.1",
        &[("x-forwarded-for", "198.51.100.2, 203.0.113.9")],
    )
    .await;
    assert_eq!(rotated.status, 429, "the same client: {}", rotated.text);
    let another = root(&app, "10.0.0.1", &[("x-forwarded-for", "203.0.113.10")]).await;
    assert_eq!(another.status, 200, "another client behind the same proxy");

    // Without trusted proxies the header is the caller's and is ignored: the peer counts.
    let untrusting = self::app(&[("RATE_LIMIT_PER_MINUTE", "6")]).await;
    assert_eq!(
        root(&untrusting, "192.0.2.9", &[("x-forwarded-for", "1.1.1.1")])
            .await
            .status,
        200
    );
    assert_eq!(
        root(&untrusting, "192.0.2.9", &[("x-forwarded-for", "2.2.2.2")])
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn without_a_limit_nothing_is_limited() {
    let app = app(&[]).await;
    for _ in 0..50 {
        assert_eq!(root(&app, "192.0.2.3", &[]).await.status, 200);
    }
}

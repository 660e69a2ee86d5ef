//! `GET /`, `GET /health` and `GET /health/public` (spec §2.1, §2.2): liveness answers with the
//! application version and no dependency checks, so a load balancer never fails a healthy
//! process because a downstream service is slow.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use crate::APP_VERSION;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/health/public", get(health_public))
}

#[derive(Debug, Serialize)]
struct Root {
    message: &'static str,
    version: &'static str,
    /// API documentation is not served; kept for clients that read the field.
    docs: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    message: &'static str,
}

async fn root() -> Json<Root> {
    Json(Root {
        message: "Apuntador OAuth Backend",
        version: APP_VERSION,
        docs: None,
    })
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: APP_VERSION,
        message: "Service is healthy",
    })
}

async fn health_public() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: APP_VERSION,
        message: "Public endpoint (no mTLS)",
    })
}

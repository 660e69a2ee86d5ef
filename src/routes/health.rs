//! `GET /`, `GET /health` and `GET /health/public` (spec §2.1, §2.2): liveness answers with the
//! application version and no dependency checks, so a load balancer never fails a healthy
//! process because a downstream service is slow.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::APP_VERSION;

/// Where the documentation page is (the root route's `docs` field; [`super::docs`] serves it).
pub const DOCS_PATH: &str = "/docs";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/health/public", get(health_public))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Root {
    #[schema(example = "Apuntador OAuth Backend")]
    message: &'static str,
    #[schema(example = "1.0.41")]
    version: &'static str,
    /// The API documentation page (`/docs`) when `ENABLE_DOCS` is on, else `null`.
    #[schema(example = "/docs")]
    docs: Option<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(example = "ok")]
    status: &'static str,
    #[schema(example = "1.0.41")]
    version: &'static str,
    message: &'static str,
}

/// Service name, version and where the API documentation is.
#[utoipa::path(get, path = "/", tag = "health",
    responses((status = 200, description = "The service", body = Root)))]
pub(crate) async fn root(State(state): State<AppState>) -> Json<Root> {
    Json(Root {
        message: "Apuntador OAuth Backend",
        version: APP_VERSION,
        docs: state.config.docs.then_some(DOCS_PATH),
    })
}

/// Liveness: answers whenever the process serves requests; checks no dependency.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
pub(crate) async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: APP_VERSION,
        message: "Service is healthy",
    })
}

/// Liveness on the public API (no client certificate needed anywhere).
#[utoipa::path(get, path = "/health/public", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
pub(crate) async fn health_public() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: APP_VERSION,
        message: "Public endpoint (no mTLS)",
    })
}

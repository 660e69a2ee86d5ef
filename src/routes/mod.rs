//! The HTTP surface: [`AppState`] (built once per process, shared by every request), the axum
//! [`Router`] with its layers, identical in Lambda and server mode, and the routes, one file per
//! area. Handlers are thin: parse (extractors in [`extract`]), call the domain, map the answer.
//!
//! Layers, outermost first: request span + `X-Trace-ID` → CORS (so every answer, errors and
//! preflights included, carries CORS headers and no auth check can block a preflight) →
//! problem rendering → per-client rate limit ([`crate::rate_limit`], server mode, when
//! `RATE_LIMIT_PER_MINUTE` is set) → panic catcher → body limit → routes.

pub mod attestation;
pub mod device;
pub mod docs;
pub mod extract;
pub mod health;
pub mod oauth;
pub mod provider_config;
pub mod responses;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowMethods, AllowOrigin, CorsLayer};

use crate::attestation::challenge::Challenges;
use crate::attestation::service::Attestor;
use crate::attestation::store::AttestationStore;
use crate::attestation::store::dynamo::DynamoAttestations;
use crate::attestation::store::local::LocalAttestations;
use crate::config::{Config, CorsConfig};
use crate::device::material::{CaProvider, CaSource};
use crate::device::service::DeviceService;
use crate::device::settings::{DeviceSettings, Infrastructure};
use crate::device::store::CertificateStore;
use crate::device::store::dynamo::DynamoStore;
use crate::device::store::local::LocalStore;
use crate::error::{ApiError, method_not_allowed, not_found, render_problems};
use crate::keys::Keys;
use crate::oauth::broker::Broker;
use crate::oauth::client::ClientBuildError;
use crate::single_use::dynamo::DynamoSingleUse;
use crate::single_use::{InProcess, SingleUse};
use crate::telemetry::http::{RequestTracing, TRACE_ID_HEADER, trace_requests};
use extract::BodyLimit;

/// Per-process state handed to handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The state keys and the configuration API's key ([`crate::keys`]).
    pub keys: Arc<Keys>,
    pub oauth: Arc<Broker>,
    pub devices: Arc<DeviceService>,
    /// Attestation challenges ([`crate::attestation::challenge`]).
    pub challenges: Arc<Challenges>,
    /// Attestations and their verdicts ([`crate::attestation::service`]).
    pub attestation: Arc<Attestor>,
}

impl AppState {
    /// Builds the shared clients once per process (cold start). AWS clients are configured here
    /// only when the AWS backend is chosen; nothing is fetched until a request needs it.
    pub async fn new(config: Arc<Config>) -> Result<Self, ClientBuildError> {
        let backends = Backends::new(&config.devices).await;
        let keys = Arc::new(Keys::new(config.keys.clone()));
        let challenges = Arc::new(Challenges::new(
            keys.clone(),
            backends.single_use.clone(),
            config.attestation.challenge_ttl_seconds,
        ));
        let attestation = Attestor::new(
            challenges.clone(),
            backends.attestations,
            &config.attestation,
        );
        let oauth = Broker::new(config.oauth.clone(), keys.clone(), backends.single_use)?;
        let devices = DeviceService::new(CaProvider::new(backends.ca), backends.certificates);
        Ok(Self {
            config,
            keys,
            oauth: Arc::new(oauth),
            devices: Arc::new(devices),
            challenges,
            attestation: Arc::new(attestation),
        })
    }
}

/// Where the device CA, the certificate records, single-use claims and attestation state live:
/// local files and memory, or Secrets Manager and DynamoDB (`INFRASTRUCTURE_PROVIDER`).
struct Backends {
    ca: CaSource,
    certificates: Arc<dyn CertificateStore>,
    single_use: Arc<dyn SingleUse>,
    attestations: Arc<dyn AttestationStore>,
}

impl Backends {
    async fn new(devices: &DeviceSettings) -> Self {
        match &devices.infrastructure {
            Infrastructure::Local { base_dir } => Self {
                ca: CaSource::Files {
                    dir: base_dir.clone(),
                    create_if_missing: devices.create_dev_ca,
                },
                certificates: Arc::new(LocalStore::new(base_dir.clone())),
                single_use: Arc::new(InProcess::new()),
                attestations: Arc::new(LocalAttestations::new(base_dir.clone())),
            },
            Infrastructure::Aws {
                table,
                secrets_prefix,
                auto_create,
                single_use_table,
                attestation_table,
            } => {
                let client = crate::aws::dynamodb().await;
                Self {
                    ca: CaSource::SecretsManager {
                        prefix: secrets_prefix.clone(),
                    },
                    certificates: Arc::new(DynamoStore::new(
                        client.clone(),
                        table.clone(),
                        *auto_create,
                    )),
                    single_use: Arc::new(DynamoSingleUse::new(
                        client.clone(),
                        single_use_table.clone(),
                        *auto_create,
                    )),
                    attestations: Arc::new(DynamoAttestations::new(
                        client,
                        attestation_table.clone(),
                        *auto_create,
                    )),
                }
            }
        }
    }
}

/// The router with every route and layer.
pub fn router(state: AppState, tracing: RequestTracing) -> Router {
    router_with(state, tracing, Router::new())
}

/// The production router with `extra` routes mounted under the same layers (tests use it to
/// probe the pipeline with handlers that panic or take bodies).
pub fn router_with(state: AppState, tracing: RequestTracing, extra: Router<AppState>) -> Router {
    let body_limit = state.config.max_body_bytes;
    let request_timeout = state.config.server.request_timeout;
    let cors = cors_layer(&state.config.cors);
    let docs = if state.config.docs {
        docs::router()
    } else {
        Router::new()
    };
    let limiter =
        crate::rate_limit::Limiter::new(state.config.rate_limit, tracing.trusted_proxy_hops());
    let routes = Router::new()
        .merge(extra)
        .merge(docs)
        .merge(health::router())
        .merge(oauth::router())
        .merge(device::router())
        .merge(attestation::router())
        .merge(provider_config::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(request_timeout, answer_within))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(BodyLimit(body_limit)))
        .layer(CatchPanicLayer::custom(panic_response));
    // Inside the span, CORS and problem rendering, so a 429 is traced, readable by browsers
    // and a problem like any other answer.
    let routes = match limiter {
        Some(limiter) => routes.layer(from_fn_with_state(
            limiter,
            crate::rate_limit::limit_requests,
        )),
        None => routes,
    };
    routes
        .layer(from_fn(render_problems))
        .layer(cors)
        .layer(from_fn_with_state(tracing, trace_requests))
        .with_state(state)
}

/// A request (reading its body included) not answered within `limit` gets a 408 problem, so
/// a client trickling its body cannot hold a handler for good.
async fn answer_within(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::coded(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request was not complete within {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("panic with a non-string payload");
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}

fn cors_layer(cors: &CorsConfig) -> CorsLayer {
    let wildcard = |list: &[String]| list.iter().any(|v| v == "*");
    let layer = CorsLayer::new()
        .max_age(Duration::from_secs(600))
        .expose_headers([TRACE_ID_HEADER]);
    // Credentials are allowed only with an explicit origin list: a browser refuses
    // credentials with `*`, and reflecting any origin with credentials would defeat CORS.
    let layer = if wildcard(&cors.allowed_origins) {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let origins: Vec<HeaderValue> = cors
            .allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(origins).allow_credentials(true)
    };
    let layer = if wildcard(&cors.allowed_methods) {
        layer.allow_methods(AllowMethods::mirror_request())
    } else {
        let methods: Vec<Method> = cors
            .allowed_methods
            .iter()
            .filter_map(|m| m.to_ascii_uppercase().parse().ok())
            .collect();
        layer.allow_methods(methods)
    };
    // An explicit list only (configuration refuses `*` and the client-certificate headers).
    let headers: Vec<HeaderName> = cors
        .allowed_headers
        .iter()
        .filter_map(|h| h.parse().ok())
        .collect();
    layer.allow_headers(headers)
}

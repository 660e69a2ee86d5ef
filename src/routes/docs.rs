//! The API contract for client developers: the OpenAPI 3.1 document (`GET /openapi.json`) and
//! the page that renders it (`GET /docs`, also `/redoc`), served only with `ENABLE_DOCS=true`.
//!
//! The document is generated from the code: each handler's `#[utoipa::path]` (its route,
//! parameters, body and responses) and the request and response types' `ToSchema` derives,
//! whose limits are the ones the extractors enforce. [`ApiDoc`] lists the handlers; a test
//! compares that list with the routes the routers register, so a route cannot be added without
//! its documentation. The document is built the first time it is asked for and kept: nothing
//! of it runs at cold start, and with docs off nothing of it runs at all.
//!
//! The page is Redoc 2, vendored under `assets/docs/` (see its README): the browser loads
//! nothing from another origin, and the page is served with a CSP that allows only this one.

use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::AppState;
use super::health::DOCS_PATH;
use crate::error::{ApiError, Problem};

/// The document: every route of the service, the shared error shape and the security schemes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Apuntador backend",
        description = "OAuth 2.0 broker with PKCE for Google Drive, Dropbox and OneDrive, and a private certificate authority for the Apuntador teleprompter apps. Errors are RFC 9457 `application/problem+json`.",
        license(name = "MIT")
    ),
    paths(
        super::health::root,
        super::health::health,
        super::health::health_public,
        super::provider_config::providers,
        super::oauth::authorize,
        super::oauth::callback,
        super::oauth::token,
        super::oauth::refresh,
        super::oauth::revoke,
        super::device::enroll,
        super::device::renew,
        super::device::revoke,
        super::device::status,
        super::device::ca_certificate,
        super::device::ca_certificate_pin,
        super::attestation::challenge,
        super::attestation::android,
        super::attestation::ios,
        super::attestation::desktop,
        super::attestation::clear_cache,
    ),
    components(schemas(Problem, crate::error::FieldError, crate::oauth::provider::ProviderId)),
    modifiers(&SecuritySchemes, &RateLimited),
    tags(
        (name = "health", description = "Liveness and version"),
        (name = "configuration", description = "What this deployment offers"),
        (name = "oauth", description = "The OAuth 2.0 broker (PKCE S256); the client secret never leaves the backend"),
        (name = "device", description = "The device certificate authority; guarded routes need the device's client certificate (mutual TLS on the device API's domain)"),
        (name = "attestation", description = "Device attestation: single-use challenges, and the platform evidence that answers them"),
    )
)]
pub struct ApiDoc;

/// The config API key (bearer) and the device client certificate (mutual TLS).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "config_api_key",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("CONFIG_API_KEY, as `Authorization: Bearer <key>`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "device_certificate",
            SecurityScheme::MutualTls {
                description: Some(
                    "The device's client certificate, issued by /device/enroll, presented in the TLS handshake with the device API's custom domain".to_owned(),
                ),
                deprecated: None,
                extensions: None,
            },
        );
    }
}

/// `429 rate_limited` on every operation the limits apply to: all but the health checks
/// ([`crate::rate_limit`] in server mode with `RATE_LIMIT_PER_MINUTE`; behind API Gateway its
/// throttling answers 429 before the function runs).
struct RateLimited;

impl Modify for RateLimited {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, schema};
        let response = ResponseBuilder::new()
            .description(
                "Too many requests from this client: `rate_limited` (server mode with `RATE_LIMIT_PER_MINUTE`). Behind API Gateway its throttling answers 429 itself, with the JSON body `{\"message\":\"Too Many Requests\"}`.",
            )
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(schema::Object::with_type(schema::Type::Integer)))
                    .description(Some("Seconds until the client's budget allows a request"))
                    .build(),
            )
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if crate::telemetry::http::HEALTH_PATHS.contains(&path.as_str()) {
                continue;
            }
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                operation
                    .responses
                    .responses
                    .insert("429".to_owned(), response.clone().into());
            }
        }
    }
}

/// The document, built on first use; `None` if it could not be serialised (answered as a 500,
/// never as an empty document).
pub fn openapi_json() -> Option<&'static [u8]> {
    static DOCUMENT: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            ApiDoc::openapi()
                .to_json()
                .map_err(
                    |e| tracing::error!(error = %e, "the OpenAPI document cannot be serialised"),
                )
                .ok()
                .map(String::into_bytes)
        })
        .as_deref()
}

const PAGE: &str = include_str!("../../assets/docs/index.html");
const REDOC: &[u8] = include_bytes!("../../assets/docs/redoc.standalone.js");
const INIT: &[u8] = include_bytes!("../../assets/docs/init.js");
/// The notices of the libraries inside the Redoc bundle, which its first line points to.
const REDOC_NOTICES: &[u8] = include_bytes!("../../assets/docs/redoc.standalone.js.LICENSE.txt");

/// Only this origin: the page, its scripts and the document. Redoc 2 needs inline styles
/// (styled-components), `data:` images (heading link icons) and a `blob:` worker (search);
/// measured in Chromium, see assets/docs/README.md. `frame-ancestors`, `base-uri` and
/// `form-action` do not fall back to `default-src`, so they are named. The page carries the same
/// policy in a meta tag (where `frame-ancestors` has no effect).
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// How long a client may keep a file: the vendored bundle changes only with a release; the
/// document and the page must follow a deploy (or docs being switched off) at once.
#[derive(Clone, Copy)]
enum Caching {
    Hour,
    Revalidate,
}

fn asset(content_type: &'static str, body: &'static [u8], caching: Caching) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(match caching {
            Caching::Hour => "public, max-age=3600",
            Caching::Revalidate => "no-cache",
        }),
    );
    response
}

async fn document() -> Result<Response, ApiError> {
    openapi_json()
        .map(|body| asset("application/json", body, Caching::Revalidate))
        .ok_or_else(|| ApiError::Internal("the OpenAPI document cannot be serialised".to_owned()))
}

async fn page() -> Response {
    let mut response = asset(
        "text/html; charset=utf-8",
        PAGE.as_bytes(),
        Caching::Revalidate,
    );
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

async fn redoc() -> Response {
    asset(
        "application/javascript; charset=utf-8",
        REDOC,
        Caching::Hour,
    )
}

async fn init() -> Response {
    asset(
        "application/javascript; charset=utf-8",
        INIT,
        Caching::Revalidate,
    )
}

async fn notices() -> Response {
    asset("text/plain; charset=utf-8", REDOC_NOTICES, Caching::Hour)
}

/// The documentation routes (mounted only with `ENABLE_DOCS=true`; off, they are 404 like any
/// unknown path).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(document))
        .route(DOCS_PATH, get(page))
        .route("/redoc", get(page))
        .route("/docs/redoc.standalone.js", get(redoc))
        .route("/docs/init.js", get(init))
        .route("/docs/redoc.standalone.js.LICENSE.txt", get(notices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_both_security_schemes() {
        let document: serde_json::Value = serde_json::from_slice(openapi_json().unwrap()).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let schemes = &document["components"]["securitySchemes"];
        assert_eq!(schemes["config_api_key"]["scheme"], "bearer");
        assert_eq!(schemes["device_certificate"]["type"], "mutualTLS");
    }

    /// Issue 26: the 429 of the rate limits and the 503s that pass by themselves were missing
    /// from the contract, so generated clients had no type for them and no `Retry-After`.
    #[test]
    fn throttling_and_passing_outages_are_in_the_contract() {
        let document: serde_json::Value = serde_json::from_slice(openapi_json().unwrap()).unwrap();
        let paths = &document["paths"];
        let token = &paths["/oauth/token/{provider}"]["post"]["responses"];
        assert_eq!(
            token["429"]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        assert!(token["429"]["headers"]["Retry-After"].is_object());
        let unavailable = token["503"]["description"].as_str().unwrap();
        for code in [
            "state_store_unavailable",
            "keys_unavailable",
            "provider_unavailable",
        ] {
            assert!(unavailable.contains(code), "{code}: {unavailable}");
        }
        assert!(token["503"]["headers"]["Retry-After"].is_object());
        assert!(
            paths["/config/providers"]["get"]["responses"]["503"]["headers"]["Retry-After"]
                .is_object()
        );
        assert!(
            paths["/device/renew"]["post"]["responses"]["503"]["headers"]["Retry-After"]
                .is_object()
        );
        for (path, item) in paths.as_object().unwrap() {
            for operation in item.as_object().unwrap().values() {
                let limited = operation["responses"].get("429").is_some();
                let health = path == "/health" || path == "/health/public";
                assert_eq!(limited, !health, "{path}");
            }
        }
    }
}

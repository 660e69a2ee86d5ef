//! `GET /config/providers` (spec §2.8): which cloud providers this deployment offers, behind
//! its own API key (`CONFIG_API_KEY`, `Authorization: Bearer …`, compared in constant time).

use axum::extract::State;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::AppState;
use crate::APP_VERSION;
use crate::env::Secret;
use crate::error::{ApiError, Problem};
use crate::keys::KeysError;
use crate::oauth::provider::ProviderId;

/// How long clients may cache the answer, in seconds.
const CACHE_TTL_SECONDS: u32 = 3600;

pub fn router() -> Router<AppState> {
    Router::new().route("/config/providers", get(providers))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProviderStatus {
    enabled: bool,
    requires_mtls: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Providers {
    googledrive: ProviderStatus,
    dropbox: ProviderStatus,
    onedrive: ProviderStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProvidersResponse {
    providers: Providers,
    #[schema(example = "1.0.41")]
    version: &'static str,
    /// Seconds clients may cache the answer.
    #[schema(example = 3600)]
    cache_ttl: u32,
}

/// Which cloud providers this deployment offers.
#[utoipa::path(get, path = "/config/providers", tag = "configuration",
    security(("config_api_key" = [])),
    responses(
        (status = 200, description = "The providers", body = ProvidersResponse),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"apuntador\"`"))),
        (status = 503, description = "The configuration API is disabled (no `CONFIG_API_KEY`), or its key cannot be read now (`keys_unavailable`, with `Retry-After`)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "With `keys_unavailable`: seconds to wait before trying again (5)"))),
    ))]
pub(crate) async fn providers(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ProvidersResponse>, ApiError> {
    let keys = state.keys.get().await.map_err(unavailable)?;
    if let Err(refused) = authorize(&headers, keys.config_api_key.as_ref()) {
        // A key this process does not know may be one a rotation just put in the secret.
        let fresh = state.keys.refresh(&keys).await;
        if Arc::ptr_eq(&fresh, &keys) || !matches!(refused, ApiError::Unauthorized { .. }) {
            return Err(refused);
        }
        authorize(&headers, fresh.config_api_key.as_ref())?;
    }
    let status = |provider| ProviderStatus {
        enabled: state.config.oauth.enabled.contains(&provider),
        requires_mtls: true,
    };
    Ok(Json(ProvidersResponse {
        providers: Providers {
            googledrive: status(ProviderId::GoogleDrive),
            dropbox: status(ProviderId::Dropbox),
            onedrive: status(ProviderId::OneDrive),
        },
        version: APP_VERSION,
        cache_ttl: CACHE_TTL_SECONDS,
    }))
}

/// The keys secret cannot be read: a 503 that comes back by itself (`Retry-After`).
fn unavailable(error: KeysError) -> ApiError {
    tracing::warn!(error = %error, "GET /config/providers: no key to check against");
    ApiError::coded(
        StatusCode::SERVICE_UNAVAILABLE,
        "keys_unavailable",
        "The configuration API's key cannot be read right now; try again shortly.",
    )
}

/// Checks `Authorization: Bearer <key>` against the configured key.
fn authorize(headers: &HeaderMap, expected: Option<&Secret>) -> Result<(), ApiError> {
    let unauthorized = |detail| ApiError::Unauthorized {
        challenge: r#"Bearer realm="apuntador""#,
        code: None,
        detail,
    };
    let expected = expected.ok_or_else(|| {
        ApiError::ServiceUnavailable(
            "The configuration API is disabled on this deployment (CONFIG_API_KEY is not set)."
                .to_owned(),
        )
    })?;
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(unauthorized("Missing Authorization header"))?;
    let mut parts = value.split_whitespace();
    let token = match (parts.next(), parts.next(), parts.next()) {
        (Some(scheme), Some(token), None) if scheme.eq_ignore_ascii_case("bearer") => token,
        _ => {
            return Err(unauthorized(
                "Invalid Authorization header format. Expected: Bearer <token>",
            ));
        }
    };
    if bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes())) {
        Ok(())
    } else {
        Err(unauthorized("Invalid API key"))
    }
}

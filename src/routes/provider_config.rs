//! `GET /config/providers` (spec §2.8): which cloud providers this deployment offers, behind
//! its own API key (`CONFIG_API_KEY`, `Authorization: Bearer …`, compared in constant time).

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::APP_VERSION;
use crate::env::Secret;
use crate::error::ApiError;
use crate::oauth::provider::ProviderId;

/// How long clients may cache the answer, in seconds.
const CACHE_TTL_SECONDS: u32 = 3600;

pub fn router() -> Router<AppState> {
    Router::new().route("/config/providers", get(providers))
}

#[derive(Debug, Serialize)]
struct ProviderStatus {
    enabled: bool,
    requires_mtls: bool,
}

#[derive(Debug, Serialize)]
struct Providers {
    googledrive: ProviderStatus,
    dropbox: ProviderStatus,
    onedrive: ProviderStatus,
}

#[derive(Debug, Serialize)]
struct ProvidersResponse {
    providers: Providers,
    version: &'static str,
    cache_ttl: u32,
}

async fn providers(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ProvidersResponse>, ApiError> {
    authorize(&headers, state.config.config_api_key.as_ref())?;
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

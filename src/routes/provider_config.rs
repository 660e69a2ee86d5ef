//! `GET /config/providers` (spec §2.8): which cloud providers this deployment offers, behind
//! the operator's API key ([`Operator`]: `CONFIG_API_KEY`, `Authorization: Bearer …`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::extract::Operator;
use crate::APP_VERSION;
use crate::error::{ApiError, Problem};
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
    _operator: Operator,
) -> Result<Json<ProvidersResponse>, ApiError> {
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

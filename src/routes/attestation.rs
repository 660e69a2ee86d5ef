//! The attestation routes (spec §2.15, issue 27). `POST /device/attest/challenge` hands out the
//! single-use challenge an attestation must answer ([`crate::attestation::challenge`]); it is
//! open (no client certificate), because a device attests before it is enrolled.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::device::naive;
use super::extract::{ApiJson, FieldChecks, FromJson};
use super::responses::BodyErrors;
use crate::attestation::Platform;
use crate::attestation::challenge::ChallengeError;
use crate::device::id::DeviceId;
use crate::error::{ApiError, FieldError, sentence};

pub fn router() -> Router<AppState> {
    Router::new().route("/device/attest/challenge", post(challenge))
}

impl From<ChallengeError> for ApiError {
    fn from(error: ChallengeError) -> Self {
        let status = match &error {
            ChallengeError::Used => StatusCode::CONFLICT,
            ChallengeError::Keys(_) | ChallengeError::Store(_) => {
                tracing::warn!(error = ?error, "attestation challenge unavailable");
                StatusCode::SERVICE_UNAVAILABLE
            }
            ChallengeError::Entropy => return ApiError::Internal(error.to_string()),
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::coded(status, error.code(), sentence(&error.to_string()))
    }
}

/// A challenge request.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ChallengeRequest {
    /// The device that will attest: 5 to 128 of `A-Z a-z 0-9 _ -`.
    #[schema(min_length = 5, max_length = 128, pattern = "^[A-Za-z0-9_-]{5,128}$")]
    device_id: String,
    /// The platform whose attestation will answer it.
    #[schema(value_type = Platform)]
    platform: String,
}

pub(crate) struct ChallengeFor {
    device: DeviceId,
    platform: Platform,
}

impl FromJson for ChallengeFor {
    type Raw = ChallengeRequest;

    fn from_json(raw: ChallengeRequest) -> Result<Self, Vec<FieldError>> {
        let mut checks = FieldChecks::default();
        let device = checks.parse("device_id", DeviceId::parse(&raw.device_id));
        let platform = checks.parse("platform", Platform::parse(&raw.platform));
        checks.finish(
            device
                .zip(platform)
                .map(|(device, platform)| ChallengeFor { device, platform }),
        )
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChallengeAnswer {
    /// Answer it once, before it expires: in the Play Integrity request hash, as the App Attest
    /// client data, or in the desktop request (see the attestation guide for how each platform
    /// commits to it).
    #[schema(max_length = 512, example = "ch1.Vb3q…")]
    challenge: String,
    #[schema(value_type = String)]
    device_id: DeviceId,
    platform: Platform,
    /// UTC, ISO 8601 without offset.
    #[schema(example = "2026-12-05T16:35:00")]
    expires_at: String,
    /// Seconds from now.
    #[schema(example = 300)]
    expires_in: u64,
}

/// A single-use challenge for the device's next attestation on the platform.
#[utoipa::path(post, path = "/device/attest/challenge", tag = "attestation",
    request_body = ChallengeRequest,
    responses(
        (status = 200, description = "The challenge", body = ChallengeAnswer),
        (status = 400, description = "The body is not JSON or has trailing data", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key that seals challenges cannot be read now (`keys_unavailable`)", body = crate::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before trying again (5)"))),
        BodyErrors,
    ))]
pub(crate) async fn challenge(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ChallengeFor>,
) -> Result<Json<ChallengeAnswer>, ApiError> {
    crate::telemetry::annotations::device_platform(body.platform.as_str());
    let issued = state.challenges.issue(&body.device, body.platform).await?;
    let now = crate::clock::now_secs();
    let expires_at = i64::try_from(issued.expires_at)
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .ok_or_else(|| ApiError::Internal("challenge expiry out of range".to_owned()))?;
    Ok(Json(ChallengeAnswer {
        challenge: issued.challenge,
        device_id: body.device,
        platform: body.platform,
        expires_at: naive(expires_at),
        expires_in: issued.expires_at.saturating_sub(now),
    }))
}

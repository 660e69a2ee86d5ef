//! The attestation routes (spec §2.15, issue 27). `POST /device/attest/challenge` hands out the
//! single-use challenge an attestation must answer ([`crate::attestation::challenge`]); it is
//! open (no client certificate), because a device attests before it is enrolled.
//! `POST /device/attest/{android,ios,desktop}` are behind the client certificate of the device
//! they name, issued for that platform, and answer the verdict
//! ([`crate::attestation::service`]): 200 when `valid`, else a problem with the stable code of
//! what failed. `POST /device/attest/clear-cache` is the operator's ([`Operator`]), 204.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::device::naive;
use super::extract::{ApiJson, Authenticated, FieldChecks, FromJson, Operator};
use super::responses::{AttestationErrors, BodyErrors};
use crate::attestation::Platform;
use crate::attestation::app_attest::MAX_OBJECT_BYTES;
use crate::attestation::challenge::{ChallengeError, MAX_CHALLENGE_LEN};
use crate::attestation::desktop::Fingerprint;
use crate::attestation::play_integrity::MAX_TOKEN_BYTES;
use crate::attestation::service::{AttestError, EnrollmentEvidence, IosEvidence};
use crate::attestation::store::StoreError;
use crate::attestation::verdict::{Status, Verdict};
use crate::device::id::DeviceId;
use crate::error::{ApiError, FieldError, sentence};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/device/attest/challenge", post(challenge))
        .route("/device/attest/android", post(android))
        .route("/device/attest/ios", post(ios))
        .route("/device/attest/desktop", post(desktop))
        .route("/device/attest/clear-cache", post(clear_cache))
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
    /// The platform whose attestation will answer it: `android` or `ios` (desktop has no
    /// platform attestation, and its route takes no challenge).
    #[schema(value_type = ChallengePlatform)]
    platform: String,
}

/// The platforms that answer challenges (the schema of [`ChallengeRequest::platform`]).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub(crate) enum ChallengePlatform {
    Android,
    Ios,
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
        let platform = checks.parse(
            "platform",
            Platform::parse(&raw.platform).and_then(|platform| {
                match platform {
                Platform::Desktop => Err(
                    "desktop has no platform attestation: /device/attest/desktop takes no challenge"
                        .to_owned(),
                ),
                other => Ok(other),
            }
            }),
        );
        checks.finish(
            device
                .zip(platform)
                .map(|(device, platform)| ChallengeFor { device, platform }),
        )
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChallengeAnswer {
    /// Answer it once, before it expires: in the Play Integrity request hash, or as the App
    /// Attest client data (see the attestation guide for how each platform commits to it).
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

/// Longest evidence accepted, in characters: the base64 of an App Attest object of
/// [`MAX_OBJECT_BYTES`], which also bounds a Play Integrity token.
pub const MAX_EVIDENCE_CHARS: usize = MAX_OBJECT_BYTES.div_ceil(3) * 4;

/// A Play Integrity token as sent: 100 to [`MAX_TOKEN_BYTES`] characters of the compact JWE's
/// alphabet (base64url and dots), so the verifier never refuses one for its size or bytes after
/// the challenge is used.
fn play_token(name: &str, value: &str) -> Result<String, String> {
    let token = sized(name, value.trim(), 100, MAX_TOKEN_BYTES)?;
    if token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
    {
        Ok(token.to_owned())
    } else {
        Err(format!(
            "{name} must be a compact JWE (base64url parts joined by dots)"
        ))
    }
}

/// `value` when it holds `min` to `max` characters.
fn sized<'a>(name: &str, value: &'a str, min: usize, max: usize) -> Result<&'a str, String> {
    let len = value.chars().count();
    if (min..=max).contains(&len) {
        Ok(value)
    } else {
        Err(format!(
            "{name} must be {min} to {max} characters long (got {len})"
        ))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::warn!(error = %error, "attestation store unavailable");
        ApiError::coded(
            StatusCode::SERVICE_UNAVAILABLE,
            "attestation_store_unavailable",
            "Attestation storage is unavailable; try again shortly.",
        )
    }
}

/// An attestation's failure as the client sees it: a problem, with `Retry-After` when the
/// device is over its rate.
pub(crate) struct Refusal {
    problem: ApiError,
    retry_after: Option<u64>,
}

impl From<ApiError> for Refusal {
    fn from(problem: ApiError) -> Self {
        Self {
            problem,
            retry_after: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = self.problem.into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The spec's wording (§2.15) for a verdict that is not `valid`, by platform.
fn refused_detail(verdict: &Verdict, message: &str) -> String {
    let message = sentence(message);
    match (verdict.platform, verdict.status) {
        (Platform::Android, Status::Failed) => {
            format!("Play Integrity verification failed: {message}")
        }
        (Platform::Ios, Status::Failed) => format!("App Attest verification failed: {message}"),
        (Platform::Desktop, Status::Failed) => format!("Desktop verification failed: {message}"),
        (Platform::Desktop, _) => format!("Device verification failed: {message}"),
        _ => format!("Device failed integrity check: {message}"),
    }
}

impl From<AttestError> for Refusal {
    fn from(error: AttestError) -> Self {
        let problem = match error {
            AttestError::Challenge(e) => e.into(),
            AttestError::Store(e) => e.into(),
            AttestError::PlayIntegrityKeys(e) => {
                tracing::warn!(error = %e, "Play Integrity keys unavailable");
                ApiError::coded(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.code(),
                    "The Play Integrity keys cannot be read right now; try again shortly.",
                )
            }
            AttestError::Unsupported(platform) => ApiError::coded(
                StatusCode::NOT_IMPLEMENTED,
                "attestation_unsupported",
                match platform {
                    Platform::Android => {
                        "Play Integrity verification is not configured on this deployment."
                    }
                    Platform::Ios => {
                        "App Attest verification is not configured on this deployment."
                    }
                    Platform::Desktop => {
                        "Desktop verification is not configured on this deployment."
                    }
                },
            ),
            AttestError::RateLimited { retry_after, .. } => {
                let problem = ApiError::coded(
                    StatusCode::TOO_MANY_REQUESTS,
                    "attestation_rate_limited",
                    sentence(&error.to_string()),
                );
                return Self {
                    problem,
                    retry_after: Some(retry_after),
                };
            }
            AttestError::Refused { verdict, message } => ApiError::coded(
                StatusCode::BAD_REQUEST,
                verdict.error.as_deref().unwrap_or("attestation_refused"),
                refused_detail(&verdict, &message),
            ),
        };
        problem.into()
    }
}

impl Authenticated {
    /// The certificate must be the device's, issued for the platform that attests.
    fn attesting(&self, device: &DeviceId, platform: Platform) -> Result<(), ApiError> {
        self.acting_on(device)?;
        if self.0.platform.as_str() == platform.as_str() {
            Ok(())
        } else {
            Err(ApiError::coded(
                StatusCode::FORBIDDEN,
                "platform_mismatch",
                format!(
                    "The client certificate was issued for {}, not {}.",
                    self.0.platform.as_str(),
                    platform.as_str()
                ),
            ))
        }
    }
}

/// An Android attestation (spec §2.15).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct AndroidRequest {
    /// The Play Integrity token (compact JWE) whose request hash is the base64url of SHA-256 of
    /// the challenge.
    #[schema(min_length = 100, max_length = 16384, pattern = "^[A-Za-z0-9_.=-]+$")]
    jws_token: String,
    #[schema(min_length = 5, max_length = 128, pattern = "^[A-Za-z0-9_-]{5,128}$")]
    device_id: String,
    /// The challenge from `/device/attest/challenge` (platform `android`).
    #[schema(min_length = 16, max_length = 512)]
    nonce: String,
}

pub(crate) struct AndroidAttestation {
    token: String,
    device: DeviceId,
    challenge: String,
}

impl FromJson for AndroidAttestation {
    type Raw = AndroidRequest;

    fn from_json(raw: AndroidRequest) -> Result<Self, Vec<FieldError>> {
        let mut checks = FieldChecks::default();
        let token = checks.parse("jws_token", play_token("jws_token", &raw.jws_token));
        let device = checks.parse("device_id", DeviceId::parse(&raw.device_id));
        let challenge = checks.parse(
            "nonce",
            sized("nonce", &raw.nonce, 16, MAX_CHALLENGE_LEN).map(str::to_owned),
        );
        checks.finish(
            token
                .zip(device)
                .zip(challenge)
                .map(|((token, device), challenge)| AndroidAttestation {
                    token,
                    device,
                    challenge,
                }),
        )
    }
}

/// A valid Android verdict, keys in the spec's order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AndroidAnswer {
    status: Status,
    #[schema(value_type = String)]
    device_id: DeviceId,
    /// When the evidence was evaluated (a cached verdict repeats its time): UTC, ISO 8601
    /// without offset.
    timestamp: String,
    cts_profile_match: Option<bool>,
    basic_integrity: Option<bool>,
    advice: Option<String>,
    error_message: Option<String>,
}

/// Verifies the device's Play Integrity token.
#[utoipa::path(post, path = "/device/attest/android", tag = "attestation",
    request_body = AndroidRequest,
    security(("device_certificate" = [])),
    responses(
        (status = 200, description = "The device and app are genuine (`valid`)", body = AndroidAnswer),
        (status = 400, description = "The body is not JSON or has trailing data; the challenge is not one this backend issued for this device and platform, or expired (`challenge_invalid`, `challenge_mismatch`, `challenge_expired`); or the verdict is not `valid` (its code)", body = crate::error::Problem, content_type = "application/problem+json"),
        BodyErrors, AttestationErrors,
    ))]
pub(crate) async fn android(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<AndroidAttestation>,
) -> Result<Json<AndroidAnswer>, Refusal> {
    caller.attesting(&body.device, Platform::Android)?;
    let verdict = state
        .attestation
        .android(&body.device, &caller.0.serial, &body.challenge, &body.token)
        .await?;
    Ok(Json(AndroidAnswer {
        status: verdict.status,
        device_id: body.device,
        timestamp: naive(verdict.at),
        cts_profile_match: verdict.checks.cts_profile_match,
        basic_integrity: verdict.checks.basic_integrity,
        advice: verdict.advice,
        error_message: None,
    }))
}

/// An iOS attestation (spec §2.15), with App Attest.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct IosRequest {
    /// Base64 of the App Attest object: the attestation of a new key (with `key_id`), or an
    /// assertion by the device's attested key (without), made over SHA-256 of the challenge.
    #[schema(
        min_length = 100,
        max_length = 21848,
        pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
    )]
    device_token: String,
    #[schema(min_length = 5, max_length = 128, pattern = "^[A-Za-z0-9_-]{5,128}$")]
    device_id: String,
    /// The challenge from `/device/attest/challenge` (platform `ios`).
    #[schema(min_length = 16, max_length = 512)]
    challenge: String,
    /// Base64 of the key's identifier (`generateKey`'s answer), when `device_token` is an
    /// attestation.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9+/]{43}=$")]
    key_id: Option<String>,
}

pub(crate) struct IosAttestation {
    object: Vec<u8>,
    device: DeviceId,
    challenge: String,
    key_id: Option<Vec<u8>>,
}

/// Standard base64 as the apps' platforms write it, padded or not; unused trailing bits are
/// ignored (the bytes are what is verified).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn base64_of(name: &str, value: &str) -> Result<Vec<u8>, String> {
    LENIENT_BASE64
        .decode(value.trim())
        .map_err(|_| format!("{name} must be base64"))
}

impl FromJson for IosAttestation {
    type Raw = IosRequest;

    fn from_json(raw: IosRequest) -> Result<Self, Vec<FieldError>> {
        let mut checks = FieldChecks::default();
        let object = checks.parse(
            "device_token",
            sized("device_token", &raw.device_token, 100, MAX_EVIDENCE_CHARS)
                .and_then(|token| base64_of("device_token", token)),
        );
        let device = checks.parse("device_id", DeviceId::parse(&raw.device_id));
        let challenge = checks.parse(
            "challenge",
            sized("challenge", &raw.challenge, 16, MAX_CHALLENGE_LEN).map(str::to_owned),
        );
        let key_id = match raw.key_id.as_deref() {
            None => Some(None),
            Some(key_id) => checks
                .parse(
                    "key_id",
                    base64_of("key_id", key_id).and_then(|bytes| {
                        if bytes.len() == 32 {
                            Ok(bytes)
                        } else {
                            Err("key_id must be the base64 of 32 bytes".to_owned())
                        }
                    }),
                )
                .map(Some),
        };
        checks.finish(object.zip(device).zip(challenge).zip(key_id).map(
            |(((object, device), challenge), key_id)| IosAttestation {
                object,
                device,
                challenge,
                key_id,
            },
        ))
    }
}

/// A valid iOS verdict, keys in the spec's order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IosAnswer {
    status: Status,
    #[schema(value_type = String)]
    device_id: DeviceId,
    /// When the evidence was evaluated (a cached verdict repeats its time).
    timestamp: String,
    integrity_verified: Option<bool>,
    error_message: Option<String>,
}

/// Verifies the device's App Attest attestation or assertion.
#[utoipa::path(post, path = "/device/attest/ios", tag = "attestation",
    request_body = IosRequest,
    security(("device_certificate" = [])),
    responses(
        (status = 200, description = "The app is genuine and the key is the device's (`valid`)", body = IosAnswer),
        (status = 400, description = "The body is not JSON or has trailing data; the challenge is not one this backend issued for this device and platform, or expired (`challenge_invalid`, `challenge_mismatch`, `challenge_expired`); or the verdict is not `valid` (its code: `attestation_untrusted`, `assertion_signature`, `no_attested_key`, …)", body = crate::error::Problem, content_type = "application/problem+json"),
        BodyErrors, AttestationErrors,
    ))]
pub(crate) async fn ios(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<IosAttestation>,
) -> Result<Json<IosAnswer>, Refusal> {
    caller.attesting(&body.device, Platform::Ios)?;
    let evidence = IosEvidence {
        object: &body.object,
        key_id: body.key_id.as_deref(),
    };
    let verdict = state
        .attestation
        .ios(&body.device, &caller.0.serial, &body.challenge, evidence)
        .await?;
    Ok(Json(IosAnswer {
        status: verdict.status,
        device_id: body.device,
        timestamp: naive(verdict.at),
        integrity_verified: verdict.checks.integrity_verified,
        error_message: None,
    }))
}

/// A desktop attestation (spec §2.15): no platform attestation exists on desktop, so this
/// binds and compares a fingerprint and counts the device's attempts.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct DesktopRequest {
    #[schema(min_length = 5, max_length = 128, pattern = "^[A-Za-z0-9_-]{5,128}$")]
    device_id: String,
    /// SHA-256 of the machine's identifying facts, as the app computes it.
    #[schema(pattern = "^[a-f0-9]{64}$", min_length = 64, max_length = 64)]
    fingerprint: String,
    /// What the app reports about the machine; required by the spec, read by nothing, never
    /// kept or logged.
    #[schema(value_type = Object)]
    #[allow(dead_code)]
    platform_details: serde_json::Map<String, serde_json::Value>,
}

pub(crate) struct DesktopAttestation {
    device: DeviceId,
    fingerprint: Fingerprint,
}

impl FromJson for DesktopAttestation {
    type Raw = DesktopRequest;

    fn from_json(raw: DesktopRequest) -> Result<Self, Vec<FieldError>> {
        let mut checks = FieldChecks::default();
        let device = checks.parse("device_id", DeviceId::parse(&raw.device_id));
        let fingerprint = checks.parse("fingerprint", Fingerprint::parse(&raw.fingerprint));
        checks.finish(
            device
                .zip(fingerprint)
                .map(|(device, fingerprint)| DesktopAttestation {
                    device,
                    fingerprint,
                }),
        )
    }
}

/// A valid desktop verdict, keys in the spec's order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DesktopAnswer {
    status: Status,
    #[schema(value_type = String)]
    device_id: DeviceId,
    /// When the attestation was evaluated.
    timestamp: String,
    fingerprint_match: Option<bool>,
    rate_limit_ok: Option<bool>,
    error_message: Option<String>,
}

/// Binds the fingerprint to the device's certificate at its first attestation, compares it
/// afterwards, and counts the device's attestations per hour.
#[utoipa::path(post, path = "/device/attest/desktop", tag = "attestation",
    request_body = DesktopRequest,
    security(("device_certificate" = [])),
    responses(
        (status = 200, description = "The fingerprint is the one bound to the certificate and the device is within its rate (`valid`)", body = DesktopAnswer),
        (status = 400, description = "The body is not JSON or has trailing data, or the fingerprint is not the bound one (`fingerprint_mismatch`)", body = crate::error::Problem, content_type = "application/problem+json"),
        BodyErrors, AttestationErrors,
    ))]
pub(crate) async fn desktop(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<DesktopAttestation>,
) -> Result<Json<DesktopAnswer>, Refusal> {
    caller.attesting(&body.device, Platform::Desktop)?;
    let verdict = state
        .attestation
        .desktop(&body.device, &caller.0.serial, &body.fingerprint)
        .await?;
    Ok(Json(DesktopAnswer {
        status: verdict.status,
        device_id: body.device,
        timestamp: naive(verdict.at),
        fingerprint_match: verdict.checks.fingerprint_match,
        rate_limit_ok: verdict.checks.rate_limit_ok,
        error_message: None,
    }))
}

/// Forgets every cached verdict, in every process: the next attestation of each device is
/// verified anew.
#[utoipa::path(post, path = "/device/attest/clear-cache", tag = "attestation",
    security(("config_api_key" = [])),
    responses(
        (status = 204, description = "Cleared"),
        (status = 401, description = "Missing or wrong API key", body = crate::error::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"apuntador\"`"))),
        (status = 500, description = "An unexpected error (details are logged, never sent)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "No `CONFIG_API_KEY` is configured, or its key (`keys_unavailable`) or the attestation store (`attestation_store_unavailable`) cannot be reached now", body = crate::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "With a code: seconds to wait before trying again (5)"))),
    ))]
pub(crate) async fn clear_cache(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<StatusCode, ApiError> {
    state.attestation.clear_cache().await?;
    tracing::info!("attestation cache cleared");
    Ok(StatusCode::NO_CONTENT)
}

/// An enrollment's attestation as the `attestation` field of `/device/enroll` carries it: a
/// JSON object, or a string holding one (the spec typed the field a string). Android:
/// `{challenge, token}` (the Play Integrity token); iOS: `{challenge, device_token, key_id}`
/// (the App Attest attestation and its key id, base64). Either signs over the client data hash
/// of the challenge and the CSR's key.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = EnrollmentAttestation)]
pub(crate) struct EnrollmentAttestationBody {
    /// From `/device/attest/challenge` for this device and platform.
    #[schema(min_length = 16, max_length = 512)]
    challenge: String,
    /// Android: the Play Integrity token.
    #[schema(min_length = 100, max_length = 16384, pattern = "^[A-Za-z0-9_.=-]+$")]
    token: Option<String>,
    /// iOS: base64 of the App Attest attestation object.
    #[schema(min_length = 100, max_length = 21848)]
    device_token: Option<String>,
    /// iOS: base64 of the attested key's id.
    #[schema(pattern = "^[A-Za-z0-9+/]{43}=$")]
    key_id: Option<String>,
}

/// The `attestation` field's schema: the object, or a string holding it (the spec typed the
/// field a string).
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum EnrollmentAttestationField {
    Object(EnrollmentAttestationBody),
    Text(String),
}

/// The evidence, parsed and owned ([`EnrollmentEvidence`] borrows it).
pub(crate) enum OwnedEvidence {
    Android {
        challenge: String,
        token: String,
    },
    Ios {
        challenge: String,
        object: Vec<u8>,
        key_id: Vec<u8>,
    },
}

impl OwnedEvidence {
    pub(crate) fn borrowed(&self) -> EnrollmentEvidence<'_> {
        match self {
            Self::Android { challenge, token } => EnrollmentEvidence::Android { challenge, token },
            Self::Ios {
                challenge,
                object,
                key_id,
            } => EnrollmentEvidence::Ios {
                challenge,
                object,
                key_id,
            },
        }
    }

    /// `raw` (the `attestation` field) as `platform`'s evidence, or what is wrong with it,
    /// located under `body.attestation`.
    pub(crate) fn parse(
        platform: Platform,
        raw: &serde_json::Value,
    ) -> Result<Self, Vec<FieldError>> {
        let at = |field: &str, msg: String| {
            let loc: Vec<&str> = if field.is_empty() {
                vec!["body", "attestation"]
            } else {
                vec!["body", "attestation", field]
            };
            vec![FieldError::new("value_error", &loc, msg)]
        };
        let object = match raw {
            serde_json::Value::String(text) => serde_json::from_str(text).ok(),
            other => Some(other.clone()),
        };
        let body: EnrollmentAttestationBody = object
            .and_then(|value| serde_json::from_value(value).ok())
            .ok_or_else(|| {
                at(
                    "",
                    "attestation must be a JSON object (or a string holding one) with challenge and the platform's evidence"
                        .to_owned(),
                )
            })?;
        let challenge = sized("challenge", &body.challenge, 16, MAX_CHALLENGE_LEN)
            .map_err(|msg| at("challenge", msg))?
            .to_owned();
        match platform {
            Platform::Android => {
                let token = body
                    .token
                    .ok_or_else(|| at("token", "an Android attestation needs token".to_owned()))?;
                play_token("token", &token).map_err(|msg| at("token", msg))?;
                Ok(Self::Android { challenge, token })
            }
            _ => {
                let object = body
                    .device_token
                    .ok_or_else(|| "an iOS attestation needs device_token".to_owned())
                    .and_then(|t| {
                        sized("device_token", &t, 100, MAX_EVIDENCE_CHARS)
                            .and_then(|t| base64_of("device_token", t))
                    })
                    .map_err(|msg| at("device_token", msg))?;
                let key_id = body
                    .key_id
                    .ok_or_else(|| "an iOS attestation needs key_id".to_owned())
                    .and_then(|k| base64_of("key_id", &k))
                    .and_then(|bytes| {
                        if bytes.len() == 32 {
                            Ok(bytes)
                        } else {
                            Err("key_id must be the base64 of 32 bytes".to_owned())
                        }
                    })
                    .map_err(|msg| at("key_id", msg))?;
                Ok(Self::Ios {
                    challenge,
                    object,
                    key_id,
                })
            }
        }
    }
}

//! The device routes (spec §2.9–2.14): enrollment (201), renewal, revocation and status behind
//! the client-certificate guard, and the public CA certificate and pin.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::attestation::{OwnedEvidence, Refusal};
use super::extract::{ApiJson, ApiPath, Authenticated, FieldChecks, FromJson};
use super::responses::{BodyErrors, GuardErrors};
use crate::attestation::service::Attested;
use crate::attestation::verdict::Status;
use crate::device::csr::{self, CheckedCsr};
use crate::device::id::{DeviceId, Platform, Serial};
use crate::device::material::MaterialError;
use crate::device::service::{DeviceError, Enrollment};
use crate::error::{ApiError, FieldError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/device/enroll", post(enroll))
        .route("/device/renew", post(renew))
        .route("/device/revoke", post(revoke))
        .route("/device/status/{device_id}", get(status))
        .route("/device/ca-certificate", get(ca_certificate))
        .route("/device/ca-certificate-pin", get(ca_certificate_pin))
}

impl From<DeviceError> for ApiError {
    fn from(error: DeviceError) -> Self {
        match error {
            DeviceError::Csr(e) => {
                ApiError::coded(StatusCode::BAD_REQUEST, "invalid_csr", e.to_string())
            }
            DeviceError::SerialMismatch => {
                ApiError::coded(StatusCode::CONFLICT, "serial_mismatch", error.to_string())
            }
            DeviceError::AlreadyEnrolled(_) => {
                ApiError::coded(StatusCode::CONFLICT, "already_enrolled", error.to_string())
            }
            DeviceError::Material(MaterialError::Invalid(e)) => {
                ApiError::Internal(format!("CA material: {e}"))
            }
            DeviceError::Material(e) => {
                tracing::error!(error = %e, "device CA unavailable");
                ApiError::coded(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ca_unavailable",
                    "The certificate authority is unavailable; try again shortly.",
                )
            }
            DeviceError::Store(e) => {
                tracing::error!(error = %e, "certificate storage failed");
                ApiError::coded(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "Certificate storage is unavailable; try again shortly.",
                )
            }
            DeviceError::Signing => ApiError::Internal("certificate signing failed".to_owned()),
        }
    }
}

impl Authenticated {
    /// The certificate must belong to the device the request acts on.
    pub(crate) fn acting_on(&self, device: &DeviceId) -> Result<(), ApiError> {
        if &self.0.device_id == device {
            Ok(())
        } else {
            Err(ApiError::coded(
                StatusCode::FORBIDDEN,
                "device_mismatch",
                "The client certificate belongs to another device.",
            ))
        }
    }

    /// A renewal replaces the certificate presented, no other.
    fn presenting(&self, serial: &Serial) -> Result<(), ApiError> {
        if &self.0.serial == serial {
            Ok(())
        } else {
            Err(ApiError::coded(
                StatusCode::CONFLICT,
                "serial_mismatch",
                "old_serial must be the serial of the client certificate presented.",
            ))
        }
    }
}

/// Naive UTC ISO-8601 as the spec prints it: microseconds only when non-zero.
pub(crate) fn naive(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EnrollmentBody {
    /// The device's client certificate (PEM).
    certificate: String,
    /// Its serial: 32 uppercase hexadecimal digits.
    #[schema(value_type = String, pattern = "^[0-9A-F]{32}$")]
    serial: Serial,
    /// UTC, ISO 8601 without offset.
    #[schema(example = "2026-12-01T09:30:00")]
    issued_at: String,
    #[schema(example = "2026-12-31T09:30:00")]
    expires_at: String,
    /// The CA certificate (PEM), for the client's trust store.
    ca_certificate: String,
}

impl From<Enrollment> for EnrollmentBody {
    fn from(e: Enrollment) -> Self {
        Self {
            certificate: e.certificate,
            serial: e.serial,
            issued_at: naive(e.issued_at),
            expires_at: naive(e.expires_at),
            ca_certificate: e.ca_certificate,
        }
    }
}

/// The white space a CSR may have around its PEM frame: exactly the documented pattern's
/// `[ \t\r\n]` (Unicode white space differs between Rust, JavaScript and Python).
const PEM_SPACE: [char; 4] = [' ', '\t', '\r', '\n'];

fn csr_error(csr: &str) -> Option<FieldError> {
    let msg = if csr.chars().count() < 100 {
        "String should have at least 100 characters"
    } else if !csr
        .trim_start_matches(PEM_SPACE)
        .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
    {
        "Value error, CSR must be in PEM format"
    } else if !csr
        .trim_end_matches(PEM_SPACE)
        .ends_with("-----END CERTIFICATE REQUEST-----")
    {
        "Value error, CSR must end with PEM footer"
    } else if csr.chars().count() > 16 * 1024 {
        "String should have at most 16384 characters"
    } else {
        return None;
    };
    let kind = if msg.starts_with("Value") {
        "value_error"
    } else {
        "string_length"
    };
    Some(FieldError::new(kind, &["body", "csr"], msg))
}

/// An enrolment request.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct EnrollBody {
    /// The device's certificate signing request, PEM (`-----BEGIN CERTIFICATE REQUEST-----`).
    #[schema(
        min_length = 100,
        max_length = 16384,
        pattern = "^[ \\t\\r\\n]*-----BEGIN CERTIFICATE REQUEST-----[\\s\\S]*-----END CERTIFICATE REQUEST-----[ \\t\\r\\n]*$"
    )]
    csr: String,
    /// 5 to 128 of `A-Z a-z 0-9 _ -`.
    #[schema(min_length = 5, max_length = 128, pattern = "^[A-Za-z0-9_-]{5,128}$")]
    device_id: String,
    /// Decides the certificate's lifetime (android, ios: 30 days; desktop: 7; web: 1).
    #[schema(value_type = Platform)]
    platform: String,
    /// With `ATTESTATION_REQUIRED` naming the platform: the attestation that binds the CSR's
    /// key to a genuine app on a genuine device (an object, or a string holding one; see
    /// `EnrollmentAttestation`). Otherwise accepted and not read.
    #[schema(value_type = Option<super::attestation::EnrollmentAttestationField>)]
    attestation: Option<serde_json::Value>,
}

pub(crate) struct Enroll {
    csr: String,
    device: DeviceId,
    platform: Platform,
    attestation: Option<serde_json::Value>,
}

impl FromJson for Enroll {
    type Raw = EnrollBody;

    fn from_json(raw: EnrollBody) -> Result<Self, Vec<FieldError>> {
        let mut checks = FieldChecks::default();
        checks.check(csr_error(&raw.csr));
        let device = checks.parse("device_id", DeviceId::parse(&raw.device_id));
        let platform = checks.parse("platform", Platform::parse(&raw.platform));
        checks.parse("attestation", attestation_shape(raw.attestation.as_ref()));
        checks.finish(device.zip(platform).map(|(device, platform)| Enroll {
            csr: raw.csr,
            device,
            platform,
            attestation: raw.attestation.filter(|a| !a.is_null()),
        }))
    }
}

/// Issues the device's first client certificate from its CSR.
#[utoipa::path(post, path = "/device/enroll", tag = "device",
    request_body = EnrollBody,
    responses(
        (status = 201, description = "The certificate", body = EnrollmentBody),
        (status = 400, description = "The body is not JSON or has trailing data; the CSR is refused (`invalid_csr`: it does not parse, its signature does not verify, or its key is not P-256, P-384 or RSA of at least 2048 bits); or, with `ATTESTATION_REQUIRED` naming the platform, the attestation is missing (`attestation_required`), its challenge refused (`challenge_invalid`, `challenge_mismatch`, `challenge_expired`) or its verdict not `valid` (its code)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The device already has a certificate (`already_enrolled`): renew it; or the attestation's challenge was used (`challenge_used`)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The CA or the certificate store is unavailable (`ca_unavailable`, `storage_unavailable`), or, for an attested enrollment, the challenge's key or store, the attestation store or the Play Integrity keys (`keys_unavailable`, `challenge_store_unavailable`, `attestation_store_unavailable`, `play_integrity_keys_unavailable`)", body = crate::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before trying again (5)"))),
        BodyErrors,
    ))]
pub(crate) async fn enroll(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Enroll>,
) -> Result<(StatusCode, Json<EnrollmentBody>), Refusal> {
    crate::telemetry::annotations::device_platform(body.platform.as_str());
    let enrollment = match requiring(&state, body.platform) {
        None => state
            .devices
            .enroll(&body.csr, &body.device, body.platform)
            .await
            .map_err(ApiError::from)?,
        Some(platform) => {
            // Whether the device may enroll at all is asked before its attestation is verified
            // or anything recorded.
            let (checked, attested) = attested_csr(
                &state,
                platform,
                &body.device,
                &body.csr,
                body.attestation.as_ref(),
                "enrolls",
                state.devices.may_enroll(&body.device),
            )
            .await?;
            let enrollment = state
                .devices
                .enroll_checked(&checked, &body.device, body.platform)
                .await
                .map_err(ApiError::from)?;
            state
                .attestation
                .record(&body.device, &enrollment.serial, attested)
                .await;
            enrollment
        }
    };
    Ok((StatusCode::CREATED, Json(enrollment.into())))
}

/// The `attestation` field is an object, a string holding one, or null (checked even where it
/// is not read, so the field's schema holds).
fn attestation_shape(raw: Option<&serde_json::Value>) -> Result<(), String> {
    match raw {
        None
        | Some(serde_json::Value::Null)
        | Some(serde_json::Value::String(_))
        | Some(serde_json::Value::Object(_)) => Ok(()),
        Some(_) => Err("attestation must be an object, a string holding one, or null".to_owned()),
    }
}

/// The evidence of an enrollment or renewal on a platform `ATTESTATION_REQUIRED` names: 400
/// `attestation_required` when absent, 422 when malformed.
fn required_evidence(
    platform: crate::attestation::Platform,
    raw: Option<&serde_json::Value>,
    action: &str,
) -> Result<OwnedEvidence, ApiError> {
    let raw = raw.ok_or_else(|| {
        ApiError::coded(
            StatusCode::BAD_REQUEST,
            "attestation_required",
            format!(
                "This deployment {action} {} devices only with an attestation bound to the CSR's key (see the attestation guide).",
                platform.as_str()
            ),
        )
    })?;
    OwnedEvidence::parse(platform, raw).map_err(ApiError::Validation)
}

/// The first half of an attested enrollment or renewal: the CSR checked (the attestation must
/// commit to its key), the evidence parsed, then `eligible` asked (not polled before), then the
/// attestation verified against the key. Nothing is recorded: the caller issues the
/// certificate and records what was attested under it.
async fn attested_csr(
    state: &AppState,
    platform: crate::attestation::Platform,
    device: &DeviceId,
    csr_pem: &str,
    attestation: Option<&serde_json::Value>,
    action: &str,
    eligible: impl std::future::Future<Output = Result<(), DeviceError>>,
) -> Result<(CheckedCsr, Attested), Refusal> {
    let checked = csr::check(csr_pem)
        .map_err(DeviceError::Csr)
        .map_err(ApiError::from)?;
    let evidence = required_evidence(platform, attestation, action)?;
    eligible.await.map_err(ApiError::from)?;
    let attested = state
        .attestation
        .enrollment(device, &checked.public_key_der, evidence.borrowed())
        .await?;
    Ok((checked, attested))
}

/// The attesting platform `ATTESTATION_REQUIRED` names for a certificate of `platform`.
fn requiring(state: &AppState, platform: Platform) -> Option<crate::attestation::Platform> {
    crate::attestation::Platform::parse(platform.as_str())
        .ok()
        .filter(|p| state.config.attestation.required.contains(p))
}

/// A renewal request.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct RenewBody {
    /// A new CSR, PEM.
    #[schema(
        min_length = 100,
        max_length = 16384,
        pattern = "^[ \\t\\r\\n]*-----BEGIN CERTIFICATE REQUEST-----[\\s\\S]*-----END CERTIFICATE REQUEST-----[ \\t\\r\\n]*$"
    )]
    csr: String,
    /// The device of the certificate presented.
    #[schema(min_length = 5, max_length = 128, pattern = "^[A-Za-z0-9_-]{5,128}$")]
    device_id: String,
    /// The serial of the certificate presented: 32 hexadecimal digits.
    #[schema(pattern = "^[0-9A-Fa-f]{32}$")]
    old_serial: String,
    /// With `ATTESTATION_REQUIRED` naming the certificate's platform: an attestation bound to
    /// the new CSR's key, as at enrollment. Otherwise accepted and not read.
    #[schema(value_type = Option<super::attestation::EnrollmentAttestationField>)]
    attestation: Option<serde_json::Value>,
}

pub(crate) struct Renew {
    csr: String,
    device: DeviceId,
    old_serial: Serial,
    attestation: Option<serde_json::Value>,
}

impl FromJson for Renew {
    type Raw = RenewBody;

    fn from_json(raw: RenewBody) -> Result<Self, Vec<FieldError>> {
        let mut checks = FieldChecks::default();
        checks.check(csr_error(&raw.csr));
        let device = checks.parse("device_id", DeviceId::parse(&raw.device_id));
        let old_serial = checks.parse("old_serial", Serial::parse(&raw.old_serial));
        checks.parse("attestation", attestation_shape(raw.attestation.as_ref()));
        checks.finish(device.zip(old_serial).map(|(device, old_serial)| Renew {
            csr: raw.csr,
            device,
            old_serial,
            attestation: raw.attestation.filter(|a| !a.is_null()),
        }))
    }
}

/// Replaces the certificate presented by a new one (the old one stops working at once).
#[utoipa::path(post, path = "/device/renew", tag = "device",
    request_body = RenewBody,
    security(("device_certificate" = [])),
    responses(
        (status = 200, description = "The new certificate", body = EnrollmentBody),
        (status = 400, description = "The body is not JSON or has trailing data, the CSR is refused (`invalid_csr`), or the proxy header named more than one certificate (`ambiguous_client_certificate`); or, with `ATTESTATION_REQUIRED` naming the certificate's platform, the attestation is missing (`attestation_required`), its challenge refused (`challenge_invalid`, `challenge_mismatch`, `challenge_expired`) or its verdict not `valid` (its code)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`old_serial` is not the certificate presented, or it was replaced meanwhile (`serial_mismatch`); or the attestation's challenge was used (`challenge_used`)", body = crate::error::Problem, content_type = "application/problem+json"),
        BodyErrors, GuardErrors,
    ))]
pub(crate) async fn renew(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<Renew>,
) -> Result<Json<EnrollmentBody>, Refusal> {
    caller.acting_on(&body.device)?;
    caller.presenting(&body.old_serial)?;
    let Some(platform) = requiring(&state, caller.0.platform) else {
        let renewed = state
            .devices
            .renew(&body.csr, &caller.0)
            .await
            .map_err(ApiError::from)?;
        return Ok(Json(renewed.into()));
    };
    // Attested: the new key must be one the attested app holds too.
    let (checked, attested) = attested_csr(
        &state,
        platform,
        &body.device,
        &body.csr,
        body.attestation.as_ref(),
        "renews",
        std::future::ready(Ok(())),
    )
    .await?;
    let renewed = state
        .devices
        .renew_checked(&checked, &caller.0)
        .await
        .map_err(ApiError::from)?;
    state
        .attestation
        .record(&body.device, &renewed.serial, attested)
        .await;
    Ok(Json(renewed.into()))
}

/// A revocation request.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = DeviceRevocationBody)]
pub(crate) struct RevokeBody {
    /// The device of the certificate presented.
    #[schema(min_length = 5, max_length = 128, pattern = "^[A-Za-z0-9_-]{5,128}$")]
    device_id: String,
    #[schema(max_length = 256)]
    reason: Option<String>,
}

pub(crate) struct Revoke {
    device: DeviceId,
    reason: Option<String>,
}

impl FromJson for Revoke {
    type Raw = RevokeBody;

    fn from_json(raw: RevokeBody) -> Result<Self, Vec<FieldError>> {
        let mut checks = FieldChecks::default();
        let device = checks.parse("device_id", DeviceId::parse(&raw.device_id));
        checks.check(
            raw.reason
                .as_deref()
                .filter(|r| r.chars().count() > 256)
                .map(|_| {
                    FieldError::new(
                        "string_too_long",
                        &["body", "reason"],
                        "String should have at most 256 characters",
                    )
                }),
        );
        checks.finish(device.map(|device| Revoke {
            device,
            reason: raw.reason,
        }))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RevokeAnswer {
    success: bool,
    #[schema(value_type = String)]
    device_id: DeviceId,
    message: String,
}

/// Revokes the device's certificate (the one presented).
#[utoipa::path(post, path = "/device/revoke", tag = "device", operation_id = "revoke_device",
    request_body = RevokeBody,
    security(("device_certificate" = [])),
    responses(
        (status = 200, description = "Revoked", body = RevokeAnswer),
        (status = 400, description = "The body is not JSON or has trailing data, or the proxy header named more than one certificate (`ambiguous_client_certificate`)", body = crate::error::Problem, content_type = "application/problem+json"),
        BodyErrors, GuardErrors,
    ))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<Revoke>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    let device = body.device;
    caller.acting_on(&device)?;
    let reason = body.reason.as_deref().unwrap_or("Revoked by the device");
    let success = state.devices.revoke(&device, reason).await?;
    let message = if success {
        format!("Certificate revoked for device {device}")
    } else {
        format!("No certificate found for device {device}")
    };
    Ok(Json(RevokeAnswer {
        success,
        device_id: device,
        message,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatusAnswer {
    #[schema(value_type = String)]
    device_id: DeviceId,
    #[schema(value_type = String, pattern = "^[0-9A-F]{32}$")]
    serial: Serial,
    platform: Platform,
    issued_at: String,
    expires_at: String,
    revoked: bool,
    days_until_expiry: i64,
    /// The device's latest attestation on its platform (`null` if it never attested, or its
    /// platform has none).
    attestation: Option<LatestAttestation>,
}

/// A device's latest attestation verdict.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LatestAttestation {
    platform: crate::attestation::Platform,
    status: Status,
    /// When the evidence was evaluated: UTC, ISO 8601 without offset.
    timestamp: String,
    /// What failed, when the status is not `valid`.
    error: Option<String>,
}

/// The certificate presented, as the CA records it.
#[utoipa::path(get, path = "/device/status/{device_id}", tag = "device",
    params(("device_id" = String, Path, description = "The device of the certificate presented (5 to 128 of A-Z a-z 0-9 _ -)",
        min_length = 5, max_length = 128, pattern = "^[A-Za-z0-9_-]{5,128}$")),
    security(("device_certificate" = [])),
    responses(
        (status = 200, description = "The certificate's record, and the device's latest attestation", body = StatusAnswer),
        (status = 400, description = "The path is not valid UTF-8, or the proxy header named more than one certificate (`ambiguous_client_certificate`)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`device_id` is not a device id", body = crate::error::Problem, content_type = "application/problem+json"),
        GuardErrors,
    ))]
pub(crate) async fn status(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiPath(device_id): ApiPath<String>,
) -> Result<Json<StatusAnswer>, ApiError> {
    let device = DeviceId::parse(&device_id).map_err(|e| {
        ApiError::Validation(vec![FieldError::new(
            "value_error",
            &["path", "device_id"],
            e,
        )])
    })?;
    caller.acting_on(&device)?;
    let record = caller.0;
    let attestation = match crate::attestation::Platform::parse(record.platform.as_str()) {
        Ok(platform) => state.attestation.latest(&device, platform).await?,
        Err(_) => None,
    };
    let days_until_expiry = (record.expires_at - Utc::now())
        .num_seconds()
        .div_euclid(86_400);
    Ok(Json(StatusAnswer {
        device_id: record.device_id,
        serial: record.serial,
        platform: record.platform,
        issued_at: naive(record.issued_at),
        expires_at: naive(record.expires_at),
        revoked: record.revoked,
        days_until_expiry,
        attestation: attestation.map(|verdict| LatestAttestation {
            platform: verdict.platform,
            status: verdict.status,
            timestamp: naive(verdict.at),
            error: verdict.error,
        }),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CaCertificate {
    certificate: String,
    format: &'static str,
    usage: &'static str,
}

/// The CA certificate, for clients' trust stores.
#[utoipa::path(get, path = "/device/ca-certificate", tag = "device",
    responses(
        (status = 200, description = "The CA certificate", body = CaCertificate),
        (status = 503, description = "The CA is unavailable", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 500, description = "The CA material is invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn ca_certificate(
    State(state): State<AppState>,
) -> Result<Json<CaCertificate>, ApiError> {
    let ca = state.devices.authority().await?;
    Ok(Json(CaCertificate {
        certificate: ca.certificate_pem().to_owned(),
        format: "PEM",
        usage: "Add to client truststore for mTLS verification",
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PinAnswer {
    sha256_base64: String,
    sha256_hex: String,
    certificate_pem: String,
    algorithm: &'static str,
    usage: &'static str,
}

/// The CA certificate's SHA-256 pin, for certificate pinning.
#[utoipa::path(get, path = "/device/ca-certificate-pin", tag = "device",
    responses(
        (status = 200, description = "The pin", body = PinAnswer),
        (status = 503, description = "The CA is unavailable", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 500, description = "The CA material is invalid", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn ca_certificate_pin(
    State(state): State<AppState>,
) -> Result<Json<PinAnswer>, ApiError> {
    let (pin, certificate_pem) = state.devices.pin().await?;
    Ok(Json(PinAnswer {
        sha256_base64: pin.sha256_base64,
        sha256_hex: pin.sha256_hex,
        certificate_pem,
        algorithm: "SHA-256",
        usage: "Use sha256_base64 for iOS/Android certificate pinning",
    }))
}

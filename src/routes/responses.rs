//! The response groups the handlers' OpenAPI annotations share: the failures common to every
//! route that reads a JSON body, to the OAuth routes, to the routes behind the client
//! certificate and to the attestation routes. A module of its own so that the handlers (which name these groups) and the
//! documentation module (which lists the handlers) do not import each other.
//!
//! The variants are never built: each describes one status of the contract, with the shared
//! [`Problem`] body, for `#[utoipa::path(responses(...))]`.

use utoipa::IntoResponses;

use crate::error::Problem;

/// Failures of any route that reads a JSON body. (Each route lists its own 400 with all its
/// causes: one status has one description, and a later group would overwrite an earlier one.)
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum BodyErrors {
    /// The body is larger than `MAX_BODY_BYTES`.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(Problem),
    /// A field is missing, of the wrong type, or out of its limits (`errors` lists each).
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// An unexpected error (details are logged, never sent).
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
}

/// Failures of the OAuth routes (`error` carries the code).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum OAuthErrors {
    /// The provider is not enabled on this deployment.
    #[response(status = 403, content_type = "application/problem+json")]
    Disabled(Problem),
    /// No such provider.
    #[response(status = 404, content_type = "application/problem+json")]
    Unknown(Problem),
    /// The provider failed or could not be reached.
    #[response(status = 502, content_type = "application/problem+json")]
    Upstream(Problem),
    /// The provider is not configured here (`provider_unavailable`), or a dependency cannot be
    /// reached now: the provider's credentials (`provider_unavailable`), the key that seals
    /// state (`keys_unavailable`), or on `/oauth/token` the store that makes a state single-use
    /// (`state_store_unavailable`). A dependency's 503 carries `Retry-After`.
    #[response(
        status = 503,
        content_type = "application/problem+json",
        headers(("Retry-After" = u32, description = "Seconds to wait before trying again (5), when the cause passes by itself"))
    )]
    Unavailable(Problem),
    /// The provider did not answer in time.
    #[response(status = 504, content_type = "application/problem+json")]
    Timeout(Problem),
}

/// Failures of the routes guarded by the client certificate, and of the CA behind them.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum GuardErrors {
    /// No client certificate was presented.
    #[response(
        status = 401,
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`MutualTLS realm=\"apuntador-devices\"`"))
    )]
    Missing(Problem),
    /// The certificate is not acceptable (expired, revoked, replaced, another CA), or belongs to
    /// another device (`device_mismatch`).
    #[response(status = 403, content_type = "application/problem+json")]
    Refused(Problem),
    /// The CA or the certificate store is unavailable (`ca_unavailable`,
    /// `storage_unavailable`), or on `/device/status` the attestation store
    /// (`attestation_store_unavailable`).
    #[response(
        status = 503,
        content_type = "application/problem+json",
        headers(("Retry-After" = u32, description = "Seconds to wait before trying again (5)"))
    )]
    Unavailable(Problem),
}

/// Failures of the attestation routes (`/device/attest/{android,ios,desktop}`), beside the
/// 400 each lists and [`BodyErrors`].
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum AttestationErrors {
    /// No client certificate was presented.
    #[response(
        status = 401,
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`MutualTLS realm=\"apuntador-devices\"`"))
    )]
    Missing(Problem),
    /// The certificate is not acceptable (expired, revoked, replaced, another CA), belongs to
    /// another device (`device_mismatch`) or was issued for another platform
    /// (`platform_mismatch`).
    #[response(status = 403, content_type = "application/problem+json")]
    Refused(Problem),
    /// The challenge was already used (`challenge_used`): ask for a new one.
    #[response(status = 409, content_type = "application/problem+json")]
    Used(Problem),
    /// Desktop: the device attested more often than `ATTESTATION_DESKTOP_PER_HOUR` this hour
    /// (`attestation_rate_limited`).
    #[response(
        status = 429,
        content_type = "application/problem+json",
        headers(("Retry-After" = u32, description = "Seconds until the next hour's allowance"))
    )]
    RateLimited(Problem),
    /// The platform's verification is not configured on this deployment
    /// (`attestation_unsupported`; the spec's `unsupported`).
    #[response(status = 501, content_type = "application/problem+json")]
    Unsupported(Problem),
    /// A dependency cannot be reached now: the CA or certificate store (`ca_unavailable`,
    /// `storage_unavailable`), the key that seals challenges (`keys_unavailable`), the
    /// single-use store (`challenge_store_unavailable`) or the attestation store
    /// (`attestation_store_unavailable`).
    #[response(
        status = 503,
        content_type = "application/problem+json",
        headers(("Retry-After" = u32, description = "Seconds to wait before trying again (5)"))
    )]
    Unavailable(Problem),
}

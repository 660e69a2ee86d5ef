//! The OAuth routes (spec §2.3–2.7): parse and validate, call the [`Broker`], map its errors.
//!
//! | route | success |
//! |---|---|
//! | `POST /oauth/authorize/{provider}` `{code_verifier, redirect_uri, state?}` | 200 `{authorization_url, state}` |
//! | `GET /oauth/callback/{provider}?code&state` (or `?error&state`; `error_description` is never forwarded) | always 302 to the app |
//! | `POST /oauth/token/{provider}` `{code, code_verifier, state}` | 200 `{access_token, refresh_token, expires_in, token_type}` |
//! | `POST /oauth/refresh/{provider}` `{refresh_token}` | 200, same shape |
//! | `POST /oauth/revoke/{provider}` `{token}` | 200 `{success, message}` |

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::extract::{ApiJson, ApiPath, FieldChecks, FromJson};
use super::responses::{BodyErrors, OAuthErrors};
use crate::error::{ApiError, FieldError, sentence};
use crate::oauth::broker::{AuthorizeRequest, BrokerError, CallbackQuery};
use crate::oauth::client::CallError;
use crate::oauth::{pkce, state};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth/authorize/{provider}", post(authorize))
        .route("/oauth/callback/{provider}", get(callback))
        .route("/oauth/token/{provider}", post(token))
        .route("/oauth/refresh/{provider}", post(refresh))
        .route("/oauth/revoke/{provider}", post(revoke))
}

/// Maps broker failures to HTTP: unknown provider 404, disabled 403, unconfigured or
/// credentials or the single-use store unavailable 503, bad client input 400, provider refusal 400 with its code,
/// provider failure 502, provider timeout 504.
impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        let status = match &error {
            BrokerError::UnknownProvider(_) => StatusCode::NOT_FOUND,
            BrokerError::Disabled(_) => StatusCode::FORBIDDEN,
            BrokerError::Unconfigured(..)
            | BrokerError::Credentials(_)
            | BrokerError::SingleUse(_)
            | BrokerError::Keys(_) => StatusCode::SERVICE_UNAVAILABLE,
            BrokerError::Provider(CallError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            BrokerError::Provider(CallError::Upstream(_) | CallError::Unreachable) => {
                StatusCode::BAD_GATEWAY
            }
            _ => StatusCode::BAD_REQUEST,
        };
        if status.is_server_error() {
            tracing::warn!(error = %error, "OAuth request failed");
        }
        let detail = match &error {
            BrokerError::Provider(CallError::Rejected { status, .. }) => {
                format!(
                    "The provider rejected the request (HTTP {status}); see `error` for its code."
                )
            }
            BrokerError::Credentials(_) => {
                "OAuth client credentials cannot be loaded right now; try again shortly.".to_owned()
            }
            other => sentence(&other.to_string()),
        };
        ApiError::Coded {
            status,
            code: error.code(),
            detail,
        }
    }
}

/// Token answers must not be cached (RFC 6749 §5.1).
fn no_store(body: impl serde::Serialize) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn length_error(field: &str, value: &str, min: usize, max: usize) -> Option<FieldError> {
    let len = value.chars().count();
    if len < min {
        Some(FieldError::new(
            "string_too_short",
            &["body", field],
            format!("String should have at least {min} characters"),
        ))
    } else if len > max {
        Some(FieldError::new(
            "string_too_long",
            &["body", field],
            format!("String should have at most {max} characters"),
        ))
    } else {
        None
    }
}

/// A value the sealed state carries: at least `min` characters, at most `max_bytes` as the
/// state counts them ([`state::encoded_len`]), so every state `/authorize` hands out opens.
fn sealed_length_error(
    field: &str,
    value: &str,
    min: usize,
    max_bytes: usize,
) -> Option<FieldError> {
    if value.chars().count() < min {
        return length_error(field, value, min, usize::MAX);
    }
    (state::encoded_len(value) > max_bytes).then(|| {
        FieldError::new(
            "string_too_long",
            &["body", field],
            format!("String should have at most {max_bytes} characters"),
        )
    })
}

fn verifier_error(verifier: &str) -> Option<FieldError> {
    pkce::verifier_problem(verifier).map(|msg| {
        FieldError::new(
            "value_error",
            &["body", "code_verifier"],
            format!("Value error, {msg}"),
        )
    })
}

/// The sign-in request (made into the broker's `AuthorizeRequest`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct AuthorizeBody {
    /// The PKCE verifier (RFC 7636): 43 to 128 of `A-Z a-z 0-9 - . _ ~`. Only its S256
    /// challenge goes to the provider.
    #[schema(
        min_length = 43,
        max_length = 128,
        pattern = "^[A-Za-z0-9._~-]{43,128}$"
    )]
    code_verifier: String,
    /// Where the app wants the user back, on the allowlist (`ALLOWED_REDIRECT_URIS`): printable
    /// ASCII without `"` or `\`.
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = "^[!#-\\[\\]-~]+$",
        example = "apuntador://oauth-callback"
    )]
    redirect_uri: String,
    /// Optional, kept from the original API: sealed into the OAuth state with the rest and not
    /// returned (the app matches the callback by the `state` this call answers). Printable
    /// ASCII without `"` or `\`; spaces allowed.
    #[schema(max_length = 512, pattern = "^[ !#-\\[\\]-~]*$")]
    state: Option<String>,
}

/// Printable ASCII without `"` and `\` (and, unless `space`, without spaces): what the redirect
/// URI and the app's state may hold, so that their length in characters is their length in the
/// sealed state (the documented patterns).
fn charset_error(field: &str, value: &str, space: bool) -> Option<FieldError> {
    let lowest = if space { 0x20 } else { 0x21 };
    let allowed = |b: u8| (lowest..=0x7e).contains(&b) && b != b'"' && b != b'\\';
    (!value.bytes().all(allowed)).then(|| {
        let msg = if space {
            "String should be printable ASCII without '\"' or '\\'"
        } else {
            "String should be printable ASCII without spaces, '\"' or '\\'"
        };
        FieldError::new("string_pattern_mismatch", &["body", field], msg)
    })
}

impl FromJson for AuthorizeRequest {
    type Raw = AuthorizeBody;

    fn from_json(raw: AuthorizeBody) -> Result<Self, Vec<FieldError>> {
        let mut checks = FieldChecks::default();
        checks.check(verifier_error(&raw.code_verifier));
        checks.check(charset_error("redirect_uri", &raw.redirect_uri, false));
        checks.check(
            raw.state
                .as_deref()
                .and_then(|s| charset_error("state", s, true)),
        );
        checks.check(sealed_length_error(
            "redirect_uri",
            &raw.redirect_uri,
            1,
            state::MAX_REDIRECT_URI_BYTES,
        ));
        checks.check(
            raw.state
                .as_deref()
                .and_then(|s| sealed_length_error("state", s, 0, state::MAX_CLIENT_STATE_BYTES)),
        );
        checks.finish(Some(AuthorizeRequest {
            code_verifier: raw.code_verifier,
            redirect_uri: raw.redirect_uri,
            state: raw.state,
        }))
    }
}

/// Starts a sign-in: the provider's authorization URL (PKCE S256) and the sealed state.
#[utoipa::path(post, path = "/oauth/authorize/{provider}", tag = "oauth",
    params(("provider" = crate::oauth::provider::ProviderId, Path, description = "The cloud provider")),
    request_body = AuthorizeBody,
    responses(
        (status = 200, description = "Where to send the user", body = crate::oauth::broker::Authorization, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "The body is not JSON or has trailing data, the path is not valid UTF-8, or the redirect URI is not on the allowlist (`invalid_redirect_uri`)", body = crate::error::Problem, content_type = "application/problem+json"),
        BodyErrors, OAuthErrors,
    ))]
pub(crate) async fn authorize(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    ApiJson(request): ApiJson<AuthorizeRequest>,
) -> Result<Response, ApiError> {
    let authorization = state.oauth.authorize(&provider, request).await?;
    Ok(no_store(authorization))
}

/// The provider's redirect after consent; always sends the user on to the app.
#[utoipa::path(get, path = "/oauth/callback/{provider}", tag = "oauth",
    params(
        ("provider" = String, Path, description = "The cloud provider (an unknown one still redirects, with an error)"),
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("state" = Option<String>, Query, description = "The sealed state from /oauth/authorize"),
        ("error" = Option<String>, Query, description = "The provider's error code, when the user refused"),
    ),
    responses(
        (status = 302, description = "To the app's redirect URI with `code` and `state`, or `error` (never `error_description`); also for an unknown provider or a path that is not valid UTF-8",
            headers(
                ("Location" = String, description = "The app's redirect URI"),
                ("Cache-Control" = String, description = "`no-store`"),
                ("Referrer-Policy" = String, description = "`no-referrer`"),
            )),
    ))]
pub(crate) async fn callback(
    State(state): State<AppState>,
    // Always a redirect: a path that cannot be read is an unknown provider.
    provider: Result<ApiPath<String>, ApiError>,
    RawQuery(raw): RawQuery,
) -> Response {
    let provider = provider.map(|ApiPath(p)| p).unwrap_or_default();
    let mut query = CallbackQuery::default();
    for (key, value) in url::form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes()) {
        let slot = match key.as_ref() {
            "code" => &mut query.code,
            "state" => &mut query.state,
            "error" => &mut query.error,
            _ => continue,
        };
        slot.get_or_insert_with(|| value.into_owned());
    }
    let location = state.oauth.callback(&provider, &query).await;
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    match HeaderValue::from_str(&location) {
        Ok(value) => headers.insert(header::LOCATION, value),
        Err(_) => headers.insert(
            header::LOCATION,
            HeaderValue::from_static("apuntador://oauth-callback?error=callback_failed"),
        ),
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct TokenBody {
    /// The authorization code the callback passed to the app.
    #[schema(min_length = 1, max_length = 4096)]
    code: String,
    /// The verifier whose challenge /oauth/authorize sent.
    #[schema(
        min_length = 43,
        max_length = 128,
        pattern = "^[A-Za-z0-9._~-]{43,128}$"
    )]
    code_verifier: String,
    /// The sealed state /oauth/authorize returned. Required (the schema says so; the type is
    /// optional only so that its absence gets a precise field error).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 4096)]
    state: Option<String>,
}

/// `POST /oauth/token` with its state required (the spec made it optional; §10.7).
pub(crate) struct Token {
    code: String,
    code_verifier: String,
    state: String,
}

impl FromJson for Token {
    type Raw = TokenBody;

    fn from_json(raw: TokenBody) -> Result<Self, Vec<FieldError>> {
        let mut checks = FieldChecks::default();
        checks.check(length_error("code", &raw.code, 1, 4096));
        checks.check(verifier_error(&raw.code_verifier));
        checks.check(match &raw.state {
            None => Some(FieldError::new(
                "missing",
                &["body", "state"],
                "Field required",
            )),
            Some(s) => length_error("state", s, 1, state::MAX_STATE_LEN),
        });
        checks.finish(raw.state.map(|state| Token {
            code: raw.code,
            code_verifier: raw.code_verifier,
            state,
        }))
    }
}

/// Exchanges the code for tokens (the backend adds the client secret).
#[utoipa::path(post, path = "/oauth/token/{provider}", tag = "oauth",
    params(("provider" = crate::oauth::provider::ProviderId, Path, description = "The cloud provider")),
    request_body = TokenBody,
    responses(
        (status = 200, description = "The provider's tokens", body = crate::oauth::broker::Tokens, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "The body is not JSON or has trailing data, the path is not valid UTF-8, the state is not one this service sealed or has expired (`invalid_state`), the verifier does not match (`invalid_grant`), or the provider refused the code (its OAuth error code)", body = crate::error::Problem, content_type = "application/problem+json"),
        BodyErrors, OAuthErrors,
    ))]
pub(crate) async fn token(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    ApiJson(body): ApiJson<Token>,
) -> Result<Response, ApiError> {
    let tokens = state
        .oauth
        .token(&provider, &body.code, &body.code_verifier, &body.state)
        .await?;
    Ok(no_store(tokens))
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct RefreshBody {
    #[schema(min_length = 1, max_length = 8192)]
    refresh_token: String,
}

impl FromJson for RefreshBody {
    type Raw = Self;

    fn from_json(raw: Self) -> Result<Self, Vec<FieldError>> {
        let mut checks = FieldChecks::default();
        checks.check(length_error("refresh_token", &raw.refresh_token, 1, 8192));
        checks.finish(Some(raw))
    }
}

/// New tokens for a refresh token.
#[utoipa::path(post, path = "/oauth/refresh/{provider}", tag = "oauth",
    params(("provider" = crate::oauth::provider::ProviderId, Path, description = "The cloud provider")),
    request_body = RefreshBody,
    responses(
        (status = 200, description = "The provider's tokens", body = crate::oauth::broker::Tokens, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "The body is not JSON or has trailing data, the path is not valid UTF-8, or the provider refused the refresh token (its OAuth error code, e.g. `invalid_grant`)", body = crate::error::Problem, content_type = "application/problem+json"),
        BodyErrors, OAuthErrors,
    ))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Response, ApiError> {
    let tokens = state.oauth.refresh(&provider, &body.refresh_token).await?;
    Ok(no_store(tokens))
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = TokenRevocationBody)]
pub(crate) struct RevokeBody {
    /// An access or refresh token.
    #[schema(min_length = 1, max_length = 8192)]
    token: String,
}

impl FromJson for RevokeBody {
    type Raw = Self;

    fn from_json(raw: Self) -> Result<Self, Vec<FieldError>> {
        let mut checks = FieldChecks::default();
        checks.check(length_error("token", &raw.token, 1, 8192));
        checks.finish(Some(raw))
    }
}

/// Revokes a token at the provider (OneDrive has no revocation endpoint: `success` false).
#[utoipa::path(post, path = "/oauth/revoke/{provider}", tag = "oauth", operation_id = "revoke_token",
    params(("provider" = crate::oauth::provider::ProviderId, Path, description = "The cloud provider")),
    request_body = RevokeBody,
    responses(
        (status = 200, description = "Whether the provider revoked it", body = crate::oauth::broker::Revocation, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "The body is not JSON or has trailing data, the path is not valid UTF-8, or the provider refused the request (its OAuth error code)", body = crate::error::Problem, content_type = "application/problem+json"),
        BodyErrors, OAuthErrors,
    ))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<Response, ApiError> {
    let revocation = state.oauth.revoke(&provider, &body.token).await?;
    Ok(no_store(revocation))
}

//! The extractors that parse requests at the edge, with the API's error contract.
//!
//! [`ApiJson`]: wrong media type 415, body over the limit 413, malformed JSON 400, well-formed
//! JSON of the wrong shape or failing a rule 422 with one entry per field; bodies become typed
//! values ([`FromJson`]). [`Authenticated`]: the caller's verified device certificate
//! ([`crate::device::guard`]), 401 when absent, 400 when the proxy header is ambiguous, 403 when
//! not acceptable. [`Operator`]: the caller holds the operator's API key (`CONFIG_API_KEY`).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use std::sync::Arc;

use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::device::guard::{GuardError, presented_pem, verify};
use crate::device::store::CertificateRecord;
use crate::env::Secret;
use crate::error::{ApiError, FieldError};
use crate::keys::KeysError;

/// A request body as a handler gets it: parsed once from the JSON the client sent
/// ([`FromJson::Raw`]) into typed values, so no handler validates a field again.
pub trait FromJson: Sized {
    /// The body as sent (strings where the typed value has domain types).
    type Raw: DeserializeOwned;

    /// The typed body, or every rule that failed, in field order.
    fn from_json(raw: Self::Raw) -> Result<Self, Vec<FieldError>>;
}

/// Collects the field errors of a body while its fields are parsed.
#[derive(Debug, Default)]
pub struct FieldChecks(Vec<FieldError>);

impl FieldChecks {
    /// The parsed value, or `None` with its error recorded under `body.<field>`.
    pub fn parse<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        parsed
            .map_err(|msg| {
                self.0
                    .push(FieldError::new("value_error", &["body", field], msg))
            })
            .ok()
    }

    /// Records a rule's failure, if any.
    pub fn check(&mut self, failure: Option<FieldError>) {
        self.0.extend(failure);
    }

    /// `value` when no rule failed, else every failure.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(self.0),
        }
    }
}

/// A JSON request body made into `T` ([`FromJson`]).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// The size limit that applies to bodies, taken from the request's extensions (set by the
/// router from `MAX_BODY_BYTES`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: FromJson,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |l| l.0);
        require_json_content_type(&request)?;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection {
                    BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                        ApiError::PayloadTooLarge { limit }
                    }
                    _ => ApiError::BadRequest("The request body could not be read.".to_owned()),
                })?;
        if bytes.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let raw = parse_json::<T::Raw>(&bytes)?;
        T::from_json(raw).map(ApiJson).map_err(ApiError::Validation)
    }
}

fn require_json_content_type(request: &Request) -> Result<(), ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else if essence.is_empty() {
        Err(ApiError::UnsupportedMediaType(
            "Send the body with Content-Type: application/json.".to_owned(),
        ))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {essence} is not supported; send application/json."
        )))
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "missing",
            &["body"],
            "Field required",
        )]));
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let looks_like_json_value = matches!(
        first,
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
    );
    if looks_like_json_value && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(ApiError::Validation(vec![FieldError::new(
            "model_attributes_type",
            &["body"],
            "Input should be a JSON object",
        )]));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::BadRequest(format!(
                "The request body is not valid JSON (line {}, column {}).",
                inner.line(),
                inner.column()
            )),
            Category::Data => ApiError::Validation(vec![data_error(&path, &inner)]),
        }
    })?;
    deserializer.end().map_err(|_| {
        ApiError::BadRequest("The request body has trailing data after the JSON value.".to_owned())
    })?;
    Ok(value)
}

/// Turns serde's data error into a field error, without echoing the offending value.
fn data_error(path: &str, error: &serde_json::Error) -> FieldError {
    let message = error.to_string();
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        let loc = join_path(path, field);
        return FieldError {
            kind: "missing".to_owned(),
            loc,
            msg: "Field required".to_owned(),
        };
    }
    let expected = message
        .split("expected ")
        .nth(1)
        .map(|e| e.split(" at line").next().unwrap_or(e).to_owned())
        .unwrap_or_else(|| "a different value".to_owned());
    FieldError {
        kind: "type_error".to_owned(),
        loc: join_path(path, ""),
        msg: format!("Input should be {expected}"),
    }
}

fn join_path(path: &str, field: &str) -> Vec<String> {
    let mut loc = vec!["body".to_owned()];
    loc.extend(
        path.split('.')
            .filter(|p| !p.is_empty() && *p != "?")
            .map(str::to_owned),
    );
    if !field.is_empty() {
        loc.push(field.to_owned());
    }
    loc
}

impl From<GuardError> for ApiError {
    fn from(error: GuardError) -> Self {
        match error {
            GuardError::Missing => ApiError::Unauthorized {
                challenge: r#"MutualTLS realm="apuntador-devices""#,
                code: Some("client_certificate_required"),
                detail: "Client certificate required for this endpoint.",
            },
            GuardError::Rejected(_) => ApiError::coded(
                StatusCode::FORBIDDEN,
                "client_certificate_rejected",
                error.to_string(),
            ),
            GuardError::Ambiguous(_) => ApiError::coded(
                StatusCode::BAD_REQUEST,
                "ambiguous_client_certificate",
                error.to_string(),
            ),
            GuardError::Unavailable => ApiError::coded(
                StatusCode::SERVICE_UNAVAILABLE,
                "ca_unavailable",
                error.to_string(),
            ),
        }
    }
}

/// A path parameter, refused as a problem+json 400 when it cannot be read (percent-decoding to
/// something that is not UTF-8, such as `%FF`), where axum's own `Path` answers in plain text.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection| {
                ApiError::BadRequest(format!(
                    "The path cannot be read: {}.",
                    rejection.body_text()
                ))
            })
    }
}

/// The caller's verified device certificate, as its device's current record (401 when absent,
/// 400 when the proxy header is ambiguous, 403 when not acceptable).
pub struct Authenticated(pub CertificateRecord);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let result = match presented_pem(parts, state.config.devices.trusted_cert_header) {
            Ok(None) => Err(GuardError::Missing),
            Ok(Some(pem)) => verify(&pem, &state.devices).await,
            Err(e) => Err(e),
        };
        if let Ok(record) = &result {
            crate::telemetry::annotations::device_platform(record.platform.as_str());
        }
        result.map(Authenticated).map_err(|e| {
            tracing::warn!(reason = %e, "client certificate refused");
            e.into()
        })
    }
}

/// The deployment's operator: the caller sent `Authorization: Bearer <CONFIG_API_KEY>`
/// (compared in constant time). 401 with a wrong or missing key, 503 when no key is configured
/// or it cannot be read now. Guards `/config/providers` and the attestation cache's clearing.
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let keys = state.keys.get().await.map_err(unavailable)?;
        if let Err(refused) = authorize(&parts.headers, keys.config_api_key.as_ref()) {
            // A key this process does not know may be one a rotation just put in the secret.
            let fresh = state.keys.refresh(&keys).await;
            if Arc::ptr_eq(&fresh, &keys) || !matches!(refused, ApiError::Unauthorized { .. }) {
                return Err(refused);
            }
            authorize(&parts.headers, fresh.config_api_key.as_ref())?;
        }
        Ok(Operator)
    }
}

/// The keys secret cannot be read: a 503 that comes back by itself (`Retry-After`).
fn unavailable(error: KeysError) -> ApiError {
    tracing::warn!(error = %error, "operator route: no key to check against");
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: u32,
    }

    fn validation(err: ApiError) -> Vec<FieldError> {
        match err {
            ApiError::Validation(errors) => errors,
            other => panic!("expected validation error, got {other:?}"),
        }
    }

    #[test]
    fn missing_field_is_located() {
        let errors = validation(parse_json::<Body>(br#"{"name":"x"}"#).unwrap_err());
        assert_eq!(
            errors,
            [FieldError::new(
                "missing",
                &["body", "count"],
                "Field required"
            )]
        );
    }

    #[test]
    fn wrong_type_names_the_field_but_not_the_value() {
        let errors = validation(
            parse_json::<Body>(br#"{"name":"secret-token-123","count":"x"}"#).unwrap_err(),
        );
        assert_eq!(errors[0].loc, ["body", "count"]);
        assert_eq!(errors[0].kind, "type_error");
        assert!(!errors[0].msg.contains("secret-token-123"));
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        assert!(matches!(
            parse_json::<Body>(b"{\"name\":"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_json::<Body>(br#"{"name":"a","count":1} x"#),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn an_array_is_not_an_object() {
        let errors = validation(parse_json::<Body>(b"[1,2]").unwrap_err());
        assert_eq!(errors[0].loc, ["body"]);
    }

    #[test]
    fn an_empty_body_is_a_missing_body() {
        let errors = validation(parse_json::<Body>(b"  ").unwrap_err());
        assert_eq!(
            errors,
            [FieldError::new("missing", &["body"], "Field required")]
        );
    }
}

//! The one error type of the API and its RFC 9457 `application/problem+json` rendering.
//!
//! Handlers and extractors return [`ApiError`]; each area's errors convert into it (`From`), so
//! handlers use `?`. Its `IntoResponse` only sets the status (and `WWW-Authenticate`, a parameter
//! of the 401, and `Allow`, which axum keeps) and parks a [`Problem`] in the response
//! extensions; [`render_problems`] then writes the body with the request path as `instance`.
//! Keeping the rendering in one middleware means every error, including a caught panic, has the
//! same shape.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Machine-readable code such as `missing`, `string_type` or `string_too_short`.
    #[serde(rename = "type")]
    #[schema(example = "string_too_short")]
    pub kind: String,
    /// Where the value was: `["body", "<field>"]`, `["query", "<name>"]`, `["path", "<name>"]`.
    pub loc: Vec<String>,
    /// Human-readable explanation.
    pub msg: String,
}

impl FieldError {
    pub fn new(kind: &str, loc: &[&str], msg: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            loc: loc.iter().map(|s| (*s).to_owned()).collect(),
            msg: msg.into(),
        }
    }
}

/// Every error the backend answers with.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("no route matches this path")]
    NotFound,
    #[error("this path does not accept the request method")]
    MethodNotAllowed,
    #[error("{0}")]
    BadRequest(String),
    /// 401 with its `WWW-Authenticate` challenge (RFC 9110 asks every 401 for one), and an
    /// `error` code when the scheme has one.
    #[error("{detail}")]
    Unauthorized {
        challenge: &'static str,
        code: Option<&'static str>,
        detail: &'static str,
    },
    #[error("request body failed validation ({} errors)", .0.len())]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    ServiceUnavailable(String),
    /// A failure with a machine-readable `error` code (`invalid_state`, `invalid_grant`, …).
    #[error("{detail}")]
    Coded {
        status: StatusCode,
        code: Option<String>,
        detail: String,
    },
    /// The message is logged, never sent: clients get a generic detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A failure with a machine-readable `error` code.
    pub fn coded(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self::Coded {
            status,
            code: Some(code.to_owned()),
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Coded { status, .. } => *status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// See [`Problem::class`].
    fn class(&self) -> String {
        let name = match self {
            Self::Coded {
                code: Some(code), ..
            } => return code.clone(),
            Self::Unauthorized {
                code: Some(code), ..
            } => code,
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Validation(_) => "validation_error",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::ServiceUnavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
            Self::Coded { status, .. } => return format!("http_{}", status.as_u16()),
        };
        name.to_owned()
    }

    fn detail(&self) -> String {
        match self {
            Self::NotFound => "No route matches this path.".to_owned(),
            Self::MethodNotAllowed => {
                "This path does not accept that method; see the Allow header.".to_owned()
            }
            Self::Validation(errors) => {
                format!(
                    "One or more validation errors occurred ({} errors).",
                    errors.len()
                )
            }
            Self::Internal(_) => "An unexpected error occurred. Please try again later.".to_owned(),
            other => other.to_string(),
        }
    }
}

/// An RFC 9457 problem: every error answer has this body (`application/problem+json`).
/// (`instance` is filled in by `render_problems`.)
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// The RFC section that defines the status.
    #[serde(rename = "type")]
    #[schema(example = "https://datatracker.ietf.org/doc/html/rfc4918#section-11.2")]
    pub kind: &'static str,
    #[schema(example = "Validation Error")]
    pub title: &'static str,
    #[schema(example = 422)]
    pub status: u16,
    pub detail: String,
    /// The request path.
    #[schema(example = "/oauth/token/googledrive")]
    pub instance: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// OAuth error code (RFC 6749 style), on OAuth failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The low-cardinality class of the failure for telemetry: the `error` code when there is
    /// one, else a name for the status (`validation_error`, `not_found`, …). Not in the body.
    #[serde(skip)]
    pub class: String,
}

/// The failure's class ([`Problem::class`]), left in the extensions of an error response for the
/// request layer (`error.type` and the `error_type` annotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorClass(pub String);

/// Problem type URIs: the RFC section that defines each status (kept from the spec's table).
fn type_uri(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "https://datatracker.ietf.org/doc/html/rfc7231#section-6.5.1",
        401 => "https://datatracker.ietf.org/doc/html/rfc7235#section-3.1",
        403 => "https://datatracker.ietf.org/doc/html/rfc7231#section-6.5.3",
        404 => "https://datatracker.ietf.org/doc/html/rfc7231#section-6.5.4",
        405 => "https://datatracker.ietf.org/doc/html/rfc7231#section-6.5.5",
        413 => "https://datatracker.ietf.org/doc/html/rfc7231#section-6.5.11",
        415 => "https://datatracker.ietf.org/doc/html/rfc7231#section-6.5.13",
        422 => "https://datatracker.ietf.org/doc/html/rfc4918#section-11.2",
        429 => "https://datatracker.ietf.org/doc/html/rfc6585#section-4",
        502 => "https://datatracker.ietf.org/doc/html/rfc7231#section-6.6.3",
        503 => "https://datatracker.ietf.org/doc/html/rfc7231#section-6.6.4",
        504 => "https://datatracker.ietf.org/doc/html/rfc7231#section-6.6.5",
        _ => "https://datatracker.ietf.org/doc/html/rfc7231#section-6.6.1",
    }
}

fn title(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNPROCESSABLE_ENTITY => "Validation Error",
        other => other.canonical_reason().unwrap_or("Error"),
    }
}

impl From<&ApiError> for Problem {
    fn from(error: &ApiError) -> Self {
        let status = error.status();
        Problem {
            kind: type_uri(status),
            title: title(status),
            status: status.as_u16(),
            detail: error.detail(),
            instance: String::new(),
            errors: match error {
                ApiError::Validation(errors) => errors.clone(),
                _ => Vec::new(),
            },
            error: match error {
                ApiError::Coded { code, .. } => code.clone(),
                ApiError::Unauthorized { code, .. } => code.map(str::to_owned),
                _ => None,
            },
            class: error.class(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(message) => tracing::error!(error = %message, "internal error"),
            ApiError::Validation(errors) => {
                tracing::info!(errors = errors.len(), "request failed validation")
            }
            _ => {}
        }
        let mut response = self.status().into_response();
        // A coded 503 is a dependency that comes back by itself (CA, storage, credentials).
        if let ApiError::Coded { status, .. } = &self
            && *status == StatusCode::SERVICE_UNAVAILABLE
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let ApiError::Unauthorized { challenge, .. } = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response.extensions_mut().insert(Problem::from(&self));
        response
    }
}

const PROBLEM_JSON: &str = "application/problem+json";

/// `Retry-After` of a 503 whose dependency is down for now: the retry interval of the cached
/// loads ([`crate::load_once`]).
pub const RETRY_AFTER_SECS: u64 = 5;

/// Writes the parked [`Problem`] of an error response as its body, with the request path as
/// `instance`. Responses without one pass through untouched.
pub async fn render_problems(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let Some(mut problem) = response.extensions_mut().remove::<Problem>() else {
        return response;
    };
    problem.instance = path;
    let class = ErrorClass(std::mem::take(&mut problem.class));
    let body = match serde_json::to_vec(&problem) {
        Ok(body) => body,
        Err(_) => br#"{"title":"Internal Server Error","status":500}"#.to_vec(),
    };
    let (mut parts, _) = response.into_parts();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.extensions.insert(class);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// An error's message as a problem `detail`: a sentence (first letter upper case, a full stop).
pub fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect::<String>() + ".")
        .unwrap_or_default()
}

/// Router fallback for unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Router fallback for a known path with the wrong method (axum keeps the `Allow` header).
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_message() {
        let problem = Problem::from(&ApiError::Internal("db password=hunter2".into()));
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("hunter2"));
        assert_eq!(problem.title, "Internal Server Error");
    }

    #[test]
    fn validation_lists_each_field() {
        let problem = Problem::from(&ApiError::Validation(vec![FieldError::new(
            "missing",
            &["body", "code"],
            "Field required",
        )]));
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(json["status"], 422);
        assert_eq!(json["title"], "Validation Error");
        assert_eq!(
            json["errors"][0]["loc"],
            serde_json::json!(["body", "code"])
        );
        assert_eq!(
            json["detail"],
            "One or more validation errors occurred (1 errors)."
        );
    }

    #[test]
    fn every_status_has_a_type_uri() {
        for status in [413u16, 415, 504] {
            let uri = type_uri(StatusCode::from_u16(status).unwrap());
            assert_ne!(uri, type_uri(StatusCode::INTERNAL_SERVER_ERROR), "{status}");
        }
    }
}

//! Calls to provider token and revocation endpoints: one HTTP client (rustls) built at start and
//! reused, every call a CLIENT span under the request span (`http.request.method`,
//! `server.address`, `server.port`, `url.full` without query or credentials,
//! `http.response.status_code`), so X-Ray's service map shows each provider as a downstream
//! node, and counted in the dependency metrics under the provider's name. No trace header is
//! sent to a provider, and nothing secret goes into a span or a log line.

use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use thiserror::Error;
use tracing::Instrument;
use tracing::field::Empty;
use url::Url;

use super::provider::ProviderId;
use crate::telemetry::metrics;

/// How a provider call failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The provider refused the request (4xx), with its OAuth `error` code if it sent one.
    #[error("the provider rejected the request ({status}{})", error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    Rejected {
        status: u16,
        error: Option<String>,
        description: Option<String>,
    },
    /// The provider failed (5xx) or answered something that is not OAuth.
    #[error("the provider failed ({0})")]
    Upstream(String),
    /// No answer within the configured time.
    #[error("the provider did not answer in time")]
    Timeout,
    /// The connection could not be made.
    #[error("the provider could not be reached")]
    Unreachable,
}

/// The provider client could not be built (a start-up failure).
#[derive(Debug, Error)]
pub enum ClientBuildError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: bytes::Bytes,
}

/// The OAuth error body (RFC 6749 §5.2), as far as providers agree on it.
#[derive(Debug, Deserialize)]
struct OAuthErrorBody {
    error: Option<serde_json::Value>,
    error_description: Option<String>,
}

/// The shared provider client.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
}

impl ProviderClient {
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Result<Self, ClientBuildError> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::client_config()?)
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .user_agent(concat!("apuntador-backend/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http })
    }

    /// POSTs `form` (URL-encoded) to `provider`'s `url`, with an optional bearer token.
    pub async fn post_form(
        &self,
        provider: ProviderId,
        url: &Url,
        form: &[(&str, &str)],
        bearer: Option<&str>,
    ) -> Result<Answer, CallError> {
        let mut request = self
            .http
            .post(url.clone())
            .header(ACCEPT, "application/json");
        if !form.is_empty() {
            request = request.form(form);
        }
        if let Some(token) = bearer {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                CallError::Rejected {
                    status: 400,
                    error: Some("invalid_request".to_owned()),
                    description: Some(
                        "the token contains characters that cannot be sent".to_owned(),
                    ),
                }
            })?;
            request = request.header(AUTHORIZATION, value);
        }
        let started = Instant::now();
        let result = self.send(url, request).await;
        // A refusal (4xx: an expired code, a revoked token) is the caller's, not the
        // provider failing.
        let failed = matches!(
            result,
            Err(CallError::Upstream(_) | CallError::Timeout | CallError::Unreachable)
        );
        metrics::record_dependency(provider.as_str(), started.elapsed(), failed);
        result
    }

    async fn send(&self, url: &Url, request: reqwest::RequestBuilder) -> Result<Answer, CallError> {
        let host = url.host_str().unwrap_or_default().to_owned();
        let span = tracing::info_span!(
            "POST",
            otel.kind = "client",
            otel.name = %format!("POST {host}"),
            otel.status_description = Empty,
            "http.request.method" = "POST",
            "server.address" = %host,
            "server.port" = url.port_or_known_default().map(i64::from),
            "url.full" = %redacted(url),
            "http.response.status_code" = Empty,
        );
        // No `X-Amzn-Trace-Id`: a provider does not join our traces, and the header would
        // hand it our trace ids (X-Ray's service map draws the call from this span alone).
        async {
            let span = tracing::Span::current();
            let response = request.send().await.map_err(|e| {
                let error = if e.is_timeout() {
                    CallError::Timeout
                } else {
                    CallError::Unreachable
                };
                span.record("otel.status_description", error.to_string());
                error
            })?;
            let status = response.status().as_u16();
            span.record("http.response.status_code", i64::from(status));
            let body = response.bytes().await.map_err(|e| {
                if e.is_timeout() {
                    CallError::Timeout
                } else {
                    CallError::Upstream("the answer was cut short".to_owned())
                }
            })?;
            match status {
                200..=299 => Ok(Answer { status, body }),
                400..=499 => {
                    let parsed: Option<OAuthErrorBody> = serde_json::from_slice(&body).ok();
                    let error = parsed.as_ref().and_then(|b| match &b.error {
                        Some(serde_json::Value::String(s)) => Some(s.clone()),
                        // Dropbox: {"error": {".tag": "invalid_access_token"}, "error_summary": …}
                        Some(serde_json::Value::Object(o)) => {
                            o.get(".tag").and_then(|t| t.as_str()).map(str::to_owned)
                        }
                        _ => None,
                    });
                    let error = error.filter(|e| is_error_code(e));
                    let description = parsed
                        .and_then(|b| b.error_description)
                        .map(|d| d.chars().take(300).collect());
                    Err(CallError::Rejected {
                        status,
                        error,
                        description,
                    })
                }
                _ => {
                    span.record("otel.status_description", format!("HTTP {status}"));
                    Err(CallError::Upstream(format!("HTTP {status}")))
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// OAuth error codes are short ASCII words; anything else is not forwarded to clients.
fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// The URL without query, fragment or user info (revocation URLs can carry the token).
fn redacted(url: &Url) -> String {
    let mut clean = url.clone();
    clean.set_query(None);
    clean.set_fragment(None);
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_spans_carry_no_query() {
        let url =
            Url::parse("https://user:pw@oauth2.googleapis.com/revoke?token=ya29.secret#x").unwrap();
        assert_eq!(redacted(&url), "https://oauth2.googleapis.com/revoke");
    }

    #[test]
    fn the_client_builds() {
        assert!(ProviderClient::new(Duration::from_secs(1), Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn only_plain_error_codes_are_forwarded() {
        assert!(is_error_code("invalid_grant"));
        assert!(!is_error_code("<script>"));
        assert!(!is_error_code(""));
    }
}

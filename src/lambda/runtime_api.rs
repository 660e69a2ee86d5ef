//! The Lambda Runtime API (version 2018-06-01) as this function speaks it: wait for the next
//! event, then post its response or its error. Requests go through `lambda_runtime_api_client`,
//! the HTTP client the official runtime uses.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use lambda_runtime::Diagnostic;
use lambda_runtime_api_client::body::Body;
use lambda_runtime_api_client::{PooledClient, build_request};
use thiserror::Error;

const NEXT_PATH: &str = "/2018-06-01/runtime/invocation/next";
const REQUEST_ID: &str = "lambda-runtime-aws-request-id";
/// Sent by newer Runtime API versions; echoed back so a late answer to a timed-out invocation
/// cannot be taken for the answer to a newer one.
const INVOCATION_ID: &str = "lambda-runtime-invocation-id";

/// Why the Runtime API conversation cannot go on; the function exits and Lambda starts a
/// fresh sandbox.
#[derive(Debug, Error)]
pub enum RuntimeApiError {
    #[error("AWS_LAMBDA_RUNTIME_API is not a host:port address: {0:?}")]
    Address(String),
    #[error("could not build the {0} request: {1}")]
    Request(&'static str, http::Error),
    #[error("{0} failed: {1}")]
    Transport(&'static str, lambda_runtime_api_client::BoxError),
    #[error("{0} answered {1}")]
    Status(&'static str, StatusCode),
    #[error("the next event has no usable {REQUEST_ID} header")]
    MissingRequestId,
}

/// One event handed over by `/next`.
#[derive(Debug)]
pub struct NextEvent {
    pub request_id: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl NextEvent {
    fn invocation_id(&self) -> Option<&HeaderValue> {
        self.headers.get(INVOCATION_ID)
    }
}

/// Client of the Runtime API at `AWS_LAMBDA_RUNTIME_API`.
pub struct RuntimeApi {
    client: PooledClient,
}

impl RuntimeApi {
    /// `address` is `AWS_LAMBDA_RUNTIME_API`, e.g. `127.0.0.1:9001`; `concurrency` is how many
    /// conversations run at once (a connection each is kept open).
    pub fn new(address: &str, concurrency: usize) -> Result<Self, RuntimeApiError> {
        let uri: Uri = format!("http://{address}")
            .parse()
            .map_err(|_| RuntimeApiError::Address(address.to_owned()))?;
        if address.is_empty() || uri.path() != "/" {
            return Err(RuntimeApiError::Address(address.to_owned()));
        }
        Ok(Self {
            client: PooledClient::builder()
                .with_endpoint(uri)
                .with_pool_size(concurrency)
                .build(),
        })
    }

    /// Waits (long poll) for the next event. Lambda may freeze the sandbox during this call.
    pub async fn next(&self) -> Result<NextEvent, RuntimeApiError> {
        let request = build_request()
            .method(Method::GET)
            .uri(NEXT_PATH)
            .body(Body::empty())
            .map_err(|e| RuntimeApiError::Request("/next", e))?;
        let response = self
            .client
            .call(request)
            .await
            .map_err(|e| RuntimeApiError::Transport("/next", e))?;
        if !response.status().is_success() {
            return Err(RuntimeApiError::Status("/next", response.status()));
        }
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| RuntimeApiError::Transport("/next", e.into()))?
            .to_bytes();
        let request_id = parts
            .headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_path_safe(id))
            .ok_or(RuntimeApiError::MissingRequestId)?
            .to_owned();
        Ok(NextEvent {
            request_id,
            headers: parts.headers,
            body,
        })
    }

    /// Posts the function's response to `event`.
    pub async fn respond(&self, event: &NextEvent, body: Vec<u8>) -> Result<(), RuntimeApiError> {
        let request = self.answer(event, "response", Body::from(body), None)?;
        self.send("/response", request).await
    }

    /// Reports that `event` failed; the caller gets an error from Lambda.
    pub async fn fail(
        &self,
        event: &NextEvent,
        diagnostic: &Diagnostic,
    ) -> Result<(), RuntimeApiError> {
        // Diagnostic is two strings: serializing it cannot fail.
        let body = serde_json::to_vec(diagnostic).unwrap_or_default();
        let request = self.answer(event, "error", Body::from(body), Some("Unhandled"))?;
        self.send("/error", request).await
    }

    fn answer(
        &self,
        event: &NextEvent,
        kind: &'static str,
        body: Body,
        error_type: Option<&'static str>,
    ) -> Result<Request<Body>, RuntimeApiError> {
        let path = format!("/2018-06-01/runtime/invocation/{}/{kind}", event.request_id);
        let mut builder = build_request()
            .method(Method::POST)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(error_type) = error_type {
            builder = builder.header("lambda-runtime-function-error-type", error_type);
        }
        if let Some(id) = event.invocation_id() {
            builder = builder.header(INVOCATION_ID, id.clone());
        }
        builder
            .body(body)
            .map_err(|e| RuntimeApiError::Request(kind, e))
    }

    /// Sends an answer. A rejected answer (400, 403, 413: Lambda then fails the invocation on
    /// its side) is logged and the function goes on; 500 means the sandbox is broken.
    async fn send(
        &self,
        what: &'static str,
        request: Request<Body>,
    ) -> Result<(), RuntimeApiError> {
        let response = self
            .client
            .call(request)
            .await
            .map_err(|e| RuntimeApiError::Transport(what, e))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(RuntimeApiError::Status(what, status));
        }
        if !status.is_success() {
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            let detail = body
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            tracing::error!(status = status.as_u16(), detail = %detail, "Runtime API rejected {what}");
        }
        Ok(())
    }
}

/// Request ids are UUIDs; anything that would change the answer's URL path is refused.
fn is_path_safe(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && id != "."
        && id != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_must_be_host_and_port() {
        assert!(RuntimeApi::new("127.0.0.1:9001", 1).is_ok());
        assert!(RuntimeApi::new("localhost:9001", 1).is_ok());
        for bad in ["", "127.0.0.1:9001/path", "not a host"] {
            assert!(
                matches!(RuntimeApi::new(bad, 1), Err(RuntimeApiError::Address(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn request_ids_that_would_change_the_path_are_refused() {
        assert!(is_path_safe("8476a536-e9f4-11e8-9739-2dfe598c3fcd"));
        for bad in ["", "..", "a/b", "a?b", "a b", "a%2f"] {
            assert!(!is_path_safe(bad), "{bad:?} accepted");
        }
    }
}

//! The collector-less OTLP/HTTP transport to X-Ray's OTLP endpoint,
//! `https://xray.<region>.amazonaws.com/v1/traces`, each request signed with SigV4 (service
//! `xray`) by the AWS SDK's own signer (`aws-sigv4`) with the process's AWS credentials. This is
//! what AWS documents now that the X-Ray daemon and the collector's `awsxray` exporter are
//! retiring, and what the ADOT SDKs do "collector-less" (aws-otel-python-instrumentation
//! `exporter/otlp/aws/traces/otlp_aws_span_exporter.py`, aws-otel-java-instrumentation
//! `OtlpAwsSpanExporter.java`): the same convention turns it on here, an
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` of that form, and the standard `AWS_ENDPOINT_URL_XRAY`
//! redirects it (how tests point it at a loopback double) while the signing region stays the
//! endpoint's.
//!
//! What this module owns:
//! - **Credentials** from the AWS SDK's default chain (in Lambda the execution role's
//!   variables; in ECS the task role from the container endpoint), fetched at the first export
//!   (after the first response, never at cold start) and again when they are within
//!   [`REFRESH_MARGIN`] of expiry. Never logged: errors name the status and AWS's error type,
//!   never a header or AWS's message (a signature mismatch message quotes the signed headers).
//! - **Bounds.** One export, however many requests it takes, ends within the export timeout
//!   (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, default 1 s): a slow or dead endpoint holds a Lambda
//!   sandbox that long at most, after the response. [`super::exporter::Resilient`] around it
//!   stops calling a failing endpoint for a back-off period and logs the episode once.
//! - **What the endpoint takes.** Batches are split ([`super::otlp_batch`]) so no request
//!   exceeds [`MAX_REQUEST_BYTES`], a conservative cap (the endpoint's own quota table could not
//!   be read where this was written; an invocation's spans are a few KB); a span too large
//!   alone is dropped and counted. Span values are already held to X-Ray's limits
//!   where they are recorded ([`super::limits`]); trace ids are X-Ray's (`opentelemetry_aws`'s
//!   generator) or a W3C caller's, both of which Transaction Search stores. Spans the endpoint rejects in a partial success are counted and logged at most
//!   once a minute.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::Message;

use super::metrics;
use super::otlp_batch;
use super::udp_link::Throttle;

/// The SigV4 signing name of X-Ray's OTLP endpoint.
pub const SIGNING_SERVICE: &str = "xray";

/// Largest request body sent (uncompressed protobuf): a conservative cap that also keeps one
/// request's upload short inside a Lambda flush.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Credentials closer than this to their expiry are fetched again before use.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Where spans go and how requests are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XrayEndpoint {
    /// The signing region, from the endpoint's host.
    pub region: String,
    /// The URL requests are posted to: the endpoint, or `AWS_ENDPOINT_URL_XRAY` + `/v1/traces`.
    pub url: String,
}

impl XrayEndpoint {
    /// `Some` when `traces_endpoint` is X-Ray's OTLP endpoint (the ADOT SDKs' test:
    /// `https://xray.<region>.amazonaws.com/v1/traces`); `redirect` is `AWS_ENDPOINT_URL_XRAY`.
    pub fn detect(traces_endpoint: &str, redirect: Option<&str>) -> Result<Option<Self>, String> {
        let Some(region) = traces_endpoint
            .trim()
            .strip_prefix("https://xray.")
            .and_then(|rest| rest.strip_suffix(".amazonaws.com/v1/traces"))
        else {
            return Ok(None);
        };
        let well_formed = !region.is_empty()
            && region.len() <= 32
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed {
            return Err(format!("{traces_endpoint:?} names no AWS region"));
        }
        let url = match redirect.map(str::trim).filter(|r| !r.is_empty()) {
            None => traces_endpoint.trim().to_owned(),
            Some(base) => {
                let parsed = reqwest::Url::parse(base)
                    .map_err(|e| format!("AWS_ENDPOINT_URL_XRAY={base:?}: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    return Err(format!(
                        "AWS_ENDPOINT_URL_XRAY={base:?} is not an http(s) URL"
                    ));
                }
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
        };
        Ok(Some(Self {
            region: region.to_owned(),
            url,
        }))
    }
}

/// Why an export did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no AWS credentials for X-Ray: {0}")]
    Credentials(String),
    #[error("could not sign the X-Ray request: {0}")]
    Signing(String),
    #[error("X-Ray OTLP endpoint unreachable: {0}")]
    Transport(String),
    #[error("X-Ray OTLP endpoint answered {status}{}", error_type.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Refused {
        status: u16,
        error_type: Option<String>,
    },
    #[error("export timeout reached with {0} spans unsent")]
    Deadline(usize),
}

/// Credentials held between exports.
#[derive(Debug)]
struct CredentialCache {
    runtime: Option<tokio::runtime::Handle>,
    /// `None`: the AWS SDK's default chain (the shared [`crate::aws::sdk_config`]).
    provider: Option<SharedCredentialsProvider>,
    current: Mutex<Option<Credentials>>,
}

fn fresh(credentials: &Credentials, margin: Duration) -> bool {
    credentials
        .expiry()
        .is_none_or(|expiry| expiry > SystemTime::now() + margin)
}

impl CredentialCache {
    /// Current credentials, fetched again within `budget` when near expiry; the old ones while
    /// they are still valid if fetching fails.
    fn get(&self, budget: Duration) -> Result<Credentials, ExportError> {
        let held = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(credentials) = &held
            && fresh(credentials, REFRESH_MARGIN)
        {
            return Ok(credentials.clone());
        }
        match self.fetch(budget) {
            Ok(credentials) => {
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(credentials.clone());
                Ok(credentials)
            }
            Err(error) => match held {
                Some(credentials) if fresh(&credentials, Duration::ZERO) => Ok(credentials),
                _ => Err(error),
            },
        }
    }

    fn fetch(&self, budget: Duration) -> Result<Credentials, ExportError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| ExportError::Credentials("no async runtime to fetch them".into()))?;
        let fetch = async {
            let provider = match &self.provider {
                Some(provider) => provider.clone(),
                None => crate::aws::sdk_config()
                    .await
                    .credentials_provider()
                    .ok_or_else(|| "no credentials provider".to_owned())?,
            };
            provider
                .provide_credentials()
                .await
                .map_err(|e| credentials_error(&e))
        };
        runtime
            .block_on(async { tokio::time::timeout(budget, fetch).await })
            .map_err(|_| ExportError::Credentials("timed out".into()))?
            .map_err(ExportError::Credentials)
    }
}

/// What a credentials error says, without its source chain (which may quote a response).
fn credentials_error(error: &aws_credential_types::provider::error::CredentialsError) -> String {
    use aws_credential_types::provider::error::CredentialsError as E;
    match error {
        E::CredentialsNotLoaded(_) => "none found in the environment or the credential chain",
        E::ProviderTimedOut(_) => "the credential provider timed out",
        E::InvalidConfiguration(_) => "the credential configuration is invalid",
        E::ProviderError(_) => "the credential provider failed",
        E::Unhandled(_) => "the credential provider failed unexpectedly",
        _ => "the credential provider failed",
    }
    .to_owned()
}

/// What one export sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    pub requests: usize,
    pub spans: usize,
    /// Spans the endpoint rejected in a partial success.
    pub rejected: i64,
    /// Spans too large for a request alone.
    pub oversize: usize,
}

#[derive(Debug, Default)]
struct Losses {
    rejected: Throttle,
    oversize: Throttle,
}

/// The span exporter of the SigV4 transport.
#[derive(Debug)]
pub struct XrayOtlpExporter {
    endpoint: XrayEndpoint,
    client: reqwest::blocking::Client,
    credentials: CredentialCache,
    resource: ResourceAttributesWithSchema,
    timeout: Duration,
    losses: Mutex<Losses>,
}

impl XrayOtlpExporter {
    /// Call inside the Tokio runtime (credentials are fetched on it); `client` follows no
    /// redirects.
    pub fn new(
        endpoint: XrayEndpoint,
        client: reqwest::blocking::Client,
        timeout: Duration,
    ) -> Self {
        Self {
            endpoint,
            client,
            credentials: CredentialCache {
                runtime: tokio::runtime::Handle::try_current().ok(),
                provider: None,
                current: Mutex::new(None),
            },
            resource: ResourceAttributesWithSchema::default(),
            timeout,
            losses: Mutex::new(Losses::default()),
        }
    }

    /// Credentials from `provider` instead of the default chain (tests, and callers with a
    /// provider of their own).
    pub fn with_credentials(mut self, provider: SharedCredentialsProvider) -> Self {
        self.credentials.provider = Some(provider);
        self
    }

    /// The exporter's resource, as the provider would set it.
    pub fn with_resource(mut self, resource: &opentelemetry_sdk::Resource) -> Self {
        self.resource = ResourceAttributesWithSchema::from(resource);
        self
    }

    /// Signs and posts `batch`, in as many requests as the size limit needs, within the
    /// export timeout.
    pub fn send(&self, batch: &[SpanData]) -> Result<Exported, ExportError> {
        let deadline = Instant::now() + self.timeout;
        let split = otlp_batch::split(batch, &self.resource, &|n| n <= MAX_REQUEST_BYTES);
        let mut exported = Exported {
            oversize: split.oversize,
            ..Exported::default()
        };
        self.note_losses(0, split.oversize);
        if split.requests.is_empty() {
            return Ok(exported);
        }
        let credentials = self.credentials.get(self.timeout)?;
        let total = split.span_count();
        for request in &split.requests {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ExportError::Deadline(total - exported.spans));
            }
            let rejected = self.post(&credentials, request, left)?;
            exported.requests += 1;
            exported.spans += otlp_batch::span_count(request);
            exported.rejected += rejected;
        }
        self.note_losses(exported.rejected.max(0) as usize, 0);
        Ok(exported)
    }

    fn note_losses(&self, rejected: usize, oversize: usize) {
        metrics::record_spans_dropped(rejected + oversize);
        let mut losses = self.losses.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = losses.rejected.note(rejected) {
            tracing::warn!(
                target: "apuntador::telemetry",
                rejected_spans = count,
                "X-Ray OTLP endpoint rejected spans (warned at most once a minute)"
            );
        }
        if let Some(count) = losses.oversize.note(oversize) {
            tracing::warn!(
                target: "apuntador::telemetry",
                dropped_spans = count,
                "spans dropped: each alone is over the request limit (warned at most once a minute)"
            );
        }
    }

    /// One signed request; the spans the endpoint rejected in a partial success.
    fn post(
        &self,
        credentials: &Credentials,
        request: &ExportTraceServiceRequest,
        timeout: Duration,
    ) -> Result<i64, ExportError> {
        let body = request.encode_to_vec();
        let headers = signed_headers(&self.endpoint, credentials, &body, SystemTime::now())?;
        let mut builder = self.client.post(&self.endpoint.url).timeout(timeout);
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = builder
            .body(body)
            .send()
            .map_err(|e| ExportError::Transport(transport_error(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let error_type = response
                .headers()
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .map(error_type);
            return Err(ExportError::Refused {
                status: status.as_u16(),
                error_type,
            });
        }
        let bytes = response
            .bytes()
            .map_err(|e| ExportError::Transport(transport_error(&e)))?;
        Ok(ExportTraceServiceResponse::decode(bytes.as_ref())
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_spans))
    }
}

/// The headers of a signed POST of `body` to `endpoint` (content type, date, token,
/// authorization).
pub fn signed_headers(
    endpoint: &XrayEndpoint,
    credentials: &Credentials,
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, ExportError> {
    const CONTENT_TYPE: (&str, &str) = ("content-type", "application/x-protobuf");
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&endpoint.region)
        .name(SIGNING_SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| ExportError::Signing(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        &endpoint.url,
        std::iter::once(CONTENT_TYPE),
        SignableBody::Bytes(body),
    )
    .map_err(|e| ExportError::Signing(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| ExportError::Signing(e.to_string()))?
        .into_parts();
    let mut headers = vec![(CONTENT_TYPE.0.to_owned(), CONTENT_TYPE.1.to_owned())];
    headers.extend(
        instructions
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );
    Ok(headers)
}

/// AWS's error type without its trailing `:` part, letters and digits only, at most 64.
fn error_type(raw: &str) -> String {
    raw.split(':')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect()
}

/// A transport error as one line that names its kind and the URL, nothing else.
fn transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match error.url() {
        Some(url) => format!("{kind} ({})", url.as_str()),
        None => kind.to_owned(),
    }
}

impl SpanExporter for XrayOtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.send(&batch)
            .map(|_| ())
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.resource = ResourceAttributesWithSchema::from(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adot_endpoint_form_turns_signing_on_and_the_redirect_keeps_the_region() {
        assert_eq!(
            XrayEndpoint::detect("http://localhost:4318/v1/traces", None).unwrap(),
            None
        );
        assert_eq!(
            XrayEndpoint::detect("https://xray.eu-west-1.amazonaws.com/v1/traces", None).unwrap(),
            Some(XrayEndpoint {
                region: "eu-west-1".into(),
                url: "https://xray.eu-west-1.amazonaws.com/v1/traces".into(),
            })
        );
        assert_eq!(
            XrayEndpoint::detect(
                "https://xray.us-east-2.amazonaws.com/v1/traces",
                Some("http://127.0.0.1:4566/")
            )
            .unwrap()
            .unwrap(),
            XrayEndpoint {
                region: "us-east-2".into(),
                url: "http://127.0.0.1:4566/v1/traces".into(),
            }
        );
        for bad in [
            "https://xray..amazonaws.com/v1/traces",
            "https://xray.EU_WEST.amazonaws.com/v1/traces",
            "https://xray.a/b.amazonaws.com/v1/traces",
        ] {
            assert!(XrayEndpoint::detect(bad, None).is_err(), "{bad}");
        }
        assert!(
            XrayEndpoint::detect(
                "https://xray.us-east-2.amazonaws.com/v1/traces",
                Some("ftp://x")
            )
            .is_err()
        );
    }

    #[test]
    fn a_signed_request_carries_the_region_service_and_token_and_no_secret() {
        let endpoint = XrayEndpoint {
            region: "eu-west-1".into(),
            url: "http://127.0.0.1:9/v1/traces".into(),
        };
        let credentials = Credentials::new(
            "AKIDTEST",
            "secret-for-test",
            Some("token-1".into()),
            None,
            "t",
        );
        let headers = signed_headers(&endpoint, &credentials, b"body", SystemTime::now()).unwrap();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        };
        let authorization = get("authorization").unwrap();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/"),
            "{authorization}"
        );
        assert!(authorization.contains("/eu-west-1/xray/aws4_request"));
        assert_eq!(get("x-amz-security-token"), Some("token-1"));
        assert!(get("x-amz-date").is_some());
        assert!(headers.iter().all(|(_, v)| !v.contains("secret-for-test")));
    }

    #[test]
    fn error_types_are_reduced_to_their_name() {
        assert_eq!(
            error_type("AccessDeniedException:http://internal.amazon.com/coral/"),
            "AccessDeniedException"
        );
        assert_eq!(error_type("Bad\r\nInjected"), "BadInjected");
    }
}

//! The X-Ray annotations: the few low-cardinality facts of a request that a user filters traces
//! by in the X-Ray console (`annotation.http_route = "/oauth/token/{provider}"`).
//!
//! X-Ray indexes annotations only; every other attribute becomes metadata, or nothing. Each
//! fact is therefore carried twice on the request span: under its OpenTelemetry name where one
//! exists (`http.route`, …) and under the annotation key below, and the span lists those keys in
//! `aws.xray.annotations`. That list is how the ADOT collector's awsxray exporter (Lambda layer
//! or ECS sidecar alike) learns which attributes to index, with no `indexed_attributes` in any
//! collector's configuration; the daemon transport ([`super::xray_daemon`]) indexes the same
//! keys. The keys have no dots on purpose: the awsxray exporter rewrites `.` to `_` or keeps it
//! depending on its version's `exporter.xray.allowDot` gate, so a dotted name would give users a
//! different filter expression per collector release.
//!
//! None of these values comes from a secret or the caller's free text: route templates, status
//! codes, provider and platform names from closed sets, error codes from this service's own
//! vocabulary or, for a provider's refusal, its OAuth error code (bounded by the OAuth client's
//! `is_error_code`: at most 64 characters of `[A-Za-z0-9_.]`).

use opentelemetry::{Array, KeyValue, StringValue, Value};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The route template (`/oauth/token/{provider}`), never the raw path.
pub const HTTP_ROUTE: &str = "http_route";
/// The response status code (a number: `annotation.http_status_code >= 500`).
pub const HTTP_STATUS_CODE: &str = "http_status_code";
/// `true` on a Lambda sandbox's first invocation.
pub const COLD_START: &str = "cold_start";
/// `googledrive`, `dropbox` or `onedrive`, on the OAuth routes that name one.
pub const OAUTH_PROVIDER: &str = "oauth_provider";
/// `android`, `ios`, `desktop` or `web`, on device routes once the platform is known.
pub const DEVICE_PLATFORM: &str = "device_platform";
/// `valid`, `invalid`, `failed` or `unsupported`, on the attestation routes once there is a
/// verdict.
pub const ATTESTATION_VERDICT: &str = "attestation_verdict";
/// The problem's machine-readable code (`invalid_grant`, `validation_error`, …) on 4xx and 5xx.
pub const ERROR_TYPE: &str = "error_type";
/// This build's version (`service.version`), to compare releases.
pub const SERVICE_VERSION: &str = "service_version";

/// Every annotation key, in the order they are documented (docs/tracing.md).
pub const KEYS: [&str; 8] = [
    HTTP_ROUTE,
    HTTP_STATUS_CODE,
    COLD_START,
    OAUTH_PROVIDER,
    DEVICE_PLATFORM,
    ATTESTATION_VERDICT,
    ERROR_TYPE,
    SERVICE_VERSION,
];

/// The span attribute the awsxray exporter reads the annotation keys from.
pub const XRAY_ANNOTATIONS_ATTRIBUTE: &str = "aws.xray.annotations";

/// `aws.xray.annotations` with every key: keys a span does not carry are ignored.
pub fn annotation_keys_attribute() -> KeyValue {
    static ATTRIBUTE: std::sync::OnceLock<KeyValue> = std::sync::OnceLock::new();
    ATTRIBUTE
        .get_or_init(|| {
            let keys: Vec<StringValue> = KEYS.iter().map(|k| StringValue::from(*k)).collect();
            KeyValue::new(
                XRAY_ANNOTATIONS_ATTRIBUTE,
                Value::Array(Array::String(keys)),
            )
        })
        .clone()
}

/// Records the device's platform on the current request span (the platform is known only once
/// the enrolment body or the client certificate was read).
pub fn device_platform(platform: &'static str) {
    tracing::Span::current().set_attribute(DEVICE_PLATFORM, platform);
}

/// Records an attestation's verdict on the current request span.
pub fn attestation_verdict(verdict: &'static str) {
    tracing::Span::current().set_attribute(ATTESTATION_VERDICT, verdict);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_x_ray_annotation_keys() {
        // X-Ray: "Keys must be alphanumeric in order to work with filters. Underscore is
        // allowed."
        for key in KEYS {
            assert!(
                key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{key}"
            );
        }
        let attribute = annotation_keys_attribute();
        assert_eq!(attribute.key.as_str(), "aws.xray.annotations");
        match attribute.value {
            Value::Array(Array::String(list)) => assert_eq!(list.len(), KEYS.len()),
            other => panic!("not a string list: {other:?}"),
        }
    }
}

//! End-to-end tests of the release binary (`APUNTADOR_BIN`, or the one cargo built), each in a
//! process of its own on loopback, one test binary:
//!
//! - [`lambda`]: under a Runtime API double that sends `Lambda-Runtime-Trace-Id`, with an OTLP
//!   receiver: parenting, sampling, attributes, log correlation, the flush after the response and
//!   before the next `/next`, a dead, failing or hanging collector, bad events;
//! - [`contract`]: the OpenAPI document against the routers and the running server
//!   (openapi-spec-validator, schemathesis);
//! - [`rie`]: every file in `events/` through the AWS Runtime Interface Emulator;
//! - [`sampling`]: X-Ray centralized sampling against a double of the sampling API, ratios per
//!   route, health checks untraced;
//! - [`server`]: server mode parenting, SIGTERM flush, console exporter, log formats;
//! - [`hardening`]: the second security review's findings against server mode (callers'
//!   sampling decisions, trace-header keys, clipped attributes, `X-Forwarded-For`, slow
//!   clients);
//! - [`oauth_lambda`]: the OAuth flows per provider as Lambda runs them, credentials from
//!   Secrets Manager on moto;
//! - [`device_aws`]: the device CA on DynamoDB and Secrets Manager (moto), several sandboxes racing;
//! - [`attestation_aws`]: the attestation store on DynamoDB (moto), several sandboxes racing;
//! - [`attestation_traces`]: attestations as spans with their verdicts, and no token, key or
//!   attestation object in any line the server writes;
//! - [`play_integrity`]: Play Integrity tokens made and opened by jwcrypto (Python), an
//!   implementation independent of the backend's;
//! - [`memory`]: resident memory stays flat over thousands of invocations;
//! - [`log_queries`]: every field the saved Logs Insights queries over the log lines read is
//!   in the lines, with its type; Lambda lines carry the Powertools logger's keys;
//! - [`metrics`]: the CloudWatch Embedded Metric Format documents, Lambda (after each
//!   invocation) and server mode, and the switches that turn them off;
//! - [`otlp_udp`]: the OTLP-over-UDP transport under the Runtime API double, every datagram
//!   checked as Lambda's X-Ray endpoint reads it;
//! - [`span_queries`]: every field the Logs Insights queries over `aws/spans` read is in the
//!   spans the binary exports (decoded by the SigV4 endpoint double);
//! - [`xray_otlp`]: the SigV4 transport against a double of X-Ray's OTLP endpoint that verifies
//!   every signature: each answer the endpoint gives, Lambda and server mode, credential
//!   refresh, no credential in a log line;
//! - [`xray`]: the traces as X-Ray stores them (moto's X-Ray API), through a real collector
//!   (rotel) and through the daemon transport, checked against X-Ray's document schema.

/// The harness, and the binary under test.
mod support {
    pub use apuntador_harness::*;

    /// `APUNTADOR_BIN`, else the binary cargo built for this run.
    pub fn binary() -> std::path::PathBuf {
        binary_or(env!("CARGO_BIN_EXE_apuntador-backend"))
    }

    /// The checkout the tests run in: cargo's `CARGO_MANIFEST_DIR` at run time, not the path
    /// baked in at build time (a test binary reused from another checkout sharing the target
    /// directory would read that checkout's files).
    pub fn repo_root() -> std::path::PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
    }
}

mod attestation_aws;
mod attestation_traces;
mod contract;
mod device_aws;
mod hardening;
mod keys;
mod lambda;
mod load;
mod log_queries;
mod managed_instances;
mod memory;
mod metrics;
mod oauth_lambda;
mod otlp_udp;
mod play_integrity;
mod rie;
mod sampling;
mod server;
mod single_use;
mod span_queries;
mod xray;
mod xray_otlp;

//! AWS SDK calls as CLIENT spans (`rpc.system=aws-api`, `rpc.service`, `rpc.method`,
//! `aws.request_id`), so X-Ray shows DynamoDB and Secrets Manager as downstream nodes, and
//! each request carrying its span as `X-Amzn-Trace-Id` ([`TraceHeader`]); each call is also
//! counted in the dependency metrics ([`super::metrics`]).

use std::future::Future;
use std::time::Instant;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::request_id::RequestId;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::metrics;
use super::xray::aws_header_of;

const TRACE_HEADER: &str = "x-amzn-trace-id";

/// SDK interceptor that sends the current span (the call's CLIENT span from [`traced`]) as the
/// X-Ray parent of the request, the way the outgoing OAuth calls do.
///
/// The SDK's own recursion-detection interceptor would copy `_X_AMZN_TRACE_ID`, which Lambda
/// runtimes are told to set per invocation; this function's runtime loop does not set it (see
/// [`crate::lambda`]), and the span is the better parent anyway. This header is the one sent
/// either way: the recursion-detection interceptor leaves an existing header alone.
#[derive(Debug, Default)]
pub struct TraceHeader;

impl Intercept for TraceHeader {
    fn name(&self) -> &'static str {
        "TraceHeader"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(header) = aws_header_of(&tracing::Span::current().context()) {
            context
                .request_mut()
                .headers_mut()
                .insert(TRACE_HEADER, header);
        }
        Ok(())
    }
}

/// Runs one AWS call inside its span, records the request id and any error, and counts it in
/// the dependency metrics under `service` (a failure: no answer, a 5xx or throttling; a
/// refusal such as a lost conditional write or a missing secret is a call that worked).
pub async fn traced<T, E>(
    service: &'static str,
    method: &'static str,
    call: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
) -> Result<T, SdkError<E, HttpResponse>>
where
    T: RequestId,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let started = Instant::now();
    let span = tracing::info_span!(
        "aws",
        otel.name = %format!("{service}.{method}"),
        otel.kind = "client",
        otel.status_description = Empty,
        "rpc.system" = "aws-api",
        "rpc.service" = service,
        "rpc.method" = method,
        "aws.request_id" = Empty,
    );
    let result = call.instrument(span.clone()).await;
    metrics::record_dependency(
        service,
        started.elapsed(),
        result.as_ref().err().is_some_and(dependency_failed),
    );
    let request_id = match &result {
        Ok(output) => output.request_id(),
        Err(error) => {
            span.record("otel.status_description", aws_error_text(error).as_str());
            error.request_id()
        }
    };
    if let Some(id) = request_id {
        span.record("aws.request_id", id);
    }
    result
}

/// Whether an AWS call's error means the service failed (it did not answer, answered 5xx, or
/// throttled), not that it refused this request.
fn dependency_failed<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status();
            status.is_server_error()
                || status.as_u16() == 429
                || matches!(
                    service.err().code(),
                    Some(
                        "ThrottlingException"
                            | "Throttling"
                            | "TooManyRequestsException"
                            | "RequestLimitExceeded"
                            | "ProvisionedThroughputExceededException"
                    )
                )
        }
        _ => true,
    }
}

/// The error with its sources, as the SDK's `DisplayErrorContext` shows it.
pub fn aws_error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

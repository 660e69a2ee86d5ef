//! AWS SDK calls as CLIENT spans (`rpc.system=aws-api`, `rpc.service`, `rpc.method`,
//! `aws.request_id`), so X-Ray shows DynamoDB and Secrets Manager as downstream nodes, and
//! each request carrying its span as `X-Amzn-Trace-Id` ([`TraceHeader`]).

use std::future::Future;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_types::request_id::RequestId;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

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

/// Runs one AWS call inside its span and records the request id and any error.
pub async fn traced<T, E>(
    service: &'static str,
    method: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    T: RequestId,
    E: RequestId + std::error::Error + 'static,
{
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

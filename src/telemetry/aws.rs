//! AWS SDK calls as CLIENT spans (`rpc.system=aws-api`, `rpc.service`, `rpc.method`,
//! `aws.request_id`), so X-Ray shows DynamoDB and Secrets Manager as downstream nodes.

use std::future::Future;

use aws_types::request_id::RequestId;
use tracing::Instrument;
use tracing::field::Empty;

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

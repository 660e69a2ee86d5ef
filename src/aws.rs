//! The AWS SDK configuration shared by every AWS client (Secrets Manager, DynamoDB): region and
//! credentials from the environment (Lambda sets them; `AWS_ENDPOINT_URL` points tests at moto),
//! bounded timeouts and at most two attempts, so a sick AWS endpoint costs seconds, not minutes.
//! Loaded once per process and shared, so every client reuses one credentials provider and one
//! HTTP connection pool. Every client sends its call's span as `X-Amzn-Trace-Id`.

use std::time::Duration;

use tokio::sync::OnceCell;

use crate::telemetry::aws::TraceHeader;

static CONFIG: OnceCell<aws_config::SdkConfig> = OnceCell::const_new();

/// A Secrets Manager client on the shared configuration.
pub async fn secrets_manager() -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::config::Builder::from(sdk_config().await)
        .interceptor(TraceHeader)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// A DynamoDB client on the shared configuration.
pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(sdk_config().await)
        .interceptor(TraceHeader)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

pub async fn sdk_config() -> &'static aws_config::SdkConfig {
    CONFIG.get_or_init(load).await
}

async fn load() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_timeout(Duration::from_secs(3))
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .load()
        .await
}

//! The AWS SDK configuration shared by every AWS client (Secrets Manager, DynamoDB): region and
//! credentials from the environment (Lambda sets them; `AWS_ENDPOINT_URL` points tests at moto),
//! bounded timeouts and at most two attempts, so a sick AWS endpoint costs seconds, not minutes.
//! Loaded once per process and shared, so every client reuses one credentials provider and one
//! HTTP connection pool. Every client sends its call's span as `X-Amzn-Trace-Id`.

use std::time::Duration;

use tokio::sync::OnceCell;

use crate::telemetry::aws::{TraceHeader, aws_error_text, traced};

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

/// `AUTO_CREATE_RESOURCES=true` (development): a DynamoDB table a store creates on its first
/// use when the table is missing, checked once per process. Off, nothing is checked: a
/// deployment's tables come from `template.yaml` or the ECS kit.
#[derive(Debug)]
pub struct AutoCreate {
    enabled: bool,
    done: OnceCell<()>,
}

impl AutoCreate {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            done: OnceCell::new(),
        }
    }

    /// `Ok` once `table` exists (or creation is off); `request` builds the `CreateTable` call
    /// made when `DescribeTable` says it is missing. Another sandbox creating it first counts
    /// as created. Errors are AWS's words ([`crate::telemetry::aws::aws_error_text`]).
    pub async fn ensure<F>(
        &self,
        client: &aws_sdk_dynamodb::Client,
        table: &str,
        what: &'static str,
        request: F,
    ) -> Result<(), String>
    where
        F: FnOnce() -> Result<
            aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder,
            String,
        >,
    {
        if !self.enabled {
            return Ok(());
        }
        self.done
            .get_or_try_init(|| async {
                let described = traced(
                    "DynamoDB",
                    "DescribeTable",
                    client.describe_table().table_name(table).send(),
                )
                .await;
                match described {
                    Ok(_) => return Ok(()),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_resource_not_found_exception()) => {}
                    Err(e) => return Err(aws_error_text(&e)),
                }
                match traced("DynamoDB", "CreateTable", request()?.send()).await {
                    Ok(_) => {
                        tracing::info!(table, "created the {what} table (AUTO_CREATE_RESOURCES)");
                        Ok(())
                    }
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_resource_in_use_exception()) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(aws_error_text(&e)),
                }
            })
            .await
            .map(|_| ())
    }
}

//! The AWS SDK configuration shared by every AWS client (Secrets Manager, DynamoDB): region and
//! credentials from the environment (Lambda sets them; `AWS_ENDPOINT_URL` points tests at moto),
//! bounded timeouts and at most two attempts, so a sick AWS endpoint costs seconds, not minutes.
//! Loaded once per process and shared, so every client reuses one credentials provider and one
//! HTTP connection pool. Every client sends its call's span as `X-Amzn-Trace-Id`. Also the one
//! way a JSON secret is read ([`secret_json`]: the OAuth clients, the process's keys).

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

/// One `GetSecretValue` of a secret holding a JSON object (the OAuth clients, the process's
/// keys), as a CLIENT span X-Ray shows as a Secrets Manager node. Errors say what went wrong
/// without a byte of the secret.
pub async fn secret_json(
    secret_id: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let client = secrets_manager().await;
    let output = traced(
        "SecretsManager",
        "GetSecretValue",
        client.get_secret_value().secret_id(secret_id).send(),
    )
    .await
    .map_err(|e| format!("GetSecretValue failed: {}", aws_error_text(&e)))?;
    let text = output
        .secret_string()
        .ok_or_else(|| "the secret has no SecretString".to_owned())?;
    serde_json::from_str(text).map_err(|_| "the secret is not a JSON object".to_owned())
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

/// The `CreateTable` request of a table keyed by one string attribute `id`, billed on demand:
/// the single-use and attestation tables, as [`AutoCreate`] makes them in development.
pub fn id_keyed_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder, String> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let text = |e: aws_sdk_dynamodb::error::BuildError| aws_error_text(&e);
    Ok(client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .map_err(text)?,
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(text)?,
        ))
}

//! A SAM deployment built in moto as `sam deploy` would leave it: the function with the
//! environment, layer and tracing `template.yaml` gives each `TelemetryTransport`, its role with
//! the X-Ray policy, a stack with the template's telemetry parameters and outputs (its
//! `FunctionLogGroup` created by the stack), and the API double as `ApiUrl`. Each field can be
//! bent into one fault.

use aws_sdk_iam::Client as Iam;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    Architecture, Environment, FunctionCode, Runtime, TracingConfig, TracingMode,
};
use serde_json::{Value, json};

use super::api::{Api, Behaviour, Sink};
use super::{ACCOUNT, REGION, World, secrets};

pub const STACK: &str = "apuntador-backend";
pub const FUNCTION: &str = "apuntador-backend-BackendFunction-Q1W2E3R4";
pub const LOG_GROUP: &str = "/aws/lambda/apuntador-backend-backend";
pub const LAYER: &str = "aws-otel-collector-arm64-ver-0-156-0";

/// AWS's `AWSXRayDaemonWriteAccess` (moto does not load AWS's managed policies, so the tests
/// create it under the account).
pub fn xray_daemon_write_access() -> Value {
    json!({"Version": "2012-10-17", "Statement": [{"Sid": "AWSXRayDaemonWriteAccess", "Effect": "Allow",
        "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets", "xray:GetSamplingStatisticSummaries"],
        "Resource": ["*"]}]})
}

/// The template's two collector configurations (APUNTADOR_COLLECTOR_CONFIG), region filled in.
pub fn collector_config(otlp: bool) -> String {
    if otlp {
        format!(
            r#"{{"extensions":{{"sigv4auth":{{"region":"{REGION}","service":"xray"}}}},"receivers":{{"otlp":{{"protocols":{{"grpc":{{"endpoint":"localhost:4317"}},"http":{{"endpoint":"localhost:4318"}}}}}}}},"exporters":{{"otlphttp":{{"traces_endpoint":"https://xray.{REGION}.amazonaws.com/v1/traces","compression":"gzip","auth":{{"authenticator":"sigv4auth"}}}}}},"service":{{"extensions":["sigv4auth"],"pipelines":{{"traces":{{"receivers":["otlp"],"exporters":["otlphttp"]}}}}}}}}"#
        )
    } else {
        r#"{"receivers":{"otlp":{"protocols":{"grpc":{"endpoint":"localhost:4317"},"http":{"endpoint":"localhost:4318"}}}},"exporters":{"awsxray":{}},"service":{"pipelines":{"traces":{"receivers":["otlp"],"exporters":["awsxray"]}}}}"#.to_owned()
    }
}

/// The role's X-Ray permissions.
#[derive(Debug, Clone)]
pub enum RolePolicy {
    /// `AWSXRayDaemonWriteAccess` attached, as the template does.
    Managed,
    /// Only this inline policy.
    Inline(Value),
    /// The managed policy, under this permissions boundary.
    Bounded(Value),
}

/// One SAM deployment to build.
#[derive(Debug, Clone)]
pub struct SamStack {
    pub transport: &'static str,
    pub collector_exporter: &'static str,
    pub transaction_search: &'static str,
    pub tracing: TracingMode,
    pub layer: Option<String>,
    pub architecture: Architecture,
    pub env: Vec<(String, String)>,
    pub role: RolePolicy,
    pub api: Behaviour,
}

impl SamStack {
    /// What `sam deploy` with `TelemetryTransport=<transport>` and the other parameters at
    /// their defaults leaves (`TransactionSearch=enable` for otlp-xray, which needs it).
    pub fn new(transport: &'static str) -> Self {
        let transaction_search = if transport == "otlp-xray" {
            "enable"
        } else {
            "off"
        };
        let mut stack = Self {
            transport,
            collector_exporter: "auto",
            transaction_search,
            tracing: TracingMode::Active,
            layer: (transport == "collector").then(|| LAYER.to_owned()),
            architecture: Architecture::Arm64,
            env: Vec::new(),
            role: RolePolicy::Managed,
            api: Behaviour::default(),
        };
        let [secret_key, config_api_key, ..] = secrets();
        let exporter = match transport {
            "otlp-udp" => "otlp-udp",
            "daemon" => "xray",
            "none" => "none",
            _ => "otlp",
        };
        let template: Vec<(&str, String)> = vec![
            ("ENVIRONMENT", "production".into()),
            ("SECRET_KEY", secret_key.clone()),
            ("CONFIG_API_KEY", config_api_key.clone()),
            ("ENABLED_CLOUD_PROVIDERS", "googledrive,dropbox".into()),
            ("INFRASTRUCTURE_PROVIDER", "aws".into()),
            (
                "AWS_DYNAMODB_TABLE",
                "apuntador-backend-certificates".into(),
            ),
            ("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true".into()),
            ("OTEL_SERVICE_NAME", "apuntador-backend".into()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=production".into(),
            ),
            ("OTEL_TRACES_EXPORTER", exporter.into()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://localhost:4318".into(),
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000".into()),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on".into()),
            ("OTEL_PROPAGATORS", "xray".into()),
            (
                "OPENTELEMETRY_COLLECTOR_CONFIG_URI",
                "env:APUNTADOR_COLLECTOR_CONFIG".into(),
            ),
            (
                "APUNTADOR_COLLECTOR_CONFIG",
                collector_config(transaction_search != "off"),
            ),
        ];
        for (name, value) in template {
            stack = stack.set(name, &value);
        }
        if transport == "otlp-xray" {
            stack = stack
                .set(
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    &format!("https://xray.{REGION}.amazonaws.com/v1/traces"),
                )
                .set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf");
        }
        stack
    }

    /// Sets (or replaces) a variable of the function's environment.
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn unset(mut self, name: &str) -> Self {
        self.env.retain(|(n, _)| n != name);
        self
    }

    /// Builds it all in moto; the API double serves until the returned value is dropped.
    pub async fn deploy(self, world: &World) -> Api {
        let config = &world.config;
        let iam = Iam::new(config);
        let role_arn = role(&iam, &self.role).await;

        let lambda = aws_sdk_lambda::Client::new(config);
        // An empty zip archive: moto keeps the code's hash and size only.
        let zip = Blob::new(b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec());
        let mut layers = Vec::new();
        if let Some(name) = &self.layer {
            let published = lambda
                .publish_layer_version()
                .layer_name(name)
                .content(
                    aws_sdk_lambda::types::LayerVersionContentInput::builder()
                        .zip_file(zip.clone())
                        .build(),
                )
                .send()
                .await
                .expect("PublishLayerVersion");
            layers.push(published.layer_version_arn().unwrap().to_owned());
        }
        let function = lambda
            .create_function()
            .function_name(FUNCTION)
            .runtime(Runtime::Providedal2023)
            .handler("bootstrap")
            .role(&role_arn)
            .code(FunctionCode::builder().zip_file(zip).build())
            .architectures(self.architecture.clone())
            .tracing_config(TracingConfig::builder().mode(self.tracing.clone()).build())
            .set_layers(Some(layers))
            .environment(
                Environment::builder()
                    .set_variables(Some(self.env.iter().cloned().collect()))
                    .build(),
            )
            .send()
            .await
            .expect("CreateFunction");
        let function_arn = function.function_arn().unwrap().to_owned();

        let api = Api::start(
            self.api.clone(),
            Sink {
                config: config.clone(),
                log_group: LOG_GROUP.to_owned(),
                function_name: FUNCTION.to_owned(),
            },
        )
        .await;

        let parameter = |key: &str, default: &str| json!({"Type": "String", "Default": default, "Description": key});
        let template = json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Parameters": {
                "TelemetryTransport": parameter("TelemetryTransport", "collector"),
                "CollectorExporter": parameter("CollectorExporter", "auto"),
                "TransactionSearch": parameter("TransactionSearch", "off"),
                "CollectorLayerArn": parameter("CollectorLayerArn", ""),
                "SecretKey": {"Type": "String", "NoEcho": true}
            },
            "Resources": {
                "FunctionLogGroup": {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": LOG_GROUP, "RetentionInDays": 30}}
            },
            "Outputs": {
                "ApiUrl": {"Value": api.url},
                "FunctionArn": {"Value": function_arn},
                "CertificateTableName": {"Value": "apuntador-backend-certificates"},
                "FunctionLogGroupName": {"Value": {"Ref": "FunctionLogGroup"}}
            }
        });
        let value = |key: &str, value: &str| {
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key(key)
                .parameter_value(value)
                .build()
        };
        aws_sdk_cloudformation::Client::new(config)
            .create_stack()
            .stack_name(STACK)
            .template_body(template.to_string())
            .parameters(value("TelemetryTransport", self.transport))
            .parameters(value("CollectorExporter", self.collector_exporter))
            .parameters(value("TransactionSearch", self.transaction_search))
            .parameters(value("CollectorLayerArn", ""))
            .parameters(value("SecretKey", &secrets()[4]))
            .send()
            .await
            .expect("CreateStack");
        api
    }
}

/// The function's role with its X-Ray permissions; its ARN.
async fn role(iam: &Iam, policy: &RolePolicy) -> String {
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    let mut create = iam
        .create_role()
        .role_name("apuntador-backend-BackendFunctionRole")
        .assume_role_policy_document(trust.to_string());
    if let RolePolicy::Bounded(boundary) = policy {
        let arn = managed(iam, "apuntador-boundary", boundary).await;
        create = create.permissions_boundary(arn);
    }
    let role = create.send().await.expect("CreateRole");
    let name = role.role().unwrap().role_name().to_owned();
    match policy {
        RolePolicy::Managed | RolePolicy::Bounded(_) => {
            let arn = managed(iam, "AWSXRayDaemonWriteAccess", &xray_daemon_write_access()).await;
            iam.attach_role_policy()
                .role_name(&name)
                .policy_arn(arn)
                .send()
                .await
                .expect("AttachRolePolicy");
        }
        RolePolicy::Inline(document) => {
            iam.put_role_policy()
                .role_name(&name)
                .policy_name("BackendFunctionRolePolicy0")
                .policy_document(document.to_string())
                .send()
                .await
                .expect("PutRolePolicy");
        }
    }
    // The table statement every deployment has besides X-Ray.
    iam.put_role_policy()
        .role_name(&name)
        .policy_name("BackendFunctionRolePolicy1")
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                "Resource": format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/apuntador-backend-certificates")}]})
            .to_string(),
        )
        .send()
        .await
        .expect("PutRolePolicy");
    role.role().unwrap().arn().to_owned()
}

/// A customer-managed policy; its ARN.
pub async fn managed(iam: &Iam, name: &str, document: &Value) -> String {
    iam.create_policy()
        .policy_name(name)
        .policy_document(document.to_string())
        .send()
        .await
        .expect("CreatePolicy")
        .policy()
        .unwrap()
        .arn()
        .unwrap()
        .to_owned()
}

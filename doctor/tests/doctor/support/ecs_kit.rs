//! An ECS deployment built in moto as deploy/ecs leaves it: the task role (its XRaySpans
//! statement), the two log groups, the task definition of `task-definition.json` (backend and
//! `aws-otel-collector` sidecar with its health check, the backend waiting for it HEALTHY; the
//! backend's environment carrying secrets as plain values, which the doctor must never print),
//! the cluster and the service, and a double of ECS's `ListTasks` / `DescribeTasks` answering
//! with the running tasks and their collector's health (moto's tasks have neither the service
//! nor a health status per container), its `DescribeServices` answers amended to count them as
//! running (moto never starts a service's tasks). Each field can be bent into one fault.

use aws_sdk_ecs::types::{
    ContainerCondition, ContainerDefinition, ContainerDependency, HealthCheck, KeyValuePair,
    LogConfiguration, LogDriver,
};
use serde_json::json;

use super::api::{Api, Behaviour, Delivery, Sink};
use super::overlay::Overlay;
use super::{REGION, World, exists_ok, secrets};

pub const CLUSTER: &str = "apuntador-backend";
pub const SERVICE: &str = "apuntador-backend";
pub const BACKEND_LOG_GROUP: &str = "/ecs/apuntador-backend";
pub const COLLECTOR_LOG_GROUP: &str = "/ecs/apuntador-backend/collector";

/// A healthy collector's start-up lines.
pub const QUIET_LINES: [&str; 2] = [
    "2026-12-05T10:00:00.000Z\tinfo\tservice@v0.156.0/service.go:200\tStarting aws-otel-collector...\t{\"Version\": \"v0.49.0\"}",
    "2026-12-05T10:00:00.100Z\tinfo\tservice@v0.156.0/service.go:260\tEverything is ready. Begin running and processing data.",
];

/// What the awsxray exporter logs when the task role may not put segments.
pub const ACCESS_DENIED_LINE: &str = "2026-12-05T10:00:05.000Z\terror\texporterhelper/queue_sender.go:92\tExporting failed. Dropping data.\t{\"kind\": \"exporter\", \"data_type\": \"traces\", \"name\": \"awsxray\", \"error\": \"Permanent error: AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/apuntador-backend-task/4f1c is not authorized to perform: xray:PutTraceSegments\", \"dropped_items\": 3}";

/// One ECS deployment to build.
#[derive(Debug, Clone)]
pub struct EcsService {
    /// With the collector sidecar (telemetry_transport = "collector"), else otlp-xray.
    pub sidecar: bool,
    pub health_check: bool,
    /// The backend's dependsOn condition on the collector (`None`: no dependsOn).
    pub depends_on: Option<ContainerCondition>,
    pub task_role: bool,
    /// The task role grants xray:PutTraceSegments.
    pub xray_allowed: bool,
    /// The sidecar exports with awsxray (the kit's default while transaction_search is "off"),
    /// so the task role also holds xray:PutTelemetryRecords, as iam.tf grants it then.
    pub awsxray_exporter: bool,
    /// The collector's health in each running task.
    pub tasks: Vec<&'static str>,
    /// Lines in the collector's log group (`None`: the group does not exist).
    pub collector_lines: Option<Vec<String>>,
    pub api: Behaviour,
}

impl EcsService {
    /// deploy/ecs with its defaults: two tasks, the sidecar healthy, its log quiet.
    pub fn kit() -> Self {
        Self {
            sidecar: true,
            health_check: true,
            depends_on: Some(ContainerCondition::Healthy),
            task_role: true,
            xray_allowed: true,
            awsxray_exporter: true,
            tasks: vec!["HEALTHY", "HEALTHY"],
            collector_lines: Some(QUIET_LINES.iter().map(|l| (*l).to_owned()).collect()),
            api: Behaviour {
                delivery: Delivery::EcsSegment,
                ..Behaviour::default()
            },
        }
    }

    /// Builds it in moto. Returns the API double (for `--url`), the ECS double and the
    /// environment that points the doctor at it.
    pub async fn deploy(self, world: &World) -> (Api, Overlay) {
        let config = &world.config;
        let iam = aws_sdk_iam::Client::new(config);
        let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
        let role = iam
            .create_role()
            .role_name("apuntador-backend-task")
            .assume_role_policy_document(trust.to_string())
            .send()
            .await
            .expect("CreateRole");
        let role_arn = role.role().unwrap().arn().to_owned();
        let mut statements = vec![
            json!({"Sid": "CertificateTableKnownKeys", "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"], "Resource": "arn:aws:dynamodb:eu-west-1:123456789012:table/apuntador-backend-certificates"}),
        ];
        if self.xray_allowed {
            statements.push(json!({"Sid": "XRaySpans", "Effect": "Allow", "Action": ["xray:PutTraceSegments"], "Resource": ["*"]}));
        }
        if self.sidecar && self.awsxray_exporter {
            statements.push(json!({"Sid": "XRayTelemetryOfTheAwsxrayExporter", "Effect": "Allow", "Action": ["xray:PutTelemetryRecords"], "Resource": ["*"]}));
        }
        iam.put_role_policy()
            .role_name("apuntador-backend-task")
            .policy_name("apuntador-backend-task")
            .policy_document(json!({"Version": "2012-10-17", "Statement": statements}).to_string())
            .send()
            .await
            .expect("PutRolePolicy");

        let logs = aws_sdk_cloudwatchlogs::Client::new(config);
        exists_ok(
            logs.create_log_group()
                .log_group_name(BACKEND_LOG_GROUP)
                .send()
                .await,
        );
        if let Some(lines) = &self.collector_lines {
            exists_ok(
                logs.create_log_group()
                    .log_group_name(COLLECTOR_LOG_GROUP)
                    .send()
                    .await,
            );
            logs.create_log_stream()
                .log_group_name(COLLECTOR_LOG_GROUP)
                .log_stream_name("collector/aws-otel-collector/4f1c")
                .send()
                .await
                .expect("CreateLogStream");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let events: Vec<_> = lines
                .iter()
                .enumerate()
                .map(|(i, line)| {
                    aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                        .timestamp(now - 60_000 + i as i64)
                        .message(line)
                        .build()
                        .unwrap()
                })
                .collect();
            if !events.is_empty() {
                logs.put_log_events()
                    .log_group_name(COLLECTOR_LOG_GROUP)
                    .log_stream_name("collector/aws-otel-collector/4f1c")
                    .set_log_events(Some(events))
                    .send()
                    .await
                    .expect("PutLogEvents");
            }
        }

        let ecs = aws_sdk_ecs::Client::new(config);
        ecs.create_cluster()
            .cluster_name(CLUSTER)
            .send()
            .await
            .expect("CreateCluster");
        let awslogs = |group: &str, prefix: &str| {
            LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .options("awslogs-group", group)
                .options("awslogs-region", REGION)
                .options("awslogs-stream-prefix", prefix)
                .build()
                .unwrap()
        };
        let pair =
            |name: &str, value: &str| KeyValuePair::builder().name(name).value(value).build();
        let [secret_key, config_api_key, ..] = secrets();
        let mut backend = ContainerDefinition::builder()
            .name("backend")
            .image("123456789012.dkr.ecr.eu-west-1.amazonaws.com/apuntador-backend:1.0.41")
            .essential(true)
            .memory(512)
            .environment(pair("ENVIRONMENT", "production"))
            // Plain values here (the kit injects them from Secrets Manager): the doctor must
            // print neither.
            .environment(pair("SECRET_KEY", secret_key))
            .environment(pair("CONFIG_API_KEY", config_api_key))
            .environment(pair("OTEL_SERVICE_NAME", "apuntador-backend"))
            .environment(pair("OTEL_TRACES_EXPORTER", "otlp"))
            .environment(pair("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
            .environment(pair("OTEL_PROPAGATORS", "xray"))
            .health_check(
                HealthCheck::builder()
                    .command("CMD")
                    .command("/apuntador-backend")
                    .command("healthcheck")
                    .build()
                    .unwrap(),
            )
            .log_configuration(awslogs(BACKEND_LOG_GROUP, "backend"));
        if self.sidecar {
            backend = backend
                .environment(pair("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"))
                .environment(pair("OTEL_TRACES_SAMPLER", "xray"))
                .environment(pair(
                    "OTEL_TRACES_SAMPLER_ARG",
                    "endpoint=http://127.0.0.1:2000",
                ));
        } else {
            backend = backend
                .environment(pair(
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    &format!("https://xray.{REGION}.amazonaws.com/v1/traces"),
                ))
                .environment(pair("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"))
                .environment(pair("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"))
                .environment(pair("OTEL_TRACES_SAMPLER_ARG", "1"));
        }
        if let (true, Some(condition)) = (self.sidecar, &self.depends_on) {
            backend = backend.depends_on(
                ContainerDependency::builder()
                    .container_name("aws-otel-collector")
                    .condition(condition.clone())
                    .build()
                    .unwrap(),
            );
        }
        let mut definition = ecs
            .register_task_definition()
            .family("apuntador-backend")
            .container_definitions(backend.build());
        if self.sidecar {
            let mut collector = ContainerDefinition::builder()
                .name("aws-otel-collector")
                .image("public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0@sha256:d2bdfff2c377c3d71d78bd5d9ce9862fd535b12134a5739d87a07801297cf9fd")
                .essential(true)
                .memory(256)
                .command("--config=env:AOT_CONFIG_CONTENT")
                .environment(pair("AWS_REGION", REGION))
                .log_configuration(awslogs(COLLECTOR_LOG_GROUP, "collector"));
            if self.health_check {
                collector = collector.health_check(
                    HealthCheck::builder()
                        .command("CMD")
                        .command("/healthcheck")
                        .interval(10)
                        .timeout(5)
                        .retries(3)
                        .start_period(10)
                        .build()
                        .unwrap(),
                );
            }
            definition = definition.container_definitions(collector.build());
        }
        if self.task_role {
            definition = definition.task_role_arn(&role_arn);
        }
        let registered = definition.send().await.expect("RegisterTaskDefinition");
        let arn = registered
            .task_definition()
            .and_then(|d| d.task_definition_arn())
            .unwrap()
            .to_owned();
        ecs.create_service()
            .cluster(CLUSTER)
            .service_name(SERVICE)
            .task_definition(&arn)
            .desired_count(self.tasks.len().max(1) as i32)
            .send()
            .await
            .expect("CreateService");

        let tasks = self.tasks.clone();
        let running = self.tasks.len();
        let sidecar = self.sidecar;
        let ecs_double = Overlay::start(
            &world.moto,
            Box::new(move |_path, headers| {
                let target = headers.get("x-amz-target")?.to_str().ok()?;
                let arns: Vec<String> = (0..tasks.len())
                    .map(|i| format!("arn:aws:ecs:{REGION}:123456789012:task/{CLUSTER}/0f1e2d3c4b5a6978{i:08x}"))
                    .collect();
                if target.ends_with(".ListTasks") {
                    return Some((200, json!({"taskArns": arns}).to_string()));
                }
                if target.ends_with(".DescribeTasks") {
                    let described: Vec<_> = arns
                        .iter()
                        .zip(&tasks)
                        .map(|(arn, health)| {
                            let mut containers = vec![json!({"name": "backend", "lastStatus": "RUNNING", "healthStatus": "HEALTHY"})];
                            if sidecar {
                                containers.push(json!({"name": "aws-otel-collector", "lastStatus": "RUNNING", "healthStatus": health}));
                            }
                            json!({"taskArn": arn, "lastStatus": "RUNNING", "desiredStatus": "RUNNING", "containers": containers})
                        })
                        .collect();
                    return Some((200, json!({"tasks": described, "failures": []}).to_string()));
                }
                None
            }),
            Some(Box::new(move |headers, body| {
                let describes = headers
                    .get("x-amz-target")
                    .and_then(|t| t.to_str().ok())
                    .is_some_and(|t| t.ends_with(".DescribeServices"));
                let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    return body;
                };
                if !describes {
                    return body;
                }
                if let Some(services) = answer["services"].as_array_mut() {
                    for service in services {
                        service["runningCount"] = json!(running);
                    }
                }
                answer.to_string().into_bytes()
            })),
            "application/x-amz-json-1.1",
        )
        .await;

        let api = Api::start(
            self.api.clone(),
            Sink {
                config: config.clone(),
                log_group: BACKEND_LOG_GROUP.to_owned(),
                function_name: "unused".to_owned(),
            },
        )
        .await;
        (api, ecs_double)
    }
}

//! `doctor --cluster --service`: the order of the checks for the ECS deployment (deploy/ecs).
//! The service and its task definition first, then the collector sidecar (health check, the
//! backend waiting for it, its health in the running tasks), the backend's telemetry variables,
//! the task role, Transaction Search, the collector's export errors, and with `--url` the live
//! request.

use aws_config::{Region, SdkConfig};

use crate::cli::Options;
use crate::collector_logs;
use crate::ecs_service;
use crate::iam;
use crate::live::{self, Live, Platform};
use crate::report::{Check, Report, TargetInfo};
use crate::task_definition;
use crate::transaction_search;

/// Where the kit grants the task role its X-Ray action (for the role check's fix).
const GRANT: &str = "deploy/ecs/terraform/iam.tf's XRaySpans statement (terraform apply)";

const TURN_ON: &str =
    "Terraform variable transaction_search = \"enable\" (this configuration then owns it)";

pub async fn run(options: &Options, cluster: &str, service: &str, config: &SdkConfig) -> Report {
    let region = crate::aws::region(config);
    let mut report = Report::new(TargetInfo::Ecs {
        cluster: cluster.to_owned(),
        service: service.to_owned(),
        region: region.clone(),
    });
    let ecs = aws_sdk_ecs::Client::new(config);
    let found = match ecs_service::read_service(&ecs, cluster, service, &region).await {
        Ok(found) => found,
        Err(check) => {
            report.push(check);
            return report;
        }
    };
    report.push(ecs_service::service_check(&found));
    let definition = match ecs_service::read_task_definition(&ecs, &found.task_definition).await {
        Ok(definition) => definition,
        Err(failure) => {
            report.push(Check::fail(
                "task_definition",
                format!("could not read {}: {failure}", found.task_definition),
                crate::aws::doctor_fix(&failure, "ecs:DescribeTaskDefinition"),
            ));
            return report;
        }
    };
    if let Some(backend) = definition.backend() {
        report.set_telemetry_environment(backend.env.printable());
    }
    let collector = definition.collector().cloned();
    report.extend(task_definition::collector_checks(&definition));
    if let Some(collector) = &collector {
        report.push(
            match ecs_service::running_tasks(&ecs, cluster, service, &collector.name).await {
                Ok(tasks) => task_definition::running_check(&tasks, &collector.name),
                Err(failure) => Check::fail(
                    "collector.running",
                    format!("could not read the running tasks: {failure}"),
                    crate::aws::doctor_fix(&failure, "ecs:ListTasks and ecs:DescribeTasks"),
                ),
            },
        );
    } else {
        report.push(Check::skip(
            "collector",
            "no collector sidecar in the task definition",
        ));
    }
    report.extend(task_definition::backend_checks(&definition, &region));

    let iam_client = aws_sdk_iam::Client::new(config);
    let (role_check, policies) = match definition.task_role.as_deref() {
        Some(role) => iam::check(&iam_client, "task_role.xray", "the task role", role, GRANT).await,
        None => (
            Check::fail(
                "task_role.xray",
                "the task definition has no task role: no container can call X-Ray",
                "set taskRoleArn (deploy/ecs/terraform/iam.tf's task role)",
            ),
            None,
        ),
    };
    report.push(role_check);
    // deploy/ecs grants xray:PutTelemetryRecords only when the sidecar exports with awsxray.
    let awsxray_granted = policies
        .as_ref()
        .is_some_and(|p| iam::allows(p, "xray:PutTelemetryRecords"));

    let xray = aws_sdk_xray::Client::new(config);
    let destination = transaction_search::read(&xray).await;
    report.push(transaction_search::check(
        &destination,
        &task_definition::transaction_search_need(&definition, awsxray_granted),
        TURN_ON,
    ));

    if let Some(collector) = &collector {
        report.push(match &collector.log_group {
            Some((group, group_region)) => {
                let logs = logs_client(config, group_region.as_deref());
                collector_logs::check(&logs, group, options.since).await
            }
            None => Check::warn(
                "collector.export_errors",
                "the collector does not log to CloudWatch Logs (no awslogs driver): its export errors are not checked",
                "give it the awslogs driver (deploy/ecs/task-definition.json)",
            ),
        });
    }

    let Some(url) = options.url.as_deref() else {
        report.push(Check::skip(
            "request",
            "no --url: pass the API's URL to send one request and follow its trace and log lines",
        ));
        return report;
    };
    let backend = definition.backend();
    let (group, group_region) = backend
        .and_then(|b| b.log_group.clone())
        .map_or((None, None), |(g, r)| (Some(g), r));
    let logs = logs_client(config, group_region.as_deref());
    let (checks, trace_id) = live::run(Live {
        url,
        xray: &xray,
        logs: &logs,
        log_group: group.as_deref(),
        spans: destination.is_active(),
        service: backend.map_or("apuntador-backend", |b| b.env.service_name()),
        timeout: options.timeout,
        platform: Platform::Ecs,
    })
    .await;
    if let Some(trace_id) = trace_id {
        report.set_trace_id(trace_id.as_str());
    }
    report.extend(checks);
    report
}

/// A CloudWatch Logs client for `region` (a container's awslogs-region), else the run's.
fn logs_client(config: &SdkConfig, region: Option<&str>) -> aws_sdk_cloudwatchlogs::Client {
    match region {
        Some(region) if config.region().map(|r| r.as_ref()) != Some(region) => {
            let conf = aws_sdk_cloudwatchlogs::config::Builder::from(config)
                .region(Region::new(region.to_owned()))
                .build();
            aws_sdk_cloudwatchlogs::Client::from_conf(conf)
        }
        _ => aws_sdk_cloudwatchlogs::Client::new(config),
    }
}

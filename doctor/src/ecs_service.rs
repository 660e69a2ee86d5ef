//! Reading an ECS deployment: the service (`DescribeServices`), its task definition
//! (`DescribeTaskDefinition`, kept as `task_definition`'s plain values, telemetry variables
//! only) and its running tasks with the collector's health (`ListTasks`, `DescribeTasks`).

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::DesiredStatus;

use crate::aws::{AwsFailure, doctor_fix};
use crate::report::Check;
use crate::task_definition::{Container, RunningTask, TaskDefinition};
use crate::telemetry_env::TelemetryEnv;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub status: String,
    pub desired: i32,
    pub running: i32,
    pub task_definition: String,
}

/// The service, or the failing check that ends a run.
pub async fn read_service(
    client: &Client,
    cluster: &str,
    service: &str,
    region: &str,
) -> Result<Service, Check> {
    let out = client
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .map_err(|e| {
            let failure = AwsFailure::from_sdk(&e);
            if failure.is("ClusterNotFoundException") {
                Check::fail(
                    "service",
                    format!("no cluster {cluster} in {region}"),
                    "check --cluster and --region (terraform output cluster_name)",
                )
            } else {
                Check::fail(
                    "service",
                    format!("could not read service {service}: {failure}"),
                    doctor_fix(&failure, "ecs:DescribeServices"),
                )
            }
        })?;
    let Some(found) = out.services().first() else {
        return Err(Check::fail(
            "service",
            format!("no service {service} in cluster {cluster} ({region})"),
            "check --service (terraform output service_name) and --cluster",
        ));
    };
    Ok(Service {
        status: found.status().unwrap_or_default().to_owned(),
        desired: found.desired_count(),
        running: found.running_count(),
        task_definition: found.task_definition().unwrap_or_default().to_owned(),
    })
}

pub fn service_check(service: &Service) -> Check {
    let family = service
        .task_definition
        .rsplit('/')
        .next()
        .unwrap_or(&service.task_definition);
    if service.status != "ACTIVE" {
        return Check::fail(
            "service",
            format!("the service is {}, not ACTIVE", service.status),
            "create or update the service (terraform apply)",
        );
    }
    if service.running < service.desired {
        return Check::warn(
            "service",
            format!(
                "ACTIVE, {} of {} task(s) running, task definition {family}",
                service.running, service.desired
            ),
            "a deployment is under way or tasks keep stopping: describe-services' events and the stopped tasks' stoppedReason say which",
        );
    }
    Check::pass(
        "service",
        format!(
            "ACTIVE, {} of {} task(s) running, task definition {family}",
            service.running, service.desired
        ),
    )
}

pub async fn read_task_definition(
    client: &Client,
    arn: &str,
) -> Result<TaskDefinition, AwsFailure> {
    let out = client
        .describe_task_definition()
        .task_definition(arn)
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk(&e))?;
    let Some(definition) = out.task_definition() else {
        return Ok(TaskDefinition {
            arn: arn.to_owned(),
            ..TaskDefinition::default()
        });
    };
    let containers = definition
        .container_definitions()
        .iter()
        .map(|c| Container {
            name: c.name().unwrap_or_default().to_owned(),
            image: c.image().unwrap_or_default().to_owned(),
            essential: c.essential().unwrap_or(true),
            health_check: c
                .health_check()
                .map(|h| h.command().to_vec())
                .unwrap_or_default(),
            depends_on: c
                .depends_on()
                .iter()
                .map(|d| {
                    (
                        d.container_name().to_owned(),
                        d.condition().as_str().to_owned(),
                    )
                })
                .collect(),
            env: TelemetryEnv::pick(
                c.environment()
                    .iter()
                    .filter_map(|kv| Some((kv.name()?, kv.value()?))),
            ),
            log_group: c.log_configuration().and_then(|l| {
                if l.log_driver().as_str() != "awslogs" {
                    return None;
                }
                let options = l.options()?;
                Some((
                    options.get("awslogs-group")?.clone(),
                    options.get("awslogs-region").cloned(),
                ))
            }),
        })
        .collect();
    Ok(TaskDefinition {
        arn: definition.task_definition_arn().unwrap_or(arn).to_owned(),
        task_role: definition.task_role_arn().map(str::to_owned),
        containers,
    })
}

/// The service's running tasks and the named container's health in each.
pub async fn running_tasks(
    client: &Client,
    cluster: &str,
    service: &str,
    collector: &str,
) -> Result<Vec<RunningTask>, AwsFailure> {
    let mut arns = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_tasks()
            .cluster(cluster)
            .service_name(service)
            .desired_status(DesiredStatus::Running)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk(&e))?;
        arns.extend(page.task_arns().iter().cloned());
        token = page.next_token().map(str::to_owned);
        if token.is_none() || arns.len() >= 100 {
            break;
        }
    }
    let mut tasks = Vec::new();
    // DescribeTasks takes at most 100 tasks.
    for chunk in arns.chunks(100) {
        let out = client
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk(&e))?;
        for task in out.tasks() {
            let arn = task.task_arn().unwrap_or_default();
            tasks.push(RunningTask {
                id: arn.rsplit('/').next().unwrap_or(arn).to_owned(),
                collector_health: task
                    .containers()
                    .iter()
                    .find(|c| c.name() == Some(collector))
                    .map(|c| {
                        c.health_status()
                            .map_or("UNKNOWN", |h| h.as_str())
                            .to_owned()
                    }),
            });
        }
    }
    Ok(tasks)
}

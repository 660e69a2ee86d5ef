//! `doctor --cluster --service` against the ECS kit's deployment in moto: the healthy service
//! (with `--url`, its trace and log lines), the otlp-xray layout, and one test per fault.

use aws_sdk_ecs::types::ContainerCondition;
use serde_json::json;

use crate::support::ecs_kit::{
    ACCESS_DENIED_LINE, BACKEND_LOG_GROUP, CLUSTER, COLLECTOR_LOG_GROUP, EcsService, SERVICE,
};
use crate::support::{Destination, REGION, World, text};

/// Runs the doctor (JSON) against the deployment, with `extra` arguments.
async fn doctor(
    world: &World,
    service: EcsService,
    extra: &[&str],
) -> (crate::support::Outcome, Vec<String>) {
    let (api, ecs) = service.deploy(world).await;
    let mut args = vec![
        "--cluster",
        CLUSTER,
        "--service",
        SERVICE,
        "--region",
        REGION,
        "--json",
        "--timeout",
        "10",
    ];
    let url = api.url.clone();
    if extra.contains(&"--url") {
        args.extend(["--url", url.as_str()]);
    }
    args.extend(extra.iter().copied().filter(|a| *a != "--url"));
    let out = world
        .doctor_with(&args, &[("AWS_ENDPOINT_URL_ECS", ecs.url.as_str())])
        .await;
    (out, api.trace_ids())
}

/// Deploys `service`, runs the doctor (JSON, with `extra`) and returns the one check that
/// failed, which must be `id` (exit status 1); `None` outside scripts/test.sh.
async fn single_fault(service: EcsService, extra: &[&str], id: &str) -> Option<serde_json::Value> {
    let world = World::start().await?;
    let (out, _) = doctor(&world, service, extra).await;
    Some(out.only_failure(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kits_healthy_service_passes_and_its_request_is_followed() {
    let Some(world) = World::start().await else {
        return;
    };
    let (out, trace_ids) = doctor(&world, EcsService::kit(), &["--url"]).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    let trace_id = trace_ids.last().unwrap();
    let report = out.json();
    assert_eq!(
        report["target"],
        json!({"kind": "ecs", "cluster": CLUSTER, "service": SERVICE, "region": REGION})
    );
    assert_eq!(report["trace_id"], trace_id.as_str());
    assert_eq!(
        out.statuses(),
        [
            "service",
            "collector.health_check",
            "collector.gates_app",
            "collector.running",
            "backend.environment",
            "task_role.xray",
            "transaction_search",
            "collector.export_errors",
            "request",
            "trace",
            "logs",
        ]
        .iter()
        .zip([
            "pass", "pass", "pass", "pass", "pass", "pass", "skip", "pass", "pass", "pass", "pass"
        ])
        .map(|(id, status)| ((*id).to_owned(), status.to_owned()))
        .collect::<Vec<_>>(),
        "{}",
        out.stdout
    );
    assert_eq!(
        text(&out.check("service"), "summary"),
        "ACTIVE, 2 of 2 task(s) running, task definition apuntador-backend:1"
    );
    assert_eq!(
        text(&out.check("collector.gates_app"), "summary"),
        "backend starts once aws-otel-collector is HEALTHY"
    );
    assert_eq!(
        text(&out.check("collector.running"), "summary"),
        "aws-otel-collector is HEALTHY in all 2 running task(s)"
    );
    assert_eq!(
        text(&out.check("collector.export_errors"), "summary"),
        format!("no export error in {COLLECTOR_LOG_GROUP} in the last 15 minutes")
    );
    assert_eq!(
        text(&out.check("logs"), "summary"),
        format!("1 log line(s) with trace_id {trace_id} in {BACKEND_LOG_GROUP}")
    );
    // The kit grants PutTelemetryRecords for the awsxray exporter only: Transaction Search is
    // then not needed, and the inference is said.
    assert!(
        text(&out.check("transaction_search"), "summary")
            .starts_with("off (destination XRay); the task role holds xray:PutTelemetryRecords"),
        "{}",
        out.stdout
    );
    assert_eq!(
        report["telemetry_environment"]["OTEL_TRACES_SAMPLER"],
        "xray"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_url_no_request_is_sent() {
    let Some(world) = World::start().await else {
        return;
    };
    world.set_destination(Destination::Active);
    let (out, trace_ids) = doctor(&world, EcsService::kit(), &[]).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(trace_ids.is_empty());
    assert_eq!(out.status("request"), "skip");
    assert_eq!(out.status("transaction_search"), "pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_xray_layout_needs_transaction_search() {
    let Some(world) = World::start().await else {
        return;
    };
    let service = EcsService {
        sidecar: false,
        ..EcsService::kit()
    };
    let (out, _) = doctor(&world, service, &[]).await;
    assert_eq!(
        text(&out.check("backend.environment"), "summary"),
        "the backend signs OTLP/HTTP with the task role to X-Ray's OTLP endpoint in eu-west-1"
    );
    let check = out.only_failure("transaction_search");
    assert!(
        text(&check, "fix").starts_with(
            "enable Transaction Search: Terraform variable transaction_search = \"enable\""
        ),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_without_a_health_check_fails() {
    let service = EcsService {
        health_check: false,
        ..EcsService::kit()
    };
    let Some(check) = single_fault(service, &[], "collector.health_check").await else {
        return;
    };
    assert!(
        text(&check, "fix")
            .starts_with("add \"healthCheck\": {\"command\": [\"CMD\", \"/healthcheck\"]"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_only_waits_for_the_collector_to_start_fails() {
    let service = EcsService {
        depends_on: Some(ContainerCondition::Start),
        ..EcsService::kit()
    };
    let Some(check) = single_fault(service, &[], "collector.gates_app").await else {
        return;
    };
    assert_eq!(
        text(&check, "summary"),
        "backend waits for aws-otel-collector to be START, not HEALTHY: its first spans can race the collector's start and be lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_does_not_wait_for_the_collector_fails() {
    let service = EcsService {
        depends_on: None,
        ..EcsService::kit()
    };
    let Some(check) = single_fault(service, &[], "collector.gates_app").await else {
        return;
    };
    assert_eq!(
        text(&check, "fix"),
        "add {\"containerName\": \"aws-otel-collector\", \"condition\": \"HEALTHY\"} to backend's dependsOn (deploy/ecs/task-definition.json)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_collector_in_a_running_task_fails() {
    let service = EcsService {
        tasks: vec!["HEALTHY", "UNHEALTHY"],
        ..EcsService::kit()
    };
    let Some(check) = single_fault(service, &[], "collector.running").await else {
        return;
    };
    assert!(
        text(&check, "summary").starts_with(
            "aws-otel-collector is UNHEALTHY in 1 of 2 running task(s): 0f1e2d3c4b5a697800000001"
        ),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_running_tasks_fails() {
    let Some(world) = World::start().await else {
        return;
    };
    let service = EcsService {
        tasks: Vec::new(),
        ..EcsService::kit()
    };
    let (out, _) = doctor(&world, service, &[]).await;
    // One desired task, none running: the service says so too, as a warning.
    assert_eq!(out.status("service"), "warn");
    let check = out.only_failure("collector.running");
    assert_eq!(text(&check, "summary"), "the service has no running task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_role_without_put_trace_segments_fails() {
    let service = EcsService {
        xray_allowed: false,
        ..EcsService::kit()
    };
    let Some(check) = single_fault(service, &[], "task_role.xray").await else {
        return;
    };
    assert_eq!(
        text(&check, "fix"),
        "add xray:PutTraceSegments (Resource \"*\") to the role: deploy/ecs/terraform/iam.tf's XRaySpans statement (terraform apply)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_definition_without_a_task_role_fails() {
    let service = EcsService {
        task_role: false,
        ..EcsService::kit()
    };
    let Some(check) = single_fault(service, &[], "task_role.xray").await else {
        return;
    };
    assert_eq!(
        text(&check, "summary"),
        "the task definition has no task role: no container can call X-Ray"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_errors_in_the_collectors_log_fail_with_the_task_role_fix() {
    let Some(world) = World::start().await else {
        return;
    };
    let mut lines: Vec<String> = EcsService::kit().collector_lines.unwrap();
    lines.push(ACCESS_DENIED_LINE.to_owned());
    let service = EcsService {
        collector_lines: Some(lines),
        ..EcsService::kit()
    };
    let (out, _) = doctor(&world, service, &["--since-minutes", "5"]).await;
    let check = out.only_failure("collector.export_errors");
    assert!(
        text(&check, "summary").starts_with(&format!("1 export error line(s) in {COLLECTOR_LOG_GROUP} in the last 5 minutes (AccessDeniedException ×1); the newest 1 min ago")),
        "{check}"
    );
    assert_eq!(
        text(&check, "fix"),
        "give the task role xray:PutTraceSegments (deploy/ecs/terraform/iam.tf's XRaySpans statement)"
    );
    assert!(text(&check, "detail").starts_with(&format!(
        "aws logs filter-log-events --log-group-name {COLLECTOR_LOG_GROUP}"
    )));
    // The line itself is not quoted (an error can quote what was signed).
    assert!(
        !out.stdout
            .contains("assumed-role/apuntador-backend-task/4f1c"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_collector_log_group_fails() {
    let service = EcsService {
        collector_lines: None,
        ..EcsService::kit()
    };
    let Some(check) = single_fault(service, &[], "collector.export_errors").await else {
        return;
    };
    assert_eq!(
        text(&check, "summary"),
        format!(
            "the collector's log group {COLLECTOR_LOG_GROUP} does not exist: its errors are nowhere"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_does_not_exist_fails_at_once() {
    let Some(world) = World::start().await else {
        return;
    };
    let (_api, ecs) = EcsService::kit().deploy(&world).await;
    let out = world
        .doctor_with(
            &[
                "--cluster",
                CLUSTER,
                "--service",
                "nope",
                "--region",
                REGION,
                "--json",
            ],
            &[("AWS_ENDPOINT_URL_ECS", ecs.url.as_str())],
        )
        .await;
    let check = out.only_failure("service");
    assert!(
        text(&check, "summary").starts_with("no service nope in cluster apuntador-backend"),
        "{check}"
    );
    assert_eq!(out.statuses().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_may_export_to_the_otlp_endpoint_without_transaction_search_is_a_warning() {
    let Some(world) = World::start().await else {
        return;
    };
    // No PutTelemetryRecords: the kit's collector.yaml (otlphttp), whose spans X-Ray refuses
    // while Transaction Search is off; the doctor cannot read the exporter, so it warns.
    let service = EcsService {
        awsxray_exporter: false,
        ..EcsService::kit()
    };
    let (out, _) = doctor(&world, service, &[]).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    let check = out.check("transaction_search");
    assert_eq!(check["status"], "warn");
    assert!(
        text(&check, "fix").starts_with("if the collector exports with otlphttp to X-Ray's OTLP endpoint, enable Transaction Search: Terraform variable transaction_search = \"enable\""),
        "{check}"
    );
}

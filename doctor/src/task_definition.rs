//! An ECS task definition as the doctor judges it (plain values read from the ECS API): the
//! collector sidecar (`aws-otel-collector`, deploy/ecs) with a health check that gates the
//! backend (`dependsOn` HEALTHY), the backend's telemetry variables against the sidecar's
//! presence, and the running tasks' view of the sidecar's health. Pure functions, so each rule
//! is tested without ECS.

use crate::report::Check;
use crate::telemetry_env::{TelemetryEnv, Transport, host_port, is_loopback, redact_urls};
use crate::transaction_search::Need;

/// The sidecar's container name in deploy/ecs.
pub const COLLECTOR: &str = "aws-otel-collector";

/// What the doctor keeps of one container definition (telemetry variables only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub essential: bool,
    /// The health check's command, empty without one.
    pub health_check: Vec<String>,
    /// (container, condition) pairs.
    pub depends_on: Vec<(String, String)>,
    pub env: TelemetryEnv,
    /// The awslogs driver's group and region.
    pub log_group: Option<(String, Option<String>)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskDefinition {
    pub arn: String,
    pub task_role: Option<String>,
    pub containers: Vec<Container>,
}

/// A running task as `DescribeTasks` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningTask {
    pub id: String,
    /// The collector container's health status (`HEALTHY`, `UNHEALTHY`, `UNKNOWN`), if the task
    /// has the container.
    pub collector_health: Option<String>,
}

impl TaskDefinition {
    /// The collector sidecar: the container named `aws-otel-collector`, or one running an ADOT
    /// collector image.
    pub fn collector(&self) -> Option<&Container> {
        self.containers
            .iter()
            .find(|c| c.name == COLLECTOR)
            .or_else(|| {
                self.containers
                    .iter()
                    .find(|c| c.image.contains("aws-otel-collector"))
            })
    }

    /// The backend: `backend`, else the first essential container that is not the collector.
    pub fn backend(&self) -> Option<&Container> {
        let collector = self.collector().map(|c| c.name.as_str());
        self.containers
            .iter()
            .find(|c| c.name == "backend")
            .or_else(|| {
                self.containers
                    .iter()
                    .find(|c| c.essential && Some(c.name.as_str()) != collector)
            })
    }
}

/// The sidecar's own health check, and whether it gates the backend's start.
pub fn collector_checks(definition: &TaskDefinition) -> Vec<Check> {
    let Some(collector) = definition.collector() else {
        return Vec::new();
    };
    let name = &collector.name;
    let mut checks = Vec::new();
    if collector.health_check.is_empty() {
        checks.push(Check::fail(
            "collector.health_check",
            format!("the collector container {name} has no health check: ECS cannot tell when it is ready, and nothing can wait for it"),
            format!("add \"healthCheck\": {{\"command\": [\"CMD\", \"/healthcheck\"], \"interval\": 10, \"timeout\": 5, \"retries\": 3, \"startPeriod\": 10}} to {name} (deploy/ecs/task-definition.json), with the health_check extension in its configuration"),
        ));
    } else {
        checks.push(Check::pass(
            "collector.health_check",
            format!(
                "{name} has a health check ({})",
                collector.health_check.join(" ")
            ),
        ));
    }
    let Some(backend) = definition.backend() else {
        checks.push(Check::fail(
            "collector.gates_app",
            "no backend container besides the collector",
            "register the task definition of deploy/ecs (a backend container and the sidecar)",
        ));
        return checks;
    };
    let condition = backend
        .depends_on
        .iter()
        .find(|(container, _)| container == name)
        .map(|(_, condition)| condition.as_str());
    let fix = format!(
        "add {{\"containerName\": \"{name}\", \"condition\": \"HEALTHY\"}} to {}'s dependsOn (deploy/ecs/task-definition.json)",
        backend.name
    );
    checks.push(match condition {
        Some("HEALTHY") => Check::pass(
            "collector.gates_app",
            format!("{} starts once {name} is HEALTHY", backend.name),
        ),
        Some(other) => Check::fail(
            "collector.gates_app",
            format!("{} waits for {name} to be {other}, not HEALTHY: its first spans can race the collector's start and be lost", backend.name),
            fix,
        ),
        None => Check::fail(
            "collector.gates_app",
            format!("{} does not wait for {name}: its first spans can race the collector's start and be lost", backend.name),
            fix,
        ),
    });
    checks
}

/// The backend's telemetry variables against the task's layout (`region`: the service's).
pub fn backend_checks(definition: &TaskDefinition, region: &str) -> Vec<Check> {
    let Some(backend) = definition.backend() else {
        return vec![Check::fail(
            "backend.environment",
            "the task definition has no backend container",
            "register the task definition of deploy/ecs",
        )];
    };
    let env = &backend.env;
    let sidecar = definition.collector().is_some();
    let mut checks: Vec<Check> = env.sampler_check(false).into_iter().collect();
    let transport = env.transport();
    let endpoint = env.traces_endpoint();
    let id = "backend.environment";
    let check = match (&transport, sidecar) {
        (Transport::Collector, _) => {
            let local = host_port(&endpoint).is_some_and(|(host, _)| is_loopback(&host));
            match (local, sidecar) {
                (true, true) => Check::pass(
                    id,
                    format!(
                        "the backend sends OTLP ({}) to the sidecar on {}",
                        env.protocol(),
                        redact_urls(&endpoint)
                    ),
                ),
                (false, true) => Check::fail(
                    id,
                    format!(
                        "the backend sends spans to {}, not to the sidecar on localhost",
                        redact_urls(&endpoint)
                    ),
                    "set OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 on the backend (deploy/ecs/task-definition.json)",
                ),
                (true, false) => Check::fail(
                    id,
                    format!(
                        "the backend sends OTLP to {} but the task has no collector sidecar",
                        redact_urls(&endpoint)
                    ),
                    "add the sidecar (telemetry_transport = \"collector\") or send to X-Ray's OTLP endpoint (telemetry_transport = \"otlp-xray\")",
                ),
                (false, false) => Check::warn(
                    id,
                    format!(
                        "the backend sends spans to {}, a collector outside the task that doctor does not check",
                        redact_urls(&endpoint)
                    ),
                    "check that collector's own logs for export errors",
                ),
            }
        }
        (Transport::OtlpXray { region: to }, _) if to != region => Check::fail(
            id,
            format!("the backend sends spans to X-Ray in {to}, but the service runs in {region}"),
            format!(
                "set OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=https://xray.{region}.amazonaws.com/v1/traces"
            ),
        ),
        (Transport::OtlpXray { .. }, _) if env.protocol() != "http/protobuf" => Check::fail(
            id,
            format!(
                "OTLP protocol {}: X-Ray's OTLP endpoint takes http/protobuf only",
                env.protocol()
            ),
            "set OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf",
        ),
        (Transport::OtlpXray { region: to }, true) => Check::warn(
            id,
            format!(
                "the backend signs its spans to X-Ray in {to} itself: the collector sidecar gets none"
            ),
            "drop the sidecar (telemetry_transport = \"otlp-xray\") or point the backend at it (telemetry_transport = \"collector\")",
        ),
        (Transport::OtlpXray { region: to }, false) => Check::pass(
            id,
            format!(
                "the backend signs OTLP/HTTP with the task role to X-Ray's OTLP endpoint in {to}"
            ),
        ),
        (Transport::OtlpUdp | Transport::Daemon, _) => Check::fail(
            id,
            format!(
                "OTEL_TRACES_EXPORTER={}: UDP to an X-Ray daemon, which ECS does not run",
                env.get("OTEL_TRACES_EXPORTER").unwrap_or_default()
            ),
            "use the collector sidecar (telemetry_transport = \"collector\") or otlp-xray",
        ),
        (Transport::None | Transport::Console | Transport::Unknown(_), _) => Check::fail(
            id,
            format!(
                "OTEL_TRACES_EXPORTER={}: the backend exports no span to X-Ray",
                env.get("OTEL_TRACES_EXPORTER").unwrap_or_default()
            ),
            "set OTEL_TRACES_EXPORTER=otlp (deploy/ecs/task-definition.json)",
        ),
    };
    checks.push(check);
    checks
}

/// Whether Transaction Search is needed: always with otlp-xray; with the sidecar it depends on
/// the collector's exporter, which lives in an SSM parameter the doctor does not read. deploy/ecs
/// grants the task role `xray:PutTelemetryRecords` only when the sidecar exports with awsxray
/// (`awsxray_granted`), which is taken as the sign of that exporter, and said to be inferred.
pub fn transaction_search_need(definition: &TaskDefinition, awsxray_granted: bool) -> Need {
    let transport = definition.backend().map(|b| b.env.transport());
    match (transport, definition.collector().is_some()) {
        (Some(Transport::OtlpXray { .. }), _) => Need::Required(
            "the backend sends to X-Ray's OTLP endpoint (telemetry_transport = \"otlp-xray\")"
                .to_owned(),
        ),
        (_, true) if awsxray_granted => Need::NotNeeded(
            "the task role holds xray:PutTelemetryRecords, which deploy/ecs grants only for the sidecar's awsxray exporter (collector.awsxray.yaml), which does not need it (inferred: the exporter itself is in the SSM parameter)".to_owned(),
        ),
        (_, true) => Need::Unknown(
            "the sidecar's exporter is in its SSM parameter, which doctor does not read: collector.yaml (otlphttp) needs it, collector.awsxray.yaml does not".to_owned(),
        ),
        _ => Need::NotNeeded("nothing here sends to X-Ray's OTLP endpoint".to_owned()),
    }
}

/// The sidecar's health in the running tasks.
pub fn running_check(tasks: &[RunningTask], collector: &str) -> Check {
    let id = "collector.running";
    if tasks.is_empty() {
        return Check::fail(
            id,
            "the service has no running task",
            "aws ecs describe-tasks --tasks <id> --query 'tasks[0].stoppedReason' on a stopped task says why (a secret or the SSM parameter unreadable, an image not pulled, the collector never healthy)",
        );
    }
    let unhealthy: Vec<&RunningTask> = tasks
        .iter()
        .filter(|t| t.collector_health.as_deref() == Some("UNHEALTHY"))
        .collect();
    let unknown: Vec<&RunningTask> = tasks
        .iter()
        .filter(|t| {
            t.collector_health.as_deref() != Some("HEALTHY")
                && t.collector_health.as_deref() != Some("UNHEALTHY")
        })
        .collect();
    let ids = |list: &[&RunningTask]| {
        list.iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !unhealthy.is_empty() {
        Check::fail(
            id,
            format!(
                "{collector} is UNHEALTHY in {} of {} running task(s): {}",
                unhealthy.len(),
                tasks.len(),
                ids(&unhealthy)
            ),
            "read the collector's log group (its configuration, AOT_CONFIG_CONTENT, failing to load is the usual cause)",
        )
    } else if !unknown.is_empty() {
        Check::warn(
            id,
            format!(
                "{collector}'s health is not known yet in {} of {} running task(s): {}",
                unknown.len(),
                tasks.len(),
                ids(&unknown)
            ),
            "run doctor again once the tasks have started; a health status that stays UNKNOWN means the container has no health check",
        )
    } else {
        Check::pass(
            id,
            format!(
                "{collector} is HEALTHY in all {} running task(s)",
                tasks.len()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    fn container(name: &str, pairs: &[(&str, &str)]) -> Container {
        Container {
            name: name.into(),
            image: name.into(),
            essential: true,
            env: TelemetryEnv::pick(pairs.iter().copied()),
            ..Container::default()
        }
    }

    /// deploy/ecs/task-definition.json's layout.
    fn kit() -> TaskDefinition {
        let mut backend = container(
            "backend",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
                ("OTEL_TRACES_SAMPLER", "xray"),
            ],
        );
        backend.depends_on = vec![(COLLECTOR.into(), "HEALTHY".into())];
        let mut collector = container(COLLECTOR, &[]);
        collector.health_check = vec!["CMD".into(), "/healthcheck".into()];
        TaskDefinition {
            arn: "td".into(),
            task_role: Some("arn:aws:iam::123456789012:role/task".into()),
            containers: vec![backend, collector],
        }
    }

    fn statuses(checks: &[Check]) -> Vec<(&'static str, Status)> {
        checks.iter().map(|c| (c.id, c.status)).collect()
    }

    #[test]
    fn the_kits_task_definition_passes() {
        let kit = kit();
        assert_eq!(
            statuses(&collector_checks(&kit)),
            [
                ("collector.health_check", Status::Pass),
                ("collector.gates_app", Status::Pass)
            ]
        );
        assert_eq!(
            statuses(&backend_checks(&kit, "eu-west-1")),
            [("backend.environment", Status::Pass)]
        );
        assert!(matches!(
            transaction_search_need(&kit, false),
            Need::Unknown(_)
        ));
        assert!(matches!(
            transaction_search_need(&kit, true),
            Need::NotNeeded(_)
        ));
    }

    #[test]
    fn a_sidecar_that_does_not_gate_or_report_health_fails() {
        let mut kit = kit();
        kit.containers[0].depends_on = vec![(COLLECTOR.into(), "START".into())];
        kit.containers[1].health_check.clear();
        assert_eq!(
            statuses(&collector_checks(&kit)),
            [
                ("collector.health_check", Status::Fail),
                ("collector.gates_app", Status::Fail)
            ]
        );
        kit.containers[0].depends_on.clear();
        assert!(
            collector_checks(&kit)[1]
                .summary
                .contains("does not wait for aws-otel-collector")
        );
    }

    #[test]
    fn the_backend_must_send_where_the_layout_expects() {
        let mut alone = kit();
        alone.containers.truncate(1);
        assert_eq!(
            statuses(&backend_checks(&alone, "eu-west-1")),
            [("backend.environment", Status::Fail)]
        );
        alone.containers[0].env = TelemetryEnv::pick([(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://xray.eu-west-1.amazonaws.com/v1/traces",
        )]);
        assert_eq!(
            statuses(&backend_checks(&alone, "eu-west-1")),
            [("backend.environment", Status::Pass)]
        );
        assert!(matches!(
            transaction_search_need(&alone, true),
            Need::Required(_)
        ));
        assert_eq!(
            statuses(&backend_checks(&alone, "us-east-1")),
            [("backend.environment", Status::Fail)]
        );
        alone.containers[0].env = TelemetryEnv::pick([("OTEL_TRACES_EXPORTER", "otlp-udp")]);
        assert_eq!(
            statuses(&backend_checks(&alone, "eu-west-1")),
            [("backend.environment", Status::Fail)]
        );
    }

    #[test]
    fn the_running_tasks_health() {
        let task = |id: &str, health: Option<&str>| RunningTask {
            id: id.into(),
            collector_health: health.map(str::to_owned),
        };
        assert_eq!(running_check(&[], COLLECTOR).status, Status::Fail);
        assert_eq!(
            running_check(&[task("a", Some("HEALTHY"))], COLLECTOR).status,
            Status::Pass
        );
        assert_eq!(
            running_check(
                &[task("a", Some("HEALTHY")), task("b", Some("UNKNOWN"))],
                COLLECTOR
            )
            .status,
            Status::Warn
        );
        let failed = running_check(
            &[task("a", Some("HEALTHY")), task("b", Some("UNHEALTHY"))],
            COLLECTOR,
        );
        assert_eq!(failed.status, Status::Fail);
        assert!(
            failed
                .summary
                .ends_with("UNHEALTHY in 1 of 2 running task(s): b"),
            "{}",
            failed.summary
        );
    }
}

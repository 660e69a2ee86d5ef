//! `doctor --stack` against a SAM deployment in moto: the healthy deployments (the default
//! collector transport, and otlp-xray with Transaction Search, its trace found in `aws/spans`),
//! the output formats and secrets, and one test per fault the doctor claims to detect.

use std::time::Duration;

use aws_sdk_lambda::types::{Architecture, TracingMode};
use serde_json::json;

use crate::support::api::Delivery;
use crate::support::sam_stack::{FUNCTION, LOG_GROUP, RolePolicy, STACK, SamStack};
use crate::support::{Destination, REGION, World, secrets, text};

/// `--stack apuntador-backend --region eu-west-1 --timeout <seconds> --json`.
fn json_args(timeout: &'static str) -> Vec<&'static str> {
    vec![
        "--stack",
        STACK,
        "--region",
        REGION,
        "--timeout",
        timeout,
        "--json",
    ]
}

/// Deploys `stack` with X-Ray's destination `destination`, runs the doctor (JSON, `timeout`
/// seconds) and returns the one check that failed, which must be `id` (exit status 1); `None`
/// outside scripts/test.sh.
async fn single_fault(
    stack: SamStack,
    destination: Destination,
    timeout: &'static str,
    id: &str,
) -> Option<serde_json::Value> {
    let world = World::start().await?;
    world.set_destination(destination);
    let _api = stack.deploy(&world).await;
    Some(world.doctor(&json_args(timeout)).await.only_failure(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_default_stack_passes_with_a_readable_verdict() {
    let Some(world) = World::start().await else {
        return;
    };
    let mut stack = SamStack::new("collector");
    // Written a second after the answer: the doctor has to poll for them.
    stack.api.delay = Duration::from_millis(1200);
    let api = stack.deploy(&world).await;
    let out = world
        .doctor(&["--stack", STACK, "--region", REGION, "--timeout", "20"])
        .await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let trace_id = api.trace_ids().pop().expect("the doctor sent one request");
    let line = |status: &str, id: &str, summary: &str| format!("  {status}  {id:18}  {summary}\n");
    let expected = [
        "doctor: stack apuntador-backend in eu-west-1\n\n".to_owned(),
        line(
            "PASS",
            "stack",
            "CREATE_COMPLETE; TelemetryTransport=collector, CollectorExporter=auto, TransactionSearch=off",
        ),
        line(
            "PASS",
            "function.tracing",
            &format!("active tracing on {FUNCTION}"),
        ),
        line(
            "PASS",
            "function.transport",
            "collector: OTLP (http/protobuf) to http://localhost:4318/v1/traces, for the collector layer",
        ),
        line(
            "PASS",
            "function.layer",
            "collector layer 0.156.0 (arm64), the pinned release (from account 123456789012, not AWS's 901920570463)",
        ),
        line(
            "PASS",
            "environment",
            "telemetry variables agree with the collector transport: OTLP to the layer on localhost:4318; the layer exports with awsxray (PutTraceSegments)",
        ),
        line(
            "PASS",
            "role.xray",
            "the function's role apuntador-backend-BackendFunctionRole may call xray:PutTraceSegments (allowed by AWSXRayDaemonWriteAccess)",
        ),
        format!(
            "{:28}evaluated 1 attached and 1 inline policy of apuntador-backend-BackendFunctionRole; not visible here: service control policies, session policies\n",
            ""
        ),
        line(
            "SKIP",
            "transaction_search",
            "off (destination XRay); the collector layer's awsxray exporter does not need it",
        ),
        line(
            "PASS",
            "request",
            &format!("GET {} answered 200 with X-Trace-ID {trace_id}", api.url),
        ),
        line(
            "PASS",
            "trace",
            &format!("trace {trace_id} is in X-Ray: 1 segment document(s) of the backend"),
        ),
        line(
            "PASS",
            "logs",
            &format!("1 log line(s) with trace_id {trace_id} in {LOG_GROUP}"),
        ),
        "\nTelemetry variables (no other variable of the deployment is read out):\n".to_owned(),
        "\n  OTEL_TRACES_EXPORTER=otlp\n".to_owned(),
        format!("\nTrace of the request: {trace_id}\n"),
        "\nVerdict: OK (0 failed, 0 warnings, 9 passed, 1 skipped).\n".to_owned(),
    ];
    for line in expected {
        assert!(
            out.stdout.contains(&line),
            "missing {line:?} in:\n{}",
            out.stdout
        );
    }
    assert_eq!(api.trace_ids().len(), 1, "one request, not more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_of_a_healthy_otlp_xray_stack_finds_the_trace_in_aws_spans() {
    let Some(world) = World::start().await else {
        return;
    };
    world.set_destination(Destination::Active);
    let mut stack = SamStack::new("otlp-xray");
    stack.api.delivery = Delivery::Spans;
    let api = stack.deploy(&world).await;
    let out = world.doctor(&json_args("20")).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    let report = out.json();
    let trace_id = api.trace_ids().pop().unwrap();
    assert_eq!(
        report["doctor"],
        concat!("apuntador-doctor ", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        report["target"],
        json!({"kind": "stack", "stack": STACK, "region": REGION})
    );
    assert_eq!(
        (report["verdict"].clone(), report["exit_code"].clone()),
        (json!("ok"), json!(0))
    );
    assert_eq!(report["trace_id"], trace_id.as_str());
    assert_eq!(
        report["counts"],
        json!({"pass": 9, "warn": 0, "fail": 0, "skip": 1})
    );
    assert_eq!(
        report["telemetry_environment"]["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"],
        "https://xray.eu-west-1.amazonaws.com/v1/traces"
    );
    for check in report["checks"].as_array().unwrap() {
        let keys: Vec<&String> = check.as_object().unwrap().keys().collect();
        assert!(
            keys.iter()
                .all(|k| ["id", "status", "summary", "detail", "fix"].contains(&k.as_str())),
            "{check}"
        );
        assert!(
            check["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{check}"
        );
    }
    assert_eq!(
        text(&out.check("transaction_search"), "summary"),
        "on (destination CloudWatchLogs, ACTIVE): TelemetryTransport=otlp-xray sends to X-Ray's OTLP endpoint"
    );
    assert_eq!(
        text(&out.check("trace"), "summary"),
        format!("trace {trace_id} is in aws/spans: 1 span(s) of the backend")
    );
    assert_eq!(out.status("function.layer"), "skip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_of_the_function_or_the_stack_is_ever_printed() {
    let Some(world) = World::start().await else {
        return;
    };
    let [_, _, header, password, _] = secrets();
    // Every kind of value that must stay hidden: secrets among the variables (SECRET_KEY,
    // CONFIG_API_KEY), an OTLP header with an API key, a password inside a telemetry URL, and
    // the stack's NoEcho parameter; and a fault, so the environment is discussed.
    let stack = SamStack::new("collector")
        .set("OTEL_EXPORTER_OTLP_HEADERS", &format!("api-key={header}"))
        .set(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://doctor:{password}@localhost:4318"),
        )
        .set("AWS_LAMBDA_EXEC_WRAPPER", "/opt/otel-instrument");
    let _api = stack.deploy(&world).await;
    let human = world
        .doctor(&["--stack", STACK, "--region", REGION, "--timeout", "5"])
        .await;
    let json = world.doctor(&json_args("5")).await;
    // World::doctor already failed the test if any secret appeared; show what did appear.
    assert!(
        human
            .stdout
            .contains("OTEL_EXPORTER_OTLP_ENDPOINT=http://…@localhost:4318\n"),
        "{}",
        human.stdout
    );
    assert_eq!(
        json.json()["telemetry_environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://…@localhost:4318"
    );
    let variables = json.json()["telemetry_environment"].clone();
    for name in [
        "SECRET_KEY",
        "CONFIG_API_KEY",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "APUNTADOR_COLLECTOR_CONFIG",
    ] {
        assert!(variables.get(name).is_none(), "{name} printed: {variables}");
    }
    for name in ["SECRET_KEY", "CONFIG_API_KEY", "OTEL_EXPORTER_OTLP_HEADERS"] {
        assert!(
            !human.stdout.contains(name),
            "{name} named in:\n{}",
            human.stdout
        );
    }
    assert_eq!(
        json.only_failure("environment.exec_wrapper")["status"],
        "fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_that_does_not_exist_fails_at_once() {
    let Some(world) = World::start().await else {
        return;
    };
    let out = world
        .doctor(&["--stack", "nope", "--region", REGION, "--json"])
        .await;
    let check = out.only_failure("stack");
    assert_eq!(text(&check, "summary"), "no stack nope in eu-west-1");
    assert_eq!(out.statuses().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_tracing_off_fails_and_so_does_the_trace() {
    let Some(world) = World::start().await else {
        return;
    };
    let mut stack = SamStack::new("otlp-udp");
    stack.tracing = TracingMode::PassThrough;
    stack.api.delivery = Delivery::Nothing;
    let _api = stack.deploy(&world).await;
    let out = world.doctor(&json_args("2")).await;
    assert_eq!(
        out.failed(),
        ["function.tracing", "trace"],
        "{}",
        out.stdout
    );
    let check = out.check("function.tracing");
    assert!(
        text(&check, "summary").starts_with("active tracing is off (PassThrough)"),
        "{check}"
    );
    assert!(
        text(&check, "fix").starts_with("set Tracing: Active on BackendFunction"),
        "{check}"
    );
    assert!(text(&out.check("trace"), "summary").ends_with("active tracing is off"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_transport_without_its_layer_fails() {
    let Some(world) = World::start().await else {
        return;
    };
    let mut stack = SamStack::new("collector");
    stack.layer = None;
    stack.api.delivery = Delivery::LambdaOnly;
    let _api = stack.deploy(&world).await;
    let out = world.doctor(&json_args("2")).await;
    assert_eq!(out.failed(), ["function.layer", "trace"], "{}", out.stdout);
    let check = out.check("function.layer");
    assert_eq!(
        text(&check, "fix"),
        "attach the collector layer (redeploy with TelemetryTransport=collector; CollectorLayerArn pins one) or pick another TelemetryTransport (otlp-udp needs no layer)"
    );
    assert_eq!(text(&check, "detail"), "the function has no layer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_collector_layer_is_a_warning_only() {
    let Some(world) = World::start().await else {
        return;
    };
    let mut stack = SamStack::new("collector");
    stack.layer = Some("aws-otel-collector-arm64-ver-0-151-0".into());
    let _api = stack.deploy(&world).await;
    let out = world.doctor(&json_args("10")).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    let check = out.check("function.layer");
    assert_eq!(check["status"], "warn");
    assert!(
        text(&check, "summary").starts_with("collector layer 0.151.0 is older than 0.156.0"),
        "{check}"
    );
    assert!(
        text(&check, "fix").starts_with("move to 0.156.0"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_layer_with_known_cves_fails() {
    let mut stack = SamStack::new("collector");
    stack.layer = Some("aws-otel-collector-arm64-ver-0-117-0".into());
    let Some(check) = single_fault(stack, Destination::XRay, "10", "function.layer").await else {
        return;
    };
    assert!(
        text(&check, "summary").starts_with("collector layer 0.117.0 carries published CVEs"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_layer_for_the_other_architecture_fails() {
    let mut stack = SamStack::new("collector");
    stack.layer = Some("aws-otel-collector-amd64-ver-0-156-0".into());
    stack.architecture = Architecture::Arm64;
    let Some(check) = single_fault(stack, Destination::XRay, "10", "function.layer").await else {
        return;
    };
    assert_eq!(
        text(&check, "summary"),
        "the collector layer is built for amd64 but the function runs on arm64: the collector cannot start"
    );
    assert_eq!(
        text(&check, "fix"),
        "attach aws-otel-collector-arm64-ver-0-156-0 (CollectorLayerArn must match Architecture)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_put_trace_segments_fails() {
    let Some(world) = World::start().await else {
        return;
    };
    let mut stack = SamStack::new("otlp-udp");
    stack.role = RolePolicy::Inline(
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["xray:GetSamplingRules"], "Resource": "*"}]}),
    );
    stack.api.delivery = Delivery::LambdaOnly;
    let _api = stack.deploy(&world).await;
    let out = world.doctor(&json_args("2")).await;
    assert_eq!(out.failed(), ["role.xray", "trace"], "{}", out.stdout);
    let check = out.check("role.xray");
    assert_eq!(
        text(&check, "summary"),
        "the function's role apuntador-backend-BackendFunctionRole may not call xray:PutTraceSegments: no statement allows it"
    );
    assert!(text(&check, "fix").starts_with("add xray:PutTraceSegments (Resource \"*\") to the role: template.yaml attaches AWSXRayDaemonWriteAccess"), "{check}");
    assert!(
        text(&check, "detail").starts_with("evaluated 0 attached and 2 inline policies"),
        "{check}"
    );
    assert!(
        text(&out.check("trace"), "summary").contains("has Lambda's own segments of"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_deny_of_put_trace_segments_fails() {
    let mut stack = SamStack::new("otlp-udp");
    stack.role = RolePolicy::Inline(json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "xray:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "xray:Put*", "Resource": "*"}]}));
    let Some(check) = single_fault(stack, Destination::XRay, "10", "role.xray").await else {
        return;
    };
    assert!(
        text(&check, "summary").ends_with("BackendFunctionRolePolicy0 denies it"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permissions_boundary_without_x_ray_fails() {
    let mut stack = SamStack::new("otlp-udp");
    stack.role = RolePolicy::Bounded(
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}]}),
    );
    let Some(check) = single_fault(stack, Destination::XRay, "10", "role.xray").await else {
        return;
    };
    assert!(
        text(&check, "summary")
            .ends_with("its permissions boundary apuntador-boundary does not allow it"),
        "{check}"
    );
    assert!(
        text(&check, "detail").contains("and its permissions boundary apuntador-boundary"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_changed_outside_the_stack_fails() {
    // The stack says collector; someone switched the function to otlp-udp by hand.
    let mut stack = SamStack::new("collector").set("OTEL_TRACES_EXPORTER", "otlp-udp");
    stack.layer = None;
    let Some(check) = single_fault(stack, Destination::XRay, "10", "function.transport").await
    else {
        return;
    };
    assert!(
        text(&check, "summary").starts_with("the function's environment selects otlp-udp (OTLP over UDP to Lambda's X-Ray endpoint), the stack's TelemetryTransport says collector"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_transport_sending_elsewhere_than_localhost_fails() {
    let stack = SamStack::new("collector").set(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://collector.internal:4318",
    );
    let Some(check) =
        single_fault(stack, Destination::XRay, "10", "environment.otlp_endpoint").await
    else {
        return;
    };
    assert_eq!(
        text(&check, "summary"),
        "spans go to http://collector.internal:4318/v1/traces, not to the collector layer on localhost:4318"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_wrapper_fails() {
    let stack = SamStack::new("collector").set("AWS_LAMBDA_EXEC_WRAPPER", "/opt/otel-instrument");
    let Some(check) =
        single_fault(stack, Destination::XRay, "10", "environment.exec_wrapper").await
    else {
        return;
    };
    assert!(
        text(&check, "fix").starts_with("remove AWS_LAMBDA_EXEC_WRAPPER"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampler_that_samples_nothing_fails() {
    let stack = SamStack::new("otlp-udp").set("OTEL_TRACES_SAMPLER", "parentbased_always_off");
    let Some(check) = single_fault(stack, Destination::XRay, "10", "environment.sampler").await
    else {
        return;
    };
    assert_eq!(
        text(&check, "summary"),
        "OTEL_TRACES_SAMPLER=parentbased_always_off samples no request of its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_configuration_that_is_missing_fails() {
    let Some(world) = World::start().await else {
        return;
    };
    let mut stack = SamStack::new("collector").unset("APUNTADOR_COLLECTOR_CONFIG");
    stack.api.delivery = Delivery::LambdaOnly;
    let _api = stack.deploy(&world).await;
    let out = world.doctor(&json_args("2")).await;
    assert_eq!(
        out.failed(),
        ["environment.collector_config", "trace"],
        "{}",
        out.stdout
    );
    assert_eq!(
        text(&out.check("environment.collector_config"), "summary"),
        "the layer's configuration is unusable (APUNTADOR_COLLECTOR_CONFIG is not set): the collector does not start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_xray_without_transaction_search_fails_with_the_parameter_to_set() {
    let Some(world) = World::start().await else {
        return;
    };
    world.set_destination(Destination::XRay);
    let mut stack = SamStack::new("otlp-xray");
    stack.api.delivery = Delivery::Nothing;
    let _api = stack.deploy(&world).await;
    let out = world.doctor(&json_args("2")).await;
    let check = out.only_failure("transaction_search");
    assert_eq!(
        text(&check, "summary"),
        "off (destination XRay), but TelemetryTransport=otlp-xray sends to X-Ray's OTLP endpoint: X-Ray refuses every span it sends"
    );
    assert!(
        text(&check, "fix")
            .starts_with("enable Transaction Search: template parameter TransactionSearch=enable"),
        "{check}"
    );
    // The log lines are there and no segment at all: reported as unconfirmed, not as a failure.
    assert_eq!(out.status("trace"), "warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_xray_to_another_region_fails() {
    let stack = SamStack::new("otlp-xray").set(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "https://xray.us-east-1.amazonaws.com/v1/traces",
    );
    let Some(check) = single_fault(
        stack,
        Destination::Active,
        "10",
        "environment.otlp_endpoint",
    )
    .await
    else {
        return;
    };
    assert_eq!(
        text(&check, "fix"),
        "set OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=https://xray.eu-west-1.amazonaws.com/v1/traces (as the template does)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_search_declared_but_off_fails() {
    let mut stack = SamStack::new("otlp-udp");
    stack.transaction_search = "already-enabled";
    let Some(check) = single_fault(stack, Destination::XRay, "10", "transaction_search").await
    else {
        return;
    };
    assert_eq!(
        text(&check, "summary"),
        "off (destination XRay), but the stack says TransactionSearch=already-enabled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_search_the_doctor_may_not_read_is_a_warning_naming_the_permission() {
    let Some(world) = World::start().await else {
        return;
    };
    world.set_destination(Destination::Denied);
    let mut stack = SamStack::new("otlp-xray");
    stack.api.delivery = Delivery::Segments;
    let _api = stack.deploy(&world).await;
    let out = world.doctor(&json_args("10")).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    let check = out.check("transaction_search");
    assert_eq!(check["status"], "warn");
    assert_eq!(
        text(&check, "fix"),
        "let the identity running doctor call xray:GetTraceSegmentDestination"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_x_trace_id_fails_and_nothing_is_waited_for() {
    let Some(world) = World::start().await else {
        return;
    };
    let mut stack = SamStack::new("collector");
    stack.api.header = Some("");
    let _api = stack.deploy(&world).await;
    let started = std::time::Instant::now();
    let out = world.doctor(&json_args("30")).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the doctor waited for no trace id"
    );
    let check = out.only_failure("request");
    assert!(
        text(&check, "summary").ends_with("answered 200 without X-Trace-ID"),
        "{check}"
    );
    assert_eq!(
        (out.status("trace"), out.status("logs")),
        ("skip".into(), "skip".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_does_not_answer_fails() {
    let Some(world) = World::start().await else {
        return;
    };
    let _api = SamStack::new("collector").deploy(&world).await;
    let closed = format!("http://127.0.0.1:{}/", apuntador_harness::closed_port());
    let out = world
        .doctor(&[
            "--stack",
            STACK,
            "--region",
            REGION,
            "--url",
            &closed,
            "--json",
            "--timeout",
            "5",
        ])
        .await;
    let check = out.only_failure("request");
    assert!(
        text(&check, "summary").starts_with(&format!("GET {closed}: could not connect")),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_fails_the_request() {
    let mut stack = SamStack::new("collector");
    stack.api.status = 502;
    let Some(check) = single_fault(stack, Destination::XRay, "10", "request").await else {
        return;
    };
    assert_eq!(
        text(&check, "fix"),
        "the function failed: its log lines with this trace_id say why"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_that_never_arrive_fail_the_trace() {
    let mut stack = SamStack::new("collector");
    stack.api.delivery = Delivery::LambdaOnly;
    let Some(check) = single_fault(stack, Destination::XRay, "2", "trace").await else {
        return;
    };
    assert!(
        text(&check, "summary").ends_with(
            "none of the backend's spans after 2 s: tracing works, the transport does not deliver"
        ),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_that_never_arrive_fail_the_logs() {
    let mut stack = SamStack::new("collector");
    stack.api.logs = false;
    let Some(check) = single_fault(stack, Destination::XRay, "2", "logs").await else {
        return;
    };
    assert!(
        text(&check, "summary").starts_with("no log line with trace_id 1-"),
        "{check}"
    );
    assert!(
        text(&check, "summary").ends_with(&format!("in {LOG_GROUP} after 2 s")),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_arriving_at_all_fails_trace_and_logs() {
    let Some(world) = World::start().await else {
        return;
    };
    let mut stack = SamStack::new("collector");
    stack.api.delivery = Delivery::Nothing;
    stack.api.logs = false;
    let _api = stack.deploy(&world).await;
    let out = world.doctor(&json_args("2")).await;
    assert_eq!(out.failed(), ["trace", "logs"], "{}", out.stdout);
    assert!(text(&out.check("trace"), "summary").ends_with("and its log lines are missing too"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_invocation_is_a_warning_not_a_failure() {
    let Some(world) = World::start().await else {
        return;
    };
    let mut stack = SamStack::new("otlp-udp");
    stack.api.delivery = Delivery::Nothing;
    let _api = stack.deploy(&world).await;
    let out = world.doctor(&json_args("2")).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    let check = out.check("trace");
    assert_eq!(check["status"], "warn");
    assert!(
        text(&check, "summary").contains("X-Ray did not sample this invocation"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_none_transport_fails() {
    let Some(world) = World::start().await else {
        return;
    };
    let mut stack = SamStack::new("none");
    stack.api.delivery = Delivery::LambdaOnly;
    let _api = stack.deploy(&world).await;
    let out = world.doctor(&json_args("2")).await;
    assert_eq!(
        out.failed(),
        ["function.transport", "trace"],
        "{}",
        out.stdout
    );
    assert_eq!(
        text(&out.check("function.transport"), "fix"),
        "pick TelemetryTransport=otlp-udp (recommended) or collector and redeploy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retiring_daemon_transport_is_a_warning() {
    let Some(world) = World::start().await else {
        return;
    };
    let _api = SamStack::new("daemon").deploy(&world).await;
    let out = world.doctor(&json_args("10")).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    let check = out.check("function.transport");
    assert_eq!(check["status"], "warn");
    assert!(
        text(&check, "summary").ends_with("a format whose support ends on 25 February 2027"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_comes_from_the_default_chain() {
    let Some(world) = World::start().await else {
        return;
    };
    let _api = SamStack::new("otlp-udp").deploy(&world).await;
    let out = world
        .doctor_with(
            &["--stack", STACK, "--json", "--timeout", "10"],
            &[("AWS_REGION", REGION)],
        )
        .await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.json()["target"]["region"], REGION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_search_being_turned_on_is_a_warning() {
    let Some(world) = World::start().await else {
        return;
    };
    world.set_destination(Destination::Pending);
    let _api = SamStack::new("otlp-xray").deploy(&world).await;
    let out = world.doctor(&json_args("10")).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    let check = out.check("transaction_search");
    assert_eq!(check["status"], "warn");
    assert_eq!(
        text(&check, "fix"),
        "wait a few minutes and run doctor again"
    );
}

//! The binary as Lambda runs it, under a Runtime API double that sends `Lambda-Runtime-Trace-Id`
//! (the AWS emulator does not), with an OTLP receiver standing in for the ADOT collector layer.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use crate::support::otlp::{Behaviour, OtlpReceiver, ReceivedSpan};
use crate::support::runtime_api::{Event, Outcome, RuntimeApi};
use crate::support::{
    Process, binary, closed_port, config_api_key, epoch_hex, lambda_env, sample_event,
};

static ROOT: LazyLock<String> =
    LazyLock::new(|| format!("1-{}-0123456789abcdef01234567", epoch_hex()));
const PARENT: &str = "53995c3f42cd8ad8";
const SERVER_KIND: i32 = 2;

fn header(root: &str, sampled: u8) -> String {
    format!("Root={root};Parent={PARENT};Sampled={sampled};Lineage=a87bd80c:1")
}

fn event(file: &str, trace_header: Option<String>) -> Event {
    let body = sample_event(file);
    Event { body, trace_header }
}

async fn start(otlp_endpoint: &str, extra: &[(&str, &str)]) -> (RuntimeApi, Process) {
    let api = RuntimeApi::start().await;
    let mut env = lambda_env(otlp_endpoint);
    env.push(("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string()));
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let process = Process::spawn(&binary(), &[], &env);
    (api, process)
}

fn http_endpoint(receiver: &OtlpReceiver) -> String {
    format!("http://{}", receiver.http_addr)
}

fn span_of<'a>(spans: &'a [ReceivedSpan], outcome: &Outcome) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.attr("faas.invocation_id") == Some(outcome.request_id.as_str()))
}

fn response_header(outcome: &Outcome, name: &str) -> Option<String> {
    outcome.json()["headers"][name].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn invocation_span_is_the_child_of_the_lambda_trace_header() {
    let receiver = OtlpReceiver::start().await;
    let (api, process) = start(&http_endpoint(&receiver), &[]).await;

    let first = api
        .invoke(event(
            "http-api-config-providers.json",
            Some(header(&ROOT, 1)),
        ))
        .await;
    assert!(first.ok, "{}", first.body);
    assert_eq!(first.json()["statusCode"], 200);
    assert_eq!(
        response_header(&first, "x-trace-id").as_deref(),
        Some(ROOT.as_str())
    );

    let spans = receiver.wait_for_spans(1, Duration::from_secs(5)).await;
    let span = span_of(&spans, &first).expect("span of the first invocation");
    assert_eq!(span.xray_trace_id(), *ROOT);
    assert_eq!(span.parent_span_id, PARENT);
    assert_eq!(span.kind, SERVER_KIND);
    assert_eq!(span.name, "GET /config/providers");
    assert!(
        span.trace_state.contains("a87bd80c:1"),
        "Lineage kept: {:?}",
        span.trace_state
    );
    for (key, value) in [
        ("faas.trigger", "http"),
        ("faas.coldstart", "true"),
        ("faas.name", "apuntador-test"),
        ("cloud.provider", "aws"),
        (
            "cloud.resource_id",
            "arn:aws:lambda:eu-west-1:123456789012:function:apuntador-test",
        ),
        ("http.request.method", "GET"),
        ("http.route", "/config/providers"),
        ("url.path", "/config/providers"),
        ("http.response.status_code", "200"),
        ("client.address", "203.0.113.10"),
        ("user_agent.original", "apuntador-app/1.0 (sam-local-event)"),
        ("aws.api_gateway.request_id", "JKJaXmPLvHcESHA="),
    ] {
        assert_eq!(
            span.attr(key),
            Some(value),
            "{key} in {:?}",
            span.attributes
        );
    }
    // The X-Ray annotations ride on the span under keys X-Ray filters accept, and the span
    // names them in `aws.xray.annotations`, which is what the ADOT awsxray exporter indexes.
    for (key, value) in [
        ("http_route", "/config/providers"),
        ("http_status_code", "200"),
        ("cold_start", "true"),
        ("service_version", "1.0.41"),
    ] {
        assert_eq!(
            span.attr(key),
            Some(value),
            "{key} in {:?}",
            span.attributes
        );
    }
    let listed = span.attr("aws.xray.annotations").unwrap_or_default();
    for key in [
        "http_route",
        "http_status_code",
        "cold_start",
        "oauth_provider",
        "device_platform",
        "error_type",
        "service_version",
    ] {
        assert!(listed.contains(&format!("\"{key}\"")), "{key} in {listed}");
    }
    assert_eq!(span.attr("error_type"), None, "a 200 has no error class");
    assert_eq!(span.resource_attr("service.name"), Some("apuntador-e2e"));
    assert_eq!(span.resource_attr("service.version"), Some("1.0.41"));
    assert_eq!(span.resource_attr("deployment.environment"), Some("e2e"));
    assert_eq!(span.resource_attr("cloud.platform"), Some("aws_lambda"));
    assert!(
        span.attributes
            .iter()
            .all(|(_, v)| !v.contains(config_api_key()))
    );

    let second = api
        .invoke(event(
            "http-api-root.json",
            Some(header(
                &format!("1-{}-0123456789abcdef01234568", epoch_hex()),
                1,
            )),
        ))
        .await;
    let spans = receiver.wait_for_spans(2, Duration::from_secs(5)).await;
    let span = span_of(&spans, &second).expect("span of the second invocation");
    assert_eq!(span.attr("faas.coldstart"), Some("false"));

    // Logs join up with the trace: the access line carries the X-Ray id and Lambda keys.
    let logs = process.json_logs();
    let access = logs
        .iter()
        .find(|l| l["message"] == "request completed" && l["route"] == "/config/providers")
        .expect("access log line");
    assert_eq!(access["trace_id"], ROOT.as_str());
    assert_eq!(access["function_request_id"], first.request_id.as_str());
    assert_eq!(access["cold_start"], true);
    assert_eq!(access["status"], 200);
    assert!(access["span_id"].as_str().is_some_and(|s| s.len() == 16));
    assert!(
        access["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(
        process
            .lines()
            .iter()
            .all(|l| !l.contains(config_api_key())),
        "API key leaked into output"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sampled_zero_is_answered_but_not_exported() {
    let receiver = OtlpReceiver::start().await;
    let (api, _process) = start(&http_endpoint(&receiver), &[]).await;
    let unsampled_root = format!("1-{}-aaaaaaaaaaaaaaaaaaaaaaaa", epoch_hex());
    let unsampled_root = unsampled_root.as_str();
    let unsampled = api
        .invoke(event("http-api-root.json", Some(header(unsampled_root, 0))))
        .await;
    assert_eq!(unsampled.json()["statusCode"], 200);
    assert_eq!(
        response_header(&unsampled, "x-trace-id").as_deref(),
        Some(unsampled_root)
    );
    let sampled = api
        .invoke(event("http-api-root.json", Some(header(&ROOT, 1))))
        .await;
    let spans = receiver.wait_for_spans(1, Duration::from_secs(5)).await;
    assert!(span_of(&spans, &sampled).is_some());
    assert!(
        span_of(&spans, &unsampled).is_none(),
        "Sampled=0 must not be exported"
    );
    assert!(spans.iter().all(|s| s.xray_trace_id() != unsampled_root));
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_leave_after_the_response_and_before_the_next_poll() {
    let receiver = OtlpReceiver::start().await;
    let (api, _process) = start(&http_endpoint(&receiver), &[]).await;
    let mut outcomes = Vec::new();
    for i in 0..5 {
        let root = format!("1-{}-0123456789abcdef0123456{i}", epoch_hex());
        outcomes.push(
            api.invoke(event(
                "http-api-config-providers.json",
                Some(header(&root, 1)),
            ))
            .await,
        );
    }
    let spans = receiver.wait_for_spans(5, Duration::from_secs(5)).await;
    for outcome in &outcomes {
        let span = span_of(&spans, outcome).expect("every invocation exported");
        let next_poll = api
            .poll_after(outcome.answered_at, Duration::from_secs(5))
            .await
            .expect("the function polls again");
        assert!(
            span.at >= outcome.answered_at,
            "exported before the response was posted"
        );
        assert!(
            span.at <= next_poll,
            "span arrived after the next /next poll"
        );
    }
}

/// Post-response time of each invocation: response posted → next `/next`.
async fn post_response_gaps(api: &RuntimeApi, outcomes: &[Outcome]) -> Vec<Duration> {
    let mut gaps = Vec::new();
    for o in outcomes {
        let next = api
            .poll_after(o.answered_at, Duration::from_secs(10))
            .await
            .expect("next poll");
        gaps.push(next - o.answered_at);
    }
    gaps
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_or_failing_collector_costs_little_and_logs_once() {
    let failing = OtlpReceiver::start().await;
    failing.set_behaviour(Behaviour::Fail);
    for endpoint in [
        format!("http://127.0.0.1:{}", closed_port()),
        http_endpoint(&failing),
    ] {
        let (api, process) = start(&endpoint, &[]).await;
        let mut outcomes = Vec::new();
        for _ in 0..20 {
            let o = api
                .invoke(event(
                    "http-api-config-providers.json",
                    Some(header(&ROOT, 1)),
                ))
                .await;
            assert_eq!(o.json()["statusCode"], 200, "{endpoint}: {}", o.body);
            outcomes.push(o);
        }
        let gaps = post_response_gaps(&api, &outcomes).await;
        // Bound: one export timeout (1 s default) at most, and a refused or failed export is
        // far cheaper; the breaker then skips the collector for a second.
        assert!(
            gaps.iter().all(|g| *g < Duration::from_millis(1000)),
            "{endpoint}: {gaps:?}"
        );
        let warnings = process
            .json_logs()
            .into_iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("trace collector unavailable"))
            })
            .count();
        assert_eq!(warnings, 1, "{endpoint}: one log line per episode");
    }
    assert_eq!(
        failing.request_count(),
        1,
        "the breaker kept later flushes away from the failing collector"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_collector_delays_no_caller_and_few_flushes() {
    let receiver = OtlpReceiver::start().await;
    receiver.set_behaviour(Behaviour::Hang);
    let timeout_ms = 300u64;
    let (api, process) = start(
        &http_endpoint(&receiver),
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", &timeout_ms.to_string())],
    )
    .await;
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        let o = api
            .invoke(event(
                "http-api-config-providers.json",
                Some(header(&ROOT, 1)),
            ))
            .await;
        assert_eq!(o.json()["statusCode"], 200);
        assert!(
            o.answered_at - o.handed_at < Duration::from_millis(timeout_ms),
            "the caller waited for export"
        );
        outcomes.push(o);
    }
    let run = started.elapsed();
    let gaps = post_response_gaps(&api, &outcomes).await;
    let limit = Duration::from_millis(timeout_ms + 500);
    assert!(
        gaps.iter().all(|g| *g < limit),
        "a flush outlived the export timeout: {gaps:?}"
    );
    let paid = gaps
        .iter()
        .filter(|g| **g >= Duration::from_millis(timeout_ms / 2))
        .count();
    // The breaker opens for 1 s after a failure, doubling: over `run` at most a few flushes pay.
    let allowed = 1 + (run.as_secs_f64() / 1.0).ceil() as usize;
    assert!(
        paid <= allowed,
        "{paid} of 10 flushes paid the timeout ({gaps:?}, run {run:?})"
    );
    assert!(paid < outcomes.len(), "every invocation paid the timeout");

    // The collector recovers: after the back-off, spans flow again and the episode is closed.
    receiver.set_behaviour(Behaviour::Accept);
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let recovered = api
        .invoke(event("http-api-root.json", Some(header(&ROOT, 1))))
        .await;
    let spans = receiver.wait_for_spans(1, Duration::from_secs(5)).await;
    assert!(
        span_of(&spans, &recovered).is_some(),
        "spans flow after recovery"
    );
    let recovery = process
        .wait_for_line("trace collector answers again", Duration::from_secs(2))
        .expect("recovery is logged");
    let line: serde_json::Value = serde_json::from_str(&recovery).unwrap();
    assert!(line["dropped_spans"].as_u64().unwrap() >= 9, "{recovery}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_exports_to_the_collector_too() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = format!("http://{}", receiver.grpc_addr);
    let (api, _process) = start(&endpoint, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).await;
    let outcome = api
        .invoke(event("http-api-root.json", Some(header(&ROOT, 1))))
        .await;
    let next_poll = api
        .poll_after(outcome.answered_at, Duration::from_secs(5))
        .await
        .unwrap();
    let spans = receiver.wait_for_spans(1, Duration::from_secs(5)).await;
    let span = span_of(&spans, &outcome).expect("span over gRPC");
    assert_eq!(span.xray_trace_id(), *ROOT);
    assert!(span.at <= next_poll);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_events_get_an_invocation_error_and_the_function_keeps_serving() {
    let receiver = OtlpReceiver::start().await;
    let (api, _process) = start(&http_endpoint(&receiver), &[]).await;
    for body in [
        r#"{"detail-type":"Scheduled Event","source":"aws.events"}"#,
        "{ not json",
        "[]",
    ] {
        let outcome = api
            .invoke(Event {
                body: body.to_owned(),
                trace_header: Some(header(&ROOT, 1)),
            })
            .await;
        assert!(
            !outcome.ok,
            "{body} should be an invocation error, got {}",
            outcome.body
        );
        let error: serde_json::Value =
            serde_json::from_str(&outcome.body).expect("error body is JSON");
        assert!(error["errorType"].is_string(), "{}", outcome.body);
        let fine = api.invoke(event("http-api-health.json", None)).await;
        assert_eq!(fine.json()["statusCode"], 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_are_not_traced_or_logged_by_default() {
    let receiver = OtlpReceiver::start().await;
    let (api, process) = start(&http_endpoint(&receiver), &[]).await;
    let health = api
        .invoke(event("http-api-health.json", Some(header(&ROOT, 1))))
        .await;
    assert_eq!(
        response_header(&health, "x-trace-id").as_deref(),
        Some(ROOT.as_str())
    );
    let root = api
        .invoke(event("http-api-root.json", Some(header(&ROOT, 1))))
        .await;
    let spans = receiver.wait_for_spans(1, Duration::from_secs(5)).await;
    let span = span_of(&spans, &root).expect("span of the traced invocation");
    assert_eq!(
        span.attr("faas.coldstart"),
        Some("false"),
        "the untraced health check was the cold invocation"
    );
    assert!(span_of(&spans, &health).is_none());
    assert!(!process.json_logs().iter().any(|l| l["route"] == "/health"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_weak_secret_stops_the_function_with_a_clear_message() {
    let api = RuntimeApi::start().await;
    let mut env = lambda_env("http://127.0.0.1:1");
    env.retain(|(k, _)| k != "SECRET_KEY");
    env.push(("SECRET_KEY".into(), "too-short".into()));
    env.push(("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string()));
    let mut process = Process::spawn(&binary(), &[], &env);
    let line = process
        .wait_for_line("SECRET_KEY is 9 bytes long", Duration::from_secs(5))
        .expect("start-up error names the variable");
    assert!(line.contains("\"level\":\"ERROR\""), "{line}");
    let status = process
        .terminate(Duration::from_secs(5))
        .expect("process exits");
    assert!(!status.success());
}

/// Measurement, not a test: prints client-visible and post-response (flush) times per OTLP
/// protocol. Run with `cargo test --release --test e2e -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement; run on demand"]
async fn measure_flush_cost_per_protocol() {
    fn pct(sorted: &[Duration], p: f64) -> f64 {
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i].as_secs_f64() * 1000.0
    }
    let receiver = OtlpReceiver::start().await;
    let cases = [
        ("http/protobuf", format!("http://{}", receiver.http_addr)),
        ("grpc", format!("http://{}", receiver.grpc_addr)),
        ("none", format!("http://{}", receiver.http_addr)),
    ];
    for (protocol, endpoint) in cases {
        let exporter = if protocol == "none" { "none" } else { "otlp" };
        let proto = if protocol == "grpc" {
            "grpc"
        } else {
            "http/protobuf"
        };
        let (api, _process) = start(
            &endpoint,
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", proto),
                ("OTEL_TRACES_EXPORTER", exporter),
            ],
        )
        .await;
        let mut outcomes = Vec::new();
        for i in 0..400 {
            let root = format!("1-{}-{i:024x}", epoch_hex());
            outcomes.push(
                api.invoke(event(
                    "http-api-config-providers.json",
                    Some(header(&root, 1)),
                ))
                .await,
            );
        }
        let outcomes = &outcomes[50..];
        let mut visible: Vec<Duration> = outcomes
            .iter()
            .map(|o| o.answered_at - o.handed_at)
            .collect();
        let mut flush = post_response_gaps(&api, outcomes).await;
        visible.sort();
        flush.sort();
        println!(
            "{protocol:>14}: client-visible p50 {:.3} ms p99 {:.3} ms | post-response p50 {:.3} ms p99 {:.3} ms",
            pct(&visible, 0.5),
            pct(&visible, 0.99),
            pct(&flush, 0.5),
            pct(&flush, 0.99)
        );
    }
}

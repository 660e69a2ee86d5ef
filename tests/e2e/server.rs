//! The binary as a plain HTTP server (local work, ECS/Fargate): incoming trace headers parent
//! the request span, spans are flushed on SIGTERM, and the console exporter prints JSON lines.

use std::time::Duration;

use crate::support::otlp::OtlpReceiver;
use crate::support::{Process, binary, config_api_key, secret_key};

fn server_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PORT", "0"),
        ("SECRET_KEY", secret_key()),
        ("CONFIG_API_KEY", config_api_key()),
        ("OTEL_SERVICE_NAME", "apuntador-server-e2e"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// Starts the server and returns it with its base URL.
pub(crate) fn start(extra: &[(&str, &str)]) -> (Process, String) {
    crate::support::serve(&binary(), &server_env(extra))
}

/// The server printing its spans on stdout (flushed every 50 ms), with `extra` settings.
pub(crate) fn start_printing_spans(extra: &[(&str, &str)]) -> (Process, String) {
    let mut env = vec![
        ("OTEL_TRACES_EXPORTER", "console"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    env.extend_from_slice(extra);
    start(&env)
}

/// Stops the server (it must exit cleanly) and returns the SERVER spans it printed.
pub(crate) fn printed_server_spans(process: &mut Process) -> Vec<serde_json::Value> {
    assert!(
        process
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    process
        .lines()
        .iter()
        .filter(|l| l.contains("\"type\":\"span\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|s| s["kind"] == "server")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn incoming_x_ray_header_parents_the_span_and_sigterm_flushes_it() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = format!("http://{}", receiver.http_addr);
    // A long batch delay: only the shutdown flush can deliver the span in time.
    let (mut process, url) = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
    ]);
    let client = reqwest::Client::new();
    let root = format!("1-{}-00000000000000000000abcd", crate::support::epoch_hex());
    let response = client
        .get(format!("{url}/config/providers"))
        .header("authorization", format!("Bearer {}", config_api_key()))
        .header(
            "x-amzn-trace-id",
            format!("Root={root};Parent=1111111111111111;Sampled=1"),
        )
        .header("user-agent", "server-e2e")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-trace-id"].to_str().unwrap(), root);
    let health = client.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        receiver.spans().is_empty(),
        "nothing exported before the batch delay or shutdown"
    );

    let status = process
        .terminate(Duration::from_secs(10))
        .expect("server stops on SIGTERM");
    assert!(status.success(), "{status:?}");
    let spans = receiver.spans();
    assert_eq!(
        spans.len(),
        1,
        "one span (health checks are not traced): {spans:?}"
    );
    let span = &spans[0];
    assert_eq!(span.xray_trace_id(), root);
    assert_eq!(span.parent_span_id, "1111111111111111");
    assert_eq!(span.attr("http.route"), Some("/config/providers"));
    assert_eq!(span.attr("client.address"), Some("127.0.0.1"));
    assert_eq!(
        span.attr("faas.trigger"),
        None,
        "no FaaS attributes outside Lambda"
    );
    assert_eq!(
        span.resource_attr("service.name"),
        Some("apuntador-server-e2e")
    );
    assert_eq!(
        span.resource_attr("deployment.environment"),
        Some("production"),
        "a server without ENVIRONMENT runs as production"
    );
    let assumed = process
        .json_logs()
        .into_iter()
        .filter(|l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("ENVIRONMENT is not set: running as production"))
        })
        .count();
    assert_eq!(assumed, 1, "the assumed mode is said once at start-up");
    let access: Vec<serde_json::Value> = process
        .json_logs()
        .into_iter()
        .filter(|l| l["message"] == "request completed")
        .collect();
    assert_eq!(access.len(), 1, "no access line for /health");
    assert!(
        process
            .lines()
            .iter()
            .all(|l| !l.contains(config_api_key()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn console_exporter_and_tracecontext_propagation() {
    // A trace id of now: X-Ray refuses (and so this backend does not join) one over 30 days old.
    let epoch = crate::support::epoch_hex();
    let (mut process, url) = start(&[
        ("OTEL_TRACES_EXPORTER", "console"),
        ("OTEL_PROPAGATORS", "tracecontext"),
        ("LOG_FORMAT", "json"),
    ]);
    let response = reqwest::Client::new()
        .get(format!("{url}/"))
        .header(
            "traceparent",
            format!("00-{epoch}00000000000000000000beef-2222222222222222-01"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-trace-id"].to_str().unwrap(),
        format!("1-{epoch}-00000000000000000000beef")
    );
    assert!(
        process
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    let span_line = process
        .lines()
        .into_iter()
        .find(|l| l.contains("\"type\":\"span\""))
        .expect("a span line on stdout");
    let span: serde_json::Value = serde_json::from_str(&span_line).unwrap();
    assert_eq!(
        span["trace_id"],
        format!("1-{epoch}-00000000000000000000beef")
    );
    assert_eq!(span["parent_span_id"], "2222222222222222");
    assert_eq!(span["kind"], "server");
    assert_eq!(span["name"], "GET /");
    assert_eq!(span["attributes"]["http.response.status_code"], 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn human_log_format_is_plain_text() {
    let (mut process, url) = start(&[("LOG_FORMAT", "human"), ("OTEL_TRACES_EXPORTER", "none")]);
    let response = reqwest::Client::new()
        .get(format!("{url}/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(
        response.headers().contains_key("x-trace-id"),
        "ids exist even with export off"
    );
    assert!(process.terminate(Duration::from_secs(10)).is_some());
    let line = process
        .lines()
        .into_iter()
        .find(|l| l.contains("request completed"))
        .expect("access line");
    assert!(
        serde_json::from_str::<serde_json::Value>(&line).is_err(),
        "{line}"
    );
    assert!(line.contains("INFO"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_level_also_governs_the_access_line() {
    // The server's own "listening" line must stay: only the request layer's target is raised.
    for (level, expected) in [
        ("info,apuntador_backend::telemetry::http=warn", 0),
        ("info", 1),
    ] {
        let (mut process, url) = start(&[("RUST_LOG", level), ("OTEL_TRACES_EXPORTER", "none")]);
        let response = reqwest::get(format!("{url}/")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(process.terminate(Duration::from_secs(10)).is_some());
        assert_eq!(
            process.count_lines(&["request completed"]),
            expected,
            "RUST_LOG={level}: {:?}",
            process.lines()
        );
    }
}

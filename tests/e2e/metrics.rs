//! Metrics as CloudWatch Embedded Metric Format documents on stdout (issue 25 item 1): under
//! the Runtime API double, each invocation's documents come after its response, name its
//! request and trace id, and count what it did (route, status class, provider calls and
//! failures, cold start); spans an exporter lost are counted; in server mode the documents
//! come on a timer and at shutdown; the Powertools and OpenTelemetry switches turn them off.
//! Every document is checked against the EMF rules CloudWatch applies: each declared metric
//! has a value at the root, each dimension a string value, at most 100 values per metric.

use std::time::Duration;

use serde_json::{Value, json};

use crate::device_aws::invoke;
use crate::support::otlp::OtlpReceiver;
use crate::support::provider_double::{Mode, ProviderDouble};
use crate::support::runtime_api::{Outcome, RuntimeApi};
use crate::support::{Process, binary, closed_port, lambda_env};

const VERIFIER: &str = "metrics-e2e-verifier-metrics-e2e-verifier-0123456";

/// The EMF documents among the process's lines, each checked as CloudWatch would.
pub(crate) fn documents(process: &Process) -> Vec<(usize, Value)> {
    process
        .lines()
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((i, serde_json::from_str::<Value>(l).ok()?)))
        .filter(|(_, v)| v.get("_aws").is_some())
        .inspect(|(_, doc)| check(doc))
        .collect()
}

fn check(doc: &Value) {
    let aws = &doc["_aws"];
    assert!(
        aws["Timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000_000),
        "{doc}"
    );
    let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
    assert_eq!(directives.len(), 1, "{doc}");
    let directive = &directives[0];
    assert!(directive["Namespace"].is_string(), "{doc}");
    for set in directive["Dimensions"].as_array().expect("dimension sets") {
        let set = set.as_array().expect("a dimension set");
        assert!(!set.is_empty() && set.len() <= 30, "{doc}");
        for key in set {
            assert!(doc[key.as_str().unwrap()].is_string(), "{key} in {doc}");
        }
    }
    let metrics = directive["Metrics"].as_array().expect("metrics");
    assert!(!metrics.is_empty() && metrics.len() <= 100, "{doc}");
    for metric in metrics {
        let name = metric["Name"].as_str().expect("name");
        assert!(
            matches!(metric["Unit"].as_str(), Some("Count" | "Milliseconds")),
            "{doc}"
        );
        let value = &doc[name];
        if let Some(histogram) = value.as_object() {
            let values = histogram["Values"].as_array().unwrap();
            let counts = histogram["Counts"].as_array().unwrap();
            assert!(!values.is_empty() && values.len() <= 100, "{doc}");
            assert_eq!(values.len(), counts.len(), "{doc}");
            let total: u64 = counts.iter().map(|c| c.as_u64().unwrap()).sum();
            assert_eq!(histogram["Count"].as_u64(), Some(total), "{doc}");
            for key in ["Sum", "Min", "Max"] {
                assert!(histogram[key].is_number(), "{doc}");
            }
        } else {
            assert!(value.is_number(), "{name} has no number in {doc}");
        }
    }
}

/// The sum of `metric` over the documents matching `pick`.
pub(crate) fn total(docs: &[(usize, Value)], metric: &str, pick: impl Fn(&Value) -> bool) -> u64 {
    docs.iter()
        .filter(|(_, d)| pick(d))
        .filter_map(|(_, d)| d.get(metric)?.as_u64())
        .sum()
}

/// An OAuth flow under the Runtime API double: authorize, the token exchange (a provider call
/// that works), then a refresh the provider fails (5xx). Each outcome with, for the refresh,
/// the refresh token it sent.
pub(crate) async fn oauth_flow(
    api: &RuntimeApi,
    provider: &ProviderDouble,
    verifier: &str,
) -> [(Outcome, String); 3] {
    let (authorize, status, body) = invoke(
        api,
        "POST",
        "/oauth/authorize/googledrive",
        Some(json!({"code_verifier": verifier, "redirect_uri": "apuntador://oauth-callback"})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let code = provider.consent(body["authorization_url"].as_str().unwrap());
    let (token, status, tokens) = invoke(
        api,
        "POST",
        "/oauth/token/googledrive",
        Some(json!({"code": code, "code_verifier": verifier, "state": body["state"]})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    provider.set_mode(Mode::ServerError);
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (refresh, status, _) = invoke(
        api,
        "POST",
        "/oauth/refresh/googledrive",
        Some(json!({"refresh_token": refresh_token})),
        None,
    )
    .await;
    assert!(status >= 500, "{status}");
    [
        (authorize, String::new()),
        (token, String::new()),
        (refresh, refresh_token),
    ]
}

/// The function under the Runtime API double with `lambda_env(otlp)` and `extra`.
pub(crate) async fn lambda_process(
    extra: Vec<(String, String)>,
    otlp: &str,
) -> (RuntimeApi, Process) {
    let api = RuntimeApi::start().await;
    let mut env = lambda_env(otlp);
    env.push(("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string()));
    env.extend(extra);
    let process = Process::spawn(&binary(), &[], &env);
    (api, process)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_invocation_writes_its_metrics_after_its_response() {
    let provider = ProviderDouble::start().await;
    let receiver = OtlpReceiver::start().await;
    let (api, process) =
        lambda_process(provider.env(), &format!("http://{}", receiver.http_addr)).await;

    let [authorize, token, refresh] = oauth_flow(&api, &provider, VERIFIER).await;
    let refresh_token = refresh.1.clone();
    let [authorize, token, refresh] = [authorize.0, token.0, refresh.0];
    let (missing, status, _) = invoke(&api, "GET", "/no-such-route", None, None).await;
    assert_eq!(status, 404);
    process
        .wait_for_line(
            &format!(
                "\"function_request_id\":\"{}\",\"trace_id\"",
                missing.request_id
            ),
            Duration::from_secs(5),
        )
        .expect("the last invocation's metric document");

    let docs = documents(&process);
    let lines = process.lines();
    let root = crate::device_aws::root();
    for outcome in [&authorize, &token, &refresh, &missing] {
        let own: Vec<&(usize, Value)> = docs
            .iter()
            .filter(|(_, d)| d["function_request_id"] == outcome.request_id.as_str())
            .collect();
        assert!(!own.is_empty(), "no document for {}", outcome.request_id);
        let access = lines
            .iter()
            .position(|l| {
                l.contains("request completed") && l.contains(outcome.request_id.as_str())
            })
            .expect("access line");
        for (at, doc) in own {
            assert_eq!(doc["trace_id"], root.as_str(), "{doc}");
            assert_eq!(doc["service"], "apuntador-e2e", "{doc}");
            assert_eq!(
                doc["_aws"]["CloudWatchMetrics"][0]["Namespace"],
                "Apuntador"
            );
            assert!(
                *at > access,
                "written after the invocation's access line: {doc}"
            );
        }
    }
    let of = |outcome: &Outcome| {
        let id = outcome.request_id.clone();
        move |d: &Value| d["function_request_id"] == id.as_str()
    };
    assert_eq!(total(&docs, "ColdStart", of(&authorize)), 1);
    assert_eq!(total(&docs, "ColdStart", |_| true), 1, "one cold start");
    let route = |r: &'static str| move |d: &Value| d["route"] == r;
    assert_eq!(
        total(&docs, "Requests", route("/oauth/token/{provider}")),
        1
    );
    assert_eq!(total(&docs, "5xx", route("/oauth/token/{provider}")), 0);
    assert_eq!(total(&docs, "5xx", route("/oauth/refresh/{provider}")), 1);
    assert_eq!(total(&docs, "4xx", route("(unmatched)")), 1);
    let google = |d: &Value| d["dependency"] == "googledrive";
    assert_eq!(total(&docs, "DependencyCalls", google), 2);
    assert_eq!(
        total(&docs, "DependencyFailures", google),
        1,
        "the 5xx, not the 200"
    );
    assert_eq!(
        total(&docs, "DependencyFailures", |d| of(&token)(d) && google(d)),
        0
    );
    let token_route = docs
        .iter()
        .find(|(_, d)| of(&token)(d) && d["route"] == "/oauth/token/{provider}")
        .map(|(_, d)| d)
        .expect("the token route's document");
    assert_eq!(
        token_route["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["service", "route"], ["service"]])
    );
    let latency = &token_route["Latency"];
    assert_eq!(latency["Count"], 1);
    assert!(latency["Max"].as_f64().unwrap() > 0.0, "{latency}");
    assert!(
        docs.iter().all(|(_, d)| d.get("device_id").is_none()
            && !d.to_string().contains(VERIFIER)
            && !d.to_string().contains(refresh_token.as_str())),
        "no id or credential in a metric document"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_an_exporter_loses_are_counted() {
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let (api, process) = lambda_process(Vec::new(), &dead).await;
    let (_, _, _) = invoke(&api, "GET", "/no-such-route", None, None).await;
    let (_, _, _) = invoke(&api, "GET", "/no-such-route", None, None).await;
    let (last, _, _) = invoke(&api, "GET", "/no-such-route", None, None).await;
    process
        .wait_for_line(
            &format!("\"function_request_id\":\"{}\"", last.request_id),
            Duration::from_secs(5),
        )
        .expect("documents");
    // The first invocation's export fails after its documents are written: the loss shows
    // in the next invocation's.
    std::thread::sleep(Duration::from_millis(200));
    let docs = documents(&process);
    assert!(
        total(&docs, "SpanExportFailures", |_| true) >= 1,
        "{docs:?}"
    );
    assert!(total(&docs, "SpansDropped", |_| true) >= 2, "{docs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_powertools_and_otel_switches_turn_metrics_off() {
    let receiver = OtlpReceiver::start().await;
    for switch in [
        ("POWERTOOLS_METRICS_DISABLED", "true"),
        ("OTEL_METRICS_EXPORTER", "none"),
    ] {
        let (api, process) = lambda_process(
            vec![(switch.0.to_owned(), switch.1.to_owned())],
            &format!("http://{}", receiver.http_addr),
        )
        .await;
        let (outcome, status, _) = invoke(&api, "GET", "/no-such-route", None, None).await;
        assert_eq!(status, 404);
        process
            .wait_for_line(&outcome.request_id, Duration::from_secs(5))
            .expect("a line of the invocation");
        // A second invocation: the first one's flush is over by the time it is answered.
        invoke(&api, "GET", "/no-such-route", None, None).await;
        assert!(
            process.lines().iter().all(|l| !l.contains("\"_aws\"")),
            "{switch:?}: {:?}",
            process.lines()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_writes_its_metrics_on_a_timer_and_at_shutdown() {
    let (mut process, url) = crate::server::start(&[
        ("OTEL_TRACES_EXPORTER", "none"),
        ("POWERTOOLS_METRICS_NAMESPACE", "Teleprompter"),
    ]);
    let client = reqwest::Client::new();
    for _ in 0..25 {
        let response = client.get(format!("{url}/health")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = client
        .get(format!("{url}/no-such-route"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(
        process.lines().iter().all(|l| !l.contains("\"_aws\"")),
        "nothing is written per request"
    );
    assert!(process.terminate(Duration::from_secs(10)).is_some());
    let docs = documents(&process);
    assert!(!docs.is_empty(), "{:?}", process.lines());
    for (_, doc) in &docs {
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "Teleprompter"
        );
        assert_eq!(doc["service"], "apuntador-server-e2e");
        assert!(doc.get("function_request_id").is_none(), "{doc}");
        assert!(doc.get("ColdStart").is_none(), "{doc}");
    }
    assert_eq!(total(&docs, "Requests", |d| d["route"] == "/health"), 25);
    assert_eq!(total(&docs, "4xx", |d| d["route"] == "(unmatched)"), 1);
    let health = docs
        .iter()
        .find(|(_, d)| d["route"] == "/health")
        .map(|(_, d)| d)
        .unwrap();
    assert_eq!(health["Latency"]["Count"], 25);
}

//! Sampling in server mode, seen in the spans the binary prints (`OTEL_TRACES_EXPORTER=console`):
//! X-Ray's centralized rules from a double of the sampling API (rule matching per route and
//! method, borrowing, quotas from targets, statistics reported back, a rule change noticed,
//! the fallback when the proxy is down), ratios per route, and health checks left untraced.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::sampling::{SamplingApiDouble, rule};
use crate::support::{Process, binary, closed_port};

use crate::server::{printed_server_spans, start_printing_spans as start};

async fn get(client: &reqwest::Client, url: &str, times: usize) {
    for _ in 0..times {
        let response = client.get(url).send().await.unwrap();
        assert!(response.headers().contains_key("x-trace-id"));
    }
}

/// The spans printed after the process stopped, as `url.path` values.
fn span_paths(process: &mut Process) -> Vec<String> {
    printed_server_spans(process)
        .iter()
        .filter_map(|s| s["attributes"]["url.path"].as_str().map(str::to_owned))
        .collect()
}

fn count(paths: &[String], path: &str) -> usize {
    paths.iter().filter(|p| *p == path).count()
}

/// The summed counts reported for a rule across every `SamplingTargets` call.
fn reported(calls: &[Value], rule_name: &str) -> (u64, u64, u64) {
    let mut sums = (0, 0, 0);
    for call in calls {
        for doc in call["SamplingStatisticsDocuments"].as_array().unwrap() {
            if doc["RuleName"] == rule_name {
                sums.0 += doc["RequestCount"].as_u64().unwrap();
                sums.1 += doc["SampledCount"].as_u64().unwrap();
                sums.2 += doc["BorrowCount"].as_u64().unwrap();
            }
        }
    }
    sums
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn x_ray_rules_decide_per_route_and_the_statistics_go_back() {
    let double = SamplingApiDouble::start(vec![
        rule(
            "Default",
            json!({"Priority": 10000, "FixedRate": 0.0, "ReservoirSize": 1}),
        ),
        rule(
            "root-page",
            json!({"Priority": 10, "HTTPMethod": "GET", "URLPath": "/", "FixedRate": 1.0}),
        ),
        rule(
            "not-found",
            json!({"Priority": 20, "URLPath": "/nope*", "FixedRate": 0.0}),
        ),
        rule(
            "other-service",
            json!({"Priority": 1, "ServiceName": "billing", "FixedRate": 1.0}),
        ),
        rule(
            "wrong-version",
            json!({"Priority": 2, "Version": 2, "FixedRate": 1.0}),
        ),
    ])
    .await;
    let arg = format!("endpoint={},targets_interval=1", double.endpoint());
    let (mut process, url) = start(&[
        ("OTEL_TRACES_SAMPLER", "xray"),
        ("OTEL_TRACES_SAMPLER_ARG", &arg),
    ]);
    assert!(
        process
            .wait_for_line("X-Ray sampling rules loaded", Duration::from_secs(10))
            .is_some_and(|l| l.contains("\"rules\":4")),
        "the version-2 rule is skipped: {:?}",
        process.lines()
    );
    let rules_calls = double.calls("/GetSamplingRules");
    assert_eq!(rules_calls[0], json!({}), "GetSamplingRules body");

    let client = reqwest::Client::new();
    get(&client, &format!("{url}/"), 10).await;
    get(&client, &format!("{url}/nope"), 10).await;
    get(&client, &format!("{url}/other"), 5).await;
    get(&client, &format!("{url}/health"), 5).await;

    // Statistics of those requests arrive within a targets interval (1 s here).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let calls = loop {
        let calls = double.calls("/SamplingTargets");
        if reported(&calls, "root-page").0 >= 10 && reported(&calls, "not-found").0 >= 10 {
            break calls;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "statistics not reported: {calls:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let paths = span_paths(&mut process);

    assert_eq!(reported(&calls, "root-page"), (10, 10, 0));
    assert_eq!(count(&paths, "/"), 10, "FixedRate 1.0: every GET /");
    assert_eq!(reported(&calls, "not-found"), (10, 0, 0));
    assert_eq!(count(&paths, "/nope"), 0, "FixedRate 0, no reservoir");
    let (requests, sampled, borrowed) = reported(&calls, "Default");
    assert_eq!(requests, 5, "/other falls to Default");
    assert!(
        (1..=2).contains(&sampled) && borrowed == sampled,
        "Default borrows one trace a second before X-Ray assigns a quota: {sampled}/{borrowed}"
    );
    assert_eq!(count(&paths, "/other") as u64, sampled);
    assert_eq!(reported(&calls, "other-service"), (0, 0, 0));
    assert_eq!(count(&paths, "/health"), 0, "health checks are not traced");

    for call in &calls {
        for doc in call["SamplingStatisticsDocuments"].as_array().unwrap() {
            let id = doc["ClientID"].as_str().unwrap();
            assert!(
                id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "ClientID {id}"
            );
            let at = doc["Timestamp"].as_f64().unwrap();
            assert!(
                (at - now_secs()).abs() < 120.0,
                "Timestamp in epoch seconds: {at}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_from_x_ray_apply_and_a_rule_change_is_fetched_at_once() {
    let double = SamplingApiDouble::start(vec![
        rule("Default", json!({"Priority": 10000, "FixedRate": 0.0})),
        rule(
            "not-found",
            json!({"Priority": 20, "URLPath": "/nope*", "FixedRate": 0.0, "ReservoirSize": 2}),
        ),
    ])
    .await;
    double.set_targets(json!({
        "SamplingTargetDocuments": [{
            "RuleName": "not-found", "FixedRate": 0.0, "ReservoirQuota": 3,
            "ReservoirQuotaTTL": now_secs() + 300.0, "Interval": 1
        }],
        "LastRuleModification": now_secs() + 5.0,
        "UnprocessedStatistics": []
    }));
    let arg = format!(
        "endpoint={},targets_interval=1,polling_interval=300",
        double.endpoint()
    );
    let (mut process, url) = start(&[
        ("OTEL_TRACES_SAMPLER", "xray"),
        ("OTEL_TRACES_SAMPLER_ARG", &arg),
    ]);
    // The first report gets the quota, and says the rules changed after we fetched them.
    double
        .wait_calls("/SamplingTargets", 1, Duration::from_secs(10))
        .await;
    double
        .wait_calls("/GetSamplingRules", 2, Duration::from_secs(5))
        .await;
    let client = reqwest::Client::new();
    get(&client, &format!("{url}/nope"), 12).await;
    let paths = span_paths(&mut process);
    let sampled = count(&paths, "/nope");
    assert!(
        (3..=5).contains(&sampled),
        "a quota of 3 a second (no borrowing), rate 0: {sampled} of 12"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_proxy_the_fallback_samples_a_few_and_says_so_once() {
    let arg = format!(
        "endpoint=http://127.0.0.1:{},targets_interval=1",
        closed_port()
    );
    let (mut process, url) = start(&[
        ("OTEL_TRACES_SAMPLER", "xray"),
        ("OTEL_TRACES_SAMPLER_ARG", &arg),
    ]);
    let client = reqwest::Client::new();
    for _ in 0..60 {
        let response = client.get(format!("{url}/")).send().await.unwrap();
        assert_eq!(response.status(), 200, "requests are served all the same");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let paths = span_paths(&mut process);
    let sampled = count(&paths, "/");
    assert!(
        (1..=12).contains(&sampled),
        "one a second and 5% of the rest: {sampled} of 60"
    );
    let warnings = process.count_lines(&["X-Ray sampling:", "failed"]);
    assert_eq!(
        warnings,
        1,
        "one warning per episode: {:?}",
        process.lines()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn route_ratios_pick_routes_and_health_checks_are_opt_in() {
    let (mut process, url) = start(&[("TRACE_SAMPLING_ROUTES", "/=0,/health*=1")]);
    let client = reqwest::Client::new();
    get(&client, &format!("{url}/"), 5).await;
    get(&client, &format!("{url}/nope"), 5).await;
    get(&client, &format!("{url}/health"), 3).await;
    let paths = span_paths(&mut process);
    assert_eq!(count(&paths, "/"), 0, "ratio 0 for /");
    assert_eq!(
        count(&paths, "/nope"),
        5,
        "unlisted: parent-based always on"
    );
    assert_eq!(
        count(&paths, "/health"),
        0,
        "a ratio does not bring back health checks"
    );

    let (mut process, url) = start(&[("TRACE_HEALTH_CHECKS", "true")]);
    get(&client, &format!("{url}/health"), 3).await;
    assert_eq!(count(&span_paths(&mut process), "/health"), 3);

    let err = Process::spawn(
        &binary(),
        &[],
        &[
            ("PORT".to_owned(), "0".to_owned()),
            ("TRACE_SAMPLING_ROUTES".to_owned(), "/=often".to_owned()),
        ],
    );
    let line = err
        .wait_for_line("TRACE_SAMPLING_ROUTES", Duration::from_secs(10))
        .expect("a start-up error naming the variable");
    assert!(line.contains("/=often"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsampled_request_keeps_its_ids_in_its_log_lines() {
    let double = crate::support::provider_double::ProviderDouble::start().await;
    let mut env: Vec<(String, String)> = double.env();
    env.push(("TRACE_SAMPLING_ROUTES".into(), "/oauth/revoke/*=0".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut process, url) = start(&env);
    let client = reqwest::Client::new();
    let revoke = |header: Option<String>| {
        let mut request = client
            .post(format!("{url}/oauth/revoke/dropbox"))
            .json(&json!({"token": "unsampled-token-0123456789"}));
        if let Some(header) = header {
            request = request.header("x-amzn-trace-id", header);
        }
        request.send()
    };
    // A sampled request: its access line and its span carry the id its response gave.
    let sampled = client.get(format!("{url}/nope")).send().await.unwrap();
    let sampled_id = sampled.headers()["x-trace-id"].to_str().unwrap().to_owned();
    // Dropped by the route ratio (no incoming header), then by the caller's Sampled=0.
    let first = revoke(None).await.unwrap();
    assert_eq!(first.status(), 200);
    let first_id = first.headers()["x-trace-id"].to_str().unwrap().to_owned();
    let root = format!("1-{}-0000000000000000000c0ffe", crate::support::epoch_hex());
    let second = revoke(Some(format!(
        "Root={root};Parent=2222222222222222;Sampled=0"
    )))
    .await
    .unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-trace-id"].to_str().unwrap(), root);

    assert_eq!(double.forms().len(), 2, "the provider was called twice");
    assert!(
        double.trace_headers().is_empty(),
        "a provider gets no X-Ray header"
    );
    let paths = span_paths(&mut process);
    assert!(
        !paths.iter().any(|p| p.starts_with("/oauth")),
        "nothing exported: {paths:?}"
    );
    assert_eq!(paths, ["/nope"], "only the sampled request");
    assert_eq!(
        process.count_lines(&[
            "\"type\":\"span\"",
            &format!("\"trace_id\":\"{sampled_id}\"")
        ]),
        1,
        "its span has the X-Trace-ID"
    );
    for id in [&sampled_id, &first_id, &root] {
        assert_eq!(
            process.count_lines(&["request completed", &format!("\"trace_id\":\"{id}\"")]),
            1,
            "the access line carries the trace id {id}"
        );
    }
}

//! The Logs Insights queries over `aws/spans` (`deploy/queries/spans/`, issue 24 item 5) read
//! fields the binary's spans really carry: the binary runs an OAuth flow, a failing provider
//! call and an unknown path under the Runtime API double, exporting through the SigV4 transport
//! to the verifying double of X-Ray's OTLP endpoint; the spans the double decoded (protobuf)
//! are matched against the `fields:` line of each query in `deploy/queries/spans/README.md`
//! (which `scripts/check-template.py` holds to the query texts), on the spans each query selects.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::otlp::ReceivedSpan;
use crate::support::provider_double::{Mode, ProviderDouble};
use crate::support::runtime_api::{Event, Outcome, RuntimeApi};
use crate::support::xray_otlp::{XrayOtlpDouble, test_credentials};
use crate::support::{Process, binary, closed_port, epoch_hex, http_api_event, lambda_env};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;
const VERIFIER: &str = "span-queries-verifier-span-queries-verifier-0123";

/// Each query's name and the span fields its `fields:` line lists.
fn query_fields() -> BTreeMap<String, Vec<String>> {
    readme_field_lines("deploy/queries/spans/README.md")
        .into_iter()
        .map(|(name, _, fields)| (name, fields))
        .collect()
}

/// The `fields:` (and `platform:`) lines of a queries README (path from the repository root):
/// per `## <query>` heading, the prefix and the comma-separated names.
pub(crate) fn readme_field_lines(path: &str) -> Vec<(String, String, Vec<String>)> {
    let readme = std::fs::read_to_string(crate::support::repo_root().join(path)).unwrap();
    let mut out = Vec::new();
    let mut heading = None;
    for line in readme.lines() {
        if let Some(name) = line.strip_prefix("## ") {
            heading = Some(name.trim().to_owned());
            continue;
        }
        let Some((prefix, list)) = line.split_once(':') else {
            continue;
        };
        if let (true, Some(name)) = (matches!(prefix, "fields" | "platform"), &heading) {
            let fields = list.split(',').map(|f| f.trim().to_owned()).collect();
            out.push((name.clone(), prefix.to_owned(), fields));
        }
    }
    out
}

/// The spans `query` looks at, as its filter selects them.
fn selected<'a>(query: &str, spans: &'a [ReceivedSpan], root: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| match query {
            "slowest-operations" => s.kind == SERVER,
            "errors" => s.status_code == STATUS_ERROR || s.attr("error.type").is_some(),
            "provider-latency" => s.kind == CLIENT && s.attr("server.address").is_some(),
            "one-trace" => s.trace_id == root,
            other => panic!("a query this test does not know: {other}; add its selection"),
        })
        .collect()
}

/// Whether `field` (as `aws/spans` names it) is there on `span`.
fn carries(span: &ReceivedSpan, field: &str) -> bool {
    let hex_id = |id: &str, len: usize| id.len() == len && id.chars().any(|c| c != '0');
    match field {
        "traceId" => hex_id(&span.trace_id, 32),
        "spanId" => hex_id(&span.span_id, 16),
        "parentSpanId" => hex_id(&span.parent_span_id, 16),
        "name" => !span.name.is_empty(),
        "kind" => span.kind != 0,
        "startTimeUnixNano" => span.start_time_unix_nano > 0,
        "endTimeUnixNano" => span.end_time_unix_nano > 0,
        // Computed by X-Ray from the two times.
        "durationNano" => {
            span.end_time_unix_nano >= span.start_time_unix_nano && span.start_time_unix_nano > 0
        }
        "status.code" => span.status_present,
        "status.message" => !span.status_message.is_empty(),
        other => {
            if let Some(key) = other.strip_prefix("resource.attributes.") {
                span.resource_attr(key).is_some()
            } else if let Some(key) = other.strip_prefix("attributes.") {
                span.attr(key).is_some()
            } else {
                panic!("a field form this test does not know: {other}")
            }
        }
    }
}

async fn invoke(
    api: &RuntimeApi,
    root: &str,
    method: &str,
    path: &str,
    query: &str,
    body: Option<Value>,
) -> (Outcome, Value) {
    let outcome = api
        .invoke(Event {
            body: http_api_event(method, path, query, body.as_ref()),
            trace_header: Some(format!("Root={root};Parent=53995c3f42cd8ad8;Sampled=1")),
        })
        .await;
    let body = serde_json::from_str(outcome.json()["body"].as_str().unwrap_or("null"))
        .unwrap_or(Value::Null);
    (outcome, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_field_each_span_query_reads_is_in_the_exported_spans() {
    let credentials = test_credentials("token-queries");
    let xray = XrayOtlpDouble::start(credentials.clone(), "eu-west-1").await;
    let provider = ProviderDouble::start().await;
    let api = RuntimeApi::start().await;
    let mut env = lambda_env(&format!("http://127.0.0.1:{}", closed_port()));
    env.extend(provider.env());
    env.extend(
        [
            ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://xray.eu-west-1.amazonaws.com/v1/traces".to_owned(),
            ),
            ("AWS_ENDPOINT_URL_XRAY", xray.url()),
            ("AWS_ACCESS_KEY_ID", credentials.access_key_id().to_owned()),
            (
                "AWS_SECRET_ACCESS_KEY",
                credentials.secret_access_key().to_owned(),
            ),
            ("AWS_SESSION_TOKEN", "token-queries".to_owned()),
            // As the template deploys it: service.name is what the queries filter on.
            ("OTEL_SERVICE_NAME", "apuntador-backend".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let mut process = Process::spawn(&binary(), &[], &env);
    let root = format!("1-{}-0b0b0b0b0b0b0b0b0b0b0b0b", epoch_hex());

    // An OAuth flow with its provider call, then the provider failing, then an unknown path.
    let (authorize, body) = invoke(
        &api,
        &root,
        "POST",
        "/oauth/authorize/googledrive",
        "",
        Some(json!({"code_verifier": VERIFIER, "redirect_uri": "apuntador://oauth-callback"})),
    )
    .await;
    assert_eq!(authorize.json()["statusCode"], 200, "{}", authorize.body);
    let state = body["state"].as_str().unwrap().to_owned();
    let code = provider.consent(body["authorization_url"].as_str().unwrap());
    let (token, tokens) = invoke(
        &api,
        &root,
        "POST",
        "/oauth/token/googledrive",
        "",
        Some(json!({"code": code, "code_verifier": VERIFIER, "state": state})),
    )
    .await;
    assert_eq!(token.json()["statusCode"], 200, "{}", token.body);
    provider.set_mode(Mode::ServerError);
    let (refresh, _) = invoke(
        &api,
        &root,
        "POST",
        "/oauth/refresh/googledrive",
        "",
        Some(json!({"refresh_token": tokens["refresh_token"]})),
    )
    .await;
    assert!(
        refresh.json()["statusCode"].as_u64().unwrap_or(0) >= 500,
        "{}",
        refresh.body
    );
    let (missing, _) = invoke(&api, &root, "GET", "/no-such-route", "", None).await;
    assert_eq!(missing.json()["statusCode"], 404);

    // Four SERVER spans and two provider CLIENT spans.
    let spans = xray.wait_for_spans(6, Duration::from_secs(10)).await;
    assert!(spans.len() >= 6, "{spans:?}");
    let trace_id: String = root[2..].replace('-', "");

    let queries = query_fields();
    assert_eq!(
        queries.keys().cloned().collect::<Vec<_>>(),
        [
            "errors",
            "one-trace",
            "provider-latency",
            "slowest-operations"
        ],
        "a query in deploy/queries/spans/README.md without its selection here, or one gone"
    );
    for (query, fields) in &queries {
        let chosen = selected(query, &spans, &trace_id);
        assert!(!chosen.is_empty(), "{query}: no exported span is selected");
        for field in fields {
            assert!(
                chosen.iter().any(|s| carries(s, field)),
                "{query}: no selected span carries {field}"
            );
        }
    }
    // What the queries filter on is on every span they must find.
    assert!(
        spans
            .iter()
            .all(|s| carries(s, "resource.attributes.service.name"))
    );
    assert!(
        selected("slowest-operations", &spans, &trace_id)
            .iter()
            .filter(|s| s.attr("http.route").is_some())
            .count()
            >= 3,
        "routed requests carry their route template"
    );
    assert!(process.terminate(Duration::from_secs(10)).is_some());
}

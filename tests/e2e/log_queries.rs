//! The saved Logs Insights queries over the backend's lines (`deploy/queries/logs/`, issue 25
//! item 2) read fields the binary really writes, with the JSON type each query needs, and
//! every line carries the keys a Powertools logger writes: the binary runs under the Runtime
//! API double through an OAuth flow, a failing provider call, an unknown path and a device's
//! enrollment, renewal and revocation (local CA files); its stdout is matched against the
//! `fields:` line of each query in `deploy/queries/logs/README.md` (which
//! `scripts/check-template.py` holds to the query texts), on the lines each query selects.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::device_aws::{enroll_on, invoke, renew_on};
use crate::support::otlp::OtlpReceiver;
use crate::support::provider_double::ProviderDouble;
use crate::support::runtime_api::RuntimeApi;
use crate::support::{Process, binary, lambda_env};

const VERIFIER: &str = "log-queries-verifier-log-queries-verifier-0123456";

/// Each query's name and the `(field, type)` pairs of its `fields:` (or `platform:`) line.
fn query_fields() -> BTreeMap<String, (bool, Vec<(String, String)>)> {
    crate::span_queries::readme_field_lines("deploy/queries/logs/README.md")
        .into_iter()
        .map(|(name, prefix, fields)| {
            let typed = fields
                .iter()
                .map(|f| {
                    let (field, kind) = f.split_once(':').unwrap_or_else(|| {
                        panic!("{name}: {f:?} has no type (field:string|number|bool)")
                    });
                    (field.to_owned(), kind.to_owned())
                })
                .collect();
            (name, (prefix == "platform", typed))
        })
        .collect()
}

/// The value at a dotted path (`record.metrics.initDurationMs`).
fn at<'a>(line: &'a Value, field: &str) -> Option<&'a Value> {
    line.get(field)
        .or_else(|| field.split('.').try_fold(line, |value, key| value.get(key)))
}

fn has_type(value: &Value, kind: &str) -> bool {
    match kind {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "bool" => value.is_boolean(),
        other => panic!("a type this test does not know: {other}"),
    }
}

/// The lines `query` reads, as its filter selects them.
fn selected<'a>(query: &str, lines: &'a [Value], trace_id: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| match query {
            "one-trace" => l["trace_id"] == trace_id,
            "errors" => {
                l["level"] == "ERROR"
                    || l["level"] == "WARN"
                    || l["status"].as_u64().is_some_and(|s| s >= 500)
            }
            "slowest-routes" => l["message"] == "request completed",
            "provider-failures" => l.get("DependencyCalls").is_some(),
            "certificate-events" => l.get("certificate_event").is_some(),
            other => panic!("a query this test does not know: {other}; add its selection"),
        })
        .collect()
}

/// A `platform.report` record as Lambda writes it to a function with the JSON log format
/// (AWS Lambda Developer Guide, "Configuring JSON and plain text log formats", and the
/// Telemetry API's `platform.report` schema); only a cold start's carries `initDurationMs`.
fn platform_report() -> Value {
    json!({
        "time": "2026-12-05T10:00:00.000Z",
        "type": "platform.report",
        "record": {
            "requestId": "6d68ca91-49c9-448d-89b8-7ca3e6dc66aa",
            "metrics": {
                "durationMs": 4.2,
                "billedDurationMs": 5,
                "memorySizeMB": 128,
                "maxMemoryUsedMB": 12,
                "initDurationMs": 21.5
            },
            "status": "success"
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_field_each_log_query_reads_is_in_the_lines_with_its_type() {
    let provider = ProviderDouble::start().await;
    let api = RuntimeApi::start().await;
    let receiver = OtlpReceiver::start().await;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).unwrap();
    let dir = std::env::temp_dir().join(format!("apuntador-logq-{}", u64::from_le_bytes(suffix)));
    let mut env = lambda_env(&format!("http://{}", receiver.http_addr));
    env.extend(provider.env());
    env.extend(
        [
            ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()),
            ("INFRASTRUCTURE_BASE_DIR", dir.display().to_string()),
            ("ENVIRONMENT", "local".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let process = Process::spawn(&binary(), &[], &env);

    // An OAuth flow with its provider call, then the provider failing, then an unknown path.
    crate::metrics::oauth_flow(&api, &provider, VERIFIER).await;
    let (_, status, _) = invoke(&api, "GET", "/no-such-route", None, None).await;
    assert_eq!(status, 404);
    // A device's certificate: issued, renewed, revoked.
    let (cert, serial) = enroll_on(&api, "logq-device-1").await;
    let (status, renewed) = renew_on(&api, "logq-device-1", &serial, &cert).await;
    assert_eq!(status, 200, "{renewed}");
    let (_, status, _) = invoke(
        &api,
        "POST",
        "/device/revoke",
        Some(json!({"device_id": "logq-device-1", "reason": "lost"})),
        renewed["certificate"].as_str(),
    )
    .await;
    assert_eq!(status, 200);
    // The last invocation's metrics are written after its response.
    process
        .wait_for_line("CertificatesRevoked", Duration::from_secs(5))
        .expect("the last invocation's metric document");

    let lines: Vec<Value> = process
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect();
    let root = crate::device_aws::root();
    let trace_id = root.as_str();

    let queries = query_fields();
    assert_eq!(
        queries.keys().cloned().collect::<Vec<_>>(),
        [
            "certificate-events",
            "cold-starts",
            "errors",
            "one-trace",
            "provider-failures",
            "slowest-routes"
        ],
        "a query in deploy/queries/logs/README.md without its selection here, or one gone"
    );
    let mut on_disk: Vec<String> =
        std::fs::read_dir(crate::support::repo_root().join("deploy/queries/logs"))
            .unwrap()
            .filter_map(|e| {
                e.unwrap()
                    .file_name()
                    .to_str()?
                    .strip_suffix(".query")
                    .map(str::to_owned)
            })
            .collect();
    on_disk.sort();
    assert_eq!(on_disk, queries.keys().cloned().collect::<Vec<_>>());

    for (query, (platform, fields)) in &queries {
        let text = std::fs::read_to_string(
            crate::support::repo_root().join(format!("deploy/queries/logs/{query}.query")),
        )
        .unwrap();
        for (field, _) in fields {
            assert!(
                text.contains(field.as_str()),
                "{query}: the README lists {field}, which the query does not read"
            );
        }
        let chosen: Vec<Value> = if *platform {
            vec![platform_report()]
        } else {
            selected(query, &lines, trace_id)
                .into_iter()
                .cloned()
                .collect()
        };
        assert!(!chosen.is_empty(), "{query}: no line is selected");
        for (field, kind) in fields {
            assert!(
                chosen
                    .iter()
                    .any(|l| at(l, field).is_some_and(|v| has_type(v, kind))),
                "{query}: no selected line carries {field} as a {kind}"
            );
            for line in &chosen {
                if let Some(value) = at(line, field) {
                    assert!(
                        has_type(value, kind),
                        "{query}: {field} is {value} on {line}, not a {kind}"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_lines_carry_what_a_powertools_logger_writes() {
    let receiver = OtlpReceiver::start().await;
    let (api, process) =
        crate::metrics::lambda_process(Vec::new(), &format!("http://{}", receiver.http_addr)).await;
    let (first, _, _) = invoke(&api, "GET", "/no-such-route", None, None).await;
    let (second, _, _) = invoke(&api, "GET", "/no-such-route", None, None).await;
    process
        .wait_for_line(&second.request_id, Duration::from_secs(5))
        .expect("the second invocation's lines");
    let lines: Vec<Value> = process
        .json_logs()
        .into_iter()
        .filter(|l| l.get("_aws").is_none())
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    for line in &lines {
        assert_eq!(line["service"], "apuntador-e2e", "{line}");
        assert_eq!(line["function_name"], "apuntador-test", "{line}");
        assert_eq!(line["function_memory_size"], 128, "{line}");
    }
    let root = crate::device_aws::root();
    for (outcome, cold) in [(&first, true), (&second, false)] {
        let inside: Vec<&Value> = lines
            .iter()
            .filter(|l| l["function_request_id"] == outcome.request_id.as_str())
            .collect();
        assert!(!inside.is_empty(), "no line of {}", outcome.request_id);
        for line in inside {
            assert_eq!(line["cold_start"], cold, "{line}");
            assert_eq!(line["trace_id"], root.as_str(), "{line}");
            assert_eq!(line["xray_trace_id"], line["trace_id"], "{line}");
            assert!(
                line["function_arn"].as_str().is_some_and(
                    |a| a.starts_with("arn:aws:lambda:") && a.ends_with(":apuntador-test")
                ),
                "{line}"
            );
        }
    }
}

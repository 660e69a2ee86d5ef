//! Traces as X-Ray stores them: the binary under the Runtime API double, sending invocations
//! with known X-Ray headers, its spans reaching moto's X-Ray API (`PutTraceSegments`) by both
//! transports, and the documents read back (`BatchGetTraces`, `GetTraceSummaries`):
//!
//! - **collector**: OTLP/HTTP → rotel, a real collector with an X-Ray exporter → moto;
//! - **daemon**: `OTEL_TRACES_EXPORTER=xray` → UDP → the daemon double (which checks every
//!   datagram: header line, one document, size) → moto.
//!
//! moto validates almost nothing, so every stored document also goes through
//! `check_segment_document` (field names and types, id and trace id formats, epoch-second
//! times, annotation keys and values, namespaces: X-Ray's segment document schema).
//!
//! What each transport is asked to show differs by what its translator does. The daemon path
//! translates with `opentelemetry-aws` (a port of the ADOT awsxray exporter's rules): facade
//! subsegments, `namespace` aws/remote, names, `error`/`fault`, annotations are all asserted
//! there. rotel's exporter is simpler than ADOT's: it keeps trace, ids, parents, times and the
//! request method, but gives no `namespace`, reads no integer status code (so no
//! `error`/`fault`), reads annotations only from `annotation.`-prefixed string attributes (not
//! `aws.xray.annotations`) and forwards span names verbatim (X-Ray refuses the `{}` of a route
//! template; ADOT strips them). The collector test asserts what survives any collector, and
//! notes rotel's gaps where it meets them instead of bending our spans to its exporter.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::provider_double::{Mode, ProviderDouble, client_secret};
use crate::support::runtime_api::{Event, Outcome, RuntimeApi};
use crate::support::xray::{
    DaemonDouble, Rotel, XrayApi, check_segment_document, epoch_seconds_now, flatten,
};
use crate::support::{Process, binary, epoch_hex, http_api_event, lambda_env, moto};

const PARENT: &str = "53995c3f42cd8ad8";
const VERIFIER: &str = "xray-verifier-xray-verifier-xray-verifier-xray-verifier";
const SECRET_NAME: &str = "apuntador/oauth-clients";
const WAIT: Duration = Duration::from_secs(15);

/// A trace id of now (X-Ray refuses ids older than 30 days), distinct per `n`.
fn root(n: u32) -> String {
    let pid = std::process::id();
    format!("1-{}-{pid:08x}{n:016x}", epoch_hex())
}

fn header(root: &str, sampled: u8) -> String {
    format!("Root={root};Parent={PARENT};Sampled={sampled}")
}

/// The OAuth clients in Secrets Manager (so the first OAuth route makes an AWS SDK call), the
/// provider endpoints at the double.
async fn environment(moto: &str, double: &ProviderDouble) -> Vec<(String, String)> {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new("eu-west-1"))
        .endpoint_url(moto)
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
        .create_secret()
        .name(SECRET_NAME)
        .secret_string(
            json!({
                "GOOGLE_CLIENT_ID": "googledrive-client-id",
                "GOOGLE_CLIENT_SECRET": client_secret(),
                "DROPBOX_CLIENT_ID": "dropbox-client-id",
                "ONEDRIVE_CLIENT_ID": "onedrive-client-id",
                "ONEDRIVE_CLIENT_SECRET": client_secret(),
            })
            .to_string(),
        )
        .send()
        .await
        .expect("secret created in moto");
    let mut env = lambda_env("http://127.0.0.1:1");
    env.extend(
        double
            .env()
            .into_iter()
            .filter(|(k, _)| !k.ends_with("_CLIENT_ID") && !k.ends_with("_CLIENT_SECRET")),
    );
    for (k, v) in [
        ("AWS_ENDPOINT_URL", moto),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("OAUTH_CREDENTIALS_SECRET", SECRET_NAME),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    env
}

async fn start(env: Vec<(String, String)>, extra: &[(&str, String)]) -> (RuntimeApi, Process) {
    let api = RuntimeApi::start().await;
    let mut env = env;
    env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env.push(("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string()));
    let process = Process::spawn(&binary(), &[], &env);
    (api, process)
}

async fn invoke(
    api: &RuntimeApi,
    trace_header: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (Outcome, Value) {
    let outcome = api
        .invoke(Event {
            body: http_api_event(method, path, "", body.as_ref()),
            trace_header: Some(trace_header.to_owned()),
        })
        .await;
    assert!(outcome.ok, "{path}: {}", outcome.body);
    let body = serde_json::from_str(outcome.json()["body"].as_str().unwrap_or("null"))
        .unwrap_or(Value::Null);
    (outcome, body)
}

fn status(outcome: &Outcome) -> u64 {
    outcome.json()["statusCode"].as_u64().unwrap_or_default()
}

/// What one run of the scenario sent, and what must not appear anywhere in X-Ray.
struct Ran {
    /// Authorize: the first OAuth route, which reads the clients from Secrets Manager.
    authorize: String,
    /// Token exchange: a call to the provider.
    token: String,
    /// A body that fails validation: 422.
    invalid: String,
    /// The provider answers 500: our 502.
    upstream_failure: String,
    /// `Sampled=0`.
    unsampled: String,
    /// A malformed header: answered, on a fresh trace (its id from `X-Trace-ID`).
    fresh: String,
    /// A well-formed but 2016 `Root`: answered, on a fresh trace.
    renewed: String,
    secrets: Vec<String>,
}

async fn scenario(api: &RuntimeApi, double: &ProviderDouble) -> Ran {
    let (authorize, token, invalid, upstream_failure, unsampled) =
        (root(1), root(2), root(3), root(4), root(5));
    let (outcome, answer) = invoke(
        api,
        &header(&authorize, 1),
        "POST",
        "/oauth/authorize/googledrive",
        Some(json!({"code_verifier": VERIFIER, "redirect_uri": "apuntador://oauth-callback"})),
    )
    .await;
    assert_eq!(status(&outcome), 200, "{}", outcome.body);
    let url = answer["authorization_url"].as_str().unwrap();
    let state = answer["state"].as_str().unwrap().to_owned();
    let code = double.consent(url);

    let (outcome, tokens) = invoke(
        api,
        &header(&token, 1),
        "POST",
        "/oauth/token/googledrive",
        Some(json!({"code": code, "code_verifier": VERIFIER, "state": state})),
    )
    .await;
    assert_eq!(status(&outcome), 200, "{}", outcome.body);
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let access_token = tokens["access_token"].as_str().unwrap().to_owned();

    let (outcome, _) = invoke(
        api,
        &header(&invalid, 1),
        "POST",
        "/oauth/token/googledrive",
        Some(json!({})),
    )
    .await;
    assert_eq!(status(&outcome), 422, "{}", outcome.body);

    double.set_mode(Mode::ServerError);
    let (outcome, _) = invoke(
        api,
        &header(&upstream_failure, 1),
        "POST",
        "/oauth/refresh/googledrive",
        Some(json!({"refresh_token": refresh_token})),
    )
    .await;
    double.set_mode(Mode::Normal);
    assert_eq!(status(&outcome), 502, "{}", outcome.body);

    let (outcome, _) = invoke(api, &header(&unsampled, 0), "GET", "/", None).await;
    assert_eq!(status(&outcome), 200);

    let (outcome, _) = invoke(
        api,
        "Root=1-zzzz;Parent=not-hex;Sampled=1",
        "GET",
        "/",
        None,
    )
    .await;
    assert_eq!(
        status(&outcome),
        200,
        "a malformed header still gets an answer"
    );
    let fresh = outcome.json()["headers"]["x-trace-id"]
        .as_str()
        .expect("X-Trace-ID")
        .to_owned();
    assert!(fresh.starts_with("1-") && fresh.len() == 35, "{fresh}");

    // A well-formed Root of 2016: X-Ray would refuse its segments, so it is not joined either.
    let stale = "1-5759e988-bd862e3fe1be46a994272793";
    let (outcome, _) = invoke(
        api,
        &format!("Root={stale};Parent={PARENT};Sampled=1"),
        "GET",
        "/",
        None,
    )
    .await;
    assert_eq!(status(&outcome), 200);
    let renewed = outcome.json()["headers"]["x-trace-id"]
        .as_str()
        .expect("X-Trace-ID")
        .to_owned();
    assert_ne!(
        renewed, stale,
        "a trace X-Ray would drop is replaced by a fresh one"
    );

    Ran {
        authorize,
        token,
        invalid,
        upstream_failure,
        unsampled,
        fresh,
        renewed,
        secrets: vec![
            VERIFIER.to_owned(),
            code,
            refresh_token,
            access_token,
            client_secret().to_owned(),
            crate::support::secret_key().to_owned(),
        ],
    }
}

/// Documents of a trace, each with its nested subsegments (X-Ray may nest them).
fn flattened(documents: &[Value]) -> Vec<Value> {
    documents.iter().flat_map(flatten).cloned().collect()
}

/// The invocation's document: the one whose parent is the header's `Parent`.
fn invocation(documents: &[Value]) -> &Value {
    documents
        .iter()
        .find(|d| d["parent_id"] == PARENT)
        .unwrap_or_else(|| panic!("no document with parent {PARENT}: {documents:#?}"))
}

fn children<'a>(documents: &'a [Value], parent: &Value) -> Vec<&'a Value> {
    documents
        .iter()
        .filter(|d| d["parent_id"] == parent["id"])
        .collect()
}

/// Reads every sampled trace of the scenario back and applies the checks any transport must
/// pass; returns the documents per trace (authorize, token, invalid, upstream failure, fresh).
async fn stored(xray: &XrayApi, ran: &Ran, schema_exceptions: &[&str]) -> Vec<Vec<Value>> {
    let expected = [
        (&ran.authorize, 2),
        (&ran.token, 2),
        (&ran.invalid, 1),
        (&ran.upstream_failure, 2),
        (&ran.fresh, 1),
        (&ran.renewed, 1),
    ];
    let mut traces = Vec::new();
    for (trace_id, count) in expected {
        let documents = flattened(&xray.wait_for_documents(trace_id, count, WAIT).await);
        assert!(
            documents.len() >= count,
            "trace {trace_id}: {} documents, expected {count}: {documents:#?}",
            documents.len()
        );
        for doc in &documents {
            assert_eq!(
                doc["trace_id"],
                trace_id.as_str(),
                "the header's Root: {doc}"
            );
            // Field names and types, ids, epoch-second times, annotation keys and values,
            // namespaces, nesting (X-Ray's segment document schema; moto checks none of it).
            let problems: Vec<String> = check_segment_document(doc)
                .into_iter()
                .filter(|p| !schema_exceptions.iter().any(|e| p.contains(e)))
                .collect();
            assert!(problems.is_empty(), "{problems:?} in {doc}");
            let text = doc.to_string();
            for secret in &ran.secrets {
                assert!(!text.contains(secret.as_str()), "secret in {text}");
            }
        }
        traces.push(documents);
    }
    // Every invocation but the fresh trace hangs under the header's Parent; its calls under it.
    for documents in &traces[..4] {
        let server = invocation(documents);
        assert_eq!(server["http"]["request"]["method"], "POST", "{server}");
    }
    for documents in [&traces[0], &traces[1], &traces[3]] {
        let server = invocation(documents);
        assert_eq!(children(documents, server).len(), 1, "{documents:#?}");
    }
    for fresh in &traces[4..] {
        assert!(
            fresh.iter().all(|d| d["parent_id"] != PARENT),
            "a refused header's parent is not used: {fresh:#?}"
        );
    }

    // Sampled=0 stores nothing. It was invoked before the fresh trace, which is stored, and
    // spans leave in invocation order, so it would be there by now.
    let unsampled = xray
        .batch_get_traces(&[ran.unsampled.as_str()])
        .await
        .expect("BatchGetTraces");
    assert!(
        unsampled.iter().all(|t| t.documents.is_empty()),
        "Sampled=0 stored: {unsampled:?}"
    );
    let since = epoch_seconds_now() - 600.0;
    let summaries = xray
        .trace_summaries(since)
        .await
        .expect("GetTraceSummaries");
    let listed: Vec<&str> = summaries.iter().filter_map(|s| s["Id"].as_str()).collect();
    assert!(
        listed.contains(&ran.authorize.as_str()),
        "{} in {listed:?}",
        ran.authorize
    );
    assert!(!listed.contains(&ran.unsampled.as_str()));
    traces
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_collector_the_trace_lands_under_the_lambda_parent() {
    let Some((_moto, moto_endpoint)) = moto() else {
        return;
    };
    let Some(rotel) = Rotel::start(&moto_endpoint).await else {
        return;
    };
    let double = ProviderDouble::start().await;
    let env = environment(&moto_endpoint, &double).await;
    let (api, _process) = start(
        env,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", rotel.otlp_http_endpoint())],
    )
    .await;
    let ran = scenario(&api, &double).await;
    let xray = XrayApi::new(&moto_endpoint);
    // rotel passes span names through, and X-Ray's name rule refuses a route template's braces
    // (the ADOT exporter strips them; the daemon test checks that our translation does); and it
    // writes `"type": "segment"` on root spans, a value the schema does not have (X-Ray knows
    // only "subsegment"; a segment has no type), and its own `metadata.environment` as a bare
    // string where X-Ray groups metadata in namespace objects. All three are rotel's output,
    // not our spans'; every other rule applies.
    let rotel_quirks = [
        "does not allow: \"{}\"",
        "type: \"segment\"",
        "metadata.environment: ",
    ];
    let traces = stored(&xray, &ran, &rotel_quirks).await;

    // What survives rotel's translation: every span of ours as a document under its parent,
    // the SDK and provider calls included, with start/end times.
    let authorize = &traces[0];
    let server = invocation(authorize);
    assert_eq!(server["name"], "POST /oauth/authorize/{provider}");
    let call = children(authorize, server)[0];
    assert_eq!(call["name"], "SecretsManager.GetSecretValue", "{call}");
    let token = &traces[1];
    let call = children(token, invocation(token))[0];
    assert!(
        call["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("POST 127.0.0.1")),
        "{call}"
    );
    // The rest of the request, as rotel forwarded it to PutTraceSegments.
    let forwarded = rotel.forwarded();
    assert!(!forwarded.is_empty());
    assert!(
        forwarded
            .iter()
            .all(|body| !body.to_string().contains(ran.unsampled.as_str())),
        "Sampled=0 reached the collector"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn through_the_daemon_spans_are_subsegments_of_lambdas_segment() {
    let Some((_moto, moto_endpoint)) = moto() else {
        return;
    };
    let xray = XrayApi::new(&moto_endpoint);
    let daemon = DaemonDouble::start(Some(XrayApi::new(&moto_endpoint))).await;
    let double = ProviderDouble::start().await;
    let env = environment(&moto_endpoint, &double).await;
    let (api, process) = start(
        env,
        &[
            ("OTEL_TRACES_EXPORTER", "xray".to_owned()),
            ("AWS_XRAY_DAEMON_ADDRESS", daemon.address()),
        ],
    )
    .await;
    let ran = scenario(&api, &double).await;
    let traces = stored(&xray, &ran, &[]).await;
    assert!(daemon.problems().is_empty(), "{:?}", daemon.problems());
    // No secret in anything the function sent or printed, read back or not.
    let sent: Vec<String> = daemon
        .datagrams()
        .iter()
        .filter_map(|d| d.document.as_ref().map(Value::to_string))
        .chain(process.lines())
        .collect();
    for secret in &ran.secrets {
        assert!(
            sent.iter().all(|text| !text.contains(secret.as_str())),
            "a secret was sent or logged"
        );
    }
    assert!(
        daemon.datagrams().iter().all(|d| d
            .document
            .as_ref()
            .is_some_and(|doc| doc["trace_id"] != ran.unsampled.as_str())),
        "Sampled=0 sent a datagram"
    );

    // Lambda's segment is the function's: ours are all subsegments, none a second segment.
    for documents in &traces[..4] {
        for doc in documents {
            assert_eq!(doc["type"], "subsegment", "{doc}");
        }
    }

    let authorize = &traces[0];
    let server = invocation(authorize);
    assert_eq!(server["name"], "POST /oauth/authorize/provider");
    let annotations = &server["annotations"];
    assert_eq!(
        annotations["http_route"], "/oauth/authorize/{provider}",
        "{server}"
    );
    assert_eq!(annotations["http_status_code"], 200);
    assert_eq!(annotations["cold_start"], true);
    assert_eq!(annotations["oauth_provider"], "googledrive");
    assert_eq!(annotations["service_version"], "1.0.41");
    assert!(annotations.get("error_type").is_none());
    let call = children(authorize, server)[0];
    assert_eq!(call["namespace"], "aws", "{call}");
    assert_eq!(call["name"], "SecretsManager");
    assert!(
        call["aws"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{call}"
    );

    let token = &traces[1];
    let server = invocation(token);
    assert_eq!(server["annotations"]["cold_start"], false);
    let call = children(token, server)[0];
    assert_eq!(call["namespace"], "remote", "{call}");
    assert!(
        call["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("POST 127.0.0.1")),
        "{call}"
    );
    assert_eq!(call["http"]["response"]["status"], 200);

    let server = invocation(&traces[2]);
    assert_eq!(server["error"], true, "a 4xx is an error: {server}");
    assert_ne!(server["fault"], true);
    assert_eq!(server["http"]["response"]["status"], 422);
    assert_eq!(server["annotations"]["error_type"], "validation_error");
    assert_eq!(server["annotations"]["http_status_code"], 422);

    let failure = &traces[3];
    let server = invocation(failure);
    assert_eq!(server["fault"], true, "a 5xx is a fault: {server}");
    assert_eq!(
        server["annotations"]["error_type"], "provider_error",
        "{server}"
    );
    let call = children(failure, server)[0];
    assert_eq!(call["fault"], true, "{call}");

    // One document per datagram, each within the limit (the double checked every one).
    let stored_documents: usize = traces.iter().map(Vec::len).sum();
    assert!(daemon.datagrams().len() >= stored_documents);
    assert!(
        process.lines().iter().all(|l| !l.contains("spans dropped")),
        "{:?}",
        process.lines()
    );
}

/// A loopback UDP address nothing listens on (bound, then released).
fn closed_udp_address() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_daemon_loses_spans_quietly_and_delays_nothing() {
    let (api, process) = start(
        lambda_env("http://127.0.0.1:1"),
        &[
            ("OTEL_TRACES_EXPORTER", "xray".to_owned()),
            ("AWS_XRAY_DAEMON_ADDRESS", closed_udp_address()),
        ],
    )
    .await;
    for n in 0..20 {
        let (outcome, _) = invoke(&api, &header(&root(100 + n), 1), "GET", "/", None).await;
        assert_eq!(status(&outcome), 200);
        // The function polls for the next event at once: nothing waits on the daemon.
        assert!(
            api.poll_after(outcome.answered_at, WAIT).await.is_some(),
            "no /next after invocation {n}"
        );
    }
    let warnings = process.count_lines(&["X-Ray daemon unreachable"]);
    assert_eq!(
        warnings,
        1,
        "one warning per episode: {:?}",
        process.lines()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_exporter_stops_start_up_naming_the_accepted_ones() {
    let (_api, mut process) = start(
        lambda_env("http://127.0.0.1:1"),
        &[("OTEL_TRACES_EXPORTER", "zipkin".to_owned())],
    )
    .await;
    let line = process
        .wait_for_line("OTEL_TRACES_EXPORTER", Duration::from_secs(5))
        .expect("start-up error names the variable");
    assert!(
        line.contains("otlp, otlp-udp, xray, console, none"),
        "{line}"
    );
    let status = process
        .terminate(Duration::from_secs(5))
        .expect("process exits");
    assert!(!status.success());
}

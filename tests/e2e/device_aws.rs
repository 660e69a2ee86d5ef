//! The device CA as deployed: certificate records in DynamoDB and the CA in Secrets Manager
//! (both on moto), client certificates in API Gateway's mutual-TLS context, under the Runtime API
//! double; every AWS call a CLIENT span under the invocation span. Several sandboxes of the
//! function at once, for the races between them, run behind [`AwsProxy`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::aws_proxy::{AwsProxy, Call};
use crate::support::otlp::{OtlpReceiver, ReceivedSpan};
use crate::support::runtime_api::{Event, Outcome, RuntimeApi};
use crate::support::{Process, binary, http_api_event_with_cert, lambda_env, moto};
use apuntador_backend::device::ca::CertificateAuthority;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use serde_json::{Value, json};

static ROOT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("1-{}-0d0d0d0d0d0d0d0d0d0d0d0d", crate::support::epoch_hex())
});

/// The X-Ray trace id every invocation of [`invoke`] is part of.
pub(crate) fn root() -> String {
    ROOT.clone()
}

pub(crate) fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

pub(crate) async fn create_ca_secrets(endpoint: &str) -> String {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    let client = aws_sdk_secretsmanager::Client::from_conf(config);
    let (key, cert) = CertificateAuthority::create(365).unwrap();
    for (name, value) in [
        ("apuntador-e2e/ca-private-key", key),
        ("apuntador-e2e/ca-certificate", cert.clone()),
    ] {
        client
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .expect("secret created");
    }
    cert
}

pub(crate) async fn invoke(
    api: &RuntimeApi,
    method: &str,
    path: &str,
    body: Option<Value>,
    cert: Option<&str>,
) -> (Outcome, u16, Value) {
    invoke_with_headers(api, method, path, body, cert, &[]).await
}

/// [`invoke`] with request `headers` added to the event.
pub(crate) async fn invoke_with_headers(
    api: &RuntimeApi,
    method: &str,
    path: &str,
    body: Option<Value>,
    cert: Option<&str>,
    headers: &[(&str, &str)],
) -> (Outcome, u16, Value) {
    let mut event: Value = serde_json::from_str(&http_api_event_with_cert(
        method,
        path,
        "",
        body.as_ref(),
        cert,
    ))
    .expect("the harness writes JSON events");
    for (name, value) in headers {
        event["headers"][*name] = (*value).into();
    }
    let event = event.to_string();
    let trace_header = Some(format!("Root={};Parent=53995c3f42cd8ad8;Sampled=1", *ROOT));
    let outcome = api
        .invoke(Event {
            body: event,
            trace_header,
        })
        .await;
    assert!(outcome.ok, "{path}: {}", outcome.body);
    let response = outcome.json();
    let status = response["statusCode"].as_u64().unwrap() as u16;
    let body =
        serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    (outcome, status, body)
}

fn children<'a>(spans: &'a [ReceivedSpan], outcome: &Outcome) -> Vec<&'a ReceivedSpan> {
    let server = spans
        .iter()
        .find(|s| s.attr("faas.invocation_id") == Some(outcome.request_id.as_str()))
        .expect("server span");
    spans
        .iter()
        .filter(|s| s.parent_span_id == server.span_id)
        .collect()
}

/// The function under the Runtime API double in AWS mode, with AWS at `endpoint`.
pub(crate) async fn start_in_aws_mode(
    endpoint: &str,
    extra: &[(&str, &str)],
) -> (OtlpReceiver, RuntimeApi, Process) {
    let receiver = OtlpReceiver::start().await;
    let api = RuntimeApi::start().await;
    let mut env = lambda_env(&format!("http://{}", receiver.http_addr));
    env.extend(
        [
            ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string().as_str()),
            ("INFRASTRUCTURE_PROVIDER", "aws"),
            ("AWS_DYNAMODB_TABLE", "apuntador-e2e-certificates"),
            ("AWS_SECRETS_PREFIX", "apuntador-e2e"),
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let process = Process::spawn(&binary(), &[], &env);
    (receiver, api, process)
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_guard_renewal_and_revocation_on_dynamodb_and_secrets_manager() {
    let Some((_moto, endpoint)) = moto() else {
        return;
    };
    let ca_pem = create_ca_secrets(&endpoint).await;
    let (receiver, api, process) =
        start_in_aws_mode(&endpoint, &[("AUTO_CREATE_RESOURCES", "true")]).await;

    let (enroll, status, enrolled) = invoke(
        &api,
        "POST",
        "/device/enroll",
        Some(json!({"csr": csr(), "device_id": "aws-device-1", "platform": "ios"})),
        None,
    )
    .await;
    assert_eq!(status, 201, "{enrolled}");
    assert_eq!(enrolled["ca_certificate"], ca_pem.as_str());
    let cert = enrolled["certificate"].as_str().unwrap().to_owned();
    let serial = enrolled["serial"].as_str().unwrap().to_owned();

    let spans = receiver.wait_for_spans(5, Duration::from_secs(5)).await;
    let calls: Vec<(String, String)> = children(&spans, &enroll)
        .iter()
        .map(|s| {
            (
                s.attr("rpc.service").unwrap_or("").to_owned(),
                s.attr("rpc.method").unwrap_or("").to_owned(),
            )
        })
        .collect();
    for expected in [
        ("SecretsManager", "GetSecretValue"),
        ("DynamoDB", "DescribeTable"),
        ("DynamoDB", "CreateTable"),
        ("DynamoDB", "GetItem"),
        ("DynamoDB", "TransactWriteItems"),
    ] {
        assert!(
            calls.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} not in {calls:?}"
        );
    }
    for span in children(&spans, &enroll) {
        assert_eq!(span.kind, 3, "CLIENT");
        assert_eq!(span.attr("rpc.system"), Some("aws-api"));
        assert!(
            span.attr("aws.request_id").is_some_and(|id| !id.is_empty()),
            "{:?}",
            span.attributes
        );
        assert_eq!(span.xray_trace_id(), *ROOT);
    }

    let (_, status, _) = invoke(&api, "GET", "/device/status/aws-device-1", None, None).await;
    assert_eq!(status, 401, "no certificate in the mutual-TLS context");
    // The first status creates the attestation table (AUTO_CREATE_RESOURCES); the next is measured.
    let (_, status, _) = invoke(
        &api,
        "GET",
        "/device/status/aws-device-1",
        None,
        Some(&cert),
    )
    .await;
    assert_eq!(status, 200);
    let (status_call, status, body) = invoke(
        &api,
        "GET",
        "/device/status/aws-device-1",
        None,
        Some(&cert),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["serial"], serial.as_str());
    assert_eq!(body["platform"], "ios");
    assert_eq!(body["days_until_expiry"], 29);
    // Until the status call's span is in (spans leave after each invocation).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let spans = loop {
        let spans = receiver.wait_for_spans(1, Duration::from_secs(1)).await;
        let arrived = spans
            .iter()
            .any(|s| s.attr("faas.invocation_id") == Some(status_call.request_id.as_str()));
        if arrived || std::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lookups: Vec<&str> = children(&spans, &status_call)
        .iter()
        .filter_map(|s| s.attr("rpc.method"))
        .collect();
    assert_eq!(
        body["attestation"],
        serde_json::Value::Null,
        "never attested"
    );
    assert_eq!(
        lookups,
        ["GetItem", "GetItem"],
        "the guard reads the current record by its key, and status answers from that read and the latest attestation's, read by its key"
    );

    let (status, renewed) = renew_on(&api, "aws-device-1", &serial, &cert).await;
    assert_eq!(status, 200, "{renewed}");
    let new_cert = renewed["certificate"].as_str().unwrap().to_owned();
    let status = status_on(&api, "aws-device-1", &cert).await;
    assert_eq!(status, 403, "the old certificate is revoked");
    let (_, status, body) = invoke(
        &api,
        "GET",
        "/device/status/aws-device-1",
        None,
        Some(&new_cert),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["serial"], renewed["serial"],
        "current = newest issued_at"
    );

    let (_, status, body) = invoke(
        &api,
        "POST",
        "/device/revoke",
        Some(json!({"device_id": "aws-device-1", "reason": "stolen"})),
        Some(&new_cert),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true, "revocation reports success");
    let status = status_on(&api, "aws-device-1", &new_cert).await;
    assert_eq!(status, 403);

    let (_, status, pin) = invoke(&api, "GET", "/device/ca-certificate-pin", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(pin["certificate_pem"], ca_pem.as_str());
    assert!(
        process.lines().iter().all(|l| !l.contains("PRIVATE KEY")),
        "the CA key never reaches a log line"
    );

    // The AWS calls and the certificate events, in the metric documents (issue 25 item 1).
    process
        .wait_for_line("CertificatesRevoked", Duration::from_secs(5))
        .expect("the revocation's metric document");
    let docs = crate::metrics::documents(&process);
    let total = |metric: &str, dependency: Option<&str>| -> u64 {
        crate::metrics::total(&docs, metric, |d| {
            dependency.is_none_or(|name| d["dependency"] == name)
        })
    };
    assert!(total("DependencyCalls", Some("DynamoDB")) >= 5, "{docs:?}");
    assert!(
        total("DependencyCalls", Some("SecretsManager")) >= 1,
        "{docs:?}"
    );
    assert_eq!(total("DependencyFailures", Some("DynamoDB")), 0, "{docs:?}");
    assert_eq!(total("DependencyFailures", Some("SecretsManager")), 0);
    assert_eq!(total("CertificatesIssued", None), 1, "{docs:?}");
    assert_eq!(total("CertificatesRenewed", None), 1, "{docs:?}");
    assert_eq!(total("CertificatesRevoked", None), 1, "{docs:?}");
}

/// The function under the Runtime API double with local files in a fresh directory and
/// `TRUSTED_CLIENT_CERT_HEADER=X-Client-Cert`, plus `extra`.
async fn start_trusting_a_header(extra: &[(&str, &str)]) -> (OtlpReceiver, RuntimeApi, Process) {
    let api = RuntimeApi::start().await;
    let receiver = OtlpReceiver::start().await;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).unwrap();
    let dir = std::env::temp_dir().join(format!("apuntador-lambda-{}", u64::from_le_bytes(suffix)));
    let mut env = lambda_env(&format!("http://{}", receiver.http_addr));
    env.push(("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string()));
    env.push(("INFRASTRUCTURE_BASE_DIR".into(), dir.display().to_string()));
    env.push(("TRUSTED_CLIENT_CERT_HEADER".into(), "X-Client-Cert".into()));
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let process = Process::spawn(&binary(), &[], &env);
    (receiver, api, process)
}

/// `GET /device/status/{device}` with `cert` (URL-encoded) in `X-Client-Cert`, not in the
/// mutual-TLS context.
async fn status_by_header(api: &RuntimeApi, device: &str, cert: &str) -> Outcome {
    let mut event: Value = serde_json::from_str(&http_api_event_with_cert(
        "GET",
        &format!("/device/status/{device}"),
        "",
        None,
        None,
    ))
    .unwrap();
    event["headers"]["x-client-cert"] =
        percent_encoding::utf8_percent_encode(cert, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .into();
    api.invoke(Event {
        body: event.to_string(),
        trace_header: None,
    })
    .await
}

/// Issue 23 item 8: a deployed stack with `Stage=local` (`ENVIRONMENT=local`) trusted the
/// header from any caller; only `sam local` (which also sets `AWS_SAM_LOCAL=true`) may.
#[tokio::test(flavor = "multi_thread")]
async fn headers_are_not_trusted_under_lambda() {
    for environment in ["production", "local"] {
        let (_receiver, api, process) =
            start_trusting_a_header(&[("ENVIRONMENT", environment)]).await;
        let outcome = status_by_header(&api, "header-device", "-----BEGIN CERTIFICATE-----").await;
        assert_eq!(
            outcome.json()["statusCode"],
            401,
            "ENVIRONMENT={environment}: under Lambda only the mutual-TLS context counts"
        );
        assert!(
            process
                .wait_for_line(
                    "TRUSTED_CLIENT_CERT_HEADER is ignored under Lambda",
                    Duration::from_secs(5)
                )
                .is_some(),
            "the ignored setting is said at start-up"
        );
    }
}

/// `sam local` has no mutual TLS: with `ENVIRONMENT=local` and `AWS_SAM_LOCAL=true` (which
/// the SAM CLI sets) the configured header is trusted under Lambda too, and the process says so.
#[tokio::test(flavor = "multi_thread")]
async fn sam_local_trusts_the_configured_header() {
    let (_receiver, api, process) =
        start_trusting_a_header(&[("ENVIRONMENT", "local"), ("AWS_SAM_LOCAL", "true")]).await;
    let (cert, _) = enroll_on(&api, "header-device").await;
    let outcome = status_by_header(&api, "header-device", &cert).await;
    let answer = outcome.json();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert!(
        process
            .wait_for_line(
                "trusting x-client-cert from any caller under Lambda (ENVIRONMENT=local under sam local)",
                Duration::from_secs(5)
            )
            .is_some()
    );
}

/// Stands in for an AWS endpoint: records every request's `X-Amzn-Trace-Id` and answers as
/// Secrets Manager does for a secret that does not exist.
async fn recording_aws_endpoint() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let recorder = recorder.clone();
        async move {
            let header = headers
                .get("x-amzn-trace-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(none)")
                .to_owned();
            recorder.lock().unwrap().push(header);
            (
                axum::http::StatusCode::BAD_REQUEST,
                [
                    ("x-amzn-requestid", "req-0001"),
                    ("content-type", "application/x-amz-json-1.1"),
                ],
                r#"{"__type":"ResourceNotFoundException","Message":"no such secret"}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (endpoint, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_calls_carry_their_span_as_the_x_ray_parent() {
    let (endpoint, seen) = recording_aws_endpoint().await;
    let (receiver, api, _process) = start_in_aws_mode(&endpoint, &[]).await;

    let event = http_api_event_with_cert("GET", "/device/ca-certificate-pin", "", None, None);
    let outcome = api
        .invoke(Event {
            body: event,
            trace_header: Some(format!("Root={};Parent=53995c3f42cd8ad8;Sampled=1", *ROOT)),
        })
        .await;
    assert_eq!(
        outcome.json()["statusCode"],
        503,
        "the CA cannot be read: {}",
        outcome.body
    );

    let spans = receiver.wait_for_spans(2, Duration::from_secs(5)).await;
    let call = children(&spans, &outcome)
        .into_iter()
        .find(|s| s.attr("rpc.method") == Some("GetSecretValue"))
        .expect("a GetSecretValue span under the invocation");
    assert_eq!(call.attr("aws.request_id"), Some("req-0001"));
    let headers = seen.lock().unwrap().clone();
    assert!(!headers.is_empty(), "the endpoint was called");
    for header in headers {
        assert_eq!(
            header,
            format!("Root={};Parent={};Sampled=1", *ROOT, call.span_id),
            "each attempt names the call's span as its parent"
        );
    }
}

/// One function sandbox in AWS mode: its Runtime API double, the process and its OTLP receiver.
struct Sandbox {
    api: RuntimeApi,
    _receiver: OtlpReceiver,
    _process: Process,
}

/// moto with the CA secrets, the serialising proxy in front of it, and `count` sandboxes that
/// reach AWS through the proxy (the first request creates the table).
async fn deployment(count: usize) -> Option<(Process, String, AwsProxy, Vec<Sandbox>)> {
    let (moto, moto_endpoint) = moto()?;
    create_ca_secrets(&moto_endpoint).await;
    let proxy = AwsProxy::start(&moto_endpoint).await;
    let mut sandboxes = Vec::new();
    for _ in 0..count {
        let (receiver, api, process) =
            start_in_aws_mode(&proxy.endpoint, &[("AUTO_CREATE_RESOURCES", "true")]).await;
        sandboxes.push(Sandbox {
            api,
            _receiver: receiver,
            _process: process,
        });
    }
    Some((moto, moto_endpoint, proxy, sandboxes))
}

pub(crate) async fn enroll_on(api: &RuntimeApi, device: &str) -> (String, String) {
    let (_, status, body) = invoke(
        api,
        "POST",
        "/device/enroll",
        Some(json!({"csr": csr(), "device_id": device, "platform": "android"})),
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (
        body["certificate"].as_str().unwrap().to_owned(),
        body["serial"].as_str().unwrap().to_owned(),
    )
}

pub(crate) async fn renew_on(
    api: &RuntimeApi,
    device: &str,
    serial: &str,
    cert: &str,
) -> (u16, Value) {
    let (_, status, body) = invoke(
        api,
        "POST",
        "/device/renew",
        Some(json!({"csr": csr(), "device_id": device, "old_serial": serial})),
        Some(cert),
    )
    .await;
    (status, body)
}

async fn status_on(api: &RuntimeApi, device: &str, cert: &str) -> u16 {
    invoke(
        api,
        "GET",
        &format!("/device/status/{device}"),
        None,
        Some(cert),
    )
    .await
    .1
}

/// Review item 3 (DynamoDB): the store read, modified and `PutItem`ed without conditions, so
/// renewals in several sandboxes of one serial all succeeded, and a renewal in flight during
/// `/device/revoke` left a certificate that was still accepted after it answered success.
#[tokio::test(flavor = "multi_thread")]
async fn renewals_and_a_revocation_racing_across_sandboxes() {
    let Some((_moto, _, _proxy, sandboxes)) = deployment(4).await else {
        return;
    };
    let (revoker, renewers) = sandboxes.split_first().unwrap();
    for round in 0..10 {
        let device = format!("race-device-{round}");
        let (cert, serial) = enroll_on(&revoker.api, &device).await;
        let with_revoke = round % 2 == 0;
        let renewals = futures_util::future::join_all(
            renewers
                .iter()
                .map(|sandbox| renew_on(&sandbox.api, &device, &serial, &cert)),
        );
        let revocation = async {
            if with_revoke {
                Some(
                    invoke(
                        &revoker.api,
                        "POST",
                        "/device/revoke",
                        Some(json!({"device_id": device})),
                        Some(&cert),
                    )
                    .await,
                )
            } else {
                None
            }
        };
        let (renewed, revoked) = tokio::join!(renewals, revocation);
        let won = crate::support::renewal_winners(round, renewed, revoked.is_some());
        match revoked {
            None => {}
            Some((_, 200, body)) => {
                assert_eq!(body["success"], true, "{body}");
                for presented in std::iter::once(&cert).chain(&won) {
                    assert_eq!(
                        status_on(&revoker.api, &device, presented).await,
                        403,
                        "round {round}: a certificate is accepted after /device/revoke answered success"
                    );
                }
            }
            // A renewal replaced the certificate before the revocation was checked.
            Some((_, status, body)) => assert_eq!(status, 403, "{body}"),
        }
    }
}

/// The DynamoDB operations `calls` made, in order.
fn operations(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.target.starts_with("DynamoDB"))
        .map(|c| c.operation().to_owned())
        .collect()
}

/// Review items 6 and 7 (DynamoDB): the guard read an eventually consistent index, so a
/// just-revoked certificate could pass; and status, enroll and revoke queried the device's whole
/// partition, which grows with every renewal. Every device request must read known keys with
/// strongly consistent reads, the same few calls after 1 renewal as after 15.
#[tokio::test(flavor = "multi_thread")]
async fn device_requests_read_known_keys_consistently_whatever_the_history() {
    let Some((_moto, _, proxy, sandboxes)) = deployment(1).await else {
        return;
    };
    let sandbox = &sandboxes[0];
    let mut costs = Vec::new();
    for (device, renewals) in [("short-history", 1), ("long-history", 15)] {
        let (mut cert, mut serial) = enroll_on(&sandbox.api, device).await;
        for _ in 0..renewals {
            let (status, body) = renew_on(&sandbox.api, device, &serial, &cert).await;
            assert_eq!(status, 200, "{body}");
            cert = body["certificate"].as_str().unwrap().to_owned();
            serial = body["serial"].as_str().unwrap().to_owned();
        }
        // Once, so the attestation table exists (AUTO_CREATE_RESOURCES) before calls are counted.
        assert_eq!(status_on(&sandbox.api, device, &cert).await, 200);
        proxy.take_calls();
        let mut cost = Vec::new();
        assert_eq!(status_on(&sandbox.api, device, &cert).await, 200);
        cost.push(("status", proxy.take_calls()));
        let (status, body) = renew_on(&sandbox.api, device, &serial, &cert).await;
        assert_eq!(status, 200, "{body}");
        let cert = body["certificate"].as_str().unwrap().to_owned();
        cost.push(("renew", proxy.take_calls()));
        let (_, status, body) = invoke(
            &sandbox.api,
            "POST",
            "/device/revoke",
            Some(json!({"device_id": device})),
            Some(&cert),
        )
        .await;
        assert_eq!((status, &body["success"]), (200, &json!(true)), "{body}");
        cost.push(("revoke", proxy.take_calls()));
        assert_eq!(
            status_on(&sandbox.api, device, &cert).await,
            403,
            "revoked, and the next request sees it"
        );
        cost.push(("status after revoke", proxy.take_calls()));
        enroll_on(&sandbox.api, device).await;
        cost.push(("enroll again", proxy.take_calls()));

        for (request, calls) in &cost {
            for call in calls.iter().filter(|c| c.target.starts_with("DynamoDB")) {
                assert!(
                    matches!(call.operation(), "GetItem" | "TransactWriteItems"),
                    "{device} {request}: {} reads or writes more than known keys",
                    call.target
                );
                if call.operation() == "GetItem" {
                    assert_eq!(
                        call.body["ConsistentRead"], true,
                        "{device} {request}: an eventually consistent read"
                    );
                }
            }
        }
        costs.push(
            cost.iter()
                .map(|(request, calls)| (*request, operations(calls)))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        costs[0], costs[1],
        "the calls per request do not grow with the history"
    );
}

/// Every certificate the table holds for `device`, read from moto directly.
async fn certificates_in_table(moto_endpoint: &str, device: &str) -> Vec<String> {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("eu-west-1"))
        .endpoint_url(moto_endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    let scan = aws_sdk_dynamodb::Client::from_conf(config)
        .scan()
        .table_name("apuntador-e2e-certificates")
        .send()
        .await
        .expect("scan");
    let mut pems: Vec<String> = scan
        .items()
        .iter()
        .filter(|item| {
            item.get("device_id")
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                == Some(device)
        })
        .filter_map(|item| item.get("certificate_pem")?.as_s().ok().cloned())
        .collect();
    pems.sort();
    pems.dedup();
    pems
}

/// Review item 3: a renewal saved the new certificate and then revoked the old one in a second
/// write; when that write failed the client got an error and the new certificate stayed active.
/// With each DynamoDB write of a renewal refused in turn, a renewal that fails must leave only
/// the certificate the client holds acceptable.
#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_that_fails_leaves_no_certificate_the_client_was_not_given() {
    let Some((_moto, moto_endpoint, proxy, sandboxes)) = deployment(1).await else {
        return;
    };
    let sandbox = &sandboxes[0];
    let mut failures = 0;
    for n in 1..=3 {
        let device = format!("faulty-device-{n}");
        let (cert, serial) = enroll_on(&sandbox.api, &device).await;
        proxy.fail_write(Some(n));
        let (status, body) = renew_on(&sandbox.api, &device, &serial, &cert).await;
        proxy.fail_write(None);
        if status == 200 {
            continue; // the renewal had fewer than n writes
        }
        failures += 1;
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("storage_unavailable")),
            "{body}"
        );
        for pem in certificates_in_table(&moto_endpoint, &device).await {
            let expected = if pem == cert { 200 } else { 403 };
            assert_eq!(
                status_on(&sandbox.api, &device, &pem).await,
                expected,
                "write {n} refused: a certificate the client never received is accepted"
            );
        }
    }
    assert!(failures > 0, "no renewal write was refused");
}

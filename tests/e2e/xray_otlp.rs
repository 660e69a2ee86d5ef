//! The SigV4 transport to X-Ray's OTLP endpoint (issue 24): a double of the endpoint that
//! verifies every request's signature ([`apuntador_harness::xray_otlp`]), first against the
//! exporter itself (each answer the endpoint can give, a refused signature, a slow endpoint,
//! the size limit), then the binary under the Runtime API double with current-time X-Ray
//! headers, and in server mode with credentials from the ECS container endpoint of the chain.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use apuntador_backend::telemetry::xray_otlp::{
    ExportError, MAX_REQUEST_BYTES, XrayEndpoint, XrayOtlpExporter, signed_headers,
};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use axum::routing::get;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SpanData;

use crate::support::runtime_api::{Event, RuntimeApi};
use crate::support::spans::server_span as span;
use crate::support::xray_otlp::{Answer, XrayOtlpDouble, test_credentials, verify};
use crate::support::{
    Process, binary, closed_port, epoch_hex, lambda_env, sample_event, serve_router,
};

const REGION: &str = "eu-west-1";
const ENDPOINT: &str = "https://xray.eu-west-1.amazonaws.com/v1/traces";
const PARENT: &str = "53995c3f42cd8ad8";

fn endpoint(double: &XrayOtlpDouble) -> XrayEndpoint {
    XrayEndpoint::detect(ENDPOINT, Some(&double.url()))
        .unwrap()
        .unwrap()
}

fn client() -> reqwest::blocking::Client {
    std::thread::spawn(|| {
        reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    })
    .join()
    .unwrap()
}

/// An exporter to `double` signing with `credentials`, within `timeout`.
fn exporter(
    double: &XrayOtlpDouble,
    credentials: Credentials,
    timeout: Duration,
) -> XrayOtlpExporter {
    XrayOtlpExporter::new(endpoint(double), client(), timeout)
        .with_credentials(SharedCredentialsProvider::new(credentials))
}

async fn send(
    exporter: &Arc<XrayOtlpExporter>,
    batch: Vec<SpanData>,
) -> Result<apuntador_backend::telemetry::xray_otlp::Exported, ExportError> {
    let exporter = exporter.clone();
    tokio::task::spawn_blocking(move || exporter.send(&batch))
        .await
        .unwrap()
}

#[test]
fn the_double_refuses_a_wrong_secret_a_stale_date_and_an_edited_body() {
    let credentials = test_credentials("token-a");
    let endpoint = XrayEndpoint {
        region: REGION.into(),
        url: "http://127.0.0.1:4318/v1/traces".into(),
    };
    let with_host = |headers: Vec<(String, String)>| {
        let mut headers = headers;
        headers.push(("host".into(), "127.0.0.1:4318".into()));
        headers
    };
    let body = b"spans".to_vec();
    let good =
        with_host(signed_headers(&endpoint, &credentials, &body, SystemTime::now()).unwrap());
    assert_eq!(
        verify(&credentials, REGION, "POST", "/v1/traces", &good, &body),
        Ok(())
    );
    let other = test_credentials("token-a");
    let wrong_secret =
        with_host(signed_headers(&endpoint, &other, &body, SystemTime::now()).unwrap());
    assert!(
        verify(
            &credentials,
            REGION,
            "POST",
            "/v1/traces",
            &wrong_secret,
            &body
        )
        .unwrap_err()
        .contains("signature does not match")
    );
    let stale = with_host(
        signed_headers(
            &endpoint,
            &credentials,
            &body,
            SystemTime::now() - Duration::from_secs(600),
        )
        .unwrap(),
    );
    assert!(
        verify(&credentials, REGION, "POST", "/v1/traces", &stale, &body)
            .unwrap_err()
            .contains("expired")
    );
    assert!(
        verify(&credentials, REGION, "POST", "/v1/traces", &good, b"edited")
            .unwrap_err()
            .contains("signature does not match")
    );
    let other_region = XrayEndpoint {
        region: "us-east-1".into(),
        ..endpoint.clone()
    };
    let wrong_scope =
        with_host(signed_headers(&other_region, &credentials, &body, SystemTime::now()).unwrap());
    assert!(
        verify(
            &credentials,
            REGION,
            "POST",
            "/v1/traces",
            &wrong_scope,
            &body
        )
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exporter_meets_every_answer_the_endpoint_gives() {
    let credentials = test_credentials("token-b");
    let double = XrayOtlpDouble::start(credentials.clone(), REGION).await;
    let timeout = Duration::from_millis(400);
    let exporter = Arc::new(exporter(&double, credentials.clone(), timeout));

    let sent = send(&exporter, vec![span(1, vec![]), span(2, vec![])])
        .await
        .unwrap();
    assert_eq!((sent.requests, sent.spans), (1, 2));
    let spans = double.wait_for_spans(2, Duration::from_secs(5)).await;
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].parent_span_id, PARENT);
    assert!(double.received().iter().all(|r| r.refused.is_none()));

    double.answer(Answer::RejectSome(1));
    let sent = send(&exporter, vec![span(3, vec![])]).await.unwrap();
    assert_eq!(sent.rejected, 1, "a partial success is counted");

    for status in [400u16, 403, 429, 500, 503] {
        double.answer(Answer::Status(status));
        let error = send(&exporter, vec![span(4, vec![])]).await.unwrap_err();
        assert!(
            matches!(error, ExportError::Refused { status: s, .. } if s == status),
            "{status}: {error}"
        );
    }

    // Slower than the export timeout: the export gives up at the timeout, not at the answer.
    double.answer(Answer::Slow(Duration::from_secs(5)));
    let started = Instant::now();
    let error = send(&exporter, vec![span(5, vec![])]).await.unwrap_err();
    assert!(matches!(error, ExportError::Transport(_)), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded by the export timeout: {:?}",
        started.elapsed()
    );

    // A wrong secret: the endpoint refuses, the error names the status and type, no secret.
    double.answer(Answer::Accept);
    let impostor = Arc::new(exporter_with(&double, test_credentials("token-b"), timeout));
    let error = send(&impostor, vec![span(6, vec![])]).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("403") && text.contains("InvalidSignatureException"),
        "{text}"
    );
    assert!(!text.contains(credentials.secret_access_key()) && !text.contains("token-b"));

    // Over the request limit: split, every span delivered once, no request over the limit.
    let before = double.spans().len();
    let big: Vec<SpanData> = (100..160)
        .map(|n| span(n, vec![KeyValue::new("payload", "x".repeat(40_000))]))
        .collect();
    let sent = send(&exporter, big).await.unwrap();
    assert_eq!(sent.spans, 60);
    assert!(sent.requests >= 3, "{} requests", sent.requests);
    let spans = double
        .wait_for_spans(before + 60, Duration::from_secs(5))
        .await;
    assert_eq!(spans.len(), before + 60);
    assert!(
        double
            .received()
            .iter()
            .all(|r| r.body_len <= MAX_REQUEST_BYTES)
    );
}

fn exporter_with(
    double: &XrayOtlpDouble,
    credentials: Credentials,
    timeout: Duration,
) -> XrayOtlpExporter {
    exporter(double, credentials, timeout)
}

/// A current-time root and its trace id in hex.
fn root(n: u8) -> (String, String) {
    let epoch = epoch_hex();
    let rest = format!("{n:024x}");
    (format!("1-{epoch}-{rest}"), format!("{epoch}{rest}"))
}

fn invocation(root: &str, sampled: u8) -> Event {
    Event {
        body: sample_event("http-api-root.json"),
        trace_header: Some(format!(
            "Root={root};Parent={PARENT};Sampled={sampled};Lineage=a87bd80c:1"
        )),
    }
}

/// A Lambda sandbox's environment for the SigV4 transport: the Runtime API at `api`, spans to
/// `target`, the role's credentials `credentials`, exports bounded by `timeout_ms`.
fn signed_lambda_env(
    api: &RuntimeApi,
    target: &str,
    credentials: &Credentials,
    timeout_ms: u64,
) -> Vec<(String, String)> {
    let mut env = lambda_env(&format!("http://127.0.0.1:{}", closed_port()));
    env.extend(
        [
            ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ENDPOINT.to_owned()),
            ("AWS_ENDPOINT_URL_XRAY", target.to_owned()),
            ("AWS_ACCESS_KEY_ID", credentials.access_key_id().to_owned()),
            (
                "AWS_SECRET_ACCESS_KEY",
                credentials.secret_access_key().to_owned(),
            ),
            (
                "AWS_SESSION_TOKEN",
                credentials.session_token().unwrap_or_default().to_owned(),
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", timeout_ms.to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    env
}

fn secrets_absent(process: &Process, credentials: &Credentials) {
    let token = credentials.session_token().unwrap_or("none");
    for line in process.lines() {
        assert!(
            !line.contains(credentials.secret_access_key()) && !line.contains(token),
            "a credential in a log line: {line}"
        );
        assert!(
            !line.contains("signature we calculated"),
            "AWS's message in a log line: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_sends_signed_spans_after_the_response_and_a_refusal_costs_the_caller_nothing() {
    let credentials = test_credentials("token-lambda");
    let double = XrayOtlpDouble::start(credentials.clone(), REGION).await;
    let api = RuntimeApi::start().await;
    let env = signed_lambda_env(&api, &double.url(), &credentials, 500);
    let mut process = Process::spawn(&binary(), &[], &env);

    let (sampled_root, sampled_id) = root(1);
    let outcome = api.invoke(invocation(&sampled_root, 1)).await;
    assert_eq!(outcome.json()["statusCode"], 200);
    let spans = double.wait_for_spans(1, Duration::from_secs(10)).await;
    let ours: Vec<_> = spans.iter().filter(|s| s.trace_id == sampled_id).collect();
    assert_eq!(ours.len(), 1, "the invocation's span, once: {spans:?}");
    assert_eq!(
        ours[0].parent_span_id, PARENT,
        "parented on the header's Parent"
    );
    assert!(
        ours[0].at >= outcome.answered_at,
        "exported after the response was posted"
    );
    assert!(double.received().iter().all(|r| r.refused.is_none()));

    let (unsampled_root, unsampled_id) = root(2);
    api.invoke(invocation(&unsampled_root, 0)).await;

    // The role's credentials stop matching (a wrong secret as far as X-Ray is concerned).
    double.expect_credentials(test_credentials("token-lambda"));
    let (refused_root, _) = root(3);
    let requests_before = double.received().len();
    let outcome = api.invoke(invocation(&refused_root, 1)).await;
    assert_eq!(outcome.json()["statusCode"], 200);
    let received = double
        .wait_for_requests(requests_before + 1, Duration::from_secs(10))
        .await;
    assert!(
        received.last().unwrap().refused.is_some(),
        "refused by the double"
    );
    assert!(
        process
            .wait_for_line("answered 403", Duration::from_secs(5))
            .is_some(),
        "the refusal is logged: {:?}",
        process.lines()
    );
    // The next invocation is served at once.
    let outcome = api.invoke(invocation(&root(4).0, 1)).await;
    assert_eq!(outcome.json()["statusCode"], 200);
    assert!(
        double.spans().iter().all(|s| s.trace_id != unsampled_id),
        "Sampled=0 sent nothing"
    );
    assert!(process.terminate(Duration::from_secs(10)).is_some());
    secrets_absent(&process, &credentials);
    for span in double.spans() {
        let text = format!("{span:?}");
        assert!(
            !text.contains(credentials.secret_access_key()) && !text.contains("token-lambda"),
            "a credential in a span: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_or_hanging_endpoint_holds_the_sandbox_no_longer_than_the_timeout() {
    let credentials = test_credentials("token-dead");
    let double = XrayOtlpDouble::start(credentials.clone(), REGION).await;
    double.answer(Answer::Slow(Duration::from_secs(30)));
    for target in [format!("http://127.0.0.1:{}", closed_port()), double.url()] {
        let api = RuntimeApi::start().await;
        let env = signed_lambda_env(&api, &target, &credentials, 300);
        let mut process = Process::spawn(&binary(), &[], &env);
        for n in 0..3 {
            let outcome = api.invoke(invocation(&root(10 + n).0, 1)).await;
            assert_eq!(outcome.json()["statusCode"], 200);
            let next = api
                .poll_after(outcome.answered_at, Duration::from_secs(10))
                .await
                .expect("the function polled again");
            assert!(
                next - outcome.answered_at < Duration::from_millis(300 + 1500),
                "{target}: the flush outlived the export timeout: {:?}",
                next - outcome.answered_at
            );
        }
        assert!(
            process
                .wait_for_line(
                    "X-Ray OTLP endpoint unavailable; dropping spans",
                    Duration::from_secs(5)
                )
                .is_some(),
            "{target}: the loss is logged: {:?}",
            process.lines()
        );
        assert!(process.terminate(Duration::from_secs(10)).is_some());
        secrets_absent(&process, &credentials);
    }
}

/// The ECS container credentials endpoint: hands out the current credentials, each valid for
/// 90 s (inside the exporter's refresh margin, so it asks again at every export).
async fn container_credentials(
    current: Arc<Mutex<Credentials>>,
    fetches: Arc<Mutex<u32>>,
) -> SocketAddr {
    let app = axum::Router::new().route(
        "/creds",
        get(move || {
            let current = current.clone();
            let fetches = fetches.clone();
            async move {
                *fetches.lock().unwrap() += 1;
                let c = current.lock().unwrap().clone();
                let expiry = SystemTime::now() + Duration::from_secs(90);
                let secs = expiry
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                axum::Json(serde_json::json!({
                    "AccessKeyId": c.access_key_id(),
                    "SecretAccessKey": c.secret_access_key(),
                    "Token": c.session_token(),
                    "Expiration": iso8601(secs),
                }))
            }
        }),
    );
    serve_router(app).await
}

fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn server_mode_signs_with_the_task_role_and_refreshes_expiring_credentials() {
    let first = test_credentials("token-task-1");
    let double = XrayOtlpDouble::start(first.clone(), REGION).await;
    let current = Arc::new(Mutex::new(first.clone()));
    let fetches = Arc::new(Mutex::new(0));
    let creds = container_credentials(current.clone(), fetches.clone()).await;
    let extra: Vec<(String, String)> = [
        ("AWS_REGION", REGION.to_owned()),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ENDPOINT.to_owned()),
        ("AWS_ENDPOINT_URL_XRAY", double.url()),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{creds}/creds"),
        ),
        ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .to_vec();
    let extra: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (mut process, url) = crate::server::start(&extra);
    let http = reqwest::Client::new();
    assert!(
        http.get(format!("{url}/"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let spans = double.wait_for_spans(1, Duration::from_secs(10)).await;
    assert!(
        !spans.is_empty(),
        "exported with the task role's credentials"
    );

    // The role's credentials rotate: the next export fetches and signs with the new ones.
    let second = test_credentials("token-task-2");
    *current.lock().unwrap() = second.clone();
    double.expect_credentials(second.clone());
    let before = double.spans().len();
    assert!(
        http.get(format!("{url}/"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let spans = double
        .wait_for_spans(before + 1, Duration::from_secs(10))
        .await;
    assert!(spans.len() > before, "exported after the refresh");
    let received = double.received();
    let last = received.last().unwrap();
    assert!(last.refused.is_none(), "{:?}", last.refused);
    assert!(
        last.headers
            .iter()
            .any(|(k, v)| k == "x-amz-security-token" && v == "token-task-2")
    );
    assert!(*fetches.lock().unwrap() >= 2, "credentials fetched again");
    assert!(process.terminate(Duration::from_secs(10)).is_some());
    secrets_absent(&process, &first);
    secrets_absent(&process, &second);
}

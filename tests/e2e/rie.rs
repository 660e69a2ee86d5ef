//! Every sample event in `events/` (the files `sam local invoke -e` takes), invoked through the
//! AWS Lambda Runtime Interface Emulator against the real binary, as Lambda would.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::support::otlp::OtlpReceiver;
use crate::support::provider_double::ProviderDouble;
use crate::support::{Process, binary, lambda_env, rie};
use serde_json::Value;

/// What each sample event must produce: status, a body field to check, whether it is traced.
struct Expect {
    status: u16,
    body_key: &'static str,
    body_value: &'static str,
    traced: bool,
}

fn expectations() -> BTreeMap<&'static str, Expect> {
    let e = |status, body_key, body_value, traced| Expect {
        status,
        body_key,
        body_value,
        traced,
    };
    BTreeMap::from([
        (
            "alb-health-public.json",
            e(200, "message", "Public endpoint (no mTLS)", false),
        ),
        (
            "function-url-config-providers.json",
            e(200, "version", "1.0.41", true),
        ),
        (
            "http-api-config-providers.json",
            e(200, "cache_ttl", "3600", true),
        ),
        (
            "http-api-config-providers-unauthorized.json",
            e(401, "detail", "Invalid API key", true),
        ),
        (
            "http-api-health.json",
            e(200, "message", "Service is healthy", false),
        ),
        ("http-api-health-public.json", e(200, "status", "ok", false)),
        (
            "http-api-not-found.json",
            e(404, "instance", "/healthz", true),
        ),
        (
            "http-api-root.json",
            e(200, "message", "Apuntador OAuth Backend", true),
        ),
        // Device samples: the CSR is real; the client certificate in the mutual-TLS samples comes
        // from another CA, so the guard refuses it (403), and without one it asks for it (401).
        ("http-api-device-enroll.json", e(201, "serial", "", true)),
        (
            "http-api-device-attest-challenge.json",
            e(200, "platform", "android", true),
        ),
        // The attestation samples carry placeholder evidence; their certificate is refused first.
        (
            "http-api-device-attest-android-mtls.json",
            e(403, "error", "client_certificate_rejected", true),
        ),
        (
            "http-api-device-attest-ios-mtls.json",
            e(403, "error", "client_certificate_rejected", true),
        ),
        (
            "http-api-device-attest-desktop-mtls.json",
            e(403, "error", "client_certificate_rejected", true),
        ),
        (
            "http-api-device-attest-clear-cache.json",
            e(204, "", "", true),
        ),
        (
            "http-api-device-renew-mtls.json",
            e(403, "error", "client_certificate_rejected", true),
        ),
        (
            "http-api-device-revoke-mtls.json",
            e(403, "error", "client_certificate_rejected", true),
        ),
        (
            "http-api-device-status-mtls.json",
            e(403, "error", "client_certificate_rejected", true),
        ),
        (
            "http-api-device-status-no-certificate.json",
            e(401, "error", "client_certificate_required", true),
        ),
        // The certificate in X-Client-Cert, as `sam local start-api` passes it: a deployed
        // function never trusts a header (only `sam local`'s ENVIRONMENT=local does).
        (
            "http-api-device-status-trusted-header.json",
            e(401, "error", "client_certificate_required", true),
        ),
        (
            "http-api-device-ca-certificate.json",
            e(200, "format", "PEM", true),
        ),
        (
            "http-api-device-ca-certificate-pin.json",
            e(200, "algorithm", "SHA-256", true),
        ),
        // OAuth samples: their states are long expired and their codes and tokens unknown to
        // the provider double, as they would be to a real provider.
        (
            "http-api-oauth-authorize-googledrive.json",
            e(200, "authorization_url", "", true),
        ),
        (
            "http-api-oauth-callback-googledrive.json",
            e(302, "", "", true),
        ),
        (
            "http-api-oauth-token-dropbox.json",
            e(400, "error", "invalid_state", true),
        ),
        (
            "http-api-oauth-refresh-onedrive.json",
            e(400, "error", "invalid_grant", true),
        ),
        (
            "http-api-oauth-revoke-googledrive.json",
            e(200, "success", "false", true),
        ),
        (
            "rest-api-health.json",
            e(200, "message", "Service is healthy", false),
        ),
    ])
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A response header, whichever shape the event kind answers with.
fn header(response: &Value, name: &str) -> Option<String> {
    response["headers"][name]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            response["multiValueHeaders"][name][0]
                .as_str()
                .map(str::to_owned)
        })
}

async fn invoke(client: &reqwest::Client, url: &str, body: String) -> Value {
    let response = client
        .post(url)
        .body(body)
        .send()
        .await
        .expect("emulator answers");
    response.json::<Value>().await.expect("JSON answer")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sample_event_is_served_under_the_emulator() {
    let Some(rie) = rie() else {
        eprintln!("skipped: AWS_LAMBDA_RIE is not set (scripts/test.sh sets it)");
        return;
    };
    let receiver = OtlpReceiver::start().await;
    let port = free_port();
    let api_port = free_port();
    let provider = ProviderDouble::start().await;
    let mut env = lambda_env(&format!("http://{}", receiver.http_addr));
    env.extend(provider.env());
    // A CA made by the binary's own command, as an operator would for a local deployment.
    let ca_dir = std::env::temp_dir().join(format!("apuntador-rie-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ca_dir);
    let created = std::process::Command::new(binary())
        .args(["create-ca", "--dir"])
        .arg(&ca_dir)
        .output()
        .expect("create-ca runs");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    env.push((
        "INFRASTRUCTURE_BASE_DIR".into(),
        ca_dir.display().to_string(),
    ));
    let args = vec![
        "--runtime-interface-emulator-address".to_owned(),
        format!("127.0.0.1:{port}"),
        "--runtime-api-address".to_owned(),
        format!("127.0.0.1:{api_port}"),
        "--log-level".to_owned(),
        "error".to_owned(),
        binary().display().to_string(),
    ];
    let _emulator = Process::spawn(&rie, &args, &env);
    let url = format!("http://127.0.0.1:{port}/2015-03-31/functions/function/invocations");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpListener::bind(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "emulator did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let expectations = expectations();
    let mut files: Vec<String> = std::fs::read_dir("events")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    for file in &files {
        assert!(
            expectations.contains_key(file.as_str()),
            "events/{file} has no expectation in this test"
        );
    }

    let mut traced = 0;
    for file in &files {
        let expect = &expectations[file.as_str()];
        let event = crate::support::sample_event(file);
        let response = invoke(&client, &url, event).await;
        assert_eq!(response["statusCode"], expect.status, "{file}: {response}");
        let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or("null"))
            .unwrap_or(Value::Null);
        if expect.body_key.is_empty() {
            assert_eq!(body, Value::Null, "{file}: redirects have no body");
        } else if expect.body_value.is_empty() {
            assert!(body[expect.body_key].is_string(), "{file}: {body}");
        } else {
            assert_eq!(
                text(&body[expect.body_key]),
                expect.body_value,
                "{file}: {body}"
            );
        }
        if expect.status == 302 {
            let location = header(&response, "location").unwrap_or_default();
            assert!(
                location.starts_with("apuntador://oauth-callback?error=invalid_state"),
                "{file}: {location}"
            );
        }
        let trace_id = header(&response, "x-trace-id").unwrap_or_default();
        assert!(
            trace_id.starts_with("1-") && trace_id.len() == 35,
            "{file}: X-Trace-ID {trace_id:?}"
        );
        if expect.status == 401 {
            assert!(header(&response, "www-authenticate").is_some(), "{file}");
        }
        if expect.traced {
            traced += 1;
        }
    }

    // Not an HTTP event: an invocation error, and the function keeps serving.
    let error = invoke(
        &client,
        &url,
        r#"{"source":"aws.events","detail":{}}"#.to_owned(),
    )
    .await;
    assert!(error["errorType"].is_string(), "{error}");
    let again = invoke(
        &client,
        &url,
        crate::support::sample_event("http-api-root.json"),
    )
    .await;
    assert_eq!(again["statusCode"], 200);
    traced += 1;

    // The emulator sends no trace header, so each traced request is a root span; health checks
    // are not traced.
    let spans = receiver
        .wait_for_spans(traced + 2, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server_spans: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.kind == 2)
        .collect();
    assert_eq!(
        server_spans.len(),
        traced,
        "one server span per traced invocation: {spans:?}"
    );
    assert!(server_spans.iter().all(|s| s.parent_span_id.is_empty()));
    assert!(
        server_spans
            .iter()
            .all(|s| s.attr("http.route") != Some("/health"))
    );
}

//! The OAuth broker as Lambda runs it: full flows per provider under the Runtime API double,
//! provider calls as CLIENT spans (no `X-Amzn-Trace-Id` sent to a provider), and credentials from Secrets
//! Manager (moto on 127.0.0.1), reachable or not.

use std::time::Duration;

use crate::support::otlp::{OtlpReceiver, ReceivedSpan};
use crate::support::provider_double::{ProviderDouble, client_secret};
use crate::support::runtime_api::{Event, Outcome, RuntimeApi};
use crate::support::{Process, binary, closed_port, http_api_event, lambda_env, moto};
use serde_json::{Value, json};

static ROOT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("1-{}-0a0a0a0a0a0a0a0a0a0a0a0a", crate::support::epoch_hex())
});
const VERIFIER: &str = "e2e-verifier-e2e-verifier-e2e-verifier-e2e-verifier";
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn trace_header() -> Option<String> {
    Some(format!("Root={};Parent=53995c3f42cd8ad8;Sampled=1", *ROOT))
}

async fn start(receiver: &OtlpReceiver, extra: Vec<(String, String)>) -> (RuntimeApi, Process) {
    let api = RuntimeApi::start().await;
    let mut env = lambda_env(&format!("http://{}", receiver.http_addr));
    env.push(("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string()));
    env.extend(extra);
    let process = Process::spawn(&binary(), &[], &env);
    (api, process)
}

async fn invoke(
    api: &RuntimeApi,
    method: &str,
    path: &str,
    query: &str,
    body: Option<Value>,
) -> (Outcome, Value) {
    let outcome = api
        .invoke(Event {
            body: http_api_event(method, path, query, body.as_ref()),
            trace_header: trace_header(),
        })
        .await;
    assert!(outcome.ok, "{path}: {}", outcome.body);
    let response = outcome.json();
    let body =
        serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    (outcome, body)
}

fn server_span<'a>(spans: &'a [ReceivedSpan], outcome: &Outcome) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| {
            s.kind == SERVER && s.attr("faas.invocation_id") == Some(outcome.request_id.as_str())
        })
        .unwrap_or_else(|| panic!("no server span for {}", outcome.request_id))
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn full_flows_trace_every_provider_call() {
    let receiver = OtlpReceiver::start().await;
    let double = ProviderDouble::start().await;
    let (api, process) = start(&receiver, double.env()).await;
    let mut secrets = vec![client_secret().to_owned(), VERIFIER.to_owned()];
    let mut expected_spans = 0;
    for provider in ["googledrive", "dropbox", "onedrive"] {
        let (outcome, body) = invoke(
            &api,
            "POST",
            &format!("/oauth/authorize/{provider}"),
            "",
            Some(json!({"code_verifier": VERIFIER, "redirect_uri": "apuntador://oauth-callback"})),
        )
        .await;
        assert_eq!(outcome.json()["statusCode"], 200, "{}", outcome.body);
        let url = body["authorization_url"].as_str().unwrap();
        let state = body["state"].as_str().unwrap().to_owned();
        let code = double.consent(url);
        secrets.push(code.clone());

        let query = format!("code={code}&state={state}");
        let (callback, _) = invoke(
            &api,
            "GET",
            &format!("/oauth/callback/{provider}"),
            &query,
            None,
        )
        .await;
        assert_eq!(callback.json()["statusCode"], 302);
        let location = callback.json()["headers"]["location"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            location.starts_with("apuntador://oauth-callback?code="),
            "{location}"
        );

        let (token, tokens) = invoke(
            &api,
            "POST",
            &format!("/oauth/token/{provider}"),
            "",
            Some(json!({"code": code, "code_verifier": VERIFIER, "state": state})),
        )
        .await;
        assert_eq!(token.json()["statusCode"], 200, "{}", token.body);
        let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
        secrets.push(refresh_token.clone());
        secrets.push(tokens["access_token"].as_str().unwrap().to_owned());

        let (refresh, _) = invoke(
            &api,
            "POST",
            &format!("/oauth/refresh/{provider}"),
            "",
            Some(json!({"refresh_token": refresh_token})),
        )
        .await;
        assert_eq!(refresh.json()["statusCode"], 200);
        let (revoke, revoked) = invoke(
            &api,
            "POST",
            &format!("/oauth/revoke/{provider}"),
            "",
            Some(json!({"token": refresh_token})),
        )
        .await;
        assert_eq!(revoke.json()["statusCode"], 200);
        assert_eq!(revoked["success"], provider != "onedrive");

        // Provider calls: token, refresh, and revoke except for OneDrive.
        let calls: Vec<(&Outcome, &str)> =
            [(&token, "token"), (&refresh, "token"), (&revoke, "revoke")]
                .into_iter()
                .filter(|(_, path)| !(provider == "onedrive" && *path == "revoke"))
                .collect();
        expected_spans += 5 + calls.len();
        let spans = receiver
            .wait_for_spans(expected_spans, Duration::from_secs(5))
            .await;
        for (outcome, path) in calls {
            let server = server_span(&spans, outcome);
            let client = children(&spans, server);
            assert_eq!(client.len(), 1, "{provider} {path}: one provider call");
            let client = client[0];
            assert_eq!(client.kind, CLIENT);
            assert_eq!(client.xray_trace_id(), *ROOT);
            assert_eq!(client.attr("http.request.method"), Some("POST"));
            assert_eq!(client.attr("server.address"), Some("127.0.0.1"));
            assert_eq!(
                client.attr("server.port"),
                Some(double.addr.port().to_string().as_str())
            );
            assert_eq!(
                client.attr("url.full"),
                Some(format!("http://{}/{provider}/{path}", double.addr).as_str())
            );
            assert_eq!(client.attr("http.response.status_code"), Some("200"));
            assert!(
                double.trace_headers().is_empty(),
                "a provider gets no X-Ray header: {:?}",
                double.trace_headers()
            );
        }
        // Spans of routes that call no provider have no children.
        assert!(children(&spans, server_span(&spans, &callback)).is_empty());
    }
    let spans = receiver.spans();
    for span in &spans {
        for (key, value) in span.attributes.iter().chain(span.resource.iter()) {
            for secret in &secrets {
                assert!(
                    !value.contains(secret.as_str()),
                    "{key} carries a secret: {value}"
                );
            }
        }
    }
    for line in process.lines() {
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "log line carries a secret: {line}"
            );
        }
    }
}

fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "eu-west-1"),
        ("OAUTH_CREDENTIALS_SECRET", "apuntador/oauth-clients"),
        (
            "GOOGLE_REDIRECT_URI",
            "https://api.example/oauth/callback/googledrive",
        ),
        ("ENABLED_CLOUD_PROVIDERS", "googledrive,dropbox"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_come_from_secrets_manager_once() {
    let Some((_moto, endpoint)) = moto() else {
        return;
    };
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new("eu-west-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
        .create_secret()
        .name("apuntador/oauth-clients")
        .secret_string(json!({"GOOGLE_CLIENT_ID": "sm-google-id", "GOOGLE_CLIENT_SECRET": "sm-google-secret", "DROPBOX_CLIENT_ID": "sm-dropbox-id"}).to_string())
        .send()
        .await
        .expect("secret created in moto");

    let receiver = OtlpReceiver::start().await;
    let (api, process) = start(&receiver, aws_env(&endpoint)).await;
    let body = json!({"code_verifier": VERIFIER, "redirect_uri": "apuntador://oauth-callback"});
    let (first, answer) = invoke(
        &api,
        "POST",
        "/oauth/authorize/googledrive",
        "",
        Some(body.clone()),
    )
    .await;
    assert_eq!(first.json()["statusCode"], 200, "{}", first.body);
    assert!(
        answer["authorization_url"]
            .as_str()
            .unwrap()
            .contains("client_id=sm-google-id")
    );
    let (second, answer) = invoke(&api, "POST", "/oauth/authorize/dropbox", "", Some(body)).await;
    assert!(
        answer["authorization_url"]
            .as_str()
            .unwrap()
            .contains("client_id=sm-dropbox-id"),
        "{}",
        second.body
    );

    let spans = receiver.wait_for_spans(3, Duration::from_secs(5)).await;
    let reads: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.attr("rpc.method") == Some("GetSecretValue"))
        .collect();
    assert_eq!(reads.len(), 1, "read once per process, then cached");
    let read = reads[0];
    assert_eq!(read.kind, CLIENT);
    assert_eq!(read.attr("rpc.system"), Some("aws-api"));
    assert_eq!(read.attr("rpc.service"), Some("SecretsManager"));
    assert!(read.attr("aws.request_id").is_some_and(|id| !id.is_empty()));
    assert_eq!(read.parent_span_id, server_span(&spans, &first).span_id);
    assert!(
        process
            .lines()
            .iter()
            .all(|l| !l.contains("sm-google-secret"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_secrets_manager_fails_only_the_oauth_routes() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let (api, _process) = start(&receiver, aws_env(&endpoint)).await;
    let body = json!({"code_verifier": VERIFIER, "redirect_uri": "apuntador://oauth-callback"});
    let (outcome, answer) =
        invoke(&api, "POST", "/oauth/authorize/googledrive", "", Some(body)).await;
    assert_eq!(outcome.json()["statusCode"], 503, "{}", outcome.body);
    assert_eq!(answer["error"], "provider_unavailable");
    let (health, _) = invoke(&api, "GET", "/health", "", None).await;
    assert_eq!(health.json()["statusCode"], 200);
    let (root, _) = invoke(&api, "GET", "/", "", None).await;
    assert_eq!(root.json()["statusCode"], 200);
}

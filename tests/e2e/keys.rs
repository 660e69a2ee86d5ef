//! Keys out of plain environment variables (issue 26 item 2): with `APP_KEYS_SECRET` the state
//! key and the configuration API's key come from one Secrets Manager secret (moto here), read
//! once per process, and a rotation (a new `SECRET_KEY`, the old one as `SECRET_KEY_PREVIOUS`)
//! loses no authorization in flight: new sandboxes open states sealed before it, and warm
//! sandboxes pick the new keys up the first time one does not fit. Before, the keys were
//! environment variables of the function, readable by anyone allowed
//! `lambda:GetFunctionConfiguration`, and a new key broke every state in flight.

use std::time::Duration;

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use serde_json::{Value, json};

use crate::device_aws::invoke_with_headers;
use crate::single_use::{VERIFIER, authorized, exchange};
use crate::support::aws_proxy::AwsProxy;
use crate::support::otlp::OtlpReceiver;
use crate::support::provider_double::ProviderDouble;
use crate::support::runtime_api::RuntimeApi;
use crate::support::{Process, binary, closed_port, lambda_env, moto};
use apuntador_backend::keys::random_secret;

const SECRET: &str = "apuntador-e2e/keys";

struct Sandbox {
    api: RuntimeApi,
    _receiver: OtlpReceiver,
    process: Process,
}

/// A sandbox in AWS mode whose keys come from [`SECRET`] only: no key in its environment.
async fn sandbox(aws_endpoint: &str, provider: &ProviderDouble, extra: &[(&str, &str)]) -> Sandbox {
    let receiver = OtlpReceiver::start().await;
    let api = RuntimeApi::start().await;
    let mut env: Vec<(String, String)> = lambda_env(&format!("http://{}", receiver.http_addr))
        .into_iter()
        .filter(|(k, _)| k != "SECRET_KEY" && k != "CONFIG_API_KEY")
        .collect();
    env.extend(provider.env());
    env.extend(
        [
            ("AWS_LAMBDA_RUNTIME_API", api.addr.to_string().as_str()),
            ("APP_KEYS_SECRET", SECRET),
            ("AWS_ENDPOINT_URL", aws_endpoint),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    assert!(!env.iter().any(|(k, _)| k == "SECRET_KEY"));
    let process = Process::spawn(&binary(), &[], &env);
    Sandbox {
        api,
        _receiver: receiver,
        process,
    }
}

/// One invocation: status, body and response headers.
async fn call(
    api: &RuntimeApi,
    method: &str,
    path: &str,
    body: Option<Value>,
    bearer: Option<&str>,
) -> (u16, Value, Value) {
    let authorization = bearer.map(|key| format!("Bearer {key}"));
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    let (outcome, status, body) =
        invoke_with_headers(api, method, path, body, None, &headers).await;
    (status, body, outcome.json()["headers"].clone())
}

async fn providers(api: &RuntimeApi, key: &str) -> u16 {
    call(api, "GET", "/config/providers", None, Some(key))
        .await
        .0
}

pub(crate) fn secrets_manager(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build(),
    )
}

/// How many times each sandbox read the keys secret, in the order the sandboxes started.
fn reads(proxy: &AwsProxy) -> usize {
    proxy
        .take_calls()
        .iter()
        .filter(|c| c.operation() == "GetSecretValue" && c.body["SecretId"] == SECRET)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_come_from_one_secret_and_a_rotation_loses_no_state_in_flight() {
    let Some((_moto, moto_endpoint)) = moto() else {
        return;
    };
    let proxy = AwsProxy::start(&moto_endpoint).await;
    let client = secrets_manager(&moto_endpoint);
    let provider = ProviderDouble::start().await;
    let (old_key, new_key) = (random_secret().unwrap(), random_secret().unwrap());
    let (old_api_key, new_api_key) = (random_secret().unwrap(), random_secret().unwrap());
    client
        .create_secret()
        .name(SECRET)
        .secret_string(json!({"SECRET_KEY": old_key, "CONFIG_API_KEY": old_api_key}).to_string())
        .send()
        .await
        .expect("secret created in moto");

    // A warm sandbox from before the rotation (it may re-read the secret after 1 s).
    let warm = sandbox(
        &proxy.endpoint,
        &provider,
        &[("APP_KEYS_MIN_REFRESH_SECONDS", "1")],
    )
    .await;
    let (before, before_code) = authorized(&warm.api, &provider).await;
    let (spare, spare_code) = authorized(&warm.api, &provider).await;
    assert_eq!(providers(&warm.api, &old_api_key).await, 200);
    assert_eq!(
        reads(&proxy),
        1,
        "read once, at the first request needing a key"
    );

    client
        .put_secret_value()
        .secret_id(SECRET)
        .secret_string(
            json!({"SECRET_KEY": new_key, "SECRET_KEY_PREVIOUS": old_key, "CONFIG_API_KEY": new_api_key})
                .to_string(),
        )
        .send()
        .await
        .expect("rotated");

    // A new sandbox seals with the new key and still opens what the old key sealed.
    let cold = sandbox(&proxy.endpoint, &provider, &[]).await;
    let (after, after_code) = authorized(&cold.api, &provider).await;
    let (status, body, _) = exchange(&cold.api, &before, &before_code).await;
    assert_eq!(status, 200, "a state sealed before the rotation: {body}");
    assert_eq!(providers(&cold.api, &new_api_key).await, 200);
    assert_eq!(providers(&cold.api, &old_api_key).await, 401);
    assert_eq!(reads(&proxy), 1, "the new sandbox read the secret once");

    // The warm sandbox meets a state sealed with a key it does not know yet: it re-reads the
    // secret once, then opens it; the new bearer key works there from then on.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, body, _) = exchange(&warm.api, &after, &after_code).await;
    assert_eq!(status, 200, "a state sealed after the rotation: {body}");
    assert_eq!(providers(&warm.api, &new_api_key).await, 200);
    let (status, body, _) = exchange(&warm.api, &spare, &spare_code).await;
    assert_eq!(status, 200, "its own old state still opens: {body}");
    assert_eq!(reads(&proxy), 1, "one re-read reached the rotation");

    // Forged states that no key opens: each is a 400, and the new sandbox (30 s between reads
    // by default) reads the secret no more for them.
    for n in 0..20u8 {
        let forged = format!(
            "v1.{}",
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [n; 120])
        );
        let (status, body, _) = exchange(&cold.api, &forged, "a-code").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_state"))
        );
    }
    assert_eq!(
        reads(&proxy),
        0,
        "forged states cost no Secrets Manager call"
    );

    assert!(
        warm.process
            .wait_for_line("the keys secret changed", Duration::from_secs(5))
            .is_some(),
        "the warm sandbox says it rotated"
    );
    for sandbox in [&warm, &cold] {
        for line in sandbox.process.lines() {
            for key in [&old_key, &new_key, &old_api_key, &new_api_key] {
                assert!(!line.contains(key.as_str()), "a key in a log line: {line}");
            }
        }
    }
}

/// Secrets Manager out of reach, or a secret that breaks the rules: the routes needing a key
/// answer 503 problem+json with `Retry-After` and say why in the log (never the value); every
/// other route keeps working.
#[tokio::test(flavor = "multi_thread")]
async fn no_usable_keys_fail_only_the_routes_that_need_them() {
    let provider = ProviderDouble::start().await;
    let unreachable = sandbox(
        &format!("http://127.0.0.1:{}", closed_port()),
        &provider,
        &[],
    )
    .await;
    for (method, path, body) in [
        (
            "POST",
            "/oauth/authorize/googledrive",
            Some(json!({"code_verifier": VERIFIER, "redirect_uri": "apuntador://oauth-callback"})),
        ),
        ("GET", "/config/providers", None),
    ] {
        let (status, answer, headers) =
            call(&unreachable.api, method, path, body, Some("a-key")).await;
        assert_eq!(status, 503, "{path}: {answer}");
        assert_eq!(answer["error"], "keys_unavailable", "{path}: {answer}");
        assert_eq!(headers["retry-after"], "5", "{path}: {headers}");
    }
    assert_eq!(
        call(&unreachable.api, "GET", "/health", None, None).await.0,
        200
    );

    let Some((_moto, moto_endpoint)) = moto() else {
        return;
    };
    let short = "too-short-for-a-key";
    secrets_manager(&moto_endpoint)
        .create_secret()
        .name(SECRET)
        .secret_string(json!({"SECRET_KEY": short}).to_string())
        .send()
        .await
        .expect("secret created in moto");
    let misconfigured = sandbox(&moto_endpoint, &provider, &[]).await;
    let (status, answer, _) = call(
        &misconfigured.api,
        "POST",
        "/oauth/authorize/googledrive",
        Some(json!({"code_verifier": VERIFIER, "redirect_uri": "apuntador://oauth-callback"})),
        None,
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("keys_unavailable"))
    );
    let said = misconfigured
        .process
        .wait_for_line("SECRET_KEY is 19 bytes long", Duration::from_secs(5));
    let lines = misconfigured.process.lines();
    assert!(said.is_some(), "the log says what is wrong: {lines:?}");
    assert!(lines.iter().all(|l| !l.contains(short)));
}

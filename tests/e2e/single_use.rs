//! Single use across sandboxes (issue 26 item 3): in AWS mode an OAuth state is exchanged at
//! most once, whichever sandbox sees it, through a conditional `PutItem` in the single-use
//! table (moto behind the serialising proxy, as DynamoDB applies a condition and its write as
//! one step). Before, each sandbox remembered only its own exchanges: the same state sent to
//! four sandboxes at once reached the provider four times.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::device_aws::{invoke, start_in_aws_mode};
use crate::support::aws_proxy::AwsProxy;
use crate::support::otlp::OtlpReceiver;
use crate::support::provider_double::ProviderDouble;
use crate::support::runtime_api::RuntimeApi;
use crate::support::{Process, closed_port, moto};

pub(crate) const VERIFIER: &str = "single-use-e2e-verifier-single-use-e2e-verifier-0123";
const TABLE: &str = "apuntador-e2e-single-use";

struct Sandbox {
    api: RuntimeApi,
    _receiver: OtlpReceiver,
    _process: Process,
}

async fn sandbox(aws_endpoint: &str, provider: &ProviderDouble) -> Sandbox {
    let mut extra: Vec<(String, String)> = provider.env();
    extra.push(("AUTO_CREATE_RESOURCES".into(), "true".into()));
    extra.push(("AWS_SINGLE_USE_TABLE".into(), TABLE.into()));
    let extra: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (receiver, api, process) = start_in_aws_mode(aws_endpoint, &extra).await;
    Sandbox {
        api,
        _receiver: receiver,
        _process: process,
    }
}

/// A fresh authorization on `api`: the state and the code the provider redirects with.
pub(crate) async fn authorized(api: &RuntimeApi, provider: &ProviderDouble) -> (String, String) {
    let (_, status, body) = invoke(
        api,
        "POST",
        "/oauth/authorize/googledrive",
        Some(json!({"code_verifier": VERIFIER, "redirect_uri": "apuntador://oauth-callback"})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let code = provider.consent(body["authorization_url"].as_str().unwrap());
    (body["state"].as_str().unwrap().to_owned(), code)
}

pub(crate) async fn exchange(api: &RuntimeApi, state: &str, code: &str) -> (u16, Value, Value) {
    let (outcome, status, body) = invoke(
        api,
        "POST",
        "/oauth/token/googledrive",
        Some(json!({"code": code, "code_verifier": VERIFIER, "state": state})),
        None,
    )
    .await;
    (status, body, outcome.json()["headers"].clone())
}

fn code_exchanges(provider: &ProviderDouble) -> usize {
    provider
        .forms()
        .iter()
        .filter(|f| f.get("grant_type").map(String::as_str) == Some("authorization_code"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_is_exchanged_once_across_sandboxes() {
    let Some((_moto, moto_endpoint)) = moto() else {
        return;
    };
    let proxy = AwsProxy::start(&moto_endpoint).await;
    let provider = ProviderDouble::start().await;
    let mut sandboxes = Vec::new();
    for _ in 0..4 {
        sandboxes.push(sandbox(&proxy.endpoint, &provider).await);
    }
    for round in 0..5 {
        let (state, code) = authorized(&sandboxes[round % 4].api, &provider).await;
        let before = code_exchanges(&provider);
        let answers = join_all(
            sandboxes
                .iter()
                .map(|sandbox| exchange(&sandbox.api, &state, &code)),
        )
        .await;
        let winners: Vec<_> = answers
            .iter()
            .filter(|(status, ..)| *status == 200)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        assert!(winners[0].1["access_token"].is_string());
        for (status, body, _) in answers.iter().filter(|(status, ..)| *status != 200) {
            assert_eq!(*status, 400, "round {round}: {body}");
            assert_eq!(body["error"], "invalid_state", "round {round}: {body}");
            assert!(
                body["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("already exchanged")),
                "{body}"
            );
        }
        assert_eq!(
            code_exchanges(&provider) - before,
            1,
            "round {round}: only the winner reached the provider"
        );
    }
    let claims: Vec<_> = proxy
        .take_calls()
        .into_iter()
        .filter(|c| c.operation() == "PutItem" && c.body["TableName"] == TABLE)
        .collect();
    assert_eq!(claims.len(), 20, "one conditional put per exchange attempt");
    for claim in &claims {
        assert_eq!(
            claim.body["ConditionExpression"],
            "attribute_not_exists(id)"
        );
        let id = claim.body["Item"]["id"]["S"].as_str().unwrap();
        assert!(
            id.starts_with("oauth-state#") && id.len() == 12 + 64,
            "{id}"
        );
        let expires: u64 = claim.body["Item"]["expires_at"]["N"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let now = apuntador_backend::clock::now_secs();
        assert!(
            expires > now + 300 && expires <= now + 600 + 300 + 5,
            "time-to-live a little past the state's expiry: {expires} vs now {now}"
        );
        assert!(!claim.body.to_string().contains(VERIFIER));
    }
}

/// The table out of reach: the exchange answers 503 problem+json with `Retry-After`, and the
/// provider is never called (no state is exchanged unrecorded).
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_store_answers_503_and_calls_no_provider() {
    let provider = ProviderDouble::start().await;
    let sandbox = sandbox(&format!("http://127.0.0.1:{}", closed_port()), &provider).await;
    let (state, code) = authorized(&sandbox.api, &provider).await;
    let (status, body, headers) = exchange(&sandbox.api, &state, &code).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "state_store_unavailable", "{body}");
    assert_eq!(headers["retry-after"], "5", "{headers}");
    assert_eq!(code_exchanges(&provider), 0);
}

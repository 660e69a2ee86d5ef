//! The OAuth routes in process, against provider doubles on 127.0.0.1 that check the protocol.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{self, Answer};
use crate::support::provider_double::{Mode, ProviderDouble, client_secret};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-abcdefgh";
const APP_REDIRECT: &str = "apuntador://oauth-callback";
const PROVIDERS: [&str; 3] = ["googledrive", "dropbox", "onedrive"];

async fn app(double: &ProviderDouble, overrides: &[(&str, &str)]) -> Router {
    let mut base: Vec<(String, String)> = double.env();
    base.push((
        "SECRET_KEY".into(),
        "oauth-router-secret-0123456789abcdef012345".into(),
    ));
    let base: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    helpers::app(helpers::config(&base, overrides)).await
}

async fn post(app: &Router, path: &str, body: Value) -> Answer {
    helpers::post(app, path, &body, &[]).await
}

async fn get(app: &Router, path_and_query: &str) -> Answer {
    helpers::get(app, path_and_query, &[]).await
}

fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

async fn authorize(app: &Router, provider: &str) -> (String, String) {
    let answer = post(
        app,
        &format!("/oauth/authorize/{provider}"),
        json!({"code_verifier": VERIFIER, "redirect_uri": APP_REDIRECT, "state": "csrf-1"}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{provider}: {}", answer.text);
    (
        answer.body["authorization_url"]
            .as_str()
            .unwrap()
            .to_owned(),
        answer.body["state"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn full_flow_for_every_provider() {
    let double = ProviderDouble::start().await;
    let app = app(&double, &[]).await;
    for provider in PROVIDERS {
        let (url, state) = authorize(&app, provider).await;
        let params = query_of(&url);
        assert!(
            url.starts_with(&format!("https://consent.example/{provider}/authorize?")),
            "{url}"
        );
        assert_eq!(params["client_id"], format!("{provider}-client-id"));
        assert_eq!(params["code_challenge"], challenge(VERIFIER));
        assert_eq!(params["state"], state);
        let expected_redirect = match provider {
            "dropbox" => APP_REDIRECT.to_owned(),
            p => format!("https://api.example/oauth/callback/{p}"),
        };
        assert_eq!(params["redirect_uri"], expected_redirect);
        match provider {
            "googledrive" => {
                assert_eq!(params["scope"], "https://www.googleapis.com/auth/drive");
                assert_eq!(params["access_type"], "offline");
            }
            "dropbox" => assert_eq!(params["token_access_type"], "offline"),
            _ => assert_eq!(params["scope"], "offline_access Files.ReadWrite"),
        }
        assert!(
            !state.contains(VERIFIER) && !url.contains(VERIFIER),
            "the verifier never leaves the app"
        );

        let code = double.consent(&url);
        let callback = get(
            &app,
            &format!("/oauth/callback/{provider}?code={code}&state={state}"),
        )
        .await;
        assert_eq!(callback.status, StatusCode::FOUND);
        let location = callback.headers[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            location.starts_with("apuntador://oauth-callback?"),
            "{location}"
        );
        let back = query_of(&location);
        assert_eq!(
            (
                back["code"].as_str(),
                back["state"].as_str(),
                back["provider"].as_str()
            ),
            (code.as_str(), state.as_str(), provider)
        );

        let tokens = post(
            &app,
            &format!("/oauth/token/{provider}"),
            json!({"code": code, "code_verifier": VERIFIER, "state": state}),
        )
        .await;
        assert_eq!(tokens.status, StatusCode::OK, "{provider}: {}", tokens.text);
        assert_eq!(tokens.headers[header::CACHE_CONTROL], "no-store");
        assert!(
            tokens.body["access_token"]
                .as_str()
                .unwrap()
                .starts_with(&format!("at-{provider}"))
        );
        let refresh_token = tokens.body["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(tokens.body["expires_in"], 3599);
        assert_eq!(
            tokens.body["token_type"],
            if provider == "dropbox" {
                "bearer"
            } else {
                "Bearer"
            }
        );
        assert!(!tokens.text.contains(client_secret()));

        let replay = post(
            &app,
            &format!("/oauth/token/{provider}"),
            json!({"code": code, "code_verifier": VERIFIER, "state": state}),
        )
        .await;
        assert_eq!(
            replay.status,
            StatusCode::BAD_REQUEST,
            "a state is exchanged once"
        );
        assert_eq!(replay.body["error"], "invalid_state");

        let refreshed = post(
            &app,
            &format!("/oauth/refresh/{provider}"),
            json!({"refresh_token": refresh_token}),
        )
        .await;
        assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
        assert_eq!(
            refreshed.body["expires_in"], 3600,
            "a string expires_in is read as a number"
        );
        assert_eq!(refreshed.body["refresh_token"], Value::Null);

        let revoked = post(
            &app,
            &format!("/oauth/revoke/{provider}"),
            json!({"token": refresh_token}),
        )
        .await;
        assert_eq!(revoked.status, StatusCode::OK);
        if provider == "onedrive" {
            assert_eq!(revoked.body["success"], false);
            assert!(
                revoked.body["message"]
                    .as_str()
                    .unwrap()
                    .contains("no token revocation")
            );
        } else {
            assert_eq!(
                revoked.body,
                json!({"success": true, "message": "Token revoked successfully"})
            );
            assert!(double.revoked().contains(&refresh_token));
            let after = post(
                &app,
                &format!("/oauth/refresh/{provider}"),
                json!({"refresh_token": refresh_token}),
            )
            .await;
            assert_eq!(after.status, StatusCode::BAD_REQUEST);
            assert_eq!(
                after.body["error"], "invalid_grant",
                "the provider's code is forwarded"
            );
            let again = post(
                &app,
                &format!("/oauth/revoke/{provider}"),
                json!({"token": "never-issued"}),
            )
            .await;
            assert_eq!(again.body["success"], false);
        }
    }
    // Client authentication as each provider expects it.
    for form in double
        .forms()
        .iter()
        .filter(|f| f.contains_key("grant_type"))
    {
        let secret = form.get("client_secret").map(String::as_str);
        if form["client_id"].starts_with("dropbox") {
            assert_eq!(secret, None, "Dropbox is a PKCE-only public client here");
        } else {
            assert_eq!(secret, Some(client_secret()));
        }
    }
}

#[tokio::test]
async fn the_exchange_is_bound_to_the_authorization() {
    let double = ProviderDouble::start().await;
    let app = app(&double, &[]).await;
    let (url, state) = authorize(&app, "googledrive").await;
    let code = double.consent(&url);
    let token = |body: Value| post(&app, "/oauth/token/googledrive", body);

    let other_verifier = "x".repeat(50);
    let wrong = token(json!({"code": code, "code_verifier": other_verifier, "state": state})).await;
    assert_eq!(
        (wrong.status, wrong.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    let dropbox = post(
        &app,
        "/oauth/token/dropbox",
        json!({"code": code, "code_verifier": VERIFIER, "state": state}),
    )
    .await;
    assert_eq!(
        (dropbox.status, dropbox.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_state"))
    );
    assert!(
        dropbox.body["detail"]
            .as_str()
            .unwrap()
            .contains("googledrive"),
        "the detail names the provider the state belongs to: {}",
        dropbox.text
    );

    let mut tampered = state.clone();
    tampered.replace_range(10..11, if &state[10..11] == "A" { "B" } else { "A" });
    let bad = token(json!({"code": code, "code_verifier": VERIFIER, "state": tampered})).await;
    assert_eq!(
        (bad.status, bad.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_state"))
    );

    let missing = token(json!({"code": code, "code_verifier": VERIFIER})).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing.body["errors"][0]["loc"], json!(["body", "state"]));

    let fine = token(json!({"code": code, "code_verifier": VERIFIER, "state": state})).await;
    assert_eq!(
        fine.status,
        StatusCode::OK,
        "the failed attempts did not burn the state: {}",
        fine.text
    );
}

#[tokio::test]
async fn redirect_uris_come_from_the_allowlist() {
    let double = ProviderDouble::start().await;
    let app = app(&double, &[]).await;
    for (uri, allowed) in [
        ("https://app.example/callback", true),
        ("apuntador://anything/here", true),
        ("https://evil.example/callback", false),
        ("https://app.example/callback/../../evil", false),
        ("javascript:alert(1)", false),
    ] {
        let answer = post(
            &app,
            "/oauth/authorize/dropbox",
            json!({"code_verifier": VERIFIER, "redirect_uri": uri}),
        )
        .await;
        if allowed {
            assert_eq!(answer.status, StatusCode::OK, "{uri}");
        } else {
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(answer.body["error"], "invalid_redirect_uri");
            assert_eq!(
                answer.headers[header::CONTENT_TYPE],
                "application/problem+json"
            );
        }
    }
}

#[tokio::test]
async fn providers_resolve_the_same_way_on_every_route() {
    let double = ProviderDouble::start().await;
    let full = app(&double, &[]).await;
    let google_only = app(&double, &[("ENABLED_CLOUD_PROVIDERS", "googledrive")]).await;
    let no_secret = app(&double, &[("GOOGLE_CLIENT_SECRET", "")]).await;
    let bodies = [
        (
            "authorize",
            json!({"code_verifier": VERIFIER, "redirect_uri": APP_REDIRECT}),
        ),
        (
            "token",
            json!({"code": "c", "code_verifier": VERIFIER, "state": "v1.x"}),
        ),
        ("refresh", json!({"refresh_token": "r"})),
        ("revoke", json!({"token": "t"})),
    ];
    for (route, body) in &bodies {
        let unknown = post(&full, &format!("/oauth/{route}/box"), body.clone()).await;
        assert_eq!(
            (unknown.status, unknown.body["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("unknown_provider")),
            "{route}"
        );
        let disabled = post(
            &google_only,
            &format!("/oauth/{route}/dropbox"),
            body.clone(),
        )
        .await;
        assert_eq!(
            disabled.status,
            StatusCode::FORBIDDEN,
            "{route}: {}",
            disabled.text
        );
        assert!(
            disabled.body["detail"]
                .as_str()
                .unwrap()
                .contains("disabled")
        );
        let unconfigured = post(
            &no_secret,
            &format!("/oauth/{route}/googledrive"),
            body.clone(),
        )
        .await;
        assert_eq!(
            unconfigured.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{route}"
        );
        assert_eq!(unconfigured.body["error"], "provider_unavailable");
    }
    let callback = get(&full, "/oauth/callback/box?code=x&state=y").await;
    assert_eq!(callback.status, StatusCode::FOUND);
    assert_eq!(
        callback.headers[header::LOCATION],
        "apuntador://oauth-callback?error=unknown_provider&provider=box"
    );
}

/// Review item 8: lengths were counted in characters, so JSON escaping and UTF-8 made some
/// sealed states larger than `/callback` and `/token` accept. Every state `/authorize` hands out
/// must open at both; what would not fit is a 422 naming the field. Since the API contract
/// (issue 16), the redirect URI and the app's state are printable ASCII without `"` and `\`
/// (the documented pattern), so characters and sealed bytes agree; anything else is a 422.
#[tokio::test]
async fn every_state_authorize_hands_out_opens_at_callback_and_token() {
    let double = ProviderDouble::start().await;
    let app = app(&double, &[]).await;
    let long_uri = |unit: &str, bytes: usize| {
        let prefix = "apuntador://oauth-callback/";
        format!(
            "{prefix}{}",
            unit.repeat((bytes - prefix.len()) / unit.len())
        )
    };
    let cases: Vec<(String, String, Option<&str>)> = vec![
        // (redirect_uri, state, the field refused or None)
        (long_uri("a", 2048), "s".repeat(512), None),
        (
            long_uri("~", 2048),
            "!#$%&'()*+,-./:;<=>?@[]^_`{|}~".repeat(17),
            None,
        ),
        (long_uri("a", 2049), "csrf".to_owned(), Some("redirect_uri")),
        (APP_REDIRECT.to_owned(), "s".repeat(513), Some("state")),
        (long_uri("é", 2048), "csrf".to_owned(), Some("redirect_uri")),
        (APP_REDIRECT.to_owned(), "é".repeat(256), Some("state")),
        (APP_REDIRECT.to_owned(), "\u{1}".repeat(85), Some("state")),
        (APP_REDIRECT.to_owned(), "\"".repeat(300), Some("state")),
        (APP_REDIRECT.to_owned(), "a\\b".to_owned(), Some("state")),
        (APP_REDIRECT.to_owned(), "a b c".to_owned(), None),
        (
            format!("{APP_REDIRECT}?a=\"b\""),
            "csrf".to_owned(),
            Some("redirect_uri"),
        ),
        (
            format!("{APP_REDIRECT}\\x"),
            "csrf".to_owned(),
            Some("redirect_uri"),
        ),
        (
            format!("{APP_REDIRECT} x"),
            "csrf".to_owned(),
            Some("redirect_uri"),
        ),
        (
            format!("{APP_REDIRECT}\u{7f}"),
            "csrf".to_owned(),
            Some("redirect_uri"),
        ),
    ];
    for (redirect_uri, client_state, refused) in cases {
        let label = format!(
            "redirect_uri {} chars, state {} chars",
            redirect_uri.chars().count(),
            client_state.chars().count()
        );
        let answer = post(
            &app,
            "/oauth/authorize/googledrive",
            json!({"code_verifier": VERIFIER, "redirect_uri": redirect_uri, "state": client_state}),
        )
        .await;
        if let Some(field) = refused {
            assert_eq!(
                answer.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{label}: {}",
                answer.text
            );
            assert_eq!(
                answer.body["errors"][0]["loc"],
                json!(["body", field]),
                "{label}"
            );
            let kind = answer.body["errors"][0]["type"]
                .as_str()
                .unwrap_or_default();
            assert!(
                ["string_pattern_mismatch", "string_too_long"].contains(&kind),
                "{label}: {kind}"
            );
            continue;
        }
        assert_eq!(answer.status, StatusCode::OK, "{label}: {}", answer.text);
        let state = answer.body["state"].as_str().unwrap().to_owned();
        let code = double.consent(answer.body["authorization_url"].as_str().unwrap());
        let callback = get(
            &app,
            &format!("/oauth/callback/googledrive?code={code}&state={state}"),
        )
        .await;
        let location = callback.headers[header::LOCATION].to_str().unwrap();
        assert_eq!(
            query_of(location).get("code"),
            Some(&code),
            "{label}: {location}"
        );
        let tokens = post(
            &app,
            "/oauth/token/googledrive",
            json!({"code": code, "code_verifier": VERIFIER, "state": state}),
        )
        .await;
        assert_eq!(tokens.status, StatusCode::OK, "{label}: {}", tokens.text);
    }
}

/// Review item 10: anyone can mint a state and send a user to the callback with text of their
/// choosing; only RFC 6749's error codes reach the app, never the description.
#[tokio::test]
async fn callback_forwards_no_attacker_chosen_error_text() {
    let double = ProviderDouble::start().await;
    let app = app(&double, &[]).await;
    let (_, state) = authorize(&app, "googledrive").await;
    for (error, expected) in [
        ("access_denied", "access_denied"),
        ("temporarily_unavailable", "temporarily_unavailable"),
        (
            "Your%20account%20is%20locked%2C%20call%20%2B1-555",
            "server_error",
        ),
        ("ACCESS_DENIED", "server_error"),
        ("", "server_error"),
    ] {
        let answer = get(&app, &format!("/oauth/callback/googledrive?error={error}&error_description=Call%20%2B1-555-0100%20to%20unlock&state={state}")).await;
        assert_eq!(answer.status, StatusCode::FOUND);
        let location = answer.headers[header::LOCATION].to_str().unwrap();
        let back = query_of(location);
        assert_eq!(back["error"], expected, "{location}");
        assert!(!location.contains("555"), "{location}");
        assert_eq!(
            back.keys()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>(),
            ["error", "provider", "state"].into(),
            "{location}"
        );
    }
}

#[tokio::test]
async fn callback_always_redirects_with_encoded_values() {
    let double = ProviderDouble::start().await;
    let app = app(&double, &[]).await;
    let (_, state) = authorize(&app, "googledrive").await;

    let denied = get(&app, &format!("/oauth/callback/googledrive?error=access_denied&error_description=User%20said%20no&state={state}")).await;
    assert_eq!(denied.status, StatusCode::FOUND);
    let back = query_of(denied.headers[header::LOCATION].to_str().unwrap());
    assert_eq!(back["error"], "access_denied");
    assert_eq!(back["provider"], "googledrive");
    assert!(!back.contains_key("error_description"), "{back:?}");

    let tricky = get(
        &app,
        &format!("/oauth/callback/googledrive?code=4%2Fabc%20def%26provider%3Devil&state={state}"),
    )
    .await;
    let location = tricky.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        location.starts_with("apuntador://oauth-callback?code=4%2Fabc+def%26provider%3Devil&"),
        "{location}"
    );
    let back = query_of(&location);
    assert_eq!(back["code"], "4/abc def&provider=evil");
    assert_eq!(back["provider"], "googledrive", "no parameter injection");

    let invalid = get(&app, "/oauth/callback/googledrive?code=x&state=v1.forged").await;
    assert_eq!(invalid.status, StatusCode::FOUND);
    assert_eq!(
        invalid.headers[header::LOCATION],
        "apuntador://oauth-callback?error=invalid_state&provider=googledrive"
    );

    let mismatch = get(
        &app,
        &format!("/oauth/callback/dropbox?code=x&state={state}"),
    )
    .await;
    let back = query_of(mismatch.headers[header::LOCATION].to_str().unwrap());
    assert_eq!(
        (back["error"].as_str(), back["provider"].as_str()),
        ("invalid_state", "dropbox")
    );

    let with_query = post(
        &app,
        "/oauth/authorize/dropbox",
        json!({"code_verifier": VERIFIER, "redirect_uri": "https://app.example/callback"}),
    )
    .await;
    let state = with_query.body["state"].as_str().unwrap();
    let answer = get(
        &app,
        &format!("/oauth/callback/dropbox?code=abc&state={state}"),
    )
    .await;
    let location = answer.headers[header::LOCATION].to_str().unwrap();
    assert!(
        location.starts_with("https://app.example/callback?code=abc&state="),
        "{location}"
    );
    assert!(!location.contains(VERIFIER));
}

#[tokio::test]
async fn provider_failures_map_to_400_502_504() {
    let double = ProviderDouble::start().await;
    let app = app(&double, &[("OAUTH_TIMEOUT_MS", "300")]).await;
    let rejected = post(
        &app,
        "/oauth/refresh/googledrive",
        json!({"refresh_token": "unknown"}),
    )
    .await;
    assert_eq!(
        (rejected.status, rejected.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert!(
        !rejected.text.contains("double says"),
        "provider text is not echoed: {}",
        rejected.text
    );

    double.set_mode(Mode::ServerError);
    let failed = post(
        &app,
        "/oauth/refresh/googledrive",
        json!({"refresh_token": "r"}),
    )
    .await;
    assert_eq!(
        (failed.status, failed.body["error"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("provider_error"))
    );
    let revoke = post(&app, "/oauth/revoke/dropbox", json!({"token": "t"})).await;
    assert_eq!(revoke.status, StatusCode::BAD_GATEWAY);

    double.set_mode(Mode::Slow);
    let slow = post(
        &app,
        "/oauth/refresh/dropbox",
        json!({"refresh_token": "r"}),
    )
    .await;
    assert_eq!(
        (slow.status, slow.body["error"].as_str()),
        (StatusCode::GATEWAY_TIMEOUT, Some("provider_timeout"))
    );

    let closed = app_with_closed_provider(&double).await;
    let unreachable = post(
        &closed,
        "/oauth/refresh/googledrive",
        json!({"refresh_token": "r"}),
    )
    .await;
    assert_eq!(unreachable.status, StatusCode::BAD_GATEWAY);
}

async fn app_with_closed_provider(double: &ProviderDouble) -> Router {
    let url = format!("http://127.0.0.1:{}/token", crate::support::closed_port());
    app(double, &[("OAUTH_GOOGLEDRIVE_TOKEN_URL", &url)]).await
}

#[tokio::test]
async fn bodies_are_validated_field_by_field() {
    let double = ProviderDouble::start().await;
    let app = app(&double, &[]).await;
    let answer = post(
        &app,
        "/oauth/authorize/googledrive",
        json!({"code_verifier": "short", "redirect_uri": ""}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let locs = answer.error_locations();
    assert_eq!(
        locs,
        [
            json!(["body", "code_verifier"]),
            json!(["body", "redirect_uri"])
        ]
    );
    let answer = post(&app, "/oauth/revoke/googledrive", json!({})).await;
    assert_eq!(
        answer.body["errors"][0],
        json!({"type": "missing", "loc": ["body", "token"], "msg": "Field required"})
    );
    let wrong_type = helpers::send(
        &app,
        Request::post("/oauth/refresh/googledrive")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("r"))
            .unwrap(),
    )
    .await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// A path segment that does not decode to UTF-8 is a problem+json 400 like every other error
/// (axum's own answer is plain text), and the callback still redirects.
#[tokio::test]
async fn a_path_that_cannot_be_read_is_a_problem_and_the_callback_still_redirects() {
    let double = ProviderDouble::start().await;
    let app = app(&double, &[]).await;
    let answer = post(
        &app,
        "/oauth/token/%FF",
        json!({"code": "c", "code_verifier": VERIFIER, "state": "s"}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    let callback = get(&app, "/oauth/callback/%FF?code=c&state=s").await;
    assert_eq!(callback.status, StatusCode::FOUND, "{}", callback.text);
    assert!(
        callback.headers[header::LOCATION]
            .to_str()
            .unwrap()
            .contains("error="),
        "{:?}",
        callback.headers
    );
}

/// Issue 27: one key seals OAuth states and attestation challenges, each in its own domain, so
/// a challenge anyone can ask for is never accepted as a state.
#[tokio::test]
async fn an_attestation_challenge_is_not_a_state() {
    let double = ProviderDouble::start().await;
    let app = app(&double, &[]).await;
    let (url, _) = authorize(&app, "googledrive").await;
    let code = double.consent(&url);
    let challenge = post(
        &app,
        "/device/attest/challenge",
        json!({"device_id": "phone-0001", "platform": "ios"}),
    )
    .await;
    let challenge = challenge.body["challenge"].as_str().unwrap().to_owned();
    let as_state = format!("v1.{}", challenge.trim_start_matches("ch1."));
    for state in [challenge, as_state] {
        let answer = post(
            &app,
            "/oauth/token/googledrive",
            json!({"code": code, "code_verifier": VERIFIER, "state": state}),
        )
        .await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_state")),
            "{state}"
        );
    }
}

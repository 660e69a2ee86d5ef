//! The attestation routes in process: the single-use challenge every attestation answers.

use axum::Router;
use axum::http::StatusCode;
use serde_json::json;

use crate::helpers;

async fn app() -> Router {
    let config = helpers::config(
        &[
            ("ENVIRONMENT", "local"),
            (
                "SECRET_KEY",
                &apuntador_backend::keys::random_secret().unwrap(),
            ),
        ],
        &[],
    );
    helpers::app(config).await
}

#[tokio::test]
async fn a_challenge_is_sealed_for_the_device_and_platform_and_expires() {
    let app = app().await;
    let answer = helpers::post(
        &app,
        "/device/attest/challenge",
        &json!({"device_id": "phone-0001", "platform": "android"}),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let challenge = answer.body["challenge"].as_str().unwrap();
    assert!(
        challenge.starts_with("ch1.") && challenge.len() <= 512,
        "{challenge}"
    );
    assert!(!challenge.contains("phone-0001"), "sealed, not readable");
    assert_eq!(answer.body["device_id"], "phone-0001");
    assert_eq!(answer.body["platform"], "android");
    assert_eq!(answer.body["expires_in"], 300);
    let expires_at = answer.body["expires_at"].as_str().unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(expires_at, "%Y-%m-%dT%H:%M:%S").is_ok(),
        "{expires_at}"
    );
    let again = helpers::post(
        &app,
        "/device/attest/challenge",
        &json!({"device_id": "phone-0001", "platform": "android"}),
        &[],
    )
    .await;
    assert_ne!(
        again.body["challenge"], answer.body["challenge"],
        "each is fresh"
    );
}

#[tokio::test]
async fn a_challenge_for_an_unknown_platform_or_a_bad_device_id_is_422() {
    let app = app().await;
    let answer = helpers::post(
        &app,
        "/device/attest/challenge",
        &json!({"device_id": "../etc", "platform": "web"}),
        &[],
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    assert_eq!(
        answer.error_locations(),
        vec![json!(["body", "device_id"]), json!(["body", "platform"])]
    );
    let missing = helpers::post(&app, "/device/attest/challenge", &json!({}), &[]).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn desktop_takes_no_challenge() {
    let app = app().await;
    let answer = helpers::post(
        &app,
        "/device/attest/challenge",
        &json!({"device_id": "desk-0001", "platform": "desktop"}),
        &[],
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    assert_eq!(answer.error_locations(), vec![json!(["body", "platform"])]);
}

// ---------------------------------------------------------------------------------------------
// The attestation routes, behind the device's client certificate (a trusted proxy header here),
// with App Attest trusting the double's root (development), the local backend in a fresh
// directory, and the operator's key for clear-cache.

use apuntador_harness::app_attest::{AppAttestDouble, DeviceKey};
use apuntador_harness::play_integrity::PlayIntegrityDouble;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::helpers::Answer;

const TEAM: &str = "TEAM123456";
const BUNDLE: &str = "app.apuntador.ios";
const OPERATOR_KEY: &str = "operator-key-for-attestation-tests-0123456789";

struct Fixture {
    app: Router,
    apple: AppAttestDouble,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The router with App Attest configured (or not), the verdict cache's lifetime, and
/// `extra` settings.
async fn fixture(app_attest: bool, cache_ttl: &str, extra: &[(&str, &str)]) -> Fixture {
    fixture_with(app_attest, None, cache_ttl, extra).await
}

/// [`fixture`], with Play Integrity for `google`'s app when given.
async fn fixture_with(
    app_attest: bool,
    google: Option<&PlayIntegrityDouble>,
    cache_ttl: &str,
    extra: &[(&str, &str)],
) -> Fixture {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    let dir = std::env::temp_dir().join(format!("apuntador-attest-{}", u64::from_le_bytes(bytes)));
    let apple = AppAttestDouble::new(TEAM, BUNDLE, true);
    let root = apple.root_pem();
    let state_key = apuntador_backend::keys::random_secret().unwrap();
    let mut vars = vec![
        ("ENVIRONMENT", "local"),
        ("SECRET_KEY", state_key.as_str()),
        ("CONFIG_API_KEY", OPERATOR_KEY),
        ("INFRASTRUCTURE_BASE_DIR", dir.to_str().unwrap()),
        ("TRUSTED_CLIENT_CERT_HEADER", "X-Client-Cert"),
        ("ATTESTATION_CACHE_TTL_SECONDS", cache_ttl),
    ];
    if app_attest {
        vars.extend([
            ("APP_ATTEST_TEAM_ID", TEAM),
            ("APP_ATTEST_BUNDLE_ID", BUNDLE),
            ("APP_ATTEST_ENVIRONMENT", "development"),
            ("APP_ATTEST_ROOT_CA_PEM", root.as_str()),
        ]);
    }
    let play_keys = google.map(|g| (g.decryption_key(), g.verification_key()));
    if let (Some(google), Some((decryption, verification))) = (google, &play_keys) {
        vars.extend([
            ("PLAY_INTEGRITY_PACKAGE_NAME", google.package.as_str()),
            (
                "PLAY_INTEGRITY_CERT_DIGESTS",
                google.certificate_digest.as_str(),
            ),
            ("PLAY_INTEGRITY_DECRYPTION_KEY", decryption.as_str()),
            ("PLAY_INTEGRITY_VERIFICATION_KEY", verification.as_str()),
        ]);
    }
    vars.extend_from_slice(extra);
    let app = helpers::app(helpers::config(&vars, &[])).await;
    Fixture { app, apple, dir }
}

fn cert_header(pem: &str) -> Vec<(&'static str, String)> {
    let encoded =
        percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string();
    vec![("x-client-cert", encoded)]
}

/// Enrolls `device` on `platform`; its certificate (PEM).
async fn enrolled(f: &Fixture, device: &str, platform: &str) -> String {
    let csr = apuntador_harness::csr::p256();
    let answer = helpers::post(
        &f.app,
        "/device/enroll",
        &json!({"csr": csr.pem, "device_id": device, "platform": platform}),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    answer.body["certificate"].as_str().unwrap().to_owned()
}

async fn challenge(f: &Fixture, device: &str, platform: &str) -> String {
    let answer = helpers::post(
        &f.app,
        "/device/attest/challenge",
        &json!({"device_id": device, "platform": platform}),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["challenge"].as_str().unwrap().to_owned()
}

/// What App Attest signs for a challenge: SHA-256 of its bytes.
fn client_data_hash(challenge: &str) -> [u8; 32] {
    Sha256::digest(challenge.as_bytes()).into()
}

async fn ios(
    f: &Fixture,
    cert: &str,
    device: &str,
    challenge: &str,
    object: &[u8],
    key: Option<&DeviceKey>,
) -> Answer {
    let mut body = json!({
        "device_token": STANDARD.encode(object),
        "device_id": device,
        "challenge": challenge,
    });
    if let Some(key) = key {
        body["key_id"] = json!(STANDARD.encode(key.key_id));
    }
    helpers::post(&f.app, "/device/attest/ios", &body, &cert_header(cert)).await
}

fn code(answer: &Answer) -> (StatusCode, &str) {
    (answer.status, answer.body["error"].as_str().unwrap_or(""))
}

async fn status(f: &Fixture, cert: &str, device: &str) -> serde_json::Value {
    let answer = helpers::get(
        &f.app,
        &format!("/device/status/{device}"),
        &cert_header(cert),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body
}

#[tokio::test]
async fn an_ios_key_is_attested_once_then_proves_possession_with_rising_counters() {
    let f = fixture(true, "0", &[]).await;
    let device = "iphone-0001";
    let cert = enrolled(&f, device, "ios").await;
    assert_eq!(
        status(&f, &cert, device).await["attestation"],
        serde_json::Value::Null
    );

    // An assertion before any attestation has no key to check against.
    let key = f.apple.generate_key();
    let c = challenge(&f, device, "ios").await;
    let early = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.assert(&key, 1, &client_data_hash(&c)),
        None,
    )
    .await;
    assert_eq!(
        code(&early),
        (StatusCode::BAD_REQUEST, "no_attested_key"),
        "{}",
        early.text
    );

    let c = challenge(&f, device, "ios").await;
    let attested = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.attest(&key, &client_data_hash(&c)),
        Some(&key),
    )
    .await;
    assert_eq!(attested.status, StatusCode::OK, "{}", attested.text);
    let keys: Vec<&str> = attested
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "status",
            "device_id",
            "timestamp",
            "integrity_verified",
            "error_message"
        ],
        "the spec's order"
    );
    assert_eq!(attested.body["status"], "valid");
    assert_eq!(attested.body["integrity_verified"], true);
    assert_eq!(attested.body["error_message"], serde_json::Value::Null);

    // The same challenge again: used, whatever the evidence.
    let replay = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.attest(&key, &client_data_hash(&c)),
        Some(&key),
    )
    .await;
    assert_eq!(code(&replay), (StatusCode::CONFLICT, "challenge_used"));

    // Assertions: the counter must rise, the signature must be the key's.
    let c = challenge(&f, device, "ios").await;
    let first = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.assert(&key, 1, &client_data_hash(&c)),
        None,
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let c = challenge(&f, device, "ios").await;
    let stale = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.assert(&key, 1, &client_data_hash(&c)),
        None,
    )
    .await;
    assert_eq!(
        code(&stale),
        (StatusCode::BAD_REQUEST, "attestation_counter"),
        "{}",
        stale.text
    );
    assert!(
        stale.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Device failed integrity check: "),
        "{}",
        stale.text
    );
    let c = challenge(&f, device, "ios").await;
    let other = f.apple.generate_key();
    let forged = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.assert(&other, 5, &client_data_hash(&c)),
        None,
    )
    .await;
    assert_eq!(
        code(&forged),
        (StatusCode::BAD_REQUEST, "assertion_signature")
    );
    let c = challenge(&f, device, "ios").await;
    let wrong_challenge = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.assert(&key, 9, &client_data_hash("another")),
        None,
    )
    .await;
    assert_eq!(
        code(&wrong_challenge),
        (StatusCode::BAD_REQUEST, "assertion_signature")
    );
    let c = challenge(&f, device, "ios").await;
    let next = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.assert(&key, 2, &client_data_hash(&c)),
        None,
    )
    .await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text);

    let latest = &status(&f, &cert, device).await["attestation"];
    assert_eq!(latest["platform"], "ios");
    assert_eq!(latest["status"], "valid");
    assert_eq!(latest["timestamp"], next.body["timestamp"]);
}

#[tokio::test]
async fn an_attestation_must_answer_a_challenge_for_its_device_and_platform() {
    let f = fixture(true, "3600", &[]).await;
    let cert = enrolled(&f, "iphone-0002", "ios").await;
    let key = f.apple.generate_key();
    for (c, expected) in [
        (
            challenge(&f, "iphone-9999", "ios").await,
            "challenge_mismatch",
        ),
        (
            challenge(&f, "iphone-0002", "android").await,
            "challenge_mismatch",
        ),
        (
            "ch1.not-a-challenge-this-backend-sealed".to_owned(),
            "challenge_invalid",
        ),
    ] {
        let answer = ios(
            &f,
            &cert,
            "iphone-0002",
            &c,
            &f.apple.attest(&key, &client_data_hash(&c)),
            Some(&key),
        )
        .await;
        assert_eq!(
            code(&answer),
            (StatusCode::BAD_REQUEST, expected),
            "{}",
            answer.text
        );
    }
    // An attestation over another challenge than the one sent.
    let c = challenge(&f, "iphone-0002", "ios").await;
    let answer = ios(
        &f,
        &cert,
        "iphone-0002",
        &c,
        &f.apple.attest(&key, &client_data_hash("other")),
        Some(&key),
    )
    .await;
    assert_eq!(
        code(&answer),
        (StatusCode::BAD_REQUEST, "attestation_challenge_mismatch")
    );
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("App Attest verification failed: "),
        "{}",
        answer.text
    );
    assert_eq!(
        status(&f, &cert, "iphone-0002").await["attestation"]["status"],
        "failed"
    );
}

#[tokio::test]
async fn a_cached_verdict_answers_only_a_fresh_challenge_until_the_operator_clears_it() {
    let f = fixture(true, "3600", &[]).await;
    let device = "iphone-0003";
    let cert = enrolled(&f, device, "ios").await;
    let key = f.apple.generate_key();
    let c = challenge(&f, device, "ios").await;
    let attested = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.attest(&key, &client_data_hash(&c)),
        Some(&key),
    )
    .await;
    assert_eq!(attested.status, StatusCode::OK, "{}", attested.text);

    // Within the cache's lifetime a fresh challenge gets the cached verdict, evidence unread.
    let garbage = vec![0xA5; 120];
    let c = challenge(&f, device, "ios").await;
    let cached = ios(&f, &cert, device, &c, &garbage, None).await;
    assert_eq!(cached.status, StatusCode::OK, "{}", cached.text);
    assert_eq!(
        cached.body["timestamp"], attested.body["timestamp"],
        "the cached verdict's time"
    );
    // ... but never without a challenge check.
    let reused = ios(&f, &cert, device, &c, &garbage, None).await;
    assert_eq!(code(&reused), (StatusCode::CONFLICT, "challenge_used"));
    let foreign = challenge(&f, "iphone-0004", "ios").await;
    let mismatched = ios(&f, &cert, device, &foreign, &garbage, None).await;
    assert_eq!(
        code(&mismatched),
        (StatusCode::BAD_REQUEST, "challenge_mismatch")
    );

    // Clearing is the operator's.
    let anyone = helpers::post(
        &f.app,
        "/device/attest/clear-cache",
        &json!({}),
        &cert_header(&cert),
    )
    .await;
    assert_eq!(anyone.status, StatusCode::UNAUTHORIZED, "{}", anyone.text);
    let wrong = helpers::post(
        &f.app,
        "/device/attest/clear-cache",
        &json!({}),
        &[("authorization", "Bearer not-the-key".to_owned())],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let cleared = helpers::post(
        &f.app,
        "/device/attest/clear-cache",
        &json!({}),
        &[("authorization", format!("Bearer {OPERATOR_KEY}"))],
    )
    .await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT, "{}", cleared.text);
    assert!(cleared.text.is_empty());

    let c = challenge(&f, device, "ios").await;
    let verified = ios(&f, &cert, device, &c, &garbage, None).await;
    assert_eq!(
        code(&verified),
        (StatusCode::BAD_REQUEST, "attestation_malformed"),
        "{}",
        verified.text
    );
    let c = challenge(&f, device, "ios").await;
    let asserted = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.assert(&key, 1, &client_data_hash(&c)),
        None,
    )
    .await;
    assert_eq!(asserted.status, StatusCode::OK, "{}", asserted.text);
    assert_ne!(
        asserted.body["timestamp"], attested.body["timestamp"],
        "verified anew"
    );
}

#[tokio::test]
async fn attestation_routes_need_the_devices_own_certificate_for_the_platform() {
    let f = fixture(true, "3600", &[]).await;
    let phone = enrolled(&f, "iphone-0005", "ios").await;
    let android = enrolled(&f, "pixel-00005", "android").await;
    let key = f.apple.generate_key();
    let c = challenge(&f, "iphone-0005", "ios").await;
    let object = f.apple.attest(&key, &client_data_hash(&c));
    let body = json!({"device_token": STANDARD.encode(&object), "device_id": "iphone-0005", "challenge": c, "key_id": STANDARD.encode(key.key_id)});
    let none = helpers::post(&f.app, "/device/attest/ios", &body, &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let other_device =
        helpers::post(&f.app, "/device/attest/ios", &body, &cert_header(&android)).await;
    assert_eq!(
        code(&other_device),
        (StatusCode::FORBIDDEN, "device_mismatch")
    );
    let mut as_android = body.clone();
    as_android["device_id"] = json!("pixel-00005");
    let other_platform = helpers::post(
        &f.app,
        "/device/attest/ios",
        &as_android,
        &cert_header(&android),
    )
    .await;
    assert_eq!(
        code(&other_platform),
        (StatusCode::FORBIDDEN, "platform_mismatch")
    );
    // None of those used the challenge.
    let answer = helpers::post(&f.app, "/device/attest/ios", &body, &cert_header(&phone)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);

    let bad = helpers::post(
        &f.app,
        "/device/attest/ios",
        &json!({"device_token": "short", "device_id": "x", "challenge": "c", "key_id": "!!"}),
        &cert_header(&phone),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        bad.error_locations(),
        vec![
            json!(["body", "device_token"]),
            json!(["body", "device_id"]),
            json!(["body", "challenge"]),
            json!(["body", "key_id"])
        ]
    );
}

#[tokio::test]
async fn unconfigured_platforms_answer_501_and_keep_the_challenge() {
    let f = fixture(false, "3600", &[]).await;
    let phone = enrolled(&f, "iphone-0006", "ios").await;
    let c = challenge(&f, "iphone-0006", "ios").await;
    let body = json!({"device_token": STANDARD.encode([1u8; 120]), "device_id": "iphone-0006", "challenge": c});
    let answer = helpers::post(&f.app, "/device/attest/ios", &body, &cert_header(&phone)).await;
    assert_eq!(
        code(&answer),
        (StatusCode::NOT_IMPLEMENTED, "attestation_unsupported"),
        "{}",
        answer.text
    );
    assert_eq!(
        answer.body["detail"],
        "App Attest verification is not configured on this deployment."
    );
    let pixel = enrolled(&f, "pixel-00006", "android").await;
    let c = challenge(&f, "pixel-00006", "android").await;
    let body = json!({"jws_token": "e".repeat(120), "device_id": "pixel-00006", "nonce": c});
    let answer = helpers::post(
        &f.app,
        "/device/attest/android",
        &body,
        &cert_header(&pixel),
    )
    .await;
    assert_eq!(
        code(&answer),
        (StatusCode::NOT_IMPLEMENTED, "attestation_unsupported"),
        "{}",
        answer.text
    );
}

async fn desktop(f: &Fixture, cert: &str, device: &str, fingerprint: &str) -> Answer {
    let body = json!({"device_id": device, "fingerprint": fingerprint, "platform_details": {"os": "linux"}});
    helpers::post(&f.app, "/device/attest/desktop", &body, &cert_header(cert)).await
}

#[tokio::test]
async fn a_desktop_fingerprint_is_bound_at_first_attestation_and_attempts_are_limited() {
    // The allowance is per clock hour: start clear of the hour's end.
    let into_hour = apuntador_backend::clock::now_secs() % 3600;
    if into_hour > 3590 {
        tokio::time::sleep(std::time::Duration::from_secs(3601 - into_hour)).await;
    }
    let f = fixture(true, "3600", &[("ATTESTATION_DESKTOP_PER_HOUR", "3")]).await;
    let device = "desk-00007";
    let cert = enrolled(&f, device, "desktop").await;
    let mine = "ab".repeat(32);
    let first = desktop(&f, &cert, device, &mine).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let keys: Vec<&str> = first
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "status",
            "device_id",
            "timestamp",
            "fingerprint_match",
            "rate_limit_ok",
            "error_message"
        ]
    );
    assert_eq!(first.body["fingerprint_match"], true);
    assert_eq!(first.body["rate_limit_ok"], true);

    let moved = desktop(&f, &cert, device, &"cd".repeat(32)).await;
    assert_eq!(
        code(&moved),
        (StatusCode::BAD_REQUEST, "fingerprint_mismatch"),
        "{}",
        moved.text
    );
    assert!(
        moved.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Device verification failed: ")
    );
    assert_eq!(
        status(&f, &cert, device).await["attestation"]["status"],
        "invalid"
    );

    let again = desktop(&f, &cert, device, &mine).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let over = desktop(&f, &cert, device, &mine).await;
    assert_eq!(
        code(&over),
        (StatusCode::TOO_MANY_REQUESTS, "attestation_rate_limited"),
        "{}",
        over.text
    );
    let retry: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // Another device has its own allowance.
    let other = enrolled(&f, "desk-00008", "desktop").await;
    assert_eq!(
        desktop(&f, &other, "desk-00008", &mine).await.status,
        StatusCode::OK
    );

    let upper = desktop(&f, &cert, device, &"AB".repeat(32)).await;
    assert_eq!(upper.status, StatusCode::UNPROCESSABLE_ENTITY);
    let no_details = helpers::post(
        &f.app,
        "/device/attest/desktop",
        &json!({"device_id": device, "fingerprint": mine}),
        &cert_header(&cert),
    )
    .await;
    assert_eq!(no_details.status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// The request hash a Play Integrity token must carry for `challenge`: base64url (no padding)
/// of SHA-256 of the challenge.
fn request_hash(challenge: &str) -> String {
    URL_SAFE_NO_PAD.encode(client_data_hash(challenge))
}

async fn android(f: &Fixture, cert: &str, device: &str, challenge: &str, token: &str) -> Answer {
    let body = json!({"jws_token": token, "device_id": device, "nonce": challenge});
    helpers::post(&f.app, "/device/attest/android", &body, &cert_header(cert)).await
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn a_play_integrity_verdict_for_the_challenge_the_app_and_a_genuine_device_is_valid() {
    let google = PlayIntegrityDouble::new("app.apuntador.android");
    let f = fixture_with(false, Some(&google), "0", &[]).await;
    let device = "pixel-00010";
    let cert = enrolled(&f, device, "android").await;
    let c = challenge(&f, device, "android").await;
    let token = google.token(&google.verdict(&request_hash(&c), now_ms()));
    let answer = android(&f, &cert, device, &c, &token).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let keys: Vec<&str> = answer
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "status",
            "device_id",
            "timestamp",
            "cts_profile_match",
            "basic_integrity",
            "advice",
            "error_message"
        ],
        "the spec's order"
    );
    assert_eq!(answer.body["status"], "valid");
    assert_eq!(answer.body["cts_profile_match"], true);
    assert_eq!(answer.body["basic_integrity"], true);
    assert_eq!(answer.body["advice"], serde_json::Value::Null);
    let replay = android(&f, &cert, device, &c, &token).await;
    assert_eq!(code(&replay), (StatusCode::CONFLICT, "challenge_used"));

    // A classic request carries the hash as its nonce.
    let c = challenge(&f, device, "android").await;
    let mut verdict = google.verdict("", now_ms());
    verdict["requestDetails"]
        .as_object_mut()
        .unwrap()
        .remove("requestHash");
    verdict["requestDetails"]["nonce"] = json!(request_hash(&c));
    let classic = android(&f, &cert, device, &c, &google.token(&verdict)).await;
    assert_eq!(classic.status, StatusCode::OK, "{}", classic.text);
    assert_eq!(
        status(&f, &cert, device).await["attestation"]["status"],
        "valid"
    );
}

#[tokio::test]
async fn a_play_integrity_verdict_is_refused_for_each_thing_it_gets_wrong() {
    let google = PlayIntegrityDouble::new("app.apuntador.android");
    let f = fixture_with(false, Some(&google), "0", &[]).await;
    let device = "pixel-00011";
    let cert = enrolled(&f, device, "android").await;
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "another challenge's hash",
            Box::new(|v| v["requestDetails"]["requestHash"] = json!(request_hash("another"))),
            "attestation_challenge_mismatch",
        ),
        (
            "no hash at all",
            Box::new(|v| {
                v["requestDetails"]
                    .as_object_mut()
                    .unwrap()
                    .remove("requestHash");
            }),
            "attestation_challenge_mismatch",
        ),
        (
            "made an hour ago",
            Box::new(|v| {
                v["requestDetails"]["timestampMillis"] = json!((now_ms() - 3_600_000).to_string())
            }),
            "token_stale",
        ),
        (
            "made in ten minutes",
            Box::new(|v| {
                v["requestDetails"]["timestampMillis"] = json!((now_ms() + 600_000).to_string())
            }),
            "token_stale",
        ),
        (
            "requested by another app",
            Box::new(|v| v["requestDetails"]["requestPackageName"] = json!("com.example.other")),
            "attestation_app_mismatch",
        ),
        (
            "a version Play does not know",
            Box::new(|v| {
                v["appIntegrity"]["appRecognitionVerdict"] = json!("UNRECOGNIZED_VERSION")
            }),
            "app_not_recognized",
        ),
        (
            "another package",
            Box::new(|v| v["appIntegrity"]["packageName"] = json!("com.example.other")),
            "attestation_app_mismatch",
        ),
        (
            "signed by another certificate",
            Box::new(|v| {
                v["appIntegrity"]["certificateSha256Digest"] =
                    json!(["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
            }),
            "app_certificate_mismatch",
        ),
        (
            "a rooted device",
            Box::new(|v| {
                v["deviceIntegrity"]["deviceRecognitionVerdict"] = json!(["MEETS_BASIC_INTEGRITY"])
            }),
            "device_integrity",
        ),
        (
            "an emulator",
            Box::new(|v| v["deviceIntegrity"] = json!({})),
            "device_integrity",
        ),
    ];
    for (what, edit, expected) in cases {
        let c = challenge(&f, device, "android").await;
        let mut verdict = google.verdict(&request_hash(&c), now_ms());
        edit(&mut verdict);
        let answer = android(&f, &cert, device, &c, &google.token(&verdict)).await;
        assert_eq!(
            code(&answer),
            (StatusCode::BAD_REQUEST, expected),
            "{what}: {}",
            answer.text
        );
    }
    // The device's verdict is reported: basic integrity only.
    let latest = status(&f, &cert, device).await;
    assert_eq!(latest["attestation"]["status"], "invalid");
    assert_eq!(latest["attestation"]["error"], "device_integrity");
    let c = challenge(&f, device, "android").await;
    let mut verdict = google.verdict(&request_hash(&c), now_ms());
    verdict["deviceIntegrity"]["deviceRecognitionVerdict"] = json!(["MEETS_BASIC_INTEGRITY"]);
    let rooted = android(&f, &cert, device, &c, &google.token(&verdict)).await;
    assert!(
        rooted.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Device failed integrity check: "),
        "{}",
        rooted.text
    );

    // Tokens this app's keys did not make.
    let forger = PlayIntegrityDouble::new("app.apuntador.android");
    let c = challenge(&f, device, "android").await;
    let verdict = google.verdict(&request_hash(&c), now_ms());
    let foreign = android(&f, &cert, device, &c, &forger.token(&verdict)).await;
    assert_eq!(
        code(&foreign),
        (StatusCode::BAD_REQUEST, "token_undecryptable"),
        "{}",
        foreign.text
    );
    assert!(
        foreign.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Play Integrity verification failed: ")
    );
    let c = challenge(&f, device, "android").await;
    let verdict = google.verdict(&request_hash(&c), now_ms());
    let forged = google.encrypt(&google.sign(&verdict, &PlayIntegrityDouble::other_signing_key()));
    let answer = android(&f, &cert, device, &c, &forged).await;
    assert_eq!(
        code(&answer),
        (StatusCode::BAD_REQUEST, "token_signature"),
        "{}",
        answer.text
    );
    // A verdict as SafetyNet's JWS, unencrypted (what the original accepted unverified).
    let c = challenge(&f, device, "android").await;
    let plain = google.sign(
        &google.verdict(&request_hash(&c), now_ms()),
        &PlayIntegrityDouble::other_signing_key(),
    );
    let answer = android(&f, &cert, device, &c, &plain).await;
    assert_eq!(
        code(&answer),
        (StatusCode::BAD_REQUEST, "attestation_malformed"),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn play_integrity_can_demand_strong_integrity_and_a_licensed_copy() {
    let google = PlayIntegrityDouble::new("app.apuntador.android");
    let f = fixture_with(
        false,
        Some(&google),
        "0",
        &[
            ("PLAY_INTEGRITY_MIN_DEVICE_INTEGRITY", "strong"),
            ("PLAY_INTEGRITY_REQUIRE_LICENSED", "true"),
        ],
    )
    .await;
    let device = "pixel-00012";
    let cert = enrolled(&f, device, "android").await;
    let c = challenge(&f, device, "android").await;
    let device_only = android(
        &f,
        &cert,
        device,
        &c,
        &google.token(&google.verdict(&request_hash(&c), now_ms())),
    )
    .await;
    assert_eq!(
        code(&device_only),
        (StatusCode::BAD_REQUEST, "device_integrity")
    );
    let c = challenge(&f, device, "android").await;
    let mut verdict = google.verdict(&request_hash(&c), now_ms());
    verdict["deviceIntegrity"]["deviceRecognitionVerdict"] = json!([
        "MEETS_BASIC_INTEGRITY",
        "MEETS_DEVICE_INTEGRITY",
        "MEETS_STRONG_INTEGRITY"
    ]);
    verdict["accountDetails"]["appLicensingVerdict"] = json!("UNLICENSED");
    let unlicensed = android(&f, &cert, device, &c, &google.token(&verdict)).await;
    assert_eq!(
        code(&unlicensed),
        (StatusCode::BAD_REQUEST, "app_unlicensed")
    );
    let c = challenge(&f, device, "android").await;
    verdict["requestDetails"]["requestHash"] = json!(request_hash(&c));
    verdict["accountDetails"]["appLicensingVerdict"] = json!("LICENSED");
    let strong = android(&f, &cert, device, &c, &google.token(&verdict)).await;
    assert_eq!(strong.status, StatusCode::OK, "{}", strong.text);
}

/// What an enrollment's attestation signs: SHA-256 of `<challenge>.<base64url of SHA-256 of
/// the CSR key's SubjectPublicKeyInfo>`.
fn enrollment_hash(challenge: &str, spki_der: &[u8]) -> [u8; 32] {
    let key = URL_SAFE_NO_PAD.encode(Sha256::digest(spki_der));
    Sha256::digest(format!("{challenge}.{key}").as_bytes()).into()
}

async fn enroll(
    f: &Fixture,
    csr: &str,
    device: &str,
    platform: &str,
    attestation: Option<serde_json::Value>,
) -> Answer {
    let mut body = json!({"csr": csr, "device_id": device, "platform": platform});
    if let Some(attestation) = attestation {
        body["attestation"] = attestation;
    }
    helpers::post(&f.app, "/device/enroll", &body, &[]).await
}

#[tokio::test]
async fn with_attestation_required_a_certificate_goes_only_to_a_key_a_genuine_app_holds() {
    let google = PlayIntegrityDouble::new("app.apuntador.android");
    let f = fixture_with(
        true,
        Some(&google),
        "3600",
        &[("ATTESTATION_REQUIRED", "android,ios")],
    )
    .await;

    // Android: no attestation, one bound to the challenge alone, one bound to another key.
    let csr = apuntador_harness::csr::p256();
    let missing = enroll(&f, &csr.pem, "pixel-00020", "android", None).await;
    assert_eq!(
        code(&missing),
        (StatusCode::BAD_REQUEST, "attestation_required"),
        "{}",
        missing.text
    );
    let other_key = apuntador_harness::csr::p256();
    let unbound = |c: &str| request_hash(c);
    let elsewhere = |c: &str| URL_SAFE_NO_PAD.encode(enrollment_hash(c, &other_key.spki_der));
    let wrong: [&dyn Fn(&str) -> String; 2] = [&unbound, &elsewhere];
    for hash_of in wrong {
        let c = challenge(&f, "pixel-00020", "android").await;
        let token = google.token(&google.verdict(&hash_of(&c), now_ms()));
        let evidence = json!({"challenge": c, "token": token});
        let answer = enroll(&f, &csr.pem, "pixel-00020", "android", Some(evidence)).await;
        assert_eq!(
            code(&answer),
            (StatusCode::BAD_REQUEST, "attestation_challenge_mismatch"),
            "{}",
            answer.text
        );
    }

    // Bound to this CSR's key, sent as the spec's string: issued.
    let c = challenge(&f, "pixel-00020", "android").await;
    let hash = URL_SAFE_NO_PAD.encode(enrollment_hash(&c, &csr.spki_der));
    let bound = google.token(&google.verdict(&hash, now_ms()));
    let attestation = json!({"challenge": c, "token": bound}).to_string();
    let issued = enroll(
        &f,
        &csr.pem,
        "pixel-00020",
        "android",
        Some(json!(attestation)),
    )
    .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.text);
    let cert = issued.body["certificate"].as_str().unwrap();
    assert_eq!(
        status(&f, cert, "pixel-00020").await["attestation"]["status"],
        "valid"
    );

    // iOS: the attested key becomes the device's, and asserts afterwards.
    let csr = apuntador_harness::csr::p256();
    let key = f.apple.generate_key();
    let c = challenge(&f, "iphone-0020", "ios").await;
    let object = f.apple.attest(&key, &enrollment_hash(&c, &csr.spki_der));
    let attestation = json!({"challenge": c, "device_token": STANDARD.encode(&object), "key_id": STANDARD.encode(key.key_id)});
    let issued = enroll(
        &f,
        &csr.pem,
        "iphone-0020",
        "ios",
        Some(attestation.clone()),
    )
    .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.text);
    let replayed = enroll(&f, &csr.pem, "iphone-0021", "ios", Some(attestation)).await;
    assert_eq!(
        code(&replayed),
        (StatusCode::BAD_REQUEST, "challenge_mismatch"),
        "another device's challenge"
    );
    let cert = issued.body["certificate"].as_str().unwrap();
    let c = challenge(&f, "iphone-0020", "ios").await;
    let asserted = ios(
        &f,
        cert,
        "iphone-0020",
        &c,
        &f.apple.assert(&key, 1, &client_data_hash(&c)),
        None,
    )
    .await;
    assert_eq!(asserted.status, StatusCode::OK, "{}", asserted.text);

    // The evidence's shape is checked where it is required; other platforms enroll as before.
    let csr = apuntador_harness::csr::p256();
    let c = challenge(&f, "iphone-0022", "ios").await;
    let shapeless = enroll(
        &f,
        &csr.pem,
        "iphone-0022",
        "ios",
        Some(json!({"challenge": c, "key_id": "short"})),
    )
    .await;
    assert_eq!(
        shapeless.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        shapeless.text
    );
    assert_eq!(
        shapeless.error_locations(),
        vec![json!(["body", "attestation", "device_token"])]
    );
    let web = enroll(&f, &csr.pem, "browser-0022", "web", Some(json!("anything"))).await;
    assert_eq!(web.status, StatusCode::CREATED, "{}", web.text);
    let number = enroll(&f, &csr.pem, "browser-0023", "web", Some(json!(5))).await;
    assert_eq!(
        number.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        number.text
    );
}

async fn renew(
    f: &Fixture,
    cert: &str,
    serial: &str,
    csr: &str,
    device: &str,
    attestation: Option<serde_json::Value>,
) -> Answer {
    let mut body = json!({"csr": csr, "device_id": device, "old_serial": serial});
    if let Some(attestation) = attestation {
        body["attestation"] = attestation;
    }
    helpers::post(&f.app, "/device/renew", &body, &cert_header(cert)).await
}

/// Review findings 1 and 4: an enrollment for an enrolled device's id changes nothing of that
/// device's (its App Attest key stays, its verdict too); and a renewal under
/// `ATTESTATION_REQUIRED` needs an attestation bound to the new key.
#[tokio::test]
async fn attested_enrollment_touches_no_enrolled_device_and_renewal_is_attested_too() {
    let f = fixture(true, "0", &[("ATTESTATION_REQUIRED", "ios")]).await;
    let csr = apuntador_harness::csr::p256();
    let key = f.apple.generate_key();
    let c = challenge(&f, "iphone-0030", "ios").await;
    let object = f.apple.attest(&key, &enrollment_hash(&c, &csr.spki_der));
    let evidence = |c: &str, object: &[u8], key: &DeviceKey| json!({"challenge": c, "device_token": STANDARD.encode(object), "key_id": STANDARD.encode(key.key_id)});
    let issued = enroll(
        &f,
        &csr.pem,
        "iphone-0030",
        "ios",
        Some(evidence(&c, &object, &key)),
    )
    .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.text);
    let cert = issued.body["certificate"].as_str().unwrap().to_owned();
    let serial = issued.body["serial"].as_str().unwrap().to_owned();
    let before = status(&f, &cert, "iphone-0030").await["attestation"].clone();

    // Someone else, with their own genuine key, enrolling the same id: refused, nothing changed.
    let theirs = apuntador_harness::csr::p256();
    let their_key = f.apple.generate_key();
    let c = challenge(&f, "iphone-0030", "ios").await;
    let object = f
        .apple
        .attest(&their_key, &enrollment_hash(&c, &theirs.spki_der));
    let taken = enroll(
        &f,
        &theirs.pem,
        "iphone-0030",
        "ios",
        Some(evidence(&c, &object, &their_key)),
    )
    .await;
    assert_eq!(
        code(&taken),
        (StatusCode::CONFLICT, "already_enrolled"),
        "{}",
        taken.text
    );
    assert_eq!(
        status(&f, &cert, "iphone-0030").await["attestation"],
        before
    );
    let c = challenge(&f, "iphone-0030", "ios").await;
    let asserted = ios(
        &f,
        &cert,
        "iphone-0030",
        &c,
        &f.apple.assert(&key, 1, &client_data_hash(&c)),
        None,
    )
    .await;
    assert_eq!(
        asserted.status,
        StatusCode::OK,
        "the device's key is still its own: {}",
        asserted.text
    );

    // Renewal: attested, with the new key.
    let next = apuntador_harness::csr::p256();
    let bare = renew(&f, &cert, &serial, &next.pem, "iphone-0030", None).await;
    assert_eq!(
        code(&bare),
        (StatusCode::BAD_REQUEST, "attestation_required"),
        "{}",
        bare.text
    );
    let c = challenge(&f, "iphone-0030", "ios").await;
    let object = f.apple.attest(&key, &enrollment_hash(&c, &csr.spki_der));
    let old_key = renew(
        &f,
        &cert,
        &serial,
        &next.pem,
        "iphone-0030",
        Some(evidence(&c, &object, &key)),
    )
    .await;
    assert_eq!(
        code(&old_key),
        (StatusCode::BAD_REQUEST, "attestation_challenge_mismatch"),
        "bound to the old CSR's key: {}",
        old_key.text
    );
    let c = challenge(&f, "iphone-0030", "ios").await;
    let object = f.apple.attest(&key, &enrollment_hash(&c, &next.spki_der));
    let renewed = renew(
        &f,
        &cert,
        &serial,
        &next.pem,
        "iphone-0030",
        Some(evidence(&c, &object, &key)),
    )
    .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.text);
}

/// Review findings 2 and 3: a cached verdict answers only assertions (an attestation's new key
/// is verified and stored) and only under the certificate it was reached with.
#[tokio::test]
async fn a_cached_verdict_answers_only_assertions_under_its_certificate() {
    let f = fixture(true, "3600", &[]).await;
    let device = "iphone-0031";
    let csr = apuntador_harness::csr::p256();
    let enrolled = enroll(&f, &csr.pem, device, "ios", None).await;
    let cert = enrolled.body["certificate"].as_str().unwrap().to_owned();
    let serial = enrolled.body["serial"].as_str().unwrap().to_owned();
    let first = f.apple.generate_key();
    let c = challenge(&f, device, "ios").await;
    let answer = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.attest(&first, &client_data_hash(&c)),
        Some(&first),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);

    // A reinstalled app attests a new key within the cache's lifetime: verified and stored.
    let second = f.apple.generate_key();
    let c = challenge(&f, device, "ios").await;
    let garbage = vec![0x5A; 120];
    let unverified = ios(&f, &cert, device, &c, &garbage, Some(&second)).await;
    assert_eq!(
        code(&unverified),
        (StatusCode::BAD_REQUEST, "attestation_malformed"),
        "{}",
        unverified.text
    );
    let c = challenge(&f, device, "ios").await;
    let answer = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.attest(&second, &client_data_hash(&c)),
        Some(&second),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let c = challenge(&f, device, "ios").await;
    let cached = ios(&f, &cert, device, &c, &garbage, None).await;
    assert_eq!(
        cached.status,
        StatusCode::OK,
        "an assertion from the cache: {}",
        cached.text
    );

    // A renewed certificate: the cache does not answer for it.
    let next = apuntador_harness::csr::p256();
    let renewed = renew(&f, &cert, &serial, &next.pem, device, None).await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.text);
    let cert = renewed.body["certificate"].as_str().unwrap().to_owned();
    let c = challenge(&f, device, "ios").await;
    let fresh = ios(&f, &cert, device, &c, &garbage, None).await;
    assert_eq!(
        code(&fresh),
        (StatusCode::BAD_REQUEST, "attestation_malformed"),
        "{}",
        fresh.text
    );
    let c = challenge(&f, device, "ios").await;
    let stale_key = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.assert(&first, 1, &client_data_hash(&c)),
        None,
    )
    .await;
    assert_eq!(
        code(&stale_key),
        (StatusCode::BAD_REQUEST, "assertion_signature"),
        "the first key was replaced"
    );
    let c = challenge(&f, device, "ios").await;
    let current = ios(
        &f,
        &cert,
        device,
        &c,
        &f.apple.assert(&second, 1, &client_data_hash(&c)),
        None,
    )
    .await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.text);
}

/// Review finding 5: a token the verifier would refuse for its size or bytes is refused at the
/// edge (422), before its challenge is used.
#[tokio::test]
async fn a_play_integrity_token_too_large_or_not_a_jwe_is_422_and_keeps_the_challenge() {
    let google = PlayIntegrityDouble::new("app.apuntador.android");
    let f = fixture_with(false, Some(&google), "0", &[]).await;
    let device = "pixel-00032";
    let cert = enrolled(&f, device, "android").await;
    let c = challenge(&f, device, "android").await;
    for token in [
        "e".repeat(16_385),
        format!("{} {}", "e".repeat(60), "e".repeat(60)),
    ] {
        let answer = android(&f, &cert, device, &c, &token).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            answer.text
        );
        assert_eq!(answer.error_locations(), vec![json!(["body", "jws_token"])]);
    }
    let token = google.token(&google.verdict(&request_hash(&c), now_ms()));
    assert_eq!(
        android(&f, &cert, device, &c, &token).await.status,
        StatusCode::OK
    );
}

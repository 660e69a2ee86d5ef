//! Attestation as an operator sees it in traces and logs (issue 27), the release binary in
//! server mode printing its spans: each attestation is an `attestation.verify` span with the
//! platform, the verdict and whether it came from the cache, the request span carries the
//! `attestation_verdict` annotation, and no token, key, attestation object, assertion or CSR
//! appears in any line the process writes, at the most verbose log level.

use std::time::Duration;

use apuntador_harness::app_attest::AppAttestDouble;
use apuntador_harness::play_integrity::PlayIntegrityDouble;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::server::start;

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
}

impl Client {
    pub(crate) async fn post(&self, path: &str, body: Value, cert: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(pem) = cert {
            let encoded =
                percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            request = request.header("x-client-cert", encoded);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Enrolls `device`: its certificate, and the CSR it sent (PEM).
    pub(crate) async fn enrolled(&self, device: &str, platform: &str) -> (String, String) {
        let csr = apuntador_harness::csr::p256();
        let (status, body) = self
            .post(
                "/device/enroll",
                json!({"csr": csr.pem, "device_id": device, "platform": platform}),
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (body["certificate"].as_str().unwrap().to_owned(), csr.pem)
    }

    pub(crate) async fn challenge(&self, device: &str, platform: &str) -> String {
        let (status, body) = self
            .post(
                "/device/attest/challenge",
                json!({"device_id": device, "platform": platform}),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["challenge"].as_str().unwrap().to_owned()
    }
}

pub(crate) fn hash(challenge: &str) -> [u8; 32] {
    Sha256::digest(challenge.as_bytes()).into()
}

#[tokio::test(flavor = "multi_thread")]
async fn attestations_are_spans_with_their_verdict_and_nothing_secret_is_written() {
    let dir = std::env::temp_dir().join(format!("apuntador-attest-traces-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let google = PlayIntegrityDouble::new("app.apuntador.android");
    let apple = AppAttestDouble::new("TEAM123456", "app.apuntador.ios", true);
    let (decryption, verification) = (google.decryption_key(), google.verification_key());
    let root = apple.root_pem();
    let (mut process, url) = start(&[
        ("ENVIRONMENT", "local"),
        ("INFRASTRUCTURE_BASE_DIR", dir.to_str().unwrap()),
        ("TRUSTED_CLIENT_CERT_HEADER", "X-Client-Cert"),
        ("OTEL_TRACES_EXPORTER", "console"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "trace"),
        ("ATTESTATION_CACHE_TTL_SECONDS", "3600"),
        ("PLAY_INTEGRITY_PACKAGE_NAME", &google.package),
        ("PLAY_INTEGRITY_CERT_DIGESTS", &google.certificate_digest),
        ("PLAY_INTEGRITY_DECRYPTION_KEY", &decryption),
        ("PLAY_INTEGRITY_VERIFICATION_KEY", &verification),
        ("APP_ATTEST_TEAM_ID", "TEAM123456"),
        ("APP_ATTEST_BUNDLE_ID", "app.apuntador.ios"),
        ("APP_ATTEST_ENVIRONMENT", "development"),
        ("APP_ATTEST_ROOT_CA_PEM", &root),
    ]);
    let client = Client {
        http: reqwest::Client::new(),
        url,
    };
    let mut secrets: Vec<String> = vec![decryption.clone(), verification.clone()];
    // The CSRs too (their base64, past the PEM header).
    let body_of = |pem: &str| pem.lines().nth(1).unwrap_or_default().to_owned();

    // Android: a rooted device (invalid), then a genuine one (valid), then a cached answer.
    let (pixel, pixel_csr) = client.enrolled("pixel-traces", "android").await;
    let c = client.challenge("pixel-traces", "android").await;
    let mut verdict = google.verdict(
        &URL_SAFE_NO_PAD.encode(hash(&c)),
        chrono::Utc::now().timestamp_millis(),
    );
    verdict["deviceIntegrity"]["deviceRecognitionVerdict"] = json!(["MEETS_BASIC_INTEGRITY"]);
    let rooted = google.token(&verdict);
    let (status, body) = client
        .post(
            "/device/attest/android",
            json!({"jws_token": rooted, "device_id": "pixel-traces", "nonce": c}),
            Some(&pixel),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("device_integrity")),
        "{body}"
    );
    secrets.push(rooted);
    for _ in 0..2 {
        let c = client.challenge("pixel-traces", "android").await;
        let token = google.token(&google.verdict(
            &URL_SAFE_NO_PAD.encode(hash(&c)),
            chrono::Utc::now().timestamp_millis(),
        ));
        let (status, body) = client
            .post(
                "/device/attest/android",
                json!({"jws_token": token, "device_id": "pixel-traces", "nonce": c}),
                Some(&pixel),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        secrets.push(token);
    }

    // iOS: an attestation, then an assertion with a bad signature after a clear.
    let (phone, phone_csr) = client.enrolled("iphone-traces", "ios").await;
    let key = apple.generate_key();
    let c = client.challenge("iphone-traces", "ios").await;
    let object = STANDARD.encode(apple.attest(&key, &hash(&c)));
    let key_id = STANDARD.encode(key.key_id);
    let (status, body) = client
        .post("/device/attest/ios", json!({"device_token": object, "device_id": "iphone-traces", "challenge": c, "key_id": key_id}), Some(&phone))
        .await;
    assert_eq!(status, 200, "{body}");
    secrets.extend([object, key_id]);
    let cleared = client
        .http
        .post(format!("{}/device/attest/clear-cache", client.url))
        .bearer_auth(crate::support::config_api_key())
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status().as_u16(), 204);
    let c = client.challenge("iphone-traces", "ios").await;
    let other = apple.generate_key();
    let forged = STANDARD.encode(apple.assert(&other, 1, &hash(&c)));
    let (status, body) = client
        .post(
            "/device/attest/ios",
            json!({"device_token": forged, "device_id": "iphone-traces", "challenge": c}),
            Some(&phone),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("assertion_signature")),
        "{body}"
    );
    secrets.push(forged);

    secrets.extend([body_of(&pixel_csr), body_of(&phone_csr)]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        process
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    let lines = process.lines();
    let spans: Vec<Value> = lines
        .iter()
        .filter(|l| l.contains("\"type\":\"span\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let verifications: Vec<(String, String, Value)> = spans
        .iter()
        .filter(|s| s["name"] == "attestation.verify")
        .map(|s| {
            let a = &s["attributes"];
            (
                a["attestation.platform"].as_str().unwrap_or("").to_owned(),
                a["attestation.verdict"].as_str().unwrap_or("").to_owned(),
                a["attestation.cached"].clone(),
            )
        })
        .collect();
    assert_eq!(
        verifications,
        [
            ("android".into(), "invalid".into(), Value::Null),
            ("android".into(), "valid".into(), json!(false)),
            ("android".into(), "valid".into(), json!(true)),
            ("ios".into(), "valid".into(), json!(false)),
            ("ios".into(), "invalid".into(), Value::Null),
        ],
        "{spans:#?}"
    );
    let annotated: Vec<&str> = spans
        .iter()
        .filter(|s| s["kind"] == "server")
        .filter_map(|s| s["attributes"]["attestation_verdict"].as_str())
        .collect();
    assert_eq!(annotated, ["invalid", "valid", "valid", "valid", "invalid"]);

    for secret in &secrets {
        // Any 32 consecutive characters of it would be a leak.
        let probe = &secret[secret.len() / 2 - 16..secret.len() / 2 + 16];
        for line in &lines {
            assert!(!line.contains(probe), "a secret in the output: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

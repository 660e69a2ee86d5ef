//! Play Integrity tokens against an implementation independent of the backend's: jwcrypto
//! (Python, on `cryptography`), as `tests/fixtures/play-integrity/jwcrypto_tokens.py` drives
//! it. A token jwcrypto makes (JWE A256KW + A256GCM around a JWS ES256, the app's keys as the
//! Play Console shows them) verifies in the backend; one made with another key does not; and a
//! token the harness's stand-in makes (which the API tests use) opens in jwcrypto, so those
//! tests speak the standard format, not one the two Rust sides merely agree on.

use std::io::Write;
use std::process::{Command, Stdio};

use apuntador_backend::attestation::play_integrity::{
    DeviceLevel, KeySource, PlayIntegrity, PlayIntegrityError, PlayIntegrityKeys,
    PlayIntegrityPolicy, PlayIntegritySettings,
};
use apuntador_harness::play_integrity::PlayIntegrityDouble;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::contract::tool;

const SCRIPT: &str = "tests/fixtures/play-integrity/jwcrypto_tokens.py";

/// The script's answer to `mode` with `input` on stdin; `None` (a skip) outside the test
/// script's virtualenv.
fn jwcrypto(mode: &str, input: &Value) -> Option<Value> {
    let python = tool("python")?;
    let mut child = Command::new(python)
        .arg(crate::support::repo_root().join(SCRIPT))
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{SCRIPT} {mode}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("JSON"))
}

fn verifier(package: &str, digest: &str, keys: PlayIntegrityKeys) -> PlayIntegrity {
    PlayIntegrity::new(PlayIntegritySettings {
        policy: PlayIntegrityPolicy {
            package: package.to_owned(),
            certificate_digests: vec![digest.to_owned()],
            min_device: DeviceLevel::Device,
            require_licensed: false,
            max_age_ms: 360_000,
        },
        source: KeySource::Environment(keys),
    })
}

#[tokio::test]
async fn a_token_jwcrypto_makes_verifies_and_the_harness_tokens_open_in_jwcrypto() {
    let double = PlayIntegrityDouble::new("app.apuntador.android");
    let hash = [42u8; 32];
    let now = chrono::Utc::now().timestamp_millis();
    let verdict = double.verdict(&URL_SAFE_NO_PAD.encode(hash), now);
    let Some(made) = jwcrypto("make", &verdict) else {
        return;
    };
    let keys = PlayIntegrityKeys::from_base64(
        made["decryption_key"].as_str().unwrap(),
        made["verification_key"].as_str().unwrap(),
    )
    .expect("jwcrypto's keys read as the Play Console's");
    let play = verifier(&double.package, &double.certificate_digest, keys.clone());
    let token = made["token"].as_str().unwrap();
    let passed = play
        .verify(play.keys().await.unwrap(), token, &hash, now)
        .expect("verifies");
    assert_eq!(passed.device, Ok(()));
    assert!(passed.checks.device && passed.checks.basic);
    assert_eq!(
        play.verify(&keys, token, &[7u8; 32], now).unwrap_err(),
        PlayIntegrityError::RequestHash
    );

    // The same verdict under keys jwcrypto made for another app: refused.
    let other = jwcrypto("make", &verdict).unwrap();
    assert_eq!(
        play.verify(&keys, other["token"].as_str().unwrap(), &hash, now)
            .unwrap_err(),
        PlayIntegrityError::Decryption
    );

    // The harness's token, opened and verified by jwcrypto.
    let opened = jwcrypto(
        "open",
        &json!({
            "decryption_key": double.decryption_key(),
            "verification_key": double.verification_key(),
            "token": double.token(&verdict),
        }),
    )
    .unwrap();
    assert_eq!(opened, verdict);
}

/// The keys from Secrets Manager (moto): read once, and the attestation verifies; with Secrets
/// Manager out of reach the route answers 503 with `Retry-After` and the challenge stays
/// unused (a second try with it is 503 again, not 409).
#[tokio::test(flavor = "multi_thread")]
async fn the_keys_come_from_secrets_manager_and_an_outage_costs_no_challenge() {
    use crate::attestation_traces::{Client, hash};

    let Some((_moto, endpoint)) = crate::support::moto() else {
        return;
    };
    let google = PlayIntegrityDouble::new("app.apuntador.android");
    let secret = json!({
        "decryption_key": google.decryption_key(),
        "verification_key": google.verification_key(),
    });
    crate::keys::secrets_manager(&endpoint)
        .create_secret()
        .name("apuntador-e2e/play-integrity")
        .secret_string(secret.to_string())
        .send()
        .await
        .expect("secret created");
    let closed = format!("http://127.0.0.1:{}", crate::support::closed_port());
    for (aws, reachable) in [(endpoint.as_str(), true), (closed.as_str(), false)] {
        let dir = std::env::temp_dir().join(format!(
            "apuntador-play-secret-{}-{reachable}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let (_server, url) = crate::server::start(&[
            ("ENVIRONMENT", "local"),
            ("INFRASTRUCTURE_BASE_DIR", dir.to_str().unwrap()),
            ("TRUSTED_CLIENT_CERT_HEADER", "X-Client-Cert"),
            ("OTEL_TRACES_EXPORTER", "none"),
            ("PLAY_INTEGRITY_PACKAGE_NAME", &google.package),
            ("PLAY_INTEGRITY_CERT_DIGESTS", &google.certificate_digest),
            ("PLAY_INTEGRITY_KEYS_SECRET", "apuntador-e2e/play-integrity"),
            ("AWS_ENDPOINT_URL", aws),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]);
        let client = Client {
            http: reqwest::Client::new(),
            url,
        };
        let (cert, _) = client.enrolled("pixel-secret", "android").await;
        let c = client.challenge("pixel-secret", "android").await;
        let now = chrono::Utc::now().timestamp_millis();
        let token = google.token(&google.verdict(&URL_SAFE_NO_PAD.encode(hash(&c)), now));
        let body = json!({"jws_token": token, "device_id": "pixel-secret", "nonce": c});
        for _ in 0..2 {
            let (status, answer) = client
                .post("/device/attest/android", body.clone(), Some(&cert))
                .await;
            if reachable {
                assert_eq!(status, 200, "{answer}");
                break;
            }
            assert_eq!(
                (status, answer["error"].as_str()),
                (503, Some("play_integrity_keys_unavailable")),
                "{answer}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! What verifying one attestation costs the request's thread, in-process, piece by piece (no
//! HTTP, no store): the figures behind the verdict cache's worth (docs/benchmark.md,
//! "Attestation").
//!
//! - Play Integrity: a token as Google makes it (harness stand-in), decrypted (AES key unwrap,
//!   AES-256-GCM) and its ES256 signature verified, then the verdict read and checked;
//! - App Attest, an attestation: a chain the harness makes (root, intermediate, leaf), CBOR,
//!   the chain verified, the nonce and key checked; and Apple's genuine iOS 14.4 attestation
//!   against Apple's real root (veehaitch/devicecheck-appattest's vector, as the tests use);
//! - App Attest, an assertion: CBOR and one ECDSA P-256 verification;
//! - the challenge's client data hash (SHA-256).
//!
//! Every figure is the best of several rounds, in microseconds per verification. Run with
//! `cargo bench --bench attestation`; `scripts/bench.sh` runs it too.

use std::hint::black_box;
use std::time::Instant;

use apuntador_backend::attestation::app_attest::{
    APPLE_ROOT_PEM, AppAttestEnvironment, AppAttestVerifier,
};
use apuntador_backend::attestation::challenge::client_data_hash;
use apuntador_backend::attestation::play_integrity::{
    DeviceLevel, KeySource, PlayIntegrity, PlayIntegrityKeys, PlayIntegrityPolicy,
    PlayIntegritySettings,
};
use apuntador_harness::app_attest::AppAttestDouble;
use apuntador_harness::play_integrity::PlayIntegrityDouble;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

const ROUNDS: usize = 7;
const ITERATIONS: usize = 300;

fn best_of(mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..ITERATIONS {
            f();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / ITERATIONS as f64);
    }
    best / 1000.0
}

fn main() {
    let hash = client_data_hash("ch1.benchmark-challenge-0123456789", None);

    let google = PlayIntegrityDouble::new("app.apuntador.android");
    let keys = PlayIntegrityKeys::from_base64(&google.decryption_key(), &google.verification_key())
        .unwrap();
    let play = PlayIntegrity::new(PlayIntegritySettings {
        policy: PlayIntegrityPolicy {
            package: google.package.clone(),
            certificate_digests: vec![google.certificate_digest.clone()],
            min_device: DeviceLevel::Device,
            require_licensed: false,
            max_age_ms: 3_600_000,
        },
        source: KeySource::Environment(keys.clone()),
    });
    let now_ms = chrono::Utc::now().timestamp_millis();
    let token = google.token(&google.verdict(&URL_SAFE_NO_PAD.encode(hash), now_ms));
    assert!(play.verify(&keys, &token, &hash, now_ms).is_ok());
    let play_us = best_of(|| {
        black_box(play.verify(&keys, black_box(&token), &hash, now_ms)).ok();
    });

    let apple = AppAttestDouble::new("TEAM123456", "app.apuntador.ios", true);
    let verifier = AppAttestVerifier::new(
        "TEAM123456",
        "app.apuntador.ios",
        AppAttestEnvironment::Development,
        &apple.root_pem(),
    )
    .unwrap();
    let key = apple.generate_key();
    let object = apple.attest(&key, &hash);
    let now = chrono::Utc::now().timestamp();
    let attested = verifier
        .attestation(&object, &key.key_id, &hash, now)
        .unwrap();
    let attest_us = best_of(|| {
        black_box(verifier.attestation(black_box(&object), &key.key_id, &hash, now)).ok();
    });
    let assertion = apple.assert(&key, 1, &hash);
    let assert_us = best_of(|| {
        black_box(verifier.assertion(black_box(&assertion), &attested, &hash)).ok();
    });

    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../tests/fixtures/app-attest/ios-14.4.json")).unwrap();
    let b64 = |v: &serde_json::Value| STANDARD.decode(v.as_str().unwrap()).unwrap();
    let genuine = b64(&fixture["attestation"]["attestationBase64"]);
    let genuine_key = b64(&fixture["attestation"]["keyIdBase64"]);
    let genuine_hash: [u8; 32] = Sha256::digest(b"wurzelpfropf").into();
    let apple_verifier = AppAttestVerifier::new(
        "6MURL8TA57",
        "de.vincent-haupert.apple-appattest-poc",
        AppAttestEnvironment::Development,
        APPLE_ROOT_PEM,
    )
    .unwrap();
    let at = 1_611_404_013;
    assert!(
        apple_verifier
            .attestation(&genuine, &genuine_key, &genuine_hash, at)
            .is_ok()
    );
    let genuine_us = best_of(|| {
        black_box(apple_verifier.attestation(black_box(&genuine), &genuine_key, &genuine_hash, at))
            .ok();
    });
    let hash_us = best_of(|| {
        black_box(client_data_hash(
            black_box("ch1.benchmark-challenge-0123456789"),
            None,
        ));
    });

    println!("| verification | µs (best of {ROUNDS} × {ITERATIONS}) |");
    println!("|---|---:|");
    println!("| Play Integrity token (unwrap, AES-GCM, ES256, checks) | {play_us:.1} |");
    println!("| App Attest attestation (harness chain) | {attest_us:.1} |");
    println!("| App Attest attestation (Apple's genuine iOS 14.4 vector) | {genuine_us:.1} |");
    println!("| App Attest assertion | {assert_us:.1} |");
    println!("| client data hash | {hash_us:.2} |");
}

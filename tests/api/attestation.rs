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

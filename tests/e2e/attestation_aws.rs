//! The attestation store on DynamoDB (moto behind the serialising proxy, which applies each
//! call whole as DynamoDB does), with several stores standing for as many Lambda sandboxes
//! racing on one device: an App Attest counter moves up once per value (a replayed assertion
//! sent to every sandbox at once passes in one), a desktop fingerprint is bound once per
//! certificate, every desktop attempt is counted, and the clear-cache mark is seen by all.

use std::collections::BTreeSet;

use apuntador_backend::attestation::Platform;
use apuntador_backend::attestation::app_attest::AttestedKey;
use apuntador_backend::attestation::desktop::Fingerprint;
use apuntador_backend::attestation::store::AttestationStore;
use apuntador_backend::attestation::store::dynamo::DynamoAttestations;
use apuntador_backend::attestation::verdict::{Checks, Status, Verdict};
use apuntador_backend::device::id::{DeviceId, Serial};
use futures_util::future::join_all;

use crate::support::aws_proxy::AwsProxy;
use crate::support::moto;

const TABLE: &str = "apuntador-e2e-attestation";
const SANDBOXES: usize = 6;

/// A store with a client of its own, as each sandbox has.
fn sandbox(endpoint: &str) -> DynamoAttestations {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("eu-west-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    DynamoAttestations::new(
        aws_sdk_dynamodb::Client::from_conf(config),
        TABLE.to_owned(),
        true,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_racing_on_one_device_change_its_attestation_state_once() {
    let Some((_moto, moto_endpoint)) = moto() else {
        return;
    };
    let proxy = AwsProxy::start(&moto_endpoint).await;
    let stores: Vec<DynamoAttestations> =
        (0..SANDBOXES).map(|_| sandbox(&proxy.endpoint)).collect();
    let device = DeviceId::parse("racing-device").unwrap();

    // The App Attest key, then one assertion counter sent to every sandbox at once.
    let key = AttestedKey {
        key_id: [7; 32],
        public_key: vec![4; 65],
        counter: 0,
    };
    stores[0].put_key(&device, &key).await.unwrap();
    let read = stores[1].key(&device).await.unwrap().expect("stored");
    assert_eq!(read, key);
    let advanced = join_all(
        stores
            .iter()
            .map(|s| s.advance_counter(&device, &key.key_id, 1)),
    )
    .await;
    let winners = advanced.iter().filter(|a| *a.as_ref().unwrap()).count();
    assert_eq!(winners, 1, "{advanced:?}");
    assert_eq!(stores[2].key(&device).await.unwrap().unwrap().counter, 1);
    assert!(
        !stores[3]
            .advance_counter(&device, &[8; 32], 9)
            .await
            .unwrap(),
        "another key's counter"
    );
    assert!(
        stores[3]
            .advance_counter(&device, &key.key_id, 5)
            .await
            .unwrap()
    );

    // A fingerprint per sandbox, one certificate: one binding, which every sandbox answers.
    let serial = Serial::parse(&"A1".repeat(16)).unwrap();
    let prints: Vec<Fingerprint> = (0..SANDBOXES)
        .map(|n| Fingerprint::parse(&format!("{n:x}").repeat(64)).unwrap())
        .collect();
    let bound = join_all(
        stores
            .iter()
            .zip(&prints)
            .map(|(s, p)| s.bind_fingerprint(&device, &serial, p)),
    )
    .await;
    let bound: BTreeSet<String> = bound
        .into_iter()
        .map(|b| b.unwrap().as_str().to_owned())
        .collect();
    assert_eq!(bound.len(), 1, "{bound:?}");
    let renewed = Serial::parse(&"B2".repeat(16)).unwrap();
    assert_eq!(
        stores[0]
            .bind_fingerprint(&device, &renewed, &prints[1])
            .await
            .unwrap(),
        prints[1],
        "a new certificate binds anew"
    );

    // Attempts counted across sandboxes, each once.
    let counts = join_all(
        stores
            .iter()
            .chain(stores.iter())
            .map(|s| s.count_attempt(&device, 490_000, 1_764_000_000)),
    )
    .await;
    let counts: BTreeSet<u64> = counts.into_iter().map(Result::unwrap).collect();
    assert_eq!(counts, (1..=2 * SANDBOXES as u64).collect());
    assert_eq!(
        stores[0]
            .count_attempt(&device, 490_001, 1_764_003_600)
            .await
            .unwrap(),
        1,
        "a new window"
    );

    // The latest verdict and the clear-cache mark, written by one, read by another.
    let verdict = Verdict::new(
        Platform::Desktop,
        Status::Valid,
        Checks {
            fingerprint_match: Some(true),
            rate_limit_ok: Some(true),
            ..Checks::default()
        },
    );
    stores[4].put_verdict(&device, &verdict).await.unwrap();
    assert_eq!(
        stores[5].verdict(&device, Platform::Desktop).await.unwrap(),
        Some(verdict.clone())
    );
    assert_eq!(
        stores[5].verdict(&device, Platform::Ios).await.unwrap(),
        None
    );
    assert_eq!(stores[1].cleared_at().await.unwrap(), None);
    let at = chrono::Utc::now();
    stores[0].clear(at).await.unwrap();
    assert_eq!(stores[1].cleared_at().await.unwrap(), Some(at));
}

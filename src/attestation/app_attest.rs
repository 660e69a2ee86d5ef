//! Apple App Attest, verified here without calling Apple: the attestation object an app gets
//! from `DCAppAttestService.attestKey` proves that a key lives in the Secure Enclave of a
//! genuine Apple device, for this app, and answers our challenge; its assertions later prove
//! the app still holds that key.
//!
//! An attestation (Apple, "Validating apps that connect to your server", steps 1 to 9):
//! the CBOR object's `fmt` is `apple-appattest`; its `x5c` chain (leaf, intermediate) leads to
//! a trusted root ([`APPLE_ROOT_PEM`], Apple's App Attestation Root CA, or a test root by
//! configuration) and is valid at the verification time; the leaf's extension
//! `1.2.840.113635.100.8.2` holds SHA-256(`authData` ‖ client data hash); the key id the app
//! names is SHA-256 of the leaf's public key and is the credential id in `authData`; the RP ID
//! hash is SHA-256 of `<team id>.<bundle id>`; the counter is 0; the AAGUID says production or
//! development as configured. The result is the key to store for the device.
//!
//! An assertion (same guide, "Verify the assertion"): the CBOR object's `signature` is an
//! ECDSA P-256 signature with SHA-256 over SHA-256(`authenticatorData` ‖ client data hash),
//! made by the stored key; the RP ID hash matches; the counter is above the stored one (so an
//! assertion cannot be replayed).
//!
//! The statement's `receipt` (for Apple's fraud-metric service) is not read.
//!
//! Parsing is bounded: CBOR through `ciborium` (its nesting limit, and byte strings read in
//! chunks of what is actually there, never a declared length), `authData` by explicit offsets.

use std::io::Cursor;

use ciborium::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;

/// Apple App Attestation Root CA, as Apple publishes it
/// (<https://www.apple.com/certificateauthority/Apple_App_Attestation_Root_CA.pem>; SHA-256
/// fingerprint 1C:B9:82:3B:A2:8B:A6:AD:2D:33:A0:06:94:1D:E2:AE:4F:51:3E:F1:D4:E8:31:B9:F7:E0:FA:7B:62:42:C9:32).
pub const APPLE_ROOT_PEM: &str =
    include_str!("../../assets/apple/Apple_App_Attestation_Root_CA.pem");

/// The leaf certificate's extension holding the nonce.
const NONCE_OID: &str = "1.2.840.113635.100.8.2";
/// The extension's DER: SEQUENCE { [1] EXPLICIT OCTET STRING (32 bytes) }.
const NONCE_DER_PREFIX: [u8; 6] = [0x30, 0x24, 0xa1, 0x22, 0x04, 0x20];

/// `authData` flag: attested credential data present.
const FLAG_ATTESTED_DATA: u8 = 0x40;

/// The AAGUID of keys made by development-signed and production-signed builds.
const AAGUID_DEVELOPMENT: &[u8; 16] = b"appattestdevelop";
const AAGUID_PRODUCTION: &[u8; 16] = b"appattest\0\0\0\0\0\0\0";

/// The largest attestation or assertion object read (a genuine attestation is about 5 KB).
pub const MAX_OBJECT_BYTES: usize = 16 * 1024;

/// Which builds' keys are accepted (`APP_ATTEST_ENVIRONMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppAttestEnvironment {
    Production,
    Development,
}

impl AppAttestEnvironment {
    fn aaguid(self) -> &'static [u8; 16] {
        match self {
            Self::Production => AAGUID_PRODUCTION,
            Self::Development => AAGUID_DEVELOPMENT,
        }
    }
}

/// What verification checks against: the app, the environment and the trusted roots.
#[derive(Clone, PartialEq, Eq)]
pub struct AppAttestVerifier {
    /// SHA-256 of `<team id>.<bundle id>`.
    rp_id_hash: [u8; 32],
    environment: AppAttestEnvironment,
    /// DER of each trusted root.
    roots: Vec<Vec<u8>>,
}

impl std::fmt::Debug for AppAttestVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppAttestVerifier")
            .field("environment", &self.environment)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

/// A key an attestation vouched for: what is stored for the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedKey {
    /// SHA-256 of the public key: the id the app uses for it.
    pub key_id: [u8; 32],
    /// The uncompressed P-256 point (65 bytes).
    pub public_key: Vec<u8>,
    /// The signature counter; 0 after the attestation.
    pub counter: u32,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AppAttestError {
    #[error("the object is not well-formed CBOR of the expected shape ({0})")]
    Malformed(&'static str),
    #[error("the attestation format is not apple-appattest")]
    Format,
    #[error(
        "the certificate chain does not lead to a trusted App Attest root, or is not valid now"
    )]
    Chain,
    #[error("the attestation does not answer this challenge")]
    Nonce,
    #[error("the key id is not the attested key's")]
    KeyId,
    #[error("the attestation is for another app")]
    App,
    #[error(
        "the counter is not what it must be (0 for an attestation, above the last for an assertion)"
    )]
    Counter,
    #[error("the key was made by a build of another environment (development or production)")]
    Environment,
    #[error("the assertion's signature does not verify with the device's key")]
    Signature,
}

impl AppAttestError {
    /// The stable `error` code of the problem answered.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "attestation_malformed",
            Self::Format => "attestation_format",
            Self::Chain => "attestation_untrusted",
            Self::Nonce => "attestation_challenge_mismatch",
            Self::KeyId => "attestation_key_mismatch",
            Self::App => "attestation_app_mismatch",
            Self::Counter => "attestation_counter",
            Self::Environment => "attestation_environment",
            Self::Signature => "assertion_signature",
        }
    }
}

/// The fixed part of `authData` / `authenticatorData`.
struct AuthData<'a> {
    rp_id_hash: &'a [u8],
    flags: u8,
    counter: u32,
    rest: &'a [u8],
}

fn auth_data(bytes: &[u8]) -> Result<AuthData<'_>, AppAttestError> {
    if bytes.len() < 37 {
        return Err(AppAttestError::Malformed("authData shorter than 37 bytes"));
    }
    let (rp_id_hash, rest) = bytes.split_at(32);
    let flags = rest[0];
    let counter = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
    Ok(AuthData {
        rp_id_hash,
        flags,
        counter,
        rest: &rest[5..],
    })
}

/// The CBOR map of an attestation or assertion object, by text key.
fn cbor_map(object: &[u8]) -> Result<Vec<(Value, Value)>, AppAttestError> {
    if object.len() > MAX_OBJECT_BYTES {
        return Err(AppAttestError::Malformed("larger than 16 KiB"));
    }
    let mut reader = Cursor::new(object);
    let value: Value =
        ciborium::from_reader(&mut reader).map_err(|_| AppAttestError::Malformed("not CBOR"))?;
    if usize::try_from(reader.position()).ok() != Some(object.len()) {
        return Err(AppAttestError::Malformed("trailing bytes"));
    }
    match value {
        Value::Map(entries) => Ok(entries),
        _ => Err(AppAttestError::Malformed("not a map")),
    }
}

fn field<'a>(map: &'a [(Value, Value)], name: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(key, _)| key.as_text() == Some(name))
        .map(|(_, value)| value)
}

fn bytes_field<'a>(
    map: &'a [(Value, Value)],
    name: &'static str,
) -> Result<&'a [u8], AppAttestError> {
    field(map, name)
        .and_then(Value::as_bytes)
        .map(Vec::as_slice)
        .ok_or(AppAttestError::Malformed(name))
}

fn nonce(auth_data: &[u8], client_data_hash: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(auth_data);
    hasher.update(client_data_hash);
    hasher.finalize().into()
}

impl AppAttestVerifier {
    /// Verifies for the app `<team_id>.<bundle_id>`, trusting `roots_pem` (PEM certificates;
    /// [`APPLE_ROOT_PEM`] in deployments). `None` if a root is not a PEM certificate.
    pub fn new(
        team_id: &str,
        bundle_id: &str,
        environment: AppAttestEnvironment,
        roots_pem: &str,
    ) -> Option<Self> {
        let roots: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(roots_pem.as_bytes())
            .map(|pem| pem.ok().map(|pem| pem.contents))
            .collect::<Option<_>>()?;
        if roots.is_empty()
            || roots
                .iter()
                .any(|der| X509Certificate::from_der(der).is_err())
        {
            return None;
        }
        Some(Self {
            rp_id_hash: Sha256::digest(format!("{team_id}.{bundle_id}")).into(),
            environment,
            roots,
        })
    }

    /// Verifies `object` (the attestation, CBOR) as made for the key `key_id` over
    /// `client_data_hash` ([`super::challenge::client_data_hash`]), with certificates valid at
    /// `now` (Unix seconds).
    pub fn attestation(
        &self,
        object: &[u8],
        key_id: &[u8],
        client_data_hash: &[u8; 32],
        now: i64,
    ) -> Result<AttestedKey, AppAttestError> {
        let map = cbor_map(object)?;
        if field(&map, "fmt").and_then(Value::as_text) != Some("apple-appattest") {
            return Err(AppAttestError::Format);
        }
        let statement = field(&map, "attStmt")
            .and_then(Value::as_map)
            .ok_or(AppAttestError::Malformed("attStmt"))?;
        let x5c = field(statement, "x5c")
            .and_then(Value::as_array)
            .ok_or(AppAttestError::Malformed("x5c"))?;
        let [leaf, intermediate] = x5c.as_slice() else {
            return Err(AppAttestError::Malformed(
                "x5c is not leaf and intermediate",
            ));
        };
        let (leaf, intermediate) = match (leaf.as_bytes(), intermediate.as_bytes()) {
            (Some(leaf), Some(intermediate)) => (leaf, intermediate),
            _ => return Err(AppAttestError::Malformed("x5c")),
        };
        let auth_data_bytes = bytes_field(&map, "authData")?;

        // The chain, at `now`.
        let time = ASN1Time::from_timestamp(now).map_err(|_| AppAttestError::Chain)?;
        let (_, leaf) = X509Certificate::from_der(leaf).map_err(|_| AppAttestError::Chain)?;
        let (_, intermediate) =
            X509Certificate::from_der(intermediate).map_err(|_| AppAttestError::Chain)?;
        let intermediate_is_ca = intermediate
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|constraints| constraints.value.ca);
        let rooted = self.roots.iter().any(|der| {
            X509Certificate::from_der(der).is_ok_and(|(_, root)| {
                root.validity().is_valid_at(time)
                    && intermediate
                        .verify_signature(Some(root.public_key()))
                        .is_ok()
            })
        });
        if !rooted
            || !intermediate_is_ca
            || !intermediate.validity().is_valid_at(time)
            || !leaf.validity().is_valid_at(time)
            || leaf
                .verify_signature(Some(intermediate.public_key()))
                .is_err()
        {
            return Err(AppAttestError::Chain);
        }

        // The nonce: the attestation answers this client data.
        let expected = nonce(auth_data_bytes, client_data_hash);
        let extension = leaf
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == NONCE_OID)
            .ok_or(AppAttestError::Nonce)?;
        let value = extension.value;
        if value.len() != NONCE_DER_PREFIX.len() + 32
            || value[..NONCE_DER_PREFIX.len()] != NONCE_DER_PREFIX
            || value[NONCE_DER_PREFIX.len()..] != expected
        {
            return Err(AppAttestError::Nonce);
        }

        // The key: an uncompressed P-256 point whose hash is the key id.
        let public_key = leaf.public_key().subject_public_key.data.to_vec();
        if public_key.len() != 65 || public_key[0] != 0x04 {
            return Err(AppAttestError::KeyId);
        }
        let attested_id: [u8; 32] = Sha256::digest(&public_key).into();
        if key_id != attested_id {
            return Err(AppAttestError::KeyId);
        }

        // authData: this app, counter 0, the environment, the credential is the key.
        let auth = auth_data(auth_data_bytes)?;
        if auth.rp_id_hash != self.rp_id_hash {
            return Err(AppAttestError::App);
        }
        if auth.counter != 0 {
            return Err(AppAttestError::Counter);
        }
        if auth.flags & FLAG_ATTESTED_DATA == 0 || auth.rest.len() < 18 {
            return Err(AppAttestError::Malformed("no attested credential data"));
        }
        let (aaguid, rest) = auth.rest.split_at(16);
        if aaguid != self.environment.aaguid() {
            return Err(AppAttestError::Environment);
        }
        let id_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let credential_id = rest
            .get(2..2 + id_len)
            .ok_or(AppAttestError::Malformed("credential id"))?;
        if credential_id != attested_id {
            return Err(AppAttestError::KeyId);
        }
        Ok(AttestedKey {
            key_id: attested_id,
            public_key,
            counter: 0,
        })
    }

    /// Verifies `object` (an assertion, CBOR) as made by `key` over `client_data_hash`; the
    /// new counter to store.
    pub fn assertion(
        &self,
        object: &[u8],
        key: &AttestedKey,
        client_data_hash: &[u8; 32],
    ) -> Result<u32, AppAttestError> {
        let map = cbor_map(object)?;
        let signature = bytes_field(&map, "signature")?;
        let authenticator_data = bytes_field(&map, "authenticatorData")?;
        let expected = nonce(authenticator_data, client_data_hash);
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            &key.public_key,
        )
        .verify(&expected, signature)
        .map_err(|_| AppAttestError::Signature)?;
        let auth = auth_data(authenticator_data)?;
        if auth.rp_id_hash != self.rp_id_hash {
            return Err(AppAttestError::App);
        }
        if auth.counter <= key.counter {
            return Err(AppAttestError::Counter);
        }
        Ok(auth.counter)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    /// A genuine attestation and assertion made by an iPhone on iOS 14.4 for a development
    /// build of `de.vincent-haupert.apple-appattest-poc` (team 6MURL8TA57) over the client data
    /// `wurzelpfropf`, published by the App Attest verifier
    /// <https://github.com/veehaitch/devicecheck-appattest> (Apache-2.0) as
    /// `src/test/resources/ios-14.4.yaml`; copied to tests/fixtures/app-attest/ios-14.4.json.
    /// Its leaf certificate is valid from 2021-01-22T12:13:35Z to 2021-01-25T12:13:35Z, so it
    /// is verified at the time it was made, 2021-01-23T12:13:33Z.
    const GENUINE: &str = include_str!("../../tests/fixtures/app-attest/ios-14.4.json");
    const GENUINE_AT: i64 = 1_611_404_013;

    struct Genuine {
        attestation: Vec<u8>,
        assertion: Vec<u8>,
        key_id: Vec<u8>,
        client_data_hash: [u8; 32],
    }

    fn genuine() -> Genuine {
        let fixture: serde_json::Value = serde_json::from_str(GENUINE).unwrap();
        let b64 = |v: &serde_json::Value| STANDARD.decode(v.as_str().unwrap()).unwrap();
        let client_data = b64(&fixture["attestation"]["clientDataBase64"]);
        assert_eq!(client_data, b"wurzelpfropf");
        Genuine {
            attestation: b64(&fixture["attestation"]["attestationBase64"]),
            assertion: b64(&fixture["assertion"]["assertionBase64"]),
            key_id: b64(&fixture["attestation"]["keyIdBase64"]),
            client_data_hash: Sha256::digest(&client_data).into(),
        }
    }

    fn apple(environment: AppAttestEnvironment, bundle: &str) -> AppAttestVerifier {
        AppAttestVerifier::new("6MURL8TA57", bundle, environment, APPLE_ROOT_PEM).unwrap()
    }

    const BUNDLE: &str = "de.vincent-haupert.apple-appattest-poc";

    #[test]
    fn a_genuine_attestation_verifies_against_apples_root_at_its_issue_time() {
        let g = genuine();
        let verifier = apple(AppAttestEnvironment::Development, BUNDLE);
        let key = verifier
            .attestation(&g.attestation, &g.key_id, &g.client_data_hash, GENUINE_AT)
            .unwrap();
        assert_eq!(key.key_id.as_slice(), g.key_id.as_slice());
        assert_eq!(key.counter, 0);
        // The same key as the fixture's PEM public key (its last 65 bytes are the point).
        assert_eq!(
            STANDARD.encode(&key.public_key),
            "BIjANKGQqn28WgYVAcZUKAOUJYIZiz8cxUZzyjua0gtBUoJnpU9f26BGn6+0a7aZCjlr8E+UpJ1DIMgcerJAo5g="
        );
        // And the app's first assertion with that key.
        assert_eq!(
            verifier.assertion(&g.assertion, &key, &g.client_data_hash),
            Ok(1)
        );
    }

    #[test]
    fn the_genuine_attestation_fails_every_check_it_should() {
        let g = genuine();
        let verifier = apple(AppAttestEnvironment::Development, BUNDLE);
        let attest = |verifier: &AppAttestVerifier, object: &[u8], key_id: &[u8], hash, at| {
            verifier.attestation(object, key_id, hash, at)
        };
        let other_hash: [u8; 32] = Sha256::digest(b"another challenge").into();
        assert_eq!(
            attest(
                &verifier,
                &g.attestation,
                &g.key_id,
                &other_hash,
                GENUINE_AT
            ),
            Err(AppAttestError::Nonce)
        );
        assert_eq!(
            attest(
                &verifier,
                &g.attestation,
                &[0u8; 32],
                &g.client_data_hash,
                GENUINE_AT
            ),
            Err(AppAttestError::KeyId)
        );
        // Today the leaf has long expired.
        assert_eq!(
            attest(
                &verifier,
                &g.attestation,
                &g.key_id,
                &g.client_data_hash,
                crate::clock::now_secs() as i64
            ),
            Err(AppAttestError::Chain)
        );
        assert_eq!(
            attest(
                &apple(AppAttestEnvironment::Development, "com.example.other"),
                &g.attestation,
                &g.key_id,
                &g.client_data_hash,
                GENUINE_AT
            ),
            Err(AppAttestError::App)
        );
        assert_eq!(
            attest(
                &apple(AppAttestEnvironment::Production, BUNDLE),
                &g.attestation,
                &g.key_id,
                &g.client_data_hash,
                GENUINE_AT
            ),
            Err(AppAttestError::Environment)
        );
        // Another root (any self-made CA) does not vouch for Apple's chain.
        let other_root = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        let untrusting = AppAttestVerifier::new(
            "6MURL8TA57",
            BUNDLE,
            AppAttestEnvironment::Development,
            &other_root,
        )
        .unwrap();
        assert_eq!(
            attest(
                &untrusting,
                &g.attestation,
                &g.key_id,
                &g.client_data_hash,
                GENUINE_AT
            ),
            Err(AppAttestError::Chain)
        );
        // One flipped byte in the format, the leaf, the intermediate or authData breaks it.
        // (The receipt in the middle is not read: it serves Apple's fraud metric, which this
        // backend does not ask for.)
        for at in [10, 500, 1000, g.attestation.len() - 40] {
            let mut tampered = g.attestation.clone();
            tampered[at] ^= 0x01;
            assert!(
                attest(
                    &verifier,
                    &tampered,
                    &g.key_id,
                    &g.client_data_hash,
                    GENUINE_AT
                )
                .is_err(),
                "byte {at}"
            );
        }
    }

    #[test]
    fn an_assertion_cannot_be_replayed_or_moved() {
        let g = genuine();
        let verifier = apple(AppAttestEnvironment::Development, BUNDLE);
        let key = verifier
            .attestation(&g.attestation, &g.key_id, &g.client_data_hash, GENUINE_AT)
            .unwrap();
        let seen = AttestedKey {
            counter: 1,
            ..key.clone()
        };
        assert_eq!(
            verifier.assertion(&g.assertion, &seen, &g.client_data_hash),
            Err(AppAttestError::Counter),
            "the counter must grow"
        );
        let other_hash: [u8; 32] = Sha256::digest(b"another request").into();
        assert_eq!(
            verifier.assertion(&g.assertion, &key, &other_hash),
            Err(AppAttestError::Signature)
        );
        let mut other_key = key.clone();
        other_key.public_key[10] ^= 1;
        assert_eq!(
            verifier.assertion(&g.assertion, &other_key, &g.client_data_hash),
            Err(AppAttestError::Signature)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let verifier = apple(AppAttestEnvironment::Production, BUNDLE);
        let key = AttestedKey {
            key_id: [0; 32],
            public_key: vec![4; 65],
            counter: 0,
        };
        let huge = vec![0u8; MAX_OBJECT_BYTES + 1];
        // A byte string declaring 2^62 bytes, and deep nesting.
        let declared = [0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3];
        let deep = vec![0x81u8; 4096];
        for object in [
            &b""[..],
            b"\xa0",
            b"not cbor at all",
            &huge,
            &declared,
            &deep,
            b"\xa1\x63fmt\x6eapple-appattest",
        ] {
            assert!(verifier.attestation(object, &[0; 32], &[0; 32], 0).is_err());
            assert!(verifier.assertion(object, &key, &[0; 32]).is_err());
        }
    }

    mod made {
        use apuntador_harness::app_attest::AppAttestDouble;

        use super::*;

        const TEAM: &str = "ABCDE12345";
        const APP: &str = "com.apuntador.app";

        fn verifier(
            double: &AppAttestDouble,
            environment: AppAttestEnvironment,
        ) -> AppAttestVerifier {
            AppAttestVerifier::new(TEAM, APP, environment, &double.root_pem()).unwrap()
        }

        fn now() -> i64 {
            crate::clock::now_secs() as i64
        }

        /// A chain the test makes, trusted by configuration: attestation, then assertions with
        /// a growing counter.
        #[test]
        fn a_key_attested_by_a_configured_root_then_asserts() {
            let double = AppAttestDouble::new(TEAM, APP, false);
            let verifier = verifier(&double, AppAttestEnvironment::Production);
            let key = double.generate_key();
            let hash: [u8; 32] = Sha256::digest(b"ch1.challenge").into();
            let attested = verifier
                .attestation(&double.attest(&key, &hash), &key.key_id, &hash, now())
                .unwrap();
            assert_eq!(attested.key_id, key.key_id);
            let request: [u8; 32] = Sha256::digest(b"ch1.next").into();
            let counter = verifier
                .assertion(&double.assert(&key, 1, &request), &attested, &request)
                .unwrap();
            assert_eq!(counter, 1);
            let later = AttestedKey {
                counter,
                ..attested
            };
            assert_eq!(
                verifier.assertion(&double.assert(&key, 5, &request), &later, &request),
                Ok(5)
            );
            assert_eq!(
                verifier.assertion(&double.assert(&key, 1, &request), &later, &request),
                Err(AppAttestError::Counter)
            );
            // Apple's real root does not vouch for the test's chain.
            let apple =
                AppAttestVerifier::new(TEAM, APP, AppAttestEnvironment::Production, APPLE_ROOT_PEM)
                    .unwrap();
            assert_eq!(
                apple.attestation(&double.attest(&key, &hash), &key.key_id, &hash, now()),
                Err(AppAttestError::Chain)
            );
        }

        #[test]
        fn each_rule_of_the_attestation_is_enforced() {
            let double = AppAttestDouble::new(TEAM, APP, true);
            let key = double.generate_key();
            let hash: [u8; 32] = Sha256::digest(b"ch1.challenge").into();
            let development = verifier(&double, AppAttestEnvironment::Development);
            assert!(
                development
                    .attestation(&double.attest(&key, &hash), &key.key_id, &hash, now())
                    .is_ok()
            );
            assert_eq!(
                verifier(&double, AppAttestEnvironment::Production).attestation(
                    &double.attest(&key, &hash),
                    &key.key_id,
                    &hash,
                    now()
                ),
                Err(AppAttestError::Environment)
            );
            let counter_one = double.attest_with(&key, &hash, |data| data[36] = 1);
            assert_eq!(
                development.attestation(&counter_one, &key.key_id, &hash, now()),
                Err(AppAttestError::Counter)
            );
            let other_app = double.attest_with(&key, &hash, |data| data[0] ^= 1);
            assert_eq!(
                development.attestation(&other_app, &key.key_id, &hash, now()),
                Err(AppAttestError::App)
            );
            let other_credential = double.attest_with(&key, &hash, |data| data[60] ^= 1);
            assert_eq!(
                development.attestation(&other_credential, &key.key_id, &hash, now()),
                Err(AppAttestError::KeyId)
            );
            // Another key's attestation offered for this key id.
            let other = double.generate_key();
            assert_eq!(
                development.attestation(&double.attest(&other, &hash), &key.key_id, &hash, now()),
                Err(AppAttestError::KeyId)
            );
            // A leaf signed by another (untrusted) double's intermediate.
            let stranger = AppAttestDouble::new(TEAM, APP, true);
            assert_eq!(
                development.attestation(&stranger.attest(&key, &hash), &key.key_id, &hash, now()),
                Err(AppAttestError::Chain)
            );
        }
    }
}

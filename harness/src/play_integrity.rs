//! A stand-in for Google's Play Integrity server: the app's two response keys (an AES-256
//! decryption key and a P-256 verification key, base64 as the Play Console shows them) and
//! integrity tokens made as Google makes them: the verdict JSON signed as a compact JWS
//! (`ES256`), encrypted as a compact JWE (`A256KW` + `A256GCM`).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrap};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

pub struct PlayIntegrityDouble {
    decryption: [u8; 32],
    signing: EcdsaKeyPair,
    /// The app's package name.
    pub package: String,
    /// Its signing certificate's SHA-256, base64url without padding, as Play reports it.
    pub certificate_digest: String,
}

impl PlayIntegrityDouble {
    pub fn new(package: &str) -> Self {
        let rng = SystemRandom::new();
        let mut decryption = [0u8; 32];
        rng.fill(&mut decryption).expect("random key");
        let mut digest = [0u8; 32];
        rng.fill(&mut digest).expect("random digest");
        Self {
            decryption,
            signing: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256"),
            package: package.to_owned(),
            certificate_digest: URL_SAFE_NO_PAD.encode(digest),
        }
    }

    /// The decryption key, base64 (`PLAY_INTEGRITY_DECRYPTION_KEY`).
    pub fn decryption_key(&self) -> String {
        STANDARD.encode(self.decryption)
    }

    /// The verification key, base64 of its DER SubjectPublicKeyInfo
    /// (`PLAY_INTEGRITY_VERIFICATION_KEY`).
    pub fn verification_key(&self) -> String {
        let der = self.signing.public_key().as_der().expect("SPKI");
        STANDARD.encode(der.as_ref())
    }

    /// A verdict for the app on a device meeting device integrity, answering `request_hash`,
    /// made at `timestamp_ms`: what Google returns for a genuine app on a certified phone.
    pub fn verdict(&self, request_hash: &str, timestamp_ms: i64) -> Value {
        json!({
            "requestDetails": {
                "requestPackageName": self.package,
                "requestHash": request_hash,
                "timestampMillis": timestamp_ms.to_string(),
            },
            "appIntegrity": {
                "appRecognitionVerdict": "PLAY_RECOGNIZED",
                "packageName": self.package,
                "certificateSha256Digest": [self.certificate_digest],
                "versionCode": "42",
            },
            "deviceIntegrity": {
                "deviceRecognitionVerdict": ["MEETS_DEVICE_INTEGRITY"],
            },
            "accountDetails": {
                "appLicensingVerdict": "LICENSED",
            },
        })
    }

    /// The integrity token of `verdict`: signed with the app's verification key pair,
    /// encrypted with its decryption key.
    pub fn token(&self, verdict: &Value) -> String {
        self.encrypt(&self.sign(verdict, &self.signing))
    }

    /// `verdict` as a compact JWS signed by `key`.
    pub fn sign(&self, verdict: &Value, key: &EcdsaKeyPair) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(verdict.to_string());
        let signed = format!("{header}.{payload}");
        let signature = key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .expect("signature");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// `jws` as a compact JWE under the decryption key.
    pub fn encrypt(&self, jws: &str) -> String {
        let rng = SystemRandom::new();
        let mut cek = [0u8; 32];
        rng.fill(&mut cek).expect("content key");
        let mut iv = [0u8; 12];
        rng.fill(&mut iv).expect("IV");
        let mut wrapped = [0u8; 40];
        let wrapped = AesKek::new(&AES_256, &self.decryption)
            .expect("KEK")
            .wrap(&cek, &mut wrapped)
            .expect("key wrap")
            .to_vec();
        let protected = URL_SAFE_NO_PAD.encode(br#"{"alg":"A256KW","enc":"A256GCM"}"#);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &cek).expect("CEK"));
        let mut data = jws.as_bytes().to_vec();
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(protected.as_bytes()),
                &mut data,
            )
            .expect("seal");
        [
            protected,
            URL_SAFE_NO_PAD.encode(wrapped),
            URL_SAFE_NO_PAD.encode(iv),
            URL_SAFE_NO_PAD.encode(data),
            URL_SAFE_NO_PAD.encode(tag.as_ref()),
        ]
        .join(".")
    }

    /// Another signing key, as a forger would have.
    pub fn other_signing_key() -> EcdsaKeyPair {
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256")
    }
}

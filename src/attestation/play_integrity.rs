//! Play Integrity verdicts, decrypted and verified here, the way Google documents for apps that
//! manage their own response keys ("Decrypt and verify the integrity verdict locally"): the
//! integrity token is a compact JWE (`A256KW` + `A256GCM`) under the app's decryption key,
//! whose plaintext is a compact JWS (`ES256`) under the app's verification key; its payload is
//! the verdict. SafetyNet, which the spec's route was named after, is shut down.
//!
//! What a verdict must say to pass ([`PlayIntegrity::verify`]): `requestDetails` names this app
//! (`requestPackageName`), carries the request hash the app was given
//! (`requestHash`, or a classic request's `nonce`: the base64url of
//! [`super::challenge::client_data_hash`], so the token answers one challenge) and was made
//! recently (`timestampMillis`); `appIntegrity` says Play recognizes the app
//! (`PLAY_RECOGNIZED`), names the package, and lists a signing-certificate digest on the
//! allowlist; `deviceIntegrity` meets the configured minimum (basic, device or strong); and,
//! when configured, `accountDetails` says the user's copy is licensed. The keys come from the
//! environment or one Secrets Manager secret (read once per process); neither key, nor a token,
//! nor a verdict's content is ever logged.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrap};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use thiserror::Error;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::load_once::LoadOnce;

/// Longest token accepted, in bytes (Google's are a few kilobytes).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The app's two response keys, as the Play Console gives them (base64).
#[derive(Clone, PartialEq, Eq)]
pub struct PlayIntegrityKeys {
    /// The AES-256 key that unwraps each token's content key.
    decryption: [u8; 32],
    /// The uncompressed P-256 point that verifies the verdict's signature.
    verification: Vec<u8>,
}

impl std::fmt::Debug for PlayIntegrityKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlayIntegrityKeys(<redacted>)")
    }
}

impl PlayIntegrityKeys {
    /// From the Play Console's base64: the decryption key (32 bytes) and the verification key
    /// (an EC P-256 SubjectPublicKeyInfo, DER). Errors never repeat a key.
    pub fn from_base64(decryption: &str, verification: &str) -> Result<Self, String> {
        let decryption = STANDARD
            .decode(decryption.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or("the decryption key is not the base64 of 32 bytes")?;
        let der = STANDARD
            .decode(verification.trim())
            .map_err(|_| "the verification key is not base64")?;
        let (rest, spki) = SubjectPublicKeyInfo::from_der(&der)
            .map_err(|_| "the verification key is not a DER SubjectPublicKeyInfo")?;
        let point = spki.subject_public_key.data.to_vec();
        let p256 = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|oid| oid == x509_parser::oid_registry::OID_EC_P256);
        if !rest.is_empty() || !p256 || point.len() != 65 || point[0] != 4 {
            return Err("the verification key is not an EC P-256 public key".to_owned());
        }
        Ok(Self {
            decryption,
            verification: point,
        })
    }
}

/// The least device integrity accepted (`PLAY_INTEGRITY_MIN_DEVICE_INTEGRITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceLevel {
    /// `MEETS_BASIC_INTEGRITY`: a device that passes basic checks, possibly rooted or not
    /// certified.
    Basic,
    /// `MEETS_DEVICE_INTEGRITY`: a genuine, certified Android device.
    Device,
    /// `MEETS_STRONG_INTEGRITY`: that, with hardware-backed proof of boot integrity and a
    /// recent security update.
    Strong,
}

impl DeviceLevel {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "basic" => Some(Self::Basic),
            "device" => Some(Self::Device),
            "strong" => Some(Self::Strong),
            _ => None,
        }
    }

    fn of_label(label: &str) -> Option<Self> {
        match label {
            "MEETS_BASIC_INTEGRITY" => Some(Self::Basic),
            "MEETS_DEVICE_INTEGRITY" => Some(Self::Device),
            "MEETS_STRONG_INTEGRITY" => Some(Self::Strong),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Device => "device",
            Self::Strong => "strong",
        }
    }
}

/// What a verdict must say, beside the challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayIntegrityPolicy {
    /// The app's package name.
    pub package: String,
    /// The SHA-256 digests of the app's signing certificates, base64url without padding as
    /// Play reports them; one must be listed.
    pub certificate_digests: Vec<String>,
    pub min_device: DeviceLevel,
    /// `accountDetails.appLicensingVerdict` must be `LICENSED`.
    pub require_licensed: bool,
    /// How old (or how far ahead of this clock) `timestampMillis` may be, in milliseconds.
    pub max_age_ms: i64,
}

/// Where the keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `PLAY_INTEGRITY_DECRYPTION_KEY` and `PLAY_INTEGRITY_VERIFICATION_KEY`.
    Environment(PlayIntegrityKeys),
    /// `PLAY_INTEGRITY_KEYS_SECRET`: a JSON object with `decryption_key` and
    /// `verification_key`.
    SecretsManager { secret_id: String },
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlayIntegrityError {
    #[error("the Play Integrity keys cannot be read right now ({0})")]
    Keys(String),
    #[error("the token is not a compact JWE of the expected form ({0})")]
    Malformed(&'static str),
    #[error("the token does not decrypt with this app's decryption key")]
    Decryption,
    #[error("the verdict's signature does not verify with this app's verification key")]
    Signature,
    #[error("the verdict does not answer this challenge")]
    RequestHash,
    #[error("the verdict is too old, or from the future")]
    Stale,
    #[error("the verdict is for another app")]
    App,
    #[error("Play does not recognize this app ({0})")]
    Unrecognized(String),
    #[error("the app is not signed with an allowed certificate")]
    Certificate,
    #[error("the user's copy of the app is not licensed")]
    Unlicensed,
    #[error("the device does not meet {0} integrity")]
    Device(&'static str),
}

impl PlayIntegrityError {
    /// The stable `error` code of the problem answered.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Keys(_) => "play_integrity_keys_unavailable",
            Self::Malformed(_) => "attestation_malformed",
            Self::Decryption => "token_undecryptable",
            Self::Signature => "token_signature",
            Self::RequestHash => "attestation_challenge_mismatch",
            Self::Stale => "token_stale",
            Self::App => "attestation_app_mismatch",
            Self::Unrecognized(_) => "app_not_recognized",
            Self::Certificate => "app_certificate_mismatch",
            Self::Unlicensed => "app_unlicensed",
            Self::Device(_) => "device_integrity",
        }
    }

    /// Whether the evidence could not be verified (`failed`), as opposed to verified evidence
    /// that says the app or device is not genuine (`invalid`).
    pub fn is_unverifiable(&self) -> bool {
        matches!(
            self,
            Self::Malformed(_)
                | Self::Decryption
                | Self::Signature
                | Self::RequestHash
                | Self::Stale
        )
    }
}

/// The device checks of a verdict, whatever the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceChecks {
    /// Device or strong integrity (the spec's `cts_profile_match`).
    pub device: bool,
    /// At least basic integrity.
    pub basic: bool,
}

/// A verdict that passed, or one whose only failure is the device's integrity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayVerdict {
    pub checks: DeviceChecks,
    /// `Err(PlayIntegrityError::Device)` when the device is below the minimum.
    pub device: Result<(), PlayIntegrityError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    request_details: RequestDetails,
    app_integrity: AppIntegrity,
    #[serde(default)]
    device_integrity: DeviceIntegrity,
    #[serde(default)]
    account_details: Option<AccountDetails>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestDetails {
    request_package_name: String,
    #[serde(default)]
    request_hash: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    /// A decimal string in Google's examples; a number accepted as well.
    timestamp_millis: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppIntegrity {
    app_recognition_verdict: String,
    #[serde(default)]
    package_name: Option<String>,
    #[serde(default)]
    certificate_sha256_digest: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeviceIntegrity {
    #[serde(default)]
    device_recognition_verdict: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountDetails {
    app_licensing_verdict: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    enc: Option<String>,
    #[serde(default)]
    zip: Option<String>,
}

fn part(raw: &str, what: &'static str) -> Result<Vec<u8>, PlayIntegrityError> {
    URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| PlayIntegrityError::Malformed(what))
}

fn header(raw: &str, what: &'static str) -> Result<Header, PlayIntegrityError> {
    serde_json::from_slice(&part(raw, what)?).map_err(|_| PlayIntegrityError::Malformed(what))
}

/// The JWS inside the JWE `token`.
fn decrypt(token: &str, key: &[u8; 32]) -> Result<Vec<u8>, PlayIntegrityError> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [protected, encrypted_key, iv, ciphertext, tag] = parts[..] else {
        return Err(PlayIntegrityError::Malformed("not five parts"));
    };
    let jwe = header(protected, "JWE header")?;
    if jwe.alg != "A256KW" || jwe.enc.as_deref() != Some("A256GCM") || jwe.zip.is_some() {
        return Err(PlayIntegrityError::Malformed("not A256KW with A256GCM"));
    }
    let wrapped = part(encrypted_key, "encrypted key")?;
    let iv = part(iv, "IV")?;
    let mut sealed = part(ciphertext, "ciphertext")?;
    let tag = part(tag, "tag")?;
    if wrapped.len() != 40 || iv.len() != NONCE_LEN || tag.len() != 16 {
        return Err(PlayIntegrityError::Malformed(
            "key, IV or tag of the wrong size",
        ));
    }
    let kek = AesKek::new(&AES_256, key).map_err(|_| PlayIntegrityError::Decryption)?;
    let mut cek = [0u8; 32];
    let cek = kek
        .unwrap(&wrapped, &mut cek)
        .map_err(|_| PlayIntegrityError::Decryption)?;
    let content = UnboundKey::new(&AES_256_GCM, cek)
        .map(LessSafeKey::new)
        .map_err(|_| PlayIntegrityError::Decryption)?;
    let nonce =
        Nonce::try_assume_unique_for_key(&iv).map_err(|_| PlayIntegrityError::Decryption)?;
    sealed.extend_from_slice(&tag);
    // The protected header as sent is the additional authenticated data (RFC 7516 §5.1).
    let plaintext = content
        .open_in_place(nonce, Aad::from(protected.as_bytes()), &mut sealed)
        .map_err(|_| PlayIntegrityError::Decryption)?;
    Ok(plaintext.to_vec())
}

/// The verdict's payload, once its ES256 signature verifies with `point`.
fn verified_payload(jws: &[u8], point: &[u8]) -> Result<Payload, PlayIntegrityError> {
    let jws = std::str::from_utf8(jws).map_err(|_| PlayIntegrityError::Malformed("JWS"))?;
    let parts: Vec<&str> = jws.trim().split('.').collect();
    let [protected, payload, signature] = parts[..] else {
        return Err(PlayIntegrityError::Malformed("the JWS is not three parts"));
    };
    if header(protected, "JWS header")?.alg != "ES256" {
        return Err(PlayIntegrityError::Malformed("the JWS is not ES256"));
    }
    let signature = part(signature, "signature")?;
    let signed = &jws.trim()[..protected.len() + 1 + payload.len()];
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| PlayIntegrityError::Signature)?;
    serde_json::from_slice(&part(payload, "payload")?)
        .map_err(|_| PlayIntegrityError::Malformed("the verdict is not the expected JSON"))
}

fn timestamp(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::String(text) => text.parse().ok(),
        serde_json::Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

/// What `PLAY_INTEGRITY_*` configures: the policy and where the keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayIntegritySettings {
    pub policy: PlayIntegrityPolicy,
    pub source: KeySource,
}

/// Play Integrity for one app: its policy and its keys (read once per process).
#[derive(Debug)]
pub struct PlayIntegrity {
    policy: PlayIntegrityPolicy,
    source: KeySource,
    loaded: LoadOnce<PlayIntegrityKeys, PlayIntegrityError>,
}

impl PlayIntegrity {
    pub fn new(settings: PlayIntegritySettings) -> Self {
        Self {
            policy: settings.policy,
            source: settings.source,
            loaded: LoadOnce::new(std::time::Duration::from_secs(
                crate::error::RETRY_AFTER_SECS,
            )),
        }
    }

    /// The keys: from the environment, or read once from Secrets Manager.
    pub async fn keys(&self) -> Result<&PlayIntegrityKeys, PlayIntegrityError> {
        match &self.source {
            KeySource::Environment(keys) => Ok(keys),
            KeySource::SecretsManager { secret_id } => self
                .loaded
                .get(|| async {
                    let values = crate::aws::secret_json(secret_id)
                        .await
                        .map_err(PlayIntegrityError::Keys)?;
                    let field = |name: &str| {
                        values.get(name).and_then(|v| v.as_str()).ok_or_else(|| {
                            PlayIntegrityError::Keys(format!("the secret has no {name}"))
                        })
                    };
                    PlayIntegrityKeys::from_base64(
                        field("decryption_key")?,
                        field("verification_key")?,
                    )
                    .map_err(PlayIntegrityError::Keys)
                })
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "Play Integrity keys unavailable")),
        }
    }

    /// Decrypts and verifies `token` as the answer to the request hash
    /// `base64url(client_data_hash)`, at `now_ms` (Unix milliseconds). `Ok` also when only the
    /// device's integrity falls short ([`PlayVerdict::device`]), so its checks can be reported.
    pub fn verify(
        &self,
        keys: &PlayIntegrityKeys,
        token: &str,
        client_data_hash: &[u8; 32],
        now_ms: i64,
    ) -> Result<PlayVerdict, PlayIntegrityError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(PlayIntegrityError::Malformed("larger than 16 KiB"));
        }
        let jws = decrypt(token, &keys.decryption)?;
        let verdict = verified_payload(&jws, &keys.verification)?;
        let policy = &self.policy;
        let request = &verdict.request_details;
        let expected = URL_SAFE_NO_PAD.encode(client_data_hash);
        let answered = request.request_hash.as_deref().or(request.nonce.as_deref());
        if answered.map(|h| h.trim_end_matches('=')) != Some(expected.as_str()) {
            return Err(PlayIntegrityError::RequestHash);
        }
        let at = timestamp(&request.timestamp_millis).ok_or(PlayIntegrityError::Stale)?;
        if (now_ms - at).abs() > policy.max_age_ms {
            return Err(PlayIntegrityError::Stale);
        }
        if request.request_package_name != policy.package {
            return Err(PlayIntegrityError::App);
        }
        let app = &verdict.app_integrity;
        if app.app_recognition_verdict != "PLAY_RECOGNIZED" {
            let reported: String = app
                .app_recognition_verdict
                .chars()
                .filter(|c| c.is_ascii_uppercase() || *c == '_')
                .take(40)
                .collect();
            return Err(PlayIntegrityError::Unrecognized(reported));
        }
        if app.package_name.as_deref() != Some(policy.package.as_str()) {
            return Err(PlayIntegrityError::App);
        }
        if !app.certificate_sha256_digest.iter().any(|digest| {
            let digest = digest.trim_end_matches('=');
            policy
                .certificate_digests
                .iter()
                .any(|allowed| allowed == digest)
        }) {
            return Err(PlayIntegrityError::Certificate);
        }
        if policy.require_licensed
            && verdict
                .account_details
                .as_ref()
                .map(|a| a.app_licensing_verdict.as_str())
                != Some("LICENSED")
        {
            return Err(PlayIntegrityError::Unlicensed);
        }
        let level = verdict
            .device_integrity
            .device_recognition_verdict
            .iter()
            .filter_map(|label| DeviceLevel::of_label(label))
            .max();
        let checks = DeviceChecks {
            device: level >= Some(DeviceLevel::Device),
            basic: level.is_some(),
        };
        let device = if level >= Some(policy.min_device) {
            Ok(())
        } else {
            Err(PlayIntegrityError::Device(policy.min_device.name()))
        };
        Ok(PlayVerdict { checks, device })
    }
}

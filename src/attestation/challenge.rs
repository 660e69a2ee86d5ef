//! Attestation challenges: what `POST /device/attest/challenge` hands out and every attestation
//! must commit to.
//!
//! A challenge is sealed like the OAuth state ([`crate::keys::sealing`], in its own
//! [`DOMAIN`], so neither opens as the other): it names the device and the platform it was
//! issued for and expires [`super::settings::DEFAULT_CHALLENGE_TTL_SECONDS`] after issue
//! (`ATTESTATION_CHALLENGE_TTL_SECONDS`). Nobody without the key can make one, so a client
//! cannot pick its own; redeeming one claims its digest in the single-use store
//! ([`crate::single_use`], [`Purpose::AttestationChallenge`]), so it answers one attestation,
//! however many sandboxes see it.
//!
//! What the platform's attestation signs is the [`client_data_hash`] of the challenge: the
//! Play Integrity request hash (or classic nonce) and the App Attest client data hash. For an
//! enrollment it also commits to the key of the CSR, so the certificate can only go to a key
//! the attested app holds.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::Platform;
use crate::clock::now_secs;
use crate::device::id::DeviceId;
use crate::keys::sealing::{Domain, SealError, Sealers, SealingError, within_lifetime};
use crate::keys::{Keys, KeysError};
use crate::single_use::{Purpose, SingleUse, SingleUseError};

/// The longest challenge accepted, in bytes (one for the longest device id is about 330).
pub const MAX_CHALLENGE_LEN: usize = 512;

/// How challenges are sealed.
pub static DOMAIN: Domain = Domain {
    prefix: "ch1.",
    aad: b"apuntador-attestation-challenge-v1",
    key_info: b"apuntador attestation challenge key v1",
    max_len: MAX_CHALLENGE_LEN,
};

/// What a challenge binds together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ChallengeClaims {
    #[serde(rename = "d")]
    device_id: DeviceId,
    #[serde(rename = "p")]
    platform: Platform,
    /// Issue time, Unix seconds.
    #[serde(rename = "i")]
    issued_at: u64,
    /// Expiry, Unix seconds.
    #[serde(rename = "e")]
    expires_at: u64,
}

/// A challenge handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub challenge: String,
    /// Unix seconds.
    pub expires_at: u64,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChallengeError {
    #[error("the challenge is not one this backend issued, or it was altered")]
    Invalid,
    #[error("the challenge expired; ask for a new one")]
    Expired,
    #[error("the challenge was issued for another device or platform")]
    Mismatch,
    #[error("the challenge was already used; ask for a new one")]
    Used,
    #[error("the key that seals challenges cannot be read right now; try again shortly")]
    Keys(KeysError),
    #[error("the challenge cannot be checked for reuse right now; try again shortly")]
    Store(SingleUseError),
    #[error("the operating system's random generator failed")]
    Entropy,
}

impl ChallengeError {
    /// The stable `error` code of the problem answered.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid => "challenge_invalid",
            Self::Expired => "challenge_expired",
            Self::Mismatch => "challenge_mismatch",
            Self::Used => "challenge_used",
            Self::Keys(_) => "keys_unavailable",
            Self::Store(_) => "challenge_store_unavailable",
            Self::Entropy => "internal_error",
        }
    }
}

impl From<SealingError> for ChallengeError {
    fn from(error: SealingError) -> Self {
        match error {
            SealingError::Keys(e) => Self::Keys(e),
            SealingError::Seal(SealError::Entropy) => Self::Entropy,
            SealingError::Seal(_) => Self::Invalid,
        }
    }
}

/// Issues and redeems challenges; one per process.
#[derive(Debug)]
pub struct Challenges {
    sealers: Sealers,
    single_use: Arc<dyn SingleUse>,
    ttl_seconds: u64,
}

impl Challenges {
    pub fn new(keys: Arc<Keys>, single_use: Arc<dyn SingleUse>, ttl_seconds: u64) -> Self {
        Self {
            sealers: Sealers::new(&DOMAIN, keys),
            single_use,
            ttl_seconds,
        }
    }

    /// A fresh challenge for `device` attesting on `platform`.
    pub async fn issue(
        &self,
        device: &DeviceId,
        platform: Platform,
    ) -> Result<Issued, ChallengeError> {
        let now = now_secs();
        let claims = ChallengeClaims {
            device_id: device.clone(),
            platform,
            issued_at: now,
            expires_at: now + self.ttl_seconds,
        };
        let plaintext = serde_json::to_vec(&claims).map_err(|_| ChallengeError::Invalid)?;
        let challenge = self.sealers.seal(&plaintext).await?;
        Ok(Issued {
            challenge,
            expires_at: claims.expires_at,
        })
    }

    /// Checks that `challenge` was issued by this backend for `device` on `platform` and has
    /// not expired, then uses it up: of every redemption of one challenge, across every process
    /// sharing the store, one succeeds. It is used up before the attestation is verified, so a
    /// challenge buys one attempt, successful or not.
    pub async fn redeem(
        &self,
        challenge: &str,
        device: &DeviceId,
        platform: Platform,
    ) -> Result<(), ChallengeError> {
        let plaintext = self.sealers.open(challenge).await?;
        let claims: ChallengeClaims =
            serde_json::from_slice(&plaintext).map_err(|_| ChallengeError::Invalid)?;
        let now = now_secs();
        if !within_lifetime(claims.issued_at, claims.expires_at, now) {
            return Err(ChallengeError::Expired);
        }
        if &claims.device_id != device || claims.platform != platform {
            return Err(ChallengeError::Mismatch);
        }
        let digest: [u8; 32] = Sha256::digest(challenge.as_bytes()).into();
        match self
            .single_use
            .claim(Purpose::AttestationChallenge, &digest, claims.expires_at)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(ChallengeError::Used),
            Err(e) => Err(ChallengeError::Store(e)),
        }
    }
}

/// What the platform attestation signs for `challenge`: SHA-256 of the challenge's bytes, or,
/// when the attestation also vouches for a key (an enrollment's CSR), of
/// `<challenge>.<base64url of SHA-256 of the key's SubjectPublicKeyInfo DER>`.
pub fn client_data_hash(challenge: &str, key_spki_der: Option<&[u8]>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(challenge.as_bytes());
    if let Some(spki) = key_spki_der {
        hasher.update(b".");
        hasher.update(URL_SAFE_NO_PAD.encode(Sha256::digest(spki)).as_bytes());
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Secret;
    use crate::keys::{KeySet, KeySource};
    use crate::single_use::InProcess;

    fn keys(state_key: &str) -> Arc<Keys> {
        let set = KeySet {
            state_key: Secret::new(state_key),
            previous_state_key: None,
            config_api_key: None,
        };
        Arc::new(Keys::new(KeySource::Fixed(Arc::new(set))))
    }

    fn challenges() -> Challenges {
        Challenges::new(
            keys("challenge-test-key-challenge-test-key"),
            Arc::new(InProcess::new()),
            300,
        )
    }

    fn device(id: &str) -> DeviceId {
        DeviceId::parse(id).unwrap()
    }

    #[tokio::test]
    async fn a_challenge_answers_one_attestation_of_its_device_and_platform() {
        let challenges = challenges();
        let phone = device("phone-0001");
        let issued = challenges.issue(&phone, Platform::Android).await.unwrap();
        assert!(issued.challenge.starts_with("ch1."));
        assert!(issued.challenge.len() <= MAX_CHALLENGE_LEN);
        assert_eq!(
            challenges
                .redeem(&issued.challenge, &device("other-0002"), Platform::Android)
                .await,
            Err(ChallengeError::Mismatch)
        );
        assert_eq!(
            challenges
                .redeem(&issued.challenge, &phone, Platform::Ios)
                .await,
            Err(ChallengeError::Mismatch)
        );
        assert_eq!(
            challenges
                .redeem(&issued.challenge, &phone, Platform::Android)
                .await,
            Ok(())
        );
        assert_eq!(
            challenges
                .redeem(&issued.challenge, &phone, Platform::Android)
                .await,
            Err(ChallengeError::Used)
        );
    }

    /// A client cannot make its own: another key, an OAuth state and garbage do not open.
    #[tokio::test]
    async fn only_challenges_this_backend_sealed_are_accepted() {
        let phone = device("phone-0001");
        let foreign = Challenges::new(
            keys("another-key-another-key-another-key-0"),
            Arc::new(InProcess::new()),
            300,
        )
        .issue(&phone, Platform::Ios)
        .await
        .unwrap();
        let challenges = challenges();
        let state = crate::oauth::state::StateSealer::new(b"challenge-test-key-challenge-test-key")
            .seal(&crate::oauth::state::StateClaims {
                provider: crate::oauth::provider::ProviderId::Dropbox,
                redirect_uri: "apuntador://cb".into(),
                client_state: None,
                code_challenge: "c".into(),
                issued_at: now_secs(),
                expires_at: now_secs() + 60,
            })
            .unwrap();
        let renamed = format!("ch1.{}", state.trim_start_matches("v1."));
        let long = "x".repeat(MAX_CHALLENGE_LEN + 1);
        for bad in [
            foreign.challenge.as_str(),
            state.as_str(),
            renamed.as_str(),
            "",
            "ch1.",
            "nonce-chosen-by-the-client",
            long.as_str(),
        ] {
            assert_eq!(
                challenges.redeem(bad, &phone, Platform::Ios).await,
                Err(ChallengeError::Invalid),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn an_expired_challenge_is_refused() {
        let challenges = challenges();
        let phone = device("phone-0001");
        let sealer =
            crate::keys::sealing::Sealer::new(&DOMAIN, b"challenge-test-key-challenge-test-key");
        let seal = |issued_at: u64, expires_at: u64| {
            let claims = ChallengeClaims {
                device_id: phone.clone(),
                platform: Platform::Desktop,
                issued_at,
                expires_at,
            };
            sealer.seal(&serde_json::to_vec(&claims).unwrap()).unwrap()
        };
        let now = now_secs();
        for (challenge, what) in [
            (seal(now - 400, now - 100), "expired"),
            (seal(now + 600, now + 900), "issued in the future"),
        ] {
            assert_eq!(
                challenges
                    .redeem(&challenge, &phone, Platform::Desktop)
                    .await,
                Err(ChallengeError::Expired),
                "{what}"
            );
        }
    }

    #[tokio::test]
    async fn of_concurrent_redemptions_one_wins() {
        let challenges = Arc::new(challenges());
        let phone = device("phone-0001");
        let issued = challenges.issue(&phone, Platform::Ios).await.unwrap();
        let attempts = (0..16).map(|_| {
            let challenges = challenges.clone();
            let (challenge, phone) = (issued.challenge.clone(), phone.clone());
            tokio::spawn(async move { challenges.redeem(&challenge, &phone, Platform::Ios).await })
        });
        let mut won = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(()) => won += 1,
                Err(e) => assert_eq!(e, ChallengeError::Used),
            }
        }
        assert_eq!(won, 1);
    }

    #[test]
    fn the_client_data_hash_commits_to_the_key_when_there_is_one() {
        let plain = client_data_hash("ch1.abc", None);
        assert_eq!(plain, <[u8; 32]>::from(Sha256::digest(b"ch1.abc")));
        let key_a = client_data_hash("ch1.abc", Some(b"key a"));
        let key_b = client_data_hash("ch1.abc", Some(b"key b"));
        assert_ne!(key_a, plain);
        assert_ne!(key_a, key_b);
        let expected = format!(
            "ch1.abc.{}",
            URL_SAFE_NO_PAD.encode(Sha256::digest(b"key a"))
        );
        assert_eq!(key_a, <[u8; 32]>::from(Sha256::digest(expected.as_bytes())));
    }
}

//! Sealed tokens: what the backend hands a client and takes back, that nobody else can read or
//! forge. The OAuth state ([`crate::oauth::state`]) and the attestation challenge
//! ([`crate::attestation::challenge`]) are both sealed here, each in its own [`Domain`].
//!
//! A token is the domain's prefix + base64url (no padding) of `nonce (24 bytes) ‖
//! XChaCha20-Poly1305 ciphertext`, with the domain's associated data. The key is HKDF-SHA256 of
//! `SECRET_KEY` with the domain's own `info`, so a token of one domain never opens in another
//! (an OAuth state is not a challenge) even though one secret keys both. During a rotation the
//! key derived from `SECRET_KEY_PREVIOUS` opens too, but never seals.
//!
//! [`Sealers`] keeps the sealer of the key set last used (HKDF per request would be waste) and,
//! when a well-formed token opens with no key held, re-reads the keys once
//! ([`Keys::refresh`]): the token may come from a process that has already seen a rotation.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;

use super::{KeySet, Keys, KeysError};

const NONCE_LEN: usize = 24;

/// What one kind of token is sealed as: its prefix, associated data and key label, and the
/// longest token of the kind (longer ones are refused unread, and never handed out).
#[derive(Debug)]
pub struct Domain {
    pub prefix: &'static str,
    pub aad: &'static [u8],
    pub key_info: &'static [u8],
    pub max_len: usize,
}

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// Not a token of this domain: wrong prefix, not base64url, too short or too long.
    #[error("not a token this backend issued")]
    Invalid,
    /// Well formed, but no key held opens it: forged, altered, of another domain, or sealed
    /// with a key newer than this process knows.
    #[error("not a token this backend issued, or it was altered")]
    Unopened,
    #[error("the operating system's random generator failed")]
    Entropy,
    /// The sealed token would be longer than the domain allows.
    #[error("the token would be too long")]
    TooLarge,
}

/// Seals with the key derived from one secret; opens with it or with the previous one.
#[derive(Clone)]
pub struct Sealer {
    domain: &'static Domain,
    cipher: XChaCha20Poly1305,
    previous: Option<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({}<key>)", self.domain.prefix)
    }
}

impl Sealer {
    pub fn new(domain: &'static Domain, secret_key: &[u8]) -> Self {
        Self {
            domain,
            cipher: cipher(domain, secret_key),
            previous: None,
        }
    }

    /// Sealing with the key set's state key, opening also with its previous one.
    pub fn for_keys(domain: &'static Domain, keys: &KeySet) -> Self {
        let sealer = Self::new(domain, keys.state_key.expose().as_bytes());
        match &keys.previous_state_key {
            Some(previous) => sealer.opening_also(previous.expose().as_bytes()),
            None => sealer,
        }
    }

    /// Also opens tokens sealed with `previous_key` (the key before the last rotation).
    pub fn opening_also(mut self, previous_key: &[u8]) -> Self {
        self.previous = Some(cipher(self.domain, previous_key));
        self
    }

    pub fn seal(&self, plaintext: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError::Entropy)?;
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: self.domain.aad,
                },
            )
            .map_err(|_| SealError::TooLarge)?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        let token = format!("{}{}", self.domain.prefix, URL_SAFE_NO_PAD.encode(bytes));
        if token.len() > self.domain.max_len {
            // Never handed out: it could not be opened again.
            return Err(SealError::TooLarge);
        }
        Ok(token)
    }

    /// The plaintext of a token [`seal`](Self::seal) made with a key this sealer holds.
    pub fn open(&self, token: &str) -> Result<Vec<u8>, SealError> {
        if token.len() > self.domain.max_len {
            return Err(SealError::Invalid);
        }
        let encoded = token
            .strip_prefix(self.domain.prefix)
            .ok_or(SealError::Invalid)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SealError::Invalid)?;
        if bytes.len() <= NONCE_LEN {
            return Err(SealError::Invalid);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let payload = || Payload {
            msg: ciphertext,
            aad: self.domain.aad,
        };
        let nonce = XNonce::from_slice(nonce);
        std::iter::once(&self.cipher)
            .chain(self.previous.as_ref())
            .find_map(|cipher| cipher.decrypt(nonce, payload()).ok())
            .ok_or(SealError::Unopened)
    }
}

/// How far in the future a token's issue time may be (clock skew between processes).
pub const ISSUE_SKEW_SECS: u64 = 60;

/// Whether a token issued at `issued_at` and expiring at `expires_at` (Unix seconds) is
/// accepted at `now`: not expired, and not issued further ahead than [`ISSUE_SKEW_SECS`].
pub fn within_lifetime(issued_at: u64, expires_at: u64, now: u64) -> bool {
    now <= expires_at && issued_at <= now.saturating_add(ISSUE_SKEW_SECS)
}

/// The cipher keyed by HKDF-SHA256 of `secret_key` for `domain`.
fn cipher(domain: &Domain, secret_key: &[u8]) -> XChaCha20Poly1305 {
    let hkdf = Hkdf::<Sha256>::new(Some(b"apuntador-backend"), secret_key);
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
    let _ = hkdf.expand(domain.key_info, &mut key);
    XChaCha20Poly1305::new(&key.into())
}

/// Why a token could not be sealed or opened.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SealingError {
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The sealer of one domain for the keys of the moment ([`Keys`]).
#[derive(Debug)]
pub struct Sealers {
    domain: &'static Domain,
    keys: Arc<Keys>,
    last: Mutex<Option<(Arc<KeySet>, Arc<Sealer>)>>,
}

impl Sealers {
    pub fn new(domain: &'static Domain, keys: Arc<Keys>) -> Self {
        Self {
            domain,
            keys,
            last: Mutex::new(None),
        }
    }

    fn sealer_for(&self, keys: &Arc<KeySet>) -> Arc<Sealer> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((held, sealer)) = last.as_ref()
            && Arc::ptr_eq(held, keys)
        {
            return sealer.clone();
        }
        let sealer = Arc::new(Sealer::for_keys(self.domain, keys));
        *last = Some((keys.clone(), sealer.clone()));
        sealer
    }

    /// Seals `plaintext` with the current key.
    pub async fn seal(&self, plaintext: &[u8]) -> Result<String, SealingError> {
        let keys = self.keys.get().await?;
        Ok(self.sealer_for(&keys).seal(plaintext)?)
    }

    /// Opens `token` with the keys of the moment. A well-formed token no key opens may be
    /// sealed by a process that already has rotated keys: the keys are re-read (at most every
    /// [`super::REFRESH_AFTER`]) and, if they changed, tried once more.
    pub async fn open(&self, token: &str) -> Result<Vec<u8>, SealingError> {
        let keys = self.keys.get().await?;
        match self.sealer_for(&keys).open(token) {
            Err(SealError::Unopened) => {
                let fresh = self.keys.refresh(&keys).await;
                if Arc::ptr_eq(&fresh, &keys) {
                    return Err(SealError::Unopened.into());
                }
                Ok(self.sealer_for(&fresh).open(token)?)
            }
            opened => Ok(opened?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static ONE: Domain = Domain {
        prefix: "t1.",
        aad: b"test-one",
        key_info: b"test one key",
        max_len: 256,
    };
    static TWO: Domain = Domain {
        prefix: "t1.",
        aad: b"test-two",
        key_info: b"test two key",
        max_len: 256,
    };
    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trips_and_hides_its_content() {
        let token = Sealer::new(&ONE, KEY).seal(b"secret words").unwrap();
        assert!(token.starts_with("t1."));
        let raw = URL_SAFE_NO_PAD.decode(&token[3..]).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            Sealer::new(&ONE, KEY).open(&token).unwrap(),
            b"secret words"
        );
        assert_ne!(token, Sealer::new(&ONE, KEY).seal(b"secret words").unwrap());
    }

    /// One secret keys every domain; a token of one never opens in another, even with the
    /// same prefix.
    #[test]
    fn domains_are_separate() {
        let token = Sealer::new(&ONE, KEY).seal(b"x").unwrap();
        assert_eq!(
            Sealer::new(&TWO, KEY).open(&token),
            Err(SealError::Unopened)
        );
    }

    #[test]
    fn tampered_foreign_and_malformed_tokens_are_refused() {
        let token = Sealer::new(&ONE, KEY).seal(b"x").unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&token[3..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("t1.{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(
            Sealer::new(&ONE, KEY).open(&tampered),
            Err(SealError::Unopened)
        );
        let other = Sealer::new(&ONE, b"another-secret-key-another-secret-key");
        assert_eq!(other.open(&token), Err(SealError::Unopened));
        let long = format!("t1.{}", "A".repeat(300));
        for garbage in ["", "t1.", "t1.!!!", "t2.abc", long.as_str()] {
            assert_eq!(
                Sealer::new(&ONE, KEY).open(garbage),
                Err(SealError::Invalid),
                "{garbage}"
            );
        }
        assert_eq!(
            Sealer::new(&ONE, KEY).seal(&[0u8; 200]),
            Err(SealError::TooLarge)
        );
    }

    #[test]
    fn the_previous_key_opens_but_never_seals() {
        let old = b"the-key-before-the-rotation-0123456789";
        let new = b"the-key-after-the-rotation-01234567890";
        let before = Sealer::new(&ONE, old).seal(b"x").unwrap();
        let rotated = Sealer::new(&ONE, new).opening_also(old);
        assert_eq!(rotated.open(&before).unwrap(), b"x");
        let after = rotated.seal(b"y").unwrap();
        assert_eq!(
            Sealer::new(&ONE, old).open(&after),
            Err(SealError::Unopened)
        );
    }
}

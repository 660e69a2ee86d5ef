//! The sealed OAuth state: what `/authorize` hands out and `/callback` and `/token` accept.
//!
//! The JSON [`StateClaims`], sealed by [`crate::keys::sealing`] in the state's [`DOMAIN`]:
//! `v1.` + base64url (no padding) of `nonce (24 bytes) ‖ XChaCha20-Poly1305 ciphertext`, with
//! `apuntador-oauth-state-v1` as associated data and the key HKDF-SHA256 of `SECRET_KEY` (info
//! `apuntador oauth state key v1`); during a rotation the key derived from
//! `SECRET_KEY_PREVIOUS` opens too, but never seals. Nobody without the key can
//! read it (the PKCE challenge and redirect URI inside stay private) or forge it; any change to
//! a byte fails authentication. It expires 600 s after issue. The PKCE verifier is never inside:
//! only its S256 challenge, against which `/token` checks the verifier the client sends.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::provider::ProviderId;
use crate::keys::sealing::{Domain, SealError, Sealer, within_lifetime};

/// How long a state is accepted after it was issued.
pub const STATE_TTL_SECONDS: u64 = 600;

/// The longest state `/callback` and `/token` accept, in bytes (a sealed state is ASCII).
pub const MAX_STATE_LEN: usize = 4096;

/// What the app's redirect URI may take inside the sealed claims, in bytes as
/// [`encoded_len`] counts them.
pub const MAX_REDIRECT_URI_BYTES: usize = 2048;

/// What the app's own state may take inside the sealed claims, in bytes as [`encoded_len`]
/// counts them. With [`MAX_REDIRECT_URI_BYTES`] this keeps every sealed state within
/// [`MAX_STATE_LEN`] (about 3.7 KB at most; a unit test checks the bound).
pub const MAX_CLIENT_STATE_BYTES: usize = 512;

/// Bytes `value` takes inside the sealed JSON: UTF-8 with JSON escaping, so `é` counts 2 and a
/// control character 6. Characters are the wrong measure: they let `/authorize` hand out states
/// that `/callback` and `/token` refuse.
pub fn encoded_len(value: &str) -> usize {
    value
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
            c if c < ' ' => 6,
            c => c.len_utf8(),
        })
        .sum()
}

/// How states are sealed ([`crate::keys::sealing`]); unchanged since the first release, so
/// states handed out before an upgrade still open after it.
pub static DOMAIN: Domain = Domain {
    prefix: "v1.",
    aad: b"apuntador-oauth-state-v1",
    key_info: b"apuntador oauth state key v1",
    max_len: MAX_STATE_LEN,
};

/// What the state binds together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateClaims {
    /// Provider the authorization was started for.
    #[serde(rename = "p")]
    pub provider: ProviderId,
    /// The app's redirect URI (already checked against the allowlist).
    #[serde(rename = "r")]
    pub redirect_uri: String,
    /// The app's own CSRF value, if it sent one.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub client_state: Option<String>,
    /// S256 challenge of the app's PKCE verifier.
    #[serde(rename = "c")]
    pub code_challenge: String,
    /// Issue time, Unix seconds.
    #[serde(rename = "i")]
    pub issued_at: u64,
    /// Expiry, Unix seconds.
    #[serde(rename = "e")]
    pub expires_at: u64,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StateError {
    #[error("the state is not one this backend issued, or it was altered")]
    Invalid,
    /// Well formed, but no key this process holds opens it: forged, altered, or sealed with a
    /// key newer than this process knows ([`crate::keys::Keys::refresh`]).
    #[error("the state is not one this backend issued, or it was altered")]
    Unopened,
    #[error("the state expired; start the authorization again")]
    Expired,
    #[error("the operating system's random generator failed")]
    Entropy,
    #[error("the state would be longer than {MAX_STATE_LEN} bytes")]
    TooLarge,
}

impl From<SealError> for StateError {
    fn from(error: SealError) -> Self {
        match error {
            SealError::Invalid => Self::Invalid,
            SealError::Unopened => Self::Unopened,
            SealError::Entropy => Self::Entropy,
            SealError::TooLarge => Self::TooLarge,
        }
    }
}

/// The plaintext of a state: its claims as JSON.
pub fn encode(claims: &StateClaims) -> Result<Vec<u8>, StateError> {
    let plaintext = serde_json::to_vec(claims).map_err(|_| StateError::Invalid)?;
    if plaintext.len() > MAX_STATE_LEN {
        return Err(StateError::TooLarge);
    }
    Ok(plaintext)
}

/// The claims of an opened state, if it has not expired at `now` (Unix seconds).
pub fn decode(plaintext: &[u8], now: u64) -> Result<StateClaims, StateError> {
    let claims: StateClaims = serde_json::from_slice(plaintext).map_err(|_| StateError::Invalid)?;
    if !within_lifetime(claims.issued_at, claims.expires_at, now) {
        return Err(StateError::Expired);
    }
    Ok(claims)
}

/// Seals states with a key derived from `SECRET_KEY` and opens them with it or with the one
/// derived from `SECRET_KEY_PREVIOUS`: [`Sealer`] in the state's [`DOMAIN`], typed.
#[derive(Clone, Debug)]
pub struct StateSealer(Sealer);

impl StateSealer {
    pub fn new(secret_key: &[u8]) -> Self {
        Self(Sealer::new(&DOMAIN, secret_key))
    }

    /// Also opens states sealed with `previous_key` (the key before the last rotation).
    pub fn opening_also(self, previous_key: &[u8]) -> Self {
        Self(self.0.opening_also(previous_key))
    }

    pub fn seal(&self, claims: &StateClaims) -> Result<String, StateError> {
        Ok(self.0.seal(&encode(claims)?)?)
    }

    /// Opens a state issued by [`seal`](Self::seal) and not yet expired at `now` (Unix seconds).
    pub fn open(&self, token: &str, now: u64) -> Result<StateClaims, StateError> {
        decode(&self.0.open(token)?, now)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn claims(now: u64) -> StateClaims {
        StateClaims {
            provider: ProviderId::GoogleDrive,
            redirect_uri: "apuntador://oauth-callback".into(),
            client_state: Some("csrf-123".into()),
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            issued_at: now,
            expires_at: now + STATE_TTL_SECONDS,
        }
    }

    fn sealer() -> StateSealer {
        StateSealer::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn round_trips_and_hides_its_content() {
        let token = sealer().seal(&claims(1_000)).unwrap();
        assert!(token.starts_with("v1."));
        assert!(!token.contains("oauth-callback") && !token.contains("E9Mel"));
        let decoded = URL_SAFE_NO_PAD.decode(&token[3..]).unwrap();
        assert!(!String::from_utf8_lossy(&decoded).contains("csrf-123"));
        assert_eq!(sealer().open(&token, 1_100).unwrap(), claims(1_000));
    }

    #[test]
    fn two_seals_of_the_same_claims_differ() {
        assert_ne!(
            sealer().seal(&claims(1)).unwrap(),
            sealer().seal(&claims(1)).unwrap()
        );
    }

    #[test]
    fn tampering_another_key_and_garbage_are_invalid() {
        let token = sealer().seal(&claims(1_000)).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&token[3..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("v1.{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(sealer().open(&tampered, 1_000), Err(StateError::Unopened));
        let other = StateSealer::new(b"another-secret-key-another-secret-key");
        assert_eq!(other.open(&token, 1_000), Err(StateError::Unopened));
        for garbage in ["", "v1.", "v1.!!!", "v2.abc", ".eJwFake.abc.def"] {
            assert_eq!(
                sealer().open(garbage, 1_000),
                Err(StateError::Invalid),
                "{garbage}"
            );
        }
    }

    /// Issue 26 item 2: after a rotation, states sealed with the old key still open (until
    /// they expire); new ones are sealed with the new key only.
    #[test]
    fn the_previous_key_opens_but_never_seals() {
        let old_key = b"the-key-before-the-rotation-0123456789";
        let new_key = b"the-key-after-the-rotation-01234567890";
        let before = StateSealer::new(old_key).seal(&claims(1_000)).unwrap();
        let rotated = StateSealer::new(new_key).opening_also(old_key);
        assert_eq!(rotated.open(&before, 1_100).unwrap(), claims(1_000));
        assert_eq!(
            rotated.open(&before, 1_000 + STATE_TTL_SECONDS + 1),
            Err(StateError::Expired),
            "an old state still expires"
        );
        let after = rotated.seal(&claims(1_000)).unwrap();
        assert_eq!(
            StateSealer::new(old_key).open(&after, 1_100),
            Err(StateError::Unopened),
            "sealed with the new key"
        );
        assert_eq!(
            StateSealer::new(new_key).open(&after, 1_100).unwrap(),
            claims(1_000)
        );
    }

    #[test]
    fn encoded_len_counts_what_serde_json_writes() {
        for value in [
            "plain",
            "é✓😀",
            "quote\" back\\",
            "\u{1}\u{1f}\n\t\r\u{8}\u{c}",
            "\u{7f}/<>",
        ] {
            let written = serde_json::to_string(value).unwrap().len() - 2;
            assert_eq!(encoded_len(value), written, "{value:?}");
        }
    }

    /// Review item 8: the largest claims `/authorize` accepts seal into a state that opens.
    #[test]
    fn the_largest_accepted_claims_seal_into_an_openable_state() {
        let fill = |unit: &str, budget: usize| unit.repeat(budget / encoded_len(unit));
        for unit in ["a", "é", "😀", "\u{1}", "\""] {
            let claims = StateClaims {
                provider: ProviderId::GoogleDrive,
                redirect_uri: fill(unit, MAX_REDIRECT_URI_BYTES),
                client_state: Some(fill(unit, MAX_CLIENT_STATE_BYTES)),
                code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
                issued_at: 9_999_999_999,
                expires_at: 9_999_999_999 + STATE_TTL_SECONDS,
            };
            let token = sealer().seal(&claims).unwrap();
            assert!(token.len() <= MAX_STATE_LEN, "{unit:?}: {}", token.len());
            assert_eq!(sealer().open(&token, 9_999_999_999).unwrap(), claims);
        }
    }

    #[test]
    fn a_state_too_large_to_open_is_never_sealed() {
        let mut claims = claims(1_000);
        claims.redirect_uri = "\u{1}".repeat(MAX_STATE_LEN);
        assert_eq!(sealer().seal(&claims), Err(StateError::TooLarge));
    }

    #[test]
    fn expires_after_ten_minutes() {
        let token = sealer().seal(&claims(1_000)).unwrap();
        assert!(sealer().open(&token, 1_600).is_ok());
        assert_eq!(sealer().open(&token, 1_601), Err(StateError::Expired));
        assert_eq!(
            sealer().open(&token, 800),
            Err(StateError::Expired),
            "issued in the future"
        );
    }
}

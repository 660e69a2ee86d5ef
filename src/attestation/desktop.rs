//! Desktop "attestation": no desktop platform attests an app or a device, so this proves
//! nothing about either, and the README says so. What it does honestly: the [`Fingerprint`] a
//! device reports at its first attestation under a certificate is bound to that certificate,
//! and later ones are compared with the binding (`fingerprint_match`); and a device may attest
//! at most [`DesktopLimits::per_hour`] times per clock hour (`rate_limit_ok`), counted in the
//! attestation store, so the limit holds across every sandbox in AWS mode.

use serde::{Deserialize, Serialize};

use crate::env::{Env, EnvError};

/// A device fingerprint: 64 lowercase hexadecimal digits (a SHA-256 the app computes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() == 64 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(raw.to_owned()))
        } else {
            Err("fingerprint must be 64 lowercase hexadecimal digits".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Length of a rate window.
pub const WINDOW_SECS: u64 = 3600;

/// Desktop attestations a device may make per window unless `ATTESTATION_DESKTOP_PER_HOUR`
/// (1 to 1000) says otherwise.
pub const DEFAULT_PER_HOUR: u64 = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesktopLimits {
    pub per_hour: u64,
}

impl DesktopLimits {
    pub fn from_env(env: Env<'_>) -> Result<Self, EnvError> {
        Ok(Self {
            per_hour: env.number(
                "ATTESTATION_DESKTOP_PER_HOUR",
                DEFAULT_PER_HOUR,
                1..=1000,
                "attestations",
            )?,
        })
    }
}

/// The window `now` (Unix seconds) falls in, and when it ends.
pub fn window(now: u64) -> (u64, u64) {
    let index = now / WINDOW_SECS;
    (index, (index + 1) * WINDOW_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_64_lowercase_hex_digits() {
        assert!(Fingerprint::parse(&"a1".repeat(32)).is_ok());
        assert!(Fingerprint::parse(&"A1".repeat(32)).is_err());
        assert!(Fingerprint::parse(&"a1".repeat(31)).is_err());
        assert!(Fingerprint::parse(&"g1".repeat(32)).is_err());
    }

    #[test]
    fn windows_are_clock_hours() {
        assert_eq!(window(7_199), (1, 7_200));
        assert_eq!(window(7_200), (2, 10_800));
    }
}

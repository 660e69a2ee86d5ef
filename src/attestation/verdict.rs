//! What an attestation concluded ([`Verdict`]): its [`Status`] (the spec's `valid`, `invalid`,
//! `failed`, `unsupported`), when it was reached, the platform's checks, and the stable code
//! of what failed. The latest verdict per device and platform is kept
//! ([`super::store::AttestationStore`]): `/device/status` reports it, and a recent `valid` one
//! answers a later attestation without verifying its evidence again (the cache, issue 27; the
//! challenge is always checked first).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Platform;
use crate::device::id::Serial;

/// The spec's verdicts (§2.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = AttestationStatus)]
pub enum Status {
    /// The evidence verified and says the app and device are genuine.
    Valid,
    /// The evidence verified, or was checked, and says they are not (or not the ones bound).
    Invalid,
    /// The evidence could not be verified (malformed, not for this app, not this challenge).
    Failed,
    /// The platform's verification is not configured on this deployment.
    Unsupported,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Failed => "failed",
            Self::Unsupported => "unsupported",
        }
    }
}

/// The checks behind a verdict, by platform; `None` where a check was not reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checks {
    /// Android: the device meets Play Integrity's strong or device integrity (the spec's
    /// `cts_profile_match`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cts_profile_match: Option<bool>,
    /// Android: the device meets at least basic integrity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_integrity: Option<bool>,
    /// iOS: the App Attest attestation or assertion verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity_verified: Option<bool>,
    /// Desktop: the fingerprint is the one bound to the device's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_match: Option<bool>,
    /// Desktop: the device is within its attestation rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_ok: Option<bool>,
}

/// One attestation's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub platform: Platform,
    pub status: Status,
    /// When the evidence was evaluated (a cached answer repeats it).
    pub at: DateTime<Utc>,
    pub checks: Checks,
    /// The stable code of what failed (`None` when valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Play Integrity's advice to the user, when it gave any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    /// The certificate it was reached under: a cached verdict answers only that certificate
    /// (a device id can change hands after a revocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<Serial>,
}

impl Verdict {
    pub fn new(platform: Platform, status: Status, checks: Checks) -> Self {
        Self {
            platform,
            status,
            at: Utc::now(),
            checks,
            error: None,
            advice: None,
            serial: None,
        }
    }

    /// The verdict as reached under the certificate `serial`.
    pub fn under(mut self, serial: &Serial) -> Self {
        self.serial = Some(serial.clone());
        self
    }

    pub fn with_error(mut self, code: &str) -> Self {
        self.error = Some(code.to_owned());
        self
    }

    /// Whether it may answer an attestation made under the certificate `serial` at `now`
    /// without verifying its evidence: a `valid` verdict reached under that certificate, younger
    /// than `ttl_seconds` and newer than the last clear-cache.
    pub fn answers(
        &self,
        serial: &Serial,
        now: DateTime<Utc>,
        ttl_seconds: u64,
        cleared: Option<DateTime<Utc>>,
    ) -> bool {
        let ttl = chrono::Duration::seconds(i64::try_from(ttl_seconds).unwrap_or(i64::MAX / 1000));
        self.status == Status::Valid
            && self.serial.as_ref() == Some(serial)
            && self.at <= now
            && now - self.at < ttl
            && cleared.is_none_or(|cleared| self.at > cleared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn only_a_recent_valid_verdict_of_the_certificate_newer_than_the_last_clear_answers() {
        let serial = Serial::parse(&"A1".repeat(16)).unwrap();
        let mut verdict =
            Verdict::new(Platform::Ios, Status::Valid, Checks::default()).under(&serial);
        verdict.at = at(1_000);
        let answers = |v: &Verdict, now, cleared| v.answers(&serial, at(now), 60, cleared);
        assert!(answers(&verdict, 1_000, None));
        assert!(answers(&verdict, 1_059, None));
        assert!(!answers(&verdict, 1_060, None), "expired");
        assert!(!answers(&verdict, 999, None), "from the future");
        assert!(answers(&verdict, 1_010, Some(at(999))));
        assert!(!answers(&verdict, 1_010, Some(at(1_000))), "cleared");
        let other = Serial::parse(&"B2".repeat(16)).unwrap();
        assert!(
            !verdict.answers(&other, at(1_010), 60, None),
            "another certificate's"
        );
        let mut unbound = verdict.clone();
        unbound.serial = None;
        assert!(!answers(&unbound, 1_010, None), "no certificate");
        verdict.status = Status::Invalid;
        assert!(!answers(&verdict, 1_010, None), "only valid ones");
    }
}

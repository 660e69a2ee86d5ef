//! The attestation service: what the `/device/attest/*` routes ask, in the domain's words. Each
//! attestation redeems its challenge first (always: a cached verdict never skips it), then
//! answers from the cache when the device's latest verdict on the platform is a recent `valid`
//! one, else verifies the evidence, records the verdict as the device's latest, and answers it.
//!
//! Each attestation is a span `attestation.verify` with `attestation.platform`,
//! `attestation.verdict` and `attestation.cached`; the request span carries the verdict as the
//! X-Ray annotation `attestation_verdict`. No token, key or attestation object is logged or put
//! on a span: only platform names, verdicts and this service's error codes.

use std::sync::Arc;

use chrono::Utc;
use thiserror::Error;
use tracing::Instrument;
use tracing::field::Empty;

use super::Platform;
use super::app_attest::{AppAttestError, AppAttestVerifier, AttestedKey};
use super::challenge::{ChallengeError, Challenges, client_data_hash};
use super::desktop::{DesktopLimits, Fingerprint, window};
use super::play_integrity::{PlayIntegrity, PlayIntegrityError, PlayIntegrityKeys, PlayVerdict};
use super::settings::AttestationSettings;
use super::store::{AttestationStore, StoreError};
use super::verdict::{Checks, Status, Verdict};
use crate::device::id::{DeviceId, Serial};

/// Why an attestation got no verdict, or a verdict that is not `valid`.
#[derive(Debug, Error)]
pub enum AttestError {
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Play Integrity's keys cannot be read now (503); the challenge is not used.
    #[error(transparent)]
    PlayIntegrityKeys(PlayIntegrityError),
    /// The platform's verification is not configured here (the spec's `unsupported`, 501).
    #[error("{} attestation is not configured on this deployment", .0.as_str())]
    Unsupported(Platform),
    /// The device attested more often than its hourly allowance (desktop).
    #[error("the device attested {limit} times this hour already; try again in {retry_after} s")]
    RateLimited { limit: u64, retry_after: u64 },
    /// The evidence was evaluated and did not pass: `verdict` says how, `message` why.
    #[error("{message}")]
    Refused { verdict: Verdict, message: String },
}

/// An App Attest request: an attestation of a new key (`key_id` given) or an assertion by the
/// device's stored key.
#[derive(Debug)]
pub struct IosEvidence<'a> {
    pub object: &'a [u8],
    pub key_id: Option<&'a [u8]>,
}

/// The App Attest outcome that is not a verification error.
#[derive(Debug)]
enum IosProof {
    Attested(AttestedKey),
    Asserted { key_id: [u8; 32], counter: u32 },
}

#[derive(Debug)]
pub struct Attestor {
    challenges: Arc<Challenges>,
    store: Arc<dyn AttestationStore>,
    app_attest: Option<AppAttestVerifier>,
    play_integrity: Option<PlayIntegrity>,
    cache_ttl_seconds: u64,
    desktop: DesktopLimits,
}

impl Attestor {
    pub fn new(
        challenges: Arc<Challenges>,
        store: Arc<dyn AttestationStore>,
        settings: &AttestationSettings,
    ) -> Self {
        Self {
            challenges,
            store,
            app_attest: settings.app_attest.clone(),
            play_integrity: settings.play_integrity.clone().map(PlayIntegrity::new),
            cache_ttl_seconds: settings.cache_ttl_seconds,
            desktop: settings.desktop,
        }
    }

    /// App Attest's verifier, or `unsupported` (501) when it is not configured.
    fn app_attest(&self) -> Result<&AppAttestVerifier, AttestError> {
        self.app_attest
            .as_ref()
            .ok_or(AttestError::Unsupported(Platform::Ios))
    }

    /// Play Integrity and its keys, or `unsupported` (501) when it is not configured. Asked
    /// before a challenge is redeemed: a key outage must not cost the device its challenge.
    async fn play_integrity(&self) -> Result<(&PlayIntegrity, &PlayIntegrityKeys), AttestError> {
        let play = self
            .play_integrity
            .as_ref()
            .ok_or(AttestError::Unsupported(Platform::Android))?;
        let keys = play.keys().await.map_err(AttestError::PlayIntegrityKeys)?;
        Ok((play, keys))
    }

    /// Runs `attest` in the span of one attestation on `platform`, recording its verdict.
    async fn traced<F>(&self, platform: Platform, attest: F) -> Result<Verdict, AttestError>
    where
        F: Future<Output = Result<(Verdict, bool), AttestError>>,
    {
        let span = tracing::info_span!(
            "attestation.verify",
            otel.kind = "internal",
            attestation.platform = platform.as_str(),
            attestation.verdict = Empty,
            attestation.cached = Empty,
            otel.status_code = Empty,
        );
        let outcome = attest.instrument(span.clone()).await;
        let verdict = match &outcome {
            Ok((verdict, cached)) => {
                span.record("attestation.cached", cached);
                Some(verdict.status)
            }
            Err(AttestError::Refused { verdict, .. }) => Some(verdict.status),
            Err(AttestError::Unsupported(_)) => Some(Status::Unsupported),
            Err(_) => None,
        };
        if let Some(status) = verdict {
            span.record("attestation.verdict", status.as_str());
            crate::telemetry::annotations::attestation_verdict(status.as_str());
        }
        if outcome.is_err() {
            span.record("otel.status_code", "error");
        }
        outcome.map(|(verdict, _)| verdict)
    }

    /// The device's latest verdict on `platform` if it may answer an attestation under the
    /// certificate `serial` now, without new evidence.
    async fn cached(
        &self,
        device: &DeviceId,
        serial: &Serial,
        platform: Platform,
    ) -> Result<Option<Verdict>, StoreError> {
        if self.cache_ttl_seconds == 0 {
            return Ok(None);
        }
        let Some(verdict) = self.store.verdict(device, platform).await? else {
            return Ok(None);
        };
        // The clear-cache mark is read only for a verdict that could answer otherwise.
        let now = Utc::now();
        if !verdict.answers(serial, now, self.cache_ttl_seconds, None) {
            return Ok(None);
        }
        let cleared = self.store.cleared_at().await?;
        Ok(verdict
            .answers(serial, now, self.cache_ttl_seconds, cleared)
            .then_some(verdict))
    }

    /// Records `verdict` as the device's latest, then answers it: `Ok` when valid.
    async fn conclude(
        &self,
        device: &DeviceId,
        verdict: Verdict,
        message: impl FnOnce() -> String,
    ) -> Result<(Verdict, bool), AttestError> {
        if let Err(error) = self.store.put_verdict(device, &verdict).await {
            // The verdict stands; only its record (the cache, `/device/status`) is missing.
            tracing::warn!(error = %error, "attestation verdict not recorded");
        }
        if verdict.status == Status::Valid {
            Ok((verdict, false))
        } else {
            Err(AttestError::Refused {
                verdict,
                message: message(),
            })
        }
    }

    /// An iOS attestation or assertion answering `challenge` (App Attest), made under the
    /// certificate `serial`. Only an assertion may be answered from the cache: an attestation
    /// brings a new key, which is verified and stored.
    pub async fn ios(
        &self,
        device: &DeviceId,
        serial: &Serial,
        challenge: &str,
        evidence: IosEvidence<'_>,
    ) -> Result<Verdict, AttestError> {
        self.traced(Platform::Ios, async {
            let verifier = self.app_attest()?;
            self.challenges
                .redeem(challenge, device, Platform::Ios)
                .await?;
            if evidence.key_id.is_none()
                && let Some(verdict) = self.cached(device, serial, Platform::Ios).await?
            {
                return Ok((verdict, true));
            }
            let hash = client_data_hash(challenge, None);
            let (verdict, message, key) =
                self.ios_verdict(verifier, device, evidence, &hash).await?;
            if let Some(key) = &key {
                self.store.put_key(device, key).await?;
            }
            self.conclude(device, verdict.under(serial), || message)
                .await
        })
        .await
    }

    /// The verdict on App Attest `evidence` over `hash`, with why it is not valid, and the key
    /// an attestation vouched for (the caller stores it). An assertion advances the stored
    /// key's counter (atomic across sandboxes: of two assertions with one counter, one passes).
    async fn ios_verdict(
        &self,
        verifier: &AppAttestVerifier,
        device: &DeviceId,
        evidence: IosEvidence<'_>,
        hash: &[u8; 32],
    ) -> Result<(Verdict, String, Option<AttestedKey>), StoreError> {
        let proof = match evidence.key_id {
            Some(key_id) => verifier
                .attestation(evidence.object, key_id, hash, Utc::now().timestamp())
                .map(IosProof::Attested),
            None => {
                let Some(key) = self.store.key(device).await? else {
                    let verdict =
                        ios_outcome(Status::Failed, Some(false)).with_error(NO_ATTESTED_KEY);
                    let message = "no App Attest key is attested for this device yet: send an attestation with its key_id first";
                    return Ok((verdict, message.to_owned(), None));
                };
                verifier
                    .assertion(evidence.object, &key, hash)
                    .map(|counter| IosProof::Asserted {
                        key_id: key.key_id,
                        counter,
                    })
            }
        };
        let outcome = match proof {
            Ok(IosProof::Attested(key)) => Ok(Some(key)),
            Ok(IosProof::Asserted { key_id, counter }) => {
                if self.store.advance_counter(device, &key_id, counter).await? {
                    Ok(None)
                } else {
                    Err(AppAttestError::Counter)
                }
            }
            Err(error) => Err(error),
        };
        Ok(match outcome {
            Ok(key) => (ios_outcome(Status::Valid, Some(true)), String::new(), key),
            Err(error) => {
                let status = match error {
                    AppAttestError::Malformed(_)
                    | AppAttestError::Format
                    | AppAttestError::Nonce
                    | AppAttestError::KeyId => Status::Failed,
                    _ => Status::Invalid,
                };
                let verdict = ios_outcome(status, Some(false)).with_error(error.code());
                (verdict, error.to_string(), None)
            }
        })
    }

    /// A desktop attestation: the rate, then the fingerprint against the one bound to the
    /// certificate `serial` (bound now if none is).
    pub async fn desktop(
        &self,
        device: &DeviceId,
        serial: &Serial,
        fingerprint: &Fingerprint,
    ) -> Result<Verdict, AttestError> {
        self.traced(Platform::Desktop, async {
            let now = crate::clock::now_secs();
            let (index, ends) = window(now);
            let attempts = self.store.count_attempt(device, index, ends).await?;
            if attempts > self.desktop.per_hour {
                return Err(AttestError::RateLimited {
                    limit: self.desktop.per_hour,
                    retry_after: ends.saturating_sub(now).max(1),
                });
            }
            let bound = self
                .store
                .bind_fingerprint(device, serial, fingerprint)
                .await?;
            let matched = &bound == fingerprint;
            let checks = Checks {
                fingerprint_match: Some(matched),
                rate_limit_ok: Some(true),
                ..Checks::default()
            };
            let verdict = if matched {
                Verdict::new(Platform::Desktop, Status::Valid, checks)
            } else {
                Verdict::new(Platform::Desktop, Status::Invalid, checks)
                    .with_error(FINGERPRINT_MISMATCH)
            }
            .under(serial);
            self.conclude(device, verdict, || {
                "the fingerprint is not the one bound to this device's certificate".to_owned()
            })
            .await
        })
        .await
    }

    /// An Android attestation: a Play Integrity token whose request hash answers `challenge`.
    pub async fn android(
        &self,
        device: &DeviceId,
        serial: &Serial,
        challenge: &str,
        token: &str,
    ) -> Result<Verdict, AttestError> {
        self.traced(Platform::Android, async {
            let (play, keys) = self.play_integrity().await?;
            self.challenges
                .redeem(challenge, device, Platform::Android)
                .await?;
            if let Some(verdict) = self.cached(device, serial, Platform::Android).await? {
                return Ok((verdict, true));
            }
            let hash = client_data_hash(challenge, None);
            let (verdict, message) = android_verdict(play, keys, token, &hash);
            self.conclude(device, verdict.under(serial), || message)
                .await
        })
        .await
    }

    /// An enrollment's or renewal's attestation (`ATTESTATION_REQUIRED`): `evidence` answering
    /// a challenge for the device and platform, over the client data hash that also commits to
    /// the CSR's key (`key_spki_der`), so the certificate can only go to a key the attested app
    /// holds. Never answered from the cache, and nothing is written: the caller issues the
    /// certificate, then [`record`](Self::record)s what was attested under it, so a request
    /// that gets no certificate (another device's id, say) changes nothing of that device's.
    pub async fn enrollment(
        &self,
        device: &DeviceId,
        key_spki_der: &[u8],
        evidence: EnrollmentEvidence<'_>,
    ) -> Result<Attested, AttestError> {
        let platform = evidence.platform();
        let mut attested = None;
        self.traced(platform, async {
            let (verdict, message, key) = match evidence {
                EnrollmentEvidence::Android { challenge, token } => {
                    let (play, keys) = self.play_integrity().await?;
                    self.challenges.redeem(challenge, device, platform).await?;
                    let hash = client_data_hash(challenge, Some(key_spki_der));
                    let (verdict, message) = android_verdict(play, keys, token, &hash);
                    (verdict, message, None)
                }
                EnrollmentEvidence::Ios {
                    challenge,
                    object,
                    key_id,
                } => {
                    let verifier = self.app_attest()?;
                    self.challenges.redeem(challenge, device, platform).await?;
                    let hash = client_data_hash(challenge, Some(key_spki_der));
                    let evidence = IosEvidence {
                        object,
                        key_id: Some(key_id),
                    };
                    self.ios_verdict(verifier, device, evidence, &hash).await?
                }
            };
            if verdict.status != Status::Valid {
                return Err(AttestError::Refused { verdict, message });
            }
            attested = Some(key);
            Ok((verdict, false))
        })
        .await
        .map(|verdict| Attested {
            verdict,
            key: attested.flatten(),
        })
    }

    /// Records what an enrollment attested, once its certificate `serial` is issued: the
    /// verdict as the device's latest, and an App Attest key as the device's. A failure is
    /// logged: the certificate is issued, and the device can attest again on the guarded routes.
    pub async fn record(&self, device: &DeviceId, serial: &Serial, attested: Attested) {
        if let Some(key) = &attested.key
            && let Err(error) = self.store.put_key(device, key).await
        {
            tracing::warn!(error = %error, "attested App Attest key not recorded");
        }
        let verdict = attested.verdict.under(serial);
        if let Err(error) = self.store.put_verdict(device, &verdict).await {
            tracing::warn!(error = %error, "attestation verdict not recorded");
        }
    }

    /// Forgets every cached verdict, in every process: none reached before now answers again.
    pub async fn clear_cache(&self) -> Result<(), StoreError> {
        self.store.clear(Utc::now()).await
    }

    /// The device's latest verdict on `platform` (`/device/status`).
    pub async fn latest(
        &self,
        device: &DeviceId,
        platform: Platform,
    ) -> Result<Option<Verdict>, StoreError> {
        self.store.verdict(device, platform).await
    }
}

/// What an enrollment's attestation established, to [`Attestor::record`] once the certificate
/// is issued.
#[derive(Debug)]
pub struct Attested {
    verdict: Verdict,
    key: Option<AttestedKey>,
}

/// An enrollment's evidence: a Play Integrity token, or an App Attest attestation of a new key.
#[derive(Debug)]
pub enum EnrollmentEvidence<'a> {
    Android {
        challenge: &'a str,
        token: &'a str,
    },
    Ios {
        challenge: &'a str,
        object: &'a [u8],
        key_id: &'a [u8],
    },
}

impl EnrollmentEvidence<'_> {
    pub fn platform(&self) -> Platform {
        match self {
            Self::Android { .. } => Platform::Android,
            Self::Ios { .. } => Platform::Ios,
        }
    }
}

/// The verdict on a Play Integrity `token` over `hash`, with why it is not valid.
fn android_verdict(
    play: &PlayIntegrity,
    keys: &PlayIntegrityKeys,
    token: &str,
    hash: &[u8; 32],
) -> (Verdict, String) {
    match play.verify(keys, token, hash, Utc::now().timestamp_millis()) {
        Ok(PlayVerdict { checks, device }) => {
            let checks = Checks {
                cts_profile_match: Some(checks.device),
                basic_integrity: Some(checks.basic),
                ..Checks::default()
            };
            match device {
                Ok(()) => (
                    Verdict::new(Platform::Android, Status::Valid, checks),
                    String::new(),
                ),
                Err(error) => {
                    let mut verdict = Verdict::new(Platform::Android, Status::Invalid, checks)
                        .with_error(error.code());
                    verdict.advice = Some(format!(
                        "{}: Play's integrity remediation dialog (GET_INTEGRITY) can help the user fix it",
                        crate::error::sentence(&error.to_string()).trim_end_matches('.')
                    ));
                    (verdict, error.to_string())
                }
            }
        }
        Err(error) => {
            let status = if error.is_unverifiable() {
                Status::Failed
            } else {
                Status::Invalid
            };
            let verdict =
                Verdict::new(Platform::Android, status, Checks::default()).with_error(error.code());
            (verdict, error.to_string())
        }
    }
}

/// The code of an assertion from a device with no attested key.
pub const NO_ATTESTED_KEY: &str = "no_attested_key";
/// The code of a desktop fingerprint other than the bound one.
pub const FINGERPRINT_MISMATCH: &str = "fingerprint_mismatch";

fn ios_outcome(status: Status, verified: Option<bool>) -> Verdict {
    let checks = Checks {
        integrity_verified: verified,
        ..Checks::default()
    };
    Verdict::new(Platform::Ios, status, checks)
}

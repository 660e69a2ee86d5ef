//! Single use of short-lived tokens, across every process that serves the API: an OAuth state
//! may be exchanged for tokens once, and an attestation challenge answered once, however many Lambda sandboxes or server tasks see it.
//!
//! A use is a **claim** of the token's SHA-256 digest, which either records it (the first
//! claim) or finds it recorded (every later one), in one atomic step of the store: a check
//! followed by a write would let two sandboxes both pass the check. The record lives until the
//! token's own expiry plus [`RETENTION_MARGIN_SECS`]; after that the token is refused by its
//! own expiry anyway, so forgetting it changes nothing.
//!
//! Two stores: [`InProcess`] (one process: local work, a single server) and
//! [`dynamo::DynamoSingleUse`] (`INFRASTRUCTURE_PROVIDER=aws`: a DynamoDB `PutItem` conditioned
//! on the key not existing, with the table's time-to-live deleting old records).

pub mod dynamo;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use thiserror::Error;

use crate::clock::now_secs;

/// Records outlive their token's expiry by this much, so clock skew between sandboxes cannot
/// make a still-valid token look unused.
pub const RETENTION_MARGIN_SECS: u64 = 300;

/// What a token is for: each kind has its own key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A sealed OAuth state, at `/oauth/token`.
    OAuthState,
    /// An attestation challenge ([`crate::attestation::challenge`]).
    AttestationChallenge,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OAuthState => "oauth-state",
            Self::AttestationChallenge => "attestation-challenge",
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SingleUseError {
    #[error("the single-use store failed: {0}")]
    Backend(String),
    #[error("the single-use store is full ({0} live records)")]
    Full(usize),
}

pub type ClaimFuture<'a> = Pin<Box<dyn Future<Output = Result<bool, SingleUseError>> + Send + 'a>>;

/// Where uses are recorded.
pub trait SingleUse: Send + Sync + std::fmt::Debug {
    /// Claims `digest` for `purpose` until `expires_at` (Unix seconds, the token's expiry):
    /// `Ok(true)` for the first claim, `Ok(false)` for any later one while the record lives.
    /// Of concurrent claims of one digest exactly one gets `true`.
    fn claim<'a>(
        &'a self,
        purpose: Purpose,
        digest: &'a [u8; 32],
        expires_at: u64,
    ) -> ClaimFuture<'a>;
}

/// Live records above which expired ones are swept before a claim.
const SWEEP_AT: usize = 4096;
/// Live records [`InProcess`] keeps at most; a claim beyond is refused (the caller answers
/// 503) rather than letting memory grow with what clients send.
pub const MAX_IN_PROCESS: usize = 100_000;

/// Claims held in this process's memory, under one lock.
#[derive(Debug, Default)]
pub struct InProcess {
    used: Mutex<HashMap<(Purpose, [u8; 32]), u64>>,
}

impl InProcess {
    pub fn new() -> Self {
        Self::default()
    }

    fn claim_now(
        &self,
        purpose: Purpose,
        digest: &[u8; 32],
        expires_at: u64,
        now: u64,
    ) -> Result<bool, SingleUseError> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.len() >= SWEEP_AT {
            used.retain(|_, until| *until >= now);
        }
        let key = (purpose, *digest);
        if used.get(&key).is_some_and(|until| *until >= now) {
            return Ok(false);
        }
        if used.len() >= MAX_IN_PROCESS {
            return Err(SingleUseError::Full(used.len()));
        }
        used.insert(key, expires_at.saturating_add(RETENTION_MARGIN_SECS));
        Ok(true)
    }
}

impl SingleUse for InProcess {
    fn claim<'a>(
        &'a self,
        purpose: Purpose,
        digest: &'a [u8; 32],
        expires_at: u64,
    ) -> ClaimFuture<'a> {
        let claimed = self.claim_now(purpose, digest, expires_at, now_secs());
        Box::pin(async move { claimed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_claimed_once_per_purpose() {
        let store = InProcess::new();
        let digest = [7u8; 32];
        assert_eq!(
            store.claim_now(Purpose::OAuthState, &digest, 1_000, 500),
            Ok(true)
        );
        assert_eq!(
            store.claim_now(Purpose::OAuthState, &digest, 1_000, 501),
            Ok(false)
        );
        assert_eq!(
            store.claim_now(Purpose::OAuthState, &[8u8; 32], 1_000, 501),
            Ok(true)
        );
    }

    #[test]
    fn a_record_is_kept_past_its_token_expiry_then_forgotten() {
        let store = InProcess::new();
        let digest = [1u8; 32];
        assert_eq!(
            store.claim_now(Purpose::OAuthState, &digest, 1_000, 900),
            Ok(true)
        );
        let within_margin = 1_000 + RETENTION_MARGIN_SECS;
        assert_eq!(
            store.claim_now(Purpose::OAuthState, &digest, 1_000, within_margin),
            Ok(false)
        );
        assert_eq!(
            store.claim_now(Purpose::OAuthState, &digest, 1_000, within_margin + 1),
            Ok(true)
        );
    }

    #[test]
    fn memory_is_bounded_and_expired_records_are_swept() {
        let store = InProcess::new();
        let digest = |n: usize| {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&(n as u64).to_le_bytes());
            d
        };
        for n in 0..MAX_IN_PROCESS {
            assert_eq!(
                store.claim_now(Purpose::OAuthState, &digest(n), 100, 50),
                Ok(true)
            );
        }
        assert_eq!(
            store.claim_now(Purpose::OAuthState, &digest(MAX_IN_PROCESS), 100, 50),
            Err(SingleUseError::Full(MAX_IN_PROCESS))
        );
        // Once they expire, the sweep makes room.
        let later = 100 + RETENTION_MARGIN_SECS + 1;
        assert_eq!(
            store.claim_now(Purpose::OAuthState, &digest(MAX_IN_PROCESS), 10_000, later),
            Ok(true)
        );
        assert_eq!(store.used.lock().unwrap().len(), 1);
    }

    #[test]
    fn concurrent_claims_of_one_token_have_one_winner() {
        let store = std::sync::Arc::new(InProcess::new());
        let digest = [9u8; 32];
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let store = store.clone();
                    scope.spawn(move || {
                        store
                            .claim_now(Purpose::OAuthState, &digest, u64::MAX / 2, 1)
                            .unwrap() as usize
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1);
    }
}

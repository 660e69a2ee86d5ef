//! What attestation remembers, behind one trait with two backends: [`local::LocalAttestations`]
//! (a JSON file, for local work) and [`dynamo::DynamoAttestations`] (a DynamoDB table,
//! deployed).
//!
//! Per device: its App Attest key (id, public key, signature counter), the desktop fingerprint
//! bound to its certificate, and its latest [`Verdict`] per platform; per deployment: when the
//! verdict cache was last cleared; per device and hour: its desktop attestations. Every change
//! that many sandboxes may race on is one atomic step of the backend: a counter only moves up
//! ([`AttestationStore::advance_counter`], so one assertion is accepted once), a fingerprint is
//! bound once per certificate ([`AttestationStore::bind_fingerprint`]), and attempts are counted
//! by an atomic add ([`AttestationStore::count_attempt`]).

pub mod dynamo;
pub mod local;

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::Platform;
use super::app_attest::AttestedKey;
use super::desktop::Fingerprint;
use super::verdict::Verdict;
use crate::device::id::{DeviceId, Serial};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("attestation storage failed: {0}")]
    Backend(String),
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where attestation state lives.
pub trait AttestationStore: Send + Sync + std::fmt::Debug {
    /// The device's App Attest key (a strongly consistent read).
    fn key<'a>(&'a self, device: &'a DeviceId) -> StoreFuture<'a, Option<AttestedKey>>;

    /// Stores a newly attested key for the device, replacing any earlier one (the app was
    /// reinstalled, or its key lost).
    fn put_key<'a>(&'a self, device: &'a DeviceId, key: &'a AttestedKey) -> StoreFuture<'a, ()>;

    /// Sets the counter of the device's key `key_id` to `counter` if it is still below it, in
    /// one step; `false` when it is not (the assertion was replayed, or raced one with a higher
    /// counter) or the key was replaced.
    fn advance_counter<'a>(
        &'a self,
        device: &'a DeviceId,
        key_id: &'a [u8; 32],
        counter: u32,
    ) -> StoreFuture<'a, bool>;

    /// Binds `fingerprint` to the device's certificate `serial` unless a fingerprint is bound
    /// to that certificate already; the fingerprint bound, this one or the earlier.
    fn bind_fingerprint<'a>(
        &'a self,
        device: &'a DeviceId,
        serial: &'a Serial,
        fingerprint: &'a Fingerprint,
    ) -> StoreFuture<'a, Fingerprint>;

    /// Counts one desktop attestation of the device in rate window `window`, remembered until
    /// `expires_at` (Unix seconds); the count with this one.
    fn count_attempt<'a>(
        &'a self,
        device: &'a DeviceId,
        window: u64,
        expires_at: u64,
    ) -> StoreFuture<'a, u64>;

    /// Records the device's latest verdict on its platform.
    fn put_verdict<'a>(&'a self, device: &'a DeviceId, verdict: &'a Verdict)
    -> StoreFuture<'a, ()>;

    /// The device's latest verdict on `platform`.
    fn verdict<'a>(
        &'a self,
        device: &'a DeviceId,
        platform: Platform,
    ) -> StoreFuture<'a, Option<Verdict>>;

    /// Records that the cache was cleared at `at`: no verdict reached before then answers an
    /// attestation again, in any process.
    fn clear<'a>(&'a self, at: DateTime<Utc>) -> StoreFuture<'a, ()>;

    /// When the cache was last cleared.
    fn cleared_at(&self) -> StoreFuture<'_, Option<DateTime<Utc>>>;
}

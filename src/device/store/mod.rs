//! Certificate records behind one trait, with two backends: [`local::LocalStore`] (JSON files,
//! for local work) and [`dynamo::DynamoStore`] (DynamoDB, deployed).
//!
//! The model: every device has one **current** record, the last certificate issued to it, and
//! a certificate is accepted only while it is its device's current record and not revoked. So
//! a device has at most one usable certificate, and every decision about it (enroll, renew,
//! revoke, the guard, status) reads or writes that one record: a constant cost, however many
//! certificates the device had before. Every change to it is a compare-and-set
//! ([`CertificateStore::install`], [`CertificateStore::revoke_current`]) that the backend
//! makes atomic (DynamoDB: one transaction with conditions; files: one lock), because many
//! sandboxes act on one device at once: of two renewals of one certificate exactly one
//! installs, and a revocation that answered success cannot be undone by a renewal that was in
//! flight (its condition no longer holds). Past certificates are kept as history records,
//! written in the same step, read by nothing on a request path.

pub mod dynamo;
pub mod local;

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::id::{DeviceId, Platform, Serial};

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    pub device_id: DeviceId,
    pub serial: Serial,
    pub platform: Platform,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub certificate_pem: String,
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
}

impl CertificateRecord {
    /// Marks the record revoked at `now` (no-op if it already is); `true` if it changed.
    pub fn revoke(&mut self, reason: &str, now: DateTime<Utc>) -> bool {
        if self.revoked {
            return false;
        }
        self.revoked = true;
        self.revoked_at = Some(now);
        self.revocation_reason = Some(reason.chars().take(256).collect());
        true
    }
}

/// What a device's current record must still be for [`CertificateStore::install`] to replace
/// it: the value the caller read and decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<'a> {
    /// The device has no current record (first enrollment).
    Nothing,
    /// This serial is current, revoked or not (enrollment after revocation or expiry).
    Current(&'a Serial),
    /// This serial is current and not revoked (renewal).
    Active(&'a Serial),
}

impl<'a> Expect<'a> {
    /// That `current`, as the caller read it, is still the device's current record.
    pub fn of(current: Option<&'a CertificateRecord>) -> Self {
        current.map_or(Self::Nothing, |c| Self::Current(&c.serial))
    }

    /// Whether `current` meets the expectation.
    pub fn holds(self, current: Option<&CertificateRecord>) -> bool {
        match (self, current) {
            (Self::Nothing, None) => true,
            (Self::Current(serial), Some(c)) => &c.serial == serial,
            (Self::Active(serial), Some(c)) => &c.serial == serial && !c.revoked,
            _ => false,
        }
    }
}

/// Why a replaced current record is revoked.
pub const SUPERSEDED: &str = "Superseded by a new certificate";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("certificate storage failed: {0}")]
    Backend(String),
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where certificate records live.
pub trait CertificateStore: Send + Sync + std::fmt::Debug {
    /// The device's current record, revoked or not: one strongly consistent read, so a
    /// revocation or renewal that completed is seen by the next request.
    fn current<'a>(&'a self, device: &'a DeviceId) -> StoreFuture<'a, Option<CertificateRecord>>;

    /// Makes `record` its device's current record if the current one still meets `expect`,
    /// revoking the one it replaces ([`SUPERSEDED`]) and keeping both in the history, all or
    /// nothing. `false` when `expect` no longer holds: nothing was written.
    fn install<'a>(
        &'a self,
        record: &'a CertificateRecord,
        expect: Expect<'a>,
    ) -> StoreFuture<'a, bool>;

    /// Revokes the device's current record if it is not revoked yet, whatever renewals are in
    /// flight; `true` if this call revoked it.
    fn revoke_current<'a>(&'a self, device: &'a DeviceId, reason: &'a str)
    -> StoreFuture<'a, bool>;
}

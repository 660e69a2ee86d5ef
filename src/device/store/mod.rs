//! Certificate records behind one trait, with two backends: [`local::LocalStore`] (JSON files,
//! for local work) and [`dynamo::DynamoStore`] (DynamoDB, deployed).
//!
//! Semantics (spec §4.4–4.5, fixed): every issued certificate is its own record; a device's
//! *current* record is its newest by `issued_at`; a certificate is accepted when its serial has a
//! record that is not revoked and it is inside its validity window; revoking a device revokes
//! all its active records and reports whether there was one; renewal revokes only the old serial.

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
    /// Marks the record revoked now (no-op if it already is); `true` if it changed.
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

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("certificate storage failed: {0}")]
    Backend(String),
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where certificate records live.
pub trait CertificateStore: Send + Sync + std::fmt::Debug {
    fn save<'a>(&'a self, record: &'a CertificateRecord) -> StoreFuture<'a, ()>;
    /// The device's newest record by `issued_at`, revoked or not.
    fn current<'a>(&'a self, device: &'a DeviceId) -> StoreFuture<'a, Option<CertificateRecord>>;
    fn by_serial<'a>(&'a self, serial: &'a Serial) -> StoreFuture<'a, Option<CertificateRecord>>;
    /// Revokes one certificate; `true` if it was active.
    fn revoke_serial<'a>(&'a self, serial: &'a Serial, reason: &'a str) -> StoreFuture<'a, bool>;
    /// Revokes every active certificate of the device; `true` if there was one.
    fn revoke_device<'a>(&'a self, device: &'a DeviceId, reason: &'a str) -> StoreFuture<'a, bool>;
}

/// Newest by `issued_at`; on a tie the later serial wins (deterministic).
pub fn newest(records: impl IntoIterator<Item = CertificateRecord>) -> Option<CertificateRecord> {
    records.into_iter().max_by(|a, b| {
        a.issued_at
            .cmp(&b.issued_at)
            .then_with(|| a.serial.cmp(&b.serial))
    })
}

//! What the device routes do: enroll (check the CSR before touching the CA, issue, install),
//! renew (issue a new certificate with the stored platform in place of the old one), revoke,
//! and the CA certificate and pin (status answers from the record the guard read). Every change is one compare-and-set on the
//! device's current record ([`super::store`]), so concurrent requests cannot undo each other.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::ca::{CertificateAuthority, Pin};
use super::csr::{self, CheckedCsr, CsrError};
use super::id::{DeviceId, Platform, Serial};
use super::material::{CaProvider, MaterialError};
use super::store::{CertificateRecord, CertificateStore, Expect, StoreError};
use crate::telemetry::metrics::{self, CertificateEvent};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DeviceError {
    #[error("{0}")]
    Csr(#[from] CsrError),
    #[error(transparent)]
    Material(#[from] MaterialError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing failed")]
    Signing,
    #[error("old_serial is not the current certificate of this device")]
    SerialMismatch,
    #[error(
        "device {0} already has an active certificate; renew it with that certificate, or revoke it first"
    )]
    AlreadyEnrolled(DeviceId),
}

/// A freshly issued certificate, as enrollment and renewal answer it.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub certificate: String,
    pub serial: Serial,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ca_certificate: String,
}

#[derive(Debug)]
pub struct DeviceService {
    ca: CaProvider,
    store: Arc<dyn CertificateStore>,
}

impl DeviceService {
    pub fn new(ca: CaProvider, store: Arc<dyn CertificateStore>) -> Self {
        Self { ca, store }
    }

    pub async fn authority(&self) -> Result<Arc<CertificateAuthority>, DeviceError> {
        Ok(self.ca.get().await?)
    }

    pub fn store(&self) -> &dyn CertificateStore {
        self.store.as_ref()
    }

    /// Signs a certificate for `device` and installs it as the device's current record if the
    /// current one still meets `expect`; `None` when it no longer does (nothing was stored,
    /// and the signed certificate is dropped without being handed out).
    async fn issue(
        &self,
        checked: &CheckedCsr,
        device: &DeviceId,
        platform: Platform,
        expect: Expect<'_>,
    ) -> Result<Option<Enrollment>, DeviceError> {
        let ca = self.authority().await?;
        let issued = ca
            .issue(checked, device, platform, Utc::now())
            .map_err(|e| {
                tracing::error!(error = %e, "certificate signing failed");
                DeviceError::Signing
            })?;
        let record = CertificateRecord {
            device_id: device.clone(),
            serial: issued.serial.clone(),
            platform,
            issued_at: issued.issued_at,
            expires_at: issued.expires_at,
            certificate_pem: issued.pem.clone(),
            revoked: false,
            revoked_at: None,
            revocation_reason: None,
        };
        // Only a renewal replaces an active certificate.
        let event = match expect {
            Expect::Active(_) => CertificateEvent::Renewed,
            Expect::Nothing | Expect::Current(_) => CertificateEvent::Issued,
        };
        if !self.store.install(&record, expect).await? {
            return Ok(None);
        }
        metrics::record_certificate(event);
        tracing::info!(
            device_id = %device,
            serial = %issued.serial,
            platform = platform.as_str(),
            certificate_event = event.as_str(),
            "certificate issued"
        );
        Ok(Some(Enrollment {
            certificate: issued.pem,
            serial: issued.serial,
            issued_at: issued.issued_at,
            expires_at: issued.expires_at,
            ca_certificate: ca.certificate_pem().to_owned(),
        }))
    }

    /// First enrollment of a device. A device with an active certificate cannot be enrolled
    /// again: otherwise anyone could obtain a certificate for another device's id and act as
    /// it (revoke it, read its status). It renews with its certificate instead. Of concurrent
    /// enrollments of one device, one wins; the others are `AlreadyEnrolled`.
    pub async fn enroll(
        &self,
        csr_pem: &str,
        device: &DeviceId,
        platform: Platform,
    ) -> Result<Enrollment, DeviceError> {
        self.enroll_checked(&csr::check(csr_pem)?, device, platform)
            .await
    }

    /// Whether `device` may enroll now: it has no certificate, or a revoked or expired one.
    /// An attested enrollment asks before it verifies (and uses up) the attestation, so a
    /// request for an enrolled device's id touches nothing of that device's; the issue itself
    /// is still conditional on what it reads then.
    pub async fn may_enroll(&self, device: &DeviceId) -> Result<(), DeviceError> {
        match self.store.current(device).await? {
            Some(current) if !current.revoked && current.expires_at > Utc::now() => {
                Err(DeviceError::AlreadyEnrolled(device.clone()))
            }
            _ => Ok(()),
        }
    }

    /// [`enroll`](Self::enroll) with a CSR already checked (an attested enrollment checks it
    /// first, to bind the attestation to its key).
    pub async fn enroll_checked(
        &self,
        checked: &CheckedCsr,
        device: &DeviceId,
        platform: Platform,
    ) -> Result<Enrollment, DeviceError> {
        let current = self.store.current(device).await?;
        if let Some(current) = &current
            && !current.revoked
            && current.expires_at > Utc::now()
        {
            return Err(DeviceError::AlreadyEnrolled(device.clone()));
        }
        self.issue(checked, device, platform, Expect::of(current.as_ref()))
            .await?
            .ok_or_else(|| DeviceError::AlreadyEnrolled(device.clone()))
    }

    /// Issues a new certificate in place of `old`, the device's current record as the guard
    /// read it, which must still be current and unrevoked when the new one is stored (not only
    /// when the request began): of concurrent renewals exactly one succeeds, and none succeeds
    /// after a revocation.
    pub async fn renew(
        &self,
        csr_pem: &str,
        old: &CertificateRecord,
    ) -> Result<Enrollment, DeviceError> {
        self.renew_checked(&csr::check(csr_pem)?, old).await
    }

    /// [`renew`](Self::renew) with a CSR already checked (an attested renewal checks it first).
    pub async fn renew_checked(
        &self,
        checked: &CheckedCsr,
        old: &CertificateRecord,
    ) -> Result<Enrollment, DeviceError> {
        self.issue(
            checked,
            &old.device_id,
            old.platform,
            Expect::Active(&old.serial),
        )
        .await?
        .ok_or(DeviceError::SerialMismatch)
    }

    /// Revokes the device's certificate; `true` if it had an active one. Once this returns, no
    /// certificate of the device is accepted, whatever renewals were in flight.
    pub async fn revoke(&self, device: &DeviceId, reason: &str) -> Result<bool, DeviceError> {
        let revoked = self.store.revoke_current(device, reason).await?;
        if revoked {
            metrics::record_certificate(CertificateEvent::Revoked);
        }
        tracing::info!(
            device_id = %device,
            revoked,
            certificate_event = revoked.then_some("revoked"),
            "device revocation"
        );
        Ok(revoked)
    }

    pub async fn pin(&self) -> Result<(Pin, String), DeviceError> {
        let ca = self.authority().await?;
        Ok((ca.pin(), ca.certificate_pem().to_owned()))
    }
}

//! The certificate authority: loads a CA key and certificate (PEM), issues device certificates
//! (spec §4.3), verifies that a certificate was issued by it, computes the pin, and creates a
//! new CA for local work.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber, SubjectPublicKeyInfo,
};
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::csr::CheckedCsr;
use super::id::{DeviceId, Platform, Serial};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CaError {
    #[error("CA private key: {0}")]
    Key(String),
    #[error("CA certificate: {0}")]
    Certificate(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("the operating system's random generator failed")]
    Entropy,
}

/// A certificate the CA issued. The certificate's own validity has second precision;
/// `issued_at`/`expires_at` keep the microseconds of the issue time (spec §4.3), which also
/// orders two certificates issued within the same second.
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    pub serial: Serial,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The CA's public-key pin (SHA-256 over its DER SubjectPublicKeyInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub sha256_base64: String,
    pub sha256_hex: String,
}

pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
    certificate_der: Vec<u8>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertificateAuthority(<key>)")
    }
}

fn to_time(t: DateTime<Utc>) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map_err(|e| CaError::Signing(e.to_string()))
}

impl CertificateAuthority {
    pub fn from_pem(key_pem: &str, certificate_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Key(e.to_string()))?;
        let (_, parsed) = x509_parser::pem::parse_x509_pem(certificate_pem.trim().as_bytes())
            .map_err(|e| CaError::Certificate(e.to_string()))?;
        let certificate_der = parsed.contents;
        let (_, cert) = X509Certificate::from_der(&certificate_der)
            .map_err(|e| CaError::Certificate(e.to_string()))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CaError::Certificate(
                "the certificate does not belong to the private key".to_owned(),
            ));
        }
        let issuer = Issuer::from_ca_cert_pem(certificate_pem, key)
            .map_err(|e| CaError::Certificate(e.to_string()))?;
        Ok(Self {
            issuer,
            certificate_pem: certificate_pem.to_owned(),
            certificate_der,
        })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA certificate, parsed (it parsed in `from_pem`, so this is `Some`).
    pub fn certificate(&self) -> Option<X509Certificate<'_>> {
        X509Certificate::from_der(&self.certificate_der)
            .ok()
            .map(|(_, c)| c)
    }

    pub fn pin(&self) -> Pin {
        let spki = self
            .certificate()
            .map(|c| c.public_key().raw.to_vec())
            .unwrap_or_default();
        let digest = Sha256::digest(spki);
        Pin {
            sha256_base64: STANDARD.encode(digest),
            sha256_hex: digest.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Whether `certificate` carries this CA's signature and names it as issuer.
    pub fn issued(&self, certificate: &X509Certificate<'_>) -> bool {
        self.certificate().is_some_and(|ca| {
            certificate.issuer() == ca.subject()
                && certificate.verify_signature(Some(ca.public_key())).is_ok()
        })
    }

    /// Issues a client certificate for `device` on `platform` with the CSR's key.
    pub fn issue(
        &self,
        csr: &CheckedCsr,
        device: &DeviceId,
        platform: Platform,
        now: DateTime<Utc>,
    ) -> Result<Issued, CaError> {
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(|_| CaError::Entropy)?;
        serial[0] &= 0x7f;
        serial[0] |= 0x10; // positive and always 16 bytes, so the hex form has 32 digits
        let not_before = DateTime::<Utc>::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        let not_after = not_before + Duration::days(platform.validity_days());

        let mut params = CertificateParams::default();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, device.as_str());
        subject.push(DnType::OrganizationName, "Apuntador Devices");
        params.distinguished_name = subject;
        params.not_before = to_time(not_before)?;
        params.not_after = to_time(not_after)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let public_key = SubjectPublicKeyInfo::from_der(&csr.public_key_der)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let certificate = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let serial =
            Serial::from_bytes(&serial).ok_or_else(|| CaError::Signing("serial".to_owned()))?;
        let issued_at =
            DateTime::<Utc>::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        Ok(Issued {
            pem: certificate.pem(),
            serial,
            issued_at,
            expires_at: issued_at + Duration::days(platform.validity_days()),
        })
    }

    /// A new CA (ECDSA P-256, self-signed, `C=ES, O=Apuntador, CN=Apuntador Certificate
    /// Authority`, basicConstraints CA critical, keyCertSign + cRLSign): `(key_pem, cert_pem)`.
    pub fn create(days: i64) -> Result<(String, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Key(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CountryName, "ES");
        subject.push(DnType::OrganizationName, "Apuntador");
        subject.push(DnType::CommonName, "Apuntador Certificate Authority");
        params.distinguished_name = subject;
        let now = Utc::now();
        params.not_before = to_time(now)?;
        params.not_after = to_time(now + Duration::days(days))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let certificate = params
            .self_signed(&key)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        Ok((key.serialize_pem(), certificate.pem()))
    }
}

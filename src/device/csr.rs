//! Certificate signing requests: PEM parsing, the self-signature check, and the key policy
//! (RSA ≥ 2048 bits, EC P-256 or P-384, Ed25519). The CSR's subject, attributes and requested
//! extensions are ignored: the certificate's content is decided by the CA.

use thiserror::Error;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CsrError {
    #[error("csr is not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----)")]
    NotPem,
    #[error("csr could not be parsed as PKCS#10")]
    Unparsable,
    #[error("csr signature is invalid: the request was not signed by the key it carries")]
    BadSignature,
    #[error("key not allowed: {0}; use RSA of at least 2048 bits, EC P-256 or P-384, or Ed25519")]
    KeyPolicy(String),
}

/// A CSR whose signature and key passed: what the CA needs from it.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    /// DER SubjectPublicKeyInfo of the requested key.
    pub public_key_der: Vec<u8>,
}

pub fn check(pem: &str) -> Result<CheckedCsr, CsrError> {
    let (_, parsed) =
        x509_parser::pem::parse_x509_pem(pem.trim().as_bytes()).map_err(|_| CsrError::NotPem)?;
    if parsed.label != "CERTIFICATE REQUEST" && parsed.label != "NEW CERTIFICATE REQUEST" {
        return Err(CsrError::NotPem);
    }
    let (rest, csr) =
        X509CertificationRequest::from_der(&parsed.contents).map_err(|_| CsrError::Unparsable)?;
    if !rest.is_empty() {
        return Err(CsrError::Unparsable);
    }
    let spki = &csr.certification_request_info.subject_pki;
    key_policy(spki)?;
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    Ok(CheckedCsr {
        public_key_der: spki.raw.to_vec(),
    })
}

fn key_policy(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<(), CsrError> {
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == OID_SIG_ED25519 {
        return Ok(());
    }
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| CsrError::KeyPolicy("EC key without a named curve".to_owned()))?;
        return if curve == OID_EC_P256 || curve == OID_NIST_EC_P384 {
            Ok(())
        } else {
            Err(CsrError::KeyPolicy(format!(
                "EC curve {curve} is not accepted"
            )))
        };
    }
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if bits >= 2048 {
                Ok(())
            } else {
                Err(CsrError::KeyPolicy(format!(
                    "RSA key of {bits} bits is too small"
                )))
            }
        }
        _ => Err(CsrError::KeyPolicy(format!(
            "key algorithm {algorithm} is not accepted"
        ))),
    }
}

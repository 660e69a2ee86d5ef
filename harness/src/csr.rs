//! Certificate signing requests for enrollment tests: a fresh P-256 key and its CSR (PEM), with
//! the key's SubjectPublicKeyInfo (DER) an attested enrollment commits to.

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};

pub struct Csr {
    /// The request, PEM.
    pub pem: String,
    /// The key's SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

/// A CSR for a new P-256 key.
pub fn p256() -> Csr {
    let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let params = CertificateParams::new(vec!["ignored-by-the-ca".to_owned()]).expect("params");
    let request = params.serialize_request(&pair).expect("CSR");
    Csr {
        pem: request.pem().expect("PEM"),
        spki_der: pair.subject_public_key_info(),
    }
}

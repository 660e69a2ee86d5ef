//! The client-certificate guard (spec §4.6, redesigned).
//!
//! Where the certificate comes from: under Lambda only the API Gateway mutual-TLS context of the
//! event (`requestContext.authentication.clientCert.clientCertPem`, which API Gateway fills after
//! the TLS handshake proved possession of the key); in server mode only the header the operator
//! names in `TRUSTED_CLIENT_CERT_HEADER` (ALB's `X-Amzn-Mtls-Clientcert`, `X-Client-Cert`, or
//! Envoy's `X-Forwarded-Client-Cert`), because only a proxy that terminated mutual TLS can vouch
//! for it. Always verified: the signature chains to our CA, the validity window, the serial is
//! registered and not revoked (and the stored certificate is the one presented), and the device
//! id in the subject is the one the request acts on (checked by the routes). Missing → 401,
//! anything else → 403.

use axum::http::request::Parts;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use percent_encoding::percent_decode_str;
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::id::{DeviceId, Serial};
use super::service::DeviceService;

/// The proxy header a server-mode deployment trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedHeader {
    /// ALB mutual TLS: URL-encoded PEM.
    AmznMtlsClientCert,
    /// `X-Client-Cert`: URL-encoded PEM (nginx `$ssl_client_escaped_cert`).
    ClientCert,
    /// Envoy XFCC: `…;Cert="<URL-encoded PEM>";…`.
    ForwardedClientCert,
}

impl TrustedHeader {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "x-amzn-mtls-clientcert" => Some(Self::AmznMtlsClientCert),
            "x-client-cert" => Some(Self::ClientCert),
            "x-forwarded-client-cert" => Some(Self::ForwardedClientCert),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::AmznMtlsClientCert => "x-amzn-mtls-clientcert",
            Self::ClientCert => "x-client-cert",
            Self::ForwardedClientCert => "x-forwarded-client-cert",
        }
    }
}

/// Who the certificate says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub device_id: DeviceId,
    pub serial: Serial,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GuardError {
    #[error("a client certificate is required for this endpoint")]
    Missing,
    #[error("client certificate rejected: {0}")]
    Rejected(&'static str),
    #[error("client certificate cannot be checked right now")]
    Unavailable,
}

/// The presented certificate's PEM, from wherever this deployment trusts.
pub fn presented_pem(parts: &Parts, trusted: Option<TrustedHeader>) -> Option<String> {
    if parts.extensions.lambda_context_ref().is_some()
        || parts.extensions.request_context_ref().is_some()
    {
        return match parts.extensions.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx
                .authentication
                .as_ref()
                .and_then(|a| a.client_cert.as_ref())
                .and_then(|c| c.client_cert_pem.clone())
                .filter(|p| !p.trim().is_empty()),
            _ => None,
        };
    }
    let header = trusted?;
    let raw = parts.headers.get(header.name())?.to_str().ok()?.trim();
    let encoded = match header {
        TrustedHeader::ForwardedClientCert => raw
            .split(';')
            .filter_map(|kv| kv.trim().strip_prefix("Cert="))
            .next()?
            .trim_matches('"'),
        _ => raw,
    };
    let pem = percent_decode_str(encoded).decode_utf8().ok()?.into_owned();
    (!pem.trim().is_empty()).then_some(pem)
}

/// Verifies a presented certificate against the CA and the store.
pub async fn verify(pem: &str, devices: &DeviceService) -> Result<DeviceIdentity, GuardError> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes())
        .map_err(|_| GuardError::Rejected("not a PEM certificate"))?;
    let (_, certificate) = X509Certificate::from_der(&parsed.contents)
        .map_err(|_| GuardError::Rejected("not an X.509 certificate"))?;
    let ca = devices
        .authority()
        .await
        .map_err(|_| GuardError::Unavailable)?;
    if !ca.issued(&certificate) {
        return Err(GuardError::Rejected("not issued by this CA"));
    }
    if !certificate.validity().is_valid() {
        return Err(GuardError::Rejected("expired or not yet valid"));
    }
    let serial = Serial::from_bytes(certificate.raw_serial())
        .ok_or(GuardError::Rejected("unknown serial"))?;
    let record = devices
        .store()
        .by_serial(&serial)
        .await
        .map_err(|_| GuardError::Unavailable)?
        .ok_or(GuardError::Rejected("unknown serial"))?;
    if record.revoked {
        return Err(GuardError::Rejected("revoked"));
    }
    let stored = x509_parser::pem::parse_x509_pem(record.certificate_pem.as_bytes())
        .map(|(_, p)| p.contents)
        .unwrap_or_default();
    if stored != parsed.contents {
        return Err(GuardError::Rejected(
            "does not match the registered certificate",
        ));
    }
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(GuardError::Rejected("no device id in the subject"))?;
    let device_id = DeviceId::parse(common_name)
        .map_err(|_| GuardError::Rejected("no device id in the subject"))?;
    if device_id != record.device_id {
        return Err(GuardError::Rejected("does not match the registered device"));
    }
    Ok(DeviceIdentity { device_id, serial })
}

//! The client-certificate guard (spec §4.6, redesigned).
//!
//! Where the certificate comes from: under Lambda the API Gateway mutual-TLS context of the
//! event (`requestContext.authentication.clientCert.clientCertPem`, which API Gateway fills after
//! the TLS handshake proved possession of the key); in server mode only the header the operator
//! names in `TRUSTED_CLIENT_CERT_HEADER` (ALB's `X-Amzn-Mtls-Clientcert`, `X-Client-Cert`, or
//! Envoy's `X-Forwarded-Client-Cert`), because only a proxy that terminated mutual TLS can vouch
//! for it. Under Lambda that header counts only with `ENVIRONMENT=local` (`sam local`, which
//! has no mutual TLS; configuration decides). Always verified: the signature chains to our CA,
//! the validity window, the certificate is its device's current, unrevoked record (the very DER
//! stored there; one strongly consistent read, see [`super::store`]), and the device id in the
//! subject is the one the request acts on (checked by the routes). Missing → 401, an ambiguous proxy header (two
//! lines, two certificates, malformed XFCC) → 400, anything else → 403.

use axum::http::request::Parts;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use percent_encoding::percent_decode_str;
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::id::{DeviceId, Serial};
use super::service::DeviceService;
use super::store::CertificateRecord;

/// The proxy header a server-mode deployment trusts.
///
/// Only one value is ever used, and only the one the nearest proxy wrote: a request with more
/// than one line of the header is refused (a proxy that adds a line instead of replacing it
/// would otherwise let the client's own line win), and so is a value holding more than one
/// certificate. For Envoy's XFCC, whose value is a `,`-separated list of elements (one per
/// proxy hop, `APPEND_FORWARD` appends), the **last** element is the one the nearest trusted
/// proxy added, so it alone is read; earlier elements came from further away, or from the
/// client, and are ignored. If that element carries no `Cert`, the proxy saw no client
/// certificate and the request has none (401), whatever earlier elements say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedHeader {
    /// ALB mutual TLS: URL-encoded PEM.
    AmznMtlsClientCert,
    /// `X-Client-Cert`: URL-encoded PEM (nginx `$ssl_client_escaped_cert`).
    ClientCert,
    /// Envoy XFCC: `By=…;Hash=…;Cert="<URL-encoded PEM>";…[,<next element>]`.
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

    pub fn name(self) -> &'static str {
        match self {
            Self::AmznMtlsClientCert => "x-amzn-mtls-clientcert",
            Self::ClientCert => "x-client-cert",
            Self::ForwardedClientCert => "x-forwarded-client-cert",
        }
    }

    /// The URL-encoded PEM in one header value, `None` when the value says there is none.
    fn encoded_certificate(self, value: &str) -> Result<Option<String>, GuardError> {
        match self {
            Self::ForwardedClientCert => xfcc_certificate(value),
            // URL-encoded PEM has no bare `,`: one means two values were joined.
            _ if value.contains(',') => Err(GuardError::Ambiguous(
                "the client-certificate header holds more than one value",
            )),
            _ => Ok(Some(value.to_owned()).filter(|v| !v.is_empty())),
        }
    }
}

/// The `Cert` of the last XFCC element (see [`TrustedHeader`]).
fn xfcc_certificate(value: &str) -> Result<Option<String>, GuardError> {
    if value.is_empty() {
        return Ok(None);
    }
    let malformed = GuardError::Ambiguous("the X-Forwarded-Client-Cert header is malformed");
    let elements = split_unquoted(value, ',').ok_or(malformed.clone())?;
    let nearest = elements.last().ok_or(malformed.clone())?;
    let mut cert = None;
    for pair in split_unquoted(nearest, ';').ok_or(malformed.clone())? {
        let (key, raw) = pair.split_once('=').ok_or(malformed.clone())?;
        if key.trim().eq_ignore_ascii_case("cert") {
            if cert.is_some() {
                return Err(GuardError::Ambiguous(
                    "the X-Forwarded-Client-Cert element holds more than one Cert",
                ));
            }
            cert = Some(unquote(raw.trim()).ok_or(malformed.clone())?);
        }
    }
    Ok(cert.filter(|c| !c.is_empty()))
}

/// `raw` split at `separator` outside double-quoted values (where `\` escapes the next
/// character), each part trimmed; `None` for an unterminated quote or an empty part.
fn split_unquoted(raw: &str, separator: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (at, c) in raw.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(raw[start..at].trim());
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(raw[start..].trim());
    (!quoted && parts.iter().all(|p| !p.is_empty())).then_some(parts)
}

/// A value as XFCC writes it: bare, or double-quoted with `\` escapes.
fn unquote(raw: &str) -> Option<String> {
    let Some(inner) = raw.strip_prefix('"') else {
        return (!raw.contains('"')).then(|| raw.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GuardError {
    #[error("a client certificate is required for this endpoint")]
    Missing,
    #[error("client certificate rejected: {0}")]
    Rejected(&'static str),
    #[error("client certificate cannot be checked right now")]
    Unavailable,
    /// The proxy header does not say unambiguously which certificate the proxy verified.
    #[error("{0}")]
    Ambiguous(&'static str),
}

/// The presented certificate's PEM, from wherever this deployment trusts; `Ok(None)` when
/// there is none, an error when the trusted header is ambiguous (see [`TrustedHeader`]).
pub fn presented_pem(
    parts: &Parts,
    trusted: Option<TrustedHeader>,
) -> Result<Option<String>, GuardError> {
    if let Some(RequestContext::ApiGatewayV2(ctx)) = parts.extensions.request_context_ref()
        && let Some(pem) = ctx
            .authentication
            .as_ref()
            .and_then(|a| a.client_cert.as_ref())
            .and_then(|c| c.client_cert_pem.as_ref())
            .filter(|p| !p.trim().is_empty())
    {
        return Ok(Some(pem.clone()));
    }
    // Configuration names a header only where a proxy vouches for it (never under Lambda
    // outside `sam local`, see `DeviceSettings::trusted_cert_header`).
    let Some(header) = trusted else {
        return Ok(None);
    };
    let mut values = parts.headers.get_all(header.name()).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(GuardError::Ambiguous(
                "the client-certificate header appears more than once",
            ));
        }
        (Some(value), None) => value,
    };
    let value = value
        .to_str()
        .map_err(|_| GuardError::Ambiguous("the client-certificate header is not visible ASCII"))?;
    let Some(encoded) = header.encoded_certificate(value.trim())? else {
        return Ok(None);
    };
    let pem = percent_decode_str(&encoded)
        .decode_utf8()
        .map_err(|_| GuardError::Rejected("not a URL-encoded PEM certificate"))?;
    if pem.matches("-----BEGIN").count() > 1 {
        return Err(GuardError::Ambiguous(
            "the client-certificate header holds more than one certificate",
        ));
    }
    Ok(Some(pem.into_owned()).filter(|p| !p.trim().is_empty()))
}

/// Verifies a presented certificate against the CA and the store. On success it is its device's
/// current record, returned as the guard read it (strongly consistent, just now) so routes need
/// not read it again: its `device_id` and `serial` are the caller's.
pub async fn verify(pem: &str, devices: &DeviceService) -> Result<CertificateRecord, GuardError> {
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
    // The subject is ours (the signature checked out), so it names the device whose current
    // record decides: one strongly consistent read of a known key.
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(GuardError::Rejected("no device id in the subject"))?;
    let device_id = DeviceId::parse(common_name)
        .map_err(|_| GuardError::Rejected("no device id in the subject"))?;
    let current = devices
        .store()
        .current(&device_id)
        .await
        .map_err(|_| GuardError::Unavailable)?
        .ok_or(GuardError::Rejected("unknown serial"))?;
    if current.serial != serial {
        return Err(GuardError::Rejected(
            "not the device's current certificate (superseded, revoked or unknown)",
        ));
    }
    if current.revoked {
        return Err(GuardError::Rejected("revoked"));
    }
    let stored = x509_parser::pem::parse_x509_pem(current.certificate_pem.as_bytes())
        .map(|(_, p)| p.contents)
        .unwrap_or_default();
    if stored != parsed.contents {
        return Err(GuardError::Rejected(
            "does not match the registered certificate",
        ));
    }
    Ok(current)
}

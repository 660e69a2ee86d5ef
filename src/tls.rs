//! TLS for every outgoing HTTP client this process builds (provider calls, the OTLP exporter):
//! rustls with aws-lc-rs (the crypto the AWS SDK uses too) and Mozilla's roots compiled in
//! (`webpki-roots`). Loading the system store instead opens one file per certificate, which cost
//! ~7 ms of cold start per client built; the price is that roots update with the crate, not the OS.

pub fn client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn builds_with_compiled_in_roots_and_http1_only() {
        let config = super::client_config().unwrap();
        assert!(config.alpn_protocols.is_empty());
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
    }
}

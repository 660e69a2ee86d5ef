//! The device CA's settings, read once at start-up through [`crate::env`]: where CA material
//! and certificate records live, whether a development CA may be created, and which proxy
//! header (if any) carries a verified client certificate.

use std::path::PathBuf;

use super::guard::TrustedHeader;
use crate::env::{Env, EnvError, Environment, under_lambda};

/// Where CA material and certificate records live (`INFRASTRUCTURE_PROVIDER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Infrastructure {
    /// Files under `INFRASTRUCTURE_BASE_DIR`.
    Local { base_dir: PathBuf },
    /// Secrets Manager (`AWS_SECRETS_PREFIX`) and DynamoDB (`AWS_DYNAMODB_TABLE`); single-use
    /// claims ([`crate::single_use`]) in `AWS_SINGLE_USE_TABLE`; attestation state in
    /// `AWS_ATTESTATION_TABLE`.
    Aws {
        table: String,
        secrets_prefix: String,
        auto_create: bool,
        single_use_table: String,
        /// Attestation state ([`crate::attestation::store`]), `AWS_ATTESTATION_TABLE`.
        attestation_table: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSettings {
    pub infrastructure: Infrastructure,
    /// Create a development CA when none exists (`ENVIRONMENT=local` with local files only).
    pub create_dev_ca: bool,
    /// The proxy header that carries the verified client certificate: in server mode when
    /// configured; under Lambda only with `ENVIRONMENT=local` (`sam local`, which has no mutual
    /// TLS), since API Gateway passes any header a client sends.
    pub trusted_cert_header: Option<TrustedHeader>,
}

impl DeviceSettings {
    /// Settings for `environment`; what is worth saying at start-up goes to `warnings`.
    pub fn from_env(
        env: Env<'_>,
        environment: &Environment,
        warnings: &mut Vec<String>,
    ) -> Result<Self, EnvError> {
        let infrastructure = match env
            .get("INFRASTRUCTURE_PROVIDER")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("local") => Infrastructure::Local {
                base_dir: env
                    .get("INFRASTRUCTURE_BASE_DIR")
                    .unwrap_or_else(|| "./.credentials".to_owned())
                    .into(),
            },
            Some("aws") => Infrastructure::Aws {
                table: env
                    .get("AWS_DYNAMODB_TABLE")
                    .unwrap_or_else(|| "apuntador-certificates".to_owned()),
                secrets_prefix: env
                    .get("AWS_SECRETS_PREFIX")
                    .unwrap_or_else(|| "apuntador".to_owned()),
                auto_create: env.flag("AUTO_CREATE_RESOURCES", false)?,
                single_use_table: env
                    .get("AWS_SINGLE_USE_TABLE")
                    .unwrap_or_else(|| "apuntador-single-use".to_owned()),
                attestation_table: env
                    .get("AWS_ATTESTATION_TABLE")
                    .unwrap_or_else(|| "apuntador-attestation".to_owned()),
            },
            Some(other) => {
                return Err(EnvError::new(
                    "INFRASTRUCTURE_PROVIDER",
                    other,
                    "expected local or aws",
                ));
            }
        };
        let trusted_cert_header = match env.get("TRUSTED_CLIENT_CERT_HEADER") {
            None => None,
            Some(v) => Some(TrustedHeader::parse(&v).ok_or_else(|| {
                EnvError::new(
                    "TRUSTED_CLIENT_CERT_HEADER",
                    v,
                    "expected X-Amzn-Mtls-Clientcert, X-Client-Cert or X-Forwarded-Client-Cert",
                )
            })?),
        };
        // Under Lambda the header is trusted in `sam local` only, which has no mutual TLS: both
        // ENVIRONMENT=local and AWS_SAM_LOCAL=true (which the SAM CLI sets), so a deployed
        // stack whose stage was named local still trusts nothing a client can write.
        let sam_local = env
            .get("AWS_SAM_LOCAL")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let trusted_cert_header = match trusted_cert_header {
            Some(header) if under_lambda(env) => {
                if environment.is_local() && sam_local {
                    warnings.push(format!(
                        "TRUSTED_CLIENT_CERT_HEADER: trusting {} from any caller under Lambda (ENVIRONMENT=local under sam local)",
                        header.name()
                    ));
                    Some(header)
                } else {
                    warnings.push(
                        "TRUSTED_CLIENT_CERT_HEADER is ignored under Lambda outside sam local (ENVIRONMENT=local and AWS_SAM_LOCAL=true): API Gateway passes any header a client sends, so only its mutual-TLS context is trusted"
                            .to_owned(),
                    );
                    None
                }
            }
            other => other,
        };
        Ok(Self {
            create_dev_ca: environment.is_local()
                && matches!(infrastructure, Infrastructure::Local { .. }),
            infrastructure,
            trusted_cert_header,
        })
    }
}

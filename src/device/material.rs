//! CA material, loaded once per process at the first device request: from local files
//! (`<INFRASTRUCTURE_BASE_DIR>/ca_private_key.pem`, `ca_certificate.pem`) or from Secrets
//! Manager (`<AWS_SECRETS_PREFIX>/ca-private-key`, `…/ca-certificate`, PEM in `SecretString`).
//!
//! In local development a missing CA is created on first use (with a loud warning) so a new
//! user's first run works; `apuntador-backend create-ca` creates one deliberately.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::ca::{CaError, CertificateAuthority};
use crate::load_once::LoadOnce;
use crate::telemetry::aws::{aws_error_text, traced};

pub const KEY_FILE: &str = "ca_private_key.pem";
pub const CERT_FILE: &str = "ca_certificate.pem";
const RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MaterialError {
    #[error("CA material is missing: {0}")]
    Missing(String),
    #[error("CA material cannot be loaded: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Invalid(#[from] CaError),
}

#[derive(Debug, Clone)]
pub enum CaSource {
    Files {
        dir: PathBuf,
        create_if_missing: bool,
    },
    SecretsManager {
        prefix: String,
    },
}

#[derive(Debug)]
pub struct CaProvider {
    source: CaSource,
    ca: LoadOnce<Arc<CertificateAuthority>, MaterialError>,
}

impl CaProvider {
    pub fn new(source: CaSource) -> Self {
        Self {
            source,
            ca: LoadOnce::new(RETRY_AFTER),
        }
    }

    pub async fn get(&self) -> Result<Arc<CertificateAuthority>, MaterialError> {
        self.ca
            .get(|| async {
                self.load()
                    .await
                    .inspect_err(|e| tracing::error!(error = %e, "the device CA is unavailable"))
            })
            .await
            .cloned()
    }

    async fn load(&self) -> Result<Arc<CertificateAuthority>, MaterialError> {
        let (key, cert) = match &self.source {
            CaSource::Files {
                dir,
                create_if_missing,
            } => read_files(dir, *create_if_missing).await?,
            CaSource::SecretsManager { prefix } => read_secrets(prefix).await?,
        };
        Ok(Arc::new(CertificateAuthority::from_pem(&key, &cert)?))
    }
}

/// Writes a new CA into `dir` (key mode 0600, directory 0700); refuses to overwrite one.
pub async fn create_files(dir: &Path, days: i64) -> Result<(PathBuf, PathBuf), MaterialError> {
    let (key_path, cert_path) = (dir.join(KEY_FILE), dir.join(CERT_FILE));
    if tokio::fs::try_exists(&key_path).await.unwrap_or(false)
        || tokio::fs::try_exists(&cert_path).await.unwrap_or(false)
    {
        return Err(MaterialError::Unavailable(format!(
            "a CA already exists in {}",
            dir.display()
        )));
    }
    let (key, cert) = CertificateAuthority::create(days)?;
    let io = |e: std::io::Error| MaterialError::Unavailable(e.to_string());
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(io)?;
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true).mode(0o600);
        use tokio::io::AsyncWriteExt;
        options
            .open(&key_path)
            .await
            .map_err(io)?
            .write_all(key.as_bytes())
            .await
            .map_err(io)?;
    }
    #[cfg(not(unix))]
    tokio::fs::write(&key_path, key).await.map_err(io)?;
    tokio::fs::write(&cert_path, cert).await.map_err(io)?;
    Ok((key_path, cert_path))
}

async fn read_files(
    dir: &Path,
    create_if_missing: bool,
) -> Result<(String, String), MaterialError> {
    let key_path = dir.join(KEY_FILE);
    if create_if_missing && !tokio::fs::try_exists(&key_path).await.unwrap_or(false) {
        create_files(dir, 1825).await?;
        tracing::warn!(
            directory = %dir.display(),
            "!!! NO DEVICE CA FOUND: CREATED A DEVELOPMENT CA. Its key is a local file; do not use it in production (see `apuntador-backend create-ca` and INFRASTRUCTURE_PROVIDER=aws) !!!"
        );
    }
    let read = |path: PathBuf| async move {
        tokio::fs::read_to_string(&path).await.map_err(|e| {
            MaterialError::Missing(format!(
                "{}: {e}; run `apuntador-backend create-ca --dir {}`",
                path.display(),
                dir.display()
            ))
        })
    };
    Ok((read(key_path).await?, read(dir.join(CERT_FILE)).await?))
}

async fn read_secrets(prefix: &str) -> Result<(String, String), MaterialError> {
    let client = crate::aws::secrets_manager().await;
    let mut values = Vec::new();
    for name in ["ca-private-key", "ca-certificate"] {
        let id = format!("{prefix}/{name}");
        let output = traced(
            "SecretsManager",
            "GetSecretValue",
            client.get_secret_value().secret_id(&id).send(),
        )
        .await
        .map_err(|e| match e.as_service_error() {
            Some(s) if s.is_resource_not_found_exception() => {
                MaterialError::Missing(format!("secret {id} not found"))
            }
            _ => MaterialError::Unavailable(aws_error_text(&e)),
        })?;
        let text = output
            .secret_string()
            .ok_or_else(|| MaterialError::Missing(format!("secret {id} has no SecretString")))?;
        values.push(text.to_owned());
    }
    let cert = values.pop().unwrap_or_default();
    let key = values.pop().unwrap_or_default();
    Ok((key, cert))
}

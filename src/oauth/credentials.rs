//! OAuth client ids and secrets: from the environment (`GOOGLE_CLIENT_ID`, `GOOGLE_CLIENT_SECRET`,
//! `DROPBOX_…`, `ONEDRIVE_…`) or from one JSON secret in AWS Secrets Manager
//! (`OAUTH_CREDENTIALS_SECRET`, holding the same keys).
//!
//! The secret is read at the first OAuth request of a process (not at start, so health checks
//! and cold starts never wait for it) and cached for the life of the process. If Secrets Manager
//! cannot be reached the OAuth routes answer 503 and the read is tried again after a short pause;
//! every other route keeps working.

use std::collections::HashMap;
use std::time::Duration;

use thiserror::Error;

use super::provider::ProviderId;
use crate::env::Secret;
use crate::load_once::LoadOnce;

/// Pause before Secrets Manager is asked again after a failed read.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// One provider's client credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Option<Secret>,
}

/// `<PREFIX>_CLIENT_ID` / `<PREFIX>_CLIENT_SECRET` for every provider, from `lookup`.
pub fn credentials_from(
    lookup: &dyn Fn(&str) -> Option<String>,
) -> HashMap<ProviderId, ClientCredentials> {
    let get = |name: String| {
        lookup(&name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    ProviderId::ALL
        .into_iter()
        .filter_map(|provider| {
            let prefix = provider.credential_prefix();
            let client_id = get(format!("{prefix}_CLIENT_ID"))?;
            let client_secret = get(format!("{prefix}_CLIENT_SECRET")).map(Secret::new);
            Some((
                provider,
                ClientCredentials {
                    client_id,
                    client_secret,
                },
            ))
        })
        .collect()
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("OAuth client credentials are unavailable: {0}")]
    Unavailable(String),
}

/// Where credentials come from.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    Environment(HashMap<ProviderId, ClientCredentials>),
    SecretsManager { secret_id: String },
}

/// Credentials, loaded once per process.
#[derive(Debug)]
pub struct CredentialStore {
    source: CredentialSource,
    loaded: LoadOnce<HashMap<ProviderId, ClientCredentials>, CredentialsError>,
}

impl CredentialStore {
    pub fn new(source: CredentialSource) -> Self {
        Self {
            source,
            loaded: LoadOnce::new(RETRY_AFTER),
        }
    }

    /// The provider's credentials, `Ok(None)` when it has none configured.
    pub async fn get(
        &self,
        provider: ProviderId,
    ) -> Result<Option<ClientCredentials>, CredentialsError> {
        let all = match &self.source {
            CredentialSource::Environment(map) => map,
            CredentialSource::SecretsManager { secret_id } => {
                self.loaded
                    .get(|| async {
                        read_secret(secret_id).await.inspect_err(|e| {
                            tracing::warn!(error = %e, "could not read OAuth credentials from Secrets Manager")
                        })
                    })
                    .await?
            }
        };
        Ok(all.get(&provider).cloned())
    }
}

/// The clients from the secret's JSON (values that are not strings count as absent).
async fn read_secret(
    secret_id: &str,
) -> Result<HashMap<ProviderId, ClientCredentials>, CredentialsError> {
    let values = crate::aws::secret_json(secret_id)
        .await
        .map_err(CredentialsError::Unavailable)?;
    Ok(credentials_from(&|name| {
        values.get(name).and_then(|v| v.as_str()).map(str::to_owned)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_provider_and_skips_the_unconfigured() {
        let vars: HashMap<&str, &str> = HashMap::from([
            ("GOOGLE_CLIENT_ID", "g-id"),
            ("GOOGLE_CLIENT_SECRET", "g-secret"),
            ("DROPBOX_CLIENT_ID", "d-id"),
            ("ONEDRIVE_CLIENT_ID", " "),
        ]);
        let creds = credentials_from(&|n| vars.get(n).map(|v| v.to_string()));
        assert_eq!(
            creds[&ProviderId::GoogleDrive]
                .client_secret
                .as_ref()
                .unwrap()
                .expose(),
            "g-secret"
        );
        assert_eq!(creds[&ProviderId::Dropbox].client_secret, None);
        assert!(!creds.contains_key(&ProviderId::OneDrive));
    }
}

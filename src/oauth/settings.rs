//! The OAuth broker's settings, read once at start-up through [`crate::env`]: which providers
//! this deployment offers (`ENABLED_CLOUD_PROVIDERS`), their endpoints and backend callbacks,
//! the redirect allowlist, where client credentials come from, and the provider call bounds.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use url::Url;

use super::credentials::{CredentialSource, credentials_from};
use super::provider::{Endpoints, ProviderId, callback_uri};
use super::redirect::RedirectAllowlist;
use crate::env::{Env, EnvError};

#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// The providers the routes serve; the others answer 403.
    pub enabled: BTreeSet<ProviderId>,
    pub endpoints: HashMap<ProviderId, Endpoints>,
    /// Backend callbacks registered with providers that redirect here first.
    pub callbacks: HashMap<ProviderId, Url>,
    pub allowlist: RedirectAllowlist,
    /// Where the callback sends users when it cannot trust the state.
    pub fallback_redirect: String,
    pub credentials: CredentialSource,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

impl OAuthSettings {
    pub fn from_env(env: Env<'_>) -> Result<Self, EnvError> {
        let mut endpoints = HashMap::new();
        let mut callbacks = HashMap::new();
        for provider in ProviderId::ALL {
            endpoints.insert(provider, Endpoints::from_env(provider, env)?);
            if let Some(url) = callback_uri(provider, env)? {
                callbacks.insert(provider, url);
            }
        }
        let fallback_redirect = env
            .get("OAUTH_FALLBACK_REDIRECT_URI")
            .unwrap_or_else(|| "apuntador://oauth-callback".to_owned());
        if Url::parse(&fallback_redirect).is_err() {
            return Err(EnvError::new(
                "OAUTH_FALLBACK_REDIRECT_URI",
                fallback_redirect,
                "expected an absolute URI",
            ));
        }
        let credentials = match env.get("OAUTH_CREDENTIALS_SECRET") {
            Some(secret_id) => CredentialSource::SecretsManager { secret_id },
            None => CredentialSource::Environment(credentials_from(&|name| env.get(name))),
        };
        Ok(Self {
            enabled: enabled_providers(env)?,
            endpoints,
            callbacks,
            allowlist: RedirectAllowlist::parse(
                env.get("ALLOWED_REDIRECT_URIS")
                    .as_deref()
                    .unwrap_or("apuntador://"),
            )?,
            fallback_redirect,
            credentials,
            connect_timeout: env.millis("OAUTH_CONNECT_TIMEOUT_MS", 2_000)?,
            timeout: env.millis("OAUTH_TIMEOUT_MS", 5_000)?,
        })
    }
}

/// `ENABLED_CLOUD_PROVIDERS` (default `googledrive,dropbox`), any case.
fn enabled_providers(env: Env<'_>) -> Result<BTreeSet<ProviderId>, EnvError> {
    let raw = env
        .get("ENABLED_CLOUD_PROVIDERS")
        .unwrap_or_else(|| "googledrive,dropbox".to_owned());
    crate::env::split_list(&raw)
        .iter()
        .map(|name| {
            ProviderId::parse(&name.to_ascii_lowercase()).ok_or_else(|| {
                EnvError::new(
                    "ENABLED_CLOUD_PROVIDERS",
                    raw.clone(),
                    format!(
                        "unknown provider {:?}; known providers are {}",
                        name.to_ascii_lowercase(),
                        ProviderId::ALL.map(ProviderId::as_str).join(", ")
                    ),
                )
            })
        })
        .collect()
}

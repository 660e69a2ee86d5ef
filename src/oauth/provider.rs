//! The three cloud-drive providers: identifiers, endpoints (overridable per provider with
//! `OAUTH_<PROVIDER>_AUTHORIZE_URL`, `_TOKEN_URL`, `_REVOKE_URL`, so tests run against doubles),
//! scopes, and where each one redirects after consent.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::env::{Env, EnvError};

/// A provider the broker knows (also the path parameter's schema in the API document).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[schema(as = Provider, rename_all = "lowercase")]
pub enum ProviderId {
    #[serde(rename = "googledrive")]
    GoogleDrive,
    #[serde(rename = "dropbox")]
    Dropbox,
    #[serde(rename = "onedrive")]
    OneDrive,
}

impl ProviderId {
    pub const ALL: [ProviderId; 3] = [Self::GoogleDrive, Self::Dropbox, Self::OneDrive];

    /// The path segment (`googledrive`, `dropbox`, `onedrive`); exact and case-sensitive.
    pub fn parse(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == segment)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GoogleDrive => "googledrive",
            Self::Dropbox => "dropbox",
            Self::OneDrive => "onedrive",
        }
    }

    /// Prefix of the credential variables (`GOOGLE_CLIENT_ID`, `DROPBOX_…`, `ONEDRIVE_…`).
    pub fn credential_prefix(self) -> &'static str {
        match self {
            Self::GoogleDrive => "GOOGLE",
            Self::Dropbox => "DROPBOX",
            Self::OneDrive => "ONEDRIVE",
        }
    }

    /// Whether the client secret is required (Dropbox works as a PKCE-only public client).
    pub fn requires_secret(self) -> bool {
        !matches!(self, Self::Dropbox)
    }

    /// Scopes asked for at authorization (`None`: the app console's scopes apply).
    pub fn scope(self) -> Option<&'static str> {
        match self {
            Self::GoogleDrive => Some("https://www.googleapis.com/auth/drive"),
            Self::Dropbox => None,
            Self::OneDrive => Some("offline_access Files.ReadWrite"),
        }
    }

    /// Extra authorization parameters that ask for a refresh token.
    pub fn offline_params(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::GoogleDrive => &[("access_type", "offline"), ("prompt", "consent")],
            Self::Dropbox => &[("token_access_type", "offline")],
            Self::OneDrive => &[],
        }
    }

    /// Whether the provider sends the user back to this backend's callback (which then
    /// redirects to the app) rather than straight to the app.
    pub fn uses_backend_callback(self) -> bool {
        !matches!(self, Self::Dropbox)
    }
}

impl std::fmt::Display for ProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub authorize: Url,
    pub token: Url,
    /// `None` for OneDrive: the Microsoft identity platform has no revocation endpoint.
    pub revoke: Option<Url>,
}

fn defaults(provider: ProviderId) -> (&'static str, &'static str, Option<&'static str>) {
    match provider {
        ProviderId::GoogleDrive => (
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://oauth2.googleapis.com/token",
            Some("https://oauth2.googleapis.com/revoke"),
        ),
        ProviderId::Dropbox => (
            "https://www.dropbox.com/oauth2/authorize",
            "https://api.dropboxapi.com/oauth2/token",
            Some("https://api.dropboxapi.com/2/auth/token/revoke"),
        ),
        ProviderId::OneDrive => (
            "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
            "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            None,
        ),
    }
}

fn env_url(
    env: Env<'_>,
    name: &'static str,
    default: Option<&str>,
) -> Result<Option<Url>, EnvError> {
    let value = env.get(name);
    let Some(raw) = value.as_deref().or(default) else {
        return Ok(None);
    };
    let url = Url::parse(raw).map_err(|e| EnvError::new(name, raw, e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(EnvError::new(name, raw, "expected an http(s) URL"));
    }
    Ok(Some(url))
}

/// Which endpoint an override variable names.
#[derive(Clone, Copy)]
enum Endpoint {
    Authorize,
    Token,
    Revoke,
}

fn var_name(provider: ProviderId, endpoint: Endpoint) -> &'static str {
    use Endpoint::*;
    use ProviderId::*;
    match (provider, endpoint) {
        (GoogleDrive, Authorize) => "OAUTH_GOOGLEDRIVE_AUTHORIZE_URL",
        (GoogleDrive, Token) => "OAUTH_GOOGLEDRIVE_TOKEN_URL",
        (GoogleDrive, Revoke) => "OAUTH_GOOGLEDRIVE_REVOKE_URL",
        (Dropbox, Authorize) => "OAUTH_DROPBOX_AUTHORIZE_URL",
        (Dropbox, Token) => "OAUTH_DROPBOX_TOKEN_URL",
        (Dropbox, Revoke) => "OAUTH_DROPBOX_REVOKE_URL",
        (OneDrive, Authorize) => "OAUTH_ONEDRIVE_AUTHORIZE_URL",
        (OneDrive, Token) => "OAUTH_ONEDRIVE_TOKEN_URL",
        (OneDrive, Revoke) => "OAUTH_ONEDRIVE_REVOKE_URL",
    }
}

impl Endpoints {
    pub fn from_env(provider: ProviderId, env: Env<'_>) -> Result<Self, EnvError> {
        let (authorize, token, revoke) = defaults(provider);
        let required = |endpoint, default: &str| -> Result<Url, EnvError> {
            let name = var_name(provider, endpoint);
            env_url(env, name, Some(default))?
                .ok_or_else(|| EnvError::new(name, "", "an endpoint URL is required"))
        };
        Ok(Self {
            authorize: required(Endpoint::Authorize, authorize)?,
            token: required(Endpoint::Token, token)?,
            revoke: env_url(env, var_name(provider, Endpoint::Revoke), revoke)?,
        })
    }
}

/// The backend callback registered with a provider (`GOOGLE_REDIRECT_URI`, `ONEDRIVE_REDIRECT_URI`).
pub fn callback_uri(provider: ProviderId, env: Env<'_>) -> Result<Option<Url>, EnvError> {
    if !provider.uses_backend_callback() {
        return Ok(None);
    }
    let name = match provider {
        ProviderId::GoogleDrive => "GOOGLE_REDIRECT_URI",
        _ => "ONEDRIVE_REDIRECT_URI",
    };
    env_url(env, name, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_exact() {
        assert_eq!(
            ProviderId::parse("googledrive"),
            Some(ProviderId::GoogleDrive)
        );
        assert_eq!(ProviderId::parse("GoogleDrive"), None);
        assert_eq!(ProviderId::parse("box"), None);
    }

    #[test]
    fn endpoints_default_and_override() {
        let none = |_: &str| None;
        let e = Endpoints::from_env(ProviderId::OneDrive, Env::new(&none)).unwrap();
        assert_eq!(
            e.token.as_str(),
            "https://login.microsoftonline.com/common/oauth2/v2.0/token"
        );
        assert!(e.revoke.is_none());
        let over = |n: &str| {
            (n == "OAUTH_DROPBOX_TOKEN_URL").then(|| "http://127.0.0.1:9/token".to_owned())
        };
        let e = Endpoints::from_env(ProviderId::Dropbox, Env::new(&over)).unwrap();
        assert_eq!(e.token.as_str(), "http://127.0.0.1:9/token");
        let bad = |n: &str| (n == "OAUTH_GOOGLEDRIVE_AUTHORIZE_URL").then(|| "ftp://x".to_owned());
        let err = Endpoints::from_env(ProviderId::GoogleDrive, Env::new(&bad)).unwrap_err();
        assert!(
            err.to_string().contains("OAUTH_GOOGLEDRIVE_AUTHORIZE_URL"),
            "{err}"
        );
    }
}

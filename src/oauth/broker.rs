//! The OAuth broker: what each route does, in domain terms.
//!
//! `authorize` checks the app's redirect URI against the allowlist, seals a state (provider,
//! redirect URI, the app's CSRF value, the PKCE challenge, expiry) and builds the provider's
//! authorization URL. `callback` turns the provider's redirect into one to the app (always a
//! redirect, errors included). `token` accepts a code only with a state this backend sealed for
//! the same provider and a verifier matching its challenge, once across every process
//! ([`crate::single_use`]). `refresh` and `revoke` pass
//! through to the provider. Client secrets never leave the backend.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use url::Url;

use crate::clock::now_secs;
use crate::keys::sealing::{Sealers, SealingError};
use crate::keys::{Keys, KeysError};
use crate::single_use::{Purpose, SingleUse, SingleUseError};

use super::client::{CallError, ClientBuildError, ProviderClient};
use super::credentials::{ClientCredentials, CredentialStore, CredentialsError};
use super::pkce;
use super::provider::{Endpoints, ProviderId};
use super::redirect::with_query;
use super::settings::OAuthSettings;
use super::state::{self, STATE_TTL_SECONDS, StateClaims, StateError};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BrokerError {
    #[error("unknown provider {0:?}; known providers are googledrive, dropbox and onedrive")]
    UnknownProvider(String),
    #[error("provider {0} is disabled on this deployment")]
    Disabled(ProviderId),
    #[error("provider {0} is not configured on this deployment ({1})")]
    Unconfigured(ProviderId, &'static str),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("redirect_uri is not in this deployment's allowlist (ALLOWED_REDIRECT_URIS)")]
    RedirectNotAllowed,
    #[error("{0}")]
    State(#[from] StateError),
    #[error("the state was issued for provider {0}, not this one")]
    ProviderMismatch(ProviderId),
    #[error("code_verifier does not match the challenge of this authorization")]
    VerifierMismatch,
    #[error("this state was already exchanged for tokens; start the authorization again")]
    StateReused,
    #[error("the state cannot be checked for reuse right now; try again shortly")]
    SingleUse(#[from] SingleUseError),
    #[error("the key that seals OAuth state cannot be read right now; try again shortly")]
    Keys(#[from] KeysError),
    #[error(transparent)]
    Provider(#[from] CallError),
}

impl From<SealingError> for BrokerError {
    fn from(error: SealingError) -> Self {
        match error {
            SealingError::Keys(e) => Self::Keys(e),
            SealingError::Seal(e) => Self::State(e.into()),
        }
    }
}

impl BrokerError {
    /// The OAuth-style error code clients can branch on.
    pub fn code(&self) -> Option<String> {
        Some(match self {
            Self::UnknownProvider(_) => "unknown_provider".to_owned(),
            Self::Disabled(_) | Self::Unconfigured(..) | Self::Credentials(_) => {
                "provider_unavailable".to_owned()
            }
            Self::RedirectNotAllowed => "invalid_redirect_uri".to_owned(),
            Self::State(_) | Self::StateReused | Self::ProviderMismatch(_) => {
                "invalid_state".to_owned()
            }
            Self::VerifierMismatch => "invalid_grant".to_owned(),
            Self::SingleUse(_) => "state_store_unavailable".to_owned(),
            Self::Keys(_) => "keys_unavailable".to_owned(),
            Self::Provider(CallError::Rejected { error, .. }) => error
                .clone()
                .unwrap_or_else(|| "provider_rejected".to_owned()),
            Self::Provider(CallError::Timeout) => "provider_timeout".to_owned(),
            Self::Provider(_) => "provider_error".to_owned(),
        })
    }
}

/// `POST /oauth/authorize` input.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub code_verifier: String,
    pub redirect_uri: String,
    pub state: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Authorization {
    pub authorization_url: String,
    pub state: String,
}

/// What `/token` and `/refresh` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: u64,
    pub token_type: String,
}

#[derive(Debug, Deserialize)]
struct ProviderTokens {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    token_type: Option<String>,
}

/// What `/revoke` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Revocation {
    pub success: bool,
    pub message: &'static str,
}

/// Query of the provider's redirect to `/oauth/callback`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// The error codes of an authorization response (RFC 6749 §4.1.2.1).
const AUTHORIZATION_ERRORS: [&str; 7] = [
    "invalid_request",
    "unauthorized_client",
    "access_denied",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
];

/// A provider's `error` as the app may see it: one of RFC 6749's codes, else `server_error`.
fn authorization_error_code(error: &str) -> &'static str {
    AUTHORIZATION_ERRORS
        .into_iter()
        .find(|code| *code == error)
        .unwrap_or("server_error")
}

/// The broker, built once per process.
#[derive(Debug)]
pub struct Broker {
    settings: OAuthSettings,
    /// Seals and opens states with the keys of the moment ([`crate::keys::sealing`]).
    states: Sealers,
    credentials: CredentialStore,
    client: ProviderClient,
    /// Where exchanged states are recorded: a state is exchanged at most once, across every
    /// process sharing the store ([`crate::single_use`]).
    single_use: Arc<dyn SingleUse>,
}

impl Broker {
    pub fn new(
        settings: OAuthSettings,
        keys: Arc<Keys>,
        single_use: Arc<dyn SingleUse>,
    ) -> Result<Self, ClientBuildError> {
        let client = ProviderClient::new(settings.connect_timeout, settings.timeout)?;
        Ok(Self {
            credentials: CredentialStore::new(settings.credentials.clone()),
            states: Sealers::new(&state::DOMAIN, keys),
            settings,
            client,
            single_use,
        })
    }

    /// Opens `state` and checks its expiry; a state sealed with keys newer than this process
    /// holds opens after one re-read of the keys ([`Sealers::open`]).
    async fn open(&self, state: &str) -> Result<StateClaims, BrokerError> {
        let plaintext = self.states.open(state).await?;
        Ok(state::decode(&plaintext, now_secs())?)
    }

    /// Resolves a path segment to a usable provider and its credentials, the same way on
    /// every route.
    async fn resolve(&self, segment: &str) -> Result<(ProviderId, ClientCredentials), BrokerError> {
        let provider = ProviderId::parse(segment)
            .ok_or_else(|| BrokerError::UnknownProvider(segment.chars().take(40).collect()))?;
        if !self.settings.enabled.contains(&provider) {
            return Err(BrokerError::Disabled(provider));
        }
        let credentials = self
            .credentials
            .get(provider)
            .await?
            .ok_or(BrokerError::Unconfigured(provider, "no client id"))?;
        if provider.requires_secret() && credentials.client_secret.is_none() {
            return Err(BrokerError::Unconfigured(provider, "no client secret"));
        }
        if provider.uses_backend_callback() && !self.settings.callbacks.contains_key(&provider) {
            return Err(BrokerError::Unconfigured(provider, "no redirect URI"));
        }
        Ok((provider, credentials))
    }

    fn endpoints(&self, provider: ProviderId) -> Result<&Endpoints, BrokerError> {
        self.settings
            .endpoints
            .get(&provider)
            .ok_or(BrokerError::Unconfigured(provider, "no endpoints"))
    }

    /// The redirect URI the provider sees: the backend callback, or (Dropbox) the app's own.
    fn provider_redirect<'a>(&'a self, provider: ProviderId, app_redirect: &'a str) -> &'a str {
        self.settings
            .callbacks
            .get(&provider)
            .map_or(app_redirect, Url::as_str)
    }

    pub async fn authorize(
        &self,
        segment: &str,
        request: AuthorizeRequest,
    ) -> Result<Authorization, BrokerError> {
        let (provider, credentials) = self.resolve(segment).await?;
        if !self.settings.allowlist.allows(&request.redirect_uri) {
            return Err(BrokerError::RedirectNotAllowed);
        }
        let now = now_secs();
        let challenge = pkce::challenge(&request.code_verifier);
        let state = self
            .states
            .seal(&state::encode(&StateClaims {
                provider,
                redirect_uri: request.redirect_uri.clone(),
                client_state: request.state.filter(|s| !s.is_empty()),
                code_challenge: challenge.clone(),
                issued_at: now,
                expires_at: now + STATE_TTL_SECONDS,
            })?)
            .await?;
        let mut url = self.endpoints(provider)?.authorize.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("client_id", &credentials.client_id)
                .append_pair("response_type", "code")
                .append_pair(
                    "redirect_uri",
                    self.provider_redirect(provider, &request.redirect_uri),
                );
            if let Some(scope) = provider.scope() {
                query.append_pair("scope", scope);
            }
            query
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("state", &state);
            for (key, value) in provider.offline_params() {
                query.append_pair(key, value);
            }
        }
        Ok(Authorization {
            authorization_url: url.into(),
            state,
        })
    }

    /// The URL the provider's redirect is answered with (always a redirect).
    pub async fn callback(&self, segment: &str, query: &CallbackQuery) -> String {
        let fallback = |error: &str| {
            with_query(
                &self.settings.fallback_redirect,
                &[("error", error), ("provider", segment)],
            )
            .unwrap_or_else(|| self.settings.fallback_redirect.clone())
        };
        let Some(provider) = ProviderId::parse(segment) else {
            return fallback("unknown_provider");
        };
        let Some(state) = query.state.as_deref() else {
            return fallback("invalid_state");
        };
        let claims = match self.open(state).await {
            Ok(claims) => claims,
            // RFC 6749's code for a server that cannot serve now; the app may try again.
            Err(BrokerError::Keys(_)) => return fallback("temporarily_unavailable"),
            Err(_) => return fallback("invalid_state"),
        };
        let to_app = |params: &[(&str, &str)]| {
            with_query(&claims.redirect_uri, params).unwrap_or_else(|| fallback("callback_failed"))
        };
        if claims.provider != provider {
            return to_app(&[("error", "invalid_state"), ("provider", provider.as_str())]);
        }
        if let Some(error) = &query.error {
            // Anyone can mint a state and send a user here with any text: only RFC 6749's codes
            // reach the app, and never the description.
            let params = [
                ("error", authorization_error_code(error)),
                ("state", state),
                ("provider", provider.as_str()),
            ];
            return to_app(&params);
        }
        match query.code.as_deref().filter(|c| !c.is_empty()) {
            Some(code) => to_app(&[
                ("code", code),
                ("state", state),
                ("provider", provider.as_str()),
            ]),
            None => to_app(&[
                ("error", "invalid_request"),
                ("state", state),
                ("provider", provider.as_str()),
            ]),
        }
    }

    pub async fn token(
        &self,
        segment: &str,
        code: &str,
        verifier: &str,
        state: &str,
    ) -> Result<Tokens, BrokerError> {
        let (provider, credentials) = self.resolve(segment).await?;
        let claims = self.open(state).await?;
        if claims.provider != provider {
            return Err(BrokerError::ProviderMismatch(claims.provider));
        }
        if !pkce::matches(verifier, &claims.code_challenge) {
            return Err(BrokerError::VerifierMismatch);
        }
        // Claimed before the provider call, in one atomic step of the store: checking first
        // and recording after success would let two concurrent exchanges both pass. Only a
        // caller holding the verifier gets here, so nobody else can use up a state; a failed
        // provider call uses it up too (the app starts the authorization again).
        let digest: [u8; 32] = Sha256::digest(state.as_bytes()).into();
        let first = self
            .single_use
            .claim(Purpose::OAuthState, &digest, claims.expires_at)
            .await?;
        if !first {
            return Err(BrokerError::StateReused);
        }
        let redirect_uri = self
            .provider_redirect(provider, &claims.redirect_uri)
            .to_owned();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        self.token_call(provider, &credentials, &mut form).await
    }

    pub async fn refresh(&self, segment: &str, refresh_token: &str) -> Result<Tokens, BrokerError> {
        let (provider, credentials) = self.resolve(segment).await?;
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(scope) = provider
            .scope()
            .filter(|_| provider == ProviderId::OneDrive)
        {
            form.push(("scope", scope));
        }
        self.token_call(provider, &credentials, &mut form).await
    }

    /// Revokes a token. Google and Dropbox have revocation endpoints; the Microsoft identity
    /// platform has none, so for OneDrive nothing is sent and `success` is false with a message
    /// saying so (the refresh token stays valid until it expires or the user withdraws consent).
    pub async fn revoke(&self, segment: &str, token: &str) -> Result<Revocation, BrokerError> {
        let (provider, _credentials) = self.resolve(segment).await?;
        let Some(url) = self.endpoints(provider)?.revoke.clone() else {
            return Ok(Revocation {
                success: false,
                message: "OneDrive has no token revocation endpoint; the user withdraws access in their Microsoft account",
            });
        };
        let result = match provider {
            ProviderId::Dropbox => {
                self.client
                    .post_form(provider, &url, &[], Some(token))
                    .await
            }
            _ => {
                self.client
                    .post_form(provider, &url, &[("token", token)], None)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(Revocation {
                success: true,
                message: "Token revoked successfully",
            }),
            // An unknown, expired or already revoked token: nothing left to revoke.
            Err(CallError::Rejected { .. }) => Ok(Revocation {
                success: false,
                message: "Failed to revoke token",
            }),
            Err(other) => Err(other.into()),
        }
    }

    async fn token_call<'a>(
        &self,
        provider: ProviderId,
        credentials: &'a ClientCredentials,
        form: &mut Vec<(&'a str, &'a str)>,
    ) -> Result<Tokens, BrokerError> {
        form.push(("client_id", credentials.client_id.as_str()));
        if let Some(secret) = &credentials.client_secret {
            form.push(("client_secret", secret.expose()));
        }
        let answer = self
            .client
            .post_form(provider, &self.endpoints(provider)?.token, form, None)
            .await?;
        let parsed: ProviderTokens = serde_json::from_slice(&answer.body)
            .map_err(|_| CallError::Upstream("the token answer is not OAuth JSON".to_owned()))?;
        let expires_in = match parsed.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        Ok(Tokens {
            access_token: parsed.access_token,
            refresh_token: parsed.refresh_token,
            expires_in: expires_in.unwrap_or(3600),
            token_type: parsed.token_type.unwrap_or_else(|| "Bearer".to_owned()),
        })
    }
}

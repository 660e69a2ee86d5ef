//! The process's own keys: the key that seals OAuth state (`SECRET_KEY`, with
//! `SECRET_KEY_PREVIOUS` during a rotation) and the configuration API's bearer key
//! (`CONFIG_API_KEY`).
//!
//! This module owns where they come from ([`KeySource`]), what is sealed with them
//! ([`sealing`]: the OAuth state, the attestation challenge), the rules every key passes (at least
//! [`MIN_SECRET_BYTES`], none of the values this repository publishes, the bearer key distinct
//! from both state keys; relaxed only with `ENVIRONMENT=local`), and [`Keys`], which hands them
//! to the OAuth broker and the configuration route.
//!
//! In AWS deployments the keys are not environment variables (anyone allowed
//! `lambda:GetFunctionConfiguration` reads those): `APP_KEYS_SECRET` names one Secrets Manager
//! secret holding them as JSON, read at the first request that needs a key (health checks and
//! cold starts never wait for it) and kept for the life of the process, like the OAuth clients
//! and the CA. A rotation puts a new `SECRET_KEY` and the old one as `SECRET_KEY_PREVIOUS`: new
//! states are sealed with the new key, states sealed before still open until they expire. A
//! warm process learns of a rotation the first time a key it holds does not fit (a state it
//! cannot open, a bearer key it does not know) and re-reads the secret then, at most once every
//! [`REFRESH_AFTER`] (`APP_KEYS_MIN_REFRESH_SECONDS`), so forged states cannot turn into a
//! stream of Secrets Manager calls.

pub mod published;
pub mod sealing;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::env::{Env, EnvError, Environment, Secret};

/// Secrets shorter than this are refused outside local development.
pub const MIN_SECRET_BYTES: usize = 32;

/// The shortest time between two reads of the keys secret by one process, unless
/// `APP_KEYS_MIN_REFRESH_SECONDS` (1 to 3600) says otherwise.
pub const REFRESH_AFTER: Duration = Duration::from_secs(30);
const MIN_REFRESH_VARIABLE: &str = "APP_KEYS_MIN_REFRESH_SECONDS";

/// Pause before Secrets Manager is asked again after a failed first read.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The names the keys go by, in the environment and in the secret's JSON.
pub const STATE_KEY: &str = "SECRET_KEY";
pub const PREVIOUS_STATE_KEY: &str = "SECRET_KEY_PREVIOUS";
pub const CONFIG_API_KEY: &str = "CONFIG_API_KEY";
/// The variable naming the Secrets Manager secret (name or ARN).
pub const KEYS_SECRET: &str = "APP_KEYS_SECRET";

/// A key that breaks the rules.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "{name} is required outside local development (ENVIRONMENT={environment}); set it to a random value of at least {MIN_SECRET_BYTES} bytes, or name a Secrets Manager secret holding it in APP_KEYS_SECRET"
    )]
    MissingSecret {
        name: &'static str,
        environment: String,
    },
    #[error(
        "the secret has no {name}; put a random value of at least {MIN_SECRET_BYTES} bytes there"
    )]
    NotInSecret { name: &'static str },
    #[error(
        "{name} is {len} bytes long; it must be at least {MIN_SECRET_BYTES} bytes outside local development"
    )]
    ShortSecret { name: &'static str, len: usize },
    #[error(
        "{name} is a value published in this project's repository or documentation; generate a random one (for example `openssl rand -base64 48`)"
    )]
    DefaultSecret { name: String },
    #[error(
        "CONFIG_API_KEY must differ from SECRET_KEY and SECRET_KEY_PREVIOUS: one guards an API, the others seal OAuth state"
    )]
    SharedSecret,
    #[error(
        "SECRET_KEY_PREVIOUS is the same as SECRET_KEY; a rotation puts a new SECRET_KEY and moves the old one there"
    )]
    SamePrevious,
    #[error(
        "APP_KEYS_SECRET and {name} are both set: the keys come from the secret, so leave {name} out of the environment"
    )]
    TwoSources { name: &'static str },
    #[error("the operating system's random generator failed: {0}")]
    Entropy(String),
    #[error(transparent)]
    Env(#[from] EnvError),
}

/// Why no keys can be handed out right now.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeysError {
    #[error("the keys secret cannot be read: {0}")]
    Unavailable(String),
    #[error("the keys secret is unusable: {0}")]
    Invalid(KeyError),
}

/// The keys of one moment: what sealing, opening and the bearer check use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    /// Seals every new state, and opens states.
    pub state_key: Secret,
    /// Opens states sealed before the last rotation; never seals.
    pub previous_state_key: Option<Secret>,
    /// Bearer key of `/config/providers`; `None` disables that route (503).
    pub config_api_key: Option<Secret>,
}

impl KeySet {
    /// Checks the three values by the rules for `environment`. `state_key` is already present
    /// (how a missing one is handled depends on the source).
    fn checked(
        state_key: String,
        previous: Option<String>,
        config_api_key: Option<String>,
        environment: &Environment,
    ) -> Result<Self, KeyError> {
        let state_key = check(STATE_KEY, state_key, environment)?;
        let previous_state_key = previous
            .map(|v| check(PREVIOUS_STATE_KEY, v, environment))
            .transpose()?;
        let config_api_key = config_api_key
            .map(|v| check(CONFIG_API_KEY, v, environment))
            .transpose()?;
        if previous_state_key.as_ref() == Some(&state_key) {
            return Err(KeyError::SamePrevious);
        }
        if let Some(api) = &config_api_key
            && (api == &state_key || previous_state_key.as_ref() == Some(api))
        {
            return Err(KeyError::SharedSecret);
        }
        Ok(Self {
            state_key,
            previous_state_key,
            config_api_key,
        })
    }

    /// The keys that open states, the current one first.
    pub fn state_keys(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.state_key).chain(self.previous_state_key.as_ref())
    }
}

/// `ENVIRONMENT=local` accepts anything; every other mode refuses a published default or a key
/// under [`MIN_SECRET_BYTES`].
fn check(name: &'static str, value: String, environment: &Environment) -> Result<Secret, KeyError> {
    if !environment.is_local() {
        if published::is_published(&value) {
            return Err(KeyError::DefaultSecret {
                name: name.to_owned(),
            });
        }
        if value.len() < MIN_SECRET_BYTES {
            return Err(KeyError::ShortSecret {
                name,
                len: value.len(),
            });
        }
    }
    Ok(Secret::new(value))
}

/// Where the keys come from, decided at start-up.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// From the environment (or generated for this process), fixed for its life.
    Fixed(Arc<KeySet>),
    /// From one Secrets Manager secret, checked by the rules for `environment` when read.
    SecretsManager {
        secret_id: String,
        environment: Environment,
        /// The shortest time between two reads ([`REFRESH_AFTER`] by default).
        min_refresh: Duration,
    },
}

impl KeySource {
    /// Reads `APP_KEYS_SECRET`, or else `SECRET_KEY`, `SECRET_KEY_PREVIOUS` and `CONFIG_API_KEY`.
    /// A named deployment (or Lambda) refuses a missing `SECRET_KEY`: its sandboxes or tasks
    /// would not share a generated one. Elsewhere a missing one is generated for this process,
    /// and `warnings` says so.
    pub fn from_env(
        env: Env<'_>,
        environment: &Environment,
        warnings: &mut Vec<String>,
    ) -> Result<Self, KeyError> {
        if let Some(secret_id) = env.get(KEYS_SECRET) {
            if let Some(name) = [STATE_KEY, PREVIOUS_STATE_KEY, CONFIG_API_KEY]
                .into_iter()
                // An empty value counts as unset: the template declares both empty for `sam local`.
                .find(|name| env.get(name).is_some())
            {
                return Err(KeyError::TwoSources { name });
            }
            let min_refresh = Duration::from_secs(env.seconds(
                MIN_REFRESH_VARIABLE,
                REFRESH_AFTER.as_secs(),
                1..=3600,
            )?);
            return Ok(Self::SecretsManager {
                secret_id,
                environment: environment.clone(),
                min_refresh,
            });
        }
        let state_key = match (env.get(STATE_KEY), environment) {
            (Some(key), _) => key,
            (None, Environment::Deployed(name)) => {
                return Err(KeyError::MissingSecret {
                    name: STATE_KEY,
                    environment: name.clone(),
                });
            }
            (None, _) => {
                warnings.push(
                    "SECRET_KEY is not set: using a random key for this process (OAuth states open only in this process)"
                        .to_owned(),
                );
                random_secret()?
            }
        };
        let keys = KeySet::checked(
            state_key,
            env.get(PREVIOUS_STATE_KEY),
            env.get(CONFIG_API_KEY),
            environment,
        )?;
        if keys.config_api_key.is_none() {
            warnings
                .push("CONFIG_API_KEY is not set: GET /config/providers answers 503".to_owned());
        }
        Ok(Self::Fixed(Arc::new(keys)))
    }
}

/// 32 random bytes as 64 hex digits.
pub fn random_secret() -> Result<String, KeyError> {
    use std::fmt::Write;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Entropy(e.to_string()))?;
    let mut out = String::with_capacity(64);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    Ok(out)
}

/// What a process knows of the secret.
#[derive(Debug, Default)]
struct Cache {
    keys: Option<Arc<KeySet>>,
    /// When the secret was last read, successfully or not.
    read_at: Option<Instant>,
    /// The last failed read, while no keys were ever read.
    failure: Option<KeysError>,
}

/// The keys, shared by every request of the process.
#[derive(Debug)]
pub struct Keys {
    source: KeySource,
    cache: Mutex<Cache>,
    /// One read of the secret at a time: requests arriving during a read wait for its outcome.
    reading: tokio::sync::Mutex<()>,
}

impl Keys {
    pub fn new(source: KeySource) -> Self {
        Self {
            source,
            cache: Mutex::new(Cache::default()),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// The keys, reading the secret if this process has not yet.
    pub async fn get(&self) -> Result<Arc<KeySet>, KeysError> {
        match &self.source {
            KeySource::Fixed(keys) => Ok(keys.clone()),
            KeySource::SecretsManager { .. } => {
                if let Some(keys) = &self.lock().keys {
                    return Ok(keys.clone());
                }
                self.read(None).await
            }
        }
    }

    /// Called when `held` did not fit (a state no key opens, an unknown bearer key): the keys
    /// as they are now, re-reading the secret unless it was read less than [`REFRESH_AFTER`]
    /// (or `APP_KEYS_MIN_REFRESH_SECONDS`) ago. The same `Arc` comes back when nothing changed; a failed re-read keeps `held`.
    pub async fn refresh(&self, held: &Arc<KeySet>) -> Arc<KeySet> {
        match &self.source {
            KeySource::Fixed(_) => held.clone(),
            KeySource::SecretsManager { .. } => {
                self.read(Some(held)).await.unwrap_or_else(|_| held.clone())
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn read(&self, held: Option<&Arc<KeySet>>) -> Result<Arc<KeySet>, KeysError> {
        let KeySource::SecretsManager {
            secret_id,
            environment,
            min_refresh,
        } = &self.source
        else {
            return Err(KeysError::Unavailable("no keys secret".to_owned()));
        };
        let _one_at_a_time = self.reading.lock().await;
        {
            // What the read this request waited for (if any) left behind.
            let cache = self.lock();
            let recent = cache.read_at.is_some_and(|at| at.elapsed() < *min_refresh);
            match (&cache.keys, held) {
                (Some(keys), None) => return Ok(keys.clone()),
                (Some(keys), Some(held)) if !Arc::ptr_eq(keys, held) || recent => {
                    return Ok(keys.clone());
                }
                (None, _) => {
                    if let (Some(error), Some(at)) = (&cache.failure, cache.read_at)
                        && at.elapsed() < RETRY_AFTER
                    {
                        return Err(error.clone());
                    }
                }
                _ => {}
            }
        }
        let outcome = read_secret(secret_id, environment).await;
        let mut cache = self.lock();
        cache.read_at = Some(Instant::now());
        match outcome {
            Ok(fresh) => {
                let keys = match &cache.keys {
                    // Unchanged: the same Arc tells callers there is nothing new to try.
                    Some(old) if **old == fresh => old.clone(),
                    Some(_) => {
                        tracing::info!(
                            "the keys secret changed: this process now uses the rotated keys"
                        );
                        Arc::new(fresh)
                    }
                    None => Arc::new(fresh),
                };
                cache.keys = Some(keys.clone());
                cache.failure = None;
                Ok(keys)
            }
            Err(error) => {
                tracing::warn!(error = %error, "could not read the keys secret (APP_KEYS_SECRET)");
                match &cache.keys {
                    Some(keys) => Ok(keys.clone()),
                    None => {
                        cache.failure = Some(error.clone());
                        Err(error)
                    }
                }
            }
        }
    }
}

/// One `GetSecretValue` of the keys secret, checked.
async fn read_secret(secret_id: &str, environment: &Environment) -> Result<KeySet, KeysError> {
    let values = crate::aws::secret_json(secret_id)
        .await
        .map_err(KeysError::Unavailable)?;
    let text = |name: &str| {
        values
            .get(name)
            .and_then(|v| v.as_str())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let state_key = text(STATE_KEY).ok_or(KeysError::Invalid(KeyError::NotInSecret {
        name: STATE_KEY,
    }))?;
    KeySet::checked(
        state_key,
        text(PREVIOUS_STATE_KEY),
        text(CONFIG_API_KEY),
        environment,
    )
    .map_err(KeysError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const A: &str = "0123456789abcdef0123456789abcdef-a";
    const B: &str = "0123456789abcdef0123456789abcdef-b";
    const C: &str = "0123456789abcdef0123456789abcdef-c";

    fn source(vars: &[(&str, &str)], environment: Environment) -> Result<KeySource, KeyError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| map.get(name).cloned();
        KeySource::from_env(Env::new(&lookup), &environment, &mut Vec::new())
    }

    fn prod() -> Environment {
        Environment::Deployed("production".to_owned())
    }

    #[test]
    fn the_previous_key_opens_but_the_current_one_comes_first() {
        let KeySource::Fixed(keys) =
            source(&[("SECRET_KEY", A), ("SECRET_KEY_PREVIOUS", B)], prod()).unwrap()
        else {
            panic!("expected fixed keys");
        };
        let order: Vec<&str> = keys.state_keys().map(Secret::expose).collect();
        assert_eq!(order, [A, B]);
    }

    #[test]
    fn a_previous_key_follows_the_same_rules() {
        assert_eq!(
            source(
                &[("SECRET_KEY", A), ("SECRET_KEY_PREVIOUS", "short")],
                prod()
            )
            .unwrap_err(),
            KeyError::ShortSecret {
                name: "SECRET_KEY_PREVIOUS",
                len: 5
            }
        );
        assert_eq!(
            source(&[("SECRET_KEY", A), ("SECRET_KEY_PREVIOUS", A)], prod()).unwrap_err(),
            KeyError::SamePrevious
        );
        assert_eq!(
            source(
                &[
                    ("SECRET_KEY", A),
                    ("SECRET_KEY_PREVIOUS", B),
                    ("CONFIG_API_KEY", B)
                ],
                prod()
            )
            .unwrap_err(),
            KeyError::SharedSecret
        );
        assert!(
            source(
                &[("SECRET_KEY", A), ("SECRET_KEY_PREVIOUS", "x")],
                Environment::Local
            )
            .is_ok()
        );
    }

    #[test]
    fn a_keys_secret_excludes_keys_in_the_environment() {
        assert!(
            source(
                &[
                    ("APP_KEYS_SECRET", "apuntador/keys"),
                    ("SECRET_KEY", ""),
                    ("CONFIG_API_KEY", " ")
                ],
                prod()
            )
            .is_ok(),
            "declared empty, as template.yaml does"
        );
        for name in ["SECRET_KEY", "SECRET_KEY_PREVIOUS", "CONFIG_API_KEY"] {
            assert_eq!(
                source(&[("APP_KEYS_SECRET", "apuntador/keys"), (name, C)], prod()).unwrap_err(),
                KeyError::TwoSources { name }
            );
        }
        assert!(matches!(
            source(&[("APP_KEYS_SECRET", "apuntador/keys")], prod()).unwrap(),
            KeySource::SecretsManager { secret_id, min_refresh, .. }
                if secret_id == "apuntador/keys" && min_refresh == REFRESH_AFTER
        ));
        for bad in ["0", "3601", "soon"] {
            let err = source(
                &[
                    ("APP_KEYS_SECRET", "apuntador/keys"),
                    ("APP_KEYS_MIN_REFRESH_SECONDS", bad),
                ],
                prod(),
            )
            .unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("APP_KEYS_MIN_REFRESH_SECONDS=\"{bad}\"")),
                "{err}"
            );
        }
    }

    #[test]
    fn random_local_secrets_differ_between_calls() {
        assert_ne!(random_secret().unwrap(), random_secret().unwrap());
    }

    #[tokio::test]
    async fn fixed_keys_never_refresh() {
        let keys = Keys::new(source(&[("SECRET_KEY", A)], prod()).unwrap());
        let held = keys.get().await.unwrap();
        assert!(Arc::ptr_eq(&keys.refresh(&held).await, &held));
    }
}

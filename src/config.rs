//! Application configuration: every environment variable the routes use, parsed and validated
//! once at start-up into one typed [`Config`].
//!
//! Telemetry and logging variables (`OTEL_*`, `LOG_*`, `AWS_LAMBDA_LOG_*`) are read by
//! [`crate::telemetry`], which must start before this configuration can report its errors.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use std::collections::HashMap;
use std::time::Duration;

use thiserror::Error;

use crate::device::guard::TrustedHeader;
use crate::oauth::broker::OAuthSettings;
use crate::oauth::credentials::{CredentialSource, credentials_from};
use crate::oauth::provider::{Endpoints, ProviderId, callback_uri};
use crate::oauth::redirect::RedirectAllowlist;

/// The application version reported by `/`, `/health` and `/config/providers`.
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Cloud providers the OAuth broker knows about, in the order `/config/providers` lists them.
pub const KNOWN_PROVIDERS: [&str; 3] = ["googledrive", "dropbox", "onedrive"];

/// Secrets shorter than this are refused outside local development.
pub const MIN_SECRET_BYTES: usize = 32;

/// Defaults that were published with the old backend; a deployment still using one is refused.
const PUBLIC_DEFAULT_SECRETS: [&str; 2] = [
    "dev-secret-key-change-in-production-min-32-chars",
    "change-me-to-a-random-string-of-at-least-32-bytes",
];

/// A configuration problem that stops the process from starting.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "{name} is required outside local development (ENVIRONMENT={environment}); set it to a random value of at least {MIN_SECRET_BYTES} bytes"
    )]
    MissingSecret {
        name: &'static str,
        environment: String,
    },
    #[error(
        "{name} is {len} bytes long; it must be at least {MIN_SECRET_BYTES} bytes outside local development"
    )]
    ShortSecret { name: &'static str, len: usize },
    #[error(
        "{name} is a published default value; generate a random one (for example `openssl rand -base64 48`)"
    )]
    DefaultSecret { name: &'static str },
    #[error(
        "CONFIG_API_KEY must differ from SECRET_KEY: one guards an API, the other seals OAuth state"
    )]
    SharedSecret,
    #[error("the operating system's random generator failed: {0}")]
    Entropy(String),
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// Where the process runs. Only an explicit `ENVIRONMENT=local` relaxes anything (published or
/// short secrets, a development CA, localhost CORS origins); every other name, and no name at
/// all, is strict: a stage called `dev` is still reachable from the internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Environment {
    /// `ENVIRONMENT=local`, set by the user: local development.
    Local,
    /// `ENVIRONMENT=<name>`, or `production` under Lambda when it is unset.
    Deployed(String),
    /// A server with no `ENVIRONMENT`: run as `production` (strict), but a missing `SECRET_KEY`
    /// may still be generated per process so `cargo run` works; said once at start-up.
    Unset,
}

impl Environment {
    /// `ENVIRONMENT` if set; otherwise `production` under Lambda and [`Environment::Unset`]
    /// elsewhere.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let under_lambda = env("AWS_LAMBDA_RUNTIME_API").is_some();
        match env("ENVIRONMENT").map(|v| v.trim().to_ascii_lowercase()) {
            Some(v) if v == "local" => Self::Local,
            Some(v) if !v.is_empty() => Self::Deployed(v),
            _ if under_lambda => Self::Deployed("production".to_owned()),
            _ => Self::Unset,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Local => "local",
            Self::Deployed(name) => name,
            Self::Unset => "production",
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local)
    }
}

/// A secret value that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Cross-origin settings (spec §6.3), plus `X-Trace-ID` exposed to browsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
}

/// Where CA material and certificate records live (`INFRASTRUCTURE_PROVIDER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Infrastructure {
    /// Files under `INFRASTRUCTURE_BASE_DIR`.
    Local { base_dir: std::path::PathBuf },
    /// Secrets Manager (`AWS_SECRETS_PREFIX`) and DynamoDB (`AWS_DYNAMODB_TABLE`).
    Aws {
        table: String,
        secrets_prefix: String,
        auto_create: bool,
    },
}

/// Device CA settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSettings {
    pub infrastructure: Infrastructure,
    /// Create a development CA when none exists (local environment with local files only).
    pub create_dev_ca: bool,
    /// The proxy header that carries the verified client certificate: in server mode when
    /// configured; under Lambda only with `ENVIRONMENT=local` (`sam local`, which has no mutual
    /// TLS), since API Gateway passes any header a client sends.
    pub trusted_cert_header: Option<TrustedHeader>,
}

/// Everything the routes need, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub listen_addr: SocketAddr,
    /// Seals OAuth state; never used as an API key.
    pub secret_key: Secret,
    /// Bearer key for `/config/providers`; `None` disables that route (503).
    pub config_api_key: Option<Secret>,
    pub enabled_providers: BTreeSet<String>,
    pub cors: CorsConfig,
    pub max_body_bytes: usize,
    /// Whether `/health` and `/health/public` get spans and access-log lines.
    pub trace_health_checks: bool,
    pub oauth: OAuthSettings,
    pub devices: DeviceSettings,
    /// Warnings to log once logging is up (for example a generated local secret).
    pub warnings: Vec<String>,
}

/// CORS origins allowed by default with `ENVIRONMENT=local` only; elsewhere no origin is
/// allowed unless `ALLOWED_ORIGINS` names it.
const LOCAL_ORIGINS: &str =
    "http://localhost:3000,http://localhost:5173,capacitor://localhost,tauri://localhost";
const DEFAULT_METHODS: &str = "GET,POST,OPTIONS";
const DEFAULT_HEADERS: &str = "Content-Type,Authorization,X-Device-ID";
const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads configuration through `env`, so tests need not touch the process environment.
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let environment = Environment::from_env(env);
        let mut warnings = Vec::new();

        let host = get("HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
        let port = get("PORT").unwrap_or_else(|| "8000".to_owned());
        let listen_addr = parse_listen_addr(&host, &port)?;

        match &environment {
            Environment::Unset => warnings.push(
                "ENVIRONMENT is not set: running as production (secrets must be at least 32 bytes and not a published default, no development CA, no default CORS origins); set ENVIRONMENT=local for local development"
                    .to_owned(),
            ),
            Environment::Deployed(_) if get("ENVIRONMENT").is_none() => warnings.push(
                "ENVIRONMENT is not set: running as production under Lambda".to_owned(),
            ),
            _ => {}
        }

        let secret_key = match check_secret("SECRET_KEY", get("SECRET_KEY"), &environment)? {
            Some(key) => key,
            None => {
                warnings.push(
                    "SECRET_KEY is not set: using a random key for this process (OAuth states open only in this process)"
                        .to_owned(),
                );
                Secret::new(random_secret()?)
            }
        };
        let config_api_key = check_secret("CONFIG_API_KEY", get("CONFIG_API_KEY"), &environment)?;
        if config_api_key.as_ref() == Some(&secret_key) {
            return Err(ConfigError::SharedSecret);
        }
        if config_api_key.is_none() {
            warnings
                .push("CONFIG_API_KEY is not set: GET /config/providers answers 503".to_owned());
        }

        let enabled_providers = parse_providers(
            get("ENABLED_CLOUD_PROVIDERS")
                .as_deref()
                .unwrap_or("googledrive,dropbox"),
        )?;
        let default_origins = if environment.is_local() {
            LOCAL_ORIGINS
        } else {
            ""
        };
        let cors = CorsConfig {
            allowed_origins: split_list(
                get("ALLOWED_ORIGINS").as_deref().unwrap_or(default_origins),
            ),
            allowed_methods: split_list(
                get("CORS_ALLOWED_METHODS")
                    .as_deref()
                    .unwrap_or(DEFAULT_METHODS),
            ),
            allowed_headers: cors_headers(
                get("CORS_ALLOWED_HEADERS")
                    .as_deref()
                    .unwrap_or(DEFAULT_HEADERS),
            )?,
        };
        let max_body_bytes = match get("MAX_BODY_BYTES") {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ConfigError::Invalid {
                    name: "MAX_BODY_BYTES",
                    value: v.clone(),
                    reason: "expected a positive number of bytes".to_owned(),
                })?,
        };
        let trace_health_checks = match get("TRACE_HEALTH_CHECKS") {
            None => false,
            Some(v) => parse_bool(&v).ok_or_else(|| ConfigError::Invalid {
                name: "TRACE_HEALTH_CHECKS",
                value: v.clone(),
                reason: "expected true or false".to_owned(),
            })?,
        };

        let oauth = oauth_settings(env)?;
        let devices = device_settings(env, &environment, &mut warnings)?;

        Ok(Self {
            environment,
            listen_addr,
            secret_key,
            config_api_key,
            enabled_providers,
            cors,
            max_body_bytes,
            trace_health_checks,
            oauth,
            devices,
            warnings,
        })
    }
}

fn millis(
    env: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    match env(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(Duration::from_millis(default)),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=60_000).contains(n))
            .map(Duration::from_millis)
            .ok_or(ConfigError::Invalid {
                name,
                value: v,
                reason: "expected milliseconds from 1 to 60000".to_owned(),
            }),
    }
}

fn device_settings(
    env: &dyn Fn(&str) -> Option<String>,
    environment: &Environment,
    warnings: &mut Vec<String>,
) -> Result<DeviceSettings, ConfigError> {
    let get = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let flag = |name: &'static str| match get(name) {
        None => Ok(false),
        Some(v) => parse_bool(&v).ok_or(ConfigError::Invalid {
            name,
            value: v,
            reason: "expected true or false".to_owned(),
        }),
    };
    let infrastructure = match get("INFRASTRUCTURE_PROVIDER")
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("local") => Infrastructure::Local {
            base_dir: get("INFRASTRUCTURE_BASE_DIR")
                .unwrap_or_else(|| "./.credentials".to_owned())
                .into(),
        },
        Some("aws") => Infrastructure::Aws {
            table: get("AWS_DYNAMODB_TABLE").unwrap_or_else(|| "apuntador-certificates".to_owned()),
            secrets_prefix: get("AWS_SECRETS_PREFIX").unwrap_or_else(|| "apuntador".to_owned()),
            auto_create: flag("AUTO_CREATE_RESOURCES")?,
        },
        Some(other) => {
            return Err(ConfigError::Invalid {
                name: "INFRASTRUCTURE_PROVIDER",
                value: other.to_owned(),
                reason: "expected local or aws".to_owned(),
            });
        }
    };
    let trusted_cert_header = match get("TRUSTED_CLIENT_CERT_HEADER") {
        None => None,
        Some(v) => Some(
            TrustedHeader::parse(&v).ok_or(ConfigError::Invalid {
                name: "TRUSTED_CLIENT_CERT_HEADER",
                value: v,
                reason: "expected X-Amzn-Mtls-Clientcert, X-Client-Cert or X-Forwarded-Client-Cert"
                    .to_owned(),
            })?,
        ),
    };
    let trusted_cert_header = match trusted_cert_header {
        Some(header) if env("AWS_LAMBDA_RUNTIME_API").is_some() => {
            if environment.is_local() {
                warnings.push(format!(
                    "TRUSTED_CLIENT_CERT_HEADER: trusting {} from any caller under Lambda (ENVIRONMENT=local, for sam local only)",
                    header.name()
                ));
                Some(header)
            } else {
                warnings.push(
                    "TRUSTED_CLIENT_CERT_HEADER is ignored under Lambda outside ENVIRONMENT=local: API Gateway passes any header a client sends, so only its mutual-TLS context is trusted"
                        .to_owned(),
                );
                None
            }
        }
        other => other,
    };
    Ok(DeviceSettings {
        create_dev_ca: environment.is_local()
            && matches!(infrastructure, Infrastructure::Local { .. }),
        infrastructure,
        trusted_cert_header,
    })
}

fn oauth_settings(env: &dyn Fn(&str) -> Option<String>) -> Result<OAuthSettings, ConfigError> {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut endpoints = HashMap::new();
    let mut callbacks = HashMap::new();
    for provider in ProviderId::ALL {
        endpoints.insert(provider, Endpoints::from_env(provider, env)?);
        if let Some(url) = callback_uri(provider, env)? {
            callbacks.insert(provider, url);
        }
    }
    let allowlist = RedirectAllowlist::parse(
        get("ALLOWED_REDIRECT_URIS")
            .as_deref()
            .unwrap_or("apuntador://"),
    )?;
    let fallback_redirect = get("OAUTH_FALLBACK_REDIRECT_URI")
        .unwrap_or_else(|| "apuntador://oauth-callback".to_owned());
    if url::Url::parse(&fallback_redirect).is_err() {
        return Err(ConfigError::Invalid {
            name: "OAUTH_FALLBACK_REDIRECT_URI",
            value: fallback_redirect,
            reason: "expected an absolute URI".to_owned(),
        });
    }
    let credentials = match get("OAUTH_CREDENTIALS_SECRET") {
        Some(secret_id) => CredentialSource::SecretsManager {
            secret_id: secret_id.trim().to_owned(),
        },
        None => CredentialSource::Environment(credentials_from(env)),
    };
    Ok(OAuthSettings {
        endpoints,
        callbacks,
        allowlist,
        fallback_redirect,
        credentials,
        connect_timeout: millis(env, "OAUTH_CONNECT_TIMEOUT_MS", 2_000)?,
        timeout: millis(env, "OAUTH_TIMEOUT_MS", 5_000)?,
    })
}

fn parse_listen_addr(host: &str, port: &str) -> Result<SocketAddr, ConfigError> {
    let port: u16 = port.trim().parse().map_err(|_| ConfigError::Invalid {
        name: "PORT",
        value: port.to_owned(),
        reason: "expected a port number from 0 to 65535".to_owned(),
    })?;
    let host = host.trim();
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| ConfigError::Invalid {
            name: "HOST",
            value: host.to_owned(),
            reason: "expected an IP address such as 127.0.0.1 or 0.0.0.0".to_owned(),
        })?;
    Ok(SocketAddr::new(ip, port))
}

/// `ENVIRONMENT=local` accepts anything (a missing key becomes `None`); every other mode refuses
/// a published default or a secret under [`MIN_SECRET_BYTES`], and a named deployment (or
/// Lambda) also refuses a missing `SECRET_KEY`: its sandboxes or tasks would not share a
/// generated one.
fn check_secret(
    name: &'static str,
    value: Option<String>,
    environment: &Environment,
) -> Result<Option<Secret>, ConfigError> {
    let Some(value) = value else {
        return match (name, environment) {
            ("SECRET_KEY", Environment::Deployed(env)) => Err(ConfigError::MissingSecret {
                name,
                environment: env.clone(),
            }),
            _ => Ok(None),
        };
    };
    if !environment.is_local() {
        if PUBLIC_DEFAULT_SECRETS.contains(&value.as_str()) {
            return Err(ConfigError::DefaultSecret { name });
        }
        if value.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::ShortSecret {
                name,
                len: value.len(),
            });
        }
    }
    Ok(Some(Secret::new(value)))
}

/// `CORS_ALLOWED_HEADERS`: a list that names no client-certificate header (and so no `*`,
/// which would mirror them).
fn cors_headers(raw: &str) -> Result<Vec<String>, ConfigError> {
    let headers = split_list(raw);
    // A client-certificate header comes from a trusted proxy: a browser must never be invited
    // to send one (the proxy should replace it, but a CORS allowance is an invitation).
    let refused = headers
        .iter()
        .find(|h| *h == "*" || TrustedHeader::parse(h).is_some());
    match refused {
        None => Ok(headers),
        Some(header) => Err(ConfigError::Invalid {
            name: "CORS_ALLOWED_HEADERS",
            value: raw.to_owned(),
            reason: format!(
                "{header} would let browsers send a client-certificate header; list the headers the app sends, without X-Amzn-Mtls-Clientcert, X-Client-Cert or X-Forwarded-Client-Cert"
            ),
        }),
    }
}

fn random_secret() -> Result<String, ConfigError> {
    use std::fmt::Write;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ConfigError::Entropy(e.to_string()))?;
    let mut out = String::with_capacity(64);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    Ok(out)
}

/// Comma-separated list, trimmed, empty entries dropped.
pub fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_providers(raw: &str) -> Result<BTreeSet<String>, ConfigError> {
    let mut out = BTreeSet::new();
    for name in split_list(raw) {
        let name = name.to_ascii_lowercase();
        if !KNOWN_PROVIDERS.contains(&name.as_str()) {
            return Err(ConfigError::Invalid {
                name: "ENABLED_CLOUD_PROVIDERS",
                value: raw.to_owned(),
                reason: format!(
                    "unknown provider {name:?}; known providers are {}",
                    KNOWN_PROVIDERS.join(", ")
                ),
            });
        }
        out.insert(name);
    }
    Ok(out)
}

/// `true/false/1/0/yes/no/on/off`, case-insensitive.
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(&move |name| map.get(name).cloned())
    }

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_server_without_environment_runs_strict_but_starts_without_a_secret() {
        let cfg = config(&[]).unwrap();
        assert_eq!(cfg.environment, Environment::Unset);
        assert_eq!(cfg.environment.name(), "production");
        assert_eq!(cfg.secret_key.expose().len(), 64);
        assert_eq!(cfg.listen_addr, "127.0.0.1:8000".parse().unwrap());
        assert!(cfg.warnings.iter().any(|w| w.contains("SECRET_KEY")));
        let assumed: Vec<_> = cfg
            .warnings
            .iter()
            .filter(|w| w.starts_with("ENVIRONMENT is not set: running as production"))
            .collect();
        assert_eq!(assumed.len(), 1, "{:?}", cfg.warnings);
        assert!(!cfg.devices.create_dev_ca);
    }

    /// Review item 2: published and short secrets were accepted whenever the environment
    /// resolved to local, which was every server without `ENVIRONMENT` and any stage named
    /// `dev` or `development`.
    #[test]
    fn weak_secrets_stop_every_mode_but_explicit_local() {
        let published = "dev-secret-key-change-in-production-min-32-chars";
        for mode in [None, Some("dev"), Some("development"), Some("staging")] {
            let with = |vars: &[(&'static str, &'static str)]| {
                let mut all = vars.to_vec();
                if let Some(mode) = mode {
                    all.push(("ENVIRONMENT", mode));
                }
                config(&all)
            };
            assert_eq!(
                with(&[("SECRET_KEY", published)]).unwrap_err(),
                ConfigError::DefaultSecret { name: "SECRET_KEY" },
                "{mode:?}"
            );
            assert_eq!(
                with(&[("SECRET_KEY", "short")]).unwrap_err(),
                ConfigError::ShortSecret {
                    name: "SECRET_KEY",
                    len: 5
                },
                "{mode:?}"
            );
            assert_eq!(
                with(&[("SECRET_KEY", GOOD), ("CONFIG_API_KEY", "abc")]).unwrap_err(),
                ConfigError::ShortSecret {
                    name: "CONFIG_API_KEY",
                    len: 3
                },
                "{mode:?}"
            );
            assert_eq!(
                with(&[
                    ("SECRET_KEY", GOOD),
                    (
                        "CONFIG_API_KEY",
                        "change-me-to-a-random-string-of-at-least-32-bytes"
                    )
                ])
                .unwrap_err(),
                ConfigError::DefaultSecret {
                    name: "CONFIG_API_KEY"
                },
                "{mode:?}"
            );
        }
        let err = config(&[("ENVIRONMENT", "dev"), ("SECRET_KEY", "short")]).unwrap_err();
        assert!(
            err.to_string().starts_with("SECRET_KEY is 5 bytes"),
            "{err}"
        );
    }

    #[test]
    fn explicit_local_development_relaxes_secrets() {
        let cfg = config(&[
            ("ENVIRONMENT", "local"),
            ("SECRET_KEY", "short"),
            ("CONFIG_API_KEY", "abc"),
        ])
        .unwrap();
        assert!(cfg.environment.is_local());
        assert!(cfg.devices.create_dev_ca);
        assert!(
            !cfg.warnings.iter().any(|w| w.starts_with("ENVIRONMENT")),
            "{:?}",
            cfg.warnings
        );
    }

    /// Review item 9: deployed CORS defaults allowed localhost origins with credentials and the
    /// client-certificate header.
    #[test]
    fn cors_defaults_outside_local_allow_no_origin_and_never_the_certificate_header() {
        for vars in [
            &[][..],
            &[("ENVIRONMENT", "production"), ("SECRET_KEY", GOOD)][..],
            &[("ENVIRONMENT", "dev"), ("SECRET_KEY", GOOD)][..],
        ] {
            let cfg = config(vars).unwrap();
            assert!(cfg.cors.allowed_origins.is_empty(), "{vars:?}");
            assert!(
                cfg.cors.allowed_headers.iter().all(|h| !matches!(
                    h.to_ascii_lowercase().as_str(),
                    "x-client-cert" | "x-amzn-mtls-clientcert" | "x-forwarded-client-cert"
                )),
                "{:?}",
                cfg.cors.allowed_headers
            );
        }
        let local = config(&[("ENVIRONMENT", "local")]).unwrap();
        assert!(
            local
                .cors
                .allowed_origins
                .contains(&"http://localhost:3000".to_owned())
        );
        let chosen = config(&[("ALLOWED_ORIGINS", "https://app.example.com")]).unwrap();
        assert_eq!(chosen.cors.allowed_origins, ["https://app.example.com"]);
        for refused in ["Content-Type,X-Client-Cert", "x-forwarded-client-cert", "*"] {
            let err = config(&[("CORS_ALLOWED_HEADERS", refused)]).unwrap_err();
            assert!(
                err.to_string().starts_with("CORS_ALLOWED_HEADERS="),
                "{err}"
            );
        }
    }

    #[test]
    fn random_local_secrets_differ_between_calls() {
        assert_ne!(random_secret().unwrap(), random_secret().unwrap());
    }

    #[test]
    fn lambda_defaults_to_production_and_requires_a_secret() {
        let err = config(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]).unwrap_err();
        assert_eq!(
            err,
            ConfigError::MissingSecret {
                name: "SECRET_KEY",
                environment: "production".into()
            }
        );
    }

    #[test]
    fn a_named_deployment_requires_a_secret() {
        let err = config(&[("ENVIRONMENT", "staging")]).unwrap_err();
        assert_eq!(
            err,
            ConfigError::MissingSecret {
                name: "SECRET_KEY",
                environment: "staging".into()
            }
        );
    }

    #[test]
    fn deployed_refuses_short_and_default_secrets() {
        let short = config(&[("ENVIRONMENT", "staging"), ("SECRET_KEY", "short")]).unwrap_err();
        assert_eq!(
            short,
            ConfigError::ShortSecret {
                name: "SECRET_KEY",
                len: 5
            }
        );
        let default = config(&[
            ("ENVIRONMENT", "production"),
            (
                "SECRET_KEY",
                "dev-secret-key-change-in-production-min-32-chars",
            ),
        ])
        .unwrap_err();
        assert_eq!(default, ConfigError::DefaultSecret { name: "SECRET_KEY" });
        let short_api = config(&[
            ("ENVIRONMENT", "production"),
            ("SECRET_KEY", GOOD),
            ("CONFIG_API_KEY", "abc"),
        ])
        .unwrap_err();
        assert_eq!(
            short_api,
            ConfigError::ShortSecret {
                name: "CONFIG_API_KEY",
                len: 3
            }
        );
    }

    #[test]
    fn config_key_must_not_reuse_the_state_key() {
        let err = config(&[("SECRET_KEY", GOOD), ("CONFIG_API_KEY", GOOD)]).unwrap_err();
        assert_eq!(err, ConfigError::SharedSecret);
    }

    #[test]
    fn lists_are_trimmed_and_providers_lowercased() {
        let cfg = config(&[
            ("ENABLED_CLOUD_PROVIDERS", " GoogleDrive , ,onedrive"),
            ("CORS_ALLOWED_METHODS", "GET, POST, PUT"),
        ])
        .unwrap();
        assert_eq!(
            cfg.enabled_providers
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["googledrive", "onedrive"]
        );
        assert_eq!(cfg.cors.allowed_methods, ["GET", "POST", "PUT"]);
    }

    #[test]
    fn unknown_provider_and_bad_numbers_are_clear_errors() {
        let err = config(&[("ENABLED_CLOUD_PROVIDERS", "box")]).unwrap_err();
        assert!(
            err.to_string().contains("unknown provider \"box\""),
            "{err}"
        );
        let err = config(&[("PORT", "eighty")]).unwrap_err();
        assert!(err.to_string().starts_with("PORT=\"eighty\""), "{err}");
        let err = config(&[("MAX_BODY_BYTES", "0")]).unwrap_err();
        assert!(err.to_string().contains("positive number"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let cfg = config(&[("SECRET_KEY", GOOD)]).unwrap();
        assert!(!format!("{cfg:?}").contains(GOOD));
    }
}

//! Application configuration, validated once at start-up into one typed [`Config`]: the
//! environment the process runs in and its secret policy, the listen address, CORS, body limit,
//! and each area's own settings ([`OAuthSettings`], [`DeviceSettings`]), which those areas read
//! themselves through [`crate::env`].
//!
//! Telemetry and logging variables (`OTEL_*`, `LOG_*`, `AWS_LAMBDA_LOG_*`) are read by
//! [`crate::telemetry`], which must start before this configuration can report its errors.

use std::net::SocketAddr;

use thiserror::Error;

use crate::attestation::settings::AttestationSettings;
use crate::device::guard::TrustedHeader;
use crate::device::settings::DeviceSettings;
use crate::env::{Env, EnvError, Environment, under_lambda};
use crate::keys::{KeyError, KeySource};
use crate::oauth::credentials::CredentialSource;
use crate::oauth::settings::OAuthSettings;
use crate::rate_limit::RateLimitSettings;
use crate::server::ServerSettings;

/// A configuration problem that stops the process from starting.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Env(#[from] EnvError),
}

/// Cross-origin settings (spec §6.3), plus `X-Trace-ID` exposed to browsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
}

/// Everything the routes need, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub listen_addr: SocketAddr,
    /// The state-sealing keys and the configuration API's key, or the secret holding them.
    pub keys: KeySource,
    pub cors: CorsConfig,
    pub max_body_bytes: usize,
    /// Whether `/health` and `/health/public` get spans and access-log lines.
    pub trace_health_checks: bool,
    /// `ENABLE_DOCS`: serve `/openapi.json`, `/docs` and `/redoc`.
    pub docs: bool,
    /// Server mode's limits (header-read and request timeouts, connection cap); the request
    /// timeout applies under Lambda too.
    pub server: ServerSettings,
    /// Server mode's per-client limits (off by default; under Lambda, API Gateway throttles).
    pub rate_limit: RateLimitSettings,
    pub oauth: OAuthSettings,
    pub devices: DeviceSettings,
    pub attestation: AttestationSettings,
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
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(lookup);
        let environment = Environment::from_env(env);
        let mut warnings = Vec::new();

        let host = env.get("HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
        let port = env.get("PORT").unwrap_or_else(|| "8000".to_owned());
        let listen_addr = parse_listen_addr(&host, &port)?;

        match &environment {
            Environment::Unset => warnings.push(
                "ENVIRONMENT is not set: running as production (secrets must be at least 32 bytes and not a published default, no development CA, no default CORS origins); set ENVIRONMENT=local for local development"
                    .to_owned(),
            ),
            Environment::Deployed(_) if env.get("ENVIRONMENT").is_none() => warnings.push(
                "ENVIRONMENT is not set: running as production under Lambda".to_owned(),
            ),
            _ => {}
        }

        let keys = KeySource::from_env(env, &environment, &mut warnings)?;

        let default_origins = if environment.is_local() {
            LOCAL_ORIGINS
        } else {
            ""
        };
        let cors = CorsConfig {
            allowed_origins: env.list("ALLOWED_ORIGINS", default_origins),
            allowed_methods: env.list("CORS_ALLOWED_METHODS", DEFAULT_METHODS),
            allowed_headers: cors_headers(
                env.get("CORS_ALLOWED_HEADERS")
                    .as_deref()
                    .unwrap_or(DEFAULT_HEADERS),
            )?,
        };
        let max_body_bytes = match env.get("MAX_BODY_BYTES") {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                EnvError::new("MAX_BODY_BYTES", v, "expected a positive number of bytes")
            })?,
        };
        let trace_health_checks = env.flag("TRACE_HEALTH_CHECKS", false)?;
        let docs = env.flag("ENABLE_DOCS", false)?;
        let server = ServerSettings::from_env(env)?;
        let rate_limit = RateLimitSettings::from_env(env)?;
        if rate_limit.general.is_some() && under_lambda(env) {
            warnings.push(
                "RATE_LIMIT_PER_MINUTE has no effect under Lambda: API Gateway throttles \
                 (template.yaml ThrottleRateLimit, SensitiveThrottleRateLimit)"
                    .to_owned(),
            );
        }

        let oauth = OAuthSettings::from_env(env)?;
        if !environment.is_local()
            && let CredentialSource::Environment(credentials) = &oauth.credentials
        {
            for (provider, client) in credentials {
                if client
                    .client_secret
                    .as_ref()
                    .is_some_and(|s| crate::keys::published::is_published(s.expose()))
                {
                    return Err(KeyError::DefaultSecret {
                        name: format!("{}_CLIENT_SECRET", provider.credential_prefix()),
                    }
                    .into());
                }
            }
        }
        let devices = DeviceSettings::from_env(env, &environment, &mut warnings)?;
        let attestation = AttestationSettings::from_env(env, &mut warnings)?;

        Ok(Self {
            environment,
            listen_addr,
            keys,
            cors,
            max_body_bytes,
            trace_health_checks,
            docs,
            server,
            rate_limit,
            oauth,
            devices,
            attestation,
            warnings,
        })
    }
}

fn parse_listen_addr(host: &str, port: &str) -> Result<SocketAddr, ConfigError> {
    let port: u16 = port
        .trim()
        .parse()
        .map_err(|_| EnvError::new("PORT", port, "expected a port number from 0 to 65535"))?;
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
        .map_err(|_| {
            EnvError::new(
                "HOST",
                host,
                "expected an IP address such as 127.0.0.1 or 0.0.0.0",
            )
        })?;
    Ok(SocketAddr::new(ip, port))
}

/// `CORS_ALLOWED_HEADERS`: a list that names no client-certificate header (and so no `*`,
/// which would mirror them).
fn cors_headers(raw: &str) -> Result<Vec<String>, ConfigError> {
    let headers = crate::env::split_list(raw);
    // A client-certificate header comes from a trusted proxy: a browser must never be invited
    // to send one (the proxy should replace it, but a CORS allowance is an invitation).
    let refused = headers
        .iter()
        .find(|h| *h == "*" || TrustedHeader::parse(h).is_some());
    match refused {
        None => Ok(headers),
        Some(header) => Err(EnvError::new(
            "CORS_ALLOWED_HEADERS",
            raw,
            format!(
                "{header} would let browsers send a client-certificate header; list the headers the app sends, without X-Amzn-Mtls-Clientcert, X-Client-Cert or X-Forwarded-Client-Cert"
            ),
        )
        .into()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A random key no file of the repository holds.
    pub(crate) fn fresh_key() -> String {
        crate::keys::random_secret().unwrap()
    }

    pub(crate) fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
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
        let KeySource::Fixed(keys) = &cfg.keys else {
            panic!("keys from the environment");
        };
        assert_eq!(keys.state_key.expose().len(), 64, "a generated key");
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
                ConfigError::Key(KeyError::DefaultSecret {
                    name: "SECRET_KEY".to_owned()
                }),
                "{mode:?}"
            );
            assert_eq!(
                with(&[("SECRET_KEY", "short")]).unwrap_err(),
                ConfigError::Key(KeyError::ShortSecret {
                    name: "SECRET_KEY",
                    len: 5
                }),
                "{mode:?}"
            );
            assert_eq!(
                with(&[("SECRET_KEY", GOOD), ("CONFIG_API_KEY", "abc")]).unwrap_err(),
                ConfigError::Key(KeyError::ShortSecret {
                    name: "CONFIG_API_KEY",
                    len: 3
                }),
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
                ConfigError::Key(KeyError::DefaultSecret {
                    name: "CONFIG_API_KEY".to_owned()
                }),
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
    fn lambda_defaults_to_production_and_requires_a_secret() {
        let err = config(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Key(KeyError::MissingSecret {
                name: "SECRET_KEY",
                environment: "production".into()
            })
        );
    }

    #[test]
    fn a_named_deployment_requires_a_secret() {
        let err = config(&[("ENVIRONMENT", "staging")]).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Key(KeyError::MissingSecret {
                name: "SECRET_KEY",
                environment: "staging".into()
            })
        );
    }

    #[test]
    fn deployed_refuses_short_and_default_secrets() {
        let short = config(&[("ENVIRONMENT", "staging"), ("SECRET_KEY", "short")]).unwrap_err();
        assert_eq!(
            short,
            ConfigError::Key(KeyError::ShortSecret {
                name: "SECRET_KEY",
                len: 5
            })
        );
        let default = config(&[
            ("ENVIRONMENT", "production"),
            (
                "SECRET_KEY",
                "dev-secret-key-change-in-production-min-32-chars",
            ),
        ])
        .unwrap_err();
        assert_eq!(
            default,
            ConfigError::Key(KeyError::DefaultSecret {
                name: "SECRET_KEY".to_owned()
            })
        );
        let short_api = config(&[
            ("ENVIRONMENT", "production"),
            ("SECRET_KEY", GOOD),
            ("CONFIG_API_KEY", "abc"),
        ])
        .unwrap_err();
        assert_eq!(
            short_api,
            ConfigError::Key(KeyError::ShortSecret {
                name: "CONFIG_API_KEY",
                len: 3
            })
        );
    }

    #[test]
    fn config_key_must_not_reuse_the_state_key() {
        let err = config(&[("SECRET_KEY", GOOD), ("CONFIG_API_KEY", GOOD)]).unwrap_err();
        assert_eq!(err, ConfigError::Key(KeyError::SharedSecret));
    }

    #[test]
    fn lists_are_trimmed_and_providers_lowercased() {
        let cfg = config(&[
            ("ENABLED_CLOUD_PROVIDERS", " GoogleDrive , ,onedrive"),
            ("CORS_ALLOWED_METHODS", "GET, POST, PUT"),
        ])
        .unwrap();
        assert_eq!(
            cfg.oauth
                .enabled
                .iter()
                .map(|p| p.as_str())
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

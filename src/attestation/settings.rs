//! The attestation settings, read once at start-up through [`crate::env`]: the challenges'
//! lifetime, the verdict cache's, the desktop rate, App Attest's app, environment and trusted
//! root, and Play Integrity's app, keys and policy.

use super::Platform;
use super::app_attest::{APPLE_ROOT_PEM, AppAttestEnvironment, AppAttestVerifier};
use super::desktop::{DEFAULT_PER_HOUR, DesktopLimits};
use super::play_integrity::{
    DeviceLevel, KeySource, PlayIntegrityKeys, PlayIntegrityPolicy, PlayIntegritySettings,
};
use crate::env::{Env, EnvError};

/// How long a challenge is accepted after it was issued, unless
/// `ATTESTATION_CHALLENGE_TTL_SECONDS` (30 to 3600) says otherwise: long enough for an app to
/// ask Google or Apple for a token, short enough that a leaked challenge is soon worthless.
pub const DEFAULT_CHALLENGE_TTL_SECONDS: u64 = 300;

/// How long a `valid` verdict answers later attestations of the device on its platform
/// without new evidence, unless `ATTESTATION_CACHE_TTL_SECONDS` (0, which turns the cache off,
/// to 86400) says otherwise.
pub const DEFAULT_CACHE_TTL_SECONDS: u64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationSettings {
    pub challenge_ttl_seconds: u64,
    pub cache_ttl_seconds: u64,
    pub desktop: DesktopLimits,
    /// App Attest, when `APP_ATTEST_TEAM_ID` and `APP_ATTEST_BUNDLE_ID` are set; `None`
    /// answers iOS attestations 501 (spec §2.15, `unsupported`).
    pub app_attest: Option<AppAttestVerifier>,
    /// Play Integrity, when `PLAY_INTEGRITY_PACKAGE_NAME` is set; `None` answers Android
    /// attestations 501.
    pub play_integrity: Option<PlayIntegritySettings>,
    /// The platforms whose enrollments must carry an attestation (`ATTESTATION_REQUIRED`,
    /// comma-separated `android`, `ios`; empty by default, so today's clients keep working).
    pub required: Vec<Platform>,
}

impl AttestationSettings {
    /// Settings from `env`; what is worth saying at start-up goes to `warnings`.
    pub fn from_env(env: Env<'_>, warnings: &mut Vec<String>) -> Result<Self, EnvError> {
        let challenge_ttl_seconds = env.seconds(
            "ATTESTATION_CHALLENGE_TTL_SECONDS",
            DEFAULT_CHALLENGE_TTL_SECONDS,
            30..=3600,
        )?;
        Self {
            challenge_ttl_seconds,
            cache_ttl_seconds: env.seconds(
                "ATTESTATION_CACHE_TTL_SECONDS",
                DEFAULT_CACHE_TTL_SECONDS,
                0..=86_400,
            )?,
            desktop: DesktopLimits::from_env(env)?,
            app_attest: app_attest(env, warnings)?,
            play_integrity: play_integrity(env, challenge_ttl_seconds, warnings)?,
            required: Vec::new(),
        }
        .requiring(env)
    }
}

impl AttestationSettings {
    /// `ATTESTATION_REQUIRED`: each platform named must be one that attests and is configured
    /// here, or enrollment on it could never succeed.
    fn requiring(mut self, env: Env<'_>) -> Result<Self, EnvError> {
        let raw = env.get("ATTESTATION_REQUIRED").unwrap_or_default();
        for name in env.list("ATTESTATION_REQUIRED", "") {
            let refuse =
                |reason: String| EnvError::new("ATTESTATION_REQUIRED", raw.clone(), reason);
            let platform = match Platform::parse(&name) {
                Ok(Platform::Desktop) => {
                    return Err(refuse(
                        "desktop has no platform attestation to require".to_owned(),
                    ));
                }
                Ok(platform) => platform,
                Err(_) => return Err(refuse(format!("{name}: expected android or ios"))),
            };
            let configured = match platform {
                Platform::Android => self.play_integrity.is_some(),
                _ => self.app_attest.is_some(),
            };
            if !configured {
                return Err(refuse(format!(
                    "{} attestation is not configured ({})",
                    platform.as_str(),
                    match platform {
                        Platform::Android => "PLAY_INTEGRITY_PACKAGE_NAME and its keys",
                        _ => "APP_ATTEST_TEAM_ID and APP_ATTEST_BUNDLE_ID",
                    }
                )));
            }
            if !self.required.contains(&platform) {
                self.required.push(platform);
            }
        }
        Ok(self)
    }
}

/// `APP_ATTEST_TEAM_ID` (ten upper-case letters or digits), `APP_ATTEST_BUNDLE_ID`,
/// `APP_ATTEST_ENVIRONMENT` (`production`, the default, or `development`) and
/// `APP_ATTEST_ROOT_CA_PEM`, a root to trust instead of Apple's: accepted with the
/// development environment only, so a production deployment trusts Apple alone.
fn app_attest(
    env: Env<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<AppAttestVerifier>, EnvError> {
    let (team, bundle) = match (
        env.get("APP_ATTEST_TEAM_ID"),
        env.get("APP_ATTEST_BUNDLE_ID"),
    ) {
        (None, None) => return Ok(None),
        (Some(team), Some(bundle)) => (team, bundle),
        (Some(_), None) => {
            return Err(EnvError::new(
                "APP_ATTEST_BUNDLE_ID",
                "",
                "App Attest needs the bundle id beside APP_ATTEST_TEAM_ID",
            ));
        }
        (None, Some(_)) => {
            return Err(EnvError::new(
                "APP_ATTEST_TEAM_ID",
                "",
                "App Attest needs the team id beside APP_ATTEST_BUNDLE_ID",
            ));
        }
    };
    if team.len() != 10
        || !team
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Err(EnvError::new(
            "APP_ATTEST_TEAM_ID",
            team,
            "expected the ten-character Apple team id (A-Z, 0-9)",
        ));
    }
    if bundle.len() > 255
        || !bundle
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(EnvError::new(
            "APP_ATTEST_BUNDLE_ID",
            bundle,
            "expected a bundle id (A-Z, a-z, 0-9, '.', '-')",
        ));
    }
    let environment = match env.get("APP_ATTEST_ENVIRONMENT").as_deref() {
        None | Some("production") => AppAttestEnvironment::Production,
        Some("development") => AppAttestEnvironment::Development,
        Some(other) => {
            return Err(EnvError::new(
                "APP_ATTEST_ENVIRONMENT",
                other,
                "expected production or development",
            ));
        }
    };
    let roots = match env.get("APP_ATTEST_ROOT_CA_PEM") {
        None => APPLE_ROOT_PEM.to_owned(),
        Some(_) if environment == AppAttestEnvironment::Production => {
            return Err(EnvError::new(
                "APP_ATTEST_ROOT_CA_PEM",
                "<PEM>",
                "a root other than Apple's is accepted only with APP_ATTEST_ENVIRONMENT=development",
            ));
        }
        Some(pem) => {
            warnings.push(
                "APP_ATTEST_ROOT_CA_PEM: App Attest trusts a configured root instead of Apple's (development)"
                    .to_owned(),
            );
            pem
        }
    };
    AppAttestVerifier::new(&team, &bundle, environment, &roots)
        .map(Some)
        .ok_or_else(|| {
            EnvError::new(
                "APP_ATTEST_ROOT_CA_PEM",
                "<PEM>",
                "expected one or more PEM certificates",
            )
        })
}

/// `PLAY_INTEGRITY_PACKAGE_NAME` (turns it on), `PLAY_INTEGRITY_CERT_DIGESTS` (required: the
/// signing certificates' SHA-256, base64url as Play reports them, comma-separated),
/// `PLAY_INTEGRITY_MIN_DEVICE_INTEGRITY` (`basic`, `device`, the default, or `strong`),
/// `PLAY_INTEGRITY_REQUIRE_LICENSED` (default false), and the keys: either
/// `PLAY_INTEGRITY_KEYS_SECRET` (a Secrets Manager secret with `decryption_key` and
/// `verification_key`) or `PLAY_INTEGRITY_DECRYPTION_KEY` and `PLAY_INTEGRITY_VERIFICATION_KEY`.
/// A verdict may be as old as a challenge's lifetime plus a minute.
fn play_integrity(
    env: Env<'_>,
    challenge_ttl_seconds: u64,
    warnings: &mut Vec<String>,
) -> Result<Option<PlayIntegritySettings>, EnvError> {
    let named = [
        "PLAY_INTEGRITY_CERT_DIGESTS",
        "PLAY_INTEGRITY_KEYS_SECRET",
        "PLAY_INTEGRITY_DECRYPTION_KEY",
        "PLAY_INTEGRITY_VERIFICATION_KEY",
    ];
    let Some(package) = env.get("PLAY_INTEGRITY_PACKAGE_NAME") else {
        if let Some(name) = named.into_iter().find(|name| env.get(name).is_some()) {
            return Err(EnvError::new(
                name,
                "",
                "Play Integrity needs PLAY_INTEGRITY_PACKAGE_NAME beside it",
            ));
        }
        return Ok(None);
    };
    if package.len() > 255
        || !package
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
    {
        return Err(EnvError::new(
            "PLAY_INTEGRITY_PACKAGE_NAME",
            package,
            "expected an Android package name (A-Z, a-z, 0-9, '.', '_')",
        ));
    }
    let certificate_digests: Vec<String> = env
        .list("PLAY_INTEGRITY_CERT_DIGESTS", "")
        .into_iter()
        .map(|d| d.trim_end_matches('=').to_owned())
        .collect();
    if certificate_digests.is_empty()
        || certificate_digests.iter().any(|d| {
            d.len() != 43
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    {
        return Err(EnvError::new(
            "PLAY_INTEGRITY_CERT_DIGESTS",
            env.get("PLAY_INTEGRITY_CERT_DIGESTS").unwrap_or_default(),
            "expected the app's signing certificate SHA-256 digests, base64url as Play reports them, comma-separated",
        ));
    }
    let min_device = match env.get("PLAY_INTEGRITY_MIN_DEVICE_INTEGRITY") {
        None => DeviceLevel::Device,
        Some(raw) => DeviceLevel::parse(&raw).ok_or_else(|| {
            EnvError::new(
                "PLAY_INTEGRITY_MIN_DEVICE_INTEGRITY",
                raw,
                "expected basic, device or strong",
            )
        })?,
    };
    if min_device == DeviceLevel::Basic {
        warnings.push(
            "PLAY_INTEGRITY_MIN_DEVICE_INTEGRITY=basic: rooted and uncertified Android devices pass"
                .to_owned(),
        );
    }
    let source = match (
        env.get("PLAY_INTEGRITY_KEYS_SECRET"),
        env.get("PLAY_INTEGRITY_DECRYPTION_KEY"),
        env.get("PLAY_INTEGRITY_VERIFICATION_KEY"),
    ) {
        (Some(secret_id), None, None) => KeySource::SecretsManager { secret_id },
        (None, Some(decryption), Some(verification)) => KeySource::Environment(
            PlayIntegrityKeys::from_base64(&decryption, &verification).map_err(|reason| {
                EnvError::new("PLAY_INTEGRITY_DECRYPTION_KEY", "<key>", reason)
            })?,
        ),
        _ => {
            return Err(EnvError::new(
                "PLAY_INTEGRITY_KEYS_SECRET",
                "",
                "Play Integrity needs its keys: PLAY_INTEGRITY_KEYS_SECRET, or both PLAY_INTEGRITY_DECRYPTION_KEY and PLAY_INTEGRITY_VERIFICATION_KEY (not both ways)",
            ));
        }
    };
    let max_age_seconds = i64::try_from(challenge_ttl_seconds).unwrap_or(3600) + 60;
    Ok(Some(PlayIntegritySettings {
        policy: PlayIntegrityPolicy {
            package,
            certificate_digests,
            min_device,
            require_licensed: env.flag("PLAY_INTEGRITY_REQUIRE_LICENSED", false)?,
            max_age_ms: max_age_seconds * 1000,
        },
        source,
    }))
}

impl Default for AttestationSettings {
    fn default() -> Self {
        Self {
            challenge_ttl_seconds: DEFAULT_CHALLENGE_TTL_SECONDS,
            cache_ttl_seconds: DEFAULT_CACHE_TTL_SECONDS,
            desktop: DesktopLimits {
                per_hour: DEFAULT_PER_HOUR,
            },
            app_attest: None,
            play_integrity: None,
            required: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<AttestationSettings, EnvError> {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        AttestationSettings::from_env(Env::new(&lookup), &mut Vec::new())
    }

    #[test]
    fn the_challenge_lifetime_defaults_and_is_bounded() {
        assert_eq!(settings(&[]).unwrap(), AttestationSettings::default());
        let ttl = |v| settings(&[("ATTESTATION_CHALLENGE_TTL_SECONDS", v)]);
        assert_eq!(ttl("60").unwrap().challenge_ttl_seconds, 60);
        for bad in ["0", "29", "3601", "five", "-1"] {
            let error = ttl(bad).unwrap_err().to_string();
            assert!(error.contains("30 to 3600 seconds"), "{bad}: {error}");
        }
    }

    #[test]
    fn app_attest_is_off_until_both_ids_are_set_and_trusts_apple_in_production() {
        assert_eq!(settings(&[]).unwrap().app_attest, None);
        let team = ("APP_ATTEST_TEAM_ID", "ABCDE12345");
        let bundle = ("APP_ATTEST_BUNDLE_ID", "com.apuntador.app");
        assert!(
            settings(&[team])
                .unwrap_err()
                .to_string()
                .contains("bundle id")
        );
        assert!(
            settings(&[bundle])
                .unwrap_err()
                .to_string()
                .contains("team id")
        );
        let on = settings(&[team, bundle]).unwrap().app_attest.unwrap();
        let apple = AppAttestVerifier::new(
            "ABCDE12345",
            "com.apuntador.app",
            AppAttestEnvironment::Production,
            APPLE_ROOT_PEM,
        );
        assert_eq!(Some(on), apple);
        for (name, value) in [
            ("APP_ATTEST_TEAM_ID", "abcde12345"),
            ("APP_ATTEST_TEAM_ID", "SHORT"),
            ("APP_ATTEST_BUNDLE_ID", "com.app/evil"),
            ("APP_ATTEST_ENVIRONMENT", "staging"),
        ] {
            let mut vars = vec![team, bundle];
            vars.retain(|(k, _)| *k != name);
            vars.push((name, value));
            assert!(settings(&vars).is_err(), "{name}={value}");
        }
    }

    /// A test root replaces Apple's only for development builds.
    #[test]
    fn a_configured_root_is_for_development_only() {
        let root = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        let base = [
            ("APP_ATTEST_TEAM_ID", "ABCDE12345"),
            ("APP_ATTEST_BUNDLE_ID", "com.apuntador.app"),
            ("APP_ATTEST_ROOT_CA_PEM", root.as_str()),
        ];
        let error = settings(&base).unwrap_err().to_string();
        assert!(
            error.contains("only with APP_ATTEST_ENVIRONMENT=development"),
            "{error}"
        );
        assert!(!error.contains("BEGIN"), "the PEM is not echoed: {error}");
        let mut development = base.to_vec();
        development.push(("APP_ATTEST_ENVIRONMENT", "development"));
        let mut warnings = Vec::new();
        let lookup = |name: &str| {
            development
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let configured = AttestationSettings::from_env(Env::new(&lookup), &mut warnings).unwrap();
        assert!(configured.app_attest.is_some());
        assert_eq!(warnings.len(), 1);
        development.pop();
        development.pop();
        development.push(("APP_ATTEST_ROOT_CA_PEM", "not a certificate"));
        development.push(("APP_ATTEST_ENVIRONMENT", "development"));
        assert!(settings(&development).is_err());
    }

    #[test]
    fn attestation_is_required_only_of_platforms_that_attest_here() {
        let app_attest = [
            ("APP_ATTEST_TEAM_ID", "ABCDE12345"),
            ("APP_ATTEST_BUNDLE_ID", "app.apuntador.ios"),
        ];
        let with = |required: &str| {
            let mut vars = app_attest.to_vec();
            vars.push(("ATTESTATION_REQUIRED", required));
            settings(&vars)
        };
        assert_eq!(settings(&app_attest).unwrap().required, []);
        assert_eq!(with("ios, IOS").unwrap().required, [Platform::Ios]);
        let refused = |required: &str, says: &str| {
            let error = with(required).unwrap_err().to_string();
            assert!(
                error.contains("ATTESTATION_REQUIRED") && error.contains(says),
                "{required}: {error}"
            );
        };
        refused("desktop", "desktop has no platform attestation");
        refused("android", "android attestation is not configured");
        refused("web", "expected android or ios");
    }

    #[test]
    fn play_integrity_needs_its_package_digests_and_keys() {
        let digest = "A".repeat(43);
        let refused = |vars: &[(&str, &str)], names: &str| {
            let error = settings(vars).unwrap_err().to_string();
            assert!(error.contains(names), "{vars:?}: {error}");
            assert!(!error.contains("c2VjcmV0"), "a key in the error: {error}");
        };
        refused(
            &[("PLAY_INTEGRITY_CERT_DIGESTS", &digest)],
            "PLAY_INTEGRITY_PACKAGE_NAME",
        );
        refused(
            &[("PLAY_INTEGRITY_PACKAGE_NAME", "app.apuntador")],
            "PLAY_INTEGRITY_CERT_DIGESTS",
        );
        refused(
            &[
                ("PLAY_INTEGRITY_PACKAGE_NAME", "app.apuntador"),
                ("PLAY_INTEGRITY_CERT_DIGESTS", &digest),
            ],
            "PLAY_INTEGRITY_KEYS_SECRET",
        );
        refused(
            &[
                ("PLAY_INTEGRITY_PACKAGE_NAME", "app.apuntador"),
                ("PLAY_INTEGRITY_CERT_DIGESTS", &digest),
                ("PLAY_INTEGRITY_DECRYPTION_KEY", "c2VjcmV0"),
                ("PLAY_INTEGRITY_VERIFICATION_KEY", "c2VjcmV0"),
            ],
            "PLAY_INTEGRITY_DECRYPTION_KEY",
        );
        let configured = settings(&[
            ("PLAY_INTEGRITY_PACKAGE_NAME", "app.apuntador"),
            (
                "PLAY_INTEGRITY_CERT_DIGESTS",
                &format!("{digest}=, {digest}"),
            ),
            ("PLAY_INTEGRITY_KEYS_SECRET", "apuntador/play-integrity"),
            ("PLAY_INTEGRITY_MIN_DEVICE_INTEGRITY", "Strong"),
        ])
        .unwrap()
        .play_integrity
        .unwrap();
        assert_eq!(
            configured.policy.certificate_digests,
            [digest.clone(), digest]
        );
        assert_eq!(
            configured.policy.min_device,
            super::super::play_integrity::DeviceLevel::Strong
        );
        assert_eq!(configured.policy.max_age_ms, 360_000);
    }
}

//! Reading the process environment, in one place: how a variable is trimmed and when it counts
//! as unset, how flags, durations and lists are written, how a bad value is reported (naming
//! the variable and the value), the [`Secret`] type that never prints itself, and the
//! [`Environment`] the process runs in. Every area's settings read through [`Env`]; this module
//! depends on nothing else in the crate, so no area imports configuration back.

use std::time::Duration;

use thiserror::Error;

/// A value of one variable that cannot be used; start-up stops with this message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{name}={value:?} is not valid: {reason}")]
pub struct EnvError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

impl EnvError {
    pub fn new(name: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// The environment as settings read it, through a lookup so tests need not touch the process
/// environment.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup }
    }

    /// The value, trimmed; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// Whether the variable is present at all, even empty (the Lambda sandbox variables).
    pub fn is_set(&self, name: &str) -> bool {
        (self.lookup)(name).is_some()
    }

    /// `true/false/1/0/yes/no/on/off` (any case); `default` when unset.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, EnvError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => {
                parse_bool(&v).ok_or_else(|| EnvError::new(name, v, "expected true or false"))
            }
        }
    }

    /// Milliseconds from 1 to 60000; `default` when unset.
    pub fn millis(&self, name: &'static str, default: u64) -> Result<Duration, EnvError> {
        match self.get(name) {
            None => Ok(Duration::from_millis(default)),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=60_000).contains(n))
                .map(Duration::from_millis)
                .ok_or_else(|| EnvError::new(name, v, "expected milliseconds from 1 to 60000")),
        }
    }

    /// Whole seconds within `range`; `default` when unset.
    pub fn seconds(
        &self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, EnvError> {
        self.number(name, default, range, "seconds")
    }

    /// A whole number of `unit` within `range`; `default` when unset.
    pub fn number(
        &self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
        unit: &str,
    ) -> Result<u64, EnvError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    let reason = format!("expected {} to {} {unit}", range.start(), range.end());
                    EnvError::new(name, v, reason)
                }),
        }
    }

    /// A comma-separated list ([`split_list`]); `default` when unset.
    pub fn list(&self, name: &str, default: &str) -> Vec<String> {
        split_list(self.get(name).as_deref().unwrap_or(default))
    }
}

/// Comma-separated list, trimmed, empty entries dropped.
pub fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `true/false/1/0/yes/no/on/off`, case-insensitive.
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A secret value that never prints itself. (`secrecy` was considered: its types deliberately
/// have no equality, and configuration compares two keys to refuse a shared one.)
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

/// Where the process runs. Only an explicit `ENVIRONMENT=local` relaxes anything (published or
/// short secrets, a development CA, localhost CORS origins, a trusted header under `sam local`);
/// every other name, and no name at all, is strict: a stage called `dev` is still reachable from
/// the internet.
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
    pub fn from_env(env: Env<'_>) -> Self {
        match env.get("ENVIRONMENT").map(|v| v.to_ascii_lowercase()) {
            Some(v) if v == "local" => Self::Local,
            Some(v) => Self::Deployed(v),
            None if under_lambda(env) => Self::Deployed("production".to_owned()),
            None => Self::Unset,
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

/// Whether the process serves Lambda invocations (the sandbox names its Runtime API).
pub fn under_lambda(env: Env<'_>) -> bool {
    env.is_set("AWS_LAMBDA_RUNTIME_API")
}

/// The most invocations one Lambda process is handed at once: [`MAX_LAMBDA_CONCURRENCY`] bounds
/// what this process accepts (each is a task and a Runtime API connection).
pub const MAX_LAMBDA_CONCURRENCY: usize = 1024;

/// How many invocations a Lambda process serves at once: `AWS_LAMBDA_MAX_CONCURRENCY`, which
/// Lambda Managed Instances set (the function's `PerExecutionEnvironmentMaxConcurrency`), else
/// one (classic Lambda, where the sandbox may be frozen between invocations).
pub fn lambda_max_concurrency(env: Env<'_>) -> Result<usize, EnvError> {
    const NAME: &str = "AWS_LAMBDA_MAX_CONCURRENCY";
    match env.get(NAME) {
        None => Ok(1),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LAMBDA_CONCURRENCY).contains(n))
            .ok_or_else(|| {
                EnvError::new(
                    NAME,
                    v,
                    format!("expected a whole number from 1 to {MAX_LAMBDA_CONCURRENCY}"),
                )
            }),
    }
}

/// Whether the sandbox may be frozen as soon as an invocation's response is posted: classic
/// Lambda. Then every log line, span and metric of an invocation must leave before the next
/// `/next`. A server, and Lambda Managed Instances (which keep running between invocations),
/// send them in the background instead.
pub fn frozen_between_invocations(env: Env<'_>) -> bool {
    under_lambda(env) && lambda_max_concurrency(env).is_ok_and(|n| n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_trimmed_and_blank_is_unset() {
        let lookup = |name: &str| match name {
            "A" => Some("  x  ".to_owned()),
            "B" => Some("   ".to_owned()),
            _ => None,
        };
        let env = Env::new(&lookup);
        assert_eq!(env.get("A").as_deref(), Some("x"));
        assert_eq!(env.get("B"), None);
        assert!(env.is_set("B"));
        assert_eq!(env.list("A", "d"), ["x"]);
        assert_eq!(env.list("C", "p, q,,"), ["p", "q"]);
    }

    #[test]
    fn bad_values_name_the_variable_and_the_value() {
        let lookup = |name: &str| (name == "T").then(|| "soon".to_owned());
        let env = Env::new(&lookup);
        assert_eq!(
            env.millis("T", 5).unwrap_err().to_string(),
            "T=\"soon\" is not valid: expected milliseconds from 1 to 60000"
        );
        assert_eq!(
            env.flag("T", false).unwrap_err().to_string(),
            "T=\"soon\" is not valid: expected true or false"
        );
        assert_eq!(env.millis("U", 5).unwrap(), Duration::from_millis(5));
    }

    #[test]
    fn lambda_concurrency_is_one_unless_managed_instances_say_more() {
        let of = |value: Option<&'static str>| {
            move |name: &str| match name {
                "AWS_LAMBDA_RUNTIME_API" => Some("127.0.0.1:9001".to_owned()),
                "AWS_LAMBDA_MAX_CONCURRENCY" => value.map(str::to_owned),
                _ => None,
            }
        };
        let unset = of(None);
        assert_eq!(lambda_max_concurrency(Env::new(&unset)), Ok(1));
        assert!(frozen_between_invocations(Env::new(&unset)));
        let one = of(Some("1"));
        assert!(frozen_between_invocations(Env::new(&one)));
        let many = of(Some(" 32 "));
        assert_eq!(lambda_max_concurrency(Env::new(&many)), Ok(32));
        assert!(!frozen_between_invocations(Env::new(&many)));
        for bad in ["0", "-1", "many", "1025", "1.5"] {
            let lookup = of(Some(bad));
            let error = lambda_max_concurrency(Env::new(&lookup)).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "AWS_LAMBDA_MAX_CONCURRENCY={bad:?} is not valid: expected a whole number \
                     from 1 to 1024"
                )
            );
        }
        let server = |_: &str| None;
        assert!(!frozen_between_invocations(Env::new(&server)));
    }
}

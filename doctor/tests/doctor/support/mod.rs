//! What every test shares: moto and the X-Ray double in front of it, the SDK configuration the
//! tests build deployments with, the secrets those deployments carry, and running the doctor
//! (bounded, its output searched for the secrets).

pub mod api;
pub mod ecs_kit;
pub mod overlay;
pub mod sam_stack;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_lambda::config::Credentials;
use serde_json::Value;

use overlay::Overlay;

pub const REGION: &str = "eu-west-1";
pub const ACCOUNT: &str = "123456789012";

/// How long one doctor run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Secrets the deployments carry (the function's SECRET_KEY, CONFIG_API_KEY, an OTLP header
/// with an API key, a password in an endpoint URL, the stack's NoEcho SecretKey): random per
/// test process, so no file holds them.
pub fn secrets() -> &'static [String; 5] {
    static SECRETS: OnceLock<[String; 5]> = OnceLock::new();
    SECRETS.get_or_init(|| {
        [
            apuntador_harness::fresh_key("secret-key"),
            apuntador_harness::fresh_key("config-api-key"),
            apuntador_harness::fresh_key("otlp-header"),
            apuntador_harness::fresh_key("endpoint-password"),
            apuntador_harness::fresh_key("stack-secret"),
        ]
    })
}

/// What X-Ray's `GetTraceSegmentDestination` double answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Transaction Search off (moto's X-Ray has no such setting: this is AWS's default).
    XRay,
    Active,
    Pending,
    /// The doctor's identity may not call it.
    Denied,
}

/// moto on a free port, and the double of X-Ray's one missing API in front of it.
pub struct World {
    _moto: apuntador_harness::Process,
    pub moto: String,
    pub config: SdkConfig,
    pub destination: Arc<Mutex<Destination>>,
    xray: Overlay,
}

impl World {
    /// `None` (the test skips) only outside scripts/test.sh.
    pub async fn start() -> Option<Self> {
        let (process, moto) = tokio::task::spawn_blocking(apuntador_harness::moto)
            .await
            .expect("starting moto")?;
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&moto)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .load()
            .await;
        let destination = Arc::new(Mutex::new(Destination::XRay));
        let answer = destination.clone();
        let xray = Overlay::start(
            &moto,
            Box::new(move |path, _headers| {
                if path != "/GetTraceSegmentDestination" {
                    return None;
                }
                let body = |d: &str, s: &str| format!(r#"{{"Destination":"{d}","Status":"{s}"}}"#);
                Some(match *answer.lock().unwrap() {
                    Destination::XRay => (200, body("XRay", "ACTIVE")),
                    Destination::Active => (200, body("CloudWatchLogs", "ACTIVE")),
                    Destination::Pending => (200, body("CloudWatchLogs", "PENDING")),
                    Destination::Denied => (
                        403,
                        r#"{"__type":"AccessDeniedException","message":"User: arn:aws:iam::123456789012:user/doctor is not authorized to perform: xray:GetTraceSegmentDestination"}"#.to_owned(),
                    ),
                })
            }),
            None,
            "application/json",
        )
        .await;
        Some(Self {
            _moto: process,
            moto,
            config,
            destination,
            xray,
        })
    }

    pub fn set_destination(&self, destination: Destination) {
        *self.destination.lock().unwrap() = destination;
    }

    /// Runs the doctor with `args` (add `--region` yourself) against moto and the doubles.
    pub async fn doctor(&self, args: &[&str]) -> Outcome {
        self.doctor_with(args, &[]).await
    }

    /// The same with more environment (the ECS double's endpoint, AWS_REGION).
    pub async fn doctor_with(&self, args: &[&str], extra: &[(&str, &str)]) -> Outcome {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_doctor"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CONFIG_FILE", "/nonexistent/doctor-tests/config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/doctor-tests/credentials",
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", &self.moto)
            .env("AWS_ENDPOINT_URL_XRAY", &self.xray.url)
            .envs(extra.iter().copied())
            .kill_on_drop(true);
        let output = tokio::time::timeout(RUN_LIMIT, command.output())
            .await
            .unwrap_or_else(|_| panic!("doctor {args:?} ran longer than {RUN_LIMIT:?}"))
            .expect("doctor runs");
        let outcome = Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        for secret in secrets() {
            assert!(
                !outcome.stdout.contains(secret.as_str())
                    && !outcome.stderr.contains(secret.as_str()),
                "doctor printed a secret of the deployment:\n{}{}",
                outcome.stdout,
                outcome.stderr
            );
        }
        outcome
    }
}

/// One doctor run as its user sees it.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "--json printed no JSON document ({e}):\n{}{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The first check with `id` (from `--json` output).
    pub fn check(&self, id: &str) -> Value {
        self.json()["checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|c| c["id"] == id).cloned())
            .unwrap_or_else(|| panic!("no check {id}:\n{}", self.stdout))
    }

    pub fn status(&self, id: &str) -> String {
        self.check(id)["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Every check as (id, status), in order.
    pub fn statuses(&self) -> Vec<(String, String)> {
        self.json()["checks"]
            .as_array()
            .map(|checks| {
                checks
                    .iter()
                    .map(|c| {
                        (
                            c["id"].as_str().unwrap_or_default().to_owned(),
                            c["status"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ids of the checks that failed.
    pub fn failed(&self) -> Vec<String> {
        self.statuses()
            .into_iter()
            .filter(|(_, s)| s == "fail")
            .map(|(id, _)| id)
            .collect()
    }

    /// Asserts one failure (and only that one) and the exit status 1; returns the check.
    pub fn only_failure(&self, id: &str) -> Value {
        assert_eq!(self.failed(), [id], "{}", self.stdout);
        assert_eq!(self.code, 1, "{}", self.stdout);
        self.check(id)
    }
}

/// A string field of a check.
pub fn text<'a>(check: &'a Value, field: &str) -> &'a str {
    check[field].as_str().unwrap_or_default()
}

/// An ignored result of a setup call that may already have been made (a group, a stream).
pub fn exists_ok<T, E: std::fmt::Debug>(result: Result<T, E>) {
    if let Err(e) = result {
        let text = format!("{e:?}");
        assert!(text.contains("AlreadyExists"), "{text}");
    }
}

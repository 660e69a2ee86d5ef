//! The AWS SDK configuration every client shares (the default credential chain, the region from
//! `--region` or the chain, `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` honoured as the SDK
//! honours them, bounded calls), and how a failed call is described in a check: the error code
//! and AWS's message, clipped; never a request, a header or a credential.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_lambda::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no AWS region: pass --region or set AWS_REGION (or a profile's region)")]
    NoRegion,
}

/// The shared configuration: `region` if given, else the chain's.
pub async fn load(region: Option<&str>) -> Result<SdkConfig, ConfigError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build(),
    );
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(ConfigError::NoRegion);
    }
    Ok(config)
}

/// The configuration's region (always set once [`load`] succeeded).
pub fn region(config: &SdkConfig) -> String {
    config
        .region()
        .map(|r| r.as_ref().to_owned())
        .unwrap_or_default()
}

/// A failed AWS call, as a check reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsFailure {
    pub code: Option<String>,
    pub text: String,
}

/// At most this many characters of AWS's message are kept.
const MESSAGE_CHARS: usize = 300;

impl AwsFailure {
    pub fn from_sdk<E, R>(err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        match err.code() {
            Some(code) => {
                let message: String = err
                    .message()
                    .unwrap_or_default()
                    .chars()
                    .take(MESSAGE_CHARS)
                    .collect();
                Self {
                    code: Some(code.to_owned()),
                    text: if message.is_empty() {
                        code.to_owned()
                    } else {
                        format!("{code}: {message}")
                    },
                }
            }
            None => Self {
                code: None,
                text: DisplayErrorContext(err)
                    .to_string()
                    .chars()
                    .take(MESSAGE_CHARS)
                    .collect(),
            },
        }
    }

    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// AWS refused the doctor's own identity.
    pub fn access_denied(&self) -> bool {
        self.code.as_deref().is_some_and(|c| {
            c.contains("AccessDenied") || c == "UnauthorizedOperation" || c == "AuthorizationError"
        })
    }
}

impl std::fmt::Display for AwsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The fix for a call the doctor's identity could not make: the permission it needs, or the
/// error to look at.
pub fn doctor_fix(failure: &AwsFailure, permission: &str) -> String {
    if failure.access_denied() {
        format!("let the identity running doctor call {permission}")
    } else {
        format!("doctor needs {permission} to answer; check credentials, region and network")
    }
}

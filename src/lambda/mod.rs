//! Lambda mode: the router served on the Lambda Runtime API, one invocation at a time.
//!
//! The loop is the Runtime API contract written out: wait for `/next`, answer the event, post
//! the response, write the invocation's metrics and flush its spans, and only then poll
//! `/next` again (Lambda may freeze the sandbox during that poll). The caller never waits for
//! the export or the metrics: Lambda returns the response as soon as it is posted.
//!
//! Why not `lambda_runtime::Runtime::run`: in its sequential mode it calls
//! `std::env::set_var("_X_AMZN_TRACE_ID", …)` before every invocation, and glibc's `setenv`
//! keeps every value it was ever given, so a warm sandbox grows by ~170 bytes per invocation
//! (1.7 MB per 10,000; `tests/e2e/memory.rs`). This loop uses the same pieces
//! (`lambda_runtime_api_client`, `lambda_runtime::Context`, `lambda_http`'s event adapter)
//! and passes the trace header in the invocation context instead; AWS SDK calls get their
//! `X-Amzn-Trace-Id` from [`crate::telemetry::aws`].

mod invocation;
mod runtime_api;

use std::sync::Arc;

use axum::Router;
use thiserror::Error;
use tokio::signal::unix::{SignalKind, signal};

use crate::telemetry::Telemetry;
use runtime_api::{RuntimeApi, RuntimeApiError};

/// Why Lambda mode stopped.
#[derive(Debug, Error)]
pub enum LambdaError {
    #[error("Lambda mode needs {0} set")]
    MissingEnv(String),
    #[error("AWS_LAMBDA_FUNCTION_MEMORY_SIZE is not a number of megabytes: {0:?}")]
    MemorySize(String),
    #[error(transparent)]
    RuntimeApi(#[from] RuntimeApiError),
}

/// What Lambda tells the function about itself, read once at start.
struct Sandbox {
    runtime_api: String,
    config: lambda_runtime::Config,
}

impl Sandbox {
    fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, LambdaError> {
        let required = [
            "AWS_LAMBDA_RUNTIME_API",
            "AWS_LAMBDA_FUNCTION_NAME",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            "AWS_LAMBDA_FUNCTION_VERSION",
        ];
        let missing: Vec<&str> = required
            .into_iter()
            .filter(|name| env(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(LambdaError::MissingEnv(missing.join(", ")));
        }
        let get = |name: &str| env(name).unwrap_or_default();
        let memory = get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE");
        let config = lambda_runtime::Config {
            function_name: get("AWS_LAMBDA_FUNCTION_NAME"),
            memory: memory
                .trim()
                .parse()
                .map_err(|_| LambdaError::MemorySize(memory.clone()))?,
            version: get("AWS_LAMBDA_FUNCTION_VERSION"),
            log_stream: get("AWS_LAMBDA_LOG_STREAM_NAME"),
            log_group: get("AWS_LAMBDA_LOG_GROUP_NAME"),
        };
        Ok(Self {
            runtime_api: get("AWS_LAMBDA_RUNTIME_API"),
            config,
        })
    }
}

/// Serves invocations until the Runtime API conversation breaks (then Lambda replaces the
/// sandbox) or SIGTERM arrives (spans are drained and the process exits).
pub async fn run(app: Router, telemetry: Telemetry) -> Result<(), LambdaError> {
    let sandbox = Sandbox::from_env(&|name| std::env::var(name).ok())?;
    if let Ok(limit) = std::env::var("AWS_LAMBDA_MAX_CONCURRENCY") {
        tracing::warn!(
            max_concurrency = %limit,
            "AWS_LAMBDA_MAX_CONCURRENCY is set, but this function serves one invocation at a time"
        );
    }
    let api = RuntimeApi::new(&sandbox.runtime_api)?;
    let config = Arc::new(sandbox.config);
    let on_sigterm = telemetry.clone();
    if let Ok(mut sigterm) = signal(SignalKind::terminate()) {
        tokio::spawn(async move {
            sigterm.recv().await;
            tracing::info!("SIGTERM: flushing spans and exiting");
            on_sigterm.shutdown().await;
            std::process::exit(0);
        });
    }
    let mut handler = invocation::Handler::from(app);
    loop {
        let event = api.next().await?;
        match invocation::answer(&mut handler, &config, &event).await {
            Ok(body) => api.respond(&event, body).await?,
            Err(diagnostic) => {
                tracing::error!(
                    function_request_id = %event.request_id,
                    error_type = %diagnostic.error_type,
                    error = %diagnostic.error_message,
                    "invocation failed"
                );
                api.fail(&event, &diagnostic).await?
            }
        }
        let trace_header = event
            .headers
            .get("lambda-runtime-trace-id")
            .and_then(|v| v.to_str().ok());
        telemetry
            .flush_invocation(&event.request_id, trace_header)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    const COMPLETE: &[(&str, &str)] = &[
        ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ("AWS_LAMBDA_FUNCTION_NAME", "apuntador"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
    ];

    #[test]
    fn the_sandbox_is_read_from_the_environment() {
        let sandbox = Sandbox::from_env(&env_of(COMPLETE)).expect("complete environment");
        assert_eq!(sandbox.runtime_api, "127.0.0.1:9001");
        assert_eq!(sandbox.config.function_name, "apuntador");
        assert_eq!(sandbox.config.memory, 256);
    }

    #[test]
    fn missing_variables_are_all_named() {
        let Err(error) = Sandbox::from_env(&env_of(&COMPLETE[..2])) else {
            panic!("incomplete environment accepted");
        };
        assert_eq!(
            error.to_string(),
            "Lambda mode needs AWS_LAMBDA_FUNCTION_MEMORY_SIZE, AWS_LAMBDA_FUNCTION_VERSION set"
        );
    }

    #[test]
    fn a_memory_size_that_is_not_a_number_is_refused() {
        const BAD: &[(&str, &str)] = &[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("AWS_LAMBDA_FUNCTION_NAME", "apuntador"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "lots"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ];
        assert!(matches!(
            Sandbox::from_env(&env_of(BAD)),
            Err(LambdaError::MemorySize(_))
        ));
    }
}

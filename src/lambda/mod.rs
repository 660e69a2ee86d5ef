//! Lambda mode: the router served on the Lambda Runtime API.
//!
//! Classic Lambda hands a sandbox one invocation at a time. The loop is the Runtime API
//! contract written out: wait for `/next`, answer the event, post the response, write the
//! invocation's metrics and flush its spans, and only then poll `/next` again (Lambda may
//! freeze the sandbox during that poll). The caller never waits for the export or the metrics:
//! Lambda returns the response as soon as it is posted.
//!
//! Lambda Managed Instances set `AWS_LAMBDA_MAX_CONCURRENCY` to N and accept N concurrent
//! `/next` polls. Then N workers each run the loop above without the flush: every worker
//! shares the router (its state is built for concurrent requests), each invocation is parented
//! on its own `Lambda-Runtime-Trace-Id` through its own context (nothing process-global), and
//! each response is posted as soon as it is ready. The sandbox is never frozen there, so spans
//! and metrics leave from background tasks ([`crate::telemetry::Cadence::Background`]): a
//! flush after each invocation would make the N workers queue behind each other's exports. A
//! worker whose Runtime API conversation breaks stops and says so; the others go on, and the
//! process exits when none is left (Lambda then replaces the environment).
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

use crate::env::{Env, EnvError, lambda_max_concurrency};
use crate::telemetry::Telemetry;
use runtime_api::{NextEvent, RuntimeApi, RuntimeApiError};

/// Why Lambda mode stopped.
#[derive(Debug, Error)]
pub enum LambdaError {
    #[error("Lambda mode needs {0} set")]
    MissingEnv(String),
    #[error("AWS_LAMBDA_FUNCTION_MEMORY_SIZE is not a number of megabytes: {0:?}")]
    MemorySize(String),
    #[error(transparent)]
    Concurrency(#[from] EnvError),
    #[error(transparent)]
    RuntimeApi(#[from] RuntimeApiError),
    #[error("an invocation worker stopped unexpectedly: {0}")]
    Worker(String),
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
    let lookup = |name: &str| std::env::var(name).ok();
    let sandbox = Sandbox::from_env(&lookup)?;
    let concurrency = lambda_max_concurrency(Env::new(&lookup))?;
    let api = Arc::new(RuntimeApi::new(&sandbox.runtime_api, concurrency)?);
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
    if concurrency == 1 {
        one_at_a_time(&api, &app, &config, &telemetry).await
    } else {
        concurrently(api, app, config, concurrency).await
    }
}

/// Classic Lambda: answer, then flush, then poll again.
async fn one_at_a_time(
    api: &RuntimeApi,
    app: &Router,
    config: &Arc<lambda_runtime::Config>,
    telemetry: &Telemetry,
) -> Result<(), LambdaError> {
    loop {
        let event = api.next().await?;
        serve(api, app, config, &event).await?;
        let trace_header = event
            .headers
            .get("lambda-runtime-trace-id")
            .and_then(|v| v.to_str().ok());
        telemetry
            .flush_invocation(&event.request_id, trace_header)
            .await;
    }
}

/// Lambda Managed Instances: `workers` loops polling `/next` side by side.
async fn concurrently(
    api: Arc<RuntimeApi>,
    app: Router,
    config: Arc<lambda_runtime::Config>,
    workers: usize,
) -> Result<(), LambdaError> {
    tracing::info!(
        workers,
        "AWS_LAMBDA_MAX_CONCURRENCY: serving up to {workers} invocations at once"
    );
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (api, app, config) = (api.clone(), app.clone(), config.clone());
        running.spawn(async move {
            loop {
                let event = api.next().await?;
                serve(&api, &app, &config, &event).await?;
            }
        });
    }
    let mut last = LambdaError::Worker("no worker was started".to_owned());
    while let Some(stopped) = running.join_next().await {
        last = match stopped {
            Ok(Ok(())) => LambdaError::Worker("a worker returned".to_owned()),
            Ok(Err(error)) => error,
            Err(join) => LambdaError::Worker(join.to_string()),
        };
        tracing::error!(
            remaining_workers = running.len(),
            error = %last,
            "an invocation worker stopped"
        );
    }
    Err(last)
}

/// Answers one event and posts the answer.
async fn serve(
    api: &RuntimeApi,
    app: &Router,
    config: &Arc<lambda_runtime::Config>,
    event: &NextEvent,
) -> Result<(), LambdaError> {
    match invocation::answer(app, config, event).await {
        Ok(body) => api.respond(event, body).await?,
        Err(diagnostic) => {
            tracing::error!(
                function_request_id = %event.request_id,
                error_type = %diagnostic.error_type,
                error = %diagnostic.error_message,
                "invocation failed"
            );
            api.fail(event, &diagnostic).await?
        }
    }
    Ok(())
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

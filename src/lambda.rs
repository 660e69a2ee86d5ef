//! Lambda mode: the router served by `lambda_http` on the Runtime API, with the flush layer
//! around each invocation and a SIGTERM handler that drains spans before the sandbox goes.

use axum::Router;
use tokio::signal::unix::{SignalKind, signal};

use crate::telemetry::Telemetry;
use crate::telemetry::lambda::FlushLayer;

/// Variables the Lambda runtime client needs; it panics without them, so check first.
const REQUIRED: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

pub async fn run(app: Router, telemetry: Telemetry) -> Result<(), lambda_http::Error> {
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|name| std::env::var_os(name).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!("Lambda mode needs {} set", missing.join(", ")).into());
    }
    let on_sigterm = telemetry.clone();
    if let Ok(mut sigterm) = signal(SignalKind::terminate()) {
        tokio::spawn(async move {
            sigterm.recv().await;
            tracing::info!("SIGTERM: flushing spans and exiting");
            on_sigterm.shutdown().await;
            std::process::exit(0);
        });
    }
    lambda_runtime::Runtime::new(lambda_http::Adapter::from(app))
        .layer(FlushLayer::new(telemetry))
        .run()
        .await
}

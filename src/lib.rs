//! apuntador-backend: the teleprompter app's backend as one library, served either by the AWS
//! Lambda runtime or as a plain HTTP server, traced through OpenTelemetry into X-Ray.
//!
//! [`run`] is the whole program: telemetry first (so start-up errors are logged like
//! everything else), then configuration, then the router in the mode the environment asks for.

pub mod attestation;
pub mod aws;
pub mod clock;
pub mod config;
pub mod device;
pub mod env;
pub mod error;
pub mod healthcheck;
pub mod json_file;
pub mod keys;
pub mod lambda;
pub mod load_once;
pub mod oauth;
pub mod rate_limit;
pub mod routes;
pub mod server;
pub mod single_use;
pub mod telemetry;
pub mod tls;

/// The application version reported by `/`, `/health` and `/config/providers`.
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");

use std::process::ExitCode;
use std::sync::Arc;

use config::Config;
use env::{Env, Environment};
use telemetry::TelemetrySettings;
use telemetry::http::RequestTracing;

/// `apuntador-backend create-ca [--dir DIR] [--days N]`: writes a new device CA for local work.
async fn create_ca(args: &[String]) -> ExitCode {
    let mut dir = std::path::PathBuf::from(
        std::env::var("INFRASTRUCTURE_BASE_DIR").unwrap_or_else(|_| "./.credentials".to_owned()),
    );
    let mut days = 1825;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match (arg.as_str(), iter.next()) {
            ("--dir", Some(value)) => dir = value.into(),
            ("--days", Some(value)) if value.parse::<i64>().is_ok_and(|d| d > 0) => {
                days = value.parse().unwrap_or(days)
            }
            _ => {
                eprintln!("usage: apuntador-backend create-ca [--dir DIR] [--days N]");
                return ExitCode::from(2);
            }
        }
    }
    match device::material::create_files(&dir, days).await {
        Ok((key, cert)) => {
            println!(
                "created CA key {} (mode 0600) and certificate {}",
                key.display(),
                cert.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("create-ca failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A start-up error before logging exists, as one JSON line like every other log line.
fn early_error(error: &dyn std::fmt::Display) {
    let line =
        serde_json::json!({"level": "ERROR", "message": format!("start-up failed: {error}")});
    eprintln!("{line}");
}

/// Runs the backend until it is stopped; the exit code reports start-up failures.
pub async fn run() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("create-ca") => return create_ca(&args[1..]).await,
        Some("healthcheck") => return healthcheck::run(&args[1..]),
        _ => {}
    }
    let lookup = |name: &str| std::env::var(name).ok();
    let env = Env::new(&lookup);
    let settings = match TelemetrySettings::from_env(env) {
        Ok(settings) => settings,
        Err(error) => {
            early_error(&error);
            return ExitCode::FAILURE;
        }
    };
    let environment = Environment::from_env(env);
    let telemetry = match telemetry::init(&settings, environment.name(), env) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            early_error(&error);
            return ExitCode::FAILURE;
        }
    };
    let config = match Config::from_env() {
        Ok(config) => Arc::new(config),
        Err(error) => {
            tracing::error!(error = %error, "start-up failed: invalid configuration");
            telemetry.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let tracing_state = RequestTracing::new(telemetry.propagator(), config.trace_health_checks)
        .with_sampler(telemetry.sampler())
        .with_trusted_proxy_hops(settings.trusted_proxy_hops);
    let state = match routes::AppState::new(config.clone()).await {
        Ok(state) => state,
        Err(error) => {
            tracing::error!(error = %error, "start-up failed: could not build the HTTP client");
            telemetry.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    let app = routes::router(state, tracing_state);

    let outcome = if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        tracing::info!(
            environment = config.environment.name(),
            "serving Lambda invocations"
        );
        lambda::run(app, telemetry.clone())
            .await
            .map_err(|e| e.to_string())
    } else {
        server::run(app, config.listen_addr, &config.server)
            .await
            .map_err(|e| e.to_string())
    };
    telemetry.shutdown().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "stopped with an error");
            ExitCode::FAILURE
        }
    }
}

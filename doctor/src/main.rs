//! `doctor`: the troubleshooting sections of docs/tracing.md and deploy/ecs/README.md as a
//! command (docs/doctor.md). Given a SAM stack, or an ECS cluster and service, it checks what
//! those guides check by hand (active tracing, the telemetry transport and its layer or sidecar,
//! X-Ray permissions, coherent telemetry variables, Transaction Search), then sends one request
//! and waits for its trace and log lines, and prints a verdict with the fix for each failure.
//! A binary of its own in the workspace: the Lambda binary does not grow. This file only wires
//! the command line to a mode and the report to stdout and the exit status.

mod aws;
mod cli;
mod collector_config;
mod collector_logs;
mod ecs_mode;
mod ecs_service;
mod evidence;
mod function;
mod iam;
mod layer;
mod live;
mod log_search;
mod policy;
mod probe;
mod report;
mod stack;
mod stack_mode;
mod task_definition;
mod telemetry_env;
mod trace_id;
mod transaction_search;

use std::process::ExitCode;

use cli::{Command, Options, Target};

/// Exit status of a usage error (a check failing is 1).
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let options = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("doctor {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("doctor: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("doctor: cannot start its runtime: {e}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let report = match runtime.block_on(run(&options)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("doctor: {e}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    if options.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_human());
    }
    ExitCode::from(report.exit_code())
}

async fn run(options: &Options) -> Result<report::Report, aws::ConfigError> {
    let config = aws::load(options.region.as_deref()).await?;
    Ok(match &options.target {
        Target::Stack { name } => stack_mode::run(options, name, &config).await,
        Target::Ecs { cluster, service } => ecs_mode::run(options, cluster, service, &config).await,
    })
}

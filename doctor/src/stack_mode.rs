//! `doctor --stack`: the order of the checks for a SAM deployment. The stack first (its outputs
//! lead to the rest), then the function (tracing, transport, layer, environment), its role, its
//! log group, Transaction Search, and the live request. A check whose input is missing is
//! skipped with the reason, so every run ends with a verdict.

use aws_config::SdkConfig;

use crate::cli::Options;
use crate::function;
use crate::iam;
use crate::layer;
use crate::live::{self, Live, Platform};
use crate::report::{Check, Report, TargetInfo};
use crate::stack;
use crate::transaction_search;

/// Where the template grants the function its X-Ray action (for the role check's fix).
const GRANT: &str = "template.yaml attaches AWSXRayDaemonWriteAccess to BackendFunction (redeploy), or aws iam attach-role-policy --policy-arn arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess";

const TURN_ON: &str = "template parameter TransactionSearch=enable (this stack then owns it)";

pub async fn run(options: &Options, name: &str, config: &SdkConfig) -> Report {
    let region = crate::aws::region(config);
    let mut report = Report::new(TargetInfo::Stack {
        stack: name.to_owned(),
        region: region.clone(),
    });
    let cloudformation = aws_sdk_cloudformation::Client::new(config);
    let stack = match stack::read(&cloudformation, name, &region).await {
        Ok(stack) => stack,
        Err(check) => {
            report.push(check);
            return report;
        }
    };
    report.push(stack::check(&stack));

    let lambda = aws_sdk_lambda::Client::new(config);
    let function = match stack.function_arn.as_deref() {
        Some(arn) => match function::read(&lambda, arn).await {
            Ok(function) => Some(function),
            Err(failure) => {
                let fix = if failure.is("ResourceNotFoundException") {
                    "the stack's function is gone: deploy the stack again".to_owned()
                } else {
                    crate::aws::doctor_fix(&failure, "lambda:GetFunctionConfiguration")
                };
                report.push(Check::fail(
                    "function",
                    format!("could not read the function {arn}: {failure}"),
                    fix,
                ));
                None
            }
        },
        None => None,
    };
    let xray = aws_sdk_xray::Client::new(config);
    let destination = transaction_search::read(&xray).await;
    let Some(function) = function else {
        for id in [
            "function.tracing",
            "function.transport",
            "role.xray",
            "transaction_search",
        ] {
            report.push(Check::skip(id, "the function could not be read"));
        }
        return live_checks(options, report, &stack, None, &destination, config).await;
    };
    report.set_telemetry_environment(function.env.printable());
    report.push(function::tracing_check(&function));
    report.push(function::transport_check(
        &function,
        stack.transport.as_deref(),
    ));
    report.push(layer::check(
        &function.layers,
        &function.architecture,
        &function.env.transport(),
    ));
    report.extend(function::environment_checks(&function));
    report.extend(function::log_group_check(
        &function,
        stack.log_group.as_deref(),
    ));
    let iam_client = aws_sdk_iam::Client::new(config);
    report.push(match function.role.as_deref() {
        Some(role) => {
            iam::check(&iam_client, "role.xray", "the function's role", role, GRANT)
                .await
                .0
        }
        None => Check::fail(
            "role.xray",
            "the function has no execution role",
            "deploy the stack again",
        ),
    });
    let need = function::transaction_search_need(
        &function,
        stack.collector_exporter.as_deref(),
        stack.transaction_search.as_deref(),
    );
    report.push(transaction_search::check(&destination, &need, TURN_ON));
    live_checks(
        options,
        report,
        &stack,
        Some(&function),
        &destination,
        config,
    )
    .await
}

async fn live_checks(
    options: &Options,
    mut report: Report,
    stack: &stack::Stack,
    function: Option<&function::Function>,
    destination: &transaction_search::Destination,
    config: &SdkConfig,
) -> Report {
    let Some(url) = options.url.as_deref().or(stack.api_url.as_deref()) else {
        for id in ["request", "trace", "logs"] {
            report.push(Check::skip(
                id,
                "no URL: the stack has no ApiUrl output and --url was not given",
            ));
        }
        return report;
    };
    let xray = aws_sdk_xray::Client::new(config);
    let logs = aws_sdk_cloudwatchlogs::Client::new(config);
    let log_group = function
        .and_then(|f| f.log_group.as_deref())
        .or(stack.log_group.as_deref());
    let (checks, trace_id) = live::run(Live {
        url,
        xray: &xray,
        logs: &logs,
        log_group,
        spans: destination.is_active(),
        service: function.map_or("apuntador-backend", |f| f.env.service_name()),
        timeout: options.timeout,
        platform: Platform::Lambda {
            tracing_active: function.is_none_or(|f| f.tracing_active()),
        },
    })
    .await;
    if let Some(trace_id) = trace_id {
        report.set_trace_id(trace_id.as_str());
    }
    report.extend(checks);
    report
}

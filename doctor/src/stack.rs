//! The SAM stack: its status, the outputs the doctor follows (`ApiUrl`, `FunctionArn`,
//! `FunctionLogGroupName`) and the four telemetry parameters it compares the function with
//! (`TelemetryTransport`, `CollectorExporter`, `TransactionSearch`, `CollectorLayerArn`). No other
//! parameter is kept: a stack may have secret ones (older versions had `SecretKey` and
//! `ConfigApiKey`).

use aws_sdk_cloudformation::Client;

use crate::aws::{AwsFailure, doctor_fix};
use crate::report::Check;

/// The parameters the doctor reads; every other one is dropped as it is read.
pub const TELEMETRY_PARAMETERS: [&str; 4] = [
    "TelemetryTransport",
    "CollectorExporter",
    "TransactionSearch",
    "CollectorLayerArn",
];

/// What the doctor keeps of a stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stack {
    pub name: String,
    pub status: String,
    pub api_url: Option<String>,
    pub function_arn: Option<String>,
    pub log_group: Option<String>,
    pub transport: Option<String>,
    pub collector_exporter: Option<String>,
    pub transaction_search: Option<String>,
    pub collector_layer_arn: Option<String>,
}

/// Reads the stack, or the failing check that ends a run.
pub async fn read(client: &Client, name: &str, region: &str) -> Result<Stack, Check> {
    let out = match client.describe_stacks().stack_name(name).send().await {
        Ok(out) => out,
        Err(e) => {
            let failure = AwsFailure::from_sdk(&e);
            return Err(not_read(name, region, &failure));
        }
    };
    let Some(found) = out.stacks().first() else {
        return Err(not_found(name, region));
    };
    let mut stack = Stack {
        name: name.to_owned(),
        status: found
            .stack_status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        ..Stack::default()
    };
    for output in found.outputs() {
        let value = output.output_value().map(str::to_owned);
        match output.output_key() {
            Some("ApiUrl") => stack.api_url = value,
            Some("FunctionArn") => stack.function_arn = value,
            Some("FunctionLogGroupName") => stack.log_group = value,
            _ => {}
        }
    }
    for parameter in found.parameters() {
        let Some(key) = parameter.parameter_key() else {
            continue;
        };
        if !TELEMETRY_PARAMETERS.contains(&key) {
            continue;
        }
        let value = parameter.parameter_value().map(str::to_owned);
        match key {
            "TelemetryTransport" => stack.transport = value,
            "CollectorExporter" => stack.collector_exporter = value,
            "TransactionSearch" => stack.transaction_search = value,
            _ => stack.collector_layer_arn = value.filter(|v| !v.is_empty()),
        }
    }
    Ok(stack)
}

fn not_found(name: &str, region: &str) -> Check {
    Check::fail(
        "stack",
        format!("no stack {name} in {region}"),
        "check the name (samconfig.toml's stack_name) and --region; deploy with sam deploy",
    )
}

fn not_read(name: &str, region: &str, failure: &AwsFailure) -> Check {
    // CloudFormation answers ValidationError "Stack with id X does not exist".
    if failure.is("ValidationError") && failure.text.contains("does not exist") {
        return not_found(name, region);
    }
    Check::fail(
        "stack",
        format!("could not read stack {name}: {failure}"),
        doctor_fix(failure, "cloudformation:DescribeStacks"),
    )
}

/// The stack's status and outputs.
pub fn check(stack: &Stack) -> Check {
    let status = stack.status.as_str();
    let missing: Vec<&str> = [
        ("ApiUrl", &stack.api_url),
        ("FunctionArn", &stack.function_arn),
        ("FunctionLogGroupName", &stack.log_group),
    ]
    .iter()
    .filter(|(_, value)| value.is_none())
    .map(|(key, _)| *key)
    .collect();
    let parameters = format!(
        "TelemetryTransport={}, CollectorExporter={}, TransactionSearch={}",
        stack.transport.as_deref().unwrap_or("(none)"),
        stack.collector_exporter.as_deref().unwrap_or("(none)"),
        stack.transaction_search.as_deref().unwrap_or("(none)")
    );
    if !missing.is_empty() {
        return Check::fail(
            "stack",
            format!("{status}, but the outputs lack {}", missing.join(", ")),
            "deploy this repository's template.yaml to the stack (its Outputs name the API, the function and its log group)",
        );
    }
    let failed = status.ends_with("_FAILED")
        || matches!(
            status,
            "ROLLBACK_COMPLETE" | "DELETE_COMPLETE" | "IMPORT_ROLLBACK_COMPLETE"
        );
    if failed {
        Check::fail(
            "stack",
            format!("{status}: the stack is not deployed"),
            "read the stack's events (aws cloudformation describe-stack-events), fix the cause, deploy again",
        )
    } else if status.ends_with("_IN_PROGRESS") {
        Check::warn(
            "stack",
            format!("{status}: a deployment is under way, so the function may change"),
            "run doctor again once the stack is *_COMPLETE",
        )
        .with_detail(parameters)
    } else if status == "UPDATE_ROLLBACK_COMPLETE" {
        Check::warn(
            "stack",
            "UPDATE_ROLLBACK_COMPLETE: the last update failed and was rolled back, so the previous version runs",
            "read the stack's events for the failed update and deploy again",
        )
        .with_detail(parameters)
    } else {
        Check::pass("stack", format!("{status}; {parameters}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    fn stack(status: &str) -> Stack {
        Stack {
            name: "s".into(),
            status: status.into(),
            api_url: Some("https://x/".into()),
            function_arn: Some("arn".into()),
            log_group: Some("/aws/lambda/s-backend".into()),
            transport: Some("collector".into()),
            ..Stack::default()
        }
    }

    #[test]
    fn judges_the_status_and_the_outputs() {
        assert_eq!(check(&stack("CREATE_COMPLETE")).status, Status::Pass);
        assert_eq!(check(&stack("UPDATE_IN_PROGRESS")).status, Status::Warn);
        assert_eq!(
            check(&stack("UPDATE_ROLLBACK_COMPLETE")).status,
            Status::Warn
        );
        assert_eq!(check(&stack("ROLLBACK_COMPLETE")).status, Status::Fail);
        assert_eq!(check(&stack("CREATE_FAILED")).status, Status::Fail);
        let mut partial = stack("CREATE_COMPLETE");
        partial.log_group = None;
        let failed = check(&partial);
        assert_eq!(failed.status, Status::Fail);
        assert!(
            failed
                .summary
                .ends_with("the outputs lack FunctionLogGroupName")
        );
    }
}

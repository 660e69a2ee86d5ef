//! X-Ray Transaction Search (`GetTraceSegmentDestination`): on when spans go to CloudWatch Logs
//! (`aws/spans`) and the destination is `ACTIVE`. X-Ray's OTLP endpoint accepts spans only then,
//! so the transports that send there need it; where the deployment says it is on, it must be;
//! elsewhere it is reported. It also tells the live check to look for the trace in `aws/spans`.

use aws_sdk_xray::Client;
use aws_sdk_xray::types::{TraceSegmentDestination, TraceSegmentDestinationStatus};

use crate::aws::{AwsFailure, doctor_fix};
use crate::report::Check;

/// What X-Ray answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `CloudWatchLogs`, `ACTIVE`: Transaction Search is on.
    Active,
    /// `CloudWatchLogs`, `PENDING`: being turned on.
    Pending,
    /// `XRay`: off.
    XRay,
    Unreadable(AwsFailure),
}

impl Destination {
    pub fn is_active(&self) -> bool {
        *self == Destination::Active
    }
}

/// Why this deployment needs Transaction Search, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// The transport sends to X-Ray's OTLP endpoint (the reason, said in the check).
    Required(String),
    /// The deployment says it is on (`TransactionSearch=enable` or `already-enabled`).
    Declared(String),
    /// Needed only if the collector exports with `otlphttp`, which the doctor cannot see.
    Unknown(String),
    NotNeeded(String),
}

pub async fn read(client: &Client) -> Destination {
    match client.get_trace_segment_destination().send().await {
        Ok(out) => match (out.destination(), out.status()) {
            (
                Some(TraceSegmentDestination::CloudWatchLogs),
                Some(TraceSegmentDestinationStatus::Active),
            ) => Destination::Active,
            (Some(TraceSegmentDestination::CloudWatchLogs), _) => Destination::Pending,
            _ => Destination::XRay,
        },
        Err(e) => Destination::Unreadable(AwsFailure::from_sdk(&e)),
    }
}

/// The check; `turn_on` is how this deployment turns it on (the template parameter or the
/// Terraform variable).
pub fn check(destination: &Destination, need: &Need, turn_on: &str) -> Check {
    let id = "transaction_search";
    let fix = format!(
        "enable Transaction Search: {turn_on}, or from the console or CLI (docs/tracing.md#transaction-search-turning-it-on; aws xray update-trace-segment-destination --destination CloudWatchLogs)"
    );
    match (destination, need) {
        (Destination::Active, Need::NotNeeded(why)) => {
            Check::pass(id, format!("on (spans also land in aws/spans); {why}"))
        }
        (Destination::Active, Need::Required(why) | Need::Declared(why) | Need::Unknown(why)) => {
            Check::pass(
                id,
                format!("on (destination CloudWatchLogs, ACTIVE): {why}"),
            )
        }
        (Destination::Pending, Need::NotNeeded(why)) => {
            Check::skip(id, format!("being turned on (PENDING); {why}"))
        }
        (Destination::Pending, _) => Check::warn(
            id,
            "being turned on (destination CloudWatchLogs, PENDING): X-Ray's OTLP endpoint may refuse spans until it is ACTIVE",
            "wait a few minutes and run doctor again",
        ),
        (Destination::XRay, Need::NotNeeded(why)) => {
            Check::skip(id, format!("off (destination XRay); {why}"))
        }
        (Destination::XRay, Need::Required(why)) => Check::fail(
            id,
            format!("off (destination XRay), but {why}: X-Ray refuses every span it sends"),
            fix,
        ),
        (Destination::XRay, Need::Declared(why)) => {
            Check::fail(id, format!("off (destination XRay), but {why}"), fix)
        }
        (Destination::XRay, Need::Unknown(why)) => Check::warn(
            id,
            format!("off (destination XRay): {why}"),
            format!(
                "if the collector exports with otlphttp to X-Ray's OTLP endpoint, {fix}; with awsxray it is not needed"
            ),
        ),
        (Destination::Unreadable(failure), Need::NotNeeded(why)) => {
            Check::skip(id, format!("not read ({failure}); {why}"))
        }
        (Destination::Unreadable(failure), _) => Check::warn(
            id,
            format!("could not read whether it is on: {failure}"),
            doctor_fix(failure, "xray:GetTraceSegmentDestination"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    #[test]
    fn only_a_transport_that_needs_it_fails_without_it() {
        let required =
            Need::Required("TelemetryTransport=otlp-xray sends to X-Ray's OTLP endpoint".into());
        let not_needed = Need::NotNeeded("the awsxray exporter does not need it".into());
        let failed = check(&Destination::XRay, &required, "TransactionSearch=enable");
        assert_eq!(failed.status, Status::Fail);
        assert!(
            failed
                .fix
                .as_deref()
                .unwrap_or_default()
                .starts_with("enable Transaction Search: TransactionSearch=enable")
        );
        assert_eq!(
            check(&Destination::XRay, &not_needed, "x").status,
            Status::Skip
        );
        assert_eq!(
            check(&Destination::Active, &required, "x").status,
            Status::Pass
        );
        assert_eq!(
            check(&Destination::Pending, &required, "x").status,
            Status::Warn
        );
        let denied = Destination::Unreadable(AwsFailure {
            code: Some("AccessDeniedException".into()),
            text: "AccessDeniedException".into(),
        });
        let unread = check(&denied, &required, "x");
        assert_eq!(unread.status, Status::Warn);
        assert_eq!(
            unread.fix.as_deref(),
            Some("let the identity running doctor call xray:GetTraceSegmentDestination")
        );
    }
}

//! The collector sidecar's log group: lines of the last minutes that say an export failed
//! (the exporter helper's "Exporting failed", X-Ray's refusals). Searched with a filter pattern
//! and matched again here; reported by count, kind and age with the command to read them,
//! never quoted: a signature error can quote what was signed, session token included.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatchlogs::Client;

use crate::aws::doctor_fix;
use crate::log_search;
use crate::report::Check;

/// What an export failure line contains, most specific first (a line counts once, for the
/// first it contains).
pub const MARKERS: [&str; 6] = [
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "Permanent error",
    "Exporting failed",
];

/// Pages of 100 events read at most.
const MAX_PAGES: usize = 20;

/// The CloudWatch Logs pattern matching any marker.
pub fn pattern() -> String {
    MARKERS
        .iter()
        .map(|m| format!("?\"{m}\""))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lines of each kind found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub by_marker: Vec<(&'static str, usize)>,
    /// The newest matching line's time (ms since the epoch) and stream.
    pub newest: Option<(i64, String)>,
}

impl Found {
    pub fn total(&self) -> usize {
        self.by_marker.iter().map(|(_, n)| n).sum()
    }

    fn has(&self, marker: &str) -> bool {
        self.by_marker.iter().any(|(m, _)| *m == marker)
    }
}

/// Counts the lines (message, stream, time) that hold a marker.
pub fn scan<'a>(lines: impl IntoIterator<Item = (&'a str, &'a str, i64)>) -> Found {
    let mut found = Found::default();
    for (message, stream, time) in lines {
        let Some(marker) = MARKERS.iter().find(|m| message.contains(**m)) else {
            continue;
        };
        match found.by_marker.iter_mut().find(|(m, _)| m == marker) {
            Some((_, n)) => *n += 1,
            None => found.by_marker.push((marker, 1)),
        }
        if found.newest.as_ref().is_none_or(|(t, _)| time > *t) {
            found.newest = Some((time, stream.to_owned()));
        }
    }
    found
}

/// The check over `group` for the last `since`.
pub async fn check(client: &Client, group: &str, since: Duration) -> Check {
    let id = "collector.export_errors";
    let now = SystemTime::now();
    let start = now
        .checked_sub(since)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let minutes = since.as_secs() / 60;
    let lines = match log_search::search(client, group, &pattern(), start, MAX_PAGES).await {
        Ok(Some(lines)) => lines,
        Ok(None) => {
            return Check::fail(
                id,
                format!("the collector's log group {group} does not exist: its errors are nowhere"),
                "create it (Terraform creates /ecs/<name>/collector) or fix the container's awslogs-group",
            );
        }
        Err(failure) => {
            return Check::fail(
                id,
                format!("could not read {group}: {failure}"),
                doctor_fix(&failure, "logs:FilterLogEvents"),
            );
        }
    };
    let found = scan(
        lines
            .iter()
            .map(|e| (e.message.as_str(), e.stream.as_str(), e.time)),
    );
    let Some((newest, stream)) = &found.newest else {
        return Check::pass(
            id,
            format!("no export error in {group} in the last {minutes} minutes"),
        );
    };
    let kinds = found
        .by_marker
        .iter()
        .map(|(m, n)| format!("{m} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let age = ((now_ms - newest).max(0) / 60_000).to_string();
    let fix = if found.has("AccessDeniedException") {
        "give the task role xray:PutTraceSegments (deploy/ecs/terraform/iam.tf's XRaySpans statement)"
    } else if found.has("UnrecognizedClientException")
        || found.has("InvalidSignatureException")
        || found.has("ExpiredTokenException")
    {
        "X-Ray refuses the collector's credentials or signature: it signs with the task role's credentials; check the task role and, for a signature error, the collector's sigv4auth region"
    } else {
        "read the lines (command above): a refusal from X-Ray's OTLP endpoint usually means Transaction Search is off (transaction_search), a connection error the network path to X-Ray"
    };
    Check::fail(
        id,
        format!(
            "{} export error line(s) in {group} in the last {minutes} minutes ({kinds}); the newest {age} min ago in stream {stream}",
            found.total()
        ),
        fix,
    )
    .with_detail(format!(
        "aws logs filter-log-events --log-group-name {group} --start-time {start} --filter-pattern '{}'",
        pattern()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_line_once_by_its_most_specific_marker() {
        let found = scan([
            ("info\tservice started", "collector/a", 1),
            (
                "error\texporterhelper\tExporting failed. Dropping data.\t{\"error\": \"AccessDeniedException: not authorized\"}",
                "collector/a",
                5,
            ),
            (
                "error\texporterhelper\tExporting failed. Will retry the request after interval.",
                "collector/b",
                9,
            ),
        ]);
        assert_eq!(
            found.by_marker,
            [("AccessDeniedException", 1), ("Exporting failed", 1)]
        );
        assert_eq!(found.total(), 2);
        assert_eq!(found.newest, Some((9, "collector/b".into())));
        assert_eq!(scan([("all good", "s", 1)]), Found::default());
    }

    #[test]
    fn the_pattern_names_every_marker() {
        assert_eq!(
            pattern(),
            "?\"AccessDeniedException\" ?\"UnrecognizedClientException\" ?\"InvalidSignatureException\" ?\"ExpiredTokenException\" ?\"Permanent error\" ?\"Exporting failed\""
        );
    }
}

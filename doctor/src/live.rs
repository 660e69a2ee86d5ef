//! The live check both platforms share: one request to the API, then, until the trace and its
//! log lines are found or `--timeout` passes, X-Ray (`BatchGetTraces`), `aws/spans` (with
//! Transaction Search on) and the backend's log group (`FilterLogEvents` on the trace id) polled
//! a few times a second at most; then one check each for the request, the trace and the logs.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatchlogs::Client as LogsClient;
use aws_sdk_xray::Client as XrayClient;
use serde_json::Value;

use crate::aws::{AwsFailure, doctor_fix};
use crate::evidence;
use crate::log_search;
use crate::probe;
use crate::report::Check;
use crate::trace_id::TraceId;

/// The group Transaction Search stores spans in.
pub const SPANS_LOG_GROUP: &str = "aws/spans";

/// Log events looked at per poll and source, at most (pages of 100).
const MAX_PAGES: usize = 10;

/// Where the request ran, which changes what a missing trace means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Lambda { tracing_active: bool },
    Ecs,
}

/// Everything the live check needs.
pub struct Live<'a> {
    pub url: &'a str,
    pub xray: &'a XrayClient,
    pub logs: &'a LogsClient,
    pub log_group: Option<&'a str>,
    /// Transaction Search is on: also look in `aws/spans`.
    pub spans: bool,
    pub service: &'a str,
    pub timeout: Duration,
    pub platform: Platform,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Trace {
    Missing,
    /// Segments or spans of the trace, none of them the backend's.
    OthersOnly,
    Backend {
        source: &'static str,
        count: usize,
    },
    Unreadable(AwsFailure),
}

impl Trace {
    fn rank(&self) -> u8 {
        match self {
            Trace::Unreadable(_) => 0,
            Trace::Missing => 1,
            Trace::OthersOnly => 2,
            Trace::Backend { .. } => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Logs {
    Missing,
    Found(usize),
    NoGroup,
    Unreadable(AwsFailure),
}

/// Sends the request and waits for its trace and log lines.
pub async fn run(live: Live<'_>) -> (Vec<Check>, Option<TraceId>) {
    let started = Instant::now();
    let since_ms = SystemTime::now()
        .checked_sub(Duration::from_secs(60))
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let answer = probe::send(live.url, live.timeout.min(Duration::from_secs(15))).await;
    let (request, trace_id) = probe::check(live.url, &answer);
    let mut checks = vec![request];
    let Some(trace_id) = trace_id else {
        checks.push(Check::skip("trace", "no trace id to look for"));
        checks.push(Check::skip("logs", "no trace id to look for"));
        return (checks, None);
    };
    let deadline = started + live.timeout;
    let interval = (live.timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(2));
    let mut trace: Option<Trace> = None;
    let mut logs = if live.log_group.is_some() {
        Logs::Missing
    } else {
        Logs::NoGroup
    };
    loop {
        if !matches!(trace, Some(Trace::Backend { .. })) {
            let mut now = xray_trace(live.xray, &trace_id, live.service).await;
            if live.spans && !matches!(now, Trace::Backend { .. }) {
                let spans = spans_trace(live.logs, &trace_id, live.service, since_ms).await;
                if spans.rank() > now.rank() {
                    now = spans;
                }
            }
            // The best answer so far is kept: a later error does not hide a trace seen.
            if trace.as_ref().is_none_or(|seen| now.rank() >= seen.rank()) {
                trace = Some(now);
            }
        }
        if let (Some(group), false) = (live.log_group, matches!(logs, Logs::Found(_))) {
            logs = log_lines(live.logs, group, &trace_id, since_ms).await;
        }
        let done = matches!(trace, Some(Trace::Backend { .. }))
            && (matches!(logs, Logs::Found(_)) || live.log_group.is_none());
        let now = Instant::now();
        if done || now >= deadline {
            break;
        }
        // The last poll is at the deadline itself.
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
    // What "after N s" reports when something is missing: the whole time allowed was used.
    let waited = live.timeout.as_secs();
    let trace = trace.unwrap_or(Trace::Missing);
    checks.push(trace_check(&live, &trace_id, &trace, &logs, waited));
    checks.push(logs_check(&live, &trace_id, &logs, waited));
    (checks, Some(trace_id))
}

async fn xray_trace(client: &XrayClient, trace_id: &TraceId, service: &str) -> Trace {
    let out = match client
        .batch_get_traces()
        .trace_ids(trace_id.as_str())
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => return Trace::Unreadable(AwsFailure::from_sdk(&e)),
    };
    let documents: Vec<Value> = out
        .traces()
        .iter()
        .flat_map(|t| t.segments())
        .filter_map(|s| s.document())
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let backend = documents
        .iter()
        .filter(|d| evidence::segment_is_backends(d, service))
        .count();
    match (documents.len(), backend) {
        (0, _) => Trace::Missing,
        (_, 0) => Trace::OthersOnly,
        (_, count) => Trace::Backend {
            source: "X-Ray",
            count,
        },
    }
}

/// Messages of `group` holding `needle` (a quoted-term search, matched again here); `None`
/// when the group does not exist.
async fn events(
    client: &LogsClient,
    group: &str,
    needle: &str,
    since_ms: i64,
) -> Result<Option<Vec<String>>, AwsFailure> {
    let found =
        log_search::search(client, group, &format!("\"{needle}\""), since_ms, MAX_PAGES).await?;
    Ok(found.map(|events| {
        events
            .into_iter()
            .map(|e| e.message)
            .filter(|m| m.contains(needle))
            .collect()
    }))
}

async fn spans_trace(
    client: &LogsClient,
    trace_id: &TraceId,
    service: &str,
    since_ms: i64,
) -> Trace {
    let w3c = trace_id.w3c();
    match events(client, SPANS_LOG_GROUP, &w3c, since_ms).await {
        Err(failure) => Trace::Unreadable(failure),
        Ok(None) => Trace::Missing,
        Ok(Some(messages)) => {
            let spans: Vec<Value> = messages
                .iter()
                .filter_map(|m| serde_json::from_str::<Value>(m).ok())
                .filter(|v| v.get("traceId").and_then(Value::as_str) == Some(w3c.as_str()))
                .collect();
            let backend = spans
                .iter()
                .filter(|s| evidence::span_is_backends(s, &w3c, service))
                .count();
            match (spans.len(), backend) {
                (0, _) => Trace::Missing,
                (_, 0) => Trace::OthersOnly,
                (_, count) => Trace::Backend {
                    source: SPANS_LOG_GROUP,
                    count,
                },
            }
        }
    }
}

async fn log_lines(client: &LogsClient, group: &str, trace_id: &TraceId, since_ms: i64) -> Logs {
    match events(client, group, trace_id.as_str(), since_ms).await {
        Err(failure) => Logs::Unreadable(failure),
        Ok(None) => Logs::NoGroup,
        Ok(Some(lines)) if lines.is_empty() => Logs::Missing,
        Ok(Some(lines)) => Logs::Found(lines.len()),
    }
}

fn trace_check(live: &Live<'_>, id: &TraceId, trace: &Trace, logs: &Logs, waited: u64) -> Check {
    let where_ = if live.spans {
        "X-Ray or aws/spans"
    } else {
        "X-Ray"
    };
    let logs_found = matches!(logs, Logs::Found(_));
    match (trace, live.platform) {
        (Trace::Backend { source, count }, _) => Check::pass(
            "trace",
            format!(
                "trace {id} is in {source}: {count} {} of the backend",
                if *source == "X-Ray" {
                    "segment document(s)"
                } else {
                    "span(s)"
                }
            ),
        ),
        (Trace::Unreadable(failure), _) => Check::fail(
            "trace",
            format!("could not read {where_}: {failure}"),
            doctor_fix(failure, "xray:BatchGetTraces and logs:FilterLogEvents"),
        ),
        (Trace::OthersOnly, Platform::Lambda { .. }) => Check::fail(
            "trace",
            format!(
                "{where_} has Lambda's own segments of {id} but none of the backend's spans after {waited} s: tracing works, the transport does not deliver"
            ),
            "fix the failures above; the function's log lines with target apuntador::telemetry say why spans were dropped (collector unreachable, X-Ray refusing them)",
        ),
        (Trace::OthersOnly, Platform::Ecs) => Check::fail(
            "trace",
            format!("{where_} has segments of {id}, none of them the backend's, after {waited} s"),
            "fix the failures above; the collector's log group and the backend's lines with target apuntador::telemetry say why spans were dropped",
        ),
        (
            Trace::Missing,
            Platform::Lambda {
                tracing_active: false,
            },
        ) => Check::fail(
            "trace",
            format!("trace {id} is not in {where_} after {waited} s: active tracing is off"),
            "turn active tracing on (see function.tracing)",
        ),
        (
            Trace::Missing,
            Platform::Lambda {
                tracing_active: true,
            },
        ) if logs_found => Check::warn(
            "trace",
            format!(
                "trace {id} is not in {where_} after {waited} s, not even Lambda's own segments, while its log lines are: X-Ray did not sample this invocation (its default rule samples the first request each second and 5% of the rest)"
            ),
            "run doctor again: on a quiet function the request is sampled; delivery is confirmed only by a sampled one",
        ),
        (Trace::Missing, Platform::Ecs) if logs_found => Check::warn(
            "trace",
            format!(
                "trace {id} is not in {where_} after {waited} s while its log lines are: the sampler may have skipped it (X-Ray's rules through the sidecar sample one request a second and 5% of the rest by default)"
            ),
            "run doctor again; if the trace never comes, the collector's export errors and the backend's lines with target apuntador::telemetry say why",
        ),
        (Trace::Missing, _) => Check::fail(
            "trace",
            format!(
                "trace {id} is not in {where_} after {waited} s, and its log lines are missing too"
            ),
            "the request may not have reached the backend: see the request and logs checks; then the failures above",
        ),
    }
}

fn logs_check(live: &Live<'_>, id: &TraceId, logs: &Logs, waited: u64) -> Check {
    let group = live.log_group.unwrap_or_default();
    let (redeploy, where_set) = match live.platform {
        Platform::Lambda { .. } => (
            "redeploy the stack: the template creates FunctionLogGroup and points the function's LoggingConfig at it",
            "the function's LoggingConfig (LogFormat JSON)",
        ),
        Platform::Ecs => (
            "create the group the backend container's awslogs-group names (Terraform creates /ecs/<name>)",
            "the backend container's awslogs-group, and LOG_FORMAT=json",
        ),
    };
    match logs {
        Logs::Found(count) => Check::pass(
            "logs",
            format!("{count} log line(s) with trace_id {id} in {group}"),
        ),
        Logs::NoGroup if live.log_group.is_none() => {
            Check::skip("logs", "no log group known for the backend")
        }
        Logs::NoGroup => Check::fail(
            "logs",
            format!("the log group {group} does not exist"),
            redeploy,
        ),
        Logs::Missing => Check::fail(
            "logs",
            format!("no log line with trace_id {id} in {group} after {waited} s"),
            format!("check {where_set}; a request that never reached the backend leaves no line"),
        ),
        Logs::Unreadable(failure) => Check::fail(
            "logs",
            format!("could not read {group}: {failure}"),
            doctor_fix(failure, "logs:FilterLogEvents"),
        ),
    }
}

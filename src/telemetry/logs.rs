//! Log lines: JSON on stdout by default (one object per line with `timestamp`, `level`,
//! `message`, `target`, the event's fields, `service`, and inside a request `trace_id` (and
//! `xray_trace_id`, the name AWS Lambda Powertools loggers use) in X-Ray form and `span_id`
//! (from its span, or from the bare OpenTelemetry context an unsampled server request runs
//! under); under Lambda also `function_name` and `function_memory_size` on every line, and
//! inside an invocation `function_arn`, `function_request_id` and `cold_start`, the keys a
//! Powertools logger writes), or human text. A key appears once: an event field named like one
//! the line writes itself gives way to it. Where the bytes go is [`super::log_sink`]'s.
//!
//! The X-Ray trace id is what joins CloudWatch Logs to X-Ray: Logs Insights can filter on
//! `trace_id` and X-Ray shows the same id. Field names that look like credentials are redacted
//! whatever their value. The saved queries over these lines (`deploy/queries/logs/`) name the
//! fields they read, and `tests/e2e/log_queries.rs` holds the lines to them.

use crate::env::{Env, under_lambda};
use std::io::Write;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::log_sink::LogSink;
use super::xray::xray_trace_id_bytes;

/// Log output format, from `LOG_FORMAT` or else `AWS_LAMBDA_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Human,
}

impl LogFormat {
    pub fn from_env(env: Env<'_>) -> Self {
        let raw = env
            .get("LOG_FORMAT")
            .or_else(|| env.get("AWS_LAMBDA_LOG_FORMAT"));
        match raw.map(|v| v.to_ascii_lowercase()).as_deref() {
            Some("human" | "text" | "pretty") => Self::Human,
            _ => Self::Json,
        }
    }
}

/// The filter directives for log lines: `RUST_LOG` verbatim, else the level from
/// `AWS_LAMBDA_LOG_LEVEL` or `LOG_LEVEL` (default `info`) with chatty dependencies held at warn.
pub fn filter_directives(env: Env<'_>) -> String {
    if let Some(directives) = env.get("RUST_LOG") {
        return directives;
    }
    let level = env
        .get("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|| env.get("LOG_LEVEL"))
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "fatal" | "critical" => "error".to_owned(),
            "warning" => "warn".to_owned(),
            other => other.to_owned(),
        })
        .filter(|l| matches!(l.as_str(), "trace" | "debug" | "info" | "warn" | "error"))
        .unwrap_or_else(|| "info".to_owned());
    format!(
        "{level},hyper=warn,hyper_util=warn,h2=warn,tonic=warn,tower=warn,reqwest=warn,\
         lambda_runtime=warn,lambda_runtime_api_client=warn,lambda_http=warn"
    )
}

/// Keys every line of the process carries: `service`, and under Lambda `function_name` and
/// `function_memory_size` (fixed for the sandbox's life), written once as a JSON fragment.
#[derive(Debug, Clone, Default)]
pub struct FixedFields {
    fragment: Vec<u8>,
    keys: Vec<&'static str>,
}

impl FixedFields {
    /// `service` alone (server mode, tests).
    pub fn service(service: &str) -> Self {
        Self::new(service, None)
    }

    /// `service`, and the function's name and memory size when `lambda` has them.
    pub fn new(service: &str, lambda: Option<(&str, u32)>) -> Self {
        let mut fragment = b",\"service\":".to_vec();
        write_str_value(&mut fragment, service);
        let mut keys = vec!["service"];
        if let Some((name, memory)) = lambda {
            fragment.extend_from_slice(b",\"function_name\":");
            write_str_value(&mut fragment, name);
            let _ = write!(fragment, ",\"function_memory_size\":{memory}");
            keys.extend(["function_name", "function_memory_size"]);
        }
        Self { fragment, keys }
    }

    /// From the Lambda variables when they are there.
    pub fn from_env(service: &str, env: Env<'_>) -> Self {
        let name = env.get("AWS_LAMBDA_FUNCTION_NAME");
        let memory = env
            .get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
            .and_then(|m| m.parse::<u32>().ok());
        match (name, memory) {
            (Some(name), Some(memory)) if under_lambda(env) => {
                Self::new(service, Some((&name, memory)))
            }
            _ => Self::service(service),
        }
    }
}

/// Lambda keys found on the request span, copied to every line logged inside it (shared, so
/// a line clones pointers, not text).
#[derive(Debug, Clone, Default)]
struct LambdaKeys {
    request_id: Option<Arc<str>>,
    function_arn: Option<Arc<str>>,
    cold_start: Option<bool>,
}

impl LambdaKeys {
    fn set(&mut self, name: &str, value: &str) {
        match name {
            "faas.invocation_id" => self.request_id = Some(value.into()),
            "cloud.resource_id" => self.function_arn = Some(value.into()),
            _ => {}
        }
    }
}

impl Visit for LambdaKeys {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "faas.coldstart" {
            self.cold_start = Some(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if matches!(field.name(), "faas.invocation_id" | "cloud.resource_id") {
            self.set(field.name(), format!("{value:?}").trim_matches('"'));
        }
    }
}

/// Field names whose values never reach a log line.
fn is_sensitive(name: &str) -> bool {
    let contains = |needle: &str| {
        name.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    [
        "secret",
        "token",
        "password",
        "authorization",
        "api_key",
        "apikey",
        "verifier",
        "cookie",
    ]
    .iter()
    .any(|s| contains(s))
        || name.eq_ignore_ascii_case("code")
}

/// Writes text as the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        escape_into(self.0, text);
        Ok(())
    }
}

fn escape_into(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

fn write_str_value(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escape_into(out, text);
    out.push(b'"');
}

/// The event's fields, written into the line as they are visited.
struct EventFields<'a> {
    out: &'a mut Vec<u8>,
    /// Keys already in the line (or that the line writes itself): a field of the same name is
    /// left out, so each key appears once.
    written: Vec<&'static str>,
    has_message: bool,
}

impl EventFields<'_> {
    /// Starts `"name":` for a field that may be written, or says to skip it.
    fn key(&mut self, field: &Field) -> Option<bool> {
        let name = field.name();
        if name == "message" {
            if self.has_message {
                return None;
            }
            self.has_message = true;
        } else if self.written.contains(&name) {
            return None;
        } else {
            self.written.push(name);
        }
        self.out.extend_from_slice(b",\"");
        escape_into(self.out, name);
        self.out.extend_from_slice(b"\":");
        if is_sensitive(name) {
            self.out.extend_from_slice(b"\"[redacted]\"");
            return Some(false);
        }
        Some(true)
    }

    fn display(&mut self, field: &Field, value: &dyn std::fmt::Display) {
        if self.key(field) == Some(true) {
            self.out.push(b'"');
            let _ = std::fmt::Write::write_fmt(&mut JsonEscaped(self.out), format_args!("{value}"));
            self.out.push(b'"');
        }
    }
}

impl Visit for EventFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) == Some(true) {
            write_str_value(self.out, value);
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) == Some(true) {
            self.out
                .extend_from_slice(if value { b"true" } else { b"false" });
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) == Some(true) {
            let _ = write!(self.out, "{value}");
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) == Some(true) {
            let _ = write!(self.out, "{value}");
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) == Some(true) {
            if value.is_finite() {
                let _ = write!(self.out, "{value}");
            } else {
                self.out.extend_from_slice(b"null");
            }
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.display(field, &value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.display(field, &format_args!("{value:?}"));
    }
}

/// `2026-12-01T10:58:55.888Z`: the part up to the seconds is formatted once per second per
/// thread.
fn write_timestamp(out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: std::cell::RefCell<(i64, String)> = const {
            std::cell::RefCell::new((i64::MIN, String::new()))
        };
    }
    let now = chrono::Utc::now();
    let secs = now.timestamp();
    let millis = now.timestamp_subsec_millis().min(999);
    SECOND.with(|cell| match cell.try_borrow_mut() {
        Ok(mut cached) => {
            if cached.0 != secs {
                *cached = (secs, now.format("%Y-%m-%dT%H:%M:%S").to_string());
            }
            let _ = write!(out, "\"{}.{millis:03}Z\"", cached.1);
        }
        Err(_) => {
            let _ = write!(out, "\"{}\"", now.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
        }
    });
}

fn write_ids(out: &mut Vec<u8>, sc: &opentelemetry::trace::SpanContext) {
    let trace_id = xray_trace_id_bytes(sc.trace_id());
    out.extend_from_slice(b",\"trace_id\":\"");
    out.extend_from_slice(&trace_id);
    out.extend_from_slice(b"\",\"xray_trace_id\":\"");
    out.extend_from_slice(&trace_id);
    let _ = write!(out, "\",\"span_id\":\"{}\"", sc.span_id());
}

/// The JSON-lines layer.
pub struct JsonLines {
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
    sink: LogSink,
    fixed: FixedFields,
}

impl JsonLines {
    pub fn new(sink: LogSink, fixed: FixedFields) -> Self {
        Self {
            dispatch: OnceLock::new(),
            sink,
            fixed,
        }
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

impl<S> tracing_subscriber::Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut keys = LambdaKeys::default();
        attrs.record(&mut keys);
        if (keys.request_id.is_some() || keys.function_arn.is_some())
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(keys);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        thread_local! {
            static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.format(event, &ctx, &mut line);
                self.sink.write(&line);
                if line.capacity() > 64 * 1024 {
                    *line = Vec::new();
                }
            }
            Err(_) => {
                let mut line = Vec::new();
                self.format(event, &ctx, &mut line);
                self.sink.write(&line);
            }
        });
    }
}

impl JsonLines {
    fn format<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, out: &mut Vec<u8>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        // What the line says about its context, found first: those keys are the line's own,
        // and an event field of the same name gives way to them (and only to them: an event
        // logged outside a request may carry its own `function_request_id`).
        let span = ctx.event_span(event);
        let mut ids = None;
        let mut lambda = LambdaKeys::default();
        match &span {
            Some(span) => {
                if let Some(dispatch) = self.dispatch.get().and_then(|d| d.upgrade())
                    && let Some(cx) = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)
                {
                    let sc = cx.span().span_context().clone();
                    ids = sc.is_valid().then_some(sc);
                }
                for ancestor in span.scope() {
                    if let Some(keys) = ancestor.extensions().get::<LambdaKeys>() {
                        lambda = keys.clone();
                        break;
                    }
                }
            }
            // An unsampled server request runs under a bare OpenTelemetry context, no span.
            None => opentelemetry::Context::map_current(|cx| {
                let sc = cx.span().span_context().clone();
                ids = sc.is_valid().then_some(sc);
            }),
        }
        let mut taken: Vec<&'static str> = vec!["timestamp", "level", "target"];
        taken.extend(&self.fixed.keys);
        if ids.is_some() {
            taken.extend(["trace_id", "xray_trace_id", "span_id"]);
        }
        if lambda.request_id.is_some() {
            taken.push("function_request_id");
        }
        if lambda.function_arn.is_some() {
            taken.push("function_arn");
        }
        if lambda.cold_start.is_some() {
            taken.push("cold_start");
        }

        let metadata = event.metadata();
        out.extend_from_slice(b"{\"timestamp\":");
        write_timestamp(out);
        out.extend_from_slice(b",\"level\":\"");
        out.extend_from_slice(level_name(metadata.level()).as_bytes());
        out.push(b'"');
        let mut fields = EventFields {
            out,
            written: taken,
            has_message: false,
        };
        event.record(&mut fields);
        if !fields.has_message {
            out.extend_from_slice(b",\"message\":\"\"");
        }
        out.extend_from_slice(b",\"target\":");
        write_str_value(out, metadata.target());
        out.extend_from_slice(&self.fixed.fragment);
        if let Some(sc) = &ids {
            write_ids(out, sc);
        }
        if let Some(arn) = &lambda.function_arn {
            out.extend_from_slice(b",\"function_arn\":");
            write_str_value(out, arn);
        }
        if let Some(id) = &lambda.request_id {
            out.extend_from_slice(b",\"function_request_id\":");
            write_str_value(out, id);
        }
        if let Some(cold) = lambda.cold_start {
            let _ = write!(out, ",\"cold_start\":{cold}");
        }
        out.extend_from_slice(b"}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn format_prefers_log_format_then_lambda() {
        let format = |vars: &[(&str, &str)]| LogFormat::from_env(Env::new(&lookup(vars)));
        assert_eq!(format(&[]), LogFormat::Json);
        assert_eq!(
            format(&[("AWS_LAMBDA_LOG_FORMAT", "Text")]),
            LogFormat::Human
        );
        assert_eq!(
            format(&[("LOG_FORMAT", "json"), ("AWS_LAMBDA_LOG_FORMAT", "Text")]),
            LogFormat::Json
        );
    }

    #[test]
    fn level_comes_from_rust_log_then_lambda_then_log_level() {
        let filter = |vars: &[(&str, &str)]| filter_directives(Env::new(&lookup(vars)));
        assert_eq!(filter(&[("RUST_LOG", "debug")]), "debug");
        assert!(
            filter(&[("AWS_LAMBDA_LOG_LEVEL", "WARN"), ("LOG_LEVEL", "debug")])
                .starts_with("warn,")
        );
        assert!(filter(&[("LOG_LEVEL", "FATAL")]).starts_with("error,"));
        assert!(filter(&[("LOG_LEVEL", "loud")]).starts_with("info,"));
    }

    /// What `f` logs through the JSON layer alone, as written.
    fn json_lines(f: impl FnOnce()) -> String {
        use tracing_subscriber::layer::SubscriberExt;
        let out = crate::telemetry::log_sink::tests::Captured::default();
        let sink = LogSink::direct_to(Box::new(out.clone()));
        let subscriber = tracing_subscriber::Registry::default()
            .with(JsonLines::new(sink, FixedFields::service("svc")));
        tracing::subscriber::with_default(subscriber, f);
        out.text()
    }

    #[test]
    fn lines_are_json_with_escaping_redaction_and_one_value_per_key() {
        let text = json_lines(|| {
            let odd = "tab\there \"quoted\" \\ \u{1} é";
            tracing::info!(
                client_secret = "hunter2",
                level = "fake",
                count = 3u64,
                ratio = 0.5,
                nan = f64::NAN,
                ok = true,
                detail = ?Some(odd),
                "said {odd}"
            );
            tracing::warn!(code = "abc");
        });
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert_eq!(first["message"], "said tab\there \"quoted\" \\ \u{1} é");
        assert_eq!(
            first["level"], "INFO",
            "an event field cannot replace the line's own"
        );
        assert_eq!(first["client_secret"], "[redacted]");
        assert_eq!(first["count"], 3);
        assert_eq!(first["ratio"], 0.5);
        assert_eq!(first["nan"], serde_json::Value::Null);
        assert_eq!(first["ok"], true);
        assert!(
            first["detail"]
                .as_str()
                .unwrap()
                .starts_with("Some(\"tab\\t")
        );
        assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(text.lines().next().unwrap().matches("\"level\"").count(), 1);
        assert_eq!(lines[1]["code"], "[redacted]");
        assert_eq!(lines[1]["message"], "", "a line always has a message");
        assert!(!text.contains("hunter2") && !text.contains("abc"));
    }

    #[test]
    fn an_event_outside_a_request_keeps_its_own_request_id() {
        let text = json_lines(|| {
            tracing::error!(function_request_id = "req-42", "invocation failed");
        });
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["function_request_id"], "req-42");
        assert_eq!(line["message"], "invocation failed");
    }

    #[test]
    fn credential_fields_are_redacted() {
        for name in [
            "client_secret",
            "access_token",
            "Authorization",
            "code_verifier",
            "code",
            "api_key",
        ] {
            assert!(is_sensitive(name), "{name}");
        }
        for name in ["method", "route", "status", "duration_ms", "provider"] {
            assert!(!is_sensitive(name), "{name}");
        }
    }
}

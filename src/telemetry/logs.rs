//! Log lines: JSON on stdout by default (one object per line with `timestamp`, `level`,
//! `message`, `target`, the event's fields, and inside a span `trace_id` in X-Ray form and
//! `span_id`; under Lambda also `function_request_id` and `cold_start`), or human text.
//!
//! The X-Ray trace id is what joins CloudWatch Logs to X-Ray: Logs Insights can filter on
//! `trace_id` and X-Ray shows the same id. Field names that look like credentials are redacted
//! whatever their value.

use crate::env::Env;
use std::io::Write;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::xray::xray_trace_id;

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

/// Lambda keys found on the request span, copied to every line logged inside it.
#[derive(Debug, Clone, Default)]
struct LambdaKeys {
    request_id: Option<String>,
    cold_start: Option<bool>,
}

impl Visit for LambdaKeys {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "faas.invocation_id" {
            self.request_id = Some(value.to_owned());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "faas.coldstart" {
            self.cold_start = Some(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "faas.invocation_id" {
            self.request_id = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

/// Field names whose values never reach a log line.
fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
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
    .any(|s| name.contains(s))
        || name == "code"
}

#[derive(Default)]
struct EventFields {
    message: Option<String>,
    fields: Vec<(&'static str, serde_json::Value)>,
}

impl EventFields {
    fn push(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        } else if is_sensitive(field.name()) {
            self.fields
                .push((field.name(), serde_json::Value::from("[redacted]")));
        } else {
            self.fields.push((field.name(), value));
        }
    }
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, format!("{value:?}").into());
    }
}

/// The JSON-lines layer.
#[derive(Default)]
pub struct JsonLines {
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
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
        if keys.request_id.is_some()
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(keys);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let metadata = event.metadata();

        let mut line = serde_json::Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        line.insert("level".into(), level_name(metadata.level()).into());
        line.insert("message".into(), fields.message.unwrap_or_default().into());
        line.insert("target".into(), metadata.target().into());

        if let Some(span) = ctx.event_span(event) {
            if let Some(dispatch) = self.dispatch.get().and_then(|d| d.upgrade())
                && let Some(cx) = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)
            {
                let otel_span = cx.span();
                let sc = otel_span.span_context();
                if sc.is_valid() {
                    line.insert("trace_id".into(), xray_trace_id(sc.trace_id()).into());
                    line.insert("span_id".into(), sc.span_id().to_string().into());
                }
            }
            for ancestor in span.scope() {
                if let Some(keys) = ancestor.extensions().get::<LambdaKeys>() {
                    if let Some(id) = &keys.request_id {
                        line.insert("function_request_id".into(), id.clone().into());
                    }
                    if let Some(cold) = keys.cold_start {
                        line.insert("cold_start".into(), cold.into());
                    }
                    break;
                }
            }
        }
        for (name, value) in fields.fields {
            line.entry(name).or_insert(value);
        }

        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        let _ = std::io::stdout().lock().write_all(&bytes);
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

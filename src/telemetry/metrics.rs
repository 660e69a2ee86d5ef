//! Metrics as CloudWatch Embedded Metric Format (EMF) lines on stdout: what the service counts,
//! how it aggregates between two flushes, and the documents it writes.
//!
//! CloudWatch Logs turns an EMF document in a log event into metrics, with no API call and no
//! `cloudwatch:PutMetricData` permission: under Lambda the function's stdout is its log group,
//! and on ECS the `awslogs` driver's `PutLogEvents` (the `x-amzn-logs-format: json/emf` header
//! is optional there, per the CloudWatch User Guide's "Using the PutLogEvents API to send
//! manually-created embedded metric format logs"). A request pays for a lock and a few
//! additions; documents are written after the response is posted (Lambda: once per
//! invocation, from the invocation loop) or every [`BACKGROUND_FLUSH_INTERVAL`] by a background
//! task (server mode and Lambda Managed Instances), and at shutdown.
//!
//! What is counted, with low-cardinality dimensions only (never an id):
//! - per route template (`service`, `route`; and `service` alone): `Requests`, `Latency` (ms),
//!   `4xx`, `5xx`; a path no route matched counts as `(unmatched)`;
//! - per outgoing dependency (`service`, `dependency`: an OAuth provider's name, `DynamoDB`,
//!   `SecretsManager`): `DependencyCalls`, `DependencyLatency` (ms), `DependencyFailures` (the
//!   dependency failed: no answer, a 5xx, throttling; a refusal of the request such as an
//!   expired OAuth code or a lost conditional write is a call, not a failure);
//! - per service: `ColdStart`, `CertificatesIssued`, `CertificatesRenewed`,
//!   `CertificatesRevoked`, `SpansDropped` (spans an exporter lost: failed exports, back-off,
//!   oversize, rejected by the endpoint), `SpanExportFailures` (exports that failed).
//!
//! Latencies are histograms in the shape Amazon's own EMF library writes
//! (`aws-embedded-metrics-java`, `model/Histogram.java`): `Values` and `Counts` of logarithmic
//! bins 10% wide, with exact `Count`, `Sum`, `Min` and `Max`. CloudWatch takes at most 100
//! values per metric in a document, so a server that saw more distinct bins between two
//! flushes writes more documents; nothing is dropped. Each bin's value is the mean of what fell
//! in it, so a single observation (every Lambda invocation) is reported exactly.
//!
//! Why not `metrics` + `metrics_cloudwatch_embedded`: that recorder keeps at most 100 unflushed
//! values per histogram and logs an error for every value beyond (a server flushing every
//! 10 s at 20 requests a second on one route would lose half its latencies and log each loss);
//! it has no bins. Why not `metrique`: it writes one document per unit of work (a line per
//! request in server mode) and brings a proc-macro stack for what is ~300 lines here.
//! Measured in `docs/benchmark.md`.
//!
//! Configuration follows AWS Lambda Powertools: `POWERTOOLS_METRICS_NAMESPACE` (default
//! [`DEFAULT_NAMESPACE`]); the `service` dimension is the service name of the traces
//! (`OTEL_SERVICE_NAME`); `POWERTOOLS_METRICS_DISABLED=true` or `OTEL_METRICS_EXPORTER=none`
//! turns metrics off.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use std::io::Write;

use crate::env::Env;

use super::TelemetryError;

/// Namespace when `POWERTOOLS_METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "Apuntador";

/// How often a server or a Lambda Managed Instances process writes its metrics (classic Lambda
/// writes after each invocation).
pub const BACKGROUND_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// CloudWatch's limit of values per metric in one document.
const MAX_VALUES: usize = 100;

/// Routes kept apart; a route template past these (there are far fewer) counts as `(other)`.
const MAX_ROUTES: usize = 64;

/// Width of a latency bin: ln(1.1), bins 10% wide (as `aws-embedded-metrics-java`).
const BIN_WIDTH: f64 = 0.095_310_179_804_324_87;

/// Metrics settings read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    pub enabled: bool,
    pub namespace: String,
}

impl MetricsSettings {
    pub fn from_env(env: Env<'_>) -> Result<Self, TelemetryError> {
        let exporter_on = match env
            .get("OTEL_METRICS_EXPORTER")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("emf") => true,
            Some("none") => false,
            Some(other) => {
                return Err(TelemetryError::Unsupported {
                    name: "OTEL_METRICS_EXPORTER",
                    value: other.to_owned(),
                    allowed: "emf (CloudWatch Embedded Metric Format on stdout), none",
                });
            }
        };
        let disabled = env
            .flag("POWERTOOLS_METRICS_DISABLED", false)
            .map_err(|e| TelemetryError::Invalid(e.to_string()))?;
        let namespace = env
            .get("POWERTOOLS_METRICS_NAMESPACE")
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        // CloudWatch: 1 to 255 characters, no colon; checked here so a bad value stops the
        // start, not every document.
        if namespace.len() > 255
            || namespace.contains(':')
            || namespace.chars().any(char::is_control)
        {
            return Err(TelemetryError::Unsupported {
                name: "POWERTOOLS_METRICS_NAMESPACE",
                value: namespace,
                allowed: "1 to 255 characters without ':'",
            });
        }
        Ok(Self {
            enabled: exporter_on && !disabled,
            namespace,
        })
    }
}

/// What happened to one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateEvent {
    Issued,
    Renewed,
    Revoked,
}

impl CertificateEvent {
    /// As log lines name it (`certificate_event`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Renewed => "renewed",
            Self::Revoked => "revoked",
        }
    }
}

/// One latency bin: how many observations, their sum, least and greatest.
#[derive(Debug, Clone, Copy)]
struct Bin {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

/// Latencies between two flushes, in logarithmic bins.
#[derive(Debug, Default)]
struct Histogram {
    bins: BTreeMap<i32, Bin>,
}

impl Histogram {
    fn record(&mut self, millis: f64) {
        let value = if millis.is_finite() && millis > 0.0 {
            millis
        } else {
            0.0
        };
        let index = if value > 0.0 {
            (value.ln() / BIN_WIDTH).floor() as i32
        } else {
            i32::MIN
        };
        self.bins
            .entry(index)
            .and_modify(|bin| {
                bin.count += 1;
                bin.sum += value;
                bin.min = bin.min.min(value);
                bin.max = bin.max.max(value);
            })
            .or_insert(Bin {
                count: 1,
                sum: value,
                min: value,
                max: value,
            });
    }

    /// The bins in groups of at most [`MAX_VALUES`], each group one EMF value.
    fn chunks(&self) -> Vec<Vec<&Bin>> {
        let bins: Vec<&Bin> = self.bins.values().collect();
        bins.chunks(MAX_VALUES).map(<[&Bin]>::to_vec).collect()
    }
}

/// One group of bins as an EMF histogram value: `Values` (each bin's mean), `Counts`, and the
/// group's exact `Count`, `Sum`, `Min`, `Max`.
fn write_histogram(out: &mut Vec<u8>, chunk: &[&Bin]) {
    let count: u64 = chunk.iter().map(|b| b.count).sum();
    let sum: f64 = chunk.iter().map(|b| b.sum).sum();
    let min = chunk.iter().map(|b| b.min).fold(f64::INFINITY, f64::min);
    let max = chunk.iter().map(|b| b.max).fold(0.0, f64::max);
    out.extend_from_slice(b"{\"Values\":[");
    for (i, bin) in chunk.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_number(out, bin.sum / bin.count as f64);
    }
    out.extend_from_slice(b"],\"Counts\":[");
    for (i, bin) in chunk.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "{}", bin.count);
    }
    let _ = write!(out, "],\"Count\":{count},\"Sum\":");
    write_number(out, sum);
    out.extend_from_slice(b",\"Min\":");
    write_number(out, min);
    out.extend_from_slice(b",\"Max\":");
    write_number(out, max);
    out.push(b'}');
}

/// Milliseconds to the microsecond, as a JSON number (Rust prints no exponent; a value that is
/// not finite, which recording never stores, is written as 0).
fn write_number(out: &mut Vec<u8>, millis: f64) {
    let rounded = round(millis);
    let _ = write!(out, "{}", if rounded.is_finite() { rounded } else { 0.0 });
}

/// A JSON string.
fn write_str(out: &mut Vec<u8>, text: &str) {
    // Writing a `&str` to a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Milliseconds to the microsecond.
fn round(millis: f64) -> f64 {
    (millis * 1000.0).round() / 1000.0
}

fn millis(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

#[derive(Debug, Default)]
struct RouteStats {
    requests: u64,
    client_errors: u64,
    server_errors: u64,
    latency: Histogram,
}

#[derive(Debug, Default)]
struct DependencyStats {
    calls: u64,
    failures: u64,
    latency: Histogram,
}

/// Service-wide counts, written only when one of them moved.
#[derive(Debug, Default)]
struct ServiceCounts {
    cold_starts: u64,
    issued: u64,
    renewed: u64,
    revoked: u64,
    spans_dropped: u64,
    export_failures: u64,
}

#[derive(Debug, Default)]
struct State {
    routes: BTreeMap<Box<str>, RouteStats>,
    dependencies: BTreeMap<&'static str, DependencyStats>,
    service: ServiceCounts,
}

/// The aggregate between two flushes, and how its documents are named.
#[derive(Debug)]
pub struct Metrics {
    namespace: String,
    service: String,
    state: Mutex<State>,
}

impl Metrics {
    pub fn new(namespace: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            service: service.into(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request(&self, route: Option<&str>, status: u16, elapsed: Duration) {
        let route = route.unwrap_or("(unmatched)");
        let mut state = self.state();
        let stats = match state.routes.get_mut(route) {
            Some(stats) => stats,
            None => {
                let key = if state.routes.len() < MAX_ROUTES {
                    route
                } else {
                    "(other)"
                };
                state.routes.entry(key.into()).or_default()
            }
        };
        stats.requests += 1;
        match status {
            400..=499 => stats.client_errors += 1,
            500..=599 => stats.server_errors += 1,
            _ => {}
        }
        stats.latency.record(millis(elapsed));
    }

    pub fn dependency(&self, name: &'static str, elapsed: Duration, failed: bool) {
        let mut state = self.state();
        let stats = state.dependencies.entry(name).or_default();
        stats.calls += 1;
        stats.failures += u64::from(failed);
        stats.latency.record(millis(elapsed));
    }

    pub fn cold_start(&self) {
        self.state().service.cold_starts += 1;
    }

    pub fn certificate(&self, event: CertificateEvent) {
        let mut state = self.state();
        match event {
            CertificateEvent::Issued => state.service.issued += 1,
            CertificateEvent::Renewed => state.service.renewed += 1,
            CertificateEvent::Revoked => state.service.revoked += 1,
        }
    }

    pub fn spans_dropped(&self, count: u64) {
        if count > 0 {
            self.state().service.spans_dropped += count;
        }
    }

    pub fn span_export_failed(&self) {
        self.state().service.export_failures += 1;
    }

    /// The EMF lines for everything counted since the last call (nothing when nothing was),
    /// timestamped `now_ms`, each carrying `properties` (the invocation's request and trace id
    /// under Lambda); the aggregate starts again from zero.
    pub fn drain(&self, now_ms: u64, properties: &[(&str, &str)]) -> Vec<u8> {
        let state = std::mem::take(&mut *self.state());
        let drain = Drain {
            metrics: self,
            now_ms,
            properties,
        };
        let mut out = Vec::new();
        for (route, stats) in &state.routes {
            drain.keyed(
                &mut out,
                r#"[["service","route"],["service"]]"#,
                ("route", route),
                ("Latency", &stats.latency),
                &[
                    ("Requests", stats.requests),
                    ("4xx", stats.client_errors),
                    ("5xx", stats.server_errors),
                ],
            );
        }
        for (name, stats) in &state.dependencies {
            drain.keyed(
                &mut out,
                r#"[["service","dependency"]]"#,
                ("dependency", name),
                ("DependencyLatency", &stats.latency),
                &[
                    ("DependencyCalls", stats.calls),
                    ("DependencyFailures", stats.failures),
                ],
            );
        }
        let counts = &state.service;
        let moved: Vec<(&str, u64)> = [
            ("ColdStart", counts.cold_starts),
            ("CertificatesIssued", counts.issued),
            ("CertificatesRenewed", counts.renewed),
            ("CertificatesRevoked", counts.revoked),
            ("SpansDropped", counts.spans_dropped),
            ("SpanExportFailures", counts.export_failures),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
        if !moved.is_empty() {
            drain.document(&mut out, r#"[["service"]]"#, None, None, &moved);
        }
        out
    }
}

/// What every document of one drain shares. Documents are written straight as text: a
/// `serde_json::Value` per document cost ~11 µs an invocation (benches/span_cost.rs), this
/// ~2 µs.
struct Drain<'a> {
    metrics: &'a Metrics,
    now_ms: u64,
    properties: &'a [(&'a str, &'a str)],
}

impl Drain<'_> {
    /// One document: `key` (a dimension besides `service`), a group of latency bins and counts.
    fn document(
        &self,
        out: &mut Vec<u8>,
        dimensions: &str,
        key: Option<(&str, &str)>,
        latency: Option<(&str, &[&Bin])>,
        counts: &[(&str, u64)],
    ) {
        let _ = write!(
            out,
            "{{\"_aws\":{{\"Timestamp\":{},\"CloudWatchMetrics\":[{{\"Namespace\":",
            self.now_ms
        );
        write_str(out, &self.metrics.namespace);
        let _ = write!(out, ",\"Dimensions\":{dimensions},\"Metrics\":[");
        let declared = latency
            .map(|(name, _)| (name, "Milliseconds"))
            .into_iter()
            .chain(counts.iter().map(|(name, _)| (*name, "Count")));
        for (i, (name, unit)) in declared.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = write!(out, "{{\"Name\":\"{name}\",\"Unit\":\"{unit}\"}}");
        }
        out.extend_from_slice(b"]}]},\"service\":");
        write_str(out, &self.metrics.service);
        for (name, value) in self.properties.iter().chain(key.as_ref()) {
            out.push(b',');
            write_str(out, name);
            out.push(b':');
            write_str(out, value);
        }
        if let Some((name, bins)) = latency {
            let _ = write!(out, ",\"{name}\":");
            write_histogram(out, bins);
        }
        for (name, n) in counts {
            let _ = write!(out, ",\"{name}\":{n}");
        }
        out.extend_from_slice(b"}\n");
    }

    /// A keyed histogram and its counts: one document per group of at most [`MAX_VALUES`]
    /// bins, the counts with the first.
    fn keyed(
        &self,
        out: &mut Vec<u8>,
        dimensions: &str,
        key: (&str, &str),
        (latency, histogram): (&str, &Histogram),
        counts: &[(&str, u64)],
    ) {
        for (i, chunk) in histogram.chunks().iter().enumerate() {
            let counts = if i == 0 { counts } else { &[] };
            self.document(out, dimensions, Some(key), Some((latency, chunk)), counts);
        }
    }
}

/// The process's metrics, once telemetry has installed them; recording before (or with
/// metrics off) does nothing.
static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();

/// Installs the process's metrics; a second call is ignored.
pub fn install(metrics: Arc<Metrics>) {
    let _ = GLOBAL.set(metrics);
}

fn with(f: impl FnOnce(&Metrics)) {
    if let Some(metrics) = GLOBAL.get() {
        f(metrics);
    }
}

/// One answered request (the request layer).
pub fn record_request(route: Option<&str>, status: u16, elapsed: Duration) {
    with(|m| m.request(route, status, elapsed));
}

/// The first invocation of a Lambda sandbox.
pub fn record_cold_start() {
    with(Metrics::cold_start);
}

/// One call to a dependency; `failed` when the dependency failed, not when it refused.
pub fn record_dependency(name: &'static str, elapsed: Duration, failed: bool) {
    with(|m| m.dependency(name, elapsed, failed));
}

pub fn record_certificate(event: CertificateEvent) {
    with(|m| m.certificate(event));
}

/// Spans an exporter lost.
pub fn record_spans_dropped(count: usize) {
    with(|m| m.spans_dropped(count as u64));
}

/// An export that failed (its spans are counted by [`record_spans_dropped`]).
pub fn record_span_export_failure() {
    with(Metrics::span_export_failed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::collections::HashMap;

    fn documents(metrics: &Metrics, properties: &[(&str, &str)]) -> Vec<Value> {
        let out = metrics.drain(1_700_000_000_000, properties);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The metric names a document declares, checking each has its value at the root.
    fn declared(document: &Value) -> Vec<String> {
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        for dimension_set in directive["Dimensions"].as_array().unwrap() {
            for key in dimension_set.as_array().unwrap() {
                assert!(
                    document[key.as_str().unwrap()].is_string(),
                    "dimension {key} has no string value: {document}"
                );
            }
        }
        directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let name = m["Name"].as_str().unwrap().to_owned();
                assert!(
                    !document[&name].is_null(),
                    "{name} has no value: {document}"
                );
                name
            })
            .collect()
    }

    #[test]
    fn one_invocation_is_one_exact_document_per_route_and_dependency() {
        let metrics = Metrics::new("Apuntador", "apuntador-backend");
        metrics.cold_start();
        metrics.request(
            Some("/oauth/token/{provider}"),
            502,
            Duration::from_micros(12_345),
        );
        metrics.dependency("googledrive", Duration::from_millis(9), true);
        let docs = documents(&metrics, &[("function_request_id", "req-1")]);
        assert_eq!(docs.len(), 3, "{docs:?}");
        let route = &docs[0];
        assert_eq!(route["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(
            route["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "Apuntador"
        );
        assert_eq!(
            route["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["service", "route"], ["service"]])
        );
        assert_eq!(route["service"], "apuntador-backend");
        assert_eq!(route["route"], "/oauth/token/{provider}");
        assert_eq!(route["function_request_id"], "req-1");
        assert_eq!(route["Requests"], 1);
        assert_eq!(route["4xx"], 0);
        assert_eq!(route["5xx"], 1);
        assert_eq!(route["Latency"]["Values"], json!([12.345]));
        assert_eq!(route["Latency"]["Counts"], json!([1]));
        assert_eq!(route["Latency"]["Max"], 12.345);
        assert_eq!(
            declared(route),
            ["Latency", "Requests", "4xx", "5xx"].map(String::from)
        );
        let dependency = &docs[1];
        assert_eq!(dependency["dependency"], "googledrive");
        assert_eq!(dependency["DependencyFailures"], 1);
        assert_eq!(dependency["DependencyLatency"]["Sum"], 9.0);
        declared(dependency);
        let service = &docs[2];
        assert_eq!(declared(service), ["ColdStart"].map(String::from));
        assert!(
            service.get("SpansDropped").is_none(),
            "zero counts are left out"
        );
        assert!(
            metrics.drain(0, &[]).is_empty(),
            "a drain starts the aggregate again"
        );
    }

    #[test]
    fn a_busy_server_keeps_every_latency_in_bins_of_at_most_100_values() {
        let metrics = Metrics::new("Apuntador", "svc");
        // 20,000 latencies from 0.05 ms to 100 s: far more distinct bins than 100.
        let mut expected_sum = 0.0;
        for i in 0..20_000u64 {
            let ms = 0.05 * 1.0007f64.powi(i as i32);
            expected_sum += ms;
            metrics.request(Some("/health"), 200, Duration::from_secs_f64(ms / 1000.0));
        }
        let docs = documents(&metrics, &[]);
        assert!(docs.len() >= 2, "{} documents", docs.len());
        let mut count = 0;
        let mut sum = 0.0;
        for doc in &docs {
            let latency = &doc["Latency"];
            let values = latency["Values"].as_array().unwrap();
            assert!(values.len() <= MAX_VALUES);
            assert_eq!(values.len(), latency["Counts"].as_array().unwrap().len());
            let counts: u64 = latency["Counts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_u64().unwrap())
                .sum();
            assert_eq!(counts, latency["Count"].as_u64().unwrap());
            count += counts;
            sum += latency["Sum"].as_f64().unwrap();
            declared(doc);
        }
        assert_eq!(count, 20_000, "no latency lost");
        assert!((sum - expected_sum).abs() / expected_sum < 1e-6);
        assert_eq!(docs[0]["Requests"], 20_000, "the counts go once");
        assert!(docs[1].get("Requests").is_none());
    }

    #[test]
    fn a_bin_reports_the_mean_of_what_fell_in_it_within_ten_percent() {
        let mut histogram = Histogram::default();
        for ms in [10.0, 10.2, 10.4, 0.0, f64::NAN] {
            histogram.record(ms);
        }
        let mut text = Vec::new();
        write_histogram(&mut text, &histogram.chunks()[0]);
        let chunk: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(chunk["Count"], 5);
        assert_eq!(chunk["Min"], 0.0);
        assert_eq!(chunk["Max"], 10.4);
        let values: Vec<f64> = chunk["Values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(values, vec![0.0, 10.2]);
    }

    #[test]
    fn names_from_the_environment_are_escaped() {
        let metrics = Metrics::new("Team \"A\"", "svc\\x\n");
        metrics.request(Some("/a\"b"), 200, Duration::from_millis(1));
        metrics.cold_start();
        let docs = documents(&metrics, &[("function_request_id", "r\"1")]);
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "Team \"A\""
        );
        assert_eq!(docs[0]["service"], "svc\\x\n");
        assert_eq!(docs[0]["route"], "/a\"b");
        assert_eq!(docs[1]["function_request_id"], "r\"1");
    }

    #[test]
    fn route_templates_are_bounded() {
        let metrics = Metrics::new("Apuntador", "svc");
        for i in 0..200 {
            metrics.request(Some(&format!("/r{i}")), 200, Duration::from_millis(1));
        }
        let docs = documents(&metrics, &[]);
        assert_eq!(docs.len(), MAX_ROUTES + 1);
        let other = docs.iter().find(|d| d["route"] == "(other)").unwrap();
        assert_eq!(other["Requests"], 200 - MAX_ROUTES as u64);
    }

    #[test]
    fn settings_follow_powertools_and_otel_names() {
        let read = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let lookup = move |name: &str| map.get(name).cloned();
            MetricsSettings::from_env(Env::new(&lookup))
        };
        let default = read(&[]).unwrap();
        assert!(default.enabled);
        assert_eq!(default.namespace, DEFAULT_NAMESPACE);
        assert_eq!(
            read(&[("POWERTOOLS_METRICS_NAMESPACE", "Teleprompter")])
                .unwrap()
                .namespace,
            "Teleprompter"
        );
        assert!(
            !read(&[("POWERTOOLS_METRICS_DISABLED", "true")])
                .unwrap()
                .enabled
        );
        assert!(!read(&[("OTEL_METRICS_EXPORTER", "none")]).unwrap().enabled);
        let error = read(&[("OTEL_METRICS_EXPORTER", "prometheus")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("OTEL_METRICS_EXPORTER"), "{error}");
        assert!(read(&[("POWERTOOLS_METRICS_DISABLED", "maybe")]).is_err());
        assert!(read(&[("POWERTOOLS_METRICS_NAMESPACE", "a:b")]).is_err());
    }
}

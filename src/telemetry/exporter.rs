//! Span exporters: [`Resilient`] wraps the OTLP exporter so a sick collector costs little, and
//! [`ConsoleJson`] prints one JSON line per span for `OTEL_TRACES_EXPORTER=console`.
//!
//! The breaker: an export that fails opens it for a back-off period (1 s, doubling to 60 s);
//! batches that arrive while it is open are dropped at once and counted, so one slow or dead
//! collector costs one export timeout per back-off period, not one per invocation. The episode
//! is logged twice: when it starts, and when the collector answers again with the count of
//! spans lost in between. Failed exports and lost spans are counted in the metrics
//! (`SpanExportFailures`, `SpansDropped`).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::Value;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde_json::{Map, json};

use super::log_sink::LogSink;
use super::metrics;
use super::xray::xray_trace_id;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    dropped_in_episode: u64,
}

/// An exporter that stops calling a failing collector for a while instead of paying its timeout
/// on every flush.
#[derive(Debug)]
pub struct Resilient<E> {
    inner: E,
    breaker: Mutex<Breaker>,
    first_backoff: Duration,
    /// What the log lines call the other end ("trace collector", "X-Ray OTLP endpoint").
    endpoint: &'static str,
}

impl<E> Resilient<E> {
    pub fn new(inner: E) -> Self {
        Self::with_backoff(inner, FIRST_BACKOFF)
    }

    pub fn with_backoff(inner: E, first_backoff: Duration) -> Self {
        Self {
            inner,
            breaker: Mutex::new(Breaker::default()),
            first_backoff,
            endpoint: "trace collector",
        }
    }

    /// The same breaker, its log lines naming `endpoint`.
    pub fn named(inner: E, endpoint: &'static str) -> Self {
        Self {
            endpoint,
            ..Self::new(inner)
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.first_backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }

    /// Whether the batch may go to the collector now; counts it as dropped if not.
    fn admit(&self, batch_len: usize) -> bool {
        let mut breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        match breaker.open_until {
            Some(until) if Instant::now() < until => {
                breaker.dropped_in_episode += batch_len as u64;
                metrics::record_spans_dropped(batch_len);
                false
            }
            _ => true,
        }
    }

    fn record(&self, batch_len: usize, result: &OTelSdkResult) {
        let mut breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                if breaker.consecutive_failures > 0 {
                    tracing::info!(
                        target: "apuntador::telemetry",
                        dropped_spans = breaker.dropped_in_episode,
                        "{} answers again; spans are exported",
                        self.endpoint
                    );
                }
                *breaker = Breaker::default();
            }
            Err(error) => {
                breaker.consecutive_failures += 1;
                breaker.dropped_in_episode += batch_len as u64;
                metrics::record_spans_dropped(batch_len);
                metrics::record_span_export_failure();
                let backoff = self.backoff(breaker.consecutive_failures);
                breaker.open_until = Some(Instant::now() + backoff);
                if breaker.consecutive_failures == 1 {
                    tracing::warn!(
                        target: "apuntador::telemetry",
                        error = %error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "{} unavailable; dropping spans until it answers",
                        self.endpoint
                    );
                }
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for Resilient<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let len = batch.len();
        if !self.admit(len) {
            return Err(OTelSdkError::InternalFailure(format!(
                "{} back-off in progress; batch dropped",
                self.endpoint
            )));
        }
        let result = self.inner.export(batch).await;
        self.record(len, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Writes each span as one JSON line on stdout (`"type":"span"` tells it from log lines),
/// through the log lines' sink so both keep their order.
#[derive(Debug)]
pub struct ConsoleJson {
    sink: LogSink,
}

impl ConsoleJson {
    pub fn new(sink: LogSink) -> Self {
        Self { sink }
    }
}

impl SpanExporter for ConsoleJson {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut out = Vec::with_capacity(batch.len() * 512);
        for span in &batch {
            let _ = serde_json::to_writer(&mut out, &span_json(span));
            out.push(b'\n');
        }
        self.sink.write(&out);
        Ok(())
    }
}

fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Bool(b) => json!(b),
        Value::I64(i) => json!(i),
        Value::F64(f) => json!(f),
        other => json!(other.as_str()),
    }
}

fn span_json(span: &SpanData) -> serde_json::Value {
    let attributes: Map<String, serde_json::Value> = span
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), value_json(&kv.value)))
        .collect();
    let (status, description) = match &span.status {
        Status::Unset => ("unset", None),
        Status::Ok => ("ok", None),
        Status::Error { description } => ("error", Some(description.to_string())),
    };
    let kind = match span.span_kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    };
    let parent = (span.parent_span_id != opentelemetry::trace::SpanId::INVALID)
        .then(|| span.parent_span_id.to_string());
    json!({
        "type": "span",
        "name": span.name,
        "trace_id": xray_trace_id(span.span_context.trace_id()),
        "span_id": span.span_context.span_id().to_string(),
        "parent_span_id": parent,
        "kind": kind,
        "start_time_unix_nano": unix_nanos(span.start_time).to_string(),
        "end_time_unix_nano": unix_nanos(span.end_time).to_string(),
        "status": status,
        "status_description": description,
        "attributes": attributes,
        "events": span.events.iter().map(|e| json!({"name": e.name})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Clone)]
    struct Flaky {
        calls: Arc<AtomicUsize>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl SpanExporter for Flaky {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                Err(OTelSdkError::InternalFailure("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    fn flaky(fail: bool) -> Flaky {
        Flaky {
            calls: Arc::new(AtomicUsize::new(0)),
            fail: Arc::new(std::sync::atomic::AtomicBool::new(fail)),
        }
    }

    fn export(exporter: &Resilient<Flaky>) -> OTelSdkResult {
        block_on_current_thread(exporter.export(Vec::new()))
    }

    fn block_on_current_thread<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_failure_stops_calls_until_the_backoff_ends() {
        let inner = flaky(true);
        let exporter = Resilient::with_backoff(inner.clone(), Duration::from_millis(200));
        for _ in 0..10 {
            assert!(export(&exporter).is_err());
        }
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            1,
            "only the first export reaches the collector"
        );
        std::thread::sleep(Duration::from_millis(250));
        inner.fail.store(false, Ordering::SeqCst);
        assert!(export(&exporter).is_ok());
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
        assert!(export(&exporter).is_ok());
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            3,
            "a recovered collector gets every batch"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let exporter = Resilient::new(flaky(true));
        assert_eq!(exporter.backoff(1), Duration::from_secs(1));
        assert_eq!(exporter.backoff(2), Duration::from_secs(2));
        assert_eq!(exporter.backoff(4), Duration::from_secs(8));
        assert_eq!(exporter.backoff(30), MAX_BACKOFF);
    }
}

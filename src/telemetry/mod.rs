//! Tracing and logging set-up from the standard `OTEL_*` variables, and the [`Telemetry`] handle
//! that flushes spans (after each Lambda invocation) and shuts the pipeline down.
//!
//! Pipeline: `tracing` spans of this crate → `tracing-opentelemetry` → SDK tracer provider (X-Ray
//! id generator, the sampler of [`sampling`]) → batch processor on its own
//! thread → one of the transports:
//! - [`exporter::Resilient`] → OTLP over HTTP/protobuf (default) or gRPC to a collector (the
//!   ADOT collector layer or sidecar on localhost);
//! - [`exporter::Resilient`] → [`xray_otlp`]: OTLP/HTTP signed with SigV4 straight to X-Ray's
//!   OTLP endpoint, when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//!   `https://xray.<region>.amazonaws.com/v1/traces` (no collector);
//! - [`otlp_udp`] (`OTEL_TRACES_EXPORTER=otlp-udp`): OTLP over UDP to the X-Ray endpoint Lambda
//!   runs, as AWS's SDKs do inside Lambda; with [`unsampled`] for `TRACE_SEND_UNSAMPLED=true`;
//! - [`xray_daemon`] (`OTEL_TRACES_EXPORTER=xray`): X-Ray segment documents over UDP to the
//!   X-Ray daemon, the format AWS is retiring (end of support 25 February 2027).
//!
//! Log lines go to stdout through [`logs`] and [`log_sink`] (written at once under Lambda, in
//! batches in server mode), and so do the [`metrics`], as CloudWatch Embedded Metric Format
//! documents written after each invocation (Lambda) or every 10 s (server).
//!
//! Only spans and WARN/ERROR events of this crate reach OpenTelemetry: an INFO event such as
//! the access line is a log line, not a span event (it would be paid for twice, and exported).

pub mod annotations;
pub mod aws;
pub mod exporter;
pub mod http;
pub mod lambda;
pub mod limits;
pub mod log_sink;
pub mod logs;
pub mod metrics;
pub mod otlp_batch;
pub mod otlp_udp;
pub mod sampling;
pub mod udp_link;
pub mod unsampled;
pub mod xray;
pub mod xray_daemon;
pub mod xray_otlp;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_aws::detector::{EcsResourceDetector, LambdaResourceDetector};
use opentelemetry_aws::trace::{XrayIdGenerator, XrayPropagator};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::EnvResourceDetector;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider, ShouldSample};
use thiserror::Error;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::APP_VERSION;
use crate::env::{Env, frozen_between_invocations, lambda_max_concurrency, under_lambda};

/// Spans of this crate (and only these) are exported.
pub const TRACE_TARGET: &str = "apuntador_backend";

/// Default service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` has one.
pub const DEFAULT_SERVICE_NAME: &str = "apuntador-backend";

/// Export timeout when `OTEL_EXPORTER_OTLP_TIMEOUT` is not set. The SDK default (10 s) is far too
/// long for work done between two Lambda invocations; the local ADOT collector answers in
/// about a millisecond.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(1000);

#[derive(Debug, Error)]
pub enum TelemetryError {
    #[error("{name}={value:?} is not supported; use one of: {allowed}")]
    Unsupported {
        name: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error("could not build the span exporter: {0}")]
    Exporter(String),
    #[error("{0}")]
    Invalid(String),
    #[error("a global tracing subscriber is already installed")]
    SubscriberTaken,
}

/// Where spans go (`OTEL_TRACES_EXPORTER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanSink {
    Otlp {
        protocol: OtlpProtocol,
    },
    /// X-Ray segment documents over UDP to the daemon; `facade` inside Lambda (the invocation
    /// span becomes a subsegment of Lambda's function segment).
    XrayDaemon {
        address: xray_daemon::DaemonAddress,
        facade: bool,
    },
    /// OTLP/HTTP protobuf signed with SigV4 to X-Ray's OTLP endpoint ([`xray_otlp`]).
    OtlpXray {
        endpoint: xray_otlp::XrayEndpoint,
    },
    /// OTLP protobuf over UDP to the X-Ray endpoint Lambda runs (`AWS_XRAY_DAEMON_ADDRESS`),
    /// as AWS's own SDKs send it there ([`otlp_udp`]); `unsampled`: spans of unsampled
    /// invocations go too, as `T1U` ([`unsampled`]).
    OtlpUdp {
        address: xray_daemon::DaemonAddress,
        unsampled: bool,
    },
    Console,
    None,
}

/// OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// Default: measured cheaper per flush and smaller in the binary (see README).
    HttpProtobuf,
    Grpc,
}

/// Which header format carries the incoming parent in server mode (`OTEL_PROPAGATORS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Propagators {
    pub xray: bool,
    pub tracecontext: bool,
}

/// When an invocation's telemetry leaves the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Classic Lambda: the sandbox may be frozen once a response is posted, so log lines are
    /// written as they happen and the invocation loop flushes spans and metrics after each
    /// response, before the next `/next`.
    PerInvocation,
    /// A server, or Lambda Managed Instances (`AWS_LAMBDA_MAX_CONCURRENCY` above 1, never
    /// frozen): log lines are batched, spans leave every [`BACKGROUND_SPAN_FLUSH`] (a server:
    /// on the batch processor's own schedule) and metrics every
    /// [`metrics::BACKGROUND_FLUSH_INTERVAL`], from background tasks. A flush per invocation
    /// would make N concurrent invocations queue behind each other's exports.
    Background,
}

/// How often a Lambda Managed Instances process sends the spans finished since the last time
/// (and, with `TRACE_SEND_UNSAMPLED`, the unsampled ones, which only leave at a flush).
pub const BACKGROUND_SPAN_FLUSH: Duration = Duration::from_secs(1);

/// Telemetry settings read from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    pub sink: SpanSink,
    pub cadence: Cadence,
    pub sampling: sampling::SamplingSettings,
    pub propagators: Propagators,
    pub log_format: logs::LogFormat,
    pub log_filter: String,
    /// Per export: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`
    /// (milliseconds), else [`DEFAULT_EXPORT_TIMEOUT`].
    pub export_timeout: Duration,
    /// `TRUSTED_PROXY_HOPS`: proxies in front of a server whose `X-Forwarded-For` entries
    /// name the client (`client.address`); 0, the default, takes the socket peer.
    pub trusted_proxy_hops: usize,
    pub metrics: metrics::MetricsSettings,
}

impl TelemetrySettings {
    pub fn from_env(env: Env<'_>) -> Result<Self, TelemetryError> {
        let get = |name: &str| env.get(name).map(|v| v.to_ascii_lowercase());
        let protocol = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                return Err(TelemetryError::Unsupported {
                    name: "OTEL_EXPORTER_OTLP_PROTOCOL",
                    value: other.to_owned(),
                    allowed: "http/protobuf, grpc",
                });
            }
        };
        let xray_endpoint = env
            .get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .map(|e| {
                xray_otlp::XrayEndpoint::detect(&e, env.get("AWS_ENDPOINT_URL_XRAY").as_deref())
            })
            .transpose()
            .map_err(TelemetryError::Invalid)?
            .flatten();
        let sink = match get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => match xray_endpoint {
                None => SpanSink::Otlp { protocol },
                Some(_) if protocol == OtlpProtocol::Grpc => {
                    return Err(TelemetryError::Invalid(
                        "X-Ray's OTLP endpoint takes OTLP over HTTP only: set \
                         OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf"
                            .to_owned(),
                    ));
                }
                Some(endpoint) => SpanSink::OtlpXray { endpoint },
            },
            Some("xray") => SpanSink::XrayDaemon {
                address: xray_daemon::DaemonAddress::parse(
                    env.get("AWS_XRAY_DAEMON_ADDRESS").as_deref(),
                )?,
                facade: under_lambda(env),
            },
            Some("otlp-udp") => SpanSink::OtlpUdp {
                address: xray_daemon::DaemonAddress::parse(
                    env.get("AWS_XRAY_DAEMON_ADDRESS").as_deref(),
                )?,
                unsampled: send_unsampled(env)?,
            },
            Some("console") => SpanSink::Console,
            Some("none") => SpanSink::None,
            Some(other) => {
                return Err(TelemetryError::Unsupported {
                    name: "OTEL_TRACES_EXPORTER",
                    value: other.to_owned(),
                    allowed: "otlp, otlp-udp, xray, console, none",
                });
            }
        };
        if !matches!(sink, SpanSink::OtlpUdp { .. }) && send_unsampled(env)? {
            return Err(TelemetryError::Invalid(
                "TRACE_SEND_UNSAMPLED=true needs OTEL_TRACES_EXPORTER=otlp-udp".to_owned(),
            ));
        }
        let mut propagators = Propagators {
            xray: false,
            tracecontext: false,
        };
        for name in get("OTEL_PROPAGATORS")
            .unwrap_or_else(|| "xray".to_owned())
            .split(',')
        {
            match name.trim() {
                "xray" => propagators.xray = true,
                "tracecontext" => propagators.tracecontext = true,
                "none" | "baggage" | "" => {}
                other => {
                    return Err(TelemetryError::Unsupported {
                        name: "OTEL_PROPAGATORS",
                        value: other.to_owned(),
                        allowed: "xray, tracecontext, none",
                    });
                }
            }
        }
        let export_timeout = [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]
        .iter()
        .find_map(|n| get(n))
        .map(|v| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| TelemetryError::Unsupported {
                    name: "OTEL_EXPORTER_OTLP_TIMEOUT",
                    value: v.clone(),
                    allowed: "a number of milliseconds",
                })
        })
        .transpose()?
        .unwrap_or(DEFAULT_EXPORT_TIMEOUT);
        let trusted_proxy_hops = match env.get("TRUSTED_PROXY_HOPS") {
            None => 0,
            Some(raw) => raw
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= 16)
                .ok_or(TelemetryError::Unsupported {
                    name: "TRUSTED_PROXY_HOPS",
                    value: raw,
                    allowed: "a number of proxies from 0 to 16 (an ALB alone: 1)",
                })?,
        };
        // Checked here, the first settings read, so a bad value stops start-up with its name.
        lambda_max_concurrency(env).map_err(|e| TelemetryError::Invalid(e.to_string()))?;
        let cadence = if frozen_between_invocations(env) {
            Cadence::PerInvocation
        } else {
            Cadence::Background
        };
        Ok(Self {
            sink,
            cadence,
            sampling: sampling::SamplingSettings::from_env(env, under_lambda(env))?,
            propagators,
            log_format: logs::LogFormat::from_env(env),
            log_filter: logs::filter_directives(env),
            export_timeout,
            trusted_proxy_hops,
            metrics: metrics::MetricsSettings::from_env(env)?,
        })
    }
}

/// `TRACE_SEND_UNSAMPLED`: whether unsampled invocations' spans go as `T1U`; Lambda only (the
/// spans wait for the flush that follows each invocation, which a server does not make).
fn send_unsampled(env: Env<'_>) -> Result<bool, TelemetryError> {
    let on = match env
        .get("TRACE_SEND_UNSAMPLED")
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => false,
        Some(v) if v.is_empty() || v == "false" => false,
        Some(v) if v == "true" => true,
        Some(other) => {
            return Err(TelemetryError::Unsupported {
                name: "TRACE_SEND_UNSAMPLED",
                value: other,
                allowed: "true, false",
            });
        }
    };
    if on && !under_lambda(env) {
        return Err(TelemetryError::Invalid(
            "TRACE_SEND_UNSAMPLED=true works inside Lambda only (X-Ray's UDP endpoint is Lambda's)"
                .to_owned(),
        ));
    }
    Ok(on)
}

/// Handle on the tracing pipeline: cheap to clone, shared by both run modes.
#[derive(Clone, Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
    propagator: Arc<TextMapCompositePropagator>,
    sink: log_sink::LogSink,
    /// The X-Ray sampling rules poller, when `OTEL_TRACES_SAMPLER=xray`.
    sampling_poller: Option<tokio::task::AbortHandle>,
    /// The sampler the request layer asks before it builds a request span.
    sampler: Box<dyn ShouldSample>,
    /// `None` with metrics off.
    metrics: Option<Arc<metrics::Metrics>>,
    /// The task that writes metrics every [`metrics::BACKGROUND_FLUSH_INTERVAL`]
    /// ([`Cadence::Background`]).
    metrics_writer: Option<tokio::task::AbortHandle>,
    /// The task that flushes spans every [`BACKGROUND_SPAN_FLUSH`] (Lambda Managed Instances).
    span_flusher: Option<tokio::task::AbortHandle>,
}

impl Telemetry {
    /// Exports every finished span now; returns when the collector answered, failed, or the
    /// breaker dropped the batch. Runs on the blocking pool so an export never holds a runtime
    /// worker (the gRPC exporter needs one to make progress).
    pub async fn flush(&self) {
        if !self.exporting {
            return;
        }
        let provider = self.provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
    }

    /// After one Lambda invocation: its metrics (each document naming the invocation's
    /// request id and, when Lambda sent one, its X-Ray trace id), then its spans.
    pub async fn flush_invocation(&self, request_id: &str, trace_header: Option<&str>) {
        if let Some(metrics) = &self.metrics {
            let trace_id = trace_header
                .and_then(xray::root_of_header)
                .map(xray::xray_trace_id);
            let mut properties = vec![("function_request_id", request_id)];
            if let Some(trace_id) = &trace_id {
                properties.push(("trace_id", trace_id.as_str()));
            }
            write_metrics(metrics, &self.sink, &properties);
        }
        self.flush().await;
    }

    /// Flushes and stops the exporter, then writes the log lines still buffered (later lines
    /// are written at once); call once before the process exits.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Some(poller) = &self.sampling_poller {
            poller.abort();
        }
        for task in [&self.metrics_writer, &self.span_flusher]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        // After the exporter's shutdown, so the spans it dropped on the way are counted.
        if let Some(metrics) = &self.metrics {
            write_metrics(metrics, &self.sink, &[]);
        }
        self.sink.finish();
    }

    /// The configured sampler (the request layer decides server-mode requests up front).
    pub fn sampler(&self) -> Box<dyn ShouldSample> {
        self.sampler.clone()
    }

    /// The propagator that reads incoming parents in server mode.
    pub fn propagator(&self) -> Arc<dyn TextMapPropagator + Send + Sync> {
        self.propagator.clone()
    }
}

/// Lambda Managed Instances: every [`BACKGROUND_SPAN_FLUSH`], the finished spans are exported
/// on the blocking pool, so no invocation waits for it. An export slower than the interval
/// delays the next one rather than stacking them; meanwhile spans queue in the batch processor
/// (beyond its queue they are dropped and counted).
fn spawn_span_flusher(provider: SdkTracerProvider) -> tokio::task::AbortHandle {
    let task = tokio::spawn(async move {
        let mut every = tokio::time::interval(BACKGROUND_SPAN_FLUSH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let provider = provider.clone();
            let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        }
    });
    task.abort_handle()
}

/// Writes what `metrics` counted since the last write, through the log lines' sink.
fn write_metrics(
    metrics: &metrics::Metrics,
    sink: &log_sink::LogSink,
    properties: &[(&str, &str)],
) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let lines = metrics.drain(now_ms, properties);
    if !lines.is_empty() {
        sink.write(&lines);
    }
}

/// The service name the resource ended with (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
/// else [`DEFAULT_SERVICE_NAME`]): the `service` of log lines and metrics.
fn service_name(resource: &Resource) -> String {
    resource
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .map_or_else(|| DEFAULT_SERVICE_NAME.to_owned(), |v| v.to_string())
}

fn resource(environment: &str, env: Env<'_>) -> Resource {
    let mut builder = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", DEFAULT_SERVICE_NAME),
            KeyValue::new("service.version", APP_VERSION),
            KeyValue::new("deployment.environment", environment.to_owned()),
        ])
        .with_detector(Box::new(LambdaResourceDetector));
    if env.get("ECS_CONTAINER_METADATA_URI_V4").is_some() {
        builder = builder.with_detector(Box::new(EcsResourceDetector));
    }
    builder = builder.with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = env.get("OTEL_SERVICE_NAME") {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// The OTLP/HTTP exporter's blocking client, built on its own thread (a blocking client may
/// not be built inside the async runtime) with the shared TLS config: the exporter's default
/// client would load the system root store at every cold start. Redirects are not followed: a
/// collector never sends one, and following it would send spans wherever it points.
fn blocking_http_client(timeout: Duration) -> Result<reqwest::blocking::Client, TelemetryError> {
    let build = move || -> Result<reqwest::blocking::Client, String> {
        let tls = crate::tls::client_config().map_err(|e| e.to_string())?;
        reqwest::blocking::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| e.to_string())
    };
    std::thread::spawn(build)
        .join()
        .map_err(|_| TelemetryError::Exporter("building the HTTP client panicked".to_owned()))?
        .map_err(TelemetryError::Exporter)
}

fn otlp_exporter(
    protocol: OtlpProtocol,
    timeout: Duration,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let no_retry = opentelemetry_otlp::RetryPolicy::disabled();
    let built = match protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(blocking_http_client(timeout)?)
            .with_retry_policy(no_retry)
            .with_timeout(timeout)
            .build(),
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_retry_policy(no_retry)
            .with_timeout(timeout)
            .build(),
    };
    built.map_err(|e| TelemetryError::Exporter(e.to_string()))
}

/// The subscriber [`init`] installs: the OpenTelemetry layer (spans up to INFO and WARN/ERROR
/// events of this crate, into `tracer`) and the log layer (`log_filter`, in `format`, into
/// `sink`). Public so the span-cost bench (`benches/span_cost.rs`) measures what production
/// runs.
pub fn subscriber(
    tracer: opentelemetry_sdk::trace::SdkTracer,
    sink: &log_sink::LogSink,
    log_filter: &str,
    format: logs::LogFormat,
    fixed: logs::FixedFields,
) -> impl tracing::Subscriber + Send + Sync + 'static {
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_target(false)
        .with_location(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(|metadata| {
            let level = if metadata.is_span() {
                Level::INFO
            } else {
                Level::WARN
            };
            metadata.target().starts_with(TRACE_TARGET) && *metadata.level() <= level
        }));
    let log_filter = EnvFilter::try_new(log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let log_layer = match format {
        logs::LogFormat::Json => logs::JsonLines::new(sink.clone(), fixed)
            .with_filter(log_filter)
            .boxed(),
        logs::LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(sink.clone())
            .with_ansi(false)
            .with_filter(log_filter)
            .boxed(),
    };
    Registry::default().with(otel_layer).with(log_layer)
}

/// Builds the tracer provider and installs the global subscriber (log layer + OpenTelemetry
/// layer) and propagator. Call once, inside the Tokio runtime.
pub fn init(
    settings: &TelemetrySettings,
    environment: &str,
    env: Env<'_>,
) -> Result<Telemetry, TelemetryError> {
    // On classic Lambda each line must be out before the response is posted (the sandbox may
    // be frozen after it); a server and Lambda Managed Instances batch them.
    let sink = match settings.cadence {
        Cadence::PerInvocation => log_sink::LogSink::direct(),
        Cadence::Background => log_sink::LogSink::batched(),
    };
    let resource = resource(environment, env);
    let service = service_name(&resource);
    let metrics = settings.metrics.enabled.then(|| {
        let metrics = Arc::new(metrics::Metrics::new(
            settings.metrics.namespace.clone(),
            service.clone(),
        ));
        metrics::install(metrics.clone());
        metrics
    });
    // Classic Lambda writes after each invocation (the loop calls `flush_invocation`); the
    // others on a timer, off the request path.
    let metrics_writer = match &metrics {
        Some(metrics) if settings.cadence == Cadence::Background => {
            let (metrics, sink) = (metrics.clone(), sink.clone());
            let task = tokio::spawn(async move {
                let mut every = tokio::time::interval(metrics::BACKGROUND_FLUSH_INTERVAL);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                loop {
                    every.tick().await;
                    write_metrics(&metrics, &sink, &[]);
                }
            });
            Some(task.abort_handle())
        }
        _ => None,
    };
    let (sampler, rule_cache) = match settings.sink {
        SpanSink::None => (Box::new(Sampler::AlwaysOff) as Box<dyn ShouldSample>, None),
        _ => sampling::build(&settings.sampling, &resource),
    };
    let predecided = sampling::Predecided::new(sampler.clone());
    let mut builder = SdkTracerProvider::builder()
        .with_id_generator(XrayIdGenerator::default())
        .with_resource(resource);
    builder = match &settings.sink {
        SpanSink::OtlpUdp {
            unsampled: true, ..
        } => builder.with_sampler(unsampled::RecordUnsampled::new(predecided)),
        _ => builder.with_sampler(predecided),
    };
    builder = match &settings.sink {
        SpanSink::Otlp { protocol } => {
            let exporter =
                exporter::Resilient::new(otlp_exporter(*protocol, settings.export_timeout)?);
            builder.with_span_processor(BatchSpanProcessor::builder(exporter).build())
        }
        SpanSink::XrayDaemon { address, facade } => {
            let exporter = xray_daemon::XrayDaemonExporter::new(address, *facade);
            builder.with_span_processor(BatchSpanProcessor::builder(exporter).build())
        }
        SpanSink::OtlpXray { endpoint } => {
            let exporter = exporter::Resilient::named(
                xray_otlp::XrayOtlpExporter::new(
                    endpoint.clone(),
                    blocking_http_client(settings.export_timeout)?,
                    settings.export_timeout,
                ),
                "X-Ray OTLP endpoint",
            );
            builder.with_span_processor(BatchSpanProcessor::builder(exporter).build())
        }
        SpanSink::OtlpUdp { address, unsampled } => {
            let batch =
                BatchSpanProcessor::builder(otlp_udp::OtlpUdpExporter::new(address)).build();
            if *unsampled {
                builder
                    .with_span_processor(unsampled::SampledOnly::new(batch))
                    .with_span_processor(unsampled::UnsampledSpans::new(
                        otlp_udp::OtlpUdpExporter::unsampled(address),
                    ))
            } else {
                builder.with_span_processor(batch)
            }
        }
        SpanSink::Console => {
            let exporter = exporter::ConsoleJson::new(sink.clone());
            builder.with_span_processor(BatchSpanProcessor::builder(exporter).build())
        }
        // Ids are still generated and propagated (X-Trace-ID, log correlation); nothing is
        // recorded or exported.
        SpanSink::None => builder,
    };
    let provider = builder.build();
    let exporting = settings.sink != SpanSink::None;
    let span_flusher = (exporting && settings.cadence == Cadence::Background && under_lambda(env))
        .then(|| spawn_span_flusher(provider.clone()));
    let sampling_poller = match (&settings.sampling.root, rule_cache) {
        // No cache when nothing is exported (`SpanSink::None`): there is nothing to poll for.
        (sampling::RootSampler::Xray(options), Some(cache)) => {
            let handle = sampling::xray_poller::spawn(cache, options.clone())
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            Some(handle.abort_handle())
        }
        _ => None,
    };

    let mut propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    if settings.propagators.xray {
        propagators.push(Box::new(XrayPropagator::default()));
    }
    if settings.propagators.tracecontext {
        propagators.push(Box::new(TraceContextPropagator::new()));
    }
    let propagator = Arc::new(TextMapCompositePropagator::new(propagators));
    global::set_tracer_provider(provider.clone());

    subscriber(
        provider.tracer("apuntador-backend"),
        &sink,
        &settings.log_filter,
        settings.log_format,
        logs::FixedFields::from_env(&service, env),
    )
    .try_init()
    .map_err(|_| TelemetryError::SubscriberTaken)?;

    Ok(Telemetry {
        provider,
        exporting,
        propagator,
        sink,
        sampling_poller,
        sampler,
        metrics,
        metrics_writer,
        span_flusher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<TelemetrySettings, TelemetryError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TelemetrySettings::from_env(Env::new(&move |n| map.get(n).cloned()))
    }

    #[test]
    fn defaults_are_otlp_http_xray_and_a_short_timeout() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            s.sink,
            SpanSink::Otlp {
                protocol: OtlpProtocol::HttpProtobuf
            }
        );
        assert_eq!(
            s.propagators,
            Propagators {
                xray: true,
                tracecontext: false
            }
        );
        assert_eq!(s.export_timeout, DEFAULT_EXPORT_TIMEOUT);
    }

    #[test]
    fn standard_variables_are_honoured() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_PROPAGATORS", "tracecontext,xray"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
        ])
        .unwrap();
        assert_eq!(
            s.sink,
            SpanSink::Otlp {
                protocol: OtlpProtocol::Grpc
            }
        );
        assert_eq!(
            s.propagators,
            Propagators {
                xray: true,
                tracecontext: true
            }
        );
        assert_eq!(
            s.export_timeout,
            Duration::from_millis(250),
            "the user's timeout applies to the client and the exporter"
        );
        assert_eq!(
            settings(&[("OTEL_TRACES_EXPORTER", "console")])
                .unwrap()
                .sink,
            SpanSink::Console
        );
        assert_eq!(
            settings(&[("OTEL_TRACES_EXPORTER", "none")]).unwrap().sink,
            SpanSink::None
        );
        assert_eq!(
            settings(&[
                ("OTEL_TRACES_EXPORTER", "xray"),
                ("AWS_XRAY_DAEMON_ADDRESS", "169.254.79.129:2000"),
                ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ])
            .unwrap()
            .sink,
            SpanSink::XrayDaemon {
                address: xray_daemon::DaemonAddress::parse(Some("169.254.79.129:2000")).unwrap(),
                facade: true
            }
        );
        assert_eq!(
            settings(&[
                ("OTEL_TRACES_EXPORTER", "otlp-udp"),
                (
                    "AWS_XRAY_DAEMON_ADDRESS",
                    "udp:169.254.79.129:2000 tcp:169.254.79.129:2000"
                ),
            ])
            .unwrap()
            .sink,
            SpanSink::OtlpUdp {
                address: xray_daemon::DaemonAddress::parse(Some("169.254.79.129:2000")).unwrap(),
                unsampled: false,
            }
        );
    }

    #[test]
    fn the_xray_otlp_endpoint_turns_signing_on_and_the_unsampled_switch_is_checked() {
        let s = settings(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://xray.eu-west-1.amazonaws.com/v1/traces",
            ),
            ("AWS_ENDPOINT_URL_XRAY", "http://127.0.0.1:4566"),
        ])
        .unwrap();
        assert_eq!(
            s.sink,
            SpanSink::OtlpXray {
                endpoint: xray_otlp::XrayEndpoint {
                    region: "eu-west-1".into(),
                    url: "http://127.0.0.1:4566/v1/traces".into(),
                }
            }
        );
        let err = settings(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://xray.eu-west-1.amazonaws.com/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("http/protobuf"), "{err}");
        let lambda = [
            ("OTEL_TRACES_EXPORTER", "otlp-udp"),
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("TRACE_SEND_UNSAMPLED", "true"),
        ];
        assert!(matches!(
            settings(&lambda).unwrap().sink,
            SpanSink::OtlpUdp {
                unsampled: true,
                ..
            }
        ));
        let err = settings(
            &lambda[..1]
                .iter()
                .chain(&lambda[2..])
                .copied()
                .collect::<Vec<_>>(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("inside Lambda only"), "{err}");
        let err = settings(&lambda[1..]).unwrap_err();
        assert!(err.to_string().contains("otlp-udp"), "{err}");
        assert!(settings(&[("TRACE_SEND_UNSAMPLED", "yes")]).is_err());
    }

    #[test]
    fn unknown_values_are_start_up_errors() {
        assert!(settings(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]).is_err());
        let err = settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert!(err.to_string().contains("http/protobuf, grpc"), "{err}");
        let err = settings(&[("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("otlp, otlp-udp, xray, console, none"),
            "{err}"
        );
        assert!(
            settings(&[
                ("OTEL_TRACES_EXPORTER", "xray"),
                ("AWS_XRAY_DAEMON_ADDRESS", "no-port")
            ])
            .is_err()
        );
        assert!(settings(&[("OTEL_PROPAGATORS", "b3")]).is_err());
    }

    /// Answers every connection with a redirect to `target`; counts nothing itself.
    fn redirecting_server(target: std::net::SocketAddr) -> std::net::SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(4) {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = write!(
                    stream,
                    "HTTP/1.1 302 Found\r\nLocation: http://{target}/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        addr
    }

    /// Review item 5: the telemetry clients followed redirects (a 302 turned a POST into a GET
    /// to any URL).
    #[test]
    fn the_otlp_client_follows_no_redirect() {
        let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        target.set_nonblocking(true).unwrap();
        let redirecting = redirecting_server(target.local_addr().unwrap());
        let client = blocking_http_client(Duration::from_secs(2)).unwrap();
        let status = std::thread::spawn(move || {
            client
                .post(format!("http://{redirecting}/v1/traces"))
                .body("spans")
                .send()
                .map(|r| r.status().as_u16())
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(status, 302);
        assert!(
            target.accept().is_err(),
            "the redirect target was never called"
        );
    }

    #[test]
    fn trusted_proxy_hops_are_read_and_checked() {
        assert_eq!(settings(&[]).unwrap().trusted_proxy_hops, 0);
        assert_eq!(
            settings(&[("TRUSTED_PROXY_HOPS", "1")])
                .unwrap()
                .trusted_proxy_hops,
            1
        );
        for bad in ["-1", "many", "17"] {
            let err = settings(&[("TRUSTED_PROXY_HOPS", bad)]).unwrap_err();
            assert!(err.to_string().contains("TRUSTED_PROXY_HOPS"), "{err}");
        }
    }

    #[test]
    fn resource_names_the_service_and_environment() {
        let map: HashMap<&str, &str> = HashMap::from([("OTEL_SERVICE_NAME", "teleprompter")]);
        let r = resource("staging", Env::new(&|n| map.get(n).map(|v| v.to_string())));
        assert_eq!(
            r.get(&"service.name".into()).unwrap().as_str(),
            "teleprompter"
        );
        assert_eq!(
            r.get(&"service.version".into()).unwrap().as_str(),
            APP_VERSION
        );
        assert_eq!(
            r.get(&"deployment.environment".into()).unwrap().as_str(),
            "staging"
        );
        let r = resource("local", Env::new(&|_| None));
        assert_eq!(
            r.get(&"service.name".into()).unwrap().as_str(),
            DEFAULT_SERVICE_NAME
        );
    }
}

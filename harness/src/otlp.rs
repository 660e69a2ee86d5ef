//! An OTLP trace receiver on 127.0.0.1 (HTTP/protobuf and gRPC) that records every span with
//! its arrival time, and can be told to answer errors or hang.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Behaviour {
    Accept = 0,
    Fail = 1,
    Hang = 2,
}

/// One received span, flattened for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub at: Instant,
    pub name: String,
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub trace_state: String,
    pub status_code: i32,
    /// Whether the span carries a status at all, and its message.
    pub status_present: bool,
    pub status_message: String,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<(String, String)>,
    pub resource: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn resource_attr(&self, key: &str) -> Option<&str> {
        self.resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// The trace id in X-Ray form.
    pub fn xray_trace_id(&self) -> String {
        format!("1-{}-{}", &self.trace_id[..8], &self.trace_id[8..])
    }
}

#[derive(Clone, Default)]
struct Shared {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    /// Count spans without keeping them (a load test receives millions).
    count_only: Arc<std::sync::atomic::AtomicBool>,
    /// Spans received, and SERVER spans among them.
    counted: Arc<[std::sync::atomic::AtomicUsize; 2]>,
    behaviour: Arc<AtomicU8>,
    requests: Arc<Mutex<Vec<Instant>>>,
}

pub struct OtlpReceiver {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    shared: Shared,
}

fn value_text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// Every span of `request`, flattened, stamped `at`.
pub fn flatten_request(request: ExportTraceServiceRequest, at: Instant) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let resource: Vec<(String, String)> = rs
            .resource
            .map(|r| {
                r.attributes
                    .into_iter()
                    .map(|kv| (kv.key, value_text(&kv.value)))
                    .collect()
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(convert(span, &resource, at));
            }
        }
    }
    out
}

fn convert(span: Span, resource: &[(String, String)], at: Instant) -> ReceivedSpan {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    ReceivedSpan {
        at,
        name: span.name,
        kind: span.kind,
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        trace_state: span.trace_state,
        status_code: span.status.as_ref().map(|s| s.code).unwrap_or(0),
        status_present: span.status.is_some(),
        status_message: span
            .status
            .as_ref()
            .map(|s| s.message.clone())
            .unwrap_or_default(),
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        attributes: span
            .attributes
            .into_iter()
            .map(|kv| (kv.key, value_text(&kv.value)))
            .collect(),
        resource: resource.to_vec(),
    }
}

impl Shared {
    /// Counts `spans`, and keeps them unless counting only.
    fn keep(&self, spans: Vec<ReceivedSpan>) {
        let servers = spans.iter().filter(|s| s.kind == 2).count();
        self.counted[0].fetch_add(spans.len(), Ordering::SeqCst);
        self.counted[1].fetch_add(servers, Ordering::SeqCst);
        if !self.count_only.load(Ordering::SeqCst) {
            self.spans.lock().unwrap().extend(spans);
        }
    }

    /// Applies the behaviour; `true` when the export should be accepted.
    async fn gate(&self) -> bool {
        self.requests.lock().unwrap().push(Instant::now());
        match self.behaviour.load(Ordering::SeqCst) {
            0 => true,
            1 => false,
            _ => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                false
            }
        }
    }
}

struct Grpc(Shared);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if !self.0.gate().await {
            return Err(tonic::Status::unavailable("told to fail"));
        }
        self.0
            .keep(flatten_request(request.into_inner(), Instant::now()));
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let shared = Shared::default();
        let http_shared = shared.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let shared = http_shared.clone();
                async move {
                    if !shared.gate().await {
                        return (StatusCode::SERVICE_UNAVAILABLE, Vec::new());
                    }
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(request) => {
                            shared.keep(flatten_request(request, Instant::now()));
                            (
                                StatusCode::OK,
                                ExportTraceServiceResponse {
                                    partial_success: None,
                                }
                                .encode_to_vec(),
                            )
                        }
                        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
                    }
                }
            }),
        );
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(http, app).await;
        });
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        let grpc_service = TraceServiceServer::new(Grpc(shared.clone()));
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
            let _ = tonic::transport::Server::builder()
                .add_service(grpc_service)
                .serve_with_incoming(incoming)
                .await;
        });
        Self {
            http_addr,
            grpc_addr,
            shared,
        }
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared
            .behaviour
            .store(behaviour as u8, Ordering::SeqCst);
    }

    /// From now on spans are counted ([`Self::counted`]) but not kept.
    pub fn count_only(&self) {
        self.shared.count_only.store(true, Ordering::SeqCst);
    }

    /// Spans received so far, and the SERVER spans among them.
    pub fn counted(&self) -> (usize, usize) {
        (
            self.shared.counted[0].load(Ordering::SeqCst),
            self.shared.counted[1].load(Ordering::SeqCst),
        )
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.spans.lock().unwrap().clone()
    }

    /// Export requests received (accepted or not).
    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Waits until `n` spans have arrived, or `timeout` passes.
    pub async fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

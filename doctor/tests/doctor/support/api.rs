//! A loopback double of the deployed API (the stack's `ApiUrl`, or `--url` for ECS): `GET /`
//! answers as the backend's root route does, with an `X-Trace-ID`, and then, as Lambda and the
//! backend would, writes the request's trace into moto's X-Ray (or `aws/spans`) and its log
//! lines into the backend's log group: or withholds either, for the faults.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

/// What reaches X-Ray for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Lambda's own function segment and the backend's segment (route annotation).
    Segments,
    /// Lambda's own segment only: the backend's spans were lost.
    LambdaOnly,
    /// The backend's span and Lambda's in `aws/spans` (Transaction Search), nothing in X-Ray.
    Spans,
    /// The backend's segment as an ECS task sends it.
    EcsSegment,
    Nothing,
}

/// How the double behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub status: u16,
    /// The `X-Trace-ID` value: `None` for a well-formed fresh id, `Some("")` for no header.
    pub header: Option<&'static str>,
    pub delivery: Delivery,
    pub logs: bool,
    /// How long after the answer the trace and the lines are written.
    pub delay: Duration,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            status: 200,
            header: None,
            delivery: Delivery::Segments,
            logs: true,
            delay: Duration::ZERO,
        }
    }
}

/// Where the double writes, and what.
#[derive(Clone)]
pub struct Sink {
    pub config: SdkConfig,
    pub log_group: String,
    /// Names Lambda's own segment (the function's name).
    pub function_name: String,
}

struct Shared {
    behaviour: Behaviour,
    sink: Sink,
    trace_ids: Mutex<Vec<String>>,
}

/// The double, served until dropped.
pub struct Api {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Api {
    pub async fn start(behaviour: Behaviour, sink: Sink) -> Self {
        let shared = Arc::new(Shared {
            behaviour,
            sink,
            trace_ids: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/", axum::routing::get(root))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, shared, task }
    }

    /// The trace ids the double answered with, in order.
    pub fn trace_ids(&self) -> Vec<String> {
        self.shared.trace_ids.lock().unwrap().clone()
    }
}

/// 24 hex digits, different at every call.
fn random_hex() -> String {
    apuntador_harness::fresh_key("t")[2..26].to_owned()
}

async fn root(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let trace_id = format!("1-{}-{}", apuntador_harness::epoch_hex(), random_hex());
    shared.trace_ids.lock().unwrap().push(trace_id.clone());
    let mut headers = HeaderMap::new();
    match shared.behaviour.header {
        None => {
            headers.insert("x-trace-id", HeaderValue::from_str(&trace_id).unwrap());
        }
        Some("") => {}
        Some(other) => {
            headers.insert("x-trace-id", HeaderValue::from_static(other));
        }
    }
    let writer = shared.clone();
    let id = trace_id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(writer.behaviour.delay).await;
        write(&writer.behaviour, &writer.sink, &id).await;
    });
    let body = json!({"message": "Apuntador OAuth Backend", "version": "1.0.41", "docs": null});
    (
        StatusCode::from_u16(shared.behaviour.status).unwrap(),
        headers,
        axum::Json(body),
    )
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn write(behaviour: &Behaviour, sink: &Sink, trace_id: &str) {
    let xray = aws_sdk_xray::Client::new(&sink.config);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sink.config);
    let start = now_secs();
    let lambda = json!({
        "name": sink.function_name, "id": &random_hex()[..16], "trace_id": trace_id,
        "start_time": start, "end_time": start + 0.004, "origin": "AWS::Lambda::Function",
        "subsegments": [{"name": "Invocation", "id": &random_hex()[..16], "start_time": start, "end_time": start + 0.003}]
    });
    let backend = |origin: Option<&str>| {
        let mut segment = json!({
            "name": "apuntador-backend", "id": &random_hex()[..16], "trace_id": trace_id,
            "start_time": start, "end_time": start + 0.002,
            "annotations": {"http_route": "/", "http_status_code": 200, "service_version": "1.0.41"},
            "http": {"request": {"method": "GET", "url": "/"}, "response": {"status": 200}}
        });
        if let Some(origin) = origin {
            segment["origin"] = origin.into();
        } else {
            segment["parent_id"] = lambda["id"].clone();
        }
        segment
    };
    let segments = match behaviour.delivery {
        Delivery::Segments => vec![lambda.clone(), backend(None)],
        Delivery::LambdaOnly => vec![lambda.clone()],
        Delivery::EcsSegment => vec![backend(Some("AWS::ECS::Container"))],
        Delivery::Spans | Delivery::Nothing => Vec::new(),
    };
    if !segments.is_empty() {
        xray.put_trace_segments()
            .set_trace_segment_documents(Some(segments.iter().map(|s| s.to_string()).collect()))
            .send()
            .await
            .expect("PutTraceSegments into moto");
    }
    let millis = (start * 1000.0) as i64;
    if behaviour.delivery == Delivery::Spans {
        let w3c = trace_id.trim_start_matches("1-").replace('-', "");
        let span = json!({
            "traceId": w3c, "spanId": &random_hex()[..16], "name": "GET /", "kind": "SERVER",
            "durationNano": 2_000_000, "status": {"code": "UNSET"},
            "attributes": {"http.route": "/", "http.response.status_code": 200},
            "resource": {"attributes": {"service.name": "apuntador-backend"}}
        });
        let lambdas = json!({
            "traceId": w3c, "spanId": &random_hex()[..16], "name": sink.function_name, "kind": "SERVER",
            "resource": {"attributes": {"service.name": sink.function_name, "cloud.platform": "aws_lambda"}}
        });
        put_lines(
            &logs,
            "aws/spans",
            trace_id,
            millis,
            &[lambdas.to_string(), span.to_string()],
        )
        .await;
    }
    if behaviour.logs {
        let line = |message: &str, extra: serde_json::Value| {
            let mut line = json!({
                "timestamp": "2026-12-05T10:00:00.000000Z", "level": "INFO", "message": message,
                "target": "apuntador::http", "trace_id": trace_id, "span_id": &random_hex()[..16],
                "function_request_id": "8f5c3a0e-request", "cold_start": false
            });
            if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
                line.extend(extra.clone());
            }
            line.to_string()
        };
        let other = json!({"level": "INFO", "message": "request completed", "trace_id": format!("1-{}-{}", apuntador_harness::epoch_hex(), random_hex())});
        put_lines(
            &logs,
            &sink.log_group,
            trace_id,
            millis,
            &[
                other.to_string(),
                line(
                    "request completed",
                    json!({"method": "GET", "route": "/", "status": 200, "duration_ms": 0.2}),
                ),
            ],
        )
        .await;
    }
}

async fn put_lines(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    trace_id: &str,
    millis: i64,
    lines: &[String],
) {
    // aws/spans is X-Ray's to create; the backend's group is the deployment's.
    if group == "aws/spans" {
        super::exists_ok(logs.create_log_group().log_group_name(group).send().await);
    }
    let stream = format!("2026/12/05/[$LATEST]{}", &trace_id[11..]);
    super::exists_ok(
        logs.create_log_stream()
            .log_group_name(group)
            .log_stream_name(&stream)
            .send()
            .await,
    );
    let events = lines.iter().enumerate().map(|(i, message)| {
        aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
            .timestamp(millis + i as i64)
            .message(message)
            .build()
            .unwrap()
    });
    logs.put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .set_log_events(Some(events.collect()))
        .send()
        .await
        .expect("PutLogEvents into moto");
}

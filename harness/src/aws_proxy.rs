//! A loopback stand-in between the function and moto: forwards every AWS request, **one at a
//! time**, records what each asked for, and can refuse a chosen write.
//!
//! One at a time because moto serves requests on threads without a lock around DynamoDB's
//! condition-then-write, which DynamoDB itself makes atomic per request; serialising here gives
//! moto the atomicity the real service has, so a race test fails only for races in our code.
//! The record (`X-Amz-Target` and JSON body) lets tests assert how the store reads and writes:
//! which operations, which keys, `ConsistentRead`. [`Fault`] slows or fails every call, for the
//! load test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One AWS request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The operation, e.g. `DynamoDB_20120810.GetItem`.
    pub target: String,
    pub body: serde_json::Value,
}

impl Call {
    /// The operation name without its service prefix (`GetItem`).
    pub fn operation(&self) -> &str {
        self.target.rsplit('.').next().unwrap_or_default()
    }

    pub fn is_dynamodb_write(&self) -> bool {
        self.target.starts_with("DynamoDB")
            && matches!(
                self.operation(),
                "PutItem" | "UpdateItem" | "DeleteItem" | "TransactWriteItems" | "BatchWriteItem"
            )
    }
}

#[derive(Default)]
struct Shared {
    calls: Vec<Call>,
    /// What every call meets from now on.
    fault: Fault,
    /// Refuse the DynamoDB write with this number, counted from when it was set (1 = next).
    fail_write: Option<usize>,
    writes_seen: usize,
}

/// A fault the proxy applies to every call (the load test slows or breaks AWS in turn).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Each call waits this long before it is forwarded (calls wait side by side).
    Slow(Duration),
    /// Each call is answered 500 `InternalServerError`, which the SDK retries.
    Fail,
}

pub struct AwsProxy {
    pub endpoint: String,
    shared: Arc<Mutex<Shared>>,
}

impl AwsProxy {
    /// A proxy in front of `upstream` (moto's endpoint).
    pub async fn start(upstream: &str) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let client = reqwest::Client::new();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let one_at_a_time = Arc::new(tokio::sync::Mutex::new(()));
        let state = shared.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (client, upstream, state, one_at_a_time) = (
                    client.clone(),
                    upstream.clone(),
                    state.clone(),
                    one_at_a_time.clone(),
                );
                async move {
                    let fault = state.lock().unwrap().fault;
                    match fault {
                        Fault::None => {}
                        Fault::Slow(delay) => tokio::time::sleep(delay).await,
                        Fault::Fail => {
                            return (
                                StatusCode::INTERNAL_SERVER_ERROR,
                                [("content-type", "application/x-amz-json-1.0")],
                                r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"failed by the test proxy"}"#,
                            )
                                .into_response();
                        }
                    }
                    let _turn = one_at_a_time.lock().await;
                    let call = Call {
                        target: headers
                            .get("x-amz-target")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                    };
                    let refuse = {
                        let mut shared = state.lock().unwrap();
                        let refuse = if call.is_dynamodb_write() {
                            shared.writes_seen += 1;
                            shared.fail_write == Some(shared.writes_seen)
                        } else {
                            false
                        };
                        shared.calls.push(call);
                        refuse
                    };
                    if refuse {
                        // Not retryable, and nothing was written.
                        return (
                            StatusCode::BAD_REQUEST,
                            [("content-type", "application/x-amz-json-1.0")],
                            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ValidationException","message":"refused by the test proxy"}"#,
                        )
                            .into_response();
                    }
                    forward(&client, &upstream, method, &uri, &headers, body).await
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { endpoint, shared }
    }

    /// Every call so far, and forgets them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.shared.lock().unwrap().calls)
    }

    /// Applies `fault` to every call from now on.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.lock().unwrap().fault = fault;
    }

    /// Refuses the `n`-th DynamoDB write from now (1 = the next one); `None` refuses nothing.
    pub fn fail_write(&self, n: Option<usize>) {
        let mut shared = self.shared.lock().unwrap();
        shared.fail_write = n;
        shared.writes_seen = 0;
    }
}

/// Forwards one request to `upstream` (without `host` and `content-length`, which the client
/// sets) and answers with what came back.
pub(crate) async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = client
        .request(method, format!("{upstream}{path}"))
        .body(body);
    for (name, value) in headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                if name != "content-length" && name != "transfer-encoding" {
                    response = response.header(name, value);
                }
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            response
                .body(Body::from(bytes))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

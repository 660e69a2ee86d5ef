//! A Lambda Runtime API double on 127.0.0.1: it hands events to the function with the headers
//! Lambda sends (including `Lambda-Runtime-Trace-Id`, which the AWS emulator never sends) and
//! records when each event was handed over, answered, and when the function polled again.
//! Several `/next` polls may wait at once (Lambda Managed Instances): each gets its own event,
//! and the double counts how many were handed over and not yet answered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Mutex as AsyncMutex, mpsc, oneshot};

/// An event to hand to the function.
pub struct Event {
    pub body: String,
    pub trace_header: Option<String>,
}

/// What the function answered.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub request_id: String,
    /// `true` for `/response`, `false` for `/error`.
    pub ok: bool,
    pub body: String,
    pub handed_at: Instant,
    pub answered_at: Instant,
}

impl Outcome {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct Book {
    handed: HashMap<String, Instant>,
    waiting: HashMap<String, oneshot::Sender<Outcome>>,
    polls: Vec<Instant>,
    init_errors: Vec<String>,
    in_flight: usize,
    max_in_flight: usize,
}

#[derive(Clone)]
struct Shared {
    events: Arc<AsyncMutex<mpsc::UnboundedReceiver<(String, Event)>>>,
    book: Arc<Mutex<Book>>,
    /// Each event's deadline, from when it is handed over.
    deadline_ms: Arc<AtomicU64>,
}

pub struct RuntimeApi {
    pub addr: SocketAddr,
    sender: mpsc::UnboundedSender<(String, Event)>,
    shared: Shared,
    counter: Mutex<u64>,
}

async fn next(State(shared): State<Shared>) -> Response {
    shared.book.lock().unwrap().polls.push(Instant::now());
    let received = shared.events.lock().await.recv().await;
    let Some((id, event)) = received else {
        return StatusCode::GONE.into_response();
    };
    {
        let mut book = shared.book.lock().unwrap();
        book.handed.insert(id.clone(), Instant::now());
        book.in_flight += 1;
        book.max_in_flight = book.max_in_flight.max(book.in_flight);
    }
    let mut headers = HeaderMap::new();
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + u128::from(shared.deadline_ms.load(Ordering::SeqCst));
    headers.insert(
        "lambda-runtime-aws-request-id",
        HeaderValue::from_str(&id).unwrap(),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        HeaderValue::from_str(&deadline.to_string()).unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:eu-west-1:123456789012:function:apuntador-test"),
    );
    if let Some(trace) = &event.trace_header {
        headers.insert(
            "lambda-runtime-trace-id",
            HeaderValue::from_str(trace).unwrap(),
        );
    }
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    (StatusCode::OK, headers, event.body).into_response()
}

fn settle(shared: &Shared, id: &str, ok: bool, body: Bytes) -> StatusCode {
    let mut book = shared.book.lock().unwrap();
    let handed_at = book.handed.get(id).copied().unwrap_or_else(Instant::now);
    if let Some(waiter) = book.waiting.remove(id) {
        book.in_flight -= 1;
        let _ = waiter.send(Outcome {
            request_id: id.to_owned(),
            ok,
            body: String::from_utf8_lossy(&body).into_owned(),
            handed_at,
            answered_at: Instant::now(),
        });
    }
    StatusCode::ACCEPTED
}

async fn response(State(shared): State<Shared>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    settle(&shared, &id, true, body)
}

async fn error(State(shared): State<Shared>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    settle(&shared, &id, false, body)
}

async fn init_error(State(shared): State<Shared>, body: Bytes) -> StatusCode {
    shared
        .book
        .lock()
        .unwrap()
        .init_errors
        .push(String::from_utf8_lossy(&body).into_owned());
    StatusCode::ACCEPTED
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Shared {
            events: Arc::new(AsyncMutex::new(receiver)),
            book: Arc::new(Mutex::new(Book::default())),
            deadline_ms: Arc::new(AtomicU64::new(30_000)),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let addr = crate::serve_router(app).await;
        Self {
            addr,
            sender,
            shared,
            counter: Mutex::new(0),
        }
    }

    /// Hands `event` to the function and waits for its answer.
    pub async fn invoke(&self, event: Event) -> Outcome {
        let id = {
            let mut counter = self.counter.lock().unwrap();
            *counter += 1;
            format!("00000000-0000-4000-8000-{:012}", *counter)
        };
        let (tx, rx) = oneshot::channel();
        self.shared
            .book
            .lock()
            .unwrap()
            .waiting
            .insert(id.clone(), tx);
        self.sender.send((id.clone(), event)).unwrap();
        tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .unwrap_or_else(|_| panic!("invocation {id} got no answer within 20 s"))
            .unwrap()
    }

    /// The first `/next` poll made after `after`, waiting up to `timeout` for it.
    pub async fn poll_after(&self, after: Instant, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .shared
                .book
                .lock()
                .unwrap()
                .polls
                .iter()
                .copied()
                .find(|p| *p >= after);
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Every `/next` poll so far.
    pub fn polls(&self) -> Vec<Instant> {
        self.shared.book.lock().unwrap().polls.clone()
    }

    /// The most events handed over and not yet answered at any one time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.book.lock().unwrap().max_in_flight
    }

    /// Events handed over from now on must be answered within `deadline` (30 s until set).
    pub fn set_deadline(&self, deadline: Duration) {
        self.shared
            .deadline_ms
            .store(deadline.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn init_errors(&self) -> Vec<String> {
        self.shared.book.lock().unwrap().init_errors.clone()
    }
}

//! A loopback double of the few AWS calls moto lacks, forwarding every other request to moto
//! unchanged (method, path, query, headers, body), and optionally amending a forwarded answer
//! moto cannot give right (a field it never fills): the doctor's client for that service is
//! pointed at it with `AWS_ENDPOINT_URL_<SERVICE>`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Answers a request itself (status, JSON body) from its path and headers, or `None` to
/// forward it to moto.
pub type Answer = Box<dyn Fn(&str, &HeaderMap) -> Option<(u16, String)> + Send + Sync>;

/// Rewrites moto's answer body to a forwarded request (from the request's headers).
pub type Amend = Box<dyn Fn(&HeaderMap, Vec<u8>) -> Vec<u8> + Send + Sync>;

struct Shared {
    moto: String,
    client: reqwest::Client,
    answer: Answer,
    amend: Option<Amend>,
    content_type: &'static str,
}

/// The double, served until dropped.
pub struct Overlay {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Overlay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Overlay {
    pub async fn start(
        moto: &str,
        answer: Answer,
        amend: Option<Amend>,
        content_type: &'static str,
    ) -> Self {
        let shared = Arc::new(Shared {
            moto: moto.to_owned(),
            client: reqwest::Client::new(),
            answer,
            amend,
            content_type,
        });
        let app = axum::Router::new().fallback(handle).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, task }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Some((status, body)) = (shared.answer)(parts.uri.path(), &parts.headers) {
        let status = StatusCode::from_u16(status).unwrap();
        return (status, [(header::CONTENT_TYPE, shared.content_type)], body).into_response();
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let body = axum::body::to_bytes(body, 16 << 20).await.unwrap();
    let request_headers = parts.headers.clone();
    let mut headers = parts.headers.clone();
    for name in [
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    let answer = shared
        .client
        .request(parts.method, format!("{}{path}", shared.moto))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let mut headers = answer.headers().clone();
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ] {
        headers.remove(name);
    }
    let mut body = answer.bytes().await.unwrap().to_vec();
    if let Some(amend) = &shared.amend {
        body = amend(&request_headers, body);
    }
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

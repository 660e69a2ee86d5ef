//! What every in-process test needs: the production router built from a configuration given
//! as variables, and requests sent through it with the answer read back.

use std::collections::HashMap;
use std::sync::Arc;

use apuntador_backend::config::Config;
use apuntador_backend::routes::{AppState, router};
use apuntador_backend::telemetry::http::RequestTracing;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use opentelemetry_aws::trace::XrayPropagator;
use serde_json::Value;
use tower::ServiceExt;

/// The configuration `vars` describe (an empty value removes a variable set by `base`).
pub fn config(base: &[(&str, &str)], vars: &[(&str, &str)]) -> Arc<Config> {
    let mut map: HashMap<String, String> = base
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for (k, v) in vars {
        if v.is_empty() {
            map.remove(*k);
        } else {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
    }
    Arc::new(Config::from_lookup(&move |n| map.get(n).cloned()).expect("valid test config"))
}

/// The request layer as production builds it, with the X-Ray propagator.
pub fn tracing() -> RequestTracing {
    RequestTracing::new(Arc::new(XrayPropagator::default()), false)
}

/// The production router on `config`.
pub async fn app(config: Arc<Config>) -> Router {
    router(AppState::new(config).await.unwrap(), tracing())
}

/// What the router answered.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `loc` of each field error of a 422, in order.
    pub fn error_locations(&self) -> Vec<Value> {
        self.body["errors"]
            .as_array()
            .map(|errors| errors.iter().map(|e| e["loc"].clone()).collect())
            .unwrap_or_default()
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.expect("body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// `GET path` with these header lines (a name may repeat).
pub async fn get(app: &Router, path: &str, headers: &[(&str, String)]) -> Answer {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    send(app, request.body(Body::empty()).unwrap()).await
}

/// `POST path` with `body` as JSON and these header lines.
pub async fn post(app: &Router, path: &str, body: &Value, headers: &[(&str, String)]) -> Answer {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    send(app, request.body(Body::from(body.to_string())).unwrap()).await
}

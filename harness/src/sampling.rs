//! A double of X-Ray's sampling API as the collector's `awsproxy` extension serves it:
//! `POST /GetSamplingRules` answers the rules the test set, `POST /SamplingTargets` the targets
//! document the test set; every request body is kept, in order, for the test to read.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Default)]
struct Shared {
    rules: Value,
    targets: Value,
    /// `(path, body)` of every call.
    calls: Vec<(String, Value)>,
}

pub struct SamplingApiDouble {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

/// A rule with every field X-Ray sends; `fields` override the defaults (all wildcards,
/// priority 1000, no reservoir, rate 0).
pub fn rule(name: &str, fields: Value) -> Value {
    let mut rule = json!({
        "RuleName": name,
        "RuleARN": format!("arn:aws:xray:eu-west-1:123456789012:sampling-rule/{name}"),
        "ResourceARN": "*", "Priority": 1000, "FixedRate": 0.0, "ReservoirSize": 0,
        "ServiceName": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*",
        "URLPath": "*", "Version": 1, "Attributes": {}
    });
    if let (Some(target), Some(extra)) = (rule.as_object_mut(), fields.as_object()) {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
    json!({"SamplingRule": rule, "CreatedAt": 1.7e9, "ModifiedAt": 1.7e9})
}

impl SamplingApiDouble {
    pub async fn start(rules: Vec<Value>) -> Self {
        let shared = Arc::new(Mutex::new(Shared {
            rules: json!({"SamplingRuleRecords": rules, "NextToken": null}),
            targets: json!({"SamplingTargetDocuments": [], "LastRuleModification": 1.0, "UnprocessedStatistics": []}),
            calls: Vec::new(),
        }));
        let app = Router::new()
            .route("/GetSamplingRules", post(get_rules))
            .route("/SamplingTargets", post(targets))
            .with_state(shared.clone());
        let addr = crate::serve_router(app).await;
        Self { addr, shared }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the next `SamplingTargets` calls answer.
    pub fn set_targets(&self, targets: Value) {
        self.shared.lock().unwrap().targets = targets;
    }

    pub fn calls(&self, path: &str) -> Vec<Value> {
        self.shared
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// Waits until `path` was called `count` times; panics after `timeout`.
    pub async fn wait_calls(&self, path: &str, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let calls = self.calls(path);
            if calls.len() >= count {
                return calls;
            }
            assert!(
                Instant::now() < deadline,
                "{path} called {} times, expected {count}",
                calls.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn get_rules(State(shared): State<Arc<Mutex<Shared>>>, body: String) -> (StatusCode, String) {
    let mut shared = shared.lock().unwrap();
    let parsed = serde_json::from_str(&body).unwrap_or(Value::Null);
    shared.calls.push(("/GetSamplingRules".to_owned(), parsed));
    (StatusCode::OK, shared.rules.to_string())
}

async fn targets(State(shared): State<Arc<Mutex<Shared>>>, body: String) -> (StatusCode, String) {
    let mut shared = shared.lock().unwrap();
    let parsed = serde_json::from_str(&body).unwrap_or(Value::Null);
    shared.calls.push(("/SamplingTargets".to_owned(), parsed));
    (StatusCode::OK, shared.targets.to_string())
}

//! One invocation: the event handed over by the Runtime API becomes an HTTP request for the
//! router (through `lambda_http`, which knows API Gateway REST / HTTP APIs, ALB and Function
//! URLs), and the router's response becomes the JSON the integration expects. Anything that
//! cannot be answered that way (an event that is not an HTTP request, a panic) becomes a
//! [`Diagnostic`], which Lambda reports to the caller as a function error.
//!
//! An invocation is abandoned at its deadline (`Lambda-Runtime-Deadline-Ms`). Classic Lambda
//! stops the sandbox then anyway; Lambda Managed Instances do not, and leave it to the runtime:
//! without this a stuck invocation would hold one of the process's concurrent slots for ever.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use futures_util::FutureExt;
use lambda_http::request::LambdaRequest;
use lambda_runtime::{Config, Context, Diagnostic, LambdaEvent};
use tower::Service;

use super::runtime_api::NextEvent;

const DEADLINE: &str = "lambda-runtime-deadline-ms";

/// The router behind `lambda_http`'s event adapter.
type Handler = lambda_http::Adapter<'static, axum::response::Response, Router>;

/// Answers one event: the response body to post, or the error to report.
pub async fn answer(
    router: &Router,
    config: &Arc<Config>,
    event: &NextEvent,
) -> Result<Vec<u8>, Diagnostic> {
    let context = context(config, event)?;
    let left = context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let request = parse(&event.body)?;
    // The router's error type is `Infallible`: only a panic can stop it from answering. The
    // adapter is made per event and gone before the first await: it is not `Send` (it names the
    // response type, whose body is not `Sync`), and workers of Lambda Managed Instances run on
    // any thread. A router is always ready, so `call` needs no `ready` first.
    let router = router.clone();
    let invoke = async move {
        let answering = Handler::from(router).call(LambdaEvent::new(request, context));
        answering.await
    };
    let answered = tokio::time::timeout(left, AssertUnwindSafe(invoke).catch_unwind()).await;
    let response = match answered {
        Ok(Ok(Ok(response))) => response,
        Ok(Ok(Err(never))) => match never {},
        Ok(Err(panic)) => return Err(panicked(panic.as_ref())),
        Err(_) => {
            return Err(diagnostic(
                "Runtime.DeadlineExceeded",
                "the invocation was abandoned at its deadline",
            ));
        }
    };
    serde_json::to_vec(&response).map_err(|error| diagnostic("Runtime.SerializationError", error))
}

/// The invocation context `lambda_http` attaches to the request (request id, deadline, ARN,
/// X-Ray header), built without the panics `Context::new` has for a missing deadline.
fn context(config: &Arc<Config>, event: &NextEvent) -> Result<Context, Diagnostic> {
    let deadline_ok = event
        .headers
        .get(DEADLINE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.parse::<u64>().is_ok());
    if !deadline_ok {
        return Err(diagnostic(
            "Runtime.InvalidEvent",
            format!("the event has no valid {DEADLINE} header"),
        ));
    }
    Context::new(&event.request_id, config.clone(), &event.headers)
        .map_err(|error| diagnostic("Runtime.InvalidEvent", error))
}

/// The event as an HTTP request; the error names where the JSON stopped fitting, never its
/// content (events carry headers and bodies that may hold credentials).
fn parse(body: &[u8]) -> Result<LambdaRequest, Diagnostic> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        diagnostic(
            "Runtime.UnsupportedEvent",
            format!(
                "the event is not an API Gateway, ALB or Function URL request (at {}): {}",
                error.path(),
                json_problem(error.inner())
            ),
        )
    })
}

/// What is wrong with the JSON, in words that never quote it.
fn json_problem(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Io => "could not be read",
        serde_json::error::Category::Syntax => "is not valid JSON",
        serde_json::error::Category::Data => "has an unexpected shape",
        serde_json::error::Category::Eof => "ends too early",
    }
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> Diagnostic {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the handler panicked".to_owned());
    diagnostic("Runtime.Panic", message)
}

fn diagnostic(error_type: &str, message: impl std::fmt::Display) -> Diagnostic {
    Diagnostic {
        error_type: error_type.to_owned(),
        error_message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_http_event_is_named_without_its_content() {
        let Err(error) = parse(br#"{"detail-type":"Scheduled Event","secret":"hunter2"}"#) else {
            panic!("a scheduled event parsed as an HTTP request");
        };
        assert_eq!(error.error_type, "Runtime.UnsupportedEvent");
        assert!(
            !error.error_message.contains("hunter2"),
            "{}",
            error.error_message
        );
    }

    #[test]
    fn broken_json_is_reported_as_such() {
        let Err(error) = parse(b"{ not json") else {
            panic!("broken JSON parsed");
        };
        assert!(
            error.error_message.contains("is not valid JSON"),
            "{}",
            error.error_message
        );
    }

    /// Issue 26 item 5: whatever bytes arrive as an event, the parser answers (an HTTP request
    /// or a diagnostic), never panics, and its diagnostic is short and quotes nothing of the
    /// event. Inputs: arbitrary bytes, and the sample events of each integration (HTTP API,
    /// REST API, ALB, Function URL) with a planted secret, bytes replaced, removed or doubled.
    /// `FUZZ_CASES` cases per run (default 2000).
    #[test]
    fn any_event_is_parsed_or_named_without_panicking() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        const PLANTED: &str = "planted-secret-value-0123456789";
        let samples: Vec<Vec<u8>> = [
            include_str!("../../events/http-api-oauth-token-dropbox.json"),
            include_str!("../../events/rest-api-health.json"),
            include_str!("../../events/alb-health-public.json"),
            include_str!("../../events/function-url-config-providers.json"),
            include_str!("../../events/http-api-device-renew-mtls.json"),
        ]
        .iter()
        .map(|e| {
            e.replacen(
                "\"headers\": {",
                &format!("\"headers\": {{\"x-api-key\": \"{PLANTED}\","),
                1,
            )
            .into_bytes()
        })
        .collect();
        for sample in &samples {
            assert!(parse(sample).is_ok(), "{}", String::from_utf8_lossy(sample));
        }
        let mutated = (
            0..samples.len(),
            proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
        )
            .prop_map(move |(which, edits)| {
                let mut bytes = samples[which].clone();
                for (at, byte, kind) in edits {
                    let at = at % bytes.len().max(1);
                    match kind {
                        _ if bytes.is_empty() => bytes.push(byte),
                        0 => bytes[at] = byte,
                        1 => {
                            bytes.truncate(at);
                        }
                        _ => {
                            let tail = bytes[at..].to_vec();
                            bytes.extend(tail);
                        }
                    }
                }
                bytes
            });
        let cases = std::env::var("FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(
            &prop_oneof![proptest::collection::vec(any::<u8>(), 0..2048), mutated],
            |bytes| {
                if let Err(error) = parse(&bytes) {
                    prop_assert!(error.error_message.len() < 400, "{}", error.error_message);
                    prop_assert!(
                        !error.error_message.contains(PLANTED),
                        "{}",
                        error.error_message
                    );
                }
                Ok(())
            },
        );
        if let Err(failure) = result {
            panic!("Lambda event parser: {failure}");
        }
    }

    #[test]
    fn a_panic_message_is_kept() {
        let payload: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(panicked(payload.as_ref()).error_message, "boom");
        let payload: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        assert_eq!(panicked(payload.as_ref()).error_message, "bang");
    }
}

//! The OTLP-over-UDP transport (`OTEL_TRACES_EXPORTER=otlp-udp`, issue 24) as Lambda runs it:
//! the binary under the Runtime API double with current-time X-Ray headers, a UDP listener in
//! place of Lambda's X-Ray endpoint checking every datagram (header line, `T1S`, base64, a
//! decodable `ExportTraceServiceRequest`, size).

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::support::runtime_api::{Event, RuntimeApi};
use crate::support::{Process, binary, closed_port, epoch_hex, lambda_env, sample_event};

const HEADER: &[u8] = b"{\"format\":\"json\",\"version\":1}\n";
const PARENT: &str = "53995c3f42cd8ad8";

/// Stands in for the X-Ray endpoint: keeps every datagram's spans, and what was wrong.
struct Endpoint {
    address: String,
    /// Each span with whether it came as `T1S`.
    spans: Arc<Mutex<Vec<(bool, Span)>>>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl Endpoint {
    fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let address = socket.local_addr().unwrap().to_string();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let (kept, wrong) = (spans.clone(), problems.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            // Bounded: the tests using it finish within a minute.
            let until = Instant::now() + Duration::from_secs(120);
            while Instant::now() < until {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                match decode(&buf[..n]) {
                    Ok((sampled, request)) => kept.lock().unwrap().extend(
                        request
                            .resource_spans
                            .into_iter()
                            .flat_map(|r| r.scope_spans)
                            .flat_map(|s| s.spans)
                            .map(|s| (sampled, s)),
                    ),
                    Err(problem) => wrong.lock().unwrap().push(problem),
                }
            }
        });
        Self {
            address,
            spans,
            problems,
        }
    }

    /// Spans that came as `T1S`.
    fn spans(&self) -> Vec<Span> {
        self.tagged()
            .into_iter()
            .filter_map(|(sampled, s)| sampled.then_some(s))
            .collect()
    }

    fn tagged(&self) -> Vec<(bool, Span)> {
        self.spans.lock().unwrap().clone()
    }

    async fn wait_for(&self, trace_id: &[u8], n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if found.len() >= n || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A datagram's request, and whether it came as `T1S` (else `T1U`).
fn decode(datagram: &[u8]) -> Result<(bool, ExportTraceServiceRequest), String> {
    if datagram.len() > 65_507 {
        return Err(format!("{} bytes", datagram.len()));
    }
    let body = datagram.strip_prefix(HEADER).ok_or("no header line")?;
    let (sampled, body) = match (body.strip_prefix(b"T1S"), body.strip_prefix(b"T1U")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => return Err("no T1S or T1U prefix".into()),
    };
    let bytes = STANDARD.decode(body).map_err(|e| e.to_string())?;
    ExportTraceServiceRequest::decode(bytes.as_slice())
        .map(|r| (sampled, r))
        .map_err(|e| e.to_string())
}

/// A current-time root and its trace id as bytes.
fn root(n: u8) -> (String, Vec<u8>) {
    let epoch = epoch_hex();
    let rest = format!("{n:024x}");
    let bytes = (0..16)
        .map(|i| {
            let hex = format!("{epoch}{rest}");
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()
        })
        .collect();
    (format!("1-{epoch}-{rest}"), bytes)
}

fn invocation(body: String, root: &str, sampled: u8) -> Event {
    Event {
        body,
        trace_header: Some(format!(
            "Root={root};Parent={PARENT};Sampled={sampled};Lineage=a87bd80c:1"
        )),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sampled_invocations_reach_the_endpoint_as_otlp_under_the_lambda_parent() {
    let endpoint = Endpoint::start();
    let api = RuntimeApi::start().await;
    let mut env = lambda_env(&format!("http://127.0.0.1:{}", closed_port()));
    env.push(("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string()));
    env.push(("OTEL_TRACES_EXPORTER".into(), "otlp-udp".into()));
    env.push(("AWS_XRAY_DAEMON_ADDRESS".into(), endpoint.address.clone()));
    let mut process = Process::spawn(&binary(), &[], &env);

    let (sampled_root, sampled_id) = root(1);
    let outcome = api
        .invoke(invocation(
            sample_event("http-api-root.json"),
            &sampled_root,
            1,
        ))
        .await;
    assert_eq!(outcome.json()["statusCode"], 200);
    let spans = endpoint.wait_for(&sampled_id, 1).await;
    assert_eq!(spans.len(), 1, "the invocation's span, once: {spans:?}");
    assert_eq!(
        spans[0].parent_span_id,
        hex(PARENT),
        "parented on the header's Parent"
    );
    assert_eq!(spans[0].kind, 2, "SERVER");

    // Sampled=0 sends nothing; a long path and user agent never make an oversized datagram.
    let (unsampled_root, unsampled_id) = root(2);
    api.invoke(invocation(
        sample_event("http-api-root.json"),
        &unsampled_root,
        0,
    ))
    .await;
    let mut long: serde_json::Value =
        serde_json::from_str(&sample_event("http-api-root.json")).unwrap();
    let path = format!("/{}", "p".repeat(4000));
    long["rawPath"] = path.clone().into();
    long["requestContext"]["http"]["path"] = path.into();
    long["headers"]["user-agent"] = "u".repeat(8000).into();
    let (long_root, long_id) = root(3);
    let outcome = api
        .invoke(invocation(long.to_string(), &long_root, 1))
        .await;
    assert_eq!(outcome.json()["statusCode"], 404);
    assert_eq!(endpoint.wait_for(&long_id, 1).await.len(), 1);
    assert!(
        endpoint
            .tagged()
            .iter()
            .all(|(_, s)| s.trace_id != unsampled_id),
        "Sampled=0 sent nothing, neither T1S nor T1U"
    );
    assert_eq!(
        endpoint.problems.lock().unwrap().clone(),
        Vec::<String>::new(),
        "every datagram well formed and under 64 KB"
    );
    assert!(process.terminate(Duration::from_secs(10)).is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_switch_on_unsampled_invocations_go_as_t1u_only() {
    let endpoint = Endpoint::start();
    let api = RuntimeApi::start().await;
    let mut env = lambda_env(&format!("http://127.0.0.1:{}", closed_port()));
    env.push(("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string()));
    env.push(("OTEL_TRACES_EXPORTER".into(), "otlp-udp".into()));
    env.push(("TRACE_SEND_UNSAMPLED".into(), "true".into()));
    env.push(("AWS_XRAY_DAEMON_ADDRESS".into(), endpoint.address.clone()));
    let mut process = Process::spawn(&binary(), &[], &env);

    let (unsampled_root, unsampled_id) = root(5);
    let outcome = api
        .invoke(invocation(
            sample_event("http-api-root.json"),
            &unsampled_root,
            0,
        ))
        .await;
    assert_eq!(outcome.json()["statusCode"], 200);
    let (sampled_root, sampled_id) = root(6);
    api.invoke(invocation(
        sample_event("http-api-root.json"),
        &sampled_root,
        1,
    ))
    .await;
    assert_eq!(endpoint.wait_for(&sampled_id, 1).await.len(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let unsampled = loop {
        let found: Vec<(bool, Span)> = endpoint
            .tagged()
            .into_iter()
            .filter(|(_, s)| s.trace_id == unsampled_id)
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        unsampled.len(),
        1,
        "the unsampled invocation's span, once, as T1U only (T1S?, name, span id): {:?}",
        unsampled
            .iter()
            .map(|(sampled, s)| (sampled, &s.name, s.span_id.clone()))
            .collect::<Vec<_>>()
    );
    let (sampled_flag, span) = &unsampled[0];
    assert!(!sampled_flag, "sent as T1U");
    assert_eq!(span.parent_span_id, hex(PARENT));
    assert!(
        span.attributes
            .iter()
            .any(|kv| kv.key == "aws.trace.flag.sampled"),
        "marked unsampled as AWS's SDKs mark it"
    );
    assert!(
        endpoint
            .tagged()
            .iter()
            .filter(|(_, s)| s.trace_id == sampled_id)
            .all(|(sampled, _)| *sampled),
        "sampled spans stay T1S"
    );
    assert!(endpoint.problems.lock().unwrap().is_empty());
    assert!(process.terminate(Duration::from_secs(10)).is_some());
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

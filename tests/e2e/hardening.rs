//! The second security review (issue 23), tried as the reviewer did: the release binary in
//! server mode on loopback, a hostile caller, stand-ins for a provider and the X-Ray daemon.
//! Each test failed on the code before the fix it names.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use serde_json::Value;

use crate::support::epoch_hex;
use crate::support::otlp::OtlpReceiver;
use crate::support::provider_double::ProviderDouble;

use crate::server::{printed_server_spans as server_spans, start_printing_spans as start};

/// A `Root` of now, different for each `n`.
fn root(n: u32) -> String {
    format!("1-{}-{n:024x}", epoch_hex())
}

/// Item 1: with `parentbased_always_off`, 0 of 20 requests were traced without a header and
/// 20 of 20 with `Sampled=1`: a caller decided the X-Ray bill.
#[tokio::test(flavor = "multi_thread")]
async fn a_callers_sampled_decision_is_a_request_not_an_order() {
    for budget in [None, Some("unlimited")] {
        let mut extra = vec![("OTEL_TRACES_SAMPLER", "parentbased_always_off")];
        if let Some(budget) = budget {
            extra.push(("TRACE_UPSTREAM_SAMPLED_PER_SECOND", budget));
        }
        let (mut process, url) = start(&extra);
        let client = reqwest::Client::new();
        let began = std::time::Instant::now();
        for n in 0..20 {
            let root = root(n);
            let response = client
                .get(format!("{url}/"))
                .header(
                    "x-amzn-trace-id",
                    format!("Root={root};Parent=53995c3f42cd8ad8;Sampled=1"),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.headers()["x-trace-id"].to_str().unwrap(),
                root,
                "the caller's trace id is kept for correlation, traced or not"
            );
        }
        // One a second, one banked: at most one more for each second the requests took.
        let most = 1 + began.elapsed().as_secs() as usize + 1;
        let traced = server_spans(&mut process).len();
        match budget {
            None => assert!((1..=most).contains(&traced), "{traced} of 20 traced"),
            Some(_) => assert_eq!(traced, 20, "every hop trusted"),
        }
    }
}

/// Item 2: unknown keys of the incoming header were forwarded to the providers (and AWS) in
/// `X-Amzn-Trace-Id`, and rode in every span's trace state (exported to the collector).
#[tokio::test(flavor = "multi_thread")]
async fn caller_chosen_header_keys_reach_no_provider_and_no_span() {
    let double = ProviderDouble::start().await;
    let receiver = OtlpReceiver::start().await;
    let endpoint = format!("http://{}", receiver.http_addr);
    let mut env: Vec<(String, String)> = double.env();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint));
    env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "50".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut process, url) = crate::server::start(&env);
    let header = format!(
        "Root={};Parent=53995c3f42cd8ad8;Sampled=1;Self=1-5759e988-x;Injected=evil-value;Lineage=a87bd80c:1",
        root(1)
    );
    let response = reqwest::Client::new()
        .post(format!("{url}/oauth/revoke/dropbox"))
        .header("x-amzn-trace-id", header)
        .json(&serde_json::json!({"token": "header-keys-token-0123456789"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(double.forms().len(), 1, "the provider was called");
    assert_eq!(
        double.trace_headers(),
        Vec::<String>::new(),
        "providers get no X-Ray header"
    );
    let spans = receiver.wait_for_spans(2, Duration::from_secs(10)).await;
    assert!(process.terminate(Duration::from_secs(10)).is_some());
    assert_eq!(
        spans.len(),
        2,
        "the request and the provider call: {spans:?}"
    );
    for span in &spans {
        assert_eq!(
            span.trace_state, "lineage=a87bd80c:1",
            "only a well-formed Lineage rides in the trace state"
        );
    }
    assert!(
        process.lines().iter().all(|l| !l.contains("evil-value")),
        "no line carries the caller's key"
    );
}

/// Item 3: a `traceparent` header, even malformed and with only the `xray` propagator, turned
/// off the check that refuses a `Root` X-Ray would not store: a 2016 trace was joined and lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_root_starts_a_fresh_trace_whatever_else_is_sent() {
    let (mut process, url) = start(&[]);
    let stale = "1-5759e988-bd862e3fe1be46a994272793";
    let response = reqwest::Client::new()
        .get(format!("{url}/"))
        .header(
            "x-amzn-trace-id",
            format!("Root={stale};Parent=53995c3f42cd8ad8;Sampled=1"),
        )
        .header("traceparent", "not-a-traceparent")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-trace-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, stale, "the stale trace is not joined");
    let spans = server_spans(&mut process);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["trace_id"], id.as_str());
    assert!(spans[0]["parent_span_id"].is_null() || spans[0]["parent_span_id"] == "");
}

/// Item 3: a path over about 230 bytes made the daemon transport's translator refuse the URL
/// (X-Ray's 250-character limit), and the whole span was lost; so did a long user agent.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_path_and_user_agent_are_traced_clipped() {
    let daemon = UdpSocket::bind("127.0.0.1:0").unwrap();
    daemon
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let address = daemon.local_addr().unwrap().to_string();
    let (mut process, url) = crate::server::start(&[
        ("OTEL_TRACES_EXPORTER", "xray"),
        ("AWS_XRAY_DAEMON_ADDRESS", &address),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ]);
    let path = format!("/{}", "p".repeat(600));
    let response = reqwest::Client::new()
        .get(format!("{url}{path}?code=query-is-never-shown"))
        .header("user-agent", "u".repeat(400))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let mut buf = vec![0u8; 70_000];
    let n = daemon.recv(&mut buf).expect("the span reached the daemon");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let document: Value = serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
    let request = &document["http"]["request"];
    let shown = request["url"].as_str().unwrap();
    assert!(shown.len() <= 250 && shown.ends_with('…'), "{shown}");
    assert!(
        shown.contains("/pppp") && !shown.contains("query"),
        "{shown}"
    );
    let agent = request["user_agent"].as_str().unwrap();
    assert!(agent.len() <= 250 && agent.ends_with('…'), "{agent}");
    assert!(process.terminate(Duration::from_secs(10)).is_some());
}

/// Item 4: `client.address` was the first `X-Forwarded-For` entry, which the client writes.
#[tokio::test(flavor = "multi_thread")]
async fn the_client_address_is_the_one_a_trusted_proxy_saw() {
    for (hops, expected) in [(None, "127.0.0.1"), (Some("1"), "203.0.113.9")] {
        let mut extra = Vec::new();
        if let Some(hops) = hops {
            extra.push(("TRUSTED_PROXY_HOPS", hops));
        }
        let (mut process, url) = start(&extra);
        reqwest::Client::new()
            .get(format!("{url}/"))
            .header("x-forwarded-for", "198.51.100.7, 203.0.113.9")
            .send()
            .await
            .unwrap();
        let spans = server_spans(&mut process);
        assert_eq!(
            spans[0]["attributes"]["client.address"], expected,
            "TRUSTED_PROXY_HOPS={hops:?}"
        );
    }
}

/// A connection that sends the start of a request head and never finishes it.
fn stalled(base: &str) -> TcpStream {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        .unwrap();
    stream
}

/// Whether the server has closed `stream` (blocking up to the read timeout set on it).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Item 6: connections that never finished their headers were all still open after 75 s (no
/// header-read timeout, no cap on connections); a request whose body never came held its
/// handler for good.
#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_capped() {
    let (mut process, url) = start(&[
        ("SERVER_HEADER_READ_TIMEOUT_SECS", "1"),
        ("SERVER_MAX_CONNECTIONS", "4"),
        ("SERVER_REQUEST_TIMEOUT_SECS", "1"),
    ]);
    // Twice the cap: the first four are closed by the header timeout, the next four are
    // accepted then and closed in turn.
    let mut slow: Vec<TcpStream> = (0..8).map(|_| stalled(&url)).collect();
    for stream in &mut slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
    }
    for (i, stream) in slow.iter_mut().enumerate() {
        assert!(
            closed_by_server(stream),
            "stalled connection {i} still open"
        );
    }

    // At the cap, a new connection waits: with two stalled connections holding both slots,
    // a complete request is answered only once one of them has been closed.
    drop(slow);
    let (mut capped, url) = {
        assert!(process.terminate(Duration::from_secs(10)).is_some());
        start(&[
            ("SERVER_HEADER_READ_TIMEOUT_SECS", "1"),
            ("SERVER_MAX_CONNECTIONS", "2"),
        ])
    };
    let mut holders = [stalled(&url), stalled(&url)];
    // Give the server the time to accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = reqwest::get(format!("{url}/")).await.unwrap();
    assert_eq!(response.status(), 200);
    let freed = holders.iter_mut().any(|h| {
        h.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        match h.read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    });
    assert!(
        freed,
        "the third connection was served while both slots were held"
    );
    assert!(capped.terminate(Duration::from_secs(10)).is_some());

    // A body that never arrives: 408 within the request timeout, as a problem.
    let (mut process, url) = start(&[("SERVER_REQUEST_TIMEOUT_SECS", "1")]);
    let mut stream = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    stream
        .write_all(
            b"POST /oauth/revoke/dropbox HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"token\":",
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n{") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-trace-id"),
        "{answer}"
    );
    assert!(process.terminate(Duration::from_secs(10)).is_some());
}

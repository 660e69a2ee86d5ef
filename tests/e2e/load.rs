//! Load and faults, measured (issue 26 item 6): the binary under sustained load on loopback, in
//! server mode and under the Runtime API double (Lambda Managed Instances, eight at a time),
//! while the provider, AWS (moto behind the proxy) and the collector are slowed or broken in
//! turn, then all healthy again.
//!
//! Every request must get an answer: the route's success, or (only where the phase breaks what
//! that route needs) a clean problem+json 5xx, every 503 with `Retry-After: 5`. Nothing may
//! panic; the process must stop cleanly on SIGTERM; memory must end where the warm process
//! stood; every request must leave its access line; and every request span that never reached
//! the collector must be counted in `SpansDropped`.
//!
//! Each phase lasts `LOAD_SECONDS` (2 by default; `scripts/load.sh` runs a minute each and
//! writes the figures to docs/benchmark.md's format) with `LOAD_CLIENTS` (32) clients, each
//! looping: `GET /health`, `POST /oauth/authorize`, the provider's consent, `POST /oauth/token`
//! (a provider call and a conditional write to the single-use table), `GET
//! /device/ca-certificate`. Ignored by `cargo test` (it takes the machine); `scripts/test.sh`
//! runs it alone, after the other tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::device_aws::create_ca_secrets;
use crate::keys::secrets_manager;
use crate::metrics::{documents, total};
use crate::support::aws_proxy::{AwsProxy, Fault};
use crate::support::otlp::{Behaviour, OtlpReceiver};
use crate::support::provider_double::{Mode, ProviderDouble};
use crate::support::runtime_api::{Event, RuntimeApi};
use crate::support::{
    Process, binary, epoch_hex, http_api_event_with_cert, lambda_env, moto, serve,
};
use apuntador_backend::keys::random_secret;

const VERIFIER: &str = "load-e2e-verifier-load-e2e-verifier-load-e2e-012345678";
const KEYS_SECRET: &str = "apuntador-e2e/load-keys";
/// How much the resident set may grow from the end of the first (warm) phase to the end of the
/// run, in KiB.
const RSS_GROWTH_KIB: u64 = 24 * 1024;

fn phase_length() -> Duration {
    let seconds = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(seconds)
}

fn clients() -> usize {
    std::env::var("LOAD_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Healthy,
    ProviderSlow,
    ProviderFailing,
    AwsSlow,
    AwsFailing,
    CollectorHanging,
    CollectorFailing,
    Recovered,
}

impl Phase {
    const ALL: [Phase; 8] = [
        Phase::Healthy,
        Phase::ProviderSlow,
        Phase::ProviderFailing,
        Phase::AwsSlow,
        Phase::AwsFailing,
        Phase::CollectorHanging,
        Phase::CollectorFailing,
        Phase::Recovered,
    ];

    fn name(self) -> &'static str {
        match self {
            Phase::Healthy => "healthy",
            Phase::ProviderSlow => "provider slow (5 s, past OAUTH_TIMEOUT_MS=1000)",
            Phase::ProviderFailing => "provider failing (503)",
            Phase::AwsSlow => "AWS slow (4 s, past the SDK's 3 s)",
            Phase::AwsFailing => "AWS failing (500)",
            Phase::CollectorHanging => "collector hanging",
            Phase::CollectorFailing => "collector failing (503)",
            Phase::Recovered => "all healthy again",
        }
    }

    fn apply(self, world: &World) {
        world.provider.set_mode(match self {
            Phase::ProviderSlow => Mode::Slow,
            Phase::ProviderFailing => Mode::ServerError,
            _ => Mode::Normal,
        });
        world.proxy.set_fault(match self {
            Phase::AwsSlow => Fault::Slow(Duration::from_secs(4)),
            Phase::AwsFailing => Fault::Fail,
            _ => Fault::None,
        });
        world.receiver.set_behaviour(match self {
            Phase::CollectorHanging => Behaviour::Hang,
            Phase::CollectorFailing => Behaviour::Fail,
            _ => Behaviour::Accept,
        });
    }

    /// What `POST /oauth/token` may answer besides 200 while the phase lasts (a phase's end
    /// overlaps the next one's start by the requests in flight).
    fn token_failures(self) -> &'static [(u16, &'static str)] {
        match self {
            Phase::ProviderSlow => &[(504, "provider_timeout")],
            Phase::ProviderFailing => &[(502, "provider_error")],
            Phase::AwsSlow | Phase::AwsFailing => &[(503, "state_store_unavailable")],
            _ => &[],
        }
    }
}

/// The doubles the binary talks to.
struct World {
    _moto: Process,
    proxy: AwsProxy,
    provider: ProviderDouble,
    receiver: OtlpReceiver,
}

enum Target {
    Server { base: String, http: reqwest::Client },
    Lambda(RuntimeApi),
}

struct Answer {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Value,
}

impl Target {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<Answer, String> {
        match self {
            Target::Server { base, http } => {
                let mut request = http.request(method.parse().unwrap(), format!("{base}{path}"));
                if let Some(body) = &body {
                    request = request.json(body);
                }
                let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let (status, content_type, retry_after) = (
                    response.status().as_u16(),
                    header("content-type").unwrap_or_default(),
                    header("retry-after"),
                );
                let bytes = response.bytes().await.map_err(|e| format!("{path}: {e}"))?;
                Ok(Answer {
                    status,
                    content_type,
                    retry_after,
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                })
            }
            Target::Lambda(api) => {
                let trace_header = format!(
                    "Root=1-{}-{:024x};Parent=53995c3f42cd8ad8;Sampled=1",
                    epoch_hex(),
                    rand_u96()
                );
                let event = Event {
                    body: http_api_event_with_cert(method, path, "", body.as_ref(), None),
                    trace_header: Some(trace_header),
                };
                let outcome = tokio::time::timeout(Duration::from_secs(30), api.invoke(event))
                    .await
                    .map_err(|_| format!("{path}: no answer in 30 s"))?;
                if !outcome.ok {
                    return Err(format!("{path}: invocation error {}", outcome.body));
                }
                let response = outcome.json();
                let header = |name: &str| response["headers"][name].as_str().map(str::to_owned);
                Ok(Answer {
                    status: response["statusCode"].as_u64().unwrap_or(0) as u16,
                    content_type: header("content-type").unwrap_or_default(),
                    retry_after: header("retry-after"),
                    body: serde_json::from_str(response["body"].as_str().unwrap_or("null"))
                        .unwrap_or(Value::Null),
                })
            }
        }
    }
}

fn rand_u96() -> u128 {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().fold(0u128, |n, b| (n << 8) | u128::from(*b))
}

/// What one phase saw.
#[derive(Default)]
struct Tally {
    answered: u64,
    /// (route, status) → count.
    statuses: BTreeMap<(&'static str, u16), u64>,
    latencies_us: Vec<u32>,
    violations: Vec<String>,
}

impl Tally {
    fn record(
        &mut self,
        route: &'static str,
        answer: &Result<Answer, String>,
        took: Duration,
        allowed: &[(u16, &str)],
    ) {
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                self.violations.push(format!("no answer: {error}"));
                return;
            }
        };
        self.answered += 1;
        *self.statuses.entry((route, answer.status)).or_default() += 1;
        self.latencies_us
            .push(took.as_micros().min(u128::from(u32::MAX)) as u32);
        let code = answer.body["error"].as_str().unwrap_or_default();
        let expected = allowed
            .iter()
            .any(|(status, want)| *status == answer.status && (want.is_empty() || *want == code));
        if !expected {
            self.violations
                .push(format!("{route}: {} {}", answer.status, answer.body));
        }
        if answer.status >= 500 && !answer.content_type.starts_with("application/problem+json") {
            self.violations.push(format!(
                "{route}: a {} that is not problem+json ({})",
                answer.status, answer.content_type
            ));
        }
        if answer.status == 503 && answer.retry_after.as_deref() != Some("5") {
            self.violations
                .push(format!("{route}: a 503 without Retry-After: 5 ({code})"));
        }
    }
}

/// One client's loop until `until`.
async fn client(
    target: Arc<Target>,
    world: Arc<World>,
    phases: [Phase; 2],
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    // The phase before may still be answering for its last requests.
    let token_allowed: Vec<(u16, &str)> = std::iter::once((200, ""))
        .chain(
            phases
                .iter()
                .flat_map(|p| p.token_failures().iter().copied()),
        )
        .collect();
    while Instant::now() < until {
        let started = Instant::now();
        let health = target.send("GET", "/health", None).await;
        tally.record("GET /health", &health, started.elapsed(), &[(200, "")]);

        let started = Instant::now();
        let authorize = target
            .send(
                "POST",
                "/oauth/authorize/googledrive",
                Some(json!({"code_verifier": VERIFIER, "redirect_uri": "apuntador://oauth-callback"})),
            )
            .await;
        tally.record(
            "POST /oauth/authorize",
            &authorize,
            started.elapsed(),
            &[(200, "")],
        );
        let Ok(Answer {
            status: 200, body, ..
        }) = authorize
        else {
            continue;
        };
        let code = world
            .provider
            .consent(body["authorization_url"].as_str().unwrap_or_default());
        let started = Instant::now();
        let token = target
            .send(
                "POST",
                "/oauth/token/googledrive",
                Some(json!({"code": code, "code_verifier": VERIFIER, "state": body["state"]})),
            )
            .await;
        tally.record(
            "POST /oauth/token",
            &token,
            started.elapsed(),
            &token_allowed,
        );

        let started = Instant::now();
        let ca = target.send("GET", "/device/ca-certificate", None).await;
        tally.record(
            "GET /device/ca-certificate",
            &ca,
            started.elapsed(),
            &[(200, "")],
        );
    }
    tally
}

/// One row of the report.
struct Row {
    phase: Phase,
    answered: u64,
    seconds: f64,
    statuses: BTreeMap<(&'static str, u16), u64>,
    p50_ms: f64,
    p99_ms: f64,
    server_spans: usize,
    rss_kib: u64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

async fn world() -> Option<World> {
    let (moto, endpoint) = moto()?;
    create_ca_secrets(&endpoint).await;
    let keys =
        json!({"SECRET_KEY": random_secret().unwrap(), "CONFIG_API_KEY": random_secret().unwrap()});
    secrets_manager(&endpoint)
        .create_secret()
        .name(KEYS_SECRET)
        .secret_string(keys.to_string())
        .send()
        .await
        .expect("keys secret created");
    let receiver = OtlpReceiver::start().await;
    receiver.count_only();
    Some(World {
        _moto: moto,
        proxy: AwsProxy::start(&endpoint).await,
        provider: ProviderDouble::start().await,
        receiver,
    })
}

/// The binary's environment in either mode, as deployed: AWS for the stores and keys, the
/// doubles for the provider and the collector, every request sampled.
fn environment(world: &World, lambda: Option<&RuntimeApi>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        lambda_env(&format!("http://{}", world.receiver.http_addr))
            .into_iter()
            .filter(|(k, _)| {
                k != "SECRET_KEY"
                    && k != "CONFIG_API_KEY"
                    && (lambda.is_some() || !k.starts_with("AWS_LAMBDA"))
            })
            .collect();
    env.extend(world.provider.env());
    let proxy = world.proxy.endpoint.as_str();
    let mut extra: Vec<(&str, String)> = vec![
        ("INFRASTRUCTURE_PROVIDER", "aws".into()),
        ("AWS_DYNAMODB_TABLE", "apuntador-load-certificates".into()),
        ("AWS_SINGLE_USE_TABLE", "apuntador-load-single-use".into()),
        ("AWS_SECRETS_PREFIX", "apuntador-e2e".into()),
        ("AUTO_CREATE_RESOURCES", "true".into()),
        ("APP_KEYS_SECRET", KEYS_SECRET.into()),
        ("AWS_ENDPOINT_URL", proxy.into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("ENABLED_CLOUD_PROVIDERS", "googledrive".into()),
        ("OAUTH_CONNECT_TIMEOUT_MS", "500".into()),
        ("OAUTH_TIMEOUT_MS", "1000".into()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000".into()),
        ("OTEL_TRACES_SAMPLER", "always_on".into()),
        ("TRACE_HEALTH_CHECKS", "true".into()),
    ];
    match lambda {
        Some(api) => {
            extra.push(("AWS_LAMBDA_RUNTIME_API", api.addr.to_string()));
            extra.push(("AWS_LAMBDA_MAX_CONCURRENCY", "8".into()));
        }
        None => extra.push(("PORT", "0".into())),
    }
    env.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
    env
}

/// Runs every phase against one process and checks what a user would see.
async fn run(mode: &'static str, world: Arc<World>, target: Arc<Target>, mut process: Process) {
    let length = phase_length();
    let mut rows = Vec::new();
    let mut violations = Vec::new();
    let mut answered_total = 0;
    let mut previous = Phase::Healthy;
    for phase in Phase::ALL {
        phase.apply(&world);
        let started = Instant::now();
        let until = started + length;
        let tallies = futures_util::future::join_all((0..clients()).map(|_| {
            tokio::spawn(client(
                target.clone(),
                world.clone(),
                [previous, phase],
                until,
            ))
        }))
        .await;
        let seconds = started.elapsed().as_secs_f64();
        let mut statuses = BTreeMap::new();
        let mut latencies = Vec::new();
        let mut answered = 0;
        for tally in tallies {
            let tally = tally.expect("a client task");
            answered += tally.answered;
            for (key, n) in tally.statuses {
                *statuses.entry(key).or_default() += n;
            }
            latencies.extend(tally.latencies_us);
            violations.extend(
                tally
                    .violations
                    .into_iter()
                    .map(|v| format!("{mode}, {}: {v}", phase.name())),
            );
        }
        latencies.sort_unstable();
        answered_total += answered;
        rows.push(Row {
            phase,
            answered,
            seconds,
            statuses,
            p50_ms: percentile(&latencies, 0.5),
            p99_ms: percentile(&latencies, 0.99),
            server_spans: world.receiver.counted().1,
            rss_kib: process.status_kib("VmRSS:").unwrap_or(0),
        });
        previous = phase;
    }
    // Spans still queued reach the collector at shutdown.
    let exit = process.terminate(Duration::from_secs(15));
    let (all_spans, server_spans) = world.receiver.counted();
    // Counted over the whole output: a minute a phase writes millions of lines, more than the
    // harness keeps (it keeps the metrics documents and panics whatever the length).
    let docs = documents(&process);
    let dropped = total(&docs, "SpansDropped", |_| true);
    let access_lines = process.count_all("\"request completed\"");

    report(
        mode,
        &rows,
        answered_total,
        all_spans,
        server_spans,
        dropped,
        access_lines,
    );

    let shown: Vec<_> = violations.iter().take(20).collect();
    assert!(
        violations.is_empty(),
        "{} violations: {shown:#?}",
        violations.len()
    );
    assert!(
        exit.is_some_and(|e| e.success()),
        "{mode}: stopped cleanly on SIGTERM: {exit:?}"
    );
    assert_eq!(process.count_all("panicked"), 0, "{mode}: a panic");
    assert_eq!(
        access_lines, answered_total,
        "{mode}: an access line per request"
    );
    assert!(
        answered_total.saturating_sub(server_spans as u64) <= dropped,
        "{mode}: {answered_total} requests, {server_spans} request spans received, {dropped} counted as dropped"
    );
    let warm = rows[0].rss_kib;
    let last = rows.last().map_or(0, |r| r.rss_kib);
    assert!(
        last <= warm + RSS_GROWTH_KIB,
        "{mode}: memory grew from {warm} KiB to {last} KiB"
    );
    for row in &rows {
        assert!(
            row.answered > 0,
            "{mode}, {}: nothing answered",
            row.phase.name()
        );
    }
}

fn report(
    mode: &str,
    rows: &[Row],
    answered: u64,
    all_spans: usize,
    server_spans: usize,
    dropped: u64,
    access_lines: u64,
) {
    println!();
    println!(
        "{mode}, {} clients, {:.0} s a phase:",
        clients(),
        phase_length().as_secs_f64()
    );
    println!();
    println!(
        "| phase | requests/s | p50 / p99 | answers | request spans received (cumulative) | RSS |"
    );
    println!("|---|---|---|---|---|---|");
    for row in rows {
        let answers: Vec<String> = row
            .statuses
            .iter()
            .filter(|((_, status), _)| *status != 200)
            .map(|((route, status), n)| format!("{n} × {status} {route}"))
            .collect();
        let ok: u64 = row
            .statuses
            .iter()
            .filter(|((_, s), _)| *s == 200)
            .map(|(_, n)| n)
            .sum();
        println!(
            "| {} | {:.0} | {:.1} / {:.1} ms | {ok} × 200{} | {} | {:.1} MB |",
            row.phase.name(),
            row.answered as f64 / row.seconds,
            row.p50_ms,
            row.p99_ms,
            answers.iter().map(|a| format!(", {a}")).collect::<String>(),
            row.server_spans,
            row.rss_kib as f64 / 1024.0
        );
    }
    println!();
    println!(
        "{mode}: {answered} requests, {access_lines} access lines; {all_spans} spans received ({server_spans} request spans), {dropped} counted in SpansDropped"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "takes the machine; scripts/test.sh and scripts/load.sh run it alone"]
async fn load_and_faults_in_server_mode() {
    let Some(world) = world().await else {
        return;
    };
    let world = Arc::new(world);
    let (process, base) = serve(&binary(), &environment(&world, None));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(clients())
        .build()
        .unwrap();
    run(
        "server mode",
        world,
        Arc::new(Target::Server { base, http }),
        process,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "takes the machine; scripts/test.sh and scripts/load.sh run it alone"]
async fn load_and_faults_under_the_runtime_api() {
    let Some(world) = world().await else {
        return;
    };
    let world = Arc::new(world);
    let api = RuntimeApi::start().await;
    let process = Process::spawn(&binary(), &[], &environment(&world, Some(&api)));
    run(
        "Runtime API double, AWS_LAMBDA_MAX_CONCURRENCY=8",
        world,
        Arc::new(Target::Lambda(api)),
        process,
    )
    .await;
}

//! What a Lambda user pays, measured on the release binary as Lambda runs it: under the
//! project's Runtime API double with a local OTLP receiver. Run through `scripts/bench.sh`
//! (`cargo bench --bench lambda`), which also measures sizes and writes the report.
//!
//! Measures, per telemetry setting (OTLP to a live collector, exporter `none`, collector down,
//! collector hanging, the X-Ray daemon transport and the OTLP-over-UDP transport each to a live
//! UDP receiver and to no endpoint, the SigV4 transport to doubles of X-Ray's OTLP endpoint
//! answering in 5 ms and in 50 ms; exporter `none` and otlp-udp again with metrics off, whose
//! difference from their metrics-on rows is what the Embedded Metric Format documents cost): cold start (process start → first `/next`), client-visible duration
//! (event handed over → response posted) and post-response time (response posted → next
//! `/next`, i.e. the flush) at p50/p99 over a mix of routes, and resident memory (peak, and
//! after 100 vs after all invocations). Then invocations per second one sandbox serves at
//! `AWS_LAMBDA_MAX_CONCURRENCY` 1 (classic Lambda), 8 and 32 (Lambda Managed Instances), with
//! as many invocations outstanding as the sandbox takes; then server mode requests per second
//! with `wrk`.

/// The test harness, and the binary under measurement.
mod support {
    pub use apuntador_harness::*;

    /// `APUNTADOR_BIN`, else the binary cargo built for this run.
    pub fn binary() -> std::path::PathBuf {
        binary_or(env!("CARGO_BIN_EXE_apuntador-backend"))
    }
}

use std::path::Path;
use std::time::{Duration, Instant};

use support::otlp::{Behaviour, OtlpReceiver};
use support::provider_double::ProviderDouble;
use support::runtime_api::{Event, RuntimeApi};
use support::xray_otlp::{Answer, XrayOtlpDouble, test_credentials};
use support::{Process, binary, closed_port, epoch_hex, lambda_env};

/// Measured invocations per setting: 1000, or `BENCH_INVOCATIONS` (a longer run shows whether
/// resident memory keeps growing). Above 100, because RSS is also read after the first 100.
fn invocations() -> usize {
    let Ok(text) = std::env::var("BENCH_INVOCATIONS") else {
        return 1000;
    };
    match text.parse() {
        Ok(n) if n > 100 => n,
        _ => panic!("BENCH_INVOCATIONS must be a whole number above 100, got {text:?}"),
    }
}
const WARMUP: usize = 50;
const COLD_STARTS: usize = 15;
const MIX: [&str; 5] = [
    "http-api-health.json",
    "http-api-config-providers.json",
    "http-api-oauth-authorize-googledrive.json",
    "http-api-device-ca-certificate-pin.json",
    "http-api-not-found.json",
];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    ms(sorted[((sorted.len() as f64 - 1.0) * p).round() as usize])
}

/// A UDP socket standing in for the X-Ray daemon: counts what arrives, so the daemon rows are
/// known to measure real sends (X-Ray's translator drops spans whose trace id is older than 30
/// days, which is why the invocations' `Root` carries the current time).
struct UdpSink {
    address: String,
    datagrams: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl UdpSink {
    fn start() -> Self {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = socket.local_addr().unwrap().to_string();
        let datagrams = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = datagrams.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while socket.recv(&mut buf).is_ok() {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        Self { address, datagrams }
    }

    fn count(&self) -> usize {
        self.datagrams.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct Setting {
    name: &'static str,
    env: Vec<(String, String)>,
}

struct Row {
    name: &'static str,
    cold_p50: f64,
    cold_p99: f64,
    visible_p50: f64,
    visible_p99: f64,
    post_p50: f64,
    post_p99: f64,
    post_max: f64,
    rss_100_kib: u64,
    rss_end_kib: u64,
    hwm_kib: u64,
}

fn base_env(ca_dir: &Path, double: &ProviderDouble, otlp: &str) -> Vec<(String, String)> {
    let mut env = lambda_env(otlp);
    env.extend(double.env());
    env.push((
        "INFRASTRUCTURE_BASE_DIR".into(),
        ca_dir.display().to_string(),
    ));
    env
}

async fn cold_starts(env: &[(String, String)]) -> Vec<Duration> {
    let mut samples = Vec::new();
    for _ in 0..COLD_STARTS {
        let api = RuntimeApi::start().await;
        let mut env = env.to_vec();
        env.push(("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string()));
        let started = Instant::now();
        let _process = Process::spawn(&binary(), &[], &env);
        let first = api
            .poll_after(started, Duration::from_secs(10))
            .await
            .expect("first /next");
        samples.push(first - started);
    }
    samples.sort();
    samples
}

async fn run(setting: &Setting, invocations: usize) -> Row {
    let cold = cold_starts(&setting.env).await;
    let api = RuntimeApi::start().await;
    let mut env = setting.env.clone();
    env.push(("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string()));
    let process = Process::spawn(&binary(), &[], &env);
    let events: Vec<String> = MIX
        .iter()
        .map(|f| apuntador_harness::sample_event(f))
        .collect();
    let mut outcomes = Vec::with_capacity(invocations);
    let mut rss_100 = 0;
    let epoch = epoch_hex();
    for i in 0..invocations + WARMUP {
        let trace_header = Some(format!(
            "Root=1-{epoch}-{i:024x};Parent=53995c3f42cd8ad8;Sampled=1"
        ));
        let outcome = api
            .invoke(Event {
                body: events[i % events.len()].clone(),
                trace_header,
            })
            .await;
        assert!(outcome.ok, "{}", outcome.body);
        if i >= WARMUP {
            outcomes.push(outcome);
        }
        if i == WARMUP + 100 {
            rss_100 = process.status_kib("VmRSS:").unwrap_or(0);
        }
    }
    let mut visible: Vec<Duration> = outcomes
        .iter()
        .map(|o| o.answered_at - o.handed_at)
        .collect();
    let polls = api.polls();
    let mut post: Vec<Duration> = outcomes
        .iter()
        .filter_map(|o| {
            polls
                .iter()
                .find(|p| **p >= o.answered_at)
                .map(|p| *p - o.answered_at)
        })
        .collect();
    visible.sort();
    post.sort();
    Row {
        name: setting.name,
        cold_p50: pct(&cold, 0.5),
        cold_p99: pct(&cold, 0.99),
        visible_p50: pct(&visible, 0.5),
        visible_p99: pct(&visible, 0.99),
        post_p50: pct(&post, 0.5),
        post_p99: pct(&post, 0.99),
        post_max: ms(*post.last().unwrap()),
        rss_100_kib: rss_100,
        rss_end_kib: process.status_kib("VmRSS:").unwrap_or(0),
        hwm_kib: process.status_kib("VmHWM:").unwrap_or(0),
    }
}

/// Invocations served per setting of `AWS_LAMBDA_MAX_CONCURRENCY` (after [`WARMUP`]).
const THROUGHPUT_INVOCATIONS: usize = 6000;

/// One sandbox at `concurrency` (1: the variable unset, classic Lambda's loop), fed by as many
/// callers as it has workers, each invoking again as soon as it is answered: invocations per
/// second, client-visible p50 / p99, peak RSS. Every invocation carries its own sampled trace
/// header and the spans go to `otlp`; the spans received are counted to show none was lost.
async fn throughput(
    base: &[(String, String)],
    concurrency: usize,
    receiver: &OtlpReceiver,
) -> String {
    let api = std::sync::Arc::new(RuntimeApi::start().await);
    let mut env = base.to_vec();
    env.push(("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string()));
    if concurrency > 1 {
        env.push(("AWS_LAMBDA_MAX_CONCURRENCY".into(), concurrency.to_string()));
    }
    let process = Process::spawn(&binary(), &[], &env);
    let body = apuntador_harness::sample_event("http-api-config-providers.json");
    let epoch = epoch_hex();
    let spans_before = receiver.spans().len();
    let drive = |from: usize, count: usize| {
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(from));
        let callers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (api, next, body, epoch) =
                    (api.clone(), next.clone(), body.clone(), epoch.clone());
                tokio::spawn(async move {
                    let mut visible = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= from + count {
                            return visible;
                        }
                        let outcome = api
                            .invoke(Event {
                                body: body.clone(),
                                trace_header: Some(format!(
                                    "Root=1-{epoch}-{i:024x};Parent=53995c3f42cd8ad8;Sampled=1"
                                )),
                            })
                            .await;
                        assert!(outcome.ok, "{}", outcome.body);
                        visible.push(outcome.answered_at - outcome.handed_at);
                    }
                })
            })
            .collect();
        async move {
            let mut visible = Vec::new();
            for caller in callers {
                visible.extend(caller.await.unwrap());
            }
            visible
        }
    };
    drive(0, WARMUP).await;
    let started = Instant::now();
    let mut visible = drive(WARMUP, THROUGHPUT_INVOCATIONS).await;
    let elapsed = started.elapsed();
    visible.sort();
    let expected = WARMUP + THROUGHPUT_INVOCATIONS;
    let spans = receiver
        .wait_for_spans(spans_before + expected, Duration::from_secs(15))
        .await
        .len()
        - spans_before;
    assert!(
        spans >= expected,
        "{spans} spans received for {expected} traced invocations at concurrency {concurrency}"
    );
    format!(
        "| {concurrency} | {:.0} | {:.3} / {:.3} ms | {:.1} MB | {} |",
        THROUGHPUT_INVOCATIONS as f64 / elapsed.as_secs_f64(),
        pct(&visible, 0.5),
        pct(&visible, 0.99),
        process.status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0,
        process.status_kib("Threads:").unwrap_or(0),
    )
}

/// Requests per second at 32 connections for 10 s, from `wrk`'s summary.
fn wrk(url: &str, script: Option<&Path>) -> String {
    let mut command = std::process::Command::new("wrk");
    command.args(["-t2", "-c32", "-d10s", "--latency"]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command
        .arg(url)
        .output()
        .expect("wrk is installed (scripts/bench.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .map(|l| l[13..].trim().to_owned());
    let p50 = text
        .lines()
        .find(|l| l.trim_start().starts_with("50%"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned());
    let p99 = text
        .lines()
        .find(|l| l.trim_start().starts_with("99%"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned());
    format!(
        "{} req/s (p50 {}, p99 {})",
        rps.unwrap_or_default(),
        p50.unwrap_or_default(),
        p99.unwrap_or_default()
    )
}

/// What the server-mode rows compare.
struct ServerSetting {
    name: &'static str,
    env: &'static [(&'static str, &'static str)],
}

const SERVER_SETTINGS: [ServerSetting; 4] = [
    ServerSetting {
        name: "untraced: no span, no access line (health checks by default)",
        env: &[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("TRACE_HEALTH_CHECKS", "false"),
        ],
    },
    ServerSetting {
        name: "ids and access line, nothing sampled (OTEL_TRACES_EXPORTER=none)",
        env: &[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("TRACE_HEALTH_CHECKS", "true"),
        ],
    },
    ServerSetting {
        name: "traced, 5% sampled (parentbased_traceidratio 0.05), OTLP to a live collector",
        env: &[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("TRACE_HEALTH_CHECKS", "true"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.05"),
        ],
    },
    ServerSetting {
        name: "traced, every request sampled, OTLP to a live collector",
        env: &[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("TRACE_HEALTH_CHECKS", "true"),
        ],
    },
];

/// Issue 26 item 6: the server as deployed (X-Ray's default sampling: one trace a second and
/// 5% beyond it, spans to a live collector) against the same server untraced, with the same
/// access lines and ids, so the difference is what tracing costs.
const LIKE_FOR_LIKE: [ServerSetting; 2] = [
    ServerSetting {
        name: "untraced (OTEL_TRACES_EXPORTER=none)",
        env: &[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("TRACE_HEALTH_CHECKS", "true"),
        ],
    },
    ServerSetting {
        name: "traced at X-Ray's default sampling (OTEL_TRACES_SAMPLER=xray, its 1/s + 5% fallback)",
        env: &[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("TRACE_HEALTH_CHECKS", "true"),
            ("OTEL_TRACES_SAMPLER", "xray"),
        ],
    },
];

/// Rounds of the like-for-like comparison; each measures both settings in turn.
const ROUNDS: usize = 5;

/// Requests per second of one `wrk` run on CPU 1 (the server has CPU 0), 32 connections, 5 s.
fn pinned_rps(url: &str, script: Option<&Path>) -> f64 {
    let mut command = std::process::Command::new("taskset");
    command.args(["-c", "1", "wrk", "-t1", "-c32", "-d5s"]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command.arg(url).output().expect("taskset and wrk");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The like-for-like rows: each setting's median over [`ROUNDS`] alternating runs, and the loss.
fn like_for_like(base: &[(String, String)], otlp: &str, post_script: &Path) -> Vec<String> {
    let servers: Vec<(Process, String)> = LIKE_FOR_LIKE
        .iter()
        .map(|setting| start_server(base, setting, otlp, Some("0")))
        .collect();
    let mut rows = Vec::new();
    for (route, path, script) in [
        ("GET /health", "/health", None),
        (
            "POST /oauth/authorize/googledrive",
            "/oauth/authorize/googledrive",
            Some(post_script),
        ),
    ] {
        let mut runs = vec![Vec::new(); servers.len()];
        for _ in 0..ROUNDS {
            for (i, (_, url)) in servers.iter().enumerate() {
                runs[i].push(pinned_rps(&format!("{url}{path}"), script));
            }
        }
        let untraced = median(runs[0].clone());
        let traced = median(runs[1].clone());
        rows.push(format!(
            "| {route} | {untraced:.0} req/s | {traced:.0} req/s | {:+.1}% |",
            (traced / untraced - 1.0) * 100.0
        ));
    }
    rows
}

/// A server with `setting`, optionally pinned to one CPU: the process and its base URL.
fn start_server(
    base: &[(String, String)],
    setting: &ServerSetting,
    otlp: &str,
    cpu: Option<&str>,
) -> (Process, String) {
    let mut env: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_LAMBDA"))
        .cloned()
        .collect();
    env.push(("PORT".into(), "0".into()));
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp.to_owned()));
    env.extend(
        setting
            .env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let process = match cpu {
        Some(cpu) => {
            let args = [
                "-c".to_owned(),
                cpu.to_owned(),
                binary().display().to_string(),
            ];
            Process::spawn(Path::new("/usr/bin/taskset"), &args, &env)
        }
        None => Process::spawn(&binary(), &[], &env),
    };
    let line = process
        .wait_for_line("listening on http://", Duration::from_secs(10))
        .expect("server reports its address");
    let url: String = line[line.find("http://").unwrap_or(0)..]
        .chars()
        .take_while(|c| *c != '"' && !c.is_whitespace())
        .collect();
    (process, url)
}

fn server_mode(
    base: &[(String, String)],
    setting: &ServerSetting,
    otlp: &str,
    post_script: &Path,
) -> (String, String) {
    let (_process, url) = start_server(base, setting, otlp, None);
    let health = wrk(&format!("{url}/health"), None);
    let authorize = wrk(
        &format!("{url}/oauth/authorize/googledrive"),
        Some(post_script),
    );
    (health, authorize)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let invocations = invocations();
    let receiver = OtlpReceiver::start().await;
    let hanging = OtlpReceiver::start().await;
    hanging.set_behaviour(Behaviour::Hang);
    let double = ProviderDouble::start().await;
    let ca_dir = std::env::temp_dir().join(format!("apuntador-bench-ca-{}", std::process::id()));
    let created = std::process::Command::new(binary())
        .args(["create-ca", "--dir"])
        .arg(&ca_dir)
        .output()
        .unwrap();
    assert!(created.status.success());

    let live = format!("http://{}", receiver.http_addr);
    let daemon = UdpSink::start();
    // The two UDP transports: segment documents (`xray`) and OTLP (`otlp-udp`).
    let udp = |exporter: &str, address: &str| {
        [
            base_env(&ca_dir, &double, &live),
            vec![
                ("OTEL_TRACES_EXPORTER".into(), exporter.to_owned()),
                ("AWS_XRAY_DAEMON_ADDRESS".into(), address.to_owned()),
            ],
        ]
        .concat()
    };
    let no_daemon = format!("127.0.0.1:{}", closed_port());
    // The SigV4 transport against doubles of X-Ray's OTLP endpoint that verify each signature
    // and answer after 5 ms and after 50 ms (a region's endpoint seen from Lambda, and a slow
    // day).
    let credentials = test_credentials("bench-token");
    let xray_5ms = XrayOtlpDouble::start(credentials.clone(), "eu-west-1").await;
    xray_5ms.answer(Answer::Slow(Duration::from_millis(5)));
    let xray_50ms = XrayOtlpDouble::start(credentials.clone(), "eu-west-1").await;
    xray_50ms.answer(Answer::Slow(Duration::from_millis(50)));
    let signed = |endpoint: &XrayOtlpDouble| {
        [
            base_env(&ca_dir, &double, &live),
            vec![
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(),
                    "https://xray.eu-west-1.amazonaws.com/v1/traces".into(),
                ),
                ("AWS_ENDPOINT_URL_XRAY".into(), endpoint.url()),
                (
                    "AWS_ACCESS_KEY_ID".into(),
                    credentials.access_key_id().to_owned(),
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".into(),
                    credentials.secret_access_key().to_owned(),
                ),
                ("AWS_SESSION_TOKEN".into(), "bench-token".into()),
            ],
        ]
        .concat()
    };
    let settings = [
        Setting {
            name: "OTLP http/protobuf, live collector",
            env: base_env(&ca_dir, &double, &live),
        },
        Setting {
            name: "OTEL_TRACES_EXPORTER=none",
            env: [
                base_env(&ca_dir, &double, &live),
                vec![("OTEL_TRACES_EXPORTER".into(), "none".into())],
            ]
            .concat(),
        },
        Setting {
            name: "OTEL_TRACES_EXPORTER=none, metrics off (POWERTOOLS_METRICS_DISABLED)",
            env: [
                base_env(&ca_dir, &double, &live),
                vec![
                    ("OTEL_TRACES_EXPORTER".into(), "none".into()),
                    ("POWERTOOLS_METRICS_DISABLED".into(), "true".into()),
                ],
            ]
            .concat(),
        },
        Setting {
            name: "collector down",
            env: base_env(
                &ca_dir,
                &double,
                &format!("http://127.0.0.1:{}", closed_port()),
            ),
        },
        Setting {
            name: "collector hanging (timeout 1000 ms)",
            env: base_env(&ca_dir, &double, &format!("http://{}", hanging.http_addr)),
        },
        Setting {
            name: "X-Ray daemon transport (UDP), daemon listening",
            env: udp("xray", &daemon.address),
        },
        Setting {
            name: "X-Ray daemon transport, no daemon",
            env: udp("xray", &no_daemon),
        },
        Setting {
            name: "OTLP over UDP (otlp-udp), endpoint listening",
            env: udp("otlp-udp", &daemon.address),
        },
        Setting {
            name: "otlp-udp, endpoint listening, metrics off (POWERTOOLS_METRICS_DISABLED)",
            env: [
                udp("otlp-udp", &daemon.address),
                vec![("POWERTOOLS_METRICS_DISABLED".into(), "true".into())],
            ]
            .concat(),
        },
        Setting {
            name: "otlp-udp, no endpoint",
            env: udp("otlp-udp", &no_daemon),
        },
        Setting {
            name: "SigV4 to X-Ray's OTLP endpoint, answering in 5 ms",
            env: signed(&xray_5ms),
        },
        Setting {
            name: "SigV4 to X-Ray's OTLP endpoint, answering in 50 ms",
            env: signed(&xray_50ms),
        },
    ];
    println!(
        "| setting | cold start p50 / p99 | client-visible p50 / p99 | post-response p50 / p99 / max | RSS after 100 → {invocations} | peak RSS |"
    );
    println!("|---|---|---|---|---|---|");
    for setting in &settings {
        let before = daemon.count();
        let verified =
            |d: &XrayOtlpDouble| d.received().iter().filter(|r| r.refused.is_none()).count();
        let signed_before = verified(&xray_5ms) + verified(&xray_50ms);
        let r = run(setting, invocations).await;
        if setting.name.starts_with("SigV4") {
            // Every flush a verified request (the double refuses a bad signature).
            let received = verified(&xray_5ms) + verified(&xray_50ms) - signed_before;
            assert!(
                received >= invocations * 4 / 5,
                "the endpoint verified {received} requests for {invocations} invocations"
            );
        }
        if setting.name.contains("listening") {
            // One datagram per traced invocation at least: four routes of the mix of five are
            // traced (health checks are not).
            let received = daemon.count() - before;
            assert!(
                received >= invocations * 4 / 5,
                "the daemon received {received} datagrams for {invocations} invocations"
            );
        }
        println!(
            "| {} | {:.1} / {:.1} ms | {:.3} / {:.3} ms | {:.3} / {:.3} / {:.1} ms | {:.1} → {:.1} MB | {:.1} MB |",
            r.name,
            r.cold_p50,
            r.cold_p99,
            r.visible_p50,
            r.visible_p99,
            r.post_p50,
            r.post_p99,
            r.post_max,
            r.rss_100_kib as f64 / 1024.0,
            r.rss_end_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0
        );
    }

    println!();
    println!(
        "| AWS_LAMBDA_MAX_CONCURRENCY | invocations/s per sandbox | client-visible p50 / p99 | peak RSS | threads |"
    );
    println!("|---|---|---|---|---|");
    let base = base_env(&ca_dir, &double, &live);
    for concurrency in [1, 8, 32] {
        println!("{}", throughput(&base, concurrency, &receiver).await);
    }

    let script = ca_dir.join("authorize.lua");
    std::fs::write(
        &script,
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"code_verifier":"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk","redirect_uri":"apuntador://oauth-callback"}'
"#,
    )
    .unwrap();
    let base = base_env(&ca_dir, &double, &live);
    println!();
    println!("| server mode, 32 connections | GET /health | POST /oauth/authorize/googledrive |");
    println!("|---|---|---|");
    for setting in &SERVER_SETTINGS {
        let (health, authorize) = server_mode(&base, setting, &live, &script);
        println!("| {} | {health} | {authorize} |", setting.name);
    }
    println!();
    println!(
        "| server on one CPU, wrk on the other, median of {ROUNDS} alternating 5 s runs | untraced | traced at X-Ray's default sampling | difference |"
    );
    println!("|---|---|---|---|");
    for row in like_for_like(&base, &live, &script) {
        println!("{row}");
    }
    let _ = std::fs::remove_dir_all(&ca_dir);
}

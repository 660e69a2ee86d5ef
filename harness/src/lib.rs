//! The harness the backend's tests and benchmark share (a crate of its own, so no test source is
//! included by path): the function process, a Lambda Runtime API double, an OTLP receiver, OAuth
//! provider doubles, a serialising AWS proxy in front of moto, moto itself, X-Ray (moto's API, a
//! daemon double, a segment document checker and the rotel collector), a double of X-Ray's
//! sampling API, the AWS Runtime Interface Emulator, and an App Attest stand-in (a test root that
//! attests keys as Apple's does), a Play Integrity stand-in (the app's keys, tokens as Google makes
//! them) and P-256 CSRs. Loopback only.

pub mod app_attest;
pub mod aws_proxy;
pub mod csr;
pub mod otlp;
pub mod play_integrity;
pub mod provider_double;
pub mod runtime_api;
pub mod sampling;
pub mod spans;
pub mod xray;
pub mod xray_otlp;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The config key the sample events in `events/` carry (published, so refused outside
/// `ENVIRONMENT=local`: [`sample_event`] puts [`config_api_key`] in its place).
pub const EVENTS_CONFIG_API_KEY: &str = "example-config-api-key-for-local-events-0123456789";

/// 48 hex digits no file of the repository holds, different in every test process: the backend
/// refuses every secret the repository publishes outside `ENVIRONMENT=local`, and the tests
/// run it as production.
pub fn fresh_key(label: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = format!("{label}-");
    for round in 0..3u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(round);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out
}

/// The state key the tests configure (one per test process).
pub fn secret_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| fresh_key("state"))
}

/// The config API key the tests configure (one per test process).
pub fn config_api_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| fresh_key("config"))
}

/// `events/<file>` with the test process's config key in place of the published one.
pub fn sample_event(file: &str) -> String {
    std::fs::read_to_string(format!("events/{file}"))
        .unwrap_or_else(|e| panic!("sample event {file}: {e}"))
        .replace(EVENTS_CONFIG_API_KEY, config_api_key())
}

/// The binary under test: `APUNTADOR_BIN` (the test script points it at the release build) or
/// `built`, the one cargo built for this run (callers pass `env!("CARGO_BIN_EXE_apuntador-backend")`,
/// which only the backend's own tests and benches can name).
pub fn binary_or(built: &str) -> PathBuf {
    std::env::var_os("APUNTADOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(built))
}

/// Environment a Lambda sandbox gives the function, minus the Runtime API address.
pub fn lambda_env(otlp_endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_FUNCTION_NAME", "apuntador-test"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_REGION", "eu-west-1"),
        // As template.yaml sets it: REST API paths without the stage prefix.
        ("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true"),
        ("SECRET_KEY", secret_key()),
        ("CONFIG_API_KEY", config_api_key()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint),
        ("OTEL_SERVICE_NAME", "apuntador-e2e"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=e2e"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// The binary in server mode (`PORT=0` in `env` picks a free port): the process and its base
/// URL, read from its "listening on http://…" log line.
pub fn serve(program: &std::path::Path, env: &[(String, String)]) -> (Process, String) {
    let process = Process::spawn(program, &[], env);
    let line = process
        .wait_for_line("listening on http://", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("server did not start: {:?}", process.lines()));
    let start = line.find("http://").unwrap_or_default();
    let url: String = line[start..]
        .chars()
        .take_while(|c| *c != '"' && !c.is_whitespace())
        .collect();
    (process, url)
}

/// Serves `app` on a free loopback port in the background; returns its address.
pub async fn serve_router(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// The current time as the 8 hex digits that open an X-Ray trace id. Tests build their `Root`s
/// with it: X-Ray (and this backend, which then starts a fresh trace) refuses trace ids older
/// than 30 days, so a fixed id in a test would stop working a month after it was written.
pub fn epoch_hex() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{secs:08x}")
}

/// How many output lines a [`Process`] keeps from the start of its output.
pub const MAX_KEPT_LINES: usize = 100_000;

/// Lines past [`MAX_KEPT_LINES`] that are kept anyway: metrics documents and panics, few
/// however long the run, and what a long run's assertions read.
const ALWAYS_KEPT: [&str; 2] = ["\"_aws\"", "panicked"];

/// Needles counted over the whole output, kept or not ([`Process::count_all`]): the access
/// log line and panics.
pub const COUNTED: [&str; 2] = ["\"request completed\"", "panicked"];

#[derive(Default)]
struct Output {
    lines: Vec<String>,
    counts: [u64; COUNTED.len()],
}

/// A running process whose stdout and stderr lines are collected.
pub struct Process {
    child: Child,
    output: Arc<Mutex<Output>>,
}

impl Process {
    pub fn spawn(program: &std::path::Path, args: &[String], env: &[(String, String)]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let output = Arc::new(Mutex::new(Output::default()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for reader in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines().map_while(Result::ok) {
                    let mut output = output.lock().unwrap();
                    for (count, needle) in output.counts.iter_mut().zip(COUNTED) {
                        *count += u64::from(line.contains(needle));
                    }
                    // Read everything (a stopped reader would block the process), keep the
                    // first lines and the few that matter: a benchmark writes millions.
                    if output.lines.len() < MAX_KEPT_LINES
                        || ALWAYS_KEPT.iter().any(|needle| line.contains(needle))
                    {
                        output.lines.push(line);
                    }
                }
            });
        }
        Self { child, output }
    }

    /// How many lines of the whole output contain `needle`, one of [`COUNTED`].
    pub fn count_all(&self, needle: &str) -> u64 {
        let index = COUNTED
            .iter()
            .position(|n| *n == needle)
            .unwrap_or_else(|| panic!("{needle:?} is not counted (harness COUNTED)"));
        self.output.lock().unwrap().counts[index]
    }

    /// The lines kept: the first [`MAX_KEPT_LINES`], and metrics documents and panics after.
    pub fn lines(&self) -> Vec<String> {
        self.output.lock().unwrap().lines.clone()
    }

    /// How many lines contain every one of `needles`.
    pub fn count_lines(&self, needles: &[&str]) -> usize {
        self.output
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Log lines that parse as JSON objects with a `level` (span lines and others excluded).
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("level").is_some())
            .collect()
    }

    /// Waits for a line containing `needle`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return Some(line);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A `/proc/<pid>/status` figure in KiB, e.g. `"VmRSS:"` (resident) or `"VmHWM:"` (peak).
    pub fn status_kib(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|line| line.starts_with(key))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moto_server` from the test tools (`MOTO_SERVER`) on a free loopback port, with its
/// endpoint; `None` (a skip) only outside `scripts/test.sh`.
pub fn moto() -> Option<(Process, String)> {
    let path = std::env::var_os("MOTO_SERVER")
        .map(PathBuf::from)
        .filter(|p| p.exists());
    let Some(path) = path else {
        assert!(
            std::env::var("APUNTADOR_REQUIRE_RIE").as_deref() != Ok("1"),
            "MOTO_SERVER is not set; run scripts/test.sh"
        );
        return None;
    };
    let port = closed_port();
    let process = Process::spawn(
        &path,
        &[
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ],
        &[],
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start: {:?}",
            process.lines()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((process, endpoint))
}

/// A loopback port that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The AWS Lambda Runtime Interface Emulator shipped in the `aws-sam-cli` package: `AWS_LAMBDA_RIE`
/// or `None`. The test script sets it (and `APUNTADOR_REQUIRE_RIE=1`, which makes a missing
/// emulator a failure instead of a skip).
pub fn rie() -> Option<PathBuf> {
    let path = std::env::var_os("AWS_LAMBDA_RIE")
        .map(PathBuf::from)
        .filter(|p| p.exists());
    if path.is_none() && std::env::var("APUNTADOR_REQUIRE_RIE").as_deref() == Ok("1") {
        panic!("AWS_LAMBDA_RIE does not name the emulator binary; run scripts/test.sh");
    }
    path
}

/// An API Gateway HTTP API (v2) event for `method path?query` with an optional JSON body.
pub fn http_api_event(
    method: &str,
    path: &str,
    query: &str,
    body: Option<&serde_json::Value>,
) -> String {
    http_api_event_with_cert(method, path, query, body, None)
}

/// The same event, with a client certificate in the mutual-TLS context, as API Gateway passes
/// it after a custom domain's mutual-TLS handshake.
pub fn http_api_event_with_cert(
    method: &str,
    path: &str,
    query: &str,
    body: Option<&serde_json::Value>,
    client_cert_pem: Option<&str>,
) -> String {
    let mut headers = serde_json::json!({
        "host": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
        "user-agent": "apuntador-e2e",
        "x-forwarded-for": "203.0.113.10",
    });
    if body.is_some() {
        headers["content-type"] = "application/json".into();
    }
    let mut event = serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.10", "userAgent": "apuntador-e2e"},
            "requestId": "e2e-request",
            "routeKey": "$default",
            "stage": "$default",
            "time": "23/Nov/2026:20:04:14 +0000",
            "timeEpoch": 1795464254906u64
        },
        "body": body.map(|b| b.to_string()),
        "isBase64Encoded": false
    });
    if let Some(pem) = client_cert_pem {
        event["requestContext"]["authentication"] = serde_json::json!({
            "clientCert": {
                "clientCertPem": pem,
                "subjectDN": "CN=device",
                "issuerDN": "CN=Apuntador Certificate Authority,O=Apuntador,C=ES",
                "serialNumber": "00",
                "validity": {"notBefore": "Nov 23 20:04:14 2026 GMT", "notAfter": "Dec 23 20:04:14 2026 GMT"}
            }
        });
    }
    event.to_string()
}

/// The certificates that won one round of concurrent renewals of a single serial, from each
/// renewal's (status, body): 200 wins, 403 or 409 lose, anything else fails the test. At most
/// one renewal may win, and exactly one when no revocation raced them.
pub fn renewal_winners(
    round: usize,
    answers: impl IntoIterator<Item = (u16, serde_json::Value)>,
    revoking: bool,
) -> Vec<String> {
    let mut won = Vec::new();
    for (status, body) in answers {
        match status {
            200 => won.push(body["certificate"].as_str().unwrap().to_owned()),
            403 | 409 => {}
            other => panic!("round {round}: renewal answered {other}: {body}"),
        }
    }
    assert!(
        won.len() <= 1,
        "round {round}: {} renewals of one serial succeeded",
        won.len()
    );
    if !revoking {
        assert_eq!(won.len(), 1, "round {round}: exactly one renewal succeeds");
    }
    won
}

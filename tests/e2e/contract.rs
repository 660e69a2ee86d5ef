//! The API contract (`GET /openapi.json` with `ENABLE_DOCS=true`) against the code and the
//! running server: the document validates as OpenAPI 3.1 (`openapi-spec-validator`), its
//! operations are exactly the routes the routers register, and a seeded, bounded
//! property-based run of `schemathesis` over every operation finds no 5xx, no answer outside the
//! documented status codes and schemas, no schema-valid request refused with 422, and no hang.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::provider_double::ProviderDouble;
use crate::support::{CONFIG_API_KEY, Process, SECRET_KEY, binary};

/// Paths that serve the documentation itself, not the API.
const DOCS_ROUTES: [&str; 5] = [
    "/openapi.json",
    "/docs",
    "/redoc",
    "/docs/redoc.standalone.js",
    "/docs/init.js",
];

/// Bounded and seeded: the same seed generates the same requests, so a failure reproduces.
const EXAMPLES_PER_OPERATION: &str = "40";
const SEED: &str = "20261201";

/// A tool the test script installs into its virtualenv (on PATH there); `None` outside it.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("APUNTADOR_REQUIRE_RIE").as_deref() != Ok("1"),
            "{name} is not installed; run scripts/test.sh"
        );
        eprintln!("skipped: {name} is not installed (scripts/test.sh installs it)");
    }
    found
}

fn server(extra: &[(String, String)]) -> (Process, String) {
    let mut env: Vec<(String, String)> = [
        ("PORT", "0"),
        ("ENVIRONMENT", "local"),
        ("SECRET_KEY", SECRET_KEY),
        ("CONFIG_API_KEY", CONFIG_API_KEY),
        ("ENABLE_DOCS", "true"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    env.extend(extra.iter().cloned());
    crate::support::serve(&binary(), &env)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("apuntador-contract-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// (method, path) of every operation in the document.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .filter(|(method, _)| {
                    ["get", "post", "put", "patch", "delete"].contains(&method.as_str())
                })
                .map(move |(method, _)| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

/// (method, path) of every `.route("…", method(handler))` in `src/routes/`; panics on a route
/// registered in a form this reader does not know, so nothing escapes the comparison.
fn registered_routes() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let source = std::fs::read_to_string(&path).unwrap();
        for (at, _) in source.match_indices(".route(") {
            let rest = &source[at + ".route(".len()..];
            let parsed = (|| {
                let rest = rest.trim_start();
                let (route, rest) = match rest.strip_prefix("DOCS_PATH") {
                    // The documentation page's path, a constant of src/routes/docs.rs.
                    Some(rest) => ("/docs", rest),
                    None => rest.strip_prefix('"')?.split_once('"')?,
                };
                let rest = rest.trim_start().strip_prefix(',')?.trim_start();
                let method: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
                Some((route.to_owned(), method))
            })();
            let (route, method) = parsed.unwrap_or_else(|| {
                panic!(
                    "{}: a route this test cannot read: {:?}",
                    path.display(),
                    &rest[..rest.len().min(80)]
                )
            });
            routes.insert((method.to_ascii_uppercase(), route));
        }
    }
    routes
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_validates_and_has_every_route_and_only_those() {
    let dir = temp_dir("document");
    let (_server, url) = server(&[("INFRASTRUCTURE_BASE_DIR".into(), dir.display().to_string())]);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = client
        .get(format!("{url}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let document: Value = answer.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let file = dir.join("openapi.json");
    std::fs::write(&file, document.to_string()).unwrap();
    if let Some(validator) = tool("openapi-spec-validator") {
        let out = Command::new(validator).arg(&file).output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let documented = operations(&document);
    let registered: BTreeSet<(String, String)> = registered_routes()
        .into_iter()
        .filter(|(_, path)| !DOCS_ROUTES.contains(&path.as_str()))
        .collect();
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes without documentation: {undocumented:?}; documented but not routed: {unrouted:?}"
    );
    assert_eq!(documented.len(), 15, "{documented:?}");

    // And each documented operation reaches a handler of the running server, not the 404/405
    // fallbacks.
    for (method, path) in &documented {
        let path = path
            .replace("{provider}", "googledrive")
            .replace("{device_id}", "device-123");
        let request = match method.as_str() {
            "GET" => client.get(format!("{url}{path}")),
            "POST" => client.post(format!("{url}{path}")).json(&json!({})),
            other => panic!("{other}"),
        };
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap_or_default();
        assert!(
            status != 405 && !body.contains("No route matches this path"),
            "{method} {path}: {status} {body}"
        );
    }

    // The page renders from this origin only.
    let page = client.get(format!("{url}/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/docs/redoc.standalone.js") && html.contains("/docs/init.js"),
        "{html}"
    );
    assert!(
        !html.contains("https://"),
        "nothing from another origin: {html}"
    );
    let init = client
        .get(format!("{url}/docs/init.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        init.contains("Redoc.init") && init.contains("/openapi.json"),
        "{init}"
    );
    let script = client
        .get(format!("{url}/docs/redoc.standalone.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.bytes().await.unwrap().len() > 100_000);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A device certificate for the guarded routes, from the running server's own CA.
async fn enrolled_certificate(url: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/device/enroll"))
        .json(&json!({"csr": csr, "device_id": "contract-device", "platform": "android"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["certificate"]
        .as_str()
        .unwrap_or_else(|| panic!("enrolment: {answer}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_no_contract_breach_and_no_hang() {
    let Some(schemathesis) = tool("schemathesis") else {
        return;
    };
    let dir = temp_dir("schemathesis");
    let double = ProviderDouble::start().await;
    let mut env = double.env();
    env.push(("INFRASTRUCTURE_BASE_DIR".into(), dir.display().to_string()));
    env.push(("TRUSTED_CLIENT_CERT_HEADER".into(), "X-Client-Cert".into()));
    let (server, url) = server(&env);
    let certificate = enrolled_certificate(&url).await;
    let encoded =
        percent_encoding::utf8_percent_encode(&certificate, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract/schemathesis.toml");
    let mut run = Command::new(schemathesis);
    run.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{url}/openapi.json"))
        .args(["--url", &url])
        .args(["--max-examples", EXAMPLES_PER_OPERATION, "--seed", SEED])
        .args(["--checks", "all", "--request-timeout", "5"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["-H", &format!("Authorization: Bearer {CONFIG_API_KEY}")])
        .args(["-H", &format!("X-Client-Cert: {encoded}")])
        .current_dir(&dir)
        .env("SCHEMATHESIS_TELEMETRY", "false");
    let output = tokio::task::spawn_blocking(move || {
        let child = run
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // A hang (a request schemathesis never gets an answer to) fails the test, bounded.
        let watchdog = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(600));
            let _ = Command::new("kill").arg(pid.to_string()).status();
        });
        let output = child.wait_with_output().unwrap();
        drop(watchdog);
        output
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    let summary: String = text
        .lines()
        .filter(|l| l.contains("generated") || l.contains("Seed") || l.contains("passed"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("schemathesis: {summary}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}"
    );
    let server_errors: Vec<String> = server
        .lines()
        .into_iter()
        .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("panicked"))
        .collect();
    assert!(server_errors.is_empty(), "{server_errors:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

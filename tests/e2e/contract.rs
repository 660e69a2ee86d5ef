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
use crate::support::{Process, binary, config_api_key, secret_key};

/// Paths that serve the documentation itself, not the API.
const DOCS_ROUTES: [&str; 6] = [
    "/openapi.json",
    "/docs",
    "/redoc",
    "/docs/redoc.standalone.js",
    "/docs/init.js",
    "/docs/redoc.standalone.js.LICENSE.txt",
];

/// Bounded and seeded: the same seed generates the same requests, so a failure reproduces.
/// The API's operations: the spec's fifteen routes (health, configuration, OAuth, device CA),
/// and the attestation challenge, the three attestations and clear-cache (issue 27).
const OPERATIONS: usize = 20;
const EXAMPLES_PER_OPERATION: &str = "40";
const SEED: &str = "20261201";

/// A tool the test script installs into its virtualenv (on PATH there); `None` outside it.
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
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
        ("SECRET_KEY", secret_key()),
        ("CONFIG_API_KEY", config_api_key()),
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

/// The text of a call's arguments: from after its `(` to the matching `)`.
fn arguments(text: &str) -> &str {
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
    }
    text
}

/// (method, path) of every `.route("…", get(a).post(b))` in `source`; an error for a route
/// registered in a form this reader does not know (`route_service`, `nest`, a path that is not
/// a literal), so nothing escapes the comparison with the document.
fn routes_in(source: &str) -> Result<BTreeSet<(String, String)>, String> {
    const METHODS: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];
    for unknown in [
        ".route_service(",
        ".nest(",
        ".nest_service(",
        ".route_layer(",
    ] {
        if source.contains(unknown) {
            return Err(format!(
                "`{unknown}` registers routes this test cannot read"
            ));
        }
    }
    let mut routes = BTreeSet::new();
    for (at, _) in source.match_indices(".route(") {
        let call = arguments(&source[at + ".route(".len()..]);
        let parsed = (|| {
            let rest = call.trim_start();
            let (route, rest) = match rest.strip_prefix("DOCS_PATH") {
                // The documentation page's path, a constant of src/routes/docs.rs.
                Some(rest) => ("/docs", rest),
                None => rest.strip_prefix('"')?.split_once('"')?,
            };
            // `get(a)`, then any `.post(b)` chained on it.
            let mut tail = rest.trim_start().strip_prefix(',')?.trim_start();
            let mut methods = Vec::new();
            loop {
                let name: String = tail.chars().take_while(char::is_ascii_alphabetic).collect();
                if !METHODS.contains(&name.as_str()) {
                    return None;
                }
                methods.push(name.to_ascii_uppercase());
                let inner = tail[name.len()..].strip_prefix('(')?;
                let args = arguments(inner);
                tail = inner.get(args.len() + 1..)?.trim_start();
                match tail.strip_prefix('.') {
                    Some(next) => tail = next.trim_start(),
                    None if tail.trim_end_matches(',').trim().is_empty() => break,
                    None => return None,
                }
            }
            Some((route.to_owned(), methods))
        })();
        let (route, methods) = parsed.ok_or_else(|| {
            format!(
                "a route this test cannot read: {:?}",
                &call[..call.len().min(80)]
            )
        })?;
        for method in methods {
            routes.insert((method, route.clone()));
        }
    }
    Ok(routes)
}

/// Every route registered under `src/routes/` (recursively).
fn registered_routes() -> BTreeSet<(String, String)> {
    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut sources = Vec::new();
    files(
        &crate::support::repo_root().join("src/routes"),
        &mut sources,
    );
    let mut routes = BTreeSet::new();
    for path in sources {
        let source = std::fs::read_to_string(&path).unwrap();
        let found = routes_in(&source).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        routes.extend(found);
    }
    routes
}

#[test]
fn the_route_reader_sees_chains_and_refuses_what_it_cannot_read() {
    let pair = |m: &str, p: &str| (m.to_owned(), p.to_owned());
    assert_eq!(
        routes_in(r#"Router::new().route("/x", get(a).post(b::c(d))).route(DOCS_PATH, get(page))"#),
        Ok(BTreeSet::from([
            pair("GET", "/x"),
            pair("POST", "/x"),
            pair("GET", "/docs")
        ]))
    );
    assert!(routes_in(r#".route(PATH, get(a))"#).is_err());
    assert!(routes_in(r#".route("/x", get(a).layer(l))"#).is_err());
    assert!(routes_in(r#".nest("/api", other)"#).is_err());
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
    assert_eq!(documented.len(), OPERATIONS, "{documented:?}");

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
        .json(&json!({"csr": csr, "device_id": "contract-device", "platform": "ios"}))
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
    // An iOS device with App Attest configured: the attestation routes answer what the guard,
    // the challenge and the evidence decide. (An unconfigured platform answers 501, which
    // schemathesis counts as a server error: Android, until Play Integrity is configured here,
    // is reached only by this iOS device's certificate, refused as another platform's.)
    env.push(("APP_ATTEST_TEAM_ID".into(), "ABCDE12345".into()));
    env.push((
        "APP_ATTEST_BUNDLE_ID".into(),
        "app.apuntador.contract".into(),
    ));
    let (server, url) = server(&env);
    let certificate = enrolled_certificate(&url).await;
    let encoded =
        percent_encoding::utf8_percent_encode(&certificate, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let config = crate::support::repo_root().join("tests/contract/schemathesis.toml");
    let mut run = Command::new(schemathesis);
    run.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{url}/openapi.json"))
        .args(["--url", &url])
        .args(["--max-examples", EXAMPLES_PER_OPERATION, "--seed", SEED])
        .args(["--checks", "all", "--request-timeout", "5"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["-H", &format!("Authorization: Bearer {}", config_api_key())])
        .args(["-H", &format!("X-Client-Cert: {encoded}")])
        .current_dir(&dir)
        .env("SCHEMATHESIS_TELEMETRY", "false");
    let log = dir.join("schemathesis.log");
    let log_path = log.clone();
    let status = tokio::task::spawn_blocking(move || {
        // To a file, not a pipe: a full pipe would stall schemathesis while this waits.
        let log = std::fs::File::create(&log_path).unwrap();
        let child = run
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        // A hang (a request schemathesis never gets an answer to) fails the test, bounded.
        // Killed only while it has not been reaped, so never another process with its pid.
        let mut child = child;
        let deadline = std::time::Instant::now() + Duration::from_secs(600);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait().unwrap()
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let summary: String = text
        .lines()
        .filter(|l| l.contains("generated") || l.contains("Seed") || l.contains("passed"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("schemathesis: {summary}");
    assert!(status.success(), "schemathesis found problems:\n{text}");
    // It ran: every operation tested, requests generated (its summary: "Tested: 16",
    // "N generated, N passed").
    let number_before = |marker: &str| {
        text.lines().find_map(|l| {
            let (before, _) = l.split_once(marker)?;
            before.split_whitespace().last()?.parse::<usize>().ok()
        })
    };
    let tested = text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Tested:")
            .and_then(|n| n.trim().parse::<usize>().ok())
    });
    assert_eq!(tested, Some(OPERATIONS), "{summary}");
    let generated = number_before(" generated").unwrap_or(0);
    assert!(
        generated >= OPERATIONS * 10,
        "only {generated} requests: {summary}"
    );
    // Success bodies were checked too, not only refusals: the enrolled device's status.
    let status_ok = server
        .json_logs()
        .iter()
        .filter(|l| l["route"] == "/device/status/{device_id}" && l["status"] == 200)
        .count();
    assert!(status_ok > 0, "no GET /device/status answered 200");
    let server_errors: Vec<String> = server
        .lines()
        .into_iter()
        .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("panicked"))
        .collect();
    assert!(server_errors.is_empty(), "{server_errors:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

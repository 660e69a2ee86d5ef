//! Property-based tests over the parsers of attacker input (issue 26 item 5): the X-Ray trace
//! header, the sealed OAuth state (the sealing the attestation challenge shares), the redirect
//! allowlist, CSRs, App Attest objects (issue 27), and whole requests through the
//! production router (hostile paths, methods, media types, JSON bodies, certificate headers
//! URL-encoded and as XFCC, trace headers). Nothing panics, nothing answers with more than it
//! was given, and every rejection of a request is a clean 4xx problem, never a 5xx. (The Lambda
//! event parser has its own in `src/lambda/invocation.rs`, where it lives.)
//!
//! Each target runs `FUZZ_CASES` cases (default [`DEFAULT_CASES`]) with proptest's shrinking;
//! a failure prints the smallest input that fails. Inputs are bounded (a few KiB): the
//! body-size limit itself is tested in `router.rs`.

use std::sync::Arc;

use apuntador_backend::device::csr;
use apuntador_backend::oauth::provider::ProviderId;
use apuntador_backend::oauth::redirect::RedirectAllowlist;
use apuntador_backend::oauth::state::{StateClaims, StateSealer};
use apuntador_backend::telemetry::xray::{parent_from_header, root_of_header};
use axum::body::Body;
use axum::http::{Method, Request};
use opentelemetry::trace::TraceContextExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::helpers;
use crate::support::provider_double::ProviderDouble;

/// Cases per target when `FUZZ_CASES` is not set: what `scripts/test.sh` runs.
const DEFAULT_CASES: u32 = 2000;

fn runner() -> TestRunner {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs `test` over `strategy`, panicking with the shrunk failing input.
fn check<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = runner();
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{name}: {failure}");
    }
}

/// Printable text with the characters parsers split on overrepresented.
fn hostile_text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).unwrap(),
        proptest::string::string_regex(&format!("[=;,:/%\\-0-9a-fA-F\\\\\" \\t]{{0,{max}}}"))
            .unwrap(),
        proptest::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect()),
    ]
}

/// A string with bytes of `base` replaced, removed or repeated.
fn mutated(base: String) -> impl Strategy<Value = String> {
    mutated_bytes(base.into_bytes()).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Bytes of `base` replaced, removed or repeated.
fn mutated_bytes(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len().max(1);
    proptest::collection::vec((0..len, any::<u8>(), 0u8..3), 1..8).prop_map(move |edits| {
        let mut bytes = base.clone();
        for (at, byte, kind) in edits {
            let at = at.min(bytes.len().saturating_sub(1));
            match (kind, bytes.is_empty()) {
                (_, true) => bytes.push(byte),
                (0, _) => bytes[at] = byte,
                (1, _) => {
                    bytes.remove(at);
                }
                _ => {
                    let tail = bytes[at..].to_vec();
                    bytes.extend(tail);
                }
            }
        }
        bytes
    })
}

#[test]
fn the_xray_header_parser_takes_anything() {
    let near_valid = (
        "[0-9a-f]{8}",
        "[0-9a-f]{24}",
        "[0-9a-f]{16}",
        "[0-9?]",
        hostile_text(40),
    )
        .prop_map(|(epoch, id, parent, sampled, tail)| {
            format!("Root=1-{epoch}-{id};Parent={parent};Sampled={sampled};{tail}")
        })
        .prop_flat_map(mutated);
    check(
        "X-Amzn-Trace-Id",
        prop_oneof![hostile_text(300), near_valid],
        |header| {
            let root = root_of_header(&header);
            if let Some(parent) = parent_from_header(&header) {
                let span = parent.span();
                prop_assert!(span.span_context().is_valid(), "{header:?}");
                prop_assert_eq!(Some(span.span_context().trace_id()), root);
            }
            Ok(())
        },
    );
}

fn sealer() -> StateSealer {
    StateSealer::new(b"fuzz-state-key-fuzz-state-key-0123456789")
}

fn claims() -> StateClaims {
    StateClaims {
        provider: ProviderId::GoogleDrive,
        redirect_uri: "apuntador://oauth-callback".to_owned(),
        client_state: Some("app-state".to_owned()),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
        issued_at: 1_800_000_000,
        expires_at: 1_800_000_600,
    }
}

#[test]
fn a_sealed_state_opens_only_as_sealed() {
    let sealer = sealer();
    let sealed = sealer.seal(&claims()).expect("sealed");
    assert_eq!(
        sealer.open(&sealed, 1_800_000_100).expect("opens"),
        claims()
    );
    check(
        "sealed state",
        prop_oneof![hostile_text(600), mutated(sealed.clone())],
        |token| {
            if token != sealed {
                prop_assert!(
                    sealer.open(&token, 1_800_000_100).is_err(),
                    "an altered state opened: {token:?}"
                );
            }
            Ok(())
        },
    );
}

#[test]
fn the_redirect_allowlist_admits_only_what_it_lists() {
    let list = RedirectAllowlist::parse("apuntador://,https://app.example.com/callback")
        .expect("valid list");
    check(
        "redirect URI",
        prop_oneof![
            hostile_text(300),
            mutated("apuntador://oauth-callback".to_owned()),
            mutated("https://app.example.com/callback".to_owned()),
        ],
        |uri| {
            if list.allows(&uri) {
                prop_assert!(
                    uri == "https://app.example.com/callback"
                        || uri.to_ascii_lowercase().starts_with("apuntador:"),
                    "allowed: {uri:?}"
                );
            }
            // Any text as a configured list: accepted or refused with a message, never more.
            let _ = RedirectAllowlist::parse(&uri);
            Ok(())
        },
    );
}

fn valid_csr() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

#[test]
fn a_csr_is_checked_whatever_arrives() {
    let csr_pem = valid_csr();
    assert!(csr::check(&csr_pem).is_ok());
    let pem_wrapped = proptest::collection::vec(any::<u8>(), 0..600).prop_map(|der| {
        use base64::Engine;
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    });
    check(
        "CSR",
        prop_oneof![hostile_text(400), pem_wrapped, mutated(csr_pem.clone())],
        |pem| {
            if let Err(error) = csr::check(&pem) {
                prop_assert!(error.to_string().len() < 300, "{error}");
            }
            Ok(())
        },
    );
}

/// A hostile request for one of the service's routes (or none), and which of the two routers
/// (trusting `X-Client-Cert`, or Envoy's `X-Forwarded-Client-Cert`) gets it.
fn hostile_request() -> impl Strategy<Value = (Method, String, Vec<(String, String)>, Vec<u8>, bool)>
{
    let method = prop_oneof![
        3 => Just(Method::GET),
        5 => Just(Method::POST),
        1 => Just(Method::PUT),
        1 => Just(Method::DELETE),
        1 => Just(Method::OPTIONS),
        1 => Just(Method::PATCH),
    ];
    let segment = prop_oneof![
        Just("googledrive".to_owned()),
        Just("dropbox".to_owned()),
        Just("onedrive".to_owned()),
        proptest::string::string_regex("[A-Za-z0-9%._~!$&'()*+,;=:@-]{0,80}").unwrap(),
    ];
    let path = (
        prop_oneof![
            Just("/oauth/authorize/"),
            Just("/oauth/token/"),
            Just("/oauth/refresh/"),
            Just("/oauth/revoke/"),
            Just("/oauth/callback/"),
            Just("/device/enroll"),
            Just("/device/renew"),
            Just("/device/revoke"),
            Just("/device/status/"),
            Just("/config/providers"),
            Just("/health"),
            Just("/"),
            Just("/no-such-route/"),
        ],
        segment,
        proptest::option::of(proptest::string::string_regex("[ -~]{0,120}").unwrap()),
    )
        .prop_map(|(base, segment, query)| {
            let mut path = if base.ends_with('/') && base.len() > 1 {
                format!("{base}{segment}")
            } else {
                base.to_owned()
            };
            if let Some(query) = query {
                // What a client's URL library leaves raw in a query; `%` stays raw, so
                // malformed escapes arrive as they are.
                const QUERY: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
                    .add(b' ')
                    .add(b'"')
                    .add(b'#')
                    .add(b'<')
                    .add(b'>')
                    .add(b'\\')
                    .add(b'^')
                    .add(b'`')
                    .add(b'{')
                    .add(b'|')
                    .add(b'}');
                let encoded = percent_encoding::utf8_percent_encode(&query, QUERY).to_string();
                path.push('?');
                path.push_str(&encoded);
            }
            path
        });
    let json_body = prop_oneof![
        Just(r#"{"code_verifier":"verifier-verifier-verifier-verifier-verifier-0123","redirect_uri":"apuntador://oauth-callback"}"#.to_owned()),
        Just(r#"{"code":"c","code_verifier":"v","state":"s"}"#.to_owned()),
        Just(r#"{"refresh_token":"r"}"#.to_owned()),
        Just(r#"{"csr":"-----BEGIN CERTIFICATE REQUEST-----","device_id":"d-1","platform":"ios"}"#.to_owned()),
        Just(r#"{"device_id":"d-1","old_serial":"01","csr":"x"}"#.to_owned()),
    ]
    .prop_flat_map(mutated);
    let body = prop_oneof![
        json_body.prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..512),
    ];
    // Header values as a client can send them (visible ASCII and tabs); other bytes are
    // refused by the HTTP layer before the router, and are the parsers' targets above.
    let value = |max: usize| {
        prop_oneof![
            3 => proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).unwrap(),
            1 => proptest::string::string_regex(&format!("[=;,:/%\\-0-9a-fA-F\\\\\" \t]{{0,{max}}}")).unwrap(),
        ]
    };
    let header = prop_oneof![
        1 => value(300).prop_map(|v| ("x-client-cert".to_owned(), v)),
        1 => mutated(encoded_cert_header()).prop_map(|v| ("x-client-cert".to_owned(), v)),
        1 => mutated(format!(
            "By=spiffe://proxy;Hash=00ff;Cert=\"{}\";Subject=\"CN=device\"",
            encoded_cert_header()
        ))
        .prop_map(|v| ("x-forwarded-client-cert".to_owned(), v)),
        1 => value(300).prop_map(|v| ("x-forwarded-client-cert".to_owned(), v)),
        1 => value(200).prop_map(|v| ("x-amzn-trace-id".to_owned(), v)),
        1 => value(100).prop_map(|v| ("traceparent".to_owned(), v)),
        1 => value(100).prop_map(|v| ("authorization".to_owned(), v)),
        1 => value(60).prop_map(|v| ("content-type".to_owned(), v)),
        1 => value(60).prop_map(|v| ("origin".to_owned(), v)),
        3 => Just(("content-type".to_owned(), "application/json".to_owned())),
    ];
    (
        method,
        path,
        proptest::collection::vec(header, 0..4),
        body,
        any::<bool>(),
    )
}

/// A self-signed certificate, URL-encoded as the trusted proxy header carries one: mutations of
/// it reach the PEM and X.509 parsers behind the header.
fn encoded_cert_header() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["device".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    percent_encoding::utf8_percent_encode(&cert.pem(), percent_encoding::NON_ALPHANUMERIC)
        .to_string()
}

#[test]
fn hostile_requests_get_a_clean_answer_never_a_5xx() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("random");
    let dir = std::env::temp_dir().join(format!("apuntador-fuzz-{}", u64::from_le_bytes(bytes)));
    std::fs::create_dir_all(&dir).expect("dir");
    // The providers are the protocol-checking doubles: a refresh or revocation with a token they
    // never issued is refused (4xx), as a real provider refuses it. (The current-thread runtime
    // serves them while each request is driven.)
    let double = runtime.block_on(ProviderDouble::start());
    let mut vars: Vec<(String, String)> = double.env();
    vars.extend(
        [
            ("ENVIRONMENT", "local"),
            ("SECRET_KEY", "fuzz-router-secret-fuzz-router-secret-0123"),
            (
                "CONFIG_API_KEY",
                "fuzz-config-key-fuzz-config-key-0123456789",
            ),
            ("INFRASTRUCTURE_BASE_DIR", dir.to_str().expect("utf-8 dir")),
            ("TRUSTED_CLIENT_CERT_HEADER", "X-Client-Cert"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = Arc::new(runtime.block_on(helpers::app(helpers::config(&vars, &[]))));
    let xfcc = Arc::new(runtime.block_on(helpers::app(helpers::config(
        &vars,
        &[("TRUSTED_CLIENT_CERT_HEADER", "X-Forwarded-Client-Cert")],
    ))));
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    let skipped = std::sync::Mutex::new(0u32);
    check(
        "request",
        hostile_request(),
        |(method, path, headers, body, envoy)| {
            let mut request = Request::builder().method(method.clone()).uri(&path);
            for (name, value) in &headers {
                request = request.header(name.as_str(), value.as_str());
            }
            // The HTTP layers refuse what is not a request before the router sees it.
            let Ok(request) = request.body(Body::from(body.clone())) else {
                *skipped.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                return Ok(());
            };
            let router = if envoy { &xfcc } else { &app };
            let answer = runtime.block_on(helpers::send(router, request));
            let status = answer.status.as_u16();
            *seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(status)
                .or_default() += 1;
            prop_assert!(
                status < 500,
                "{method} {path} {headers:?} ({} body bytes) answered {status}: {}",
                body.len(),
                answer.text
            );
            if status >= 400 {
                prop_assert_eq!(
                    answer.header("content-type"),
                    Some("application/problem+json"),
                    "{} {} answered {} without a problem",
                    method,
                    path,
                    status
                );
            }
            prop_assert!(answer.header("x-trace-id").is_some(), "{method} {path}");
            Ok(())
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The inputs reach the routes' own checks, not only the router's 404: a strategy that
    // stopped doing so would pass without testing anything.
    let seen = seen.into_inner().unwrap_or_else(|p| p.into_inner());
    let skipped = skipped.into_inner().unwrap_or_else(|p| p.into_inner());
    eprintln!("fuzz: statuses answered: {seen:?}; {skipped} inputs no HTTP request can carry");
    let answered: u32 = seen.values().sum();
    assert!(
        skipped < answered,
        "most inputs never reached the router: {skipped} of {}",
        skipped + answered
    );
    if runner().config().cases >= 500 {
        for status in [200, 400, 401, 404, 405, 415, 422] {
            assert!(seen.contains_key(&status), "no {status} among {seen:?}");
        }
    }
}

/// Issue 27: App Attest objects, random or a genuine attestation and assertion mutated. Nothing
/// panics; a mutated assertion never verifies, and a mutated attestation verifies only as the
/// same key (a change inside the receipt, which is not read).
#[test]
fn app_attest_objects_are_refused_unless_genuine() {
    use apuntador_backend::attestation::app_attest::{
        APPLE_ROOT_PEM, AppAttestEnvironment, AppAttestVerifier,
    };
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use sha2::{Digest, Sha256};

    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/app-attest/ios-14.4.json")).unwrap();
    let b64 = |v: &serde_json::Value| STANDARD.decode(v.as_str().unwrap()).unwrap();
    let attestation = b64(&fixture["attestation"]["attestationBase64"]);
    let assertion = b64(&fixture["assertion"]["assertionBase64"]);
    let key_id = b64(&fixture["attestation"]["keyIdBase64"]);
    let hash: [u8; 32] = Sha256::digest(b"wurzelpfropf").into();
    // When the genuine attestation was made (its leaf certificate expired days later).
    let at = 1_611_404_013;
    let verifier = AppAttestVerifier::new(
        "6MURL8TA57",
        "de.vincent-haupert.apple-appattest-poc",
        AppAttestEnvironment::Development,
        APPLE_ROOT_PEM,
    )
    .unwrap();
    let key = verifier
        .attestation(&attestation, &key_id, &hash, at)
        .expect("the genuine attestation verifies");
    check(
        "App Attest attestation",
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..2048),
            mutated_bytes(attestation.clone())
        ],
        |object| {
            if let Ok(attested) = verifier.attestation(&object, &key_id, &hash, at) {
                prop_assert_eq!(&attested, &key);
            }
            prop_assert!(object == assertion || verifier.assertion(&object, &key, &hash).is_err());
            Ok(())
        },
    );
    check(
        "App Attest assertion",
        mutated_bytes(assertion.clone()),
        |object| {
            prop_assert!(
                object == assertion || verifier.assertion(&object, &key, &hash).is_err(),
                "a mutated assertion verified"
            );
            Ok(())
        },
    );
}

/// Issue 27: Play Integrity tokens, random or a valid one mutated. Nothing panics, and a token
/// that is not byte for byte the valid one never verifies (the JWE's tag covers the header,
/// key, IV and ciphertext; the JWS's signature the verdict).
#[test]
fn play_integrity_tokens_are_refused_unless_genuine() {
    use apuntador_backend::attestation::play_integrity::{
        DeviceLevel, KeySource, PlayIntegrity, PlayIntegrityKeys, PlayIntegrityPolicy,
        PlayIntegritySettings,
    };
    use apuntador_harness::play_integrity::PlayIntegrityDouble;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let google = PlayIntegrityDouble::new("app.apuntador.android");
    let keys = PlayIntegrityKeys::from_base64(&google.decryption_key(), &google.verification_key())
        .unwrap();
    let play = PlayIntegrity::new(PlayIntegritySettings {
        policy: PlayIntegrityPolicy {
            package: google.package.clone(),
            certificate_digests: vec![google.certificate_digest.clone()],
            min_device: DeviceLevel::Device,
            require_licensed: false,
            max_age_ms: 360_000,
        },
        source: KeySource::Environment(keys.clone()),
    });
    let hash = [5u8; 32];
    let now = chrono::Utc::now().timestamp_millis();
    let token = google.token(&google.verdict(&URL_SAFE_NO_PAD.encode(hash), now));
    assert!(play.verify(&keys, &token, &hash, now).is_ok());
    check(
        "Play Integrity token",
        prop_oneof![
            "[A-Za-z0-9_.-]{0,600}".prop_map(String::into_bytes),
            mutated_bytes(token.clone().into_bytes())
        ],
        |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            prop_assert!(
                text == token || play.verify(&keys, &text, &hash, now).is_err(),
                "a mutated token verified"
            );
            Ok(())
        },
    );
}

//! The device CA in process with the local backend: issuance checked by independent tools
//! (`openssl verify`, x509-parser), the key policy, and the client-certificate guard, presented
//! through a trusted proxy header (server mode).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use apuntador_backend::device::ca::CertificateAuthority;
use apuntador_backend::device::csr;
use apuntador_backend::device::id::{DeviceId, Platform};
use apuntador_backend::device::store::local::LocalStore;
use apuntador_backend::device::store::{CertificateRecord, CertificateStore, Expect};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use crate::helpers::{self, Answer};

struct Fixture {
    app: Router,
    dir: PathBuf,
}

fn temp_dir() -> PathBuf {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    let dir = std::env::temp_dir().join(format!("apuntador-device-{}", u64::from_le_bytes(bytes)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn fixture() -> Fixture {
    fixture_trusting("X-Client-Cert").await
}

/// The router with a development CA in a fresh directory, trusting `header` for certificates.
async fn fixture_trusting(header: &str) -> Fixture {
    let dir = temp_dir();
    let config = helpers::config(
        &[
            ("ENVIRONMENT", "local"),
            ("SECRET_KEY", "device-router-secret-0123456789abcdef0123"),
            ("INFRASTRUCTURE_BASE_DIR", dir.to_str().unwrap()),
            ("TRUSTED_CLIENT_CERT_HEADER", header),
        ],
        &[],
    );
    Fixture {
        app: helpers::app(config).await,
        dir,
    }
}

fn encoded(pem: &str) -> String {
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The certificate in `X-Client-Cert`, as the trusted proxy of these tests passes it.
fn cert_header(cert: Option<&str>) -> Vec<(&'static str, String)> {
    cert.map(|pem| ("x-client-cert", encoded(pem)))
        .into_iter()
        .collect()
}

async fn post(app: &Router, path: &str, body: Value, cert: Option<&str>) -> Answer {
    helpers::post(app, path, &body, &cert_header(cert)).await
}

async fn get(app: &Router, path: &str, cert: Option<&str>) -> Answer {
    let mut headers = cert_header(cert);
    headers.push(("origin", "http://localhost:3000".to_owned()));
    helpers::get(app, path, &headers).await
}

/// A CSR made by the `openssl` CLI (an implementation independent of ours).
fn openssl_csr(dir: &Path, key_args: &[&str], name: &str) -> String {
    let key = dir.join(format!("{name}.key"));
    let status = Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", "/CN=ignored-by-the-ca"])
        .args(key_args)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(dir.join(format!("{name}.csr")))
        .output()
        .expect("openssl is installed");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    std::fs::read_to_string(dir.join(format!("{name}.csr"))).unwrap()
}

fn p256_csr(dir: &Path, name: &str) -> String {
    openssl_csr(
        dir,
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        name,
    )
}

async fn enroll(app: &Router, csr: &str, device: &str, platform: &str) -> Answer {
    post(
        app,
        "/device/enroll",
        json!({"csr": csr, "device_id": device, "platform": platform}),
        None,
    )
    .await
}

/// Enrolls `policy-<name>` (web) with a CSR for a key the `openssl` CLI makes with `key_args`.
async fn enroll_with_key(f: &Fixture, name: &str, key_args: &[&str]) -> Answer {
    let csr = openssl_csr(&f.dir, key_args, name);
    enroll(&f.app, &csr, &format!("policy-{name}"), "web").await
}

fn parse_pem(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

#[tokio::test]
async fn enrollment_issues_certificates_that_check_out_independently() {
    let f = fixture().await;
    let csr = p256_csr(&f.dir, "phone");
    let answer = enroll(&f.app, &csr, "phone-device-01", "Android").await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let pem = answer.body["certificate"].as_str().unwrap();
    let serial = answer.body["serial"].as_str().unwrap();
    assert!(
        serial.len() == 32
            && serial
                .chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
        "{serial}"
    );
    let ca_pem = answer.body["ca_certificate"].as_str().unwrap();
    assert!(pem.ends_with("-----END CERTIFICATE-----\n"));

    std::fs::write(f.dir.join("issued.pem"), pem).unwrap();
    std::fs::write(f.dir.join("ca.pem"), ca_pem).unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(f.dir.join("ca.pem"))
        .arg(f.dir.join("issued.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&verify.stdout)
    );

    let der = parse_pem(pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let ca_der = parse_pem(ca_pem);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(
        cert.subject().to_string(),
        "CN=phone-device-01, O=Apuntador Devices"
    );
    assert_eq!(cert.issuer(), ca.subject());
    assert_eq!(
        cert.raw_serial_as_string()
            .replace(':', "")
            .to_ascii_uppercase()
            .trim_start_matches('0'),
        serial.trim_start_matches('0')
    );
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, 30, "android certificates last 30 days");
    assert!(cert.verify_signature(Some(ca.public_key())).is_ok());
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && !bc.value.ca);
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(
        ku.critical
            && ku.value.digital_signature()
            && ku.value.key_encipherment()
            && !ku.value.key_cert_sign()
    );
    let eku = cert.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.client_auth && !eku.value.server_auth);
    let ski = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        });
    assert!(ski.is_some(), "SKI present");
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    let ca_ski = ca
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        });
    assert_eq!(aki, ca_ski, "AKI names the CA key");
    assert_eq!(
        cert.public_key().raw,
        x509_parser::certification_request::X509CertificationRequest::from_der(&parse_pem(&csr))
            .unwrap()
            .1
            .certification_request_info
            .subject_pki
            .raw,
        "the certificate carries the CSR's key"
    );

    for (platform, expected) in [("desktop", 7), ("web", 1), ("ios", 30)] {
        let a = enroll(
            &f.app,
            &p256_csr(&f.dir, platform),
            &format!("{platform}-device"),
            platform,
        )
        .await;
        let der = parse_pem(a.body["certificate"].as_str().unwrap());
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        let days =
            (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86_400;
        assert_eq!(days, expected, "{platform}");
    }
}

#[tokio::test]
async fn key_policy_and_csr_checks() {
    let f = fixture().await;
    let accepted = [
        ("rsa2048", vec!["-newkey", "rsa:2048"]),
        (
            "p384",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        ),
        ("ed25519", vec!["-newkey", "ed25519"]),
    ];
    for (name, args) in accepted {
        let a = enroll_with_key(&f, name, &args).await;
        assert_eq!(a.status, StatusCode::CREATED, "{name}: {}", a.body);
    }
    let refused = [
        (
            "rsa1024",
            vec!["-newkey", "rsa:1024"],
            "RSA key of 1024 bits is too small",
        ),
        (
            "k256",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
            "EC curve",
        ),
    ];
    for (name, args, why) in refused {
        let a = enroll_with_key(&f, name, &args).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(a.body["error"], "invalid_csr");
        assert!(
            a.body["detail"].as_str().unwrap().contains(why),
            "{name}: {}",
            a.body
        );
    }
    // A CSR whose signature does not match its content.
    let good = p256_csr(&f.dir, "tamper");
    let mut der = parse_pem(&good);
    let at = der.len() / 2;
    der[at] ^= 0x01;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der)
    );
    assert!(csr::check(&tampered).is_err());
    let a = enroll(&f.app, &tampered, "policy-tampered", "web").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);

    let garbage = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----",
        "A".repeat(120)
    );
    assert_eq!(
        enroll(&f.app, &garbage, "policy-garbage", "web")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let a = enroll(&f.app, &"x".repeat(150), "policy-device", "web").await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        a.body["errors"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("PEM format")
    );
    let a = enroll(&f.app, &good, "../../etc/passwd", "tv").await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let locs = a.error_locations();
    assert_eq!(
        locs,
        [json!(["body", "device_id"]), json!(["body", "platform"])]
    );
    assert!(
        !f.dir
            .join("certificates")
            .join("..")
            .join("..")
            .join("etc")
            .exists()
    );
}

#[tokio::test]
async fn the_guard_accepts_only_our_live_certificate_for_its_own_device() {
    let f = fixture().await;
    let enrolled = enroll(&f.app, &p256_csr(&f.dir, "a"), "device-alpha", "android").await;
    let cert = enrolled.body["certificate"].as_str().unwrap().to_owned();
    let serial = enrolled.body["serial"].as_str().unwrap().to_owned();
    let other = enroll(&f.app, &p256_csr(&f.dir, "b"), "device-bravo", "android").await;
    let other_cert = other.body["certificate"].as_str().unwrap().to_owned();

    let ok = get(&f.app, "/device/status/device-alpha", Some(&cert)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["serial"], serial.as_str());
    assert_eq!(ok.body["platform"], "android");
    assert_eq!(ok.body["revoked"], false);
    assert_eq!(ok.body["days_until_expiry"], 29);

    let missing = get(&f.app, "/device/status/device-alpha", None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert_eq!(
        missing.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );

    let mismatch = get(&f.app, "/device/status/device-alpha", Some(&other_cert)).await;
    assert_eq!(
        (mismatch.status, mismatch.body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("device_mismatch"))
    );

    // A certificate from another CA, and a self-signed one that copies our serial and subject.
    let (foreign_key, foreign_ca) = CertificateAuthority::create(30).unwrap();
    let foreign = CertificateAuthority::from_pem(&foreign_key, &foreign_ca).unwrap();
    let checked = csr::check(&p256_csr(&f.dir, "f")).unwrap();
    let device = DeviceId::parse("device-alpha").unwrap();
    let foreign_cert = foreign
        .issue(&checked, &device, Platform::Android, chrono::Utc::now())
        .unwrap();
    let a = get(
        &f.app,
        "/device/status/device-alpha",
        Some(&foreign_cert.pem),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "foreign CA");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "device-alpha");
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&hex(&serial)));
    let stolen = params
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap()
        .pem();
    let a = get(&f.app, "/device/status/device-alpha", Some(&stolen)).await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "self-signed with a stolen serial"
    );

    // Expired: issued by our CA 40 days ago and its device's current record.
    let ca = CertificateAuthority::from_pem(
        &std::fs::read_to_string(f.dir.join("ca_private_key.pem")).unwrap(),
        &std::fs::read_to_string(f.dir.join("ca_certificate.pem")).unwrap(),
    )
    .unwrap();
    let expired_device = DeviceId::parse("device-expired").unwrap();
    let old = ca
        .issue(
            &checked,
            &expired_device,
            Platform::Android,
            chrono::Utc::now() - chrono::Duration::days(40),
        )
        .unwrap();
    let installed = LocalStore::new(&f.dir)
        .install(
            &CertificateRecord {
                device_id: expired_device.clone(),
                serial: old.serial.clone(),
                platform: Platform::Android,
                issued_at: old.issued_at,
                expires_at: old.expires_at,
                certificate_pem: old.pem.clone(),
                revoked: false,
                revoked_at: None,
                revocation_reason: None,
            },
            Expect::Nothing,
        )
        .await
        .unwrap();
    assert!(installed);
    let a = get(&f.app, "/device/status/device-expired", Some(&old.pem)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "expired");
    assert!(a.body["detail"].as_str().unwrap().contains("expired"));
    // Issued by our CA but never registered.
    let unregistered = ca
        .issue(&checked, &device, Platform::Android, chrono::Utc::now())
        .unwrap();
    assert_eq!(
        get(
            &f.app,
            "/device/status/device-alpha",
            Some(&unregistered.pem)
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    // Garbage in the header.
    assert_eq!(
        get(
            &f.app,
            "/device/status/device-alpha",
            Some("not a certificate")
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );

    // Nobody can enroll an active device's id to impersonate it.
    let takeover = enroll(&f.app, &p256_csr(&f.dir, "t"), "device-alpha", "android").await;
    assert_eq!(
        (takeover.status, takeover.body["error"].as_str()),
        (StatusCode::CONFLICT, Some("already_enrolled"))
    );

    // Revoked: the device revokes itself; its certificate stops working.
    let revoked = post(
        &f.app,
        "/device/revoke",
        json!({"device_id": "device-alpha", "reason": "lost"}),
        Some(&cert),
    )
    .await;
    assert_eq!(
        revoked.body,
        json!({"success": true, "device_id": "device-alpha", "message": "Certificate revoked for device device-alpha"})
    );
    let a = get(&f.app, "/device/status/device-alpha", Some(&cert)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body["detail"].as_str().unwrap().contains("revoked"));
    let cross = post(
        &f.app,
        "/device/revoke",
        json!({"device_id": "device-alpha"}),
        Some(&other_cert),
    )
    .await;
    assert_eq!(
        cross.status,
        StatusCode::FORBIDDEN,
        "one device cannot revoke another"
    );
}

fn hex(serial: &str) -> Vec<u8> {
    (0..serial.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&serial[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn renewal_revokes_only_the_old_certificate() {
    let f = fixture().await;
    let first = enroll(
        &f.app,
        &p256_csr(&f.dir, "r1"),
        "renewing-device",
        "desktop",
    )
    .await;
    let old_cert = first.body["certificate"].as_str().unwrap().to_owned();
    let old_serial = first.body["serial"].as_str().unwrap().to_owned();
    let body = json!({"csr": p256_csr(&f.dir, "r2"), "device_id": "renewing-device", "old_serial": old_serial.to_ascii_lowercase()});
    let renewed = post(&f.app, "/device/renew", body, Some(&old_cert)).await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    let new_cert = renewed.body["certificate"].as_str().unwrap().to_owned();
    let new_serial = renewed.body["serial"].as_str().unwrap().to_owned();
    assert_ne!(new_serial, old_serial);

    assert_eq!(
        get(&f.app, "/device/status/renewing-device", Some(&old_cert))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let status = get(&f.app, "/device/status/renewing-device", Some(&new_cert)).await;
    assert_eq!(
        status.status,
        StatusCode::OK,
        "the device keeps working: {}",
        status.body
    );
    assert_eq!(
        status.body["serial"],
        new_serial.as_str(),
        "current = newest"
    );
    assert_eq!(
        status.body["platform"], "desktop",
        "renewal keeps the stored platform"
    );

    let again = post(
        &f.app,
        "/device/renew",
        json!({"csr": p256_csr(&f.dir, "r3"), "device_id": "renewing-device", "old_serial": old_serial}),
        Some(&new_cert),
    )
    .await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "a revoked serial cannot be renewed: {}",
        again.body
    );
}

#[tokio::test]
async fn ca_certificate_and_pin_are_public() {
    let f = fixture().await;
    let ca = get(&f.app, "/device/ca-certificate", None).await;
    assert_eq!(ca.status, StatusCode::OK);
    assert_eq!(ca.body["format"], "PEM");
    let pem = ca.body["certificate"].as_str().unwrap();
    let pin = get(&f.app, "/device/ca-certificate-pin", None).await;
    assert_eq!(
        pin.status,
        StatusCode::OK,
        "pinning is needed before enrollment"
    );
    let der = parse_pem(pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let digest = Sha256::digest(cert.public_key().raw);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(pin.body["sha256_hex"], hex.as_str());
    assert_eq!(
        pin.body["sha256_base64"],
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest).as_str()
    );
    assert_eq!(pin.body["certificate_pem"], pem);
    assert_eq!(pin.body["algorithm"], "SHA-256");
    // The development CA was created on first use, with a private key only its owner can read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f.dir.join("ca_private_key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn preflights_to_guarded_paths_pass() {
    let f = fixture().await;
    let request = Request::options("/device/renew")
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    let a = helpers::send(&f.app, request).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
}

#[tokio::test]
async fn an_existing_rsa_ca_made_by_openssl_signs_too() {
    let dir = temp_dir();
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:3072", "-nodes", "-days", "30", "-sha256",
        ])
        .args([
            "-subj",
            "/C=ES/O=Apuntador/CN=Apuntador Certificate Authority",
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .arg("-keyout")
        .arg(dir.join("ca_private_key.pem"))
        .arg("-out")
        .arg(dir.join("ca_certificate.pem"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let ca = CertificateAuthority::from_pem(
        &std::fs::read_to_string(dir.join("ca_private_key.pem")).unwrap(),
        &std::fs::read_to_string(dir.join("ca_certificate.pem")).unwrap(),
    )
    .expect("an RSA CA loads");
    let checked = csr::check(&p256_csr(&dir, "rsa-ca-client")).unwrap();
    let issued = ca
        .issue(
            &checked,
            &DeviceId::parse("rsa-ca-device").unwrap(),
            Platform::Desktop,
            chrono::Utc::now(),
        )
        .unwrap();
    std::fs::write(dir.join("issued.pem"), &issued.pem).unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.join("ca_certificate.pem"))
        .arg(dir.join("issued.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let der = parse_pem(&issued.pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        cert.signature_algorithm.algorithm,
        x509_parser::oid_registry::OID_PKCS1_SHA256WITHRSA
    );
}

/// Enrolls `device` and returns its certificate and serial.
async fn enrolled(f: &Fixture, device: &str) -> (String, String) {
    let answer = enroll(&f.app, &p256_csr(&f.dir, device), device, "android").await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    (
        answer.body["certificate"].as_str().unwrap().to_owned(),
        answer.body["serial"].as_str().unwrap().to_owned(),
    )
}

fn status_and_code(answer: &Answer) -> (StatusCode, Option<&str>) {
    (answer.status, answer.body["error"].as_str())
}

/// Review item 1: the guard took the first header line and the first `Cert=` in it, so a proxy
/// that appends (Envoy's `APPEND_FORWARD`) let an enrolled attacker put the victim's (public)
/// certificate first and act as the victim.
#[tokio::test]
async fn xfcc_uses_only_the_element_the_nearest_proxy_added() {
    let f = fixture_trusting("X-Forwarded-Client-Cert").await;
    let (victim, _) = enrolled(&f, "victim-device").await;
    let (attacker, _) = enrolled(&f, "attacker-device").await;
    let element = |pem: &str| {
        format!(
            "By=spiffe://mesh/backend;Hash=0f1e2d;Cert=\"{}\";Subject=\"CN=x,O=Apuntador Devices;L=\\\"a,b\\\"\"",
            encoded(pem)
        )
    };
    let xfcc = |value: String| vec![("x-forwarded-client-cert", value)];

    // One element (the proxy replaced the header): used.
    let own = helpers::get(
        &f.app,
        "/device/status/attacker-device",
        &xfcc(element(&attacker)),
    )
    .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);

    // Two elements (the proxy appended its own to the client's): only the last counts.
    let appended = format!("{},{}", element(&victim), element(&attacker));
    let as_victim = helpers::get(
        &f.app,
        "/device/status/victim-device",
        &xfcc(appended.clone()),
    )
    .await;
    assert_eq!(
        status_and_code(&as_victim),
        (StatusCode::FORBIDDEN, Some("device_mismatch")),
        "{}",
        as_victim.body
    );
    let as_self = helpers::get(&f.app, "/device/status/attacker-device", &xfcc(appended)).await;
    assert_eq!(as_self.status, StatusCode::OK, "{}", as_self.body);

    // The nearest element has no certificate: the proxy saw none, whatever came before.
    let bare = format!("{},By=spiffe://mesh/backend;Hash=0f1e2d", element(&victim));
    let none = helpers::get(&f.app, "/device/status/victim-device", &xfcc(bare)).await;
    assert_eq!(
        status_and_code(&none),
        (
            StatusCode::UNAUTHORIZED,
            Some("client_certificate_required")
        )
    );

    // Two header lines, two Certs in one element, an unterminated quote: refused outright.
    let two_lines = helpers::get(
        &f.app,
        "/device/status/victim-device",
        &[
            ("x-forwarded-client-cert", element(&victim)),
            ("x-forwarded-client-cert", element(&attacker)),
        ],
    )
    .await;
    let two_certs = format!(
        "Cert=\"{}\";Cert=\"{}\"",
        encoded(&victim),
        encoded(&attacker)
    );
    let unterminated = format!("Cert=\"{}", encoded(&victim));
    let mut refused = vec![two_lines];
    for value in [two_certs, unterminated] {
        refused.push(helpers::get(&f.app, "/device/status/victim-device", &xfcc(value)).await);
    }
    for answer in refused {
        assert_eq!(
            status_and_code(&answer),
            (
                StatusCode::BAD_REQUEST,
                Some("ambiguous_client_certificate")
            ),
            "{}",
            answer.body
        );
        assert_eq!(
            answer.headers[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}

/// Review item 1, the same rule for the single-certificate headers (ALB's and `X-Client-Cert`):
/// one line, one value, one certificate.
#[tokio::test]
async fn single_certificate_headers_must_name_exactly_one() {
    for name in ["X-Amzn-Mtls-Clientcert", "X-Client-Cert"] {
        let f = fixture_trusting(name).await;
        let (victim, _) = enrolled(&f, "victim-device").await;
        let (attacker, _) = enrolled(&f, "attacker-device").await;
        let header = name.to_ascii_lowercase();
        let header = header.as_str();
        let own = helpers::get(
            &f.app,
            "/device/status/attacker-device",
            &[(header, encoded(&attacker))],
        )
        .await;
        assert_eq!(own.status, StatusCode::OK, "{name}: {}", own.body);
        let attempts = [
            vec![(header, encoded(&victim)), (header, encoded(&attacker))],
            vec![(
                header,
                format!("{},{}", encoded(&victim), encoded(&attacker)),
            )],
            vec![(header, encoded(&format!("{victim}{attacker}")))],
        ];
        for attempt in attempts {
            let answer = helpers::get(&f.app, "/device/status/victim-device", &attempt).await;
            assert_eq!(
                status_and_code(&answer),
                (
                    StatusCode::BAD_REQUEST,
                    Some("ambiguous_client_certificate")
                ),
                "{name}: {}",
                answer.body
            );
        }
    }
}

/// Posts a renewal of `old_serial` presenting `cert`.
async fn renew(f: &Fixture, device: &str, old_serial: &str, cert: &str, csr_name: &str) -> Answer {
    post(
        &f.app,
        "/device/renew",
        json!({"csr": p256_csr(&f.dir, csr_name), "device_id": device, "old_serial": old_serial}),
        Some(cert),
    )
    .await
}

/// Review item 3 (local store): renewals checked, issued and saved, then revoked the old
/// certificate with no lock or condition, so concurrent renewals of one serial all succeeded and
/// a renewal in flight during `/device/revoke` left a certificate that was still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_renewals_and_a_revocation_leave_one_winner_and_nothing_after_revoke() {
    let f = Arc::new(fixture().await);
    for round in 0..12 {
        let device = format!("racing-device-{round}");
        let (cert, serial) = enrolled(&f, &device).await;
        let with_revoke = round % 2 == 0;
        let mut renewals = Vec::new();
        for i in 0..4 {
            let (f, device, serial, cert) =
                (f.clone(), device.clone(), serial.clone(), cert.clone());
            renewals.push(tokio::spawn(async move {
                renew(&f, &device, &serial, &cert, &format!("{device}-r{i}")).await
            }));
        }
        let revocation = with_revoke.then(|| {
            let (f, device, cert) = (f.clone(), device.clone(), cert.clone());
            tokio::spawn(async move {
                post(
                    &f.app,
                    "/device/revoke",
                    json!({"device_id": device}),
                    Some(&cert),
                )
                .await
            })
        });
        let mut answers = Vec::new();
        for renewal in renewals {
            let answer = renewal.await.unwrap();
            answers.push((answer.status.as_u16(), answer.body));
        }
        let revoked = match revocation {
            Some(task) => Some(task.await.unwrap()),
            None => None,
        };
        let won = crate::support::renewal_winners(round, answers, revoked.is_some());
        match revoked {
            None => {}
            Some(answer) if answer.body["success"] == true => {
                for presented in std::iter::once(&cert).chain(&won) {
                    let after =
                        get(&f.app, &format!("/device/status/{device}"), Some(presented)).await;
                    assert_eq!(
                        after.status,
                        StatusCode::FORBIDDEN,
                        "round {round}: a certificate is accepted after /device/revoke answered success"
                    );
                }
            }
            // A renewal replaced the certificate before the revocation was checked.
            Some(answer) => assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body),
        }
    }
}

/// Review item 5: renewal did not tie `old_serial` to the certificate presented, so a device with
/// two active certificates could rotate one and keep the other.
#[tokio::test]
async fn renewal_replaces_only_the_certificate_presented() {
    let f = fixture().await;
    let (first, first_serial) = enrolled(&f, "rotating-device").await;
    let renewed = renew(&f, "rotating-device", &first_serial, &first, "rot-1").await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    let second = renewed.body["certificate"].as_str().unwrap().to_owned();
    let answer = renew(&f, "rotating-device", &first_serial, &second, "rot-2").await;
    assert_eq!(
        status_and_code(&answer),
        (StatusCode::CONFLICT, Some("serial_mismatch"))
    );
    assert_eq!(
        answer.body["detail"],
        "old_serial must be the serial of the client certificate presented."
    );
    let still = get(&f.app, "/device/status/rotating-device", Some(&second)).await;
    assert_eq!(still.status, StatusCode::OK);
}

/// Review item 7 (local store): every guarded request read the device's whole certificate
/// history. With the history made unreadable, every device route must still work: none reads
/// it.
#[tokio::test]
async fn device_routes_never_read_the_certificate_history() {
    let f = fixture().await;
    let (mut cert, mut serial) = enrolled(&f, "long-lived-device").await;
    for i in 0..30 {
        let answer = renew(
            &f,
            "long-lived-device",
            &serial,
            &cert,
            &format!("hist-{i}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        cert = answer.body["certificate"].as_str().unwrap().to_owned();
        serial = answer.body["serial"].as_str().unwrap().to_owned();
    }
    let history = f.dir.join("certificates");
    let mut spoiled = 0;
    for entry in std::fs::read_dir(&history).unwrap() {
        std::fs::write(entry.unwrap().path(), b"not json").unwrap();
        spoiled += 1;
    }
    assert!(spoiled >= 31, "{spoiled} history records");

    let status = get(&f.app, "/device/status/long-lived-device", Some(&cert)).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    assert_eq!(status.body["serial"], serial.as_str());
    let renewed = renew(&f, "long-lived-device", &serial, &cert, "hist-last").await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    let cert = renewed.body["certificate"].as_str().unwrap().to_owned();
    let revoked = post(
        &f.app,
        "/device/revoke",
        json!({"device_id": "long-lived-device"}),
        Some(&cert),
    )
    .await;
    assert_eq!(revoked.body["success"], true, "{}", revoked.body);
    let again = enroll(
        &f.app,
        &p256_csr(&f.dir, "hist-re"),
        "long-lived-device",
        "ios",
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
}

/// The CSR limit is in characters, as documented: 16,384 two-byte characters inside a PEM frame
/// pass the length rule (and are then refused as a CSR, 400), one more is a 422.
#[tokio::test]
async fn the_csr_limit_counts_characters_not_bytes() {
    let f = fixture().await;
    let frame = |fill: usize| {
        let begin = "-----BEGIN CERTIFICATE REQUEST-----\n";
        let end = "\n-----END CERTIFICATE REQUEST-----";
        let inner = fill - begin.chars().count() - end.chars().count();
        format!("{begin}{}{end}", "é".repeat(inner))
    };
    let at_limit = enroll(&f.app, &frame(16 * 1024), "csr-length-device", "web").await;
    assert_eq!(
        at_limit.status,
        StatusCode::BAD_REQUEST,
        "{}",
        at_limit.text
    );
    assert_eq!(at_limit.body["error"], "invalid_csr");
    let over = enroll(&f.app, &frame(16 * 1024 + 1), "csr-length-device", "web").await;
    assert_eq!(
        over.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        over.text
    );
    assert_eq!(over.body["errors"][0]["loc"], json!(["body", "csr"]));
}

//! A double of X-Ray's OTLP endpoint (`/v1/traces`) on 127.0.0.1 that **verifies the SigV4
//! signature** of every request as AWS would: the `Authorization` header's scope (access key,
//! date, region, service `xray`), `X-Amz-Date` within five minutes of now, the session token,
//! and the signature recomputed from the request it received (method, path, the signed
//! headers, the body) with the double's own credentials by the AWS SDK's signer. A request that
//! fails any check gets 403 and is not counted as delivered. Verified requests are decoded
//! (protobuf) and answered as told: 200, an error status, slowly, or a partial success.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::otlp::{ReceivedSpan, flatten_request};

/// How the double answers a verified request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    /// 200 with a partial success rejecting this many spans.
    RejectSome(i64),
    Status(u16),
    /// Waits, then accepts.
    Slow(Duration),
}

/// One request, as the double judged it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// `None` when the signature checked out, else why not.
    pub refused: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

struct Inner {
    credentials: Credentials,
    region: String,
    answer: Answer,
    received: Vec<Received>,
    spans: Vec<ReceivedSpan>,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Inner>>);

pub struct XrayOtlpDouble {
    pub addr: SocketAddr,
    shared: Shared,
}

/// The double's credentials: an access key id and a secret made fresh for each process.
pub fn test_credentials(token: &str) -> Credentials {
    Credentials::new(
        "AKIDAPUNTADORTEST",
        crate::fresh_key("sigv4-secret"),
        Some(token.to_owned()),
        None,
        "apuntador-harness",
    )
}

/// The parts of `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
struct Authorization {
    access_key: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
}

fn parse_authorization(value: &str) -> Result<Authorization, String> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let scope: Vec<&str> = credential.ok_or("no Credential")?.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" {
        return Err(format!("bad scope {scope:?}"));
    }
    Ok(Authorization {
        access_key: scope[0].to_owned(),
        date: scope[1].to_owned(),
        region: scope[2].to_owned(),
        service: scope[3].to_owned(),
        signed_headers: signed
            .ok_or("no SignedHeaders")?
            .split(';')
            .map(str::to_owned)
            .collect(),
        signature: signature.ok_or("no Signature")?.to_owned(),
    })
}

/// `X-Amz-Date` (`20261205T021500Z`) as a time.
fn parse_amz_date(value: &str) -> Result<SystemTime, String> {
    let digits: Vec<u64> = [(0, 4), (4, 6), (6, 8), (9, 11), (11, 13), (13, 15)]
        .iter()
        .map(|(a, b)| value.get(*a..*b).and_then(|s| s.parse().ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("bad X-Amz-Date {value:?}"))?;
    if value.len() != 16 || &value[8..9] != "T" || &value[15..] != "Z" {
        return Err(format!("bad X-Amz-Date {value:?}"));
    }
    let (y, m, d) = (digits[0] as i64, digits[1] as i64, digits[2] as i64);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + (digits[3] * 3600 + digits[4] * 60 + digits[5]) as i64;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

/// Checks a request's signature as AWS would; `Err` says why it is refused.
pub fn verify(
    credentials: &Credentials,
    region: &str,
    method: &str,
    uri: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let auth = parse_authorization(header("authorization").ok_or("no Authorization")?)?;
    if auth.access_key != credentials.access_key_id() {
        return Err("unknown access key".into());
    }
    if auth.region != region || auth.service != "xray" {
        return Err(format!("scope {}/{}", auth.region, auth.service));
    }
    let amz_date = header("x-amz-date").ok_or("no X-Amz-Date")?;
    if !amz_date.starts_with(&auth.date) {
        return Err("scope date is not the request's date".into());
    }
    let time = parse_amz_date(amz_date)?;
    let skew = match SystemTime::now().duration_since(time) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > Duration::from_secs(300) {
        return Err(format!(
            "signature expired: X-Amz-Date {amz_date} is {skew:?} off"
        ));
    }
    if header("x-amz-security-token") != credentials.session_token() {
        return Err("session token does not match".into());
    }
    let host = header("host").ok_or("no Host")?;
    let signed: Vec<(&str, &str)> = auth
        .signed_headers
        .iter()
        .filter(|n| !matches!(n.as_str(), "host" | "x-amz-date" | "x-amz-security-token"))
        .map(|n| Ok((n.as_str(), header(n).ok_or(format!("signed {n} missing"))?)))
        .collect::<Result<_, String>>()?;
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("xray")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let url = format!("http://{host}{uri}");
    let signable =
        SignableRequest::new(method, &url, signed.into_iter(), SignableBody::Bytes(body))
            .map_err(|e| e.to_string())?;
    let (_, expected) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    if expected != auth.signature {
        return Err("signature does not match".into());
    }
    Ok(())
}

async fn traces(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let at = Instant::now();
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let (credentials, region, answer) = {
        let inner = shared.0.lock().unwrap();
        (
            inner.credentials.clone(),
            inner.region.clone(),
            inner.answer,
        )
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let refused = verify(&credentials, &region, "POST", &path, &pairs, &body).err();
    let mut out = HeaderMap::new();
    shared.0.lock().unwrap().received.push(Received {
        at,
        refused: refused.clone(),
        headers: pairs,
        body_len: body.len(),
    });
    if refused.is_some() {
        out.insert(
            "x-amzn-errortype",
            "InvalidSignatureException:http://internal.amazon.com/coral/"
                .parse()
                .unwrap(),
        );
        // As AWS does: the message quotes what was signed (a log must never print it).
        return (StatusCode::FORBIDDEN, out, b"{\"message\":\"The request signature we calculated does not match the signature you provided.\"}".to_vec());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
        return (StatusCode::BAD_REQUEST, out, Vec::new());
    };
    match answer {
        Answer::Status(code) => {
            return (StatusCode::from_u16(code).unwrap(), out, Vec::new());
        }
        Answer::Slow(delay) => tokio::time::sleep(delay).await,
        Answer::Accept | Answer::RejectSome(_) => {}
    }
    let spans = flatten_request(request, at);
    shared.0.lock().unwrap().spans.extend(spans);
    let partial_success = match answer {
        Answer::RejectSome(n) => Some(ExportTracePartialSuccess {
            rejected_spans: n,
            error_message: "told to".into(),
        }),
        _ => None,
    };
    out.insert("content-type", "application/x-protobuf".parse().unwrap());
    (
        StatusCode::OK,
        out,
        ExportTraceServiceResponse { partial_success }.encode_to_vec(),
    )
}

impl XrayOtlpDouble {
    /// Verifies with `credentials` for `region`; accepts until told otherwise.
    pub async fn start(credentials: Credentials, region: &str) -> Self {
        let shared = Shared(Arc::new(Mutex::new(Inner {
            credentials,
            region: region.to_owned(),
            answer: Answer::Accept,
            received: Vec::new(),
            spans: Vec::new(),
        })));
        let app = axum::Router::new()
            .route("/v1/traces", post(traces))
            .with_state(shared.clone());
        let addr = crate::serve_router(app).await;
        Self { addr, shared }
    }

    /// The base URL for `AWS_ENDPOINT_URL_XRAY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn answer(&self, answer: Answer) {
        self.shared.0.lock().unwrap().answer = answer;
    }

    /// From now on, verify against these credentials (a rotation).
    pub fn expect_credentials(&self, credentials: Credentials) {
        self.shared.0.lock().unwrap().credentials = credentials;
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.0.lock().unwrap().received.clone()
    }

    /// Spans of verified, accepted requests.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.0.lock().unwrap().spans.clone()
    }

    /// Waits until `n` spans have arrived, or `timeout` passes.
    pub async fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `n` requests have arrived, or `timeout` passes.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= n || Instant::now() > deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_are_read_as_utc() {
        let t = parse_amz_date("19700102T000001Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            86_401
        );
        let t = parse_amz_date("20261205T021500Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_796_436_900
        );
        assert!(parse_amz_date("2026-12-05").is_err());
    }
}

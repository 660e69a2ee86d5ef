//! The collector-less transport (`OTEL_TRACES_EXPORTER=xray`): spans become X-Ray segment
//! documents (translated by `opentelemetry-aws`'s [`SegmentTranslator`], a port of the ADOT
//! awsxray exporter's rules) and leave as UDP datagrams for the X-Ray daemon endpoint
//! (`AWS_XRAY_DAEMON_ADDRESS`), which Lambda runs for every function with active tracing and an
//! ECS task can run as a sidecar. No layer, no collector process, no HTTP.
//!
//! What this module adds around the translator, and why:
//! - **Lambda's facade segment.** Inside Lambda the function's segment is Lambda's own, and the
//!   trace header's `Parent` is its id. Like the X-Ray SDKs there, the invocation's SERVER span
//!   is sent as a *subsegment* of that parent, never as a second segment (which X-Ray would show
//!   as another node) or a new trace. Outside Lambda it stays the service's segment.
//! - **X-Ray's rules for names and errors.** Names lose the characters X-Ray refuses (`{`, `}`
//!   of a route template; the translator would otherwise drop the span), and a 4xx/5xx server
//!   span is marked failed so the document carries `error`/`fault` (the OpenTelemetry rule
//!   leaves a 4xx server span's status unset; X-Ray's SDKs flag it).
//! - **The datagram limit.** One document per datagram, at most [`MAX_DATAGRAM`] bytes with the
//!   header line. Documents are never nested, so a large trace is many small datagrams; a single
//!   document over the limit is dropped and counted in a warning.
//! - **A missing daemon costs nothing.** The socket is non-blocking and a send never waits; a
//!   failing send is counted and logged at most once a minute, and the spans are lost, as UDP
//!   intends.

use std::borrow::Cow;
use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Key, Value};
use opentelemetry_aws::xray_exporter::SegmentTranslator;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::TelemetryError;
use super::annotations;

/// The line every datagram to the daemon starts with.
pub const HEADER: &[u8] = b"{\"format\": \"json\", \"version\": 1}\n";

/// Largest datagram sent: the IPv4 UDP payload limit, under the daemon's 64 KB buffer.
pub const MAX_DATAGRAM: usize = 65_507;

/// Where the X-Ray SDKs send when `AWS_XRAY_DAEMON_ADDRESS` is not set.
const DEFAULT_ADDRESS: &str = "127.0.0.1:2000";

/// The daemon's UDP address as `AWS_XRAY_DAEMON_ADDRESS` gives it: `host:port`, or the
/// two-address form `udp:host:port tcp:host:port` (the TCP one is for sampling rules; unused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonAddress {
    host: String,
    port: u16,
}

impl DaemonAddress {
    pub fn parse(value: Option<&str>) -> Result<Self, TelemetryError> {
        let value = value.map(str::trim).filter(|v| !v.is_empty());
        let raw = value.unwrap_or(DEFAULT_ADDRESS);
        let invalid = || TelemetryError::Unsupported {
            name: "AWS_XRAY_DAEMON_ADDRESS",
            value: raw.to_owned(),
            allowed: "host:port, or udp:host:port tcp:host:port",
        };
        let mut udp = None;
        for part in raw.split_whitespace() {
            if let Some(address) = part.strip_prefix("udp:") {
                udp = Some(address);
            } else if part.starts_with("tcp:") {
                continue;
            } else if udp.is_none() {
                udp = Some(part);
            }
        }
        let address = udp.ok_or_else(invalid)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| invalid())?;
        if host.is_empty() || port == 0 {
            return Err(invalid());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    fn resolve(&self) -> Result<SocketAddr, TelemetryError> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| {
                TelemetryError::Exporter(format!(
                    "cannot resolve the X-Ray daemon address {}:{}",
                    self.host, self.port
                ))
            })
    }
}

/// Counters of one export, reported in the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub datagrams: usize,
    /// Spans the translator refused (a document X-Ray would reject).
    pub untranslatable: usize,
    /// Documents over [`MAX_DATAGRAM`].
    pub oversize: usize,
    /// Datagrams the socket would not take (no daemon listening, buffer full).
    pub failed: usize,
}

/// How often, at most, an unreachable daemon is logged. A UDP send cannot tell that the
/// daemon is back (on loopback every other send to a closed port succeeds), so there is no
/// "recovered" line: a failure is reported at once, then with the count lost in between.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Unreachable {
    warned_at: Option<Instant>,
    /// Datagrams that failed since the last warning.
    lost: u64,
}

#[derive(Debug)]
struct State {
    buffer: Vec<u8>,
    unreachable: Unreachable,
}

/// The span exporter of the daemon transport.
#[derive(Debug)]
pub struct XrayDaemonExporter {
    translator: SegmentTranslator,
    socket: UdpSocket,
    /// `true` inside Lambda: the invocation's span becomes a subsegment of Lambda's segment.
    facade: bool,
    state: Mutex<State>,
}

impl XrayDaemonExporter {
    pub fn new(address: &DaemonAddress, facade: bool) -> Result<Self, TelemetryError> {
        let target = address.resolve()?;
        let local: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(|s| s.connect(target).map(|()| s))
            .map_err(|e| TelemetryError::Exporter(format!("X-Ray daemon socket: {e}")))?;
        let mut buffer = Vec::with_capacity(8 * 1024);
        buffer.extend_from_slice(HEADER);
        Ok(Self {
            translator: SegmentTranslator::new()
                .with_indexed_attrs(annotations::KEYS.iter().map(|k| (*k).to_owned())),
            socket,
            facade,
            state: Mutex::new(State {
                buffer,
                unreachable: Unreachable::default(),
            }),
        })
    }

    /// Translates and sends one batch; never blocks on the network.
    pub fn send(&self, mut batch: Vec<SpanData>) -> Sent {
        for span in &mut batch {
            prepare(span, self.facade);
        }
        let documents = self.translator.translate_spans(&batch);
        let mut sent = Sent {
            untranslatable: batch.len() - documents.len(),
            ..Sent::default()
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State {
            buffer,
            unreachable,
        } = &mut *state;
        let mut first_error = None;
        for document in &documents {
            buffer.truncate(HEADER.len());
            if serde_json::to_writer(&mut *buffer, document).is_err() {
                sent.untranslatable += 1;
                continue;
            }
            if buffer.len() > MAX_DATAGRAM {
                sent.oversize += 1;
                continue;
            }
            match self.socket.send(buffer) {
                Ok(_) => sent.datagrams += 1,
                Err(error) => {
                    sent.failed += 1;
                    first_error.get_or_insert(error);
                }
            }
        }
        if buffer.capacity() > 64 * 1024 {
            buffer.shrink_to(8 * 1024);
        }
        report(&sent, first_error, unreachable);
        sent
    }
}

fn report(sent: &Sent, error: Option<std::io::Error>, unreachable: &mut Unreachable) {
    if sent.untranslatable > 0 || sent.oversize > 0 {
        tracing::warn!(
            target: "apuntador::telemetry",
            untranslatable = sent.untranslatable,
            oversize = sent.oversize,
            max_datagram = MAX_DATAGRAM,
            "spans dropped: X-Ray would not accept their documents"
        );
    }
    let Some(error) = error else {
        return;
    };
    unreachable.lost += sent.failed as u64;
    let due = unreachable
        .warned_at
        .is_none_or(|at| at.elapsed() >= WARNING_INTERVAL);
    if !due {
        return;
    }
    let hint = if error.kind() == ErrorKind::ConnectionRefused {
        " (nothing listens there: is active tracing on?)"
    } else {
        ""
    };
    tracing::warn!(
        target: "apuntador::telemetry",
        error = %error,
        dropped_datagrams = unreachable.lost,
        "X-Ray daemon unreachable{hint}; spans are dropped (warned at most once a minute)"
    );
    *unreachable = Unreachable {
        warned_at: Some(Instant::now()),
        lost: 0,
    };
}

impl SpanExporter for XrayDaemonExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let sent = self.send(batch);
        if sent.datagrams == 0 && sent.failed > 0 {
            return Err(OTelSdkError::InternalFailure(
                "X-Ray daemon unreachable".into(),
            ));
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.translator.set_resource(resource);
    }
}

/// Applies the rules of the module doc to one span before translation.
fn prepare(span: &mut SpanData, facade: bool) {
    if let Some(name) = segment_name(&span.name) {
        span.name = Cow::Owned(name);
    }
    if span.span_kind != SpanKind::Server {
        return;
    }
    let status_code = span
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "http.response.status_code")
        .and_then(|kv| match kv.value {
            Value::I64(code) => Some(code),
            _ => None,
        });
    if matches!(status_code, Some(400..=599)) && span.status == Status::Unset {
        span.status = Status::error("");
    }
    if facade && span.parent_span_id != SpanId::INVALID {
        // A subsegment of Lambda's function segment. Its http block keeps method, user agent
        // and status; `client.address` goes, because for a non-server span the translator
        // would build the URL from it.
        span.span_kind = SpanKind::Internal;
        let client_address = Key::from_static_str("client.address");
        span.attributes.retain(|kv| kv.key != client_address);
    }
}

/// `name` with the characters X-Ray refuses removed and cut to 200 characters (as the ADOT
/// exporter does); `None` when it is fine as it is.
fn segment_name(name: &str) -> Option<String> {
    let allowed = |c: char| c.is_alphanumeric() || c.is_whitespace() || "_.:/%&#=+\\-@".contains(c);
    if name.chars().all(allowed) && name.chars().count() <= 200 && !name.is_empty() {
        return None;
    }
    let fixed: String = name.chars().filter(|c| allowed(*c)).take(200).collect();
    Some(if fixed.is_empty() {
        "span".to_owned()
    } else {
        fixed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{SpanContext, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn trace_id() -> TraceId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as u128;
        TraceId::from_bytes(((now << 96) | 0xabcdef0123456789abcdef01).to_be_bytes())
    }

    fn span(kind: SpanKind, parent: u64, attributes: Vec<KeyValue>) -> SpanData {
        let start = SystemTime::now();
        SpanData {
            span_context: SpanContext::new(
                trace_id(),
                SpanId::from(0x1111_2222_3333_4444),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: parent != 0,
            span_kind: kind,
            name: "GET /oauth/token/{provider}".into(),
            start_time: start,
            end_time: start + Duration::from_millis(3),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    fn receiver() -> (UdpSocket, DaemonAddress) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let address =
            DaemonAddress::parse(Some(&socket.local_addr().unwrap().to_string())).unwrap();
        (socket, address)
    }

    fn receive(socket: &UdpSocket) -> serde_json::Value {
        let mut buf = vec![0u8; 70_000];
        let n = socket.recv(&mut buf).unwrap();
        let datagram = &buf[..n];
        assert!(datagram.starts_with(HEADER), "header line");
        serde_json::from_slice(&datagram[HEADER.len()..]).unwrap()
    }

    #[test]
    fn addresses_in_both_forms() {
        let plain = DaemonAddress::parse(Some("169.254.79.129:2000")).unwrap();
        assert_eq!((plain.host.as_str(), plain.port), ("169.254.79.129", 2000));
        let both = DaemonAddress::parse(Some("tcp:127.0.0.1:2000 udp:127.0.0.2:2001")).unwrap();
        assert_eq!((both.host.as_str(), both.port), ("127.0.0.2", 2001));
        let default = DaemonAddress::parse(None).unwrap();
        assert_eq!((default.host.as_str(), default.port), ("127.0.0.1", 2000));
        for bad in [
            "nope",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "tcp:127.0.0.1:2000",
        ] {
            let error = DaemonAddress::parse(Some(bad)).unwrap_err().to_string();
            assert!(error.contains("AWS_XRAY_DAEMON_ADDRESS"), "{bad}: {error}");
        }
    }

    #[test]
    fn in_lambda_the_invocation_is_a_subsegment_of_the_header_parent() {
        let (socket, address) = receiver();
        let exporter = XrayDaemonExporter::new(&address, true).unwrap();
        let sent = exporter.send(vec![span(
            SpanKind::Server,
            0x53995c3f42cd8ad8,
            vec![
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.response.status_code", 400),
                KeyValue::new("client.address", "203.0.113.9"),
                KeyValue::new(annotations::HTTP_ROUTE, "/oauth/token/{provider}"),
            ],
        )]);
        assert_eq!(sent.datagrams, 1, "{sent:?}");
        let document = receive(&socket);
        assert_eq!(document["type"], "subsegment", "{document}");
        assert_eq!(document["parent_id"], "53995c3f42cd8ad8");
        assert_eq!(document["name"], "GET /oauth/token/provider");
        assert_eq!(document["error"], true, "a 4xx is an error: {document}");
        assert_eq!(document["http"]["response"]["status"], 400);
        assert_eq!(
            document["annotations"][annotations::HTTP_ROUTE],
            "/oauth/token/{provider}"
        );
        assert!(
            !document.to_string().contains("203.0.113.9"),
            "no URL made of the client address: {document}"
        );
    }

    #[test]
    fn outside_lambda_the_server_span_is_the_segment() {
        let (socket, address) = receiver();
        let exporter = XrayDaemonExporter::new(&address, false).unwrap();
        exporter.send(vec![span(
            SpanKind::Server,
            0x53995c3f42cd8ad8,
            vec![KeyValue::new("http.response.status_code", 503)],
        )]);
        let document = receive(&socket);
        assert!(document.get("type").is_none(), "{document}");
        assert_eq!(document["fault"], true);
    }

    #[test]
    fn an_oversize_document_is_dropped_and_counted_not_sent() {
        let (socket, address) = receiver();
        let exporter = XrayDaemonExporter::new(&address, true).unwrap();
        let huge = "x".repeat(MAX_DATAGRAM);
        let sent = exporter.send(vec![
            span(
                SpanKind::Internal,
                7,
                vec![KeyValue::new(annotations::ERROR_TYPE, huge)],
            ),
            span(SpanKind::Client, 7, vec![]),
        ]);
        assert_eq!(sent.oversize + sent.untranslatable, 1, "{sent:?}");
        assert_eq!(sent.datagrams, 1, "{sent:?}");
        receive(&socket);
    }

    #[test]
    fn no_daemon_costs_a_counted_failure_not_a_wait() {
        let closed = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().to_string()
        };
        let exporter =
            XrayDaemonExporter::new(&DaemonAddress::parse(Some(&closed)).unwrap(), true).unwrap();
        for _ in 0..5 {
            exporter.send(vec![span(SpanKind::Client, 7, vec![])]);
        }
        // A loopback port with no listener answers with ICMP: sends after the first fail.
        let sent = exporter.send(vec![span(SpanKind::Client, 7, vec![])]);
        assert_eq!(sent.datagrams + sent.failed, 1, "{sent:?}");
    }

    #[test]
    fn names_lose_what_x_ray_refuses() {
        assert_eq!(segment_name("DynamoDB.GetItem"), None);
        assert_eq!(
            segment_name("GET /device/{id}").as_deref(),
            Some("GET /device/id")
        );
        assert_eq!(segment_name("{}").as_deref(), Some("span"));
        assert_eq!(segment_name(&"a".repeat(300)).map(|n| n.len()), Some(200));
    }
}

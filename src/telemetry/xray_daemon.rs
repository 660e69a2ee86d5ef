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
//!   of a route template; the translator would otherwise drop the span), and a span with a
//!   4xx/5xx `http.response.status_code` is marked failed so its document carries
//!   `error`/`fault`, as the ADOT exporter decides from the status code alone (OpenTelemetry
//!   leaves a 4xx server span's status unset).
//! - **X-Ray's field limits.** A URL, user agent, client address or method over 250
//!   characters, or an annotation over 1000, makes the translator refuse the whole span, so
//!   they are clipped (and marked, [`super::limits`]) before translation; the request layer
//!   already records them within bounds, this is the net for any other span.
//! - **The datagram limit.** One document per datagram, at most [`MAX_DATAGRAM`] bytes with the
//!   header line. Documents are never nested, so a large trace is many small datagrams; a single
//!   document over the limit is dropped and counted in a warning.
//! - **A missing daemon costs nothing.** The socket is non-blocking and a send never waits; a
//!   failing send is counted and logged at most once a minute, and the spans are lost, as UDP
//!   intends. An address that does not resolve does not stop the service either.

use std::borrow::Cow;
use std::net::{SocketAddr, ToSocketAddrs};

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Key, Value};
use opentelemetry_aws::xray_exporter::SegmentTranslator;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::TelemetryError;
use super::annotations;
use super::limits::{XRAY_ANNOTATION, XRAY_HTTP_FIELD, clip};
use super::udp_link::{UdpLink, export_result};

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

    pub(crate) fn resolve(&self) -> Result<SocketAddr, TelemetryError> {
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

/// The span exporter of the daemon transport.
#[derive(Debug)]
pub struct XrayDaemonExporter {
    translator: SegmentTranslator,
    /// `true` inside Lambda: the invocation's span becomes a subsegment of Lambda's segment.
    facade: bool,
    link: UdpLink,
}

impl XrayDaemonExporter {
    /// Never fails on the daemon: an address that does not resolve yet (a sidecar's name while
    /// it starts) is logged at the first export and looked up again once a minute, spans being
    /// dropped meanwhile, rather than stopping the service.
    pub fn new(address: &DaemonAddress, facade: bool) -> Self {
        Self {
            translator: SegmentTranslator::new()
                .with_indexed_attrs(annotations::KEYS.iter().map(|k| (*k).to_owned())),
            facade,
            link: UdpLink::new(address, "X-Ray daemon"),
        }
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
        let mut datagrams = Vec::with_capacity(documents.len());
        for document in &documents {
            let mut datagram = Vec::with_capacity(1024);
            datagram.extend_from_slice(HEADER);
            if serde_json::to_writer(&mut datagram, document).is_err() {
                sent.untranslatable += 1;
            } else if datagram.len() > MAX_DATAGRAM {
                sent.oversize += 1;
            } else {
                datagrams.push(datagram);
            }
        }
        let delivery = self.link.deliver(
            datagrams.iter().map(|d| (d.as_slice(), 1)),
            sent.untranslatable + sent.oversize,
            "their X-Ray documents were refused or over the datagram limit",
        );
        sent.datagrams = delivery.sent;
        sent.failed = delivery.failed;
        sent
    }
}

impl SpanExporter for XrayDaemonExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let sent = self.send(batch);
        export_result(sent.datagrams, sent.failed, "X-Ray daemon")
    }

    /// The resource with `service.name` made a valid X-Ray name: outside Lambda it names the
    /// service's segment, and a name X-Ray refuses would make every segment fail translation.
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        let service = Key::from_static_str("service.name");
        let fixed = resource
            .get(&service)
            .and_then(|name| segment_name(name.as_str().as_ref()));
        match fixed {
            Some(name) => {
                let attributes = resource
                    .iter()
                    .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone()))
                    .filter(|kv| kv.key != service)
                    .chain([opentelemetry::KeyValue::new("service.name", name)]);
                let resource = opentelemetry_sdk::Resource::builder_empty()
                    .with_attributes(attributes)
                    .build();
                self.translator.set_resource(&resource);
            }
            None => self.translator.set_resource(resource),
        }
    }
}

/// Applies the rules of the module doc to one span before translation.
fn prepare(span: &mut SpanData, facade: bool) {
    if let Some(name) = segment_name(&span.name) {
        span.name = Cow::Owned(name);
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
    clip_to_xray_limits(&mut span.attributes);
    if facade && span.span_kind == SpanKind::Server && span.parent_span_id != SpanId::INVALID {
        // A subsegment of Lambda's function segment. Its http block keeps method, user agent
        // and status; `client.address` goes, because for a non-server span the translator
        // would build the URL from it.
        span.span_kind = SpanKind::Internal;
        let client_address = Key::from_static_str("client.address");
        span.attributes.retain(|kv| kv.key != client_address);
    }
}

/// Attributes the translator puts in 250-character X-Ray fields.
const HTTP_FIELDS: [&str; 8] = [
    "url.full",
    "http.url",
    "user_agent.original",
    "http.user_agent",
    "client.address",
    "http.client_ip",
    "http.request.method",
    "http.method",
];

/// Clips what X-Ray limits, so the translator never refuses a span for a length: the HTTP
/// fields, the parts a URL is built from when there is no `url.full` (host, path and query
/// sharing the 250), and annotation values.
fn clip_to_xray_limits(attributes: &mut [opentelemetry::KeyValue]) {
    let text = |kv: &opentelemetry::KeyValue| match &kv.value {
        Value::String(s) => Some(s.as_str().len()),
        _ => None,
    };
    let has_full_url = attributes
        .iter()
        .any(|kv| matches!(kv.key.as_str(), "url.full" | "http.url"));
    let host_len = attributes
        .iter()
        .filter(|kv| {
            matches!(
                kv.key.as_str(),
                "url.domain" | "server.address" | "client.address"
            )
        })
        .filter_map(text)
        .max()
        .unwrap_or(0)
        .min(XRAY_HTTP_FIELD / 2);
    // "https://" + host + ":65535" + "/" + "?"
    let mut url_budget = XRAY_HTTP_FIELD.saturating_sub(8 + host_len + 6 + 2);
    for kv in attributes.iter_mut() {
        let key = kv.key.as_str();
        let max = if HTTP_FIELDS.contains(&key) {
            XRAY_HTTP_FIELD
        } else if annotations::KEYS.contains(&key) {
            XRAY_ANNOTATION
        } else if !has_full_url && matches!(key, "url.domain" | "server.address") {
            XRAY_HTTP_FIELD / 2
        } else if !has_full_url && matches!(key, "url.path" | "url.query" | "http.target") {
            url_budget
        } else {
            continue;
        };
        let Value::String(value) = &kv.value else {
            continue;
        };
        let clipped = clip(value.as_str(), max);
        if matches!(key, "url.path" | "url.query" | "http.target") {
            url_budget = url_budget.saturating_sub(clipped.len());
        }
        if let std::borrow::Cow::Owned(clipped) = clipped {
            kv.value = Value::from(clipped);
        }
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
    use std::net::UdpSocket;
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
        let exporter = XrayDaemonExporter::new(&address, true);
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
        let exporter = XrayDaemonExporter::new(&address, false);
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
        let exporter = XrayDaemonExporter::new(&address, true);
        // An exception the translator keeps (as the cause), too large to send.
        let mut failed = span(SpanKind::Internal, 7, vec![]);
        failed.status = Status::error("boom");
        failed.events.events.push(opentelemetry::trace::Event::new(
            "exception",
            SystemTime::now(),
            vec![KeyValue::new("exception.message", "x".repeat(MAX_DATAGRAM))],
            0,
        ));
        let sent = exporter.send(vec![failed, span(SpanKind::Client, 7, vec![])]);
        assert_eq!(
            (sent.oversize, sent.untranslatable, sent.datagrams),
            (1, 0, 1),
            "{sent:?}"
        );
        let document = receive(&socket);
        assert!(document.get("cause").is_none(), "the small one: {document}");
    }

    /// Review item 3: a path over about 230 bytes made the translator refuse the URL (X-Ray's
    /// 250-character limit) and the whole span was lost; so was a user agent over 250.
    #[test]
    fn long_urls_and_user_agents_are_clipped_not_lost() {
        let (socket, address) = receiver();
        let exporter = XrayDaemonExporter::new(&address, false);
        let long_path = "/".to_owned() + &"p".repeat(1000);
        let sent = exporter.send(vec![
            span(
                SpanKind::Server,
                0,
                vec![
                    KeyValue::new("server.address", "api.example.com"),
                    KeyValue::new("url.path", long_path.clone()),
                    KeyValue::new("user_agent.original", "u".repeat(300)),
                    KeyValue::new(annotations::HTTP_ROUTE, "r".repeat(1500)),
                ],
            ),
            span(
                SpanKind::Client,
                7,
                vec![KeyValue::new(
                    "url.full",
                    format!("https://api.example.com{long_path}"),
                )],
            ),
        ]);
        assert_eq!((sent.untranslatable, sent.datagrams), (0, 2), "{sent:?}");
        for _ in 0..2 {
            let document = receive(&socket);
            let request = &document["http"]["request"];
            let url = request["url"].as_str().unwrap();
            assert!(url.len() <= 250, "{url}");
            assert!(url.ends_with(crate::telemetry::limits::CUT_MARK), "{url}");
            assert!(
                url.starts_with("http") && url.contains("api.example.com/ppp"),
                "{url}"
            );
            if let Some(agent) = request["user_agent"].as_str() {
                assert!(agent.len() <= 250 && agent.ends_with(crate::telemetry::limits::CUT_MARK));
                let route = document["annotations"][annotations::HTTP_ROUTE]
                    .as_str()
                    .unwrap();
                assert!(route.len() <= 1000, "{}", route.len());
            }
        }
    }

    #[test]
    fn no_daemon_costs_counted_failures() {
        let closed = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().to_string()
        };
        let exporter = XrayDaemonExporter::new(&DaemonAddress::parse(Some(&closed)).unwrap(), true);
        // A loopback port with no listener answers with ICMP: later sends fail.
        let failed: usize = (0..6)
            .map(|_| {
                exporter
                    .send(vec![span(SpanKind::Client, 7, vec![])])
                    .failed
            })
            .sum();
        assert!(failed >= 1, "no send reported the missing daemon");
    }

    #[test]
    fn an_address_that_does_not_resolve_drops_spans_and_does_not_stop_the_service() {
        let address = DaemonAddress::parse(Some("no-such-daemon.invalid:2000")).unwrap();
        let exporter = XrayDaemonExporter::new(&address, true);
        let sent = exporter.send(vec![span(SpanKind::Client, 7, vec![])]);
        assert_eq!((sent.datagrams, sent.failed), (0, 1), "{sent:?}");
    }

    #[test]
    fn a_client_call_answered_4xx_is_an_error() {
        let (socket, address) = receiver();
        let exporter = XrayDaemonExporter::new(&address, true);
        exporter.send(vec![span(
            SpanKind::Client,
            7,
            vec![KeyValue::new("http.response.status_code", 400)],
        )]);
        let document = receive(&socket);
        assert_eq!(document["error"], true, "{document}");
        assert_eq!(document["namespace"], "remote");
    }

    #[test]
    fn a_service_name_x_ray_refuses_still_names_the_segment() {
        let (socket, address) = receiver();
        let mut exporter = XrayDaemonExporter::new(&address, false);
        exporter.set_resource(
            &opentelemetry_sdk::Resource::builder_empty()
                .with_service_name("teleprompter (eu)")
                .build(),
        );
        let sent = exporter.send(vec![span(SpanKind::Server, 0, vec![])]);
        assert_eq!(sent.datagrams, 1, "{sent:?}");
        assert_eq!(receive(&socket)["name"], "teleprompter eu");
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

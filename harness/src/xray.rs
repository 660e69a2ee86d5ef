//! AWS X-Ray on 127.0.0.1, in three parts the tests combine: [`XrayApi`], a client of moto's
//! X-Ray API (where documents end up and are read back); [`DaemonDouble`], a stand-in for the
//! X-Ray daemon's UDP endpoint (what Lambda exposes as `AWS_XRAY_DAEMON_ADDRESS`), which checks
//! each datagram's framing and document and can forward it to moto; and [`Rotel`], the rotel
//! collector (PyPI `rotel`) exporting OTLP to moto's X-Ray through a proxy that records what it
//! sent. [`check_segment_document`] stands in for X-Ray's own checks of the segment document
//! schema, because moto checks almost nothing.
//!
//! What moto (5.2.5) does with X-Ray, found by experiment and in `moto/xray`:
//! - It picks the service **and** the region from the `Authorization` header's credential scope
//!   (`Credential=<key>/<date>/<region>/xray/aws4_request`); without the header the request is
//!   routed to S3 and fails with a 500. Region extraction needs a non-empty access key (an empty
//!   one, as rotel sends without credentials, falls back to the default region, us-east-1). So
//!   every writer and reader here names us-east-1 with the access key `testing`: [`XrayApi`] with
//!   a fixed fake signature, [`Rotel`] with fake credentials in its environment.
//! - Only `id`, `name`, `trace_id`, `start_time` and one of `end_time`/`in_progress` are required
//!   (a missing `name` is reported as "Missing segment ID"); nothing else is checked.
//! - Each document is stored verbatim (the string as sent) under its trace and returned by
//!   BatchGetTraces as `{"Id": <its id>, "Document": <that string>}`, ordered by `start_time`,
//!   not by arrival. A standalone subsegment is a document of its own; subsegments nested in a
//!   document stay inside it. Documents with the same `id` are all kept: the complete segment
//!   does not replace its in-progress one as in X-Ray.
//! - A trace counts as finished only when its last document (by `start_time`) has an `end_time`;
//!   until then BatchGetTraces answers its `Id` as `null` (so [`StoredTrace::id`] falls back to the
//!   documents' `trace_id`) and GetTraceSummaries leaves it out. A complete version of an
//!   in-progress document with the same `start_time` is inserted before it, so the in-progress
//!   one stays last and the trace unfinished.
//! - GetTraceSummaries takes whole seconds and keeps traces whose first `start_time` is strictly
//!   after `StartTime` and whose last `end_time` is strictly before `EndTime`; its summaries carry
//!   only `Id`, whole-second `Duration`, `HasError`/`HasFault`/`HasThrottle` (set when the field
//!   is present at all, whatever its value) and placeholders (`"IsParital": false` sic).
//!
//! What rotel (0.0.1a15, reporting itself as 0.0.1-alpha10) does, also by experiment: every span
//! becomes a document of its own (a root span a segment, a child span a standalone subsegment
//! with `parent_id`), sent to PutTraceSegments in batches of at most 50, signed with SigV4 for
//! its region and with `content-encoding: gzip` on an uncompressed JSON body, which moto tries
//! to gunzip and answers with a 500 (rotel then retries after about 5 s). The proxy in front of
//! moto drops that header. Its documents carry `"type": "segment"` on segments and
//! `"metadata": {"environment": "production"}` (whatever `--environment` says), both of which
//! [`check_segment_document`] reports; the span's name becomes `name`, `http.request.method` the
//! `http.request.method`, `AWS_REGION` in rotel's environment an `"aws": {"region": ...}`, and
//! span status, status codes, URLs, other attributes and the resource's `service.name` are not
//! carried over (so no `fault`, `error`, `origin` or `namespace`).
//!
//! Times compare exactly only in whole milliseconds: serde_json (without its `float_roundtrip`
//! feature) may parse a longer decimal back one ulp off.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use serde_json::{Map, Value, json};

use crate::Process;

/// The region every writer and reader uses, so all land in one moto backend.
pub const REGION: &str = "us-east-1";

/// A SigV4-shaped `Authorization` moto parses for service and region (it checks no signature).
const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/xray/aws4_request, SignedHeaders=content-type;host, Signature=0000000000000000000000000000000000000000000000000000000000000000";

/// How long one API call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long rotel may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The most a segment document (and a daemon datagram) may hold: 64 KB.
pub const MAX_DOCUMENT_BYTES: usize = 65_536;

/// The X-Ray daemon's header line, before the document in every datagram.
pub const DAEMON_HEADER: &str = "{\"format\": \"json\", \"version\": 1}";

/// A client of moto's X-Ray API (REST JSON) at a base URL.
#[derive(Clone)]
pub struct XrayApi {
    base: String,
    client: reqwest::Client,
}

/// One trace as BatchGetTraces returned it, with each segment's document parsed.
#[derive(Debug, Clone)]
pub struct StoredTrace {
    /// The trace id (moto answers `null` for an unfinished trace; then the documents' `trace_id`).
    pub id: String,
    /// The documents in moto's order (by `start_time`), nested subsegments inside theirs.
    pub documents: Vec<Value>,
}

impl XrayApi {
    /// A client of the X-Ray API at `base` (moto's endpoint, e.g. from [`crate::moto`]).
    pub fn new(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("an HTTP client");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(&self, route: &str, body: &Value) -> Result<Value, String> {
        let answer = self
            .client
            .post(format!("{}/{route}", self.base))
            .header("authorization", AUTHORIZATION)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("POST /{route}: {e}"))?;
        let status = answer.status();
        let bytes = answer
            .bytes()
            .await
            .map_err(|e| format!("POST /{route}: reading the answer: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "POST /{route} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "POST /{route}: the answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    }

    /// PutTraceSegments; the answer holds `UnprocessedTraceSegments`.
    pub async fn put_trace_segments(&self, docs: &[String]) -> Result<Value, String> {
        self.call("TraceSegments", &json!({ "TraceSegmentDocuments": docs }))
            .await
    }

    /// BatchGetTraces: the stored traces among `ids` (unknown ids are left out).
    pub async fn batch_get_traces(&self, ids: &[&str]) -> Result<Vec<StoredTrace>, String> {
        let answer = self.call("Traces", &json!({ "TraceIds": ids })).await?;
        let traces = answer["Traces"]
            .as_array()
            .ok_or_else(|| format!("BatchGetTraces answered without Traces: {answer}"))?;
        let mut out = Vec::new();
        for trace in traces {
            let mut documents: Vec<Value> = Vec::new();
            for segment in trace["Segments"].as_array().into_iter().flatten() {
                let text = segment["Document"]
                    .as_str()
                    .ok_or_else(|| format!("a segment without a Document string: {segment}"))?;
                documents.push(
                    serde_json::from_str(text)
                        .map_err(|e| format!("a stored Document is not JSON ({e}): {text}"))?,
                );
            }
            let id = trace["Id"]
                .as_str()
                .or_else(|| documents.iter().find_map(|d| d["trace_id"].as_str()))
                .unwrap_or_default()
                .to_owned();
            out.push(StoredTrace { id, documents });
        }
        Ok(out)
    }

    /// GetTraceSummaries from `since_secs` (epoch seconds) to a minute from now. moto compares in
    /// whole seconds and strictly, so the window opens a second before `since_secs`.
    pub async fn trace_summaries(&self, since_secs: f64) -> Result<Vec<Value>, String> {
        let start = since_secs.floor() as i64 - 1;
        let end = epoch_seconds_now().ceil() as i64 + 60;
        let answer = self
            .call(
                "TraceSummaries",
                &json!({ "StartTime": start, "EndTime": end }),
            )
            .await?;
        answer["TraceSummaries"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("GetTraceSummaries answered without TraceSummaries: {answer}"))
    }

    /// Polls BatchGetTraces until at least `n` documents of `trace_id` are stored (a document's
    /// nested subsegments count as part of it), or `timeout` passes; the documents either way.
    pub async fn wait_for_documents(
        &self,
        trace_id: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let documents = self
                .batch_get_traces(&[trace_id])
                .await
                .map(|traces| {
                    traces
                        .into_iter()
                        .flat_map(|t| t.documents)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            if documents.len() >= n || Instant::now() > deadline {
                return documents;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A document and every subsegment nested in it (`subsegments`, recursively), depth first.
pub fn flatten(doc: &Value) -> Vec<&Value> {
    let mut out = vec![doc];
    for sub in doc["subsegments"].as_array().into_iter().flatten() {
        out.extend(flatten(sub));
    }
    out
}

/// Now in epoch seconds, as segment documents count time.
pub fn epoch_seconds_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

// ---- The segment document schema -------------------------------------------------------------

/// The fields a segment or subsegment document may have (X-Ray developer guide, "AWS X-Ray
/// segment documents").
const KNOWN_FIELDS: &[&str] = &[
    "name",
    "id",
    "trace_id",
    "start_time",
    "end_time",
    "in_progress",
    "parent_id",
    "type",
    "namespace",
    "service",
    "user",
    "origin",
    "fault",
    "error",
    "throttle",
    "cause",
    "http",
    "aws",
    "annotations",
    "metadata",
    "subsegments",
    "precursor_ids",
    "sql",
    "links",
];

const HTTP_REQUEST_FIELDS: &[&str] = &[
    "method",
    "url",
    "user_agent",
    "client_ip",
    "x_forwarded_for",
    "traced",
];

const MAX_ANNOTATIONS: usize = 50;
const MAX_ANNOTATION_KEY_CHARS: usize = 500;
const MAX_ANNOTATION_VALUE_CHARS: usize = 1_000;

/// What a document is: the rules differ in what is required.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entity {
    Segment,
    /// Sent on its own (`"type": "subsegment"`): needs `trace_id` and `parent_id`.
    StandaloneSubsegment,
    /// Inside another document's `subsegments`: needs neither.
    NestedSubsegment,
}

/// Checks a segment document (a segment, or a subsegment sent on its own) against X-Ray's
/// schema: one human-readable problem per violation, each naming the field's path
/// (`subsegments[0].id: ...`); empty when the document is valid.
pub fn check_segment_document(doc: &Value) -> Vec<String> {
    let Some(fields) = doc.as_object() else {
        return vec![format!("the document is {}, not a JSON object", kind(doc))];
    };
    let mut problems = Vec::new();
    let size = doc.to_string().len();
    if size > MAX_DOCUMENT_BYTES {
        problems.push(format!(
            "the document is {size} bytes; X-Ray takes at most {MAX_DOCUMENT_BYTES}"
        ));
    }
    let entity = if fields.get("type") == Some(&json!("subsegment")) {
        Entity::StandaloneSubsegment
    } else {
        Entity::Segment
    };
    check_entity(fields, "", entity, &mut problems);
    problems
}

fn check_entity(fields: &Map<String, Value>, at: &str, entity: Entity, problems: &mut Vec<String>) {
    let mut problem = |field: &str, what: String| problems.push(format!("{at}{field}: {what}"));
    for key in fields.keys() {
        if !KNOWN_FIELDS.contains(&key.as_str()) {
            problem(key, "not a segment document field".into());
        }
    }

    match fields.get("name") {
        None => problem("name", "missing".into()),
        Some(Value::String(name)) => {
            if let Err(what) = check_name(name) {
                problem("name", what);
            }
        }
        Some(other) => problem("name", format!("{other} is not a string")),
    }
    match fields.get("id") {
        None => problem("id", "missing".into()),
        Some(id) => {
            if let Err(what) = check_id(id) {
                problem("id", what);
            }
        }
    }
    match (fields.get("trace_id"), entity) {
        (None, Entity::NestedSubsegment) => {}
        (None, Entity::Segment) => problem("trace_id", "missing".into()),
        (None, Entity::StandaloneSubsegment) => problem(
            "trace_id",
            "missing (required in a subsegment sent on its own)".into(),
        ),
        (Some(trace_id), _) => {
            if let Err(what) = check_trace_id(trace_id) {
                problem("trace_id", what);
            }
        }
    }
    match (fields.get("parent_id"), entity) {
        (None, Entity::StandaloneSubsegment) => problem(
            "parent_id",
            "missing (required in a subsegment sent on its own)".into(),
        ),
        (None, _) => {}
        (Some(parent), _) => {
            if let Err(what) = check_id(parent) {
                problem("parent_id", what);
            }
        }
    }
    if let Some(kind) = fields.get("type")
        && kind != "subsegment"
    {
        problem(
            "type",
            format!(
                "{kind} is not allowed; the only type is \"subsegment\", for a subsegment sent on its own"
            ),
        );
    }

    let start = match fields.get("start_time") {
        None => {
            problem("start_time", "missing".into());
            None
        }
        Some(value) => match epoch_seconds(value) {
            Ok(start) => Some(start),
            Err(what) => {
                problem("start_time", what);
                None
            }
        },
    };
    let in_progress = match fields.get("in_progress") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            problem("in_progress", format!("{other} is not a boolean"));
            false
        }
    };
    match (fields.get("end_time"), in_progress) {
        (None, false) => problem(
            "end_time",
            "missing, and in_progress is not true (a document needs exactly one of them)".into(),
        ),
        (Some(_), true) => problem(
            "in_progress",
            "true beside an end_time (a document needs exactly one of them)".into(),
        ),
        (None, true) => {}
        (Some(value), false) => match epoch_seconds(value) {
            Err(what) => problem("end_time", what),
            Ok(end) => {
                if let Some(start) = start
                    && end < start
                {
                    problem("end_time", format!("{end} is before start_time {start}"));
                }
            }
        },
    }

    if let Some(namespace) = fields.get("namespace")
        && namespace != "aws"
        && namespace != "remote"
    {
        problem(
            "namespace",
            format!("{namespace} is neither \"aws\" nor \"remote\""),
        );
    }
    for flag in ["fault", "error", "throttle"] {
        if let Some(value) = fields.get(flag)
            && !value.is_boolean()
        {
            problem(flag, format!("{value} is not a boolean"));
        }
    }
    if let Some(cause) = fields.get("cause")
        && !cause.is_object()
        && check_id(cause).is_err()
    {
        problem(
            "cause",
            format!("{cause} is neither an object nor a 16-hex-digit exception id"),
        );
    }
    for object in ["aws", "service", "sql"] {
        if let Some(value) = fields.get(object)
            && !value.is_object()
        {
            problem(object, format!("{value} is not an object"));
        }
    }
    for text in ["origin", "user"] {
        if let Some(value) = fields.get(text)
            && !value.is_string()
        {
            problem(text, format!("{value} is not a string"));
        }
    }
    if let Some(http) = fields.get("http") {
        for (field, what) in check_http(http) {
            problem(&field, what);
        }
    }
    if let Some(annotations) = fields.get("annotations") {
        for (field, what) in check_annotations(annotations) {
            problem(&field, what);
        }
    }
    match fields.get("metadata") {
        None => {}
        Some(Value::Object(namespaces)) => {
            for (namespace, value) in namespaces {
                if !value.is_object() {
                    problem(
                        &format!("metadata.{namespace}"),
                        format!("{value} is not an object (metadata maps namespaces to objects)"),
                    );
                }
            }
        }
        Some(other) => problem("metadata", format!("{other} is not an object")),
    }
    match fields.get("precursor_ids") {
        None => {}
        Some(Value::Array(ids)) => {
            for (i, id) in ids.iter().enumerate() {
                if let Err(what) = check_id(id) {
                    problem(&format!("precursor_ids[{i}]"), what);
                }
            }
        }
        Some(other) => problem("precursor_ids", format!("{other} is not an array")),
    }
    if let Some(links) = fields.get("links")
        && !links.is_array()
    {
        problem("links", format!("{links} is not an array"));
    }
    match fields.get("subsegments") {
        None => {}
        Some(Value::Array(subsegments)) => {
            for (i, sub) in subsegments.iter().enumerate() {
                let path = format!("{at}subsegments[{i}]");
                match sub.as_object() {
                    Some(sub) => {
                        check_entity(sub, &format!("{path}."), Entity::NestedSubsegment, problems)
                    }
                    None => problems.push(format!("{path}: {} is not an object", kind(sub))),
                }
            }
        }
        Some(other) => problems.push(format!("{at}subsegments: {other} is not an array")),
    }
}

/// 1 to 200 Unicode letters, numbers, whitespace and `_ . : / % & # = + \ - @`.
fn check_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if !(1..=200).contains(&chars) {
        return Err(format!("{name:?} has {chars} characters, not 1 to 200"));
    }
    let bad: String = name
        .chars()
        .filter(|c| !(c.is_alphanumeric() || c.is_whitespace() || "_.:/%&#=+\\-@".contains(*c)))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{name:?} has characters X-Ray does not allow: {bad:?}"
        ))
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A segment, subsegment or exception id: 16 lowercase hexadecimal digits.
fn check_id(id: &Value) -> Result<(), String> {
    match id.as_str() {
        Some(s) if is_lower_hex(s, 16) => Ok(()),
        _ => Err(format!("{id} is not 16 lowercase hex digits")),
    }
}

/// `1-` + 8 hex digits (the epoch seconds) + `-` + 24 hex digits.
fn check_trace_id(id: &Value) -> Result<(), String> {
    let ok = id.as_str().is_some_and(|s| {
        let parts: Vec<&str> = s.split('-').collect();
        parts.len() == 3
            && parts[0] == "1"
            && is_lower_hex(parts[1], 8)
            && is_lower_hex(parts[2], 24)
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id} is not a trace id (1-<8 hex digits>-<24 hex digits>)"
        ))
    }
}

/// Floating point epoch seconds, plausibly (between 1e9 and 1e10: 2001 to 2286).
fn epoch_seconds(value: &Value) -> Result<f64, String> {
    let Some(t) = value.as_f64() else {
        return Err(format!("{value} is not a number"));
    };
    if (1e9..=1e10).contains(&t) {
        Ok(t)
    } else {
        Err(format!(
            "{value} is not epoch seconds (expected between 1e9 and 1e10)"
        ))
    }
}

/// The `http` object: `request` and `response` with their documented fields.
fn check_http(http: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(fields) = http.as_object() else {
        return vec![("http".into(), format!("{http} is not an object"))];
    };
    for key in fields.keys() {
        if key != "request" && key != "response" {
            out.push((format!("http.{key}"), "not an http field".into()));
        }
    }
    match fields.get("request") {
        None => {}
        Some(Value::Object(request)) => {
            for (key, value) in request {
                let field = format!("http.request.{key}");
                let (ok, wanted) = match key.as_str() {
                    "method" | "url" | "user_agent" | "client_ip" => {
                        (value.is_string(), "a string")
                    }
                    "x_forwarded_for" | "traced" => (value.is_boolean(), "a boolean"),
                    _ => {
                        out.push((
                            field,
                            format!(
                                "not an http request field (those are {HTTP_REQUEST_FIELDS:?})"
                            ),
                        ));
                        continue;
                    }
                };
                if !ok {
                    out.push((field, format!("{value} is not {wanted}")));
                }
            }
        }
        Some(other) => out.push(("http.request".into(), format!("{other} is not an object"))),
    }
    match fields.get("response") {
        None => {}
        Some(Value::Object(response)) => {
            for (key, value) in response {
                let field = format!("http.response.{key}");
                match key.as_str() {
                    "status" => match value.as_u64() {
                        Some(status) if (100..=599).contains(&status) => {}
                        _ => {
                            out.push((field, format!("{value} is not an HTTP status (100 to 599)")))
                        }
                    },
                    "content_length" => {
                        if value.as_u64().is_none() {
                            out.push((field, format!("{value} is not a non-negative integer")));
                        }
                    }
                    _ => out.push((
                        field,
                        "not an http response field (those are status and content_length)".into(),
                    )),
                }
            }
        }
        Some(other) => out.push(("http.response".into(), format!("{other} is not an object"))),
    }
    out
}

/// `annotations`: at most 50, keys of letters, digits and `_` (X-Ray: "Keys must be alphanumeric
/// in order to work with filters. Underscore is allowed"), values strings, numbers or booleans.
fn check_annotations(annotations: &Value) -> Vec<(String, String)> {
    let Some(fields) = annotations.as_object() else {
        return vec![(
            "annotations".into(),
            format!("{annotations} is not an object"),
        )];
    };
    let mut out = Vec::new();
    if fields.len() > MAX_ANNOTATIONS {
        out.push((
            "annotations".into(),
            format!(
                "{} annotations; X-Ray takes at most {MAX_ANNOTATIONS}",
                fields.len()
            ),
        ));
    }
    for (key, value) in fields {
        let field = format!("annotations.{key}");
        if key.is_empty()
            || key.chars().count() > MAX_ANNOTATION_KEY_CHARS
            || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            out.push((
                field.clone(),
                format!(
                    "the key {key:?} is not 1 to {MAX_ANNOTATION_KEY_CHARS} letters, digits and underscores"
                ),
            ));
        }
        match value {
            Value::String(s) if s.chars().count() > MAX_ANNOTATION_VALUE_CHARS => out.push((
                field,
                format!("the value has more than {MAX_ANNOTATION_VALUE_CHARS} characters"),
            )),
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            other => out.push((field, format!("{other} is not a string, number or boolean"))),
        }
    }
    out
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---- The daemon's UDP endpoint ---------------------------------------------------------------

/// One datagram the daemon double received.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub len: usize,
    /// The document after the header line, when it parsed as JSON (valid or not).
    pub document: Option<Value>,
}

#[derive(Default)]
struct Received {
    datagrams: Vec<Datagram>,
    problems: Vec<String>,
}

/// A stand-in for the X-Ray daemon's UDP endpoint on 127.0.0.1: checks that each datagram is
/// the header line `{"format": "json", "version": 1}` and exactly one valid segment document,
/// at most 64 KB in all, records every datagram and problem, and can forward valid documents
/// to moto. (Over IPv4 a UDP payload cannot exceed 65,507 bytes, so a sender's kernel refuses
/// an over-limit datagram before it arrives; the size check is kept for completeness.)
pub struct DaemonDouble {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::AbortHandle,
}

impl DaemonDouble {
    /// Binds 127.0.0.1:0 and receives in the background; with `forward`, each valid document is
    /// put to that X-Ray API (its `UnprocessedTraceSegments` recorded as problems).
    pub async fn start(forward: Option<XrayApi>) -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let state = received.clone();
        let task = tokio::spawn(async move {
            // Larger than the limit, so an oversize datagram is seen as such, not truncated.
            let mut buffer = vec![0u8; MAX_DOCUMENT_BYTES * 2];
            loop {
                let Ok((len, _from)) = socket.recv_from(&mut buffer).await else {
                    continue;
                };
                let (document, problems, valid) = check_datagram(&buffer[..len]);
                let index = {
                    let mut state = state.lock().unwrap();
                    let index = state.datagrams.len();
                    state.datagrams.push(Datagram { len, document });
                    state.problems.extend(
                        problems
                            .into_iter()
                            .map(|p| format!("datagram {index}: {p}")),
                    );
                    index
                };
                if let (Some(api), Some(text)) = (&forward, valid) {
                    let problems = match api.put_trace_segments(&[text]).await {
                        Ok(answer) => answer["UnprocessedTraceSegments"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|u| format!("datagram {index}: X-Ray did not process it: {u}"))
                            .collect(),
                        Err(e) => vec![format!("datagram {index}: forwarding failed: {e}")],
                    };
                    state.lock().unwrap().problems.extend(problems);
                }
            }
        });
        Self {
            addr,
            received,
            task: task.abort_handle(),
        }
    }

    /// `127.0.0.1:PORT`, the value of `AWS_XRAY_DAEMON_ADDRESS`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn datagrams(&self) -> Vec<Datagram> {
        self.received.lock().unwrap().datagrams.clone()
    }

    /// Every problem so far, each prefixed with its datagram's index (`datagram 0: ...`).
    pub fn problems(&self) -> Vec<String> {
        self.received.lock().unwrap().problems.clone()
    }

    /// Waits until `n` datagrams have arrived, or `timeout` passes.
    pub async fn wait_for_datagrams(&self, n: usize, timeout: Duration) -> Vec<Datagram> {
        let deadline = Instant::now() + timeout;
        loop {
            let datagrams = self.datagrams();
            if datagrams.len() >= n || Instant::now() > deadline {
                return datagrams;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for DaemonDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A datagram's document (when it parsed), its problems, and its document text when valid.
fn check_datagram(bytes: &[u8]) -> (Option<Value>, Vec<String>, Option<String>) {
    let mut problems = Vec::new();
    if bytes.len() > MAX_DOCUMENT_BYTES {
        problems.push(format!(
            "{} bytes; the daemon takes at most {MAX_DOCUMENT_BYTES}",
            bytes.len()
        ));
    }
    let Some(newline) = bytes.iter().position(|&b| b == b'\n') else {
        problems.push(format!(
            "no header line (expected {DAEMON_HEADER} and a newline before the document)"
        ));
        return (None, problems, None);
    };
    let (header, body) = (&bytes[..newline], &bytes[newline + 1..]);
    match serde_json::from_slice::<Value>(header) {
        Ok(h) if h == json!({"format": "json", "version": 1}) => {}
        _ => problems.push(format!(
            "the header line is {:?}, not {DAEMON_HEADER}",
            String::from_utf8_lossy(header)
        )),
    }
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => {
            problems.push(format!("the document is not UTF-8: {e}"));
            return (None, problems, None);
        }
    };
    let document = match serde_json::from_str::<Value>(text) {
        Ok(document) => document,
        Err(e) => {
            problems.push(format!("the rest is not exactly one JSON document: {e}"));
            return (None, problems, None);
        }
    };
    problems.extend(check_segment_document(&document));
    let valid = problems.is_empty().then(|| text.to_owned());
    (Some(document), problems, valid)
}

// ---- The rotel collector ---------------------------------------------------------------------

/// The rotel collector binary: `ROTEL` when it exists, else `rotel/rotel-agent` beside the `rotel` package of
/// the `python3` on PATH; `None` when neither exists.
pub fn rotel_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ROTEL")
        .map(PathBuf::from)
        .filter(|p| p.exists())
    {
        return Some(path);
    }
    let dir = output_within(
        Command::new("python3").args([
            "-c",
            "import rotel, os; print(os.path.dirname(rotel.__file__))",
        ]),
        Duration::from_secs(10),
    )?;
    let path = PathBuf::from(dir.trim()).join("rotel-agent");
    path.exists().then_some(path)
}

/// A command's stdout when it succeeds within `timeout` (killed otherwise).
fn output_within(command: &mut Command, timeout: Duration) -> Option<String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
                return status.success().then_some(out);
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// What the proxy between rotel and moto forwarded.
#[derive(Default)]
struct Forwarded {
    bodies: Vec<Value>,
}

/// rotel (`rotel-agent start`) receiving OTLP on loopback and exporting to X-Ray through a
/// loopback proxy that drops the false `content-encoding: gzip` and records each
/// PutTraceSegments body. The process is stopped by pid when this is dropped.
pub struct Rotel {
    process: Process,
    http_port: u16,
    grpc_port: u16,
    forwarded: Arc<Mutex<Forwarded>>,
    proxy: tokio::task::AbortHandle,
}

impl Rotel {
    /// rotel exporting to the X-Ray API at `xray_upstream` (moto's endpoint), listening when this
    /// returns (it waits like [`Rotel::wait_ready`]). `None` when rotel is not installed, unless
    /// `APUNTADOR_REQUIRE_ROTEL=1`, which makes that a failure.
    pub async fn start(xray_upstream: &str) -> Option<Rotel> {
        let Some(binary) = rotel_binary() else {
            assert!(
                std::env::var("APUNTADOR_REQUIRE_ROTEL").as_deref() != Ok("1"),
                "rotel is not installed: set ROTEL to its rotel-agent binary or `pip install --pre rotel` \
                 (scripts/requirements-tools.txt pins it) into the python3 on PATH"
            );
            return None;
        };
        let forwarded = Arc::new(Mutex::new(Forwarded::default()));
        let (proxy_endpoint, proxy) = start_proxy(xray_upstream, forwarded.clone()).await;
        let http_port = crate::closed_port();
        let grpc_port = loop {
            let port = crate::closed_port();
            if port != http_port {
                break port;
            }
        };
        let args: Vec<String> = [
            "start",
            "--otlp-http-endpoint",
            &format!("127.0.0.1:{http_port}"),
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{grpc_port}"),
            "--exporter",
            "aws-xray",
            "--xray-exporter-custom-endpoint",
            &proxy_endpoint,
            "--xray-exporter-region",
            REGION,
            "--batch-timeout",
            "100ms",
            "--log-format",
            "json",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Fake credentials: rotel signs with them, and moto reads the region from the signature
        // only when the access key is not empty. The environment is otherwise cleared.
        let env = [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", REGION),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let process = Process::spawn(&binary, &args, &env);
        let rotel = Rotel {
            process,
            http_port,
            grpc_port,
            forwarded,
            proxy,
        };
        rotel.wait_ready(READY_TIMEOUT).await;
        Some(rotel)
    }

    /// `http://127.0.0.1:P`, for `OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP/HTTP).
    pub fn otlp_http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `http://127.0.0.1:Q` (OTLP/gRPC).
    pub fn otlp_grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Waits until both OTLP ports accept connections; panics with rotel's log after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for port in [self.http_port, self.grpc_port] {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                assert!(
                    Instant::now() < deadline,
                    "rotel did not listen on 127.0.0.1:{port}: {:?}",
                    self.process.lines()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Every PutTraceSegments body the proxy forwarded to X-Ray (`null` for one that was not
    /// JSON), retries included.
    pub fn forwarded(&self) -> Vec<Value> {
        self.forwarded.lock().unwrap().bodies.clone()
    }

    /// The documents of every forwarded body, parsed.
    pub fn forwarded_documents(&self) -> Vec<Value> {
        self.forwarded()
            .iter()
            .flat_map(|body| {
                body["TraceSegmentDocuments"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|doc| {
                doc.as_str()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(doc)
            })
            .collect()
    }

    /// rotel's log lines (JSON, `--log-format json`).
    pub fn lines(&self) -> Vec<String> {
        self.process.lines()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        // The process itself is killed by pid when `process` drops.
        self.proxy.abort();
    }
}

/// The proxy between rotel and moto: forwards every request unchanged except for a
/// `content-encoding: gzip` on a body that is not gzip (rotel's, which moto would try to
/// gunzip), and records PutTraceSegments bodies.
async fn start_proxy(
    upstream: &str,
    forwarded: Arc<Mutex<Forwarded>>,
) -> (String, tokio::task::AbortHandle) {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client");
    let upstream = upstream.trim_end_matches('/').to_owned();
    let app = axum::Router::new()
        .fallback(
            move |method: Method, uri: Uri, mut headers: HeaderMap, body: Bytes| {
                let (client, upstream, forwarded) =
                    (client.clone(), upstream.clone(), forwarded.clone());
                async move {
                    let gzip = body.starts_with(&[0x1f, 0x8b]);
                    if !gzip
                        && headers
                            .get("content-encoding")
                            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"))
                    {
                        headers.remove("content-encoding");
                    }
                    if uri.path().ends_with("/TraceSegments") {
                        let recorded = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        forwarded.lock().unwrap().bodies.push(recorded);
                    }
                    crate::aws_proxy::forward(&client, &upstream, method, &uri, &headers, body)
                        .await
                }
            },
        )
        // A batch holds up to 50 documents of up to 64 KB each: above axum's default 2 MB limit.
        .layer(axum::extract::DefaultBodyLimit::max(8 << 20));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (endpoint, task.abort_handle())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete segment using most of the schema, with nested subsegments two deep.
    fn valid_segment() -> Value {
        json!({
            "name": "apuntador-backend",
            "id": "70de5b6f19ff9a0a",
            "trace_id": "1-581cf771-a006649127e371903a2de979",
            "start_time": 1.478293361271E9,
            "end_time": 1.478293361449E9,
            "origin": "AWS::Lambda::Function",
            "user": "device-1",
            "fault": false,
            "error": true,
            "throttle": false,
            "cause": {"working_directory": "/var/task", "exceptions": []},
            "http": {
                "request": {
                    "method": "POST",
                    "url": "https://api.example.com/oauth/token",
                    "user_agent": "apuntador-e2e",
                    "client_ip": "203.0.113.10",
                    "x_forwarded_for": true,
                    "traced": false
                },
                "response": {"status": 400, "content_length": 42}
            },
            "aws": {"account_id": "123456789012"},
            "service": {"version": "0.1.0"},
            "annotations": {"route": "oauth_token", "status_code": 400, "cold_start": true},
            "metadata": {"default": {"anything": [1, {"goes": null}]}},
            "subsegments": [{
                "name": "DynamoDB",
                "id": "70de5b6f19ff9a0b",
                "start_time": 1.478293361300E9,
                "end_time": 1.478293361400E9,
                "namespace": "aws",
                "aws": {"operation": "GetItem", "table_name": "devices"},
                "subsegments": [{
                    "name": "marshal",
                    "id": "70de5b6f19ff9a0c",
                    "start_time": 1.478293361310E9,
                    "in_progress": true
                }]
            }, {
                "name": "oauth2.googleapis.com",
                "id": "70de5b6f19ff9a0d",
                "start_time": 1.478293361401E9,
                "end_time": 1.478293361440E9,
                "namespace": "remote",
                "precursor_ids": ["70de5b6f19ff9a0b"],
                "http": {"request": {"method": "POST"}, "response": {"status": 200}},
                "cause": "70de5b6f19ff9a0e"
            }]
        })
    }

    fn valid_standalone_subsegment() -> Value {
        json!({
            "name": "Secrets Manager",
            "id": "70de5b6f19ff9a1a",
            "trace_id": "1-581cf771-a006649127e371903a2de979",
            "parent_id": "70de5b6f19ff9a0a",
            "type": "subsegment",
            "namespace": "aws",
            "start_time": 1478293361.35,
            "end_time": 1478293361.36,
            "sql": {"url": "ignored"}
        })
    }

    /// The problems of the valid segment after `change`.
    fn problems_after(change: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut doc = valid_segment();
        change(&mut doc);
        check_segment_document(&doc)
    }

    #[test]
    fn valid_documents_have_no_problems() {
        assert_eq!(
            check_segment_document(&valid_segment()),
            Vec::<String>::new()
        );
        assert_eq!(
            check_segment_document(&valid_standalone_subsegment()),
            Vec::<String>::new()
        );
        let minimal = json!({"name": "example.com", "id": "70de5b6f19ff9a0a",
            "start_time": 1.478293361271E9, "trace_id": "1-581cf771-a006649127e371903a2de979",
            "end_time": 1.478293361449E9});
        assert_eq!(check_segment_document(&minimal), Vec::<String>::new());
        let in_progress = json!({"name": "Scorekeep", "id": "70de5b6f19ff9a0b",
            "start_time": 1.478293361271E9, "trace_id": "1-581cf771-a006649127e371903a2de979",
            "in_progress": true});
        assert_eq!(check_segment_document(&in_progress), Vec::<String>::new());
        let name = json!({"name": "Ünïcode 名前 _.:/%&#=+\\-@ 42", "id": "70de5b6f19ff9a0a",
            "start_time": 1.478293361271E9, "trace_id": "1-581cf771-a006649127e371903a2de979",
            "end_time": 1.478293361449E9});
        assert_eq!(check_segment_document(&name), Vec::<String>::new());
    }

    #[test]
    fn flatten_yields_nested_subsegments() {
        let doc = valid_segment();
        let names: Vec<&str> = flatten(&doc)
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "apuntador-backend",
                "DynamoDB",
                "marshal",
                "oauth2.googleapis.com"
            ]
        );
    }

    #[test]
    fn not_an_object() {
        assert_eq!(
            check_segment_document(&json!([valid_segment()])),
            ["the document is an array, not a JSON object"]
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            problems_after(|d| {
                d.as_object_mut().unwrap().remove("name");
            }),
            ["name: missing"]
        );
        assert_eq!(
            problems_after(|d| d["name"] = json!("")),
            ["name: \"\" has 0 characters, not 1 to 200"]
        );
        assert_eq!(
            problems_after(|d| d["name"] = json!("x".repeat(201)))[0],
            format!(
                "name: {:?} has 201 characters, not 1 to 200",
                "x".repeat(201)
            )
        );
        assert_eq!(
            problems_after(|d| d["name"] = json!("GET /health?x=1*")),
            ["name: \"GET /health?x=1*\" has characters X-Ray does not allow: \"?*\""]
        );
        assert_eq!(
            problems_after(|d| d["name"] = json!(7)),
            ["name: 7 is not a string"]
        );
    }

    #[test]
    fn ids() {
        assert_eq!(
            problems_after(|d| d["id"] = json!("70DE5B6F19FF9A0A")),
            ["id: \"70DE5B6F19FF9A0A\" is not 16 lowercase hex digits"]
        );
        assert_eq!(
            problems_after(|d| d["id"] = json!("70de5b6f19ff9a0")),
            ["id: \"70de5b6f19ff9a0\" is not 16 lowercase hex digits"]
        );
        assert_eq!(
            problems_after(|d| d["parent_id"] = json!("nope")),
            ["parent_id: \"nope\" is not 16 lowercase hex digits"]
        );
        assert_eq!(
            problems_after(|d| d["trace_id"] = json!("581cf771a006649127e371903a2de979")),
            [
                "trace_id: \"581cf771a006649127e371903a2de979\" is not a trace id (1-<8 hex digits>-<24 hex digits>)"
            ]
        );
        assert_eq!(
            problems_after(|d| {
                d.as_object_mut().unwrap().remove("trace_id");
            }),
            ["trace_id: missing"]
        );
        assert_eq!(
            problems_after(|d| d["precursor_ids"] = json!(["70de5b6f19ff9a0b", "x"])),
            ["precursor_ids[1]: \"x\" is not 16 lowercase hex digits"]
        );
        assert_eq!(
            problems_after(|d| d["cause"] = json!(12)),
            ["cause: 12 is neither an object nor a 16-hex-digit exception id"]
        );
    }

    #[test]
    fn times() {
        assert_eq!(
            problems_after(|d| d["start_time"] = json!(1478293361271u64)),
            ["start_time: 1478293361271 is not epoch seconds (expected between 1e9 and 1e10)"]
        );
        assert_eq!(
            problems_after(|d| d["start_time"] = json!("1478293361.271")),
            ["start_time: \"1478293361.271\" is not a number"]
        );
        assert_eq!(
            problems_after(|d| d["end_time"] = json!(1478293361.0)),
            ["end_time: 1478293361 is before start_time 1478293361.271"]
        );
        assert_eq!(
            problems_after(|d| d["in_progress"] = json!(true)),
            ["in_progress: true beside an end_time (a document needs exactly one of them)"]
        );
        assert_eq!(
            problems_after(|d| {
                d.as_object_mut().unwrap().remove("end_time");
            }),
            [
                "end_time: missing, and in_progress is not true (a document needs exactly one of them)"
            ]
        );
        assert_eq!(
            problems_after(|d| {
                d.as_object_mut().unwrap().remove("end_time");
                d["in_progress"] = json!("true");
            }),
            [
                "in_progress: \"true\" is not a boolean",
                "end_time: missing, and in_progress is not true (a document needs exactly one of them)"
            ]
        );
    }

    #[test]
    fn types_and_namespaces() {
        assert_eq!(
            problems_after(|d| d["type"] = json!("segment")),
            [
                "type: \"segment\" is not allowed; the only type is \"subsegment\", for a subsegment sent on its own"
            ]
        );
        let mut sub = valid_standalone_subsegment();
        sub.as_object_mut().unwrap().remove("parent_id");
        sub.as_object_mut().unwrap().remove("trace_id");
        assert_eq!(
            check_segment_document(&sub),
            [
                "trace_id: missing (required in a subsegment sent on its own)",
                "parent_id: missing (required in a subsegment sent on its own)"
            ]
        );
        assert_eq!(
            problems_after(|d| d["subsegments"][0]["namespace"] = json!("local")),
            ["subsegments[0].namespace: \"local\" is neither \"aws\" nor \"remote\""]
        );
    }

    #[test]
    fn flags_and_objects() {
        assert_eq!(
            problems_after(|d| d["fault"] = json!("true")),
            ["fault: \"true\" is not a boolean"]
        );
        assert_eq!(
            problems_after(|d| d["aws"] = json!("lambda")),
            ["aws: \"lambda\" is not an object"]
        );
        assert_eq!(
            problems_after(|d| d["user"] = json!(1)),
            ["user: 1 is not a string"]
        );
        assert_eq!(
            problems_after(|d| d["resource"] = json!({})),
            ["resource: not a segment document field"]
        );
    }

    #[test]
    fn http() {
        assert_eq!(
            problems_after(|d| d["http"]["response"]["status"] = json!(600)),
            ["http.response.status: 600 is not an HTTP status (100 to 599)"]
        );
        assert_eq!(
            problems_after(|d| d["http"]["response"]["status"] = json!("200")),
            ["http.response.status: \"200\" is not an HTTP status (100 to 599)"]
        );
        assert_eq!(
            problems_after(|d| d["http"]["response"]["content_length"] = json!(-1)),
            ["http.response.content_length: -1 is not a non-negative integer"]
        );
        assert_eq!(
            problems_after(|d| d["http"]["request"]["url"] = json!(1)),
            ["http.request.url: 1 is not a string"]
        );
        assert_eq!(
            problems_after(|d| d["http"]["request"]["traced"] = json!("yes")),
            ["http.request.traced: \"yes\" is not a boolean"]
        );
        assert_eq!(
            problems_after(|d| d["http"]["request"]["status_code"] = json!(200)),
            [
                "http.request.status_code: not an http request field (those are [\"method\", \"url\", \"user_agent\", \"client_ip\", \"x_forwarded_for\", \"traced\"])"
            ]
        );
    }

    #[test]
    fn annotations_and_metadata() {
        assert_eq!(
            problems_after(|d| d["annotations"]["http.route"] = json!("/x")),
            [
                "annotations.http.route: the key \"http.route\" is not 1 to 500 letters, digits and underscores"
            ]
        );
        assert_eq!(
            problems_after(|d| d["annotations"]["list"] = json!([1])),
            ["annotations.list: [1] is not a string, number or boolean"]
        );
        assert_eq!(
            problems_after(|d| {
                d["annotations"] = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
            }),
            ["annotations: 51 annotations; X-Ray takes at most 50"]
        );
        assert_eq!(
            problems_after(|d| d["metadata"]["environment"] = json!("production")),
            [
                "metadata.environment: \"production\" is not an object (metadata maps namespaces to objects)"
            ]
        );
    }

    #[test]
    fn nested_subsegments() {
        assert_eq!(
            problems_after(|d| {
                d["subsegments"][0].as_object_mut().unwrap().remove("name");
                d["subsegments"][0]["subsegments"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("in_progress");
            }),
            [
                "subsegments[0].name: missing",
                "subsegments[0].subsegments[0].end_time: missing, and in_progress is not true (a document needs exactly one of them)"
            ]
        );
        assert_eq!(
            problems_after(|d| d["subsegments"][1]["id"] = json!(5)),
            ["subsegments[1].id: 5 is not 16 lowercase hex digits"]
        );
        assert_eq!(
            problems_after(|d| d["subsegments"] = json!(["x"])),
            ["subsegments[0]: a string is not an object"]
        );
    }

    #[test]
    fn oversize_document() {
        let problems =
            problems_after(|d| d["metadata"]["default"]["big"] = json!("x".repeat(70_000)));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].ends_with("bytes; X-Ray takes at most 65536"),
            "{problems:?}"
        );
    }

    /// The document rotel 0.0.1a15 made of a server span (see the module doc): two deviations.
    #[test]
    fn rotel_document_problems() {
        let doc = json!({"end_time": 1796114035.5, "http": {"request": {"method": "GET"}, "response": {}},
            "id": "0123456789abcdef", "metadata": {"environment": "production"}, "name": "GET /health",
            "start_time": 1796114035.0, "trace_id": "1-6b0e8673-0123456789abcdef01234567", "type": "segment"});
        assert_eq!(
            check_segment_document(&doc),
            [
                "type: \"segment\" is not allowed; the only type is \"subsegment\", for a subsegment sent on its own",
                "metadata.environment: \"production\" is not an object (metadata maps namespaces to objects)"
            ]
        );
    }

    fn datagram(doc: &Value) -> Vec<u8> {
        format!("{DAEMON_HEADER}\n{doc}").into_bytes()
    }

    #[tokio::test]
    async fn daemon_double_checks_datagrams() {
        let daemon = DaemonDouble::start(None).await;
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let send = |bytes: &[u8]| {
            sender.send_to(bytes, daemon.address()).unwrap();
        };
        send(&datagram(&valid_segment()));
        send(format!("{}", valid_segment()).as_bytes());
        send(
            format!(
                "{{\"format\":\"json\",\"version\":2}}\n{}",
                valid_standalone_subsegment()
            )
            .as_bytes(),
        );
        send(format!("{DAEMON_HEADER}\n{} {}", valid_segment(), valid_segment()).as_bytes());
        let mut bad = valid_segment();
        bad["id"] = json!("x");
        send(&datagram(&bad));
        // Compact header (the same JSON) and a trailing newline are fine.
        send(
            format!(
                "{{\"format\":\"json\",\"version\":1}}\n{}\n",
                valid_standalone_subsegment()
            )
            .as_bytes(),
        );

        let datagrams = daemon.wait_for_datagrams(6, Duration::from_secs(5)).await;
        assert_eq!(datagrams.len(), 6, "{datagrams:?}");
        assert_eq!(datagrams[0].document, Some(valid_segment()));
        assert_eq!(datagrams[0].len, datagram(&valid_segment()).len());
        assert_eq!(datagrams[1].document, None);
        assert_eq!(datagrams[2].document, Some(valid_standalone_subsegment()));
        assert_eq!(datagrams[3].document, None);
        assert_eq!(datagrams[4].document, Some(bad));
        assert_eq!(datagrams[5].document, Some(valid_standalone_subsegment()));
        let problems = daemon.problems();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems[0].starts_with("datagram 1: no header line"),
            "{problems:#?}"
        );
        assert_eq!(
            problems[1],
            "datagram 2: the header line is \"{\\\"format\\\":\\\"json\\\",\\\"version\\\":2}\", not {\"format\": \"json\", \"version\": 1}"
        );
        assert!(
            problems[2].starts_with(
                "datagram 3: the rest is not exactly one JSON document: trailing characters"
            ),
            "{problems:#?}"
        );
        assert_eq!(
            problems[3],
            "datagram 4: id: \"x\" is not 16 lowercase hex digits"
        );
    }

    #[test]
    fn datagram_size_limit() {
        let mut doc = valid_segment();
        doc["metadata"]["default"]["big"] = json!("x".repeat(MAX_DOCUMENT_BYTES));
        let (document, problems, valid) = check_datagram(&datagram(&doc));
        assert!(document.is_some());
        assert!(valid.is_none());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].ends_with("bytes; the daemon takes at most 65536"),
            "{problems:?}"
        );
        // IPv4 cannot carry it: the sender's kernel refuses it.
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(sender.send_to(&datagram(&doc), "127.0.0.1:9").is_err());
    }

    /// moto with a reason to skip.
    fn moto_or_skip(test: &str) -> Option<(Process, String)> {
        let moto = crate::moto();
        if moto.is_none() {
            eprintln!(
                "{test}: skipped, MOTO_SERVER does not name moto_server (scripts/test.sh sets it)"
            );
        }
        moto
    }

    fn current_trace_id(tail: &str) -> String {
        format!("1-{:08x}-{tail}", epoch_seconds_now() as u64)
    }

    /// What moto stores and answers, as the module doc describes it.
    #[tokio::test]
    async fn moto_stores_documents_verbatim() {
        let Some((_moto, endpoint)) = moto_or_skip("moto_stores_documents_verbatim") else {
            return;
        };
        let api = XrayApi::new(&endpoint);
        let now = epoch_seconds_now();
        // Whole milliseconds, which serde_json (without `float_roundtrip`) parses back exactly.
        let at = |offset: f64| json!(((now + offset) * 1e3).round() / 1e3);
        let trace_id = current_trace_id("0123456789abcdef01234567");
        let mut segment = valid_segment();
        segment["trace_id"] = json!(trace_id);
        segment["start_time"] = at(-1.0);
        segment["end_time"] = at(-0.5);
        for (i, sub) in segment["subsegments"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .enumerate()
        {
            sub["start_time"] = at(-0.9 + i as f64 * 0.1);
            sub["end_time"] = at(-0.85 + i as f64 * 0.1);
            sub.as_object_mut().unwrap().remove("subsegments");
        }
        let mut standalone = valid_standalone_subsegment();
        standalone["trace_id"] = json!(trace_id);
        standalone["start_time"] = at(-0.8);
        standalone["in_progress"] = json!(true);
        standalone.as_object_mut().unwrap().remove("end_time");
        // Sent with spacing moto keeps: stored verbatim.
        let standalone_text = serde_json::to_string_pretty(&standalone).unwrap();
        let answer = api
            .put_trace_segments(&[standalone_text.clone(), segment.to_string()])
            .await
            .unwrap();
        assert_eq!(answer, json!({"UnprocessedTraceSegments": []}));

        let documents = api
            .wait_for_documents(&trace_id, 2, Duration::from_secs(5))
            .await;
        // By start_time, not arrival; the nested subsegments inside their segment.
        assert_eq!(documents, [segment.clone(), standalone.clone()]);
        assert_eq!(flatten(&documents[0]).len(), 3);
        // The last document (by start_time) is in progress: unfinished, Id null, no summary.
        let traces = api
            .batch_get_traces(&[&trace_id, "1-00000000-000000000000000000000000"])
            .await
            .unwrap();
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].id, trace_id);
        let raw = api
            .call("Traces", &json!({"TraceIds": [trace_id]}))
            .await
            .unwrap();
        assert_eq!(raw["Traces"][0]["Id"], Value::Null);
        assert_eq!(
            raw["Traces"][0]["Segments"][1]["Document"],
            json!(standalone_text)
        );
        let summaries = api.trace_summaries(now - 10.0).await.unwrap();
        assert!(
            !summaries.iter().any(|s| s["Id"] == json!(trace_id)),
            "{summaries:?}"
        );

        // The complete standalone subsegment is kept beside the in-progress one, not instead;
        // starting later, it finishes the trace.
        standalone.as_object_mut().unwrap().remove("in_progress");
        standalone["start_time"] = at(-0.7);
        standalone["end_time"] = at(-0.6);
        api.put_trace_segments(&[standalone.to_string()])
            .await
            .unwrap();
        let documents = api
            .wait_for_documents(&trace_id, 3, Duration::from_secs(5))
            .await;
        assert_eq!(documents.len(), 3);
        assert_eq!(documents[1]["id"], documents[2]["id"]);
        let summaries = api.trace_summaries(now - 10.0).await.unwrap();
        let summary = summaries
            .iter()
            .find(|s| s["Id"] == json!(trace_id))
            .unwrap();
        assert_eq!(summary["HasError"], json!(true));
        assert_eq!(
            summary["HasFault"],
            json!(true),
            "set when present at all: {summary}"
        );
        assert!(api.trace_summaries(now + 10.0).await.unwrap().is_empty());

        // What moto refuses: not JSON, and missing required fields.
        let answer = api
            .put_trace_segments(&[
                "not json".into(),
                json!({"id": "70de5b6f19ff9a0a"}).to_string(),
            ])
            .await
            .unwrap();
        assert_eq!(
            answer["UnprocessedTraceSegments"],
            json!([{"ErrorCode": "JSONFormatError", "Message": "Bad JSON data"},
                   {"Id": "70de5b6f19ff9a0a", "ErrorCode": "MissingParam", "Message": "Missing segment ID"}])
        );
    }

    #[tokio::test]
    async fn daemon_double_forwards_to_moto() {
        let Some((_moto, endpoint)) = moto_or_skip("daemon_double_forwards_to_moto") else {
            return;
        };
        let api = XrayApi::new(&endpoint);
        let daemon = DaemonDouble::start(Some(api.clone())).await;
        let now = epoch_seconds_now();
        // Whole milliseconds, which serde_json (without `float_roundtrip`) parses back exactly.
        let at = |offset: f64| json!(((now + offset) * 1e3).round() / 1e3);
        let trace_id = current_trace_id("abcdefabcdefabcdefabcdef");
        let mut segment = valid_segment();
        segment["trace_id"] = json!(trace_id);
        segment["start_time"] = at(-1.0);
        segment["end_time"] = at(0.0);
        segment.as_object_mut().unwrap().remove("subsegments");
        let mut invalid = segment.clone();
        invalid["id"] = json!("70de5b6f19ff9a0f");
        invalid["annotations"]["bad-key"] = json!(1);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(&datagram(&segment), daemon.address())
            .unwrap();
        sender
            .send_to(&datagram(&invalid), daemon.address())
            .unwrap();
        assert_eq!(
            daemon
                .wait_for_datagrams(2, Duration::from_secs(5))
                .await
                .len(),
            2
        );
        let documents = api
            .wait_for_documents(&trace_id, 1, Duration::from_secs(5))
            .await;
        assert_eq!(documents, [segment]);
        assert_eq!(
            daemon.problems(),
            [
                "datagram 1: annotations.bad-key: the key \"bad-key\" is not 1 to 500 letters, digits and underscores"
            ]
        );
    }

    /// One OTLP/HTTP span through rotel to moto's X-Ray, read back.
    #[tokio::test]
    async fn rotel_exports_a_span_to_moto_xray() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
        use prost::Message;

        let Some((_moto, endpoint)) = moto_or_skip("rotel_exports_a_span_to_moto_xray") else {
            return;
        };
        let Some(rotel) = Rotel::start(&endpoint).await else {
            eprintln!(
                "rotel_exports_a_span_to_moto_xray: skipped, rotel is not installed (ROTEL, or `pip install --pre rotel`)"
            );
            return;
        };
        rotel.wait_ready(Duration::from_secs(20)).await;

        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let mut trace_id = (now.as_secs() as u32).to_be_bytes().to_vec();
        trace_id.extend([0x5a; 12]);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let xray_trace_id = format!("1-{}-{}", hex(&trace_id[..4]), hex(&trace_id[4..]));
        let span_id = vec![0x0b, 0xad, 0xc0, 0xde, 0x00, 0x11, 0x22, 0x33];
        let start = now.as_nanos() as u64 - 250_000_000;
        let text = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![text("service.name", "apuntador-e2e")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: trace_id.clone(),
                        span_id: span_id.clone(),
                        name: "GET /health".into(),
                        kind: span::SpanKind::Server as i32,
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + 125_000_000,
                        attributes: vec![text("http.request.method", "GET")],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let answer = reqwest::Client::new()
            .post(format!("{}/v1/traces", rotel.otlp_http_endpoint()))
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());

        let api = XrayApi::new(&endpoint);
        let documents = api
            .wait_for_documents(&xray_trace_id, 1, Duration::from_secs(20))
            .await;
        assert_eq!(
            documents.len(),
            1,
            "forwarded: {:?}; rotel: {:?}",
            rotel.forwarded(),
            rotel.lines()
        );
        let doc = &documents[0];
        eprintln!("rotel's document: {doc}");
        // Exactly what rotel sent is what moto stored.
        assert_eq!(rotel.forwarded_documents(), documents);
        assert_eq!(doc["trace_id"], json!(xray_trace_id));
        assert_eq!(doc["id"], json!(hex(&span_id)));
        assert_eq!(doc["name"], json!("GET /health"));
        assert_eq!(doc["http"]["request"]["method"], json!("GET"));
        let start_secs = start as f64 / 1e9;
        assert!(
            (doc["start_time"].as_f64().unwrap() - start_secs).abs() < 0.001,
            "{doc}"
        );
        assert!(
            (doc["end_time"].as_f64().unwrap() - (start_secs + 0.125)).abs() < 0.001,
            "{doc}"
        );
        // Only the deviations the module doc records (a newer rotel may drop some).
        let known = [
            "type: \"segment\" is not allowed; the only type is \"subsegment\", for a subsegment sent on its own",
            "metadata.environment: \"production\" is not an object (metadata maps namespaces to objects)",
        ];
        let problems = check_segment_document(doc);
        assert!(
            problems.iter().all(|p| known.contains(&p.as_str())),
            "{problems:#?}"
        );
    }
}

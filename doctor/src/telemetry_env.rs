//! The telemetry variables of a deployment's environment, and only those: a Lambda function's
//! and an ECS container's environment also hold `SECRET_KEY`, `CONFIG_API_KEY` and OAuth client
//! secrets, so the doctor copies the variables named in [`TELEMETRY_VARIABLES`] and nothing
//! else, and redacts what a URL could carry (user information, query). From them: which
//! transport the backend will use (as `src/telemetry` reads the same variables), the traces
//! endpoint, the sampler, and the checks that hold whatever the platform.

use std::collections::BTreeMap;

use crate::report::Check;

/// The variables the doctor reads out and prints. `OTEL_EXPORTER_OTLP_HEADERS` is left out on
/// purpose: it carries API keys for some backends.
pub const TELEMETRY_VARIABLES: [&str; 17] = [
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_PROPAGATORS",
    "OTEL_SERVICE_NAME",
    "OPENTELEMETRY_COLLECTOR_CONFIG_URI",
    "AWS_LAMBDA_EXEC_WRAPPER",
    "AWS_XRAY_DAEMON_ADDRESS",
    "AWS_ENDPOINT_URL_XRAY",
    "TRACE_SEND_UNSAMPLED",
    "TRACE_HEALTH_CHECKS",
];

/// Variables whose value is a URL (or holds one), printed redacted.
const URL_VARIABLES: [&str; 4] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "AWS_ENDPOINT_URL_XRAY",
    "OTEL_TRACES_SAMPLER_ARG",
];

/// The telemetry variables of one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryEnv {
    vars: BTreeMap<String, String>,
}

/// Which path spans take, as the backend decides it from its environment (README, "Telemetry
/// and logs"). The names are `TelemetryTransport`'s values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `otlp` to an OTLP endpoint other than X-Ray's (the collector layer or sidecar).
    Collector,
    /// `otlp` signed with SigV4 to `https://xray.<region>.amazonaws.com/v1/traces`.
    OtlpXray {
        region: String,
    },
    /// `otlp-udp`: OTLP over UDP to Lambda's X-Ray endpoint.
    OtlpUdp,
    /// `xray`: segment documents over UDP to the X-Ray daemon.
    Daemon,
    None,
    Console,
    Unknown(String),
}

impl Transport {
    /// `TelemetryTransport`'s name for it.
    pub fn name(&self) -> &str {
        match self {
            Transport::Collector => "collector",
            Transport::OtlpXray { .. } => "otlp-xray",
            Transport::OtlpUdp => "otlp-udp",
            Transport::Daemon => "daemon",
            Transport::None => "none",
            Transport::Console => "console",
            Transport::Unknown(value) => value,
        }
    }
}

impl TelemetryEnv {
    /// Copies the telemetry variables out of a whole environment; the rest is never kept.
    pub fn pick<'a>(all: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let vars = all
            .into_iter()
            .filter(|(name, _)| TELEMETRY_VARIABLES.contains(name))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        Self { vars }
    }

    /// A variable's trimmed value; empty counts as unset, as the backend reads it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// What the report prints: every telemetry variable set, URLs redacted.
    pub fn printable(&self) -> BTreeMap<String, String> {
        self.vars
            .iter()
            .map(|(name, value)| {
                let value = if URL_VARIABLES.contains(&name.as_str()) {
                    redact_urls(value)
                } else {
                    value.clone()
                };
                (name.clone(), value)
            })
            .collect()
    }

    pub fn service_name(&self) -> &str {
        self.get("OTEL_SERVICE_NAME").unwrap_or("apuntador-backend")
    }

    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else
    /// `http/protobuf`.
    pub fn protocol(&self) -> &str {
        self.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| self.get("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or("http/protobuf")
    }

    /// Where OTLP spans go: the traces endpoint verbatim, else the base endpoint with
    /// `/v1/traces` (HTTP), else the default of the protocol.
    pub fn traces_endpoint(&self) -> String {
        if let Some(endpoint) = self.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            return endpoint.to_owned();
        }
        let grpc = self.protocol() == "grpc";
        match self.get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(base) if grpc => base.to_owned(),
            Some(base) => format!("{}/v1/traces", base.trim_end_matches('/')),
            None if grpc => "http://localhost:4317".to_owned(),
            None => "http://localhost:4318/v1/traces".to_owned(),
        }
    }

    pub fn transport(&self) -> Transport {
        match self.get("OTEL_TRACES_EXPORTER").unwrap_or("otlp") {
            "otlp" => match self
                .get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .and_then(xray_otlp_region)
            {
                Some(region) => Transport::OtlpXray {
                    region: region.to_owned(),
                },
                None => Transport::Collector,
            },
            "otlp-udp" => Transport::OtlpUdp,
            "xray" => Transport::Daemon,
            "none" => Transport::None,
            "console" => Transport::Console,
            other => Transport::Unknown(other.to_owned()),
        }
    }

    /// Checks that hold on every platform: the sampler samples something the platform allows.
    /// `lambda`: the backend refuses the `xray` sampler there (Lambda's header decides).
    pub fn sampler_check(&self, lambda: bool) -> Option<Check> {
        let sampler = self.get("OTEL_TRACES_SAMPLER")?;
        let argument = self.get("OTEL_TRACES_SAMPLER_ARG");
        let fix =
            "set OTEL_TRACES_SAMPLER=parentbased_always_on (the template's) or a ratio above 0";
        match sampler {
            "always_off" | "parentbased_always_off" => Some(Check::fail(
                "environment.sampler",
                format!("OTEL_TRACES_SAMPLER={sampler} samples no request of its own"),
                fix,
            )),
            "xray" if lambda => Some(Check::fail(
                "environment.sampler",
                "OTEL_TRACES_SAMPLER=xray: the backend refuses it under Lambda and does not start",
                fix,
            )),
            "traceidratio" | "parentbased_traceidratio"
                if argument.and_then(|a| a.parse::<f64>().ok()) == Some(0.0) =>
            {
                Some(Check::warn(
                    "environment.sampler",
                    format!("OTEL_TRACES_SAMPLER={sampler} with ratio 0 samples no root request"),
                    fix,
                ))
            }
            "always_on"
            | "parentbased_always_on"
            | "traceidratio"
            | "parentbased_traceidratio"
            | "xray" => None,
            other => Some(Check::fail(
                "environment.sampler",
                format!(
                    "OTEL_TRACES_SAMPLER={other} is not a sampler the backend knows: it does not start"
                ),
                fix,
            )),
        }
    }
}

/// The region of an X-Ray OTLP traces endpoint, `https://xray.<region>.amazonaws.com/v1/traces`
/// (the form that turns SigV4 signing on in the backend), else `None`.
pub fn xray_otlp_region(endpoint: &str) -> Option<&str> {
    let rest = endpoint.trim().strip_prefix("https://xray.")?;
    let (region, path) = rest.split_once(".amazonaws.com")?;
    let valid = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (valid && path.trim_end_matches('/') == "/v1/traces").then_some(region)
}

/// Host and port of an `http://` or `https://` URL (the port defaulted by scheme).
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), default)),
    }
}

/// Loopback names the OTLP endpoint of a co-located collector uses.
pub fn is_loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1") || host.starts_with("127.")
}

/// Every URL in `value` without user information, query or fragment.
pub fn redact_urls(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("://") {
        let (before, after) = rest.split_at(start + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        let url = url.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = match url.find('/') {
            Some(i) => url.split_at(i),
            None => (url, ""),
        };
        match authority.rsplit_once('@') {
            Some((_, host)) => {
                out.push_str("…@");
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        out.push_str(path);
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> TelemetryEnv {
        TelemetryEnv::pick(pairs.iter().copied())
    }

    #[test]
    fn keeps_only_telemetry_variables() {
        let env = env(&[
            ("SECRET_KEY", "s3cr3t"),
            ("CONFIG_API_KEY", "k3y"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=h3ader"),
            ("OTEL_TRACES_EXPORTER", "otlp-udp"),
        ]);
        let printed = format!("{:?}", env.printable());
        assert_eq!(printed, r#"{"OTEL_TRACES_EXPORTER": "otlp-udp"}"#);
        assert_eq!(env.get("SECRET_KEY"), None);
    }

    #[test]
    fn finds_the_transport_as_the_backend_does() {
        assert_eq!(env(&[]).transport(), Transport::Collector);
        assert_eq!(
            env(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://xray.eu-west-1.amazonaws.com/v1/traces"
            )])
            .transport(),
            Transport::OtlpXray {
                region: "eu-west-1".into()
            }
        );
        assert_eq!(
            env(&[("OTEL_TRACES_EXPORTER", "xray")]).transport(),
            Transport::Daemon
        );
        assert_eq!(
            env(&[("OTEL_TRACES_EXPORTER", "jaeger")]).transport(),
            Transport::Unknown("jaeger".into())
        );
    }

    #[test]
    fn the_traces_endpoint_follows_the_otlp_rules() {
        assert_eq!(
            env(&[]).traces_endpoint(),
            "http://localhost:4318/v1/traces"
        );
        assert_eq!(
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).traces_endpoint(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).traces_endpoint(),
            "http://localhost:4317"
        );
    }

    #[test]
    fn x_ray_endpoints_and_hosts() {
        assert_eq!(
            xray_otlp_region("https://xray.us-east-1.amazonaws.com/v1/traces"),
            Some("us-east-1")
        );
        assert_eq!(
            xray_otlp_region("https://xray.us-east-1.amazonaws.com/v1/logs"),
            None
        );
        assert_eq!(
            xray_otlp_region("http://xray.us-east-1.amazonaws.com/v1/traces"),
            None
        );
        assert_eq!(
            host_port("http://localhost:4318/v1/traces"),
            Some(("localhost".into(), 4318))
        );
        assert_eq!(
            host_port("https://u:p@h.example/x"),
            Some(("h.example".into(), 443))
        );
        assert_eq!(host_port("http://[::1]:4318"), Some(("::1".into(), 4318)));
        assert!(is_loopback("127.0.0.1") && !is_loopback("collector"));
    }

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(
            redact_urls("https://user:pa55@otlp.example.com:4318/v1/traces?token=t0k#x"),
            "https://…@otlp.example.com:4318/v1/traces"
        );
        assert_eq!(
            redact_urls("endpoint=http://127.0.0.1:2000,polling_interval=300"),
            "endpoint=http://127.0.0.1:2000,polling_interval=300"
        );
    }

    #[test]
    fn samplers_that_export_nothing_fail() {
        let check = |pairs: &[(&str, &str)], lambda| env(pairs).sampler_check(lambda);
        assert_eq!(check(&[], true), None);
        assert_eq!(
            check(&[("OTEL_TRACES_SAMPLER", "parentbased_always_on")], true),
            None
        );
        assert_eq!(check(&[("OTEL_TRACES_SAMPLER", "xray")], false), None);
        for (pairs, status) in [
            (
                vec![("OTEL_TRACES_SAMPLER", "always_off")],
                crate::report::Status::Fail,
            ),
            (
                vec![("OTEL_TRACES_SAMPLER", "xray")],
                crate::report::Status::Fail,
            ),
            (
                vec![("OTEL_TRACES_SAMPLER", "sometimes")],
                crate::report::Status::Fail,
            ),
            (
                vec![
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "0"),
                ],
                crate::report::Status::Warn,
            ),
        ] {
            assert_eq!(
                check(&pairs, true).map(|c| c.status),
                Some(status),
                "{pairs:?}"
            );
        }
    }
}

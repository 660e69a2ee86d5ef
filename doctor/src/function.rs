//! The Lambda function behind the stack: its configuration read once (tracing mode, layers,
//! architecture, role, log group, and the telemetry variables only), and the checks on it:
//! active tracing, the transport against the stack's `TelemetryTransport`, the collector layer,
//! and whether the telemetry variables agree with the transport they select.

use aws_sdk_lambda::Client;

use crate::aws::AwsFailure;
use crate::collector_config::{self, CollectorConfig};
use crate::report::Check;
use crate::telemetry_env::{TelemetryEnv, Transport, host_port, is_loopback};
use crate::transaction_search::Need;

/// What the doctor keeps of the function's configuration.
#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub region: String,
    /// `Active` or `PassThrough`.
    pub tracing: String,
    pub role: Option<String>,
    pub layers: Vec<String>,
    pub architecture: String,
    pub env: TelemetryEnv,
    pub collector: CollectorConfig,
    pub log_group: Option<String>,
}

impl Function {
    pub fn tracing_active(&self) -> bool {
        self.tracing == "Active"
    }
}

/// Reads the function's configuration. Its whole environment is in hand only inside this
/// function: the telemetry variables are copied out, and the collector configuration's
/// variable is read for its exporters.
pub async fn read(client: &Client, arn: &str) -> Result<Function, AwsFailure> {
    let config = client
        .get_function_configuration()
        .function_name(arn)
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk(&e))?;
    let variables = config.environment().and_then(|e| e.variables());
    let all = || {
        variables
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    };
    let env = TelemetryEnv::pick(all());
    let collector = collector_config::read(env.get("OPENTELEMETRY_COLLECTOR_CONFIG_URI"), |name| {
        variables.and_then(|v| v.get(name)).map(String::as_str)
    });
    let function_arn = config.function_arn().unwrap_or(arn);
    Ok(Function {
        name: config.function_name().unwrap_or_default().to_owned(),
        region: function_arn
            .split(':')
            .nth(3)
            .unwrap_or_default()
            .to_owned(),
        tracing: config
            .tracing_config()
            .and_then(|t| t.mode())
            .map_or("PassThrough", |m| m.as_str())
            .to_owned(),
        role: config.role().map(str::to_owned),
        layers: config
            .layers()
            .iter()
            .filter_map(|l| l.arn().map(str::to_owned))
            .collect(),
        architecture: config
            .architectures()
            .first()
            .map_or("x86_64", |a| a.as_str())
            .to_owned(),
        env,
        collector,
        log_group: config
            .logging_config()
            .and_then(|l| l.log_group())
            .map(str::to_owned),
    })
}

pub fn tracing_check(function: &Function) -> Check {
    if function.tracing_active() {
        return Check::pass(
            "function.tracing",
            format!("active tracing on {}", function.name),
        );
    }
    Check::fail(
        "function.tracing",
        format!(
            "active tracing is off ({}): Lambda sends Sampled=0, so the backend exports no span, and runs no X-Ray endpoint for otlp-udp and daemon",
            function.tracing
        ),
        format!(
            "set Tracing: Active on BackendFunction (template.yaml has it: redeploy the stack), or aws lambda update-function-configuration --function-name {} --tracing-config Mode=Active",
            function.name
        ),
    )
}

/// The transport the environment selects, against the stack's `TelemetryTransport`.
pub fn transport_check(function: &Function, declared: Option<&str>) -> Check {
    let id = "function.transport";
    let env = &function.env;
    let transport = env.transport();
    let pick = "pick TelemetryTransport=otlp-udp (recommended) or collector and redeploy";
    let described = match &transport {
        Transport::None => {
            return Check::fail(
                id,
                "OTEL_TRACES_EXPORTER=none: the function exports no span (TelemetryTransport=none is for sam local)",
                pick,
            );
        }
        Transport::Console => {
            return Check::fail(
                id,
                "OTEL_TRACES_EXPORTER=console: spans go to the log as JSON lines, not to X-Ray",
                pick,
            );
        }
        Transport::Unknown(value) => {
            return Check::fail(
                id,
                format!(
                    "OTEL_TRACES_EXPORTER={value} is not an exporter the backend knows: it does not start"
                ),
                pick,
            );
        }
        Transport::Collector => format!(
            "OTLP ({}) to {}, for the collector layer",
            env.protocol(),
            crate::telemetry_env::redact_urls(&env.traces_endpoint())
        ),
        Transport::OtlpXray { region } => {
            format!(
                "OTLP/HTTP signed with the function's role to X-Ray's OTLP endpoint in {region}"
            )
        }
        Transport::OtlpUdp => "OTLP over UDP to Lambda's X-Ray endpoint".to_owned(),
        Transport::Daemon => "X-Ray segment documents over UDP to Lambda's X-Ray daemon".to_owned(),
    };
    if let Some(declared) = declared
        && declared != transport.name()
    {
        return Check::fail(
            id,
            format!(
                "the function's environment selects {} ({described}), the stack's TelemetryTransport says {declared}: the function was changed outside the stack",
                transport.name()
            ),
            "redeploy the stack (sam deploy), or set TelemetryTransport to the transport you want",
        );
    }
    if transport == Transport::Daemon {
        return Check::warn(
            id,
            format!("daemon: {described}, a format whose support ends on 25 February 2027"),
            "TelemetryTransport=otlp-udp sends to the same endpoint in the current format (docs/tracing.md)",
        );
    }
    Check::pass(id, format!("{}: {described}", transport.name()))
}

/// Whether the telemetry variables agree with the transport they select.
pub fn environment_checks(function: &Function) -> Vec<Check> {
    let env = &function.env;
    let transport = env.transport();
    let mut checks = Vec::new();
    let mut facts = Vec::new();
    if let Some(wrapper) = env.get("AWS_LAMBDA_EXEC_WRAPPER") {
        checks.push(Check::fail(
            "environment.exec_wrapper",
            format!("AWS_LAMBDA_EXEC_WRAPPER={wrapper}: only the language layers ship a wrapper; this function's bootstrap would not start"),
            "remove AWS_LAMBDA_EXEC_WRAPPER from the function's environment (the template never sets it)",
        ));
    }
    checks.extend(env.sampler_check(true));
    if env.get("TRACE_SEND_UNSAMPLED") == Some("true") && transport != Transport::OtlpUdp {
        checks.push(Check::warn(
            "environment.unsampled",
            format!(
                "TRACE_SEND_UNSAMPLED=true has an effect with otlp-udp only, not {}",
                transport.name()
            ),
            "remove it, or use TelemetryTransport=otlp-udp",
        ));
    }
    match &transport {
        Transport::Collector => {
            let endpoint = env.traces_endpoint();
            let port = if env.protocol() == "grpc" { 4317 } else { 4318 };
            match host_port(&endpoint) {
                Some((host, p)) if is_loopback(&host) && p == port => {
                    facts.push(format!("OTLP to the layer on {host}:{p}"));
                }
                _ => checks.push(Check::fail(
                    "environment.otlp_endpoint",
                    format!(
                        "spans go to {}, not to the collector layer on localhost:{port}",
                        crate::telemetry_env::redact_urls(&endpoint)
                    ),
                    "set OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 and no OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as the template does)",
                )),
            }
            checks.extend(collector_config_check(function, &mut facts));
        }
        Transport::OtlpXray { region } => {
            if *region != function.region {
                checks.push(Check::fail(
                    "environment.otlp_endpoint",
                    format!(
                        "spans go to X-Ray in {region}, but the function runs in {}: they are not where its traces are looked for",
                        function.region
                    ),
                    format!(
                        "set OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=https://xray.{}.amazonaws.com/v1/traces (as the template does)",
                        function.region
                    ),
                ));
            } else {
                facts.push(format!("X-Ray's OTLP endpoint of {region}"));
            }
            if env.protocol() != "http/protobuf" {
                checks.push(Check::fail(
                    "environment.otlp_protocol",
                    format!(
                        "OTLP protocol {}: X-Ray's OTLP endpoint takes http/protobuf only",
                        env.protocol()
                    ),
                    "set OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf (as the template does)",
                ));
            }
        }
        Transport::OtlpUdp | Transport::Daemon => {
            facts.push("Lambda's X-Ray endpoint (AWS_XRAY_DAEMON_ADDRESS, set by Lambda with active tracing)".to_owned());
        }
        Transport::None | Transport::Console | Transport::Unknown(_) => {}
    }
    if checks.is_empty() {
        let summary = if facts.is_empty() {
            format!(
                "telemetry variables agree with the {} transport",
                transport.name()
            )
        } else {
            format!(
                "telemetry variables agree with the {} transport: {}",
                transport.name(),
                facts.join("; ")
            )
        };
        checks.push(Check::pass("environment", summary));
    }
    checks
}

fn collector_config_check(function: &Function, facts: &mut Vec<String>) -> Option<Check> {
    let id = "environment.collector_config";
    let redeploy = "redeploy the stack: the template sets OPENTELEMETRY_COLLECTOR_CONFIG_URI=env:APUNTADOR_COLLECTOR_CONFIG and the configuration itself";
    match &function.collector {
        CollectorConfig::NotSet => Some(Check::warn(
            id,
            "no OPENTELEMETRY_COLLECTOR_CONFIG_URI: the layer runs its built-in configuration, not the project's pipeline",
            redeploy,
        )),
        CollectorConfig::Elsewhere(scheme) => Some(Check::warn(
            id,
            format!(
                "the layer's configuration comes from a {scheme} URI, which doctor does not read: its exporter is not checked"
            ),
            redeploy,
        )),
        CollectorConfig::Broken(why) => Some(Check::fail(
            id,
            format!("the layer's configuration is unusable ({why}): the collector does not start"),
            redeploy,
        )),
        CollectorConfig::Read {
            exporters,
            otlp_xray_region,
        } => {
            if let Some(region) = otlp_xray_region {
                if *region != function.region {
                    return Some(Check::fail(
                        id,
                        format!(
                            "the layer exports to X-Ray's OTLP endpoint in {region}, but the function runs in {}",
                            function.region
                        ),
                        redeploy,
                    ));
                }
                facts.push(format!(
                    "the layer exports with otlphttp to X-Ray's OTLP endpoint of {region}"
                ));
                return None;
            }
            if function.collector.exports_with("awsxray") {
                facts.push("the layer exports with awsxray (PutTraceSegments)".to_owned());
                return None;
            }
            Some(Check::fail(
                id,
                format!(
                    "the layer's traces pipeline exports with {} only: nothing reaches X-Ray",
                    if exporters.is_empty() {
                        "nothing".to_owned()
                    } else {
                        exporters.join(", ")
                    }
                ),
                redeploy,
            ))
        }
    }
}

/// Whether Transaction Search is needed, from the transport, the layer's configuration and the
/// stack's parameters.
pub fn transaction_search_need(
    function: &Function,
    collector_exporter: Option<&str>,
    declared: Option<&str>,
) -> Need {
    let transport = function.env.transport();
    let need = match &transport {
        Transport::OtlpXray { .. } => Need::Required(
            "TelemetryTransport=otlp-xray sends to X-Ray's OTLP endpoint".to_owned(),
        ),
        Transport::Collector => match &function.collector {
            CollectorConfig::Read {
                otlp_xray_region: Some(_),
                ..
            } => Need::Required(
                "the collector layer exports with otlphttp to X-Ray's OTLP endpoint".to_owned(),
            ),
            CollectorConfig::Read { .. } => Need::NotNeeded(
                "the collector layer's awsxray exporter does not need it".to_owned(),
            ),
            _ => match (collector_exporter, declared) {
                (Some("awsxray"), _) | (Some("auto"), Some("off")) => Need::NotNeeded(
                    "the stack's CollectorExporter selects awsxray, which does not need it".to_owned(),
                ),
                _ => Need::Unknown(
                    "the layer's exporter could not be read; otlphttp to X-Ray's OTLP endpoint needs it".to_owned(),
                ),
            },
        },
        other => Need::NotNeeded(format!("the {} transport does not need it", other.name())),
    };
    match (need, declared) {
        (Need::NotNeeded(_) | Need::Unknown(_), Some(value @ ("enable" | "already-enabled"))) => {
            Need::Declared(format!("the stack says TransactionSearch={value}"))
        }
        (need, _) => need,
    }
}

/// The function's log group (its `LoggingConfig`) against the stack's `FunctionLogGroupName`.
pub fn log_group_check(function: &Function, output: Option<&str>) -> Option<Check> {
    let (Some(actual), Some(output)) = (function.log_group.as_deref(), output) else {
        return None;
    };
    (actual != output).then(|| {
        Check::warn(
            "function.log_group",
            format!("the function logs to {actual}, not to the stack's FunctionLogGroupName {output}"),
            "redeploy the stack (its LoggingConfig names FunctionLogGroup); doctor searches the function's own group",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    fn function(pairs: &[(&str, &str)]) -> Function {
        let env = TelemetryEnv::pick(pairs.iter().copied());
        let collector =
            collector_config::read(env.get("OPENTELEMETRY_COLLECTOR_CONFIG_URI"), |name| {
                pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
            });
        Function {
            name: "fn".into(),
            region: "eu-west-1".into(),
            tracing: "Active".into(),
            role: None,
            layers: Vec::new(),
            architecture: "arm64".into(),
            env,
            collector,
            log_group: None,
        }
    }

    const AWSXRAY: &str = r#"{"exporters":{"awsxray":{}},"service":{"pipelines":{"traces":{"receivers":["otlp"],"exporters":["awsxray"]}}}}"#;

    fn statuses(checks: &[Check]) -> Vec<(&'static str, Status)> {
        checks.iter().map(|c| (c.id, c.status)).collect()
    }

    #[test]
    fn the_templates_collector_environment_is_coherent() {
        let f = function(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
            (
                "OPENTELEMETRY_COLLECTOR_CONFIG_URI",
                "env:APUNTADOR_COLLECTOR_CONFIG",
            ),
            ("APUNTADOR_COLLECTOR_CONFIG", AWSXRAY),
        ]);
        let checks = environment_checks(&f);
        assert_eq!(statuses(&checks), [("environment", Status::Pass)]);
        assert!(
            checks[0].summary.contains("the layer exports with awsxray"),
            "{}",
            checks[0].summary
        );
        assert_eq!(
            transaction_search_need(&f, Some("auto"), Some("off")),
            Need::NotNeeded("the collector layer's awsxray exporter does not need it".into())
        );
        assert!(matches!(
            transaction_search_need(&f, Some("auto"), Some("enable")),
            Need::Declared(_)
        ));
    }

    #[test]
    fn each_incoherence_is_its_own_failure() {
        let f = function(&[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://collector.internal:4318",
            ),
            ("AWS_LAMBDA_EXEC_WRAPPER", "/opt/otel-instrument"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
            ("OPENTELEMETRY_COLLECTOR_CONFIG_URI", "env:MISSING"),
        ]);
        assert_eq!(
            statuses(&environment_checks(&f)),
            [
                ("environment.exec_wrapper", Status::Fail),
                ("environment.sampler", Status::Fail),
                ("environment.otlp_endpoint", Status::Fail),
                ("environment.collector_config", Status::Fail),
            ]
        );
    }

    #[test]
    fn otlp_xray_must_send_to_its_own_region_over_http() {
        let f = function(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://xray.us-east-1.amazonaws.com/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ]);
        assert_eq!(
            statuses(&environment_checks(&f)),
            [
                ("environment.otlp_endpoint", Status::Fail),
                ("environment.otlp_protocol", Status::Fail),
            ]
        );
        assert!(matches!(
            transaction_search_need(&f, None, Some("off")),
            Need::Required(_)
        ));
    }

    #[test]
    fn a_log_group_other_than_the_stacks_is_a_warning() {
        let mut f = function(&[]);
        assert_eq!(log_group_check(&f, Some("/aws/lambda/s-backend")), None);
        f.log_group = Some("/aws/lambda/s-backend".into());
        assert_eq!(log_group_check(&f, Some("/aws/lambda/s-backend")), None);
        f.log_group = Some("/aws/lambda/elsewhere".into());
        let check = log_group_check(&f, Some("/aws/lambda/s-backend")).unwrap();
        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.summary,
            "the function logs to /aws/lambda/elsewhere, not to the stack's FunctionLogGroupName /aws/lambda/s-backend"
        );
    }

    #[test]
    fn the_transport_must_be_the_stacks() {
        let f = function(&[("OTEL_TRACES_EXPORTER", "otlp-udp")]);
        assert_eq!(transport_check(&f, Some("otlp-udp")).status, Status::Pass);
        let mismatch = transport_check(&f, Some("collector"));
        assert_eq!(mismatch.status, Status::Fail);
        assert!(
            mismatch.summary.contains("selects otlp-udp"),
            "{}",
            mismatch.summary
        );
        assert_eq!(
            transport_check(
                &function(&[("OTEL_TRACES_EXPORTER", "xray")]),
                Some("daemon")
            )
            .status,
            Status::Warn
        );
        assert_eq!(
            transport_check(&function(&[("OTEL_TRACES_EXPORTER", "none")]), None).status,
            Status::Fail
        );
    }
}

//! The Lambda collector layer's configuration, as the template hands it over
//! (`OPENTELEMETRY_COLLECTOR_CONFIG_URI=env:APUNTADOR_COLLECTOR_CONFIG`, JSON in that variable):
//! which exporters the traces pipeline uses and, for `otlphttp`, which region's X-Ray OTLP
//! endpoint it sends to. Only those facts leave this module; the configuration's text is never
//! printed (nor is any other variable read: only the one the URI names).

use serde_json::Value;

use crate::telemetry_env::xray_otlp_region;

/// What the doctor learnt of the layer's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectorConfig {
    /// The traces pipeline's exporters (`awsxray`, `otlphttp`, …, by type) and, when one is
    /// `otlphttp` to X-Ray's OTLP endpoint, that endpoint's region.
    Read {
        exporters: Vec<String>,
        otlp_xray_region: Option<String>,
    },
    /// No `OPENTELEMETRY_COLLECTOR_CONFIG_URI`: the layer's built-in configuration.
    NotSet,
    /// A URI the doctor does not read (`s3:`, `file:`, `yaml:`, `http:`).
    Elsewhere(String),
    /// `env:NAME` with NAME unset or not a configuration (the reason, without the text).
    Broken(String),
}

impl CollectorConfig {
    /// Whether the traces pipeline exports with this exporter type.
    pub fn exports_with(&self, kind: &str) -> bool {
        matches!(self, CollectorConfig::Read { exporters, .. } if exporters.iter().any(|e| e == kind))
    }
}

/// Reads the configuration the URI names; `lookup` gives a variable of the function's
/// environment (called for the one variable an `env:` URI names, and no other).
pub fn read<'a>(uri: Option<&str>, lookup: impl Fn(&str) -> Option<&'a str>) -> CollectorConfig {
    let Some(uri) = uri.map(str::trim).filter(|u| !u.is_empty()) else {
        return CollectorConfig::NotSet;
    };
    let Some(name) = uri.strip_prefix("env:") else {
        let scheme = uri.split(':').next().unwrap_or_default();
        return CollectorConfig::Elsewhere(format!("{scheme}:"));
    };
    let Some(text) = lookup(name) else {
        return CollectorConfig::Broken(format!("{name} is not set"));
    };
    let Ok(config) = serde_json::from_str::<Value>(text) else {
        return CollectorConfig::Broken(format!(
            "{name} is not JSON (the doctor reads the template's JSON form only)"
        ));
    };
    let Some(pipeline) = config.pointer("/service/pipelines/traces/exporters") else {
        return CollectorConfig::Broken(format!("{name} has no traces pipeline"));
    };
    let names: Vec<&str> = pipeline
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut exporters = Vec::new();
    let mut otlp_xray_region = None;
    for exporter in names {
        let kind = exporter.split('/').next().unwrap_or(exporter);
        if kind == "otlphttp" {
            let settings = config.get("exporters").and_then(|e| e.get(exporter));
            let endpoint = settings
                .and_then(|s| s.get("traces_endpoint"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    settings
                        .and_then(|s| s.get("endpoint"))
                        .and_then(Value::as_str)
                        .map(|e| format!("{}/v1/traces", e.trim_end_matches('/')))
                });
            if let Some(region) = endpoint.as_deref().and_then(xray_otlp_region) {
                otlp_xray_region = Some(region.to_owned());
            }
        }
        exporters.push(kind.to_owned());
    }
    CollectorConfig::Read {
        exporters,
        otlp_xray_region,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// template.yaml's two configurations, with the region substituted.
    const AWSXRAY: &str = r#"{"receivers":{"otlp":{"protocols":{"http":{"endpoint":"localhost:4318"}}}},"exporters":{"awsxray":{}},"service":{"pipelines":{"traces":{"receivers":["otlp"],"exporters":["awsxray"]}}}}"#;
    const OTLP: &str = r#"{"extensions":{"sigv4auth":{"region":"eu-west-1","service":"xray"}},"exporters":{"otlphttp":{"traces_endpoint":"https://xray.eu-west-1.amazonaws.com/v1/traces","compression":"gzip","auth":{"authenticator":"sigv4auth"}}},"service":{"extensions":["sigv4auth"],"pipelines":{"traces":{"receivers":["otlp"],"exporters":["otlphttp"]}}}}"#;

    #[test]
    fn reads_the_templates_configurations() {
        let config = read(Some("env:APUNTADOR_COLLECTOR_CONFIG"), |_| Some(AWSXRAY));
        assert!(config.exports_with("awsxray") && !config.exports_with("otlphttp"));
        assert_eq!(
            read(Some("env:APUNTADOR_COLLECTOR_CONFIG"), |_| Some(OTLP)),
            CollectorConfig::Read {
                exporters: vec!["otlphttp".into()],
                otlp_xray_region: Some("eu-west-1".into())
            }
        );
    }

    #[test]
    fn reads_only_the_variable_the_uri_names() {
        let asked = std::cell::RefCell::new(Vec::new());
        let _ = read(Some("env:APUNTADOR_COLLECTOR_CONFIG"), |name| {
            asked.borrow_mut().push(name.to_owned());
            None
        });
        assert_eq!(asked.into_inner(), ["APUNTADOR_COLLECTOR_CONFIG"]);
    }

    #[test]
    fn says_what_it_could_not_read() {
        assert_eq!(read(None, |_| None), CollectorConfig::NotSet);
        assert_eq!(
            read(Some("s3://bucket/config.yaml"), |_| None),
            CollectorConfig::Elsewhere("s3:".into())
        );
        assert_eq!(
            read(Some("env:CONFIG"), |_| None),
            CollectorConfig::Broken("CONFIG is not set".into())
        );
        assert!(matches!(
            read(Some("env:CONFIG"), |_| Some("receivers: {}")),
            CollectorConfig::Broken(_)
        ));
    }
}

//! The ADOT collector layer of the `collector` transport: recognising it among a function's
//! layers (`aws-otel-collector-<amd64|arm64>-ver-X-Y-Z`, whichever account publishes or mirrors
//! it), and whether it is current: the release `template.yaml` pins ([`PINNED`], held to the
//! template by a test), older ones with a warning, the ones before [`FIRST_WITHOUT_KNOWN_CVES`]
//! refused (as `scripts/check-template.py` refuses them), and one built for the other
//! architecture refused (its collector cannot start).

use crate::report::Check;
use crate::telemetry_env::Transport;

/// The collector release `template.yaml` attaches (`aws-otel-collector-<arch>-ver-0-156-0`).
pub const PINNED: (u32, u32, u32) = (0, 156, 0);

/// Releases before this carry published CVEs (template.yaml's Layers comment; CRATES.md item 9).
pub const FIRST_WITHOUT_KNOWN_CVES: (u32, u32, u32) = (0, 151, 0);

/// The account AWS publishes the collector layers from.
pub const AWS_LAYER_ACCOUNT: &str = "901920570463";

/// An ADOT collector layer version ARN, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorLayer {
    pub arn: String,
    pub account: String,
    pub arch: String,
    pub release: (u32, u32, u32),
}

/// `arn:aws:lambda:<region>:<account>:layer:aws-otel-collector-<arch>-ver-X-Y-Z:<N>`.
pub fn parse(arn: &str) -> Option<CollectorLayer> {
    let parts: Vec<&str> = arn.split(':').collect();
    let [_, _, "lambda", _, account, "layer", name, _version] = parts.as_slice() else {
        return None;
    };
    let rest = name.strip_prefix("aws-otel-collector-")?;
    let (arch, release) = rest.split_once("-ver-")?;
    if arch != "amd64" && arch != "arm64" {
        return None;
    }
    let numbers: Vec<u32> = release
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [major, minor, patch] = numbers.as_slice() else {
        return None;
    };
    Some(CollectorLayer {
        arn: arn.to_owned(),
        account: (*account).to_owned(),
        arch: arch.to_owned(),
        release: (*major, *minor, *patch),
    })
}

fn dotted((a, b, c): (u32, u32, u32)) -> String {
    format!("{a}.{b}.{c}")
}

/// The layer check for a function of `architecture` (`arm64` or `x86_64`) using `transport`.
pub fn check(layers: &[String], architecture: &str, transport: &Transport) -> Check {
    let collectors: Vec<CollectorLayer> = layers.iter().filter_map(|arn| parse(arn)).collect();
    let wanted_arch = if architecture == "x86_64" {
        "amd64"
    } else {
        "arm64"
    };
    let id = "function.layer";
    if *transport != Transport::Collector {
        return match collectors.first() {
            Some(layer) => Check::warn(
                id,
                format!(
                    "the collector layer {} is attached, but the {} transport does not use it",
                    layer.arn,
                    transport.name()
                ),
                "redeploy: the template attaches the layer only with TelemetryTransport=collector (it costs the layer's start, about 200 ms, on every cold start)",
            ),
            None => Check::skip(
                id,
                format!(
                    "no collector layer, none needed by the {} transport",
                    transport.name()
                ),
            ),
        };
    }
    let Some(layer) = collectors.first() else {
        let detail = if layers.is_empty() {
            "the function has no layer".to_owned()
        } else {
            format!(
                "attached: {} (none is an ADOT collector layer)",
                layers.join(", ")
            )
        };
        return Check::fail(
            id,
            "the collector transport sends OTLP to localhost:4318, but no collector layer is attached",
            "attach the collector layer (redeploy with TelemetryTransport=collector; CollectorLayerArn pins one) or pick another TelemetryTransport (otlp-udp needs no layer)",
        )
        .with_detail(detail);
    };
    let release = dotted(layer.release);
    if layer.arch != wanted_arch {
        return Check::fail(
            id,
            format!(
                "the collector layer is built for {} but the function runs on {architecture}: the collector cannot start",
                layer.arch
            ),
            format!(
                "attach aws-otel-collector-{wanted_arch}-ver-{} (CollectorLayerArn must match Architecture)",
                release.replace('.', "-")
            ),
        )
        .with_detail(layer.arn.clone());
    }
    let mirrored = if layer.account == AWS_LAYER_ACCOUNT {
        String::new()
    } else {
        format!(
            " (from account {}, not AWS's {AWS_LAYER_ACCOUNT})",
            layer.account
        )
    };
    let pinned = dotted(PINNED);
    if layer.release < FIRST_WITHOUT_KNOWN_CVES {
        Check::fail(
            id,
            format!("collector layer {release} carries published CVEs{mirrored}"),
            format!("move to {pinned}: redeploy with the template's default layer or pin CollectorLayerArn to its version ARN (docs/deploying.md#pinning-the-collector-layer)"),
        )
        .with_detail(layer.arn.clone())
    } else if layer.release < PINNED {
        Check::warn(
            id,
            format!("collector layer {release} is older than {pinned}, the release this project pins{mirrored}"),
            format!("move to {pinned}: redeploy with the template's default layer or pin CollectorLayerArn to its version ARN (docs/deploying.md#pinning-the-collector-layer)"),
        )
        .with_detail(layer.arn.clone())
    } else if layer.release > PINNED {
        Check::pass(
            id,
            format!("collector layer {release} ({}), newer than the {pinned} this project tested{mirrored}", layer.arch),
        )
        .with_detail(layer.arn.clone())
    } else {
        Check::pass(
            id,
            format!(
                "collector layer {release} ({}), the pinned release{mirrored}",
                layer.arch
            ),
        )
        .with_detail(layer.arn.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    fn arn(name: &str) -> String {
        format!("arn:aws:lambda:eu-west-1:{AWS_LAYER_ACCOUNT}:layer:{name}:4")
    }

    fn status(layers: &[String], arch: &str, transport: Transport) -> (Status, String) {
        let check = check(layers, arch, &transport);
        (check.status, check.summary)
    }

    #[test]
    fn the_pinned_release_is_the_one_template_yaml_attaches() {
        let template =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
                .unwrap();
        let (a, b, c) = PINNED;
        let name = format!("aws-otel-collector-${{LayerArch}}-ver-{a}-{b}-{c}:1");
        assert!(
            template.contains(&name),
            "template.yaml no longer attaches {name}"
        );
    }

    #[test]
    fn reads_collector_layer_arns_only() {
        let layer = parse(&arn("aws-otel-collector-arm64-ver-0-156-0")).unwrap();
        assert_eq!((layer.arch.as_str(), layer.release), ("arm64", (0, 156, 0)));
        assert_eq!(parse(&arn("aws-otel-python-amd64-ver-1-20-0")), None);
        assert_eq!(parse(&arn("aws-otel-collector-riscv-ver-0-156-0")), None);
        assert_eq!(parse("aws-otel-collector-arm64-ver-0-156-0"), None);
    }

    #[test]
    fn judges_release_and_architecture() {
        let collector = Transport::Collector;
        for (name, architecture, transport, expected) in [
            (
                "aws-otel-collector-arm64-ver-0-156-0",
                "arm64",
                &collector,
                Status::Pass,
            ),
            (
                "aws-otel-collector-arm64-ver-0-160-0",
                "arm64",
                &collector,
                Status::Pass,
            ),
            (
                "aws-otel-collector-arm64-ver-0-151-0",
                "arm64",
                &collector,
                Status::Warn,
            ),
            (
                "aws-otel-collector-arm64-ver-0-117-0",
                "arm64",
                &collector,
                Status::Fail,
            ),
            (
                "aws-otel-collector-amd64-ver-0-156-0",
                "arm64",
                &collector,
                Status::Fail,
            ),
            (
                "aws-otel-collector-amd64-ver-0-156-0",
                "x86_64",
                &collector,
                Status::Pass,
            ),
            (
                "aws-otel-collector-arm64-ver-0-156-0",
                "arm64",
                &Transport::OtlpUdp,
                Status::Warn,
            ),
        ] {
            let got = status(&[arn(name)], architecture, transport.clone()).0;
            assert_eq!(got, expected, "{name} on {architecture}");
        }
        assert_eq!(status(&[], "arm64", Transport::Collector).0, Status::Fail);
        assert_eq!(status(&[], "arm64", Transport::OtlpUdp).0, Status::Skip);
    }
}

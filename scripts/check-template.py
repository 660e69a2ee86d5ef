#!/usr/bin/env python3
"""Checks what template.yaml deploys with a mutual-TLS custom domain (review item 4) and with
each telemetry transport (issue 15).

API Gateway mutual TLS applies to a whole domain. If the domain that requires client
certificates were the only way in, a new device could not enroll, a browser could not finish the
OAuth redirect and health checks would fail the handshake. With CustomDomainName set (the
template's conditions resolved as they would be), this script asserts:

  * the routes that must stay open (health, enrollment, the CA certificate, OAuth authorize and
    callback) are events of an API whose default endpoint is enabled and that has no
    mutual-TLS domain;
  * every domain with mutual TLS maps to an API whose default endpoint is disabled (so the
    handshake cannot be skipped) and which reaches the function;
  * the ApiUrl output points at the open API.

For each TelemetryTransport (and, for collector, each CollectorExporter: auto follows
TransactionSearch, awsxray while it is off, otlphttp once on), on arm64 and x86_64
(conditions computed from the parameter values, as CloudFormation would), it resolves the
function's Layers, environment and policies (issue 15, issue 24):

  * collector with CollectorLayerArn empty: exactly one layer, the ADOT collector release
    DEFAULT_COLLECTOR for the architecture (arm64 / amd64 in its name), never one of the releases
    before OLDEST_SAFE_COLLECTOR (known CVEs); OTEL_TRACES_EXPORTER=otlp; with CollectorLayerArn
    set, exactly that ARN;
  * collector: the layer's configuration (APUNTADOR_COLLECTOR_CONFIG, read through
    OPENTELEMETRY_COLLECTOR_CONFIG_URI=env:…) parses, names only components the pinned layer
    contains (LAYER_COMPONENTS: no processor at all) and runs OTLP on localhost into, with
    CollectorExporter=otlp-xray, otlphttp to X-Ray's OTLP endpoint of the stack's region
    authenticated by a sigv4auth extension (that region, service xray), or with awsxray, the
    awsxray exporter without indexed_attributes;
  * otlp-udp: no layer; otlp-udp. otlp-xray: no layer; OTEL_TRACES_EXPORTER=otlp,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=https://xray.<region>.amazonaws.com/v1/traces and
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf. daemon: no layer; xray. none: no layer; none.
    Only otlp-xray sets those two traces variables (set, they would divert the collector
    transport's spans from the layer);
  * Tracing: Active for every transport, the X-Ray permissions from AWSXRayDaemonWriteAccess
    (xray:PutTraceSegments, what X-Ray's OTLP endpoint is authorised as) and no X-Ray action in
    an inline statement; CollectorLayerArn's AllowedPattern accepts "" and a layer version ARN
    but not a layer ARN without its version.

For each TransactionSearch value (off, enable, already-enabled) it resolves which resources exist:
enable alone creates AWS::XRay::TransactionSearchConfig (IndexingPercentage from its parameter,
DependsOn the resource policy) and the AWS::Logs::ResourcePolicy letting xray.amazonaws.com, for
this account's X-Ray only, PutLogEvents into aws/spans and /aws/application-signals/data; enable
and already-enabled create one AWS::Logs::QueryDefinition over aws/spans per file of
deploy/queries/spans/, its text identical to the file; off creates none of them. The Rules must
refuse TelemetryTransport=otlp-xray with TransactionSearch=off. Every query's span fields must be
the `fields:` line under its heading in deploy/queries/spans/README.md (the list the binary's
span-field test reads).

Operations (issue 25): one AWS::Logs::QueryDefinition over the function's log group per file of
deploy/queries/logs/ (named <stack>/logs/<file>, no Condition), its text identical to the file;
POWERTOOLS_METRICS_NAMESPACE is the MetricsNamespace parameter and OTEL_SERVICE_NAME the service
the dashboard and alarms name, and metrics are not switched off; the one dashboard's body is
dashboard JSON showing every metric the binary writes (the names in src/telemetry/metrics.rs)
and, in its alarm widget, every alarm; alarms exist on the 5xx rate (5xx and Requests), p99
Latency, AWS/Lambda Errors and Throttles and SpanExportFailures, each notifying AlarmTopicArn when
set (AlarmActions and OKActions), missing data not breaching, the backend's metrics read with
the service dimension.

Throttling (issue 26): HttpApi's DefaultRouteSettings throttle with ThrottleRateLimit and
ThrottleBurstLimit; every OAuth route, POST /device/enroll and POST /device/attest/challenge
have RouteSettings with the Sensitive ones; every RouteSettings key is one of HttpApi's routes; the mutual-TLS DeviceApi's
$default stage is throttled like HttpApi's default (ApiGatewayManagedOverrides).

Keys (issue 26 item 2): no NoEcho parameter reaches the function's environment, and SECRET_KEY,
SECRET_KEY_PREVIOUS and CONFIG_API_KEY are there only declared empty (for sam local);
APP_KEYS_SECRET names KeysSecret (which generates SECRET_KEY) or the KeysSecretArn given, the
function may GetSecretValue on it, and under Stage=local it is empty.

Stage=local (issue 23, item 8) relaxes the backend's secret checks and adds credentialed
localhost CORS origins; it is for `sam local` only, which does not evaluate Rules. The template's
Rules section, evaluated here as CloudFormation would on a create or update (RuleCondition, then
every Assertion; Fn::Equals, Fn::Not, Fn::And, Fn::Or, Fn::Contains over the parameters), must
refuse Stage=local and accept Stage=production, Stage=staging and samconfig.toml's deploy
parameters, all with the template's defaults for everything else. The backend reads ENVIRONMENT
trimmed and in any case, so "Local", "LOCAL", " local" must be refused too (by the parameter's
AllowedPattern or a rule), while "local" itself must pass the parameter's constraints (sam local
needs it) and be refused by a rule; samconfig.toml's local sections keep Stage=local.

Run with the test tools' Python (cfn-lint's YAML reader understands the intrinsic-function
tags): python scripts/check-template.py template.yaml

  --self-test    break copies of template.yaml on purpose (the Stage rule removed, its
                 assertion inverted, a RuleCondition that never holds, Stage's AllowedPattern
                 accepting upper case, a processor in the layer's configuration, the otlp-xray
                 endpoint in another region, Transaction Search resources under off, a query
                 differing from its file, the dashboard without a metric, an alarm notifying
                 nobody, …) and fail unless the check above catches every one
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from cfnlint.decode import decode

OPEN_ROUTES = [
    ("GET", "/health"),
    ("POST", "/device/enroll"),
    ("POST", "/device/attest/challenge"),
    ("GET", "/device/ca-certificate"),
    ("POST", "/oauth/authorize/{provider}"),
    ("GET", "/oauth/callback/{provider}"),
]

# The collector layer the template attaches when CollectorLayerArn is empty, and the oldest
# release without known CVEs.
DEFAULT_COLLECTOR = (0, 156, 0)
OLDEST_SAFE_COLLECTOR = (0, 151, 0)
COLLECTOR_LAYER = re.compile(
    r"arn:aws:lambda:(?P<region>[a-z0-9-]+):901920570463:layer:"
    r"aws-otel-collector-(?P<arch>amd64|arm64)-ver-(?P<ver>\d+-\d+-\d+):\d+"
)
REGION = "eu-west-1"
ACCOUNT = "123456789012"
STACK = "apuntador-backend"
EXAMPLE_LAYER_ARN = "arn:aws:lambda:eu-west-1:123456789012:layer:example-collector:7"
XRAY_OTLP_ENDPOINT = f"https://xray.{REGION}.amazonaws.com/v1/traces"
TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
# (parameter overrides, expected layers (None: the default collector), the environment
# (None: the variable must be absent), the collector's exporter (None: no collector))
TRANSPORTS = [
    # CollectorExporter=auto (the default): awsxray while TransactionSearch is off, otlphttp
    # once it is on (enable or already-enabled).
    ({"TelemetryTransport": "collector"}, None,
     {"OTEL_TRACES_EXPORTER": "otlp", TRACES_ENDPOINT: None, TRACES_PROTOCOL: None}, "awsxray"),
    ({"TelemetryTransport": "collector", "TransactionSearch": "already-enabled"}, None,
     {"OTEL_TRACES_EXPORTER": "otlp", TRACES_ENDPOINT: None, TRACES_PROTOCOL: None}, "otlphttp"),
    ({"TelemetryTransport": "collector", "TransactionSearch": "enable"}, None,
     {"OTEL_TRACES_EXPORTER": "otlp", TRACES_ENDPOINT: None, TRACES_PROTOCOL: None}, "otlphttp"),
    ({"TelemetryTransport": "collector", "CollectorExporter": "otlp-xray"}, None,
     {"OTEL_TRACES_EXPORTER": "otlp", TRACES_ENDPOINT: None, TRACES_PROTOCOL: None}, "otlphttp"),
    ({"TelemetryTransport": "collector", "CollectorExporter": "awsxray",
      "TransactionSearch": "already-enabled"}, None,
     {"OTEL_TRACES_EXPORTER": "otlp", TRACES_ENDPOINT: None, TRACES_PROTOCOL: None}, "awsxray"),
    ({"TelemetryTransport": "collector", "CollectorLayerArn": EXAMPLE_LAYER_ARN}, [EXAMPLE_LAYER_ARN],
     {"OTEL_TRACES_EXPORTER": "otlp", TRACES_ENDPOINT: None, TRACES_PROTOCOL: None}, "awsxray"),
    ({"TelemetryTransport": "otlp-udp"}, [],
     {"OTEL_TRACES_EXPORTER": "otlp-udp", TRACES_ENDPOINT: None, TRACES_PROTOCOL: None}, None),
    ({"TelemetryTransport": "otlp-xray", "TransactionSearch": "already-enabled"}, [],
     {"OTEL_TRACES_EXPORTER": "otlp", TRACES_ENDPOINT: XRAY_OTLP_ENDPOINT, TRACES_PROTOCOL: "http/protobuf"}, None),
    ({"TelemetryTransport": "daemon"}, [],
     {"OTEL_TRACES_EXPORTER": "xray", TRACES_ENDPOINT: None, TRACES_PROTOCOL: None}, None),
    ({"TelemetryTransport": "none"}, [],
     {"OTEL_TRACES_EXPORTER": "none", TRACES_ENDPOINT: None, TRACES_PROTOCOL: None}, None),
]
# What the ADOT Lambda collector layer's build registers (aws-observability/aws-otel-lambda,
# adot/collector/lambdacomponents/default.go and default_test.go, commit
# 57474388690ede309017681136025c8b6a56520e, the newest stored, layer ver-0-117-0; the pinned
# ver-0-156-0 is reported with the same set, /work/shared/notes/CRATES.md item 9): one receiver,
# six exporters, one extension, and no processor (a configuration naming one fails to load).
LAYER_COMPONENTS = {
    "receivers": {"otlp"},
    "processors": set(),
    "exporters": {"awsxray", "awsemf", "prometheusremotewrite", "debug", "otlp", "otlphttp"},
    "extensions": {"sigv4auth"},
}
# The managed policy that carries the function's X-Ray permissions (xray:PutTraceSegments,
# PutTelemetryRecords, GetSamplingRules, GetSamplingTargets, GetSamplingStatisticSummaries).
XRAY_POLICY = "AWSXRayDaemonWriteAccess"
QUERY_DIR = Path("deploy") / "queries" / "spans"
TRANSACTION_SEARCH_VALUES = ["off", "enable", "already-enabled"]
LAYER_ARCH = {"arm64": "arm64", "x86_64": "amd64"}


def resolve(node, conditions):
    """The template value with Fn::If and AWS::NoValue resolved under `conditions`."""
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            name, then, otherwise = node["Fn::If"]
            return resolve(then if conditions[name] else otherwise, conditions)
        out = {}
        for key, value in node.items():
            value = resolve(value, conditions)
            if value != {"Ref": "AWS::NoValue"}:
                out[key] = value
        return out
    if isinstance(node, list):
        # Resolved first: an Fn::If in a list (Layers, Policies) may yield AWS::NoValue.
        resolved = (resolve(v, conditions) for v in node)
        return [v for v in resolved if v != {"Ref": "AWS::NoValue"}]
    return node


def condition_values(template, parameters):
    """Every condition's value with `parameters` (the template's defaults overridden)."""
    definitions = template.get("Conditions", {})
    values = {}

    def evaluate(node):
        if isinstance(node, dict) and len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return parameters[arg]
            if key == "Condition":
                return condition(arg)
            if key == "Fn::Equals":
                return str(evaluate(arg[0])) == str(evaluate(arg[1]))
            if key == "Fn::Not":
                return not evaluate(arg[0])
            if key == "Fn::And":
                return all(evaluate(a) for a in arg)
            if key == "Fn::Or":
                return any(evaluate(a) for a in arg)
            raise ValueError(f"condition function {key} not understood")
        return node

    def condition(name):
        if name not in values:
            values[name] = evaluate(definitions[name])
        return values[name]

    for name in definitions:
        condition(name)
    return values


def substitute(node, parameters):
    """A resolved value with Ref to parameters and Fn::Sub replaced by strings."""
    if isinstance(node, dict) and set(node) == {"Ref"} and node["Ref"] in parameters:
        return parameters[node["Ref"]]
    if isinstance(node, dict) and set(node) == {"Fn::Sub"}:
        arg = node["Fn::Sub"]
        text, variables = (arg, {}) if isinstance(arg, str) else arg
        names = dict(parameters, **{k: substitute(v, parameters) for k, v in variables.items()})
        return re.sub(r"\$\{([^}!]+)\}", lambda m: str(names.get(m.group(1), m.group(0))), text)
    if isinstance(node, dict):
        return {k: substitute(v, parameters) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, parameters) for v in node]
    return node


def pseudo_parameters(parameters):
    """`parameters` with the pseudo parameters a deploy in REGION would have."""
    return dict(parameters, **{
        "AWS::Region": REGION, "AWS::Partition": "aws", "AWS::AccountId": ACCOUNT, "AWS::StackName": STACK,
    })


def component_type(name):
    """A collector component's type: its name before any `/qualifier`."""
    return str(name).split("/", 1)[0]


def collector_config_problems(label, variables, exporter):
    """What is wrong with the layer's collector configuration for `exporter`."""
    problems = []
    if variables.get("OPENTELEMETRY_COLLECTOR_CONFIG_URI") != "env:APUNTADOR_COLLECTOR_CONFIG":
        problems.append(f"{label}: OPENTELEMETRY_COLLECTOR_CONFIG_URI is not env:APUNTADOR_COLLECTOR_CONFIG")
    try:
        config = json.loads(variables.get("APUNTADOR_COLLECTOR_CONFIG", ""))
    except (TypeError, json.JSONDecodeError) as error:
        return problems + [f"{label}: APUNTADOR_COLLECTOR_CONFIG is not JSON: {error}"]
    for kind, allowed in LAYER_COMPONENTS.items():
        for name in config.get(kind) or {}:
            if component_type(name) not in allowed:
                problems.append(
                    f"{label}: collector {kind[:-1]} {name!r} is not in the pinned layer's build "
                    f"(it has {', '.join(sorted(allowed)) or 'none'})"
                )
    service = config.get("service") or {}
    for name in service.get("extensions") or []:
        if component_type(name) not in LAYER_COMPONENTS["extensions"]:
            problems.append(f"{label}: service extension {name!r} is not in the pinned layer's build")
    pipelines = service.get("pipelines") or {}
    for pipeline_name, pipeline in pipelines.items():
        if pipeline.get("processors"):
            problems.append(f"{label}: pipeline {pipeline_name} names processors {pipeline['processors']}: the layer has none")
    traces = pipelines.get("traces") or {}
    protocols = ((config.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    if (protocols.get("grpc") or {}).get("endpoint") != "localhost:4317" or (protocols.get("http") or {}).get("endpoint") != "localhost:4318":
        problems.append(f"{label}: the otlp receiver does not listen on localhost:4317 and localhost:4318")
    if traces.get("receivers") != ["otlp"] or [component_type(e) for e in traces.get("exporters") or []] != [exporter]:
        problems.append(f"{label}: traces pipeline {traces}, not otlp → {exporter}")
        return problems
    (exporter_name,) = traces["exporters"]
    settings = (config.get("exporters") or {}).get(exporter_name) or {}
    if exporter == "awsxray":
        if "indexed_attributes" in settings:
            problems.append(f"{label}: awsxray has indexed_attributes (spans name theirs in aws.xray.annotations)")
        return problems
    if settings.get("traces_endpoint") != XRAY_OTLP_ENDPOINT:
        problems.append(f"{label}: otlphttp traces_endpoint {settings.get('traces_endpoint')!r}, not {XRAY_OTLP_ENDPOINT}")
    authenticator = (settings.get("auth") or {}).get("authenticator")
    extension = (config.get("extensions") or {}).get(authenticator) if authenticator else None
    if component_type(authenticator) != "sigv4auth" or extension is None:
        problems.append(f"{label}: otlphttp is not authenticated by a configured sigv4auth extension ({authenticator!r})")
    else:
        if extension.get("region") != REGION or extension.get("service") != "xray":
            problems.append(f"{label}: {authenticator} signs for {extension}, not region {REGION}, service xray")
        if authenticator not in (service.get("extensions") or []):
            problems.append(f"{label}: {authenticator} is configured but not enabled in service.extensions")
    return problems


def policy_problems(label, policies):
    """The function's X-Ray permissions: the managed policy, and no X-Ray action inline."""
    problems = []
    if XRAY_POLICY not in policies:
        problems.append(f"{label}: the function lacks {XRAY_POLICY} (xray:PutTraceSegments)")
    for policy in policies:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            actions = statement.get("Action", [])
            for action in [actions] if isinstance(actions, str) else actions:
                if str(action).lower().startswith("xray:") or action == "*":
                    problems.append(f"{label}: inline statement grants {action} (X-Ray comes from {XRAY_POLICY} only)")
    return problems


def telemetry_problems(template):
    """What is wrong with each TelemetryTransport's layers, environment, collector and policies."""
    declared = template.get("Parameters", {})
    defaults = {name: str(p.get("Default", "")) for name, p in declared.items()}
    problems = []
    for name in ("TelemetryTransport", "CollectorLayerArn", "CollectorExporter"):
        if name not in declared:
            problems.append(f"no parameter {name}")
    pattern = declared.get("CollectorLayerArn", {}).get("AllowedPattern")
    if pattern is not None:
        unversioned = EXAMPLE_LAYER_ARN.rsplit(":", 1)[0]
        for value, allowed in (("", True), (EXAMPLE_LAYER_ARN, True), (unversioned, False)):
            if bool(re.fullmatch(pattern, value)) != allowed:
                verdict = "refuses" if allowed else "accepts"
                problems.append(f"CollectorLayerArn's AllowedPattern {verdict} {value!r}")
    transports = {str(v) for v in declared.get("TelemetryTransport", {}).get("AllowedValues", [])}
    checked = {overrides["TelemetryTransport"] for overrides, *_ in TRANSPORTS}
    if transports != checked:
        problems.append(f"TelemetryTransport allows {sorted(transports)}; this check knows {sorted(checked)}")
    for overrides, expected_layers, expected_environment, expected_exporter in TRANSPORTS:
        for arch in LAYER_ARCH:
            parameters = pseudo_parameters(dict(defaults, **overrides, Architecture=arch))
            label = " ".join(f"{k}={v}" for k, v in dict(overrides, Architecture=arch).items())
            conditions = condition_values(template, parameters)
            function = substitute(
                resolve(template["Resources"]["BackendFunction"], conditions), parameters
            )["Properties"]
            layers = function.get("Layers", [])
            variables = function.get("Environment", {}).get("Variables", {})
            if function.get("Tracing") != "Active":
                problems.append(f"{label}: Tracing is {function.get('Tracing')!r}, not Active")
            for name, expected in expected_environment.items():
                value = variables.get(name)
                if value != expected:
                    wanted = "absent" if expected is None else expected
                    problems.append(f"{label}: {name}={value}, not {wanted}")
            problems += policy_problems(label, function.get("Policies", []))
            if expected_exporter is not None:
                problems += collector_config_problems(label, variables, expected_exporter)
            if expected_layers is not None:
                if layers != expected_layers:
                    problems.append(f"{label}: layers {layers}, not {expected_layers}")
                continue
            if len(layers) != 1:
                problems.append(f"{label}: layers {layers}, not the one collector layer")
                continue
            match = COLLECTOR_LAYER.fullmatch(str(layers[0]))
            if not match:
                problems.append(f"{label}: layer {layers[0]} is not an ADOT collector layer ARN")
                continue
            version = tuple(int(n) for n in match["ver"].split("-"))
            if match["arch"] != LAYER_ARCH[arch]:
                problems.append(
                    f"{label}: layer {layers[0]} is for {match['arch']}, not {LAYER_ARCH[arch]}"
                )
            if match["region"] != REGION:
                problems.append(f"{label}: layer {layers[0]} is not in the stack's region {REGION}")
            if version != DEFAULT_COLLECTOR:
                problems.append(
                    f"{label}: default layer is collector {'.'.join(map(str, version))}, not "
                    f"{'.'.join(map(str, DEFAULT_COLLECTOR))}"
                )
            if version < OLDEST_SAFE_COLLECTOR:
                problems.append(
                    f"{label}: default layer {layers[0]} is a release with known CVEs (before "
                    f"{'.'.join(map(str, OLDEST_SAFE_COLLECTOR))})"
                )
    return problems


# --- Transaction Search and the span queries ------------------------------------------------------

# A span field a Logs Insights query over aws/spans reads (deploy/queries/spans/README.md).
SPAN_FIELD = re.compile(
    r"(?<![\w.@])((?:resource\.)?attributes(?:\.[A-Za-z_][A-Za-z0-9_]*)+|status\.[A-Za-z]+"
    r"|traceId|spanId|parentSpanId|name|kind|startTimeUnixNano|endTimeUnixNano|durationNano)(?![\w.])"
)


def span_fields(query):
    """The span fields `query` reads (string literals and regular expressions left out)."""
    code = re.sub(r'"[^"]*"|\blike\s+/[^/]*/', " ", query)
    return set(SPAN_FIELD.findall(code))


def readme_fields(readme):
    """{query name: [fields]} from the `## name` headings and their `fields:` lines."""
    found, current = {}, None
    for line in readme.splitlines():
        heading = re.fullmatch(r"## ([a-z0-9-]+)\s*", line)
        if heading:
            current = heading.group(1)
        elif current and line.startswith("fields:"):
            found[current] = [f.strip() for f in line[len("fields:"):].split(",") if f.strip()]
    return found


def query_files(root):
    """{name: text} of deploy/queries/spans/*.query under `root`."""
    return {path.stem: path.read_text() for path in sorted((root / QUERY_DIR).glob("*.query"))}


def query_problems(root):
    """Each query's span fields = its README `fields:` line."""
    queries = query_files(root)
    problems = [] if queries else [f"no query in {QUERY_DIR}"]
    readme_path = root / QUERY_DIR / "README.md"
    listed = readme_fields(readme_path.read_text()) if readme_path.exists() else {}
    for name, text in queries.items():
        if name not in listed:
            problems.append(f"{QUERY_DIR}/README.md: no `## {name}` with a `fields:` line")
            continue
        used, declared = span_fields(text), set(listed[name])
        if used - declared:
            problems.append(f"{name}.query reads {sorted(used - declared)}, not in its README fields line")
        if declared - used:
            problems.append(f"{name}.query: its README fields line names {sorted(declared - used)}, which it does not read")
    for name in set(listed) - set(queries):
        problems.append(f"{QUERY_DIR}/README.md lists fields for {name}, which has no .query file")
    return problems


def resource_policy_problems(label, resource, parameters):
    """The aws/spans resource policy: AWS's document for Transaction Search."""
    text = substitute(resource.get("Properties", {}).get("PolicyDocument"), parameters)
    try:
        document = json.loads(text) if isinstance(text, str) else text
        (statement,) = document["Statement"]
    except (TypeError, ValueError, KeyError) as error:
        return [f"{label}: the resource policy is not one JSON statement: {error!r}"]
    logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:"
    expected = {
        "Effect": "Allow",
        "Principal": {"Service": "xray.amazonaws.com"},
        "Action": "logs:PutLogEvents",
        "Resource": [f"{logs}aws/spans:*", f"{logs}/aws/application-signals/data:*"],
        "Condition": {
            "ArnLike": {"aws:SourceArn": f"arn:aws:xray:{REGION}:{ACCOUNT}:*"},
            "StringEquals": {"aws:SourceAccount": ACCOUNT},
        },
    }
    return [
        f"{label}: resource policy {key} is {json.dumps(statement.get(key))}, not {json.dumps(value)}"
        for key, value in expected.items()
        if statement.get(key) != value
    ]


def transaction_search_problems(template, root):
    """Which Transaction Search resources and span queries exist for each TransactionSearch."""
    declared = template.get("Parameters", {})
    problems = []
    choice = declared.get("TransactionSearch", {})
    if [str(v) for v in choice.get("AllowedValues", [])] != TRANSACTION_SEARCH_VALUES or str(choice.get("Default")) != "off":
        problems.append(f"TransactionSearch allows {choice.get('AllowedValues')} (default {choice.get('Default')}), not {TRANSACTION_SEARCH_VALUES} (default off)")
    description = " ".join(str(choice.get("Description", "")).split())
    if not all(word in description for word in ("account", "region", "one stack")):
        problems.append("TransactionSearch's description does not say it is an account-and-region setting one stack should own")
    percentage = declared.get("TransactionSearchIndexingPercentage", {})
    if (str(percentage.get("Default")), str(percentage.get("MinValue")), str(percentage.get("MaxValue"))) != ("1", "0", "100"):
        problems.append("TransactionSearchIndexingPercentage is not a number 0-100 defaulting to 1")
    files = query_files(root)
    defaults = {name: str(p.get("Default", "")) for name, p in declared.items()}
    for value in TRANSACTION_SEARCH_VALUES:
        label = f"TransactionSearch={value}"
        parameters = pseudo_parameters(dict(defaults, TransactionSearch=value))
        try:
            conditions = condition_values(template, parameters)
        except (KeyError, ValueError) as error:
            problems.append(f"{label}: conditions not understood: {error!r}")
            continue
        resources = {
            name: resolve(resource, conditions)
            for name, resource in template["Resources"].items()
            if conditions.get(resource.get("Condition"), True)
        }
        of_type = lambda kind: {n: r for n, r in resources.items() if r["Type"] == kind}  # noqa: E731
        configs = of_type("AWS::XRay::TransactionSearchConfig")
        policies = of_type("AWS::Logs::ResourcePolicy")
        # The span queries; the log queries (<stack>/logs/...) are operations_problems'.
        queries = {
            n: r for n, r in of_type("AWS::Logs::QueryDefinition").items()
            if "/logs/" not in str(r.get("Properties", {}).get("Name"))
        }
        if value == "enable":
            if len(configs) != 1 or len(policies) != 1:
                problems.append(f"{label}: {len(configs)} TransactionSearchConfig and {len(policies)} resource policies, not one each")
            for name, config in configs.items():
                if config.get("Properties", {}).get("IndexingPercentage") != {"Ref": "TransactionSearchIndexingPercentage"}:
                    problems.append(f"{label}: {name}'s IndexingPercentage is not the TransactionSearchIndexingPercentage parameter")
                depends = config.get("DependsOn", [])
                depends = [depends] if isinstance(depends, str) else depends
                if not set(policies) <= set(depends) or not policies:
                    problems.append(f"{label}: {name} has no DependsOn on the resource policy {sorted(policies)} (AWS creates the policy first)")
            for name, policy in policies.items():
                problems += resource_policy_problems(f"{label}: {name}", policy, parameters)
        else:
            for name in list(configs) + list(policies):
                problems.append(f"{label}: {name} exists; only TransactionSearch=enable may change the account's setting")
        if value == "off":
            if queries:
                problems.append(f"{label}: query definitions {sorted(queries)} exist without Transaction Search")
            continue
        by_file = {}
        for name, query in queries.items():
            props = substitute(query.get("Properties", {}), parameters)
            match = re.fullmatch(re.escape(STACK) + r"/spans/([a-z0-9-]+)", str(props.get("Name")))
            stem = match.group(1) if match else None
            if stem not in files:
                problems.append(f"{label}: {name} is named {props.get('Name')!r}, not <stack>/spans/<a file of {QUERY_DIR}>")
                continue
            by_file[stem] = name
            if props.get("LogGroupNames") != ["aws/spans"]:
                problems.append(f"{label}: {name} reads {props.get('LogGroupNames')}, not [aws/spans]")
            if props.get("QueryString") != files[stem]:
                problems.append(f"{label}: {name}'s QueryString differs from {QUERY_DIR}/{stem}.query")
        for stem in sorted(set(files) - set(by_file)):
            problems.append(f"{label}: no query definition for {QUERY_DIR}/{stem}.query")
    # X-Ray's OTLP endpoint needs Transaction Search: the Rules must stop otlp-xray without it.
    try:
        for search, refused in (("off", True), ("enable", False), ("already-enabled", False)):
            parameters = deploy_parameters(template, {"TelemetryTransport": "otlp-xray", "TransactionSearch": search})
            verdict = bool(constraint_refusals(template, parameters) + rule_refusals(template, parameters))
            if verdict != refused:
                problems.append(
                    f"TelemetryTransport=otlp-xray TransactionSearch={search} is "
                    f"{'accepted' if not verdict else 'refused'}, should be {'refused' if refused else 'accepted'}"
                )
    except (KeyError, ValueError, TypeError) as error:
        problems.append(f"Rules not understood: {error!r}")
    return problems + query_problems(root)


# --- Operations (issue 25): log queries, metrics, dashboard, alarms -------------------------------

LOG_QUERY_DIR = Path("deploy") / "queries" / "logs"
SERVICE = "apuntador-backend"
ALARM_ACTIONS = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def emitted_metrics(root):
    """The metric names the binary writes, read from src/telemetry/metrics.rs."""
    source = (root / "src" / "telemetry" / "metrics.rs").read_text()
    # Each is named beside the value it reports: ("Latency", &stats.latency), ("5xx",
    # stats.server_errors), ("ColdStart", counts.cold_starts).
    return set(re.findall(r'\("([A-Za-z0-9]+)",\s*&?(?:stats|counts)\.\w+\)', source))


def alarm_metric_names(alarm):
    """(namespace, metric name) pairs an alarm reads, the namespace as text (a Ref is a dict)."""
    props = alarm.get("Properties", {})
    holders = [props] + [m.get("MetricStat", {}).get("Metric", {}) for m in props.get("Metrics", []) or []]
    return {
        (str({"Ref": h["Namespace"]["Ref"]}) if isinstance(h.get("Namespace"), dict) else h.get("Namespace"), h.get("MetricName"))
        for h in holders
        if h.get("MetricName")
    }


def operations_problems(template, root):
    """Saved log queries = their files; the namespace reaches the function; every metric the
    binary writes is on the dashboard; the five alarms exist and notify AlarmTopicArn."""
    problems = []
    resources = template.get("Resources", {})
    files = {path.stem: path.read_text() for path in sorted((root / LOG_QUERY_DIR).glob("*.query"))}
    if not files:
        problems.append(f"no query in {LOG_QUERY_DIR}")
    by_file = {}
    for name, resource in resources.items():
        if resource.get("Type") != "AWS::Logs::QueryDefinition":
            continue
        props = substitute(resource.get("Properties", {}), pseudo_parameters({}))
        match = re.fullmatch(re.escape(STACK) + r"/logs/([a-z0-9-]+)", str(props.get("Name")))
        if not match:
            continue
        stem = match.group(1)
        if stem not in files:
            problems.append(f"{name} is named {props.get('Name')!r}, not <stack>/logs/<a file of {LOG_QUERY_DIR}>")
            continue
        by_file[stem] = name
        if "Condition" in resource:
            problems.append(f"{name} has a Condition; the log queries are always saved")
        if props.get("LogGroupNames") != [{"Ref": "FunctionLogGroup"}]:
            problems.append(f"{name} reads {props.get('LogGroupNames')}, not the function's log group")
        if props.get("QueryString") != files[stem]:
            problems.append(f"{name}'s QueryString differs from {LOG_QUERY_DIR}/{stem}.query")
    for stem in sorted(set(files) - set(by_file)):
        problems.append(f"no query definition for {LOG_QUERY_DIR}/{stem}.query")

    env = resources.get("BackendFunction", {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
    if env.get("POWERTOOLS_METRICS_NAMESPACE") != {"Ref": "MetricsNamespace"}:
        problems.append("the function's POWERTOOLS_METRICS_NAMESPACE is not the MetricsNamespace parameter")
    if env.get("OTEL_SERVICE_NAME") != SERVICE:
        problems.append(f"the function's OTEL_SERVICE_NAME is not {SERVICE}, the service the dashboard and alarms read")
    if "POWERTOOLS_METRICS_DISABLED" in env or "OTEL_METRICS_EXPORTER" in env:
        problems.append("the function turns its metrics off, which the dashboard and alarms read")

    dashboards = [r for r in resources.values() if r.get("Type") == "AWS::CloudWatch::Dashboard"]
    if len(dashboards) != 1:
        problems.append(f"{len(dashboards)} dashboards, not one")
    for dashboard in dashboards:
        body = substitute(dashboard.get("Properties", {}).get("DashboardBody"), pseudo_parameters({"MetricsNamespace": "Apuntador"}))
        try:
            widgets = json.loads(body)["widgets"]
        except (TypeError, ValueError, KeyError) as error:
            problems.append(f"the dashboard body is not dashboard JSON: {error}")
            continue
        text = json.dumps(widgets)
        for metric in sorted(emitted_metrics(root)):
            if f'"{metric}"' not in text and f'\\"{metric}\\"' not in text:
                problems.append(f"the dashboard shows no {metric}, which the binary writes")
        alarms_shown = [a for w in widgets if w.get("type") == "alarm" for a in w["properties"].get("alarms", [])]
        for name, resource in resources.items():
            if resource.get("Type") == "AWS::CloudWatch::Alarm" and f"${{{name}.Arn}}" not in alarms_shown:
                problems.append(f"the dashboard's alarm widget does not show {name}")

    alarms = {n: r for n, r in resources.items() if r.get("Type") == "AWS::CloudWatch::Alarm"}
    namespace = {"Ref": "MetricsNamespace"}
    ours = str(namespace)
    wanted = {
        "the 5xx rate": {(ours, "5xx"), (ours, "Requests")},
        "p99 latency": {(ours, "Latency")},
        "Lambda errors": {("AWS/Lambda", "Errors")},
        "Lambda throttles": {("AWS/Lambda", "Throttles")},
        "span export failures": {(ours, "SpanExportFailures")},
    }
    for what, metrics in wanted.items():
        found = [n for n, a in alarms.items() if alarm_metric_names(a) >= metrics]
        if not found:
            problems.append(f"no alarm on {what}")
    for name, alarm in alarms.items():
        props = alarm.get("Properties", {})
        for key in ("AlarmActions", "OKActions"):
            if props.get(key) != ALARM_ACTIONS:
                problems.append(f"{name}'s {key} is not AlarmTopicArn when set")
        if props.get("TreatMissingData") != "notBreaching":
            problems.append(f"{name} treats missing data (no traffic) as {props.get('TreatMissingData')}, not notBreaching")
        for dimension_holder in [props] + [m.get("MetricStat", {}).get("Metric", {}) for m in props.get("Metrics", []) or []]:
            if dimension_holder.get("Namespace") == namespace and [dict(d) for d in dimension_holder.get("Dimensions") or []] != [{"Name": "service", "Value": SERVICE}]:
                problems.append(f"{name} reads {dimension_holder.get('MetricName')} without the service={SERVICE} dimension")
        if ("Fn::Sub" not in str(props.get("ExtendedStatistic", "")) and props.get("MetricName") == "Latency"
                and props.get("ExtendedStatistic") != "p99"):
            problems.append(f"{name} alarms on {props.get('ExtendedStatistic') or props.get('Statistic')} latency, not p99")
    return problems


# --- Throttling (issue 26 item 4) -------------------------------------------------------------------

SENSITIVE = ({"Ref": "SensitiveThrottleRateLimit"}, {"Ref": "SensitiveThrottleBurstLimit"})
# Beside /oauth/*: each call issues a certificate or seals a token, or checks the operator's key.
SENSITIVE_ROUTES = (
    "POST /device/enroll",
    "POST /device/attest/challenge",
    "POST /device/attest/clear-cache",
)


def throttling_problems(template):
    """The public API throttles every route (ThrottleRateLimit/BurstLimit), and each OAuth route
    POST /device/enroll and POST /device/attest/challenge tighter (the Sensitive ones); every
    RouteSettings key is a route."""
    problems = []
    resources = template.get("Resources", {})
    api = resources.get("HttpApi", {}).get("Properties", {})
    default = api.get("DefaultRouteSettings", {})
    if (default.get("ThrottlingRateLimit"), default.get("ThrottlingBurstLimit")) != (
        {"Ref": "ThrottleRateLimit"}, {"Ref": "ThrottleBurstLimit"}
    ):
        problems.append("HttpApi's DefaultRouteSettings do not throttle with ThrottleRateLimit and ThrottleBurstLimit")
    routes = api.get("RouteSettings", {}) or {}
    events = resources.get("BackendFunction", {}).get("Properties", {}).get("Events", {})
    keys = {
        f"{e['Properties'].get('Method', '').upper()} {e['Properties'].get('Path')}"
        for e in events.values()
        if e.get("Type") == "HttpApi" and ref_name(e["Properties"].get("ApiId")) == "HttpApi"
    }
    for key in sorted(keys):
        path = key.split(" ", 1)[1]
        if path.startswith("/oauth/") or key in SENSITIVE_ROUTES:
            settings = routes.get(key, {})
            if (settings.get("ThrottlingRateLimit"), settings.get("ThrottlingBurstLimit")) != SENSITIVE:
                problems.append(f"no tighter throttling for {key} (SensitiveThrottleRateLimit, SensitiveThrottleBurstLimit)")
    for key in sorted(set(routes) - keys):
        problems.append(f"RouteSettings names {key}, which is no route of HttpApi")
    # The mutual-TLS device API (quick create): its $default stage through managed overrides.
    overrides = [
        r.get("Properties", {})
        for r in resources.values()
        if r.get("Type") == "AWS::ApiGatewayV2::ApiGatewayManagedOverrides"
        and ref_name(r.get("Properties", {}).get("ApiId")) == "DeviceApi"
    ]
    device_default = overrides[0].get("Stage", {}).get("DefaultRouteSettings", {}) if overrides else {}
    if (device_default.get("ThrottlingRateLimit"), device_default.get("ThrottlingBurstLimit")) != (
        {"Ref": "ThrottleRateLimit"}, {"Ref": "ThrottleBurstLimit"}
    ):
        problems.append("DeviceApi's $default stage is not throttled (ApiGatewayManagedOverrides with ThrottleRateLimit and ThrottleBurstLimit)")
    return problems


def id_table_problems(template, name, variable, actions, lost):
    """A table keyed by `id` alone with a time-to-live on `expires_at` (`lost` says what would
    stay for ever without it), named to the function by `variable`, on which the function may
    do exactly `actions`."""
    problems = []
    resources = template.get("Resources", {})
    table = resources.get(name, {}).get("Properties")
    if table is None:
        return [f"no {name}"]
    if table.get("KeySchema") != [{"AttributeName": "id", "KeyType": "HASH"}]:
        problems.append(f"{name}'s key is not `id` alone")
    ttl = table.get("TimeToLiveSpecification", {})
    if ttl.get("AttributeName") != "expires_at" or ttl.get("Enabled") is not True:
        problems.append(f"{name} has no time-to-live on expires_at: {lost} would stay for ever")
    function = resources.get("BackendFunction", {}).get("Properties", {})
    variables = function.get("Environment", {}).get("Variables", {})
    if ref_name(variables.get(variable)) != name:
        problems.append(f"{variable} does not name {name}")
    granted = []
    for policy in function.get("Policies", []):
        if not isinstance(policy, dict):
            continue
        for statement in policy.get("Statement", []):
            resource = statement.get("Resource")
            names = resource if isinstance(resource, list) else [resource]
            if any(isinstance(r, dict) and r.get("Fn::GetAtt", [None])[0] == name for r in names):
                found = statement.get("Action")
                granted += found if isinstance(found, list) else [found]
    if sorted(granted) != sorted(actions):
        problems.append(f"the function's actions on {name} are {sorted(granted)}, not {', '.join(sorted(actions))}")
    return problems


def single_use_problems(template):
    """The single-use table (src/single_use): key `id`, time-to-live on `expires_at`, named to the
    function by AWS_SINGLE_USE_TABLE, and the function may only PutItem on it; the attestation
    table (src/attestation/store): the same key and time-to-live (desktop attempt counters),
    AWS_ATTESTATION_TABLE, and GetItem, PutItem and UpdateItem only (no query, scan or delete)."""
    return id_table_problems(
        template, "SingleUseTable", "AWS_SINGLE_USE_TABLE", ["dynamodb:PutItem"], "used states"
    ) + id_table_problems(
        template, "AttestationTable", "AWS_ATTESTATION_TABLE",
        ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"], "attempt counters"
    )


KEY_VARIABLES = ["SECRET_KEY", "SECRET_KEY_PREVIOUS", "CONFIG_API_KEY"]
SAMPLE_KEYS_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:apuntador/keys-AbCdEf"


def keys_problems(template):
    """The backend's own keys (src/keys, issue 26 item 2): never in the function's environment
    (no NoEcho parameter copied there, SECRET_KEY, SECRET_KEY_PREVIOUS and CONFIG_API_KEY
    declared empty for sam local only); APP_KEYS_SECRET names the secret the stack creates
    (generating SECRET_KEY) or the one KeysSecretArn gives, and the function may read it; under
    Stage=local (sam local) it is empty."""
    problems = []
    resources = template.get("Resources", {})
    declared = template.get("Parameters", {})
    function = resources.get("BackendFunction", {}).get("Properties", {})
    raw_variables = function.get("Environment", {}).get("Variables", {})
    for name, value in raw_variables.items():
        text = json.dumps(value)
        for parameter, spec in declared.items():
            if spec.get("NoEcho") and (f'"Ref": "{parameter}"' in text or f"${{{parameter}}}" in text):
                problems.append(f"{name} carries the NoEcho parameter {parameter}: lambda:GetFunctionConfiguration shows it")
    for name in KEY_VARIABLES:
        if raw_variables.get(name, "") != "":
            problems.append(f"{name} is in the function's environment: it belongs in the keys secret")
    generated = resources.get("KeysSecret", {}).get("Properties", {}).get("GenerateSecretString", {})
    if generated.get("GenerateStringKey") != "SECRET_KEY" or int(generated.get("PasswordLength", 0)) < 32:
        problems.append("KeysSecret does not generate a SECRET_KEY of at least 32 characters")
    for overrides, expected in [
        ({"Stage": "production"}, {"Ref": "KeysSecret"}),
        ({"Stage": "production", "KeysSecretArn": SAMPLE_KEYS_ARN}, SAMPLE_KEYS_ARN),
        ({"Stage": "local"}, ""),
    ]:
        parameters = deploy_parameters(template, overrides)
        conditions = condition_values(template, parameters)
        created = "KeysSecret" in resources and conditions.get(resources["KeysSecret"].get("Condition"), True)
        if created != (expected == {"Ref": "KeysSecret"}) and overrides["Stage"] != "local":
            problems.append(f"with {overrides}: KeysSecret is {'created' if created else 'not created'}")
        resolved = substitute(resolve(function, conditions), parameters)
        named = resolved.get("Environment", {}).get("Variables", {}).get("APP_KEYS_SECRET")
        if named != expected:
            problems.append(f"with {overrides}: APP_KEYS_SECRET is {named!r}, not {expected!r}")
        if expected == "":
            continue
        readable = [
            p["AWSSecretsManagerGetSecretValuePolicy"].get("SecretArn")
            for p in resolved.get("Policies", [])
            if isinstance(p, dict) and "AWSSecretsManagerGetSecretValuePolicy" in p
        ]
        if expected not in readable:
            problems.append(f"with {overrides}: the function may not read the keys secret ({readable})")
    return problems


# Stage values a deploy must refuse: the backend reads ENVIRONMENT trimmed and in any case, so
# each of these is ENVIRONMENT=local to it. Only the first may pass the parameter's own
# constraints (sam local needs it; sam local evaluates no Rules), so a Rule must refuse it.
LOCAL_STAGES = ["local", "Local", "LOCAL", " local", "local "]
DEPLOYED_STAGES = ["production", "staging"]
# For parameters without a default: what a deploy would pass.
SAMPLE_VALUE = "sample-value-for-a-parameter-without-default-0123456789"


def deploy_parameters(template, overrides):
    """Every parameter's value for a deploy with `overrides` (the template's defaults otherwise)."""
    declared = template.get("Parameters", {})
    values = {name: str(p.get("Default", SAMPLE_VALUE)) for name, p in declared.items()}
    values.update(overrides)
    values.update({
        "AWS::Region": REGION, "AWS::Partition": "aws", "AWS::AccountId": "123456789012",
        "AWS::StackName": "apuntador-backend",
    })
    return values


def rule_value(node, parameters):
    """A Rules expression (a RuleCondition or an Assert) evaluated over `parameters`."""
    if isinstance(node, dict) and len(node) == 1:
        (key, arg), = node.items()
        if key == "Ref":
            return parameters[arg]
        if key == "Fn::Equals":
            return str(rule_value(arg[0], parameters)) == str(rule_value(arg[1], parameters))
        if key == "Fn::Not":
            return not rule_value(arg[0], parameters)
        if key == "Fn::And":
            return all(rule_value(a, parameters) for a in arg)
        if key == "Fn::Or":
            return any(rule_value(a, parameters) for a in arg)
        if key == "Fn::Contains":
            values, value = arg
            return str(rule_value(value, parameters)) in [str(v) for v in rule_value(values, parameters)]
        raise ValueError(f"rule function {key} not understood")
    if isinstance(node, list):
        return [rule_value(v, parameters) for v in node]
    return node


def constraint_refusals(template, parameters):
    """The parameters whose AllowedValues or AllowedPattern refuse their value."""
    refused = []
    for name, declared in template.get("Parameters", {}).items():
        value = parameters[name]
        allowed = declared.get("AllowedValues")
        if allowed is not None and value not in [str(v) for v in allowed]:
            refused.append(f"{name} AllowedValues")
        pattern = declared.get("AllowedPattern")
        if pattern is not None and not re.fullmatch(pattern, value):
            refused.append(f"{name} AllowedPattern")
    return refused


def rule_refusals(template, parameters):
    """"rule: AssertDescription" of every assertion that fails for `parameters`, as
    CloudFormation evaluates Rules on a create or update: a rule whose RuleCondition is false
    is skipped, every assertion of the others must hold."""
    refused = []
    for name, rule in (template.get("Rules") or {}).items():
        condition = rule.get("RuleCondition")
        if condition is not None and not rule_value(condition, parameters):
            continue
        for assertion in rule.get("Assertions", []):
            if not rule_value(assertion["Assert"], parameters):
                refused.append(f"{name}: {assertion.get('AssertDescription', '(no AssertDescription)')}")
    return refused


def samconfig_overrides(samconfig, section):
    """A samconfig.toml section's parameter_overrides as {name: value} (None: no such section)."""
    parameters = tomllib.loads(samconfig.read_text()).get("default", {}).get(section, {}).get("parameters")
    if parameters is None:
        return None
    return dict(item.split("=", 1) for item in shlex.split(parameters.get("parameter_overrides", "")))


def stage_problems(template, samconfig):
    """What is wrong with the way a deploy treats Stage=local (and the stages it must accept)."""
    problems = []
    try:
        for stage in LOCAL_STAGES:
            parameters = deploy_parameters(template, {"Stage": stage})
            constraints, rules = constraint_refusals(template, parameters), rule_refusals(template, parameters)
            if stage == "local":
                if constraints:
                    problems.append(
                        f"Stage=local is refused by {', '.join(constraints)}: sam local (samconfig.toml's "
                        "local sections) needs it; refuse it for deploys with a Rule"
                    )
                if not rules:
                    problems.append("no rule refuses Stage=local: a deploy with it would run with ENVIRONMENT=local")
            elif not (constraints or rules):
                problems.append(f"Stage={stage!r} is accepted, and the backend reads it as ENVIRONMENT=local")
        deploys = [(f"Stage={stage}", {"Stage": stage}) for stage in DEPLOYED_STAGES]
        deploy = samconfig_overrides(samconfig, "deploy") if samconfig.exists() else None
        if deploy is None:
            problems.append(f"{samconfig}: no [default.deploy.parameters] to check")
        else:
            deploys.append((f"samconfig.toml deploy ({' '.join(f'{k}={v}' for k, v in deploy.items())})", deploy))
        for label, overrides in deploys:
            parameters = deploy_parameters(template, overrides)
            refused = constraint_refusals(template, parameters) + rule_refusals(template, parameters)
            if refused:
                problems.append(f"{label} is refused: {'; '.join(refused)}")
    except (KeyError, ValueError, TypeError) as error:
        problems.append(f"Rules or parameters not understood: {error!r}")
    if samconfig.exists():
        for section in ("local_invoke", "local_start_api"):
            local = samconfig_overrides(samconfig, section) or {}
            if local.get("Stage") != "local":
                problems.append(f"samconfig.toml {section}: Stage={local.get('Stage')}, not local (sam local)")
    return problems


def ref_name(value):
    """The logical id a Ref or GetAtt names, else None."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return (target.split(".")[0] if isinstance(target, str) else target[0])
    return None


def report(header, problems, success):
    """The problems under `header` on stderr, or the one line `success` says."""
    if problems:
        print(f"{header}:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
    else:
        print(success)


def main(source):
    template, errors = decode(source)
    if errors:
        sys.exit(f"{source}: {errors}")
    conditions = {name: True for name in template.get("Conditions", {})}
    # The deployment under test: mutual-TLS domain set, every optional feature on.
    conditions.update(HasMtlsDomain=True)
    resources = {
        name: resolve(resource, conditions)
        for name, resource in template["Resources"].items()
        if conditions.get(resource.get("Condition"), True)
    }
    problems = []

    def api_properties(name):
        return resources.get(name, {}).get("Properties", {})

    def mtls_domains_of(api):
        """Names of mutual-TLS domains attached to `api` (SAM Domain or ApiMapping)."""
        found = []
        domain = api_properties(api).get("Domain", {})
        if domain.get("MutualTlsAuthentication"):
            found.append(f"{api}.Domain")
        for name, resource in resources.items():
            if resource["Type"] == "AWS::ApiGatewayV2::ApiMapping":
                props = resource["Properties"]
                target = resources.get(ref_name(props.get("DomainName")), {})
                if ref_name(props.get("ApiId")) == api and target.get("Properties", {}).get(
                    "MutualTlsAuthentication"
                ):
                    found.append(ref_name(props.get("DomainName")))
        return found

    function = resources["BackendFunction"]["Properties"]
    events = function.get("Events", {})
    for method, path in OPEN_ROUTES:
        serving = [
            e for e in events.values()
            if e["Type"] == "HttpApi"
            and e["Properties"].get("Path") == path
            and e["Properties"].get("Method", "").upper() == method
        ]
        if not serving:
            problems.append(f"{method} {path}: no HttpApi event serves it")
        for event in serving:
            api = ref_name(event["Properties"].get("ApiId")) or "ServerlessHttpApi"
            if api_properties(api).get("DisableExecuteApiEndpoint") is True:
                problems.append(f"{method} {path}: {api} has its default endpoint disabled")
            if mtls_domains_of(api):
                problems.append(
                    f"{method} {path}: {api} is behind mutual TLS ({', '.join(mtls_domains_of(api))})"
                )

    mtls_apis = [
        name
        for name, resource in resources.items()
        if resource["Type"] in ("AWS::ApiGatewayV2::Api", "AWS::Serverless::HttpApi")
        and mtls_domains_of(name)
    ]
    if not mtls_apis:
        problems.append("no API sits behind the mutual-TLS domain")
    for api in mtls_apis:
        props = api_properties(api)
        if props.get("DisableExecuteApiEndpoint") is not True:
            problems.append(f"{api}: the default endpoint would skip the mutual-TLS handshake")
        reaches_function = ref_name(props.get("Target")) == "BackendFunction" or any(
            ref_name(e["Properties"].get("ApiId")) == api for e in events.values()
        )
        if not reaches_function:
            problems.append(f"{api}: does not reach BackendFunction")
        permitted = any(
            r["Type"] == "AWS::Lambda::Permission"
            and ref_name(r["Properties"].get("FunctionName")) == "BackendFunction"
            and api in str(r["Properties"].get("SourceArn"))
            for r in resources.values()
        )
        if ref_name(props.get("Target")) == "BackendFunction" and not permitted:
            problems.append(f"{api}: API Gateway may not invoke BackendFunction")

    api_url = str(template.get("Outputs", {}).get("ApiUrl", {}).get("Value"))
    open_apis = {
        ref_name(e["Properties"].get("ApiId"))
        for e in events.values()
        if e["Type"] == "HttpApi" and e["Properties"].get("Path") == "/health"
    }
    if not any(f"${{{api}}}.execute-api" in api_url for api in open_apis):
        problems.append(f"ApiUrl ({api_url}) is not the open API's endpoint")

    telemetry = telemetry_problems(template)
    search = transaction_search_problems(template, Path(source).resolve().parent)
    stage = stage_problems(template, Path(source).resolve().parent / "samconfig.toml")
    operations = operations_problems(template, Path(source).resolve().parent)
    throttling = throttling_problems(template)
    single_use = single_use_problems(template)
    keys = keys_problems(template)
    if problems:
        print("template.yaml with CustomDomainName set:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
    else:
        print("template.yaml: open routes stay reachable; mutual TLS guards only the device API")
    default = ".".join(map(str, DEFAULT_COLLECTOR))
    report(f"{source} telemetry transports", telemetry, (
        f"{source}: collector attaches collector {default} for the architecture or the pinned "
        "CollectorLayerArn (otlp), configured with layer components only (otlphttp + sigv4auth to "
        f"{XRAY_OTLP_ENDPOINT}, or awsxray); otlp-udp (otlp-udp), otlp-xray (otlp signed to that "
        "endpoint), daemon (xray) and none attach no layer; Tracing is Active; X-Ray permissions "
        f"from {XRAY_POLICY} only"
    ))
    report(f"{source} Transaction Search and span queries", search, (
        f"{source}: TransactionSearch=enable alone creates TransactionSearchConfig (after the aws/spans "
        "resource policy, AWS's document); enable and already-enabled save every query of "
        f"{QUERY_DIR} over aws/spans, text identical; off creates none; otlp-xray needs it; each "
        "query's span fields are its README fields line"
    ))
    report(f"{source} Stage=local in a deployed stack", stage, (
        f"{source}: a deploy with Stage=local (or {', '.join(repr(s) for s in LOCAL_STAGES[1:])}) is refused; "
        f"{', '.join(DEPLOYED_STAGES)} and samconfig.toml's deploy parameters are accepted; "
        "its local sections keep Stage=local for sam local"
    ))
    report(f"{source} operations", operations, (
        f"{source}: every query of {LOG_QUERY_DIR} saved over the function's log group, text "
        "identical; the metrics namespace reaches the function; every metric the binary writes is "
        "on the dashboard; alarms on the 5xx rate, p99 latency, Lambda errors and throttles and "
        "span export failures notify AlarmTopicArn when set"
    ))
    report(f"{source} throttling", throttling, (
        f"{source}: the public API throttles every route, and the OAuth routes, POST "
        "/device/enroll, POST /device/attest/challenge and POST /device/attest/clear-cache "
        "tighter; every RouteSettings key is a route; the device API is throttled"
    ))
    report(f"{source} single-use and attestation tables", single_use, (
        f"{source}: SingleUseTable and AttestationTable have key id and a time-to-live on "
        "expires_at; the function may only PutItem on the first, GetItem, PutItem and UpdateItem "
        "on the second"
    ))
    report(f"{source} keys", keys, (
        f"{source}: no key in the function's environment; APP_KEYS_SECRET names KeysSecret "
        "(generated SECRET_KEY) or KeysSecretArn, which the function may read; empty under sam local"
    ))
    if problems or telemetry or search or stage or operations or throttling or single_use or keys:
        sys.exit(1)


def _replace(old, new):
    def apply(text):
        if old not in text:
            raise SystemExit(f"self-test: {old!r} not found")
        return text.replace(old, new, 1)
    return apply


# Deliberately broken copies of template.yaml: (what, change, what the failure must name).
STAGE_RULE = "  DeployedStackIsNotLocal:\n"
BREAKAGES = [
    ("the Stage rule removed", lambda text: re.sub(r"  DeployedStackIsNotLocal:\n(    .*\n)*", "", text),
     "no rule refuses Stage=local"),
    ("the Stage assertion inverted (refuses every stage but local)",
     _replace("Assert: !Not [!Equals [!Ref Stage, local]]", "Assert: !Equals [!Ref Stage, local]"),
     "Stage=production is refused"),
    ("the Stage rule under a RuleCondition that never holds",
     _replace(STAGE_RULE, STAGE_RULE + "    RuleCondition: !Equals [!Ref Stage, never]\n"),
     "no rule refuses Stage=local"),
    ("Stage's AllowedPattern accepting upper case",
     _replace("AllowedPattern: ^[a-z0-9][a-z0-9-]*$", "AllowedPattern: ^[A-Za-z0-9][A-Za-z0-9-]*$"),
     "Stage='LOCAL' is accepted"),
    # Issue 24: the transports, the layer's components, Transaction Search, the span queries.
    ("CollectorExporter=auto sending to the OTLP endpoint while Transaction Search is off",
     _replace("""      - !Equals [!Ref CollectorExporter, auto]
      - !Equals [!Ref TransactionSearch, "off"]""", """      - !Equals [!Ref CollectorExporter, auto]
      - !Equals [!Ref TransactionSearch, never]"""),
     "TelemetryTransport=collector Architecture=arm64: traces pipeline"),
    ("a batch processor in the layer's configuration (the layer has none)",
     _replace('"service":{"extensions":["sigv4auth"],"pipelines":{"traces":{"receivers":["otlp"],',
              '"processors":{"batch":{}},"service":{"extensions":["sigv4auth"],"pipelines":{"traces":'
              '{"receivers":["otlp"],"processors":["batch"],'),
     "is not in the pinned layer's build"),
    ("the layer's otlphttp sent to us-east-1",
     _replace('"traces_endpoint":"https://xray.${AWS::Region}.', '"traces_endpoint":"https://xray.us-east-1.'),
     "otlphttp traces_endpoint"),
    ("the layer's otlphttp without its sigv4auth authenticator",
     _replace(',"auth":{"authenticator":"sigv4auth"}}}', "}}"),
     "not authenticated by a configured sigv4auth"),
    ("otlp-xray's traces endpoint set for every transport",
     _replace("""          OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: !If
            - UseOtlpXray
            - !Sub https://xray.${AWS::Region}.amazonaws.com/v1/traces
            - !Ref AWS::NoValue""", """          OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: !Sub https://xray.${AWS::Region}.amazonaws.com/v1/traces"""),
     "TelemetryTransport=collector Architecture=arm64: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="),
    ("otlp-xray sending to the collector layer (no traces endpoint)",
     _replace("            - !Sub https://xray.${AWS::Region}.amazonaws.com/v1/traces\n", "            - http://localhost:4318/v1/traces\n"),
     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://localhost:4318/v1/traces"),
    ("an inline statement granting xray:PutSpans",
     _replace("""            - Effect: Allow
              Action:
                - dynamodb:GetItem""", """            - Effect: Allow
              Action: xray:PutSpans
              Resource: "*"
            - Effect: Allow
              Action:
                - dynamodb:GetItem"""),
     "inline statement grants xray:PutSpans"),
    ("the single-use table without its time-to-live",
     _replace("""      TimeToLiveSpecification:
        AttributeName: expires_at
        Enabled: true
""", ""),
     "SingleUseTable has no time-to-live on expires_at"),
    ("the function allowed to delete single-use records",
     _replace("              Action: dynamodb:PutItem\n              Resource: !GetAtt SingleUseTable.Arn",
              "              Action: [dynamodb:PutItem, dynamodb:DeleteItem]\n              Resource: !GetAtt SingleUseTable.Arn"),
     "actions on SingleUseTable are ['dynamodb:DeleteItem', 'dynamodb:PutItem']"),
    ("the attestation table without its time-to-live (attempt counters kept for ever)",
     lambda text: re.sub(
         r"(  AttestationTable:\n(?:(?:    .*)?\n)*?)      TimeToLiveSpecification:\n.*\n.*\n",
         r"\1", text, count=1),
     "AttestationTable has no time-to-live on expires_at"),
    ("the function allowed to scan the attestation table",
     _replace("                - dynamodb:UpdateItem\n              Resource: !GetAtt AttestationTable.Arn",
              "                - dynamodb:UpdateItem\n                - dynamodb:Scan\n              Resource: !GetAtt AttestationTable.Arn"),
     "actions on AttestationTable are ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Scan', 'dynamodb:UpdateItem']"),
    ("the function not told the attestation table",
     _replace("          AWS_ATTESTATION_TABLE: !Ref AttestationTable\n", ""),
     "AWS_ATTESTATION_TABLE does not name AttestationTable"),
    ("clear-cache throttled like any route",
     _replace("""        "POST /device/attest/clear-cache":
          ThrottlingRateLimit: !Ref SensitiveThrottleRateLimit
          ThrottlingBurstLimit: !Ref SensitiveThrottleBurstLimit
""", ""),
     "no tighter throttling for POST /device/attest/clear-cache"),
    ("SECRET_KEY copied into the function's environment again",
     _replace('          SECRET_KEY: ""\n', "          SECRET_KEY: !Ref KeysSecretArn\n"),
     "SECRET_KEY is in the function's environment"),
    ("the function not allowed to read the keys secret",
     _replace("""        - AWSSecretsManagerGetSecretValuePolicy:
            SecretArn: !If [CreateKeysSecret, !Ref KeysSecret, !Ref KeysSecretArn]
""", ""),
     "may not read the keys secret"),
    ("APP_KEYS_SECRET set under sam local",
     _replace("""          APP_KEYS_SECRET: !If
            - IsLocalStage
            - ""
""", """          APP_KEYS_SECRET: !If
            - IsLocalStage
            - !Ref KeysSecret
"""),
     "APP_KEYS_SECRET is {'Ref': 'KeysSecret'}, not ''"),
    ("TransactionSearchConfig created whatever TransactionSearch says",
     _replace("    Type: AWS::XRay::TransactionSearchConfig\n    Condition: OwnsTransactionSearch\n",
              "    Type: AWS::XRay::TransactionSearchConfig\n"),
     "TransactionSearch=off: TransactionSearchConfig exists"),
    ("TransactionSearchConfig without DependsOn on the resource policy",
     _replace("    DependsOn: TransactionSearchLogsPolicy\n", ""),
     "has no DependsOn on the resource policy"),
    ("the resource policy without /aws/application-signals/data",
     _replace(',\n        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/application-signals/data:*"', ""),
     "resource policy Resource is"),
    ("a saved query that differs from its file",
     _replace("        | sort p99_ms desc\n        | limit 50\n", "        | sort p99_ms desc\n        | limit 20\n"),
     "QueryString differs from deploy/queries/spans/slowest-operations.query"),
    ("the span queries saved with TransactionSearch=off",
     lambda text: text.replace("    Condition: HasTransactionSearch\n", ""),
     "TransactionSearch=off: query definitions"),
    # Issue 25: log queries, metrics, dashboard, alarms.
    ("a saved log query that differs from its file",
     _replace("        | sort p99_ms desc\n        | limit 50\n\n  LogsErrorsQuery:", "        | sort p99_ms desc\n        | limit 10\n\n  LogsErrorsQuery:"),
     "LogsSlowestRoutesQuery's QueryString differs from deploy/queries/logs/slowest-routes.query"),
    ("the dashboard without the span drops",
     _replace('[["${MetricsNamespace}","SpansDropped","service","apuntador-backend",{"label":"spans dropped"}],[".","SpanExportFailures"',
              '[["${MetricsNamespace}","SpanExportFailures"'),
     "the dashboard shows no SpansDropped"),
    ("an alarm that notifies nobody",
     _replace("      TreatMissingData: notBreaching\n      AlarmActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]\n      OKActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]\n\n  FunctionThrottlesAlarm:",
              "      TreatMissingData: notBreaching\n\n  FunctionThrottlesAlarm:"),
     "FunctionErrorsAlarm's AlarmActions is not AlarmTopicArn"),
    ("the throttles alarm gone",
     lambda text: re.sub(r"  FunctionThrottlesAlarm:\n(    .*\n|\n(?=    ))*", "", text).replace(',"${FunctionThrottlesAlarm.Arn}"', ""),
     "no alarm on Lambda throttles"),
    ("the metrics namespace not passed to the function",
     _replace("          POWERTOOLS_METRICS_NAMESPACE: !Ref MetricsNamespace\n", ""),
     "POWERTOOLS_METRICS_NAMESPACE is not the MetricsNamespace parameter"),
    # Issue 26: throttling.
    ("the token route without its tighter throttling",
     _replace('        "POST /oauth/token/{provider}":\n          ThrottlingRateLimit: !Ref SensitiveThrottleRateLimit\n          ThrottlingBurstLimit: !Ref SensitiveThrottleBurstLimit\n', ""),
     "no tighter throttling for POST /oauth/token/{provider}"),
    ("a RouteSettings key that is no route",
     _replace('"POST /device/enroll":', '"POST /device/enrol":'),
     "RouteSettings names POST /device/enrol"),
    ("the device API without throttling",
     lambda text: re.sub(r"  DeviceApiThrottling:\n(    .*\n)*", "", text),
     "DeviceApi's $default stage is not throttled"),
    ("the otlp-xray rule removed",
     lambda text: re.sub(r"  OtlpXrayNeedsTransactionSearch:\n(    .*\n)*", "", text),
     "TelemetryTransport=otlp-xray TransactionSearch=off is accepted"),
]
# Broken copies of deploy/queries/spans/README.md: (what, change, what the failure must name).
README_BREAKAGES = [
    ("a field the errors query reads left out of its fields line",
     _replace("attributes.error.type, traceId, spanId, kind, name,", "traceId, spanId, kind, name,"),
     "errors.query reads ['attributes.error.type']"),
]


def self_test():
    repo = Path(__file__).resolve().parent.parent
    failures = 0
    cases = [(None, None, None, "template.yaml")] + [(*b, "template.yaml") for b in BREAKAGES]
    cases += [(*b, str(QUERY_DIR / "README.md")) for b in README_BREAKAGES]
    with tempfile.TemporaryDirectory() as scratch:
        for index, (label, change, expected, target) in enumerate(cases):
            copy = Path(scratch) / f"copy-{index}"
            copy.mkdir()
            (copy / "template.yaml").write_text((repo / "template.yaml").read_text())
            (copy / "samconfig.toml").write_text((repo / "samconfig.toml").read_text())
            shutil.copytree(repo / QUERY_DIR, copy / QUERY_DIR)
            shutil.copytree(repo / LOG_QUERY_DIR, copy / LOG_QUERY_DIR)
            (copy / "src" / "telemetry").mkdir(parents=True)
            shutil.copy(repo / "src" / "telemetry" / "metrics.rs", copy / "src" / "telemetry" / "metrics.rs")
            text = (repo / target).read_text()
            if change:
                (copy / target).write_text(change(text))
            result = subprocess.run(
                [sys.executable, __file__, str(copy / "template.yaml")], capture_output=True, text=True, timeout=120
            )
            if label is None:
                good = result.returncode == 0
                print(f"{'ok' if good else 'FAIL':5} self-test: the unmodified copy passes")
            else:
                if change(text) == text:
                    raise SystemExit(f"self-test: {label}: the change did not alter {target}")
                good = result.returncode != 0 and expected in result.stderr
                print(f"{'ok' if good else 'FAIL':5} self-test: {label} → exit {result.returncode}")
                for line in result.stderr.splitlines():
                    if line.startswith("  - "):
                        print(f"        {line.strip()}")
            failures += not good
    print(f"self-test: {len(cases) - failures} of {len(cases)} as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml")

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

For each TelemetryTransport, on arm64 and x86_64 (conditions computed from the parameter values,
as CloudFormation would), it resolves the function's Layers and OTEL_TRACES_EXPORTER:

  * collector with CollectorLayerArn empty: exactly one layer, the ADOT collector release
    DEFAULT_COLLECTOR for the architecture (arm64 / amd64 in its name), never one of the releases
    before OLDEST_SAFE_COLLECTOR (known CVEs); OTEL_TRACES_EXPORTER=otlp;
  * collector with CollectorLayerArn set: exactly that ARN; otlp;
  * otlp-udp: no layer; otlp-udp;
  * daemon: no layer; xray;
  * none: no layer; none;
  * Tracing: Active for every transport, and CollectorLayerArn's AllowedPattern accepts "" and
    a layer version ARN but not a layer ARN without its version.

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
                 accepting upper case) and fail unless the check above catches every one
"""

import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from cfnlint.decode import decode

OPEN_ROUTES = [
    ("GET", "/health"),
    ("POST", "/device/enroll"),
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
EXAMPLE_LAYER_ARN = "arn:aws:lambda:eu-west-1:123456789012:layer:example-collector:7"
# (parameter overrides, expected layers (None: the default collector), OTEL_TRACES_EXPORTER)
TRANSPORTS = [
    ({"TelemetryTransport": "collector"}, None, "otlp"),
    (
        {"TelemetryTransport": "collector", "CollectorLayerArn": EXAMPLE_LAYER_ARN},
        [EXAMPLE_LAYER_ARN],
        "otlp",
    ),
    ({"TelemetryTransport": "otlp-udp"}, [], "otlp-udp"),
    ({"TelemetryTransport": "daemon"}, [], "xray"),
    ({"TelemetryTransport": "none"}, [], "none"),
]
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


def telemetry_problems(template):
    """What is wrong with each TelemetryTransport's layers, exporter and tracing mode."""
    declared = template.get("Parameters", {})
    defaults = {name: str(p.get("Default", "")) for name, p in declared.items()}
    problems = []
    for name in ("TelemetryTransport", "CollectorLayerArn"):
        if name not in declared:
            problems.append(f"no parameter {name}")
    pattern = declared.get("CollectorLayerArn", {}).get("AllowedPattern")
    if pattern is not None:
        unversioned = EXAMPLE_LAYER_ARN.rsplit(":", 1)[0]
        for value, allowed in (("", True), (EXAMPLE_LAYER_ARN, True), (unversioned, False)):
            if bool(re.fullmatch(pattern, value)) != allowed:
                verdict = "refuses" if allowed else "accepts"
                problems.append(f"CollectorLayerArn's AllowedPattern {verdict} {value!r}")
    for overrides, expected_layers, expected_exporter in TRANSPORTS:
        for arch in LAYER_ARCH:
            parameters = dict(defaults, **overrides, Architecture=arch)
            parameters.update({"AWS::Region": REGION, "AWS::Partition": "aws"})
            label = " ".join(f"{k}={v}" for k, v in dict(overrides, Architecture=arch).items())
            conditions = condition_values(template, parameters)
            function = substitute(
                resolve(template["Resources"]["BackendFunction"], conditions), parameters
            )["Properties"]
            layers = function.get("Layers", [])
            variables = function.get("Environment", {}).get("Variables", {})
            exporter = variables.get("OTEL_TRACES_EXPORTER")
            if function.get("Tracing") != "Active":
                problems.append(f"{label}: Tracing is {function.get('Tracing')!r}, not Active")
            if exporter != expected_exporter:
                problems.append(
                    f"{label}: OTEL_TRACES_EXPORTER={exporter}, not {expected_exporter}"
                )
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


# Stage values a deploy must refuse: the backend reads ENVIRONMENT trimmed and in any case, so
# each of these is ENVIRONMENT=local to it. Only the first may pass the parameter's own
# constraints (sam local needs it; sam local evaluates no Rules), so a Rule must refuse it.
LOCAL_STAGES = ["local", "Local", "LOCAL", " local", "local "]
DEPLOYED_STAGES = ["production", "staging"]
# For parameters without a default (SecretKey): what a deploy would pass.
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
    stage = stage_problems(template, Path(source).resolve().parent / "samconfig.toml")
    if problems:
        print("template.yaml with CustomDomainName set:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
    else:
        print("template.yaml: open routes stay reachable; mutual TLS guards only the device API")
    if telemetry:
        print(f"{source} telemetry transports:", file=sys.stderr)
        for problem in telemetry:
            print(f"  - {problem}", file=sys.stderr)
    else:
        default = ".".join(map(str, DEFAULT_COLLECTOR))
        print(
            f"{source}: collector attaches collector {default} for the architecture or the pinned "
            "CollectorLayerArn (otlp); otlp-udp (otlp-udp), daemon (xray) and none attach no layer; Tracing is Active"
        )
    if stage:
        print(f"{source} Stage=local in a deployed stack:", file=sys.stderr)
        for problem in stage:
            print(f"  - {problem}", file=sys.stderr)
    else:
        print(
            f"{source}: a deploy with Stage=local (or {', '.join(repr(s) for s in LOCAL_STAGES[1:])}) is refused; "
            f"{', '.join(DEPLOYED_STAGES)} and samconfig.toml's deploy parameters are accepted; "
            "its local sections keep Stage=local for sam local"
        )
    if problems or telemetry or stage:
        sys.exit(1)


def _replace(old, new):
    def apply(text):
        if old not in text:
            raise SystemExit(f"self-test: {old!r} not found in template.yaml")
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
]


def self_test():
    repo = Path(__file__).resolve().parent.parent
    failures = 0
    with tempfile.TemporaryDirectory() as scratch:
        for index, (label, change, expected) in enumerate([(None, None, None)] + BREAKAGES):
            copy = Path(scratch) / f"copy-{index}"
            copy.mkdir()
            text = (repo / "template.yaml").read_text()
            (copy / "template.yaml").write_text(change(text) if change else text)
            (copy / "samconfig.toml").write_text((repo / "samconfig.toml").read_text())
            result = subprocess.run(
                [sys.executable, __file__, str(copy / "template.yaml")], capture_output=True, text=True, timeout=120
            )
            if label is None:
                good = result.returncode == 0
                print(f"{'ok' if good else 'FAIL':5} self-test: the unmodified copy passes")
            else:
                if change(text) == text:
                    raise SystemExit(f"self-test: {label}: the change did not alter template.yaml")
                good = result.returncode != 0 and expected in result.stderr
                print(f"{'ok' if good else 'FAIL':5} self-test: {label} → exit {result.returncode}")
                for line in result.stderr.splitlines():
                    if line.startswith("  - "):
                        print(f"        {line.strip()}")
            failures += not good
    print(f"self-test: {len(BREAKAGES) + 1 - failures} of {len(BREAKAGES) + 1} as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml")

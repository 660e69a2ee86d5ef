#!/usr/bin/env python3
"""Checks the ECS/Fargate deployment kit in deploy/ecs/ (issue 17) without an AWS account.

  * Terraform (deploy/ecs/terraform/*.tf), parsed with python-hcl2:
      - IAM, least privilege, by walking every aws_iam_policy_document statement (dynamic ones
        included): no "*" resource except in statements whose actions all lack a resource type
        (the X-Ray write and sampling actions, ecr:GetAuthorizationToken); no other wildcard in
        a resource but the log streams of a named log group; no wildcard action, no NotAction /
        NotResource; DynamoDB only GetItem / PutItem / UpdateItem / ConditionCheckItem (never
        Scan or DeleteItem) and only on the certificate table; Secrets Manager only on
        <prefix>/ca-private-key-?????? and <prefix>/ca-certificate-?????? or on a variable
        whose validation demands a full secret ARN; no managed policy attached; both roles
        assumable by ecs-tasks.amazonaws.com only;
      - the target group (ip, port 8000, health check GET /health answering 200), the service
        (Fargate, circuit breaker with rollback, load balancer to backend:8000, no public IP),
        the cluster (container insights), the listener rule's mutual-TLS precondition;
      - conditions evaluated in Python (HclExpression), not grepped: the service's precondition
        that the tasks' security groups admit TCP 8000 only from the listener's load balancer's
        groups, on sample rules as the provider's data sources return them
        (SECURITY_GROUP_CASES); collector_image's validation (refuses latest and untagged) and
        its check block (warns unless pinned by digest) on COLLECTOR_IMAGE_CASES;
      - the certificate table mirrors template.yaml's CertificateTable (keys, attributes,
        ExpirationIndex, time-to-live on purge_at, point-in-time recovery, encryption);
      - by telemetry_transport, collector_exporter and transaction_search (dynamic statements
        expanded, issue 24; collector_exporter = auto, the default, is awsxray while
        transaction_search is off and otlp-xray with enable or already-enabled, as template.yaml's
        CollectorExportsAwsxray): the task role's X-Ray actions are TASK_XRAY_ACTIONS exactly
        (xray:PutTraceSegments for spans, the sampling reads only with the sidecar,
        PutTelemetryRecords only when the sidecar exports with awsxray) and the execution role
        reads the collector's parameter and log group only with the sidecar, whose parameter
        and log group exist only then; the parameter's value and description evaluated for
        every pair: collector.awsxray.yaml when the sidecar exports with awsxray, else
        collector.yaml; collector_exporter's default and validation;
      - transaction_search: the aws/spans resource policy (AWS's document), the trace segment
        destination and the Default indexing rule exist only with enable, in that order; one
        aws_cloudwatch_query_definition per file of deploy/queries/spans, read with file(),
        with enable and already-enabled; the provider version that has the X-Ray resources;
      - the log queries (issue 25): one aws_cloudwatch_query_definition over the backend's log
        group per file of deploy/queries/logs but the Lambda-only cold-starts, read with file();
        metrics_namespace defaults to Apuntador and reaches the backend as
        POWERTOOLS_METRICS_NAMESPACE (its Embedded Metric Format lines go out through awslogs);
  * the task definitions, one per telemetry_transport: deploy/ecs/task-definition.json
    (collector) and task-definition.otlp-xray.json, each equal to container-definitions.json.tftpl
    rendered (its %{ if } directives included) with the values Terraform would pass for that
    transport (its variables' defaults, the backend environment evaluated from main.tf's locals)
    and with the JSON's placeholders; collector: the two containers, dependsOn HEALTHY, a
    collector image pinned by digest, the explicit non-root users (the backend's 65532, the
    collector image's own 4317), OTLP to the sidecar and centralized sampling; otlp-xray: the
    backend alone, no dependsOn, a traces endpoint of X-Ray's form and a trace-id ratio; both:
    health checks, a stopTimeout, read-only root file systems, no privileged mode;
  * deploy/ecs/collector.yaml (otlphttp + sigv4auth to X-Ray's OTLP endpoint of
    ${env:AWS_REGION}, batches under the endpoint's limit), collector.awsxray.yaml (awsxray;
    both stored in the SSM parameter: under 4 KB) and collector.local.yaml (debug): OTLP in,
    batch, health_check, awsproxy for the ECS ones, and only components the pinned image's
    build contains (COLLECTOR_COMPONENTS); compose.yaml: the backend's health check,
    depends_on service_healthy, the task's collector image (by digest), the same users;
  * deploy/ecs/check-forged-header.sh, run against loopback stand-ins for the API (401 → exit
    0; 403, 200, a 401 not from the backend → exit 1), and what it sends checked;
  * checkov: `checkov -d deploy/ecs/terraform --quiet --compact` must be clean (each skip is a
    #checkov:skip=CKV_…:reason comment in the .tf, listed here), and a second run over the
    rendered container definitions of both transports (checkov does not evaluate
    templatefile(), so without it its container checks pass vacuously);
  * the ECS API model: both task definitions registered with moto's ECS (mock_aws, in process,
    botocore validating the request against the ECS service model) must be accepted and echo
    the containers, health checks and dependencies.

Prints one line per check ("ok" / "FAIL") and exits 1 on any failure. Run with the test tools'
Python (python-hcl2, cfn-lint, moto): ~/.cache/apuntador-backend/venv/bin/python
scripts/check-ecs.py. checkov lives in a virtualenv of its own (it pins boto3 1.35 and ships
another `hcl2` module, either of which would break the test tools): $CHECKOV, else
$APUNTADOR_CACHE/venv-checkov/bin/checkov, created from scripts/requirements-checkov.txt when
missing or outdated.

  --skip checkov,moto    leave those parts out
  --root DIR             check another copy of the repository (DIR/deploy/ecs, DIR/template.yaml)
  --self-test            break copies of the kit on purpose ("*" resource, a missing health
                         check, dependsOn START, the collector as root or by tag only, the
                         security-group precondition weakened, sampling actions without the
                         sidecar, auto with transaction_search off storing collector.yaml
                         (otlphttp) or without PutTelemetryRecords, collector_exporter's
                         default back on otlp-xray, an unsigned or fixed-region otlphttp, span
                         queries with transaction_search off, …) and fail unless the static
                         checks catch every one
"""

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# IAM actions without a resource type: the only ones that may (must) have Resource "*".
NO_RESOURCE_TYPE = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "xray:GetSamplingStatisticSummaries",
    "ecr:GetAuthorizationToken",
}
# What the certificate store may do (TransactWriteItems is authorised as its item actions).
DYNAMODB_ALLOWED = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"}
# Wildcards allowed inside a resource: a named log group's streams, a named table's indexes.
SCOPED_WILDCARDS = [
    re.compile(r"^\$\{aws_cloudwatch_log_group\.\w+(\[0\])?\.arn\}:\*$"),
    re.compile(r"^\$\{aws_dynamodb_table\.\w+\.arn\}/index/\*$"),
]
CA_SECRET = re.compile(
    r"^arn:\$\{local\.partition\}:secretsmanager:\$\{var\.region\}:\$\{local\.account_id\}:secret:"
    r"\$\{var\.secrets_prefix\}/ca-(private-key|certificate)-\?{6}$"
)
# The collector image the kit runs by default: pinned by digest (a tag can be moved to other
# content; the collector holds the task role's credentials), the release tag kept for readers.
PINNED_COLLECTOR = re.compile(
    r"^public\.ecr\.aws/aws-observability/aws-otel-collector(:v\d+\.\d+\.\d+)?@sha256:[0-9a-f]{64}$"
)
# Image references collector_image's validation and its digest check are tried on:
# (value, validation accepts it, the check block is satisfied (no warning)).
COLLECTOR_IMAGE_CASES = [
    ("public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0", True, False),
    ("public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0@sha256:" + "0" * 64, True, True),
    ("public.ecr.aws/aws-observability/aws-otel-collector@sha256:" + "0" * 64, True, True),
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror/aws-otel-collector:v0.49.0", True, False),
    ("public.ecr.aws/aws-observability/aws-otel-collector:latest", False, False),
    ("public.ecr.aws/aws-observability/aws-otel-collector", False, False),
    ("public.ecr.aws/aws-observability/aws-otel-collector@sha256:1234", False, False),
]
# The users the containers run as: the backend image's (Dockerfile: 65532), and the ADOT
# collector image's own non-root user, aoc, uid and gid 4317 (aws-observability/aws-otel-collector,
# cmd/awscollector/Dockerfile, USER_UID=4317, since v0.35.0). Explicit, so neither runs as root
# if an image's USER changed.
BACKEND_USER = "65532:65532"
COLLECTOR_USER = "4317:4317"
CHECKOV_SKIP = re.compile(r"#\s*checkov:skip=(CKV2?_[A-Z0-9_]+)(?::(.*))?")

# The task definitions, one per telemetry_transport: the JSON mirror of each.
MODES = {"collector": "task-definition.json", "otlp-xray": "task-definition.otlp-xray.json"}
# Each transport's tracing variables (None: absent). collector: OTLP to the sidecar, X-Ray's
# centralized sampling through its awsproxy. otlp-xray: a traces endpoint of X-Ray's form (the
# JSON's REGION placeholder for the region), which turns SigV4 signing on; a trace-id ratio.
TRACING_ENV = {
    "collector": {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": None,
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": None,
        "OTEL_TRACES_SAMPLER": "xray",
        "OTEL_TRACES_SAMPLER_ARG": "endpoint=http://127.0.0.1:2000",
    },
    "otlp-xray": {
        "OTEL_EXPORTER_OTLP_ENDPOINT": None,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://xray.REGION.amazonaws.com/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1",
    },
}
# collector_exporter's values, each tried under every transaction_search value: auto is awsxray
# while Transaction Search is off (X-Ray's OTLP endpoint refuses spans then) and otlp-xray once it
# is enable or already-enabled, as template.yaml's CollectorExportsAwsxray condition has it.
COLLECTOR_EXPORTERS = ("auto", "otlp-xray", "awsxray")
TRANSACTION_SEARCH_VALUES = ("off", "enable", "already-enabled")


def effective_exporter(exporter, transaction_search):
    """What the sidecar exports with for collector_exporter and transaction_search."""
    if exporter == "auto":
        return "awsxray" if transaction_search == "off" else "otlp-xray"
    return exporter


# (collector_exporter, transaction_search, the exporter the sidecar then uses), every pair.
EXPORTER_CASES = [
    (exporter, search, effective_exporter(exporter, search))
    for exporter in COLLECTOR_EXPORTERS
    for search in TRANSACTION_SEARCH_VALUES
]
# The file the collector's SSM parameter holds, and the exporter component that file's pipeline
# ends in, by the exporter the sidecar uses.
COLLECTOR_FILES = {"otlp-xray": ("collector.yaml", "otlphttp"), "awsxray": ("collector.awsxray.yaml", "awsxray")}
# The task role's X-Ray actions by (telemetry_transport, the exporter the sidecar uses):
# PutTraceSegments for spans whoever sends them (X-Ray's OTLP endpoint is authorized as that
# action), the sampling reads only for the sidecar's awsproxy, PutTelemetryRecords only for the
# awsxray exporter.
XRAY_SAMPLING = {"xray:GetSamplingRules", "xray:GetSamplingTargets", "xray:GetSamplingStatisticSummaries"}
TASK_XRAY_ACTIONS = {
    ("collector", "otlp-xray"): {"xray:PutTraceSegments"} | XRAY_SAMPLING,
    ("collector", "awsxray"): {"xray:PutTraceSegments", "xray:PutTelemetryRecords"} | XRAY_SAMPLING,
    ("otlp-xray", "otlp-xray"): {"xray:PutTraceSegments"},
    ("otlp-xray", "awsxray"): {"xray:PutTraceSegments"},
}
# What the pinned collector image's build registers (aws-observability/aws-otel-collector
# v0.49.0, tag object ae33bfff224644089ce1f02eb0728ef3f24622b5, commit
# 0771477f9db2879afad3ae3ff7811b5264a151a8, pkg/defaultcomponents/defaults.go; the datadog,
# logzio and signalfx exporters, behind deprecation gates, are left out).
COLLECTOR_COMPONENTS = {
    "extensions": {"awsproxy", "ecs_observer", "health_check", "pprof", "sigv4auth", "zpages", "file_storage"},
    "receivers": {"awsecscontainermetrics", "awscontainerinsightreceiver", "awsxray", "statsd", "prometheus",
                  "kafka", "jaeger", "zipkin", "otlp", "filelog"},
    "processors": {"groupbytrace", "tail_sampling", "attributes", "resource", "probabilistic_sampler", "span",
                   "filter", "metricstransform", "resourcedetection", "experimental_metricsgeneration",
                   "cumulativetodelta", "deltatorate", "batch", "memory_limiter", "k8sattributes"},
    "exporters": {"awsemf", "prometheusremotewrite", "prometheus", "file", "kafka", "debug", "otlp", "otlphttp",
                  "awsxray", "loadbalancing", "awscloudwatchlogs"},
}
# X-Ray's OTLP endpoint refuses a request of more than 10,000 spans (CloudWatch User Guide,
# "OTLP Endpoints"): the sidecar's batches must stay under it.
OTLP_ENDPOINT_MAX_SPANS = 10000
# The span queries saved over aws/spans (deploy/queries/spans, relative to the repository).
QUERY_DIR = Path("deploy") / "queries" / "spans"
# The queries over the backend's log lines (deploy/queries/logs); cold-starts reads Lambda's
# platform.report records, which a task does not have.
LOG_QUERY_DIR = Path("deploy") / "queries" / "logs"
LAMBDA_ONLY_QUERIES = {"cold-starts"}
BACKEND_ENV = {
    "HOST": "0.0.0.0",
    "PORT": "8000",
    "ENVIRONMENT": "production",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_PROPAGATORS": "xray",
    "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=production",
    "INFRASTRUCTURE_PROVIDER": "aws",
    "TRUSTED_CLIENT_CERT_HEADER": "X-Amzn-Mtls-Clientcert",
    # Behind the ALB: client.address is the X-Forwarded-For entry the ALB appended.
    "TRUSTED_PROXY_HOPS": "1",
    # No API Gateway in front: the tasks limit each client themselves (issue 26 item 4).
    "RATE_LIMIT_PER_MINUTE": "600",
    # Past the ALB's 60 s idle timeout: the task never closes a connection the ALB may reuse.
    "SERVER_HEADER_READ_TIMEOUT_SECS": "65",
    "LOG_FORMAT": "json",
    # Metrics as Embedded Metric Format lines, which the awslogs driver carries (issue 25).
    "POWERTOOLS_METRICS_NAMESPACE": "Apuntador",
}
BACKEND_ENV_NAMED = [
    "OTEL_SERVICE_NAME",
    "AWS_DYNAMODB_TABLE",
    "AWS_SINGLE_USE_TABLE",
    "AWS_ATTESTATION_TABLE",
    "AWS_SECRETS_PREFIX",
]
HEALTH_TIMING = {"interval": 10, "timeout": 5, "retries": 3, "startPeriod": 10}


class Report:
    def __init__(self):
        self.failures = []

    def ok(self, message):
        print(f"ok    {message}")

    def fail(self, message):
        self.failures.append(message)
        print(f"FAIL  {message}")

    def check(self, condition, message, detail=""):
        if condition:
            self.ok(message)
        else:
            self.fail(f"{message}{': ' + detail if detail else ''}")
        return bool(condition)


# --- Terraform, as python-hcl2 parses it -------------------------------------------------------


class Terraform:
    """The .tf files of one directory: resources, data sources, variables, locals."""

    def __init__(self, directory):
        import hcl2
        from hcl2 import SerializationOptions

        options = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
        self.directory = directory
        self.files = sorted(directory.glob("*.tf"))
        self.resources, self.data, self.variables, self.locals, self.checks = {}, {}, {}, {}, {}
        for path in self.files:
            with open(path) as handle:
                parsed = hcl2.load(handle, serialization_options=options)
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for entry in parsed.get(kind, []):
                    for type_, named in entry.items():
                        for name, body in named.items():
                            target.setdefault(type_, {})[name] = body
            for entry in parsed.get("variable", []):
                self.variables.update(entry)
            for entry in parsed.get("locals", []):
                self.locals.update(entry)
            for entry in parsed.get("check", []):
                self.checks.update(entry)

    def resource(self, type_, name=None):
        found = self.resources.get(type_, {})
        if name is None:
            return found
        return found.get(name)

    def default(self, variable):
        body = self.variables.get(variable)
        if body is None:
            raise KeyError(f"variable {variable} is not declared")
        return body.get("default")


def block(body, name):
    """A nested block (python-hcl2 gives a list of bodies); {} when absent."""
    value = body.get(name) if body else None
    if isinstance(value, list):
        return value[0] if value else {}
    return value or {}


class Unresolved(Exception):
    pass


class HclExpression:
    """Evaluates, in Python, the small part of HCL that the kit's conditions are written in (the
    security-group precondition, the collector image's validation and check), so they can be
    tried on sample values without Terraform: for expressions with `if`, && || ! == != < <= > >=,
    parentheses, conditionals (`c ? a : b`), string / number / list literals, references (var.*,
    local.*, data.*, a loop variable's attributes), locals that are interpolated strings, and the
    functions below. Anything else (a splat, an interpolated string literal, an attribute the
    sample does not have) raises Unresolved rather than guess. `regex` is Python's re.search:
    RE2 and Python agree on the patterns used here."""

    TOKEN = re.compile(
        r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<number>-?\d+)'
        r"|(?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\],:?{}*])"
        r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*))"
    )

    def __init__(self, tf, variables, data):
        self.tf, self.variables, self.data = tf, variables, data
        self.functions = {
            "length": len,
            "contains": lambda collection, value: value in collection,
            "coalesce": self.coalesce,
            "alltrue": lambda values: all(values),
            "anytrue": lambda values: any(values),
            "toset": lambda values: list(dict.fromkeys(values)),
            "regex": self.regex,
            "endswith": lambda text, suffix: text.endswith(suffix),
            "startswith": lambda text, prefix: text.startswith(prefix),
            "tostring": self.tostring,
        }

    @staticmethod
    def tostring(value):
        """HCL's tostring: numbers without a trailing .0 (1, not 1.0)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    @staticmethod
    def coalesce(*values):
        for value in values:
            if value is not None and value != "":
                return value
        raise ValueError("coalesce: no non-null, non-empty argument")

    @staticmethod
    def regex(pattern, text):
        match = re.search(pattern, text)
        if not match:
            raise ValueError(f"regex {pattern!r} does not match {text!r}")
        return match.group(0)

    def evaluate(self, expression, bound=None):
        expression = expression.strip()
        if expression.startswith("${") and expression.endswith("}"):
            expression = expression[2:-1]
        tokens, position = [], 0
        while position < len(expression):
            m = self.TOKEN.match(expression, position)
            if not m or m.end() == position:
                if expression[position:].strip() == "":
                    break
                raise Unresolved(f"cannot read {expression[position:position + 30]!r}")
            kind = m.lastgroup
            tokens.append((kind, m.group(kind)))
            position = m.end()
        source, end = self.translate(tokens, 0, set(), set(bound or {}))
        if end != len(tokens):
            raise Unresolved(f"unexpected {tokens[end][1]!r} in {expression[:60]}")
        # Globals, not locals: the comprehensions and lambdas of the translation see only those.
        environment = {"__builtins__": {}, "_h": self, **(bound or {})}
        try:
            return eval(source, environment)  # Python built from the token list above
        except Unresolved:
            raise
        except Exception as error:
            raise Unresolved(f"{expression[:80]}: {error}") from error

    # Each translate_* returns (Python source, index of the next token).
    def translate(self, tokens, i, stops, bound):
        """An expression, a conditional `c ? a : b` included (right-associative, as in HCL)."""
        condition, i = self.translate_operators(tokens, i, stops | {"?"}, bound)
        if i < len(tokens) and tokens[i][1] == "?" and "?" not in stops:
            then, i = self.translate(tokens, i + 1, stops | {":"}, bound)
            otherwise, i = self.translate(tokens, self.expect(tokens, i, ":"), stops, bound)
            return f"(({then}) if ({condition}) else ({otherwise}))", i
        return condition, i

    def translate_operators(self, tokens, i, stops, bound):
        out = []
        while i < len(tokens) and tokens[i][1] not in stops:
            kind, text = tokens[i]
            if text in ("&&", "||"):
                out.append(" and " if text == "&&" else " or ")
                i += 1
            elif kind == "op" and text in ("==", "!=", "<", "<=", ">", ">="):
                out.append(f" {text} ")
                i += 1
            else:
                source, i = self.translate_unary(tokens, i, bound)
                out.append(source)
        return "".join(out), i

    def translate_unary(self, tokens, i, bound):
        if tokens[i][1] == "!":
            source, i = self.translate_unary(tokens, i + 1, bound)
            return f"(not {source})", i
        return self.translate_primary(tokens, i, bound)

    def translate_primary(self, tokens, i, bound):
        kind, text = tokens[i]
        if kind == "string":
            if "${" in text or "%{" in text:
                raise Unresolved(f"interpolated string {text}")
            return repr(json.loads(text)), i + 1
        if kind == "number":
            return text, i + 1
        if text == "(":
            source, i = self.translate(tokens, i + 1, {")"}, bound)
            return f"({source})", self.expect(tokens, i, ")")
        if text == "[" and i + 1 < len(tokens) and tokens[i + 1][1] == "for":
            return self.translate_for(tokens, i + 2, bound)
        if text == "[":
            items, i = [], i + 1
            while tokens[i][1] != "]":
                source, i = self.translate(tokens, i, {",", "]"}, bound)
                items.append(source)
                if tokens[i][1] == ",":
                    i += 1
            return f"[{', '.join(items)}]", i + 1
        if kind == "name":
            if i + 1 < len(tokens) and tokens[i + 1][1] == "(":
                return self.translate_call(text, tokens, i + 2, bound)
            return self.translate_reference(text, bound), i + 1
        raise Unresolved(f"unsupported {text!r}")

    def translate_call(self, name, tokens, i, bound):
        arguments = []
        while tokens[i][1] != ")":
            source, i = self.translate(tokens, i, {",", ")"}, bound)
            arguments.append(source)
            if tokens[i][1] == ",":
                i += 1
        if name == "can":  # can(x): whether x evaluates without an error
            return f"_h.can(lambda: {arguments[0]})", i + 1
        if name not in self.functions:
            raise Unresolved(f"function {name}() is not one this check evaluates")
        return f"_h.functions[{name!r}]({', '.join(arguments)})", i + 1

    def translate_for(self, tokens, i, bound):
        variable = tokens[i][1]
        i = self.expect(tokens, i + 1, "in")
        collection, i = self.translate(tokens, i, {":"}, bound)
        inner = bound | {variable}
        body, i = self.translate(tokens, i + 1, {"if", "]"}, inner)
        condition = "True"
        if tokens[i][1] == "if":
            condition, i = self.translate(tokens, i + 1, {"]"}, inner)
        return f"[({body}) for {variable} in _h.values({collection}) if ({condition})]", i + 1

    def translate_reference(self, text, bound):
        if text in ("true", "false", "null"):
            return {"true": "True", "false": "False", "null": "None"}[text]
        parts = text.split(".")
        if parts[0] in bound:
            root, rest = parts[0], parts[1:]
        elif parts[0] == "var" and len(parts) >= 2:
            root, rest = f"_h.variable({parts[1]!r})", parts[2:]
        elif parts[0] == "local" and len(parts) >= 2:
            root, rest = f"_h.local({parts[1]!r})", parts[2:]
        elif parts[0] == "data" and len(parts) >= 3:
            root, rest = f"_h.data_source({parts[1]!r}, {parts[2]!r})", parts[3:]
        else:
            raise Unresolved(f"reference {text} is not one this check evaluates")
        for attribute in rest:
            root = f"_h.attribute({root}, {attribute!r})"
        return root

    @staticmethod
    def expect(tokens, i, text):
        if i >= len(tokens) or tokens[i][1] != text:
            raise Unresolved(f"expected {text!r}")
        return i + 1

    def can(self, thunk):
        try:
            thunk()
            return True
        except (ValueError, TypeError, KeyError, IndexError, re.error):  # an HCL evaluation error
            return False

    @staticmethod
    def values(collection):
        # `for x in map` iterates the values (a for_each data source is a map of instances).
        return list(collection.values()) if isinstance(collection, dict) else list(collection)

    def variable(self, name):
        if name in self.variables:
            return self.variables[name]
        if name not in self.tf.variables:
            raise Unresolved(f"var.{name} is not declared")
        return self.tf.default(name)

    def local(self, name):
        if name not in self.tf.locals:
            raise Unresolved(f"local.{name} is not declared")
        value = self.tf.locals[name]
        if not isinstance(value, str):
            return value
        if not (value.startswith("${") and value.endswith("}")):
            # An interpolated string: each ${…} in it, evaluated.
            return re.sub(r"\$\{([^{}]*)\}", lambda m: self.tostring(self.evaluate(m.group(1))), value)
        return self.evaluate(value)

    def data_source(self, type_, name):
        if type_ not in self.tf.data or name not in self.tf.data[type_]:
            raise Unresolved(f"data.{type_}.{name} is not declared")
        if (type_, name) not in self.data:
            raise Unresolved(f"data.{type_}.{name} has no sample value in this check")
        return self.data[(type_, name)]

    @staticmethod
    def attribute(value, name):
        if not isinstance(value, dict) or name not in value:
            raise Unresolved(f"attribute {name} is not one the sample (the provider's schema) has")
        return value[name]


class Evaluator:
    """Evaluates the simple expressions this configuration passes to its template: references
    to variables (overrides, else defaults), locals and configured resource attributes, string
    interpolation, and a resource's ARN where AWS computes it from known parts."""

    def __init__(self, tf, overrides):
        self.tf = tf
        self.overrides = overrides

    def reference(self, expression):
        expression = expression.strip()
        if m := re.fullmatch(r"var\.(\w+)", expression):
            name = m.group(1)
            if name in self.overrides:
                return self.overrides[name]
            value = self.tf.default(name)
            if value is None:
                raise Unresolved(f"var.{name} has no default and no sample value")
            return value
        if m := re.fullmatch(r"local\.(\w+)", expression):
            name = m.group(1)
            if name == "backend_environment":
                return self.backend_environment()
            if name not in self.tf.locals:
                raise Unresolved(expression)
            return self.value(self.tf.locals[name])
        if m := re.fullmatch(r"one\((aws_\w+)\.(\w+)\[\*\]\.(\w+)\)", expression):
            # one(TYPE.NAME[*].ATTRIBUTE) of a resource with `count`: null when it has none.
            type_, name, attribute = m.groups()
            body = self.tf.resource(type_, name)
            if body is None:
                raise Unresolved(f"{type_}.{name} is not declared")
            if not self.hcl().evaluate(str(body.get("count", "1"))):
                return None
            return self.attribute(type_, name, attribute)
        if m := re.fullmatch(r"(aws_\w+)\.(\w+)\.(\w+)", expression):
            return self.attribute(*m.groups())
        # Anything else (a conditional, a comparison, a function of variables): HCL, evaluated.
        return self.hcl().evaluate(expression)

    def hcl(self):
        return HclExpression(self.tf, self.overrides, {})

    def attribute(self, type_, name, attribute):
        """A configured resource's attribute, or its ARN where AWS computes it from known parts."""
        body = self.tf.resource(type_, name)
        if body is None:
            raise Unresolved(f"{type_}.{name} is not declared")
        if attribute in body:
            return self.value(body[attribute])
        if (type_, attribute) == ("aws_ssm_parameter", "arn"):
            return f"arn:aws:ssm:{self.overrides['region']}:ACCOUNT:parameter{self.value(body['name'])}"
        if (type_, attribute) == ("aws_iam_role", "arn"):
            return f"arn:aws:iam::ACCOUNT:role/{self.value(body['name'])}"
        raise Unresolved(f"{type_}.{name}.{attribute}")

    def value(self, value):
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if not isinstance(value, str):
            return value
        whole = re.fullmatch(r"\$\{([^{}]*)\}", value)
        if whole:
            return self.reference(whole.group(1))
        return re.sub(r"\$\{([^{}]*)\}", lambda m: str(self.reference(m.group(1))), value)

    def backend_environment(self):
        """local.backend_environment: the map's non-empty values, sorted by name."""
        expression = self.tf.locals.get("backend_environment", "")
        if "backend_environment_all" not in expression or 'if value != ""' not in expression:
            raise Unresolved(f"local.backend_environment is not the filtered list of backend_environment_all: {expression}")
        values = self.value(self.tf.locals["backend_environment_all"])
        return [{"name": k, "value": v} for k, v in sorted(values.items()) if v != ""]


def templatefile_call(expression):
    """(template path, {argument: expression}) of main.tf's templatefile() call."""
    m = re.fullmatch(r'\$\{templatefile\("\$\{path\.module\}/([^"]+)", \{(.*)\}\)\}', expression, re.S)
    if not m:
        raise Unresolved(f"container_definitions is not templatefile(path.module/…, {{…}}): {expression[:80]}")
    arguments = {}
    for part in m.group(2).split(","):
        key, _, value = part.partition("=")
        arguments[key.strip()] = value.strip()
    return m.group(1), arguments


# A template directive: `%{ if name == "literal" }`, `!=` too, or `%{ endif }`, each side with
# or without Terraform's `~` whitespace strip marker.
DIRECTIVE = re.compile(
    r'%\{(?P<left>~?)\s*(?:if\s+(?P<name>\w+)\s*(?P<op>==|!=)\s*"(?P<literal>[^"]*)"|(?P<endif>endif))\s*(?P<right>~?)\}'
)


def render_directives(text, values, used):
    """The template with its `%{ if name ==/!= "literal" }…%{ endif }` sections kept or dropped
    as templatefile() would (not nested; `~` strips the whitespace on its side, newlines
    included). Any other directive raises Unresolved."""
    if "%{" in text and len(DIRECTIVE.findall(text)) != text.count("%{"):
        raise Unresolved("the template uses %{…} directives other than if/endif on a comparison")
    out, position, keep, opened = [], 0, True, False
    for m in DIRECTIVE.finditer(text):
        piece = text[position:m.start()]
        if m.group("left"):
            piece = piece.rstrip()
        if keep:
            out.append(piece)
        position = m.end()
        if m.group("right"):
            while position < len(text) and text[position].isspace():
                position += 1
        if m.group("endif"):
            if not opened:
                raise Unresolved("%{ endif } without %{ if }")
            keep, opened = True, False
            continue
        if opened:
            raise Unresolved("nested %{ if } directives")
        name = m.group("name")
        if name not in values:
            raise Unresolved(f"the template's %{{ if }} tests {name}, which main.tf does not pass")
        used.add(name)
        equal = str(values[name]) == m.group("literal")
        keep, opened = (equal if m.group("op") == "==" else not equal), True
    if opened:
        raise Unresolved("%{ if } without %{ endif }")
    out.append(text[position:])
    return "".join(out)


def render_template(text, values):
    """container-definitions.json.tftpl rendered: its if/endif directives, then each
    ${jsonencode(name)} replaced."""
    used = set()
    text = render_directives(text, values, used)

    def substitute(m):
        expression = m.group(1).strip()
        call = re.fullmatch(r"jsonencode\((\w+)\)", expression)
        if not call:
            raise Unresolved(f"template interpolation ${{{expression}}} is not ${{jsonencode(name)}}")
        name = call.group(1)
        if name not in values:
            raise Unresolved(f"the template uses {name}, which main.tf does not pass")
        used.add(name)
        return json.dumps(values[name])

    rendered = re.sub(r"\$\{([^{}]*)\}", substitute, text)
    return json.loads(rendered), used


def differences(left, right, names=("first", "second"), path="$"):
    """Where two JSON values differ, as `path: what` lines naming the two sides."""
    if type(left) is not type(right):
        return [f"{path}: {json.dumps(left)[:60]} ({names[0]}) vs {json.dumps(right)[:60]} ({names[1]})"]
    if isinstance(left, dict):
        out = []
        for key in sorted(set(left) | set(right)):
            if key not in left:
                out.append(f"{path}.{key}: only in {names[1]}")
            elif key not in right:
                out.append(f"{path}.{key}: only in {names[0]}")
            else:
                out += differences(left[key], right[key], names, f"{path}.{key}")
        return out
    if isinstance(left, list):
        if len(left) != len(right):
            return [f"{path}: {len(left)} items ({names[0]}) vs {len(right)} ({names[1]})"]
        out = []
        for i, (a, b) in enumerate(zip(left, right)):
            out += differences(a, b, names, f"{path}[{i}]")
        return out
    if left == right:
        return []
    return [f"{path}: {json.dumps(left)[:80]} ({names[0]}) vs {json.dumps(right)[:80]} ({names[1]})"]


# --- IAM ---------------------------------------------------------------------------------------


def statements(document):
    """Every statement of a policy document, dynamic ones with `${statement.value}` replaced by
    what their for_each iterates over (a variable)."""
    for statement in document.get("statement", []):
        yield statement.get("sid", "?"), statement
    for dynamic in document.get("dynamic", []):
        for _, body in dynamic.items():
            for_each = body.get("for_each", "")
            for_each = for_each if isinstance(for_each, str) else json.dumps(for_each)
            source = re.findall(r"var\.(\w+)", for_each)
            uses_value = any("${statement.value}" in r for c in body.get("content", []) for r in c.get("resources", []))
            for content in body.get("content", []):
                content = copy.deepcopy(content)
                content["resources"] = [
                    r.replace("${statement.value}", "${var.%s}" % source[-1]) if source else r
                    for r in content.get("resources", [])
                ]
                when = f"var.{source[-1]} is set" if uses_value and source else for_each.strip("${}")
                yield f"{content.get('sid', '?')} (dynamic, when {when})", content


def effective_statements(tf, document, variables):
    """The statements of `document` once Terraform has expanded its dynamic blocks for
    `variables` (the others at their defaults): a dynamic statement is there when its for_each
    is not empty."""
    found = list(document.get("statement", []))
    for dynamic in document.get("dynamic", []):
        for _, body in dynamic.items():
            for_each = body.get("for_each", "[]")
            if for_each if not isinstance(for_each, str) else HclExpression(tf, variables, {}).evaluate(for_each):
                found += body.get("content", [])
    return found


def resource_policy_documents(tf):
    """The policy documents CloudWatch Logs resource policies use (not IAM identity policies)."""
    names = set()
    for policy in tf.resource("aws_cloudwatch_log_resource_policy").values():
        m = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", policy.get("policy_document", ""))
        if m:
            names.add(m.group(1))
    return names


def secret_arn_variable(tf, resource):
    m = re.fullmatch(r"\$\{var\.(\w+)\}", resource)
    if not m:
        return False
    body = tf.variables.get(m.group(1), {})
    conditions = " ".join(v.get("condition", "") for v in body.get("validation", []))
    return "secretsmanager" in conditions and "[A-Za-z0-9]{6}$" in conditions


def check_iam(tf, report):
    for type_ in ("aws_iam_role_policy_attachment", "aws_iam_policy_attachment", "aws_iam_role_policies_exclusive"):
        report.check(not tf.resource(type_), f"IAM: no {type_} (no managed policy)", str(list(tf.resource(type_))))
    for name, role in tf.resource("aws_iam_role").items():
        report.check("managed_policy_arns" not in role, f"IAM: role {name} attaches no managed policy")
        assume = role.get("assume_role_policy", "")
        m = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", assume)
        if not report.check(m, f"IAM: role {name}'s trust policy is a policy document", assume):
            continue
        trust = tf.data["aws_iam_policy_document"][m.group(1)]
        principals = [
            (p.get("type"), tuple(p.get("identifiers", [])))
            for _, s in statements(trust)
            for p in s.get("principals", [])
        ]
        report.check(
            principals == [("Service", ("ecs-tasks.amazonaws.com",))],
            f"IAM: role {name} is assumable by ecs-tasks.amazonaws.com only",
            str(principals),
        )
    for name, policy in tf.resource("aws_iam_role_policy").items():
        report.check(
            re.fullmatch(r"\$\{data\.aws_iam_policy_document\.\w+\.json\}", policy.get("policy", "")),
            f"IAM: inline policy {name} comes from a policy document (so it is walked here)",
            policy.get("policy", "")[:80],
        )
    report.check(not tf.resource("aws_iam_policy"), "IAM: no standalone aws_iam_policy (inline role policies only)")

    documents = tf.data.get("aws_iam_policy_document", {})
    for document_name, document in documents.items():
        if document_name in resource_policy_documents(tf):
            continue  # a resource policy for a service principal: check_transaction_search
        for sid, statement in statements(document):
            where = f"IAM {document_name}/{sid}"
            actions = statement.get("actions", [])
            resources = statement.get("resources", [])
            if statement.get("principals"):  # a trust policy
                report.check(actions == ["sts:AssumeRole"], f"{where}: trust statement only assumes the role", str(actions))
                continue
            problems = []
            for forbidden in ("not_actions", "not_resources", "not_principals"):
                if forbidden in statement:
                    problems.append(f"uses {forbidden}")
            if statement.get("effect", "Allow") != "Allow":
                report.ok(f"{where}: Deny statement")
                continue
            if not actions or not resources:
                problems.append("no actions or no resources")
            for action in actions:
                if "*" in action:
                    problems.append(f'wildcard action "{action}"')
                if action.startswith("dynamodb:") and action not in DYNAMODB_ALLOWED:
                    problems.append(f"DynamoDB action {action} (allowed: {', '.join(sorted(DYNAMODB_ALLOWED))})")
            for resource in resources:
                if resource == "*":
                    if not set(actions) <= NO_RESOURCE_TYPE:
                        problems.append(
                            '"*" resource for actions that can name one: '
                            + ", ".join(sorted(set(actions) - NO_RESOURCE_TYPE))
                        )
                elif "*" in resource and not any(p.match(resource) for p in SCOPED_WILDCARDS):
                    problems.append(f'wildcard resource "{resource}"')
            if any(a.startswith("dynamodb:") for a in actions):
                for resource in resources:
                    if resource == "${aws_dynamodb_table.single_use.arn}":
                        if set(actions) != {"dynamodb:PutItem"}:
                            problems.append(f"{sorted(actions)} on the single-use table, not dynamodb:PutItem alone")
                    elif resource == "${aws_dynamodb_table.attestation.arn}":
                        if set(actions) != {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}:
                            problems.append(f"{sorted(actions)} on the attestation table, not GetItem, PutItem and UpdateItem")
                    elif not re.fullmatch(r"\$\{aws_dynamodb_table\.certificates\.arn\}(/index/\*)?", resource):
                        problems.append(f"DynamoDB on {resource}, not the certificate, single-use or attestation table")
            if any(a.startswith("secretsmanager:") for a in actions):
                if any(not a.startswith("secretsmanager:") for a in actions):
                    problems.append("Secrets Manager mixed with other services")
                if set(actions) != {"secretsmanager:GetSecretValue"}:
                    problems.append(f"Secrets Manager actions {actions} (GetSecretValue only)")
                for resource in resources:
                    if not (CA_SECRET.match(resource) or secret_arn_variable(tf, resource)):
                        problems.append(f"secret {resource} is neither a CA secret ARN nor a validated secret ARN variable")
            summary = f"{', '.join(actions)} on {', '.join(resources)}"
            report.check(not problems, f"{where}: {summary}", "; ".join(problems))


def role_document(tf, role):
    """The policy document of aws_iam_role_policy `role`."""
    policy = tf.resource("aws_iam_role_policy", role) or {}
    m = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", policy.get("policy", ""))
    return tf.data.get("aws_iam_policy_document", {}).get(m.group(1)) if m else None


def exporter_label(exporter, search, effective):
    """`collector_exporter = auto, transaction_search = off` (auto: also what it stands for)."""
    label = f"collector_exporter = {exporter}, transaction_search = {search}"
    return label + (f" (auto: {effective})" if exporter == "auto" else "")


def check_roles_by_transport(tf, report):
    """What each role may do, by telemetry_transport, collector_exporter and transaction_search
    (auto evaluated under each value): the task role's X-Ray actions are TASK_XRAY_ACTIONS of the
    exporter the sidecar then uses, exactly; the execution role reads the collector's parameter
    and writes its log group only when the sidecar runs, whatever the exporter."""
    task, execution = role_document(tf, "task"), role_document(tf, "execution")
    if not report.check(task and execution, "IAM: the task and execution role policies are policy documents"):
        return
    for transport in MODES:
        execution_grants = {}
        for exporter, search, effective in EXPORTER_CASES:
            variables = {"telemetry_transport": transport, "collector_exporter": exporter, "transaction_search": search}
            label = f"telemetry_transport = {transport}, {exporter_label(exporter, search, effective)}"
            expected = TASK_XRAY_ACTIONS[(transport, effective)]
            try:
                granted = {a for s in effective_statements(tf, task, variables) for a in s.get("actions", []) if a.startswith("xray:")}
                run = effective_statements(tf, execution, variables)
            except Unresolved as error:
                report.fail(f"IAM ({label}): a dynamic statement's for_each not understood: {error}")
                continue
            report.check(
                granted == expected,
                f"IAM ({label}): the task role's X-Ray actions are {', '.join(sorted(expected))}",
                f"granted {sorted(granted)}",
            )
            reads_config = any("ssm:GetParameters" in s.get("actions", []) for s in run)
            collector_logs = any("collector" in r for s in run for r in s.get("resources", []) if "log_group" in r)
            execution_grants[f"{exporter}/{search}"] = (reads_config, collector_logs)
        sidecar = transport == "collector"
        wrong = {case: grants for case, grants in execution_grants.items() if grants != (sidecar, sidecar)}
        report.check(
            execution_grants and not wrong,
            f"IAM (telemetry_transport = {transport}, every collector_exporter and transaction_search): the execution role "
            f"{'reads the collector parameter and writes its log group' if sidecar else 'has nothing of the collector'}",
            "; ".join(f"{case}: ssm:GetParameters {r}, collector log group {g}" for case, (r, g) in wrong.items()),
        )


def check_collector_exporter(tf, report):
    """collector_exporter: auto (the default), otlp-xray or awsxray, and what each selects under
    every transaction_search value: the file the collector's SSM parameter holds and the one its
    description names (both evaluated, not grepped) are the exporter's the sidecar then uses
    (COLLECTOR_FILES; auto: collector.awsxray.yaml while transaction_search is off)."""
    variable = tf.variables.get("collector_exporter", {})
    conditions = [v.get("condition", "") for v in variable.get("validation", [])]
    description = " ".join(str(variable.get("description", "")).split())
    try:
        accepted = {
            value: bool(conditions) and all(HclExpression(tf, {"collector_exporter": value}, {}).evaluate(c) for c in conditions)
            for value in COLLECTOR_EXPORTERS + ("xray", "")
        }
    except Unresolved as error:
        report.fail(f"variable collector_exporter: validation not understood: {error}")
        accepted = {}
    report.check(
        variable.get("default") == "auto"
        and all(accepted.get(value) for value in COLLECTOR_EXPORTERS)
        and not any(accepted.get(value, True) for value in ("xray", ""))
        and all(word in description for word in ("auto", "awsxray", "otlp-xray", 'transaction_search is "off"', "Transaction Search")),
        "variable collector_exporter: auto (default), otlp-xray, awsxray accepted, anything else refused; "
        "says auto follows transaction_search",
        f"default {variable.get('default')!r}, accepted {accepted}",
    )
    parameter = tf.resource("aws_ssm_parameter", "collector_config")
    if not report.check(
        list(tf.resource("aws_ssm_parameter")) == ["collector_config"] and parameter.get("count") == "${local.collector ? 1 : 0}",
        "SSM parameter collector_config: the only one, with the sidecar only",
        f"{list(tf.resource('aws_ssm_parameter'))} (count {(parameter or {}).get('count')})",
    ):
        return
    value = parameter.get("value", "")
    choice = re.fullmatch(
        r'\$\{(.+) \? file\("\$\{path\.module\}/\.\./([\w.-]+)"\) : file\("\$\{path\.module\}/\.\./([\w.-]+)"\)\}',
        value,
    )
    if not report.check(
        choice, "SSM parameter collector_config: value = condition ? file(../<one>.yaml) : file(../<other>.yaml)", value
    ):
        return
    for exporter, search, effective in EXPORTER_CASES:
        label = exporter_label(exporter, search, effective)
        evaluate = HclExpression(tf, {"collector_exporter": exporter, "transaction_search": search}, {})
        try:
            held = choice.group(2) if evaluate.evaluate(choice.group(1)) else choice.group(3)
            named = re.sub(
                r"\$\{([^{}]*)\}", lambda m: evaluate.tostring(evaluate.evaluate(m.group(1))), parameter.get("description", "")
            )
        except Unresolved as error:
            report.fail(f"SSM parameter ({label}): value or description not understood: {error}")
            continue
        expected, component = COLLECTOR_FILES[effective]
        report.check(
            held == expected and named.endswith(f"deploy/ecs/{expected}"),
            f"SSM parameter ({label}): the collector parameter holds {expected} (exporter {component}), and its description names it",
            f"holds {held}; description {named!r}",
        )


# --- Terraform resources -----------------------------------------------------------------------


def check_terraform_resources(tf, report, template_table):
    groups = tf.resource("aws_lb_target_group")
    report.check(len(groups) == 1, "Terraform: one ALB target group", str(list(groups)))
    for name, group in groups.items():
        health = block(group, "health_check")
        report.check(
            group.get("target_type") == "ip" and group.get("port") == 8000 and group.get("protocol") == "HTTP",
            f"target group {name}: ip targets, HTTP, port 8000",
            f"{group.get('target_type')} {group.get('protocol')} {group.get('port')}",
        )
        report.check(
            health.get("path") == "/health" and str(health.get("matcher")) == "200" and health.get("enabled", True) is not False,
            f"target group {name}: health check GET /health answering 200 (every {health.get('interval')} s)",
            f"path={health.get('path')} matcher={health.get('matcher')}",
        )
    services = tf.resource("aws_ecs_service")
    for name, service in services.items():
        breaker = block(service, "deployment_circuit_breaker")
        balancer = block(service, "load_balancer")
        network = block(service, "network_configuration")
        report.check(
            service.get("launch_type") == "FARGATE" and breaker.get("enable") is True and breaker.get("rollback") is True,
            f"service {name}: Fargate, deployment circuit breaker with rollback",
            f"{service.get('launch_type')} {breaker}",
        )
        report.check(
            balancer.get("container_name") == "backend" and balancer.get("container_port") == 8000,
            f"service {name}: load balancer to backend:8000 ({balancer.get('target_group_arn')})",
            str(balancer),
        )
        report.check(
            network.get("assign_public_ip") is False and network.get("subnets") == "${var.subnet_ids}"
            and network.get("security_groups") == "${var.security_group_ids}",
            f"service {name}: subnets and security groups from variables, no public IP",
            str(network),
        )
        report.check("health_check_grace_period_seconds" in service, f"service {name}: health check grace period set")
    for name, cluster in tf.resource("aws_ecs_cluster").items():
        settings = {s.get("name"): s.get("value") for s in cluster.get("setting", [])}
        report.check(settings.get("containerInsights") in ("enabled", "enhanced"), f"cluster {name}: container insights on", str(settings))
    for name, rule in tf.resource("aws_lb_listener_rule").items():
        conditions = " ".join(p.get("condition", "") for p in block(rule, "lifecycle").get("precondition", []))
        report.check(
            "passthrough" in conditions and "trusted_client_cert_header" in conditions,
            f"listener rule {name}: refuses a listener not in mutual-TLS passthrough mode while the header is trusted",
        )
    sidecar_only = "${local.collector ? 1 : 0}"
    groups = tf.resource("aws_cloudwatch_log_group")
    report.check(
        len(groups) == 2 and all("retention_in_days" in g for g in groups.values())
        and groups.get("collector", {}).get("count") == sidecar_only and "count" not in groups.get("backend", {}),
        f"log groups {', '.join(groups)} with retention, the collector's with the sidecar only",
    )
    collector_only = "${var.telemetry_transport == \"collector\"}"
    report.check(
        tf.locals.get("collector") == collector_only,
        "local.collector is telemetry_transport == \"collector\" (what the sidecar's resources count on)",
        str(tf.locals.get("collector")),
    )
    check_table(tf, report, template_table)


def check_id_table(tf, report, template_table, name, label, actions):
    """A table keyed by `id` mirrors template.yaml's: key, time-to-live, billing, point-in-time
    recovery and encryption; the task role may do exactly `actions` on it."""
    table = tf.resource("aws_dynamodb_table", name)
    if not report.check(table, f"Terraform: aws_dynamodb_table.{name}"):
        return
    props = template_table["Properties"]
    ttl = block(table, "ttl")
    report.check(
        table.get("hash_key") == props["KeySchema"][0]["AttributeName"]
        and table.get("range_key") is None
        and {a["name"]: a["type"] for a in table.get("attribute", [])}
        == {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
        and ttl.get("attribute_name") == props["TimeToLiveSpecification"]["AttributeName"]
        and ttl.get("enabled") is True
        and table.get("billing_mode") == props["BillingMode"]
        and block(table, "point_in_time_recovery").get("enabled") is True
        and block(table, "server_side_encryption").get("enabled") is True,
        f"{label} table: key, attributes and time-to-live as in template.yaml; PAY_PER_REQUEST, point-in-time recovery, encryption",
        json.dumps(table, default=str)[:300],
    )
    document = role_document(tf, "task")
    granted = [
        s
        for s in (document or {}).get("statement", [])
        if f"${{aws_dynamodb_table.{name}.arn}}" in (s.get("resources") or [])
    ]
    report.check(
        len(granted) == 1 and granted[0].get("actions") == actions,
        f"task role: {', '.join(actions)} on the {label} table, nothing else",
        json.dumps(granted),
    )


def check_table(tf, report, template_table):
    table = tf.resource("aws_dynamodb_table", "certificates")
    if not report.check(table, "Terraform: aws_dynamodb_table.certificates"):
        return
    props = template_table["Properties"]
    keys = {k["KeyType"]: k["AttributeName"] for k in props["KeySchema"]}
    attributes = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    tf_attributes = {a["name"]: a["type"] for a in table.get("attribute", [])}
    report.check(
        (table.get("hash_key"), table.get("range_key")) == (keys["HASH"], keys["RANGE"]),
        f"table: keys {keys['HASH']} / {keys['RANGE']} as in template.yaml",
        f"{table.get('hash_key')} / {table.get('range_key')}",
    )
    report.check(tf_attributes == attributes, f"table: attributes {sorted(attributes)} as in template.yaml", str(tf_attributes))
    indexes = {
        i["IndexName"]: ({k["KeyType"]: k["AttributeName"] for k in i["KeySchema"]}, i["Projection"]["ProjectionType"])
        for i in props.get("GlobalSecondaryIndexes", [])
    }
    tf_indexes = {
        i["name"]: ({"HASH": i.get("hash_key"), "RANGE": i.get("range_key")}, i.get("projection_type"))
        for i in table.get("global_secondary_index", [])
    }
    report.check(tf_indexes == indexes, f"table: indexes {sorted(indexes)} as in template.yaml", f"{tf_indexes} vs {indexes}")
    ttl = block(table, "ttl")
    report.check(
        ttl.get("attribute_name") == props["TimeToLiveSpecification"]["AttributeName"] and ttl.get("enabled") is True,
        f"table: time-to-live on {ttl.get('attribute_name')}",
    )
    report.check(
        table.get("billing_mode") == props["BillingMode"]
        and block(table, "point_in_time_recovery").get("enabled") is True
        and block(table, "server_side_encryption").get("enabled") is True
        and table.get("deletion_protection_enabled") is True,
        "table: PAY_PER_REQUEST, point-in-time recovery, server-side encryption, deletion protection",
    )


# --- the task definition -----------------------------------------------------------------------


def containers_by_name(definitions):
    return {c.get("name"): c for c in definitions}


def check_containers(definitions, where, report, mode="collector"):
    """The task's containers for `mode` (a telemetry_transport): the backend beside the
    collector sidecar, or the backend alone."""
    containers = containers_by_name(definitions)
    expected_names = ["backend", "aws-otel-collector"] if mode == "collector" else ["backend"]
    if not report.check(
        list(containers) == expected_names,
        f"{where}: containers {' and '.join(expected_names)}",
        str(list(containers)),
    ):
        return
    backend, collector = containers["backend"], containers.get("aws-otel-collector")
    for name, container in containers.items():
        report.check(container.get("essential") is True, f"{where}: {name} is essential")
        report.check(
            container.get("readonlyRootFilesystem") is True and container.get("privileged", False) is False,
            f"{where}: {name} has a read-only root file system and is not privileged",
        )
        health = container.get("healthCheck")
        expected = ["CMD", "/apuntador-backend", "healthcheck"] if name == "backend" else ["CMD", "/healthcheck"]
        if report.check(health, f"{where}: {name} has a health check"):
            report.check(
                health.get("command") == expected and all(health.get(k) == v for k, v in HEALTH_TIMING.items()),
                f"{where}: {name} health check {' '.join(expected[1:])} every 10 s, timeout 5, 3 retries, start period 10",
                json.dumps(health),
            )
        logs = container.get("logConfiguration", {})
        prefix = "backend" if name == "backend" else "collector"
        report.check(
            logs.get("logDriver") == "awslogs"
            and logs.get("options", {}).get("awslogs-stream-prefix") == prefix
            and {"awslogs-group", "awslogs-region"} <= set(logs.get("options", {})),
            f"{where}: {name} logs to awslogs, stream prefix {prefix}",
            json.dumps(logs),
        )
    if mode == "collector":
        report.check(
            backend.get("dependsOn") == [{"containerName": "aws-otel-collector", "condition": "HEALTHY"}],
            f"{where}: backend dependsOn aws-otel-collector HEALTHY (not START, which races the collector)",
            json.dumps(backend.get("dependsOn")),
        )
    else:
        report.check(
            "dependsOn" not in backend,
            f"{where}: backend depends on no container (there is no sidecar)",
            json.dumps(backend.get("dependsOn")),
        )
    timeout = backend.get("stopTimeout")
    report.check(
        isinstance(timeout, int) and 10 <= timeout <= 120,
        f"{where}: backend stopTimeout {timeout} s (in-flight requests finish, spans flush; Fargate allows ≤ 120)",
    )
    users = [("backend", backend, BACKEND_USER)] + ([("aws-otel-collector", collector, COLLECTOR_USER)] if collector else [])
    for name, container, expected in users:
        user = str(container.get("user", ""))
        uid, _, gid = user.partition(":")
        report.check(
            user == expected and uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0,
            f"{where}: {name} runs as the non-root user {expected}, explicitly",
            f"user {container.get('user')!r}",
        )
    ports = [p.get("containerPort") for p in backend.get("portMappings", [])]
    report.check(ports == [8000], f"{where}: backend port 8000", str(ports))
    environment = {e["name"]: e["value"] for e in backend.get("environment", [])}
    names = [e["name"] for e in backend.get("environment", [])]
    report.check(names == sorted(set(names)), f"{where}: backend environment sorted, no duplicates")
    wanted = dict(BACKEND_ENV, **TRACING_ENV[mode])
    wrong = {k: environment.get(k) for k, v in wanted.items() if environment.get(k) != v}
    missing = [k for k in BACKEND_ENV_NAMED if not environment.get(k)]
    spans = "OTLP to the sidecar" if mode == "collector" else "OTLP signed to X-Ray's OTLP endpoint"
    report.check(
        not wrong and not missing and "" not in environment.values(),
        f"{where}: backend environment ({len(environment)} variables: server mode, {spans}, X-Ray propagation, ALB certificate header)",
        f"wrong {wrong}, missing {missing}",
    )
    secrets = {s["name"]: s["valueFrom"] for s in backend.get("secrets", [])}
    report.check(
        sorted(secrets) == ["CONFIG_API_KEY", "SECRET_KEY"]
        and all(v.startswith("arn:aws:secretsmanager:") for v in secrets.values()),
        f"{where}: backend secrets SECRET_KEY and CONFIG_API_KEY from Secrets Manager ARNs",
        json.dumps(secrets),
    )
    if collector is None:
        return
    image = collector.get("image", "")
    report.check(PINNED_COLLECTOR.match(image), f"{where}: collector image pinned by digest ({image})")
    report.check(
        collector.get("command") == ["--config=env:AOT_CONFIG_CONTENT"],
        f"{where}: collector reads --config=env:AOT_CONFIG_CONTENT",
        str(collector.get("command")),
    )
    collector_secrets = {s["name"]: s["valueFrom"] for s in collector.get("secrets", [])}
    report.check(
        list(collector_secrets) == ["AOT_CONFIG_CONTENT"]
        and collector_secrets["AOT_CONFIG_CONTENT"].startswith("arn:aws:ssm:"),
        f"{where}: AOT_CONFIG_CONTENT from the SSM parameter",
        json.dumps(collector_secrets),
    )
    report.check(
        any(e["name"] == "AWS_REGION" for e in collector.get("environment", [])),
        f"{where}: collector has AWS_REGION (its exporter and awsproxy sign for that region; collector.yaml expands it)",
    )


def check_task_definition(tf, ecs, report):
    """Each telemetry_transport's JSON task definition against the Terraform template rendered
    for it. Returns {mode: (the JSON task, the rendered containers or None)}."""
    definitions = tf.resource("aws_ecs_task_definition")
    if not report.check(len(definitions) == 1, "Terraform: one aws_ecs_task_definition"):
        return {}
    (name, definition), = definitions.items()
    results = {}
    for mode, json_name in MODES.items():
        task = json.loads((ecs / json_name).read_text())
        report.ok(f"{json_name} parses ({len(task['containerDefinitions'])} containers)")
        check_containers(task["containerDefinitions"], json_name, report, mode)
        results[mode] = (task, render_task(tf, name, definition, task, json_name, mode, report))
    return results


def render_task(tf, name, definition, task, json_name, mode, report):
    """The template rendered with what main.tf passes it for `mode` (the variables' defaults,
    the JSON's placeholders), held to `task`; the rendered containers, or None."""
    containers = containers_by_name(task["containerDefinitions"])
    backend, collector = containers.get("backend", {}), containers.get("aws-otel-collector", {})
    secret = {s["name"]: s["valueFrom"] for s in backend.get("secrets", [])}
    overrides = {
        "telemetry_transport": mode,
        "region": backend.get("logConfiguration", {}).get("options", {}).get("awslogs-region", "REGION"),
        "backend_image": backend.get("image"),
        "secret_key_secret_arn": secret.get("SECRET_KEY"),
        "config_api_key_secret_arn": secret.get("CONFIG_API_KEY"),
    }
    evaluate = Evaluator(tf, overrides)
    where = f"container-definitions.json.tftpl (telemetry_transport = {mode})"
    try:
        template_name, arguments = templatefile_call(definition["container_definitions"])
        values = {key: evaluate.value("${%s}" % expression) for key, expression in arguments.items()}
        template = (tf.directory / template_name).read_text()
        rendered, used = render_template(template, values)
    except (Unresolved, KeyError, json.JSONDecodeError) as error:
        report.fail(f"{name}: rendering {where}: {error}")
        return None
    report.ok(f"{where} renders as JSON with main.tf's {len(arguments)} arguments")
    # Without the sidecar, the collector's arguments are passed (null) but not rendered.
    unused = set(arguments) - used
    expected_unused = set() if mode == "collector" else {a for a in arguments if a.startswith("collector_")}
    report.check(unused == expected_unused, f"{where}: uses every argument main.tf passes it for this mode", str(unused ^ expected_unused))
    check_containers(rendered, where, report, mode)
    diff = differences(task["containerDefinitions"], rendered, (json_name, "the template"))
    report.check(
        not diff,
        f"{json_name}'s containers = the Terraform template rendered with telemetry_transport = {mode} and the other variables' defaults",
        "; ".join(diff[:6]),
    )
    if collector:
        report.check(
            evaluate.value("${var.collector_image}") == collector.get("image"),
            f"variables.tf's collector_image default = {json_name}'s collector image",
        )

    platform = block(definition, "runtime_platform")
    cpu_variable = tf.variables.get("cpu_architecture", {})
    conditions = " ".join(v.get("condition", "") for v in cpu_variable.get("validation", []))
    report.check(
        platform.get("cpu_architecture") == "${var.cpu_architecture}"
        and cpu_variable.get("default") == task["runtimePlatform"]["cpuArchitecture"] == "X86_64"
        and "ARM64" in conditions,
        f"runtime platform: var.cpu_architecture (X86_64 by default, ARM64 allowed); {json_name} has X86_64",
    )
    expected = {
        "family": (evaluate.value(definition.get("family")), task.get("family")),
        "cpu": (str(evaluate.value(definition.get("cpu"))), task.get("cpu")),
        "memory": (str(evaluate.value(definition.get("memory"))), task.get("memory")),
        "networkMode": (definition.get("network_mode"), task.get("networkMode")),
        "requiresCompatibilities": (definition.get("requires_compatibilities"), task.get("requiresCompatibilities")),
        "operatingSystemFamily": (platform.get("operating_system_family"), task["runtimePlatform"].get("operatingSystemFamily")),
        "executionRoleArn": (evaluate.value(definition.get("execution_role_arn")), task.get("executionRoleArn")),
        "taskRoleArn": (evaluate.value(definition.get("task_role_arn")), task.get("taskRoleArn")),
    }
    mismatched = {k: v for k, v in expected.items() if v[0] != v[1]}
    report.check(
        not mismatched and task["family"] == "apuntador-backend" and task["cpu"] == "512" and task["memory"] == "1024",
        f"{json_name}: family apuntador-backend, awsvpc, FARGATE, 512 CPU, 1024 MiB, roles: the JSON and Terraform agree",
        str(mismatched),
    )
    return rendered


# --- the collector image: validation and the digest warning ----------------------------------


def check_collector_image_variable(tf, report):
    """collector_image's validation refuses latest and untagged images and accepts a release tag,
    tag@digest and a digest; a check block (a warning at plan, not an error) asks for a digest
    when the image is pinned by tag only. Both conditions are evaluated on COLLECTOR_IMAGE_CASES."""
    body = tf.variables.get("collector_image", {})
    validations = [v.get("condition", "") for v in body.get("validation", [])]
    checks = {
        name: block(check, "assert").get("condition", "")
        for name, check in tf.checks.items()
        if "var.collector_image" in block(check, "assert").get("condition", "")
    }
    if not report.check(checks, "Terraform: a check block warns when collector_image is not pinned by digest", str(list(tf.checks))):
        checks = {}
    for value, valid, pinned in COLLECTOR_IMAGE_CASES:
        evaluate = HclExpression(tf, {"collector_image": value}, {})
        try:
            accepted = all(evaluate.evaluate(c) for c in validations) if validations else None
            warned = {name: not evaluate.evaluate(c) for name, c in checks.items()}
        except Unresolved as error:
            report.fail(f"collector_image {value}: condition not understood: {error}")
            continue
        report.check(
            accepted == valid,
            f"collector_image {value}: validation {'accepts' if valid else 'refuses'} it",
            f"it {'accepts' if accepted else 'refuses'} it" if accepted is not None else "no validation",
        )
        if valid and checks:
            report.check(
                all(w == (not pinned) for w in warned.values()),
                f"collector_image {value}: check {', '.join(checks)} {'passes' if pinned else 'warns (pinned by tag only)'}",
                str(warned),
            )


# --- the tasks' security groups: port 8000 from the load balancer only ---------------------------

LB_GROUP, LB_GROUP_2, TASK_GROUP, OTHER_GROUP = "sg-0a1b00000000000aa", "sg-0a1b00000000000ab", "sg-0c2d0000000000001", "sg-0e3f0000000000002"


def sample_rule(number, **fields):
    """A rule as the aws_vpc_security_group_rule data source exports it (every attribute)."""
    rule = {
        "id": f"sgr-{number:017x}", "security_group_rule_id": f"sgr-{number:017x}",
        "arn": f"arn:aws:ec2:eu-west-1:123456789012:security-group-rule/sgr-{number:017x}",
        "security_group_id": TASK_GROUP, "is_egress": False, "ip_protocol": "tcp",
        "from_port": 8000, "to_port": 8000, "cidr_ipv4": None, "cidr_ipv6": None,
        "prefix_list_id": None, "referenced_security_group_id": None, "description": None,
        "tags": {}, "region": "eu-west-1", "filter": None,
    }
    rule.update(fields)
    return rule


EGRESS_ALL = dict(is_egress=True, ip_protocol="-1", from_port=-1, to_port=-1, cidr_ipv4="0.0.0.0/0")
# (what, the tasks' rules besides an egress-to-anywhere rule, the ALB's groups, precondition holds)
SECURITY_GROUP_CASES = [
    ("TCP 8000 from the ALB's group", [dict(referenced_security_group_id=LB_GROUP)], [LB_GROUP], True),
    ("TCP 8000 from the ALB's second group, TCP 443 from the VPC",
     [dict(referenced_security_group_id=LB_GROUP_2), dict(from_port=443, to_port=443, cidr_ipv4="10.0.0.0/16")],
     [LB_GROUP, LB_GROUP_2], True),
    ("TCP 8000 from a VPC CIDR", [dict(referenced_security_group_id=LB_GROUP), dict(cidr_ipv4="10.0.0.0/16")], [LB_GROUP], False),
    ("all traffic from 0.0.0.0/0", [dict(referenced_security_group_id=LB_GROUP), dict(ip_protocol="-1", from_port=-1, to_port=-1, cidr_ipv4="0.0.0.0/0")], [LB_GROUP], False),
    ("TCP 8000 from ::/0", [dict(referenced_security_group_id=LB_GROUP), dict(cidr_ipv6="::/0")], [LB_GROUP], False),
    ("TCP 1024-65535 from a prefix list", [dict(referenced_security_group_id=LB_GROUP), dict(from_port=1024, to_port=65535, prefix_list_id="pl-0123456789abcdef0")], [LB_GROUP], False),
    ("all traffic from the tasks' own group (a default security group)",
     [dict(referenced_security_group_id=LB_GROUP), dict(ip_protocol="-1", from_port=-1, to_port=-1, referenced_security_group_id=TASK_GROUP)], [LB_GROUP], False),
    ("all traffic from the tasks' own group, which the ALB shares (so does everything else in it)",
     [dict(ip_protocol="-1", from_port=-1, to_port=-1, referenced_security_group_id=TASK_GROUP)], [LB_GROUP, TASK_GROUP], False),
    ("TCP 8000 from another group", [dict(referenced_security_group_id=OTHER_GROUP)], [LB_GROUP], False),
    ("no rule admitting port 8000 (the ALB cannot reach the tasks)", [dict(from_port=443, to_port=443, referenced_security_group_id=LB_GROUP)], [LB_GROUP], False),
]


def check_task_security_groups(tf, report):
    """The service's precondition: every ingress rule of the tasks' security groups that admits
    TCP 8000 references one of the listener's load balancer's security groups (no CIDR, IPv6
    CIDR, prefix list, or other group, the tasks' own included), and at least one does.
    Evaluated on SECURITY_GROUP_CASES with the data sources replaced by sample answers."""
    lookups = tf.data.get("aws_vpc_security_group_rules", {})
    rules = tf.data.get("aws_vpc_security_group_rule", {})
    balancers = tf.data.get("aws_lb", {})
    wired = [
        name for name, lookup in lookups.items()
        if any(f.get("name") == "group-id" and f.get("values") == "${var.security_group_ids}" for f in lookup.get("filter", []))
    ]
    report.check(len(wired) == 1, "Terraform: data.aws_vpc_security_group_rules lists the rules of var.security_group_ids", str(list(lookups)))
    per_rule = [
        name for name, rule in rules.items()
        if wired and rule.get("for_each") == "${toset(data.aws_vpc_security_group_rules.%s.ids)}" % wired[0]
        and rule.get("security_group_rule_id") in ("${each.value}", "${each.key}")
    ]
    report.check(len(per_rule) == 1, "Terraform: data.aws_vpc_security_group_rule reads each of those rules", str(list(rules)))
    balancer = [n for n, b in balancers.items() if b.get("arn") == "${data.aws_lb_listener.https.load_balancer_arn}"]
    report.check(len(balancer) == 1, "Terraform: data.aws_lb is the listener's load balancer (its security groups)", str(list(balancers)))
    services = tf.resource("aws_ecs_service")
    for service_name, service in services.items():
        conditions = [
            p.get("condition", "") for p in block(service, "lifecycle").get("precondition", [])
            if "security_group" in p.get("condition", "") or "local." in p.get("condition", "")
        ]
        if not report.check(conditions, f"service {service_name}: a precondition on the tasks' security groups"):
            continue
        if not (per_rule and balancer):
            report.fail(f"service {service_name}: security group precondition not evaluated (data sources missing)")
            continue
        for label, extra, lb_groups, expected in SECURITY_GROUP_CASES:
            sample = [sample_rule(1, **EGRESS_ALL)] + [sample_rule(n + 2, **fields) for n, fields in enumerate(extra)]
            data = {
                ("aws_vpc_security_group_rule", per_rule[0]): {r["id"]: r for r in sample},
                ("aws_vpc_security_group_rules", wired[0]): {"ids": [r["id"] for r in sample]},
                ("aws_lb", balancer[0]): {"security_groups": lb_groups, "arn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/shared/0123456789abcdef"},
            }
            evaluate = HclExpression(tf, {"security_group_ids": [TASK_GROUP]}, data)
            try:
                holds = all(evaluate.evaluate(c) for c in conditions)
            except Unresolved as error:
                report.fail(f"service {service_name}: security group precondition not understood: {error}")
                break
            report.check(
                holds == expected,
                f"service {service_name}: security group precondition {'holds' if expected else 'fails'}: {label}",
                f"it {'holds' if holds else 'fails'}",
            )


# --- the post-deploy check of the mutual-TLS header -----------------------------------------------


def check_forged_header_script(ecs, report):
    """deploy/ecs/check-forged-header.sh, run against loopback stand-ins for the deployed API:
    it must send GET /device/status/<id> with one X-Amzn-Mtls-Clientcert header holding a
    URL-encoded PEM certificate, and exit 0 only when the answer is the backend's 401
    (client_certificate_required)."""
    import http.server
    import threading
    import urllib.parse

    script = ecs / "check-forged-header.sh"
    if not report.check(script.is_file() and os.access(script, os.X_OK), "check-forged-header.sh: present and executable"):
        return
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    report.check(syntax.returncode == 0, "check-forged-header.sh: bash -n", syntax.stderr.strip())
    problem = {"type": "about:blank", "status": 401, "code": "client_certificate_required"}
    rejected = {"type": "about:blank", "status": 403, "code": "client_certificate_rejected"}
    with tempfile.TemporaryDirectory() as scratch:
        device_pem = Path(scratch, "device.pem")
        made = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
             "-subj", "/CN=my-device-01", "-keyout", str(Path(scratch, "device.key")), "-out", str(device_pem)],
            capture_output=True, text=True, timeout=30,
        )
        if not report.check(made.returncode == 0, "check-forged-header.sh: a sample device certificate (openssl)", made.stderr[-300:]):
            return
        cases = [
            ("the API answers 401 client_certificate_required", 401, problem, [], "forged-header-check", 0),
            ("the API answers 403 client_certificate_rejected (the header was trusted)", 403, rejected, [], "forged-header-check", 1),
            ("something in front answers 401 without client_certificate_required", 401, {"message": "Unauthorized"}, [], "forged-header-check", 1),
            ("the API answers 200 to a real device's certificate", 200, {"device_id": "my-device-01"},
             ["--cert", str(device_pem), "--device-id", "my-device-01"], "my-device-01", 1),
        ]
        for label, status, body, arguments, device, expected in cases:
            seen = []

            class StandIn(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    seen.append((self.command, self.path, self.headers.get_all("X-Amzn-Mtls-Clientcert") or []))
                    payload = json.dumps(body).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/problem+json" if status >= 400 else "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

                def log_message(self, *args):
                    pass

            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
            thread.start()
            environment = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
            try:
                result = subprocess.run(
                    [str(script), *arguments, "--timeout", "10", f"http://127.0.0.1:{server.server_port}/"],
                    capture_output=True, text=True, timeout=60, env=environment,
                )
                code, output = result.returncode, result.stdout + result.stderr
            except subprocess.TimeoutExpired:
                code, output = "timeout", ""
            finally:
                server.shutdown()
                server.server_close()
            request_ok = len(seen) == 1 and seen[0][:2] == ("GET", f"/device/status/{device}") and len(seen[0][2]) == 1
            certificate = urllib.parse.unquote(seen[0][2][0]) if request_ok else ""
            sent_ok = certificate.startswith("-----BEGIN CERTIFICATE-----") and certificate.count("-----BEGIN") == 1
            if arguments:
                sent_ok = sent_ok and certificate.strip() == device_pem.read_text().strip()
            report.check(
                request_ok and sent_ok and code == expected,
                f"check-forged-header.sh: {label} → exit {code} (expected {expected})",
                f"requests {[(m, p, len(h)) for m, p, h in seen]}, certificate sent: {sent_ok}; "
                f"output: {' | '.join(output.strip().splitlines())[-300:]}",
            )


# --- collector configuration and compose -------------------------------------------------------


def check_collector(path, exporter, bind, report, limit=None):
    """A collector configuration: OTLP in on `bind`, batch, `exporter` out, health_check, and
    only components the pinned image's build contains. The ECS ones (`limit`: they are stored in
    the SSM parameter) also serve awsproxy; otlphttp goes to X-Ray's OTLP endpoint of the
    container's region, signed by sigv4auth, in batches the endpoint accepts."""
    import yaml

    text = path.read_text()
    config = yaml.safe_load(text)
    where = path.name
    if limit:
        report.check(len(text.encode()) < limit, f"{where}: {len(text.encode())} bytes, under the SSM Standard tier's {limit}")
    foreign = [
        f"{kind[:-1]} {name}"
        for kind, allowed in COLLECTOR_COMPONENTS.items()
        for name in (config.get(kind) or {})
        if name.split("/", 1)[0] not in allowed
    ]
    report.check(not foreign, f"{where}: every component is in the pinned image's build (aws-otel-collector v0.49.0)", f"not in it: {foreign}")
    protocols = config.get("receivers", {}).get("otlp", {}).get("protocols", {})
    report.check(
        protocols.get("grpc", {}).get("endpoint") == f"{bind}:4317" and protocols.get("http", {}).get("endpoint") == f"{bind}:4318",
        f"{where}: OTLP receivers on {bind}:4317 (grpc) and {bind}:4318 (http)",
        json.dumps(protocols),
    )
    batch = config.get("processors", {}).get("batch", {}) or {}
    report.check(batch.get("timeout") == "1s", f"{where}: batch processor, timeout 1s")
    exporters = config.get("exporters", {})
    report.check(list(exporters) == [exporter], f"{where}: exporters {list(exporters)}", f"expected [{exporter}]")
    extensions = config.get("extensions", {})
    if exporter == "awsxray":
        report.check(
            "indexed_attributes" not in (exporters.get("awsxray") or {}),
            f"{where}: awsxray without indexed_attributes (spans name their annotations in aws.xray.annotations)",
        )
    if exporter == "otlphttp":
        settings = exporters.get("otlphttp") or {}
        authenticator = (settings.get("auth") or {}).get("authenticator")
        report.check(
            settings.get("traces_endpoint") == "https://xray.${env:AWS_REGION}.amazonaws.com/v1/traces"
            and settings.get("compression") == "gzip",
            f"{where}: otlphttp to X-Ray's OTLP endpoint of the container's region (${{env:AWS_REGION}}), gzip",
            json.dumps(settings),
        )
        report.check(
            authenticator == "sigv4auth"
            and extensions.get("sigv4auth") == {"region": "${env:AWS_REGION}", "service": "xray"},
            f"{where}: otlphttp signed by sigv4auth (region ${{env:AWS_REGION}}, service xray)",
            f"authenticator {authenticator!r}, sigv4auth {extensions.get('sigv4auth')}",
        )
        size = batch.get("send_batch_max_size")
        report.check(
            isinstance(size, int) and 0 < size <= OTLP_ENDPOINT_MAX_SPANS and batch.get("send_batch_size", 8192) <= size,
            f"{where}: batches of at most {size} spans (X-Ray's OTLP endpoint takes {OTLP_ENDPOINT_MAX_SPANS:,} a request)",
            json.dumps(batch),
        )
    if limit:
        report.check("# awsemf:" in text, f"{where}: a commented place for the metrics exporter (awsemf)")
        report.check(
            (extensions.get("awsproxy") or {}).get("endpoint") == "127.0.0.1:2000",
            f"{where}: awsproxy on 127.0.0.1:2000 (X-Ray centralized sampling)",
        )
    health = (extensions.get("health_check") or {}).get("endpoint", "")
    report.check(health.endswith(":13133"), f"{where}: health_check on {health} (what /healthcheck probes)")
    service = config.get("service", {})
    traces = service.get("pipelines", {}).get("traces", {})
    report.check(
        traces == {"receivers": ["otlp"], "processors": ["batch"], "exporters": [exporter]},
        f"{where}: traces pipeline otlp → batch → {exporter}",
        json.dumps(traces),
    )
    report.check(
        set(service.get("extensions", [])) == set(extensions),
        f"{where}: service enables the extensions {service.get('extensions')}",
    )


# --- Transaction Search and the span queries -----------------------------------------------------


def check_transaction_search(tf, root, report):
    """transaction_search: its resources exist only with enable (the aws/spans resource policy,
    then the trace segment destination, then the Default indexing rule), the span queries with
    enable and already-enabled, one per file of deploy/queries/spans read with file(); the
    provider version has the X-Ray resources."""
    variable = tf.variables.get("transaction_search", {})
    conditions = " ".join(v.get("condition", "") for v in variable.get("validation", []))
    description = " ".join(str(variable.get("description", "")).split())
    report.check(
        variable.get("default") == "off" and all(f'"{v}"' in conditions for v in ("off", "enable", "already-enabled"))
        and all(word in description for word in ("account", "region", "one configuration")),
        "variable transaction_search: off (default), enable, already-enabled; says it is an account-and-region setting one configuration should own",
        f"default {variable.get('default')!r}, validation {conditions}",
    )
    owned = {
        "aws_cloudwatch_log_resource_policy": "transaction_search",
        "aws_xray_trace_segment_destination": "transaction_search",
        "aws_xray_indexing_rule": "transaction_search",
    }
    bodies = {type_: tf.resource(type_, name) for type_, name in owned.items()}
    if not report.check(all(bodies.values()), f"Terraform: {', '.join(f'{k}.{v}' for k, v in owned.items())}", str([k for k, v in bodies.items() if not v])):
        return
    destination, rule = bodies["aws_xray_trace_segment_destination"], bodies["aws_xray_indexing_rule"]
    report.check(
        destination.get("destination") == "CloudWatchLogs"
        and "${aws_cloudwatch_log_resource_policy.transaction_search}" in destination.get("depends_on", []),
        "trace segment destination CloudWatchLogs, after the aws/spans resource policy (depends_on)",
        json.dumps(destination),
    )
    probabilistic = block(block(rule, "rule"), "probabilistic")
    report.check(
        rule.get("name") == "Default"
        and probabilistic.get("desired_sampling_percentage") == "${var.transaction_search_indexing_percentage}"
        and "${aws_xray_trace_segment_destination.transaction_search}" in rule.get("depends_on", []),
        "indexing rule Default at var.transaction_search_indexing_percentage, after the destination (depends_on)",
        json.dumps(rule),
    )
    percentage = tf.variables.get("transaction_search_indexing_percentage", {})
    report.check(percentage.get("default") == 1, "transaction_search_indexing_percentage defaults to 1", str(percentage.get("default")))
    policy = bodies["aws_cloudwatch_log_resource_policy"]
    m = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", policy.get("policy_document", ""))
    document = tf.data.get("aws_iam_policy_document", {}).get(m.group(1)) if m else None
    statements_ = (document or {}).get("statement", [])
    logs = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:"
    expected = {
        "effect": "Allow",
        "actions": ["logs:PutLogEvents"],
        "resources": [f"{logs}aws/spans:*", f"{logs}/aws/application-signals/data:*"],
        "principals": [{"type": "Service", "identifiers": ["xray.amazonaws.com"]}],
        "condition": [
            {"test": "ArnLike", "variable": "aws:SourceArn", "values": ["arn:${local.partition}:xray:${var.region}:${local.account_id}:*"]},
            {"test": "StringEquals", "variable": "aws:SourceAccount", "values": ["${local.account_id}"]},
        ],
    }
    wrong = {k: v for k, v in expected.items() if len(statements_) != 1 or statements_[0].get(k) != v}
    report.check(
        not wrong,
        "aws/spans resource policy: X-Ray only, logs:PutLogEvents on aws/spans and /aws/application-signals/data, for this account's X-Ray (AWS's document)",
        f"differs in {sorted(wrong)}: {json.dumps(statements_)[:300]}",
    )
    queries = tf.resource("aws_cloudwatch_query_definition", "spans") or {}
    files = sorted(p.stem for p in (root / QUERY_DIR).glob("*.query"))
    report.check(
        queries.get("query_string") == '${replace(file("${path.module}/../../queries/spans/${each.key}.query"), "apuntador-backend", var.name)}'
        and queries.get("log_group_names") == ["aws/spans"] and queries.get("name") == "${var.name}/spans/${each.key}",
        "span queries: <name>/spans/<file>, over aws/spans, each file's text read with file() (service name: var.name)",
        json.dumps(queries)[:300],
    )
    report.check(
        (tf.directory / ".." / ".." / "queries" / "spans").resolve() == (root / QUERY_DIR).resolve(),
        f"the query files Terraform reads are {QUERY_DIR}",
    )
    for value in ("off", "enable", "already-enabled"):
        evaluate = HclExpression(tf, {"transaction_search": value}, {})
        try:
            counts = {type_: evaluate.evaluate(body.get("count", "1")) for type_, body in bodies.items()}
            names = sorted(evaluate.evaluate(queries.get("for_each", "[]")))
        except Unresolved as error:
            report.fail(f"transaction_search = {value}: count or for_each not understood: {error}")
            continue
        owns = value == "enable"
        report.check(
            all(count == (1 if owns else 0) for count in counts.values()),
            f"transaction_search = {value}: {'creates' if owns else 'creates none of'} the resource policy, destination and indexing rule",
            str(counts),
        )
        report.check(
            names == ([] if value == "off" else files),
            f"transaction_search = {value}: saves {'no query' if value == 'off' else 'one query per file: ' + ', '.join(files)}",
            str(names),
        )
    providers = {}
    for path in tf.files:
        m = re.search(r'aws\s*=\s*\{[^}]*version\s*=\s*"~>\s*(\d+)\.(\d+)"', path.read_text(), re.S)
        if m:
            providers[path.name] = (int(m.group(1)), int(m.group(2)))
    report.check(
        list(providers.values()) and all(v >= (6, 46) and v[0] == 6 for v in providers.values()),
        "hashicorp/aws ~> 6.46 (aws_xray_trace_segment_destination and aws_xray_indexing_rule appeared in 6.46.0)",
        str(providers),
    )


def check_log_queries(tf, root, report):
    """The queries over the backend's lines: <name>/logs/<file> over the backend's log group,
    each file of deploy/queries/logs but the Lambda-only ones read with file()."""
    queries = tf.resource("aws_cloudwatch_query_definition", "logs") or {}
    report.check(
        queries.get("query_string") == '${file("${path.module}/../../queries/logs/${each.key}.query")}'
        and queries.get("log_group_names") == ["${aws_cloudwatch_log_group.backend.name}"]
        and queries.get("name") == "${var.name}/logs/${each.key}",
        "log queries: <name>/logs/<file>, over the backend's log group, each file's text read with file()",
        json.dumps(queries)[:300],
    )
    report.check(
        (tf.directory / ".." / ".." / "queries" / "logs").resolve() == (root / LOG_QUERY_DIR).resolve(),
        f"the log query files Terraform reads are {LOG_QUERY_DIR}",
    )
    files = sorted(p.stem for p in (root / LOG_QUERY_DIR).glob("*.query") if p.stem not in LAMBDA_ONLY_QUERIES)
    try:
        names = sorted(HclExpression(tf, {}, {}).evaluate(queries.get("for_each", "[]")))
    except Unresolved as error:
        report.fail(f"log queries: for_each not understood: {error}")
        return
    report.check(
        names == files,
        f"log queries: one per file of {LOG_QUERY_DIR} but {', '.join(sorted(LAMBDA_ONLY_QUERIES))}: {', '.join(files)}",
        str(names),
    )
    namespace = tf.variables.get("metrics_namespace", {})
    report.check(namespace.get("default") == "Apuntador", "variable metrics_namespace defaults to Apuntador (template.yaml's MetricsNamespace)", str(namespace.get("default")))


def check_compose(path, report):
    import yaml

    compose = yaml.safe_load(path.read_text())
    services = compose.get("services", {})
    backend = services.get("backend", {})
    collector = services.get("otel-collector", {})
    build = backend.get("build", {})
    report.check(build.get("context") == "../.." and build.get("dockerfile") == "Dockerfile", "compose: backend built from the repository's Dockerfile")
    environment = backend.get("environment", {})
    report.check(
        environment.get("HOST") == "0.0.0.0" and environment.get("ENVIRONMENT") == "local"
        and environment.get("ENABLE_DOCS") == "true"
        and environment.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://otel-collector:4318",
        "compose: backend HOST=0.0.0.0, ENVIRONMENT=local, ENABLE_DOCS=true, OTLP to otel-collector:4318",
    )
    report.check(
        backend.get("healthcheck", {}).get("test") == ["CMD", "/apuntador-backend", "healthcheck"],
        "compose: backend health check is the healthcheck subcommand",
    )
    report.check(
        backend.get("depends_on", {}).get("otel-collector", {}).get("condition") == "service_healthy",
        "compose: backend waits for the collector to be healthy",
    )
    image = collector.get("image", "")
    report.check(PINNED_COLLECTOR.match(image), f"compose: collector image pinned by digest ({image})")
    for name, service, expected in (("backend", backend, BACKEND_USER), ("otel-collector", collector, COLLECTOR_USER)):
        report.check(
            str(service.get("user")) == expected,
            f"compose: {name} runs as the non-root user {expected}, explicitly",
            f"user {service.get('user')!r}",
        )
    report.check(collector.get("healthcheck", {}).get("test") == ["CMD", "/healthcheck"], "compose: collector health check /healthcheck")
    mounted = [v for v in collector.get("volumes", []) if v.startswith("./collector.local.yaml:")]
    report.check(mounted, "compose: collector runs collector.local.yaml")
    ports = [str(p) for p in backend.get("ports", []) + collector.get("ports", [])]
    report.check(
        any(p.endswith(":8000") for p in ports) and any(p.endswith(":13133") for p in ports),
        f"compose: ports {', '.join(ports)}",
    )
    return image


# --- checkov -----------------------------------------------------------------------------------


def checkov_binary():
    if os.environ.get("CHECKOV"):
        return os.environ["CHECKOV"]
    cache = Path(os.environ.get("APUNTADOR_CACHE", Path.home() / ".cache" / "apuntador-backend"))
    venv = cache / "venv-checkov"
    requirements = REPO / "scripts" / "requirements-checkov.txt"
    stamp = venv / ".requirements"
    binary = venv / "bin" / "checkov"
    if not binary.exists() or not stamp.exists() or stamp.read_text() != requirements.read_text():
        print(f"..    installing checkov into {venv} (scripts/requirements-checkov.txt)", flush=True)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-r", str(requirements)],
            check=True,
        )
        stamp.write_text(requirements.read_text())
    return str(binary)


def run_checkov(binary, directory, label, report):
    # --skip-download: no Prisma Cloud look-ups (guidelines, severities); the checks are local.
    command = [binary, "-d", str(directory), "--quiet", "--compact", "--skip-download"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    summary = re.search(r"Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", result.stdout)
    counts = summary.group(0) if summary else "no summary"
    if not report.check(result.returncode == 0 and summary and summary.group(2) == "0", f"checkov {label}: {counts}"):
        print(result.stdout[-4000:] + result.stderr[-2000:])
    return summary


def check_checkov(terraform_dir, rendered_by_mode, report):
    skips = []
    for path in sorted(terraform_dir.glob("*.tf")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            m = CHECKOV_SKIP.search(line)
            if m:
                skips.append((f"{path.name}:{number}", m.group(1), (m.group(2) or "").strip()))
    for where, check_id, reason in skips:
        report.check(len(reason) >= 30, f"checkov skip {check_id} ({where}): {reason}", "a skip needs its reason")
    binary = checkov_binary()
    run_checkov(binary, terraform_dir, "deploy/ecs/terraform", report)
    if not rendered_by_mode or None in rendered_by_mode.values():
        report.fail("checkov of the rendered container definitions: not every mode rendered")
        return
    # checkov reads container_definitions only when it is literal JSON, not a templatefile()
    # call: give it each mode's rendered containers in a task definition of its own.
    with tempfile.TemporaryDirectory() as scratch:
        for mode, rendered in rendered_by_mode.items():
            body = json.dumps(rendered, indent=2)
            Path(scratch, f"rendered-{mode}.tf").write_text(
                f'resource "aws_ecs_task_definition" "rendered_{mode.replace("-", "_")}" {{\n'
                '  family                   = "apuntador-backend"\n'
                '  network_mode             = "awsvpc"\n'
                '  requires_compatibilities = ["FARGATE"]\n'
                "  cpu                      = 512\n"
                "  memory                   = 1024\n"
                '  execution_role_arn       = "arn:aws:iam::123456789012:role/apuntador-backend-execution"\n'
                '  task_role_arn            = "arn:aws:iam::123456789012:role/apuntador-backend-task"\n'
                f"  container_definitions    = <<-JSON\n{body}\n  JSON\n}}\n"
            )
        run_checkov(binary, Path(scratch), f"of the rendered container definitions ({', '.join(rendered_by_mode)})", report)


# --- moto: the ECS API model -------------------------------------------------------------------


def check_moto(task, report, json_name="task-definition.json"):
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="eu-west-1",
    )
    os.environ.pop("AWS_PROFILE", None)
    import boto3
    from moto import mock_aws

    request = json.loads(json.dumps(task).replace("ACCOUNT", "123456789012").replace("REGION", "eu-west-1"))
    with mock_aws():
        ecs = boto3.client("ecs", region_name="eu-west-1")
        try:
            answer = ecs.register_task_definition(**request)["taskDefinition"]
        except Exception as error:  # botocore's validation against the ECS model, or moto's
            report.fail(f"moto ECS: register_task_definition refused {json_name}: {error}")
            return
        report.ok(f"moto ECS: register_task_definition accepted {json_name} as {answer['taskDefinitionArn']}")
        described = ecs.describe_task_definition(taskDefinition="apuntador-backend")["taskDefinition"]
        echoed = containers_by_name(described["containerDefinitions"])
        sent = containers_by_name(request["containerDefinitions"])
        report.check(list(echoed) == list(sent), f"moto ECS: echoes the containers {list(echoed)}")
        for name, container in sent.items():
            got = echoed.get(name, {})
            fields = ["image", "essential", "healthCheck", "dependsOn", "stopTimeout", "secrets", "environment",
                      "readonlyRootFilesystem", "user", "command", "logConfiguration", "portMappings"]
            changed = [f for f in fields if f in container and got.get(f) != container[f]]
            report.check(not changed, f"moto ECS: {name} echoed with its health check, dependencies, secrets, environment", str(changed))
        report.check(
            described.get("runtimePlatform") == request["runtimePlatform"]
            and described.get("networkMode") == "awsvpc"
            and described.get("requiresCompatibilities") == ["FARGATE"],
            "moto ECS: runtime platform, awsvpc, FARGATE echoed",
        )


# --- the whole -----------------------------------------------------------------------------------


def run(root, skip):
    report = Report()
    ecs = root / "deploy" / "ecs"
    terraform_dir = ecs / "terraform"
    from cfnlint.decode import decode

    template, matches = decode(str(root / "template.yaml"))
    if matches:
        report.fail(f"template.yaml does not parse: {matches}")
        return report
    try:
        tf = Terraform(terraform_dir)
    except Exception as error:  # a syntax error, reported by python-hcl2
        report.fail(f"Terraform does not parse: {error}")
        return report
    report.ok(f"Terraform parses: {', '.join(p.name for p in tf.files)}")
    check_iam(tf, report)
    check_roles_by_transport(tf, report)
    check_collector_exporter(tf, report)
    check_terraform_resources(tf, report, template["Resources"]["CertificateTable"])
    check_id_table(tf, report, template["Resources"]["SingleUseTable"], "single_use", "single-use", ["dynamodb:PutItem"])
    check_id_table(
        tf, report, template["Resources"]["AttestationTable"], "attestation", "attestation",
        ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
    )
    tasks = check_task_definition(tf, ecs, report)
    check_collector_image_variable(tf, report)
    check_task_security_groups(tf, report)
    for file, component in COLLECTOR_FILES.values():
        check_collector(ecs / file, component, "127.0.0.1", report, limit=4096)
    check_collector(ecs / "collector.local.yaml", "debug", "0.0.0.0", report)
    check_transaction_search(tf, root, report)
    check_log_queries(tf, root, report)
    compose_image = check_compose(ecs / "compose.yaml", report)
    task = tasks.get("collector", ({"containerDefinitions": []}, None))[0]
    task_image = containers_by_name(task["containerDefinitions"]).get("aws-otel-collector", {}).get("image")
    report.check(compose_image == task_image, "compose.yaml's collector image = task-definition.json's", f"{compose_image} vs {task_image}")
    check_forged_header_script(ecs, report)
    if "checkov" not in skip:
        check_checkov(terraform_dir, {mode: rendered for mode, (_, rendered) in tasks.items()}, report)
    if "moto" not in skip:
        for mode, (task, _) in tasks.items():
            check_moto(task, report, MODES[mode])
    return report


# Deliberately broken copies: (name, file under deploy/ecs, change, what the failure names).
def _json_edit(edit):
    def apply(text):
        data = json.loads(text)
        edit(data)
        return json.dumps(data, indent=2)
    return apply


def _replace(old, new):
    def apply(text):
        if old not in text:
            raise SystemExit(f"self-test: {old!r} not found")
        return text.replace(old, new, 1)
    return apply


def _sub(pattern, replacement):
    def apply(text):
        changed, count = re.subn(pattern, replacement, text, count=1, flags=re.S)
        if not count:
            raise SystemExit(f"self-test: {pattern!r} not found")
        return changed
    return apply


BREAKAGES = [
    ('a "*" resource on the DynamoDB statement', "terraform/iam.tf",
     _replace("resources = [aws_dynamodb_table.certificates.arn]", 'resources = ["*"]'), '"*" resource'),
    ("the single-use table's records deletable by the task", "terraform/iam.tf",
     _replace('actions   = ["dynamodb:PutItem"]', 'actions   = ["dynamodb:PutItem", "dynamodb:DeleteItem"]'),
     "not dynamodb:PutItem alone"),
    ("the single-use table without its time-to-live", "terraform/main.tf",
     _replace('  ttl {\n    attribute_name = "expires_at"\n    enabled        = true\n  }\n', ""),
     "single-use table: key, attributes and time-to-live"),
    ("the attestation table scannable by the task", "terraform/iam.tf",
     _replace('"dynamodb:UpdateItem"]\n    resources = [aws_dynamodb_table.attestation.arn]',
              '"dynamodb:UpdateItem", "dynamodb:Scan"]\n    resources = [aws_dynamodb_table.attestation.arn]'),
     "on the attestation table, not GetItem, PutItem and UpdateItem"),
    ("dynamodb:Scan added", "terraform/iam.tf",
     _replace('"dynamodb:UpdateItem"]', '"dynamodb:UpdateItem", "dynamodb:Scan"]'), "dynamodb:Scan"),
    ("the backend's health check removed from task-definition.json", "task-definition.json",
     _json_edit(lambda d: d["containerDefinitions"][0].pop("healthCheck")), "backend has a health check"),
    ("the collector's health check removed from the Terraform template", "terraform/container-definitions.json.tftpl",
     _replace('"healthCheck": {\n      "command": ["CMD", "/healthcheck"],\n      "interval": 10,\n      "timeout": 5,\n'
              '      "retries": 3,\n      "startPeriod": 10\n    },\n', ""), "aws-otel-collector has a health check"),
    ("dependsOn START in task-definition.json", "task-definition.json",
     _json_edit(lambda d: d["containerDefinitions"][0]["dependsOn"][0].update(condition="START")), "HEALTHY"),
    ("the collector image on latest", "task-definition.json",
     _replace("aws-otel-collector:v0.49.0", "aws-otel-collector:latest"), "collector image pinned"),
    ("the target group health check on /", "terraform/main.tf",
     _replace('path                = "/health"', 'path                = "/"'), "GET /health"),
    ("stopTimeout removed from the Terraform template", "terraform/container-definitions.json.tftpl",
     _replace('"stopTimeout": 30,\n', ""), "stopTimeout"),
    # Issue 23, item 9: the collector's user, the digest pin, the security group precondition,
    # the post-deploy script.
    ("the collector's user removed from task-definition.json", "task-definition.json",
     _json_edit(lambda d: d["containerDefinitions"][1].pop("user")), "aws-otel-collector runs as the non-root user"),
    ("the collector as root in the Terraform template", "terraform/container-definitions.json.tftpl",
     _replace('"user": "4317:4317"', '"user": "0:0"'), "aws-otel-collector runs as the non-root user"),
    ("compose's collector without a user", "compose.yaml",
     _replace('    user: "4317:4317"\n', ""), "compose: otel-collector runs as the non-root user"),
    ("the collector image's digest dropped from task-definition.json", "task-definition.json",
     _sub(r"(aws-otel-collector:v[0-9.]+)@sha256:[0-9a-f]{64}", r"\1"), "collector image pinned by digest"),
    ("compose's collector image by tag only", "compose.yaml",
     _sub(r"(aws-otel-collector:v[0-9.]+)@sha256:[0-9a-f]{64}", r"\1"), "compose: collector image pinned by digest"),
    ("the digest check block removed", "terraform/variables.tf",
     _sub(r'check "collector_image_pinned_by_digest" \{.*?\n\}\n', ""), "a check block warns"),
    ("the digest check satisfied by a tag alone", "terraform/variables.tf",
     _replace('can(regex("@sha256:[0-9a-f]{64}$", var.collector_image))',
              'can(regex("(:v?[0-9]+\\\\.[0-9]+\\\\.[0-9]+|@sha256:[0-9a-f]{64})$", var.collector_image))'),
     "warns (pinned by tag only)"),
    ("the service's security group precondition removed", "terraform/main.tf",
     _sub(r"\n  lifecycle \{\n    precondition \{\n      # Port 8000 from the load balancer only.*?\n  \}\n", "\n"),
     "a precondition on the tasks' security groups"),
    ("the precondition counting egress rules", "terraform/main.tf",
     _replace("if !rule.is_egress && (", "if ("), "precondition holds: TCP 8000 from the ALB's group"),
    ("the precondition overlooking all-protocol rules", "terraform/main.tf",
     _replace('rule.ip_protocol == "-1" || ', ""), "precondition fails: all traffic from 0.0.0.0/0"),
    ("the precondition trusting the tasks' own group", "terraform/main.tf",
     _replace(' || contains(var.security_group_ids, coalesce(rule.referenced_security_group_id, "none"))', ""),
     "precondition fails: all traffic from the tasks' own group, which the ALB shares"),
    ("check-forged-header.sh passing on any answer but 200", "check-forged-header.sh",
     _replace('[ "$status" = 401 ] && grep -q client_certificate_required "$scratch/body"', '[ "$status" != 200 ]'),
     "(the header was trusted) → exit 0"),
    ("check-forged-header.sh sending the wrong header", "check-forged-header.sh",
     _replace('--header "X-Amzn-Mtls-Clientcert: $header"', '--header "X-Client-Cert: $header"'),
     "check-forged-header.sh: the API answers 401 client_certificate_required"),
    # Issue 24: the otlp-xray transport, the collectors' exporters, Transaction Search.
    ("the backend's dependsOn kept without the sidecar", "terraform/container-definitions.json.tftpl",
     _sub(r'%\{ if telemetry_transport == "collector" ~\}\n(    "dependsOn".*?\n    \],\n)%\{ endif ~\}\n', r"\1"),
     "backend depends on no container"),
    ("the sampling actions granted without the sidecar", "terraform/iam.tf",
     _replace('actions   = ["xray:PutTraceSegments"]',
              'actions   = ["xray:PutTraceSegments", "xray:GetSamplingRules"]'),
     "telemetry_transport = otlp-xray, collector_exporter = otlp-xray, transaction_search = off): the task role's X-Ray actions"),
    ("PutTelemetryRecords for the otlphttp exporter too", "terraform/iam.tf",
     _replace('local.collector && local.collector_awsxray ?', "local.collector ?"),
     "telemetry_transport = collector, collector_exporter = otlp-xray, transaction_search = enable): the task role's X-Ray actions"),
    ("PutTelemetryRecords for explicit awsxray only, not for auto without Transaction Search", "terraform/iam.tf",
     _replace('local.collector && local.collector_awsxray ?', 'local.collector && var.collector_exporter == "awsxray" ?'),
     "telemetry_transport = collector, collector_exporter = auto, transaction_search = off (auto: awsxray)): the task role's X-Ray actions"),
    ("auto with transaction_search off exporting with otlphttp (collector.yaml)", "terraform/main.tf",
     _replace(' || (var.collector_exporter == "auto" && var.transaction_search == "off")', ""),
     "SSM parameter (collector_exporter = auto, transaction_search = off (auto: awsxray)): the collector parameter holds collector.awsxray.yaml"),
    ("auto exporting with awsxray once Transaction Search is on", "terraform/main.tf",
     _replace('(var.collector_exporter == "auto" && var.transaction_search == "off")', '(var.collector_exporter == "auto")'),
     "SSM parameter (collector_exporter = auto, transaction_search = enable (auto: otlp-xray)): the collector parameter holds collector.yaml"),
    ("the collector parameter's value ignoring auto", "terraform/main.tf",
     _replace('value       = local.collector_awsxray ?', 'value       = var.collector_exporter == "awsxray" ?'),
     "SSM parameter (collector_exporter = auto, transaction_search = off (auto: awsxray)): the collector parameter holds"),
    ("the collector parameter's description naming the other file", "terraform/main.tf",
     _replace('collector${local.collector_awsxray ? ".awsxray" : ""}.yaml', 'collector${var.collector_exporter == "awsxray" ? ".awsxray" : ""}.yaml'),
     "SSM parameter (collector_exporter = auto, transaction_search = off (auto: awsxray)): the collector parameter holds"),
    ("collector_exporter defaulting to otlp-xray again", "terraform/variables.tf",
     _replace('default     = "auto"', 'default     = "otlp-xray"'),
     "variable collector_exporter: auto (default)"),
    ("collector_exporter's validation refusing auto", "terraform/variables.tf",
     _replace('contains(["auto", "otlp-xray", "awsxray"], var.collector_exporter)', 'contains(["otlp-xray", "awsxray"], var.collector_exporter)'),
     "variable collector_exporter: auto (default)"),
    ("the collector parameter readable without the sidecar", "terraform/iam.tf",
     _sub(r'for_each = local\.collector \? \["collector"\] : \[\]\n    content \{\n      sid       = "ReadTheCollectorConfig"',
          'for_each = ["collector"]\n    content {\n      sid       = "ReadTheCollectorConfig"'),
     "the execution role has nothing of the collector"),
    ("otlp-xray's JSON still sending to the sidecar's endpoint", "task-definition.otlp-xray.json",
     _json_edit(lambda d: d["containerDefinitions"][0]["environment"].insert(
         7, {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://localhost:4318"})),
     "task-definition.otlp-xray.json: backend environment"),
    ("the sidecar's otlphttp to a fixed region", "collector.yaml",
     _replace('traces_endpoint: "https://xray.${env:AWS_REGION}.amazonaws.com/v1/traces"',
              'traces_endpoint: "https://xray.us-east-1.amazonaws.com/v1/traces"'),
     "collector.yaml: otlphttp to X-Ray's OTLP endpoint"),
    ("the sidecar's otlphttp unsigned", "collector.yaml",
     _replace("    auth:\n      authenticator: sigv4auth\n", ""),
     "collector.yaml: otlphttp signed by sigv4auth"),
    ("a processor the pinned image lacks", "collector.yaml",
     _replace("processors:\n", "processors:\n  transform: {}\n"),
     "collector.yaml: every component is in the pinned image's build"),
    ("batches larger than X-Ray's OTLP endpoint takes", "collector.yaml",
     _replace("send_batch_max_size: 1024", "send_batch_max_size: 20000"),
     "collector.yaml: batches of at most"),
    ("the span queries saved with transaction_search off", "terraform/transaction-search.tf",
     _replace('var.transaction_search == "off" ? toset([]) : toset(local.span_query_names)', "toset(local.span_query_names)"),
     "transaction_search = off: saves no query"),
    ("a query file left unsaved", "terraform/transaction-search.tf",
     _replace(', "one-trace"]', "]"),
     "transaction_search = enable: saves one query per file"),
    ("the indexing rule without depends_on", "terraform/transaction-search.tf",
     _replace("  depends_on = [aws_xray_trace_segment_destination.transaction_search]\n", ""),
     "indexing rule Default"),
    ("Transaction Search turned on for already-enabled too", "terraform/transaction-search.tf",
     _replace('owns_transaction_search = var.transaction_search == "enable"',
              'owns_transaction_search = var.transaction_search != "off"'),
     "transaction_search = already-enabled: creates none of"),
    ("the resource policy open to any service", "terraform/transaction-search.tf",
     _replace('identifiers = ["xray.amazonaws.com"]', 'identifiers = ["xray.amazonaws.com", "logs.amazonaws.com"]'),
     "aws/spans resource policy"),
    # Issue 25: the log queries and the metrics namespace.
    ("a log query file left unsaved", "terraform/queries.tf",
     _replace(', "certificate-events"]', "]"),
     "log queries: one per file"),
    ("the log queries over the collector's group", "terraform/queries.tf",
     _replace("aws_cloudwatch_log_group.backend.name", "aws_cloudwatch_log_group.collector[0].name"),
     "log queries: <name>/logs/<file>, over the backend's log group"),
    ("the metrics namespace not passed to the backend", "terraform/main.tf",
     _sub(r"\n    POWERTOOLS_METRICS_NAMESPACE +?= var\.metrics_namespace\n", "\n"),
     "backend environment"),
    ("the provider pinned to 5.x", "terraform/versions.tf",
     _replace('version = "~> 6.46"', 'version = "~> 5.30"'),
     "hashicorp/aws ~> 6.46"),
]


def self_test():
    failures = 0
    with tempfile.TemporaryDirectory() as scratch:
        for index, (label, relative, change, expected) in enumerate([(None, None, None, None)] + BREAKAGES):
            copy_root = Path(scratch) / f"copy-{index}"
            (copy_root / "deploy").mkdir(parents=True)
            shutil.copytree(REPO / "deploy" / "ecs", copy_root / "deploy" / "ecs")
            shutil.copytree(REPO / QUERY_DIR, copy_root / QUERY_DIR)
            shutil.copytree(REPO / LOG_QUERY_DIR, copy_root / LOG_QUERY_DIR)
            shutil.copy(REPO / "template.yaml", copy_root / "template.yaml")
            if change:
                target = copy_root / "deploy" / "ecs" / relative
                target.write_text(change(target.read_text()))
            result = subprocess.run(
                [sys.executable, __file__, "--root", str(copy_root), "--skip", "checkov,moto"],
                capture_output=True, text=True,
            )
            failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
            if label is None:
                good = result.returncode == 0 and not failed
                print(f"{'ok' if good else 'FAIL':5} self-test: the unmodified copy passes")
            else:
                good = result.returncode != 0 and any(expected in line for line in failed)
                print(f"{'ok' if good else 'FAIL':5} self-test: {label} → exit {result.returncode}")
                for line in failed:
                    print(f"        {line}")
            failures += not good
    print(f"self-test: {len(BREAKAGES) + 1 - failures} of {len(BREAKAGES) + 1} as expected")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO)
    parser.add_argument("--skip", default="", help="comma list: checkov, moto")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    skip = {s for s in args.skip.split(",") if s}
    report = run(args.root.resolve(), skip)
    if report.failures:
        print(f"\n{len(report.failures)} problem(s) in deploy/ecs:")
        for failure in report.failures:
            print(f"  - {failure}")
        return 1
    print("\ndeploy/ecs: every check passed" + (f" (skipped: {', '.join(sorted(skip))})" if skip else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

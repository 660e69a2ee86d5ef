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
      - the certificate table mirrors template.yaml's CertificateTable (keys, attributes,
        ExpirationIndex, time-to-live on purge_at, point-in-time recovery, encryption);
  * the task definition: deploy/ecs/task-definition.json, and container-definitions.json.tftpl
    rendered with the values Terraform would pass (its variables' defaults, the backend
    environment evaluated from main.tf's locals) and with the JSON's placeholders, must be
    equal; both must have the two containers, their health checks, dependsOn HEALTHY, a
    stopTimeout, a pinned collector image, read-only root file systems, no privileged mode;
  * deploy/ecs/collector.yaml (the SSM parameter: under 4 KB) and collector.local.yaml: OTLP
    in, batch, awsxray (resp. debug) out, health_check, awsproxy; compose.yaml: the backend's
    health check, depends_on service_healthy, a pinned collector image;
  * checkov: `checkov -d deploy/ecs/terraform --quiet --compact` must be clean (each skip is a
    #checkov:skip=CKV_…:reason comment in the .tf, listed here), and a second run over the
    rendered container definitions (checkov does not evaluate templatefile(), so without it
    its container checks pass vacuously);
  * the ECS API model: task-definition.json registered with moto's ECS (mock_aws, in process,
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
                         check, dependsOn START, …) and fail unless the static checks catch
                         every one
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
    re.compile(r"^\$\{aws_cloudwatch_log_group\.\w+\.arn\}:\*$"),
    re.compile(r"^\$\{aws_dynamodb_table\.\w+\.arn\}/index/\*$"),
]
CA_SECRET = re.compile(
    r"^arn:\$\{local\.partition\}:secretsmanager:\$\{var\.region\}:\$\{local\.account_id\}:secret:"
    r"\$\{var\.secrets_prefix\}/ca-(private-key|certificate)-\?{6}$"
)
PINNED_COLLECTOR = re.compile(
    r"^public\.ecr\.aws/aws-observability/aws-otel-collector(:v\d+\.\d+\.\d+|@sha256:[0-9a-f]{64})$"
)
CHECKOV_SKIP = re.compile(r"#\s*checkov:skip=(CKV2?_[A-Z0-9_]+)(?::(.*))?")

BACKEND_ENV = {
    "HOST": "0.0.0.0",
    "PORT": "8000",
    "ENVIRONMENT": "production",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_PROPAGATORS": "xray",
    "OTEL_TRACES_SAMPLER": "xray",
    "OTEL_TRACES_SAMPLER_ARG": "endpoint=http://127.0.0.1:2000",
    "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=production",
    "INFRASTRUCTURE_PROVIDER": "aws",
    "TRUSTED_CLIENT_CERT_HEADER": "X-Amzn-Mtls-Clientcert",
    "LOG_FORMAT": "json",
}
BACKEND_ENV_NAMED = ["OTEL_SERVICE_NAME", "AWS_DYNAMODB_TABLE", "AWS_SECRETS_PREFIX"]
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
        self.resources, self.data, self.variables, self.locals = {}, {}, {}, {}
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
        if m := re.fullmatch(r"(aws_\w+)\.(\w+)\.(\w+)", expression):
            type_, name, attribute = m.groups()
            body = self.tf.resource(type_, name)
            if body is None:
                raise Unresolved(f"{type_}.{name} is not declared")
            if attribute in body:
                return self.value(body[attribute])
            if (type_, attribute) == ("aws_ssm_parameter", "arn"):
                return f"arn:aws:ssm:{self.overrides['region']}:ACCOUNT:parameter{self.value(body['name'])}"
            if (type_, attribute) == ("aws_iam_role", "arn"):
                return f"arn:aws:iam::ACCOUNT:role/{self.value(body['name'])}"
        raise Unresolved(expression)

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


def render_template(text, values):
    """container-definitions.json.tftpl with each ${jsonencode(name)} replaced."""
    if "%{" in text:
        raise Unresolved("the template uses %{…} directives, which this check does not render")
    used = set()

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
            source = re.findall(r"var\.(\w+)", body.get("for_each", ""))
            for content in body.get("content", []):
                content = copy.deepcopy(content)
                content["resources"] = [
                    r.replace("${statement.value}", "${var.%s}" % source[-1]) if source else r
                    for r in content.get("resources", [])
                ]
                yield f"{content.get('sid', '?')} (dynamic, when var.{source[-1] if source else '?'} is set)", content


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
                    if not re.fullmatch(r"\$\{aws_dynamodb_table\.certificates\.arn\}(/index/\*)?", resource):
                        problems.append(f"DynamoDB on {resource}, not the certificate table")
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
    parameters = tf.resource("aws_ssm_parameter")
    for name, parameter in parameters.items():
        report.check(
            parameter.get("value") == '${file("${path.module}/../collector.yaml")}',
            f"SSM parameter {name}: value = file(../collector.yaml), type {parameter.get('type')}",
            str(parameter.get("value")),
        )
    groups = tf.resource("aws_cloudwatch_log_group")
    report.check(
        len(groups) == 2 and all("retention_in_days" in g for g in groups.values()),
        f"log groups {', '.join(groups)} with retention",
    )
    check_table(tf, report, template_table)


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


def check_containers(definitions, where, report):
    containers = containers_by_name(definitions)
    if not report.check(
        list(containers) == ["backend", "aws-otel-collector"],
        f"{where}: containers backend and aws-otel-collector",
        str(list(containers)),
    ):
        return
    backend, collector = containers["backend"], containers["aws-otel-collector"]
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
    report.check(
        backend.get("dependsOn") == [{"containerName": "aws-otel-collector", "condition": "HEALTHY"}],
        f"{where}: backend dependsOn aws-otel-collector HEALTHY (not START, which races the collector)",
        json.dumps(backend.get("dependsOn")),
    )
    timeout = backend.get("stopTimeout")
    report.check(
        isinstance(timeout, int) and 10 <= timeout <= 120,
        f"{where}: backend stopTimeout {timeout} s (in-flight requests finish, spans flush; Fargate allows ≤ 120)",
    )
    report.check(backend.get("user") == "65532:65532", f"{where}: backend runs as 65532:65532", str(backend.get("user")))
    ports = [p.get("containerPort") for p in backend.get("portMappings", [])]
    report.check(ports == [8000], f"{where}: backend port 8000", str(ports))
    environment = {e["name"]: e["value"] for e in backend.get("environment", [])}
    names = [e["name"] for e in backend.get("environment", [])]
    report.check(names == sorted(set(names)), f"{where}: backend environment sorted, no duplicates")
    wrong = {k: environment.get(k) for k, v in BACKEND_ENV.items() if environment.get(k) != v}
    missing = [k for k in BACKEND_ENV_NAMED if not environment.get(k)]
    report.check(
        not wrong and not missing and "" not in environment.values(),
        f"{where}: backend environment ({len(environment)} variables: server mode, OTLP to the sidecar, X-Ray propagation, ALB certificate header)",
        f"wrong {wrong}, missing {missing}",
    )
    secrets = {s["name"]: s["valueFrom"] for s in backend.get("secrets", [])}
    report.check(
        sorted(secrets) == ["CONFIG_API_KEY", "SECRET_KEY"]
        and all(v.startswith("arn:aws:secretsmanager:") for v in secrets.values()),
        f"{where}: backend secrets SECRET_KEY and CONFIG_API_KEY from Secrets Manager ARNs",
        json.dumps(secrets),
    )
    image = collector.get("image", "")
    report.check(
        PINNED_COLLECTOR.match(image) and not image.endswith(":latest"),
        f"{where}: collector image pinned ({image})",
    )
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
        f"{where}: collector has AWS_REGION (awsxray and awsproxy sign for that region)",
    )


def check_task_definition(tf, ecs, report):
    task = json.loads((ecs / "task-definition.json").read_text())
    report.ok(f"task-definition.json parses ({len(task['containerDefinitions'])} containers)")
    check_containers(task["containerDefinitions"], "task-definition.json", report)

    definitions = tf.resource("aws_ecs_task_definition")
    if not report.check(len(definitions) == 1, "Terraform: one aws_ecs_task_definition"):
        return task, None
    (name, definition), = definitions.items()
    containers = containers_by_name(task["containerDefinitions"])
    backend, collector = containers.get("backend", {}), containers.get("aws-otel-collector", {})
    secret = {s["name"]: s["valueFrom"] for s in backend.get("secrets", [])}
    overrides = {
        "region": backend.get("logConfiguration", {}).get("options", {}).get("awslogs-region", "REGION"),
        "backend_image": backend.get("image"),
        "secret_key_secret_arn": secret.get("SECRET_KEY"),
        "config_api_key_secret_arn": secret.get("CONFIG_API_KEY"),
    }
    evaluate = Evaluator(tf, overrides)
    try:
        template_name, arguments = templatefile_call(definition["container_definitions"])
        values = {key: evaluate.value("${%s}" % expression) for key, expression in arguments.items()}
        template = (tf.directory / template_name).read_text()
        rendered, used = render_template(template, values)
    except (Unresolved, KeyError, json.JSONDecodeError) as error:
        report.fail(f"{name}: rendering container-definitions.json.tftpl: {error}")
        return task, None
    report.ok(f"{template_name} renders as JSON with main.tf's {len(arguments)} arguments")
    report.check(used == set(arguments), f"{template_name}: uses every argument main.tf passes", str(set(arguments) ^ used))
    check_containers(rendered, template_name, report)
    diff = differences(task["containerDefinitions"], rendered, ("task-definition.json", "the template"))
    report.check(
        not diff,
        "task-definition.json's containers = the Terraform template rendered with the variables' defaults",
        "; ".join(diff[:6]),
    )
    report.check(
        evaluate.value("${var.collector_image}") == collector.get("image"),
        "variables.tf's collector_image default = the JSON's collector image",
    )

    platform = block(definition, "runtime_platform")
    cpu_variable = tf.variables.get("cpu_architecture", {})
    conditions = " ".join(v.get("condition", "") for v in cpu_variable.get("validation", []))
    report.check(
        platform.get("cpu_architecture") == "${var.cpu_architecture}"
        and cpu_variable.get("default") == task["runtimePlatform"]["cpuArchitecture"] == "X86_64"
        and "ARM64" in conditions,
        "runtime platform: var.cpu_architecture (X86_64 by default, ARM64 allowed); the JSON has X86_64",
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
        "task: family apuntador-backend, awsvpc, FARGATE, 512 CPU, 1024 MiB, roles: the JSON and Terraform agree",
        str(mismatched),
    )
    return task, rendered


# --- collector configuration and compose -------------------------------------------------------


def check_collector(path, exporter, bind, report, limit=None):
    import yaml

    text = path.read_text()
    config = yaml.safe_load(text)
    where = path.name
    if limit:
        report.check(len(text.encode()) < limit, f"{where}: {len(text.encode())} bytes, under the SSM Standard tier's {limit}")
    protocols = config.get("receivers", {}).get("otlp", {}).get("protocols", {})
    report.check(
        protocols.get("grpc", {}).get("endpoint") == f"{bind}:4317" and protocols.get("http", {}).get("endpoint") == f"{bind}:4318",
        f"{where}: OTLP receivers on {bind}:4317 (grpc) and {bind}:4318 (http)",
        json.dumps(protocols),
    )
    report.check(
        config.get("processors", {}).get("batch", {}).get("timeout") == "1s",
        f"{where}: batch processor, timeout 1s",
    )
    exporters = config.get("exporters", {})
    report.check(list(exporters) == [exporter], f"{where}: exporters {list(exporters)}", f"expected [{exporter}]")
    if exporter == "awsxray":
        report.check(
            "indexed_attributes" not in (exporters.get("awsxray") or {}),
            f"{where}: awsxray without indexed_attributes (spans name their annotations in aws.xray.annotations)",
        )
        report.check("# awsemf:" in text, f"{where}: a commented place for the metrics exporter (awsemf)")
    extensions = config.get("extensions", {})
    health = (extensions.get("health_check") or {}).get("endpoint", "")
    report.check(health.endswith(":13133"), f"{where}: health_check on {health} (what /healthcheck probes)")
    if exporter == "awsxray":
        report.check(
            (extensions.get("awsproxy") or {}).get("endpoint") == "127.0.0.1:2000",
            f"{where}: awsproxy on 127.0.0.1:2000 (X-Ray centralized sampling)",
        )
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
    report.check(
        re.search(r"(:v?\d+\.\d+\.\d+|@sha256:[0-9a-f]{64})$", image) and not image.endswith(":latest"),
        f"compose: collector image pinned ({image})",
    )
    report.check(collector.get("healthcheck", {}).get("test") == ["CMD", "/healthcheck"], "compose: collector health check /healthcheck")
    mounted = [v for v in collector.get("volumes", []) if v.startswith("./collector.local.yaml:")]
    report.check(mounted, "compose: collector runs collector.local.yaml")
    ports = [str(p) for p in backend.get("ports", []) + collector.get("ports", [])]
    report.check(
        any(p.endswith(":8000") for p in ports) and any(p.endswith(":13133") for p in ports),
        f"compose: ports {', '.join(ports)}",
    )


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


def check_checkov(terraform_dir, rendered, report):
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
    if rendered is None:
        report.fail("checkov of the rendered container definitions: nothing rendered")
        return
    # checkov reads container_definitions only when it is literal JSON, not a templatefile()
    # call: give it the rendered containers in a task definition of its own.
    with tempfile.TemporaryDirectory() as scratch:
        body = json.dumps(rendered, indent=2)
        Path(scratch, "rendered.tf").write_text(
            'resource "aws_ecs_task_definition" "rendered" {\n'
            '  family                   = "apuntador-backend"\n'
            '  network_mode             = "awsvpc"\n'
            '  requires_compatibilities = ["FARGATE"]\n'
            "  cpu                      = 512\n"
            "  memory                   = 1024\n"
            '  execution_role_arn       = "arn:aws:iam::123456789012:role/apuntador-backend-execution"\n'
            '  task_role_arn            = "arn:aws:iam::123456789012:role/apuntador-backend-task"\n'
            f"  container_definitions    = <<-JSON\n{body}\n  JSON\n}}\n"
        )
        run_checkov(binary, Path(scratch), "of the rendered container definitions", report)


# --- moto: the ECS API model -------------------------------------------------------------------


def check_moto(task, report):
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
            report.fail(f"moto ECS: register_task_definition refused task-definition.json: {error}")
            return
        report.ok(f"moto ECS: register_task_definition accepted it as {answer['taskDefinitionArn']}")
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
    check_terraform_resources(tf, report, template["Resources"]["CertificateTable"])
    task, rendered = check_task_definition(tf, ecs, report)
    check_collector(ecs / "collector.yaml", "awsxray", "127.0.0.1", report, limit=4096)
    check_collector(ecs / "collector.local.yaml", "debug", "0.0.0.0", report)
    check_compose(ecs / "compose.yaml", report)
    if "checkov" not in skip:
        check_checkov(terraform_dir, rendered, report)
    if "moto" not in skip:
        check_moto(task, report)
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


BREAKAGES = [
    ('a "*" resource on the DynamoDB statement', "terraform/iam.tf",
     _replace("resources = [aws_dynamodb_table.certificates.arn]", 'resources = ["*"]'), '"*" resource'),
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
]


def self_test():
    failures = 0
    with tempfile.TemporaryDirectory() as scratch:
        for index, (label, relative, change, expected) in enumerate([(None, None, None, None)] + BREAKAGES):
            copy_root = Path(scratch) / f"copy-{index}"
            (copy_root / "deploy").mkdir(parents=True)
            shutil.copytree(REPO / "deploy" / "ecs", copy_root / "deploy" / "ecs")
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

# apuntador-backend on ECS/Fargate: the backend as a server (HOST/PORT) beside an ADOT collector
# sidecar (telemetry_transport = "collector"), or alone, signing its spans to X-Ray's OTLP
# endpoint (telemetry_transport = "otlp-xray"), behind a rule on an existing ALB HTTPS listener.
# ../task-definition.json and ../task-definition.otlp-xray.json are the same task definitions
# written out for `aws ecs register-task-definition`; scripts/check-ecs.py holds them (and
# container-definitions.json.tftpl) to each other. Transaction Search: transaction-search.tf.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  # ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG → the repository the execution role may
  # pull from (variables.tf only accepts ECR images).
  backend_image_parts = regex("^([0-9]{12})\\.dkr\\.ecr\\.([a-z0-9-]+)\\.amazonaws\\.com(?:\\.cn)?/([^:@]+)", var.backend_image)
  backend_repository_arn = format(
    "arn:%s:ecr:%s:%s:repository/%s",
    local.partition, local.backend_image_parts[1], local.backend_image_parts[0], local.backend_image_parts[2],
  )

  # The collector sidecar runs only with telemetry_transport = "collector"; otherwise the
  # backend signs OTLP to X-Ray's OTLP endpoint of the region itself.
  collector          = var.telemetry_transport == "collector"
  xray_otlp_endpoint = "https://xray.${var.region}.amazonaws.com/v1/traces"
  # Whether the sidecar exports with awsxray (../collector.awsxray.yaml, PutTelemetryRecords):
  # collector_exporter = "awsxray", or "auto" without Transaction Search, since X-Ray's OTLP
  # endpoint refuses spans while it is off (template.yaml's CollectorExportsAwsxray).
  collector_awsxray = var.collector_exporter == "awsxray" || (var.collector_exporter == "auto" && var.transaction_search == "off")

  # The backend's environment. ECS drops variables whose value is empty (and Terraform would then
  # show a difference on every plan), so empty optional settings are left out: the backend
  # treats a missing variable and an empty one alike. That is also how each transport sets
  # only its own variables: collector, OTLP to the sidecar on localhost and X-Ray centralized
  # sampling through its awsproxy; otlp-xray, a traces endpoint of X-Ray's form, which turns
  # SigV4 signing on (HTTP only), and a trace-id ratio.
  backend_environment_all = {
    HOST                                = "0.0.0.0"
    PORT                                = "8000"
    ENVIRONMENT                         = var.environment
    LOG_FORMAT                          = "json"
    OTEL_SERVICE_NAME                   = var.name
    POWERTOOLS_METRICS_NAMESPACE        = var.metrics_namespace
    OTEL_RESOURCE_ATTRIBUTES            = "deployment.environment=${var.environment}"
    OTEL_TRACES_EXPORTER                = "otlp"
    OTEL_EXPORTER_OTLP_PROTOCOL         = "http/protobuf"
    OTEL_EXPORTER_OTLP_ENDPOINT         = local.collector ? "http://localhost:4318" : ""
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  = local.collector ? "" : local.xray_otlp_endpoint
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL  = local.collector ? "" : "http/protobuf"
    OTEL_PROPAGATORS                    = "xray"
    OTEL_TRACES_SAMPLER                 = local.collector ? "xray" : "parentbased_traceidratio"
    OTEL_TRACES_SAMPLER_ARG             = local.collector ? "endpoint=http://127.0.0.1:2000" : tostring(var.trace_sampling_ratio)
    INFRASTRUCTURE_PROVIDER             = "aws"
    AWS_DYNAMODB_TABLE                  = aws_dynamodb_table.certificates.name
    AWS_SINGLE_USE_TABLE                = aws_dynamodb_table.single_use.name
    AWS_ATTESTATION_TABLE               = aws_dynamodb_table.attestation.name
    AWS_SECRETS_PREFIX                  = var.secrets_prefix
    TRUSTED_CLIENT_CERT_HEADER          = var.trusted_client_cert_header
    ENABLED_CLOUD_PROVIDERS             = var.enabled_cloud_providers
    ALLOWED_ORIGINS                     = var.allowed_origins
    ALLOWED_REDIRECT_URIS               = var.allowed_redirect_uris
    OAUTH_CREDENTIALS_SECRET            = var.oauth_credentials_secret_arn
    GOOGLE_REDIRECT_URI                 = var.google_redirect_uri
    ONEDRIVE_REDIRECT_URI               = var.onedrive_redirect_uri
    ATTESTATION_REQUIRED                = var.attestation_required
    APP_ATTEST_TEAM_ID                  = var.app_attest_team_id
    APP_ATTEST_BUNDLE_ID                = var.app_attest_bundle_id
    APP_ATTEST_ENVIRONMENT              = var.app_attest_team_id == "" ? "" : var.app_attest_environment
    PLAY_INTEGRITY_PACKAGE_NAME         = var.play_integrity_package_name
    PLAY_INTEGRITY_CERT_DIGESTS         = var.play_integrity_package_name == "" ? "" : var.play_integrity_cert_digests
    PLAY_INTEGRITY_KEYS_SECRET          = var.play_integrity_package_name == "" ? "" : var.play_integrity_keys_secret_arn
    PLAY_INTEGRITY_MIN_DEVICE_INTEGRITY = var.play_integrity_package_name == "" ? "" : var.play_integrity_min_device_integrity
    # The ALB appends the client's address to X-Forwarded-For: client.address is that entry.
    TRUSTED_PROXY_HOPS = "1"
    # No API Gateway in front: each task limits each client itself (429 with Retry-After).
    RATE_LIMIT_PER_MINUTE = var.rate_limit_per_minute == 0 ? "" : tostring(var.rate_limit_per_minute)
    # Longer than the ALB's idle timeout (60 s): the header-read timeout also closes idle
    # keep-alive connections, and the ALB must never reuse one the task is closing (a 502).
    # The ALB reads a request head whole before forwarding it, so slow clients stop there.
    SERVER_HEADER_READ_TIMEOUT_SECS = "65"
  }
  # Sorted by name, as ECS stores them (a map's keys iterate in lexical order).
  backend_environment = [
    for name, value in local.backend_environment_all : { name = name, value = value } if value != ""
  ]
}

# --- cluster ---------------------------------------------------------------------------------

resource "aws_ecs_cluster" "this" {
  #checkov:skip=CKV_AWS_224:ECS Exec is not enabled (the image has no shell to exec into), so there is no execute-command session log or key to configure.
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

# --- logs ------------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "backend" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts log data at rest already; the backend redacts credential-like fields, so a customer managed key (and its key policy for the logs service) is left to teams whose rules require one.
  #checkov:skip=CKV_AWS_338:Retention is a cost and compliance choice: log_retention_days, 30 by default like template.yaml's LogRetentionDays.
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
}

# Only with the sidecar (telemetry_transport = "collector").
resource "aws_cloudwatch_log_group" "collector" {
  #checkov:skip=CKV_AWS_158:As for the backend's group: encrypted at rest by CloudWatch Logs; the collector logs its own state, no request data.
  #checkov:skip=CKV_AWS_338:As for the backend's group: log_retention_days.
  count             = local.collector ? 1 : 0
  name              = "/ecs/${var.name}/collector"
  retention_in_days = var.log_retention_days
}

# --- the collector's configuration ----------------------------------------------------------

# Only with the sidecar: ../collector.yaml (otlphttp + sigv4auth to X-Ray's OTLP endpoint) or,
# with local.collector_awsxray (collector_exporter = "awsxray", or "auto" with transaction_search
# = "off"), ../collector.awsxray.yaml.
resource "aws_ssm_parameter" "collector_config" {
  #checkov:skip=CKV2_AWS_34:The collector configuration holds no secret (endpoints and pipeline only, the text of ../collector.yaml or ../collector.awsxray.yaml in this repository); a String parameter needs no KMS permission on the execution role.
  count       = local.collector ? 1 : 0
  name        = "/${var.name}/collector-config"
  description = "ADOT collector configuration of ${var.name} (AOT_CONFIG_CONTENT), from deploy/ecs/collector${local.collector_awsxray ? ".awsxray" : ""}.yaml"
  type        = "String"
  tier        = "Standard"
  value       = local.collector_awsxray ? file("${path.module}/../collector.awsxray.yaml") : file("${path.module}/../collector.yaml")
}

# --- the certificate table (mirrors template.yaml's CertificateTable) ------------------------

resource "aws_dynamodb_table" "certificates" {
  #checkov:skip=CKV_AWS_119:Encrypted at rest with the AWS managed key (server_side_encryption below); a customer managed key adds a key policy and KMS charges per request, for teams whose rules require it.
  name                        = "${var.name}-certificates"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "device_id"
  range_key                   = "serial_number"
  deletion_protection_enabled = true

  attribute {
    name = "device_id"
    type = "S"
  }

  attribute {
    name = "serial_number"
    type = "S"
  }

  attribute {
    name = "expires_at"
    type = "S"
  }

  # Kept from the spec's schema, as in template.yaml; nothing on a request path reads it.
  global_secondary_index {
    name            = "ExpirationIndex"
    hash_key        = "device_id"
    range_key       = "expires_at"
    projection_type = "ALL"
  }

  # History records carry purge_at (expiry + 90 days); a device's current record never does.
  ttl {
    attribute_name = "purge_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }

  lifecycle {
    prevent_destroy = true
  }
}

# --- used OAuth states (mirrors template.yaml's SingleUseTable) -------------------------------

# One item per exchanged state, written once under a condition (src/single_use), deleted by
# time-to-live minutes after the state expires: every task sees a state used by any other.
resource "aws_dynamodb_table" "single_use" {
  #checkov:skip=CKV_AWS_119:Encrypted at rest with the AWS managed key (server_side_encryption below); nothing in it outlives ten minutes.
  name         = "${var.name}-single-use"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "id"

  attribute {
    name = "id"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# --- attestation state (mirrors template.yaml's AttestationTable) ---------------------------

# Per device its App Attest key and counter, desktop fingerprint binding and latest verdicts,
# the clear-cache mark, and hourly desktop attempt counters that time-to-live deletes
# (src/attestation/store/dynamo.rs). Every task sees what any other wrote.
resource "aws_dynamodb_table" "attestation" {
  #checkov:skip=CKV_AWS_119:Encrypted at rest with the AWS managed key (server_side_encryption below); keys and verdicts only, no secret.
  name         = "${var.name}-attestation"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "id"

  attribute {
    name = "id"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# --- load balancing --------------------------------------------------------------------------
#
# Mutual TLS and TRUSTED_CLIENT_CERT_HEADER. The device routes (renew, revoke, status) need the
# device's certificate. The backend reads it, in server mode, only from the header named in
# TRUSTED_CLIENT_CERT_HEADER: here X-Amzn-Mtls-Clientcert, which the ALB writes itself from the
# TLS handshake when its HTTPS listener has mutual TLS in *passthrough* mode (the whole chain the
# client presented, URL-encoded PEM; the client proved it holds the key during the handshake).
# In *verify* mode the ALB sends the certificate as X-Amzn-Mtls-Clientcert-Leaf instead, which
# the backend does not read, and refuses every connection without a certificate, which would
# shut out enrollment, the OAuth redirect and the health checks. Passthrough lets devices
# without a certificate through (no header: the guarded routes answer 401), and the backend
# verifies every certificate itself: chain to its CA, validity, and the exact DER of the
# device's current, unrevoked record.
#
# The header can be trusted only because nothing but the ALB can put it on a request that
# reaches the backend:
#   * the ALB sets it from the handshake; the backend also refuses a request carrying the header
#     twice (400), so a proxy that appended instead of replacing could not smuggle one in;
#   * nothing may sit in front of this listener that terminates TLS itself and forwards
#     client-supplied headers (CloudFront, another load balancer, an API gateway, a CDN): the
#     ALB would then see that proxy, not the device, in the handshake, and the client's own
#     X-Amzn-Mtls-Clientcert would arrive as if the ALB had written it;
#   * the tasks' security groups must accept port 8000 from the ALB's security group only, or
#     anyone in the VPC could send the header straight to a task (the service's precondition
#     below refuses anything else);
#   * the listener must not rename the header (ALB header modification) to another name.
# After deploying, prove it (README: "Checking the mutual-TLS header"): ../check-forged-header.sh
# sends a request without a client certificate that carries one in X-Amzn-Mtls-Clientcert, and
# fails unless the answer is 401 client_certificate_required.

data "aws_lb_listener" "https" {
  arn = var.listener_arn
}

# The load balancer of that listener, for its security groups.
data "aws_lb" "listener" {
  arn = data.aws_lb_listener.https.load_balancer_arn
}

# Every rule of the tasks' security groups (ids, then each rule's source, ports and direction).
data "aws_vpc_security_group_rules" "tasks" {
  filter {
    name   = "group-id"
    values = var.security_group_ids
  }
}

data "aws_vpc_security_group_rule" "tasks" {
  for_each               = toset(data.aws_vpc_security_group_rules.tasks.ids)
  security_group_rule_id = each.value
}

locals {
  # Ingress rules of the tasks' groups that admit TCP 8000 (a TCP range covering it, or all
  # protocols: ip_protocol -1, whose ports are -1). coalesce: a comparison with a null port
  # would be an error, and && may evaluate both of its sides.
  task_port_ingress = [
    for rule in data.aws_vpc_security_group_rule.tasks : rule
    if !rule.is_egress && (rule.ip_protocol == "-1" || (contains(["tcp", "6"], rule.ip_protocol) && coalesce(rule.from_port, -1) <= 8000 && coalesce(rule.to_port, -1) >= 8000))
  ]
  # Those whose source is not one of the load balancer's groups: a CIDR, an IPv6 CIDR, a prefix
  # list, another group, or one of the tasks' own groups (everything else in that group, e.g. a
  # default security group's "all traffic from itself", could then reach the tasks).
  task_port_ingress_not_from_load_balancer = [
    for rule in local.task_port_ingress : rule.security_group_rule_id
    if coalesce(rule.cidr_ipv4, rule.cidr_ipv6, rule.prefix_list_id, "none") != "none" || !contains(data.aws_lb.listener.security_groups, coalesce(rule.referenced_security_group_id, "none")) || contains(var.security_group_ids, coalesce(rule.referenced_security_group_id, "none"))
  ]
}

resource "aws_lb_target_group" "backend" {
  #checkov:skip=CKV_AWS_378:TLS (and mutual TLS) ends at the ALB, which must read the client certificate to write X-Amzn-Mtls-Clientcert; from there to the task it is HTTP inside the VPC on port 8000, open to the ALB's security group only.
  name                 = var.name
  target_type          = "ip"
  port                 = 8000
  protocol             = "HTTP"
  protocol_version     = "HTTP1"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  health_check {
    enabled             = true
    path                = "/health"
    port                = "traffic-port"
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener_rule" "backend" {
  listener_arn = var.listener_arn
  priority     = var.listener_rule_priority

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.backend.arn
  }

  condition {
    host_header {
      values = var.host_headers
    }
  }

  lifecycle {
    precondition {
      condition     = data.aws_lb_listener.https.protocol == "HTTPS"
      error_message = "listener_arn must be an HTTPS listener: the backend serves plain HTTP and TLS ends at the ALB."
    }
    precondition {
      # With the header trusted, the listener must be the one writing it (see the note above).
      condition = var.trusted_client_cert_header == "" || try(
        data.aws_lb_listener.https.mutual_authentication[0].mode, "off"
      ) == "passthrough"
      error_message = "TRUSTED_CLIENT_CERT_HEADER=X-Amzn-Mtls-Clientcert needs the listener's mutual TLS in passthrough mode (verify mode sends X-Amzn-Mtls-Clientcert-Leaf and refuses devices without a certificate; with it off the ALB writes no such header, so one that arrives came from the client). Set trusted_client_cert_header = \"\" to read no client certificate."
    }
  }
}

# --- the task --------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "backend" {
  family                   = var.name
  network_mode             = "awsvpc"
  requires_compatibilities = ["FARGATE"]
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # The template leaves the collector container and the backend's dependsOn on it out unless
  # telemetry_transport is "collector" (the two collector arguments are then null, unused).
  container_definitions = templatefile("${path.module}/container-definitions.json.tftpl", {
    telemetry_transport            = var.telemetry_transport
    backend_image                  = var.backend_image
    backend_environment            = local.backend_environment
    secret_key_secret_arn          = var.secret_key_secret_arn
    config_api_key_secret_arn      = var.config_api_key_secret_arn
    backend_log_group              = aws_cloudwatch_log_group.backend.name
    collector_image                = var.collector_image
    collector_config_parameter_arn = one(aws_ssm_parameter.collector_config[*].arn)
    collector_log_group            = one(aws_cloudwatch_log_group.collector[*].name)
    region                         = var.region
  })

  # Settings that only make sense together (preconditions: variable validations may not
  # read other variables before Terraform 1.9).
  lifecycle {
    precondition {
      condition     = (var.app_attest_bundle_id == "") == (var.app_attest_team_id == "")
      error_message = "app_attest_team_id and app_attest_bundle_id go together (both or neither)."
    }
    precondition {
      condition = (
        (!strcontains(var.attestation_required, "ios") || var.app_attest_team_id != "")
        && (!strcontains(var.attestation_required, "android") || var.play_integrity_package_name != "")
      )
      error_message = "attestation_required names a platform whose attestation is not configured (app_attest_* for ios, play_integrity_* for android)."
    }
    precondition {
      condition     = var.play_integrity_package_name == "" || (var.play_integrity_cert_digests != "" && var.play_integrity_keys_secret_arn != "")
      error_message = "play_integrity_package_name needs play_integrity_cert_digests and play_integrity_keys_secret_arn."
    }
  }
}

resource "aws_ecs_service" "backend" {
  name             = var.name
  cluster          = aws_ecs_cluster.this.id
  task_definition  = aws_ecs_task_definition.backend.arn
  desired_count    = var.desired_count
  launch_type      = "FARGATE"
  platform_version = "LATEST"
  propagate_tags   = "SERVICE"

  enable_execute_command            = false
  health_check_grace_period_seconds = var.health_check_grace_period_seconds
  # Replace tasks one at a time without dropping below desired_count.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.backend.arn
    container_name   = "backend"
    container_port   = 8000
  }

  # The target group must be attached to the listener before a service can register into it.
  depends_on = [aws_lb_listener_rule.backend]

  lifecycle {
    precondition {
      # Port 8000 from the load balancer only: anything else that reaches a task could send its
      # own X-Amzn-Mtls-Clientcert (the mutual-TLS note above). At least one such rule, or the
      # load balancer cannot reach the tasks at all.
      condition     = length(local.task_port_ingress) > 0 && length(local.task_port_ingress_not_from_load_balancer) == 0
      error_message = "security_group_ids must admit TCP 8000 only from the load balancer's security groups (${join(", ", data.aws_lb.listener.security_groups)}), and must admit it from them. Rules admitting it from elsewhere (a CIDR, a prefix list, another group, the tasks' own group): ${join(", ", local.task_port_ingress_not_from_load_balancer)}."
    }
  }
}

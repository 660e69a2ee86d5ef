# Two roles, least privilege, every resource named where the action allows it:
#   execution role: what ECS itself needs to start the task (pull the backend image, write the
#     log groups, read the two secrets and, with the sidecar, the collector's SSM parameter);
#   task role: what the containers call (X-Ray from the collector or, with telemetry_transport
#     = "otlp-xray", from the backend; the certificate table and the CA and OAuth secrets from
#     the backend).
# No AWS managed policy is attached (AmazonECSTaskExecutionRolePolicy grants ECR and logs on
# "*"). scripts/check-ecs.py walks these documents and fails on any "*" resource but the two
# actions that have no resource type, on wildcard actions, and on DynamoDB scans or deletes.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    sid     = "EcsTasksOfThisAccount"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    # Confused-deputy guard: only ECS acting for this account's tasks in this region.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${var.region}:${local.account_id}:*"]
    }
  }
}

# --- execution role --------------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  description        = "ECS starts ${var.name} tasks with this role: image pull, logs, secrets for the containers' environment."
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

# Both roles read secrets (ECS injects SECRET_KEY and CONFIG_API_KEY; the backend reads the CA
# and OAuth secrets): with a customer-managed key, both may decrypt through Secrets Manager.
data "aws_iam_policy_document" "decrypt_secrets" {
  dynamic "statement" {
    for_each = var.secrets_kms_key_arn == "" ? [] : [var.secrets_kms_key_arn]
    content {
      sid       = "DecryptTheSecrets"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${var.region}.amazonaws.com"]
      }
    }
  }
}

data "aws_iam_policy_document" "execution" {
  source_policy_documents = [data.aws_iam_policy_document.decrypt_secrets.json]

  # ecr:GetAuthorizationToken has no resource type: IAM accepts only "*" for it. The token alone
  # pulls nothing; the pull itself is the next statement, on the one repository.
  statement {
    sid       = "EcrToken"
    effect    = "Allow"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "PullTheBackendImage"
    effect    = "Allow"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [local.backend_repository_arn]
  }

  # The awslogs driver writes streams in the groups Terraform creates (never creates groups):
  # the backend's, and the collector's when the sidecar runs.
  statement {
    sid       = "WriteTheBackendLogGroup"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.backend.arn}:*"]
  }

  dynamic "statement" {
    for_each = local.collector ? ["collector"] : []
    content {
      sid       = "WriteTheCollectorLogGroup"
      effect    = "Allow"
      actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
      resources = ["${aws_cloudwatch_log_group.collector[0].arn}:*"]
    }
  }

  # SECRET_KEY and CONFIG_API_KEY, injected by ECS as the backend's environment.
  statement {
    sid     = "ReadTheBackendSecrets"
    effect  = "Allow"
    actions = ["secretsmanager:GetSecretValue"]
    resources = [
      var.secret_key_secret_arn,
      var.config_api_key_secret_arn,
    ]
  }

  # AOT_CONFIG_CONTENT, the collector's configuration, when the sidecar runs.
  dynamic "statement" {
    for_each = local.collector ? ["collector"] : []
    content {
      sid       = "ReadTheCollectorConfig"
      effect    = "Allow"
      actions   = ["ssm:GetParameters"]
      resources = [aws_ssm_parameter.collector_config[0].arn]
    }
  }

}

resource "aws_iam_role_policy" "execution" {
  name   = "${var.name}-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- task role -------------------------------------------------------------------------------

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  description        = "The ${var.name} containers: X-Ray (collector or backend), certificate table and CA/OAuth secrets (backend)."
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "task" {
  source_policy_documents = [data.aws_iam_policy_document.decrypt_secrets.json]

  # X-Ray, by transport. These actions have no resource type: IAM requires Resource "*" for them.
  # Spans, whoever sends them: the collector's otlphttp (signed by its sigv4auth) or awsxray
  # exporter, or the backend itself (otlp-xray). X-Ray's OTLP endpoint "is authorized as
  # xray:PutTraceSegments" (X-Ray Developer Guide, bearer token authentication for traces),
  # the action the awsxray exporter calls; nothing else is needed to send spans.
  statement {
    sid       = "XRaySpans"
    effect    = "Allow"
    actions   = ["xray:PutTraceSegments"]
    resources = ["*"]
  }

  # The sidecar's awsproxy extension: X-Ray centralized sampling for the backend's sampler.
  dynamic "statement" {
    for_each = local.collector ? ["collector"] : []
    content {
      sid       = "XRaySamplingThroughTheSidecar"
      effect    = "Allow"
      actions   = ["xray:GetSamplingRules", "xray:GetSamplingTargets", "xray:GetSamplingStatisticSummaries"]
      resources = ["*"]
    }
  }

  # The awsxray exporter also reports its own telemetry (local.collector_awsxray:
  # collector_exporter = "awsxray", or "auto" with transaction_search = "off").
  dynamic "statement" {
    for_each = local.collector && local.collector_awsxray ? ["awsxray"] : []
    content {
      sid       = "XRayTelemetryOfTheAwsxrayExporter"
      effect    = "Allow"
      actions   = ["xray:PutTelemetryRecords"]
      resources = ["*"]
    }
  }

  # The certificate store reads and writes known keys only (src/device/store/dynamo.rs):
  # GetItem, and TransactWriteItems of conditional Put and Update items, which IAM authorises as
  # PutItem and UpdateItem on the table (TransactWriteItems has no action of its own). No Query,
  # Scan, DeleteItem or index access: nothing on a request path reads ExpirationIndex, and
  # history records expire by the table's time-to-live. The same three actions as
  # template.yaml's function policy.
  statement {
    sid       = "CertificateTableKnownKeys"
    effect    = "Allow"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.certificates.arn]
  }

  # Used OAuth states (src/single_use/dynamo.rs): one conditional PutItem per exchange; nothing
  # reads or deletes them (time-to-live does). As template.yaml grants the function.
  statement {
    sid       = "SingleUseClaims"
    effect    = "Allow"
    actions   = ["dynamodb:PutItem"]
    resources = [aws_dynamodb_table.single_use.arn]
  }

  # Attestation state (src/attestation/store/dynamo.rs): reads, puts and conditional updates
  # of known keys; no query, scan or delete. As template.yaml grants the function.
  statement {
    sid       = "AttestationKnownKeys"
    effect    = "Allow"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.attestation.arn]
  }

  # The CA (src/device/material.rs): <prefix>/ca-private-key and <prefix>/ca-certificate only;
  # -?????? matches the 6 characters Secrets Manager appends to a secret's name in its ARN.
  statement {
    sid     = "ReadTheCaSecrets"
    effect  = "Allow"
    actions = ["secretsmanager:GetSecretValue"]
    resources = [
      "arn:${local.partition}:secretsmanager:${var.region}:${local.account_id}:secret:${var.secrets_prefix}/ca-private-key-??????",
      "arn:${local.partition}:secretsmanager:${var.region}:${local.account_id}:secret:${var.secrets_prefix}/ca-certificate-??????",
    ]
  }

  # The Play Integrity response keys (PLAY_INTEGRITY_KEYS_SECRET), when Play Integrity is on.
  dynamic "statement" {
    for_each = var.play_integrity_package_name == "" ? [] : [var.play_integrity_keys_secret_arn]
    content {
      sid       = "ReadThePlayIntegrityKeys"
      effect    = "Allow"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }

  # The OAuth clients (OAUTH_CREDENTIALS_SECRET), when one is named.
  dynamic "statement" {
    for_each = var.oauth_credentials_secret_arn == "" ? [] : [var.oauth_credentials_secret_arn]
    content {
      sid       = "ReadTheOAuthClients"
      effect    = "Allow"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }

}

resource "aws_iam_role_policy" "task" {
  name   = "${var.name}-task"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

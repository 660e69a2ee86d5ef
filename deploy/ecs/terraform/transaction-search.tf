# X-Ray Transaction Search (var.transaction_search): every span X-Ray receives stored in the
# CloudWatch Logs group aws/spans, a share indexed as trace summaries. It is a setting of the
# whole account and region, so exactly one configuration should own it:
#   enable: this one does. In the order AWS's CLI and CloudFormation instructions follow: the
#     resource policy that lets X-Ray write aws/spans and /aws/application-signals/data, then
#     the trace segment destination CloudWatchLogs, then the Default indexing rule. AWS asks
#     that Transaction Search be off before it is enabled this way; removing these resources
#     does not turn it off (the provider's documentation of both X-Ray resources says so).
#   already-enabled: someone else owns it; only the saved queries below are created.
#   off: nothing here.
# X-Ray's OTLP endpoint (telemetry_transport = "otlp-xray", or the sidecar's otlphttp) accepts
# spans only with Transaction Search on.

locals {
  owns_transaction_search = var.transaction_search == "enable"
  # One saved query per file of ../../queries/spans (README.md there: what each reads).
  span_query_names = ["slowest-operations", "errors", "provider-latency", "one-trace"]
}

# AWS's resource policy for Transaction Search: X-Ray, acting for this account only, may put
# log events into the two groups (CloudWatch User Guide, "Using Transaction Search with AWS
# CloudFormation").
data "aws_iam_policy_document" "transaction_search" {
  statement {
    sid     = "TransactionSearchXRayAccess"
    effect  = "Allow"
    actions = ["logs:PutLogEvents"]
    resources = [
      "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:aws/spans:*",
      "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/aws/application-signals/data:*",
    ]

    principals {
      type        = "Service"
      identifiers = ["xray.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:xray:${var.region}:${local.account_id}:*"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_cloudwatch_log_resource_policy" "transaction_search" {
  count           = local.owns_transaction_search ? 1 : 0
  policy_name     = "${var.name}-transaction-search"
  policy_document = data.aws_iam_policy_document.transaction_search.json
}

resource "aws_xray_trace_segment_destination" "transaction_search" {
  count       = local.owns_transaction_search ? 1 : 0
  destination = "CloudWatchLogs"

  depends_on = [aws_cloudwatch_log_resource_policy.transaction_search]
}

resource "aws_xray_indexing_rule" "transaction_search" {
  count = local.owns_transaction_search ? 1 : 0
  name  = "Default"

  rule {
    probabilistic {
      desired_sampling_percentage = var.transaction_search_indexing_percentage
    }
  }

  depends_on = [aws_xray_trace_segment_destination.transaction_search]
}

# Logs Insights over aws/spans, saved as <name>/spans/<query>: the files' text, with this
# service's OTEL_SERVICE_NAME (var.name) where they name apuntador-backend.
resource "aws_cloudwatch_query_definition" "spans" {
  for_each        = var.transaction_search == "off" ? toset([]) : toset(local.span_query_names)
  name            = "${var.name}/spans/${each.key}"
  log_group_names = ["aws/spans"]
  query_string    = replace(file("${path.module}/../../queries/spans/${each.key}.query"), "apuntador-backend", var.name)
}

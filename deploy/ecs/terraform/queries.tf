# Logs Insights over the backend's log group, saved as <name>/logs/<query>: the files of
# ../../queries/logs (README.md there: the fields each reads, with their types, which
# tests/e2e/log_queries.rs finds on the binary's lines). cold-starts reads Lambda's own
# platform.report records and is left out here. The backend's metrics (Embedded Metric Format
# documents) are lines of the same group: the awslogs driver sends each stdout line as a log
# event, and CloudWatch Logs extracts the metrics from it (the json/emf header is optional,
# CloudWatch User Guide, "Using the PutLogEvents API to send manually-created embedded metric
# format logs"), so no agent or collector pipeline is needed for them.

locals {
  log_query_names = ["slowest-routes", "errors", "one-trace", "provider-failures", "certificate-events"]
}

resource "aws_cloudwatch_query_definition" "logs" {
  for_each        = toset(local.log_query_names)
  name            = "${var.name}/logs/${each.key}"
  log_group_names = [aws_cloudwatch_log_group.backend.name]
  query_string    = file("${path.module}/../../queries/logs/${each.key}.query")
}

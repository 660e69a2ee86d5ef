output "cluster_name" {
  description = "ECS cluster of the service"
  value       = aws_ecs_cluster.this.name
}

output "service_name" {
  description = "ECS service (aws ecs describe-services --cluster <cluster_name> --services <service_name>)"
  value       = aws_ecs_service.backend.name
}

output "task_definition_arn" {
  description = "Task definition revision the service runs"
  value       = aws_ecs_task_definition.backend.arn
}

output "target_group_arn" {
  description = "ALB target group (aws elbv2 describe-target-health --target-group-arn …)"
  value       = aws_lb_target_group.backend.arn
}

output "backend_log_group" {
  description = "CloudWatch Logs group of the backend (JSON lines; Logs Insights queries in docs/tracing.md)"
  value       = aws_cloudwatch_log_group.backend.name
}

output "collector_log_group" {
  description = "CloudWatch Logs group of the ADOT collector sidecar (null without it)"
  value       = one(aws_cloudwatch_log_group.collector[*].name)
}

output "certificate_table_name" {
  description = "DynamoDB table of issued device certificates (AWS_DYNAMODB_TABLE)"
  value       = aws_dynamodb_table.certificates.name
}

output "collector_config_parameter" {
  description = "SSM parameter holding the collector configuration (AOT_CONFIG_CONTENT; null without the sidecar)"
  value       = one(aws_ssm_parameter.collector_config[*].name)
}

output "span_queries" {
  description = "Saved Logs Insights queries over aws/spans (transaction_search enable or already-enabled)"
  value       = [for query in aws_cloudwatch_query_definition.spans : query.name]
}

output "task_role_arn" {
  description = "Role the containers run with"
  value       = aws_iam_role.task.arn
}

output "execution_role_arn" {
  description = "Role ECS starts the task with"
  value       = aws_iam_role.execution.arn
}

output "single_use_table_name" {
  description = "DynamoDB table of used OAuth states (AWS_SINGLE_USE_TABLE)"
  value       = aws_dynamodb_table.single_use.name
}

output "attestation_table_name" {
  description = "DynamoDB table of attestation state (AWS_ATTESTATION_TABLE)"
  value       = aws_dynamodb_table.attestation.name
}

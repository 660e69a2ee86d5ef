terraform {
  # 1.5: strcontains() in variables.tf (the lifecycle preconditions need 1.2).
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.46.0 added aws_xray_trace_segment_destination and aws_xray_indexing_rule
      # (transaction-search.tf; terraform-provider-aws pull requests 47961 and 47975). None of
      # the resources here is among the version 6 upgrade guide's breaking changes; the
      # aws_lb_listener data source still exports mutual_authentication (read in main.tf).
      version = "~> 6.46"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ Application = var.name }, var.tags)
  }
}

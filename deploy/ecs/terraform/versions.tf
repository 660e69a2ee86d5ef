terraform {
  # 1.5: strcontains() in variables.tf (the lifecycle preconditions need 1.2).
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x; the aws_lb_listener data source exports mutual_authentication (read in main.tf)
      # from 5.30.0 on.
      version = "~> 5.30"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ Application = var.name }, var.tags)
  }
}

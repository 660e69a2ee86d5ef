# Inputs of the ECS/Fargate deployment. Required: region, backend_image, vpc_id, subnet_ids,
# security_group_ids, listener_arn, listener_rule_priority, host_headers, and the two secret
# ARNs. Everything else has the default the project deploys with (template.yaml's, where the
# Lambda deployment has the same setting).

variable "region" {
  description = "AWS region of everything here (and of the X-Ray and CloudWatch data)."
  type        = string
}

variable "name" {
  description = "Name of the service: task family, cluster, service, roles, log groups, table prefix."
  type        = string
  default     = "apuntador-backend"

  validation {
    # The target group name (this name) is limited to 32 characters.
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,31}$", var.name))
    error_message = "name: lower-case letters, digits and -, at most 32 characters."
  }
}

variable "environment" {
  description = "ENVIRONMENT and deployment.environment. \"local\" relaxes secret checks and must not be deployed."
  type        = string
  default     = "production"

  validation {
    condition     = var.environment != "local" && can(regex("^[a-z0-9-]+$", var.environment))
    error_message = "environment: a deployment name such as production or staging (not local)."
  }
}

variable "backend_image" {
  description = "The backend image in ECR, pinned by tag or digest: ACCOUNT.dkr.ecr.REGION.amazonaws.com/apuntador-backend:1.0.41."
  type        = string

  validation {
    # The execution role may pull from this repository only, so the image must be in ECR; a
    # moving tag would let a task started later run other code than the one deployed.
    condition = (
      can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$", var.backend_image))
      && !endswith(var.backend_image, ":latest")
    )
    error_message = "backend_image: an ECR image with a tag other than latest, or a digest."
  }
}

variable "collector_image" {
  description = "The ADOT collector image, pinned by digest: REPOSITORY:TAG@sha256:DIGEST or REPOSITORY@sha256:DIGEST (README: why this release, and how to look up a digest). A release tag alone is accepted with a warning."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0@sha256:d2bdfff2c377c3d71d78bd5d9ce9862fd535b12134a5739d87a07801297cf9fd"

  validation {
    # A release tag, a digest or both; never latest or no tag (an image nobody tested).
    condition     = can(regex("(:v?[0-9]+\\.[0-9]+\\.[0-9]+|@sha256:[0-9a-f]{64})$", var.collector_image))
    error_message = "collector_image: pin a digest (…:v0.49.0@sha256:…) or at least a release (…:v0.49.0), never latest."
  }
}

# A tag can be moved to other content, and the collector runs with the task role's credentials
# (README: "The collector shares the task role"). A tag alone is allowed, so a team can move to a
# release before it has looked up the digest, but every plan and apply warns (a check block's
# failed assertion is a warning, not an error).
check "collector_image_pinned_by_digest" {
  assert {
    condition     = can(regex("@sha256:[0-9a-f]{64}$", var.collector_image))
    error_message = "collector_image (${var.collector_image}) is pinned by tag only: add the digest the tag points at (README: \"Pinning the collector image\"), e.g. …:v0.49.0@sha256:…"
  }
}

# --- traces: how spans reach X-Ray, and Transaction Search ------------------------------------

variable "telemetry_transport" {
  description = "How the backend's spans reach X-Ray. collector: the ADOT collector sidecar (OTLP on 127.0.0.1, X-Ray centralized sampling through its awsproxy), which sends them on as collector_exporter says. otlp-xray: no sidecar; the backend signs OTLP/HTTP with the task role (SigV4, service xray) straight to X-Ray's OTLP endpoint, https://xray.<region>.amazonaws.com/v1/traces, which needs Transaction Search; sampling is then trace_sampling_ratio (the centralized rules need the sidecar)."
  type        = string
  default     = "collector"

  validation {
    condition     = contains(["collector", "otlp-xray"], var.telemetry_transport)
    error_message = "telemetry_transport: collector or otlp-xray."
  }
}

variable "collector_exporter" {
  description = "With telemetry_transport = \"collector\": auto (default): awsxray when transaction_search is \"off\", otlp-xray when it is \"enable\" or \"already-enabled\", so a default deploy never sends spans X-Ray would refuse. otlp-xray: ../collector.yaml, otlphttp signed by sigv4auth to X-Ray's OTLP endpoint, which refuses spans unless Transaction Search is on in the account and region. awsxray: ../collector.awsxray.yaml, PutTraceSegments, for accounts without Transaction Search."
  type        = string
  default     = "auto"

  validation {
    condition     = contains(["auto", "otlp-xray", "awsxray"], var.collector_exporter)
    error_message = "collector_exporter: auto, otlp-xray or awsxray."
  }
}

variable "rate_limit_per_minute" {
  description = "Requests a minute each client may make to one task (RATE_LIMIT_PER_MINUTE; the OAuth routes and POST /device/enroll get a tenth, at least 6), past which the task answers 429 rate_limited with Retry-After. The client is the address the ALB appended to X-Forwarded-For (TRUSTED_PROXY_HOPS = 1). Per task: with N tasks a client may get up to N times this. Health checks are never limited. 0 turns the limit off (for example behind API Gateway or a WAF rate-based rule that already throttles)."
  type        = number
  default     = 600

  validation {
    condition     = var.rate_limit_per_minute >= 0 && var.rate_limit_per_minute <= 1000000 && floor(var.rate_limit_per_minute) == var.rate_limit_per_minute
    error_message = "rate_limit_per_minute: a whole number from 0 (off) to 1000000."
  }
}

variable "trace_sampling_ratio" {
  description = "With telemetry_transport = \"otlp-xray\": the share of root requests traced (OTEL_TRACES_SAMPLER=parentbased_traceidratio). 1 records every request, as AWS suggests with Transaction Search (every span lands in aws/spans; transaction_search_indexing_percentage of them are indexed)."
  type        = number
  default     = 1

  validation {
    condition     = var.trace_sampling_ratio >= 0 && var.trace_sampling_ratio <= 1
    error_message = "trace_sampling_ratio: a number from 0 to 1."
  }
}

variable "transaction_search" {
  description = "X-Ray Transaction Search is a setting of the whole account and region, not of this service: one configuration (or one person) should own it. off: this configuration neither changes it nor saves span queries. enable: it owns it (the CloudWatch Logs resource policy for aws/spans, the trace segment destination CloudWatchLogs, the Default indexing rule; apply enable only while it is off, and removing these resources does not turn it off). already-enabled: someone else owns it; only the Logs Insights queries over aws/spans are saved. The OTLP paths need it on: collector_exporter = \"auto\" (the default) has the sidecar export with awsxray while it is off."
  type        = string
  default     = "off"

  validation {
    condition     = contains(["off", "enable", "already-enabled"], var.transaction_search)
    error_message = "transaction_search: off, enable or already-enabled."
  }
}

variable "transaction_search_indexing_percentage" {
  description = "With transaction_search = \"enable\": the percentage of spans X-Ray indexes as trace summaries (the Default indexing rule; every span reaches aws/spans whatever this is)."
  type        = number
  default     = 1

  validation {
    condition     = var.transaction_search_indexing_percentage >= 0 && var.transaction_search_indexing_percentage <= 100
    error_message = "transaction_search_indexing_percentage: a number from 0 to 100."
  }
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64; the backend image must be built for it (the collector image is multi-arch)."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture: X86_64 or ARM64."
  }
}

variable "task_cpu" {
  description = "Task CPU units (Fargate sizes)."
  type        = number
  default     = 512
}

variable "task_memory" {
  description = "Task memory in MiB (Fargate sizes for task_cpu)."
  type        = number
  default     = 1024
}

variable "desired_count" {
  description = "Tasks the service keeps running (2: one can be replaced while the other serves)."
  type        = number
  default     = 2
}

variable "health_check_grace_period_seconds" {
  description = "How long the service ignores the target group's health checks after a task starts."
  type        = number
  default     = 30
}

variable "vpc_id" {
  description = "VPC of the ALB and of the tasks (for the target group)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the tasks. They need a route to ECR, CloudWatch Logs, Secrets Manager, SSM, X-Ray (its API, and https://xray.<region>.amazonaws.com/v1/traces) and DynamoDB (NAT or VPC endpoints): no public IP is assigned."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids: at least one subnet."
  }
}

variable "security_group_ids" {
  description = "Security groups of the tasks. Allow TCP 8000 in from the ALB's security group only (see the mutual-TLS note in main.tf; a precondition on the service refuses any other source of port 8000), and HTTPS out."
  type        = list(string)

  validation {
    condition     = length(var.security_group_ids) > 0
    error_message = "security_group_ids: at least one security group."
  }
}

variable "listener_arn" {
  description = "ARN of the existing ALB HTTPS listener that gets this service's rule (mutual TLS in passthrough mode: main.tf)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:listener/app/", var.listener_arn))
    error_message = "listener_arn: an Application Load Balancer listener ARN."
  }
}

variable "listener_rule_priority" {
  description = "Priority of the listener rule (unique on that listener)."
  type        = number
}

variable "host_headers" {
  description = "Host names the listener rule forwards to this service (api.example.com)."
  type        = list(string)

  validation {
    condition     = length(var.host_headers) > 0
    error_message = "host_headers: at least one host name."
  }
}

variable "trusted_client_cert_header" {
  description = "TRUSTED_CLIENT_CERT_HEADER: X-Amzn-Mtls-Clientcert (the listener in mutual-TLS passthrough mode), or \"\" to read no client certificate (the guarded device routes then answer 401)."
  type        = string
  default     = "X-Amzn-Mtls-Clientcert"

  validation {
    condition     = contains(["", "X-Amzn-Mtls-Clientcert"], var.trusted_client_cert_header)
    error_message = "trusted_client_cert_header: X-Amzn-Mtls-Clientcert or empty."
  }
}

variable "secret_key_secret_arn" {
  description = "Full ARN (with its 6-character suffix) of the Secrets Manager secret holding SECRET_KEY (at least 32 random bytes)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$", var.secret_key_secret_arn))
    error_message = "secret_key_secret_arn: the full ARN of a Secrets Manager secret (…:secret:name-AbCdEf)."
  }
}

variable "config_api_key_secret_arn" {
  description = "Full ARN of the Secrets Manager secret holding CONFIG_API_KEY (at least 32 bytes, different from SECRET_KEY)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$", var.config_api_key_secret_arn))
    error_message = "config_api_key_secret_arn: the full ARN of a Secrets Manager secret (…:secret:name-AbCdEf)."
  }
}

variable "oauth_credentials_secret_arn" {
  description = "Full ARN of the Secrets Manager secret with the OAuth clients as JSON (OAUTH_CREDENTIALS_SECRET); empty leaves the providers unconfigured."
  type        = string
  default     = ""

  validation {
    condition     = var.oauth_credentials_secret_arn == "" || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$", var.oauth_credentials_secret_arn))
    error_message = "oauth_credentials_secret_arn: empty, or the full ARN of a Secrets Manager secret."
  }
}

variable "attestation_required" {
  description = "Platforms whose enrollments must carry an attestation bound to the CSR's key (ATTESTATION_REQUIRED): \"\", \"android\", \"ios\" or \"android,ios\"."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^((android|ios)(,(android|ios))?)?$", var.attestation_required))
    error_message = "attestation_required: empty, or android and/or ios, comma-separated."
  }
}

variable "app_attest_team_id" {
  description = "The iOS app's Apple team id (APP_ATTEST_TEAM_ID); with app_attest_bundle_id turns App Attest on (empty: /device/attest/ios answers 501)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([A-Z0-9]{10})?$", var.app_attest_team_id))
    error_message = "app_attest_team_id: empty, or the ten-character team id (A-Z, 0-9)."
  }
}

variable "app_attest_bundle_id" {
  description = "The iOS app's bundle id (APP_ATTEST_BUNDLE_ID), with app_attest_team_id."
  type        = string
  default     = ""
}

variable "app_attest_environment" {
  description = "Which builds' App Attest keys are accepted (APP_ATTEST_ENVIRONMENT): production or development."
  type        = string
  default     = "production"

  validation {
    condition     = contains(["production", "development"], var.app_attest_environment)
    error_message = "app_attest_environment: production or development."
  }
}

variable "play_integrity_package_name" {
  description = "The Android app's package name (PLAY_INTEGRITY_PACKAGE_NAME): turns Play Integrity on (empty: /device/attest/android answers 501)."
  type        = string
  default     = ""
}

variable "play_integrity_cert_digests" {
  description = "The app's signing certificates' SHA-256, base64url as Play reports them, comma-separated (PLAY_INTEGRITY_CERT_DIGESTS)."
  type        = string
  default     = ""
}

variable "play_integrity_keys_secret_arn" {
  description = "Full ARN of the Secrets Manager secret {\"decryption_key\", \"verification_key\"} with the app's Play Integrity response keys (PLAY_INTEGRITY_KEYS_SECRET)."
  type        = string
  default     = ""

  validation {
    condition     = var.play_integrity_keys_secret_arn == "" || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$", var.play_integrity_keys_secret_arn))
    error_message = "play_integrity_keys_secret_arn: empty, or the full ARN of a Secrets Manager secret."
  }
}

variable "play_integrity_min_device_integrity" {
  description = "The least Play Integrity device verdict accepted (PLAY_INTEGRITY_MIN_DEVICE_INTEGRITY): basic, device or strong."
  type        = string
  default     = "device"

  validation {
    condition     = contains(["basic", "device", "strong"], var.play_integrity_min_device_integrity)
    error_message = "play_integrity_min_device_integrity: basic, device or strong."
  }
}

variable "secrets_kms_key_arn" {
  description = "ARN of the customer managed KMS key the secrets are encrypted with; empty when they use the AWS managed key aws/secretsmanager."
  type        = string
  default     = ""

  validation {
    condition     = var.secrets_kms_key_arn == "" || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]+$", var.secrets_kms_key_arn))
    error_message = "secrets_kms_key_arn: empty, or a KMS key ARN (…:key/<id>, not an alias)."
  }
}

variable "secrets_prefix" {
  description = "AWS_SECRETS_PREFIX: the CA lives in the secrets <prefix>/ca-private-key and <prefix>/ca-certificate."
  type        = string
  default     = "apuntador"

  validation {
    condition     = can(regex("^[A-Za-z0-9/_+=.@-]+$", var.secrets_prefix)) && !strcontains(var.secrets_prefix, "*")
    error_message = "secrets_prefix: a secret name prefix without wildcards."
  }
}

variable "enabled_cloud_providers" {
  description = "ENABLED_CLOUD_PROVIDERS: comma list of googledrive, dropbox, onedrive."
  type        = string
  default     = "googledrive,dropbox"
}

variable "allowed_origins" {
  description = "ALLOWED_ORIGINS: CORS origins of the web app; empty allows no browser origin."
  type        = string
  default     = ""
}

variable "allowed_redirect_uris" {
  description = "ALLOWED_REDIRECT_URIS: where OAuth may send users back to."
  type        = string
  default     = "apuntador://"
}

variable "google_redirect_uri" {
  description = "GOOGLE_REDIRECT_URI: https://<host>/oauth/callback/googledrive as registered with Google; empty leaves Google unconfigured."
  type        = string
  default     = ""
}

variable "onedrive_redirect_uri" {
  description = "ONEDRIVE_REDIRECT_URI: https://<host>/oauth/callback/onedrive as registered with Microsoft."
  type        = string
  default     = ""
}

variable "log_retention_days" {
  description = "Retention of the log groups, the backend's and the collector's (template.yaml's LogRetentionDays default)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days: a retention CloudWatch Logs accepts."
  }
}

variable "tags" {
  description = "Tags added to every resource (with Application = name)."
  type        = map(string)
  default     = {}
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the backend's metrics (POWERTOOLS_METRICS_NAMESPACE): Embedded Metric Format lines on stdout, which the awslogs driver hands to CloudWatch Logs and CloudWatch Logs turns into metrics."
  type        = string
  default     = "Apuntador"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/#-][A-Za-z0-9._/# -]{0,254}$", var.metrics_namespace))
    error_message = "metrics_namespace: 1 to 255 letters, digits and . _ / # - or spaces, not starting with a space."
  }
}

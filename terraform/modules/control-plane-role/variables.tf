variable "name" {
  description = "Environment name, the prefix of every resource"
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider"
  type        = string
}

variable "oidc_provider" {
  description = "The OIDC issuer without https:// (oidc.eks.<region>.amazonaws.com/id/<id>)"
  type        = string
  validation {
    condition     = !startswith(var.oidc_provider, "https://")
    error_message = "oidc_provider is the issuer without its https:// scheme."
  }
}

variable "namespace" {
  description = "The namespace the chart is installed in"
  type        = string
  default     = "lanewatch"
}

variable "service_account" {
  description = "The chart's service account (<release>-lanewatch)"
  type        = string
  default     = "lanewatch-lanewatch"
}

variable "bucket_arn" {
  description = "The capture bucket"
  type        = string
}

variable "kms_key_arn" {
  description = "The capture bucket's key"
  type        = string
}

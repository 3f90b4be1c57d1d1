variable "name" {
  description = "Environment name, the prefix of every resource"
  type        = string
}

variable "max_retention_days" {
  description = "The longest retention the control plane applies, in days"
  type        = number
  default     = 1825
}

variable "vpc_id" {
  description = "The cluster's VPC"
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the database, in at least two zones"
  type        = list(string)
}

variable "client_security_group_id" {
  description = "The security group of the control plane's pods or nodes"
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider"
  type        = string
}

variable "oidc_provider" {
  description = "The cluster's OIDC issuer, without https://"
  type        = string
}

variable "db_instance_class" {
  description = "RDS instance class of the metadata database"
  type        = string
}

variable "db_storage_gb" {
  description = "Allocated storage of the metadata database"
  type        = number
}

variable "db_multi_az" {
  description = "A standby database in a second zone"
  type        = bool
}

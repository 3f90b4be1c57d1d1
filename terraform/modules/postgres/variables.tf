variable "name" {
  description = "Environment name, the prefix of every resource"
  type        = string
}

variable "vpc_id" {
  description = "The VPC of the cluster"
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (at least two, in different zones) the database lives in"
  type        = list(string)
  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "give at least two private subnets, in different availability zones."
  }
}

variable "client_security_group_id" {
  description = "The security group of the control plane's pods (or nodes): the only client"
  type        = string
}

variable "instance_class" {
  description = "RDS instance class"
  type        = string
  default     = "db.t4g.medium"
}

variable "storage_gb" {
  description = "Allocated storage; it grows up to four times this by itself"
  type        = number
  default     = 100
  validation {
    condition     = var.storage_gb >= 20
    error_message = "storage_gb must be at least 20."
  }
}

variable "multi_az" {
  description = "A standby in a second zone (production)"
  type        = bool
  default     = false
}

variable "backup_retention_days" {
  description = "Days of automated backups (point-in-time restore)"
  type        = number
  default     = 14
  validation {
    condition     = var.backup_retention_days >= 7 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 7 and 35."
  }
}

variable "name" {
  description = "Environment name, the prefix of every resource"
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,40}$", var.name))
    error_message = "name must be 3 to 41 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "max_retention_days" {
  description = "The longest retention the control plane applies (confirmed violations: 1825 days by default)"
  type        = number
  default     = 1825
  validation {
    condition     = var.max_retention_days >= 30 && var.max_retention_days <= 3660
    error_message = "max_retention_days must be between 30 and 3660."
  }
}

variable "noncurrent_days" {
  description = "Days a deleted or replaced image's old version is kept before it is really gone"
  type        = number
  default     = 30
  validation {
    condition     = var.noncurrent_days >= 1 && var.noncurrent_days <= 365
    error_message = "noncurrent_days must be between 1 and 365."
  }
}

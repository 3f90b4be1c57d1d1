variable "name" {
  description = "Environment name, used as a prefix for every resource"
  type        = string
}

variable "region" {
  description = "AWS region"
  type        = string
  default     = "us-west-2"
}

variable "db_instance_class" {
  description = "RDS instance class for the metadata database"
  type        = string
  default     = "db.t4g.medium"
}

variable "db_storage_gb" {
  description = "Allocated storage of the metadata database"
  type        = number
  default     = 100
}

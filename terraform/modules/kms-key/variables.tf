variable "description" {
  description = "What the key encrypts"
  type        = string
}

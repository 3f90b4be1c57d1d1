output "endpoint" {
  description = "host:port, for the database-url secret (postgres://lanewatch:…@endpoint/lanewatch?sslmode=require)"
  value       = aws_db_instance.metadata.endpoint
}

output "master_user_secret_arn" {
  description = "The Secrets Manager secret RDS keeps the password in"
  value       = aws_db_instance.metadata.master_user_secret[0].secret_arn
}

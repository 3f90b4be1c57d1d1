output "bucket" {
  description = "Capture image bucket, for helm values config.blob.bucket"
  value       = aws_s3_bucket.captures.bucket
}

output "database_endpoint" {
  description = "PostgreSQL endpoint, for the database-url secret"
  value       = aws_db_instance.metadata.endpoint
}

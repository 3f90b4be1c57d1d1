output "bucket" {
  description = "The bucket's name, for helm values config.blob.bucket"
  value       = aws_s3_bucket.captures.bucket
}

output "bucket_arn" {
  description = "The bucket's ARN, for the control plane's role"
  value       = aws_s3_bucket.captures.arn
}

output "kms_key_arn" {
  description = "The key the images are encrypted with, for the control plane's role"
  value       = aws_kms_key.captures.arn
}

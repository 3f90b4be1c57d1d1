output "bucket" {
  description = "helm values config.blob.bucket"
  value       = module.bucket.bucket
}

output "database_endpoint" {
  description = "For the database-url secret (sslmode=require)"
  value       = module.postgres.endpoint
}

output "control_plane_role_arn" {
  description = "helm values serviceAccount.annotations.eks.amazonaws.com/role-arn"
  value       = module.control_plane_role.role_arn
}

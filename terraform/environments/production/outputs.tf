output "bucket" {
  description = "helm values config.blob.bucket"
  value       = module.lanewatch.bucket
}

output "database_endpoint" {
  description = "For the database-url secret (sslmode=require)"
  value       = module.lanewatch.database_endpoint
}

output "control_plane_role_arn" {
  description = "helm values serviceAccount.annotations.eks.amazonaws.com/role-arn"
  value       = module.lanewatch.control_plane_role_arn
}

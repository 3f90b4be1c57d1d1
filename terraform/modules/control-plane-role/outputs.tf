output "role_arn" {
  description = "For the service account's eks.amazonaws.com/role-arn annotation"
  value       = aws_iam_role.control_plane.arn
}

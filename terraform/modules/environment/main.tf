# One environment of the Lanewatch control plane: the capture bucket, the metadata database and
# the control plane's IAM role, wired together. The roots in ../../environments/ set the
# provider, the state backend and what differs between environments.
terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.80" }
  }
}

module "bucket" {
  source             = "../bucket"
  name               = var.name
  max_retention_days = var.max_retention_days
}

module "postgres" {
  source                   = "../postgres"
  name                     = var.name
  vpc_id                   = var.vpc_id
  private_subnet_ids       = var.private_subnet_ids
  client_security_group_id = var.client_security_group_id
  instance_class           = var.db_instance_class
  storage_gb               = var.db_storage_gb
  multi_az                 = var.db_multi_az
}

module "control_plane_role" {
  source            = "../control-plane-role"
  name              = var.name
  oidc_provider_arn = var.oidc_provider_arn
  oidc_provider     = var.oidc_provider
  bucket_arn        = module.bucket.bucket_arn
  kms_key_arn       = module.bucket.kms_key_arn
}

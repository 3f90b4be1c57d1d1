# The production environment of the Lanewatch control plane: the capture bucket, the metadata
# database and the control plane's IAM role. State is remote, in S3, locked (S3-native locking).
terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = { source = "hashicorp/aws", version = "= 5.82.2" }
  }
  backend "s3" {
    bucket       = "lanewatch-terraform-state"
    key          = "production/control-plane.tfstate"
    region       = "us-west-2"
    encrypt      = true
    use_lockfile = true
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      project     = "lanewatch"
      environment = "production"
      managed-by  = "terraform"
    }
  }
}

module "lanewatch" {
  source                   = "../../modules/environment"
  name                     = var.name
  max_retention_days       = var.max_retention_days
  vpc_id                   = var.vpc_id
  private_subnet_ids       = var.private_subnet_ids
  client_security_group_id = var.client_security_group_id
  oidc_provider_arn        = var.oidc_provider_arn
  oidc_provider            = var.oidc_provider
  db_instance_class        = "db.r7g.large"
  db_storage_gb            = 500
  db_multi_az              = true
}

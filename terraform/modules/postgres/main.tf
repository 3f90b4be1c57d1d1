# The metadata database: PostgreSQL in private subnets behind its own security group, encrypted,
# TLS-only (rds.force_ssl), backed up, protected from deletion, multi-AZ where asked.
terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.80" }
  }
}

module "key" {
  source      = "../kms-key"
  description = "${var.name}: metadata database"
}

resource "aws_db_subnet_group" "metadata" {
  name       = "${var.name}-metadata"
  subnet_ids = var.private_subnet_ids
}

resource "aws_security_group" "metadata" {
  name        = "${var.name}-metadata"
  description = "PostgreSQL for the Lanewatch control plane, from its pods only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "from_control_plane" {
  security_group_id            = aws_security_group.metadata.id
  description                  = "PostgreSQL from the control plane's pods"
  referenced_security_group_id = var.client_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_db_parameter_group" "metadata" {
  name   = "${var.name}-metadata"
  family = "postgres16"
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
}

resource "aws_db_instance" "metadata" {
  # checkov:skip=CKV_AWS_118:enhanced monitoring needs its own IAM role; Performance Insights and the exported logs cover it
  # checkov:skip=CKV2_AWS_30:slow queries are logged (log_min_duration_statement), not every statement
  # checkov:skip=CKV_AWS_157:multi_az is a variable: production sets it; staging does without the standby
  identifier                          = "${var.name}-metadata"
  engine                              = "postgres"
  engine_version                      = "16"
  instance_class                      = var.instance_class
  allocated_storage                   = var.storage_gb
  max_allocated_storage               = var.storage_gb * 4
  db_name                             = "lanewatch"
  username                            = "lanewatch"
  manage_master_user_password         = true
  db_subnet_group_name                = aws_db_subnet_group.metadata.name
  vpc_security_group_ids              = [aws_security_group.metadata.id]
  parameter_group_name                = aws_db_parameter_group.metadata.name
  publicly_accessible                 = false
  storage_encrypted                   = true
  kms_key_id                          = module.key.arn
  multi_az                            = var.multi_az
  backup_retention_period             = var.backup_retention_days
  deletion_protection                 = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.name}-metadata-final"
  copy_tags_to_snapshot               = true
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = module.key.arn
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
}

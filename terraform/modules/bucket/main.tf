# The capture image bucket: versioned, never public, encrypted with its own KMS key, reachable
# over TLS only, and with lifecycle rules that back the control plane's legal retention up.
terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.80" }
  }
}

module "key" {
  source      = "../kms-key"
  description = "${var.name}: capture images"
}

resource "aws_kms_alias" "captures" {
  name          = "alias/${var.name}-captures"
  target_key_id = module.key.key_id
}

resource "aws_s3_bucket" "captures" {
  # checkov:skip=CKV_AWS_18:access is logged by CloudTrail data events (the account's trail), not a second bucket
  # checkov:skip=CKV_AWS_144:cross-region replication would copy personal images out of the jurisdiction; versioning is the backup
  # checkov:skip=CKV2_AWS_62:nothing consumes object events; the control plane is the only writer
  bucket = "${var.name}-captures"
}

# Evidence must not be silently overwritten or lost.
resource "aws_s3_bucket_versioning" "captures" {
  bucket = aws_s3_bucket.captures.id
  versioning_configuration { status = "Enabled" }
}

resource "aws_s3_bucket_public_access_block" "captures" {
  bucket                  = aws_s3_bucket.captures.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "captures" {
  bucket = aws_s3_bucket.captures.id
  rule { object_ownership = "BucketOwnerEnforced" }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "captures" {
  bucket = aws_s3_bucket.captures.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = module.key.arn
    }
    bucket_key_enabled = true
  }
}

# TLS only: any request over plain HTTP is denied.
data "aws_iam_policy_document" "tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.captures.arn,
      "${aws_s3_bucket.captures.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "captures" {
  bucket = aws_s3_bucket.captures.id
  policy = data.aws_iam_policy_document.tls_only.json
}

# The control plane deletes each capture when its class's retention ends (docs/OPERATIONS.md).
# These rules back that up: a deleted image's old versions go after `noncurrent_days`, and no
# image outlives the longest retention (confirmed violations) plus a margin.
resource "aws_s3_bucket_lifecycle_configuration" "captures" {
  bucket = aws_s3_bucket.captures.id
  rule {
    id     = "retention-backstop"
    status = "Enabled"
    filter {}
    expiration { days = var.max_retention_days + 30 }
    noncurrent_version_expiration { noncurrent_days = var.noncurrent_days }
    abort_incomplete_multipart_upload { days_after_initiation = 1 }
  }
}

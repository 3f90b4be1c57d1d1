# A customer-managed KMS key with rotation on and the key policy AWS would give by default,
# written out (the account administers and uses the key through IAM).
terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.80" }
  }
}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "key" {
  # checkov:skip=CKV_AWS_111:in a key policy, Resource "*" is this key; the account-root statement is AWS's default policy
  # checkov:skip=CKV_AWS_356:in a key policy, Resource "*" is this key
  # checkov:skip=CKV_AWS_109:the account administers its own key (AWS's default key policy)
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = var.description
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
}

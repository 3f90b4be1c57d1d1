//! The alert rules (`helm/lanewatch/files/lanewatch.rules.yml`): `promtool check rules`, and
//! `promtool test rules` over `tests/alerts/lanewatch.rules.test.yml`, which must exercise every
//! alert; every alert has a `for:`, a severity, and summary, description and runbook annotations
//! whose runbook is a section of docs/OPERATIONS.md. (That the rules name only metrics the
//! binaries export is checked in `metrics.rs`, against their live `/metrics`.)

use std::process::Command;

use anyhow::{Context, Result};
use lanewatch_tests::workspace_root;

pub(crate) fn rules_text() -> Result<String> {
    Ok(std::fs::read_to_string(workspace_root().join("helm/lanewatch/files/lanewatch.rules.yml"))?)
}

fn promtool(args: &[&str], dir: &std::path::Path) -> Result<String> {
    let out = Command::new(workspace_root().join(".tools/bin/promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .context("cannot run promtool (scripts/setup.sh extracts it)")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "promtool {args:?} failed:\n{said}");
    Ok(said)
}

#[test]
fn alert_rules_pass_promtool_and_every_alert_is_tested_and_has_a_runbook() -> Result<()> {
    let root = workspace_root();
    let said = promtool(&["check", "rules", "helm/lanewatch/files/lanewatch.rules.yml"], &root)?;
    assert!(said.contains("SUCCESS"), "{said}");
    let said = promtool(&["test", "rules", "lanewatch.rules.test.yml"], &root.join("tests/alerts"))?;
    assert!(said.contains("SUCCESS"), "{said}");

    let rules = rules_text()?;
    let tests = std::fs::read_to_string(root.join("tests/alerts/lanewatch.rules.test.yml"))?;
    let runbooks = std::fs::read_to_string(root.join("docs/OPERATIONS.md"))?;
    let blocks: Vec<&str> = rules.split("- alert: ").skip(1).collect();
    assert!(blocks.len() >= 13, "{} alerts", blocks.len());
    for block in blocks {
        let name = block.lines().next().context("alert name")?.trim();
        for field in ["for: ", "severity: ", "summary: ", "description: ", "runbook_url: "] {
            assert!(block.contains(field), "alert {name} has no {field:?}");
        }
        assert!(
            block.contains(&format!("OPERATIONS.md#{}", name.to_lowercase())),
            "alert {name}'s runbook_url does not point at its section"
        );
        assert!(
            runbooks.contains(&format!("\n### {name}\n")),
            "docs/OPERATIONS.md has no runbook for {name}"
        );
        assert!(tests.contains(&format!("alertname: {name}\n")), "no promtool test exercises {name}");
    }
    Ok(())
}

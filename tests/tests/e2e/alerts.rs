//! The alert rules (`helm/lanewatch/files/lanewatch.rules.yml`): `promtool check rules`, and
//! `promtool test rules` over `tests/alerts/lanewatch.rules.test.yml`, which must exercise every
//! alert; every alert has a `for:`, a severity, and summary, description and runbook annotations
//! whose runbook is a section of docs/OPERATIONS.md. The Grafana dashboards
//! (`helm/lanewatch/dashboards/`): every panel has a query, and every query parses (promtool
//! checks them as recording rules). That rules and dashboards name only metrics the binaries
//! export is checked in `metrics.rs`, against their live `/metrics`.

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

/// Every panel query of the dashboards, with Grafana's variables replaced by values PromQL
/// parses: (dashboard file, panel title, query).
pub(crate) fn dashboard_queries() -> Result<Vec<(String, String, String)>> {
    let dir = workspace_root().join("helm/lanewatch/dashboards");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let file = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)
            .with_context(|| format!("{file} is not JSON"))?;
        let panels = dashboard["panels"].as_array().with_context(|| format!("{file}: no panels"))?;
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            anyhow::ensure!(!targets.is_empty(), "{file}: panel {title:?} has no query");
            for t in targets {
                let expr = t["expr"]
                    .as_str()
                    .with_context(|| format!("{file}: {title:?} has a target without expr"))?;
                let expr = expr.replace("$__rate_interval", "5m").replace("$instance", "site-a:8090");
                out.push((file.clone(), title.clone(), expr));
            }
        }
    }
    Ok(out)
}

#[test]
fn every_dashboard_query_parses() -> Result<()> {
    let queries = dashboard_queries()?;
    assert!(queries.len() >= 30, "{} queries", queries.len());
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (i, (_, _, expr)) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(expr)?
        ));
    }
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("dashboards.rules.yml"), rules)?;
    let said = promtool(&["check", "rules", "dashboards.rules.yml"], dir.path())?;
    assert!(said.contains(&format!("SUCCESS: {} rules found", queries.len())), "{said}");
    Ok(())
}

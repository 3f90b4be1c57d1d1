//! Both binaries' `/metrics` on the real processes: the agent's (on its local UI's listener) and
//! the control plane's pass `promtool check metrics` (Debian's promtool, extracted by
//! `scripts/setup.sh`), carry the series operators alert on with live values (and every metric
//! the alert rules and the dashboards name), and speak OpenMetrics to a scraper that asks for it.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use lanewatch_tests::workspace_root;
use serde_json::json;

use crate::vision::vision_agent;

/// `promtool check metrics` over `text`: its status and what it said.
fn promtool_check(text: &str) -> Result<(bool, String)> {
    let promtool = workspace_root().join(".tools/bin/promtool");
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {} (scripts/setup.sh extracts it)", promtool.display()))?;
    child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), said))
}

/// The value of the first sample whose line starts with `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_metrics_pass_promtool_and_carry_live_values() -> Result<()> {
    // over mutual TLS, so that the control plane reports its certificates' expiry too
    let pki = crate::auth::Pki::new()?;
    let cp = pki.start().await?;
    let identity = pki.agent("agent-metrics")?;
    let agent = vision_agent(&cp, "site-metrics", "")
        .agent_id("agent-metrics")
        .ca_path(&pki.ca)
        .client_cert(&identity.0, &identity.1)
        .start()?;
    let ui = agent.ui_url.clone().context("ui")?;
    let http = reqwest::Client::new();
    // captures flow: vision and the buffer have observed some
    let agent_text = cp
        .wait_for("vision and buffer latencies observed", || async {
            let text = http.get(format!("{ui}metrics")).send().await?.text().await?;
            let seen =
                value(&text, "lanewatch_agent_trigger_to_buffered_seconds_count").unwrap_or(0.0) >= 2.0;
            Ok(seen.then_some(text))
        })
        .await?;
    let (ok, said) = promtool_check(&agent_text)?;
    assert!(ok && said.trim().is_empty(), "promtool on the agent's metrics: {said}\n{agent_text}");
    for series in [
        "lanewatch_agent_component_status{component=\"detect\",status=\"running\"}",
        "lanewatch_agent_camera_streaming{camera=\"front\"}",
        "lanewatch_agent_lidar_connected",
        "lanewatch_agent_uplink_connected",
    ] {
        assert_eq!(value(&agent_text, series), Some(1.0), "{series}:\n{agent_text}");
    }
    assert!(value(&agent_text, "lanewatch_agent_vision_frame_seconds_count").unwrap_or(0.0) >= 2.0);
    assert!(value(&agent_text, "lanewatch_agent_scan_to_trigger_seconds_count").unwrap_or(0.0) >= 2.0);
    assert!(value(&agent_text, "lanewatch_agent_camera_frames_total{camera=\"front\"}").unwrap_or(0.0) > 0.0);
    assert!(value(&agent_text, "lanewatch_agent_buffer_max_bytes").unwrap_or(0.0) > 0.0);
    assert!(agent_text.contains("lanewatch_agent_buffer_class_bytes{class=\"violation_candidate\"}"));

    // a restart shows in the counter
    let before =
        value(&agent_text, "lanewatch_agent_component_restarts_total{component=\"trigger\"}").unwrap_or(-1.0);
    assert_eq!(before, 0.0, "{agent_text}");
    let restarted = cp
        .graphql(
            "mutation($a: ID!) { restartComponent(agentId: $a, component: \"trigger\") { message } }",
            json!({ "a": agent.id }),
        )
        .await?;
    assert_eq!(restarted["restartComponent"]["message"], "restarting trigger");
    cp.wait_for("the restart counted", || async {
        let text = http.get(format!("{ui}metrics")).send().await?.text().await?;
        Ok((value(&text, "lanewatch_agent_component_restarts_total{component=\"trigger\"}") == Some(1.0))
            .then_some(()))
    })
    .await?;

    let cp_text = http.get(cp.http_url("/metrics")).send().await?.text().await?;
    let (ok, said) = promtool_check(&cp_text)?;
    assert!(ok && said.trim().is_empty(), "promtool on the control plane's metrics: {said}\n{cp_text}");
    assert!(
        value(&cp_text, "lanewatch_captures_ingested_total{outcome=\"stored\"}").unwrap_or(0.0) >= 2.0,
        "{cp_text}"
    );
    // rcgen's certificates are valid until 4096: both expiries are far ahead
    for certificate in ["grpc", "client_ca"] {
        let series =
            format!("lanewatch_tls_certificate_expiry_timestamp_seconds{{certificate=\"{certificate}\"}}");
        let at = value(&cp_text, &series).with_context(|| format!("{series}:\n{cp_text}"))?;
        assert!(at > 4.0e9, "{series} {at}");
    }

    // every metric the alert rules name is one of these binaries' families
    let exported: std::collections::HashSet<&str> = agent_text
        .lines()
        .chain(cp_text.lines())
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    // ... and so is every metric a dashboard panel queries
    let queries: String =
        crate::alerts::dashboard_queries()?.into_iter().map(|(_, _, q)| q).collect::<Vec<_>>().join("\n");
    let rules = crate::alerts::rules_text()? + &queries;
    let mut named: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lanewatch_"))
        .collect();
    named.sort_unstable();
    named.dedup();
    assert!(named.len() >= 10, "{named:?}");
    for name in named {
        // a histogram's or a counter's samples carry suffixes its family name does not
        let family = ["_bucket", "_count", "_sum"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(
            exported.contains(family),
            "the alert rules or a dashboard name {name}, which neither binary exports"
        );
    }

    // a scraper that asks for OpenMetrics gets it
    let om = http
        .get(format!("{ui}metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await?;
    assert!(om.headers()["content-type"].to_str()?.starts_with("application/openmetrics-text"));
    assert!(om.text().await?.ends_with("# EOF\n"));
    Ok(())
}

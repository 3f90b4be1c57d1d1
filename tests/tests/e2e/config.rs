//! Both binaries refuse a malformed config at start, exit non-zero, and name the field (and, for
//! the agent's file, the line) and why.

use anyhow::Result;
use lanewatch_tests::run_to_exit;
use std::time::Duration;

const VALID_AGENT: &str = r#"version = 1
agent_id = "agent-a"
site_id = "site-a"

[control_plane]
url = "http://127.0.0.1:1"

[site]
lanes = 2

[simulator]
seed = 1
flow_veh_h_per_lane = 900

[[cameras]]
id = "front"
lanes = [0, 1]
trigger_delay_ms = 100
fps = 10

[cameras.source]
kind = "simulator"
"#;

/// (what to change, text to find in the error) — each case breaks one field.
const AGENT_CASES: &[(&str, &str, &str, &str)] = &[
    // (replace, with, expected field, expected line)
    ("flow_veh_h_per_lane = 900", "flow_veh_h_per_lane = 0", "simulator.flow_veh_h_per_lane", "line 13"),
    ("flow_veh_h_per_lane = 900", "flow_veh_h_per_lane = \"lots\"", "flow_veh_h_per_lane", "line 13"),
    ("lanes = 2", "lanes = 2\nlane_count = 3", "lane_count", "line 10"),
    ("lanes = [0, 1]", "lanes = [0, 5]", "cameras[0].lanes", "line 17"),
    ("version = 1", "version = 7", "version", "line 1"),
];

#[test]
fn agent_refuses_malformed_config_naming_field_and_line() -> Result<()> {
    // The valid file starts (it will not reach a control plane, so stop it right away).
    let (_dir, path) = lanewatch_tests::temp_file("agent.toml", VALID_AGENT)?;
    let (status, stderr) =
        run_to_exit("lanewatch-agent", &["check-config", path.to_str().unwrap()], Duration::from_secs(30))?;
    assert!(status.success(), "the valid config is accepted: {stderr}");

    for (from, to, field, line) in AGENT_CASES {
        let text = VALID_AGENT.replacen(from, to, 1);
        assert_ne!(text, VALID_AGENT, "case {to:?} must change the file");
        let (_dir, path) = lanewatch_tests::temp_file("agent.toml", &text)?;
        for args in [vec!["check-config", path.to_str().unwrap()], vec!["--config", path.to_str().unwrap()]] {
            let (status, stderr) = run_to_exit("lanewatch-agent", &args, Duration::from_secs(30))?;
            assert_eq!(status.code(), Some(2), "{args:?} with {to:?} exits 2: {stderr}");
            assert!(stderr.contains(field), "error for {to:?} names `{field}`: {stderr}");
            assert!(stderr.contains(line), "error for {to:?} names `{line}`: {stderr}");
        }
    }
    Ok(())
}

#[test]
fn agent_refuses_a_missing_config_file_clearly() -> Result<()> {
    let (status, stderr) =
        run_to_exit("lanewatch-agent", &["--config", "/nonexistent/agent.toml"], Duration::from_secs(30))?;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/agent.toml"), "{stderr}");
    Ok(())
}

#[test]
fn control_plane_refuses_malformed_config_naming_field() -> Result<()> {
    let cases = [
        ("version = 1\n[grpc]\nlisten = \"0.0.0.0:7400\"\n", "grpc.tls"),
        ("version = 1\n[limits]\nmax_chunk_bytes = \"big\"\n", "max_chunk_bytes"),
        ("version = 1\n[blob]\nkind = \"ftp\"\n", "kind"),
        ("version = 1\n[database]\nurl = \"mysql://x\"\n", "database.url"),
    ];
    for (text, field) in cases {
        let (_dir, path) = lanewatch_tests::temp_file("control.toml", text)?;
        let (status, stderr) =
            run_to_exit("lanewatch-control", &["--config", path.to_str().unwrap()], Duration::from_secs(30))?;
        assert_eq!(status.code(), Some(2), "{text:?} exits 2: {stderr}");
        assert!(stderr.contains(field), "error for {text:?} names `{field}`: {stderr}");
    }
    Ok(())
}

#[test]
fn migrate_applies_the_migrations_once_and_again_is_a_no_op() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("cp.db");
    let text = format!("version = 1\n[database]\nurl = \"sqlite://{}?mode=rwc\"\n", db.display());
    let (_cfg_dir, path) = lanewatch_tests::temp_file("control.toml", &text)?;
    for round in ["first", "again"] {
        let (status, stdout, stderr) = lanewatch_tests::run_to_exit_with_stdout(
            "lanewatch-control",
            &["migrate", "--config", path.to_str().unwrap()],
            Duration::from_secs(30),
        )?;
        assert!(status.success(), "{round}: {stderr}");
        assert_eq!(stdout.trim(), "migrations applied", "{round}");
    }
    assert!(db.exists(), "the database was created and migrated");
    // a database it cannot create: a clear error, status 1
    let bad = "version = 1\n[database]\nurl = \"sqlite:///proc/lanewatch/cp.db?mode=rwc\"\n";
    let (_bad_dir, bad_path) = lanewatch_tests::temp_file("control.toml", bad)?;
    let (status, stderr) = run_to_exit(
        "lanewatch-control",
        &["migrate", "--config", bad_path.to_str().unwrap()],
        Duration::from_secs(30),
    )?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot migrate the database"), "{stderr}");
    Ok(())
}

//! The README's first command, end to end: `lanewatch demo` runs the whole mission on the
//! embedded defaults (three sites, vision on, HOV 2+ and 3+ lanes), reports counted captures and
//! a violation candidate, stores only anonymized images, and drains cleanly.

use std::time::Duration;

use anyhow::Result;
use lanewatch_tests::{face_scan, run_to_exit_with_stdout, tools};

#[test]
fn demo_fleet_counts_occupants_flags_a_violation_and_stores_no_face() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (status, stdout, stderr) = run_to_exit_with_stdout(
        "lanewatch",
        &[
            "demo",
            "--http-port",
            "0",
            "--ui-port",
            "0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--tools-dir",
            tools().to_str().unwrap(),
            "--stop-after-first-violation",
        ],
        Duration::from_secs(150),
    )?;
    assert!(status.success(), "demo exits 0: {status}\n{stdout}\n{stderr}");
    for expected in [
        "console    http://127.0.0.1:",
        "local UI http://127.0.0.1:",
        "/graphql",
        "lane 1 is HOV 3+",
        "first capture queryable",
        "first counted capture",
        "first violation candidate",
        "stopped cleanly",
    ] {
        assert!(stdout.contains(expected), "demo prints `{expected}`:\n{stdout}");
    }
    // the violation line names a counted capture below its lane's minimum
    let violation = stdout.lines().find(|l| l.starts_with("first violation candidate")).unwrap();
    assert!(violation.contains(" occupants (") && violation.ends_with("violation candidate"), "{violation}");
    // the per-decision summary: counted captures (compliant) and at least one candidate
    let summary = stdout.lines().rfind(|l| l.contains(" captures: ")).expect("a decision summary");
    let count_of = |decision: &str| -> u64 {
        summary
            .split([':', ','])
            .find_map(|part| part.trim().strip_suffix(decision)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("`{decision}` in `{summary}`"))
    };
    assert!(count_of("violation candidate") >= 1, "{summary}");
    assert!(count_of("compliant") + count_of("violation candidate") >= 1, "{summary}");
    // Three agents at three sites, each with its own durable buffer.
    assert_eq!(std::fs::read_dir(dir.path().join("agents"))?.count(), 3);
    // every stored image is anonymized: the float detector at full resolution finds no face
    let images = dir.path().join("control/images");
    let scan = face_scan(&[&images])?;
    assert!(scan.images >= 2, "the control plane stored images: {scan:?}");
    assert_eq!(scan.faces, 0, "a stored image shows a face: {scan:?}");
    Ok(())
}

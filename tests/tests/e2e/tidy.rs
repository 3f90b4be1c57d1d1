//! Repository hygiene as plain tests: every Rust file says what it owns, and the crate graph keeps
//! the shape docs/ARCHITECTURE.md promises.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != "gen" && !name.to_string_lossy().starts_with('.') {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let root = lanewatch_tests::workspace_root();
    let mut files = Vec::new();
    for krate in ["proto", "agent-config", "edge-agent", "control-plane", "cli", "tests"] {
        rust_files(&root.join(krate), &mut files);
    }
    assert!(files.len() > 10, "found the sources");
    let missing: Vec<_> = files
        .iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a `//!` module doc: {missing:#?}");
}

#[test]
fn deployables_never_depend_on_each_other() {
    let root = lanewatch_tests::workspace_root();
    // The dependency lines of a crate's manifest (everything after its package table).
    let manifest = |krate: &str| {
        let text = std::fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
        let deps = text.split_once("[dependencies]").map(|(_, d)| d.to_owned());
        deps.unwrap_or_default()
    };
    assert!(!manifest("edge-agent").contains("lanewatch-control-plane"));
    assert!(!manifest("control-plane").contains("lanewatch-edge-agent"));
    assert!(!manifest("proto").contains("lanewatch-"), "proto depends on nothing of ours");
    // the config contract is shared by the agent and the control plane: it stays a leaf, and
    // light (serde and toml), so the control plane links no sensing or vision code through it
    let config = manifest("agent-config");
    assert!(!config.contains("lanewatch-"), "agent-config depends on nothing of ours");
    for heavy in ["ort", "opencv", "aravis", "tokio", "tonic"] {
        assert!(!config.lines().any(|l| l.starts_with(heavy)), "{heavy} stays out of agent-config");
    }
    assert!(!manifest("cli").contains("lanewatch-"), "the CLI drives the binaries, it links none");
    for heavy in ["aws-sdk-s3", "sea-orm", "async-graphql"] {
        assert!(!manifest("edge-agent").contains(heavy), "{heavy} stays out of the edge agent");
    }
    for heavy in ["ort", "opencv", "aravis", "redb", "ractor"] {
        assert!(
            !manifest("control-plane").lines().any(|l| l.starts_with(&format!("{heavy}."))),
            "{heavy} stays out of the control plane"
        );
    }
}

//! Repository hygiene as plain tests: every Rust file says what it owns, and the crate graph keeps
//! the shape docs/ARCHITECTURE.md promises, within each crate too (no module import cycles).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name -> the modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

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
    for krate in ["proto", "agent-config", "web", "telemetry", "edge-agent", "control-plane", "cli", "tests"]
    {
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
    // traces: of ours only the config contract, whose `[telemetry]` type it builds from
    let telemetry = manifest("telemetry");
    let ours: Vec<&str> = telemetry.lines().filter(|l| l.starts_with("lanewatch-")).collect();
    assert_eq!(ours, ["lanewatch-agent-config.workspace = true"], "telemetry depends only on agent-config");
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

/// The crate's top-level modules (`src/<name>.rs` or `src/<name>/`) and the other top-level
/// modules each one names as `crate::<name>` outside comments and test code.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy();
        let top = top.strip_suffix(".rs").unwrap_or(&top).to_owned();
        if top == "main" || top == "lib" || rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // unit tests may reach anywhere; only the code they test counts
        let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap();
        let deps = graph.entry(top.clone()).or_default();
        for line in code.lines() {
            let line = line.split("//").next().unwrap();
            for (i, _) in line.match_indices("crate::") {
                let name: String =
                    line[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != top {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

/// A cycle in `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn module_dependencies_point_one_way() {
    let root = lanewatch_tests::workspace_root();
    for krate in ["agent-config", "edge-agent", "control-plane", "cli", "tests"] {
        let graph = module_graph(&root.join(krate).join("src"));
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: modules import each other in a cycle: {}", cycle.join(" -> "));
        }
    }
    // the seams the architecture names: stages sit above `stage`, below `pipeline`; `cluster`
    // and `rollout` reach the sessions through `sessions`, below `gateway`
    let agent = module_graph(&root.join("edge-agent/src"));
    assert!(agent.contains_key("stage"), "edge-agent has its stage module");
    for stage in ["acquire", "detect", "trigger", "vision"] {
        assert!(!agent[stage].contains("pipeline"), "{stage} imports the pipeline");
    }
    let control = module_graph(&root.join("control-plane/src"));
    for module in ["cluster", "rollout", "sessions"] {
        assert!(!control[module].contains("gateway"), "{module} imports the gateway");
    }
}

#[test]
fn a_module_cycle_is_found() {
    let graph = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
    let cycle = find_cycle(&graph).expect("a -> b -> c -> a");
    assert_eq!(cycle, ["a", "b", "c", "a"]);
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&acyclic), None);
}

//! Shared helper for the contract tests: compile the `.proto` files with `protox` (no `protoc`).

use std::path::PathBuf;

pub fn proto_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn descriptor_set() -> prost_types::FileDescriptorSet {
    let root = proto_root();
    protox::compile(
        ["lanewatch/v1/session.proto", "lanewatch/v1/capture.proto", "lanewatch/v1/introspection.proto"],
        [&root],
    )
    .expect("the .proto files compile")
}

/// Set `LANEWATCH_BLESS=1` to rewrite committed artifacts instead of failing on drift.
pub fn bless() -> bool {
    std::env::var_os("LANEWATCH_BLESS").is_some_and(|v| v == "1")
}

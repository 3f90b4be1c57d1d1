//! The Lanewatch wire contract: Rust types generated from `proto/lanewatch/v1/*.proto`.
//!
//! The generated code is committed (`src/gen/`) so that building the workspace needs no protobuf
//! compiler; `tests/codegen.rs` regenerates it and fails when the committed copy drifts, and
//! `tests/compat.rs` fails on a breaking change against `lanewatch/v1/wire.lock`.
//!
//! Only the crates' edges (the agent's uplink, the control plane's gateway) use these types;
//! everything else works on domain types.

/// `lanewatch.v1`: the first (and current) version of the contract.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    include!("gen/lanewatch.v1.rs");

    /// Protocol versions this build of the contract can speak, oldest first.
    pub const SUPPORTED_PROTOCOL_VERSIONS: std::ops::RangeInclusive<u32> = 1..=1;
    /// The protocol version new sessions open with.
    pub const PROTOCOL_VERSION: u32 = 1;
}

/// The `.proto` sources, embedded for tools that want to show or serve the contract.
pub const PROTO_SOURCES: &[(&str, &str)] = &[
    ("lanewatch/v1/session.proto", include_str!("../lanewatch/v1/session.proto")),
    ("lanewatch/v1/capture.proto", include_str!("../lanewatch/v1/capture.proto")),
    ("lanewatch/v1/introspection.proto", include_str!("../lanewatch/v1/introspection.proto")),
];

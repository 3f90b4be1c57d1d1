//! Fails when the committed generated code (`src/gen/lanewatch.v1.rs`) differs from what the
//! `.proto` files generate. Regenerate with `LANEWATCH_BLESS=1 cargo test -p lanewatch-proto`.

mod support;

#[test]
fn generated_code_is_committed_and_current() {
    let out = tempfile_dir();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        // image chunks decode as `Bytes` slices of the received buffer: no copy per chunk
        .bytes(".lanewatch.v1.CaptureChunk.data")
        .out_dir(&out)
        .emit_rerun_if_changed(false)
        .compile_fds(support::descriptor_set())
        .expect("code generation succeeds");
    let fresh = std::fs::read_to_string(out.join("lanewatch.v1.rs")).unwrap();
    let committed_path = support::proto_root().join("src/gen/lanewatch.v1.rs");
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    if fresh != committed {
        if support::bless() {
            std::fs::write(&committed_path, fresh).unwrap();
            return;
        }
        panic!(
            "src/gen/lanewatch.v1.rs is stale: the .proto files changed without regenerating; \
             run `LANEWATCH_BLESS=1 cargo test -p lanewatch-proto --test codegen` and commit the result"
        );
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lanewatch-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

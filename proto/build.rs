//! Compiles the protocol with protox (no `protoc` needed) and generates the
//! Rust code with tonic-prost-build. The encoded descriptor set, imports
//! included, is written beside the code for reflection and dataset schemas.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "yrd/mesh/v1/options.proto",
    "yrd/mesh/v1/query.proto",
    "yrd/mesh/v1/node.proto",
    "yrd/mesh/v1/federation.proto",
    "yrd/datasets/enterprise/v1/enterprise.proto",
    "yrd/datasets/environment/v1/air_quality.proto",
    "yrd/datasets/environment/v1/water_quality.proto",
    "yrd/datasets/waste/v1/transfer_manifest.proto",
    "yrd/datasets/property/v1/deal.proto",
    // Only for the descriptor set (reflection); its Rust types come from tonic-types.
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=yrd");
    println!("cargo:rerun-if-changed=google");

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    // Encoded by protox itself: a round trip through prost_types would drop
    // the custom options that the dataset schemas are read from.
    std::fs::write(out.join("yrd_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    let fds = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

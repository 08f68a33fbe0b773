//! Compiles the protocol with protox (no `protoc` needed) and generates the
//! Rust code with tonic-prost-build. The encoded descriptor set, imports
//! included, is written beside the code for reflection and dataset schemas.
//!
//! The dataset protos are found by walking `yrd/datasets/`, so that adding a
//! dataset needs no edit here.

use std::path::{Path, PathBuf};

/// The protocol itself, in dependency order.
const MESH_PROTOS: &[&str] = &[
    "yrd/mesh/v1/options.proto",
    "yrd/mesh/v1/query.proto",
    "yrd/mesh/v1/access.proto",
    "yrd/mesh/v1/audit.proto",
    "yrd/mesh/v1/assertion.proto",
    "yrd/mesh/v1/node.proto",
    "yrd/mesh/v1/federation.proto",
];

/// The folder of the standard datasets' protos, relative to the crate.
const DATASETS_DIR: &str = "yrd/datasets";

/// Only for the descriptor set (reflection); its Rust types come from tonic-types.
const ERROR_DETAILS_PROTO: &str = "google/rpc/error_details.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=yrd");
    // A directory is watched as a whole: a dataset proto added or removed reruns this.
    println!("cargo:rerun-if-changed={DATASETS_DIR}");
    println!("cargo:rerun-if-changed=google");

    let mut datasets = Vec::new();
    find_protos(&root, Path::new(DATASETS_DIR), &mut datasets)?;
    // Sorted, so that the descriptor set and the generated code do not
    // depend on the order the file system lists them in.
    datasets.sort();
    let protos: Vec<String> = MESH_PROTOS
        .iter()
        .map(|p| (*p).to_owned())
        .chain(datasets)
        .chain([ERROR_DETAILS_PROTO.to_owned()])
        .collect();

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&protos)?;
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

/// Adds every `.proto` file under `root/dir` (recursively) to `found`, as a
/// path relative to `root` with `/` separators, the form protox resolves
/// imports by.
fn find_protos(root: &Path, dir: &Path, found: &mut Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    for entry in std::fs::read_dir(root.join(dir))? {
        let entry = entry?;
        let relative = dir.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            find_protos(root, &relative, found)?;
        } else if relative.extension().is_some_and(|e| e == "proto") {
            let parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            found.push(parts.join("/"));
        }
    }
    Ok(())
}

//! Compiles the `.proto` contract with protox (pure Rust: no protoc on the machine) and generates
//! the prost messages, and the tonic services when feature `grpc` is on. The encoded descriptor set
//! is kept for gRPC reflection.

use std::{env, fs, path::PathBuf};

use protox::prost::Message as _;

const PROTOS: &[&str] = &[
    "keyregistry/v1/log.proto",
    "keyregistry/v1/audit.proto",
    "keyregistry/v1/commands.proto",
    "keyregistry/v1/lookup.proto",
    "keyregistry/v1/replication.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=keyregistry");
    let out = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(PROTOS, ["."])?;
    fs::write(out.join("keyregistry_descriptor.bin"), fds.encode_to_vec())?;

    // Without the stubs the messages come from prost-build alone, so the rules crate's dependency
    // tree holds no tonic at all, not even a code generator.
    #[cfg(feature = "grpc")]
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    #[cfg(not(feature = "grpc"))]
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}

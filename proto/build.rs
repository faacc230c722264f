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
    // tree holds no tonic at all, not even a code generator. The well-known types come from
    // pbjson-types, which gives them their protobuf JSON mapping (a Timestamp is an RFC 3339
    // string) like every message of ours.
    #[cfg(feature = "grpc")]
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds.clone())?;
    #[cfg(not(feature = "grpc"))]
    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds.clone())?;

    // The protobuf JSON mapping of every message, for the HTTP/JSON API: generated from the same
    // descriptors, so JSON and protobuf cannot describe two different schemas.
    pbjson_build::Builder::new()
        .register_descriptors(&fds.encode_to_vec())?
        .build(&[".keyregistry.v1"])?;
    Ok(())
}

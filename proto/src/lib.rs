//! The meter key registry's contract and the pure rules both ends check.
//!
//! `registry-proto` holds the protobuf API (package `keyregistry.v1`) and everything a client or
//! an offline verifier must compute exactly as the server does: the log entry format and its
//! hash chain, RFC 6962 Merkle trees and proofs, and C2SP signed checkpoints. It does no I/O, so
//! what it says about a byte string depends on nothing but those bytes.

pub mod checkpoint;
pub mod entry;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod time;

/// Generated protobuf messages and gRPC stubs for `keyregistry.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("keyregistry.v1");
}

/// The encoded `FileDescriptorSet` of the whole contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keyregistry_descriptor.bin"));

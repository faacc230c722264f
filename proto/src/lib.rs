//! The meter key registry's contract and the pure rules both ends check.
//!
//! `registry-proto` holds the protobuf API (package `keyregistry.v1`) and everything a client or
//! an offline verifier must compute exactly as the server does: the log entry format and its
//! hash chain, RFC 6962 Merkle trees and proofs, C2SP signed checkpoints, identifiers and meter
//! keys, signed commands, and the key lifecycle rules with the validity verdicts derived from
//! them. It does no I/O, so what it says about a byte string depends on nothing but those bytes.

pub mod checkpoint;
pub mod command;
pub mod entry;
pub mod event;
pub mod ids;
pub mod keys;
pub mod lifecycle;
pub mod map;
pub mod merkle;
pub mod meter_key;
pub mod note;
pub mod ocmf;
pub mod proof;
pub mod receipt;
pub mod replay;
pub mod signed_values;
pub mod tiles;
pub mod time;
pub mod validity;

/// Generated protobuf messages and gRPC stubs for `keyregistry.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("keyregistry.v1");
}

/// The encoded `FileDescriptorSet` of the whole contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keyregistry_descriptor.bin"));

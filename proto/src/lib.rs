//! The meter key registry's contract: the protobuf API of package `keyregistry.v1` and the log's
//! entry format, as generated Rust messages.
//!
//! This crate holds nothing but what the `.proto` files say, so that the wire format has one
//! home. The rules that give those messages meaning live in `registry-core`. The tonic client and
//! server stubs sit behind the `grpc` feature: the server and the client turn it on, an offline
//! verifier does not.

/// Generated protobuf messages (and, with feature `grpc`, gRPC stubs) for `keyregistry.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/keyregistry.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/keyregistry.v1.serde.rs"));
}

/// `google.protobuf.Timestamp` as the messages use it (with its protobuf JSON mapping, an RFC 3339
/// string).
pub use pbjson_types::Timestamp;

/// The encoded `FileDescriptorSet` of the whole contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keyregistry_descriptor.bin"));

#![warn(missing_docs)]
//! The meter key registry's rules: everything a client, a server or an offline verifier must
//! compute exactly alike.
//!
//! `registry-core` gives meaning to the messages of `registry-proto`: the log entry format and its
//! hash chain, RFC 6962 Merkle trees and proofs, C2SP signed checkpoints, identifiers and meter
//! keys, signed commands, the key lifecycle and the validity verdicts derived from it, OCMF signed
//! meter values, and replay of a whole log. It does no I/O and pulls in no gRPC runtime, so what it
//! says about a byte string depends on nothing but those bytes, and a regulator's tool can depend
//! on it alone.

pub mod checkpoint;
pub mod command;
pub mod convert;
pub mod entry;
pub mod error;
pub mod event;
pub mod ids;
pub mod keys;
pub mod lifecycle;
pub mod map;
pub mod merkle;
pub mod meter_key;
pub mod note;
pub mod ocmf;
pub mod ocpi;
pub mod pool;
pub mod possession;
pub mod proof;
pub mod receipt;
pub mod replay;
pub mod signed_values;
pub mod tiles;
pub mod time;
pub mod validity;

/// The generated protobuf messages of `keyregistry.v1`, re-exported so that a verifier needs one
/// dependency.
pub use registry_proto::pb;

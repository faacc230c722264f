//! The meter key registry service.
//!
//! A command travels from the gRPC layer ([`grpc`]) to the single log writer ([`log`]), which
//! checks it against the current state, appends it durably to the store ([`store`]) and updates
//! the projections in the same atomic write. Reads go straight to the store, never past the
//! durable head. [`server`] wires it together with the registry key ([`registry_key`]) and the
//! configuration ([`config`]). See ARCHITECTURE.md for the whole map.

pub mod config;
pub mod grpc;
pub mod log;
pub mod registry_key;
pub mod server;
pub mod store;

//! The meter key registry service.
//!
//! A command travels from the gRPC layer ([`grpc`]) through the edge checks ([`commands`]:
//! signer, signature, clock) to the single log writer ([`log`]), where the lifecycle rules
//! ([`machine`]) check it against the projections ([`projection`], with key records and indexes
//! held in memory by [`key_cache`]) and the entry is appended durably to the store ([`store`])
//! together with the projection updates, in one atomic write. Reads ([`lookup`]) go to the
//! projections (the key cache first), never past the durable head. [`server`] wires it together
//! with the registry key ([`registry_key`]) and the configuration ([`config`]). See
//! ARCHITECTURE.md for the whole map.

pub mod admission;
pub mod commands;
pub mod config;
pub mod cores;
pub mod disk;
pub mod evidence;
pub mod files;
pub mod grpc;
pub mod key_cache;
pub mod listener;
pub mod log;
pub mod lookup;
pub mod machine;
pub mod map;
pub mod peers;
pub mod projection;
pub mod registry;
pub mod registry_key;
pub mod replica;
pub mod restore;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod usage;
pub mod web;

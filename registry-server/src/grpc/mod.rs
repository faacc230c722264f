//! The gRPC layer: thin services that turn protobuf into domain calls and domain errors into
//! `tonic::Status` ([`status`], the one place that mapping happens).
//!
//! - [`commands`]: signed commands (`keyregistry.v1.CommandService`);
//! - [`lookup`]: validity, key records, history, operators (`keyregistry.v1.LookupService`);
//! - [`audit`]: checkpoints, entries, proofs, live watch (`keyregistry.v1.AuditService`);
//! - [`health`]: `grpc.health.v1`, whose streams end at shutdown;
//! - server reflection, so stock tools (grpcurl, grpcui) can discover and call the API.

pub mod audit;
pub mod commands;
pub mod health;
pub mod lookup;
pub(crate) mod status;

/// The reflection service over the registry's and the health service's descriptors.
pub fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(registry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
}

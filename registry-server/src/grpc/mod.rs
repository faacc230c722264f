//! The gRPC layer: thin services that turn protobuf into domain calls and domain errors into
//! `tonic::Status` ([`status`], the one place that mapping happens).
//!
//! - [`commands`]: signed commands (`keyregistry.v1.CommandService`);
//! - [`lookup`]: validity, key records, history, operators (`keyregistry.v1.LookupService`);
//! - [`audit`]: checkpoints, entries, proofs, live watch (`keyregistry.v1.AuditService`);
//! - [`health`]: `grpc.health.v1`, whose streams end at shutdown;
//! - [`replica`]: the command service of a read replica, which refuses, naming the primary;
//! - [`replication`]: replicas' progress reports (`keyregistry.v1.ReplicationService`);
//! - server reflection (v1 and v1alpha, with the error-detail types), so stock tools (grpcurl,
//!   grpcui, Evans, Postman) can discover and call the API and decode its errors.

pub mod audit;
pub mod commands;
pub mod health;
pub mod lookup;
pub mod replica;
pub mod replication;
pub(crate) mod status;

/// The registry's, the health service's and the `google.rpc` error-detail descriptors, so that
/// grpcurl and buf curl decode a `BadRequest` detail as well as list and call the API.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(registry_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Server reflection `grpc.reflection.v1`, which current grpcurl and grpcui speak.
pub fn reflection_v1() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    reflection_builder().build_v1()
}

/// Server reflection `grpc.reflection.v1alpha`, which grpcio's client, Evans, Postman and
/// grpcurl before 1.8.7 still speak.
pub fn reflection_v1alpha() -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    reflection_builder().build_v1alpha()
}

//! The JSON API: the read methods of `LookupService` and `AuditService` over HTTP/1.1 and
//! HTTP/2, in the Connect protocol's unary form: `POST /keyregistry.v1.LookupService/CheckValidity`
//! with the request message as a JSON body, the response message as the JSON answer.
//!
//! JSON is the protobuf JSON mapping of the very messages gRPC carries (serde impls generated
//! from the `.proto` files by pbjson), and every call goes to the same service object the gRPC
//! server holds: the checks, the answers and the errors cannot differ between the two doors.
//! Commands are not here; they stay on gRPC, where the admission layer guards them.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use registry_proto::pb::audit_service_server::AuditService;
use registry_proto::pb::lookup_service_server::LookupService;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;

use super::error::HttpError;
use crate::grpc::audit::AuditApi;
use crate::grpc::health::HealthHandle;
use crate::grpc::lookup::LookupApi;
use crate::grpc::status;

/// Largest request body of a single question.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Largest request body of the batch methods: their gRPC limits (4 and 16 MiB of protobuf)
/// with room for JSON's longer spelling of the same questions and records.
pub const MAX_BATCH_BODY_BYTES: usize = 32 << 20;

/// One method of the JSON API, for the route table and the OpenAPI description.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    /// `LookupService` or `AuditService`.
    pub service: &'static str,
    /// `CheckValidity`.
    pub name: &'static str,
    /// One line for people.
    pub summary: &'static str,
}

impl Method {
    /// `/keyregistry.v1.LookupService/CheckValidity`.
    pub fn path(&self) -> String {
        format!("/keyregistry.v1.{}/{}", self.service, self.name)
    }
}

const fn method(service: &'static str, name: &'static str, summary: &'static str) -> Method {
    Method { service, name, summary }
}

/// Every method the JSON API serves.
pub const METHODS: &[Method] = &[
    method(
        "LookupService",
        "CheckValidity",
        "Was a key valid for a meter, gateway or EVSE at a time, as known at a basis?",
    ),
    method("LookupService", "CheckValidityBatch", "Many validity questions against one basis."),
    method("LookupService", "GetKey", "A key's record."),
    method("LookupService", "GetHistory", "The entries of a key, meter, gateway or EVSE."),
    method("LookupService", "GetOperator", "An operator's record."),
    method(
        "LookupService",
        "ValidateSignedMeterValues",
        "Checks signed meter values (OCMF or OCPI signed data) against the registry.",
    ),
    method("AuditService", "GetRegistryInfo", "The registry's origin and public key."),
    method("AuditService", "GetCheckpoint", "A signed checkpoint of the log."),
    method("AuditService", "GetInclusionProof", "The inclusion proof of an entry."),
    method("AuditService", "GetConsistencyProof", "A consistency proof between two sizes."),
    method("AuditService", "GetReceipt", "The receipt of an entry."),
];

/// Routes one service method: `$call` is the trait method the gRPC server calls too. While
/// gRPC health says the service is not serving (a replica that fell behind its primary, a
/// server shutting down), the JSON API answers `UNAVAILABLE` as a load balancer would have
/// been told to. `$limit` is the largest request body.
macro_rules! route {
    ($router:expr, $api:expr, $health:expr, $service:literal, $method:literal, $call:ident, $limit:expr) => {{
        let (api, health) = ($api.clone(), $health.clone());
        $router.route(
            concat!("/keyregistry.v1.", $service, "/", $method),
            post(move |headers: HeaderMap, body: Bytes| {
                let (api, health) = (api.clone(), health.clone());
                async move {
                    if let Some(refusal) =
                        not_serving(&health, concat!("keyregistry.v1.", $service))
                    {
                        return refusal;
                    }
                    unary(&headers, &body, |request| async move { api.$call(request).await }).await
                }
            })
            .layer(DefaultBodyLimit::max($limit)),
        )
    }};
}

/// The JSON API's routes over the services the gRPC server holds (`lookup` is absent on a
/// server without the registry's machine, such as some tests).
pub fn routes(
    audit: Arc<AuditApi>,
    lookup: Option<Arc<LookupApi>>,
    health: HealthHandle,
) -> Router {
    let mut router = Router::new();
    let (one, many) = (MAX_BODY_BYTES, MAX_BATCH_BODY_BYTES);
    router =
        route!(router, audit, health, "AuditService", "GetRegistryInfo", get_registry_info, one);
    router = route!(router, audit, health, "AuditService", "GetCheckpoint", get_checkpoint, one);
    router = route!(
        router,
        audit,
        health,
        "AuditService",
        "GetInclusionProof",
        get_inclusion_proof,
        one
    );
    router = route!(
        router,
        audit,
        health,
        "AuditService",
        "GetConsistencyProof",
        get_consistency_proof,
        one
    );
    router = route!(router, audit, health, "AuditService", "GetReceipt", get_receipt, one);
    if let Some(lookup) = lookup {
        router =
            route!(router, lookup, health, "LookupService", "CheckValidity", check_validity, one);
        router = route!(
            router,
            lookup,
            health,
            "LookupService",
            "CheckValidityBatch",
            check_validity_batch,
            many
        );
        router = route!(router, lookup, health, "LookupService", "GetKey", get_key, one);
        router = route!(router, lookup, health, "LookupService", "GetHistory", get_history, one);
        router = route!(router, lookup, health, "LookupService", "GetOperator", get_operator, one);
        router = route!(
            router,
            lookup,
            health,
            "LookupService",
            "ValidateSignedMeterValues",
            validate_signed_meter_values,
            many
        );
    }
    router
}

/// `UNAVAILABLE` when gRPC health says `service` (or the whole server) is not serving.
fn not_serving(health: &HealthHandle, service: &str) -> Option<Response> {
    let down = |s: &str| health.get(s) == Some(ServingStatus::NotServing);
    (down(service) || down("")).then(|| {
        HttpError(Status::unavailable(format!(
            "{service} is not serving here now (a replica behind its primary, or a server \
             stopping); ask another server"
        )))
        .into_response()
    })
}

/// Decodes the JSON request, calls the method, encodes its answer or its error.
async fn unary<Req, Resp, F, Fut>(headers: &HeaderMap, body: &Bytes, call: F) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    if !is_json(headers) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [(
                header::HeaderName::from_static("accept-post"),
                HeaderValue::from_static("application/json"),
            )],
            "send the request message as JSON (Content-Type: application/json)\n",
        )
            .into_response();
    }
    let request = match decode::<Req>(body) {
        Ok(r) => r,
        Err(s) => return HttpError(s).into_response(),
    };
    match call(tonic::Request::new(request)).await {
        Ok(answer) => json(answer.get_ref()),
        Err(s) => HttpError(s).into_response(),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// The request message from its protobuf JSON; an empty body is the empty message. A body
/// that does not parse is `INVALID_ARGUMENT` naming the field where it stopped.
fn decode<Req: DeserializeOwned>(body: &[u8]) -> Result<Req, Status> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "(body)".to_string() } else { path };
        status::invalid(&field, format!("is not the protobuf JSON of the request: {}", e.inner()))
    })
}

/// A response message as protobuf JSON.
pub fn json<T: Serialize>(message: &T) -> Response {
    match serde_json::to_vec(message) {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => HttpError(Status::internal(format!("the answer could not be encoded: {e}")))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_proto::pb;

    #[test]
    fn a_misspelt_field_is_named_in_the_error() {
        let e = decode::<pb::CheckValidityRequest>(br#"{"key": {"fingerprnt": "ab"}}"#)
            .expect_err("unknown field");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("key.fingerprnt: "), "{}", e.message());
    }

    #[test]
    fn json_uses_the_protobuf_mapping_in_both_spellings() {
        let camel: pb::GetCheckpointRequest = decode(br#"{"treeSize": "12"}"#).unwrap();
        let snake: pb::GetCheckpointRequest = decode(br#"{"tree_size": 12}"#).unwrap();
        assert_eq!(camel.tree_size, 12);
        assert_eq!(snake, camel);
        let empty: pb::GetCheckpointRequest = decode(b"").unwrap();
        assert_eq!(empty.tree_size, 0);
    }

    #[test]
    fn every_method_has_a_distinct_path() {
        let mut paths: Vec<String> = METHODS.iter().map(Method::path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), METHODS.len());
    }
}

//! Errors of the HTTP face, in the Connect protocol's JSON error format: the gRPC code's name,
//! the message, and every `google.rpc` detail the gRPC answer carries (base64 `value`, readable
//! `debug`), with the HTTP status Connect assigns to the code. A client sees the same code,
//! message and field violations over HTTP as over gRPC, because both come from one `Status`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use prost::Message as _;
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A `Status` as an HTTP response.
pub struct HttpError(pub Status);

impl From<Status> for HttpError {
    fn from(s: Status) -> Self {
        Self(s)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = http_status(self.0.code());
        let body = serde_json::to_vec(&error_body(&self.0)).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

/// The Connect name of a gRPC code (`invalid_argument`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status the Connect protocol gives a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"code", "message", "details": [{"type", "value", "debug"}]}`.
fn error_body(status: &Status) -> Value {
    let mut body = json!({ "code": code_name(status.code()), "message": status.message() });
    let details = details(status);
    if !details.is_empty() {
        body["details"] = Value::Array(details);
    }
    body
}

fn details(status: &Status) -> Vec<Value> {
    let Ok(rpc) = tonic_types::pb::Status::decode(status.details()) else { return Vec::new() };
    let readable = status.get_error_details();
    rpc.details
        .iter()
        .map(|any| {
            let kind = any.type_url.rsplit('/').next().unwrap_or(&any.type_url).to_string();
            let value = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&any.value);
            let mut detail = json!({ "type": kind, "value": value });
            let debug = match kind.as_str() {
                "google.rpc.BadRequest" => readable.bad_request().map(|b| {
                    let violations: Vec<Value> = b
                        .field_violations
                        .iter()
                        .map(|v| json!({ "field": v.field, "description": v.description }))
                        .collect();
                    json!({ "fieldViolations": violations })
                }),
                "google.rpc.ErrorInfo" => readable.error_info().map(
                    |i| json!({ "reason": i.reason, "domain": i.domain, "metadata": i.metadata }),
                ),
                _ => None,
            };
            if let Some(debug) = debug {
                detail["debug"] = debug;
            }
            detail
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::status;

    #[test]
    fn a_bad_field_keeps_its_violation_over_http() {
        let body = error_body(&status::invalid("key.fingerprint", "must be 64 hex digits"));
        assert_eq!(body["code"], "invalid_argument");
        assert_eq!(body["message"], "key.fingerprint: must be 64 hex digits");
        let detail = &body["details"][0];
        assert_eq!(detail["type"], "google.rpc.BadRequest");
        assert_eq!(detail["debug"]["fieldViolations"][0]["field"], "key.fingerprint");
        assert_eq!(detail["debug"]["fieldViolations"][0]["description"], "must be 64 hex digits");
        let value = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(detail["value"].as_str().unwrap())
            .unwrap();
        let decoded = tonic_types::pb::BadRequest::decode(value.as_slice()).unwrap();
        assert_eq!(decoded.field_violations[0].field, "key.fingerprint");
    }

    #[test]
    fn codes_get_the_http_status_connect_gives_them() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::ResourceExhausted), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(http_status(Code::Internal), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

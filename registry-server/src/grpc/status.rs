//! Every domain error becomes a `tonic::Status` here, and only here.
//!
//! Clients get the standard codes and, for bad input, a `google.rpc.BadRequest` detail naming
//! the field and the rule it broke, so that a program can point at the field and a person can
//! read the message.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::log::ReadError;
use crate::store::StoreError;

/// A request field broke a rule: `code` is `INVALID_ARGUMENT` or `OUT_OF_RANGE`.
pub(crate) fn field(code: Code, field: &str, rule: impl Into<String>) -> Status {
    let rule = rule.into();
    Status::with_error_details(
        code,
        format!("{field}: {rule}"),
        ErrorDetails::with_bad_request_violation(field, rule),
    )
}

/// `INVALID_ARGUMENT` for one field.
pub(crate) fn invalid(name: &str, rule: impl Into<String>) -> Status {
    field(Code::InvalidArgument, name, rule)
}

/// `OUT_OF_RANGE` for one field: the request is well-formed but asks beyond the log.
pub(crate) fn out_of_range(name: &str, rule: impl Into<String>) -> Status {
    field(Code::OutOfRange, name, rule)
}

pub(crate) fn store(e: StoreError) -> Status {
    match e {
        StoreError::Io(m) => Status::unavailable(format!("storage is unavailable: {m}")),
        StoreError::Full(m) => Status::resource_exhausted(format!(
            "the registry's disk is full ({m}); writes resume after the operator frees space \
             and restarts the registry"
        )),
        StoreError::Corrupt(m) => Status::internal(format!("stored data is corrupt: {m}")),
    }
}

pub(crate) fn read(e: ReadError) -> Status {
    match e {
        ReadError::OutOfRange(m) => Status::out_of_range(m),
        ReadError::Store(e) => store(e),
        ReadError::Proof(e) => Status::internal(format!("a proof could not be built: {e}")),
    }
}

/// Streams end with this when the server shuts down, so clients know to resume elsewhere or
/// later from the position they reached.
pub(crate) fn shutting_down(next: u64) -> Status {
    Status::unavailable(format!("the server is shutting down; resume from position {next}"))
}

/// A rule refused a command: the code follows the rule's class, the field goes into a
/// `google.rpc.BadRequest` detail whatever the code, so clients can always point at it.
pub(crate) fn rejection(r: &registry_core::lifecycle::Rejection) -> Status {
    use registry_core::lifecycle::RejectCode;
    let code = match r.code {
        RejectCode::InvalidArgument => Code::InvalidArgument,
        RejectCode::FailedPrecondition => Code::FailedPrecondition,
        RejectCode::PermissionDenied => Code::PermissionDenied,
        RejectCode::Unauthenticated => Code::Unauthenticated,
        RejectCode::AlreadyExists => Code::AlreadyExists,
    };
    match &r.field {
        Some(f) => field(code, f, r.message.clone()),
        None => Status::new(code, r.message.clone()),
    }
}

pub(crate) fn command(e: crate::commands::CommandError) -> Status {
    use crate::commands::CommandError;
    match e {
        CommandError::Rejected(r) => rejection(&r),
        CommandError::Unavailable(m) => {
            Status::unavailable(format!("the log cannot take writes: {m}"))
        }
        CommandError::Store(e) => store(e),
    }
}

/// A refused command of a bulk call: the status it would have got alone, flattened.
pub(crate) fn refusal(e: crate::commands::CommandError) -> registry_proto::pb::Refusal {
    let field = match &e {
        crate::commands::CommandError::Rejected(r) => r.field.clone(),
        _ => None,
    };
    refusal_of(&command(e), field)
}

pub(crate) fn refusal_of(s: &Status, field: Option<String>) -> registry_proto::pb::Refusal {
    registry_proto::pb::Refusal {
        code: s.code() as i32,
        message: s.message().to_string(),
        field: field.unwrap_or_default(),
    }
}

pub(crate) fn lookup(e: crate::lookup::LookupError) -> Status {
    use crate::lookup::LookupError;
    match e {
        LookupError::Invalid { field: f, message } => field(Code::InvalidArgument, &f, message),
        LookupError::OutOfRange { field: f, message } => field(Code::OutOfRange, &f, message),
        LookupError::NotFound { field: f, message } => field(Code::NotFound, &f, message),
        LookupError::Precondition { field: f, message } => {
            field(Code::FailedPrecondition, &f, message)
        }
        LookupError::Store(e) => store(e),
    }
}

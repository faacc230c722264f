//! Every domain error becomes a `tonic::Status` here, and only here: one `From` impl per error
//! type of the server, so a handler writes `?` and the code and message follow the error.
//!
//! Clients get the standard codes and, for bad input, a `google.rpc.BadRequest` detail naming
//! the field and the rule it broke (the rules' [`FieldError`]), so that a program can point at
//! the field and a person can read the message.

use registry_core::error::FieldError;
use registry_core::lifecycle::{RejectCode, Rejection};
use registry_proto::pb;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::commands::CommandError;
use crate::log::ReadError;
use crate::lookup::LookupError;
use crate::store::StoreError;

/// A field broke a rule: the message reads `field: rule`, and the detail names both. An error
/// that blames no field gets the code and the rule alone.
pub(crate) fn bad_field(code: Code, error: &FieldError) -> Status {
    match error.field() {
        Some(field) => Status::with_error_details(
            code,
            error.to_string(),
            ErrorDetails::with_bad_request_violation(field, error.rule.clone()),
        ),
        None => Status::new(code, error.rule.clone()),
    }
}

/// `INVALID_ARGUMENT` for one field of the request, as the gRPC layer checks it.
pub(crate) fn invalid(field: &str, rule: impl Into<String>) -> Status {
    bad_field(Code::InvalidArgument, &FieldError::new(field, rule))
}

/// `OUT_OF_RANGE` for one field: the request is well-formed but asks beyond the log.
pub(crate) fn out_of_range(field: &str, rule: impl Into<String>) -> Status {
    bad_field(Code::OutOfRange, &FieldError::new(field, rule))
}

/// Streams end with this when the server shuts down, so clients know to resume elsewhere or
/// later from the position they reached.
pub(crate) fn shutting_down(next: u64) -> Status {
    Status::unavailable(format!("the server is shutting down; resume from position {next}"))
}

/// Runs blocking work (store reads, proofs, a batch of lookups) off the async threads. Its own
/// error is mapped by the impls below; a panic in it becomes `INTERNAL`.
pub(crate) async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Status>
where
    T: Send + 'static,
    E: Send + 'static,
    Status: From<E>,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("a blocking task failed: {e}")))?
        .map_err(Status::from)
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io(m) => Status::unavailable(format!("storage is unavailable: {m}")),
            StoreError::Full(m) => Status::resource_exhausted(format!(
                "the registry's disk is full ({m}); writes resume after the operator frees space \
                 and restarts the registry"
            )),
            StoreError::Corrupt(m) => Status::internal(format!("stored data is corrupt: {m}")),
        }
    }
}

/// A command sent to a read replica: where it should have gone.
pub(crate) fn read_replica(primary: &str) -> Status {
    Status::with_error_details(
        tonic::Code::FailedPrecondition,
        format!(
            "this server is a read replica and takes no commands: send them to the primary at \
             {primary}"
        ),
        ErrorDetails::with_error_info(
            "READ_REPLICA",
            "keyregistry.v1",
            [("primary".to_string(), primary.to_string())],
        ),
    )
}

impl From<crate::replica::progress::NotReplicated> for Status {
    fn from(e: crate::replica::progress::NotReplicated) -> Self {
        Status::unavailable(e.to_string())
    }
}

impl From<ReadError> for Status {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::OutOfRange(m) => Status::out_of_range(m),
            ReadError::Store(e) => e.into(),
            ReadError::Proof(e) => Status::internal(format!("a proof could not be built: {e}")),
            ReadError::Unsigned(m) => Status::failed_precondition(m),
        }
    }
}

impl From<CommandError> for Status {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Rejected(r) => rejection(&r),
            CommandError::Unavailable(m) => {
                Status::unavailable(format!("the log cannot take writes: {m}"))
            }
            CommandError::Store(e) => e.into(),
            CommandError::Exhausted(m) => Status::resource_exhausted(m),
        }
    }
}

impl From<LookupError> for Status {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::Invalid(f) => bad_field(Code::InvalidArgument, &f),
            LookupError::OutOfRange(f) => bad_field(Code::OutOfRange, &f),
            LookupError::NotFound(f) => bad_field(Code::NotFound, &f),
            LookupError::Precondition(f) => bad_field(Code::FailedPrecondition, &f),
            LookupError::Store(e) => e.into(),
        }
    }
}

/// A rule refused a command: the code follows the rule's class, the field goes into a
/// `google.rpc.BadRequest` detail whatever the code, so clients can always point at it.
fn rejection(r: &Rejection) -> Status {
    let code = match r.code {
        RejectCode::InvalidArgument => Code::InvalidArgument,
        RejectCode::FailedPrecondition => Code::FailedPrecondition,
        RejectCode::PermissionDenied => Code::PermissionDenied,
        RejectCode::Unauthenticated => Code::Unauthenticated,
        RejectCode::AlreadyExists => Code::AlreadyExists,
    };
    bad_field(code, &r.error)
}

/// A refused command of a bulk call: the status it would have got alone, flattened.
pub(crate) fn refusal(e: CommandError) -> pb::Refusal {
    let field = match &e {
        CommandError::Rejected(r) => r.error.field().map(str::to_string),
        _ => None,
    };
    refusal_of(&e.into(), field)
}

/// A refusal from the status a command got (or would have got).
pub(crate) fn refusal_of(s: &Status, field: Option<String>) -> pb::Refusal {
    pb::Refusal {
        code: s.code() as i32,
        message: s.message().to_string(),
        field: field.unwrap_or_default(),
    }
}

//! Every conversion between the rules' types and the protobuf messages, in one place.
//!
//! Going out is `From` (`pb::Event::from(&event)`): it cannot fail. Coming in is `TryFrom`
//! (`Event::try_from(&message)`): it checks every field and names the one that is wrong in a
//! [`FieldError`](crate::error::FieldError), with its protobuf path. Enum values arrive as the
//! `i32` prost stores and convert with `TryFrom<i32>` ([`UnknownValue`] for unspecified or
//! unknown numbers). A conversion that needs more than the value (a validity answer cut to a
//! view, a meter value with its label and basis) is a named function here too.

mod answers;
mod command;
mod enums;
mod log;

/// An enum number the rules do not know (or the unspecified zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown or unspecified value {0}")]
pub struct UnknownValue(pub i32);

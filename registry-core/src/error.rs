//! The one shape in which the rules report bad input: the field to blame and the rule it broke.
//!
//! Commands, stored events, lookups, OCPI input and the lifecycle's refusals all report a
//! [`FieldError`], so the gRPC edge turns every one of them into the same `google.rpc.BadRequest`
//! violation, and a client can point at the field whatever refused it.

/// A value broke a rule: the field (a protobuf path such as `register_key.evse_ids[2]`) and the
/// rule, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{rule}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct FieldError {
    /// Dotted path of the bad field; empty when the request as a whole is to blame.
    pub field: String,
    /// The rule it breaks.
    pub rule: String,
}

impl FieldError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self { field: field.into(), rule: rule.into() }
    }

    /// An error about the request as a whole, naming no field.
    pub fn whole(rule: impl Into<String>) -> Self {
        Self { field: String::new(), rule: rule.into() }
    }

    /// The field, if one is to blame.
    pub fn field(&self) -> Option<&str> {
        (!self.field.is_empty()).then_some(self.field.as_str())
    }

    /// The same error with its field placed inside `parent` (`parent.field`), for rules that
    /// check a message nested in a request.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = match self.field.is_empty() {
            true => parent.to_string(),
            false => format!("{parent}.{}", self.field),
        };
        self
    }
}

/// An error with its causes, `a: b: c`, each said once (a cause whose text ends the message so
/// far is not repeated): a transport error alone says only "transport error", and the cause (a
/// refused certificate, a refused connection) is what a user needs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text = format!("{text}: {next}");
        }
        source = s.source();
    }
    text
}

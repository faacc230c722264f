//! What a subcommand hands back, and the one place that decides how it is printed and what the
//! exit status is.
//!
//! A handler builds a [`Report`]: the lines a person reads and the JSON document a program reads,
//! made together from the same values, and whether the answer is yes or no. `main` prints it
//! once, as text or (with `--json`) as one JSON document on one line. Streams (`audit follow`)
//! print each event through the same [`Printer`] as it happens.

use std::process::ExitCode;

use registry_client::ClientError;
use serde_json::{Value, json};

/// The exit statuses of `registry`, as `registry --help` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done, and the answer is yes (valid, verified, accepted).
    Yes = 0,
    /// The answer is no: a verdict other than VALID, a record that is not valid and billable, an
    /// archive or receipt that does not verify, a command the registry refused.
    No = 1,
    /// Bad usage: arguments or input the tool rejects before asking anyone.
    Usage = 2,
    /// No answer could be had: the server unreachable or failing, a file unreadable, a reply that
    /// does not decode.
    NoAnswer = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// The help text's account of the exit statuses and the JSON dialect.
pub const EXIT_HELP: &str = "\
Exit status: 0 the answer is yes (valid, verified, accepted); 1 the answer is no (not VALID, \
not billable, does not verify, refused by the registry); 2 bad usage; 3 no answer could be had \
(server unreachable or failing, unreadable file).

--json: every answer is one JSON object on one line (streams print one per event). The \
registry's messages in it (verdicts, key records, entries, validations, bases) are in the \
protobuf JSON mapping, exactly as the web face's JSON API sends them: lowerCamelCase names, enum \
value names, 64-bit integers as strings, bytes base64, times RFC 3339. The fields the tool adds \
around them (position, verified, all_valid_and_billable, ...) are snake_case, hashes and keys \
lowercase hex. A failure prints \
{\"error\", \"code\", \"violations\": [{\"field\", \"description\"}], \"primary\"} on stdout as well \
(primary: where to send a command a read replica refused).";

/// Whether the answer is yes; a no carries the reason, said on stderr.
#[derive(Debug)]
pub enum Answer {
    /// Yes.
    Yes,
    /// No, because.
    No(String),
}

/// A subcommand's result, for people and for programs.
#[derive(Debug)]
pub struct Report {
    text: String,
    json: Value,
    answer: Answer,
}

impl Report {
    /// A yes, said as `text` and as `json`.
    pub fn new(text: impl Into<String>, json: Value) -> Self {
        Self { text: text.into(), json, answer: Answer::Yes }
    }

    /// A no: `reason` is said as the text, and on stderr.
    pub fn no(reason: String, json: Value) -> Self {
        Self { text: reason.clone(), json, answer: Answer::No(reason) }
    }

    /// The same report, answering no for `reason` when `no` holds.
    pub fn no_if(mut self, no: bool, reason: impl FnOnce() -> String) -> Self {
        if no {
            self.answer = Answer::No(reason());
        }
        self
    }
}

/// Prints reports and stream events as text or JSON, the choice made once from `--json`.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// JSON documents instead of text.
    pub json: bool,
}

impl Printer {
    /// One event of a stream.
    pub fn event(&self, text: &str, json: &Value) {
        if self.json {
            println!("{json}");
        } else if !text.is_empty() {
            println!("{text}");
        }
    }

    /// A finished report; returns the exit status it implies.
    pub fn report(&self, report: Report) -> Exit {
        self.event(&report.text, &report.json);
        match report.answer {
            Answer::Yes => Exit::Yes,
            Answer::No(reason) => {
                eprintln!("registry: {reason}");
                Exit::No
            }
        }
    }

    /// A failure: said on stderr, and as a JSON object on stdout with `--json`; returns its
    /// exit status.
    pub fn failure(&self, e: &anyhow::Error) -> Exit {
        let client = e.downcast_ref::<ClientError>();
        if self.json {
            let out = json!({
                "error": format!("{e:#}"),
                "code": client.and_then(ClientError::code).map(registry_client::code_name),
                "violations": client.map(|c| c.violations().iter().map(|v| json!({"field": v.field, "description": v.description})).collect::<Vec<_>>()),
                "primary": client.and_then(ClientError::primary),
            });
            println!("{out}");
        }
        eprintln!("registry: {e:#}");
        if let Some(c) = client {
            for v in c.violations() {
                eprintln!("  field {}: {}", v.field, v.description);
            }
            if let Some(primary) = c.primary() {
                eprintln!(
                    "  this is a read replica: run the command again with --server {primary}"
                );
            }
        }
        exit_of(e)
    }
}

/// Input the tool refuses before asking anyone (a bad time, an unknown curve, an empty file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The registry's answer to a command or question is a refusal when its code says the request
/// was understood and turned down; anything else means no answer was had.
fn exit_of(e: &anyhow::Error) -> Exit {
    use tonic::Code;
    if e.downcast_ref::<Usage>().is_some() {
        return Exit::Usage;
    }
    match e.downcast_ref::<ClientError>().and_then(ClientError::code) {
        Some(
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::AlreadyExists
            | Code::NotFound
            | Code::OutOfRange,
        ) => Exit::No,
        _ => Exit::NoAnswer,
    }
}

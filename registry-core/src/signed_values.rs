//! Checking a signed meter value against the registry: is this record, signed by this meter,
//! something an MSP may bill?
//!
//! [`validate`] finds the signing unit the way OCMF names it — gateway + meter serial, meter
//! serial, gateway serial, then the charge point (`CI`) when `CT` says it is an EVSE ID — takes
//! every key the registry has for the first of those that it knows, verifies the signature with
//! them (over the payload exactly as written, on the record's curve, never normalising a high-s
//! signature), and then asks whether the key that signed was valid at each reading's time and
//! bound to the record's EVSE. It reports every check with its outcome and reason rather than a
//! bare yes or no. It reads the registry through [`State`] at a log size, so the server runs it on
//! its projections and a client runs it on the state re-derived from a proven answer.

use std::fmt;

use crate::event::{Identifier, IdentifierKind};
use crate::ids::EvseId;
use crate::lifecycle::{KeyRecord, State};
use crate::meter_key::MeterKey;
use crate::ocmf::{self, ClockStatus, Reading, Record};
use crate::validity::{self, Verdict};

/// What was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// The record could be read.
    Parse,
    /// The registry knows a key for the signing unit the record names.
    KeyFound,
    /// The signature verifies with a registered key of the unit.
    Signature,
    /// That key was valid at a reading's time.
    KeyValid,
    /// That key was bound to the record's EVSE ID at a reading's time.
    EvseMatch,
    /// The meter reported good status.
    MeterStatus,
    /// The meter reported no error.
    ErrorFlags,
    /// The reading's clock was synchronised.
    ClockStatus,
    /// The key a CDR carries is the registry's.
    CdrKey,
}

impl CheckKind {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Parse => "parse",
            CheckKind::KeyFound => "key_found",
            CheckKind::Signature => "signature",
            CheckKind::KeyValid => "key_valid",
            CheckKind::EvseMatch => "evse_match",
            CheckKind::MeterStatus => "meter_status",
            CheckKind::ErrorFlags => "error_flags",
            CheckKind::ClockStatus => "clock_status",
            CheckKind::CdrKey => "cdr_key",
        }
    }
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Passed.
    Pass,
    /// Failed.
    Fail,
    /// Passed with a remark worth a person's attention (e.g. an unsynchronised clock).
    Warn,
    /// Not applicable, or not possible after an earlier failure.
    Skip,
}

impl Outcome {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Warn => "warn",
            Outcome::Skip => "skip",
        }
    }
}

/// One check with its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub kind: CheckKind,
    /// How it came out.
    pub outcome: Outcome,
    /// What it was about, e.g. `reading 2 (E, 2019-08-13T10:03:36Z)`; empty for the record.
    pub subject: String,
    /// Why, in words.
    pub reason: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.outcome.name(), self.kind.name())?;
        if !self.subject.is_empty() {
            write!(f, " [{}]", self.subject)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The whole answer for one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    /// The record, when it could be read.
    pub record: Option<Record>,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// The registered key that verifies the record (or, when none does, the one the unit had at
    /// the first reading).
    pub key: Option<std::sync::Arc<KeyRecord>>,
    /// How the signing unit was found, e.g. `meter serial 1234567`.
    pub found_by: Option<String>,
    /// Log positions of the entries the answer depends on.
    pub deciding_positions: Vec<u64>,
}

/// Checks that decide whether the record is authentic and from a key valid for it.
const VALIDITY_CHECKS: &[CheckKind] = &[
    CheckKind::Parse,
    CheckKind::KeyFound,
    CheckKind::Signature,
    CheckKind::KeyValid,
    CheckKind::EvseMatch,
];

impl Validation {
    /// The signature verifies with a registered key of the unit that was valid (and bound to
    /// the record's EVSE) at every reading.
    pub fn valid(&self) -> bool {
        !self.checks.iter().any(|c| c.outcome == Outcome::Fail && VALIDITY_CHECKS.contains(&c.kind))
    }

    /// Valid, and nothing else failed either: good meter status, no error flags, and a CDR key
    /// (if any) that is the registry's.
    pub fn billable(&self) -> bool {
        !self.checks.iter().any(|c| c.outcome == Outcome::Fail)
    }

    fn push(&mut self, kind: CheckKind, outcome: Outcome, subject: String, reason: String) {
        self.checks.push(Check { kind, outcome, subject, reason });
    }

    fn skip_rest(&mut self, after: CheckKind, why: &str) {
        let order = [
            CheckKind::KeyFound,
            CheckKind::Signature,
            CheckKind::KeyValid,
            CheckKind::EvseMatch,
            CheckKind::MeterStatus,
            CheckKind::ErrorFlags,
            CheckKind::ClockStatus,
        ];
        let from = order.iter().position(|k| *k == after).map_or(0, |i| i + 1);
        for kind in &order[from..] {
            self.push(*kind, Outcome::Skip, String::new(), why.to_string());
        }
    }
}

/// A way a record names its signing unit, in the order OCMF prescribes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitPath {
    /// Keys with this meter serial *and* this gateway serial.
    GatewayAndMeter {
        /// `GS`.
        gateway: String,
        /// `MS`.
        meter: String,
    },
    /// Keys with this meter serial.
    Meter(String),
    /// Keys with this gateway serial.
    Gateway(String),
    /// Keys bound (ever) to this EVSE ID.
    Evse(EvseId),
}

impl UnitPath {
    /// The identifier whose index lists the candidates.
    pub fn identifier(&self) -> Identifier {
        match self {
            UnitPath::GatewayAndMeter { meter, .. } | UnitPath::Meter(meter) => {
                Identifier { kind: IdentifierKind::MeterSerial, value: meter.clone() }
            }
            UnitPath::Gateway(g) => {
                Identifier { kind: IdentifierKind::GatewaySerial, value: g.clone() }
            }
            UnitPath::Evse(e) => Identifier::evse(e),
        }
    }

    /// In words, for reports.
    pub fn describe(&self) -> String {
        match self {
            UnitPath::GatewayAndMeter { gateway, meter } => {
                format!("gateway serial {gateway} with meter serial {meter}")
            }
            UnitPath::Meter(m) => format!("meter serial {m}"),
            UnitPath::Gateway(g) => format!("gateway serial {g}"),
            UnitPath::Evse(e) => format!("EVSE ID {e}"),
        }
    }

    /// The keys registered for this path and known at `as_of`.
    pub fn candidates<S: State>(
        &self,
        state: &S,
        as_of: u64,
    ) -> Result<Vec<std::sync::Arc<KeyRecord>>, S::Error> {
        let id = self.identifier();
        let mut keys = validity::candidates(state, id.kind, &id.value, as_of)?;
        if let UnitPath::GatewayAndMeter { gateway, .. } = self {
            keys.retain(|k| k.registration.gateway_serial.as_deref() == Some(gateway.as_str()));
        }
        Ok(keys)
    }
}

/// The ways a record names its signing unit, in lookup order.
pub fn unit_paths(record: &Record) -> Vec<UnitPath> {
    let p = &record.payload;
    let nonempty = |s: &Option<String>| {
        s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
    };
    let (gs, ms) = (nonempty(&p.gateway_serial), nonempty(&p.meter_serial));
    let mut paths = Vec::new();
    if let (Some(g), Some(m)) = (&gs, &ms) {
        paths.push(UnitPath::GatewayAndMeter { gateway: g.clone(), meter: m.clone() });
    }
    if let Some(m) = ms {
        paths.push(UnitPath::Meter(m));
    }
    if let Some(g) = gs {
        paths.push(UnitPath::Gateway(g));
    }
    if let Some(evse) = record.evse().and_then(Result::ok) {
        paths.push(UnitPath::Evse(evse));
    }
    paths
}

fn reading_subject(i: usize, r: &Reading) -> String {
    let tx = r.transaction.as_deref().unwrap_or("?");
    match &r.time {
        Some(t) => format!("reading {} ({tx}, {})", i + 1, crate::time::format(&t.instant)),
        None => format!("reading {} ({tx})", i + 1),
    }
}

/// Validates one record (`text`), optionally with the key a CDR carries for it, against the
/// registry as known at log size `as_of`.
pub fn validate<S: State>(
    text: &str,
    cdr_key: Option<&str>,
    state: &S,
    as_of: u64,
) -> Result<Validation, S::Error> {
    let mut v = Validation {
        record: None,
        checks: Vec::new(),
        key: None,
        found_by: None,
        deciding_positions: Vec::new(),
    };
    let record = match Record::parse(text) {
        Ok(r) => r,
        Err(e) => {
            v.push(
                CheckKind::Parse,
                Outcome::Fail,
                String::new(),
                format!("cannot read the record: {e}"),
            );
            v.skip_rest(CheckKind::Parse, "the record could not be read");
            return Ok(v);
        }
    };
    let parse_reason = match record.deviations.len() {
        0 => "an OCMF record as specified".to_string(),
        n => format!(
            "read, with {n} deviation{} from the specification: {}",
            if n == 1 { "" } else { "s" },
            record.deviations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        ),
    };
    v.push(
        CheckKind::Parse,
        if record.deviations.is_empty() { Outcome::Pass } else { Outcome::Warn },
        String::new(),
        parse_reason,
    );

    // The signing unit and its keys.
    let paths = unit_paths(&record);
    let mut found = None;
    for path in &paths {
        let keys = path.candidates(state, as_of)?;
        if !keys.is_empty() {
            found = Some((path.clone(), keys));
            break;
        }
    }
    let Some((path, keys)) = found else {
        let reason = if paths.is_empty() {
            "the record names no meter serial, gateway serial or EVSE ID to look the key up by"
                .to_string()
        } else {
            format!(
                "no key is registered for {} (as known at log size {as_of})",
                paths.iter().map(UnitPath::describe).collect::<Vec<_>>().join(", nor for ")
            )
        };
        v.push(CheckKind::KeyFound, Outcome::Fail, String::new(), reason);
        v.record = Some(record);
        v.skip_rest(CheckKind::KeyFound, "no registered key to check against");
        return Ok(v);
    };
    let described = path.describe();
    v.found_by = Some(described.clone());
    v.push(
        CheckKind::KeyFound,
        Outcome::Pass,
        String::new(),
        format!(
            "{} key{} registered for {described}: {}",
            keys.len(),
            if keys.len() == 1 { "" } else { "s" },
            keys.iter().map(|k| short(k.fingerprint())).collect::<Vec<_>>().join(", ")
        ),
    );

    // The signature, with each key of the unit on the record's curve.
    let curve = record.signature.curve;
    let algorithm = ocmf::algorithm_of_curve(curve);
    let same_curve: Vec<&std::sync::Arc<KeyRecord>> =
        keys.iter().filter(|k| k.registration.curve == curve).collect();
    let signer = same_curve
        .iter()
        .find(|k| record.verify(&k.registration.public_key).unwrap_or(false))
        .map(|k| (*k).clone());
    match &signer {
        Some(k) => v.push(
            CheckKind::Signature,
            Outcome::Pass,
            String::new(),
            format!("verifies with key {} ({algorithm}) over the payload as written", short(k.fingerprint())),
        ),
        None if same_curve.is_empty() => {
            let curves: Vec<String> =
                keys.iter().map(|k| k.registration.curve.to_string()).collect();
            v.push(
                CheckKind::Signature,
                Outcome::Fail,
                String::new(),
                format!(
                    "curve mismatch: the record is signed with {algorithm} but the key registered for {described} is on {}",
                    curves.join(", ")
                ),
            );
        }
        None => v.push(
            CheckKind::Signature,
            Outcome::Fail,
            String::new(),
            format!(
                "does not verify with the key{} registered for {described} ({}): the payload was changed or another key signed it",
                if same_curve.len() == 1 { "" } else { "s" },
                same_curve.iter().map(|k| short(k.fingerprint())).collect::<Vec<_>>().join(", ")
            ),
        ),
    }

    // Validity and binding of the signing key at each reading.
    let first_time = record.payload.readings.iter().find_map(|r| r.time.map(|t| t.instant));
    let key = signer.clone().or_else(|| {
        first_time.and_then(|t| {
            keys.iter()
                .find(|k| {
                    k.as_of(as_of)
                        .is_some_and(|k| validity::verdict_at(&k, t).verdict == Verdict::Valid)
                })
                .cloned()
        })
    });
    if let Some(k) = &key {
        v.deciding_positions = k.as_of(as_of).map(|k| k.positions()).unwrap_or_default();
    }
    let evse = record.evse();
    match (&signer, &key) {
        (Some(k), _) => {
            let known = k.as_of(as_of).expect("candidates are known at as_of");
            let bindings = known.bindings();
            for (i, r) in record.payload.readings.iter().enumerate() {
                let subject = reading_subject(i, r);
                let Some(t) = r.time.map(|t| t.instant) else { continue };
                let answer = validity::verdict_at(&known, t);
                let (outcome, reason) = match answer.verdict {
                    Verdict::Valid => {
                        (Outcome::Pass, format!("key {} was valid", short(k.fingerprint())))
                    }
                    Verdict::NotYet => (
                        Outcome::Fail,
                        format!(
                            "key {} was not yet in force: registered effective {}",
                            short(k.fingerprint()),
                            crate::time::format(&known.registration().effective_at)
                        ),
                    ),
                    Verdict::Ended => {
                        let (at, why) =
                            answer.ended.map_or((String::new(), String::new()), |(at, why)| {
                                (crate::time::format(&at), format!(" ({})", why.name()))
                            });
                        (
                            Outcome::Fail,
                            format!("key {} had ended at {at}{why}", short(k.fingerprint())),
                        )
                    }
                    Verdict::Pending => (
                        Outcome::Fail,
                        format!(
                            "key {} was not confirmed (as known at log size {as_of})",
                            short(k.fingerprint())
                        ),
                    ),
                    Verdict::Rejected => (
                        Outcome::Fail,
                        format!("key {}'s registration was rejected", short(k.fingerprint())),
                    ),
                    Verdict::Unknown | Verdict::Ambiguous => {
                        (Outcome::Fail, format!("key {} is not known", short(k.fingerprint())))
                    }
                };
                v.push(CheckKind::KeyValid, outcome, subject.clone(), reason);
                match &evse {
                    None => {}
                    Some(Err(why)) => {
                        v.push(CheckKind::EvseMatch, Outcome::Fail, subject, why.clone())
                    }
                    Some(Ok(e)) => {
                        let binding = bindings.iter().find(|b| b.contains(t));
                        match binding {
                            Some(b) if b.evse_ids.contains(e) => v.push(
                                CheckKind::EvseMatch,
                                Outcome::Pass,
                                subject,
                                format!("the key was bound to {e} (operator {})", b.operator_id),
                            ),
                            Some(b) => v.push(
                                CheckKind::EvseMatch,
                                Outcome::Fail,
                                subject,
                                format!(
                                    "the record names {e} but the key was bound to {}",
                                    b.evse_ids
                                        .iter()
                                        .map(ToString::to_string)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            ),
                            None => v.push(
                                CheckKind::EvseMatch,
                                Outcome::Fail,
                                subject,
                                format!(
                                    "the record names {e} but the key was bound to no EVSE then"
                                ),
                            ),
                        }
                    }
                }
            }
            if evse.is_none() {
                v.push(
                    CheckKind::EvseMatch,
                    Outcome::Skip,
                    String::new(),
                    "the record names no EVSE ID (CT is not EVSEID)".into(),
                );
            }
        }
        (None, _) => {
            v.push(
                CheckKind::KeyValid,
                Outcome::Skip,
                String::new(),
                "no registered key verifies the record".into(),
            );
            v.push(
                CheckKind::EvseMatch,
                Outcome::Skip,
                String::new(),
                "no registered key verifies the record".into(),
            );
        }
    }
    v.key = key;

    // What the meter says about itself.
    for (i, r) in record.payload.readings.iter().enumerate() {
        let subject = reading_subject(i, r);
        let (outcome, reason) = match r.status.as_deref() {
            Some("G") => (Outcome::Pass, "G (good)".to_string()),
            Some(s) => (Outcome::Fail, format!("{s} ({}): not billable", ocmf::status_name(s))),
            None => (Outcome::Warn, "no meter status given".to_string()),
        };
        v.push(CheckKind::MeterStatus, outcome, subject.clone(), reason);
        if r.error_flags.is_empty() {
            v.push(CheckKind::ErrorFlags, Outcome::Pass, subject.clone(), "none".into());
        } else {
            let flags: Vec<String> = r
                .error_flags
                .chars()
                .map(|c| match c {
                    'E' => "E (energy)".to_string(),
                    't' => "t (time)".to_string(),
                    other => format!("{other} (unknown)"),
                })
                .collect();
            v.push(
                CheckKind::ErrorFlags,
                Outcome::Fail,
                subject.clone(),
                format!("{}: not billable", flags.join(", ")),
            );
        }
        let (outcome, reason) = match r.time.and_then(|t| t.clock) {
            Some(c) if c.trustworthy() => {
                (Outcome::Pass, format!("{} ({})", c.flag(), clock_name(c)))
            }
            Some(c) => (
                Outcome::Warn,
                format!("{} ({}): the time is not reliable", c.flag(), clock_name(c)),
            ),
            None => (Outcome::Warn, "no clock status given".to_string()),
        };
        v.push(CheckKind::ClockStatus, outcome, subject, reason);
    }

    // The key a CDR carries.
    if let Some(text) = cdr_key.map(str::trim).filter(|t| !t.is_empty()) {
        let (outcome, reason) = match MeterKey::parse(text, Some(curve)) {
            Err(e) => (Outcome::Fail, format!("the CDR's public key cannot be read: {e}")),
            Ok(cdr) => match &v.key {
                Some(k) if k.fingerprint() == cdr.fingerprint => {
                    (Outcome::Pass, "the CDR carries the registry's key".to_string())
                }
                Some(k) => (
                    Outcome::Fail,
                    format!(
                        "the CDR carries key {} but the registry's key for {described} is {}{}",
                        short(&cdr.fingerprint),
                        short(k.fingerprint()),
                        if record.verify(&cdr.spki_der).unwrap_or(false) {
                            "; the CDR's key does verify the record, so the meter's key was not registered"
                        } else {
                            ""
                        }
                    ),
                ),
                None => (
                    Outcome::Fail,
                    format!(
                        "the CDR carries key {}, which the registry does not have for {described}",
                        short(&cdr.fingerprint)
                    ),
                ),
            },
        };
        v.push(CheckKind::CdrKey, outcome, String::new(), reason);
    }
    v.record = Some(record);
    Ok(v)
}

/// A fingerprint shortened for messages (the full one is in the structured answer).
fn short(fp: &str) -> &str {
    &fp[..fp.len().min(16)]
}

fn clock_name(c: ClockStatus) -> &'static str {
    match c {
        ClockStatus::Unknown => "unknown, never set",
        ClockStatus::Informative => "informative, not synchronised",
        ClockStatus::Synchronised => "synchronised",
        ClockStatus::Relative => "relatively exact",
    }
}

impl Validation {
    /// The identifiers whose entries decide this answer (for evidence).
    pub fn identifiers(&self) -> Vec<Identifier> {
        let mut ids: Vec<Identifier> = self
            .record
            .as_ref()
            .map(|r| unit_paths(r).iter().map(UnitPath::identifier).collect())
            .unwrap_or_default();
        ids.sort();
        ids.dedup();
        ids
    }
}

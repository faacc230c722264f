//! Signed meter values in the Open Charge Metering Format (OCMF, up to version 1.4).
//!
//! A record is `OCMF|{payload}|{signature}`. The signature covers the payload section *exactly as
//! written* — everything between `OCMF|` and the last `|` — so [`Record::parse`] keeps those bytes
//! and never re-serialises them; the parsed fields are only for reading. Real meters bend the
//! specification (numbers where strings are specified, vendor fields, raw `r‖s` signatures, a
//! missing clock flag): the parser accepts what it can interpret without guessing and lists every
//! such bend as a [`Deviation`], so a report can show it rather than hide it. What it cannot
//! interpret (a duplicated field, a time it cannot read, an unknown algorithm) is an error.

use std::fmt;

use crate::error::FieldError;

use chrono::{DateTime, FixedOffset};

mod fields;
mod parse;

pub(crate) use parse::decode_base64;
pub use parse::status_name;

use crate::ids::EvseId;
use crate::meter_key::{Curve, SignatureFormat};
use crate::time::Time;

/// Most bytes a record may have: real records are a few hundred bytes to a few kilobytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// A parsed record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The signed bytes: the payload section exactly as written.
    pub payload_text: String,
    /// The payload's fields.
    pub payload: Payload,
    /// The signature section.
    pub signature: Signature,
    /// A public key appended as a fourth section (not OCMF; some tools do it). Never trusted:
    /// the registry's key decides.
    pub attached_key: Option<String>,
    /// Where the record departs from the specification without being unreadable.
    pub deviations: Vec<Deviation>,
}

/// A departure from the specification that the parser could still interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deviation {
    /// The field, e.g. `RD[1].TM` or `GS`.
    pub field: String,
    /// What is unusual about it.
    pub message: String,
}

impl fmt::Display for Deviation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a record cannot be read: the part at fault (`record`, `payload`, `RD[0].TM`, `SA`, ...)
/// and what is wrong, in the rules' one error shape.
pub(super) fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}

/// The payload's fields. Text fields hold the value as written; a number given where the
/// specification wants a string is kept as its JSON text (and noted as a deviation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// `FV` format version.
    pub format_version: Option<String>,
    /// `GI` gateway identification (vendor, model).
    pub gateway_id: Option<String>,
    /// `GS` gateway serial.
    pub gateway_serial: Option<String>,
    /// `GV` gateway firmware version.
    pub gateway_version: Option<String>,
    /// `PG` pagination: `T<n>` (transaction) or `F<n>` (fiscal).
    pub pagination: Option<String>,
    /// `MV` meter vendor.
    pub meter_vendor: Option<String>,
    /// `MM` meter model.
    pub meter_model: Option<String>,
    /// `MS` meter serial.
    pub meter_serial: Option<String>,
    /// `MF` meter firmware.
    pub meter_firmware: Option<String>,
    /// `IS` identification status: whether the user was identified.
    pub identification_status: Option<bool>,
    /// `IL` identification level.
    pub identification_level: Option<String>,
    /// `IF` identification flags.
    pub identification_flags: Vec<String>,
    /// `IT` identification type.
    pub identification_type: Option<String>,
    /// `ID` identification data.
    pub identification_data: Option<String>,
    /// `TT` tariff text.
    pub tariff_text: Option<String>,
    /// `CF` charge controller firmware version.
    pub charge_controller_firmware: Option<String>,
    /// `LC` loss compensation.
    pub loss_compensation: Option<LossCompensation>,
    /// `CT` charge point identification type (`EVSEID`, `CBIDC`).
    pub charge_point_type: Option<String>,
    /// `CI` charge point identification.
    pub charge_point_id: Option<String>,
    /// `RD` readings.
    pub readings: Vec<Reading>,
    /// Fields the specification does not define, as written (name, JSON).
    pub extra: Vec<(String, String)>,
}

/// `LC`: the cable loss compensation the meter applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossCompensation {
    /// `LN` naming.
    pub naming: Option<String>,
    /// `LI` identification.
    pub identification: Option<String>,
    /// `LR` cable resistance, as written.
    pub resistance: Option<String>,
    /// `LU` unit of the resistance (`mOhm`, `uOhm`).
    pub unit: Option<String>,
}

/// One reading of `RD`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// `TM` time with its clock status.
    pub time: Option<ReadingTime>,
    /// `TM` as written.
    pub time_text: Option<String>,
    /// `TX` transaction type (`B` begin, `E` end, ...).
    pub transaction: Option<String>,
    /// `RV` reading value, as written.
    pub value: Option<String>,
    /// `RI` reading identification (OBIS code).
    pub identification: Option<String>,
    /// `RU` unit.
    pub unit: Option<String>,
    /// `RT` current type (`AC`, `DC`).
    pub current_type: Option<String>,
    /// `CL` cumulated loss, as written.
    pub cumulated_loss: Option<String>,
    /// `EF` error flags (`E` energy, `t` time); empty when none.
    pub error_flags: String,
    /// `ST` meter status (`G` good, ...).
    pub status: Option<String>,
    /// Fields the specification does not define (name, JSON).
    pub extra: Vec<(String, String)>,
}

/// How far a reading's time can be trusted, from `TM`'s last character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockStatus {
    /// `U`: unknown, the clock was never set.
    Unknown,
    /// `I`: informative only, the clock is not synchronised.
    Informative,
    /// `S`: synchronised.
    Synchronised,
    /// `R`: relatively exact (measured against a synchronised start).
    Relative,
}

impl ClockStatus {
    /// The flag as written.
    pub fn flag(self) -> char {
        match self {
            ClockStatus::Unknown => 'U',
            ClockStatus::Informative => 'I',
            ClockStatus::Synchronised => 'S',
            ClockStatus::Relative => 'R',
        }
    }

    /// Whether the time may be relied on (synchronised or relatively exact).
    pub fn trustworthy(self) -> bool {
        matches!(self, ClockStatus::Synchronised | ClockStatus::Relative)
    }
}

/// A reading time: the instant, the meter's local offset, and the clock status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadingTime {
    /// The instant.
    pub instant: Time,
    /// As the meter wrote it (with its offset).
    pub local: DateTime<FixedOffset>,
    /// The clock status; `None` when the flag is missing.
    pub clock: Option<ClockStatus>,
}

/// The signature section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `SA`: the curve (the hash is always SHA-256).
    pub curve: Curve,
    /// `SA` as written (`None`: absent, the default `ECDSA-secp256r1-SHA256`).
    pub algorithm_text: Option<String>,
    /// The signature bytes decoded from `SD` per `SE`.
    pub bytes: Vec<u8>,
    /// Whether `bytes` is a DER `ECDSA-Sig-Value` or raw `r‖s`.
    pub format: SignatureFormat,
}

/// The default algorithm when `SA` is absent.
pub const DEFAULT_ALGORITHM: &str = "ECDSA-secp256r1-SHA256";

/// The curve an `SA` value names. OCMF spells the brainpool curves `brainpool256r1` /
/// `brainpool384r1`; the `P` spelling is accepted too.
pub fn curve_of_algorithm(sa: &str) -> Result<Curve, String> {
    let parts: Vec<&str> = sa.split('-').collect();
    let [kind, curve, hash] = parts.as_slice() else {
        return Err(format!("{sa:?} is not of the form ECDSA-<curve>-SHA256"));
    };
    if !kind.eq_ignore_ascii_case("ECDSA") {
        return Err(format!("{sa:?}: only ECDSA is defined"));
    }
    if !hash.eq_ignore_ascii_case("SHA256") {
        return Err(format!("{sa:?}: OCMF signs with SHA-256"));
    }
    match curve.to_ascii_lowercase().as_str() {
        "secp192r1" => Ok(Curve::Secp192r1),
        "secp256r1" => Ok(Curve::Secp256r1),
        "secp384r1" => Ok(Curve::Secp384r1),
        "secp256k1" => Ok(Curve::Secp256k1),
        "brainpool256r1" | "brainpoolp256r1" => Ok(Curve::BrainpoolP256r1),
        "brainpool384r1" | "brainpoolp384r1" => Ok(Curve::BrainpoolP384r1),
        "secp192k1" => Err(format!("{sa:?} is defined by OCMF but not supported by the registry")),
        other => Err(format!("{sa:?}: unknown curve {other}")),
    }
}

/// The `SA` value for a curve.
pub fn algorithm_of_curve(curve: Curve) -> &'static str {
    match curve {
        Curve::Secp192r1 => "ECDSA-secp192r1-SHA256",
        Curve::Secp256r1 => "ECDSA-secp256r1-SHA256",
        Curve::Secp384r1 => "ECDSA-secp384r1-SHA256",
        Curve::Secp256k1 => "ECDSA-secp256k1-SHA256",
        Curve::BrainpoolP256r1 => "ECDSA-brainpool256r1-SHA256",
        Curve::BrainpoolP384r1 => "ECDSA-brainpool384r1-SHA256",
    }
}

impl Record {
    /// The EVSE ID the record names (`CT` = `EVSEID`), parsed; `None` when it names none.
    pub fn evse(&self) -> Option<Result<EvseId, String>> {
        let p = &self.payload;
        let is_evse =
            p.charge_point_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("EVSEID"));
        let ci = p.charge_point_id.as_deref().filter(|c| !c.trim().is_empty())?;
        is_evse.then(|| EvseId::parse(ci).map_err(|e| format!("CI {ci:?} is not an EVSE ID: {e}")))
    }
}

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

use base64::Engine as _;
use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde_json::Value;
use serde_json::value::RawValue;

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

/// Why a record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParseError {
    /// The part of the record at fault (`record`, `payload`, `RD[0].TM`, `SA`, ...).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ParseError {
    ParseError { field: field.into(), message: message.into() }
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

/// A JSON object with its members in order, each as written, and duplicates kept: a field given
/// twice (which parsers resolve differently) is caught instead of silently resolved, and numbers
/// keep their exact text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::with_capacity(24);
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Members<'a> {
    fn parse(text: &'a str, what: &str) -> Result<Self, ParseError> {
        serde_json::from_str(text).map_err(|e| err(what, format!("not a JSON object: {e}")))
    }

    /// Fails on a member given twice.
    fn unique(&self, prefix: &str) -> Result<(), ParseError> {
        // Objects have a few dozen members at most: sorting beats hashing them.
        let mut names: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        match names.windows(2).find(|w| w[0] == w[1]) {
            Some(w) => Err(err(
                format!("{prefix}{}", w[0]),
                "given twice: readers would disagree on which value counts",
            )),
            None => Ok(()),
        }
    }
}

/// A nested object's members.
fn object<'a>(raw: &'a RawValue, field: &str) -> Result<Members<'a>, ParseError> {
    match value(raw) {
        Value::Object(_) => Members::parse(raw.get(), field),
        other => Err(err(field, format!("must be an object, not {}", kind(&other)))),
    }
}

/// A member's value as JSON (for its type); its text stays in the `RawValue`. Containers come
/// back empty: callers read them again member by member, and parsing them whole here only to
/// learn their kind took half of a record's parse time.
fn value(raw: &RawValue) -> Value {
    let text = raw.get().trim_start();
    match text.as_bytes().first() {
        Some(b'{') => Value::Object(serde_json::Map::new()),
        Some(b'[') => Value::Array(Vec::new()),
        _ => serde_json::from_str(text).unwrap_or(Value::Null),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Collects fields and deviations for one JSON object.
struct Fields<'a> {
    prefix: String,
    deviations: &'a mut Vec<Deviation>,
}

impl Fields<'_> {
    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn note(&mut self, name: &str, message: impl Into<String>) {
        let field = self.path(name);
        self.deviations.push(Deviation { field, message: message.into() });
    }

    /// A field the specification makes a string. Numbers and booleans are read as their JSON
    /// text (a deviation); `null` counts as absent (a deviation).
    fn string(&mut self, name: &str, raw: &RawValue) -> Result<Option<String>, ParseError> {
        match value(raw) {
            Value::String(s) => Ok(Some(s)),
            Value::Null => {
                self.note(name, "null where a string is specified; read as absent");
                Ok(None)
            }
            Value::Number(_) => {
                self.note(name, "a number where a string is specified; read as its text");
                Ok(Some(raw.get().trim().to_string()))
            }
            Value::Bool(b) => {
                self.note(name, "a boolean where a string is specified; read as its text");
                Ok(Some(b.to_string()))
            }
            other => Err(err(self.path(name), format!("must be a string, not {}", kind(&other)))),
        }
    }

    /// A field the specification makes a number; kept as written.
    fn number(&mut self, name: &str, raw: &RawValue) -> Result<Option<String>, ParseError> {
        match value(raw) {
            Value::Number(_) => Ok(Some(raw.get().trim().to_string())),
            Value::String(s) if s.trim().parse::<f64>().is_ok() => {
                self.note(name, "a string where a number is specified; read as the number");
                Ok(Some(s.trim().to_string()))
            }
            Value::Null => {
                self.note(name, "null where a number is specified; read as absent");
                Ok(None)
            }
            other => Err(err(self.path(name), format!("must be a number, not {}", kind(&other)))),
        }
    }

    fn boolean(&mut self, name: &str, raw: &RawValue) -> Result<Option<bool>, ParseError> {
        match value(raw) {
            Value::Bool(b) => Ok(Some(b)),
            Value::String(s)
                if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") =>
            {
                self.note(name, "a string where a boolean is specified; read as the boolean");
                Ok(Some(s.eq_ignore_ascii_case("true")))
            }
            other => Err(err(self.path(name), format!("must be a boolean, not {}", kind(&other)))),
        }
    }

    fn strings(&mut self, name: &str, raw: &RawValue) -> Result<Vec<String>, ParseError> {
        match value(raw) {
            Value::Array(_) => {
                let items: Vec<&RawValue> = serde_json::from_str(raw.get())
                    .map_err(|e| err(self.path(name), e.to_string()))?;
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let field = format!("{name}[{i}]");
                        self.string(&field, item)?
                            .ok_or_else(|| err(self.path(&field), "must be a string"))
                    })
                    .collect()
            }
            Value::String(s) => {
                self.note(name, "a single string where an array is specified");
                Ok(vec![s])
            }
            other => Err(err(self.path(name), format!("must be an array, not {}", kind(&other)))),
        }
    }

    /// A field OCMF does not define where it stands: kept as written, and noted unless it is a
    /// vendor field.
    fn unknown(&mut self, name: &str, raw: &RawValue) -> (String, String) {
        if !is_vendor_field(name) {
            let what = if name == "EI" {
                "the event index of OCMF before 0.5 (replaced by EF); kept, not interpreted"
            } else {
                "not defined by OCMF; kept, not interpreted"
            };
            self.note(name, what);
        }
        (name.to_string(), raw.get().to_string())
    }

    /// A value that must be one of `allowed`; others are kept and noted.
    fn check_enum(&mut self, name: &str, value: &Option<String>, allowed: &[&str]) {
        if let Some(v) = value {
            if !allowed.contains(&v.as_str()) {
                self.note(name, format!("{v:?} is not one of {}", allowed.join(", ")));
            }
        }
    }
}

/// `IL` values.
const IDENTIFICATION_LEVELS: &[&str] = &[
    "NONE",
    "HEARSAY",
    "TRUSTED",
    "VERIFIED",
    "CERTIFIED",
    "SECURE",
    "MISMATCH",
    "INVALID",
    "OUTDATED",
    "UNKNOWN",
];
/// `IT` values.
const IDENTIFICATION_TYPES: &[&str] = &[
    "NONE",
    "DENIED",
    "UNDEFINED",
    "ISO14443",
    "ISO15693",
    "EMAID",
    "EVCCID",
    "EVCOID",
    "ISO7812",
    "CARD_TXN_NR",
    "CENTRAL",
    "CENTRAL_1",
    "CENTRAL_2",
    "LOCAL",
    "LOCAL_1",
    "LOCAL_2",
    "PHONE_NUMBER",
    "KEY_CODE",
];
/// `CT` values.
const CHARGE_POINT_TYPES: &[&str] = &["EVSEID", "CBIDC"];
/// `TX` values.
const TRANSACTION_TYPES: &[&str] = &["B", "C", "X", "E", "L", "R", "A", "P", "S", "T"];
/// `ST` values (Table 10): only `G` means the meter works correctly.
const METER_STATUSES: &[&str] = &["N", "G", "T", "D", "R", "M", "X", "I", "O", "S", "E", "F"];

/// What an `ST` value means.
pub fn status_name(status: &str) -> &'static str {
    match status {
        "N" => "not present",
        "G" => "good",
        "T" => "timeout",
        "D" => "disconnected",
        "R" => "not found",
        "M" => "manipulated",
        "X" => "exchanged",
        "I" => "incompatible",
        "O" => "out of range",
        "S" => "substitute value",
        "E" => "other error",
        "F" => "read error",
        _ => "not defined by OCMF",
    }
}

/// Top-level names starting with these are reserved for manufacturers (and signed); in the
/// signature section, `A`–`F` are for later processing steps.
fn is_vendor_field(name: &str) -> bool {
    name.starts_with(['U', 'V', 'W', 'X', 'Y', 'Z'])
}
/// `RU` values.
const UNITS: &[&str] = &["kWh", "Wh", "mOhm", "uOhm"];
/// `RT` values.
const CURRENT_TYPES: &[&str] = &["AC", "DC"];

impl Record {
    /// Parses a record. Leading and trailing whitespace (a line end) is ignored; a record
    /// hex-encoded as a whole (as OCPP `SignedData` sometimes carries it) is decoded first.
    pub fn parse(text: &str) -> Result<Record, ParseError> {
        let mut deviations = Vec::new();
        let text = text.trim();
        if text.len() > MAX_RECORD_BYTES {
            return Err(err("record", format!("longer than {MAX_RECORD_BYTES} bytes")));
        }
        let decoded;
        let text = if !text.starts_with("OCMF|") && text.len() % 2 == 0 {
            match hex::decode(text).ok().and_then(|b| String::from_utf8(b).ok()) {
                Some(t) if t.starts_with("OCMF|") => {
                    deviations.push(Deviation {
                        field: "record".into(),
                        message: "hex-encoded as a whole; decoded".into(),
                    });
                    decoded = t;
                    decoded.as_str()
                }
                _ => text,
            }
        } else {
            text
        };
        // The specification forbids '|' inside a section, so the sections are the pieces.
        let parts: Vec<&str> = text.split('|').collect();
        let (payload_text, signature_text, attached_key) = match parts.as_slice() {
            ["OCMF", payload, signature] => (*payload, *signature, None),
            ["OCMF", payload, signature, key] => {
                deviations.push(Deviation {
                    field: "record".into(),
                    message:
                        "a fourth section (a public key, as some tools append) is not part of OCMF"
                            .into(),
                });
                (*payload, *signature, Some(key.trim().to_string()))
            }
            [header, ..] if *header != "OCMF" => {
                return Err(err("record", "must start with \"OCMF|\""));
            }
            _ => {
                return Err(err(
                    "record",
                    format!(
                        "must be OCMF|{{payload}}|{{signature}}, found {} sections",
                        parts.len()
                    ),
                ));
            }
        };
        let payload = parse_payload(payload_text, &mut deviations)?;
        let signature = parse_signature(signature_text, &mut deviations)?;
        Ok(Record {
            payload_text: payload_text.to_string(),
            payload,
            signature,
            attached_key,
            deviations,
        })
    }

    /// The signed bytes.
    pub fn signed_bytes(&self) -> &[u8] {
        self.payload_text.as_bytes()
    }

    /// Whether the signature verifies over the payload with a key (DER SubjectPublicKeyInfo on
    /// the record's curve). Never normalises a high-s signature.
    pub fn verify(&self, spki_der: &[u8]) -> Result<bool, crate::meter_key::MeterKeyError> {
        crate::meter_key::verify_sha256(
            self.signature.curve,
            spki_der,
            self.signed_bytes(),
            &self.signature.bytes,
            self.signature.format,
        )
    }
}

fn parse_payload(text: &str, deviations: &mut Vec<Deviation>) -> Result<Payload, ParseError> {
    let members = Members::parse(text, "payload")?;
    members.unique("")?;
    let mut f = Fields { prefix: String::new(), deviations };
    let mut p = Payload::default();
    for (name, v) in members.0 {
        match name.as_str() {
            "FV" => p.format_version = f.string("FV", v)?,
            "GI" => p.gateway_id = f.string("GI", v)?,
            "GS" => p.gateway_serial = f.string("GS", v)?,
            "GV" => p.gateway_version = f.string("GV", v)?,
            "PG" => p.pagination = f.string("PG", v)?,
            "MV" => p.meter_vendor = f.string("MV", v)?,
            "MM" => p.meter_model = f.string("MM", v)?,
            "MS" => p.meter_serial = f.string("MS", v)?,
            "MF" => p.meter_firmware = f.string("MF", v)?,
            "IS" => match value(v) {
                Value::String(level) if IDENTIFICATION_LEVELS.contains(&level.as_str()) => {
                    f.note("IS", "a level string as before OCMF 0.4; read as IL");
                    p.identification_status = Some(level != "NONE");
                    p.identification_level.get_or_insert(level);
                }
                _ => p.identification_status = f.boolean("IS", v)?,
            },
            "IL" => p.identification_level = f.string("IL", v)?,
            "IF" => p.identification_flags = f.strings("IF", v)?,
            "IT" => p.identification_type = f.string("IT", v)?,
            "ID" => p.identification_data = f.string("ID", v)?,
            "TT" => p.tariff_text = f.string("TT", v)?,
            "CF" => p.charge_controller_firmware = f.string("CF", v)?,
            "LC" => p.loss_compensation = Some(parse_loss_compensation(v, &mut f)?),
            "CT" => p.charge_point_type = f.string("CT", v)?,
            "CI" => p.charge_point_id = f.string("CI", v)?,
            "RD" => {
                let items: Vec<&RawValue> = serde_json::from_str(v.get())
                    .map_err(|_| err("RD", format!("must be an array, not {}", kind(&value(v)))))?;
                for (i, item) in items.iter().enumerate() {
                    let reading =
                        parse_reading(item, &format!("RD[{i}]."), p.readings.last(), f.deviations)?;
                    p.readings.push(reading);
                }
            }
            "VI" if p.gateway_id.is_none() => {
                f.note("VI", "pre-0.4 name of GI (vendor identification); read as GI");
                p.gateway_id = f.string("VI", v)?;
            }
            "VV" if p.gateway_version.is_none() => {
                f.note("VV", "pre-0.4 name of GV (vendor version); read as GV");
                p.gateway_version = f.string("VV", v)?;
            }
            _ => p.extra.push(f.unknown(&name, v)),
        }
    }
    if p.readings.is_empty() {
        return Err(err("RD", "the record has no readings"));
    }
    if p.meter_serial.is_none() && p.gateway_serial.is_none() {
        f.note("MS", "neither a meter serial (MS) nor a gateway serial (GS) is given");
    }
    match p.pagination.as_deref() {
        Some(pg) if !valid_pagination(pg) => {
            f.note("PG", format!("{pg:?} is not T<number> or F<number>"));
        }
        _ => {}
    }
    f.check_enum("IL", &p.identification_level, IDENTIFICATION_LEVELS);
    f.check_enum("IT", &p.identification_type, IDENTIFICATION_TYPES);
    f.check_enum("CT", &p.charge_point_type, CHARGE_POINT_TYPES);
    Ok(p)
}

/// `T` or `F` and a decimal without leading zeros.
fn valid_pagination(pg: &str) -> bool {
    let (Some(context), digits) = (pg.chars().next(), pg.get(1..).unwrap_or("")) else {
        return false;
    };
    matches!(context, 'T' | 'F')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}

fn parse_loss_compensation(
    raw: &RawValue,
    f: &mut Fields<'_>,
) -> Result<LossCompensation, ParseError> {
    let members = object(raw, "LC")?;
    members.unique("LC.")?;
    let mut lc = LossCompensation::default();
    for (name, v) in members.0 {
        match name.as_str() {
            "LN" => lc.naming = f.string("LC.LN", v)?,
            "LI" => lc.identification = f.number("LC.LI", v)?,
            "LR" => lc.resistance = f.number("LC.LR", v)?,
            "LU" => lc.unit = f.string("LC.LU", v)?,
            _ => f.note(&format!("LC.{name}"), "not defined by OCMF; ignored"),
        }
    }
    f.check_enum("LC.LU", &lc.unit, &["mOhm", "uOhm"]);
    Ok(lc)
}

/// One reading. Fields equal to the previous reading's may be omitted (OCMF's value
/// inheritance within a record): TM, TX, RI, RU, RT, EF and ST carry over.
fn parse_reading(
    raw: &RawValue,
    prefix: &str,
    previous: Option<&Reading>,
    deviations: &mut Vec<Deviation>,
) -> Result<Reading, ParseError> {
    let members = object(raw, prefix.trim_end_matches('.'))?;
    members.unique(prefix)?;
    let mut f = Fields { prefix: prefix.to_string(), deviations };
    let mut r = match previous {
        Some(p) => Reading {
            time: p.time,
            time_text: p.time_text.clone(),
            transaction: p.transaction.clone(),
            identification: p.identification.clone(),
            unit: p.unit.clone(),
            current_type: p.current_type.clone(),
            error_flags: p.error_flags.clone(),
            status: p.status.clone(),
            ..Reading::default()
        },
        None => Reading::default(),
    };
    for (name, v) in members.0 {
        match name.as_str() {
            "TM" => {
                let text = f.string("TM", v)?;
                r.time = match &text {
                    Some(t) => Some(parse_time(t, &mut f)?),
                    None => None,
                };
                r.time_text = text;
            }
            "TX" => r.transaction = f.string("TX", v)?,
            "RV" => r.value = f.number("RV", v)?,
            "RI" => r.identification = f.string("RI", v)?,
            "RU" => r.unit = f.string("RU", v)?,
            "RT" => r.current_type = f.string("RT", v)?,
            "CL" => r.cumulated_loss = f.number("CL", v)?,
            "EF" => r.error_flags = f.string("EF", v)?.unwrap_or_default(),
            "ST" => r.status = f.string("ST", v)?,
            _ => r.extra.push(f.unknown(&name, v)),
        }
    }
    if r.time.is_none() {
        return Err(err(f.path("TM"), "every reading needs a time"));
    }
    f.check_enum("TX", &r.transaction, TRANSACTION_TYPES);
    f.check_enum("ST", &r.status, METER_STATUSES);
    f.check_enum("RU", &r.unit, UNITS);
    f.check_enum("RT", &r.current_type, CURRENT_TYPES);
    if let Some(bad) = r.error_flags.chars().find(|c| !matches!(c, 'E' | 't')) {
        f.note("EF", format!("unknown error flag {bad:?} (E: energy, t: time)"));
    }
    Ok(r)
}

/// Reads `2019-08-13T10:03:15,000+0000 I`. Also accepts a `.` before the fraction, a `Z` or
/// `+hh:mm` offset and a missing fraction or flag, each noted.
fn parse_time(text: &str, f: &mut Fields<'_>) -> Result<ReadingTime, ParseError> {
    let path = f.path("TM");
    let bad = |why: &str| err(path.clone(), format!("{text:?}: {why}"));
    let (stamp, flag) = match text.rsplit_once(' ') {
        Some((s, flag)) => (s.trim(), Some(flag.trim())),
        None => (text.trim(), None),
    };
    let clock = match flag {
        Some("U") => Some(ClockStatus::Unknown),
        Some("I") => Some(ClockStatus::Informative),
        Some("S") => Some(ClockStatus::Synchronised),
        Some("R") => Some(ClockStatus::Relative),
        Some(other) => return Err(bad(&format!("unknown clock status {other:?} (U, I, S or R)"))),
        None => None,
    };
    if clock.is_none() {
        f.note("TM", "no clock status flag (U, I, S or R); the time's quality is unknown");
    }
    // Split off the offset: the last '+' or '-' after the 'T', or a trailing 'Z'.
    let t_at = stamp.find('T').ok_or_else(|| bad("no 'T' between date and time"))?;
    let (local, offset_text) = if let Some(s) = stamp.strip_suffix('Z') {
        f.note("TM", "offset written as Z, not +0000");
        (s, "+0000".to_string())
    } else {
        let at = stamp[t_at..]
            .rfind(['+', '-'])
            .map(|i| i + t_at)
            .ok_or_else(|| bad("no UTC offset"))?;
        let off = &stamp[at..];
        let off = if off.len() == 6 && off.as_bytes()[3] == b':' {
            f.note("TM", "offset written as ±hh:mm, not ±hhmm");
            off.replace(':', "")
        } else {
            off.to_string()
        };
        (&stamp[..at], off)
    };
    let local = if local.contains('.') && !local.contains(',') {
        f.note("TM", "fraction separated by '.', not ','");
        local.replacen('.', ",", 1)
    } else {
        local.to_string()
    };
    let (whole, fraction) = match local.split_once(',') {
        Some((w, frac)) => (w.to_string(), frac.to_string()),
        None => {
            f.note("TM", "no fraction of a second");
            (local.clone(), "0".to_string())
        }
    };
    if fraction.is_empty() || fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the fraction of a second must be 1 to 9 digits"));
    }
    if fraction.len() != 3 && local.contains(',') {
        f.note("TM", format!("{} digits of a second, not 3 (milliseconds)", fraction.len()));
    }
    let naive =
        NaiveDateTime::parse_from_str(&format!("{whole}.{fraction}"), "%Y-%m-%dT%H:%M:%S%.f")
            .map_err(|e| bad(&format!("not a date and time: {e}")))?;
    let offset = parse_offset(&offset_text).ok_or_else(|| bad("the offset must be ±hhmm"))?;
    let local =
        naive.and_local_timezone(offset).single().ok_or_else(|| bad("not a valid local time"))?;
    Ok(ReadingTime { instant: local.with_timezone(&chrono::Utc), local, clock })
}

fn parse_offset(text: &str) -> Option<FixedOffset> {
    let (sign, digits) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    if minutes >= 60 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

fn parse_signature(text: &str, deviations: &mut Vec<Deviation>) -> Result<Signature, ParseError> {
    let members = Members::parse(text, "signature")?;
    members.unique("")?;
    let mut f = Fields { prefix: String::new(), deviations };
    let (mut sa, mut se, mut sm, mut sd) = (None, None, None, None);
    for (name, v) in members.0 {
        match name.as_str() {
            "SA" => sa = f.string("SA", v)?,
            "SE" => se = f.string("SE", v)?,
            "SM" => sm = f.string("SM", v)?,
            "SD" => sd = f.string("SD", v)?,
            _ if is_vendor_field(&name) || name.starts_with(['A', 'B', 'C', 'D', 'E', 'F']) => {}
            _ => f.note(&name, "not defined in the signature section; ignored"),
        }
    }
    let curve =
        curve_of_algorithm(sa.as_deref().unwrap_or(DEFAULT_ALGORITHM)).map_err(|m| err("SA", m))?;
    if let Some(a) = sa.as_deref().filter(|a| *a != algorithm_of_curve(curve)) {
        f.note("SA", format!("{a:?} is spelled {:?} in OCMF", algorithm_of_curve(curve)));
    }
    let sd = sd.ok_or_else(|| err("SD", "the signature data is missing"))?;
    let bytes = match se.as_deref() {
        None | Some("hex") => decode_hex(&sd).map_err(|m| err("SD", m))?,
        Some("base64") => decode_base64(&sd).map_err(|m| err("SD", m))?,
        Some(other) if other.eq_ignore_ascii_case("hex") => {
            f.note("SE", format!("{other:?} for \"hex\""));
            decode_hex(&sd).map_err(|m| err("SD", m))?
        }
        Some(other) if other.eq_ignore_ascii_case("base64") => {
            f.note("SE", format!("{other:?} for \"base64\""));
            decode_base64(&sd).map_err(|m| err("SD", m))?
        }
        Some(other) => return Err(err("SE", format!("{other:?}: must be hex or base64"))),
    };
    if let Some(m) = sm.as_deref().filter(|m| *m != "application/x-der") {
        f.note("SM", format!("{m:?}; only application/x-der is defined"));
    }
    // Some meters emit raw r‖s although SM says (or defaults to) DER.
    let format = if looks_like_der(&bytes) {
        SignatureFormat::Der
    } else if bytes.len() == 2 * curve.field_bytes() {
        f.note("SD", "raw r||s, not DER as application/x-der specifies");
        SignatureFormat::Raw
    } else {
        return Err(err(
            "SD",
            format!(
                "{} bytes is neither a DER signature nor raw r||s for {curve} ({} bytes)",
                bytes.len(),
                2 * curve.field_bytes()
            ),
        ));
    };
    Ok(Signature { curve, algorithm_text: sa, bytes, format })
}

/// A DER `SEQUENCE` whose length covers exactly the rest.
fn looks_like_der(bytes: &[u8]) -> bool {
    match bytes {
        [0x30, len, rest @ ..] if *len < 0x80 => *len as usize == rest.len(),
        [0x30, 0x81, len, rest @ ..] => *len as usize == rest.len() && *len >= 0x80,
        _ => false,
    }
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))
}

pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    let t = s.trim();
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(t.trim_end_matches('='))
        })
        .map_err(|e| format!("not base64: {e}"))
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

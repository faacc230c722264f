//! Parsing a record: the payload's fields against the specification's vocabulary, the readings
//! and their times, and the signature section.

use base64::Engine as _;
use chrono::NaiveDateTime;

use serde_json::Value;
use serde_json::value::RawValue;

use super::fields::{Fields, Members, kind, object, value};
use super::*;

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
pub(super) fn is_vendor_field(name: &str) -> bool {
    name.starts_with(['U', 'V', 'W', 'X', 'Y', 'Z'])
}
/// `RU` values.
const UNITS: &[&str] = &["kWh", "Wh", "mOhm", "uOhm"];
/// `RT` values.
const CURRENT_TYPES: &[&str] = &["AC", "DC"];

impl Record {
    /// Parses a record. Leading and trailing whitespace (a line end) is ignored; a record
    /// hex-encoded as a whole (as OCPP `SignedData` sometimes carries it) is decoded first.
    pub fn parse(text: &str) -> Result<Record, FieldError> {
        let mut deviations = Vec::new();
        let text = text.trim();
        if text.len() > MAX_RECORD_BYTES {
            return Err(err("record", format!("longer than {MAX_RECORD_BYTES} bytes")));
        }
        let decoded;
        let text = if !text.starts_with("OCMF|") && text.len().is_multiple_of(2) {
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

fn parse_payload(text: &str, deviations: &mut Vec<Deviation>) -> Result<Payload, FieldError> {
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
) -> Result<LossCompensation, FieldError> {
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
) -> Result<Reading, FieldError> {
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
fn parse_time(text: &str, f: &mut Fields<'_>) -> Result<ReadingTime, FieldError> {
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

fn parse_signature(text: &str, deviations: &mut Vec<Deviation>) -> Result<Signature, FieldError> {
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

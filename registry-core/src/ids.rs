//! Operator IDs and EVSE IDs: parsing, normalisation and ownership.
//!
//! An operator ID is a country code, `*`, and three alphanumerics (`DE*ABC`). An EVSE ID is an
//! operator ID, `*E`, and 1–31 more characters (`DE*ABC*E123456*1`), letters and digits with `*`
//! as separator inside. On input the two structural `*` are optional and letters may be any case;
//! the registry stores and compares only the normalised form (upper case, with both structural
//! `*`), so `deabce123456*1` and `DE*ABC*E123456*1` are the same charge point. An EVSE ID
//! belongs to the operator whose ID it starts with.

use std::fmt;

/// An identifier did not parse; the message says which rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub String);

/// A charge point operator ID, normalised (`DE*ABC`): always six ASCII bytes, so it is held
/// inline. Every key record names its operator, and a heap block each was memory per key.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct OperatorId([u8; 6]);

/// An EVSE ID, normalised (`DE*ABC*E123456*1`), in a heap block of its exact length.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct EvseId(Box<str>);

impl TryFrom<String> for OperatorId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<OperatorId> for String {
    fn from(id: OperatorId) -> String {
        id.as_str().to_string()
    }
}

impl TryFrom<String> for EvseId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<EvseId> for String {
    fn from(id: EvseId) -> String {
        id.0.into()
    }
}

fn is_country(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic())
}

fn is_party(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl OperatorId {
    /// Parses `DE*ABC`, `DEABC`, `de*abc`.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let s = input.trim().to_ascii_uppercase();
        if !s.is_ascii() {
            return Err(IdError(format!(
                "operator ID {input:?} must consist of ASCII letters, digits and *"
            )));
        }
        let (country, party) = match s.split_once('*') {
            Some((c, p)) => (c.to_string(), p.to_string()),
            None if s.len() == 5 => (s[..2].to_string(), s[2..].to_string()),
            None => {
                return Err(IdError(format!(
                    "operator ID {input:?} must be a country code and 3 letters or digits, e.g. DE*ABC"
                )));
            }
        };
        if !is_country(&country) {
            return Err(IdError(format!(
                "operator ID {input:?} must start with a two-letter country code"
            )));
        }
        if !is_party(&party) {
            return Err(IdError(format!(
                "operator ID {input:?} must have exactly 3 letters or digits after the country code"
            )));
        }
        Ok(Self::from_normalised(format!("{country}*{party}").as_bytes()))
    }

    /// The ID from its normalised form, which the caller checked.
    fn from_normalised(bytes: &[u8]) -> Self {
        let mut id = [0; 6];
        id.copy_from_slice(&bytes[..6]);
        Self(id)
    }

    /// The normalised form.
    pub fn as_str(&self) -> &str {
        // Only `parse` makes an ID, and its six bytes are ASCII.
        std::str::from_utf8(&self.0).expect("an operator ID is ASCII")
    }

    /// The normalised form as a string of its own.
    pub fn into_string(self) -> String {
        self.into()
    }
}

impl EvseId {
    /// Parses an EVSE ID in any accepted input form and normalises it.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let bad = |rule: &str| {
            IdError(format!("EVSE ID {input:?} {rule} (expected e.g. DE*ABC*E123456*1)"))
        };
        let s = input.trim().to_ascii_uppercase();
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'*') {
            return Err(bad("may contain only letters, digits and *"));
        }
        let b = s.as_bytes();
        if b.len() < 2 || !is_country(&s[..2]) {
            return Err(bad("must start with a two-letter country code"));
        }
        let mut i = 2;
        if b.get(i) == Some(&b'*') {
            i += 1;
        }
        let party = s
            .get(i..i + 3)
            .filter(|p| is_party(p))
            .ok_or_else(|| bad("must name a 3-character operator after the country code"))?;
        let party = party.to_string();
        i += 3;
        if b.get(i) == Some(&b'*') {
            i += 1;
        }
        if b.get(i) != Some(&b'E') {
            return Err(bad("must have the ID type E after the operator"));
        }
        i += 1;
        let rest = &s[i..];
        if rest.is_empty() || rest.len() > 31 {
            return Err(bad("must have 1 to 31 characters after E"));
        }
        if !rest.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(bad("must have a letter or digit right after E"));
        }
        if rest.ends_with('*') || rest.contains("**") {
            return Err(bad("must not end with * or contain **"));
        }
        Ok(Self(format!("{}*{party}*E{rest}", &s[..2]).into()))
    }

    /// The normalised form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalised form, without copying it.
    pub fn into_string(self) -> String {
        self.0.into()
    }

    /// The operator this EVSE ID belongs to.
    pub fn operator(&self) -> OperatorId {
        // A normalised EVSE ID starts with its operator's normalised ID.
        OperatorId::from_normalised(self.0.as_bytes())
    }
}

impl fmt::Debug for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OperatorId").field(&self.as_str()).finish()
    }
}

impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for EvseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A serial number as the registry stores it: trimmed, non-empty, printable, at most 64 bytes.
/// Serials are compared exactly: manufacturers mean different things by case and leading zeros.
pub fn serial(input: &str) -> Result<String, IdError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(IdError("serial number must not be empty".into()));
    }
    if s.len() > 64 {
        return Err(IdError("serial number must be at most 64 bytes".into()));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(IdError("serial number must not contain control characters".into()));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn operator_ids_normalise() {
        for input in ["DE*ABC", "deabc", " de*Abc ", "DEABC"] {
            assert_eq!(OperatorId::parse(input).unwrap().as_str(), "DE*ABC", "{input}");
        }
        for bad in ["", "D*ABC", "DE*AB", "DE*ABCD", "1E*ABC", "DE*A-C", "DE**ABC"] {
            assert!(OperatorId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn evse_ids_normalise_with_optional_separators_and_any_case() {
        for input in ["DE*ABC*E123456*1", "deabce123456*1", "DE*ABCE123456*1", "DEABC*E123456*1"] {
            let id = EvseId::parse(input).unwrap();
            assert_eq!(id.as_str(), "DE*ABC*E123456*1", "{input}");
            assert_eq!(id.operator().as_str(), "DE*ABC");
            assert_eq!(format!("{:?}", id.operator()), r#"OperatorId("DE*ABC")"#);
        }
    }

    #[test]
    fn malformed_evse_ids_are_refused_with_the_rule() {
        for (bad, rule) in [
            ("DE*ABC*123", "ID type E"),
            ("DE*ABC*E", "1 to 31"),
            ("DE*AB*E1", "3-character operator"),
            ("D1*ABC*E1", "country code"),
            ("DE*ABC*E1 2", "only letters"),
            ("DE*ABC*E*1", "right after E"),
            ("DE*ABC*E1*", "must not end"),
            ("DE*ABC*E12345678901234567890123456789012", "1 to 31"),
        ] {
            let err = EvseId::parse(bad).unwrap_err();
            assert!(err.0.contains(rule), "{bad}: {err}");
        }
    }

    proptest! {
        #[test]
        fn normalising_twice_changes_nothing(s in "[a-zA-Z]{2}\\*?[a-zA-Z0-9]{3}\\*?[eE][a-zA-Z0-9]{1,10}") {
            let once = EvseId::parse(&s).unwrap();
            prop_assert_eq!(EvseId::parse(once.as_str()).unwrap(), once);
        }

        #[test]
        fn any_input_parses_or_errors_without_panicking(s in "\\PC{0,40}") {
            let _ = EvseId::parse(&s);
            let _ = OperatorId::parse(&s);
            let _ = serial(&s);
        }
    }
}

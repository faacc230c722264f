//! Reading an OCMF payload's JSON without losing what a signature or an audit needs: members in
//! order and as written, duplicates kept, and every bend of the specification noted.

use std::fmt;

use serde_json::Value;
use serde_json::value::RawValue;

use super::parse::is_vendor_field;
use super::{Deviation, err};
use crate::error::FieldError;

/// A JSON object with its members in order, each as written, and duplicates kept: a field given
/// twice (which parsers resolve differently) is caught instead of silently resolved, and numbers
/// keep their exact text.
pub(super) struct Members<'a>(pub(super) Vec<(String, &'a RawValue)>);

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
    pub(super) fn parse(text: &'a str, what: &str) -> Result<Self, FieldError> {
        serde_json::from_str(text).map_err(|e| err(what, format!("not a JSON object: {e}")))
    }

    /// Fails on a member given twice.
    pub(super) fn unique(&self, prefix: &str) -> Result<(), FieldError> {
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
pub(super) fn object<'a>(raw: &'a RawValue, field: &str) -> Result<Members<'a>, FieldError> {
    match value(raw) {
        Value::Object(_) => Members::parse(raw.get(), field),
        other => Err(err(field, format!("must be an object, not {}", kind(&other)))),
    }
}

/// A member's value as JSON (for its type); its text stays in the `RawValue`. Containers come
/// back empty: callers read them again member by member, and parsing them whole here only to
/// learn their kind took half of a record's parse time.
pub(super) fn value(raw: &RawValue) -> Value {
    let text = raw.get().trim_start();
    match text.as_bytes().first() {
        Some(b'{') => Value::Object(serde_json::Map::new()),
        Some(b'[') => Value::Array(Vec::new()),
        _ => serde_json::from_str(text).unwrap_or(Value::Null),
    }
}

pub(super) fn kind(v: &Value) -> &'static str {
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
pub(super) struct Fields<'a> {
    pub(super) prefix: String,
    pub(super) deviations: &'a mut Vec<Deviation>,
}

impl Fields<'_> {
    pub(super) fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub(super) fn note(&mut self, name: &str, message: impl Into<String>) {
        let field = self.path(name);
        self.deviations.push(Deviation { field, message: message.into() });
    }

    /// A field the specification makes a string. Numbers and booleans are read as their JSON
    /// text (a deviation); `null` counts as absent (a deviation).
    pub(super) fn string(
        &mut self,
        name: &str,
        raw: &RawValue,
    ) -> Result<Option<String>, FieldError> {
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
    pub(super) fn number(
        &mut self,
        name: &str,
        raw: &RawValue,
    ) -> Result<Option<String>, FieldError> {
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

    pub(super) fn boolean(
        &mut self,
        name: &str,
        raw: &RawValue,
    ) -> Result<Option<bool>, FieldError> {
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

    pub(super) fn strings(
        &mut self,
        name: &str,
        raw: &RawValue,
    ) -> Result<Vec<String>, FieldError> {
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
    pub(super) fn unknown(&mut self, name: &str, raw: &RawValue) -> (String, String) {
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
    pub(super) fn check_enum(&mut self, name: &str, value: &Option<String>, allowed: &[&str]) {
        if let Some(v) = value
            && !allowed.contains(&v.as_str())
        {
            self.note(name, format!("{v:?} is not one of {}", allowed.join(", ")));
        }
    }
}

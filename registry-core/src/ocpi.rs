//! Signed meter values as OCPI 2.2.1 carries them in a CDR's `signed_data` object: the records to
//! validate, each with the public key the CDR claims for it.

use crate::error::FieldError;

/// A record to validate, with the key a CDR claims for it and a label for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The OCMF record as received.
    pub record: String,
    /// The public key the CDR carries, if any.
    pub claimed_key: Option<String>,
    /// E.g. the OCPI `nature` or a line number.
    pub label: String,
}

/// The signed values of an OCPI 2.2.1 CDR `signed_data` object (JSON), each with the CDR's
/// public key. Only the OCMF encoding method is defined for meter values here; a value of another
/// method cannot be checked and is refused with the method's name.
pub fn signed_data(json: &str) -> Result<Vec<Input>, FieldError> {
    #[derive(serde::Deserialize)]
    struct SignedData {
        encoding_method: String,
        #[serde(default)]
        public_key: Option<String>,
        signed_values: Vec<SignedValue>,
    }
    #[derive(serde::Deserialize)]
    struct SignedValue {
        #[serde(default)]
        nature: String,
        signed_data: String,
    }
    let data: SignedData = serde_json::from_str(json)
        .map_err(|e| FieldError::whole(format!("not an OCPI signed_data object: {e}")))?;
    if !data.encoding_method.trim().eq_ignore_ascii_case("OCMF") {
        return Err(FieldError::new(
            "encoding_method",
            format!("{:?}: only OCMF signed values can be validated", data.encoding_method),
        ));
    }
    if data.signed_values.is_empty() {
        return Err(FieldError::new("signed_values", "is empty"));
    }
    data.signed_values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let bytes = crate::ocmf::decode_base64(&v.signed_data).map_err(|e| {
                FieldError::new(format!("signed_values[{i}].signed_data"), format!("is {e}"))
            })?;
            let record = String::from_utf8(bytes).map_err(|_| {
                FieldError::new(format!("signed_values[{i}].signed_data"), "is not UTF-8 text")
            })?;
            let label = if v.nature.is_empty() {
                format!("signed_values[{i}]")
            } else {
                format!("signed_values[{i}] ({})", v.nature)
            };
            Ok(Input { record, claimed_key: data.public_key.clone(), label })
        })
        .collect()
}

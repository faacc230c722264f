//! Proof of possession at registration: an operator may attach a record signed by the meter to a
//! new key, and the registry then checks that the key being registered really signs for the unit
//! being registered.

use crate::ids::EvseId;
use crate::meter_key::MeterKey;
use crate::ocmf::{self, Record};

/// Proof of possession at registration: a sample record from the meter must verify with the key
/// being registered and name the unit being registered — every serial both give must agree, and
/// at least one serial (or, for a registration, the charge point's EVSE ID) must match. Returns
/// the rule broken.
pub fn check_sample(
    sample: &str,
    key: &MeterKey,
    meter_serial: Option<&str>,
    gateway_serial: Option<&str>,
    evse_ids: &[EvseId],
) -> Result<(), String> {
    let record =
        Record::parse(sample).map_err(|e| format!("is not a readable OCMF record: {e}"))?;
    if record.signature.curve != key.curve {
        return Err(format!(
            "is signed with {} but the key is on {}",
            ocmf::algorithm_of_curve(record.signature.curve),
            key.curve
        ));
    }
    if !record.verify(&key.spki_der).map_err(|e| e.to_string())? {
        return Err("does not verify with the key being registered: it is not from this meter's signing unit".into());
    }
    let p = &record.payload;
    let mut matched = false;
    for (what, given, named) in [
        ("meter serial", meter_serial, p.meter_serial.as_deref()),
        ("gateway serial", gateway_serial, p.gateway_serial.as_deref()),
    ] {
        match (given, named.map(str::trim).filter(|s| !s.is_empty())) {
            (Some(g), Some(n)) if g == n => matched = true,
            (Some(g), Some(n)) => {
                return Err(format!("names {what} {n:?} but the registration gives {g:?}"));
            }
            _ => {}
        }
    }
    if let Some(Ok(evse)) = record.evse() {
        matched |= evse_ids.contains(&evse);
    }
    if !matched {
        return Err(
            "names none of the registration's serials (or EVSE IDs): give the meter or gateway serial the sample carries"
                .into(),
        );
    }
    Ok(())
}

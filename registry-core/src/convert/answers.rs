//! The answers: key records and bindings, validity verdicts (cut to a view), meter value
//! validations, proven entries and receipts.

use crate::ids::EvseId;
use crate::lifecycle::{Binding, KeyAsOf};
use crate::merkle::{self, ProofError as MerkleError};
use crate::pb;
use crate::proof::ProvenEntry;
use crate::receipt::{Receipt, ReceiptError};
use crate::signed_values::{CheckKind, Outcome, Validation};
use crate::time;
use crate::validity::{Validity, View};

/// Moves the identifiers instead of copying them: answers are built by the million in batch
/// lookups.
impl From<Binding> for pb::Binding {
    fn from(b: Binding) -> Self {
        pb::Binding {
            operator_id: b.operator_id.into_string(),
            evse_ids: b.evse_ids.into_iter().map(EvseId::into_string).collect(),
            from: Some(time::to_timestamp(&b.from)),
            until: b.until.as_ref().map(time::to_timestamp),
        }
    }
}

impl From<&Binding> for pb::Binding {
    fn from(b: &Binding) -> Self {
        b.clone().into()
    }
}

/// The key record as known at this size.
impl From<&KeyAsOf<'_>> for pb::KeyRecord {
    fn from(key: &KeyAsOf<'_>) -> Self {
        let reg = key.registration();
        let state = key.state();
        let reason = state.end_reason();
        let bindings = key.bindings();
        pb::KeyRecord {
            fingerprint: reg.fingerprint.to_string(),
            curve: pb::Curve::from(reg.curve) as i32,
            public_key: reg.public_key.to_vec(),
            submitted_public_key: reg.submitted_public_key.text(&reg.public_key).into_owned(),
            state: pb::KeyState::from(state) as i32,
            end_reason: reason.map_or(0, |r| pb::EndReason::from(r) as i32),
            ended_at: key.end().map(|(t, _, _)| time::to_timestamp(&t)),
            operator_id: bindings.last().map(|b| b.operator_id.to_string()).unwrap_or_default(),
            bindings: bindings.iter().map(pb::Binding::from).collect(),
            meter_serial: reg.meter_serial.as_deref().unwrap_or_default().to_string(),
            gateway_serial: reg.gateway_serial.as_deref().unwrap_or_default().to_string(),
            manufacturer: reg.manufacturer.to_string(),
            model: reg.model.to_string(),
            predecessor: reg.predecessor.as_deref().unwrap_or_default().to_string(),
            successor: key.successor().unwrap_or_default().to_string(),
            released_to: key.released_to().map(|o| o.to_string()).unwrap_or_default(),
            positions: key.positions(),
        }
    }
}

/// What the server sends and what a verifying client re-derives and compares.
impl From<&Validity> for pb::Validity {
    fn from(v: &Validity) -> Self {
        v.to_pb_view(View::Full)
    }
}

/// An answer cut to what a `view` asks for.
impl Validity {
    /// The protobuf form with only what `view` asks for.
    pub fn to_pb_view(&self, view: View) -> pb::Validity {
        let binding = self.binding.as_ref().filter(|_| view == View::Full).cloned();
        Validity {
            key: self.key.clone(),
            binding,
            deciding_positions: self.deciding_positions.clone(),
            candidates: self.candidates.clone(),
            ..*self
        }
        .into_pb_view(view)
    }

    /// The protobuf form with only what `view` asks for, moving what the answer owns (its
    /// binding, positions and candidates) instead of copying it: the server builds answers by
    /// the million and sends each once.
    pub fn into_pb_view(self, view: View) -> pb::Validity {
        let reg = self.key.as_ref().map(|k| &k.registration);
        let full = view == View::Full;
        pb::Validity {
            verdict: pb::Verdict::from(self.verdict) as i32,
            // `String::from`, not `to_string`: a `Box<str>` would go through `Display`.
            fingerprint: reg.map(|r| String::from(&*r.fingerprint)).unwrap_or_default(),
            curve: reg.map_or(0, |r| pb::Curve::from(r.curve) as i32),
            public_key: reg.filter(|_| full).map(|r| r.public_key.to_vec()).unwrap_or_default(),
            binding: self.binding.filter(|_| full).map(pb::Binding::from),
            effective_from: reg.map(|r| time::to_timestamp(&r.effective_at)),
            ended_at: self.ended.as_ref().map(|(t, _)| time::to_timestamp(t)),
            end_reason: self.ended.map_or(0, |(_, r)| pb::EndReason::from(r) as i32),
            state: self.state.map_or(0, |s| pb::KeyState::from(s) as i32),
            deciding_positions: self.deciding_positions,
            candidates: self.candidates,
        }
    }
}

impl Validation {
    /// The protobuf answer, with the key as known at `as_of`.
    pub fn to_pb(&self, label: &str, text: &str, as_of: u64) -> pb::MeterValueValidation {
        let kind = |k: CheckKind| match k {
            CheckKind::Parse => pb::MeterValueCheck::Parse,
            CheckKind::KeyFound => pb::MeterValueCheck::KeyFound,
            CheckKind::Signature => pb::MeterValueCheck::Signature,
            CheckKind::KeyValid => pb::MeterValueCheck::KeyValid,
            CheckKind::EvseMatch => pb::MeterValueCheck::EvseMatch,
            CheckKind::MeterStatus => pb::MeterValueCheck::MeterStatus,
            CheckKind::ErrorFlags => pb::MeterValueCheck::ErrorFlags,
            CheckKind::ClockStatus => pb::MeterValueCheck::ClockStatus,
            CheckKind::CdrKey => pb::MeterValueCheck::CdrKey,
        };
        let outcome = |o: Outcome| match o {
            Outcome::Pass => pb::CheckOutcome::Pass,
            Outcome::Fail => pb::CheckOutcome::Fail,
            Outcome::Warn => pb::CheckOutcome::Warn,
            Outcome::Skip => pb::CheckOutcome::Skip,
        };
        let p = self.record.as_ref().map(|r| &r.payload);
        let s = |v: Option<&Option<String>>| v.and_then(|v| v.clone()).unwrap_or_default();
        pb::MeterValueValidation {
            label: label.to_string(),
            valid: self.valid(),
            billable: self.billable(),
            checks: self
                .checks
                .iter()
                .map(|c| pb::MeterValueCheckResult {
                    check: kind(c.kind) as i32,
                    outcome: outcome(c.outcome) as i32,
                    subject: c.subject.clone(),
                    reason: c.reason.clone(),
                })
                .collect(),
            found_by: self.found_by.clone().unwrap_or_default(),
            key: self.key.as_ref().and_then(|k| k.as_of(as_of)).map(|k| pb::KeyRecord::from(&k)),
            meter_serial: s(p.map(|p| &p.meter_serial)),
            gateway_serial: s(p.map(|p| &p.gateway_serial)),
            charge_point_type: s(p.map(|p| &p.charge_point_type)),
            charge_point_id: s(p.map(|p| &p.charge_point_id)),
            readings: p
                .map(|p| {
                    p.readings
                        .iter()
                        .map(|r| pb::MeterReading {
                            time: r.time.map(|t| time::to_timestamp(&t.instant)),
                            time_text: r.time_text.clone().unwrap_or_default(),
                            clock_status: r
                                .time
                                .and_then(|t| t.clock)
                                .map(|c| c.flag().to_string())
                                .unwrap_or_default(),
                            transaction: r.transaction.clone().unwrap_or_default(),
                            value: r.value.clone().unwrap_or_default(),
                            unit: r.unit.clone().unwrap_or_default(),
                            identification: r.identification.clone().unwrap_or_default(),
                            status: r.status.clone().unwrap_or_default(),
                            error_flags: r.error_flags.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            deviations: self
                .record
                .as_ref()
                .map(|r| r.deviations.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            record: text.to_string(),
        }
    }
}

impl From<&ProvenEntry> for pb::ProvenEntry {
    fn from(e: &ProvenEntry) -> Self {
        pb::ProvenEntry {
            position: e.position,
            entry: e.entry.clone(),
            inclusion_proof: e.proof.iter().map(|h| h.to_vec()).collect(),
        }
    }
}

/// Hashes of the wrong length fail.
impl TryFrom<&pb::ProvenEntry> for ProvenEntry {
    type Error = MerkleError;
    fn try_from(p: &pb::ProvenEntry) -> Result<Self, MerkleError> {
        Ok(ProvenEntry {
            position: p.position,
            entry: p.entry.clone(),
            proof: merkle::hashes_from_slices(&p.inclusion_proof)?,
        })
    }
}

impl From<&Receipt> for pb::Receipt {
    fn from(r: &Receipt) -> Self {
        pb::Receipt {
            registration: Some(pb::ProvenEntry::from(&r.registration)),
            confirmation: Some(pb::ProvenEntry::from(&r.confirmation)),
            checkpoint: r.checkpoint.clone(),
        }
    }
}

impl TryFrom<&pb::Receipt> for Receipt {
    type Error = ReceiptError;
    fn try_from(p: &pb::Receipt) -> Result<Self, ReceiptError> {
        let entry = |e: &Option<pb::ProvenEntry>, which: &'static str| {
            let e = e.as_ref().ok_or_else(|| {
                ReceiptError::Content(format!("the receipt has no {which} entry"))
            })?;
            ProvenEntry::try_from(e).map_err(|error| ReceiptError::Inclusion { which, error })
        };
        Ok(Receipt {
            registration: entry(&p.registration, "registration")?,
            confirmation: entry(&p.confirmation, "confirmation")?,
            checkpoint: p.checkpoint.clone(),
        })
    }
}

//! The enums: end reasons, curves, identifier kinds, key states, verdicts and views.

use super::UnknownValue;
use crate::event::{EndReason, IdentifierKind};
use crate::lifecycle::KeyState;
use crate::meter_key::Curve;
use crate::pb;
use crate::validity::{Verdict, View};

impl From<EndReason> for pb::EndReason {
    fn from(r: EndReason) -> Self {
        match r {
            EndReason::Decommissioned => pb::EndReason::Decommissioned,
            EndReason::Compromised => pb::EndReason::Compromised,
            EndReason::Replaced => pb::EndReason::Replaced,
            EndReason::Rotated => pb::EndReason::Rotated,
            EndReason::Other => pb::EndReason::Other,
            EndReason::Relocated => pb::EndReason::Relocated,
            EndReason::TakenOver => pb::EndReason::TakenOver,
        }
    }
}

impl TryFrom<i32> for EndReason {
    type Error = UnknownValue;
    fn try_from(value: i32) -> Result<Self, UnknownValue> {
        Ok(match pb::EndReason::try_from(value).map_err(|_| UnknownValue(value))? {
            pb::EndReason::Unspecified => return Err(UnknownValue(value)),
            pb::EndReason::Decommissioned => EndReason::Decommissioned,
            pb::EndReason::Compromised => EndReason::Compromised,
            pb::EndReason::Replaced => EndReason::Replaced,
            pb::EndReason::Rotated => EndReason::Rotated,
            pb::EndReason::Other => EndReason::Other,
            pb::EndReason::Relocated => EndReason::Relocated,
            pb::EndReason::TakenOver => EndReason::TakenOver,
        })
    }
}

impl From<Curve> for pb::Curve {
    fn from(c: Curve) -> Self {
        match c {
            Curve::Secp256r1 => pb::Curve::Secp256r1,
            Curve::Secp384r1 => pb::Curve::Secp384r1,
            Curve::Secp256k1 => pb::Curve::Secp256k1,
            Curve::BrainpoolP256r1 => pb::Curve::Brainpoolp256r1,
            Curve::BrainpoolP384r1 => pb::Curve::Brainpoolp384r1,
            Curve::Secp192r1 => pb::Curve::Secp192r1,
        }
    }
}

impl TryFrom<i32> for Curve {
    type Error = UnknownValue;
    fn try_from(value: i32) -> Result<Self, UnknownValue> {
        Ok(match pb::Curve::try_from(value).map_err(|_| UnknownValue(value))? {
            pb::Curve::Unspecified => return Err(UnknownValue(value)),
            pb::Curve::Secp256r1 => Curve::Secp256r1,
            pb::Curve::Secp384r1 => Curve::Secp384r1,
            pb::Curve::Secp256k1 => Curve::Secp256k1,
            pb::Curve::Brainpoolp256r1 => Curve::BrainpoolP256r1,
            pb::Curve::Brainpoolp384r1 => Curve::BrainpoolP384r1,
            pb::Curve::Secp192r1 => Curve::Secp192r1,
        })
    }
}

impl From<IdentifierKind> for pb::IdentifierKind {
    fn from(k: IdentifierKind) -> Self {
        match k {
            IdentifierKind::Key => pb::IdentifierKind::Key,
            IdentifierKind::Evse => pb::IdentifierKind::Evse,
            IdentifierKind::MeterSerial => pb::IdentifierKind::MeterSerial,
            IdentifierKind::GatewaySerial => pb::IdentifierKind::GatewaySerial,
            IdentifierKind::Operator => pb::IdentifierKind::Operator,
        }
    }
}

impl TryFrom<i32> for IdentifierKind {
    type Error = UnknownValue;
    fn try_from(value: i32) -> Result<Self, UnknownValue> {
        Ok(match pb::IdentifierKind::try_from(value).map_err(|_| UnknownValue(value))? {
            pb::IdentifierKind::Unspecified => return Err(UnknownValue(value)),
            pb::IdentifierKind::Key => IdentifierKind::Key,
            pb::IdentifierKind::Evse => IdentifierKind::Evse,
            pb::IdentifierKind::MeterSerial => IdentifierKind::MeterSerial,
            pb::IdentifierKind::GatewaySerial => IdentifierKind::GatewaySerial,
            pb::IdentifierKind::Operator => IdentifierKind::Operator,
        })
    }
}

/// The state alone; a deactivated key's reason travels in its own field
/// ([`KeyState::end_reason`]).
impl From<KeyState> for pb::KeyState {
    fn from(s: KeyState) -> Self {
        match s {
            KeyState::Pending => pb::KeyState::Pending,
            KeyState::Active => pb::KeyState::Active,
            KeyState::Deactivated(_) => pb::KeyState::Deactivated,
            KeyState::Rejected => pb::KeyState::Rejected,
        }
    }
}

impl From<Verdict> for pb::Verdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Valid => pb::Verdict::Valid,
            Verdict::Pending => pb::Verdict::Pending,
            Verdict::NotYet => pb::Verdict::NotYet,
            Verdict::Ended => pb::Verdict::Ended,
            Verdict::Rejected => pb::Verdict::Rejected,
            Verdict::Unknown => pb::Verdict::Unknown,
            Verdict::Ambiguous => pb::Verdict::Ambiguous,
        }
    }
}

/// Unknown values get the full answer, which says the most.
impl From<i32> for View {
    fn from(value: i32) -> Self {
        match pb::ValidityView::try_from(value) {
            Ok(pb::ValidityView::Basic) => View::Basic,
            _ => View::Full,
        }
    }
}

impl From<View> for pb::ValidityView {
    fn from(v: View) -> Self {
        match v {
            View::Full => pb::ValidityView::Full,
            View::Basic => pb::ValidityView::Basic,
        }
    }
}

//! The rules against the in-memory state, with no socket.
//!
//! The tables build their state only through the rules (`decide`, then `apply`) in a small
//! [`world::World`]: operators DE*ABC and DE*XYZ, an administrator, and revoked keys of each
//! role. One table per command (`operator_commands`, `admin_commands`), the authorization matrix
//! and the registry's own actions (`signers`). Below, the registry's request IDs.

mod admin_commands;
mod handover_commands;
mod operator_commands;
mod signers;
mod world;

use super::*;
use crate::event::{Event, Registration, SubmittedKey};
use crate::ids::{EvseId, OperatorId};
use crate::meter_key::Curve;

fn confirm_action(fingerprint: &str, registration: u64) -> RegistryAction {
    RegistryAction::AutoConfirm { fingerprint: fingerprint.into(), registration }
}

/// A state holding one pending key, registered at `position`.
fn pending_key(fingerprint: &str, position: u64) -> MemoryState {
    let registration = Registration {
        fingerprint: fingerprint.into(),
        curve: Curve::Secp256r1,
        public_key: Box::new([1, 2, 3]),
        submitted_public_key: SubmittedKey::new("010203", &[1, 2, 3]),
        operator_id: OperatorId::parse("DE*ABC").expect("an operator ID"),
        evse_ids: Box::new([EvseId::parse("DE*ABC*E1").expect("an EVSE ID")]),
        meter_serial: None,
        gateway_serial: None,
        manufacturer: "M".into(),
        model: "X".into(),
        effective_at: chrono::DateTime::UNIX_EPOCH,
        predecessor: None,
        sample_signed_meter_value: None,
    };
    let at = Stamp { position, recorded_at: chrono::DateTime::UNIX_EPOCH };
    let mut state = MemoryState::default();
    state.keys.insert(fingerprint.into(), std::sync::Arc::new(KeyRecord::new(registration, at)));
    state
}

#[test]
fn confirmation_ids_are_ordered_by_registration_and_reserved() {
    let fp = "ab".repeat(32);
    let ids: Vec<uuid::Uuid> =
        [1, 2, 1_000, 1 << 40].iter().map(|p| confirm_action(&fp, *p).request_id().0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for id in &ids {
        assert!(is_reserved_request_id(id), "{id}");
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
    }
    // Different keys confirmed for the same position still get different IDs.
    assert_ne!(ids[0], confirm_action(&"cd".repeat(32), 1).request_id().0);
    // The variant is part of the shape: the same bits with another variant are not reserved.
    let other_variant = uuid::Uuid::from_u128(ids[0].as_u128() ^ (0b11 << 62));
    assert!(!is_reserved_request_id(&other_variant));
    // Neither the command IDs clients make nor the bootstrap's are reserved.
    assert!(!is_reserved_request_id(&uuid::Uuid::now_v7()));
    let bootstrap = RegistryAction::Bootstrap { admins: vec![] }.request_id().0;
    assert!(!is_reserved_request_id(&bootstrap));
}

#[test]
fn a_confirmation_keeps_its_digest_and_accepts_the_id_of_older_logs() {
    let fp = "ab".repeat(32);
    let action = confirm_action(&fp, 9);
    let (id, digest) = action.request_id();
    assert_eq!(digest, confirm_action(&fp, 10).request_id().1, "the digest names the key only");
    let legacy = action.legacy_request_id().expect("confirmations had v5 IDs");
    assert_eq!(legacy.get_version_num(), 5);
    assert!(action.has_request_id(&id) && action.has_request_id(&legacy));
    assert!(!action.has_request_id(&confirm_action(&fp, 10).request_id().0));
    assert!(!action.has_request_id(&uuid::Uuid::now_v7()));
    assert_eq!(RegistryAction::Bootstrap { admins: vec![] }.legacy_request_id(), None);
}

#[test]
fn a_confirmation_must_name_the_registration_it_confirms() {
    let fp = "ab".repeat(32);
    let state = pending_key(&fp, 4);
    let ctx = DecideContext {
        now: chrono::DateTime::UNIX_EPOCH,
        published_size: 10,
        policy: Policy::default(),
    };
    let right = decide(&Proposal::Registry(confirm_action(&fp, 4)), &ctx, &state);
    assert!(
        matches!(right.as_deref(), Ok([Event::KeyConfirmed { registration_position: 4, .. }])),
        "{right:?}"
    );
    let wrong = decide(&Proposal::Registry(confirm_action(&fp, 3)), &ctx, &state);
    let Err(DecideError::Rejected(r)) = wrong else { panic!("{wrong:?}") };
    assert_eq!(r.error.field(), Some("registration"));
}

//! The operators' commands that keep a key with its unit — register, deactivate, relocate — one
//! table each: from every state, by the owner and by a foreign operator, with the EVSE,
//! signing-unit and time rules. The setups' key is "k" of DE*ABC on
//! DE*ABC*E1, meter serial S1, from T0 (see `world.rs`); a case's new key is "n".

use super::world::Expect::{Accepted, Rejected};
use super::world::Kind::*;
use super::world::Then::*;
use super::world::Who::{Abc, Xyz};
use super::world::*;
use crate::command::{Action, NewKey};
use crate::event::EndReason::{self, *};
use crate::lifecycle::KeyState::{Active, Deactivated, Pending};
use crate::lifecycle::RejectCode::*;

pub(super) fn register(
    w: &mut World,
    name: &'static str,
    to: &[&str],
    serial: Option<&str>,
    from: Option<&str>,
) -> Action {
    let key = w.new_key(name, serial);
    Action::RegisterKey { key, evse_ids: evses(to), effective_at: from.map(t) }
}

/// Registers "n" with a key whose unit `edit` changes.
pub(super) fn register_unit(w: &mut World, to: &str, edit: fn(&mut NewKey)) -> Action {
    let mut key = w.new_key("n", None);
    edit(&mut key);
    Action::RegisterKey { key, evse_ids: evses(&[to]), effective_at: at(T0) }
}

pub(super) fn deactivate(w: &mut World, reason: EndReason, when: &str) -> Action {
    let fingerprint = w.fp("k");
    Action::DeactivateKey { fingerprint, reason, comment: "c".into(), effective_at: at(when) }
}

pub(super) fn relocate(w: &mut World, to: &[&str], when: &str) -> Action {
    let fingerprint = w.fp("k");
    Action::RelocateKey { fingerprint, evse_ids: evses(to), effective_at: at(when) }
}

pub(super) fn replace(
    w: &mut World,
    new: &'static str,
    serial: Option<&str>,
    when: &str,
) -> Action {
    let fingerprint = w.fp("k");
    let new_key = w.new_key(new, serial);
    Action::ReplaceKey { fingerprint, new_key, effective_at: at(when), comment: "c".into() }
}

/// Rotates "k" to "n", whose unit `edit` changes (by default no serial, manufacturer or model
/// is given: all are inherited).
pub(super) fn rotate(w: &mut World, when: &str, edit: fn(&mut NewKey)) -> Action {
    let fingerprint = w.fp("k");
    let mut new_key = w.new_key("n", None);
    new_key.manufacturer = String::new();
    new_key.model = String::new();
    edit(&mut new_key);
    Action::RotateKey { fingerprint, new_key, effective_at: at(when) }
}

pub(super) fn release(w: &mut World, to: &str) -> Action {
    let fingerprint = w.fp("k");
    Action::ReleaseKey { fingerprint, to_operator_id: op(to) }
}

pub(super) fn take_over(w: &mut World, to: &[&str], when: &str) -> Action {
    let fingerprint = w.fp("k");
    Action::TakeOverKey { fingerprint, evse_ids: evses(to), effective_at: at(when) }
}

/// Another key "other" of DE*ABC on DE*ABC*E2, meter serial S2, from T0, besides an active "k".
pub(super) fn active_and_other(w: &mut World) {
    active(w);
    w.register("other", "DE*ABC*E2", Some("S2"));
}

pub(super) const BACKWARDS: &str = "never go backwards";
pub(super) const TOO_FAR: &str = "minutes after the registry's time";
pub(super) const TAKEN: &str = "is bound to key";
pub(super) const UNIT_TAKEN: &str = "already has key";
pub(super) const NOT_OWNER: &str = "bound to operator DE*ABC, not DE*XYZ";

#[test]
fn register_key_binds_a_new_key_to_free_evses_of_its_own_operator() {
    check_table(&[
        Case {
            name: "an operator registers a key on its own EVSE, pending from its effective time",
            setup: nothing,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S1"), Some(T0)),
            expect: Accepted(
                &[KeyRegistered],
                &[
                    State("n", Pending),
                    Bound("n", "DE*ABC", &["DE*ABC*E1"], T0),
                    Unit("n", Some("S1"), "M", "X"),
                ],
            ),
        },
        Case {
            name: "a registration without an effective time starts when it was issued",
            setup: |w| w.issued_at = t(T2),
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S1"), None),
            expect: Accepted(&[KeyRegistered], &[Bound("n", "DE*ABC", &["DE*ABC*E1"], T2)]),
        },
        Case {
            name: "a registration may start as far ahead as the allowed clock skew",
            setup: nothing,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S1"), Some(EDGE)),
            expect: Accepted(&[KeyRegistered], &[Bound("n", "DE*ABC", &["DE*ABC*E1"], EDGE)]),
        },
        Case {
            name: "a registration starting further ahead is refused",
            setup: nothing,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S1"), Some(AHEAD)),
            expect: Rejected(InvalidArgument, Some("register_key.effective_at"), TOO_FAR),
        },
        Case {
            name: "a command issued too far ahead is refused on the effective time it implies",
            setup: |w| w.issued_at = t(AHEAD),
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S1"), None),
            expect: Rejected(InvalidArgument, Some("register_key.effective_at"), TOO_FAR),
        },
        Case {
            name: "an operator cannot register a key on another operator's EVSE",
            setup: nothing,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1", "DE*XYZ*E1"], Some("S1"), Some(T0)),
            expect: Rejected(
                PermissionDenied,
                Some("register_key.evse_ids[1]"),
                "belongs to operator DE*XYZ, not DE*ABC",
            ),
        },
        Case {
            name: "a deactivated key can never be registered again",
            setup: deactivated,
            signer: Abc,
            action: |w| register(w, "k", &["DE*ABC*E2"], Some("S2"), Some(T2)),
            expect: Rejected(
                AlreadyExists,
                Some("register_key.key.public_key"),
                "is already registered",
            ),
        },
        Case {
            name: "a rejected key can never be registered again",
            setup: rejected,
            signer: Abc,
            action: |w| register(w, "k", &["DE*ABC*E1"], Some("S1"), Some(T0)),
            expect: Rejected(
                AlreadyExists,
                Some("register_key.key.public_key"),
                "is already registered",
            ),
        },
        Case {
            name: "an EVSE bound to a pending key is taken",
            setup: pending,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E2", "DE*ABC*E1"], Some("S2"), Some(T1)),
            expect: Rejected(FailedPrecondition, Some("register_key.evse_ids[1]"), TAKEN),
        },
        Case {
            name: "an EVSE bound to an active key is taken",
            setup: active,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S2"), Some(T1)),
            expect: Rejected(FailedPrecondition, Some("register_key.evse_ids[0]"), TAKEN),
        },
        Case {
            name: "an EVSE is taken even before its key starts to serve",
            setup: |w| w.register_as(Abc, "k", "DE*ABC*E1", Some("S1"), T1),
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S2"), Some(T0)),
            expect: Rejected(FailedPrecondition, Some("register_key.evse_ids[0]"), TAKEN),
        },
        Case {
            name: "an EVSE is free from the end of its deactivated key on",
            setup: deactivated,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S2"), Some(T1)),
            expect: Accepted(&[KeyRegistered], &[Bound("n", "DE*ABC", &["DE*ABC*E1"], T1)]),
        },
        Case {
            name: "an EVSE is taken before the end of its deactivated key",
            setup: deactivated,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S2"), Some(MID)),
            expect: Rejected(FailedPrecondition, Some("register_key.evse_ids[0]"), "until"),
        },
        Case {
            name: "an EVSE of a rejected key is free",
            setup: rejected,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S2"), Some(T0)),
            expect: Accepted(&[KeyRegistered], &[State("n", Pending)]),
        },
        Case {
            name: "an EVSE is free from the time its key was relocated away",
            setup: relocated,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S2"), Some(T1)),
            expect: Accepted(&[KeyRegistered], &[Bound("n", "DE*ABC", &["DE*ABC*E1"], T1)]),
        },
        Case {
            name: "an EVSE is taken before its key was relocated away",
            setup: relocated,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S2"), Some(MID)),
            expect: Rejected(FailedPrecondition, Some("register_key.evse_ids[0]"), TAKEN),
        },
        Case {
            name: "the EVSE a key was relocated to is taken",
            setup: relocated,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E2"], Some("S2"), Some(T2)),
            expect: Rejected(FailedPrecondition, Some("register_key.evse_ids[0]"), TAKEN),
        },
        Case {
            name: "an EVSE is free from the time its key was taken over by another operator",
            setup: taken_over,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E1"], Some("S2"), Some(T1)),
            expect: Accepted(&[KeyRegistered], &[Bound("n", "DE*ABC", &["DE*ABC*E1"], T1)]),
        },
        Case {
            name: "a signing unit with a pending key is taken",
            setup: pending,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E2"], Some("S1"), Some(T1)),
            expect: Rejected(FailedPrecondition, Some("register_key.key.meter_serial"), UNIT_TAKEN),
        },
        Case {
            name: "a signing unit with an active key is taken",
            setup: active,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E2"], Some("S1"), Some(T1)),
            expect: Rejected(FailedPrecondition, Some("register_key.key.meter_serial"), UNIT_TAKEN),
        },
        Case {
            name: "a signing unit is taken by its gateway serial too",
            setup: |w| {
                let mut key = w.new_key("k", None);
                key.gateway_serial = Some("G1".into());
                let evse_ids = evses(&["DE*ABC*E1"]);
                w.run(Abc, Action::RegisterKey { key, evse_ids, effective_at: at(T0) });
            },
            signer: Abc,
            action: |w| register_unit(w, "DE*ABC*E2", |k| k.gateway_serial = Some("G1".into())),
            expect: Rejected(
                FailedPrecondition,
                Some("register_key.key.gateway_serial"),
                UNIT_TAKEN,
            ),
        },
        Case {
            name: "the same serial from another manufacturer is another signing unit",
            setup: active,
            signer: Abc,
            action: |w| {
                register_unit(w, "DE*ABC*E2", |k| {
                    k.meter_serial = Some("S1".into());
                    k.manufacturer = "N".into();
                })
            },
            expect: Accepted(&[KeyRegistered], &[Unit("n", Some("S1"), "N", "X")]),
        },
        Case {
            name: "a signing unit is free from the end of its deactivated key on",
            setup: deactivated,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E2"], Some("S1"), Some(T1)),
            expect: Accepted(
                &[KeyRegistered],
                &[State("n", Pending), State("k", Deactivated(Decommissioned))],
            ),
        },
        Case {
            name: "a signing unit is taken before the end of its deactivated key",
            setup: deactivated,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E2"], Some("S1"), Some(MID)),
            expect: Rejected(FailedPrecondition, Some("register_key.key.meter_serial"), UNIT_TAKEN),
        },
        Case {
            name: "a signing unit of a rejected key is free",
            setup: rejected,
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E2"], Some("S1"), Some(T0)),
            expect: Accepted(&[KeyRegistered], &[State("n", Pending)]),
        },
        Case {
            name: "keys without serials belong to no signing unit",
            setup: |w| w.register("k", "DE*ABC*E1", None),
            signer: Abc,
            action: |w| register(w, "n", &["DE*ABC*E2"], None, Some(T0)),
            expect: Accepted(&[KeyRegistered], &[Unit("n", None, "M", "X")]),
        },
    ]);
}

#[test]
fn deactivate_key_ends_an_open_key_of_the_signer() {
    check_table(&[
        Case {
            name: "an operator deactivates its pending key",
            setup: pending,
            signer: Abc,
            action: |w| deactivate(w, Decommissioned, T1),
            expect: Accepted(&[KeyEnded], &[State("k", Deactivated(Decommissioned))]),
        },
        Case {
            name: "an operator deactivates its active key as compromised",
            setup: active,
            signer: Abc,
            action: |w| deactivate(w, Compromised, T1),
            expect: Accepted(&[KeyEnded], &[State("k", Deactivated(Compromised))]),
        },
        Case {
            name: "an operator deactivates its key while it is released to another",
            setup: released,
            signer: Abc,
            action: |w| deactivate(w, Other, T1),
            expect: Accepted(&[KeyEnded], &[State("k", Deactivated(Other))]),
        },
        Case {
            name: "a deactivation may be dated at the registration itself",
            setup: active,
            signer: Abc,
            action: |w| deactivate(w, Decommissioned, T0),
            expect: Accepted(&[KeyEnded], &[State("k", Deactivated(Decommissioned))]),
        },
        Case {
            name: "a deactivated key cannot be deactivated again",
            setup: deactivated,
            signer: Abc,
            action: |w| deactivate(w, Decommissioned, T2),
            expect: Rejected(
                FailedPrecondition,
                Some("deactivate_key.fingerprint"),
                "the key is DEACTIVATED",
            ),
        },
        Case {
            name: "a rejected key cannot be deactivated",
            setup: rejected,
            signer: Abc,
            action: |w| deactivate(w, Decommissioned, T1),
            expect: Rejected(
                FailedPrecondition,
                Some("deactivate_key.fingerprint"),
                "the key is REJECTED",
            ),
        },
        Case {
            name: "an unknown key cannot be deactivated",
            setup: nothing,
            signer: Abc,
            action: |w| deactivate(w, Decommissioned, T1),
            expect: Rejected(FailedPrecondition, Some("deactivate_key.fingerprint"), "no key"),
        },
        Case {
            name: "a foreign operator cannot deactivate a key",
            setup: active,
            signer: Xyz,
            action: |w| deactivate(w, Decommissioned, T1),
            expect: Rejected(PermissionDenied, Some("deactivate_key.fingerprint"), NOT_OWNER),
        },
        Case {
            name: "a foreign operator is denied even a deactivated key",
            setup: deactivated,
            signer: Xyz,
            action: |w| deactivate(w, Decommissioned, T2),
            expect: Rejected(PermissionDenied, Some("deactivate_key.fingerprint"), NOT_OWNER),
        },
        Case {
            name: "the former operator cannot deactivate a key taken over",
            setup: taken_over,
            signer: Abc,
            action: |w| deactivate(w, Decommissioned, T2),
            expect: Rejected(
                PermissionDenied,
                Some("deactivate_key.fingerprint"),
                "bound to operator DE*XYZ, not DE*ABC",
            ),
        },
        Case {
            name: "the new operator deactivates a key it took over",
            setup: taken_over,
            signer: Xyz,
            action: |w| deactivate(w, Decommissioned, T2),
            expect: Accepted(&[KeyEnded], &[State("k", Deactivated(Decommissioned))]),
        },
        Case {
            name: "a deactivation dated before the registration is refused",
            setup: active,
            signer: Abc,
            action: |w| deactivate(w, Decommissioned, BEFORE),
            expect: Rejected(FailedPrecondition, Some("deactivate_key.effective_at"), BACKWARDS),
        },
        Case {
            name: "a deactivation dated before a relocation is refused",
            setup: relocated,
            signer: Abc,
            action: |w| deactivate(w, Decommissioned, MID),
            expect: Rejected(FailedPrecondition, Some("deactivate_key.effective_at"), BACKWARDS),
        },
        Case {
            name: "a deactivation dated before a takeover is refused",
            setup: taken_over,
            signer: Xyz,
            action: |w| deactivate(w, Decommissioned, MID),
            expect: Rejected(FailedPrecondition, Some("deactivate_key.effective_at"), BACKWARDS),
        },
        Case {
            name: "a deactivation too far ahead is refused",
            setup: active,
            signer: Abc,
            action: |w| deactivate(w, Decommissioned, AHEAD),
            expect: Rejected(InvalidArgument, Some("deactivate_key.effective_at"), TOO_FAR),
        },
    ]);
}

#[test]
fn relocate_key_moves_an_open_key_to_other_free_evses_of_its_operator() {
    check_table(&[
        Case {
            name: "an operator relocates its pending key",
            setup: pending,
            signer: Abc,
            action: |w| relocate(w, &["DE*ABC*E2"], T1),
            expect: Accepted(
                &[KeyRelocated],
                &[State("k", Pending), Bound("k", "DE*ABC", &["DE*ABC*E2"], T1)],
            ),
        },
        Case {
            name: "an operator relocates its active key",
            setup: active,
            signer: Abc,
            action: |w| relocate(w, &["DE*ABC*E2"], T1),
            expect: Accepted(
                &[KeyRelocated],
                &[State("k", Active), Bound("k", "DE*ABC", &["DE*ABC*E2"], T1)],
            ),
        },
        Case {
            name: "a key may keep its EVSE and gain another",
            setup: active,
            signer: Abc,
            action: |w| relocate(w, &["DE*ABC*E1", "DE*ABC*E2"], T1),
            expect: Accepted(
                &[KeyRelocated],
                &[Bound("k", "DE*ABC", &["DE*ABC*E1", "DE*ABC*E2"], T1)],
            ),
        },
        Case {
            name: "a relocation to exactly the current EVSE IDs is refused",
            setup: active,
            signer: Abc,
            action: |w| relocate(w, &["DE*ABC*E1"], T1),
            expect: Rejected(
                FailedPrecondition,
                Some("relocate_key.evse_ids"),
                "already bound to exactly these EVSE IDs",
            ),
        },
        Case {
            name: "a deactivated key cannot be relocated",
            setup: deactivated,
            signer: Abc,
            action: |w| relocate(w, &["DE*ABC*E2"], T2),
            expect: Rejected(
                FailedPrecondition,
                Some("relocate_key.fingerprint"),
                "the key is DEACTIVATED",
            ),
        },
        Case {
            name: "a rejected key cannot be relocated",
            setup: rejected,
            signer: Abc,
            action: |w| relocate(w, &["DE*ABC*E2"], T1),
            expect: Rejected(
                FailedPrecondition,
                Some("relocate_key.fingerprint"),
                "the key is REJECTED",
            ),
        },
        Case {
            name: "a foreign operator cannot relocate a key",
            setup: active,
            signer: Xyz,
            action: |w| relocate(w, &["DE*XYZ*E1"], T1),
            expect: Rejected(PermissionDenied, Some("relocate_key.fingerprint"), NOT_OWNER),
        },
        Case {
            name: "a key cannot be relocated onto another operator's EVSE",
            setup: active,
            signer: Abc,
            action: |w| relocate(w, &["DE*ABC*E2", "DE*XYZ*E1"], T1),
            expect: Rejected(
                PermissionDenied,
                Some("relocate_key.evse_ids[1]"),
                "belongs to operator DE*XYZ",
            ),
        },
        Case {
            name: "a key cannot be relocated onto an EVSE taken by another key",
            setup: active_and_other,
            signer: Abc,
            action: |w| relocate(w, &["DE*ABC*E2"], T1),
            expect: Rejected(FailedPrecondition, Some("relocate_key.evse_ids[0]"), TAKEN),
        },
        Case {
            name: "a key can be relocated onto an EVSE from the end of its deactivated key on",
            setup: |w| {
                active_and_other(w);
                w.deactivate("other", T1);
            },
            signer: Abc,
            action: |w| relocate(w, &["DE*ABC*E2"], T1),
            expect: Accepted(&[KeyRelocated], &[Bound("k", "DE*ABC", &["DE*ABC*E2"], T1)]),
        },
        Case {
            name: "a relocation dated before the registration is refused",
            setup: active,
            signer: Abc,
            action: |w| relocate(w, &["DE*ABC*E2"], BEFORE),
            expect: Rejected(FailedPrecondition, Some("relocate_key.effective_at"), BACKWARDS),
        },
        Case {
            name: "a relocation dated before an earlier relocation is refused",
            setup: relocated,
            signer: Abc,
            action: |w| relocate(w, &["DE*ABC*E3"], MID),
            expect: Rejected(FailedPrecondition, Some("relocate_key.effective_at"), BACKWARDS),
        },
        Case {
            name: "a relocation too far ahead is refused",
            setup: active,
            signer: Abc,
            action: |w| relocate(w, &["DE*ABC*E2"], AHEAD),
            expect: Rejected(InvalidArgument, Some("relocate_key.effective_at"), TOO_FAR),
        },
    ]);
}

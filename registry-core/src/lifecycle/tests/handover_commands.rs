//! The operators' commands that hand a key on — replace, rotate, release, take over — one table
//! each, with the same setups as `operator_commands.rs`.

use super::operator_commands::*;
use super::world::Expect::{Accepted, Rejected};
use super::world::Kind::*;
use super::world::Then::*;
use super::world::Who::{Abc, Xyz};
use super::world::*;
use crate::event::EndReason::*;
use crate::lifecycle::KeyState::{Active, Deactivated, Pending, Rejected as RejectedKey};
use crate::lifecycle::RejectCode::*;

const REPLACED: &[Kind] = &[KeyEnded, KeyRegistered];

#[test]
fn replace_key_ends_an_open_key_and_registers_a_new_unit_in_its_place() {
    check_table(&[
        Case {
            name: "an operator replaces its pending key",
            setup: pending,
            signer: Abc,
            action: |w| replace(w, "n", Some("S9"), T1),
            expect: Accepted(
                REPLACED,
                &[
                    State("k", Deactivated(Replaced)),
                    State("n", Pending),
                    SucceededBy("k", "n"),
                    Bound("n", "DE*ABC", &["DE*ABC*E1"], T1),
                    Unit("n", Some("S9"), "M", "X"),
                ],
            ),
        },
        Case {
            name: "an operator replaces its active key",
            setup: active,
            signer: Abc,
            action: |w| replace(w, "n", Some("S9"), T1),
            expect: Accepted(
                REPLACED,
                &[State("k", Deactivated(Replaced)), State("n", Pending), SucceededBy("k", "n")],
            ),
        },
        Case {
            name: "a replacement may keep the old key's signing unit",
            setup: active,
            signer: Abc,
            action: |w| replace(w, "n", Some("S1"), T1),
            expect: Accepted(REPLACED, &[Unit("n", Some("S1"), "M", "X")]),
        },
        Case {
            name: "a key taken over is replaced on its new operator's EVSE",
            setup: taken_over,
            signer: Xyz,
            action: |w| replace(w, "n", Some("S9"), T2),
            expect: Accepted(REPLACED, &[Bound("n", "DE*XYZ", &["DE*XYZ*E1"], T2)]),
        },
        Case {
            name: "a deactivated key cannot be replaced",
            setup: deactivated,
            signer: Abc,
            action: |w| replace(w, "n", Some("S9"), T2),
            expect: Rejected(
                FailedPrecondition,
                Some("replace_key.fingerprint"),
                "the key is DEACTIVATED",
            ),
        },
        Case {
            name: "a rejected key cannot be replaced",
            setup: rejected,
            signer: Abc,
            action: |w| replace(w, "n", Some("S9"), T1),
            expect: Rejected(
                FailedPrecondition,
                Some("replace_key.fingerprint"),
                "the key is REJECTED",
            ),
        },
        Case {
            name: "a foreign operator cannot replace a key",
            setup: active,
            signer: Xyz,
            action: |w| replace(w, "n", Some("S9"), T1),
            expect: Rejected(PermissionDenied, Some("replace_key.fingerprint"), NOT_OWNER),
        },
        Case {
            name: "a key cannot be replaced by one registered before",
            setup: active_and_other,
            signer: Abc,
            action: |w| replace(w, "other", Some("S9"), T1),
            expect: Rejected(
                AlreadyExists,
                Some("replace_key.new_key.public_key"),
                "is already registered",
            ),
        },
        Case {
            name: "a key cannot be replaced by itself",
            setup: active,
            signer: Abc,
            action: |w| replace(w, "k", Some("S1"), T1),
            expect: Rejected(
                AlreadyExists,
                Some("replace_key.new_key.public_key"),
                "is already registered",
            ),
        },
        Case {
            name: "a key cannot be replaced by a signing unit that has a key",
            setup: active_and_other,
            signer: Abc,
            action: |w| replace(w, "n", Some("S2"), T1),
            expect: Rejected(
                FailedPrecondition,
                Some("replace_key.new_key.meter_serial"),
                UNIT_TAKEN,
            ),
        },
        Case {
            name: "a replacement dated before the registration is refused",
            setup: active,
            signer: Abc,
            action: |w| replace(w, "n", Some("S9"), BEFORE),
            expect: Rejected(FailedPrecondition, Some("replace_key.effective_at"), BACKWARDS),
        },
        Case {
            name: "a replacement too far ahead is refused",
            setup: active,
            signer: Abc,
            action: |w| replace(w, "n", Some("S9"), AHEAD),
            expect: Rejected(InvalidArgument, Some("replace_key.effective_at"), TOO_FAR),
        },
    ]);
}

const ROTATED: &[Kind] = &[KeyEnded, KeyRegistered];

#[test]
fn rotate_key_gives_the_same_signing_unit_a_new_key() {
    check_table(&[
        Case {
            name: "an operator rotates its pending key and the new key inherits the unit",
            setup: pending,
            signer: Abc,
            action: |w| rotate(w, T1, |_| {}),
            expect: Accepted(
                ROTATED,
                &[
                    State("k", Deactivated(Rotated)),
                    State("n", Pending),
                    SucceededBy("k", "n"),
                    Bound("n", "DE*ABC", &["DE*ABC*E1"], T1),
                    Unit("n", Some("S1"), "M", "X"),
                ],
            ),
        },
        Case {
            name: "an operator rotates its active key",
            setup: active,
            signer: Abc,
            action: |w| rotate(w, T1, |_| {}),
            expect: Accepted(ROTATED, &[State("k", Deactivated(Rotated)), State("n", Pending)]),
        },
        Case {
            name: "a rotation may name the unit's own serial and manufacturer",
            setup: active,
            signer: Abc,
            action: |w| {
                rotate(w, T1, |k| {
                    k.meter_serial = Some("S1".into());
                    k.manufacturer = "M".into();
                })
            },
            expect: Accepted(ROTATED, &[Unit("n", Some("S1"), "M", "X")]),
        },
        Case {
            name: "a rotation may name a new model",
            setup: active,
            signer: Abc,
            action: |w| rotate(w, T1, |k| k.model = "Y".into()),
            expect: Accepted(ROTATED, &[Unit("n", Some("S1"), "M", "Y")]),
        },
        Case {
            name: "a rotation naming another meter serial is refused",
            setup: active,
            signer: Abc,
            action: |w| rotate(w, T1, |k| k.meter_serial = Some("S2".into())),
            expect: Rejected(
                InvalidArgument,
                Some("rotate_key.new_key.meter_serial"),
                "use replace_key",
            ),
        },
        Case {
            name: "a rotation naming a gateway serial the unit does not have is refused",
            setup: active,
            signer: Abc,
            action: |w| rotate(w, T1, |k| k.gateway_serial = Some("G9".into())),
            expect: Rejected(
                InvalidArgument,
                Some("rotate_key.new_key.gateway_serial"),
                "use replace_key",
            ),
        },
        Case {
            name: "a rotation naming another manufacturer is refused",
            setup: active,
            signer: Abc,
            action: |w| rotate(w, T1, |k| k.manufacturer = "N".into()),
            expect: Rejected(
                InvalidArgument,
                Some("rotate_key.new_key.manufacturer"),
                "use replace_key",
            ),
        },
        Case {
            name: "a deactivated key cannot be rotated",
            setup: deactivated,
            signer: Abc,
            action: |w| rotate(w, T2, |_| {}),
            expect: Rejected(
                FailedPrecondition,
                Some("rotate_key.fingerprint"),
                "the key is DEACTIVATED",
            ),
        },
        Case {
            name: "a rejected key cannot be rotated",
            setup: rejected,
            signer: Abc,
            action: |w| rotate(w, T1, |_| {}),
            expect: Rejected(
                FailedPrecondition,
                Some("rotate_key.fingerprint"),
                "the key is REJECTED",
            ),
        },
        Case {
            name: "a foreign operator cannot rotate a key",
            setup: active,
            signer: Xyz,
            action: |w| rotate(w, T1, |_| {}),
            expect: Rejected(PermissionDenied, Some("rotate_key.fingerprint"), NOT_OWNER),
        },
        Case {
            name: "a key cannot be rotated to one registered before",
            setup: |w| {
                active(w);
                w.register("n", "DE*ABC*E2", Some("S2"));
            },
            signer: Abc,
            action: |w| rotate(w, T1, |_| {}),
            expect: Rejected(
                AlreadyExists,
                Some("rotate_key.new_key.public_key"),
                "is already registered",
            ),
        },
        Case {
            name: "a rotation dated before a relocation is refused",
            setup: relocated,
            signer: Abc,
            action: |w| rotate(w, MID, |_| {}),
            expect: Rejected(FailedPrecondition, Some("rotate_key.effective_at"), BACKWARDS),
        },
        Case {
            name: "a rotation too far ahead is refused",
            setup: active,
            signer: Abc,
            action: |w| rotate(w, AHEAD, |_| {}),
            expect: Rejected(InvalidArgument, Some("rotate_key.effective_at"), TOO_FAR),
        },
    ]);
}

#[test]
fn release_key_opens_an_open_key_to_another_existing_operator() {
    check_table(&[
        Case {
            name: "an operator releases its pending key and keeps it until the takeover",
            setup: pending,
            signer: Abc,
            action: |w| release(w, "DE*XYZ"),
            expect: Accepted(
                &[KeyReleased],
                &[
                    State("k", Pending),
                    ReleasedTo("k", Some("DE*XYZ")),
                    Bound("k", "DE*ABC", &["DE*ABC*E1"], T0),
                ],
            ),
        },
        Case {
            name: "an operator releases its active key",
            setup: active,
            signer: Abc,
            action: |w| release(w, "DE*XYZ"),
            expect: Accepted(
                &[KeyReleased],
                &[State("k", Active), ReleasedTo("k", Some("DE*XYZ"))],
            ),
        },
        Case {
            name: "a later release replaces the open one",
            setup: |w| {
                released(w);
                third_operator(w);
            },
            signer: Abc,
            action: |w| release(w, "DE*QQQ"),
            expect: Accepted(&[KeyReleased], &[ReleasedTo("k", Some("DE*QQQ"))]),
        },
        Case {
            name: "a key cannot be released to its own operator",
            setup: active,
            signer: Abc,
            action: |w| release(w, "DE*ABC"),
            expect: Rejected(
                InvalidArgument,
                Some("release_key.to_operator_id"),
                "its own operator",
            ),
        },
        Case {
            name: "a key cannot be released to an unknown operator",
            setup: active,
            signer: Abc,
            action: |w| release(w, "DE*NOP"),
            expect: Rejected(
                FailedPrecondition,
                Some("release_key.to_operator_id"),
                "no operator DE*NOP",
            ),
        },
        Case {
            name: "a deactivated key cannot be released",
            setup: deactivated,
            signer: Abc,
            action: |w| release(w, "DE*XYZ"),
            expect: Rejected(
                FailedPrecondition,
                Some("release_key.fingerprint"),
                "the key is DEACTIVATED",
            ),
        },
        Case {
            name: "a rejected key cannot be released",
            setup: rejected,
            signer: Abc,
            action: |w| release(w, "DE*XYZ"),
            expect: Rejected(
                FailedPrecondition,
                Some("release_key.fingerprint"),
                "the key is REJECTED",
            ),
        },
        Case {
            name: "a foreign operator cannot release a key, not even to itself",
            setup: active,
            signer: Xyz,
            action: |w| release(w, "DE*XYZ"),
            expect: Rejected(PermissionDenied, Some("release_key.fingerprint"), NOT_OWNER),
        },
    ]);
}

#[test]
fn take_over_key_moves_a_released_key_to_the_operator_it_was_released_to() {
    check_table(&[
        Case {
            name: "an operator takes over a pending key released to it",
            setup: released_pending,
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1"], T1),
            expect: Accepted(
                &[KeyTakenOver],
                &[
                    State("k", Pending),
                    Bound("k", "DE*XYZ", &["DE*XYZ*E1"], T1),
                    ReleasedTo("k", None),
                ],
            ),
        },
        Case {
            name: "an operator takes over an active key released to it",
            setup: released,
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1"], T1),
            expect: Accepted(
                &[KeyTakenOver],
                &[State("k", Active), Bound("k", "DE*XYZ", &["DE*XYZ*E1"], T1)],
            ),
        },
        Case {
            name: "a key never released cannot be taken over",
            setup: active,
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1"], T1),
            expect: Rejected(
                PermissionDenied,
                Some("take_over_key.fingerprint"),
                "not released to operator DE*XYZ",
            ),
        },
        Case {
            name: "a key released to a third operator cannot be taken over",
            setup: |w| {
                active(w);
                third_operator(w);
                w.release("k", "DE*QQQ");
            },
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1"], T1),
            expect: Rejected(
                PermissionDenied,
                Some("take_over_key.fingerprint"),
                "not released to operator DE*XYZ",
            ),
        },
        Case {
            name: "only the latest release counts",
            setup: |w| {
                released(w);
                third_operator(w);
                w.release("k", "DE*QQQ");
            },
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1"], T1),
            expect: Rejected(
                PermissionDenied,
                Some("take_over_key.fingerprint"),
                "not released to operator DE*XYZ",
            ),
        },
        Case {
            name: "the releasing operator cannot take its own key over",
            setup: released,
            signer: Abc,
            action: |w| take_over(w, &["DE*ABC*E2"], T1),
            expect: Rejected(
                PermissionDenied,
                Some("take_over_key.fingerprint"),
                "not released to operator DE*ABC",
            ),
        },
        Case {
            name: "a release is used up by its takeover",
            setup: taken_over,
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E2"], T2),
            expect: Rejected(
                PermissionDenied,
                Some("take_over_key.fingerprint"),
                "not released to operator DE*XYZ",
            ),
        },
        Case {
            name: "a released key deactivated since cannot be taken over",
            setup: |w| {
                released(w);
                w.deactivate("k", T1);
            },
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1"], T1),
            expect: Rejected(
                FailedPrecondition,
                Some("take_over_key.fingerprint"),
                "the key is DEACTIVATED",
            ),
        },
        Case {
            name: "a released key rejected since cannot be taken over",
            setup: |w| {
                released_pending(w);
                w.reject("k");
            },
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1"], T1),
            expect: Rejected(
                FailedPrecondition,
                Some("take_over_key.fingerprint"),
                "the key is REJECTED",
            ),
        },
        Case {
            name: "an unknown key cannot be taken over",
            setup: nothing,
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1"], T1),
            expect: Rejected(FailedPrecondition, Some("take_over_key.fingerprint"), "no key"),
        },
        Case {
            name: "a key cannot be taken over onto another operator's EVSE",
            setup: released,
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1", "DE*ABC*E9"], T1),
            expect: Rejected(
                PermissionDenied,
                Some("take_over_key.evse_ids[1]"),
                "belongs to operator DE*ABC, not DE*XYZ",
            ),
        },
        Case {
            name: "a key cannot be taken over onto an EVSE taken by another key",
            setup: |w| {
                released(w);
                w.register_as(Xyz, "other", "DE*XYZ*E1", Some("S2"), T0);
            },
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1"], T1),
            expect: Rejected(FailedPrecondition, Some("take_over_key.evse_ids[0]"), TAKEN),
        },
        Case {
            name: "a takeover dated before the registration is refused",
            setup: released,
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1"], BEFORE),
            expect: Rejected(FailedPrecondition, Some("take_over_key.effective_at"), BACKWARDS),
        },
        Case {
            name: "a takeover dated before a relocation is refused",
            setup: |w| {
                relocated(w);
                w.release("k", "DE*XYZ");
            },
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1"], MID),
            expect: Rejected(FailedPrecondition, Some("take_over_key.effective_at"), BACKWARDS),
        },
        Case {
            name: "a takeover too far ahead is refused",
            setup: released,
            signer: Xyz,
            action: |w| take_over(w, &["DE*XYZ*E1"], AHEAD),
            expect: Rejected(InvalidArgument, Some("take_over_key.effective_at"), TOO_FAR),
        },
    ]);
}

#[test]
fn a_rejected_key_stays_rejected_and_frees_its_evse_and_unit_for_a_new_key() {
    // The table rows above check each freedom alone; here both at once, and the old key's state.
    check_table(&[Case {
        name: "a new key takes over the EVSE and unit of a rejected one",
        setup: rejected,
        signer: Abc,
        action: |w| register(w, "n", &["DE*ABC*E1"], Some("S1"), Some(T0)),
        expect: Accepted(
            &[KeyRegistered],
            &[
                State("k", RejectedKey),
                State("n", Pending),
                Bound("n", "DE*ABC", &["DE*ABC*E1"], T0),
            ],
        ),
    }]);
}

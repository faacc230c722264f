//! The administrators' commands, one table each: signing keys of administrators and operators,
//! operators, confirmation and rejection of pending keys, and the forced takeover.

use super::world::Expect::{Accepted, Rejected};
use super::world::Kind::*;
use super::world::Then::*;
use super::world::Who::Admin;
use super::world::*;
use crate::command::Action;
use crate::event::EndReason::*;
use crate::lifecycle::KeyState::{Active, Deactivated, Pending, Rejected as RejectedKey};
use crate::lifecycle::RejectCode::*;

fn add_admin_key(w: &mut World, key: &'static str) -> Action {
    Action::AddAdminKey { public_key: w.spki(key), label: key.into() }
}

fn revoke_admin_key(w: &mut World, key: &'static str) -> Action {
    Action::RevokeAdminKey { key_id: w.key_id(key) }
}

fn add_operator(w: &mut World, id: &str, keys: &[&'static str]) -> Action {
    let public_keys = keys.iter().map(|k| w.spki(k)).collect();
    Action::AddOperator { operator_id: op(id), name: "Q".into(), public_keys }
}

fn add_operator_key(w: &mut World, id: &str, key: &'static str) -> Action {
    Action::AddOperatorKey { operator_id: op(id), public_key: w.spki(key) }
}

fn revoke_operator_key(w: &mut World, id: &str, key: &'static str) -> Action {
    Action::RevokeOperatorKey { operator_id: op(id), key_id: w.key_id(key) }
}

fn confirm(w: &mut World, name: &'static str) -> Action {
    Action::ConfirmKey { fingerprint: w.fp(name) }
}

fn reject(w: &mut World) -> Action {
    Action::RejectKey { fingerprint: w.fp("k"), reason: "implausible".into() }
}

fn force(w: &mut World, to: &str, onto: &[&str], when: &str) -> Action {
    Action::ForceTakeOver {
        fingerprint: w.fp("k"),
        operator_id: op(to),
        evse_ids: evses(onto),
        effective_at: at(when),
    }
}

const NOT_AN_ADMIN: &str = "is not an active administrator key";

#[test]
fn add_admin_key_adds_a_key_that_never_signed_for_anyone() {
    check_table(&[
        Case {
            name: "an administrator adds an administrator key",
            setup: nothing,
            signer: Admin,
            action: |w| add_admin_key(w, "admin2"),
            expect: Accepted(
                &[AdminKeyAdded],
                &[Signer("admin2", SignerIs::Admin), Signer("admin", SignerIs::Admin), Admins(2)],
            ),
        },
        Case {
            name: "an active administrator key cannot be added again",
            setup: nothing,
            signer: Admin,
            action: |w| add_admin_key(w, "admin"),
            expect: Rejected(
                AlreadyExists,
                Some("add_admin_key.public_key"),
                "already signs for an administrator",
            ),
        },
        Case {
            name: "a revoked administrator key cannot come back",
            setup: nothing,
            signer: Admin,
            action: |w| add_admin_key(w, "revoked admin"),
            expect: Rejected(
                AlreadyExists,
                Some("add_admin_key.public_key"),
                "already signs for an administrator",
            ),
        },
        Case {
            name: "an operator's key cannot become an administrator key",
            setup: nothing,
            signer: Admin,
            action: |w| add_admin_key(w, "abc"),
            expect: Rejected(
                AlreadyExists,
                Some("add_admin_key.public_key"),
                "already signs for operator DE*ABC",
            ),
        },
        Case {
            name: "a revoked operator key cannot become an administrator key",
            setup: nothing,
            signer: Admin,
            action: |w| add_admin_key(w, "revoked abc"),
            expect: Rejected(
                AlreadyExists,
                Some("add_admin_key.public_key"),
                "already signs for operator DE*ABC",
            ),
        },
    ]);
}

#[test]
fn revoke_admin_key_revokes_an_active_administrator_key_but_never_the_last() {
    check_table(&[
        Case {
            name: "an administrator revokes another administrator key",
            setup: |w| w.add_admin("admin2"),
            signer: Admin,
            action: |w| revoke_admin_key(w, "admin2"),
            expect: Accepted(
                &[AdminKeyRevoked],
                &[Signer("admin2", SignerIs::Revoked), Signer("admin", SignerIs::Admin), Admins(1)],
            ),
        },
        Case {
            name: "an administrator revokes its own key while another remains",
            setup: |w| w.add_admin("admin2"),
            signer: Admin,
            action: |w| revoke_admin_key(w, "admin"),
            expect: Accepted(
                &[AdminKeyRevoked],
                &[Signer("admin", SignerIs::Revoked), Signer("admin2", SignerIs::Admin), Admins(1)],
            ),
        },
        Case {
            name: "the last administrator key cannot be revoked",
            setup: nothing,
            signer: Admin,
            action: |w| revoke_admin_key(w, "admin"),
            expect: Rejected(
                FailedPrecondition,
                Some("revoke_admin_key.key_id"),
                "is the last administrator key",
            ),
        },
        Case {
            name: "the last administrator key cannot be revoked after the others were",
            setup: |w| {
                w.add_admin("admin2");
                let revoke = revoke_admin_key(w, "admin2");
                w.run(Admin, revoke);
            },
            signer: Admin,
            action: |w| revoke_admin_key(w, "admin"),
            expect: Rejected(
                FailedPrecondition,
                Some("revoke_admin_key.key_id"),
                "is the last administrator key",
            ),
        },
        Case {
            name: "a revoked administrator key cannot be revoked again",
            setup: nothing,
            signer: Admin,
            action: |w| revoke_admin_key(w, "revoked admin"),
            expect: Rejected(FailedPrecondition, Some("revoke_admin_key.key_id"), NOT_AN_ADMIN),
        },
        Case {
            name: "an operator key cannot be revoked as an administrator key",
            setup: nothing,
            signer: Admin,
            action: |w| revoke_admin_key(w, "abc"),
            expect: Rejected(FailedPrecondition, Some("revoke_admin_key.key_id"), NOT_AN_ADMIN),
        },
        Case {
            name: "an unknown key cannot be revoked as an administrator key",
            setup: nothing,
            signer: Admin,
            action: |w| revoke_admin_key(w, "stranger"),
            expect: Rejected(FailedPrecondition, Some("revoke_admin_key.key_id"), NOT_AN_ADMIN),
        },
    ]);
}

#[test]
fn add_operator_adds_a_new_operator_with_keys_that_never_signed() {
    check_table(&[
        Case {
            name: "an administrator adds an operator with its signing keys",
            setup: nothing,
            signer: Admin,
            action: |w| add_operator(w, "DE*QQQ", &["qqq", "qqq2"]),
            expect: Accepted(
                &[OperatorAdded],
                &[
                    Operator("DE*QQQ", 2),
                    Signer("qqq", SignerIs::Operator("DE*QQQ")),
                    Signer("qqq2", SignerIs::Operator("DE*QQQ")),
                ],
            ),
        },
        Case {
            name: "an existing operator cannot be added again",
            setup: nothing,
            signer: Admin,
            action: |w| add_operator(w, "DE*ABC", &["qqq"]),
            expect: Rejected(
                AlreadyExists,
                Some("add_operator.operator_id"),
                "operator DE*ABC already exists",
            ),
        },
        Case {
            name: "an operator's key named twice is refused",
            setup: nothing,
            signer: Admin,
            action: |w| add_operator(w, "DE*QQQ", &["qqq", "qqq"]),
            expect: Rejected(InvalidArgument, Some("add_operator.public_keys[1]"), "named twice"),
        },
        Case {
            name: "a new operator cannot share another operator's key",
            setup: nothing,
            signer: Admin,
            action: |w| add_operator(w, "DE*QQQ", &["qqq", "xyz"]),
            expect: Rejected(
                AlreadyExists,
                Some("add_operator.public_keys[1]"),
                "already signs for operator DE*XYZ",
            ),
        },
        Case {
            name: "a new operator cannot get a revoked key",
            setup: nothing,
            signer: Admin,
            action: |w| add_operator(w, "DE*QQQ", &["revoked abc"]),
            expect: Rejected(
                AlreadyExists,
                Some("add_operator.public_keys[0]"),
                "already signs for operator DE*ABC",
            ),
        },
        Case {
            name: "a new operator cannot get an administrator key",
            setup: nothing,
            signer: Admin,
            action: |w| add_operator(w, "DE*QQQ", &["admin"]),
            expect: Rejected(
                AlreadyExists,
                Some("add_operator.public_keys[0]"),
                "already signs for an administrator",
            ),
        },
    ]);
}

#[test]
fn operator_keys_are_added_to_existing_operators_and_revoked_only_by_their_operator_id() {
    check_table(&[
        Case {
            name: "an administrator adds a key to an operator",
            setup: nothing,
            signer: Admin,
            action: |w| add_operator_key(w, "DE*ABC", "abc2"),
            expect: Accepted(
                &[OperatorKeyAdded],
                &[
                    Signer("abc2", SignerIs::Operator("DE*ABC")),
                    Signer("abc", SignerIs::Operator("DE*ABC")),
                    // abc, the revoked key of the setup, abc2
                    Operator("DE*ABC", 3),
                ],
            ),
        },
        Case {
            name: "a key cannot be added to an unknown operator",
            setup: nothing,
            signer: Admin,
            action: |w| add_operator_key(w, "DE*QQQ", "qqq"),
            expect: Rejected(
                FailedPrecondition,
                Some("add_operator_key.operator_id"),
                "no operator DE*QQQ",
            ),
        },
        Case {
            name: "another operator's key cannot be added to an operator",
            setup: nothing,
            signer: Admin,
            action: |w| add_operator_key(w, "DE*ABC", "xyz"),
            expect: Rejected(
                AlreadyExists,
                Some("add_operator_key.public_key"),
                "already signs for operator DE*XYZ",
            ),
        },
        Case {
            name: "a revoked operator key cannot come back",
            setup: nothing,
            signer: Admin,
            action: |w| add_operator_key(w, "DE*ABC", "revoked abc"),
            expect: Rejected(
                AlreadyExists,
                Some("add_operator_key.public_key"),
                "already signs for operator DE*ABC",
            ),
        },
        Case {
            name: "an administrator key cannot be added to an operator",
            setup: nothing,
            signer: Admin,
            action: |w| add_operator_key(w, "DE*ABC", "admin"),
            expect: Rejected(
                AlreadyExists,
                Some("add_operator_key.public_key"),
                "already signs for an administrator",
            ),
        },
        Case {
            name: "an administrator revokes an operator's key, even its last active one",
            setup: nothing,
            signer: Admin,
            action: |w| revoke_operator_key(w, "DE*ABC", "abc"),
            expect: Accepted(
                &[OperatorKeyRevoked],
                &[Signer("abc", SignerIs::Revoked), Operator("DE*ABC", 2)],
            ),
        },
        Case {
            name: "a key of another operator cannot be revoked under this one",
            setup: nothing,
            signer: Admin,
            action: |w| revoke_operator_key(w, "DE*ABC", "xyz"),
            expect: Rejected(
                FailedPrecondition,
                Some("revoke_operator_key.key_id"),
                "is not an active key of operator DE*ABC",
            ),
        },
        Case {
            name: "a revoked operator key cannot be revoked again",
            setup: nothing,
            signer: Admin,
            action: |w| revoke_operator_key(w, "DE*ABC", "revoked abc"),
            expect: Rejected(
                FailedPrecondition,
                Some("revoke_operator_key.key_id"),
                "is not an active key of operator DE*ABC",
            ),
        },
        Case {
            name: "an administrator key cannot be revoked as an operator key",
            setup: nothing,
            signer: Admin,
            action: |w| revoke_operator_key(w, "DE*ABC", "admin"),
            expect: Rejected(
                FailedPrecondition,
                Some("revoke_operator_key.key_id"),
                "is not an active key of operator DE*ABC",
            ),
        },
        Case {
            name: "an unknown key cannot be revoked as an operator key",
            setup: nothing,
            signer: Admin,
            action: |w| revoke_operator_key(w, "DE*ABC", "stranger"),
            expect: Rejected(
                FailedPrecondition,
                Some("revoke_operator_key.key_id"),
                "is not an active key of operator DE*ABC",
            ),
        },
        Case {
            name: "a key cannot be revoked under an unknown operator",
            setup: nothing,
            signer: Admin,
            action: |w| revoke_operator_key(w, "DE*QQQ", "abc"),
            expect: Rejected(
                FailedPrecondition,
                Some("revoke_operator_key.key_id"),
                "is not an active key of operator DE*QQQ",
            ),
        },
    ]);
}

const NOT_PUBLISHED: &str = "not yet published in a signed checkpoint";

#[test]
fn confirm_key_activates_a_pending_key_only_once_its_registration_is_published() {
    check_table(&[
        Case {
            name: "an administrator confirms a published pending key",
            setup: |w| {
                pending(w);
                w.publish();
            },
            signer: Admin,
            action: |w| confirm(w, "k"),
            expect: Accepted(&[KeyConfirmed], &[State("k", Active)]),
        },
        Case {
            name: "a registration not yet published cannot be confirmed",
            setup: pending,
            signer: Admin,
            action: |w| confirm(w, "k"),
            expect: Rejected(FailedPrecondition, Some("confirm_key.fingerprint"), NOT_PUBLISHED),
        },
        Case {
            name: "a checkpoint that ends just before the registration does not publish it",
            setup: |w| {
                pending(w);
                w.published = w.position - 1;
            },
            signer: Admin,
            action: |w| confirm(w, "k"),
            expect: Rejected(FailedPrecondition, Some("confirm_key.fingerprint"), NOT_PUBLISHED),
        },
        Case {
            name: "a key relocated while pending is confirmed all the same",
            setup: |w| {
                pending(w);
                w.relocate("k", &["DE*ABC*E2"]);
                w.publish();
            },
            signer: Admin,
            action: |w| confirm(w, "k"),
            expect: Accepted(
                &[KeyConfirmed],
                &[State("k", Active), Bound("k", "DE*ABC", &["DE*ABC*E2"], T1)],
            ),
        },
        Case {
            name: "the new key of a replacement is confirmed once published",
            setup: |w| {
                active(w);
                let fingerprint = w.fp("k");
                let new_key = w.new_key("n", Some("S9"));
                w.run(
                    Who::Abc,
                    Action::ReplaceKey {
                        fingerprint,
                        new_key,
                        effective_at: at(T1),
                        comment: String::new(),
                    },
                );
                w.publish();
            },
            signer: Admin,
            action: |w| confirm(w, "n"),
            expect: Accepted(
                &[KeyConfirmed],
                &[State("n", Active), State("k", Deactivated(Replaced))],
            ),
        },
        Case {
            name: "an active key cannot be confirmed again",
            setup: active,
            signer: Admin,
            action: |w| confirm(w, "k"),
            expect: Rejected(
                FailedPrecondition,
                Some("confirm_key.fingerprint"),
                "the key is ACTIVE, not PENDING",
            ),
        },
        Case {
            name: "a key deactivated while pending cannot be confirmed",
            setup: |w| {
                pending(w);
                w.deactivate("k", T1);
                w.publish();
            },
            signer: Admin,
            action: |w| confirm(w, "k"),
            expect: Rejected(
                FailedPrecondition,
                Some("confirm_key.fingerprint"),
                "the key is DEACTIVATED, not PENDING",
            ),
        },
        Case {
            name: "a rejected key cannot be confirmed",
            setup: |w| {
                rejected(w);
                w.publish();
            },
            signer: Admin,
            action: |w| confirm(w, "k"),
            expect: Rejected(
                FailedPrecondition,
                Some("confirm_key.fingerprint"),
                "the key is REJECTED, not PENDING",
            ),
        },
        Case {
            name: "an unknown key cannot be confirmed",
            setup: nothing,
            signer: Admin,
            action: |w| confirm(w, "k"),
            expect: Rejected(FailedPrecondition, Some("confirm_key.fingerprint"), "no key"),
        },
    ]);
}

#[test]
fn reject_key_refuses_a_pending_key_for_good() {
    check_table(&[
        Case {
            name: "an administrator rejects a pending key",
            setup: |w| {
                pending(w);
                w.publish();
            },
            signer: Admin,
            action: reject,
            expect: Accepted(&[KeyRejected], &[State("k", RejectedKey)]),
        },
        Case {
            name: "a pending key may be rejected before it is published",
            setup: pending,
            signer: Admin,
            action: reject,
            expect: Accepted(&[KeyRejected], &[State("k", RejectedKey)]),
        },
        Case {
            name: "an active key cannot be rejected",
            setup: active,
            signer: Admin,
            action: reject,
            expect: Rejected(
                FailedPrecondition,
                Some("reject_key.fingerprint"),
                "the key is ACTIVE, only PENDING registrations can be rejected",
            ),
        },
        Case {
            name: "a deactivated key cannot be rejected",
            setup: deactivated,
            signer: Admin,
            action: reject,
            expect: Rejected(
                FailedPrecondition,
                Some("reject_key.fingerprint"),
                "the key is DEACTIVATED",
            ),
        },
        Case {
            name: "a rejected key cannot be rejected again",
            setup: rejected,
            signer: Admin,
            action: reject,
            expect: Rejected(
                FailedPrecondition,
                Some("reject_key.fingerprint"),
                "the key is REJECTED",
            ),
        },
        Case {
            name: "an unknown key cannot be rejected",
            setup: nothing,
            signer: Admin,
            action: reject,
            expect: Rejected(FailedPrecondition, Some("reject_key.fingerprint"), "no key"),
        },
    ]);
}

#[test]
fn force_take_over_moves_an_open_key_to_another_operator_without_release() {
    check_table(&[
        Case {
            name: "an administrator forces a pending key over to another operator",
            setup: pending,
            signer: Admin,
            action: |w| force(w, "DE*XYZ", &["DE*XYZ*E1"], T1),
            expect: Accepted(
                &[KeyTakenOver],
                &[State("k", Pending), Bound("k", "DE*XYZ", &["DE*XYZ*E1"], T1)],
            ),
        },
        Case {
            name: "an administrator forces an active key over to another operator",
            setup: active,
            signer: Admin,
            action: |w| force(w, "DE*XYZ", &["DE*XYZ*E1"], T1),
            expect: Accepted(
                &[KeyTakenOver],
                &[State("k", Active), Bound("k", "DE*XYZ", &["DE*XYZ*E1"], T1)],
            ),
        },
        Case {
            name: "a forced takeover closes an open release",
            setup: |w| {
                released(w);
                third_operator(w);
            },
            signer: Admin,
            action: |w| force(w, "DE*QQQ", &["DE*QQQ*E1"], T1),
            expect: Accepted(
                &[KeyTakenOver],
                &[ReleasedTo("k", None), Bound("k", "DE*QQQ", &["DE*QQQ*E1"], T1)],
            ),
        },
        Case {
            name: "a deactivated key cannot be forced over",
            setup: deactivated,
            signer: Admin,
            action: |w| force(w, "DE*XYZ", &["DE*XYZ*E1"], T2),
            expect: Rejected(
                FailedPrecondition,
                Some("force_take_over.fingerprint"),
                "the key is DEACTIVATED",
            ),
        },
        Case {
            name: "a rejected key cannot be forced over",
            setup: rejected,
            signer: Admin,
            action: |w| force(w, "DE*XYZ", &["DE*XYZ*E1"], T1),
            expect: Rejected(
                FailedPrecondition,
                Some("force_take_over.fingerprint"),
                "the key is REJECTED",
            ),
        },
        Case {
            name: "an unknown key cannot be forced over",
            setup: nothing,
            signer: Admin,
            action: |w| force(w, "DE*XYZ", &["DE*XYZ*E1"], T1),
            expect: Rejected(FailedPrecondition, Some("force_take_over.fingerprint"), "no key"),
        },
        Case {
            name: "a key cannot be forced over to an unknown operator",
            setup: active,
            signer: Admin,
            action: |w| force(w, "DE*NOP", &["DE*NOP*E1"], T1),
            expect: Rejected(
                FailedPrecondition,
                Some("force_take_over.operator_id"),
                "no operator DE*NOP",
            ),
        },
        Case {
            name: "a key cannot be forced over to the operator it is bound to",
            setup: active,
            signer: Admin,
            action: |w| force(w, "DE*ABC", &["DE*ABC*E2"], T1),
            expect: Rejected(
                FailedPrecondition,
                Some("force_take_over.operator_id"),
                "use relocate_key",
            ),
        },
        Case {
            name: "a key cannot be forced onto EVSE IDs of another operator than the new one",
            setup: active,
            signer: Admin,
            action: |w| force(w, "DE*XYZ", &["DE*XYZ*E1", "DE*ABC*E2"], T1),
            expect: Rejected(
                InvalidArgument,
                Some("force_take_over.evse_ids[1]"),
                "belongs to operator DE*ABC, not DE*XYZ",
            ),
        },
        Case {
            name: "a key cannot be forced onto an EVSE taken by another key",
            setup: |w| {
                active(w);
                w.register_as(Who::Xyz, "other", "DE*XYZ*E1", Some("S2"), T0);
            },
            signer: Admin,
            action: |w| force(w, "DE*XYZ", &["DE*XYZ*E1"], T1),
            expect: Rejected(
                FailedPrecondition,
                Some("force_take_over.evse_ids[0]"),
                "is bound to key",
            ),
        },
        Case {
            name: "a forced takeover dated before the registration is refused",
            setup: active,
            signer: Admin,
            action: |w| force(w, "DE*XYZ", &["DE*XYZ*E1"], BEFORE),
            expect: Rejected(
                FailedPrecondition,
                Some("force_take_over.effective_at"),
                "never go backwards",
            ),
        },
        Case {
            name: "a forced takeover dated before a relocation is refused",
            setup: relocated,
            signer: Admin,
            action: |w| force(w, "DE*XYZ", &["DE*XYZ*E1"], MID),
            expect: Rejected(
                FailedPrecondition,
                Some("force_take_over.effective_at"),
                "never go backwards",
            ),
        },
        Case {
            name: "a forced takeover too far ahead is refused",
            setup: active,
            signer: Admin,
            action: |w| force(w, "DE*XYZ", &["DE*XYZ*E1"], AHEAD),
            expect: Rejected(
                InvalidArgument,
                Some("force_take_over.effective_at"),
                "minutes after the registry's time",
            ),
        },
    ]);
}

//! Who may sign what: every command against every kind of signer, signing keys that come and go,
//! and the entries the registry appends on its own.

use super::world::Expect::{Accepted, Rejected};
use super::world::Kind::*;
use super::world::Then::*;
use super::world::*;
use crate::command::Action;
use crate::event::EndReason;
use crate::lifecycle::KeyState::{Active, Pending};
use crate::lifecycle::RegistryAction;
use crate::lifecycle::RejectCode::*;

/// A command with a target it may act on, the signer who may order it, and what it appends.
struct Row {
    setup: fn(&mut World),
    action: fn(&mut World) -> Action,
    owner: Who,
    events: &'static [Kind],
    /// Field and words of the refusal when an operator other than the owner signs.
    foreign: (&'static str, &'static str),
}

const ADMIN_ONLY: (&str, &str) = ("", "");
const NOT_ABCS: &str = "bound to operator DE*ABC, not DE*XYZ";

fn rows() -> Vec<Row> {
    vec![
        Row {
            setup: nothing,
            action: |w| Action::AddAdminKey { public_key: w.spki("admin2"), label: "2".into() },
            owner: Who::Admin,
            events: &[AdminKeyAdded],
            foreign: ADMIN_ONLY,
        },
        Row {
            setup: |w| w.add_admin("admin2"),
            action: |w| Action::RevokeAdminKey { key_id: w.key_id("admin2") },
            owner: Who::Admin,
            events: &[AdminKeyRevoked],
            foreign: ADMIN_ONLY,
        },
        Row {
            setup: nothing,
            action: |w| Action::AddOperator {
                operator_id: op("DE*QQQ"),
                name: "Q".into(),
                public_keys: vec![w.spki("qqq")],
            },
            owner: Who::Admin,
            events: &[OperatorAdded],
            foreign: ADMIN_ONLY,
        },
        Row {
            setup: nothing,
            action: |w| Action::AddOperatorKey {
                operator_id: op("DE*ABC"),
                public_key: w.spki("abc2"),
            },
            owner: Who::Admin,
            events: &[OperatorKeyAdded],
            foreign: ADMIN_ONLY,
        },
        Row {
            setup: |w| {
                let public_key = w.spki("abc2");
                w.run(Who::Admin, Action::AddOperatorKey { operator_id: op("DE*ABC"), public_key });
            },
            action: |w| Action::RevokeOperatorKey {
                operator_id: op("DE*ABC"),
                key_id: w.key_id("abc2"),
            },
            owner: Who::Admin,
            events: &[OperatorKeyRevoked],
            foreign: ADMIN_ONLY,
        },
        Row {
            setup: |w| {
                pending(w);
                w.publish();
            },
            action: |w| Action::ConfirmKey { fingerprint: w.fp("k") },
            owner: Who::Admin,
            events: &[KeyConfirmed],
            foreign: ADMIN_ONLY,
        },
        Row {
            setup: pending,
            action: |w| Action::RejectKey { fingerprint: w.fp("k"), reason: "no".into() },
            owner: Who::Admin,
            events: &[KeyRejected],
            foreign: ADMIN_ONLY,
        },
        Row {
            setup: active,
            action: |w| Action::ForceTakeOver {
                fingerprint: w.fp("k"),
                operator_id: op("DE*XYZ"),
                evse_ids: evses(&["DE*XYZ*E1"]),
                effective_at: at(T1),
            },
            owner: Who::Admin,
            events: &[KeyTakenOver],
            foreign: ADMIN_ONLY,
        },
        Row {
            setup: nothing,
            action: |w| Action::RegisterKey {
                key: w.new_key("n", Some("S1")),
                evse_ids: evses(&["DE*ABC*E1"]),
                effective_at: at(T0),
            },
            owner: Who::Abc,
            events: &[KeyRegistered],
            foreign: ("register_key.evse_ids[0]", "belongs to operator DE*ABC, not DE*XYZ"),
        },
        Row {
            setup: active,
            action: |w| Action::DeactivateKey {
                fingerprint: w.fp("k"),
                reason: EndReason::Decommissioned,
                comment: String::new(),
                effective_at: at(T1),
            },
            owner: Who::Abc,
            events: &[KeyEnded],
            foreign: ("deactivate_key.fingerprint", NOT_ABCS),
        },
        Row {
            setup: active,
            action: |w| Action::RelocateKey {
                fingerprint: w.fp("k"),
                evse_ids: evses(&["DE*ABC*E2"]),
                effective_at: at(T1),
            },
            owner: Who::Abc,
            events: &[KeyRelocated],
            foreign: ("relocate_key.fingerprint", NOT_ABCS),
        },
        Row {
            setup: active,
            action: |w| Action::ReplaceKey {
                fingerprint: w.fp("k"),
                new_key: w.new_key("n", Some("S9")),
                effective_at: at(T1),
                comment: String::new(),
            },
            owner: Who::Abc,
            events: &[KeyEnded, KeyRegistered],
            foreign: ("replace_key.fingerprint", NOT_ABCS),
        },
        Row {
            setup: active,
            action: |w| Action::RotateKey {
                fingerprint: w.fp("k"),
                new_key: w.new_key("n", None),
                effective_at: at(T1),
            },
            owner: Who::Abc,
            events: &[KeyEnded, KeyRegistered],
            foreign: ("rotate_key.fingerprint", NOT_ABCS),
        },
        Row {
            setup: active,
            action: |w| Action::ReleaseKey { fingerprint: w.fp("k"), to_operator_id: op("DE*XYZ") },
            owner: Who::Abc,
            events: &[KeyReleased],
            foreign: ("release_key.fingerprint", NOT_ABCS),
        },
        Row {
            setup: released,
            action: |w| Action::TakeOverKey {
                fingerprint: w.fp("k"),
                evse_ids: evses(&["DE*XYZ*E1"]),
                effective_at: at(T1),
            },
            owner: Who::Xyz,
            events: &[KeyTakenOver],
            foreign: ("take_over_key.fingerprint", "not released to operator DE*ABC"),
        },
    ]
}

/// What `who` signing the row's command must lead to.
fn expected(row: &Row, admin_command: bool, who: Who) -> Expect {
    match who {
        Who::Stranger => Rejected(Unauthenticated, SIGNER, "not known to the registry"),
        Who::RevokedAdmin | Who::RevokedAbc => Rejected(Unauthenticated, SIGNER, "was revoked"),
        _ if who == row.owner => Accepted(row.events, &[]),
        Who::Admin => Rejected(
            PermissionDenied,
            None,
            "is an operator command; administrators act on keys only through force_take_over",
        ),
        _ if admin_command => Rejected(PermissionDenied, None, "only registry administrators may"),
        _ => Rejected(PermissionDenied, Some(row.foreign.0), row.foreign.1),
    }
}

#[test]
fn every_command_is_allowed_only_for_its_rightful_signer() {
    let rows = rows();
    let mut commands = std::collections::BTreeSet::new();
    let mut results = Vec::new();
    for row in &rows {
        for who in EVERYONE {
            let mut w = World::new();
            (row.setup)(&mut w);
            let action = (row.action)(&mut w);
            let (name, admin_command) = (action.name(), action.is_admin());
            commands.insert(name);
            let expect = expected(row, admin_command, who);
            let wrong = outcome(&mut w, |w| w.submit(who, action), &expect);
            results.push((format!("{name} signed by {who:?}"), wrong));
        }
    }
    assert_eq!(commands.len(), 15, "every command has a row: {commands:?}");
    report(rows.len() * EVERYONE.len(), results);
}

#[test]
fn a_revoked_operator_key_stops_signing_while_the_operators_other_keys_go_on() {
    let mut w = World::new();
    let public_key = w.spki("abc2");
    w.run(Who::Admin, Action::AddOperatorKey { operator_id: op("DE*ABC"), public_key });
    let register = |w: &mut World, name: &'static str, evse: &str, serial: &str| {
        let key = w.new_key(name, Some(serial));
        Action::RegisterKey { key, evse_ids: evses(&[evse]), effective_at: at(T0) }
    };
    let first = register(&mut w, "k", "DE*ABC*E1", "S1");
    let ok = outcome(&mut w, |w| w.submit(Who::Abc2, first), &Accepted(&[KeyRegistered], &[]));
    assert_eq!(ok, None, "a new key signs at once");

    let key_id = w.key_id("abc2");
    w.run(Who::Admin, Action::RevokeOperatorKey { operator_id: op("DE*ABC"), key_id });
    let second = register(&mut w, "n", "DE*ABC*E2", "S2");
    let refused = Rejected(Unauthenticated, SIGNER, "was revoked");
    assert_eq!(outcome(&mut w, |w| w.submit(Who::Abc2, second.clone()), &refused), None);

    let accepted =
        Accepted(&[KeyRegistered], &[State("n", Pending), Signer("abc2", SignerIs::Revoked)]);
    assert_eq!(outcome(&mut w, |w| w.submit(Who::Abc, second), &accepted), None);
}

#[test]
fn an_administrator_that_revoked_its_own_key_can_no_longer_sign_and_the_other_can() {
    let mut w = World::new();
    w.add_admin("admin2");
    let key_id = w.key_id("admin");
    w.run(Who::Admin, Action::RevokeAdminKey { key_id });
    let add =
        |w: &mut World| Action::AddAdminKey { public_key: w.spki("admin3"), label: "3".into() };

    let action = add(&mut w);
    let refused = Rejected(Unauthenticated, SIGNER, "was revoked");
    assert_eq!(outcome(&mut w, |w| w.submit(Who::Admin, action), &refused), None);

    let action = add(&mut w);
    let accepted = Accepted(&[AdminKeyAdded], &[Signer("admin3", SignerIs::Admin), Admins(2)]);
    assert_eq!(outcome(&mut w, |w| w.submit(Who::Admin2, action), &accepted), None);
}

/// A registry action on a world made by `world`.
struct RegistryCase {
    name: &'static str,
    world: fn() -> World,
    action: fn(&mut World) -> RegistryAction,
    expect: Expect,
}

fn published_pending() -> World {
    let mut w = World::new();
    pending(&mut w);
    w.publish();
    w
}

fn auto_confirm(w: &mut World) -> RegistryAction {
    let record = w.record("k").expect("the key of the setup");
    RegistryAction::AutoConfirm { fingerprint: w.fp("k"), registration: record.registered_at() }
}

#[test]
fn the_registry_bootstraps_only_an_empty_log_and_confirms_only_what_is_published() {
    let cases = [
        RegistryCase {
            name: "the bootstrap of an empty registry adds its administrators",
            world: World::empty,
            action: |w| RegistryAction::Bootstrap {
                admins: vec![(w.spki("admin"), "a".into()), (w.spki("admin2"), "b".into())],
            },
            expect: Accepted(
                &[AdminKeyAdded, AdminKeyAdded],
                &[Admins(2), Signer("admin", SignerIs::Admin), Signer("admin2", SignerIs::Admin)],
            ),
        },
        RegistryCase {
            name: "a registry with administrators is never bootstrapped again",
            world: World::new,
            action: |w| RegistryAction::Bootstrap { admins: vec![(w.spki("admin2"), "b".into())] },
            expect: Rejected(FailedPrecondition, Some("admin_keys"), "already has administrators"),
        },
        RegistryCase {
            name: "a bootstrap naming no administrator is refused",
            world: World::empty,
            action: |_| RegistryAction::Bootstrap { admins: vec![] },
            expect: Rejected(InvalidArgument, Some("admin_keys"), "at least one administrator"),
        },
        RegistryCase {
            name: "the registry confirms a published registration by itself",
            world: published_pending,
            action: auto_confirm,
            expect: Accepted(&[KeyConfirmed], &[State("k", Active)]),
        },
        RegistryCase {
            name: "the registry does not confirm a registration before it is published",
            world: || {
                let mut w = World::new();
                pending(&mut w);
                w
            },
            action: auto_confirm,
            expect: Rejected(FailedPrecondition, Some("fingerprint"), "not yet published"),
        },
        RegistryCase {
            name: "an automatic confirmation must name the registration of its key",
            world: published_pending,
            action: |w| match auto_confirm(w) {
                RegistryAction::AutoConfirm { fingerprint, registration } => {
                    RegistryAction::AutoConfirm { fingerprint, registration: registration - 1 }
                }
                other => other,
            },
            expect: Rejected(FailedPrecondition, Some("registration"), "is not the registration"),
        },
        RegistryCase {
            name: "the registry does not confirm a key an administrator rejected",
            world: || {
                let mut w = World::new();
                rejected(&mut w);
                w.publish();
                w
            },
            action: auto_confirm,
            expect: Rejected(FailedPrecondition, Some("fingerprint"), "REJECTED, not PENDING"),
        },
        RegistryCase {
            name: "the registry does not confirm an unknown key",
            world: World::new,
            action: |w| RegistryAction::AutoConfirm { fingerprint: w.fp("k"), registration: 1 },
            expect: Rejected(FailedPrecondition, Some("fingerprint"), "no key"),
        },
    ];
    report(
        cases.len(),
        cases.iter().map(|c| {
            let mut w = (c.world)();
            let action = (c.action)(&mut w);
            (c.name.to_string(), outcome(&mut w, |w| w.registry(action), &c.expect))
        }),
    );
}

//! The fixture: a registry whose state is built only by the rules themselves. Every command goes
//! through `decide` and then `apply`, as the server's writer does, and the world keeps its log so
//! that a case can check an auditor re-deriving it would reach the same state.

use std::collections::BTreeMap;

use crate::command::{Action, Command, NewKey, SignedCommand};
use crate::entry::{EntryBody, EntryHeader, ZERO_HASH};
use crate::event::{EndReason, Event};
use crate::ids::{EvseId, OperatorId};
use crate::keys::P256KeyPair;
use crate::lifecycle::{
    DecideContext, DecideError, KeyRecord, KeyState, MemoryState, Policy, Proposal, RegistryAction,
    RejectCode, Rejection, Role, apply, decide, links,
};
use crate::meter_key::MeterKey;
use crate::time::{self, Time};

/// The registry's time when it decides.
pub(super) const NOW: &str = "2026-03-01T00:00:00Z";
/// When the keys of a setup start to serve.
pub(super) const T0: &str = "2026-01-01T00:00:00Z";
/// Between T0 and T1.
pub(super) const MID: &str = "2026-01-15T00:00:00Z";
/// When setups date later events (deactivation, relocation, release, takeover).
pub(super) const T1: &str = "2026-02-01T00:00:00Z";
/// After T1, still in the past.
pub(super) const T2: &str = "2026-02-15T00:00:00Z";
/// Before every key of a setup.
pub(super) const BEFORE: &str = "2025-12-01T00:00:00Z";
/// Exactly the allowed clock skew (five minutes) after NOW: still accepted.
pub(super) const EDGE: &str = "2026-03-01T00:05:00Z";
/// One microsecond past the allowed skew: too far ahead.
pub(super) const AHEAD: &str = "2026-03-01T00:05:00.000001Z";

/// The fields of the refusals, spelled once.
pub(super) const SIGNER: Option<&str> = Some("command.signer_key_id");

pub(super) fn t(s: &str) -> Time {
    time::parse(s).expect("a test time in RFC 3339")
}

pub(super) fn at(s: &str) -> Option<Time> {
    Some(t(s))
}

pub(super) fn op(s: &str) -> OperatorId {
    OperatorId::parse(s).expect("a test operator ID")
}

pub(super) fn evses(ids: &[&str]) -> Vec<EvseId> {
    ids.iter().map(|s| EvseId::parse(s).expect("a test EVSE ID")).collect()
}

/// Who signs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Who {
    /// The bootstrapped administrator.
    Admin,
    /// Operator DE*ABC, which registers the keys of the setups.
    Abc,
    /// Operator DE*XYZ.
    Xyz,
    /// A key the registry never heard of.
    Stranger,
    /// An administrator key that was added and revoked.
    RevokedAdmin,
    /// A key of DE*ABC that was added and revoked.
    RevokedAbc,
    /// A second key of DE*ABC, unknown until a setup adds it.
    Abc2,
    /// A second administrator key, unknown until a setup adds it.
    Admin2,
}

/// Every signer a command meets in the matrix.
pub(super) const EVERYONE: [Who; 6] =
    [Who::Admin, Who::Abc, Who::Xyz, Who::Stranger, Who::RevokedAdmin, Who::RevokedAbc];

impl Who {
    /// The name of its key in [`World::signer`].
    pub(super) fn key(self) -> &'static str {
        match self {
            Who::Admin => "admin",
            Who::Abc => "abc",
            Who::Xyz => "xyz",
            Who::Stranger => "stranger",
            Who::RevokedAdmin => "revoked admin",
            Who::RevokedAbc => "revoked abc",
            Who::Abc2 => "abc2",
            Who::Admin2 => "admin2",
        }
    }
}

/// The kind of an event, for comparing decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    AdminKeyAdded,
    AdminKeyRevoked,
    OperatorAdded,
    OperatorKeyAdded,
    OperatorKeyRevoked,
    KeyRegistered,
    KeyConfirmed,
    KeyRejected,
    KeyEnded,
    KeyRelocated,
    KeyReleased,
    KeyTakenOver,
}

pub(super) fn kind(e: &Event) -> Kind {
    match e {
        Event::AdminKeyAdded { .. } => Kind::AdminKeyAdded,
        Event::AdminKeyRevoked { .. } => Kind::AdminKeyRevoked,
        Event::OperatorAdded { .. } => Kind::OperatorAdded,
        Event::OperatorKeyAdded { .. } => Kind::OperatorKeyAdded,
        Event::OperatorKeyRevoked { .. } => Kind::OperatorKeyRevoked,
        Event::KeyRegistered(_) => Kind::KeyRegistered,
        Event::KeyConfirmed { .. } => Kind::KeyConfirmed,
        Event::KeyRejected { .. } => Kind::KeyRejected,
        Event::KeyEnded { .. } => Kind::KeyEnded,
        Event::KeyRelocated { .. } => Kind::KeyRelocated,
        Event::KeyReleased { .. } => Kind::KeyReleased,
        Event::KeyTakenOver { .. } => Kind::KeyTakenOver,
    }
}

/// What a signing key is after the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SignerIs {
    Admin,
    Operator(&'static str),
    Revoked,
    Unknown,
}

/// Something that must hold after an accepted command was applied. Meter keys and signing keys
/// are named as in [`World::meter`] and [`World::signer`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Then {
    /// The meter key is in this state.
    State(&'static str, KeyState),
    /// The meter key's latest binding: operator, EVSE IDs, and since when.
    Bound(&'static str, &'static str, &'static [&'static str], &'static str),
    /// The operator the meter key is released to, if any.
    ReleasedTo(&'static str, Option<&'static str>),
    /// The first key's successor is the second, whose predecessor is the first.
    SucceededBy(&'static str, &'static str),
    /// The meter key's signing unit: meter serial, manufacturer, model.
    Unit(&'static str, Option<&'static str>, &'static str, &'static str),
    /// The signing key's role, or that it is revoked or unknown.
    Signer(&'static str, SignerIs),
    /// How many administrator keys are active.
    Admins(usize),
    /// The operator exists, with this many command-signing keys ever.
    Operator(&'static str, usize),
}

/// What a command must lead to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Expect {
    /// Accepted with these events, after which these hold.
    Accepted(&'static [Kind], &'static [Then]),
    /// Refused with this class, on this field, with a rule containing these words.
    Rejected(RejectCode, Option<&'static str>, &'static str),
}

/// One row of a table.
pub(super) struct Case {
    pub name: &'static str,
    pub setup: fn(&mut World),
    pub signer: Who,
    pub action: fn(&mut World) -> Action,
    pub expect: Expect,
}

/// An appended entry with what decided it, so the log can be re-derived.
struct Logged {
    proposal: Proposal,
    ctx: DecideContext,
    header: EntryHeader,
    body: EntryBody,
}

/// A registry in memory: the state, the next log position, the published size, and the keys.
pub(super) struct World {
    pub state: MemoryState,
    /// Position of the next entry.
    pub position: u64,
    /// Size covered by a signed checkpoint.
    pub published: u64,
    /// The registry's time.
    pub now: Time,
    /// The issue time of the next commands.
    pub issued_at: Time,
    signers: BTreeMap<&'static str, P256KeyPair>,
    meters: BTreeMap<&'static str, MeterKey>,
    log: Vec<Logged>,
}

impl World {
    /// An empty registry, with nothing bootstrapped.
    pub(super) fn empty() -> Self {
        Self {
            state: MemoryState::default(),
            position: 0,
            published: 0,
            now: t(NOW),
            issued_at: t(NOW),
            signers: BTreeMap::new(),
            meters: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// A registry with administrator `admin`, operators DE*ABC (key `abc`) and DE*XYZ (key
    /// `xyz`), a revoked key of DE*ABC and a revoked administrator key; all published.
    pub(super) fn new() -> Self {
        let mut w = Self::empty();
        let admin = w.spki("admin");
        w.registry(RegistryAction::Bootstrap { admins: vec![(admin, "admin".into())] })
            .expect("the bootstrap of an empty registry");
        w.add_operator("DE*ABC", "abc");
        w.add_operator("DE*XYZ", "xyz");
        let revoked = w.spki("revoked abc");
        w.run(
            Who::Admin,
            Action::AddOperatorKey { operator_id: op("DE*ABC"), public_key: revoked },
        );
        let key_id = w.key_id("revoked abc");
        w.run(Who::Admin, Action::RevokeOperatorKey { operator_id: op("DE*ABC"), key_id });
        w.add_admin("revoked admin");
        let key_id = w.key_id("revoked admin");
        w.run(Who::Admin, Action::RevokeAdminKey { key_id });
        w.publish();
        w
    }

    /// A command-signing key by name, made on first use (and unknown to the registry until a
    /// command adds it).
    pub(super) fn signer(&mut self, name: &'static str) -> P256KeyPair {
        self.signers.entry(name).or_insert_with(P256KeyPair::generate).clone()
    }

    /// DER SubjectPublicKeyInfo of a named signing key.
    pub(super) fn spki(&mut self, name: &'static str) -> Vec<u8> {
        self.signer(name).public_key_der().to_vec()
    }

    /// Fingerprint of a named signing key.
    pub(super) fn key_id(&mut self, name: &'static str) -> [u8; 32] {
        self.signer(name).fingerprint()
    }

    /// A meter key by name, made on first use.
    pub(super) fn meter(&mut self, name: &'static str) -> MeterKey {
        self.meters
            .entry(name)
            .or_insert_with(|| {
                let pair = P256KeyPair::generate();
                MeterKey::from_spki_der(pair.public_key_der()).expect("a P-256 key is a meter key")
            })
            .clone()
    }

    /// The fingerprint of a named meter key.
    pub(super) fn fp(&mut self, name: &'static str) -> String {
        self.meter(name).fingerprint
    }

    /// A named meter key of a signing unit by manufacturer "M", model "X".
    pub(super) fn new_key(&mut self, name: &'static str, serial: Option<&str>) -> Box<NewKey> {
        let key = self.meter(name);
        Box::new(NewKey {
            submitted: hex::encode(&key.spki_der),
            key,
            meter_serial: serial.map(str::to_string),
            gateway_serial: None,
            manufacturer: "M".into(),
            model: "X".into(),
            sample_signed_meter_value: None,
        })
    }

    /// The record of a named meter key.
    pub(super) fn record(&mut self, name: &'static str) -> Option<KeyRecord> {
        let fp = self.fp(name);
        self.state.keys.get(&fp).map(|r| KeyRecord::clone(r))
    }

    pub(super) fn ctx(&self) -> DecideContext {
        DecideContext { now: self.now, published_size: self.published, policy: Policy::default() }
    }

    /// Everything appended so far is covered by a signed checkpoint.
    pub(super) fn publish(&mut self) {
        self.published = self.position;
    }

    fn proposal(&mut self, who: Who, action: Action) -> Proposal {
        let signer = self.signer(who.key());
        let command =
            Command { request_id: uuid::Uuid::now_v7(), issued_at: self.issued_at, action };
        // `decide` looks up the signer and does not verify the signature (the edge does): the
        // signed bytes only need to exist.
        let envelope =
            SignedCommand::sign(command.request_id.as_bytes().to_vec(), "lifecycle.test", &signer);
        Proposal::Signed { envelope, command }
    }

    fn decide_and_apply(&mut self, proposal: Proposal) -> Result<Vec<Event>, Rejection> {
        let ctx = self.ctx();
        let events = decide(&proposal, &ctx, &self.state).map_err(|e| match e {
            DecideError::Rejected(r) => r,
            DecideError::State(never) => match never {},
        })?;
        let (request_id, command) = match &proposal {
            Proposal::Signed { envelope, command } => (command.request_id, Some(envelope.clone())),
            Proposal::Registry(action) => (action.request_id().0, None),
        };
        let links = links(&events, &self.state).expect("memory never fails");
        let header = EntryHeader {
            position: self.position,
            recorded_at: self.now + chrono::TimeDelta::microseconds(self.position as i64),
            prev_hash: ZERO_HASH,
        };
        let body = EntryBody { request_id, command, events: events.clone(), links };
        apply(&header, &body, &mut self.state).expect("an accepted decision applies");
        self.position += 1;
        self.log.push(Logged { proposal, ctx, header, body });
        Ok(events)
    }

    /// Decides a command signed by `who` and, if accepted, appends and applies its entry.
    pub(super) fn submit(&mut self, who: Who, action: Action) -> Result<Vec<Event>, Rejection> {
        let proposal = self.proposal(who, action);
        self.decide_and_apply(proposal)
    }

    /// Decides a registry action and, if accepted, appends and applies its entry.
    pub(super) fn registry(&mut self, action: RegistryAction) -> Result<Vec<Event>, Rejection> {
        self.decide_and_apply(Proposal::Registry(action))
    }

    /// A setup step that must be accepted.
    pub(super) fn run(&mut self, who: Who, action: Action) -> Vec<Event> {
        let name = action.name();
        self.submit(who, action).unwrap_or_else(|r| panic!("setup {name} by {who:?}: {r}"))
    }

    /// Re-derives the log from scratch as an auditor would: every entry decided again against the
    /// state before it gives the same events, and applying them gives the same state.
    pub(super) fn replay(&self) -> Result<(), String> {
        let mut state = MemoryState::default();
        for logged in &self.log {
            let again = decide(&logged.proposal, &logged.ctx, &state).map_err(|e| {
                format!("entry {} is refused on replay: {e:?}", logged.header.position)
            })?;
            if again != logged.body.events {
                return Err(format!(
                    "entry {} decides differently on replay",
                    logged.header.position
                ));
            }
            apply(&logged.header, &logged.body, &mut state).expect("a replayed entry applies");
        }
        match state == self.state {
            true => Ok(()),
            false => Err("the replayed state differs".into()),
        }
    }

    // Setup steps, each through the rules.

    pub(super) fn add_admin(&mut self, key: &'static str) {
        let public_key = self.spki(key);
        self.run(Who::Admin, Action::AddAdminKey { public_key, label: key.into() });
    }

    pub(super) fn add_operator(&mut self, id: &str, key: &'static str) {
        let public_keys = vec![self.spki(key)];
        self.run(
            Who::Admin,
            Action::AddOperator { operator_id: op(id), name: id.into(), public_keys },
        );
    }

    /// Registers a meter key for DE*ABC from T0.
    pub(super) fn register(&mut self, name: &'static str, evse: &str, serial: Option<&str>) {
        self.register_as(Who::Abc, name, evse, serial, T0);
    }

    pub(super) fn register_as(
        &mut self,
        who: Who,
        name: &'static str,
        evse: &str,
        serial: Option<&str>,
        from: &str,
    ) {
        let key = self.new_key(name, serial);
        self.run(
            who,
            Action::RegisterKey { key, evse_ids: evses(&[evse]), effective_at: at(from) },
        );
    }

    /// Publishes everything, then an administrator confirms the key.
    pub(super) fn confirm(&mut self, name: &'static str) {
        self.publish();
        let fingerprint = self.fp(name);
        self.run(Who::Admin, Action::ConfirmKey { fingerprint });
    }

    pub(super) fn reject(&mut self, name: &'static str) {
        let fingerprint = self.fp(name);
        self.run(Who::Admin, Action::RejectKey { fingerprint, reason: "implausible".into() });
    }

    /// DE*ABC decommissions the key at `when`.
    pub(super) fn deactivate(&mut self, name: &'static str, when: &str) {
        let fingerprint = self.fp(name);
        self.run(
            Who::Abc,
            Action::DeactivateKey {
                fingerprint,
                reason: EndReason::Decommissioned,
                comment: String::new(),
                effective_at: at(when),
            },
        );
    }

    /// DE*ABC relocates the key at T1.
    pub(super) fn relocate(&mut self, name: &'static str, to: &[&str]) {
        let fingerprint = self.fp(name);
        self.run(
            Who::Abc,
            Action::RelocateKey { fingerprint, evse_ids: evses(to), effective_at: at(T1) },
        );
    }

    /// DE*ABC releases the key to `to`.
    pub(super) fn release(&mut self, name: &'static str, to: &str) {
        let fingerprint = self.fp(name);
        self.run(Who::Abc, Action::ReleaseKey { fingerprint, to_operator_id: op(to) });
    }

    /// DE*XYZ takes the key over at T1.
    pub(super) fn take_over(&mut self, name: &'static str, evse: &str) {
        let fingerprint = self.fp(name);
        self.run(
            Who::Xyz,
            Action::TakeOverKey { fingerprint, evse_ids: evses(&[evse]), effective_at: at(T1) },
        );
    }

    /// Whether `then` holds.
    pub(super) fn check(&mut self, then: &Then) -> Result<(), String> {
        let key = |w: &mut World, name: &'static str| {
            w.record(name).ok_or_else(|| format!("meter key {name:?} is not registered"))
        };
        let same = |what: String, got: String, want: String| match got == want {
            true => Ok(()),
            false => Err(format!("{what}: expected {want}, got {got}")),
        };
        match *then {
            Then::State(name, want) => {
                let got = key(self, name)?.now().state();
                same(format!("state of {name}"), format!("{got:?}"), format!("{want:?}"))
            }
            Then::Bound(name, operator, evse_ids, from) => {
                let b = key(self, name)?.now().last_binding();
                let got = (b.operator_id, b.evse_ids, b.from, b.until);
                let want = (op(operator), evses(evse_ids), t(from), None::<Time>);
                same(format!("binding of {name}"), format!("{got:?}"), format!("{want:?}"))
            }
            Then::ReleasedTo(name, want) => {
                let record = key(self, name)?;
                let got = record.now().released_to().cloned();
                same(
                    format!("release of {name}"),
                    format!("{got:?}"),
                    format!("{:?}", want.map(op)),
                )
            }
            Then::SucceededBy(old, new) => {
                let (old_fp, new_fp) = (self.fp(old), self.fp(new));
                let old_record = key(self, old)?;
                let new_record = key(self, new)?;
                same(
                    format!("succession {old} -> {new}"),
                    format!(
                        "{:?} {:?}",
                        old_record.now().successor(),
                        new_record.registration.predecessor
                    ),
                    format!("{:?} {:?}", Some(&new_fp), Some(&old_fp)),
                )
            }
            Then::Unit(name, serial, manufacturer, model) => {
                let r = key(self, name)?.registration;
                same(
                    format!("signing unit of {name}"),
                    format!("{:?} {} {}", r.meter_serial, r.manufacturer, r.model),
                    format!("{:?} {manufacturer} {model}", serial.map(str::to_string)),
                )
            }
            Then::Signer(name, want) => {
                let key_id = self.key_id(name);
                let got = match self.state.signers.get(&key_id) {
                    None => SignerIs::Unknown,
                    Some(s) if s.revoked_position.is_some() => SignerIs::Revoked,
                    Some(s) => match &s.role {
                        Role::Admin => SignerIs::Admin,
                        Role::Operator(o) => {
                            match ["DE*ABC", "DE*XYZ", "DE*QQQ"].into_iter().find(|id| op(id) == *o)
                            {
                                Some(id) => SignerIs::Operator(id),
                                None => return Err(format!("{name} signs for {o:?}")),
                            }
                        }
                    },
                };
                let admin = self.state.admins.as_deref().unwrap_or_default().contains(&key_id);
                if admin != (got == SignerIs::Admin) {
                    return Err(format!("{name} is {got:?} but in the admin list: {admin}"));
                }
                same(format!("signing key {name}"), format!("{got:?}"), format!("{want:?}"))
            }
            Then::Admins(n) => {
                let got = self.state.admins.as_ref().map_or(0, Vec::len);
                same("active administrators".into(), got.to_string(), n.to_string())
            }
            Then::Operator(id, keys) => {
                let got = self.state.operators.get(&op(id)).map(|o| o.keys.len());
                same(format!("operator {id}"), format!("{got:?}"), format!("{:?}", Some(keys)))
            }
        }
    }
}

/// Submits one command or action to a world already set up: `None` when it went as expected,
/// else what went wrong. A refusal must leave the state as it was; an acceptance must append one
/// entry, satisfy every [`Then`], and replay to the same state.
pub(super) fn outcome(
    w: &mut World,
    submit: impl FnOnce(&mut World) -> Result<Vec<Event>, Rejection>,
    expect: &Expect,
) -> Option<String> {
    let (before, position) = (w.state.clone(), w.position);
    let got = submit(w);
    let mut wrong = Vec::new();
    match (expect, got) {
        (Expect::Accepted(kinds, thens), Ok(events)) => {
            let got: Vec<Kind> = events.iter().map(kind).collect();
            if got != *kinds {
                wrong.push(format!("events {got:?}, expected {kinds:?}"));
            }
            if w.position != position + 1 {
                wrong.push("not exactly one entry appended".into());
            }
            wrong.extend(thens.iter().filter_map(|then| w.check(then).err()));
            wrong.extend(w.replay().err());
        }
        (Expect::Rejected(code, field, words), Err(r)) => {
            if (r.code, r.error.field()) != (*code, *field) {
                wrong.push(format!(
                    "refused {:?} on {:?}, expected {code:?} on {field:?}: {r}",
                    r.code,
                    r.error.field()
                ));
            }
            if !r.error.rule.contains(words) {
                wrong.push(format!("rule {:?} does not say {words:?}", r.error.rule));
            }
            if w.state != before || w.position != position {
                wrong.push("a refused command changed the state".into());
            }
        }
        (Expect::Accepted(..), Err(r)) => wrong.push(format!("refused: {:?} {r}", r.code)),
        (Expect::Rejected(..), Ok(events)) => {
            wrong.push(format!("accepted: {:?}", events.iter().map(kind).collect::<Vec<_>>()))
        }
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

/// Fails with every wrong row listed, naming each; row names must be unique.
pub(super) fn report(rows: usize, results: impl IntoIterator<Item = (String, Option<String>)>) {
    let mut names = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for (name, wrong) in results {
        assert!(names.insert(name.clone()), "two rows are named {name:?}");
        failures.extend(wrong.map(|e| format!("{name}: {e}")));
    }
    assert_eq!(names.len(), rows, "every row ran");
    assert!(
        failures.is_empty(),
        "{} of {rows} rows wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs every row of a table, each on a fresh [`World::new`].
pub(super) fn check_table(cases: &[Case]) {
    report(
        cases.len(),
        cases.iter().map(|c| {
            let mut w = World::new();
            (c.setup)(&mut w);
            let action = (c.action)(&mut w);
            (c.name.to_string(), outcome(&mut w, |w| w.submit(c.signer, action), &c.expect))
        }),
    );
}

// Setups shared by the tables: meter key "k" of DE*ABC on DE*ABC*E1, meter serial S1, from T0.

pub(super) fn nothing(_: &mut World) {}

pub(super) fn pending(w: &mut World) {
    w.register("k", "DE*ABC*E1", Some("S1"));
}

pub(super) fn active(w: &mut World) {
    pending(w);
    w.confirm("k");
}

/// Active, then decommissioned at T1.
pub(super) fn deactivated(w: &mut World) {
    active(w);
    w.deactivate("k", T1);
}

pub(super) fn rejected(w: &mut World) {
    pending(w);
    w.reject("k");
}

/// Pending, released to DE*XYZ.
pub(super) fn released_pending(w: &mut World) {
    pending(w);
    w.release("k", "DE*XYZ");
}

/// Active, released to DE*XYZ.
pub(super) fn released(w: &mut World) {
    active(w);
    w.release("k", "DE*XYZ");
}

/// Active, relocated to DE*ABC*E2 at T1.
pub(super) fn relocated(w: &mut World) {
    active(w);
    w.relocate("k", &["DE*ABC*E2"]);
}

/// Active, released to DE*XYZ and taken over onto DE*XYZ*E1 at T1.
pub(super) fn taken_over(w: &mut World) {
    released(w);
    w.take_over("k", "DE*XYZ*E1");
}

/// A third operator, DE*QQQ with key `qqq`.
pub(super) fn third_operator(w: &mut World) {
    w.add_operator("DE*QQQ", "qqq");
}

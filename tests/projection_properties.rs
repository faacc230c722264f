//! Properties over random command sequences (valid and invalid mixed) against a real registry:
//!
//! 1. the projections rebuilt from the log equal the live ones, both as bytes on disk after
//!    `registry-server rebuild`'s code path and as records replayed by a client from the entries;
//! 2. every validity answer equals a brute-force scan of the log's events, which shares no code
//!    with the server's projections or indexes.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use registry_client::{AsOf, EndReason, KeySubmission, KeyTarget, Order, View};
use registry_core::entry::Entry;
use registry_core::event::Event;
use registry_core::keys::P256KeyPair;
use registry_core::lifecycle::{self, Members, MemoryState, State};
use registry_core::time::Time;
use registry_server::commands::ConfirmPolicy;
use registry_server::projection::{self, Projection};
use registry_server::store::LogStore;
use registry_tests::{Fixture, spki_hex, verdict_name};

const EVSES: u8 = 4;
const SERIALS: u8 = 3;
const METERS: usize = 24;

fn day(d: u16) -> Time {
    registry_tests::t("2026-01-01T00:00:00Z") + chrono::TimeDelta::hours(i64::from(d) * 6)
}

fn operator(b: bool) -> &'static str {
    if b { "DE*BBB" } else { "DE*AAA" }
}

fn evse(b: bool, i: u8) -> String {
    format!("{}*E{i}", operator(b))
}

/// How an operation picks its signer and effective time relative to the key it acts on: usually
/// the owner and a later time, sometimes deliberately wrong (the refusals are part of the test).
#[derive(Debug, Clone, Copy)]
struct Aim {
    /// Index into the keys registered so far.
    key: usize,
    /// Sign as the other operator.
    wrong_signer: bool,
    /// Steps of 6 hours after the key's last effective time (before it, if `backwards`).
    step: u16,
    backwards: bool,
}

fn aim() -> impl Strategy<Value = Aim> {
    (any::<usize>(), prop::bool::weighted(0.15), 0u16..40, prop::bool::weighted(0.1))
        .prop_map(|(key, wrong_signer, step, backwards)| Aim { key, wrong_signer, step, backwards })
}

#[derive(Debug, Clone)]
enum Op {
    Register { by: bool, evse: u8, serial: u8, maker: bool, at: u16 },
    Deactivate { aim: Aim, compromised: bool },
    Relocate { aim: Aim, evse: u8 },
    Replace { aim: Aim },
    Rotate { aim: Aim },
    Release { aim: Aim },
    TakeOver { aim: Aim, evse: u8 },
    Force { aim: Aim, evse: u8 },
    Confirm { aim: Aim },
    Reject { aim: Aim },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<bool>(), 0..EVSES, 0..SERIALS, any::<bool>(), 0u16..120)
            .prop_map(|(by, evse, serial, maker, at)| Op::Register { by, evse, serial, maker, at }),
        2 => (aim(), any::<bool>()).prop_map(|(aim, compromised)| Op::Deactivate { aim, compromised }),
        2 => (aim(), 0..EVSES).prop_map(|(aim, evse)| Op::Relocate { aim, evse }),
        1 => aim().prop_map(|aim| Op::Replace { aim }),
        1 => aim().prop_map(|aim| Op::Rotate { aim }),
        2 => aim().prop_map(|aim| Op::Release { aim }),
        2 => (aim(), 0..EVSES).prop_map(|(aim, evse)| Op::TakeOver { aim, evse }),
        1 => (aim(), 0..EVSES).prop_map(|(aim, evse)| Op::Force { aim, evse }),
        1 => aim().prop_map(|aim| Op::Confirm { aim }),
        1 => aim().prop_map(|aim| Op::Reject { aim }),
    ]
}

#[derive(Debug, Clone)]
struct Query {
    selector: u8,
    index: u8,
    at: u16,
    as_of_permille: u16,
}

fn query() -> impl Strategy<Value = Query> {
    (0u8..4, any::<u8>(), 0u16..240, 250u16..=1000).prop_map(
        |(selector, index, at, as_of_permille)| Query { selector, index, at, as_of_permille },
    )
}

/// How a successful operation updates what generation knows.
type Effect = Box<dyn Fn(&mut Vec<Known>) + Send>;

/// What generation knows about a registered key: its meter, owner and last effective day.
#[derive(Debug, Clone, Copy)]
struct Known {
    meter: usize,
    owner: bool,
    last: u16,
}

struct Case {
    f: Fixture,
    a: P256KeyPair,
    b: P256KeyPair,
    meters: Vec<P256KeyPair>,
    known: std::sync::Mutex<Vec<Known>>,
    next_meter: std::sync::atomic::AtomicUsize,
}

impl Case {
    fn signer(&self, by: bool) -> &P256KeyPair {
        if by { &self.b } else { &self.a }
    }

    fn fp(&self, i: usize) -> String {
        self.meters[i].fingerprint_hex()
    }

    fn fresh_meter(&self) -> usize {
        self.next_meter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % METERS
    }

    /// The key an aim points at (or a fresh meter when nothing is registered yet), its signer
    /// and its effective day.
    fn target(&self, aim: Aim) -> (usize, Option<usize>, bool, u16) {
        let known = self.known.lock().unwrap();
        if known.is_empty() {
            return (self.fresh_meter(), None, aim.wrong_signer, aim.step);
        }
        let i = aim.key % known.len();
        let k = known[i];
        let at =
            if aim.backwards { k.last.saturating_sub(aim.step + 1) } else { k.last + aim.step };
        (k.meter, Some(i), k.owner ^ aim.wrong_signer, at)
    }

    async fn run(&self, op: &Op) {
        let (signer_is_b, admin, action, effect): (bool, bool, Order, Effect) = match op.clone() {
            Op::Register { by, evse: e, serial, maker, at } => {
                let meter = self.fresh_meter();
                (
                    by,
                    false,
                    Order::Register {
                        key: KeySubmission {
                            meter_serial: Some(format!("S{serial}")),
                            manufacturer: Some(if maker { "ACME" } else { "Other" }.into()),
                            ..KeySubmission::new(spki_hex(&self.meters[meter]))
                        },
                        evse_ids: vec![evse(by, e)],
                        effective_at: Some(day(at)),
                    },
                    Box::new(move |k: &mut Vec<Known>| {
                        k.push(Known { meter, owner: by, last: at })
                    }),
                )
            }
            Op::Deactivate { aim, compromised } => {
                let (meter, i, by, at) = self.target(aim);
                (
                    by,
                    false,
                    Order::Deactivate {
                        fingerprint: self.fp(meter),
                        reason: if compromised {
                            EndReason::Compromised
                        } else {
                            EndReason::Decommissioned
                        },
                        comment: String::new(),
                        effective_at: Some(day(at)),
                    },
                    Box::new(move |k: &mut Vec<Known>| {
                        if let Some(i) = i {
                            k[i].last = at
                        }
                    }),
                )
            }
            Op::Relocate { aim, evse: e } => {
                let (meter, i, by, at) = self.target(aim);
                (
                    by,
                    false,
                    Order::Relocate {
                        fingerprint: self.fp(meter),
                        evse_ids: vec![evse(by, e)],
                        effective_at: Some(day(at)),
                    },
                    Box::new(move |k: &mut Vec<Known>| {
                        if let Some(i) = i {
                            k[i].last = at
                        }
                    }),
                )
            }
            Op::Replace { aim } | Op::Rotate { aim } => {
                let (meter, i, by, at) = self.target(aim);
                let new = self.fresh_meter();
                let new_key = KeySubmission::new(spki_hex(&self.meters[new]));
                let action = if matches!(op, Op::Replace { .. }) {
                    Order::Replace {
                        fingerprint: self.fp(meter),
                        new_key,
                        effective_at: Some(day(at)),
                        comment: String::new(),
                    }
                } else {
                    Order::Rotate {
                        fingerprint: self.fp(meter),
                        new_key,
                        effective_at: Some(day(at)),
                    }
                };
                (
                    by,
                    false,
                    action,
                    Box::new(move |k: &mut Vec<Known>| {
                        if let Some(i) = i {
                            k[i].last = at;
                            let owner = k[i].owner;
                            k.push(Known { meter: new, owner, last: at });
                        }
                    }),
                )
            }
            Op::Release { aim } => {
                let (meter, _, by, _) = self.target(aim);
                (
                    by,
                    false,
                    Order::Release {
                        fingerprint: self.fp(meter),
                        to_operator_id: operator(!by).into(),
                    },
                    Box::new(|_: &mut Vec<Known>| {}),
                )
            }
            Op::TakeOver { aim, evse: e } => {
                // The taker is normally the operator that does not own the key.
                let (meter, i, owner_side, at) = self.target(aim);
                let by = !owner_side;
                (
                    by,
                    false,
                    Order::TakeOver {
                        fingerprint: self.fp(meter),
                        evse_ids: vec![evse(by, e)],
                        effective_at: Some(day(at)),
                    },
                    Box::new(move |k: &mut Vec<Known>| {
                        if let Some(i) = i {
                            k[i].owner = by;
                            k[i].last = at
                        }
                    }),
                )
            }
            Op::Force { aim, evse: e } => {
                let (meter, i, owner_side, at) = self.target(aim);
                let to = !owner_side;
                (
                    false,
                    true,
                    Order::ForceTakeOver {
                        fingerprint: self.fp(meter),
                        operator_id: operator(to).into(),
                        evse_ids: vec![evse(to, e)],
                        effective_at: Some(day(at)),
                    },
                    Box::new(move |k: &mut Vec<Known>| {
                        if let Some(i) = i {
                            k[i].owner = to;
                            k[i].last = at
                        }
                    }),
                )
            }
            Op::Confirm { aim } => {
                let (meter, ..) = self.target(aim);
                (
                    false,
                    true,
                    Order::Confirm { fingerprint: self.fp(meter) },
                    Box::new(|_: &mut Vec<Known>| {}),
                )
            }
            Op::Reject { aim } => {
                let (meter, ..) = self.target(aim);
                (
                    false,
                    true,
                    Order::Reject { fingerprint: self.fp(meter), reason: "random".into() },
                    Box::new(|_: &mut Vec<Known>| {}),
                )
            }
        };
        let signer = if admin { &self.f.admin } else { self.signer(signer_is_b) };
        match self.f.client.submit(signer, &action).await {
            Ok(_) => effect(&mut self.known.lock().unwrap()),
            // Refusals are part of the mix; only a refusal code is acceptable, never a failure.
            Err(e) => {
                let code = e.code().unwrap_or(tonic::Code::Unknown);
                assert!(
                    matches!(
                        code,
                        tonic::Code::InvalidArgument
                            | tonic::Code::FailedPrecondition
                            | tonic::Code::PermissionDenied
                            | tonic::Code::AlreadyExists
                    ),
                    "{op:?}: {e}"
                );
            }
        }
    }
}

/// The brute force: validity from the raw events of the first `size` entries, sharing no code
/// with the server's projections or indexes.
struct Brute {
    keys: BTreeMap<String, Vec<(u64, Event)>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Answer {
    verdict: &'static str,
    fingerprint: String,
    candidates: BTreeSet<String>,
}

impl Brute {
    fn new(entries: &[Entry], size: u64) -> Self {
        let mut keys: BTreeMap<String, Vec<(u64, Event)>> = BTreeMap::new();
        for e in entries.iter().filter(|e| e.header.position < size) {
            for ev in &e.body.events {
                if let Some(fp) = ev.fingerprint() {
                    keys.entry(fp.to_string()).or_default().push((e.header.position, ev.clone()));
                }
            }
        }
        Self { keys }
    }

    fn registration(&self, fp: &str) -> &registry_core::event::Registration {
        match &self.keys[fp][0].1 {
            Event::KeyRegistered(r) => r,
            other => panic!("a key's first event is its registration, got {other:?}"),
        }
    }

    fn rejected(&self, fp: &str) -> bool {
        self.keys[fp].iter().any(|(_, e)| matches!(e, Event::KeyRejected { .. }))
    }

    fn end(&self, fp: &str) -> Option<Time> {
        self.keys[fp].iter().find_map(|(_, e)| match e {
            Event::KeyEnded { effective_at, .. } => Some(*effective_at),
            _ => None,
        })
    }

    fn verdict_of(&self, fp: &str, t: Time) -> &'static str {
        let confirmed = self.keys[fp].iter().any(|(_, e)| matches!(e, Event::KeyConfirmed { .. }));
        if self.rejected(fp) {
            "REJECTED"
        } else if t < self.registration(fp).effective_at {
            "NOT_YET"
        } else if self.end(fp).is_some_and(|e| t >= e) {
            "ENDED"
        } else if !confirmed {
            "PENDING"
        } else {
            "VALID"
        }
    }

    /// Intervals during which `fp` served `evse`: [from, until).
    fn evse_intervals(&self, fp: &str, evse: &str) -> Vec<(Time, Option<Time>)> {
        let reg = self.registration(fp);
        let mut current: (Time, Vec<String>) =
            (reg.effective_at, reg.evse_ids.iter().map(|e| e.to_string()).collect());
        let mut out = Vec::new();
        for (_, e) in &self.keys[fp][1..] {
            let (at, next) = match e {
                Event::KeyRelocated { effective_at, evse_ids, .. }
                | Event::KeyTakenOver { effective_at, evse_ids, .. } => (
                    *effective_at,
                    Some(evse_ids.iter().map(|e| e.to_string()).collect::<Vec<_>>()),
                ),
                Event::KeyEnded { effective_at, .. } => (*effective_at, None),
                _ => continue,
            };
            if current.1.iter().any(|x| x == evse) {
                out.push((current.0, Some(at)));
            }
            match next {
                Some(evses) => current = (at, evses),
                None => return out,
            }
        }
        if current.1.iter().any(|x| x == evse) {
            out.push((current.0, None));
        }
        out
    }

    fn answer(fp: &str, verdict: &'static str) -> Answer {
        Answer { verdict, fingerprint: fp.to_string(), candidates: BTreeSet::new() }
    }

    fn none(verdict: &'static str, candidates: BTreeSet<String>) -> Answer {
        Answer { verdict, fingerprint: String::new(), candidates }
    }

    fn by_key(&self, fp: &str, t: Time) -> Answer {
        if self.keys.contains_key(fp) {
            Self::answer(fp, self.verdict_of(fp, t))
        } else {
            Self::none("UNKNOWN", BTreeSet::new())
        }
    }

    fn by_evse(&self, evse: &str, t: Time) -> Answer {
        let (mut within, mut ended, mut future, mut rejected) = (vec![], vec![], vec![], vec![]);
        for fp in self.keys.keys() {
            let intervals = self.evse_intervals(fp, evse);
            if intervals.is_empty() {
                continue;
            }
            if self.rejected(fp) {
                rejected.push(fp.clone());
                continue;
            }
            for (from, until) in intervals {
                if from <= t && until.is_none_or(|u| t < u) {
                    within.push(fp.clone());
                } else if let Some(u) = until.filter(|u| *u <= t) {
                    ended.push((u, from, self.keys[fp][0].0, fp.clone()));
                } else if from > t {
                    future.push((from, self.keys[fp][0].0, fp.clone()));
                }
            }
        }
        match within.len() {
            1 => return Self::answer(&within[0], self.verdict_of(&within[0], t)),
            n if n > 1 => return Self::none("AMBIGUOUS", within.into_iter().collect()),
            _ => {}
        }
        if let Some((.., fp)) = ended.into_iter().max() {
            return Self::answer(&fp, "ENDED");
        }
        if let Some((.., fp)) = future.into_iter().min() {
            return Self::answer(&fp, "NOT_YET");
        }
        if let Some(fp) = rejected.into_iter().max_by_key(|fp| self.keys[fp][0].0) {
            return Self::answer(&fp, "REJECTED");
        }
        Self::none("UNKNOWN", BTreeSet::new())
    }

    fn by_serial(&self, serial: &str, t: Time) -> Answer {
        let (mut within, mut ended, mut future, mut rejected) = (vec![], vec![], vec![], vec![]);
        for fp in self.keys.keys() {
            let reg = self.registration(fp);
            if reg.meter_serial.as_deref() != Some(serial) {
                continue;
            }
            if self.rejected(fp) {
                rejected.push(fp.clone());
            } else if t < reg.effective_at {
                future.push((reg.effective_at, self.keys[fp][0].0, fp.clone()));
            } else if let Some(e) = self.end(fp).filter(|e| t >= *e) {
                ended.push((e, self.keys[fp][0].0, fp.clone()));
            } else {
                within.push(fp.clone());
            }
        }
        let makers = |fps: &[String]| {
            fps.iter()
                .map(|fp| self.registration(fp).manufacturer.clone())
                .collect::<BTreeSet<_>>()
                .len()
        };
        match within.len() {
            1 => return Self::answer(&within[0], self.verdict_of(&within[0], t)),
            n if n > 1 => return Self::none("AMBIGUOUS", within.into_iter().collect()),
            _ => {}
        }
        for (group, latest) in [(ended, true), (future, false)] {
            if group.is_empty() {
                continue;
            }
            let fps: Vec<String> = group.iter().map(|(.., f)| f.clone()).collect();
            if makers(&fps) > 1 {
                return Self::none("AMBIGUOUS", fps.into_iter().collect());
            }
            let (.., fp) = if latest {
                group.into_iter().max().unwrap()
            } else {
                group.into_iter().min().unwrap()
            };
            return Self::answer(&fp, self.verdict_of(&fp, t));
        }
        if let Some(fp) = rejected.into_iter().max_by_key(|fp| self.keys[fp][0].0) {
            return Self::answer(&fp, "REJECTED");
        }
        Self::none("UNKNOWN", BTreeSet::new())
    }
}

fn leave_strays(store: &dyn LogStore) {
    let strays = projection::KEYSPACES
        .iter()
        .map(|keyspace| registry_server::store::ProjectionWrite {
            keyspace: *keyspace,
            key: b"stray".to_vec(),
            value: Some(b"left over".to_vec()),
        })
        .collect();
    store
        .write(registry_server::store::WriteBatch { projections: strays, ..Default::default() })
        .unwrap();
}

/// Every projection record on disk, per keyspace.
fn snapshot(store: &dyn LogStore) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    projection::KEYSPACES.iter().map(|ks| store.scan_prefix(*ks, b"").unwrap()).collect()
}

fn check_case(ops: Vec<Op>, queries: Vec<Query>, manual: bool) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let f =
            Fixture::start_with(if manual { ConfirmPolicy::Manual } else { ConfirmPolicy::Auto })
                .await;
        let (a, b) = (f.operator("DE*AAA").await, f.operator("DE*BBB").await);
        let case = Case {
            f,
            a,
            b,
            meters: (0..METERS).map(|_| P256KeyPair::generate()).collect(),
            known: std::sync::Mutex::new(Vec::new()),
            next_meter: std::sync::atomic::AtomicUsize::new(0),
        };
        for op in &ops {
            case.run(op).await;
        }

        // (1a) A client replays the log with the shared rules; the live records must match.
        let entries: Vec<Entry> = case
            .f
            .client
            .entries(0, 0)
            .await
            .unwrap()
            .iter()
            .map(|e| Entry::decode(&e.entry).unwrap())
            .collect();
        let mut replayed = MemoryState::default();
        for e in &entries {
            lifecycle::apply(&e.header, &e.body, &mut replayed).unwrap();
        }
        let store = case.f.registry.server.reader().store().clone();
        let live = Projection::new(store.as_ref());
        for (fp, record) in &replayed.keys {
            assert_eq!(live.key(fp).unwrap().as_deref(), Some(&**record), "key {fp}");
        }
        // The same through a key cache filled from the store, as a restarted server reads it.
        let cache = std::sync::Arc::new(registry_server::key_cache::KeyCache::new());
        registry_server::projection::fill_cache(store.as_ref(), &cache, &|| false).unwrap();
        assert!(cache.is_complete());
        assert_eq!(cache.len(), replayed.keys.len());
        let filled = Projection::cached(store.as_ref(), cache);
        for (fp, record) in &replayed.keys {
            assert_eq!(filled.key(fp).unwrap().as_deref(), Some(&**record), "cached key {fp}");
        }
        for ((kind, value), map) in &replayed.index {
            let want: Vec<([u8; 32], u64)> = map
                .iter()
                .map(|(k, v)| (registry_core::lifecycle::fingerprint_bytes(k).expect("hex"), v))
                .collect();
            let mut got = live.indexed(*kind, value).unwrap().to_vec();
            got.sort();
            assert_eq!(got, want, "index {kind:?} {value}");
            assert_eq!(
                filled.indexed(*kind, value).unwrap().to_vec(),
                want,
                "cached index {kind:?} {value}"
            );
        }
        // The latest entry per identifier, as readers see it (the published map): the newest
        // entry of its history.
        for (id, position) in &replayed.latest {
            let page = case
                .f
                .client
                .history_page(
                    registry_proto::pb::Identifier::from(id),
                    AsOf::Head,
                    1,
                    String::new(),
                )
                .await
                .unwrap();
            assert_eq!(page.entries.first().map(|e| e.position), Some(*position), "latest {id:?}");
        }
        for (key_id, signer) in &replayed.signers {
            assert_eq!(live.signer(key_id).unwrap().as_ref(), Some(signer));
        }
        assert_eq!(live.admins().unwrap(), replayed.admins().unwrap());
        let counts: Vec<usize> = snapshot(store.as_ref()).iter().map(Vec::len).collect();
        let index_entries: usize = replayed.index.values().map(Members::len).sum();
        assert_eq!(counts[0], replayed.keys.len(), "no extra key records");
        assert_eq!(counts[1], index_entries, "no extra index entries");

        // (1c) The head checkpoint's map root is the map of the replayed back-link heads, no
        // more and no fewer (the map's records in the store are its durable copy, written at
        // snapshot cuts; a restart checks them against this root).
        let info = case.f.client.registry_info().await.unwrap();
        let verifier =
            registry_core::note::NoteVerifier::new(&info.origin, &info.public_key_der).unwrap();
        let head = case.f.client.checkpoint(0).await.unwrap();
        let cp = registry_core::checkpoint::Checkpoint::open(&head.checkpoint, &verifier).unwrap();
        let mut map = registry_core::map::MemoryMap::default();
        for (id, position) in &replayed.latest {
            map.set(id, *position);
        }
        assert_eq!(registry_core::map::root_from_extensions(&cp.extensions), Some(map.root()));

        // (2) Every answer equals the brute force, at random times and bases.
        let size = entries.len() as u64;
        for q in &queries {
            let as_of = 1 + (size - 1) * u64::from(q.as_of_permille) / 1000;
            let brute = Brute::new(&entries, as_of);
            let t = day(q.at);
            let i = q.index;
            let known: Vec<usize> = case.known.lock().unwrap().iter().map(|k| k.meter).collect();
            let meter = if known.is_empty() { 0 } else { known[usize::from(i) % known.len()] };
            let (selector, want) = match q.selector {
                0 => (KeyTarget::Fingerprint(case.fp(meter)), brute.by_key(&case.fp(meter), t)),
                1 => (
                    KeyTarget::Evse(evse(false, i % EVSES)),
                    brute.by_evse(&evse(false, i % EVSES), t),
                ),
                2 => (
                    KeyTarget::Evse(evse(true, i % EVSES)),
                    brute.by_evse(&evse(true, i % EVSES), t),
                ),
                _ => (
                    KeyTarget::MeterSerial(format!("S{}", i % SERIALS)),
                    brute.by_serial(&format!("S{}", i % SERIALS), t),
                ),
            };
            let v = case
                .f
                .client
                .check(&selector, None, t, AsOf::Size(as_of))
                .await
                .unwrap()
                .validity
                .unwrap();
            // The basic view computes less (no binding) and must answer alike otherwise.
            let basic = case
                .f
                .client
                .check_view(&selector, None, t, AsOf::Size(as_of), View::Basic)
                .await
                .unwrap()
                .validity
                .unwrap();
            let stripped =
                registry_proto::pb::Validity { public_key: vec![], binding: None, ..v.clone() };
            assert_eq!(basic, stripped, "basic view of {selector:?} at {t} as of {as_of}");
            let got = Answer {
                verdict: verdict_name(&v),
                fingerprint: v.fingerprint.clone(),
                candidates: v.candidates.iter().cloned().collect(),
            };
            assert_eq!(got, want, "{selector:?} at {t} as of {as_of}");
        }

        // (1b) The server's own rebuild reproduces the projections a clean stop left (the map's
        // records included, which the writer holds back while it runs) byte for byte.
        let Fixture { registry, client, .. } = case.f;
        drop(client);
        let dir = registry.dir;
        let config = registry.config;
        registry.server.shutdown();
        registry.server.wait().await.unwrap();
        drop(store);
        let store = registry_server::server::open_store(&config).unwrap();
        let before = snapshot(store.as_ref());
        assert!(!before[6].is_empty(), "the map's records, written at the stop");
        // A stray record in every keyspace: a rebuild must drop it, not merely add to it.
        leave_strays(store.as_ref());
        let replayed_entries = projection::rebuild(store.as_ref()).unwrap();
        assert_eq!(replayed_entries, size);
        assert_eq!(snapshot(store.as_ref()), before, "rebuilt projections equal the live ones");
        // What the rebuild wrote is what a restart reads, and rebuilding that changes nothing.
        drop(store);
        let store = registry_server::server::open_store(&config).unwrap();
        assert_eq!(snapshot(store.as_ref()), before, "rebuilt projections survive a restart");
        leave_strays(store.as_ref());
        projection::rebuild(store.as_ref()).unwrap();
        assert_eq!(snapshot(store.as_ref()), before, "a rebuild of a rebuilt store equals too");
        // A start that finds no snapshot replays the whole log the writer's way (catch-up);
        // written out every few records, as a long catch-up is, it equals them too.
        drop(store);
        std::fs::remove_file(config.data_dir.join(registry_server::server::SNAPSHOT_FILE)).unwrap();
        let store = registry_server::server::open_store(&config).unwrap();
        assert_eq!(store.projected_size().unwrap(), 0, "without a snapshot nothing is projected");
        let cache = std::sync::Arc::new(registry_server::key_cache::KeyCache::new());
        let mut buckets = registry_server::map::MapBuckets::empty();
        let caught_up =
            projection::catch_up_holding(store.as_ref(), cache, &mut buckets, size, 5).unwrap();
        assert_eq!(caught_up, size);
        assert_eq!(snapshot(store.as_ref()), before, "a catch-up from 0 equals the live ones");
        drop(dir);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn rebuilt_projections_equal_live_ones_and_answers_equal_a_brute_force_scan(
        ops in proptest::collection::vec(op(), 20..80),
        queries in proptest::collection::vec(query(), 40),
        manual in any::<bool>(),
    ) {
        check_case(ops, queries, manual);
    }
}

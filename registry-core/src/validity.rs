//! Validity verdicts: "was this key (or the key of this meter, gateway or EVSE) valid at t, as
//! known at log size N?"
//!
//! Everything here is a pure function of the key records' histories filtered to positions
//! below N, so the same question with the same basis always gets the same answer, and a client
//! holding the deciding entries can compute it too.
//!
//! Resolution of selectors other than a fingerprint:
//! - **EVSE**: the key whose binding to that EVSE contains t; otherwise the binding to it that
//!   ended most recently before t (`ENDED`, with `RELOCATED` / `TAKEN_OVER` when the key moved
//!   on), otherwise the first one starting after t (`NOT_YET`).
//! - **Serial** (meter or gateway, optionally narrowed to a manufacturer): the key whose
//!   signing-unit lifetime (registration to end) contains t. Serials are unique only per
//!   manufacturer, so more than one match answers `AMBIGUOUS` with the candidates, never a guess.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::event::{EndReason, IdentifierKind};
use crate::ids::EvseId;
use crate::lifecycle::{Binding, BindingRef, KeyAsOf, KeyRecord, KeyState, State};
use crate::time::Time;

/// The answer for one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Confirmed and t in its validity.
    Valid,
    /// Not (yet) confirmed at the basis, t in its validity otherwise.
    Pending,
    /// t before its effective time.
    NotYet,
    /// t at or after its end (or its binding's end).
    Ended,
    /// Rejected: never valid.
    Rejected,
    /// Nothing known.
    Unknown,
    /// A serial matched keys of several manufacturers.
    Ambiguous,
}

/// How a question names its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// By fingerprint.
    Fingerprint(String),
    /// By meter serial, optionally only of one manufacturer.
    MeterSerial {
        /// The serial.
        serial: String,
        /// The manufacturer, if known.
        manufacturer: Option<String>,
    },
    /// By gateway serial, optionally only of one manufacturer.
    GatewaySerial {
        /// The serial.
        serial: String,
        /// The manufacturer, if known.
        manufacturer: Option<String>,
    },
    /// By EVSE ID.
    Evse(EvseId),
}

impl Selector {
    /// The identifier whose chain decides answers about this selector.
    pub fn identifier(&self) -> crate::event::Identifier {
        use crate::event::Identifier;
        match self {
            Selector::Fingerprint(fp) => Identifier::key(fp),
            Selector::Evse(e) => Identifier::evse(e),
            Selector::MeterSerial { serial, .. } => {
                Identifier { kind: IdentifierKind::MeterSerial, value: serial.clone() }
            }
            Selector::GatewaySerial { serial, .. } => {
                Identifier { kind: IdentifierKind::GatewaySerial, value: serial.clone() }
            }
        }
    }
}

/// A verdict with what it is based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    /// The verdict.
    pub verdict: Verdict,
    /// The key it is about (none for `Unknown` and `Ambiguous`), shared with the state it
    /// came from: answers are built by the million and a record is not small.
    pub key: Option<Arc<KeyRecord>>,
    /// The binding at t, or the one that ended / will start.
    pub binding: Option<Binding>,
    /// For `Ended`: when and why.
    pub ended: Option<(Time, EndReason)>,
    /// The key's state at the basis.
    pub state: Option<KeyState>,
    /// Positions of the entries that decide the answer, ascending.
    pub deciding_positions: Vec<u64>,
    /// For `Ambiguous`: the candidate fingerprints.
    pub candidates: Vec<String>,
}

impl Validity {
    fn none(verdict: Verdict) -> Self {
        Self {
            verdict,
            key: None,
            binding: None,
            ended: None,
            state: None,
            deciding_positions: vec![],
            candidates: vec![],
        }
    }
}

/// The answer about `record` at `t` as known at log size `as_of` (`Unknown` if it was not
/// registered yet).
pub fn for_key(record: &Arc<KeyRecord>, as_of: u64, t: Time) -> Validity {
    Ask { t, as_of, view: View::Full }.about(record)
}

/// The verdict for a key as known at some size, at `t`; `key` is left empty for callers that
/// hold the record already.
pub fn verdict_at(key: &KeyAsOf<'_>, t: Time) -> Validity {
    verdict_in(key, t, View::Full)
}

/// [`verdict_at`] in `view`.
fn verdict_in(key: &KeyAsOf<'_>, t: Time, view: View) -> Validity {
    let (verdict, pick, ended) = decide(key, t);
    if view == View::Basic {
        return answer(key, verdict, ended, None);
    }
    let bindings = key.binding_refs();
    // Only the binding the answer names is copied out of the record (answers are built by
    // the million in batch lookups).
    let named = match pick {
        Pick::First => bindings.first(),
        Pick::Last => bindings.last(),
        Pick::AtTOrLast => bindings.iter().find(|b| b.contains(t)).or(bindings.last()),
    };
    answer(key, verdict, ended, named.map(BindingRef::to_binding))
}

/// The answer about `record` at `t` naming `binding`, which the caller chose (an EVSE's
/// binding), so the key's bindings need not be computed again.
fn with_binding(
    record: &Arc<KeyRecord>,
    key: &KeyAsOf<'_>,
    t: Time,
    binding: BindingRef<'_>,
    view: View,
) -> Validity {
    let (verdict, _, ended) = decide(key, t);
    let binding = (view == View::Full).then(|| binding.to_binding());
    Validity { key: Some(record.clone()), ..answer(key, verdict, ended, binding) }
}

/// An answer about `key` with its verdict and binding decided; `key` left empty.
fn answer(
    key: &KeyAsOf<'_>,
    verdict: Verdict,
    ended: Option<(Time, EndReason)>,
    binding: Option<Binding>,
) -> Validity {
    Validity {
        verdict,
        key: None,
        binding,
        ended,
        state: Some(key.state()),
        deciding_positions: key.positions(),
        candidates: vec![],
    }
}

/// Which of a key's bindings an answer names.
enum Pick {
    First,
    Last,
    AtTOrLast,
}

/// A key's verdict at `t`, which binding the answer names, and for `Ended` when and why.
fn decide(key: &KeyAsOf<'_>, t: Time) -> (Verdict, Pick, Option<(Time, EndReason)>) {
    if key.rejected().is_some() {
        (Verdict::Rejected, Pick::First, None)
    } else if t < key.registration().effective_at {
        (Verdict::NotYet, Pick::First, None)
    } else if let Some((end_at, reason, _)) = key.end().filter(|(e, _, _)| t >= *e) {
        (Verdict::Ended, Pick::Last, Some((end_at, reason)))
    } else if key.confirmed().is_none() {
        (Verdict::Pending, Pick::AtTOrLast, None)
    } else {
        (Verdict::Valid, Pick::AtTOrLast, None)
    }
}

/// Answers a validity question as known at log size `as_of`.
pub fn check<S: State>(
    state: &S,
    selector: &Selector,
    t: Time,
    as_of: u64,
) -> Result<Validity, S::Error> {
    check_in_view(state, selector, t, as_of, View::Full)
}

/// [`check`], computing only what `view` sends: a basic answer leaves `binding` empty. Copying
/// an EVSE's binding out of its key record (its EVSE IDs) was 3-4 % of a batch question's
/// server CPU, for an answer the caller had asked to go without.
pub fn check_in_view<S: State>(
    state: &S,
    selector: &Selector,
    t: Time,
    as_of: u64,
    view: View,
) -> Result<Validity, S::Error> {
    let ask = Ask { t, as_of, view };
    match selector {
        Selector::Fingerprint(fp) => Ok(match state.key(fp)? {
            Some(record) => ask.about(&record),
            None => Validity::none(Verdict::Unknown),
        }),
        Selector::Evse(evse) => by_evse(state, evse, ask),
        Selector::MeterSerial { serial, manufacturer } => {
            by_serial(state, IdentifierKind::MeterSerial, serial, manufacturer.as_deref(), ask)
        }
        Selector::GatewaySerial { serial, manufacturer } => {
            by_serial(state, IdentifierKind::GatewaySerial, serial, manufacturer.as_deref(), ask)
        }
    }
}

/// What every answer to one question shares: the moment, the basis and the view.
#[derive(Clone, Copy)]
struct Ask {
    t: Time,
    as_of: u64,
    view: View,
}

impl Ask {
    /// [`for_key`] in this view.
    fn about(self, record: &Arc<KeyRecord>) -> Validity {
        match record.as_of(self.as_of) {
            Some(key) => {
                Validity { key: Some(record.clone()), ..verdict_in(&key, self.t, self.view) }
            }
            None => Validity::none(Verdict::Unknown),
        }
    }
}

/// The key records indexed under an identifier and known at `as_of`.
pub fn candidates<S: State>(
    state: &S,
    kind: IdentifierKind,
    value: &str,
    as_of: u64,
) -> Result<Vec<Arc<KeyRecord>>, S::Error> {
    let mut keys = state.indexed_keys(kind, value)?;
    keys.retain(|(added, record)| *added < as_of && record.registered_at() < as_of);
    Ok(keys.into_iter().map(|(_, record)| record).collect())
}

fn ambiguous(records: &[&Arc<KeyRecord>], as_of: u64) -> Validity {
    let mut v = Validity::none(Verdict::Ambiguous);
    let mut positions = BTreeSet::new();
    for r in records {
        v.candidates.push(r.fingerprint().to_string());
        positions.extend(r.as_of(as_of).map(|k| k.positions()).unwrap_or_default());
    }
    v.deciding_positions = positions.into_iter().collect();
    v
}

fn by_evse<S: State>(state: &S, evse: &EvseId, ask: Ask) -> Result<Validity, S::Error> {
    let Ask { t, as_of, view } = ask;
    let records = candidates(state, IdentifierKind::Evse, evse.as_str(), as_of)?;
    type Found<'a> = (&'a Arc<KeyRecord>, KeyAsOf<'a>, BindingRef<'a>);
    let mut within: Vec<Found<'_>> = vec![];
    let mut ended: Vec<Found<'_>> = vec![];
    let mut future: Vec<Found<'_>> = vec![];
    let mut rejected: Vec<&Arc<KeyRecord>> = vec![];
    for record in &records {
        let key = record.as_of(as_of).expect("candidates are known at as_of");
        if key.state() == KeyState::Rejected {
            rejected.push(record);
            continue;
        }
        for b in key.binding_refs().into_iter().filter(|b| b.evse_ids.contains(evse)) {
            if b.contains(t) {
                within.push((record, key, b));
            } else if b.until.is_some_and(|u| u <= t) {
                ended.push((record, key, b));
            } else if b.from > t {
                future.push((record, key, b));
            }
        }
    }
    if within.len() > 1 {
        return Ok(ambiguous(&within.iter().map(|(r, _, _)| *r).collect::<Vec<_>>(), as_of));
    }
    if let Some((record, key, b)) = within.pop() {
        return Ok(with_binding(record, &key, t, b, view));
    }
    // Ties (zero-length bindings) go to the later binding, then the later registration.
    if let Some((record, key, b)) =
        ended.into_iter().max_by_key(|(r, _, b)| (b.until, b.from, r.registered_at()))
    {
        let ended = b.until.zip(b.ended_by);
        let mut v = with_binding(record, &key, t, b, view);
        v.verdict = Verdict::Ended;
        v.ended = ended;
        return Ok(v);
    }
    if let Some((record, key, b)) =
        future.into_iter().min_by_key(|(r, _, b)| (b.from, r.registered_at()))
    {
        let mut v = with_binding(record, &key, t, b, view);
        v.verdict = Verdict::NotYet;
        return Ok(v);
    }
    if let Some(record) = rejected.into_iter().max_by_key(|r| r.registered_at()) {
        return Ok(ask.about(record));
    }
    Ok(Validity::none(Verdict::Unknown))
}

fn by_serial<S: State>(
    state: &S,
    kind: IdentifierKind,
    serial: &str,
    manufacturer: Option<&str>,
    ask: Ask,
) -> Result<Validity, S::Error> {
    let Ask { t, as_of, .. } = ask;
    let records: Vec<Arc<KeyRecord>> = candidates(state, kind, serial, as_of)?
        .into_iter()
        .filter(|r| manufacturer.is_none_or(|m| *r.registration.manufacturer == *m))
        .collect();
    let (mut within, mut ended, mut future, mut rejected) = (vec![], vec![], vec![], vec![]);
    for record in &records {
        let key = record.as_of(as_of).expect("candidates are known at as_of");
        if key.state() == KeyState::Rejected {
            rejected.push(record);
            continue;
        }
        let start = key.registration().effective_at;
        let end = key.end().map(|(e, _, _)| e);
        if t < start {
            future.push((record, start));
        } else if let Some(e) = end.filter(|e| t >= *e) {
            ended.push((record, e));
        } else {
            within.push(record);
        }
    }
    let manufacturers = |rs: &[&Arc<KeyRecord>]| {
        rs.iter().map(|r| &*r.registration.manufacturer).collect::<BTreeSet<_>>().len()
    };
    let known = |r: &Arc<KeyRecord>| ask.about(r);
    match within.len() {
        1 => return Ok(known(within[0])),
        n if n > 1 => return Ok(ambiguous(&within, as_of)),
        _ => {}
    }
    if !ended.is_empty() {
        let rs: Vec<&Arc<KeyRecord>> = ended.iter().map(|(r, _)| *r).collect();
        if manufacturers(&rs) > 1 {
            return Ok(ambiguous(&rs, as_of));
        }
        let (r, _) =
            ended.into_iter().max_by_key(|(r, e)| (*e, r.registered_at())).expect("not empty");
        return Ok(known(r));
    }
    if !future.is_empty() {
        let rs: Vec<&Arc<KeyRecord>> = future.iter().map(|(r, _)| *r).collect();
        if manufacturers(&rs) > 1 {
            return Ok(ambiguous(&rs, as_of));
        }
        let (r, _) =
            future.into_iter().min_by_key(|(r, s)| (*s, r.registered_at())).expect("not empty");
        return Ok(known(r));
    }
    if let Some(r) = rejected.into_iter().max_by_key(|r| r.registered_at()) {
        return Ok(known(r));
    }
    Ok(Validity::none(Verdict::Unknown))
}

/// How much of an answer goes on the wire (`keyregistry.v1.ValidityView`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Everything.
    #[default]
    Full,
    /// Without the key material and the binding.
    Basic,
}

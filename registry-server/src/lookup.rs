//! Lookups: validity, key records, history and operators, as known at a basis.
//!
//! A basis is a log size no larger than the durable head, chosen by the caller (a size or a
//! recorded time) or the head itself. Every answer is computed from the projections filtered to
//! that size, so the same question on the same basis always gets the same answer, even while new
//! entries arrive. History walks the identifier's back-link chain through the log itself.

use registry_core::entry::{self, Entry};
use registry_core::error::FieldError;
use registry_core::event::Identifier;
use registry_core::ids::OperatorId;
use registry_core::lifecycle::{KeyRecord, OperatorRecord, SignerRecord, State};
use registry_core::merkle::{self, Hash};
use registry_core::ocpi::Input;
use registry_core::signed_values::{self, Validation};
use registry_core::time::Time;
use registry_core::validity::{self, Selector, Validity, View};

use std::sync::Arc;

use crate::key_cache::KeyCache;
use crate::log::{LogReader, ReadError};
use crate::map::SharedMap;
use crate::projection::Projection;
use crate::store::StoreError;

/// The most questions in one batch.
pub const MAX_BATCH: usize = 10_000;

/// Which point of the log to answer from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The durable head.
    Head,
    /// The first `n` entries.
    Size(u64),
    /// Every entry recorded at or before this time.
    RecordedAt(Time),
}

/// What an answer was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Basis {
    /// Entries considered.
    pub size: u64,
    /// Leaf hash of the last of them (zeros for none).
    pub head_hash: Hash,
    /// Its recorded time.
    pub recorded_at: Option<Time>,
}

/// A lookup that cannot be answered. Each refusal names the field and the rule in the rules'
/// one error shape; the class says which gRPC code it gets.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// A field is malformed.
    #[error("{0}")]
    Invalid(FieldError),
    /// The request is well-formed but outside the log.
    #[error("{0}")]
    OutOfRange(FieldError),
    /// The thing asked for exists but is not in the state the request needs.
    #[error("{0}")]
    Precondition(FieldError),
    /// The thing asked for does not exist at the basis.
    #[error("{0}")]
    NotFound(FieldError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ReadError> for LookupError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Store(s) => LookupError::Store(s),
            other => LookupError::Store(StoreError::Corrupt(other.to_string())),
        }
    }
}

/// One page of an identifier's history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Entries, newest first: position, stored bytes, decoded entry.
    pub entries: Vec<(u64, Vec<u8>, Entry)>,
    /// Where the next page starts, if there is one.
    pub next: Option<u64>,
}

/// See the module documentation.
#[derive(Clone)]
pub struct Lookups {
    reader: LogReader,
    cache: Arc<KeyCache>,
    map: Arc<SharedMap>,
}

fn invalid(field: &str, message: impl Into<String>) -> LookupError {
    LookupError::Invalid(FieldError::new(field, message))
}

impl Lookups {
    /// Lookups over a running log whose writer keeps `cache` current and publishes its map to
    /// `map`.
    pub fn new(reader: LogReader, cache: Arc<KeyCache>, map: Arc<SharedMap>) -> Self {
        Self { reader, cache, map }
    }

    fn state(&self) -> Projection<'static, &dyn crate::store::LogStore> {
        Projection::cached(self.reader.store().as_ref(), self.cache.clone())
    }

    fn basis_at(&self, size: u64) -> Result<Basis, LookupError> {
        if size == 0 {
            return Ok(Basis { size: 0, head_hash: entry::ZERO_HASH, recorded_at: None });
        }
        let bytes = self.reader.entry(size - 1)?;
        let header =
            entry::decode_header(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Basis {
            size,
            head_hash: merkle::leaf_hash(&bytes),
            recorded_at: Some(header.recorded_at),
        })
    }

    /// Resolves an as-of point to a basis.
    pub fn basis(&self, as_of: AsOf) -> Result<Basis, LookupError> {
        let head = self.reader.head();
        match as_of {
            AsOf::Head => Ok(Basis {
                size: head.size,
                head_hash: head.last_hash,
                recorded_at: head.last_recorded_at,
            }),
            AsOf::Size(n) if n > head.size => Err(LookupError::OutOfRange(FieldError::new(
                "as_of.log_size",
                format!("{n} is larger than the durable log ({})", head.size),
            ))),
            AsOf::Size(n) => self.basis_at(n),
            AsOf::RecordedAt(t) => {
                // Recorded times increase with position: binary search the count recorded ≤ t.
                let (mut lo, mut hi) = (0u64, head.size);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    let bytes = self.reader.entry(mid)?;
                    let at = entry::decode_header(&bytes)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?
                        .recorded_at;
                    if at <= t {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                self.basis_at(lo)
            }
        }
    }

    /// Was the selected key valid at `t`, as known at `basis`? Only what `view` sends is
    /// computed.
    pub fn validity(
        &self,
        selector: &Selector,
        t: Time,
        basis: &Basis,
        view: View,
    ) -> Result<Validity, LookupError> {
        Ok(validity::check_in_view(&self.state(), selector, t, basis.size, view)?)
    }

    /// Many questions on one basis, each answered as [`Lookups::validity`] answers it.
    pub fn validity_batch(
        &self,
        questions: &[(Selector, Time)],
        basis: &Basis,
        view: View,
    ) -> Result<Vec<Validity>, LookupError> {
        if questions.len() > MAX_BATCH {
            return Err(invalid(
                "queries",
                format!("at most {MAX_BATCH} questions per call, got {}", questions.len()),
            ));
        }
        let state = self.state();
        on_every_core(questions, 256, |(s, t)| {
            validity::check_in_view(&state, s, *t, basis.size, view)
        })
    }

    /// Validates signed meter values against the registry as known at `basis`, on every core
    /// when there are many (each record costs a signature verification or more).
    pub fn meter_values(
        &self,
        inputs: &[Input],
        basis: &Basis,
    ) -> Result<Vec<Validation>, LookupError> {
        if inputs.len() > MAX_BATCH {
            return Err(invalid(
                "values",
                format!("at most {MAX_BATCH} records per call, got {}", inputs.len()),
            ));
        }
        let state = self.state();
        on_every_core(inputs, 16, |i| {
            signed_values::validate(&i.record, i.claimed_key.as_deref(), &state, basis.size)
        })
    }

    /// A key's record, if it was registered before the basis.
    pub fn key(&self, fingerprint: &str, basis: &Basis) -> Result<Arc<KeyRecord>, LookupError> {
        self.state().key(fingerprint)?.filter(|r| r.registered_at() < basis.size).ok_or_else(|| {
            LookupError::NotFound(FieldError::new(
                "fingerprint",
                format!("no key {fingerprint} is registered at log size {}", basis.size),
            ))
        })
    }

    /// A page of an identifier's history as known at `basis`, newest first, from `start` (a
    /// position from a previous page) or from the latest entry.
    pub fn history(
        &self,
        identifier: &Identifier,
        basis: &Basis,
        start: Option<u64>,
        page_size: usize,
    ) -> Result<HistoryPage, LookupError> {
        let mut next = match start {
            Some(p) if p >= basis.size => {
                return Err(LookupError::OutOfRange(FieldError::new(
                    "page_token",
                    "points past the basis",
                )));
            }
            Some(p) => Some(p),
            None => self.map.latest(identifier)?,
        };
        let mut entries = Vec::new();
        while let Some(p) = next {
            if p < basis.size && entries.len() == page_size {
                break;
            }
            let bytes = self
                .reader
                .store()
                .entry(p)?
                .ok_or_else(|| StoreError::Corrupt(format!("entry {p} is missing")))?;
            let decoded = Entry::decode(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("entry {p}: {e}")))?;
            let link = decoded.body.links.iter().find(|l| l.identifier == *identifier).ok_or_else(
                || {
                    StoreError::Corrupt(format!(
                        "entry {p} has no back-link for {}",
                        identifier.value
                    ))
                },
            )?;
            next = link.previous;
            if p < basis.size {
                entries.push((p, bytes, decoded));
            }
        }
        Ok(HistoryPage { entries, next })
    }

    /// An operator and its signing keys.
    pub fn operator(
        &self,
        id: &OperatorId,
    ) -> Result<(OperatorRecord, Vec<SignerRecord>), LookupError> {
        let state = self.state();
        let op = state.operator(id)?.ok_or_else(|| {
            LookupError::NotFound(FieldError::new("operator_id", format!("no operator {id}")))
        })?;
        let mut signers = Vec::new();
        for k in &op.keys {
            if let Some(s) = state.signer(k)? {
                signers.push(s);
            }
        }
        Ok((op, signers))
    }
}

/// Calls of [`on_every_core`] running now.
static SPREADING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Answers `items` in order, spread over the cores once there are at least `min_per_core` per
/// core (below that, starting threads costs more than it saves). Concurrent calls share the
/// cores instead of each taking all of them: under load, extra threads only contend.
fn on_every_core<I: Sync, T: Send, E: Send>(
    items: &[I],
    min_per_core: usize,
    one: impl Fn(&I) -> Result<T, E> + Sync,
) -> Result<Vec<T>, LookupError>
where
    LookupError: From<E>,
{
    use std::sync::atomic::Ordering;
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            SPREADING.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let running = SPREADING.fetch_add(1, Ordering::Relaxed) + 1;
    let _leave = Leave;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / running).min(items.len() / min_per_core.max(1)).max(1);
    if threads == 1 {
        return Ok(items.iter().map(&one).collect::<Result<_, _>>()?);
    }
    let per = items.len().div_ceil(threads);
    let one = &one;
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(one).collect::<Result<Vec<_>, _>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for p in parts {
            let part = p.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            out.extend(part?);
        }
        Ok(out)
    })
}

//! The registry's [`Machine`]: the key lifecycle rules of `registry_core::lifecycle`, run
//! inside the log writer against the projections.
//!
//! `decide` turns a proposal into the entry body (events plus back-links) or a rejection;
//! `apply` folds the appended entry into the projections in the same atomic write. Both read the
//! projections through the batch view, so each command sees every earlier one.

use registry_core::entry::{EntryBody, EntryHeader};
use registry_core::lifecycle::{self, ApplyError, DecideContext, Policy, Proposal, Rejection};

use std::sync::Arc;

use crate::key_cache::KeyCache;
use crate::log::{CopiedEntry, Decided, EntryContext, Machine, MachineError, OnDurable, View};
use crate::map::{MapWriter, SharedMap};
use crate::projection::Projection;
use crate::store::{LogStore, StoreError};

/// A proposal with the request ID its entry will carry.
#[derive(Debug, Clone)]
pub struct Job {
    /// The request ID.
    pub request_id: uuid::Uuid,
    /// What to decide.
    pub proposal: Proposal,
}

/// See the module documentation.
#[derive(Debug)]
pub struct RegistryMachine {
    policy: Policy,
    /// The registry's origin, read from the store at `open`: copied commands must be signed
    /// for it.
    origin: Option<String>,
    map: MapWriter,
    cache: Arc<KeyCache>,
}

impl RegistryMachine {
    /// A machine with these policy knobs, publishing its map to `map` and every key record and
    /// index group it writes to `cache`.
    pub fn new(policy: Policy, map: Arc<SharedMap>, cache: Arc<KeyCache>) -> Self {
        Self { policy, origin: None, map: MapWriter::new(map), cache }
    }
}

impl Machine for RegistryMachine {
    type Command = Job;
    type Rejection = Rejection;
    type Effects = EntryBody;
    type Copied = registry_core::replay::Prepared;

    fn check_copied(
        &mut self,
        position: u64,
        copied: Self::Copied,
        view: &View<'_>,
    ) -> Result<CopiedEntry<EntryBody>, MachineError<String>> {
        use registry_core::replay::{self, CheckError};
        let state = Projection::cached(view, self.cache.clone()).with_buckets(self.map.buckets());
        let entry =
            replay::check_entry(&state, self.origin.as_deref(), position, copied).map_err(|e| {
                match e {
                    CheckError::Refused(e) => MachineError::Rejected(e.to_string()),
                    CheckError::State(e) => MachineError::Store(e),
                }
            })?;
        let digest = replay::request_digest(&entry.body).ok_or_else(|| {
            MachineError::Rejected(format!("entry {position}: a registry entry of no known action"))
        })?;
        Ok(CopiedEntry {
            header: entry.header,
            request: (entry.body.request_id, digest),
            effects: entry.body,
        })
    }

    fn decide(
        &mut self,
        job: &Job,
        context: &EntryContext,
        view: &View<'_>,
    ) -> Result<Decided<EntryBody>, MachineError<Rejection>> {
        let state = Projection::cached(view, self.cache.clone()).with_buckets(self.map.buckets());
        let ctx = DecideContext {
            now: context.recorded_at,
            published_size: context.published_size,
            policy: self.policy,
        };
        let events = lifecycle::decide(&job.proposal, &ctx, &state).map_err(|e| match e {
            lifecycle::DecideError::Rejected(r) => MachineError::Rejected(r),
            lifecycle::DecideError::State(e) => MachineError::Store(e),
        })?;
        let links = lifecycle::links(&events, &state)?;
        let command = match &job.proposal {
            Proposal::Signed { envelope, .. } => Some(envelope.clone()),
            Proposal::Registry(_) => None,
        };
        let body = EntryBody { request_id: job.request_id, command, events, links };
        Ok(Decided { body: body.encode(), effects: body })
    }

    fn apply(
        &mut self,
        header: &EntryHeader,
        body: &EntryBody,
        view: &mut View<'_>,
    ) -> Result<(), StoreError> {
        let mut state =
            Projection::cached(view, self.cache.clone()).with_buckets(self.map.buckets());
        lifecycle::apply(header, body, &mut state).map_err(|e| match e {
            ApplyError::State(e) => e,
            // decide produced events that apply cannot fold in: a bug, and the writer must stop.
            ApplyError::Inconsistent { position, message } => {
                StoreError::Corrupt(format!("entry {position} does not apply: {message}"))
            }
        })
    }

    fn open(&mut self, store: &Arc<dyn LogStore>, size: u64) -> Result<(), StoreError> {
        self.origin =
            store.meta(crate::store::ORIGIN)?.map(|o| String::from_utf8_lossy(&o).into_owned());
        let started = std::time::Instant::now();
        let mut buckets = crate::map::MapBuckets::load(store)?;
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "map buckets loaded");
        buckets.decode_in_background();
        // One copy of the buckets serves the replay and then the writer.
        crate::projection::catch_up(store.as_ref(), self.cache.clone(), &mut buckets, size)
            .map_err(|e| match e {
                crate::projection::RebuildError::Store(e) => e,
                crate::projection::RebuildError::Entry { position, message } => {
                    StoreError::Corrupt(format!("entry {position} does not replay: {message}"))
                }
            })?;
        self.map.open(buckets, size);
        Ok(())
    }

    fn finish_batch(
        &mut self,
        size: u64,
        _view: &mut View<'_>,
        extensions: bool,
    ) -> Result<OnDurable, StoreError> {
        self.map.finish_batch(extensions);
        let publication = self.map.publication(size);
        Ok(Some(Box::new(move || publication.publish())))
    }

    fn write_held_back(&mut self, view: &mut View<'_>) {
        self.map.write_held_back(view);
    }

    fn holds_back(&self) -> bool {
        self.map.holds_back()
    }

    /// Empty while the map's tree lags its buckets (never after a `finish_batch` that asked
    /// for the extension lines): a replica then compares nothing equal and stops, a primary
    /// signs no map root, and neither states a wrong one.
    fn checkpoint_extensions(&self) -> Vec<String> {
        self.map.root().map(|root| registry_core::map::extension_line(&root)).into_iter().collect()
    }

    fn has_extensions(&self) -> bool {
        true
    }
}

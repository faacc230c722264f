//! Replaying a log from its first entry, re-checking everything the registry claims.
//!
//! For every entry, in order: the hash chain (position, link to the previous entry's hash,
//! strictly increasing recorded time); for a command, that its signer was a known, unrevoked key
//! *at that point of the log*, that the signature verifies over the exact bytes, and that the
//! request ID is the command's; for a registry entry, that its request ID is the one derived from
//! its action; then that the events are exactly what the lifecycle rules derive from the command
//! against the state so far, and the back-links exactly what the state says. At the end: the
//! Merkle root and the map root against a signed checkpoint. This is the auditor's
//! `registry audit verify` and the mirror's `registry audit follow`.
//!
//! [`Replayer::push_all`] does the same for many entries at once: worker threads do what needs
//! no state (decoding, and checking each command's signature against the key its key ID names,
//! if the replay knew that key when the batch began) while the calling thread runs the
//! state-dependent checks (was that key in force *at that point*?) in order, chunk by chunk as
//! the workers finish them. The verdicts are exactly those of [`Replayer::push`], only sooner.

use chrono::TimeDelta;

use crate::checkpoint::Checkpoint;
use crate::command::Command;
use crate::entry::{ChainError, ChainVerifier, Entry};
use crate::event::Event;
use crate::lifecycle::{self, DecideContext, MemoryState, Policy, Proposal, RegistryAction, State};
use crate::map::{self, MemoryMap};
use crate::merkle::{Frontier, Hash};

/// What is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", position.map(|p| format!("entry {p}: ")).unwrap_or_default())]
pub struct ReplayError {
    /// The first bad position, when an entry is to blame.
    pub position: Option<u64>,
    /// What is wrong there.
    pub reason: String,
}

impl ReplayError {
    fn at(position: u64, reason: impl Into<String>) -> Self {
        Self { position: Some(position), reason: reason.into() }
    }
}

/// A link error: the chain breaks between `position - 1` and `position`. Which of the two was
/// altered only the signed root can tell; see [`locate_break`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The entry whose `prev_hash` does not match.
    pub position: u64,
    /// The hash it claims for the entry before it.
    pub claimed_prev: Hash,
}

/// One entry's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// All checks passed.
    Ok,
    /// The chain breaks here (see [`Break`]).
    Break(Break),
}

/// What an entry's check needs that does not depend on the state before it: decoded, and its
/// command's signature checked against the key its key ID named when it was prepared. Built on
/// any thread ([`Prepared::new`]); [`check_entry`] then runs the checks that need the state, in
/// log order. A replay and a replica's copy prepare entries on every core this way.
#[derive(Debug)]
pub struct Prepared {
    entry: Result<Entry, String>,
    /// The signed command, decoded, for an entry that carries one.
    command: Option<Result<Command, String>>,
    /// The signature checked against the signer key known when the batch began: (that key's
    /// DER, verdict). `None` when the key was not known yet; the check then runs in order.
    signature: Option<(Vec<u8>, bool)>,
}

/// Command-signing keys by key ID (DER SubjectPublicKeyInfo), revoked ones included: whether a
/// key was in force is checked in order, the signature itself need not be.
type SignerKeys = std::collections::HashMap<[u8; 32], Vec<u8>>;

impl Prepared {
    /// Decodes `bytes` and checks its command's signature against `key_of(signer key ID)`, the
    /// key (DER) the caller believes that ID names, if any. The belief need not be right:
    /// [`check_entry`] reuses the verdict only when the key in force at that point is the same.
    pub fn new(bytes: &[u8], key_of: impl Fn(&[u8; 32]) -> Option<Vec<u8>>) -> Self {
        let mut prepared = Self::decode(bytes);
        prepared.check_signature(key_of);
        prepared
    }

    /// Decodes `bytes` without checking a signature yet: a caller that prepares many entries
    /// at once first learns the signer keys their events add ([`Prepared::added_signer_keys`]),
    /// so that commands signed with a key added a few entries earlier are checked ahead too.
    pub fn decode(bytes: &[u8]) -> Self {
        let entry = Entry::decode(bytes).map_err(|e| format!("malformed: {e}"));
        let command = match &entry {
            Ok(Entry { body: crate::entry::EntryBody { command: Some(envelope), .. }, .. }) => {
                Some(
                    Command::decode(&envelope.command)
                        .map_err(|e| format!("the signed command is malformed: {e}")),
                )
            }
            _ => None,
        };
        Self { entry, command, signature: None }
    }

    /// Checks the command's signature against `key_of(signer key ID)`, as [`Prepared::new`]
    /// does.
    pub fn check_signature(&mut self, key_of: impl Fn(&[u8; 32]) -> Option<Vec<u8>>) {
        if let Ok(Entry { body: crate::entry::EntryBody { command: Some(envelope), .. }, .. }) =
            &self.entry
        {
            self.signature = key_of(&envelope.signer_key_id).map(|key| {
                let ok = envelope.verify(&key);
                (key, ok)
            });
        }
    }

    /// The verdict of the signature check done ahead, if the signer's key was known then.
    pub fn checked_ahead(&self) -> Option<bool> {
        self.signature.as_ref().map(|(_, ok)| *ok)
    }

    /// The command-signing keys (DER) this entry's events add, administrators' and
    /// operators', whether or not the entry turns out valid: a key is only ever a guess for
    /// [`Prepared::check_signature`], which [`check_entry`] confirms against the state.
    pub fn added_signer_keys(&self) -> impl Iterator<Item = &[u8]> {
        let events = self.entry.as_ref().map(|e| e.body.events.as_slice()).unwrap_or_default();
        events
            .iter()
            .flat_map(|event| match event {
                Event::AdminKeyAdded { public_key, .. }
                | Event::OperatorKeyAdded { public_key, .. } => std::slice::from_ref(public_key),
                Event::OperatorAdded { public_keys, .. } => public_keys.as_slice(),
                _ => &[],
            })
            .map(Vec::as_slice)
    }
}

/// Why [`check_entry`] refused an entry.
#[derive(Debug)]
pub enum CheckError<E> {
    /// The entry breaks a rule: the log is not what the registry's rules produce.
    Refused(ReplayError),
    /// The state could not be read.
    State(E),
}

/// Entries per unit of work handed to a preparing thread.
const PREPARE_CHUNK: usize = 128;

/// See the module documentation.
#[derive(Debug)]
pub struct Replayer {
    chain: ChainVerifier,
    frontier: Frontier,
    leaves: Vec<Hash>,
    state: MemoryState,
    /// The registry's checkpoint origin, when known: a command signed for another registry is
    /// then refused.
    origin: Option<String>,
}

impl Default for Replayer {
    fn default() -> Self {
        Self::new()
    }
}

/// Effective times are checked against recorded times with the registry's tolerance, which a
/// deployment may widen; replay accepts any, and checks everything else.
const REPLAY_POLICY: Policy = Policy { max_future: TimeDelta::days(365 * 100) };

impl Replayer {
    /// A replay from position 0.
    pub fn new() -> Self {
        Self {
            chain: ChainVerifier::new(),
            frontier: Frontier::new(),
            leaves: Vec::new(),
            state: MemoryState::default(),
            origin: None,
        }
    }

    /// A replay from position 0 of the log of the registry whose checkpoint origin is `origin`:
    /// besides everything [`Replayer::new`] checks, every command that names a registry must
    /// name this one.
    pub fn for_registry(origin: &str) -> Self {
        Self { origin: Some(origin.to_string()), ..Self::new() }
    }

    /// Entries replayed so far.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Every leaf hash so far.
    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }

    /// The state derived so far.
    pub fn state(&self) -> &MemoryState {
        &self.state
    }

    /// Replays the next entry.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Step, ReplayError> {
        // No keys up front: the signature is checked in order, against the state.
        let prepared = Prepared::new(bytes, |_| None);
        self.push_prepared(bytes, prepared)
    }

    fn signer_keys(&self) -> SignerKeys {
        self.state.signers.iter().map(|(id, r)| (*id, r.public_key.clone())).collect()
    }

    /// Replays the next entries, preparing them on every core (see the module documentation).
    /// Stops at the first break; the entries before it are replayed, so [`Replayer::size`] tells
    /// where it is.
    pub fn push_all(&mut self, entries: &[Vec<u8>]) -> Result<Step, ReplayError> {
        let keys = self.signer_keys();
        let chunks: Vec<&[Vec<u8>]> = entries.chunks(PREPARE_CHUNK).collect();
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(chunks.len());
        if workers <= 1 {
            for bytes in entries {
                if let Step::Break(b) = self.push(bytes)? {
                    return Ok(Step::Break(b));
                }
            }
            return Ok(Step::Ok);
        }
        std::thread::scope(|s| {
            // Worker w prepares chunks w, w + workers, ... and sends them in that order, so chunk
            // i arrives on channel i % workers after chunk i - workers.
            let receivers: Vec<_> = (0..workers)
                .map(|w| {
                    let (tx, rx) = std::sync::mpsc::channel();
                    let (chunks, keys) = (&chunks, &keys);
                    s.spawn(move || {
                        for chunk in chunks.iter().skip(w).step_by(workers) {
                            let prepared: Vec<Prepared> = chunk
                                .iter()
                                .map(|b| Prepared::new(b, |id| keys.get(id).cloned()))
                                .collect();
                            if tx.send(prepared).is_err() {
                                return; // the replay stopped early
                            }
                        }
                    });
                    rx
                })
                .collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let prepared = match receivers[i % workers].recv() {
                    Ok(p) => p,
                    // A worker died (a bug): prepare here instead.
                    Err(_) => {
                        chunk.iter().map(|b| Prepared::new(b, |id| keys.get(id).cloned())).collect()
                    }
                };
                for (bytes, p) in chunk.iter().zip(prepared) {
                    if let Step::Break(b) = self.push_prepared(bytes, p)? {
                        return Ok(Step::Break(b));
                    }
                }
            }
            Ok(Step::Ok)
        })
    }

    fn push_prepared(&mut self, bytes: &[u8], prepared: Prepared) -> Result<Step, ReplayError> {
        let position = self.chain.next_position();
        let leaf = match self.chain.push(bytes) {
            Ok(leaf) => leaf,
            Err(ChainError::Link { position }) => {
                let claimed_prev =
                    crate::entry::decode_header(bytes).map(|h| h.prev_hash).unwrap_or_default();
                return Ok(Step::Break(Break { position, claimed_prev }));
            }
            Err(e) => return Err(ReplayError::at(e.position(), e.to_string())),
        };
        let entry =
            check_entry(&self.state, self.origin.as_deref(), position, prepared).map_err(|e| {
                match e {
                    CheckError::Refused(e) => e,
                    CheckError::State(e) => match e {},
                }
            })?;
        lifecycle::apply(&entry.header, &entry.body, &mut self.state)
            .map_err(|e| ReplayError::at(position, format!("does not apply: {e}")))?;
        self.frontier.push(leaf);
        self.leaves.push(leaf);
        Ok(Step::Ok)
    }

    /// The Merkle root of the first `size` entries replayed.
    pub fn root_at(&self, size: u64) -> Hash {
        crate::merkle::MemoryTree::new(self.leaves[..size as usize].to_vec()).mth(0, size)
    }

    /// Checks the replayed log against a signed checkpoint of the same size: Merkle root and, if
    /// the checkpoint carries one, map root.
    pub fn finish(&self, checkpoint: &Checkpoint) -> Result<(), ReplayError> {
        if checkpoint.size != self.size() {
            return Err(ReplayError {
                position: None,
                reason: format!(
                    "the log holds {} entries but the checkpoint covers {}",
                    self.size(),
                    checkpoint.size
                ),
            });
        }
        if self.frontier.root() != checkpoint.root {
            // Every other entry's hash is pinned by its successor's link; only the last one's is not.
            return Err(ReplayError::at(
                self.size().saturating_sub(1),
                "the entry does not hash to what the signed checkpoint's root commits to",
            ));
        }
        if let Some(root) = map::root_from_extensions(&checkpoint.extensions) {
            let mut m = MemoryMap::default();
            for (id, p) in &self.state.latest {
                m.set(id, *p);
            }
            if m.root() != root {
                return Err(ReplayError {
                    position: None,
                    reason: "the checkpoint's map root is not the map of the log's latest entries"
                        .into(),
                });
            }
        }
        Ok(())
    }
}

/// Checks the entry at `position` against `state`, the state after every entry before it
/// (see the module documentation for what is checked; the chain and the Merkle tree are the
/// caller's), and returns it decoded. `origin`, when known, is the registry every command that
/// names one must name. The events and back-links are re-derived with the rules and compared.
pub fn check_entry<S: State>(
    state: &S,
    origin: Option<&str>,
    position: u64,
    prepared: Prepared,
) -> Result<Entry, CheckError<S::Error>> {
    let Prepared { entry, command, signature } = prepared;
    let entry = entry.map_err(|e| refused(position, e))?;
    let body = &entry.body;
    let confirmed_size = body.events.iter().find_map(|e| match e {
        Event::KeyConfirmed { published_in_tree_size, .. } => Some(*published_in_tree_size),
        _ => None,
    });
    if confirmed_size.is_some_and(|s| s > position) {
        return Err(refused(position, "a confirmation claims a publication after itself"));
    }
    let ctx = DecideContext {
        now: entry.header.recorded_at,
        published_size: confirmed_size.unwrap_or(position),
        policy: REPLAY_POLICY,
    };
    let proposal = match &body.command {
        Some(envelope) => {
            let signer = state
                .signer(&envelope.signer_key_id)
                .map_err(CheckError::State)?
                .ok_or_else(|| {
                    refused(
                        position,
                        "the command is signed by a key the log does not know at this point",
                    )
                })?;
            if let Some(revoked) = signer.revoked_position {
                return Err(refused(
                    position,
                    format!("the command is signed by a key revoked at entry {revoked}"),
                ));
            }
            let verified = match signature {
                Some((key, ok)) if key == signer.public_key => ok,
                _ => envelope.verify(&signer.public_key),
            };
            if !verified {
                return Err(refused(
                    position,
                    "the command's signature does not verify with its signer's key",
                ));
            }
            if let (Some(origin), Some(named)) = (origin, &envelope.registry)
                && named != origin
            {
                return Err(refused(
                    position,
                    format!("the command is signed for registry {named:?}, not {origin:?}"),
                ));
            }
            let command = match command {
                Some(c) => c.map_err(|e| refused(position, e))?,
                None => Command::decode(&envelope.command).map_err(|e| {
                    refused(position, format!("the signed command is malformed: {e}"))
                })?,
            };
            if command.request_id != body.request_id {
                return Err(refused(position, "the entry's request ID is not the command's"));
            }
            Proposal::Signed { envelope: envelope.clone(), command }
        }
        None => {
            let action = registry_action(&body.events).ok_or_else(|| {
                refused(position, "a registry entry with events the registry does not write itself")
            })?;
            if !action.has_request_id(&body.request_id) {
                return Err(refused(
                    position,
                    "the registry entry's request ID is not the one derived from its action",
                ));
            }
            Proposal::Registry(action)
        }
    };
    let events = lifecycle::decide(&proposal, &ctx, state).map_err(|e| match e {
        lifecycle::DecideError::Rejected(r) => {
            refused(position, format!("the rules refuse this command: {r}"))
        }
        lifecycle::DecideError::State(e) => CheckError::State(e),
    })?;
    if events != body.events {
        return Err(refused(position, "the events are not what the rules derive from the command"));
    }
    let links = lifecycle::links(&events, state).map_err(CheckError::State)?;
    if links != body.links {
        return Err(refused(
            position,
            "the back-links are not the previous entries of the identifiers touched",
        ));
    }
    Ok(entry)
}

fn refused<E>(position: u64, reason: impl Into<String>) -> CheckError<E> {
    CheckError::Refused(ReplayError::at(position, reason))
}

/// The content digest the registry's request index keeps for an entry (its request ID is
/// `body.request_id`): SHA-256 of the command bytes for a signed command, the action's digest
/// for an entry the registry wrote itself. `None` for a registry entry of no known action.
/// What a restore from an archive rebuilds the index with, so retries still find their entry.
pub fn request_digest(body: &crate::entry::EntryBody) -> Option<[u8; 32]> {
    match &body.command {
        Some(envelope) => Some(envelope.digest()),
        None => registry_action(&body.events).map(|a| a.request_id().1),
    }
}

fn registry_action(events: &[Event]) -> Option<RegistryAction> {
    if !events.is_empty() && events.iter().all(|e| matches!(e, Event::AdminKeyAdded { .. })) {
        let admins = events
            .iter()
            .filter_map(|e| match e {
                Event::AdminKeyAdded { public_key, label } => {
                    Some((public_key.clone(), label.clone()))
                }
                _ => None,
            })
            .collect();
        return Some(RegistryAction::Bootstrap { admins });
    }
    match events {
        [Event::KeyConfirmed { fingerprint, registration_position, .. }] => {
            Some(RegistryAction::AutoConfirm {
                fingerprint: fingerprint.clone(),
                registration: *registration_position,
            })
        }
        _ => None,
    }
}

/// Decides which side of a chain break was altered: if the leaves with entry `position - 1`'s
/// hash replaced by the one entry `position` claims give the signed root, entry `position - 1`
/// was changed; otherwise `position` was (its `prev_hash`). `leaves` must hold every leaf of the
/// checkpoint's tree as read.
pub fn locate_break(brk: &Break, leaves: &[Hash], checkpoint: &Checkpoint) -> u64 {
    if brk.position == 0 || leaves.len() as u64 != checkpoint.size {
        return brk.position;
    }
    let mut fixed = leaves.to_vec();
    fixed[brk.position as usize - 1] = brk.claimed_prev;
    let root = crate::merkle::MemoryTree::new(fixed).mth(0, checkpoint.size);
    if root == checkpoint.root { brk.position - 1 } else { brk.position }
}

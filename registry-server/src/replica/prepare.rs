//! A replica's checks that need no state, ahead of its log writer: a pool of threads, one per
//! core at lowered priority, that decode copied entries and check their commands' signatures.
//!
//! Messages are cut into chunks that the threads take oldest first, so a message is ready as
//! soon as possible, in the order messages came, and no core waits for another's last chunk
//! while the next message has work. A signer key is looked for among the keys the entries
//! prepared before add, then in the replica's state: a log's first entries add the keys its
//! next commands are signed with, which the writer may not have applied yet; without them those
//! commands would be checked one by one on the writer's thread. Whatever is guessed here, the
//! writer confirms against the state in order (`registry_core::replay::check_entry`); a key a
//! chunk misses only costs the writer that check.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use registry_core::keys;
use registry_core::lifecycle::State;
use registry_core::replay::Prepared;

use crate::projection::Projection;
use crate::store::LogStore;

/// Entries per chunk: small enough that two threads finish a message together, large enough
/// that taking one costs nothing next to checking its signatures (tens of microseconds each).
const CHUNK: usize = 256;

/// An entry's bytes, and what was prepared of it.
pub type PreparedEntry = (Vec<u8>, Prepared);

/// See the module documentation. Dropping it stops the threads once they finish their chunk.
pub struct Preparer {
    chunks: mpsc::Sender<Chunk>,
}

struct Chunk {
    entries: Vec<Vec<u8>>,
    done: tokio::sync::oneshot::Sender<Vec<PreparedEntry>>,
}

/// What the threads share.
struct Shared {
    store: Arc<dyn LogStore>,
    /// Signer keys (DER) by key ID, from the entries prepared so far and the state.
    learned: Mutex<HashMap<[u8; 32], Vec<u8>>>,
    chunks: Mutex<mpsc::Receiver<Chunk>>,
}

impl Preparer {
    /// Starts `threads` threads preparing entries of the log in `store`.
    pub fn start(store: Arc<dyn LogStore>, threads: usize) -> Self {
        let (chunks, receiver) = mpsc::channel();
        let shared =
            Arc::new(Shared { store, learned: Mutex::default(), chunks: Mutex::new(receiver) });
        for _ in 0..threads.max(1) {
            let shared = shared.clone();
            let started = std::thread::Builder::new()
                .name("replica-prepare".into())
                .spawn(move || shared.run());
            if let Err(e) = started {
                // Fewer threads only make the copy slower; none at all, and every message
                // fails to prepare, which stops the follower with that reason.
                tracing::warn!(error = %e, "a replica preparing thread did not start");
            }
        }
        Self { chunks }
    }

    /// Prepares `entries`; the task ends with them, in order, or with `None` if a thread died.
    pub fn prepare(
        &self,
        entries: Vec<Vec<u8>>,
    ) -> tokio::task::JoinHandle<Option<Vec<PreparedEntry>>> {
        let count = entries.len();
        let mut answers = Vec::with_capacity(count.div_ceil(CHUNK));
        let mut rest = entries.into_iter();
        loop {
            let entries: Vec<Vec<u8>> = rest.by_ref().take(CHUNK).collect();
            if entries.is_empty() {
                break;
            }
            let (done, answer) = tokio::sync::oneshot::channel();
            // A send fails only when no thread is left; the answer's error says so below.
            let _ = self.chunks.send(Chunk { entries, done });
            answers.push(answer);
        }
        tokio::spawn(async move {
            let mut prepared = Vec::with_capacity(count);
            for answer in answers {
                prepared.extend(answer.await.ok()?);
            }
            Some(prepared)
        })
    }
}

impl Shared {
    fn run(&self) {
        lower_priority();
        loop {
            let next = self.chunks.lock().unwrap_or_else(|e| e.into_inner()).recv();
            let Ok(Chunk { entries, done }) = next else { return };
            // The follower may have given up on this message (its session ended).
            let _ = done.send(self.prepare(entries));
        }
    }

    fn prepare(&self, entries: Vec<Vec<u8>>) -> Vec<PreparedEntry> {
        let mut prepared: Vec<PreparedEntry> = entries
            .into_iter()
            .map(|b| {
                let p = Prepared::decode(&b);
                (b, p)
            })
            .collect();
        {
            let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
            for (_, p) in &prepared {
                for key in p.added_signer_keys() {
                    learned.insert(keys::fingerprint(key), key.to_vec());
                }
            }
        }
        for (_, p) in &mut prepared {
            p.check_signature(|id| self.key(id));
        }
        prepared
    }

    /// The key `id` names, as far as is known here.
    fn key(&self, id: &[u8; 32]) -> Option<Vec<u8>> {
        if let Some(key) = self.learned.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Some(key.clone());
        }
        let stored = Projection::new(self.store.as_ref()).signer(id).ok().flatten()?.public_key;
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        Some(learned.entry(*id).or_insert(stored).clone())
    }
}

/// Lowers the calling thread's scheduling priority: the checks that need no state yield the
/// cores to the log writer, which checks and stores in order and so sets the copy's pace.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let me = rustix::thread::gettid();
        // A thread that cannot be lowered only competes with the writer as before.
        let _ = rustix::process::setpriority_process(Some(me), 10);
    }
}

#[cfg(test)]
mod tests {
    use registry_core::command::SignedCommand;
    use registry_core::entry::{Entry, EntryBody, EntryHeader, ZERO_HASH, encode_entry};
    use registry_core::event::Event;
    use registry_core::ids::OperatorId;
    use registry_core::keys::P256KeyPair;

    use super::*;
    use crate::store::memory::MemoryStore;

    /// An entry at `position` whose command `signer` signed and whose events are `events`.
    /// What is prepared here needs no more: the rules run later, on the writer.
    fn entry(position: u64, signer: &P256KeyPair, events: Vec<Event>) -> Vec<u8> {
        let command = SignedCommand::sign(position.to_be_bytes().to_vec(), "test/log", signer);
        let body = EntryBody {
            request_id: uuid::Uuid::new_v4(),
            command: Some(command),
            events,
            links: Vec::new(),
        };
        let recorded_at = registry_core::time::parse("2026-01-01T00:00:00Z").expect("a time");
        encode_entry(&EntryHeader { position, recorded_at, prev_hash: ZERO_HASH }, &body.encode())
    }

    fn operator_added(key: &P256KeyPair) -> Event {
        Event::OperatorAdded {
            operator_id: OperatorId::parse("DE*ABC").expect("an operator ID"),
            name: "Operator".into(),
            public_keys: vec![key.public_key_der().to_vec()],
        }
    }

    /// `entry(position, stranger)` claiming to be signed by `claimed`.
    fn forged(position: u64, claimed: &P256KeyPair) -> Vec<u8> {
        let bytes = entry(position, &P256KeyPair::generate(), Vec::new());
        let mut e = Entry::decode(&bytes).expect("an entry");
        e.body.command.as_mut().expect("a command").signer_key_id = claimed.fingerprint();
        encode_entry(&e.header, &e.body.encode())
    }

    #[tokio::test]
    async fn commands_signed_with_a_key_the_copy_added_before_are_checked_ahead() {
        let (admin, operator) = (P256KeyPair::generate(), P256KeyPair::generate());
        // One thread takes the chunks in order: every chunk knows what the ones before add.
        let preparer = Preparer::start(Arc::new(MemoryStore::new()), 1);
        // The first message adds the operator's key and goes on with its commands, over more
        // than one chunk; the state knows neither key, since nothing was applied yet.
        let mut first = vec![entry(0, &admin, vec![operator_added(&operator)])];
        first.extend((1..600).map(|p| entry(p, &operator, Vec::new())));
        let prepared = preparer.prepare(first).await.unwrap().unwrap();
        assert_eq!(prepared.len(), 600);
        assert_eq!(prepared[0].1.checked_ahead(), None, "the admin key is nowhere yet");
        assert!(prepared[1..].iter().all(|(_, p)| p.checked_ahead() == Some(true)));
        // The next message knows the key from the one before, and a bad signature stays bad.
        let mut second: Vec<Vec<u8>> =
            (600..700).map(|p| entry(p, &operator, Vec::new())).collect();
        second[1] = forged(601, &operator);
        let prepared = preparer.prepare(second).await.unwrap().unwrap();
        let positions: Vec<u64> =
            prepared.iter().map(|(b, _)| Entry::decode(b).unwrap().header.position).collect();
        assert_eq!(positions, (600..700).collect::<Vec<_>>(), "in the order given");
        assert_eq!(prepared[0].1.checked_ahead(), Some(true));
        assert_eq!(prepared[1].1.checked_ahead(), Some(false));
    }

    #[tokio::test]
    async fn many_threads_give_every_entry_back_in_order_with_the_same_verdicts() {
        let operator = P256KeyPair::generate();
        let preparer = Preparer::start(Arc::new(MemoryStore::new()), 4);
        let mut entries = vec![entry(0, &operator, vec![operator_added(&operator)])];
        entries.extend((1..2_000).map(|p| match p % 97 {
            0 => forged(p, &operator),
            _ => entry(p, &operator, Vec::new()),
        }));
        let prepared = preparer.prepare(entries.clone()).await.unwrap().unwrap();
        assert_eq!(prepared.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>(), entries);
        for (p, (_, prepared)) in prepared.iter().enumerate().skip(1) {
            // A chunk taken before the first one's key was learned leaves its checks to the
            // writer (None); a verdict given is always the right one.
            let right = p % 97 != 0;
            assert!(prepared.checked_ahead().is_none_or(|ok| ok == right), "entry {p}");
        }
    }
}

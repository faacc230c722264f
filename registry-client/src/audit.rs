//! The auditor's tools: export the log into an [`Archive`], verify an archive offline, and
//! follow a registry to keep an archive current.
//!
//! Export and follow check the registry as they go: every checkpoint is verified with the
//! registry's key, a resumed archive's checkpoint must be consistent with the new one (or the
//! registry rewrote its history), and the fetched entries must hash to the signed root. Verify
//! trusts nothing but the registry's public key: it replays every entry with
//! `registry_core::replay` and names the first bad position.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use registry_core::checkpoint::Checkpoint;
use registry_core::merkle::{self, Hash};
use registry_core::replay::{self, Replayer, Step};
use registry_proto::pb;

use crate::archive::{self, Archive, ArchiveError, WIDTH};
use crate::tiles::TileClient;
use crate::{ClientError, RegistryClient};

/// A progress bar on a terminal, nothing otherwise.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} entries ({per_sec}, {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn archive_err(e: ArchiveError) -> ClientError {
    ClientError::Input(e.to_string())
}

fn refuse(what: impl std::fmt::Display) -> ClientError {
    ClientError::Verification(what.to_string())
}

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Entries in the archive now.
    pub size: u64,
    /// Entries fetched by this run.
    pub fetched: u64,
    /// The archive's size before.
    pub previous_size: u64,
}

/// Where an export or a follow reads the log.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The registry's gRPC audit API (which names its key; consistency by proofs).
    Registry(&'a RegistryClient),
    /// A tile server, with the registry key (DER SubjectPublicKeyInfo) the auditor pins:
    /// consistency is checked by recomputing the archived entries' root.
    Tiles(&'a TileClient, &'a [u8]),
}

impl<'a> From<&'a RegistryClient> for Source<'a> {
    fn from(client: &'a RegistryClient) -> Self {
        Source::Registry(client)
    }
}

/// The registry's origin and key as the source tells them.
struct Identity {
    origin: String,
    key_der: Vec<u8>,
    key_pem: String,
}

impl Source<'_> {
    async fn identity(&self) -> Result<Identity, ClientError> {
        match self {
            Source::Registry(client) => {
                let info = client.registry_info().await?;
                Ok(Identity {
                    origin: info.origin,
                    key_der: info.public_key_der,
                    key_pem: info.public_key_pem,
                })
            }
            Source::Tiles(tiles, key) => {
                let text = tiles.checkpoint().await?;
                let cp = archive::open_checkpoint(&text, key)
                    .map_err(|e| refuse(format!("the tile server's checkpoint: {e}")))?;
                let key_pem = registry_core::keys::p256_spki_pem(key)
                    .map_err(|e| ClientError::Input(format!("the registry key: {e}")))?;
                Ok(Identity { origin: cp.origin, key_der: key.to_vec(), key_pem })
            }
        }
    }

    async fn checkpoint(&self) -> Result<String, ClientError> {
        match self {
            Source::Registry(client) => Ok(client.checkpoint(0).await?.checkpoint),
            Source::Tiles(tiles, _) => tiles.checkpoint().await,
        }
    }

    async fn entries(
        &self,
        start: u64,
        end: u64,
        size: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, ClientError> {
        match self {
            Source::Registry(client) => Ok(client
                .entries(start, end)
                .await?
                .into_iter()
                .map(|e| (e.position, e.entry))
                .collect()),
            Source::Tiles(tiles, _) => tiles.entries(start, end, size).await,
        }
    }

    /// Checks that `new` extends `old`: by a consistency proof from the registry, or (tiles)
    /// by the root of `kept`, the archived leaves, which the export extends and checks
    /// against `new` in the end.
    async fn consistent(
        &self,
        old: &Checkpoint,
        new: &Checkpoint,
        kept: &[Hash],
    ) -> Result<(), ClientError> {
        match self {
            Source::Registry(client) => check_consistency(client, old, new).await,
            Source::Tiles(..) => {
                if new.size < old.size {
                    return Err(refuse(format!(
                        "the log ({} entries) is shorter than the checkpoint seen before ({}): it was rolled back",
                        new.size, old.size
                    )));
                }
                if merkle::MemoryTree::new(kept.to_vec()).mth(0, old.size) != old.root {
                    return Err(refuse(
                        "the archive's entries do not hash to its checkpoint's root",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Most entries replayed together (prepared on every core, then checked in order).
const REPLAY_SLICE: usize = 4096;

/// How many entries to replay next: slices grow with the log, because signatures are checked
/// ahead only against keys known when a slice begins, and a log's first entries add them.
fn slice_len(replayed: u64) -> usize {
    (replayed as usize).clamp(16, REPLAY_SLICE)
}

/// Entries fetched and written per step.
const CHUNK: u64 = 64 * WIDTH;

/// Exports (or resumes exporting) the log into `archive`. `from` re-fetches from an earlier
/// position (the entries fetched again must be the archived ones).
pub async fn export<'a>(
    source: impl Into<Source<'a>>,
    archive: &Archive,
    from: Option<u64>,
    bar: &ProgressBar,
) -> Result<Exported, ClientError> {
    let source = source.into();
    let info = source.identity().await?;
    let manifest = archive.manifest().map_err(archive_err)?;
    let previous = match &manifest {
        Some(m) if m.origin != info.origin => {
            return Err(ClientError::Input(format!(
                "the archive is of {}, not {}",
                m.origin, info.origin
            )));
        }
        Some(_) => {
            let text = archive.checkpoint_text().map_err(archive_err)?;
            Some(
                archive::open_checkpoint(&text, &info.key_der)
                    .map_err(|e| refuse(format!("the archive's checkpoint: {e}")))?,
            )
        }
        None => None,
    };
    let previous_size = previous.as_ref().map_or(0, |c| c.size);
    let start = from.unwrap_or(previous_size);
    if start > previous_size {
        return Err(ClientError::Input(format!(
            "--from {start} is past the archive's {previous_size} entries"
        )));
    }
    let head = source.checkpoint().await?;
    let cp = archive::open_checkpoint(&head, &info.key_der)
        .map_err(|e| refuse(format!("the registry's checkpoint: {e}")))?;
    // Leaves of what is kept, then of what is fetched (re-fetched entries must match).
    let kept = archive_leaves(archive, previous_size)?;
    if let Some(old) = &previous {
        source.consistent(old, &cp, &kept).await?;
    }
    let mut leaves: Vec<Hash> = Vec::with_capacity(cp.size as usize);
    leaves.extend_from_slice(&kept[..start as usize]);
    bar.set_length(cp.size);
    bar.set_position(start);
    let mut next = start;
    while next < cp.size {
        let end = (next + CHUNK).min(cp.size);
        let chunk = source.entries(next, end, cp.size).await?;
        let mut bytes = Vec::with_capacity(chunk.len());
        for (position, entry) in chunk {
            if position != next + bytes.len() as u64 {
                return Err(refuse(format!(
                    "the registry sent entry {position} where {} was due",
                    next + bytes.len() as u64
                )));
            }
            let leaf = merkle::leaf_hash(&entry);
            if kept.get(position as usize).is_some_and(|k| *k != leaf) {
                return Err(refuse(format!(
                    "entry {position} differs from the archived one: the registry rewrote it"
                )));
            }
            leaves.push(leaf);
            bytes.push(entry);
        }
        if bytes.len() as u64 != end - next {
            return Err(refuse(format!(
                "the registry sent {} entries from {next}, expected {}",
                bytes.len(),
                end - next
            )));
        }
        archive.write_entries(next, &bytes, &leaves).map_err(archive_err)?;
        bar.set_position(end);
        next = end;
    }
    if merkle::MemoryTree::new(leaves.clone()).mth(0, cp.size) != cp.root {
        return Err(refuse(
            "the entries do not hash to the root of the registry's signed checkpoint",
        ));
    }
    archive.commit(&info.origin, cp.size, &head, &info.key_pem).map_err(archive_err)?;
    bar.finish_and_clear();
    Ok(Exported { size: cp.size, fetched: cp.size - start, previous_size })
}

fn archive_leaves(archive: &Archive, size: u64) -> Result<Vec<Hash>, ClientError> {
    archive.entries(size).map(|e| e.map(|b| merkle::leaf_hash(&b)).map_err(archive_err)).collect()
}

async fn check_consistency(
    client: &RegistryClient,
    old: &Checkpoint,
    new: &Checkpoint,
) -> Result<(), ClientError> {
    if new.size < old.size {
        return Err(refuse(format!(
            "the registry's log ({} entries) is shorter than the checkpoint seen before ({}): it was rolled back",
            new.size, old.size
        )));
    }
    if old.size == 0 {
        return Ok(());
    }
    let proof = client
        .audit()
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            from_size: old.size,
            to_size: new.size,
        })
        .await?
        .into_inner();
    merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof.proof).map_err(|e| {
        refuse(format!(
            "checkpoint {} is not consistent with checkpoint {} seen before ({e}): the registry forked or rewrote its log",
            new.size, old.size
        ))
    })
}

/// What a verified archive holds.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The checkpoint it was verified against.
    pub checkpoint: Checkpoint,
    /// Keys, operators and administrators in the re-derived state.
    pub keys: usize,
    /// Operators.
    pub operators: usize,
    /// Seconds the verification took.
    pub seconds: f64,
    /// What the verification noticed that does not make the archive invalid (for example a
    /// `registry-key.pem` other than the key given).
    pub warnings: Vec<String>,
}

/// Why an archive failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", position.map(|p| format!("entry {p}: ")).unwrap_or_default())]
pub struct Failure {
    /// The first bad position, when an entry is to blame.
    pub position: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

impl From<replay::ReplayError> for Failure {
    fn from(e: replay::ReplayError) -> Self {
        Failure { position: e.position, reason: e.reason }
    }
}

impl From<ArchiveError> for Failure {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Malformed { position, reason } => Failure { position, reason },
            other => Failure { position: None, reason: other.to_string() },
        }
    }
}

/// Verifies an archive offline with the registry's public key (DER SubjectPublicKeyInfo), and
/// optionally its consistency with an earlier checkpoint.
pub fn verify(
    archive: &Archive,
    registry_key: &[u8],
    since: Option<&str>,
    bar: &ProgressBar,
) -> Result<Verified, Failure> {
    let started = Instant::now();
    let text = archive.checkpoint_text()?;
    let checkpoint = archive::open_checkpoint(&text, registry_key).map_err(|e| Failure {
        position: None,
        reason: format!("the archive's checkpoint does not verify: {e}"),
    })?;
    if let Some(m) = archive.manifest()?
        && (m.size != checkpoint.size
            || m.origin != checkpoint.origin
            || m.format != archive::FORMAT)
    {
        return Err(Failure {
            position: None,
            reason: format!(
                "archive.json does not describe the archived checkpoint: it says {:?}, size \
                     {}, origin {:?}; the checkpoint has size {}, origin {:?}",
                m.format, m.size, m.origin, checkpoint.size, checkpoint.origin
            ),
        });
    }
    let mut warnings = Vec::new();
    if archive.registry_key().is_some_and(|k| k != registry_key) {
        warnings.push(
            "the archive's registry-key.pem is not the key given to verify with; the archive was \
             verified with the given key"
                .to_string(),
        );
    }
    bar.set_length(checkpoint.size);
    let mut replayer = Replayer::for_registry(&checkpoint.origin);
    let mut entries = archive.entries(checkpoint.size);
    let mut broken = None;
    // In slices, so that decoding and signature checks run on every core.
    let mut slice = Vec::with_capacity(REPLAY_SLICE);
    loop {
        slice.clear();
        // A bundle that cannot be read is reported only after the entries before it replay: an
        // earlier entry may be what is wrong (its length prefix, say).
        let mut unreadable = None;
        for e in entries.by_ref().take(slice_len(replayer.size())) {
            match e {
                Ok(e) => slice.push(e),
                Err(e) => {
                    unreadable = Some(e);
                    break;
                }
            }
        }
        let start = replayer.size();
        if let Step::Break(b) = replayer.push_all(&slice)? {
            let at = (replayer.size() - start) as usize;
            broken =
                Some((b, slice[at..].iter().map(|e| merkle::leaf_hash(e)).collect::<Vec<_>>()));
            break;
        }
        if let Some(e) = unreadable {
            return Err(e.into());
        }
        if slice.is_empty() {
            break;
        }
        bar.set_position(replayer.size());
    }
    if let Some((b, tail)) = broken {
        // Which side of the break was altered: the signed root decides. Hash the rest to know.
        let mut leaves = replayer.leaves().to_vec();
        leaves.extend(tail);
        for e in entries {
            leaves.push(merkle::leaf_hash(&e?));
        }
        let position = replay::locate_break(&b, &leaves, &checkpoint);
        return Err(Failure {
            position: Some(position),
            reason: if position == b.position {
                "the entry's link to the previous entry's hash is wrong".into()
            } else {
                "the entry does not hash to what the next entry and the signed root commit to"
                    .into()
            },
        });
    }
    replayer.finish(&checkpoint)?;
    archive::check_tiles(archive, replayer.leaves())
        .map_err(|reason| Failure { position: None, reason })?;
    let unverified = archive
        .check_jsonl(checkpoint.size)
        .map_err(|reason| Failure { position: None, reason })?;
    warnings.extend(unverified);
    if let Some(earlier) = since {
        let earlier = archive::open_checkpoint(earlier, registry_key).map_err(|e| Failure {
            position: None,
            reason: format!("the earlier checkpoint does not verify: {e}"),
        })?;
        if earlier.size > checkpoint.size || replayer.root_at(earlier.size) != earlier.root {
            return Err(Failure {
                position: None,
                reason: format!(
                    "the archive is not consistent with the earlier checkpoint of size {}: the log was rewritten",
                    earlier.size
                ),
            });
        }
    }
    bar.finish_and_clear();
    Ok(Verified {
        checkpoint,
        keys: replayer.state().keys.len(),
        operators: replayer.state().operators.len(),
        seconds: started.elapsed().as_secs_f64(),
        warnings,
    })
}

/// Keeps `archive` current with the registry until `until` entries are archived (or forever),
/// checking every entry against the rules and every checkpoint against the previous one: over
/// gRPC from the watch stream, with a consistency proof each; from a tile server by fetching
/// `/checkpoint` every [`TileClient::poll`] and the entries it adds, whose root must then be
/// its root.
pub async fn follow<'a>(
    source: impl Into<Source<'a>>,
    archive: &Archive,
    until: Option<u64>,
    mut on_checkpoint: impl FnMut(&Checkpoint),
) -> Result<u64, ClientError> {
    let source = source.into();
    export(source, archive, None, &ProgressBar::hidden()).await?;
    let info = source.identity().await?;
    let text = archive.checkpoint_text().map_err(archive_err)?;
    let mut last = archive::open_checkpoint(&text, &info.key_der).map_err(refuse)?;
    let mut replayer = Replayer::for_registry(&last.origin);
    let mut entries = archive.entries(last.size);
    loop {
        let slice: Vec<Vec<u8>> = entries
            .by_ref()
            .take(slice_len(replayer.size()))
            .collect::<Result<_, _>>()
            .map_err(archive_err)?;
        if slice.is_empty() {
            break;
        }
        if let Step::Break(b) = replayer.push_all(&slice).map_err(refuse)? {
            return Err(refuse(format!("the archive breaks at entry {}", b.position)));
        }
    }
    replayer.finish(&last).map_err(refuse)?;
    on_checkpoint(&last);
    if until.is_some_and(|u| last.size >= u) {
        return Ok(last.size);
    }
    let mut updates = Updates::start(source, last.size).await?;
    while let Some((bytes, note)) = updates.next(&last).await? {
        let start = replayer.size();
        if let Step::Break(b) = replayer.push_all(&bytes).map_err(refuse)? {
            return Err(refuse(format!(
                "entry {} does not link to the entry before it",
                b.position
            )));
        }
        let cp = archive::open_checkpoint(&note, &info.key_der).map_err(refuse)?;
        if let Source::Registry(client) = source {
            check_consistency(client, &last, &cp).await?;
        }
        // The replay holds every leaf from the first: its root being the new checkpoint's is
        // the consistency of the two.
        replayer.finish(&cp).map_err(refuse)?;
        archive.write_entries(start, &bytes, replayer.leaves()).map_err(archive_err)?;
        archive.commit(&info.origin, cp.size, &note, &info.key_pem).map_err(archive_err)?;
        on_checkpoint(&cp);
        last = cp;
        if until.is_some_and(|u| last.size >= u) {
            break;
        }
    }
    Ok(last.size)
}

/// New entries and the checkpoint that covers them, as a follow receives them.
enum Updates<'a> {
    Watch(Box<tonic::Streaming<pb::WatchEntriesResponse>>),
    Poll(&'a TileClient, &'a [u8]),
}

impl<'a> Updates<'a> {
    async fn start(source: Source<'a>, from: u64) -> Result<Self, ClientError> {
        Ok(match source {
            Source::Registry(client) => Updates::Watch(Box::new(
                client
                    .audit()
                    .watch_entries(pb::WatchEntriesRequest { start: from })
                    .await?
                    .into_inner(),
            )),
            Source::Tiles(tiles, key) => Updates::Poll(tiles, key),
        })
    }

    /// The entries after `last` and the checkpoint that ends with them; `None` when a watch
    /// stream ends.
    async fn next(
        &mut self,
        last: &Checkpoint,
    ) -> Result<Option<(Vec<Vec<u8>>, String)>, ClientError> {
        let from = last.size;
        match self {
            Updates::Watch(stream) => {
                let Some(msg) = stream.message().await? else { return Ok(None) };
                let mut bytes = Vec::with_capacity(msg.entries.len());
                for e in msg.entries {
                    let due = from + bytes.len() as u64;
                    if e.position != due {
                        return Err(refuse(format!(
                            "the watch stream sent entry {} where {due} was due",
                            e.position
                        )));
                    }
                    bytes.push(e.entry);
                }
                Ok(Some((bytes, msg.checkpoint)))
            }
            Updates::Poll(tiles, key) => loop {
                let note = tiles.checkpoint().await?;
                let cp = archive::open_checkpoint(&note, key).map_err(refuse)?;
                if cp.size < from {
                    return Err(refuse(format!(
                        "the log ({} entries) is shorter than the checkpoint seen before ({from}): it was rolled back",
                        cp.size
                    )));
                }
                if cp.size == from && cp.root != last.root {
                    return Err(refuse(format!(
                        "the tile server shows a checkpoint of {from} entries with another root \
                         than the one seen before: the registry forked its log"
                    )));
                }
                if cp.size > from {
                    let entries = tiles.entries(from, cp.size, cp.size).await?;
                    if entries.len() as u64 != cp.size - from {
                        return Err(refuse(
                            "the tile server sent fewer entries than its checkpoint covers",
                        ));
                    }
                    return Ok(Some((entries.into_iter().map(|(_, e)| e).collect(), note)));
                }
                tokio::time::sleep(tiles.poll()).await;
            },
        }
    }
}

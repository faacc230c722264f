//! The witness: the newest checkpoint the registry has signed, kept in a small file of its own
//! outside the store.
//!
//! A signed checkpoint of size N is a promise to the world that the log's first N entries are
//! these and will never change. The store alone cannot keep that promise: a damaged database
//! that recovers only a prefix of the log looks exactly like a shorter, healthy log, and a
//! registry that started on it would sign a second history under positions it already signed.
//! So before a checkpoint of a new size is published (served, streamed or put in a receipt) its
//! note is written here durably, and at every start the log must reach that size with the same
//! Merkle root, or the registry refuses to start.
//!
//! The file holds two slots of [`SLOT`] bytes, each a note padded with newlines (`cat` shows
//! both). A new note overwrites, in place and with one data sync, the slot that does not hold
//! the newest note: no new file, no rename, no directory sync. Replacing the whole file at every
//! group commit had cost a registration 7-9 % more server CPU (tests/bench/USAGE.md §15). A
//! write torn by a crash can only damage the slot being written, whose note was not published
//! yet; the other slot holds the newest note that was, and a read takes the larger valid one
//! (warning about the other). A file of one bare note (written before the slots) is read as
//! before and laid out in slots at its next write.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use registry_core::checkpoint::Checkpoint;
use registry_core::note::NoteVerifier;

/// The witness's file name in the data directory.
pub const WITNESS_FILE: &str = "checkpoint.signed";

/// Bytes per slot: a checkpoint note is a few hundred (origin, size, root, extension lines, one
/// signature), and a page of its own keeps a torn write of one slot away from the other.
pub const SLOT: usize = 4096;

/// The witness file of one log.
#[derive(Debug, Clone)]
pub struct Witness {
    path: PathBuf,
    /// The slot holding the newest note this process read or wrote, once it knows: the next
    /// note goes into the other one. Shared by the clones the log's threads hold.
    newest: Arc<Mutex<Option<usize>>>,
}

/// The witness file cannot be read or does not hold a checkpoint this registry signed.
#[derive(Debug, thiserror::Error)]
#[error("the signed-checkpoint witness {path} {why}")]
pub struct WitnessError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub why: String,
}

impl Witness {
    /// The witness kept at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), newest: Arc::default() }
    }

    /// Where the witness is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint recorded last, checked against the registry's key and origin, with its
    /// note as recorded; `None` when no checkpoint was ever recorded (a new log, or one from
    /// before the witness existed).
    pub fn read(
        &self,
        verifier: &NoteVerifier,
    ) -> Result<Option<(Checkpoint, String)>, WitnessError> {
        let damaged = |why: String| WitnessError { path: self.path.clone(), why };
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(damaged(format!("cannot be read: {e}"))),
        };
        if bytes.len() != 2 * SLOT {
            // One bare note, as written before the slots: the next write lays them out.
            *self.newest.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return open_note(&bytes, verifier).map(Some).map_err(damaged);
        }
        let mut newest: Option<(usize, Checkpoint, String)> = None;
        let mut refused = Vec::new();
        for (n, slot) in bytes.chunks(SLOT).enumerate() {
            let Some(text) = unpadded(slot) else { continue };
            match open_note(text, verifier) {
                Ok((cp, note)) => {
                    if newest.as_ref().is_none_or(|(_, best, _)| cp.size > best.size) {
                        newest = Some((n, cp, note));
                    }
                }
                Err(why) => refused.push(format!("slot {n} {why}")),
            }
        }
        match newest {
            Some((slot, cp, note)) => {
                *self.newest.lock().unwrap_or_else(|e| e.into_inner()) = Some(slot);
                // A crash in the middle of a write tears the slot it was writing; anything
                // else damaging one slot is worth a look, but the other still keeps the promise.
                for why in &refused {
                    tracing::warn!(witness = %self.path.display(), "a slot of the signed-checkpoint witness {why}; the other holds checkpoint {}", cp.size);
                }
                Ok(Some((cp, note)))
            }
            None if refused.is_empty() => Err(damaged("is damaged: both slots are empty".into())),
            None => Err(damaged(refused.join("; "))),
        }
    }

    /// Records `note`, a signed checkpoint, durably; returns once it is on stable storage.
    pub fn record(&self, note: &str) -> std::io::Result<()> {
        if note.len() >= SLOT || note.ends_with("\n\n") || !note.ends_with('\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a witness slot holds a note of under {SLOT} bytes ending in one newline"),
            ));
        }
        let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        // Which slot holds the newest published note is known from the read at start (which
        // checked it) or from this process's own last write; not from the file's bytes, where
        // a torn slot still shows the size it was being written with.
        let opened = match *newest {
            Some(keep) => match std::fs::OpenOptions::new().write(true).open(&self.path) {
                Ok(file) => Some((file, 1 - keep)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        // Not known yet, or the file is gone: a new file, the note in its first slot.
        let Some((mut file, other)) = opened else {
            self.lay_out(note)?;
            *newest = Some(0);
            return Ok(());
        };
        file.seek(SeekFrom::Start((other * SLOT) as u64))?;
        file.write_all(&padded(note))?;
        file.sync_data()?;
        *newest = Some(other);
        Ok(())
    }

    /// A new file of two slots, `note` in the first: written whole and renamed into place.
    fn lay_out(&self, note: &str) -> std::io::Result<()> {
        let mut bytes = padded(note);
        bytes.extend(padded(""));
        crate::files::replace(&self.path, &bytes)
    }
}

/// `note` padded with newlines to a slot.
fn padded(note: &str) -> Vec<u8> {
    let mut bytes = note.as_bytes().to_vec();
    bytes.resize(SLOT, b'\n');
    bytes
}

/// The note in a slot (a note ends in exactly one newline), or `None` for an empty slot.
fn unpadded(slot: &[u8]) -> Option<&[u8]> {
    let end = slot.iter().rposition(|&b| b != b'\n')? + 2;
    Some(&slot[..end.min(slot.len())])
}

/// A note's checkpoint, checked against the registry's key; the error says why not.
fn open_note(bytes: &[u8], verifier: &NoteVerifier) -> Result<(Checkpoint, String), String> {
    let note = String::from_utf8(bytes.to_vec()).map_err(|_| {
        "is damaged: expected a signed note (text), found bytes that are not UTF-8".to_string()
    })?;
    let checkpoint = Checkpoint::open(&note, verifier).map_err(|e| {
        format!("is damaged: expected a checkpoint signed by this registry's key, found one that does not verify ({e})")
    })?;
    Ok((checkpoint, note))
}

#[cfg(test)]
mod tests {
    use registry_core::keys::P256KeyPair;
    use registry_core::note::NoteSigner;

    use super::*;

    fn signed(signer: &NoteSigner, size: u64) -> String {
        let cp = Checkpoint {
            origin: signer.name().into(),
            size,
            root: [size as u8; 32],
            extensions: vec![],
        };
        cp.sign(signer).unwrap()
    }

    #[test]
    fn the_witness_reads_back_the_last_checkpoint_recorded() {
        let (_dir, signer, _, witness) = fresh();
        assert!(witness.read(&signer.verifier()).unwrap().is_none(), "nothing recorded yet");
        witness.record(&signed(&signer, 3)).unwrap();
        witness.record(&signed(&signer, 7)).unwrap();
        let (cp, note) = witness.read(&signer.verifier()).unwrap().unwrap();
        assert!(note.starts_with("registry.test/w\n7\n"), "the note as recorded: {note}");
        assert_eq!((cp.size, cp.root), (7, [7; 32]));
    }

    #[test]
    fn a_flipped_bit_or_another_registry_s_note_is_refused_naming_the_file() {
        let (_dir, signer, path, witness) = fresh();
        let note = signed(&signer, 9);
        for at in [0, note.len() / 2, note.len() - 3] {
            let mut bytes = note.clone().into_bytes();
            bytes[at] ^= 0x04;
            std::fs::write(&path, bytes).unwrap();
            let e = witness.read(&signer.verifier()).unwrap_err();
            assert!(e.to_string().contains(WITNESS_FILE), "{e}");
        }
        let other = NoteSigner::new("registry.test/w", P256KeyPair::generate()).unwrap();
        witness.record(&signed(&other, 9)).unwrap();
        assert!(witness.read(&signer.verifier()).is_err());
    }

    /// A witness in a new directory (kept while the first value lives), with a signer.
    fn fresh() -> (tempfile::TempDir, NoteSigner, PathBuf, Witness) {
        let dir = tempfile::tempdir().unwrap();
        let signer = NoteSigner::new("registry.test/w", P256KeyPair::generate()).unwrap();
        let path = dir.path().join(WITNESS_FILE);
        let witness = Witness::new(&path);
        (dir, signer, path, witness)
    }

    /// The size a slot's note claims (its second line), unchecked.
    fn size_in(slot: &[u8]) -> Option<u64> {
        let text = std::str::from_utf8(unpadded(slot)?).ok()?;
        text.lines().nth(1)?.parse().ok()
    }

    /// The slot of `path` whose note claims `size`.
    fn slot_of(path: &Path, size: u64) -> usize {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(bytes.len(), 2 * SLOT, "two slots");
        (0..2).find(|n| size_in(&bytes[n * SLOT..(n + 1) * SLOT]) == Some(size)).unwrap()
    }

    #[test]
    fn each_note_overwrites_the_older_slot_and_the_newer_one_is_read() {
        let (_dir, signer, path, witness) = fresh();
        let notes: Vec<String> = (0..=5).map(|size| signed(&signer, size)).collect();
        for (size, recorded) in notes.iter().enumerate().skip(1) {
            witness.record(recorded).unwrap();
            let (cp, note) = witness.read(&signer.verifier()).unwrap().unwrap();
            assert_eq!((cp.size, &note), (size as u64, recorded));
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT as u64);
        assert_ne!(slot_of(&path, 4), slot_of(&path, 5), "the one before is kept beside it");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&notes[5]) && text.contains(&notes[4]), "both readable as text");
    }

    #[test]
    fn a_write_torn_by_a_crash_leaves_the_note_published_before_it() {
        let (_dir, signer, path, witness) = fresh();
        let three = signed(&signer, 3);
        witness.record(&three).unwrap();
        witness.record(&signed(&signer, 7)).unwrap();
        // The crash came half-way through writing 7: its slot holds the start of the new note
        // and the rest of the one it replaced.
        let torn = slot_of(&path, 7) * SLOT;
        let mut bytes = std::fs::read(&path).unwrap();
        let half = three.len() / 2;
        bytes[torn + half..torn + SLOT].copy_from_slice(&padded(&signed(&signer, 1))[half..]);
        std::fs::write(&path, &bytes).unwrap();
        let (cp, note) = witness.read(&signer.verifier()).unwrap().unwrap();
        assert_eq!((cp.size, note), (3, three));
        // The next note goes where the torn one was, and 3 stays until it is older.
        witness.record(&signed(&signer, 8)).unwrap();
        assert_eq!(slot_of(&path, 8) * SLOT, torn);
        assert_eq!(witness.read(&signer.verifier()).unwrap().unwrap().0.size, 8);
        // Both slots damaged: refused, naming the file and each slot.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 0x04;
        bytes[SLOT + 40] ^= 0x04;
        std::fs::write(&path, &bytes).unwrap();
        let e = witness.read(&signer.verifier()).unwrap_err().to_string();
        assert!(e.contains(WITNESS_FILE) && e.contains("slot 0") && e.contains("slot 1"), "{e}");
    }

    #[test]
    fn a_witness_of_one_bare_note_is_read_and_laid_out_in_slots_at_the_next_write() {
        let (_dir, signer, path, witness) = fresh();
        let bare = signed(&signer, 4);
        std::fs::write(&path, &bare).unwrap();
        assert_eq!(witness.read(&signer.verifier()).unwrap().unwrap().1, bare);
        witness.record(&signed(&signer, 6)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT as u64);
        assert_eq!(witness.read(&signer.verifier()).unwrap().unwrap().0.size, 6);
    }

    #[test]
    fn a_note_that_does_not_fit_a_slot_is_refused_and_nothing_is_written() {
        let (_dir, _, path, witness) = fresh();
        assert!(witness.record(&format!("{}\n", "x".repeat(SLOT))).is_err());
        assert!(!path.exists());
    }
}

//! The witness: the newest checkpoint the registry has signed, kept in a small file of its own
//! outside the store.
//!
//! A signed checkpoint of size N is a promise to the world that the log's first N entries are
//! these and will never change. The store alone cannot keep that promise: a damaged database
//! that recovers only a prefix of the log looks exactly like a shorter, healthy log, and a
//! registry that started on it would sign a second history under positions it already signed.
//! So before a checkpoint of a new size is published (served, streamed or put in a receipt) its
//! note is written here durably ([`crate::files::replace`]), and at every start the log must
//! reach that size with the same Merkle root, or the registry refuses to start.

use std::path::{Path, PathBuf};

use registry_core::checkpoint::Checkpoint;
use registry_core::note::NoteVerifier;

/// The witness's file name in the data directory.
pub const WITNESS_FILE: &str = "checkpoint.signed";

/// The witness file of one log.
#[derive(Debug, Clone)]
pub struct Witness {
    path: PathBuf,
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
        Self { path: path.into() }
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
        let note = String::from_utf8(bytes).map_err(|_| {
            damaged(
                "is damaged: expected a signed note (text), found bytes that are not UTF-8".into(),
            )
        })?;
        Checkpoint::open(&note, verifier)
            .map(|cp| Some((cp, note.clone())))
            .map_err(|e| damaged(format!("is damaged: expected a checkpoint signed by this registry's key, found one that does not verify ({e})")))
    }

    /// Records `note`, a signed checkpoint, durably; returns once it is on stable storage.
    pub fn record(&self, note: &str) -> std::io::Result<()> {
        crate::files::replace(&self.path, note.as_bytes())
    }
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
        let dir = tempfile::tempdir().unwrap();
        let signer = NoteSigner::new("registry.test/w", P256KeyPair::generate()).unwrap();
        let witness = Witness::new(dir.path().join(WITNESS_FILE));
        assert!(witness.read(&signer.verifier()).unwrap().is_none(), "nothing recorded yet");
        witness.record(&signed(&signer, 3)).unwrap();
        witness.record(&signed(&signer, 7)).unwrap();
        let (cp, note) = witness.read(&signer.verifier()).unwrap().unwrap();
        assert!(note.starts_with("registry.test/w\n7\n"), "the note as recorded: {note}");
        assert_eq!((cp.size, cp.root), (7, [7; 32]));
    }

    #[test]
    fn a_flipped_bit_or_another_registry_s_note_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let signer = NoteSigner::new("registry.test/w", P256KeyPair::generate()).unwrap();
        let path = dir.path().join(WITNESS_FILE);
        let witness = Witness::new(&path);
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
}

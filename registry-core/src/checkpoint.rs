//! C2SP `tlog-checkpoint`: the signed statement "the log of this origin has this size and root".
//!
//! The note text is the origin line, the tree size in decimal, the base64 RFC 6962 root hash and
//! optional extension lines. The registry signs it as a [`crate::note`] with its P-256 key;
//! checkpoints carry no time of their own (the recorded time of the last covered entry bounds
//! them).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::merkle::Hash;
use crate::note::{NoteError, NoteSigner, NoteVerifier};

/// A tree head: origin, size, root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, also the signing key's name.
    pub origin: String,
    /// Number of entries covered.
    pub size: u64,
    /// RFC 6962 root hash of those entries.
    pub root: Hash,
    /// Extension lines, opaque to generic checkpoint readers.
    pub extensions: Vec<String>,
}

/// A checkpoint could not be read or trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note text is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The checkpoint is from another log.
    #[error("checkpoint origin is {found:?}, expected {expected:?}")]
    Origin {
        /// What the checkpoint says.
        found: String,
        /// The origin we trust.
        expected: String,
    },
    /// The signature does not check out.
    #[error(transparent)]
    Note(#[from] NoteError),
}

impl Checkpoint {
    /// The note text: three lines plus extensions, each ending in a newline.
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root));
        for ext in &self.extensions {
            text.push_str(ext);
            text.push('\n');
        }
        text
    }

    /// Parses note text strictly: a non-empty origin, a decimal size without leading zeros, a
    /// base64 32-byte root, and non-empty extension lines.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("text must end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty());
        let origin = origin.ok_or(CheckpointError::Malformed("empty origin line"))?;
        let size_line = lines.next().ok_or(CheckpointError::Malformed("missing size line"))?;
        let canonical = !size_line.is_empty()
            && size_line.bytes().all(|b| b.is_ascii_digit())
            && (size_line == "0" || !size_line.starts_with('0'));
        if !canonical {
            return Err(CheckpointError::Malformed("size is not a canonical decimal number"));
        }
        let size = size_line
            .parse::<u64>()
            .map_err(|_| CheckpointError::Malformed("size is out of range"))?;
        let root_line = lines.next().ok_or(CheckpointError::Malformed("missing root hash line"))?;
        let root: Hash = B64
            .decode(root_line)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(CheckpointError::Malformed("root hash is not base64 of 32 bytes"))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("empty extension line"));
        }
        Ok(Self { origin: origin.to_string(), size, root, extensions })
    }

    /// Signs the checkpoint; the signer's name must be the origin.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        if signer.name() != self.origin {
            return Err(CheckpointError::Origin {
                found: self.origin.clone(),
                expected: signer.name().to_string(),
            });
        }
        Ok(signer.sign(&self.to_text())?)
    }

    /// Verifies a signed checkpoint with the registry's key and reads it. The origin must be the
    /// verifier's key name.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Self, CheckpointError> {
        let text = verifier.verify(note)?;
        let cp = Self::parse(text)?;
        if cp.origin != verifier.name() {
            return Err(CheckpointError::Origin {
                found: cp.origin,
                expected: verifier.name().to_string(),
            });
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::P256KeyPair;
    use crate::merkle::empty_root;

    fn cp() -> Checkpoint {
        Checkpoint {
            origin: "registry.example/log".into(),
            size: 20852163,
            root: [7u8; 32],
            extensions: vec![],
        }
    }

    #[test]
    fn a_checkpoint_has_the_c2sp_text_form() {
        let c = Checkpoint { root: empty_root(), size: 0, ..cp() };
        assert_eq!(
            c.to_text(),
            "registry.example/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
        );
        assert_eq!(Checkpoint::parse(&c.to_text()).unwrap(), c);
    }

    #[test]
    fn a_signed_checkpoint_opens_with_the_registry_key_only() {
        let signer = NoteSigner::new("registry.example/log", P256KeyPair::generate()).unwrap();
        let note = cp().sign(&signer).unwrap();
        assert_eq!(Checkpoint::open(&note, &signer.verifier()).unwrap(), cp());
        let stranger = NoteSigner::new("registry.example/log", P256KeyPair::generate()).unwrap();
        assert!(Checkpoint::open(&note, &stranger.verifier()).is_err());
        let tampered = note.replacen("20852163", "20852164", 1);
        assert!(Checkpoint::open(&tampered, &signer.verifier()).is_err());
    }

    #[test]
    fn non_canonical_checkpoints_are_refused() {
        for bad in [
            "o\n01\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
            "o\n-1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
            "\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
            "o\n1\nAAAA\n",
            "o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n",
            "o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}

//! C2SP signed notes with ECDSA P-256 signatures (signature type 0x02).
//!
//! A note is UTF-8 text ending in a newline, a blank line, and signature lines
//! `— <key name> base64(key ID || signature)`. For type 0x02 the key ID is the first four bytes
//! of SHA-256 of the DER SubjectPublicKeyInfo and the signature is DER ECDSA over SHA-256 of the
//! note text. Verification follows the spec: signatures from unknown keys are ignored, a failing
//! signature from the known key rejects the note, and at least one must verify.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::VerifyingKey;

use crate::keys::{self, KeyError, P256KeyPair};

/// Upper bound on signature lines we read, so a hostile note cannot make us loop for long.
const MAX_SIGNATURES: usize = 100;

/// Why a note was refused or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note is not structured as text, blank line, signature lines.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A key name is empty or contains spaces, `+` or newlines.
    #[error("invalid key name {0:?}")]
    KeyName(String),
    /// No signature line from the expected key.
    #[error("note has no signature from key {name} ({key_id})")]
    Unsigned {
        /// The expected key name.
        name: String,
        /// The expected key ID, hex.
        key_id: String,
    },
    /// A signature from the expected key does not verify.
    #[error("signature from key {0} does not verify")]
    BadSignature(String),
    /// The key is not usable.
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control()) {
        return Err(NoteError::KeyName(name.to_string()));
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("note text must end with a newline"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("note contains control characters"));
    }
    Ok(())
}

/// Signs notes with a P-256 key under a key name.
///
/// The registry signs a checkpoint on every group commit, on the path of every write, so this
/// signs with `ring` (about five times faster here than the `p256` crate's RFC 6979 signing; see
/// `registry bench crypto`). Its nonces are random, hedged with the key and the message, so the
/// same text signs differently each time; nothing depends on a note's bytes being reproducible,
/// unlike commands, which keep deterministic signatures ([`P256KeyPair::sign_der`]). Should the
/// system's random generator ever fail, the note is signed the slow, deterministic way instead:
/// a checkpoint is signed between a durable sync and the answers, where failing is no option.
#[derive(Debug, Clone)]
pub struct NoteSigner {
    name: String,
    key_id: [u8; 4],
    key: P256KeyPair,
    fast: std::sync::Arc<ring::signature::EcdsaKeyPair>,
    rng: ring::rand::SystemRandom,
}

impl NoteSigner {
    /// A signer for `key` under `name` (which should be the log's origin).
    pub fn new(name: &str, key: P256KeyPair) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key_id = keys::note_key_id(key.public_key_der());
        let rng = ring::rand::SystemRandom::new();
        let fast = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            key.secret_scalar().as_slice(),
            key.verifying_key().to_sec1_point(false).as_bytes(),
            &rng,
        )
        .map_err(|e| KeyError::PrivateKey(format!("ring refused the key: {e}")))?;
        Ok(Self { name: name.to_string(), key_id, key, fast: fast.into(), rng })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier that accepts this signer's notes.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: *self.key.verifying_key(),
        }
    }

    /// Signs `text` (which must end in a newline) and returns the complete note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let mut sig = self.key_id.to_vec();
        match self.fast.sign(&self.rng, text.as_bytes()) {
            Ok(signature) => sig.extend_from_slice(signature.as_ref()),
            Err(_) => sig.extend(self.key.sign_der(text.as_bytes())),
        }
        Ok(format!("{text}\n\u{2014} {} {}\n", self.name, B64.encode(sig)))
    }
}

/// Verifies notes signed by one known P-256 key.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    key_id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// A verifier for the key with this name and DER SubjectPublicKeyInfo.
    pub fn new(name: &str, spki_der: &[u8]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key = keys::p256_from_spki_der(spki_der)?;
        Ok(Self { name: name.to_string(), key_id: keys::note_key_id(spki_der), key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks the note and returns its text (including the final newline).
    pub fn verify<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let (text, signatures) = split(note)?;
        let mut verified = false;
        for line in signatures {
            let (name, key_id, sig) = parse_signature_line(line)?;
            if name != self.name || key_id != self.key_id {
                continue; // Someone else's signature (a witness, an old key): not ours to judge.
            }
            if !keys::p256_verify_der(&self.key, text.as_bytes(), sig.as_slice()) {
                return Err(NoteError::BadSignature(self.name.clone()));
            }
            verified = true;
        }
        if !verified {
            return Err(NoteError::Unsigned {
                name: self.name.clone(),
                key_id: hex::encode(self.key_id),
            });
        }
        Ok(text)
    }
}

/// Splits a note into its text and its signature lines.
fn split(note: &str) -> Result<(&str, Vec<&str>), NoteError> {
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("note contains control characters"));
    }
    let Some(blank) = note.rfind("\n\n") else {
        return Err(NoteError::Malformed("no blank line before the signatures"));
    };
    let text = &note[..=blank];
    let block = &note[blank + 2..];
    let Some(block) = block.strip_suffix('\n') else {
        return Err(NoteError::Malformed("signature block must end with a newline"));
    };
    let lines: Vec<&str> = block.split('\n').collect();
    if lines.is_empty() || lines.len() > MAX_SIGNATURES {
        return Err(NoteError::Malformed("wrong number of signature lines"));
    }
    Ok((text, lines))
}

fn parse_signature_line(line: &str) -> Result<(&str, [u8; 4], Vec<u8>), NoteError> {
    let rest = line
        .strip_prefix("\u{2014} ")
        .ok_or(NoteError::Malformed("signature line must start with an em dash and a space"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or(NoteError::Malformed("signature line must hold a key name and a signature"))?;
    check_key_name(name)?;
    let raw = B64.decode(b64).map_err(|_| NoteError::Malformed("signature is not base64"))?;
    if raw.len() < 5 {
        return Err(NoteError::Malformed("signature is too short"));
    }
    let key_id = [raw[0], raw[1], raw[2], raw[3]];
    Ok((name, key_id, raw[4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::new("registry.example/log", P256KeyPair::generate()).unwrap()
    }

    #[test]
    fn a_signed_note_verifies_and_yields_its_text() {
        let s = signer();
        let note = s.sign("hello\nworld\n").unwrap();
        assert!(note.contains("\n\n\u{2014} registry.example/log "));
        assert_eq!(s.verifier().verify(&note).unwrap(), "hello\nworld\n");
    }

    #[test]
    fn a_note_signature_is_plain_ecdsa_that_another_implementation_accepts() {
        use p256::ecdsa::signature::Verifier;
        let key = P256KeyPair::generate();
        let s = NoteSigner::new("registry.example/log", key.clone()).unwrap();
        let text = "registry.example/log\n7\nabc=\n";
        let (first, second) = (s.sign(text).unwrap(), s.sign(text).unwrap());
        // ring draws a fresh nonce each time; both signatures are good.
        assert_ne!(first, second);
        for note in [first, second] {
            let (_, key_id, der) = parse_signature_line(note.lines().last().unwrap()).unwrap();
            assert_eq!(key_id, keys::note_key_id(key.public_key_der()));
            let sig = p256::ecdsa::DerSignature::try_from(der.as_slice()).unwrap();
            assert!(key.verifying_key().verify(text.as_bytes(), &sig).is_ok());
            assert!(key.verifying_key().verify(b"another text\n", &sig).is_err());
        }
    }

    #[test]
    fn a_changed_text_or_a_foreign_key_is_refused() {
        let s = signer();
        let note = s.sign("hello\n").unwrap();
        let changed = note.replacen("hello", "hellp", 1);
        assert_eq!(s.verifier().verify(&changed), Err(NoteError::BadSignature(s.name().into())));
        let other = NoteSigner::new("registry.example/log", P256KeyPair::generate()).unwrap();
        assert!(matches!(other.verifier().verify(&note), Err(NoteError::Unsigned { .. })));
    }

    #[test]
    fn unknown_signatures_are_ignored_but_ours_is_required() {
        let s = signer();
        let witness = NoteSigner::new("witness.example", P256KeyPair::generate()).unwrap();
        let note = s.sign("hello\n").unwrap();
        let witness_line = witness.sign("hello\n").unwrap();
        let extra = witness_line.split("\n\n").nth(1).unwrap();
        let cosigned = format!("{note}{extra}");
        assert_eq!(s.verifier().verify(&cosigned).unwrap(), "hello\n");
        assert!(witness.verifier().verify(&cosigned).is_ok());
        let only_witness = witness.sign("hello\n").unwrap();
        assert!(matches!(s.verifier().verify(&only_witness), Err(NoteError::Unsigned { .. })));
    }

    #[test]
    fn malformed_notes_are_refused() {
        let s = signer();
        for bad in
            ["", "hello\n", "hello\n\n", "hello\n\n\u{2014} x\n", "he\rllo\n\n\u{2014} a b\n"]
        {
            assert!(s.verifier().verify(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(s.sign("no newline").is_err());
        assert!(NoteSigner::new("has space", P256KeyPair::generate()).is_err());
    }
}

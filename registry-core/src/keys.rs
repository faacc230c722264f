//! Key identities: fingerprints and note key IDs, and the P-256 keys that sign commands and
//! checkpoints.
//!
//! A key is identified by its **fingerprint**, the SHA-256 of its DER SubjectPublicKeyInfo
//! (lowercase hex for people). Signed notes use the first four bytes of the same hash as their
//! key ID (C2SP signed-note, signature type 0x02).

use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// SHA-256 of a DER SubjectPublicKeyInfo.
pub fn fingerprint(spki_der: &[u8]) -> Hash {
    Sha256::digest(spki_der).into()
}

/// The fingerprint as people and indexes see it: 64 lowercase hex digits.
pub fn fingerprint_hex(spki_der: &[u8]) -> String {
    hex::encode(fingerprint(spki_der))
}

/// The signed-note key ID: the first four bytes of the fingerprint.
pub fn note_key_id(spki_der: &[u8]) -> [u8; 4] {
    let f = fingerprint(spki_der);
    [f[0], f[1], f[2], f[3]]
}

/// A key file or key bytes could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a PKCS#8 P-256 private key.
    #[error("not a PKCS#8 PEM P-256 private key: {0}")]
    PrivateKey(String),
    /// Not a P-256 SubjectPublicKeyInfo.
    #[error("not a P-256 public key (DER or PEM SubjectPublicKeyInfo): {0}")]
    PublicKey(String),
}

/// A P-256 key pair that signs: the registry key, an administrator key or an operator key.
#[derive(Clone)]
pub struct P256KeyPair {
    signing: SigningKey,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for P256KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private half.
        f.debug_struct("P256KeyPair").field("fingerprint", &self.fingerprint_hex()).finish()
    }
}

impl P256KeyPair {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        use p256::elliptic_curve::Generate;
        Self::from_signing_key(SigningKey::generate())
    }

    /// The key pair whose private scalar is `secret` (big-endian); `None` when it is zero or not
    /// below the group order. For reproducible test fleets; real keys come from [`Self::generate`].
    pub fn from_secret(secret: &[u8; 32]) -> Option<Self> {
        SigningKey::from_slice(secret).ok().map(Self::from_signing_key)
    }

    fn from_signing_key(signing: SigningKey) -> Self {
        let spki_der = signing
            .verifying_key()
            .to_public_key_der()
            .expect("a valid P-256 public key always encodes")
            .into_vec();
        Self { signing, spki_der }
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(Self::from_signing_key)
            .map_err(|e| KeyError::PrivateKey(e.to_string()))
    }

    /// The private key as PKCS#8 PEM. Handle with care: this is the secret.
    pub fn to_pkcs8_pem(&self) -> String {
        self.signing
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a valid P-256 private key always encodes")
            .to_string()
    }

    /// The public key as DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The public key as PEM.
    pub fn public_key_pem(&self) -> String {
        public_key_pem(self.signing.verifying_key())
    }

    /// The key's fingerprint.
    pub fn fingerprint(&self) -> Hash {
        fingerprint(&self.spki_der)
    }

    /// The key's fingerprint as hex.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint())
    }

    /// A DER ECDSA signature over SHA-256 of `message` (deterministic, RFC 6979).
    pub fn sign_der(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::{Signature, signature::Signer};
        let sig: Signature = self.signing.sign(message);
        sig.to_der().as_bytes().to_vec()
    }

    /// The private scalar, big-endian: for handing the key to `ring` in this crate only.
    pub(crate) fn secret_scalar(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.signing.to_bytes().into())
    }

    /// The verifying half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        self.signing.verifying_key()
    }
}

fn public_key_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF).expect("a valid P-256 public key always encodes")
}

/// Parses a P-256 public key given as DER SubjectPublicKeyInfo.
pub fn p256_from_spki_der(der: &[u8]) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_der(der).map_err(|e| KeyError::PublicKey(e.to_string()))
}

/// Parses a P-256 public key given as PEM SubjectPublicKeyInfo and returns its DER.
pub fn p256_spki_der_from_pem(pem: &str) -> Result<Vec<u8>, KeyError> {
    let key = VerifyingKey::from_public_key_pem(pem.trim())
        .map_err(|e| KeyError::PublicKey(e.to_string()))?;
    Ok(key.to_public_key_der().expect("a valid P-256 public key always encodes").into_vec())
}

/// The PEM form of a P-256 DER SubjectPublicKeyInfo.
pub fn p256_spki_pem(der: &[u8]) -> Result<String, KeyError> {
    Ok(public_key_pem(&p256_from_spki_der(der)?))
}

/// Verifies a DER ECDSA P-256 signature over SHA-256 of `message` with a SEC1 point. High-s
/// signatures are valid (as ECDSA defines them); nothing is normalised.
///
/// Verification runs on `ring`, about three times faster here than the `p256` crate (see the
/// benchmarks); `ring` validates the point itself. `ring` reads only uncompressed points, so a
/// compressed one (which the key parsers accept) is decompressed first.
pub fn p256_verify_point(sec1_point: &[u8], message: &[u8], signature_der: &[u8]) -> bool {
    let uncompressed;
    let point = match sec1_point.first() {
        Some(0x02 | 0x03) => match VerifyingKey::from_sec1_bytes(sec1_point) {
            Ok(key) => {
                uncompressed = key.to_sec1_point(false);
                uncompressed.as_bytes()
            }
            Err(_) => return false,
        },
        _ => sec1_point,
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(message, signature_der)
        .is_ok()
}

/// Verifies a DER ECDSA P-256 signature with a parsed key.
pub fn p256_verify_der(key: &VerifyingKey, message: &[u8], signature_der: &[u8]) -> bool {
    p256_verify_point(key.to_sec1_point(false).as_bytes(), message, signature_der)
}

/// The SEC1 point of a P-256 DER SubjectPublicKeyInfo, without validating it (the verifier
/// does), or `None` if it is not a P-256 key.
pub fn p256_point_of_spki(spki_der: &[u8]) -> Option<&[u8]> {
    use p256::pkcs8::der::Decode;
    use p256::pkcs8::{ObjectIdentifier, SubjectPublicKeyInfoRef};
    const EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der).ok()?;
    (spki.algorithm.oid == EC && spki.algorithm.parameters_oid().ok()? == P256).then_some(())?;
    spki.subject_public_key.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_point_verifies_like_its_uncompressed_twin() {
        let k = P256KeyPair::generate();
        let signature = k.sign_der(b"message");
        let compressed = k.verifying_key().to_sec1_point(true);
        assert!(p256_verify_point(compressed.as_bytes(), b"message", &signature));
        assert!(!p256_verify_point(compressed.as_bytes(), b"other message", &signature));
    }

    #[test]
    fn a_key_pair_survives_its_pem_round_trip() {
        let k = P256KeyPair::generate();
        let back = P256KeyPair::from_pkcs8_pem(&k.to_pkcs8_pem()).unwrap();
        assert_eq!(back.public_key_der(), k.public_key_der());
        assert_eq!(p256_spki_der_from_pem(&k.public_key_pem()).unwrap(), k.public_key_der());
    }

    #[test]
    fn a_signature_verifies_only_for_its_message_and_key() {
        let k = P256KeyPair::generate();
        let other = P256KeyPair::generate();
        let sig = k.sign_der(b"hello");
        assert!(p256_verify_der(k.verifying_key(), b"hello", &sig));
        assert!(!p256_verify_der(k.verifying_key(), b"hellp", &sig));
        assert!(!p256_verify_der(other.verifying_key(), b"hello", &sig));
        assert!(!p256_verify_der(k.verifying_key(), b"hello", b"not der"));
    }

    #[test]
    fn high_s_signatures_verify_without_normalising() {
        use p256::ecdsa::Signature;
        let k = P256KeyPair::generate();
        let sig = Signature::from_der(&k.sign_der(b"m")).unwrap();
        let (r, s) = sig.split_scalars();
        let flipped = Signature::from_scalars(*r, -*s).unwrap();
        for sig in [sig, flipped] {
            assert!(p256_verify_der(k.verifying_key(), b"m", sig.to_der().as_bytes()));
        }
    }

    #[test]
    fn the_note_key_id_is_the_start_of_the_fingerprint() {
        let k = P256KeyPair::generate();
        assert_eq!(note_key_id(k.public_key_der()), k.fingerprint()[..4]);
    }
}

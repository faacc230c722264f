//! Meter public keys as they arrive from the field, and the plausibility checks on them.
//!
//! Commissioning tools and meter documentation give keys in many shapes: DER
//! SubjectPublicKeyInfo as hex (any case, with spaces or colons) or base64, PEM, raw SEC1 points
//! (`04‖X‖Y` or compressed `02/03‖X`) and bare `X‖Y`. [`MeterKey::parse`] accepts all of them,
//! checks that the point lies on the named curve and is not the identity, and normalises to DER
//! SubjectPublicKeyInfo with an uncompressed point, whose SHA-256 is the key's fingerprint. The
//! text as submitted is kept next to it for the commissioning record.

use std::fmt;

use base64::Engine as _;

use crate::keys;
use ecdsa::elliptic_curve;

/// The elliptic curves of meter keys. The registry key and command keys are always P-256.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Curve {
    /// NIST P-256 (secp256r1, prime256v1).
    Secp256r1,
    /// NIST P-384 (secp384r1).
    Secp384r1,
    /// secp256k1.
    Secp256k1,
    /// brainpoolP256r1.
    BrainpoolP256r1,
    /// brainpoolP384r1.
    BrainpoolP384r1,
    /// NIST P-192 (secp192r1).
    Secp192r1,
}

impl Curve {
    /// Every curve, in protobuf enum order.
    pub const ALL: [Curve; 6] = [
        Curve::Secp256r1,
        Curve::Secp384r1,
        Curve::Secp256k1,
        Curve::BrainpoolP256r1,
        Curve::BrainpoolP384r1,
        Curve::Secp192r1,
    ];

    /// The curve's usual name, as OCMF's `SA` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Curve::Secp256r1 => "secp256r1",
            Curve::Secp384r1 => "secp384r1",
            Curve::Secp256k1 => "secp256k1",
            Curve::BrainpoolP256r1 => "brainpoolP256r1",
            Curve::BrainpoolP384r1 => "brainpoolP384r1",
            Curve::Secp192r1 => "secp192r1",
        }
    }

    /// Parses a curve name (case-insensitive; `P-256`/`prime256v1` style aliases accepted).
    pub fn from_name(name: &str) -> Option<Curve> {
        let n = name.trim().to_ascii_lowercase().replace(['-', '_'], "");
        Some(match n.as_str() {
            "secp256r1" | "p256" | "prime256v1" | "nistp256" => Curve::Secp256r1,
            "secp384r1" | "p384" | "nistp384" => Curve::Secp384r1,
            "secp256k1" | "k256" => Curve::Secp256k1,
            "brainpoolp256r1" | "bp256" => Curve::BrainpoolP256r1,
            "brainpoolp384r1" | "bp384" => Curve::BrainpoolP384r1,
            "secp192r1" | "p192" | "prime192v1" | "nistp192" => Curve::Secp192r1,
            _ => return None,
        })
    }

    /// Bytes of one coordinate.
    pub fn field_bytes(self) -> usize {
        match self {
            Curve::Secp256r1 | Curve::Secp256k1 | Curve::BrainpoolP256r1 => 32,
            Curve::Secp384r1 | Curve::BrainpoolP384r1 => 48,
            Curve::Secp192r1 => 24,
        }
    }

    /// The named-curve object identifier in SubjectPublicKeyInfo.
    pub fn oid(self) -> &'static str {
        match self {
            Curve::Secp256r1 => "1.2.840.10045.3.1.7",
            Curve::Secp384r1 => "1.3.132.0.34",
            Curve::Secp256k1 => "1.3.132.0.10",
            Curve::BrainpoolP256r1 => "1.3.36.3.3.2.8.1.1.7",
            Curve::BrainpoolP384r1 => "1.3.36.3.3.2.8.1.1.11",
            Curve::Secp192r1 => "1.2.840.10045.3.1.1",
        }
    }

    /// The curve for an OID.
    pub fn from_oid(oid: &str) -> Option<Curve> {
        Curve::ALL.into_iter().find(|c| c.oid() == oid)
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a submitted key is not plausible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterKeyError {
    /// The text is none of the accepted encodings.
    #[error(
        "not a public key in an accepted encoding (DER SubjectPublicKeyInfo as hex or base64, PEM, SEC1 point, or bare X||Y): {0}"
    )]
    Encoding(String),
    /// The SubjectPublicKeyInfo names a curve the registry does not know.
    #[error("unknown or unsupported curve {0}")]
    UnknownCurve(String),
    /// The key's curve differs from the one named with it.
    #[error("the key is on {found} but {named} was named")]
    CurveMismatch {
        /// The curve named with the key.
        named: Curve,
        /// The curve the key is on.
        found: Curve,
    },
    /// The bytes are not a point on the curve, or are the identity.
    #[error("not a valid point on {curve}: {reason}")]
    Point {
        /// The curve.
        curve: Curve,
        /// What is wrong.
        reason: String,
    },
}

/// A plausible meter key, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterKey {
    /// Its curve.
    pub curve: Curve,
    /// DER SubjectPublicKeyInfo with the uncompressed point.
    pub spki_der: Vec<u8>,
    /// Lowercase hex SHA-256 of `spki_der`.
    pub fingerprint: String,
}

/// What the submitted text decodes to, before the curve is known.
enum Shape {
    Spki(Vec<u8>),
    /// A SEC1 point (with tag) or bare coordinates.
    Raw(Vec<u8>),
}

fn decode_text(text: &str) -> Result<Shape, MeterKeyError> {
    let t = text.trim();
    if t.starts_with("-----BEGIN") {
        let body: String = t
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
            .collect();
        if !t.contains("-----BEGIN PUBLIC KEY-----") {
            return Err(MeterKeyError::Encoding("PEM must be a PUBLIC KEY block".into()));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| MeterKeyError::Encoding(format!("PEM body is not base64: {e}")))?;
        return Ok(Shape::Spki(der));
    }
    let compact: String = t.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    if compact.is_empty() {
        return Err(MeterKeyError::Encoding("empty".into()));
    }
    let bytes = if compact.len().is_multiple_of(2) && compact.bytes().all(|b| b.is_ascii_hexdigit())
    {
        hex::decode(&compact).map_err(|e| MeterKeyError::Encoding(e.to_string()))?
    } else {
        let trimmed = compact.trim_end_matches('=');
        let engines = [
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        engines
            .iter()
            .find_map(|e| e.decode(trimmed).ok())
            .ok_or_else(|| MeterKeyError::Encoding("neither hex nor base64".into()))?
    };
    Ok(if bytes.first() == Some(&0x30) { Shape::Spki(bytes) } else { Shape::Raw(bytes) })
}

/// Reads the curve and the SEC1 point out of a DER SubjectPublicKeyInfo.
fn split_spki(der: &[u8]) -> Result<(Curve, Vec<u8>), MeterKeyError> {
    use p256::pkcs8::der::Decode;
    use p256::pkcs8::{ObjectIdentifier, SubjectPublicKeyInfoRef};
    const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    let spki = SubjectPublicKeyInfoRef::from_der(der)
        .map_err(|e| MeterKeyError::Encoding(format!("invalid DER SubjectPublicKeyInfo: {e}")))?;
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
        return Err(MeterKeyError::UnknownCurve(format!(
            "(algorithm {} is not an elliptic-curve public key)",
            spki.algorithm.oid
        )));
    }
    let curve_oid = spki
        .algorithm
        .parameters_oid()
        .map_err(|_| MeterKeyError::UnknownCurve("(no named curve in the key)".into()))?;
    let curve = Curve::from_oid(&curve_oid.to_string())
        .ok_or_else(|| MeterKeyError::UnknownCurve(curve_oid.to_string()))?;
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| MeterKeyError::Encoding("public key bit string has unused bits".into()))?;
    Ok((curve, point.to_vec()))
}

impl MeterKey {
    /// Parses a key in any accepted encoding. `named` is the curve the submitter says the key is
    /// on: required to match a SubjectPublicKeyInfo's own curve, and used for raw points
    /// (P-256 when not named).
    pub fn parse(text: &str, named: Option<Curve>) -> Result<Self, MeterKeyError> {
        let (curve, point) = match decode_text(text)? {
            Shape::Spki(der) => match split_spki(&der) {
                Ok((curve, point)) => {
                    if let Some(named) = named.filter(|n| *n != curve) {
                        return Err(MeterKeyError::CurveMismatch { named, found: curve });
                    }
                    (curve, point)
                }
                // A bare X||Y starts with 0x30 (DER's SEQUENCE tag) once in 256 keys: read it as
                // the point it then is.
                Err(_) if der.len() == 2 * named.unwrap_or(Curve::Secp256r1).field_bytes() => {
                    raw_point(der, named)?
                }
                Err(e) => return Err(e),
            },
            Shape::Raw(bytes) => raw_point(bytes, named)?,
        };
        let spki_der = normalise(curve, &point)?;
        let fingerprint = keys::fingerprint_hex(&spki_der);
        Ok(Self { curve, spki_der, fingerprint })
    }

    /// Parses a stored, already normalised DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, MeterKeyError> {
        let (curve, point) = split_spki(der)?;
        let spki_der = normalise(curve, &point)?;
        let fingerprint = keys::fingerprint_hex(&spki_der);
        Ok(Self { curve, spki_der, fingerprint })
    }
}

/// A SEC1 point or bare X||Y on the `named` curve (P-256 when not named).
fn raw_point(bytes: Vec<u8>, named: Option<Curve>) -> Result<(Curve, Vec<u8>), MeterKeyError> {
    let curve = named.unwrap_or(Curve::Secp256r1);
    let n = curve.field_bytes();
    let point = match (bytes.len(), bytes.first()) {
        (l, _) if l == 2 * n => [&[0x04][..], &bytes].concat(),
        (l, Some(0x04)) if l == 2 * n + 1 => bytes,
        (l, Some(0x02 | 0x03)) if l == n + 1 => bytes,
        (1, Some(0x00)) => {
            return Err(MeterKeyError::Point {
                curve,
                reason: "the identity point is not a public key".into(),
            });
        }
        (l, _) => {
            return Err(MeterKeyError::Encoding(format!(
                "{l} bytes is not a {curve} point (expected {} bytes X||Y, {} with 04, or {} compressed)",
                2 * n,
                2 * n + 1,
                n + 1
            )));
        }
    };
    Ok((curve, point))
}

/// Validates a SEC1 point on `curve` and returns the DER SubjectPublicKeyInfo with the point
/// uncompressed.
fn normalise(curve: Curve, point: &[u8]) -> Result<Vec<u8>, MeterKeyError> {
    let bad = |reason: String| MeterKeyError::Point { curve, reason };
    match point.first() {
        Some(0x02..=0x04) => {}
        Some(0x00) => return Err(bad("the identity point is not a public key".into())),
        _ => return Err(bad("unknown SEC1 point tag (expected 02, 03 or 04)".into())),
    }
    let der = match curve {
        Curve::Secp256r1 => spki_of::<p256::NistP256>(point),
        Curve::Secp384r1 => spki_of::<p384::NistP384>(point),
        Curve::Secp256k1 => spki_of::<k256::Secp256k1>(point),
        Curve::BrainpoolP256r1 => spki_of::<bp256::BrainpoolP256r1>(point),
        Curve::BrainpoolP384r1 => spki_of::<bp384::BrainpoolP384r1>(point),
        Curve::Secp192r1 => spki_of::<p192::NistP192>(point),
    };
    der.ok_or_else(|| bad("the point is not on the curve".into()))
}

/// DER SubjectPublicKeyInfo (uncompressed point) of a valid SEC1 point on `C`.
fn spki_of<C>(point: &[u8]) -> Option<Vec<u8>>
where
    C: ecdsa::EcdsaCurve
        + elliptic_curve::CurveArithmetic
        + elliptic_curve::point::PointCompression
        + elliptic_curve::pkcs8::AssociatedOid,
    elliptic_curve::AffinePoint<C>:
        elliptic_curve::sec1::FromSec1Point<C> + elliptic_curve::sec1::ToSec1Point<C>,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
{
    use elliptic_curve::pkcs8::EncodePublicKey;
    let key = ecdsa::VerifyingKey::<C>::from_sec1_bytes(point).ok()?;
    Some(key.to_public_key_der().ok()?.into_vec())
}

/// Verifies an ECDSA signature over SHA-256(`message`) with a meter key (DER
/// SubjectPublicKeyInfo on `curve`), as OCMF prescribes for every curve: the digest is used as is
/// (left-padded for 384-bit curves, cut to the leftmost 24 bytes for P-192). A high-s signature is
/// as valid as its low-s twin, as meters produce both: nothing is normalised, except that k256
/// (which alone refuses high-s) checks the equivalent low-s form. `Ok(false)` for a signature that
/// does not verify or is malformed; `Err` when the key is not a valid key on `curve`.
pub fn verify_sha256(
    curve: Curve,
    spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
    format: SignatureFormat,
) -> Result<bool, MeterKeyError> {
    let (found, point) = split_spki(spki_der)?;
    if found != curve {
        return Err(MeterKeyError::CurveMismatch { named: curve, found });
    }
    // The hot path: DER on P-256 goes to ring (see keys.rs), which hashes the message itself.
    if curve == Curve::Secp256r1 && format == SignatureFormat::Der {
        return Ok(keys::p256_verify_point(&point, message, signature));
    }
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(message).into();
    let ok = match curve {
        Curve::Secp256r1 => verify_prehash::<p256::NistP256>(&point, &digest, signature, format),
        Curve::Secp384r1 => verify_prehash::<p384::NistP384>(&point, &digest, signature, format),
        Curve::Secp256k1 => verify_prehash::<k256::Secp256k1>(&point, &digest, signature, format),
        Curve::BrainpoolP256r1 => {
            verify_prehash::<bp256::BrainpoolP256r1>(&point, &digest, signature, format)
        }
        Curve::BrainpoolP384r1 => {
            verify_prehash::<bp384::BrainpoolP384r1>(&point, &digest, signature, format)
        }
        Curve::Secp192r1 => verify_prehash::<p192::NistP192>(&point, &digest, signature, format),
    };
    Ok(ok)
}

fn verify_prehash<C>(
    point: &[u8],
    digest: &[u8; 32],
    signature: &[u8],
    format: SignatureFormat,
) -> bool
where
    C: ecdsa::EcdsaCurve + elliptic_curve::CurveArithmetic,
    elliptic_curve::AffinePoint<C>:
        elliptic_curve::sec1::FromSec1Point<C> + elliptic_curve::sec1::ToSec1Point<C>,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
    ecdsa::der::MaxSize<C>: elliptic_curve::array::ArraySize,
    <elliptic_curve::FieldBytesSize<C> as std::ops::Add>::Output:
        std::ops::Add<ecdsa::der::MaxOverhead> + elliptic_curve::array::ArraySize,
{
    use ecdsa::signature::hazmat::PrehashVerifier;
    let Ok(key) = ecdsa::VerifyingKey::<C>::from_sec1_bytes(point) else { return false };
    let sig = match format {
        SignatureFormat::Der => ecdsa::Signature::<C>::from_der(signature),
        SignatureFormat::Raw => ecdsa::Signature::<C>::from_slice(signature),
    };
    let Ok(sig) = sig else { return false };
    // Only k256 rejects high-s; (r, s) verifies exactly when (r, n - s) does.
    let sig = if C::NORMALIZE_S { sig.normalize_s() } else { sig };
    key.verify_prehash(digest, &sig).is_ok()
}

/// How the signature bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFormat {
    /// DER `SEQUENCE { r INTEGER, s INTEGER }` (`application/x-der`, the default).
    Der,
    /// Fixed-size big-endian `r‖s`, as some meters emit.
    Raw,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::P256KeyPair;
    use base64::engine::general_purpose::STANDARD as B64;

    #[test]
    fn a_bare_point_that_looks_like_der_is_read_as_the_point() {
        // One key in 256 has an X coordinate starting with 0x30, DER's SEQUENCE tag.
        let (k, unc, _) = std::iter::repeat_with(sample)
            .find(|(_, unc, _)| unc[1] == 0x30)
            .expect("such keys exist");
        let parsed = MeterKey::parse(&hex::encode(&unc[1..]), None).unwrap();
        assert_eq!(parsed.fingerprint, k.fingerprint_hex());
    }

    fn sample() -> (P256KeyPair, Vec<u8>, Vec<u8>) {
        let k = P256KeyPair::generate();
        let unc = k.verifying_key().to_sec1_point(false).as_bytes().to_vec();
        let cmp = k.verifying_key().to_sec1_point(true).as_bytes().to_vec();
        (k, unc, cmp)
    }

    #[test]
    fn every_field_encoding_of_a_p256_key_gives_the_same_fingerprint() {
        let (k, unc, cmp) = sample();
        let der = k.public_key_der().to_vec();
        let spaced: String = hex::encode_upper(&der)
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        let inputs = [
            hex::encode(&der),
            hex::encode_upper(&der),
            spaced,
            B64.encode(&der),
            k.public_key_pem(),
            hex::encode(&unc),
            hex::encode(&cmp),
            hex::encode(&unc[1..]),
            B64.encode(&unc),
        ];
        for input in inputs {
            let key = MeterKey::parse(&input, None).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(key.curve, Curve::Secp256r1);
            assert_eq!(key.spki_der, der, "{input}");
            assert_eq!(key.fingerprint, k.fingerprint_hex());
        }
    }

    #[test]
    fn the_real_meter_keys_of_the_test_vectors_parse() {
        // V01 and V02 of testdata/ocmf/vectors.txt: hex DER SubjectPublicKeyInfo, upper case.
        for spki in [
            "3059301306072A8648CE3D020106082A8648CE3D03010703420004EF1766AFD940A49FBA863779837F394EB053BF87DB529DE69FDDE8B32485D7AD715CD8F291656B1DEAA29337A65E4B1B7F9F2808E4E53019B867D4C9294948C9",
            "3059301306072A8648CE3D020106082A8648CE3D030107034200043AEEB45C392357820A58FDFB0857BD77ADA31585C61C430531DFA53B440AFBFDD95AC887C658EA55260F808F55CA948DF235C2108A0D6DC7D4AB1A5E1A7955BE",
        ] {
            let key = MeterKey::parse(spki, Some(Curve::Secp256r1)).unwrap();
            assert_eq!(hex::encode_upper(&key.spki_der), spki);
        }
    }

    #[test]
    fn implausible_keys_are_refused_with_the_reason() {
        let (_, unc, _) = sample();
        let mut off_curve = unc.clone();
        off_curve[64] ^= 1;
        assert!(matches!(
            MeterKey::parse(&hex::encode(&off_curve), None),
            Err(MeterKeyError::Point { .. })
        ));
        assert!(matches!(MeterKey::parse("00", None), Err(MeterKeyError::Point { .. })));
        assert!(matches!(MeterKey::parse("04", None), Err(MeterKeyError::Encoding(_))));
        assert!(matches!(MeterKey::parse("hello world!", None), Err(MeterKeyError::Encoding(_))));
        assert!(matches!(MeterKey::parse("", None), Err(MeterKeyError::Encoding(_))));
        let mut compact = vec![0x05];
        compact.extend_from_slice(&unc[1..33]);
        assert!(MeterKey::parse(&hex::encode(&compact), None).is_err(), "0x05 compact tag");
        // An Ed25519 SubjectPublicKeyInfo: not an elliptic-curve key.
        let ed = "302a300506032b6570032100d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        assert!(matches!(MeterKey::parse(ed, None), Err(MeterKeyError::UnknownCurve(_))));
    }

    #[test]
    fn a_named_curve_must_match_the_key() {
        let (k, _, _) = sample();
        let err =
            MeterKey::parse(&hex::encode(k.public_key_der()), Some(Curve::Secp384r1)).unwrap_err();
        assert_eq!(
            err,
            MeterKeyError::CurveMismatch { named: Curve::Secp384r1, found: Curve::Secp256r1 }
        );
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_errors_without_panicking(s in "\\PC{0,200}") {
            let _ = MeterKey::parse(&s, None);
        }

        #[test]
        fn any_bytes_as_hex_parse_or_error_without_panicking(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            let _ = MeterKey::parse(&hex::encode(&b), None);
            let _ = MeterKey::from_spki_der(&b);
        }
    }
}

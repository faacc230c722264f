//! Every real signed meter value in `testdata/ocmf/vectors.txt` gives its stated verdict, and
//! the parser keeps the signed bytes exactly as written.

#[path = "support/ocmf_vectors.rs"]
mod support;

use std::path::Path;

use registry_core::meter_key::MeterKey;
use registry_core::ocmf::Record;

fn vectors() -> Vec<support::Vector> {
    support::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ocmf/vectors.txt"))
}

#[test]
fn every_vector_gives_its_stated_verdict() {
    let vectors = vectors();
    assert!(vectors.len() >= 5, "{} vectors", vectors.len());
    for v in &vectors {
        let record = Record::parse(&v.record).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        let key = MeterKey::parse(&v.public_key, Some(record.signature.curve))
            .unwrap_or_else(|e| panic!("{}: key: {e}", v.name));
        let verified = record.verify(&key.spki_der).expect("the key is on the record's curve");
        assert_eq!(verified, v.valid, "{}: verdict", v.name);
    }
}

#[test]
fn the_signed_bytes_are_the_payload_exactly_as_written() {
    for v in vectors() {
        let record = Record::parse(&v.record).unwrap();
        let start = "OCMF|".len();
        let end = v.record.rfind('|').unwrap();
        assert_eq!(record.signed_bytes(), &v.record.as_bytes()[start..end], "{}", v.name);
    }
}

#[test]
fn a_changed_payload_byte_breaks_every_valid_vector() {
    for v in vectors().into_iter().filter(|v| v.valid) {
        let key = MeterKey::parse(&v.public_key, None).unwrap();
        // Change one digit of the last reading value: still a well-formed record.
        let at = v.record.rfind("\"RV\":").unwrap() + 5;
        let mut bytes = v.record.clone().into_bytes();
        let digit = (at..bytes.len()).find(|i| bytes[*i].is_ascii_digit()).unwrap();
        bytes[digit] = if bytes[digit] == b'9' { b'8' } else { bytes[digit] + 1 };
        let tampered = Record::parse(std::str::from_utf8(&bytes).unwrap()).unwrap();
        assert!(!tampered.verify(&key.spki_der).unwrap(), "{}: tampered value verified", v.name);
    }
}

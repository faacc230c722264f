//! The OCMF parser and the key parser take bytes from anyone: no input may make them panic.
//! Arbitrary strings, and valid records and keys with random bytes changed, inserted or cut.

use proptest::prelude::*;
use registry_core::meter_key::{Curve, MeterKey};
use registry_core::ocmf::Record;
use registry_core::signed_values;

const RECORD: &str = r#"OCMF|{"FV":"1.0","GI":"KEBA_KCP30","GS":"17619300","GV":"2.8.5","PG":"T32","IS":false,"IL":"NONE","IF":["RFID_NONE","OCPP_NONE","ISO15118_NONE","PLMN_NONE"],"IT":"NONE","ID":"","CT":"EVSEID","CI":"DE*ABC*E1","LC":{"LN":"c","LI":1,"LR":2,"LU":"mOhm"},"RD":[{"TM":"2019-08-13T10:03:15,000+0000 I","TX":"B","EF":"","ST":"G","RV":0.2596,"RI":"1-b:1.8.0","RU":"kWh"},{"TM":"2019-08-13T10:03:36,000+0000 R","TX":"E","EF":"","ST":"G","RV":0.2597,"RI":"1-b:1.8.0","RU":"kWh","CL":0.1}]}|{"SA":"ECDSA-secp256r1-SHA256","SE":"hex","SM":"application/x-der","SD":"304502200E2F107C987A300AC1695CA89EA149A8CDFA16188AF0A33EE64B67964AA943F9022100889A72B6D65364BEA8562E7F6A0253157ACFF84FE4929A93B5964D23C4265699"}"#;
const KEY: &str = "3059301306072A8648CE3D020106082A8648CE3D030107034200043AEEB45C392357820A58FDFB0857BD77ADA31585C61C430531DFA53B440AFBFDD95AC887C658EA55260F808F55CA948DF235C2108A0D6DC7D4AB1A5E1A7955BE";

/// A valid text with one random edit: a byte changed, inserted or removed.
fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    (0..base.len(), any::<u8>(), 0..3u8).prop_map(move |(at, byte, op)| {
        let mut b = base.as_bytes().to_vec();
        match op {
            0 => b[at] = byte,
            1 => b.insert(at, byte),
            _ => {
                b.remove(at);
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    })
}

fn exercise(text: &str) {
    if let Ok(r) = Record::parse(text) {
        // Verification on any parsed record must not panic either, whatever the key.
        let key = MeterKey::parse(KEY, None).expect("the test key");
        let _ = r.verify(&key.spki_der);
        let _ = signed_values::unit_paths(&r);
    }
    let empty = registry_core::lifecycle::MemoryState::default();
    let v = signed_values::validate(text, Some(text), &empty, 0).expect("in-memory state");
    assert!(!v.valid(), "nothing is valid against an empty registry");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn the_ocmf_parser_survives_arbitrary_text(s in ".{0,400}") {
        exercise(&s);
        exercise(&format!("OCMF|{s}|{{\"SD\":\"00\"}}"));
    }

    #[test]
    fn the_ocmf_parser_survives_a_damaged_record(s in mutated(RECORD)) {
        exercise(&s);
    }

    #[test]
    fn the_key_parser_survives_arbitrary_text(s in ".{0,300}", curve in 0..6usize) {
        let _ = MeterKey::parse(&s, None);
        let _ = MeterKey::parse(&s, Some(Curve::ALL[curve]));
    }

    #[test]
    fn the_key_parser_survives_a_damaged_key(s in mutated(KEY), curve in 0..6usize) {
        let _ = MeterKey::parse(&s, Some(Curve::ALL[curve]));
        let _ = MeterKey::parse(&format!("-----BEGIN PUBLIC KEY-----\n{s}\n-----END PUBLIC KEY-----"), None);
    }

    #[test]
    fn the_key_parser_survives_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..200), curve in 0..6usize) {
        let _ = MeterKey::parse(&hex::encode(&b), Some(Curve::ALL[curve]));
        let _ = MeterKey::from_spki_der(&b);
    }
}

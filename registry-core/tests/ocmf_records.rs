//! OCMF records from the field beyond the shared vectors (quoted with their sources), the six
//! curves, high-s signatures, and the deviations the parser reports instead of hiding.

use registry_core::meter_key::SignatureFormat;
use registry_core::meter_key::{Curve, MeterKey};
use registry_core::ocmf::{ClockStatus, Record};

/// NZR EcoCount SL via its gateway, brainpoolP256r1, spelled `brainpoolP256r1` (not as OCMF
/// spells it). Source: SAFE-eV/transparenzsoftware src/test/resources/xml/brainpoolP256r1.xml.
const NZR_BP256: &str = r#"OCMF|{"FV":"1.0","GI":"NZR GATEWAY","GS":"21751020","GV":"1.0.0.0","PG":"T274","MV":"NZR","MM":"EcoCount SL","MS":"12345678","MF":"1.11","IS":false,"IL":"NONE","IF":[],"IT":"NONE","ID":"","CT":"","CI":"","RD":[{"TM":"2021-10-26T11:15:09,000+0000 S","TX":"B","RV":1833,"RI":"1-0:1.8.1","RU":"Wh","RT":"AC","EF":"","ST":"G"}]}|{"SD":"304402202CC410E10CD9141394AE77B3DC17A523C359F65B0117C098703DF1F2AB773A3302204C6CC011FE4920F87CF413F6FB94EDD78DAA26BB5DB4048DA9B3D3AB513CC23C","SA":"ECDSA-brainpoolP256r1-SHA256"}"#;
const NZR_BP256_KEY: &str = "305A301406072A8648CE3D020106092B240303020801010703420004607201339EF7C61EB1270C0BEA675585711CB160835F0F55975A311EA6F14AE98981A9276ABC6C70ADA4F8CE25A5502336C738B9E86FB1ED62150FF1B0FAD5A2";

/// The same meter with a secp384r1 key, still SHA-256. Source: transparenzsoftware
/// src/test/resources/xml/nistP384_0Wh.xml.
const NZR_P384: &str = r#"OCMF|{"FV":"1.0","GI":"NZR GATEWAY","GS":"21751020","GV":"1.0.0.0","PG":"T6","MV":"NZR","MM":"EcoCount SL","MS":"12345678","MF":"1.11","IS":false,"IL":"NONE","IF":[],"IT":"NONE","ID":"","CT":"","CI":"","RD":[{"TM":"2021-10-26T12:24:59,000+0000 S","TX":"E","RV":0,"RI":"1-0:1.8.1","RU":"Wh","RT":"AC","EF":"","ST":"G"}]}|{"SD":"306502300EE0FA7E9C65A633FB200CD2C80EA0AEE79F42E2B974C77A9CA97C3AB5FB685ABCAF17C6B705A4B414E2BBD09D14A2BE023100FCCA269395F181688C1C289572B659DA4911E8F0BB1FB02755EBEC6701DE873347902C173ACC66C3214AD30670912560","SA":"ECDSA-secp384r1-SHA256"}"#;
const NZR_P384_KEY: &str = "3076301006072A8648CE3D020106052B81040022036200047991E23A9815893FF8D3C9EF47D682B39297FA3C47DA345EF3D150245814120F48AD31C51536341B80E679C3138E316ADB9F39BCB42E8CE28D4C824844B4C6B16E48F056FD803EC7F3CD1B6BA1BCA125DA5E211842D5FB61F01BAA3DE9B2F10C";

/// Isabellenhütte: reading values as strings, a raw r||s signature and a raw X||Y key, meter
/// status E and error flag E. Source: transparenzsoftware
/// src/test/resources/xml/isa-ocmf/OCMF-receipt-with_publickey_and_data.xml.
const ISA: &str = r#"OCMF|{"FV":"1.0","GI":"1234567890","GS":"1ISA1234567890","GV":"V4711","MV":"Isabellenhuette Heusler","MM":"1234567890","MS":"1ISA1234567890","MF":"80.01.01","CT":"DC-Test-Charger","CI":"CP-DE-4711","IS":true,"IL":"CERTIFIED","IF":["RFID_PSK","OCPP_CERTIFIED","ISO15118_NONE","PLMN_NONE"],"IT":"ISO15693","ID":"112233445566CC","PG":"T0","TT":"0,42 EUR/kWh","RD":[{"TM":"2023-06-27T18:02:14,000+0200 I","TX":"B","EF":"E","ST":"E","RV":"00000000.000","RI":"1-b:1.8.e","RU":"kWh","RT":"DC"},{"TM":"2023-06-27T18:02:28,000+0200 I","TX":"C","EF":"E","ST":"E","RV":"00000000.000","RI":"1-b:1.8.e","RU":"kWh","RT":"DC"},{"TM":"2023-06-27T18:02:55,000+0200 I","TX":"E","EF":"E","ST":"E","RV":"00000000.000","RI":"1-b:1.8.e","RU":"kWh","RT":"DC"}]}|{"SA":"ECDSA-secp256r1-SHA256","SD":"C214F647DE0BD818545B99DC27AD6D1B0A400BB1EE2E2DF98E2726FFC538CDF952282D68FCD760FD8F69B82EF22B6FD72ED9251D162DA44AB489D46073FD3C76"}"#;
const ISA_KEY: &str = "B27CDB498504606CA3ACA2BA05A61F30D443B36CADD6F00C881F3469FBB08B8C2F498C314A035BDADCC83EA731A8B65CACD0A39A32C88AE444431E990F9E84ED";

/// LEM DCBM: readings that inherit TM and TX from the one before, a vendor object inside a
/// reading. Source: transparenzsoftware test data (quoted in a Go `ocmf` package test).
const LEM: &str = r#"OCMF|{"FV":"1.0","GI":"LEM DCBM","GS":"1211751603","GV":"v1","PG":"T144","MV":"LEM","MS":"1211751603","MF":"MU-0.1.4.0_SU-0.0.8.0","IS":true,"IL":"HEARSAY","IF":["RFID_RELATED","OCPP_AUTH_TLS","ISO15118_NONE","PLMN_NONE"],"IT":"ISO14443","ID":"5EEFE0C7F64B050E9FB95C","CT":"EVSEID","CI":"458877","RD":[{"TM":"2021-10-06T13:13:56,000+0200 R","TX":"B","RV":57.584,"RI":"1-0:1.8.0","RU":"kWh","RT":"DC","EF":"","ST":"G","UC":{"UN":"No_Comp","UI":2,"UR":0}},{"RV":4.405,"RI":"1-0:2.8.0","RU":"kWh","ST":"G"},{"TM":"2021-10-06T13:15:13,000+0200 R","TX":"E","RV":58.685,"RI":"1-0:1.8.0","RU":"kWh","ST":"G"},{"RV":4.405,"RI":"1-0:2.8.0","RU":"kWh","ST":"G"}]}|{"SA":"ECDSA-secp256r1-SHA256","SD":"3045022100E1C80E7115294A3A4D10CFF8B94E959F941415E19A0913A0538312E585E1A37702200A2BE1B235C152CFC7555064A96533F192A8A1D4E0484C68FD46574947A3D9BA"}"#;

#[test]
fn brainpool_and_p384_records_from_the_field_verify() {
    for (record, key, curve) in [
        (NZR_BP256, NZR_BP256_KEY, Curve::BrainpoolP256r1),
        (NZR_P384, NZR_P384_KEY, Curve::Secp384r1),
    ] {
        let r = Record::parse(record).unwrap();
        assert_eq!(r.signature.curve, curve);
        let key = MeterKey::parse(key, None).unwrap();
        assert_eq!(key.curve, curve);
        assert!(r.verify(&key.spki_der).unwrap(), "{curve}");
    }
    let r = Record::parse(NZR_BP256).unwrap();
    assert!(
        r.deviations.iter().any(|d| d.field == "SA" && d.message.contains("brainpool256r1")),
        "the non-standard spelling is reported: {:?}",
        r.deviations
    );
}

#[test]
fn a_raw_signature_and_raw_key_verify_and_every_bend_is_reported() {
    let r = Record::parse(ISA).unwrap();
    assert_eq!(r.signature.format, SignatureFormat::Raw);
    let key = MeterKey::parse(ISA_KEY, Some(Curve::Secp256r1)).unwrap();
    assert!(r.verify(&key.spki_der).unwrap());
    let fields: Vec<&str> = r.deviations.iter().map(|d| d.field.as_str()).collect();
    for f in ["RD[0].RV", "RD[2].RV", "SD", "CT", "IT"] {
        // IT is ISO15693 with a 7-byte UID: allowed value, so not reported; CT is not an enum value.
        if f == "IT" {
            assert!(!fields.contains(&f), "{fields:?}");
        } else {
            assert!(fields.contains(&f), "{f} is reported: {fields:?}");
        }
    }
    assert_eq!(r.payload.readings[0].value.as_deref(), Some("00000000.000"), "kept as written");
    assert_eq!(r.payload.readings[1].status.as_deref(), Some("E"));
    assert_eq!(r.payload.readings[2].error_flags, "E");
    assert_eq!(r.payload.readings[0].time.unwrap().clock, Some(ClockStatus::Informative));
}

#[test]
fn readings_inherit_omitted_fields_from_the_one_before() {
    let r = Record::parse(LEM).unwrap();
    let rd = &r.payload.readings;
    assert_eq!(rd.len(), 4);
    assert_eq!(rd[1].time, rd[0].time, "TM carries over");
    assert_eq!(rd[1].transaction.as_deref(), Some("B"));
    assert_eq!(rd[1].identification.as_deref(), Some("1-0:2.8.0"), "given, not inherited");
    assert_eq!(rd[3].transaction.as_deref(), Some("E"));
    assert_eq!(rd[1].value.as_deref(), Some("4.405"));
    assert_eq!(rd[0].extra.len(), 1, "the vendor object UC is kept");
    assert!(
        !r.deviations.iter().any(|d| d.field == "RD[0].UC"),
        "U-fields are the manufacturers' by the specification: {:?}",
        r.deviations
    );
    let t = rd[0].time.unwrap();
    assert_eq!(registry_core::time::format(&t.instant), "2021-10-06T11:13:56Z");
    assert_eq!(t.clock, Some(ClockStatus::Relative));
}

#[test]
fn unreadable_records_name_the_field_at_fault() {
    let cases = [
        ("OCMF|{}|{\"SD\":\"00\"}", "RD"),
        (
            "OCMF|{\"RD\":[{\"TM\":\"2021-10-06T13:13:56,000+0200 Q\"}]}|{\"SD\":\"3000\"}",
            "RD[0].TM",
        ),
        ("OCMF|{\"MS\":\"1\",\"MS\":\"2\",\"RD\":[]}|{}", "MS"),
        (
            "OCMF|{\"RD\":[{\"TM\":\"2021-10-06T13:13:56,000+0200 S\"}]}|{\"SA\":\"ECDSA-secp192k1-SHA256\",\"SD\":\"00\"}",
            "SA",
        ),
        (
            "OCMF|{\"RD\":[{\"TM\":\"2021-10-06T13:13:56,000+0200 S\"}]}|{\"SE\":\"base32\",\"SD\":\"00\"}",
            "SE",
        ),
        ("OCMF|{\"RD\":[{\"TM\":\"2021-10-06T13:13:56,000+0200 S\"}]}|{}", "SD"),
        ("OCMF|{\"RD\":[{\"TM\":\"2021-10-06T13:13:56,000+0200 S\"}]}|{\"SD\":\"abcd\"}", "SD"),
        ("XCMF|{}|{}", "record"),
        ("OCMF|{}", "record"),
    ];
    for (text, field) in cases {
        let e = Record::parse(text).expect_err(text);
        assert_eq!(e.field, field, "{text}: {e}");
    }
}

#[test]
fn a_hex_encoded_record_and_a_fourth_key_section_are_read_and_reported() {
    let r = Record::parse(&hex::encode(NZR_P384)).unwrap();
    assert!(r.deviations.iter().any(|d| d.message.contains("hex-encoded")));
    let with_key = format!("{NZR_P384}|{NZR_P384_KEY}");
    let r = Record::parse(&with_key).unwrap();
    assert_eq!(r.attached_key.as_deref(), Some(NZR_P384_KEY));
    assert!(r.deviations.iter().any(|d| d.message.contains("fourth section")));
}

/// Signs SHA-256(payload) on any of the six curves (test-only: meters sign, the registry never).
fn sign<C>(payload: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>)
where
    C: ecdsa::EcdsaCurve
        + ecdsa::elliptic_curve::CurveArithmetic
        + ecdsa::elliptic_curve::pkcs8::AssociatedOid
        + ecdsa::elliptic_curve::point::PointCompression,
    ecdsa::elliptic_curve::AffinePoint<C>:
        ecdsa::elliptic_curve::sec1::FromSec1Point<C> + ecdsa::elliptic_curve::sec1::ToSec1Point<C>,
    ecdsa::elliptic_curve::FieldBytesSize<C>: ecdsa::elliptic_curve::sec1::ModulusSize,
    ecdsa::der::MaxSize<C>: ecdsa::elliptic_curve::array::ArraySize,
    <ecdsa::elliptic_curve::FieldBytesSize<C> as std::ops::Add>::Output:
        std::ops::Add<ecdsa::der::MaxOverhead> + ecdsa::elliptic_curve::array::ArraySize,
{
    use ecdsa::elliptic_curve::pkcs8::EncodePublicKey;
    use ecdsa::elliptic_curve::{Generate, PrimeField};
    use sha2::Digest;
    let sk = ecdsa::SigningKey::<C>::generate();
    let digest: [u8; 32] = sha2::Sha256::digest(payload.as_bytes()).into();
    let sig: ecdsa::Signature<C> = ecdsa::hazmat::sign_prehashed_rfc6979::<C, sha2::Sha256>(
        sk.as_nonzero_scalar(),
        &digest,
        &[],
    )
    .0;
    // The same signature with s replaced by n - s: high-s if it was low, and as valid.
    let (r, s) = sig.split_scalars();
    let flipped = ecdsa::Signature::<C>::from_scalars(r.to_repr(), (-*s).to_repr()).unwrap();
    let spki = sk.verifying_key().to_public_key_der().unwrap().into_vec();
    (spki, sig.to_der().as_bytes().to_vec(), flipped.to_der().as_bytes().to_vec())
}

fn record_for(curve: Curve, payload: &str, sig: &[u8]) -> String {
    format!(
        "OCMF|{payload}|{{\"SA\":\"{}\",\"SD\":\"{}\"}}",
        registry_core::ocmf::algorithm_of_curve(curve),
        hex::encode_upper(sig)
    )
}

#[test]
fn every_curve_verifies_sha256_signatures_high_s_included() {
    let payload = r#"{"FV":"1.0","PG":"T1","MS":"M-1","IS":false,"IT":"NONE","RD":[{"TM":"2026-03-01T10:00:00,000+0100 S","TX":"B","RV":1.5,"RI":"1-b:1.8.0","RU":"kWh","EF":"","ST":"G"}]}"#;
    let signed = [
        (Curve::Secp256r1, sign::<p256::NistP256>(payload)),
        (Curve::Secp384r1, sign::<p384::NistP384>(payload)),
        (Curve::Secp256k1, sign::<k256::Secp256k1>(payload)),
        (Curve::BrainpoolP256r1, sign::<bp256::BrainpoolP256r1>(payload)),
        (Curve::BrainpoolP384r1, sign::<bp384::BrainpoolP384r1>(payload)),
        (Curve::Secp192r1, sign::<p192::NistP192>(payload)),
    ];
    for (curve, (spki, sig, flipped)) in &signed {
        let key = MeterKey::parse(&hex::encode(spki), None).unwrap();
        assert_eq!(key.curve, *curve);
        for s in [sig, flipped] {
            let r = Record::parse(&record_for(*curve, payload, s)).unwrap();
            assert!(r.deviations.is_empty(), "{curve}: {:?}", r.deviations);
            assert!(r.verify(&key.spki_der).unwrap(), "{curve}: both s and n - s verify");
        }
        // Another payload does not verify.
        let other = payload.replace("1.5", "1.6");
        let r = Record::parse(&record_for(*curve, &other, sig)).unwrap();
        assert!(!r.verify(&key.spki_der).unwrap(), "{curve}");
    }
    // A P-192 key cannot verify a P-256 record: a clear error, not a silent false.
    let p192_key = MeterKey::parse(&hex::encode(&signed[5].1.0), None).unwrap();
    let p256_record =
        Record::parse(&record_for(Curve::Secp256r1, payload, &signed[0].1.1)).unwrap();
    let e = p256_record.verify(&p192_key.spki_der).unwrap_err();
    assert!(e.to_string().contains("secp192r1") && e.to_string().contains("secp256r1"), "{e}");
}

#[test]
fn keys_on_every_curve_parse_in_every_shape_to_one_fingerprint() {
    use ecdsa::elliptic_curve::sec1::ToSec1Point;
    fn shapes<C>() -> (Curve, Vec<String>)
    where
        C: ecdsa::EcdsaCurve
            + ecdsa::elliptic_curve::CurveArithmetic
            + ecdsa::elliptic_curve::pkcs8::AssociatedOid
            + ecdsa::elliptic_curve::point::PointCompression,
        ecdsa::elliptic_curve::AffinePoint<C>:
            ecdsa::elliptic_curve::sec1::FromSec1Point<C> + ToSec1Point<C>,
        ecdsa::elliptic_curve::FieldBytesSize<C>: ecdsa::elliptic_curve::sec1::ModulusSize,
    {
        use ecdsa::elliptic_curve::Generate;
        use ecdsa::elliptic_curve::pkcs8::EncodePublicKey;
        let sk = ecdsa::SigningKey::<C>::generate();
        let vk = sk.verifying_key();
        let unc = vk.to_sec1_point(false).as_bytes().to_vec();
        let cmp = vk.to_sec1_point(true).as_bytes().to_vec();
        let spki = vk.to_public_key_der().unwrap().into_vec();
        let curve = Curve::from_oid(&C::OID.to_string()).unwrap();
        (
            curve,
            vec![hex::encode(&spki), hex::encode(&unc), hex::encode(&cmp), hex::encode(&unc[1..])],
        )
    }
    for (curve, texts) in [
        shapes::<p384::NistP384>(),
        shapes::<k256::Secp256k1>(),
        shapes::<bp256::BrainpoolP256r1>(),
        shapes::<bp384::BrainpoolP384r1>(),
        shapes::<p192::NistP192>(),
    ] {
        let fps: Vec<String> =
            texts.iter().map(|t| MeterKey::parse(t, Some(curve)).unwrap().fingerprint).collect();
        assert!(fps.windows(2).all(|w| w[0] == w[1]), "{curve}: {fps:?}");
    }
}

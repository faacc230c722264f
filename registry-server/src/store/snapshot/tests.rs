//! The snapshot format's own tests: round trips, damage anywhere, layout checks.

use super::*;

fn records() -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..500u32).map(|i| (format!("k{i:05}").into_bytes(), i.to_be_bytes().to_vec())).collect()
}

fn sample() -> Snapshot {
    Snapshot::build(42, [7; 32], records().into_iter()).unwrap()
}

/// The encoded bytes of [`sample`].
fn sample_bytes() -> Vec<u8> {
    sample().bytes.to_vec()
}

/// [`records`] at log size 42 written as `p.snap` in `dir` and installed: its path, and the
/// snapshot in use.
fn write_installed(dir: &std::path::Path) -> (std::path::PathBuf, Snapshot) {
    let path = dir.join("p.snap");
    let written = Snapshot::write_new(&path, 42, [7; 32], records().into_iter()).unwrap();
    let installed = written.install(&path).unwrap();
    (path, installed)
}

#[test]
fn a_snapshot_reads_back_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let (path, installed) = write_installed(dir.path());
    assert_eq!(installed.get(b"k00007"), Some(&7u32.to_be_bytes()[..]));
    let read = Snapshot::read(&path).unwrap().unwrap();
    assert_eq!((read.size(), read.last_leaf(), read.len()), (42, [7; 32], 500));
    assert_eq!(read.get(b"k00123"), Some(&123u32.to_be_bytes()[..]));
    assert_eq!(read.get(b"k00123x"), None);
    assert_eq!(read.get(b"a"), None);
    let from: Vec<_> = read.iter_from(b"k00498").map(|(k, _)| k.to_vec()).collect();
    assert_eq!(from, vec![b"k00498".to_vec(), b"k00499".to_vec()]);
    assert!(Snapshot::read(&dir.path().join("none")).unwrap().is_none());
}

#[test]
fn any_changed_byte_is_refused() {
    let bytes = sample_bytes();
    for at in [0, 9, 20, 50, HEADER + 3, bytes.len() / 2, bytes.len() - 40, bytes.len() - 1] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 1;
        assert!(Snapshot::decode(damaged).is_err(), "a flipped bit at {at} was accepted");
    }
    assert!(Snapshot::decode(bytes[..bytes.len() - 1].to_vec()).is_err());
    assert!(Snapshot::decode(bytes).is_ok());
}

/// `bytes` with its checksum recomputed: only the structural checks can refuse it.
fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    let body = bytes.len() - TRAILER;
    let checksum = Checksum::of_magic(&bytes[..8]).unwrap();
    let digest = seal(checksum, &bytes[..body], &|_| {});
    bytes[body..].copy_from_slice(&digest);
    bytes
}

#[test]
fn the_checksum_covers_every_piece_in_order() {
    let body: Vec<u8> = (0..PIECE * 2 + 100).map(|i| (i % 251) as u8).collect();
    let mut outer = blake3::Hasher::new();
    for piece in body.chunks(PIECE) {
        outer.update(blake3::hash(piece).as_bytes());
    }
    assert_eq!(seal(Checksum::Blake3, &body, &|_| {}), <[u8; 32]>::from(outer.finalize()));
    let mut swapped = body.clone();
    swapped[..PIECE].copy_from_slice(&body[PIECE..2 * PIECE]);
    swapped[PIECE..2 * PIECE].copy_from_slice(&body[..PIECE]);
    assert_ne!(seal(Checksum::Blake3, &swapped, &|_| {}), seal(Checksum::Blake3, &body, &|_| {}));
    assert_eq!(seal(Checksum::Blake3, &[], &|_| {}), <[u8; 32]>::from(blake3::hash(&[])));
    // Version 05's, still read.
    let mut outer = Sha256::new();
    for piece in body.chunks(PIECE) {
        outer.update(Sha256::digest(piece));
    }
    assert_eq!(seal(Checksum::Sha256, &body, &|_| {}), <[u8; 32]>::from(outer.finalize()));
}

/// `bytes` (version 06) as version 05 wrote them: the same layout, SHA-256's checksum.
fn as_version_05(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes[..8].copy_from_slice(MAGIC_SHA256);
    let body = bytes.len() - TRAILER;
    let digest = seal(Checksum::Sha256, &bytes[..body], &|_| {});
    bytes[body..].copy_from_slice(&digest);
    bytes
}

#[test]
fn a_version_05_snapshot_is_read_and_checked_with_its_own_checksum() {
    let old = as_version_05(sample_bytes());
    let read = Snapshot::decode(old.clone()).unwrap();
    assert_eq!((read.size(), read.len()), (42, 500));
    assert_eq!(read.get(b"k00123"), Some(&123u32.to_be_bytes()[..]));
    read.verify().unwrap();
    for at in [9, HEADER + 3, old.len() / 2, old.len() - 1] {
        let mut damaged = old.clone();
        damaged[at] ^= 1;
        assert!(Snapshot::decode(damaged).is_err(), "a flipped bit at {at} was accepted");
    }
    let mut unsealed = sample_bytes();
    unsealed[..8].copy_from_slice(MAGIC_SHA256);
    assert!(Snapshot::decode(unsealed).is_err(), "06's checksum under 05's magic");
    let mut older = sample_bytes();
    older[..8].copy_from_slice(b"KRSNAP04");
    let refused = Snapshot::decode(older).unwrap_err().to_string();
    assert!(refused.contains("another version"), "{refused}");
}

#[test]
fn a_well_sealed_file_with_a_broken_layout_is_refused() {
    let bytes = sample_bytes();
    let table = bytes.len() - TRAILER - 500 * OFFSET;
    let damage: [(&str, usize, u8); 6] = [
        ("record count", HEADER - 1, 1),
        ("first key length", HEADER, 0x10),
        ("a value length", HEADER + 1, 0x7f),
        ("a varint that does not end", HEADER + 1, 0x80),
        ("an offset", table + OFFSET * 3 + OFFSET - 1, 1),
        ("a key, out of order", HEADER + 2 + 5, 0x7f),
    ];
    for (what, at, bits) in damage {
        let mut broken = bytes.clone();
        broken[at] ^= bits;
        assert!(Snapshot::decode(resealed(broken)).is_err(), "{what}: accepted");
    }
    assert!(Snapshot::decode(resealed(bytes)).is_ok());
}

#[test]
fn a_key_out_of_order_is_refused_wherever_the_runs_are_split() {
    // 500 records of 12 bytes each ("k00000".."k00499", 4-byte values, 1-byte lengths).
    let bytes = sample_bytes();
    for i in [1usize, 2, 125, 166, 249, 250, 251, 333, 375, 499] {
        let mut broken = bytes.clone();
        let (at, before) = (HEADER + 12 * i + 2, HEADER + 12 * (i - 1) + 2);
        broken.copy_within(before..before + 6, at);
        assert!(Snapshot::decode(resealed(broken)).is_err(), "record {i} equal to {}", i - 1);
    }
}

#[test]
fn lengths_of_every_size_read_back() {
    let sizes = [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000];
    let records: Vec<(Vec<u8>, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("{i}").repeat(n.min(200) + 1).into_bytes(), vec![i as u8; n]))
        .collect();
    let snapshot = Snapshot::build(1, [0; 32], records.iter().map(|(k, v)| (k, v))).unwrap();
    let again = Snapshot::decode(snapshot.bytes.to_vec()).unwrap();
    for (i, (k, v)) in records.iter().enumerate() {
        assert_eq!(again.record(i), (&k[..], &v[..]), "record {i}");
        assert_eq!(again.get(k), Some(&v[..]));
    }
    for n in [0u32, 1, 127, 128, 16_383, 16_384, u32::MAX] {
        let mut buf = Vec::new();
        prost::encoding::encode_varint(n.into(), &mut buf);
        let len = buf.len();
        assert_eq!(varint_at(&buf, 0, len), Some((u64::from(n), len)), "{n}");
        assert_eq!(varint_at(&buf, 0, len - 1), None, "{n} cut short");
    }
    let mut over = Vec::new();
    prost::encoding::encode_varint(u64::from(u32::MAX) + 1, &mut over);
    assert_eq!(varint_at(&over, 0, over.len()), None, "more than 32 bits");
}

#[test]
fn records_out_of_order_are_refused() {
    let records = [(&b"b"[..], &b""[..]), (&b"a"[..], &b""[..])];
    assert!(Snapshot::build(1, [0; 32], records.into_iter()).is_err());
}

/// Records of about 100 bytes each, enough for three checksum pieces.
fn large() -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
    (0..(PIECE * 5 / 2 / 100) as u64)
        .map(|i| (format!("r{i:012}").into_bytes(), vec![(i % 251) as u8; 80]))
}

#[test]
fn a_streamed_file_holds_the_bytes_an_in_memory_build_would() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.snap");
    let written = Snapshot::write_new(&path, 9, [3; 32], large()).unwrap();
    let in_memory = Snapshot::build(9, [3; 32], large()).unwrap();
    assert_eq!(written.len(), in_memory.encoded_len());
    assert!(written.len() > 2 * PIECE, "more than two pieces: {}", written.len());
    let installed = written.install(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), in_memory.bytes.to_vec());
    // Read back through the map, after its pages were handed back.
    let read = Snapshot::read(&path).unwrap().unwrap();
    read.release();
    let key = b"r000000123456";
    assert_eq!(read.get(key), in_memory.get(key));
    assert_eq!(installed.get(key), Some(&[(123_456 % 251) as u8; 80][..]));
    assert_eq!(read.len(), in_memory.len());
    read.verify().unwrap();
}

#[test]
fn a_snapshot_not_installed_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.snap");
    drop(Snapshot::write_new(&path, 1, [0; 32], records().into_iter()).unwrap());
    let unordered = [(&b"b"[..], &b""[..]), (&b"a"[..], &b""[..])];
    assert!(Snapshot::write_new(&path, 1, [0; 32], unordered.into_iter()).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file left behind");
}

#[test]
fn a_snapshot_changed_on_disk_after_its_check_fails_verification() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (path, snapshot) = write_installed(dir.path());
    snapshot.verify().unwrap();
    // What a damaged disk or a careless hand would do to the file in place.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_at(b"X", (HEADER + 10) as u64).unwrap();
    snapshot.release();
    assert!(snapshot.verify().is_err(), "a change at rest went unnoticed");
}

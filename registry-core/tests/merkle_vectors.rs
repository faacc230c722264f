//! RFC 6962 / RFC 9162 proof verification against the transparency-dev conformance vectors
//! (`testdata/merkle/`, core suite: `inclusion/` and `consistency/`). Every vector must give
//! exactly its expected verdict.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use registry_core::merkle;
use serde::Deserialize;

fn vector_dir(kind: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/merkle").join(kind);
    assert!(
        dir.is_dir(),
        "Merkle test vectors missing at {} (copied from ../shared/testdata/merkle)",
        dir.display()
    );
    dir
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable vector directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A hash field as the vectors give it: base64, possibly empty or of the wrong length. Wrong
/// lengths are passed on as they are: refusing them is the verifier's job.
fn bytes(b64: &str) -> Option<Vec<u8>> {
    B64.decode(b64).ok()
}

fn proof(items: &Option<Vec<String>>) -> Option<Vec<Vec<u8>>> {
    items.iter().flatten().map(|s| bytes(s)).collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Inclusion {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
struct Consistency {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    #[serde(rename = "wantErr")]
    want_err: bool,
}

#[test]
fn every_inclusion_vector_gives_its_expected_verdict() {
    let files = json_files(&vector_dir("inclusion"));
    assert!(files.len() > 50, "expected the full inclusion suite, found {} files", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable vector");
        let v: Inclusion = serde_json::from_str(&text).expect("well-formed vector");
        let accepted = match (bytes(&v.leaf_hash), bytes(&v.root), proof(&v.proof)) {
            (Some(leaf), Some(root), Some(p)) => {
                merkle::verify_inclusion(v.leaf_idx, v.tree_size, &leaf, &p, &root).is_ok()
            }
            _ => false,
        };
        assert_eq!(accepted, !v.want_err, "{} ({})", file.display(), v.desc);
    }
}

#[test]
fn every_consistency_vector_gives_its_expected_verdict() {
    let files = json_files(&vector_dir("consistency"));
    assert!(files.len() > 50, "expected the full consistency suite, found {} files", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable vector");
        let v: Consistency = serde_json::from_str(&text).expect("well-formed vector");
        let accepted = match (bytes(&v.root1), bytes(&v.root2), proof(&v.proof)) {
            (Some(r1), Some(r2), Some(p)) => {
                merkle::verify_consistency(v.size1, v.size2, &r1, &r2, &p).is_ok()
            }
            _ => false,
        };
        assert_eq!(accepted, !v.want_err, "{} ({})", file.display(), v.desc);
    }
}

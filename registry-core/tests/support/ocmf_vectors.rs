//! Reads `testdata/ocmf/vectors.txt` (real signed meter values with their public keys and the
//! verdicts re-checked with OpenSSL; copied from `../shared/testdata/ocmf/`). Shared by the
//! library's tests and the end-to-end tests, which include this file by path.

use std::path::Path;

/// One vector: a record, the public key that should verify it, and the verdict.
#[derive(Debug, Clone)]
pub struct Vector {
    /// `V01`, ...
    pub name: String,
    /// The OCMF record (built from payload and signature where the file gives them apart).
    pub record: String,
    /// The public key as given.
    pub public_key: String,
    /// Whether the signature is valid.
    pub valid: bool,
}

/// Every vector in the file at `path`.
pub fn load(path: &Path) -> Vec<Vector> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "OCMF test vectors missing at {} ({e}); they are copied from ../shared/testdata/ocmf/vectors.txt",
            path.display()
        )
    });
    let mut out = Vec::new();
    for block in text.split("\n=== ").skip(1) {
        let name = block.split_once(" ===").map(|(n, _)| n.trim().to_string()).expect("a name");
        let lines: Vec<&str> = block.lines().collect();
        let after = |label: &str| -> Option<String> {
            let i = lines.iter().position(|l| l.starts_with(label))?;
            Some(lines.get(i + 1)?.trim().to_string())
        };
        let value = |label: &str| -> Option<String> {
            lines.iter().find_map(|l| l.strip_prefix(label)).map(|v| v.trim().to_string())
        };
        let verdict = value("local check:").expect("a verdict");
        let valid = match verdict.as_str() {
            "VALID" => true,
            "INVALID" => false,
            other => panic!("{name}: unknown verdict {other}"),
        };
        let public_key = after("public_key (verbatim):")
            .or_else(|| after("spki (verbatim):"))
            .expect("a public key");
        let record = match after("ocmf (verbatim):") {
            Some(r) => r,
            None => {
                let payload = after("data = payload section (verbatim):").expect("a payload");
                let sd = after("signature DER hex (verbatim):").expect("a signature");
                let curve =
                    value("curve:").and_then(|c| c.split_whitespace().next().map(str::to_string));
                let sa = curve.map(|c| format!("\"SA\":\"ECDSA-{c}-SHA256\",")).unwrap_or_default();
                format!("OCMF|{payload}|{{{sa}\"SD\":\"{sd}\"}}")
            }
        };
        out.push(Vector { name, record, public_key, valid });
    }
    assert!(!out.is_empty(), "no vectors in {}", path.display());
    out
}

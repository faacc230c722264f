//! Key files: P-256 private keys (PKCS#8 PEM, owner-readable only) for signing commands, and
//! public keys given inline or as `@FILE`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use registry_core::keys::P256KeyPair;

use crate::ClientError;

/// Reads a P-256 private key (PKCS#8 PEM).
pub fn load_signer(path: &Path) -> Result<P256KeyPair, ClientError> {
    let pem = std::fs::read_to_string(path).map_err(|e| {
        ClientError::Input(format!("cannot read signing key {}: {e}", path.display()))
    })?;
    P256KeyPair::from_pkcs8_pem(&pem)
        .map_err(|e| ClientError::Input(format!("{}: {e}", path.display())))
}

/// The public key file written next to a private key: `KEY.pem` → `KEY.pub.pem`.
pub fn public_path(path: &Path) -> std::path::PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    path.with_file_name(format!("{stem}.pub.pem"))
}

/// Generates a P-256 key and writes it as PKCS#8 PEM with mode 0600, and its public key next to
/// it (see [`public_path`]). Refuses to overwrite.
pub fn generate(path: &Path) -> Result<P256KeyPair, ClientError> {
    let key = P256KeyPair::generate();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ClientError::Input(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(key.to_pkcs8_pem().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| ClientError::Input(format!("cannot write {}: {e}", path.display())))?;
    let public = public_path(path);
    std::fs::write(&public, key.public_key_pem())
        .map_err(|e| ClientError::Input(format!("cannot write {}: {e}", public.display())))?;
    Ok(key)
}

/// A public key given on the command line: the text itself, or `@FILE` for a file's content.
pub fn public_key_arg(arg: &str) -> Result<String, ClientError> {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| ClientError::Input(format!("cannot read public key {path}: {e}"))),
        None => Ok(arg.to_string()),
    }
}

/// A public key file or inline key for commands that take one; a private key file is accepted
/// too and its public half is used.
pub fn public_key_from_file_or_text(arg: &str) -> Result<String, ClientError> {
    let text = if Path::new(arg).is_file() {
        public_key_arg(&format!("@{arg}"))?
    } else {
        public_key_arg(arg)?
    };
    if text.contains("PRIVATE KEY") {
        let key = P256KeyPair::from_pkcs8_pem(&text)
            .map_err(|e| ClientError::Input(format!("{arg}: {e}")))?;
        return Ok(key.public_key_pem());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_generated_key_is_private_to_its_owner_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("op.pem");
        let key = generate(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_signer(&path).unwrap().public_key_der(), key.public_key_der());
        let public = std::fs::read_to_string(dir.path().join("op.pub.pem")).unwrap();
        assert_eq!(public, key.public_key_pem());
        assert!(generate(&path).is_err(), "an existing key is never overwritten");
    }
}

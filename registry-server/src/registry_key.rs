//! The registry's own P-256 key: it signs checkpoints and receipts.
//!
//! On first start the key is generated into the data directory as PKCS#8 PEM, readable by the
//! owner only, and written so that a crash can never leave a half-written key behind (temporary
//! file, fsync, rename, fsync of the directory). Later starts load it. Losing this file means
//! losing the registry's identity, so it is never overwritten.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use registry_core::keys::{self, P256KeyPair};

/// File name of the private key inside the data directory.
pub const KEY_FILE: &str = "registry-key.pem";
/// File name of the public key, written next to it for distribution.
pub const PUBLIC_KEY_FILE: &str = "registry-key.pub.pem";

/// The key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not a P-256 PKCS#8 PEM key.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: keys::KeyError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io { path: path.to_path_buf(), source }
}

/// The registry key and whether it was created by this call.
pub struct LoadedKey {
    /// The key.
    pub key: P256KeyPair,
    /// True on first start.
    pub created: bool,
    /// Where the private key lives.
    pub path: PathBuf,
}

/// Loads the registry key from `data_dir`, generating it on first start.
pub fn load_or_create(data_dir: &Path) -> Result<LoadedKey, KeyFileError> {
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let path = data_dir.join(KEY_FILE);
    if path.exists() {
        let mode = fs::metadata(&path).map_err(io(&path))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(file = %path.display(), mode = format!("{mode:o}"),
                "the registry key is readable by others; it should be mode 0600");
        }
        let pem = fs::read_to_string(&path).map_err(io(&path))?;
        let key = P256KeyPair::from_pkcs8_pem(&pem)
            .map_err(|source| KeyFileError::Key { path: path.clone(), source })?;
        write_public_key(data_dir, &key)?;
        return Ok(LoadedKey { key, created: false, path });
    }
    let key = P256KeyPair::generate();
    write_private_key(&path, &key.to_pkcs8_pem())?;
    write_public_key(data_dir, &key)?;
    Ok(LoadedKey { key, created: true, path })
}

/// Writes a private key file with mode 0600 (creating it atomically; never overwriting).
pub fn write_private_key(path: &Path, pem: &str) -> Result<(), KeyFileError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = path.with_extension("pem.tmp");
    let _ = fs::remove_file(&tmp);
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(pem.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    if path.exists() {
        let _ = fs::remove_file(&tmp);
        return Err(KeyFileError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "refusing to overwrite a key",
            ),
        });
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

fn write_public_key(data_dir: &Path, key: &P256KeyPair) -> Result<(), KeyFileError> {
    let path = data_dir.join(PUBLIC_KEY_FILE);
    let pem = key.public_key_pem();
    if fs::read_to_string(&path).ok().as_deref() != Some(pem.as_str()) {
        fs::write(&path, pem).map_err(io(&path))?;
    }
    Ok(())
}

/// The signed-note key ID of the registry key, as 8 hex digits.
pub fn note_key_id_hex(key: &P256KeyPair) -> String {
    hex::encode(keys::note_key_id(key.public_key_der()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_with_owner_only_permissions_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert!(first.created);
        let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create(dir.path()).unwrap();
        assert!(!second.created);
        assert_eq!(second.key.public_key_der(), first.key.public_key_der());
        let public = fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(public, first.key.public_key_pem());
    }

    #[test]
    fn a_damaged_key_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), "not a key").unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(KeyFileError::Key { .. })));
        assert_eq!(fs::read_to_string(dir.path().join(KEY_FILE)).unwrap(), "not a key");
    }
}

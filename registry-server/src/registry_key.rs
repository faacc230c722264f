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
    /// The data directory is a replica's (the primary's public key, no private key): starting
    /// it as a primary would create a second registry key.
    #[error(
        "{0} is a read replica's data directory (it holds the registry's public key only): start \
         it with --follow PRIMARY_URL, or make it the primary with `registry-server promote`"
    )]
    Replica(PathBuf),
    /// The data directory holds the registry's private key: it is a primary's.
    #[error(
        "{0} holds the registry's private key: it is a primary's data directory, and a replica \
         starts from an empty one (the old primary's log may hold entries the new one never had)"
    )]
    Primary(PathBuf),
    /// A key that is not the registry's.
    #[error("{path}: {why}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What does not match.
        why: String,
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

/// Loads the registry key from `data_dir`, generating it on first start (never in a replica's
/// data directory).
pub fn load_or_create(data_dir: &Path) -> Result<LoadedKey, KeyFileError> {
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let path = data_dir.join(KEY_FILE);
    if !path.exists() && data_dir.join(PUBLIC_KEY_FILE).exists() {
        return Err(KeyFileError::Replica(data_dir.to_path_buf()));
    }
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

/// Loads the registry key from `file`, outside the data directory (a mounted Secret), and
/// writes its public key into `data_dir`. Refused when the data directory belongs to another
/// key: its own private key file, or the public key of the log it holds (a replica's), differs.
pub fn load_from(data_dir: &Path, file: &Path) -> Result<LoadedKey, KeyFileError> {
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let pem = fs::read_to_string(file).map_err(io(file))?;
    let key = P256KeyPair::from_pkcs8_pem(&pem)
        .map_err(|source| KeyFileError::Key { path: file.to_path_buf(), source })?;
    let own = data_dir.join(KEY_FILE);
    if let Ok(other) = fs::read_to_string(&own)
        && P256KeyPair::from_pkcs8_pem(&other).map(|k| k.public_key_der().to_vec()).ok()
            != Some(key.public_key_der().to_vec())
    {
        return Err(KeyFileError::Mismatch {
            path: own,
            why: format!("is another key than the configured registry_key {}", file.display()),
        });
    }
    if pinned(data_dir)?.is_some_and(|p| p.der != key.public_key_der()) {
        return Err(KeyFileError::Mismatch {
            path: data_dir.join(PUBLIC_KEY_FILE),
            why: format!(
                "the log in this data directory is signed by this key, not by the configured \
                 registry_key {}",
                file.display()
            ),
        });
    }
    write_public_key(data_dir, &key)?;
    Ok(LoadedKey { key, created: false, path: file.to_path_buf() })
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

/// The registry's public key as a replica holds it.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// DER SubjectPublicKeyInfo.
    pub der: Vec<u8>,
    /// PEM of the same.
    pub pem: String,
}

impl PublicKey {
    /// Parses a P-256 public key in PEM.
    pub fn from_pem(pem: &str) -> Result<Self, keys::KeyError> {
        let der = keys::p256_spki_der_from_pem(pem)?;
        let pem = keys::p256_spki_pem(&der)?;
        Ok(Self { der, pem })
    }
}

/// The registry public key in `data_dir` (`registry-key.pub.pem`), if there is one: the key a
/// replica pinned, or the one a primary wrote next to its private key.
pub fn pinned(data_dir: &Path) -> Result<Option<PublicKey>, KeyFileError> {
    let path = data_dir.join(PUBLIC_KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(pem) => {
            PublicKey::from_pem(&pem).map(Some).map_err(|source| KeyFileError::Key { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyFileError::Io { path, source }),
    }
}

/// A replica's pinned public key: the one in `data_dir` if there is one, else `offered` (what
/// the configuration or, on first use, the primary names), which is then pinned. A pinned key
/// that differs from a configured one is refused; so is a primary's data directory.
pub fn pin_public(
    data_dir: &Path,
    offered: &PublicKey,
    configured: bool,
) -> Result<PublicKey, KeyFileError> {
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    if data_dir.join(KEY_FILE).exists() {
        return Err(KeyFileError::Primary(data_dir.to_path_buf()));
    }
    let path = data_dir.join(PUBLIC_KEY_FILE);
    match pinned(data_dir)? {
        Some(pinned) if configured && pinned.der != offered.der => Err(KeyFileError::Mismatch {
            path,
            why: "is not the configured registry key (follow.registry_key)".into(),
        }),
        Some(pinned) => Ok(pinned),
        None => {
            crate::files::replace(&path, offered.pem.as_bytes()).map_err(io(&path))?;
            Ok(offered.clone())
        }
    }
}

/// Makes a replica's data directory a primary's: writes the registry's private key from
/// `key_file` into it, after checking that it is the key of the public key the replica pinned
/// (its log's checkpoints are signed by it). The next start without `--follow` is a primary
/// that continues the same log.
pub fn promote(data_dir: &Path, key_file: &Path) -> Result<PublicKey, KeyFileError> {
    let pinned_path = data_dir.join(PUBLIC_KEY_FILE);
    if data_dir.join(KEY_FILE).exists() {
        return Err(KeyFileError::Primary(data_dir.to_path_buf()));
    }
    let pinned = pinned(data_dir)?.ok_or_else(|| KeyFileError::Io {
        path: pinned_path.clone(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    let pem = fs::read_to_string(key_file).map_err(io(key_file))?;
    let key = P256KeyPair::from_pkcs8_pem(&pem)
        .map_err(|source| KeyFileError::Key { path: key_file.to_path_buf(), source })?;
    if key.public_key_der() != pinned.der.as_slice() {
        return Err(KeyFileError::Mismatch {
            path: key_file.to_path_buf(),
            why: format!(
                "is not the private key of the registry key this replica follows ({})",
                pinned_path.display()
            ),
        });
    }
    write_private_key(&data_dir.join(KEY_FILE), &pem)?;
    Ok(pinned)
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
    fn a_replica_directory_gets_no_key_of_its_own_until_promoted_with_the_registry_s() {
        let primary = tempfile::tempdir().unwrap();
        let key = load_or_create(primary.path()).unwrap();
        let public = PublicKey::from_pem(&key.key.public_key_pem()).unwrap();
        let replica = tempfile::tempdir().unwrap();
        pin_public(replica.path(), &public, false).unwrap();
        assert!(matches!(load_or_create(replica.path()), Err(KeyFileError::Replica(_))));
        assert!(!replica.path().join(KEY_FILE).exists());
        let other = P256KeyPair::generate();
        let other_file = replica.path().join("other.pem");
        fs::write(&other_file, other.to_pkcs8_pem()).unwrap();
        assert!(matches!(promote(replica.path(), &other_file), Err(KeyFileError::Mismatch { .. })));
        let other_public = PublicKey::from_pem(&other.public_key_pem()).unwrap();
        assert!(matches!(
            pin_public(replica.path(), &other_public, true),
            Err(KeyFileError::Mismatch { .. })
        ));
        promote(replica.path(), &key.path).unwrap();
        let loaded = load_or_create(replica.path()).unwrap();
        assert!(!loaded.created);
        assert_eq!(loaded.key.public_key_der(), key.key.public_key_der());
        assert!(matches!(
            pin_public(replica.path(), &public, false),
            Err(KeyFileError::Primary(_))
        ));
    }

    #[test]
    fn a_key_from_a_secret_serves_its_own_directory_or_a_replica_of_it_and_no_other() {
        let secret = tempfile::tempdir().unwrap();
        let key = P256KeyPair::generate();
        let file = secret.path().join("registry-key.pem");
        fs::write(&file, key.to_pkcs8_pem()).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let loaded = load_from(fresh.path(), &file).unwrap();
        assert_eq!(loaded.key.public_key_der(), key.public_key_der());
        assert!(!fresh.path().join(KEY_FILE).exists(), "the private key stays in the Secret");
        assert!(load_from(fresh.path(), &file).is_ok(), "and again at the next start");

        let replica = tempfile::tempdir().unwrap();
        pin_public(replica.path(), &PublicKey::from_pem(&key.public_key_pem()).unwrap(), false)
            .unwrap();
        assert!(load_from(replica.path(), &file).is_ok(), "a replica of this key's log");

        let other = tempfile::tempdir().unwrap();
        load_or_create(other.path()).unwrap();
        assert!(matches!(load_from(other.path(), &file), Err(KeyFileError::Mismatch { .. })));
        let other_replica = tempfile::tempdir().unwrap();
        let stranger = PublicKey::from_pem(&P256KeyPair::generate().public_key_pem()).unwrap();
        pin_public(other_replica.path(), &stranger, false).unwrap();
        assert!(matches!(
            load_from(other_replica.path(), &file),
            Err(KeyFileError::Mismatch { .. })
        ));
    }

    #[test]
    fn a_damaged_key_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), "not a key").unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(KeyFileError::Key { .. })));
        assert_eq!(fs::read_to_string(dir.path().join(KEY_FILE)).unwrap(), "not a key");
    }
}

//! The audit archive: a self-contained copy of the log in the C2SP `tlog-tiles` layout, plus a
//! readable view, that any static web server can mirror and anyone can verify offline.
//!
//! ```text
//! DIR/checkpoint                  signed checkpoint covering exactly the archived entries
//! DIR/tile/entries/<N>[.p/<W>]    entry bundles: entries as stored, each a uint16 BE length + bytes
//! DIR/tile/<L>/<N>[.p/<W>]        hash tiles (level 0: leaf hashes; level L: roots of full tiles below)
//! DIR/entries.jsonl               one JSON object per entry: the decoded view (for people; checked
//!                                 line by line against the verified entries by `audit verify`)
//! DIR/registry-key.pem            the registry's public key as served (verify takes the key separately)
//! DIR/archive.json                origin, size, format
//! ```
//!
//! `<N>` is written in 3-digit groups, all but the last prefixed with `x` (`x001/x234/067`).
//! Full bundles and tiles never change once written; partial ones are replaced as the log grows.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use registry_core::checkpoint::Checkpoint;
use registry_core::entry::Entry;
use registry_core::merkle::{self, Hash};
use serde::{Deserialize, Serialize};

use registry_core::tiles;
pub use registry_core::tiles::{WIDTH, index_path};

/// Why an archive cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The archive's content is malformed; the first bad position when known.
    #[error("{}{reason}", position.map(|p| format!("entry {p}: ")).unwrap_or_default())]
    Malformed {
        /// The first entry affected.
        position: Option<u64>,
        /// What is wrong.
        reason: String,
    },
}

fn malformed(reason: &str) -> ArchiveError {
    ArchiveError::Malformed { position: None, reason: reason.into() }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { path: path.to_path_buf(), source }
}

/// The path of entry bundle `n` of `width` entries.
pub fn bundle_path(dir: &Path, n: u64, width: u64) -> PathBuf {
    tile_path(dir, None, n, width)
}

fn tile_path(dir: &Path, level: Option<u8>, n: u64, width: u64) -> PathBuf {
    dir.join(tiles::tile_path(level, n, width))
}

/// The `format` of every archive's manifest.
pub const FORMAT: &str = "keyregistry.v1 archive";

/// The archive's manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Always `keyregistry.v1 archive`.
    pub format: String,
    /// The log's origin.
    pub origin: String,
    /// Entries archived.
    pub size: u64,
}

/// An archive directory.
#[derive(Debug)]
pub struct Archive {
    dir: PathBuf,
    /// Roots of full tiles (level, index) computed so far: full tiles never change, so a long
    /// export hashes each once.
    full_roots: Mutex<HashMap<(u8, u64), Hash>>,
    /// (lines, bytes) of `entries.jsonl` as this process last left it, so appending does not
    /// re-read the file.
    jsonl_end: Mutex<Option<(u64, u64)>>,
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ArchiveError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    fs::write(&tmp, bytes).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

impl Archive {
    /// The archive in `dir` (created on first write).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            full_roots: Mutex::new(HashMap::new()),
            jsonl_end: Mutex::new(None),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest, if the archive exists.
    pub fn manifest(&self) -> Result<Option<Manifest>, ArchiveError> {
        let path = self.dir.join("archive.json");
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                ArchiveError::Malformed { position: None, reason: format!("archive.json: {e}") }
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The archived checkpoint's text.
    pub fn checkpoint_text(&self) -> Result<String, ArchiveError> {
        let path = self.dir.join("checkpoint");
        fs::read_to_string(&path).map_err(io(&path))
    }

    /// Reads bundle `n` of width `width`: the entries as stored.
    pub fn read_bundle(&self, n: u64, width: u64) -> Result<Vec<Vec<u8>>, ArchiveError> {
        let (entries, error) = self.parse_bundle(n, width)?;
        match error {
            Some(e) => Err(e),
            None => Ok(entries),
        }
    }

    /// Parses a bundle as far as its framing allows: the entries before any framing error, and
    /// the error. A damaged length prefix thus still lets a verifier meet the damaged entry
    /// itself first.
    fn parse_bundle(
        &self,
        n: u64,
        width: u64,
    ) -> Result<(Vec<Vec<u8>>, Option<ArchiveError>), ArchiveError> {
        let path = tile_path(&self.dir, None, n, width);
        let bytes = fs::read(&path).map_err(io(&path))?;
        let (entries, bad) = tiles::decode_bundle(&bytes, width);
        let bad = bad.map(|b| ArchiveError::Malformed {
            position: Some(n * WIDTH + b.index),
            reason: b.reason,
        });
        Ok((entries, bad))
    }

    /// Every archived entry, in order, for a log of `size` entries; a framing error comes after
    /// the entries that could be read before it.
    pub fn entries(&self, size: u64) -> impl Iterator<Item = Result<Vec<u8>, ArchiveError>> + '_ {
        let bundles = size.div_ceil(WIDTH);
        (0..bundles).flat_map(move |n| match self.parse_bundle(n, tiles::width_in(n, size)) {
            Ok((entries, error)) => {
                entries.into_iter().map(Ok).chain(error.map(Err)).collect::<Vec<_>>()
            }
            Err(e) => vec![Err(e)],
        })
    }

    /// Writes entries `start..` (bundles, hash tiles, the readable view), given every leaf hash
    /// up to the new end. The archive's checkpoint and manifest are unchanged until
    /// [`Archive::commit`], so an interrupted export leaves an archive that still verifies and
    /// resumes from its old size.
    pub fn write_entries(
        &self,
        start: u64,
        new_entries: &[Vec<u8>],
        leaves: &[Hash],
    ) -> Result<(), ArchiveError> {
        let size = start + new_entries.len() as u64;
        if leaves.len() as u64 != size {
            return Err(ArchiveError::Malformed {
                position: None,
                reason: "leaf hashes do not match the entries".into(),
            });
        }
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        // Entry bundles from the one holding `start`: earlier entries of that bundle come from disk.
        let first_bundle = start / WIDTH;
        let mut pending: Vec<Vec<u8>> = if start.is_multiple_of(WIDTH) {
            Vec::new()
        } else {
            let stored = self
                .stored_width(first_bundle)?
                .filter(|w| *w >= start % WIDTH)
                .ok_or_else(|| ArchiveError::Malformed {
                    position: Some(start),
                    reason: "the entries before this position are not archived".into(),
                })?;
            let mut kept = self.read_bundle(first_bundle, stored)?;
            kept.truncate((start % WIDTH) as usize);
            kept
        };
        pending.extend(new_entries.iter().cloned());
        for (i, chunk) in pending.chunks(WIDTH as usize).enumerate() {
            let n = first_bundle + i as u64;
            let bytes = tiles::encode_bundle(chunk).map_err(|e| ArchiveError::Malformed {
                position: Some(n * WIDTH + e.index as u64),
                reason: e.to_string(),
            })?;
            write_atomically(&tile_path(&self.dir, None, n, chunk.len() as u64), &bytes)?;
        }
        // Hash tiles, level by level, from the first tile the new entries change; full tiles are
        // immutable and written once.
        let mut roots =
            self.full_roots.lock().map_err(|_| malformed("the tile cache lock is poisoned"))?;
        let mut upper: Vec<Hash>;
        let mut hashes: &[Hash] = leaves;
        let mut level = 0u8;
        let mut changed_from = start; // first hash index at this level that may be new
        while !hashes.is_empty() {
            let first_tile = changed_from / WIDTH;
            for (n, chunk) in hashes.chunks(WIDTH as usize).enumerate().skip(first_tile as usize) {
                let n = n as u64;
                let path = tile_path(&self.dir, Some(level), n, chunk.len() as u64);
                if chunk.len() as u64 == WIDTH && path.exists() {
                    continue;
                }
                write_atomically(&path, &chunk.concat())?;
            }
            self.remove_stale_partials(Some(level), first_tile, hashes.len() as u64)?;
            upper = hashes
                .chunks_exact(WIDTH as usize)
                .enumerate()
                .map(|(n, c)| {
                    *roots
                        .entry((level + 1, n as u64))
                        .or_insert_with(|| merkle::MemoryTree::new(c.to_vec()).mth(0, WIDTH))
                })
                .collect();
            hashes = &upper;
            changed_from = first_tile;
            level += 1;
        }
        drop(roots);
        self.remove_stale_partials(None, first_bundle, size)?;
        self.append_jsonl(start, new_entries)
    }

    /// Records the checkpoint that covers exactly the archived entries, the registry key and the
    /// manifest.
    pub fn commit(
        &self,
        origin: &str,
        size: u64,
        checkpoint: &str,
        registry_key_pem: &str,
    ) -> Result<(), ArchiveError> {
        write_atomically(&self.dir.join("registry-key.pem"), registry_key_pem.as_bytes())?;
        write_atomically(&self.dir.join("checkpoint"), checkpoint.as_bytes())?;
        let manifest = Manifest { format: FORMAT.into(), origin: origin.into(), size };
        write_atomically(
            &self.dir.join("archive.json"),
            serde_json::to_string_pretty(&manifest).expect("serializes").as_bytes(),
        )
    }

    /// The width bundle `n` is stored at: full, or the widest partial.
    fn stored_width(&self, n: u64) -> Result<Option<u64>, ArchiveError> {
        if bundle_path(&self.dir, n, WIDTH).is_file() {
            return Ok(Some(WIDTH));
        }
        let partials = PathBuf::from(format!("{}.p", bundle_path(&self.dir, n, WIDTH).display()));
        if !partials.is_dir() {
            return Ok(None);
        }
        let mut widest = None;
        for f in fs::read_dir(&partials).map_err(io(&partials))? {
            let name = f.map_err(io(&partials))?.file_name();
            if let Some(w) = name.to_str().and_then(|n| n.parse::<u64>().ok()) {
                widest = widest.max(Some(w));
            }
        }
        Ok(widest)
    }

    /// Removes partial bundles and tiles that a larger size superseded.
    /// Removes partial tiles (or bundles, `level` `None`) from tile `first` on that a log of
    /// `count` hashes (entries) no longer has: they were replaced by wider or full ones.
    fn remove_stale_partials(
        &self,
        level: Option<u8>,
        first: u64,
        count: u64,
    ) -> Result<(), ArchiveError> {
        let keep = tile_path(&self.dir, level, count / WIDTH, count % WIDTH);
        for n in first..=count / WIDTH {
            let partials =
                PathBuf::from(format!("{}.p", tile_path(&self.dir, level, n, WIDTH).display()));
            let Ok(dir) = fs::read_dir(&partials) else { continue };
            for f in dir {
                let path = f.map_err(io(&partials))?.path();
                if path != keep {
                    fs::remove_file(&path).map_err(io(&path))?;
                }
            }
        }
        Ok(())
    }

    /// Appends the decoded view of new entries, dropping any lines past `start` first.
    fn append_jsonl(&self, start: u64, entries: &[Vec<u8>]) -> Result<(), ArchiveError> {
        let path = self.dir.join("entries.jsonl");
        let mut end = self.jsonl_end.lock().map_err(|_| malformed("the jsonl lock is poisoned"))?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let offset = match *end {
            Some((lines, bytes)) if lines == start => bytes,
            // First write of this process, or a rewrite: find where line `start` begins.
            _ => {
                let mut reader = BufReader::new(&mut file);
                let (mut offset, mut line) = (0u64, Vec::new());
                for _ in 0..start {
                    line.clear();
                    let n = reader.read_until(b'\n', &mut line).map_err(io(&path))?;
                    if n == 0 {
                        break;
                    }
                    offset += n as u64;
                }
                offset
            }
        };
        file.set_len(offset).map_err(io(&path))?;
        file.seek(std::io::SeekFrom::Start(offset)).map_err(io(&path))?;
        let mut out = BufWriter::new(file);
        let mut written = 0u64;
        for (i, bytes) in entries.iter().enumerate() {
            let line = jsonl_line(start + i as u64, bytes);
            out.write_all(line.as_bytes()).map_err(io(&path))?;
            written += line.len() as u64;
        }
        out.flush().map_err(io(&path))?;
        out.get_ref().sync_all().map_err(io(&path))?;
        *end = Some((start + entries.len() as u64, offset + written));
        Ok(())
    }
}

/// The line of `entries.jsonl` for the entry at `position`: its decoded view, newline-terminated.
fn jsonl_line(position: u64, bytes: &[u8]) -> String {
    let line = match Entry::decode(bytes) {
        Ok(e) => crate::render::entry(&e),
        Err(e) => serde_json::json!({"position": position, "malformed": e.to_string()}),
    };
    format!("{line}\n")
}

impl Archive {
    /// Checks that `entries.jsonl`, the file people read, says exactly what the first `size`
    /// archived entries (verified by the caller) say: line by line, as the export renders them.
    /// An archive without the file passes (it ships nothing unverified). Lines past `size` (an
    /// export or `follow` interrupted before it committed its new checkpoint wrote them) are
    /// not verified: `Ok(Some(warning))` says how many there are.
    pub fn check_jsonl(&self, size: u64) -> Result<Option<String>, String> {
        let path = self.dir.join("entries.jsonl");
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("entries.jsonl cannot be read: {e}")),
        };
        let mut lines = BufReader::new(file);
        let mut line = String::new();
        for (position, entry) in self.entries(size).enumerate() {
            let entry = entry.map_err(|e| e.to_string())?;
            line.clear();
            lines.read_line(&mut line).map_err(|e| {
                format!("entries.jsonl cannot be read at line {}: {e}", position + 1)
            })?;
            if line.is_empty() {
                return Err(format!(
                    "entries.jsonl ends after {position} lines, but the archive holds {size} entries"
                ));
            }
            if line != jsonl_line(position as u64, &entry) {
                return Err(format!(
                    "entries.jsonl line {} does not say what the verified entry {position} \
                     says: the file was edited or belongs to another archive",
                    position + 1
                ));
            }
        }
        let extra = lines.lines().count();
        Ok((extra > 0).then(|| {
            format!(
                "entries.jsonl has {extra} lines past the archive's checkpoint ({size} entries): an \
                 interrupted export or follow wrote them, and they are NOT verified; run the \
                 export again"
            )
        }))
    }

    /// The registry key the archive carries (`registry-key.pem`), as DER, if it has one.
    pub fn registry_key(&self) -> Option<Vec<u8>> {
        let pem = fs::read_to_string(self.dir.join("registry-key.pem")).ok()?;
        registry_core::keys::p256_spki_der_from_pem(&pem).ok()
    }
}

/// Opens an archived checkpoint with the registry's key: the key name is the origin line.
pub fn open_checkpoint(text: &str, registry_key: &[u8]) -> Result<Checkpoint, String> {
    let origin = text.lines().next().unwrap_or_default();
    let verifier =
        registry_core::note::NoteVerifier::new(origin, registry_key).map_err(|e| e.to_string())?;
    Checkpoint::open(text, &verifier).map_err(|e| e.to_string())
}

/// Checks that every hash tile matches the archived entries (a mirror's tiles are derived data;
/// a tampered tile must not pass unnoticed).
pub fn check_tiles(archive: &Archive, leaves: &[Hash]) -> Result<(), String> {
    let mut level_hashes = leaves.to_vec();
    let mut level = 0u8;
    while !level_hashes.is_empty() {
        for (n, chunk) in level_hashes.chunks(WIDTH as usize).enumerate() {
            let path = tile_path(archive.dir(), Some(level), n as u64, chunk.len() as u64);
            let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if bytes != chunk.concat() {
                return Err(format!("hash tile {} does not match the entries", path.display()));
            }
        }
        level_hashes = level_hashes
            .chunks(WIDTH as usize)
            .filter(|c| c.len() as u64 == WIDTH)
            .map(|c| merkle::MemoryTree::new(c.to_vec()).mth(0, WIDTH))
            .collect();
        level += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_of_70000_has_the_tiles_the_spec_lists() {
        // tlog-tiles: 273 full level-0 tiles, a partial of 112, a full level-1 tile, a partial
        // level-1 tile of 17 and a partial level-2 tile of 1.
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::new(dir.path());
        let leaves: Vec<Hash> =
            (0..70_000u64).map(|i| merkle::leaf_hash(&i.to_be_bytes())).collect();
        let entries: Vec<Vec<u8>> = (0..70_000u64).map(|i| i.to_be_bytes().to_vec()).collect();
        a.write_entries(0, &entries, &leaves).unwrap();
        assert!(tile_path(dir.path(), Some(0), 272, 256).is_file());
        assert!(tile_path(dir.path(), Some(0), 273, 112).is_file());
        assert!(tile_path(dir.path(), Some(1), 0, 256).is_file());
        assert!(tile_path(dir.path(), Some(1), 1, 17).is_file());
        assert!(tile_path(dir.path(), Some(2), 0, 1).is_file());
        check_tiles(&a, &leaves).unwrap();
        // Growing by 200 entries supersedes the partials.
        let more: Vec<Vec<u8>> = (70_000..70_200u64).map(|i| i.to_be_bytes().to_vec()).collect();
        let all: Vec<Hash> = (0..70_200u64).map(|i| merkle::leaf_hash(&i.to_be_bytes())).collect();
        a.write_entries(70_000, &more, &all).unwrap();
        assert!(!tile_path(dir.path(), Some(0), 273, 112).exists());
        assert!(tile_path(dir.path(), Some(0), 274, 56).is_file());
        let back: Vec<Vec<u8>> = a.entries(70_200).collect::<Result<_, _>>().unwrap();
        assert_eq!(back.len(), 70_200);
        assert_eq!(back[70_100], 70_100u64.to_be_bytes().to_vec());
        check_tiles(&a, &all).unwrap();
    }
}

//! Sealed groups in a flat file beside sled's: written once, never rewritten.
//!
//! Why not in sled: sled 0.34.7 rewrites a segment only once at most half of it is live, so its
//! file settles near twice its live data, and sealed groups are most of the live data. They never
//! change after sealing, so sled's page cache, its segment cleaning and its crash recovery buy
//! them nothing; here they cost their own size on disk, and the kernel's page cache (not the
//! process) holds what is read of them.
//!
//! Two files in sled's directory:
//!
//! ```text
//! sealed.groups   group (u64 LE) | length (u32 LE) | the group as [`super::super::sealed`] seals it, ...
//! sealed.index    start offset (u64 LE) of each group's record in sealed.groups, group 0 first
//! ```
//!
//! Groups are appended in order only: group `g` holds entries `16g .. 16g + 16`, and the file
//! holds groups `0 .. count`. How many of them count is not the files' to say: the sled store
//! commits it (with the removal of the entries' own records, in one batch), and [`GroupFile::open`]
//! cuts the files back to that count. So a crash between an append here and the commit in sled
//! leaves bytes that are cut away at the next start, and the entries are still in sled.
//!
//! What this promises: an append is on stable storage (both files fsynced) before it returns, and
//! before any reader is told of it; a read returns exactly the bytes appended for that group, or
//! an error (`Corrupt`) when the record it finds does not name the group and length it expects.
//! The group's own checks (zstd's checksum, stored lengths) catch damage inside it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::RwLock;

use crate::store::StoreError;

/// The groups' records.
pub const DATA_FILE: &str = "sealed.groups";
/// Where each record starts.
pub const INDEX_FILE: &str = "sealed.index";

/// Bytes before a group's own bytes in its record: group number, length.
const HEADER: u64 = 12;

/// See the module documentation.
pub struct GroupFile {
    data: File,
    index: File,
    extent: RwLock<Extent>,
}

/// What readers may read: the start of every published group's record, and where the last ends.
#[derive(Default)]
struct Extent {
    starts: Vec<u64>,
    end: u64,
}

impl Extent {
    /// The byte range of group `g`'s record, if it is published.
    fn record(&self, g: u64) -> Option<(u64, u64)> {
        let i = usize::try_from(g).ok()?;
        let start = *self.starts.get(i)?;
        let end = self.starts.get(i + 1).copied().unwrap_or(self.end);
        Some((start, end))
    }
}

/// What the caller's database counts as sealed in the files: it commits this with the removal
/// of the groups' entry records, so it is the files' truth after a crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// Groups `0 .. groups` are here.
    pub groups: u64,
    /// Where the last one's record ends in [`DATA_FILE`].
    pub end: u64,
}

impl Committed {
    /// The stored form (16 bytes).
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.groups.to_be_bytes());
        out[8..].copy_from_slice(&self.end.to_be_bytes());
        out
    }

    /// Reads [`Committed::encode`]'s form.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let (groups, end) = bytes
            .split_at_checked(8)
            .and_then(|(g, e)| Some((g.try_into().ok()?, e.try_into().ok()?)))
            .ok_or_else(|| {
                StoreError::Corrupt("the sealed groups' count is not 16 bytes".into())
            })?;
        Ok(Self { groups: u64::from_be_bytes(groups), end: u64::from_be_bytes(end) })
    }
}

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(format!("{DATA_FILE}: {what}. {}", crate::store::RECOVER))
}

impl GroupFile {
    /// Opens (or creates) the files in `dir` with the groups the caller's database counts as
    /// sealed here, and cuts away whatever lies past them. Less than that on disk is damage.
    pub fn open(dir: &Path, committed: Committed) -> Result<Self, StoreError> {
        let open = |name: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(name))
        };
        let created = !dir.join(DATA_FILE).exists() || !dir.join(INDEX_FILE).exists();
        let (data, index) = (open(DATA_FILE)?, open(INDEX_FILE)?);
        if created {
            data.sync_all()?;
            index.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        let Committed { groups, end } = committed;
        let indexed = index.metadata()?.len() / 8;
        let data_len = data.metadata()?.len();
        if indexed < groups || data_len < end {
            return Err(corrupt(format!(
                "the database sealed {groups} groups of {end} bytes here, but {INDEX_FILE} lists \
                 {indexed} and {DATA_FILE} holds {data_len} bytes"
            )));
        }
        let count = usize::try_from(groups)
            .map_err(|_| corrupt(format!("{groups} groups do not fit in memory")))?;
        let mut raw = vec![0u8; count * 8];
        index.read_exact_at(&mut raw, 0)?;
        let starts: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let extent = Extent { starts, end };
        if let Some(last) = groups.checked_sub(1) {
            // The last record must end where the database says the file ends.
            let (start, end) = extent.record(last).unwrap_or_default();
            let mut header = [0u8; HEADER as usize];
            let len = start.checked_add(HEADER).and_then(|body| end.checked_sub(body));
            let whole = len.is_some() && data.read_exact_at(&mut header, start).is_ok();
            if !whole || check_header(&header, last, len.unwrap_or_default()).is_err() {
                return Err(corrupt(format!(
                    "the last sealed group ({last}) does not end at byte {end}, where the \
                     database says it does"
                )));
            }
        }
        // What an append wrote before a crash, or before a commit that failed: not sealed.
        if data_len > end || indexed > groups {
            data.set_len(end)?;
            index.set_len(groups * 8)?;
            data.sync_all()?;
            index.sync_all()?;
        }
        Ok(Self { data, index, extent: RwLock::new(extent) })
    }

    fn extent(&self) -> std::sync::RwLockReadGuard<'_, Extent> {
        self.extent.read().unwrap_or_else(|e| e.into_inner())
    }

    /// How many groups readers may read.
    pub fn count(&self) -> u64 {
        self.extent().starts.len() as u64
    }

    /// Group `g`'s bytes, or `None` when it is not here (not sealed here, or not yet). The
    /// record's header is read and checked first, so a damaged index never sizes a read.
    pub fn read(&self, g: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let (start, end, file_end) = {
            let e = self.extent();
            let Some((start, end)) = e.record(g) else { return Ok(None) };
            (start, end, e.end)
        };
        let len = start
            .checked_add(HEADER)
            .filter(|&body| body <= end && end <= file_end)
            .map(|body| end - body)
            .ok_or_else(|| {
                corrupt(format!(
                    "{INDEX_FILE} places group {g} at bytes {start}..{end}, outside the \
                     {file_end} bytes of records"
                ))
            })?;
        let mut header = [0u8; HEADER as usize];
        self.data.read_exact_at(&mut header, start)?;
        check_header(&header, g, len)?;
        let mut group = vec![0u8; len as usize];
        self.data.read_exact_at(&mut group, start + HEADER)?;
        Ok(Some(group))
    }

    /// Appends `groups` as groups `first ..`, which must be the next ones, makes both files
    /// durable, and only then lets readers read them. The caller commits the new count in its
    /// database next, or calls [`GroupFile::retract`] if it cannot.
    pub fn append(&self, first: u64, groups: &[Vec<u8>]) -> Result<Committed, StoreError> {
        let (count, end) = {
            let e = self.extent();
            (e.starts.len() as u64, e.end)
        };
        if first != count {
            return Err(StoreError::Io(format!(
                "group {first} cannot be appended after {count} sealed groups"
            )));
        }
        let mut records =
            Vec::with_capacity(groups.iter().map(|g| g.len() + HEADER as usize).sum());
        let mut starts = Vec::with_capacity(groups.len());
        let mut offsets = Vec::with_capacity(groups.len() * 8);
        for (i, group) in groups.iter().enumerate() {
            let len = u32::try_from(group.len())
                .map_err(|_| StoreError::Io(format!("a sealed group of {} bytes", group.len())))?;
            let start = end + records.len() as u64;
            starts.push(start);
            offsets.extend_from_slice(&start.to_le_bytes());
            records.extend_from_slice(&(first + i as u64).to_le_bytes());
            records.extend_from_slice(&len.to_le_bytes());
            records.extend_from_slice(group);
        }
        // At positions, not appending: what a failed append left past `end` is overwritten.
        self.data.write_all_at(&records, end)?;
        self.index.write_all_at(&offsets, count * 8)?;
        self.data.sync_data()?;
        self.index.sync_data()?;
        let mut e = self.extent.write().unwrap_or_else(|e| e.into_inner());
        e.starts.extend(starts);
        e.end += records.len() as u64;
        Ok(Committed { groups: e.starts.len() as u64, end: e.end })
    }

    /// Forgets the groups from `count` on, after their commit failed: readers go back to the
    /// records the database still holds, and the next append overwrites them.
    pub fn retract(&self, count: u64) {
        let mut e = self.extent.write().unwrap_or_else(|e| e.into_inner());
        if let Ok(keep) = usize::try_from(count)
            && keep < e.starts.len()
        {
            e.end = e.starts[keep];
            e.starts.truncate(keep);
        }
    }

    /// Bytes both files take.
    pub fn disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.data.metadata()?.len() + self.index.metadata()?.len())
    }
}

fn parse_header(header: &[u8]) -> (u64, u64) {
    let mut number = [0u8; 8];
    let mut len = [0u8; 4];
    number.copy_from_slice(&header[..8]);
    len.copy_from_slice(&header[8..12]);
    (u64::from_le_bytes(number), u64::from(u32::from_le_bytes(len)))
}

fn check_header(record: &[u8], g: u64, len: u64) -> Result<(), StoreError> {
    let (number, stored) = parse_header(record);
    if number != g || stored != len {
        return Err(corrupt(format!(
            "the record read for group {g} (of {len} bytes) says group {number} of {stored} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(g: u64) -> Vec<u8> {
        format!("the bytes of group {g} ").repeat(g as usize + 1).into_bytes()
    }

    fn fresh(dir: &Path) -> GroupFile {
        GroupFile::open(dir, Committed::default()).unwrap()
    }

    /// Changes `file` in `dir` on disk as damage would; returns its new bytes.
    fn damage(dir: &Path, file: &str, change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let path = dir.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        change(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        bytes
    }

    #[test]
    fn appended_groups_read_back_as_written_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let file = fresh(dir.path());
        assert_eq!(file.read(0).unwrap(), None, "nothing sealed yet");
        file.append(0, &[group(0), group(1)]).unwrap();
        let committed = file.append(2, &[group(2)]).unwrap();
        assert_eq!(committed.groups, 3);
        assert_eq!(committed.end, (0..3).map(|g| group(g).len() as u64 + HEADER).sum::<u64>());
        assert_eq!(Committed::decode(&committed.encode()).unwrap(), committed);
        drop(file);
        let file = GroupFile::open(dir.path(), committed).unwrap();
        for g in 0..3 {
            assert_eq!(file.read(g).unwrap(), Some(group(g)), "group {g}");
        }
        assert_eq!(file.read(3).unwrap(), None);
    }

    #[test]
    fn groups_the_database_did_not_commit_are_cut_away_and_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let file = fresh(dir.path());
        let two = file.append(0, &[group(0), group(1)]).unwrap();
        file.append(2, &[group(2)]).unwrap();
        drop(file);
        // The database committed only the first two (a crash before the third's commit).
        let file = GroupFile::open(dir.path(), two).unwrap();
        assert_eq!(file.count(), 2);
        assert_eq!(file.read(2).unwrap(), None);
        let other = b"another third group".to_vec();
        file.append(2, std::slice::from_ref(&other)).unwrap();
        assert_eq!(file.read(2).unwrap(), Some(other.clone()));
        // A commit that failed: the group is forgotten and its place written over.
        file.append(3, &[group(3)]).unwrap();
        file.retract(3);
        assert_eq!(file.read(3).unwrap(), None);
        let four = file.append(3, &[group(9)]).unwrap();
        drop(file);
        let file = GroupFile::open(dir.path(), four).unwrap();
        assert_eq!(file.read(2).unwrap(), Some(other.clone()));
        assert_eq!(file.read(3).unwrap(), Some(group(9)));
        let data = std::fs::metadata(dir.path().join(DATA_FILE)).unwrap().len();
        let written: u64 =
            [group(0), group(1), other, group(9)].iter().map(|g| g.len() as u64 + HEADER).sum();
        assert_eq!((data, four.end), (written, written), "nothing left of what was cut away");
    }

    #[test]
    fn only_the_next_group_can_be_appended() {
        let dir = tempfile::tempdir().unwrap();
        let file = fresh(dir.path());
        assert!(file.append(1, &[group(1)]).is_err(), "a gap before it");
        file.append(0, &[group(0)]).unwrap();
        assert!(file.append(0, &[group(0)]).is_err(), "not twice");
        assert_eq!(file.count(), 1);
    }

    #[test]
    fn less_on_disk_than_the_database_sealed_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let one = fresh(dir.path()).append(0, &[group(0)]).unwrap();
        let more = Committed { groups: 2, end: one.end * 2 };
        let refused = GroupFile::open(dir.path(), more).err().expect("refused");
        assert!(matches!(refused, StoreError::Corrupt(_)), "{refused}");
        assert!(refused.to_string().contains("sealed 2 groups"), "{refused}");
        // The last record does not end where the database says.
        let shorter = Committed { end: one.end - 1, ..one };
        assert!(matches!(GroupFile::open(dir.path(), shorter), Err(StoreError::Corrupt(_))));
        // A data file shorter than the database says.
        let data = dir.path().join(DATA_FILE);
        std::fs::OpenOptions::new().write(true).open(&data).unwrap().set_len(one.end - 1).unwrap();
        assert!(matches!(GroupFile::open(dir.path(), one), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_damaged_last_header_is_refused_before_anything_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let two = fresh(dir.path()).append(0, &[group(0), group(1)]).unwrap();
        let second = HEADER as usize + group(0).len();
        // Group 1's length: it would end one byte off.
        let bytes = damage(dir.path(), DATA_FILE, |b| b[second + 8] ^= 1);
        assert!(matches!(GroupFile::open(dir.path(), two), Err(StoreError::Corrupt(_))));
        let data = dir.path().join(DATA_FILE);
        assert_eq!(std::fs::read(&data).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn an_index_that_points_at_another_record_is_an_error_not_other_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let three = fresh(dir.path()).append(0, &[group(0), group(1), group(2)]).unwrap();
        // Group 1's start moved onto group 2's record.
        damage(dir.path(), INDEX_FILE, |b| b.copy_within(16..24, 8));
        let file = GroupFile::open(dir.path(), three).unwrap();
        // Group 0 now seems to run on to group 2, and group 1 to be empty: both are refused.
        assert!(matches!(file.read(0), Err(StoreError::Corrupt(_))));
        assert!(matches!(file.read(1), Err(StoreError::Corrupt(_))));
        assert_eq!(file.read(2).unwrap(), Some(group(2)), "group 2's own record is whole");
    }

    #[test]
    fn an_index_pointing_past_the_records_is_an_error_not_a_huge_read() {
        let dir = tempfile::tempdir().unwrap();
        let three = fresh(dir.path()).append(0, &[group(0), group(1), group(2)]).unwrap();
        // Group 1 starts nowhere.
        damage(dir.path(), INDEX_FILE, |b| b[8..16].copy_from_slice(&u64::MAX.to_le_bytes()));
        let file = GroupFile::open(dir.path(), three).unwrap();
        assert!(matches!(file.read(0), Err(StoreError::Corrupt(_))), "ends past the file");
        assert!(matches!(file.read(1), Err(StoreError::Corrupt(_))), "starts past the file");
        assert_eq!(file.read(2).unwrap(), Some(group(2)));
    }

    #[test]
    fn a_damaged_record_header_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let three = fresh(dir.path()).append(0, &[group(0), group(1), group(2)]).unwrap();
        let second = HEADER as usize + group(0).len();
        damage(dir.path(), DATA_FILE, |b| b[second] ^= 4); // group 1's number
        let file = GroupFile::open(dir.path(), three).unwrap();
        assert_eq!(file.read(0).unwrap(), Some(group(0)));
        assert!(matches!(file.read(1), Err(StoreError::Corrupt(_))));
    }
}

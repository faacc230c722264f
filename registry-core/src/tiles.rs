//! The C2SP `tlog-tiles` layout the log is archived and mirrored in: where a tile lives and how
//! an entry bundle frames its entries. Pure functions, so the archive writer, its verifier and
//! a restore read and write exactly the same bytes.
//!
//! ```text
//! tile/entries/<N>[.p/<W>]    entry bundle: W entries as stored, each a uint16 BE length + bytes
//! tile/<L>/<N>[.p/<W>]        hash tile: W hashes of level L
//! ```
//!
//! `<N>` is written in 3-digit groups, all but the last prefixed with `x` (`x001/x234/067`).

/// Entries per full bundle and hashes per full tile.
pub const WIDTH: u64 = 256;

/// `N` as a tile path: `x001/x234/067`.
pub fn index_path(n: u64) -> String {
    let digits = format!("{n:03}");
    let padded = format!("{:0>width$}", digits, width = digits.len().div_ceil(3) * 3);
    let groups: Vec<&str> = padded
        .as_bytes()
        .chunks(3)
        .map(|c| std::str::from_utf8(c).expect("ASCII digits"))
        .collect();
    let (last, rest) = groups.split_last().expect("at least one group");
    rest.iter().map(|g| format!("x{g}/")).collect::<String>() + last
}

/// The relative path of tile `n` of `width` hashes at `level`, or of entry bundle `n` of
/// `width` entries when `level` is `None`.
pub fn tile_path(level: Option<u8>, n: u64, width: u64) -> String {
    let base = match level {
        None => "tile/entries".to_string(),
        Some(l) => format!("tile/{l}"),
    };
    let p = format!("{base}/{}", index_path(n));
    if width == WIDTH { p } else { format!("{p}.p/{width}") }
}

/// The width of bundle (or level-0 tile) `n` in a log of `size` entries.
pub fn width_in(n: u64, size: u64) -> u64 {
    if (n + 1) * WIDTH <= size { WIDTH } else { size % WIDTH }
}

/// An entry that cannot be framed: longer than a uint16 length prefix can say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {index} of the bundle is {len} bytes; a bundle entry holds at most 65,535")]
pub struct TooLong {
    /// The entry's index in the bundle.
    pub index: usize,
    /// Its length.
    pub len: usize,
}

/// The bytes of an entry bundle.
pub fn encode_bundle(entries: &[Vec<u8>]) -> Result<Vec<u8>, TooLong> {
    let mut bytes = Vec::with_capacity(entries.iter().map(|e| 2 + e.len()).sum());
    for (index, e) in entries.iter().enumerate() {
        let len = u16::try_from(e.len()).map_err(|_| TooLong { index, len: e.len() })?;
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(e);
    }
    Ok(bytes)
}

/// A bundle's framing is broken at entry `index` of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct BadBundle {
    /// The entry (index within the bundle) where the framing breaks.
    pub index: u64,
    /// What is wrong.
    pub reason: String,
}

/// Reads a bundle of `width` entries as far as its framing allows: the entries before any
/// framing error (and what there is of the entry it breaks in, where the damage is), and the
/// error. A damaged length prefix thus still lets a verifier meet the damaged entry first.
pub fn decode_bundle(bytes: &[u8], width: u64) -> (Vec<Vec<u8>>, Option<BadBundle>) {
    let mut out = Vec::with_capacity(width as usize);
    let mut rest = bytes;
    while !rest.is_empty() {
        let index = out.len() as u64;
        let bad = |reason: &str| Some(BadBundle { index, reason: reason.into() });
        if index == width {
            return (out, bad("the bundle holds more entries than its width"));
        }
        if rest.len() < 2 {
            return (out, bad("the bundle ends inside a length prefix"));
        }
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        if rest.len() < 2 + len {
            out.push(rest[2..].to_vec());
            return (out, bad("the entry's length runs past the end of its bundle"));
        }
        out.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    if out.len() as u64 != width {
        let index = out.len() as u64;
        let reason = format!("the bundle holds fewer entries than its width {width}");
        return (out, Some(BadBundle { index, reason }));
    }
    (out, None)
}

/// A tile or entry bundle as a path names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileName {
    /// The hash tile's level, `None` for an entry bundle.
    pub level: Option<u8>,
    /// Its index `N`.
    pub index: u64,
    /// Hashes or entries it holds: [`WIDTH`] for a full one.
    pub width: u64,
}

/// The tile a path (`tile/1/x001/234.p/17`, no leading slash) names, if it is one in the
/// canonical form [`tile_path`] writes: a server answers only for names it would write itself,
/// so one tile has one URL and one cache entry.
pub fn parse_tile_path(path: &str) -> Option<TileName> {
    let rest = path.strip_prefix("tile/")?;
    let (level, rest) = match rest.strip_prefix("entries/") {
        Some(rest) => (None, rest),
        None => {
            let (l, rest) = rest.split_once('/')?;
            let level: u8 = l.parse().ok().filter(|l| *l <= 63)?;
            (Some(level), rest)
        }
    };
    let (index, width) = match rest.split_once(".p/") {
        Some((index, w)) => (index, w.parse::<u64>().ok().filter(|w| (1..WIDTH).contains(w))?),
        None => (rest, WIDTH),
    };
    let digits: String = index.chars().filter(|c| *c != 'x' && *c != '/').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: u64 = digits.parse().ok()?;
    (tile_path(level, index, width) == path).then_some(TileName { level, index, width })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_parse_back_to_their_tiles_and_only_canonical_ones_do() {
        for (level, index, width) in
            [(None, 0, WIDTH), (None, 1234067, 7), (Some(0), 5, 255), (Some(2), 1000, WIDTH)]
        {
            let path = tile_path(level, index, width);
            assert_eq!(parse_tile_path(&path), Some(TileName { level, index, width }), "{path}");
        }
        for bad in [
            "tile/entries/5",
            "tile/entries/005.p/256",
            "tile/entries/005.p/0",
            "tile/0/x000/005",
            "tile/64/000",
            "tile/01/000",
            "tile/0/000/",
            "tile/0/-01",
            "tile/entries/x001/x234/067.p/7/",
            "checkpoint",
        ] {
            assert_eq!(parse_tile_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn tile_indexes_follow_the_c2sp_path_encoding() {
        assert_eq!(index_path(0), "000");
        assert_eq!(index_path(5), "005");
        assert_eq!(index_path(999), "999");
        assert_eq!(index_path(1000), "x001/000");
        assert_eq!(index_path(1234067), "x001/x234/067");
        assert_eq!(tile_path(None, 1234067, 7), "tile/entries/x001/x234/067.p/7");
        assert_eq!(tile_path(Some(1), 3, WIDTH), "tile/1/003");
    }

    #[test]
    fn a_bundle_reads_back_and_broken_framing_names_the_entry() {
        let entries = vec![b"one".to_vec(), vec![], vec![7; 300]];
        let bytes = encode_bundle(&entries).unwrap();
        assert_eq!(decode_bundle(&bytes, 3), (entries.clone(), None));
        let (read, bad) = decode_bundle(&bytes, 4);
        assert_eq!((read, bad.unwrap().index), (entries.clone(), 3));
        let (read, bad) = decode_bundle(&bytes[..bytes.len() - 1], 3);
        assert_eq!((read.len(), bad.unwrap().index), (3, 2));
        assert!(encode_bundle(&[vec![0; 70_000]]).is_err());
    }
}

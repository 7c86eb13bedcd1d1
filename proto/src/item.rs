//! Items: what a group shares under one name — a single file, or a directory tree.
//!
//! # How pieces map to files
//!
//! An item's bytes are cut into pieces **file by file**: every file starts a new piece, so the
//! last piece of each file may be short, and no piece ever spans two files (BitTorrent v2's
//! choice, unlike v1's one concatenated stream). That costs at most one short piece per file
//! and buys three things:
//! - a file can be verified, served and stored on its own (selective download is exact: a
//!   member who wants three files of a tree fetches exactly their pieces and nothing of their
//!   neighbours);
//! - the same file inside two items or two groups has the same piece hashes and whole-file
//!   SHA1, so it can be recognised;
//! - a single-file item is the degenerate case with one file, and its layout is exactly the
//!   one Minitorr always used.
//!
//! Pieces are numbered across the item in tree order ([`Tree::entries`] order, directories
//! holding no pieces, empty files none). [`Layout`] turns a piece index into (file, offset,
//! length) and back.
//!
//! # Size limits
//!
//! An item's metadata travels in one frame ([`crate::MAX_MESSAGE_FRAME`], 16 MiB) together with
//! a ticket and the holder list, so it is bounded by construction:
//! - at most [`MAX_ITEM_PIECES`] piece hashes (20 bytes each: 5 MiB);
//! - at most [`MAX_TREE_ENTRIES`] entries whose encoded size is at most [`MAX_TREE_BYTES`];
//! - the piece size grows with the item ([`piece_size_for`]) from the configured size (by
//!   default [`auto_piece_size`]: 64 KiB to 512 KiB) up to [`crate::MAX_PIECE_SIZE`] (8 MiB),
//!   so that a 1 TiB item has 131,072 pieces (2.5 MiB of hashes) and the largest item is 2 TiB.
//!
//! # Identity
//!
//! A single file's `sha1` is the SHA1 of its bytes, as before. A tree's `sha1` is
//! [`Tree::digest`]: the SHA1 of its canonical listing (every entry's kind, path, size and
//! whole-file SHA1, in order), so two members sharing the same tree register the same item, and
//! a tree whose listing was altered does not match its `sha1` ([`crate::types::FileMeta::check`]).
//!
//! # Paths
//!
//! An entry's path is relative, `/`-separated, in Unicode NFC; each component obeys the rules
//! of a file name ([`crate::names::validate_file_name`]: no `/`, NUL, control characters, `.`
//! or `..`, at most 255 bytes), so a path cannot be absolute or climb out of the directory it is
//! extracted into. Entries are sorted strictly by their component lists (so a directory's
//! contents follow it contiguously), and no entry's path is a prefix of another's: directories
//! are listed explicitly only when empty, and a path cannot name both a file and a directory.

use std::cmp::Ordering;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use thiserror::Error;

use crate::names::{self, NameError};
use crate::types::{FileMeta, Sha1Hash};

/// Most piece hashes one item may have (5 MiB of hashes; 2 TiB at the largest piece size).
pub const MAX_ITEM_PIECES: usize = 1 << 18;

/// Most entries (files and empty directories) one tree may have.
pub const MAX_TREE_ENTRIES: usize = 1 << 18;

/// Most bytes a tree's entries may take ([`TreeEntry::encoded_len`] summed): with the piece
/// hashes, a ticket and a holder list, the metadata still fits in one 16 MiB frame.
pub const MAX_TREE_BYTES: usize = 9 * 1024 * 1024;

/// Longest path inside an item, in bytes.
pub const MAX_ITEM_PATH_LEN: usize = 4096;

/// Deepest path inside an item, in components.
pub const MAX_ITEM_DEPTH: usize = 64;

/// Piece count the automatic piece size aims to stay under ([`piece_size_for`]): 131,072
/// pieces (2.5 MiB of hashes, a 2^17-bit bitfield of 16 KiB).
pub const TARGET_ITEM_PIECES: u64 = 1 << 17;

/// The directory tree of an item that is not a single file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Tree {
    /// In canonical order (see the module comment); [`Tree::sort`] puts them there.
    pub entries: Vec<TreeEntry>,
}

/// One file or empty directory of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct TreeEntry {
    /// Relative, `/`-separated, NFC (see the module comment).
    pub path: String,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum EntryKind {
    /// An empty directory (directories with contents are implied by their entries' paths).
    Dir,
    /// A regular file: its size and the SHA1 of its whole contents.
    File { size: u64, sha1: Sha1Hash },
}

/// Why an item's metadata or one of its paths is refused. Messages name the offending entry.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ItemError {
    #[error("path {path:?}: {source}")]
    BadComponent {
        path: String,
        #[source]
        source: NameError,
    },
    #[error("path {path:?} is empty or has an empty component (leading, trailing or doubled '/')")]
    EmptyComponent { path: String },
    #[error("path {path:?} is longer than {MAX_ITEM_PATH_LEN} bytes")]
    PathTooLong { path: String },
    #[error("path {path:?} is deeper than {MAX_ITEM_DEPTH} levels")]
    TooDeep { path: String },
    #[error("{path:?} appears twice in the tree (after Unicode normalisation)")]
    Duplicate { path: String },
    #[error("{path:?} is listed as a file or empty directory but {child:?} is inside it")]
    NotADirectory { path: String, child: String },
    #[error("tree entries are not in canonical order at {path:?}")]
    Unsorted { path: String },
    #[error("the tree has {count} entries; at most {MAX_TREE_ENTRIES} are allowed")]
    TooManyEntries { count: usize },
    #[error("the tree's listing takes {bytes} bytes; at most {MAX_TREE_BYTES} are allowed")]
    TreeTooLarge { bytes: usize },
    #[error("the item needs {count} pieces; at most {MAX_ITEM_PIECES} are allowed")]
    TooManyPieces { count: u64 },
    #[error("the item's size {size} is not the sum of its files' sizes ({sum})")]
    SizeMismatch { size: u64, sum: u64 },
    #[error("the item's SHA1 does not match its tree listing")]
    DigestMismatch,
}

/// Compare two paths component by component (so `a/b` sorts before `a.b`, and everything under
/// `a/` follows `a` contiguously).
pub fn path_cmp(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// True if `dir` is a proper ancestor of `path` (`a` of `a/b`, not of `ab`).
pub fn is_ancestor(dir: &str, path: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

/// Check a path that must already be in canonical form (NFC, valid components).
pub fn validate_item_path(path: &str) -> Result<(), ItemError> {
    check_path_shape(path)?;
    for c in path.split('/') {
        names::validate_file_name(c).map_err(|source| ItemError::BadComponent {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Normalise a path found on disk or typed by a person (components joined with `/`) to NFC
/// and check it.
pub fn item_path<'a>(components: impl IntoIterator<Item = &'a str>) -> Result<String, ItemError> {
    let mut out = String::new();
    for c in components {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(&names::nfc(c));
    }
    validate_item_path(&out)?;
    Ok(out)
}

fn check_path_shape(path: &str) -> Result<(), ItemError> {
    if path.len() > MAX_ITEM_PATH_LEN {
        return Err(ItemError::PathTooLong {
            path: path.chars().take(64).collect::<String>() + "…",
        });
    }
    if path.split('/').any(str::is_empty) {
        return Err(ItemError::EmptyComponent {
            path: path.to_owned(),
        });
    }
    if path.split('/').count() > MAX_ITEM_DEPTH {
        return Err(ItemError::TooDeep {
            path: path.to_owned(),
        });
    }
    Ok(())
}

impl TreeEntry {
    pub fn file(path: impl Into<String>, size: u64, sha1: Sha1Hash) -> Self {
        TreeEntry {
            path: path.into(),
            kind: EntryKind::File { size, sha1 },
        }
    }

    pub fn dir(path: impl Into<String>) -> Self {
        TreeEntry {
            path: path.into(),
            kind: EntryKind::Dir,
        }
    }

    /// Bytes this entry is counted as against [`MAX_TREE_BYTES`] (an upper bound of its
    /// postcard encoding).
    pub fn encoded_len(&self) -> usize {
        self.path.len() + 3 + 10 + 20
    }

    /// Size in bytes (0 for a directory).
    pub fn size(&self) -> u64 {
        match self.kind {
            EntryKind::File { size, .. } => size,
            EntryKind::Dir => 0,
        }
    }
}

impl Tree {
    /// Put the entries in canonical order (the order [`Tree::check`] requires).
    pub fn sort(&mut self) {
        self.entries.sort_by(|a, b| path_cmp(&a.path, &b.path));
    }

    /// Regular files, in piece order.
    pub fn files(&self) -> impl Iterator<Item = (&str, u64, Sha1Hash)> {
        self.entries.iter().filter_map(|e| match e.kind {
            EntryKind::File { size, sha1 } => Some((e.path.as_str(), size, sha1)),
            EntryKind::Dir => None,
        })
    }

    pub fn file_count(&self) -> usize {
        self.files().count()
    }

    /// Sum of the files' sizes.
    pub fn total_size(&self) -> u64 {
        self.files().map(|(_, s, _)| s).sum()
    }

    /// The tree's identity: SHA1 of its canonical listing.
    pub fn digest(&self) -> Sha1Hash {
        let mut h = Sha1::new();
        h.update(b"minitorr-tree-v1\0");
        for e in &self.entries {
            match e.kind {
                EntryKind::Dir => {
                    h.update(b"D");
                    h.update(e.path.as_bytes());
                    h.update([0]);
                }
                EntryKind::File { size, sha1 } => {
                    h.update(b"F");
                    h.update(e.path.as_bytes());
                    h.update([0]);
                    h.update(size.to_be_bytes());
                    h.update(sha1.0);
                }
            }
        }
        Sha1Hash(h.finalize().into())
    }

    /// Structure and limits: valid paths, canonical order, no duplicates, no entry inside a
    /// file or a listed (empty) directory, bounded size.
    pub fn check(&self) -> Result<(), ItemError> {
        if self.entries.len() > MAX_TREE_ENTRIES {
            return Err(ItemError::TooManyEntries {
                count: self.entries.len(),
            });
        }
        let bytes: usize = self.entries.iter().map(TreeEntry::encoded_len).sum();
        if bytes > MAX_TREE_BYTES {
            return Err(ItemError::TreeTooLarge { bytes });
        }
        for e in &self.entries {
            validate_item_path(&e.path)?;
        }
        for w in self.entries.windows(2) {
            let (a, b) = (&w[0].path, &w[1].path);
            match path_cmp(a, b) {
                Ordering::Less => {}
                Ordering::Equal => return Err(ItemError::Duplicate { path: a.clone() }),
                Ordering::Greater => return Err(ItemError::Unsorted { path: b.clone() }),
            }
            // Canonical order keeps everything under `a/` right after `a`, so checking
            // neighbours finds every entry placed inside a file or a listed directory.
            if is_ancestor(a, b) {
                return Err(ItemError::NotADirectory {
                    path: a.clone(),
                    child: b.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The piece size for an item whose files have `sizes`: `configured` (clamped to the
/// protocol's range), or when none is configured the automatic size ([`auto_piece_size`]);
/// then doubled until the item needs at most [`TARGET_ITEM_PIECES`] pieces or the size
/// reaches [`crate::MAX_PIECE_SIZE`]. `None` if even the largest piece size needs more than
/// [`MAX_ITEM_PIECES`] pieces.
pub fn piece_size_for(sizes: &[u64], configured: Option<u32>) -> Option<u32> {
    let mut ps = match configured {
        Some(ps) => ps.clamp(crate::MIN_PIECE_SIZE, crate::MAX_PIECE_SIZE),
        None => auto_piece_size(sizes),
    };
    while piece_count(sizes, ps) > TARGET_ITEM_PIECES && ps < crate::MAX_PIECE_SIZE {
        ps = (ps.saturating_mul(2)).min(crate::MAX_PIECE_SIZE);
    }
    (piece_count(sizes, ps) <= MAX_ITEM_PIECES as u64).then_some(ps)
}

/// Largest piece size [`auto_piece_size`] starts from.
pub const AUTO_PIECE_SIZE_MAX: u32 = 512 * 1024;

/// Smallest piece size [`auto_piece_size`] picks.
pub const AUTO_PIECE_SIZE_MIN: u32 = 64 * 1024;

/// Pieces an item gets at least, where [`AUTO_PIECE_SIZE_MIN`] allows.
pub const AUTO_MIN_PIECES: u64 = 1024;

/// The piece size when none is configured: the largest power of two from
/// [`AUTO_PIECE_SIZE_MAX`] down to [`AUTO_PIECE_SIZE_MIN`] that still gives the item
/// [`AUTO_MIN_PIECES`] pieces (64 MiB: 64 KiB, 256 MiB: 256 KiB, 512 MiB and up: 512 KiB).
///
/// Why: in a crowd a member can pass a piece on only once it has all of it and checked it, so
/// a piece's time on the wire is the unit of the crowd's delay. With 16 members fetching 64 MiB
/// together behind 50 Mbit/s uplinks, 512 KiB pieces (128) finished 1.26 × the physical bound,
/// 128 KiB 1.11 ×, 64 KiB 1.09 × (docs/BENCHMARKS.md). Big files keep 512 KiB pieces, where a
/// crowd has plenty of them and per-piece work would only cost.
pub fn auto_piece_size(sizes: &[u64]) -> u32 {
    let mut ps = AUTO_PIECE_SIZE_MAX;
    while ps > AUTO_PIECE_SIZE_MIN && piece_count(sizes, ps) < AUTO_MIN_PIECES {
        ps /= 2;
    }
    ps
}

fn piece_count(sizes: &[u64], ps: u32) -> u64 {
    sizes.iter().map(|s| s.div_ceil(ps as u64)).sum()
}

/// One file's place in an item's piece sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpan {
    /// Index into the tree's entries (0 for a single-file item).
    pub entry: usize,
    pub size: u64,
    /// Pieces `first_piece .. first_piece + piece_count` hold this file's bytes.
    pub first_piece: u32,
    pub piece_count: u32,
}

impl FileSpan {
    pub fn pieces(&self) -> Range<u32> {
        self.first_piece..self.first_piece + self.piece_count
    }
}

/// Where one piece's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceLocation {
    /// Index into [`Layout::files`].
    pub file: usize,
    /// Byte offset inside that file.
    pub offset: u64,
    pub len: u32,
}

/// Piece ↔ file mapping of one item, computed from its metadata (never sent on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    piece_size: u32,
    files: Vec<FileSpan>,
}

impl Layout {
    /// The layout of `meta`. Assumes `meta.check()` passed (piece counts are consistent).
    pub fn new(meta: &FileMeta) -> Self {
        let mut files = Vec::new();
        let mut next = 0u32;
        let mut push = |entry: usize, size: u64| {
            let piece_count = FileMeta::piece_count_for(size, meta.piece_size);
            files.push(FileSpan {
                entry,
                size,
                first_piece: next,
                piece_count,
            });
            next += piece_count;
        };
        match &meta.tree {
            None => push(0, meta.size),
            Some(tree) => {
                for (i, e) in tree.entries.iter().enumerate() {
                    if let EntryKind::File { size, .. } = e.kind {
                        push(i, size);
                    }
                }
            }
        }
        Layout {
            piece_size: meta.piece_size,
            files,
        }
    }

    pub fn piece_size(&self) -> u32 {
        self.piece_size
    }

    /// Every regular file, in piece order (one entry for a single-file item).
    pub fn files(&self) -> &[FileSpan] {
        &self.files
    }

    /// Total number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.files
            .last()
            .map(|f| f.first_piece + f.piece_count)
            .unwrap_or(0)
    }

    /// Index into [`Layout::files`] of the file holding `piece`, or `None` past the end.
    pub fn file_of_piece(&self, piece: u32) -> Option<usize> {
        if piece >= self.piece_count() {
            return None;
        }
        // The last file whose first piece is <= piece and that has pieces.
        let i = self.files.partition_point(|f| f.first_piece <= piece);
        (0..i)
            .rev()
            .find(|&j| self.files[j].pieces().contains(&piece))
    }

    /// Where `piece` lives, or `None` past the end.
    pub fn locate(&self, piece: u32) -> Option<PieceLocation> {
        let file = self.file_of_piece(piece)?;
        let f = &self.files[file];
        let offset = (piece - f.first_piece) as u64 * self.piece_size as u64;
        let len = (f.size - offset).min(self.piece_size as u64) as u32;
        Some(PieceLocation { file, offset, len })
    }

    /// Length of `piece` (0 past the end).
    pub fn piece_len(&self, piece: u32) -> u32 {
        self.locate(piece).map(|l| l.len).unwrap_or(0)
    }
}

/// The tree part of [`FileMeta::check`]: structure, limits, size and identity.
pub(crate) fn check_tree_meta(meta: &FileMeta, tree: &Tree) -> Result<(), ItemError> {
    tree.check()?;
    let sum = tree.total_size();
    if sum != meta.size {
        return Err(ItemError::SizeMismatch {
            size: meta.size,
            sum,
        });
    }
    if tree.digest() != meta.sha1 {
        return Err(ItemError::DigestMismatch);
    }
    Ok(())
}

/// Pieces a tree needs with `piece_size` pieces (files one by one).
pub(crate) fn tree_piece_count(tree: &Tree, piece_size: u32) -> u64 {
    tree.files()
        .map(|(_, size, _)| size.div_ceil(piece_size as u64))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(b: u8) -> Sha1Hash {
        Sha1Hash([b; 20])
    }

    fn tree_meta(entries: Vec<TreeEntry>, ps: u32) -> FileMeta {
        let mut tree = Tree { entries };
        tree.sort();
        let pieces = tree_piece_count(&tree, ps) as usize;
        FileMeta {
            name: "proj".into(),
            size: tree.total_size(),
            piece_size: ps,
            sha1: tree.digest(),
            pieces: vec![h(9); pieces],
            tree: Some(tree),
        }
    }

    #[test]
    fn canonical_order_is_by_component() {
        let mut t = Tree {
            entries: vec![
                TreeEntry::file("a.b", 1, h(1)),
                TreeEntry::file("a/b", 1, h(2)),
                TreeEntry::file("a/a/z", 1, h(3)),
                TreeEntry::dir("0empty"),
            ],
        };
        t.sort();
        let paths: Vec<_> = t.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["0empty", "a/a/z", "a/b", "a.b"]);
        t.check().unwrap();
    }

    #[test]
    fn refuses_escapes_and_conflicts() {
        for bad in [
            "../x",
            "/etc/passwd",
            "a//b",
            "a/",
            "",
            "a/./b",
            "a/../b",
            "a\0b",
        ] {
            assert!(validate_item_path(bad).is_err(), "{bad:?} accepted");
        }
        let dup = Tree {
            entries: vec![TreeEntry::file("a", 1, h(1)), TreeEntry::file("a", 2, h(2))],
        };
        assert!(matches!(dup.check(), Err(ItemError::Duplicate { .. })));
        let inside_file = Tree {
            entries: vec![
                TreeEntry::file("a", 1, h(1)),
                TreeEntry::file("a/b", 2, h(2)),
            ],
        };
        assert!(matches!(
            inside_file.check(),
            Err(ItemError::NotADirectory { .. })
        ));
        let inside_empty_dir = Tree {
            entries: vec![TreeEntry::dir("d"), TreeEntry::file("d/x", 2, h(2))],
        };
        assert!(inside_empty_dir.check().is_err());
        let unsorted = Tree {
            entries: vec![TreeEntry::file("b", 1, h(1)), TreeEntry::file("a", 2, h(2))],
        };
        assert!(matches!(unsorted.check(), Err(ItemError::Unsorted { .. })));
    }

    #[test]
    fn nfd_and_nfc_paths_are_one_path() {
        let p = item_path(["dir", "cafe\u{301}.txt"]).unwrap();
        assert_eq!(p, "dir/caf\u{E9}.txt");
        assert!(validate_item_path("dir/cafe\u{301}.txt").is_err());
    }

    #[test]
    fn layout_aligns_every_file_to_a_piece() {
        let ps = 16 * 1024;
        let m = tree_meta(
            vec![
                TreeEntry::file("a", 40 * 1024, h(1)), // 3 pieces: 16+16+8 KiB
                TreeEntry::file("b", 0, h(2)),         // none
                TreeEntry::dir("c"),                   // none
                TreeEntry::file("d", 16 * 1024, h(3)), // 1 piece
            ],
            ps,
        );
        m.check().unwrap();
        let l = Layout::new(&m);
        assert_eq!(l.piece_count(), 4);
        assert_eq!(
            l.locate(2),
            Some(PieceLocation {
                file: 0,
                offset: 32 * 1024,
                len: 8 * 1024
            })
        );
        assert_eq!(
            l.locate(3),
            Some(PieceLocation {
                file: 2,
                offset: 0,
                len: 16 * 1024
            })
        );
        assert_eq!(l.files()[2].entry, 3);
        assert_eq!(l.locate(4), None);
    }

    #[test]
    fn single_file_layout_is_the_old_one() {
        let m = FileMeta {
            name: "f".into(),
            size: 100_000,
            piece_size: 16 * 1024,
            sha1: h(1),
            pieces: vec![h(2); 7],
            tree: None,
        };
        m.check().unwrap();
        let l = Layout::new(&m);
        for i in 0..7 {
            assert_eq!(l.piece_len(i), m.piece_len(i));
            assert_eq!(l.locate(i).unwrap().offset, m.piece_offset(i));
        }
    }

    #[test]
    fn a_tebibyte_item_fits_one_frame() {
        let sizes = vec![1u64 << 40];
        for configured in [Some(512 * 1024), None] {
            let ps = piece_size_for(&sizes, configured).unwrap();
            assert_eq!(ps, crate::MAX_PIECE_SIZE);
            assert_eq!((1u64 << 40).div_ceil(ps as u64), TARGET_ITEM_PIECES);
            assert_eq!(piece_size_for(&[1u64 << 43], configured), None);
        }
        // 100,000 small files keep the configured size.
        assert_eq!(
            piece_size_for(&vec![4096; 100_000], Some(512 * 1024)),
            Some(512 * 1024)
        );
    }

    #[test]
    fn the_automatic_piece_size_gives_a_crowd_enough_pieces() {
        const KIB: u32 = 1024;
        const MIB: u64 = 1 << 20;
        let auto = |size: u64| piece_size_for(&[size], None).unwrap();
        assert_eq!(auto(0), 64 * KIB);
        assert_eq!(auto(1), 64 * KIB);
        assert_eq!(auto(10 * MIB), 64 * KIB);
        assert_eq!(auto(64 * MIB), 64 * KIB);
        assert_eq!(auto(100 * MIB), 64 * KIB);
        assert_eq!(auto(128 * MIB), 128 * KIB);
        assert_eq!(auto(255 * MIB), 128 * KIB);
        assert_eq!(auto(256 * MIB), 256 * KIB);
        assert_eq!(auto(512 * MIB), 512 * KIB);
        assert_eq!(auto(1 << 30), 512 * KIB);
        // 64 GiB at 512 KiB is exactly the target count; one byte more doubles it.
        assert_eq!(auto(64 << 30), 512 * KIB);
        assert_eq!(auto((64 << 30) + 1), 1024 * KIB);
        // Every size between the steps keeps at least the minimum count, where it can.
        for size in (1..=600u64).map(|m| m * MIB + 12345) {
            let ps = auto(size);
            assert!(ps.is_power_of_two(), "{size}: {ps}");
            assert!((AUTO_PIECE_SIZE_MIN..=AUTO_PIECE_SIZE_MAX).contains(&ps));
            let n = size.div_ceil(ps as u64);
            assert!(
                n >= AUTO_MIN_PIECES || ps == AUTO_PIECE_SIZE_MIN,
                "{size}: {n}"
            );
            assert!(
                n < 2 * AUTO_MIN_PIECES || ps == AUTO_PIECE_SIZE_MAX,
                "{size}: {n}"
            );
        }
        // A tree counts every file's pieces (each file starts a piece).
        assert_eq!(piece_size_for(&vec![1000; 2000], None), Some(512 * KIB));
        // A configured size is kept.
        assert_eq!(
            piece_size_for(&[64 * MIB], Some(512 * KIB)),
            Some(512 * KIB)
        );
    }

    #[test]
    fn metadata_must_match_its_tree() {
        let mut m = tree_meta(vec![TreeEntry::file("a", 10, h(1))], 16 * 1024);
        m.check().unwrap();
        m.size = 11;
        assert!(m.check().is_err());
        m.size = 10;
        m.sha1 = h(0);
        assert!(m.check().is_err());
    }

    proptest! {
        /// Every piece maps into exactly one file, consecutive pieces of a file are
        /// contiguous, and the piece lengths of a file add up to its size.
        #[test]
        fn layout_covers_each_file_exactly(sizes in proptest::collection::vec(0u64..200_000, 0..20)) {
            let ps = 16 * 1024;
            let entries = sizes.iter().enumerate()
                .map(|(i, &s)| TreeEntry::file(format!("f{i:03}"), s, h(i as u8)))
                .collect();
            let m = tree_meta(entries, ps);
            m.check().unwrap();
            let l = Layout::new(&m);
            prop_assert_eq!(l.piece_count() as usize, m.pieces.len());
            let mut per_file = vec![0u64; l.files().len()];
            for p in 0..l.piece_count() {
                let loc = l.locate(p).unwrap();
                prop_assert_eq!(loc.offset, per_file[loc.file]);
                per_file[loc.file] += loc.len as u64;
            }
            for (f, got) in l.files().iter().zip(per_file) {
                prop_assert_eq!(f.size, got);
            }
        }
    }
}

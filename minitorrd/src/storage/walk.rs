//! Sharing a directory: walk it without following links, then hash every file once.
//!
//! The walk goes through directory handles only (`openat(O_DIRECTORY|O_NOFOLLOW)` and
//! `fstatat(AT_SYMLINK_NOFOLLOW)` relative to the parent's handle), so a symlink — to a file
//! or a directory, inside or outside the tree — is never followed: it is skipped and listed,
//! as are devices, sockets and FIFOs. Directories left empty (or holding only skipped
//! entries) are kept as empty-directory entries. Paths are normalised to NFC and checked
//! ([`minitorr_proto::item::item_path`]); a name that cannot be an item path is a clear error
//! naming it. Limits ([`MAX_TREE_ENTRIES`], depth) are checked while walking, before memory
//! is spent on a huge tree.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use minitorr_proto::item::{self, Tree, TreeEntry, MAX_ITEM_DEPTH, MAX_TREE_ENTRIES};
use minitorr_proto::types::{FileMeta, Sha1Hash};

use super::tree::{open_beneath, open_root};
use crate::sharing::hasher::{hash_open_file, FileStamp};

#[derive(Debug, Error)]
pub enum WalkError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: the name is not valid UTF-8; rename it to share the tree")]
    NotUtf8 { path: PathBuf },
    #[error("{0}")]
    BadPath(#[from] item::ItemError),
    #[error(
        "{root} holds more than {MAX_TREE_ENTRIES} files and directories; share a smaller tree"
    )]
    TooManyEntries { root: PathBuf },
    #[error("{root} is too big for one item: even the largest piece size needs too many pieces")]
    TooBig { root: PathBuf },
    #[error("{path} changed while it was being hashed; try again")]
    Changed { path: PathBuf },
}

/// Something in the tree that is not shared, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Relative to the tree's root, as on disk (lossy if not UTF-8).
    pub path: String,
    pub what: String,
}

/// One file found by the walk.
#[derive(Debug, Clone)]
struct Found {
    /// NFC item path.
    item: String,
    /// Relative path on disk (may differ from `item` in normalisation).
    disk: String,
    size: u64,
}

/// A hashed tree, ready to share.
#[derive(Debug, Clone)]
pub struct HashedTree {
    pub meta: FileMeta,
    /// Layout order (files only): path on disk relative to the root, and its stamp.
    pub files: Vec<SharedTreeFile>,
    pub root_stamp: FileStamp,
    pub skipped: Vec<Skipped>,
}

/// One file of a shared tree as it was hashed: where it is on disk (relative to the root)
/// and its stamp (a file that no longer matches is withdrawn, never served).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedTreeFile {
    /// Empty when it is the item path (always for a downloaded tree, and for every name
    /// already in NFC): 100,000 paths are not stored twice, in memory or in state.json.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub disk_path: String,
    pub stamp: FileStamp,
}

impl SharedTreeFile {
    /// The path on disk, relative to the root, of the file whose item path is `item`.
    pub fn disk<'a>(&'a self, item: &'a str) -> &'a str {
        if self.disk_path.is_empty() {
            item
        } else {
            &self.disk_path
        }
    }
}

/// A shared tree's files (layout order) as the storage seam opens them: the item's listing
/// and the paths that differ on disk.
pub fn tree_paths(
    meta: &std::sync::Arc<FileMeta>,
    files: &[SharedTreeFile],
) -> super::tree::TreePaths {
    let disk = files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.disk_path.is_empty())
        .map(|(i, f)| (i, f.disk_path.clone()))
        .collect();
    super::tree::TreePaths::new(meta.clone(), disk)
}

struct Walk {
    root: PathBuf,
    files: Vec<Found>,
    dirs: Vec<String>,
    skipped: Vec<Skipped>,
    count: usize,
}

impl Walk {
    fn io(&self, rel: &str) -> impl FnOnce(rustix::io::Errno) -> WalkError + '_ {
        let path = self.root.join(rel);
        move |e| WalkError::Io {
            path,
            source: e.into(),
        }
    }

    /// Walk the directory `fd` (at `disk` / `comps` below the root). Returns whether anything
    /// shareable was found under it.
    fn dir(
        &mut self,
        fd: &OwnedFd,
        disk: &str,
        comps: &mut Vec<String>,
    ) -> Result<bool, WalkError> {
        if comps.len() >= MAX_ITEM_DEPTH {
            return Err(item::ItemError::TooDeep {
                path: disk.to_owned(),
            }
            .into());
        }
        let mut names: Vec<Vec<u8>> = Vec::new();
        let dir = rustix::fs::Dir::read_from(fd).map_err(self.io(disk))?;
        for ent in dir {
            let ent = ent.map_err(self.io(disk))?;
            let n = ent.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            names.push(n.to_vec());
        }
        names.sort();
        let mut any = false;
        for n in names {
            let name = OsStr::from_bytes(&n);
            let rel = if disk.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{disk}/{}", name.to_string_lossy())
            };
            let Some(name_str) = name.to_str() else {
                return Err(WalkError::NotUtf8 {
                    path: self.root.join(&rel),
                });
            };
            let st = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Removed while we walk: not part of the tree.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(self.io(&rel)(e)),
            };
            let kind = FileType::from_raw_mode(st.st_mode);
            if kind != FileType::RegularFile && kind != FileType::Directory {
                let what = match kind {
                    FileType::Symlink => "symbolic link",
                    FileType::Fifo => "FIFO",
                    FileType::Socket => "socket",
                    FileType::CharacterDevice | FileType::BlockDevice => "device",
                    _ => "special file",
                };
                self.skipped.push(Skipped {
                    path: rel,
                    what: what.into(),
                });
                continue;
            }
            self.count += 1;
            if self.count > MAX_TREE_ENTRIES {
                return Err(WalkError::TooManyEntries {
                    root: self.root.clone(),
                });
            }
            comps.push(name_str.to_owned());
            let item = item::item_path(comps.iter().map(String::as_str))?;
            if kind == FileType::Directory {
                let sub = rustix::fs::openat(
                    fd,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(self.io(&rel))?;
                if !self.dir(&sub, &rel, comps)? {
                    self.dirs.push(item);
                }
            } else {
                self.files.push(Found {
                    item,
                    disk: rel,
                    size: st.st_size as u64,
                });
            }
            comps.pop();
            any = true;
        }
        Ok(any)
    }
}

/// Walk and hash the directory at `root` as item `name`, pieces sized by
/// [`item::piece_size_for`] from `preferred`. Blocking: run on the blocking pool.
pub fn hash_tree(root: &Path, name: &str, preferred: Option<u32>) -> Result<HashedTree, WalkError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WalkError::Io { path, source }
    };
    let root_fd = open_root(root).map_err(io(root))?;
    let root_stamp =
        FileStamp::of_file(&std::fs::File::from(root_fd.try_clone().map_err(io(root))?))
            .map_err(io(root))?;
    let mut w = Walk {
        root: root.to_path_buf(),
        files: Vec::new(),
        dirs: Vec::new(),
        skipped: Vec::new(),
        count: 0,
    };
    w.dir(&root_fd, "", &mut Vec::new())?;

    let mut entries: Vec<TreeEntry> = Vec::with_capacity(w.files.len() + w.dirs.len());
    // Sort files into canonical (piece) order first; hashing follows that order.
    w.files.sort_by(|a, b| item::path_cmp(&a.item, &b.item));
    let sizes: Vec<u64> = w.files.iter().map(|f| f.size).collect();
    let ps = item::piece_size_for(&sizes, preferred).ok_or_else(|| WalkError::TooBig {
        root: root.to_path_buf(),
    })?;
    let mut pieces: Vec<Sha1Hash> = Vec::new();
    let mut files = Vec::with_capacity(w.files.len());
    for f in &w.files {
        let path = root.join(&f.disk);
        let fd = open_beneath(
            &root_fd,
            &f.disk,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(io(&path))?;
        let file = std::fs::File::from(fd);
        let before = FileStamp::of_file(&file).map_err(io(&path))?;
        if !file.metadata().map_err(io(&path))?.is_file() {
            return Err(WalkError::Changed { path });
        }
        let check = file.try_clone().map_err(io(&path))?;
        let (sha1, p, size) = hash_open_file(file, ps).map_err(io(&path))?;
        let after = FileStamp::of_file(&check).map_err(io(&path))?;
        if before != after || size != after.size || size != f.size {
            return Err(WalkError::Changed { path });
        }
        pieces.extend(p);
        entries.push(TreeEntry::file(f.item.clone(), size, sha1));
        files.push(SharedTreeFile {
            disk_path: if f.disk == f.item {
                String::new()
            } else {
                f.disk.clone()
            },
            stamp: after,
        });
    }
    entries.extend(w.dirs.iter().map(|d| TreeEntry::dir(d.clone())));
    let mut tree = Tree { entries };
    tree.sort();
    tree.check()?;
    let meta = FileMeta {
        name: name.to_owned(),
        size: tree.total_size(),
        piece_size: ps,
        sha1: tree.digest(),
        pieces,
        tree: Some(tree),
    };
    Ok(HashedTree {
        meta,
        files,
        root_stamp,
        skipped: w.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharing::hasher::sha1_of;
    use minitorr_proto::item::{EntryKind, Layout};

    #[test]
    fn walks_hashes_and_skips_what_it_must() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("a/b/c")).unwrap();
        std::fs::create_dir_all(r.join("empty")).unwrap();
        std::fs::create_dir_all(r.join("only-link")).unwrap();
        let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(r.join("a/b/c/big.bin"), &big).unwrap();
        std::fs::write(r.join("a/small"), b"hello").unwrap();
        std::fs::write(r.join("zero"), b"").unwrap();
        // NFD on disk, NFC in the item.
        std::fs::write(r.join("cafe\u{301}.txt"), b"nfd").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("a/escape")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("only-link/dir")).unwrap();
        nix::unistd::mkfifo(
            &r.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();

        let h = hash_tree(r, "proj", Some(16 * 1024)).unwrap();
        h.meta.check().unwrap();
        let tree = h.meta.tree.as_ref().unwrap();
        let paths: Vec<_> = tree.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "a/b/c/big.bin",
                "a/small",
                "caf\u{E9}.txt",
                "empty",
                "only-link",
                "zero"
            ]
        );
        assert_eq!(tree.entries[3].kind, EntryKind::Dir);
        let mut skipped: Vec<_> = h.skipped.iter().map(|s| s.path.as_str()).collect();
        skipped.sort();
        assert_eq!(skipped, ["a/escape", "fifo", "only-link/dir"]);
        assert_eq!(h.files[2].disk_path, "cafe\u{301}.txt");
        // Piece hashes match the files, file by file.
        let l = Layout::new(&h.meta);
        let srcs = [big.clone(), b"hello".to_vec(), b"nfd".to_vec(), vec![]];
        for (i, f) in l.files().iter().enumerate() {
            for p in f.pieces() {
                let loc = l.locate(p).unwrap();
                let s = loc.offset as usize;
                assert_eq!(
                    h.meta.pieces[p as usize],
                    sha1_of(&srcs[i][s..s + loc.len as usize])
                );
            }
        }
        assert_eq!(tree.files().next().unwrap().2, sha1_of(&big));
    }

    #[test]
    fn a_bad_name_is_named_in_the_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/bad\u{7}name"), b"x").unwrap();
        let e = hash_tree(d.path(), "proj", Some(16 * 1024)).unwrap_err();
        assert!(e.to_string().contains("sub/bad\\u{7}name"), "{e}");
    }
}

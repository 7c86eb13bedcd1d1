//! The partial file a download writes into: created next to the destination (same filesystem,
//! so finishing is a link, not a copy), preallocated to the exact size (disk-full shows up at
//! start, not at 90 %), written at piece offsets, and moved into place only after the
//! whole-file SHA1 (computed alongside by [`WholeFileHasher`]) matches.
//!
//! Local safety (docs/SECURITY.md, "local attacker"): the destination may be a directory other
//! users can write into, so nothing here ever resolves a name twice or follows a link planted
//! there. The directory is opened once ([`DestDir`], `O_NOFOLLOW`, must be ours); every file
//! operation is relative to that handle: the part file is created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` mode 0600, an existing one is reused only if it is a regular file
//! we own with a single link, and the finished file is *our inode* linked in under the final
//! name with `linkat` (fails if the name exists; never replaces, never follows).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use bytes::Bytes;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
use sha1::{Digest, Sha1};
use thiserror::Error;

use minitorr_proto::private_dir::own_uid;
use minitorr_proto::types::{Bitfield, FileMeta, Sha1Hash};

use crate::sharing::hasher::{sha1_of, FileStamp};
use crate::storage::Storage;

/// Space left free on the destination's filesystem after a download: 5 % of its size, at most
/// 64 MiB. Big disks keep 64 MiB (enough for the system to keep working); tiny filesystems
/// (a 16 MiB tmpfs) keep a proportionate 5 % instead of being unusable.
pub const RESERVE_MAX: u64 = 64 * 1024 * 1024;
pub const RESERVE_PERCENT: u64 = 5;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("destination directory {dir} does not exist")]
    NoDir { dir: PathBuf },
    #[error("destination {dir} is not a directory")]
    NotADir { dir: PathBuf },
    #[error("destination directory {dir} is a symbolic link; give its real path")]
    DirIsLink { dir: PathBuf },
    #[error("destination directory {dir} is owned by uid {owner}, not by uid {me} that minitorrd runs as; downloads only go into directories you own")]
    DirNotOwned { dir: PathBuf, owner: u32, me: u32 },
    #[error("not enough free space in {dir} for {file}: it needs {need} more bytes, the filesystem has {free} free and {reserve} must stay free; free some space or choose another destination")]
    NoSpace {
        dir: PathBuf,
        file: String,
        need: u64,
        free: u64,
        reserve: u64,
    },
    #[error("refusing to use {path}: {why}; it was not created by this download (someone else may have planted it) — remove it and download again")]
    Planted { path: PathBuf, why: String },
    #[error("{path} already exists; not overwriting it")]
    Exists { path: PathBuf },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl StorageError {
    /// A refusal on purpose (as opposed to an I/O failure).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            StorageError::Io { .. } | StorageError::NoDir { .. } | StorageError::NotADir { .. }
        )
    }
}

/// The directory a download lands in, opened once (`O_DIRECTORY|O_NOFOLLOW`) and checked to
/// be owned by the uid minitorrd runs as. All later operations are relative to this handle, so
/// swapping the path (or a component of it) for a link afterwards changes nothing.
#[derive(Debug)]
pub struct DestDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl DestDir {
    pub fn open(path: &Path) -> Result<DestDir, StorageError> {
        let dir = path.to_path_buf();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
            rustix::io::Errno::NOENT => StorageError::NoDir { dir: dir.clone() },
            // O_DIRECTORY|O_NOFOLLOW on a symlink to a directory reports ENOTDIR.
            rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP
                if path
                    .symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                StorageError::DirIsLink { dir: dir.clone() }
            }
            rustix::io::Errno::NOTDIR => StorageError::NotADir { dir: dir.clone() },
            e => StorageError::Io {
                what: "open directory",
                path: dir.clone(),
                source: e.into(),
            },
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| StorageError::Io {
            what: "stat",
            path: dir.clone(),
            source: e.into(),
        })?;
        let me = own_uid();
        if st.st_uid != me {
            return Err(StorageError::DirNotOwned {
                dir,
                owner: st.st_uid,
                me,
            });
        }
        Ok(DestDir { fd, path: dir })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuse a download of `size` bytes if it would eat into the reserve. `held` bytes are
    /// already allocated to the file (a part file being resumed) and need no new space.
    pub fn check_space(&self, file: &str, size: u64, held: u64) -> Result<(), StorageError> {
        let vfs = rustix::fs::fstatvfs(&self.fd).map_err(|e| StorageError::Io {
            what: "check free space in",
            path: self.path.clone(),
            source: e.into(),
        })?;
        let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        let total = vfs.f_blocks.saturating_mul(vfs.f_frsize);
        let reserve = (total / 100 * RESERVE_PERCENT).min(RESERVE_MAX);
        let need = size.saturating_sub(held);
        if need.saturating_add(reserve) > free {
            return Err(StorageError::NoSpace {
                dir: self.path.clone(),
                file: file.to_string(),
                need,
                free,
                reserve,
            });
        }
        Ok(())
    }

    /// Rename `from` to `to` inside this directory, never over an existing entry.
    pub fn rename_noreplace(&self, from: &OsStr, to: &OsStr) -> Result<(), StorageError> {
        rustix::fs::renameat_with(
            &self.fd,
            from,
            &self.fd,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| {
            if e == rustix::io::Errno::EXIST {
                StorageError::Exists {
                    path: self.path.join(to),
                }
            } else {
                self.io("rename", from)(e)
            }
        })
    }

    /// Whether something (anything, even a dangling link) is at `name` in this directory.
    pub fn entry_exists(&self, name: &OsStr) -> bool {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    fn io(
        &self,
        what: &'static str,
        name: &OsStr,
    ) -> impl FnOnce(rustix::io::Errno) -> StorageError {
        let path = self.path.join(name);
        move |e| StorageError::Io {
            what,
            path,
            source: e.into(),
        }
    }
}

/// `.name.minitorr-part`: hidden, and never mistaken for the finished file. A name too long
/// for that (file names may be 255 bytes, the file system's limit too) gets a shortened prefix
/// plus a hash of the whole name, so the part file is still unique and stable across restarts
/// (resume finds it again).
pub fn part_name_for(name: &OsStr) -> OsString {
    const NAME_MAX: usize = 255;
    const SUFFIX: &str = ".minitorr-part";
    let name = name.to_string_lossy().into_owned();
    let plain = format!(".{name}{SUFFIX}");
    if plain.len() <= NAME_MAX {
        return plain.into();
    }
    let tag = &sha1_of(name.as_bytes()).to_hex()[..16];
    let room = NAME_MAX - 1 - 1 - tag.len() - SUFFIX.len(); // ".", "~"
    let mut cut = room;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(".{}~{tag}{SUFFIX}", &name[..cut]).into()
}

/// `dir/.name.minitorr-part` for `dir/name` (see [`part_name_for`]).
pub fn part_path_for(dest: &Path) -> PathBuf {
    dest.with_file_name(part_name_for(dest.file_name().unwrap_or_default()))
}

/// Where a download's bytes are kept until complete: one part file (a single-file item), or
/// a staging directory holding the tree (`.ITEM.minitorr-part/`, private, renamed to `ITEM`
/// when every file verified). Piece I/O goes through [`Storage`] either way.
pub struct PartFile {
    kind: PartKind,
    store: Arc<Storage>,
    /// Writers take turns: concurrent pwrites to one file only contend on the inode lock in
    /// the kernel (spinning there cost ~6 % CPU in profiles); hashing stays parallel.
    write_turn: std::sync::Mutex<()>,
    dir: DestDir,
    name: OsString,
    path: PathBuf,
    meta: Arc<FileMeta>,
    /// A selective download: the files (layout order) it fetches; the others are not on disk.
    wanted: Option<Arc<Vec<bool>>>,
}

enum PartKind {
    File(File),
    /// The staging directory's own handle.
    Tree(OwnedFd),
}

impl PartKind {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            PartKind::File(f) => f.as_fd(),
            PartKind::Tree(d) => d.as_fd(),
        }
    }
}

impl PartFile {
    /// Open the partial file for `dest_name` in `dir`, creating and preallocating it if needed
    /// (after checking the filesystem has room). Returns whether it existed (then its pieces
    /// must be re-verified before use).
    pub fn open(
        dir: DestDir,
        dest_name: &OsStr,
        meta: Arc<FileMeta>,
    ) -> Result<(PartFile, bool), StorageError> {
        Self::open_selective(dir, dest_name, meta, None)
    }

    /// [`PartFile::open`] fetching only the `wanted` files of a tree (layout order).
    pub fn open_selective(
        dir: DestDir,
        dest_name: &OsStr,
        meta: Arc<FileMeta>,
        wanted: Option<Arc<Vec<bool>>>,
    ) -> Result<(PartFile, bool), StorageError> {
        if meta.tree.is_some() {
            return Self::open_tree(dir, dest_name, meta, wanted);
        }
        let name = part_name_for(dest_name);
        let path = dir.path.join(&name);
        // Bytes an existing part file already holds need no new space.
        let held = match rustix::fs::statat(&dir.fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                (st.st_blocks as u64).saturating_mul(512)
            }
            _ => 0,
        };
        dir.check_space(&meta.name, meta.size, held)?;

        let rw = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let (fd, existed) = match rustix::fs::openat(
            &dir.fd,
            &name,
            rw | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => (fd, false),
            Err(rustix::io::Errno::EXIST) => {
                // Resume. NONBLOCK so a planted FIFO cannot hang us before the type check.
                let fd = rustix::fs::openat(&dir.fd, &name, rw | OFlags::NONBLOCK, Mode::empty())
                    .map_err(|e| match e {
                    rustix::io::Errno::LOOP => StorageError::Planted {
                        path: path.clone(),
                        why: "it is a symbolic link".into(),
                    },
                    e => dir.io("open", &name)(e),
                })?;
                check_own_single_file(&fd, &path)?;
                (fd, true)
            }
            Err(e) => {
                return Err(StorageError::Io {
                    what: "write in",
                    path: dir.path.clone(),
                    source: e.into(),
                })
            }
        };
        let file = File::from(fd);
        let len_err = |source| StorageError::Io {
            what: "allocate",
            path: path.clone(),
            source,
        };
        if file.metadata().map_err(len_err)?.len() != meta.size {
            file.set_len(0).map_err(len_err)?;
            preallocate(&file, meta.size).map_err(len_err)?;
        }
        let store = Arc::new(Storage::single(
            &meta,
            file.try_clone().map_err(|source| StorageError::Io {
                what: "open",
                path: path.clone(),
                source,
            })?,
        ));
        Ok((
            PartFile {
                kind: PartKind::File(file),
                store,
                write_turn: std::sync::Mutex::new(()),
                dir,
                name,
                path,
                meta,
                wanted: None,
            },
            existed,
        ))
    }

    /// The staging directory of a tree: created private (0700) next to the destination, or
    /// found again on resume (then it must be a real directory of ours), with every file of
    /// the tree created inside it ([`crate::storage::tree::create_tree`]).
    fn open_tree(
        dir: DestDir,
        dest_name: &OsStr,
        meta: Arc<FileMeta>,
        wanted: Option<Arc<Vec<bool>>>,
    ) -> Result<(PartFile, bool), StorageError> {
        let name = part_name_for(dest_name);
        let path = dir.path.join(&name);
        let tree = meta.tree.as_ref().expect("a tree");
        let existed = match rustix::fs::mkdirat(&dir.fd, &name, Mode::from_raw_mode(0o700)) {
            Ok(()) => false,
            Err(rustix::io::Errno::EXIST) => true,
            Err(e) => return Err(dir.io("create", &name)(e)),
        };
        if !existed {
            dir.check_space(&meta.name, meta.size, 0).inspect_err(|_| {
                let _ = rustix::fs::unlinkat(&dir.fd, &name, AtFlags::REMOVEDIR);
            })?;
        }
        let root = rustix::fs::openat(
            &dir.fd,
            &name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => StorageError::Planted {
                path: path.clone(),
                why: "it is not a directory (a symbolic link or a file)".into(),
            },
            e => dir.io("open", &name)(e),
        })?;
        let st = rustix::fs::fstat(&root).map_err(dir.io("stat", &name))?;
        if st.st_uid != own_uid() {
            return Err(StorageError::Planted {
                path,
                why: format!("it is owned by uid {}, not by you", st.st_uid),
            });
        }
        let files_existed = crate::storage::tree::create_tree_only(
            &root,
            tree,
            wanted.as_deref().map(Vec::as_slice),
        )
        .map_err(|e| StorageError::Planted {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let set_root = root.try_clone().map_err(|source| StorageError::Io {
            what: "open",
            path: path.clone(),
            source,
        })?;
        let store = Arc::new(Storage::new(
            &meta,
            Box::new(crate::storage::tree::TreeFiles::writable(
                set_root,
                path.clone(),
                meta.clone(),
            )),
        ));
        Ok((
            PartFile {
                kind: PartKind::Tree(root),
                store,
                write_turn: std::sync::Mutex::new(()),
                dir,
                name,
                path,
                meta,
                wanted,
            },
            existed && files_existed,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A selective download's files (layout order); `None`: every file.
    pub fn wanted(&self) -> Option<&[bool]> {
        self.wanted.as_deref().map(Vec::as_slice)
    }

    /// Whether file `i` (layout order) is fetched by this download.
    pub fn wants_file(&self, i: usize) -> bool {
        self.wanted.as_ref().is_none_or(|w| w[i])
    }

    /// The pieces this download fetches (all of them unless selective).
    pub fn wanted_pieces(&self) -> Bitfield {
        let layout = self.store.layout();
        let mut b = Bitfield::new(layout.piece_count());
        for (i, f) in layout.files().iter().enumerate() {
            if self.wants_file(i) {
                for p in f.pieces() {
                    b.set(p);
                }
            }
        }
        b
    }

    pub fn is_tree(&self) -> bool {
        matches!(self.kind, PartKind::Tree(_))
    }

    /// The pieces, for serving them while downloading (the same open handles: never a
    /// re-open by name of a single part file; a tree's files are opened beneath its root).
    pub fn storage(&self) -> Arc<Storage> {
        self.store.clone()
    }

    pub fn write_piece(&self, piece: u32, data: &[u8]) -> io::Result<()> {
        let _turn = self.write_turn.lock().unwrap_or_else(|e| e.into_inner());
        self.store.write_piece(piece, data)
    }

    pub fn read_piece(&self, piece: u32, buf: &mut Vec<u8>) -> io::Result<()> {
        self.store.read_piece(piece, buf)
    }

    /// The files of a finished tree as a share record lists them (stamps; the path on disk
    /// is the item path, which the record does not repeat).
    pub fn tree_files(&self) -> io::Result<Vec<crate::storage::walk::SharedTreeFile>> {
        let n = self.store.layout().files().len();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            if !self.wants_file(i) {
                continue;
            }
            let f = self.store.layout_file(i)?;
            out.push(crate::storage::walk::SharedTreeFile {
                disk_path: String::new(),
                stamp: FileStamp::of_file(&f)?,
            });
        }
        Ok(out)
    }

    /// Re-verify every piece on disk (resume after a crash): only pieces whose hash matches count.
    pub fn scan(&self) -> io::Result<Bitfield> {
        self.scan_reporting(None)
    }

    /// [`PartFile::scan`], adding each piece's length to `checked` once read (progress for
    /// `show_downloads`' `[V] verifying`).
    pub fn scan_reporting(
        &self,
        checked: Option<&std::sync::atomic::AtomicU64>,
    ) -> io::Result<Bitfield> {
        let mut have = Bitfield::new(self.meta.piece_count());
        let mut buf = Vec::new();
        let wanted = self.wanted_pieces();
        for i in wanted.iter_set() {
            self.read_piece(i, &mut buf)?;
            if let Some(c) = checked {
                c.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            if sha1_of(&buf) == self.meta.pieces[i as usize] {
                have.set(i);
            }
        }
        Ok(have)
    }

    /// Stamp (size, mtime, device, inode) of the open file (of the staging directory for a
    /// tree).
    pub fn stamp(&self) -> io::Result<FileStamp> {
        let st = rustix::fs::fstat(self.kind.fd())?;
        Ok(FileStamp {
            size: st.st_size as u64,
            mtime_ns: st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128,
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// Move into place without ever replacing an existing file: the inode we wrote (not
    /// whatever the part name points at now) gets the final name via `linkat`, which fails if
    /// the name exists in any form (file, link, FIFO). Then the part name is removed if it is
    /// still ours. Not fsynced here: flushing a large file waits for the disk (1.7 s per GiB
    /// on our CI disks), so it happens after the download is reported complete
    /// ([`PartFile::sync_to_disk`]) and before the completion is recorded in the state file;
    /// after a power loss in between, login re-verifies the file's SHA1.
    pub fn finish(&self, dest_name: &OsStr) -> Result<(), StorageError> {
        let dest = self.dir.path.join(dest_name);
        let file = match &self.kind {
            PartKind::File(f) => f,
            PartKind::Tree(_) => return self.finish_tree(dest_name, dest),
        };
        let exists = |e: rustix::io::Errno, io: &dyn Fn(rustix::io::Errno) -> StorageError| {
            if e == rustix::io::Errno::EXIST {
                StorageError::Exists { path: dest.clone() }
            } else {
                io(e)
            }
        };
        // /proc/self/fd/N with AT_SYMLINK_FOLLOW links the open file itself (what
        // AT_EMPTY_PATH does, without needing CAP_DAC_READ_SEARCH).
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        match rustix::fs::linkat(
            CWD,
            proc_path.as_str(),
            &self.dir.fd,
            dest_name,
            AtFlags::SYMLINK_FOLLOW,
        ) {
            Ok(()) => {}
            // Our inode has no name left (someone removed or replaced the part file in a
            // directory they can write into): nothing safe to link; the download fails.
            Err(rustix::io::Errno::NOENT) if Path::new("/proc/self/fd").exists() => {
                return Err(StorageError::Planted {
                    path: self.path.clone(),
                    why: "it was removed or replaced during the download".into(),
                });
            }
            Err(rustix::io::Errno::NOENT) => {
                // No /proc: link by name, after checking the name is still our inode (a
                // narrow race, and only in a directory others can write into).
                if !self.name_is_ours(&self.name) {
                    return Err(StorageError::Planted {
                        path: self.path.clone(),
                        why: "it was replaced during the download".into(),
                    });
                }
                rustix::fs::linkat(
                    &self.dir.fd,
                    &self.name,
                    &self.dir.fd,
                    dest_name,
                    AtFlags::empty(),
                )
                .map_err(|e| exists(e, &|e| self.dir.io("link", dest_name)(e)))?;
            }
            Err(e) => return Err(exists(e, &|e| self.dir.io("link", dest_name)(e))),
        }
        if self.name_is_ours(&self.name) {
            rustix::fs::unlinkat(&self.dir.fd, &self.name, AtFlags::empty())
                .map_err(self.dir.io("remove", &self.name))?;
        }
        Ok(())
    }

    /// A tree appears at once and whole: the staging directory is renamed to the final name
    /// (`RENAME_NOREPLACE`: never over anything already there), after checking the staging
    /// name is still our directory.
    fn finish_tree(&self, dest_name: &OsStr, dest: PathBuf) -> Result<(), StorageError> {
        if !self.name_is_ours(&self.name) {
            return Err(StorageError::Planted {
                path: self.path.clone(),
                why: "it was removed or replaced during the download".into(),
            });
        }
        // Every file at its path must be the very inode we wrote and verified: a name inside
        // the staging tree swapped for a link or another file never lands in the result.
        let PartKind::Tree(root) = &self.kind else {
            unreachable!("finish_tree of a single file")
        };
        let tree = self.meta.tree.as_ref().expect("a tree");
        for (i, (rel, _, _)) in tree.files().enumerate() {
            if !self.wants_file(i) {
                continue;
            }
            let same = (|| -> io::Result<bool> {
                let there = crate::storage::tree::open_beneath(
                    root,
                    rel,
                    OFlags::PATH | OFlags::NOFOLLOW,
                    Mode::empty(),
                )?;
                let (a, b) = (
                    rustix::fs::fstat(&there)?,
                    rustix::fs::fstat(&*self.store.layout_file(i)?)?,
                );
                Ok(a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            })();
            if !matches!(same, Ok(true)) {
                return Err(StorageError::Planted {
                    path: self.path.join(rel),
                    why: "it was removed or replaced during the download".into(),
                });
            }
        }
        match rustix::fs::renameat_with(
            &self.dir.fd,
            &self.name,
            &self.dir.fd,
            dest_name,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) | Err(rustix::io::Errno::NOTEMPTY) => {
                Err(StorageError::Exists { path: dest })
            }
            Err(e) => Err(self.dir.io("rename", &self.name)(e)),
        }
    }

    /// Flush the finished file (every file of a tree) and its directory entry to disk
    /// (blocking).
    pub fn sync_to_disk(&self) -> io::Result<()> {
        self.store.flush()?;
        rustix::fs::fsync(&self.dir.fd)?;
        Ok(())
    }

    /// Is `name` in our directory the very file we have open?
    fn name_is_ours(&self, name: &OsStr) -> bool {
        let (Ok(there), Ok(mine)) = (
            rustix::fs::statat(&self.dir.fd, name, AtFlags::SYMLINK_NOFOLLOW),
            rustix::fs::fstat(self.kind.fd()),
        ) else {
            return false;
        };
        there.st_dev == mine.st_dev && there.st_ino == mine.st_ino
    }
}

/// A part file we are about to resume must be one this daemon created: a regular file (not a
/// FIFO or device), owned by us, with one link (a hard link to someone's file would make our
/// writes land in it).
fn check_own_single_file(fd: &OwnedFd, path: &Path) -> Result<(), StorageError> {
    let st = rustix::fs::fstat(fd).map_err(|e| StorageError::Io {
        what: "stat",
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let why = if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        Some("it is not a regular file".to_string())
    } else if st.st_uid != own_uid() {
        Some(format!("it is owned by uid {}, not by you", st.st_uid))
    } else if st.st_nlink != 1 {
        Some(format!("it has {} hard links", st.st_nlink))
    } else {
        None
    };
    match why {
        Some(why) => Err(StorageError::Planted {
            path: path.to_path_buf(),
            why,
        }),
        None => Ok(()),
    }
}

fn preallocate(file: &File, size: u64) -> io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => file.set_len(size),
        Err(e) => Err(e.into()),
    }
}

/// Messages to the whole-file hasher thread.
enum HashMsg {
    /// Piece verified; its bytes if still in memory (else they are read back from the file).
    Piece(u32, Option<Bytes>),
    /// Every piece has been sent: finish and return the digest.
    Finish,
}

/// Out-of-order pieces kept in memory at most; beyond this they are read back from disk.
const PENDING_BUDGET: usize = 8 * 1024 * 1024;

/// Computes the whole-file SHA1 on its own thread, in file order, while the download runs.
/// Verified pieces are handed over with their bytes (no second read in the common case); the
/// picker keeps completion close to file order, so little has to wait in memory.
pub struct WholeFileHasher {
    tx: mpsc::Sender<HashMsg>,
    /// Bytes handed over and not yet hashed or dropped. Checked when sending, so a hasher
    /// that falls behind (CPU contention) cannot make the channel grow without bound.
    pending: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<io::Result<Vec<Option<Sha1Hash>>>>,
}

impl WholeFileHasher {
    pub fn start(part: Arc<PartFile>) -> io::Result<Self> {
        let store = part.storage();
        let wanted: Vec<bool> = (0..store.layout().files().len())
            .map(|i| part.wants_file(i))
            .collect();
        let (tx, rx) = mpsc::channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let p = pending.clone();
        let handle = std::thread::Builder::new()
            .name("whole-sha1".into())
            .spawn(move || hash_in_order(&store, &wanted, rx, &p))?;
        Ok(WholeFileHasher {
            tx,
            pending,
            handle,
        })
    }

    /// A verified piece. Its bytes are kept for the hasher while under the memory budget;
    /// beyond it the hasher reads the piece back from the part file when it gets there.
    pub fn piece(&self, piece: u32, data: Option<Bytes>) {
        let data = data.filter(|d| {
            let before = self.pending.fetch_add(d.len(), Ordering::AcqRel);
            if before + d.len() > PENDING_BUDGET {
                self.pending.fetch_sub(d.len(), Ordering::AcqRel);
                false
            } else {
                true
            }
        });
        let _ = self.tx.send(HashMsg::Piece(piece, data));
    }

    /// Wait for the digests, one per file in layout order (blocking: call from the blocking
    /// pool). All pieces must be sent.
    pub fn finish(self) -> io::Result<Vec<Option<Sha1Hash>>> {
        let _ = self.tx.send(HashMsg::Finish);
        self.handle
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("whole-file hasher panicked")))
    }
}

/// Pieces are hashed in item order; each file's SHA1 is finished at its last piece (an empty
/// file's is the SHA1 of nothing), so a tree's files are verified in the same single pass.
/// Files a selective download does not fetch are skipped (`None`).
fn hash_in_order(
    store: &Storage,
    wanted: &[bool],
    rx: mpsc::Receiver<HashMsg>,
    pending: &AtomicUsize,
) -> io::Result<Vec<Option<Sha1Hash>>> {
    let files = store.layout().files();
    let mut digests = Vec::with_capacity(files.len());
    let mut file = 0usize;
    let mut sha = Sha1::new();
    let mut next = 0u32;
    let mut waiting: BTreeMap<u32, Option<Bytes>> = BTreeMap::new();
    let mut buf = Vec::new();
    let mut finishing = false;
    loop {
        // Close every file done (or skipped) before `next`.
        while file < files.len() {
            let end = files[file].pieces().end;
            if !wanted[file] {
                digests.push(None);
                next = next.max(end);
                file += 1;
            } else if next >= end {
                digests.push(Some(Sha1Hash(std::mem::take(&mut sha).finalize().into())));
                file += 1;
            } else {
                break;
            }
        }
        if file == files.len() {
            return Ok(digests);
        }
        // Drop what was handed over for pieces already behind us.
        while let Some((&i, _)) = waiting.first_key_value() {
            if i >= next {
                break;
            }
            if let Some(Some(d)) = waiting.remove(&i) {
                pending.fetch_sub(d.len(), Ordering::AcqRel);
            }
        }
        if let Some(data) = waiting.remove(&next) {
            match data {
                Some(d) => {
                    sha.update(&d);
                    pending.fetch_sub(d.len(), Ordering::AcqRel);
                }
                None => {
                    store.read_piece(next, &mut buf)?;
                    sha.update(&buf);
                }
            }
            next += 1;
            continue;
        }
        if finishing {
            return Err(io::Error::other(format!(
                "piece {next} never arrived at the whole-file hasher"
            )));
        }
        match rx.recv() {
            Ok(HashMsg::Piece(i, data)) if i >= next => {
                if let Some(Some(old)) = waiting.insert(i, data) {
                    pending.fetch_sub(old.len(), Ordering::AcqRel);
                }
            }
            Ok(HashMsg::Piece(_, data)) => {
                pending.fetch_sub(data.map_or(0, |d| d.len()), Ordering::AcqRel);
            }
            Ok(HashMsg::Finish) => finishing = true,
            Err(_) => return Err(io::Error::other("download stopped")),
        }
    }
}

/// Delete the part file of the download to `dest` (cancel, forgetting a failed download).
/// Relative to the directory's own handle and only if it is what we would have created — a
/// regular file of ours with one link — so a name planted by someone else is left alone.
/// Returns whether a part file was removed (none is fine: a queued download never made one).
pub fn remove_part_file(dest: &Path) -> Result<bool, StorageError> {
    let dir = DestDir::open(dest.parent().unwrap_or(Path::new("/")))?;
    let name = part_name_for(dest.file_name().unwrap_or_default());
    let path = dir.path.join(&name);
    if rustix::fs::statat(&dir.fd, &name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
    {
        return remove_staging_tree(&dir, &name, &path).map(|()| true);
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(&dir.fd, &name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(rustix::io::Errno::LOOP) => {
            return Err(StorageError::Planted {
                path,
                why: "it is a symbolic link".into(),
            })
        }
        Err(e) => return Err(dir.io("open", &name)(e)),
    };
    check_own_single_file(&fd, &path)?;
    rustix::fs::unlinkat(&dir.fd, &name, AtFlags::empty()).map_err(dir.io("remove", &name))?;
    Ok(true)
}

/// Delete a tree's staging directory (cancel, remove): only if it is a directory of ours;
/// everything inside is removed relative to its parent's handle, symlinks as links (never
/// followed), so nothing outside the staging directory can be touched.
fn remove_staging_tree(dir: &DestDir, name: &OsStr, path: &Path) -> Result<(), StorageError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd =
        rustix::fs::openat(&dir.fd, name, flags, Mode::empty()).map_err(dir.io("open", name))?;
    let st = rustix::fs::fstat(&fd).map_err(dir.io("stat", name))?;
    if st.st_uid != own_uid() {
        return Err(StorageError::Planted {
            path: path.to_path_buf(),
            why: format!("it is owned by uid {}, not by you", st.st_uid),
        });
    }
    let io = |source: rustix::io::Errno| StorageError::Io {
        what: "remove",
        path: path.to_path_buf(),
        source: source.into(),
    };
    empty_dir(&fd, 0).map_err(io)?;
    rustix::fs::unlinkat(&dir.fd, name, AtFlags::REMOVEDIR).map_err(io)
}

/// Remove everything inside the directory `fd` (depth-bounded like item paths).
fn empty_dir(fd: &OwnedFd, depth: usize) -> rustix::io::Result<()> {
    if depth > minitorr_proto::item::MAX_ITEM_DEPTH {
        return Err(rustix::io::Errno::LOOP);
    }
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(fd)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(std::ffi::CString::new(n).expect("no NUL in a file name"));
        }
    }
    for n in names {
        let st = rustix::fs::statat(fd, &n, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = rustix::fs::openat(
                fd,
                &n,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            empty_dir(&sub, depth + 1)?;
            rustix::fs::unlinkat(fd, &n, AtFlags::REMOVEDIR)?;
        } else {
            rustix::fs::unlinkat(fd, &n, AtFlags::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn meta_for(data: &[u8], ps: u32) -> FileMeta {
        FileMeta {
            name: "f".into(),
            size: data.len() as u64,
            piece_size: ps,
            sha1: sha1_of(data),
            pieces: data.chunks(ps as usize).map(sha1_of).collect(),
            tree: None,
        }
    }

    fn ddir(p: &Path) -> DestDir {
        DestDir::open(p).unwrap()
    }

    /// Every kind of thing planted at the part file's name is refused, and the file it points
    /// at (if any) is left untouched.
    #[test]
    fn planted_part_files_are_refused_and_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(meta_for(&[7u8; 40_000], 16 * 1024));
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        let pp = dir.path().join(".f.minitorr-part");

        std::os::unix::fs::symlink(&victim, &pp).unwrap();
        let e = PartFile::open(ddir(dir.path()), "f".as_ref(), meta.clone())
            .err()
            .unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::remove_file(&pp).unwrap();

        // Dangling link: O_EXCL does not create through it.
        let nowhere = dir.path().join("nowhere");
        std::os::unix::fs::symlink(&nowhere, &pp).unwrap();
        assert!(PartFile::open(ddir(dir.path()), "f".as_ref(), meta.clone()).is_err());
        assert!(!nowhere.exists(), "created a file through a dangling link");
        std::fs::remove_file(&pp).unwrap();

        std::fs::hard_link(&victim, &pp).unwrap();
        let e = PartFile::open(ddir(dir.path()), "f".as_ref(), meta.clone())
            .err()
            .unwrap();
        assert!(e.to_string().contains("2 hard links"), "{e}");
        std::fs::remove_file(&pp).unwrap();

        nix::unistd::mkfifo(&pp, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = PartFile::open(ddir(dir.path()), "f".as_ref(), meta.clone())
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::remove_file(&pp).unwrap();

        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
    }

    /// The final name is linked to the inode we wrote, never to what the part name holds now,
    /// and a symlink at the final name is not followed.
    #[test]
    fn finish_links_our_inode_and_never_follows_the_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![3u8; 20_000];
        let meta = Arc::new(meta_for(&data, 16 * 1024));
        let (part, _) = PartFile::open(ddir(dir.path()), "f".as_ref(), meta.clone()).unwrap();
        part.write_piece(0, &data[..16 * 1024]).unwrap();
        part.write_piece(1, &data[16 * 1024..]).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("f")).unwrap();
        assert!(matches!(
            part.finish("f".as_ref()),
            Err(StorageError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
        std::fs::remove_file(dir.path().join("f")).unwrap();

        // Someone hard-links our part file elsewhere and swaps the part name for their own
        // file: our inode still lands (theirs is never linked in nor removed).
        let pp = dir.path().join(".f.minitorr-part");
        let keep = dir.path().join("keep");
        std::fs::hard_link(&pp, &keep).unwrap();
        std::fs::remove_file(&pp).unwrap();
        std::fs::write(&pp, b"attacker").unwrap();
        part.finish("f".as_ref()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), data);
        assert_eq!(std::fs::read(&pp).unwrap(), b"attacker");

        // Our inode with no name left: refused, nothing linked.
        let (part, _) = PartFile::open(ddir(dir.path()), "g".as_ref(), meta).unwrap();
        let pg = dir.path().join(".g.minitorr-part");
        std::fs::remove_file(&pg).unwrap();
        std::fs::write(&pg, b"attacker").unwrap();
        let e = part.finish("g".as_ref()).unwrap_err();
        assert!(e.to_string().contains("removed or replaced"), "{e}");
        assert!(!dir.path().join("g").exists());
    }

    #[test]
    fn directories_of_other_users_and_links_to_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(matches!(
            DestDir::open(&link),
            Err(StorageError::DirIsLink { .. })
        ));
        if own_uid() == 0 {
            let theirs = dir.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let e = DestDir::open(&theirs).unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn a_file_larger_than_the_free_space_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = meta_for(b"x", 16 * 1024);
        meta.size = u64::MAX / 2;
        let e = PartFile::open(ddir(dir.path()), "f".as_ref(), Arc::new(meta))
            .err()
            .unwrap();
        assert!(matches!(e, StorageError::NoSpace { .. }), "{e}");
        assert!(!dir.path().join(".f.minitorr-part").exists());
    }

    #[test]
    fn out_of_order_writes_resume_scan_and_finish() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let meta = Arc::new(meta_for(&data, 16 * 1024));
        let dest = dir.path().join("f");
        let pp = part_path_for(&dest);
        let (part, existed) = PartFile::open(ddir(dir.path()), "f".as_ref(), meta.clone()).unwrap();
        assert!(!existed);
        assert_eq!(
            std::fs::metadata(&pp).unwrap().permissions().mode() & 0o777,
            0o600,
            "part files are private"
        );
        assert_eq!(
            std::fs::metadata(&pp).unwrap().len(),
            data.len() as u64,
            "exact size, no padding"
        );
        for i in [6u32, 0, 3] {
            let s = meta.piece_offset(i) as usize;
            part.write_piece(i, &data[s..s + meta.piece_len(i) as usize])
                .unwrap();
        }
        drop(part);
        // Reopen as after a crash: exactly the written pieces verify.
        let (part, existed) = PartFile::open(ddir(dir.path()), "f".as_ref(), meta.clone()).unwrap();
        assert!(existed);
        let have = part.scan().unwrap();
        assert_eq!(have.iter_set().collect::<Vec<_>>(), vec![0, 3, 6]);
        for i in 0..meta.piece_count() {
            let s = meta.piece_offset(i) as usize;
            part.write_piece(i, &data[s..s + meta.piece_len(i) as usize])
                .unwrap();
        }
        let part = Arc::new(part);
        let hasher = WholeFileHasher::start(part.clone()).unwrap();
        // Out of order, some with bytes and some to be read back from disk.
        for i in (0..meta.piece_count()).rev() {
            let s = meta.piece_offset(i) as usize;
            let bytes = (i % 2 == 0)
                .then(|| Bytes::copy_from_slice(&data[s..s + meta.piece_len(i) as usize]));
            hasher.piece(i, bytes);
        }
        assert_eq!(hasher.finish().unwrap(), vec![Some(meta.sha1)]);
        part.finish("f".as_ref()).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert!(!pp.exists());
    }

    #[test]
    fn part_names_stay_within_name_max_and_distinct() {
        let long_a = format!("{}a.bin", "é".repeat(125));
        let long_b = format!("{}b.bin", "é".repeat(125));
        assert!(long_a.len() <= 255);
        let pa = part_path_for(&Path::new("/d").join(&long_a));
        let pb = part_path_for(&Path::new("/d").join(&long_b));
        for p in [&pa, &pb] {
            let n = p.file_name().unwrap().to_str().unwrap();
            assert!(
                n.len() <= 255 && n.starts_with('.') && n.ends_with(".minitorr-part"),
                "{n}"
            );
        }
        assert_ne!(pa, pb);
        assert_eq!(pa, part_path_for(&Path::new("/d").join(&long_a)), "stable");
        assert_eq!(
            part_path_for(Path::new("/d/x.iso")),
            Path::new("/d/.x.iso.minitorr-part")
        );
    }

    #[test]
    fn finish_never_overwrites_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(meta_for(b"hello", 16 * 1024));
        let dest = dir.path().join("f");
        std::fs::write(&dest, b"mine").unwrap();
        let (part, _) = PartFile::open(ddir(dir.path()), "f".as_ref(), meta).unwrap();
        assert!(matches!(
            part.finish("f".as_ref()),
            Err(StorageError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&dest).unwrap(), b"mine");
    }

    /// A tree downloads into a private staging directory, verifies file by file in one
    /// in-order pass, appears whole under its final name, and never over an existing one.
    #[test]
    fn a_tree_stages_verifies_and_appears_whole() {
        use minitorr_proto::item::{Tree, TreeEntry};
        let dir = tempfile::tempdir().unwrap();
        let ps = 16 * 1024;
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("a/b/big", (0..70_000u32).map(|i| (i % 249) as u8).collect()),
            ("a/empty", vec![]),
            ("z", b"last".to_vec()),
        ];
        let mut tree = Tree {
            entries: files
                .iter()
                .map(|(p, d)| TreeEntry::file(*p, d.len() as u64, sha1_of(d)))
                .chain([TreeEntry::dir("void")])
                .collect(),
        };
        tree.sort();
        let pieces = tree
            .files()
            .flat_map(|(p, _, _)| {
                let d = &files.iter().find(|f| f.0 == p).unwrap().1;
                d.chunks(ps as usize).map(sha1_of).collect::<Vec<_>>()
            })
            .collect();
        let meta = Arc::new(FileMeta {
            name: "proj".into(),
            size: tree.total_size(),
            piece_size: ps,
            sha1: tree.digest(),
            pieces,
            tree: Some(tree),
        });
        meta.check().unwrap();
        let (part, existed) =
            PartFile::open(ddir(dir.path()), "proj".as_ref(), meta.clone()).unwrap();
        assert!(!existed);
        let staging = dir.path().join(".proj.minitorr-part");
        assert_eq!(
            std::fs::metadata(&staging).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let part = Arc::new(part);
        let store = part.storage();
        let src = |p: u32| {
            let loc = store.layout().locate(p).unwrap();
            let d = &files[loc.file].1;
            d[loc.offset as usize..loc.offset as usize + loc.len as usize].to_vec()
        };
        // Crash after some pieces: resume finds exactly those.
        part.write_piece(4, &src(4)).unwrap();
        part.write_piece(1, &src(1)).unwrap();
        drop(part);
        let (part, existed) =
            PartFile::open(ddir(dir.path()), "proj".as_ref(), meta.clone()).unwrap();
        assert!(existed);
        assert_eq!(
            part.scan().unwrap().iter_set().collect::<Vec<_>>(),
            vec![1, 4]
        );
        let part = Arc::new(part);
        let hasher = WholeFileHasher::start(part.clone()).unwrap();
        for p in (0..meta.piece_count()).rev() {
            part.write_piece(p, &src(p)).unwrap();
            hasher.piece(p, (p % 2 == 0).then(|| Bytes::from(src(p))));
        }
        assert_eq!(
            hasher.finish().unwrap(),
            vec![
                Some(sha1_of(&files[0].1)),
                Some(sha1_of(b"")),
                Some(sha1_of(b"last"))
            ]
        );
        // Something already at the final name: never replaced.
        std::fs::create_dir(dir.path().join("proj")).unwrap();
        std::fs::write(dir.path().join("proj/mine"), b"x").unwrap();
        assert!(matches!(
            part.finish("proj".as_ref()),
            Err(StorageError::Exists { .. })
        ));
        std::fs::remove_dir_all(dir.path().join("proj")).unwrap();
        part.finish("proj".as_ref()).unwrap();
        for (p, d) in &files {
            assert_eq!(&std::fs::read(dir.path().join("proj").join(p)).unwrap(), d);
        }
        assert!(dir.path().join("proj/void").is_dir());
        assert!(!staging.exists());
        assert_eq!(part.tree_files().unwrap().len(), 3);
    }

    /// Cancelling removes the staging tree, a link planted inside it as a link only.
    #[test]
    fn removing_a_staging_tree_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"mine").unwrap();
        let st = dir.path().join(".proj.minitorr-part");
        std::fs::create_dir_all(st.join("a/b")).unwrap();
        std::fs::write(st.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), st.join("a/link")).unwrap();
        assert!(remove_part_file(&dir.path().join("proj")).unwrap());
        assert!(!st.exists());
        assert_eq!(std::fs::read(outside.path().join("keep")).unwrap(), b"mine");
    }
}

//! A directory tree as a [`FileSet`]: each file of the item is its own file on disk, at its
//! item path under one root directory.
//!
//! Local safety: the root is opened once (`O_DIRECTORY|O_NOFOLLOW`) and every later open is
//! relative to that handle with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`: a symlink anywhere on the way (a file swapped for a link to
//! `~/.ssh/id_ed25519`, a sub-directory swapped for a link to `/etc`) makes the open fail
//! with `ELOOP`; nothing is ever followed out of the tree, and the path cannot climb out
//! with `..` (item paths have none anyway: [`minitorr_proto::item::validate_item_path`]).
//! Directories are created with `mkdirat` relative to their parent's handle, files with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` mode 0600; an existing file is reused only if it is a regular
//! file of ours with one link.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

use minitorr_proto::item::{EntryKind, Tree};
use minitorr_proto::private_dir::own_uid;
use minitorr_proto::types::FileMeta;

use super::FileSet;
use crate::sharing::hasher::FileStamp;

/// Open handles kept at most per tree; beyond this the least recently inserted is closed.
const OPEN_FILES_MAX: usize = 64;

fn resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// Open `rel` under `root` without following any symlink on the way nor leaving `root`.
pub fn open_beneath(root: impl AsFd, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    rustix::fs::openat2(root, rel, flags | OFlags::CLOEXEC, mode, resolve()).map_err(|e| {
        if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::XDEV {
            io::Error::other(format!(
                "{rel}: a symbolic link is on the way; not following it"
            ))
        } else if e == rustix::io::Errno::NOTDIR && flags.contains(OFlags::DIRECTORY) {
            io::Error::other(format!(
                "{rel}: not a directory (a file or a symbolic link is in the way); not following it"
            ))
        } else {
            io::Error::from(e)
        }
    })
}

/// Open the directory `rel` under `root` (`""` is the root itself).
pub fn open_dir_beneath(root: impl AsFd, rel: &str) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    open_beneath(
        root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        Mode::empty(),
    )
}

/// Open a directory by path (its last component must not be a symlink).
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        if e == rustix::io::Errno::NOTDIR || e == rustix::io::Errno::LOOP {
            io::Error::other(format!(
                "{} is not a directory (or is a symbolic link)",
                path.display()
            ))
        } else {
            io::Error::from(e)
        }
    })
}

/// The item paths of a meta's files, in layout order.
pub fn file_paths(meta: &FileMeta) -> Vec<String> {
    match &meta.tree {
        Some(t) => t.files().map(|(p, _, _)| p.to_owned()).collect(),
        None => vec![meta.name.clone()],
    }
}

/// Where each file of a tree (layout order) is under the root, without a `String` per file:
/// the item's own listing (the `Arc` the download, its records and the share hold anyway)
/// indexed by file, with the rare file whose name differs on disk (Unicode normalisation)
/// overridden. A 100,000-file tree's paths copied out cost ~4 MB per copy.
pub struct TreePaths {
    meta: Arc<FileMeta>,
    /// Index into `meta.tree.entries` of each file, layout order.
    entries: Vec<u32>,
    /// Files whose path on disk is not their item path.
    disk: HashMap<usize, String>,
}

impl TreePaths {
    /// The item paths of `meta`'s files, with `disk` overrides (file index → path on disk).
    pub fn new(meta: Arc<FileMeta>, disk: HashMap<usize, String>) -> TreePaths {
        let entries = match &meta.tree {
            Some(t) => t
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| matches!(e.kind, EntryKind::File { .. }))
                .map(|(i, _)| i as u32)
                .collect(),
            None => Vec::new(),
        };
        TreePaths {
            meta,
            entries,
            disk,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// File `i`'s path relative to the root.
    pub fn get(&self, i: usize) -> &str {
        if let Some(p) = self.disk.get(&i) {
            return p;
        }
        let t = self.meta.tree.as_ref().expect("a tree");
        &t.entries[self.entries[i] as usize].path
    }
}

/// Read-only (a shared tree) or read-write (a download's staging tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

pub struct TreeFiles {
    root: OwnedFd,
    root_path: PathBuf,
    paths: TreePaths,
    access: Access,
    /// For a shared tree: each file's stamp when hashed; a file that no longer matches is
    /// never served.
    stamps: Option<Vec<FileStamp>>,
    open: Mutex<HashMap<usize, Arc<File>>>,
}

impl TreeFiles {
    /// A shared tree rooted at the directory `root` (already opened), whose files must still
    /// match `stamps` (layout order).
    /// `paths` may differ from the item paths in Unicode normalisation.
    pub fn shared(
        root: OwnedFd,
        root_path: PathBuf,
        paths: TreePaths,
        stamps: Vec<FileStamp>,
    ) -> TreeFiles {
        TreeFiles {
            root,
            root_path,
            paths,
            access: Access::Read,
            stamps: Some(stamps),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A download's tree under `root` (already created by [`create_tree`]).
    pub fn writable(root: OwnedFd, root_path: PathBuf, meta: Arc<FileMeta>) -> TreeFiles {
        TreeFiles {
            root,
            root_path,
            paths: TreePaths::new(meta, HashMap::new()),
            access: Access::Write,
            stamps: None,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    fn open_file(&self, i: usize) -> io::Result<File> {
        let rel = self.paths.get(i);
        let flags = match self.access {
            Access::Read => OFlags::RDONLY,
            Access::Write => OFlags::RDWR,
        } | OFlags::NOFOLLOW
            | OFlags::NONBLOCK;
        let fd = open_beneath(&self.root, rel, flags, Mode::empty())?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other(format!("{rel} is not a regular file")));
        }
        if self.access == Access::Write && (st.st_uid != own_uid() || st.st_nlink != 1) {
            return Err(io::Error::other(format!(
                "{rel} is not a file this download created (owner or link count changed)"
            )));
        }
        let file = File::from(fd);
        if let Some(stamps) = &self.stamps {
            if FileStamp::of_file(&file)? != stamps[i] {
                return Err(io::Error::other(format!(
                    "{rel} is no longer the file that was shared"
                )));
            }
        }
        Ok(file)
    }
}

impl FileSet for TreeFiles {
    fn file(&self, i: usize) -> io::Result<Arc<File>> {
        if i >= self.paths.len() {
            return Err(io::Error::other(format!("no file {i} in the tree")));
        }
        if let Some(f) = self.open.lock().expect("lock").get(&i) {
            return Ok(f.clone());
        }
        // Opened outside the lock (a cold disk must not stall other pieces' reads).
        let f = Arc::new(self.open_file(i)?);
        let mut open = self.open.lock().expect("lock");
        if open.len() >= OPEN_FILES_MAX {
            if let Some(&k) = open.keys().next() {
                open.remove(&k);
            }
        }
        Ok(open.entry(i).or_insert(f).clone())
    }

    fn unchanged(&self, i: usize) -> bool {
        let Some(stamps) = &self.stamps else {
            return true;
        };
        // The handle we serve from: edited or truncated in place shows in its stamp.
        match self.file(i) {
            Ok(f) => FileStamp::of_file(&f).ok() == Some(stamps[i]),
            Err(_) => false,
        }
    }

    fn flush(&self) -> io::Result<()> {
        for i in 0..self.paths.len() {
            self.file(i)?.sync_data()?;
        }
        rustix::fs::fsync(&self.root)?;
        Ok(())
    }
}

/// Create (or find again, on resume) every directory and file of `tree` under `root`, files
/// sized exactly. Returns whether any file existed already (its pieces must be re-verified).
/// Refuses anything not created by us: a symlink, a FIFO, a file of another user or with
/// other links.
pub fn create_tree(root: &OwnedFd, tree: &Tree) -> io::Result<bool> {
    create_tree_only(root, tree, None)
}

/// [`create_tree`] for a selective download: only the files set in `wanted` (indexed like
/// [`minitorr_proto::item::Layout::files`]) are created, with their directories; empty
/// directories of the tree always are.
pub fn create_tree_only(root: &OwnedFd, tree: &Tree, wanted: Option<&[bool]>) -> io::Result<bool> {
    let mut existed = false;
    let mut dirs_made: std::collections::HashSet<String> = Default::default();
    let mut file_index = 0usize;
    for e in &tree.entries {
        if matches!(e.kind, EntryKind::File { .. }) {
            file_index += 1;
            if wanted.is_some_and(|w| !w[file_index - 1]) {
                continue;
            }
        }
        let (parent, name) = match e.path.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", e.path.as_str()),
        };
        make_dirs(root, parent, &mut dirs_made)?;
        match e.kind {
            EntryKind::Dir => make_dirs(root, &e.path, &mut dirs_made)?,
            EntryKind::File { size, .. } => {
                let pfd = open_dir_beneath(root, parent)?;
                existed |= create_file(&pfd, name, &e.path, size)?;
            }
        }
    }
    Ok(existed)
}

fn make_dirs(
    root: &OwnedFd,
    rel: &str,
    made: &mut std::collections::HashSet<String>,
) -> io::Result<()> {
    if rel.is_empty() || made.contains(rel) {
        return Ok(());
    }
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    };
    make_dirs(root, parent, made)?;
    let pfd = open_dir_beneath(root, parent)?;
    match rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(io::Error::other(format!("cannot create {rel}/: {e}"))),
    }
    // Whatever is there now must be a real directory of ours (not a planted link).
    let fd = open_dir_beneath(root, rel)?;
    let st = rustix::fs::fstat(&fd)?;
    if st.st_uid != own_uid() {
        return Err(io::Error::other(format!(
            "{rel}/ is owned by uid {}, not by you",
            st.st_uid
        )));
    }
    made.insert(rel.to_owned());
    Ok(())
}

/// Create one file (0600, exclusive) or reuse our own; sized to `size`. True if it existed.
fn create_file(parent: &OwnedFd, name: &str, rel: &str, size: u64) -> io::Result<bool> {
    let rw = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let (fd, existed) = match rustix::fs::openat(
        parent,
        name,
        rw | OFlags::CREATE | OFlags::EXCL,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => (fd, false),
        Err(rustix::io::Errno::EXIST) => {
            let fd = rustix::fs::openat(parent, name, rw | OFlags::NONBLOCK, Mode::empty())
                .map_err(|e| {
                    if e == rustix::io::Errno::LOOP {
                        io::Error::other(format!("{rel} is a symbolic link; not following it"))
                    } else {
                        io::Error::from(e)
                    }
                })?;
            let st = rustix::fs::fstat(&fd)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
                || st.st_uid != own_uid()
                || st.st_nlink != 1
            {
                return Err(io::Error::other(format!(
                    "{rel} was not created by this download (not a regular file of yours with \
                     one link); remove it and download again"
                )));
            }
            (fd, true)
        }
        Err(e) => return Err(io::Error::other(format!("cannot create {rel}: {e}"))),
    };
    let file = File::from(fd);
    if file.metadata()?.len() != size {
        file.set_len(0)?;
        if size > 0 {
            match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size) {
                Ok(()) => {}
                Err(rustix::io::Errno::OPNOTSUPP) => file.set_len(size)?,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharing::hasher::sha1_of;
    use crate::storage::Storage;
    use minitorr_proto::item::TreeEntry;
    use minitorr_proto::types::Sha1Hash;
    use proptest::prelude::*;

    fn meta_of(files: &[(String, Vec<u8>)], dirs: &[&str], ps: u32) -> FileMeta {
        let mut entries: Vec<TreeEntry> = files
            .iter()
            .map(|(p, d)| TreeEntry::file(p.clone(), d.len() as u64, sha1_of(d)))
            .collect();
        entries.extend(dirs.iter().map(|d| TreeEntry::dir(*d)));
        let mut tree = Tree { entries };
        tree.sort();
        let mut pieces = Vec::<Sha1Hash>::new();
        for (p, _, _) in tree.files() {
            let d = &files.iter().find(|(q, _)| q == p).unwrap().1;
            pieces.extend(d.chunks(ps as usize).map(sha1_of));
        }
        FileMeta {
            name: "item".into(),
            size: tree.total_size(),
            piece_size: ps,
            sha1: tree.digest(),
            pieces,
            tree: Some(tree),
        }
    }

    fn piece_data(meta: &FileMeta, files: &[(String, Vec<u8>)], s: &Storage, p: u32) -> Vec<u8> {
        let loc = s.layout().locate(p).unwrap();
        let path = &file_paths(meta)[loc.file];
        let d = &files.iter().find(|(q, _)| q == path).unwrap().1;
        d[loc.offset as usize..loc.offset as usize + loc.len as usize].to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Random trees: pieces written in random order read back equal, every file on disk
        /// equals its source, empty files and empty directories exist.
        #[test]
        fn random_trees_round_trip(
            sizes in proptest::collection::vec((0usize..3, 0usize..40_000), 1..12),
            order_seed in any::<u64>(),
        ) {
            let ps = 16 * 1024;
            let files: Vec<(String, Vec<u8>)> = sizes.iter().enumerate().map(|(i, &(depth, size))| {
                let mut p = String::new();
                for d in 0..depth { p.push_str(&format!("d{d}/")); }
                p.push_str(&format!("f{i}"));
                (p, (0..size).map(|b| (b * 7 + i) as u8).collect())
            }).collect();
            let meta = meta_of(&files, &["empty"], ps);
            meta.check().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let root = open_root(dir.path()).unwrap();
            prop_assert!(!create_tree(&root, meta.tree.as_ref().unwrap()).unwrap());
            let s = Storage::new(&meta, Box::new(TreeFiles::writable(root, dir.path().into(), Arc::new(meta.clone()))));
            prop_assert_eq!(s.piece_count() as usize, meta.pieces.len());
            let mut order: Vec<u32> = (0..s.piece_count()).collect();
            let mut x = order_seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for &p in &order {
                s.write_piece(p, &piece_data(&meta, &files, &s, p)).unwrap();
            }
            let mut buf = Vec::new();
            for p in 0..s.piece_count() {
                s.read_piece(p, &mut buf).unwrap();
                prop_assert_eq!(sha1_of(&buf), meta.pieces[p as usize]);
            }
            for (p, d) in &files {
                prop_assert_eq!(&std::fs::read(dir.path().join(p)).unwrap(), d);
            }
            prop_assert!(dir.path().join("empty").is_dir());
            // Resume finds every file again.
            let root = open_root(dir.path()).unwrap();
            prop_assert!(create_tree(&root, meta.tree.as_ref().unwrap()).unwrap());
        }
    }

    /// A symlink planted for a file or a directory of the tree is never followed, neither
    /// when creating nor when writing.
    #[test]
    fn planted_symlinks_are_never_followed() {
        let files = vec![
            ("sub/a".to_string(), vec![1u8; 100]),
            ("b".to_string(), vec![2u8; 100]),
        ];
        let meta = meta_of(&files, &[], 16 * 1024);
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();

        // A directory of the tree is a link to somewhere else.
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sub")).unwrap();
        let root = open_root(dir.path()).unwrap();
        let e = create_tree(&root, meta.tree.as_ref().unwrap()).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!outside.path().join("a").exists());

        // A file of the tree is a link to the victim.
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("b")).unwrap();
        let root = open_root(dir.path()).unwrap();
        assert!(create_tree(&root, meta.tree.as_ref().unwrap()).is_err());

        // Swapped after creation: writes refuse too.
        let dir = tempfile::tempdir().unwrap();
        let root = open_root(dir.path()).unwrap();
        create_tree(&root, meta.tree.as_ref().unwrap()).unwrap();
        std::fs::remove_file(dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("b")).unwrap();
        std::fs::remove_dir_all(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sub")).unwrap();
        let s = Storage::new(
            &meta,
            Box::new(TreeFiles::writable(
                root,
                dir.path().into(),
                Arc::new(meta.clone()),
            )),
        );
        for p in 0..s.piece_count() {
            assert!(s.write_piece(p, &[9u8; 100]).is_err());
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
        assert!(!outside.path().join("a").exists());
    }
}

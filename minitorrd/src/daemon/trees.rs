//! Directory trees as items (issue #13): `upload_file DIR`, and what the share records of a
//! tree need from the rest of the daemon (checking a tree on disk, opening it for serving,
//! re-hashing it). The piece I/O itself is the storage seam's ([`crate::storage`]).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minitorr_proto::control::{ErrorKind, ErrorReply, Response, SkippedEntry};
use minitorr_proto::names;
use minitorr_proto::tracker::{self, Call};
use minitorr_proto::types::{FileMeta, FileSummary};

use super::{fail, Daemon, DownloadEntry, Reply};
use crate::download::storage::{part_name_for, DestDir, StorageError};
use crate::sharing::hasher::{hash_file, FileStamp};
use crate::sharing::SharedFile;
use crate::state::ShareRecord;
use crate::state::{DownloadRecord, RecordState};
use crate::storage::tree::{open_beneath, open_root};
use crate::storage::walk::{hash_tree, SharedTreeFile};

fn invalid(msg: impl Into<String>) -> ErrorReply {
    fail(ErrorKind::InvalidInput, msg)
}

impl Daemon {
    /// Share the directory at `path` (already canonical) as one item named after it (or
    /// `name`): walked without following links, hashed once, registered, served.
    pub(super) async fn upload_tree(
        &self,
        path: PathBuf,
        group: String,
        name: Option<String>,
    ) -> Reply<Response> {
        let session = self.current_session()?;
        let name = match name {
            Some(n) => n,
            None => {
                let own = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                    invalid(format!(
                        "{} has no usable (UTF-8) name; give one with --name",
                        path.display()
                    ))
                })?;
                names::file_name(own)
                    .map_err(|e| invalid(format!("{e}; share it under another name with --name")))?
            }
        };
        // Fail fast (before hashing the tree) if the group is unknown or we are not a member.
        // A tree the group already has under this name is hashed with its piece size, so the
        // same tree joins that entry (see `upload_file`).
        let existing_piece_size = match self
            .call(Call::ListFiles {
                group: group.clone(),
            })
            .await?
        {
            tracker::Response::Files(files) => files
                .iter()
                .find(|f| f.name == name && f.is_tree)
                .map(|f| f.piece_size),
            _ => None,
        };
        let ps = existing_piece_size.or(self.cfg.piece_size);
        let (p, n) = (path.clone(), name.clone());
        let hashed = self
            .pool
            .run(move || hash_tree(&p, &n, ps))
            .await
            .map_err(|e| invalid(e.to_string()))?;
        let meta = Arc::new(hashed.meta);
        tracing::info!(item = %name, %group, files = meta.file_count(), size = meta.size, skipped = hashed.skipped.len(), "tree hashed");
        let _ops = self.share_ops.lock().await;
        let call = Call::Share {
            group: group.clone(),
            meta: meta.clone(),
            complete: true,
        };
        self.call_with(Some(&session.token), call).await?;
        let shared = SharedFile::complete_tree(
            group.clone(),
            meta.clone(),
            path.clone(),
            hashed.root_stamp,
            &hashed.files,
        )
        .map_err(|e| invalid(format!("cannot open {}: {e}", path.display())))?;
        self.shares.insert(shared);
        {
            let mut state = self.state.lock().await;
            state.user(&session.user).upsert_share(ShareRecord {
                group: group.clone(),
                path,
                stamp: hashed.root_stamp,
                meta: meta.clone(),
                withdrawn: None,
                tree_files: Arc::new(hashed.files),
            });
            self.save_state(&state).await;
        }
        self.shares.changed().notify_one();
        let summary = match self
            .call(Call::ListFiles {
                group: group.clone(),
            })
            .await
        {
            Ok(tracker::Response::Files(files)) => files.into_iter().find(|f| f.name == name),
            _ => None,
        };
        let mut file = summary.unwrap_or(FileSummary {
            group,
            name,
            size: meta.size,
            piece_size: meta.piece_size,
            sha1: meta.sha1,
            seeders_online: 1,
            partial_online: 0,
            file_count: meta.file_count() as u64,
            is_tree: true,
            piece_count: meta.piece_count(),
        });
        // The tracker's summary is the source of truth, but it must be our item.
        if file.sha1 != meta.sha1 {
            file.sha1 = meta.sha1;
        }
        let skipped = hashed
            .skipped
            .into_iter()
            .map(|s| SkippedEntry {
                path: s.path,
                what: s.what,
            })
            .collect();
        Ok(Response::UploadedTree { file, skipped })
    }
}

/// The stamp of what a share record points at, as the share watcher compares it: a single
/// file's own stamp; for a tree, the recorded root stamp if the root is the same directory
/// and every file still matches its stamp, a stamp that differs from it if anything changed,
/// `None` if the root is gone. Blocking (a tree costs one open and stat per file).
pub(crate) fn stamp_now(rec: &ShareRecord) -> Option<FileStamp> {
    if rec.meta.tree.is_none() {
        return FileStamp::of(&rec.path).ok();
    }
    let root = open_root(&rec.path).ok()?;
    let st = rustix::fs::fstat(&root).ok()?;
    let changed = FileStamp {
        mtime_ns: rec.stamp.mtime_ns ^ 1,
        ..rec.stamp
    };
    if (st.st_dev, st.st_ino) != (rec.stamp.dev, rec.stamp.ino) {
        return Some(changed);
    }
    let Some(tree) = &rec.meta.tree else {
        return None;
    };
    if tree.file_count() != rec.tree_files.len() {
        return Some(changed);
    }
    let same = tree
        .files()
        .zip(rec.tree_files.iter())
        .all(|((item, _, _), f)| {
            open_beneath(
                &root,
                f.disk(item),
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW,
                rustix::fs::Mode::empty(),
            )
            .ok()
            .and_then(|fd| FileStamp::of_file(&std::fs::File::from(fd)).ok())
                == Some(f.stamp)
        });
    Some(if same { rec.stamp } else { changed })
}

/// Open a share record for serving (a file, or a tree beneath its root).
pub(crate) fn open_share(rec: &ShareRecord, stamp: FileStamp) -> io::Result<Arc<SharedFile>> {
    let meta = rec.meta.clone();
    if rec.meta.tree.is_some() {
        SharedFile::complete_tree(
            rec.group.clone(),
            meta,
            rec.path.clone(),
            stamp,
            &rec.tree_files,
        )
    } else {
        SharedFile::complete(rec.group.clone(), meta, rec.path.clone(), stamp)
    }
}

/// What is at `path` now, hashed as an item of `meta`'s kind: its metadata, stamp and (for a
/// tree) its files. Blocking.
pub(crate) fn rehash(
    path: &Path,
    meta: &FileMeta,
) -> io::Result<(FileMeta, FileStamp, Vec<SharedTreeFile>)> {
    if meta.tree.is_some() {
        let h = hash_tree(path, &meta.name, Some(meta.piece_size)).map_err(io::Error::other)?;
        Ok((h.meta, h.root_stamp, h.files))
    } else {
        let (m, s) = hash_file(path, &meta.name, meta.piece_size)?;
        Ok((m, s, Vec::new()))
    }
}

/// What the share watcher watches: shared files by path, and the directories of shared
/// trees (any event inside one of them is ours: a tree's directories hold its files). Not
/// every file of a tree by path: 100,000 absolute paths were ~15 MB, rebuilt every sweep.
#[derive(Debug, Default)]
pub(crate) struct WatchSet {
    pub files: HashSet<PathBuf>,
    pub tree_dirs: HashSet<PathBuf>,
}

impl WatchSet {
    /// Does an inotify event on `p` concern a share?
    pub fn concerns(&self, p: &Path) -> bool {
        self.files.contains(p)
            || self.tree_dirs.contains(p)
            || p.parent().is_some_and(|d| self.tree_dirs.contains(d))
    }

    /// The directories to watch.
    pub fn dirs(&self) -> HashSet<PathBuf> {
        self.files
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .chain(self.tree_dirs.iter().cloned())
            .collect()
    }
}

/// Add what the share watcher watches for a record: the file, or the directories of a tree
/// (its root and every directory holding one of its files).
pub(crate) fn watch_paths(rec: &ShareRecord, out: &mut WatchSet) {
    let Some(tree) = &rec.meta.tree else {
        out.files.insert(rec.path.clone());
        return;
    };
    out.files.insert(rec.path.clone());
    out.tree_dirs.insert(rec.path.clone());
    let mut dirs: HashSet<&str> = HashSet::new();
    for ((item, _, _), f) in tree.files().zip(rec.tree_files.iter()) {
        if let Some((dir, _)) = f.disk(item).rsplit_once('/') {
            dirs.insert(dir);
        }
    }
    for d in dirs {
        out.tree_dirs.insert(rec.path.join(d));
    }
}

/// Most `--only` patterns one download may have.
const MAX_GLOBS: usize = 256;

/// Check `--only` patterns (count, length, syntax) before anything else is done.
pub(crate) fn check_globs(only: &[String]) -> Result<(), String> {
    if only.len() > MAX_GLOBS {
        return Err(format!("at most {MAX_GLOBS} --only patterns"));
    }
    glob_set(only).map(|_| ())
}

fn glob_set(only: &[String]) -> Result<globset::GlobSet, String> {
    let mut b = globset::GlobSetBuilder::new();
    for g in only {
        if g.len() > minitorr_proto::item::MAX_ITEM_PATH_LEN {
            return Err("an --only pattern is too long".into());
        }
        let glob = globset::GlobBuilder::new(g)
            // `*` stays within one path component; `**` crosses them.
            .literal_separator(true)
            .build()
            .map_err(|e| format!("--only {g:?}: {e}"))?;
        b.add(glob);
    }
    b.build().map_err(|e| e.to_string())
}

/// The files (layout order) a download with `only` fetches: `None` for everything. A file
/// is selected if a pattern matches its path or one of its directories (`docs` selects
/// everything under `docs/`). Refused: patterns on a single file, or matching nothing.
pub(crate) fn wanted_files(meta: &FileMeta, only: &[String]) -> Result<Option<Vec<bool>>, String> {
    if only.is_empty() {
        return Ok(None);
    }
    let Some(tree) = &meta.tree else {
        return Err(format!(
            "{} is a single file; --only selects files inside a directory tree",
            meta.name
        ));
    };
    let set = glob_set(only)?;
    let wanted: Vec<bool> = tree
        .files()
        .map(|(path, _, _)| {
            set.is_match(path)
                || path
                    .match_indices('/')
                    .any(|(i, _)| set.is_match(&path[..i]))
        })
        .collect();
    if !wanted.iter().any(|&w| w) {
        return Err(format!(
            "no file of {} matches --only {}",
            meta.name,
            only.join(" --only ")
        ));
    }
    Ok(Some(wanted))
}

impl Daemon {
    /// A finished selective download of `file` in `group` at `dest` (the tree itself, or the
    /// directory holding it).
    pub(super) fn selective_record(
        &self,
        group: &str,
        file: &str,
        dest: &Path,
    ) -> Option<DownloadRecord> {
        let list = self.downloads.lock().expect("lock");
        list.iter().find_map(|e| {
            let r = match e {
                DownloadEntry::Record(r) => r.clone(),
                DownloadEntry::Live(d) if d.is_finished() => {
                    let s = d.status();
                    if s.state != minitorr_proto::control::DownloadState::Complete {
                        return None;
                    }
                    DownloadRecord {
                        group: d.group.clone(),
                        dest: d.dest.clone(),
                        meta: d.meta.clone(),
                        state: RecordState::Complete,
                        error: None,
                        bytes_done: s.bytes_done,
                        pieces_done: s.pieces_done,
                        only: d.only.clone(),
                    }
                }
                DownloadEntry::Live(_) => return None,
            };
            (r.group == group
                && r.meta.name == file
                && r.state == RecordState::Complete
                && !r.only.is_empty()
                && (r.dest == dest || r.dest == dest.join(file)))
            .then_some(r)
        })
    }

    /// Fetch more of a tree downloaded selectively: the tree goes back into its staging
    /// directory (so it reappears only complete and verified), the files it holds are
    /// re-verified there (never fetched again), and the download runs on with the new
    /// selection — the old patterns plus the new ones, or everything if none is given.
    pub(super) async fn grow_selection(
        self: &Arc<Self>,
        prev: DownloadRecord,
        only: Vec<String>,
    ) -> Reply<Response> {
        let mut only = if only.is_empty() {
            Vec::new()
        } else {
            let mut all = prev.only.clone();
            all.extend(only);
            all.sort();
            all.dedup();
            all
        };
        if only.len() > MAX_GLOBS {
            only.truncate(MAX_GLOBS);
        }
        let reservation = self.reserve(&prev.group, &prev.meta.name, false)?;
        if let Some(s) = self.shares.remove(&prev.group, &prev.meta.name) {
            drop(s);
            self.live.close_file(&prev.group, &prev.meta.name);
        }
        let d = prev.dest.clone();
        self.pool
            .run(move || unfinish_tree(&d))
            .await
            .map_err(|e| fail(ErrorKind::Refused, e.to_string()))?;
        let started = self
            .start_download(
                prev.group.clone(),
                prev.meta.name.clone(),
                prev.dest.clone(),
                Some(prev.meta.sha1),
                only,
            )
            .await;
        drop(reservation);
        Ok(Response::DownloadStarted(started?.status()))
    }
}

impl Daemon {
    /// Seed again what a finished selective download holds (after a restart or a new
    /// login): its selected files are re-verified piece by piece where they lie (`dest`), and
    /// the verified pieces are served as a partial holder (`Share { complete: false }`), like
    /// a download's part file. Never a share record: that would announce the whole item.
    pub(super) async fn reseed_selection(
        self: &Arc<Self>,
        session: &crate::tracker::Session,
        rec: &DownloadRecord,
    ) -> Result<(), String> {
        let Some(wanted) = wanted_files(&rec.meta, &rec.only)? else {
            return Err("not a selective download".into());
        };
        if self.shares.get(&rec.group, &rec.meta.name).is_some() {
            return Ok(()); // a download or a complete share of it serves it already
        }
        let (meta, dest) = (rec.meta.clone(), rec.dest.clone());
        let started = std::time::Instant::now();
        let (store, have) = self
            .pool
            .run(move || open_selection(&dest, &meta, &wanted))
            .await
            .map_err(|e| format!("cannot read {}: {e}", rec.dest.display()))?;
        crate::metrics::global().hashed(crate::metrics::Hashing::Reverify, started.elapsed());
        let pieces = have.count();
        let shared = SharedFile::partial(
            rec.group.clone(),
            rec.meta.clone(),
            rec.dest.clone(),
            Arc::new(store),
            have,
        );
        // Like every share change, under `share_ops` across the tracker call.
        let _ops = self.share_ops.lock().await;
        // A download started meanwhile owns the entry (it re-verifies on its own).
        if self.live_download(&rec.group, &rec.meta.name).is_some()
            || self.shares.get(&rec.group, &rec.meta.name).is_some()
        {
            return Ok(());
        }
        self.shares.insert(shared);
        let call = Call::Share {
            group: rec.group.clone(),
            meta: rec.meta.clone(),
            complete: false,
        };
        if let Err(e) = self.call_with(Some(&session.token), call).await {
            self.shares.remove(&rec.group, &rec.meta.name);
            return Err(format!("tracker refused: {}", e.message));
        }
        tracing::info!(file = %rec.meta.name, group = %rec.group, pieces, "seeding the files of a selective download again");
        Ok(())
    }
}

/// A finished selective download's tree at `dest`, opened for serving the `wanted` files
/// (layout order): each is opened beneath the root (never through a link) and stamped, and
/// its pieces re-verified; only matching pieces are in the returned bitfield, and a file is
/// served only while it keeps that stamp. Blocking.
fn open_selection(
    dest: &Path,
    meta: &Arc<FileMeta>,
    wanted: &[bool],
) -> io::Result<(crate::storage::Storage, minitorr_proto::types::Bitfield)> {
    let root = open_root(dest)?;
    let st = rustix::fs::fstat(&root)?;
    if st.st_uid != minitorr_proto::private_dir::own_uid() {
        return Err(io::Error::other(format!(
            "{} is owned by uid {}, not by you",
            dest.display(),
            st.st_uid
        )));
    }
    let tree = meta
        .tree
        .as_ref()
        .ok_or_else(|| io::Error::other("not a tree"))?;
    // A file that is not held (not selected, or gone) gets a stamp nothing matches.
    let none = FileStamp {
        size: u64::MAX,
        mtime_ns: 0,
        dev: 0,
        ino: 0,
    };
    let mut stamps = vec![none; wanted.len()];
    for (i, (path, _, _)) in tree.files().enumerate() {
        if !wanted.get(i).copied().unwrap_or(false) {
            continue;
        }
        let fd = open_beneath(
            &root,
            path,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::NONBLOCK,
            rustix::fs::Mode::empty(),
        );
        if let Ok(fd) = fd {
            let f = std::fs::File::from(fd);
            if f.metadata().is_ok_and(|m| m.is_file()) {
                if let Ok(s) = FileStamp::of_file(&f) {
                    stamps[i] = s;
                }
            }
        }
    }
    let paths = crate::storage::tree::TreePaths::new(meta.clone(), Default::default());
    let set = crate::storage::tree::TreeFiles::shared(root, dest.to_path_buf(), paths, stamps);
    let store = crate::storage::Storage::new(meta, Box::new(set));
    let mut have = minitorr_proto::types::Bitfield::new(meta.piece_count());
    let mut buf = Vec::new();
    for (i, f) in store.layout().files().iter().enumerate() {
        if !wanted.get(i).copied().unwrap_or(false) {
            continue;
        }
        for p in f.pieces() {
            // A file gone or changed is simply not held (its pieces stay unset).
            if store.read_piece(p, &mut buf).is_ok()
                && crate::sharing::hasher::sha1_of(&buf) == meta.pieces[p as usize]
            {
                have.set(p);
            }
        }
    }
    Ok((store, have))
}

/// Move a finished tree at `dest` back to its staging name (never over anything): only a
/// real directory of ours, by handle.
fn unfinish_tree(dest: &Path) -> Result<(), StorageError> {
    let parent = DestDir::open(dest.parent().unwrap_or(Path::new("/")))?;
    let name = dest.file_name().unwrap_or_default();
    let fd = open_root(dest).map_err(|e| StorageError::Planted {
        path: dest.to_path_buf(),
        why: e.to_string(),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| StorageError::Io {
        what: "stat",
        path: dest.to_path_buf(),
        source: e.into(),
    })?;
    if st.st_uid != minitorr_proto::private_dir::own_uid() {
        return Err(StorageError::Planted {
            path: dest.to_path_buf(),
            why: format!("it is owned by uid {}, not by you", st.st_uid),
        });
    }
    parent.rename_noreplace(name, &part_name_for(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use minitorr_proto::item::{Tree, TreeEntry};
    use minitorr_proto::types::Sha1Hash;

    fn meta(paths: &[&str]) -> FileMeta {
        let mut tree = Tree {
            entries: paths
                .iter()
                .map(|p| TreeEntry::file(*p, 1, Sha1Hash([1; 20])))
                .collect(),
        };
        tree.sort();
        FileMeta {
            name: "proj".into(),
            size: tree.total_size(),
            piece_size: 16 * 1024,
            sha1: tree.digest(),
            pieces: vec![Sha1Hash([2; 20]); paths.len()],
            tree: Some(tree),
        }
    }

    #[test]
    fn globs_select_files_and_whole_directories() {
        let m = meta(&["a.txt", "docs/x.txt", "docs/deep/y.txt", "src/main.rs"]);
        let only =
            |g: &[&str]| wanted_files(&m, &g.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        // Layout order is canonical order: a.txt, docs/deep/y.txt, docs/x.txt, src/main.rs.
        assert_eq!(only(&[]).unwrap(), None);
        assert_eq!(
            only(&["*.txt"]).unwrap(),
            Some(vec![true, false, false, false]),
            "* stays within one directory"
        );
        assert_eq!(
            only(&["**/*.txt"]).unwrap(),
            Some(vec![true, true, true, false])
        );
        assert_eq!(
            only(&["docs"]).unwrap(),
            Some(vec![false, true, true, false]),
            "a directory selects everything under it"
        );
        assert_eq!(
            only(&["src/*", "a.{txt,md}"]).unwrap(),
            Some(vec![true, false, false, true])
        );
        assert!(only(&["nothing"]).unwrap_err().contains("no file of proj"));
        assert!(only(&["a["]).unwrap_err().contains("--only"));
        let single = FileMeta {
            tree: None,
            ..meta(&["f"])
        };
        assert!(wanted_files(&single, &["*".into()])
            .unwrap_err()
            .contains("single file"));
        assert!(check_globs(&vec!["*".to_string(); MAX_GLOBS + 1]).is_err());
    }
}

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

use super::{fail, Daemon, Reply};
use crate::sharing::hasher::{hash_file, FileStamp};
use crate::sharing::SharedFile;
use crate::state::ShareRecord;
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
        self.call(Call::ListFiles {
            group: group.clone(),
        })
        .await?;
        let (p, n, ps) = (path.clone(), name.clone(), self.cfg.piece_size);
        let hashed = self
            .pool
            .run(move || hash_tree(&p, &n, ps))
            .await
            .map_err(|e| invalid(e.to_string()))?;
        let meta = hashed.meta;
        tracing::info!(item = %name, %group, files = meta.file_count(), size = meta.size, skipped = hashed.skipped.len(), "tree hashed");
        let call = Call::Share {
            group: group.clone(),
            meta: meta.clone(),
            complete: true,
        };
        self.call_with(Some(&session.token), call).await?;
        let meta = Arc::new(meta);
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
                meta: (*meta).clone(),
                withdrawn: None,
                tree_files: hashed.files,
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
    let same = rec.tree_files.iter().all(|f| {
        open_beneath(
            &root,
            &f.disk_path,
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
pub(crate) fn open_share(
    rec: &ShareRecord,
    stamp: FileStamp,
) -> io::Result<Arc<SharedFile>> {
    let meta = Arc::new(rec.meta.clone());
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
        let h = hash_tree(path, &meta.name, meta.piece_size).map_err(io::Error::other)?;
        Ok((h.meta, h.root_stamp, h.files))
    } else {
        let (m, s) = hash_file(path, &meta.name, meta.piece_size)?;
        Ok((m, s, Vec::new()))
    }
}

/// The paths the share watcher watches for a record: the file, or every file of a tree (so
/// an inotify event on any of them, or in any of their directories, wakes it).
pub(crate) fn watch_paths(rec: &ShareRecord, out: &mut HashSet<PathBuf>) {
    out.insert(rec.path.clone());
    for f in &rec.tree_files {
        out.insert(rec.path.join(&f.disk_path));
    }
}

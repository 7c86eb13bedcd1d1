//! The set of files this daemon serves right now, complete or partial.
//!
//! A `SharedFile` is the single source of truth for "which pieces can we serve": downloads set
//! bits as pieces verify (partial seeding) and announce them on `have_tx`, so connected
//! downloaders learn about new pieces without asking.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::{Bytes, BytesMut};
use tokio::sync::{broadcast, Notify};

use minitorr_proto::types::{Bitfield, FileMeta};

use super::hasher::FileStamp;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShareKey {
    pub group: String,
    pub file: String,
}

pub struct SharedFile {
    pub group: String,
    pub meta: Arc<FileMeta>,
    path: RwLock<PathBuf>,
    file: File,
    have: Mutex<Bitfield>,
    /// Pieces set in `have` (kept so completion is O(1) per piece).
    have_count: std::sync::atomic::AtomicU32,
    complete: AtomicBool,
    /// Stamp of a complete on-disk file; serving stops if the file changes under us.
    stamp: Mutex<Option<FileStamp>>,
    stale: AtomicBool,
    have_tx: broadcast::Sender<u32>,
    /// Set when inserted into [`Shares`]: woken when serving finds the file changed, so the
    /// share watcher withdraws it from the tracker at once (detection on serve, last resort).
    stale_signal: std::sync::OnceLock<Arc<Notify>>,
    /// Initial seeding over every connection serving this file (applied only once complete).
    upload: Mutex<super::upload_policy::UploadPolicy>,
}

impl SharedFile {
    /// A complete file on disk, shared as-is. Opened without following a symlink, and only
    /// if it is the very file `stamp` describes (same device and inode, size and mtime): a
    /// path swapped for another file since it was stamped is refused, never served.
    pub fn complete(
        group: String,
        meta: Arc<FileMeta>,
        path: PathBuf,
        stamp: FileStamp,
    ) -> io::Result<Arc<Self>> {
        let file = super::hasher::open_shared(&path)?;
        if FileStamp::of_file(&file)? != stamp {
            return Err(io::Error::other(format!(
                "{} is no longer the file that was shared",
                path.display()
            )));
        }
        let have = Bitfield::full(meta.piece_count());
        Ok(Self::build(group, meta, path, file, have, Some(stamp)))
    }

    /// A file being downloaded: starts with the pieces already verified in `have`. `file` is
    /// a handle on the open part file (never re-opened by name).
    pub fn partial(
        group: String,
        meta: Arc<FileMeta>,
        part_path: PathBuf,
        file: File,
        have: Bitfield,
    ) -> Arc<Self> {
        Self::build(group, meta, part_path, file, have, None)
    }

    fn build(
        group: String,
        meta: Arc<FileMeta>,
        path: PathBuf,
        file: File,
        have: Bitfield,
        stamp: Option<FileStamp>,
    ) -> Arc<Self> {
        let (have_tx, _) = broadcast::channel(256);
        let complete = have.is_complete();
        let have_count = std::sync::atomic::AtomicU32::new(have.count());
        let meta_pieces = meta.piece_count();
        Arc::new(SharedFile {
            have_count,
            group,
            meta,
            path: RwLock::new(path),
            file,
            have: Mutex::new(have),
            complete: AtomicBool::new(complete),
            stamp: Mutex::new(stamp),
            stale: AtomicBool::new(false),
            have_tx,
            stale_signal: std::sync::OnceLock::new(),
            upload: Mutex::new(super::upload_policy::UploadPolicy::new(meta_pieces)),
        })
    }

    pub fn key(&self) -> ShareKey {
        ShareKey {
            group: self.group.clone(),
            file: self.meta.name.clone(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.path.read().expect("lock").clone()
    }

    pub fn have(&self) -> Bitfield {
        self.have.lock().expect("lock").clone()
    }

    pub fn has_piece(&self, piece: u32) -> bool {
        self.have.lock().expect("lock").get(piece)
    }

    /// A connection starts being served (see `upload_policy.rs`).
    pub fn upload_open(&self) -> super::upload_policy::ConnId {
        self.upload.lock().expect("lock").open()
    }

    pub fn upload_close(&self, conn: super::upload_policy::ConnId) {
        self.upload.lock().expect("lock").close(conn);
    }

    /// May `conn` get `piece` now? Always yes while we are only a partial holder.
    pub fn upload_decide(
        &self,
        conn: super::upload_policy::ConnId,
        piece: u32,
    ) -> super::upload_policy::Decision {
        if !self.is_complete() {
            return super::upload_policy::Decision::Serve;
        }
        self.upload.lock().expect("lock").decide(conn, piece)
    }

    pub fn upload_sent(&self, conn: super::upload_policy::ConnId, piece: u32) {
        self.upload.lock().expect("lock").sent(conn, piece);
    }

    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<u32> {
        self.have_tx.subscribe()
    }

    /// A verified piece is now on disk and may be served.
    pub fn add_piece(&self, piece: u32) {
        let mut have = self.have.lock().expect("lock");
        if !have.get(piece) {
            have.set(piece);
            let count = self.have_count.fetch_add(1, Ordering::AcqRel) + 1;
            if count == have.len() {
                self.complete.store(true, Ordering::Release);
            }
            let _ = self.have_tx.send(piece);
        }
    }

    /// The download finished and the file was renamed into place.
    pub fn completed_at(&self, final_path: &Path, stamp: FileStamp) {
        *self.path.write().expect("lock") = final_path.to_path_buf();
        *self.stamp.lock().expect("lock") = Some(stamp);
    }

    /// False once the on-disk file no longer matches what was shared (edited, truncated,
    /// deleted): we must never serve bytes that fail the piece hash.
    pub fn still_valid(&self) -> bool {
        if self.stale.load(Ordering::Relaxed) {
            return false;
        }
        let expected = *self.stamp.lock().expect("lock");
        if let Some(expected) = expected {
            let now = FileStamp::of(&self.path());
            if now.ok() != Some(expected) {
                tracing::warn!(file = %self.meta.name, group = %self.group, "shared file changed on disk; no longer serving it");
                self.stale.store(true, Ordering::Relaxed);
                if let Some(n) = self.stale_signal.get() {
                    n.notify_one();
                }
                return false;
            }
        }
        true
    }

    /// The open file, for zero-copy sends of verified pieces.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Read one piece (blocking: call from the blocking pool).
    pub fn read_piece(&self, piece: u32) -> io::Result<Bytes> {
        let len = self.meta.piece_len(piece) as usize;
        let mut buf = BytesMut::zeroed(len);
        self.file
            .read_exact_at(&mut buf, self.meta.piece_offset(piece))?;
        Ok(buf.freeze())
    }
}

/// What was served of one share, for `list_shares`. Kept per (group, file) across a
/// withdrawal and re-offer of the file (in memory: counts start again with the daemon).
#[derive(Default)]
pub struct ShareStats {
    uploaded: AtomicU64,
    /// Distinct members served at least one piece (bounded: counting stops at 65 536).
    peers: Mutex<HashSet<String>>,
}

impl ShareStats {
    pub fn uploaded(&self, bytes: u64) {
        self.uploaded.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn served(&self, user: &str) {
        let mut peers = self.peers.lock().expect("lock");
        if peers.len() < 65_536 && !peers.contains(user) {
            peers.insert(user.to_owned());
        }
    }

    /// (uploaded bytes, peers served)
    pub fn snapshot(&self) -> (u64, u32) {
        (
            self.uploaded.load(Ordering::Relaxed),
            self.peers.lock().expect("lock").len() as u32,
        )
    }
}

/// All files served, keyed by group and file name.
#[derive(Default)]
pub struct Shares {
    map: RwLock<HashMap<ShareKey, Arc<SharedFile>>>,
    stats: Mutex<HashMap<ShareKey, Arc<ShareStats>>>,
    /// Woken by a share found stale while serving, and when the set of shares changes.
    changed: Arc<Notify>,
}

impl Shares {
    pub fn insert(&self, f: Arc<SharedFile>) {
        let _ = f.stale_signal.set(self.changed.clone());
        self.map.write().expect("lock").insert(f.key(), f);
        self.changed.notify_one();
    }

    /// Woken when a share was found changed while serving, or shares were added.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Upload counters of a share (created on first use).
    pub fn stats(&self, group: &str, file: &str) -> Arc<ShareStats> {
        let key = ShareKey {
            group: group.into(),
            file: file.into(),
        };
        self.stats
            .lock()
            .expect("lock")
            .entry(key)
            .or_default()
            .clone()
    }

    /// Remove the entry only if `keep_if` says it is the one meant (e.g. the complete file
    /// at a given path, not a download of the same name started since).
    pub fn remove_if(
        &self,
        group: &str,
        file: &str,
        pred: impl FnOnce(&SharedFile) -> bool,
    ) -> Option<Arc<SharedFile>> {
        let key = ShareKey {
            group: group.into(),
            file: file.into(),
        };
        let mut map = self.map.write().expect("lock");
        if map.get(&key).is_some_and(|f| pred(f)) {
            map.remove(&key)
        } else {
            None
        }
    }

    pub fn get(&self, group: &str, file: &str) -> Option<Arc<SharedFile>> {
        let key = ShareKey {
            group: group.into(),
            file: file.into(),
        };
        self.map.read().expect("lock").get(&key).cloned()
    }

    pub fn remove(&self, group: &str, file: &str) -> Option<Arc<SharedFile>> {
        let key = ShareKey {
            group: group.into(),
            file: file.into(),
        };
        self.map.write().expect("lock").remove(&key)
    }

    pub fn remove_group(&self, group: &str) {
        self.take_group(group);
    }

    /// Remove every share of `group` and return them (to tell watchers which went).
    pub fn take_group(&self, group: &str) -> Vec<Arc<SharedFile>> {
        let mut map = self.map.write().expect("lock");
        let keys: Vec<ShareKey> = map.keys().filter(|k| k.group == group).cloned().collect();
        keys.into_iter().filter_map(|k| map.remove(&k)).collect()
    }

    pub fn clear(&self) {
        self.map.write().expect("lock").clear();
    }

    pub fn len(&self) -> usize {
        self.map.read().expect("lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

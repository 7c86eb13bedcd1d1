//! The set of files this daemon serves right now, complete or partial.
//!
//! A `SharedFile` is the single source of truth for "which pieces can we serve": downloads set
//! bits as pieces verify (partial seeding) and announce them on `have_tx`, so connected
//! downloaders learn about new pieces without asking.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::{Bytes, BytesMut};
use tokio::sync::{broadcast, Notify};

use minitorr_proto::types::{Bitfield, FileMeta};

use super::hasher::FileStamp;
use crate::storage::walk::SharedTreeFile;
use crate::storage::{tree::TreeFiles, Storage};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShareKey {
    pub group: String,
    pub file: String,
}

/// Sent on the taken channel instead of a connection id when initial seeding ends
/// ([`SharedFile::subscribe_taken`]; connection ids start at 1).
pub const INITIAL_SEEDING_OVER: super::upload_policy::ConnId = 0;

pub struct SharedFile {
    pub group: String,
    pub meta: Arc<FileMeta>,
    path: RwLock<PathBuf>,
    /// The pieces on disk (one file, or a tree), through the storage seam.
    store: Arc<Storage>,
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
    /// Initial seeding over every connection serving this file (applied only by an origin).
    upload: Mutex<super::upload_policy::UploadPolicy>,
    /// Shared complete from the start (an uploader, or a daemon restarted with the file), as
    /// opposed to a download that completed: only an origin applies initial seeding (a
    /// finished downloader's pieces came from the swarm, and in the tail of a crowd download
    /// a refusal would only delay the others).
    origin: bool,
    /// Pieces that just entered the swarm, and the connection they went to (see
    /// `upload_announce_taken`).
    taken_tx: broadcast::Sender<(super::upload_policy::ConnId, u32)>,
    /// The fair split of our upload between this file's connections (`fair_share.rs`), and
    /// the wake-up of connections waiting for their turn.
    fair: Mutex<super::fair_share::FairShare>,
    fair_turn: Notify,
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
        let store = Arc::new(Storage::single(&meta, file));
        Ok(Self::build(group, meta, path, store, have, Some(stamp)))
    }

    /// A complete tree on disk, shared as-is: the root directory is opened without following
    /// a link and must still be the directory hashed (device and inode); each file is opened
    /// beneath it on demand and served only while it matches its stamp.
    pub fn complete_tree(
        group: String,
        meta: Arc<FileMeta>,
        root: PathBuf,
        root_stamp: FileStamp,
        files: &[SharedTreeFile],
    ) -> io::Result<Arc<Self>> {
        let fd = crate::storage::tree::open_root(&root)?;
        let st = FileStamp::of_file(&File::from(fd.try_clone()?))?;
        if (st.dev, st.ino) != (root_stamp.dev, root_stamp.ino) {
            return Err(io::Error::other(format!(
                "{} is no longer the directory that was shared",
                root.display()
            )));
        }
        if files.len() != meta.file_count() {
            return Err(io::Error::other("the share record does not match its tree"));
        }
        let set = TreeFiles::shared(
            fd,
            root.clone(),
            crate::storage::walk::tree_paths(&meta, files),
            files.iter().map(|f| f.stamp).collect(),
        );
        let store = Arc::new(Storage::new(&meta, Box::new(set)));
        let have = Bitfield::full(meta.piece_count());
        Ok(Self::build(group, meta, root, store, have, None))
    }

    /// An item being downloaded: starts with the pieces already verified in `have`. `store`
    /// is the download's own storage (never re-opened by name).
    pub fn partial(
        group: String,
        meta: Arc<FileMeta>,
        part_path: PathBuf,
        store: Arc<Storage>,
        have: Bitfield,
    ) -> Arc<Self> {
        Self::build(group, meta, part_path, store, have, None)
    }

    fn build(
        group: String,
        meta: Arc<FileMeta>,
        path: PathBuf,
        store: Arc<Storage>,
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
            store,
            have: Mutex::new(have),
            complete: AtomicBool::new(complete),
            stamp: Mutex::new(stamp),
            stale: AtomicBool::new(false),
            have_tx,
            stale_signal: std::sync::OnceLock::new(),
            upload: Mutex::new(super::upload_policy::UploadPolicy::new(meta_pieces)),
            origin: complete,
            taken_tx: broadcast::channel(1024).0,
            fair: Mutex::default(),
            fair_turn: Notify::new(),
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

    /// A connection starts being served (see `upload_policy.rs`, `fair_share.rs`).
    pub fn upload_open(&self) -> super::upload_policy::ConnId {
        let conn = self.upload.lock().expect("lock").open();
        self.fair.lock().expect("lock").open(conn);
        conn
    }

    pub fn upload_close(&self, conn: super::upload_policy::ConnId) {
        {
            let mut policy = self.upload.lock().expect("lock");
            let seeding = policy.initial_seeding();
            policy.close(conn);
            self.seeding_maybe_over(seeding, &policy);
        }
        self.fair.lock().expect("lock").close(conn);
        self.fair_turn.notify_waiters();
    }

    /// Wait for `conn`'s turn to send a piece (`fair_share.rs`): the wire is free (or its
    /// holder's time is up) and no connection that waits is less served; at most `MAX_WAIT`.
    /// Call [`SharedFile::fair_done`] after the piece.
    pub async fn fair_turn(&self, conn: super::upload_policy::ConnId) {
        use super::fair_share::{Turn, MAX_WAIT};
        // Stop waiting however this future ends (a connection dropped while it waits must
        // not hold the others back).
        struct Waiting<'a>(&'a SharedFile, super::upload_policy::ConnId, bool);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                if !self.2 {
                    self.0.fair.lock().expect("lock").abandon(self.1);
                    self.0.fair_turn.notify_waiters();
                }
            }
        }
        let mut waiting = Waiting(self, conn, false);
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            let turn = self.fair_turn.notified();
            tokio::pin!(turn);
            turn.as_mut().enable();
            let answer = self
                .fair
                .lock()
                .expect("lock")
                .want(conn, std::time::Instant::now());
            let until = match answer {
                Turn::Go => {
                    waiting.2 = true;
                    // Room may remain on the wire for a waiter that was told to wait
                    // because we were less served.
                    self.fair_turn.notify_waiters();
                    return;
                }
                Turn::Wait(Some(at)) => tokio::time::Instant::from_std(at).min(deadline),
                Turn::Wait(None) => deadline,
            };
            tokio::select! {
                _ = turn => {}
                _ = tokio::time::sleep_until(until) => if tokio::time::Instant::now() >= deadline {
                    return; // Waiting's drop abandons the turn: we send alongside the holder
                },
            }
        }
    }

    /// Whether another connection waits for the wire while `conn` holds it.
    pub fn fair_others_waiting(&self, conn: super::upload_policy::ConnId) -> bool {
        self.fair.lock().expect("lock").others_waiting(conn)
    }

    /// `conn` got its turn but sends nothing after all (cancelled or shed meanwhile).
    pub fn fair_give_back(&self, conn: super::upload_policy::ConnId) {
        self.fair
            .lock()
            .expect("lock")
            .give_back(conn, std::time::Instant::now());
        self.fair_turn.notify_waiters();
    }

    /// `conn` sent a piece of `len` bytes (and its socket drained): the wire is free.
    pub fn fair_done(&self, conn: super::upload_policy::ConnId, len: u64) {
        self.fair
            .lock()
            .expect("lock")
            .done(conn, len, std::time::Instant::now());
        self.fair_turn.notify_waiters();
    }

    /// May `conn` get `piece` now? Always yes unless we are the file's origin.
    pub fn upload_decide(
        &self,
        conn: super::upload_policy::ConnId,
        piece: u32,
    ) -> super::upload_policy::Decision {
        if !self.origin {
            return super::upload_policy::Decision::Serve;
        }
        let mut policy = self.upload.lock().expect("lock");
        let seeding = policy.initial_seeding();
        let decision = policy.decide(conn, piece, std::time::Instant::now());
        self.seeding_maybe_over(seeding, &policy);
        decision
    }

    /// Should a request for `piece` that waited `waited` for our uplink be answered
    /// `Elsewhere` instead (see `SHED_AFTER`)? Only a downloader passing pieces on (not an
    /// origin, whose initial seeding decides), and only if another of our connections' peers
    /// has the piece to give.
    pub fn shed(&self, piece: u32, waited: std::time::Duration, shed_before: bool) -> bool {
        let holders = self.upload.lock().expect("lock").holders(piece);
        super::fair_share::shed(self.origin, waited, holders, shed_before)
    }

    /// When an origin's initial seeding just ended (every piece is in the swarm and the last
    /// new one went out), every connection offers again what it told its downloader to get
    /// elsewhere: they are the crowd's rarest pieces in the tail, and our uplink is free now.
    fn seeding_maybe_over(&self, was_seeding: bool, policy: &super::upload_policy::UploadPolicy) {
        if self.origin && was_seeding && !policy.initial_seeding() {
            let _ = self.taken_tx.send((INITIAL_SEEDING_OVER, 0));
        }
    }

    /// Returns true the first time every piece has gone out once (end of initial seeding).
    pub fn upload_sent(&self, conn: super::upload_policy::ConnId, piece: u32) -> bool {
        let mut policy = self.upload.lock().expect("lock");
        let seeding = policy.initial_seeding();
        let first_copy_out = policy.sent(conn, piece);
        self.seeding_maybe_over(seeding, &policy);
        first_copy_out && self.origin
    }

    /// The downloader on `conn` verified `piece` (it said so with `Have`).
    pub fn upload_peer_has(&self, conn: super::upload_policy::ConnId, piece: u32) {
        let mut policy = self.upload.lock().expect("lock");
        let seeding = policy.initial_seeding();
        policy.peer_has(conn, piece, std::time::Instant::now());
        self.seeding_maybe_over(seeding, &policy);
    }

    /// Initial seeding: `piece` just went to `conn`, the first in the swarm to get it; every
    /// other connection tells its downloader to take it elsewhere (`Elsewhere`, unasked), so
    /// they stop asking us for pieces that are already on their way into the swarm.
    pub fn upload_announce_taken(&self, conn: super::upload_policy::ConnId, piece: u32) {
        let _ = self.taken_tx.send((conn, piece));
    }

    /// What `subscribe_taken` receives when initial seeding ends: `(INITIAL_SEEDING_OVER, _)`
    /// (connection ids start at 1).
    pub fn subscribe_taken(&self) -> broadcast::Receiver<(super::upload_policy::ConnId, u32)> {
        self.taken_tx.subscribe()
    }

    /// Seconds the upload idled between pieces with nobody waiting (`FairShare::idle_total`).
    pub fn fair_idle_s(&self) -> f64 {
        self.fair.lock().expect("lock").idle_total().as_secs_f64()
    }

    /// Holder-seconds and the average hold (`FairShare::held_s`, `hold`), for the log.
    pub fn fair_held(&self) -> (f64, f64) {
        let f = self.fair.lock().expect("lock");
        (f.held_s(), f.hold().as_secs_f64() * 1000.0)
    }

    /// Pieces served by reason (`UploadPolicy::served_why`, for the log).
    pub fn upload_served_why(&self) -> [u32; 5] {
        self.upload.lock().expect("lock").served_why()
    }

    /// Pieces sent 0, 1, 2, 3+ times (for the log).
    pub fn upload_copies(&self) -> [u32; 4] {
        self.upload.lock().expect("lock").copies_histogram()
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

    /// A downloaded tree was renamed into place: same handles, new path.
    pub fn completed_tree_at(&self, final_path: &Path) {
        *self.path.write().expect("lock") = final_path.to_path_buf();
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

    /// [`SharedFile::still_valid`], and the file holding `piece` (one file of a tree) is
    /// still the one shared: a tree's file edited or truncated in place is never served.
    pub fn still_valid_for(&self, piece: u32) -> bool {
        if !self.still_valid() {
            return false;
        }
        if self.is_complete() && !self.store.piece_unchanged(piece) {
            tracing::warn!(item = %self.meta.name, group = %self.group, piece, "a file of the shared tree changed on disk; no longer serving it");
            self.stale.store(true, Ordering::Relaxed);
            if let Some(n) = self.stale_signal.get() {
                n.notify_one();
            }
            return false;
        }
        true
    }

    /// The pieces on disk.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.store
    }

    /// Length of `piece` (O(log files), unlike `FileMeta::piece_len` on a tree).
    pub fn piece_len(&self, piece: u32) -> u32 {
        self.store.piece_len(piece)
    }

    /// The open file holding `piece`, the piece's offset in it and its length, for
    /// zero-copy sends of verified pieces.
    pub fn piece_file(&self, piece: u32) -> io::Result<(Arc<File>, u64, u32)> {
        self.store.piece_file(piece)
    }

    /// Read one piece (blocking: call from the blocking pool).
    pub fn read_piece(&self, piece: u32) -> io::Result<Bytes> {
        let (file, offset, len) = self.store.piece_file(piece)?;
        let mut buf = BytesMut::zeroed(len as usize);
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, offset)?;
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
        crate::metrics::global().sent(bytes);
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

    /// Every complete share being served now.
    pub fn complete(&self) -> Vec<Arc<SharedFile>> {
        let map = self.map.read().expect("lock");
        map.values().filter(|f| f.is_complete()).cloned().collect()
    }
}

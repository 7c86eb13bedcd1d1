//! Downloading one file from many peers at once. See docs/DOWNLOADS.md for the design and the
//! invariants; in short:
//!
//! * a coordinator ([`Download::run`]) finds peers (tracker), starts one task per peer (capped),
//!   refreshes the peer list, watches for stalls, and finishes the file;
//! * each peer task ([`peer::run_peer`]) pulls work from the shared [`picker::Picker`] whenever
//!   it has a free pipeline slot — faster peers come back sooner and so get more pieces;
//! * every piece is SHA1-checked on the blocking pool before it is written, and only then
//!   marked verified and offered to other peers (partial seeding);
//! * the whole-file SHA1 is computed in file order behind the download ([`storage::SeqHasher`])
//!   and must match before the file is moved into place.
//!
//! Lock order: `picker` before `progress`; neither is held across an `.await`.

mod connect;
pub mod dest;
pub mod path;
mod peer;
pub mod peers;
pub mod picker;
pub mod pipeline;
pub mod progress;
pub mod storage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use minitorr_proto::control::{self, DownloadRef, DownloadState, DownloadStatus};
use minitorr_proto::ticket::Ticket;
use minitorr_proto::tracker::{Call, EventKind, FileDetails, Holders, Response};
use minitorr_proto::types::{FileMeta, PeerInfo, Sha1Hash};

use crate::blocking::BlockingPool;
use crate::events::{EventBus, ProgressGate};
use crate::ratelimit::RateLimiter;
use crate::sharing::hasher::FileStamp;
use crate::sharing::SharedFile;
use crate::tracker::TrackerLink;

use peers::{Ended, PeerBook, Source};
use picker::{PeerId, Picker};
use progress::Progress;
use storage::{DestDir, PartFile, WholeFileHasher};

/// Re-ask the tracker for peers at least this often (new partial seeders, fresh ticket).
const REFRESH_EVERY: Duration = Duration::from_secs(15);
/// …and this often while stalled (no peer, or pieces nobody connected has).
const REFRESH_STALLED: Duration = Duration::from_secs(2);
/// Give up when every missing piece has had no holder for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Holder news queued for the coordinator at most (the tracker's events are bounded per
/// batch; this only guards against a coordinator that is not running).
const MAX_NEWS: usize = 4096;

/// A holder change pushed by the tracker (`HolderOnline` / `HolderGone` events), for a
/// running download of that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderNews {
    Online(PeerInfo),
    Gone { user: String, addr: Option<String> },
}

/// What a download needs from the daemon.
pub struct DownloadEnv {
    pub tracker: Arc<TrackerLink>,
    pub token: String,
    pub self_addr: String,
    pub pool: BlockingPool,
    pub limit: Arc<RateLimiter>,
    pub max_peers: usize,
    pub max_depth: usize,
    /// TLS (pinning each holder to its listed device key) or loopback-benchmark plaintext.
    pub link: crate::peerlink::PeerLinkMode,
    /// The last resort for holders we cannot reach, or why there is none.
    pub relay: Result<crate::peerlink::relay::RelayDialer, String>,
    /// Our peer listen address: hole punches connect from its port (issue #14).
    pub listen: std::net::SocketAddr,
    /// Hole punching; `None` turns it off (plaintext benchmark mode).
    pub punch: Option<Arc<crate::punch::PunchHub>>,
    /// The daemon's event bus: started, progress (coalesced), peers, completed/failed.
    pub events: EventBus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed(String),
    /// Stopped by logout or shutdown; resumes at next login.
    Paused,
}

pub struct Download {
    pub group: String,
    /// A selective download's `--only` patterns (empty: the whole item).
    pub only: Vec<String>,
    pub meta: Arc<FileMeta>,
    pub dest: PathBuf,
    pub shared: Arc<SharedFile>,
    part: Arc<PartFile>,
    /// Taken by `finish`; dropping it (download dropped) stops the thread.
    whole: Mutex<Option<WholeFileHasher>>,
    picker: Mutex<Picker>,
    progress: Mutex<Progress>,
    /// Pieces requested or being verified, over all peers: bounds the download's memory
    /// whatever the number of peers (each slot is at most one piece in our buffers).
    slots: Arc<tokio::sync::Semaphore>,
    /// Slots created so far: `pipeline::base_slots`, grown up to `pipeline::max_slots` when a
    /// long link's bandwidth-delay product needs more (see `grow_slots`).
    slots_total: std::sync::atomic::AtomicUsize,
    /// Woken when a piece verifies (peers cancel duplicates, coordinator checks completion).
    changed: Notify,
    started: Instant,
    cancel: CancellationToken,
    /// Holder changes from the tracker's push channel, drained by the coordinator (a lock of
    /// its own, never held with another).
    news: Mutex<Vec<HolderNews>>,
    news_ready: Notify,
    /// Which way (direct, punched, relayed) to reach each holder next (issue #14).
    paths: Mutex<path::PathPolicy>,
    /// Why the last connection attempt to a holder failed, for the failure message.
    last_unreachable: Mutex<Option<String>>,
    /// A selective download: the selected files' totals (see `DownloadStatus::selection`).
    selected: Option<control::ItemTotals>,
    /// A finished tree's files (disk path, stamp), for the share record.
    tree_files: Mutex<Vec<crate::storage::walk::SharedTreeFile>>,
    /// Peers past the greeting (for `PeerConnected` / `PeerDisconnected` events): address to
    /// user. A lock of its own, never held with another.
    greeted: Mutex<HashMap<String, String>>,
}

impl Download {
    /// Open (or resume) the partial file next to `dest`. Resuming re-verifies every piece on
    /// disk, so a crash mid-write can never leave a bad piece counted as done. Refused (see
    /// [`storage::StorageError`]) if the directory is not ours, the filesystem lacks room,
    /// or something other than our own part file sits at the part file's name.
    pub async fn prepare(
        group: String,
        meta: Arc<FileMeta>,
        dest: PathBuf,
        pool: &BlockingPool,
    ) -> Result<Arc<Download>, storage::StorageError> {
        Self::prepare_reporting(group, meta, dest, pool, None, Vec::new(), None).await
    }

    /// [`Download::prepare`], counting the bytes re-verified in `checked`.
    pub async fn prepare_reporting(
        group: String,
        meta: Arc<FileMeta>,
        dest: PathBuf,
        pool: &BlockingPool,
        checked: Option<Arc<std::sync::atomic::AtomicU64>>,
        only: Vec<String>,
        wanted: Option<Arc<Vec<bool>>>,
    ) -> Result<Arc<Download>, storage::StorageError> {
        let m = meta.clone();
        let d = dest.clone();
        let (part, have) = pool
            .run(move || -> Result<_, storage::StorageError> {
                let dir = DestDir::open(d.parent().unwrap_or(std::path::Path::new("/")))?;
                let name = d.file_name().unwrap_or_default();
                let (part, existed) = PartFile::open_selective(dir, name, m.clone(), wanted)?;
                let have = if existed {
                    let started = Instant::now();
                    let have = part.scan_reporting(checked.as_deref()).map_err(|source| {
                        storage::StorageError::Io {
                            what: "read",
                            path: part.path().to_path_buf(),
                            source,
                        }
                    })?;
                    crate::metrics::global()
                        .hashed(crate::metrics::Hashing::Reverify, started.elapsed());
                    have
                } else {
                    minitorr_proto::types::Bitfield::new(m.piece_count())
                };
                Ok((part, have))
            })
            .await?;
        let bytes_done = have
            .iter_set()
            .map(|i| part.storage().piece_len(i) as u64)
            .sum();
        let shared = SharedFile::partial(
            group.clone(),
            meta.clone(),
            part.path().to_path_buf(),
            part.storage(),
            have.clone(),
        );
        let part = Arc::new(part);
        let slots = pipeline::base_slots(meta.piece_size);
        let whole =
            WholeFileHasher::start(part.clone()).map_err(|source| storage::StorageError::Io {
                what: "start hashing",
                path: part.path().to_path_buf(),
                source,
            })?;
        for i in have.iter_set() {
            whole.piece(i, None);
        }
        let wanted_pieces = part.wanted_pieces();
        let selected = part.wanted().map(|w| selection_totals(&meta, w));
        Ok(Arc::new(Download {
            selected,
            group,
            only,
            picker: Mutex::new(Picker::with_wanted(&have, &wanted_pieces)),
            progress: Mutex::new(Progress::new(bytes_done)),
            meta,
            dest,
            shared,
            part,
            whole: Mutex::new(Some(whole)),
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            slots_total: std::sync::atomic::AtomicUsize::new(slots),
            changed: Notify::new(),
            started: Instant::now(),
            cancel: CancellationToken::new(),
            news: Mutex::new(Vec::new()),
            news_ready: Notify::new(),
            paths: Mutex::new(path::PathPolicy::default()),
            last_unreachable: Mutex::new(None),
            tree_files: Mutex::new(Vec::new()),
            greeted: Mutex::new(HashMap::new()),
        }))
    }

    /// Flush the finished file and its directory entry to disk (blocking).
    pub fn sync_to_disk(&self) -> std::io::Result<()> {
        self.part.sync_to_disk()
    }

    /// A finished tree's files as its share record lists them (empty for a single file or
    /// before completion). Taken, not copied: asked once, by the completion.
    pub fn finished_tree_files(&self) -> Vec<crate::storage::walk::SharedTreeFile> {
        std::mem::take(&mut *self.tree_files.lock().expect("lock"))
    }

    /// Files whose every piece is verified, and the file count — of the selected files for
    /// a selective download.
    pub fn files_done(&self) -> (u32, u32) {
        let have = self.shared.have();
        let s = self.shared.storage();
        let n = s.layout().files().len();
        let wanted = |i: &usize| self.part.wants_file(*i);
        let done = (0..n)
            .filter(wanted)
            .filter(|&i| s.file_complete(&have, i))
            .count();
        (done as u32, (0..n).filter(wanted).count() as u32)
    }

    pub fn pieces_done(&self) -> u32 {
        self.picker.lock().expect("lock").verified_count()
    }

    pub fn is_finished(&self) -> bool {
        self.progress.lock().expect("lock").state != DownloadState::Downloading
    }

    /// A tracker event about the holders of some file: queued for the coordinator if it is
    /// about this download's file (`HolderGone` without a file covers every file of the
    /// group). Returns whether it applied. Called from the event subscription (never blocks).
    pub fn holder_event(&self, kind: &EventKind) -> bool {
        let news = match kind {
            EventKind::HolderOnline { group, file, peer }
                if *group == self.group && *file == self.meta.name =>
            {
                HolderNews::Online(peer.clone())
            }
            EventKind::HolderGone {
                group,
                file,
                user,
                addr,
            } if *group == self.group && file.as_ref().is_none_or(|f| *f == self.meta.name) => {
                HolderNews::Gone {
                    user: user.clone(),
                    addr: addr.clone(),
                }
            }
            _ => return false,
        };
        let mut q = self.news.lock().expect("lock");
        if q.len() < MAX_NEWS {
            q.push(news);
        }
        drop(q);
        self.news_ready.notify_one();
        true
    }

    /// Stop the download (logout, shutdown, or the user's stop_share); verified pieces stay.
    pub fn pause(&self) {
        self.cancel.cancel();
    }

    /// How events name this download.
    pub fn event_ref(&self) -> DownloadRef {
        DownloadRef {
            group: self.group.clone(),
            file: self.meta.name.clone(),
            dest: self.dest.clone(),
        }
    }

    fn progress_event(&self) -> control::EventKind {
        let s = self.status();
        control::EventKind::Progress {
            download: self.event_ref(),
            bytes_done: s.bytes_done,
            size: s.size,
            pieces_done: s.pieces_done,
            pieces_total: s.pieces_total,
            speed_bps: s.speed_bps,
        }
    }

    /// A peer task got past the greeting: it is connected now.
    fn peer_greeted(&self, info: &PeerInfo, env: &DownloadEnv) {
        self.greeted
            .lock()
            .expect("lock")
            .insert(info.addr.clone(), info.user.clone());
        env.events.publish(control::EventKind::PeerConnected {
            download: self.event_ref(),
            addr: info.addr.clone(),
            user: info.user.clone(),
        });
    }

    pub fn status(&self) -> DownloadStatus {
        let pieces_done = self.pieces_done();
        let (files_done, files_total) = self.files_done();
        // A selective download counts what it fetches; the item's totals go alongside.
        let (size, pieces_total, selection) = match &self.selected {
            Some(sel) => (sel.size, sel.pieces, Some(item_totals(&self.meta))),
            None => (self.meta.size, self.meta.piece_count(), None),
        };
        let p = self.progress.lock().expect("lock");
        let elapsed = p.finished.unwrap_or_else(|| self.started.elapsed());
        DownloadStatus {
            group: self.group.clone(),
            file: self.meta.name.clone(),
            dest: self.dest.clone(),
            state: p.state,
            size,
            sha1: self.meta.sha1,
            bytes_done: p.bytes_done,
            pieces_done,
            pieces_total,
            speed_bps: if p.state == DownloadState::Downloading {
                p.speed()
            } else {
                0
            },
            peers: p.peers.values().cloned().collect(),
            error: p.error.clone(),
            first_piece_ms: p.first_piece.map(|d| d.as_millis() as u64),
            elapsed_ms: elapsed.as_millis() as u64,
            avg_bps: p.average_speed(elapsed),
            files_done,
            files_total,
            selection,
        }
    }

    fn set_outcome(&self, outcome: &Outcome) {
        let mut p = self.progress.lock().expect("lock");
        p.finished = Some(self.started.elapsed());
        match outcome {
            Outcome::Completed => p.state = DownloadState::Complete,
            Outcome::Failed(why) => {
                p.state = DownloadState::Failed;
                p.error = Some(why.clone());
            }
            Outcome::Paused => p.finished = None,
        }
        for peer in p.peers.values_mut() {
            peer.connected = false;
        }
    }

    /// Drive the download to an end. `details` is the tracker's answer to `GetFile`.
    pub async fn run(self: Arc<Self>, env: Arc<DownloadEnv>, details: FileDetails) -> Outcome {
        let outcome = self.clone().coordinate(env.clone(), details).await;
        let outcome = match outcome {
            Outcome::Completed => {
                // The one progress event at completion, whatever the coalescing held back.
                // (Started, completed and failed are published by `Daemon::transition`.)
                env.events.publish(self.progress_event());
                match self.finish(&env).await {
                    Ok(()) => Outcome::Completed,
                    Err(e) => Outcome::Failed(e),
                }
            }
            o => o,
        };
        self.set_outcome(&outcome);
        self.changed.notify_waiters();
        outcome
    }

    async fn coordinate(self: Arc<Self>, env: Arc<DownloadEnv>, details: FileDetails) -> Outcome {
        // Peer tasks watch the current ticket and renew their connections with each fresh one
        // (seeders close a connection whose ticket expired).
        let mut renew_at = renew_time(&details.ticket);
        let (ticket_tx, tickets) = tokio::sync::watch::channel(details.ticket);
        let mut book = PeerBook::new(env.self_addr.clone(), env.max_peers);
        for p in details.peers {
            book.learn(p, Source::Listing);
        }
        let mut tasks: JoinSet<(String, peer::PeerExit)> = JoinSet::new();
        let mut last_refresh = Instant::now();
        // Announce ourselves as a holder at once (right after connecting to the known holders,
        // so the first piece is not delayed), with whatever we have (maybe nothing): the
        // tracker pushes `HolderOnline` to the group, so the other downloaders connect to us
        // within a second and take pieces as they verify (partial seeding). Retried with
        // backoff in the background while the tracker cannot be told.
        let mut announced = self.is_complete_now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        // Tracker refreshes run beside the loop, never in it: a tracker that hangs (or is
        // gone) must not hold up peers, completion or cancellation. One at a time.
        let (refresh_tx, mut refresh_rx) = tokio::sync::mpsc::channel(1);
        let mut refreshing: Option<tokio_util::task::AbortOnDropHandle<()>> = None;
        // Progress events: published when the verified count moves, at most one per interval.
        let mut gate = ProgressGate::default();
        let mut reported = self.pieces_done();

        loop {
            if self.is_complete_now() {
                tasks.shutdown().await;
                return Outcome::Completed;
            }
            // Connect to known peers we are not talking to yet.
            for (id, info) in book.to_connect(Instant::now()) {
                self.progress
                    .lock()
                    .expect("lock")
                    .peer(&info.addr, &info.user)
                    .connected = true;
                let (dl, env, ticket) = (self.clone(), env.clone(), tickets.clone());
                tasks.spawn(async move {
                    let addr = info.addr.clone();
                    // A bug in one peer task must not leave the peer counted as connected forever.
                    let run =
                        std::panic::AssertUnwindSafe(peer::run_peer(dl, id, info, ticket, env));
                    let exit = futures::FutureExt::catch_unwind(run)
                        .await
                        .unwrap_or_else(|_| peer::PeerExit::Gone("peer task panicked".into()));
                    (addr, exit)
                });
            }
            if !announced {
                // Off the loop and retried with backoff: a tracker that hangs delays nothing.
                announced = true;
                self.announce_in_background(&env, false);
            }

            let progress_due = gate.next_due();
            tokio::select! {
                Some(joined) = tasks.join_next() => {
                    let Ok((addr, exit)) = joined else { continue };
                    let why_ended = exit.describe();
                    let ended = match exit {
                        peer::PeerExit::Liar => {
                            tracing::warn!(peer = %addr, file = %self.meta.name, "peer sent corrupt pieces repeatedly; dropped for this download");
                            Ended::Liar
                        }
                        peer::PeerExit::Impostor(listed_key) => Ended::Impostor(listed_key),
                        peer::PeerExit::Fatal(e) => {
                            tasks.shutdown().await;
                            return Outcome::Failed(e);
                        }
                        peer::PeerExit::Unreachable(why) => {
                            tracing::info!(peer = %addr, %why, "cannot reach peer");
                            self.progress.lock().expect("lock").peer(&addr, "").error =
                                Some(why.clone());
                            *self.last_unreachable.lock().expect("lock") = Some(why);
                            Ended::Unreachable
                        }
                        peer::PeerExit::Gone(why) => {
                            tracing::debug!(peer = %addr, %why, "peer connection ended");
                            Ended::Closed
                        }
                        peer::PeerExit::Done => Ended::Closed,
                    };
                    if let Some(id) = book.ended(&addr, ended, Instant::now()) {
                        self.picker.lock().expect("lock").remove_peer(id);
                    }
                    let greeted = self.greeted.lock().expect("lock").remove(&addr);
                    if let Some(user) = greeted {
                        env.events.publish(control::EventKind::PeerDisconnected {
                            download: self.event_ref(),
                            addr: addr.clone(),
                            user,
                            reason: why_ended,
                        });
                    }
                    self.progress.lock().expect("lock").peer(&addr, "").connected = false;
                }
                _ = self.news_ready.notified() => {}
                _ = tick.tick() => {}
                _ = self.changed.notified() => {}
                _ = sleep_until_some(progress_due) => {}
                Some(result) = refresh_rx.recv() => {
                    refreshing = None;
                    match result {
                        Ok(d) => {
                            let d: Holders = d;
                            renew_at = renew_time(&d.ticket);
                            ticket_tx.send_replace(d.ticket);
                            for p in d.peers {
                                book.learn(p, Source::Listing);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(file = %self.meta.name, error = %e, "peer refresh failed")
                        }
                    }
                }
                _ = self.cancel.cancelled() => {
                    tasks.shutdown().await;
                    return Outcome::Paused;
                }
            }
            let news = std::mem::take(&mut *self.news.lock().expect("lock"));
            for n in news {
                match n {
                    HolderNews::Online(p) => {
                        tracing::debug!(peer = %p.addr, user = %p.user, file = %self.meta.name, "holder online (tracker event)");
                        env.events.publish(control::EventKind::HolderOnline {
                            download: self.event_ref(),
                            addr: p.addr.clone(),
                            user: p.user.clone(),
                        });
                        book.learn(p, Source::Online);
                    }
                    HolderNews::Gone { user, addr } => {
                        tracing::debug!(%user, ?addr, file = %self.meta.name, "holder gone (tracker event)");
                        book.gone(&user, addr.as_deref());
                        env.events.publish(control::EventKind::HolderGone {
                            download: self.event_ref(),
                            user,
                            addr,
                        });
                    }
                }
            }

            let done = self.pieces_done();
            let now = Instant::now();
            if (done != reported && gate.offer(now)) || gate.poll(now) {
                env.events.publish(self.progress_event());
            }
            reported = done;

            // Stall detection: every piece we still need is held by nobody we are connected to.
            let (missing, unavailable) = {
                let p = self.picker.lock().expect("lock");
                (p.piece_count() - p.verified_count(), p.unavailable())
            };
            let stalled = missing > 0 && unavailable.len() as u32 == missing;
            let wants_refresh = book.connected() == 0 || !unavailable.is_empty();
            let stalled_for = book.stall(stalled, Instant::now());
            let refresh_due = if wants_refresh {
                REFRESH_STALLED
            } else {
                REFRESH_EVERY
            };
            // Refresh early enough that the new ticket reaches the seeders before the old one
            // expires (ticket TTLs shorter than REFRESH_EVERY exist).
            let ticket_due =
                unix_now() >= renew_at && last_refresh.elapsed() >= Duration::from_secs(1);
            if (last_refresh.elapsed() >= refresh_due || ticket_due) && refreshing.is_none() {
                last_refresh = Instant::now();
                let (me, env, tx) = (self.clone(), env.clone(), refresh_tx.clone());
                refreshing = Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                    async move {
                        let _ = tx.send(me.refresh(&env).await).await;
                    },
                )));
            }
            if stalled_for >= STALL_TIMEOUT {
                tasks.shutdown().await;
                let mut why = describe_unavailable(&unavailable);
                if let Some(u) = self.last_unreachable.lock().expect("lock").as_deref() {
                    why.push_str(&format!("; last connection attempt: {u}"));
                }
                return Outcome::Failed(why);
            }
        }
    }

    fn is_complete_now(&self) -> bool {
        self.picker.lock().expect("lock").is_complete()
    }

    /// Holders and a fresh ticket (`GetHolders`: not the listing we already have, which for a
    /// 100,000-file tree is megabytes re-sent and re-parsed at every refresh).
    async fn refresh(&self, env: &DownloadEnv) -> Result<Holders, String> {
        let call = Call::GetHolders {
            group: self.group.clone(),
            file: self.meta.name.clone(),
        };
        match env.tracker.call(Some(&env.token), call).await {
            Ok(Response::Holders(h)) if h.sha1 == self.meta.sha1 => Ok(*h),
            Ok(Response::Holders(_)) => Err("the file changed on the tracker".into()),
            Ok(Response::Error { message, .. }) => Err(message),
            Ok(other) => Err(format!("unexpected tracker answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Tell the tracker we hold (part of) the file, so others can fetch from us. Returns
    /// false when the tracker could not be reached (worth retrying); a refusal is final.
    async fn announce(&self, env: &DownloadEnv, complete: bool) -> bool {
        let call = Call::Share {
            group: self.group.clone(),
            meta: self.meta.clone(),
            complete,
        };
        match env.tracker.call(Some(&env.token), call).await {
            Ok(Response::Ok { .. }) => true,
            Ok(other) => {
                tracing::warn!(file = %self.meta.name, answer = ?other, "tracker refused our share announcement");
                // Refused (e.g. not a member any more): retrying would not help.
                true
            }
            Err(e) => {
                tracing::warn!(file = %self.meta.name, error = %e, "could not announce share; will retry");
                false
            }
        }
    }

    /// [`Self::announce`] off the download's path, retried with backoff (1 s doubling to 30 s)
    /// while the tracker is unreachable: a download never waits for the tracker to finish,
    /// and registers as a holder once the tracker is back. A partial announcement gives up
    /// once the file is complete (the complete one supersedes it); both stop at logout.
    fn announce_in_background(self: &Arc<Self>, env: &Arc<DownloadEnv>, complete: bool) {
        let (me, env) = (self.clone(), env.clone());
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                if !complete && me.shared.is_complete() {
                    return;
                }
                if me.announce(&env, complete).await {
                    if complete {
                        tracing::info!(file = %me.meta.name, group = %me.group, "registered as a holder of the finished file");
                    }
                    return;
                }
                tokio::select! {
                    _ = me.cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        });
    }

    /// Whole-file SHA1, then move into place and become a full seeder.
    async fn finish(self: &Arc<Self>, env: &Arc<DownloadEnv>) -> Result<(), String> {
        let (part, meta, dest) = (self.part.clone(), self.meta.clone(), self.dest.clone());
        let whole = self
            .whole
            .lock()
            .expect("lock")
            .take()
            .ok_or("download finished twice")?;
        let stamp = env
            .pool
            .run(move || -> Result<(FileStamp, Vec<_>), String> {
                let got = whole
                    .finish()
                    .map_err(|e| format!("cannot compute the whole-file SHA1: {e}"))?;
                let expected: Vec<(&str, Sha1Hash)> = match &meta.tree {
                    None => vec![(meta.name.as_str(), meta.sha1)],
                    Some(t) => t.files().map(|(p, _, h)| (p, h)).collect(),
                };
                if got.len() != expected.len() {
                    return Err("the whole-file hasher lost track of the files".into());
                }
                for (g, (path, want)) in got.iter().zip(&expected) {
                    // None: a file a selective download does not fetch.
                    let Some(g) = g else { continue };
                    if g != want {
                        return Err(format!(
                            "whole-file SHA1 mismatch for {path} (got {}, expected {})",
                            g.short(),
                            want.short()
                        ));
                    }
                }
                let name = dest.file_name().unwrap_or_default();
                part.finish(name).map_err(|e| match e {
                    storage::StorageError::Exists { path } => {
                        format!("{} appeared meanwhile; not overwriting it", path.display())
                    }
                    e => format!("cannot move the file into place: {e}"),
                })?;
                let files = if part.is_tree() {
                    part.tree_files().map_err(|e| e.to_string())?
                } else {
                    Vec::new()
                };
                Ok((part.stamp().map_err(|e| e.to_string())?, files))
            })
            .await?;
        let (stamp, files) = stamp;
        if self.meta.is_tree() {
            // Serving goes on through the same handles (beneath the renamed root); each
            // file's stamp guards it from now on.
            *self.tree_files.lock().expect("lock") = files;
            self.shared.completed_tree_at(&self.dest);
        } else {
            self.shared.completed_at(&self.dest, stamp);
        }
        // Complete locally whatever the tracker's state: registering is retried behind.
        // A selective download holds only some files: it stays a partial holder.
        self.announce_in_background(env, self.shared.is_complete());
        Ok(())
    }

    // --- called by peer tasks -------------------------------------------------------------

    fn next_piece(&self, peer: PeerId) -> Option<u32> {
        self.picker
            .lock()
            .expect("lock")
            .pick(peer, &mut rand::thread_rng())
    }

    fn piece_verified(&self, piece: u32, data: bytes::Bytes, addr: &str, user: &str) {
        let fresh = self
            .picker
            .lock()
            .expect("lock")
            .on_verified(piece)
            .is_some();
        if fresh {
            if let Some(w) = self.whole.lock().expect("lock").as_ref() {
                w.piece(piece, Some(data));
            }
            self.shared.add_piece(piece);
            let len = self.shared.piece_len(piece) as u64;
            crate::metrics::global().piece(len, true);
            self.progress.lock().expect("lock").record_piece(
                addr,
                user,
                len,
                self.started.elapsed(),
            );
            self.changed.notify_waiters();
        } else {
            tracing::trace!(piece, "duplicate piece");
        }
    }

    /// One more memory slot, unless the download holds `pipeline::max_slots` already. Asked
    /// by a peer whose bandwidth-delay product needs more requests outstanding than the free
    /// slots allow (a long link); never given back (the bound is the maximum, not the
    /// current use). True if a slot was added.
    fn grow_slots(&self) -> bool {
        use std::sync::atomic::Ordering;
        let max = pipeline::max_slots(self.meta.piece_size);
        let grown = self
            .slots_total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if grown {
            self.slots.add_permits(1);
        }
        grown
    }

    /// How the connection to `addr` was made (shown per peer); clears an earlier error.
    pub(crate) fn peer_connected_via(&self, addr: &str, path: minitorr_proto::control::PeerPath) {
        let mut p = self.progress.lock().expect("lock");
        let peer = p.peer(addr, "");
        peer.path = path;
        peer.error = None;
    }

    fn piece_rejected(&self, piece: u32, peer: PeerId, addr: &str, bad_hash: bool) {
        self.picker.lock().expect("lock").release(piece, peer);
        if bad_hash {
            crate::metrics::global().piece(u64::from(self.shared.piece_len(piece)), false);
            self.progress
                .lock()
                .expect("lock")
                .peer(addr, "")
                .bad_pieces += 1;
        }
    }
}

/// Sleep until `t`, or forever when there is nothing to wait for.
async fn sleep_until_some(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

fn describe_unavailable(pieces: &[u32]) -> String {
    let shown: Vec<String> = pieces.iter().take(5).map(|p| p.to_string()).collect();
    let more = if pieces.len() > 5 {
        format!(" and {} more", pieces.len() - 5)
    } else {
        String::new()
    };
    format!(
        "{} piece(s) {NO_HOLDER_MARK} (pieces {}{more}); verified pieces are kept — retried automatically when a holder is back (or: minitorrctl resume)",
        pieces.len(),
        shown.join(", ")
    )
}

/// The words of a failure that only lacks online holders: the daemon's retry policy retries
/// such downloads when a holder is back (see `daemon::downloads`).
pub const NO_HOLDER_MARK: &str = "have no holder online";

/// Did a download fail only because nobody online had its missing pieces?
pub fn is_no_holder_failure(error: &str) -> bool {
    error.contains(NO_HOLDER_MARK)
}

/// Carries a ticket for the peer tasks (kept here so peer.rs needs no tracker types).
pub type PeerTicket = Ticket;

/// The latest ticket of a download; peer tasks send `Renew` when it changes.
pub type PeerTickets = tokio::sync::watch::Receiver<Ticket>;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When to ask for a fresh ticket: with a third of its lifetime left (at least 1 s).
fn renew_time(t: &Ticket) -> u64 {
    let now = unix_now();
    let left = t.claims.expires_unix.saturating_sub(now);
    t.claims.expires_unix.saturating_sub((left / 3).max(1))
}

/// An item's own totals.
pub fn item_totals(meta: &FileMeta) -> control::ItemTotals {
    control::ItemTotals {
        size: meta.size,
        pieces: meta.piece_count(),
        files: meta.file_count() as u32,
    }
}

/// The totals of the files (layout order) set in `wanted`.
pub fn selection_totals(meta: &FileMeta, wanted: &[bool]) -> control::ItemTotals {
    let mut t = control::ItemTotals::default();
    if let Some(tree) = &meta.tree {
        for ((_, size, _), w) in tree.files().zip(wanted) {
            if *w {
                t.size += size;
                t.pieces += FileMeta::piece_count_for(size, meta.piece_size);
                t.files += 1;
            }
        }
    }
    t
}

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

mod peer;
pub mod picker;
pub mod progress;
pub mod storage;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use minitorr_proto::control::{DownloadRef, DownloadState, DownloadStatus, EventKind};
use minitorr_proto::ticket::Ticket;
use minitorr_proto::tracker::{Call, FileDetails, Response};
use minitorr_proto::types::{FileMeta, PeerInfo};

use crate::blocking::BlockingPool;
use crate::events::{EventBus, ProgressGate};
use crate::ratelimit::RateLimiter;
use crate::sharing::hasher::FileStamp;
use crate::sharing::SharedFile;
use crate::tracker::TrackerLink;

use picker::{PeerId, Picker};
use progress::Progress;
use storage::{DestDir, PartFile, WholeFileHasher};

/// Re-ask the tracker for peers at least this often (new partial seeders, fresh ticket).
const REFRESH_EVERY: Duration = Duration::from_secs(15);
/// …and this often while stalled (no peer, or pieces nobody connected has).
const REFRESH_STALLED: Duration = Duration::from_secs(2);
/// Give up when every missing piece has had no holder for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before reconnecting to a peer that failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(3);

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
    /// Woken when a piece verifies (peers cancel duplicates, coordinator checks completion).
    changed: Notify,
    started: Instant,
    cancel: CancellationToken,
    /// Peers past the greeting (for `PeerConnected` / `PeerDisconnected` events), by address.
    greeted: Mutex<HashSet<String>>,
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
        let m = meta.clone();
        let d = dest.clone();
        let (part, have) = pool
            .run(move || -> Result<_, storage::StorageError> {
                let dir = DestDir::open(d.parent().unwrap_or(std::path::Path::new("/")))?;
                let name = d.file_name().unwrap_or_default();
                let (part, existed) = PartFile::open(dir, name, m.clone())?;
                let have = if existed {
                    part.scan().map_err(|source| storage::StorageError::Io {
                        what: "read",
                        path: part.path().to_path_buf(),
                        source,
                    })?
                } else {
                    minitorr_proto::types::Bitfield::new(m.piece_count())
                };
                Ok((part, have))
            })
            .await?;
        let bytes_done = have.iter_set().map(|i| meta.piece_len(i) as u64).sum();
        let io = |source| storage::StorageError::Io {
            what: "open",
            path: part.path().to_path_buf(),
            source,
        };
        let shared = SharedFile::partial(
            group.clone(),
            meta.clone(),
            part.path().to_path_buf(),
            part.try_clone_file().map_err(io)?,
            have.clone(),
        );
        let part = Arc::new(part);
        let slots = memory_slots(meta.piece_size);
        let whole =
            WholeFileHasher::start(part.clone()).map_err(|source| storage::StorageError::Io {
                what: "start hashing",
                path: part.path().to_path_buf(),
                source,
            })?;
        for i in have.iter_set() {
            whole.piece(i, None);
        }
        Ok(Arc::new(Download {
            group,
            picker: Mutex::new(Picker::new(&have)),
            progress: Mutex::new(Progress::new(bytes_done)),
            meta,
            dest,
            shared,
            part,
            whole: Mutex::new(Some(whole)),
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            changed: Notify::new(),
            started: Instant::now(),
            cancel: CancellationToken::new(),
            greeted: Mutex::new(HashSet::new()),
        }))
    }

    /// Flush the finished file and its directory entry to disk (blocking).
    pub fn sync_to_disk(&self) -> std::io::Result<()> {
        self.part.sync_to_disk()
    }

    pub fn pieces_done(&self) -> u32 {
        self.picker.lock().expect("lock").verified_count()
    }

    pub fn is_finished(&self) -> bool {
        self.progress.lock().expect("lock").state != DownloadState::Downloading
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

    fn progress_event(&self) -> EventKind {
        let s = self.status();
        EventKind::Progress {
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
        self.greeted.lock().expect("lock").insert(info.addr.clone());
        env.events.publish(EventKind::PeerConnected {
            download: self.event_ref(),
            addr: info.addr.clone(),
            user: info.user.clone(),
        });
    }

    pub fn status(&self) -> DownloadStatus {
        let pieces_done = self.pieces_done();
        let p = self.progress.lock().expect("lock");
        DownloadStatus {
            group: self.group.clone(),
            file: self.meta.name.clone(),
            dest: self.dest.clone(),
            state: p.state,
            size: self.meta.size,
            sha1: self.meta.sha1,
            bytes_done: p.bytes_done,
            pieces_done,
            pieces_total: self.meta.piece_count(),
            speed_bps: if p.state == DownloadState::Downloading {
                p.speed()
            } else {
                0
            },
            peers: p.peers.values().cloned().collect(),
            error: p.error.clone(),
            first_piece_ms: p.first_piece.map(|d| d.as_millis() as u64),
            elapsed_ms: p
                .finished
                .unwrap_or_else(|| self.started.elapsed())
                .as_millis() as u64,
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
        env.events.publish(EventKind::DownloadStarted {
            download: self.event_ref(),
        });
        let outcome = self.clone().coordinate(env.clone(), details).await;
        let outcome = match outcome {
            Outcome::Completed => {
                // The one progress event at completion, whatever the coalescing held back.
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
        // Published once the state says so: a watcher that then asks show_downloads agrees.
        match &outcome {
            Outcome::Completed => {
                env.events.publish(EventKind::DownloadCompleted {
                    download: self.event_ref(),
                    path: self.dest.clone(),
                    elapsed_ms: self.status().elapsed_ms,
                });
                env.events.publish(EventKind::ShareAdded {
                    group: self.group.clone(),
                    file: self.meta.name.clone(),
                    size: self.meta.size,
                    sha1: self.meta.sha1,
                });
            }
            Outcome::Failed(reason) => env.events.publish(EventKind::DownloadFailed {
                download: self.event_ref(),
                reason: reason.clone(),
            }),
            Outcome::Paused => {}
        }
        outcome
    }

    async fn coordinate(self: Arc<Self>, env: Arc<DownloadEnv>, details: FileDetails) -> Outcome {
        // Peer tasks watch the current ticket and renew their connections with each fresh one
        // (seeders close a connection whose ticket expired).
        let mut renew_at = renew_time(&details.ticket);
        let (ticket_tx, tickets) = tokio::sync::watch::channel(details.ticket);
        let mut known: HashMap<String, PeerInfo> = HashMap::new();
        self.learn_peers(&env, details.peers, &mut known);
        let mut tasks: JoinSet<(String, peer::PeerExit)> = JoinSet::new();
        let mut connected: HashMap<String, PeerId> = HashMap::new();
        let mut retry_at: HashMap<String, Instant> = HashMap::new();
        let mut banned: HashSet<String> = HashSet::new();
        // Holders that proved another key than the tracker listed, by (address, listed key).
        let mut impostors: HashSet<(String, [u8; 32])> = HashSet::new();
        let mut next_id: PeerId = 0;
        let mut last_refresh = Instant::now();
        let mut stalled_since: Option<Instant> = None;
        let mut announced_partial = self.pieces_done() > 0;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        // Progress events: published when the verified count moves, at most one per interval.
        let mut gate = ProgressGate::default();
        let mut reported = self.pieces_done();

        loop {
            if self.picker.lock().expect("lock").is_complete() {
                tasks.shutdown().await;
                return Outcome::Completed;
            }
            if !announced_partial && self.pieces_done() > 0 {
                announced_partial = true;
                self.announce(&env, false).await;
            }
            // Connect to known peers we are not talking to yet.
            let now = Instant::now();
            for (addr, info) in &known {
                if connected.len() >= env.max_peers {
                    break;
                }
                if connected.contains_key(addr)
                    || banned.contains(addr)
                    || impostors.contains(&(addr.clone(), info.device_key))
                    || retry_at.get(addr).is_some_and(|t| *t > now)
                {
                    continue;
                }
                next_id += 1;
                connected.insert(addr.clone(), next_id);
                self.progress
                    .lock()
                    .expect("lock")
                    .peer(addr, &info.user)
                    .connected = true;
                let (dl, env, info, ticket, addr) = (
                    self.clone(),
                    env.clone(),
                    info.clone(),
                    tickets.clone(),
                    addr.clone(),
                );
                let id = next_id;
                tasks.spawn(async move {
                    // A bug in one peer task must not leave the peer counted as connected forever.
                    let run =
                        std::panic::AssertUnwindSafe(peer::run_peer(dl, id, info, ticket, env));
                    let exit = futures::FutureExt::catch_unwind(run)
                        .await
                        .unwrap_or_else(|_| peer::PeerExit::Gone("peer task panicked".into()));
                    (addr, exit)
                });
            }

            let progress_due = gate.next_due();
            tokio::select! {
                Some(joined) = tasks.join_next() => {
                    let Ok((addr, exit)) = joined else { continue };
                    if let Some(id) = connected.remove(&addr) {
                        self.picker.lock().expect("lock").remove_peer(id);
                    }
                    if self.greeted.lock().expect("lock").remove(&addr) {
                        env.events.publish(EventKind::PeerDisconnected {
                            download: self.event_ref(),
                            user: known.get(&addr).map(|p| p.user.clone()).unwrap_or_default(),
                            addr: addr.clone(),
                            reason: exit.describe(),
                        });
                    }
                    self.progress.lock().expect("lock").peer(&addr, "").connected = false;
                    match exit {
                        peer::PeerExit::Liar => {
                            tracing::warn!(peer = %addr, file = %self.meta.name, "peer sent corrupt pieces repeatedly; dropped for this download");
                            banned.insert(addr);
                        }
                        peer::PeerExit::Impostor(listed_key) => {
                            impostors.insert((addr, listed_key));
                        }
                        peer::PeerExit::Fatal(e) => {
                            tasks.shutdown().await;
                            return Outcome::Failed(e);
                        }
                        peer::PeerExit::Gone(why) => {
                            tracing::debug!(peer = %addr, %why, "peer connection ended");
                            retry_at.insert(addr, Instant::now() + RECONNECT_AFTER);
                        }
                        peer::PeerExit::Done => {
                            retry_at.insert(addr, Instant::now() + RECONNECT_AFTER);
                        }
                    }
                }
                _ = tick.tick() => {}
                _ = self.changed.notified() => {}
                _ = sleep_until_some(progress_due) => {}
                _ = self.cancel.cancelled() => {
                    tasks.shutdown().await;
                    return Outcome::Paused;
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
            let wants_refresh = connected.is_empty() || !unavailable.is_empty();
            stalled_since = if stalled {
                stalled_since.or(Some(Instant::now()))
            } else {
                None
            };
            let refresh_due = if wants_refresh {
                REFRESH_STALLED
            } else {
                REFRESH_EVERY
            };
            // Refresh early enough that the new ticket reaches the seeders before the old one
            // expires (ticket TTLs shorter than REFRESH_EVERY exist).
            let ticket_due =
                unix_now() >= renew_at && last_refresh.elapsed() >= Duration::from_secs(1);
            if last_refresh.elapsed() >= refresh_due || ticket_due {
                last_refresh = Instant::now();
                match self.refresh(&env).await {
                    Ok(d) => {
                        renew_at = renew_time(&d.ticket);
                        ticket_tx.send_replace(d.ticket);
                        self.learn_peers(&env, d.peers, &mut known);
                    }
                    Err(e) => {
                        tracing::warn!(file = %self.meta.name, error = %e, "peer refresh failed")
                    }
                }
            }
            if let Some(since) = stalled_since {
                if since.elapsed() >= STALL_TIMEOUT {
                    tasks.shutdown().await;
                    return Outcome::Failed(describe_unavailable(&unavailable));
                }
            }
        }
    }

    fn learn_peers(
        &self,
        env: &DownloadEnv,
        peers: Vec<PeerInfo>,
        known: &mut HashMap<String, PeerInfo>,
    ) {
        for p in peers {
            if p.addr != env.self_addr {
                if !known.contains_key(&p.addr) {
                    env.events.publish(EventKind::HolderFound {
                        download: self.event_ref(),
                        addr: p.addr.clone(),
                        user: p.user.clone(),
                    });
                }
                known.insert(p.addr.clone(), p);
            }
        }
    }

    async fn refresh(&self, env: &DownloadEnv) -> Result<FileDetails, String> {
        let call = Call::GetFile {
            group: self.group.clone(),
            file: self.meta.name.clone(),
        };
        match env.tracker.call(Some(&env.token), call).await {
            Ok(Response::File(d)) if d.meta.sha1 == self.meta.sha1 => Ok(*d),
            Ok(Response::File(_)) => Err("the file changed on the tracker".into()),
            Ok(Response::Error { message, .. }) => Err(message),
            Ok(other) => Err(format!("unexpected tracker answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Tell the tracker we hold (part of) the file, so others can fetch from us.
    async fn announce(&self, env: &DownloadEnv, complete: bool) {
        let call = Call::Share {
            group: self.group.clone(),
            meta: (*self.meta).clone(),
            complete,
        };
        match env.tracker.call(Some(&env.token), call).await {
            Ok(Response::Ok { .. }) => {}
            Ok(other) => {
                tracing::warn!(file = %self.meta.name, answer = ?other, "tracker refused our share announcement")
            }
            Err(e) => {
                tracing::warn!(file = %self.meta.name, error = %e, "could not announce share")
            }
        }
    }

    /// Whole-file SHA1, then move into place and become a full seeder.
    async fn finish(&self, env: &DownloadEnv) -> Result<(), String> {
        let (part, meta, dest) = (self.part.clone(), self.meta.clone(), self.dest.clone());
        let whole = self
            .whole
            .lock()
            .expect("lock")
            .take()
            .ok_or("download finished twice")?;
        let stamp = env
            .pool
            .run(move || -> Result<FileStamp, String> {
                let got = whole
                    .finish()
                    .map_err(|e| format!("cannot compute the whole-file SHA1: {e}"))?;
                if got != meta.sha1 {
                    return Err(format!(
                        "whole-file SHA1 mismatch (got {}, expected {})",
                        got.short(),
                        meta.sha1.short()
                    ));
                }
                let name = dest.file_name().unwrap_or_default();
                part.finish(name).map_err(|e| match e {
                    storage::StorageError::Exists { path } => {
                        format!("{} appeared meanwhile; not overwriting it", path.display())
                    }
                    e => format!("cannot move the file into place: {e}"),
                })?;
                part.stamp().map_err(|e| e.to_string())
            })
            .await?;
        self.shared.completed_at(&self.dest, stamp);
        self.announce(env, true).await;
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
            let len = self.meta.piece_len(piece) as u64;
            self.progress.lock().expect("lock").record_piece(
                addr,
                user,
                len,
                self.started.elapsed(),
            );
            self.changed.notify_waiters();
        }
    }

    fn piece_rejected(&self, piece: u32, peer: PeerId, addr: &str, bad_hash: bool) {
        self.picker.lock().expect("lock").release(piece, peer);
        if bad_hash {
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

/// Pieces a download may hold in memory at once: 16 MiB worth, at least 4.
fn memory_slots(piece_size: u32) -> usize {
    ((16 * 1024 * 1024) / piece_size as usize).max(4)
}

fn describe_unavailable(pieces: &[u32]) -> String {
    let shown: Vec<String> = pieces.iter().take(5).map(|p| p.to_string()).collect();
    let more = if pieces.len() > 5 {
        format!(" and {} more", pieces.len() - 5)
    } else {
        String::new()
    };
    format!(
        "{} piece(s) have no holder online (pieces {}{more}); verified pieces are kept — run download_file again when a seeder is back",
        pieces.len(),
        shown.join(", ")
    )
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

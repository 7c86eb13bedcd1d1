//! Download control: pause, resume, cancel, remove, the queue (`max_active_downloads`) and the
//! automatic retry of downloads that failed for lack of an online holder.
//!
//! Every change of a download's state — started, queued, paused, completed, failed, cancelled,
//! removed — goes through [`Daemon::transition`], which updates show_downloads' list and
//! state.json together and then lets the queue start the next download when a slot freed. It
//! is the one place to hook notifications (control-socket events) into.
//!
//! The coordinator knows nothing of this: pausing or cancelling stops it with its cancellation
//! token (peer tasks are shut down, verified pieces stay in the part file), and resuming starts
//! a fresh coordinator from the part file exactly as a resume after a restart does.
//!
//! Two requests for the same file never both start it: a request reserves the (group, file)
//! synchronously — under the list's lock, before its first `.await` — and keeps the
//! reservation until its entry is in the list (see [`Daemon::reserve`]).
//!
//! Lock order: `downloads` before `ctl.reserved`; `ctl.retry` alone. None is held across an
//! `.await`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use minitorr_proto::control::{
    DownloadRef, DownloadState, DownloadStatus, ErrorKind, ErrorReply, EventKind, RemoveDownloads,
    Response,
};
use minitorr_proto::tracker::{self, Call};

use super::retry::RetryPolicy;
use super::{fail, Daemon, DownloadEntry, Reply};
use crate::download::{is_no_holder_failure, storage, Download};
use crate::sharing::hasher::FileStamp;
use crate::state::{DownloadRecord, RecordState, ShareRecord};

/// How long pause and cancel wait for a running download's coordinator to stop.
const STOP_WAIT: Duration = Duration::from_secs(30);
/// The control task's longest sleep between queue and retry checks.
const CONTROL_TICK: Duration = Duration::from_secs(5);

/// Why a running download is being stopped (none recorded: logout or shutdown, which leave it
/// to resume at the next login).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopIntent {
    Pause,
    Cancel,
}

/// The daemon's download-control state (see the module comment).
#[derive(Default)]
pub struct Control {
    /// (group, file) being started or queued by a request whose entry is not in the list yet;
    /// `true` when it takes a running slot.
    reserved: Mutex<HashMap<(String, String), bool>>,
    /// The task driving each running download, by destination.
    tasks: Mutex<HashMap<PathBuf, JoinHandle<()>>>,
    intents: Mutex<HashMap<PathBuf, StopIntent>>,
    retry: Mutex<RetryPolicy>,
    /// Wakes the control task early (a slot freed, a holder event). Its own `Arc`, so the
    /// sleeping task does not keep the daemon alive.
    wake: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A change of a download's state, applied by [`Daemon::transition`].
pub(crate) enum Change {
    /// A coordinator runs (new download, resume, from the queue, or an automatic retry).
    Started(Arc<Download>),
    /// Waiting for a slot.
    Queued(DownloadRecord),
    Paused,
    Completed,
    Failed(String),
    /// Forgotten, running or not; the caller deletes the part file unless asked to keep it.
    Cancelled,
    /// A finished or failed entry forgotten (`remove`).
    Removed,
}

impl Change {
    fn name(&self) -> &'static str {
        match self {
            Change::Started(_) => "started",
            Change::Queued(_) => "queued",
            Change::Paused => "paused",
            Change::Completed => "completed",
            Change::Failed(_) => "failed",
            Change::Cancelled => "cancelled",
            Change::Removed => "removed",
        }
    }
}

/// A reserved (group, file): released when dropped, after the entry is in the list.
pub(crate) struct Reservation {
    daemon: Arc<Daemon>,
    key: (String, String),
    /// Whether it may start at once (a running slot is free) or must queue.
    pub run: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.daemon
            .ctl
            .reserved
            .lock()
            .expect("lock")
            .remove(&self.key);
    }
}

fn refused(msg: impl Into<String>) -> ErrorReply {
    fail(ErrorKind::Refused, msg)
}

fn not_found(msg: impl Into<String>) -> ErrorReply {
    fail(ErrorKind::NotFound, msg)
}

/// The state show_downloads gives an entry.
fn entry_state(e: &DownloadEntry) -> DownloadState {
    match e {
        DownloadEntry::Live(d) => d.status().state,
        DownloadEntry::Record(r) => record_state(r.state),
    }
}

pub(crate) fn record_state(s: RecordState) -> DownloadState {
    match s {
        RecordState::Downloading => DownloadState::Downloading,
        RecordState::Complete => DownloadState::Complete,
        RecordState::Failed => DownloadState::Failed,
        RecordState::Paused => DownloadState::Paused,
        RecordState::Queued => DownloadState::Queued,
    }
}

/// How events name the download of an entry.
fn entry_ref(e: &DownloadEntry) -> DownloadRef {
    let (group, file, dest) = entry_key(e);
    DownloadRef {
        group: group.to_string(),
        file: file.to_string(),
        dest: dest.to_path_buf(),
    }
}

fn record_ref(r: &DownloadRecord) -> DownloadRef {
    DownloadRef {
        group: r.group.clone(),
        file: r.meta.name.clone(),
        dest: r.dest.clone(),
    }
}

fn entry_key(e: &DownloadEntry) -> (&str, &str, &Path) {
    match e {
        DownloadEntry::Live(d) => (&d.group, &d.meta.name, &d.dest),
        DownloadEntry::Record(r) => (&r.group, &r.meta.name, &r.dest),
    }
}

/// Is this entry a running coordinator (it holds a slot)?
fn is_running(e: &DownloadEntry) -> bool {
    matches!(e, DownloadEntry::Live(d) if !d.is_finished())
}

/// What an entry would be saved as in state.json.
fn entry_record(e: &DownloadEntry) -> DownloadRecord {
    match e {
        DownloadEntry::Record(r) => r.clone(),
        DownloadEntry::Live(d) => {
            let st = d.status();
            DownloadRecord {
                group: d.group.clone(),
                dest: d.dest.clone(),
                meta: d.meta.clone(),
                state: match st.state {
                    DownloadState::Complete => RecordState::Complete,
                    DownloadState::Failed => RecordState::Failed,
                    DownloadState::Paused => RecordState::Paused,
                    DownloadState::Queued => RecordState::Queued,
                    DownloadState::Downloading | DownloadState::Verifying => {
                        RecordState::Downloading
                    }
                },
                error: st.error,
                bytes_done: st.bytes_done,
                pieces_done: st.pieces_done,
                only: d.only.clone(),
            }
        }
    }
}

/// Tokio's clock as a std `Instant` (so paused-time tests drive the retry policy).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Daemon {
    /// Apply one state change of the download to `dest`: show_downloads' list, state.json,
    /// serving, the retry watch; then start queued downloads if a slot freed. Every download
    /// state change goes through here (the place to emit events from).
    pub(crate) async fn transition(self: &Arc<Self>, user: &str, dest: &Path, change: Change) {
        let what = change.name();
        let mut frees_slot = false;
        // What state.json should say afterwards (None: forget the record).
        let saved: Option<DownloadRecord>;
        let mut share: Option<ShareRecord> = None;
        let mut stop_serving: Option<(String, String)> = None;
        // What watchers are told (published once the list says so, see `crate::events`), and
        // the finished download to flush to disk.
        let mut events: Vec<EventKind> = Vec::new();
        let mut finished: Option<Arc<Download>> = None;
        {
            let mut list = self.downloads.lock().expect("lock");
            let pos = list.iter().position(|e| entry_key(e).2 == dest);
            let subject = pos.map(|p| entry_ref(&list[p]));
            match change {
                Change::Started(dl) => {
                    events.push(EventKind::DownloadStarted {
                        download: dl.event_ref(),
                        size: dl.meta.size,
                        pieces_done: dl.pieces_done(),
                        pieces_total: dl.meta.piece_count(),
                    });
                    // A new attempt replaces what show_downloads listed for this destination
                    // (a remembered record, or a failed/finished run of this process).
                    list.retain(|e| match e {
                        DownloadEntry::Record(r) => r.dest != dest,
                        DownloadEntry::Live(d) => !(d.dest == dest && d.is_finished()),
                    });
                    let e = DownloadEntry::Live(dl);
                    let mut rec = entry_record(&e);
                    rec.state = RecordState::Downloading;
                    rec.error = None;
                    list.push(e);
                    saved = Some(rec);
                }
                Change::Queued(mut rec) => {
                    events.push(EventKind::DownloadStateChanged {
                        download: record_ref(&rec),
                        state: DownloadState::Queued,
                    });
                    rec.state = RecordState::Queued;
                    rec.error = None;
                    if let Some(p) = pos {
                        list.remove(p);
                    }
                    list.push(DownloadEntry::Record(rec.clone()));
                    saved = Some(rec);
                }
                Change::Paused => {
                    let Some(p) = pos else { return };
                    frees_slot = is_running(&list[p]);
                    let mut rec = entry_record(&list[p]);
                    rec.state = RecordState::Paused;
                    rec.error = None;
                    events.push(EventKind::DownloadStateChanged {
                        download: record_ref(&rec),
                        state: DownloadState::Paused,
                    });
                    stop_serving = Some((rec.group.clone(), rec.meta.name.clone()));
                    list[p] = DownloadEntry::Record(rec.clone());
                    saved = Some(rec);
                }
                Change::Completed => {
                    let Some(p) = pos else { return };
                    frees_slot = true;
                    let mut rec = entry_record(&list[p]);
                    let mut elapsed_ms = 0;
                    if let DownloadEntry::Live(d) = &list[p] {
                        elapsed_ms = d.status().elapsed_ms;
                        finished = Some(d.clone());
                    }
                    events.push(EventKind::DownloadCompleted {
                        download: record_ref(&rec),
                        path: rec.dest.clone(),
                        elapsed_ms,
                    });
                    rec.state = RecordState::Complete;
                    rec.error = None;
                    rec.bytes_done = rec.meta.size;
                    rec.pieces_done = rec.meta.piece_count();
                    let tree_files = match &list[p] {
                        DownloadEntry::Live(d) => d.finished_tree_files(),
                        DownloadEntry::Record(_) => Vec::new(),
                    };
                    match FileStamp::of(&rec.dest) {
                        // A selective download holds part of the item: it is seeded (as a
                        // partial holder) while this session lasts, but never recorded as a
                        // share (which would announce the whole item at the next login).
                        Ok(_) if !rec.only.is_empty() => {}
                        Ok(stamp) => {
                            events.push(EventKind::ShareAdded {
                                group: rec.group.clone(),
                                file: rec.meta.name.clone(),
                                size: rec.meta.size,
                                sha1: rec.meta.sha1,
                            });
                            share = Some(ShareRecord {
                                group: rec.group.clone(),
                                path: rec.dest.clone(),
                                stamp,
                                meta: rec.meta.clone(),
                                withdrawn: None,
                                tree_files: Arc::new(tree_files),
                            })
                        }
                        Err(e) => tracing::warn!(error = %e, "finished file vanished"),
                    }
                    saved = Some(rec);
                }
                Change::Failed(why) => {
                    let Some(p) = pos else { return };
                    frees_slot = true;
                    let mut rec = entry_record(&list[p]);
                    rec.state = RecordState::Failed;
                    events.push(EventKind::DownloadFailed {
                        download: record_ref(&rec),
                        reason: why.clone(),
                    });
                    rec.error = Some(why);
                    if let DownloadEntry::Record(r) = &mut list[p] {
                        *r = rec.clone();
                    }
                    // A failed download keeps its verified pieces on disk but stops being served.
                    stop_serving = Some((rec.group.clone(), rec.meta.name.clone()));
                    saved = Some(rec);
                }
                Change::Cancelled | Change::Removed => {
                    let Some(p) = pos else { return };
                    frees_slot = is_running(&list[p]);
                    let e = list.remove(p);
                    let (g, f, _) = entry_key(&e);
                    if let Some(download) = subject {
                        events.push(EventKind::DownloadRemoved {
                            download,
                            cancelled: what == "cancelled",
                        });
                    }
                    if what == "cancelled" {
                        stop_serving = Some((g.to_string(), f.to_string()));
                    }
                    saved = None;
                }
            }
        }
        if let Some((group, file)) = stop_serving {
            // Only our partial share of it: a complete copy shared from elsewhere stays.
            if self
                .shares
                .get(&group, &file)
                .is_some_and(|f| !f.is_complete())
            {
                self.shares.remove(&group, &file);
                self.live.close_file(&group, &file);
            }
        }
        // Watchers hear of it now: show_downloads already says so (a `wait` that subscribed
        // and then listed sees it in one or the other, see `Daemon::watch`).
        for ev in events {
            self.bus.publish(ev);
        }
        if let Some(d) = finished {
            // The file is in place and verified; make it durable before the state file says
            // so (a power loss before this point is caught by re-verification at login). After
            // the event: a `wait` need not sit through the flush of a big file.
            match tokio::task::spawn_blocking(move || d.sync_to_disk()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot flush the finished download to disk")
                }
                Err(e) => tracing::warn!(error = %e, "flush task failed"),
            }
        }
        {
            let mut retry = self.ctl.retry.lock().expect("lock");
            match &saved {
                Some(r)
                    if r.state == RecordState::Failed
                        && r.error.as_deref().is_some_and(is_no_holder_failure) =>
                {
                    retry.watch(dest, now())
                }
                _ => retry.forget(dest),
            }
        }
        {
            // `stop_share` may have run since the completion event (it is allowed as soon as
            // the download is no longer live, and the flush above can take seconds): record
            // the share only if the registry still serves it, under `share_ops` as every
            // change to what we share.
            let _ops = match share {
                Some(_) => Some(self.share_ops.lock().await),
                None => None,
            };
            let share = share.filter(|r| {
                self.shares
                    .get(&r.group, &r.meta.name)
                    .is_some_and(|s| s.is_complete() && s.meta.sha1 == r.meta.sha1)
            });
            let mut state = self.state.lock().await;
            let u = state.user(user);
            match &saved {
                Some(rec) => u.upsert_download(rec.clone()),
                None => {
                    u.remove_download(dest);
                }
            }
            if let Some(share) = share {
                u.upsert_share(share);
            }
            self.save_state(&state).await;
        }
        // The share watcher learns of files that started or stopped being shared.
        self.shares.changed().notify_one();
        tracing::info!(dest = %dest.display(), change = what, "download state changed");
        self.ensure_control_task();
        if frees_slot {
            self.pump_queue();
        }
    }

    /// Reserve (group, file) for a request about to start or queue it, before any `.await`.
    /// Refused while another entry for it is running, queued or paused (unless `resuming`,
    /// when the paused or failed entry is the one being resumed) or another request holds it.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        group: &str,
        file: &str,
        resuming: bool,
    ) -> Reply<Reservation> {
        let list = self.downloads.lock().expect("lock");
        for e in list.iter() {
            let (g, f, _) = entry_key(e);
            if g != group || f != file {
                continue;
            }
            match entry_state(e) {
                DownloadState::Downloading if is_running(e) => {
                    return Err(refused(format!("already downloading {file} from {group}")))
                }
                DownloadState::Queued => {
                    return Err(refused(format!(
                        "{file} from {group} is already queued; see: minitorrctl show_downloads"
                    )))
                }
                DownloadState::Paused if !resuming => {
                    return Err(refused(format!(
                        "{file} from {group} is paused; continue it with: minitorrctl resume \
                         {group} {file}"
                    )))
                }
                _ => {}
            }
        }
        // A download resumed at login is re-verifying its part file before it runs again
        // (lock order: downloads, then verifying — as in show_downloads).
        if self
            .verifying
            .lock()
            .expect("lock")
            .iter()
            .any(|v| v.rec.group == group && v.rec.meta.name == file)
        {
            return Err(refused(format!(
                "{file} from {group} is being re-verified and resumes by itself; see: minitorrctl show_downloads"
            )));
        }
        let mut reserved = self.ctl.reserved.lock().expect("lock");
        let key = (group.to_string(), file.to_string());
        if reserved.contains_key(&key) {
            return Err(refused(format!("already downloading {file} from {group}")));
        }
        let running = list.iter().filter(|e| is_running(e)).count()
            + reserved.values().filter(|run| **run).count();
        let run = running < self.cfg.max_active_downloads;
        reserved.insert(key.clone(), run);
        Ok(Reservation {
            daemon: self.clone(),
            key,
            run,
        })
    }

    /// Remember the task driving the download to `dest` (pause and cancel wait for it).
    pub(crate) fn track_task(&self, dest: &Path, handle: JoinHandle<()>) {
        self.ctl
            .tasks
            .lock()
            .expect("lock")
            .insert(dest.to_path_buf(), handle);
    }

    /// The download task for `dest` ended with a stop: why (pause, cancel, or none).
    pub(crate) fn stop_intent(&self, dest: &Path) -> Option<StopIntent> {
        self.ctl.tasks.lock().expect("lock").remove(dest);
        self.ctl.intents.lock().expect("lock").remove(dest)
    }

    /// The download task for `dest` ended (any outcome): forget its handle first, so a resume
    /// starting right after registers its own.
    pub(crate) fn task_ended(&self, dest: &Path) {
        self.ctl.tasks.lock().expect("lock").remove(dest);
    }

    /// Stop the running download `d` for `intent` and wait until its coordinator and peer
    /// tasks are gone and the transition is recorded.
    async fn stop_running(&self, d: &Arc<Download>, intent: StopIntent) {
        self.ctl
            .intents
            .lock()
            .expect("lock")
            .insert(d.dest.clone(), intent);
        d.pause();
        let handle = self.ctl.tasks.lock().expect("lock").remove(&d.dest);
        if let Some(h) = handle {
            if tokio::time::timeout(STOP_WAIT, h).await.is_err() {
                tracing::warn!(dest = %d.dest.display(), "download did not stop in time");
            }
        }
    }

    /// Put a queued download into `dest`'s queue entry (the tracker knows the file).
    pub(crate) async fn queue_download(
        self: &Arc<Self>,
        group: String,
        file: String,
        dest: PathBuf,
        only: Vec<String>,
    ) -> Reply<DownloadStatus> {
        let session = self.current_session()?;
        let details = self.file_details(&group, &file).await?;
        super::trees::wanted_files(&details.meta, &only).map_err(|e| {
            minitorr_proto::control::ErrorReply {
                kind: ErrorKind::InvalidInput,
                message: e,
            }
        })?;
        // Refuse now what would be refused at start (directory not ours, no room), so a
        // queued download does not fail later for a reason known today.
        let (d, name, size) = (dest.clone(), details.meta.name.clone(), details.meta.size);
        self.pool
            .run(move || {
                let dir = storage::DestDir::open(d.parent().unwrap_or(Path::new("/")))?;
                let held = std::fs::symlink_metadata(storage::part_path_for(&d))
                    .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
                    .unwrap_or(0);
                dir.check_space(&name, size, held)
            })
            .await
            .map_err(super::files::storage_reply)?;
        let rec = DownloadRecord {
            group,
            dest: dest.clone(),
            meta: Arc::new(details.meta),
            state: RecordState::Queued,
            error: None,
            bytes_done: 0,
            pieces_done: 0,
            only,
        };
        self.transition(&session.user, &dest, Change::Queued(rec.clone()))
            .await;
        Ok(super::files::record_status(&rec))
    }

    /// Start queued downloads while slots are free (after a download stops, at login, and on
    /// the control task's tick).
    pub(crate) fn pump_queue(self: &Arc<Self>) {
        let Some(session) = self.session.read().expect("lock").clone() else {
            return;
        };
        loop {
            let next = {
                let list = self.downloads.lock().expect("lock");
                let mut reserved = self.ctl.reserved.lock().expect("lock");
                let running = list.iter().filter(|e| is_running(e)).count()
                    + reserved.values().filter(|run| **run).count();
                if running >= self.cfg.max_active_downloads {
                    return;
                }
                let Some(rec) = list.iter().find_map(|e| match e {
                    DownloadEntry::Record(r)
                        if r.state == RecordState::Queued
                            && !reserved.contains_key(&(r.group.clone(), r.meta.name.clone())) =>
                    {
                        Some(r.clone())
                    }
                    _ => None,
                }) else {
                    return;
                };
                let key = (rec.group.clone(), rec.meta.name.clone());
                reserved.insert(key.clone(), true);
                (
                    rec,
                    Reservation {
                        daemon: self.clone(),
                        key,
                        run: true,
                    },
                )
            };
            let (rec, res) = next;
            let (me, user) = (self.clone(), session.user.clone());
            tokio::spawn(async move {
                let started = me
                    .start_download(
                        rec.group.clone(),
                        rec.meta.name.clone(),
                        rec.dest.clone(),
                        Some(rec.meta.sha1),
                        rec.only.clone(),
                    )
                    .await;
                drop(res);
                match started {
                    Ok(_) => {}
                    // The tracker is away: stay queued, the next tick tries again.
                    Err(e) if e.kind == ErrorKind::TrackerUnavailable => {
                        tracing::info!(file = %rec.meta.name, error = %e.message, "queued download waits for the tracker")
                    }
                    Err(e) => {
                        me.transition(&user, &rec.dest, Change::Failed(e.message))
                            .await
                    }
                }
            });
        }
    }

    /// Start the control task (queue and retry checks) if it is not running. It holds only a
    /// weak reference, so it ends with the daemon.
    pub(crate) fn ensure_control_task(self: &Arc<Self>) {
        let mut task = self.ctl.task.lock().expect("lock");
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let me = Arc::downgrade(self);
        *task = Some(tokio::spawn(async move {
            loop {
                let (sleep, wake) = {
                    let Some(d) = me.upgrade() else { return };
                    let due = d.ctl.retry.lock().expect("lock").next_due();
                    let sleep = due
                        .map(|t| t.saturating_duration_since(now()))
                        .unwrap_or(CONTROL_TICK)
                        .min(CONTROL_TICK);
                    // Hold the daemon only while working, not while sleeping.
                    (sleep, d.ctl.wake.clone())
                };
                tokio::select! {
                    _ = tokio::time::sleep(sleep) => {}
                    _ = wake.notified() => {}
                }
                let Some(d) = me.upgrade() else { return };
                d.pump_queue();
                d.retry_check().await;
            }
        }));
    }

    /// Ask the tracker again for holders of every failed download whose check is due; resume
    /// those with an online holder. A holder event calls [`Daemon::retry_failed_now`] instead
    /// of waiting for the schedule.
    pub(crate) async fn retry_check(self: &Arc<Self>) {
        let Some(session) = self.session.read().expect("lock").clone() else {
            self.ctl.retry.lock().expect("lock").retain(|_| false);
            return;
        };
        let failed: Vec<DownloadRecord> = self
            .downloads
            .lock()
            .expect("lock")
            .iter()
            .map(entry_record)
            .filter(|r| {
                r.state == RecordState::Failed
                    && r.error.as_deref().is_some_and(is_no_holder_failure)
            })
            .collect();
        let due = {
            let mut retry = self.ctl.retry.lock().expect("lock");
            // Entries listed since a restart (login) are watched from now on; forgotten ones go.
            retry.retain(|d| failed.iter().any(|r| r.dest == d));
            for r in &failed {
                retry.watch(&r.dest, now());
            }
            retry.take_due(now())
        };
        for dest in due {
            let Some(rec) = failed.iter().find(|r| r.dest == dest) else {
                continue;
            };
            let call = Call::GetHolders {
                group: rec.group.clone(),
                file: rec.meta.name.clone(),
            };
            let holder_online = match self.call_with(Some(&session.token), call).await {
                Ok(tracker::Response::Holders(d)) => {
                    d.sha1 == rec.meta.sha1 && d.peers.iter().any(|p| p.addr != session.peer_addr)
                }
                _ => false,
            };
            if !holder_online {
                self.ctl
                    .retry
                    .lock()
                    .expect("lock")
                    .nobody_yet(&dest, now());
                continue;
            }
            tracing::info!(file = %rec.meta.name, group = %rec.group, "a holder is back online; retrying the download");
            if let Err(e) = self.restart(&rec.group, &rec.meta.name).await {
                tracing::info!(file = %rec.meta.name, error = %e.message, "automatic retry did not start");
                self.ctl
                    .retry
                    .lock()
                    .expect("lock")
                    .nobody_yet(&dest, now());
            }
        }
    }

    /// Check every failed download for an online holder now (e.g. on a tracker event saying a
    /// holder came online), instead of at its next scheduled check.
    pub fn retry_failed_now(self: &Arc<Self>) {
        self.ctl.retry.lock().expect("lock").all_due_now(now());
        self.ensure_control_task();
        self.ctl.wake.notify_one();
    }

    /// The entry `remove`, `cancel`, `pause` and `resume` act on for (group, file): an active
    /// one (running, queued, paused) first, else the most recent other one.
    fn find_entry(&self, group: &str, file: &str) -> Option<(DownloadState, DownloadEntry)> {
        let list = self.downloads.lock().expect("lock");
        let mine = || {
            list.iter().filter(|e| {
                let (g, f, _) = entry_key(e);
                g == group && f == file
            })
        };
        let active = mine().find(|e| {
            is_running(e)
                || matches!(
                    entry_state(e),
                    DownloadState::Queued | DownloadState::Paused
                )
        });
        let e = active.or_else(|| mine().next_back())?;
        let e = match e {
            DownloadEntry::Live(d) => DownloadEntry::Live(d.clone()),
            DownloadEntry::Record(r) => DownloadEntry::Record(r.clone()),
        };
        Some((entry_state(&e), e))
    }

    /// Start a paused or failed download again from its part file, or queue it.
    async fn restart(self: &Arc<Self>, group: &str, file: &str) -> Reply<DownloadStatus> {
        let session = self.current_session()?;
        let Some((state, entry)) = self.find_entry(group, file) else {
            return Err(not_found(format!("no download of {file} from {group}")));
        };
        match state {
            DownloadState::Paused | DownloadState::Failed => {}
            DownloadState::Downloading if is_running(&entry) => {
                return Err(refused(format!(
                    "{file} from {group} is already downloading"
                )))
            }
            DownloadState::Downloading | DownloadState::Verifying => {}
            DownloadState::Queued => {
                return Err(refused(format!(
                    "{file} from {group} is queued; it starts when a download slot frees \
                     (max_active_downloads)"
                )))
            }
            DownloadState::Complete => {
                return Err(refused(format!("{file} from {group} is already complete")))
            }
        }
        let rec = entry_record(&entry);
        let res = self.reserve(group, file, true)?;
        if res.run {
            let dl = self
                .start_download(
                    rec.group.clone(),
                    rec.meta.name.clone(),
                    rec.dest.clone(),
                    Some(rec.meta.sha1),
                    rec.only.clone(),
                )
                .await?;
            drop(res);
            Ok(dl.status())
        } else {
            self.transition(&session.user, &rec.dest, Change::Queued(rec.clone()))
                .await;
            drop(res);
            let mut rec = rec;
            rec.state = RecordState::Queued;
            Ok(super::files::record_status(&rec))
        }
    }

    pub(super) async fn resume_download(
        self: &Arc<Self>,
        group: String,
        file: String,
    ) -> Reply<Response> {
        Ok(Response::DownloadStarted(
            self.restart(&group, &file).await?,
        ))
    }

    pub(super) async fn pause_download(
        self: &Arc<Self>,
        group: String,
        file: String,
    ) -> Reply<Response> {
        let session = self.current_session()?;
        let Some((state, entry)) = self.find_entry(&group, &file) else {
            return Err(not_found(format!("no download of {file} from {group}")));
        };
        let done = |m: String| Ok(Response::Done { message: m });
        match (&entry, state) {
            (DownloadEntry::Live(d), _) if is_running(&entry) => {
                self.stop_running(d, StopIntent::Pause).await;
                match self.find_entry(&group, &file).map(|(s, _)| s) {
                    Some(DownloadState::Complete) => {
                        done(format!("{file} from {group} completed before it could pause"))
                    }
                    Some(DownloadState::Failed) => {
                        done(format!("{file} from {group} failed before it could pause"))
                    }
                    _ => done(format!(
                        "paused {file} from {group}; continue with: minitorrctl resume {group} {file}"
                    )),
                }
            }
            (_, DownloadState::Queued) => {
                let dest = entry_key(&entry).2.to_path_buf();
                self.transition(&session.user, &dest, Change::Paused).await;
                done(format!("paused {file} from {group} (it was queued)"))
            }
            (_, DownloadState::Paused) => done(format!("{file} from {group} is already paused")),
            (_, DownloadState::Complete) => {
                Err(refused(format!("{file} from {group} is already complete")))
            }
            (_, DownloadState::Failed) => Err(refused(format!(
                "{file} from {group} has failed; nothing to pause (resume it, or cancel it)"
            ))),
            (_, DownloadState::Verifying) => Err(refused(format!(
                "{file} from {group} is being re-verified; pause it once it runs again"
            ))),
            (_, DownloadState::Downloading) => Err(refused(format!(
                "{file} from {group} is not running (it was not resumed at login); resume or \
                 cancel it"
            ))),
        }
    }

    pub(super) async fn cancel_download(
        self: &Arc<Self>,
        group: String,
        file: String,
        keep: bool,
    ) -> Reply<Response> {
        let session = self.current_session()?;
        let Some((state, entry)) = self.find_entry(&group, &file) else {
            return Err(not_found(format!("no download of {file} from {group}")));
        };
        if state == DownloadState::Complete {
            return Err(refused(format!(
                "{file} from {group} is already complete; to forget the entry: minitorrctl \
                 remove {group} {file}"
            )));
        }
        let dest = entry_key(&entry).2.to_path_buf();
        match &entry {
            DownloadEntry::Live(d) if is_running(&entry) => {
                self.stop_running(d, StopIntent::Cancel).await;
                if self.find_entry(&group, &file).map(|(s, _)| s) == Some(DownloadState::Complete) {
                    return Err(refused(format!(
                        "{file} from {group} completed before it could be cancelled"
                    )));
                }
            }
            _ => {
                self.transition(&session.user, &dest, Change::Cancelled)
                    .await
            }
        }
        let part = storage::part_path_for(&dest);
        let note = if keep {
            format!("; kept {}", part.display())
        } else {
            let d = dest.clone();
            match self.pool.run(move || storage::remove_part_file(&d)).await {
                Ok(true) => format!("; deleted {}", part.display()),
                Ok(false) => String::new(),
                Err(e) => format!("; could not delete the part file: {e}"),
            }
        };
        Ok(Response::Done {
            message: format!("cancelled the download of {file} from {group}{note}"),
        })
    }

    pub(super) async fn remove_downloads(
        self: &Arc<Self>,
        which: RemoveDownloads,
    ) -> Reply<Response> {
        let session = self.current_session()?;
        let wanted: Vec<(DownloadState, PathBuf)> = {
            let list = self.downloads.lock().expect("lock");
            list.iter()
                .filter(|e| !is_running(e))
                .filter_map(|e| {
                    let (g, f, dest) = entry_key(e);
                    let st = entry_state(e);
                    let pick = match &which {
                        RemoveDownloads::One { group, file } => {
                            g == group
                                && f == file
                                && matches!(st, DownloadState::Complete | DownloadState::Failed)
                        }
                        RemoveDownloads::Failed => st == DownloadState::Failed,
                        RemoveDownloads::Complete => st == DownloadState::Complete,
                    };
                    pick.then(|| (st, dest.to_path_buf()))
                })
                .collect()
        };
        if let RemoveDownloads::One { group, file } = &which {
            if wanted.is_empty() {
                return match self.find_entry(group, file) {
                    Some(_) => Err(refused(format!(
                        "{file} from {group} is neither complete nor failed; stop it with: \
                         minitorrctl cancel {group} {file}"
                    ))),
                    None => Err(not_found(format!(
                        "no download of {file} from {group} in show_downloads"
                    ))),
                };
            }
        }
        for (st, dest) in &wanted {
            self.transition(&session.user, dest, Change::Removed).await;
            if *st == DownloadState::Failed {
                // Nothing can resume it any more: its verified pieces would be a stray file.
                let d = dest.clone();
                if let Err(e) = self.pool.run(move || storage::remove_part_file(&d)).await {
                    tracing::warn!(dest = %dest.display(), error = %e, "cannot delete the part file of a forgotten download");
                }
            }
        }
        Ok(Response::Done {
            message: format!(
                "forgot {} download(s) (finished files stay where they are)",
                wanted.len()
            ),
        })
    }

    /// Logout and shutdown: nothing is retried or started without a session.
    pub(crate) fn stop_control(&self) {
        self.ctl.retry.lock().expect("lock").retain(|_| false);
        self.ctl.intents.lock().expect("lock").clear();
    }
}

impl Daemon {
    /// A holder of `file` in `group` came online (tracker event): a download of it that failed
    /// for lack of holders is checked now, not at its next scheduled check (up to 30 s away).
    pub(crate) fn holder_back(self: &Arc<Self>, group: &str, file: &str) {
        let waiting = self
            .downloads
            .lock()
            .expect("lock")
            .iter()
            .map(entry_record)
            .any(|r| {
                r.state == RecordState::Failed
                    && r.group == group
                    && r.meta.name == file
                    && r.error.as_deref().is_some_and(is_no_holder_failure)
            });
        if waiting {
            self.retry_failed_now();
        }
    }
}

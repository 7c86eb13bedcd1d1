//! `list_shares`, and keeping the tracker's view of our shares true to the disk: a shared file
//! that changes or vanishes is withdrawn from the tracker at once (downloaders are never sent
//! to a holder that cannot serve), and offered again when it comes back with the shared
//! content.
//!
//! Detection, fastest first: inotify watches on the directories of shared files (the `notify`
//! crate), a stat sweep every [`SWEEP_EVERY`] as a fallback (inotify limits, network file
//! systems), and the peer server's own check before each piece it serves (which wakes this
//! watcher). What to do about a record is decided by the pure [`verdict`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use minitorr_proto::control::{ErrorKind, Response, ShareState, ShareStatus};
use minitorr_proto::tracker::Call;

use super::{Daemon, Reply};
use crate::sharing::hasher::{hash_file, FileStamp};
use crate::sharing::ShareKey;
use crate::state::{ShareRecord, Withdrawn};
use crate::tracker::Session;

/// The fallback: every shared file is stat'ed this often.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// After an inotify event, wait this long for the burst it belongs to (a file being written).
const SETTLE: Duration = Duration::from_millis(100);

/// What to do about one share record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Stop serving, tell the tracker, remember why.
    Withdraw(Withdrawn),
    /// Register with the tracker and serve (it is unchanged, or came back unchanged).
    Offer,
    /// Something is at the path with another stamp: hash it to see if the content is ours.
    Rehash,
}

/// Decide from the recorded stamp, the stamp on disk now (`None`: gone), whether we serve the
/// record right now, why it was withdrawn, and the stamp of a file at its path already hashed
/// and found different (so it is not hashed again until it changes again).
pub fn verdict(
    recorded: FileStamp,
    now: Option<FileStamp>,
    served: bool,
    withdrawn: Option<Withdrawn>,
    known_different: Option<FileStamp>,
) -> Verdict {
    match now {
        None if served || withdrawn != Some(Withdrawn::Missing) => {
            Verdict::Withdraw(Withdrawn::Missing)
        }
        None => Verdict::Keep,
        Some(now) if now == recorded => {
            if served {
                Verdict::Keep
            } else {
                Verdict::Offer
            }
        }
        // Changed while served: withdraw first (at once), hash at the next look.
        Some(_) if served => Verdict::Withdraw(Withdrawn::Changed),
        Some(now) if known_different == Some(now) => {
            if withdrawn == Some(Withdrawn::Changed) {
                Verdict::Keep
            } else {
                Verdict::Withdraw(Withdrawn::Changed)
            }
        }
        Some(_) => Verdict::Rehash,
    }
}

/// The watcher's memory between rounds.
#[derive(Default)]
pub(crate) struct WatchCtx {
    /// Stamps of files hashed and found to differ from what was shared.
    different: HashMap<ShareKey, FileStamp>,
    /// Withdrawals the tracker has not heard of yet (it was unreachable).
    unsent: HashSet<ShareKey>,
}

fn key_of(rec: &ShareRecord) -> ShareKey {
    ShareKey {
        group: rec.group.clone(),
        file: rec.meta.name.clone(),
    }
}

impl Daemon {
    pub(super) async fn list_shares(&self) -> Reply<Response> {
        let session = self.current_session()?;
        let records = self.state.lock().await.user(&session.user).shares.clone();
        let mut out: Vec<ShareStatus> = records
            .into_iter()
            .map(|rec| {
                let state = match rec.withdrawn {
                    Some(Withdrawn::Changed) => ShareState::Changed,
                    Some(Withdrawn::Missing) => ShareState::Missing,
                    None if self.serves(&rec) => ShareState::Serving,
                    None => ShareState::Waiting,
                };
                let (uploaded_bytes, peers_served) =
                    self.shares.stats(&rec.group, &rec.meta.name).snapshot();
                ShareStatus {
                    group: rec.group,
                    file: rec.meta.name.clone(),
                    path: rec.path,
                    size: rec.meta.size,
                    uploaded_bytes,
                    peers_served,
                    state,
                }
            })
            .collect();
        // A download that just completed is served before its record is saved (that waits
        // for the file's flush to disk, and `download_file --wait` does not): show it too.
        let recorded: HashSet<(String, String)> = out
            .iter()
            .map(|s| (s.group.clone(), s.file.clone()))
            .collect();
        for f in self.shares.complete() {
            if recorded.contains(&(f.group.clone(), f.meta.name.clone())) {
                continue;
            }
            let (uploaded_bytes, peers_served) =
                self.shares.stats(&f.group, &f.meta.name).snapshot();
            out.push(ShareStatus {
                group: f.group.clone(),
                file: f.meta.name.clone(),
                path: f.path(),
                size: f.meta.size,
                uploaded_bytes,
                peers_served,
                state: ShareState::Serving,
            });
        }
        out.sort_by(|a, b| (&a.group, &a.file).cmp(&(&b.group, &b.file)));
        Ok(Response::Shares(out))
    }

    /// Is this record's file what the registry serves right now?
    fn serves(&self, rec: &ShareRecord) -> bool {
        self.shares
            .get(&rec.group, &rec.meta.name)
            .is_some_and(|s| s.is_complete() && s.path() == rec.path)
    }

    /// Watch this login's shares until logout (the task is aborted by `stop_activity`).
    pub(super) fn start_share_watch(self: &Arc<Self>, session: Session) {
        let me = Arc::downgrade(self);
        let changed = self.shares.changed();
        let task = async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
            let paths: Arc<Mutex<super::trees::WatchSet>> = Arc::default();
            let seen = paths.clone();
            let mut watcher = notify::recommended_watcher(
                move |res: notify::Result<notify::Event>| {
                    let Ok(ev) = res else { return };
                    let ours = ev.need_rescan() || {
                        let paths = seen.lock().expect("lock");
                        ev.paths.iter().any(|p| paths.concerns(p))
                    };
                    if ours {
                        let _ = tx.try_send(());
                    }
                },
            )
            .map_err(|e| tracing::warn!(error = %e, "cannot watch shared files; checking them every {}s instead", SWEEP_EVERY.as_secs()))
            .ok();
            let mut dirs: HashSet<PathBuf> = HashSet::new();
            let mut ctx = WatchCtx::default();
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = sweep.tick() => {}
                    Some(()) = rx.recv() => {
                        tokio::time::sleep(SETTLE).await;
                        let _ = rx.try_recv();
                    }
                    _ = changed.notified() => {}
                }
                let Some(d) = me.upgrade() else { return };
                let Some(now) = d.check_shares(&session, &mut ctx).await else {
                    return;
                };
                let want = now.dirs();
                if let Some(w) = watcher.as_mut() {
                    for dir in dirs.difference(&want) {
                        let _ = w.unwatch(dir);
                    }
                    // A directory that cannot be watched (gone) is tried again next round.
                    dirs.retain(|d| want.contains(d));
                    for dir in &want {
                        if !dirs.contains(dir) && w.watch(dir, RecursiveMode::NonRecursive).is_ok()
                        {
                            dirs.insert(dir.clone());
                        }
                    }
                }
                *paths.lock().expect("lock") = now;
            }
        };
        if let Some(old) = self
            .share_watch
            .lock()
            .expect("lock")
            .replace(tokio::spawn(task))
        {
            old.abort();
        }
    }

    /// One round over the user's share records. Returns their paths (to watch), or `None`
    /// once the session is over.
    pub(crate) async fn check_shares(
        self: &Arc<Self>,
        session: &Session,
        ctx: &mut WatchCtx,
    ) -> Option<super::trees::WatchSet> {
        let current = |d: &Daemon| {
            d.session
                .read()
                .expect("lock")
                .as_ref()
                .is_some_and(|s| s.token == session.token)
        };
        if !current(self) {
            return None;
        }
        let records = self.state.lock().await.user(&session.user).shares.clone();
        let mut paths = super::trees::WatchSet::default();
        for r in &records {
            super::trees::watch_paths(r, &mut paths);
        }
        for key in ctx.unsent.clone() {
            if self.tell_tracker_stop(session, &key).await {
                ctx.unsent.remove(&key);
            }
        }
        for rec in records {
            let key = key_of(&rec);
            // A download of the same name owns that entry of the registry meanwhile.
            if self.live_download(&rec.group, &rec.meta.name).is_some() {
                continue;
            }
            let r = rec.clone();
            let now = self.pool.run(move || super::trees::stamp_now(&r)).await;
            let served = self.serves(&rec);
            // A tree is not re-hashed: any of its files changed or gone withdraws it, and it
            // is offered again once every file matches its stamp again.
            let known_different = if rec.meta.is_tree() {
                now.filter(|n| *n != rec.stamp)
            } else {
                ctx.different.get(&key).copied()
            };
            let v = verdict(rec.stamp, now, served, rec.withdrawn, known_different);
            match v {
                Verdict::Keep => {}
                Verdict::Withdraw(why) => self.withdraw(session, &rec, why, ctx).await,
                Verdict::Offer => self.offer(session, &rec, rec.stamp, ctx).await,
                Verdict::Rehash => {
                    let (p, n, ps) = (rec.path.clone(), rec.meta.name.clone(), rec.meta.piece_size);
                    match self.pool.run(move || hash_file(&p, &n, ps)).await {
                        Ok((meta, stamp)) if meta.sha1 == rec.meta.sha1 => {
                            ctx.different.remove(&key);
                            self.offer(session, &rec, stamp, ctx).await;
                        }
                        Ok((_, stamp)) => {
                            ctx.different.insert(key, stamp);
                            if rec.withdrawn != Some(Withdrawn::Changed) {
                                self.withdraw(session, &rec, Withdrawn::Changed, ctx).await;
                            }
                        }
                        // Changing while we read it, or unreadable: look again next round.
                        Err(e) => {
                            tracing::debug!(path = %rec.path.display(), error = %e, "cannot re-hash shared file")
                        }
                    }
                }
            }
            if !current(self) {
                return None;
            }
        }
        Some(paths)
    }

    async fn withdraw(
        &self,
        session: &Session,
        rec: &ShareRecord,
        why: Withdrawn,
        ctx: &mut WatchCtx,
    ) {
        let (group, file) = (&rec.group, &rec.meta.name);
        let _ops = self.share_ops.lock().await;
        if !self.still_recorded(session, rec).await {
            return;
        }
        if self
            .shares
            .remove_if(group, file, |s| s.is_complete() && s.path() == rec.path)
            .is_some()
        {
            self.live.close_file(group, file);
            let reason = match why {
                Withdrawn::Changed => "the file changed on disk",
                Withdrawn::Missing => "the file is gone from disk",
            };
            self.publish_withdrawn(group, file, reason);
        }
        let what = match why {
            Withdrawn::Changed => "it changed",
            Withdrawn::Missing => "it is gone",
        };
        // "shared file changed on disk" is what the peer server logs too: one phrase to grep.
        tracing::warn!(%file, %group, path = %rec.path.display(), "shared file changed on disk ({what}); withdrawn from the tracker");
        let key = key_of(rec);
        if !self.tell_tracker_stop(session, &key).await {
            ctx.unsent.insert(key);
        }
        self.set_record(session, rec, |r| r.withdrawn = Some(why))
            .await;
    }

    /// Tell the tracker we no longer hold `key`. False if it could not be reached.
    async fn tell_tracker_stop(&self, session: &Session, key: &ShareKey) -> bool {
        let call = Call::StopShare {
            group: key.group.clone(),
            file: key.file.clone(),
        };
        match self.call_with(Some(&session.token), call).await {
            Ok(_) => true,
            Err(e) if e.kind == ErrorKind::TrackerUnavailable => false,
            // Not listed (any more), group gone, …: nothing left to withdraw.
            Err(_) => true,
        }
    }

    async fn offer(
        &self,
        session: &Session,
        rec: &ShareRecord,
        stamp: FileStamp,
        ctx: &mut WatchCtx,
    ) {
        let (group, file) = (&rec.group, &rec.meta.name);
        let _ops = self.share_ops.lock().await;
        // The user may have stopped this share since the round read its record, or shared it
        // again (then it is served already).
        if !self.still_recorded(session, rec).await || self.serves(rec) {
            return;
        }
        let shared = match super::trees::open_share(rec, stamp) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(path = %rec.path.display(), error = %e, "cannot open shared file");
                return;
            }
        };
        let call = Call::Share {
            group: group.clone(),
            meta: rec.meta.clone(),
            complete: true,
        };
        match self.call_with(Some(&session.token), call).await {
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(%file, %group, error = %e.message, "cannot offer shared file yet");
                return;
            }
        }
        if self
            .session
            .read()
            .expect("lock")
            .as_ref()
            .is_none_or(|s| s.token != session.token)
        {
            return;
        }
        ctx.unsent.remove(&key_of(rec));
        self.publish_share_added(&shared);
        self.shares.insert(shared);
        if rec.withdrawn.is_some() {
            tracing::info!(%file, %group, path = %rec.path.display(), "shared file is back unchanged; offered again");
        }
        self.set_record(session, rec, |r| {
            r.withdrawn = None;
            r.stamp = stamp;
        })
        .await;
    }

    /// Is `rec` (same group, name, path and content) still one of the user's share records?
    async fn still_recorded(&self, session: &Session, rec: &ShareRecord) -> bool {
        self.state
            .lock()
            .await
            .user(&session.user)
            .shares
            .iter()
            .any(|r| {
                r.group == rec.group
                    && r.meta.name == rec.meta.name
                    && r.path == rec.path
                    && r.meta.sha1 == rec.meta.sha1
            })
    }

    /// The tracker says the entry `file` of `group` is gone (its owner removed it, or nobody
    /// shared it any more). Events arrive late: the entry may have been gone only between
    /// our own `stop_share` and a new `upload_file` of the same file, whose registration this
    /// event must not undo. So, with every other share change held off, ask the tracker
    /// whether the entry exists now, and forget our share only if it does not.
    pub(super) async fn file_removed(&self, session: &Session, group: &str, file: &str) {
        let _ops = self.share_ops.lock().await;
        if !self
            .shares
            .get(group, file)
            .is_some_and(|f| f.is_complete())
            || self.live_download(group, file).is_some()
        {
            return;
        }
        let listed = match self
            .call_with(
                Some(&session.token),
                Call::ListFiles {
                    group: group.to_string(),
                },
            )
            .await
        {
            Ok(minitorr_proto::tracker::Response::Files(files)) => {
                files.iter().any(|f| f.name == file)
            }
            // Cannot tell (tracker gone again, group gone): trust the event.
            _ => false,
        };
        if listed {
            tracing::debug!(%file, %group, "file_removed event is older than our share of it; kept");
            return;
        }
        if self.shares.remove(group, file).is_some() {
            self.publish_withdrawn(group, file, "removed from the group");
        }
        // Forget it in state.json too, or the next login would register the entry the group's
        // owner just removed all over again.
        let mut state = self.state.lock().await;
        if state.user(&session.user).remove_share(group, file) {
            self.save_state(&state).await;
        }
    }

    /// Update the user's record for the same file at the same path, if it is still there.
    async fn set_record(
        &self,
        session: &Session,
        rec: &ShareRecord,
        change: impl FnOnce(&mut ShareRecord),
    ) {
        let mut state = self.state.lock().await;
        let found =
            state.user(&session.user).shares.iter_mut().find(|r| {
                r.group == rec.group && r.meta.name == rec.meta.name && r.path == rec.path
            });
        if let Some(r) = found {
            change(r);
            self.save_state(&state).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(size: u64, mtime_ns: i128) -> FileStamp {
        FileStamp {
            size,
            mtime_ns,
            dev: 1,
            ino: 2,
        }
    }

    #[test]
    fn a_served_file_that_changes_or_vanishes_is_withdrawn_at_once() {
        let rec = st(10, 1);
        assert_eq!(verdict(rec, Some(rec), true, None, None), Verdict::Keep);
        assert_eq!(
            verdict(rec, None, true, None, None),
            Verdict::Withdraw(Withdrawn::Missing)
        );
        // Even if the new content might be the same (a touch): withdraw first, hash later.
        assert_eq!(
            verdict(rec, Some(st(10, 2)), true, None, None),
            Verdict::Withdraw(Withdrawn::Changed)
        );
        // Another inode at the path (replaced by rename) is a change too.
        let other = FileStamp { ino: 3, ..rec };
        assert_eq!(
            verdict(rec, Some(other), true, None, None),
            Verdict::Withdraw(Withdrawn::Changed)
        );
    }

    #[test]
    fn a_withdrawn_file_is_offered_again_only_with_the_shared_content() {
        let rec = st(10, 1);
        let m = Some(Withdrawn::Missing);
        let c = Some(Withdrawn::Changed);
        assert_eq!(verdict(rec, None, false, m, None), Verdict::Keep);
        assert_eq!(verdict(rec, Some(rec), false, m, None), Verdict::Offer);
        assert_eq!(verdict(rec, Some(rec), false, c, None), Verdict::Offer);
        // Something else there: hash it once…
        assert_eq!(
            verdict(rec, Some(st(11, 5)), false, m, None),
            Verdict::Rehash
        );
        assert_eq!(
            verdict(rec, Some(st(11, 5)), false, c, None),
            Verdict::Rehash
        );
        // …and not again while it stays that way.
        assert_eq!(
            verdict(rec, Some(st(11, 5)), false, c, Some(st(11, 5))),
            Verdict::Keep
        );
        assert_eq!(
            verdict(rec, Some(st(11, 5)), false, m, Some(st(11, 5))),
            Verdict::Withdraw(Withdrawn::Changed)
        );
        assert_eq!(
            verdict(rec, Some(st(11, 6)), false, c, Some(st(11, 5))),
            Verdict::Rehash
        );
        // Changed, then deleted.
        assert_eq!(
            verdict(rec, None, false, c, Some(st(11, 5))),
            Verdict::Withdraw(Withdrawn::Missing)
        );
    }

    #[test]
    fn a_record_not_registered_yet_is_offered_while_unchanged() {
        let rec = st(10, 1);
        assert_eq!(verdict(rec, Some(rec), false, None, None), Verdict::Offer);
        assert_eq!(
            verdict(rec, None, false, None, None),
            Verdict::Withdraw(Withdrawn::Missing)
        );
        assert_eq!(
            verdict(rec, Some(st(9, 1)), false, None, None),
            Verdict::Rehash
        );
    }
}

//! Login and logout: the session, heartbeats, and bringing back what was shared before.

use std::sync::Arc;
use std::time::Duration;

use minitorr_proto::control::{ErrorKind, LoginReport, Response, ShareRef};
use minitorr_proto::tracker::{self, Call};

use super::{fail, unexpected, Daemon, DownloadEntry, Reply};
use crate::download::storage::part_path_for;
use crate::sharing::hasher::{hash_file, FileStamp};
use crate::state::{DownloadRecord, RecordState, ShareRecord, Withdrawn};
use crate::tracker::Session;

/// Every this many heartbeats the ticket-key list is fetched again (30 s by default).
const KEY_REFRESH_HEARTBEATS: u32 = 6;
/// How long login waits for the tracker's retained events before serving peers anyway.
const HISTORY_WAIT: Duration = Duration::from_secs(3);

impl Daemon {
    pub(super) async fn login(self: &Arc<Self>, user: String, password: String) -> Reply<Response> {
        let _guard = self.login_lock.lock().await;
        // Logged in by ourselves after a restart (device key) as this same user: a password
        // login is a person confirming it; it replaces that session and reports what it
        // brought back, as it did before automatic logins existed.
        let mut replaces_auto = false;
        if let Some(s) = self.session.read().expect("lock").as_ref() {
            if s.user == user && self.auto_session.load(std::sync::atomic::Ordering::Relaxed) {
                replaces_auto = true;
            }
        }
        if let Some(s) = self
            .session
            .read()
            .expect("lock")
            .as_ref()
            .filter(|_| !replaces_auto)
        {
            let msg = if s.user == user {
                format!("already logged in as {user}")
            } else {
                format!("logged in as {}; log out first", s.user)
            };
            return Err(fail(ErrorKind::Refused, msg));
        }
        let call = Call::Login {
            user: user.clone(),
            password,
            peer_addr: self.announced_peer_addr(),
            device_key: self.device_key.public_bytes(),
        };
        let grant = match self.call_with(None, call).await? {
            tracker::Response::LoggedIn(g) => g,
            other => return Err(unexpected(other)),
        };
        if replaces_auto {
            self.stop_activity();
            *self.session.write().expect("lock") = None;
        }
        self.auto_session
            .store(false, std::sync::atomic::Ordering::Relaxed);
        // The password login registered this device; give it its configured name.
        let name = Call::NameDevice {
            name: self.cfg.device_name.clone(),
        };
        if let Err(e) = self.call_with(Some(&grant.token), name).await {
            tracing::warn!(error = %e.message, "cannot name this device at the tracker");
        }
        self.remember_auto_login(Some(grant.user.clone()), None)
            .await;
        Ok(Response::LoggedIn(self.begin_session(grant).await))
    }

    /// After a successful (password or device) login, with `login_lock` held: heartbeats,
    /// events, shares back, downloads resumed. Returns at once: the event-history replay
    /// (which gates serving peers) and the re-verification of part files run in the background.
    pub(super) async fn begin_session(self: &Arc<Self>, grant: tracker::LoginGrant) -> LoginReport {
        let session = Session {
            user: grant.user.clone(),
            token: grant.token,
            heartbeat_secs: grant.heartbeat_secs.max(1),
            peer_addr: grant.peer_addr,
            relay: grant.relay.as_deref().and_then(|r| {
                crate::peerlink::relay::resolve_relay_addr(r, self.tracker.current_addr())
            }),
        };
        *self.session.write().expect("lock") = Some(session.clone());
        *self.auto_login.lock().expect("lock") = format!("logged in as {}", session.user);
        self.start_heartbeat(session.clone());
        self.start_relay_listener(&session);
        // Serve peers (tickets verify only with the key) once the tracker's retained events are
        // replayed, so a ticket revoked while we were away is refused from the first
        // connection. Bounded: a tracker that cannot stream events must not block serving.
        let history = self.start_events(&session);
        let (me, token, keys) = (
            Arc::downgrade(self),
            session.token.clone(),
            grant.tracker_keys,
        );
        tokio::spawn(async move {
            if tokio::time::timeout(HISTORY_WAIT, history).await.is_err() {
                tracing::warn!("tracker events not replayed in time; serving peers anyway");
            }
            let Some(d) = me.upgrade() else { return };
            let current = d
                .session
                .read()
                .expect("lock")
                .as_ref()
                .map(|s| s.token.clone());
            if current.as_deref() == Some(token.as_str()) {
                d.ticket_keys.set(keys, d.tracker.clone(), token);
            }
        });
        tracing::info!(user = %session.user, peer_addr = %session.peer_addr, "logged in");

        let mut report = LoginReport {
            user: session.user.clone(),
            reshared: vec![],
            resumed_downloads: vec![],
            problems: vec![],
        };
        self.restore_shares(&session, &mut report).await;
        self.restore_downloads(&session, &mut report).await;
        self.start_share_watch(session.clone());
        report
    }

    pub(super) async fn logout(self: &Arc<Self>) -> Reply<Response> {
        let _guard = self.login_lock.lock().await;
        let session = self.current_session()?;
        let shared = self.shares.len();
        // Offline locally first: even if the tracker is unreachable, we stop sharing now.
        self.stop_activity();
        *self.session.write().expect("lock") = None;
        // Ends this device's automatic login at the tracker too (a plain Logout, as at
        // shutdown, would let the next start log in again by itself).
        let tracker_note = match self
            .call_with(Some(&session.token), Call::LogoutDevice)
            .await
        {
            Ok(_) => String::new(),
            Err(e) => format!(" (tracker: {})", e.message),
        };
        self.remember_auto_login(None, Some("logged out (minitorrctl logout)".into()))
            .await;
        let state = self.state.lock().await;
        self.save_state(&state).await;
        Ok(Response::Done {
            message: format!(
                "logged out {}; stopped sharing {shared} file(s){tracker_note}",
                session.user
            ),
        })
    }

    /// Subscribe to the tracker's events for this login and apply them to what we serve: a
    /// member gone, a group deleted or a file entry removed closes the affected peer
    /// connections at once (and what we ourselves may no longer share stops being served).
    fn start_events(self: &Arc<Self>, session: &Session) -> tokio::sync::oneshot::Receiver<()> {
        let (history_tx, history_rx) = tokio::sync::oneshot::channel();
        let me = Arc::downgrade(self);
        let user = session.user.clone();
        let sess = session.clone();
        let on_event = move |ev: &tracker::Event, news: bool| {
            let Some(d) = me.upgrade() else { return };
            let closed = d.live.apply(&ev.kind, ev.at_unix, &user, news);
            if closed > 0 {
                tracing::info!(closed, event = ?ev.kind, "revoked: closed peer connections");
            }
            if !news {
                return; // history: only remembered, so old tickets stay refused
            }
            match &ev.kind {
                // Holder changes go to the running downloads of that file (issue #11): they
                // connect to a new holder, or stop reconnecting to a departed one, at once.
                tracker::EventKind::HolderOnline { .. } | tracker::EventKind::HolderGone { .. } => {
                    d.holder_event(&ev.kind);
                    // …and a download that failed for lack of holders is retried now (#12).
                    if let tracker::EventKind::HolderOnline { group, file, .. } = &ev.kind {
                        d.holder_back(group, file);
                    }
                }
                tracker::EventKind::PunchRequest {
                    group,
                    file,
                    holder_addr,
                    from,
                    nonce,
                } => d.answer_punch(group, file, holder_addr, from, *nonce, ev.at_unix),
                tracker::EventKind::MemberGone { group, user: gone } if *gone == user => {
                    d.unshare_group(group, "no longer a member of the group");
                }
                tracker::EventKind::GroupDeleted { group } => {
                    d.unshare_group(group, "the group was deleted")
                }
                // A running download's partial share is its own business (it re-announces).
                tracker::EventKind::FileRemoved { group, file }
                    if d.shares.get(group, file).is_some_and(|f| f.is_complete())
                        && d.live_download(group, file).is_none() =>
                {
                    let (group, file, session) = (group.clone(), file.clone(), sess.clone());
                    tokio::spawn(async move { d.file_removed(&session, &group, &file).await });
                }
                _ => {}
            }
        };
        let task = crate::tracker::subscribe_events(
            self.tracker.clone(),
            session.token.clone(),
            on_event,
            history_tx,
        );
        if let Some(old) = self
            .events
            .lock()
            .expect("lock")
            .replace(tokio::spawn(task))
        {
            old.abort();
        }
        history_rx
    }

    fn start_heartbeat(self: &Arc<Self>, session: Session) {
        let me = Arc::downgrade(self);
        let handle = tokio::spawn(async move {
            let mut seen_generation = None;
            let mut tick =
                tokio::time::interval(Duration::from_secs(session.heartbeat_secs as u64));
            let mut beats: u32 = 0;
            loop {
                tick.tick().await;
                let Some(d) = me.upgrade() else { return };
                // Learn retired (and new) ticket keys without waiting for an unknown one.
                beats += 1;
                if beats == KEY_REFRESH_HEARTBEATS {
                    beats = 0;
                    d.ticket_keys.refresh(true).await;
                }
                match d.tracker.call(Some(&session.token), Call::Heartbeat).await {
                    Ok(tracker::Response::Ok { .. }) => {
                        // A new tracker connection (restart or failover): re-announce our shares.
                        let gen = d.tracker.generation();
                        if seen_generation.is_some_and(|g| g != gen) {
                            d.reannounce(&session).await;
                        }
                        seen_generation = Some(gen);
                    }
                    Ok(tracker::Response::Error {
                        code: tracker::ErrorCode::InvalidSession,
                        message,
                    }) => {
                        // Replaced, revoked or expired: log in again by ourselves if allowed.
                        tracing::warn!(%message, "tracker ended our session");
                        d.session_lost(session.token.clone());
                        return;
                    }
                    Ok(tracker::Response::Error { message, .. }) => {
                        tracing::warn!(%message, "tracker refused heartbeat; log in again if this persists");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
                }
            }
        });
        if let Some(old) = self.heartbeat.lock().expect("lock").replace(handle) {
            old.abort();
        }
    }

    async fn reannounce(&self, session: &Session) {
        let records = self.state.lock().await.user(&session.user).shares.clone();
        // Withdrawn files (changed or gone on disk) stay withdrawn until they come back.
        for rec in records.into_iter().filter(|r| r.withdrawn.is_none()) {
            let call = Call::Share {
                group: rec.group.clone(),
                meta: rec.meta.clone(),
                complete: true,
            };
            if let Err(e) = self.tracker.call(Some(&session.token), call).await {
                tracing::warn!(error = %e, "re-announce failed");
                return;
            }
        }
        tracing::info!("re-announced shares after reconnecting to the tracker");
    }

    /// Share again everything shared before, after checking each file is still there unchanged.
    async fn restore_shares(&self, session: &Session, report: &mut LoginReport) {
        let mut state = self.state.lock().await;
        let records = state.user(&session.user).shares.clone();
        let mut keep = Vec::new();
        for mut rec in records {
            let what = format!("{} in {}", rec.meta.name, rec.group);
            match self.check_on_disk(&mut rec).await {
                Ok(()) => rec.withdrawn = None,
                Err(why) => {
                    report
                        .problems
                        .push(format!("{what}: {why}; no longer shared"));
                    // Kept, withdrawn: list_shares shows it, and it is offered again if
                    // the file comes back unchanged (stop_share forgets it).
                    rec.withdrawn = Some(if rec.path.symlink_metadata().is_err() {
                        Withdrawn::Missing
                    } else {
                        Withdrawn::Changed
                    });
                    keep.push(rec.clone());
                    let _ = self
                        .call_with(
                            Some(&session.token),
                            Call::StopShare {
                                group: rec.group.clone(),
                                file: rec.meta.name.clone(),
                            },
                        )
                        .await;
                    continue;
                }
            }
            let call = Call::Share {
                group: rec.group.clone(),
                meta: rec.meta.clone(),
                complete: true,
            };
            if let Err(e) = self.call_with(Some(&session.token), call).await {
                report
                    .problems
                    .push(format!("{what}: tracker refused: {}", e.message));
                if matches!(
                    e.kind,
                    ErrorKind::TrackerUnavailable | ErrorKind::TrackerDatabaseUnavailable
                ) {
                    keep.push(rec.clone());
                }
                continue;
            }
            match super::trees::open_share(&rec, rec.stamp) {
                Ok(f) => {
                    self.publish_share_added(&f);
                    self.shares.insert(f);
                    report.reshared.push(ShareRef {
                        group: rec.group.clone(),
                        file: rec.meta.name.clone(),
                    });
                    keep.push(rec);
                }
                Err(e) => report
                    .problems
                    .push(format!("{what}: cannot open {}: {e}", rec.path.display())),
            }
        }
        state.user(&session.user).shares = keep;
        self.save_state(&state).await;
    }

    /// Is the shared file still what we announced? Cheap size+mtime check; rehash if changed.
    async fn check_on_disk(&self, rec: &mut ShareRecord) -> Result<(), String> {
        if rec.meta.is_tree() {
            let r = rec.clone();
            return match self.pool.run(move || super::trees::stamp_now(&r)).await {
                Some(s) if s == rec.stamp => Ok(()),
                Some(_) => Err(format!(
                    "a file of {} changed on disk since it was shared",
                    rec.path.display()
                )),
                None => Err(format!("{} is gone", rec.path.display())),
            };
        }
        let stamp = FileStamp::of(&rec.path)
            .map_err(|e| format!("{} is gone ({e})", rec.path.display()))?;
        if stamp == rec.stamp {
            return Ok(());
        }
        let (path, name, ps) = (rec.path.clone(), rec.meta.name.clone(), rec.meta.piece_size);
        let (meta, stamp) = self
            .pool
            .run(move || hash_file(&path, &name, ps))
            .await
            .map_err(|e| format!("cannot re-read {}: {e}", rec.path.display()))?;
        if meta.sha1 != rec.meta.sha1 {
            return Err(format!(
                "{} changed on disk since it was shared",
                rec.path.display()
            ));
        }
        rec.stamp = stamp;
        Ok(())
    }

    /// A download recorded as running whose destination holds a finished file and no partial
    /// file: mark it complete and share it if its SHA1 matches, else failed (never overwritten).
    async fn adopt_finished(
        &self,
        session: &Session,
        mut rec: DownloadRecord,
        report: &mut LoginReport,
    ) -> DownloadRecord {
        let (path, m) = (rec.dest.clone(), rec.meta.clone());
        let hashed = self.pool.run(move || super::trees::rehash(&path, &m)).await;
        let what = format!("{} in {}", rec.meta.name, rec.group);
        let (stamp, tree_files) = match hashed {
            Ok((meta, stamp, files)) if meta.sha1 == rec.meta.sha1 => (stamp, files),
            Ok(_) => {
                let why = format!(
                    "{} exists with other content; not overwriting it",
                    rec.dest.display()
                );
                report.problems.push(format!("download of {what}: {why}"));
                rec.state = RecordState::Failed;
                rec.error = Some(why);
                return self.save_download_record(session, rec, None).await;
            }
            Err(e) => {
                let why = format!("cannot read {}: {e}", rec.dest.display());
                report.problems.push(format!("download of {what}: {why}"));
                rec.state = RecordState::Failed;
                rec.error = Some(why);
                return self.save_download_record(session, rec, None).await;
            }
        };
        rec.state = RecordState::Complete;
        rec.error = None;
        let share = ShareRecord {
            group: rec.group.clone(),
            path: rec.dest.clone(),
            stamp,
            meta: rec.meta.clone(),
            withdrawn: None,
            tree_files: Arc::new(tree_files),
        };
        let call = Call::Share {
            group: rec.group.clone(),
            meta: rec.meta.clone(),
            complete: true,
        };
        match self.call_with(Some(&session.token), call).await {
            Ok(_) => match super::trees::open_share(&share, stamp) {
                Ok(f) => {
                    self.publish_share_added(&f);
                    self.shares.insert(f);
                    report.reshared.push(ShareRef {
                        group: rec.group.clone(),
                        file: rec.meta.name.clone(),
                    });
                }
                Err(e) => report
                    .problems
                    .push(format!("{what}: cannot open {}: {e}", rec.dest.display())),
            },
            Err(e) => report
                .problems
                .push(format!("{what}: tracker refused: {}", e.message)),
        }
        tracing::info!(file = %rec.meta.name, group = %rec.group, "adopted a download finished before a crash");
        self.save_download_record(session, rec, Some(share)).await
    }

    async fn save_download_record(
        &self,
        session: &Session,
        rec: DownloadRecord,
        share: Option<ShareRecord>,
    ) -> DownloadRecord {
        let mut state = self.state.lock().await;
        let u = state.user(&session.user);
        u.upsert_download(rec.clone());
        if let Some(share) = share {
            u.upsert_share(share);
        }
        self.save_state(&state).await;
        rec
    }

    /// Resume unfinished downloads; list finished ones for show_downloads.
    async fn restore_downloads(self: &Arc<Self>, session: &Session, report: &mut LoginReport) {
        let records = self
            .state
            .lock()
            .await
            .user(&session.user)
            .downloads
            .clone();
        for rec in records {
            if rec.state == RecordState::Complete && !rec.only.is_empty() {
                // A finished selective download: seed its files again (issue #13).
                let (me, s, r) = (self.clone(), session.clone(), rec.clone());
                tokio::spawn(async move {
                    if let Err(e) = me.reseed_selection(&s, &r).await {
                        tracing::warn!(file = %r.meta.name, group = %r.group, error = %e, "the files of a selective download are not seeded");
                    }
                });
            }
            if rec.state != RecordState::Downloading {
                self.downloads
                    .lock()
                    .expect("lock")
                    .push(DownloadEntry::Record(rec));
                continue;
            }
            let finished = if rec.meta.is_tree() {
                rec.dest.is_dir()
            } else {
                rec.dest.is_file()
            };
            if finished
                && part_path_for(&rec.dest).symlink_metadata().is_err()
                && !rec.only.is_empty()
            {
                // A selective download killed after its tree was moved into place (every
                // selected piece and file verified first) but before the state was saved: it
                // is complete; seed what it holds (re-verified), never fetch it again.
                let mut rec = rec;
                rec.state = RecordState::Complete;
                rec.error = None;
                let rec = self.save_download_record(session, rec, None).await;
                let (me, s, r) = (self.clone(), session.clone(), rec.clone());
                tokio::spawn(async move {
                    if let Err(e) = me.reseed_selection(&s, &r).await {
                        tracing::warn!(file = %r.meta.name, group = %r.group, error = %e, "the files of a selective download are not seeded");
                    }
                });
                self.downloads
                    .lock()
                    .expect("lock")
                    .push(DownloadEntry::Record(rec));
                continue;
            }
            if finished && part_path_for(&rec.dest).symlink_metadata().is_err() {
                // Killed after the finished file was moved into place but before the state
                // was saved: adopt the file if it is the right one, never download it again.
                let rec = self.adopt_finished(session, rec, report).await;
                self.downloads
                    .lock()
                    .expect("lock")
                    .push(DownloadEntry::Record(rec));
                continue;
            }
            // Resumed in the background: re-verifying a large part file takes seconds, and
            // login (or a restart's automatic login) must not wait for it.
            report.resumed_downloads.push(ShareRef {
                group: rec.group.clone(),
                file: rec.meta.name.clone(),
            });
            let me = self.clone();
            let job = Arc::new(super::files::Verifying {
                rec: rec.clone(),
                checked: Arc::default(),
            });
            self.verifying.lock().expect("lock").push(job.clone());
            tokio::spawn(async move {
                let started = me
                    .start_download_reporting(
                        rec.group.clone(),
                        rec.meta.name.clone(),
                        rec.dest.clone(),
                        Some(rec.meta.sha1),
                        Some(job.checked.clone()),
                        rec.only.clone(),
                    )
                    .await;
                me.verifying
                    .lock()
                    .expect("lock")
                    .retain(|v| !Arc::ptr_eq(v, &job));
                if let Err(e) = started {
                    tracing::warn!(file = %rec.meta.name, group = %rec.group, error = %e.message, "download not resumed");
                    let mut rec = rec;
                    rec.error = Some(format!("not resumed: {}", e.message));
                    me.downloads
                        .lock()
                        .expect("lock")
                        .push(DownloadEntry::Record(rec));
                }
            });
        }
    }
}

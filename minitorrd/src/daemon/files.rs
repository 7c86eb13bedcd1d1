//! Sharing and downloading: upload_file, download_file, show_downloads, stop_share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use minitorr_proto::control::{DownloadState, DownloadStatus, ErrorKind, ErrorReply, Response};
use minitorr_proto::names::{self, validate_file_name};
use minitorr_proto::tracker::{self, Call};
use minitorr_proto::types::{FileMeta, FileSummary, Sha1Hash};

use super::downloads::{Change, StopIntent};
use super::{fail, unexpected, Daemon, DownloadEntry, Reply};
use crate::download::{dest, storage, Download, DownloadEnv, Outcome};
use crate::sharing::hasher::hash_file;
use crate::sharing::SharedFile;
use crate::state::{DownloadRecord, RecordState, ShareRecord};

fn invalid(msg: impl Into<String>) -> ErrorReply {
    fail(ErrorKind::InvalidInput, msg)
}

fn refused(msg: impl Into<String>) -> ErrorReply {
    fail(ErrorKind::Refused, msg)
}

impl Daemon {
    /// Share the file at `path` in `group` under `name` (already NFC-normalised and checked),
    /// or under the path's own file name. The file stays where it is, under its own name: a
    /// file whose name is in NFD on disk is shared (and downloaded by others) under the NFC
    /// form, and the share record keeps the shared name apart from the path.
    pub(super) async fn upload_file(
        &self,
        path: PathBuf,
        group: String,
        name: Option<String>,
    ) -> Reply<Response> {
        let session = self.current_session()?;
        // Record the real path: later opens (serving, re-checking at login) never follow a
        // symlink at the file's name, so the name recorded must be the file itself.
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        let md = std::fs::metadata(&path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        if md.is_dir() {
            return self.upload_tree(path, group, name).await;
        }
        if !md.is_file() {
            return Err(invalid(format!("{} is not a regular file", path.display())));
        }
        std::fs::File::open(&path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let name = match name {
            Some(n) => n,
            None => {
                let own = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                    invalid(format!(
                        "{} has no usable (UTF-8) file name; give one with --name",
                        path.display()
                    ))
                })?;
                names::file_name(own)
                    .map_err(|e| invalid(format!("{e}; share it under another name with --name")))?
            }
        };

        // Fail fast (before hashing gigabytes) if the group is unknown or we are not a member.
        // A file the group already has under this name and size is hashed with its piece
        // size: the same bytes then join that entry, whatever piece size we would pick (it
        // changed between versions, and it is configurable).
        let mut existing_piece_size = None;
        if let tracker::Response::Files(files) = self
            .call(Call::ListFiles {
                group: group.clone(),
            })
            .await?
        {
            if files.iter().any(|f| f.name == name && f.size != md.len()) {
                // Different size, so certainly different content: say so without hashing.
                return Err(refused(format!(
                    "{group} already has {name} with different content (a different size); \
                     share yours under another name (--name), or ask the group's owner to \
                     remove it (remove_file)"
                )));
            }
            existing_piece_size = files
                .iter()
                .find(|f| f.name == name && !f.is_tree)
                .map(|f| f.piece_size);
        }

        let (p, n, ps) = (
            path.clone(),
            name.clone(),
            piece_size_for(md.len(), existing_piece_size.or(self.cfg.piece_size)),
        );
        let (meta, stamp) = self
            .pool
            .run(move || hash_file(&p, &n, ps))
            .await
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let meta = Arc::new(meta);
        let _ops = self.share_ops.lock().await;
        let call = Call::Share {
            group: group.clone(),
            meta: meta.clone(),
            complete: true,
        };
        self.call_with(Some(&session.token), call).await?;

        let shared = SharedFile::complete(group.clone(), meta.clone(), path.clone(), stamp)
            .map_err(|e| invalid(format!("cannot open {}: {e}", path.display())))?;
        self.publish_share_added(&shared);
        self.shares.insert(shared);
        {
            let mut state = self.state.lock().await;
            let rec = ShareRecord {
                group: group.clone(),
                path,
                stamp,
                meta: meta.clone(),
                withdrawn: None,
                tree_files: Default::default(),
            };
            state.user(&session.user).upsert_share(rec);
            self.save_state(&state).await;
        }
        // The share watcher picks up the new record (and watches its directory) now.
        self.shares.changed().notify_one();
        tracing::info!(file = %name, %group, size = meta.size, "shared");
        let summary = match self
            .call(Call::ListFiles {
                group: group.clone(),
            })
            .await
        {
            Ok(tracker::Response::Files(files)) => files.into_iter().find(|f| f.name == name),
            _ => None,
        };
        Ok(Response::Uploaded(summary.unwrap_or(FileSummary {
            group,
            name,
            size: meta.size,
            piece_size: meta.piece_size,
            sha1: meta.sha1,
            seeders_online: 1,
            partial_online: 0,
            file_count: meta.file_count() as u64,
            is_tree: meta.is_tree(),
            piece_count: meta.piece_count(),
        })))
    }

    /// Start a download to `dest`, resolved like `cp` resolves its target (see
    /// [`dest::resolve`]): everything that can be refused is refused here, before a byte is
    /// fetched; an identical file already at the destination is adopted and shared at once.
    pub(super) async fn download_file(
        self: &Arc<Self>,
        group: String,
        file: String,
        dest: PathBuf,
        only: Vec<String>,
    ) -> Reply<Response> {
        let session = self.current_session()?;
        validate_file_name(&file).map_err(|e| invalid(e.to_string()))?;
        super::trees::check_globs(&only).map_err(invalid)?;
        // More of a tree downloaded selectively before: add the rest (or other globs).
        if let Some(prev) = self.selective_record(&group, &file, &dest) {
            return self.grow_selection(prev, only).await;
        }
        let plan = dest::resolve(&dest, &file, &dest::Disk).map_err(|e| invalid(e.to_string()))?;
        // Reserved before the first await: a second identical request is refused here
        // instead of both passing the check (see `downloads::Daemon::reserve`).
        let reservation = self.reserve(&group, &file, false)?;
        if self.shares.get(&group, &file).is_some() {
            return Err(refused(format!("you already share {file} in {group}")));
        }
        if plan.existing_file {
            return self
                .download_onto_existing(&session, group, file, plan)
                .await;
        }
        // Only the last level of a `dir/` destination, only now that nothing else can be
        // refused locally, and removed again if the tracker then refuses the download.
        let created = if plan.create_dir {
            match std::fs::create_dir(&plan.dir) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => {
                    return Err(invalid(format!(
                        "cannot create directory {}: {e}",
                        plan.dir.display()
                    )))
                }
            }
        } else {
            false
        };
        let started = async {
            let dest = checked_dir(&plan.dir)?.join(&plan.name);
            if !reservation.run {
                return self.queue_download(group, file, dest, only).await;
            }
            Ok(self
                .start_download(group, file, dest, None, only)
                .await?
                .status())
        }
        .await;
        drop(reservation);
        match started {
            Ok(status) => Ok(Response::DownloadStarted(status)),
            Err(e) => {
                if created {
                    // Empty unless something else wrote there meanwhile: then it stays.
                    let _ = std::fs::remove_dir(&plan.dir);
                }
                Err(e)
            }
        }
    }

    /// A regular file already sits at the destination: if it is the group's file (same size,
    /// same piece and whole-file SHA1, hashed streaming on the blocking pool) the download is
    /// complete at once and the file is shared; anything else is refused — never overwritten.
    async fn download_onto_existing(
        &self,
        session: &crate::tracker::Session,
        group: String,
        file: String,
        plan: dest::Resolved,
    ) -> Reply<Response> {
        let dest = checked_dir(&plan.dir)?.join(&plan.name);
        let meta = Arc::new(self.file_details(&group, &file).await?.meta);
        if meta.is_tree() {
            // A tree lands as a directory; a file at its name is never replaced.
            return Err(refused(format!(
                "{} already exists and {file} in {group} is a directory tree; not overwriting \
                 it: remove it or choose another destination",
                dest.display()
            )));
        }
        let different = |how: String| {
            refused(format!(
                "{} already exists with other content than {file} in {group} ({how}); not \
                 overwriting it: remove it or choose another destination",
                dest.display()
            ))
        };
        let size = std::fs::symlink_metadata(&dest)
            .map_err(|e| invalid(format!("cannot read {}: {e}", dest.display())))?
            .len();
        if size != meta.size {
            return Err(different(format!("{size} bytes, not {}", meta.size)));
        }
        let (p, n, ps) = (dest.clone(), meta.name.clone(), meta.piece_size);
        let (mine, stamp) = self
            .pool
            .run(move || hash_file(&p, &n, ps))
            .await
            .map_err(|e| invalid(format!("cannot read {}: {e}", dest.display())))?;
        if mine.sha1 != meta.sha1 || mine.pieces != meta.pieces {
            return Err(different("same size, different SHA1".into()));
        }
        self.call(Call::Share {
            group: group.clone(),
            meta: meta.clone(),
            complete: true,
        })
        .await?;
        let shared = SharedFile::complete(group.clone(), meta.clone(), dest.clone(), stamp)
            .map_err(|e| invalid(format!("cannot open {}: {e}", dest.display())))?;
        self.publish_share_added(&shared);
        self.shares.insert(shared);
        let rec = DownloadRecord {
            group: group.clone(),
            dest: dest.clone(),
            meta: meta.clone(),
            state: RecordState::Complete,
            error: None,
            bytes_done: meta.size,
            pieces_done: meta.piece_count(),
            only: Vec::new(),
        };
        {
            let mut state = self.state.lock().await;
            let u = state.user(&session.user);
            u.upsert_download(rec.clone());
            u.upsert_share(ShareRecord {
                group: group.clone(),
                path: dest.clone(),
                stamp,
                meta,
                withdrawn: None,
                tree_files: Default::default(),
            });
            self.save_state(&state).await;
        }
        self.shares.changed().notify_one();
        let status = record_status(&rec);
        {
            let mut list = self.downloads.lock().expect("lock");
            list.retain(|e| match e {
                DownloadEntry::Record(r) => r.dest != dest,
                DownloadEntry::Live(d) => !(d.dest == dest && d.is_finished()),
            });
            list.push(DownloadEntry::Record(rec));
        }
        tracing::info!(%file, %group, dest = %dest.display(), "identical file already at the destination: complete, shared");
        Ok(Response::DownloadStarted(status))
    }

    /// The tracker's `GetFile` answer for `file` in `group`, its metadata checked (the
    /// tracker is not trusted to send a consistent piece list).
    pub(super) async fn file_details(
        &self,
        group: &str,
        file: &str,
    ) -> Reply<tracker::FileDetails> {
        let details = match self
            .call(Call::GetFile {
                group: group.to_owned(),
                file: file.to_owned(),
            })
            .await?
        {
            tracker::Response::File(d) => *d,
            other => return Err(unexpected(other)),
        };
        details.meta.check().map_err(|e| {
            fail(
                ErrorKind::Internal,
                format!("tracker sent bad metadata: {e}"),
            )
        })?;
        Ok(details)
    }

    pub(super) fn live_download(&self, group: &str, file: &str) -> Option<Arc<Download>> {
        self.downloads
            .lock()
            .expect("lock")
            .iter()
            .find_map(|e| match e {
                DownloadEntry::Live(d)
                    if d.group == group && d.meta.name == file && !d.is_finished() =>
                {
                    Some(d.clone())
                }
                _ => None,
            })
    }

    /// A tracker holder event: hand it to every running download it concerns.
    pub(super) fn holder_event(&self, kind: &minitorr_proto::tracker::EventKind) {
        for e in self.downloads.lock().expect("lock").iter() {
            if let DownloadEntry::Live(d) = e {
                if !d.is_finished() {
                    d.holder_event(kind);
                }
            }
        }
    }

    /// Ask the tracker for the file, open (or resume) the partial file, and start downloading.
    pub(super) async fn start_download(
        self: &Arc<Self>,
        group: String,
        file: String,
        dest: PathBuf,
        expect: Option<Sha1Hash>,
        only: Vec<String>,
    ) -> Reply<Arc<Download>> {
        self.start_download_reporting(group, file, dest, expect, None, only)
            .await
    }

    /// [`Daemon::start_download`], counting the part file's re-verified bytes in `checked`.
    pub(super) async fn start_download_reporting(
        self: &Arc<Self>,
        group: String,
        file: String,
        dest: PathBuf,
        expect: Option<Sha1Hash>,
        checked: Option<Arc<std::sync::atomic::AtomicU64>>,
        only: Vec<String>,
    ) -> Reply<Arc<Download>> {
        let session = self.current_session()?;
        let mut details = self.file_details(&group, &file).await?;
        let wanted = super::trees::wanted_files(&details.meta, &only)
            .map_err(invalid)?
            .map(Arc::new);
        if expect.is_some_and(|h| h != details.meta.sha1) {
            return Err(refused(format!(
                "{file} in {group} was replaced by different content"
            )));
        }
        // Moved out, not cloned: the coordinator keeps `details` (peers, ticket) for the whole
        // download, and a 100,000-file tree's listing is megabytes.
        let meta = Arc::new(FileMeta {
            pieces: std::mem::take(&mut details.meta.pieces),
            tree: details.meta.tree.take(),
            ..details.meta.clone()
        });
        let dl = Download::prepare_reporting(
            group.clone(),
            meta.clone(),
            dest.clone(),
            &self.pool,
            checked,
            only,
            wanted,
        )
        .await
        .map_err(storage_reply)?;
        self.shares.insert(dl.shared.clone());
        self.transition(&session.user, &dest, Change::Started(dl.clone()))
            .await;
        let env = Arc::new(DownloadEnv {
            tracker: self.tracker.clone(),
            token: session.token.clone(),
            self_addr: session.peer_addr.clone(),
            pool: self.pool.clone(),
            limit: self.download_limit.clone(),
            max_peers: self.cfg.max_peers_per_download,
            max_depth: self.cfg.max_pipeline_depth,
            link: self.link.clone(),
            relay: self.relay_route(&session),
            listen: self.peer_addr,
            punch: match self.link {
                crate::peerlink::PeerLinkMode::Tls(_) if self.cfg.hole_punching => {
                    Some(self.punch.clone())
                }
                _ => None,
            },
            events: self.bus.clone(),
        });
        tracing::info!(%file, %group, dest = %dest.display(), pieces = meta.piece_count(), peers = details.peers.len(), "download started");
        let (me, d, user) = (self.clone(), dl.clone(), session.user);
        let task = tokio::spawn(async move {
            let outcome = d.clone().run(env, details).await;
            me.download_ended(&user, &d, outcome).await;
        });
        self.track_task(&dest, task);
        Ok(dl)
    }

    async fn download_ended(self: &Arc<Self>, user: &str, dl: &Arc<Download>, outcome: Outcome) {
        tracing::info!(file = %dl.meta.name, group = %dl.group, ?outcome, "download ended");
        let change = match outcome {
            Outcome::Completed => {
                self.task_ended(&dl.dest);
                // `transition` flushes the file to disk before state.json says complete.
                Change::Completed
            }
            Outcome::Failed(e) => {
                self.task_ended(&dl.dest);
                Change::Failed(e)
            }
            // Stopped: by the user (pause, cancel), or by logout/shutdown (then it stays
            // recorded as downloading and resumes at the next login).
            Outcome::Paused => match self.stop_intent(&dl.dest) {
                Some(StopIntent::Pause) => Change::Paused,
                Some(StopIntent::Cancel) => Change::Cancelled,
                None => return,
            },
        };
        self.transition(user, &dl.dest, change).await;
    }

    pub(super) fn show_downloads(&self) -> Response {
        Response::Downloads(self.download_list())
    }

    /// What show_downloads lists.
    pub(super) fn download_list(&self) -> Vec<DownloadStatus> {
        let list = self.downloads.lock().expect("lock");
        list.iter()
            .map(|e| match e {
                DownloadEntry::Live(d) => d.status(),
                DownloadEntry::Record(r) => record_status(r),
            })
            .chain(
                self.verifying
                    .lock()
                    .expect("lock")
                    .iter()
                    .map(|v| v.status()),
            )
            .collect()
    }

    pub(super) async fn stop_share(&self, group: String, file: String) -> Reply<Response> {
        let session = self.current_session()?;
        let _ops = self.share_ops.lock().await;
        if self.live_download(&group, &file).is_some() {
            return Err(refused(format!(
                "{file} in {group} is still downloading; wait for it to finish"
            )));
        }
        let served = self.shares.remove(&group, &file).is_some();
        // A share withdrawn because its file changed is not served but still ours to forget.
        let recorded = self
            .state
            .lock()
            .await
            .user(&session.user)
            .shares
            .iter()
            .any(|r| r.group == group && r.meta.name == file);
        let had_locally = served || recorded;
        // Connections already serving it close now, not when the peer next asks.
        self.live.close_file(&group, &file);
        match self
            .call(Call::StopShare {
                group: group.clone(),
                file: file.clone(),
            })
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::NotFound && had_locally => {}
            Err(e) => return Err(e),
        }
        if had_locally {
            self.publish_withdrawn(&group, &file, "stop_share");
        }
        let mut state = self.state.lock().await;
        state.user(&session.user).remove_share(&group, &file);
        self.save_state(&state).await;
        Ok(Response::Done {
            message: format!("stopped sharing {file} in {group}"),
        })
    }
}

/// The real path of the directory a download goes into (the user may name it through links
/// of their own), checked up front as the download will check it again on its own handle: it
/// must be owned by the uid minitorrd runs as (see [`storage::DestDir::open`]).
fn checked_dir(dir: &Path) -> Reply<PathBuf> {
    let real = std::fs::canonicalize(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            invalid(format!(
                "destination directory {} does not exist",
                dir.display()
            ))
        } else {
            invalid(format!(
                "cannot use destination directory {}: {e}",
                dir.display()
            ))
        }
    })?;
    storage::DestDir::open(&real).map_err(storage_reply)?;
    Ok(real)
}

/// A refusal to store (directory not ours, no room, planted part file) is `Refused`; an I/O
/// failure is `InvalidInput` as before (mostly: a path the user cannot write to).
pub(super) fn storage_reply(e: storage::StorageError) -> ErrorReply {
    if e.is_refusal() {
        refused(e.to_string())
    } else {
        invalid(e.to_string())
    }
}

impl Daemon {
    /// Group owner: remove a file entry from the group at the tracker, whoever shares it. If
    /// we shared it ourselves, we stop serving it too.
    pub(super) async fn remove_file(&self, group: String, file: String) -> Reply<Response> {
        let session = self.current_session()?;
        let message = match self
            .call(Call::RemoveFile {
                group: group.clone(),
                file: file.clone(),
            })
            .await?
        {
            tracker::Response::Ok { message } => message,
            other => return Err(unexpected(other)),
        };
        let spellings = [file.clone(), names::nfc(&file)];
        if self.live_download(&group, &file).is_none() {
            let mut state = self.state.lock().await;
            for f in &spellings {
                if self.shares.remove(&group, f).is_some() {
                    self.publish_withdrawn(&group, f, "removed from the group");
                }
                state.user(&session.user).remove_share(&group, f);
            }
            self.save_state(&state).await;
        }
        tracing::info!(%file, %group, "file removed from the group");
        Ok(Response::Done { message })
    }
}

/// The piece size to hash a file of `size` bytes with: [`item::piece_size_for`] (the configured
/// or automatic size, doubled until the file has at most 128 Ki pieces, up to the protocol's
/// maximum). Beyond 2 TiB the maximum piece size is used and the tracker decides
/// (`max_pieces_per_file`): trackers bound the pieces per file, not file sizes.
fn piece_size_for(size: u64, configured: Option<u32>) -> u32 {
    minitorr_proto::item::piece_size_for(&[size], configured)
        .unwrap_or(minitorr_proto::MAX_PIECE_SIZE)
}

pub(super) fn record_status(r: &DownloadRecord) -> DownloadStatus {
    let complete = r.state == RecordState::Complete;
    let item = crate::download::item_totals(&r.meta);
    // A selective download counts the files it fetches (the item's totals alongside).
    let selected = match super::trees::wanted_files(&r.meta, &r.only) {
        Ok(Some(w)) => Some(crate::download::selection_totals(&r.meta, &w)),
        _ => None,
    };
    let totals = selected.unwrap_or(item);
    DownloadStatus {
        group: r.group.clone(),
        file: r.meta.name.clone(),
        dest: r.dest.clone(),
        state: super::downloads::record_state(r.state),
        size: totals.size,
        sha1: r.meta.sha1,
        bytes_done: if complete { totals.size } else { r.bytes_done },
        pieces_done: if complete {
            totals.pieces
        } else {
            r.pieces_done
        },
        pieces_total: totals.pieces,
        speed_bps: 0,
        peers: vec![],
        error: r.error.clone(),
        first_piece_ms: None,
        elapsed_ms: 0,
        avg_bps: 0,
        // Per-file progress is known only while the download runs (a record keeps counts).
        files_done: if complete { totals.files } else { 0 },
        files_total: totals.files,
        selection: selected.map(|_| item),
    }
}

/// A resumed download whose part file is being re-verified (before it runs again), shown by
/// `show_downloads` as `[V] verifying`.
pub(crate) struct Verifying {
    pub rec: DownloadRecord,
    pub checked: Arc<std::sync::atomic::AtomicU64>,
}

impl Verifying {
    fn status(&self) -> DownloadStatus {
        let mut s = record_status(&self.rec);
        s.state = DownloadState::Verifying;
        s.bytes_done = self
            .checked
            .load(std::sync::atomic::Ordering::Relaxed)
            .min(s.size);
        s.error = None;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_files_get_bigger_pieces() {
        let kib = 1024u32;
        let some = |ps: u32| Some(ps * kib);
        assert_eq!(piece_size_for(1 << 30, some(512)), 512 * kib);
        assert_eq!(piece_size_for(1 << 30, None), 512 * kib);
        assert_eq!(piece_size_for(64 << 20, some(512)), 512 * kib);
        assert_eq!(piece_size_for(64 << 20, None), 64 * kib);
        // 64 GiB at 512 KiB is exactly 128 Ki pieces: still fine.
        assert_eq!(piece_size_for(64 << 30, some(512)), 512 * kib);
        assert_eq!(piece_size_for((64 << 30) + 1, some(512)), 1024 * kib);
        assert_eq!(
            piece_size_for(1 << 40, some(512)),
            minitorr_proto::MAX_PIECE_SIZE
        );
        assert_eq!(
            FileMeta::piece_count_for(1 << 40, piece_size_for(1 << 40, some(16))),
            128 * 1024
        );
        // Beyond what the maximum piece size allows, the count grows (the tracker decides).
        assert_eq!(
            piece_size_for(4 << 40, some(512)),
            minitorr_proto::MAX_PIECE_SIZE
        );
    }
}

//! Sharing and downloading: upload_file, download_file, show_downloads, stop_share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use minitorr_proto::control::{DownloadState, DownloadStatus, ErrorKind, ErrorReply, Response};
use minitorr_proto::names::validate_file_name;
use minitorr_proto::tracker::{self, Call};
use minitorr_proto::types::{FileSummary, Sha1Hash};

use super::{fail, unexpected, Daemon, DownloadEntry, Reply};
use crate::download::{storage, Download, DownloadEnv, Outcome};
use crate::sharing::hasher::{hash_file, FileStamp};
use crate::sharing::SharedFile;
use crate::state::{DownloadRecord, RecordState, ShareRecord};

fn invalid(msg: impl Into<String>) -> ErrorReply {
    fail(ErrorKind::InvalidInput, msg)
}

fn refused(msg: impl Into<String>) -> ErrorReply {
    fail(ErrorKind::Refused, msg)
}

impl Daemon {
    pub(super) async fn upload_file(&self, path: PathBuf, group: String) -> Reply<Response> {
        let session = self.current_session()?;
        let md = std::fs::metadata(&path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        if md.is_dir() {
            return Err(invalid(format!(
                "{} is a directory; upload_file shares one file",
                path.display()
            )));
        }
        if !md.is_file() {
            return Err(invalid(format!("{} is not a regular file", path.display())));
        }
        std::fs::File::open(&path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                invalid(format!(
                    "{} has no usable (UTF-8) file name",
                    path.display()
                ))
            })?
            .to_string();
        validate_file_name(&name).map_err(|e| invalid(e.to_string()))?;

        // Fail fast (before hashing gigabytes) if the group is unknown or we are not a member.
        if let tracker::Response::Files(files) = self
            .call(Call::ListFiles {
                group: group.clone(),
            })
            .await?
        {
            if files.iter().any(|f| f.name == name && f.size != md.len()) {
                // Different size, so certainly different content: say so without hashing.
                return Err(refused(format!(
                    "{group} already has {name} with different content (a different size)"
                )));
            }
        }

        let (p, n, ps) = (path.clone(), name.clone(), self.cfg.piece_size);
        let (meta, stamp) = self
            .pool
            .run(move || hash_file(&p, &n, ps))
            .await
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let call = Call::Share {
            group: group.clone(),
            meta: meta.clone(),
            complete: true,
        };
        self.call_with(Some(&session.token), call).await?;

        let meta = Arc::new(meta);
        let shared = SharedFile::complete(group.clone(), meta.clone(), path.clone(), stamp)
            .map_err(|e| invalid(format!("cannot open {}: {e}", path.display())))?;
        self.shares.insert(shared);
        {
            let mut state = self.state.lock().await;
            let rec = ShareRecord {
                group: group.clone(),
                path,
                stamp,
                meta: (*meta).clone(),
            };
            state.user(&session.user).upsert_share(rec);
            self.save_state(&state).await;
        }
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
        })))
    }

    pub(super) async fn download_file(
        self: &Arc<Self>,
        group: String,
        file: String,
        dest: PathBuf,
    ) -> Reply<Response> {
        self.current_session()?;
        validate_file_name(&file).map_err(|e| invalid(e.to_string()))?;
        let dest = if dest.is_dir() {
            dest.join(&file)
        } else {
            dest
        };
        let dir = dest.parent().unwrap_or(Path::new("/"));
        if !dir.is_dir() {
            return Err(invalid(format!(
                "destination directory {} does not exist",
                dir.display()
            )));
        }
        if dest.exists() {
            return Err(refused(format!(
                "{} already exists; not overwriting it",
                dest.display()
            )));
        }
        if self.live_download(&group, &file).is_some() {
            return Err(refused(format!("already downloading {file} from {group}")));
        }
        if self.shares.get(&group, &file).is_some() {
            return Err(refused(format!("you already share {file} in {group}")));
        }
        let dl = self.start_download(group, file, dest, None).await?;
        Ok(Response::DownloadStarted(dl.status()))
    }

    fn live_download(&self, group: &str, file: &str) -> Option<Arc<Download>> {
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

    /// Ask the tracker for the file, open (or resume) the partial file, and start downloading.
    pub(super) async fn start_download(
        self: &Arc<Self>,
        group: String,
        file: String,
        dest: PathBuf,
        expect: Option<Sha1Hash>,
    ) -> Reply<Arc<Download>> {
        let session = self.current_session()?;
        let details = match self
            .call(Call::GetFile {
                group: group.clone(),
                file: file.clone(),
            })
            .await?
        {
            tracker::Response::File(d) => d,
            other => return Err(unexpected(other)),
        };
        details.meta.check().map_err(|e| {
            fail(
                ErrorKind::Internal,
                format!("tracker sent bad metadata: {e}"),
            )
        })?;
        if expect.is_some_and(|h| h != details.meta.sha1) {
            return Err(refused(format!(
                "{file} in {group} was replaced by different content"
            )));
        }
        let meta = Arc::new(details.meta.clone());
        let dl = Download::prepare(group.clone(), meta.clone(), dest.clone(), &self.pool)
            .await
            .map_err(|e| {
                invalid(format!(
                    "cannot write in {}: {e}",
                    dest.parent().unwrap_or(Path::new("/")).display()
                ))
            })?;
        self.shares.insert(dl.shared.clone());
        {
            let mut state = self.state.lock().await;
            let rec = DownloadRecord {
                group: group.clone(),
                dest: dest.clone(),
                meta: (*meta).clone(),
                state: RecordState::Downloading,
                error: None,
            };
            state.user(&session.user).upsert_download(rec);
            self.save_state(&state).await;
        }
        {
            let mut list = self.downloads.lock().expect("lock");
            // A new attempt replaces what show_downloads listed for this destination before
            // (a remembered record, or a failed/finished run of this process).
            list.retain(|e| match e {
                DownloadEntry::Record(r) => r.dest != dest,
                DownloadEntry::Live(d) => !(d.dest == dest && d.is_finished()),
            });
            list.push(DownloadEntry::Live(dl.clone()));
        }
        let env = Arc::new(DownloadEnv {
            tracker: self.tracker.clone(),
            token: session.token.clone(),
            self_addr: session.peer_addr.clone(),
            pool: self.pool.clone(),
            limit: self.download_limit.clone(),
            max_peers: self.cfg.max_peers_per_download,
            max_depth: self.cfg.max_pipeline_depth,
            link: self.link.clone(),
        });
        tracing::info!(%file, %group, dest = %dest.display(), pieces = meta.piece_count(), peers = details.peers.len(), "download started");
        let (me, d, user) = (self.clone(), dl.clone(), session.user);
        tokio::spawn(async move {
            let outcome = d.clone().run(env, details).await;
            me.download_ended(&user, &d, outcome).await;
        });
        Ok(dl)
    }

    async fn download_ended(&self, user: &str, dl: &Download, outcome: Outcome) {
        tracing::info!(file = %dl.meta.name, group = %dl.group, ?outcome, "download ended");
        let (state_now, error) = match &outcome {
            Outcome::Completed => (RecordState::Complete, None),
            Outcome::Failed(e) => (RecordState::Failed, Some(e.clone())),
            Outcome::Paused => return,
        };
        if outcome == Outcome::Completed {
            // The file is in place and verified; make it durable before the state file says
            // so (a power loss before this point is caught by re-verification at login).
            let dest = dl.dest.clone();
            match tokio::task::spawn_blocking(move || storage::sync_to_disk(&dest)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot flush the finished download to disk")
                }
                Err(e) => tracing::warn!(error = %e, "flush task failed"),
            }
        }
        let mut state = self.state.lock().await;
        let u = state.user(user);
        u.upsert_download(DownloadRecord {
            group: dl.group.clone(),
            dest: dl.dest.clone(),
            meta: (*dl.meta).clone(),
            state: state_now,
            error,
        });
        if outcome == Outcome::Completed {
            match FileStamp::of(&dl.dest) {
                Ok(stamp) => u.upsert_share(ShareRecord {
                    group: dl.group.clone(),
                    path: dl.dest.clone(),
                    stamp,
                    meta: (*dl.meta).clone(),
                }),
                Err(e) => tracing::warn!(error = %e, "finished file vanished"),
            }
        } else {
            // A failed download keeps its verified pieces on disk but stops being served.
            self.shares.remove(&dl.group, &dl.meta.name);
        }
        self.save_state(&state).await;
    }

    pub(super) fn show_downloads(&self) -> Response {
        let list = self.downloads.lock().expect("lock");
        Response::Downloads(
            list.iter()
                .map(|e| match e {
                    DownloadEntry::Live(d) => d.status(),
                    DownloadEntry::Record(r) => record_status(r),
                })
                .collect(),
        )
    }

    pub(super) async fn stop_share(&self, group: String, file: String) -> Reply<Response> {
        let session = self.current_session()?;
        if self.live_download(&group, &file).is_some() {
            return Err(refused(format!(
                "{file} in {group} is still downloading; wait for it to finish"
            )));
        }
        let had_locally = self.shares.remove(&group, &file).is_some();
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
        let mut state = self.state.lock().await;
        state.user(&session.user).remove_share(&group, &file);
        self.save_state(&state).await;
        Ok(Response::Done {
            message: format!("stopped sharing {file} in {group}"),
        })
    }
}

fn record_status(r: &DownloadRecord) -> DownloadStatus {
    let complete = r.state == RecordState::Complete;
    DownloadStatus {
        group: r.group.clone(),
        file: r.meta.name.clone(),
        dest: r.dest.clone(),
        state: match r.state {
            RecordState::Downloading => DownloadState::Downloading,
            RecordState::Complete => DownloadState::Complete,
            RecordState::Failed => DownloadState::Failed,
        },
        size: r.meta.size,
        sha1: r.meta.sha1,
        bytes_done: if complete { r.meta.size } else { 0 },
        pieces_done: if complete { r.meta.piece_count() } else { 0 },
        pieces_total: r.meta.piece_count(),
        speed_bps: 0,
        peers: vec![],
        error: r.error.clone(),
        first_piece_ms: None,
        elapsed_ms: 0,
    }
}

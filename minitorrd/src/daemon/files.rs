//! Sharing and downloading: upload_file, download_file, show_downloads, stop_share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use minitorr_proto::control::{
    DownloadState, DownloadStatus, ErrorKind, ErrorReply, EventKind, Response,
};
use minitorr_proto::names::{self, validate_file_name};
use minitorr_proto::tracker::{self, Call};
use minitorr_proto::types::{FileMeta, FileSummary, Sha1Hash};

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
        }

        let (p, n, ps) = (
            path.clone(),
            name.clone(),
            piece_size_for(md.len(), self.cfg.piece_size),
        );
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
        self.bus.publish(EventKind::ShareAdded {
            group: group.clone(),
            file: name.clone(),
            size: meta.size,
            sha1: meta.sha1,
        });
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
        let dest = resolve_destination(&dest)?;
        // Something at the name in any form (file, symlink — even dangling —, FIFO) is never
        // replaced; the final link would fail anyway, this just says so before downloading.
        if dest.symlink_metadata().is_ok() {
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
            tracker::Response::File(d) => *d,
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
            .map_err(storage_reply)?;
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
        self.bus.publish(EventKind::DownloadAdded {
            download: dl.event_ref(),
            size: meta.size,
            pieces_total: meta.piece_count(),
        });
        let env = Arc::new(DownloadEnv {
            tracker: self.tracker.clone(),
            token: session.token.clone(),
            self_addr: session.peer_addr.clone(),
            pool: self.pool.clone(),
            limit: self.download_limit.clone(),
            max_peers: self.cfg.max_peers_per_download,
            max_depth: self.cfg.max_pipeline_depth,
            link: self.link.clone(),
            events: self.bus.clone(),
        });
        tracing::info!(%file, %group, dest = %dest.display(), pieces = meta.piece_count(), peers = details.peers.len(), "download started");
        let (me, d, user) = (self.clone(), dl.clone(), session.user);
        tokio::spawn(async move {
            let outcome = d.clone().run(env, details).await;
            me.download_ended(&user, &d, outcome).await;
        });
        Ok(dl)
    }

    async fn download_ended(&self, user: &str, dl: &Arc<Download>, outcome: Outcome) {
        tracing::info!(file = %dl.meta.name, group = %dl.group, ?outcome, "download ended");
        let (state_now, error) = match &outcome {
            Outcome::Completed => (RecordState::Complete, None),
            Outcome::Failed(e) => (RecordState::Failed, Some(e.clone())),
            Outcome::Paused => return,
        };
        if outcome == Outcome::Completed {
            // The file is in place and verified; make it durable before the state file says
            // so (a power loss before this point is caught by re-verification at login).
            let d = dl.clone();
            match tokio::task::spawn_blocking(move || d.sync_to_disk()).await {
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
            if self.shares.remove(&dl.group, &dl.meta.name).is_some() {
                self.publish_withdrawn(&dl.group, &dl.meta.name, "the download failed");
            }
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

/// `dest` with its directory resolved to a real path (the user may name it through links of
/// their own), checked up front as the download will check it again on its own handle: it
/// must exist and be owned by the uid minitorrd runs as (see [`storage::DestDir::open`]).
fn resolve_destination(dest: &Path) -> Reply<PathBuf> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("/"),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| invalid(format!("{} does not name a file", dest.display())))?;
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
    Ok(real.join(name))
}

/// A refusal to store (directory not ours, no room, planted part file) is `Refused`; an I/O
/// failure is `InvalidInput` as before (mostly: a path the user cannot write to).
fn storage_reply(e: storage::StorageError) -> ErrorReply {
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

impl Daemon {
    /// We no longer serve `file` in `group`.
    pub(crate) fn publish_withdrawn(&self, group: &str, file: &str, reason: &str) {
        self.bus.publish(EventKind::ShareWithdrawn {
            group: group.to_string(),
            file: file.to_string(),
            reason: reason.to_string(),
        });
    }
}

/// The piece size to hash a file of `size` bytes with: the configured one, doubled until the
/// file has at most [`MAX_PIECES_PREFERRED`] pieces (up to the protocol's maximum). Trackers
/// bound the pieces per file (256 Ki by default), not file sizes, so big files need big pieces.
fn piece_size_for(size: u64, configured: u32) -> u32 {
    let mut ps = configured;
    while FileMeta::piece_count_for(size, ps) > MAX_PIECES_PREFERRED
        && ps < minitorr_proto::MAX_PIECE_SIZE
    {
        ps = (ps * 2).min(minitorr_proto::MAX_PIECE_SIZE);
    }
    ps
}

/// Half of trackerd's default `max_pieces_per_file`: 1 TiB fits with 8 MiB pieces.
const MAX_PIECES_PREFERRED: u32 = 128 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_files_get_bigger_pieces() {
        let kib = 1024u32;
        assert_eq!(piece_size_for(1 << 30, 512 * kib), 512 * kib);
        // 64 GiB at 512 KiB is exactly 128 Ki pieces: still fine.
        assert_eq!(piece_size_for(64 << 30, 512 * kib), 512 * kib);
        assert_eq!(piece_size_for((64 << 30) + 1, 512 * kib), 1024 * kib);
        assert_eq!(
            piece_size_for(1 << 40, 512 * kib),
            minitorr_proto::MAX_PIECE_SIZE
        );
        assert_eq!(
            FileMeta::piece_count_for(1 << 40, piece_size_for(1 << 40, 16 * kib)),
            128 * 1024
        );
        // Beyond what the maximum piece size allows, the count grows (the tracker decides).
        assert_eq!(
            piece_size_for(4 << 40, 512 * kib),
            minitorr_proto::MAX_PIECE_SIZE
        );
    }
}

//! Following the daemon's event stream (`Request::Watch`): `minitorrctl watch` prints it;
//! `wait` and `download_file --wait` return the moment their download completes or fails.
//!
//! The daemon subscribes *before* it takes the snapshot it answers with, so a download that
//! completes in between shows in the snapshot or as an event (or both): `wait` cannot miss a
//! wake-up, whenever it starts.

use std::io::{IsTerminal, Write};

use proto::control::{DaemonEvent, DownloadState, DownloadStatus, EventKind, Request, Response};

use crate::client::{Client, EventStream};
use crate::commands::{pick, Target};
use crate::exit::{Failure, Status};
use crate::progress::Reporter;
use crate::render::{events, human};

/// Open a stream; a refusal by the daemon becomes the usual failure.
async fn open(
    client: &Client,
    group: Option<String>,
    file: Option<String>,
) -> Result<EventStream, Failure> {
    let request = Request::Watch {
        group: group.clone(),
        file: file.clone(),
    };
    match client.watch(group, file).await? {
        Ok(s) => Ok(s),
        Err(Response::Error(e)) => Err(Failure::refused(&e, &request)),
        Err(_) => Err(Failure::transport(
            client.socket(),
            "unexpected answer to watch",
        )),
    }
}

/// `minitorrctl watch`: print events until the daemon goes away (exit 3), the reader of
/// stdout goes away (`watch | head -1`: exit 0, even when no event comes), or Ctrl-C (exit 0).
pub async fn run(
    client: &Client,
    group: Option<String>,
    file: Option<String>,
    json: bool,
) -> Result<String, Failure> {
    let mut stream = open(client, group, file).await?;
    if std::io::stderr().is_terminal() && !json {
        let _ = writeln!(
            std::io::stderr(),
            "watching minitorrd's events (times in UTC); Ctrl-C to stop"
        );
    }
    let closed = stdout_closed();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(closed, interrupted);
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev?,
            () = &mut closed => return Ok(String::new()),
            _ = &mut interrupted => return Ok(String::new()),
        };
        let line = if json {
            events::json_line(&ev)
        } else {
            events::human_line(&ev)
        };
        let mut out = std::io::stdout().lock();
        match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(String::new()),
            Err(e) => {
                return Err(Failure::new(
                    Status::Refused,
                    "io",
                    format!("cannot write to stdout: {e}"),
                ))
            }
        }
    }
}

/// Resolves once nobody reads our stdout any more (the pipe's reader closed), so `watch |
/// head -1` ends when `head` does even if no further event comes. Never resolves for a
/// terminal or a file (nothing to detect; a write error ends us there).
async fn stdout_closed() {
    use std::os::fd::AsFd;
    use tokio::io::{unix::AsyncFd, Interest};
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return std::future::pending().await;
    }
    // epoll reports EPOLLERR on a pipe's write end once its read end is closed; regular files
    // cannot be registered at all (then we just never resolve).
    let watched = stdout
        .as_fd()
        .try_clone_to_owned()
        .ok()
        // SAFETY: an `OwnedFd` (our own duplicate of stdout) stays open and is the same
        // descriptor for as long as the `AsyncFd` owns it.
        .and_then(|fd| unsafe { AsyncFd::register_with_interest(fd, Interest::ERROR) }.ok());
    let Some(fd) = watched else {
        return std::future::pending().await;
    };
    loop {
        match fd.ready(Interest::ERROR).await {
            Ok(g) if g.ready().is_error() => return,
            Ok(mut g) => g.clear_ready(),
            Err(_) => return std::future::pending().await,
        }
    }
}

/// Follow `target` until it completes (Ok) or fails, vanishes (Err). Subscribes first, then
/// looks at the snapshot; afterwards only an event about this download (or a `lagged`
/// notice) makes it look again, with one `show_downloads` (so the final answer is exactly what
/// `show_downloads` says, as before).
pub async fn follow(
    client: &Client,
    target: &mut Target,
    reporter: &mut Reporter,
    last: &mut Option<DownloadStatus>,
) -> Result<DownloadStatus, Failure> {
    let mut stream = open(
        client,
        Some(target.group.clone()),
        Some(target.file.clone()),
    )
    .await?;
    let mut list = std::mem::take(&mut stream.downloads);
    loop {
        let Some(d) = pick(&list, target).cloned() else {
            return Err(Failure::new(
                Status::Refused,
                "not_found",
                format!("no download of {}/{}", target.group, target.file),
            )
            .with_hint(format!(
                "start one with: minitorrctl download_file {} {} <destination_path>",
                human::shell_word(&target.group),
                human::shell_word(&target.file)
            )));
        };
        // Stick to the download picked first, even if another one with the same name appears.
        target.dest = Some(d.dest.clone());
        reporter.update(&d);
        *last = Some(d.clone());
        match d.state {
            DownloadState::Complete => return Ok(d),
            DownloadState::Failed => {
                let why = d.error.as_deref().unwrap_or("unknown error");
                return Err(Failure::new(
                    Status::Refused,
                    "download_failed",
                    format!("download of {}/{} failed: {why}", d.group, d.file),
                )
                .with_download(&d));
            }
            // A queued download starts by itself; a paused one when the user resumes it.
            DownloadState::Downloading
            | DownloadState::Verifying
            | DownloadState::Queued
            | DownloadState::Paused => {}
        }
        // Wait for something that changes the answer.
        let mut current = d;
        loop {
            let ev = stream.next().await?;
            match relevance(&ev, &current) {
                Relevance::None => {}
                Relevance::Progress => {
                    apply_progress(&mut current, &ev.kind);
                    reporter.update(&current);
                    *last = Some(current.clone());
                }
                Relevance::State => break,
            }
        }
        list = match client.request(Request::ShowDownloads).await? {
            Response::Downloads(list) => list,
            Response::Error(e) => return Err(Failure::refused(&e, &Request::ShowDownloads)),
            _ => {
                return Err(Failure::transport(
                    client.socket(),
                    "unexpected answer to show_downloads",
                ))
            }
        };
    }
}

enum Relevance {
    None,
    Progress,
    /// Look at show_downloads again: the download's state changed, or we may have missed it.
    State,
}

fn relevance(ev: &DaemonEvent, d: &DownloadStatus) -> Relevance {
    if matches!(ev.kind, EventKind::Lagged { .. }) {
        return Relevance::State;
    }
    let Some(about) = ev.kind.download() else {
        return Relevance::None;
    };
    if about.dest != d.dest {
        return Relevance::None;
    }
    match ev.kind {
        EventKind::Progress { .. } => Relevance::Progress,
        EventKind::DownloadStarted { .. }
        | EventKind::DownloadCompleted { .. }
        | EventKind::DownloadFailed { .. }
        | EventKind::DownloadStateChanged { .. }
        | EventKind::DownloadRemoved { .. } => Relevance::State,
        _ => Relevance::None,
    }
}

fn apply_progress(d: &mut DownloadStatus, kind: &EventKind) {
    if let EventKind::Progress {
        bytes_done,
        pieces_done,
        speed_bps,
        ..
    } = kind
    {
        d.state = DownloadState::Downloading;
        d.bytes_done = *bytes_done;
        d.pieces_done = *pieces_done;
        d.speed_bps = *speed_bps;
    }
}

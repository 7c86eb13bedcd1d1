//! Binding the control socket safely and serving it.
//!
//! * The parent directory must be ours with mode 0700 (created so if missing, refused
//!   otherwise) and the socket is chmod-ed 0600 right after bind.
//! * A socket file left by a dead daemon is replaced; one a live daemon answers on is an error.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use minitorr_proto::control::{ErrorKind, Request, Response};
use minitorr_proto::private_dir::{ensure_private_dir, PrivateDirError};
use minitorr_proto::{handshake, links, Link};

use super::authorize;
use crate::daemon::Daemon;
use crate::events::Subscription;

/// A watch client whose socket takes no event for this long is dropped (its slot is freed).
/// Until then it only holds a cursor in the bus's ring: see `crate::events`.
const WATCH_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("minitorrd already running on {0}")]
    AlreadyRunning(PathBuf),
    // The reason is part of the message, not a `source`: printed with `{:#}` at the top, a
    // source would say it twice.
    #[error("refusing to use control socket {path}: {reason}")]
    UnsafeDir {
        path: PathBuf,
        reason: PrivateDirError,
    },
    #[error("refusing to use control socket {0}: something other than a socket is at that name; remove it")]
    NotASocket(PathBuf),
    #[error("cannot create control socket {path}: {reason}")]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
}

/// Bind the control socket at `path`. Its directory must be ours alone (created 0700 if
/// missing; refused if another user owns it or it lets others in — they could swap the socket
/// for their own and collect passwords), see [`minitorr_proto::private_dir`].
pub async fn bind_control_socket(path: &Path) -> Result<UnixListener, SocketError> {
    let io = |reason| SocketError::Io {
        path: path.to_path_buf(),
        reason,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    ensure_private_dir(dir).map_err(|reason| SocketError::UnsafeDir {
        path: path.to_path_buf(),
        reason,
    })?;
    if let Ok(md) = path.symlink_metadata() {
        if !md.file_type().is_socket() {
            return Err(SocketError::NotASocket(path.to_path_buf()));
        }
        // Probe: a live daemon answers; a stale file refuses the connection.
        match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await {
            Ok(Ok(_)) => return Err(SocketError::AlreadyRunning(path.to_path_buf())),
            _ => {
                tracing::info!(path = %path.display(), "removing stale control socket");
                std::fs::remove_file(path).map_err(io)?;
            }
        }
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

pub async fn serve_control(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    shutdown: CancellationToken,
) {
    let own_uid = nix::unistd::getuid().as_raw();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_client(stream, daemon, own_uid).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn serve_client(
    mut stream: UnixStream,
    daemon: Arc<Daemon>,
    own_uid: u32,
) -> anyhow::Result<()> {
    let uid = stream.peer_cred()?.uid();
    if let Err(why) = authorize(uid, own_uid) {
        tracing::warn!(%why, "refused control connection");
        return Ok(()); // closing without a handshake: the client reports it cannot talk to us
    }
    tokio::time::timeout(
        Duration::from_secs(5),
        handshake(&mut stream, Link::Control),
    )
    .await??;
    let mut framed = Framed::new(stream, links::control_server());
    while let Some(req) = framed.next().await {
        let resp = match req {
            Ok(req @ Request::Watch { .. }) => match daemon.watch(req) {
                Ok((sub, downloads)) => {
                    let first = framed.send(Response::Watching { downloads });
                    match tokio::time::timeout(WATCH_WRITE_TIMEOUT, first).await {
                        Ok(sent) => sent?,
                        Err(_) => {
                            tracing::info!("watch client does not read; closing its stream");
                            return Ok(());
                        }
                    }
                    return stream_events(framed, sub).await;
                }
                Err(e) => Response::Error(e),
            },
            Ok(req) => daemon.handle(req).await,
            Err(e) => {
                let _ = framed
                    .send(Response::error(
                        ErrorKind::InvalidInput,
                        format!("bad request: {e}"),
                    ))
                    .await;
                return Err(e.into());
            }
        };
        framed.send(resp).await?;
    }
    Ok(())
}

type ControlFramed = Framed<
    UnixStream,
    minitorr_proto::FrameCodec<minitorr_proto::control::Request, minitorr_proto::control::Response>,
>;

/// Forward events until the client closes (EOF, or anything it sends: a watch connection
/// carries no further requests), the daemon's bus closes, or the client stops reading for
/// [`WATCH_WRITE_TIMEOUT`].
async fn stream_events(mut framed: ControlFramed, mut sub: Subscription) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            ev = sub.next() => {
                let Some(ev) = ev else { return Ok(()) };
                match tokio::time::timeout(WATCH_WRITE_TIMEOUT, framed.send(Response::Event(ev))).await {
                    Ok(r) => r?,
                    Err(_) => {
                        tracing::info!("watch client stopped reading; closing its stream");
                        return Ok(());
                    }
                }
            }
            msg = framed.next() => {
                if let Some(Err(e)) = msg {
                    return Err(e.into());
                }
                return Ok(());
            }
        }
    }
}

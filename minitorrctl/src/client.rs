//! One round trip to minitorrd: connect, handshake, one request, one response.
//!
//! Every request uses a fresh connection. The control protocol is "one request, one response,
//! then the CLI closes", and a Unix-socket connect plus a 9-byte handshake is cheap even at the
//! 5 polls per second `wait` makes.
//!
//! The exception is `Request::Watch` ([`Client::watch`]): its connection stays open and carries
//! the daemon's events (`watch`, `wait`, `download_file --wait`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use proto::control::{DaemonEvent, DownloadStatus, Request, Response};
use proto::handshake::Link;
use proto::private_dir;
use proto::ProtoError;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use crate::exit::Failure;

/// A handshake that has not finished by then is a hung or foreign process, not a slow one.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send `request`, return the daemon's answer. `Response::Error` is returned as a value (the
    /// caller knows which hint fits); only transport problems become a `Failure` here.
    ///
    /// There is deliberately no timeout on the answer: `upload_file` hashes the whole file
    /// before answering, which takes minutes for big files, and the daemon bounds its own
    /// tracker calls.
    /// Connect and handshake without sending anything: is a compatible daemon there?
    pub async fn probe(&self) -> Result<(), Failure> {
        self.connect().await.map(drop)
    }

    pub async fn request(&self, request: Request) -> Result<Response, Failure> {
        let stream = self.connect().await?;
        let mut framed = Framed::new(stream, proto::links::control_client());
        framed.send(request).await.map_err(|e| self.lost(e))?;
        match framed.next().await {
            Some(Ok(response)) => Ok(response),
            Some(Err(e)) => Err(self.lost(e)),
            None => Err(Failure::transport(&self.socket, HUNG_UP)),
        }
    }

    /// Connect, check who is listening, then handshake. Nothing is written to the socket
    /// before both checks pass:
    /// * its directory is private ([`proto::private_dir`]): owned by us, mode 0700;
    /// * the listening process runs as our uid (SO_PEERCRED, the kernel's word): a socket
    ///   swapped for another user's is refused, and so is a root daemon for a user's CLI (a
    ///   daemon only serves its own user anyway). Root administering a user's daemon runs
    ///   minitorrctl as that user (`runuser -u USER -- minitorrctl …`).
    async fn connect(&self) -> Result<UnixStream, Failure> {
        self.check_socket_dir()?;
        let mut stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| Failure::connect(&self.socket, &e))?;
        let peer = stream
            .peer_cred()
            .map_err(|e| {
                Failure::untrusted(&self.socket, format!("cannot tell who listens ({e})"))
            })?
            .uid();
        let me = private_dir::own_uid();
        if peer != me {
            return Err(Failure::untrusted(
                &self.socket,
                format!(
                    "it is owned by uid {peer}, not you (uid {me}); someone else may be listening there"
                ),
            ));
        }
        match tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            proto::handshake(&mut stream, Link::Control),
        )
        .await
        {
            Err(_) => {
                return Err(Failure::handshake_timeout(
                    &self.socket,
                    HANDSHAKE_TIMEOUT.as_secs(),
                ))
            }
            Ok(Err(e)) => return Err(Failure::handshake(&self.socket, &e)),
            Ok(Ok(())) => {}
        }
        Ok(stream)
    }

    /// The socket's directory must be private to us. With no socket there at all this
    /// passes: connecting then fails with the usual "is minitorrd running?" (and a socket
    /// appearing in between is caught by the SO_PEERCRED check).
    fn check_socket_dir(&self) -> Result<(), Failure> {
        let dir = match self.socket.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let me = private_dir::own_uid();
        if std::fs::symlink_metadata(&self.socket).is_err() {
            return Ok(());
        }
        private_dir::check_private_dir(dir, me).map_err(|e| Failure::untrusted(&self.socket, e))?;
        Ok(())
    }

    fn lost(&self, e: ProtoError) -> Failure {
        match e {
            // A daemon that drops the connection (crash, refusing the request) can make our
            // write or read fail before we see the clean end of stream: same story for users.
            ProtoError::Io(io) if crate::exit::hung_up(&io) => {
                Failure::transport(&self.socket, HUNG_UP)
            }
            e => Failure::transport(&self.socket, e),
        }
    }
}

const HUNG_UP: &str = "it closed the connection without answering";

/// What a watch stream ending says: the daemon stopped (or restarted), the CLI did not.
pub const STREAM_ENDED: &str = "minitorrd closed the event stream (it stopped or restarted)";

/// An open `Watch` stream: the snapshot the daemon took after subscribing, then its events.
pub struct EventStream {
    framed: Framed<UnixStream, proto::FrameCodec<Response, Request>>,
    socket: PathBuf,
    /// The matching downloads as they were just after the subscription started.
    pub downloads: Vec<DownloadStatus>,
}

impl Client {
    /// Subscribe to the daemon's events (`group` / `file` narrow them). Refusals (not logged
    /// in is fine; too many watchers, bad names) come back as `Err(Response::Error)` values
    /// turned into failures by the caller, like [`Client::request`].
    pub async fn watch(
        &self,
        group: Option<String>,
        file: Option<String>,
    ) -> Result<Result<EventStream, Response>, Failure> {
        let stream = self.connect().await?;
        let mut framed = Framed::new(stream, proto::links::control_client());
        framed
            .send(Request::Watch { group, file })
            .await
            .map_err(|e| self.lost(e))?;
        match framed.next().await {
            Some(Ok(Response::Watching { downloads })) => Ok(Ok(EventStream {
                framed,
                socket: self.socket.clone(),
                downloads,
            })),
            Some(Ok(other)) => Ok(Err(other)),
            Some(Err(e)) => Err(self.lost(e)),
            None => Err(Failure::transport(&self.socket, HUNG_UP)),
        }
    }
}

impl EventStream {
    /// The next event; a failure (exit 3) once the daemon closed the stream or went away.
    pub async fn next(&mut self) -> Result<DaemonEvent, Failure> {
        match self.framed.next().await {
            Some(Ok(Response::Event(ev))) => Ok(ev),
            Some(Ok(other)) => Err(Failure::transport(
                &self.socket,
                format!("unexpected answer in an event stream: {other:?}"),
            )),
            Some(Err(proto::ProtoError::Io(io))) if crate::exit::hung_up(&io) => Err(self.ended()),
            Some(Err(e)) => Err(Failure::transport(&self.socket, e)),
            None => Err(self.ended()),
        }
    }

    fn ended(&self) -> Failure {
        Failure::new(
            crate::exit::Status::Unreachable,
            "unreachable",
            format!("{STREAM_ENDED} at {}", self.socket.display()),
        )
        .with_hint(crate::exit::start_daemon_hint())
    }
}

//! One connection to a tracker at a time. A request that fails on the wire is retried once on
//! a fresh connection, trying each tracker of the list in order starting with the current one.
//! (A mutating request whose reply was lost may thus be applied twice; every tracker call is
//! idempotent or answers "already exists", which the caller reports.)
//!
//! A connection is TCP, then TLS when configured (see [`super::tls`]), then the Minitorr
//! handshake, then frames. Each step is bounded by a timeout, so a tracker that does not speak
//! the same (TLS or plain) language is an error, never a hang.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;
use tokio_util::either::Either;

use minitorr_proto::codec::FrameCodec;
use minitorr_proto::tracker::{Call, Request, Response};
use minitorr_proto::{handshake, links, HandshakeError, Link, ProtoError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

use super::tls::TlsClient;

type Stream = Either<Either<TcpStream, TlsStream<TcpStream>>, BoxedStream>;

/// A byte stream to a tracker, before the Minitorr handshake.
pub trait TrackerStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> TrackerStream for T {}
pub type BoxedStream = Box<dyn TrackerStream>;

/// Opens the byte stream to a tracker instead of TCP (and TLS). The seam for in-process tests:
/// they serve a real trackerd `Service` over `tokio::io::duplex` (minitorrd/tests/daemon/).
pub trait Connector: Send + Sync {
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> futures::future::BoxFuture<'_, std::io::Result<BoxedStream>>;
}
pub(super) type Conn = Framed<Stream, FrameCodec<Response, Request>>;

#[derive(Debug, Error)]
pub enum TrackerError {
    #[error("no tracker reachable (tried {tried}): {last}")]
    Unreachable { tried: String, last: String },
    #[error("tracker speaks another protocol: {0}")]
    Incompatible(HandshakeError),
}

pub struct TrackerLink {
    addrs: Vec<SocketAddr>,
    /// TLS settings, or `None` for plain TCP.
    tls: Option<TlsClient>,
    conn: Mutex<Option<Conn>>,
    current: AtomicUsize,
    connected: AtomicBool,
    /// Bumped on every new connection, so callers can notice a failover and re-announce.
    generation: AtomicUsize,
    /// Streams come from here instead of TCP when set (tests).
    connector: Option<std::sync::Arc<dyn Connector>>,
}

#[derive(Debug, Error)]
enum WireError {
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("connection closed")]
    Closed,
    #[error("timed out")]
    Timeout,
}

impl TrackerLink {
    /// Plain TCP to `addrs`.
    pub fn new(addrs: Vec<SocketAddr>) -> TrackerLink {
        Self::with_tls(addrs, None)
    }

    /// The trackers and TLS settings of the daemon's configuration.
    pub fn from_config(cfg: &crate::config::Config) -> TrackerLink {
        Self::with_tls(cfg.trackers.clone(), cfg.tracker_tls_client.clone())
    }

    pub fn with_tls(addrs: Vec<SocketAddr>, tls: Option<TlsClient>) -> TrackerLink {
        assert!(!addrs.is_empty(), "config guarantees at least one tracker");
        TrackerLink {
            addrs,
            tls,
            conn: Mutex::new(None),
            current: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
            generation: AtomicUsize::new(0),
            connector: None,
        }
    }

    /// Trackers reached through `connector` (no TLS: the stream is the test's own).
    pub fn with_connector(
        addrs: Vec<SocketAddr>,
        connector: std::sync::Arc<dyn Connector>,
    ) -> TrackerLink {
        TrackerLink {
            connector: Some(connector),
            ..Self::with_tls(addrs, None)
        }
    }

    pub fn current_addr(&self) -> SocketAddr {
        self.addrs[self.current.load(Ordering::Relaxed) % self.addrs.len()]
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn generation(&self) -> usize {
        self.generation.load(Ordering::Relaxed)
    }

    /// Send one call and wait for its answer, reconnecting/failing over as needed.
    pub async fn call(&self, token: Option<&str>, call: Call) -> Result<Response, TrackerError> {
        let req = Request {
            token: token.map(str::to_owned),
            call,
        };
        let mut guard = self.conn.lock().await;
        // The connection is taken out while a request is on the wire: if this future is dropped
        // half-way (a cancelled task, a timeout), the connection goes with it instead of being
        // left with an unread reply that the next caller would take for its own.
        if let Some(mut conn) = guard.take() {
            match exchange(&mut conn, req.clone()).await {
                Ok(resp) => {
                    *guard = Some(conn);
                    return Ok(resp);
                }
                Err(e) => {
                    tracing::warn!(tracker = %self.current_addr(), error = %e, "tracker connection lost");
                    self.connected.store(false, Ordering::Relaxed);
                }
            }
        }
        let mut conn = self.connect_any().await?;
        match exchange(&mut conn, req).await {
            Ok(resp) => {
                *guard = Some(conn);
                Ok(resp)
            }
            Err(e) => {
                self.connected.store(false, Ordering::Relaxed);
                Err(TrackerError::Unreachable {
                    tried: self.current_addr().to_string(),
                    last: e.to_string(),
                })
            }
        }
    }

    /// A connection of its own (the event subscription streams on it), to the tracker in use
    /// or, failing that, the next reachable one in the list. Leaves the request connection and
    /// the current-tracker choice alone.
    pub(super) async fn open_dedicated(&self) -> Result<Conn, TrackerError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for k in 0..self.addrs.len() {
            let addr = self.addrs[(start + k) % self.addrs.len()];
            match connect(addr, self.tls.as_ref(), self.connector.as_deref()).await {
                Ok(conn) => return Ok(conn),
                Err(ConnectError::Handshake(e @ HandshakeError::VersionMismatch { .. })) => {
                    return Err(TrackerError::Incompatible(e))
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(TrackerError::Unreachable {
            tried: format!("{} tracker(s)", self.addrs.len()),
            last,
        })
    }

    /// Is a tracker answering right now? One round trip on a connection of its own (so a
    /// slow request on the shared one does not make it look down), within `within`.
    pub async fn probe(&self, within: Duration) -> bool {
        let round_trip = async {
            let mut conn = self.open_dedicated().await.ok()?;
            // Answered without a database look-up ("not logged in"): any answer will do.
            let req = Request {
                token: None,
                call: Call::Heartbeat,
            };
            exchange(&mut conn, req).await.ok()
        };
        matches!(tokio::time::timeout(within, round_trip).await, Ok(Some(_)))
    }

    async fn connect_any(&self) -> Result<Conn, TrackerError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for k in 0..self.addrs.len() {
            let i = (start + k) % self.addrs.len();
            let addr = self.addrs[i];
            match connect(addr, self.tls.as_ref(), self.connector.as_deref()).await {
                Ok(conn) => {
                    if i != start % self.addrs.len() {
                        tracing::info!(tracker = %addr, "failed over to tracker");
                    }
                    self.current.store(i, Ordering::Relaxed);
                    self.connected.store(true, Ordering::Relaxed);
                    self.generation.fetch_add(1, Ordering::Relaxed);
                    return Ok(conn);
                }
                Err(ConnectError::Handshake(e @ HandshakeError::VersionMismatch { .. })) => {
                    return Err(TrackerError::Incompatible(e))
                }
                Err(e) => {
                    tracing::debug!(tracker = %addr, error = %e, "tracker unreachable");
                    last = format!("{addr}: {e}");
                }
            }
        }
        let tried = self
            .addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Err(TrackerError::Unreachable { tried, last })
    }
}

#[derive(Debug, Error)]
enum ConnectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connect timed out")]
    Timeout,
    #[error("{0}")]
    Handshake(HandshakeError),
    #[error("{0}")]
    Tls(String),
}

async fn connect(
    addr: SocketAddr,
    tls: Option<&TlsClient>,
    connector: Option<&dyn Connector>,
) -> Result<Conn, ConnectError> {
    if let Some(c) = connector {
        let mut stream: Stream = Either::Right(c.connect(addr).await?);
        tokio::time::timeout(CONNECT_TIMEOUT, handshake(&mut stream, Link::Tracker))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Handshake)?;
        return Ok(Framed::new(stream, links::tracker_client()));
    }
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    tcp.set_nodelay(true)?;
    let mut stream: Stream = Either::Left(match tls {
        None => Either::Left(tcp),
        Some(tls) => Either::Right(
            tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(addr, tcp))
                .await
                .map_err(|_| ConnectError::Tls("TLS handshake with the tracker timed out".into()))?
                .map_err(ConnectError::Tls)?,
        ),
    });
    tokio::time::timeout(CONNECT_TIMEOUT, handshake(&mut stream, Link::Tracker))
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Handshake)?;
    Ok(Framed::new(stream, links::tracker_client()))
}

async fn exchange(conn: &mut Conn, req: Request) -> Result<Response, WireError> {
    let fut = async {
        conn.send(req).await?;
        match conn.next().await {
            Some(r) => Ok(r?),
            None => Err(WireError::Closed),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| WireError::Timeout)?
}

//! Serving pieces to other group members.
//!
//! A peer must present a ticket signed by the tracker for (user, group, file, sha1); we verify
//! it offline with the tracker's keys from our login (refreshed if a ticket names a new key).
//! Requests name pieces of that one file, so nothing but what was shared can ever be read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio_util::codec::{Decoder, Encoder, Framed};
use tokio_util::sync::CancellationToken;

use minitorr_proto::peer::{PeerMsg, TAG_PIECE};
use minitorr_proto::ticket::TicketClaims;
use minitorr_proto::{handshake, links, Link};

use super::live::{LiveConn, LiveConns};
use super::{SharedFile, Shares};
use crate::blocking::BlockingPool;
use crate::ratelimit::RateLimiter;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pipelined requests a peer may queue with us; more is abuse.
const MAX_QUEUED: usize = 64;

pub struct PeerServer {
    pub shares: Arc<Shares>,
    /// The tracker's ticket keys of the current login; empty while logged out (nothing is
    /// served).
    pub ticket_keys: Arc<crate::tracker::TicketKeys>,
    pub pool: BlockingPool,
    pub upload_limit: Arc<RateLimiter>,
    pub max_incoming: usize,
    /// Open connections, for revocation, idle timeout and per-address/per-user caps.
    pub live: Arc<LiveConns>,
}

/// Connections that have not yet presented a valid ticket, at most this many at once. A new
/// one evicts the oldest: real peers authenticate within milliseconds, so only clients that
/// connect and say nothing are pushed out, and they cannot crowd out real downloaders.
const MAX_UNAUTHENTICATED: usize = 64;

#[derive(Default)]
struct Unauthenticated {
    next_id: u64,
    waiting: VecDeque<(u64, CancellationToken)>,
}

impl Unauthenticated {
    fn register(&mut self) -> (u64, CancellationToken) {
        if self.waiting.len() >= MAX_UNAUTHENTICATED {
            if let Some((_, oldest)) = self.waiting.pop_front() {
                oldest.cancel();
            }
        }
        self.next_id += 1;
        let token = CancellationToken::new();
        self.waiting.push_back((self.next_id, token.clone()));
        (self.next_id, token)
    }

    fn done(&mut self, id: u64) {
        self.waiting.retain(|(i, _)| *i != id);
    }
}

pub async fn serve_peers(listener: TcpListener, srv: Arc<PeerServer>, shutdown: CancellationToken) {
    // Slots for authenticated peers being served; unauthenticated ones are bounded separately.
    let slots = Arc::new(Semaphore::new(srv.max_incoming));
    let unauthenticated = Arc::new(Mutex::new(Unauthenticated::default()));
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let (id, evicted) = unauthenticated.lock().expect("lock").register();
        let (srv, slots, unauthenticated, shutdown) = (
            srv.clone(),
            slots.clone(),
            unauthenticated.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let authenticated = tokio::select! {
                r = authenticate(stream, &srv) => r,
                _ = evicted.cancelled() => Err(anyhow::anyhow!("evicted before authenticating")),
                _ = shutdown.cancelled() => return,
            };
            unauthenticated.lock().expect("lock").done(id);
            let (mut framed, shared, claims) = match authenticated {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "peer connection ended before authenticating");
                    return;
                }
            };
            // Revocation (sharing/live.rs): from here the connection lives only while `live`
            // says so — events, stop_share, logout, ticket expiry, idleness — and counts
            // against the per-address and per-user caps.
            let live = match srv.live.register(addr.ip(), &claims) {
                Ok(l) => l,
                Err(refusal) => {
                    tracing::info!(%addr, user = %claims.user, %refusal, "refused peer");
                    let _ = framed
                        .send(PeerMsg::Refused {
                            reason: refusal.to_string(),
                        })
                        .await;
                    return;
                }
            };
            let Ok(_permit) = slots.try_acquire_owned() else {
                tracing::warn!(%addr, "too many peers being served; refusing");
                let _ = framed
                    .send(PeerMsg::Refused {
                        reason: "busy: too many peers, try later".into(),
                    })
                    .await;
                return;
            };
            tokio::select! {
                r = welcome_and_serve(framed, shared, &srv, &live) => if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "peer connection ended");
                },
                why = live.closed() => {
                    tracing::info!(%addr, user = %claims.user, file = %claims.file_name, %why, "closing peer connection");
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

type PeerFramed = Framed<TcpStream, minitorr_proto::FrameCodec<PeerMsg, PeerMsg>>;

/// Handshake and ticket. `Ok(None)`: the peer left or was refused (and told why).
async fn authenticate(
    mut stream: TcpStream,
    srv: &PeerServer,
) -> anyhow::Result<Option<(PeerFramed, Arc<SharedFile>, TicketClaims)>> {
    stream.set_nodelay(true)?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream, Link::Peer)).await??;
    let mut framed = Framed::new(stream, links::peer());
    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.next()).await?;
    let ticket = match hello {
        Some(Ok(PeerMsg::Hello { ticket })) => ticket,
        Some(Ok(other)) => anyhow::bail!("expected Hello, got {other:?}"),
        Some(Err(e)) => return Err(e.into()),
        None => return Ok(None),
    };
    match admit(srv, &ticket).await {
        Ok(shared) => {
            tracing::debug!(user = %ticket.claims.user, file = %shared.meta.name, "serving peer");
            Ok(Some((framed, shared, ticket.claims)))
        }
        Err(reason) => {
            tracing::info!(user = %ticket.claims.user, %reason, "refused peer");
            framed.send(PeerMsg::Refused { reason }).await?;
            Ok(None)
        }
    }
}

async fn welcome_and_serve(
    mut framed: PeerFramed,
    shared: Arc<SharedFile>,
    srv: &Arc<PeerServer>,
    live: &Arc<LiveConn>,
) -> anyhow::Result<()> {
    let have_rx = shared.subscribe();
    framed
        .send(PeerMsg::Welcome {
            have: shared.have(),
        })
        .await?;
    serve_requests(framed, shared, have_rx, srv, live).await
}

/// Decide whether a ticket opens one of our shares.
async fn admit(
    srv: &PeerServer,
    ticket: &minitorr_proto::ticket::Ticket,
) -> Result<Arc<SharedFile>, String> {
    let claims = srv.ticket_keys.verify(ticket).await?;
    let shared = srv
        .shares
        .get(&claims.group, &claims.file_name)
        .ok_or_else(|| format!("not sharing {} in {}", claims.file_name, claims.group))?;
    if shared.meta.sha1 != claims.file_sha1 {
        return Err("ticket is for a different version of this file".into());
    }
    Ok(shared)
}

/// `PeerMsg::Renew`: a ticket that `admit` would accept now and that names exactly what the
/// connection was admitted for pushes back its expiry. Anything else is ignored (logged): the
/// connection then ends when its current ticket expires.
async fn renew(srv: &PeerServer, live: &LiveConn, ticket: &minitorr_proto::ticket::Ticket) {
    let checked = match admit(srv, ticket).await {
        Ok(_) => live.renew(&ticket.claims).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => {
            tracing::debug!(user = %ticket.claims.user, until = live.expires_unix(), "ticket renewed")
        }
        Err(reason) => {
            tracing::info!(user = %ticket.claims.user, %reason, "ticket renewal refused")
        }
    }
}

async fn serve_requests(
    framed: PeerFramed,
    shared: Arc<SharedFile>,
    mut have_rx: broadcast::Receiver<u32>,
    srv: &Arc<PeerServer>,
    live: &Arc<LiveConn>,
) -> anyhow::Result<()> {
    // From here on the socket is driven by hand: piece data goes from the page cache to the
    // socket with sendfile(2) (no copy through our memory), which Framed cannot do.
    let parts = framed.into_parts();
    let stream = Arc::new(parts.io);
    let queue = Arc::new(Mutex::new(VecDeque::<u32>::new()));
    let wake = Arc::new(Notify::new());
    let closed = Arc::new(AtomicBool::new(false));

    // Reader: queue requests, apply cancels. Runs beside the writer so a Cancel can overtake
    // queued requests and reading never waits for disk or the rate limiter.
    let reader = {
        let (queue, wake, closed, stream) =
            (queue.clone(), wake.clone(), closed.clone(), stream.clone());
        let (srv, live) = (srv.clone(), live.clone());
        let n = shared.meta.piece_count();
        let mut buf = parts.read_buf;
        // Aborted when this future is dropped too (a revoked or idle connection is dropped
        // mid-serve): the reader holds the socket, which must close now, not when the peer
        // next writes.
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            if let Err(e) = read_requests(&stream, &mut buf, n, &queue, &wake, &srv, &live).await {
                tracing::debug!(error = %e, "peer reader stopped");
            }
            closed.store(true, Ordering::Release);
            wake.notify_one();
        }))
    };

    let mut out = BytesMut::new();
    let mut codec = links::peer();
    let result = async {
        loop {
            // Tell the peer about pieces we verified meanwhile (partial seeding).
            loop {
                match have_rx.try_recv() {
                    Ok(piece) => codec.encode(PeerMsg::Have { piece }, &mut out)?,
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        for piece in shared.have().iter_set() {
                            codec.encode(PeerMsg::Have { piece }, &mut out)?;
                        }
                    }
                    Err(_) => break,
                }
            }
            let next = queue.lock().expect("lock").pop_front();
            match next {
                Some(piece) => {
                    if !shared.has_piece(piece) || !shared.still_valid() {
                        codec.encode(PeerMsg::NoPiece { piece }, &mut out)?;
                        continue;
                    }
                    let len = shared.meta.piece_len(piece);
                    srv.upload_limit.acquire(len as usize).await;
                    // Frame header by hand (same layout the codec decodes), then the bytes.
                    out.put_u32(len + 5);
                    out.put_u8(TAG_PIECE);
                    out.put_u32(piece);
                    write_all(&stream, &mut out).await?;
                    send_file_range(
                        &stream,
                        shared.file(),
                        shared.meta.piece_offset(piece),
                        len as usize,
                    )
                    .await?;
                }
                None if closed.load(Ordering::Acquire) => return Ok(()),
                None => {
                    write_all(&stream, &mut out).await?;
                    tokio::select! {
                        _ = wake.notified() => {}
                        r = have_rx.recv() => match r {
                            Ok(piece) => codec.encode(PeerMsg::Have { piece }, &mut out)?,
                            Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => return Ok(()),
                        },
                    }
                }
            }
        }
    }
    .await;
    reader.abort();
    result
}

async fn read_requests(
    stream: &TcpStream,
    buf: &mut BytesMut,
    n: u32,
    queue: &Mutex<VecDeque<u32>>,
    wake: &Notify,
    srv: &PeerServer,
    live: &LiveConn,
) -> anyhow::Result<()> {
    let mut codec = links::peer();
    loop {
        while let Some(msg) = codec.decode(buf)? {
            match msg {
                PeerMsg::Request { piece } if piece < n => {
                    live.touch();
                    let mut q = queue.lock().expect("lock");
                    anyhow::ensure!(q.len() < MAX_QUEUED, "peer exceeded the request queue");
                    q.push_back(piece);
                    drop(q);
                    wake.notify_one();
                }
                PeerMsg::Request { piece } => {
                    anyhow::bail!("peer asked for piece {piece}, out of range")
                }
                PeerMsg::Cancel { piece } => queue.lock().expect("lock").retain(|&p| p != piece),
                PeerMsg::Renew { ticket } => renew(srv, live, &ticket).await,
                _ => {}
            }
        }
        buf.reserve(16 * 1024);
        stream.readable().await?;
        match stream.try_read_buf(buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Write and drain `buf` completely.
async fn write_all(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Send `len` bytes of `file` at `offset` straight from the page cache (sendfile).
async fn send_file_range(
    stream: &TcpStream,
    file: &std::fs::File,
    offset: u64,
    len: usize,
) -> std::io::Result<()> {
    let mut off = offset as i64;
    let mut left = len;
    while left > 0 {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile64(stream, file, Some(&mut off), left)
                .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "shared file shrank",
                ))
            }
            Ok(n) => left -= n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

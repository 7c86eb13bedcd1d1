//! Serving pieces to other group members.
//!
//! A peer must present a ticket signed by the tracker for (user, group, file, sha1); we verify
//! it offline with the tracker's keys from our login (refreshed if a ticket names a new key).
//! Requests name pieces of that one file, so nothing but what was shared can ever be read. The link is TLS 1.3 (peerlink/tls.rs) and the
//! ticket must be bound to the device key the client proved in the TLS handshake, so a ticket
//! seen or copied by anyone else opens nothing.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio_util::codec::{Decoder, Encoder, Framed};
use tokio_util::sync::CancellationToken;

use minitorr_proto::peer::{PeerMsg, TAG_PIECE};
use minitorr_proto::ticket::TicketClaims;
use minitorr_proto::{handshake, links, Link};

use super::live::{LiveConn, LiveConns};
use super::upload_policy::Decision;
use super::{SharedFile, Shares};
use crate::blocking::BlockingPool;
use crate::peerlink::tls::{self, TlsStream};
use crate::peerlink::{PeerLinkMode, PeerStream, PeerTls, PieceWrite, PLAINTEXT_REFUSED};
use crate::ratelimit::RateLimiter;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PeerServer {
    pub shares: Arc<Shares>,
    /// The tracker's ticket keys of the current login; empty while logged out (nothing is
    /// served).
    pub ticket_keys: Arc<crate::tracker::TicketKeys>,
    pub pool: BlockingPool,
    pub upload_limit: Arc<RateLimiter>,
    pub max_incoming: usize,
    /// TLS with device keys, or plaintext for loopback benchmarks.
    pub link: PeerLinkMode,
    /// Open connections, for revocation, idle timeout and per-address/per-user caps.
    pub live: Arc<LiveConns>,
    /// Hole punching (issue #14): punched connections to serve, and downloads waiting for a
    /// holder's connection to land on this listener.
    pub punch: Arc<crate::punch::PunchHub>,
}

/// Why a ticket presented on a TLS link is refused when it belongs to another device.
pub const TICKET_KEY_MISMATCH: &str =
    "ticket was issued to another device (its device key is not this connection's TLS key)";

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
    serve_peers_with_relay(listener, None, srv, shutdown).await
}

/// [`serve_peers`], plus the connections the tracker's relay joined to us (`relayed`, from
/// peerlink/relay.rs): they are served exactly like accepted ones — same TLS, tickets, caps
/// (their address is the relay's, so `max_peers_per_addr` counts all relayed peers together).
pub async fn serve_peers_with_relay(
    listener: TcpListener,
    mut relayed: Option<tokio::sync::mpsc::Receiver<crate::peerlink::relay::RelayedConn>>,
    srv: Arc<PeerServer>,
    shutdown: CancellationToken,
) {
    // Slots for authenticated peers being served; unauthenticated ones are bounded separately.
    let slots = Arc::new(Semaphore::new(srv.max_incoming));
    let unauthenticated = Arc::new(Mutex::new(Unauthenticated::default()));
    // Connections the holder side of a hole punch opened (see `crate::punch`): served exactly
    // like accepted ones, through the same limits.
    let mut punched = srv.punch.take_incoming();
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
            Some(conn) = async {
                match relayed.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => conn,
            Some(x) = async { match punched.as_mut() { Some(rx) => rx.recv().await, None => None } } => x,
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
            let done = || unauthenticated.lock().expect("lock").done(id);
            let conn = Conn {
                addr,
                srv: &srv,
                slots: &slots,
                evicted,
                shutdown: &shutdown,
            };
            // One generic path per transport; everything after authentication is shared.
            match srv.link.clone() {
                PeerLinkMode::Tls(tls) => {
                    conn.run(authenticate_tls(stream, &srv, &tls), done).await
                }
                PeerLinkMode::InsecurePlaintext => {
                    conn.run(authenticate_plaintext(stream, &srv), done).await
                }
            }
        });
    }
}

/// One accepted connection's context.
struct Conn<'a> {
    addr: SocketAddr,
    srv: &'a Arc<PeerServer>,
    slots: &'a Arc<Semaphore>,
    evicted: CancellationToken,
    shutdown: &'a CancellationToken,
}

impl Conn<'_> {
    /// Authenticate (evictable while unauthenticated), then take a slot and serve.
    async fn run<S: PeerStream>(
        self,
        auth: impl std::future::Future<Output = Authenticated<S>>,
        done_authenticating: impl FnOnce(),
    ) {
        let addr = self.addr;
        let authenticated = tokio::select! {
            r = auth => r,
            _ = self.evicted.cancelled() => Err(anyhow::anyhow!("evicted before authenticating")),
            _ = self.shutdown.cancelled() => return,
        };
        done_authenticating();
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
        let live = match self.srv.live.register(addr.ip(), &claims) {
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
        let Ok(_permit) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "too many peers being served; refusing");
            let _ = framed
                .send(PeerMsg::Refused {
                    reason: "busy: too many peers, try later".into(),
                })
                .await;
            return;
        };
        tokio::select! {
            r = welcome_and_serve(framed, shared, self.srv, &live, &claims.user) => if let Err(e) = r {
                tracing::debug!(%addr, error = %e, "peer connection ended");
            },
            why = live.closed() => {
                tracing::info!(%addr, user = %claims.user, file = %claims.file_name, %why, "closing peer connection");
            }
            _ = self.shutdown.cancelled() => {}
        }
    }
}

type PeerFramed<S> = Framed<S, minitorr_proto::FrameCodec<PeerMsg, PeerMsg>>;

/// `Ok(None)`: the peer left or was refused (and told why).
type Authenticated<S> = anyhow::Result<Option<(PeerFramed<S>, Arc<SharedFile>, TicketClaims)>>;

/// The first byte a client sends: a TLS handshake record, or our plaintext preamble.
async fn first_byte(stream: &TcpStream) -> anyhow::Result<Option<u8>> {
    let mut b = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut b)).await?? {
        0 => Ok(None),
        _ => Ok(Some(b[0])),
    }
}

/// TLS record type of a handshake message: how every TLS client starts.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// TLS, then the Minitorr handshake and ticket inside it; the ticket must be bound to the
/// device key the client proved in the TLS handshake.
async fn authenticate_tls(
    stream: TcpStream,
    srv: &PeerServer,
    tls: &PeerTls,
) -> Authenticated<TlsStream> {
    stream.set_nodelay(true)?;
    match first_byte(&stream).await? {
        None => return Ok(None),
        Some(b) if b == handshake::MAGIC[0] => {
            // A holder answering one of our hole punches, its connection landing on our
            // listener (it is behind a symmetric NAT): hand it to the waiting download.
            if let Some(nonce) = crate::punch::peek_punch(&stream).await? {
                if !srv.punch.waiters.deliver(&nonce, stream) {
                    tracing::debug!("punched connection for no waiting attempt; closed");
                }
                return Ok(None);
            }
            // A plaintext client (a daemon in benchmark mode): tell it why, send nothing else.
            tracing::warn!(peer = ?stream.peer_addr().ok(), "refused a plaintext peer link: this daemon requires TLS");
            let mut stream = stream;
            tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream, Link::Peer)).await??;
            let mut framed = Framed::new(stream, links::peer());
            // Answer its first frame (the Hello, never looked at), so that we do not close on
            // unread bytes, which would reset the connection before it reads why.
            if let Ok(Some(Ok(_))) = tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.next()).await {
                framed
                    .send(PeerMsg::Refused {
                        reason: PLAINTEXT_REFUSED.into(),
                    })
                    .await?;
            }
            return Ok(None);
        }
        Some(_) => {}
    }
    let (mut stream, client_key) = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream))
        .await?
        .map_err(|e| anyhow::anyhow!(tls::describe(&e)))?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream, Link::Peer)).await??;
    hello(Framed::new(stream, links::peer()), srv, Some(client_key)).await
}

/// Benchmark mode (loopback only): no TLS, so no device key to check the ticket against.
async fn authenticate_plaintext(stream: TcpStream, srv: &PeerServer) -> Authenticated<TcpStream> {
    stream.set_nodelay(true)?;
    let mut stream = stream;
    if first_byte(&stream).await? == Some(TLS_HANDSHAKE_RECORD) {
        tracing::warn!(peer = ?stream.peer_addr().ok(), "refused a TLS peer link: this daemon runs insecure_plaintext_peer_links_for_benchmarks");
        // Answer in plaintext so the client's TLS layer fails at once and says so ("did not
        // answer with TLS"), then let it hang up first (closing on unread data would reset
        // the connection before it reads the answer).
        stream
            .write_all(&handshake::preamble(
                Link::Peer,
                minitorr_proto::PROTOCOL_VERSION,
            ))
            .await?;
        let mut sink = [0u8; 4096];
        let drain = async { while stream.read(&mut sink).await.unwrap_or(0) > 0 {} };
        let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, drain).await;
        return Ok(None);
    }
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream, Link::Peer)).await??;
    hello(Framed::new(stream, links::peer()), srv, None).await
}

/// Read the `Hello` and decide on its ticket.
async fn hello<S: PeerStream>(
    mut framed: PeerFramed<S>,
    srv: &PeerServer,
    client_key: Option<[u8; 32]>,
) -> Authenticated<S> {
    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.next()).await?;
    let ticket = match hello {
        Some(Ok(PeerMsg::Hello { ticket })) => ticket,
        Some(Ok(other)) => anyhow::bail!("expected Hello, got {other:?}"),
        Some(Err(e)) => return Err(e.into()),
        None => return Ok(None),
    };
    match admit(srv, &ticket, client_key.as_ref()).await {
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

async fn welcome_and_serve<S: PeerStream>(
    mut framed: PeerFramed<S>,
    shared: Arc<SharedFile>,
    srv: &Arc<PeerServer>,
    live: &Arc<LiveConn>,
    user: &str,
) -> anyhow::Result<()> {
    let have_rx = shared.subscribe();
    framed
        .send(PeerMsg::Welcome {
            have: shared.have(),
        })
        .await?;
    serve_requests(framed, shared, have_rx, srv, live, user).await
}

/// Decide whether a ticket opens one of our shares.
/// `client_key`: the device key the client proved on a TLS link (`None` only in plaintext
/// benchmark mode); the ticket must be bound to it.
async fn admit(
    srv: &PeerServer,
    ticket: &minitorr_proto::ticket::Ticket,
    client_key: Option<&[u8; 32]>,
) -> Result<Arc<SharedFile>, String> {
    let claims = srv.ticket_keys.verify(ticket).await?;
    if client_key.is_some_and(|k| *k != claims.device_key) {
        return Err(TICKET_KEY_MISMATCH.into());
    }
    let shared = srv
        .shares
        .get(&claims.group, &claims.file_name)
        .ok_or_else(|| format!("not sharing {} in {}", claims.file_name, claims.group))?;
    if shared.meta.sha1 != claims.file_sha1 {
        return Err("ticket is for a different version of this file".into());
    }
    Ok(shared)
}

/// `PeerMsg::Renew`: a ticket that `admit` would accept now and that names exactly what the connection was admitted for pushes back its expiry.
/// Anything else is ignored (logged): the connection then ends when its current ticket expires.
async fn renew(srv: &PeerServer, live: &LiveConn, ticket: &minitorr_proto::ticket::Ticket) {
    let checked = match admit(srv, ticket, None).await {
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

async fn serve_requests<S: PeerStream>(
    framed: PeerFramed<S>,
    shared: Arc<SharedFile>,
    mut have_rx: broadcast::Receiver<u32>,
    srv: &Arc<PeerServer>,
    live: &Arc<LiveConn>,
    user: &str,
) -> anyhow::Result<()> {
    // For list_shares: bytes sent and members served (counted at their first piece).
    let stats = srv.shares.stats(&shared.group, &shared.meta.name);
    let mut counted_peer = false;
    // From here on the stream is driven by hand: a reader half and a writer half, so that a
    // Cancel can overtake queued requests and reading never waits for disk or the rate
    // limiter. Piece bytes go out by the stream's fastest way (see `send_piece`).
    let parts = framed.into_parts();
    // A second handle on the TCP socket, to read its unsent bytes (`wait_drained`); taken while
    // the stream is alive, so the descriptor is the connection's.
    let sock = parts.io.tcp_fd().and_then(|fd| {
        // SAFETY: `fd` belongs to `parts.io`, which is alive here; it is only duplicated.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .ok()
    });
    let (rd, mut wr) = parts.io.into_halves();
    // Pipelined requests a peer may queue with us; more is abuse.
    let limit = minitorr_proto::peer::max_queued_requests(shared.meta.piece_size);
    let queue = Arc::new(Mutex::new(RequestQueue::new(limit)));
    let wake = Arc::new(Notify::new());
    let closed = Arc::new(AtomicBool::new(false));
    // Initial seeding: this connection's id in the file's upload policy, closed on exit.
    struct Registered(Arc<SharedFile>, super::upload_policy::ConnId);
    impl Drop for Registered {
        fn drop(&mut self) {
            self.0.upload_close(self.1);
        }
    }
    let registered = Registered(shared.clone(), shared.upload_open());
    let conn = registered.1;
    let mut taken_rx = shared.subscribe_taken();
    // Pieces we told this downloader to get elsewhere (a bit per piece: a peer repeating
    // requests cannot grow it): offered again (`Have`) when initial seeding ends.
    let mut sent_elsewhere = PieceSet::new(shared.meta.piece_count());
    let mut shed = PieceSet::new(shared.meta.piece_count());

    let reader = {
        let (queue, wake, closed) = (queue.clone(), wake.clone(), closed.clone());
        let n = shared.meta.piece_count();
        let mut buf = parts.read_buf;
        let (srv, live, file) = (srv.clone(), live.clone(), shared.clone());
        // Aborted when this future is dropped too (a revoked or idle connection is dropped
        // mid-serve): the reader holds the socket, which must close now, not when the peer
        // next writes.
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let req = Requests {
                n,
                queue: &queue,
                wake: &wake,
                srv: &srv,
                live: &live,
                file: &file,
                conn,
            };
            if let Err(e) = read_requests(rd, &mut buf, req).await {
                tracing::debug!(error = %e, "peer reader stopped");
            }
            closed.store(true, Ordering::Release);
            wake.notify_one();
        }))
    };

    let mut out = BytesMut::new();
    let mut codec = links::peer();
    // Reused piece buffer for streams that cannot sendfile (TLS): frame header + piece bytes.
    let mut piece_buf: Vec<u8> = Vec::new();
    // Per-connection counters, logged when it ends (how the seeder's upload was split).
    let started = std::time::Instant::now();
    let (mut served, mut deferred) = (0u32, 0u32);
    // Times this connection had no request to serve, and for how long in all.
    let (mut starved, mut starved_s) = (0u32, 0f64);
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
            // Pieces that other connections just took into the swarm: our downloader should
            // not ask us for them (and what it queued for them is dropped, as if answered).
            loop {
                match taken_rx.try_recv() {
                    Ok(taken) => {
                        on_taken(taken, conn, &queue, &mut sent_elsewhere, &mut codec, &mut out)?
                    }
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
            let next = queue.lock().expect("lock").next();
            match next {
                Some(piece) => {
                    if !shared.has_piece(piece) || !shared.still_valid_for(piece) {
                        codec.encode(PeerMsg::NoPiece { piece }, &mut out)?;
                        continue;
                    }
                    let decision = shared.upload_decide(conn, piece);
                    tracing::trace!(conn, piece, ?decision, "decide");
                    match decision {
                        Decision::Elsewhere => {
                            sent_elsewhere.insert(piece);
                            codec.encode(PeerMsg::Elsewhere { piece }, &mut out)?;
                            deferred += 1;
                            continue;
                        }
                        Decision::ServeNew => shared.upload_announce_taken(conn, piece),
                        Decision::Serve => {}
                    }
                    let len = shared.piece_len(piece);
                    srv.upload_limit.acquire(len as usize).await;
                    // Our turn in the fair split of the upload between this file's
                    // connections (sharing/fair_share.rs). A busy seeder's connections wait
                    // for it most of the time: what they have to say meanwhile (`Have` for a
                    // piece we just verified, `Elsewhere` for one just taken into the swarm)
                    // goes out at once, not with this connection's next piece — in a crowd
                    // that was up to a second later, and downloaders kept asking the one
                    // holder they knew of a new piece instead of the ones that had it since.
                    let turn_asked = std::time::Instant::now();
                    {
                        let turn = shared.fair_turn(conn);
                        tokio::pin!(turn);
                        loop {
                            if !out.is_empty() {
                                wr.write_all(&out).await?;
                                out.clear();
                                wr.flush().await?;
                            }
                            tokio::select! {
                                biased;
                                _ = &mut turn => break,
                                r = have_rx.recv() => if !on_have(r, &shared, &mut codec, &mut out)? {
                                    return Ok(());
                                },
                                r = taken_rx.recv() => match r {
                                    Ok(taken) => on_taken(taken, conn, &queue, &mut sent_elsewhere, &mut codec, &mut out)?,
                                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                                },
                            }
                        }
                    }
                    // Cancelled while it waited (another peer sent it first: the endgame).
                    if !queue.lock().expect("lock").still_wanted(piece) {
                        shared.fair_give_back(conn);
                        tracing::trace!(conn, piece, "cancelled");
                        continue;
                    }
                    if shared.shed(piece, turn_asked.elapsed(), shed.get(piece)) {
                        shed.insert(piece);
                        shared.fair_give_back(conn);
                        tracing::trace!(conn, piece, "shed");
                        codec.encode(PeerMsg::Elsewhere { piece }, &mut out)?;
                        continue;
                    }
                    tracing::trace!(conn, piece, "wire");
                    piece_buf =
                        send_piece(&mut wr, &mut out, piece_buf, &shared, piece, &srv.pool).await?;
                    // Give our place on the wire up only when this piece has (nearly) left
                    // the kernel, so a few pieces cross at a time, each fast, instead of every
                    // connection's piece crawling at once (fair_share.rs).
                    wr.flush().await?;
                    if let Some(sock) = &sock {
                        wait_drained(sock, &shared, conn).await;
                    }
                    shared.fair_done(conn, u64::from(len));
                    tracing::trace!(conn, piece, "drained");
                    stats.uploaded(len as u64);
                    if !counted_peer {
                        counted_peer = true;
                        stats.served(user);
                    }
                    served += 1;
                    if shared.upload_sent(conn, piece) {
                        tracing::info!(file = %shared.meta.name, after_s = started.elapsed().as_secs_f64(),
                            new_rarest_lone_reask_full = ?shared.upload_served_why(),
                            "every piece has gone out at least once");
                    }
                }
                None if closed.load(Ordering::Acquire) => return Ok(()),
                None => {
                    starved += 1;
                    let since = std::time::Instant::now();
                    let _count = CountIdle(&mut starved_s, since);
                    wr.write_all(&out).await?;
                    out.clear();
                    wr.flush().await?;
                    tokio::select! {
                        _ = wake.notified() => {}
                        r = have_rx.recv() => if !on_have(r, &shared, &mut codec, &mut out)? {
                            return Ok(());
                        },
                        r = taken_rx.recv() => match r {
                            Ok(taken) => on_taken(taken, conn, &queue, &mut sent_elsewhere, &mut codec, &mut out)?,
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
    drop(registered);
    if served + deferred > 0 {
        let copies = shared.upload_copies();
        tracing::info!(file = %shared.meta.name, %user, served, deferred,
            secs = started.elapsed().as_secs_f64(),
            copies_0_1_2_3plus = ?copies,
            new_rarest_lone_reask_full = ?shared.upload_served_why(),
            starved, starved_s, wire_idle_s = shared.fair_idle_s(),
            held_s_hold_ms = ?shared.fair_held(),
            "peer connection served");
    }
    result
}

/// A piece we verified (partial seeding), heard while waiting: tell the peer. After a lag,
/// everything we have (a few hints too many, none missing). False once the share is gone.
fn on_have(
    heard: Result<u32, broadcast::error::RecvError>,
    shared: &SharedFile,
    codec: &mut minitorr_proto::FrameCodec<PeerMsg, PeerMsg>,
    out: &mut BytesMut,
) -> Result<bool, minitorr_proto::ProtoError> {
    match heard {
        Ok(piece) => codec.encode(PeerMsg::Have { piece }, out)?,
        Err(broadcast::error::RecvError::Lagged(_)) => {
            for piece in shared.have().iter_set() {
                codec.encode(PeerMsg::Have { piece }, out)?;
            }
        }
        Err(broadcast::error::RecvError::Closed) => return Ok(false),
    }
    Ok(true)
}

/// Another connection took `piece` into the swarm: our downloader should not ask us for it
/// (what it queued for it is dropped, as if answered). Or initial seeding is over: offer
/// again every piece we sent it elsewhere for.
fn on_taken(
    (by, piece): (super::upload_policy::ConnId, u32),
    conn: super::upload_policy::ConnId,
    queue: &Mutex<RequestQueue>,
    sent_elsewhere: &mut PieceSet,
    codec: &mut minitorr_proto::FrameCodec<PeerMsg, PeerMsg>,
    out: &mut BytesMut,
) -> Result<(), minitorr_proto::ProtoError> {
    if by == super::registry::INITIAL_SEEDING_OVER {
        for piece in sent_elsewhere.take() {
            codec.encode(PeerMsg::Have { piece }, out)?;
        }
    } else if by != conn {
        queue.lock().expect("lock").answered(piece);
        sent_elsewhere.insert(piece);
        codec.encode(PeerMsg::Elsewhere { piece }, out)?;
    }
    Ok(())
}

/// A connection's requests: those queued, and the one taken from the queue that waits for
/// its turn on the wire (in a crowd, up to a second). A `Cancel` reaches both: a piece
/// cancelled while it waited is not sent (before, every endgame duplicate that had reached
/// the head of a queue still went out, ~80 pieces per 16-leecher run).
#[derive(Debug)]
struct RequestQueue {
    /// Most requests queued at once (`proto::peer::max_queued_requests`).
    limit: usize,
    queued: VecDeque<u32>,
    waiting: Option<u32>,
    waiting_cancelled: bool,
}

impl RequestQueue {
    fn new(limit: usize) -> Self {
        RequestQueue {
            limit,
            queued: VecDeque::new(),
            waiting: None,
            waiting_cancelled: false,
        }
    }

    /// Queue a request; false if the peer exceeded the limit.
    fn push(&mut self, piece: u32) -> bool {
        if self.queued.len() >= self.limit {
            return false;
        }
        self.queued.push_back(piece);
        true
    }

    fn len(&self) -> usize {
        self.queued.len()
    }

    /// The next request to serve; it waits (cancellable) until `still_wanted` is asked.
    fn next(&mut self) -> Option<u32> {
        self.waiting = self.queued.pop_front();
        self.waiting_cancelled = false;
        self.waiting
    }

    /// The peer cancelled `piece`.
    fn cancel(&mut self, piece: u32) {
        self.queued.retain(|&p| p != piece);
        if self.waiting == Some(piece) {
            self.waiting_cancelled = true;
        }
    }

    /// `piece` was answered otherwise (`Elsewhere`): drop what is queued for it.
    fn answered(&mut self, piece: u32) {
        self.queued.retain(|&p| p != piece);
    }

    /// Is the piece taken by `next` still wanted (not cancelled meanwhile)? Ends its wait.
    fn still_wanted(&mut self, piece: u32) -> bool {
        let cancelled = self.waiting == Some(piece) && self.waiting_cancelled;
        self.waiting = None;
        self.waiting_cancelled = false;
        !cancelled
    }
}

/// A set of piece indexes, a bit each.
struct PieceSet(Vec<u64>);

impl PieceSet {
    fn new(pieces: u32) -> PieceSet {
        PieceSet(vec![0; (pieces as usize).div_ceil(64)])
    }

    fn get(&self, piece: u32) -> bool {
        self.0
            .get(piece as usize / 64)
            .is_some_and(|w| w & (1 << (piece % 64)) != 0)
    }

    fn insert(&mut self, piece: u32) {
        if let Some(w) = self.0.get_mut(piece as usize / 64) {
            *w |= 1 << (piece % 64);
        }
    }

    /// The pieces in the set, in order; the set is left empty.
    fn take(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, w) in self.0.iter_mut().enumerate() {
            let mut bits = std::mem::take(w);
            while bits != 0 {
                out.push(i as u32 * 64 + bits.trailing_zeros());
                bits &= bits - 1;
            }
        }
        out
    }
}

/// Adds the time since `.1` to `.0` when dropped.
struct CountIdle<'a>(&'a mut f64, std::time::Instant);
impl Drop for CountIdle<'_> {
    fn drop(&mut self) {
        *self.0 += self.1.elapsed().as_secs_f64();
    }
}

/// Wait until at most `DRAINED` bytes are unsent in the socket, while other connections wait
/// for the wire; at most the fair split's hold limit (after that the others go anyway).
async fn wait_drained(
    sock: &std::os::fd::OwnedFd,
    shared: &SharedFile,
    conn: super::upload_policy::ConnId,
) {
    use super::fair_share::{DRAINED, HOLD_MAX};
    let started = std::time::Instant::now();
    while shared.fair_others_waiting(conn) && started.elapsed() < HOLD_MAX {
        match unsent_bytes(sock) {
            Ok(q) if q > DRAINED => tokio::time::sleep(Duration::from_millis(1)).await,
            _ => return,
        }
    }
}

/// Bytes in a TCP socket's send queue that TCP has not sent yet (SIOCOUTQNSD; sent but
/// unacknowledged bytes are not counted, see `fair_share::DRAINED`).
fn unsent_bytes(sock: &std::os::fd::OwnedFd) -> std::io::Result<u64> {
    /// SIOCOUTQNSD (include/uapi/linux/sockios.h): an int.
    const SIOCOUTQNSD: rustix::ioctl::Opcode = 0x894B;
    // SAFETY: SIOCOUTQNSD on a socket writes one int.
    let q = unsafe {
        rustix::ioctl::ioctl(
            sock,
            rustix::ioctl::Getter::<SIOCOUTQNSD, std::ffi::c_int>::new(),
        )
    }?;
    Ok(u64::try_from(q).unwrap_or(0))
}

/// Length of a piece frame's header: u32 frame length, tag, u32 piece index.
const PIECE_HEADER: usize = 9;

/// Send one piece frame after whatever is pending in `out`. Over plain TCP the bytes go from
/// the page cache to the socket (sendfile, no copy through our memory). Otherwise (TLS) they
/// are copied into `buf` — straight from the page cache when it holds them, on the blocking
/// pool otherwise (a cache miss must not stall the reactor) — and written through the stream
/// as one contiguous frame, so the TLS layer makes full-size records. Returns `buf` for reuse.
async fn send_piece<W: PieceWrite>(
    wr: &mut W,
    out: &mut BytesMut,
    mut buf: Vec<u8>,
    shared: &Arc<SharedFile>,
    piece: u32,
    pool: &BlockingPool,
) -> std::io::Result<Vec<u8>> {
    let (file, offset, len) = shared.piece_file(piece)?;
    if let Some(sock) = wr.sendfile_socket() {
        // Frame header by hand (same layout the codec decodes), then the bytes.
        out.put_u32(len + 5);
        out.put_u8(TAG_PIECE);
        out.put_u32(piece);
        write_all(sock, out).await?;
        send_file_range(sock, &file, offset, len as usize).await?;
        return Ok(buf);
    }
    if !out.is_empty() {
        wr.write_all(out).await?;
        out.clear();
    }
    let total = PIECE_HEADER + len as usize;
    if buf.len() != total {
        buf.resize(total, 0); // zero-filled only when the piece size changes (last piece)
    }
    buf[..4].copy_from_slice(&(len + 5).to_be_bytes());
    buf[4] = TAG_PIECE;
    buf[5..PIECE_HEADER].copy_from_slice(&piece.to_be_bytes());
    // Fast path: what the page cache holds is copied here without blocking; only the rest
    // (a cache miss: disk I/O) goes to the blocking pool.
    let cached = read_cached(&file, &mut buf[PIECE_HEADER..], offset);
    if PIECE_HEADER + cached < total {
        let (b, read) = pool
            .run(move || {
                let at = PIECE_HEADER + cached;
                let r = file.read_exact_at(&mut buf[at..], offset + cached as u64);
                (buf, r)
            })
            .await;
        buf = b;
        read.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "shared file shrank")
            } else {
                e
            }
        })?;
    }
    wr.write_all(&buf).await?;
    Ok(buf)
}

/// Read into `buf` what the page cache already holds at `offset`, without ever blocking on the
/// disk (preadv2 with RWF_NOWAIT); returns how many bytes from the start of `buf` were read (0
/// if none are cached, or the kernel or filesystem cannot say).
fn read_cached(file: &std::fs::File, buf: &mut [u8], offset: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let mut iov = [std::io::IoSliceMut::new(&mut buf[done..])];
        let flags = rustix::io::ReadWriteFlags::NOWAIT;
        match rustix::io::preadv2(file, &mut iov, offset + done as u64, flags) {
            Ok(n) if n > 0 => done += n,
            _ => break,
        }
    }
    done
}

/// What the reader half of a serving connection works with.
struct Requests<'a> {
    n: u32,
    queue: &'a Mutex<RequestQueue>,
    wake: &'a Notify,
    srv: &'a PeerServer,
    live: &'a LiveConn,
    file: &'a SharedFile,
    conn: super::upload_policy::ConnId,
}

async fn read_requests<R: AsyncRead + Unpin>(
    mut rd: R,
    buf: &mut BytesMut,
    r: Requests<'_>,
) -> anyhow::Result<()> {
    let Requests {
        n,
        queue,
        wake,
        srv,
        live,
        file,
        conn,
    } = r;
    let mut codec = links::peer();
    loop {
        while let Some(msg) = codec.decode(buf)? {
            match msg {
                PeerMsg::Request { piece } if piece < n => {
                    live.touch();
                    let mut q = queue.lock().expect("lock");
                    anyhow::ensure!(q.push(piece), "peer exceeded the request queue");
                    tracing::trace!(conn, piece, queued = q.len(), "request");
                    drop(q);
                    wake.notify_one();
                }
                PeerMsg::Request { piece } => {
                    anyhow::bail!("peer asked for piece {piece}, out of range")
                }
                PeerMsg::Cancel { piece } => queue.lock().expect("lock").cancel(piece),
                // The renewal must name this connection's device key: `live.renew` compares
                // every claim but the times with those the connection was admitted on.
                PeerMsg::Renew { ticket } => renew(srv, live, &ticket).await,
                // The downloader verified a piece (from anyone): initial seeding sends it
                // to no one else while pieces only we have remain.
                PeerMsg::Have { piece } if piece < n => file.upload_peer_has(conn, piece),
                _ => {}
            }
        }
        buf.reserve(16 * 1024);
        if rd.read_buf(buf).await? == 0 {
            return Ok(());
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

#[cfg(test)]
mod tests {
    use super::{PieceSet, RequestQueue};
    const MAX_QUEUED: usize = 64;

    #[test]
    fn a_cancel_reaches_the_request_waiting_for_its_turn() {
        let mut q = RequestQueue::new(MAX_QUEUED);
        assert!(q.push(1) && q.push(2) && q.push(3));
        assert_eq!(q.next(), Some(1));
        // Cancelled while it waits for the wire: not sent.
        q.cancel(1);
        assert!(!q.still_wanted(1));
        // A queued one is dropped from the queue; the next one is not affected.
        q.cancel(2);
        assert_eq!(q.next(), Some(3));
        q.cancel(7);
        assert!(q.still_wanted(3));
        assert_eq!(q.next(), None);
        // Asked again after a cancel: served.
        assert!(q.push(1));
        assert_eq!(q.next(), Some(1));
        assert!(q.still_wanted(1));
        // `Elsewhere` drops only what is queued; the queue has a bound.
        for p in 0..MAX_QUEUED as u32 {
            assert!(q.push(p));
        }
        assert!(!q.push(99), "a peer cannot queue more than MAX_QUEUED");
        q.answered(0);
        assert_eq!(q.len(), MAX_QUEUED - 1);
    }

    #[test]
    fn a_piece_set_holds_each_piece_once_and_empties_when_taken() {
        let mut s = PieceSet::new(130);
        for p in [129, 3, 64, 3, 0, 129, 500] {
            s.insert(p); // 500 is out of range: ignored
        }
        assert_eq!(s.take(), vec![0, 3, 64, 129]);
        assert!(s.take().is_empty());
    }
}

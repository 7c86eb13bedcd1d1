//! One connection to one peer for one download: say hello with our ticket, learn its bitfield,
//! then keep a pipeline of requests full, verifying and writing each piece off the reactor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::codec::Framed;

use minitorr_proto::control::PeerPath;
use minitorr_proto::peer::PeerMsg;
use minitorr_proto::types::PeerInfo;
use minitorr_proto::{handshake, links, Link};

use super::picker::PeerId;
use super::pipeline::{self, RttEstimate};
use super::{Download, DownloadEnv, PeerTicket, PeerTickets};
use crate::peerlink::PeerLinkMode;
use crate::sharing::hasher::sha1_of;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A peer with requests outstanding that sends nothing for this long is dropped.
const SNUB_TIMEOUT: Duration = Duration::from_secs(20);
/// Corrupt pieces tolerated from one peer before it is dropped for this download.
const MAX_BAD_PIECES: u32 = 2;
/// After `Elsewhere`, ask that seeder for the piece again only after this long (other
/// downloaders have it meanwhile, or the seeder serves it the second time).
/// The seeder's `REASK_AFTER` (sharing/upload_policy.rs): asked again no sooner, it serves.
const ELSEWHERE_COOLDOWN: Duration = Duration::from_secs(3);
/// Requests (or pieces being verified) every peer may hold even when the download's memory
/// slots are taken by others: the slots then grow, up to the download's maximum.
const MIN_IN_FLIGHT: usize = 2;

#[derive(Debug)]
pub enum PeerExit {
    /// Nothing left to get from this peer (or the download finished).
    Done,
    /// Refused us, or the connection failed after it was made.
    Gone(String),
    /// No TCP connection could be made (refused, timed out): a holder that crashed or left.
    Unreachable(String),
    /// Sent corrupt data repeatedly: never again for this download.
    Liar,
    /// Proved a device key other than the one the tracker listed for it: never again for
    /// this download (unless the tracker lists it anew, with another key). Holds the listed key.
    Impostor([u8; 32]),
    /// A local failure that ends the whole download (e.g. the disk is full).
    Fatal(String),
}

impl PeerExit {
    /// Why the connection ended, for `PeerDisconnected` events.
    pub fn describe(&self) -> String {
        match self {
            PeerExit::Done => "nothing more to fetch from it".into(),
            PeerExit::Gone(why) | PeerExit::Unreachable(why) => why.clone(),
            PeerExit::Liar => "sent corrupt pieces repeatedly".into(),
            PeerExit::Impostor(_) => "proved another device key than the tracker listed".into(),
            PeerExit::Fatal(why) => why.clone(),
        }
    }
}

enum Verified {
    Good(u32, Bytes),
    BadHash(u32),
    WriteFailed(String),
}

pub async fn run_peer(
    dl: Arc<Download>,
    id: PeerId,
    info: PeerInfo,
    tickets: PeerTickets,
    env: Arc<DownloadEnv>,
) -> PeerExit {
    match session(&dl, id, &info, tickets, &env).await {
        Ok(exit) => exit,
        Err(e) => PeerExit::Gone(e.to_string()),
    }
}

/// Open the peer link: TCP, then TLS pinned to the holder's listed device key (or plaintext in
/// loopback benchmark mode), then the exchange over whichever stream that gave.
async fn session(
    dl: &Arc<Download>,
    id: PeerId,
    info: &PeerInfo,
    mut tickets: PeerTickets,
    env: &DownloadEnv,
) -> anyhow::Result<PeerExit> {
    let ticket = tickets.borrow_and_update().clone();
    // Direct, else a hole punch (else a relay): see `connect.rs` and `path.rs`.
    let (tcp, path) = match super::connect::connect(dl, info, env).await {
        Ok(x) => x,
        Err(why) => return Ok(PeerExit::Unreachable(why)),
    };
    tcp.set_nodelay(true)?;
    dl.peer_connected_via(&info.addr, path);
    // The path's round trip for the pipeline (pipeline.rs) comes from TCP itself, but only on
    // a socket that runs to the peer (a relayed one ends at the relay).
    let path_sock = if path == PeerPath::Relayed {
        None
    } else {
        std::os::fd::AsFd::as_fd(&tcp).try_clone_to_owned().ok()
    };
    match &env.link {
        PeerLinkMode::Tls(tls) => {
            let stream = match tokio::time::timeout(
                CONNECT_TIMEOUT,
                tls.connect(tcp, info.device_key),
            )
            .await?
            {
                Ok(s) => s,
                Err(e) => {
                    let why = crate::peerlink::tls::describe(&e);
                    if why == crate::peerlink::tls::IMPOSTOR {
                        tracing::warn!(peer = %info.addr, user = %info.user, "{why}; not downloading from it");
                        return Ok(PeerExit::Impostor(info.device_key));
                    }
                    anyhow::bail!(why);
                }
            };
            exchange(
                dl,
                id,
                info,
                tickets,
                greet(stream, ticket).await?,
                env,
                path_sock,
            )
            .await
        }
        PeerLinkMode::InsecurePlaintext => {
            exchange(
                dl,
                id,
                info,
                tickets,
                greet(tcp, ticket).await?,
                env,
                path_sock,
            )
            .await
        }
    }
}

type PeerFramed<S> = Framed<S, minitorr_proto::FrameCodec<PeerMsg, PeerMsg>>;

/// Minitorr handshake and `Hello` with our ticket; the seeder's bitfield back.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    ticket: PeerTicket,
) -> anyhow::Result<(PeerFramed<S>, minitorr_proto::types::Bitfield)> {
    tokio::time::timeout(CONNECT_TIMEOUT, handshake(&mut stream, Link::Peer)).await??;
    let mut framed = Framed::new(stream, links::peer());
    framed.send(PeerMsg::Hello { ticket }).await?;
    match tokio::time::timeout(CONNECT_TIMEOUT, framed.next()).await? {
        Some(Ok(PeerMsg::Welcome { have })) => Ok((framed, have)),
        Some(Ok(PeerMsg::Refused { reason })) => anyhow::bail!("refused: {reason}"),
        Some(Ok(other)) => anyhow::bail!("unexpected greeting {other:?}"),
        Some(Err(e)) => Err(e.into()),
        None => anyhow::bail!("closed during greeting"),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    dl: &Arc<Download>,
    id: PeerId,
    info: &PeerInfo,
    mut tickets: PeerTickets,
    (mut framed, have): (PeerFramed<S>, minitorr_proto::types::Bitfield),
    env: &DownloadEnv,
    path_sock: Option<std::os::fd::OwnedFd>,
) -> anyhow::Result<PeerExit> {
    // The expiry the seeder knows for this connection: a fresher ticket is sent as `Renew`.
    let mut expires = tickets.borrow_and_update().claims.expires_unix;
    if have.len() != dl.meta.piece_count() || !have.is_well_formed() {
        anyhow::bail!("bitfield of the wrong size");
    }
    dl.peer_greeted(info, env);
    dl.picker.lock().expect("lock").add_peer(id, have);
    // Tell the peer what we hold and, from now on, each piece we verify (from anyone): an
    // origin seeder then sends nobody else a piece that is already in the swarm while pieces
    // only it has remain (sharing/upload_policy.rs).
    let mut verified_rx = dl.shared.subscribe();
    let held = dl.shared.have();
    if held.count() > 0 {
        for piece in held.iter_set() {
            framed.feed(PeerMsg::Have { piece }).await?;
        }
        framed.flush().await?;
    }

    let n = dl.meta.piece_count();
    // A request holds one of the download's memory slots until its piece is verified or given
    // up (dropping the permit releases it).
    // (slot, when it was requested): the request→piece time gives the round trip.
    let mut inflight: HashMap<u32, (OwnedSemaphorePermit, Instant)> = HashMap::new();
    let mut rtt = RttEstimate::default();
    // Before the rate is known: what the path's round trip (TCP's, from the handshake) needs.
    let initial = pipeline::initial_depth(
        dl.meta.piece_size,
        path_sock.as_ref().and_then(crate::peerlink::tcp_min_rtt),
    );
    // The depth a short link would get (no round-trip term): slots beyond it are the
    // bandwidth-delay product's, which may grow the download's memory (up to its maximum).
    let mut short_depth = 2usize;
    let mut verifying = FuturesUnordered::new();
    let mut bad = 0u32;
    let mut depth = initial;
    let connected = Instant::now();
    let mut peak = pipeline::PeakRate::default();
    let mut window_start = Instant::now();
    let mut window_bytes = 0u64;
    let mut last_heard = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // Pieces the seeder told us to get elsewhere, and when: offered again by it after
    // ELSEWHERE_COOLDOWN (it serves a second request; see sharing/upload_policy.rs).
    let mut cooling: Vec<(Instant, u32)> = Vec::new();

    loop {
        // Keep the pipeline full. Pieces being verified still count against it: they are
        // buffers we hold, and that is what bounds memory per peer.
        let mut sent = false;
        while inflight.len() + verifying.len() < depth {
            let held = inflight.len() + verifying.len();
            let slot = match dl.slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                // A long link needs more in flight than the free slots allow: grow the
                // download's memory (bounded) for the bandwidth-delay part only. And every
                // peer may keep `MIN_IN_FLIGHT` requests whatever the others hold: in a crowd
                // 15 slow leechers filled the download's slots and the connection to the
                // seeder — the only source of new pieces — waited for one (the seeder's
                // uplink idled; docs/BENCHMARKS.md).
                Err(_) if (held >= short_depth || held < MIN_IN_FLIGHT) && dl.grow_slots() => {
                    match dl.slots.clone().try_acquire_owned() {
                        Ok(slot) => slot,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            let Some(piece) = dl.next_piece(id) else {
                break;
            };
            env.limit.acquire(dl.shared.piece_len(piece) as usize).await;
            framed.feed(PeerMsg::Request { piece }).await?;
            tracing::trace!(piece, peer = %info.user, depth, "asked");
            inflight.insert(piece, (slot, Instant::now()));
            sent = true;
        }
        if sent {
            framed.flush().await?;
        }
        if inflight.is_empty() && verifying.is_empty() {
            let p = dl.picker.lock().expect("lock");
            if p.is_complete() {
                return Ok(PeerExit::Done);
            }
        }

        tokio::select! {
            msg = framed.next() => {
                last_heard = Instant::now();
                match msg {
                    Some(Ok(PeerMsg::Piece { piece, data })) => {
                        let Some((slot, asked)) = inflight.remove(&piece) else {
                            continue; // cancelled or never asked: ignore
                        };
                        tracing::trace!(piece, peer = %info.user, ms = asked.elapsed().as_millis() as u64, "got");
                        rtt.sample(asked.elapsed());
                        window_bytes += data.len() as u64;
                        verifying.push(verify_and_write(dl.clone(), env, piece, data, slot));
                    }
                    Some(Ok(PeerMsg::Have { piece })) if piece < n => {
                        dl.picker.lock().expect("lock").peer_has(id, piece);
                    }
                    Some(Ok(PeerMsg::NoPiece { piece })) => {
                        if inflight.remove(&piece).is_some() {
                            dl.picker.lock().expect("lock").peer_lacks(id, piece);
                        }
                    }
                    // Initial seeding: the seeder sent this piece into the swarm already
                    // (an answer to our request, or unasked as soon as another downloader
                    // got it). Take it from another peer; ask this one again only after a
                    // while.
                    Some(Ok(PeerMsg::Elsewhere { piece })) if piece < n => {
                        // The seeder dropped our request for it, if any (the slot frees).
                        let asked = inflight.remove(&piece).is_some();
                        let mut p = dl.picker.lock().expect("lock");
                        if asked || !p.is_verified(piece) {
                            p.peer_lacks(id, piece);
                            if !cooling.iter().any(|&(_, c)| c == piece) {
                                cooling.push((Instant::now(), piece));
                            }
                        }
                    }
                    Some(Ok(PeerMsg::Refused { reason })) => return Ok(PeerExit::Gone(format!("refused: {reason}"))),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Ok(PeerExit::Gone(format!("bad frame: {e}"))),
                    None => return Ok(PeerExit::Gone("connection closed".into())),
                }
            }
            Some(v) = verifying.next(), if !verifying.is_empty() => match v {
                Verified::Good(piece, data) => dl.piece_verified(piece, data, &info.addr, &info.user),
                Verified::BadHash(piece) => {
                    bad += 1;
                    tracing::info!(peer = %info.addr, piece, "piece failed its SHA1 check; discarded");
                    dl.piece_rejected(piece, id, &info.addr, true);
                    if bad >= MAX_BAD_PIECES {
                        return Ok(PeerExit::Liar);
                    }
                }
                Verified::WriteFailed(e) => return Ok(PeerExit::Fatal(e)),
            },
            Ok(()) = tickets.changed() => {
                let ticket = tickets.borrow_and_update().clone();
                if ticket.claims.expires_unix > expires {
                    expires = ticket.claims.expires_unix;
                    framed.send(PeerMsg::Renew { ticket }).await?;
                }
            }
            r = verified_rx.recv() => match r {
                Ok(piece) => framed.send(PeerMsg::Have { piece }).await?,
                // Fell behind by hundreds of pieces: the seeder misses a few hints, no more.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
            _ = dl.changed.notified() => {}
            _ = tick.tick() => {}
            _ = dl.cancel.cancelled() => return Ok(PeerExit::Done),
        }

        // Cancel requests that another peer already satisfied (endgame).
        let done: Vec<u32> = {
            let p = dl.picker.lock().expect("lock");
            inflight
                .keys()
                .copied()
                .filter(|&i| p.is_verified(i))
                .collect()
        };
        for piece in done {
            inflight.remove(&piece);
            dl.piece_rejected(piece, id, &info.addr, false);
            framed.send(PeerMsg::Cancel { piece }).await?;
        }

        if cooling
            .first()
            .is_some_and(|(at, _)| at.elapsed() >= ELSEWHERE_COOLDOWN)
        {
            let mut p = dl.picker.lock().expect("lock");
            cooling.retain(|&(at, piece)| {
                let due = at.elapsed() >= ELSEWHERE_COOLDOWN;
                if due {
                    p.peer_has(id, piece);
                }
                !due
            });
        }

        // Size the pipeline from this peer's recent rate and round trip (pipeline.rs).
        let elapsed = window_start.elapsed();
        if elapsed >= Duration::from_millis(500) {
            let rate = window_bytes as f64 / elapsed.as_secs_f64();
            let piece = dl.meta.piece_size;
            short_depth = pipeline::target_depth(rate, Duration::ZERO, piece, env.max_depth);
            let path_rtt = path_sock
                .as_ref()
                .and_then(crate::peerlink::tcp_min_rtt)
                .unwrap_or_else(|| rtt.get());
            let peak_rate = peak.update(rate);
            depth =
                pipeline::target_depth_with_peak(rate, peak_rate, path_rtt, piece, env.max_depth)
                    .max(pipeline::slow_start_floor(
                        piece,
                        path_rtt,
                        connected.elapsed(),
                    ));
            tracing::trace!(peer = %info.user, depth, rate, rtt_us = path_rtt.as_micros() as u64, "depth");
            window_start = Instant::now();
            window_bytes = 0;
        }
        if !inflight.is_empty() && last_heard.elapsed() > SNUB_TIMEOUT {
            return Ok(PeerExit::Gone("stopped answering".into()));
        }
    }
}

async fn verify_and_write(
    dl: Arc<Download>,
    env: &DownloadEnv,
    piece: u32,
    data: Bytes,
    _slot: OwnedSemaphorePermit,
) -> Verified {
    let expected = dl.meta.pieces[piece as usize];
    if data.len() != dl.shared.piece_len(piece) as usize {
        return Verified::BadHash(piece);
    }
    let part = dl.part.clone();
    env.pool
        .run(move || {
            if sha1_of(&data) != expected {
                return Verified::BadHash(piece);
            }
            match part.write_piece(piece, &data) {
                Ok(()) => Verified::Good(piece, data),
                Err(e) => {
                    Verified::WriteFailed(format!("cannot write to {}: {e}", part.path().display()))
                }
            }
        })
        .await
}

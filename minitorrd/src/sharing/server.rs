//! Serving pieces to other group members.
//!
//! A peer must present a ticket signed by the tracker for (user, group, file, sha1); we verify
//! it offline with the tracker's key from our login. Requests name pieces of that one file, so
//! nothing but what was shared can ever be read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::VerifyingKey;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use minitorr_proto::peer::PeerMsg;
use minitorr_proto::{handshake, links, Link};

use super::{SharedFile, Shares};
use crate::blocking::BlockingPool;
use crate::ratelimit::RateLimiter;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pipelined requests a peer may queue with us; more is abuse.
const MAX_QUEUED: usize = 64;

pub struct PeerServer {
    pub shares: Arc<Shares>,
    /// The tracker key of the current login; `None` while logged out (nothing is served).
    pub tracker_key: Arc<RwLock<Option<VerifyingKey>>>,
    pub pool: BlockingPool,
    pub upload_limit: Arc<RateLimiter>,
    pub max_incoming: usize,
}

pub async fn serve_peers(listener: TcpListener, srv: Arc<PeerServer>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(srv.max_incoming));
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "too many peer connections; refusing");
            continue;
        };
        let srv = srv.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = serve_one(stream, &srv) => if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "peer connection ended");
                },
                _ = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type PeerFramed = Framed<TcpStream, minitorr_proto::FrameCodec<PeerMsg, PeerMsg>>;

async fn serve_one(mut stream: TcpStream, srv: &PeerServer) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream, Link::Peer)).await??;
    let mut framed = Framed::new(stream, links::peer());
    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.next()).await?;
    let ticket = match hello {
        Some(Ok(PeerMsg::Hello { ticket })) => ticket,
        Some(Ok(other)) => anyhow::bail!("expected Hello, got {other:?}"),
        Some(Err(e)) => return Err(e.into()),
        None => return Ok(()),
    };
    let shared = match admit(srv, &ticket) {
        Ok(s) => s,
        Err(reason) => {
            tracing::info!(user = %ticket.claims.user, %reason, "refused peer");
            framed.send(PeerMsg::Refused { reason }).await?;
            return Ok(());
        }
    };
    tracing::debug!(user = %ticket.claims.user, file = %shared.meta.name, "serving peer");
    let have_rx = shared.subscribe();
    framed
        .send(PeerMsg::Welcome {
            have: shared.have(),
        })
        .await?;
    serve_requests(framed, shared, have_rx, srv).await
}

/// Decide whether a ticket opens one of our shares.
fn admit(
    srv: &PeerServer,
    ticket: &minitorr_proto::ticket::Ticket,
) -> Result<Arc<SharedFile>, String> {
    let key = (*srv.tracker_key.read().expect("lock")).ok_or("this peer is not logged in")?;
    let claims = ticket.verify(&key, now_unix()).map_err(|e| e.to_string())?;
    let shared = srv
        .shares
        .get(&claims.group, &claims.file_name)
        .ok_or_else(|| format!("not sharing {} in {}", claims.file_name, claims.group))?;
    if shared.meta.sha1 != claims.file_sha1 {
        return Err("ticket is for a different version of this file".into());
    }
    Ok(shared)
}

async fn serve_requests(
    framed: PeerFramed,
    shared: Arc<SharedFile>,
    mut have_rx: broadcast::Receiver<u32>,
    srv: &PeerServer,
) -> anyhow::Result<()> {
    let (mut sink, mut stream) = framed.split();
    let queue = Arc::new(Mutex::new(VecDeque::<u32>::new()));
    let wake = Arc::new(Notify::new());
    let closed = Arc::new(AtomicBool::new(false));

    // Reader: queue requests, apply cancels. Runs beside the writer so a Cancel can overtake
    // queued requests and reading never waits for disk or the rate limiter.
    let reader = {
        let (queue, wake, closed) = (queue.clone(), wake.clone(), closed.clone());
        let n = shared.meta.piece_count();
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(PeerMsg::Request { piece }) if piece < n => {
                        let mut q = queue.lock().expect("lock");
                        if q.len() >= MAX_QUEUED {
                            tracing::info!("peer exceeded the request queue; closing");
                            break;
                        }
                        q.push_back(piece);
                        drop(q);
                        wake.notify_one();
                    }
                    Ok(PeerMsg::Cancel { piece }) => {
                        queue.lock().expect("lock").retain(|&p| p != piece)
                    }
                    Ok(PeerMsg::Request { piece }) => {
                        tracing::info!(piece, "peer asked for a piece out of range; closing");
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "bad frame from peer");
                        break;
                    }
                }
            }
            closed.store(true, Ordering::Release);
            wake.notify_one();
        })
    };

    let result = async {
        loop {
            // Tell the peer about pieces we verified meanwhile (partial seeding).
            loop {
                match have_rx.try_recv() {
                    Ok(piece) => sink.feed(PeerMsg::Have { piece }).await?,
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        for piece in shared.have().iter_set() {
                            sink.feed(PeerMsg::Have { piece }).await?;
                        }
                    }
                    Err(_) => break,
                }
            }
            let next = queue.lock().expect("lock").pop_front();
            match next {
                Some(piece) => {
                    if !shared.has_piece(piece) || !shared.still_valid() {
                        sink.send(PeerMsg::NoPiece { piece }).await?;
                        continue;
                    }
                    let len = shared.meta.piece_len(piece) as usize;
                    srv.upload_limit.acquire(len).await;
                    let f = shared.clone();
                    let data = srv.pool.run(move || f.read_piece(piece)).await?;
                    sink.send(PeerMsg::Piece { piece, data }).await?;
                }
                None if closed.load(Ordering::Acquire) => return Ok(()),
                None => {
                    sink.flush().await?;
                    tokio::select! {
                        _ = wake.notified() => {}
                        r = have_rx.recv() => match r {
                            Ok(piece) => sink.send(PeerMsg::Have { piece }).await?,
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

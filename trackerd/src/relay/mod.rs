//! The relay listener (issue #14, last resort): daemons that cannot reach each other directly
//! meet here and the relay splices their TCP streams.
//!
//! The relay never terminates the peer link's TLS: after `Joined` it copies bytes both ways
//! and nothing else, so what crosses it is ciphertext authenticated end to end with the two
//! device keys (the downloader pins the holder's key; the holder binds the ticket to the
//! downloader's). A relay — or anyone on its path — that drops, flips or injects a byte breaks
//! the TLS record check and the link fails; it cannot read files or forge pieces.
//!
//! Who may use it: a daemon proves a device key by signing the relay's nonce
//! (`proto::relay::auth_message`), and that key must have an online session on this tracker's
//! database. A downloader is joined only to a holder of a user it shares a group with. Limits
//! (`relay_max_*`) are checked before anything is allocated for a circuit; connections that
//! have not authenticated are capped and must do so within the handshake timeout.
//!
//! Splicing: `tokio::io::copy_bidirectional_with_sizes` with 64 KiB buffers per direction
//! (measured in BENCHMARKS.md, "Relay").

pub mod book;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signature, VerifyingKey};
use minitorr_proto::relay::{
    auth_message, read_frame, write_frame, RelayHello, RelayMsg, RelayOp, RelayRefusal,
};
use minitorr_proto::{handshake, Link};
use rand::RngCore;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub use book::{RelayBook, RelayLimits};

use crate::service::Service;

/// Preamble, challenge and hello must be done within this.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a downloader waits for the holder to bring its end of the circuit.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Keepalive on listening connections (NATs forget idle TCP mappings after minutes).
const PING_EVERY: Duration = Duration::from_secs(20);
/// Splice buffer per direction: big enough for full-size TLS records in flight at LAN speed.
const SPLICE_BUF: usize = 64 * 1024;
/// Connections that have not authenticated yet, at once, and from one source (an IPv4
/// address or IPv6 /64). At a cap the *oldest* is closed (crate::preauth, as on the tracker
/// port): a crowd of silent connections pushes itself out, never a daemon that answers its
/// challenge promptly.
const MAX_UNAUTHENTICATED: usize = 256;
const MAX_UNAUTHENTICATED_PER_SOURCE: usize = 64;

type Preauth = Arc<std::sync::Mutex<crate::preauth::Registry<CancellationToken>>>;

/// One connection's place among the unauthenticated; dropping it gives the place back.
struct PreauthPlace {
    registry: Preauth,
    id: crate::preauth::Id,
    evicted: CancellationToken,
}

impl Drop for PreauthPlace {
    fn drop(&mut self) {
        self.registry.lock().expect("lock").done(self.id);
    }
}

/// Serve the relay on `listener` until `shutdown`.
pub async fn serve_relay(
    listener: TcpListener,
    service: Arc<Service>,
    limits: RelayLimits,
    shutdown: CancellationToken,
) {
    let book: RelayBook<TcpStream> = RelayBook::new(limits);
    let preauth: Preauth = Arc::new(std::sync::Mutex::new(crate::preauth::Registry::new(
        crate::preauth::Limits {
            max_total: MAX_UNAUTHENTICATED,
            max_per_source: MAX_UNAUTHENTICATED_PER_SOURCE,
            // Nothing is charged: relay frames are read into 4 KiB at most per connection.
            max_bytes: usize::MAX,
        },
    )));
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "relay accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let evicted = CancellationToken::new();
        let place = {
            let mut reg = preauth.lock().expect("lock");
            let (id, pushed_out) = reg.register(addr.ip(), evicted.clone());
            for old in pushed_out {
                old.cancel();
            }
            PreauthPlace {
                registry: preauth.clone(),
                id,
                evicted,
            }
        };
        let (service, book, shutdown) = (service.clone(), book.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            tokio::select! {
                r = connection(stream, addr, &service, &book, place) => {
                    if let Err(e) = r {
                        tracing::debug!(%addr, error = %e, "relay connection ended");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// Why a relay connection ended early (logged at debug; the daemon got a `Refused` if it
/// was a refusal).
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Proto(#[from] minitorr_proto::ProtoError),
    #[error(transparent)]
    Handshake(#[from] minitorr_proto::HandshakeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout(#[from] tokio::time::error::Elapsed),
    #[error("refused: {0}: {1}")]
    Refused(RelayRefusal, String),
    #[error("closed before authenticating to make room for newer connections")]
    Evicted,
}

async fn refuse(
    stream: &mut TcpStream,
    reason: RelayRefusal,
    message: impl Into<String>,
) -> RelayError {
    let message = message.into();
    let _ = write_frame(
        stream,
        &RelayMsg::Refused {
            reason,
            message: message.clone(),
        },
    )
    .await;
    RelayError::Refused(reason, message)
}

/// Check the hello's signature over our nonce; the device key's online user, or the refusal.
async fn authenticate(
    stream: &mut TcpStream,
    service: &Service,
) -> Result<(RelayHello, String), RelayError> {
    handshake(stream, Link::Relay).await?;
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    write_frame(stream, &RelayMsg::Challenge { nonce }).await?;
    let hello: RelayHello = read_frame(stream).await?;
    let signed = auth_message(&nonce, &hello.device_key, &hello.op);
    let valid = VerifyingKey::from_bytes(&hello.device_key)
        .ok()
        .is_some_and(|k| {
            <[u8; 64]>::try_from(hello.signature.as_slice()).is_ok_and(|sig| {
                k.verify_strict(&signed, &Signature::from_bytes(&sig))
                    .is_ok()
            })
        });
    if !valid {
        return Err(refuse(stream, RelayRefusal::NotAuthenticated, "bad signature").await);
    }
    let user = match service.relay_identity(&hello.device_key).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(refuse(
                stream,
                RelayRefusal::NotAuthenticated,
                "this device key has no online session on the tracker: log in first",
            )
            .await)
        }
        Err(e) => {
            tracing::warn!(error = %e, "relay: database unavailable");
            return Err(refuse(stream, RelayRefusal::Busy, "tracker database unavailable").await);
        }
    };
    Ok((hello, user))
}

async fn connection(
    mut stream: TcpStream,
    addr: SocketAddr,
    service: &Service,
    book: &RelayBook<TcpStream>,
    place: PreauthPlace,
) -> Result<(), RelayError> {
    let (hello, user) = tokio::select! {
        r = tokio::time::timeout(AUTH_TIMEOUT, authenticate(&mut stream, service)) => r??,
        _ = place.evicted.cancelled() => return Err(RelayError::Evicted),
    };
    drop(place);
    match hello.op {
        RelayOp::Listen => listen(stream, addr, hello.device_key, &user, book).await,
        RelayOp::Connect { holder_key } => {
            connect(stream, hello.device_key, &user, holder_key, service, book).await
        }
        RelayOp::Accept { circuit } => match book.accept(circuit, hello.device_key, stream) {
            Ok(()) => Ok(()),
            Err((reason, mut stream)) => Err(refuse(
                &mut stream,
                reason,
                "no circuit with this id is waiting for this device",
            )
            .await),
        },
    }
}

/// A holder's control connection: `Incoming` notices and pings until it closes.
async fn listen(
    mut stream: TcpStream,
    addr: SocketAddr,
    key: [u8; 32],
    user: &str,
    book: &RelayBook<TcpStream>,
) -> Result<(), RelayError> {
    let (_guard, mut incoming) = match book.listen(key, user) {
        Ok(x) => x,
        Err(reason) => {
            return Err(refuse(
                &mut stream,
                reason,
                "the relay has too many holders connected",
            )
            .await)
        }
    };
    tracing::info!(%addr, user, "relay: holder listening");
    write_frame(&mut stream, &RelayMsg::Listening).await?;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut byte = [0u8; 1];
    loop {
        tokio::select! {
            notice = incoming.recv() => {
                // None: a newer connection of the same device replaced this one.
                let Some(n) = notice else { return Ok(()) };
                write_frame(&mut stream, &RelayMsg::Incoming {
                    circuit: n.circuit,
                    from_user: n.from_user,
                    from_key: n.from_key,
                }).await?;
            }
            _ = ping.tick() => write_frame(&mut stream, &RelayMsg::Ping).await?,
            // The holder sends nothing after its hello: EOF or anything else ends it.
            _ = stream.read(&mut byte) => return Ok(()),
        }
    }
}

/// A downloader's request: check, tell the holder, wait for its end, splice.
async fn connect(
    mut stream: TcpStream,
    key: [u8; 32],
    user: &str,
    holder_key: [u8; 32],
    service: &Service,
    book: &RelayBook<TcpStream>,
) -> Result<(), RelayError> {
    let Some(holder_user) = book.listener_user(&holder_key) else {
        return Err(refuse(
            &mut stream,
            RelayRefusal::HolderNotListening,
            "the holder is not connected to the relay",
        )
        .await);
    };
    // The listener authenticated when it connected; its session may have ended since.
    let still_online =
        matches!(service.relay_identity(&holder_key).await, Ok(Some(u)) if u == holder_user);
    let may = still_online
        && service
            .relay_may_join(user, &holder_user)
            .await
            .unwrap_or(false);
    if !may {
        return Err(refuse(
            &mut stream,
            RelayRefusal::Forbidden,
            "you share no group with that holder (or it is offline)",
        )
        .await);
    }
    let mut circuit = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut circuit);
    let (_guard, holder) = match book.open(user, key, holder_key, circuit) {
        Ok(x) => x,
        Err(reason) => {
            let why = match reason {
                RelayRefusal::Busy => {
                    "relay circuit limit reached (per user or in total); try later"
                }
                _ => "the holder is not connected to the relay",
            };
            return Err(refuse(&mut stream, reason, why).await);
        }
    };
    let mut holder = match tokio::time::timeout(ACCEPT_TIMEOUT, holder).await {
        Ok(Ok(h)) => h,
        _ => {
            return Err(refuse(
                &mut stream,
                RelayRefusal::HolderDidNotAnswer,
                "the holder did not take the relayed connection in time",
            )
            .await)
        }
    };
    let _ = holder.set_nodelay(true);
    write_frame(&mut holder, &RelayMsg::Joined).await?;
    write_frame(&mut stream, &RelayMsg::Joined).await?;
    tracing::info!(downloader = user, holder = %holder_user, "relay: circuit joined");
    let (up, down) =
        tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut holder, SPLICE_BUF, SPLICE_BUF)
            .await
            .unwrap_or((0, 0));
    tracing::info!(downloader = user, holder = %holder_user, up, down, "relay: circuit closed");
    Ok(())
}

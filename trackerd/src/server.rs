//! TCP front end: accept, TLS (when configured), handshake, then one request → one response
//! per frame.
//!
//! Each connection is its own task; the only shared state is the service (DB pool and a
//! short-held rate-limiter lock) and the pre-authentication registry, so a slow or hostile
//! client only ever holds up itself. A connection is closed on a frame error (too large,
//! malformed, truncated), on a handshake that does not finish in time, and when idle too long.
//!
//! Until a connection has authenticated (a successful `Login`, or a request carrying a valid
//! session token) it is held to much tighter limits, because anyone can open one:
//!
//! * each request must arrive in full within `handshake_timeout`, and be at most
//!   `max_frame_before_login` bytes — except that a larger request is read far enough to see
//!   its session token (the first field), and accepted if that token is valid (a daemon that
//!   reconnects sends its next request, possibly a large `Share`, with its token);
//! * request bodies are read by hand and *charged* to a budget shared by all unauthenticated
//!   connections before the memory is allocated;
//! * unauthenticated connections are counted in total and per source, and when a bound is hit
//!   the oldest one is closed (see [`crate::preauth`]).
//!
//! Authenticated connections get the normal 16 MiB frame cap and `idle_timeout`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use minitorr_proto::codec::{decode_postcard_prefix, WireMessage};
use minitorr_proto::tracker::{Call, ErrorCode, Request, Response};
use minitorr_proto::{handshake, links, Link, ProtoError, MAX_MESSAGE_FRAME};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Encoder, Framed, FramedParts};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::preauth::{self, Registry};
use crate::service::Service;

#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    pub max_connections: usize,
    /// For the TLS handshake and the preamble, and then for each request until the connection
    /// has authenticated.
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Largest request accepted before authentication (unless it carries a valid token).
    pub max_frame_before_login: usize,
    /// Bounds on unauthenticated connections and the bytes they make the server buffer.
    pub unauthenticated: preauth::Limits,
}

impl Default for ServerOptions {
    /// The config defaults.
    fn default() -> Self {
        use crate::config::*;
        ServerOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            drain_timeout: Duration::from_secs(5),
            max_frame_before_login: DEFAULT_MAX_FRAME_BEFORE_LOGIN,
            unauthenticated: preauth::Limits {
                max_total: DEFAULT_MAX_UNAUTHENTICATED,
                max_per_source: DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE,
                max_bytes: DEFAULT_MAX_UNAUTHENTICATED_BYTES,
            },
        }
    }
}

impl ServerOptions {
    pub fn from_config(c: &crate::config::Config) -> Self {
        ServerOptions {
            max_connections: c.max_connections,
            handshake_timeout: Duration::from_secs(c.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
            drain_timeout: Duration::from_secs(5),
            max_frame_before_login: c.max_frame_before_login,
            unauthenticated: preauth::Limits {
                max_total: c.max_unauthenticated,
                max_per_source: c.max_unauthenticated_per_source,
                max_bytes: c.max_unauthenticated_bytes,
            },
        }
    }
}

type SharedRegistry = Arc<Mutex<Registry<CancellationToken>>>;

fn lock(r: &SharedRegistry) -> std::sync::MutexGuard<'_, Registry<CancellationToken>> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Close connections evicted from the registry (outside its lock).
fn evict(evicted: Vec<CancellationToken>) {
    for t in evicted {
        t.cancel();
    }
}

/// A connection's place in the registry while it is unauthenticated; leaving (authenticating
/// or closing) frees it.
struct Unauthenticated {
    registry: SharedRegistry,
    id: preauth::Id,
    /// Cancelled when the connection is evicted to make room for newer ones.
    evicted: CancellationToken,
}

impl Unauthenticated {
    /// Reserve `bytes` of the shared budget for a request body about to be read; `false` if
    /// this connection was evicted or the request cannot fit.
    fn charge(&self, bytes: usize) -> bool {
        let (ok, evicted) = lock(&self.registry).charge(self.id, bytes);
        evict(evicted);
        ok
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        lock(&self.registry).done(self.id);
    }
}

/// Serve until `shutdown` is cancelled, then stop accepting, let connections finish the request
/// they are handling (up to `drain_timeout`), and return.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    opts: ServerOptions,
    shutdown: CancellationToken,
) {
    serve_with_tls(listener, service, opts, None, shutdown).await
}

/// [`serve`], with every connection wrapped in TLS when `tls` is given (the TLS handshake counts
/// against the handshake timeout like the protocol preamble).
pub async fn serve_with_tls(
    listener: TcpListener,
    service: Arc<Service>,
    opts: ServerOptions,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let registry: SharedRegistry = Arc::new(Mutex::new(Registry::new(opts.unauthenticated)));
    let tasks = TaskTracker::new();
    let mut evictions = EvictionLog::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning on the error.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = opts.max_connections, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let evicted = CancellationToken::new();
        let (id, pushed_out) = lock(&registry).register(peer.ip(), evicted.clone());
        evictions.note(pushed_out.len());
        evict(pushed_out);
        let unauthenticated = Unauthenticated {
            registry: registry.clone(),
            id,
            evicted,
        };
        let (service, shutdown, tls) = (service.clone(), shutdown.clone(), tls.clone());
        tasks.spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => connection(stream, peer, &service, opts, &shutdown, unauthenticated).await,
                Some(tls) => {
                    // Shutdown must not wait for a client stuck in the TLS handshake either.
                    let accept = tokio::time::timeout(opts.handshake_timeout, tls.accept(stream));
                    let accepted = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = unauthenticated.evicted.cancelled() => return,
                        r = accept => r,
                    };
                    match accepted {
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out; closing"),
                        Ok(Err(e)) => tracing::info!(%peer, "TLS handshake failed: {e}"),
                        Ok(Ok(tls_stream)) => {
                            connection(tls_stream, peer, &service, opts, &shutdown, unauthenticated)
                                .await
                        }
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(opts.drain_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            busy = tasks.len(),
            "requests still running after the drain timeout; abandoning them"
        );
    }
}

/// Logs evictions of unauthenticated connections at most every 10 s (under a flood there can be
/// thousands a second).
#[derive(Default)]
struct EvictionLog {
    since_last: u64,
    last: Option<std::time::Instant>,
}

impl EvictionLog {
    fn note(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.since_last += n as u64;
        if self
            .last
            .map_or(true, |t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                evicted = self.since_last,
                "too many connections that have not logged in; closing the oldest ones"
            );
            self.since_last = 0;
            self.last = Some(std::time::Instant::now());
        }
    }
}

/// How much of a large request's body is read to find its session token: a `Some` tag, a
/// length varint and a 64-character token fit easily.
const TOKEN_PEEK: usize = 128;

/// What an unauthenticated connection sent next.
#[derive(Debug)]
enum PreAuthFrame {
    /// A request within `max_frame_before_login`.
    Small(Request),
    /// The start of a larger request: the session token it carries (if it parses), and the
    /// bytes read so far (length prefix included), to hand on to the framed reader.
    Large {
        token: Option<String>,
        head: BytesMut,
    },
}

#[derive(Debug, thiserror::Error)]
enum PreAuthError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] ProtoError),
    #[error("no room for the request among unauthenticated connections")]
    NoRoom,
}

/// Read the next request of an unauthenticated connection without buffering more than
/// `max_small` bytes of body (charged to the shared budget first) or `TOKEN_PEEK` of a larger
/// one. `Ok(None)`: closed cleanly between requests.
async fn read_pre_auth<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_small: usize,
    who: &Unauthenticated,
) -> Result<Option<PreAuthFrame>, PreAuthError> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 {
        return Err(ProtoError::Malformed("empty frame".into()).into());
    }
    if len > MAX_MESSAGE_FRAME {
        return Err(ProtoError::FrameTooLarge {
            len,
            max: MAX_MESSAGE_FRAME,
        }
        .into());
    }
    if len > max_small {
        let peek = len.min(TOKEN_PEEK);
        let mut head = BytesMut::with_capacity(4 + peek);
        head.put_slice(&prefix);
        head.resize(4 + peek, 0);
        stream.read_exact(&mut head[4..]).await?;
        let token = decode_postcard_prefix::<Option<String>>(&head[4..])
            .ok()
            .flatten();
        return Ok(Some(PreAuthFrame::Large { token, head }));
    }
    if !who.charge(len) {
        return Err(PreAuthError::NoRoom);
    }
    let mut body = vec![0u8; len];
    let read = stream.read_exact(&mut body).await;
    who.charge(0);
    read?;
    Ok(Some(PreAuthFrame::Small(Request::decode_body(
        Bytes::from(body),
    )?)))
}

/// What an answer says about the session, for [`authenticates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    LoggedIn,
    InvalidSession,
    Other,
}

impl Answer {
    fn of(r: &Response) -> Answer {
        match r {
            Response::LoggedIn(_) => Answer::LoggedIn,
            Response::Error {
                code: ErrorCode::InvalidSession,
                ..
            } => Answer::InvalidSession,
            _ => Answer::Other,
        }
    }
}

/// Whether answering `call` with `answer` shows the connection belongs to a logged-in user.
/// Every call but `CreateUser` and `Login` is checked against its token first and answered
/// `InvalidSession` if the token is not valid; `Login` authenticates when it succeeds.
fn authenticates(had_token: bool, call: &Call, answer: Answer) -> bool {
    match (call, answer) {
        (Call::Login { .. } | Call::DeviceLogin { .. }, Answer::LoggedIn) => true,
        // Answered without looking at the token: proves nothing about it.
        (
            Call::Login { .. }
            | Call::DeviceLogin { .. }
            | Call::CreateUser { .. }
            | Call::DeviceChallenge { .. },
            _,
        ) => false,
        (_, Answer::InvalidSession) => false,
        _ => had_token,
    }
}

/// Send one response on a not-yet-framed stream, within `within`.
async fn send_raw<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: Response,
    within: Duration,
) -> Result<(), String> {
    let mut buf = BytesMut::new();
    links::tracker_server()
        .encode(response, &mut buf)
        .map_err(|e| e.to_string())?;
    let write = async {
        stream.write_all(&buf).await?;
        stream.flush().await
    };
    match tokio::time::timeout(within, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("client does not read its responses".into()),
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    service: &Service,
    opts: ServerOptions,
    shutdown: &CancellationToken,
    unauthenticated: Unauthenticated,
) {
    // Shutdown must not wait for a client that has not even finished its handshake.
    let greeting = tokio::time::timeout(
        opts.handshake_timeout,
        handshake(&mut stream, Link::Tracker),
    );
    let greeted = tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = unauthenticated.evicted.cancelled() => return,
        r = greeting => r,
    };
    match greeted {
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out; closing");
            return;
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, "handshake failed: {e}");
            return;
        }
        Ok(Ok(())) => {}
    }
    tracing::debug!(%peer, "connected");
    let Some((head, subscribe)) =
        before_login(&mut stream, peer, service, opts, shutdown, &unauthenticated).await
    else {
        return;
    };
    drop(unauthenticated);
    let mut parts = FramedParts::new::<Response>(stream, links::tracker_server());
    parts.read_buf = head;
    let mut framed = Framed::from_parts(parts);
    // A daemon opens its event subscription as the first request of a fresh connection.
    if let Some((token, after)) = subscribe {
        crate::subscription::serve(&mut framed, Some(token), after, service, peer, shutdown).await;
        return;
    }
    loop {
        // Waiting for a request is the only point where shutdown interrupts a connection: a
        // request being handled always gets its answer.
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tokio::time::timeout(opts.idle_timeout, framed.next()) => r,
        };
        let request = match next {
            Err(_) => {
                tracing::debug!(%peer, "idle timeout; closing");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::info!(%peer, "bad frame; closing connection: {e}");
                break;
            }
            Ok(Some(Ok(r))) => r,
        };
        // Revocation events: this connection becomes a push stream (see `subscription`).
        if let minitorr_proto::tracker::Call::Subscribe { after } = request.call {
            crate::subscription::serve(&mut framed, request.token, after, service, peer, shutdown)
                .await;
            break;
        }
        let response = service.handle(request, peer.ip()).await;
        // A client that stops reading must not pin this task forever.
        match tokio::time::timeout(opts.idle_timeout, framed.send(response)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, "cannot send response: {e}");
                break;
            }
            Err(_) => {
                tracing::info!(%peer, "client does not read its responses; closing");
                break;
            }
        }
    }
    tracing::debug!(%peer, "disconnected");
}

/// Serve an unauthenticated connection until it authenticates (returning the bytes already
/// read of its next request, if any) or is closed (`None`).
async fn before_login<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    service: &Service,
    opts: ServerOptions,
    shutdown: &CancellationToken,
    who: &Unauthenticated,
) -> Option<(BytesMut, Option<(String, Option<u64>)>)> {
    loop {
        let next = tokio::time::timeout(
            opts.handshake_timeout,
            read_pre_auth(stream, opts.max_frame_before_login, who),
        );
        let next = tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = who.evicted.cancelled() => {
                tracing::debug!(%peer, "evicted before logging in (too many unauthenticated connections)");
                return None;
            }
            r = next => r,
        };
        let frame = match next {
            Err(_) => {
                tracing::debug!(%peer, "no complete request within the handshake timeout before login; closing");
                return None;
            }
            Ok(Err(e)) => {
                tracing::info!(%peer, "bad request before login; closing connection: {e}");
                return None;
            }
            Ok(Ok(None)) => return None,
            Ok(Ok(Some(f))) => f,
        };
        match frame {
            PreAuthFrame::Large { token, head } => {
                let valid = match token {
                    Some(t) => service.session_is_valid(&t).await,
                    None => false,
                };
                if valid {
                    return Some((head, None));
                }
                tracing::info!(%peer, len = head.len(), "large request without a valid session before login; closing");
                let refusal = Response::err(
                    ErrorCode::InvalidSession,
                    format!(
                        "requests over {} bytes need a valid session: log in first",
                        opts.max_frame_before_login
                    ),
                );
                let _ = send_raw(stream, refusal, opts.handshake_timeout).await;
                return None;
            }
            PreAuthFrame::Small(request) => {
                // `Subscribe` with a live session turns this connection into an event stream
                // (see `subscription`): handed to the logged-in side unanswered. Without one,
                // the service refuses it below like any call.
                if let (Call::Subscribe { after }, Some(token)) = (&request.call, &request.token) {
                    if service.session_is_valid(token).await {
                        return Some((BytesMut::new(), Some((token.clone(), *after))));
                    }
                }
                let had_token = request.token.is_some();
                let call = request.call.clone();
                let response = service.handle(request, peer.ip()).await;
                let authenticated = authenticates(had_token, &call, Answer::of(&response));
                if let Err(e) = send_raw(stream, response, opts.idle_timeout).await {
                    tracing::debug!(%peer, "cannot send response: {e}");
                    return None;
                }
                if authenticated {
                    return Some((BytesMut::new(), None));
                }
                if who.evicted.is_cancelled() {
                    return None;
                }
            }
        }
    }
}

/// Serve one already-accepted byte stream (no TLS) from `peer` until it closes or `shutdown`
/// is cancelled: the same connection handling as [`serve`], without a listener. In-process
/// tests of a daemon drive a real service over `tokio::io::duplex` with it.
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    service: Arc<Service>,
    opts: ServerOptions,
    shutdown: CancellationToken,
) {
    let registry: SharedRegistry = Arc::new(Mutex::new(Registry::new(opts.unauthenticated)));
    let evicted = CancellationToken::new();
    let (id, _) = lock(&registry).register(peer.ip(), evicted.clone());
    let unauthenticated = Unauthenticated {
        registry,
        id,
        evicted,
    };
    connection(stream, peer, &service, opts, &shutdown, unauthenticated).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_of_a_large_request_is_read_from_its_first_bytes() {
        let token = crate::auth::new_token();
        let mut wire = BytesMut::new();
        links::tracker_client()
            .encode(
                Request {
                    token: Some(token.clone()),
                    call: Call::CreateGroup {
                        group: "g".repeat(100_000),
                    },
                },
                &mut wire,
            )
            .unwrap();
        let body = &wire[4..4 + TOKEN_PEEK];
        assert_eq!(
            decode_postcard_prefix::<Option<String>>(body).unwrap(),
            Some(token)
        );
        let mut wire = BytesMut::new();
        links::tracker_client()
            .encode(
                Request {
                    token: None,
                    call: Call::ListGroups,
                },
                &mut wire,
            )
            .unwrap();
        assert_eq!(
            decode_postcard_prefix::<Option<String>>(&wire[4..]).unwrap(),
            None
        );
        // A "token" longer than the peek window does not parse: treated as none.
        let long = [&[1u8, 0xc8, 0x01][..], &[b'a'; 125][..]].concat();
        assert!(decode_postcard_prefix::<Option<String>>(&long).is_err());
    }

    #[test]
    fn only_a_login_or_a_request_with_a_live_token_authenticates() {
        use Answer::*;
        let login = Call::Login {
            user: "u".into(),
            password: "p".into(),
            peer_addr: "127.0.0.1:1".into(),
            device_key: [1; 32],
        };
        let create = Call::CreateUser {
            user: "u".into(),
            password: "p".into(),
        };
        let join = Call::JoinGroup { group: "g".into() };
        assert!(authenticates(false, &login, LoggedIn));
        assert!(!authenticates(false, &login, Other));
        assert!(!authenticates(true, &login, Other));
        assert!(
            !authenticates(true, &create, Other),
            "CreateUser does not check the token"
        );
        assert!(authenticates(true, &Call::ListGroups, Other));
        assert!(
            authenticates(true, &join, Other),
            "a refusal other than InvalidSession still proves the session"
        );
        assert!(!authenticates(true, &Call::ListGroups, InvalidSession));
        assert!(!authenticates(false, &Call::ListGroups, InvalidSession));
        assert_eq!(Answer::of(&Response::ok("")), Other);
        assert_eq!(
            Answer::of(&Response::err(ErrorCode::InvalidSession, "x")),
            InvalidSession
        );
    }
}

//! TCP front end: accept, TLS (when configured), handshake, then one request → one response
//! per frame.
//!
//! Each connection is its own task; the only shared state is the service (DB pool and a
//! short-held rate-limiter lock), so a slow or hostile client only ever holds up itself. A
//! connection is closed on a frame error (too large, malformed, truncated), on a handshake that
//! does not finish in time, and when idle too long.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use minitorr_proto::{handshake, links, Link};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::service::Service;

#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl ServerOptions {
    pub fn from_config(c: &crate::config::Config) -> Self {
        ServerOptions {
            max_connections: c.max_connections,
            handshake_timeout: Duration::from_secs(c.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
            drain_timeout: Duration::from_secs(5),
        }
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
    let tasks = TaskTracker::new();
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
        let (service, shutdown, tls) = (service.clone(), shutdown.clone(), tls.clone());
        tasks.spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => connection(stream, peer, &service, opts, &shutdown).await,
                Some(tls) => {
                    // Shutdown must not wait for a client stuck in the TLS handshake either.
                    let accept = tokio::time::timeout(opts.handshake_timeout, tls.accept(stream));
                    let accepted = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = accept => r,
                    };
                    match accepted {
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out; closing"),
                        Ok(Err(e)) => tracing::info!(%peer, "TLS handshake failed: {e}"),
                        Ok(Ok(tls_stream)) => {
                            connection(tls_stream, peer, &service, opts, &shutdown).await
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

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    service: &Service,
    opts: ServerOptions,
    shutdown: &CancellationToken,
) {
    // Shutdown must not wait for a client that has not even finished its handshake.
    let greeting = tokio::time::timeout(
        opts.handshake_timeout,
        handshake(&mut stream, Link::Tracker),
    );
    let greeted = tokio::select! {
        _ = shutdown.cancelled() => return,
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
    let mut framed = Framed::new(stream, links::tracker_server());
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

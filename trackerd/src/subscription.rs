//! A connection turned into an event stream by `Call::Subscribe` (see `service::events`).
//!
//! Kept out of `server` so the request/response loop only needs one hook: when it reads a
//! `Subscribe`, it hands the connection to [`serve`] and never reads another request from it.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use minitorr_proto::codec::FrameCodec;
use minitorr_proto::tracker::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::service::Service;

/// An empty `Events` frame goes out when nothing happened for this long, so the daemon can
/// tell a quiet tracker from a dead one (it gives up after three missed keepalives).
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// A subscriber that does not read what we push for this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

type Conn<S> = Framed<S, FrameCodec<Request, Response>>;

/// Stream events for the session in `token` until the client goes, the session ends, or
/// shutdown. The client sends nothing more: any frame from it ends the stream.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Conn<S>,
    token: Option<String>,
    after: Option<u64>,
    service: &Service,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) {
    let mut sub = match service.subscribe(token.as_deref(), after).await {
        Ok(s) => s,
        Err(refusal) => {
            let _ = tokio::time::timeout(SEND_TIMEOUT, framed.send(refusal)).await;
            return;
        }
    };
    tracing::debug!(%peer, user = sub.user(), after = sub.cursor(), "event subscriber");
    let mut next = Response::Subscribed {
        after: sub.cursor(),
        head: sub.head(),
    };
    loop {
        match tokio::time::timeout(SEND_TIMEOUT, framed.send(next)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, "cannot push events: {e}");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "event subscriber does not read; closing");
                return;
            }
        }
        next = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = framed.next() => return,
            r = service.next_events(&mut sub, KEEPALIVE) => match r {
                Ok(events) => Response::Events(events),
                Err(end) => {
                    let _ = tokio::time::timeout(SEND_TIMEOUT, framed.send(end)).await;
                    return;
                }
            },
        };
    }
}

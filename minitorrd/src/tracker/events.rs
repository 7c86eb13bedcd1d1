//! The event subscription: a second tracker connection on which the tracker pushes revocation
//! events (`Call::Subscribe`, `Response::Events`).
//!
//! Kept alive for the whole login: on any failure (tracker gone, no keepalive for
//! [`DEAD_AFTER`], a refused subscription) it reconnects — to the tracker the request link
//! uses, or the next reachable one — and resumes after the last event id it saw, so a failover
//! loses nothing. Logout aborts the task; login starts a new one with the new token.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use minitorr_proto::tracker::{Call, ErrorCode, Event, Request, Response};

use super::link::Conn;
use super::TrackerLink;

/// The tracker sends a keepalive every 15 s; three missed ones mean the link is dead.
const DEAD_AFTER: Duration = Duration::from_secs(45);
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Run forever (until aborted): deliver every event for the session `token` to `on_event`, in
/// order, each once (a reconnect resumes after the last one delivered). The first subscription
/// replays the events the tracker still retains; `on_event`'s flag is false for those (history:
/// they happened before this login) and true for news.
pub async fn subscribe_events(
    link: Arc<TrackerLink>,
    token: String,
    on_event: impl Fn(&Event, bool) + Send + Sync,
    history_done: tokio::sync::oneshot::Sender<()>,
) {
    let mut head: Option<u64> = None;
    let mut history_done = Some(history_done);
    let mut cursor: Option<u64> = None;
    let mut backoff = RETRY_MIN;
    loop {
        let Err(e) = stream(
            &link,
            &token,
            &mut cursor,
            &mut head,
            &mut history_done,
            &mut backoff,
            &on_event,
        )
        .await;
        tracing::warn!(error = %e, "event subscription lost; reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// One subscription connection, until it fails. The retry backoff resets once the tracker
/// accepted the subscription.
async fn stream(
    link: &TrackerLink,
    token: &str,
    cursor: &mut Option<u64>,
    head: &mut Option<u64>,
    history_done: &mut Option<tokio::sync::oneshot::Sender<()>>,
    backoff: &mut Duration,
    on_event: &(impl Fn(&Event, bool) + Send + Sync),
) -> anyhow::Result<std::convert::Infallible> {
    let mut conn: Conn = link.open_dedicated().await?;
    conn.send(Request {
        token: Some(token.to_string()),
        call: Call::Subscribe { after: *cursor },
    })
    .await?;
    match next(&mut conn).await? {
        Response::Subscribed { after, head: h } => {
            // Only the first subscription of a login has history; resumptions are all news.
            if cursor.is_none() {
                *cursor = Some(after);
                *head = Some(h);
            }
        }
        Response::Error {
            code: ErrorCode::InvalidSession,
            message,
        } => anyhow::bail!("tracker refused the subscription: {message} (log in again)"),
        other => anyhow::bail!("unexpected answer to subscribe: {other:?}"),
    }
    *backoff = RETRY_MIN;
    tracing::debug!(after = ?cursor, "subscribed to tracker events");
    loop {
        match next(&mut conn).await? {
            // The first empty batch: history replayed (later ones are keepalives).
            Response::Events(events) if events.is_empty() => {
                if let Some(done) = history_done.take() {
                    let _ = done.send(());
                }
            }
            Response::Events(events) => {
                for ev in events {
                    let news = head.is_none_or(|h| ev.id > h);
                    tracing::info!(id = ev.id, event = ?ev.kind, news, "tracker event");
                    *cursor = Some(ev.id);
                    on_event(&ev, news);
                }
            }
            Response::Error { message, .. } => {
                anyhow::bail!("tracker ended the subscription: {message}")
            }
            other => anyhow::bail!("unexpected frame on the event stream: {other:?}"),
        }
    }
}

async fn next(conn: &mut Conn) -> anyhow::Result<Response> {
    match tokio::time::timeout(DEAD_AFTER, conn.next()).await {
        Err(_) => anyhow::bail!("no keepalive from the tracker for {DEAD_AFTER:?}"),
        Ok(None) => anyhow::bail!("tracker closed the event stream"),
        Ok(Some(r)) => Ok(r?),
    }
}

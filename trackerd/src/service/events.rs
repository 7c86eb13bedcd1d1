//! Event subscriptions: the push side of the tracker link.
//!
//! Events are rows written in the transaction of the change (see `store::events`), so every
//! tracker sharing a database sees them. Each tracker keeps one [`EventHub`]: a watch of the
//! highest committed event id, bumped right after our own commits (in-process wake-up) and by a
//! poller that reads `event_seq` every [`POLL_EVERY`] for other trackers' commits. Subscription
//! tasks wake on it and read the rows meant for their user. The poller runs only while this
//! tracker has subscribers, and prunes events older than [`RETENTION_SECS`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minitorr_proto::tracker::{ErrorCode, Event, EventKind, Response};
use tokio::sync::watch;

use super::{Fail, Service};
use crate::store::Store;

/// How often a tracker looks for events committed by the other trackers of its database.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// Events are kept at least this long, and at least a ticket's lifetime (plus a minute): a
/// daemon that (re)starts replays them, so a ticket issued before a revocation is refused for
/// as long as it could be valid. A daemon away longer than the retention gets `Resync`.
pub const RETENTION_SECS: i64 = 3600;
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Events sent in one frame at most (a long backlog goes out in several).
const BATCH: u32 = 256;

pub(crate) struct EventHub {
    retention_secs: i64,
    last: watch::Sender<u64>,
    /// Bumped when this tracker deleted sessions (logout, a login replacing a device's older
    /// session, a device revoked): subscriptions check at once whether theirs is still alive,
    /// so a replaced or revoked session's stream ends now, not at its next keepalive.
    sessions: watch::Sender<u64>,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl EventHub {
    pub(crate) fn new(last: u64, ticket_ttl_secs: u64) -> Arc<EventHub> {
        Arc::new(EventHub {
            retention_secs: RETENTION_SECS.max(ticket_ttl_secs.saturating_add(60) as i64),
            last: watch::channel(last).0,
            sessions: watch::channel(0).0,
            poller: Mutex::new(None),
        })
    }

    /// A wake-up for a new subscriber; starts the poller if it is not running.
    fn subscribe(self: &Arc<Self>, store: &Store) -> watch::Receiver<u64> {
        let mut poller = self.poller.lock().expect("lock");
        let rx = self.last.subscribe();
        if poller.is_none() {
            let (hub, store) = (self.clone(), store.clone());
            *poller = Some(tokio::spawn(async move { hub.poll(store).await }));
        }
        rx
    }

    /// Sessions were deleted here: wake every subscription to re-check its own.
    pub(crate) fn sessions_ended(&self) {
        self.sessions.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Tell subscribers that events up to `id` are committed.
    fn advance(&self, id: u64) {
        self.last.send_if_modified(|v| {
            let newer = id > *v;
            if newer {
                *v = id;
            }
            newer
        });
    }

    async fn poll(self: Arc<Self>, store: Store) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = Instant::now() - PRUNE_EVERY;
        loop {
            tick.tick().await;
            {
                // Decided under the lock `subscribe` takes, so a new subscriber either sees
                // the poller running or starts a new one.
                let mut poller = self.poller.lock().expect("lock");
                if self.last.receiver_count() == 0 {
                    *poller = None;
                    return;
                }
            }
            match store.last_event_id().await {
                Ok(id) => self.advance(id),
                Err(e) => tracing::warn!(error = %e, "cannot poll for events"),
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = Instant::now();
                let before = super::system_clock()() as i64 - self.retention_secs;
                match store.prune_events(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(pruned = n, "old events pruned"),
                    Err(e) => tracing::warn!(error = %e, "cannot prune events"),
                }
            }
        }
    }
}

/// One daemon's event stream. Created by [`Service::subscribe`], drained with
/// [`Service::next_events`].
pub struct Subscription {
    user: String,
    token_hash: String,
    cursor: u64,
    resync: bool,
    head: u64,
    /// An empty batch was sent once everything up to `head` was delivered.
    caught_up: bool,
    wake: watch::Receiver<u64>,
    sessions: watch::Receiver<u64>,
}

impl Subscription {
    /// The id of the last event delivered (or the starting point).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The last event id committed when the subscription started.
    pub fn head(&self) -> u64 {
        self.head
    }
}

impl Service {
    /// Start a subscription for the session `token`, after event `after` (or from now).
    /// The error is the response to send back.
    pub async fn subscribe(
        &self,
        token: Option<&str>,
        after: Option<u64>,
    ) -> Result<Subscription, Response> {
        let r = async {
            let caller = self.authenticate(token).await?;
            let last = self.store.last_event_id().await?;
            let (cursor, resync) = match after {
                // Everything retained: a fresh daemon learns the revocations its seeders must
                // still enforce. Nothing to resync: it had no state to miss.
                None => (0, false),
                // An id we never handed out (another database?): start over, conservatively.
                Some(a) if a > last => (last, true),
                Some(a) => (a, self.store.events_lost_after(a).await?),
            };
            Ok::<_, Fail>(Subscription {
                user: caller.session.user,
                token_hash: caller.token_hash,
                cursor,
                resync,
                head: last,
                caught_up: false,
                wake: self.events.subscribe(&self.store),
                sessions: self.events.sessions.subscribe(),
            })
        }
        .await;
        r.map_err(|f| self.answer_failure("subscribe", f))
    }

    /// The next events for `sub`, waiting up to `wait` for some; empty when none came (time for
    /// a keepalive) — and once, without waiting, when the history up to `head` is delivered. An error (the session ended, or the database failed) ends the subscription.
    pub async fn next_events(
        &self,
        sub: &mut Subscription,
        wait: Duration,
    ) -> Result<Vec<Event>, Response> {
        if std::mem::take(&mut sub.resync) {
            tracing::info!(user = %sub.user, "subscriber missed pruned events; asking it to resync");
            return Ok(vec![Event {
                id: sub.cursor,
                at_unix: super::system_clock()(),
                kind: EventKind::Resync,
            }]);
        }
        let r = async {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                // Mark the current value seen *before* reading, so a commit in between wakes us.
                sub.wake.borrow_and_update();
                let events = self.store.events_for(&sub.user, sub.cursor, BATCH).await?;
                if let Some(last) = events.last() {
                    sub.cursor = last.id;
                    return Ok(events);
                }
                if !sub.caught_up {
                    // Tell the subscriber the history is replayed (an empty batch), so it can
                    // start trusting its revocation list.
                    sub.caught_up = true;
                    return Ok(vec![]);
                }
                tokio::select! {
                    r = sub.wake.changed() => match r {
                        Ok(()) => continue,
                        Err(_) => return fail(ErrorCode::Internal, "event hub closed"),
                    },
                    r = sub.sessions.changed() => {
                        if r.is_err() {
                            return fail(ErrorCode::Internal, "event hub closed");
                        }
                        sub.sessions.borrow_and_update();
                        if !self.session_alive(&sub.token_hash).await? {
                            return fail(
                                ErrorCode::InvalidSession,
                                "session ended (logged out, replaced by a new login of the same \
                                 device, or the device was revoked)",
                            );
                        }
                        continue;
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            // Quiet for `wait`: is the session still alive (logout, expiry)?
            if !self.session_alive(&sub.token_hash).await? {
                return fail(ErrorCode::InvalidSession, "session expired or revoked");
            }
            Ok(vec![])
        }
        .await;
        r.map_err(|f| self.answer_failure("subscribe", f))
    }

    async fn session_alive(&self, token_hash: &str) -> Result<bool, Fail> {
        Ok(self
            .store
            .session(token_hash, self.expired_before())
            .await?
            .is_some())
    }

    /// After a commit that may have written events: wake our subscribers now rather than at the
    /// next poll.
    pub(super) async fn events_committed(&self) {
        match self.store.last_event_id().await {
            Ok(id) => self.events.advance(id),
            Err(e) => tracing::warn!(error = %e, "cannot read the last event id"),
        }
    }
}

fn fail<T>(code: ErrorCode, message: &str) -> Result<T, Fail> {
    Err(Fail::Client(code, message.to_string()))
}

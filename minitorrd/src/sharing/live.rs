//! Every peer connection this daemon serves, so that revocation reaches connections that are
//! already open.
//!
//! The peer server registers each connection once its ticket is admitted ([`LiveConns::register`])
//! and serves it only while [`LiveConn::closed`] has not fired. A connection is closed when:
//!
//! * its user is gone from the group, the group is deleted, or the file entry is removed
//!   (tracker events, [`LiveConns::apply`]);
//! * this daemon stops sharing the file or logs out ([`LiveConns::close_file`],
//!   [`LiveConns::close_all`]);
//! * its ticket expires without a `Renew` ([`LiveConn::renew`]);
//! * the peer has sent no request for the idle timeout ([`LiveConn::touch`]).
//!
//! Events also leave a mark ([`LiveConns::is_revoked`]): a ticket issued at or before the
//! revocation stays refused for new connections, although its signature and expiry are fine
//! (the departed member could otherwise just reconnect with it). The daemon replays the
//! tracker's retained events at login, so this survives restarts.
//!
//! Per-address and per-user caps are enforced at registration, so one member (or one address)
//! can never hold every serving slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use minitorr_proto::ticket::TicketClaims;
use minitorr_proto::tracker::EventKind;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Limits, from the daemon's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveLimits {
    /// A connection on which the peer requested nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once to one IP address.
    pub max_per_addr: usize,
    /// Connections served at once to one user (over all their addresses).
    pub max_per_user: usize,
}

/// Why a connection is (to be) closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Revoked,
    TicketExpired,
    Idle,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::Revoked => "access revoked",
            CloseReason::TicketExpired => "ticket expired",
            CloseReason::Idle => "idle: no request for too long",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("access revoked: not a member any more, or the file or group is gone")]
    Revoked,
    #[error("busy: too many connections from your address ({0}), try later")]
    PerAddress(usize),
    #[error("busy: too many connections for your user ({0}), try later")]
    PerUser(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewError {
    #[error("renewal ticket names another user, group, file or content")]
    OtherClaims,
}

struct Entry {
    addr: IpAddr,
    user: String,
    group: String,
    file: String,
    /// The admitted ticket's issue time; a renewal does not change what the connection is for,
    /// so revocation compares against the first ticket.
    issued_unix: u64,
    cancel: CancellationToken,
}

/// What an event revoked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Revoked {
    Member { group: String, user: String },
    Group { group: String },
    File { group: String, file: String },
}

impl Revoked {
    fn of(event: &EventKind) -> Option<Revoked> {
        Some(match event.clone() {
            EventKind::MemberGone { group, user } => Revoked::Member { group, user },
            EventKind::GroupDeleted { group } => Revoked::Group { group },
            EventKind::FileRemoved { group, file } => Revoked::File { group, file },
            EventKind::Resync
            | EventKind::HolderOnline { .. }
            | EventKind::HolderGone { .. }
            | EventKind::PunchRequest { .. } => return None,
        })
    }

    fn covers(&self, group: &str, user: &str, file: &str) -> bool {
        match self {
            Revoked::Member { group: g, user: u } => g == group && u == user,
            Revoked::Group { group: g } => g == group,
            Revoked::File { group: g, file: f } => g == group && f == file,
        }
    }
}

/// Revocations remembered at most (oldest forgotten first) and for at most this long: far more
/// than a ticket lives by default (1 h).
const MAX_REVOKED: usize = 100_000;
const REVOKED_KEEP_SECS: u64 = 7 * 24 * 3600;

#[derive(Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    /// Latest revocation time (tracker clock, unix s) of each revoked thing.
    revoked: HashMap<Revoked, u64>,
}

impl Inner {
    fn is_revoked(&self, c: &TicketClaims) -> bool {
        self.revoked
            .iter()
            .any(|(r, at)| c.issued_unix <= *at && r.covers(&c.group, &c.user, &c.file_name))
    }

    fn remember(&mut self, r: Revoked, at: u64) {
        let now = unix_now();
        if self.revoked.len() >= MAX_REVOKED {
            self.revoked
                .retain(|_, t| t.saturating_add(REVOKED_KEEP_SECS) > now);
        }
        if self.revoked.len() >= MAX_REVOKED {
            if let Some(oldest) = self
                .revoked
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(r, _)| r.clone())
            {
                self.revoked.remove(&oldest);
            }
        }
        let t = self.revoked.entry(r).or_insert(at);
        *t = (*t).max(at);
    }
}

pub struct LiveConns {
    limits: Mutex<LiveLimits>,
    inner: Mutex<Inner>,
}

/// One registered connection; dropping it unregisters.
pub struct LiveConn {
    id: u64,
    registry: Weak<LiveConns>,
    cancel: CancellationToken,
    /// The admitted ticket's claims (expiry aside, a renewal must match them exactly).
    claims: TicketClaims,
    /// Unix seconds: the ticket is good up to and including this second.
    expires_unix: AtomicU64,
    /// Last request, in ms since `epoch`.
    last_request_ms: AtomicU64,
    epoch: Instant,
    idle_timeout: Duration,
    /// Woken on renewal so the watchdog recomputes its deadline.
    renewed: tokio::sync::Notify,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `claims` with issue and expiry times blanked, for "same ticket apart from its lifetime"
/// comparisons (so claims added later are compared too without anyone listing them here).
fn sans_times(claims: &TicketClaims) -> TicketClaims {
    TicketClaims {
        issued_unix: 0,
        expires_unix: 0,
        ..claims.clone()
    }
}

impl LiveConns {
    pub fn new(limits: LiveLimits) -> Arc<LiveConns> {
        Arc::new(LiveConns {
            limits: Mutex::new(limits),
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn set_limits(&self, limits: LiveLimits) {
        *self.limits.lock().expect("lock") = limits;
    }

    /// Register an admitted connection from `addr` with a ticket carrying `claims`, or refuse
    /// it when its address or user is at the cap.
    pub fn register(
        self: &Arc<Self>,
        addr: IpAddr,
        claims: &TicketClaims,
    ) -> Result<Arc<LiveConn>, Refusal> {
        let limits = *self.limits.lock().expect("lock");
        let mut inner = self.inner.lock().expect("lock");
        if inner.is_revoked(claims) {
            return Err(Refusal::Revoked);
        }
        let (mut from_addr, mut from_user) = (0, 0);
        for e in inner.conns.values() {
            from_addr += usize::from(e.addr == addr);
            from_user += usize::from(e.user == claims.user);
        }
        if from_addr >= limits.max_per_addr {
            return Err(Refusal::PerAddress(limits.max_per_addr));
        }
        if from_user >= limits.max_per_user {
            return Err(Refusal::PerUser(limits.max_per_user));
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let cancel = CancellationToken::new();
        inner.conns.insert(
            id,
            Entry {
                addr,
                user: claims.user.clone(),
                group: claims.group.clone(),
                file: claims.file_name.clone(),
                issued_unix: claims.issued_unix,
                cancel: cancel.clone(),
            },
        );
        let epoch = Instant::now();
        Ok(Arc::new(LiveConn {
            id,
            registry: Arc::downgrade(self),
            cancel,
            claims: claims.clone(),
            expires_unix: AtomicU64::new(claims.expires_unix),
            last_request_ms: AtomicU64::new(0),
            epoch,
            idle_timeout: limits.idle_timeout,
            renewed: tokio::sync::Notify::new(),
        }))
    }

    /// Close the connections matching `pred`; returns how many.
    fn close_where(&self, pred: impl Fn(&Entry) -> bool) -> usize {
        let inner = self.inner.lock().expect("lock");
        let mut n = 0;
        for e in inner.conns.values().filter(|e| pred(e)) {
            e.cancel.cancel();
            n += 1;
        }
        n
    }

    /// A tracker event committed at `at_unix` (tracker clock): close the connections it
    /// revokes — those whose ticket was issued at or before it — and refuse such tickets from
    /// now on. `me` is this daemon's user: when *we* are gone from a group, everything we serve
    /// in it stops too (only for `news`: a replayed old event may predate our re-joining).
    /// Replaying an old event is otherwise harmless: newer tickets are not affected.
    pub fn apply(&self, event: &EventKind, at_unix: u64, me: &str, news: bool) -> usize {
        // Holder changes revoke nothing (they only tell downloads whom to connect to).
        if matches!(
            event,
            EventKind::HolderOnline { .. }
                | EventKind::HolderGone { .. }
                | EventKind::PunchRequest { .. }
        ) {
            return 0;
        }
        let Some(revoked) = Revoked::of(event) else {
            return self.close_all(); // Resync: we cannot know what we missed.
        };
        let mut inner = self.inner.lock().expect("lock");
        inner.remember(revoked.clone(), at_unix);
        // We ourselves are gone from the group (news, not a replay from before our re-join):
        // we may serve nothing there any more, whoever asks.
        let ours = match &revoked {
            Revoked::Member { group, user } if user == me && news => Some(group.clone()),
            _ => None,
        };
        let mut n = 0;
        for e in inner.conns.values() {
            let hit = match &ours {
                Some(group) => &e.group == group,
                None => revoked.covers(&e.group, &e.user, &e.file) && e.issued_unix <= at_unix,
            };
            if hit {
                e.cancel.cancel();
                n += 1;
            }
        }
        n
    }

    /// Would a ticket with `claims` be refused because of a revocation we heard of?
    pub fn is_revoked(&self, claims: &TicketClaims) -> bool {
        self.inner.lock().expect("lock").is_revoked(claims)
    }

    /// This daemon stopped sharing `file` in `group`.
    pub fn close_file(&self, group: &str, file: &str) -> usize {
        self.close_where(|e| e.group == group && e.file == file)
    }

    /// Every connection in `group` (we left it).
    pub fn close_group(&self, group: &str) -> usize {
        self.close_where(|e| e.group == group)
    }

    /// Logout, or events lost: nothing stays open.
    pub fn close_all(&self) -> usize {
        self.close_where(|_| true)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("lock").conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LiveConn {
    /// The peer asked for something: it is not idle.
    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_request_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// A fresh ticket (already verified by the caller) for this connection: it must carry the
    /// same claims apart from the expiry. A later expiry extends the connection's life.
    pub fn renew(&self, claims: &TicketClaims) -> Result<(), RenewError> {
        if sans_times(claims) != sans_times(&self.claims) {
            return Err(RenewError::OtherClaims);
        }
        self.expires_unix
            .fetch_max(claims.expires_unix, Ordering::Relaxed);
        self.renewed.notify_one();
        Ok(())
    }

    pub fn expires_unix(&self) -> u64 {
        self.expires_unix.load(Ordering::Relaxed)
    }

    /// Resolves when the connection must close, and why. Select on it beside the serving
    /// future. Expiry is checked against the wall clock (tickets carry unix seconds); idleness
    /// against the monotonic clock.
    pub async fn closed(&self) -> CloseReason {
        loop {
            let now_unix = unix_now();
            let expires = self.expires_unix();
            // A ticket is good through its `expires_unix` second (as `Ticket::verify` has it).
            if now_unix > expires {
                return CloseReason::TicketExpired;
            }
            let idle_at = self.epoch
                + Duration::from_millis(self.last_request_ms.load(Ordering::Relaxed))
                + self.idle_timeout;
            let now = Instant::now();
            if now >= idle_at {
                return CloseReason::Idle;
            }
            // Wake at the first second boundary after expiry (sub-second precision from the
            // wall clock), or at the idle deadline, whichever is first.
            let to_expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(expires + 1);
            let until_expiry = to_expiry
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let wake = (now + until_expiry).min(idle_at);
            tokio::select! {
                _ = self.cancel.cancelled() => return CloseReason::Revoked,
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.renewed.notified() => {}
            }
        }
    }
}

impl Drop for LiveConn {
    fn drop(&mut self) {
        if let Some(reg) = self.registry.upgrade() {
            reg.inner.lock().expect("lock").conns.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minitorr_proto::types::Sha1Hash;

    fn limits() -> LiveLimits {
        LiveLimits {
            idle_timeout: Duration::from_secs(60),
            max_per_addr: 3,
            max_per_user: 2,
        }
    }

    fn claims(user: &str, group: &str, file: &str) -> TicketClaims {
        TicketClaims {
            user: user.into(),
            group: group.into(),
            file_name: file.into(),
            file_sha1: Sha1Hash([1; 20]),
            issued_unix: unix_now() - 10,
            expires_unix: unix_now() + 600,
            device_key: [7; 32],
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn events_close_exactly_the_matching_connections() {
        let reg = LiveConns::new(limits());
        let bob_a = reg.register(ip(1), &claims("bob", "g1", "a")).unwrap();
        let bob_g2 = reg.register(ip(1), &claims("bob", "g2", "a")).unwrap();
        let carol_a = reg.register(ip(2), &claims("carol", "g1", "a")).unwrap();
        let carol_b = reg.register(ip(2), &claims("carol", "g1", "b")).unwrap();
        let gone = EventKind::MemberGone {
            group: "g1".into(),
            user: "bob".into(),
        };
        assert_eq!(reg.apply(&gone, unix_now(), "alice", true), 1);
        assert!(bob_a.cancel.is_cancelled());
        assert!(!bob_g2.cancel.is_cancelled() && !carol_a.cancel.is_cancelled());

        let removed = EventKind::FileRemoved {
            group: "g1".into(),
            file: "b".into(),
        };
        reg.apply(&removed, unix_now(), "alice", true);
        assert!(carol_b.cancel.is_cancelled() && !carol_a.cancel.is_cancelled());

        reg.apply(
            &EventKind::GroupDeleted { group: "g1".into() },
            unix_now(),
            "alice",
            true,
        );
        assert!(carol_a.cancel.is_cancelled() && !bob_g2.cancel.is_cancelled());
        reg.apply(&EventKind::Resync, unix_now(), "alice", true);
        assert!(bob_g2.cancel.is_cancelled());
    }

    #[test]
    fn when_we_are_gone_from_a_group_everything_in_it_closes() {
        let reg = LiveConns::new(limits());
        let bob = reg.register(ip(1), &claims("bob", "g1", "a")).unwrap();
        let other = reg.register(ip(2), &claims("carol", "g2", "a")).unwrap();
        let gone = EventKind::MemberGone {
            group: "g1".into(),
            user: "alice".into(),
        };
        assert_eq!(reg.apply(&gone, unix_now(), "alice", true), 1);
        assert!(bob.cancel.is_cancelled() && !other.cancel.is_cancelled());
    }

    #[test]
    fn local_stop_share_and_logout_close() {
        let reg = LiveConns::new(limits());
        let a = reg.register(ip(1), &claims("bob", "g1", "a")).unwrap();
        let b = reg.register(ip(2), &claims("carol", "g1", "b")).unwrap();
        assert_eq!(reg.close_file("g1", "a"), 1);
        assert!(a.cancel.is_cancelled() && !b.cancel.is_cancelled());
        assert_eq!(reg.close_all(), 2);
        assert!(b.cancel.is_cancelled());
    }

    #[test]
    fn caps_per_address_and_per_user_and_release_on_drop() {
        let reg = LiveConns::new(limits());
        let b1 = reg.register(ip(1), &claims("bob", "g1", "a")).unwrap();
        let _b2 = reg.register(ip(1), &claims("bob", "g1", "b")).unwrap();
        assert_eq!(
            reg.register(ip(9), &claims("bob", "g1", "c")).err(),
            Some(Refusal::PerUser(2))
        );
        let _c1 = reg.register(ip(1), &claims("carol", "g1", "a")).unwrap();
        assert_eq!(
            reg.register(ip(1), &claims("dave", "g1", "a")).err(),
            Some(Refusal::PerAddress(3))
        );
        // Another address and user is still served.
        assert!(reg.register(ip(2), &claims("dave", "g1", "a")).is_ok());
        drop(b1);
        assert!(reg.register(ip(9), &claims("bob", "g1", "c")).is_ok());
    }

    #[test]
    fn renewal_must_match_every_claim_but_expiry() {
        let reg = LiveConns::new(limits());
        let c = claims("bob", "g1", "a");
        let conn = reg.register(ip(1), &c).unwrap();
        let later = TicketClaims {
            expires_unix: c.expires_unix + 100,
            ..c.clone()
        };
        conn.renew(&later).unwrap();
        assert_eq!(conn.expires_unix(), c.expires_unix + 100);
        // An older ticket never shortens it.
        conn.renew(&c).unwrap();
        assert_eq!(conn.expires_unix(), c.expires_unix + 100);
        for other in [
            TicketClaims {
                user: "mallory".into(),
                ..later.clone()
            },
            TicketClaims {
                group: "g2".into(),
                ..later.clone()
            },
            TicketClaims {
                file_name: "b".into(),
                ..later.clone()
            },
            TicketClaims {
                file_sha1: Sha1Hash([2; 20]),
                ..later.clone()
            },
        ] {
            assert_eq!(conn.renew(&other), Err(RenewError::OtherClaims));
        }
    }

    #[tokio::test]
    async fn revocation_wakes_the_watchdog() {
        let reg = LiveConns::new(limits());
        let conn = reg.register(ip(1), &claims("bob", "g1", "a")).unwrap();
        let c2 = conn.clone();
        let waiter = tokio::spawn(async move { c2.closed().await });
        tokio::task::yield_now().await;
        reg.close_all();
        let why = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(why, CloseReason::Revoked);
    }

    #[tokio::test]
    async fn an_expired_ticket_closes() {
        let reg = LiveConns::new(limits());
        let mut c = claims("bob", "g1", "a");
        c.expires_unix = unix_now() - 1;
        let conn = reg.register(ip(1), &c).unwrap();
        assert_eq!(conn.closed().await, CloseReason::TicketExpired);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_close_and_requests_keep_them_open() {
        let reg = LiveConns::new(limits());
        let conn = reg.register(ip(1), &claims("bob", "g1", "a")).unwrap();
        tokio::time::sleep(Duration::from_secs(50)).await;
        conn.touch();
        let start = Instant::now();
        assert_eq!(conn.closed().await, CloseReason::Idle);
        // Closed 60 s after the last request, not after registration.
        assert!(
            start.elapsed() >= Duration::from_secs(59),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_revoked_ticket_stays_refused_but_a_newer_one_is_served() {
        let reg = LiveConns::new(limits());
        let old = claims("bob", "g1", "a");
        let at = unix_now();
        let gone = EventKind::MemberGone {
            group: "g1".into(),
            user: "bob".into(),
        };
        reg.apply(&gone, at, "alice", true);
        assert_eq!(reg.register(ip(1), &old).err(), Some(Refusal::Revoked));
        // Other groups and users are unaffected.
        assert!(reg.register(ip(1), &claims("bob", "g2", "a")).is_ok());
        assert!(reg.register(ip(1), &claims("carol", "g1", "a")).is_ok());
        // Bob re-joined later and got a ticket issued after the event: served.
        let newer = TicketClaims {
            issued_unix: at + 1,
            ..old.clone()
        };
        assert!(reg.register(ip(1), &newer).is_ok());
        // A replayed (older) event does not close connections with newer tickets.
        let conn = reg.register(ip(2), &newer).unwrap();
        assert_eq!(reg.apply(&gone, at, "alice", false), 0);
        assert!(!conn.cancel.is_cancelled());
        // Group deleted and file removed are remembered too.
        reg.apply(
            &EventKind::GroupDeleted { group: "g3".into() },
            at,
            "alice",
            true,
        );
        assert!(reg.is_revoked(&claims("carol", "g3", "x")));
        let f = EventKind::FileRemoved {
            group: "g1".into(),
            file: "z".into(),
        };
        reg.apply(&f, at, "alice", true);
        assert!(reg.is_revoked(&claims("carol", "g1", "z")));
        assert!(!reg.is_revoked(&claims("carol", "g1", "a")));
    }
}

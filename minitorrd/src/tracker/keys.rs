//! The tracker's ticket-signing public keys, as this daemon knows them.
//!
//! Several keys are valid at once (every tracker of a shared database has its own, and after
//! `trackerd rotate-key` the old one stays valid for an overlap). The list comes with the login
//! grant and is refreshed (`Call::TicketKeys`):
//!
//! * when a ticket names a key we do not know — a tracker started or rotated its key after our
//!   login. At most one refresh per [`MIN_REFRESH_GAP`], shared by everyone waiting, so tickets
//!   with made-up key ids cannot turn this peer into a tracker flood;
//! * every few heartbeats (the daemon's heartbeat loop), to learn retirements: a retired key
//!   stops verifying here even if no new key shows up.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use minitorr_proto::ticket::{Ticket, TicketClaims, TicketError, TicketKey, MAX_TICKET_KEYS};
use minitorr_proto::tracker::{Call, Response};

use super::TrackerLink;

/// Fewest seconds between two key-list refreshes asked for by unknown key ids.
pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(2);
/// A refresh that takes longer than this is abandoned (the ticket is refused).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

struct LoggedIn {
    keys: Vec<TicketKey>,
    link: Arc<TrackerLink>,
    token: String,
}

/// Shared by the daemon (sets it at login, clears it at logout) and the peer server (verifies).
#[derive(Default)]
pub struct TicketKeys {
    state: RwLock<Option<LoggedIn>>,
    /// Serialises refreshes; holds when the last one was started.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bounded(mut keys: Vec<TicketKey>) -> Vec<TicketKey> {
    keys.truncate(MAX_TICKET_KEYS);
    keys
}

impl TicketKeys {
    /// After login: the grant's keys, and how to ask for fresh ones.
    pub fn set(&self, keys: Vec<TicketKey>, link: Arc<TrackerLink>, token: String) {
        *self.state.write().expect("lock") = Some(LoggedIn {
            keys: bounded(keys),
            link,
            token,
        });
    }

    /// Logged out: nothing verifies, nothing is served.
    pub fn clear(&self) {
        *self.state.write().expect("lock") = None;
    }

    pub fn is_logged_in(&self) -> bool {
        self.state.read().expect("lock").is_some()
    }

    /// The keys known now (tests and status).
    pub fn keys(&self) -> Vec<TicketKey> {
        self.state
            .read()
            .expect("lock")
            .as_ref()
            .map(|s| s.keys.clone())
            .unwrap_or_default()
    }

    fn verify_now(&self, ticket: &Ticket) -> Result<TicketClaims, String> {
        let state = self.state.read().expect("lock");
        let s = state.as_ref().ok_or("this peer is not logged in")?;
        ticket
            .verify_with(&s.keys, now_unix())
            .cloned()
            .map_err(|e| e.to_string())
    }

    /// Verify `ticket` with a key from the tracker; an unknown key id triggers one
    /// (rate-limited) refresh of the list before the ticket is refused.
    pub async fn verify(&self, ticket: &Ticket) -> Result<TicketClaims, String> {
        let first = {
            let state = self.state.read().expect("lock");
            let s = state.as_ref().ok_or("this peer is not logged in")?;
            ticket.verify_with(&s.keys, now_unix()).cloned()
        };
        match first {
            Ok(claims) => Ok(claims),
            Err(TicketError::UnknownKey) => {
                self.refresh(false).await;
                self.verify_now(ticket)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Fetch the key list from the tracker. `force`: the periodic refresh (ignores the gap).
    pub async fn refresh(&self, force: bool) {
        let started = Instant::now();
        let mut last = self.refreshing.lock().await;
        // Someone else refreshed while we waited, or did so very recently: that answer is ours.
        if let Some(t) = *last {
            if t >= started || (!force && t.elapsed() < MIN_REFRESH_GAP) {
                return;
            }
        }
        *last = Some(Instant::now());
        let (link, token) = {
            let state = self.state.read().expect("lock");
            let Some(s) = state.as_ref() else { return };
            (s.link.clone(), s.token.clone())
        };
        let answer =
            tokio::time::timeout(REFRESH_TIMEOUT, link.call(Some(&token), Call::TicketKeys)).await;
        match answer {
            Ok(Ok(Response::TicketKeys(keys))) => {
                let mut state = self.state.write().expect("lock");
                // Only if still the same login (a logout or re-login meanwhile wins).
                if let Some(s) = state.as_mut().filter(|s| s.token == token) {
                    if s.keys != keys {
                        tracing::info!(keys = keys.len(), "tracker ticket keys updated");
                    }
                    s.keys = bounded(keys);
                }
            }
            Ok(Ok(other)) => tracing::warn!(?other, "unexpected answer to TicketKeys"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot refresh the tracker's ticket keys"),
            Err(_) => tracing::warn!("refreshing the tracker's ticket keys timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use ed25519_dalek::SigningKey;
    use futures::{SinkExt, StreamExt};
    use minitorr_proto::types::Sha1Hash;
    use minitorr_proto::{handshake, links, Link};

    /// A tracker that answers only `TicketKeys`, with whatever list the test sets, and counts.
    struct FakeTracker {
        keys: Arc<Mutex<Vec<TicketKey>>>,
        calls: Arc<AtomicUsize>,
        link: Arc<TrackerLink>,
    }

    async fn fake_tracker(keys: Vec<TicketKey>) -> FakeTracker {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = Arc::new(Mutex::new(keys));
        let calls = Arc::new(AtomicUsize::new(0));
        let (k, c) = (keys.clone(), calls.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (k, c) = (k.clone(), c.clone());
                tokio::spawn(async move {
                    handshake(&mut s, Link::Tracker).await.unwrap();
                    let mut f = tokio_util::codec::Framed::new(s, links::tracker_server());
                    while let Some(Ok(req)) = f.next().await {
                        assert_eq!(req.call, Call::TicketKeys);
                        assert_eq!(req.token.as_deref(), Some("tok"));
                        c.fetch_add(1, Ordering::SeqCst);
                        let list = k.lock().unwrap().clone();
                        f.send(Response::TicketKeys(list)).await.unwrap();
                    }
                });
            }
        });
        FakeTracker {
            keys,
            calls,
            link: Arc::new(TrackerLink::new(vec![addr])),
        }
    }

    fn key() -> SigningKey {
        SigningKey::generate(&mut rand::rngs::OsRng)
    }

    fn listed(k: &SigningKey, valid_until: Option<u64>) -> TicketKey {
        TicketKey {
            public: k.verifying_key().to_bytes(),
            valid_until,
        }
    }

    fn ticket(k: &SigningKey) -> Ticket {
        Ticket::sign(
            TicketClaims {
                user: "bob".into(),
                group: "g".into(),
                file_name: "f".into(),
                file_sha1: Sha1Hash([1; 20]),
                expires_unix: now_unix() + 3600,
                issued_unix: now_unix(),
                device_key: [7; 32],
            },
            k,
        )
    }

    #[tokio::test]
    async fn a_key_unknown_at_login_is_learned_from_the_tracker_once() {
        let (old, new) = (key(), key());
        let t = fake_tracker(vec![listed(&old, None), listed(&new, None)]).await;
        let keys = TicketKeys::default();
        keys.set(vec![listed(&old, None)], t.link.clone(), "tok".into());
        keys.verify(&ticket(&old)).await.unwrap();
        assert_eq!(t.calls.load(Ordering::SeqCst), 0, "known key: no call");
        keys.verify(&ticket(&new)).await.unwrap();
        assert_eq!(t.calls.load(Ordering::SeqCst), 1);
        keys.verify(&ticket(&new)).await.unwrap();
        assert_eq!(t.calls.load(Ordering::SeqCst), 1, "learned");
    }

    #[tokio::test]
    async fn made_up_key_ids_cost_the_tracker_at_most_one_call_per_gap() {
        let known = key();
        let t = fake_tracker(vec![listed(&known, None)]).await;
        let keys = Arc::new(TicketKeys::default());
        keys.set(vec![listed(&known, None)], t.link.clone(), "tok".into());
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let keys = keys.clone();
            tasks.push(tokio::spawn(
                async move { keys.verify(&ticket(&key())).await },
            ));
        }
        for task in tasks {
            let e = task.await.unwrap().unwrap_err();
            assert!(e.contains("does not know"), "{e}");
        }
        let calls = t.calls.load(Ordering::SeqCst);
        // One per started MIN_REFRESH_GAP at most (generous for a loaded machine).
        let allowed = 1 + (started.elapsed().as_secs() / MIN_REFRESH_GAP.as_secs()) as usize;
        assert!(
            (1..=allowed).contains(&calls),
            "{calls} tracker calls for 50 forged tickets"
        );
    }

    #[tokio::test]
    async fn the_periodic_refresh_learns_retirements_and_logout_stops_everything() {
        let (old, new) = (key(), key());
        let t = fake_tracker(vec![]).await;
        let keys = TicketKeys::default();
        keys.set(
            vec![listed(&old, None), listed(&new, None)],
            t.link.clone(),
            "tok".into(),
        );
        keys.verify(&ticket(&old)).await.unwrap();
        // The tracker retired the old key (rotation overlap over).
        *t.keys.lock().unwrap() = vec![listed(&old, Some(now_unix() - 10)), listed(&new, None)];
        keys.refresh(true).await;
        let e = keys.verify(&ticket(&old)).await.unwrap_err();
        assert!(e.contains("retired"), "{e}");
        keys.verify(&ticket(&new)).await.unwrap();

        keys.clear();
        let before = t.calls.load(Ordering::SeqCst);
        let e = keys.verify(&ticket(&key())).await.unwrap_err();
        assert!(e.contains("not logged in"), "{e}");
        keys.refresh(true).await;
        assert_eq!(
            t.calls.load(Ordering::SeqCst),
            before,
            "no calls when logged out"
        );
    }
}

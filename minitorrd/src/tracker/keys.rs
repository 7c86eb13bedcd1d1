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

//! Password hashing, session tokens and the failed-login rate limiter.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

mod password;

pub use password::{AuthError, PasswordHasher};

/// A new session token (32 random bytes, hex) — handed to the client, never stored.
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// What the database keeps of a token: its SHA-256 (hex).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Failures allowed within `WINDOW_SECS` before a key is blocked.
pub const MAX_FAILURES: usize = 5;
pub const WINDOW_SECS: u64 = 60;
pub const BLOCK_SECS: u64 = 30;
/// Above this many tracked keys, stale ones are pruned (bounds memory under name spraying).
const PRUNE_ABOVE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Ip(IpAddr),
}

#[derive(Debug, Default)]
struct Entry {
    failures: VecDeque<u64>,
    blocked_until: u64,
}

/// Failed-login limiter, per user name and per source IP, in memory (a restart forgets it,
/// which is acceptable: it slows guessing, it does not guard state). Limiting per user makes a
/// distributed guess at one account slow; limiting per IP stops one host spraying many names.
/// Note that the per-user limit lets anyone lock a user out for `BLOCK_SECS` at a time.
#[derive(Debug, Default)]
pub struct RateLimiter {
    entries: HashMap<Key, Entry>,
}

impl RateLimiter {
    /// `Err(seconds_left)` if `user` or `ip` is currently blocked.
    pub fn check(&self, user: &str, ip: IpAddr, now: u64) -> Result<(), u64> {
        let left = [Key::User(user.to_string()), Key::Ip(ip)]
            .iter()
            .filter_map(|k| self.entries.get(k))
            .map(|e| e.blocked_until.saturating_sub(now))
            .max()
            .unwrap_or(0);
        if left > 0 {
            Err(left)
        } else {
            Ok(())
        }
    }

    pub fn record_failure(&mut self, user: &str, ip: IpAddr, now: u64) {
        if self.entries.len() > PRUNE_ABOVE {
            self.entries.retain(|_, e| {
                e.blocked_until > now || e.failures.back().is_some_and(|&t| t + WINDOW_SECS > now)
            });
        }
        for key in [Key::User(user.to_string()), Key::Ip(ip)] {
            let e = self.entries.entry(key).or_default();
            while e.failures.front().is_some_and(|&t| t + WINDOW_SECS <= now) {
                e.failures.pop_front();
            }
            e.failures.push_back(now);
            if e.failures.len() >= MAX_FAILURES {
                e.blocked_until = now + BLOCK_SECS;
                e.failures.clear();
            }
        }
    }

    /// A successful login clears the user's failures (not the IP's: one good account must not
    /// reset a host that is guessing others).
    pub fn record_success(&mut self, user: &str) {
        self.entries.remove(&Key::User(user.to_string()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP1: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const IP2: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), a);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn five_failures_block_user_for_30s() {
        let mut rl = RateLimiter::default();
        for i in 0..4 {
            rl.record_failure("alice", IP1, 100 + i);
            assert_eq!(rl.check("alice", IP2, 100 + i), Ok(()));
        }
        rl.record_failure("alice", IP1, 110);
        assert_eq!(
            rl.check("alice", IP2, 110),
            Err(30),
            "blocked per user, from any IP"
        );
        assert_eq!(
            rl.check("bob", IP1, 120),
            Err(20),
            "and per IP, for any user"
        );
        assert_eq!(rl.check("bob", IP2, 120), Ok(()));
        assert_eq!(
            rl.check("alice", IP2, 140),
            Ok(()),
            "block lifts after 30 s"
        );
    }

    #[test]
    fn old_failures_fall_out_of_the_window() {
        let mut rl = RateLimiter::default();
        for t in [0, 10, 20, 30] {
            rl.record_failure("alice", IP1, t);
        }
        rl.record_failure("alice", IP1, 61); // the one at t=0 has expired: only 4 in the window
        assert_eq!(rl.check("alice", IP1, 61), Ok(()));
    }

    #[test]
    fn success_resets_the_user_but_not_the_ip() {
        let mut rl = RateLimiter::default();
        for t in 0..4 {
            rl.record_failure("alice", IP1, t);
        }
        rl.record_success("alice");
        rl.record_failure("alice", IP2, 5);
        assert_eq!(rl.check("alice", IP2, 5), Ok(()));
        rl.record_failure("carol", IP1, 6); // IP1's fifth failure
        assert!(rl.check("dave", IP1, 6).is_err());
    }

    #[test]
    fn stale_entries_are_pruned() {
        let mut rl = RateLimiter::default();
        for i in 0..5000u32 {
            rl.record_failure(&format!("u{i}"), IP1, 0);
        }
        rl.record_failure("late", IP2, 1000);
        assert!(rl.len() < 10, "{} entries kept", rl.len());
    }
}

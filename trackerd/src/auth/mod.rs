//! Password hashing, session tokens and the failed-login rate limiter.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

mod nonces;
mod password;

pub use nonces::{DeviceNonces, NonceError, MAX_PENDING as MAX_PENDING_NONCES, NONCE_TTL_SECS};
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
    /// Times of failed attempts within the window (cleared when a block starts).
    failures: VecDeque<u64>,
    /// Attempts admitted whose password is still being checked.
    in_flight: usize,
    blocked_until: u64,
}

impl Entry {
    fn forget_old(&mut self, now: u64) {
        while self
            .failures
            .front()
            .is_some_and(|&t| t + WINDOW_SECS <= now)
        {
            self.failures.pop_front();
        }
    }

    fn in_window(&self, now: u64) -> usize {
        self.failures
            .iter()
            .filter(|&&t| t + WINDOW_SECS > now)
            .count()
    }
}

/// Failed-login limiter, per user name and per source IP, in memory (a restart forgets it,
/// which is acceptable: it slows guessing, it does not guard state). Limiting per user makes a
/// distributed guess at one account slow; limiting per IP stops one host spraying many names.
/// Note that the per-user limit lets anyone lock a user out for `BLOCK_SECS` at a time.
///
/// Attempts are admitted *before* the password is checked, and an attempt still being checked
/// counts as a failure: a key admits a new attempt only while its failures in the window plus
/// its attempts in flight are fewer than `MAX_FAILURES`. Counting failures only after the check
/// (as this once did) let 60 logins sent at once all pass before the first failure was
/// recorded: 59 passwords were tested instead of 5. A key that is full but not blocked is
/// [`Refusal::Busy`]: the caller waits for an attempt in flight to finish (legitimate parallel
/// logins, e.g. many daemons behind one address, are queued, not refused).
#[derive(Debug, Default)]
pub struct RateLimiter {
    entries: HashMap<Key, Entry>,
}

/// An admitted login attempt: report it exactly once, with [`RateLimiter::succeeded`] or
/// [`RateLimiter::failed`].
#[derive(Debug)]
#[must_use = "report the attempt with RateLimiter::succeeded or RateLimiter::failed"]
pub struct Attempt {
    user: String,
    ip: IpAddr,
}

/// Why an attempt is not admitted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures: blocked for this many more seconds.
    Blocked(u64),
    /// As many attempts in flight as failures still allowed: wait for one to finish.
    Busy,
}

impl RateLimiter {
    /// Admit one attempt for `user` from `ip`; it counts as a failure until reported.
    pub fn reserve(&mut self, user: &str, ip: IpAddr, now: u64) -> Result<Attempt, Refusal> {
        self.check(user, ip, now)?;
        if self.entries.len() > PRUNE_ABOVE {
            self.entries.retain(|_, e| {
                e.in_flight > 0
                    || e.blocked_until > now
                    || e.failures.back().is_some_and(|&t| t + WINDOW_SECS > now)
            });
        }
        for key in [Key::User(user.to_string()), Key::Ip(ip)] {
            self.entries.entry(key).or_default().in_flight += 1;
        }
        Ok(Attempt {
            user: user.to_string(),
            ip,
        })
    }

    /// Whether `user` from `ip` would be admitted now.
    pub fn check(&self, user: &str, ip: IpAddr, now: u64) -> Result<(), Refusal> {
        let entries: Vec<&Entry> = [Key::User(user.to_string()), Key::Ip(ip)]
            .iter()
            .filter_map(|k| self.entries.get(k))
            .collect();
        let blocked = entries
            .iter()
            .map(|e| e.blocked_until.saturating_sub(now))
            .max()
            .unwrap_or(0);
        if blocked > 0 {
            return Err(Refusal::Blocked(blocked));
        }
        if entries
            .iter()
            .any(|e| e.in_window(now) + e.in_flight >= MAX_FAILURES)
        {
            return Err(Refusal::Busy);
        }
        Ok(())
    }

    /// The attempt had a wrong password: once `MAX_FAILURES` failures are in the window, the
    /// user and the address are blocked for `BLOCK_SECS`.
    pub fn failed(&mut self, attempt: Attempt, now: u64) {
        for key in [Key::User(attempt.user), Key::Ip(attempt.ip)] {
            let e = self.entries.entry(key).or_default();
            e.in_flight = e.in_flight.saturating_sub(1);
            e.forget_old(now);
            e.failures.push_back(now);
            if e.failures.len() >= MAX_FAILURES {
                e.blocked_until = now + BLOCK_SECS;
                e.failures.clear();
            }
        }
    }

    /// The attempt had the right password: it counts for nothing, for the user or the address.
    /// Earlier failures are *not* forgiven (they leave the window after `WINDOW_SECS`): if a
    /// success cleared them, the real user logging in during an attack would hand the attacker
    /// another `MAX_FAILURES` guesses at once.
    pub fn succeeded(&mut self, attempt: Attempt) {
        for key in [Key::User(attempt.user), Key::Ip(attempt.ip)] {
            if let Some(e) = self.entries.get_mut(&key) {
                e.in_flight = e.in_flight.saturating_sub(1);
            }
        }
    }

    /// The attempt ended before any password was tested (e.g. the database was unreachable):
    /// it counts for nothing, like a success.
    pub fn abandoned(&mut self, attempt: Attempt) {
        self.succeeded(attempt);
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

    /// Reserve an attempt and report it failed.
    fn fail(rl: &mut RateLimiter, user: &str, ip: IpAddr, now: u64) {
        let a = rl.reserve(user, ip, now).expect("admitted");
        rl.failed(a, now);
    }

    #[test]
    fn five_failures_block_user_for_30s() {
        let mut rl = RateLimiter::default();
        for i in 0..4 {
            fail(&mut rl, "alice", IP1, 100 + i);
            assert_eq!(rl.check("alice", IP2, 100 + i), Ok(()));
        }
        fail(&mut rl, "alice", IP1, 110);
        assert_eq!(
            rl.check("alice", IP2, 110),
            Err(Refusal::Blocked(30)),
            "blocked per user, from any IP"
        );
        assert_eq!(
            rl.check("bob", IP1, 120),
            Err(Refusal::Blocked(20)),
            "and per IP, for any user"
        );
        assert_eq!(
            rl.reserve("alice", IP2, 120).unwrap_err(),
            Refusal::Blocked(20)
        );
        assert_eq!(rl.check("bob", IP2, 120), Ok(()));
        assert_eq!(
            rl.check("alice", IP2, 140),
            Ok(()),
            "block lifts after 30 s"
        );
    }

    #[test]
    fn attempts_in_flight_count_before_they_are_checked() {
        // Many attempts at the same instant, none finished yet: only MAX_FAILURES are admitted,
        // from one address or from many; the others are told to wait.
        let mut rl = RateLimiter::default();
        let admitted: Vec<_> = (0..60)
            .filter_map(|_| rl.reserve("alice", IP1, 0).ok())
            .collect();
        assert_eq!(admitted.len(), MAX_FAILURES);
        assert_eq!(rl.check("alice", IP1, 0), Err(Refusal::Busy));
        let mut rl = RateLimiter::default();
        let admitted: Vec<_> = (0..500u32)
            .filter_map(|i| {
                let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                rl.reserve("alice", ip, 0).ok()
            })
            .collect();
        assert_eq!(admitted.len(), MAX_FAILURES, "per user, from any address");
        // When they all fail, the user is blocked: 5 passwords were tested, no more.
        for a in admitted {
            rl.failed(a, 1);
        }
        assert_eq!(rl.check("alice", IP1, 1), Err(Refusal::Blocked(BLOCK_SECS)));
    }

    #[test]
    fn a_right_password_among_parallel_guesses_frees_only_its_own_place() {
        let mut rl = RateLimiter::default();
        let mut admitted: Vec<_> = (0..MAX_FAILURES)
            .map(|_| rl.reserve("alice", IP1, 0).unwrap())
            .collect();
        assert_eq!(rl.reserve("alice", IP2, 0).unwrap_err(), Refusal::Busy);
        // The right one finishes first: one more guess may go in (4 wrong in flight + 1).
        rl.succeeded(admitted.pop().unwrap());
        admitted.push(rl.reserve("alice", IP2, 0).unwrap());
        assert_eq!(rl.reserve("alice", IP2, 0).unwrap_err(), Refusal::Busy);
        for a in admitted {
            rl.failed(a, 1);
        }
        assert_eq!(
            rl.reserve("alice", IP2, 1).unwrap_err(),
            Refusal::Blocked(BLOCK_SECS)
        );
        assert!(rl.reserve("alice", IP2, 1 + BLOCK_SECS).is_ok());
    }

    #[test]
    fn legitimate_parallel_logins_from_one_address_only_wait() {
        // 40 users behind one address log in at once: never blocked, at most 5 at a time.
        let mut rl = RateLimiter::default();
        let mut pending: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
        let mut in_flight = vec![];
        while !pending.is_empty() || !in_flight.is_empty() {
            while let Some(u) = pending.last() {
                match rl.reserve(u, IP1, 0) {
                    Ok(a) => {
                        in_flight.push(a);
                        pending.pop();
                    }
                    Err(Refusal::Busy) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert!(in_flight.len() <= MAX_FAILURES);
            rl.succeeded(in_flight.remove(0));
        }
        assert_eq!(rl.check("anyone", IP1, 0), Ok(()));
    }

    #[test]
    fn a_right_password_after_four_wrong_ones_logs_in_without_a_block() {
        let mut rl = RateLimiter::default();
        for t in 0..4 {
            fail(&mut rl, "alice", IP1, t);
        }
        let a = rl.reserve("alice", IP1, 4).unwrap();
        rl.succeeded(a);
        assert_eq!(rl.check("alice", IP2, 5), Ok(()));
    }

    #[test]
    fn old_failures_fall_out_of_the_window() {
        let mut rl = RateLimiter::default();
        for t in [0, 10, 20, 30] {
            fail(&mut rl, "alice", IP1, t);
        }
        fail(&mut rl, "alice", IP1, 61); // the one at t=0 has expired: only 4 in the window
        assert_eq!(rl.check("alice", IP1, 61), Ok(()));
    }

    #[test]
    fn a_success_does_not_forgive_earlier_failures() {
        let mut rl = RateLimiter::default();
        for t in 0..4 {
            fail(&mut rl, "alice", IP1, t);
        }
        let ok = rl.reserve("alice", IP2, 4).unwrap();
        rl.succeeded(ok); // alice's fifth attempt, the right one: no block
        assert_eq!(rl.check("alice", IP2, 5), Ok(()));
        // … but the four failures still count: one more within the window blocks her.
        fail(&mut rl, "alice", IP2, 5);
        assert_eq!(rl.check("alice", IP2, 5), Err(Refusal::Blocked(BLOCK_SECS)));
        fail(&mut rl, "carol", IP1, 6); // IP1's fifth failure
        assert!(rl.check("dave", IP1, 6).is_err());
    }

    #[test]
    fn stale_entries_are_pruned() {
        let mut rl = RateLimiter::default();
        for i in 0..5000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            fail(&mut rl, &format!("u{i}"), ip, 0);
        }
        fail(&mut rl, "late", IP2, 1000);
        assert!(rl.len() < 10, "{} entries kept", rl.len());
    }
}

//! Single-use nonces for device logins (`DeviceChallenge` → `DeviceLogin`).
//!
//! Kept in this tracker's memory, never in the database: issuing one happens before any
//! authentication, so it must cost an outsider's flood nothing but bounded memory (at most
//! [`MAX_PENDING`] entries; the oldest is forgotten first). A nonce is bound to the user and
//! device key it was asked for, lives [`NONCE_TTL_SECS`], and is removed by the first login
//! attempt that names it, whether that attempt succeeds or not: a captured or replayed signature
//! is worth nothing. A daemon whose tracker fails over between the two calls gets "unknown
//! nonce" and simply asks again. Plain data structure: no I/O, the clock is passed in.

use std::collections::{HashMap, VecDeque};

use rand::rngs::OsRng;
use rand::RngCore;

/// How long a nonce may be used after it was issued.
pub const NONCE_TTL_SECS: u64 = 30;
/// Outstanding nonces at most (about 100 bytes each).
pub const MAX_PENDING: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    #[error("unknown or already used device-login nonce: ask for a new one")]
    Unknown,
    #[error("device-login nonce expired: ask for a new one")]
    Expired,
    #[error("device-login nonce was issued for another user or device")]
    Mismatch,
}

struct Pending {
    user: String,
    device_key: [u8; 32],
    issued: u64,
}

#[derive(Default)]
pub struct DeviceNonces {
    pending: HashMap<[u8; 32], Pending>,
    /// Issue order, oldest first (may hold nonces already taken; skipped when met).
    order: VecDeque<[u8; 32]>,
}

impl DeviceNonces {
    /// A fresh random nonce for `user` / `device_key`.
    pub fn issue(&mut self, user: &str, device_key: [u8; 32], now: u64) -> [u8; 32] {
        self.forget_expired(now);
        while self.pending.len() >= MAX_PENDING {
            match self.order.pop_front() {
                Some(old) => {
                    self.pending.remove(&old);
                }
                None => break,
            }
        }
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        self.pending.insert(
            nonce,
            Pending {
                user: user.to_string(),
                device_key,
                issued: now,
            },
        );
        self.order.push_back(nonce);
        if self.order.len() > 2 * MAX_PENDING {
            let pending = &self.pending;
            self.order.retain(|n| pending.contains_key(n));
        }
        nonce
    }

    /// Use `nonce` for a login of `user` / `device_key`: removed whatever the outcome.
    pub fn take(
        &mut self,
        nonce: &[u8; 32],
        user: &str,
        device_key: &[u8; 32],
        now: u64,
    ) -> Result<(), NonceError> {
        let p = self.pending.remove(nonce).ok_or(NonceError::Unknown)?;
        if now.saturating_sub(p.issued) > NONCE_TTL_SECS {
            return Err(NonceError::Expired);
        }
        if p.user != user || p.device_key != *device_key {
            return Err(NonceError::Mismatch);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn forget_expired(&mut self, now: u64) {
        while let Some(front) = self.order.front() {
            match self.pending.get(front) {
                Some(p) if now.saturating_sub(p.issued) <= NONCE_TTL_SECS => break,
                Some(_) => {
                    self.pending.remove(front);
                    self.order.pop_front();
                }
                None => {
                    self.order.pop_front();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_works_once_for_its_user_and_device_within_its_lifetime() {
        let mut n = DeviceNonces::default();
        let a = n.issue("alice", [1; 32], 100);
        assert_eq!(n.take(&a, "alice", &[1; 32], 110), Ok(()));
        assert_eq!(n.take(&a, "alice", &[1; 32], 110), Err(NonceError::Unknown));

        let b = n.issue("alice", [1; 32], 100);
        assert_eq!(n.take(&b, "bob", &[1; 32], 101), Err(NonceError::Mismatch));
        // A failed attempt used it up.
        assert_eq!(n.take(&b, "alice", &[1; 32], 101), Err(NonceError::Unknown));
        let c = n.issue("alice", [1; 32], 100);
        assert_eq!(
            n.take(&c, "alice", &[2; 32], 101),
            Err(NonceError::Mismatch)
        );

        let d = n.issue("alice", [1; 32], 100);
        assert_eq!(
            n.take(&d, "alice", &[1; 32], 100 + NONCE_TTL_SECS + 1),
            Err(NonceError::Expired)
        );
        assert_eq!(
            n.take(&[7; 32], "alice", &[1; 32], 100),
            Err(NonceError::Unknown)
        );
        assert!(n.is_empty());
    }

    #[test]
    fn a_flood_of_challenges_stays_bounded_and_expired_ones_go() {
        let mut n = DeviceNonces::default();
        for i in 0..(MAX_PENDING as u64 + 100) {
            n.issue("mallory", [3; 32], i / 1000);
        }
        assert_eq!(n.len(), MAX_PENDING);
        assert!(n.order.len() <= 2 * MAX_PENDING);
        n.issue("alice", [1; 32], 1000);
        assert_eq!(
            n.len(),
            1,
            "everything older than the lifetime is forgotten"
        );
    }
}

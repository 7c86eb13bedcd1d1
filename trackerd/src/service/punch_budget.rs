//! How many hole punches (`Call::Punch`) one member may ask for (issue #14): each is an event
//! row and makes a holder open connections, so a member gets [`PER_WINDOW`] per
//! [`WINDOW_SECS`] (a downloader needs one per unreachable holder it connects to). Pure (time
//! passed in), per tracker process, bounded in memory.

use std::collections::HashMap;

pub const WINDOW_SECS: u64 = 10;
pub const PER_WINDOW: u32 = 64;
/// Members tracked at once at most; beyond, expired windows are dropped first, and a member
/// not tracked gets a fresh window (a flood of distinct members is bounded by accounts).
const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Default)]
pub struct PunchBudget {
    users: HashMap<String, (u64, u32)>,
}

impl PunchBudget {
    /// May `user` punch now? Counts the attempt when it may.
    pub fn take(&mut self, user: &str, now: u64) -> bool {
        if self.users.len() >= MAX_TRACKED && !self.users.contains_key(user) {
            self.users
                .retain(|_, (start, _)| now < *start + WINDOW_SECS);
            if self.users.len() >= MAX_TRACKED {
                return true;
            }
        }
        let (start, n) = self.users.entry(user.to_string()).or_insert((now, 0));
        if now >= *start + WINDOW_SECS {
            *start = now;
            *n = 0;
        }
        if *n >= PER_WINDOW {
            return false;
        }
        *n += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_gets_a_budget_per_window_others_are_unaffected() {
        let mut b = PunchBudget::default();
        for _ in 0..PER_WINDOW {
            assert!(b.take("mallory", 100));
        }
        assert!(!b.take("mallory", 105));
        assert!(b.take("alice", 105));
        assert!(b.take("mallory", 100 + WINDOW_SECS));
    }
}

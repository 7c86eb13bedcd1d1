//! When to retry a download that failed because no holder of its missing pieces was online.
//!
//! A pure structure (no clock, no I/O: the caller passes `now`), so the policy is unit-tested
//! without waiting. The daemon's control task asks it which failed downloads are due, re-asks
//! the tracker for their holders, and either resumes them or reports "still nobody" here,
//! which backs the next check off: 10 s, 20 s, then every 30 s for as long as the entry stays
//! failed. A holder event (the tracker pushing "a holder came online") makes everything due
//! at once ([`RetryPolicy::all_due_now`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// First re-check after a failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Checks never get further apart than this.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Entry {
    checks: u32,
    next: Instant,
}

/// Failed downloads waiting for a holder, by destination.
#[derive(Debug, Default)]
pub struct RetryPolicy {
    entries: HashMap<PathBuf, Entry>,
}

/// The wait before check number `checks` (0-based): 10 s, 20 s, 30 s, 30 s, …
pub fn backoff(checks: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << checks.min(8))
        .min(MAX_RETRY)
}

impl RetryPolicy {
    /// Start watching a download that just failed for lack of holders (no-op if watched).
    pub fn watch(&mut self, dest: &Path, now: Instant) {
        self.entries.entry(dest.to_path_buf()).or_insert(Entry {
            checks: 0,
            next: now + backoff(0),
        });
    }

    pub fn is_watched(&self, dest: &Path) -> bool {
        self.entries.contains_key(dest)
    }

    /// Stop watching (resumed, cancelled, removed, or no longer failed).
    pub fn forget(&mut self, dest: &Path) {
        self.entries.remove(dest);
    }

    /// Keep only the destinations `keep` says are still failed and retryable.
    pub fn retain(&mut self, mut keep: impl FnMut(&Path) -> bool) {
        self.entries.retain(|d, _| keep(d));
    }

    /// Destinations whose check is due, oldest first. Each stays watched until the caller
    /// reports the check's result ([`RetryPolicy::nobody_yet`] or [`RetryPolicy::forget`]);
    /// until then it is not due again for [`MAX_RETRY`] (a slow check is not started twice).
    pub fn take_due(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut due: Vec<(Instant, PathBuf)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.next <= now)
            .map(|(d, e)| (e.next, d.clone()))
            .collect();
        due.sort();
        for (_, d) in &due {
            if let Some(e) = self.entries.get_mut(d) {
                e.next = now + MAX_RETRY;
            }
        }
        due.into_iter().map(|(_, d)| d).collect()
    }

    /// The tracker still lists no holder: check again later, backing off.
    pub fn nobody_yet(&mut self, dest: &Path, now: Instant) {
        if let Some(e) = self.entries.get_mut(dest) {
            e.checks = e.checks.saturating_add(1);
            e.next = now + backoff(e.checks);
        }
    }

    /// A holder event: check every watched download now.
    pub fn all_due_now(&mut self, now: Instant) {
        for e in self.entries.values_mut() {
            e.next = now;
        }
    }

    /// When the next check is due, if any download is watched.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.next).min()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn backoff_grows_to_a_cap() {
        assert_eq!(backoff(0), s(10));
        assert_eq!(backoff(1), s(20));
        assert_eq!(backoff(2), s(30));
        assert_eq!(backoff(40), s(30));
    }

    #[test]
    fn a_failed_download_is_checked_with_backoff_until_forgotten() {
        let t0 = Instant::now();
        let mut p = RetryPolicy::default();
        let d = Path::new("/dl/a");
        p.watch(d, t0);
        assert!(p.take_due(t0 + s(9)).is_empty());
        assert_eq!(p.take_due(t0 + s(10)), vec![d.to_path_buf()]);
        // Not due again while its check runs.
        assert!(p.take_due(t0 + s(11)).is_empty());
        p.nobody_yet(d, t0 + s(11));
        assert!(p.take_due(t0 + s(30)).is_empty());
        assert_eq!(p.take_due(t0 + s(31)).len(), 1);
        p.nobody_yet(d, t0 + s(31));
        assert!(p.take_due(t0 + s(60)).is_empty());
        assert_eq!(p.take_due(t0 + s(61)).len(), 1);
        p.forget(d);
        assert!(p.is_empty());
        assert!(p.take_due(t0 + s(1000)).is_empty());
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn watching_twice_keeps_the_schedule_and_a_holder_event_makes_all_due() {
        let t0 = Instant::now();
        let mut p = RetryPolicy::default();
        let (a, b) = (Path::new("/dl/a"), Path::new("/dl/b"));
        p.watch(a, t0);
        p.watch(b, t0 + s(5));
        p.watch(a, t0 + s(9)); // a second failure report does not push the check back
        assert_eq!(p.next_due(), Some(t0 + s(10)));
        p.all_due_now(t0 + s(1));
        let due = p.take_due(t0 + s(1));
        assert_eq!(due.len(), 2);
        p.retain(|d| d == a);
        assert!(p.is_watched(a) && !p.is_watched(b));
        assert_eq!(p.len(), 1);
    }
}

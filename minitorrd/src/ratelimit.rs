//! A token bucket shared by all transfers in one direction (bytes per second, 0 = unlimited).
//!
//! The bucket holds at most [`BURST`] (100 ms) worth of bytes and starts full, so over any
//! stretch of time T from the start (or from an idle moment) at most `rate × (T + 100 ms)` bytes
//! pass: a short transfer cannot burst past the cap. A request larger than the bucket (a piece
//! bigger than 100 ms of rate) goes into debt and waits for it, so it still passes, paced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
// tokio's clock, so paused-time tests see the bucket refill.
use tokio::time::Instant;

/// The bucket's capacity, as time at the configured rate.
pub const BURST: Duration = Duration::from_millis(100);

pub struct RateLimiter {
    /// Bytes per second; changeable at runtime (SIGHUP reload).
    rate: AtomicU64,
    /// Tokens (bytes; negative = debt being waited for) and when they were last refilled.
    state: Mutex<(f64, Instant)>,
}

fn capacity(rate: f64) -> f64 {
    rate * BURST.as_secs_f64()
}

impl RateLimiter {
    pub fn new(bytes_per_sec: u64) -> Self {
        RateLimiter {
            rate: AtomicU64::new(bytes_per_sec),
            state: Mutex::new((capacity(bytes_per_sec as f64), Instant::now())),
        }
    }

    pub fn unlimited(&self) -> bool {
        self.rate.load(Ordering::Relaxed) == 0
    }

    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// Wait until `n` bytes may pass. Callers queue fairly on the mutex (held while waiting, so
    /// one large request cannot be overtaken forever by small ones).
    pub async fn acquire(&self, n: usize) {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return;
        }
        let mut st = self.state.lock().await;
        let rate = rate as f64;
        let now = Instant::now();
        st.0 = (st.0 + now.duration_since(st.1).as_secs_f64() * rate).min(capacity(rate));
        st.1 = now;
        st.0 -= n as f64;
        if st.0 < 0.0 {
            let wait = Duration::from_secs_f64(-st.0 / rate);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_rate() {
        let rl = RateLimiter::new(1000);
        let t0 = tokio::time::Instant::now();
        rl.acquire(100).await; // the initial 100 ms burst
        rl.acquire(2000).await; // two seconds' worth
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(1900), "{waited:?}");
        assert!(RateLimiter::new(0).unlimited());
    }

    /// Several transfers pulling 16 KiB chunks at once; returns the time (from `t0`) at which
    /// each chunk was allowed, for `total` of simulated time.
    async fn grants(rl: Arc<RateLimiter>, t0: Instant, total: Duration) -> Vec<(Duration, u64)> {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (rl, log) = (rl.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                while t0.elapsed() < total {
                    rl.acquire(16 * 1024).await;
                    log.lock().unwrap().push((t0.elapsed(), 16 * 1024u64));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut v = log.lock().unwrap().clone();
        v.sort();
        v
    }

    /// Bytes allowed in the first N ms never exceed rate × (N + 100 ms), for N from 0 to 2 s:
    /// at the start, and again after the limiter sat idle for a long time.
    #[tokio::test(start_paused = true)]
    async fn the_cap_holds_over_short_windows_too() {
        let rate = 1_000_000u64;
        let rl = Arc::new(RateLimiter::new(rate));
        for round in 0..2 {
            if round == 1 {
                // Idle for a minute: the bucket must not have saved up more than 100 ms.
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            let t0 = Instant::now();
            let g = grants(rl.clone(), t0, Duration::from_secs(2)).await;
            for n_ms in [0u64, 1, 10, 50, 100, 250, 500, 1000, 2000] {
                let allowed: u64 = g
                    .iter()
                    .filter(|(t, _)| *t <= Duration::from_millis(n_ms))
                    .map(|(_, b)| b)
                    .sum();
                let cap = rate * (n_ms + 100) / 1000;
                assert!(
                    allowed <= cap + 1,
                    "round {round}: {allowed} bytes in the first {n_ms} ms, cap {cap}"
                );
            }
            // And the rate is actually reached (not merely capped): ≥ 90 % over 2 s.
            let total: u64 = g.iter().map(|(_, b)| b).sum();
            assert!(
                total >= rate * 2 * 9 / 10,
                "round {round}: only {total} bytes in 2 s"
            );
        }
    }
}

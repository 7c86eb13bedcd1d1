//! A token bucket shared by all transfers in one direction (bytes per second, 0 = unlimited).
//! Burst is one second's worth, so a single piece larger than the rate still passes (slowly).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

pub struct RateLimiter {
    /// Bytes per second; changeable at runtime (SIGHUP reload).
    rate: AtomicU64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(bytes_per_sec: u64) -> Self {
        RateLimiter {
            rate: AtomicU64::new(bytes_per_sec),
            state: Mutex::new((bytes_per_sec as f64, Instant::now())),
        }
    }

    pub fn unlimited(&self) -> bool {
        self.rate.load(Ordering::Relaxed) == 0
    }

    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// Wait until `n` bytes may pass. Callers queue fairly on the mutex.
    pub async fn acquire(&self, n: usize) {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return;
        }
        let mut st = self.state.lock().await;
        let rate = rate as f64;
        let now = Instant::now();
        st.0 = (st.0 + now.duration_since(st.1).as_secs_f64() * rate).min(rate);
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

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_rate() {
        let rl = RateLimiter::new(1000);
        let t0 = tokio::time::Instant::now();
        rl.acquire(1000).await; // the initial burst
        rl.acquire(2000).await; // two seconds' worth
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(1900), "{waited:?}");
        assert!(RateLimiter::new(0).unlimited());
    }
}

//! Per-download counters shown by `show_downloads`: bytes, speed over a sliding window, and
//! what each peer contributed.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use minitorr_proto::control::{DownloadState, PeerStat};

const SPEED_WINDOW: Duration = Duration::from_secs(3);

pub struct Progress {
    pub state: DownloadState,
    pub error: Option<String>,
    pub bytes_done: u64,
    /// `bytes_done` when this run started (pieces verified in the part file before a resume).
    start_bytes: u64,
    pub peers: BTreeMap<String, PeerStat>,
    pub first_piece: Option<Duration>,
    pub finished: Option<Duration>,
    samples: VecDeque<(Instant, u64)>,
}

impl Progress {
    pub fn new(bytes_done: u64) -> Self {
        Progress {
            state: DownloadState::Downloading,
            error: None,
            bytes_done,
            start_bytes: bytes_done,
            peers: BTreeMap::new(),
            first_piece: None,
            finished: None,
            samples: VecDeque::new(),
        }
    }

    pub fn peer(&mut self, addr: &str, user: &str) -> &mut PeerStat {
        self.peers
            .entry(addr.to_string())
            .or_insert_with(|| PeerStat {
                addr: addr.to_string(),
                user: user.to_string(),
                bytes_received: 0,
                connected: false,
                bad_pieces: 0,
                path: Default::default(),
            })
    }

    pub fn record_piece(&mut self, addr: &str, user: &str, len: u64, since_start: Duration) {
        self.bytes_done += len;
        self.peer(addr, user).bytes_received += len;
        self.first_piece.get_or_insert(since_start);
        let now = Instant::now();
        self.samples.push_back((now, len));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > SPEED_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes fetched by this run (not those found in the part file on resume).
    pub fn fetched_this_run(&self) -> u64 {
        self.bytes_done.saturating_sub(self.start_bytes)
    }

    /// Average bytes per second of this run, `elapsed` being the time since it started.
    pub fn average_speed(&self, elapsed: Duration) -> u64 {
        let ms = elapsed.as_millis() as u64;
        self.fetched_this_run()
            .saturating_mul(1000)
            .checked_div(ms)
            .unwrap_or(0)
    }

    /// Bytes per second over the last few seconds (0 when idle).
    pub fn speed(&self) -> u64 {
        let now = Instant::now();
        let recent: u64 = self
            .samples
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= SPEED_WINDOW)
            .map(|(_, n)| n)
            .sum();
        match self.samples.front() {
            Some((t0, _)) if recent > 0 => {
                let span = now.duration_since(*t0).max(Duration::from_millis(100));
                (recent as f64 / span.as_secs_f64()) as u64
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_per_peer_and_overall() {
        let mut p = Progress::new(10);
        p.record_piece("1.2.3.4:1", "a", 100, Duration::from_millis(5));
        p.record_piece("1.2.3.4:2", "b", 50, Duration::from_millis(9));
        p.record_piece("1.2.3.4:1", "a", 100, Duration::from_millis(12));
        assert_eq!(p.bytes_done, 260);
        assert_eq!(p.peers["1.2.3.4:1"].bytes_received, 200);
        assert_eq!(p.first_piece, Some(Duration::from_millis(5)));
        assert!(p.speed() > 0);
    }

    #[test]
    fn the_average_after_a_resume_counts_only_this_runs_bytes() {
        // 900 bytes were in the part file already; this run fetched 100 in 2 s.
        let mut p = Progress::new(900);
        assert_eq!(p.average_speed(Duration::from_secs(1)), 0);
        p.record_piece("1.2.3.4:1", "a", 100, Duration::from_millis(5));
        assert_eq!(p.bytes_done, 1000);
        assert_eq!(p.fetched_this_run(), 100);
        assert_eq!(p.average_speed(Duration::from_secs(2)), 50);
        assert_eq!(p.average_speed(Duration::ZERO), 0);
        // A fresh download counts everything.
        let mut p = Progress::new(0);
        p.record_piece("1.2.3.4:1", "a", 3000, Duration::from_millis(5));
        assert_eq!(p.average_speed(Duration::from_secs(3)), 1000);
    }
}

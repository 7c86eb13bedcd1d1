//! One direction of an emulated link, as a pure structure: frames go in with their arrival
//! time and come out when they are due. No sockets, no clock — the forwarder feeds it and the
//! unit tests drive it with made-up instants.
//!
//! Model (what a frame meets, in order):
//! 1. random loss: dropped with probability `loss` (independent per frame);
//! 2. optional rate cap: a FIFO transmitter of `rate_bps` serialises frames one after the other
//!    (a frame that would wait behind more than `queue_limit_bytes` is dropped, tail drop);
//! 3. propagation delay: `delay` plus a uniform jitter in `[0, jitter]`, never reordering (a
//!    frame is never due before the one ahead of it, as on a real wire).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub delay: Duration,
    pub jitter: Duration,
    /// Probability in [0, 1] that a frame is dropped.
    pub loss: f64,
    /// Bits per second; `None` = no cap.
    pub rate_bps: Option<u64>,
    /// Bytes that may wait for the transmitter (rate cap) or, without a cap, be in flight.
    pub queue_limit_bytes: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
}

/// splitmix64: a tiny, good-enough PRNG so a run can be repeated with `--seed`.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct Link<T> {
    p: Params,
    rng: Rng,
    /// (due, size, frame), due non-decreasing.
    queue: VecDeque<(Instant, usize, T)>,
    queued_bytes: usize,
    /// When the rate-capped transmitter finishes the last accepted frame.
    tx_free: Option<Instant>,
    last_due: Option<Instant>,
    pub counters: Counters,
}

impl<T> Link<T> {
    pub fn new(p: Params, seed: u64) -> Self {
        Link {
            p,
            rng: Rng::new(seed),
            queue: VecDeque::new(),
            queued_bytes: 0,
            tx_free: None,
            last_due: None,
            counters: Counters::default(),
        }
    }

    /// A frame of `size` bytes arrived at `now`. Returns false if it was dropped.
    pub fn push(&mut self, now: Instant, size: usize, frame: T) -> bool {
        self.counters.frames_in += 1;
        self.counters.bytes_in += size as u64;
        if self.p.loss > 0.0 && self.rng.unit() < self.p.loss {
            self.counters.dropped_loss += 1;
            return false;
        }
        let mut leave = now;
        if let Some(rate) = self.p.rate_bps {
            let start = self.tx_free.map_or(now, |t| t.max(now));
            // Bytes still waiting for the transmitter ahead of this frame.
            let backlog = start.saturating_duration_since(now).as_secs_f64() * rate as f64 / 8.0;
            if backlog + size as f64 > self.p.queue_limit_bytes as f64 {
                self.counters.dropped_queue += 1;
                return false;
            }
            leave = start + Duration::from_secs_f64(size as f64 * 8.0 / rate as f64);
            self.tx_free = Some(leave);
        } else if self.queued_bytes + size > self.p.queue_limit_bytes {
            self.counters.dropped_queue += 1;
            return false;
        }
        let mut due = leave + self.p.delay;
        if !self.p.jitter.is_zero() {
            due += self.p.jitter.mul_f64(self.rng.unit());
        }
        if let Some(last) = self.last_due {
            due = due.max(last); // no reordering
        }
        self.last_due = Some(due);
        self.queued_bytes += size;
        self.queue.push_back((due, size, frame));
        true
    }

    /// When the next frame is due, if any is queued.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(d, _, _)| *d)
    }

    /// The next frame if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        match self.queue.front() {
            Some((due, _, _)) if *due <= now => {
                let (_, size, f) = self.queue.pop_front().expect("front exists");
                self.queued_bytes -= size;
                self.counters.frames_out += 1;
                self.counters.bytes_out += size as u64;
                Some(f)
            }
            _ => None,
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            delay: Duration::from_millis(100),
            jitter: Duration::ZERO,
            loss: 0.0,
            rate_bps: None,
            queue_limit_bytes: 1 << 30,
        }
    }

    #[test]
    fn frames_leave_after_the_delay_in_order() {
        let t0 = Instant::now();
        let mut l = Link::new(params(), 1);
        assert!(l.push(t0, 100, 1));
        assert!(l.push(t0 + Duration::from_millis(5), 100, 2));
        assert_eq!(l.pop_due(t0 + Duration::from_millis(99)), None);
        assert_eq!(l.next_due(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(l.pop_due(t0 + Duration::from_millis(100)), Some(1));
        assert_eq!(l.pop_due(t0 + Duration::from_millis(104)), None);
        assert_eq!(l.pop_due(t0 + Duration::from_millis(105)), Some(2));
        assert_eq!(l.counters.frames_out, 2);
        assert_eq!(l.queued_bytes(), 0);
    }

    #[test]
    fn jitter_never_reorders() {
        let t0 = Instant::now();
        let mut l = Link::new(
            Params {
                jitter: Duration::from_millis(50),
                ..params()
            },
            7,
        );
        for i in 0..1000u32 {
            l.push(t0 + Duration::from_micros(i as u64 * 10), 1, i);
        }
        let mut got = Vec::new();
        while let Some(d) = l.next_due() {
            assert!(d >= t0 + Duration::from_millis(100));
            assert!(d <= t0 + Duration::from_millis(160));
            got.push(l.pop_due(d).unwrap());
        }
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn loss_rate_is_close_to_configured() {
        let t0 = Instant::now();
        let mut l = Link::new(
            Params {
                loss: 0.01,
                ..params()
            },
            42,
        );
        for i in 0..200_000u32 {
            l.push(t0, 1, i);
        }
        let rate = l.counters.dropped_loss as f64 / 200_000.0;
        assert!((0.008..0.012).contains(&rate), "observed loss {rate}");
    }

    #[test]
    fn rate_cap_serialises_frames_and_tail_drops() {
        let t0 = Instant::now();
        // 8 Mbit/s = 1 byte per µs; no delay; room for 3000 bytes waiting.
        let p = Params {
            delay: Duration::ZERO,
            rate_bps: Some(8_000_000),
            queue_limit_bytes: 3000,
            ..params()
        };
        let mut l = Link::new(p, 1);
        assert!(l.push(t0, 1000, 'a')); // leaves at 1 ms
        assert!(l.push(t0, 1000, 'b')); // 2 ms
        assert!(l.push(t0, 1000, 'c')); // 3 ms: 2000 waiting + 1000 = 3000, fits
        assert!(!l.push(t0, 1000, 'd')); // 3000 waiting + 1000 > 3000
        assert_eq!(l.counters.dropped_queue, 1);
        assert_eq!(l.next_due(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(l.pop_due(t0 + Duration::from_micros(1999)), Some('a'));
        assert_eq!(l.pop_due(t0 + Duration::from_micros(1999)), None);
        assert_eq!(l.pop_due(t0 + Duration::from_millis(3)), Some('b'));
        assert_eq!(l.pop_due(t0 + Duration::from_millis(3)), Some('c'));
        // An idle transmitter starts again at the arrival time.
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.push(t1, 500, 'e'));
        assert_eq!(l.next_due(), Some(t1 + Duration::from_micros(500)));
    }

    #[test]
    fn without_a_cap_the_in_flight_bytes_are_bounded() {
        let t0 = Instant::now();
        let mut l = Link::new(
            Params {
                queue_limit_bytes: 250,
                ..params()
            },
            1,
        );
        assert!(l.push(t0, 100, 1));
        assert!(l.push(t0, 100, 2));
        assert!(!l.push(t0, 100, 3));
        assert_eq!(l.counters.dropped_queue, 1);
    }
}

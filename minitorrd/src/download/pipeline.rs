//! How many requests to keep outstanding at one peer: a pure function of what we measured on
//! that connection (rate and round trip), so a long link is limited by its bandwidth, not by
//! its latency (issue #11, item 3), and a busy peer is not handed requests that only wait in
//! its queue.
//!
//! depth = ⌈rate × [`QUEUE_TARGET`] / piece⌉ + ⌊peak × [`RTT_COVER`] × rtt / piece + 0.9⌋, at
//! least 1 (`peak`: [`PeakRate`]), where
//! the first part is capped at the configured `max_pipeline_depth` (what a short link needs:
//! ~250 ms of transfer queued at the peer, so it never idles between our requests) and the
//! second — the bandwidth-delay product, pieces on the wire or waiting for our request to
//! arrive — only by the per-peer and per-download memory bounds ([`peer_cap`],
//! [`MEMORY_MAX`]). It is rounded up from a tenth of a piece: a round trip that is a sliver of
//! a piece's transfer (a LAN) adds nothing, one that is a real part of it adds a request.
//!
//! Why not more: a request queued at a peer that serves many downloaders (a leecher in a
//! crowd, or the seeder) only waits there, and it pins its piece to that peer while others
//! that got the piece since stay idle. In a crowd of 16 every peer delivers us a piece every
//! second or so, the depth is one, and a piece's round of the crowd got faster (the old rule,
//! 2 + …, kept ~30 pieces queued per downloader: a second each; docs/BENCHMARKS.md).
//!
//! On a long path a young connection's depth does not drop below what it started with
//! ([`initial_depth`]: 2 MiB per 400 ms of round trip; [`slow_start_floor`]): while TCP is
//! still in slow start the measured rate is its congestion window's, and a depth sized from
//! it grew by ~1.6 × per 500 ms where TCP wants 2 × per round trip (64 MiB over 400 ms:
//! 15.2 s without the floor, 14.6 s with it; one TCP stream 13.7 s).
//!
//! The round trip is the path's: the smallest RTT TCP measured on the connection
//! (`tcpi_min_rtt`), which no application queue inflates. Where there is no TCP socket of the
//! path's own (a relayed link) it is the smallest request→piece time seen on the connection
//! (the first requests go out with a nearly empty pipeline, so it is close to the path's RTT
//! plus one piece's transfer time); the minimum over the connection's life, not a moving
//! window: at a full pipeline every sample includes the queue we built, and a windowed
//! minimum would feed the depth back into itself.

use std::time::Duration;

use minitorr_proto::peer::requests_per_reference;

/// Transfer time to keep queued at the peer on top of the bandwidth-delay product.
pub const QUEUE_TARGET: Duration = Duration::from_millis(250);
/// Memory a download may hold in pieces (requested or being verified) normally…
pub const MEMORY_BASE: usize = 16 * 1024 * 1024;
/// …and at most, when long links need it (see `Download::grow_slots`).
pub const MEMORY_MAX: usize = 64 * 1024 * 1024;
/// Requests outstanding at one peer at most: 48 pieces of 512 KiB, proportionally more of
/// smaller ones (`proto::peer::requests_per_reference`): three quarters of the seeder's
/// request queue limit (`proto::peer::max_queued_requests`), with room for requests that were
/// answered but whose pieces are still on the wire.
pub fn peer_depth_max(piece_size: u32) -> usize {
    48 * requests_per_reference(piece_size)
}

/// The most requests one peer may have outstanding with pieces of `piece_size`.
pub fn peer_cap(piece_size: u32) -> usize {
    (MEMORY_MAX / piece_size.max(1) as usize).clamp(2, peer_depth_max(piece_size))
}

/// Rate a new connection's first requests assume over its path's round trip, before its own
/// rate is measured: 2 MiB in flight over 400 ms.
pub const INITIAL_RATE: f64 = 5.0 * 1024.0 * 1024.0;

/// Requests a new connection starts with, before its rate is known: two, or
/// [`INITIAL_RATE`] × the path's round trip (`path_rtt`, TCP's measure from the handshake) if
/// that is more; 1 MiB worth when the path's round trip is unknown (a relayed link).
///
/// Why: the depth then grows by about (`QUEUE_TARGET` + rtt) / rtt every 500 ms, so where it
/// starts sets how long a long link takes to reach its rate. Over a 400 ms round trip, 64 MiB
/// in 64 KiB pieces took 16.7 s starting from two requests (128 KiB), 15.0–15.5 s from 1 MiB
/// and 15.2 s from 2 MiB (one TCP stream: 13.7 s). On a LAN or in a crowd two are right:
/// 16 requests at every peer from the start of a 16-leecher crowd pinned pieces to the seeder
/// (docs/BENCHMARKS.md).
pub fn initial_depth(piece_size: u32, path_rtt: Option<Duration>) -> usize {
    let want = match path_rtt {
        Some(rtt) => initial_rate_requests(piece_size, rtt),
        None => 2 * requests_per_reference(piece_size),
    };
    want.max(2).min(peer_cap(piece_size))
}

/// Requests of `piece_size` that carry [`INITIAL_RATE`] over `rtt` (rounded up).
fn initial_rate_requests(piece_size: u32, rtt: Duration) -> usize {
    (INITIAL_RATE * rtt.as_secs_f64() / f64::from(piece_size.max(1))).ceil() as usize
}

/// Pieces a download may hold at once normally: [`MEMORY_BASE`] worth, at least 4.
pub fn base_slots(piece_size: u32) -> usize {
    (MEMORY_BASE / piece_size.max(1) as usize).max(4)
}

/// Pieces a download may hold at once at most: [`MEMORY_MAX`] worth, at least the base.
pub fn max_slots(piece_size: u32) -> usize {
    (MEMORY_MAX / piece_size.max(1) as usize).max(base_slots(piece_size))
}

/// Requests to keep outstanding at a peer delivering `rate` bytes/s with round trip `rtt`.
/// `max_depth`: the configured `max_pipeline_depth` (caps the short-link part), counted in
/// 512 KiB pieces: an item with smaller pieces gets proportionally more requests.
pub fn target_depth(rate: f64, rtt: Duration, piece_size: u32, max_depth: usize) -> usize {
    target_depth_with_peak(rate, rate, rtt, piece_size, max_depth)
}

/// [`target_depth`] with the bandwidth-delay part sized from `peak` ([`PeakRate`]), the rate
/// the link showed recently, rather than the last window's.
pub fn target_depth_with_peak(
    rate: f64,
    peak: f64,
    rtt: Duration,
    piece_size: u32,
    max_depth: usize,
) -> usize {
    let piece = f64::from(piece_size.max(1));
    let finite = |r: f64| if r.is_finite() { r.max(0.0) } else { 0.0 };
    let rate = finite(rate);
    let peak = finite(peak).max(rate);
    let peer_max = peer_depth_max(piece_size);
    let max_depth = max_depth
        .max(1)
        .saturating_mul(requests_per_reference(piece_size))
        .min(peer_max);
    let queue = ((rate * QUEUE_TARGET.as_secs_f64() / piece).ceil() as usize).clamp(1, max_depth);
    let bdp = (peak * RTT_COVER * rtt.as_secs_f64() / piece + 0.9).floor() as usize;
    queue
        .saturating_add(bdp)
        .clamp(1, peer_cap(piece_size).max(max_depth))
}

/// How long after it opened a connection keeps [`slow_start_floor`]: 16 round trips (TCP's
/// window doubles each), at most this.
pub const SLOW_START_MAX: Duration = Duration::from_secs(10);

/// The depth a young connection on a long path keeps at least: what it started with
/// ([`INITIAL_RATE`] × `rtt`), for its first 16 round trips (at most [`SLOW_START_MAX`]); zero
/// after that, and on a LAN.
///
/// Why: while TCP is still in slow start the rate we measure is its congestion window's, and
/// a depth sized from it grew by ~1.6 × per 500 ms where TCP grows 2 × per round trip. Why
/// only while young: a peer that delays its TCP acknowledgements looks far away, and a floor
/// for the connection's whole life would let it hold 24 MiB of our requests however slowly
/// it serves them; once TCP is past slow start the measured rate is the link's.
pub fn slow_start_floor(piece_size: u32, rtt: Duration, age: Duration) -> usize {
    if age >= (rtt * 16).min(SLOW_START_MAX) {
        return 0;
    }
    initial_rate_requests(piece_size, rtt).min(peer_cap(piece_size))
}

/// Round trips of transfer kept requested on a path: one on the wire, two more queued at the
/// peer, so a lost request segment (TCP resends it after ~2 round trips: no later data
/// carries the loss signal) does not drain the peer's queue.
pub const RTT_COVER: f64 = 3.0;

/// What a window's rate counts for after each further 500 ms window in [`PeakRate`].
pub const PEAK_DECAY: f64 = 0.85;

/// The rate a connection showed recently: the largest window rate, decaying by
/// [`PEAK_DECAY`] per window (half-life ~2 s).
///
/// Why: on a long lossy path TCP stalls for a retransmission now and then, a window's rate
/// drops to nothing, and a bandwidth-delay product sized from it collapsed the pipeline to a
/// request or two; with 64 KiB pieces the depth then needed seconds to grow back, and the
/// seeder's queue sat empty for 43 of 46 s (200 ms each way, 1 % loss: 48–117 s against
/// 27 s with 512 KiB pieces; docs/BENCHMARKS.md). A peer that never delivers fast never gets
/// a high peak, so this gives a slow or hostile peer nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct PeakRate {
    peak: f64,
}

impl PeakRate {
    /// Account one window's `rate`; returns the peak.
    pub fn update(&mut self, rate: f64) -> f64 {
        let rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
        self.peak = (self.peak * PEAK_DECAY).max(rate);
        self.peak
    }
}

/// Round-trip estimate of one connection: the smallest request→piece time seen.
#[derive(Debug, Default, Clone, Copy)]
pub struct RttEstimate {
    min: Option<Duration>,
}

impl RttEstimate {
    pub fn sample(&mut self, request_to_piece: Duration) {
        self.min = Some(
            self.min
                .map_or(request_to_piece, |m| m.min(request_to_piece)),
        );
    }

    /// Zero until the first piece arrived (then the depth is that of a short link).
    pub fn get(&self) -> Duration {
        self.min.unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u32 = 1024;
    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn a_short_link_gets_250_ms_of_transfer() {
        // Loopback: RTT ≈ 0, so the depth is 250 ms of transfer (at least one request),
        // capped at max_depth.
        assert_eq!(target_depth(0.0, Duration::ZERO, 512 * KIB, 8), 1);
        assert_eq!(target_depth(4.0 * MIB, Duration::ZERO, 512 * KIB, 8), 2);
        assert_eq!(target_depth(1000.0 * MIB, Duration::ZERO, 512 * KIB, 8), 8);
        assert_eq!(
            target_depth(1000.0 * MIB, Duration::from_micros(100), 512 * KIB, 8),
            9
        );
    }

    #[test]
    fn a_long_link_gets_its_bandwidth_delay_product() {
        // 400 ms RTT at 5 MiB/s: three round trips of transfer (6 MiB = 12 pieces of 512 KiB)
        // on top of the queue (250 ms: 3 pieces); at 20 MiB/s the peer's cap (24 MiB).
        let rtt = Duration::from_millis(400);
        assert_eq!(target_depth(5.0 * MIB, rtt, 512 * KIB, 8), 3 + 12);
        assert_eq!(
            target_depth(20.0 * MIB, rtt, 512 * KIB, 8),
            peer_cap(512 * KIB)
        );
        // A round trip that is a real part of a piece's transfer adds a request; a LAN's
        // does not.
        assert_eq!(
            target_depth(MIB, Duration::from_millis(100), 512 * KIB, 8),
            2
        );
        assert_eq!(target_depth(MIB, Duration::from_millis(1), 512 * KIB, 8), 1);
        // The depth grows with the measured rate, so the rate can grow (no fixed point at
        // the latency-bound rate): depth/rtt × piece > rate whenever below the cap.
        for rate_mib in [1.0, 2.0, 5.0, 10.0] {
            let rate = rate_mib * MIB;
            let rtt = Duration::from_millis(400);
            let d = target_depth(rate, rtt, 512 * KIB, 8);
            let allows = d as f64 * f64::from(512 * KIB) / rtt.as_secs_f64();
            assert!(
                allows > rate * 1.2,
                "{rate_mib} MiB/s: depth {d} allows {allows}"
            );
        }
    }

    /// While TCP is still in slow start on a long path the measured rate is its window's; the
    /// depth does not drop below what the connection started with there — for 16 round trips,
    /// not for ever (a peer that fakes a long path must not hold our requests at any rate).
    #[test]
    fn a_young_connection_on_a_long_path_keeps_its_initial_depth() {
        let ms = Duration::from_millis;
        let rtt = ms(400);
        for piece in [64 * KIB, 512 * KIB] {
            assert_eq!(
                slow_start_floor(piece, rtt, ms(1000)),
                initial_depth(piece, Some(rtt))
            );
            assert_eq!(
                slow_start_floor(piece, rtt, ms(6300)),
                initial_depth(piece, Some(rtt))
            );
            assert_eq!(slow_start_floor(piece, rtt, ms(6400)), 0, "16 round trips");
        }
        // A peer that looks 5 s away: at most SLOW_START_MAX, and never beyond the peer cap.
        let far = Duration::from_secs(5);
        assert_eq!(slow_start_floor(64 * KIB, far, SLOW_START_MAX), 0);
        assert!(slow_start_floor(64 * KIB, far, ms(100)) <= peer_cap(64 * KIB));
        // A LAN: no floor.
        assert_eq!(
            slow_start_floor(64 * KIB, Duration::from_micros(300), ms(10)),
            0
        );
    }

    /// A crowd: every peer delivers us about a piece a second (50 Mbit/s uplinks shared by
    /// 16) over a LAN; one request each, not two or three that would only wait in its queue.
    #[test]
    fn a_peer_in_a_crowd_gets_one_request() {
        for rate in [0.0, 0.3 * MIB, MIB, 1.9 * MIB] {
            for rtt_us in [50, 500, 5000] {
                let rtt = Duration::from_micros(rtt_us);
                assert_eq!(
                    target_depth(rate, rtt, 512 * KIB, 8),
                    1,
                    "{rate} {rtt_us} µs"
                );
            }
        }
    }

    #[test]
    fn the_depth_stays_within_the_memory_bounds() {
        for piece in [16 * KIB, 256 * KIB, 512 * KIB, 1024 * KIB, 16 * 1024 * KIB] {
            for rtt_ms in [0, 1, 50, 400, 5000] {
                for rate in [0.0, 1.0, MIB, 100.0 * MIB, 1e12, f64::INFINITY, f64::NAN] {
                    let d = target_depth(rate, Duration::from_millis(rtt_ms), piece, 8);
                    assert!(d >= 1);
                    assert!(d <= peer_depth_max(piece), "{piece} {rtt_ms} {rate}: {d}");
                    assert!(
                        d < minitorr_proto::peer::max_queued_requests(piece),
                        "the seeder's queue takes it: {piece} {rtt_ms} {rate}: {d}"
                    );
                    assert!(
                        d * piece as usize <= MEMORY_MAX.max(8 * piece as usize),
                        "{piece} {rtt_ms} {rate}: {d}"
                    );
                }
            }
        }
        assert_eq!(base_slots(512 * KIB), 32);
        assert_eq!(max_slots(512 * KIB), 128);
        assert_eq!(base_slots(16 * 1024 * KIB), 4);
        assert_eq!(max_slots(16 * 1024 * KIB), 4);
    }

    /// The control loop on a model link (rate = min(bandwidth, depth × piece / rtt), the depth
    /// recomputed every 500 ms as peer.rs does): from depth 2 it reaches ≥ 80 % of the
    /// bandwidth within a few seconds on long links, whereas the old depth (no rtt term) stayed
    /// latency-bound.
    #[test]
    fn on_a_model_long_link_the_rate_converges_to_the_bandwidth() {
        let piece = 512 * KIB;
        // (bandwidth, rtt, whether the old policy was latency-bound there)
        for (bw_mib, rtt_ms, old_bound) in [
            (10.0, 200, false),
            (20.0, 400, true),
            (40.0, 400, true),
            (25.0, 100, false),
            (60.0, 200, true),
        ] {
            let bw = bw_mib * MIB;
            let rtt = Duration::from_millis(rtt_ms);
            let mut depth = 2usize;
            let mut old_depth = 2usize;
            let mut steps = 0;
            let rate = |d: usize| (d as f64 * f64::from(piece) / rtt.as_secs_f64()).min(bw);
            while rate(depth) < 0.8 * bw {
                depth = target_depth(rate(depth), rtt + Duration::from_millis(25), piece, 8);
                old_depth = (2 + (rate(old_depth) * 0.25 / f64::from(piece)) as usize).clamp(2, 8);
                steps += 1;
                assert!(
                    steps <= 20,
                    "{bw_mib} MiB/s {rtt_ms} ms: stuck at depth {depth}"
                );
            }
            for _ in 0..50 {
                old_depth = (2 + (rate(old_depth) * 0.25 / f64::from(piece)) as usize).clamp(2, 8);
            }
            assert_eq!(
                rate(old_depth) < 0.8 * bw,
                old_bound,
                "the old policy was latency-bound here ({bw_mib} MiB/s, {rtt_ms} ms)"
            );
        }
    }

    #[test]
    fn a_long_link_starts_with_its_round_trip_in_flight_a_short_one_with_two_requests() {
        let ms = Duration::from_millis;
        for piece in [16 * KIB, 64 * KIB, 512 * KIB, 8 * 1024 * KIB] {
            assert_eq!(initial_depth(piece, Some(Duration::ZERO)), 2);
            assert_eq!(initial_depth(piece, Some(Duration::from_micros(200))), 2);
            let long = initial_depth(piece, Some(ms(400)));
            assert!(
                long * piece as usize >= 2 << 20 || long == 2,
                "{piece}: {long}"
            );
            assert!(long <= peer_cap(piece));
            let relayed = initial_depth(piece, None);
            assert!(relayed * piece as usize >= 1 << 20 || relayed == 2);
        }
        assert_eq!(initial_depth(64 * KIB, Some(ms(400))), 32);
        assert_eq!(initial_depth(512 * KIB, Some(ms(400))), 4);
        // A crowd on a LAN: two, whatever the piece size.
        assert_eq!(initial_depth(64 * KIB, Some(ms(5))), 2);
        assert_eq!(initial_depth(64 * KIB, None), 16);
        // Never beyond what the seeder queues, however long the link.
        assert_eq!(
            initial_depth(16 * KIB, Some(ms(60_000))),
            peer_cap(16 * KIB)
        );
    }

    /// A stall on a long path (a window with nothing delivered) does not collapse the
    /// bandwidth-delay part; a peer that was never fast gets no more than its rate.
    #[test]
    fn a_stall_keeps_the_recent_peak_and_decays_it() {
        let rtt = Duration::from_millis(400);
        let mut p = PeakRate::default();
        let full = target_depth(4.0 * MIB, rtt, 64 * KIB, 8);
        assert_eq!(p.update(4.0 * MIB), 4.0 * MIB);
        let peak = p.update(0.0);
        // The bandwidth-delay part (what is on the wire) survives the stall; the queue part
        // follows the window's rate.
        let bdp_part = full - target_depth(4.0 * MIB, Duration::ZERO, 64 * KIB, 8);
        assert!(target_depth_with_peak(0.0, peak, rtt, 64 * KIB, 8) >= bdp_part * 3 / 4);
        for _ in 0..60 {
            p.update(0.0);
        }
        assert!(p.update(0.0) < 0.01 * MIB, "it decays");
        // Never fast: the peak is the rate.
        let mut slow = PeakRate::default();
        for _ in 0..10 {
            assert_eq!(slow.update(0.1 * MIB), 0.1 * MIB);
        }
        assert_eq!(slow.update(f64::NAN), 0.1 * MIB * PEAK_DECAY);
        // On a LAN the peak adds a request at most: the queue part follows the window's rate.
        assert!(
            target_depth_with_peak(0.0, 100.0 * MIB, Duration::from_micros(50), 64 * KIB, 8) <= 2
        );
        assert_eq!(
            target_depth_with_peak(0.0, 10.0 * MIB, Duration::from_micros(50), 64 * KIB, 8),
            1
        );
    }

    #[test]
    fn the_rtt_estimate_is_the_smallest_sample() {
        let mut r = RttEstimate::default();
        assert_eq!(r.get(), Duration::ZERO);
        r.sample(Duration::from_millis(420));
        r.sample(Duration::from_millis(900));
        r.sample(Duration::from_millis(401));
        assert_eq!(r.get(), Duration::from_millis(401));
    }
}

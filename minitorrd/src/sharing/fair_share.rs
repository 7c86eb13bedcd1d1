//! A fair split of a daemon's upload of one file between the connections serving it (issue
//! #11, item 2), as a pure data structure: a few pieces at a time on the wire, least-served
//! connection first.
//!
//! Without any split each connection's task writes as fast as its socket takes bytes, so the
//! split follows TCP and the downloaders' request depths: in a crowd of 16 leechers capped at
//! 50 Mbit/s, one got 35 pieces from the seeder and most got 6 (measured, docs/BENCHMARKS.md).
//! A leecher that got many pieces nobody else has must then upload each of them to everyone
//! else, and its uplink becomes the crowd's bottleneck.
//!
//! A split at byte granularity (every connection's TCP sharing the uplink at once) is fair in
//! bytes but slow in pieces: with 16 connections each 512 KiB piece takes 16 times as long to
//! cross, all of a round's pieces complete together at the end of the round, and nobody can
//! pass a piece on until then — at the start (leechers idle for the first round) and at the end
//! (the last pieces all arrive together and must then cross 15 more uplinks). So the wire is
//! handed out **a few pieces at a time**: at most [`HOLDERS`] connections send a piece at
//! once, each at a third of the uplink or more, and the next one starts when a holder's kernel
//! queue is nearly drained (the caller waits for that, `sharing/server.rs`; [`DRAINED`]).
//!
//! Rule: among the connections waiting to send a piece, the least-served (bytes) gets the wire
//! when it has room; a connection that was idle does not bank credit (it restarts at most one
//! [`QUANTUM`] below the busy ones). A holder that does not hand its place back within
//! [`FairShare::hold_limit`] (a few times the usual hold; a socket blocked by a slow reader)
//! loses it: the next connection goes while it finishes. Someone always progresses.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::upload_policy::ConnId;

/// How far below the other waiting connections a connection that was idle restarts: two
/// 512 KiB pieces of credit at most.
pub const QUANTUM: u64 = 1024 * 1024;
/// A holder hands the wire on when at most this many bytes it wrote are still unsent in its
/// socket (`SIOCOUTQNSD`: bytes TCP has not put on the way yet): ~20 ms at 50 Mbit/s, enough
/// for the next connection to start before the wire idles. Bytes sent but not yet
/// acknowledged do not count: their acknowledgements come back through the downloader's
/// uplink, which in a crowd is as busy as ours (its queue held 80 ms and more), and waiting
/// for them left our uplink idle for 0.1–0.5 s at a time (measured: docs/BENCHMARKS.md).
pub const DRAINED: u64 = 128 * 1024;
/// Bounds of the time a holder may keep the wire before the next connection goes anyway.
pub const HOLD_MIN: Duration = Duration::from_millis(20);
pub const HOLD_MAX: Duration = Duration::from_secs(1);
/// Belt and braces: a connection never waits longer than this for its turn (it then sends at
/// the same time as the holder, as without a split).
pub const MAX_WAIT: Duration = Duration::from_secs(5);
/// Connections that may send at once (see the module's comment): measured with 16, 8 and 4
/// leechers, one at a time left the uplink idle whenever the one receiver was slow to read
/// (a loaded machine: 4 and 8 leechers got slower than with no turns at all); three at a time
/// keep that from idling the wire while a piece still crosses at a third of the uplink
/// instead of a sixteenth.
pub const HOLDERS: usize = 3;
/// A downloader passing pieces on (not the file's origin) answers `Elsewhere` to a request
/// that waited this long for its turn on the wire, if another of its peers holds the piece:
/// in a crowd every leecher asked the first holder of a new piece for it, and that holder
/// sent 15 copies one after the other while the peers that already had it from him idled.
/// Shedding what waits turns that star into a tree (the requester asks a holder it knows of;
/// a second request for the same piece is always served, so nobody is sent away twice).
/// 300 ms: a round of `HOLDERS` pieces at 50 Mbit/s is ~250 ms; 150 ms shed too early.
pub const SHED_AFTER: Duration = Duration::from_millis(300);

/// Should a request that waited `waited` for its turn be answered `Elsewhere` (see
/// [`SHED_AFTER`])? Never by an origin (its initial seeding decides), never twice for the same
/// piece on one connection (`shed_before`: a second request is served whatever peers claim),
/// and only when `others_holding` of our peers say they hold the piece.
pub fn shed(origin: bool, waited: Duration, others_holding: u16, shed_before: bool) -> bool {
    !origin && !shed_before && waited >= SHED_AFTER && others_holding > 0
}

/// The answer to [`FairShare::want`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Send now (the wire is yours until [`FairShare::done`]).
    Go,
    /// Wait for a change (`done`, `idle`, `abandon`, `close`), or until this instant, when the
    /// holder's time is up.
    Wait(Option<Instant>),
}

#[derive(Debug)]
pub struct FairShare {
    sent: HashMap<ConnId, u64>,
    /// Connections waiting for the wire (inside `want` … `Go`/`abandon`).
    waiting: HashSet<ConnId>,
    /// Who sends now (at most `holders`), since when.
    wire: Vec<(ConnId, Instant)>,
    /// How many connections may send at once.
    holders: usize,
    /// Moving average of how long holders keep the wire.
    hold: Duration,
    /// Since when nobody holds or waits for the wire, and the total of such gaps (for the
    /// log: an idle uplink while downloaders still need pieces is lost time).
    idle_since: Option<Instant>,
    idle_total: Duration,
    /// Time-weighted sum of the number of holders, and since when it was last updated (for
    /// the log: how full the wire was kept).
    held: (f64, Option<Instant>),
}

impl Default for FairShare {
    fn default() -> Self {
        FairShare::new(HOLDERS)
    }
}

impl FairShare {
    /// A split where `holders` connections (at least one) may send at once.
    pub fn new(holders: usize) -> Self {
        FairShare {
            sent: HashMap::new(),
            waiting: HashSet::new(),
            wire: Vec::new(),
            holders: holders.max(1),
            hold: Duration::from_millis(100),
            idle_since: None,
            idle_total: Duration::ZERO,
            held: (0.0, None),
        }
    }

    /// A new connection starts level with the least-served one (no banked credit).
    pub fn open(&mut self, conn: ConnId) {
        let start = self.sent.values().copied().min().unwrap_or(0);
        self.sent.insert(conn, start);
    }

    pub fn close(&mut self, conn: ConnId) {
        self.sent.remove(&conn);
        self.waiting.remove(&conn);
        self.wire.retain(|&(h, _)| h != conn);
    }

    /// How long a holder may keep the wire before the next connection goes anyway.
    pub fn hold_limit(&self) -> Duration {
        (self.hold * 3).clamp(HOLD_MIN, HOLD_MAX)
    }

    /// `conn` has a piece ready: may it send now?
    pub fn want(&mut self, conn: ConnId, now: Instant) -> Turn {
        if !self.sent.contains_key(&conn) {
            return Turn::Go;
        }
        if self.waiting.insert(conn) {
            // Idle until now: no credit banked beyond a quantum below the connections that
            // are busy (waiting or sending; one that was just sending is not idle, and its
            // count lags by what the others are sending now).
            let floor = self
                .waiting
                .iter()
                .chain(self.wire.iter().map(|(h, _)| h))
                .filter(|&&c| c != conn)
                .filter_map(|c| self.sent.get(c))
                .copied()
                .min();
            if let Some(floor) = floor {
                let mine = self.sent.get_mut(&conn).expect("checked");
                *mine = (*mine).max(floor.saturating_sub(QUANTUM));
            }
        }
        if self.wire.iter().any(|&(h, _)| h == conn) {
            self.waiting.remove(&conn);
            return Turn::Go;
        }
        let limit = self.hold_limit();
        if self.wire.len() >= self.holders {
            // Full; a holder whose time is up makes room.
            let expired = self
                .wire
                .iter()
                .position(|&(_, since)| now >= since + limit);
            let Some(_) = expired else {
                let until = self.wire.iter().map(|&(_, since)| since + limit).min();
                return Turn::Wait(until);
            };
        }
        let floor = self
            .waiting
            .iter()
            .filter_map(|c| self.sent.get(c))
            .copied()
            .min()
            .unwrap_or(0);
        if self.sent[&conn] <= floor {
            self.account(now);
            self.waiting.remove(&conn);
            if self.wire.len() >= self.holders {
                if let Some(i) = self
                    .wire
                    .iter()
                    .position(|&(_, since)| now >= since + limit)
                {
                    self.wire.remove(i);
                }
            }
            self.wire.push((conn, now));
            if let Some(at) = self.idle_since.take() {
                self.idle_total += now.saturating_duration_since(at);
            }
            Turn::Go
        } else {
            Turn::Wait(None)
        }
    }

    /// `conn` got the wire but sends nothing after all (its piece was cancelled meanwhile, or
    /// shed): the wire is free, and the hold average is not dragged down by a non-send.
    pub fn give_back(&mut self, conn: ConnId, now: Instant) {
        if let Some(i) = self.wire.iter().position(|&(h, _)| h == conn) {
            self.account(now);
            self.wire.remove(i);
            if self.waiting.is_empty() && self.wire.is_empty() {
                self.idle_since = Some(now);
            }
        }
    }

    /// `conn` stopped waiting without sending (its connection ended, or it gave up waiting).
    pub fn abandon(&mut self, conn: ConnId) {
        self.waiting.remove(&conn);
    }

    /// Whether a connection other than `conn` waits for the wire (if not, the holder need not
    /// wait for its queue to drain before it goes on).
    pub fn others_waiting(&self, conn: ConnId) -> bool {
        self.waiting.iter().any(|&c| c != conn)
    }

    /// `conn` sent a piece of `len` bytes and hands the wire on (if it still held it).
    pub fn done(&mut self, conn: ConnId, len: u64, now: Instant) {
        if let Some(s) = self.sent.get_mut(&conn) {
            *s += len;
        }
        if let Some(i) = self.wire.iter().position(|&(h, _)| h == conn) {
            self.account(now);
            let (_, since) = self.wire.remove(i);
            let took = now.saturating_duration_since(since).min(HOLD_MAX);
            self.hold = (self.hold * 7 + took) / 8;
            if self.waiting.is_empty() && self.wire.is_empty() {
                self.idle_since = Some(now);
            }
        }
    }

    fn account(&mut self, now: Instant) {
        if let Some(at) = self.held.1 {
            self.held.0 += self.wire.len() as f64 * now.saturating_duration_since(at).as_secs_f64();
        }
        self.held.1 = Some(now);
    }

    /// Holder-seconds so far (the time-weighted number of connections on the wire).
    pub fn held_s(&self) -> f64 {
        self.held.0
    }

    /// Moving average of how long a holder keeps the wire.
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// Total time the wire was free with nobody waiting, between two pieces.
    pub fn idle_total(&self) -> Duration {
        self.idle_total
    }

    #[cfg(test)]
    fn holder(&self) -> Option<ConnId> {
        assert!(self.wire.len() <= 1);
        self.wire.first().map(|&(h, _)| h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_given_back_frees_the_wire_and_leaves_the_hold_alone() {
        let mut f = FairShare::new(1);
        for c in 1..=3 {
            f.open(c);
        }
        let t = Instant::now();
        assert_eq!(f.want(1, t), Turn::Go);
        f.done(1, 512 * 1024, t + Duration::from_millis(90));
        let hold = f.hold();
        assert_eq!(f.want(2, t + Duration::from_millis(100)), Turn::Go);
        assert!(matches!(
            f.want(3, t + Duration::from_millis(100)),
            Turn::Wait(_)
        ));
        f.give_back(2, t + Duration::from_millis(101));
        assert_eq!(f.hold(), hold, "a turn given back is not a hold");
        assert_eq!(f.want(3, t + Duration::from_millis(101)), Turn::Go);
    }

    #[test]
    fn only_a_leecher_sheds_and_only_once_what_waited_and_others_hold() {
        let long = SHED_AFTER;
        let short = SHED_AFTER - Duration::from_millis(1);
        assert!(shed(false, long, 1, false));
        assert!(
            !shed(true, long, 15, false),
            "an origin's initial seeding decides"
        );
        assert!(
            !shed(false, short, 15, false),
            "a round of HOLDERS is not a backlog"
        );
        assert!(!shed(false, long, 0, false), "nobody else to take it from");
        assert!(!shed(false, long, 15, true), "asked again: served");
    }
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    const PIECE: u64 = 512 * 1024;

    #[test]
    fn one_piece_at_a_time_least_served_first() {
        let t = Instant::now();
        let mut f = FairShare::new(1);
        f.open(1);
        f.open(2);
        assert_eq!(f.want(1, t), Turn::Go);
        // 1 holds the wire: 2 waits until 1 is done or its time is up.
        assert!(matches!(f.want(2, t), Turn::Wait(Some(_))));
        assert!(f.others_waiting(1));
        f.done(1, PIECE, t + Duration::from_millis(80));
        // 1 wants again, but 2 is less served: 2 goes first.
        assert_eq!(f.want(1, t + Duration::from_millis(80)), Turn::Wait(None));
        assert_eq!(f.want(2, t + Duration::from_millis(80)), Turn::Go);
        f.done(2, PIECE, t + Duration::from_millis(160));
        assert_eq!(f.want(1, t + Duration::from_millis(160)), Turn::Go);
        f.done(1, PIECE, t + Duration::from_millis(240));
        // 2 has nothing more to send: 1 goes on alone.
        assert_eq!(f.want(1, t + Duration::from_millis(240)), Turn::Go);
        assert!(!f.others_waiting(1));
    }

    #[test]
    fn a_holder_that_does_not_hand_back_loses_the_wire() {
        let t = Instant::now();
        let mut f = FairShare::new(1);
        f.open(1);
        f.open(2);
        assert_eq!(f.want(1, t), Turn::Go);
        let Turn::Wait(Some(until)) = f.want(2, t) else {
            panic!("2 should wait for 1's time to be up");
        };
        assert!(until - t <= HOLD_MAX);
        assert_eq!(f.want(2, until), Turn::Go);
        assert_eq!(f.holder(), Some(2));
        // 1 finishes late: its bytes count, 2 keeps the wire.
        f.done(1, PIECE, until + Duration::from_millis(5));
        assert_eq!(f.holder(), Some(2));
    }

    #[test]
    fn a_closed_or_abandoning_waiter_does_not_block_the_others() {
        let t = Instant::now();
        let mut f = FairShare::new(1);
        for c in 1..=3 {
            f.open(c);
        }
        f.done(2, 4 * PIECE, t);
        f.done(3, 4 * PIECE, t);
        // 1 is least served and waits (while 2 holds), then goes away.
        assert_eq!(f.want(2, t), Turn::Go);
        assert!(matches!(f.want(1, t), Turn::Wait(_)));
        assert!(matches!(f.want(3, t), Turn::Wait(_)));
        f.done(2, PIECE, t);
        f.abandon(1);
        assert_eq!(f.want(3, t), Turn::Go);
        f.done(3, PIECE, t);
        assert!(matches!(f.want(1, t), Turn::Go));
        f.close(1);
        assert_eq!(f.holder(), None);
        assert_eq!(f.want(2, t), Turn::Go);
    }

    #[test]
    fn an_idle_connection_banks_no_credit() {
        let t = Instant::now();
        let mut f = FairShare::new(1);
        f.open(1);
        f.open(2);
        for _ in 0..20 {
            assert_eq!(f.want(1, t), Turn::Go);
            f.done(1, PIECE, t);
        }
        // 2 comes back after 10 MiB went to 1, while 1 has more to send: 2 may send at most
        // two quanta before 1 goes again.
        assert!(matches!(f.want(1, t), Turn::Go));
        f.done(1, PIECE, t);
        let mut run = 0;
        loop {
            assert!(matches!(f.want(1, t), Turn::Wait(_) | Turn::Go));
            if f.holder() == Some(1) {
                break;
            }
            assert_eq!(f.want(2, t), Turn::Go);
            f.done(2, PIECE, t);
            run += 1;
            assert!(run <= 5, "2 sent {run} pieces in a row");
        }
    }

    /// Random demand and random holding times, one and three holders: whenever the wire has
    /// room (or a holder's time is up) every connection waiting may go — nobody waits for
    /// nothing — at most `holders` connections hold the wire, and connections that always
    /// have pieces to send end within a couple of pieces of each other, whatever the others
    /// do.
    #[test]
    fn always_someone_may_send_and_backlogged_connections_share_evenly() {
        for holders in [1usize, 3] {
            for seed in 0..50 {
                // Holds of random length, some far too long: liveness only (a connection
                // whose receiver is slow gets less, as it should).
                random_demand(holders, seed, true);
                // Equal holds: the backlogged connections share evenly when they contend.
                random_demand(holders, seed, false);
            }
        }
    }

    fn random_demand(holders: usize, seed: u64, random_holds: bool) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut f = FairShare::new(holders);
        let n = rng.gen_range(2..12u64);
        let backlogged = rng.gen_range(2..=n);
        for c in 0..n {
            f.open(c);
        }
        let mut now = Instant::now();
        let mut got = vec![0u64; n as usize];
        // (connection, when it will be done): its own view, even after its time was up.
        let mut holding: Vec<(u64, Instant)> = Vec::new();
        for _ in 0..3000 {
            now += Duration::from_millis(rng.gen_range(0..30));
            holding.retain(|&(c, until)| {
                let due = now >= until;
                if due {
                    f.done(c, PIECE, now);
                    got[c as usize] += PIECE;
                }
                !due
            });
            let mut ready: Vec<u64> = (0..n)
                .filter(|&c| c < backlogged || rng.gen_bool(0.3))
                .filter(|&c| !holding.iter().any(|&(h, _)| h == c))
                .collect();
            // They ask in random order (connections race); everyone re-asks after each Go
            // (the caller notifies the waiters), until nothing changes.
            ready.shuffle(&mut rng);
            loop {
                let mut went = None;
                for &c in &ready {
                    match f.want(c, now) {
                        Turn::Go => {
                            went = Some(c);
                            break;
                        }
                        Turn::Wait(Some(u)) => {
                            assert!(u > now && u - now <= HOLD_MAX, "seed {seed}")
                        }
                        Turn::Wait(None) => {}
                    }
                }
                let Some(c) = went else { break };
                ready.retain(|&r| r != c);
                let took = match random_holds {
                    true if rng.gen_bool(0.05) => Duration::from_secs(3),
                    true => Duration::from_millis(rng.gen_range(1..100)),
                    false => Duration::from_millis(50),
                };
                holding.push((c, now + took));
                assert!(
                    f.wire.len() <= holders,
                    "seed {seed}: {} on the wire",
                    f.wire.len()
                );
            }
            if !ready.is_empty() {
                let limit = f.hold_limit();
                assert!(
                    f.wire.len() == holders && f.wire.iter().all(|&(_, t)| now < t + limit),
                    "seed {seed}: room on the wire, {ready:?} waiting, nobody went"
                );
            }
            for &c in ready.iter().filter(|&&c| c >= backlogged) {
                f.abandon(c);
            }
        }
        // Shares are enforced only when the backlogged connections alone fill the wire
        // (otherwise each sends whenever it is ready, and nobody waits for anyone). With one
        // holder every turn is a choice, so shares stay within a couple of pieces; with more,
        // a lone waiter takes whatever slot frees first (no choice to make), and shares
        // drift only with the holders' timing.
        if !random_holds && backlogged as usize > holders {
            let b = &got[..backlogged as usize];
            let (lo, hi) = (*b.iter().min().unwrap(), *b.iter().max().unwrap());
            if holders == 1 {
                assert!(hi - lo <= 2 * QUANTUM + 2 * PIECE, "seed {seed}: {got:?}");
            } else {
                assert!(lo >= hi - hi / 10, "holders {holders} seed {seed}: {got:?}");
            }
        }
    }
}

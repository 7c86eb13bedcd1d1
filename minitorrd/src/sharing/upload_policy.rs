//! Initial seeding (issue #11, item 2), as a pure data structure: a seeder serving several
//! downloaders of one file sends each piece once while pieces nobody else has yet remain, so in
//! a crowd its upload goes into new pieces and the leechers trade the rest among themselves.
//!
//! One policy per shared file (it lives in `SharedFile`), consulted by every connection serving
//! it before a piece goes out ([`UploadPolicy::decide`]). The policy knows, per connection,
//! which pieces that downloader holds or is receiving: what we served it, and what it told us
//! it verified (downloaders send `Have` to every peer they download from, pieces they got from
//! anyone). A piece is *in the swarm* when some other live connection holds or is receiving it.
//!
//! * **Serve** a piece not in the swarm; a piece this connection holds already (a re-request
//!   after a bad transfer); anything when this is the only connection (nobody else to get it
//!   from); once every piece is in the swarm (initial seeding is over until a crowd leaves and
//!   pieces are absent again), a piece among the rarest there (held by at most
//!   [`RAREST_SLACK`] more live connections than the rarest piece); and a piece this
//!   connection was told to get elsewhere at least [`REASK_AFTER`] ago (no stall, whatever
//!   the swarm does: a piece that nobody passes on comes at most that much later).
//! * Otherwise answer **Elsewhere** (`PeerMsg::Elsewhere`): the downloader releases the piece,
//!   does not ask us for it for a while, and takes it from the leecher that has it (holder
//!   events make leechers connect to each other within a second, and they announce it with
//!   `Have`).
//! * When a piece enters the swarm while initial seeding lasts, [`Decision::ServeNew`] tells
//!   the caller to announce it: every other connection sends its downloader `Elsewhere` unasked,
//!   so downloaders stop asking for it before they waste a request on it.
//!
//! A piece counts as in the swarm from the moment we *decide* to serve it, not when its last
//! byte left: with a crowd of downloaders picking among the same rarest pieces, two requests
//! for one piece regularly arrive while its first copy is still on the wire (that was the main
//! source of duplicate copies, measured: docs/BENCHMARKS.md).
//!
//! Only an origin seeder applies it (one that had the whole file when it started sharing); a
//! downloader that completed serves what it has: its pieces came from the swarm.
//! Memory: a bit per piece and connection, a counter per piece, and at most
//! [`MAX_DEFERRED_PER_CONN`] remembered deferrals per connection. A downloader that claims
//! pieces it lacks can only make the others wait [`REASK_AFTER`] for those pieces.
//!
//! A piece in the swarm is not served before the downloader asked again (there used to be an
//! exception for pieces in the swarm for [`REASK_AFTER`]: with 16 leechers, whose uplinks are
//! busy, it sent ~10 pieces twice during the first copy, and the first copy is what the
//! crowd waits for).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A connection serving this file (ids never reused).
pub type ConnId = u64;

/// Deferrals remembered per connection at most (beyond that, it is simply served).
pub const MAX_DEFERRED_PER_CONN: usize = 256;

/// A connection told to get a piece elsewhere is served it when it asks again this long after
/// (long enough for the other holder to receive and pass it on in a crowd of 16 at 50 Mbit/s:
/// a 512 KiB piece takes ~1.3 s each way).
pub const REASK_AFTER: Duration = Duration::from_secs(3);

/// After the first copy, a piece held by at most this many more live connections than the
/// rarest piece is served at once; others get `Elsewhere` first (the leechers have them).
pub const RAREST_SLACK: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Serve,
    /// Serve; the piece just entered the swarm while initial seeding lasts: tell the other
    /// connections it is taken ([`UploadPolicy::decide`]).
    ServeNew,
    Elsewhere,
}

impl Decision {
    pub fn serve(self) -> bool {
        self != Decision::Elsewhere
    }
}

#[derive(Debug, Default)]
struct Conn {
    /// Pieces this downloader holds or is receiving from us (bit set).
    has: Vec<u64>,
    /// Pieces it was told to get elsewhere, and when first.
    deferred: HashMap<u32, Instant>,
}

impl Conn {
    fn get(&self, piece: u32) -> bool {
        self.has
            .get(piece as usize / 64)
            .is_some_and(|w| w & (1 << (piece % 64)) != 0)
    }

    /// Set the bit; true if it was not set.
    fn set(&mut self, piece: u32) -> bool {
        let w = &mut self.has[piece as usize / 64];
        let bit = 1 << (piece % 64);
        let fresh = *w & bit == 0;
        *w |= bit;
        fresh
    }
}

#[derive(Debug)]
pub struct UploadPolicy {
    pieces: u32,
    /// Times each piece went out (saturating).
    sent: Vec<u8>,
    /// Live connections holding or receiving each piece (u16::MAX is not reachable:
    /// connections are bounded far below it).
    holders: Vec<u16>,
    /// Pieces no live connection holds or receives: initial seeding lasts while there are
    /// any. When a crowd has left, this is every piece again, so the next crowd is seeded the
    /// same way.
    absent: u32,
    /// Pieces whose sending never completed yet.
    never_sent: u32,
    /// Pieces decided as new (`ServeNew`) whose first copy is not out yet, and to whom: the
    /// rarest rule waits for them. Once every piece is *decided* the last new ones still wait
    /// for the wire (a connection each, up to a second of the uplink with 16 downloaders);
    /// serving second copies meanwhile delayed the first copy (measured: 14–25 such pieces
    /// per run, docs/BENCHMARKS.md).
    pending_new: HashMap<u32, ConnId>,
    conns: HashMap<ConnId, Conn>,
    next_id: ConnId,
    /// Pieces served, by reason ([`Why`]), for the log.
    why: [u32; 5],
}

/// Why a piece was served (counted for the log: which rule lets duplicates through).
#[derive(Debug, Clone, Copy)]
enum Why {
    /// Nobody else holds or receives it.
    New,
    /// Every piece is in the swarm and this one is among the rarest there.
    Rarest,
    /// The only connection.
    Lone,
    /// Asked again `REASK_AFTER` after an `Elsewhere`.
    Reask,
    /// Too many deferrals remembered for this connection.
    Full,
}

impl UploadPolicy {
    pub fn new(pieces: u32) -> UploadPolicy {
        UploadPolicy {
            pieces,
            sent: vec![0; pieces as usize],
            holders: vec![0; pieces as usize],
            absent: pieces,
            never_sent: pieces,
            pending_new: HashMap::new(),
            conns: HashMap::new(),
            next_id: 0,
            why: [0; 5],
        }
    }

    /// A connection starts being served.
    pub fn open(&mut self) -> ConnId {
        self.next_id += 1;
        let words = (self.pieces as usize).div_ceil(64);
        self.conns.insert(
            self.next_id,
            Conn {
                has: vec![0; words],
                deferred: HashMap::new(),
            },
        );
        self.next_id
    }

    /// A connection ended: what it held is no longer in the swarm as far as we know.
    pub fn close(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.pending_new.retain(|_, &mut to| to != conn);
        if self.conns.is_empty() {
            // The crowd is gone: count the next one's copies afresh.
            self.sent.fill(0);
            self.never_sent = self.pieces;
        }
        for (w, word) in c.has.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let h = &mut self.holders[w * 64 + b];
                *h -= 1;
                if *h == 0 {
                    self.absent += 1;
                }
            }
        }
    }

    /// Initial seeding lasts while a piece is absent from the swarm or a new piece's first
    /// copy is still waiting for the wire.
    pub fn initial_seeding(&self) -> bool {
        self.absent > 0 || !self.pending_new.is_empty()
    }

    /// One more live holder of `piece`; true if it had none.
    fn add_holder(&mut self, piece: u32) -> bool {
        let h = &mut self.holders[piece as usize];
        *h += 1;
        if *h == 1 {
            self.absent -= 1;
            return true;
        }
        false
    }

    /// Live connections holding or receiving `piece`.
    pub fn holders(&self, piece: u32) -> u16 {
        self.holders.get(piece as usize).copied().unwrap_or(0)
    }

    /// Live holders of the rarest piece.
    fn rarest(&self) -> u16 {
        self.holders.iter().copied().min().unwrap_or(0)
    }

    /// The downloader on `conn` says it verified `piece` (from anyone).
    pub fn peer_has(&mut self, conn: ConnId, piece: u32, _now: Instant) {
        if piece >= self.pieces {
            return;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.deferred.remove(&piece);
            if c.set(piece) {
                self.add_holder(piece);
            }
        }
        // A new piece decided for `conn` that it verified from someone else (it cancelled
        // ours while it waited for the wire): its first copy is out, ours will not be sent.
        if self.pending_new.get(&piece) == Some(&conn) {
            self.pending_new.remove(&piece);
        }
    }

    /// May `conn` get `piece` from us now? A `Serve` counts the piece as on its way to `conn`.
    pub fn decide(&mut self, conn: ConnId, piece: u32, now: Instant) -> Decision {
        if piece >= self.pieces || !self.conns.contains_key(&conn) {
            return Decision::Serve;
        }
        let i = piece as usize;
        let c = &self.conns[&conn];
        // It holds it already: a re-request after a bad transfer.
        if c.get(piece) {
            return Decision::Serve;
        }
        let others = self.holders[i];
        let why = if others == 0 {
            Some(Why::New)
        } else if self.conns.len() <= 1 {
            Some(Why::Lone)
        } else if !self.initial_seeding() && others <= self.rarest() + RAREST_SLACK {
            Some(Why::Rarest)
        } else {
            let c = self.conns.get_mut(&conn).expect("checked");
            match c.deferred.get(&piece) {
                Some(&at) if now.saturating_duration_since(at) >= REASK_AFTER => Some(Why::Reask),
                Some(_) => None,
                None if c.deferred.len() >= MAX_DEFERRED_PER_CONN => Some(Why::Full),
                None => {
                    c.deferred.insert(piece, now);
                    None
                }
            }
        };
        let serve = why.is_some();
        if let Some(why) = why {
            self.why[why as usize] = self.why[why as usize].saturating_add(1);
        }
        if !serve {
            return Decision::Elsewhere;
        }
        let c = self.conns.get_mut(&conn).expect("checked");
        c.deferred.remove(&piece);
        if c.set(piece) && self.add_holder(piece) && self.conns.len() > 1 {
            self.pending_new.insert(piece, conn);
            return Decision::ServeNew;
        }
        Decision::Serve
    }

    /// `piece` went out to `conn` (whole). True when that was the last piece never sent
    /// before (the seeder's first full copy is out).
    pub fn sent(&mut self, conn: ConnId, piece: u32) -> bool {
        let Some(n) = self.sent.get_mut(piece as usize) else {
            return false;
        };
        if self.pending_new.get(&piece) == Some(&conn) {
            self.pending_new.remove(&piece);
        }
        *n = n.saturating_add(1);
        if *n == 1 {
            self.never_sent -= 1;
            return self.never_sent == 0;
        }
        false
    }

    /// Pieces served so far because: new, rarest after the first copy, lone connection,
    /// asked again, deferrals full (for the log).
    pub fn served_why(&self) -> [u32; 5] {
        self.why
    }

    /// Pieces sent n times, for n = 0, 1, 2, 3 and more (for the log at the end of initial
    /// seeding and of each connection).
    pub fn copies_histogram(&self) -> [u32; 4] {
        let mut h = [0; 4];
        for &n in &self.sent {
            h[usize::from(n.min(3))] += 1;
        }
        h
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        let absent = self.holders.iter().filter(|&&h| h == 0).count() as u32;
        assert_eq!(absent, self.absent);
        let never = self.sent.iter().filter(|&&n| n == 0).count() as u32;
        assert_eq!(never, self.never_sent);
        for (&piece, to) in &self.pending_new {
            assert!(
                self.conns[to].get(piece),
                "pending piece {piece} is on its way to {to}"
            );
        }
        for i in 0..self.pieces {
            let n = self.conns.values().filter(|c| c.get(i)).count();
            assert_eq!(n, usize::from(self.holders[i as usize]), "piece {i}");
        }
        assert!(self
            .conns
            .values()
            .all(|c| c.deferred.len() <= MAX_DEFERRED_PER_CONN));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    #[test]
    fn a_piece_in_the_swarm_goes_elsewhere_until_asked_again_later() {
        let t = Instant::now();
        let mut p = UploadPolicy::new(3);
        let (a, b) = (p.open(), p.open());
        assert_eq!(p.decide(a, 0, t), Decision::ServeNew);
        // Still on its way to a (not even sent yet): b gets it elsewhere.
        assert_eq!(p.decide(b, 0, t), Decision::Elsewhere);
        assert!(p.decide(b, 1, t).serve());
        p.sent(b, 1);
        // Asked again soon after: still elsewhere; after REASK_AFTER: served (no stall).
        assert_eq!(
            p.decide(b, 0, t + Duration::from_millis(900)),
            Decision::Elsewhere
        );
        assert!(p.decide(b, 0, t + REASK_AFTER).serve());
        // A re-request by a connection that has it (a bad transfer) is served.
        assert!(p.decide(a, 0, t).serve());
        p.check_invariants();
    }

    #[test]
    fn pieces_a_downloader_announces_are_in_the_swarm() {
        let t = Instant::now();
        let mut p = UploadPolicy::new(4);
        let (a, b) = (p.open(), p.open());
        // a got piece 2 from someone else and says so.
        p.peer_has(a, 2, t);
        assert_eq!(p.decide(b, 2, t), Decision::Elsewhere);
        // b announces it too (it got it from a): its pending deferral is forgotten.
        p.peer_has(b, 2, t);
        p.check_invariants();
        // Out-of-range announcements are ignored.
        p.peer_has(a, 99, t);
        p.check_invariants();
    }

    #[test]
    fn once_every_piece_went_out_the_rarest_are_served() {
        let t = Instant::now();
        let mut p = UploadPolicy::new(2);
        let (a, b) = (p.open(), p.open());
        assert!(p.decide(a, 0, t).serve());
        assert!(p.decide(a, 1, t).serve());
        p.sent(a, 0);
        p.sent(a, 1);
        assert!(!p.initial_seeding());
        assert!(p.decide(b, 0, t).serve());
        assert!(p.decide(b, 1, t).serve());
        p.check_invariants();
    }

    /// Every piece is decided but the last new ones still wait for the wire: second copies
    /// wait for them (they would delay the first copy the crowd waits for), and a connection
    /// that closes before sending its new piece does not hold the rule up.
    #[test]
    fn second_copies_wait_until_the_first_copy_is_out() {
        let t = Instant::now();
        let mut p = UploadPolicy::new(3);
        let (a, b, c) = (p.open(), p.open(), p.open());
        assert_eq!(p.decide(a, 0, t), Decision::ServeNew);
        assert_eq!(p.decide(b, 1, t), Decision::ServeNew);
        assert_eq!(p.decide(c, 2, t), Decision::ServeNew);
        p.sent(a, 0);
        p.sent(b, 1);
        assert!(p.initial_seeding(), "piece 2 is decided, not sent");
        assert_eq!(p.decide(a, 1, t), Decision::Elsewhere);
        assert!(p.sent(c, 2), "the first copy is out");
        assert!(!p.initial_seeding());
        assert!(p.decide(c, 0, t).serve());
        p.check_invariants();

        let mut p = UploadPolicy::new(2);
        let (a, b, c) = (p.open(), p.open(), p.open());
        assert_eq!(p.decide(a, 0, t), Decision::ServeNew);
        assert_eq!(p.decide(b, 1, t), Decision::ServeNew);
        p.sent(a, 0);
        assert!(p.initial_seeding());
        p.close(b);
        // Piece 1 is absent again: initial seeding goes on, and it is new for c.
        assert!(p.initial_seeding());
        assert_eq!(p.decide(c, 1, t), Decision::ServeNew);
        p.sent(c, 1);
        assert!(!p.initial_seeding());
        p.check_invariants();
    }

    /// A new piece decided for a connection that then got it elsewhere (and cancelled ours
    /// while it waited for the wire) does not hold initial seeding open.
    #[test]
    fn a_new_piece_cancelled_and_verified_elsewhere_ends_its_wait() {
        let t = Instant::now();
        let mut p = UploadPolicy::new(2);
        let (a, b) = (p.open(), p.open());
        assert_eq!(p.decide(a, 0, t), Decision::ServeNew);
        assert_eq!(p.decide(b, 1, t), Decision::ServeNew);
        p.sent(a, 0);
        assert!(p.initial_seeding());
        p.peer_has(b, 1, t);
        assert!(
            !p.initial_seeding(),
            "piece 1 reached b: the first copy is out"
        );
        p.check_invariants();
    }

    /// After the first copy, a piece many hold is sent elsewhere first (and served when asked
    /// again), one among the rarest at once.
    #[test]
    fn after_the_first_copy_common_pieces_go_elsewhere_first() {
        let t = Instant::now();
        let mut p = UploadPolicy::new(2);
        let conns: Vec<ConnId> = (0..5).map(|_| p.open()).collect();
        // Piece 0 is everywhere but on the last connection; piece 1 on one connection only.
        for &c in &conns[..4] {
            p.peer_has(c, 0, t);
        }
        p.peer_has(conns[0], 1, t);
        assert!(!p.initial_seeding());
        let last = conns[4];
        assert_eq!(p.decide(last, 0, t), Decision::Elsewhere);
        assert!(p.decide(last, 1, t).serve());
        assert_eq!(
            p.decide(last, 0, t + Duration::from_millis(500)),
            Decision::Elsewhere
        );
        assert!(p.decide(last, 0, t + REASK_AFTER).serve());
        p.check_invariants();
    }

    /// A piece in the swarm for a long time is still sent elsewhere until its downloader asks
    /// again (there is no "long in the swarm" exception any more).
    #[test]
    fn a_piece_long_in_the_swarm_is_not_served_before_it_is_asked_again() {
        let t = Instant::now();
        let mut p = UploadPolicy::new(3);
        let (a, b) = (p.open(), p.open());
        assert_eq!(p.decide(a, 0, t), Decision::ServeNew);
        let later = t + 10 * REASK_AFTER;
        assert_eq!(p.decide(b, 0, later), Decision::Elsewhere);
        assert!(p.decide(b, 0, later + REASK_AFTER).serve());
        p.check_invariants();
    }

    #[test]
    fn when_a_crowd_has_left_the_next_one_is_seeded_afresh() {
        let t = Instant::now();
        let mut p = UploadPolicy::new(2);
        let (a, b) = (p.open(), p.open());
        p.decide(a, 0, t);
        p.decide(b, 1, t);
        p.sent(a, 0);
        p.sent(b, 1);
        assert!(!p.initial_seeding());
        p.close(a);
        p.close(b);
        assert!(p.initial_seeding());
        let (c, d) = (p.open(), p.open());
        assert!(p.decide(c, 0, t).serve());
        assert_eq!(p.decide(d, 0, t), Decision::Elsewhere);
        p.check_invariants();
    }

    #[test]
    fn a_lone_downloader_or_a_departed_holder_is_served() {
        let t = Instant::now();
        let mut p = UploadPolicy::new(3);
        let a = p.open();
        assert!(p.decide(a, 0, t).serve());
        let b = p.open();
        p.close(a);
        // a is gone: piece 0 may be nowhere else.
        assert!(p.decide(b, 0, t).serve());
        let c = p.open();
        p.close(b);
        // c is alone.
        assert!(p.decide(c, 0, t).serve());
        p.check_invariants();
    }

    /// Random crowds over random time: a connection that keeps asking for a piece gets it at
    /// most REASK_AFTER after it was first refused, and the bookkeeping stays consistent.
    #[test]
    fn no_piece_is_refused_for_longer_than_reask_after() {
        for seed in 0..100 {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = rng.gen_range(1..40);
            let mut p = UploadPolicy::new(n);
            let mut now = Instant::now();
            let mut conns: Vec<ConnId> = (0..rng.gen_range(1..6)).map(|_| p.open()).collect();
            let mut refused: HashMap<(ConnId, u32), Instant> = HashMap::new();
            for _ in 0..500 {
                now += Duration::from_millis(rng.gen_range(0..400));
                match rng.gen_range(0..12) {
                    0 if conns.len() > 1 => {
                        let c = conns.remove(rng.gen_range(0..conns.len()));
                        p.close(c);
                    }
                    1 => conns.push(p.open()),
                    2 if !conns.is_empty() => {
                        let c = conns[rng.gen_range(0..conns.len())];
                        p.peer_has(c, rng.gen_range(0..n + 2), now);
                    }
                    _ if !conns.is_empty() => {
                        let c = conns[rng.gen_range(0..conns.len())];
                        let piece = rng.gen_range(0..n);
                        match p.decide(c, piece, now) {
                            Decision::Serve | Decision::ServeNew => {
                                p.sent(c, piece);
                                refused.remove(&(c, piece));
                            }
                            Decision::Elsewhere => {
                                let first = *refused.entry((c, piece)).or_insert(now);
                                assert!(now - first < REASK_AFTER, "seed {seed}");
                            }
                        }
                    }
                    _ => {}
                }
                p.check_invariants();
            }
        }
    }

    /// A crowd of 16 downloaders and a seeder that sends one piece per 100 ms tick; a piece
    /// reaches its receiver 1.3 s after it was served and every other downloader 1.5 s later
    /// (they trade). Each downloader asks the seeder, round-robin, for one of the first 32
    /// pieces it lacks, skipping pieces the seeder announced as taken in the last 3 s (what
    /// the downloader's `ELSEWHERE_COOLDOWN` does). The seeder sends about one copy.
    #[test]
    fn in_a_crowd_the_seeder_sends_about_one_copy() {
        let n = 128u32;
        let mut rng = StdRng::seed_from_u64(9);
        let mut p = UploadPolicy::new(n);
        let conns: Vec<ConnId> = (0..16).map(|_| p.open()).collect();
        let mut have: Vec<HashSet<u32>> = vec![HashSet::new(); conns.len()];
        // (tick it arrives, receiver or None for everyone, piece)
        let mut arriving: Vec<(u32, Option<usize>, u32)> = Vec::new();
        let mut taken: HashMap<u32, u32> = HashMap::new(); // piece -> tick announced
        let mut sent = 0;
        let t0 = Instant::now();
        let mut tick = 0u32;
        let mut turn = 0usize;
        while have.iter().any(|h| h.len() < n as usize) {
            tick += 1;
            assert!(tick < 10_000, "stalled");
            let now = t0 + Duration::from_millis(100 * u64::from(tick));
            for &(_, who, piece) in arriving.iter().filter(|a| a.0 == tick) {
                for k in 0..conns.len() {
                    if who.is_none_or(|w| w == k) && have[k].insert(piece) {
                        p.peer_has(conns[k], piece, now);
                    }
                }
            }
            arriving.retain(|a| a.0 > tick);
            // The seeder's uplink: one piece per tick, to the first downloader in turn whose
            // request it serves.
            for _ in 0..conns.len() {
                let k = turn % conns.len();
                turn += 1;
                let want: Vec<u32> = (0..n)
                    .filter(|i| !have[k].contains(i))
                    .filter(|i| taken.get(i).is_none_or(|&at| tick >= at + 30))
                    .take(32)
                    .collect();
                if want.is_empty() {
                    continue;
                }
                let piece = want[rng.gen_range(0..want.len())];
                match p.decide(conns[k], piece, now) {
                    Decision::Elsewhere => {
                        taken.entry(piece).or_insert(tick);
                    }
                    d => {
                        if d == Decision::ServeNew {
                            taken.insert(piece, tick);
                        }
                        p.sent(conns[k], piece);
                        sent += 1;
                        arriving.push((tick + 13, Some(k), piece));
                        arriving.push((tick + 28, None, piece));
                        break;
                    }
                }
            }
            p.check_invariants();
        }
        assert!(sent <= n + n / 4, "sent {sent} pieces of {n}");
    }
}

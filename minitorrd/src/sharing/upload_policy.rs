//! Initial seeding (issue #11, item 2), as a pure data structure: a seeder serving several
//! downloaders of one file sends each piece once while pieces nobody else has yet remain, so in
//! a crowd its upload goes into new pieces and the leechers trade the rest among themselves.
//!
//! One policy per shared file (it lives in `SharedFile`), consulted by every connection serving
//! it before a piece goes out ([`UploadPolicy::decide`]):
//!
//! * **Serve** a piece never sent before; or when every piece has been sent at least once
//!   (initial seeding is over); or when the connection it went to is gone (it may be nowhere
//!   else); or when it went to this same connection (a re-request after a bad transfer); or
//!   when this connection was already told once to get it elsewhere (no stall, whatever the
//!   swarm does: at worst one piece comes a second later); or when this is the only connection
//!   (nobody else to get it from).
//! * Otherwise answer **Elsewhere** (`PeerMsg::Elsewhere`): the downloader releases the piece,
//!   does not ask us for it for a second, and takes it from the leecher that has it (holder
//!   events make leechers connect to each other within a second, and they announce it with
//!   `Have`).
//!
//! Only a complete seeder applies it (a partial one serves what it has: its pieces came from
//! somewhere and are probably already elsewhere too). Memory: a byte and a connection id per
//! piece, plus at most [`MAX_DEFERRED_PER_CONN`] remembered deferrals per connection.

use std::collections::{HashMap, HashSet};

/// A connection serving this file (ids never reused).
pub type ConnId = u64;

/// Deferrals remembered per connection at most (beyond that, it is simply served).
pub const MAX_DEFERRED_PER_CONN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Serve,
    Elsewhere,
}

#[derive(Debug)]
pub struct UploadPolicy {
    /// Times each piece went out (saturating).
    sent: Vec<u8>,
    /// The first connection each piece went to.
    first_to: Vec<Option<ConnId>>,
    /// Pieces never sent yet.
    unsent: u32,
    live: HashSet<ConnId>,
    /// Pieces each connection was told to get elsewhere.
    deferred: HashMap<ConnId, HashSet<u32>>,
    next_id: ConnId,
}

impl UploadPolicy {
    pub fn new(pieces: u32) -> UploadPolicy {
        UploadPolicy {
            sent: vec![0; pieces as usize],
            first_to: vec![None; pieces as usize],
            unsent: pieces,
            live: HashSet::new(),
            deferred: HashMap::new(),
            next_id: 0,
        }
    }

    /// A connection starts being served.
    pub fn open(&mut self) -> ConnId {
        self.next_id += 1;
        self.live.insert(self.next_id);
        self.next_id
    }

    /// A connection ended.
    pub fn close(&mut self, conn: ConnId) {
        self.live.remove(&conn);
        self.deferred.remove(&conn);
    }

    pub fn initial_seeding(&self) -> bool {
        self.unsent > 0
    }

    /// May `conn` get `piece` from us now?
    pub fn decide(&mut self, conn: ConnId, piece: u32) -> Decision {
        let i = piece as usize;
        if i >= self.sent.len() || self.sent[i] == 0 || self.unsent == 0 || self.live.len() <= 1 {
            return Decision::Serve;
        }
        match self.first_to[i] {
            Some(c) if c == conn || !self.live.contains(&c) => return Decision::Serve,
            _ => {}
        }
        let mine = self.deferred.entry(conn).or_default();
        if mine.contains(&piece) || mine.len() >= MAX_DEFERRED_PER_CONN {
            return Decision::Serve;
        }
        mine.insert(piece);
        Decision::Elsewhere
    }

    /// `piece` went out to `conn`.
    pub fn sent(&mut self, conn: ConnId, piece: u32) {
        let i = piece as usize;
        let Some(n) = self.sent.get_mut(i) else {
            return;
        };
        if *n == 0 {
            self.unsent -= 1;
            self.first_to[i] = Some(conn);
        }
        *n = n.saturating_add(1);
        if let Some(d) = self.deferred.get_mut(&conn) {
            d.remove(&piece);
        }
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        let unsent = self.sent.iter().filter(|&&n| n == 0).count() as u32;
        assert_eq!(unsent, self.unsent);
        for (n, f) in self.sent.iter().zip(&self.first_to) {
            assert_eq!(*n == 0, f.is_none());
        }
        assert!(self.deferred.keys().all(|c| self.live.contains(c)));
        assert!(self
            .deferred
            .values()
            .all(|d| d.len() <= MAX_DEFERRED_PER_CONN));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn a_piece_already_sent_goes_elsewhere_while_unsent_pieces_remain() {
        let mut p = UploadPolicy::new(3);
        let (a, b) = (p.open(), p.open());
        assert_eq!(p.decide(a, 0), Decision::Serve);
        p.sent(a, 0);
        assert_eq!(p.decide(b, 0), Decision::Elsewhere);
        assert_eq!(p.decide(b, 1), Decision::Serve);
        p.sent(b, 1);
        // Asked again after being told once: served (no stall).
        assert_eq!(p.decide(b, 0), Decision::Serve);
        p.sent(b, 0);
        // A re-request by the same connection is served.
        assert_eq!(p.decide(a, 0), Decision::Serve);
        p.check_invariants();
    }

    #[test]
    fn once_every_piece_went_out_everything_is_served() {
        let mut p = UploadPolicy::new(2);
        let (a, b) = (p.open(), p.open());
        p.sent(a, 0);
        p.sent(a, 1);
        assert!(!p.initial_seeding());
        assert_eq!(p.decide(b, 0), Decision::Serve);
        assert_eq!(p.decide(b, 1), Decision::Serve);
    }

    #[test]
    fn a_lone_downloader_or_a_departed_recipient_is_served() {
        let mut p = UploadPolicy::new(3);
        let a = p.open();
        p.sent(a, 0);
        let b = p.open();
        p.close(a);
        // a is gone: piece 0 may be nowhere else.
        assert_eq!(p.decide(b, 0), Decision::Serve);
        p.sent(b, 0);
        let c = p.open();
        p.close(b);
        // c is alone.
        assert_eq!(p.decide(c, 0), Decision::Serve);
        p.check_invariants();
    }

    /// Random crowds: a piece is sent at most twice per connection that asked for it while
    /// initial seeding lasts, and a connection asking the same piece twice always gets it.
    #[test]
    fn no_piece_is_refused_twice_to_the_same_connection() {
        for seed in 0..100 {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = rng.gen_range(1..40);
            let mut p = UploadPolicy::new(n);
            let mut conns: Vec<ConnId> = (0..rng.gen_range(1..6)).map(|_| p.open()).collect();
            for _ in 0..500 {
                match rng.gen_range(0..10) {
                    0 if conns.len() > 1 => {
                        let c = conns.remove(rng.gen_range(0..conns.len()));
                        p.close(c);
                    }
                    1 => conns.push(p.open()),
                    _ if !conns.is_empty() => {
                        let c = conns[rng.gen_range(0..conns.len())];
                        let piece = rng.gen_range(0..n);
                        if p.decide(c, piece) == Decision::Serve {
                            p.sent(c, piece);
                        } else {
                            assert_eq!(p.decide(c, piece), Decision::Serve, "seed {seed}");
                            p.sent(c, piece);
                        }
                    }
                    _ => {}
                }
                p.check_invariants();
            }
        }
    }

    #[test]
    fn in_a_crowd_the_seeder_sends_about_one_copy() {
        // 4 downloaders that each request pieces in random order, and get a deferred piece
        // from each other (here: instantly, once it went out to anyone).
        let n = 200u32;
        let mut rng = StdRng::seed_from_u64(9);
        let mut p = UploadPolicy::new(n);
        let conns: Vec<ConnId> = (0..4).map(|_| p.open()).collect();
        let mut have: Vec<HashSet<u32>> = vec![HashSet::new(); 4];
        let mut in_swarm: HashSet<u32> = HashSet::new();
        let mut sent = 0;
        while have.iter().any(|h| h.len() < n as usize) {
            for (k, &c) in conns.iter().enumerate() {
                // Leechers trade whatever is in the swarm; they ask the seeder for the rest.
                for &i in &in_swarm {
                    have[k].insert(i);
                }
                let want: Vec<u32> = (0..n).filter(|i| !have[k].contains(i)).collect();
                if want.is_empty() {
                    continue;
                }
                let piece = want[rng.gen_range(0..want.len())];
                if p.decide(c, piece) == Decision::Serve {
                    p.sent(c, piece);
                    sent += 1;
                    have[k].insert(piece);
                    in_swarm.insert(piece);
                }
            }
        }
        assert!(sent <= n + n / 10, "sent {sent} pieces of {n}");
    }
}

//! A fair split of a seeder's upload between the connections serving one file (issue #11,
//! item 2), as a pure data structure: deficit round robin over bytes.
//!
//! Without it each connection's task writes as fast as its socket takes bytes, so the split
//! follows TCP and the downloaders' request depths: in a crowd of 16 leechers capped at
//! 50 Mbit/s, one got 35 pieces from the seeder and most got 6 (measured,
//! docs/BENCHMARKS.md). A leecher that got many pieces nobody else has must then upload each of
//! them to everyone else, and its uplink becomes the crowd's bottleneck.
//!
//! Rule: a connection that has a piece ready may send it when it has sent at most
//! [`QUANTUM`] more bytes than the least-served connection that also has a piece ready; a
//! connection that was idle does not bank credit (it restarts at most one quantum below the
//! others). The least-served ready connection may always send, so someone always progresses;
//! the caller waits at most [`MAX_WAIT`] for its turn (a connection whose socket is blocked
//! must not hold the others back for long).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::upload_policy::ConnId;

/// How far one connection may run ahead of the least-served ready one: two 512 KiB pieces.
pub const QUANTUM: u64 = 1024 * 1024;
/// Longest a connection waits for its turn before it sends anyway.
pub const MAX_WAIT: Duration = Duration::from_millis(300);

#[derive(Debug, Default)]
pub struct FairShare {
    sent: HashMap<ConnId, u64>,
    /// Connections with pieces to send (from their first `want` until `idle`).
    ready: HashSet<ConnId>,
}

impl FairShare {
    /// A new connection starts level with the least-served one (no banked credit).
    pub fn open(&mut self, conn: ConnId) {
        let start = self.sent.values().copied().min().unwrap_or(0);
        self.sent.insert(conn, start);
    }

    pub fn close(&mut self, conn: ConnId) {
        self.sent.remove(&conn);
        self.ready.remove(&conn);
    }

    /// `conn` has a piece ready: may it send now?
    pub fn want(&mut self, conn: ConnId) -> bool {
        if !self.sent.contains_key(&conn) {
            return true;
        }
        let newly_ready = self.ready.insert(conn);
        let floor = self
            .ready
            .iter()
            .filter(|&&c| c != conn)
            .filter_map(|c| self.sent.get(c))
            .copied()
            .min();
        let Some(floor) = floor else {
            return true;
        };
        let mine = self.sent.get_mut(&conn).expect("checked");
        if newly_ready {
            // Idle until now: no credit banked.
            *mine = (*mine).max(floor.saturating_sub(QUANTUM));
        }
        *mine <= floor + QUANTUM
    }

    /// `conn` wrote `len` bytes of a piece (it stays ready until [`FairShare::idle`]).
    pub fn sent(&mut self, conn: ConnId, len: u64) {
        if let Some(s) = self.sent.get_mut(&conn) {
            *s += len;
        }
    }

    /// `conn` has nothing to send now.
    pub fn idle(&mut self, conn: ConnId) {
        self.ready.remove(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const PIECE: u64 = 512 * 1024;

    #[test]
    fn a_connection_ahead_waits_for_the_others() {
        let mut f = FairShare::default();
        f.open(1);
        f.open(2);
        assert!(f.want(1));
        f.sent(1, PIECE);
        assert!(f.want(1));
        f.sent(1, PIECE);
        assert!(f.want(1));
        f.sent(1, PIECE);
        // 2 wants to send now (it restarts one quantum behind 1): 1 may send while it is at
        // most one quantum ahead of 2 — one more piece — then waits while 2 goes.
        assert!(f.want(2));
        assert!(f.want(1));
        f.sent(1, PIECE);
        assert!(!f.want(1));
        assert!(f.want(2));
        f.sent(2, PIECE);
        // 2 caught up by a piece: 1's turn again (they alternate).
        assert!(f.want(1));
        f.idle(2);
        // 2 has nothing more to send: 1 may go on alone.
        assert!(f.want(1));
    }

    #[test]
    fn an_idle_connection_banks_no_credit() {
        let mut f = FairShare::default();
        f.open(1);
        f.open(2);
        for _ in 0..20 {
            assert!(f.want(1));
            f.sent(1, PIECE);
        }
        // 2 comes back after 10 MiB went to 1, while 1 has more to send: 2 may send at most
        // two quanta before it waits for 1 again.
        assert!(f.want(1));
        let mut run = 0;
        while f.want(2) && run < 100 {
            f.sent(2, PIECE);
            run += 1;
        }
        assert!(run <= 5, "2 sent {run} pieces in a row");
        assert!(f.want(1));
    }

    /// Random demand: the least-served ready connection may always send (nobody waits for
    /// nothing), and connections that always have pieces to send end within a couple of
    /// quanta of each other, whatever the others do.
    #[test]
    fn always_someone_may_send_and_backlogged_connections_share_evenly() {
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut f = FairShare::default();
            let n = rng.gen_range(2..12u64);
            let backlogged = rng.gen_range(2..=n);
            for c in 0..n {
                f.open(c);
            }
            let mut got = vec![0u64; n as usize];
            for _ in 0..2000 {
                let ready: Vec<u64> = (0..n)
                    .filter(|&c| c < backlogged || rng.gen_bool(0.5))
                    .collect();
                let may: Vec<u64> = ready.iter().copied().filter(|&c| f.want(c)).collect();
                assert!(!may.is_empty(), "seed {seed}: nobody may send");
                let c = may[rng.gen_range(0..may.len())];
                f.sent(c, PIECE);
                got[c as usize] += PIECE;
                for c in ready.into_iter().filter(|&c| c >= backlogged) {
                    f.idle(c);
                }
            }
            let b = &got[..backlogged as usize];
            let (lo, hi) = (b.iter().min().unwrap(), b.iter().max().unwrap());
            assert!(hi - lo <= 2 * QUANTUM + PIECE, "seed {seed}: {got:?}");
        }
    }
}

//! Piece selection, as a pure data structure (no I/O, no async), so it can be unit-tested.
//!
//! Invariant: every piece is in exactly one state — `Missing` (nobody asked for it),
//! `InFlight` (requested from ≥ 1 peer; the requesters are listed), `Verified`, or
//! `Unwanted` (a selective download, `--only`, does not fetch it: never picked, never
//! waited for; the download is complete when every wanted piece is verified).
//!
//! * Rarest first: among missing pieces a peer has, pick one held by the fewest connected peers.
//! * Random tie-break within a window: among equally rare pieces, pick at random among the
//!   `WINDOW` lowest-indexed ones. Peers still spread over different pieces, while completion
//!   stays roughly in file order, so the whole-file SHA1 can stream along behind the download.
//! * Endgame: when nothing is missing (every piece not verified is requested from someone)
//!   but pieces are still in flight, a peer with a free slot
//!   duplicates an in-flight piece (at most `MAX_REQUESTERS` peers per piece); when one copy
//!   verifies, the others are cancelled.

use std::collections::HashMap;

use rand::Rng;

use minitorr_proto::types::Bitfield;

pub type PeerId = u32;

const WINDOW: usize = 32;
const MAX_REQUESTERS: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
enum PieceState {
    Missing,
    InFlight(Vec<PeerId>),
    Verified,
    Unwanted,
}

pub struct Picker {
    state: Vec<PieceState>,
    availability: Vec<u16>,
    peers: HashMap<PeerId, Bitfield>,
    verified: u32,
    unwanted: u32,
    /// No piece below this index is `Missing` (kept by `pick` and `release`): picks do not
    /// rescan the done prefix of a 100,000-piece tree each time.
    first_missing: usize,
    scratch: Vec<u32>,
}

impl Picker {
    /// A picker for `n` pieces, of which those set in `have` are already verified.
    pub fn new(have: &Bitfield) -> Picker {
        let n = have.len();
        let state = (0..n)
            .map(|i| {
                if have.get(i) {
                    PieceState::Verified
                } else {
                    PieceState::Missing
                }
            })
            .collect();
        Picker {
            state,
            availability: vec![0; n as usize],
            peers: HashMap::new(),
            verified: have.count(),
            unwanted: 0,
            first_missing: 0,
            scratch: Vec::with_capacity(WINDOW),
        }
    }

    /// [`Picker::new`] for a selective download: pieces not set in `wanted` (and not
    /// already in `have`) are never picked nor waited for.
    pub fn with_wanted(have: &Bitfield, wanted: &Bitfield) -> Picker {
        let mut p = Picker::new(have);
        for (i, st) in p.state.iter_mut().enumerate() {
            if *st == PieceState::Missing && !wanted.get(i as u32) {
                *st = PieceState::Unwanted;
                p.unwanted += 1;
            }
        }
        p
    }

    pub fn piece_count(&self) -> u32 {
        self.state.len() as u32
    }

    pub fn verified_count(&self) -> u32 {
        self.verified
    }

    pub fn is_complete(&self) -> bool {
        self.verified + self.unwanted == self.piece_count()
    }

    /// Whether `piece` is one this download fetches.
    pub fn is_wanted(&self, piece: u32) -> bool {
        !matches!(
            self.state.get(piece as usize),
            Some(PieceState::Unwanted) | None
        )
    }

    pub fn is_verified(&self, piece: u32) -> bool {
        matches!(self.state.get(piece as usize), Some(PieceState::Verified))
    }

    /// A peer connected and told us what it has.
    pub fn add_peer(&mut self, peer: PeerId, have: Bitfield) {
        for i in have.iter_set() {
            self.availability[i as usize] = self.availability[i as usize].saturating_add(1);
        }
        self.peers.insert(peer, have);
    }

    /// The peer gained a piece (`Have`).
    pub fn peer_has(&mut self, peer: PeerId, piece: u32) {
        if let Some(have) = self.peers.get_mut(&peer) {
            if piece < have.len() && !have.get(piece) {
                have.set(piece);
                self.availability[piece as usize] =
                    self.availability[piece as usize].saturating_add(1);
            }
        }
    }

    /// The peer said it does not have `piece` after all (`NoPiece`: it stopped sharing, or its
    /// file changed): never ask it for that piece again.
    pub fn peer_lacks(&mut self, peer: PeerId, piece: u32) {
        if let Some(have) = self.peers.get_mut(&peer) {
            if have.get(piece) {
                have.clear(piece);
                self.availability[piece as usize] =
                    self.availability[piece as usize].saturating_sub(1);
            }
        }
        self.drop_requester(piece, peer);
    }

    /// The peer is gone: its in-flight pieces become missing again (unless others have them).
    pub fn remove_peer(&mut self, peer: PeerId) {
        if let Some(have) = self.peers.remove(&peer) {
            for i in have.iter_set() {
                self.availability[i as usize] = self.availability[i as usize].saturating_sub(1);
            }
        }
        for i in 0..self.state.len() {
            self.drop_requester(i as u32, peer);
        }
    }

    /// Choose the next piece to request from `peer`, marking it in flight.
    pub fn pick(&mut self, peer: PeerId, rng: &mut impl Rng) -> Option<u32> {
        let have = self.peers.get(&peer)?;
        self.scratch.clear();
        let mut rarest = u16::MAX;
        while self
            .state
            .get(self.first_missing)
            .is_some_and(|s| *s != PieceState::Missing)
        {
            self.first_missing += 1;
        }
        let mut any_missing = false;
        for (i, st) in self.state.iter().enumerate().skip(self.first_missing) {
            if *st != PieceState::Missing {
                continue;
            }
            any_missing = true;
            if !have.get(i as u32) {
                continue;
            }
            let a = self.availability[i];
            if a < rarest {
                rarest = a;
                self.scratch.clear();
            }
            if a == rarest && self.scratch.len() < WINDOW {
                self.scratch.push(i as u32);
            }
            // Nothing this peer has is rarer than held by one peer (itself): a full window
            // at that rarity cannot change.
            if rarest <= 1 && self.scratch.len() == WINDOW {
                break;
            }
        }
        let piece = if !self.scratch.is_empty() {
            self.scratch[rng.gen_range(0..self.scratch.len())]
        } else if any_missing {
            // Not the endgame yet: other peers have pieces nobody was asked for. Duplicating
            // an in-flight piece here would spend this peer's upload on a copy we will throw
            // away — in a crowd of leechers, whose peers each hold a part, that was ~40 % of
            // every leecher's upload (docs/BENCHMARKS.md, swarm).
            return None;
        } else {
            self.endgame_candidate(peer)?
        };
        match &mut self.state[piece as usize] {
            st @ PieceState::Missing => *st = PieceState::InFlight(vec![peer]),
            PieceState::InFlight(who) => who.push(peer),
            PieceState::Verified | PieceState::Unwanted => unreachable!("never picked"),
        }
        Some(piece)
    }

    /// Endgame: an in-flight piece this peer has and has not been asked for, least-requested first.
    fn endgame_candidate(&self, peer: PeerId) -> Option<u32> {
        let have = self.peers.get(&peer)?;
        self.state
            .iter()
            .enumerate()
            .filter_map(|(i, st)| match st {
                PieceState::InFlight(who)
                    if who.len() < MAX_REQUESTERS && !who.contains(&peer) && have.get(i as u32) =>
                {
                    Some((who.len(), i as u32))
                }
                _ => None,
            })
            .min()
            .map(|(_, i)| i)
    }

    /// The piece arrived from `by` and passed its hash. Returns the other peers it was also
    /// requested from (to send them a cancel). Returns `None` if it was already verified.
    pub fn on_verified(&mut self, piece: u32) -> Option<Vec<PeerId>> {
        if self.state[piece as usize] == PieceState::Unwanted {
            return None;
        }
        let st = std::mem::replace(&mut self.state[piece as usize], PieceState::Verified);
        match st {
            PieceState::Verified | PieceState::Unwanted => None,
            PieceState::Missing => {
                self.verified += 1;
                Some(vec![])
            }
            PieceState::InFlight(who) => {
                self.verified += 1;
                Some(who)
            }
        }
    }

    /// The request to `peer` ended without a verified piece (bad hash, refused, peer gone).
    pub fn release(&mut self, piece: u32, peer: PeerId) {
        self.drop_requester(piece, peer);
    }

    fn drop_requester(&mut self, piece: u32, peer: PeerId) {
        let st = &mut self.state[piece as usize];
        if let PieceState::InFlight(who) = st {
            who.retain(|&p| p != peer);
            if who.is_empty() {
                *st = PieceState::Missing;
                self.first_missing = self.first_missing.min(piece as usize);
            }
        }
    }

    /// Pieces not verified that no connected peer has.
    pub fn unavailable(&self) -> Vec<u32> {
        (0..self.state.len())
            .filter(|&i| {
                matches!(self.state[i], PieceState::Missing | PieceState::InFlight(_))
                    && self.availability[i] == 0
            })
            .map(|i| i as u32)
            .collect()
    }

    /// Whether `peer` has anything we still need.
    pub fn peer_is_useful(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(|have| {
            have.iter_set().any(|i| {
                matches!(
                    self.state[i as usize],
                    PieceState::Missing | PieceState::InFlight(_)
                )
            })
        })
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        let verified = self
            .state
            .iter()
            .filter(|s| **s == PieceState::Verified)
            .count() as u32;
        assert_eq!(verified, self.verified);
        for st in &self.state {
            if let PieceState::InFlight(who) = st {
                assert!(!who.is_empty() && who.len() <= MAX_REQUESTERS);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn bits(n: u32, set: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(n);
        for &i in set {
            b.set(i);
        }
        b
    }

    #[test]
    fn picks_the_rarest_piece_first() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut p = Picker::new(&Bitfield::new(4));
        p.add_peer(1, Bitfield::full(4));
        p.add_peer(2, bits(4, &[0, 1, 3]));
        p.add_peer(3, bits(4, &[0, 1]));
        // Piece 2 is held by peer 1 alone: it goes first.
        assert_eq!(p.pick(1, &mut rng), Some(2));
        // Then piece 3 (2 holders) before 0 and 1 (3 holders).
        assert_eq!(p.pick(1, &mut rng), Some(3));
        p.check_invariants();
    }

    #[test]
    fn never_picks_what_a_peer_lacks_or_what_is_in_flight() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut p = Picker::new(&Bitfield::new(3));
        p.add_peer(1, bits(3, &[0]));
        p.add_peer(2, bits(3, &[0, 1]));
        assert_eq!(p.pick(1, &mut rng), Some(0));
        assert_eq!(p.pick(2, &mut rng), Some(1));
        // Peer 2's only other piece (0) is in flight from peer 1, but piece 2 was never asked
        // for (nobody has it yet): not the endgame, no duplicate.
        assert_eq!(p.pick(2, &mut rng), None);
        p.add_peer(3, bits(3, &[2]));
        assert_eq!(p.pick(3, &mut rng), Some(2));
        // Now every piece is requested from someone: endgame duplicate.
        assert_eq!(p.pick(2, &mut rng), Some(0));
        // Max two requesters per piece and never the same peer twice.
        assert_eq!(p.pick(1, &mut rng), None);
        p.check_invariants();
    }

    #[test]
    fn verified_piece_cancels_other_requesters() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut p = Picker::new(&Bitfield::new(1));
        p.add_peer(1, Bitfield::full(1));
        p.add_peer(2, Bitfield::full(1));
        assert_eq!(p.pick(1, &mut rng), Some(0));
        assert_eq!(p.pick(2, &mut rng), Some(0));
        assert_eq!(p.on_verified(0), Some(vec![1, 2]));
        assert_eq!(
            p.on_verified(0),
            None,
            "a duplicate delivery is not counted twice"
        );
        assert!(p.is_complete());
        p.check_invariants();
    }

    #[test]
    fn released_and_departed_pieces_become_missing_again() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut p = Picker::new(&Bitfield::new(2));
        p.add_peer(1, Bitfield::full(2));
        p.add_peer(2, Bitfield::full(2));
        let a = p.pick(1, &mut rng).unwrap();
        p.release(a, 1); // bad hash from peer 1
        let b = p.pick(2, &mut rng).unwrap();
        let c = p.pick(2, &mut rng).unwrap();
        assert_ne!(b, c);
        p.remove_peer(2);
        assert!(p.peer_is_useful(1));
        // Both pieces are missing again and available from peer 1.
        let mut got = vec![p.pick(1, &mut rng).unwrap(), p.pick(1, &mut rng).unwrap()];
        got.sort();
        assert_eq!(got, vec![0, 1]);
        p.check_invariants();
    }

    #[test]
    fn a_peer_answering_no_piece_is_not_asked_again() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut p = Picker::new(&Bitfield::new(1));
        p.add_peer(1, Bitfield::full(1));
        assert_eq!(p.pick(1, &mut rng), Some(0));
        p.peer_lacks(1, 0);
        assert_eq!(
            p.pick(1, &mut rng),
            None,
            "no tight loop on the same refusing peer"
        );
        assert_eq!(p.unavailable(), vec![0]);
        p.check_invariants();
    }

    #[test]
    fn reports_pieces_no_connected_peer_has() {
        let mut p = Picker::new(&bits(4, &[0]));
        p.add_peer(1, bits(4, &[1]));
        assert_eq!(p.unavailable(), vec![2, 3]);
        p.peer_has(1, 2);
        assert_eq!(p.unavailable(), vec![3]);
        p.remove_peer(1);
        assert_eq!(p.unavailable(), vec![1, 2, 3]);
    }

    #[test]
    fn random_tie_break_spreads_peers_over_pieces() {
        let mut p = Picker::new(&Bitfield::new(64));
        for peer in 1..=3 {
            p.add_peer(peer, Bitfield::full(64));
        }
        let mut rng = StdRng::seed_from_u64(5);
        let first: Vec<u32> = (1..=3)
            .map(|peer| p.pick(peer, &mut rng).unwrap())
            .collect();
        assert!(
            first.iter().all(|&i| i < WINDOW as u32),
            "stays near the front: {first:?}"
        );
        assert!(first[0] != first[1] && first[1] != first[2] && first[0] != first[2]);
    }

    #[test]
    fn a_full_simulated_download_completes_with_invariants_held() {
        let mut rng = StdRng::seed_from_u64(6);
        let n = 200;
        let mut p = Picker::new(&Bitfield::new(n));
        p.add_peer(1, Bitfield::full(n));
        p.add_peer(
            2,
            bits(n, &(0..n).filter(|i| i % 2 == 0).collect::<Vec<_>>()),
        );
        let mut inflight: Vec<(PeerId, u32)> = vec![];
        let mut steps = 0;
        while !p.is_complete() {
            for peer in [1, 2] {
                while inflight.iter().filter(|(q, _)| *q == peer).count() < 4 {
                    match p.pick(peer, &mut rng) {
                        Some(i) => inflight.push((peer, i)),
                        None => break,
                    }
                }
            }
            // Deliver the oldest request; peer 2 lies on every 7th piece.
            let (peer, piece) = inflight.remove(0);
            if peer == 2 && piece % 7 == 0 {
                p.release(piece, peer);
            } else if let Some(others) = p.on_verified(piece) {
                inflight.retain(|(q, i)| !(*i == piece && others.contains(q)));
            }
            p.check_invariants();
            steps += 1;
            assert!(steps < 10_000, "download must make progress");
        }
    }

    #[test]
    fn unwanted_pieces_are_never_picked_nor_waited_for() {
        let n = 10;
        let have = Bitfield::new(n);
        let mut wanted = Bitfield::new(n);
        for i in [2, 3, 7] {
            wanted.set(i);
        }
        let mut p = Picker::with_wanted(&have, &wanted);
        p.add_peer(1, Bitfield::full(n));
        let mut rng = StdRng::seed_from_u64(7);
        let mut got = Vec::new();
        while let Some(i) = p.pick(1, &mut rng) {
            got.push(i);
            p.on_verified(i);
            if got.len() > 5 {
                break;
            }
        }
        got.sort();
        assert_eq!(got, vec![2, 3, 7]);
        assert!(p.is_complete());
        assert_eq!(p.verified_count(), 3);
        assert!(p.unavailable().is_empty());
        assert!(!p.peer_is_useful(1));
        assert_eq!(p.on_verified(0), None, "an unwanted piece is not taken");
        assert!(!p.is_wanted(0) && p.is_wanted(2));
    }
}

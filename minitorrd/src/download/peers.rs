//! The download coordinator's peer bookkeeping, as a pure data structure (no I/O, no async,
//! time passed in), so it can be unit-tested like [`super::picker::Picker`].
//!
//! Every holder we heard of (tracker `GetFile`, `HolderOnline` events) is one entry keyed by
//! its address, in exactly one state:
//!
//! * **idle** — may be connected to once its retry time has passed;
//! * **connected** — a peer task runs for it (with a [`PeerId`] for the picker);
//! * **banned** — it sent corrupt pieces repeatedly: never again for this download;
//! * **impostor** — it proved another device key than the tracker listed: never again while
//!   the tracker lists it with that key (a new key listed for the address makes it idle again);
//! * **departed** — the tracker said it holds nothing any more (`HolderGone`), or it could not
//!   be reached [`MAX_CONNECT_FAILURES`] times in a row (a crashed daemon): not retried until
//!   the tracker lists it again.
//!
//! At most [`PeerBook::max_connected`] entries are connected at once, and at most
//! [`MAX_KNOWN`] are remembered (limits before memory: departed ones are evicted first).
//! The stall clock (every missing piece held by nobody connected) lives here too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use minitorr_proto::types::PeerInfo;

use super::picker::PeerId;

/// Wait before reconnecting to a peer whose connection ended.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(3);
/// Consecutive failed connection attempts after which a holder counts as gone (until the
/// tracker lists it again). With [`RECONNECT_AFTER`] between attempts: about 6 s.
pub const MAX_CONNECT_FAILURES: u32 = 3;
/// Holders remembered per download at most.
pub const MAX_KNOWN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Connected(PeerId),
    Banned,
    Impostor([u8; 32]),
    Departed,
}

#[derive(Debug, Clone)]
struct Entry {
    info: PeerInfo,
    state: State,
    retry_at: Option<Instant>,
    failures: u32,
}

/// How a peer task ended, as far as the bookkeeping cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The connection worked and then ended (done, closed, refused, snubbed).
    Closed,
    /// No connection could be made (TCP connect or TLS failed for a non-identity reason).
    Unreachable,
    /// Corrupt pieces: banned.
    Liar,
    /// Proved another key than the listed one (given).
    Impostor([u8; 32]),
}

/// Where a `learn` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A periodic `GetFile`: keeps retry times (a failing peer is not hammered every refresh).
    Listing,
    /// `HolderOnline`: it just came online, so try it now.
    Online,
}

pub struct PeerBook {
    self_addr: String,
    max_connected: usize,
    entries: HashMap<String, Entry>,
    connected: usize,
    next_id: PeerId,
    stalled_since: Option<Instant>,
}

impl PeerBook {
    pub fn new(self_addr: impl Into<String>, max_connected: usize) -> PeerBook {
        PeerBook {
            self_addr: self_addr.into(),
            max_connected: max_connected.max(1),
            entries: HashMap::new(),
            connected: 0,
            next_id: 0,
            stalled_since: None,
        }
    }

    pub fn max_connected(&self) -> usize {
        self.max_connected
    }

    /// The tracker lists `info` as a holder (our own address is ignored).
    pub fn learn(&mut self, info: PeerInfo, source: Source) {
        if info.addr == self.self_addr || info.addr.is_empty() {
            return;
        }
        if let Some(e) = self.entries.get_mut(&info.addr) {
            match e.state {
                State::Banned => return,
                State::Impostor(key) if key == info.device_key => return,
                State::Impostor(_) | State::Departed => {
                    e.state = State::Idle;
                    e.failures = 0;
                    e.retry_at = None;
                }
                State::Idle if source == Source::Online => {
                    e.failures = 0;
                    e.retry_at = None;
                }
                // Listed again while connected: whatever `gone` said before is outdated.
                State::Connected(_) => e.failures = 0,
                State::Idle => {}
            }
            // A connected peer keeps its (already pinned) connection; the new listing is used
            // for the next one.
            e.info = info;
            return;
        }
        if self.entries.len() >= MAX_KNOWN && !self.evict_one() {
            return;
        }
        self.entries.insert(
            info.addr.clone(),
            Entry {
                info,
                state: State::Idle,
                retry_at: None,
                failures: 0,
            },
        );
    }

    /// Make room: drop a departed entry, else an idle one. False if every entry is needed.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .entries
            .iter()
            .find(|(_, e)| e.state == State::Departed)
            .or_else(|| self.entries.iter().find(|(_, e)| e.state == State::Idle))
            .map(|(a, _)| a.clone());
        match victim {
            Some(a) => {
                self.entries.remove(&a);
                true
            }
            None => false,
        }
    }

    /// The tracker says `user` holds nothing any more — at `addr` only, or at every address.
    /// Connected ones keep their task (the holder closes the connection itself); none is
    /// reconnected to until listed again.
    pub fn gone(&mut self, user: &str, addr: Option<&str>) {
        for (a, e) in self.entries.iter_mut() {
            if e.info.user == user && addr.is_none_or(|x| x == a) {
                if let State::Idle = e.state {
                    e.state = State::Departed;
                }
                // Remembered so that `ended` does not schedule a reconnect.
                e.failures = MAX_CONNECT_FAILURES;
            }
        }
    }

    /// Holders to connect to now (marked connected, each with a fresh picker id); complete
    /// holders first, then by address (deterministic).
    pub fn to_connect(&mut self, now: Instant) -> Vec<(PeerId, PeerInfo)> {
        let room = self.max_connected.saturating_sub(self.connected);
        if room == 0 {
            return vec![];
        }
        let mut ready: Vec<&String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == State::Idle && e.retry_at.is_none_or(|t| t <= now))
            .map(|(a, _)| a)
            .collect();
        ready.sort_by_key(|a| (!self.entries[*a].info.complete, (*a).clone()));
        let chosen: Vec<String> = ready.into_iter().take(room).cloned().collect();
        let mut out = Vec::with_capacity(chosen.len());
        for a in chosen {
            self.next_id += 1;
            let e = self.entries.get_mut(&a).expect("listed");
            e.state = State::Connected(self.next_id);
            self.connected += 1;
            out.push((self.next_id, e.info.clone()));
        }
        out
    }

    /// The peer task for `addr` ended. Returns its picker id (to release its pieces).
    pub fn ended(&mut self, addr: &str, how: Ended, now: Instant) -> Option<PeerId> {
        let e = self.entries.get_mut(addr)?;
        let State::Connected(id) = e.state else {
            return None;
        };
        self.connected -= 1;
        let departed = e.failures >= MAX_CONNECT_FAILURES;
        e.retry_at = Some(now + RECONNECT_AFTER);
        e.state = match how {
            Ended::Liar => State::Banned,
            Ended::Impostor(key) => State::Impostor(key),
            _ if departed => State::Departed,
            Ended::Closed => {
                e.failures = 0;
                State::Idle
            }
            Ended::Unreachable => {
                e.failures += 1;
                if e.failures >= MAX_CONNECT_FAILURES {
                    State::Departed
                } else {
                    State::Idle
                }
            }
        };
        Some(id)
    }

    pub fn connected(&self) -> usize {
        self.connected
    }

    /// Holders we may still connect to now or later (idle or connected).
    pub fn usable(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.state, State::Idle | State::Connected(_)))
            .count()
    }

    pub fn is_banned(&self, addr: &str) -> bool {
        self.entries
            .get(addr)
            .is_some_and(|e| e.state == State::Banned)
    }

    pub fn is_departed(&self, addr: &str) -> bool {
        self.entries
            .get(addr)
            .is_some_and(|e| e.state == State::Departed)
    }

    /// The stall clock: `stalled` now (every missing piece lacks a connected holder)?
    /// Returns how long it has been stalled without a break.
    pub fn stall(&mut self, stalled: bool, now: Instant) -> Duration {
        if !stalled {
            self.stalled_since = None;
            return Duration::ZERO;
        }
        now.saturating_duration_since(*self.stalled_since.get_or_insert(now))
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        let connected = self
            .entries
            .values()
            .filter(|e| matches!(e.state, State::Connected(_)))
            .count();
        assert_eq!(connected, self.connected);
        assert!(self.connected <= self.max_connected);
        assert!(self.entries.len() <= MAX_KNOWN);
        assert!(!self.entries.contains_key(&self.self_addr));
        let mut ids: Vec<PeerId> = self
            .entries
            .values()
            .filter_map(|e| match e.state {
                State::Connected(id) => Some(id),
                _ => None,
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), connected, "picker ids are unique");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn peer(user: &str, addr: &str, key: u8) -> PeerInfo {
        PeerInfo {
            user: user.into(),
            addr: addr.into(),
            complete: false,
            device_key: [key; 32],
        }
    }

    #[test]
    fn connects_up_to_the_cap_complete_holders_first_and_never_to_itself() {
        let t = Instant::now();
        let mut b = PeerBook::new("me:1", 2);
        b.learn(peer("me", "me:1", 1), Source::Listing);
        b.learn(peer("a", "a:1", 1), Source::Listing);
        b.learn(peer("b", "b:1", 1), Source::Listing);
        b.learn(
            PeerInfo {
                complete: true,
                ..peer("s", "s:1", 1)
            },
            Source::Listing,
        );
        let first = b.to_connect(t);
        let addrs: Vec<&str> = first.iter().map(|(_, p)| p.addr.as_str()).collect();
        assert_eq!(addrs, ["s:1", "a:1"]);
        assert!(b.to_connect(t).is_empty(), "at the cap");
        b.check_invariants();
    }

    #[test]
    fn a_closed_peer_is_retried_after_the_delay_and_a_liar_never() {
        let t = Instant::now();
        let mut b = PeerBook::new("me:1", 8);
        b.learn(peer("a", "a:1", 1), Source::Listing);
        b.learn(peer("l", "l:1", 1), Source::Listing);
        let ids = b.to_connect(t);
        assert_eq!(ids.len(), 2);
        assert!(b.ended("a:1", Ended::Closed, t).is_some());
        assert!(b.ended("l:1", Ended::Liar, t).is_some());
        assert!(b.ended("l:1", Ended::Liar, t).is_none(), "only once");
        assert!(b.to_connect(t + Duration::from_secs(1)).is_empty());
        let again = b.to_connect(t + RECONNECT_AFTER);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1.addr, "a:1");
        assert!(
            again[0].0 > ids.iter().map(|x| x.0).max().unwrap(),
            "fresh id"
        );
        // The tracker listing the liar again changes nothing.
        b.learn(peer("l", "l:1", 2), Source::Online);
        assert!(b.is_banned("l:1"));
        b.check_invariants();
    }

    #[test]
    fn an_impostor_stays_out_until_listed_with_another_key() {
        let t = Instant::now();
        let mut b = PeerBook::new("me:1", 8);
        b.learn(peer("a", "a:1", 1), Source::Listing);
        b.to_connect(t);
        b.ended("a:1", Ended::Impostor([1; 32]), t);
        b.learn(peer("a", "a:1", 1), Source::Online);
        assert!(b.to_connect(t + RECONNECT_AFTER * 10).is_empty());
        b.learn(peer("a", "a:1", 2), Source::Listing);
        assert_eq!(b.to_connect(t).len(), 1, "a new key is a new holder");
    }

    #[test]
    fn holder_gone_stops_reconnects_until_it_comes_back() {
        let t = Instant::now();
        let mut b = PeerBook::new("me:1", 8);
        b.learn(peer("a", "a:1", 1), Source::Listing);
        b.learn(peer("a", "a:2", 1), Source::Listing);
        b.learn(peer("c", "c:1", 1), Source::Listing);
        assert_eq!(b.to_connect(t).len(), 3);
        b.ended("a:2", Ended::Closed, t);
        b.gone("a", Some("a:2"));
        assert!(b.is_departed("a:2"));
        // Connected a:1 of the same user is untouched by an address-specific event.
        b.gone("a", None);
        // …but every address of the user for an all-addresses one; the task ends by itself.
        assert!(b.ended("a:1", Ended::Closed, t).is_some());
        assert!(b.is_departed("a:1"));
        assert!(b.to_connect(t + RECONNECT_AFTER * 10).is_empty());
        b.learn(peer("a", "a:1", 1), Source::Online);
        assert_eq!(b.to_connect(t).len(), 1);
        b.check_invariants();
    }

    #[test]
    fn an_unreachable_holder_departs_after_repeated_failures_and_comes_back_when_online() {
        let mut t = Instant::now();
        let mut b = PeerBook::new("me:1", 8);
        b.learn(peer("a", "a:1", 1), Source::Listing);
        for _ in 0..MAX_CONNECT_FAILURES {
            assert_eq!(b.to_connect(t).len(), 1);
            b.ended("a:1", Ended::Unreachable, t);
            t += RECONNECT_AFTER;
        }
        assert!(b.is_departed("a:1"));
        assert_eq!(b.usable(), 0);
        // A periodic listing brings it back (the tracker still thinks it online).
        b.learn(peer("a", "a:1", 1), Source::Listing);
        assert_eq!(b.to_connect(t).len(), 1);
        // One good connection resets the count.
        b.ended("a:1", Ended::Closed, t);
        t += RECONNECT_AFTER;
        b.to_connect(t);
        b.ended("a:1", Ended::Unreachable, t);
        assert!(!b.is_departed("a:1"));
    }

    #[test]
    fn online_clears_the_retry_delay_but_a_listing_does_not() {
        let t = Instant::now();
        let mut b = PeerBook::new("me:1", 8);
        b.learn(peer("a", "a:1", 1), Source::Listing);
        b.to_connect(t);
        b.ended("a:1", Ended::Closed, t);
        b.learn(peer("a", "a:1", 1), Source::Listing);
        assert!(b.to_connect(t).is_empty());
        b.learn(peer("a", "a:1", 1), Source::Online);
        assert_eq!(b.to_connect(t).len(), 1);
    }

    #[test]
    fn the_stall_clock_runs_only_while_stalled() {
        let t = Instant::now();
        let mut b = PeerBook::new("me:1", 8);
        assert_eq!(b.stall(true, t), Duration::ZERO);
        assert_eq!(
            b.stall(true, t + Duration::from_secs(4)),
            Duration::from_secs(4)
        );
        assert_eq!(b.stall(false, t + Duration::from_secs(5)), Duration::ZERO);
        assert_eq!(b.stall(true, t + Duration::from_secs(6)), Duration::ZERO);
    }

    #[test]
    fn memory_is_bounded_by_max_known() {
        let mut b = PeerBook::new("me:1", 4);
        for i in 0..(MAX_KNOWN + 100) {
            b.learn(peer("u", &format!("10.0.0.1:{i}"), 1), Source::Online);
        }
        b.check_invariants();
    }

    /// Random event sequences: the invariants hold after every step, and a holder that stays
    /// listed and reachable is always connected to again eventually.
    #[test]
    fn invariants_hold_over_random_event_sequences() {
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut t = Instant::now();
            let cap = rng.gen_range(1..5);
            let mut b = PeerBook::new("me:1", cap);
            let addrs = ["me:1", "a:1", "a:2", "b:1", "c:1", "d:1", "e:1"];
            let mut running: Vec<String> = vec![];
            for _ in 0..300 {
                let addr = addrs[rng.gen_range(0..addrs.len())];
                let user = &addr[..1];
                match rng.gen_range(0..7) {
                    0 => b.learn(peer(user, addr, rng.gen_range(1..3)), Source::Listing),
                    1 => b.learn(peer(user, addr, rng.gen_range(1..3)), Source::Online),
                    2 => b.gone(user, if rng.gen() { Some(addr) } else { None }),
                    3 | 4 => {
                        for (_, p) in b.to_connect(t) {
                            assert!(!running.contains(&p.addr), "connected twice");
                            running.push(p.addr);
                        }
                    }
                    5 if !running.is_empty() => {
                        let a = running.remove(rng.gen_range(0..running.len()));
                        let how = match rng.gen_range(0..4) {
                            0 => Ended::Closed,
                            1 => Ended::Unreachable,
                            2 => Ended::Liar,
                            _ => Ended::Impostor([1; 32]),
                        };
                        assert!(b.ended(&a, how, t).is_some());
                        if how == Ended::Liar {
                            assert!(b.is_banned(&a));
                        }
                    }
                    _ => t += Duration::from_millis(rng.gen_range(0..4000)),
                }
                b.check_invariants();
                assert_eq!(b.connected(), running.len());
            }
            // Liveness: end everything, list one fresh holder online: it is connected at once.
            for a in running.drain(..) {
                b.ended(&a, Ended::Closed, t);
            }
            // Liveness: a fresh holder is connected to once the others make room (here each
            // other one is banned as it comes up).
            b.learn(peer("z", "z:1", 1), Source::Online);
            let mut found = false;
            for _ in 0..=addrs.len() {
                let got = b.to_connect(t);
                if got.iter().any(|(_, p)| p.addr == "z:1") {
                    found = true;
                    break;
                }
                for (_, p) in got {
                    b.ended(&p.addr, Ended::Liar, t);
                }
            }
            assert!(found, "seed {seed}");
        }
    }
}

//! Which way to reach a holder next (issue #14), as a pure data structure (no I/O, no clock),
//! unit-tested like [`super::picker::Picker`].
//!
//! The ways, most direct first: a plain connection to the address the tracker listed
//! ([`Way::Direct`]); a hole punch the tracker coordinates ([`Way::Punch`]: both sides connect
//! at once from their peer ports); the tracker's relay ([`Way::Relay`], when one is
//! configured). A connection attempt tries them in [`PathPolicy::plan`] order, starting the next
//! one when the previous failed or after a short stagger (so a NAT that silently drops the
//! direct attempt costs well under the connect timeout). What worked for a holder goes first
//! next time; a way that failed [`SKIP_AFTER`] times in a row for a holder is left out while
//! another remains.

use std::collections::HashMap;

/// Consecutive failures of one way for one holder after which it is not tried first any more.
pub const SKIP_AFTER: u8 = 2;
/// Holders remembered at most (the oldest-inserted are forgotten first; limits before memory).
pub const MAX_HOLDERS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    Direct,
    Punch,
    Relay,
}

impl Way {
    const ALL: [Way; 3] = [Way::Direct, Way::Punch, Way::Relay];

    fn index(self) -> usize {
        match self {
            Way::Direct => 0,
            Way::Punch => 1,
            Way::Relay => 2,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Holder {
    worked: Option<Way>,
    failures: [u8; 3],
}

/// What this daemon can do at all: punching needs a logged-in tracker session and real TCP
/// (not the loopback plaintext benchmark mode); relaying needs a configured relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abilities {
    pub punch: bool,
    pub relay: bool,
}

#[derive(Debug, Default)]
pub struct PathPolicy {
    holders: HashMap<String, Holder>,
    order: std::collections::VecDeque<String>,
}

impl PathPolicy {
    /// The ways to try for `addr`, in order.
    pub fn plan(&self, addr: &str, can: Abilities) -> Vec<Way> {
        let usable = |w: &Way| match w {
            Way::Direct => true,
            Way::Punch => can.punch,
            Way::Relay => can.relay,
        };
        let h = self.holders.get(addr).cloned().unwrap_or_default();
        let mut ways: Vec<Way> = Way::ALL.iter().copied().filter(usable).collect();
        // What worked last time first, the rest in their natural order.
        if let Some(w) = h.worked.filter(usable) {
            ways.retain(|x| *x != w);
            ways.insert(0, w);
        }
        let fresh: Vec<Way> = ways
            .iter()
            .copied()
            .filter(|w| h.failures[w.index()] < SKIP_AFTER)
            .collect();
        if fresh.is_empty() {
            ways // every way keeps failing: try them all again (the PeerBook gives up on it)
        } else {
            // Failing ways go last rather than away: a router may have been rebooted.
            let mut out = fresh.clone();
            out.extend(ways.into_iter().filter(|w| !fresh.contains(w)));
            out
        }
    }

    /// An attempt over `way` to `addr` worked or failed.
    pub fn record(&mut self, addr: &str, way: Way, ok: bool) {
        if !self.holders.contains_key(addr) {
            if self.holders.len() >= MAX_HOLDERS {
                if let Some(old) = self.order.pop_front() {
                    self.holders.remove(&old);
                }
            }
            self.order.push_back(addr.to_string());
        }
        let h = self.holders.entry(addr.to_string()).or_default();
        let f = &mut h.failures[way.index()];
        if ok {
            *f = 0;
            h.worked = Some(way);
        } else {
            *f = f.saturating_add(1);
            if h.worked == Some(way) && *f >= SKIP_AFTER {
                h.worked = None;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.holders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Abilities = Abilities {
        punch: true,
        relay: true,
    };
    const NO_RELAY: Abilities = Abilities {
        punch: true,
        relay: false,
    };

    #[test]
    fn most_direct_first_and_only_what_this_daemon_can_do() {
        let p = PathPolicy::default();
        assert_eq!(p.plan("h:1", ALL), [Way::Direct, Way::Punch, Way::Relay]);
        assert_eq!(p.plan("h:1", NO_RELAY), [Way::Direct, Way::Punch]);
        let plain = Abilities {
            punch: false,
            relay: false,
        };
        assert_eq!(p.plan("h:1", plain), [Way::Direct]);
    }

    #[test]
    fn what_worked_goes_first_for_that_holder_only() {
        let mut p = PathPolicy::default();
        p.record("h:1", Way::Direct, false);
        p.record("h:1", Way::Punch, true);
        assert_eq!(p.plan("h:1", ALL), [Way::Punch, Way::Direct, Way::Relay]);
        assert_eq!(p.plan("h:2", ALL), [Way::Direct, Way::Punch, Way::Relay]);
    }

    #[test]
    fn a_way_failing_repeatedly_goes_last_and_comes_back_when_it_works() {
        let mut p = PathPolicy::default();
        for _ in 0..SKIP_AFTER {
            p.record("h:1", Way::Direct, false);
        }
        assert_eq!(p.plan("h:1", ALL), [Way::Punch, Way::Relay, Way::Direct]);
        for _ in 0..SKIP_AFTER {
            p.record("h:1", Way::Punch, false);
        }
        assert_eq!(p.plan("h:1", ALL), [Way::Relay, Way::Direct, Way::Punch]);
        p.record("h:1", Way::Direct, true);
        assert_eq!(p.plan("h:1", ALL), [Way::Direct, Way::Relay, Way::Punch]);
    }

    #[test]
    fn a_path_that_stops_working_loses_its_first_place() {
        let mut p = PathPolicy::default();
        p.record("h:1", Way::Punch, true);
        p.record("h:1", Way::Punch, false);
        assert_eq!(
            p.plan("h:1", NO_RELAY)[0],
            Way::Punch,
            "one failure is noise"
        );
        p.record("h:1", Way::Punch, false);
        assert_eq!(p.plan("h:1", NO_RELAY), [Way::Direct, Way::Punch]);
    }

    #[test]
    fn everything_failing_still_yields_every_way_and_memory_is_bounded() {
        let mut p = PathPolicy::default();
        for w in Way::ALL {
            for _ in 0..10 {
                p.record("h:1", w, false);
            }
        }
        assert_eq!(p.plan("h:1", ALL).len(), 3);
        for i in 0..MAX_HOLDERS + 10 {
            p.record(&format!("10.0.0.1:{i}"), Way::Direct, true);
        }
        assert_eq!(p.len(), MAX_HOLDERS);
        // The oldest were forgotten: back to the default order.
        assert_eq!(p.plan("h:1", ALL), [Way::Direct, Way::Punch, Way::Relay]);
    }
}

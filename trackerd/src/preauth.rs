//! Bookkeeping for connections that have not authenticated yet (no successful `Login`, no
//! request with a valid session token): how many there are, in total and per source, and how
//! many request bytes they have asked the server to buffer.
//!
//! An outsider needs no account to open connections, so everything such a connection can make
//! the tracker hold is bounded here, and when a bound is reached the *oldest* unauthenticated
//! connection is closed to make room (the same rule as minitorrd's peer port). A crowd of
//! stalled clients therefore only pushes itself out: a real client that connects, logs in and
//! is answered within the time the crowd needs to open `max_total` newer connections is never
//! locked out, whereas refusing new connections would lock everyone out until the stalled ones
//! time out.
//!
//! This is a plain data structure (no I/O, no clock); the server owns it behind a mutex and
//! cancels the handles it returns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// The bounds, from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unauthenticated connections, all sources together.
    pub max_total: usize,
    /// Unauthenticated connections from one source (see [`Source`]).
    pub max_per_source: usize,
    /// Request bytes being received by unauthenticated connections, all together.
    pub max_bytes: usize,
}

/// Who counts as one source: an IPv4 address, or an IPv6 /64 (one host usually owns a whole
/// /64, so per-address counting would mean nothing there). IPv4-mapped IPv6 counts as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(std::net::Ipv4Addr),
    V6Prefix(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => Source::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Identifies one registered connection.
pub type Id = u64;

struct Entry<H> {
    source: Source,
    bytes: usize,
    handle: H,
}

/// The registry. `H` is what the owner needs to close an evicted connection (a cancellation
/// token in the server); evicted handles are returned, never acted on here.
pub struct Registry<H> {
    limits: Limits,
    next_id: Id,
    /// Ids grow with time, so the first entry is the oldest connection.
    entries: BTreeMap<Id, Entry<H>>,
    by_source: HashMap<Source, BTreeSet<Id>>,
    bytes: usize,
}

impl<H> Registry<H> {
    pub fn new(limits: Limits) -> Self {
        Registry {
            limits,
            next_id: 0,
            entries: BTreeMap::new(),
            by_source: HashMap::new(),
            bytes: 0,
        }
    }

    /// Register a new connection from `ip`. Returns its id and the handles of the connections
    /// evicted to make room (oldest of the same source if that source is at its cap, else the
    /// oldest of all if the total is at its cap).
    pub fn register(&mut self, ip: IpAddr, handle: H) -> (Id, Vec<H>) {
        let source = Source::from(ip);
        let mut evicted = vec![];
        let same_source = self.by_source.get(&source).map_or(0, BTreeSet::len);
        if same_source >= self.limits.max_per_source {
            let oldest = self.by_source[&source].first().copied();
            evicted.extend(oldest.and_then(|id| self.remove(id)));
        }
        while self.entries.len() >= self.limits.max_total {
            let Some(oldest) = self.entries.keys().next().copied() else {
                break;
            };
            evicted.extend(self.remove(oldest));
        }
        self.next_id += 1;
        let id = self.next_id;
        self.entries.insert(
            id,
            Entry {
                source,
                bytes: 0,
                handle,
            },
        );
        self.by_source.entry(source).or_default().insert(id);
        (id, evicted)
    }

    /// Connection `id` is about to buffer a request body of `bytes` (replacing whatever it was
    /// charged before). Makes room by evicting the oldest *other* connections holding bytes
    /// until the total fits, and returns their handles. `false` if `id` is no longer registered
    /// (it was evicted meanwhile) or the request cannot fit even then.
    pub fn charge(&mut self, id: Id, bytes: usize) -> (bool, Vec<H>) {
        let Some(old) = self.entries.get(&id).map(|e| e.bytes) else {
            return (false, vec![]);
        };
        let mut evicted = vec![];
        while self.bytes - old + bytes > self.limits.max_bytes {
            let victim = self
                .entries
                .iter()
                .find(|(i, e)| **i != id && e.bytes > 0)
                .map(|(i, _)| *i);
            match victim {
                Some(v) => evicted.extend(self.remove(v)),
                None => return (false, evicted),
            }
        }
        if let Some(e) = self.entries.get_mut(&id) {
            e.bytes = bytes;
        }
        self.bytes = self.bytes - old + bytes;
        (true, evicted)
    }

    /// The connection authenticated or closed: it no longer counts. Returns its handle if it
    /// was still registered (`None`: it had been evicted).
    pub fn done(&mut self, id: Id) -> Option<H> {
        self.remove(id)
    }

    fn remove(&mut self, id: Id) -> Option<H> {
        let e = self.entries.remove(&id)?;
        self.bytes -= e.bytes;
        if let Some(ids) = self.by_source.get_mut(&e.source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&e.source);
            }
        }
        Some(e.handle)
    }

    /// Unauthenticated connections registered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Request bytes charged now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(max_total: usize, max_per_source: usize, max_bytes: usize) -> Limits {
        Limits {
            max_total,
            max_per_source,
            max_bytes,
        }
    }

    #[test]
    fn the_oldest_is_evicted_when_the_total_is_reached() {
        let mut r = Registry::new(limits(3, 10, 1000));
        let ids: Vec<Id> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .enumerate()
            .map(|(n, a)| {
                let (id, ev) = r.register(ip(a), n);
                assert!(ev.is_empty());
                id
            })
            .collect();
        let (_, ev) = r.register(ip("10.0.0.4"), 3);
        assert_eq!(ev, vec![0], "the oldest handle");
        assert_eq!(r.len(), 3);
        assert_eq!(r.done(ids[0]), None, "already evicted");
        assert_eq!(r.done(ids[1]), Some(1));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_source_at_its_cap_only_pushes_out_its_own_oldest() {
        let mut r = Registry::new(limits(100, 2, 1000));
        let (real, _) = r.register(ip("192.0.2.1"), "real");
        r.register(ip("198.51.100.7"), "crowd-1");
        r.register(ip("198.51.100.7"), "crowd-2");
        for i in 3..50 {
            let (_, ev) = r.register(ip("198.51.100.7"), "crowd-n");
            assert_eq!(ev.len(), 1, "round {i}");
            assert_ne!(ev[0], "real");
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.done(real), Some("real"));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let mut r = Registry::new(limits(100, 1, 1000));
        r.register(ip("2001:db8:1:2::1"), 1);
        let (_, ev) = r.register(ip("2001:db8:1:2:ffff::9"), 2);
        assert_eq!(ev, vec![1], "same /64");
        let (_, ev) = r.register(ip("2001:db8:1:3::1"), 3);
        assert!(ev.is_empty(), "another /64");
        r.register(ip("192.0.2.1"), 4);
        let (_, ev) = r.register(ip("::ffff:192.0.2.1"), 5);
        assert_eq!(ev, vec![4]);
    }

    #[test]
    fn bytes_are_bounded_by_evicting_the_oldest_holders() {
        let mut r = Registry::new(limits(100, 100, 10_000));
        let (a, _) = r.register(ip("10.0.0.1"), 'a');
        let (b, _) = r.register(ip("10.0.0.2"), 'b');
        let (c, _) = r.register(ip("10.0.0.3"), 'c');
        let (idle, _) = r.register(ip("10.0.0.4"), 'i');
        assert_eq!(r.charge(a, 4000), (true, vec![]));
        assert_eq!(r.charge(b, 4000), (true, vec![]));
        // c needs 4000 more: the oldest holder (a) goes; the idle one holds nothing and stays.
        assert_eq!(r.charge(c, 4000), (true, vec!['a']));
        assert_eq!(r.bytes(), 8000);
        assert!(r.bytes() <= 10_000);
        // Re-charging replaces the old amount.
        assert_eq!(r.charge(b, 100), (true, vec![]));
        assert_eq!(r.bytes(), 4100);
        assert_eq!(r.charge(a, 1), (false, vec![]), "a was evicted");
        assert_eq!(r.done(c), Some('c'));
        assert_eq!(r.bytes(), 100);
        assert_eq!(r.done(idle), Some('i'));
        // More than the whole budget never fits.
        let (d, _) = r.register(ip("10.0.0.5"), 'd');
        assert_eq!(r.charge(d, 20_000), (false, vec!['b']));
    }

    #[test]
    fn a_flood_never_exceeds_the_bounds() {
        let mut r = Registry::new(limits(64, 8, 64 * 1024));
        let mut live = std::collections::HashSet::new();
        for i in 0..5000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i % 97));
            let (id, ev) = r.register(a, i);
            for h in ev {
                assert!(live.remove(&h));
            }
            live.insert(i);
            let (_, ev) = r.charge(id, 4096);
            for h in ev {
                assert!(live.remove(&h));
            }
            assert!(r.len() <= 64 && r.bytes() <= 64 * 1024);
            assert_eq!(r.len(), live.len());
        }
    }
}

//! The daemon's event bus: what `minitorrctl watch` and `wait` follow (`Request::Watch`).
//!
//! * **One way in.** Code that changes something a user may wait for calls
//!   [`EventBus::publish`] with an [`EventKind`] (proto, append-only). Publishing never blocks
//!   and never allocates per subscriber: it is one `tokio::sync::broadcast` send into a fixed
//!   ring of [`CAPACITY`] events shared by every subscriber.
//! * **Slow subscribers cannot hurt.** A subscriber that does not keep up (a client that never
//!   reads its socket) only falls behind in the ring; when it reads again it gets one
//!   `Lagged { missed }` event and continues from the oldest retained event. Its memory is a
//!   cursor into the shared ring plus the one frame being written to its socket, whatever it
//!   does; downloads never wait for it.
//! * **Bounded.** At most [`MAX_SUBSCRIBERS`] streams at once; the next `Watch` is refused.
//! * **Ordered.** `seq` is assigned under the same lock as the send, so every subscriber sees
//!   increasing `seq`.
//!
//! Progress is coalesced at the source with [`ProgressGate`] (a download verifying 500 pieces a
//! second publishes at most 10 `Progress` events a second, plus one when complete).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use minitorr_proto::control::{DaemonEvent, EventFilter, EventKind, PROGRESS_EVERY_MS};

/// Events retained for subscribers that are behind (~200 bytes each).
pub const CAPACITY: usize = 1024;
/// Concurrent `Watch` streams (each `wait` is one while it waits).
pub const MAX_SUBSCRIBERS: usize = 64;

/// Cheap to clone; every clone publishes into the same bus.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// The sender and the next `seq`, together: a `seq` is sent in order.
    tx: Mutex<(broadcast::Sender<Arc<DaemonEvent>>, u64)>,
    subscribers: AtomicUsize,
    max_subscribers: usize,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(CAPACITY, MAX_SUBSCRIBERS)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "too many event subscribers ({0} at once); close a `minitorrctl watch` or `wait` and try again"
)]
pub struct TooManySubscribers(pub usize);

impl EventBus {
    pub fn new(capacity: usize, max_subscribers: usize) -> EventBus {
        let (tx, _) = broadcast::channel(capacity);
        EventBus {
            inner: Arc::new(Inner {
                tx: Mutex::new((tx, 1)),
                subscribers: AtomicUsize::new(0),
                max_subscribers,
            }),
        }
    }

    /// Tell every current subscriber. Never blocks, never fails (no subscriber is fine).
    pub fn publish(&self, kind: EventKind) {
        let at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut guard = self.inner.tx.lock().expect("lock");
        let (tx, seq) = &mut *guard;
        if tx.receiver_count() == 0 {
            // Nobody listens: skip the allocation (seq still counts, so gaps stay meaningful).
            *seq += 1;
            return;
        }
        tracing::trace!(seq = *seq, kind = kind.name(), "event");
        let _ = tx.send(Arc::new(DaemonEvent {
            seq: *seq,
            at_unix_ms,
            kind,
        }));
        *seq += 1;
    }

    /// A new stream of the events published from now on that match `filter`.
    pub fn subscribe(&self, filter: EventFilter) -> Result<Subscription, TooManySubscribers> {
        let max = self.inner.max_subscribers;
        self.inner
            .subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| TooManySubscribers(max))?;
        let rx = self.inner.tx.lock().expect("lock").0.subscribe();
        Ok(Subscription {
            rx,
            filter,
            bus: self.inner.clone(),
        })
    }

    pub fn subscribers(&self) -> usize {
        self.inner.subscribers.load(Ordering::Acquire)
    }
}

/// One subscriber's stream; dropping it frees its slot.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<DaemonEvent>>,
    filter: EventFilter,
    bus: Arc<Inner>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Subscription {
    /// The next matching event; `Lagged` if this subscriber fell behind; `None` once the bus
    /// is gone (daemon shutting down).
    pub async fn next(&mut self) -> Option<DaemonEvent> {
        loop {
            match self.rx.recv().await {
                Ok(ev) if self.filter.matches(&ev.kind) => return Some((*ev).clone()),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let at_unix_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    return Some(DaemonEvent {
                        seq: 0,
                        at_unix_ms,
                        kind: EventKind::Lagged { missed },
                    });
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Coalescing of one download's progress events: at most one per `every`, and a change that
/// was held back is flushed once `every` has passed (so the last numbers before a stall are
/// not lost). Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub struct ProgressGate {
    every: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

impl Default for ProgressGate {
    fn default() -> Self {
        ProgressGate::new(Duration::from_millis(PROGRESS_EVERY_MS))
    }
}

impl ProgressGate {
    pub fn new(every: Duration) -> ProgressGate {
        ProgressGate {
            every,
            last_sent: None,
            pending: false,
        }
    }

    /// Progress changed at `now`: true if an event should be published now (else it is held).
    pub fn offer(&mut self, now: Instant) -> bool {
        self.pending = true;
        self.poll(now)
    }

    /// True if a held-back change is due at `now` (then it counts as sent).
    pub fn poll(&mut self, now: Instant) -> bool {
        let due = self.pending
            && self
                .last_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= self.every);
        if due {
            self.pending = false;
            self.last_sent = Some(now);
        }
        due
    }

    /// When a held-back change becomes due, if one is held.
    pub fn next_due(&self) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (true, Some(t)) => Some(t + self.every),
            (true, None) => Some(Instant::now()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minitorr_proto::control::DownloadRef;

    fn started(file: &str) -> EventKind {
        EventKind::DownloadStarted {
            download: DownloadRef {
                group: "g1".into(),
                file: file.into(),
                dest: "/d".into(),
            },
            size: 1,
            pieces_done: 0,
            pieces_total: 1,
        }
    }

    #[tokio::test]
    async fn subscribers_get_events_in_order_with_increasing_seq() {
        let bus = EventBus::new(16, 4);
        bus.publish(started("before")); // nobody subscribed yet: not delivered
        let mut a = bus.subscribe(EventFilter::default()).unwrap();
        let mut b = bus
            .subscribe(EventFilter {
                group: Some("g1".into()),
                file: Some("x".into()),
            })
            .unwrap();
        for f in ["x", "y", "x"] {
            bus.publish(started(f));
        }
        let seqs: Vec<u64> = [
            a.next().await.unwrap(),
            a.next().await.unwrap(),
            a.next().await.unwrap(),
        ]
        .iter()
        .map(|e| e.seq)
        .collect();
        assert_eq!(seqs, vec![2, 3, 4]);
        // The filtered subscriber sees only the two events about x.
        assert_eq!(b.next().await.unwrap().seq, 2);
        assert_eq!(b.next().await.unwrap().seq, 4);
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_lagged_and_memory_stays_bounded() {
        let bus = EventBus::new(8, 4);
        let mut slow = bus.subscribe(EventFilter::default()).unwrap();
        let mut fast = bus.subscribe(EventFilter::default()).unwrap();
        for i in 0..100 {
            bus.publish(started(&format!("f{i}")));
            // The fast one keeps up; the slow one never reads.
            assert_eq!(fast.next().await.unwrap().seq, i + 1);
        }
        // The ring held 8; the slow one lost the other 92 and is told so, once.
        let first = slow.next().await.unwrap();
        assert_eq!(first.kind, EventKind::Lagged { missed: 92 });
        assert_eq!(slow.next().await.unwrap().seq, 93);
        assert!(
            bus.inner.tx.lock().unwrap().0.len() <= 8,
            "the ring never grows"
        );
    }

    #[test]
    fn subscribers_are_bounded_and_slots_come_back() {
        let bus = EventBus::new(8, 2);
        let a = bus.subscribe(EventFilter::default()).unwrap();
        let _b = bus.subscribe(EventFilter::default()).unwrap();
        assert_eq!(
            bus.subscribe(EventFilter::default()).err(),
            Some(TooManySubscribers(2))
        );
        drop(a);
        assert_eq!(bus.subscribers(), 1);
        assert!(bus.subscribe(EventFilter::default()).is_ok());
    }

    #[test]
    fn progress_is_coalesced_to_one_per_interval_with_a_trailing_flush() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut g = ProgressGate::new(Duration::from_millis(100));
        assert_eq!(g.next_due(), None);
        // A fast download: a piece every millisecond for one second.
        let sent = (0..1000).filter(|&i| g.offer(ms(i))).count();
        assert!((10..=11).contains(&sent), "{sent} events in 1 s");
        // The last pieces were held back; they are flushed once the interval has passed.
        let due = g.next_due().expect("a change is pending");
        assert!(due <= ms(1100));
        assert!(!g.poll(due - Duration::from_millis(1)));
        assert!(g.poll(due));
        assert_eq!(g.next_due(), None);
        assert!(!g.poll(ms(5000)), "nothing pending, nothing sent");
        // After a quiet spell the next change goes out at once.
        assert!(g.offer(ms(6000)));
    }
}

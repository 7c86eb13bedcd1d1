//! The relay's bookkeeping, without sockets: which holders listen, which circuits are waiting
//! for their holder, and the limits. Pure and synchronous (a `std::sync::Mutex` around it,
//! never held across an await), so the pairing rules are unit-tested on their own.
//!
//! Generic over the stream type `S` handed from the holder's `Accept` connection to the
//! downloader's `Connect` task (a `TcpStream` in trackerd, an in-memory pipe in tests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use minitorr_proto::relay::{CircuitId, RelayRefusal};
use tokio::sync::{mpsc, oneshot};

/// How many `Incoming` notices may queue for one holder before more are refused as busy.
const INCOMING_QUEUE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    pub max_circuits: usize,
    pub max_circuits_per_user: usize,
    pub max_listeners: usize,
}

/// What a listening holder is told: a downloader wants circuit `circuit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub circuit: CircuitId,
    pub from_user: String,
    pub from_key: [u8; 32],
}

struct Listener {
    user: String,
    id: u64,
    tx: mpsc::Sender<Incoming>,
}

struct Pending<S> {
    holder_key: [u8; 32],
    tx: oneshot::Sender<S>,
}

struct Inner<S> {
    limits: RelayLimits,
    listeners: HashMap<[u8; 32], Listener>,
    pending: HashMap<CircuitId, Pending<S>>,
    circuits: usize,
    per_user: HashMap<String, usize>,
    next_id: u64,
}

/// Shared by every relay connection task.
pub struct RelayBook<S> {
    inner: Arc<Mutex<Inner<S>>>,
}

impl<S> Clone for RelayBook<S> {
    fn clone(&self) -> Self {
        RelayBook {
            inner: self.inner.clone(),
        }
    }
}

/// A registered listener; dropping it unregisters (unless a newer listener of the same key
/// replaced it meanwhile).
pub struct ListenGuard<S: Send + 'static> {
    book: RelayBook<S>,
    key: [u8; 32],
    id: u64,
}

impl<S: Send + 'static> Drop for ListenGuard<S> {
    fn drop(&mut self) {
        let mut b = self.book.inner.lock().expect("lock");
        if b.listeners.get(&self.key).is_some_and(|l| l.id == self.id) {
            b.listeners.remove(&self.key);
        }
    }
}

/// One circuit counted against the limits, from `Connect` until the splice ends; dropping it
/// frees its place (and forgets it if the holder never accepted).
pub struct CircuitGuard<S: Send + 'static> {
    book: RelayBook<S>,
    circuit: CircuitId,
    user: String,
}

impl<S: Send + 'static> Drop for CircuitGuard<S> {
    fn drop(&mut self) {
        let mut b = self.book.inner.lock().expect("lock");
        b.pending.remove(&self.circuit);
        b.circuits -= 1;
        if let Some(n) = b.per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                b.per_user.remove(&self.user);
            }
        }
    }
}

impl<S: Send + 'static> std::fmt::Debug for ListenGuard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ListenGuard({})", self.id)
    }
}

impl<S: Send + 'static> std::fmt::Debug for CircuitGuard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CircuitGuard({})", self.user)
    }
}

impl<S: Send + 'static> RelayBook<S> {
    pub fn new(limits: RelayLimits) -> Self {
        RelayBook {
            inner: Arc::new(Mutex::new(Inner {
                limits,
                listeners: HashMap::new(),
                pending: HashMap::new(),
                circuits: 0,
                per_user: HashMap::new(),
                next_id: 0,
            })),
        }
    }

    /// Register `key` (of `user`) as listening. A second listener of the same key replaces
    /// the first (a daemon that reconnected): the old one's receiver closes.
    pub fn listen(
        &self,
        key: [u8; 32],
        user: &str,
    ) -> Result<(ListenGuard<S>, mpsc::Receiver<Incoming>), RelayRefusal> {
        let mut b = self.inner.lock().expect("lock");
        if !b.listeners.contains_key(&key) && b.listeners.len() >= b.limits.max_listeners {
            return Err(RelayRefusal::Busy);
        }
        b.next_id += 1;
        let id = b.next_id;
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        b.listeners.insert(
            key,
            Listener {
                user: user.to_string(),
                id,
                tx,
            },
        );
        Ok((
            ListenGuard {
                book: self.clone(),
                key,
                id,
            },
            rx,
        ))
    }

    /// The user of the holder listening with `key`, if one is.
    pub fn listener_user(&self, key: &[u8; 32]) -> Option<String> {
        let b = self.inner.lock().expect("lock");
        b.listeners.get(key).map(|l| l.user.clone())
    }

    /// A downloader (`user`, `key`) asks for a circuit to the holder listening with
    /// `holder_key` (whose right to be joined the caller checked). Counts it against the
    /// limits, tells the holder, and returns the receiver of the holder's stream.
    pub fn open(
        &self,
        user: &str,
        key: [u8; 32],
        holder_key: [u8; 32],
        circuit: CircuitId,
    ) -> Result<(CircuitGuard<S>, oneshot::Receiver<S>), RelayRefusal> {
        let mut b = self.inner.lock().expect("lock");
        let Some(listener) = b.listeners.get(&holder_key) else {
            return Err(RelayRefusal::HolderNotListening);
        };
        let listener_tx = listener.tx.clone();
        if b.circuits >= b.limits.max_circuits
            || b.per_user.get(user).copied().unwrap_or(0) >= b.limits.max_circuits_per_user
            || b.pending.contains_key(&circuit)
        {
            return Err(RelayRefusal::Busy);
        }
        let notice = Incoming {
            circuit,
            from_user: user.to_string(),
            from_key: key,
        };
        match listener_tx.try_send(notice) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(RelayRefusal::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(RelayRefusal::HolderNotListening)
            }
        }
        let (tx, rx) = oneshot::channel();
        b.pending.insert(circuit, Pending { holder_key, tx });
        b.circuits += 1;
        *b.per_user.entry(user.to_string()).or_default() += 1;
        drop(b);
        Ok((
            CircuitGuard {
                book: self.clone(),
                circuit,
                user: user.to_string(),
            },
            rx,
        ))
    }

    /// The holder with `key` brings its end of `circuit`. Only the key the circuit was opened
    /// for may; anyone else (or a late or repeated accept) gets `NoSuchCircuit` and the
    /// circuit stays for its holder. On error the stream is handed back.
    pub fn accept(
        &self,
        circuit: CircuitId,
        key: [u8; 32],
        stream: S,
    ) -> Result<(), (RelayRefusal, S)> {
        let mut b = self.inner.lock().expect("lock");
        match b.pending.get(&circuit) {
            Some(p) if p.holder_key == key => {}
            _ => return Err((RelayRefusal::NoSuchCircuit, stream)),
        }
        let p = b.pending.remove(&circuit).expect("checked above");
        drop(b);
        p.tx.send(stream)
            .map_err(|stream| (RelayRefusal::NoSuchCircuit, stream))
    }

    /// Circuits counted now (pending or spliced), all users.
    pub fn circuits(&self) -> usize {
        self.inner.lock().expect("lock").circuits
    }

    /// Holders listening now.
    pub fn listeners(&self) -> usize {
        self.inner.lock().expect("lock").listeners.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: [u8; 32] = [1; 32];
    const D: [u8; 32] = [2; 32];

    fn book(max_circuits: usize, per_user: usize, listeners: usize) -> RelayBook<u32> {
        RelayBook::new(RelayLimits {
            max_circuits,
            max_circuits_per_user: per_user,
            max_listeners: listeners,
        })
    }

    #[tokio::test]
    async fn a_circuit_pairs_the_downloader_with_the_holder_it_named() {
        let b = book(8, 8, 8);
        let (_l, mut incoming) = b.listen(H, "holder").unwrap();
        assert_eq!(b.listener_user(&H).as_deref(), Some("holder"));
        let (guard, rx) = b.open("dl", D, H, [7; 16]).unwrap();
        let notice = incoming.recv().await.unwrap();
        assert_eq!(notice.circuit, [7; 16]);
        assert_eq!(notice.from_user, "dl");
        assert_eq!(notice.from_key, D);
        // Another device key cannot take the holder's place.
        assert_eq!(
            b.accept([7; 16], D, 5).unwrap_err().0,
            RelayRefusal::NoSuchCircuit
        );
        b.accept([7; 16], H, 42).unwrap();
        assert_eq!(rx.await.unwrap(), 42);
        // Single use.
        assert_eq!(
            b.accept([7; 16], H, 43).unwrap_err().0,
            RelayRefusal::NoSuchCircuit
        );
        assert_eq!(b.circuits(), 1);
        drop(guard);
        assert_eq!(b.circuits(), 0);
    }

    #[test]
    fn nobody_listening_is_said_so() {
        let b = book(8, 8, 8);
        assert_eq!(
            b.open("dl", D, H, [1; 16]).unwrap_err(),
            RelayRefusal::HolderNotListening
        );
        let (l, rx) = b.listen(H, "holder").unwrap();
        drop(rx);
        assert_eq!(
            b.open("dl", D, H, [1; 16]).unwrap_err(),
            RelayRefusal::HolderNotListening
        );
        drop(l);
        assert_eq!(b.listeners(), 0);
    }

    #[test]
    fn limits_per_user_and_in_total_count_pending_and_spliced_circuits() {
        let b = book(3, 2, 8);
        let (_l, _rx) = b.listen(H, "holder").unwrap();
        let a1 = b.open("a", D, H, [1; 16]).unwrap();
        let _a2 = b.open("a", D, H, [2; 16]).unwrap();
        assert_eq!(b.open("a", D, H, [3; 16]).unwrap_err(), RelayRefusal::Busy);
        let _b1 = b.open("b", [3; 32], H, [4; 16]).unwrap();
        // Total reached: even a user with room is refused.
        assert_eq!(
            b.open("c", [4; 32], H, [5; 16]).unwrap_err(),
            RelayRefusal::Busy
        );
        drop(a1);
        // The freed place is usable again, and the dropped pending circuit is forgotten.
        assert_eq!(
            b.accept([1; 16], H, 9).unwrap_err().0,
            RelayRefusal::NoSuchCircuit
        );
        b.open("a", D, H, [6; 16]).unwrap();
    }

    #[test]
    fn listeners_are_capped_and_a_reconnecting_holder_replaces_itself() {
        let b = book(8, 8, 2);
        let (old, _rx_old) = b.listen(H, "holder").unwrap();
        let (_new, mut rx_new) = b.listen(H, "holder").unwrap();
        let (_d, _rx_d) = b.listen(D, "dl").unwrap();
        assert_eq!(b.listen([9; 32], "x").unwrap_err(), RelayRefusal::Busy);
        // The replaced listener going away does not unregister its successor.
        drop(old);
        assert_eq!(b.listeners(), 2);
        let _c = b.open("dl", D, H, [1; 16]).unwrap();
        assert_eq!(rx_new.try_recv().unwrap().circuit, [1; 16]);
    }

    #[test]
    fn a_circuit_id_in_use_is_not_reused() {
        let b = book(8, 8, 8);
        let (_l, _rx) = b.listen(H, "holder").unwrap();
        let _c = b.open("a", D, H, [1; 16]).unwrap();
        assert_eq!(b.open("b", D, H, [1; 16]).unwrap_err(), RelayRefusal::Busy);
    }
}

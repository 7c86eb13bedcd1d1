//! Hole punching (issue #14): TCP simultaneous open from the peer port, coordinated by the
//! tracker (`Call::Punch` → `EventKind::PunchRequest`).
//!
//! Both sides connect from the port they listen on (the listener and the connecting sockets
//! share it through SO_REUSEPORT) to the address the tracker knows for the other. Behind a
//! port-preserving NAT each outgoing SYN opens the mapping the other side's SYN then arrives
//! through; the kernel turns the crossing SYNs into one connection (RFC 793 simultaneous open).
//! When the holder's SYN instead reaches the downloader's listener (the holder is behind a
//! symmetric NAT and the downloader accepts connections), the listener recognises the punch
//! preamble and hands the stream to the waiting attempt ([`PunchWaiters`]).
//!
//! Whatever way the TCP connection came about, the holder writes
//! [`minitorr_proto::handshake::punch_preamble`] first and the downloader checks the nonce, then
//! the downloader starts TLS exactly as on a direct connection (pinning the holder's device
//! key; the holder checks the ticket is bound to the downloader's key): a punched link is the
//! same authenticated, encrypted link.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use minitorr_proto::handshake::{parse_punch_preamble, punch_preamble, PREAMBLE_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// How long both sides keep trying (their attempts must overlap; the tracker's push takes a
/// round trip or two).
pub const PUNCH_WINDOW: Duration = Duration::from_secs(5);
/// One connect attempt inside the window: the kernel retransmits a SYN after 1 s, and a fresh
/// socket every 1.5 s sends one more.
const ATTEMPT: Duration = Duration::from_millis(1500);
/// Pause after an attempt that failed at once (e.g. a reset).
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Punch attempts a downloader waits on at once, at most (limits before memory).
const MAX_WAITERS: usize = 256;
/// Holder side: punches carried out at once, at most (a hostile member cannot make this
/// daemon open connections without bound).
pub const MAX_HOLDER_PUNCHES: usize = 8;

/// A TCP socket bound to `local` that may share its port with the listener (SO_REUSEADDR and
/// SO_REUSEPORT; Linux only lets sockets of the same user share a port this way).
pub fn reusable_socket(local: SocketAddr) -> std::io::Result<TcpSocket> {
    let s = if local.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(local)?;
    Ok(s)
}

/// The peer listener, bound so that punch attempts can connect from its port. A plain bind
/// first: SO_REUSEPORT would otherwise let a second daemon of the same user share the port
/// (and half the incoming connections) instead of failing to start.
pub fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let probe = std::net::TcpListener::bind(addr)?;
    let addr = probe.local_addr()?; // port 0: keep the one the kernel chose
    drop(probe);
    reusable_socket(addr)?.listen(1024)
}

/// Connect from `local` (our peer port) to `remote` again and again until it works or
/// `window` is over.
pub async fn simultaneous_open(
    local: SocketAddr,
    remote: SocketAddr,
    window: Duration,
) -> Result<TcpStream, String> {
    let deadline = Instant::now() + window;
    let mut last = String::from("no attempt made");
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let sock = reusable_socket(local).map_err(|e| format!("cannot bind {local}: {e}"))?;
        match tokio::time::timeout(ATTEMPT.min(left), sock.connect(remote)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => {
                last = e.to_string();
                tokio::time::sleep(RETRY_PAUSE.min(left)).await;
            }
            Err(_) => last = "no answer".into(),
        }
    }
    Err(format!("hole punch to {remote} failed ({last})"))
}

/// Downloader side: read and check the holder's punch preamble.
pub async fn expect_preamble(stream: &mut TcpStream, nonce: &[u8; 16]) -> Result<(), String> {
    let mut buf = [0u8; PREAMBLE_LEN + 16];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .map_err(|_| "punched connection: no preamble".to_string())?
        .map_err(|e| format!("punched connection: {e}"))?;
    let got = parse_punch_preamble(&buf).map_err(|e| format!("punched connection: {e}"))?;
    if got != *nonce {
        return Err("punched connection answered another attempt".into());
    }
    Ok(())
}

/// Holder side: open a punched connection with the preamble.
pub async fn send_preamble(stream: &mut TcpStream, nonce: &[u8; 16]) -> std::io::Result<()> {
    stream.write_all(&punch_preamble(nonce)).await
}

/// Downloader side: punch attempts waiting for the holder's connection to land on our listener.
#[derive(Default)]
pub struct PunchWaiters {
    inner: Mutex<HashMap<[u8; 16], oneshot::Sender<TcpStream>>>,
}

impl PunchWaiters {
    /// Wait for `nonce`; `None` when too many attempts wait already.
    pub fn register(&self, nonce: [u8; 16]) -> Option<oneshot::Receiver<TcpStream>> {
        let mut m = self.inner.lock().expect("lock");
        m.retain(|_, tx| !tx.is_closed());
        if m.len() >= MAX_WAITERS {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        m.insert(nonce, tx);
        Some(rx)
    }

    /// A connection with this nonce arrived on the listener: hand it over (false if nobody
    /// waits for it — a stale or forged preamble; the caller drops the connection).
    pub fn deliver(&self, nonce: &[u8; 16], stream: TcpStream) -> bool {
        let tx = self.inner.lock().expect("lock").remove(nonce);
        match tx {
            Some(tx) => tx.send(stream).is_ok(),
            None => false,
        }
    }

    pub fn forget(&self, nonce: &[u8; 16]) {
        self.inner.lock().expect("lock").remove(nonce);
    }
}

/// What the peer server and the daemon share for punching: the downloader's waiting attempts,
/// and the holder's punched connections on their way into the peer server (which serves them
/// exactly like accepted ones).
pub struct PunchHub {
    pub waiters: PunchWaiters,
    pub incoming: tokio::sync::mpsc::Sender<(TcpStream, SocketAddr)>,
    incoming_rx: Mutex<Option<tokio::sync::mpsc::Receiver<(TcpStream, SocketAddr)>>>,
    /// Holder-side punches in progress (bounded by [`MAX_HOLDER_PUNCHES`]).
    pub holder_slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Default for PunchHub {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(MAX_HOLDER_PUNCHES);
        PunchHub {
            waiters: PunchWaiters::default(),
            incoming: tx,
            incoming_rx: Mutex::new(Some(rx)),
            holder_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_HOLDER_PUNCHES)),
        }
    }
}

impl PunchHub {
    /// The receiving end of `incoming`, for the peer server (once).
    pub fn take_incoming(&self) -> Option<tokio::sync::mpsc::Receiver<(TcpStream, SocketAddr)>> {
        self.incoming_rx.lock().expect("lock").take()
    }
}

/// Listener side: if `stream` starts with a punch preamble, read it and return its nonce;
/// `Ok(None)` if it is something else (nothing consumed).
pub async fn peek_punch(stream: &TcpStream) -> std::io::Result<Option<[u8; 16]>> {
    let mut head = [0u8; PREAMBLE_LEN];
    // The preamble is 9 bytes in one segment; wait a little for all of it.
    for _ in 0..50 {
        let n = stream.peek(&mut head).await?;
        if n == 0 {
            return Ok(None);
        }
        if n >= PREAMBLE_LEN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if head[..6] != minitorr_proto::handshake::MAGIC || head[6] != minitorr_proto::Link::Punch as u8
    {
        return Ok(None);
    }
    let mut buf = [0u8; PREAMBLE_LEN + 16];
    let mut got = 0;
    while got < buf.len() {
        // Read exactly the preamble and nonce off the socket (peek + read, no buffering that
        // would swallow the TLS bytes that follow).
        stream.readable().await?;
        match stream.try_read(&mut buf[got..]) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(parse_punch_preamble(&buf).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_and_connections_share_the_peer_port() {
        let l = listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap();
        let other = listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let target = other.local_addr().unwrap();
        let mut s = simultaneous_open(port, target, Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(
            s.local_addr().unwrap(),
            port,
            "connected from the listening port"
        );
        let (mut accepted, from) = other.accept().await.unwrap();
        assert_eq!(from, port);
        // The holder's preamble and nonce, then bytes that stay unread by the check.
        let nonce = [7u8; 16];
        send_preamble(&mut accepted, &nonce).await.unwrap();
        accepted.write_all(b"tls").await.unwrap();
        expect_preamble(&mut s, &nonce).await.unwrap();
        let mut rest = [0u8; 3];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"tls");
    }

    #[tokio::test]
    async fn the_listener_recognises_a_punch_and_leaves_other_bytes_alone() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let (a, _) = l.accept().await.unwrap();
        send_preamble(&mut c, &[1; 16]).await.unwrap();
        c.write_all(b"\x16rest").await.unwrap();
        assert_eq!(peek_punch(&a).await.unwrap(), Some([1; 16]));
        let mut a = a;
        let mut rest = [0u8; 5];
        a.read_exact(&mut rest).await.unwrap();
        assert_eq!(
            &rest, b"\x16rest",
            "TLS bytes after the preamble are untouched"
        );

        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        c2.write_all(b"\x16\x03\x01 a TLS ClientHello")
            .await
            .unwrap();
        assert_eq!(peek_punch(&b).await.unwrap(), None);
    }

    #[tokio::test]
    async fn waiters_deliver_once_and_refuse_unknown_nonces() {
        let w = PunchWaiters::default();
        let rx = w.register([2; 16]).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        assert!(!w.deliver(
            &[3; 16],
            TcpStream::connect(l.local_addr().unwrap()).await.unwrap()
        ));
        assert!(w.deliver(&[2; 16], c));
        assert!(rx.await.is_ok());
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        assert!(!w.deliver(&[2; 16], c), "only once");
    }
}

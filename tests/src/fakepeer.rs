//! A hand-driven peer built from the codec crate: it logs in to the tracker like a daemon,
//! announces a file, and then serves whatever the test wants — e.g. corrupted pieces. Peer
//! links are TLS with a device key of the test's choosing (minitorrd's own `peerlink` code, so
//! the fake speaks exactly what a daemon speaks, with whatever key or ticket it is given).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rand::RngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use minitorr_proto::peer::PeerMsg;
use minitorr_proto::ticket::Ticket;
use minitorr_proto::tracker::{Call, Request, Response};
use minitorr_proto::types::{Bitfield, FileMeta, Sha1Hash};
use minitorr_proto::{handshake, links, Link};
pub use minitorrd::peerlink::tls::TlsStream;
pub use minitorrd::peerlink::{DeviceKey, PeerTls};

/// A peer connection after the Minitorr handshake, over any stream.
pub type PeerConn<S> = Framed<S, minitorr_proto::FrameCodec<PeerMsg, PeerMsg>>;

/// The metadata minitorrd registers for `data` with its default (automatic) piece size.
pub fn meta_as_shared(name: &str, data: &[u8]) -> FileMeta {
    let ps = minitorr_proto::item::piece_size_for(&[data.len() as u64], None).expect("fits");
    meta_for(name, data, ps)
}

/// Compute the metadata minitorrd would register for `data` with `piece_size` pieces.
pub fn meta_for(name: &str, data: &[u8], piece_size: u32) -> FileMeta {
    use sha1::{Digest, Sha1};
    let h = |d: &[u8]| Sha1Hash(Sha1::digest(d).into());
    FileMeta {
        name: name.into(),
        size: data.len() as u64,
        piece_size,
        sha1: h(data),
        pieces: data.chunks(piece_size as usize).map(h).collect(),
        tree: None,
    }
}

/// A raw tracker client session.
pub struct TrackerClient {
    conn: Framed<TcpStream, minitorr_proto::FrameCodec<Response, Request>>,
    pub token: Option<String>,
    /// The device key this client logs in with (fresh per client unless replaced).
    pub device: DeviceKey,
}

impl TrackerClient {
    pub async fn connect(addr: SocketAddr) -> TrackerClient {
        Self::connect_from(addr, "127.0.0.1".parse().unwrap()).await
    }

    /// Connect from source address `from` (any 127.x.y.z works on loopback), so per-address
    /// limits can be told apart from per-user ones.
    pub async fn connect_from(addr: SocketAddr, from: IpAddr) -> TrackerClient {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(from, 0)).unwrap();
        let mut s = sock.connect(addr).await.unwrap();
        handshake(&mut s, Link::Tracker).await.unwrap();
        TrackerClient {
            conn: Framed::new(s, links::tracker_client()),
            token: None,
            device: DeviceKey::generate(),
        }
    }

    pub async fn call(&mut self, call: Call) -> Response {
        self.conn
            .send(Request {
                token: self.token.clone(),
                call,
            })
            .await
            .unwrap();
        self.conn.next().await.unwrap().unwrap()
    }

    pub async fn login(&mut self, user: &str, password: &str, peer_addr: SocketAddr) {
        match self.try_login(user, password, peer_addr).await {
            Response::LoggedIn(_) => {}
            other => panic!("login failed: {other:?}"),
        }
    }

    /// Log in and keep the token if it worked; the tracker's answer either way.
    pub async fn try_login(
        &mut self,
        user: &str,
        password: &str,
        peer_addr: SocketAddr,
    ) -> Response {
        let r = self
            .call(Call::Login {
                user: user.into(),
                password: password.into(),
                peer_addr: peer_addr.to_string(),
                device_key: self.device.public_bytes(),
            })
            .await;
        if let Response::LoggedIn(g) = &r {
            self.token = Some(g.token.clone());
        }
        r
    }
}

/// Serve `meta` over TLS as `device`, answering every request with random bytes of the right
/// length.
pub async fn serve_garbage(listener: TcpListener, meta: FileMeta, device: DeviceKey) {
    serve_tls(listener, device, meta, |_, len| {
        let mut data = vec![0u8; len];
        rand::thread_rng().fill_bytes(&mut data);
        data
    })
    .await
}

/// Serve `meta` over TLS as `device` to any client with any ticket, piece bytes from
/// `piece(index, len)`. Counts connections whose TLS handshake completed in `handshakes`.
pub async fn serve_tls_counting(
    listener: TcpListener,
    device: DeviceKey,
    meta: FileMeta,
    piece: impl Fn(u32, usize) -> Vec<u8> + Send + Sync + 'static,
    handshakes: Arc<std::sync::atomic::AtomicUsize>,
) {
    let tls = Arc::new(PeerTls::new(&device).unwrap());
    let piece = Arc::new(piece);
    loop {
        let Ok((s, _)) = listener.accept().await else {
            return;
        };
        let (meta, tls, piece, handshakes) =
            (meta.clone(), tls.clone(), piece.clone(), handshakes.clone());
        tokio::spawn(async move {
            let Ok((mut s, _client_key)) = tls.accept(s).await else {
                return;
            };
            handshakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if handshake(&mut s, Link::Peer).await.is_err() {
                return;
            }
            let mut f = Framed::new(s, links::peer());
            if !matches!(f.next().await, Some(Ok(PeerMsg::Hello { .. }))) {
                return;
            }
            let _ = f
                .send(PeerMsg::Welcome {
                    have: Bitfield::full(meta.piece_count()),
                })
                .await;
            while let Some(Ok(msg)) = f.next().await {
                if let PeerMsg::Request { piece: i } = msg {
                    let data = piece(i, meta.piece_len(i) as usize);
                    if f.send(PeerMsg::Piece {
                        piece: i,
                        data: Bytes::from(data),
                    })
                    .await
                    .is_err()
                    {
                        return;
                    }
                }
            }
        });
    }
}

/// [`serve_tls_counting`] without the count.
pub async fn serve_tls(
    listener: TcpListener,
    device: DeviceKey,
    meta: FileMeta,
    piece: impl Fn(u32, usize) -> Vec<u8> + Send + Sync + 'static,
) {
    serve_tls_counting(listener, device, meta, piece, Default::default()).await
}

/// TLS to the seeder at `addr` as `device`, accepting only `seeder_key`, then the Minitorr
/// handshake.
pub async fn tls_connect(
    addr: SocketAddr,
    device: &DeviceKey,
    seeder_key: [u8; 32],
) -> std::io::Result<PeerConn<TlsStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let mut s = PeerTls::new(device)
        .map_err(std::io::Error::other)?
        .connect(tcp, seeder_key)
        .await?;
    handshake(&mut s, Link::Peer)
        .await
        .map_err(std::io::Error::other)?;
    Ok(Framed::new(s, links::peer()))
}

/// A plaintext peer connection (what a daemon in benchmark mode, or an old client, opens).
pub async fn plaintext_connect(addr: SocketAddr) -> std::io::Result<PeerConn<TcpStream>> {
    let mut s = TcpStream::connect(addr).await?;
    handshake(&mut s, Link::Peer)
        .await
        .map_err(std::io::Error::other)?;
    Ok(Framed::new(s, links::peer()))
}

/// Send `Hello` with `ticket`; the seeder's first answer (None: closed or 5 s of silence).
pub async fn say_hello<S>(conn: &mut PeerConn<S>, ticket: Ticket) -> Option<PeerMsg>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    conn.send(PeerMsg::Hello { ticket }).await.ok()?;
    match tokio::time::timeout(std::time::Duration::from_secs(5), conn.next()).await {
        Ok(Some(Ok(m))) => Some(m),
        _ => None,
    }
}

/// After `Welcome`: request every piece of `meta` and return the file's bytes.
pub async fn fetch_all<S>(conn: &mut PeerConn<S>, meta: &FileMeta) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut out = vec![0u8; meta.size as usize];
    for i in 0..meta.piece_count() {
        conn.send(PeerMsg::Request { piece: i }).await.unwrap();
        loop {
            match conn.next().await {
                Some(Ok(PeerMsg::Piece { piece, data })) if piece == i => {
                    let at = meta.piece_offset(i) as usize;
                    out[at..at + data.len()].copy_from_slice(&data);
                    break;
                }
                Some(Ok(_)) => continue,
                other => panic!("piece {i}: {other:?}"),
            }
        }
    }
    out
}

/// A TCP proxy to `target` that records every byte crossing it, both directions — what a
/// passive observer of the network sees.
pub struct RecordingProxy {
    pub addr: SocketAddr,
    pub captured: Arc<Mutex<Vec<u8>>>,
}

impl RecordingProxy {
    pub async fn start(target: SocketAddr) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let captured = Arc::new(Mutex::new(Vec::new()));
        let cap = captured.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, cap.clone()));
                tokio::spawn(pump(sr, cw, cap.clone()));
            }
        });
        RecordingProxy { addr, captured }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cap: Arc<Mutex<Vec<u8>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        cap.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Hostile clients of the tracker port that never log in (an outsider needs no account).
pub mod outsider {
    use std::net::{IpAddr, SocketAddr};
    use std::time::Duration;

    use minitorr_proto::handshake::preamble;
    use minitorr_proto::{Link, PROTOCOL_VERSION};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Connect to `addr` from `from` (any 127.x.y.z on loopback) and send the tracker preamble,
    /// nothing more. `None` if the connection was refused or reset at once.
    pub async fn preamble_only(addr: SocketAddr, from: IpAddr) -> Option<TcpStream> {
        let sock = tokio::net::TcpSocket::new_v4().ok()?;
        sock.bind(SocketAddr::new(from, 0)).ok()?;
        let mut s = sock.connect(addr).await.ok()?;
        s.write_all(&preamble(Link::Tracker, PROTOCOL_VERSION))
            .await
            .ok()?;
        Some(s)
    }

    /// Preamble, then the length prefix of an `announced`-byte request (no session token: the
    /// body starts with a `None` tag) and up to `body` bytes of it, written in 64 KiB chunks
    /// while the tracker takes them (each chunk given `patience`). Returns the connection,
    /// still open from our side, and how many body bytes the tracker accepted.
    pub async fn stalled_frame(
        addr: SocketAddr,
        from: IpAddr,
        announced: u32,
        body: usize,
        patience: Duration,
    ) -> Option<(TcpStream, usize)> {
        let mut s = preamble_only(addr, from).await?;
        s.write_all(&announced.to_be_bytes()).await.ok()?;
        let chunk = vec![0u8; 64 * 1024];
        let mut sent = 0;
        while sent < body {
            let n = chunk.len().min(body - sent);
            match tokio::time::timeout(patience, s.write_all(&chunk[..n])).await {
                Ok(Ok(())) => sent += n,
                _ => break, // refused (reset) or not read any more: stall here
            }
        }
        Some((s, sent))
    }

    /// True once the tracker has closed `s` (EOF or reset); reads and drops what it sent.
    pub async fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
        let mut b = [0u8; 4096];
        loop {
            match tokio::time::timeout(wait, s.read(&mut b)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue, // its preamble or an error answer
            }
        }
    }
}
/// A hostile (or just hand-driven) group member: a raw tracker session that gets tickets, and
/// raw peer connections that hold them open to a seeder.
pub struct FakeMember {
    pub tracker: TrackerClient,
}

/// The device keys of every `FakeMember` of this test process, by public key, and the device
/// keys the tracker listed for holders, by address. A ticket is bound to its member's device
/// key, so `open_peer(seeder, ticket)` can speak TLS as exactly the device the ticket names
/// (and pin the seeder's listed key) without every call site carrying both keys around.
static DEVICES: std::sync::LazyLock<Mutex<std::collections::HashMap<[u8; 32], DeviceKey>>> =
    std::sync::LazyLock::new(Default::default);
static HOLDER_KEYS: std::sync::LazyLock<Mutex<std::collections::HashMap<String, [u8; 32]>>> =
    std::sync::LazyLock::new(Default::default);

/// A member's peer connection to a seeder, as a downloader sees it.
pub type MemberConn = PeerConn<TlsStream>;

impl FakeMember {
    /// Create `user` (password `<user>-pw`) on the tracker at `addr` and log in. The peer
    /// address announced is a port nobody listens on: this member only downloads.
    pub async fn create(addr: SocketAddr, user: &str) -> FakeMember {
        let mut tracker = TrackerClient::connect(addr).await;
        let password = format!("{user}-pw");
        let r = tracker
            .call(Call::CreateUser {
                user: user.into(),
                password: password.clone(),
            })
            .await;
        assert!(matches!(r, Response::Ok { .. }), "create {user}: {r:?}");
        tracker
            .login(user, &password, "127.0.0.1:9".parse().unwrap())
            .await;
        DEVICES
            .lock()
            .unwrap()
            .insert(tracker.device.public_bytes(), tracker.device.clone());
        FakeMember { tracker }
    }

    /// Ask to join `group` (the owner must accept).
    pub async fn join(&mut self, group: &str) {
        let r = self
            .tracker
            .call(Call::JoinGroup {
                group: group.into(),
            })
            .await;
        assert!(matches!(r, Response::Ok { .. }), "join {group}: {r:?}");
    }

    pub async fn leave(&mut self, group: &str) {
        let r = self
            .tracker
            .call(Call::LeaveGroup {
                group: group.into(),
            })
            .await;
        assert!(matches!(r, Response::LeftGroup(_)), "leave {group}: {r:?}");
    }

    /// A fresh ticket for `file` of `group`.
    pub async fn ticket(&mut self, group: &str, file: &str) -> minitorr_proto::ticket::Ticket {
        match self
            .tracker
            .call(Call::GetFile {
                group: group.into(),
                file: file.into(),
            })
            .await
        {
            Response::File(d) => {
                let mut holders = HOLDER_KEYS.lock().unwrap();
                for p in &d.peers {
                    holders.insert(p.addr.clone(), p.device_key);
                }
                d.ticket
            }
            other => panic!("get_file {group}/{file}: {other:?}"),
        }
    }
}

/// Connect to a seeder and say `Hello` with `ticket`; returns the connection and its first answer
/// (`Welcome` or `Refused`).
pub async fn open_peer(
    seeder: SocketAddr,
    ticket: minitorr_proto::ticket::Ticket,
) -> (MemberConn, PeerMsg) {
    let device = DEVICES
        .lock()
        .unwrap()
        .get(&ticket.claims.device_key)
        .cloned()
        .expect("ticket of a FakeMember");
    let seeder_key = *HOLDER_KEYS
        .lock()
        .unwrap()
        .get(&seeder.to_string())
        .expect("seeder listed by the tracker in a FakeMember's ticket() call");
    let mut f = tls_connect(seeder, &device, seeder_key).await.unwrap();
    f.send(PeerMsg::Hello { ticket }).await.unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), f.next())
        .await
        .expect("seeder answers Hello")
        .expect("seeder did not close")
        .expect("well-formed answer");
    (f, first)
}

/// Open a connection that is really being served: `Welcome`, then a piece (0 if possible)
/// requested and received.
pub async fn open_served(seeder: SocketAddr, ticket: minitorr_proto::ticket::Ticket) -> MemberConn {
    let (mut f, first) = open_peer(seeder, ticket).await;
    let PeerMsg::Welcome { have } = first else {
        panic!("{first:?}")
    };
    let n = have.len().max(1);
    f.send(PeerMsg::Request { piece: 0 }).await.unwrap();
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), f.next())
            .await
            .expect("a piece arrives")
            .expect("open")
            .expect("well-formed");
        if matches!(m, PeerMsg::Piece { .. }) {
            return f;
        }
        // Initial seeding: that piece already went to another connection; ask for the next
        // one (after every piece once, a little later: a deferred piece is served when asked
        // again after `REASK_AFTER`, sharing/upload_policy.rs).
        if let PeerMsg::Elsewhere { piece } = m {
            let next = (piece + 1) % n;
            if next == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            f.send(PeerMsg::Request { piece: next }).await.unwrap();
        }
    }
}

/// How long until the seeder closes `conn` (EOF or reset), reading and dropping whatever it
/// sends meanwhile; `None` if it is still open after `limit`.
pub async fn time_to_close(
    conn: &mut MemberConn,
    limit: std::time::Duration,
) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    let closed = async { while let Some(Ok(_)) = conn.next().await {} };
    tokio::time::timeout(limit, closed)
        .await
        .ok()
        .map(|()| start.elapsed())
}

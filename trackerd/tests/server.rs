//! Socket-level tests: the server in-process on 127.0.0.1:0, hostile and sloppy clients, and
//! proof that proper clients are still served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use minitorr_proto::tracker::{Call, Request, Response};
use minitorr_proto::{handshake, links, Link};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use trackerd::auth::PasswordHasher;
use trackerd::server::{serve, ServerOptions};
use trackerd::service::{system_clock, Service, Timing};
use trackerd::store::{default_database_url, Store};

struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
    store: Store,
    _dir: tempfile::TempDir,
}

fn opts() -> ServerOptions {
    ServerOptions {
        max_connections: 64,
        handshake_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(5),
        ..ServerOptions::default()
    }
}

async fn start(opts: ServerOptions, hasher: PasswordHasher) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&default_database_url(dir.path()), 4)
        .await
        .unwrap();
    let svc = Arc::new(
        Service::new(store.clone(), Timing::default(), hasher, system_clock())
            .await
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, svc, opts, stop.clone()));
    Running {
        addr,
        stop,
        task,
        store,
        _dir: dir,
    }
}

type Client = Framed<TcpStream, minitorr_proto::FrameCodec<Response, Request>>;

async fn client(addr: SocketAddr) -> Client {
    let mut s = TcpStream::connect(addr).await.unwrap();
    handshake(&mut s, Link::Tracker).await.unwrap();
    Framed::new(s, links::tracker_client())
}

async fn ask(c: &mut Client, call: Call) -> Response {
    c.send(Request { token: None, call }).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("answer in time")
        .unwrap()
        .unwrap()
}

/// A proper client can still create an account and log in.
async fn assert_serves(addr: SocketAddr, user: &str) {
    let mut c = client(addr).await;
    let r = ask(
        &mut c,
        Call::CreateUser {
            user: user.into(),
            password: "pw".into(),
        },
    )
    .await;
    assert!(matches!(r, Response::Ok { .. }), "{r:?}");
    let r = ask(
        &mut c,
        Call::Login {
            user: user.into(),
            password: "pw".into(),
            peer_addr: "0.0.0.0:7001".into(),
            device_key: ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .to_bytes(),
        },
    )
    .await;
    let Response::LoggedIn(g) = r else {
        panic!("{r:?}")
    };
    assert_eq!(g.peer_addr, "127.0.0.1:7001");
}

/// Read until the server closes; returns what it sent. Panics if it stays open too long.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut got = vec![];
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => panic!("server did not close the connection within {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Handshake properly, send `bytes`, and expect the server to hang up.
async fn after_handshake_send(addr: SocketAddr, bytes: &[u8], close_write: bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    handshake(&mut s, Link::Tracker).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if close_write {
        s.shutdown().await.unwrap();
    }
    let rest = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "no response to a bad frame: {rest:?}");
}

#[tokio::test]
async fn hostile_input_closes_only_that_connection() {
    let srv = start(opts(), PasswordHasher::insecure_fast()).await;

    // A half-open connection that never says anything stays around while others are served.
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();

    // Not Minitorr at all: the server sends its preamble and hangs up.
    let mut http = TcpStream::connect(srv.addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_until_closed(&mut http, Duration::from_secs(5))
            .await
            .len(),
        9,
        "only the preamble"
    );

    // A 4 GiB length prefix, a garbage body, a truncated frame.
    after_handshake_send(srv.addr, &[0xff, 0xff, 0xff, 0xff], false).await;
    after_handshake_send(srv.addr, &[0, 0, 0, 3, 0xee, 0xee, 0xee], false).await;
    after_handshake_send(srv.addr, &[0, 0, 0, 100, 1, 2, 3], true).await;
    after_handshake_send(srv.addr, &[0, 0, 0, 0], false).await;

    assert_serves(srv.addr, "alice").await;

    // The silent one is dropped once the handshake timeout (1 s) passes.
    let got = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 9, "the server's preamble, then close");
    assert_serves(srv.addr, "bob").await;
    srv.stop.cancel();
    srv.task.await.unwrap();
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let srv = start(
        ServerOptions {
            max_connections: 2,
            ..opts()
        },
        PasswordHasher::insecure_fast(),
    )
    .await;
    let mut a = client(srv.addr).await;
    let _b = client(srv.addr).await;
    let mut third = TcpStream::connect(srv.addr).await.unwrap();
    let got = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(got.is_empty(), "closed without even a preamble");
    // The two admitted clients work; once one leaves, a newcomer is admitted again.
    let r = ask(
        &mut a,
        Call::CreateUser {
            user: "u".into(),
            password: "pw".into(),
        },
    )
    .await;
    assert!(matches!(r, Response::Ok { .. }), "{r:?}");
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_serves(srv.addr, "alice").await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let srv = start(
        ServerOptions {
            idle_timeout: Duration::from_millis(500),
            ..opts()
        },
        PasswordHasher::insecure_fast(),
    )
    .await;
    let mut c = client(srv.addr).await;
    let r = ask(
        &mut c,
        Call::CreateUser {
            user: "u".into(),
            password: "pw".into(),
        },
    )
    .await;
    assert!(matches!(r, Response::Ok { .. }));
    let next = tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .expect("closed in time");
    assert!(next.is_none(), "{next:?}");
}

#[tokio::test]
async fn shutdown_answers_the_request_in_flight_then_stops() {
    // A deliberately slow hash (64 MiB, 4 passes) keeps CreateUser busy while we stop.
    let slow = PasswordHasher::with_params(64 * 1024, 4, 1).unwrap();
    let long_handshake = ServerOptions {
        handshake_timeout: Duration::from_secs(60),
        ..opts()
    };
    let srv = start(long_handshake, slow).await;
    let _silent = TcpStream::connect(srv.addr).await.unwrap(); // never handshakes
    let mut idle = client(srv.addr).await;
    let mut c = client(srv.addr).await;
    let sent = Instant::now();
    c.send(Request {
        token: None,
        call: Call::CreateUser {
            user: "late".into(),
            password: "pw".into(),
        },
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    srv.stop.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(r, Response::Ok { .. }),
        "in-flight request answered: {r:?}"
    );
    assert!(
        sent.elapsed() > Duration::from_millis(40),
        "the request was still running when we stopped"
    );
    assert!(c.next().await.is_none(), "then closed");
    assert!(
        idle.next().await.is_none(),
        "idle connections are closed at once"
    );
    // Neither the idle client nor the silent one holds shutdown up to the drain timeout.
    tokio::time::timeout(Duration::from_secs(2), srv.task)
        .await
        .expect("prompt stop")
        .unwrap();
    assert!(
        TcpStream::connect(srv.addr).await.is_err(),
        "no longer accepting"
    );
    // And what was acknowledged is in the database.
    assert!(srv.store.password_hash("late").await.unwrap().is_some());
}

/// Handshake, then send the start of a frame announcing `len` bytes (`sent` of them) and stall.
async fn partial_frame(addr: SocketAddr, len: u32, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    handshake(&mut s, Link::Tracker).await.unwrap();
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.resize(4 + sent, 0); // a body starting with a `None` token
    s.write_all(&bytes).await.unwrap();
    s
}

/// A client that created `user` and logged in; returns it and its token.
async fn logged_in(addr: SocketAddr, user: &str) -> (Client, String) {
    let mut c = client(addr).await;
    ask(
        &mut c,
        Call::CreateUser {
            user: user.into(),
            password: "pw".into(),
        },
    )
    .await;
    let r = ask(
        &mut c,
        Call::Login {
            user: user.into(),
            password: "pw".into(),
            peer_addr: "127.0.0.1:7001".into(),
            device_key: ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .to_bytes(),
        },
    )
    .await;
    let Response::LoggedIn(g) = r else {
        panic!("{r:?}")
    };
    (c, g.token)
}

#[tokio::test]
async fn before_login_only_small_requests_are_read() {
    let srv = start(opts(), PasswordHasher::insecure_fast()).await;
    // A 16 MiB header with a token-less body: answered InvalidSession and closed, after reading
    // no more than the start of the body.
    let mut s = partial_frame(srv.addr, 16 << 20, 1000).await;
    let got = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(!got.is_empty(), "an answer before the close");
    // A 4 KiB + 1 request without a token is refused the same way.
    let mut c = client(srv.addr).await;
    c.send(Request {
        token: None,
        call: Call::CreateUser {
            user: "x".into(),
            password: "p".repeat(5000),
        },
    })
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), c.next()).await {
        Ok(Some(Ok(Response::Error { code, message }))) => {
            assert_eq!(code, minitorr_proto::tracker::ErrorCode::InvalidSession);
            assert!(message.contains("log in first"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !matches!(c.next().await, Some(Ok(_))),
        "then closed (possibly reset: the rest of the request was never read)"
    );

    // After login, a large request on the same connection is read and answered.
    let (mut c, token) = logged_in(srv.addr, "alice").await;
    c.send(Request {
        token: Some(token.clone()),
        call: Call::CreateGroup {
            group: "g".repeat(1 << 20),
        },
    })
    .await
    .unwrap();
    let r = c.next().await.unwrap().unwrap();
    assert!(matches!(r, Response::Error { .. }), "{r:?}");
    // A reconnecting daemon's first request may be large too: its valid token admits it.
    let mut fresh = client(srv.addr).await;
    fresh
        .send(Request {
            token: Some(token.clone()),
            call: Call::CreateGroup {
                group: "g".repeat(1 << 20),
            },
        })
        .await
        .unwrap();
    let r = fresh.next().await.unwrap().unwrap();
    assert!(
        matches!(&r, Response::Error { code, .. } if *code == minitorr_proto::tracker::ErrorCode::BadRequest),
        "{r:?}"
    );
    fresh
        .send(Request {
            token: Some(token),
            call: Call::ListGroups,
        })
        .await
        .unwrap();
    assert!(matches!(
        fresh.next().await.unwrap().unwrap(),
        Response::Groups(_)
    ));
    // A forged token does not.
    let mut forged = client(srv.addr).await;
    forged
        .send(Request {
            token: Some("00".repeat(32)),
            call: Call::CreateGroup {
                group: "g".repeat(1 << 20),
            },
        })
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), forged.next())
        .await
        .unwrap();
    assert!(
        matches!(&r, Some(Ok(Response::Error { code, .. })) if *code == minitorr_proto::tracker::ErrorCode::InvalidSession),
        "{r:?}"
    );
    srv.stop.cancel();
    srv.task.await.unwrap();
}

#[tokio::test]
async fn a_stalled_request_before_login_is_dropped_after_the_handshake_timeout() {
    let srv = start(opts(), PasswordHasher::insecure_fast()).await;
    // Preamble done, then half a small request, then nothing: gone after the handshake timeout
    // (1 s here) although the idle timeout is 30 s.
    let mut s = partial_frame(srv.addr, 1000, 500).await;
    let t = Instant::now();
    read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(t.elapsed() < Duration::from_secs(10));
    // A logged-in client is held to the idle timeout instead.
    let (mut c, token) = logged_in(srv.addr, "alice").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.send(Request {
        token: Some(token),
        call: Call::ListGroups,
    })
    .await
    .unwrap();
    assert!(matches!(
        c.next().await.unwrap().unwrap(),
        Response::Groups(_)
    ));
    srv.stop.cancel();
    srv.task.await.unwrap();
}

#[tokio::test]
async fn a_crowd_that_never_logs_in_only_pushes_itself_out() {
    let srv = start(
        ServerOptions {
            handshake_timeout: Duration::from_secs(60),
            unauthenticated: trackerd::preauth::Limits {
                max_total: 16,
                max_per_source: 8,
                max_bytes: 64 * 1024,
            },
            ..opts()
        },
        PasswordHasher::insecure_fast(),
    )
    .await;
    // Logged in before the crowd: never counted, never evicted.
    let (mut early, token) = logged_in(srv.addr, "early").await;
    // 200 connections that finish the preamble and then say nothing (from one source, and then
    // from many: 127.0.0.0/8 is all loopback), with a handshake timeout of 60 s.
    let mut crowd = vec![];
    for i in 0..200u32 {
        let from = std::net::Ipv4Addr::from(0x7f00_0100 + i % 50);
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(from.into(), 0)).unwrap();
        let mut s = sock.connect(srv.addr).await.unwrap();
        handshake(&mut s, Link::Tracker).await.unwrap();
        crowd.push(s);
    }
    // A newcomer is served at once.
    assert_serves(srv.addr, "late").await;
    early
        .send(Request {
            token: Some(token),
            call: Call::ListGroups,
        })
        .await
        .unwrap();
    assert!(matches!(
        early.next().await.unwrap().unwrap(),
        Response::Groups(_)
    ));
    // Of the crowd, at most 16 are still open.
    let mut open = 0;
    for s in crowd.iter_mut() {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await {
            Err(_) => open += 1,         // still waiting: open
            Ok(Ok(0)) | Ok(Err(_)) => {} // closed
            Ok(Ok(_)) => panic!("nothing to say to the crowd"),
        }
    }
    assert!(open <= 16, "{open} unauthenticated connections still open");
    srv.stop.cancel();
    srv.task.await.unwrap();
}

//! Abuse beyond single bad frames (those are in bad_input.rs): slow-loris crowds on trackerd's
//! port, a daemon's control socket and its peer port; outsiders (no account) stalling inside
//! huge requests or crowding trackerd with connections that never log in; parallel logins
//! against the rate limit; 200 minitorrctl processes at once; oversized fields inside
//! well-formed frames.
//!
//! Timing: these tests assert properties with margins that hold on a loaded 2-core machine
//! (closed within the timeout + 10 s, served within 20 s), never counts of events inside a
//! time window; the measured values are printed and recorded in docs/RELIABILITY.md.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use minitorr_e2e::*;
use minitorr_proto::handshake::{preamble, Link};
use minitorr_proto::tracker::{Call, ErrorCode, Request, Response};
use minitorr_proto::PROTOCOL_VERSION;
use tokio_util::codec::Framed;

/// Something a slow-loris can trickle into and notice being closed.
trait Stream: Read + Write + Send + 'static {
    fn nonblocking(&self);
}
impl Stream for TcpStream {
    fn nonblocking(&self) {
        self.set_nonblocking(true).unwrap();
    }
}
impl Stream for UnixStream {
    fn nonblocking(&self) {
        self.set_nonblocking(true).unwrap();
    }
}

/// What a slow-loris crowd observed.
#[derive(Debug, Default, Clone)]
struct LorisStats {
    /// Connections the server closed.
    dropped: usize,
    /// The longest time a connection stayed open before the server closed it.
    longest: Duration,
    /// Connections open at the last pass.
    open: usize,
    /// Connection attempts that failed (refused at once, or the process out of descriptors).
    failed_connects: usize,
}

/// A slow-loris crowd: `n` connections, each sending one byte of a valid preamble every 500 ms
/// but never finishing it. While `reopen` is set, every connection the server closes is
/// reopened; clear it to let the crowd drain, set `quit` to end the thread.
struct Loris {
    reopen: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
    stats: Arc<Mutex<LorisStats>>,
    thread: Option<JoinHandle<()>>,
}

impl Loris {
    fn start<S: Stream>(
        connect: impl Fn() -> Option<S> + Send + 'static,
        n: usize,
        link: Link,
        reopen: bool,
    ) -> Loris {
        let reopen = Arc::new(AtomicBool::new(reopen));
        let quit = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(LorisStats::default()));
        let (r2, q2, s2) = (reopen.clone(), quit.clone(), stats.clone());
        let pre = preamble(link, PROTOCOL_VERSION);
        let thread = std::thread::spawn(move || {
            let open = || {
                let Some(s) = connect() else {
                    s2.lock().unwrap().failed_connects += 1;
                    return None;
                };
                s.nonblocking();
                Some((s, 0usize, Instant::now()))
            };
            let mut conns: Vec<Option<(S, usize, Instant)>> = (0..n).map(|_| open()).collect();
            while !q2.load(Ordering::Relaxed) {
                for c in conns.iter_mut() {
                    let alive = match c {
                        Some((s, sent, _)) => {
                            let mut b = [0u8; 64];
                            let closed = matches!(s.read(&mut b), Ok(0))
                                || matches!(s.read(&mut b), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock);
                            let wrote = *sent >= pre.len() - 1
                                || s.write_all(&pre[*sent..*sent + 1]).is_ok();
                            *sent = (*sent + 1).min(pre.len() - 1);
                            !closed && wrote
                        }
                        None => false,
                    };
                    if !alive {
                        if let Some((_, _, since)) = c.take() {
                            let mut st = s2.lock().unwrap();
                            st.dropped += 1;
                            st.longest = st.longest.max(since.elapsed());
                        }
                        if r2.load(Ordering::Relaxed) {
                            *c = open();
                        }
                    }
                }
                s2.lock().unwrap().open = conns.iter().filter(|c| c.is_some()).count();
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Loris {
            reopen,
            quit,
            stats,
            thread: Some(thread),
        }
    }

    fn stats(&self) -> LorisStats {
        self.stats.lock().unwrap().clone()
    }

    /// Stop reopening and wait (up to `within`) until the server has closed every connection.
    fn drain(&self, within: Duration) -> LorisStats {
        self.reopen.store(false, Ordering::Relaxed);
        let start = Instant::now();
        while self.stats().open > 0 && start.elapsed() < within {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stats()
    }
}

impl Drop for Loris {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens TCP connections to `to` from source address `from` (any 127.x.y.z works on
/// loopback).
fn tcp_from(from: Ipv4Addr, to: SocketAddr) -> impl Fn() -> Option<TcpStream> + Send + 'static {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    move || {
        rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().ok()?;
            sock.bind(SocketAddr::new(from.into(), 0)).ok()?;
            sock.connect(to).await.ok()?.into_std().ok()
        })
    }
}

/// Run `args` and require success; returns how long it took. A generous bound only (the
/// measured times go to the log and docs/RELIABILITY.md): the point is that real clients are
/// served, not how fast on a loaded machine.
fn served(peer: &Peer, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = peer.ctl(args);
    assert!(
        out.status.success(),
        "{args:?} failed under attack: {}\n{}",
        stderr_of(&out),
        peer.log_tail(20)
    );
    let took = t.elapsed();
    assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
    took
}

/// The handshake timeout of trackerd (default) and of a daemon's control socket.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Slack on top of a timeout before a test calls it broken: scheduling on a loaded 2-core
/// machine, the loris thread's 500 ms polling.
const MARGIN: Duration = Duration::from_secs(10);

#[test]
fn slow_loris_on_trackerd_and_the_control_socket_does_not_starve_real_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::start(&tmp.path().join("t"));
    let mut alice = Peer::start(&tmp.path().join("alice"), &tracker);
    user(&alice, "alice");
    alice.ok(&["create_group", "g1"]);
    let taddr = tracker.addr;
    let sock: PathBuf = alice.socket.clone();
    // The tracker's crowd comes from another address than the real clients (an attacker is
    // not on their machine); the control socket's from the same user, as it must.
    let loris_t = Loris::start(
        tcp_from(Ipv4Addr::new(127, 0, 0, 2), taddr),
        300,
        Link::Tracker,
        true,
    );
    let loris_c = Loris::start(
        move || UnixStream::connect(&sock).ok(),
        300,
        Link::Control,
        true,
    );
    // Through more than one handshake timeout, real users are served all along.
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut n = 0;
    while start.elapsed() < HANDSHAKE_TIMEOUT + Duration::from_secs(2) {
        worst = worst.max(served(&alice, &["list_groups"]));
        worst = worst.max(served(&alice, &["status"]));
        n += 2;
    }
    // A new daemon can connect, create an account and log in meanwhile.
    let bob = Peer::start(&tmp.path().join("bob"), &tracker);
    user(&bob, "bob");
    bob.ok(&["join_group", "g1"]);
    // Then the crowd stops reopening: every connection it still holds must be dropped by the
    // servers, none later than the handshake timeout (plus margin) after it was opened.
    let (t, c) = (
        loris_t.drain(HANDSHAKE_TIMEOUT + 2 * MARGIN),
        loris_c.drain(HANDSHAKE_TIMEOUT + 2 * MARGIN),
    );
    eprintln!(
        "{n} commands, slowest {worst:?}; loris on trackerd: {t:?}; on the control socket: {c:?}"
    );
    for (what, st) in [("trackerd", &t), ("minitorrd's control socket", &c)] {
        assert_eq!(st.open, 0, "{what} left loris connections open: {st:?}");
        assert!(st.dropped >= 300, "{what}: {st:?}");
        assert!(
            st.longest <= HANDSHAKE_TIMEOUT + MARGIN,
            "{what} kept a connection that never finished its handshake for {:?}",
            st.longest
        );
    }
    drop((loris_t, loris_c));
    assert!(tracker.is_running() && alice.is_running());
}

/// Alice shares 2 MiB; a slow-loris crowd of 200 (more than the 128 incoming-peer slots) sits
/// on her peer port; bob downloads. Returns bob's final download entry and how long it took.
fn download_under_peer_port_loris(reopen: bool) -> (serde_json::Value, Duration, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (_tracker, mut alice, bob) = alice_and_bob_in_g1(tmp.path());
    let f = tmp.path().join("alice").join("f.bin");
    let sha = random_file(&f, 2 * 1024 * 1024);
    alice.ok(&["upload_file", f.to_str().unwrap(), "g1"]);
    let addr = alice.addr;
    let loris = Loris::start(
        move || TcpStream::connect(addr).ok(),
        200,
        Link::Peer,
        reopen,
    );
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let dest = tmp.path().join("bob");
    bob.ok(&["download_file", "g1", "f.bin", dest.to_str().unwrap()]);
    let d = bob.wait_download("g1", "f.bin", Duration::from_secs(60));
    let took = t.elapsed();
    served(&alice, &["status"]);
    let stats = loris.stats();
    drop(loris);
    eprintln!("download under peer-port slow-loris (reopen: {reopen}): {took:?}, loris {stats:?}");
    let ok = d["state"] == "complete" && sha1_file(&dest.join("f.bin")) == sha;
    assert!(alice.is_running());
    (d, took, ok)
}

#[test]
fn slow_loris_crowd_on_the_peer_port_only_delays_downloads_by_the_handshake_timeout() {
    let (d, took, ok) = download_under_peer_port_loris(false);
    assert!(ok, "{d}");
    // Measured ≈ 6.6 s (handshake timeout + the download); the bound only says "delayed by
    // about the handshake timeout, not stopped", with room for a loaded machine.
    assert!(took < HANDSHAKE_TIMEOUT + 2 * MARGIN, "{took:?}");
}

#[test]

fn persistent_slow_loris_on_the_peer_port_does_not_stop_downloads() {
    let (d, _took, ok) = download_under_peer_port_loris(true);
    assert!(ok, "{d}");
}

#[test]
fn two_hundred_parallel_minitorrctl_all_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let alice = Peer::start(&tmp.path().join("alice"), &tracker);
    user(&alice, "alice");
    alice.ok(&["create_group", "g1"]);
    let alice = Arc::new(alice);
    let start = Instant::now();
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let a = alice.clone();
            std::thread::spawn(move || {
                let cmd: &[&str] = match i % 4 {
                    0 => &["list_groups"],
                    1 => &["status"],
                    2 => &["show_downloads"],
                    _ => &["--json", "list_files", "g1"],
                };
                let t = Instant::now();
                let out = a.ctl(cmd);
                (cmd.to_vec(), out, t.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for h in handles {
        let (cmd, out, took) = h.join().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?} exited {:?}: {}",
            out.status,
            stderr_of(&out)
        );
        if cmd[0] == "list_groups" {
            assert!(stdout_of(&out).contains("g1"));
        }
        slowest = slowest.max(took);
    }
    eprintln!(
        "200 parallel minitorrctl: all done in {:?}, slowest {slowest:?}",
        start.elapsed()
    );
    let mut alice = Arc::try_unwrap(alice).ok().unwrap();
    assert!(alice.is_running());
    assert_eq!(alice.json(&["status"])["user"], "alice");
}

#[test]
fn oversized_fields_in_well_formed_frames_are_refused_and_the_connection_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let mut alice = Peer::start(&tmp.path().join("alice"), &tracker);
    user(&alice, "alice");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Tracker link, before login: a 4 MiB user name is over the pre-login request cap
        // (4 KiB): refused unread ("log in first") and the connection closed — the client may
        // see the answer or, still writing its 4 MiB, a reset.
        let huge = "u".repeat(4 << 20);
        let mut s = tokio::net::TcpStream::connect(tracker.addr).await.unwrap();
        minitorr_proto::handshake(&mut s, Link::Tracker)
            .await
            .unwrap();
        let mut f = Framed::new(s, minitorr_proto::links::tracker_client());
        let sent = f
            .send(Request {
                token: None,
                call: Call::CreateUser {
                    user: huge.clone(),
                    password: "pw".into(),
                },
            })
            .await;
        let mut answers = vec![];
        if sent.is_ok() {
            while let Ok(Some(Ok(r))) =
                tokio::time::timeout(Duration::from_secs(10), f.next()).await
            {
                answers.push(r);
            }
        }
        match answers.as_slice() {
            [] => {}
            [Response::Error {
                code: ErrorCode::InvalidSession,
                message,
            }] => assert!(message.contains("log in first"), "{message}"),
            other => panic!("{other:?}"),
        }
        // A 1 KiB password fits and is refused by validation; the connection stays usable.
        let mut c = fakepeer::TrackerClient::connect(tracker.addr).await;
        let r = c
            .call(Call::Login {
                user: "alice".into(),
                password: "p".repeat(2000),
                peer_addr: "127.0.0.1:1".into(),
                device_key: c.device.public_bytes(),
            })
            .await;
        assert!(
            matches!(
                r,
                Response::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }
            ),
            "{r:?}"
        );
        // After login: a 4 MiB and a 1 MiB field — under the 16 MiB frame cap, so decoded, then
        // refused by validation; the connection stays usable.
        c.login("alice", "pw-of-someone", "127.0.0.1:1".parse().unwrap())
            .await;
        for call in [
            Call::CreateGroup {
                group: "g".repeat(1 << 20),
            },
            Call::JoinGroup {
                group: huge.clone(),
            },
        ] {
            let r = c.call(call).await;
            assert!(
                matches!(
                    r,
                    Response::Error {
                        code: ErrorCode::BadRequest,
                        ..
                    }
                ),
                "{r:?}"
            );
        }
        assert!(matches!(
            c.call(Call::ListGroups).await,
            Response::Groups(_)
        ));

        // A frame exactly one byte over the cap is dropped with the connection.
        let mut s = tokio::net::TcpStream::connect(tracker.addr).await.unwrap();
        minitorr_proto::handshake(&mut s, Link::Tracker)
            .await
            .unwrap();
        let mut f = Framed::new(s, minitorr_proto::links::tracker_client());
        let r = f
            .send(Request {
                token: None,
                call: Call::CreateUser {
                    user: "x".into(),
                    password: "p".repeat(minitorr_proto::MAX_MESSAGE_FRAME),
                },
            })
            .await;
        if r.is_ok() {
            let next = tokio::time::timeout(Duration::from_secs(5), f.next())
                .await
                .expect("closed promptly");
            assert!(!matches!(next, Some(Ok(_))), "{next:?}");
        }

        // Control link: a 1 MiB path and a 1 MiB group name.
        let mut s = tokio::net::UnixStream::connect(&alice.socket)
            .await
            .unwrap();
        minitorr_proto::handshake(&mut s, Link::Control)
            .await
            .unwrap();
        let mut f = Framed::new(s, minitorr_proto::links::control_client());
        use minitorr_proto::control::{Request as Ctl, Response as CtlR};
        for req in [
            Ctl::UploadFile {
                path: PathBuf::from("/".to_string() + &"p".repeat(1 << 20)),
                group: "g1".into(),
                name: None,
            },
            Ctl::CreateGroup {
                group: "g".repeat(1 << 20),
            },
        ] {
            f.send(req).await.unwrap();
            let r = f.next().await.unwrap().unwrap();
            assert!(matches!(r, CtlR::Error(_)), "{r:?}");
        }
        f.send(Ctl::Status).await.unwrap();
        assert!(matches!(f.next().await.unwrap().unwrap(), CtlR::Status(_)));
    });
    assert!(tracker_alive(&alice));
    assert!(alice.is_running());
}

fn tracker_alive(p: &Peer) -> bool {
    p.ctl(&["list_groups"]).status.success()
}

/// The tracker's peak memory (VmHWM) must stay under this through the outsider attacks.
const TRACKER_MEMORY_CAP_KIB: u64 = 256 * 1024;

/// Each of 300 outsider connections sends the preamble, the header of a 16 MiB request and as
/// much of its body as the tracker takes (the attack: 16 MiB − 1 bytes), then stalls. Without
/// limits before login the tracker buffered it all (4.9 GiB at 300). Now: it reads no more than
/// the start of the body, answers and closes; its memory stays far under 256 MiB; a logged-in
/// daemon and a new one are served meanwhile.
#[test]
fn outsiders_stalling_in_huge_requests_cost_the_tracker_no_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::start(&tmp.path().join("t"));
    let alice = Peer::start(&tmp.path().join("alice"), &tracker);
    user(&alice, "alice");
    alice.ok(&["create_group", "g1"]);
    let (rss_before, _) = tracker.memory_kib();
    let addr = tracker.addr;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let attack = rt.spawn(async move {
        let tasks: Vec<_> = (0..300u32)
            .map(|i| {
                let from = Ipv4Addr::new(127, 0, 3, 1 + (i % 100) as u8).into();
                tokio::spawn(fakepeer::outsider::stalled_frame(
                    addr,
                    from,
                    16 << 20,
                    (16 << 20) - 1,
                    Duration::from_secs(2),
                ))
            })
            .collect();
        let mut conns = vec![];
        for t in tasks {
            conns.extend(t.await.unwrap());
        }
        conns
    });
    // Real clients while the attack runs.
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        worst = worst.max(served(&alice, &["list_groups"]));
    }
    let bob = Peer::start(&tmp.path().join("bob"), &tracker);
    user(&bob, "bob");
    worst = worst.max(served(&bob, &["list_groups"]));
    let mut conns = rt.block_on(attack).unwrap();
    let accepted: Vec<usize> = conns.iter().map(|(_, n)| *n).collect();
    // Every attacker is answered and closed promptly (no waiting for the handshake timeout).
    let closed = rt.block_on(async {
        let mut closed = 0;
        for (s, _) in conns.iter_mut() {
            if fakepeer::outsider::closed_by_server(s, HANDSHAKE_TIMEOUT + MARGIN).await {
                closed += 1;
            }
        }
        closed
    });
    worst = worst.max(served(&alice, &["list_groups"]));
    let (rss_after, peak) = tracker.memory_kib();
    eprintln!(
        "300 stalled 16 MiB requests: {} connected, at most {} body bytes written before the \
         close (socket buffers; the tracker reads <= {} of them), closed {closed}; \
         tracker RSS {rss_before} KiB before, {rss_after} KiB after, peak {peak} KiB; \
         slowest real command {worst:?}",
        conns.len(),
        accepted.iter().max().unwrap_or(&0),
        128
    );
    assert!(
        conns.len() >= 250,
        "the attack itself ran: {} connected",
        conns.len()
    );
    assert_eq!(
        closed,
        conns.len(),
        "every attacker was closed by the tracker"
    );
    assert!(
        peak < TRACKER_MEMORY_CAP_KIB,
        "tracker peak RSS {peak} KiB under the attack"
    );
    assert!(tracker.is_running());
}

/// 4,100 outsider connections that send only the preamble (more than max_connections, 4,096,
/// which they used to fill for the whole 120 s idle timeout), from 100 addresses, and then 500
/// more from one address. Real clients — a logged-in daemon, a new daemon creating an account
/// and logging in — are served all along: the unauthenticated connections are capped (1,024
/// in all, 64 per address) by closing the oldest, so the crowd only pushes itself out.
#[test]
fn a_preamble_only_crowd_larger_than_the_connection_cap_does_not_lock_clients_out() {
    // 4,600 connections stay open on our side: make sure we may hold them (and trackerd its
    // share), scaling the crowd down only if the hard limit forces it.
    let fds = raise_fd_limit();
    let many = 4100u32.min(fds.saturating_sub(1600) as u32);
    assert!(
        many > 1100,
        "this test needs RLIMIT_NOFILE >= 2,800 to open a crowd larger than the cap (have {fds})"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::start(&tmp.path().join("t"));
    let alice = Peer::start(&tmp.path().join("alice"), &tracker);
    user(&alice, "alice");
    alice.ok(&["create_group", "g1"]);
    let addr = tracker.addr;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let crowd = rt.spawn(async move {
        let mut conns = vec![];
        for i in 0..many {
            let from = Ipv4Addr::new(127, 0, 4, 1 + (i % 100) as u8).into();
            conns.extend(fakepeer::outsider::preamble_only(addr, from).await);
        }
        for _ in 0..500 {
            let from = Ipv4Addr::new(127, 0, 5, 1).into();
            conns.extend(fakepeer::outsider::preamble_only(addr, from).await);
        }
        conns
    });
    let mut worst = Duration::ZERO;
    let mut n = 0;
    while !crowd.is_finished() || n < 4 {
        worst = worst.max(served(&alice, &["list_groups"]));
        n += 1;
    }
    let bob = Peer::start(&tmp.path().join("bob"), &tracker);
    user(&bob, "bob");
    bob.ok(&["join_group", "g1"]);
    worst = worst.max(served(&alice, &["list_requests", "g1"]));
    let mut conns = rt.block_on(crowd).unwrap();
    // What is left of the crowd right after it was opened: at most the caps (waiting a moment
    // for the tracker to close the evicted ones).
    let open_of = |conns: &mut Vec<tokio::net::TcpStream>| {
        rt.block_on(async {
            let mut open = 0;
            for s in conns.iter_mut() {
                if !fakepeer::outsider::closed_by_server(s, Duration::from_millis(1)).await {
                    open += 1;
                }
            }
            open
        })
    };
    let opened = conns.len();
    let mut open = open_of(&mut conns);
    let start = Instant::now();
    while open > 1024 && start.elapsed() < MARGIN {
        std::thread::sleep(Duration::from_millis(200));
        open = open_of(&mut conns);
    }
    eprintln!(
        "preamble-only crowd: {opened} opened, {open} still open after it; {n} real commands \
         meanwhile, slowest {worst:?}"
    );
    assert!(
        opened as u32 >= many + 400,
        "the crowd itself ran: {opened} of {} connections",
        many + 500
    );
    assert!(open <= 1024, "{open} unauthenticated connections kept");
    // And they do not stay: none outlives the handshake timeout.
    std::thread::sleep(HANDSHAKE_TIMEOUT);
    let start = Instant::now();
    while open > 0 && start.elapsed() < MARGIN {
        std::thread::sleep(Duration::from_millis(200));
        open = open_of(&mut conns);
    }
    assert_eq!(
        open, 0,
        "preamble-only connections outlived the handshake timeout"
    );
    served(&bob, &["list_groups"]);
    assert!(tracker.is_running());
}

/// `n` logins for one user sent at once on `n` connections, all with wrong passwords but one;
/// returns how many were answered "wrong password" (each such answer is a password checked),
/// whether the right one got in, and how many were rate-limited.
async fn parallel_logins(addr: SocketAddr, n: usize, right_at: usize) -> (usize, bool, usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            // Spread over 50 addresses: the per-user limit is what is tested.
            let from = Ipv4Addr::new(127, 0, 6, 1 + (i % 50) as u8).into();
            tokio::spawn(async move {
                let mut c = fakepeer::TrackerClient::connect_from(addr, from).await;
                let pw = if i == right_at {
                    "pw-of-someone".to_string()
                } else {
                    format!("guess-{i}")
                };
                c.try_login("victim", &pw, "127.0.0.1:1".parse().unwrap())
                    .await
            })
        })
        .collect();
    let (mut wrong, mut right, mut limited) = (0, false, 0);
    for t in tasks {
        match t.await.unwrap() {
            Response::Error {
                code: ErrorCode::AuthFailed,
                ..
            } => wrong += 1,
            Response::Error {
                code: ErrorCode::RateLimited,
                ..
            } => limited += 1,
            Response::LoggedIn(_) => right = true,
            other => panic!("{other:?}"),
        }
    }
    (wrong, right, limited)
}

/// The login limit holds in parallel: 60 and then 500 logins for one user at once (on as many
/// connections, from 50 addresses) test at most 5 passwords. It used to check 59 and 184.
#[test]
fn parallel_logins_test_no_more_passwords_than_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let victim = Peer::start(&tmp.path().join("victim"), &tracker);
    victim.ok(&["create_user", "victim", "pw-of-someone"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (wrong, right, limited) = rt.block_on(parallel_logins(tracker.addr, 60, 59));
    eprintln!("60 parallel logins: {wrong} wrong passwords checked, right one in: {right}, {limited} rate-limited");
    assert!(wrong <= 5, "{wrong} wrong passwords checked");
    assert_eq!(wrong + usize::from(right) + limited, 60);
    assert!(wrong >= 1 && limited >= 50);
    // A second wave while the user is blocked tests nothing at all.
    let (wrong2, right2, _) = rt.block_on(parallel_logins(tracker.addr, 500, 250));
    eprintln!("then 500 parallel logins: {wrong2} wrong passwords checked, right one in: {right2}");
    assert!(
        wrong + wrong2 <= 5,
        "{} wrong passwords checked in all",
        wrong + wrong2
    );
}

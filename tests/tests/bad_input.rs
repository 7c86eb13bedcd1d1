//! Hostile or broken clients on trackerd's port, minitorrd's control socket and its peer port:
//! each is dropped, and real users are served promptly all along.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use minitorr_e2e::*;
use minitorr_proto::handshake::{preamble, Link};
use minitorr_proto::PROTOCOL_VERSION;

/// A daemon command answered quickly proves the component behind it neither crashed nor stalled.
const PROMPT: Duration = Duration::from_secs(2);

fn promptly(peer: &Peer, args: &[&str], after: &str) -> String {
    let start = Instant::now();
    let out = peer.ctl(args);
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "after {after}: minitorrctl {args:?} failed: {}\n--- daemon log tail ---\n{}",
        stderr_of(&out),
        peer.log_tail(20)
    );
    assert!(
        took < PROMPT,
        "after {after}: minitorrctl {args:?} took {took:?}"
    );
    stdout_of(&out)
}

/// Read until EOF (or error); true if the other side closed within `within`.
fn closed_within<S: Read>(s: &mut S, within: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return true, // reset: closed as well
        }
    }
    false
}

fn tcp(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

fn unix(path: &std::path::Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// Read the server's 9-byte preamble and check it is the expected link.
fn expect_preamble<S: Read>(s: &mut S, link: Link, who: &str) {
    let mut p = [0u8; 9];
    let start = Instant::now();
    let mut have = 0;
    while have < p.len() {
        match s.read(&mut p[have..]) {
            Ok(0) => panic!("{who} closed before sending its preamble"),
            Ok(n) => have += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                assert!(
                    start.elapsed() < Duration::from_secs(3),
                    "{who} sent no preamble"
                );
            }
            Err(e) => panic!("{who}: {e}"),
        }
    }
    assert_eq!(p, preamble(link, PROTOCOL_VERSION), "{who}'s preamble");
}

/// The abuses every framed endpoint gets. `link` is the endpoint's own link kind.
fn abuse<S: Read + Write>(
    connect: &dyn Fn() -> S,
    shutdown_write: &dyn Fn(&S),
    link: Link,
    who: &str,
    check: &dyn Fn(&str),
) {
    // 1. Raw garbage instead of a preamble.
    let mut s = connect();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\x00\x13\x37garbage");
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "{who} kept a garbage connection open"
    );
    check("raw garbage");

    // 2. A correct preamble, then a giant length prefix.
    let mut s = connect();
    s.write_all(&preamble(link, PROTOCOL_VERSION)).unwrap();
    expect_preamble(&mut s, link, who);
    let _ = s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "{who} did not drop a 4 GiB length prefix"
    );
    check("a 0xFFFFFFFF length prefix");

    // 3. A correct preamble, then a truncated frame, then the client closes its side.
    let mut s = connect();
    s.write_all(&preamble(link, PROTOCOL_VERSION)).unwrap();
    expect_preamble(&mut s, link, who);
    s.write_all(&[0, 0, 0, 100, 1, 2, 3, 4, 5]).unwrap();
    shutdown_write(&s);
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "{who} did not close after a truncated frame and EOF"
    );
    check("a truncated frame");

    // 4. A complete frame whose body is not a message.
    let mut s = connect();
    s.write_all(&preamble(link, PROTOCOL_VERSION)).unwrap();
    expect_preamble(&mut s, link, who);
    let _ = s.write_all(&[0, 0, 0, 6, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee]);
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "{who} kept a connection that sent an undecodable frame"
    );
    check("an undecodable frame");

    // 5. The wrong link kind and a future protocol version.
    let other = if link == Link::Peer {
        Link::Tracker
    } else {
        Link::Peer
    };
    for (bad, what) in [
        (preamble(other, PROTOCOL_VERSION), "the wrong link kind"),
        (
            preamble(link, PROTOCOL_VERSION + 1),
            "another protocol version",
        ),
    ] {
        let mut s = connect();
        let _ = s.write_all(&bad);
        assert!(
            closed_within(&mut s, Duration::from_secs(3)),
            "{who} kept a connection with {what}"
        );
        check(what);
    }
}

#[test]
fn trackerd_survives_bad_clients() {
    let dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::start(&dir.path().join("tracker"));
    let alice = Peer::start(&dir.path().join("alice"), &tracker);
    user(&alice, "alice");
    alice.ok(&["create_group", "g1"]);
    let addr = tracker.addr;

    // Half-open connections, left idle for the whole test: silent, preamble only, and preamble
    // plus half a length prefix. Plus a crowd of silent ones.
    let silent_since = Instant::now();
    let mut silent = tcp(addr);
    let mut after_preamble = tcp(addr);
    after_preamble
        .write_all(&preamble(Link::Tracker, PROTOCOL_VERSION))
        .unwrap();
    let mut half_prefix = tcp(addr);
    half_prefix
        .write_all(&preamble(Link::Tracker, PROTOCOL_VERSION))
        .unwrap();
    half_prefix.write_all(&[0, 0]).unwrap();
    let crowd: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let check = |after: &str| {
        let out = promptly(&alice, &["list_groups"], after);
        assert!(
            out.contains("g1"),
            "after {after}: list_groups lost g1:\n{out}"
        );
    };
    check("opening idle connections");

    abuse(
        &|| tcp(addr),
        &|s: &TcpStream| s.shutdown(Shutdown::Write).unwrap(),
        Link::Tracker,
        "trackerd",
        &check,
    );
    assert!(tracker.is_running(), "trackerd exited:\n{}", tracker.log());

    // A fresh daemon can still log in and act (new connections are accepted).
    let bob = Peer::start(&dir.path().join("bob"), &tracker);
    user(&bob, "bob");
    promptly(&bob, &["join_group", "g1"], "all of the above");
    let out = promptly(&alice, &["list_requests", "g1"], "all of the above");
    assert_eq!(out.trim(), "bob");

    // The silent connection never sent a preamble: it must be dropped by the handshake timeout
    // (5 s by default), not held forever.
    let left = Duration::from_secs(8).saturating_sub(silent_since.elapsed());
    assert!(
        closed_within(&mut silent, left),
        "trackerd kept a connection that never sent its preamble for 8 s"
    );
    let _ = after_preamble.read(&mut [0u8; 9]);
    drop((half_prefix, crowd));
    check("closing the idle connections");
}

#[test]
fn minitorrd_control_socket_survives_bad_clients() {
    let dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::start(&dir.path().join("tracker"));
    let mut alice = Peer::start(&dir.path().join("alice"), &tracker);
    user(&alice, "alice");
    alice.ok(&["create_group", "g1"]);
    let sock = alice.socket.clone();

    // Idle clients held open throughout: silent, and handshaken but silent.
    let _silent = unix(&sock);
    let mut idle = unix(&sock);
    idle.write_all(&preamble(Link::Control, PROTOCOL_VERSION))
        .unwrap();
    expect_preamble(&mut idle, Link::Control, "minitorrd");

    let check = |after: &str| {
        let out = promptly(&alice, &["list_groups"], after);
        assert!(
            out.contains("g1"),
            "after {after}: list_groups lost g1:\n{out}"
        );
        promptly(&alice, &["status"], after);
    };
    check("opening idle control connections");
    abuse(
        &|| unix(&sock),
        &|s: &UnixStream| s.shutdown(Shutdown::Write).unwrap(),
        Link::Control,
        "minitorrd",
        &check,
    );
    assert!(
        alice.is_running(),
        "minitorrd exited:\n{}",
        alice.log_tail(30)
    );
    let st = alice.json(&["status"]);
    assert_eq!(
        st["user"], "alice",
        "the session must survive garbage on the control socket: {st}"
    );
    assert!(tracker.is_running());
}

#[test]
fn minitorrd_peer_port_survives_bad_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, mut alice, bob) = alice_and_bob_in_g1(dir.path());
    let shared = alice.dir.join("a.bin");
    let sha = random_file(&shared, 300 * 1024);
    alice.ok(&["upload_file", shared.to_str().unwrap(), "g1"]);
    let addr = alice.addr;

    let _silent = tcp(addr);
    let mut idle = tcp(addr);
    idle.write_all(&preamble(Link::Peer, PROTOCOL_VERSION))
        .unwrap();

    let check = |after: &str| {
        promptly(&alice, &["status"], after);
        promptly(&alice, &["list_files", "g1"], after);
    };
    abuse(
        &|| tcp(addr),
        &|s: &TcpStream| s.shutdown(Shutdown::Write).unwrap(),
        Link::Peer,
        "minitorrd's peer port",
        &check,
    );
    assert!(
        alice.is_running(),
        "minitorrd exited:\n{}",
        alice.log_tail(30)
    );

    // The peer port still serves real peers: bob downloads alice's file from it.
    let dest = bob.dir.join("a.bin");
    bob.ok(&["download_file", "g1", "a.bin", dest.to_str().unwrap()]);
    let d = bob.wait_download("g1", "a.bin", Duration::from_secs(20));
    assert_eq!(d["state"], "complete", "{d}\n{}", bob.log_tail(20));
    assert_eq!(sha1_file(&dest), sha);
}

//! Abuse beyond single bad frames (those are in bad_input.rs): slow-loris crowds on trackerd's
//! port, a daemon's control socket and its peer port; 200 minitorrctl processes at once;
//! oversized fields inside well-formed frames.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use minitorr_e2e::*;
use minitorr_proto::handshake::{preamble, Link};
use minitorr_proto::tracker::{Call, ErrorCode, Request, Response};
use minitorr_proto::PROTOCOL_VERSION;
use tokio_util::codec::Framed;

/// Something a slow-loris can trickle into and notice being closed.
trait Loris: Read + Write + Send + 'static {
    fn nonblocking(&self);
}
impl Loris for TcpStream {
    fn nonblocking(&self) {
        self.set_nonblocking(true).unwrap();
    }
}
impl Loris for UnixStream {
    fn nonblocking(&self) {
        self.set_nonblocking(true).unwrap();
    }
}

/// A persistent slow-loris: keeps `n` connections open, each sending one byte of a valid
/// preamble every 500 ms but never finishing it, and reopening every connection the server
/// closes. Returns (stop flag, reconnect counter, thread).
fn slow_loris<S: Loris>(
    connect: impl Fn() -> Option<S> + Send + 'static,
    n: usize,
    link: Link,
    reopen: bool,
) -> (Arc<AtomicBool>, Arc<AtomicUsize>, JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicUsize::new(0));
    let (s2, r2) = (stop.clone(), reopened.clone());
    let pre = preamble(link, PROTOCOL_VERSION);
    let h = std::thread::spawn(move || {
        let open = || {
            let s = connect()?;
            s.nonblocking();
            Some((s, 0usize))
        };
        let mut conns: Vec<Option<(S, usize)>> = (0..n).map(|_| open()).collect();
        while !s2.load(Ordering::Relaxed) {
            for c in conns.iter_mut() {
                let alive = match c {
                    Some((s, sent)) => {
                        let mut b = [0u8; 64];
                        let closed = matches!(s.read(&mut b), Ok(0))
                            || matches!(s.read(&mut b), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock);
                        let wrote =
                            *sent >= pre.len() - 1 || s.write_all(&pre[*sent..*sent + 1]).is_ok();
                        *sent = (*sent + 1).min(pre.len() - 1);
                        !closed && wrote
                    }
                    None => false,
                };
                if !alive && (reopen || c.is_some()) {
                    *c = if reopen { open() } else { None };
                    r2.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    (stop, reopened, h)
}

fn promptly(peer: &Peer, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = peer.ctl(args);
    assert!(
        out.status.success(),
        "{args:?} failed under slow-loris: {}\n{}",
        stderr_of(&out),
        peer.log_tail(20)
    );
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "{args:?} took {took:?}");
    took
}

#[test]
fn slow_loris_on_trackerd_and_the_control_socket_does_not_starve_real_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::start(&tmp.path().join("t"));
    let mut alice = Peer::start(&tmp.path().join("alice"), &tracker);
    user(&alice, "alice");
    alice.ok(&["create_group", "g1"]);
    let taddr = tracker.addr;
    let sock: PathBuf = alice.socket.clone();
    let (stop_t, reopened_t, ht) = slow_loris(
        move || TcpStream::connect(taddr).ok(),
        300,
        Link::Tracker,
        true,
    );
    let (stop_c, reopened_c, hc) = slow_loris(
        move || UnixStream::connect(&sock).ok(),
        300,
        Link::Control,
        true,
    );
    // Through two handshake-timeout cycles (5 s each): real users are served all along.
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(7) {
        worst = worst.max(promptly(&alice, &["list_groups"]));
        worst = worst.max(promptly(&alice, &["status"]));
        n += 2;
    }
    // A new daemon can connect, create an account and log in meanwhile.
    let bob = Peer::start(&tmp.path().join("bob"), &tracker);
    user(&bob, "bob");
    bob.ok(&["join_group", "g1"]);
    stop_t.store(true, Ordering::Relaxed);
    stop_c.store(true, Ordering::Relaxed);
    ht.join().unwrap();
    hc.join().unwrap();
    eprintln!(
        "{n} commands, slowest {worst:?}; loris connections dropped and reopened: tracker {}, control {}",
        reopened_t.load(Ordering::Relaxed),
        reopened_c.load(Ordering::Relaxed)
    );
    assert!(
        reopened_t.load(Ordering::Relaxed) >= 300,
        "trackerd drops connections that never finish the handshake"
    );
    assert!(
        reopened_c.load(Ordering::Relaxed) >= 300,
        "minitorrd drops control connections that never finish the handshake"
    );
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
    let (stop, reopened, h) = slow_loris(
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
    promptly(&alice, &["status"]);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    eprintln!(
        "download under peer-port slow-loris (reopen: {reopen}): {took:?}, loris reopened {}",
        reopened.load(Ordering::Relaxed)
    );
    let ok = d["state"] == "complete" && sha1_file(&dest.join("f.bin")) == sha;
    assert!(alice.is_running());
    (d, took, ok)
}

#[test]
fn slow_loris_crowd_on_the_peer_port_only_delays_downloads_by_the_handshake_timeout() {
    let (d, took, ok) = download_under_peer_port_loris(false);
    assert!(ok, "{d}");
    assert!(took < Duration::from_secs(15), "{took:?}");
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
        // Tracker link: a 4 MiB user name and password, a 1 MiB group name — under the 16 MiB
        // frame cap, so decoded, then refused by validation; the connection stays usable.
        let mut c = fakepeer::TrackerClient::connect(tracker.addr).await;
        let huge = "u".repeat(4 << 20);
        for call in [
            Call::CreateUser {
                user: huge.clone(),
                password: huge.clone(),
            },
            Call::Login {
                user: "alice".into(),
                password: huge.clone(),
                peer_addr: "127.0.0.1:1".into(),
                device_key: c.device.public_bytes(),
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
        c.login("alice", "pw-of-someone", "127.0.0.1:1".parse().unwrap())
            .await;
        let r = c
            .call(Call::CreateGroup {
                group: "g".repeat(1 << 20),
            })
            .await;
        assert!(matches!(r, Response::Error { .. }), "{r:?}");
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

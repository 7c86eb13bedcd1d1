//! The tracker's relay as the last resort (issue #14 item 4), with real processes: a holder
//! nobody can connect to (it listens on 127.0.0.2, the tracker hands out 127.0.0.1) is
//! downloaded from through trackerd's relay, which splices bytes it cannot read; without a
//! relay the download says why; outsiders and over-limit users are refused; a relay that
//! flips a byte breaks the TLS link, never the file. Also item 1: `status` shows the address
//! the tracker sees.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use minitorr_e2e::fakepeer::DeviceKey;
use minitorr_e2e::*;
use minitorr_proto::relay::{
    auth_message, read_frame, write_frame, RelayHello, RelayMsg, RelayOp, RelayRefusal,
};
use minitorr_proto::{handshake, Link};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MB: usize = 1024 * 1024;

/// A trackerd with the relay on (`relay_listen`), plus `extra` config lines. Returns the
/// tracker and the relay's listen address.
fn tracker_with_relay(dir: &Path, extra: &str) -> (Tracker, SocketAddr) {
    std::fs::create_dir_all(dir).unwrap();
    // The relay's port is chosen again with the tracker's if a start attempt finds it taken.
    let mut relay = free_addr();
    let t = Tracker::start_configured(dir, || {
        relay = free_addr();
        let cfg = dir.join("trackerd.toml");
        std::fs::write(&cfg, format!("relay_listen = \"{relay}\"\n{extra}")).unwrap();
        vec!["--config".into(), cfg.to_str().unwrap().into()]
    });
    wait_until("the relay listening", Duration::from_secs(10), || {
        t.log().contains("relay listening on")
    });
    (t, relay)
}

/// alice (unreachable holder of `size` random bytes as f.bin in g1) and bob (reachable).
fn unreachable_alice_and_bob(dir: &Path, tracker: &Tracker, size: usize) -> (Peer, Peer, String) {
    alice_and_bob_with(dir, tracker, size, false)
}

/// Like [`unreachable_alice_and_bob`]; `bob_unreachable`: both behind "NATs".
fn alice_and_bob_with(
    dir: &Path,
    tracker: &Tracker,
    size: usize,
    bob_unreachable: bool,
) -> (Peer, Peer, String) {
    // "Unreachable" here is a listener on 127.0.0.2 while the tracker hands out 127.0.0.1: no
    // direct connection, but no NAT either, so a hole punch would get through on loopback.
    // These tests are about the relay, so punching is off (tests/tests/nat.rs punches through
    // real NATs).
    let no_punch = dir.join("no-punch.toml");
    std::fs::write(&no_punch, "hole_punching = false\n").unwrap();
    let args = ["--config", no_punch.to_str().unwrap()];
    let alice = Peer::start_unreachable(&dir.join("alice"), &[tracker.addr], &args);
    let bob = if bob_unreachable {
        Peer::start_unreachable(&dir.join("bob"), &[tracker.addr], &args)
    } else {
        Peer::start(&dir.join("bob"), tracker)
    };
    user(&alice, "alice");
    user(&bob, "bob");
    group_with(&alice, "g1", &[(&bob, "bob")]);
    let src = dir.join("f.bin");
    let sha = random_file(&src, size);
    alice.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    (alice, bob, sha)
}

fn wait_relay_listening(p: &Peer) {
    wait_until(
        "the daemon listening at the relay",
        Duration::from_secs(20),
        || {
            p.json(&["status"])["relay"]
                .as_str()
                .unwrap_or_default()
                .starts_with("listening at")
        },
    );
}

fn only_peer(bob: &Peer) -> serde_json::Value {
    let d = download_entry(bob, "g1", "f.bin").expect("download listed");
    let peers = d["peers"].as_array().unwrap().clone();
    assert_eq!(peers.len(), 1, "{d}");
    peers[0].clone()
}

#[test]
fn two_daemons_that_cannot_reach_each_other_exchange_a_file_through_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, _relay) = tracker_with_relay(&dir.path().join("tracker"), "");
    // Both "behind NATs": neither can accept a connection at the address the tracker sees.
    let (alice, bob, sha) = alice_and_bob_with(dir.path(), &tracker, 3 * MB, true);

    // Item 1: the tracker tells each daemon the address it hands out for it.
    let st = alice.json(&["status"]);
    assert_eq!(
        st["observed_addr"].as_str(),
        Some(format!("127.0.0.1:{}", alice.addr.port()).as_str()),
        "{st}"
    );
    assert_eq!(
        st["peer_addr"].as_str(),
        Some(alice.addr.to_string().as_str())
    );
    // ... which is where nobody listens: a direct connection is refused.
    assert!(std::net::TcpStream::connect(st["observed_addr"].as_str().unwrap()).is_err());
    wait_relay_listening(&alice);

    let dest = dir.path().join("got.bin");
    bob.ok(&["download_file", "g1", "f.bin", dest.to_str().unwrap()]);
    let d = bob.wait_download("g1", "f.bin", Duration::from_secs(60));
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&dest), sha);
    let peer = only_peer(&bob);
    assert_eq!(peer["path"], "relayed", "{peer}");
    assert_eq!(peer["user"], "alice");
    assert_eq!(peer["bad_pieces"], 0);
    assert!(
        tracker.log().contains("relay: circuit joined"),
        "{}",
        tracker.log()
    );
    // The relay only spliced: the TLS session was between the daemons (bob pinned alice's key).
    assert!(bob.log_tail(400).contains("connected via the relay"));
}

#[test]
fn a_reachable_holder_is_used_directly_even_with_a_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, _relay) = tracker_with_relay(&dir.path().join("tracker"), "");
    let alice = Peer::start(&dir.path().join("alice"), &tracker);
    let bob = Peer::start(&dir.path().join("bob"), &tracker);
    user(&alice, "alice");
    user(&bob, "bob");
    group_with(&alice, "g1", &[(&bob, "bob")]);
    let src = dir.path().join("f.bin");
    let sha = random_file(&src, MB);
    alice.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    let dest = dir.path().join("got.bin");
    bob.ok(&["download_file", "g1", "f.bin", dest.to_str().unwrap()]);
    let d = bob.wait_download("g1", "f.bin", Duration::from_secs(60));
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&dest), sha);
    assert_eq!(only_peer(&bob)["path"], "direct");
    assert!(!tracker.log().contains("relay: circuit joined"));
}

#[test]
fn without_a_relay_an_unreachable_holder_is_reported_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let (alice, bob, _sha) = unreachable_alice_and_bob(dir.path(), &tracker, MB);
    let st = alice.json(&["status"]);
    assert!(
        st["relay"]
            .as_str()
            .unwrap()
            .contains("relay_listen is off"),
        "{st}"
    );
    let dest = dir.path().join("got.bin");
    bob.ok(&["download_file", "g1", "f.bin", dest.to_str().unwrap()]);
    wait_until("the peer error", Duration::from_secs(30), || {
        download_entry(&bob, "g1", "f.bin").is_some_and(|d| {
            d["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["error"].is_string())
        })
    });
    let peer = only_peer(&bob);
    let why = peer["error"].as_str().unwrap();
    assert!(why.contains("refused"), "{why}");
    assert!(
        why.contains("the tracker offers no relay (its relay_listen is off)"),
        "{why}"
    );
    assert!(!dest.exists());
    drop(alice);
}

/// A hand-driven relay client: preamble, challenge, hello signed by `key` with `op`.
async fn relay_hello(relay: SocketAddr, key: &DeviceKey, op: RelayOp) -> TcpStream {
    let mut s = TcpStream::connect(relay).await.unwrap();
    handshake(&mut s, Link::Relay).await.unwrap();
    let RelayMsg::Challenge { nonce } = read_frame(&mut s).await.unwrap() else {
        panic!("no challenge")
    };
    let device_key = key.public_bytes();
    let signature = key.sign(&auth_message(&nonce, &device_key, &op)).to_vec();
    write_frame(
        &mut s,
        &RelayHello {
            device_key,
            signature,
            op,
        },
    )
    .await
    .unwrap();
    s
}

async fn relay_answer(s: &mut TcpStream) -> RelayMsg {
    tokio::time::timeout(Duration::from_secs(20), read_frame(s))
        .await
        .expect("the relay answers")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_cannot_use_the_relay_and_members_are_held_to_their_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, relay) = tracker_with_relay(
        &dir.path().join("tracker"),
        "relay_max_circuits_per_user = 1\n",
    );
    let (alice, bob, _sha) = tokio::task::block_in_place(|| {
        let x = unreachable_alice_and_bob(dir.path(), &tracker, MB);
        wait_relay_listening(&x.0);
        x
    });
    let alice_key = alice.device_key().public_bytes();

    // An outsider: a well-formed key that has no session on the tracker.
    let outsider = DeviceKey::generate();
    for op in [
        RelayOp::Connect {
            holder_key: alice_key,
        },
        RelayOp::Listen,
    ] {
        let mut s = relay_hello(relay, &outsider, op).await;
        match relay_answer(&mut s).await {
            RelayMsg::Refused {
                reason: RelayRefusal::NotAuthenticated,
                message,
            } => assert!(message.contains("no online session"), "{message}"),
            other => panic!("outsider got {other:?}"),
        }
    }
    // Someone who saw bob's device key (it is public) but cannot sign with it.
    let mut s = TcpStream::connect(relay).await.unwrap();
    handshake(&mut s, Link::Relay).await.unwrap();
    let _challenge: RelayMsg = read_frame(&mut s).await.unwrap();
    let forged = RelayHello {
        device_key: bob.device_key().public_bytes(),
        signature: outsider.sign(b"anything").to_vec(),
        op: RelayOp::Connect {
            holder_key: alice_key,
        },
    };
    write_frame(&mut s, &forged).await.unwrap();
    assert!(matches!(
        relay_answer(&mut s).await,
        RelayMsg::Refused {
            reason: RelayRefusal::NotAuthenticated,
            ..
        }
    ));

    // bob's own device (as its Unix user could): one circuit is fine...
    let bob_key = bob.device_key();
    let mut first = relay_hello(
        relay,
        &bob_key,
        RelayOp::Connect {
            holder_key: alice_key,
        },
    )
    .await;
    assert_eq!(relay_answer(&mut first).await, RelayMsg::Joined);
    // ... a second one at the same time is over relay_max_circuits_per_user = 1.
    let mut second = relay_hello(
        relay,
        &bob_key,
        RelayOp::Connect {
            holder_key: alice_key,
        },
    )
    .await;
    match relay_answer(&mut second).await {
        RelayMsg::Refused {
            reason: RelayRefusal::Busy,
            message,
        } => assert!(message.contains("limit"), "{message}"),
        other => panic!("second circuit: {other:?}"),
    }
    drop(first);
}

/// A TCP proxy in front of the relay that flips one byte of the spliced stream once, after
/// `after` bytes of a connection in either direction: an on-path attacker, or a hostile relay.
struct Tamperer {
    addr: SocketAddr,
    flipped: Arc<AtomicBool>,
    _rt: tokio::runtime::Runtime,
}

impl Tamperer {
    fn start(upstream: SocketAddr, after: u64) -> Tamperer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let flipped = Arc::new(AtomicBool::new(false));
        let f = flipped.clone();
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(
                        pump(cr, sw, after, f.clone()),
                        pump(sr, cw, after, f.clone())
                    );
                });
            }
        });
        Tamperer {
            addr,
            flipped,
            _rt: rt,
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    after: u64,
    flipped: Arc<AtomicBool>,
) {
    let seen = AtomicU64::new(0);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let before = seen.fetch_add(n as u64, Ordering::Relaxed);
        if before + n as u64 > after && !flipped.load(Ordering::Relaxed) {
            let i = after.saturating_sub(before) as usize;
            if i < n && !flipped.swap(true, Ordering::Relaxed) {
                buf[i] ^= 0x01;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[test]
fn a_relay_that_flips_a_byte_breaks_the_link_never_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // The daemons are told to use the tamperer, which forwards to the real relay. Both are
    // made again if a start attempt finds the relay's port taken.
    let tdir = dir.path().join("tracker");
    std::fs::create_dir_all(&tdir).unwrap();
    let mut tamperer = None;
    let tracker = Tracker::start_configured(&tdir, || {
        let relay = free_addr();
        let t = Tamperer::start(relay, 512 * 1024);
        let cfg = tdir.join("trackerd.toml");
        let text = format!(
            "relay_listen = \"{relay}\"\nrelay_public_addr = \"{}\"\n",
            t.addr
        );
        std::fs::write(&cfg, text).unwrap();
        tamperer = Some(t);
        vec!["--config".into(), cfg.to_str().unwrap().into()]
    });
    let tamperer = tamperer.unwrap();
    let (alice, bob, sha) = unreachable_alice_and_bob(dir.path(), &tracker, 4 * MB);
    wait_relay_listening(&alice);
    let dest = dir.path().join("got.bin");
    bob.ok(&["download_file", "g1", "f.bin", dest.to_str().unwrap()]);
    let d = bob.wait_download("g1", "f.bin", Duration::from_secs(90));
    assert!(
        tamperer.flipped.load(Ordering::Relaxed),
        "the byte was flipped"
    );
    // The flipped record failed TLS's integrity check at whichever daemon read it, which
    // dropped the connection; the download went on over a new circuit.
    let logs = format!("{}\n{}", alice.log_tail(2000), bob.log_tail(2000)).to_lowercase();
    // (A flip in a record's payload fails its AEAD tag: "cannot decrypt peer's message"; one
    // in a record header makes it malformed: "corrupt message".)
    assert!(
        logs.contains("decrypt") || logs.contains("corrupt message"),
        "no TLS integrity failure logged:\n{logs}"
    );
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&dest), sha, "never a corrupt file");
    let peer = only_peer(&bob);
    assert_eq!(peer["path"], "relayed");
    // Nothing corrupt ever reached the piece layer: TLS caught it first.
    assert_eq!(peer["bad_pieces"], 0, "{peer}");
}

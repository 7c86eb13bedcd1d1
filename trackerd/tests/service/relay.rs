//! The relay listener's pairing and admission rules, over real loopback sockets against the
//! service (sessions and groups from the database): who may listen, connect and accept, the
//! limits, and that a joined circuit carries bytes both ways untouched.

use std::net::SocketAddr;

use ed25519_dalek::{Signer, SigningKey};
use minitorr_proto::relay::{
    auth_message, read_frame, write_frame, RelayHello, RelayMsg, RelayOp, RelayRefusal,
};
use minitorr_proto::{handshake, Link};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use trackerd::relay::{serve_relay, RelayLimits};

use super::{signing_key_for, Harness};

struct Lab {
    h: Harness,
    relay: SocketAddr,
    _stop: tokio_util::sync::DropGuard,
}

/// alice (holder) and bob (downloader) share group g; mallory is a member of nothing shared.
async fn lab(limits: RelayLimits) -> Lab {
    let h = Harness::new().await;
    for u in ["alice", "bob", "mallory"] {
        h.create_user(u).await;
    }
    let a = h.login_other_device("alice", "127.0.0.1:7101").await.token;
    let b = h.login_other_device("bob", "127.0.0.1:7102").await.token;
    let m = h
        .login_other_device("mallory", "127.0.0.1:7103")
        .await
        .token;
    h.group("g", &a, &[&b]).await;
    h.group("other", &m, &[]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve_relay(listener, h.svc.clone(), limits, stop.clone()));
    Lab {
        h,
        relay,
        _stop: stop.drop_guard(),
    }
}

fn limits() -> RelayLimits {
    RelayLimits {
        max_circuits: 16,
        max_circuits_per_user: 4,
        max_listeners: 16,
    }
}

fn key(addr: &str) -> SigningKey {
    signing_key_for(addr)
}

const ALICE: &str = "127.0.0.1:7101";
const BOB: &str = "127.0.0.1:7102";
const MALLORY: &str = "127.0.0.1:7103";

/// Connect, answer the challenge with `op` signed by `sk` (or a wrong signature), and return
/// the stream for the relay's answer.
async fn hello(relay: SocketAddr, sk: &SigningKey, op: RelayOp, good_signature: bool) -> TcpStream {
    let mut s = TcpStream::connect(relay).await.unwrap();
    handshake(&mut s, Link::Relay).await.unwrap();
    let RelayMsg::Challenge { nonce } = read_frame(&mut s).await.unwrap() else {
        panic!("no challenge")
    };
    let device_key = sk.verifying_key().to_bytes();
    let mut signed = auth_message(&nonce, &device_key, &op);
    if !good_signature {
        signed[0] ^= 1;
    }
    let signature = sk.sign(&signed).to_bytes().to_vec();
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

async fn answer(s: &mut TcpStream) -> RelayMsg {
    tokio::time::timeout(std::time::Duration::from_secs(20), read_frame(s))
        .await
        .expect("relay answers")
        .unwrap()
}

fn refusal(m: RelayMsg) -> RelayRefusal {
    match m {
        RelayMsg::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn listening(l: &Lab, who: &str) -> TcpStream {
    let mut s = hello(l.relay, &key(who), RelayOp::Listen, true).await;
    assert_eq!(answer(&mut s).await, RelayMsg::Listening);
    s
}

fn connect_op(holder: &str) -> RelayOp {
    RelayOp::Connect {
        holder_key: key(holder).verifying_key().to_bytes(),
    }
}

#[tokio::test]
async fn a_circuit_joins_downloader_and_holder_and_carries_bytes_both_ways() {
    let l = lab(limits()).await;
    let mut ctl = listening(&l, ALICE).await;
    let relay = l.relay;
    let downloader = tokio::spawn(async move {
        let mut d = hello(relay, &key(BOB), connect_op(ALICE), true).await;
        assert_eq!(answer(&mut d).await, RelayMsg::Joined);
        d
    });
    let RelayMsg::Incoming {
        circuit,
        from_user,
        from_key,
    } = answer(&mut ctl).await
    else {
        panic!("no incoming notice")
    };
    assert_eq!(from_user, "bob");
    assert_eq!(from_key, key(BOB).verifying_key().to_bytes());
    // Another member's device cannot take the circuit meant for alice's.
    let mut thief = hello(l.relay, &key(BOB), RelayOp::Accept { circuit }, true).await;
    assert_eq!(
        refusal(answer(&mut thief).await),
        RelayRefusal::NoSuchCircuit
    );
    let mut h = hello(l.relay, &key(ALICE), RelayOp::Accept { circuit }, true).await;
    assert_eq!(answer(&mut h).await, RelayMsg::Joined);
    let mut d = downloader.await.unwrap();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
    let (w, r) = tokio::join!(
        async {
            h.write_all(&big).await.unwrap();
            h.shutdown().await.unwrap();
        },
        async {
            let mut got = Vec::new();
            d.read_to_end(&mut got).await.unwrap();
            got
        }
    );
    let () = w;
    assert_eq!(r, big, "the relay delivers the bytes unchanged");
    d.write_all(b"back").await.unwrap();
    let mut back = [0u8; 4];
    h.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"back");
}

#[tokio::test]
async fn outsiders_and_forged_signatures_are_refused() {
    let l = lab(limits()).await;
    let _ctl = listening(&l, ALICE).await;
    // A valid key with no session on the tracker.
    let mut s = hello(l.relay, &key("nobody"), connect_op(ALICE), true).await;
    assert_eq!(
        refusal(answer(&mut s).await),
        RelayRefusal::NotAuthenticated
    );
    // bob's key, but the signature does not match (someone replaying or forging).
    let mut s = hello(l.relay, &key(BOB), connect_op(ALICE), false).await;
    assert_eq!(
        refusal(answer(&mut s).await),
        RelayRefusal::NotAuthenticated
    );
    // An outsider cannot listen either.
    let mut s = hello(l.relay, &key("nobody"), RelayOp::Listen, true).await;
    assert_eq!(
        refusal(answer(&mut s).await),
        RelayRefusal::NotAuthenticated
    );
    // A session that stopped heartbeating is offline: refused like an outsider.
    l.h.advance(3600);
    let mut s = hello(l.relay, &key(BOB), connect_op(ALICE), true).await;
    assert_eq!(
        refusal(answer(&mut s).await),
        RelayRefusal::NotAuthenticated
    );
}

#[tokio::test]
async fn only_members_of_a_common_group_are_joined() {
    let l = lab(limits()).await;
    let _ctl = listening(&l, ALICE).await;
    let mut s = hello(l.relay, &key(MALLORY), connect_op(ALICE), true).await;
    assert_eq!(refusal(answer(&mut s).await), RelayRefusal::Forbidden);
    // A holder that is not listening is named as the reason.
    let mut s = hello(l.relay, &key(ALICE), connect_op(BOB), true).await;
    assert_eq!(
        refusal(answer(&mut s).await),
        RelayRefusal::HolderNotListening
    );
}

#[tokio::test]
async fn the_per_user_circuit_limit_counts_circuits_waiting_for_their_holder() {
    let l = lab(RelayLimits {
        max_circuits_per_user: 1,
        ..limits()
    })
    .await;
    let mut ctl = listening(&l, ALICE).await;
    // bob's first circuit waits for alice (who does not accept): it counts.
    let _first = hello(l.relay, &key(BOB), connect_op(ALICE), true).await;
    assert!(matches!(answer(&mut ctl).await, RelayMsg::Incoming { .. }));
    let mut second = hello(l.relay, &key(BOB), connect_op(ALICE), true).await;
    assert_eq!(refusal(answer(&mut second).await), RelayRefusal::Busy);
    // alice (another user) still has room.
    let mut bob_ctl = listening(&l, BOB).await;
    let _alice = hello(l.relay, &key(ALICE), connect_op(BOB), true).await;
    assert!(
        matches!(answer(&mut bob_ctl).await, RelayMsg::Incoming { from_user, .. } if from_user == "alice")
    );
}

#[tokio::test]
async fn a_holder_that_never_accepts_makes_the_downloader_hear_why() {
    let l = lab(limits()).await;
    let _ctl = listening(&l, ALICE).await;
    let mut d = hello(l.relay, &key(BOB), connect_op(ALICE), true).await;
    assert_eq!(
        refusal(answer(&mut d).await),
        RelayRefusal::HolderDidNotAnswer
    );
}

#[tokio::test]
async fn a_crowd_of_silent_connections_does_not_lock_daemons_out() {
    let l = lab(limits()).await;
    // More silent connections than the relay keeps unauthenticated (256; 64 per source).
    let mut crowd = Vec::new();
    for _ in 0..300 {
        crowd.push(TcpStream::connect(l.relay).await.unwrap());
    }
    // A real daemon connecting after them is the newest: it is served.
    let mut ctl = hello(l.relay, &key(ALICE), RelayOp::Listen, true).await;
    assert_eq!(answer(&mut ctl).await, RelayMsg::Listening);
    // And most of the crowd was closed to make room (read gives EOF, not a hang).
    let mut closed = 0;
    for c in crowd.iter_mut() {
        let mut buf = [0u8; 64];
        // Each first got the relay's preamble; an evicted one then reads EOF.
        let mut total = 0;
        loop {
            match tokio::time::timeout(std::time::Duration::from_millis(200), c.read(&mut buf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(n)) => total += n,
                Err(_) => break,
            }
            if total > 4096 {
                break;
            }
        }
    }
    assert!(
        closed >= 200,
        "only {closed} of 300 silent connections were closed"
    );
}

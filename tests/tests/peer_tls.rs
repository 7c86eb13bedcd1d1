//! Peer links are TLS 1.3 authenticated by device keys (docs/SECURITY.md, "Peer links"): a
//! network observer sees no file bytes and no usable ticket, a ticket only works for the device
//! it was issued to, plaintext gets nothing, and a holder that cannot prove the device key the
//! tracker listed for it is never used.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use minitorr_e2e::*;
use minitorr_proto::peer::PeerMsg;
use minitorr_proto::ticket::Ticket;
use minitorr_proto::tracker::{Call, FileDetails, Response};

/// A line that occurs all over the shared file: if a capture holds file bytes, it holds this.
const MARKER: &[u8] = b"MINITORR-PLAINTEXT-MARKER:the-quick-brown-fox;";

/// A file of `size` bytes, the marker repeated with a counter (distinctive at every offset).
fn marked_file(path: &Path, size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(size + 64);
    let mut i = 0u64;
    while data.len() < size {
        data.extend_from_slice(MARKER);
        data.extend_from_slice(format!("{i:08}\n").as_bytes());
        i += 1;
    }
    data.truncate(size);
    std::fs::write(path, &data).unwrap();
    data
}

/// Alice shares `f.bin` (marked content) in g1; `carol` is created and will be accepted.
fn alice_shares(dir: &Path, size: usize) -> (Tracker, Peer, Vec<u8>) {
    let tracker = Tracker::start(&dir.join("t"));
    let alice = Peer::start(&dir.join("alice"), &tracker);
    user(&alice, "alice");
    alice.ok(&["create_group", "g1"]);
    let f = dir.join("alice").join("f.bin");
    let data = marked_file(&f, size);
    alice.ok(&["upload_file", f.to_str().unwrap(), "g1"]);
    alice.ok(&["create_user", "carol", "pw-carol"]);
    (tracker, alice, data)
}

/// A raw client logged in as carol (with its own fresh device key), member of g1.
async fn carol(tracker: &Tracker, alice: &Peer) -> fakepeer::TrackerClient {
    let mut c = fakepeer::TrackerClient::connect(tracker.addr).await;
    c.login("carol", "pw-carol", "127.0.0.1:9".parse().unwrap())
        .await;
    c.call(Call::JoinGroup { group: "g1".into() }).await;
    alice.ok(&["accept_request", "g1", "carol"]);
    c
}

async fn get_file(c: &mut fakepeer::TrackerClient) -> FileDetails {
    match c
        .call(Call::GetFile {
            group: "g1".into(),
            file: "f.bin".into(),
        })
        .await
    {
        Response::File(d) => *d,
        other => panic!("{other:?}"),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_network_observer_of_a_peer_link_sees_no_file_bytes_and_no_ticket() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 1536 * 1024 + 123; // 4 pieces of 512 KiB, the last one short
    let (tracker, alice, data) = alice_shares(tmp.path(), size);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = carol(&tracker, &alice).await;
        let d = get_file(&mut c).await;
        assert_eq!(d.peers.len(), 1, "{:?}", d.peers);
        let holder = &d.peers[0];
        assert_eq!(
            holder.device_key,
            alice.device_key().public_bytes(),
            "the tracker lists the holder's device key"
        );
        assert_eq!(d.ticket.claims.device_key, c.device.public_bytes());

        // Carol downloads the whole file through a proxy that records both directions.
        let proxy = fakepeer::RecordingProxy::start(alice.addr).await;
        let mut conn = fakepeer::tls_connect(proxy.addr, &c.device, holder.device_key)
            .await
            .unwrap();
        let first = fakepeer::say_hello(&mut conn, d.ticket.clone()).await;
        assert!(matches!(first, Some(PeerMsg::Welcome { .. })), "{first:?}");
        let got = fakepeer::fetch_all(&mut conn, &d.meta).await;
        assert!(got == data, "the download itself works through the proxy");
        drop(conn);

        let captured = proxy.captured.lock().unwrap().clone();
        assert!(
            captured.len() > size,
            "all the file's bytes crossed the proxy ({} bytes captured)",
            captured.len()
        );
        assert!(
            contains(&data, MARKER),
            "the marker is in the file (sanity)"
        );
        assert!(
            !contains(&captured, MARKER),
            "file content visible to a network observer"
        );
        assert!(
            !contains(&captured, &d.ticket.signature),
            "the ticket is visible to a network observer"
        );
        assert!(
            !contains(&captured, b"f.bin") && !contains(&captured, b"carol"),
            "file or user names visible to a network observer"
        );
    });
}

#[test]
fn a_replayed_ticket_and_plaintext_connections_get_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (tracker, alice, _data) = alice_shares(tmp.path(), 700 * 1024);
    let alice_key = alice.device_key().public_bytes();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = carol(&tracker, &alice).await;
        let ticket: Ticket = get_file(&mut c).await.ticket;

        // Someone else (no account, a fresh device key) replays carol's ticket over TLS.
        let thief = fakepeer::DeviceKey::generate();
        let mut conn = fakepeer::tls_connect(alice.addr, &thief, alice_key)
            .await
            .unwrap();
        match fakepeer::say_hello(&mut conn, ticket.clone()).await {
            Some(PeerMsg::Refused { reason }) => {
                assert!(reason.contains("another device"), "{reason}")
            }
            other => panic!("replayed ticket accepted: {other:?}"),
        }
        assert_no_piece(&mut conn).await;

        // Plaintext, even with the genuine ticket: a refusal saying why, and no data.
        let mut plain = fakepeer::plaintext_connect(alice.addr).await.unwrap();
        match fakepeer::say_hello(&mut plain, ticket.clone()).await {
            Some(PeerMsg::Refused { reason }) => {
                assert!(reason.contains("only accepts encrypted"), "{reason}")
            }
            other => panic!("plaintext peer link answered: {other:?}"),
        }
        assert_no_piece(&mut plain).await;

        // The genuine holder of the ticket's key is served (baseline).
        let mut conn = fakepeer::tls_connect(alice.addr, &c.device, alice_key)
            .await
            .unwrap();
        let first = fakepeer::say_hello(&mut conn, ticket).await;
        assert!(matches!(first, Some(PeerMsg::Welcome { .. })), "{first:?}");
    });
    let log = alice.log();
    assert!(log.contains("another device"), "refusal logged");
    assert!(log.contains("plaintext"), "plaintext refusal logged");
}

/// Asking for a piece gets nothing: the connection ends without a `Piece`.
async fn assert_no_piece<S>(conn: &mut fakepeer::PeerConn<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::{SinkExt, StreamExt};
    let _ = conn.send(PeerMsg::Request { piece: 0 }).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), conn.next()).await {
            Err(_) => panic!("connection kept open after a refusal"),
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(PeerMsg::Piece { piece, .. }))) => panic!("served piece {piece}"),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

#[test]
fn a_holder_proving_another_key_than_the_tracker_listed_is_never_used() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let alice = Peer::start(&tmp.path().join("alice"), &tracker);
    let bob = Peer::start(&tmp.path().join("bob"), &tracker);
    user(&alice, "alice");
    user(&bob, "bob");
    group_with(&alice, "g1", &[(&bob, "bob")]);
    alice.ok(&["create_user", "carol", "pw-carol"]);
    let f = tmp.path().join("alice").join("f.bin");
    let data = marked_file(&f, 1024 * 1024 + 5);
    let meta = fakepeer::meta_as_shared("f.bin", &data);

    // Carol logs in with device key A but serves with key B — the genuine bytes, even: an
    // impostor (or a man in the middle) is refused for who it is, whatever it sends.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let impostor_addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut c = fakepeer::TrackerClient::connect(tracker.addr).await;
        c.login("carol", "pw-carol", addr).await;
        c.call(Call::JoinGroup { group: "g1".into() }).await;
        alice.ok(&["accept_request", "g1", "carol"]);
        let r = c
            .call(Call::Share {
                group: "g1".into(),
                meta: meta.clone().into(),
                complete: true,
            })
            .await;
        assert!(matches!(r, Response::Ok { .. }), "{r:?}");
        let bytes = data.clone();
        let m = meta.clone();
        tokio::spawn(fakepeer::serve_tls_counting(
            listener,
            fakepeer::DeviceKey::generate(),
            meta.clone(),
            move |i, len| {
                let at = m.piece_offset(i) as usize;
                bytes[at..at + len].to_vec()
            },
            handshakes.clone(),
        ));
        // Carol stays online (listed as a holder) for the whole test.
        tokio::spawn(async move {
            loop {
                c.call(Call::Heartbeat).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        addr
    });

    // Only the impostor holds the file: bob's download refuses it and waits.
    let dest = tmp.path().join("bob");
    bob.ok(&["download_file", "g1", "f.bin", dest.to_str().unwrap()]);
    wait_until("bob refuses the impostor", Duration::from_secs(15), || {
        bob.log()
            .contains("does not match the key the tracker listed")
    });
    assert_eq!(bytes_done(&bob, "g1", "f.bin"), 0, "nothing taken from it");

    // An honest holder appears: the download completes from it alone.
    alice.ok(&["upload_file", f.to_str().unwrap(), "g1"]);
    let d = bob.wait_download("g1", "f.bin", Duration::from_secs(30));
    assert_eq!(d["state"], "complete", "{d}\n{}", bob.log_tail(30));
    assert_eq!(std::fs::read(dest.join("f.bin")).unwrap(), data);
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        0,
        "a TLS session with the impostor was completed"
    );
    let peers = d["peers"].as_array().unwrap();
    let from_impostor = peers
        .iter()
        .find(|p| p["addr"] == impostor_addr.to_string())
        .map_or(0, |p| p["bytes_received"].as_u64().unwrap_or(0));
    assert_eq!(from_impostor, 0, "{d}");
}

#[test]
fn plaintext_benchmark_mode_is_loopback_only_and_refuses_tls_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("plain.toml");
    std::fs::write(
        &conf,
        "insecure_plaintext_peer_links_for_benchmarks = true\n",
    )
    .unwrap();

    // Off loopback: the daemon does not start, and says why.
    let tracker = Tracker::start(&tmp.path().join("t"));
    let out = std::process::Command::new(bin("minitorrd"))
        .arg("--config")
        .arg(&conf)
        .arg("--socket")
        .arg(tmp.path().join("x.sock"))
        .arg("--state-dir")
        .arg(tmp.path().join("xstate"))
        .arg("--tracker")
        .arg(tracker.addr.to_string())
        .arg(format!("0.0.0.0:{}", free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("insecure_plaintext_peer_links_for_benchmarks") && err.contains("loopback"),
        "{err}"
    );

    // On loopback it runs; a TLS client meets a clear refusal, never a silent downgrade.
    let alice = Peer::start_with(
        &tmp.path().join("alice"),
        &[tracker.addr],
        &["--config", conf.to_str().unwrap()],
    );
    user(&alice, "alice");
    alice.ok(&["create_group", "g1"]);
    let f = tmp.path().join("alice").join("f.bin");
    marked_file(&f, 100_000);
    alice.ok(&["upload_file", f.to_str().unwrap(), "g1"]);
    alice.ok(&["create_user", "carol", "pw-carol"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = carol(&tracker, &alice).await;
        let d = get_file(&mut c).await;
        let e = fakepeer::tls_connect(alice.addr, &c.device, d.peers[0].device_key)
            .await
            .err()
            .expect("TLS to a plaintext daemon fails");
        let why = minitorrd::peerlink::tls::describe(&e);
        assert!(why.contains("did not answer with TLS"), "{why}");
        // Plaintext to it works: this is the benchmark mode.
        let mut plain = fakepeer::plaintext_connect(alice.addr).await.unwrap();
        let first = fakepeer::say_hello(&mut plain, d.ticket).await;
        assert!(matches!(first, Some(PeerMsg::Welcome { .. })), "{first:?}");
    });
    assert!(alice
        .log()
        .contains("insecure_plaintext_peer_links_for_benchmarks"));
}

#[test]
fn a_device_key_others_can_read_or_a_planted_link_stops_the_daemon_with_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let state = tmp.path().join("state");
    let start = || {
        std::process::Command::new(bin("minitorrd"))
            .arg("--socket")
            .arg(tmp.path().join("x.sock"))
            .arg("--state-dir")
            .arg(&state)
            .arg("--tracker")
            .arg(tracker.addr.to_string())
            .arg(format!("127.0.0.1:{}", free_port()))
            .output()
            .unwrap()
    };
    let key = state.join("device.key");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();

    // A link planted where the key goes (e.g. to a key file the attacker controls).
    let planted = tmp.path().join("attackers.key");
    std::fs::write(&planted, fakepeer::DeviceKey::generate().public_bytes()).unwrap();
    std::os::unix::fs::symlink(&planted, &key).unwrap();
    let out = start();
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("symbolic link"),
        "{}",
        stderr_of(&out)
    );
    std::fs::remove_file(&key).unwrap();

    // A key readable by others.
    let generated = fakepeer::DeviceKey::load_or_create(&state).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = start();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("chmod 600") && err.contains("device.key"),
        "{err}"
    );
    // Fixed as the message says, the same key loads again (nothing was replaced).
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fakepeer::DeviceKey::load(&key).unwrap().public_bytes(),
        generated.public_bytes()
    );
}

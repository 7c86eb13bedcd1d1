//! A group member turned hostile, against real trackerd/minitorrd processes: a bogus
//! registration the owner removes, sharing under another name, a quota refusal through the
//! CLI, announced peer addresses replaced by observed ones, look-alike and NFD names.

use std::net::IpAddr;
use std::path::Path;

use minitorr_e2e::*;
use minitorr_proto::tracker::{Call, ErrorCode, Response};
use minitorr_proto::types::{FileMeta, Sha1Hash};

type Raw = fakepeer::TrackerClient;

/// bob's password as set by `alice_and_bob_in_g1`.
const PW: &str = "pw-of-someone";

fn file_names(peer: &Peer, group: &str) -> Vec<String> {
    let v = peer.json(&["list_files", group]);
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_owner_removes_a_bogus_registration_and_the_real_upload_then_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, alice, bob) = alice_and_bob_in_g1(dir.path());
    let src = dir.path().join("report.bin");
    let sha = random_file(&src, 300_000);

    // bob, hostile, registers the name first with made-up hashes, straight at the tracker.
    rt().block_on(async {
        let mut raw = Raw::connect(tracker.addr).await;
        raw.login("bob", PW, "127.0.0.1:9".parse().unwrap()).await;
        let bogus = FileMeta {
            name: "report.bin".into(),
            size: 300_000,
            piece_size: 16384,
            sha1: Sha1Hash([0xbb; 20]),
            pieces: vec![Sha1Hash([0xbb; 20]); 19],
            tree: None,
        };
        let r = raw
            .call(Call::Share {
                group: "g1".into(),
                meta: bogus.into(),
                complete: true,
            })
            .await;
        assert!(matches!(r, Response::Ok { .. }), "{r:?}");
    });
    let err = alice.fails(1, &["upload_file", src.to_str().unwrap(), "g1"]);
    assert!(
        err.contains("g1 already has report.bin with a different SHA1")
            && err.contains("remove_file"),
        "{err}"
    );
    // Only the owner may remove it.
    let err = bob.fails(1, &["remove_file", "g1", "report.bin"]);
    assert!(
        err.contains("only the owner of g1 can remove its files"),
        "{err}"
    );
    let out = alice.ok(&["remove_file", "g1", "report.bin"]);
    assert!(
        out.contains("removed report.bin from g1 (1 holder dropped)"),
        "{out}"
    );
    assert!(file_names(&alice, "g1").is_empty());

    alice.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    let into = dir.path().join("bob-in");
    std::fs::create_dir(&into).unwrap();
    bob.ok(&[
        "download_file",
        "g1",
        "report.bin",
        into.to_str().unwrap(),
        "--wait",
        "--timeout",
        "60",
    ]);
    assert_eq!(sha1_file(&into.join("report.bin")), sha);
    let err = alice.fails(1, &["remove_file", "g1", "nothing.bin"]);
    assert!(err.contains("g1 has no file nothing.bin"), "{err}");
}

#[test]
fn upload_under_another_name_is_kept_across_logins() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, alice, bob) = alice_and_bob_in_g1(dir.path());
    let src = dir.path().join("data.bin");
    let sha = random_file(&src, 100_000);
    let v = alice.json(&[
        "upload_file",
        src.to_str().unwrap(),
        "g1",
        "--name",
        "report 2026.bin",
    ]);
    assert_eq!(v["file"]["name"], "report 2026.bin", "{v}");
    assert_eq!(file_names(&bob, "g1"), ["report 2026.bin"]);
    // A bad --name is a usage error, like any other name.
    let err = alice.fails(
        2,
        &["upload_file", src.to_str().unwrap(), "g1", "--name", "a/b"],
    );
    assert!(
        err.contains("file name may not contain path separators"),
        "{err}"
    );

    // Logging in again shares it again under the chosen name, from the same path.
    alice.ok(&["logout"]);
    alice.ok(&["login", "alice", PW]);
    assert_eq!(file_names(&bob, "g1"), ["report 2026.bin"]);
    let into = dir.path().join("in");
    std::fs::create_dir(&into).unwrap();
    bob.ok(&[
        "download_file",
        "g1",
        "report 2026.bin",
        into.to_str().unwrap(),
        "--wait",
        "--timeout",
        "60",
    ]);
    assert_eq!(sha1_file(&into.join("report 2026.bin")), sha);
}

#[test]
fn a_quota_refusal_reaches_the_cli_with_its_message_and_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("trackerd.toml");
    std::fs::write(&cfg, "quota_files_per_group = 1\n").unwrap();
    let tracker = Tracker::start_args(
        &dir.path().join("tracker"),
        &["--config", cfg.to_str().unwrap()],
    );
    let alice = Peer::start(&dir.path().join("alice"), &tracker);
    user(&alice, "alice");
    alice.ok(&["create_group", "g1"]);
    let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
    random_file(&a, 1000);
    random_file(&b, 1000);
    alice.ok(&["upload_file", a.to_str().unwrap(), "g1"]);
    let err = alice.fails(1, &["upload_file", b.to_str().unwrap(), "g1"]);
    assert!(
        err.contains(
            "quota exceeded: you registered 1 files in this group; the limit is 1 per member"
        ),
        "{err}"
    );
    assert!(err.contains("ask the tracker's operator"), "{err}");
    let out = alice.ctl(&["--json", "upload_file", b.to_str().unwrap(), "g1"]);
    assert_eq!(out.status.code(), Some(1));
    let v = one_json_document(&stdout_of(&out));
    assert_eq!(v["error"]["kind"], "quota_exceeded", "{v}");
    // Sharing again what one already registered costs nothing.
    alice.ok(&["upload_file", a.to_str().unwrap(), "g1"]);
}

#[test]
fn a_member_cannot_make_the_tracker_hand_out_someone_elses_address() {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, _alice, _bob) = alice_and_bob_in_g1(dir.path());
    rt().block_on(async {
        let data = vec![7u8; 50_000];
        let meta = fakepeer::meta_for("x.bin", &data, 16384);
        // bob announces 10.9.9.9:1234 from 127.0.0.1, then again from 127.0.0.7.
        for from in ["127.0.0.1", "127.0.0.7"] {
            let mut raw = Raw::connect_from(tracker.addr, from.parse::<IpAddr>().unwrap()).await;
            let r = raw
                .try_login("bob", PW, "10.9.9.9:1234".parse().unwrap())
                .await;
            match r {
                Response::LoggedIn(g) => assert_eq!(g.peer_addr, format!("{from}:1234")),
                other => panic!("{other:?}"),
            }
            let r = raw
                .call(Call::Share {
                    group: "g1".into(),
                    meta: meta.clone().into(),
                    complete: true,
                })
                .await;
            assert!(matches!(r, Response::Ok { .. }), "{r:?}");
        }
        let mut asker = Raw::connect(tracker.addr).await;
        asker
            .login("alice", PW, "127.0.0.1:9".parse().unwrap())
            .await;
        let peers = match asker
            .call(Call::GetFile {
                group: "g1".into(),
                file: "x.bin".into(),
            })
            .await
        {
            Response::File(d) => d.peers,
            other => panic!("{other:?}"),
        };
        // bob's own minitorrd is listed too (at its real address); the raw sessions at the
        // address their connection came from, never at the announced one.
        let addrs: Vec<String> = peers.into_iter().map(|p| p.addr).collect();
        assert!(addrs.contains(&"127.0.0.1:1234".to_string()), "{addrs:?}");
        assert!(addrs.contains(&"127.0.0.7:1234".to_string()), "{addrs:?}");
        assert!(
            !addrs.iter().any(|a| a.starts_with("10.9.9.9")),
            "{addrs:?}"
        );
    });
}

#[test]
fn look_alike_user_names_are_refused_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let peer = Peer::start(&dir.path().join("p"), &tracker);
    user(&peer, "alice");
    // Cyrillic а (U+0430) in front of Latin "lice".
    let err = peer.fails(2, &["create_user", "\u{430}lice", "pw-123456"]);
    assert!(
        err.contains(
            "user name mixes scripts within one word (U+0430 is Cyrillic, mixed with Latin)"
        ),
        "{err}"
    );
    let err = peer.fails(2, &["create_user", "bob\u{202E}nimda", "pw-123456"]);
    assert!(
        err.contains("user name contains the bidirectional control character U+202E"),
        "{err}"
    );
    assert!(
        !err.contains('\u{202E}'),
        "the error does not echo the character"
    );
    assert!(err.contains("bob<U+202E>nimda"), "{err}");
    let err = peer.fails(2, &["create_user", "bob\u{200B}", "pw-123456"]);
    assert!(err.contains("invisible character U+200B"), "{err}");
    // A client that skips minitorrctl's checks gets the same answer from the tracker itself.
    rt().block_on(async {
        let mut raw = Raw::connect(tracker.addr).await;
        for (name, needle) in [
            ("\u{430}lice", "U+0430 is Cyrillic"),
            ("bob\u{202E}", "U+202E"),
        ] {
            let r = raw
                .call(Call::CreateUser {
                    user: name.into(),
                    password: "pw-123456".into(),
                })
                .await;
            match r {
                Response::Error {
                    code: ErrorCode::BadRequest,
                    message,
                } => assert!(message.contains(needle), "{message}"),
                other => panic!("{other:?}"),
            }
        }
    });
}

#[test]
fn cafe_in_nfc_and_nfd_is_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, alice, bob) = alice_and_bob_in_g1(dir.path());
    let nfd = "cafe\u{301}.txt";
    let nfc = "caf\u{e9}.txt";
    // The file on alice's disk is named in NFD (as macOS writes names); it stays so.
    let src = dir.path().join(nfd);
    let sha = random_file(&src, 40_000);
    let v = alice.json(&["upload_file", src.to_str().unwrap(), "g1"]);
    assert_eq!(v["file"]["name"], nfc, "shared under the NFC form");
    assert!(src.exists());
    assert_eq!(file_names(&bob, "g1"), [nfc]);
    // Another file whose name is the NFC spelling is the same name: refused, not a second file.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let src2 = other.join(nfc);
    random_file(&src2, 40_000);
    let err = alice.fails(1, &["upload_file", src2.to_str().unwrap(), "g1"]);
    assert!(err.contains(&format!("g1 already has {nfc}")), "{err}");
    // bob types the NFD spelling; it is the one file, written under its NFC name.
    let into = dir.path().join("in");
    std::fs::create_dir(&into).unwrap();
    bob.ok(&[
        "download_file",
        "g1",
        nfd,
        into.to_str().unwrap(),
        "--wait",
        "--timeout",
        "60",
    ]);
    assert_eq!(sha1_file(&into.join(nfc)), sha);
    assert!(!Path::new(&into.join(nfd)).exists());
    // Typed either way, stop_share finds it.
    bob.ok(&["stop_share", "g1", nfd]);
    alice.ok(&["stop_share", "g1", nfc]);
    assert!(file_names(&bob, "g1").is_empty());
}

/// The owner removes an entry a member shares: the member's daemon hears it on its event
/// subscription and forgets the share, so its next login does not register the entry again.
#[test]
fn a_file_the_owner_removed_is_not_shared_again_at_the_holders_next_login() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, alice, bob) = alice_and_bob_in_g1(dir.path());
    let src = dir.path().join("bob/notes.bin");
    random_file(&src, 100_000);
    bob.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    assert_eq!(file_names(&alice, "g1"), ["notes.bin"]);

    alice.ok(&["remove_file", "g1", "notes.bin"]);
    assert!(file_names(&alice, "g1").is_empty());
    // The event reaches bob's daemon within moments; give it a generous margin, then log
    // out and in again: the re-share must not bring the entry back.
    let state = || std::fs::read_to_string(bob.dir.join("state/state.json")).unwrap_or_default();
    let start = std::time::Instant::now();
    while state().contains("notes.bin") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "bob's daemon still records notes.bin after 10 s:\n{}\n{}",
            state(),
            bob.log_tail(30)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bob.ok(&["logout"]);
    bob.ok(&["login", "bob", PW]);
    assert!(
        file_names(&alice, "g1").is_empty(),
        "bob's next login registered the removed entry again"
    );
}

/// A seeder's request queue is counted in bytes (`proto::peer::max_queued_requests`: 32 MiB,
/// so 512 requests of 64 KiB): a downloader on a long link may queue that many small pieces and
/// every one is served; a member that floods far more requests is cut off, and the seeder goes
/// on serving the others.
#[test]
fn a_deep_pipeline_of_small_pieces_is_served_and_a_flood_of_requests_is_cut_off() {
    use futures::{SinkExt, StreamExt};
    use minitorr_proto::peer::PeerMsg;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let seed = Peer::start(&tmp.path().join("seed"), &tracker);
    user(&seed, "seed");
    seed.ok(&["create_group", "g1"]);
    let size = 3 * 1024 * 1024 + 5;
    let src = tmp.path().join("seed").join("data.bin");
    random_file(&src, size);
    let up = seed.json(&["upload_file", src.to_str().unwrap(), "g1"]);
    let ps = up["file"]["piece_size"].as_u64().unwrap() as u32;
    assert_eq!(
        ps,
        64 * 1024,
        "the automatic piece size of a 3 MiB file: {up}"
    );
    let pieces = size.div_ceil(ps as usize) as u32;
    let limit = minitorr_proto::peer::max_queued_requests(ps);
    assert_eq!(limit, 512);

    rt().block_on(async {
        let mut m = fakepeer::FakeMember::create(tracker.addr, "mallory").await;
        m.join("g1").await;
        seed.ok(&["accept_request", "g1", "mallory"]);

        // `limit` requests at once (what a downloader 400 ms away at ~80 MB/s would keep in
        // flight): every one answered with its piece.
        let (mut f, first) = fakepeer::open_peer(seed.addr, m.ticket("g1", "data.bin").await).await;
        assert!(matches!(first, PeerMsg::Welcome { .. }), "{first:?}");
        for i in 0..limit as u32 {
            f.feed(PeerMsg::Request { piece: i % pieces })
                .await
                .unwrap();
        }
        f.flush().await.unwrap();
        let mut got = 0;
        while got < limit {
            match tokio::time::timeout(Duration::from_secs(30), f.next()).await {
                Ok(Some(Ok(PeerMsg::Piece { .. }))) => got += 1,
                Ok(Some(Ok(_))) => {}
                other => panic!("{got} of {limit} pieces, then {other:?}"),
            }
        }
        drop(f);

        // Four times that: the connection is closed long before all are served.
        let (mut f, _) = fakepeer::open_peer(seed.addr, m.ticket("g1", "data.bin").await).await;
        for i in 0..4 * limit as u32 {
            f.feed(PeerMsg::Request { piece: i % pieces })
                .await
                .unwrap();
        }
        f.flush().await.unwrap();
        let mut served = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), f.next()).await {
                Err(_) => panic!("a flood of {} requests kept the connection open", 4 * limit),
                Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(PeerMsg::Piece { .. }))) => served += 1,
                Ok(Some(Ok(_))) => {}
            }
        }
        assert!(served < 2 * limit, "{served} pieces served to a flood");
    });
    assert!(
        seed.log().contains("exceeded the request queue"),
        "the cut-off is logged"
    );

    // The seeder still serves an honest downloader.
    let bob = Peer::start(&tmp.path().join("bob"), &tracker);
    user(&bob, "bob");
    bob.ok(&["join_group", "g1"]);
    seed.ok(&["accept_request", "g1", "bob"]);
    let out = tmp.path().join("bob").join("in");
    std::fs::create_dir_all(&out).unwrap();
    bob.ok(&[
        "download_file",
        "g1",
        "data.bin",
        out.to_str().unwrap(),
        "--wait",
    ]);
    assert_eq!(sha1_file(&out.join("data.bin")), sha1_file(&src));
}

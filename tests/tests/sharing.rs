//! File sharing end to end: upload, multi-peer download, integrity, partial seeding, resume.
//! Real trackerd + minitorrd processes on 127.0.0.1, driven through minitorrctl.

use std::time::Duration;

use minitorr_e2e::*;

const MIB: usize = 1024 * 1024;
const LONG: Duration = Duration::from_secs(90);

#[test]
fn three_seeders_serve_one_download_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    // Each seeder capped at 4 MiB/s: the download needs all of them to go fast, so all
    // contribute. "At least 2 contributed" below depends on timing: one seeder alone would need
    // 5 s for the file, so the others must fail to deliver a single piece for 5 s — a margin
    // that holds on a loaded machine (at 8 MiB/s it was 2.5 s).
    let seeds: Vec<Peer> = (0..3)
        .map(|i| capped_peer(&tmp.path().join(format!("s{i}")), &tracker, 4 * MIB as u64))
        .collect();
    let leech = Peer::start(&tmp.path().join("leech"), &tracker);
    user(&seeds[0], "s0");
    user(&seeds[1], "s1");
    user(&seeds[2], "s2");
    user(&leech, "dl");
    group_with(
        &seeds[0],
        "g1",
        &[(&seeds[1], "s1"), (&seeds[2], "s2"), (&leech, "dl")],
    );

    // 20 MiB + a bit: not a multiple of the 512 KiB piece size.
    let size = 20 * MIB + 12_345;
    let src = tmp.path().join("s0").join("data.bin");
    let sha = random_file(&src, size);
    for (i, s) in seeds.iter().enumerate() {
        let p = tmp.path().join(format!("s{i}")).join("data.bin");
        if i > 0 {
            std::fs::copy(&src, &p).unwrap();
        }
        let out = s.ok(&["upload_file", p.to_str().unwrap(), "g1"]);
        assert!(out.contains("data.bin"), "{out}");
    }
    assert_eq!(
        seeders(&leech, "g1", "data.bin"),
        3,
        "same content from 3 members = 3 seeders"
    );
    let files = leech.json(&["list_files", "g1"]);
    assert_eq!(files["files"][0]["sha1"], sha.as_str());

    let dest = tmp.path().join("leech").join("out");
    std::fs::create_dir(&dest).unwrap();
    leech.ok(&["download_file", "g1", "data.bin", dest.to_str().unwrap()]);
    let d = leech.wait_download("g1", "data.bin", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    let got = dest.join("data.bin");
    assert_eq!(
        std::fs::metadata(&got).unwrap().len(),
        size as u64,
        "exact size, no padding"
    );
    assert_eq!(sha1_file(&got), sha);
    let contributors = d["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["bytes_received"].as_u64().unwrap() > 0)
        .count();
    assert!(contributors >= 2, "at least 2 peers contributed: {d}");
    let total: u64 = d["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes_received"].as_u64().unwrap())
        .sum();
    assert!(total >= size as u64);
    // No part file left behind; the seed's show_downloads format in human output.
    assert!(!dest.join(".data.bin.minitorr-part").exists());
    let human = leech.ok(&["show_downloads"]);
    assert!(
        human.lines().any(|l| l.starts_with("[C] [g1] data.bin")),
        "{human}"
    );
    // The finished download makes the downloader a seeder too.
    wait_until(
        "downloader listed as seeder",
        Duration::from_secs(10),
        || seeders(&leech, "g1", "data.bin") == 4,
    );
}

#[test]
fn seeder_killed_mid_download_and_lying_peer_still_give_a_correct_file() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let mut a = capped_peer(&tmp.path().join("a"), &tracker, 3 * MIB as u64);
    let b = capped_peer(&tmp.path().join("b"), &tracker, 3 * MIB as u64);
    let leech = Peer::start(&tmp.path().join("c"), &tracker);
    user(&a, "a");
    user(&b, "b");
    user(&leech, "c");
    group_with(&a, "g1", &[(&b, "b"), (&leech, "c")]);
    let size = 12 * MIB + 77;
    let src = tmp.path().join("a").join("f.bin");
    let sha = random_file(&src, size);
    std::fs::copy(&src, tmp.path().join("b").join("f.bin")).unwrap();
    a.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    b.ok(&[
        "upload_file",
        tmp.path().join("b/f.bin").to_str().unwrap(),
        "g1",
    ]);

    // A liar: a member that announces the file and serves random bytes, fast.
    let data = std::fs::read(&src).unwrap();
    let meta = fakepeer::meta_as_shared("f.bin", &data);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let liar_addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut t = fakepeer::TrackerClient::connect(tracker.addr).await;
        t.call(minitorr_proto::tracker::Call::CreateUser {
            user: "liar".into(),
            password: "pw".into(),
        })
        .await;
        t.login("liar", "pw", addr).await;
        t.call(minitorr_proto::tracker::Call::JoinGroup { group: "g1".into() })
            .await;
        tokio::spawn(fakepeer::serve_garbage(
            listener,
            meta.clone(),
            t.device.clone(),
        ));
        (addr, t)
    });
    a.ok(&["accept_request", "g1", "liar"]);
    let (liar_addr, mut liar_tracker) = liar_addr;
    let r = rt.block_on(liar_tracker.call(minitorr_proto::tracker::Call::Share {
        group: "g1".into(),
        meta: meta.into(),
        complete: true,
    }));
    assert!(
        matches!(r, minitorr_proto::tracker::Response::Ok { .. }),
        "{r:?}"
    );

    let dest = tmp.path().join("c");
    leech.ok(&["download_file", "g1", "f.bin", dest.to_str().unwrap()]);
    wait_until("a quarter downloaded", LONG, || {
        bytes_done(&leech, "g1", "f.bin") >= (size / 4) as u64
    });
    a.kill9();
    let d = leech.wait_download("g1", "f.bin", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&dest.join("f.bin")), sha);
    let liar = d["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["addr"] == liar_addr.to_string())
        .cloned();
    let liar = liar.unwrap_or_else(|| panic!("the liar was tried: {d}"));
    assert!(liar["bad_pieces"].as_u64().unwrap() >= 2, "{liar}");
    assert_eq!(
        liar["bytes_received"], 0,
        "no byte from the liar counted: {liar}"
    );
    assert_eq!(liar["connected"], false, "liar dropped: {liar}");
    assert!(leech.log_tail(200).contains("dropped for this download"));
}

#[test]
fn download_resumes_after_sigkill_from_verified_pieces() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let seed = capped_peer(&tmp.path().join("s"), &tracker, 4 * MIB as u64);
    let mut leech = Peer::start(&tmp.path().join("l"), &tracker);
    user(&seed, "s");
    user(&leech, "l");
    group_with(&seed, "g1", &[(&leech, "l")]);
    let size = 16 * MIB + 3;
    let src = tmp.path().join("s").join("big.bin");
    let sha = random_file(&src, size);
    seed.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    let dest = tmp.path().join("l").join("big.bin");
    leech.ok(&["download_file", "g1", "big.bin", dest.to_str().unwrap()]);
    wait_until("40% downloaded", LONG, || {
        bytes_done(&leech, "g1", "big.bin") >= (size * 2 / 5) as u64
    });
    let before = bytes_done(&leech, "g1", "big.bin");
    leech.kill9();
    assert!(!dest.exists(), "never a final file before verification");
    leech.restart();
    let out = leech.ok(&["login", "l", "pw-of-someone"]);
    assert!(
        out.contains("big.bin"),
        "login reports the resumed download: {out}"
    );
    // The part file is re-verified in the background after login; the download shows again
    // once that is done, starting from the verified pieces (never from zero).
    let mut resumed_at = 0;
    wait_until("the resumed download shows", LONG, || {
        // `[V]` first (re-checking the part file, bytes_done = bytes checked), then running.
        let running =
            download_entry(&leech, "g1", "big.bin").is_some_and(|d| d["state"] != "verifying");
        resumed_at = bytes_done(&leech, "g1", "big.bin");
        running && resumed_at > 0
    });
    assert!(
        resumed_at >= before,
        "resumed from verified pieces ({resumed_at} < {before})"
    );
    let d = leech.wait_download("g1", "big.bin", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&dest), sha);
}

#[test]
fn partial_seeders_serve_pieces_they_already_have() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let mut seed = capped_peer(&tmp.path().join("s"), &tracker, 4 * MIB as u64);
    let mid = Peer::start(&tmp.path().join("m"), &tracker);
    let late = Peer::start(&tmp.path().join("late"), &tracker);
    user(&seed, "s");
    user(&mid, "m");
    user(&late, "late");
    group_with(&seed, "g1", &[(&mid, "m"), (&late, "late")]);
    let size = 10 * MIB + 1;
    let src = tmp.path().join("s").join("p.bin");
    let sha = random_file(&src, size);
    seed.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    mid.ok(&[
        "download_file",
        "g1",
        "p.bin",
        tmp.path().join("m").to_str().unwrap(),
    ]);
    wait_until("half downloaded", LONG, || {
        bytes_done(&mid, "g1", "p.bin") >= (size / 2) as u64
    });
    // The only full seeder disappears: `mid` holds part of the file and must serve it.
    seed.kill9();
    late.ok(&[
        "download_file",
        "g1",
        "p.bin",
        tmp.path().join("late").to_str().unwrap(),
    ]);
    wait_until("late gets pieces from the partial seeder", LONG, || {
        bytes_done(&late, "g1", "p.bin") > 0
    });
    // The seeder comes back (restart + login re-shares automatically): both finish.
    seed.restart();
    let out = seed.ok(&["login", "s", "pw-of-someone"]);
    assert!(out.contains("p.bin"), "login re-shares: {out}");
    for (p, dir) in [(&mid, "m"), (&late, "late")] {
        let d = p.wait_download("g1", "p.bin", LONG);
        assert_eq!(d["state"], "complete", "{d}");
        assert_eq!(sha1_file(&tmp.path().join(dir).join("p.bin")), sha);
    }
    let d = late.wait_download("g1", "p.bin", LONG);
    let from_mid = d["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user"] == "m")
        .map_or(0, |p| p["bytes_received"].as_u64().unwrap());
    assert!(
        from_mid > 0,
        "late received bytes from the partial seeder: {d}"
    );
}

#[test]
fn logout_login_reshare_stop_share_and_vanished_files() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let a = Peer::start(&tmp.path().join("a"), &tracker);
    let b = Peer::start(&tmp.path().join("b"), &tracker);
    user(&a, "a");
    user(&b, "b");
    group_with(&a, "g1", &[(&b, "b")]);
    let keep = tmp.path().join("a").join("keep.bin");
    let gone = tmp.path().join("a").join("gone.bin");
    let sha_keep = random_file(&keep, 700_000);
    random_file(&gone, 1000);
    a.ok(&["upload_file", keep.to_str().unwrap(), "g1"]);
    a.ok(&["upload_file", gone.to_str().unwrap(), "g1"]);
    assert_eq!(seeders(&b, "g1", "keep.bin"), 1);

    a.ok(&["logout"]);
    assert_eq!(
        seeders(&b, "g1", "keep.bin"),
        0,
        "logout stops sharing everything"
    );
    std::fs::remove_file(&gone).unwrap();
    let out = a.ok(&["login", "a", "pw-of-someone"]);
    assert!(
        out.contains("gone.bin"),
        "a vanished file is reported: {out}"
    );
    assert_eq!(
        seeders(&b, "g1", "keep.bin"),
        1,
        "login shares again by itself"
    );
    let files = b.json(&["list_files", "g1"]);
    assert!(
        files["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["name"] != "gone.bin"),
        "{files}"
    );

    // b downloads and becomes a second seeder; a's stop_share leaves b's share alone.
    b.ok(&[
        "download_file",
        "g1",
        "keep.bin",
        tmp.path().join("b").to_str().unwrap(),
    ]);
    assert_eq!(b.wait_download("g1", "keep.bin", LONG)["state"], "complete");
    assert_eq!(sha1_file(&tmp.path().join("b/keep.bin")), sha_keep);
    wait_until("b seeds", Duration::from_secs(10), || {
        seeders(&a, "g1", "keep.bin") == 2
    });
    a.ok(&["stop_share", "g1", "keep.bin"]);
    assert_eq!(seeders(&b, "g1", "keep.bin"), 1);
    a.fails(1, &["stop_share", "g1", "keep.bin"]);
    // After logout/login, a does not share it again (stop_share is remembered).
    a.ok(&["logout"]);
    a.ok(&["login", "a", "pw-of-someone"]);
    assert_eq!(seeders(&b, "g1", "keep.bin"), 1);
}

#[test]
fn sharing_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let a = Peer::start(&tmp.path().join("a"), &tracker);
    let outsider = Peer::start(&tmp.path().join("o"), &tracker);
    user(&a, "a");
    user(&outsider, "o");
    a.ok(&["create_group", "g1"]);
    let f = tmp.path().join("a").join("x.bin");
    random_file(&f, 5000);
    let err = a.fails(
        1,
        &[
            "upload_file",
            tmp.path().join("a/missing.bin").to_str().unwrap(),
            "g1",
        ],
    );
    assert!(err.contains("missing.bin"), "{err}");
    // A directory is shared as a tree (tests/tree.rs); an unknown group is refused before
    // anything is hashed.
    let dir = tmp.path().join("a").join("tree");
    std::fs::create_dir(&dir).unwrap();
    let err = a.fails(1, &["upload_file", dir.to_str().unwrap(), "nope"]);
    assert!(err.contains("nope"), "{err}");
    let err = a.fails(1, &["upload_file", f.to_str().unwrap(), "nope"]);
    assert!(err.contains("nope"), "{err}");
    a.ok(&["upload_file", f.to_str().unwrap(), "g1"]);
    // Same name, different content in the same group.
    let other = tmp.path().join("a").join("sub");
    std::fs::create_dir(&other).unwrap();
    random_file(&other.join("x.bin"), 5000);
    let err = a.fails(
        1,
        &["upload_file", other.join("x.bin").to_str().unwrap(), "g1"],
    );
    assert!(err.contains("different SHA1"), "{err}");
    // Non-members can neither list nor download.
    outsider.fails(1, &["list_files", "g1"]);
    let err = outsider.fails(
        1,
        &[
            "download_file",
            "g1",
            "x.bin",
            tmp.path().join("o").to_str().unwrap(),
        ],
    );
    assert!(err.contains("member"), "{err}");
    // Unknown file, missing destination directory, existing destination file.
    a.ok(&["create_user", "m", "pw"]);
    let m = Peer::start(&tmp.path().join("m"), &tracker);
    m.ok(&["login", "m", "pw"]);
    m.ok(&["join_group", "g1"]);
    a.ok(&["accept_request", "g1", "m"]);
    m.fails(
        1,
        &[
            "download_file",
            "g1",
            "nothere.bin",
            tmp.path().join("m").to_str().unwrap(),
        ],
    );
    let err = m.fails(
        1,
        &[
            "download_file",
            "g1",
            "x.bin",
            tmp.path().join("m/no/such/dir/x.bin").to_str().unwrap(),
        ],
    );
    assert!(err.contains("does not exist"), "{err}");
    std::fs::write(tmp.path().join("m/x.bin"), b"mine").unwrap();
    let err = m.fails(
        1,
        &[
            "download_file",
            "g1",
            "x.bin",
            tmp.path().join("m").to_str().unwrap(),
        ],
    );
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(tmp.path().join("m/x.bin")).unwrap(), b"mine");
}

#[test]
fn peers_refuse_forged_tickets() {
    use minitorr_proto::peer::PeerMsg;
    use minitorr_proto::ticket::{Ticket, TicketClaims};

    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let a = Peer::start(&tmp.path().join("a"), &tracker);
    user(&a, "a");
    a.ok(&["create_group", "g1"]);
    let f = tmp.path().join("a").join("secret.bin");
    random_file(&f, 4000);
    a.ok(&["upload_file", f.to_str().unwrap(), "g1"]);
    let sha: minitorr_proto::types::Sha1Hash = a.json(&["list_files", "g1"])["files"][0]["sha1"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let reply = rt.block_on(async {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let me = fakepeer::DeviceKey::generate();
        let claims = TicketClaims {
            user: "mallory".into(),
            group: "g1".into(),
            file_name: "secret.bin".into(),
            file_sha1: sha,
            issued_unix: 0,
            expires_unix: u64::MAX,
            device_key: me.public_bytes(),
        };
        let mut fr = fakepeer::tls_connect(a.addr, &me, a.device_key().public_bytes())
            .await
            .unwrap();
        fakepeer::say_hello(&mut fr, Ticket::sign(claims, &key))
            .await
            .expect("an answer")
    });
    match reply {
        // Signed by a key the tracker never published: unknown to the seeder even after it
        // refreshed the tracker's key list (claiming the tracker's key id instead breaks the
        // signature: signing_key.rs).
        PeerMsg::Refused { reason } => assert!(
            reason.contains("signature") || reason.contains("does not know"),
            "{reason}"
        ),
        other => panic!("forged ticket accepted: {other:?}"),
    }
}

/// The same bytes shared by two members whose daemons pick different piece sizes (a
/// configured `piece_size`, or another version's default) join one entry: the second daemon
/// hashes with the piece size the group's entry already has. Both then seed it. The same for
/// a directory tree.
#[test]
fn the_same_file_shared_with_another_piece_size_joins_the_existing_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let alice =
        Peer::start_with_config(&tmp.path().join("alice"), &tracker, "piece_size = 524288\n");
    let bob = Peer::start(&tmp.path().join("bob"), &tracker);
    user(&alice, "alice");
    user(&bob, "bob");
    group_with(&alice, "g1", &[(&bob, "bob")]);

    let data = tmp.path().join("alice").join("f.bin");
    random_file(&data, 3 * 1024 * 1024 + 7);
    let copy = tmp.path().join("bob").join("f.bin");
    std::fs::copy(&data, &copy).unwrap();
    let tree = tmp.path().join("alice").join("proj");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    random_file(&tree.join("sub").join("a.bin"), 2 * 1024 * 1024);
    random_file(&tree.join("b.bin"), 100_000);
    let tree_copy = tmp.path().join("bob").join("proj");
    std::fs::create_dir_all(tree_copy.join("sub")).unwrap();
    for f in ["sub/a.bin", "b.bin"] {
        std::fs::copy(tree.join(f), tree_copy.join(f)).unwrap();
    }

    let a = alice.json(&["upload_file", data.to_str().unwrap(), "g1"]);
    assert_eq!(a["file"]["piece_size"], 524288, "{a}");
    let b = bob.json(&["upload_file", copy.to_str().unwrap(), "g1"]);
    assert_eq!(b["file"]["piece_size"], 524288, "joined alice's entry: {b}");
    assert_eq!(b["file"]["sha1"], a["file"]["sha1"]);
    alice.ok(&["upload_file", tree.to_str().unwrap(), "g1"]);
    bob.ok(&["upload_file", tree_copy.to_str().unwrap(), "g1"]);

    let listed = bob.json(&["list_files", "g1"]);
    let files = listed["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{listed}");
    for f in files {
        assert_eq!(f["piece_size"], 524288, "{f}");
        assert_eq!(
            f["seeders_online"], 2,
            "both members seed {}: {f}",
            f["name"]
        );
    }

    // A new name gets bob's own (automatic) piece size.
    let other = tmp.path().join("bob").join("g.bin");
    std::fs::copy(&data, &other).unwrap();
    let g = bob.json(&["upload_file", other.to_str().unwrap(), "g1"]);
    assert_eq!(g["file"]["piece_size"], 64 * 1024, "{g}");
}

//! What am I sharing (issue #12, item 4): `list_shares`, and a shared file that changes or
//! disappears on disk is withdrawn from the tracker at once, then offered again when it comes
//! back unchanged. Real trackerd + minitorrd processes, driven through minitorrctl.

use std::time::{Duration, Instant};

use minitorr_e2e::*;

const KIB: usize = 1024;
const LONG: Duration = Duration::from_secs(90);
/// Withdrawal takes ~0.1 s with inotify (5 s at most by the fallback sweep); asserted generously.
const WITHDRAWN_WITHIN: Duration = Duration::from_secs(20);

fn share<'a>(v: &'a serde_json::Value, file: &str) -> &'a serde_json::Value {
    v["shares"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["file"] == file)
        .unwrap_or_else(|| panic!("{file} not in {v}"))
}

fn state_of(peer: &Peer, file: &str) -> String {
    share(&peer.json(&["list_shares"]), file)["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn list_shares_shows_each_share_with_what_it_served() {
    let tmp = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = alice_and_bob_in_g1(tmp.path());
    assert!(alice.ok(&["list_shares"]).contains("you share no files"));
    assert_eq!(
        alice.json(&["list_shares"]),
        serde_json::json!({ "shares": [] })
    );
    let size = 700 * KIB + 3;
    let pa = tmp.path().join("alice").join("a.bin");
    random_file(&pa, size);
    let pb = tmp.path().join("alice").join("b.bin");
    random_file(&pb, 1000);
    alice.ok(&["upload_file", pa.to_str().unwrap(), "g1"]);
    alice.ok(&["upload_file", pb.to_str().unwrap(), "g1"]);
    let dl = tmp.path().join("bob").join("dl");
    std::fs::create_dir(&dl).unwrap();
    bob.ok(&[
        "download_file",
        "g1",
        "a.bin",
        dl.to_str().unwrap(),
        "--wait",
    ]);

    let v = alice.json(&["list_shares"]);
    let a = share(&v, "a.bin");
    assert_eq!(a["group"], "g1");
    assert_eq!(a["path"], pa.canonicalize().unwrap().to_str().unwrap());
    assert_eq!(a["size"], size as u64);
    assert!(a["uploaded_bytes"].as_u64().unwrap() >= size as u64, "{a}");
    assert_eq!(a["peers_served"], 1, "{a}");
    assert_eq!(a["state"], "serving");
    let b = share(&v, "b.bin");
    assert_eq!(
        (b["uploaded_bytes"].as_u64(), b["peers_served"].as_u64()),
        (Some(0), Some(0))
    );
    // The finished download is bob's share now.
    let mine = bob.json(&["list_shares"]);
    assert_eq!(share(&mine, "a.bin")["state"], "serving");
    assert_eq!(
        share(&mine, "a.bin")["path"],
        dl.canonicalize().unwrap().join("a.bin").to_str().unwrap()
    );

    let human = alice.ok(&["list_shares"]);
    for word in [
        "GROUP", "FILE", "UPLOADED", "PEERS", "STATE", "a.bin", "b.bin", "serving",
    ] {
        assert!(human.contains(word), "{word}: {human}");
    }
    assert!(human.contains("Sum: 2 files, 2 serving"), "{human}");
}

#[test]
fn a_changed_or_deleted_shared_file_is_withdrawn_at_once_and_offered_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = alice_and_bob_in_g1(tmp.path());
    let p = tmp.path().join("alice").join("m.bin");
    random_file(&p, 500 * KIB);
    let original = std::fs::read(&p).unwrap();
    alice.ok(&["upload_file", p.to_str().unwrap(), "g1"]);
    assert_eq!(seeders(&bob, "g1", "m.bin"), 1);

    let withdrawn = |what: &str| {
        let start = Instant::now();
        wait_until(what, WITHDRAWN_WITHIN, || seeders(&bob, "g1", "m.bin") == 0);
        let took = start.elapsed();
        eprintln!("{what}: withdrawn from list_files after {took:?}");
        took
    };
    let offered = |what: &str| {
        let start = Instant::now();
        wait_until(what, WITHDRAWN_WITHIN, || seeders(&bob, "g1", "m.bin") == 1);
        eprintln!("{what}: offered again after {:?}", start.elapsed());
    };

    // Changed in place (appended to).
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"more").unwrap();
    }
    withdrawn("appended");
    assert_eq!(state_of(&alice, "m.bin"), "changed");

    // The shared content back (new mtime, same bytes): re-hashed and offered again.
    std::fs::write(&p, &original).unwrap();
    offered("restored");
    assert_eq!(state_of(&alice, "m.bin"), "serving");

    // Deleted.
    std::fs::remove_file(&p).unwrap();
    withdrawn("deleted");
    assert_eq!(state_of(&alice, "m.bin"), "missing");
    std::fs::write(&p, &original).unwrap();
    offered("recreated");

    // Replaced by another file under the same name (rename over it, as editors do).
    let tmpfile = tmp.path().join("alice").join(".m.bin.new");
    std::fs::write(&tmpfile, b"something else entirely").unwrap();
    std::fs::rename(&tmpfile, &p).unwrap();
    withdrawn("replaced");
    assert_eq!(state_of(&alice, "m.bin"), "changed");

    // A downloader is not sent to a holder that cannot serve: once restored it works.
    std::fs::write(&p, &original).unwrap();
    offered("restored again");
    let dl = tmp.path().join("bob").join("dl");
    std::fs::create_dir(&dl).unwrap();
    bob.ok(&["download_file", "g1", "m.bin", dl.to_str().unwrap()]);
    let d = bob.wait_download("g1", "m.bin", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(std::fs::read(dl.join("m.bin")).unwrap(), original);

    // stop_share forgets a withdrawn share too.
    std::fs::remove_file(&p).unwrap();
    wait_until("missing", WITHDRAWN_WITHIN, || {
        state_of(&alice, "m.bin") == "missing"
    });
    alice.ok(&["stop_share", "g1", "m.bin"]);
    assert_eq!(
        alice.json(&["list_shares"]),
        serde_json::json!({ "shares": [] })
    );
}

/// Withdrawal survives a restart: a file that vanished while minitorrd was down is listed as
/// missing after login, and offered again when it reappears.
#[test]
fn a_share_missing_at_login_is_listed_and_offered_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let (_t, mut alice, bob) = alice_and_bob_in_g1(tmp.path());
    let p = tmp.path().join("alice").join("r.bin");
    random_file(&p, 100 * KIB);
    let original = std::fs::read(&p).unwrap();
    alice.ok(&["upload_file", p.to_str().unwrap(), "g1"]);
    alice.terminate();
    std::fs::remove_file(&p).unwrap();
    alice.restart();
    let out = alice.ok(&["login", "alice", "pw-of-someone"]);
    assert!(out.contains("r.bin"), "{out}");
    assert_eq!(state_of(&alice, "r.bin"), "missing");
    assert_eq!(seeders(&bob, "g1", "r.bin"), 0);
    std::fs::write(&p, &original).unwrap();
    wait_until("offered again", WITHDRAWN_WITHIN, || {
        seeders(&bob, "g1", "r.bin") == 1
    });
    assert_eq!(state_of(&alice, "r.bin"), "serving");
}

/// `stop_share` the moment the download's completion event arrives (as a script after
/// `download_file --wait` would, minus the process start-up): the completion's own bookkeeping
/// (the share record is saved after the file's flush, behind the event) must not bring the
/// stopped share back, now or at the next login.
#[test]
fn a_share_stopped_right_after_its_download_completes_stays_stopped() {
    use futures::{SinkExt, StreamExt};
    use minitorr_proto::control::{EventKind, Request, Response};
    use minitorr_proto::Link;
    use tokio_util::codec::Framed;

    let tmp = tempfile::tempdir().unwrap();
    let (_t, alice, mut bob) = alice_and_bob_in_g1(tmp.path());
    let p = tmp.path().join("alice").join("s.bin");
    random_file(&p, 48 * 1024 * KIB);
    alice.ok(&["upload_file", p.to_str().unwrap(), "g1"]);
    let dl = tmp.path().join("bob").join("dl");
    std::fs::create_dir(&dl).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let connect = || async {
            let mut s = tokio::net::UnixStream::connect(&bob.socket).await.unwrap();
            minitorr_proto::handshake(&mut s, Link::Control)
                .await
                .unwrap();
            Framed::new(s, minitorr_proto::links::control_client())
        };
        let mut events = connect().await;
        events
            .send(Request::Watch {
                group: Some("g1".into()),
                file: Some("s.bin".into()),
            })
            .await
            .unwrap();
        assert!(matches!(
            events.next().await.unwrap().unwrap(),
            Response::Watching { .. }
        ));
        let mut ctl = connect().await;
        ctl.send(Request::DownloadFile {
            group: "g1".into(),
            file: "s.bin".into(),
            dest: dl.clone(),
            only: vec![],
        })
        .await
        .unwrap();
        let r = ctl.next().await.unwrap().unwrap();
        assert!(!matches!(r, Response::Error(_)), "{r:?}");
        loop {
            let next = tokio::time::timeout(LONG, events.next()).await;
            let Ok(Some(Ok(Response::Event(ev)))) = next else {
                panic!("no completion event: {next:?}")
            };
            match ev.kind {
                EventKind::DownloadCompleted { .. } => break,
                EventKind::DownloadFailed { .. } => panic!("{ev:?}"),
                _ => {}
            }
        }
        ctl.send(Request::StopShare {
            group: "g1".into(),
            file: "s.bin".into(),
        })
        .await
        .unwrap();
        let r = ctl.next().await.unwrap().unwrap();
        assert!(!matches!(r, Response::Error(_)), "{r:?}");
    });
    // Long enough for the flush and the state save to be over.
    std::thread::sleep(Duration::from_secs(2));
    let none = |peer: &Peer| {
        peer.json(&["list_shares"])["shares"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["file"] != "s.bin")
    };
    assert!(none(&bob), "{}", bob.json(&["list_shares"]));
    assert_eq!(seeders(&bob, "g1", "s.bin"), 1, "only alice holds it");
    bob.restart();
    assert!(
        none(&bob),
        "back after a restart: {}",
        bob.json(&["list_shares"])
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        seeders(&alice, "g1", "s.bin"),
        1,
        "bob registered it again at login"
    );
}

//! The daemon's logic in-process: `Daemon::handle` against a real trackerd `Service` over
//! `tokio::io::duplex` (see `harness`), without spawning processes.
//!
//! Most tests run in real time: downloads go over real loopback TLS and the tracker's store
//! runs on SQLite worker threads, and tokio's auto-advancing paused clock would fire their I/O
//! timeouts while those threads work; the download engine's own stall and refresh timers use
//! the std clock, which a paused tokio clock does not move. The retry backoff is a pure
//! structure, unit-tested with explicit instants in `daemon/retry.rs`, and also tested end to
//! end under paused time in `paused` (the tracker on a real-time runtime of its own, behind
//! blocking tasks that stop the paused clock from auto-advancing; the test moves it).

mod harness;
mod paused;

use std::time::Duration;

use harness::*;
use minitorr_proto::control::{DownloadState, ErrorKind, RemoveDownloads, Request, Response};

const KIB: usize = 1024;

fn download(file: &str, dest: &std::path::Path) -> Request {
    Request::DownloadFile {
        group: "g1".into(),
        file: file.into(),
        dest: dest.to_path_buf(),
        only: vec![],
    }
}

fn pause(file: &str) -> Request {
    Request::PauseDownload {
        group: "g1".into(),
        file: file.into(),
    }
}

fn resume(file: &str) -> Request {
    Request::ResumeDownload {
        group: "g1".into(),
        file: file.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identical_download_requests_racing_start_one_download() {
    let net = Net::new().await;
    let (_alice, bob, _) = alice_shares_to_bob(&net, "f.bin", 256 * KIB, 64 * 1024, |_| {}).await;
    let dl = bob.dl_dir();
    let (a, b) = tokio::join!(
        bob.call(download("f.bin", &dl)),
        bob.call(download("f.bin", &dl))
    );
    let started = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Response::DownloadStarted(_)))
        .count();
    let refused: Vec<_> = [&a, &b]
        .into_iter()
        .filter_map(|r| match r {
            Response::Error(e) if e.kind == ErrorKind::Refused => Some(e.message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, 1, "{a:?} / {b:?}");
    assert_eq!(refused.len(), 1, "{a:?} / {b:?}");
    assert!(refused[0].contains("already downloading"), "{refused:?}");
    assert_eq!(bob.downloads().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_download_and_deletes_its_part_file() {
    let net = Net::new().await;
    let (_alice, bob, _) = alice_shares_to_bob(&net, "f.bin", 2048 * KIB, 128 * 1024, |_| {}).await;
    let dl = bob.dl_dir();
    bob.ok(download("f.bin", &dl)).await;
    bob.wait_bytes("f.bin").await;
    let part = dl.join(".f.bin.minitorr-part");
    assert!(part.exists());
    let r = bob
        .ok(Request::CancelDownload {
            group: "g1".into(),
            file: "f.bin".into(),
            keep: false,
        })
        .await;
    assert!(
        matches!(&r, Response::Done { message } if message.contains("deleted")),
        "{r:?}"
    );
    assert!(!part.exists());
    assert!(bob.download("f.bin").await.is_none());
    // Stopped for good: nothing appears afterwards.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!part.exists() && !dl.join("f.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_survives_a_restart_and_resume_completes_the_file() {
    let net = Net::new().await;
    let (_alice, bob, data) =
        alice_shares_to_bob(&net, "f.bin", 2048 * KIB, 256 * 1024, |_| {}).await;
    let dl = bob.dl_dir();
    bob.ok(download("f.bin", &dl)).await;
    bob.wait_bytes("f.bin").await;
    bob.ok(pause("f.bin")).await;
    let p = bob.download("f.bin").await.unwrap();
    assert_eq!(p.state, DownloadState::Paused);
    assert!(p.bytes_done > 0 && p.bytes_done < p.size, "{p:?}");
    // Pausing twice is fine; download_file of a paused file says how to resume.
    bob.ok(pause("f.bin")).await;
    let msg = bob.err(download("f.bin", &dl), ErrorKind::Refused).await;
    assert!(msg.contains("resume"), "{msg}");

    // Restart: a new daemon on the same state dir keeps it paused.
    bob.daemon.shutdown().await;
    drop(bob);
    let bob = net.node("bob", |_| {}).await;
    bob.login("bob").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        bob.download("f.bin").await.unwrap().state,
        DownloadState::Paused
    );
    bob.ok(resume("f.bin")).await;
    bob.wait_state("f.bin", DownloadState::Complete).await;
    assert!(std::fs::read(dl.join("f.bin")).unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_runs_one_at_a_time_and_survives_pause_and_resume() {
    let net = Net::new().await;
    let (alice, bob, a) = alice_shares_to_bob(&net, "a.bin", 1024 * KIB, 256 * 1024, |c| {
        c.max_active_downloads = 1
    })
    .await;
    let b = share(&alice, "b.bin", 128 * KIB).await;
    let dl = bob.dl_dir();
    bob.ok(download("a.bin", &dl)).await;
    match bob.ok(download("b.bin", &dl)).await {
        Response::DownloadStarted(s) => assert_eq!(s.state, DownloadState::Queued),
        r => panic!("{r:?}"),
    }
    // A queued download can be paused, and resuming it queues it again (the slot is taken).
    bob.ok(pause("b.bin")).await;
    assert_eq!(
        bob.download("b.bin").await.unwrap().state,
        DownloadState::Paused
    );
    match bob.ok(resume("b.bin")).await {
        Response::DownloadStarted(s) => assert_eq!(s.state, DownloadState::Queued),
        r => panic!("{r:?}"),
    }
    bob.wait_state("a.bin", DownloadState::Complete).await;
    bob.wait_state("b.bin", DownloadState::Complete).await;
    assert!(std::fs::read(dl.join("a.bin")).unwrap() == a);
    assert!(std::fs::read(dl.join("b.bin")).unwrap() == b);
    // remove --complete forgets both entries; the files stay.
    bob.ok(Request::RemoveDownload {
        which: RemoveDownloads::Complete,
    })
    .await;
    assert!(bob.downloads().await.is_empty());
    assert!(dl.join("a.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_reshares_what_was_shared_before() {
    let net = Net::new().await;
    let (alice, _bob, _) = alice_shares_to_bob(&net, "f.bin", 64 * KIB, 0, |_| {}).await;
    alice.ok(Request::Logout).await;
    match alice.login("alice").await {
        Response::LoggedIn(r) => {
            assert_eq!(r.reshared.len(), 1, "{r:?}");
            assert_eq!(r.reshared[0].file, "f.bin");
            assert!(r.problems.is_empty(), "{r:?}");
        }
        r => panic!("{r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_finished_before_a_crash_is_adopted_at_login() {
    let net = Net::new().await;
    let (_alice, bob, data) = alice_shares_to_bob(&net, "f.bin", 300 * KIB, 0, |_| {}).await;
    let dl = bob.dl_dir();
    bob.ok(download("f.bin", &dl)).await;
    bob.wait_state("f.bin", DownloadState::Complete).await;
    // As if killed after the file was linked into place but before state.json said so.
    let state_file = bob.cfg.state_file();
    bob.daemon.shutdown().await;
    drop(bob);
    let text = std::fs::read_to_string(&state_file).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["users"]["bob"]["downloads"][0]["state"] = "Downloading".into();
    v["users"]["bob"]["shares"] = serde_json::json!([]);
    std::fs::write(&state_file, v.to_string()).unwrap();

    let bob = net.node("bob", |_| {}).await;
    match bob.login("bob").await {
        Response::LoggedIn(r) => {
            assert!(r.reshared.iter().any(|s| s.file == "f.bin"), "{r:?}");
            assert!(r.resumed_downloads.is_empty(), "{r:?}");
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        bob.download("f.bin").await.unwrap().state,
        DownloadState::Complete
    );
    assert!(std::fs::read(dl.join("f.bin")).unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_download_is_retried_when_a_holder_is_back() {
    let net = Net::new().await;
    let (alice, bob, data) =
        alice_shares_to_bob(&net, "f.bin", 1024 * KIB, 128 * 1024, |_| {}).await;
    let dl = bob.dl_dir();
    bob.ok(download("f.bin", &dl)).await;
    bob.wait_bytes("f.bin").await;
    alice.ok(Request::Logout).await;
    let failed = bob.wait_state("f.bin", DownloadState::Failed).await;
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("no holder online"),
        "{failed:?}"
    );
    alice.login("alice").await;
    // What a tracker holder event would do: check now instead of at the next scheduled check.
    bob.daemon.retry_failed_now();
    bob.wait_state("f.bin", DownloadState::Complete).await;
    assert!(std::fs::read(dl.join("f.bin")).unwrap() == data);
}

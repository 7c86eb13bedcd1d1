//! Timing policies of the daemon under tokio's paused clock, driven by the test: the tracker
//! runs in real time on its own runtime (`Net::for_paused_time`), the daemon's clock moves
//! only by `tokio::time::advance`. What the daemon asks the tracker is read from the tracker's
//! own request counters (its operators' metrics).

use std::time::Duration;

use minitorr_proto::control::{DownloadState, Request};

use super::harness::*;

/// Holder checks (`GetHolders`, what the retry policy asks) the tracker answered so far.
fn get_files(net: &Net) -> u64 {
    let text = net.svc.metrics().encode();
    text.lines()
        .filter(|l| l.starts_with("minitorr_tracker_requests_total{kind=\"get_holders\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Let everything that is ready run for `real` of real time (the paused clock stays).
async fn settle(real: Duration) {
    let until = std::time::Instant::now() + real;
    while std::time::Instant::now() < until {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Move the paused clock by `step`, then let the daemon react for `real` of real time.
async fn advance(step: Duration, real: Duration) {
    tokio::time::advance(step).await;
    settle(real).await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_download_is_rechecked_after_10_20_30_s_and_retried_on_the_holder_event() {
    let net = Net::for_paused_time();
    let alice = net.node("alice", |c| c.piece_size = Some(65536)).await;
    let bob = net.node("bob", |_| {}).await;
    alice.create_and_login("alice").await;
    bob.create_and_login("bob").await;
    group(&alice, &bob, "g1", "bob").await;
    let data = share(&alice, "f.bin", 256 * 1024).await;
    // The only holder goes away: bob's download stalls, then fails for lack of holders.
    alice.ok(Request::Logout).await;
    let dl = bob.dl_dir();
    bob.ok(Request::DownloadFile {
        group: "g1".into(),
        file: "f.bin".into(),
        dest: dl.clone(),
        only: vec![],
    })
    .await;
    // The download engine's stall timer is the std clock (real time, see `download::run`),
    // woken by tokio timers: both clocks must move, so this phase takes STALL_TIMEOUT (10 s)
    // of real time.
    let mut failed = None;
    for _ in 0..100 {
        advance(Duration::from_secs(1), Duration::from_millis(300)).await;
        let d = bob.download("f.bin").await.unwrap();
        if d.state == DownloadState::Failed {
            failed = Some(d);
            break;
        }
    }
    let failed = failed.expect("the stalled download fails within 30 s of real time");
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("no holder online"),
        "{failed:?}"
    );

    // From the failure on, the tracker is asked again after 10 s, 20 s more, then every 30 s:
    // never early (nothing up to a second before a check is due), never late (the check is
    // there within two seconds of it). Only the paused clock moves here.
    let base = get_files(&net);
    let mut at = vec![];
    let mut clock = 0u64;
    let mut prev = 0u64;
    for (k, gap) in [10u64, 20, 30, 30].into_iter().enumerate() {
        while clock < prev + gap - 2 {
            advance(Duration::from_secs(1), Duration::from_millis(50)).await;
            clock += 1;
        }
        settle(Duration::from_millis(500)).await;
        assert_eq!(
            get_files(&net) - base,
            k as u64,
            "early check; checks at {at:?} s"
        );
        while get_files(&net) - base == k as u64 && clock < prev + gap + 2 {
            tokio::time::advance(Duration::from_secs(1)).await;
            clock += 1;
            // Generous real time for the check's round trip on a loaded machine, so a slow
            // answer is not taken for a late check (the paused clock stands still meanwhile).
            let until = std::time::Instant::now() + Duration::from_secs(3);
            while get_files(&net) - base == k as u64 && std::time::Instant::now() < until {
                settle(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(
            get_files(&net) - base,
            k as u64 + 1,
            "check {} not by {clock} s; checks at {at:?} s",
            k + 1
        );
        at.push(clock);
        prev = clock;
    }
    assert_eq!(
        bob.download("f.bin").await.unwrap().state,
        DownloadState::Failed
    );

    // The holder comes back: the tracker's HolderOnline event retries the download at once.
    // The paused clock does not move from here on (the next scheduled check is 30 s away),
    // so completing proves the event did it.
    alice.login("alice").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = bob.download("f.bin").await.unwrap();
        if d.state == DownloadState::Complete {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not retried on the holder event: {d:?}"
        );
        settle(Duration::from_millis(50)).await;
    }
    assert!(std::fs::read(dl.join("f.bin")).unwrap() == data);
}

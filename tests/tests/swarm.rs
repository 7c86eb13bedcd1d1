//! A whole team downloading the same file at once (issue #11): leechers learn of each other
//! through the tracker's holder events within about a second and trade pieces, so the first
//! seeder's upload is not the bottleneck; a holder that goes away is dropped.
//! Real trackerd + minitorrd processes on 127.0.0.1, driven through minitorrctl.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::SinkExt;
use minitorr_e2e::fakepeer::{open_served, FakeMember};
use minitorr_e2e::*;
use minitorr_proto::peer::PeerMsg;

const MIB: usize = 1024 * 1024;
const LONG: Duration = Duration::from_secs(120);

/// Bytes each leecher received from each user, from `show_downloads --json`.
fn bytes_by_user(peer: &Peer) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    if let Some(d) = download_entry(peer, "g1", "data.bin") {
        for p in d["peers"].as_array().unwrap() {
            *out.entry(p["user"].as_str().unwrap_or("").to_string())
                .or_default() += p["bytes_received"].as_u64().unwrap();
        }
    }
    out
}

#[test]
fn leechers_started_together_trade_at_once_and_the_seeder_sends_little_more_than_one_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    // The seeder is slow (4 MiB/s) and the leechers are not: every byte a leecher gets from
    // another leecher is one the seeder did not have to send again.
    let seed = capped_peer(&tmp.path().join("seed"), &tracker, 4 * MIB as u64);
    user(&seed, "seed");
    let leechers: Vec<Peer> = (0..4)
        .map(|i| Peer::start(&tmp.path().join(format!("l{i}")), &tracker))
        .collect();
    let names: Vec<String> = (0..4).map(|i| format!("l{i}")).collect();
    for (p, n) in leechers.iter().zip(&names) {
        user(p, n);
    }
    let members: Vec<(&Peer, &str)> = leechers
        .iter()
        .zip(&names)
        .map(|(p, n)| (p, n.as_str()))
        .collect();
    group_with(&seed, "g1", &members);

    let size = 24 * MIB + 777;
    let src = tmp.path().join("seed").join("data.bin");
    let sha = random_file(&src, size);
    seed.ok(&["upload_file", src.to_str().unwrap(), "g1"]);

    let start = Instant::now();
    let dests: Vec<_> = leechers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let dest = tmp.path().join(format!("l{i}")).join("out");
            std::fs::create_dir(&dest).unwrap();
            p.ok(&["download_file", "g1", "data.bin", dest.to_str().unwrap()]);
            dest
        })
        .collect();

    // When did each leecher first receive bytes from another leecher? Before holder events,
    // nobody did before the 15 s refresh.
    let mut first_from_leecher: Vec<Option<Duration>> = vec![None; leechers.len()];
    while first_from_leecher.iter().any(Option::is_none) && start.elapsed() < LONG {
        for (i, p) in leechers.iter().enumerate() {
            if first_from_leecher[i].is_none() {
                let by = bytes_by_user(p);
                if names.iter().any(|n| by.get(n).copied().unwrap_or(0) > 0) {
                    first_from_leecher[i] = Some(start.elapsed());
                }
            }
            if first_from_leecher[i].is_none()
                && download_entry(p, "g1", "data.bin").is_some_and(|d| d["state"] != "downloading")
            {
                break; // finished without a leecher's byte: asserted below
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("first byte from another leecher, per leecher: {first_from_leecher:?}");
    for (i, t) in first_from_leecher.iter().enumerate() {
        let t = t.unwrap_or_else(|| panic!("leecher l{i} never got a byte from another leecher"));
        // The target is ~1 s (measured in docs/DOWNLOADS.md); 8 s is far below the 15 s
        // refresh that was the only way to learn of partial holders before.
        assert!(
            t < Duration::from_secs(8),
            "l{i}: first leecher byte after {t:?}"
        );
    }

    let mut from_seed = 0u64;
    for (i, p) in leechers.iter().enumerate() {
        let d = p.wait_download("g1", "data.bin", LONG);
        assert_eq!(d["state"], "complete", "{d}");
        assert_eq!(sha1_file(&dests[i].join("data.bin")), sha);
        from_seed += bytes_by_user(p).get("seed").copied().unwrap_or(0);
    }
    let ratio = from_seed as f64 / size as f64;
    eprintln!(
        "seeder sent {from_seed} bytes = {ratio:.2} × the file to 4 leechers in {:?}",
        start.elapsed()
    );
    // Without trading it would be 4 × F; "well under" with a generous margin for a loaded
    // machine (measured ratio in docs/DOWNLOADS.md).
    assert!(ratio < 2.5, "seeder sent {ratio:.2} × the file");
}

#[test]
fn a_holder_that_logs_out_is_dropped_and_not_reconnected() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    // Slow seeder, so the downloads are still running when a leecher leaves.
    let seed = capped_peer(&tmp.path().join("seed"), &tracker, MIB as u64);
    user(&seed, "seed");
    let a = Peer::start(&tmp.path().join("a"), &tracker);
    let b = Peer::start(&tmp.path().join("b"), &tracker);
    user(&a, "a");
    user(&b, "b");
    group_with(&seed, "g1", &[(&a, "a"), (&b, "b")]);
    let src = tmp.path().join("seed").join("data.bin");
    random_file(&src, 24 * MIB);
    seed.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    for (p, n) in [(&a, "a"), (&b, "b")] {
        let dest = tmp.path().join(n).join("out");
        std::fs::create_dir(&dest).unwrap();
        p.ok(&["download_file", "g1", "data.bin", dest.to_str().unwrap()]);
    }
    let connected_to = |p: &Peer, user: &str| {
        download_entry(p, "g1", "data.bin").is_some_and(|d| {
            d["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["user"] == user && x["connected"] == true)
        })
    };
    // a learns of b through the tracker's push (b announced itself at start).
    wait_until("a connected to b", Duration::from_secs(8), || {
        connected_to(&a, "b")
    });
    b.ok(&["logout"]);
    wait_until("a dropped b", Duration::from_secs(10), || {
        !connected_to(&a, "b")
    });
    // Not reconnected later (retries would come every 3 s).
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(400));
        assert!(!connected_to(&a, "b"), "a reconnected to b after it left");
    }
}

/// Initial seeding must never stall a downloader whose only source is the seeder: here a
/// hostile member holds a connection to the seeder and claims (`Have`) nearly every piece, so the
/// seeder believes each piece is in the swarm and answers the real leecher `Elsewhere` — which
/// has nowhere else to go. The seeder serves each piece when asked again after `REASK_AFTER`
/// (3 s), so the download completes, a few seconds late at worst.
#[test]
fn a_member_claiming_every_piece_does_not_stall_a_leecher_that_only_has_the_seeder() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let seed = Peer::start(&tmp.path().join("seed"), &tracker);
    user(&seed, "seed");
    let leech = Peer::start(&tmp.path().join("l0"), &tracker);
    user(&leech, "l0");
    group_with(&seed, "g1", &[(&leech, "l0")]);
    let size = 12 * MIB + 333; // 193 pieces of 64 KiB
    let src = tmp.path().join("seed").join("data.bin");
    let sha = random_file(&src, size);
    seed.ok(&["upload_file", src.to_str().unwrap(), "g1"]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut mallory = rt.block_on(async {
        let mut m = FakeMember::create(tracker.addr, "mallory").await;
        m.join("g1").await;
        m
    });
    seed.ok(&["accept_request", "g1", "mallory"]);
    // Served once (so the seeder counts it), then it claims every piece but the last (one
    // piece absent from the swarm keeps initial seeding on) and stays connected (`_liar`
    // lives to the end of the test).
    let ps = minitorr_proto::item::auto_piece_size(&[size as u64]);
    let pieces = size.div_ceil(ps as usize) as u32;
    let _liar = rt.block_on(async {
        let t = mallory.ticket("g1", "data.bin").await;
        let mut conn = open_served(seed.addr, t).await;
        for piece in 0..pieces - 1 {
            conn.feed(PeerMsg::Have { piece }).await.unwrap();
        }
        conn.flush().await.unwrap();
        conn
    });

    let dest = tmp.path().join("l0").join("out");
    std::fs::create_dir(&dest).unwrap();
    let start = Instant::now();
    leech.ok(&["download_file", "g1", "data.bin", dest.to_str().unwrap()]);
    let d = leech.wait_download("g1", "data.bin", LONG);
    let took = start.elapsed();
    eprintln!("download with a lying member connected to the seeder took {took:?}");
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&dest.join("data.bin")), sha);
    // Everything came from the seeder (mallory serves nothing).
    let by = bytes_by_user(&leech);
    assert_eq!(by.get("seed").copied().unwrap_or(0), size as u64, "{by:?}");
    // A stall would hit the 120 s wait above; the deferrals cost a few seconds at most (one
    // REASK_AFTER per pipeline of requests), far below this on a loaded machine.
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

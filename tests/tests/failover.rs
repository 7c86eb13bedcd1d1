//! A daemon configured with several trackers uses the first one that answers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use minitorr_e2e::*;

fn dead_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[test]
fn login_fails_over_to_the_second_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let live = Tracker::start(&dir.path().join("tracker"));
    let dead = dead_addr();
    let alice = Peer::start_with(&dir.path().join("alice"), &[dead, live.addr], &[]);

    let start = Instant::now();
    alice.ok(&["create_user", "alice", "pw-alice"]);
    alice.ok(&["login", "alice", "pw-alice"]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "failover took {:?}",
        start.elapsed()
    );
    alice.ok(&["create_group", "g1"]);

    let st = alice.json(&["status"]);
    assert_eq!(st["user"], "alice", "{st}");
    assert_eq!(
        st["tracker"],
        live.addr.to_string(),
        "status must name the tracker in use: {st}"
    );
    assert_eq!(st["tracker_connected"], true, "{st}");

    // Another daemon talking only to the live tracker sees what alice did through it.
    let bob = Peer::start(&dir.path().join("bob"), &live);
    user(&bob, "bob");
    let g = bob.json(&["list_groups"]);
    assert_eq!(g["groups"][0]["owner"], "alice", "{g}");
}

#[test]
fn all_trackers_down_is_reported_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("tracker");
    let (dead1, dead2) = (dead_addr(), dead_addr());
    let alice = Peer::start_with(&dir.path().join("alice"), &[dead1, dead2], &[]);

    // Nothing listens: a refusal (exit 1) naming the tracker problem, promptly.
    let start = Instant::now();
    let err = alice.fails(1, &["create_user", "alice", "pw-alice"]);
    assert!(err.contains("tracker"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(alice.json(&["status"])["tracker_connected"], false);

    // The second tracker comes up: the same daemon uses it without a restart.
    let _live = Tracker::start_at(&tdir, dead2);
    alice.ok(&["create_user", "alice", "pw-alice"]);
    alice.ok(&["login", "alice", "pw-alice"]);
    let st = alice.json(&["status"]);
    assert_eq!(
        (st["tracker"].as_str(), st["tracker_connected"].as_bool()),
        (Some(dead2.to_string().as_str()), Some(true)),
        "{st}"
    );
}

#[test]
fn session_moves_to_the_other_tracker_when_the_first_dies() {
    // Two trackers on one database directory are not supported with SQLite; so the "other"
    // tracker is the same one restarted on a second address list entry: the daemon is told
    // [t1, t2] where t2 is where the tracker comes back after t1 dies.
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("tracker");
    let mut first = Tracker::start(&tdir);
    let second_addr = dead_addr();
    let alice = Peer::start_with(&dir.path().join("alice"), &[first.addr, second_addr], &[]);
    alice.ok(&["create_user", "alice", "pw-alice"]);
    alice.ok(&["login", "alice", "pw-alice"]);
    alice.ok(&["create_group", "g1"]);

    first.kill9();
    let _second = Tracker::start_at(&tdir, second_addr);
    // Same session token, other tracker address, no re-login.
    let g = alice.json(&["list_groups"]);
    assert_eq!(g["groups"][0]["name"], "g1", "{g}");
    let st = alice.json(&["status"]);
    assert_eq!(st["tracker"], second_addr.to_string(), "{st}");
    assert_eq!(st["user"], "alice", "{st}");
}

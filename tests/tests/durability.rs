//! What the tracker acknowledged survives `kill -9`; the daemons reconnect by themselves; a
//! SIGTERM stops trackerd promptly and cleanly.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use minitorr_e2e::*;
use serde_json::Value;

fn group(peer: &Peer, name: &str) -> Value {
    let v = peer.json(&["list_groups"]);
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} missing from list_groups after the restart: {v}"))
}

/// `kill -9` the tracker right after the last acknowledged reply and start it again on the same
/// state dir and port.
fn crash_and_restart(tracker: &mut Tracker) {
    tracker.kill9();
    tracker.restart();
}

/// SIGTERM makes trackerd exit with status 0 within 3 s (`while` says in what situation).
fn stops_cleanly_on_sigterm(tracker: &mut Tracker, while_: &str) {
    let (status, took) = tracker
        .terminate_within(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("trackerd ignored SIGTERM for 10 s\n{}", tracker.log()));
    assert!(
        status.success(),
        "trackerd exited with {status:?} on SIGTERM\n{}",
        tracker.log()
    );
    assert!(
        took < Duration::from_secs(3),
        "trackerd took {took:?} to stop on SIGTERM {while_}"
    );
}

#[test]
fn acknowledged_accounts_groups_and_requests_survive_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::start(&dir.path().join("tracker"));
    let alice = Peer::start(&dir.path().join("alice"), &tracker);
    let bob = Peer::start(&dir.path().join("bob"), &tracker);
    let carol = Peer::start(&dir.path().join("carol"), &tracker);

    // Crash 1: right after a create_user.
    alice.ok(&["create_user", "alice", "pw-alice"]);
    crash_and_restart(&mut tracker);
    bob.ok(&["create_user", "bob", "pw-bob"]);
    crash_and_restart(&mut tracker);
    carol.ok(&["create_user", "carol", "pw-carol"]);
    crash_and_restart(&mut tracker);

    // The daemons were never logged in; they log in through new connections.
    alice.ok(&["login", "alice", "pw-alice"]);
    bob.ok(&["login", "bob", "pw-bob"]);
    carol.ok(&["login", "carol", "pw-carol"]);

    // Crash 2: right after create_group.
    alice.ok(&["create_group", "g1"]);
    crash_and_restart(&mut tracker);
    bob.ok(&["create_group", "g2"]);
    bob.ok(&["join_group", "g1"]);
    // Crash 3: right after an accept.
    alice.ok(&["accept_request", "g1", "bob"]);
    crash_and_restart(&mut tracker);
    // Crash 4: right after a join request (left pending).
    carol.ok(&["join_group", "g1"]);
    crash_and_restart(&mut tracker);

    // The same daemons, without logging in again: they reconnect by themselves and their
    // sessions are still valid.
    let g1 = group(&alice, "g1");
    assert_eq!(
        (g1["owner"].as_str(), g1["members"].as_u64()),
        (Some("alice"), Some(2)),
        "{g1}"
    );
    assert_eq!(g1["membership"], "owner");
    let g2 = group(&carol, "g2");
    assert_eq!(
        (g2["owner"].as_str(), g2["members"].as_u64()),
        (Some("bob"), Some(1)),
        "{g2}"
    );
    assert_eq!(group(&bob, "g1")["membership"], "member");
    assert_eq!(group(&carol, "g1")["membership"], "pending");
    assert_eq!(
        requests(&alice, "g1"),
        ["carol"],
        "the pending request did not survive"
    );
    for p in [&alice, &bob, &carol] {
        assert_eq!(
            p.json(&["status"])["tracker_connected"],
            true,
            "{}",
            p.log_tail(10)
        );
    }

    // Fresh daemons: the accounts (with their passwords) are there.
    let alice2 = Peer::start(&dir.path().join("alice2"), &tracker);
    let err = alice2.fails(1, &["login", "alice", "wrong"]);
    assert!(err.contains("password"), "{err}");
    let err = alice2.fails(1, &["create_user", "carol", "x"]);
    assert!(err.contains("already exists"), "{err}");
    alice2.ok(&["login", "alice", "pw-alice"]);
    assert_eq!(requests(&alice2, "g1"), ["carol"]);
    let carol2 = Peer::start(&dir.path().join("carol2"), &tracker);
    carol2.ok(&["login", "carol", "pw-carol"]);
    let err = carol2.fails(1, &["join_group", "g1"]);
    assert!(
        err.contains("already"),
        "the pending request is still there: {err}"
    );

    // And the surviving state is still operable.
    alice2.ok(&["accept_request", "g1", "carol"]);
    assert_eq!(group(&carol2, "g1")["members"], 3);
}

#[test]
fn leave_and_hand_over_survive_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut tracker, alice, bob) = alice_and_bob_in_g1(dir.path());
    alice.ok(&["create_group", "solo"]);
    alice.ok(&["leave_group", "solo"]);
    alice.ok(&["leave_group", "g1"]);
    crash_and_restart(&mut tracker);
    let g1 = group(&bob, "g1");
    assert_eq!(
        (g1["owner"].as_str(), g1["members"].as_u64()),
        (Some("bob"), Some(1)),
        "{g1}"
    );
    let all = bob.json(&["list_groups"]);
    assert!(
        !all["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "solo"),
        "deleted group is back: {all}"
    );
    bob.ok(&["logout"]);
    crash_and_restart(&mut tracker);
    // The logout (session revoked) survived too: the daemon is logged out and can log in again.
    let err = bob.fails(1, &["list_groups"]);
    assert!(err.to_lowercase().contains("log"), "{err}");
    bob.ok(&["login", "bob", "pw-of-someone"]);
    assert_eq!(group(&bob, "g1")["membership"], "owner");
}

#[test]
fn trackerd_sigterm_exits_0_promptly_with_daemons_connected() {
    let dir = tempfile::tempdir().unwrap();
    let (mut tracker, alice, bob) = alice_and_bob_in_g1(dir.path());
    bob.ok(&["list_groups"]); // both daemons hold an open tracker connection now

    stops_cleanly_on_sigterm(&mut tracker, "with daemons connected");

    // The daemons report the tracker as unavailable (exit 1), not a hang or a crash.
    let start = Instant::now();
    let err = alice.fails(1, &["list_groups"]);
    assert!(err.contains("tracker"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "list_groups hung for {:?}",
        start.elapsed()
    );

    // Everything is still there after a clean stop, and the same daemons carry on.
    tracker.restart();
    let g1 = group(&bob, "g1");
    assert_eq!(
        (g1["owner"].as_str(), g1["members"].as_u64()),
        (Some("alice"), Some(2)),
        "{g1}"
    );
}

#[test]
fn trackerd_sigterm_is_not_held_up_by_a_silent_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::start(&dir.path().join("tracker"));
    let alice = Peer::start(&dir.path().join("alice"), &tracker);
    user(&alice, "alice");
    // A client that connected but never sent its preamble.
    let _silent = TcpStream::connect(tracker.addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stops_cleanly_on_sigterm(
        &mut tracker,
        "while a client sat silent before its handshake",
    );
}

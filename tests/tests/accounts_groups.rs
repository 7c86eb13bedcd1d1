//! Accounts and groups end to end: three real daemons (alice, bob, carol) on one real tracker,
//! driven only through minitorrctl.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use minitorr_e2e::*;
use serde_json::Value;

fn groups(peer: &Peer) -> Vec<Value> {
    peer.json(&["list_groups"])["groups"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no groups array"))
}

fn group(peer: &Peer, name: &str) -> Option<Value> {
    groups(peer).into_iter().find(|g| g["name"] == name)
}

fn must_group(peer: &Peer, name: &str) -> Value {
    group(peer, name)
        .unwrap_or_else(|| panic!("{name} missing from list_groups: {:?}", groups(peer)))
}

/// Start column (in chars) of `word` in `line`.
fn col(line: &str, word: &str) -> usize {
    let byte = line
        .find(word)
        .unwrap_or_else(|| panic!("{word:?} not in {line:?}"));
    line[..byte].chars().count()
}

#[test]
fn account_and_group_flow_with_three_daemons() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let alice = Peer::start(&dir.path().join("alice"), &tracker);
    let bob = Peer::start(&dir.path().join("bob"), &tracker);
    let carol = Peer::start(&dir.path().join("carol"), &tracker);

    // --- Before any login, group commands are refused with a hint to log in.
    for args in [
        &["list_groups"][..],
        &["create_group", "g1"],
        &["join_group", "g1"],
        &["list_requests", "g1"],
    ] {
        let err = alice.fails(1, args);
        assert!(
            err.to_lowercase().contains("login"),
            "{args:?} before login: no hint to log in: {err}"
        );
    }

    // --- create_user, duplicates, login failures.
    let out = alice.ok(&["create_user", "alice", "pw-alice"]);
    assert!(out.contains("alice"), "create_user output: {out}");
    let err = bob.fails(1, &["create_user", "alice", "another-pw"]);
    assert!(
        err.contains("already exists"),
        "duplicate create_user: {err}"
    );
    bob.ok(&["create_user", "bob", "pw-bob"]);
    carol.ok(&["create_user", "carol", "pw-carol"]);

    let err = alice.fails(1, &["login", "alice", "not-her-password"]);
    assert!(err.contains("password"), "wrong password: {err}");
    let err = alice.fails(1, &["login", "nobody", "pw-alice"]);
    assert!(
        err.contains("password") || err.contains("nobody"),
        "unknown user: {err}"
    );
    assert_eq!(
        alice.json(&["status"])["user"],
        Value::Null,
        "a failed login must not log in"
    );

    let out = alice.ok(&["login", "alice", "pw-alice"]);
    assert!(out.contains("alice"), "login output: {out}");
    assert_eq!(alice.json(&["status"])["user"], "alice");
    bob.ok(&["login", "bob", "pw-bob"]);
    carol.ok(&["login", "carol", "pw-carol"]);

    // --- create_group / list_groups.
    alice.ok(&["create_group", "g1"]);
    let err = bob.fails(1, &["create_group", "g1"]);
    assert!(
        err.contains("already exists"),
        "duplicate create_group: {err}"
    );

    let human = bob.ok(&["list_groups"]);
    let lines: Vec<&str> = human.lines().collect();
    let header = lines.first().copied().unwrap_or_default();
    let row = lines
        .iter()
        .find(|l| l.split_whitespace().next() == Some("g1"))
        .unwrap_or_else(|| panic!("no row for g1 in:\n{human}"));
    for h in ["GROUP", "OWNER", "MEMBERS"] {
        assert!(header.contains(h), "header lacks {h}:\n{human}");
    }
    assert_eq!(
        col(row, "g1"),
        col(header, "GROUP"),
        "GROUP column not aligned:\n{human}"
    );
    assert_eq!(
        col(row, "alice"),
        col(header, "OWNER"),
        "OWNER column not aligned:\n{human}"
    );
    // MEMBERS is a number column: right-aligned under its header.
    let members_end = col(header, "MEMBERS") + "MEMBERS".len();
    let after_owner: String = row
        .chars()
        .skip(col(row, "alice") + "alice".len())
        .collect();
    let count_end =
        col(row, "alice") + "alice".len() + after_owner.find('1').expect("member count 1") + 1;
    assert_eq!(
        count_end, members_end,
        "member count not aligned under MEMBERS:\n{human}"
    );

    let g = must_group(&bob, "g1");
    assert_eq!(
        (g["owner"].as_str(), g["members"].as_u64()),
        (Some("alice"), Some(1)),
        "{g}"
    );
    assert_eq!(g["membership"], "none", "{g}");
    assert_eq!(must_group(&alice, "g1")["membership"], "owner");

    // --- join_group and its refusals.
    bob.ok(&["join_group", "g1"]);
    let err = bob.fails(1, &["join_group", "g1"]);
    assert!(err.contains("already"), "second join_group: {err}");
    let err = alice.fails(1, &["join_group", "g1"]);
    assert!(err.contains("already"), "owner joining own group: {err}");
    let err = bob.fails(1, &["join_group", "no-such-group"]);
    assert!(err.contains("no-such-group"), "unknown group: {err}");
    carol.ok(&["join_group", "g1"]);
    assert_eq!(must_group(&bob, "g1")["membership"], "pending");

    // --- list_requests: owner only.
    let err = bob.fails(1, &["list_requests", "g1"]);
    assert!(
        err.contains("not the owner of g1"),
        "list_requests by non-owner: {err}"
    );
    let human = alice.ok(&["list_requests", "g1"]);
    assert_eq!(
        human.lines().collect::<Vec<_>>(),
        ["bob", "carol"],
        "list_requests output:\n{human}"
    );

    // --- accept bob, reject carol.
    let err = bob.fails(1, &["accept_request", "g1", "carol"]);
    assert!(
        err.contains("not the owner of g1"),
        "accept_request by non-owner: {err}"
    );
    alice.ok(&["accept_request", "g1", "bob"]);
    alice.ok(&["reject_request", "g1", "carol"]);
    assert_eq!(requests(&alice, "g1"), Vec::<String>::new());
    let err = alice.fails(1, &["accept_request", "g1", "carol"]);
    assert!(err.contains("carol"), "accepting a rejected request: {err}");

    let g = must_group(&alice, "g1");
    assert_eq!(
        g["members"], 2,
        "after accepting bob and rejecting carol: {g}"
    );
    assert_eq!(must_group(&bob, "g1")["membership"], "member");
    assert_eq!(must_group(&carol, "g1")["membership"], "none");
    bob.ok(&["list_files", "g1"]);
    let err = carol.fails(1, &["list_files", "g1"]);
    assert!(err.contains("g1"), "rejected user's list_files: {err}");

    // --- Ownership hand-over: carol asks again and is accepted after bob.
    carol.ok(&["join_group", "g1"]);
    alice.ok(&["accept_request", "g1", "carol"]);
    assert_eq!(must_group(&carol, "g1")["members"], 3);

    let told = alice.ok(&["leave_group", "g1"]);
    assert_eq!(
        told.trim(),
        "left g1; bob is now its owner",
        "a leaving owner is told who owns the group now"
    );
    let g = must_group(&carol, "g1");
    assert_eq!(
        g["owner"], "bob",
        "owner left: the longest-standing member (bob) must own g1: {g}"
    );
    assert_eq!(g["members"], 2, "{g}");
    assert_eq!(must_group(&bob, "g1")["membership"], "owner");
    assert_eq!(must_group(&alice, "g1")["membership"], "none");
    alice.fails(1, &["list_files", "g1"]);
    let err = alice.fails(1, &["list_requests", "g1"]);
    assert!(
        err.contains("not the owner of g1"),
        "former owner's list_requests: {err}"
    );
    let err = alice.fails(1, &["leave_group", "g1"]);
    assert!(err.contains("g1"), "leaving a group one is not in: {err}");

    let told = bob.json(&["leave_group", "g1"]);
    assert_eq!(told["group"], "g1", "{told}");
    assert_eq!(told["new_owner"], "carol", "{told}");
    assert_eq!(told["group_deleted"], false, "{told}");
    assert_eq!(told["message"], "left g1; carol is now its owner", "{told}");
    let g = must_group(&alice, "g1");
    assert_eq!(
        (g["owner"].as_str(), g["members"].as_u64()),
        (Some("carol"), Some(1)),
        "{g}"
    );

    // --- The last member leaving deletes the group.
    let told = carol.json(&["leave_group", "g1"]);
    assert_eq!(told["group_deleted"], true, "{told}");
    assert_eq!(told["new_owner"], serde_json::Value::Null, "{told}");
    assert!(
        told["message"].as_str().unwrap().contains("deleted"),
        "the last member is told the group was deleted: {told}"
    );
    for p in [&alice, &bob, &carol] {
        assert!(
            group(p, "g1").is_none(),
            "g1 still listed after its last member left: {:?}",
            groups(p)
        );
        let human = p.ok(&["list_groups"]);
        assert!(
            !human
                .lines()
                .any(|l| l.split_whitespace().next() == Some("g1")),
            "g1 still listed:\n{human}"
        );
    }
    let err = bob.fails(1, &["join_group", "g1"]);
    assert!(err.contains("g1"), "joining a deleted group: {err}");
    // The name is free again.
    bob.ok(&["create_group", "g1"]);
    assert_eq!(must_group(&alice, "g1")["owner"], "bob");

    // --- logout, then group commands need a login again.
    carol.ok(&["logout"]);
    assert_eq!(carol.json(&["status"])["user"], Value::Null);
    for args in [
        &["list_groups"][..],
        &["create_group", "g9"],
        &["join_group", "g1"],
    ] {
        let err = carol.fails(1, args);
        assert!(
            err.to_lowercase().contains("login"),
            "{args:?} after logout: no hint to log in: {err}"
        );
    }
    // Nothing was created by the refused create_group.
    assert!(group(&alice, "g9").is_none());
    // And logging in again works.
    carol.ok(&["login", "carol", "pw-carol"]);
    carol.ok(&["join_group", "g1"]);
}

#[test]
fn second_login_and_wrong_user_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let a = Peer::start(&dir.path().join("a"), &tracker);
    a.ok(&["create_user", "alice", "pw-alice"]);
    a.ok(&["create_user", "bob", "pw-bob"]);
    a.ok(&["login", "alice", "pw-alice"]);
    let err = a.fails(1, &["login", "alice", "pw-alice"]);
    assert!(err.contains("already logged in"), "{err}");
    let err = a.fails(1, &["login", "bob", "pw-bob"]);
    assert!(err.contains("log out"), "{err}");
    assert_eq!(a.json(&["status"])["user"], "alice");
    a.ok(&["logout"]);
    let err = a.fails(1, &["logout"]);
    assert!(err.to_lowercase().contains("log"), "{err}");
    a.ok(&["login", "bob", "pw-bob"]);
    assert_eq!(a.json(&["status"])["user"], "bob");
}

/// Sleep until the wall clock is early in a second, so that what follows (well under a second
/// of work) happens within one second of the tracker's clock (same host, same clock).
fn align_to_second_start() {
    loop {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_millis();
        if ms < 50 {
            return;
        }
        std::thread::sleep(Duration::from_millis((1000 - ms as u64).min(200)));
    }
}

/// "Longest-standing member" must hold even when two members were accepted within the same
/// second: zed was accepted before amy, so zed gets the group, whatever their names.
#[test]
fn ownership_goes_to_the_earliest_accepted_member_even_within_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let olga = Peer::start(&dir.path().join("olga"), &tracker);
    let zed = Peer::start(&dir.path().join("zed"), &tracker);
    let amy = Peer::start(&dir.path().join("amy"), &tracker);
    user(&olga, "olga");
    user(&zed, "zed");
    user(&amy, "amy");
    olga.ok(&["create_group", "club"]);
    zed.ok(&["join_group", "club"]);
    amy.ok(&["join_group", "club"]);

    align_to_second_start();
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    olga.ok(&["accept_request", "club", "zed"]);
    olga.ok(&["accept_request", "club", "amy"]);
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    eprintln!("both accepted within unix second {before}..={after}");

    olga.ok(&["leave_group", "club"]);
    let g = must_group(&amy, "club");
    assert_eq!(
        g["owner"], "zed",
        "olga left club: zed was accepted before amy and must be the new owner, got {g}\n(tracker log tail:\n{})",
        tracker.log().lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
}

/// Logging out right after logging in (a script's `login && … && logout`) must leave the
/// daemon's tracker link usable: every later command gets the answer to its own request.
#[test]
fn quick_login_logout_cycles_keep_tracker_replies_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let a = Peer::start(&dir.path().join("a"), &tracker);
    a.ok(&["create_user", "alice", "pw-alice"]);
    a.ok(&["create_user", "bob", "pw-bob"]);
    a.ok(&["login", "bob", "pw-bob"]);
    a.ok(&["create_group", "bobs"]);
    a.ok(&["logout"]);
    // login immediately followed by logout, several times: nothing in between talks to the
    // tracker, so whatever the daemon does in the background at login is still going on.
    for round in 0..10 {
        let out = a.ctl(&["login", "alice", "pw-alice"]);
        assert!(
            out.status.success(),
            "round {round}: login after a quick logout failed: {}\n--- daemon log tail ---\n{}",
            stderr_of(&out),
            a.log_tail(15)
        );
        a.ok(&["logout"]);
    }
    a.ok(&["login", "bob", "pw-bob"]);
    let g = a.json(&["list_groups"]);
    assert_eq!(
        g["groups"][0]["name"], "bobs",
        "list_groups got an answer that is not a group list: {g}"
    );
    assert_eq!(g["groups"][0]["membership"], "owner", "{g}");
}

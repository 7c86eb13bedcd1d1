//! Several daemons changing groups at the same moment: every acknowledged change is applied,
//! none is refused because another one happened at the same time.

use std::thread;

use minitorr_e2e::*;

const USERS: usize = 6;
const GROUPS: usize = 8;

#[test]
fn concurrent_joins_accepts_and_leaves_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let owner = Peer::start(&dir.path().join("owner"), &tracker);
    user(&owner, "owner");
    let peers: Vec<Peer> = (0..USERS)
        .map(|i| {
            let p = Peer::start(&dir.path().join(format!("u{i}")), &tracker);
            user(&p, &format!("u{i}"));
            p
        })
        .collect();
    let groups: Vec<String> = (0..GROUPS).map(|g| format!("g{g}")).collect();
    for g in &groups {
        owner.ok(&["create_group", g]);
    }

    // Everyone asks to join every group at once.
    thread::scope(|s| {
        for p in &peers {
            let groups = &groups;
            s.spawn(move || {
                for g in groups {
                    p.ok(&["join_group", g]);
                }
            });
        }
    });
    // The owner accepts all of them, several at a time (one thread per group), while the
    // members read the group list.
    thread::scope(|s| {
        for g in &groups {
            let owner = &owner;
            s.spawn(move || {
                for i in 0..USERS {
                    owner.ok(&["accept_request", g, &format!("u{i}")]);
                }
            });
        }
        for p in &peers {
            s.spawn(move || {
                for _ in 0..5 {
                    p.ok(&["list_groups"]);
                }
            });
        }
    });
    let v = owner.json(&["list_groups"]);
    for g in v["groups"].as_array().unwrap() {
        assert_eq!(g["members"], USERS as u64 + 1, "{g}");
    }
    // And everyone leaves every group at once; the owner leaves last.
    thread::scope(|s| {
        for p in &peers {
            let groups = &groups;
            s.spawn(move || {
                for g in groups {
                    p.ok(&["leave_group", g]);
                }
            });
        }
    });
    let v = owner.json(&["list_groups"]);
    for g in v["groups"].as_array().unwrap() {
        assert_eq!(
            (g["owner"].as_str(), g["members"].as_u64()),
            (Some("owner"), Some(1)),
            "{g}"
        );
    }
}

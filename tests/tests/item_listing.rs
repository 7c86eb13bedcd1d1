//! Items on the tracker, end to end (issue #13): a member's raw tracker session registers
//! synthetic items (no bytes on disk: the tracker only ever sees metadata) and a real daemon
//! lists them with minitorrctl — `list_files GROUP` with sizes and file counts, `list_files
//! GROUP ITEM` with every path, `--json` with the tree. The floors: a 100,000-entry tree lists
//! in well under a second, and a 1 TiB item's metadata is accepted, stored, listed and served
//! within one frame, on SQLite and on PostgreSQL.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use minitorr_e2e::fakepeer::FakeMember;
use minitorr_e2e::pg::TestDatabase;
use minitorr_e2e::*;
use minitorr_proto::item::{piece_size_for, Tree, TreeEntry};
use minitorr_proto::tracker::{Call, Response};
use minitorr_proto::types::{FileMeta, Sha1Hash};

/// A consistent tree item with made-up hashes: what a member with these files would register.
fn tree_meta(name: &str, entries: Vec<TreeEntry>, piece_size: u32) -> FileMeta {
    let mut tree = Tree { entries };
    tree.sort();
    let pieces: u64 = tree
        .files()
        .map(|(_, size, _)| size.div_ceil(piece_size as u64))
        .sum();
    FileMeta {
        name: name.into(),
        size: tree.total_size(),
        piece_size,
        sha1: tree.digest(),
        pieces: (0..pieces)
            .map(|i| Sha1Hash([(i % 251) as u8; 20]))
            .collect(),
        tree: Some(tree),
    }
}

/// 100,000 tiny files, three levels deep, and one empty directory.
fn hundred_thousand() -> FileMeta {
    let mut entries: Vec<TreeEntry> = (0..100_000u32)
        .map(|i| {
            TreeEntry::file(
                format!("d{:02}/s{:02}/f{i:06}.txt", i % 97, i % 13),
                u64::from(i % 4) * 100,
                Sha1Hash([(i % 253) as u8; 20]),
            )
        })
        .collect();
    entries.push(TreeEntry::dir("empty"));
    tree_meta("many", entries, 512 * 1024)
}

/// 1 TiB in four files (sparse disk images on the sharer's side), with the piece size
/// `piece_size_for` picks: 8 MiB.
fn tebibyte() -> FileMeta {
    let sizes = [1u64 << 39, 1 << 38, (1 << 38) - 5, 5];
    let ps = piece_size_for(&sizes, Some(512 * 1024)).expect("1 TiB fits");
    assert_eq!(ps, minitorr_proto::MAX_PIECE_SIZE);
    let entries = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| TreeEntry::file(format!("disk{i}.img"), s, Sha1Hash([i as u8; 20])))
        .collect();
    tree_meta("vm-images", entries, ps)
}

fn ok(r: Response) {
    assert!(matches!(r, Response::Ok { .. }), "{r:?}");
}

/// Timed minitorrctl call: (stdout, seconds).
fn timed(p: &Peer, args: &[&str]) -> (String, Duration) {
    let started = Instant::now();
    let out = p.ok(args);
    (out, started.elapsed())
}

/// The whole scenario against the tracker at `t` (whatever its database): bob's daemon owns
/// g1, alice is a hand-driven member who registers the items.
fn scenario(dir: &std::path::Path, t: &Tracker, db: &str) {
    let bob = Peer::start(&dir.join("bob"), t);
    user(&bob, "bob");
    bob.ok(&["create_group", "g1"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr: SocketAddr = t.addr;
    let mut alice = rt.block_on(FakeMember::create(addr, "alice"));
    rt.block_on(alice.join("g1"));
    bob.ok(&["accept_request", "g1", "alice"]);

    // Register both items through the tracker protocol, as a daemon would.
    let many = hundred_thousand();
    let tib = tebibyte();
    let started = Instant::now();
    ok(rt.block_on(alice.tracker.call(Call::Share {
        group: "g1".into(),
        meta: many.clone().into(),
        complete: true,
    })));
    let register_many = started.elapsed();
    let started = Instant::now();
    ok(rt.block_on(alice.tracker.call(Call::Share {
        group: "g1".into(),
        meta: tib.clone().into(),
        complete: true,
    })));
    let register_tib = started.elapsed();

    // The group's listing: items with total size and file count.
    let (list, _) = timed(&bob, &["list_files", "g1"]);
    let row = |name: &str| -> Vec<String> {
        list.lines()
            .find(|l| l.starts_with(&format!("{name}/ ")))
            .unwrap_or_else(|| panic!("no row for {name}/:\n{list}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        list.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "SIZE", "FILES", "SEEDERS", "SHA1"],
        "{list}"
    );
    assert_eq!(
        row("many")[1..5],
        ["14.3", "MiB", "100000", "files"],
        "{list}"
    );
    assert_eq!(
        row("vm-images")[1..5],
        ["1.0", "TiB", "4", "files"],
        "{list}"
    );
    assert!(list.contains("Sum: 2 items (100004 files)"), "{list}");
    let v = bob.json(&["list_files", "g1"]);
    let files = v["files"].as_array().unwrap();
    let entry = |name: &str| files.iter().find(|f| f["name"] == name).unwrap().clone();
    assert_eq!(entry("many")["kind"], "tree");
    assert_eq!(entry("many")["file_count"], 100_000);
    assert_eq!(entry("vm-images")["size"], 1u64 << 40);
    assert_eq!(entry("vm-images")["pieces"], 131_073);
    assert_eq!(entry("vm-images")["piece_size"], 8 << 20);

    // The 100,000 files, human and JSON: the floor is one second end to end.
    let (human, list_many) = timed(&bob, &["list_files", "g1", "many"]);
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 1 + 100_001 + 1, "header, entries, Sum:");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["PATH", "SIZE"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["d00/s00/f000000.txt", "0", "B"]
    );
    assert!(lines.contains(&"empty/"), "the empty directory ends in /");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("Sum: many/ in g1, 100000 files, 1 empty directory, 14.3 MiB"),
        "{}",
        lines.last().unwrap()
    );
    // Timed without parsing the JSON here (this test process is a debug build).
    let (out, list_many_json) = timed(&bob, &["--json", "list_files", "g1", "many"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let item = &v["item"];
    assert_eq!(item["kind"], "tree");
    assert_eq!(item["file_count"], 100_000);
    assert_eq!(item["sha1"], many.sha1.to_hex());
    let entries = item["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 100_001);
    let second = &many.tree.as_ref().unwrap().entries[1];
    let (size, sha1) = match second.kind {
        minitorr_proto::item::EntryKind::File { size, sha1 } => (size, sha1),
        _ => unreachable!(),
    };
    assert_eq!(
        entries[1],
        serde_json::json!({"path": second.path, "kind": "file", "size": size, "sha1": sha1.to_hex()})
    );
    let dir = entries.iter().find(|e| e["kind"] == "dir").unwrap();
    assert_eq!(
        dir,
        &serde_json::json!({"path": "empty", "kind": "dir", "size": 0, "sha1": null})
    );

    // The 1 TiB item: listed, and served by GetFile within one frame to another member.
    let (human, _) = timed(&bob, &["list_files", "g1", "vm-images"]);
    assert!(human.contains("disk0.img  512.0 GiB"), "{human}");
    let mut carol = rt.block_on(FakeMember::create(addr, "carol"));
    rt.block_on(carol.join("g1"));
    bob.ok(&["accept_request", "g1", "carol"]);
    let started = Instant::now();
    let r = rt.block_on(carol.tracker.call(Call::GetFile {
        group: "g1".into(),
        file: "vm-images".into(),
    }));
    let get_tib = started.elapsed();
    match r {
        Response::File(d) => assert_eq!(d.meta, tib),
        other => panic!("{other:?}"),
    }
    let started = Instant::now();
    let r = rt.block_on(carol.tracker.call(Call::GetFile {
        group: "g1".into(),
        file: "many".into(),
    }));
    let get_many = started.elapsed();
    match r {
        Response::File(d) => assert_eq!(d.meta, many),
        other => panic!("{other:?}"),
    }
    let (rss, peak) = t.memory_kib();
    eprintln!(
        "items on {db}: register 100k-entry tree {register_many:?}, 1 TiB item {register_tib:?}; \
         list_files g1 many {list_many:?} (--json {list_many_json:?}); GetFile 100k {get_many:?}, \
         1 TiB {get_tib:?}; trackerd RSS {rss} KiB (peak {peak} KiB)"
    );
    // Generous margins: the floor is 1 s for release binaries (measured values are in
    // docs/DOWNLOADS.md); a debug build is about ten times slower, and CI machines are loaded.
    let limit = Duration::from_secs(if cfg!(debug_assertions) { 30 } else { 10 });
    for (what, took) in [
        ("register 100k", register_many),
        ("register 1 TiB", register_tib),
        ("list_files g1 many", list_many),
        ("list_files --json g1 many", list_many_json),
        ("GetFile 100k", get_many),
        ("GetFile 1 TiB", get_tib),
    ] {
        assert!(took < limit, "{what} took {took:?}");
    }
    assert!(peak < 512 * 1024, "trackerd peak RSS {peak} KiB");

    // Unknown items and outsiders get clear errors.
    let err = bob.fails(1, &["list_files", "g1", "nope"]);
    assert!(err.contains("g1 has no file nope"), "{err}");
}

#[test]
fn items_are_registered_listed_and_served_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Tracker::start(&tmp.path().join("tracker"));
    scenario(tmp.path(), &t, "SQLite");
}

#[test]
fn items_are_registered_listed_and_served_on_postgresql() {
    let Some(admin) = pg::admin_url("items e2e test (tests/tests/item_listing.rs)") else {
        return;
    };
    let db = TestDatabase::create(&admin, "items");
    let tmp = tempfile::tempdir().unwrap();
    let t = Tracker::start_args(
        &tmp.path().join("tracker"),
        &["--database-url", db.url.as_str()],
    );
    scenario(tmp.path(), &t, "PostgreSQL");
}

//! Items (issue #13): directory trees registered, compared, listed, served and removed; hostile
//! trees refused with an error naming the entry; the 100,000-entry and 1 TiB floors.

use std::time::{Duration, Instant};

use minitorr_proto::item::{self, Tree, TreeEntry, MAX_TREE_ENTRIES};
use minitorr_proto::tracker::{Call, ErrorCode, FileDetails, Response};
use minitorr_proto::types::{FileMeta, FileSummary, ItemListing, Sha1Hash};
use minitorr_proto::MAX_MESSAGE_FRAME;

use super::*;

/// A consistent tree item: entries sorted, SHA1 = digest, one piece hash per piece.
pub fn tree_meta(name: &str, entries: Vec<TreeEntry>, piece_size: u32, seed: u8) -> FileMeta {
    let mut tree = Tree { entries };
    tree.sort();
    raw_tree_meta(name, tree, piece_size, seed)
}

/// Like [`tree_meta`] but the entries are taken as given (hostile order, names, …).
fn raw_tree_meta(name: &str, tree: Tree, piece_size: u32, seed: u8) -> FileMeta {
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
            .map(|i| Sha1Hash([seed ^ (i as u8); 20]))
            .collect(),
        tree: Some(tree),
    }
}

fn hash(b: u8) -> Sha1Hash {
    Sha1Hash([b; 20])
}

fn small_tree(seed: u8) -> FileMeta {
    tree_meta(
        "proj",
        vec![
            TreeEntry::file("src/main.rs", 40_000, hash(seed)),
            TreeEntry::file("README", 10, hash(seed ^ 1)),
            TreeEntry::file("empty.txt", 0, hash(seed ^ 2)),
            TreeEntry::dir("build"),
        ],
        minitorr_proto::MIN_PIECE_SIZE,
        seed,
    )
}

async fn list(h: &Harness, token: &str, group: &str) -> Vec<FileSummary> {
    match h
        .call(
            Some(token),
            Call::ListFiles {
                group: group.into(),
            },
        )
        .await
    {
        Response::Files(v) => v,
        other => panic!("{other:?}"),
    }
}

fn list_item(group: &str, item: &str) -> Call {
    Call::ListItem {
        group: group.into(),
        item: item.into(),
    }
}

fn get_file(group: &str, file: &str) -> Call {
    Call::GetFile {
        group: group.into(),
        file: file.into(),
    }
}

async fn listing(h: &Harness, token: &str, group: &str, item: &str) -> ItemListing {
    match h.call(Some(token), list_item(group, item)).await {
        Response::Item(l) => *l,
        other => panic!("{other:?}"),
    }
}

async fn details(h: &Harness, token: &str, group: &str, file: &str) -> FileDetails {
    match h.call(Some(token), get_file(group, file)).await {
        Response::File(d) => *d,
        other => panic!("{other:?}"),
    }
}

/// Bytes `r` takes as one frame body (what the tracker would send).
fn frame_len(r: &Response) -> usize {
    let mut buf = bytes::BytesMut::new();
    minitorr_proto::codec::encode_postcard(r, &mut buf).unwrap();
    buf.len()
}

#[tokio::test]
async fn a_tree_is_stored_listed_and_served_whole() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    let m = small_tree(3);
    m.check().unwrap();
    h.ok(&alice, share("g1", m.clone(), true)).await;
    h.ok(&alice, share("g1", meta("single.bin", 100, 7), true))
        .await;

    let files = list(&h, &bob, "g1").await;
    let proj = files.iter().find(|f| f.name == "proj").unwrap();
    assert!(proj.is_tree);
    assert_eq!(proj.file_count, 3);
    assert_eq!(proj.size, 40_010);
    assert_eq!(proj.sha1, m.tree.as_ref().unwrap().digest());
    let single = files.iter().find(|f| f.name == "single.bin").unwrap();
    assert!(!single.is_tree);
    assert_eq!(single.file_count, 1);

    // GetFile hands out the whole metadata, tree included, exactly as registered.
    let d = details(&h, &bob, "g1", "proj").await;
    assert_eq!(d.meta, m);
    d.meta.check().unwrap();

    // ListItem: the listing without piece hashes; a single file has no tree.
    let l = listing(&h, &bob, "g1", "proj").await;
    assert_eq!(l, ItemListing::of("g1", &m));
    assert_eq!(l.piece_count, 4, "3 pieces of main.rs, 1 of README");
    assert_eq!(l.file_count(), 3);
    let l = listing(&h, &bob, "g1", "single.bin").await;
    assert_eq!(l.tree, None);
    assert_eq!(l.file_count(), 1);

    // The second member holding the same tree becomes one more holder.
    h.ok(&bob, share("g1", m.clone(), false)).await;
    assert_eq!(d.meta, details(&h, &alice, "g1", "proj").await.meta);
}

#[tokio::test]
async fn listing_an_item_follows_getfile_access_rules() {
    let h = Harness::new().await;
    let (alice, eve) = (h.user("alice").await, h.user("eve").await);
    h.group("g1", &alice, &[]).await;
    h.ok(&alice, share("g1", small_tree(1), true)).await;
    let m = h
        .err(&eve, list_item("g1", "proj"), ErrorCode::Forbidden)
        .await;
    assert!(m.contains("not a member"), "{m}");
    h.err(&eve, list_item("nope", "proj"), ErrorCode::NotFound)
        .await;
    let m = h
        .err(&alice, list_item("g1", "other"), ErrorCode::NotFound)
        .await;
    assert_eq!(m, "g1 has no file other");
    h.err(&alice, list_item("g1", "a/b"), ErrorCode::BadRequest)
        .await;
    // A pending member is not a member.
    h.ok(&eve, Call::JoinGroup { group: "g1".into() }).await;
    h.err(&eve, list_item("g1", "proj"), ErrorCode::Forbidden)
        .await;
    // No token, no listing.
    let r = h.call(None, list_item("g1", "proj")).await;
    expect_err(r, ErrorCode::InvalidSession);
}

#[tokio::test]
async fn registering_the_same_name_compares_trees() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    let m = small_tree(3);
    h.ok(&alice, share("g1", m.clone(), true)).await;

    // Another tree (one file differs) under the same name: its digest differs.
    let mut other = m.tree.clone().unwrap();
    other.entries[0] = TreeEntry::file("README", 11, hash(9));
    let other = raw_tree_meta("proj", other, m.piece_size, 3);
    let msg = h
        .err(&bob, share("g1", other, true), ErrorCode::Conflict)
        .await;
    assert!(msg.contains("different SHA1"), "{msg}");

    // The same tree with other piece hashes: the digest does not cover them.
    let mut forged = m.clone();
    forged.pieces[0] = hash(0xee);
    let msg = h
        .err(&bob, share("g1", forged, true), ErrorCode::Conflict)
        .await;
    assert!(msg.contains("different size or piece size"), "{msg}");

    // A single file whose SHA1 is the tree's digest (its bytes would be the listing).
    let mut file = meta("proj", m.size, 5);
    file.sha1 = m.sha1;
    let msg = h
        .err(&bob, share("g1", file, true), ErrorCode::Conflict)
        .await;
    assert!(msg.contains("as a directory tree"), "{msg}");
    // And the other way round.
    h.ok(&alice, share("g1", meta("solo", 10, 4), true)).await;
    let mut t = tree_meta("solo", vec![TreeEntry::file("x", 1, hash(1))], 16384, 1);
    t.sha1 = Sha1Hash([4; 20]);
    // (A tree's SHA1 must be its digest, so it cannot collide with a file's by accident.)
    h.err(&bob, share("g1", t, true), ErrorCode::BadRequest)
        .await;

    // What is stored is still alice's tree.
    assert_eq!(details(&h, &bob, "g1", "proj").await.meta, m);
}

#[tokio::test]
async fn removing_an_item_removes_its_tree_and_frees_the_quota() {
    let mut policy = trackerd::service::Policy::default();
    policy.quota.files = 5;
    let h = Harness::with_policy(policy).await;
    let alice = h.user("alice").await;
    h.group("g1", &alice, &[]).await;
    // Four entries (3 files and an empty directory) count 4 of the 5.
    h.ok(&alice, share("g1", small_tree(1), true)).await;
    let msg = h
        .err(
            &alice,
            share(
                "g1",
                tree_meta(
                    "t2",
                    vec![
                        TreeEntry::file("a", 1, hash(1)),
                        TreeEntry::file("b", 1, hash(2)),
                    ],
                    16384,
                    2,
                ),
                true,
            ),
            ErrorCode::QuotaExceeded,
        )
        .await;
    assert_eq!(
        msg,
        "quota exceeded: you registered 4 files in all groups; 2 more would pass the limit of 5 per member"
    );
    h.ok(&alice, share("g1", meta("one", 1, 1), true)).await;
    h.ok(
        &alice,
        Call::RemoveFile {
            group: "g1".into(),
            file: "proj".into(),
        },
    )
    .await;
    h.err(&alice, list_item("g1", "proj"), ErrorCode::NotFound)
        .await;
    h.err(&alice, get_file("g1", "proj"), ErrorCode::NotFound)
        .await;
    // The tree's entries no longer count; a new tree under the old name is a new item.
    let t2 = tree_meta(
        "proj",
        vec![
            TreeEntry::file("a", 1, hash(1)),
            TreeEntry::file("b", 1, hash(2)),
        ],
        16384,
        2,
    );
    h.ok(&alice, share("g1", t2.clone(), true)).await;
    assert_eq!(listing(&h, &alice, "g1", "proj").await.tree, t2.tree);
}

/// Long paths cost more database: a tree counts one quota entry per 256 bytes of listing when
/// that is more than its entry count.
#[tokio::test]
async fn long_paths_count_against_the_file_quota() {
    let mut policy = trackerd::service::Policy::default();
    policy.quota.files = 100;
    let h = Harness::with_policy(policy).await;
    let alice = h.user("alice").await;
    h.group("g1", &alice, &[]).await;
    let deep = |i: usize| {
        let mut p = format!("f{i}");
        for _ in 0..15 {
            p = format!("{}/{p}", "d".repeat(250));
        }
        TreeEntry::dir(p)
    };
    // 10 entries of ~3.8 KB each: 150 quota entries, not 10.
    let t = tree_meta("deep", (0..10).map(deep).collect(), 16384, 1);
    t.check().unwrap();
    let msg = h
        .err(&alice, share("g1", t, true), ErrorCode::QuotaExceeded)
        .await;
    assert!(msg.contains("more would pass the limit of 100"), "{msg}");
    let t = tree_meta("deep", (0..5).map(deep).collect(), 16384, 1);
    h.ok(&alice, share("g1", t, true)).await;
}

/// Every malformed tree is refused before anything is stored, with a message naming the entry.
#[tokio::test]
async fn hostile_trees_are_refused_naming_the_entry() {
    let h = Harness::new().await;
    let eve = h.user("eve").await;
    h.group("g1", &eve, &[]).await;
    let ps = minitorr_proto::MIN_PIECE_SIZE;
    let unsorted = |paths: &[&str]| Tree {
        entries: paths
            .iter()
            .enumerate()
            .map(|(i, p)| TreeEntry::file(*p, 1, hash(i as u8)))
            .collect(),
    };
    let cases: Vec<(&str, FileMeta, &str)> = vec![
        (
            "dot-dot component",
            raw_tree_meta("t", unsorted(&["a/../../etc/passwd"]), ps, 1),
            "\"a/../../etc/passwd\"",
        ),
        (
            "absolute path",
            raw_tree_meta("t", unsorted(&["/etc/passwd"]), ps, 1),
            "\"/etc/passwd\"",
        ),
        (
            "NUL",
            raw_tree_meta("t", unsorted(&["a\0b"]), ps, 1),
            "\"a\\0b\"",
        ),
        (
            "newline",
            raw_tree_meta("t", unsorted(&["a\nF 1 x"]), ps, 1),
            "\"a\\nF 1 x\"",
        ),
        (
            "not NFC",
            raw_tree_meta("t", unsorted(&["cafe\u{301}"]), ps, 1),
            "\"cafe",
        ),
        (
            // NFC and NFD spellings of one name: the NFD one is refused by name.
            "duplicate after normalisation",
            raw_tree_meta("t", unsorted(&["caf\u{e9}", "cafe\u{301}"]), ps, 1),
            "\"cafe",
        ),
        (
            "duplicate",
            raw_tree_meta("t", unsorted(&["a", "a"]), ps, 1),
            "\"a\" appears twice",
        ),
        (
            "file inside a file",
            raw_tree_meta("t", unsorted(&["a", "a/b"]), ps, 1),
            "\"a\" is listed as a file or empty directory but \"a/b\" is inside it",
        ),
        (
            "unsorted",
            raw_tree_meta("t", unsorted(&["b", "a"]), ps, 1),
            "order at \"a\"",
        ),
        (
            "look-alike component",
            raw_tree_meta("t", unsorted(&["docs/p\u{430}ypal.txt"]), ps, 1),
            "p\u{430}ypal",
        ),
        (
            "empty component",
            raw_tree_meta("t", unsorted(&["a//b"]), ps, 1),
            "\"a//b\"",
        ),
    ];
    for (what, m, needle) in cases {
        let msg = h
            .err(&eve, share("g1", m, true), ErrorCode::BadRequest)
            .await;
        assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
    }

    // Digest mismatch: the listing was altered after the SHA1 was computed.
    let mut m = small_tree(1);
    if let Some(t) = &mut m.tree {
        t.entries[0] = TreeEntry::file("README", 10, hash(0x55));
    }
    let msg = h
        .err(&eve, share("g1", m, true), ErrorCode::BadRequest)
        .await;
    assert!(msg.contains("does not match its tree listing"), "{msg}");

    // Piece count mismatch.
    let mut m = small_tree(1);
    m.pieces.pop();
    let msg = h
        .err(&eve, share("g1", m, true), ErrorCode::BadRequest)
        .await;
    assert!(
        msg.contains("3 piece hashes for a tree that needs 4"),
        "{msg}"
    );

    // Size mismatch.
    let mut m = small_tree(1);
    m.size += 1;
    let msg = h
        .err(&eve, share("g1", m, true), ErrorCode::BadRequest)
        .await;
    assert!(msg.contains("not the sum of its files' sizes"), "{msg}");

    // Too many entries (one over the limit), refused before the listing is looked at.
    let entries: Vec<TreeEntry> = (0..=MAX_TREE_ENTRIES)
        .map(|i| TreeEntry::dir(format!("{i:07}")))
        .collect();
    let m = raw_tree_meta("t", Tree { entries }, ps, 1);
    let msg = h
        .err(&eve, share("g1", m, true), ErrorCode::BadRequest)
        .await;
    assert!(msg.contains("262145 entries; at most 262144"), "{msg}");

    // Nothing of all this was stored.
    assert!(list(&h, &eve, "g1").await.is_empty());
}

/// The floor: a tree of 100,000 tiny files registers, lists and is served well within
/// a second on either database (timings printed; asserted with a wide margin).
#[tokio::test]
async fn a_hundred_thousand_entry_tree_registers_and_lists_quickly() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    let entries = (0..100_000u32)
        .map(|i| {
            TreeEntry::file(
                format!("dir{:02}/sub{:02}/file-{i:06}.txt", i % 97, i % 13),
                u64::from(i % 3) * 1000,
                Sha1Hash([(i % 251) as u8; 20]),
            )
        })
        .collect();
    let m = tree_meta("many", entries, minitorr_proto::MIN_PIECE_SIZE, 1);
    let started = Instant::now();
    h.ok(&alice, share("g1", m.clone(), true)).await;
    let register = started.elapsed();
    // A second member's registration of the same tree (the comparison path).
    let started = Instant::now();
    h.ok(&bob, share("g1", m.clone(), true)).await;
    let again = started.elapsed();

    let started = Instant::now();
    let r = h.call(Some(&bob), list_item("g1", "many")).await;
    let list_took = started.elapsed();
    let list_bytes = frame_len(&r);
    match r {
        Response::Item(l) => assert_eq!(l.tree, m.tree),
        other => panic!("{other:?}"),
    }
    let started = Instant::now();
    let r = h.call(Some(&bob), get_file("g1", "many")).await;
    let get_took = started.elapsed();
    let get_bytes = frame_len(&r);
    match r {
        Response::File(d) => assert_eq!(d.meta, m),
        other => panic!("{other:?}"),
    }
    let files = list(&h, &bob, "g1").await;
    assert_eq!(files[0].file_count, 100_000);
    eprintln!(
        "100k entries ({}): register {register:?}, again {again:?}, ListItem {list_took:?} \
         ({list_bytes} bytes), GetFile {get_took:?} ({get_bytes} bytes)",
        if h.url.starts_with("sqlite") {
            "SQLite"
        } else {
            "PostgreSQL"
        }
    );
    let limit = Duration::from_secs(10);
    for t in [register, again, list_took, get_took] {
        assert!(t < limit, "{t:?}");
    }
    assert!(get_bytes < MAX_MESSAGE_FRAME, "{get_bytes}");

    // Many members asking at once: at most METADATA_SLOTS build the metadata together, the
    // others wait their turn, and every one is answered.
    let started = Instant::now();
    let answers = futures::future::join_all((0..8).map(|i| {
        let call = if i % 2 == 0 {
            get_file("g1", "many")
        } else {
            list_item("g1", "many")
        };
        h.call(Some(&bob), call)
    }))
    .await;
    for r in answers {
        match r {
            Response::File(_) | Response::Item(_) => {}
            Response::Error { code, message } => panic!("{code:?}: {message}"),
            _ => panic!("unexpected answer"),
        }
    }
    eprintln!(
        "8 concurrent GetFile/ListItem of 100k entries: {:?}",
        started.elapsed()
    );
}

/// The 1 TiB floor: a 1 TiB item (sparse files on the uploader's disk; metadata only)
/// gets 8 MiB pieces from `piece_size_for`, and is accepted, stored, listed and served within
/// one frame.
#[tokio::test]
async fn a_tebibyte_item_is_accepted_stored_and_served_in_one_frame() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    let sizes = [1u64 << 39, 1 << 38, (1 << 38) - 5, 5];
    let ps = item::piece_size_for(&sizes, Some(512 * 1024)).unwrap();
    assert_eq!(ps, minitorr_proto::MAX_PIECE_SIZE);
    let entries = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| TreeEntry::file(format!("disk{i}.img"), s, hash(i as u8)))
        .collect();
    let m = tree_meta("vm-images", entries, ps, 7);
    assert_eq!(m.size, 1 << 40);
    assert_eq!(
        m.pieces.len(),
        131_072 + 1,
        "the 5-byte file has its own piece"
    );
    let started = Instant::now();
    h.ok(&alice, share("g1", m.clone(), true)).await;
    let register = started.elapsed();
    let started = Instant::now();
    let r = h.call(Some(&bob), get_file("g1", "vm-images")).await;
    let get_took = started.elapsed();
    let bytes = frame_len(&r);
    match r {
        Response::File(d) => assert_eq!(d.meta, m),
        other => panic!("{other:?}"),
    }
    let l = listing(&h, &bob, "g1", "vm-images").await;
    assert_eq!(
        (l.size, l.piece_count, l.file_count()),
        (1 << 40, 131_073, 4)
    );
    eprintln!("1 TiB item: register {register:?}, GetFile {get_took:?}, {bytes} bytes of frame");
    assert!(bytes < MAX_MESSAGE_FRAME / 2, "{bytes}");
}

/// The largest metadata the limits allow (every piece hash, a listing near its byte limit)
/// still fits one tracker frame with its ticket and holders.
#[tokio::test]
async fn the_largest_item_the_limits_allow_fits_one_frame() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    let ps = minitorr_proto::MAX_PIECE_SIZE;
    let per_file_pieces = 4u64;
    let files = item::MAX_ITEM_PIECES as u64 / per_file_pieces;
    // Paths sized so the listing is just under MAX_TREE_BYTES.
    let budget = item::MAX_TREE_BYTES / files as usize - 33;
    let entries = (0..files)
        .map(|i| {
            let name = format!("{i:06}-{}", "x".repeat(budget - 7));
            TreeEntry::file(name, per_file_pieces * ps as u64, hash(i as u8))
        })
        .collect();
    let m = tree_meta("huge", entries, ps, 3);
    let started = Instant::now();
    m.check().unwrap();
    eprintln!("largest item: checked in {:?}", started.elapsed());
    assert_eq!(m.pieces.len(), item::MAX_ITEM_PIECES);
    let started = Instant::now();
    h.ok(&alice, share("g1", m.clone(), true)).await;
    let register = started.elapsed();
    let started = Instant::now();
    h.ok(&bob, share("g1", m.clone(), true)).await;
    let again = started.elapsed();
    let started = Instant::now();
    let r = h.call(Some(&bob), get_file("g1", "huge")).await;
    eprintln!(
        "largest item: register {register:?}, again {again:?}, GetFile {:?}",
        started.elapsed()
    );
    let bytes = frame_len(&r);
    match r {
        Response::File(d) => assert_eq!(d.meta, m),
        other => panic!("{other:?}"),
    }
    eprintln!("largest item: {bytes} bytes of GetFile frame");
    assert!(bytes < MAX_MESSAGE_FRAME - 1024 * 1024, "{bytes}");
}

/// A registered tree survives a tracker restart and goes with its last holder.
#[tokio::test]
async fn a_tree_survives_a_restart_and_goes_with_its_last_holder() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    let m = small_tree(5);
    h.ok(&bob, share("g1", m.clone(), true)).await;
    let h = h.reopen().await;
    assert_eq!(details(&h, &alice, "g1", "proj").await.meta, m);
    assert_eq!(listing(&h, &alice, "g1", "proj").await.tree, m.tree);
    h.ok(
        &bob,
        Call::StopShare {
            group: "g1".into(),
            file: "proj".into(),
        },
    )
    .await;
    h.err(&alice, list_item("g1", "proj"), ErrorCode::NotFound)
        .await;
    assert!(list(&h, &alice, "g1").await.is_empty());
}

//! A group member turned hostile: bogus registrations the owner removes, quotas on what one
//! member may register, peer addresses taken from the connection, look-alike names.

use std::net::IpAddr;

use minitorr_proto::tracker::{Call, ErrorCode, Response};
use minitorr_proto::types::{FileMeta, PeerInfo, Sha1Hash};
use trackerd::service::Policy;
use trackerd::store::Quota;

use super::*;

fn remove(group: &str, file: &str) -> Call {
    Call::RemoveFile {
        group: group.into(),
        file: file.into(),
    }
}

fn get(group: &str, file: &str) -> Call {
    Call::GetFile {
        group: group.into(),
        file: file.into(),
    }
}

async fn peers(h: &Harness, token: &str, group: &str, file: &str) -> Vec<PeerInfo> {
    match h.call(Some(token), get(group, file)).await {
        Response::File(d) => d.peers,
        other => panic!("{other:?}"),
    }
}

/// A consistent FileMeta with `piece_size` pieces (hashes are cheap, all alike).
fn meta_with(name: &str, size: u64, piece_size: u32, seed: u8) -> FileMeta {
    let n = FileMeta::piece_count_for(size, piece_size);
    FileMeta {
        name: name.into(),
        size,
        piece_size,
        sha1: Sha1Hash([seed; 20]),
        pieces: vec![Sha1Hash([seed; 20]); n as usize],
        tree: None,
    }
}

#[tokio::test]
async fn the_owner_removes_a_bogus_registration_and_the_real_file_goes_in() {
    let h = Harness::new().await;
    let (alice, bob, carol, dave) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("carol").await,
        h.user("dave").await,
    );
    h.group("g1", &alice, &[&bob, &carol]).await;
    // bob (hostile) registers bogus hashes under the name the team wants; carol holds it too.
    h.ok(&bob, share("g1", meta("report.pdf", 40_000, 66), true))
        .await;
    h.ok(&carol, share("g1", meta("report.pdf", 40_000, 66), false))
        .await;
    let m = h
        .err(
            &alice,
            share("g1", meta("report.pdf", 40_000, 1), true),
            ErrorCode::Conflict,
        )
        .await;
    assert!(
        m.contains("upload_file --name") && m.contains("remove_file"),
        "{m}"
    );

    // Only the owner may remove it; outsiders and unknown names get the usual answers.
    let m = h
        .err(&bob, remove("g1", "report.pdf"), ErrorCode::Forbidden)
        .await;
    assert_eq!(
        m,
        "only the owner of g1 can remove its files; stop sharing yours with stop_share"
    );
    h.err(&dave, remove("g1", "report.pdf"), ErrorCode::Forbidden)
        .await;
    h.err(&alice, remove("g9", "report.pdf"), ErrorCode::NotFound)
        .await;
    h.err(&alice, remove("g1", "nothing.pdf"), ErrorCode::NotFound)
        .await;
    h.err(&alice, remove("g1", "a/b"), ErrorCode::BadRequest)
        .await;

    let m = h.ok(&alice, remove("g1", "report.pdf")).await;
    assert_eq!(m, "removed report.pdf from g1 (2 holders dropped)");
    h.err(&bob, get("g1", "report.pdf"), ErrorCode::NotFound)
        .await;
    // Every holder's share went with it.
    h.err(
        &carol,
        Call::StopShare {
            group: "g1".into(),
            file: "report.pdf".into(),
        },
        ErrorCode::NotFound,
    )
    .await;
    h.ok(&alice, share("g1", meta("report.pdf", 40_000, 1), true))
        .await;
    let p = peers(&h, &bob, "g1", "report.pdf").await;
    assert_eq!(
        p.iter().map(|p| p.user.as_str()).collect::<Vec<_>>(),
        ["alice"]
    );
    // bob's daemon re-announcing its bogus version now conflicts with the real one.
    h.err(
        &bob,
        share("g1", meta("report.pdf", 40_000, 66), true),
        ErrorCode::Conflict,
    )
    .await;
}

#[tokio::test]
async fn an_entry_stored_before_names_were_normalised_can_still_be_removed() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    h.group("g1", &alice, &[]).await;
    // Written straight into the store, as an older tracker would have: NFD and a zero-width space.
    for name in ["cafe\u{301}.txt", "a\u{200B}.txt"] {
        let out = h
            .svc
            .store()
            .share(
                "g1",
                "alice",
                &meta(name, 10, 3),
                true,
                T0 as i64,
                &Quota::UNLIMITED,
            )
            .await
            .unwrap();
        assert_eq!(out, trackerd::store::ShareOutcome::Shared);
    }
    // Typed in NFC, the NFD entry is still found (the name as given is tried, then its NFC form).
    h.ok(&alice, remove("g1", "cafe\u{301}.txt")).await;
    h.ok(&alice, remove("g1", "a\u{200B}.txt")).await;
    match h
        .call(Some(&alice), Call::ListFiles { group: "g1".into() })
        .await
    {
        Response::Files(f) => assert!(f.is_empty(), "{f:?}"),
        other => panic!("{other:?}"),
    }
}

fn small_quota() -> Policy {
    Policy {
        quota: Quota {
            files_per_group: 2,
            files: 4,
            bytes: 10_000_000,
            pieces: 100,
        },
        max_pieces_per_file: 40,
        trust_announced_peer_addr: false,
    }
}

#[tokio::test]
async fn quotas_bound_what_one_member_registers() {
    let h = Harness::with_policy(small_quota()).await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    h.group("g2", &alice, &[&bob]).await;
    h.group("g3", &alice, &[&bob]).await;

    // Pieces per file: 41 pieces of 16 KiB.
    let m = h
        .err(
            &bob,
            share("g1", meta("big", 41 * 16384, 9), true),
            ErrorCode::QuotaExceeded,
        )
        .await;
    assert_eq!(
        m,
        "quota exceeded: big has 41 pieces; this tracker allows at most 40 per file (use bigger pieces)"
    );
    // Files per group, then in total.
    h.ok(&bob, share("g1", meta("f1", 10, 1), true)).await;
    h.ok(&bob, share("g1", meta("f2", 10, 2), true)).await;
    let m = h
        .err(
            &bob,
            share("g1", meta("f3", 10, 3), true),
            ErrorCode::QuotaExceeded,
        )
        .await;
    assert_eq!(
        m,
        "quota exceeded: you registered 2 files in this group; the limit is 2 per member"
    );
    h.ok(&bob, share("g2", meta("f3", 10, 3), true)).await;
    h.ok(&bob, share("g2", meta("f4", 10, 4), true)).await;
    let m = h
        .err(
            &bob,
            share("g3", meta("f5", 10, 5), true),
            ErrorCode::QuotaExceeded,
        )
        .await;
    assert_eq!(
        m,
        "quota exceeded: you registered 4 files in all groups; the limit is 4 per member"
    );
    // Holding what someone else registered is free: alice registers, bob joins as a holder.
    h.ok(&alice, share("g1", meta("a1", 10, 21), true)).await;
    h.ok(&bob, share("g1", meta("a1", 10, 21), false)).await;
    // Stopping frees the quota once the entry is gone.
    h.ok(
        &bob,
        Call::StopShare {
            group: "g1".into(),
            file: "f1".into(),
        },
    )
    .await;
    h.ok(&bob, share("g1", meta("f5", 10, 5), true)).await;
    // The owner removing bob's entry frees bob's quota too.
    h.ok(&alice, remove("g1", "f5")).await;
    h.ok(&bob, share("g1", meta("f6", 10, 6), true)).await;

    // Bytes and total pieces, for alice (1 entry so far: a1).
    let m = h
        .err(
            &alice,
            share("g2", meta_with("huge", 10_000_001, 1 << 20, 7), true),
            ErrorCode::QuotaExceeded,
        )
        .await;
    assert_eq!(
        m,
        "quota exceeded: your files already claim 10 bytes; 10000001 more would pass the limit of 10000000 bytes per member"
    );
    h.ok(&alice, share("g2", meta("p1", 40 * 16384, 8), true))
        .await;
    h.ok(&alice, share("g2", meta("p2", 40 * 16384, 9), true))
        .await;
    let m = h
        .err(
            &alice,
            share("g1", meta("p3", 20 * 16384, 10), true),
            ErrorCode::QuotaExceeded,
        )
        .await;
    assert_eq!(
        m,
        "quota exceeded: your files already have 81 pieces; 20 more would pass the limit of 100 pieces per member"
    );
}

#[tokio::test]
async fn default_quotas_refuse_a_metadata_flood_but_allow_a_1_tib_file_with_big_pieces() {
    let h = Harness::new().await;
    let bob = h.user("bob").await;
    h.group("g1", &bob, &[]).await;
    // The audit's flood: 838k pieces in one share (16 MiB of frame) is refused before storing.
    let flood = meta_with("flood", 838_000 * 16384, 16384, 1);
    let started = std::time::Instant::now();
    let m = h
        .err(&bob, share("g1", flood, true), ErrorCode::QuotaExceeded)
        .await;
    assert!(m.contains("838000 pieces"), "{m}");
    let took = started.elapsed();
    eprintln!("838k-piece share refused in {took:?}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    // 1 TiB with 8 MiB pieces (131072 pieces) stays possible: issue #13 wants big items.
    let tib = meta_with("disk.img", 1 << 40, minitorr_proto::MAX_PIECE_SIZE, 2);
    assert_eq!(tib.pieces.len(), 131_072);
    h.ok(&bob, share("g1", tib, true)).await;
}

#[tokio::test]
async fn peers_are_listed_at_the_address_their_connection_came_from() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    h.ok(&alice, share("g1", meta("a", 10, 1), true)).await;
    // A second alice session, from 192.0.2.5, announcing someone else's address.
    let elsewhere: IpAddr = "192.0.2.5".parse().unwrap();
    let login = Call::Login {
        user: "alice".into(),
        password: "alice-pw".into(),
        peer_addr: "10.9.9.9:1234".into(),
        device_key: crate::device_key(),
    };
    let mut second_device = login.clone();
    if let Call::Login { device_key, .. } = &mut second_device {
        *device_key = crate::device_key_for("elsewhere");
    }
    let g = match h.call_from(elsewhere, None, second_device).await {
        Response::LoggedIn(g) => g,
        other => panic!("{other:?}"),
    };
    assert_eq!(g.peer_addr, "192.0.2.5:1234");
    let g = match h.call(None, login).await {
        Response::LoggedIn(g) => g,
        other => panic!("{other:?}"),
    };
    assert_eq!(g.peer_addr, "127.0.0.1:1234");
    let addrs: Vec<String> = peers(&h, &bob, "g1", "a")
        .await
        .into_iter()
        .map(|p| p.addr)
        .collect();
    assert!(addrs.contains(&"192.0.2.5:1234".to_string()), "{addrs:?}");
    assert!(addrs.contains(&"127.0.0.1:1234".to_string()), "{addrs:?}");
    assert!(
        !addrs.iter().any(|a| a.starts_with("10.9.9.9")),
        "{addrs:?}"
    );
}

#[tokio::test]
async fn an_operator_may_trust_announced_addresses() {
    let h = Harness::with_policy(Policy {
        trust_announced_peer_addr: true,
        ..Policy::default()
    })
    .await;
    h.user("alice").await;
    assert_eq!(
        h.login_other_device("alice", "10.9.9.9:1234")
            .await
            .peer_addr,
        "10.9.9.9:1234"
    );
    assert_eq!(
        h.login_at("alice", "0.0.0.0:1234").await.peer_addr,
        "127.0.0.1:1234"
    );
}

#[tokio::test]
async fn look_alike_names_are_refused_and_nfd_is_nfc() {
    let h = Harness::new().await;
    let create = |user: &str| Call::CreateUser {
        user: user.into(),
        password: "pw-123456".into(),
    };
    h.user("alice").await;
    let m = expect_err(
        h.call(None, create("\u{430}lice")).await,
        ErrorCode::BadRequest,
    );
    assert_eq!(
        m,
        "user name mixes scripts within one word (U+0430 is Cyrillic, mixed with Latin), so it can imitate another name"
    );
    let m = expect_err(
        h.call(None, create("bob\u{202E}")).await,
        ErrorCode::BadRequest,
    );
    assert!(m.contains("U+202E") && m.contains("bidirectional"), "{m}");
    let m = expect_err(
        h.call(None, create("bob\u{200B}")).await,
        ErrorCode::BadRequest,
    );
    assert_eq!(m, "user name contains the invisible character U+200B");

    // A user created in NFD is the NFC user; logging in either way works.
    let r = h.call(None, create("jose\u{301}")).await;
    assert!(matches!(r, Response::Ok { .. }), "{r:?}");
    let r = h.call(None, create("jos\u{E9}")).await;
    expect_err(r, ErrorCode::AlreadyExists);
    let jose = match h
        .call(
            None,
            Call::Login {
                user: "jos\u{E9}".into(),
                password: "pw-123456".into(),
                peer_addr: "127.0.0.1:7100".into(),
                device_key: crate::device_key(),
            },
        )
        .await
    {
        Response::LoggedIn(g) => {
            assert_eq!(g.user, "jos\u{E9}");
            g.token
        }
        other => panic!("{other:?}"),
    };
    // Groups and files too: shared as NFD, found as NFC, one entry.
    h.ok(
        &jose,
        Call::CreateGroup {
            group: "caf\u{E9}".into(),
        },
    )
    .await;
    h.err(
        &jose,
        Call::CreateGroup {
            group: "cafe\u{301}".into(),
        },
        ErrorCode::AlreadyExists,
    )
    .await;
    h.ok(
        &jose,
        share("cafe\u{301}", meta("cafe\u{301}.txt", 10, 1), true),
    )
    .await;
    h.ok(
        &jose,
        share("caf\u{E9}", meta("caf\u{E9}.txt", 10, 1), true),
    )
    .await;
    match h
        .call(
            Some(&jose),
            Call::ListFiles {
                group: "caf\u{E9}".into(),
            },
        )
        .await
    {
        Response::Files(f) => {
            assert_eq!(f.len(), 1, "{f:?}");
            assert_eq!(f[0].name, "caf\u{E9}.txt");
        }
        other => panic!("{other:?}"),
    }
    match h
        .call(Some(&jose), get("cafe\u{301}", "cafe\u{301}.txt"))
        .await
    {
        Response::File(d) => assert_eq!(d.meta.name, "caf\u{E9}.txt"),
        other => panic!("{other:?}"),
    }
    let m = h
        .err(
            &jose,
            share("caf\u{E9}", meta("invoice\u{202E}fdp.exe", 10, 2), true),
            ErrorCode::BadRequest,
        )
        .await;
    assert!(
        m.starts_with("file name contains the bidirectional control character U+202E"),
        "{m}"
    );
}

use minitorr_proto::tracker::{Call, ErrorCode, FileDetails, Response};
use minitorr_proto::types::{FileSummary, PeerInfo, Sha1Hash};

use super::*;

async fn files(h: &Harness, token: &str, group: &str) -> Vec<FileSummary> {
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

async fn details(h: &Harness, token: &str, group: &str, file: &str) -> FileDetails {
    match h
        .call(
            Some(token),
            Call::GetFile {
                group: group.into(),
                file: file.into(),
            },
        )
        .await
    {
        Response::File(d) => *d,
        other => panic!("{other:?}"),
    }
}

fn peer(user: &str, addr: &str, complete: bool) -> PeerInfo {
    PeerInfo {
        user: user.into(),
        addr: addr.into(),
        complete,
        // Every session of these tests logs in with the same device key (see `login_at`).
        device_key: crate::device_key(),
    }
}

#[tokio::test]
async fn only_members_see_and_share_files() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[]).await;
    let m = h
        .err(
            &bob,
            Call::ListFiles { group: "g1".into() },
            ErrorCode::Forbidden,
        )
        .await;
    assert_eq!(m, "you are not a member of g1");
    h.err(
        &bob,
        share("g1", meta("a", 1, 1), true),
        ErrorCode::Forbidden,
    )
    .await;
    h.err(
        &bob,
        Call::GetFile {
            group: "g1".into(),
            file: "a".into(),
        },
        ErrorCode::Forbidden,
    )
    .await;
    h.err(
        &bob,
        Call::ListFiles { group: "g2".into() },
        ErrorCode::NotFound,
    )
    .await;
    h.ok(&bob, Call::JoinGroup { group: "g1".into() }).await;
    h.err(
        &bob,
        Call::ListFiles { group: "g1".into() },
        ErrorCode::Forbidden,
    )
    .await; // pending is not member
}

#[tokio::test]
async fn share_checks_metadata_and_conflicts() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;

    let mut bad = meta("a.iso", 100_000, 1);
    bad.pieces.pop();
    let m = h
        .err(&alice, share("g1", bad, true), ErrorCode::BadRequest)
        .await;
    assert!(m.contains("piece hashes"), "{m}");
    let mut bad = meta("a.iso", 100, 1);
    bad.name = "../x".into();
    h.err(&alice, share("g1", bad, true), ErrorCode::BadRequest)
        .await;
    let mut huge = meta("a.iso", 0, 1);
    huge.size = u64::MAX;
    h.err(&alice, share("g1", huge, true), ErrorCode::BadRequest)
        .await;

    h.ok(&alice, share("g1", meta("a.iso", 100_000, 1), true))
        .await;
    let m = h
        .err(
            &bob,
            share("g1", meta("a.iso", 100_000, 2), true),
            ErrorCode::Conflict,
        )
        .await;
    assert!(
        m.starts_with("g1 already has a.iso with a different SHA1;"),
        "{m}"
    );
    let mut relaid = meta("a.iso", 100_000, 1);
    relaid.piece_size *= 2;
    relaid
        .pieces
        .truncate(FileMeta::piece_count_for(relaid.size, relaid.piece_size) as usize);
    h.err(&bob, share("g1", relaid, true), ErrorCode::Conflict)
        .await;
    h.ok(&bob, share("g1", meta("a.iso", 100_000, 1), false))
        .await;

    let v = files(&h, &alice, "g1").await;
    assert_eq!(v.len(), 1);
    let f = &v[0];
    assert_eq!(
        (f.group.as_str(), f.name.as_str(), f.size, f.piece_size),
        ("g1", "a.iso", 100_000, 16 * 1024)
    );
    assert_eq!(f.sha1, Sha1Hash([1; 20]));
    assert_eq!((f.seeders_online, f.partial_online), (1, 1));

    // Re-announcing flips the flag instead of adding a row.
    h.ok(&bob, share("g1", meta("a.iso", 100_000, 1), true))
        .await;
    let f = &files(&h, &alice, "g1").await[0];
    assert_eq!((f.seeders_online, f.partial_online), (2, 0));

    // Stored metadata comes back exactly, piece hashes included.
    assert_eq!(
        details(&h, &bob, "g1", "a.iso").await.meta,
        meta("a.iso", 100_000, 1)
    );
}

#[tokio::test]
async fn empty_file_round_trips() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    h.group("g1", &alice, &[]).await;
    h.ok(&alice, share("g1", meta("empty", 0, 3), true)).await;
    let d = details(&h, &alice, "g1", "empty").await;
    assert!(d.meta.pieces.is_empty());
    assert_eq!(d.meta.size, 0);
}

#[tokio::test]
async fn stop_share_removes_the_file_with_its_last_holder() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    let stop = |f: &str| Call::StopShare {
        group: "g1".into(),
        file: f.into(),
    };
    let m = h.err(&alice, stop("a.iso"), ErrorCode::NotFound).await;
    assert_eq!(m, "you are not sharing a.iso in g1");
    h.ok(&alice, share("g1", meta("a.iso", 10, 1), true)).await;
    h.ok(&bob, share("g1", meta("a.iso", 10, 1), true)).await;
    h.ok(&alice, stop("a.iso")).await;
    h.err(&alice, stop("a.iso"), ErrorCode::NotFound).await;
    assert_eq!(files(&h, &alice, "g1").await[0].seeders_online, 1);
    h.ok(&bob, stop("a.iso")).await;
    assert!(files(&h, &alice, "g1").await.is_empty());
    let m = h
        .err(
            &alice,
            Call::GetFile {
                group: "g1".into(),
                file: "a.iso".into(),
            },
            ErrorCode::NotFound,
        )
        .await;
    assert_eq!(m, "g1 has no file a.iso");
    // The name is free for different content now.
    h.ok(&bob, share("g1", meta("a.iso", 10, 9), true)).await;
}

#[tokio::test]
async fn get_file_lists_online_holders_and_signs_a_ticket() {
    let h = Harness::new().await;
    let (alice, bob, carol, dave) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("carol").await,
        h.user("dave").await,
    );
    h.group("g1", &alice, &[&bob, &carol, &dave]).await;
    let m = meta("a.iso", 50_000, 4);
    h.ok(&bob, share("g1", m.clone(), false)).await;
    h.ok(&carol, share("g1", m.clone(), true)).await;
    h.ok(&alice, share("g1", m.clone(), true)).await;

    let d = details(&h, &alice, "g1", "a.iso").await;
    // alice's own session is left out; complete holders first.
    assert_eq!(
        d.peers,
        vec![
            peer("carol", "127.0.0.1:7005", true),
            peer("bob", "127.0.0.1:7003", false)
        ]
    );
    assert_eq!(d.group, "g1");
    let key = h.svc.verifying_key();
    let claims = d.ticket.verify(&key, h.now()).unwrap();
    assert_eq!(
        (
            claims.user.as_str(),
            claims.group.as_str(),
            claims.file_name.as_str()
        ),
        ("alice", "g1", "a.iso")
    );
    assert_eq!(claims.file_sha1, m.sha1);
    assert_eq!(claims.expires_unix, h.now() + 3600);
    assert!(d.ticket.verify(&key, h.now() + 3601).is_err());

    // Another session of alice's (a second daemon) *is* listed to the first.
    let other = h.login_other_device("alice", "127.0.0.1:9999").await.token;
    let d = details(&h, &other, "g1", "a.iso").await;
    assert!(
        d.peers.contains(&peer("alice", "127.0.0.1:7005", true)),
        "{:?}",
        d.peers
    );
    assert!(!d.peers.iter().any(|p| p.addr == "127.0.0.1:9999"));
    let _ = dave;
}

/// `GetHolders` (a running download's refresh) answers what `GetFile` does without the
/// metadata: the same holders, a ticket for the same item; members only, `NotFound` for an
/// unknown item.
#[tokio::test]
async fn get_holders_is_get_file_without_the_metadata() {
    let h = Harness::new().await;
    let (alice, bob, carol, eve) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("carol").await,
        h.user("eve").await,
    );
    h.group("g1", &alice, &[&bob, &carol]).await;
    let m = meta("a.iso", 50_000, 4);
    h.ok(&bob, share("g1", m.clone(), false)).await;
    h.ok(&carol, share("g1", m.clone(), true)).await;
    let get = |file: &str| Call::GetHolders {
        group: "g1".into(),
        file: file.into(),
    };
    let holders = match h.call(Some(&alice), get("a.iso")).await {
        Response::Holders(x) => *x,
        other => panic!("{other:?}"),
    };
    let d = details(&h, &alice, "g1", "a.iso").await;
    assert_eq!(holders.peers, d.peers);
    assert_eq!(
        (holders.group.as_str(), holders.file.as_str()),
        ("g1", "a.iso")
    );
    assert_eq!(holders.sha1, m.sha1);
    let claims = holders
        .ticket
        .verify(&h.svc.verifying_key(), h.now())
        .unwrap();
    assert_eq!(
        (
            claims.user.as_str(),
            claims.file_name.as_str(),
            claims.file_sha1
        ),
        ("alice", "a.iso", m.sha1)
    );
    h.err(&alice, get("nope"), ErrorCode::NotFound).await;
    h.err(&eve, get("a.iso"), ErrorCode::Forbidden).await;
}

#[tokio::test]
async fn holders_go_offline_without_heartbeats_and_come_back() {
    let h = Harness::new().await;
    let (alice, bob, carol) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("carol").await,
    );
    h.group("g1", &alice, &[&bob, &carol]).await;
    let m = meta("a.iso", 50_000, 4);
    h.ok(&bob, share("g1", m.clone(), true)).await;
    h.ok(&carol, share("g1", m.clone(), false)).await;

    h.advance(15);
    h.ok(&bob, Call::Heartbeat).await; // bob keeps beating, carol went silent
    h.ok(&alice, Call::Heartbeat).await;
    h.advance(1);
    let f = &files(&h, &alice, "g1").await[0];
    assert_eq!(
        (f.seeders_online, f.partial_online),
        (1, 0),
        "carol is 16 s silent: offline"
    );
    assert_eq!(
        details(&h, &alice, "g1", "a.iso").await.peers,
        vec![peer("bob", "127.0.0.1:7003", true)]
    );

    // A silent session still authenticates (only its TTL matters) and a heartbeat revives it.
    h.ok(&carol, Call::Heartbeat).await;
    let f = &files(&h, &alice, "g1").await[0];
    assert_eq!((f.seeders_online, f.partial_online), (1, 1));
}

#[tokio::test]
async fn logout_keeps_shares_for_the_next_login() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    h.ok(&bob, share("g1", meta("a.iso", 10, 1), true)).await;
    h.ok(&bob, Call::Logout).await;
    let f = &files(&h, &alice, "g1").await[0];
    assert_eq!(
        (f.name.as_str(), f.seeders_online),
        ("a.iso", 0),
        "file stays listed, holder offline"
    );
    assert!(details(&h, &alice, "g1", "a.iso").await.peers.is_empty());
    h.login_at("bob", "0.0.0.0:7100").await;
    assert_eq!(
        details(&h, &alice, "g1", "a.iso").await.peers,
        vec![peer("bob", "127.0.0.1:7100", true)]
    );
}

#[tokio::test]
async fn concurrent_writers_never_see_database_locked() {
    let h = Harness::new().await;
    let owner = h.user("owner").await;
    h.group("g1", &owner, &[]).await;
    let mut tokens = vec![];
    for i in 0..12 {
        let t = h.user(&format!("u{i}")).await;
        h.ok(&t, Call::JoinGroup { group: "g1".into() }).await;
        h.ok(
            &owner,
            Call::AcceptRequest {
                group: "g1".into(),
                user: format!("u{i}"),
            },
        )
        .await;
        tokens.push(t);
    }
    let mut tasks = vec![];
    for (i, t) in tokens.into_iter().enumerate() {
        let svc = h.svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = vec![];
            for j in 0..5u8 {
                // Everybody shares the same file and one of their own, and creates a group.
                for call in [
                    share("g1", meta("common", 20_000, 7), j % 2 == 0),
                    share("g1", meta(&format!("own-{i}"), 100, j), true),
                    Call::CreateGroup {
                        group: format!("g-{i}-{j}"),
                    },
                    Call::Heartbeat,
                ] {
                    out.push(
                        svc.handle(
                            Request {
                                token: Some(t.clone()),
                                call,
                            },
                            LOCAL,
                        )
                        .await,
                    );
                }
            }
            out
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        for r in task.await.unwrap() {
            match r {
                Response::Ok { .. } => {}
                Response::Error {
                    code: ErrorCode::Conflict,
                    ..
                } => conflicts += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    // own-i is re-shared with a new sha each round: rounds 1..4 conflict, for each of 12 users.
    assert_eq!(conflicts, 12 * 4);
    let f = files(&h, &owner, "g1").await;
    assert_eq!(f.len(), 13);
}

#[tokio::test]
async fn rejects_invalid_names_everywhere() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    h.group("g1", &alice, &[]).await;
    for call in [
        Call::ListFiles { group: "".into() },
        Call::StopShare {
            group: "g1".into(),
            file: "a/b".into(),
        },
        Call::GetFile {
            group: "g1".into(),
            file: "..".into(),
        },
        Call::AcceptRequest {
            group: "g1".into(),
            user: "x\ny".into(),
        },
        Call::LeaveGroup {
            group: "g".repeat(65),
        },
    ] {
        h.err(&alice, call, ErrorCode::BadRequest).await;
    }
}

#[tokio::test]
async fn tickets_are_bound_to_the_callers_device_key_and_holders_listed_with_theirs() {
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("bob").await;
    let key_of = |seed: u8| {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes()
    };
    let login = |user: &str, device_key: [u8; 32]| Call::Login {
        user: user.into(),
        password: format!("{user}-pw"),
        peer_addr: format!("127.0.0.1:{}", 8000 + user.len()),
        device_key,
    };
    let token = |r: Response| match r {
        Response::LoggedIn(g) => g.token,
        other => panic!("{other:?}"),
    };
    let alice = token(h.call(None, login("alice", key_of(10))).await);
    let bob = token(h.call(None, login("bob", key_of(20))).await);
    h.group("g1", &alice, &[&bob]).await;
    h.ok(&alice, share("g1", meta("a.iso", 50_000, 4), true))
        .await;

    let d = details(&h, &bob, "g1", "a.iso").await;
    let claims = d.ticket.verify(&h.svc.verifying_key(), h.now()).unwrap();
    assert_eq!(claims.device_key, key_of(20), "bound to the asking daemon");
    let listed: Vec<_> = d
        .peers
        .iter()
        .map(|p| (p.user.as_str(), p.device_key))
        .collect();
    assert!(listed.contains(&("alice", key_of(10))), "{listed:?}");

    // A key that is not a usable Ed25519 public key (small order / not on the curve).
    for bad in [[0u8; 32], [0xff; 32]] {
        expect_err(h.call(None, login("bob", bad)).await, ErrorCode::BadRequest);
    }
}

//! Revocation events (`Subscribe`): who gets which event, resuming, and delivery across two
//! trackers sharing one database (SQLite file here; PostgreSQL when TRACKERD_TEST_POSTGRES is set).

use std::time::Duration;

use minitorr_proto::tracker::{Call, ErrorCode, EventKind, Response};
use trackerd::service::Subscription;

use super::*;

const QUIET: Duration = Duration::from_millis(300);
/// Generous: the cross-tracker poll runs every 250 ms.
const PATIENT: Duration = Duration::from_secs(10);

async fn sub(h: &Harness, token: &str) -> Subscription {
    h.svc
        .subscribe(Some(token), None)
        .await
        .unwrap_or_else(|r| panic!("subscribe: {r:?}"))
}

/// Everything `s` receives until nothing new comes for QUIET (after at least one batch).
async fn drain(svc: &Service, s: &mut Subscription) -> Vec<EventKind> {
    let mut out = vec![];
    loop {
        let wait = if out.is_empty() { PATIENT } else { QUIET };
        let batch = svc.next_events(s, wait).await.expect("events");
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.into_iter().map(|e| e.kind).filter(|k| !is_holder(k)));
    }
}

/// Holder events (issue #11) accompany every share; the revocation tests here ignore them
/// (`holder_events_*` below look at them).
fn is_holder(k: &EventKind) -> bool {
    matches!(
        k,
        EventKind::HolderOnline { .. } | EventKind::HolderGone { .. }
    )
}

async fn nothing(svc: &Service, s: &mut Subscription) {
    let got = svc.next_events(s, QUIET).await.expect("events");
    let got: Vec<_> = got.into_iter().filter(|e| !is_holder(&e.kind)).collect();
    assert!(got.is_empty(), "expected no event, got {got:?}");
}

/// Everything `s` receives until quiet, holder events included.
async fn drain_all(svc: &Service, s: &mut Subscription) -> Vec<EventKind> {
    let mut out = vec![];
    loop {
        let wait = if out.is_empty() { PATIENT } else { QUIET };
        let batch = svc.next_events(s, wait).await.expect("events");
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.into_iter().map(|e| e.kind));
    }
}

#[tokio::test]
async fn holder_events_reach_the_group_with_address_and_device_key() {
    let h = Harness::new().await;
    let (alice, bob, dave) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("dave").await,
    );
    h.group("g1", &alice, &[&bob]).await;
    h.group("g2", &dave, &[]).await;
    let (mut sa, mut sd) = (sub(&h, &alice).await, sub(&h, &dave).await);
    // History so far: nothing about holders.
    assert!(drain_all(&h.svc, &mut sa)
        .await
        .iter()
        .all(|k| !is_holder(k)));
    h.ok(&bob, share("g1", meta("f.bin", 40_000, 3), false))
        .await;
    let got = drain_all(&h.svc, &mut sa).await;
    let [EventKind::HolderOnline { group, file, peer }] = got.as_slice() else {
        panic!("{got:?}");
    };
    assert_eq!((group.as_str(), file.as_str()), ("g1", "f.bin"));
    assert_eq!(peer.user, "bob");
    assert!(!peer.complete);
    // Exactly what GetFile lists for that holder: the same address and pinned device key.
    match h
        .call(
            Some(&alice),
            Call::GetFile {
                group: "g1".into(),
                file: "f.bin".into(),
            },
        )
        .await
    {
        Response::File(d) => assert_eq!(d.peers, vec![peer.clone()]),
        other => panic!("{other:?}"),
    }
    // Outsiders hear nothing.
    assert!(drain_all(&h.svc, &mut sd)
        .await
        .iter()
        .all(|k| !is_holder(k)));

    h.ok(
        &bob,
        Call::StopShare {
            group: "g1".into(),
            file: "f.bin".into(),
        },
    )
    .await;
    let got = drain_all(&h.svc, &mut sa).await;
    assert_eq!(
        got[0],
        EventKind::HolderGone {
            group: "g1".into(),
            file: Some("f.bin".into()),
            user: "bob".into(),
            addr: None,
        },
        "{got:?}"
    );

    // Logout: one HolderGone per group where the user shares, at the session's address.
    h.ok(&bob, share("g1", meta("f.bin", 40_000, 3), true))
        .await;
    let online = drain_all(&h.svc, &mut sa).await;
    let EventKind::HolderOnline { peer, .. } = &online[0] else {
        panic!("{online:?}");
    };
    assert!(peer.complete);
    let addr = peer.addr.clone();
    h.ok(&bob, Call::Logout).await;
    assert_eq!(
        drain_all(&h.svc, &mut sa).await,
        vec![EventKind::HolderGone {
            group: "g1".into(),
            file: None,
            user: "bob".into(),
            addr: Some(addr),
        }]
    );
}

fn gone(group: &str, user: &str) -> EventKind {
    EventKind::MemberGone {
        group: group.into(),
        user: user.into(),
    }
}

#[tokio::test]
async fn removal_by_the_owner_reaches_the_members_and_the_removed_only() {
    let h = Harness::new().await;
    let (alice, bob, carol, dave) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("carol").await,
        h.user("dave").await,
    );
    h.group("g1", &alice, &[&bob, &carol]).await;
    h.group("g2", &dave, &[]).await;
    h.ok(&bob, share("g1", meta("only-bob.bin", 40_000, 3), true))
        .await;
    let (mut sa, mut sb, mut sc, mut sd) = (
        sub(&h, &alice).await,
        sub(&h, &bob).await,
        sub(&h, &carol).await,
        sub(&h, &dave).await,
    );

    // Only the owner may remove, and not themselves.
    let remove = |user: &str| Call::RemoveMember {
        group: "g1".into(),
        user: user.into(),
    };
    h.err(&carol, remove("bob"), ErrorCode::Forbidden).await;
    h.err(&alice, remove("alice"), ErrorCode::BadRequest).await;
    h.err(&alice, remove("dave"), ErrorCode::NotFound).await;
    h.err(
        &alice,
        Call::RemoveMember {
            group: "nope".into(),
            user: "bob".into(),
        },
        ErrorCode::NotFound,
    )
    .await;

    assert_eq!(h.ok(&alice, remove("bob")).await, "removed bob from g1");
    // Bob's shares in g1 are withdrawn like on leave_group: the file nobody shares goes.
    let removed = EventKind::FileRemoved {
        group: "g1".into(),
        file: "only-bob.bin".into(),
    };
    // Members hear of both (the file first: it went in the same transaction); bob of himself.
    for s in [&mut sa, &mut sc] {
        assert_eq!(
            drain(&h.svc, s).await,
            vec![removed.clone(), gone("g1", "bob")]
        );
    }
    assert_eq!(drain(&h.svc, &mut sb).await, vec![gone("g1", "bob")]);
    nothing(&h.svc, &mut sd).await;
    match h
        .call(Some(&alice), Call::ListFiles { group: "g1".into() })
        .await
    {
        Response::Files(f) => assert!(f.is_empty(), "{f:?}"),
        other => panic!("{other:?}"),
    }
    // Bob is out: no more tickets for him.
    h.err(
        &bob,
        Call::ListFiles { group: "g1".into() },
        ErrorCode::Forbidden,
    )
    .await;
    h.err(&alice, remove("bob"), ErrorCode::NotFound).await;
}

#[tokio::test]
async fn leaving_pushes_member_gone_and_the_last_one_out_deletes_the_group() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    let (mut sa, mut sb) = (sub(&h, &alice).await, sub(&h, &bob).await);

    h.ok(&bob, Call::LeaveGroup { group: "g1".into() }).await;
    assert_eq!(drain(&h.svc, &mut sa).await, vec![gone("g1", "bob")]);
    assert_eq!(drain(&h.svc, &mut sb).await, vec![gone("g1", "bob")]);

    h.ok(&alice, Call::LeaveGroup { group: "g1".into() }).await;
    assert_eq!(
        drain(&h.svc, &mut sa).await,
        vec![
            gone("g1", "alice"),
            EventKind::GroupDeleted { group: "g1".into() }
        ]
    );
    // Bob had left already: he hears nothing of it.
    nothing(&h.svc, &mut sb).await;
}

#[tokio::test]
async fn stop_share_of_the_last_holder_pushes_file_removed() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    h.ok(&alice, share("g1", meta("a.bin", 40_000, 1), true))
        .await;
    h.ok(&bob, share("g1", meta("a.bin", 40_000, 1), false))
        .await;
    let mut sb = sub(&h, &bob).await;
    let stop = Call::StopShare {
        group: "g1".into(),
        file: "a.bin".into(),
    };
    h.ok(&alice, stop.clone()).await;
    // Bob still (partially) shares it: the entry stays, no event.
    nothing(&h.svc, &mut sb).await;
    h.ok(&bob, stop).await;
    assert_eq!(
        drain(&h.svc, &mut sb).await,
        vec![EventKind::FileRemoved {
            group: "g1".into(),
            file: "a.bin".into()
        }]
    );
}

#[tokio::test]
async fn a_subscriber_resumes_where_it_left_and_learns_when_events_were_lost() {
    let h = Harness::new().await;
    let (alice, bob, carol) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("carol").await,
    );
    h.group("g1", &alice, &[&bob, &carol]).await;
    let first = sub(&h, &alice).await;
    let cursor = first.cursor();
    drop(first);
    // While alice's daemon was away:
    h.ok(&bob, Call::LeaveGroup { group: "g1".into() }).await;
    h.ok(
        &alice,
        Call::RemoveMember {
            group: "g1".into(),
            user: "carol".into(),
        },
    )
    .await;
    let mut again = h.svc.subscribe(Some(&alice), Some(cursor)).await.unwrap();
    assert_eq!(
        drain(&h.svc, &mut again).await,
        vec![gone("g1", "bob"), gone("g1", "carol")]
    );
    // Nothing is delivered twice after a second resume.
    let mut third = h
        .svc
        .subscribe(Some(&alice), Some(again.cursor()))
        .await
        .unwrap();
    nothing(&h.svc, &mut third).await;

    // Events pruned before the subscriber came back: it is told to resync.
    h.svc.store().prune_events(i64::MAX).await.unwrap();
    let mut late = h.svc.subscribe(Some(&alice), Some(cursor)).await.unwrap();
    assert_eq!(drain(&h.svc, &mut late).await, vec![EventKind::Resync]);
    // An id from nowhere (another database): resync too.
    let mut bogus = h.svc.subscribe(Some(&alice), Some(1 << 40)).await.unwrap();
    assert_eq!(drain(&h.svc, &mut bogus).await, vec![EventKind::Resync]);
}

#[tokio::test]
async fn subscribing_needs_a_live_session_and_ends_with_it() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let r = h
        .svc
        .subscribe(Some("not-a-token"), None)
        .await
        .err()
        .unwrap();
    expect_err(r, ErrorCode::InvalidSession);
    let r = h.svc.subscribe(None, None).await.err().unwrap();
    expect_err(r, ErrorCode::InvalidSession);
    // Through the request/response path it is refused: it needs a connection of its own.
    h.err(
        &alice,
        Call::Subscribe { after: None },
        ErrorCode::BadRequest,
    )
    .await;
    let mut s = sub(&h, &alice).await;
    // No history: the "caught up" marker (an empty batch) comes at once.
    assert!(h.svc.next_events(&mut s, PATIENT).await.unwrap().is_empty());
    h.ok(&alice, Call::Logout).await;
    let end = h.svc.next_events(&mut s, QUIET).await.err().unwrap();
    expect_err(end, ErrorCode::InvalidSession);
}

/// A daemon that (re)starts subscribes without a cursor and gets the retained history, marked
/// as such by `head`, so its seeders keep refusing tickets issued before a revocation.
#[tokio::test]
async fn a_fresh_subscriber_replays_retained_events_up_to_head() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    h.ok(&bob, Call::LeaveGroup { group: "g1".into() }).await;
    let mut s = sub(&h, &alice).await;
    assert_eq!(s.cursor(), 0);
    assert!(s.head() >= 1);
    let got = h.svc.next_events(&mut s, PATIENT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, gone("g1", "bob"));
    assert!(got[0].id <= s.head());
    assert!(got[0].at_unix > 0);
    // Then the "history delivered" marker, without waiting.
    let t = std::time::Instant::now();
    assert!(h.svc.next_events(&mut s, PATIENT).await.unwrap().is_empty());
    assert!(t.elapsed() < PATIENT);
}

/// Two trackers on one database: an event committed through one reaches a subscriber of the
/// other (by its poll of the shared event table).
#[tokio::test]
async fn an_event_committed_on_one_tracker_reaches_subscribers_of_another() {
    let h = Harness::new().await;
    let other = open(&h.url, &h.clock, &h.key, h.policy).await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    let mut on_other = other.subscribe(Some(&alice), None).await.unwrap();
    h.ok(
        &alice,
        Call::RemoveMember {
            group: "g1".into(),
            user: "bob".into(),
        },
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(drain(&other, &mut on_other).await, vec![gone("g1", "bob")]);
    // Delivery is by the 250 ms poll; allow for a loaded machine.
    assert!(started.elapsed() < PATIENT, "{:?}", started.elapsed());
}

/// Hole punching (issue #14): a member asks, only the listed holder's user hears it, with the
/// asker's address as the tracker recorded it; outsiders and made-up addresses are refused.
#[tokio::test]
async fn punch_requests_reach_only_the_holder_and_only_from_members() {
    let h = Harness::new().await;
    let (alice, bob, carol, dave) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("carol").await,
        h.user("dave").await,
    );
    h.group("g1", &alice, &[&bob, &carol]).await;
    h.group("g2", &dave, &[]).await;
    h.ok(&bob, share("g1", meta("f.bin", 40_000, 3), true))
        .await;
    let (mut sb, mut sc) = (sub(&h, &bob).await, sub(&h, &carol).await);
    drain_all(&h.svc, &mut sb).await;
    drain_all(&h.svc, &mut sc).await;
    let get = Call::GetFile {
        group: "g1".into(),
        file: "f.bin".into(),
    };
    let holder = match h.call(Some(&alice), get).await {
        Response::File(d) => d.peers[0].addr.clone(),
        other => panic!("{other:?}"),
    };
    let punch = |peer: &str| Call::Punch {
        group: "g1".into(),
        file: "f.bin".into(),
        peer: peer.into(),
        nonce: [9; 16],
    };
    h.ok(&alice, punch(&holder)).await;
    let got = drain_all(&h.svc, &mut sb).await;
    let [EventKind::PunchRequest {
        group,
        file,
        holder_addr,
        from,
        nonce,
    }] = got.as_slice()
    else {
        panic!("{got:?}");
    };
    assert_eq!((group.as_str(), file.as_str()), ("g1", "f.bin"));
    assert_eq!(holder_addr, &holder);
    assert_eq!(*nonce, [9; 16]);
    assert_eq!(from.user, "alice");
    assert_eq!(
        from.device_key,
        device_key(),
        "the key alice's session logged in with"
    );
    assert!(!from.addr.is_empty(), "{from:?}");
    // Another member of the group hears nothing of it.
    let other = h.svc.next_events(&mut sc, QUIET).await.expect("events");
    assert!(
        other
            .iter()
            .all(|e| !matches!(e.kind, EventKind::PunchRequest { .. })),
        "{other:?}"
    );
    // An outsider may not ask; an address that is no holder of the file is refused.
    h.err(&dave, punch(&holder), ErrorCode::Forbidden).await;
    h.err(&alice, punch("10.9.9.9:1"), ErrorCode::NotFound)
        .await;
    let none = h.svc.next_events(&mut sb, QUIET).await.expect("events");
    assert!(none.is_empty(), "{none:?}");
    // A member asking again and again is cut off (each request is an event row and makes the
    // holder open connections); the budget is per member and per window.
    let mut refused = None;
    for i in 0..100 {
        if let Response::Error { code, message } = h.call(Some(&alice), punch(&holder)).await {
            assert_eq!(code, ErrorCode::RateLimited, "{message}");
            refused = Some(i);
            break;
        }
    }
    assert!(
        refused.is_some_and(|i| i < 70),
        "never rate-limited: {refused:?}"
    );
    h.ok(&carol, punch(&holder)).await;
}

/// The holder events of `got` about `user`.
fn holder_gone_of(got: &[EventKind], user: &str) -> Vec<EventKind> {
    got.iter()
        .filter(|k| matches!(k, EventKind::HolderGone { user: u, .. } if u == user))
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_login_replacing_a_session_elsewhere_tells_the_group_the_old_address_is_gone() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    h.ok(&bob, share("g1", meta("f.bin", 40_000, 3), true))
        .await;
    let mut sa = sub(&h, &alice).await;
    drain_all(&h.svc, &mut sa).await;
    // `h.user` logged bob in at 127.0.0.1:7003 with the shared test device key.
    let old = "127.0.0.1:7003";

    // The same daemon logs in again at the same address: still the holder, nothing said.
    h.login_at("bob", old).await;
    assert_eq!(holder_gone_of(&drain_all(&h.svc, &mut sa).await, "bob"), []);

    // It comes back from another address (restarted elsewhere, new IP): the old one is gone,
    // exactly as after a logout there.
    h.login_at("bob", "127.0.0.1:7999").await;
    assert_eq!(
        holder_gone_of(&drain_all(&h.svc, &mut sa).await, "bob"),
        vec![EventKind::HolderGone {
            group: "g1".into(),
            file: None,
            user: "bob".into(),
            addr: Some(old.into()),
        }]
    );
}

#[tokio::test]
async fn an_expired_session_tells_the_group_its_holder_is_gone() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[&bob]).await;
    h.ok(&bob, share("g1", meta("f.bin", 40_000, 3), true))
        .await;
    let bob_addr = "127.0.0.1:7003";
    let mut sa = sub(&h, &alice).await;
    drain_all(&h.svc, &mut sa).await;

    // Nothing expired yet: the sweep drops nothing and says nothing.
    assert_eq!(h.svc.expire_sessions().await.unwrap(), 0);
    // Bob's daemon dies (no more heartbeats); alice's keeps beating. Past the session TTL
    // the sweep drops bob's session and tells g1.
    let ttl = trackerd::config::DEFAULT_SESSION_TTL_SECS;
    for _ in 0..4 {
        h.advance(ttl / 3);
        h.ok(&alice, Call::Heartbeat).await;
    }
    assert_eq!(h.svc.expire_sessions().await.unwrap(), 1);
    assert_eq!(
        holder_gone_of(&drain_all(&h.svc, &mut sa).await, "bob"),
        vec![EventKind::HolderGone {
            group: "g1".into(),
            file: None,
            user: "bob".into(),
            addr: Some(bob_addr.into()),
        }]
    );
    h.err(&bob, Call::Heartbeat, ErrorCode::InvalidSession)
        .await;
    // Once: a second sweep finds nothing more.
    assert_eq!(h.svc.expire_sessions().await.unwrap(), 0);

    // A login (of anyone) also drops expired sessions, with the same event: carol (sharing
    // in g1) goes silent, then dave logs in after her TTL, before any sweep.
    let carol = h.user("carol").await;
    h.ok(&carol, Call::JoinGroup { group: "g1".into() }).await;
    h.ok(
        &alice,
        Call::AcceptRequest {
            group: "g1".into(),
            user: "carol".into(),
        },
    )
    .await;
    h.ok(&carol, share("g1", meta("c.bin", 40_000, 4), true))
        .await;
    for _ in 0..4 {
        h.advance(ttl / 3);
        h.ok(&alice, Call::Heartbeat).await;
    }
    drain_all(&h.svc, &mut sa).await;
    h.user("dave").await;
    assert_eq!(
        holder_gone_of(&drain_all(&h.svc, &mut sa).await, "carol"),
        vec![EventKind::HolderGone {
            group: "g1".into(),
            file: None,
            user: "carol".into(),
            addr: Some("127.0.0.1:7005".into()),
        }]
    );
    assert_eq!(h.svc.expire_sessions().await.unwrap(), 0);
}

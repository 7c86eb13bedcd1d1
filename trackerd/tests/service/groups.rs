use minitorr_proto::tracker::{Call, ErrorCode, Response};
use minitorr_proto::types::{GroupSummary, LeftGroup, Membership};

use super::*;

fn accept(group: &str, user: &str) -> Call {
    Call::AcceptRequest {
        group: g(group),
        user: g(user),
    }
}

fn g(name: &str) -> String {
    name.to_string()
}

async fn groups(h: &Harness, token: &str) -> Vec<GroupSummary> {
    match h.call(Some(token), Call::ListGroups).await {
        Response::Groups(v) => v,
        other => panic!("{other:?}"),
    }
}

async fn requests(h: &Harness, token: &str, group: &str) -> Vec<String> {
    match h
        .call(Some(token), Call::ListRequests { group: g(group) })
        .await
    {
        Response::Requests(v) => v,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn create_join_accept_reject_flow() {
    let h = Harness::new().await;
    let (alice, bob, carol) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("carol").await,
    );

    h.ok(&alice, Call::CreateGroup { group: g("g1") }).await;
    let m = h
        .err(
            &bob,
            Call::CreateGroup { group: g("g1") },
            ErrorCode::AlreadyExists,
        )
        .await;
    assert_eq!(m, "group g1 already exists");
    let m = h
        .err(
            &bob,
            Call::CreateGroup { group: g("a b") },
            ErrorCode::BadRequest,
        )
        .await;
    assert_eq!(m, "group name may not contain whitespace");

    let m = h
        .err(
            &bob,
            Call::JoinGroup { group: g("nope") },
            ErrorCode::NotFound,
        )
        .await;
    assert_eq!(m, "no group nope");
    let m = h
        .err(
            &alice,
            Call::JoinGroup { group: g("g1") },
            ErrorCode::AlreadyExists,
        )
        .await;
    assert_eq!(m, "you are already a member of g1");
    h.ok(&bob, Call::JoinGroup { group: g("g1") }).await;
    let m = h
        .err(
            &bob,
            Call::JoinGroup { group: g("g1") },
            ErrorCode::AlreadyExists,
        )
        .await;
    assert_eq!(m, "you already asked to join g1");
    h.advance(1);
    h.ok(&carol, Call::JoinGroup { group: g("g1") }).await;

    // Only the owner sees and decides requests.
    let m = h
        .err(
            &bob,
            Call::ListRequests { group: g("g1") },
            ErrorCode::Forbidden,
        )
        .await;
    assert_eq!(m, "not the owner of g1");
    h.err(
        &bob,
        Call::ListRequests { group: g("zz") },
        ErrorCode::NotFound,
    )
    .await;
    assert_eq!(requests(&h, &alice, "g1").await, vec!["bob", "carol"]);
    let m = h
        .err(
            &carol,
            Call::AcceptRequest {
                group: g("g1"),
                user: g("bob"),
            },
            ErrorCode::Forbidden,
        )
        .await;
    assert_eq!(m, "not the owner of g1");
    h.err(
        &carol,
        Call::RejectRequest {
            group: g("g1"),
            user: g("bob"),
        },
        ErrorCode::Forbidden,
    )
    .await;
    let m = h
        .err(
            &alice,
            Call::AcceptRequest {
                group: g("g1"),
                user: g("dave"),
            },
            ErrorCode::NotFound,
        )
        .await;
    assert_eq!(m, "dave has not asked to join g1");
    h.err(
        &alice,
        Call::RejectRequest {
            group: g("g1"),
            user: g("alice"),
        },
        ErrorCode::NotFound,
    )
    .await;
    h.err(
        &alice,
        Call::AcceptRequest {
            group: g("g9"),
            user: g("bob"),
        },
        ErrorCode::NotFound,
    )
    .await;

    // Pending shows in list_groups before the decision.
    let v = groups(&h, &bob).await;
    assert_eq!(v[0].membership, Membership::Pending);

    h.ok(&alice, accept("g1", "bob")).await;
    h.ok(
        &alice,
        Call::RejectRequest {
            group: g("g1"),
            user: g("carol"),
        },
    )
    .await;
    assert!(requests(&h, &alice, "g1").await.is_empty());
    h.err(
        &alice,
        Call::AcceptRequest {
            group: g("g1"),
            user: g("carol"),
        },
        ErrorCode::NotFound,
    )
    .await;

    let v = groups(&h, &bob).await;
    assert_eq!(
        v,
        vec![GroupSummary {
            name: g("g1"),
            owner: g("alice"),
            members: 2,
            files: 0,
            membership: Membership::Member
        }]
    );
    assert_eq!(groups(&h, &alice).await[0].membership, Membership::Owner);
    assert_eq!(
        groups(&h, &carol).await[0].membership,
        Membership::None,
        "rejected: no relation"
    );
    // A rejected user may ask again.
    h.ok(&carol, Call::JoinGroup { group: g("g1") }).await;
    assert_eq!(requests(&h, &alice, "g1").await, vec!["carol"]);
}

#[tokio::test]
async fn list_groups_counts_members_and_files() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g2", &alice, &[&bob]).await;
    h.group("g1", &bob, &[]).await;
    h.ok(&bob, share("g2", meta("a.iso", 100, 1), true)).await;
    h.ok(&alice, share("g2", meta("b.iso", 100, 2), true)).await;
    h.ok(&alice, share("g2", meta("a.iso", 100, 1), false))
        .await;
    let v = groups(&h, &alice).await;
    assert_eq!(
        v.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["g1", "g2"]
    );
    assert_eq!(
        (v[0].members, v[0].files, v[0].membership),
        (1, 0, Membership::None)
    );
    assert_eq!(
        (v[1].members, v[1].files, v[1].membership),
        (2, 2, Membership::Owner)
    );
}

#[tokio::test]
async fn leaving_needs_membership_and_drops_own_shares() {
    let h = Harness::new().await;
    let (alice, bob, carol) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("carol").await,
    );
    h.group("g1", &alice, &[&bob]).await;
    let m = h
        .err(
            &carol,
            Call::LeaveGroup { group: g("g1") },
            ErrorCode::NotFound,
        )
        .await;
    assert_eq!(m, "you are not a member of g1");
    h.err(
        &carol,
        Call::LeaveGroup { group: g("g0") },
        ErrorCode::NotFound,
    )
    .await;

    h.ok(&bob, share("g1", meta("only-bob", 10, 1), true)).await;
    h.ok(&bob, share("g1", meta("both", 10, 2), true)).await;
    h.ok(&alice, share("g1", meta("both", 10, 2), true)).await;
    let m = h.ok(&bob, Call::LeaveGroup { group: g("g1") }).await;
    assert_eq!(m, "left g1");
    let files = match h
        .call(Some(&alice), Call::ListFiles { group: g("g1") })
        .await
    {
        Response::Files(f) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["both"],
        "bob-only file went away"
    );
    h.err(
        &bob,
        Call::ListFiles { group: g("g1") },
        ErrorCode::Forbidden,
    )
    .await;
    let v = groups(&h, &alice).await;
    assert_eq!((v[0].members, v[0].files), (1, 1));
}

#[tokio::test]
async fn owner_leaving_hands_over_to_longest_standing_member() {
    let h = Harness::new().await;
    let (alice, bob, carol, dave) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("carol").await,
        h.user("dave").await,
    );
    h.ok(&alice, Call::CreateGroup { group: g("g1") }).await;
    for t in [&dave, &carol, &bob] {
        h.ok(t, Call::JoinGroup { group: g("g1") }).await;
    }
    h.advance(10);
    h.ok(&alice, accept("g1", "dave")).await;
    h.advance(10);
    // carol is accepted before bob within the same second: join order decides, not the name.
    h.ok(&alice, accept("g1", "carol")).await;
    h.ok(&alice, accept("g1", "bob")).await;

    let left = h
        .call(Some(&alice), Call::LeaveGroup { group: g("g1") })
        .await;
    assert_eq!(
        left,
        Response::LeftGroup(LeftGroup {
            group: g("g1"),
            new_owner: Some("dave".into()),
            group_deleted: false,
        }),
        "the leaving owner is told who owns the group now"
    );
    assert_eq!(groups(&h, &dave).await[0].owner, "dave");
    assert_eq!(groups(&h, &dave).await[0].membership, Membership::Owner);
    assert!(
        requests(&h, &dave, "g1").await.is_empty(),
        "the new owner may list requests"
    );
    h.err(
        &alice,
        Call::ListRequests { group: g("g1") },
        ErrorCode::Forbidden,
    )
    .await;

    h.ok(&dave, Call::LeaveGroup { group: g("g1") }).await;
    assert_eq!(groups(&h, &bob).await[0].owner, "carol");
}

#[tokio::test]
async fn last_member_leaving_deletes_the_group_with_requests_and_files() {
    let h = Harness::new().await;
    let (alice, bob) = (h.user("alice").await, h.user("bob").await);
    h.group("g1", &alice, &[]).await;
    h.ok(&alice, share("g1", meta("a.iso", 100, 1), true)).await;
    h.ok(&bob, Call::JoinGroup { group: g("g1") }).await;
    let left = h
        .call(Some(&alice), Call::LeaveGroup { group: g("g1") })
        .await;
    assert_eq!(
        left,
        Response::LeftGroup(LeftGroup {
            group: g("g1"),
            new_owner: None,
            group_deleted: true,
        }),
        "the last member is told the group was deleted"
    );
    assert_eq!(
        match left {
            Response::LeftGroup(l) => l.message(),
            _ => unreachable!(),
        },
        "left g1; it had no other member and was deleted"
    );
    assert!(groups(&h, &bob).await.is_empty());
    h.err(
        &bob,
        Call::JoinGroup { group: g("g1") },
        ErrorCode::NotFound,
    )
    .await;
    // The name is free again, and nothing of the old group leaks into the new one.
    h.ok(&bob, Call::CreateGroup { group: g("g1") }).await;
    let v = groups(&h, &bob).await;
    assert_eq!(
        (v[0].owner.as_str(), v[0].members, v[0].files),
        ("bob", 1, 0)
    );
    assert!(requests(&h, &bob, "g1").await.is_empty());
}

use minitorr_proto::tracker::{Call, Response};
use minitorr_proto::types::Membership;

use super::*;

/// Everything acknowledged before a restart is there after it: accounts, sessions (tokens stay
/// valid), groups with owners and members, pending requests, files, shares, and the key.
#[tokio::test]
async fn state_survives_reopening_the_database() {
    let h = Harness::new().await;
    let (alice, bob, carol) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("carol").await,
    );
    h.group("g1", &alice, &[&bob]).await;
    h.ok(&carol, Call::JoinGroup { group: "g1".into() }).await;
    h.ok(&bob, share("g1", meta("a.iso", 40_000, 5), true))
        .await;
    let key_before = h.svc.verifying_key();

    let h = h.reopen().await;
    assert_eq!(h.svc.verifying_key(), key_before, "signing key persisted");
    h.ok(&alice, Call::Heartbeat).await; // token still valid
    assert!(matches!(
        h.call(
            None,
            Call::Login {
                user: "bob".into(),
                password: "bob-pw".into(),
                peer_addr: "127.0.0.1:1".into(),
                device_key: crate::device_key_for("bob-second-daemon"),
            }
        )
        .await,
        Response::LoggedIn(_)
    ));
    let Response::Groups(v) = h.call(Some(&alice), Call::ListGroups).await else {
        panic!()
    };
    assert_eq!(
        (
            v[0].owner.as_str(),
            v[0].members,
            v[0].files,
            v[0].membership
        ),
        ("alice", 2, 1, Membership::Owner)
    );
    let Response::Requests(r) = h
        .call(Some(&alice), Call::ListRequests { group: "g1".into() })
        .await
    else {
        panic!()
    };
    assert_eq!(r, vec!["carol"]);
    let Response::File(d) = h
        .call(
            Some(&alice),
            Call::GetFile {
                group: "g1".into(),
                file: "a.iso".into(),
            },
        )
        .await
    else {
        panic!()
    };
    assert_eq!(d.meta, meta("a.iso", 40_000, 5));
    assert_eq!(d.peers.len(), 2, "bob's two sessions: {:?}", d.peers);
    d.ticket.verify(&key_before, h.now()).unwrap();
}

//! Device logins (issue #12): a restarted daemon logs in with its device key, never a password.

use minitorr_proto::tracker::{Call, ErrorCode, LoginGrant, Response};
use minitorr_proto::types::DeviceState;

use crate::{expect_err, signing_key_for, Harness};

const ADDR: &str = "127.0.0.1:7100";

/// Ask for a nonce and sign it as `seed`'s device for `user`; returns the DeviceLogin call.
async fn signed_login(h: &Harness, user: &str, seed: &str) -> Call {
    let key = signing_key_for(seed);
    let public = key.verifying_key().to_bytes();
    let (nonce, tracker_id) = match h
        .call(
            None,
            Call::DeviceChallenge {
                user: user.into(),
                device_key: public,
            },
        )
        .await
    {
        Response::DeviceChallenge {
            nonce, tracker_id, ..
        } => (nonce, tracker_id),
        other => panic!("challenge: {other:?}"),
    };
    assert_eq!(tracker_id, h.svc.tracker_id());
    use ed25519_dalek::Signer;
    let msg = minitorr_proto::device::login_message(&nonce, user, &tracker_id, &public);
    Call::DeviceLogin {
        user: user.into(),
        device_key: public,
        peer_addr: ADDR.into(),
        nonce,
        signature: key.sign(&msg).to_bytes().to_vec(),
        device_name: "pi".into(),
    }
}

fn granted(r: Response) -> LoginGrant {
    match r {
        Response::LoggedIn(g) => g,
        other => panic!("expected a grant, got {other:?}"),
    }
}

async fn devices(h: &Harness, token: &str) -> Vec<minitorr_proto::types::DeviceInfo> {
    match h.call(Some(token), Call::ListDevices).await {
        Response::Devices(d) => d,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_password_login_registers_the_device_which_then_logs_in_by_itself() {
    let h = Harness::new().await;
    h.user("bob").await; // another user: created and logged in elsewhere
    h.create_user("alice").await;
    // Not registered yet: refused.
    let r = h.call(None, signed_login(&h, "alice", ADDR).await).await;
    let m = expect_err(r, ErrorCode::AuthFailed);
    assert!(m.contains("not registered"), "{m}");

    let first = h.login_other_device("alice", ADDR).await;
    assert_eq!(
        h.ok(&first.token, Call::NameDevice { name: "pi".into() })
            .await,
        "pi"
    );
    let again = granted(h.call(None, signed_login(&h, "alice", ADDR).await).await);
    assert_eq!(again.user, "alice");
    // The restart replaced the first session at once.
    h.err(&first.token, Call::Heartbeat, ErrorCode::InvalidSession)
        .await;
    h.ok(&again.token, Call::Heartbeat).await;
    let list = devices(&h, &again.token).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "pi");
    assert!(list[0].current && list[0].online);
    assert_eq!(list[0].state, DeviceState::Active);
    // Bob's devices are his: alice's key signed for bob opens nothing.
    let r = h.call(None, signed_login(&h, "bob", ADDR).await).await;
    expect_err(r, ErrorCode::AuthFailed);
}

#[tokio::test]
async fn replayed_forged_and_misbound_signatures_are_refused() {
    let h = Harness::new().await;
    h.create_user("alice").await;
    h.login_other_device("alice", ADDR).await;
    let good = signed_login(&h, "alice", ADDR).await;
    granted(h.call(None, good.clone()).await);
    // The same signed call again: the nonce is used up.
    let m = expect_err(h.call(None, good.clone()).await, ErrorCode::AuthFailed);
    assert!(m.contains("nonce"), "{m}");
    // A signature by another key over a fresh nonce.
    let Call::DeviceLogin { nonce, .. } = signed_login(&h, "alice", ADDR).await else {
        unreachable!()
    };
    let mut forged = signed_login(&h, "alice", ADDR).await;
    if let Call::DeviceLogin { signature, .. } = &mut forged {
        use ed25519_dalek::Signer;
        *signature = signing_key_for("mallory")
            .sign(b"anything")
            .to_bytes()
            .to_vec();
    }
    let m = expect_err(h.call(None, forged).await, ErrorCode::AuthFailed);
    assert!(m.contains("signature"), "{m}");
    // A valid signature whose nonce was swapped for another one (issued for the same device).
    let mut swapped = signed_login(&h, "alice", ADDR).await;
    if let Call::DeviceLogin { nonce: n, .. } = &mut swapped {
        *n = nonce;
    }
    expect_err(h.call(None, swapped).await, ErrorCode::AuthFailed);
    // A nonce past its lifetime.
    let late = signed_login(&h, "alice", ADDR).await;
    h.advance(trackerd::auth::NONCE_TTL_SECS + 1);
    let m = expect_err(h.call(None, late).await, ErrorCode::AuthFailed);
    assert!(m.contains("expired"), "{m}");
}

#[tokio::test]
async fn revoked_and_logged_out_devices_stay_out_until_a_password_login() {
    let h = Harness::new().await;
    h.create_user("alice").await;
    let laptop = h.login_other_device("alice", "127.0.0.1:7200").await;
    h.ok(
        &laptop.token,
        Call::NameDevice {
            name: "laptop".into(),
        },
    )
    .await;
    let pi = h.login_other_device("alice", ADDR).await;
    h.ok(&pi.token, Call::NameDevice { name: "pi".into() })
        .await;
    let mut sub = h.svc.subscribe(Some(&pi.token), None).await.unwrap();
    assert!(h
        .svc
        .next_events(&mut sub, std::time::Duration::from_secs(5))
        .await
        .unwrap()
        .is_empty());

    h.ok(&laptop.token, Call::RevokeDevice { name: "pi".into() })
        .await;
    h.err(&pi.token, Call::Heartbeat, ErrorCode::InvalidSession)
        .await;
    // Its event stream ends at once (not at the next keepalive).
    let t = std::time::Instant::now();
    let end = h
        .svc
        .next_events(&mut sub, std::time::Duration::from_secs(60))
        .await
        .err()
        .unwrap();
    expect_err(end, ErrorCode::InvalidSession);
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    let m = expect_err(
        h.call(None, signed_login(&h, "alice", ADDR).await).await,
        ErrorCode::AuthFailed,
    );
    assert!(m.contains("revoked"), "{m}");
    let list = devices(&h, &laptop.token).await;
    let pi_row = list.iter().find(|d| d.name == "pi").unwrap();
    assert_eq!(pi_row.state, DeviceState::Revoked);
    expect_err(
        h.call(
            Some(&laptop.token),
            Call::RevokeDevice {
                name: "nope".into(),
            },
        )
        .await,
        ErrorCode::NotFound,
    );

    // A password login on it vouches for it again.
    h.login_other_device("alice", ADDR).await;
    let back = granted(h.call(None, signed_login(&h, "alice", ADDR).await).await);
    // Logout of the device: automatic login refused from then on.
    h.ok(&back.token, Call::LogoutDevice).await;
    h.err(&back.token, Call::Heartbeat, ErrorCode::InvalidSession)
        .await;
    let m = expect_err(
        h.call(None, signed_login(&h, "alice", ADDR).await).await,
        ErrorCode::AuthFailed,
    );
    assert!(m.contains("logged out"), "{m}");
    // A plain Logout (daemon shutdown) keeps it.
    let laptop2 = granted(
        h.call(None, signed_login(&h, "alice", "127.0.0.1:7200").await)
            .await,
    );
    h.ok(&laptop2.token, Call::Logout).await;
    granted(
        h.call(None, signed_login(&h, "alice", "127.0.0.1:7200").await)
            .await,
    );
}

#[tokio::test]
async fn device_names_are_unique_per_user() {
    let h = Harness::new().await;
    h.create_user("alice").await;
    let a = h.login_other_device("alice", "127.0.0.1:7301").await;
    let b = h.login_other_device("alice", "127.0.0.1:7302").await;
    assert_eq!(
        h.ok(&a.token, Call::NameDevice { name: "pi".into() }).await,
        "pi"
    );
    assert_eq!(
        h.ok(&b.token, Call::NameDevice { name: "pi".into() }).await,
        "pi-2"
    );
}

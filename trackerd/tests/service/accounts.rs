use minitorr_proto::tracker::{Call, ErrorCode, Response};

use super::*;

fn create(user: &str, password: &str) -> Call {
    Call::CreateUser {
        user: user.into(),
        password: password.into(),
    }
}

fn login(user: &str, password: &str) -> Call {
    Call::Login {
        user: user.into(),
        password: password.into(),
        peer_addr: "127.0.0.1:7001".into(),
        device_key: crate::device_key(),
    }
}

#[tokio::test]
async fn create_user_validates_and_refuses_duplicates() {
    let h = Harness::new().await;
    assert!(matches!(
        h.call(None, create("alice", "pw")).await,
        Response::Ok { .. }
    ));
    let m = expect_err(
        h.call(None, create("alice", "other")).await,
        ErrorCode::AlreadyExists,
    );
    assert_eq!(m, "user alice already exists");
    // The original password still works: the duplicate did not overwrite it.
    assert!(matches!(
        h.call(None, login("alice", "pw")).await,
        Response::LoggedIn(_)
    ));

    let m = expect_err(
        h.call(None, create("al ice", "pw")).await,
        ErrorCode::BadRequest,
    );
    assert_eq!(m, "user name may not contain whitespace");
    expect_err(h.call(None, create("", "pw")).await, ErrorCode::BadRequest);
    expect_err(
        h.call(None, create("../x", "pw")).await,
        ErrorCode::BadRequest,
    );
    let m = expect_err(h.call(None, create("bob", "")).await, ErrorCode::BadRequest);
    assert_eq!(m, "password must be 1 to 1024 bytes");
    expect_err(
        h.call(None, create("bob", &"p".repeat(1025))).await,
        ErrorCode::BadRequest,
    );
    assert!(matches!(
        h.call(None, create("bob", &"p".repeat(1024))).await,
        Response::Ok { .. }
    ));
}

#[tokio::test]
async fn wrong_user_and_wrong_password_look_the_same() {
    let h = Harness::new().await;
    h.user("alice").await;
    let a = expect_err(
        h.call(None, login("alice", "nope")).await,
        ErrorCode::AuthFailed,
    );
    let b = expect_err(
        h.call(None, login("nobody", "alice-pw")).await,
        ErrorCode::AuthFailed,
    );
    assert_eq!(a, "wrong user id or password");
    assert_eq!(a, b);
}

#[tokio::test]
async fn login_grant_carries_key_heartbeat_and_effective_address() {
    let h = Harness::new().await;
    h.user("alice").await;
    let g = h.login_at("alice", "0.0.0.0:7009").await;
    assert_eq!(g.user, "alice");
    assert_eq!(
        g.peer_addr, "127.0.0.1:7009",
        "unspecified IP replaced by the source IP"
    );
    assert_eq!(
        g.tracker_keys,
        vec![minitorr_proto::ticket::TicketKey {
            public: h.svc.verifying_key().to_bytes(),
            valid_until: None
        }]
    );
    assert_eq!(g.heartbeat_secs, 5);
    assert_eq!(g.token.len(), 64);
    let g2 = h.login_other_device("alice", "10.9.9.9:7010").await;
    assert_eq!(
        g2.peer_addr, "127.0.0.1:7010",
        "announced IP replaced by the source IP (only its port is used)"
    );
    // Several sessions at once, each valid.
    h.ok(&g.token, Call::Heartbeat).await;
    h.ok(&g2.token, Call::Heartbeat).await;
    let bad = Call::Login {
        user: "alice".into(),
        password: "alice-pw".into(),
        peer_addr: "nowhere".into(),
        device_key: crate::device_key(),
    };
    expect_err(h.call(None, bad).await, ErrorCode::BadRequest);
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_user_and_per_ip() {
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("bob").await;
    for _ in 0..5 {
        expect_err(
            h.call(None, login("alice", "guess")).await,
            ErrorCode::AuthFailed,
        );
    }
    // Now even the right password is refused, and so is another user from the same IP.
    let m = expect_err(
        h.call(None, login("alice", "alice-pw")).await,
        ErrorCode::RateLimited,
    );
    assert!(m.contains("try again in 30 s"), "{m}");
    expect_err(
        h.call(None, login("bob", "bob-pw")).await,
        ErrorCode::RateLimited,
    );
    // From another IP, bob is fine but alice is still blocked.
    let other: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let r = h
        .svc
        .handle(
            Request {
                token: None,
                call: login("bob", "bob-pw"),
            },
            other,
        )
        .await;
    assert!(matches!(r, Response::LoggedIn(_)), "{r:?}");
    let r = h
        .svc
        .handle(
            Request {
                token: None,
                call: login("alice", "alice-pw"),
            },
            other,
        )
        .await;
    expect_err(r, ErrorCode::RateLimited);
    h.advance(30);
    assert!(matches!(
        h.call(None, login("alice", "alice-pw")).await,
        Response::LoggedIn(_)
    ));
}

/// `n` logins for alice at once, all wrong but one (the right one is number `right_at`), from
/// one address or from `n` different ones. Returns (wrong passwords answered AuthFailed,
/// right one let in, passwords the service verified).
async fn parallel_logins(n: usize, right_at: usize, many_addresses: bool) -> (usize, bool, u64) {
    let h = Harness::new().await;
    h.user("alice").await;
    let before = h.svc.password_checks();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let svc = h.svc.clone();
            let ip: std::net::IpAddr = if many_addresses {
                std::net::Ipv4Addr::from(0xc000_0200 + i as u32).into()
            } else {
                LOCAL
            };
            let password = if i == right_at {
                "alice-pw".to_string()
            } else {
                format!("guess-{i}")
            };
            tokio::spawn(async move {
                let r = svc
                    .handle(
                        Request {
                            token: None,
                            call: login("alice", &password),
                        },
                        ip,
                    )
                    .await;
                (i == right_at, r)
            })
        })
        .collect();
    let (mut wrong_checked, mut let_in) = (0, false);
    for t in tasks {
        match t.await.unwrap() {
            (
                false,
                Response::Error {
                    code: ErrorCode::AuthFailed,
                    ..
                },
            ) => wrong_checked += 1,
            (true, Response::LoggedIn(_)) => let_in = true,
            (
                _,
                Response::Error {
                    code: ErrorCode::RateLimited,
                    ..
                },
            ) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    (wrong_checked, let_in, h.svc.password_checks() - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_logins_cannot_check_more_passwords_than_the_limit() {
    use trackerd::auth::MAX_FAILURES;
    for (n, right_at, many) in [
        (60, 59, false),
        (60, 2, false),
        (500, 250, true),
        (500, 0, true),
    ] {
        let (wrong, let_in, checked) = parallel_logins(n, right_at, many).await;
        eprintln!(
            "{n} parallel logins (right one #{right_at}, many addresses: {many}): \
             {wrong} wrong passwords checked, {checked} verified in all, right one let in: {let_in}"
        );
        assert!(wrong <= MAX_FAILURES, "{wrong} wrong passwords checked");
        assert!(
            checked as usize <= MAX_FAILURES + 1,
            "{checked} passwords verified in all (at most 5 wrong + the right one)"
        );
        assert_eq!(checked as usize, wrong + usize::from(let_in));
        assert!(wrong > 0, "the limiter admits some attempts");
    }
}

#[tokio::test]
async fn calls_need_a_live_token() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let m = expect_err(
        h.call(None, Call::ListGroups).await,
        ErrorCode::InvalidSession,
    );
    assert_eq!(m, "not logged in");
    expect_err(
        h.call(Some("f00"), Call::ListGroups).await,
        ErrorCode::InvalidSession,
    );
    assert!(matches!(
        h.call(Some(&alice), Call::ListGroups).await,
        Response::Groups(_)
    ));
    // Login/CreateUser do not need one, and a token on them is ignored.
    assert!(matches!(
        h.call(Some("junk"), login("alice", "alice-pw")).await,
        Response::LoggedIn(_)
    ));
}

#[tokio::test]
async fn logout_revokes_only_that_session() {
    let h = Harness::new().await;
    let t1 = h.user("alice").await;
    let t2 = h.login_other_device("alice", "127.0.0.1:7002").await.token;
    h.ok(&t1, Call::Logout).await;
    h.err(&t1, Call::Heartbeat, ErrorCode::InvalidSession).await;
    h.err(&t1, Call::ListGroups, ErrorCode::InvalidSession)
        .await;
    h.ok(&t2, Call::Heartbeat).await;
}

#[tokio::test]
async fn sessions_expire_unless_heartbeats_keep_them_alive() {
    let h = Harness::new().await;
    let idle = h.user("alice").await;
    let busy = h.login_at("alice", "127.0.0.1:7003").await.token;
    let ttl = 7 * 24 * 3600;
    h.advance(ttl - 10);
    h.ok(&busy, Call::Heartbeat).await;
    h.advance(20);
    h.err(&idle, Call::ListGroups, ErrorCode::InvalidSession)
        .await;
    assert!(matches!(
        h.call(Some(&busy), Call::ListGroups).await,
        Response::Groups(_)
    ));
    h.advance(ttl - 30);
    h.ok(&busy, Call::Heartbeat).await;
    h.advance(ttl + 1);
    h.err(&busy, Call::Heartbeat, ErrorCode::InvalidSession)
        .await;
}

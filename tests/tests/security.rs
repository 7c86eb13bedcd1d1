//! The threat model of docs/SECURITY.md, tested: what outsiders, non-members, malicious members
//! and malicious peers cannot do. Hand-made clients built from the codec crate stand in for the
//! attackers; the victims are real trackerd/minitorrd processes.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use minitorr_e2e::*;
use minitorr_proto::peer::PeerMsg;
use minitorr_proto::ticket::Ticket;
use minitorr_proto::tracker::{Call, ErrorCode, Response};

/// A trackerd with a config file (short ticket and session lifetimes), killed on drop.
struct ConfiguredTracker {
    addr: SocketAddr,
    child: Child,
}

impl ConfiguredTracker {
    fn start(dir: &Path, toml: &str) -> ConfiguredTracker {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.join("trackerd.toml");
        std::fs::write(&cfg, toml).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(bin("trackerd"))
            .arg("--config")
            .arg(&cfg)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env_remove("TRACKERD_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("trackerd.log")).unwrap())
            .spawn()
            .unwrap();
        wait_until("trackerd to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        ConfiguredTracker { addr, child }
    }
}

impl Drop for ConfiguredTracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw tracker client (its `connect_from` picks the source address, so per-address rate
/// limiting can be told apart from per-user).
type Raw = fakepeer::TrackerClient;

/// Log in as `user` from a fixed (unused) peer address; the tracker's answer.
async fn login(c: &mut Raw, user: &str, password: &str) -> Response {
    c.try_login(user, password, "127.0.0.1:9".parse().unwrap())
        .await
}

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// The seeder's address and device key, and the device key the client proves (TLS).
type ToSeeder<'a> = (SocketAddr, [u8; 32], &'a fakepeer::DeviceKey);

/// Open a peer connection to the seeder and say Hello with `ticket`; returns the connection
/// and the seeder's first answer.
async fn hello(
    (seeder, seeder_key, me): ToSeeder<'_>,
    ticket: Ticket,
) -> (fakepeer::PeerConn<fakepeer::TlsStream>, PeerMsg) {
    let mut f = fakepeer::tls_connect(seeder, me, seeder_key).await.unwrap();
    let first = fakepeer::say_hello(&mut f, ticket)
        .await
        .expect("seeder answers Hello");
    (f, first)
}

fn refused_because(m: &PeerMsg, word: &str) {
    match m {
        PeerMsg::Refused { reason } => assert!(reason.contains(word), "{reason}"),
        other => panic!("expected a refusal ({word}), got {other:?}"),
    }
}

/// Ends within a few seconds without ever delivering a `Piece`.
async fn closed_without_a_piece<S>(f: &mut fakepeer::PeerConn<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(5), f.next()).await {
            Err(_) => panic!("connection kept open"),
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(PeerMsg::Piece { piece, .. }))) => panic!("served piece {piece}"),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

#[test]
fn seeders_refuse_expired_altered_and_foreign_tickets_and_out_of_range_pieces() {
    const SIZE: usize = 600 * 1024;
    let tmp = tempfile::tempdir().unwrap();
    let tracker = ConfiguredTracker::start(
        &tmp.path().join("t"),
        "ticket_ttl_secs = 2\nheartbeat_secs = 1\npeer_timeout_secs = 3\n",
    );
    let a = Peer::start_with(&tmp.path().join("a"), &[tracker.addr], &[]);
    user(&a, "a");
    a.ok(&["create_group", "g1"]);
    a.ok(&["create_group", "g2"]);
    let dir = tmp.path().join("a");
    for (name, group) in [
        ("secret.bin", "g1"),
        ("other.bin", "g1"),
        ("g2only.bin", "g2"),
    ] {
        random_file(&dir.join(name), SIZE);
        a.ok(&["upload_file", dir.join(name).to_str().unwrap(), group]);
    }
    a.ok(&["create_user", "mallory", "pw-m"]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ticket, device) = rt.block_on(async {
        let mut m = Raw::connect(tracker.addr).await;
        assert!(matches!(
            login(&mut m, "mallory", "pw-m").await,
            Response::LoggedIn(_)
        ));
        m.call(Call::JoinGroup { group: "g1".into() }).await;
        a.ok(&["accept_request", "g1", "mallory"]);
        // A member's ticket for g2only.bin? Not a member of g2: no ticket.
        let r = m
            .call(Call::GetFile {
                group: "g2".into(),
                file: "g2only.bin".into(),
            })
            .await;
        assert_eq!(code(&r), Some(ErrorCode::Forbidden), "{r:?}");
        match m
            .call(Call::GetFile {
                group: "g1".into(),
                file: "secret.bin".into(),
            })
            .await
        {
            Response::File(d) => (d.ticket, m.device.clone()),
            other => panic!("{other:?}"),
        }
    });
    let to_a = (a.addr, a.device_key().public_bytes(), &device);

    rt.block_on(async {
        // The genuine ticket works (baseline), and asking for a piece out of range closes the
        // connection without data — also u32::MAX.
        let pieces = SIZE.div_ceil(minitorr_proto::item::auto_piece_size(&[SIZE as u64]) as usize);
        for bad_piece in [pieces as u32, u32::MAX] {
            let (mut f, first) = hello(to_a, ticket.clone()).await;
            assert!(matches!(first, PeerMsg::Welcome { .. }), "{first:?}");
            f.send(PeerMsg::Request { piece: bad_piece }).await.unwrap();
            closed_without_a_piece(&mut f).await;
        }
        // A ticket for secret.bin, edited to name another file, group or user: bad signature.
        let mut edits: Vec<Ticket> = Vec::new();
        let mut t = ticket.clone();
        t.claims.file_name = "other.bin".into();
        edits.push(t);
        let mut t = ticket.clone();
        t.claims.group = "g2".into();
        t.claims.file_name = "g2only.bin".into();
        edits.push(t);
        let mut t = ticket.clone();
        t.claims.expires_unix = u64::MAX;
        edits.push(t);
        let mut t = ticket.clone();
        t.signature = vec![0; 64];
        edits.push(t);
        for t in edits {
            let (_f, first) = hello(to_a, t).await;
            refused_because(&first, "signature");
        }
        // Requests before Hello: no data, closed.
        let mut f = fakepeer::tls_connect(to_a.0, to_a.2, to_a.1).await.unwrap();
        f.send(PeerMsg::Request { piece: 0 }).await.unwrap();
        closed_without_a_piece(&mut f).await;
        // The genuine ticket, once expired.
        tokio::time::sleep(Duration::from_millis(3200)).await;
        let (_f, first) = hello(to_a, ticket.clone()).await;
        refused_because(&first, "expired");
    });
    assert!(a.log().contains("refused peer"), "refusals are logged");
}

#[test]
fn outsiders_non_members_and_pending_members_get_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let a = Peer::start(&tmp.path().join("a"), &tracker);
    user(&a, "a");
    a.ok(&["create_group", "g1"]);
    let f = tmp.path().join("a").join("f.bin");
    random_file(&f, 100_000);
    a.ok(&["upload_file", f.to_str().unwrap(), "g1"]);
    a.ok(&["create_user", "pending", "pw-p"]);
    a.ok(&["create_user", "member", "pw-x"]);
    let real = a.json(&["list_files", "g1"]);
    let sha = real["files"][0]["sha1"].as_str().unwrap().to_string();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Outsider: no token at all, a made-up token.
        let mut o = Raw::connect(tracker.addr).await;
        for token in [None, Some("00".repeat(32))] {
            o.token = token;
            for call in [
                Call::ListGroups,
                Call::ListFiles { group: "g1".into() },
                Call::GetFile {
                    group: "g1".into(),
                    file: "f.bin".into(),
                },
                Call::JoinGroup { group: "g1".into() },
                Call::Heartbeat,
            ] {
                let r = o.call(call.clone()).await;
                assert_eq!(code(&r), Some(ErrorCode::InvalidSession), "{call:?}: {r:?}");
            }
        }
        // Logged in but pending (asked to join, not accepted) — the same as a non-member.
        let mut p = Raw::connect(tracker.addr).await;
        assert!(matches!(
            login(&mut p, "pending", "pw-p").await,
            Response::LoggedIn(_)
        ));
        p.call(Call::JoinGroup { group: "g1".into() }).await;
        let data = vec![7u8; 1000];
        for call in [
            Call::ListFiles { group: "g1".into() },
            Call::GetFile {
                group: "g1".into(),
                file: "f.bin".into(),
            },
            Call::ListRequests { group: "g1".into() },
            Call::AcceptRequest {
                group: "g1".into(),
                user: "pending".into(),
            },
            Call::Share {
                group: "g1".into(),
                meta: fakepeer::meta_for("planted.bin", &data, 16 * 1024).into(),
                complete: true,
            },
        ] {
            let r = p.call(call.clone()).await;
            assert_eq!(code(&r), Some(ErrorCode::Forbidden), "{call:?}: {r:?}");
        }
        // A (malicious) member: cannot run the group, cannot replace a file's content, cannot
        // withdraw somebody else's share.
        let mut m = Raw::connect(tracker.addr).await;
        assert!(matches!(
            login(&mut m, "member", "pw-x").await,
            Response::LoggedIn(_)
        ));
        m.call(Call::JoinGroup { group: "g1".into() }).await;
        a.ok(&["accept_request", "g1", "member"]);
        for call in [
            Call::AcceptRequest {
                group: "g1".into(),
                user: "pending".into(),
            },
            Call::RejectRequest {
                group: "g1".into(),
                user: "pending".into(),
            },
        ] {
            let r = m.call(call.clone()).await;
            assert_eq!(code(&r), Some(ErrorCode::Forbidden), "{call:?}: {r:?}");
        }
        // Same name and size as the real f.bin, other content.
        let meta = fakepeer::meta_for("f.bin", &vec![7u8; 100_000], 512 * 1024);
        let r = m
            .call(Call::Share {
                group: "g1".into(),
                meta: meta.into(),
                complete: true,
            })
            .await;
        assert_eq!(code(&r), Some(ErrorCode::Conflict), "{r:?}");
        let r = m
            .call(Call::StopShare {
                group: "g1".into(),
                file: "f.bin".into(),
            })
            .await;
        assert!(code(&r).is_some(), "nothing of the member's to stop: {r:?}");
    });
    let after = a.json(&["list_files", "g1"]);
    assert_eq!(after["files"].as_array().unwrap().len(), 1, "{after}");
    assert_eq!(after["files"][0]["sha1"], sha.as_str());
    assert_eq!(after["files"][0]["seeders_online"], 1, "{after}");
    assert_eq!(
        a.json(&["list_requests", "g1"])["users"][0],
        "pending",
        "still pending"
    );
}

#[test]
fn session_tokens_are_random_revoked_on_logout_and_expire() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = ConfiguredTracker::start(
        &tmp.path().join("t"),
        "heartbeat_secs = 1\npeer_timeout_secs = 2\nsession_ttl_secs = 2\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = Raw::connect(tracker.addr).await;
        c.call(Call::CreateUser {
            user: "u".into(),
            password: "pw-u".into(),
        })
        .await;
        // Random: two logins of the same user get unrelated 256-bit tokens. Two daemons (two
        // device keys): a second login with the same key would replace the first session.
        let mut tokens = Vec::new();
        for _ in 0..2 {
            c.device = fakepeer::DeviceKey::generate();
            login(&mut c, "u", "pw-u").await;
            tokens.push(c.token.clone().unwrap());
        }
        assert_ne!(tokens[0], tokens[1]);
        for t in &tokens {
            assert_eq!(t.len(), 64, "{t}");
            assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        // Revoked on logout: the token is refused from then on, on any connection; the other
        // session of the same user is untouched.
        c.token = Some(tokens[0].clone());
        assert!(matches!(c.call(Call::Logout).await, Response::Ok { .. }));
        let mut replay = Raw::connect(tracker.addr).await;
        replay.token = Some(tokens[0].clone());
        for call in [Call::Heartbeat, Call::ListGroups, Call::Logout] {
            let r = replay.call(call).await;
            assert_eq!(code(&r), Some(ErrorCode::InvalidSession), "{r:?}");
        }
        c.token = Some(tokens[1].clone());
        assert!(matches!(
            c.call(Call::ListGroups).await,
            Response::Groups(_)
        ));
        // Expiring: heartbeats keep it alive past the TTL; silence lets it expire.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            assert!(matches!(c.call(Call::Heartbeat).await, Response::Ok { .. }));
        }
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let r = c.call(Call::ListGroups).await;
        assert_eq!(code(&r), Some(ErrorCode::InvalidSession), "{r:?}");
    });
}

#[test]
fn failed_logins_are_rate_limited_per_user_and_per_address() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut setup = Raw::connect(tracker.addr).await;
        for u in ["victim", "other", "third"] {
            setup
                .call(Call::CreateUser {
                    user: u.into(),
                    password: format!("pw-{u}"),
                })
                .await;
        }
        // Per user: five wrong passwords for `victim` from 127.0.0.2 …
        let mut guesser = Raw::connect_from(tracker.addr, ip("127.0.0.2")).await;
        for i in 0..5 {
            let r = login(&mut guesser, "victim", &format!("guess{i}")).await;
            assert_eq!(code(&r), Some(ErrorCode::AuthFailed), "{r:?}");
        }
        let r = login(&mut guesser, "victim", "pw-victim").await;
        assert_eq!(code(&r), Some(ErrorCode::RateLimited), "{r:?}");
        // … block `victim` from any address, even with the right password, for a while …
        let mut elsewhere = Raw::connect_from(tracker.addr, ip("127.0.0.3")).await;
        let r = login(&mut elsewhere, "victim", "pw-victim").await;
        match &r {
            Response::Error {
                code: ErrorCode::RateLimited,
                message,
            } => assert!(message.contains("try again in"), "{message}"),
            other => panic!("{other:?}"),
        }
        // … but not other users from other addresses.
        assert!(matches!(
            login(&mut elsewhere, "other", "pw-other").await,
            Response::LoggedIn(_)
        ));
        // Per address: five failures spread over five names from 127.0.0.4 block that address
        // for every user (correct passwords included), and only that address.
        let mut sprayer = Raw::connect_from(tracker.addr, ip("127.0.0.4")).await;
        for i in 0..5 {
            let r = login(&mut sprayer, &format!("name{i}"), "123456").await;
            assert_eq!(code(&r), Some(ErrorCode::AuthFailed), "{r:?}");
        }
        let r = login(&mut sprayer, "third", "pw-third").await;
        assert_eq!(code(&r), Some(ErrorCode::RateLimited), "{r:?}");
        let mut fine = Raw::connect_from(tracker.addr, ip("127.0.0.5")).await;
        assert!(matches!(
            login(&mut fine, "third", "pw-third").await,
            Response::LoggedIn(_)
        ));
        // An unknown user and a wrong password get the same answer.
        let mut probe = Raw::connect_from(tracker.addr, ip("127.0.0.6")).await;
        let (a, b) = (
            login(&mut probe, "nosuchuser", "x").await,
            login(&mut probe, "other", "x").await,
        );
        assert_eq!(a, b, "no user enumeration through login");
    });
}

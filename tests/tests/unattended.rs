//! Issue #12, "restart without a human": a restarted minitorrd logs itself back in with its
//! device key, replaces its old session at once, and stays out once revoked or logged out; one
//! daemon per state dir; login returns at once.

use std::time::{Duration, Instant};

use minitorr_e2e::*;

fn seeders(p: &Peer, group: &str) -> u64 {
    p.json(&["list_files", group])["files"][0]["seeders_online"]
        .as_u64()
        .unwrap_or(0)
}

fn logged_in_as(p: &Peer) -> Option<String> {
    p.json(&["status"])["user"].as_str().map(str::to_string)
}

#[test]
fn a_killed_seeder_comes_back_by_itself_and_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, mut alice, bob) = alice_and_bob_in_g1(dir.path());
    let file = dir.path().join("a.bin");
    random_file(&file, 300_000);
    alice.ok(&["upload_file", file.to_str().unwrap(), "g1"]);
    assert_eq!(seeders(&bob, "g1"), 1);

    alice.restart(); // SIGKILL, then start again: nobody types a password
    wait_until(
        "alice logs herself back in",
        Duration::from_secs(20),
        || logged_in_as(&alice).as_deref() == Some("alice"),
    );
    let status = alice.json(&["status"]);
    assert!(
        status["auto_login"].as_str().unwrap().contains("logged in"),
        "{status}"
    );
    assert_eq!(status["tracker_reachable"], true, "{status}");
    // The old session was replaced at once: never two seeders for one daemon.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let n = seeders(&bob, "g1");
        assert!(n <= 1, "one daemon listed as {n} seeders after its restart");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(seeders(&bob, "g1"), 1, "shared again after the restart");
    // And it serves: bob downloads it from the restarted alice.
    let dl = dir.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    private_dir(&dl);
    bob.ok(&["download_file", "g1", "a.bin", dl.to_str().unwrap()]);
    bob.wait_download("g1", "a.bin", Duration::from_secs(30));
    assert_eq!(sha1_file(&dl.join("a.bin")), sha1_file(&file));
}

#[test]
fn devices_revoke_and_logout_end_the_automatic_login() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let mut pi = Peer::start_with(&dir.path().join("pi"), &[tracker.addr], &[]);
    let laptop = Peer::start(&dir.path().join("laptop"), &tracker);
    user(&pi, "alice");
    laptop.ok(&["login", "alice", "pw-of-someone"]);
    let list = laptop.json(&["devices"]);
    let devices = list["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "{list}");
    assert_eq!(
        devices.iter().filter(|d| d["current"] == true).count(),
        1,
        "{list}"
    );
    let human = laptop.ok(&["devices"]);
    assert!(human.contains("active"), "{human}");
    // Name of pi's device: the one that is not current on the laptop.
    let pi_name = devices.iter().find(|d| d["current"] == false).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    laptop.ok(&["revoke_device", &pi_name]);
    pi.restart();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(logged_in_as(&pi), None, "a revoked device stays logged out");
    let st = pi.json(&["status"]);
    assert!(
        st["auto_login"].as_str().unwrap().contains("revoked"),
        "{st}"
    );

    // A password login vouches for it again; then logout ends the automatic login for good.
    pi.ok(&["login", "alice", "pw-of-someone"]);
    pi.ok(&["logout"]);
    pi.restart();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(logged_in_as(&pi), None, "logged out stays logged out");
    let st = pi.json(&["status"]);
    assert!(
        st["auto_login"].as_str().unwrap().contains("logged out"),
        "{st}"
    );
}

#[test]
fn a_second_daemon_on_the_same_state_dir_exits_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let first = Peer::start(&dir.path().join("p"), &tracker);
    let out = std::process::Command::new(bin("minitorrd"))
        .arg("--socket")
        .arg(dir.path().join("other.sock"))
        .arg("--state-dir")
        .arg(first.dir.join("state"))
        .arg("--tracker")
        .arg(tracker.addr.to_string())
        .arg("127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("another minitorrd") && err.contains("pid"),
        "{err}"
    );
    assert!(
        err.contains(first.dir.join("state").to_str().unwrap()),
        "{err}"
    );
    assert!(
        first.json(&["status"])["version"].is_string(),
        "the first one runs on"
    );
}

#[test]
fn login_returns_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let p = Peer::start(&dir.path().join("p"), &tracker);
    p.ok(&["create_user", "alice", "pw-of-someone"]);
    let t = Instant::now();
    p.ok(&["login", "alice", "pw-of-someone"]);
    let took = t.elapsed();
    eprintln!("login took {took:?}");
    assert!(took < Duration::from_secs(2), "login took {took:?}");
}

/// A hostile client on the tracker protocol: a replayed device login, a reused nonce and a
/// forged signature are refused; only the key holder gets in, once per nonce.
#[test]
fn replayed_or_forged_device_logins_are_refused_over_the_wire() {
    use minitorr_e2e::fakepeer::{DeviceKey, TrackerClient};
    use minitorr_proto::tracker::{Call, ErrorCode, Response};
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = TrackerClient::connect(tracker.addr).await;
        c.call(Call::CreateUser {
            user: "u".into(),
            password: "pw-u".into(),
        })
        .await;
        c.login("u", "pw-u", "127.0.0.1:9".parse().unwrap()).await;
        let key = c.device.public_bytes();
        let mut fresh = TrackerClient::connect(tracker.addr).await;
        let signed = |c: &DeviceKey, nonce: [u8; 32], tracker_id: [u8; 32]| {
            let msg = minitorr_proto::device::login_message(&nonce, "u", &tracker_id, &key);
            Call::DeviceLogin {
                user: "u".into(),
                device_key: key,
                peer_addr: "127.0.0.1:9".into(),
                nonce,
                signature: c.sign(&msg).to_vec(),
                device_name: "box".into(),
            }
        };
        let challenge = Call::DeviceChallenge {
            user: "u".into(),
            device_key: key,
        };
        let Response::DeviceChallenge {
            nonce, tracker_id, ..
        } = fresh.call(challenge.clone()).await
        else {
            panic!("no challenge")
        };
        let good = signed(&c.device, nonce, tracker_id);
        assert!(matches!(fresh.call(good.clone()).await, Response::LoggedIn(_)));
        // Replayed (same nonce, valid signature), from another connection.
        let mut replay = TrackerClient::connect(tracker.addr).await;
        let r = replay.call(good).await;
        assert!(
            matches!(&r, Response::Error { code: ErrorCode::AuthFailed, message } if message.contains("nonce")),
            "{r:?}"
        );
        // Forged: a fresh nonce signed by someone else's key.
        let Response::DeviceChallenge {
            nonce, tracker_id, ..
        } = replay.call(challenge.clone()).await
        else {
            panic!("no challenge")
        };
        let forged = signed(&DeviceKey::generate(), nonce, tracker_id);
        let r = replay.call(forged).await;
        assert!(
            matches!(&r, Response::Error { code: ErrorCode::AuthFailed, message } if message.contains("signature")),
            "{r:?}"
        );
        // The nonce of the forged attempt is used up, even with the right signature now.
        let late = signed(&c.device, nonce, tracker_id);
        let r = replay.call(late).await;
        assert!(matches!(&r, Response::Error { code: ErrorCode::AuthFailed, .. }), "{r:?}");
    });
}

//! Tracker high availability on a real PostgreSQL: two trackerd processes on one database, the
//! daemons configured with both; `kill -9` of the first mid-session loses no acknowledged
//! write, the daemons carry on through the second without logging in again, and a download
//! that was running keeps running.
//!
//! Needs PostgreSQL: `MINITORR_TEST_POSTGRES` names a server (a role that may create databases;
//! `.ci/run` sets it), else the tests start a throwaway one (`minitorr_e2e::pg`), and fail saying
//! how to install PostgreSQL when its binaries are missing. `MINITORR_SKIP_POSTGRES_TESTS=1`
//! skips them with a loud SKIPPED line.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minitorr_e2e::pg::{psql, TestDatabase};
use minitorr_e2e::*;
use serde_json::Value;

const MIB: usize = 1024 * 1024;

/// The admin URL: `MINITORR_TEST_POSTGRES`, else a throwaway server of this test binary's own
/// (see `minitorr_e2e::pg`); `None` only behind the loud `MINITORR_SKIP_POSTGRES_TESTS=1`.
fn postgres() -> Option<String> {
    pg::admin_url("tracker HA test (tests/tests/ha_postgres.rs)")
}

/// Two trackers on `db`, each with its own (unused) state dir.
fn two_trackers(dir: &Path, db: &TestDatabase) -> (Tracker, Tracker) {
    let args = ["--database-url", db.url.as_str()];
    let a = Tracker::start_args(&dir.join("tracker-a"), &args);
    let b = Tracker::start_args(&dir.join("tracker-b"), &args);
    (a, b)
}

fn names(v: &Value, list: &str, key: Option<&str>) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {v}"))
        .iter()
        .map(|x| match key {
            Some(k) => x[k].as_str().unwrap().to_owned(),
            None => x.as_str().unwrap().to_owned(),
        })
        .collect()
}

fn tracker_of(p: &Peer) -> String {
    p.json(&["status"])["tracker"].as_str().unwrap().to_owned()
}

fn login_count(p: &Peer) -> usize {
    p.log().matches("logged in").count()
}

#[test]
fn kill9_of_one_tracker_loses_no_acknowledged_write_and_sessions_move_to_the_other() {
    let Some(admin) = postgres() else { return };
    let db = TestDatabase::create(&admin, "minitorr_ha");
    let tmp = tempfile::tempdir().unwrap();
    let (mut ta, tb) = two_trackers(tmp.path(), &db);
    let both = [ta.addr, tb.addr];
    let alice = Peer::start_with(&tmp.path().join("alice"), &both, &[]);
    let bob = Peer::start_with(&tmp.path().join("bob"), &both, &[]);

    // Through tracker A: accounts, groups, a request accepted and one left pending, an upload.
    user(&alice, "alice");
    user(&bob, "bob");
    group_with(&alice, "g1", &[(&bob, "bob")]);
    alice.ok(&["create_group", "g2"]);
    bob.ok(&["join_group", "g2"]);
    let file = tmp.path().join("alice").join("notes.bin");
    let sha = random_file(&file, 300_000);
    alice.ok(&["upload_file", file.to_str().unwrap(), "g1"]);
    assert_eq!(tracker_of(&alice), ta.addr.to_string());
    assert_eq!(tracker_of(&bob), ta.addr.to_string());
    let logins = (login_count(&alice), login_count(&bob));

    // Writes keep coming while A dies: every create_group that was acknowledged must exist.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let sock = alice.socket.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let g = format!("burst{i}");
                let out = ctl_at(&sock, &["create_group", &g]);
                if out.status.success() {
                    acked.lock().unwrap().push(g);
                }
                i += 1;
            }
            i
        })
    };
    wait_until("some acknowledged writes", Duration::from_secs(30), || {
        acked.lock().unwrap().len() >= 5
    });
    ta.kill9();
    let killed_at = acked.lock().unwrap().len();
    wait_until(
        "writes acknowledged through B after the kill",
        Duration::from_secs(30),
        || acked.lock().unwrap().len() >= killed_at + 5,
    );
    stop.store(true, Ordering::SeqCst);
    let attempted = writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() + 2 >= attempted,
        "at most the in-flight call may fail: {acked:?} of {attempted}"
    );

    // Both daemons are on B now (bob notices at his next heartbeat), same user, no second login.
    for (p, who) in [(&alice, "alice"), (&bob, "bob")] {
        wait_until("the daemon to move to B", Duration::from_secs(30), || {
            tracker_of(p) == tb.addr.to_string()
        });
        let st = p.json(&["status"]);
        assert_eq!(st["tracker"], tb.addr.to_string(), "{who}: {st}");
        assert_eq!(st["user"], who, "{st}");
        assert_eq!(st["tracker_connected"], true, "{st}");
    }
    assert_eq!(
        (login_count(&alice), login_count(&bob)),
        logins,
        "nobody logged in again"
    );

    // A daemon that only ever knew B sees everything that was acknowledged through A.
    let carol = Peer::start_with(&tmp.path().join("carol"), &[tb.addr], &[]);
    let e = carol.fails(1, &["create_user", "alice", "another-password"]);
    assert!(e.contains("exists"), "alice's account survived: {e}");
    user(&carol, "carol");
    let groups = carol.json(&["list_groups"]);
    let listed = names(&groups, "groups", Some("name"));
    for g in ["g1", "g2"]
        .iter()
        .map(|s| s.to_string())
        .chain(acked.iter().cloned())
    {
        assert!(listed.contains(&g), "{g} acknowledged but lost: {groups}");
    }
    let g1 = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "g1")
        .unwrap()
        .clone();
    assert_eq!(g1["owner"], "alice", "{g1}");

    // bob's accepted membership: he lists g1's files (members only) and sees alice's upload
    // with her online as its seeder (her heartbeats now go to B).
    wait_until("alice seeds through B", Duration::from_secs(30), || {
        let v = bob.json(&["list_files", "g1"]);
        v["files"][0]["seeders_online"].as_u64() == Some(1)
    });
    let v = bob.json(&["list_files", "g1"]);
    assert_eq!(v["files"][0]["name"], "notes.bin", "{v}");
    assert_eq!(v["files"][0]["sha1"], sha.as_str(), "{v}");
    // bob's pending request to g2 is still pending.
    let req = alice.json(&["list_requests", "g2"]);
    assert_eq!(names(&req, "users", None), vec!["bob".to_string()], "{req}");

    // And the service goes on through B: carol joins, alice accepts, carol downloads.
    carol.ok(&["join_group", "g1"]);
    alice.ok(&["accept_request", "g1", "carol"]);
    let dest = tmp.path().join("carol").join("out");
    std::fs::create_dir_all(&dest).unwrap();
    carol.ok(&["download_file", "g1", "notes.bin", dest.to_str().unwrap()]);
    let d = carol.wait_download("g1", "notes.bin", Duration::from_secs(60));
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&dest.join("notes.bin")), sha);
    assert!(
        alice.log().contains("failed over to tracker"),
        "{}",
        alice.log_tail(30)
    );
    drop(tb);
}

#[test]
fn a_download_running_when_its_tracker_is_killed_completes() {
    let Some(admin) = postgres() else { return };
    let db = TestDatabase::create(&admin, "minitorr_ha");
    let tmp = tempfile::tempdir().unwrap();
    let (mut ta, tb) = two_trackers(tmp.path(), &db);
    let both = [ta.addr, tb.addr];

    // A seeder capped at 1 MiB/s: the 6 MiB download is still running when A dies.
    let sdir = tmp.path().join("seed");
    std::fs::create_dir_all(&sdir).unwrap();
    let cfg = sdir.join("minitorrd.toml");
    std::fs::write(&cfg, format!("max_upload_rate = {}\n", MIB)).unwrap();
    let seed = Peer::start_with(&sdir, &both, &["--config", cfg.to_str().unwrap()]);
    let leech = Peer::start_with(&tmp.path().join("leech"), &both, &[]);
    user(&seed, "seed");
    user(&leech, "leech");
    group_with(&seed, "g", &[(&leech, "leech")]);
    let size = 6 * MIB + 4321;
    let src = sdir.join("big.bin");
    let sha = random_file(&src, size);
    seed.ok(&["upload_file", src.to_str().unwrap(), "g"]);

    let dest = tmp.path().join("leech").join("out");
    std::fs::create_dir_all(&dest).unwrap();
    leech.ok(&["download_file", "g", "big.bin", dest.to_str().unwrap()]);
    let done = |p: &Peer| -> u64 {
        let v = p.json(&["show_downloads"]);
        v["downloads"][0]["bytes_done"].as_u64().unwrap_or(0)
    };
    wait_until("the download under way", Duration::from_secs(30), || {
        done(&leech) > 0
    });
    let at_kill = done(&leech);
    assert!(
        at_kill < size as u64,
        "finished before the kill: pick a lower cap"
    );
    ta.kill9();
    let killed = Instant::now();

    let d = leech.wait_download("g", "big.bin", Duration::from_secs(90));
    assert_eq!(d["state"], "complete", "{d}\n{}", leech.log_tail(40));
    assert_eq!(sha1_file(&dest.join("big.bin")), sha, "byte-identical");
    assert!(
        killed.elapsed() > Duration::from_secs(1),
        "the download really was running across the kill ({at_kill} of {size} bytes then)"
    );

    // Both daemons are on B, same sessions; the seeder re-announced there, so a newcomer that
    // only knows B finds it online.
    for p in [&seed, &leech] {
        wait_until("the daemon on B", Duration::from_secs(30), || {
            tracker_of(p) == tb.addr.to_string()
        });
    }
    let newcomer = Peer::start_with(&tmp.path().join("new"), &[tb.addr], &[]);
    user(&newcomer, "new");
    newcomer.ok(&["join_group", "g"]);
    seed.ok(&["accept_request", "g", "new"]);
    wait_until(
        "the seeder online through B",
        Duration::from_secs(30),
        || {
            let v = newcomer.json(&["list_files", "g"]);
            v["files"][0]["seeders_online"].as_u64().unwrap_or(0) >= 1
        },
    );
    assert!(
        seed.log().contains("re-announced shares"),
        "{}",
        seed.log_tail(30)
    );
    drop(tb);
}

/// Present `ticket` to the seeder at `addr` (proving `seeder_key`) over TLS as `device`, the
/// device the ticket is bound to; its first answer.
async fn hello(
    addr: SocketAddr,
    seeder_key: [u8; 32],
    device: &fakepeer::DeviceKey,
    ticket: minitorr_proto::ticket::Ticket,
) -> minitorr_proto::peer::PeerMsg {
    let mut f = fakepeer::tls_connect(addr, device, seeder_key)
        .await
        .unwrap();
    fakepeer::say_hello(&mut f, ticket)
        .await
        .expect("seeder answers Hello")
}

/// Each trackerd signs with its own key file; the database publishes both public keys. A
/// ticket from either tracker opens a share at a seeder logged in at either — including one
/// that logged in before the other tracker (and its key) existed.
#[test]
fn two_trackers_sign_with_their_own_keys_and_every_seeder_accepts_both() {
    use minitorr_proto::tracker::{Call, Response};
    let Some(admin) = postgres() else { return };
    let db = TestDatabase::create(&admin, "minitorr_ha");
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--database-url", db.url.as_str()];
    let ta = Tracker::start_args(&tmp.path().join("tracker-a"), &args);
    let s1 = Peer::start_with(&tmp.path().join("s1"), &[ta.addr], &[]);
    user(&s1, "s1");
    s1.ok(&["create_group", "g"]);
    let src = tmp.path().join("s1/f.bin");
    let sha = random_file(&src, 700 * 1024);
    s1.ok(&["upload_file", src.to_str().unwrap(), "g"]);

    // B (and its key) appear after s1 logged in at A.
    let tb = Tracker::start_args(&tmp.path().join("tracker-b"), &args);
    let key_a = std::fs::read_to_string(ta.dir.join("state/ticket-signing.key")).unwrap();
    let key_b = std::fs::read_to_string(tb.dir.join("state/ticket-signing.key")).unwrap();
    assert_ne!(key_a, key_b, "each tracker has its own key file");
    let secret_rows = psql(&db.url, "SELECT count(*) FROM tracker_key");
    assert_eq!(String::from_utf8_lossy(&secret_rows.stdout).trim(), "0");
    let published = psql(&db.url, "SELECT public_hex FROM ticket_keys");
    let published = String::from_utf8_lossy(&published.stdout).to_string();
    assert_eq!(published.lines().count(), 2, "{published}");
    assert!(!published.contains(key_a.trim()) && !published.contains(key_b.trim()));

    // A real download through B (ticket signed by B's key) from s1, which only knew A's key.
    let s2 = Peer::start_with(&tmp.path().join("s2"), &[tb.addr], &[]);
    user(&s2, "s2");
    s2.ok(&["join_group", "g"]);
    s1.ok(&["accept_request", "g", "s2"]);
    let dest = tmp.path().join("s2/out");
    std::fs::create_dir_all(&dest).unwrap();
    s2.ok(&["download_file", "g", "f.bin", dest.to_str().unwrap()]);
    let d = s2.wait_download("g", "f.bin", Duration::from_secs(60));
    assert_eq!(d["state"], "complete", "{d}\n{}", s2.log_tail(30));
    assert_eq!(sha1_file(&dest.join("f.bin")), sha);

    // Now both seed it. Tickets from A and from B, each shown to both seeders.
    s1.ok(&["create_user", "m", "pw-m"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut tickets = Vec::new();
    for (i, t) in [&ta, &tb].into_iter().enumerate() {
        let ticket = rt.block_on(async {
            let mut c = fakepeer::TrackerClient::connect(t.addr).await;
            c.login("m", "pw-m", "127.0.0.1:9".parse().unwrap()).await;
            if i == 0 {
                c.call(Call::JoinGroup { group: "g".into() }).await;
            }
            c
        });
        if i == 0 {
            s1.ok(&["accept_request", "g", "m"]);
        }
        let mut c = ticket;
        let ticket = rt.block_on(async {
            match c
                .call(Call::GetFile {
                    group: "g".into(),
                    file: "f.bin".into(),
                })
                .await
            {
                Response::File(d) => d.ticket,
                other => panic!("{other:?}"),
            }
        });
        tickets.push((ticket, c.device.clone()));
    }
    assert_ne!(
        tickets[0].0.key, tickets[1].0.key,
        "signed by different keys"
    );
    for (t, device) in &tickets {
        for seeder in [&s1, &s2] {
            let seeder_key = seeder.device_key().public_bytes();
            let m = rt.block_on(hello(seeder.addr, seeder_key, device, t.clone()));
            assert!(
                matches!(m, minitorr_proto::peer::PeerMsg::Welcome { .. }),
                "ticket by {} at {}: {m:?}",
                hex::encode(&t.key[..8]),
                seeder.addr
            );
        }
    }
}

/// Revocation across trackers: the seeder's daemon is subscribed to tracker B only; the member
/// leaves through tracker A. The event row written by A reaches B's subscriber (B polls the
/// shared event table every 250 ms) and the seeder closes the member's open connection.
#[test]
fn an_event_committed_through_one_tracker_reaches_a_daemon_subscribed_to_the_other() {
    use minitorr_e2e::fakepeer::{open_served, time_to_close, FakeMember};
    let Some(admin) = postgres() else { return };
    let db = TestDatabase::create(&admin, "minitorr_ha");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_trackers(dir.path(), &db);
    let seeder = Peer::start(&dir.path().join("seeder"), &b);
    user(&seeder, "alice");
    seeder.ok(&["create_group", "g1"]);
    let file = dir.path().join("f.bin");
    random_file(&file, MIB);
    seeder.ok(&["upload_file", file.to_str().unwrap(), "g1"]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut mallory = rt.block_on(async {
        let mut m = FakeMember::create(a.addr, "mallory").await;
        m.join("g1").await;
        m
    });
    seeder.ok(&["accept_request", "g1", "mallory"]);
    let took = rt.block_on(async {
        let t = mallory.ticket("g1", "f.bin").await;
        let mut conn = open_served(seeder.addr, t).await;
        let t0 = Instant::now();
        mallory.leave("g1").await;
        time_to_close(&mut conn, Duration::from_secs(10))
            .await
            .expect("connection still open 10 s after leaving through the other tracker");
        t0.elapsed()
    });
    eprintln!("cross-tracker revocation latency: {took:?}");
    assert!(tracker_of(&seeder).ends_with(&b.addr.port().to_string()));
}

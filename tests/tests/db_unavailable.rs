//! The tracker's PostgreSQL goes away: tracker requests fail fast with "tracker database
//! unavailable" (not a 30–45 s hang), and the tracker recovers by itself when the database is
//! back. The database is taken away by a proxy in front of it (`faultproxy`): blackholed (a hung
//! network: the case that used to hang) and refusing (a stopped server).
//!
//! Needs PostgreSQL like `ha_postgres.rs` (`minitorr_e2e::pg`: `MINITORR_TEST_POSTGRES`, else a
//! throwaway server; fails saying how to install it; `MINITORR_SKIP_POSTGRES_TESTS=1` skips).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use minitorr_e2e::faultproxy::{FaultProxy, Mode};
use minitorr_e2e::*;

/// `list_groups` while the database is away: exit 1, the clear error, fast (target ~2 s; the
/// margin is for a loaded machine, far below the 30 s it took before).
fn fails_fast(peer: &Peer, what: &str) -> Duration {
    let started = Instant::now();
    let out = peer.ctl(&["--json", "list_groups"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr_of(&out));
    let v = one_json_document(&stdout_of(&out));
    assert_eq!(
        v["error"]["kind"], "tracker_database_unavailable",
        "{what}: {v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tracker database unavailable"),
        "{what}: {v}"
    );
    assert!(took < Duration::from_secs(12), "{what}: took {took:?}");
    let human = peer.fails(1, &["list_groups"]);
    assert!(human.contains("tracker database unavailable"), "{human}");
    took
}

fn recovers(peer: &Peer, what: &str) {
    wait_until(what, Duration::from_secs(60), || {
        peer.ctl(&["list_groups"]).status.success()
    });
}

#[test]
fn database_outage_fails_fast_and_the_tracker_recovers_by_itself() {
    let Some(admin) = pg::admin_url("tracker database outage test (tests/tests/db_unavailable.rs)")
    else {
        return;
    };
    let db = pg::TestDatabase::create(&admin, "minitorr_outage");
    let upstream: SocketAddr = {
        let hostport = db
            .url
            .split('@')
            .next_back()
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        std::net::ToSocketAddrs::to_socket_addrs(hostport)
            .unwrap()
            .next()
            .unwrap()
    };
    let proxy = FaultProxy::start(upstream);
    let url = pg::with_host(&db.url, proxy.addr);
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start_args(&tmp.path().join("tracker"), &["--database-url", &url]);
    let alice = Peer::start(&tmp.path().join("alice"), &tracker);
    user(&alice, "alice");
    alice.ok(&["create_group", "team"]);

    // A hung network: pooled connections and new ones see silence.
    proxy.set(Mode::Blackhole);
    let blackholed = fails_fast(&alice, "blackholed database");
    proxy.set(Mode::Forward);
    recovers(&alice, "tracker works again after the network came back");
    alice.ok(&["create_group", "team2"]);

    // A stopped server: connections closed and refused.
    proxy.set(Mode::Refuse);
    let refused = fails_fast(&alice, "stopped database");
    proxy.set(Mode::Forward);
    recovers(&alice, "tracker works again after the database came back");
    let groups = alice.ok(&["list_groups"]);
    assert!(groups.contains("team2"), "{groups}");
    eprintln!(
        "database unavailable answered after {blackholed:?} (blackholed), {refused:?} (refused)"
    );
    drop(tracker);
}

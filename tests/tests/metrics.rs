//! Operators' metrics (#12 item 7): both daemons serve `GET /metrics` when `metrics_listen` is
//! set, and open no port when it is not. A real trackerd and two real minitorrd do a login, an
//! upload and a download; a plain TCP GET scrapes both, the text must parse, and the counters
//! must have moved.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use minitorr_e2e::*;

/// One sample: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict little parser of the text exposition format: every line is a `# HELP`/`# TYPE`/
/// `# UNIT` comment, `# EOF` (last), or `name{label="value",...} number`.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = vec![];
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end:\n{text}");
    let mut types = BTreeMap::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut f = rest.splitn(3, ' ');
            let (kind, name) = (f.next().unwrap(), f.next().expect("metric name"));
            assert!(
                matches!(kind, "HELP" | "TYPE" | "UNIT"),
                "bad comment {line}"
            );
            if kind == "TYPE" {
                let t = f.next().expect("type");
                assert!(
                    ["counter", "gauge", "histogram", "info", "unknown"].contains(&t),
                    "{line}"
                );
                types.insert(name.to_string(), t.to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut labels = BTreeMap::new();
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label in {line}"));
                    labels.insert(k.to_string(), v.to_string());
                }
                (name, labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        // Every sample belongs to a declared family.
        assert!(
            types.keys().any(|f| name.starts_with(f.as_str())),
            "sample {name} has no # TYPE"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

/// `GET /metrics` over a plain TCP connection; the body.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text"),
        "{head}"
    );
    body.to_string()
}

/// The value of the sample `name` whose labels include `labels` (0 if absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .find(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map_or(0.0, |s| s.value)
}

fn config(dir: &std::path::Path, name: &str, text: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn both_daemons_serve_metrics_that_parse_and_move() {
    let dir = tempfile::tempdir().unwrap();
    // Each start attempt picks its own metrics port (a parallel test may take one), and the
    // port that worked is remembered here.
    let tdir = dir.path().join("tracker");
    let tm = Cell::new(None);
    let tracker = Tracker::start_configured(&tdir, || {
        let m = free_addr();
        tm.set(Some(m));
        let cfg = config(
            &tdir,
            "trackerd.toml",
            &format!("metrics_listen = \"{m}\"\n"),
        );
        vec!["--config".into(), cfg]
    });
    let tm = tm.get().unwrap();
    let peer = |name: &str| {
        let d = dir.path().join(name);
        let m = Cell::new(None);
        let p = Peer::start_configured(&d, &[tracker.addr], || {
            let a = free_addr();
            m.set(Some(a));
            let cfg = config(&d, "minitorrd.toml", &format!("metrics_listen = \"{a}\"\n"));
            vec!["--config".into(), cfg]
        });
        (p, m.get().unwrap())
    };
    let (alice, am) = peer("alice");
    let (bob, bm) = peer("bob");

    let before = parse(&scrape(tm));
    assert_eq!(value(&before, "minitorr_tracker_users", &[]), 0.0);

    user(&alice, "alice");
    // One failed password login too.
    bob.ok(&["create_user", "bob", "pw-of-someone"]);
    let wrong = bob.ctl(&["login", "alice", "wrong-password"]);
    assert!(!wrong.status.success());
    bob.ok(&["login", "bob", "pw-of-someone"]);
    group_with(&alice, "secret-team", &[(&bob, "bob")]);
    let src = dir.path().join("payroll-2026.bin");
    let sha = random_file(&src, 3 * 1024 * 1024 + 17);
    alice.ok(&["upload_file", src.to_str().unwrap(), "secret-team"]);
    let dest = dir.path().join("got.bin");
    bob.ok(&[
        "download_file",
        "secret-team",
        "payroll-2026.bin",
        dest.to_str().unwrap(),
    ]);
    bob.wait_download("secret-team", "payroll-2026.bin", Duration::from_secs(60));
    assert_eq!(sha1_file(&dest), sha);

    // The tracker.
    let text = scrape(tm);
    let t = parse(&text);
    let login_ok = value(
        &t,
        "minitorr_tracker_logins_total",
        &[("method", "password"), ("outcome", "ok")],
    );
    assert!(login_ok >= 2.0, "{text}");
    assert!(
        value(
            &t,
            "minitorr_tracker_logins_total",
            &[("method", "password"), ("outcome", "auth_failed")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        value(
            &t,
            "minitorr_tracker_requests_total",
            &[("kind", "share"), ("outcome", "ok")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        value(
            &t,
            "minitorr_tracker_requests_total",
            &[("kind", "get_file"), ("outcome", "ok")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        value(
            &t,
            "minitorr_tracker_request_duration_seconds_count",
            &[("kind", "login")]
        ) >= 3.0,
        "{text}"
    );
    assert_eq!(value(&t, "minitorr_tracker_users", &[]), 2.0, "{text}");
    assert_eq!(value(&t, "minitorr_tracker_groups", &[]), 1.0, "{text}");
    assert_eq!(value(&t, "minitorr_tracker_files", &[]), 1.0, "{text}");
    assert_eq!(
        value(&t, "minitorr_tracker_sessions_online", &[]),
        2.0,
        "{text}"
    );

    // The downloader and the seeder.
    let size = 3.0 * 1024.0 * 1024.0 + 17.0;
    let btext = scrape(bm);
    let b = parse(&btext);
    assert!(
        value(&b, "minitorr_daemon_received_bytes_total", &[]) >= size,
        "{btext}"
    );
    assert!(
        value(&b, "minitorr_daemon_pieces_verified_total", &[]) >= 1.0,
        "{btext}"
    );
    assert_eq!(
        value(&b, "minitorr_daemon_pieces_failed_total", &[]),
        0.0,
        "{btext}"
    );
    assert_eq!(
        value(&b, "minitorr_daemon_downloads", &[("state", "complete")]),
        1.0,
        "{btext}"
    );
    assert_eq!(
        value(&b, "minitorr_daemon_downloads", &[("state", "failed")]),
        0.0,
        "{btext}"
    );
    let atext = scrape(am);
    let a = parse(&atext);
    assert!(
        value(&a, "minitorr_daemon_sent_bytes_total", &[]) >= size,
        "{atext}"
    );
    assert!(
        value(
            &a,
            "minitorr_daemon_hashing_duration_seconds_count",
            &[("what", "share")]
        ) >= 1.0,
        "{atext}"
    );
    assert!(
        a.iter()
            .any(|s| s.name == "minitorr_daemon_peers_connected"),
        "{atext}"
    );

    // No names in any label or sample: only fixed words.
    for (who, text) in [("trackerd", &text), ("bob", &btext), ("alice", &atext)] {
        for secret in ["alice", "bob", "secret-team", "payroll"] {
            assert!(
                !text.contains(secret),
                "{who}'s metrics name {secret}:\n{text}"
            );
        }
    }

    // Anything but GET /metrics is refused.
    let mut s = TcpStream::connect(tm).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 404 "), "{out}");
}

#[test]
fn no_metrics_port_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let peer = Peer::start(&dir.path().join("p"), &tracker);
    assert_eq!(
        listening_ports(tracker_pid(&tracker)),
        vec![tracker.addr.port()],
        "trackerd listens on its tracker port only"
    );
    assert_eq!(
        listening_ports(peer_pid(&peer)),
        vec![peer.addr.port()],
        "minitorrd listens on its peer port only"
    );
}

#[test]
fn a_non_loopback_metrics_address_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("tracker");
    let port = Cell::new(0);
    let tracker = Tracker::start_configured(&tdir, || {
        port.set(free_port());
        let m = format!("metrics_listen = \"0.0.0.0:{}\"\n", port.get());
        vec!["--config".into(), config(&tdir, "trackerd.toml", &m)]
    });
    let log = tracker.log();
    assert!(log.contains("not a loopback address"), "{log}");
    assert!(listening_ports(tracker_pid(&tracker)).contains(&port.get()));

    let pdir = dir.path().join("peer");
    let pport = Cell::new(0);
    let peer = Peer::start_configured(&pdir, &[tracker.addr], || {
        pport.set(free_port());
        let m = format!("metrics_listen = \"0.0.0.0:{}\"\n", pport.get());
        vec!["--config".into(), config(&pdir, "minitorrd.toml", &m)]
    });
    let log = peer.log_tail(50);
    assert!(log.contains("not a loopback address"), "{log}");
    assert!(listening_ports(peer_pid(&peer)).contains(&pport.get()));
}

/// A metrics port someone else holds fails the daemon's start with an error naming it (it is
/// bound before anything runs, so the failure cannot go unnoticed), and the test fixtures then
/// choose that port again with the daemon's own, as they must when parallel tests race for
/// ports.
#[test]
fn a_taken_metrics_port_fails_the_start_and_is_chosen_again() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let pdir = dir.path().join("peer");
    let attempts = Cell::new(0);
    let used = Cell::new(None);
    let peer = Peer::start_configured(&pdir, &[tracker.addr], || {
        attempts.set(attempts.get() + 1);
        let m = if attempts.get() == 1 {
            taken_addr
        } else {
            free_addr()
        };
        used.set(Some(m));
        let text = format!("metrics_listen = \"{m}\"\n");
        vec!["--config".into(), config(&pdir, "minitorrd.toml", &text)]
    });
    assert!(attempts.get() >= 2, "the first attempt must fail");
    let log = peer.log_tail(400);
    assert!(
        log.contains(&taken_addr.to_string()) && log.contains("in use"),
        "the failed start names the taken address: {log}"
    );
    let m = used.get().unwrap();
    assert_ne!(m, taken_addr);
    assert!(
        scrape(m).contains("minitorr_"),
        "metrics served on the new port"
    );
    drop(taken);
}

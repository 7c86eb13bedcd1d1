//! TLS on the daemon↔tracker link, end to end: a trackerd with a self-signed certificate made
//! here, daemons that pin its fingerprint (or trust it as a CA file), a wrong pin, and the
//! refusal of plain TCP on a network address.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use minitorr_e2e::*;

struct Cert {
    cert: PathBuf,
    key: PathBuf,
}

fn self_signed(dir: &Path) -> Cert {
    std::fs::create_dir_all(dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = dir.join("tracker-cert.pem");
    let key = dir.join("tracker-key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    Cert { cert, key }
}

fn tls_tracker(dir: &Path, c: &Cert) -> Tracker {
    Tracker::start_args(
        dir,
        &[
            "--tls-cert",
            c.cert.to_str().unwrap(),
            "--tls-key",
            c.key.to_str().unwrap(),
        ],
    )
}

/// What `trackerd --print-cert-fingerprint` says for `c`.
fn fingerprint(c: &Cert) -> String {
    let out = Command::new(bin("trackerd"))
        .arg("--print-cert-fingerprint")
        .arg("--tls-cert")
        .arg(&c.cert)
        .arg("--tls-key")
        .arg(&c.key)
        .env_remove("TRACKERD_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let fp = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(fp.len(), 64, "{fp}");
    fp
}

#[test]
fn daemons_pinning_the_tracker_certificate_log_in_and_download() {
    let tmp = tempfile::tempdir().unwrap();
    let c = self_signed(&tmp.path().join("pki"));
    let tracker = tls_tracker(&tmp.path().join("t"), &c);
    let fp = fingerprint(&c);
    // Pins are accepted in upper case and with colons, too.
    let colons = fp
        .as_bytes()
        .chunks(2)
        .map(|p| std::str::from_utf8(p).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let seed = Peer::start_with(
        &tmp.path().join("seed"),
        &[tracker.addr],
        &["--tracker-cert-sha256", &fp],
    );
    let leech = Peer::start_with(
        &tmp.path().join("leech"),
        &[tracker.addr],
        &["--tracker-cert-sha256", &colons],
    );
    // A third daemon trusts the certificate as a CA file instead.
    let by_ca = Peer::start_with(
        &tmp.path().join("ca"),
        &[tracker.addr],
        &["--tracker-ca", c.cert.to_str().unwrap()],
    );
    user(&seed, "seed");
    user(&leech, "leech");
    user(&by_ca, "viaca");
    group_with(&seed, "g", &[(&leech, "leech"), (&by_ca, "viaca")]);

    let src = tmp.path().join("seed").join("f.bin");
    let sha = random_file(&src, 1_500_000);
    seed.ok(&["upload_file", src.to_str().unwrap(), "g"]);
    for p in [&leech, &by_ca] {
        let dest = p.dir.join("out");
        std::fs::create_dir_all(&dest).unwrap();
        p.ok(&["download_file", "g", "f.bin", dest.to_str().unwrap()]);
        let d = p.wait_download("g", "f.bin", Duration::from_secs(60));
        assert_eq!(d["state"], "complete", "{d}");
        assert_eq!(sha1_file(&dest.join("f.bin")), sha);
    }
    assert!(
        tracker.log().contains("tracker link uses TLS"),
        "{}",
        tracker.log()
    );
    assert!(
        !tracker.log().contains("not encrypted"),
        "{}",
        tracker.log()
    );
    assert!(
        !seed.log().contains("not encrypted"),
        "{}",
        seed.log_tail(20)
    );
}

#[test]
fn a_wrong_pin_or_no_tls_fails_login_clearly_and_promptly() {
    let tmp = tempfile::tempdir().unwrap();
    let c = self_signed(&tmp.path().join("pki"));
    let tracker = tls_tracker(&tmp.path().join("t"), &c);
    let other = self_signed(&tmp.path().join("other"));
    let wrong = fingerprint(&other);

    let p = Peer::start_with(
        &tmp.path().join("p"),
        &[tracker.addr],
        &["--tracker-cert-sha256", &wrong],
    );
    let start = Instant::now();
    let err = p.fails(1, &["login", "alice", "pw-alice"]);
    assert!(
        err.contains("tracker certificate does not match the pinned fingerprint"),
        "{err}"
    );
    assert!(
        err.contains(&fingerprint(&c)),
        "names what was presented: {err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(p.json(&["status"])["tracker_connected"], false);

    // A daemon not configured for TLS gets an error, not a hang.
    let plain = Peer::start_with(&tmp.path().join("plain"), &[tracker.addr], &[]);
    let start = Instant::now();
    let err = plain.fails(1, &["create_user", "bob", "pw-bob"]);
    assert!(err.contains("tracker"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    // The plaintext create_user never reached the tracker: with the right pin it works now.
    let good = Peer::start_with(
        &tmp.path().join("good"),
        &[tracker.addr],
        &["--tracker-cert-sha256", &fingerprint(&c)],
    );
    good.ok(&["create_user", "bob", "pw-bob"]);
    good.ok(&["login", "bob", "pw-bob"]);
}

#[test]
fn plain_tcp_on_a_network_address_is_refused_unless_explicitly_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let run = |extra: &[&str]| {
        Command::new(bin("trackerd"))
            .args(["--listen", &format!("0.0.0.0:{port}"), "--state-dir"])
            .arg(tmp.path().join("state"))
            .args(extra)
            .env_remove("TRACKERD_CONFIG")
            .env_remove("TRACKERD_ALLOW_PLAINTEXT")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = run(&[]).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing") && err.contains("0.0.0.0") && err.contains("allow_plaintext"),
        "{err}"
    );

    // Explicitly allowed: it starts, with a warning.
    let mut child = run(&["--allow-plaintext"]);
    wait_until("trackerd to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tracker link is not encrypted"), "{err}");

    // The daemon side: a tracker off loopback without TLS is a config error (exit 2).
    let out = Command::new(bin("minitorrd"))
        .args(["--tracker", "192.0.2.10:5000", "--socket"])
        .arg(tmp.path().join("d.sock"))
        .arg("--state-dir")
        .arg(tmp.path().join("d"))
        .env_remove("MINITORRD_CONFIG")
        .env_remove("MINITORRD_ALLOW_PLAINTEXT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("192.0.2.10:5000") && err.contains("not encrypted"),
        "{err}"
    );
}

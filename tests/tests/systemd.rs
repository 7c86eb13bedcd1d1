//! Running under systemd: the shipped units pass `systemd-analyze verify` without a single
//! warning, and both daemons speak the `Type=notify` protocol correctly — `READY=1` only once
//! their sockets accept connections, `STOPPING=1` on SIGTERM, then exit status 0.
//!
//! (trackerd's own reload/kill -9 lifecycle is in trackerd/tests/binary.rs; here it is checked
//! side by side with minitorrd, which has no test of its own for this.)

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use minitorr_e2e::*;

/// A copy of a shipped unit whose ExecStart= names the freshly built binary (verify checks that
/// the command exists and is executable), plus a man tree from contrib/man so that the units'
/// `Documentation=man:…` references are checked too.
fn stage(dir: &Path, unit: &str) -> PathBuf {
    let text = std::fs::read_to_string(workspace_root().join("contrib/systemd").join(unit))
        .unwrap_or_else(|e| panic!("contrib/systemd/{unit}: {e}"));
    assert!(
        text.contains("ExecStart=/usr/local/bin/"),
        "{unit}: ExecStart no longer names /usr/local/bin (install.sh and this test assume it)"
    );
    let bins = format!("{}/", bin_dir().display());
    let staged = dir.join(unit);
    std::fs::write(&staged, text.replace("/usr/local/bin/", &bins)).unwrap();
    let man = dir.join("man");
    if !man.exists() {
        for page in std::fs::read_dir(workspace_root().join("contrib/man")).unwrap() {
            let page = page.unwrap().path();
            let section = page.extension().unwrap().to_str().unwrap().to_string();
            let to = man.join(format!("man{section}"));
            std::fs::create_dir_all(&to).unwrap();
            std::fs::copy(&page, to.join(page.file_name().unwrap())).unwrap();
        }
    }
    staged
}

/// Run `systemd-analyze [--user] verify UNIT`; returns (success, stderr+stdout).
fn verify(analyze: &Path, dir: &Path, unit: &Path, user: bool) -> (bool, String) {
    let runtime = dir.join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let mut cmd = Command::new(analyze);
    if user {
        // The user manager needs a runtime dir (for %t); there is no session here.
        cmd.arg("--user");
    }
    let out = cmd
        .arg("verify")
        .arg(unit)
        .env("MANPATH", dir.join("man"))
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("SYSTEMD_LOG_COLOR", "0")
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), text)
}

/// Lines of verify's output that are about `unit` (the host's own units may have warnings of
/// their own; those are not ours to fail on).
fn complaints<'a>(text: &'a str, unit: &str) -> Vec<&'a str> {
    let stem = unit.trim_end_matches(".service");
    text.lines()
        .filter(|l| !l.trim().is_empty() && l.contains(stem))
        .collect()
}

#[test]
fn shipped_units_verify_without_warnings() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (unit, user) in [("trackerd.service", false), ("minitorrd.service", true)] {
        let staged = stage(dir.path(), unit);
        let (ok, text) = verify(&analyze, dir.path(), &staged, user);
        let bad = complaints(&text, unit);
        assert!(
            ok && bad.is_empty(),
            "systemd-analyze {}verify contrib/systemd/{unit} complains:\n{text}",
            if user { "--user " } else { "" }
        );
    }
}

/// The check above would be worthless if verify's warnings did not reach it: a typo'd key only
/// produces a warning (exit status 0), so it must be caught from the output.
#[test]
fn unit_check_catches_unknown_keys_and_missing_man_pages() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let staged = stage(dir.path(), "trackerd.service");
    let original = std::fs::read_to_string(&staged).unwrap();

    let typo = original.replacen("[Service]\n", "[Service]\nProtectEverything=yes\n", 1);
    std::fs::write(&staged, typo).unwrap();
    let (_, out) = verify(&analyze, dir.path(), &staged, false);
    assert!(
        complaints(&out, "trackerd.service")
            .iter()
            .any(|l| l.contains("ProtectEverything")),
        "{out}"
    );

    let no_page = original.replacen("[Unit]\n", "[Unit]\nDocumentation=man:nope(5)\n", 1);
    std::fs::write(&staged, no_page).unwrap();
    let (ok, out) = verify(&analyze, dir.path(), &staged, false);
    assert!(
        !ok && complaints(&out, "trackerd.service")
            .iter()
            .any(|l| l.contains("nope")),
        "{out}"
    );
}

fn sigterm(child: &Child) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
}

/// Wait for READY=1 (nothing else may come first), then check at once — no retry — that
/// everything `reachable` names accepts connections.
fn expect_ready(notify: &NotifySocket, who: &str, child: &mut Child, reachable: &dyn Fn()) {
    let start = Instant::now();
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{who} exited before READY=1"
        );
        match notify.recv(Duration::from_millis(100)) {
            Some(msg) => {
                assert!(
                    msg.lines().any(|l| l == "READY=1"),
                    "{who}: first notification is not READY=1: {msg:?}"
                );
                assert!(!msg.contains("STOPPING=1"), "{who}: {msg:?}");
                break;
            }
            None => assert!(
                start.elapsed() < Duration::from_secs(30),
                "{who}: no READY=1 within 30 s"
            ),
        }
    }
    reachable();
}

fn expect_clean_stop(notify: &NotifySocket, who: &str, mut child: Child) {
    sigterm(&child);
    let msg = notify.expect("STOPPING=1", Duration::from_secs(5));
    assert!(
        msg.lines().any(|l| l == "STOPPING=1"),
        "{who}: expected STOPPING=1, got {msg:?}"
    );
    let status = wait_exit(&mut child, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{who} still running 10 s after SIGTERM"));
    assert!(
        status.success(),
        "{who} exited with {status:?} after SIGTERM"
    );
}

#[test]
fn both_daemons_notify_ready_when_accepting_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // minitorrd's control socket goes here: its directory must be private.
    private_dir(d);

    // trackerd: READY=1 only after the database is open and the port is bound.
    let tracker_notify = NotifySocket::bind(d, "tracker-notify.sock");
    let tracker_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut tracker = Command::new(bin("trackerd"))
        .arg("--listen")
        .arg(tracker_addr.to_string())
        .arg("--state-dir")
        .arg(d.join("tracker"))
        .env("NOTIFY_SOCKET", &tracker_notify.path)
        .env_remove("TRACKERD_CONFIG")
        .env_remove("CONFIGURATION_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("trackerd.log")).unwrap())
        .spawn()
        .unwrap();
    expect_ready(&tracker_notify, "trackerd", &mut tracker, &|| {
        TcpStream::connect(tracker_addr).expect("trackerd said READY=1 but refuses connections");
    });

    // minitorrd: READY=1 only after its peer port and control socket are bound.
    let peer_notify = NotifySocket::bind(d, "peer-notify.sock");
    let peer_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let socket = d.join("ctl.sock");
    let mut peer = Command::new(bin("minitorrd"))
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(d.join("peer"))
        .arg("--tracker")
        .arg(tracker_addr.to_string())
        .arg(peer_addr.to_string())
        .env("NOTIFY_SOCKET", &peer_notify.path)
        .env_remove("MINITORR_SOCKET")
        .env_remove("MINITORRD_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("minitorrd.log")).unwrap())
        .spawn()
        .unwrap();
    expect_ready(&peer_notify, "minitorrd", &mut peer, &|| {
        UnixStream::connect(&socket)
            .expect("minitorrd said READY=1 but its control socket refuses");
        TcpStream::connect(peer_addr).expect("minitorrd said READY=1 but its peer port refuses");
    });
    // And it answers there, talking to the tracker.
    let out = ctl_at(&socket, &["create_user", "alice", "pw-a"]);
    assert!(out.status.success(), "{}", stderr_of(&out));

    // SIGTERM: STOPPING=1, exit 0, the control socket removed.
    expect_clean_stop(&peer_notify, "minitorrd", peer);
    assert!(!socket.exists(), "minitorrd left its control socket behind");
    expect_clean_stop(&tracker_notify, "trackerd", tracker);
}

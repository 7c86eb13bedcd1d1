//! minitorrd's control socket: stale files, a second daemon on the same path, permissions,
//! clean shutdown.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use minitorr_e2e::*;

#[test]
fn stale_socket_file_is_replaced_and_socket_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let pdir = dir.path().join("alice");
    std::fs::create_dir_all(&pdir).unwrap();
    // A socket file left behind by a daemon that died: bound, then the listener dropped.
    let sock = pdir.join("ctl.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(std::fs::metadata(&sock).unwrap().file_type().is_socket());
    assert!(
        std::os::unix::net::UnixStream::connect(&sock).is_err(),
        "the stale socket must refuse"
    );

    let alice = Peer::start(&pdir, &tracker);
    assert_eq!(alice.socket, sock);
    let st = alice.json(&["status"]);
    assert_eq!(st["user"], serde_json::Value::Null, "{st}");
    user(&alice, "alice");
    alice.ok(&["create_group", "g1"]);

    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "control socket mode is {:o}",
        meta.permissions().mode() & 0o777
    );
}

#[test]
fn socket_in_a_missing_directory_gets_a_private_directory() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let rundir = dir.path().join("run").join("minitorr");
    let sock = rundir.join("minitorrd.sock");
    let mut child = Command::new(bin("minitorrd"))
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--tracker")
        .arg(tracker.addr.to_string())
        .arg(format!("127.0.0.1:{}", free_port()))
        .env_remove("MINITORR_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("minitorrd control socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let out = ctl_at(&sock, &["status"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mode = std::fs::metadata(&rundir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "socket directory mode is {mode:o}");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode is {mode:o}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn second_daemon_on_the_same_socket_refuses_and_leaves_the_first_alone() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let first = Peer::start(&dir.path().join("first"), &tracker);
    user(&first, "alice");

    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let log = second_dir.join("minitorrd.log");
    let mut second = Command::new(bin("minitorrd"))
        .arg("--socket")
        .arg(&first.socket)
        .arg("--state-dir")
        .arg(second_dir.join("state"))
        .arg("--tracker")
        .arg(tracker.addr.to_string())
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "info")
        .env_remove("MINITORR_SOCKET")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut second, Duration::from_secs(10))
        .expect("second minitorrd still running after 10 s");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success(),
        "second minitorrd exited {status:?}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("already running"),
        "second minitorrd's stderr does not say 'already running':\n{stderr}"
    );

    // The first daemon still owns the socket (file not removed, still answering, same login).
    assert!(
        first.socket.exists(),
        "the second daemon removed the first one's socket"
    );
    let st = first.json(&["status"]);
    assert_eq!(st["user"], "alice", "{st}");
    first.ok(&["create_group", "g1"]);
}

#[test]
fn sigterm_stops_minitorrd_cleanly_and_removes_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, mut alice, bob) = alice_and_bob_in_g1(dir.path());

    let status = alice
        .terminate_within(Duration::from_secs(10))
        .expect("minitorrd ignored SIGTERM for 10 s");
    assert!(
        status.success(),
        "minitorrd exited {status:?} on SIGTERM:\n{}",
        alice.log_tail(20)
    );
    assert!(
        !alice.socket.exists(),
        "socket file left behind after a clean stop"
    );
    let out = ctl_at(&alice.socket, &["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "minitorrctl against a stopped daemon: {}",
        stderr_of(&out)
    );

    // Alice's membership is tracker state: unaffected by her daemon stopping.
    let v = bob.json(&["list_groups"]);
    assert_eq!(v["groups"][0]["members"], 2, "{v}");

    // A new daemon on the same socket and state dir starts and logs in again.
    alice.restart();
    alice.ok(&["login", "alice", "pw-of-someone"]);
    assert_eq!(
        alice.json(&["list_groups"])["groups"][0]["membership"],
        "owner"
    );
}

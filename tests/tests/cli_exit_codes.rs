//! minitorrctl's contract with scripts against real daemons: exit statuses (0 ok, 1 refused,
//! 2 usage, 3 daemon unreachable), one-line stderr, and `--json` = exactly one JSON document.

use std::os::unix::net::UnixListener;

use minitorr_e2e::*;

/// Run `minitorrctl --json …` on `peer`, check the exit status, return the one document.
fn json_doc(peer: &Peer, code: i32, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = peer.ctl(&all);
    assert_eq!(
        out.status.code(),
        Some(code),
        "minitorrctl {all:?}: {}\n{}",
        stdout_of(&out),
        stderr_of(&out)
    );
    one_json_document(&stdout_of(&out))
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let alice = Peer::start(&dir.path().join("alice"), &tracker);
    user(&alice, "alice");
    for args in [
        &["frobnicate"][..],
        &["creategroup", "g1"],
        &["join_group"],
        &["accept_request", "g1"],
        &["create_group", "a/b"],
        &["list_groups", "extra"],
        &["leave_group", "g1", "g2"],
        &[],
    ] {
        let err = alice.fails(2, args);
        assert!(
            !err.trim().is_empty(),
            "{args:?}: usage error without a message"
        );
    }
    // A usage error is reported before the daemon is contacted: nothing was created.
    let v = alice.json(&["list_groups"]);
    assert_eq!(v["groups"].as_array().unwrap().len(), 0, "{v}");

    // Usage errors win even when no daemon is running.
    let missing = dir.path().join("nowhere.sock");
    let out = ctl_at(&missing, &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    // And with --json they are one JSON document too.
    let out = ctl_at(&missing, &["--json", "join_group"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let v = one_json_document(&stdout_of(&out));
    assert_eq!(v["error"]["kind"], "usage", "{v}");
}

#[test]
fn no_daemon_exits_3_and_says_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    // A private directory, as a socket's must be (else minitorrctl refuses it, see
    // local_safety.rs): what is tested here is a missing or stale socket.
    private_dir(dir.path());
    let missing = dir.path().join("minitorrd.sock");
    for args in [
        &["list_groups"][..],
        &["status"],
        &["login", "alice", "pw"],
        &["create_group", "g1"],
    ] {
        let out = ctl_at(&missing, args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr_of(&out));
        let err = stderr_of(&out);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "expected one stderr line, got:\n{err}"
        );
        assert!(
            err.contains(&missing.display().to_string()),
            "stderr does not name the socket: {err}"
        );
        assert!(
            err.contains("Start it with: minitorrd"),
            "stderr does not say how to start minitorrd: {err}"
        );
        assert!(
            stdout_of(&out).is_empty(),
            "stdout must be empty without --json: {}",
            stdout_of(&out)
        );
    }

    // A stale socket file (nobody listening) is the same story.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let out = ctl_at(&stale, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("minitorrd"), "{}", stderr_of(&out));

    // With --json: still exit 3, and exactly one document describing the failure.
    let out = ctl_at(&missing, &["--json", "list_groups"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let v = one_json_document(&stdout_of(&out));
    assert_eq!(v["error"]["kind"], "unreachable", "{v}");
    assert_eq!(v["error"]["exit_code"], 3, "{v}");
}

#[test]
fn json_output_is_exactly_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let alice = Peer::start(&dir.path().join("alice"), &tracker);
    let bob = Peer::start(&dir.path().join("bob"), &tracker);

    // Before login: status works and says nobody is logged in; list_groups is refused (exit 1)
    // with a JSON error document.
    let st = json_doc(&alice, 0, &["status"]);
    assert_eq!(st["user"], serde_json::Value::Null, "{st}");
    assert_eq!(st["tracker"], tracker.addr.to_string(), "{st}");
    let e = json_doc(&alice, 1, &["list_groups"]);
    assert_eq!(e["error"]["kind"], "not_logged_in", "{e}");
    assert_eq!(e["error"]["exit_code"], 1, "{e}");

    user(&alice, "alice");
    user(&bob, "bob");
    let g = json_doc(&alice, 0, &["list_groups"]);
    assert_eq!(g["groups"], serde_json::json!([]), "{g}");

    alice.ok(&["create_group", "g1"]);
    alice.ok(&["create_group", "g2"]);
    bob.ok(&["join_group", "g1"]);

    let g = json_doc(&bob, 0, &["list_groups"]);
    let names: Vec<&str> = g["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["g1", "g2"], "{g}");
    for entry in g["groups"].as_array().unwrap() {
        assert_eq!(entry["owner"], "alice", "{entry}");
        assert_eq!(entry["members"], 1, "{entry}");
    }
    assert_eq!(g["groups"][0]["membership"], "pending", "{g}");

    let r = json_doc(&alice, 0, &["list_requests", "g1"]);
    assert_eq!(r, serde_json::json!({"group": "g1", "users": ["bob"]}));
    let r = json_doc(&alice, 0, &["list_requests", "g2"]);
    assert_eq!(r, serde_json::json!({"group": "g2", "users": []}));

    let st = json_doc(&alice, 0, &["status"]);
    assert_eq!(st["user"], "alice", "{st}");
    assert_eq!(st["tracker_connected"], true, "{st}");
    assert_eq!(st["peer_addr"], alice.addr.to_string(), "{st}");

    // Refusals are one document too, with the message.
    let e = json_doc(&bob, 1, &["list_requests", "g1"]);
    assert_eq!(e["error"]["kind"], "refused", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not the owner of g1"),
        "{e}"
    );
    let e = json_doc(&bob, 1, &["join_group", "nope"]);
    assert_eq!(e["error"]["kind"], "not_found", "{e}");

    // Message-only commands as well.
    let m = json_doc(&alice, 0, &["accept_request", "g1", "bob"]);
    assert!(
        m["message"].as_str().is_some_and(|s| s.contains("bob")),
        "{m}"
    );
}

/// Run minitorrctl on `socket` with `stdin` piped in (no terminal).
fn ctl_with_stdin(socket: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin("minitorrctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("MINITORR_SOCKET")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn passwords_are_read_from_stdin_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.sock");
    // No daemon: exit 3 straight away, without waiting for a password.
    let out = ctl_at(&missing, &["login", "alice"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));

    let tracker = Tracker::start(&dir.path().join("tracker"));
    let alice = Peer::start(&dir.path().join("alice"), &tracker);
    let out = ctl_with_stdin(&alice.socket, &["create_user", "alice"], "s3cret pass\n");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = ctl_with_stdin(&alice.socket, &["login", "alice", "-"], "wrong\n");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let out = ctl_with_stdin(&alice.socket, &["login", "alice"], "s3cret pass\n");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(alice.json(&["status"])["user"], "alice");
    // The password typed on stdin is the one stored: the argument form works with it too.
    // (From another daemon: a quick logout/login on one daemon is covered by accounts_groups.)
    let again = Peer::start(&dir.path().join("again"), &tracker);
    again.ok(&["login", "alice", "s3cret pass"]);
    // No password at all (empty stdin) is a usage error, and nothing is sent.
    let out = ctl_with_stdin(&alice.socket, &["create_user", "bob"], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    // bob was not created by it: the name is still free.
    alice.ok(&["create_user", "bob", "pw-bob"]);
}

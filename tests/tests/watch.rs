//! The control socket's event stream through the real binaries: `minitorrctl watch --json`
//! follows a real download (started, coalesced progress, completed), `download_file --wait`
//! and `wait` return with the file complete, filters, a watcher that never reads (the daemon
//! goes on; the laggard is told what it missed), the watcher cap, and a watch whose daemon is
//! killed or whose reader goes away.
//!
//! No timing is asserted: the latency of `wait` is printed (see docs/DOWNLOADS.md for the
//! measured value).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use futures::{SinkExt, StreamExt};
use minitorr_e2e::*;
use minitorr_proto::control::{EventKind, Request, Response};
use minitorr_proto::Link;
use serde_json::Value;
use tokio_util::codec::Framed;

const MIB: usize = 1 << 20;

/// Tracker, alice seeding at `rate` bytes/s in 64 KiB pieces, bob; both in alice's g1.
fn setup(dir: &Path, rate: u64) -> (Tracker, Peer, Peer) {
    let tracker = Tracker::start(&dir.join("tracker"));
    let alice = Peer::start_with_config(
        &dir.join("alice"),
        &tracker,
        &format!("max_upload_rate = {rate}\npiece_size = 65536\n"),
    );
    let bob = Peer::start_with_config(&dir.join("bob"), &tracker, "");
    user(&alice, "alice");
    user(&bob, "bob");
    group_with(&alice, "g1", &[(&bob, "bob")]);
    (tracker, alice, bob)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A running `minitorrctl --json watch …`, its lines parsed as they come.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Watcher {
    fn start(peer: &Peer, filter: &[&str]) -> Watcher {
        let mut args = vec!["--json", "watch"];
        args.extend_from_slice(filter);
        let mut child = peer.ctl_child(&args);
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("watch printed a non-JSON line ({e}): {line}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Watcher {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Read events until one satisfies `pred`; returns it. Everything read is kept in `seen`.
    fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "watch: no {what} within 60 s; saw:\n{}",
                    self.seen
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(ev: &str, file: &str) -> impl Fn(&Value) -> bool {
    let (ev, file) = (ev.to_string(), file.to_string());
    move |v: &Value| v["event"] == ev.as_str() && v["file"] == file.as_str()
}

/// Share a small file named `name` from `peer` in g1: a `share_added` event everybody sees.
fn marker(peer: &Peer, dir: &Path, name: &str) {
    let path = dir.join(name);
    random_file(&path, 1000);
    peer.ok(&["upload_file", path.to_str().unwrap(), "g1"]);
}

#[test]
fn watch_follows_a_real_download_and_wait_returns_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = setup(dir.path(), 4 * MIB as u64);
    let src = dir.path().join("big.bin");
    let sha = random_file(&src, 8 * MIB);
    alice.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    let dl = dir.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();

    let mut w = Watcher::start(&bob, &[]);
    // Subscribed once it sees our own marker share.
    marker(&bob, dir.path(), "m1.bin");
    w.until("share_added m1.bin", is("share_added", "m1.bin"));

    let out = bob.ctl(&[
        "--json",
        "download_file",
        "g1",
        "big.bin",
        dl.to_str().unwrap(),
        "--wait",
    ]);
    let returned_ms = now_ms();
    assert!(
        out.status.success(),
        "download_file --wait failed: {}\n{}",
        stdout_of(&out),
        stderr_of(&out)
    );
    let done = one_json_document(&stdout_of(&out))["download"].clone();
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["bytes_done"], 8 * MIB, "{done}");
    // The file is complete and in place the moment the command returns.
    assert_eq!(sha1_file(&dl.join("big.bin")), sha);

    let completed = w.until("download_completed", is("download_completed", "big.bin"));
    assert_eq!(
        completed["path"],
        dl.join("big.bin").to_str().unwrap(),
        "{completed}"
    );
    let shared = w.until("share_added big.bin", is("share_added", "big.bin"));
    assert_eq!(shared["sha1"], sha.as_str());
    eprintln!(
        "download_file --wait returned {} ms after the daemon published download_completed \
         (including process exit)",
        returned_ms as i64 - completed["at_unix_ms"].as_i64().unwrap()
    );

    let about: Vec<&Value> = w.seen.iter().filter(|v| v["file"] == "big.bin").collect();
    let pos = |ev: &str| about.iter().position(|v| v["event"] == ev);
    let started = pos("download_started").expect("download_started");
    let first_progress = pos("progress").expect("progress");
    let finished = pos("download_completed").unwrap();
    assert!(
        started < first_progress && first_progress < finished,
        "{about:?}"
    );
    assert!(pos("peer_connected").is_some(), "{about:?}");
    // Ordered: seq only grows.
    let seqs: Vec<u64> = w.seen.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|p| p[0] < p[1]), "{seqs:?}");
    // Coalesced: not one line per piece (128), at most one per 100 ms (+ the final one), and
    // bytes only grow, up to the whole file.
    let progress: Vec<&&Value> = about.iter().filter(|v| v["event"] == "progress").collect();
    let span = progress.last().unwrap()["at_unix_ms"].as_u64().unwrap()
        - progress[0]["at_unix_ms"].as_u64().unwrap();
    assert!(
        progress.len() as u64 <= span / 100 + 2,
        "{} progress events over {span} ms",
        progress.len()
    );
    assert!(progress.len() < 128, "one per piece: {}", progress.len());
    let bytes: Vec<u64> = progress
        .iter()
        .map(|v| v["bytes_done"].as_u64().unwrap())
        .collect();
    assert!(bytes.windows(2).all(|p| p[0] <= p[1]), "{bytes:?}");
    assert_eq!(*bytes.last().unwrap(), 8 * MIB as u64);

    // `wait` on a finished download answers at once, with the same document.
    let again = bob.json(&["wait", "g1", "big.bin"])["download"].clone();
    assert_eq!(again["state"], "complete");
    assert_eq!(again["dest"], done["dest"]);
}

#[test]
fn wait_started_right_after_download_file_never_misses_the_completion() {
    // Small downloads that may complete before, while or after `wait` subscribes: every
    // `wait` returns complete (a lost wake-up would hang it until the test's timeout).
    let dir = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = setup(dir.path(), 64 * MIB as u64);
    let dl = dir.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    for i in 0..6 {
        let name = format!("f{i}.bin");
        let src = dir.path().join(&name);
        let sha = random_file(&src, 64 * 1024 * (i + 1));
        alice.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
        bob.ok(&["download_file", "g1", &name, dl.to_str().unwrap()]);
        let mut waiter = bob.ctl_child(&["--json", "wait", "g1", &name, "--timeout", "60"]);
        let st = wait_exit(&mut waiter, Duration::from_secs(90)).expect("wait returned");
        assert!(st.success(), "wait for {name}: {st:?}");
        assert_eq!(sha1_file(&dl.join(&name)), sha);
    }
}

#[test]
fn watch_filters_by_group_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = setup(dir.path(), 64 * MIB as u64);
    alice.ok(&["create_group", "g2"]);
    bob.ok(&["join_group", "g2"]);
    alice.ok(&["accept_request", "g2", "bob"]);

    let mut all = Watcher::start(&bob, &[]);
    let mut g1 = Watcher::start(&bob, &["g1"]);
    let mut one = Watcher::start(&bob, &["g1", "x.bin"]);
    // Subscribed: each sees x.bin shared in g1.
    marker(&bob, dir.path(), "x.bin");
    for w in [&mut all, &mut g1, &mut one] {
        w.until("share_added x.bin", is("share_added", "x.bin"));
    }
    // y.bin in g1, z.bin in g2, then x.bin withdrawn (the last event for everyone).
    marker(&bob, dir.path(), "y.bin");
    let z = dir.path().join("z.bin");
    random_file(&z, 1000);
    bob.ok(&["upload_file", z.to_str().unwrap(), "g2"]);
    bob.ok(&["stop_share", "g1", "x.bin"]);
    for w in [&mut all, &mut g1, &mut one] {
        w.until("share_withdrawn x.bin", is("share_withdrawn", "x.bin"));
    }
    let files = |w: &Watcher| -> Vec<String> {
        w.seen
            .iter()
            .map(|v| {
                format!(
                    "{}/{}",
                    v["group"].as_str().unwrap(),
                    v["file"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        files(&all),
        ["g1/x.bin", "g1/y.bin", "g2/z.bin", "g1/x.bin"]
    );
    assert_eq!(files(&g1), ["g1/x.bin", "g1/y.bin", "g1/x.bin"]);
    assert_eq!(files(&one), ["g1/x.bin", "g1/x.bin"]);
    assert_eq!(all.seen[3]["reason"], "stop_share");

    // Bad names are refused before anything is sent, like everywhere else (exit 2).
    bob.fails(2, &["watch", "g1/../x"]);
}

#[test]
fn watch_ends_when_the_daemon_is_killed_or_the_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let mut bob = Peer::start(&dir.path().join("bob"), &tracker);
    user(&bob, "bob");
    bob.ok(&["create_group", "g1"]);

    // `watch | true`: the reader is gone before any event comes; watch notices anyway.
    let sh = |pipeline: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} --socket {} --json watch {pipeline}",
                bin("minitorrctl").display(),
                bob.socket.display()
            ))
            .env_remove("MINITORR_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut gone_reader = sh("| true");
    let st = wait_exit(&mut gone_reader, Duration::from_secs(20));
    assert!(st.is_some(), "`watch | true` did not end");

    // `watch | head -1`: ends after the first event, without a panic message.
    let mut head = sh("| head -1");
    std::thread::sleep(Duration::from_millis(300));
    let mut n = 0;
    while wait_exit(&mut head, Duration::from_millis(500)).is_none() {
        n += 1;
        assert!(n < 40, "`watch | head -1` did not end");
        marker(&bob, dir.path(), &format!("h{n}.bin"));
    }
    let mut out = String::new();
    head.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    head.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("share_added"), "{out}");
    assert!(!err.contains("panicked"), "{err}");

    // Ctrl-C: exit 0.
    let mut w = Watcher::start(&bob, &[]);
    marker(&bob, dir.path(), "c.bin");
    w.until("share_added c.bin", is("share_added", "c.bin"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let st = wait_exit(&mut w.child, Duration::from_secs(20)).expect("watch ends on SIGINT");
    assert_eq!(st.code(), Some(0), "{st:?}: {}", w.stderr());

    // The daemon killed: exit 3 with a message saying so.
    let mut w = Watcher::start(&bob, &[]);
    marker(&bob, dir.path(), "k.bin");
    w.until("share_added k.bin", is("share_added", "k.bin"));
    bob.kill9();
    let st = wait_exit(&mut w.child, Duration::from_secs(20)).expect("watch ends with the daemon");
    let err = w.stderr();
    assert_eq!(st.code(), Some(3), "{err}");
    assert!(err.contains("closed the event stream"), "{err}");
}

/// A raw control connection that sent `Watch` and then never reads.
async fn stuck_watcher(socket: &Path) -> tokio::net::UnixStream {
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    minitorr_proto::handshake(&mut s, Link::Control)
        .await
        .unwrap();
    let mut f = Framed::new(s, minitorr_proto::links::control_client());
    f.send(Request::Watch {
        group: None,
        file: None,
    })
    .await
    .unwrap();
    f.into_inner()
}

#[test]
fn a_watcher_that_never_reads_does_not_hold_up_the_daemon_and_is_told_it_lagged() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let bob = Peer::start(&dir.path().join("bob"), &tracker);
    user(&bob, "bob");
    bob.ok(&["create_group", "g1"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stuck = rt.block_on(stuck_watcher(&bob.socket));
    let mut reader = Watcher::start(&bob, &[]);
    marker(&bob, dir.path(), "ready.bin");
    reader.until("share_added ready.bin", is("share_added", "ready.bin"));

    // Far more events than the bus keeps (1024) plus what the socket buffers: share and
    // withdraw a file with a long name, over one control connection.
    let path = dir.path().join(format!("{}.bin", "n".repeat(200)));
    random_file(&path, 100);
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let pairs = 1200;
    let started = Instant::now();
    rt.block_on(async {
        let mut s = tokio::net::UnixStream::connect(&bob.socket).await.unwrap();
        minitorr_proto::handshake(&mut s, Link::Control)
            .await
            .unwrap();
        let mut f = Framed::new(s, minitorr_proto::links::control_client());
        for _ in 0..pairs {
            for req in [
                Request::UploadFile {
                    path: path.clone(),
                    group: "g1".into(),
                    name: None,
                },
                Request::StopShare {
                    group: "g1".into(),
                    file: name.clone(),
                },
            ] {
                f.send(req).await.unwrap();
                let r = f.next().await.unwrap().unwrap();
                assert!(!matches!(r, Response::Error(_)), "{r:?}");
            }
        }
    });
    eprintln!(
        "{} share events in {:?} with a watcher that never reads",
        2 * pairs,
        started.elapsed()
    );
    // The daemon answers at once, and the watcher that reads got every event.
    assert!(bob.json(&["status"])["user"] == "bob");
    marker(&bob, dir.path(), "end.bin");
    reader.until("share_added end.bin", is("share_added", "end.bin"));
    // Exactly the events the requests made: the share watcher never re-offers a share that
    // was just stopped, and a late `file_removed` from the tracker (the entry is dropped when
    // its last holder stops) never withdraws the next upload's share.
    let added = reader
        .seen
        .iter()
        .filter(|v| v["file"] == name.as_str() && v["event"] == "share_added")
        .count();
    let withdrawn = reader
        .seen
        .iter()
        .filter(|v| v["file"] == name.as_str() && v["reason"] == "stop_share")
        .count();
    let lagged: Vec<_> = reader
        .seen
        .iter()
        .filter(|v| v["event"] == "lagged")
        .collect();
    assert!(
        lagged.is_empty(),
        "the reading watcher was told it lagged: {lagged:?}"
    );
    assert_eq!(withdrawn, pairs, "the reading watcher lost events");
    assert_eq!(added, pairs, "share_added events: one per upload_file");
    let other = reader
        .seen
        .iter()
        .filter(|v| v["file"] == name.as_str() && v["event"] == "share_withdrawn")
        .count();
    assert_eq!(other, pairs, "every withdrawal is the user's stop_share");

    // Now the stuck one reads: what its socket held, then one `lagged` with the count it
    // missed, then the newest events.
    let (lagged, total, closed) = rt.block_on(async {
        let mut f = Framed::new(stuck, minitorr_proto::links::control_client());
        assert!(matches!(
            f.next().await.unwrap().unwrap(),
            Response::Watching { .. }
        ));
        let mut lagged = 0u64;
        let mut total = 0usize;
        let mut closed = false;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), f.next()).await;
            let Ok(Some(Ok(Response::Event(ev)))) = next else {
                // Ended: the daemon gave up on it (it did not read for a minute).
                closed = matches!(next, Ok(None) | Ok(Some(Err(_))));
                break;
            };
            total += 1;
            if let EventKind::Lagged { missed } = ev.kind {
                lagged += missed;
            }
            if matches!(&ev.kind, EventKind::ShareAdded { file, .. } if file == "end.bin") {
                break;
            }
        }
        (lagged, total, closed)
    });
    eprintln!("the stuck watcher then read {total} events, lagged by {lagged}, closed: {closed}");
    assert!(
        lagged > 0 || closed,
        "neither told it lagged nor disconnected (read {total})"
    );
    assert!(total < 2 * pairs, "it was sent everything: {total}");
}

#[test]
fn concurrent_watchers_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&dir.path().join("tracker"));
    let bob = Peer::start(&dir.path().join("bob"), &tracker);
    user(&bob, "bob");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // 64 streams at once (the cap), all idle.
    let mut held: Vec<tokio::net::UnixStream> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..64 {
            v.push(stuck_watcher(&bob.socket).await);
        }
        v
    });
    // Let the daemon register them all (each answered `Watching`).
    wait_until("64 watchers registered", Duration::from_secs(30), || {
        let out = bob.ctl(&["watch"]);
        !out.status.success() && stderr_of(&out).contains("too many")
    });
    let err = bob.fails(1, &["watch"]);
    assert!(err.contains("too many event subscribers"), "{err}");
    // `wait` is a watcher too: refused the same way, not hung.
    let err = bob.fails(1, &["wait", "g1", "x.bin"]);
    assert!(err.contains("too many"), "{err}");
    // A slot comes back when a watcher goes.
    held.pop();
    wait_until("a slot freed", Duration::from_secs(30), || {
        let out = bob.ctl(&["wait", "g1", "x.bin"]);
        stderr_of(&out).contains("no download of g1/x.bin")
    });
    drop(held);
}

//! minitorrctl against fake daemons: a Unix socket in a temp dir, served by this test with the
//! real protocol crate. Checks exit statuses, stderr lines and stdout documents end to end.
//! (Tests against real daemons live in the workspace's tests/ crate.)

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use minitorr_proto as proto;
use proto::control::{
    DaemonEvent, DownloadRef, DownloadState, DownloadStatus, ErrorKind, EventKind, PeerStat,
    Request, Response,
};
use proto::handshake::Link;
use proto::types::{FileSummary, Sha1Hash};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio_util::codec::Framed;

type Handler = Box<dyn FnMut(&Request) -> Response + Send>;

/// A daemon stand-in speaking protocol `version`; every request is recorded and answered by
/// `handler`. Runs until the test's runtime ends.
struct FakeDaemon {
    socket: PathBuf,
    seen: Arc<Mutex<Vec<Request>>>,
    _dir: tempfile::TempDir,
}

impl FakeDaemon {
    fn start(version: u16, handler: Handler) -> FakeDaemon {
        FakeDaemon::start_streaming(version, handler, vec![])
    }

    /// As `start`; a `Watch` request is answered by `handler` (a `Watching` snapshot), then
    /// sent `events`, and its connection is then held open (as a daemon's would be) while
    /// the next connections are served.
    fn start_streaming(
        version: u16,
        mut handler: Handler,
        events: Vec<proto::control::DaemonEvent>,
    ) -> FakeDaemon {
        let dir = private_tempdir();
        let socket = dir.path().join("minitorrd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            // Connections are served one after another, like the CLI makes them.
            while let Ok((mut stream, _)) = listener.accept().await {
                if proto::handshake::handshake_with_version(&mut stream, Link::Control, version)
                    .await
                    .is_err()
                {
                    continue;
                }
                let mut framed = Framed::new(stream, proto::links::control_server());
                if let Some(Ok(req)) = framed.next().await {
                    log.lock().unwrap().push(req.clone());
                    let _ = framed.send(handler(&req)).await;
                    if matches!(req, Request::Watch { .. }) {
                        for ev in &events {
                            let _ = framed.send(Response::Event(ev.clone())).await;
                        }
                        tokio::spawn(async move {
                            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                            drop(framed);
                        });
                    }
                }
            }
        });
        FakeDaemon {
            socket,
            seen,
            _dir: dir,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

async fn run_ctl(socket: &Path, args: &[&str], stdin: Option<&str>, cwd: Option<&Path>) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_minitorrctl"));
    cmd.args(args)
        .env("MINITORR_SOCKET", socket)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // The child may exit without reading it (e.g. no daemon): a broken pipe is fine.
        let _ = pipe.write_all(input.as_bytes()).await;
    }
    child.wait_with_output().await.unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn status(state: DownloadState, done: u64) -> DownloadStatus {
    DownloadStatus {
        group: "g1".into(),
        file: "a.iso".into(),
        dest: "/tmp/in/a.iso".into(),
        state,
        size: 1000,
        sha1: Sha1Hash([0xab; 20]),
        bytes_done: done,
        pieces_done: 0,
        pieces_total: 1,
        speed_bps: 100,
        peers: vec![PeerStat {
            addr: "127.0.0.1:7002".into(),
            user: "bob".into(),
            bytes_received: done,
            connected: true,
            bad_pieces: 0,
            path: proto::control::PeerPath::Relayed,
            error: None,
        }],
        error: (state == DownloadState::Failed).then(|| "no online peer has piece 0".into()),
        first_piece_ms: None,
        elapsed_ms: 1500,
        avg_bps: done * 1000 / 1500,
        files_done: 0,
        files_total: 1,
        selection: None,
    }
}

#[tokio::test]
async fn no_daemon_is_exit_3_with_a_hint() {
    let dir = private_tempdir();
    let socket = dir.path().join("nothing.sock");
    let out = run_ctl(&socket, &["list_groups"], None, None).await;
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with(&format!(
            "minitorrctl: cannot reach minitorrd at {}",
            socket.display()
        )),
        "{err}"
    );
    assert!(err.contains("(No such file or directory)"), "{err}");
    assert!(
        err.contains(
            "Is minitorrd running? Start it with: minitorrd 127.0.0.1:7001 tracker_info.txt"
        ),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // Checked before asking for a password, not after.
    let out = run_ctl(&socket, &["login", "alice"], Some("pw\n"), None).await;
    assert_eq!(out.status.code(), Some(3));

    let out = run_ctl(&socket, &["--json", "list_groups"], None, None).await;
    assert_eq!(out.status.code(), Some(3));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "unreachable");
    assert_eq!(doc["error"]["exit_code"], 3);
}

#[tokio::test]
async fn other_protocol_version_is_exit_3_naming_both() {
    let theirs = proto::PROTOCOL_VERSION + 1;
    let daemon = FakeDaemon::start(
        theirs,
        Box::new(|_| Response::Done {
            message: "unreachable".into(),
        }),
    );
    let out = run_ctl(&daemon.socket, &["status"], None, None).await;
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr(&out),
        format!(
            "minitorrctl: daemon speaks protocol {theirs}, this minitorrctl speaks {}; use matching versions\n",
            proto::PROTOCOL_VERSION
        )
    );
}

#[tokio::test]
async fn something_else_on_the_socket_is_exit_3() {
    let dir = private_tempdir();
    let socket = dir.path().join("http.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            // Like a real server of another protocol: answer, then wait for the client to go.
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink).await;
        }
    });
    let out = run_ctl(&socket, &["status"], None, None).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("is not a minitorrd control socket"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn refusal_is_exit_1_with_one_line() {
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|_| Response::error(ErrorKind::Refused, "wrong password")),
    );
    let out = run_ctl(&daemon.socket, &["login", "alice", "hunter2"], None, None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "minitorrctl: wrong password\n");
    assert!(out.stdout.is_empty());
    assert_eq!(
        daemon.requests(),
        vec![Request::Login {
            user: "alice".into(),
            password: "hunter2".into()
        }]
    );
}

#[tokio::test]
async fn not_logged_in_carries_the_login_hint() {
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|_| Response::error(ErrorKind::NotLoggedIn, "you are not logged in")),
    );
    let out = run_ctl(&daemon.socket, &["--json", "list_groups"], None, None).await;
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "not_logged_in");
    assert_eq!(
        doc["error"]["hint"],
        "log in first: minitorrctl login <user_id>"
    );
    assert_eq!(
        stderr(&out),
        "minitorrctl: you are not logged in; log in first: minitorrctl login <user_id>\n"
    );
}

#[tokio::test]
async fn files_as_json_parse() {
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|req| match req {
            Request::ListFiles { group } => Response::Files {
                group: group.clone(),
                files: vec![FileSummary {
                    group: group.clone(),
                    name: "a.iso".into(),
                    size: 3 << 20,
                    piece_size: 512 * 1024,
                    sha1: Sha1Hash([0x3f; 20]),
                    seeders_online: 2,
                    partial_online: 0,
                    file_count: 1,
                    is_tree: false,
                    piece_count: 6,
                }],
            },
            _ => Response::error(ErrorKind::Internal, "unexpected"),
        }),
    );
    let out = run_ctl(&daemon.socket, &["list_files", "g1", "--json"], None, None).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["group"], "g1");
    assert_eq!(doc["files"][0]["name"], "a.iso");
    assert_eq!(doc["files"][0]["size"], 3 << 20);
    assert_eq!(doc["files"][0]["pieces"], 6);
    assert_eq!(doc["files"][0]["sha1"], "3f".repeat(20));

    let out = run_ctl(&daemon.socket, &["list_files", "g1"], None, None).await;
    let text = stdout(&out);
    assert!(text.starts_with("NAME "), "{text}");
    assert!(
        text.ends_with("Sum: 1 file, 3.0 MiB, 1 with seeders online\n"),
        "{text}"
    );
}

#[tokio::test]
async fn upload_sends_an_absolute_path() {
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|req| match req {
            Request::UploadFile { group, .. } => Response::Uploaded(FileSummary {
                group: group.clone(),
                name: "a.iso".into(),
                size: 1 << 30,
                piece_size: 512 * 1024,
                sha1: Sha1Hash([0x3f; 20]),
                seeders_online: 1,
                partial_online: 0,
                file_count: 1,
                is_tree: false,
                piece_count: 2048,
            }),
            _ => Response::error(ErrorKind::Internal, "unexpected"),
        }),
    );
    let cwd = tempfile::tempdir().unwrap();
    let out = run_ctl(
        &daemon.socket,
        &["upload_file", "sub/a.iso", "g1"],
        None,
        Some(cwd.path()),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "shared a.iso in g1 (1.0 GiB, 2048 pieces, sha1 3f3f3f3f3f…)\n"
    );
    let Request::UploadFile { path, .. } = &daemon.requests()[0] else {
        panic!()
    };
    assert!(path.is_absolute());
    assert!(path.ends_with("sub/a.iso"));
    assert_eq!(
        path.parent()
            .unwrap()
            .parent()
            .unwrap()
            .canonicalize()
            .unwrap(),
        cwd.path().canonicalize().unwrap()
    );
}

#[tokio::test]
async fn password_is_read_from_stdin_when_not_a_terminal() {
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|_| Response::Done {
            message: "welcome".into(),
        }),
    );
    let out = run_ctl(
        &daemon.socket,
        &["create_user", "alice"],
        Some("pass word\n"),
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "welcome\n");
    assert_eq!(
        daemon.requests(),
        vec![Request::CreateUser {
            user: "alice".into(),
            password: "pass word".into()
        }]
    );

    let out = run_ctl(&daemon.socket, &["login", "alice", "-"], Some(""), None).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "an empty stdin is a usage error"
    );
    assert!(
        !daemon
            .requests()
            .iter()
            .any(|r| matches!(r, Request::Login { .. })),
        "nothing sent without a password"
    );
}

/// What a daemon answers `Watch` and `ShowDownloads` with, when both list `list`.
fn listing(req: &Request, list: Vec<DownloadStatus>) -> Response {
    match req {
        Request::Watch { .. } => Response::Watching { downloads: list },
        Request::ShowDownloads => Response::Downloads(list),
        _ => Response::error(ErrorKind::Internal, "unexpected"),
    }
}

fn event(seq: u64, kind: EventKind) -> DaemonEvent {
    DaemonEvent {
        seq,
        at_unix_ms: 1,
        kind,
    }
}

#[tokio::test]
async fn download_wait_follows_until_complete() {
    let polls = Arc::new(Mutex::new(0));
    let counter = polls.clone();
    let mut other = status(DownloadState::Complete, 1000);
    other.dest = "/elsewhere/a.iso".into();
    let mine = DownloadRef {
        group: "g1".into(),
        file: "a.iso".into(),
        dest: "/tmp/in/a.iso".into(),
    };
    let elsewhere = DownloadRef {
        dest: "/elsewhere/a.iso".into(),
        ..mine.clone()
    };
    let progress = |download: &DownloadRef, bytes_done| EventKind::Progress {
        download: download.clone(),
        bytes_done,
        size: 1000,
        pieces_done: 0,
        pieces_total: 1,
        speed_bps: 100,
    };
    let events = vec![
        event(1, progress(&mine, 700)),
        // About another download of the same file: ignored.
        event(
            2,
            EventKind::DownloadFailed {
                download: elsewhere.clone(),
                reason: "x".into(),
            },
        ),
        event(
            3,
            EventKind::DownloadCompleted {
                download: mine.clone(),
                path: "/tmp/in/a.iso".into(),
                elapsed_ms: 1500,
            },
        ),
    ];
    let daemon = FakeDaemon::start_streaming(
        proto::PROTOCOL_VERSION,
        Box::new(move |req| match req {
            Request::DownloadFile { .. } => {
                Response::DownloadStarted(status(DownloadState::Downloading, 0))
            }
            Request::Watch { group, file } => {
                assert_eq!(
                    (group.as_deref(), file.as_deref()),
                    (Some("g1"), Some("a.iso"))
                );
                listing(
                    req,
                    vec![other.clone(), status(DownloadState::Downloading, 300)],
                )
            }
            Request::ShowDownloads => {
                *counter.lock().unwrap() += 1;
                listing(
                    req,
                    vec![other.clone(), status(DownloadState::Complete, 1000)],
                )
            }
            _ => Response::error(ErrorKind::Internal, "unexpected"),
        }),
        events,
    );
    let out = run_ctl(
        &daemon.socket,
        &["download_file", "g1", "a.iso", "/tmp/in", "--wait"],
        None,
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("downloaded a.iso from g1 to /tmp/in/a.iso (1000 B in 1.5 s"),
        "{}",
        stdout(&out)
    );
    // Not a terminal: plain progress lines on stderr, not one per event.
    let err = stderr(&out);
    assert!(
        err.starts_with("[D] [g1] a.iso: 29.9% (300 B/1000 B)")
            || err.starts_with("[D] [g1] a.iso: 30.0%"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // Events, not polling: one show_downloads, after the completion event, for the answer.
    assert_eq!(*polls.lock().unwrap(), 1);
    assert!(matches!(daemon.requests()[1], Request::Watch { .. }));
}

#[tokio::test]
async fn wait_reports_a_failed_download_with_exit_1() {
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|req| listing(req, vec![status(DownloadState::Failed, 10)])),
    );
    let out = run_ctl(
        &daemon.socket,
        &["wait", "g1", "a.iso", "--json"],
        None,
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "download_failed");
    assert_eq!(doc["error"]["download"]["state"], "failed");
    assert_eq!(
        stderr(&out),
        "minitorrctl: download of g1/a.iso failed: no online peer has piece 0\n"
    );
}

#[tokio::test]
async fn wait_times_out_with_exit_1() {
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|req| listing(req, vec![status(DownloadState::Downloading, 10)])),
    );
    let started = std::time::Instant::now();
    let out = run_ctl(
        &daemon.socket,
        &["wait", "g1", "a.iso", "--timeout", "1"],
        None,
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).ends_with("minitorrctl: timed out after 1 s waiting for g1/a.iso\n"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn wait_for_an_unknown_download_is_exit_1() {
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|req| listing(req, vec![])),
    );
    let out = run_ctl(&daemon.socket, &["wait", "g1", "b.iso"], None, None).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "minitorrctl: no download of g1/b.iso; start one with: minitorrctl download_file g1 b.iso <destination_path>\n"
    );
}

#[tokio::test]
async fn show_downloads_lines_start_like_the_seed() {
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|_| {
            Response::Downloads(vec![
                status(DownloadState::Downloading, 10),
                status(DownloadState::Complete, 1000),
            ])
        }),
    );
    let out = run_ctl(&daemon.socket, &["show_downloads"], None, None).await;
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("[D] [g1] a.iso "), "{text}");
    assert!(lines[1].starts_with("[C] [g1] a.iso "), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
}

#[tokio::test]
async fn daemon_hanging_up_without_answer_is_exit_3() {
    let dir = private_tempdir();
    let socket = dir.path().join("d.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = proto::handshake(&mut s, Link::Control).await;
            drop(s);
        }
    });
    let out = run_ctl(&socket, &["status"], None, None).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("closed the connection without answering"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn usage_errors_are_exit_2_and_json_when_asked() {
    let dir = private_tempdir();
    let socket = dir.path().join("unused.sock");
    let out = run_ctl(&socket, &["upload_file", "only-one-arg"], None, None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let out = run_ctl(&socket, &["--json", "create_group", "bad/name"], None, None).await;
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "usage");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("path separators"),
        "{doc}"
    );
    let out = run_ctl(&socket, &["--help"], None, None).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("Exit status:"));
}

#[tokio::test]
async fn ctrl_c_while_waiting_is_130_and_the_download_goes_on() {
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|req| listing(req, vec![status(DownloadState::Downloading, 10)])),
    );
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_minitorrctl"))
        .args(["wait", "g1", "a.iso"])
        .env("MINITORR_SOCKET", &daemon.socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let it subscribe (the signal handler is installed by then), and settle.
    while daemon.requests().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        stderr(&out).ends_with("minitorrctl: stopped waiting for g1/a.iso; the download goes on\n"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn empty_socket_variable_means_the_default_path() {
    let runtime = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_minitorrctl"))
        .arg("status")
        .env("MINITORR_SOCKET", "")
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let expected = runtime.path().join("minitorr").join("minitorrd.sock");
    assert!(
        stderr(&out).contains(&format!("at {} (", expected.display())),
        "{}",
        stderr(&out)
    );
}

fn daemon_status(user: Option<&str>) -> Response {
    Response::Status(proto::control::DaemonStatus {
        version: "0".into(),
        user: user.map(str::to_owned),
        tracker: None,
        tracker_connected: true,
        peer_addr: "127.0.0.1:7001".into(),
        shares: 0,
        downloads: 0,
        tracker_reachable: true,
        auto_login: "off".into(),
        device_name: "test".into(),
        observed_addr: None,
        relay: "off (not logged in)".into(),
        port_mapping: Default::default(),
    })
}

fn group(name: &str, membership: proto::types::Membership) -> proto::types::GroupSummary {
    proto::types::GroupSummary {
        name: name.into(),
        owner: "alice".into(),
        members: 2,
        files: 1,
        membership,
    }
}

/// The trial's `download_file big.bin team dl` and `accept_request bob team`: the group is
/// unknown, the other argument is a group the user is in, so the hint is the swapped line.
#[tokio::test]
async fn swapped_arguments_get_a_did_you_mean() {
    use proto::types::Membership;
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|req| match req {
            Request::ListGroups => Response::Groups(vec![
                group("team", Membership::Member),
                group("bob", Membership::None),
            ]),
            Request::DownloadFile { group, .. } | Request::AcceptRequest { group, .. } => {
                Response::error(ErrorKind::NotFound, format!("no group {group}"))
            }
            _ => Response::error(ErrorKind::Internal, "unexpected"),
        }),
    );
    let dir = private_tempdir();
    let out = run_ctl(
        &daemon.socket,
        &["download_file", "big.bin", "team", "dl"],
        None,
        Some(dir.path()),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "minitorrctl: no group big.bin; did you mean: minitorrctl download_file team big.bin dl?\n"
    );
    let out = run_ctl(
        &daemon.socket,
        &["--json", "accept-request", "bob", "team"],
        None,
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["message"], "no group bob");
    assert_eq!(
        doc["error"]["hint"],
        "did you mean: minitorrctl --json accept-request team bob?"
    );
    // Not a swap (neither name is one of the user's groups): the usual hint stays.
    let out = run_ctl(
        &daemon.socket,
        &["download_file", "nope", "big.bin", "dl"],
        None,
        Some(dir.path()),
    )
    .await;
    assert_eq!(
        stderr(&out),
        "minitorrctl: no group nope; see what is shared: minitorrctl list_files nope\n"
    );
}

/// `login bob` while logged in says so before asking for a password (stdin is not read).
#[tokio::test]
async fn login_while_logged_in_says_so_before_the_password() {
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|req| match req {
            Request::Status => daemon_status(Some("bob")),
            _ => Response::error(ErrorKind::Internal, "unexpected"),
        }),
    );
    let out = run_ctl(&daemon.socket, &["login", "bob"], Some("pw\n"), None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "minitorrctl: already logged in as bob\n");
    let out = run_ctl(&daemon.socket, &["login", "carol"], Some("pw\n"), None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "minitorrctl: logged in as bob; log out first: minitorrctl logout\n"
    );
    assert_eq!(daemon.requests(), vec![Request::Status, Request::Status]);
}

/// With MINITORR_SOCKET set (as run_ctl does), usage lines do not show `--socket <PATH>` as
/// if it were required; `--json` usage errors name the missing argument; dashed spellings
/// and `help` work.
#[tokio::test]
async fn usage_errors_are_whole_and_do_not_demand_the_socket() {
    let dir = private_tempdir();
    let socket = dir.path().join("none.sock");
    let out = run_ctl(&socket, &["download_file", "g1", "a.iso"], None, None).await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("Usage: minitorrctl download_file <GROUP_ID> <FILE_NAME> <DESTINATION_PATH>"),
        "{err}"
    );
    assert!(!err.contains("--socket"), "{err}");

    let out = run_ctl(&socket, &["--json", "download_file", "g1"], None, None).await;
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "usage");
    assert_eq!(
        doc["error"]["message"],
        "the following required arguments were not provided: <FILE_NAME> <DESTINATION_PATH>"
    );
    let hint = doc["error"]["hint"].as_str().unwrap();
    assert!(
        hint.starts_with("Usage: minitorrctl download_file <GROUP_ID>"),
        "{hint}"
    );
    assert!(!hint.contains("--socket"), "{hint}");

    let out = run_ctl(&socket, &["--json", "upload-fil", "a", "g1"], None, None).await;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unrecognized subcommand 'upload-fil'"),
        "{message}"
    );
    assert!(
        message.contains("upload-file"),
        "the tip is kept: {message}"
    );

    // `help COMMAND` and dashed spellings, without a daemon.
    let out = run_ctl(&socket, &["help", "list-groups"], None, None).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Usage: minitorrctl list_groups"),
        "{}",
        stdout(&out)
    );
    let out = run_ctl(&socket, &["list-groups"], None, None).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "parsed, then no daemon: {}",
        stderr(&out)
    );
}

/// A temp dir as minitorrctl accepts a socket's directory: ours, 0700 (`tempdir()` is 0755).
fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

#[tokio::test]
async fn wait_ends_with_exit_3_when_the_daemon_closes_the_stream() {
    let daemon = FakeDaemon::start(
        proto::PROTOCOL_VERSION,
        Box::new(|req| listing(req, vec![status(DownloadState::Downloading, 10)])),
    );
    // The fake holds a watch connection open for 60 s; this one drops it: answer Watching,
    // then close (like a daemon that was killed).
    drop(daemon);
    let dir = private_tempdir();
    let socket = dir.path().join("minitorrd.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            if proto::handshake(&mut stream, Link::Control).await.is_err() {
                continue;
            }
            let mut framed = Framed::new(stream, proto::links::control_server());
            if let Some(Ok(req)) = framed.next().await {
                let _ = framed
                    .send(listing(&req, vec![status(DownloadState::Downloading, 10)]))
                    .await;
            }
        }
    });
    let out = run_ctl(&socket, &["wait", "g1", "a.iso"], None, None).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("minitorrd closed the event stream"),
        "{}",
        stderr(&out)
    );
}

//! From a parsed command line to a result: build the request, send it, wait if asked, render.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::control::{DownloadState, DownloadStatus, RemoveDownloads, Request, Response};

use crate::cli::{Cli, Command, Shell};
use crate::client::Client;
use crate::exit::{Failure, Status};
use crate::password::PasswordSource;
use crate::progress::{self, Reporter};
use crate::render::{human, json, Style};

/// What one invocation does.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Send one request and print its answer.
    Send(Request),
    /// Start a download; with `wait`, stay until it finished.
    Download {
        request: Request,
        wait: bool,
        timeout: Option<u64>,
    },
    /// Wait for a running download.
    Wait {
        target: Target,
        timeout: Option<u64>,
    },
    Completions(Shell),
    Man(PathBuf),
    /// Print the daemon's events as they happen.
    Watch {
        group: Option<String>,
        file: Option<String>,
    },
}

/// Which download `wait` follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub group: String,
    pub file: String,
    /// Absolute; either the file path or the directory it was downloaded into.
    pub dest: Option<PathBuf>,
}

/// Paths travel to the daemon, which has its own working directory: make them absolute here.
/// `std::path::absolute` does not touch the file system, so a destination that does not exist
/// yet is fine (the daemon validates it).
pub fn resolve_path(cwd: &Path, path: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(cwd.join(path))
        .map_err(|e| Failure::usage(format!("cannot make {} absolute: {e}", path.display())))
}

/// Turn the command line into a [`Plan`]. Prompts for passwords, so it runs before connecting
/// (a prompt must not hold a connection open).
pub fn plan(cmd: Command, cwd: &Path, passwords: &mut dyn PasswordSource) -> Result<Plan, Failure> {
    // `-` means "ask me", like an omitted password.
    let mut password = |user: &str, given: Option<String>, confirm| match given {
        Some(p) if p != "-" => Ok(p),
        _ => passwords.password(user, confirm),
    };
    let req = match cmd {
        Command::CreateUser {
            user_id,
            password: pw,
        } => {
            let password = password(&user_id, pw, true)?;
            Request::CreateUser {
                user: user_id,
                password,
            }
        }
        Command::Login {
            user_id,
            password: pw,
        } => {
            let password = password(&user_id, pw, false)?;
            Request::Login {
                user: user_id,
                password,
            }
        }
        Command::Logout => Request::Logout,
        Command::CreateGroup { group_id } => Request::CreateGroup { group: group_id },
        Command::JoinGroup { group_id } => Request::JoinGroup { group: group_id },
        Command::LeaveGroup { group_id } => Request::LeaveGroup { group: group_id },
        Command::ListRequests { group_id } => Request::ListRequests { group: group_id },
        Command::AcceptRequest { group_id, user_id } => Request::AcceptRequest {
            group: group_id,
            user: user_id,
        },
        Command::RejectRequest { group_id, user_id } => Request::RejectRequest {
            group: group_id,
            user: user_id,
        },
        Command::RemoveMember { group_id, user_id } => Request::RemoveMember {
            group: group_id,
            user: user_id,
        },
        Command::Cancel {
            group_id,
            file_name,
            keep,
        } => Request::CancelDownload {
            group: group_id,
            file: file_name,
            keep,
        },
        Command::Pause {
            group_id,
            file_name,
        } => Request::PauseDownload {
            group: group_id,
            file: file_name,
        },
        Command::Resume {
            group_id,
            file_name,
        } => Request::ResumeDownload {
            group: group_id,
            file: file_name,
        },
        Command::Remove {
            group_id,
            file_name,
            failed,
            complete,
        } => Request::RemoveDownload {
            which: match (group_id, file_name, failed, complete) {
                (None, None, true, false) => RemoveDownloads::Failed,
                (None, None, false, true) => RemoveDownloads::Complete,
                (Some(group), Some(file), false, false) => RemoveDownloads::One { group, file },
                _ => {
                    return Err(Failure::new(
                        Status::Usage,
                        "usage",
                        "remove takes GROUP FILE, or --failed, or --complete (one of them)",
                    ))
                }
            },
        },
        Command::ListGroups => Request::ListGroups,
        Command::ListFiles {
            group_id,
            item: None,
        } => Request::ListFiles { group: group_id },
        Command::ListFiles {
            group_id,
            item: Some(item),
        } => Request::ListItem {
            group: group_id,
            item,
        },
        Command::UploadFile {
            file_path,
            group_id,
            name,
        } => Request::UploadFile {
            path: resolve_path(cwd, &file_path)?,
            group: group_id,
            name,
        },
        Command::DownloadFile {
            group_id,
            file_name,
            destination_path,
            wait,
            timeout,
            only,
        } => {
            let dest = resolve_path(cwd, &destination_path)?;
            let request = Request::DownloadFile {
                group: group_id,
                file: file_name,
                dest,
                only,
            };
            return Ok(Plan::Download {
                request,
                wait,
                timeout,
            });
        }
        Command::ShowDownloads => Request::ShowDownloads,
        Command::StopShare {
            group_id,
            file_name,
        } => Request::StopShare {
            group: group_id,
            file: file_name,
        },
        Command::RemoveFile {
            group_id,
            file_name,
        } => Request::RemoveFile {
            group: group_id,
            file: file_name,
        },
        Command::Status => Request::Status,
        Command::Devices => Request::Devices,
        Command::RevokeDevice { name } => Request::RevokeDevice { name },
        Command::Wait {
            group_id,
            file_name,
            dest,
            timeout,
        } => {
            let dest = dest.map(|d| resolve_path(cwd, &d)).transpose()?;
            return Ok(Plan::Wait {
                target: Target {
                    group: group_id,
                    file: file_name,
                    dest,
                },
                timeout,
            });
        }
        Command::Completions { shell } => return Ok(Plan::Completions(shell)),
        Command::Man { out_dir } => return Ok(Plan::Man(out_dir)),
        Command::ListShares => Request::ListShares,
        Command::Watch {
            group_id,
            file_name,
        } => {
            return Ok(Plan::Watch {
                group: group_id,
                file: file_name,
            })
        }
    };
    Ok(Plan::Send(req))
}

/// Run a network plan (everything but `Completions`/`Man`) and return what goes on stdout.
pub async fn run(cli: &Cli, plan: Plan) -> Result<String, Failure> {
    let client = Client::new(cli.socket_path());
    match plan {
        Plan::Send(request) => {
            let spinner = match &request {
                Request::UploadFile { path, group, .. } => {
                    progress::spinner(format!("hashing and sharing {} in {group}", path.display()))
                }
                _ => None,
            };
            let response = client.request(request.clone()).await;
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            render(&response?, &request, cli.json, client.socket())
        }
        Plan::Download {
            request,
            wait,
            timeout,
        } => {
            let response = client.request(request.clone()).await?;
            let started = match response {
                Response::DownloadStarted(d) => d,
                other => return render(&other, &request, cli.json, client.socket()),
            };
            if !wait {
                return render(
                    &Response::DownloadStarted(started),
                    &request,
                    cli.json,
                    client.socket(),
                );
            }
            // Follow exactly this download: the daemon reports the final file path.
            let target = Target {
                group: started.group.clone(),
                file: started.file.clone(),
                dest: Some(started.dest),
            };
            let done = wait_for(&client, target, timeout, cli.json).await?;
            Ok(render_done(&done, cli.json))
        }
        Plan::Wait { target, timeout } => {
            let done = wait_for(&client, target, timeout, cli.json).await?;
            Ok(render_done(&done, cli.json))
        }
        Plan::Watch { group, file } => crate::watch::run(&client, group, file, cli.json).await,
        Plan::Completions(_) | Plan::Man(_) => unreachable!("handled without a daemon in main"),
    }
}

fn render_done(d: &DownloadStatus, json: bool) -> String {
    if json {
        json::render_download(d)
    } else {
        human::render_download_done(d)
    }
}

/// Render any answer; a `Response::Error` becomes the failure it stands for.
pub fn render(
    response: &Response,
    request: &Request,
    json: bool,
    socket: &Path,
) -> Result<String, Failure> {
    let style = Style::for_stdout();
    Ok(match (response, json) {
        (Response::Error(e), _) => return Err(Failure::refused(e, request)),
        (Response::Done { message }, false) => human::render_message(message),
        (Response::Done { message }, true) => json::render_message(message),
        (Response::LoggedIn(r), false) => human::render_login(r),
        (Response::LoggedIn(r), true) => json::render_login(r),
        (Response::Groups(g), false) => human::render_groups(g, style),
        (Response::Groups(g), true) => json::render_groups(g),
        (Response::Requests { group, users }, false) => human::render_requests(group, users),
        (Response::Requests { group, users }, true) => json::render_requests(group, users),
        (Response::Files { group, files }, false) => human::render_files(group, files, style),
        (Response::Files { group, files }, true) => json::render_files(group, files),
        (Response::Uploaded(f), false) => human::render_uploaded(f),
        (Response::Uploaded(f), true) => json::render_uploaded(f),
        (Response::UploadedTree { file, skipped }, false) => {
            human::render_uploaded_tree(file, skipped)
        }
        (Response::UploadedTree { file, skipped }, true) => {
            json::render_uploaded_tree(file, skipped)
        }
        (Response::DownloadStarted(d), false) => human::render_download_started(d),
        (Response::DownloadStarted(d), true) => json::render_download(d),
        (Response::Downloads(d), false) => human::render_downloads(d, style),
        (Response::Downloads(d), true) => json::render_downloads(d),
        (Response::Status(s), false) => human::render_status(s, socket),
        (Response::Status(s), true) => json::render_status(s, socket),
        (Response::Devices(d), false) => human::render_devices(d),
        (Response::Devices(d), true) => json::render_devices(d),
        (Response::Shares(s), false) => human::render_shares(s, style),
        (Response::Shares(s), true) => json::render_shares(s),
        (Response::Item(i), false) => human::render_item(i, style),
        (Response::Item(i), true) => json::render_item(i),
        (Response::LeftGroup(l), false) => human::render_left_group(l),
        (Response::LeftGroup(l), true) => json::render_left_group(l),
        // Only a `watch` request streams these; no one-shot command receives them.
        (Response::Watching { .. } | Response::Event(_), _) => {
            return Err(Failure::transport(
                socket,
                format!("unexpected answer to {}", request.command_name()),
            ))
        }
    })
}

/// The download `target` refers to. When several match (the same file fetched to two places
/// and no `--dest`), a running one wins over a finished one, so `download_file` followed by
/// `wait` follows the new download rather than an old completed copy.
pub fn pick<'a>(downloads: &'a [DownloadStatus], target: &Target) -> Option<&'a DownloadStatus> {
    let rank = |s: DownloadState| match s {
        DownloadState::Downloading => 0,
        DownloadState::Verifying => 0,
        DownloadState::Queued | DownloadState::Paused => 1,
        DownloadState::Complete => 2,
        DownloadState::Failed => 3,
    };
    downloads
        .iter()
        .filter(|d| d.group == target.group && d.file == target.file)
        .filter(|d| match &target.dest {
            None => true,
            // The user may name the directory they gave to download_file.
            Some(dest) => {
                &d.dest == dest || (d.dest.parent() == Some(dest) && d.dest.ends_with(&d.file))
            }
        })
        .min_by_key(|d| rank(d.state))
}

/// Follow the download's events until it completes (Ok), fails, vanishes or `timeout` passes
/// (Err); see `crate::watch::follow`.
pub async fn wait_for(
    client: &Client,
    mut target: Target,
    timeout: Option<u64>,
    json: bool,
) -> Result<DownloadStatus, Failure> {
    let mut reporter = Reporter::for_stderr(json);
    let mut last: Option<DownloadStatus> = None;
    let polling = crate::watch::follow(client, &mut target, &mut reporter, &mut last);
    let limit = async {
        match timeout {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    // The whole loop is bounded, including a request to a daemon that stopped answering; and
    // Ctrl-C clears the progress bar and says the download goes on, instead of dying mid-line.
    let result = tokio::select! {
        r = polling => r,
        () = limit => {
            let secs = timeout.unwrap_or_default();
            let what = format!("timed out after {secs} s waiting for {}/{}", target.group, target.file);
            let f = Failure::new(Status::Refused, "timeout", what);
            Err(match &last {
                Some(d) => f.with_download(d),
                None => f,
            })
        }
        _ = tokio::signal::ctrl_c() => Err(Failure::new(
            Status::Interrupted,
            "interrupted",
            format!("stopped waiting for {}/{}; the download goes on", target.group, target.file),
        )),
    };
    reporter.finish();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testdata::{complete, downloading, failed};

    struct Fixed(&'static str, Vec<(String, bool)>);
    impl PasswordSource for Fixed {
        fn password(&mut self, user: &str, confirm: bool) -> Result<String, Failure> {
            self.1.push((user.to_owned(), confirm));
            Ok(self.0.to_owned())
        }
    }

    fn plan_of(args: &[&str]) -> (Plan, Vec<(String, bool)>) {
        let cli = Cli::parse_from_args(std::iter::once("minitorrctl").chain(args.iter().copied()))
            .unwrap();
        let mut pw = Fixed("s3cret", vec![]);
        let p = plan(cli.command, Path::new("/home/alice/work"), &mut pw).unwrap();
        (p, pw.1)
    }

    #[test]
    fn relative_upload_paths_become_absolute() {
        let (p, _) = plan_of(&["upload_file", "./iso/a.iso", "g1"]);
        assert_eq!(
            p,
            Plan::Send(Request::UploadFile {
                path: "/home/alice/work/iso/a.iso".into(),
                group: "g1".into(),
                name: None,
            })
        );
        let (p, _) = plan_of(&["upload_file", "/srv/b.iso", "g1"]);
        assert_eq!(
            p,
            Plan::Send(Request::UploadFile {
                path: "/srv/b.iso".into(),
                group: "g1".into(),
                name: None,
            })
        );
    }

    #[test]
    fn download_destination_is_resolved_even_if_missing() {
        let (p, _) = plan_of(&["download_file", "g1", "a.iso", "not-yet/there"]);
        assert_eq!(
            p,
            Plan::Download {
                request: Request::DownloadFile {
                    group: "g1".into(),
                    file: "a.iso".into(),
                    dest: "/home/alice/work/not-yet/there".into(),
                    only: vec![],
                },
                wait: false,
                timeout: None
            }
        );
    }

    /// `dir/` means "a directory, create it if missing" to the daemon: the slash must survive
    /// (PathBuf equality ignores it, so compare the raw strings).
    #[test]
    fn a_trailing_slash_on_the_destination_reaches_the_daemon() {
        for (given, sent) in [
            ("reports/", "/home/alice/work/reports/"),
            ("reports", "/home/alice/work/reports"),
            ("../out/", "/home/alice/work/../out/"),
            ("/srv/in/", "/srv/in/"),
        ] {
            let (p, _) = plan_of(&["download_file", "g1", "a.iso", given]);
            let Plan::Download {
                request: Request::DownloadFile { dest, .. },
                ..
            } = p
            else {
                panic!("{p:?}")
            };
            assert_eq!(dest.as_os_str(), sent, "{given}");
        }
    }

    #[test]
    fn real_cwd_is_used_for_relative_paths() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(resolve_path(&cwd, Path::new("x")).unwrap(), cwd.join("x"));
        assert!(resolve_path(&cwd, Path::new("x")).unwrap().is_absolute());
    }

    #[test]
    fn passwords_are_asked_only_when_missing_or_dash() {
        let (p, asked) = plan_of(&["login", "alice", "given"]);
        assert_eq!(
            p,
            Plan::Send(Request::Login {
                user: "alice".into(),
                password: "given".into()
            })
        );
        assert!(asked.is_empty());
        let (p, asked) = plan_of(&["login", "alice", "-"]);
        assert_eq!(
            p,
            Plan::Send(Request::Login {
                user: "alice".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(asked, vec![("alice".to_owned(), false)]);
        let (_, asked) = plan_of(&["create_user", "bob"]);
        assert_eq!(
            asked,
            vec![("bob".to_owned(), true)],
            "new accounts confirm the password"
        );
    }

    #[test]
    fn wait_target_dest_is_absolute() {
        let (p, _) = plan_of(&["wait", "g1", "a.iso", "--dest", "in", "--timeout", "5"]);
        assert_eq!(
            p,
            Plan::Wait {
                target: Target {
                    group: "g1".into(),
                    file: "a.iso".into(),
                    dest: Some("/home/alice/work/in".into())
                },
                timeout: Some(5)
            }
        );
    }

    #[test]
    fn pick_prefers_running_download_and_honours_dest() {
        let mut old = downloading();
        old.state = DownloadState::Complete;
        old.dest = "/old/debian.iso".into();
        let new = downloading();
        let list = vec![old.clone(), new.clone(), complete(), failed()];
        let t = |dest: Option<&str>| Target {
            group: "g1".into(),
            file: "debian.iso".into(),
            dest: dest.map(Into::into),
        };
        assert_eq!(pick(&list, &t(None)), Some(&new));
        assert_eq!(pick(&list, &t(Some("/old/debian.iso"))), Some(&old));
        assert_eq!(
            pick(&list, &t(Some("/old"))),
            Some(&old),
            "the directory given to download_file works too"
        );
        assert_eq!(pick(&list, &t(Some("/elsewhere"))), None);
        let other = Target {
            group: "g2".into(),
            file: "debian.iso".into(),
            dest: None,
        };
        assert_eq!(pick(&list, &other), None);
    }

    #[test]
    fn error_response_becomes_status_1() {
        let r = Response::error(proto::control::ErrorKind::Refused, "wrong password");
        let f = render(&r, &Request::Logout, false, Path::new("/s")).unwrap_err();
        assert_eq!(
            (f.status, f.kind, f.message.as_str()),
            (Status::Refused, "refused", "wrong password")
        );
    }
}

#[cfg(test)]
mod item_tests {
    use super::*;
    use crate::password::PasswordSource;

    struct NoPassword;
    impl PasswordSource for NoPassword {
        fn password(&mut self, _: &str, _: bool) -> Result<String, Failure> {
            unreachable!("list_files asks for no password")
        }
    }

    fn request(args: &[&str]) -> Request {
        let cli = Cli::parse_from_args(std::iter::once("minitorrctl").chain(args.iter().copied()))
            .unwrap();
        match plan(cli.command, Path::new("/"), &mut NoPassword).unwrap() {
            Plan::Send(r) => r,
            _ => panic!("list_files sends one request"),
        }
    }

    #[test]
    fn list_files_with_an_item_lists_that_item() {
        assert_eq!(
            request(&["list_files", "g1"]),
            Request::ListFiles { group: "g1".into() }
        );
        // Names are NFC-normalised like every file name.
        assert_eq!(
            request(&["list_files", "g1", "cafe\u{301}"]),
            Request::ListItem {
                group: "g1".into(),
                item: "caf\u{e9}".into()
            }
        );
        let bad = Cli::parse_from_args(["minitorrctl", "list_files", "g1", "a/b"]);
        assert!(bad.is_err(), "an item name is one path component");
    }
}

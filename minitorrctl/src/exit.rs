//! Exit statuses and the one error value every failure ends up as.
//!
//! The statuses are a contract with scripts (documented in `--help` and docs/cli.md):
//! 0 success, 1 refused / failed, 2 usage, 3 daemon unreachable or incompatible.

use std::path::Path;

use proto::control::{DownloadStatus, ErrorKind, ErrorReply, Request};
use proto::handshake::HandshakeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success = 0,
    /// The daemon or tracker said no, a download failed, or `wait` timed out.
    Refused = 1,
    /// Bad arguments; also what clap itself exits with.
    Usage = 2,
    /// No daemon at the socket, or one that speaks another protocol.
    Unreachable = 3,
    /// Ctrl-C while waiting: the shell convention 128 + SIGINT.
    Interrupted = 130,
}

impl Status {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A failure as shown to the user: one line, an optional hint, a machine-readable kind for
/// `--json`, and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: Status,
    /// Stable identifier, see docs/cli-json.md (`refused`, `not_logged_in`, `unreachable`, …).
    pub kind: &'static str,
    pub message: String,
    pub hint: Option<String>,
    /// The download a `download_file --wait` / `wait` failure is about, for `--json`.
    pub download: Option<Box<DownloadStatus>>,
}

/// What to do when minitorrd cannot be reached: the one thing users need to know next.
pub fn start_daemon_hint() -> String {
    format!(
        "Is minitorrd running? Start it with: minitorrd {} tracker_info.txt (or systemctl --user start minitorrd)",
        proto::defaults::DEFAULT_PEER_ADDR
    )
}

impl Failure {
    pub fn new(status: Status, kind: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            kind,
            message: message.into(),
            hint: None,
            download: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_download(mut self, d: &DownloadStatus) -> Failure {
        self.download = Some(Box::new(d.clone()));
        self
    }

    /// The one line printed on stderr (without the `minitorrctl: ` prefix).
    pub fn line(&self) -> String {
        match &self.hint {
            Some(h) => format!("{}; {h}", self.message),
            None => self.message.clone(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Status::Usage, "usage", message)
    }

    /// `connect()` on the socket failed (missing file, nobody listening, permissions).
    pub fn connect(socket: &Path, err: &std::io::Error) -> Failure {
        let reason = describe_io(err);
        let mut f = Failure::new(
            Status::Unreachable,
            "unreachable",
            format!("cannot reach minitorrd at {} ({reason}).", socket.display()),
        );
        // The hint is part of the one line: the brief is "one line on stderr that says what to do".
        f.message = if err.kind() == std::io::ErrorKind::PermissionDenied {
            format!(
                "{} Is the socket another user's? Pass yours with --socket or {}",
                f.message,
                proto::defaults::SOCKET_ENV
            )
        } else {
            format!("{} {}", f.message, start_daemon_hint())
        };
        f
    }

    pub fn handshake(socket: &Path, err: &HandshakeError) -> Failure {
        let at = socket.display();
        let closed = || {
            let m = format!(
                "minitorrd at {at} closed the connection during the handshake; see its log"
            );
            ("unreachable", m)
        };
        let (kind, message) = match err {
            HandshakeError::VersionMismatch { ours, theirs } => (
                "protocol",
                format!("daemon speaks protocol {theirs}, this minitorrctl speaks {ours}; use matching versions"),
            ),
            HandshakeError::NotMinitorr => {
                ("protocol", format!("{at} is not a minitorrd control socket (it does not speak the Minitorr protocol)"))
            }
            HandshakeError::WrongLink { got, .. } => {
                ("protocol", format!("{at} is not a minitorrd control socket (it expects a {got} link)"))
            }
            // Our preamble is written before theirs is read, so a peer that hangs up at once
            // shows as a broken pipe: the same story as a close.
            HandshakeError::Closed => closed(),
            HandshakeError::Io(e) if hung_up(e) => closed(),
            HandshakeError::Io(e) => {
                ("unreachable", format!("cannot talk to minitorrd at {at} ({})", describe_io(e)))
            }
        };
        Failure::new(Status::Unreachable, kind, message)
    }

    /// The socket's directory or the process listening on it is not the user's own: nothing
    /// (not even the handshake, let alone a password) was sent.
    pub fn untrusted(socket: &Path, why: impl std::fmt::Display) -> Failure {
        Failure::new(
            Status::Unreachable,
            "untrusted_socket",
            format!("refusing to talk to {}: {why}", socket.display()),
        )
    }

    pub fn handshake_timeout(socket: &Path, secs: u64) -> Failure {
        Failure::new(
            Status::Unreachable,
            "unreachable",
            format!(
                "minitorrd at {} did not answer the handshake within {secs} s; is it hung?",
                socket.display()
            ),
        )
    }

    /// The connection broke or carried something undecodable after the handshake.
    pub fn transport(socket: &Path, what: impl std::fmt::Display) -> Failure {
        Failure::new(
            Status::Unreachable,
            "protocol",
            format!(
                "lost minitorrd at {} ({what}); see its log",
                socket.display()
            ),
        )
    }

    /// A `Response::Error` from the daemon, with a hint when there is an obvious next step.
    pub fn refused(reply: &ErrorReply, request: &Request) -> Failure {
        let f = Failure::new(
            Status::Refused,
            error_kind_name(reply.kind),
            reply.message.clone(),
        );
        // One hint per error: none when the message already says what to run.
        if crate::hints::already_instructs(&reply.message) {
            return f;
        }
        match hint_for(reply.kind, request) {
            Some(h) => f.with_hint(h),
            None => f,
        }
    }
}

/// `ErrorKind` as the stable snake_case string used in `--json` output.
pub fn error_kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Refused => "refused",
        ErrorKind::NotLoggedIn => "not_logged_in",
        ErrorKind::NotFound => "not_found",
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::TrackerUnavailable => "tracker_unavailable",
        ErrorKind::QuotaExceeded => "quota_exceeded",
        ErrorKind::Internal => "internal",
        ErrorKind::TrackerDatabaseUnavailable => "tracker_database_unavailable",
    }
}

fn hint_for(kind: ErrorKind, request: &Request) -> Option<String> {
    Some(match (kind, request) {
        (ErrorKind::NotLoggedIn, _) => "log in first: minitorrctl login <user_id>".into(),
        (ErrorKind::TrackerUnavailable, _) => {
            "check that trackerd is running and tracker_info lists it".into()
        }
        (ErrorKind::Internal, _) => "see minitorrd's log for details".into(),
        (ErrorKind::TrackerDatabaseUnavailable, _) => {
            "the tracker is up but cannot reach its database; nothing was changed: try again in a moment (operators: see trackerd's log)".into()
        }
        (ErrorKind::QuotaExceeded, _) => {
            "stop sharing files you no longer need (stop_share), or ask the tracker's operator for a bigger quota".into()
        }
        (
            ErrorKind::NotFound,
            Request::DownloadFile { group, .. }
            | Request::StopShare { group, .. }
            | Request::RemoveFile { group, .. }
            | Request::ListItem { group, .. },
        ) => {
            format!("see what is shared: minitorrctl list_files {group}")
        }
        (
            ErrorKind::NotFound,
            Request::JoinGroup { .. } | Request::ListFiles { .. } | Request::ListRequests { .. },
        ) => "see all groups: minitorrctl list_groups".into(),
        _ => return None,
    })
}

/// The other side closed the connection under us.
pub fn hung_up(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    )
}

/// `io::Error` without Rust's "(os error 2)" suffix: "No such file or directory".
fn describe_io(err: &std::io::Error) -> String {
    let s = err.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_the_documented_ones() {
        assert_eq!(Status::Success.code(), 0);
        assert_eq!(Status::Refused.code(), 1);
        assert_eq!(Status::Usage.code(), 2);
        assert_eq!(Status::Unreachable.code(), 3);
        assert_eq!(Status::Interrupted.code(), 130);
    }

    #[test]
    fn missing_socket_is_unreachable_with_start_hint() {
        let err = std::io::Error::from_raw_os_error(2);
        let f = Failure::connect(Path::new("/run/user/1000/minitorr/minitorrd.sock"), &err);
        assert_eq!(f.status, Status::Unreachable);
        assert_eq!(
            f.message,
            "cannot reach minitorrd at /run/user/1000/minitorr/minitorrd.sock (No such file or directory). \
             Is minitorrd running? Start it with: minitorrd 127.0.0.1:7001 tracker_info.txt \
             (or systemctl --user start minitorrd)"
        );
        assert!(!f.message.contains('\n'));
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        let f = Failure::handshake(
            Path::new("/s"),
            &HandshakeError::VersionMismatch { ours: 2, theirs: 3 },
        );
        assert_eq!(f.status, Status::Unreachable);
        assert_eq!(
            f.message,
            "daemon speaks protocol 3, this minitorrctl speaks 2; use matching versions"
        );
        let f = Failure::handshake(Path::new("/s"), &HandshakeError::NotMinitorr);
        assert_eq!((f.status, f.kind), (Status::Unreachable, "protocol"));
    }

    #[test]
    fn every_daemon_error_is_status_1_with_hints() {
        let req = Request::ListGroups;
        for kind in [
            ErrorKind::Refused,
            ErrorKind::NotLoggedIn,
            ErrorKind::NotFound,
            ErrorKind::InvalidInput,
            ErrorKind::TrackerUnavailable,
            ErrorKind::QuotaExceeded,
            ErrorKind::Internal,
            ErrorKind::TrackerDatabaseUnavailable,
        ] {
            let f = Failure::refused(
                &ErrorReply {
                    kind,
                    message: "no".into(),
                },
                &req,
            );
            assert_eq!(f.status, Status::Refused);
            assert_eq!(f.kind, error_kind_name(kind));
        }
        let f = Failure::refused(
            &ErrorReply {
                kind: ErrorKind::NotLoggedIn,
                message: "x".into(),
            },
            &req,
        );
        assert_eq!(
            f.hint.as_deref(),
            Some("log in first: minitorrctl login <user_id>")
        );
        let f = Failure::refused(
            &ErrorReply {
                kind: ErrorKind::TrackerUnavailable,
                message: "x".into(),
            },
            &Request::Status,
        );
        assert_eq!(
            f.hint.as_deref(),
            Some("check that trackerd is running and tracker_info lists it")
        );
        let stop = Request::StopShare {
            group: "g1".into(),
            file: "a".into(),
        };
        let f = Failure::refused(
            &ErrorReply {
                kind: ErrorKind::NotFound,
                message: "x".into(),
            },
            &stop,
        );
        assert_eq!(
            f.hint.as_deref(),
            Some("see what is shared: minitorrctl list_files g1")
        );
        let f = Failure::refused(
            &ErrorReply {
                kind: ErrorKind::Refused,
                message: "x".into(),
            },
            &stop,
        );
        assert_eq!(f.hint, None);
    }

    /// The trial's "not logged in; run: minitorrctl login <user_id>; log in first: …": for
    /// every error kind and every kind of request, a message that already says what to run
    /// gets no second hint, and the line names minitorrctl once.
    #[test]
    fn each_error_says_its_hint_once() {
        let requests = [
            Request::ListGroups,
            Request::Status,
            Request::ListFiles { group: "g1".into() },
            Request::JoinGroup { group: "g1".into() },
            Request::StopShare {
                group: "g1".into(),
                file: "a".into(),
            },
            Request::DownloadFile {
                group: "g1".into(),
                file: "a".into(),
                dest: "/tmp".into(),
                only: vec![],
            },
        ];
        for kind in [
            ErrorKind::Refused,
            ErrorKind::NotLoggedIn,
            ErrorKind::NotFound,
            ErrorKind::InvalidInput,
            ErrorKind::TrackerUnavailable,
            ErrorKind::QuotaExceeded,
            ErrorKind::Internal,
        ] {
            for req in &requests {
                let reply = ErrorReply {
                    kind,
                    message: "not logged in; run: minitorrctl login <user_id>".into(),
                };
                let line = Failure::refused(&reply, req).line();
                assert_eq!(
                    line.matches("minitorrctl").count(),
                    1,
                    "{kind:?} {req:?}: {line}"
                );
                // A plain message gets at most one hint.
                let plain = ErrorReply {
                    kind,
                    message: "no".into(),
                };
                let line = Failure::refused(&plain, req).line();
                assert!(line.matches("; ").count() <= 1, "{kind:?} {req:?}: {line}");
            }
        }
    }
}

//! The command line, as clap derive types. Subcommand names are spelled exactly as the seed's
//! interactive client spelled them (`upload_file`, not `upload-file`), so the seed's README and
//! muscle memory carry over.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use proto::defaults::SOCKET_ENV;

/// Shown at the end of `minitorrctl --help` (and in the man page).
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success
  1    refused by minitorrd or the tracker; download failed or timed out
  2    usage error
  3    minitorrd not reachable, or it speaks another protocol version
  130  interrupted (Ctrl-C) while waiting for a download

With --json, stdout holds exactly one JSON document, also on failure:
  {\"error\": {\"kind\": \"refused\", \"message\": \"...\", ...}}

Every document is described in /usr/local/share/doc/minitorr/cli-json.md (docs/ in the
source tree).

Example:
  minitorrctl login alice && minitorrctl upload_file ./a.iso g1 &&
    minitorrctl list_files g1";

/// Talk to your minitorrd: manage users and groups, share and download files.
#[derive(Debug, Parser)]
#[command(
    name = "minitorrctl",
    version,
    about = "Control a running minitorrd: users, groups, sharing and downloading files",
    long_about = "Control a running minitorrd: users, groups, sharing and downloading files.\n\n\
        Each invocation sends one command to the minitorrd of the current user over its control \
        socket and exits with a status that scripts can rely on.",
    after_long_help = EXIT_STATUS_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// Control socket of minitorrd [env: MINITORR_SOCKET] [default:
    /// $XDG_RUNTIME_DIR/minitorr/minitorrd.sock, or /tmp/minitorr-$UID/minitorrd.sock]
    // No `default_value`: the default depends on the environment, and would otherwise be baked
    // into the shipped man pages and completions. No clap `env =` either: clap counts an
    // argument set from the environment as given, and then prints `--socket <PATH>` in every
    // usage line as if it were required. Both are resolved in `Cli::socket_path`.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Print exactly one JSON document on stdout (schema:
    /// /usr/local/share/doc/minitorr/cli-json.md)
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// `--socket`, else `$MINITORR_SOCKET` (set but empty counts as unset, as for most path
    /// variables), else the per-user default.
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(Cli::socket_path_from_env)
    }

    /// `$MINITORR_SOCKET`, else the per-user default (no `--socket` given).
    pub fn socket_path_from_env() -> PathBuf {
        std::env::var_os(SOCKET_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(proto::defaults::default_socket_path)
    }

    /// The full command line definition: the derive's, plus a dashed alias for every
    /// underscore command (`create-user` for `create_user`). Generic, so commands added later
    /// get theirs without an attribute each. The aliases are hidden: help, man pages and
    /// completions keep showing the one documented spelling.
    pub fn definition() -> clap::Command {
        <Cli as clap::CommandFactory>::command().mut_subcommands(|sub| {
            let dashed = sub.get_name().replace('_', "-");
            if dashed == sub.get_name() {
                sub
            } else {
                sub.alias(dashed)
            }
        })
    }

    /// Parse a command line against [`Cli::definition`].
    pub fn parse_from_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::FromArgMatches;
        let mut matches = Cli::definition().try_get_matches_from(args)?;
        Cli::from_arg_matches_mut(&mut matches)
    }
}

#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Register a new user with the tracker
    #[command(
        name = "create_user",
        after_help = "The password is asked for (twice, without echo) when omitted or `-`; \
            without a terminal it is read as one line from stdin.\n\n\
            Example:\n  minitorrctl create_user alice\n  printf '%s\\n' \"$PW\" | minitorrctl create_user alice"
    )]
    CreateUser {
        #[arg(value_parser = user_id)]
        user_id: String,
        /// Password; omit or give `-` to be prompted (arguments are visible to other users in ps)
        password: Option<String>,
    },

    /// Log in; files you shared before are shared again
    #[command(
        name = "login",
        after_help = "The password is asked for (without echo) when omitted or `-`; \
            without a terminal it is read as one line from stdin.\n\n\
            Example:\n  minitorrctl login alice"
    )]
    Login {
        #[arg(value_parser = user_id)]
        user_id: String,
        /// Password; omit or give `-` to be prompted (arguments are visible to other users in ps)
        password: Option<String>,
    },

    /// Log out and stop sharing all files until the next login
    #[command(name = "logout")]
    Logout,

    /// Create a group; you become its owner
    #[command(
        name = "create_group",
        after_help = "Example:\n  minitorrctl create_group g1"
    )]
    CreateGroup {
        #[arg(value_parser = group_id)]
        group_id: String,
    },

    /// Ask the owner of a group to let you in
    #[command(
        name = "join_group",
        after_help = "Example:\n  minitorrctl join_group g1"
    )]
    JoinGroup {
        #[arg(value_parser = group_id)]
        group_id: String,
    },

    /// Leave a group (and stop sharing your files in it)
    #[command(
        name = "leave_group",
        after_help = "Example:\n  minitorrctl leave_group g1"
    )]
    LeaveGroup {
        #[arg(value_parser = group_id)]
        group_id: String,
    },

    /// List pending join requests of a group you own, one user per line
    #[command(
        name = "list_requests",
        after_help = "Example:\n  minitorrctl list_requests g1"
    )]
    ListRequests {
        #[arg(value_parser = group_id)]
        group_id: String,
    },

    /// Let a user into a group you own
    #[command(
        name = "accept_request",
        after_help = "Example:\n  minitorrctl accept_request g1 bob"
    )]
    AcceptRequest {
        #[arg(value_parser = group_id)]
        group_id: String,
        #[arg(value_parser = user_id)]
        user_id: String,
    },

    /// Turn down a user's request to join a group you own
    #[command(
        name = "reject_request",
        after_help = "Example:\n  minitorrctl reject_request g1 mallory"
    )]
    RejectRequest {
        #[arg(value_parser = group_id)]
        group_id: String,
        #[arg(value_parser = user_id)]
        user_id: String,
    },

    /// Remove a member from a group you own (their shares there are withdrawn and their open
    /// downloads from other members are cut)
    #[command(
        name = "remove_member",
        after_help = "Example:\n  minitorrctl remove_member g1 mallory"
    )]
    RemoveMember {
        #[arg(value_parser = group_id)]
        group_id: String,
        #[arg(value_parser = user_id)]
        user_id: String,
    },

    /// List all groups in the network and your relation to each
    #[command(name = "list_groups")]
    ListGroups,

    /// List the files shared in a group, or the files of one item (a shared directory tree)
    #[command(
        name = "list_files",
        after_help = "A shared directory tree is one item, listed as NAME/ with its file count; \
            give its name to list its files (empty directories end in /).\n\n\
            Example:\n  minitorrctl list_files g1\n  minitorrctl list_files g1 proj"
    )]
    ListFiles {
        #[arg(value_parser = group_id)]
        group_id: String,
        /// List this item's files (path and size) instead of the group's items
        #[arg(value_parser = file_name)]
        item: Option<String>,
    },

    /// Share a local file with a group (it is hashed first, which takes a while for big files)
    #[command(
        name = "upload_file",
        after_help = "The path is made absolute against the current directory; the file stays \
            where it is and is served from there. Names are shared in Unicode NFC form; a \
            name the group already has with other content is refused: use --name, or ask the \
            group's owner to remove_file the old entry. A directory is shared as one item \
            (a tree) named after it: its regular files and subdirectories, empty ones kept; \
            symbolic links, devices, sockets and FIFOs are skipped (never followed) and \
            listed in a warning.\n\n\
            Example:\n  minitorrctl upload_file ./a.iso g1\n  \
            minitorrctl upload_file ./a.iso g1 --name a-2026.iso\n  \
            minitorrctl upload_file ./project g1"
    )]
    UploadFile {
        /// File (or directory: a tree) to share
        file_path: PathBuf,
        #[arg(value_parser = group_id)]
        group_id: String,
        /// Share it under this name instead of its own file name
        #[arg(long, value_name = "NAME", value_parser = file_name)]
        name: Option<String>,
    },

    /// Start downloading a file of a group
    #[command(
        name = "download_file",
        after_help = "The destination works as with cp: an existing directory receives the \
            file under its own name; a path ending in / is a directory, created if missing \
            (only that last level: its parent must exist); any other path is the file's new \
            name, in a directory that must exist. A missing directory is refused before \
            anything is fetched. An existing file is never overwritten: if it is already this \
            file (same size and SHA1) the download is complete at once and the file is shared; \
            otherwise it is refused. Without --wait the command returns as soon as minitorrd accepted the \
            download; follow it with `show_downloads` or `wait`.\n\n\
            Example:\n  minitorrctl download_file g1 a.iso ~/Downloads --wait"
    )]
    DownloadFile {
        #[arg(value_parser = group_id)]
        group_id: String,
        #[arg(value_parser = file_name)]
        file_name: String,
        /// Directory (existing, or ending in / to create it) or file path to download to
        destination_path: PathBuf,
        /// Stay until the download completes (exit 0) or fails (exit 1), showing progress
        #[arg(long)]
        wait: bool,
        /// With --wait: give up (exit 1) after this many seconds; the download goes on
        #[arg(long, value_name = "SECS", requires = "wait")]
        timeout: Option<u64>,
        /// Of a directory tree, fetch only the files matching GLOB (repeatable; `*` stays in
        /// one directory, `**` crosses them, a directory selects all under it); a later
        /// download_file of the same item adds the rest
        #[arg(long, value_name = "GLOB")]
        only: Vec<String>,
    },

    /// Show downloads: [D] downloading, [C] complete, [F] failed, [P] paused, [Q] queued
    #[command(name = "show_downloads")]
    ShowDownloads,

    /// Stop sharing one of your files in a group
    #[command(
        name = "stop_share",
        after_help = "Example:\n  minitorrctl stop_share g1 a.iso"
    )]
    StopShare {
        #[arg(value_parser = group_id)]
        group_id: String,
        #[arg(value_parser = legacy_file_name)]
        file_name: String,
    },

    /// Remove a file from a group you own, whoever shares it
    #[command(
        name = "remove_file",
        after_help = "Only the group's owner may do this. The file entry and every member's \
            share of it are removed, so a wrong or bogus registration no longer blocks the \
            name; members who still have the file can share it again. The files on members' \
            disks are not touched.\n\n\
            Example:\n  minitorrctl remove_file g1 a.iso"
    )]
    RemoveFile {
        #[arg(value_parser = group_id)]
        group_id: String,
        /// Name of the file in the group (as list_files shows it)
        #[arg(value_parser = legacy_file_name)]
        file_name: String,
    },

    /// Stop a download and forget it; its part file is deleted unless --keep
    #[command(
        name = "cancel",
        after_help = "Works on a running, queued, paused or failed download. With --keep the \
            part file (.NAME.minitorr-part next to the destination) stays, so a later \
            download_file to the same destination resumes from its verified pieces.\n\n\
            Example:\n  minitorrctl cancel g1 a.iso"
    )]
    Cancel {
        #[arg(value_parser = group_id)]
        group_id: String,
        #[arg(value_parser = file_name)]
        file_name: String,
        /// Keep the part file
        #[arg(long)]
        keep: bool,
    },

    /// Pause a running or queued download ([P] in show_downloads)
    #[command(
        name = "pause",
        after_help = "Verified pieces stay in the part file; a paused download stays paused \
            across restarts until resume.\n\n\
            Example:\n  minitorrctl pause g1 a.iso"
    )]
    Pause {
        #[arg(value_parser = group_id)]
        group_id: String,
        #[arg(value_parser = file_name)]
        file_name: String,
    },

    /// Continue a paused (or failed) download from its part file
    #[command(
        name = "resume",
        after_help = "It runs at once, or waits in the queue ([Q]) when max_active_downloads \
            downloads are running.\n\n\
            Example:\n  minitorrctl resume g1 a.iso"
    )]
    Resume {
        #[arg(value_parser = group_id)]
        group_id: String,
        #[arg(value_parser = file_name)]
        file_name: String,
    },

    /// Forget finished or failed entries in show_downloads
    #[command(
        name = "remove",
        after_help = "Finished files stay where they are; a failed download's part file is \
            deleted (nothing can resume it any more).\n\n\
            Examples:\n  minitorrctl remove g1 a.iso\n  minitorrctl remove --failed\n  \
            minitorrctl remove --complete"
    )]
    Remove {
        #[arg(value_parser = group_id, requires = "file_name", conflicts_with_all = ["failed", "complete"])]
        group_id: Option<String>,
        #[arg(value_parser = file_name)]
        file_name: Option<String>,
        /// Every failed entry
        #[arg(long, conflicts_with = "complete")]
        failed: bool,
        /// Every complete entry
        #[arg(long)]
        complete: bool,
    },

    /// Show who is logged in, the tracker connection and counts
    #[command(name = "status")]
    Status,

    /// Wait for a download that is already running to finish (for scripts)
    #[command(
        name = "wait",
        after_help = "Exits 0 when the download is complete, 1 when it failed or on --timeout.\n\n\
            Example:\n  minitorrctl download_file g1 a.iso /srv/in && minitorrctl wait g1 a.iso --timeout 600"
    )]
    Wait {
        #[arg(value_parser = group_id)]
        group_id: String,
        #[arg(value_parser = file_name)]
        file_name: String,
        /// Which download, when the same file is downloaded to several places
        #[arg(long, value_name = "PATH")]
        dest: Option<PathBuf>,
        /// Give up (exit 1) after this many seconds; the download goes on
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },

    /// Print a shell completion script on stdout
    #[command(name = "completions", hide = true)]
    Completions { shell: Shell },

    /// Write man pages (minitorrctl.1 and one per command) into a directory
    #[command(name = "man", hide = true)]
    Man { out_dir: PathBuf },

    /// List your devices: the daemons that log in by themselves after a restart
    #[command(
        name = "devices",
        after_help = "A password login registers the daemon's device key with the tracker;             after a restart it logs in again with that key, never a stored password.             The current device is marked with *.\n\nExample:\n  minitorrctl devices"
    )]
    Devices,

    /// Revoke one of your devices: its sessions end and it no longer logs in by itself
    #[command(
        name = "revoke_device",
        after_help = "Revoking the device you run this on logs it out. A password login on             a revoked device makes it active again.\n\nExample:\n  minitorrctl revoke_device old-laptop"
    )]
    RevokeDevice {
        #[arg(value_name = "NAME")]
        name: String,
    },

    /// List what you share: per file its group, path, size, bytes uploaded, peers served, state
    #[command(
        name = "list_shares",
        after_help = "States: serving; changed (the file changed on disk since it was shared); \
            missing (the file is gone); waiting (not registered with the tracker yet, retried). \
            A changed or missing file is withdrawn from the tracker at once and offered again \
            when it comes back with the shared content; stop_share forgets it. Uploaded bytes \
            and peers served count since minitorrd started.\n\n\
            Example:\n  minitorrctl list_shares\n  minitorrctl --json list_shares"
    )]
    ListShares,

    /// Print minitorrd's events as they happen: progress, completion, failures, peers, shares
    #[command(
        name = "watch",
        after_help = "Events: download started, progress (at most 10 a second per download), \
            completed, failed, paused, queued, cancelled; holders online and gone; peers \
            connected and disconnected; shares added and withdrawn. With --json, one JSON object \
            per line (see /usr/local/share/doc/minitorr/cli-json.md). Human lines start with the time in UTC.\n\n\
            Runs until Ctrl-C or until the reader of its output goes away (exit 0), or until \
            minitorrd stops (exit 3). A watcher too slow to read gets a `lagged` event saying \
            how many events it missed.\n\n\
            Example:\n  minitorrctl watch\n  minitorrctl --json watch g1 a.iso | jq -c 'select(.event == \"progress\")'"
    )]
    Watch {
        /// Only events about this group
        #[arg(value_parser = group_id)]
        group_id: Option<String>,
        /// Only events about this file of the group
        #[arg(value_parser = file_name, requires = "group_id")]
        file_name: Option<String>,
    },
}

impl Command {
    /// `create_user`/`login` without a password (or with `-`) will ask for one.
    pub fn prompts_for_password(&self) -> bool {
        match self {
            Command::CreateUser { password, .. } | Command::Login { password, .. } => {
                password.as_deref().map_or(true, |p| p == "-")
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

// Names are checked here with the protocol's own rules, so a typo is a usage error (exit 2)
// before anything is sent, with the same wording the daemon would use. They are sent in
// Unicode NFC form: `café` typed precomposed or decomposed is one name.

fn user_id(s: &str) -> Result<String, String> {
    proto::names::user(s).map_err(|e| e.to_string())
}

fn group_id(s: &str) -> Result<String, String> {
    proto::names::group(s).map_err(|e| e.to_string())
}

fn file_name(s: &str) -> Result<String, String> {
    proto::names::file_name(s).map_err(|e| e.to_string())
}

/// For commands that address an existing entry, which may predate the NFC and look-alike
/// rules (stop_share, remove_file): sent as typed; the tracker also tries the NFC form.
fn legacy_file_name(s: &str) -> Result<String, String> {
    proto::names::validate_legacy_file_name(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::parse_from_args(std::iter::once("minitorrctl").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
        Cli::definition().debug_assert();
    }

    #[test]
    fn every_underscore_command_has_a_dashed_alias() {
        let def = Cli::definition();
        let mut checked = 0;
        for sub in def.get_subcommands() {
            let name = sub.get_name();
            if !name.contains('_') {
                continue;
            }
            let dashed = name.replace('_', "-");
            let found = def.find_subcommand(&dashed).map(|c| c.get_name());
            assert_eq!(found, Some(name), "{dashed} should mean {name}");
            checked += 1;
        }
        assert!(checked >= 15, "only {checked} underscore commands?");
        assert_eq!(
            parse(&["create-user", "alice", "pw"]).unwrap().command,
            parse(&["create_user", "alice", "pw"]).unwrap().command
        );
        assert_eq!(
            parse(&["list-groups"]).unwrap().command,
            Command::ListGroups
        );
    }

    #[test]
    fn help_subcommand_works() {
        let e = parse(&["help"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayHelp);
        let e = parse(&["help", "download_file"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayHelp);
        assert!(e.to_string().contains("DESTINATION_PATH"), "{e}");
        let e = parse(&["help", "download-file"]).unwrap_err();
        assert!(e.to_string().contains("DESTINATION_PATH"), "{e}");
        assert_eq!(
            parse(&["help", "nope"]).unwrap_err().kind(),
            ErrorKind::InvalidSubcommand
        );
    }

    #[test]
    fn seed_spellings_parse() {
        let cli = parse(&["upload_file", "a.iso", "g1"]).unwrap();
        assert_eq!(
            cli.command,
            Command::UploadFile {
                file_path: "a.iso".into(),
                group_id: "g1".into(),
                name: None,
            }
        );
        let cli = parse(&["upload_file", "a.iso", "g1", "--name", "cafe\u{301}.iso"]).unwrap();
        assert_eq!(
            cli.command,
            Command::UploadFile {
                file_path: "a.iso".into(),
                group_id: "g1".into(),
                name: Some("caf\u{e9}.iso".into()),
            },
            "names are sent in NFC"
        );
        let cli = parse(&["remove_file", "g1", "a.iso"]).unwrap();
        assert_eq!(
            cli.command,
            Command::RemoveFile {
                group_id: "g1".into(),
                file_name: "a.iso".into(),
            }
        );
        let e = parse(&["create_user", "\u{430}lice", "pw"]).unwrap_err();
        assert!(e.to_string().contains("U+0430 is Cyrillic"), "{e}");
        let cli = parse(&["accept_request", "g1", "bob"]).unwrap();
        assert_eq!(
            cli.command,
            Command::AcceptRequest {
                group_id: "g1".into(),
                user_id: "bob".into()
            }
        );
        let cli = parse(&[
            "download_file",
            "g1",
            "a b.iso",
            "/tmp",
            "--wait",
            "--timeout",
            "9",
        ])
        .unwrap();
        assert_eq!(
            cli.command,
            Command::DownloadFile {
                group_id: "g1".into(),
                file_name: "a b.iso".into(),
                destination_path: "/tmp".into(),
                wait: true,
                timeout: Some(9),
                only: vec![],
            }
        );
        assert!(parse(&["login", "alice"])
            .unwrap()
            .command
            .prompts_for_password());
        assert!(parse(&["create_user", "a", "-"])
            .unwrap()
            .command
            .prompts_for_password());
        assert!(!parse(&["login", "alice", "pw"])
            .unwrap()
            .command
            .prompts_for_password());
        assert!(matches!(
            parse(&["login", "alice"]).unwrap().command,
            Command::Login { password: None, .. }
        ));
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&["list_files", "g1", "--json", "--socket", "/x.sock"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.socket_path(), PathBuf::from("/x.sock"));
        let cli = parse(&["--json", "status"]).unwrap();
        assert!(cli.json);
    }

    #[test]
    fn usage_errors() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            kind(&["upload-fil", "a", "g1"]),
            ErrorKind::InvalidSubcommand
        );
        assert_eq!(
            kind(&["upload_file", "a"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(kind(&["create_group", "a/b"]), ErrorKind::ValueValidation);
        assert_eq!(
            kind(&["stop_share", "g1", ".."]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["download_file", "g1", "f", "/d", "--timeout", "3"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["wait", "g1", "f", "--timeout", "soon"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&[]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        // clap's usage errors exit with 2, which is part of our documented contract.
        assert_eq!(parse(&["nope"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn hidden_commands_parse() {
        assert_eq!(
            parse(&["completions", "zsh"]).unwrap().command,
            Command::Completions { shell: Shell::Zsh }
        );
        assert_eq!(
            parse(&["man", "out"]).unwrap().command,
            Command::Man {
                out_dir: "out".into()
            }
        );
    }
}

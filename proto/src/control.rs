//! `minitorrctl` ↔ `minitorrd`, over the Unix control socket. One request, one response, then
//! the CLI closes the connection.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::types::{FileSummary, GroupSummary, Sha1Hash};

/// One variant per CLI command, named as in the seed (`create_user`, `list_files`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Request {
    CreateUser {
        user: String,
        password: String,
    },
    Login {
        user: String,
        password: String,
    },
    Logout,
    CreateGroup {
        group: String,
    },
    JoinGroup {
        group: String,
    },
    LeaveGroup {
        group: String,
    },
    ListRequests {
        group: String,
    },
    AcceptRequest {
        group: String,
        user: String,
    },
    RejectRequest {
        group: String,
        user: String,
    },
    ListGroups,
    ListFiles {
        group: String,
    },
    /// `path` is absolute: the CLI resolves it against its own working directory. `name` is
    /// the name to share it under (default: the path's file name).
    UploadFile {
        path: PathBuf,
        group: String,
        name: Option<String>,
    },
    /// `dest` is absolute: an existing directory (the file keeps its name) or a file path.
    DownloadFile {
        group: String,
        file: String,
        dest: PathBuf,
        /// `--only GLOB` (repeatable): fetch just the files of a tree matching one of these
        /// (a pattern naming a directory selects everything under it). Empty: everything.
        #[serde(default)]
        only: Vec<String>,
    },
    ShowDownloads,
    StopShare {
        group: String,
        file: String,
    },
    /// Group owner only: remove a file entry from the group, whoever shares it.
    RemoveFile {
        group: String,
        file: String,
    },
    /// Daemon status: who is logged in, tracker connection, counts.
    Status,
    /// Owner only: `user` loses membership of `group` as if they had left.
    RemoveMember {
        group: String,
        user: String,
    },
    /// The logged-in user's devices (daemons that logged in with the password).
    Devices,
    /// Revoke the user's device `name`: its sessions end and it no longer logs in by itself.
    RevokeDevice {
        name: String,
    },
    /// Stop a download (running, queued, paused or failed) and forget it; its part file is
    /// deleted unless `keep`.
    CancelDownload {
        group: String,
        file: String,
        keep: bool,
    },
    /// Stop a running or queued download; verified pieces stay in the part file.
    PauseDownload {
        group: String,
        file: String,
    },
    /// Start a paused (or failed) download again from its part file (or queue it).
    ResumeDownload {
        group: String,
        file: String,
    },
    /// Forget finished or failed entries of show_downloads (files on disk stay).
    RemoveDownload {
        which: RemoveDownloads,
    },
    /// What this daemon shares (its complete files), with their state on disk.
    ListShares,
    /// The files of one item of a group (`list_files GROUP ITEM`), answered `Item`.
    ListItem {
        group: String,
        item: String,
    },
    /// Turn this connection into an event stream (`minitorrctl watch`, `wait`): the daemon
    /// answers `Watching` (a snapshot of the matching downloads, taken *after* subscribing, so
    /// nothing that happens later is missed), then sends `Event` frames until the client
    /// closes. `group` / `file` narrow the stream to one group or one file (`file` needs
    /// `group`); events not about a download or share (`Lagged`) always pass.
    Watch {
        group: Option<String>,
        file: Option<String>,
    },
}

/// Which entries `remove` forgets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum RemoveDownloads {
    /// The finished or failed entry (entries) for this group and file.
    One { group: String, file: String },
    /// Every failed entry.
    Failed,
    /// Every complete entry.
    Complete,
}

impl Request {
    /// The seed's command name, for messages and logs.
    pub fn command_name(&self) -> &'static str {
        match self {
            Request::CreateUser { .. } => "create_user",
            Request::Login { .. } => "login",
            Request::Logout => "logout",
            Request::CreateGroup { .. } => "create_group",
            Request::JoinGroup { .. } => "join_group",
            Request::LeaveGroup { .. } => "leave_group",
            Request::ListRequests { .. } => "list_requests",
            Request::AcceptRequest { .. } => "accept_request",
            Request::RejectRequest { .. } => "reject_request",
            Request::ListGroups => "list_groups",
            Request::ListFiles { .. } => "list_files",
            Request::UploadFile { .. } => "upload_file",
            Request::DownloadFile { .. } => "download_file",
            Request::ShowDownloads => "show_downloads",
            Request::StopShare { .. } => "stop_share",
            Request::RemoveFile { .. } => "remove_file",
            Request::Status => "status",
            Request::RemoveMember { .. } => "remove_member",
            Request::Devices => "devices",
            Request::RevokeDevice { .. } => "revoke_device",
            Request::CancelDownload { .. } => "cancel",
            Request::PauseDownload { .. } => "pause",
            Request::ResumeDownload { .. } => "resume",
            Request::RemoveDownload { .. } => "remove",
            Request::ListShares => "list_shares",
            Request::ListItem { .. } => "list_files",
            Request::Watch { .. } => "watch",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Response {
    /// Success with nothing to return but a sentence for the user.
    Done {
        message: String,
    },
    LoggedIn(LoginReport),
    Groups(Vec<GroupSummary>),
    Requests {
        group: String,
        users: Vec<String>,
    },
    Files {
        group: String,
        files: Vec<FileSummary>,
    },
    Uploaded(FileSummary),
    DownloadStarted(DownloadStatus),
    Downloads(Vec<DownloadStatus>),
    Status(DaemonStatus),
    Error(ErrorReply),
    Devices(Vec<crate::types::DeviceInfo>),
    Shares(Vec<ShareStatus>),
    /// Answer to `ListItem`.
    Item(Box<crate::types::ItemListing>),
    /// Answer to `LeaveGroup`: whether ownership moved or the group was deleted.
    LeftGroup(crate::types::LeftGroup),
    /// `upload_file DIR`: the tree is shared; `skipped` lists what in it was not (symlinks,
    /// devices, sockets, FIFOs — never followed).
    UploadedTree {
        file: FileSummary,
        skipped: Vec<SkippedEntry>,
    },
    /// First answer to `Watch`: the matching downloads as they are now (after subscribing).
    Watching {
        downloads: Vec<DownloadStatus>,
    },
    /// One event of a `Watch` stream.
    Event(DaemonEvent),
}

/// Something inside a shared directory that is not part of the item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SkippedEntry {
    /// Relative to the shared directory.
    pub path: String,
    /// "symbolic link", "FIFO", "socket", "device", …
    pub what: String,
}

/// One shared file, as `list_shares` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ShareStatus {
    pub group: String,
    pub file: String,
    /// Where it is served from on this machine.
    pub path: PathBuf,
    pub size: u64,
    /// Piece bytes sent to other members since minitorrd started.
    pub uploaded_bytes: u64,
    /// Distinct members sent at least one piece since minitorrd started.
    pub peers_served: u32,
    pub state: ShareState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum ShareState {
    /// Registered with the tracker and served.
    Serving,
    /// Changed on disk since it was shared: withdrawn from the tracker; offered again if it
    /// comes back with the shared content.
    Changed,
    /// Gone from disk: withdrawn; offered again if it comes back unchanged.
    Missing,
    /// Unchanged on disk but not registered with the tracker yet (it was unreachable); retried.
    Waiting,
}

/// What happened at login: shares brought back, and ones that could not be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LoginReport {
    pub user: String,
    pub reshared: Vec<ShareRef>,
    pub resumed_downloads: Vec<ShareRef>,
    /// Shares that could not be restored, with the reason (file vanished, changed, …).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ShareRef {
    pub group: String,
    pub file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum DownloadState {
    Downloading,
    Complete,
    Failed,
    /// Re-verifying the part file left by a crash before downloading on (after a restart or
    /// login): `bytes_done` counts the bytes checked so far.
    Verifying,
    /// Stopped by the user (`pause`); `resume` continues from the part file.
    Paused,
    /// Waiting for a slot (`max_active_downloads`); starts when one frees.
    Queued,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct DownloadStatus {
    pub group: String,
    pub file: String,
    pub dest: PathBuf,
    pub state: DownloadState,
    pub size: u64,
    pub sha1: Sha1Hash,
    pub bytes_done: u64,
    pub pieces_done: u32,
    pub pieces_total: u32,
    /// Bytes per second over the last few seconds.
    pub speed_bps: u64,
    pub peers: Vec<PeerStat>,
    /// Why it failed, when `state` is `Failed`.
    pub error: Option<String>,
    /// Milliseconds from start to the first verified piece, once known.
    pub first_piece_ms: Option<u64>,
    /// Milliseconds from start to completion, once complete.
    pub elapsed_ms: u64,
    /// Average bytes per second of this run: bytes fetched since this daemon (re)started the
    /// download, over `elapsed_ms`. Pieces already in the part file from before a resume do
    /// not count.
    #[serde(default)]
    pub avg_bps: u64,
    /// Files of the item whose every piece is verified, and its file count (1 for a single
    /// file; a tree counts its regular files).
    #[serde(default)]
    pub files_done: u32,
    #[serde(default)]
    pub files_total: u32,
    /// A selective download (`--only`): the whole item's totals. `size`, `bytes_done`,
    /// `pieces_done`/`pieces_total` and `files_done`/`files_total` then count the selected
    /// files only. `None`: the whole item is downloaded.
    #[serde(default)]
    pub selection: Option<ItemTotals>,
}

/// An item's totals (see [`DownloadStatus::selection`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ItemTotals {
    pub size: u64,
    pub pieces: u32,
    pub files: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct PeerStat {
    pub addr: String,
    pub user: String,
    pub bytes_received: u64,
    pub connected: bool,
    /// Pieces from this peer that failed their hash check.
    pub bad_pieces: u32,
    /// How the (last) connection to this peer was made.
    #[serde(default)]
    pub path: PeerPath,
    /// Why the last attempt to connect failed, if it did (e.g. unreachable and no relay).
    #[serde(default)]
    pub error: Option<String>,
}

/// How a peer connection was made (issue #14): straight to the holder's address, by a hole
/// punched through NATs with the tracker's help, or spliced by the tracker's relay. The TLS
/// session is end to end in every case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum PeerPath {
    #[default]
    Direct,
    Punched,
    Relayed,
}

impl PeerPath {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerPath::Direct => "direct",
            PeerPath::Punched => "punched",
            PeerPath::Relayed => "relayed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct DaemonStatus {
    pub version: String,
    pub user: Option<String>,
    pub tracker: Option<String>,
    pub tracker_connected: bool,
    pub peer_addr: String,
    pub shares: u32,
    pub downloads: u32,
    /// Whether the tracker answered a round trip just now (`status` asks, with a short
    /// timeout), not whether a connection was once made.
    pub tracker_reachable: bool,
    /// The daemon's automatic login: "off", "logged in", "logging in (…)", or why it is off
    /// (revoked, logged out); see `AutoLogin` in minitorrd.
    pub auto_login: String,
    /// This daemon's device name (`device_name`).
    pub device_name: String,
    /// The peer address the tracker sees for this daemon and hands to others (observed IP,
    /// listening port), once logged in.
    #[serde(default)]
    pub observed_addr: Option<String>,
    /// The relay the tracker offers, and whether this daemon is listening on it for relayed
    /// connections: e.g. "listening at 192.0.2.1:5001", "off (the tracker offers none)".
    #[serde(default)]
    pub relay: String,
    /// The port mapping minitorrd asked its router for (issue #14).
    #[serde(default)]
    pub port_mapping: PortMappingStatus,
}

/// What became of the port mapping of the peer port (`status`, `status --json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct PortMappingStatus {
    pub state: PortMappingState,
    /// "UPnP-IGD", "PCP" or "NAT-PMP" once a gateway answered.
    pub protocol: Option<String>,
    /// The gateway's control address (its LAN side).
    pub gateway: Option<String>,
    /// The mapped public address (the router's external IP and port), once mapped.
    pub external_addr: Option<String>,
    /// Lease granted, in seconds (0: the gateway only grants permanent mappings).
    pub lease_secs: u32,
    /// Why it is not mapped (state `Failed`), or why it is off (`Off`, `NotNeeded`).
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum PortMappingState {
    /// `port_mapping = false` in the config.
    #[default]
    Off,
    /// The peer listen address is public or loopback: nothing to map.
    NotNeeded,
    /// Looking for a gateway / asking it.
    Searching,
    /// Mapped and renewed before the lease runs out.
    Mapped,
    /// No gateway answered or it refused; retried later (`detail` says why).
    Failed,
}

/// A refused or failed request. `kind` drives the CLI's exit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum ErrorKind {
    /// The tracker or daemon said no (wrong password, not the owner, already exists, …).
    Refused,
    /// The command needs a login first.
    NotLoggedIn,
    /// A group, user, file or download that does not exist.
    NotFound,
    /// Bad argument (invalid name, path is a directory, …).
    InvalidInput,
    /// No tracker could be reached.
    TrackerUnavailable,
    /// The tracker's per-member quota would be exceeded.
    QuotaExceeded,
    /// A bug or I/O failure inside the daemon.
    Internal,
    /// The tracker is reachable but its database is not (down or unreachable): nothing was
    /// done; retry later (the tracker recovers by itself when its database is back).
    TrackerDatabaseUnavailable,
}

impl Response {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error(ErrorReply {
            kind,
            message: message.into(),
        })
    }
}

/// One event of the daemon's event stream (`Request::Watch`). `seq` increases by one per
/// event published in this daemon process (a gap means events were filtered out or, with a
/// `Lagged` event, dropped); `at_unix_ms` is when it was published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct DaemonEvent {
    pub seq: u64,
    pub at_unix_ms: u64,
    pub kind: EventKind,
}

/// Which download an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct DownloadRef {
    pub group: String,
    pub file: String,
    pub dest: PathBuf,
}

/// What happened. Append-only: new kinds go at the end (and into docs/cli-json.md); a client
/// that does not know a kind cannot decode it, so old CLIs are not expected to follow new
/// daemons (both ship together).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum EventKind {
    /// This subscriber was too slow: `missed` events were dropped for it (never for others).
    /// Whoever needs exact state asks again (`ShowDownloads`, or a new `Watch`).
    Lagged { missed: u64 },
    /// A coordinator started fetching: a new `download_file`, `resume`, a start from the queue,
    /// an automatic retry, or a download resumed at login. `pieces_done` were already verified.
    DownloadStarted {
        download: DownloadRef,
        size: u64,
        pieces_done: u32,
        pieces_total: u32,
    },
    /// Verified progress, coalesced: at most one per `PROGRESS_EVERY_MS` per download, plus
    /// one when the last piece is verified.
    Progress {
        download: DownloadRef,
        bytes_done: u64,
        size: u64,
        pieces_done: u32,
        pieces_total: u32,
        speed_bps: u64,
    },
    /// The file is verified and in place at `path`.
    DownloadCompleted {
        download: DownloadRef,
        path: PathBuf,
        elapsed_ms: u64,
    },
    DownloadFailed {
        download: DownloadRef,
        reason: String,
    },
    /// Paused or queued (the states without an event of their own).
    DownloadStateChanged {
        download: DownloadRef,
        state: DownloadState,
    },
    /// No longer listed by show_downloads: cancelled (`cancelled`) or a finished entry
    /// forgotten with `remove`.
    DownloadRemoved {
        download: DownloadRef,
        cancelled: bool,
    },
    /// The tracker says a holder of the file came online (a member started sharing or
    /// downloading it).
    HolderOnline {
        download: DownloadRef,
        addr: String,
        user: String,
    },
    /// The tracker says `user` holds the file no more: at `addr`, or anywhere when `addr` is
    /// absent (logout, session expired or replaced, left the group, share withdrawn).
    HolderGone {
        download: DownloadRef,
        user: String,
        addr: Option<String>,
    },
    PeerConnected {
        download: DownloadRef,
        addr: String,
        user: String,
    },
    PeerDisconnected {
        download: DownloadRef,
        addr: String,
        user: String,
        reason: String,
    },
    /// We now serve this file to the group (upload_file, or a download completed).
    ShareAdded {
        group: String,
        file: String,
        size: u64,
        sha1: Sha1Hash,
    },
    /// We stopped serving it (`reason`: stop_share, remove_file, download failed, …).
    ShareWithdrawn {
        group: String,
        file: String,
        reason: String,
    },
}

/// Progress events of one download are at least this far apart (10 per second at most).
pub const PROGRESS_EVERY_MS: u64 = 100;

impl EventKind {
    /// The (group, file) the event is about, if any (for `Watch` filters).
    pub fn subject(&self) -> Option<(&str, &str)> {
        if let Some(download) = self.download() {
            return Some((&download.group, &download.file));
        }
        match self {
            EventKind::ShareAdded { group, file, .. }
            | EventKind::ShareWithdrawn { group, file, .. } => Some((group, file)),
            _ => None,
        }
    }

    /// The download it is about, if it is about one.
    pub fn download(&self) -> Option<&DownloadRef> {
        match self {
            EventKind::DownloadStarted { download, .. }
            | EventKind::Progress { download, .. }
            | EventKind::DownloadCompleted { download, .. }
            | EventKind::DownloadFailed { download, .. }
            | EventKind::DownloadStateChanged { download, .. }
            | EventKind::DownloadRemoved { download, .. }
            | EventKind::HolderOnline { download, .. }
            | EventKind::HolderGone { download, .. }
            | EventKind::PeerConnected { download, .. }
            | EventKind::PeerDisconnected { download, .. } => Some(download),
            EventKind::Lagged { .. }
            | EventKind::ShareAdded { .. }
            | EventKind::ShareWithdrawn { .. } => None,
        }
    }

    /// snake_case name, as in `--json` output and docs/cli-json.md.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Lagged { .. } => "lagged",
            EventKind::DownloadStarted { .. } => "download_started",
            EventKind::Progress { .. } => "progress",
            EventKind::DownloadCompleted { .. } => "download_completed",
            EventKind::DownloadFailed { .. } => "download_failed",
            EventKind::DownloadStateChanged { .. } => "download_state_changed",
            EventKind::DownloadRemoved { .. } => "download_removed",
            EventKind::HolderOnline { .. } => "holder_online",
            EventKind::HolderGone { .. } => "holder_gone",
            EventKind::PeerConnected { .. } => "peer_connected",
            EventKind::PeerDisconnected { .. } => "peer_disconnected",
            EventKind::ShareAdded { .. } => "share_added",
            EventKind::ShareWithdrawn { .. } => "share_withdrawn",
        }
    }
}

/// A `Watch` filter: everything, one group, or one file of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub group: Option<String>,
    pub file: Option<String>,
}

impl EventFilter {
    pub fn matches(&self, kind: &EventKind) -> bool {
        match kind.subject() {
            None => true,
            Some((g, f)) => {
                self.group.as_deref().is_none_or(|want| want == g)
                    && self.file.as_deref().is_none_or(|want| want == f)
            }
        }
    }
}

crate::postcard_wire!(Request, Response);

#[cfg(test)]
mod event_tests {
    use super::*;

    fn dl(group: &str, file: &str) -> DownloadRef {
        DownloadRef {
            group: group.into(),
            file: file.into(),
            dest: "/tmp/x".into(),
        }
    }

    #[test]
    fn filters_by_group_and_file_and_always_passes_lagged() {
        let started = EventKind::DownloadStarted {
            download: dl("g1", "a.iso"),
            size: 1,
            pieces_done: 0,
            pieces_total: 1,
        };
        let shared = EventKind::ShareAdded {
            group: "g2".into(),
            file: "b".into(),
            size: 1,
            sha1: Sha1Hash([0; 20]),
        };
        let lagged = EventKind::Lagged { missed: 3 };
        let all = EventFilter::default();
        let g1 = EventFilter {
            group: Some("g1".into()),
            file: None,
        };
        let g1_b = EventFilter {
            group: Some("g1".into()),
            file: Some("b".into()),
        };
        assert!(all.matches(&started) && all.matches(&shared) && all.matches(&lagged));
        assert!(g1.matches(&started) && !g1.matches(&shared) && g1.matches(&lagged));
        assert!(!g1_b.matches(&started) && !g1_b.matches(&shared) && g1_b.matches(&lagged));
    }
}

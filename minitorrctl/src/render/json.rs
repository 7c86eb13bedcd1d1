//! `--json` output: view structs with a stable, documented schema (docs/cli-json.md).
//!
//! The protocol types are not serialized directly: their serde shape is the wire format's
//! business (a `Sha1Hash` would become an array of 20 numbers, enums would change spelling with
//! a Rust rename). Here hashes are 40-char hex, sizes are bytes, speeds bytes/s, enums snake_case.
//! Documents are pretty-printed (2-space indent) with a trailing newline: still one document
//! for `jq`, and readable when someone looks.

use std::path::Path;

use proto::control::{
    DaemonStatus, DownloadState, DownloadStatus, LoginReport, PeerStat, ShareRef,
};
use proto::item::EntryKind;
use proto::types::{FileSummary, GroupSummary, ItemListing, Membership};
use serde::Serialize;

use crate::exit::Failure;

pub fn to_document<T: Serialize>(value: &T) -> String {
    // Serializing plain structs of strings and integers cannot fail.
    let mut s = serde_json::to_string_pretty(value).expect("view structs always serialize");
    s.push('\n');
    s
}

#[derive(Debug, Serialize)]
pub struct MessageView<'a> {
    pub message: &'a str,
}

#[derive(Debug, Serialize)]
pub struct GroupView<'a> {
    pub name: &'a str,
    pub owner: &'a str,
    pub members: u32,
    pub files: u32,
    /// "owner", "member", "pending" or "none".
    pub membership: &'static str,
}

#[derive(Debug, Serialize)]
pub struct GroupsView<'a> {
    pub groups: Vec<GroupView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct RequestsView<'a> {
    pub group: &'a str,
    pub users: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct FileView<'a> {
    pub group: &'a str,
    pub name: &'a str,
    pub size: u64,
    pub piece_size: u32,
    pub pieces: u32,
    pub sha1: String,
    pub seeders_online: u32,
    pub partial_online: u32,
    /// "file" (a single file) or "tree" (a directory tree: `list_files GROUP NAME` lists it).
    pub kind: &'static str,
    /// Regular files in the item (1 for a single file).
    pub file_count: u64,
}

#[derive(Debug, Serialize)]
pub struct FilesView<'a> {
    pub group: &'a str,
    pub files: Vec<FileView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct UploadedView<'a> {
    pub file: FileView<'a>,
}

#[derive(Debug, Serialize)]
pub struct PeerView<'a> {
    pub addr: &'a str,
    pub user: &'a str,
    pub bytes_received: u64,
    pub connected: bool,
    pub bad_pieces: u32,
    /// "direct", "punched" or "relayed".
    pub path: &'static str,
    /// Why the last connection attempt failed, if it did.
    pub error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct DownloadView<'a> {
    pub group: &'a str,
    pub file: &'a str,
    pub dest: String,
    /// "downloading", "complete" or "failed".
    pub state: &'static str,
    pub size: u64,
    pub sha1: String,
    pub bytes_done: u64,
    pub pieces_done: u32,
    pub pieces_total: u32,
    pub speed_bps: u64,
    pub peers: Vec<PeerView<'a>>,
    pub error: Option<&'a str>,
    pub first_piece_ms: Option<u64>,
    pub elapsed_ms: u64,
    pub avg_bps: u64,
    pub files_done: u32,
    pub files_total: u32,
    /// A selective download (`--only`): the whole item's totals (`size`, `bytes_done`,
    /// `pieces_*` and `files_*` then count the selected files). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<SelectionView>,
}

#[derive(Debug, Serialize)]
pub struct SelectionView {
    pub selected: bool,
    pub item_size: u64,
    pub item_pieces: u32,
    pub item_files: u32,
}

/// `download_file` (with or without `--wait`) and `wait`.
#[derive(Debug, Serialize)]
pub struct DownloadDocView<'a> {
    pub download: DownloadView<'a>,
}

#[derive(Debug, Serialize)]
pub struct DownloadsView<'a> {
    pub downloads: Vec<DownloadView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct StatusView<'a> {
    pub version: &'a str,
    pub protocol: u16,
    pub socket: String,
    pub user: Option<&'a str>,
    pub tracker: Option<&'a str>,
    pub tracker_connected: bool,
    pub tracker_reachable: bool,
    pub auto_login: &'a str,
    pub device_name: &'a str,
    pub peer_addr: &'a str,
    pub shares: u32,
    pub downloads: u32,
    /// The peer address the tracker sees and hands out (observed IP, listening port).
    pub observed_addr: Option<&'a str>,
    pub relay: &'a str,
    /// The router port mapping of the peer port (issue #14), as the daemon reports it.
    pub port_mapping: &'a proto::control::PortMappingStatus,
}

#[derive(Debug, Serialize)]
pub struct ShareRefView<'a> {
    pub group: &'a str,
    pub file: &'a str,
}

#[derive(Debug, Serialize)]
pub struct LoginView<'a> {
    pub user: &'a str,
    pub reshared: Vec<ShareRefView<'a>>,
    pub resumed_downloads: Vec<ShareRefView<'a>>,
    pub problems: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// See docs/cli-json.md for the list.
    pub kind: &'a str,
    pub message: &'a str,
    pub hint: Option<&'a str>,
    pub exit_code: u8,
    /// The failed download, for `download_file --wait` / `wait` failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download: Option<DownloadView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ErrorView<'a> {
    pub error: ErrorBody<'a>,
}

// ---------------------------------------------------------------------------------------------
// Conversions

pub fn membership(m: Membership) -> &'static str {
    match m {
        Membership::Owner => "owner",
        Membership::Member => "member",
        Membership::Pending => "pending",
        Membership::None => "none",
    }
}

pub fn state(s: DownloadState) -> &'static str {
    match s {
        DownloadState::Downloading => "downloading",
        DownloadState::Complete => "complete",
        DownloadState::Failed => "failed",
        DownloadState::Verifying => "verifying",
        DownloadState::Paused => "paused",
        DownloadState::Queued => "queued",
    }
}

pub fn group(g: &GroupSummary) -> GroupView<'_> {
    GroupView {
        name: &g.name,
        owner: &g.owner,
        members: g.members,
        files: g.files,
        membership: membership(g.membership),
    }
}

pub fn file(f: &FileSummary) -> FileView<'_> {
    FileView {
        group: &f.group,
        name: &f.name,
        size: f.size,
        piece_size: f.piece_size,
        pieces: f.piece_count,
        sha1: f.sha1.to_hex(),
        seeders_online: f.seeders_online,
        partial_online: f.partial_online,
        kind: if f.is_tree { "tree" } else { "file" },
        file_count: f.file_count,
    }
}

fn peer(p: &PeerStat) -> PeerView<'_> {
    PeerView {
        addr: &p.addr,
        user: &p.user,
        bytes_received: p.bytes_received,
        connected: p.connected,
        bad_pieces: p.bad_pieces,
        path: p.path.as_str(),
        error: p.error.as_deref(),
    }
}

pub fn download(d: &DownloadStatus) -> DownloadView<'_> {
    DownloadView {
        group: &d.group,
        file: &d.file,
        dest: d.dest.to_string_lossy().into_owned(),
        state: state(d.state),
        size: d.size,
        sha1: d.sha1.to_hex(),
        bytes_done: d.bytes_done,
        pieces_done: d.pieces_done,
        pieces_total: d.pieces_total,
        speed_bps: d.speed_bps,
        peers: d.peers.iter().map(peer).collect(),
        error: d.error.as_deref(),
        first_piece_ms: d.first_piece_ms,
        elapsed_ms: d.elapsed_ms,
        avg_bps: d.avg_bps,
        files_done: d.files_done,
        files_total: d.files_total,
        selection: d.selection.map(|t| SelectionView {
            selected: true,
            item_size: t.size,
            item_pieces: t.pieces,
            item_files: t.files,
        }),
    }
}

fn share_ref(s: &ShareRef) -> ShareRefView<'_> {
    ShareRefView {
        group: &s.group,
        file: &s.file,
    }
}

// ---------------------------------------------------------------------------------------------
// Documents, one function per response shape

pub fn render_message(message: &str) -> String {
    to_document(&MessageView { message })
}

pub fn render_groups(groups: &[GroupSummary]) -> String {
    to_document(&GroupsView {
        groups: groups.iter().map(group).collect(),
    })
}

pub fn render_requests(group: &str, users: &[String]) -> String {
    to_document(&RequestsView { group, users })
}

pub fn render_files(group: &str, files: &[FileSummary]) -> String {
    to_document(&FilesView {
        group,
        files: files.iter().map(file).collect(),
    })
}

pub fn render_uploaded(f: &FileSummary) -> String {
    to_document(&UploadedView { file: file(f) })
}

pub fn render_download(d: &DownloadStatus) -> String {
    to_document(&DownloadDocView {
        download: download(d),
    })
}

pub fn render_downloads(downloads: &[DownloadStatus]) -> String {
    to_document(&DownloadsView {
        downloads: downloads.iter().map(download).collect(),
    })
}

pub fn render_status(s: &DaemonStatus, socket: &Path) -> String {
    to_document(&StatusView {
        version: &s.version,
        protocol: proto::PROTOCOL_VERSION,
        socket: socket.to_string_lossy().into_owned(),
        user: s.user.as_deref(),
        tracker: s.tracker.as_deref(),
        tracker_connected: s.tracker_connected,
        tracker_reachable: s.tracker_reachable,
        auto_login: &s.auto_login,
        device_name: &s.device_name,
        peer_addr: &s.peer_addr,
        shares: s.shares,
        downloads: s.downloads,
        observed_addr: s.observed_addr.as_deref(),
        relay: &s.relay,
        port_mapping: &s.port_mapping,
    })
}

pub fn render_login(r: &LoginReport) -> String {
    to_document(&LoginView {
        user: &r.user,
        reshared: r.reshared.iter().map(share_ref).collect(),
        resumed_downloads: r.resumed_downloads.iter().map(share_ref).collect(),
        problems: &r.problems,
    })
}

pub fn render_error(f: &Failure) -> String {
    to_document(&ErrorView {
        error: ErrorBody {
            kind: f.kind,
            message: &f.message,
            hint: f.hint.as_deref(),
            exit_code: f.status.code(),
            download: f.download.as_deref().map(download),
        },
    })
}

#[derive(Debug, Serialize)]
pub struct DeviceView<'a> {
    pub name: &'a str,
    pub device_key: String,
    pub state: &'static str,
    pub online: bool,
    pub current: bool,
    pub created_unix: u64,
    pub last_seen_unix: u64,
    pub last_addr: &'a str,
}

#[derive(Debug, Serialize)]
pub struct DevicesView<'a> {
    pub devices: Vec<DeviceView<'a>>,
}

pub fn render_devices(devices: &[proto::types::DeviceInfo]) -> String {
    to_document(&DevicesView {
        devices: devices
            .iter()
            .map(|d| DeviceView {
                name: &d.name,
                device_key: hex_key(&d.device_key),
                state: d.state.as_str(),
                online: d.online,
                current: d.current,
                created_unix: d.created_unix,
                last_seen_unix: d.last_seen_unix,
                last_addr: &d.last_addr,
            })
            .collect(),
    })
}

fn hex_key(k: &[u8; 32]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

/// `leave_group --json`: the sentence (as for every command that only confirms) and what
/// happened to the group.
#[derive(Debug, Serialize)]
pub struct LeftGroupView<'a> {
    pub message: String,
    pub group: &'a str,
    pub new_owner: Option<&'a str>,
    pub group_deleted: bool,
}

pub fn render_left_group(l: &minitorr_proto::types::LeftGroup) -> String {
    to_document(&LeftGroupView {
        message: l.message(),
        group: &l.group,
        new_owner: l.new_owner.as_deref(),
        group_deleted: l.group_deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Status;
    use crate::render::testdata::*;

    #[test]
    fn snapshot_documents() {
        insta::assert_snapshot!("groups", render_groups(&groups()));
        insta::assert_snapshot!("files", render_files("g1", &files()));
        insta::assert_snapshot!("requests", render_requests("g1", &["bob".into()]));
        insta::assert_snapshot!("uploaded", render_uploaded(&files()[0]));
        insta::assert_snapshot!("downloads", render_downloads(&[downloading(), failed()]));
        insta::assert_snapshot!("download", render_download(&complete()));
        insta::assert_snapshot!(
            "status",
            render_status(
                &status(),
                Path::new("/run/user/1000/minitorr/minitorrd.sock")
            )
        );
        insta::assert_snapshot!("login", render_login(&login()));
        insta::assert_snapshot!("message", render_message("logged out"));
    }

    #[test]
    fn snapshot_errors() {
        let f = Failure::new(Status::Refused, "not_logged_in", "you are not logged in")
            .with_hint("log in first: minitorrctl login <user_id>");
        insta::assert_snapshot!("error", render_error(&f));
        let f = Failure::new(
            Status::Refused,
            "download_failed",
            "download of g2/x failed: no peer has piece 7",
        );
        insta::assert_snapshot!("error_download", render_error(&f.with_download(&failed())));
    }

    #[test]
    fn every_document_is_one_json_value() {
        for doc in [
            render_groups(&groups()),
            render_downloads(&[complete()]),
            render_message("a\"b"),
        ] {
            let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
            assert!(v.is_object());
            assert!(doc.ends_with("}\n"));
        }
    }

    #[test]
    fn hashes_are_hex_strings() {
        let v: serde_json::Value = serde_json::from_str(&render_uploaded(&files()[0])).unwrap();
        let sha1 = v["file"]["sha1"].as_str().unwrap();
        assert_eq!(sha1.len(), 40);
        assert!(sha1.chars().all(|c| c.is_ascii_hexdigit()));
    }
}

#[derive(Debug, Serialize)]
pub struct ShareView<'a> {
    pub group: &'a str,
    pub file: &'a str,
    pub path: String,
    pub size: u64,
    pub uploaded_bytes: u64,
    pub peers_served: u32,
    /// "serving", "changed", "missing" or "waiting".
    pub state: &'static str,
}

#[derive(Debug, Serialize)]
pub struct SharesView<'a> {
    pub shares: Vec<ShareView<'a>>,
}

pub fn share_state(s: proto::control::ShareState) -> &'static str {
    use proto::control::ShareState;
    match s {
        ShareState::Serving => "serving",
        ShareState::Changed => "changed",
        ShareState::Missing => "missing",
        ShareState::Waiting => "waiting",
    }
}

/// `list_shares`.
pub fn render_shares(shares: &[proto::control::ShareStatus]) -> String {
    to_document(&SharesView {
        shares: shares
            .iter()
            .map(|s| ShareView {
                group: &s.group,
                file: &s.file,
                path: s.path.to_string_lossy().into_owned(),
                size: s.size,
                uploaded_bytes: s.uploaded_bytes,
                peers_served: s.peers_served,
                state: share_state(s.state),
            })
            .collect(),
    })
}

/// One entry of an item (`list_files GROUP ITEM --json`).
#[derive(Debug, Serialize)]
pub struct EntryView<'a> {
    /// Relative to the item, `/`-separated, NFC (a single file: its name).
    pub path: &'a str,
    /// "file" or "dir" (an empty directory).
    pub kind: &'static str,
    /// Bytes (0 for a directory).
    pub size: u64,
    /// SHA1 of the whole file (null for a directory).
    pub sha1: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ItemView<'a> {
    pub group: &'a str,
    pub name: &'a str,
    /// "file" or "tree".
    pub kind: &'static str,
    pub size: u64,
    pub piece_size: u32,
    pub pieces: u32,
    /// A single file: SHA1 of its bytes; a tree: the digest of its listing.
    pub sha1: String,
    pub file_count: u64,
    /// The tree's files and empty directories in canonical order (one entry for a single file).
    pub entries: Vec<EntryView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ItemDocView<'a> {
    pub item: ItemView<'a>,
}

pub fn item(i: &ItemListing) -> ItemView<'_> {
    let entries = match &i.tree {
        None => vec![EntryView {
            path: &i.name,
            kind: "file",
            size: i.size,
            sha1: Some(i.sha1.to_hex()),
        }],
        Some(t) => t
            .entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, sha1 } => EntryView {
                    path: &e.path,
                    kind: "file",
                    size,
                    sha1: Some(sha1.to_hex()),
                },
                EntryKind::Dir => EntryView {
                    path: &e.path,
                    kind: "dir",
                    size: 0,
                    sha1: None,
                },
            })
            .collect(),
    };
    ItemView {
        group: &i.group,
        name: &i.name,
        kind: if i.tree.is_some() { "tree" } else { "file" },
        size: i.size,
        piece_size: i.piece_size,
        pieces: i.piece_count,
        sha1: i.sha1.to_hex(),
        file_count: i.file_count() as u64,
        entries,
    }
}

pub fn render_item(i: &ItemListing) -> String {
    to_document(&ItemDocView { item: item(i) })
}

#[derive(Debug, Serialize)]
pub struct UploadedTreeView<'a> {
    pub file: FileView<'a>,
    /// Entries of the directory not shared (symlinks, devices, sockets, FIFOs).
    pub skipped: &'a [proto::control::SkippedEntry],
}

/// `upload_file DIR`: the item, and what in the directory was skipped.
pub fn render_uploaded_tree(f: &FileSummary, skipped: &[proto::control::SkippedEntry]) -> String {
    to_document(&UploadedTreeView {
        file: file(f),
        skipped,
    })
}

#[cfg(test)]
mod item_tests {
    use super::*;
    use crate::render::testdata::*;

    #[test]
    fn snapshot_items() {
        insta::assert_snapshot!("files_with_tree", render_files("g1", &files_with_tree()));
        insta::assert_snapshot!("item_tree", render_item(&tree_item()));
        insta::assert_snapshot!("item_single", render_item(&single_item()));
    }
}

#[cfg(test)]
mod left_group_tests {
    use minitorr_proto::types::LeftGroup;

    #[test]
    fn leave_group_says_who_owns_the_group_now_or_that_it_is_gone() {
        let moved = LeftGroup {
            group: "g1".into(),
            new_owner: Some("bob".into()),
            group_deleted: false,
        };
        let v: serde_json::Value = serde_json::from_str(&super::render_left_group(&moved)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"message": "left g1; bob is now its owner", "group": "g1",
                "new_owner": "bob", "group_deleted": false})
        );
        assert_eq!(
            crate::render::human::render_left_group(&moved),
            "left g1; bob is now its owner\n"
        );
        let gone = LeftGroup {
            group: "g1".into(),
            new_owner: None,
            group_deleted: true,
        };
        let v: serde_json::Value = serde_json::from_str(&super::render_left_group(&gone)).unwrap();
        assert_eq!(v["new_owner"], serde_json::Value::Null);
        assert_eq!(v["group_deleted"], true);
        assert_eq!(
            crate::render::human::render_left_group(&gone),
            "left g1; it had no other member and was deleted\n"
        );
    }

    #[test]
    fn a_selective_download_carries_the_items_totals() {
        let mut d = crate::render::testdata::downloading();
        assert!(super::download(&d).selection.is_none());
        let v: serde_json::Value =
            serde_json::from_str(&super::render_downloads(&[d.clone()])).unwrap();
        assert!(v["downloads"][0].get("selection").is_none(), "{v}");
        d.selection = Some(proto::control::ItemTotals {
            size: 1 << 30,
            pieces: 2048,
            files: 10,
        });
        let v: serde_json::Value = serde_json::from_str(&super::render_downloads(&[d])).unwrap();
        assert_eq!(
            v["downloads"][0]["selection"],
            serde_json::json!({"selected": true, "item_size": 1u64 << 30, "item_pieces": 2048,
                "item_files": 10})
        );
    }
}

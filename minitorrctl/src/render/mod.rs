//! Turning daemon answers into output. Everything here is a pure function from values to a
//! `String`, so the formats are pinned by snapshot tests and changes to them are deliberate.

pub mod events;
pub mod human;
pub mod json;

use std::io::IsTerminal;

/// Whether to colour output. Decided once per stream: only for a terminal, and never when
/// `NO_COLOR` is set to a non-empty value (the no-color.org convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    pub color: bool,
}

impl Style {
    #[cfg(test)]
    pub const PLAIN: Style = Style { color: false };

    pub fn for_stdout() -> Style {
        Style {
            color: std::io::stdout().is_terminal() && no_color_unset(),
        }
    }

    pub fn for_stderr() -> Style {
        Style {
            color: std::io::stderr().is_terminal() && no_color_unset(),
        }
    }

    // Plain SGR sequences: four colours do not justify a dependency.
    fn paint(self, sgr: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{sgr}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    pub fn red(self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn green(self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn yellow(self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn bold(self, s: &str) -> String {
        self.paint("1", s)
    }
}

fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty())
}

/// Fixed sample values shared by the human and JSON snapshot tests.
#[cfg(test)]
pub mod testdata {
    use std::path::PathBuf;

    use proto::control::{
        DaemonStatus, DownloadState, DownloadStatus, LoginReport, PeerStat, ShareRef,
    };
    use proto::types::{FileSummary, GroupSummary, Membership, Sha1Hash};

    fn sha(seed: u8) -> Sha1Hash {
        let mut h = [0u8; 20];
        for (i, b) in h.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8 * 7);
        }
        Sha1Hash(h)
    }

    pub fn groups() -> Vec<GroupSummary> {
        let g = |name: &str, owner: &str, members, files, membership| GroupSummary {
            name: name.into(),
            owner: owner.into(),
            members,
            files,
            membership,
        };
        vec![
            g("g1", "alice", 3, 12, Membership::Owner),
            g("movies-club", "bob", 120, 4, Membership::Member),
            g("g2", "carol", 1, 0, Membership::Pending),
            g("secret", "dave", 7, 1, Membership::None),
        ]
    }

    pub fn files() -> Vec<FileSummary> {
        let f = |name: &str, size, seeders, partial, seed| FileSummary {
            group: "g1".into(),
            name: name.into(),
            size,
            piece_size: 512 * 1024,
            sha1: sha(seed),
            seeders_online: seeders,
            partial_online: partial,
            file_count: 1,
            is_tree: false,
            piece_count: proto::types::FileMeta::piece_count_for(size, 512 * 1024),
        };
        vec![
            f("debian-12.iso", 1 << 30, 2, 1, 1),
            f("notes.txt", 4_321, 1, 0, 2),
            f("Résumé 2026 (final).pdf", 210_000_000, 0, 0, 3),
        ]
    }

    fn peer(addr: &str, user: &str, bytes: u64, connected: bool, bad: u32) -> PeerStat {
        PeerStat {
            addr: addr.into(),
            user: user.into(),
            bytes_received: bytes,
            connected,
            bad_pieces: bad,
            path: Default::default(),
            error: None,
        }
    }

    pub fn downloading() -> DownloadStatus {
        DownloadStatus {
            group: "g1".into(),
            file: "debian.iso".into(),
            dest: PathBuf::from("/home/alice/Downloads/debian.iso"),
            state: DownloadState::Downloading,
            size: 1 << 30,
            sha1: sha(1),
            bytes_done: 483_183_820,
            pieces_done: 921,
            pieces_total: 2048,
            speed_bps: 12_897_485,
            peers: vec![
                peer("127.0.0.1:7002", "bob", 300_000_000, true, 0),
                peer("127.0.0.1:7003", "carol", 183_183_820, true, 2),
                peer("127.0.0.1:7004", "dave", 0, false, 0),
            ],
            error: None,
            first_piece_ms: Some(84),
            elapsed_ms: 38_000,
            avg_bps: 12_715_363,
            files_done: 0,
            files_total: 1,
            selection: None,
        }
    }

    pub fn complete() -> DownloadStatus {
        DownloadStatus {
            group: "g1".into(),
            file: "notes.txt".into(),
            dest: PathBuf::from("/tmp/in/notes.txt"),
            state: DownloadState::Complete,
            size: 4_321,
            sha1: sha(2),
            bytes_done: 4_321,
            pieces_done: 1,
            pieces_total: 1,
            speed_bps: 0,
            peers: vec![peer("127.0.0.1:7002", "bob", 4_321, false, 0)],
            error: None,
            first_piece_ms: Some(3),
            elapsed_ms: 12,
            avg_bps: 360_083,
            files_done: 0,
            files_total: 1,
            selection: None,
        }
    }

    pub fn failed() -> DownloadStatus {
        DownloadStatus {
            group: "g2".into(),
            file: "日本語のファイル.bin".into(),
            dest: PathBuf::from("/tmp/in/日本語のファイル.bin"),
            state: DownloadState::Failed,
            size: 50 * 1024 * 1024,
            sha1: sha(3),
            bytes_done: 6 * 1024 * 1024,
            pieces_done: 12,
            pieces_total: 100,
            speed_bps: 0,
            peers: vec![peer("127.0.0.1:7005", "erin", 6 * 1024 * 1024, false, 0)],
            error: Some("no online peer has piece 12".into()),
            first_piece_ms: Some(40),
            elapsed_ms: 9_500,
            avg_bps: 662_200,
            files_done: 0,
            files_total: 1,
            selection: None,
        }
    }

    pub fn status() -> DaemonStatus {
        DaemonStatus {
            version: "0.1.0".into(),
            user: Some("alice".into()),
            tracker: Some("127.0.0.1:5000".into()),
            tracker_connected: true,
            peer_addr: "127.0.0.1:7001".into(),
            shares: 3,
            downloads: 1,
            tracker_reachable: true,
            auto_login: "logged in as alice".into(),
            device_name: "laptop".into(),
            observed_addr: Some("192.0.2.7:7001".into()),
            relay: "listening at 192.0.2.1:5001".into(),
            port_mapping: proto::control::PortMappingStatus {
                state: proto::control::PortMappingState::Mapped,
                protocol: Some("UPnP-IGD".into()),
                gateway: Some("192.168.1.1:5000".into()),
                external_addr: Some("203.0.113.7:7001".into()),
                lease_secs: 3600,
                detail: None,
            },
        }
    }

    pub fn login() -> LoginReport {
        let r = |g: &str, f: &str| ShareRef {
            group: g.into(),
            file: f.into(),
        };
        LoginReport {
            user: "alice".into(),
            reshared: vec![r("g1", "debian-12.iso"), r("g1", "notes.txt")],
            resumed_downloads: vec![r("g2", "big.bin")],
            problems: vec!["g1/old.iso: /srv/old.iso no longer exists".into()],
        }
    }

    /// A group with a directory tree among its files (`list_files` grows a FILES column).
    pub fn files_with_tree() -> Vec<FileSummary> {
        let mut v = files();
        v.insert(
            0,
            FileSummary {
                group: "g1".into(),
                name: "proj".into(),
                size: 12_582_912,
                piece_size: 512 * 1024,
                sha1: sha(7),
                seeders_online: 1,
                partial_online: 0,
                file_count: 3,
                is_tree: true,
                piece_count: 25,
            },
        );
        v
    }

    /// `list_files g1 proj`: three files (one empty) and an empty directory.
    pub fn tree_item() -> proto::types::ItemListing {
        use proto::item::{Tree, TreeEntry};
        let mut tree = Tree {
            entries: vec![
                TreeEntry::file("src/main.rs", 12_582_902, sha(8)),
                TreeEntry::file("README.md", 10, sha(9)),
                TreeEntry::file("src/empty.rs", 0, sha(10)),
                TreeEntry::dir("build"),
            ],
        };
        tree.sort();
        proto::types::ItemListing {
            group: "g1".into(),
            name: "proj".into(),
            size: tree.total_size(),
            piece_size: 512 * 1024,
            piece_count: 25,
            sha1: tree.digest(),
            tree: Some(tree),
        }
    }

    /// `list_files g1 notes.txt`: a single file is a one-entry item.
    pub fn single_item() -> proto::types::ItemListing {
        proto::types::ItemListing {
            group: "g1".into(),
            name: "notes.txt".into(),
            size: 4_321,
            piece_size: 512 * 1024,
            piece_count: 1,
            sha1: sha(2),
            tree: None,
        }
    }
}

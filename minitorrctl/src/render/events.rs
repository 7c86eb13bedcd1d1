//! `minitorrctl watch`: one line per event, for people or (`--json`) one JSON object per
//! line for scripts. The JSON schema is documented in docs/cli-json.md ("watch").

use proto::control::{DaemonEvent, DownloadRef, EventKind};
use serde_json::{json, Map, Value};

use super::{human, json as j};

/// One compact JSON object (keys in alphabetical order) and a newline.
/// Download events carry `group`, `file` and `dest`; share events `group` and `file`.
pub fn json_line(ev: &DaemonEvent) -> String {
    let mut m = Map::new();
    m.insert("seq".into(), json!(ev.seq));
    m.insert("at_unix_ms".into(), json!(ev.at_unix_ms));
    m.insert("event".into(), json!(ev.kind.name()));
    let about = |m: &mut Map<String, Value>, d: &DownloadRef| {
        m.insert("group".into(), json!(d.group));
        m.insert("file".into(), json!(d.file));
        m.insert("dest".into(), json!(d.dest.to_string_lossy()));
    };
    match &ev.kind {
        EventKind::Lagged { missed } => {
            m.insert("missed".into(), json!(missed));
        }
        EventKind::DownloadStarted {
            download,
            size,
            pieces_done,
            pieces_total,
        } => {
            about(&mut m, download);
            m.insert("size".into(), json!(size));
            m.insert("pieces_done".into(), json!(pieces_done));
            m.insert("pieces_total".into(), json!(pieces_total));
        }
        EventKind::Progress {
            download,
            bytes_done,
            size,
            pieces_done,
            pieces_total,
            speed_bps,
        } => {
            about(&mut m, download);
            m.insert("bytes_done".into(), json!(bytes_done));
            m.insert("size".into(), json!(size));
            m.insert("pieces_done".into(), json!(pieces_done));
            m.insert("pieces_total".into(), json!(pieces_total));
            m.insert("speed_bps".into(), json!(speed_bps));
        }
        EventKind::DownloadCompleted {
            download,
            path,
            elapsed_ms,
        } => {
            about(&mut m, download);
            m.insert("path".into(), json!(path.to_string_lossy()));
            m.insert("elapsed_ms".into(), json!(elapsed_ms));
        }
        EventKind::DownloadFailed { download, reason } => {
            about(&mut m, download);
            m.insert("reason".into(), json!(reason));
        }
        EventKind::DownloadStateChanged { download, state } => {
            about(&mut m, download);
            m.insert("state".into(), json!(j::state(*state)));
        }
        EventKind::DownloadRemoved {
            download,
            cancelled,
        } => {
            about(&mut m, download);
            m.insert("cancelled".into(), json!(cancelled));
        }
        EventKind::HolderOnline {
            download,
            addr,
            user,
        }
        | EventKind::PeerConnected {
            download,
            addr,
            user,
        } => {
            about(&mut m, download);
            m.insert("addr".into(), json!(addr));
            m.insert("user".into(), json!(user));
        }
        EventKind::HolderGone {
            download,
            user,
            addr,
        } => {
            about(&mut m, download);
            m.insert("addr".into(), json!(addr));
            m.insert("user".into(), json!(user));
        }
        EventKind::PeerDisconnected {
            download,
            addr,
            user,
            reason,
        } => {
            about(&mut m, download);
            m.insert("addr".into(), json!(addr));
            m.insert("user".into(), json!(user));
            m.insert("reason".into(), json!(reason));
        }
        EventKind::ShareAdded {
            group,
            file,
            size,
            sha1,
        } => {
            m.insert("group".into(), json!(group));
            m.insert("file".into(), json!(file));
            m.insert("size".into(), json!(size));
            m.insert("sha1".into(), json!(sha1.to_hex()));
        }
        EventKind::ShareWithdrawn {
            group,
            file,
            reason,
        } => {
            m.insert("group".into(), json!(group));
            m.insert("file".into(), json!(file));
            m.insert("reason".into(), json!(reason));
        }
    }
    let mut s = Value::Object(m).to_string();
    s.push('\n');
    s
}

/// `HH:MM:SS` (UTC) of a unix time in milliseconds.
fn clock(at_unix_ms: u64) -> String {
    let secs = (at_unix_ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn percent(done: u64, size: u64) -> String {
    if size == 0 {
        return "100%".into();
    }
    format!("{}%", (done.min(size) as u128 * 100 / size as u128))
}

/// `12:00:01 g1/a.iso: 45% (12.0 MiB of 26.7 MiB, 3.2 MiB/s)` — names cleaned of terminal
/// control characters, times in UTC.
pub fn human_line(ev: &DaemonEvent) -> String {
    let c = |s: &str| human::clean(s).into_owned();
    let name = |group: &str, file: &str| format!("{}/{}", c(group), c(file));
    let dl = |d: &DownloadRef| name(&d.group, &d.file);
    let text = match &ev.kind {
        EventKind::Lagged { missed } => format!(
            "watch fell behind: {missed} events dropped (run show_downloads for the current state)"
        ),
        EventKind::DownloadStarted {
            download,
            size,
            pieces_done,
            pieces_total,
        } => format!(
            "{}: downloading to {} ({}, {pieces_done} of {pieces_total} pieces already here)",
            dl(download),
            c(&download.dest.to_string_lossy()),
            human::size(*size)
        ),
        EventKind::Progress {
            download,
            bytes_done,
            size,
            speed_bps,
            ..
        } => format!(
            "{}: {} ({} of {}, {})",
            dl(download),
            percent(*bytes_done, *size),
            human::size(*bytes_done),
            human::size(*size),
            human::speed(*speed_bps)
        ),
        EventKind::DownloadCompleted {
            download,
            path,
            elapsed_ms,
        } => format!(
            "{}: complete at {} in {}",
            dl(download),
            c(&path.to_string_lossy()),
            human::elapsed_ms(*elapsed_ms)
        ),
        EventKind::DownloadFailed { download, reason } => {
            format!("{}: failed: {}", dl(download), c(reason))
        }
        EventKind::DownloadStateChanged { download, state } => {
            format!("{}: {}", dl(download), j::state(*state))
        }
        EventKind::DownloadRemoved {
            download,
            cancelled,
        } => format!(
            "{}: {}",
            dl(download),
            if *cancelled {
                "cancelled"
            } else {
                "removed from the list"
            }
        ),
        EventKind::HolderOnline {
            download,
            addr,
            user,
        } => format!("{}: holder {} online at {}", dl(download), c(user), c(addr)),
        EventKind::HolderGone {
            download,
            user,
            addr,
        } => match addr {
            Some(a) => format!("{}: holder {} gone from {}", dl(download), c(user), c(a)),
            None => format!("{}: holder {} gone", dl(download), c(user)),
        },
        EventKind::PeerConnected {
            download,
            addr,
            user,
        } => format!("{}: connected to {} at {}", dl(download), c(user), c(addr)),
        EventKind::PeerDisconnected {
            download,
            addr,
            user,
            reason,
        } => format!(
            "{}: disconnected from {} at {} ({})",
            dl(download),
            c(user),
            c(addr),
            c(reason)
        ),
        EventKind::ShareAdded {
            group, file, size, ..
        } => format!("{}: sharing ({})", name(group, file), human::size(*size)),
        EventKind::ShareWithdrawn {
            group,
            file,
            reason,
        } => format!("{}: no longer shared ({})", name(group, file), c(reason)),
    };
    format!("{} {text}\n", clock(ev.at_unix_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::types::Sha1Hash;

    fn ev(seq: u64, kind: EventKind) -> DaemonEvent {
        DaemonEvent {
            seq,
            at_unix_ms: 1_764_554_400_123, // 2025-12-01 02:00:00.123 UTC
            kind,
        }
    }

    fn dl() -> DownloadRef {
        DownloadRef {
            group: "g1".into(),
            file: "a.iso".into(),
            dest: "/home/bob/in/a.iso".into(),
        }
    }

    /// One of every kind, in the order a download sees them.
    fn every_kind() -> Vec<DaemonEvent> {
        let kinds = vec![
            EventKind::DownloadStarted {
                download: dl(),
                size: 64 << 20,
                pieces_done: 0,
                pieces_total: 128,
            },
            EventKind::HolderOnline {
                download: dl(),
                addr: "10.0.0.2:7000".into(),
                user: "carol".into(),
            },
            EventKind::PeerConnected {
                download: dl(),
                addr: "10.0.0.2:7000".into(),
                user: "carol".into(),
            },
            EventKind::Progress {
                download: dl(),
                bytes_done: 16 << 20,
                size: 64 << 20,
                pieces_done: 32,
                pieces_total: 128,
                speed_bps: 8 << 20,
            },
            EventKind::DownloadStateChanged {
                download: dl(),
                state: proto::control::DownloadState::Paused,
            },
            EventKind::HolderGone {
                download: dl(),
                user: "carol".into(),
                addr: None,
            },
            EventKind::PeerDisconnected {
                download: dl(),
                addr: "10.0.0.2:7000".into(),
                user: "carol".into(),
                reason: "connection reset".into(),
            },
            EventKind::DownloadCompleted {
                download: dl(),
                path: "/home/bob/in/a.iso".into(),
                elapsed_ms: 8_400,
            },
            EventKind::ShareAdded {
                group: "g1".into(),
                file: "a.iso".into(),
                size: 64 << 20,
                sha1: Sha1Hash([0xab; 20]),
            },
            EventKind::DownloadFailed {
                download: dl(),
                reason: "no holder online".into(),
            },
            EventKind::DownloadRemoved {
                download: dl(),
                cancelled: true,
            },
            EventKind::ShareWithdrawn {
                group: "g1".into(),
                file: "a.iso".into(),
                reason: "stop_share".into(),
            },
            EventKind::Lagged { missed: 1500 },
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, k)| ev(i as u64 + 1, k))
            .collect()
    }

    #[test]
    fn human_lines() {
        let out: String = every_kind().iter().map(human_line).collect();
        insta::assert_snapshot!(out);
    }

    #[test]
    fn json_lines() {
        let out: String = every_kind().iter().map(json_line).collect();
        for line in out.lines() {
            let v: Value = serde_json::from_str(line).expect("each line is one JSON object");
            assert!(v["event"].is_string() && v["seq"].is_u64(), "{line}");
        }
        insta::assert_snapshot!(out);
    }

    #[test]
    fn terminal_control_characters_are_escaped() {
        let mut d = dl();
        d.file = "evil\x1b[2Jname".into();
        let line = human_line(&ev(
            1,
            EventKind::DownloadFailed {
                download: d,
                reason: "x\ry".into(),
            },
        ));
        assert!(!line.contains('\x1b') && !line.contains('\r'), "{line:?}");
    }
}

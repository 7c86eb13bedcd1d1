//! Human output: aligned columns with a header, binary units with one decimal, a `Sum:` line.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;

use proto::control::{DaemonStatus, DownloadState, DownloadStatus, LoginReport, ShareRef};
use proto::item::EntryKind;
use proto::types::{FileSummary, GroupSummary, ItemListing, Membership};
use unicode_width::UnicodeWidthStr;

use super::Style;

// ---------------------------------------------------------------------------------------------
// Units

/// `512 B`, `1.5 KiB`, `1.0 GiB`: binary units, one decimal, like the rest of the output.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Switch unit before rounding would print "1024.0 KiB".
    while v >= 1023.95 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub fn speed(bytes_per_sec: u64) -> String {
    format!("{}/s", size(bytes_per_sec))
}

/// `45s`, `3m 20s`, `2h 05m`, `3d 04h`: two units at most, the way people read ETAs.
pub fn duration_secs(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// Elapsed time of a finished transfer: `12 ms`, `12.3 s` under a minute, else as
/// [`duration_secs`].
pub fn elapsed_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        duration_secs(ms / 1000)
    }
}

/// Time left at the current speed, or `-` when nothing is moving.
pub fn eta(d: &DownloadStatus) -> String {
    let left = d.size.saturating_sub(d.bytes_done);
    if d.speed_bps == 0 {
        return "-".into();
    }
    duration_secs(left.div_ceil(d.speed_bps))
}

pub fn percent(d: &DownloadStatus) -> String {
    let p = if d.size == 0 {
        if d.state == DownloadState::Complete {
            100.0
        } else {
            0.0
        }
    } else {
        d.bytes_done as f64 * 100.0 / d.size as f64
    };
    // Never round an unfinished download up to 100.0%.
    let p = if d.state != DownloadState::Complete {
        p.min(99.9)
    } else {
        p
    };
    format!("{p:.1}%")
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Strings from the daemon (and through it, from the tracker and other users) are printed to a
/// terminal: replace control characters so nothing can inject escape sequences, and show bidi
/// controls and invisible characters as `<U+XXXX>` so that a name stored before trackers
/// refused them cannot reorder a line or pass for another name.
pub fn clean(s: &str) -> Cow<'_, str> {
    use proto::names::is_hidden;
    if s.chars().any(|c| c.is_control() || is_hidden(c)) {
        let mut out = String::with_capacity(s.len() + 8);
        for c in s.chars() {
            if c.is_control() {
                out.push('?');
            } else if is_hidden(c) {
                out.push_str(&format!("<U+{:04X}>", c as u32));
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

/// Quote a word for a copy-pasteable shell command in a hint.
pub fn shell_word(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/+=@%".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

// ---------------------------------------------------------------------------------------------
// Tables

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Columns separated by two spaces, padded by display width (names may be CJK), the last column
/// never padded so lines carry no trailing blanks.
fn table(header: Option<&[&str]>, align: &[Align], rows: &[Vec<String>]) -> Vec<String> {
    let ncol = align.len();
    let mut widths = vec![0usize; ncol];
    for row in header
        .map(|h| h.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .iter()
        .chain(rows)
    {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        // Trailing empty cells would only add blanks.
        let last = cells.iter().rposition(|c| !c.is_empty()).unwrap_or(0);
        for (i, cell) in cells.iter().enumerate().take(last + 1) {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = " ".repeat(widths[i] - cell.width());
            match align[i] {
                Align::Right => {
                    out.push_str(&pad);
                    out.push_str(cell);
                }
                Align::Left if i == last => out.push_str(cell),
                Align::Left => {
                    out.push_str(cell);
                    out.push_str(&pad);
                }
            }
        }
        out
    };
    let mut lines = Vec::new();
    if let Some(h) = header {
        lines.push(line(h.to_vec()));
    }
    for row in rows {
        lines.push(line(row.iter().map(String::as_str).collect()));
    }
    lines
}

fn join_lines(lines: impl IntoIterator<Item = String>) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Commands

pub fn render_message(message: &str) -> String {
    format!("{}\n", clean(message))
}

/// `leave_group`: a leaving owner is told who owns the group now, or that it was deleted.
pub fn render_left_group(l: &minitorr_proto::types::LeftGroup) -> String {
    render_message(&l.message())
}

pub fn render_groups(groups: &[GroupSummary], style: Style) -> String {
    if groups.is_empty() {
        return "no groups yet; create one with: minitorrctl create_group <group_id>\n".into();
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                clean(&g.name).into_owned(),
                clean(&g.owner).into_owned(),
                g.members.to_string(),
                g.files.to_string(),
                membership(g.membership).to_owned(),
            ]
        })
        .collect();
    use Align::*;
    let mut lines = table(
        Some(&["GROUP", "OWNER", "MEMBERS", "FILES", "YOU"]),
        &[Left, Left, Right, Right, Left],
        &rows,
    );
    lines[0] = style.bold(&lines[0]);
    let count = |m| groups.iter().filter(|g| g.membership == m).count() as u64;
    let mut you = Vec::new();
    for (m, word) in [
        (Membership::Owner, "owner"),
        (Membership::Member, "member"),
        (Membership::Pending, "pending"),
    ] {
        if count(m) > 0 {
            you.push(format!("{} {word}", count(m)));
        }
    }
    let you = if you.is_empty() {
        "you are in none".to_owned()
    } else {
        format!("you: {}", you.join(", "))
    };
    lines.push(format!(
        "Sum: {}, {you}",
        plural(groups.len() as u64, "group", "groups")
    ));
    join_lines(lines)
}

fn membership(m: Membership) -> &'static str {
    match m {
        Membership::Owner => "owner",
        Membership::Member => "member",
        Membership::Pending => "pending",
        Membership::None => "-",
    }
}

/// One user per line, nothing else, so `for u in $(minitorrctl list_requests g1)` works.
pub fn render_requests(group: &str, users: &[String]) -> String {
    if users.is_empty() {
        return format!("no pending requests for {}\n", clean(group));
    }
    join_lines(users.iter().map(|u| clean(u).into_owned()))
}

pub fn render_files(group: &str, files: &[FileSummary], style: Style) -> String {
    if files.is_empty() {
        return format!(
            "no files shared in {g}; share one with: minitorrctl upload_file <file_path> {g}\n",
            g = clean(group)
        );
    }
    // A FILES column only when the group has a directory tree: a group of single files reads
    // exactly like the seed's table.
    let trees = files.iter().any(|f| f.is_tree);
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            let seeders = if f.partial_online > 0 {
                format!("{} (+{} partial)", f.seeders_online, f.partial_online)
            } else {
                f.seeders_online.to_string()
            };
            let mut row = vec![item_name(&f.name, f.is_tree), size(f.size)];
            if trees {
                row.push(plural(f.file_count, "file", "files"));
            }
            row.extend([seeders, f.sha1.short()]);
            row
        })
        .collect();
    use Align::*;
    let (header, align): (&[&str], &[Align]) = if trees {
        (
            &["NAME", "SIZE", "FILES", "SEEDERS", "SHA1"],
            &[Left, Right, Right, Left, Left],
        )
    } else {
        (
            &["NAME", "SIZE", "SEEDERS", "SHA1"],
            &[Left, Right, Left, Left],
        )
    };
    let mut lines = table(Some(header), align, &rows);
    lines[0] = style.bold(&lines[0]);
    let total: u64 = files.iter().map(|f| f.size).sum();
    let seeded = files.iter().filter(|f| f.seeders_online > 0).count();
    let count = if trees {
        let all: u64 = files.iter().map(|f| f.file_count).sum();
        format!(
            "{} ({})",
            plural(files.len() as u64, "item", "items"),
            plural(all, "file", "files")
        )
    } else {
        plural(files.len() as u64, "file", "files")
    };
    lines.push(format!(
        "Sum: {count}, {}, {seeded} with seeders online",
        size(total)
    ));
    join_lines(lines)
}

/// An item's name as listed: a directory tree ends in `/`.
fn item_name(name: &str, is_tree: bool) -> String {
    let mut s = clean(name).into_owned();
    if is_tree {
        s.push('/');
    }
    s
}

pub fn render_uploaded(f: &FileSummary) -> String {
    let pieces = f.piece_count as u64;
    format!(
        "shared {} in {} ({}, {}, sha1 {}…)\n",
        clean(&f.name),
        clean(&f.group),
        size(f.size),
        plural(pieces, "piece", "pieces"),
        f.sha1.short()
    )
}

pub fn render_download_started(d: &DownloadStatus) -> String {
    if d.state == proto::control::DownloadState::Complete {
        // The destination already held this very file (same size and SHA1).
        return format!(
            "{} already holds {} from {} ({}, same SHA1): complete, and shared\n",
            clean(&d.dest.to_string_lossy()),
            clean(&d.file),
            clean(&d.group),
            size(d.size)
        );
    }
    format!(
        "downloading {} from {} to {} ({})\nfollow it with: minitorrctl wait {} {}\n",
        clean(&d.file),
        clean(&d.group),
        clean(&d.dest.to_string_lossy()),
        size(d.size),
        shell_word(&d.group),
        shell_word(&d.file)
    )
}

/// The final line of `download_file --wait` / `wait` when the download completed.
pub fn render_download_done(d: &DownloadStatus) -> String {
    // This run's average (bytes fetched before a resume are not in it).
    let avg = d.avg_bps;
    let from = d.peers.iter().filter(|p| p.bytes_received > 0).count() as u64;
    format!(
        "downloaded {} from {} to {} ({} in {}, {} average, from {}; sha1 verified)\n",
        clean(&d.file),
        clean(&d.group),
        clean(&d.dest.to_string_lossy()),
        size(d.size),
        elapsed_ms(d.elapsed_ms),
        speed(avg),
        plural(from, "peer", "peers")
    )
}

/// The seed's tags: `[D]` downloading, `[C]` complete, plus `[F]` failed, `[P]` paused and
/// `[Q]` queued.
pub fn state_tag(state: DownloadState) -> &'static str {
    match state {
        DownloadState::Downloading => "[D]",
        DownloadState::Complete => "[C]",
        DownloadState::Failed => "[F]",
        DownloadState::Verifying => "[V]",
        DownloadState::Paused => "[P]",
        DownloadState::Queued => "[Q]",
    }
}

fn paint_tag(state: DownloadState, style: Style) -> String {
    let tag = state_tag(state);
    match state {
        DownloadState::Downloading => style.yellow(tag),
        DownloadState::Complete => style.green(tag),
        DownloadState::Failed => style.red(tag),
        DownloadState::Verifying => style.yellow(tag),
        DownloadState::Paused | DownloadState::Queued => tag.to_string(),
    }
}

fn connected(d: &DownloadStatus) -> u64 {
    d.peers.iter().filter(|p| p.connected).count() as u64
}

/// Each line starts exactly like the seed's output, `[D] [grp_id] filename`, then details.
pub fn render_downloads(downloads: &[DownloadStatus], style: Style) -> String {
    if downloads.is_empty() {
        return "no downloads\n".into();
    }
    let rows: Vec<Vec<String>> = downloads
        .iter()
        .map(|d| {
            let head = format!(
                "{} [{}] {}",
                state_tag(d.state),
                clean(&d.group),
                clean(&d.file)
            );
            match d.state {
                DownloadState::Downloading => vec![
                    head,
                    percent(d),
                    format!("{}/{}{}", size(d.bytes_done), size(d.size), files_part(d)),
                    speed(d.speed_bps),
                    peers_cell(d),
                    format!("ETA {}", eta(d)),
                ],
                DownloadState::Complete => vec![
                    head,
                    percent(d),
                    format!("{}{}", size(d.size), selection_part(d)),
                    String::new(),
                    String::new(),
                    format!("-> {}", clean(&d.dest.to_string_lossy())),
                ],
                DownloadState::Verifying => vec![
                    head,
                    format!("verifying {}", percent(d)),
                    format!("{}/{}", size(d.bytes_done), size(d.size)),
                    String::new(),
                    String::new(),
                    "re-checking the pieces on disk".into(),
                ],
                DownloadState::Failed => vec![
                    head,
                    percent(d),
                    format!("{}/{}", size(d.bytes_done), size(d.size)),
                    String::new(),
                    String::new(),
                    format!(
                        "error: {}",
                        clean(d.error.as_deref().unwrap_or("unknown error"))
                    ),
                ],
                DownloadState::Paused | DownloadState::Queued => vec![
                    head,
                    percent(d),
                    format!("{}/{}", size(d.bytes_done), size(d.size)),
                    String::new(),
                    String::new(),
                    if d.state == DownloadState::Paused {
                        "paused".to_string()
                    } else {
                        "queued".to_string()
                    },
                ],
            }
        })
        .collect();
    use Align::*;
    let lines = table(None, &[Left, Right, Right, Right, Right, Left], &rows);
    // The tag is the first three bytes of every line; colour it after padding was computed.
    let mut lines: Vec<String> = lines
        .into_iter()
        .zip(downloads)
        .map(|(l, d)| format!("{}{}", paint_tag(d.state, style), &l[3..]))
        .collect();
    let count = |s| downloads.iter().filter(|d| d.state == s).count();
    let total_speed: u64 = downloads
        .iter()
        .filter(|d| d.state == DownloadState::Downloading)
        .map(|d| d.speed_bps)
        .sum();
    // Paused and queued counts only when there are any (the seed's line stays as it was).
    let mut stopped = String::new();
    for (s, word) in [
        (DownloadState::Paused, "paused"),
        (DownloadState::Queued, "queued"),
    ] {
        if count(s) > 0 {
            stopped.push_str(&format!(", {} {word}", count(s)));
        }
    }
    lines.push(format!(
        "Sum: {} ({} downloading, {} complete, {} failed{stopped}), {}",
        plural(downloads.len() as u64, "download", "downloads"),
        count(DownloadState::Downloading),
        count(DownloadState::Complete),
        count(DownloadState::Failed),
        speed(total_speed)
    ));
    join_lines(lines)
}

/// One self-contained progress line, printed every few seconds by `wait` when not on a terminal.
pub fn render_progress_line(d: &DownloadStatus) -> String {
    format!(
        "{} [{}] {}: {} ({}/{}), {}, {}, ETA {}\n",
        state_tag(d.state),
        clean(&d.group),
        clean(&d.file),
        percent(d),
        size(d.bytes_done),
        size(d.size),
        speed(d.speed_bps),
        plural(connected(d), "peer", "peers"),
        eta(d)
    )
}

pub fn render_status(s: &DaemonStatus, socket: &Path) -> String {
    let tracker = match (&s.tracker, s.tracker_connected) {
        (Some(t), true) => format!("{} (connected)", clean(t)),
        (Some(t), false) => format!("{} (not connected)", clean(t)),
        (None, _) => "none reachable".to_owned(),
    };
    let rows = [
        (
            "minitorrd",
            format!(
                "{} (protocol {})",
                clean(&s.version),
                proto::PROTOCOL_VERSION
            ),
        ),
        ("socket", socket.display().to_string()),
        (
            "user",
            s.user
                .as_deref()
                .map_or("not logged in".into(), |u| clean(u).into_owned()),
        ),
        ("tracker", tracker),
        (
            "reachable",
            if s.tracker_reachable {
                "yes (answered just now)".into()
            } else {
                "no (no answer within 1.5 s)".into()
            },
        ),
        ("auto-login", clean(&s.auto_login).into_owned()),
        ("device", clean(&s.device_name).into_owned()),
        ("peer address", clean(&s.peer_addr).into_owned()),
        (
            "seen as",
            s.observed_addr
                .as_deref()
                .map_or("(not logged in)".into(), |a| clean(a).into_owned()),
        ),
        ("relay", clean(&s.relay).into_owned()),
        ("shares", s.shares.to_string()),
        ("downloads", s.downloads.to_string()),
        ("port mapping", port_mapping(&s.port_mapping)),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{:<width$} {v}", format!("{k}:"));
    }
    out
}

pub fn render_login(r: &LoginReport) -> String {
    fn refs(v: &[ShareRef]) -> String {
        v.iter()
            .map(|s| format!("{}/{}", clean(&s.group), clean(&s.file)))
            .collect::<Vec<_>>()
            .join(", ")
    }
    let mut out = format!("logged in as {}\n", clean(&r.user));
    if !r.reshared.is_empty() {
        let _ = writeln!(
            out,
            "sharing again {}: {}",
            plural(r.reshared.len() as u64, "file", "files"),
            refs(&r.reshared)
        );
    }
    if !r.resumed_downloads.is_empty() {
        let n = plural(r.resumed_downloads.len() as u64, "download", "downloads");
        let _ = writeln!(out, "resumed {n}: {}", refs(&r.resumed_downloads));
    }
    for p in &r.problems {
        let _ = writeln!(out, "could not restore: {}", clean(p));
    }
    out
}

/// `devices`: one line per device, the current one marked with `*`.
pub fn render_devices(devices: &[proto::types::DeviceInfo]) -> String {
    if devices.is_empty() {
        return "no devices\n".into();
    }
    let mut out = String::new();
    for d in devices {
        let seen = if d.online {
            "online".to_string()
        } else {
            format!("last seen {}", unix_time(d.last_seen_unix))
        };
        out.push_str(&format!(
            "{} {}  {}  {}  {}\n",
            if d.current { "*" } else { " " },
            clean(&d.name),
            d.state.as_str(),
            seen,
            clean(&d.last_addr),
        ));
    }
    out
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
fn unix_time(t: u64) -> String {
    let (days, secs) = ((t / 86_400) as i64, t % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `list_shares`: one row per shared file.
pub fn render_shares(shares: &[proto::control::ShareStatus], style: Style) -> String {
    use proto::control::ShareState;
    if shares.is_empty() {
        return "you share no files; share one with: minitorrctl upload_file <file_path> <group_id>\n"
            .to_owned();
    }
    let rows: Vec<Vec<String>> = shares
        .iter()
        .map(|s| {
            let state = match s.state {
                ShareState::Serving => "serving",
                ShareState::Changed => "changed on disk",
                ShareState::Missing => "missing",
                ShareState::Waiting => "waiting for tracker",
            }
            .to_owned();
            vec![
                clean(&s.group).into_owned(),
                clean(&s.file).into_owned(),
                size(s.size),
                size(s.uploaded_bytes),
                s.peers_served.to_string(),
                state,
                clean(&s.path.to_string_lossy()).into_owned(),
            ]
        })
        .collect();
    use Align::*;
    let mut lines = table(
        Some(&[
            "GROUP", "FILE", "SIZE", "UPLOADED", "PEERS", "STATE", "PATH",
        ]),
        &[Left, Left, Right, Right, Right, Left, Left],
        &rows,
    );
    lines[0] = style.bold(&lines[0]);
    let serving = shares
        .iter()
        .filter(|s| s.state == ShareState::Serving)
        .count();
    lines.push(format!(
        "Sum: {}, {serving} serving",
        plural(shares.len() as u64, "file", "files")
    ));
    join_lines(lines)
}

/// `status`'s port mapping row: "mapped 203.0.113.7:7000 (UPnP-IGD, gateway …, lease 3600 s)".
fn port_mapping(m: &proto::control::PortMappingStatus) -> String {
    use proto::control::PortMappingState as S;
    let detail = m.detail.as_deref().map(clean).unwrap_or_default();
    match m.state {
        S::Off => format!("off ({detail})"),
        S::NotNeeded => format!("not needed ({detail})"),
        S::Searching => "searching for the router".into(),
        S::Mapped => format!(
            "mapped {} ({}, gateway {}, {})",
            clean(m.external_addr.as_deref().unwrap_or("?")),
            clean(m.protocol.as_deref().unwrap_or("?")),
            clean(m.gateway.as_deref().unwrap_or("?")),
            if m.lease_secs == 0 {
                "permanent".to_owned()
            } else {
                format!("lease {} s", m.lease_secs)
            }
        ),
        S::Failed => format!("failed: {detail} (retrying)"),
    }
}

/// `list_files GROUP ITEM`: one line per file (path inside the item, size) and per empty
/// directory (`dir/`), in the item's canonical order, then a summary line.
pub fn render_item(item: &ItemListing, style: Style) -> String {
    let rows: Vec<Vec<String>> = match &item.tree {
        None => vec![vec![clean(&item.name).into_owned(), size(item.size)]],
        Some(tree) => tree
            .entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size: s, .. } => vec![clean(&e.path).into_owned(), size(s)],
                EntryKind::Dir => vec![format!("{}/", clean(&e.path)), String::new()],
            })
            .collect(),
    };
    let mut lines = table(Some(&["PATH", "SIZE"]), &[Align::Left, Align::Right], &rows);
    lines[0] = style.bold(&lines[0]);
    let dirs = item.tree.as_ref().map_or(0, |t| {
        t.entries
            .iter()
            .filter(|e| e.kind == EntryKind::Dir)
            .count() as u64
    });
    let mut sum = format!(
        "Sum: {} in {}, {}",
        item_name(&item.name, item.tree.is_some()),
        clean(&item.group),
        plural(item.file_count() as u64, "file", "files")
    );
    if dirs > 0 {
        sum.push_str(&format!(
            ", {}",
            plural(dirs, "empty directory", "empty directories")
        ));
    }
    sum.push_str(&format!(
        ", {}, sha1 {}",
        size(item.size),
        item.sha1.short()
    ));
    lines.push(sum);
    join_lines(lines)
}

/// `, 3/16 files` for an item of several files (nothing for a single file); a selective
/// download says so: `, 1/3 files (3/10 files selected)`.
fn files_part(d: &DownloadStatus) -> String {
    let mut out = if d.files_total > 1 || d.selection.is_some() {
        format!(", {}/{} files", d.files_done, d.files_total)
    } else {
        String::new()
    };
    out.push_str(&selection_part(d));
    out
}

/// ` (3/10 files selected)` for a selective download (nothing otherwise).
fn selection_part(d: &DownloadStatus) -> String {
    match &d.selection {
        Some(item) => format!(" ({}/{} files selected)", d.files_total, item.files),
        None => String::new(),
    }
}

/// `upload_file DIR`: the item, then a warning listing what was skipped (never followed).
pub fn render_uploaded_tree(f: &FileSummary, skipped: &[proto::control::SkippedEntry]) -> String {
    let mut out = render_uploaded(f);
    if !skipped.is_empty() {
        out.push_str(&format!(
            "warning: skipped {} (not regular files or directories; never followed):\n",
            plural(skipped.len() as u64, "entry", "entries")
        ));
        for s in skipped {
            out.push_str(&format!("  {} ({})\n", clean(&s.path), clean(&s.what)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testdata::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(size(1 << 30), "1.0 GiB");
        assert_eq!(size(1_288_490_189), "1.2 GiB");
        assert_eq!(size(u64::MAX), "16384.0 PiB");
        assert_eq!(speed(12_897_485), "12.3 MiB/s");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_secs(0), "0s");
        assert_eq!(duration_secs(59), "59s");
        assert_eq!(duration_secs(200), "3m 20s");
        assert_eq!(duration_secs(7500), "2h 05m");
        assert_eq!(duration_secs(3 * 86_400 + 4 * 3600), "3d 04h");
        assert_eq!(elapsed_ms(12), "12 ms");
        assert_eq!(elapsed_ms(12_345), "12.3 s");
        assert_eq!(elapsed_ms(125_000), "2m 05s");
    }

    #[test]
    fn percent_never_claims_done_early() {
        let mut d = downloading();
        d.bytes_done = d.size - 1;
        assert_eq!(percent(&d), "99.9%");
        assert_eq!(percent(&complete()), "100.0%");
    }

    #[test]
    fn control_characters_are_neutralised() {
        assert_eq!(clean("a\x1b[31mb\n"), "a?[31mb?");
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
        // Names stored before trackers refused them: shown, not obeyed.
        assert_eq!(clean("invoice\u{202E}fdp.exe"), "invoice<U+202E>fdp.exe");
        assert_eq!(clean("bob\u{200B}"), "bob<U+200B>");
        assert!(matches!(clean("café 日本"), Cow::Borrowed(_)));
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("a.iso"), "a.iso");
        assert_eq!(shell_word("my file's.iso"), r"'my file'\''s.iso'");
    }

    #[test]
    fn snapshot_groups() {
        insta::assert_snapshot!(render_groups(&groups(), Style::PLAIN));
        insta::assert_snapshot!("groups_empty", render_groups(&[], Style::PLAIN));
    }

    #[test]
    fn snapshot_files() {
        insta::assert_snapshot!(render_files("g1", &files(), Style::PLAIN));
        insta::assert_snapshot!("files_empty", render_files("g1", &[], Style::PLAIN));
    }

    #[test]
    fn snapshot_requests() {
        insta::assert_snapshot!(render_requests("g1", &["bob".into(), "carol".into()]));
        insta::assert_snapshot!("requests_empty", render_requests("g1", &[]));
    }

    #[test]
    fn snapshot_downloads() {
        insta::assert_snapshot!(render_downloads(
            &[downloading(), complete(), failed()],
            Style::PLAIN
        ));
        insta::assert_snapshot!("downloads_empty", render_downloads(&[], Style::PLAIN));
    }

    #[test]
    fn a_part_file_being_reverified_shows_as_v_with_its_progress() {
        let mut d = downloading();
        d.state = DownloadState::Verifying;
        d.bytes_done = d.size * 43 / 100;
        let out = render_downloads(&[d.clone()], Style::PLAIN);
        assert!(out.starts_with("[V] ["), "{out}");
        assert!(out.contains("verifying 43"), "{out}");
        assert_eq!(state_tag(d.state), "[V]");
        assert_eq!(super::super::json::state(d.state), "verifying");
    }

    #[test]
    fn snapshot_paused_and_queued_downloads() {
        let mut paused = downloading();
        paused.state = DownloadState::Paused;
        paused.speed_bps = 0;
        let mut queued = complete();
        queued.state = DownloadState::Queued;
        queued.bytes_done = 0;
        queued.pieces_done = 0;
        let out = render_downloads(&[paused, queued, complete()], Style::PLAIN);
        assert!(out.starts_with("[P] [g1] debian.iso"), "{out}");
        assert!(out.contains("\n[Q] [g1] notes.txt"), "{out}");
        assert!(out.contains("1 paused, 1 queued"), "{out}");
        insta::assert_snapshot!(out);
    }

    #[test]
    fn a_selective_download_counts_and_names_its_selection() {
        let mut d = downloading();
        d.size = 3 << 20;
        d.bytes_done = 1 << 20;
        d.files_done = 1;
        d.files_total = 3;
        d.selection = Some(proto::control::ItemTotals {
            size: 1 << 30,
            pieces: 2048,
            files: 10,
        });
        let out = render_downloads(&[d.clone()], Style::PLAIN);
        assert!(
            out.contains("1.0 MiB/3.0 MiB, 1/3 files (3/10 files selected)"),
            "{out}"
        );
        d.state = DownloadState::Complete;
        d.bytes_done = d.size;
        d.files_done = 3;
        let out = render_downloads(&[d], Style::PLAIN);
        assert!(out.contains("3.0 MiB (3/10 files selected)"), "{out}");
    }

    #[test]
    fn downloads_lines_start_like_the_seed() {
        let out = render_downloads(&[downloading(), complete(), failed()], Style::PLAIN);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("[D] [g1] debian.iso "));
        assert!(lines[1].starts_with("[C] [g1] notes.txt "));
        assert!(lines[2].starts_with("[F] [g2] 日本語のファイル.bin "));
        assert!(lines[3].starts_with("Sum: "));
    }

    #[test]
    fn snapshot_downloads_in_colour() {
        insta::assert_snapshot!(render_downloads(
            &[downloading(), failed()],
            Style { color: true }
        ));
    }

    #[test]
    fn snapshot_single_results() {
        insta::assert_snapshot!("uploaded", render_uploaded(&files()[0]));
        insta::assert_snapshot!("download_started", render_download_started(&downloading()));
        insta::assert_snapshot!("download_done", render_download_done(&complete()));
        insta::assert_snapshot!("progress_line", render_progress_line(&downloading()));
        insta::assert_snapshot!(
            "status",
            render_status(
                &status(),
                Path::new("/run/user/1000/minitorr/minitorrd.sock")
            )
        );
        insta::assert_snapshot!("login", render_login(&login()));
        insta::assert_snapshot!("message", render_message("group g1 created; you own it"));
    }
}
#[cfg(test)]
mod item_tests {
    use super::*;
    use crate::render::testdata::*;

    #[test]
    fn snapshot_items() {
        insta::assert_snapshot!(
            "files_with_tree",
            render_files("g1", &files_with_tree(), Style::PLAIN)
        );
        insta::assert_snapshot!("item_tree", render_item(&tree_item(), Style::PLAIN));
        insta::assert_snapshot!("item_single", render_item(&single_item(), Style::PLAIN));
    }

    /// A path that could drive a terminal (never accepted by the tracker, but a listing is
    /// output) is escaped, not printed raw.
    #[test]
    fn item_paths_are_cleaned() {
        let mut item = tree_item();
        if let Some(t) = &mut item.tree {
            t.entries[0].path = "evil\u{1b}[2J".into();
        }
        let out = render_item(&item, Style::PLAIN);
        assert!(!out.contains('\u{1b}'), "{out}");
    }
}

/// "3 peers", and how the connected ones that are not direct were made: "3 peers (1 relayed)".
fn peers_cell(d: &DownloadStatus) -> String {
    use proto::control::PeerPath;
    let mut out = plural(connected(d), "peer", "peers");
    let mut via = Vec::new();
    for path in [PeerPath::Punched, PeerPath::Relayed] {
        let n = d
            .peers
            .iter()
            .filter(|p| p.connected && p.path == path)
            .count();
        if n > 0 {
            via.push(format!("{n} {}", path.as_str()));
        }
    }
    if !via.is_empty() {
        out.push_str(&format!(" ({})", via.join(", ")));
    }
    out
}

#[cfg(test)]
mod path_tests {
    use super::*;
    use proto::control::PeerPath;

    #[test]
    fn connected_peers_that_are_not_direct_are_named_in_the_peers_cell() {
        let mut d = crate::render::testdata::downloading();
        assert_eq!(peers_cell(&d), "2 peers");
        d.peers[1].path = PeerPath::Relayed;
        assert_eq!(peers_cell(&d), "2 peers (1 relayed)");
        d.peers[0].path = PeerPath::Punched;
        assert_eq!(peers_cell(&d), "2 peers (1 punched, 1 relayed)");
        // A disconnected peer's path is history, not shown.
        d.peers[2].path = PeerPath::Relayed;
        assert_eq!(peers_cell(&d), "2 peers (1 punched, 1 relayed)");
        assert!(render_downloads(&[d], Style::PLAIN).contains("(1 punched, 1 relayed)"));
    }
}

//! Directory trees as items (#13), end to end: real trackerd + minitorrd processes driven
//! through minitorrctl. Upload a tree (nested directories, an empty directory, an empty
//! file, a symlink pointing outside: skipped with a warning), download it from two seeders
//! and compare every file; resume after `kill -9`; planted links are never followed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use minitorr_e2e::*;

const MIB: usize = 1024 * 1024;
const LONG: Duration = Duration::from_secs(120);

/// A tree with nested directories, an empty directory, an empty file, files smaller and
/// larger than a piece, and a symlink pointing outside it. Returns (path, sha1) of every
/// regular file, relative to `root`.
fn make_tree(root: &Path, big: usize) -> Vec<(String, String)> {
    std::fs::create_dir_all(root.join("src/deep/er")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::create_dir_all(root.join("docs")).unwrap();
    let mut files = vec![
        ("src/deep/er/big.bin".to_string(), big),
        ("src/main.rs".to_string(), 1_234),
        ("docs/readme.txt".to_string(), 700_000),
        ("top.dat".to_string(), 512 * 1024),
    ]
    .into_iter()
    .map(|(p, size)| {
        let sha = random_file(&root.join(&p), size);
        (p, sha)
    })
    .collect::<Vec<_>>();
    std::fs::write(root.join("empty-file"), b"").unwrap();
    files.push((
        "empty-file".into(),
        "da39a3ee5e6b4b0d3255bfef95601890afd80709".into(),
    ));
    std::os::unix::fs::symlink("/etc/passwd", root.join("docs/escape")).unwrap();
    files
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &dst);
        } else if t.is_file() {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn check_tree(got: &Path, files: &[(String, String)]) {
    for (p, sha) in files {
        assert_eq!(&sha1_file(&got.join(p)), sha, "{p}");
    }
    assert!(got.join("empty-dir").is_dir(), "empty directory kept");
    assert!(
        got.join("docs/escape").symlink_metadata().is_err(),
        "symlinks are not part of the item"
    );
}

fn staging(dest: &Path, item: &str) -> PathBuf {
    dest.join(format!(".{item}.minitorr-part"))
}

#[test]
fn a_tree_from_two_seeders_arrives_identical_and_links_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let s0 = capped_peer(&tmp.path().join("s0"), &tracker, 4 * MIB as u64);
    let s1 = capped_peer(&tmp.path().join("s1"), &tracker, 4 * MIB as u64);
    let leech = Peer::start(&tmp.path().join("l"), &tracker);
    user(&s0, "s0");
    user(&s1, "s1");
    user(&leech, "l");
    group_with(&s0, "g1", &[(&s1, "s1"), (&leech, "l")]);

    let root0 = tmp.path().join("s0").join("proj");
    let files = make_tree(&root0, 9 * MIB + 17);
    let out = s0.ok(&["upload_file", root0.to_str().unwrap(), "g1"]);
    assert!(out.contains("shared proj in g1"), "{out}");
    assert!(
        out.contains("warning: skipped 1 entry") && out.contains("docs/escape (symbolic link)"),
        "the skipped symlink is listed: {out}"
    );
    // The second seeder has the same tree (without the link) and shares it with --json.
    let root1 = tmp.path().join("s1").join("proj");
    copy_tree(&root0, &root1);
    let v = s1.json(&["upload_file", root1.to_str().unwrap(), "g1"]);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(seeders(&leech, "g1", "proj"), 2, "same tree = same item");

    let dest = tmp.path().join("l").join("out");
    std::fs::create_dir(&dest).unwrap();
    leech.ok(&["download_file", "g1", "proj", dest.to_str().unwrap()]);
    let d = leech.wait_download("g1", "proj", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(d["files_total"], 5, "{d}");
    assert_eq!(d["files_done"], 5, "{d}");
    check_tree(&dest.join("proj"), &files);
    assert!(!staging(&dest, "proj").exists(), "staging renamed away");
    let contributors = d["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["bytes_received"].as_u64().unwrap() > 0)
        .count();
    assert!(contributors >= 2, "both seeders contributed: {d}");
    // The downloader now seeds the tree too.
    wait_until(
        "downloader listed as seeder",
        Duration::from_secs(20),
        || seeders(&leech, "g1", "proj") == 3,
    );
    let human = leech.ok(&["show_downloads"]);
    assert!(
        human.lines().any(|l| l.starts_with("[C] [g1] proj")),
        "{human}"
    );
}

#[test]
fn a_tree_download_resumes_after_sigkill_and_appears_only_when_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let seed = capped_peer(&tmp.path().join("s"), &tracker, 3 * MIB as u64);
    let mut leech = Peer::start(&tmp.path().join("l"), &tracker);
    user(&seed, "s");
    user(&leech, "l");
    group_with(&seed, "g1", &[(&leech, "l")]);
    let root = tmp.path().join("s").join("proj");
    let files = make_tree(&root, 14 * MIB);
    seed.ok(&["upload_file", root.to_str().unwrap(), "g1"]);

    let dest = tmp.path().join("l");
    leech.ok(&["download_file", "g1", "proj", dest.to_str().unwrap()]);
    wait_until("some of the tree downloaded", LONG, || {
        bytes_done(&leech, "g1", "proj") >= 3 * MIB as u64
    });
    leech.kill9();
    assert!(
        !dest.join("proj").exists(),
        "never a tree before verification"
    );
    assert!(staging(&dest, "proj").is_dir(), "staging kept for resume");
    leech.restart();
    let out = leech.ok(&["login", "l", "pw-of-someone"]);
    assert!(out.contains("proj"), "login resumes the tree: {out}");
    // Re-verifying the staging tree first ([V]), then downloading on from there.
    let mut d = leech.wait_download("g1", "proj", LONG);
    let start = std::time::Instant::now();
    while d["state"] == "verifying" && start.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(200));
        d = leech.wait_download("g1", "proj", LONG);
    }
    assert_eq!(d["state"], "complete", "{d}");
    check_tree(&dest.join("proj"), &files);
    assert!(!staging(&dest, "proj").exists());
}

/// A staging tree left with a link where a directory or a file of the item goes (planted by
/// someone, or by a confused script) is refused with a clear error; the link's target is
/// never written, and nothing appears at the destination.
#[test]
fn links_planted_in_the_staging_tree_are_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let seed = Peer::start(&tmp.path().join("s"), &tracker);
    let leech = Peer::start(&tmp.path().join("l"), &tracker);
    user(&seed, "s");
    user(&leech, "l");
    group_with(&seed, "g1", &[(&leech, "l")]);
    let root = tmp.path().join("s").join("proj");
    let files = make_tree(&root, MIB);
    seed.ok(&["upload_file", root.to_str().unwrap(), "g1"]);

    let victim_dir = tmp.path().join("victim");
    std::fs::create_dir(&victim_dir).unwrap();
    std::fs::write(victim_dir.join("main.rs"), b"precious").unwrap();
    let victim_file = tmp.path().join("secret");
    std::fs::write(&victim_file, b"secret").unwrap();

    for plant in ["dir", "file"] {
        let dest = tmp.path().join("l").join(plant);
        std::fs::create_dir(&dest).unwrap();
        let st = staging(&dest, "proj");
        std::fs::create_dir(&st).unwrap();
        if plant == "dir" {
            std::os::unix::fs::symlink(&victim_dir, st.join("src")).unwrap();
        } else {
            std::os::unix::fs::symlink(&victim_file, st.join("top.dat")).unwrap();
        }
        let out = leech.ctl(&["download_file", "g1", "proj", dest.to_str().unwrap()]);
        let text = format!("{}{}", stdout_of(&out), stderr_of(&out));
        assert!(!out.status.success(), "{plant}: refused: {text}");
        assert!(
            text.contains("symbolic link") || text.contains("not following"),
            "{plant}: the error says why: {text}"
        );
        assert!(!dest.join("proj").exists());
    }
    assert_eq!(
        std::fs::read(victim_dir.join("main.rs")).unwrap(),
        b"precious"
    );
    assert_eq!(std::fs::read_dir(&victim_dir).unwrap().count(), 1);
    assert_eq!(std::fs::read(&victim_file).unwrap(), b"secret");

    // A clean destination still works.
    let dest = tmp.path().join("l").join("clean");
    std::fs::create_dir(&dest).unwrap();
    leech.ok(&["download_file", "g1", "proj", dest.to_str().unwrap()]);
    let d = leech.wait_download("g1", "proj", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    check_tree(&dest.join("proj"), &files);
}

/// A file of a shared tree edited in place or replaced is never served: the item is
/// withdrawn from the tracker.
#[test]
fn a_changed_file_withdraws_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let seed = Peer::start(&tmp.path().join("s"), &tracker);
    let other = Peer::start(&tmp.path().join("o"), &tracker);
    user(&seed, "s");
    user(&other, "o");
    group_with(&seed, "g1", &[(&other, "o")]);
    let root = tmp.path().join("s").join("proj");
    make_tree(&root, MIB);
    seed.ok(&["upload_file", root.to_str().unwrap(), "g1"]);
    assert_eq!(seeders(&other, "g1", "proj"), 1);
    std::fs::write(root.join("src/main.rs"), b"edited").unwrap();
    wait_until("changed tree withdrawn", Duration::from_secs(30), || {
        seeders(&other, "g1", "proj") == 0
    });
    let shares = seed.json(&["list_shares"]);
    assert_eq!(shares["shares"][0]["state"], "changed", "{shares}");
}

/// `--only` fetches just the matching files; the tree appears with just those; the member
/// seeds them (a second member gets them from it alone); a later download_file without
/// `--only` adds the rest without fetching anything twice.
#[test]
fn selective_download_then_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let mut seed = Peer::start(&tmp.path().join("s"), &tracker);
    let part = Peer::start(&tmp.path().join("p"), &tracker);
    let late = Peer::start(&tmp.path().join("late"), &tracker);
    user(&seed, "s");
    user(&part, "p");
    user(&late, "late");
    group_with(&seed, "g1", &[(&part, "p"), (&late, "late")]);
    let root = tmp.path().join("s").join("proj");
    let files = make_tree(&root, 3 * MIB);
    seed.ok(&["upload_file", root.to_str().unwrap(), "g1"]);

    let dest = tmp.path().join("p");
    let out = part.fails(
        1,
        &[
            "download_file",
            "g1",
            "proj",
            dest.to_str().unwrap(),
            "--only",
            "nothing/*",
        ],
    );
    assert!(out.contains("no file of proj matches"), "{out}");
    part.ok(&[
        "download_file",
        "g1",
        "proj",
        dest.to_str().unwrap(),
        "--only",
        "docs",
        "--only",
        "*.dat",
    ]);
    let d = part.wait_download("g1", "proj", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    let got = dest.join("proj");
    let selected = |p: &str| p.starts_with("docs/") || p == "top.dat";
    for (p, sha) in &files {
        if selected(p) {
            assert_eq!(&sha1_file(&got.join(p)), sha, "{p}");
        } else {
            assert!(!got.join(p).exists(), "{p} not selected, not fetched");
        }
    }
    let first: u64 = files
        .iter()
        .filter(|(p, _)| selected(p))
        .map(|(p, _)| std::fs::metadata(got.join(p)).unwrap().len())
        .sum();

    // The original seeder goes away: the partial member alone serves the selected files.
    seed.kill9();
    let late_dest = tmp.path().join("late");
    late.ok(&[
        "download_file",
        "g1",
        "proj",
        late_dest.to_str().unwrap(),
        "--only",
        "docs/*",
    ]);
    let d = late.wait_download("g1", "proj", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(
        sha1_file(&late_dest.join("proj/docs/readme.txt")),
        files.iter().find(|f| f.0 == "docs/readme.txt").unwrap().1
    );

    // The rest: the seeder is back; nothing already held is fetched again.
    seed.restart();
    seed.ok(&["login", "s", "pw-of-someone"]);
    part.ok(&["download_file", "g1", "proj", dest.to_str().unwrap()]);
    let mut d = part.wait_download("g1", "proj", LONG);
    let start = std::time::Instant::now();
    while d["state"] == "verifying" && start.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(200));
        d = part.wait_download("g1", "proj", LONG);
    }
    assert_eq!(d["state"], "complete", "{d}");
    check_tree(&got, &files);
    let total: u64 = files
        .iter()
        .map(|(p, _)| std::fs::metadata(got.join(p)).unwrap().len())
        .sum();
    let fetched: u64 = d["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes_received"].as_u64().unwrap())
        .sum();
    assert!(
        fetched <= total - first,
        "only the missing files fetched: {fetched} of {total} ({first} held): {d}"
    );
}

/// Issue #13's scale floor, with generous bounds (the measured times go to
/// docs/BENCHMARKS.md): a tree of 10,000 small files (1–64 KiB, 3 levels deep) is uploaded,
/// listed and downloaded in seconds, not minutes.
#[test]
fn ten_thousand_small_files() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let seed = Peer::start(&tmp.path().join("s"), &tracker);
    let leech = Peer::start(&tmp.path().join("l"), &tracker);
    user(&seed, "s");
    user(&leech, "l");
    group_with(&seed, "g1", &[(&leech, "l")]);
    let root = tmp.path().join("s").join("many");
    // One buffer of pseudo-random bytes; each file is a different slice of it.
    let pool: Vec<u8> = (0..128 * 1024u32)
        .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut total = 0usize;
    for i in 0..10_000u32 {
        let dir = root.join(format!(
            "d{}/e{}/f{}",
            i % 10,
            (i / 10) % 10,
            (i / 100) % 10
        ));
        std::fs::create_dir_all(&dir).unwrap();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = 1024 + (x % (63 * 1024)) as usize;
        total += size;
        let at = (x >> 20) as usize % (pool.len() - size);
        std::fs::write(dir.join(format!("file{i}.bin")), &pool[at..at + size]).unwrap();
    }
    let t = std::time::Instant::now();
    seed.ok(&["upload_file", root.to_str().unwrap(), "g1"]);
    let upload = t.elapsed();
    let t = std::time::Instant::now();
    let listing = leech.json(&["list_files", "g1", "many"]);
    let list = t.elapsed();
    assert_eq!(
        listing["item"]["file_count"], 10_000,
        "{}",
        &listing["item"]["kind"]
    );
    let dest = tmp.path().join("l");
    let t = std::time::Instant::now();
    leech.ok(&["download_file", "g1", "many", dest.to_str().unwrap()]);
    let d = leech.wait_download("g1", "many", Duration::from_secs(600));
    let download = t.elapsed();
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(d["files_done"], 10_000);
    for i in (0..10_000u32).step_by(997) {
        let rel = format!(
            "d{}/e{}/f{}/file{i}.bin",
            i % 10,
            (i / 10) % 10,
            (i / 100) % 10
        );
        assert_eq!(
            sha1_file(&dest.join("many").join(&rel)),
            sha1_file(&root.join(&rel))
        );
    }
    eprintln!(
        "10,000 files, {} MiB: upload {upload:?}, list {list:?}, download {download:?}",
        total / MIB
    );
    for (what, took) in [("upload", upload), ("list", list), ("download", download)] {
        assert!(took < Duration::from_secs(300), "{what} took {took:?}");
    }
}

/// A selective download is reported as one: `show_downloads` (human and `--json`) counts the
/// selected files' size, pieces and files, and says how many of the item's files are
/// selected. Its files are seeded again after the holder restarts (SIGTERM) and after a
/// SIGKILL: with the original seeder gone, later members get exactly those files from it.
#[test]
fn selective_holdings_are_reported_and_seeded_again_after_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let mut seed = Peer::start(&tmp.path().join("s"), &tracker);
    let mut part = Peer::start(&tmp.path().join("p"), &tracker);
    let mut late = Peer::start(&tmp.path().join("late"), &tracker);
    let later = Peer::start(&tmp.path().join("later"), &tracker);
    user(&seed, "s");
    user(&part, "p");
    user(&late, "late");
    user(&later, "later");
    group_with(
        &seed,
        "g1",
        &[(&part, "p"), (&late, "late"), (&later, "later")],
    );
    let root = tmp.path().join("s").join("proj");
    let files = make_tree(&root, 3 * MIB);
    seed.ok(&["upload_file", root.to_str().unwrap(), "g1"]);
    let sha = |p: &str| files.iter().find(|f| f.0 == p).unwrap().1.clone();

    let dest = tmp.path().join("p");
    let only = ["--only", "docs", "--only", "*.dat"];
    let mut args = vec!["download_file", "g1", "proj", dest.to_str().unwrap()];
    args.extend(only);
    part.ok(&args);
    let d = part.wait_download("g1", "proj", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    // docs/readme.txt and top.dat of the item's 5 files (the symlink is not part of it).
    let selected_size = (700_000 + 512 * 1024) as u64;
    let check_report = |d: &serde_json::Value| {
        assert_eq!(d["size"], selected_size, "the selection's size: {d}");
        assert_eq!(d["bytes_done"], selected_size, "{d}");
        assert_eq!(d["files_done"], 2, "{d}");
        assert_eq!(d["files_total"], 2, "{d}");
        assert_eq!(
            d["pieces_done"], d["pieces_total"],
            "100 % of the selection: {d}"
        );
        assert_eq!(d["selection"]["selected"], true, "{d}");
        assert_eq!(d["selection"]["item_files"], 5, "{d}");
        assert_eq!(
            d["selection"]["item_size"],
            (3 * MIB + 1_234 + 700_000 + 512 * 1024) as u64,
            "{d}"
        );
    };
    check_report(&d);
    let human = part.ok(&["show_downloads"]);
    assert!(human.contains("2/5 files selected"), "{human}");
    assert!(human.contains("100.0%"), "{human}");

    // Graceful restart of the selective holder, then the original seeder goes away.
    part.terminate();
    part.restart();
    part.ok(&["login", "p", "pw-of-someone"]);
    check_report(&download_entry(&part, "g1", "proj").expect("listed after a restart"));
    seed.kill9();
    let late_dest = tmp.path().join("late");
    let mut args = vec!["download_file", "g1", "proj", late_dest.to_str().unwrap()];
    args.extend(only);
    late.ok(&args);
    let d = late.wait_download("g1", "proj", LONG);
    assert_eq!(d["state"], "complete", "{d}\n{}", part.log_tail(30));
    for p in ["docs/readme.txt", "top.dat"] {
        assert_eq!(sha1_file(&late_dest.join("proj").join(p)), sha(p), "{p}");
    }
    check_report(&d);

    // SIGKILL of the selective holder; the other holder is gone too: after the restart the
    // selective holder alone serves its files again.
    late.kill9();
    part.kill9();
    part.restart();
    part.ok(&["login", "p", "pw-of-someone"]);
    let later_dest = tmp.path().join("later");
    later.ok(&[
        "download_file",
        "g1",
        "proj",
        later_dest.to_str().unwrap(),
        "--only",
        "top.dat",
    ]);
    let d = later.wait_download("g1", "proj", LONG);
    assert_eq!(d["state"], "complete", "{d}\n{}", part.log_tail(30));
    assert_eq!(sha1_file(&later_dest.join("proj/top.dat")), sha("top.dat"));
    assert!(!later_dest.join("proj/docs").exists(), "only top.dat: {d}");
    assert_eq!(d["files_total"], 1, "{d}");
    assert_eq!(d["selection"]["item_files"], 5, "{d}");
    let from: Vec<_> = d["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["bytes_received"].as_u64().unwrap() > 0)
        .map(|p| p["user"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(from, ["p"], "served by the selective holder alone: {d}");
}

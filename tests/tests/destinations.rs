//! Download destinations behave like `cp` (issue #12, item 3), and a fully verified download
//! completes while the tracker is unreachable (item 5). Real trackerd + minitorrd processes,
//! driven through minitorrctl — from a working directory of its own where relative paths
//! matter.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use minitorr_e2e::*;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const LONG: Duration = Duration::from_secs(90);

/// What `alice` uploaded of `file` so far (her `list_shares`).
fn uploaded(alice: &Peer, file: &str) -> u64 {
    let v = alice.json(&["list_shares"]);
    v["shares"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["file"] == file)
        .map_or(0, |s| s["uploaded_bytes"].as_u64().unwrap())
}

/// Every entry under `dir`, recursively, as paths relative to it (sorted).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

/// alice shares `names` (random content of `size` bytes each) in g1; bob is a member.
fn shared_files(tmp: &Path, names: &[&str], size: usize) -> (Tracker, Peer, Peer, Vec<String>) {
    let (tracker, alice, bob) = alice_and_bob_in_g1(tmp);
    let src = tmp.join("src");
    std::fs::create_dir(&src).unwrap();
    let shas = names
        .iter()
        .map(|n| {
            let p = src.join(n);
            let sha = random_file(&p, size);
            alice.ok(&["upload_file", p.to_str().unwrap(), "g1"]);
            sha
        })
        .collect();
    (tracker, alice, bob, shas)
}

#[test]
fn every_destination_form_behaves_like_cp() {
    let tmp = tempfile::tempdir().unwrap();
    let names = ["a.bin", "b.bin", "c.bin", "d.bin"];
    let (_t, alice, bob, shas) = shared_files(tmp.path(), &names, 300 * KIB + 7);
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let ok = |args: &[&str]| {
        let out = bob.ctl_in(&work, args);
        assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
        stdout_of(&out)
    };

    // An existing directory, with or without a slash: the file goes inside, same name.
    std::fs::create_dir(work.join("dl")).unwrap();
    ok(&["download_file", "g1", "a.bin", "dl", "--wait"]);
    assert_eq!(sha1_file(&work.join("dl/a.bin")), shas[0]);
    ok(&["download_file", "g1", "b.bin", "dl/", "--wait"]);
    assert_eq!(sha1_file(&work.join("dl/b.bin")), shas[1]);

    // `reports/` (the trial's case): a directory, created because it is missing.
    ok(&["download_file", "g1", "c.bin", "reports/", "--wait"]);
    assert!(work.join("reports").is_dir());
    assert_eq!(sha1_file(&work.join("reports/c.bin")), shas[2]);

    // A path without a slash names the file (its directory exists).
    ok(&["download_file", "g1", "d.bin", "dl/renamed.bin", "--wait"]);
    assert_eq!(sha1_file(&work.join("dl/renamed.bin")), shas[3]);
    assert_eq!(
        tree(&work),
        [
            "dl",
            "dl/a.bin",
            "dl/b.bin",
            "dl/renamed.bin",
            "reports",
            "reports/c.bin"
        ]
        .map(PathBuf::from),
        "no part file or anything else left behind"
    );
    let up: u64 = names.iter().map(|n| uploaded(&alice, n)).sum();
    assert!(up >= 4 * (300 * KIB as u64 + 7), "alice served them: {up}");
}

#[test]
fn a_missing_directory_is_refused_before_anything_is_fetched() {
    let tmp = tempfile::tempdir().unwrap();
    let (_t, alice, bob, _) = shared_files(tmp.path(), &["f.bin"], 2 * MIB + 3);
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("notes.txt"), b"mine").unwrap();
    let refuse = |dest: &str, says: &str| {
        let out = bob.ctl_in(&work, &["download_file", "g1", "f.bin", dest]);
        assert_eq!(out.status.code(), Some(1), "{dest}: {}", stderr_of(&out));
        let err = stderr_of(&out);
        assert!(err.contains(says), "{dest}: {err}");
        err
    };
    // Two levels missing with a slash: only the last level would be created.
    let e = refuse("deep/reports/", "mkdir -p");
    assert!(e.contains("deep"), "{e}");
    // A file in a directory that does not exist.
    refuse("nodir/f.bin", "does not exist");
    // Under a regular file.
    refuse("notes.txt/", "not a directory");
    refuse("notes.txt/f.bin", "not a directory");
    // A file unknown to the group with a `dir/` destination: the directory made for it is
    // removed again.
    let out = bob.ctl_in(&work, &["download_file", "g1", "nosuch.bin", "made/"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));

    assert_eq!(tree(&work), [PathBuf::from("notes.txt")], "nothing created");
    assert_eq!(std::fs::read(work.join("notes.txt")).unwrap(), b"mine");
    let downloads = bob.json(&["show_downloads"]);
    assert_eq!(
        downloads["downloads"],
        serde_json::json!([]),
        "never started"
    );
    assert_eq!(uploaded(&alice, "f.bin"), 0, "the seeder sent nothing");
}

#[test]
fn an_existing_file_is_complete_at_once_if_identical_and_refused_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 3 * MIB + 5;
    let (_t, alice, bob, shas) = shared_files(tmp.path(), &["same.bin", "other.bin"], size);
    let dl = tmp.path().join("bob").join("dl");
    std::fs::create_dir(&dl).unwrap();

    // The very file, already there (copied by hand): complete at once, and shared.
    std::fs::copy(tmp.path().join("src/same.bin"), dl.join("same.bin")).unwrap();
    let start = Instant::now();
    let out = bob.ok(&["download_file", "g1", "same.bin", dl.to_str().unwrap()]);
    eprintln!("identical file adopted in {:?}", start.elapsed());
    assert!(out.contains("already holds"), "{out}");
    let d = download_entry(&bob, "g1", "same.bin").unwrap();
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(d["bytes_done"], size as u64, "{d}");
    assert_eq!(sha1_file(&dl.join("same.bin")), shas[0]);
    assert_eq!(seeders(&alice, "g1", "same.bin"), 2, "bob shares it now");
    let mine = bob.json(&["list_shares"]);
    assert_eq!(mine["shares"][0]["file"], "same.bin", "{mine}");
    assert_eq!(mine["shares"][0]["state"], "serving", "{mine}");
    assert_eq!(uploaded(&alice, "same.bin"), 0, "nothing fetched");

    // Same size, other content: refused, untouched.
    let fake = dl.join("other.bin");
    let fake_sha = random_file(&fake, size);
    let e = bob.fails(
        1,
        &["download_file", "g1", "other.bin", dl.to_str().unwrap()],
    );
    assert!(e.contains("already exists with other content"), "{e}");
    assert!(e.contains("different SHA1"), "{e}");
    assert_eq!(sha1_file(&fake), fake_sha);
    // Another size: refused without hashing.
    std::fs::write(&fake, b"short").unwrap();
    let e = bob.fails(
        1,
        &["download_file", "g1", "other.bin", fake.to_str().unwrap()],
    );
    assert!(e.contains("5 bytes"), "{e}");
    assert_eq!(std::fs::read(&fake).unwrap(), b"short");
    // A directory at the file's name is never replaced.
    std::fs::remove_file(&fake).unwrap();
    std::fs::create_dir(&fake).unwrap();
    let e = bob.fails(
        1,
        &["download_file", "g1", "other.bin", dl.to_str().unwrap()],
    );
    assert!(e.contains("is a directory"), "{e}");

    assert_eq!(uploaded(&alice, "other.bin"), 0, "nothing fetched");
    assert_eq!(
        tree(&dl),
        [PathBuf::from("other.bin"), PathBuf::from("same.bin")],
        "no part file left"
    );
}

/// A download whose seeder vanishes fails; what it keeps (the part file, for resume) is in the
/// destination directory and belongs to the entry `show_downloads` lists — nothing elsewhere.
#[test]
fn a_failed_download_leaves_nothing_outside_its_listed_part_file() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("tracker"));
    let mut alice = capped_peer(&tmp.path().join("alice"), &tracker, MIB as u64);
    let bob = Peer::start(&tmp.path().join("bob"), &tracker);
    user(&alice, "alice");
    user(&bob, "bob");
    group_with(&alice, "g1", &[(&bob, "bob")]);
    let src = tmp.path().join("alice").join("big.bin");
    random_file(&src, 8 * MIB);
    alice.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = bob.ctl_in(&work, &["download_file", "g1", "big.bin", "in/"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    wait_until("some bytes", LONG, || bytes_done(&bob, "g1", "big.bin") > 0);
    alice.kill9();
    let d = bob.wait_download("g1", "big.bin", LONG);
    assert_eq!(d["state"], "failed", "{d}");
    assert_eq!(
        tree(&work),
        [
            PathBuf::from("in"),
            PathBuf::from("in/.big.bin.minitorr-part")
        ],
        "only the listed download's part file"
    );
    assert_eq!(
        Path::new(d["dest"].as_str().unwrap()),
        work.join("in").canonicalize().unwrap().join("big.bin")
    );
}

/// The tracker stops answering (SIGSTOP: connections hang, the hardest case) before the last
/// piece: the download still completes, moves into place and is recorded; it registers as a
/// holder once the tracker answers again.
#[test]
fn a_download_completes_while_the_tracker_is_unreachable() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("tracker"));
    let alice = capped_peer(&tmp.path().join("alice"), &tracker, 2 * MIB as u64);
    let bob = Peer::start(&tmp.path().join("bob"), &tracker);
    user(&alice, "alice");
    user(&bob, "bob");
    group_with(&alice, "g1", &[(&bob, "bob")]);
    let size = 8 * MIB + 1;
    let src = tmp.path().join("alice").join("f.bin");
    let sha = random_file(&src, size);
    alice.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    let dl = tmp.path().join("bob").join("dl");
    std::fs::create_dir(&dl).unwrap();
    bob.ok(&["download_file", "g1", "f.bin", dl.to_str().unwrap()]);
    wait_until("a first piece", LONG, || {
        bytes_done(&bob, "g1", "f.bin") > 0
    });
    let stopped = tracker_signal(&tracker, nix::sys::signal::Signal::SIGSTOP);
    let d = bob.wait_download("g1", "f.bin", LONG);
    let after_stop = stopped.elapsed();
    tracker_signal(&tracker, nix::sys::signal::Signal::SIGCONT);
    eprintln!("completed {after_stop:?} after the tracker stopped answering");
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&dl.join("f.bin")), sha);
    assert!(!dl.join(".f.bin.minitorr-part").exists());
    // Registered as a holder once the tracker is back (the announcement is retried).
    wait_until("bob listed as a seeder", LONG, || {
        seeders(&alice, "g1", "f.bin") == 2
    });
}

/// Send `sig` to the tracker process; returns when it was sent.
fn tracker_signal(t: &Tracker, sig: nix::sys::signal::Signal) -> Instant {
    let pid = nix::unistd::Pid::from_raw(tracker_pid(t) as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
    Instant::now()
}

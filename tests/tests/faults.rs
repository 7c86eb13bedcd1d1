//! Process faults during file transfers: kill -9 of trackerd, of a seeder and of the downloader
//! at several points; the destination filesystem full or read-only; a shared file changed or
//! deleted on disk after it was shared. Real processes on 127.0.0.1 (see docs/RELIABILITY.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use minitorr_e2e::*;

const MIB: usize = 1024 * 1024;
const LONG: Duration = Duration::from_secs(60);

fn peer_stats(d: &serde_json::Value, user: &str) -> Option<serde_json::Value> {
    d["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user"] == user)
        .cloned()
}

/// One seeder `s` (upload capped at `rate`), one downloader `l`, both in g1; `size` random bytes
/// shared as `name`. Returns (tracker, seeder, leech, source path, sha1).
fn setup(tmp: &Path, name: &str, size: usize, rate: u64) -> (Tracker, Peer, Peer, PathBuf, String) {
    let tracker = Tracker::start(&tmp.join("t"));
    let seed = capped_peer(&tmp.join("s"), &tracker, rate);
    let leech = Peer::start(&tmp.join("l"), &tracker);
    user(&seed, "s");
    user(&leech, "l");
    group_with(&seed, "g1", &[(&leech, "l")]);
    let src = tmp.join("s").join(name);
    let sha = random_file(&src, size);
    seed.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    (tracker, seed, leech, src, sha)
}

#[test]
fn trackerd_killed_mid_download_the_download_goes_on_and_the_daemon_reconnects() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 10 * MIB + 5;
    let (mut tracker, _seed, leech, _src, sha) = setup(tmp.path(), "t.bin", size, 2 * MIB as u64);
    let dest = tmp.path().join("l").join("t.bin");
    leech.ok(&["download_file", "g1", "t.bin", dest.to_str().unwrap()]);
    wait_until("a first piece", LONG, || {
        bytes_done(&leech, "g1", "t.bin") > 0
    });
    tracker.kill9();
    let at_kill = bytes_done(&leech, "g1", "t.bin");
    // With the tracker gone, the download keeps pulling from the seeder it already knows.
    wait_until("progress without a tracker", LONG, || {
        bytes_done(&leech, "g1", "t.bin") >= at_kill + 3 * MIB as u64
    });
    let st = leech.json(&["status"]);
    assert_eq!(st["user"], "l", "the session is kept locally: {st}");
    let err = leech.fails(1, &["list_groups"]);
    assert!(err.contains("tracker"), "tracker calls fail clearly: {err}");

    // The tracker comes back (same database) while the download still runs.
    tracker.restart();
    let d = leech.wait_download("g1", "t.bin", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&dest), sha);
    // The daemon reconnects without a new login (the session lives in the tracker's database)
    // and re-announces: the finished file makes the downloader a seeder.
    wait_until("the daemon reconnects", Duration::from_secs(15), || {
        leech.json(&["status"])["tracker_connected"] == true
    });
    leech.ok(&["list_groups"]);
    wait_until(
        "the downloader re-announced as a seeder",
        Duration::from_secs(15),
        || seeders(&leech, "g1", "t.bin") == 2,
    );
}

#[test]
fn sole_seeder_killed_early_or_mid_download_and_restarted_the_download_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 6 * MIB + 1;
    let (_tracker, mut seed, leech, _src, sha) = setup(tmp.path(), "s.bin", size, 2 * MIB as u64);
    let out = tmp.path().join("l");

    // Early: the seeder dies as soon as the download is started (before any piece).
    let dest = out.join("s.bin");
    leech.ok(&["download_file", "g1", "s.bin", dest.to_str().unwrap()]);
    seed.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    // Mid-way is tested the same way after the restart; first the seeder comes back.
    seed.restart();
    seed.ok(&["login", "s", "pw-of-someone"]);
    wait_until("a third downloaded", LONG, || {
        bytes_done(&leech, "g1", "s.bin") >= (size / 3) as u64
    });
    // Mid: killed again, back within the stall timeout.
    seed.kill9();
    let at_kill = bytes_done(&leech, "g1", "s.bin");
    std::thread::sleep(Duration::from_millis(1500));
    let d = download_entry(&leech, "g1", "s.bin").unwrap();
    assert_eq!(d["state"], "downloading", "still waiting for a seeder: {d}");
    assert!(d["bytes_done"].as_u64().unwrap() >= at_kill, "{d}");
    seed.restart();
    seed.ok(&["login", "s", "pw-of-someone"]);
    let d = leech.wait_download("g1", "s.bin", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&dest), sha);
}

#[test]
fn sole_seeder_gone_for_good_fails_the_download_clearly_and_keeps_verified_pieces() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 6 * MIB + 1;
    let (_tracker, mut seed, leech, _src, sha) = setup(tmp.path(), "g.bin", size, 2 * MIB as u64);
    let dest = tmp.path().join("l").join("g.bin");
    leech.ok(&["download_file", "g1", "g.bin", dest.to_str().unwrap()]);
    wait_until("a first MiB", LONG, || {
        bytes_done(&leech, "g1", "g.bin") >= MIB as u64
    });
    seed.kill9();
    let d = leech.wait_download("g1", "g.bin", Duration::from_secs(40));
    assert_eq!(d["state"], "failed", "{d}");
    let why = d["error"].as_str().unwrap();
    assert!(why.contains("no holder online"), "{why}");
    let human = leech.ok(&["show_downloads"]);
    assert!(
        human.lines().any(|l| l.starts_with("[F] [g1] g.bin")),
        "{human}"
    );
    assert!(!dest.exists(), "no final file for a failed download");
    let part = tmp.path().join("l").join(".g.bin.minitorr-part");
    assert!(part.exists(), "verified pieces are kept for a retry");
    // The seeder comes back: the failed download is retried by itself (the holder's
    // HolderOnline event) from the kept pieces, or by download_file if that comes first —
    // which then either starts it or finds the retry already running.
    seed.restart();
    seed.ok(&["login", "s", "pw-of-someone"]);
    let out = leech.ctl(&["download_file", "g1", "g.bin", dest.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("already downloading"),
        "download_file after the seeder came back: {err}"
    );
    let d = leech.wait_download("g1", "g.bin", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&dest), sha);
}

#[test]
fn downloader_killed_early_late_and_right_after_completion_resumes_correctly() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 8 * MIB + 99;
    let (_tracker, _seed, mut leech, _src, sha) = setup(tmp.path(), "r.bin", size, 3 * MIB as u64);
    let dest = tmp.path().join("l").join("r.bin");
    let part = tmp.path().join("l").join(".r.bin.minitorr-part");
    let relogin = |leech: &mut Peer| {
        leech.restart();
        leech.ok(&["login", "l", "pw-of-someone"])
    };

    // Early: right after download_file returned (part file created, nothing verified yet).
    leech.ok(&["download_file", "g1", "r.bin", dest.to_str().unwrap()]);
    leech.kill9();
    assert!(!dest.exists());
    let out = relogin(&mut leech);
    assert!(out.contains("r.bin"), "login resumes it: {out}");

    // Late: at 70 %.
    wait_until("70% downloaded", LONG, || {
        bytes_done(&leech, "g1", "r.bin") >= (size * 7 / 10) as u64
    });
    let before = bytes_done(&leech, "g1", "r.bin");
    leech.kill9();
    assert!(!dest.exists(), "never a final file before verification");
    relogin(&mut leech);
    // Login returns at once; the part file is re-verified in the background, then the
    // download goes on from the verified pieces.
    let mut resumed_at = 0;
    wait_until("the resumed download shows", LONG, || {
        // `[V]` first (re-checking the part file, bytes_done = bytes checked), then running.
        let running =
            download_entry(&leech, "g1", "r.bin").is_some_and(|d| d["state"] != "verifying");
        resumed_at = bytes_done(&leech, "g1", "r.bin");
        running && resumed_at > 0
    });
    assert!(
        resumed_at >= before,
        "resumed from the verified pieces ({resumed_at} < {before})"
    );

    // Right after completion: killed as soon as the download reads complete.
    let d = leech.wait_download("g1", "r.bin", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    leech.kill9();
    assert_eq!(sha1_file(&dest), sha);
    assert!(!part.exists());
    let out = relogin(&mut leech);
    let d = leech.wait_download("g1", "r.bin", Duration::from_secs(20));
    assert_eq!(
        d["state"], "complete",
        "a finished download stays finished after kill -9: {d}\nlogin said: {out}"
    );
    assert_eq!(sha1_file(&dest), sha, "the finished file is intact");
    assert!(!part.exists(), "no stray part file");
    // It is shared again by the restarted daemon (the killed one may still count as online at
    // the tracker until its peer timeout).
    assert!(out.contains("sharing again 1 file: g1/r.bin"), "{out}");
    assert_eq!(leech.json(&["status"])["shares"], 1);
    assert!(seeders(&leech, "g1", "r.bin") >= 2);
}

/// Mount a tmpfs at `dir` with `opts`; `false` (and a message) if this host does not allow it.
fn mount_tmpfs(dir: &Path, opts: &str) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(dir)
        .status();
    match st {
        Ok(s) if s.success() => true,
        other => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs at {} ({other:?}); run as root to test this",
                dir.display()
            );
            false
        }
    }
}

/// Unmounts on drop, so a failing assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn disk_full_at_the_destination_is_a_clear_error_and_leaves_no_final_file() {
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    if !mount_tmpfs(&small, "size=8m") {
        return;
    }
    let _m = Mounted(small.clone());
    let size = 12 * MIB + 3;
    let (_tracker, _seed, leech, _src, _sha) = setup(tmp.path(), "big.bin", size, 0);
    // Something else already uses part of the space.
    random_file(&small.join("other.bin"), MIB);
    let out = leech.ctl(&["download_file", "g1", "big.bin", small.to_str().unwrap()]);
    let err = stderr_of(&out);
    let failed_at_start = out.status.code() == Some(1);
    if failed_at_start {
        // The partial file is preallocated: no space shows up at start.
        eprintln!("disk full refused at download_file: {err}");
        assert!(err.contains("space"), "{err}");
    } else {
        assert!(out.status.success(), "{err}");
        let d = leech.wait_download("g1", "big.bin", LONG);
        assert_eq!(d["state"], "failed", "{d}");
        assert!(d["error"].as_str().unwrap().contains("space"), "{d}");
        let human = leech.ok(&["show_downloads"]);
        assert!(human.contains("[F] [g1] big.bin"), "{human}");
    }
    assert!(!small.join("big.bin").exists(), "no final file");
    assert_eq!(
        std::fs::read_dir(&small).unwrap().count(),
        if small.join(".big.bin.minitorr-part").exists() {
            2
        } else {
            1
        },
        "nothing but the other file (and at most the part file)"
    );
    let part = small.join(".big.bin.minitorr-part");
    if part.exists() {
        let len = std::fs::metadata(&part).unwrap().len();
        assert!(len == 0 || len == size as u64, "part file of {len} bytes");
    }
    // The daemon is fine and the same download into a roomy directory works.
    let roomy = tmp.path().join("l");
    leech.ok(&["download_file", "g1", "big.bin", roomy.to_str().unwrap()]);
    let d = leech.wait_download("g1", "big.bin", LONG);
    assert_eq!(d["state"], "complete", "{d}");
}

#[test]
fn read_only_destination_is_refused_at_download_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    if !mount_tmpfs(&ro, "ro,size=1m") {
        return;
    }
    let _m = Mounted(ro.clone());
    let (_tracker, _seed, leech, _src, _sha) = setup(tmp.path(), "x.bin", 100_000, 0);
    let err = leech.fails(1, &["download_file", "g1", "x.bin", ro.to_str().unwrap()]);
    assert!(
        err.contains("cannot write") && err.contains("Read-only"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
    let v = leech.json(&["show_downloads"]);
    assert!(
        v["downloads"].as_array().unwrap().is_empty(),
        "no download entry for a refused start: {v}"
    );
}

/// Two seeders share the same content: `a` (fast, its copy is then tampered with by `tamper`) and
/// `b` (capped). The downloader must end with the right file and no bad piece counted from `a`
/// unless `a` served changed bytes under an unchanged size+mtime.
fn tampered_seeder(tamper: impl FnOnce(&Path)) -> (serde_json::Value, String) {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("t"));
    let a = Peer::start(&tmp.path().join("a"), &tracker);
    let b = capped_peer(&tmp.path().join("b"), &tracker, 4 * MIB as u64);
    let leech = Peer::start(&tmp.path().join("l"), &tracker);
    user(&a, "a");
    user(&b, "b");
    user(&leech, "l");
    group_with(&a, "g1", &[(&b, "b"), (&leech, "l")]);
    let size = 6 * MIB + 11;
    let pa = tmp.path().join("a").join("m.bin");
    let sha = random_file(&pa, size);
    let pb = tmp.path().join("b").join("m.bin");
    std::fs::copy(&pa, &pb).unwrap();
    a.ok(&["upload_file", pa.to_str().unwrap(), "g1"]);
    b.ok(&["upload_file", pb.to_str().unwrap(), "g1"]);
    tamper(&pa);
    let dest = tmp.path().join("l").join("m.bin");
    leech.ok(&["download_file", "g1", "m.bin", dest.to_str().unwrap()]);
    let d = leech.wait_download("g1", "m.bin", LONG);
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&dest), sha, "the downloaded file is correct");
    (d, a.log())
}

#[test]
fn seeder_stops_serving_a_file_modified_after_sharing() {
    let (d, a_log) = tampered_seeder(|p| {
        let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
        std::io::Write::write_all(&mut f, b"appended").unwrap();
    });
    if let Some(a) = peer_stats(&d, "a") {
        assert_eq!(a["bad_pieces"], 0, "the changed file never served: {a}");
        assert_eq!(a["bytes_received"], 0, "{a}");
    }
    assert!(a_log.contains("shared file changed on disk"), "{a_log}");
}

#[test]
fn seeder_stops_serving_a_file_deleted_after_sharing() {
    let (d, a_log) = tampered_seeder(|p| std::fs::remove_file(p).unwrap());
    if let Some(a) = peer_stats(&d, "a") {
        assert_eq!(a["bad_pieces"], 0, "{a}");
        assert_eq!(a["bytes_received"], 0, "{a}");
    }
    assert!(a_log.contains("shared file changed on disk"), "{a_log}");
}

#[test]
fn in_place_change_with_same_size_and_mtime_is_caught_by_the_downloader() {
    // Undetectable for the seeder's cheap size+mtime check: every byte rewritten in place, then
    // the modification time put back exactly. The seeder serves the changed bytes; the
    // downloader's per-piece SHA1 rejects them, drops the seeder and completes from the other.
    let (d, _) = tampered_seeder(|p| {
        let mtime = std::fs::metadata(p).unwrap().modified().unwrap();
        let len = std::fs::metadata(p).unwrap().len() as usize;
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &vec![0x5a; len], 0).unwrap();
        f.set_modified(mtime).unwrap();
        f.sync_all().unwrap();
    });
    let a = peer_stats(&d, "a").unwrap_or_else(|| panic!("a was tried: {d}"));
    assert_eq!(a["bytes_received"], 0, "no byte from a counted: {a}");
    assert!(a["bad_pieces"].as_u64().unwrap() >= 1, "{a}");
}

#[test]
fn downloader_killed_between_the_final_rename_and_saving_its_state_adopts_the_finished_file() {
    // The window is microseconds wide, so it is recreated exactly: a finished download, the
    // daemon killed, and its state file put back to what it held just before the state save
    // (download still "Downloading", no share record) — with the file already in place.
    let tmp = tempfile::tempdir().unwrap();
    let (_tracker, _seed, mut leech, _src, sha) = setup(tmp.path(), "w.bin", 3 * MIB + 1, 0);
    let dest = tmp.path().join("l").join("w.bin");
    leech.ok(&["download_file", "g1", "w.bin", dest.to_str().unwrap()]);
    assert_eq!(
        leech.wait_download("g1", "w.bin", LONG)["state"],
        "complete"
    );
    leech.kill9();
    let state_path = leech.dir.join("state").join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let u = &mut state["users"]["l"];
    u["downloads"][0]["state"] = "Downloading".into();
    u["shares"] = serde_json::json!([]);
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();

    leech.restart();
    let out = leech.ok(&["login", "l", "pw-of-someone"]);
    let d = leech.wait_download("g1", "w.bin", Duration::from_secs(20));
    assert_eq!(d["state"], "complete", "{d}\nlogin said: {out}");
    assert_eq!(sha1_file(&dest), sha);
    assert!(!tmp.path().join("l").join(".w.bin.minitorr-part").exists());
    assert_eq!(leech.json(&["status"])["shares"], 1, "{out}");
    // And it stays so across another restart.
    leech.restart();
    leech.ok(&["login", "l", "pw-of-someone"]);
    let d = leech.wait_download("g1", "w.bin", Duration::from_secs(20));
    assert_eq!(d["state"], "complete", "{d}");
}

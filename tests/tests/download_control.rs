//! Download control through the real binaries: cancel (with and without --keep), pause and
//! resume (also across a daemon restart), remove --failed/--complete, the queue
//! (max_active_downloads) and the automatic retry of a download whose seeder came back.
//!
//! Downloads are slowed by the seeder's upload cap so they can be acted on half-way; every
//! assertion is a property with generous time margins, never a tight timing.

use std::path::Path;
use std::time::Duration;

use minitorr_e2e::*;

const MIB: usize = 1 << 20;

/// Tracker, alice seeding at `rate` bytes/s in 64 KiB pieces, bob with `bob_config`; both
/// logged in, bob a member of alice's g1.
fn setup(dir: &Path, rate: u64, bob_config: &str) -> (Tracker, Peer, Peer) {
    let tracker = Tracker::start(&dir.join("tracker"));
    let alice = Peer::start_with_config(
        &dir.join("alice"),
        &tracker,
        &format!("max_upload_rate = {rate}\npiece_size = 65536\n"),
    );
    let bob = Peer::start_with_config(&dir.join("bob"), &tracker, bob_config);
    user(&alice, "alice");
    user(&bob, "bob");
    group_with(&alice, "g1", &[(&bob, "bob")]);
    (tracker, alice, bob)
}

fn share(alice: &Peer, dir: &Path, name: &str, size: usize) -> String {
    let path = dir.join(name);
    let sha = random_file(&path, size);
    alice.ok(&["upload_file", path.to_str().unwrap(), "g1"]);
    sha
}

fn state_of(peer: &Peer, file: &str) -> Option<String> {
    download_entry(peer, "g1", file).map(|e| e["state"].as_str().unwrap().to_string())
}

fn wait_state(peer: &Peer, file: &str, state: &str, timeout: Duration) -> serde_json::Value {
    wait_until(&format!("{file} {state}"), timeout, || {
        state_of(peer, file).as_deref() == Some(state)
    });
    download_entry(peer, "g1", file).unwrap()
}

fn wait_some_bytes(peer: &Peer, file: &str) {
    wait_until(&format!("{file} half-way"), Duration::from_secs(60), || {
        bytes_done(peer, "g1", file) > 0
    });
}

#[test]
fn cancel_deletes_the_part_file_unless_keep() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = setup(dir.path(), 256 * 1024, "");
    share(&alice, dir.path(), "big.bin", 4 * MIB);
    let dl = dir.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    let part = dl.join(".big.bin.minitorr-part");

    bob.ok(&["download_file", "g1", "big.bin", dl.to_str().unwrap()]);
    wait_some_bytes(&bob, "big.bin");
    assert!(part.exists());
    let v = bob.json(&["cancel", "g1", "big.bin"]);
    assert!(v["message"].as_str().unwrap().contains("cancelled"), "{v}");
    assert!(!part.exists(), "cancel deletes the part file");
    assert!(!dl.join("big.bin").exists());
    assert_eq!(state_of(&bob, "big.bin"), None, "the entry is forgotten");
    // Cancelling again: nothing to cancel (exit 1, not found).
    bob.fails(1, &["cancel", "g1", "big.bin"]);

    bob.ok(&["download_file", "g1", "big.bin", dl.to_str().unwrap()]);
    wait_some_bytes(&bob, "big.bin");
    bob.ok(&["cancel", "--keep", "g1", "big.bin"]);
    assert!(part.exists(), "--keep keeps the part file");
    assert_eq!(state_of(&bob, "big.bin"), None);
    // Nothing moves any more: the part file is not written to after the cancel.
    let before = std::fs::read(&part).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(std::fs::read(&part).unwrap() == before);
}

#[test]
fn pause_stops_traffic_survives_a_restart_and_resume_finishes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, alice, mut bob) = setup(dir.path(), 256 * 1024, "");
    let sha = share(&alice, dir.path(), "big.bin", 4 * MIB);
    let dl = dir.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();

    bob.ok(&["download_file", "g1", "big.bin", dl.to_str().unwrap()]);
    wait_some_bytes(&bob, "big.bin");
    bob.ok(&["pause", "g1", "big.bin"]);
    let paused = wait_state(&bob, "big.bin", "paused", Duration::from_secs(5));
    let done = paused["bytes_done"].as_u64().unwrap();
    assert!(done > 0 && done < 4 * MIB as u64, "{paused}");
    let human = bob.ok(&["show_downloads"]);
    assert!(human.contains("[P] [g1] big.bin"), "{human}");
    // No traffic while paused: the part file does not change.
    let part = dl.join(".big.bin.minitorr-part");
    let before = std::fs::read(&part).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        std::fs::read(&part).unwrap() == before,
        "paused, yet written to"
    );
    assert_eq!(state_of(&bob, "big.bin").as_deref(), Some("paused"));

    // Paused survives a crash and restart (state file), and is not resumed by login.
    bob.restart();
    bob.ok(&["login", "bob", "pw-of-someone"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(state_of(&bob, "big.bin").as_deref(), Some("paused"));

    let v = bob.json(&["resume", "g1", "big.bin"]);
    assert_eq!(v["download"]["state"], "downloading", "{v}");
    let end = bob.wait_download("g1", "big.bin", Duration::from_secs(120));
    assert_eq!(end["state"], "complete", "{end}");
    assert_eq!(sha1_file(&dl.join("big.bin")), sha);
    assert!(!part.exists());
}

#[test]
fn queue_runs_max_active_downloads_at_once_and_completes_all() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = setup(dir.path(), 512 * 1024, "max_active_downloads = 1\n");
    let sha_a = share(&alice, dir.path(), "a.bin", 3 * MIB);
    let sha_b = share(&alice, dir.path(), "b.bin", MIB);
    let dl = dir.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();

    bob.ok(&["download_file", "g1", "a.bin", dl.to_str().unwrap()]);
    let v = bob.json(&["download_file", "g1", "b.bin", dl.to_str().unwrap()]);
    assert_eq!(v["download"]["state"], "queued", "{v}");
    let human = bob.ok(&["show_downloads"]);
    assert!(human.contains("[Q] [g1] b.bin"), "{human}");
    assert_eq!(state_of(&bob, "a.bin").as_deref(), Some("downloading"));
    // The queued one has not started (no part file yet).
    assert!(!dl.join(".b.bin.minitorr-part").exists());

    let a = bob.wait_download("g1", "a.bin", Duration::from_secs(120));
    assert_eq!(a["state"], "complete", "{a}");
    wait_state(&bob, "b.bin", "complete", Duration::from_secs(120));
    assert_eq!(sha1_file(&dl.join("a.bin")), sha_a);
    assert_eq!(sha1_file(&dl.join("b.bin")), sha_b);
}

#[test]
fn remove_forgets_failed_and_complete_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = setup(dir.path(), 0, "");
    share(&alice, dir.path(), "small.bin", 100 * 1024);
    share(&alice, dir.path(), "gone.bin", 200 * 1024);
    let dl = dir.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();

    bob.ok(&["download_file", "g1", "small.bin", dl.to_str().unwrap()]);
    bob.wait_download("g1", "small.bin", Duration::from_secs(60));
    // gone.bin's only holder goes offline: bob's download of it fails (no holder online).
    alice.ok(&["logout"]);
    bob.ok(&["download_file", "g1", "gone.bin", dl.to_str().unwrap()]);
    let e = wait_state(&bob, "gone.bin", "failed", Duration::from_secs(60));
    assert!(
        e["error"].as_str().unwrap().contains("no holder online"),
        "{e}"
    );
    // remove refuses a name it does not list.
    bob.fails(1, &["remove", "g1", "nothing.bin"]);

    let v = bob.json(&["remove", "--complete"]);
    assert!(v["message"].as_str().unwrap().contains("forgot 1"), "{v}");
    assert!(dl.join("small.bin").exists(), "the finished file stays");
    assert_eq!(state_of(&bob, "small.bin"), None);
    assert_eq!(state_of(&bob, "gone.bin").as_deref(), Some("failed"));
    bob.ok(&["remove", "--failed"]);
    assert_eq!(state_of(&bob, "gone.bin"), None);
    assert!(
        !dl.join(".gone.bin.minitorr-part").exists(),
        "no stray part file"
    );
    // Usage errors: both or neither.
    bob.fails(2, &["remove"]);
    bob.fails(2, &["remove", "--failed", "--complete"]);
}

#[test]
fn a_download_that_failed_when_its_seeder_left_completes_when_the_seeder_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = setup(dir.path(), 256 * 1024, "");
    let sha = share(&alice, dir.path(), "big.bin", 4 * MIB);
    let dl = dir.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();

    bob.ok(&["download_file", "g1", "big.bin", dl.to_str().unwrap()]);
    wait_some_bytes(&bob, "big.bin");
    alice.ok(&["logout"]);
    let failed = wait_state(&bob, "big.bin", "failed", Duration::from_secs(60));
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("no holder online"),
        "{failed}"
    );
    // Back online: no command to bob, yet the download resumes and completes.
    alice.ok(&["login", "alice", "pw-of-someone"]);
    let end = bob.wait_download_state_complete(Duration::from_secs(180));
    assert_eq!(end["state"], "complete", "{end}");
    assert_eq!(sha1_file(&dl.join("big.bin")), sha);
}

trait WaitComplete {
    fn wait_download_state_complete(&self, timeout: Duration) -> serde_json::Value;
}

impl WaitComplete for Peer {
    /// Unlike `wait_download`, a failed state is not final here (it is retried).
    fn wait_download_state_complete(&self, timeout: Duration) -> serde_json::Value {
        wait_state(self, "big.bin", "complete", timeout)
    }
}

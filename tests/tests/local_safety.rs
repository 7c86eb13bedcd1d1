//! The local attacker: another Unix user on the same machine who can write into a shared
//! destination directory, pre-create the control socket's directory, or listen on the socket
//! path first; and a seeder or tracker claiming a file larger than the disk. See
//! docs/SECURITY.md ("Local attacker").
//!
//! These tests need root (chown to uid 65534, a listener that drops to uid 65534, mounting a
//! tmpfs): CI runs the suite as root. They fail loudly, never skip, when not root.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use minitorr_e2e::*;

const NOBODY: u32 = 65534;

fn need_root(what: &str) {
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "this test needs root ({what}); CI runs the e2e suite as root"
    );
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_nobody(p: &Path) {
    std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// Alice shares `name` (`size` random bytes) in g1; returns its SHA1.
fn share(tmp: &Path, alice: &Peer, name: &str, size: usize) -> String {
    let src = tmp.join("alice").join(name);
    let sha = random_file(&src, size);
    alice.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    sha
}

/// What a victim file looks like; it must stay exactly this.
fn victim(tmp: &Path) -> PathBuf {
    let v = tmp.join("victim").join("authorized_keys");
    std::fs::create_dir_all(v.parent().unwrap()).unwrap();
    std::fs::write(&v, b"ssh-ed25519 AAAA the-only-key victim@host\n").unwrap();
    v
}

fn assert_victim_intact(v: &Path) {
    assert_eq!(
        std::fs::read(v).unwrap(),
        b"ssh-ed25519 AAAA the-only-key victim@host\n",
        "the victim file was written through a planted entry"
    );
}

#[test]
fn planted_part_files_are_never_written_through() {
    need_root("a part file owned by another uid");
    let tmp = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = alice_and_bob_in_g1(tmp.path());
    let sha = share(tmp.path(), &alice, "keys.txt", 300_000);
    let v = victim(tmp.path());
    // A team folder everybody can write into (bob's, so the ownership rule lets him use it).
    let shared = tmp.path().join("bob").join("team");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    let part = shared.join(".keys.txt.minitorr-part");
    let dl = |why: &str| {
        let err = bob.fails(
            1,
            &["download_file", "g1", "keys.txt", shared.to_str().unwrap()],
        );
        assert!(
            err.contains(".keys.txt.minitorr-part") && err.contains(why) && err.contains("planted"),
            "expected a refusal naming the part file and '{why}':\n{err}"
        );
        assert_victim_intact(&v);
        assert!(!shared.join("keys.txt").exists());
    };

    // The finding: a symlink at the part file's name to a file the victim owns.
    std::os::unix::fs::symlink(&v, &part).unwrap();
    dl("symbolic link");
    std::fs::remove_file(&part).unwrap();

    // A hard link to it (same inode, so writes would land in the victim file).
    std::fs::hard_link(&v, &part).unwrap();
    dl("hard links");
    std::fs::remove_file(&part).unwrap();

    // A FIFO (would hang a plain open) and another user's regular file.
    nix::unistd::mkfifo(&part, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    dl("not a regular file");
    std::fs::remove_file(&part).unwrap();
    std::fs::write(&part, b"theirs").unwrap();
    chown_nobody(&part);
    dl("owned by uid 65534");
    assert_eq!(std::fs::read(&part).unwrap(), b"theirs");
    std::fs::remove_file(&part).unwrap();

    // With the name clear, the download works; the file is private to bob (0600).
    bob.ok(&["download_file", "g1", "keys.txt", shared.to_str().unwrap()]);
    let d = bob.wait_download("g1", "keys.txt", Duration::from_secs(30));
    assert_eq!(d["state"], "complete", "{d}");
    let got = shared.join("keys.txt");
    assert_eq!(sha1_file(&got), sha);
    let mode = std::fs::metadata(&got).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "downloaded file mode {mode:o}");
    assert!(!part.exists());
    assert_victim_intact(&v);
}

#[test]
fn a_link_planted_at_the_final_name_during_the_download_is_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = Tracker::start(&tmp.path().join("tracker"));
    // 1 MiB at 256 KiB/s: about 4 s, time to plant the link while it runs.
    let alice = capped_peer(&tmp.path().join("alice"), &tracker, 256 * 1024);
    let bob = Peer::start(&tmp.path().join("bob"), &tracker);
    user(&alice, "alice");
    user(&bob, "bob");
    group_with(&alice, "g1", &[(&bob, "bob")]);
    share(tmp.path(), &alice, "keys.txt", 1024 * 1024);
    let v = victim(tmp.path());
    let dest = tmp.path().join("bob").join("dl");
    std::fs::create_dir(&dest).unwrap();

    bob.ok(&["download_file", "g1", "keys.txt", dest.to_str().unwrap()]);
    let part = dest.join(".keys.txt.minitorr-part");
    wait_until("the part file", Duration::from_secs(10), || part.exists());
    std::os::unix::fs::symlink(&v, dest.join("keys.txt")).unwrap();
    let d = bob.wait_download("g1", "keys.txt", Duration::from_secs(60));
    assert_eq!(d["state"], "failed", "{d}");
    let why = d["error"].as_str().unwrap();
    assert!(
        why.contains("appeared meanwhile") && why.contains("not overwriting"),
        "{why}"
    );
    assert_victim_intact(&v);
    assert!(std::fs::symlink_metadata(dest.join("keys.txt"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_destination_directory_owned_by_another_user_is_refused() {
    need_root("chown to uid 65534");
    let tmp = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = alice_and_bob_in_g1(tmp.path());
    share(tmp.path(), &alice, "f.bin", 10_000);
    let theirs = tmp.path().join("bob").join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chmod(&theirs, 0o777);
    chown_nobody(&theirs);
    let err = bob.fails(
        1,
        &["download_file", "g1", "f.bin", theirs.to_str().unwrap()],
    );
    assert!(
        err.contains(theirs.to_str().unwrap()) && err.contains("owned by uid 65534"),
        "{err}"
    );
    // Also when named as the destination *file*'s directory, and through a symlink of ours.
    let target = theirs.join("renamed.bin");
    let err = bob.fails(
        1,
        &["download_file", "g1", "f.bin", target.to_str().unwrap()],
    );
    assert!(err.contains("owned by uid 65534"), "{err}");
    let link = tmp.path().join("bob").join("link-to-theirs");
    std::os::unix::fs::symlink(&theirs, &link).unwrap();
    let err = bob.fails(1, &["download_file", "g1", "f.bin", link.to_str().unwrap()]);
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert_eq!(
        std::fs::read_dir(&theirs).unwrap().count(),
        0,
        "nothing created"
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        need_root("mount -t tmpfs");
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -t tmpfs failed (the test needs it): {}",
            stderr_of(&out)
        );
        Tmpfs(dir.to_path_buf())
    }

    fn used(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        (s.blocks() - s.blocks_free()) as u64 * s.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_file_larger_than_the_free_space_is_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = alice_and_bob_in_g1(tmp.path());
    let small = Tmpfs::mount(&tmp.path().join("bob").join("small"), "16m");
    // 24 MiB claimed (and real): more than the 16 MiB filesystem holds.
    share(tmp.path(), &alice, "big.bin", 24 * 1024 * 1024);
    let err = bob.fails(
        1,
        &["download_file", "g1", "big.bin", small.0.to_str().unwrap()],
    );
    assert!(
        err.contains("not enough free space") && err.contains(small.0.to_str().unwrap()),
        "{err}"
    );
    assert!(small.used() < 1024 * 1024, "{} bytes used", small.used());
    assert_eq!(
        std::fs::read_dir(&small.0).unwrap().count(),
        0,
        "nothing created"
    );

    // Close to the limit: 15.5 MiB leaves less than the 5 % (0.8 MiB) reserve.
    share(
        tmp.path(),
        &alice,
        "almost.bin",
        15 * 1024 * 1024 + 512 * 1024,
    );
    let err = bob.fails(
        1,
        &[
            "download_file",
            "g1",
            "almost.bin",
            small.0.to_str().unwrap(),
        ],
    );
    assert!(err.contains("must stay free"), "{err}");

    // A file that fits downloads normally.
    let sha = share(tmp.path(), &alice, "fits.bin", 4 * 1024 * 1024);
    bob.ok(&["download_file", "g1", "fits.bin", small.0.to_str().unwrap()]);
    let d = bob.wait_download("g1", "fits.bin", Duration::from_secs(30));
    assert_eq!(d["state"], "complete", "{d}");
    assert_eq!(sha1_file(&small.0.join("fits.bin")), sha);
}

// --- the control socket ------------------------------------------------------------------

/// Start minitorrd on `socket`; it must refuse: returns its stderr.
fn daemon_refuses(tmp: &Path, socket: &Path) -> String {
    let tracker_addr = format!("127.0.0.1:{}", free_port());
    let out = Command::new(bin("minitorrd"))
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(tmp.join("state-of-refused"))
        .arg("--tracker")
        .arg(&tracker_addr)
        .arg(format!("127.0.0.1:{}", free_port()))
        .env_remove("MINITORR_SOCKET")
        .env_remove("MINITORRD_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert!(
        !out.status.success(),
        "minitorrd started on {socket:?}:\n{err}"
    );
    err
}

#[test]
fn a_socket_directory_that_is_not_private_is_refused_by_both_sides() {
    need_root("chown to uid 65534");
    let tmp = tempfile::tempdir().unwrap();

    // Pre-created by someone else with mode 0777 (the finding), owned by another uid, or a
    // symlink to a private directory: minitorrd will not bind there.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let err = daemon_refuses(tmp.path(), &open.join("minitorrd.sock"));
    assert!(
        err.contains(open.to_str().unwrap()) && err.contains("0777"),
        "{err}"
    );
    assert!(!open.join("minitorrd.sock").exists());

    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chmod(&theirs, 0o700);
    chown_nobody(&theirs);
    let err = daemon_refuses(tmp.path(), &theirs.join("minitorrd.sock"));
    assert!(err.contains("owned by uid 65534"), "{err}");

    let private = tmp.path().join("private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&private, &link).unwrap();
    let err = daemon_refuses(tmp.path(), &link.join("minitorrd.sock"));
    assert!(err.contains("symbolic link"), "{err}");

    // minitorrctl: a real daemon whose directory becomes 0777 (anyone could swap the socket)
    // is refused with exit 3 before anything is sent; back to 0700, it is fine again.
    let tracker = Tracker::start(&tmp.path().join("tracker"));
    let alice = Peer::start(&tmp.path().join("alice"), &tracker);
    alice.ok(&["status"]);
    chmod(&alice.dir, 0o777);
    let err = alice.fails(3, &["status"]);
    assert!(
        err.contains("refusing to talk to") && err.contains("0777"),
        "{err}"
    );
    chmod(&alice.dir, 0o755);
    let err = alice.fails(3, &["login", "alice", "pw"]);
    assert!(err.contains("0755"), "{err}");
    chmod(&alice.dir, 0o700);
    alice.ok(&["status"]);

    // A directory owned by another uid, whoever listens in it (even a process of ours).
    let sock = theirs.join("minitorrd.sock");
    let _listening = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let out = ctl_at(&sock, &["status"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("refusing to talk to") && err.contains("owned by uid 65534"),
        "{err}"
    );
}

/// The finding: another user listens on the socket path first. Here the listener binds the
/// socket in our private directory, then drops to uid 65534 before listen() (SO_PEERCRED
/// reports who called listen), and records every byte it receives.
#[test]
fn minitorrctl_sends_nothing_to_a_listener_of_another_uid() {
    need_root("a listener that drops to uid 65534");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    let sock = dir.join("minitorrd.sock");
    const LISTENER: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
os.setgid(65534)
os.setuid(65534)
s.listen(4)
print("ready", flush=True)
s.settimeout(20)
c, _ = s.accept()
c.settimeout(5)
got = b""
try:
    while True:
        b = c.recv(4096)
        if not b:
            break
        got += b
except socket.timeout:
    pass
print("received %d %s" % (len(got), got.hex()), flush=True)
"#;
    let mut listener = Command::new("python3")
        .args(["-c", LISTENER])
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs the fake listener");
    let mut lines = BufReader::new(listener.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");

    let out = ctl_at(&sock, &["login", "alice", "the-secret-password"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("refusing to talk to")
            && err.contains(sock.to_str().unwrap())
            && err.contains("owned by uid 65534"),
        "{err}"
    );
    let got = lines.next().unwrap().unwrap();
    assert_eq!(got, "received 0 ", "the listener received bytes");
    let _ = listener.wait();
}

/// A shared path swapped, while the user is logged out, for a symlink to another file with the
/// same size and mtime (`cp -p`: what a cheap size+mtime check cannot tell apart) is not
/// followed at the next login: the share is withdrawn and reported, nothing is served.
#[test]
fn a_shared_path_swapped_for_a_symlink_is_not_shared_again_at_login() {
    let tmp = tempfile::tempdir().unwrap();
    let (_t, alice, bob) = alice_and_bob_in_g1(tmp.path());
    let src = tmp.path().join("alice").join("report.bin");
    random_file(&src, 200_000);
    alice.ok(&["upload_file", src.to_str().unwrap(), "g1"]);
    assert_eq!(seeders(&bob, "g1", "report.bin"), 1);
    alice.ok(&["logout"]);

    let secret = tmp.path().join("alice").join("secret.bin");
    let cp = Command::new("cp")
        .arg("-p")
        .arg(&src)
        .arg(&secret)
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::remove_file(&src).unwrap();
    std::os::unix::fs::symlink(&secret, &src).unwrap();

    let out = alice.ok(&["login", "alice", "pw-of-someone"]);
    assert!(
        out.contains("report.bin") && out.contains("symbolic link"),
        "the swapped share is reported: {out}"
    );
    assert_eq!(
        seeders(&bob, "g1", "report.bin"),
        0,
        "nothing served through the link"
    );
}

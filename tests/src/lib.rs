//! Test fixtures: real `trackerd` and `minitorrd` processes in temp dirs on ephemeral 127.0.0.1
//! ports, driven through the real `minitorrctl` binary exactly as a user would.
//!
//! Binaries are taken from the workspace target dir (`cargo build --bins` first; the README's
//! test command does it).

pub mod fakepeer;
pub mod faultproxy;
pub mod natlab;
pub mod pg;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha1::{Digest, Sha1};

/// Path of a workspace binary, built by `cargo build --bins`.
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let p = target.join(profile).join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --bins` first",
        p.display()
    );
    p
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free loopback address (a port nobody listened on a moment ago; see `on_a_free_port`).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    child.wait().unwrap()
}

/// Start a daemon with `spawn` on a free loopback port. A free port can be taken by a parallel
/// test between `free_port()` and the daemon's bind, so a failed start is retried on another
/// port, five times, before the test fails with the daemon's log.
fn on_a_free_port<T>(what: &str, log: &Path, mut spawn: impl FnMut(SocketAddr) -> Option<T>) -> T {
    for _ in 0..5 {
        let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        if let Some(daemon) = spawn(addr) {
            return daemon;
        }
    }
    panic!(
        "{what} did not start after 5 ports:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// Wait until a freshly spawned daemon is `ready`, or report that it exited (e.g. its port was
/// taken meanwhile) or took longer than 20 s. An exited child is cleared from `child`.
fn await_start(
    child: &mut Option<Child>,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            *child = None;
            return Err(format!("{what} exited during start-up ({status})"));
        }
        if ready() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err(format!("{what} did not become ready within 20 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .unwrap()
}

/// A real trackerd.
pub struct Tracker {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Tracker {
    pub fn start(dir: &Path) -> Tracker {
        std::fs::create_dir_all(dir).unwrap();
        on_a_free_port("trackerd", &dir.join("trackerd.log"), |addr| {
            let mut t = Tracker {
                dir: dir.to_path_buf(),
                addr,
                extra_args: vec![],
                child: None,
            };
            t.try_spawn().is_ok().then_some(t)
        })
    }

    pub fn start_at(dir: &Path, addr: SocketAddr) -> Tracker {
        Self::start_with(dir, addr, &[])
    }

    /// A trackerd on a free port with extra command-line arguments (e.g. `--database-url`),
    /// retried on another port if a parallel test takes this one.
    pub fn start_args(dir: &Path, extra_args: &[&str]) -> Tracker {
        Self::start_configured(dir, || extra_args.iter().map(|s| s.to_string()).collect())
    }

    /// A trackerd on a free port whose extra arguments are built anew for each attempt: when
    /// they name ports of their own (a config file's `metrics_listen` or `relay_listen`), a
    /// port taken by a parallel test is replaced with the tracker's port, not retried as is.
    pub fn start_configured(dir: &Path, mut extra_args: impl FnMut() -> Vec<String>) -> Tracker {
        std::fs::create_dir_all(dir).unwrap();
        on_a_free_port("trackerd", &dir.join("trackerd.log"), |addr| {
            let mut t = Tracker {
                dir: dir.to_path_buf(),
                addr,
                extra_args: extra_args(),
                child: None,
            };
            t.try_spawn().is_ok().then_some(t)
        })
    }

    /// A trackerd with extra command-line arguments (e.g. `--database-url`, `--tls-cert`).
    pub fn start_with(dir: &Path, addr: SocketAddr, extra_args: &[&str]) -> Tracker {
        std::fs::create_dir_all(dir).unwrap();
        let mut t = Tracker {
            dir: dir.to_path_buf(),
            addr,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        t.spawn();
        t
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}\n{}", self.log());
        }
    }

    /// Start trackerd and wait until *it* listens (its log says so; a connect alone could reach
    /// another test's process that took the port) or exits.
    fn try_spawn(&mut self) -> Result<(), String> {
        let marker = format!("listening on {}", self.addr);
        let before = self.log().matches(&marker).count();
        let child = Command::new(bin("trackerd"))
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .env_remove("TRACKERD_CONFIG")
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, "trackerd.log"))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let log = self.dir.join("trackerd.log");
        let what = format!("trackerd on {}", self.addr);
        await_start(&mut self.child, &what, || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.matches(&marker).count() > before
        })
    }

    /// The seed's tracker_info.txt naming this tracker.
    pub fn info_file(&self, dir: &Path) -> PathBuf {
        let p = dir.join("tracker_info.txt");
        std::fs::write(&p, format!("{}\n{}\n", self.addr.ip(), self.addr.port())).unwrap();
        p
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill9(&mut c);
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        sigterm(self.child.as_mut().expect("running"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("trackerd.log")).unwrap_or_default()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Make `dir` mode 0700 (what a control socket's directory must be).
pub fn private_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// A real minitorrd with its own socket, state dir and peer port.
pub struct Peer {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub addr: SocketAddr,
    trackers: Vec<SocketAddr>,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Peer {
    pub fn start(dir: &Path, tracker: &Tracker) -> Peer {
        Self::start_with(dir, &[tracker.addr], &[])
    }

    pub fn start_with(dir: &Path, trackers: &[SocketAddr], extra_args: &[&str]) -> Peer {
        Self::start_configured(dir, trackers, || {
            extra_args.iter().map(|s| s.to_string()).collect()
        })
    }

    /// A daemon with `config` (TOML lines) in its own config file, `dir/minitorrd.toml`.
    pub fn start_with_config(dir: &Path, tracker: &Tracker, config: &str) -> Peer {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.join("minitorrd.toml");
        std::fs::write(&cfg, config).unwrap();
        Self::start_with(dir, &[tracker.addr], &["--config", cfg.to_str().unwrap()])
    }

    /// A minitorrd whose extra arguments are built anew for each start attempt (see
    /// `Tracker::start_configured`: ports named in them are chosen again with the peer port).
    pub fn start_configured(
        dir: &Path,
        trackers: &[SocketAddr],
        mut extra_args: impl FnMut() -> Vec<String>,
    ) -> Peer {
        std::fs::create_dir_all(dir).unwrap();
        // The control socket lives here: its directory must be private (0700), or both
        // minitorrd and minitorrctl refuse it.
        private_dir(dir);
        on_a_free_port("minitorrd", &dir.join("minitorrd.log"), |addr| {
            let mut p = Peer {
                dir: dir.to_path_buf(),
                socket: dir.join("ctl.sock"),
                addr,
                trackers: trackers.to_vec(),
                extra_args: extra_args(),
                child: None,
            };
            p.try_spawn().is_ok().then_some(p)
        })
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}\n{}", self.log_tail(30));
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let trackers = self
            .trackers
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new(bin("minitorrd"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--tracker")
            .arg(trackers)
            .args(&self.extra_args)
            .arg(self.addr.to_string())
            .env("RUST_LOG", "info,minitorrd=debug")
            .env_remove("MINITORR_SOCKET")
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, "minitorrd.log"))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let what = format!("minitorrd on {}", self.addr);
        let socket = self.socket.clone();
        await_start(&mut self.child, &what, || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        })
    }

    /// This daemon's device key (read from its state dir, as the same Unix user).
    pub fn device_key(&self) -> fakepeer::DeviceKey {
        fakepeer::DeviceKey::load(&self.dir.join("state").join("device.key")).unwrap()
    }

    /// minitorrctl against this daemon, ready to run.
    fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("minitorrctl"));
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("MINITORR_SOCKET")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// Run minitorrctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_command(args).output().unwrap()
    }

    /// Run minitorrctl against this daemon from `cwd` (relative paths resolve there).
    pub fn ctl_in(&self, cwd: &Path, args: &[&str]) -> Output {
        self.ctl_command(args).current_dir(cwd).output().unwrap()
    }

    /// Run minitorrctl, assert exit 0, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "minitorrctl {args:?} failed ({:?}):\nstdout: {}\nstderr: {}\n--- daemon log tail ---\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(40)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run minitorrctl, assert it exits with `code`, return stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "minitorrctl {args:?}: expected exit {code}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Run `minitorrctl --json …`, assert exit 0, parse stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill9(&mut c);
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let st = sigterm(self.child.as_mut().expect("running"));
        self.child = None;
        st
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("minitorrd.log")).unwrap_or_default();
        let v: Vec<&str> = log.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// Wait for a download to reach a final state; returns its JSON entry.
    pub fn wait_download(&self, group: &str, file: &str, timeout: Duration) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let v = self.json(&["show_downloads"]);
            let entry = v["downloads"].as_array().and_then(|a| {
                a.iter()
                    .find(|d| d["group"] == group && d["file"] == file)
                    .cloned()
            });
            if let Some(e) = entry {
                if e["state"] != "downloading" {
                    return e;
                }
            }
            assert!(
                start.elapsed() < timeout,
                "download {group}/{file} not finished after {timeout:?}: {v}\n{}",
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Write `size` random bytes to `path`; returns their SHA1 (hex).
pub fn random_file(path: &Path, size: usize) -> String {
    let mut f = std::fs::File::create(path).unwrap();
    let mut rng = rand::thread_rng();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    let mut h = Sha1::new();
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill_bytes(&mut buf[..n]);
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    hex::encode(h.finalize())
}

pub fn sha1_file(path: &Path) -> String {
    hex::encode(Sha1::digest(std::fs::read(path).unwrap()))
}

/// Create a user on `peer` and log in.
pub fn user(peer: &Peer, name: &str) {
    peer.ok(&["create_user", name, "pw-of-someone"]);
    peer.ok(&["login", name, "pw-of-someone"]);
}

/// `owner` creates `group` (if not yet) and every member of `members` joins and is accepted.
pub fn group_with(owner: &Peer, group: &str, members: &[(&Peer, &str)]) {
    owner.ok(&["create_group", group]);
    for (p, name) in members {
        p.ok(&["join_group", group]);
        owner.ok(&["accept_request", group, name]);
    }
}

/// The most common start: a tracker in `dir/tracker`, daemons `alice` and `bob` logged in as
/// users of those names, and group `g1` owned by alice with bob a member.
pub fn alice_and_bob_in_g1(dir: &Path) -> (Tracker, Peer, Peer) {
    let tracker = Tracker::start(&dir.join("tracker"));
    let alice = Peer::start(&dir.join("alice"), &tracker);
    let bob = Peer::start(&dir.join("bob"), &tracker);
    user(&alice, "alice");
    user(&bob, "bob");
    group_with(&alice, "g1", &[(&bob, "bob")]);
    (tracker, alice, bob)
}

/// Run minitorrctl against an arbitrary socket path (which may not exist).
pub fn ctl_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin("minitorrctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("MINITORR_SOCKET")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Parse `text` as exactly one JSON document (surrounding whitespace allowed, nothing else).
pub fn one_json_document(text: &str) -> serde_json::Value {
    let mut docs = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    let first = match docs.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => panic!("stdout is not JSON ({e}):\n{text}"),
        None => panic!("stdout holds no JSON document:\n{text:?}"),
    };
    match docs.next() {
        None => first,
        Some(Ok(v)) => {
            panic!("stdout holds more than one JSON document; the second: {v}\nfull:\n{text}")
        }
        Some(Err(e)) => panic!("trailing non-JSON after the first document ({e}):\n{text}"),
    }
}

/// Wait up to `timeout` for `child` to exit; `None` if it is still running (it is then killed).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if start.elapsed() >= timeout {
            kill9(child);
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Tracker {
    /// SIGTERM, then wait at most `timeout` for the exit. `None` if it did not exit in time
    /// (it is then killed). Returns how long the exit took, too.
    pub fn terminate_within(
        &mut self,
        timeout: Duration,
    ) -> Option<(std::process::ExitStatus, Duration)> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        wait_exit(&mut child, timeout).map(|st| (st, start.elapsed()))
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// (resident set now, peak resident set since start), in KiB, from /proc/PID/status.
    pub fn memory_kib(&self) -> (u64, u64) {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Peer {
    /// SIGTERM, then wait at most `timeout` for the exit (`None`: still running, now killed).
    pub fn terminate_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let mut child = self.child.take().expect("running");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        wait_exit(&mut child, timeout)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// The whole daemon log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("minitorrd.log")).unwrap_or_default()
    }
}

/// Raise this process's open-file limit to its hard limit (daemons started afterwards inherit
/// it) and return the new soft limit. Tests that open thousands of connections need it: a
/// default soft limit is often 1,024.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// stderr of an Output, lossily.
pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stdout of an Output, lossily.
pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The workspace root (where contrib/ and Cargo.toml are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The directory holding the built binaries (`target/debug` or `target/release`).
pub fn bin_dir() -> PathBuf {
    bin("trackerd").parent().unwrap().to_path_buf()
}

/// `systemd-analyze`, or `None` when it is not installed and the caller may skip
/// (`MINITORR_SKIP_SYSTEMD_ANALYZE=1`). Without that variable a missing tool is a failure:
/// CI (`.ci/run`) installs systemd.
pub fn systemd_analyze() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("systemd-analyze"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("MINITORR_SKIP_SYSTEMD_ANALYZE").is_some(),
            "systemd-analyze not found: install systemd (apt-get install systemd) or set \
             MINITORR_SKIP_SYSTEMD_ANALYZE=1 to skip the unit checks"
        );
        eprintln!("systemd-analyze not installed: skipped (MINITORR_SKIP_SYSTEMD_ANALYZE)");
    }
    found
}

/// A fake systemd notification socket (`$NOTIFY_SOCKET`): a Unix datagram socket the test owns.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: std::os::unix::net::UnixDatagram,
}

impl NotifySocket {
    pub fn bind(dir: &Path, name: &str) -> NotifySocket {
        let path = dir.join(name);
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        NotifySocket { path, sock }
    }

    /// The next notification, or `None` if none arrives within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("notify socket: {e}"),
            }
        }
    }

    /// Wait for a notification; panic with `what` if none arrives in `timeout`.
    pub fn expect(&self, what: &str, timeout: Duration) -> String {
        self.recv(timeout)
            .unwrap_or_else(|| panic!("no sd_notify message within {timeout:?}: expected {what}"))
    }
}

/// A minitorrd whose uploads are capped at `upload_bytes_per_sec`, so a download from it is
/// slow enough to act on half-way (kill it, kill the downloader, …).
pub fn capped_peer(dir: &Path, tracker: &Tracker, upload_bytes_per_sec: u64) -> Peer {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("minitorrd.toml");
    std::fs::write(&cfg, format!("max_upload_rate = {upload_bytes_per_sec}\n")).unwrap();
    Peer::start_with(dir, &[tracker.addr], &["--config", cfg.to_str().unwrap()])
}

/// The `show_downloads --json` entry of a download, if there is one.
pub fn download_entry(peer: &Peer, group: &str, file: &str) -> Option<serde_json::Value> {
    let v = peer.json(&["show_downloads"]);
    v["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["group"] == group && d["file"] == file)
        .cloned()
}

/// Verified bytes of a download so far (0 when it is not listed).
pub fn bytes_done(peer: &Peer, group: &str, file: &str) -> u64 {
    download_entry(peer, group, file).map_or(0, |d| d["bytes_done"].as_u64().unwrap())
}

/// Online full seeders of a file, as `list_files` reports them.
pub fn seeders(peer: &Peer, group: &str, file: &str) -> u64 {
    let v = peer.json(&["list_files", group]);
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == file)
        .map_or(0, |f| f["seeders_online"].as_u64().unwrap())
}

/// Pending join requests of a group, as `list_requests` reports them.
pub fn requests(peer: &Peer, group: &str) -> Vec<String> {
    let v = peer.json(&["list_requests", group]);
    assert_eq!(v["group"], group, "{v}");
    v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect()
}

/// The process id of a running tracker (to stop and continue it: an unreachable tracker whose
/// connections hang rather than being refused).
pub fn tracker_pid(t: &Tracker) -> u32 {
    t.child.as_ref().expect("tracker running").id()
}

/// The process id of a running minitorrd.
pub fn peer_pid(p: &Peer) -> u32 {
    p.child.as_ref().expect("minitorrd running").id()
}

/// TCP ports process `pid` listens on (from /proc: its socket inodes in LISTEN state).
pub fn listening_ports(pid: u32) -> Vec<u16> {
    use std::os::unix::fs::MetadataExt;
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(n.to_string());
            }
        } else if let Ok(m) = fd.metadata() {
            inodes.insert(m.ino().to_string());
        }
    }
    let mut ports = vec![];
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is IP:PORT in hex; st 0A is LISTEN; field 9 is the inode.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort_unstable();
    ports
}

impl Peer {
    /// A daemon nobody can connect to directly, as behind a NAT without a forwarded port:
    /// it listens on 127.0.0.2:P while the tracker hands out the address it sees it connect
    /// from, 127.0.0.1:P, where nothing listens (connections are refused). No root, no
    /// firewall: just a listen address that differs from the observed one.
    pub fn start_unreachable(dir: &Path, trackers: &[SocketAddr], extra_args: &[&str]) -> Peer {
        std::fs::create_dir_all(dir).unwrap();
        private_dir(dir);
        on_a_free_port("minitorrd", &dir.join("minitorrd.log"), |addr| {
            let mut addr = addr;
            addr.set_ip(std::net::Ipv4Addr::new(127, 0, 0, 2).into());
            let mut p = Peer {
                dir: dir.to_path_buf(),
                socket: dir.join("ctl.sock"),
                addr,
                trackers: trackers.to_vec(),
                extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
                child: None,
            };
            p.try_spawn().is_ok().then_some(p)
        })
    }
}

impl Peer {
    /// Start minitorrctl against this daemon without waiting for it (`watch`, a `wait` to
    /// race): stdout and stderr are piped.
    pub fn ctl_child(&self, args: &[&str]) -> Child {
        self.ctl_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

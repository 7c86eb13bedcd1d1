//! The NAT lab (bench/natlab.py) from tests: router namespaces that NAT private sites onto a
//! public bridge where the tracker lives, with real trackerd / minitorrd processes inside the
//! namespaces. Control sockets are files, so minitorrctl runs outside the namespaces.
//!
//! Needs root (network namespaces, nftables): [`need_root`] fails loudly otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, ctl_at, private_dir, workspace_root};

/// Fail (never skip) when not root: the NAT lab needs network namespaces and nftables.
pub fn need_root(what: &str) {
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "this test needs root ({what}: network namespaces, nftables, miniupnpd); CI runs the \
         e2e suite as root"
    );
}

/// One site of the lab: its host namespace and addresses.
#[derive(Debug, Clone)]
pub struct Site {
    pub kind: String,
    pub ns: String,
    /// The host's own address (private behind a router).
    pub addr: String,
    /// The site's public address (the router's, or the host's own for `pub`).
    pub public_addr: String,
}

/// A running lab; taken down on drop.
pub struct NatLab {
    pub prefix: String,
    pub tracker_ns: String,
    pub tracker_ip: String,
    pub sites: Vec<Site>,
}

fn natlab_py() -> PathBuf {
    workspace_root().join("bench").join("natlab.py")
}

impl NatLab {
    /// `python3 bench/natlab.py up KIND…` under `prefix` (tear down a leftover lab first).
    pub fn up(prefix: &str, kinds: &[&str], rate: Option<&str>) -> NatLab {
        let run = |args: &[&str]| {
            Command::new("python3")
                .arg(natlab_py())
                .args(args)
                .env("MT_NETLAB_PREFIX", prefix)
                .output()
                .expect("python3 bench/natlab.py")
        };
        let _ = run(&["down"]);
        let mut args = vec!["up"];
        args.extend_from_slice(kinds);
        if let Some(r) = rate {
            args.extend_from_slice(&["--rate", r]);
        }
        let out = run(&args);
        assert!(
            out.status.success(),
            "natlab.py up {kinds:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("natlab.py JSON");
        let sites = (1..=kinds.len())
            .map(|i| {
                let s = &v["sites"][i.to_string()];
                Site {
                    kind: s["kind"].as_str().unwrap().into(),
                    ns: s["ns"].as_str().unwrap().into(),
                    addr: s["addr"].as_str().unwrap().into(),
                    public_addr: s["public_addr"].as_str().unwrap().into(),
                }
            })
            .collect();
        NatLab {
            prefix: prefix.into(),
            tracker_ns: v["tracker"]["ns"].as_str().unwrap().into(),
            tracker_ip: v["tracker"]["addr"].as_str().unwrap().into(),
            sites,
        }
    }

    /// The router's nftables ruleset and miniupnpd's log of site `i` (0-based), for failures.
    pub fn router_dump(&self, i: usize) -> String {
        let r = format!("{}-r{}", self.prefix, i + 1);
        let nft = Command::new("ip")
            .args(["netns", "exec", &r, "nft", "list", "ruleset"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let log = std::fs::read_to_string(format!(
            "/run/mt-lab-{}/miniupnpd-r{}.log",
            self.prefix,
            i + 1
        ))
        .unwrap_or_default();
        format!("{nft}\n--- miniupnpd ---\n{log}")
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        let _ = Command::new("python3")
            .arg(natlab_py())
            .arg("down")
            .env("MT_NETLAB_PREFIX", &self.prefix)
            .output();
    }
}

fn spawn_in(ns: &str, program: &Path, args: &[String], log: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .env_remove("MINITORR_SOCKET")
        .env_remove("TRACKERD_CONFIG")
        .env_remove("MINITORRD_CONFIG")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // `ip netns exec` execs the program: this child's pid is trackerd's / minitorrd's.
    cmd.spawn().unwrap()
}

/// trackerd on the lab's tracker host, port 5000.
pub struct LabTracker {
    pub dir: PathBuf,
    pub addr: String,
    child: Child,
}

impl LabTracker {
    pub fn start(lab: &NatLab, dir: &Path, extra: &[&str]) -> LabTracker {
        std::fs::create_dir_all(dir).unwrap();
        let addr = format!("{}:5000", lab.tracker_ip);
        let mut args: Vec<String> = vec![
            "--listen".into(),
            addr.clone(),
            "--state-dir".into(),
            dir.join("state").display().to_string(),
            // Plain TCP inside the lab's namespaces (nothing leaves the machine).
            "--allow-plaintext".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = dir.join("trackerd.log");
        let child = spawn_in(
            &lab.tracker_ns,
            &bin("trackerd"),
            &args,
            &log,
            &[("RUST_LOG", "info")],
        );
        let marker = format!("listening on {addr}");
        let mut child = child;
        wait_for("trackerd in the lab", Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Ok(Some(st)) = child.try_wait() {
                panic!("trackerd exited ({st}):\n{text}");
            }
            text.contains(&marker)
        });
        LabTracker {
            dir: dir.into(),
            addr,
            child,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("trackerd.log")).unwrap_or_default()
    }
}

impl Drop for LabTracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// minitorrd on a site's host, listening on its own address, port 7000.
pub struct LabPeer {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub site: Site,
    child: Option<Child>,
}

impl LabPeer {
    pub fn start(site: &Site, tracker: &LabTracker, dir: &Path, extra: &[&str]) -> LabPeer {
        std::fs::create_dir_all(dir).unwrap();
        private_dir(dir);
        let socket = dir.join("ctl.sock");
        let mut args: Vec<String> = vec![
            "--socket".into(),
            socket.display().to_string(),
            "--state-dir".into(),
            dir.join("state").display().to_string(),
            "--tracker".into(),
            tracker.addr.clone(),
            // The lab's tracker is not on loopback; it speaks plain TCP inside the namespaces.
            "--allow-plaintext".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("{}:7000", site.addr));
        let child = spawn_in(
            &site.ns,
            &bin("minitorrd"),
            &args,
            &dir.join("minitorrd.log"),
            &[("RUST_LOG", "info,minitorrd=debug")],
        );
        let p = LabPeer {
            dir: dir.into(),
            socket: socket.clone(),
            site: site.clone(),
            child: Some(child),
        };
        wait_for("minitorrd in the lab", Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        p
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl_at(&self.socket, args)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "[{} {}] minitorrctl {args:?} failed:\n{}{}\n--- log ---\n{}",
            self.site.kind,
            self.site.ns,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(30)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("minitorrd.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let v: Vec<&str> = log.lines().collect();
        v[v.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM (a clean shutdown: the port mapping is deleted) and wait.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

impl Drop for LabPeer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

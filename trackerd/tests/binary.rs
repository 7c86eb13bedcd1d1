//! The real `trackerd` binary: command line, systemd notifications, signals, and durability
//! across `kill -9`.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use minitorr_proto::tracker::{Call, Request, Response};
use minitorr_proto::{handshake, links, Link};
use tokio_util::codec::Framed;

fn trackerd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trackerd"));
    for var in [
        "TRACKERD_LISTEN",
        "TRACKERD_STATE_DIR",
        "TRACKERD_DATABASE_URL",
        "TRACKERD_CONFIG",
        "RUST_LOG",
        "NOTIFY_SOCKET",
        "CONFIGURATION_DIRECTORY",
        "STATE_DIRECTORY",
        "TRACKERD_TLS_CERT",
        "TRACKERD_TLS_KEY",
        "TRACKERD_ALLOW_PLAINTEXT",
    ] {
        c.env_remove(var);
    }
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn print_config_shows_the_effective_values() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "ticket_ttl_secs = 60\nlisten = \"127.0.0.1:1111\"\n").unwrap();
    let out = trackerd()
        .args(["--print-config", "--listen", "127.0.0.1:6001", "--config"])
        .arg(&cfg)
        .env("TRACKERD_STATE_DIR", "/srv/t")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:6001\""), "{text}");
    assert!(text.contains("ticket_ttl_secs = 60"), "{text}");
    assert!(
        text.contains("database_url = \"sqlite:///srv/t/tracker.db?mode=rwc\""),
        "{text}"
    );
}

#[test]
fn config_errors_exit_nonzero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "listn = \"127.0.0.1:1\"\n").unwrap();
    let out = trackerd().arg("--config").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("listn") && err.contains("line 1"), "{err}");

    let out = trackerd()
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));

    // The implicit systemd location may be absent.
    let out = trackerd()
        .arg("--print-config")
        .env("CONFIGURATION_DIRECTORY", dir.path().join("none"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn plaintext_on_a_network_address_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("0.0.0.0:{}", free_port());
    let out = trackerd()
        .args(["--listen", &listen, "--state-dir"])
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing") && err.contains("not a loopback") && err.contains("tls_cert"),
        "{err}"
    );
    assert!(
        !dir.path().join("s").exists(),
        "a refused start must not create the database"
    );
}

#[test]
fn print_cert_fingerprint_prints_the_sha256_of_the_certificate() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let out = trackerd()
        .arg("--print-cert-fingerprint")
        .env("TRACKERD_TLS_CERT", &cert)
        .env("TRACKERD_TLS_KEY", &key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.trim(), hex::encode(Sha256::digest(ck.cert.der())));

    let out = trackerd().arg("--print-cert-fingerprint").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no TLS certificate configured"),
        "{out:?}"
    );
}

#[test]
fn seed_form_takes_the_listen_address_from_tracker_info() {
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("tracker_info.txt");
    std::fs::write(&info, "127.0.0.1\n5000\n127.0.0.1\n6000\n").unwrap();
    let out = trackerd()
        .arg("--print-config")
        .arg(&info)
        .arg("2")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("listen = \"127.0.0.1:6000\""),
        "{out:?}"
    );
}

/// A running trackerd with its stderr lines and systemd notifications collected.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    notify: UnixDatagram,
}

impl Daemon {
    fn start(dir: &Path, port: u16, config: &Path) -> Daemon {
        let sock = dir.join(format!("notify-{port}-{}.sock", rand_suffix()));
        let notify = UnixDatagram::bind(&sock).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut child = trackerd()
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--config")
            .arg(config)
            .env("NOTIFY_SOCKET", &sock)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let d = Daemon {
            child,
            lines,
            notify,
        };
        d.expect_notify("READY=1");
        d
    }

    fn expect_notify(&self, what: &str) {
        let mut buf = [0u8; 256];
        let n = loop {
            match self.notify.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.expect("notification from trackerd"),
            }
        };
        let msg = String::from_utf8_lossy(&buf[..n]);
        assert!(msg.contains(what), "expected {what}, got {msg}");
    }

    fn expect_log(&self, needle: &str) {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.contains(needle) => return,
                Ok(_) => {}
                Err(e) => panic!("no log line containing {needle:?}: {e}"),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

fn rand_suffix() -> u32 {
    std::process::id()
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos())
}

async fn call(port: u16, call: Call) -> Response {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    handshake(&mut s, Link::Tracker).await.unwrap();
    let mut f = Framed::new(s, links::tracker_client());
    f.send(Request { token: None, call }).await.unwrap();
    f.next().await.unwrap().unwrap()
}

#[tokio::test]
async fn lifecycle_ready_reload_kill9_and_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trackerd.toml");
    std::fs::write(&config, "log_level = \"info\"\n").unwrap();
    let port = free_port();

    let mut d = Daemon::start(dir.path(), port, &config);
    d.expect_log(&format!("listening on 127.0.0.1:{port}"));
    let r = call(
        port,
        Call::CreateUser {
            user: "alice".into(),
            password: "pw".into(),
        },
    )
    .await;
    assert!(matches!(r, Response::Ok { .. }), "{r:?}");
    // kill -9 right after the answer: the account must survive.
    d.child.kill().unwrap();
    d.child.wait().unwrap();

    let mut d = Daemon::start(dir.path(), port, &config);
    let login = Call::Login {
        user: "alice".into(),
        password: "pw".into(),
        peer_addr: "127.0.0.1:7001".into(),
        device_key: ed25519_dalek::SigningKey::from_bytes(&[1; 32])
            .verifying_key()
            .to_bytes(),
    };
    assert!(matches!(call(port, login).await, Response::LoggedIn(_)));

    // SIGHUP applies a new log level from the file.
    std::fs::write(&config, "log_level = \"debug\"\n").unwrap();
    d.signal("HUP");
    d.expect_log("configuration reloaded");
    call(
        port,
        Call::CreateUser {
            user: "bob".into(),
            password: "pw".into(),
        },
    )
    .await;
    d.expect_log("connected"); // a debug-level line, visible only after the reload

    // SIGTERM: STOPPING=1, clean exit 0.
    d.signal("TERM");
    d.expect_notify("STOPPING=1");
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    d.expect_log("stopped");
}

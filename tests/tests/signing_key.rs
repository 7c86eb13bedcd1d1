//! The ticket-signing key lives in a key file, never in the database (docs/SECURITY.md, "Ticket
//! signing key"): a database backup mints no tickets, unsafe key files stop trackerd, the key
//! rotates with an overlap while daemons run, and a database from before the key file is
//! migrated. Real trackerd/minitorrd processes; the attacker is a hand-driven peer.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use minitorr_e2e::*;
use minitorr_proto::peer::PeerMsg;
use minitorr_proto::ticket::{Ticket, TicketClaims};
use minitorr_proto::tracker::{Call, Response};

type Raw = fakepeer::TrackerClient;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key_file(tracker: &Tracker) -> PathBuf {
    tracker.dir.join("state/ticket-signing.key")
}

fn read_key(path: &Path) -> SigningKey {
    let text = std::fs::read_to_string(path).unwrap();
    let mut b = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut b).unwrap();
    SigningKey::from_bytes(&b)
}

/// Present `ticket` to `seeder`; its first answer.
/// Present `ticket` to the seeder at `seeder` (which must prove `seeder_key`) over TLS as
/// `device` — the device the ticket is bound to, so only the signature decides.
async fn hello(
    seeder: SocketAddr,
    seeder_key: [u8; 32],
    device: &fakepeer::DeviceKey,
    ticket: Ticket,
) -> PeerMsg {
    let mut f = fakepeer::tls_connect(seeder, device, seeder_key)
        .await
        .unwrap();
    fakepeer::say_hello(&mut f, ticket)
        .await
        .expect("seeder answers Hello")
}

fn assert_welcome(m: &PeerMsg, what: &str) {
    assert!(matches!(m, PeerMsg::Welcome { .. }), "{what}: {m:?}");
}

fn assert_refused(m: &PeerMsg, what: &str) -> String {
    match m {
        PeerMsg::Refused { reason } => reason.clone(),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

/// A tracker with `toml` as config file, a seeder `a` sharing `secret.bin` in g1, and the raw
/// member `mallory` (logged in through `Raw`).
struct Setup {
    _tmp: tempfile::TempDir,
    tracker: Tracker,
    config: PathBuf,
    a: Peer,
    file: PathBuf,
    rt: tokio::runtime::Runtime,
    mallory: Raw,
}

fn setup(toml: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let tdir = tmp.path().join("t");
    std::fs::create_dir_all(&tdir).unwrap();
    let config = tdir.join("trackerd.toml");
    std::fs::write(&config, toml).unwrap();
    let tracker = Tracker::start_args(&tdir, &["--config", config.to_str().unwrap()]);
    let a = Peer::start(&tmp.path().join("a"), &tracker);
    user(&a, "a");
    a.ok(&["create_group", "g1"]);
    let file = tmp.path().join("a/secret.bin");
    random_file(&file, 600 * 1024);
    a.ok(&["upload_file", file.to_str().unwrap(), "g1"]);
    a.ok(&["create_user", "mallory", "pw-m"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mallory = rt.block_on(async {
        let mut m = Raw::connect(tracker.addr).await;
        m.login("mallory", "pw-m", "127.0.0.1:9".parse().unwrap())
            .await;
        m.call(Call::JoinGroup { group: "g1".into() }).await;
        m
    });
    a.ok(&["accept_request", "g1", "mallory"]);
    Setup {
        _tmp: tmp,
        tracker,
        config,
        a,
        file,
        rt,
        mallory,
    }
}

impl Setup {
    fn ticket(&mut self) -> Ticket {
        let m = &mut self.mallory;
        self.rt.block_on(async {
            match m
                .call(Call::GetFile {
                    group: "g1".into(),
                    file: "secret.bin".into(),
                })
                .await
            {
                Response::File(d) => d.ticket,
                other => panic!("{other:?}"),
            }
        })
    }

    fn hello(&self, ticket: Ticket) -> PeerMsg {
        let seeder_key = self.a.device_key().public_bytes();
        self.rt
            .block_on(hello(self.a.addr, seeder_key, &self.mallory.device, ticket))
    }
}

/// Every run of lowercase hex digits at least 64 long in `bytes`, as 32-byte candidates (each
/// 64-character window): what someone holding a backup would try as a key.
fn hex_candidates(bytes: &[u8]) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    let is_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    let mut i = 0;
    while i < bytes.len() {
        if !is_hex(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_hex(&bytes[i]) {
            i += 1;
        }
        for w in bytes[start..i].windows(64) {
            let mut k = [0u8; 32];
            hex::decode_to_slice(w, &mut k).unwrap();
            out.push(k);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// (a) A copy of the SQLite database holds no private key, and no ticket made from anything in
/// it opens a share.
#[test]
fn a_database_backup_holds_no_private_key_and_tickets_forged_from_it_are_refused() {
    let mut s = setup("heartbeat_secs = 1\npeer_timeout_secs = 3\n");
    let genuine = s.ticket();
    assert_welcome(&s.hello(genuine.clone()), "genuine ticket (baseline)");

    // The backup: the database file and its WAL, as a file-level backup copies them.
    let state = s.tracker.dir.join("state");
    let mut backup = Vec::new();
    for name in ["tracker.db", "tracker.db-wal"] {
        if let Ok(b) = std::fs::read(state.join(name)) {
            backup.extend(b);
        }
    }
    assert!(backup.len() > 10_000, "read the database");
    let secret = read_key(&key_file(&s.tracker));
    let secret_hex = hex::encode(secret.to_bytes());
    assert!(
        !String::from_utf8_lossy(&backup).contains(&secret_hex),
        "the database holds the signing key (hex)"
    );
    assert!(
        !backup.windows(32).any(|w| w == secret.to_bytes()),
        "the database holds the signing key (raw)"
    );
    // What it does hold: the public key, in the clear, which is fine.
    let public = secret.verifying_key().to_bytes();
    assert!(String::from_utf8_lossy(&backup).contains(&hex::encode(public)));

    // Forge with every key-sized hex string in the backup: signed by that candidate, and
    // claiming either the tracker's key id or the candidate's own.
    let candidates = hex_candidates(&backup);
    assert!(
        candidates.iter().any(|c| c == &public),
        "the scan finds the public key"
    );
    let mut claims: TicketClaims = genuine.claims.clone();
    claims.user = "eve".into();
    claims.expires_unix = now_unix() + 3600;
    let mut refused = 0;
    for c in &candidates {
        let fake = SigningKey::from_bytes(c);
        let mut as_tracker = Ticket::sign(claims.clone(), &fake);
        as_tracker.key = public;
        let own = Ticket::sign(claims.clone(), &fake);
        for t in [as_tracker, own] {
            let reason = assert_refused(&s.hello(t), "ticket forged from the backup");
            assert!(
                reason.contains("signature") || reason.contains("does not know"),
                "{reason}"
            );
            refused += 1;
        }
    }
    assert!(refused >= 4, "tried {refused} forgeries");
    // The genuine one still works: the refusals were about the forgeries.
    assert_welcome(&s.hello(genuine), "genuine ticket after the forgeries");
}

fn run_trackerd(dir: &Path, extra: &[&str]) -> (Option<std::process::ExitStatus>, String) {
    let log = dir.join("refused.log");
    let mut child = Command::new(bin("trackerd"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra)
        .env_remove("TRACKERD_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let st = wait_exit(&mut child, Duration::from_secs(20));
    (st, std::fs::read_to_string(&log).unwrap())
}

fn assert_refuses_to_start(dir: &Path, extra: &[&str], why: &str) {
    let (st, log) = run_trackerd(dir, extra);
    let st = st.unwrap_or_else(|| panic!("trackerd kept running ({why}):\n{log}"));
    assert!(!st.success(), "{why}: {log}");
    assert!(log.contains(why), "expected '{why}' in:\n{log}");
    assert!(!log.contains("listening on 127."), "{log}");
}

/// (b) The key file is created 0600; a readable, symlinked or foreign key file stops trackerd
/// with a message that says what is wrong.
#[test]
fn the_key_file_is_created_0600_and_unsafe_key_files_stop_trackerd() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::start(&tmp.path().join("t"));
    let path = key_file(&tracker);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let key = read_key(&path);
    assert!(tracker.terminate().success());
    let dir = tracker.dir.clone();

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_refuses_to_start(
        &dir,
        &[],
        "has mode 0644: it must not be readable or writable by group or others (chmod 600",
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    assert_refuses_to_start(&dir, &[], "has mode 0660");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A symlink to a perfectly good key file is refused too (someone could swap its target).
    let elsewhere = tmp.path().join("elsewhere.key");
    std::fs::rename(&path, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    assert_refuses_to_start(&dir, &[], "is a symbolic link");
    std::fs::remove_file(&path).unwrap();
    // A dangling link planted where the key would be created: refused, nothing created.
    let target = tmp.path().join("planted-target");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let (st, log) = run_trackerd(&dir, &[]);
    assert!(!st.expect("exits").success(), "{log}");
    assert!(!target.exists(), "followed the planted link");
    std::fs::remove_file(&path).unwrap();
    std::fs::rename(&elsewhere, &path).unwrap();

    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        assert_refuses_to_start(&dir, &[], "is owned by uid 65534");
        std::os::unix::fs::chown(&path, Some(0), None).unwrap();
    } else {
        eprintln!(
            "NOTE: not root; the foreign-owner case is covered by trackerd's unit tests only"
        );
    }

    // Fixed: it starts again with the same key.
    tracker.restart();
    assert_eq!(read_key(&path).to_bytes(), key.to_bytes());
    assert!(tracker.log().contains("loaded the ticket-signing key"));
}

fn rotate_key(s: &Setup, extra: &[&str]) -> std::process::Output {
    Command::new(bin("trackerd"))
        .arg("--config")
        .arg(&s.config)
        .arg("--state-dir")
        .arg(s.tracker.dir.join("state"))
        .arg("rotate-key")
        .args(extra)
        .env_remove("TRACKERD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// (c) rotate-key while daemons run: an old ticket keeps working for the overlap, a new
/// download (new key) works from a seeder that logged in before the rotation, and after the
/// overlap the old key opens nothing.
#[test]
fn rotate_key_while_daemons_run_keeps_old_tickets_for_the_overlap_then_retires_the_old_key() {
    const TTL: u64 = 4;
    let mut s = setup(&format!(
        "heartbeat_secs = 1\npeer_timeout_secs = 3\nticket_ttl_secs = {TTL}\nkey_overlap_secs = {TTL}\n"
    ));
    // A downloader daemon, logged in before the rotation too.
    let b = Peer::start(&s._tmp.path().join("b"), &s.tracker);
    user(&b, "b");
    b.ok(&["join_group", "g1"]);
    s.a.ok(&["accept_request", "g1", "b"]);

    let old_key = read_key(&key_file(&s.tracker));
    let old_ticket = s.ticket();
    assert_eq!(old_ticket.key, old_key.verifying_key().to_bytes());

    // An overlap shorter than the ticket lifetime is refused.
    let short = rotate_key(&s, &["--overlap-secs", "1"]);
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("shorter than ticket_ttl_secs"));

    let out = rotate_key(&s, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated_at = now_unix();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("new ticket-signing key"), "{stdout}");
    let new_key = read_key(&key_file(&s.tracker));
    assert_ne!(new_key.to_bytes(), old_key.to_bytes());
    assert_eq!(
        std::fs::metadata(key_file(&s.tracker))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // The running tracker switches to the new file.
    wait_until(
        "the tracker to sign with the new key",
        Duration::from_secs(10),
        || {
            s.tracker
                .log()
                .contains("now signing tickets with the new key")
        },
    );
    let new_ticket = s.ticket();
    assert_eq!(new_ticket.key, new_key.verifying_key().to_bytes());

    // During the overlap: the old ticket still opens the share; the new one opens it at a
    // seeder that logged in before the rotation (it learns the new key from the tracker).
    assert_welcome(
        &s.hello(old_ticket.clone()),
        "old-key ticket in the overlap",
    );
    assert_welcome(
        &s.hello(new_ticket),
        "new-key ticket at a seeder from before",
    );
    // A real download by a daemon from before the rotation, served by one from before.
    let dest = s._tmp.path().join("b/got.bin");
    b.ok(&["download_file", "g1", "secret.bin", dest.to_str().unwrap()]);
    let e = b.wait_download("g1", "secret.bin", Duration::from_secs(30));
    assert_eq!(e["state"], "complete", "{e}");
    assert_eq!(sha1_file(&dest), sha1_file(&s.file));

    // After the overlap: old-key tickets are refused — the genuine one, and one forged with the
    // old key (as if it leaked) that claims a far expiry.
    let retired = rotated_at + TTL + 2;
    while now_unix() <= retired {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut claims = old_ticket.claims.clone();
    claims.expires_unix = now_unix() + 3600;
    let leaked = Ticket::sign(claims, &old_key);
    let reason = assert_refused(&s.hello(old_ticket), "old ticket after the overlap");
    // Expired, or its key already dropped from the seeder's refreshed list: refused either way.
    assert!(
        reason.contains("expired")
            || reason.contains("retired")
            || reason.contains("does not know"),
        "{reason}"
    );
    let reason = assert_refused(&s.hello(leaked), "old key after the overlap");
    assert!(
        reason.contains("retired") || reason.contains("does not know"),
        "{reason}"
    );
    // And the new key keeps working.
    let fresh = s.ticket();
    assert_welcome(&s.hello(fresh), "new-key ticket after the overlap");
}

/// (d) A database written by a trackerd that kept the key in the database: the key moves to
/// the key file (same key: outstanding tickets keep working), the database forgets it, and the
/// log says so.
#[test]
fn a_database_that_holds_the_old_key_is_migrated_to_the_key_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tracker = Tracker::start(&tmp.path().join("t"));
    assert!(tracker.terminate().success());
    let state = tracker.dir.join("state");
    // Make it look like the old layout: the key only in the database.
    let legacy = SigningKey::generate(&mut rand::rngs::OsRng);
    let legacy_hex = hex::encode(legacy.to_bytes());
    std::fs::remove_file(state.join("ticket-signing.key")).unwrap();
    let url = format!("sqlite://{}", state.join("tracker.db").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("DELETE FROM ticket_keys")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("INSERT INTO tracker_key (id, secret_hex, created) VALUES (1, ?, 0)")
            .bind(&legacy_hex)
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    });
    let before = std::fs::read(state.join("tracker.db")).unwrap();
    assert!(String::from_utf8_lossy(&before).contains(&legacy_hex));

    tracker.restart();
    let log = tracker.log();
    assert!(
        log.contains("moved the ticket-signing key out of the database into the key file"),
        "{log}"
    );
    assert!(
        log.contains("rotate-key"),
        "the log recommends a rotation: {log}"
    );
    let path = key_file(&tracker);
    assert_eq!(read_key(&path).to_bytes(), legacy.to_bytes());
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut db = std::fs::read(state.join("tracker.db")).unwrap();
    db.extend(std::fs::read(state.join("tracker.db-wal")).unwrap_or_default());
    assert!(
        !String::from_utf8_lossy(&db).contains(&legacy_hex),
        "the secret is scrubbed from the database file and WAL"
    );
    assert!(!db.windows(32).any(|w| w == legacy.to_bytes()));

    // The migrated key still signs, and a daemon accepts its tickets.
    let a = Peer::start(&tmp.path().join("a"), &tracker);
    user(&a, "a");
    a.ok(&["create_group", "g1"]);
    let file = tmp.path().join("a/f.bin");
    random_file(&file, 300 * 1024);
    a.ok(&["upload_file", file.to_str().unwrap(), "g1"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ticket = rt.block_on(async {
        let mut m = Raw::connect(tracker.addr).await;
        m.call(Call::CreateUser {
            user: "m".into(),
            password: "pw-m".into(),
        })
        .await;
        m.login("m", "pw-m", "127.0.0.1:9".parse().unwrap()).await;
        m.call(Call::JoinGroup { group: "g1".into() }).await;
        a.ok(&["accept_request", "g1", "m"]);
        match m
            .call(Call::GetFile {
                group: "g1".into(),
                file: "f.bin".into(),
            })
            .await
        {
            Response::File(d) => (d.ticket, m.device.clone()),
            other => panic!("{other:?}"),
        }
    });
    let (ticket, device) = ticket;
    assert_eq!(ticket.key, legacy.verifying_key().to_bytes());
    let seeder_key = a.device_key().public_bytes();
    assert_welcome(
        &rt.block_on(hello(a.addr, seeder_key, &device, ticket)),
        "ticket from the migrated key",
    );
    let started = Instant::now();
    // A second start finds nothing left to migrate.
    tracker.restart();
    assert_eq!(
        tracker
            .log()
            .matches("moved the ticket-signing key out of the database")
            .count(),
        1
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

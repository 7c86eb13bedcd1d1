//! The ticket-signing key: where the private key lives, and how it changes.
//!
//! Design (see docs/OPERATIONS.md, "Ticket-signing keys"):
//!
//! * The private key never enters the database. Each trackerd reads it from its key file
//!   (`signing_key_file`, default `<state_dir>/ticket-signing.key`, created 0600 with
//!   `O_EXCL|O_NOFOLLOW` on first start) or from the systemd credential `ticket-signing-key`
//!   (`LoadCredential=`). A key file that is a symlink, not a regular file, readable or writable
//!   by group or others, or owned by another user is refused: trackerd does not start.
//! * The database holds only PUBLIC keys (`ticket_keys`), each with the time after which its
//!   tickets are refused. Every tracker of a shared PostgreSQL database publishes its own key
//!   there; daemons get the list of valid keys at login and refresh it, so a ticket from any
//!   tracker verifies at any seeder. No secret has to be copied between tracker hosts.
//! * `trackerd rotate-key` writes a new key file (atomically, by rename), publishes the new
//!   public key and schedules the old one's retirement after `key_overlap_secs`. A running
//!   trackerd notices the new file within [`WATCH_INTERVAL`] and signs with it from then on.
//! * A database from before this design holds the private key in `tracker_key`: at startup it
//!   is moved to the key file (or, if a key file exists already, kept valid for one ticket
//!   lifetime), then deleted and scrubbed from the database file.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use nix::fcntl::OFlag;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::service::Service;
use crate::store::{Store, StoreError};

/// Name of the systemd credential (`LoadCredential=ticket-signing-key:/path`).
pub const CREDENTIAL_NAME: &str = "ticket-signing-key";
/// How often a running trackerd looks for a rotated key file and its key's retirement.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// A key file is 64 hex characters and a newline; anything much longer is not a key file.
const MAX_KEY_FILE_LEN: u64 = 256;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("no ticket-signing key file at {path}: start trackerd once to create it, or name the current one with --signing-key-file")]
    NoKeyFile { path: String },
    #[error("ticket-signing key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("ticket-signing key file {path} is a symbolic link; refusing it (use the real file's path, or replace the link by the file)")]
    Symlink { path: String },
    #[error("ticket-signing key file {path} is not a regular file")]
    NotRegular { path: String },
    #[error("ticket-signing key file {path} has mode {mode:04o}: it must not be readable or writable by group or others (chmod 600 {path})")]
    Permissive { path: String, mode: u32 },
    #[error("ticket-signing key file {path} is owned by uid {owner}, not by the user trackerd runs as (uid {me}); fix with chown")]
    Owner { path: String, owner: u32, me: u32 },
    #[error("ticket-signing key file {path} is not a key (expected 64 hex characters): {why}")]
    Malformed { path: String, why: String },
    #[error("systemd credential {path} is missing; check LoadCredential={CREDENTIAL_NAME}:… in the unit")]
    MissingCredential { path: String },
    #[error("the ticket-signing key {id} in {path} was retired (at unix time {at}); a newer key file replaced it — restore the current key file, or run `trackerd rotate-key` to make a new key")]
    Retired { id: String, path: String, at: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where this tracker's private key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file trackerd owns (created if missing, replaced by `rotate-key`).
    File(PathBuf),
    /// A systemd credential: read-only, must exist; rotated by replacing its source and
    /// restarting the unit.
    Credential(PathBuf),
}

impl KeySource {
    /// The credential if systemd passed one (`$CREDENTIALS_DIRECTORY/ticket-signing-key`),
    /// else the configured key file.
    pub fn choose(key_file: &Path, env: &dyn Fn(&str) -> Option<String>) -> KeySource {
        if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
            let p = Path::new(&dir).join(CREDENTIAL_NAME);
            if p.symlink_metadata().is_ok() {
                return KeySource::Credential(p);
            }
        }
        KeySource::File(key_file.to_path_buf())
    }

    pub fn path(&self) -> &Path {
        match self {
            KeySource::File(p) | KeySource::Credential(p) => p,
        }
    }
}

/// Short printable id of a public key (first 8 bytes, hex), for logs.
pub fn key_id(public: &[u8; 32]) -> String {
    hex::encode(&public[..8])
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Read and check a key file. `credential`: systemd copies credentials owned by root or by the
/// service user, so root is accepted as owner there.
pub fn read_key_file(path: &Path, credential: bool) -> Result<SigningKey, KeyError> {
    let shown = path.display().to_string();
    // lstat first for a clear message; O_NOFOLLOW below closes the race with a swap.
    let lmeta = path.symlink_metadata().map_err(io_err(path))?;
    if lmeta.file_type().is_symlink() {
        return Err(KeyError::Symlink { path: shown });
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                KeyError::Symlink {
                    path: shown.clone(),
                }
            } else {
                io_err(path)(e)
            }
        })?;
    let meta = f.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(KeyError::NotRegular { path: shown });
    }
    let mode = meta.mode() & 0o7777;
    // systemd may grant the service user read access to a credential through an ACL, whose
    // mask shows in the group bits; the credentials directory is private to the unit anyway.
    let forbidden = if credential { 0o007 } else { 0o077 };
    if mode & forbidden != 0 {
        return Err(KeyError::Permissive { path: shown, mode });
    }
    let me = euid();
    if meta.uid() != me && !(credential && meta.uid() == 0) {
        return Err(KeyError::Owner {
            path: shown,
            owner: meta.uid(),
            me,
        });
    }
    let mut text = String::new();
    (&mut f)
        .take(MAX_KEY_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(|e| KeyError::Malformed {
            path: shown.clone(),
            why: e.to_string(),
        })?;
    parse_key(text.trim()).map_err(|why| KeyError::Malformed { path: shown, why })
}

fn parse_key(hex_str: &str) -> Result<SigningKey, String> {
    let mut secret = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut secret).map_err(|e| e.to_string())?;
    Ok(SigningKey::from_bytes(&secret))
}

/// Create the parent directory (0700) if it is missing: on PostgreSQL nothing else does.
fn ensure_parent(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::DirBuilderExt;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir)),
        _ => Ok(()),
    }
}

fn sync_dir(path: &Path) -> Result<(), KeyError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Write `key` to a NEW file at `path`: 0600, `O_EXCL` (never replaces or follows anything
/// already there), synced with its directory.
pub fn write_new_key_file(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    ensure_parent(path)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(io_err(path))?;
    let text = format!("{}\n", hex::encode(key.to_bytes()));
    f.write_all(text.as_bytes()).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    sync_dir(path)
}

/// Replace the key file by one holding `key`, atomically: write `<path>.new`, then rename.
pub fn replace_key_file(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    // Left over by an interrupted rotation: ours if it is a regular file we own.
    if let Ok(m) = tmp.symlink_metadata() {
        if m.is_file() && m.uid() == euid() {
            std::fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        }
    }
    write_new_key_file(&tmp, key)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(path)
}

/// Read the key, or create a fresh one if the file does not exist (key files only).
fn load_or_create(source: &KeySource) -> Result<(SigningKey, bool), KeyError> {
    match source {
        KeySource::Credential(p) => match read_key_file(p, true) {
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(KeyError::MissingCredential {
                    path: p.display().to_string(),
                })
            }
            r => r.map(|k| (k, false)),
        },
        KeySource::File(p) => match read_key_file(p, false) {
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let key = SigningKey::generate(&mut rand::rngs::OsRng);
                match write_new_key_file(p, &key) {
                    Ok(()) => Ok((key, true)),
                    // Another process created it meanwhile: use theirs.
                    Err(KeyError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        read_key_file(p, false).map(|k| (k, false))
                    }
                    Err(e) => Err(e),
                }
            }
            r => r.map(|k| (k, false)),
        },
    }
}

/// Move a private key that an older trackerd kept in the database out of it. If our key file
/// does not exist yet, the old key becomes its content (nothing changes for anyone); otherwise
/// the old key's public half stays valid for `ticket_ttl_secs` for tickets already handed out.
/// Then the secret is deleted and scrubbed from the database.
pub async fn migrate_legacy_key(
    store: &Store,
    source: &KeySource,
    now: u64,
    ticket_ttl_secs: u64,
) -> Result<(), KeyError> {
    let Some(secret_hex) = store.legacy_signing_key().await? else {
        return Ok(());
    };
    let legacy = parse_key(secret_hex.trim()).map_err(|why| {
        StoreError::Corrupt(format!("legacy tracker_key row is not a key: {why}"))
    })?;
    let public = legacy.verifying_key().to_bytes();
    store
        .publish_ticket_key(&hex::encode(public), now as i64)
        .await?;
    let path = source.path();
    let moved = match source {
        KeySource::File(p) if p.symlink_metadata().is_err() => {
            write_new_key_file(p, &legacy)?;
            true
        }
        _ => false,
    };
    let same = !moved
        && matches!(read_key_file(path, matches!(source, KeySource::Credential(_))), Ok(k) if k.verifying_key().to_bytes() == public);
    if !moved && !same {
        store
            .retire_ticket_key(&hex::encode(public), (now + ticket_ttl_secs) as i64)
            .await?;
    }
    store.delete_legacy_signing_key().await?;
    if moved || same {
        tracing::warn!(
            key = %key_id(&public),
            file = %path.display(),
            "moved the ticket-signing key out of the database into the key file and deleted it from the database; database backups made before now still contain it: run `trackerd rotate-key`"
        );
    } else {
        tracing::warn!(
            key = %key_id(&public),
            file = %path.display(),
            valid_until = now + ticket_ttl_secs,
            "deleted the ticket-signing key that was stored in the database (this tracker signs with its key file); tickets it signed stay valid until their expiry"
        );
    }
    Ok(())
}

/// At startup: migrate a legacy key, load (or create) ours, publish its public half, and
/// refuse a key that was already retired.
pub async fn load_signing_key(
    store: &Store,
    source: &KeySource,
    now: u64,
    ticket_ttl_secs: u64,
) -> Result<SigningKey, KeyError> {
    migrate_legacy_key(store, source, now, ticket_ttl_secs).await?;
    let (key, created) = load_or_create(source)?;
    let public = key.verifying_key().to_bytes();
    let hex_pub = hex::encode(public);
    not_retired(store, &key, source.path(), now).await?;
    store.publish_ticket_key(&hex_pub, now as i64).await?;
    if created {
        tracing::info!(key = %key_id(&public), file = %source.path().display(), "created a new ticket-signing key");
    } else {
        tracing::info!(key = %key_id(&public), file = %source.path().display(), "loaded the ticket-signing key");
    }
    Ok(key)
}

/// Refuse a key the database says is retired.
async fn not_retired(
    store: &Store,
    key: &SigningKey,
    path: &Path,
    now: u64,
) -> Result<(), KeyError> {
    let public = key.verifying_key().to_bytes();
    if let Some(Some(at)) = store.ticket_key(&hex::encode(public)).await? {
        if at < now as i64 {
            return Err(KeyError::Retired {
                id: key_id(&public),
                path: path.display().to_string(),
                at,
            });
        }
    }
    Ok(())
}

fn service_now() -> u64 {
    (crate::service::system_clock())()
}

/// What `rotate-key` did.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub old: [u8; 32],
    pub new: [u8; 32],
    pub old_valid_until: u64,
}

/// `trackerd rotate-key`: new key file, new public key published, old key retired after
/// `overlap_secs`. The database is updated first: if the rename then fails, the old file still
/// signs (valid for the overlap) and running the command again finishes the job.
pub async fn rotate(
    store: &Store,
    source: &KeySource,
    now: u64,
    ticket_ttl_secs: u64,
    overlap_secs: u64,
) -> Result<Rotation, KeyError> {
    let KeySource::File(path) = source else {
        unreachable!("rotate-key is given a key file");
    };
    migrate_legacy_key(store, source, now, ticket_ttl_secs).await?;
    let old = match read_key_file(path, false) {
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyError::NoKeyFile {
                path: path.display().to_string(),
            })
        }
        r => r?,
    };
    let new = SigningKey::generate(&mut rand::rngs::OsRng);
    let (old_pub, new_pub) = (
        old.verifying_key().to_bytes(),
        new.verifying_key().to_bytes(),
    );
    let old_valid_until = now + overlap_secs;
    store
        .rotate_ticket_key(
            &hex::encode(old_pub),
            &hex::encode(new_pub),
            now as i64,
            old_valid_until as i64,
            // Keys retired more than a ticket lifetime ago can no longer matter.
            now.saturating_sub(ticket_ttl_secs) as i64,
        )
        .await?;
    replace_key_file(path, &new)?;
    Ok(Rotation {
        old: old_pub,
        new: new_pub,
        old_valid_until,
    })
}

/// Identity of the key file on disk, to notice a rotation without reading the file each time.
fn stamp(path: &Path) -> Option<(u64, u64, i64, i64)> {
    let m = path.symlink_metadata().ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
}

/// A running trackerd: pick up a rotated key file, and keep track of our key's retirement.
pub async fn watch(service: Arc<Service>, source: KeySource, shutdown: CancellationToken) {
    let mut seen = stamp(source.path());
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let KeySource::File(path) = &source {
            let now_stamp = stamp(path);
            if now_stamp != seen {
                match read_key_file(path, false) {
                    Ok(key) => {
                        seen = now_stamp;
                        if let Err(e) =
                            not_retired(service.store(), &key, path, service_now()).await
                        {
                            // E.g. an old key file restored from a backup: its tickets would be
                            // refused everywhere.
                            tracing::error!(error = %e, "key file changed but cannot be used; still signing with the previous key");
                            continue;
                        }
                        if key.verifying_key() != service.verifying_key() {
                            let id = key_id(&key.verifying_key().to_bytes());
                            match service.use_signing_key(key).await {
                                Ok(()) => {
                                    tracing::info!(key = %id, "key file changed: now signing tickets with the new key")
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot switch to the new signing key; will retry")
                                }
                            }
                        }
                    }
                    Err(e) => {
                        // Keep signing with the key we have; say so until the file is fixed.
                        tracing::error!(error = %e, "key file changed but cannot be used; still signing with the previous key");
                        seen = now_stamp;
                    }
                }
            }
        }
        if let Err(e) = service.refresh_signer().await {
            tracing::warn!(error = %e, "cannot check the signing key's retirement");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fresh(dir: &Path) -> PathBuf {
        dir.join("sub/ticket-signing.key")
    }

    #[test]
    fn created_key_file_is_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = fresh(dir.path());
        let (key, created) = load_or_create(&KeySource::File(path.clone())).unwrap();
        assert!(created);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let (again, created) = load_or_create(&KeySource::File(path.clone())).unwrap();
        assert!(!created);
        assert_eq!(again.to_bytes(), key.to_bytes());
        // O_EXCL: writing a "new" key file never replaces one.
        assert!(matches!(
            write_new_key_file(&path, &key),
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists
        ));
    }

    #[test]
    fn unsafe_key_files_are_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.key");
        write_new_key_file(&real, &SigningKey::generate(&mut rand::rngs::OsRng)).unwrap();

        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = read_key_file(&link, false).unwrap_err();
        assert!(matches!(e, KeyError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // Creation does not follow a planted link either.
        let dangling = dir.path().join("dangling.key");
        std::os::unix::fs::symlink(dir.path().join("target-of-link"), &dangling).unwrap();
        assert!(load_or_create(&KeySource::File(dangling)).is_err());
        assert!(!dir.path().join("target-of-link").exists());

        for mode in [0o640, 0o604, 0o620, 0o644] {
            std::fs::set_permissions(&real, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_key_file(&real, false).unwrap_err();
            assert!(
                e.to_string().contains(&format!(
                    "mode {mode:04o}: it must not be readable or writable by group or others"
                )),
                "{e}"
            );
        }
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o400)).unwrap();
        read_key_file(&real, false).unwrap();

        let sub = dir.path().join("dir.key");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            read_key_file(&sub, false),
            Err(KeyError::NotRegular { .. })
        ));

        let junk = dir.path().join("junk.key");
        std::fs::write(&junk, "not hex\n").unwrap();
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_key_file(&junk, false),
            Err(KeyError::Malformed { .. })
        ));
    }

    /// Only root can hand a file to another user; elsewhere this is covered by the e2e test.
    #[test]
    fn key_file_of_another_user_is_refused() {
        if euid() != 0 {
            eprintln!("not root: cannot chown; ownership check covered elsewhere");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_new_key_file(&p, &SigningKey::generate(&mut rand::rngs::OsRng)).unwrap();
        std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
        let e = read_key_file(&p, false).unwrap_err();
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        // A systemd credential may be owned by root; ours is not root here, so still refused.
        assert!(read_key_file(&p, true).is_err());
    }

    #[test]
    fn replace_is_atomic_and_cleans_a_stale_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let a = SigningKey::generate(&mut rand::rngs::OsRng);
        let b = SigningKey::generate(&mut rand::rngs::OsRng);
        write_new_key_file(&p, &a).unwrap();
        std::fs::write(dir.path().join("k.new"), "stale").unwrap();
        replace_key_file(&p, &b).unwrap();
        assert_eq!(read_key_file(&p, false).unwrap().to_bytes(), b.to_bytes());
        assert!(!dir.path().join("k.new").exists());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn credential_wins_over_the_key_file_when_present() {
        let dir = tempfile::tempdir().unwrap();
        let cred_dir = dir.path().display().to_string();
        let file = Path::new("/x/ticket-signing.key");
        let env = |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| cred_dir.clone());
        assert_eq!(KeySource::choose(file, &env), KeySource::File(file.into()));
        std::fs::write(dir.path().join(CREDENTIAL_NAME), "x").unwrap();
        assert_eq!(
            KeySource::choose(file, &env),
            KeySource::Credential(dir.path().join(CREDENTIAL_NAME))
        );
        assert_eq!(
            KeySource::choose(file, &|_| None),
            KeySource::File(file.into())
        );
    }
}

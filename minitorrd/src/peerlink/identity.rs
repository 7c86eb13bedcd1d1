//! The daemon's device key: a long-lived Ed25519 key pair, one per minitorrd state directory.
//!
//! Created on first start as `device.key` (PKCS#8 PEM, mode 0600) in the state dir. It
//! authenticates this daemon on peer links (TLS, both directions), the tracker binds download
//! tickets to its public half, and downloaders pin holders to it. It is a secret of the same
//! weight as the user's session: whoever reads it can impersonate this daemon to its peers, so
//! loading refuses a file that others could have planted or can read.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use thiserror::Error;

/// File name of the device key inside the state directory.
pub const DEVICE_KEY_FILE: &str = "device.key";

/// A PEM key is a few hundred bytes; anything much larger is not ours.
const MAX_KEY_FILE: u64 = 4096;

#[derive(Debug, Error)]
pub enum DeviceKeyError {
    #[error("device key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "device key {path} is a symbolic link; refusing to use it (remove it to create a new key)"
    )]
    Symlink { path: PathBuf },
    #[error("device key {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("device key {path} is owned by uid {owner}, not by us (uid {us}); refusing to use it")]
    WrongOwner { path: PathBuf, owner: u32, us: u32 },
    #[error(
        "device key {path} has mode {mode:o}: readable or writable by group/others; \
         fix with: chmod 600 {path}"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("device key {path} is not an Ed25519 private key in PKCS#8 PEM form: {why}")]
    Malformed { path: PathBuf, why: String },
}

/// The daemon's device identity. Cheap to clone (the secret lives once per clone; keep few).
#[derive(Clone)]
pub struct DeviceKey {
    key: SigningKey,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "DeviceKey({})", hex::encode(self.public_bytes()))
    }
}

impl DeviceKey {
    /// A fresh random key (tests, or before writing the file).
    pub fn generate() -> DeviceKey {
        DeviceKey {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Load `<state_dir>/device.key`, creating it (0600, never through a link) if absent.
    pub fn load_or_create(state_dir: &Path) -> Result<DeviceKey, DeviceKeyError> {
        let path = state_dir.join(DEVICE_KEY_FILE);
        match Self::create(&path) {
            Ok(key) => {
                tracing::info!(path = %path.display(), key = %hex::encode(key.public_bytes()), "created a new device key");
                Ok(key)
            }
            Err(DeviceKeyError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Self::load(&path)
            }
            Err(e) => Err(e),
        }
    }

    /// Create a new key file at `path`; fails with `AlreadyExists` if anything is there
    /// (including a dangling symlink: O_EXCL|O_NOFOLLOW never follows it).
    fn create(path: &Path) -> Result<DeviceKey, DeviceKeyError> {
        let io = |source| DeviceKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)
            .map_err(io)?;
        let key = DeviceKey::generate();
        let pem = key
            .key
            .to_pkcs8_pem(Default::default())
            .expect("an Ed25519 key always encodes");
        let written = file
            .write_all(pem.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            // Never leave a half-written key behind: the next start would refuse it.
            let _ = std::fs::remove_file(path);
            return Err(io(e));
        }
        if let Some(dir) = path.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(key)
    }

    /// Load an existing key file, refusing links, foreign files and files others can read.
    pub fn load(path: &Path) -> Result<DeviceKey, DeviceKeyError> {
        let p = || path.to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| {
                if source.raw_os_error() == Some(nix::libc::ELOOP) {
                    DeviceKeyError::Symlink { path: p() }
                } else {
                    DeviceKeyError::Io { path: p(), source }
                }
            })?;
        // Checks on the opened file itself, so nothing can be swapped in between.
        let meta = file
            .metadata()
            .map_err(|source| DeviceKeyError::Io { path: p(), source })?;
        if !meta.is_file() {
            return Err(DeviceKeyError::NotAFile { path: p() });
        }
        let us = nix::unistd::geteuid().as_raw();
        if meta.uid() != us {
            return Err(DeviceKeyError::WrongOwner {
                path: p(),
                owner: meta.uid(),
                us,
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(DeviceKeyError::TooOpen { path: p(), mode });
        }
        let mut text = String::new();
        file.take(MAX_KEY_FILE)
            .read_to_string(&mut text)
            .map_err(|source| DeviceKeyError::Io { path: p(), source })?;
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| DeviceKeyError::Malformed {
            path: p(),
            why: e.to_string(),
        })?;
        Ok(DeviceKey { key })
    }

    /// The public half, as the tracker records it and peers pin it.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Sign `msg` with the device key (for authenticating this daemon to others, e.g. the
    /// tracker). Callers must put a domain-separation prefix of their own in `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// PKCS#8 DER of the private key (what rustls loads as the TLS signing key).
    pub(crate) fn pkcs8_der(&self) -> Vec<u8> {
        self.key
            .to_pkcs8_der()
            .expect("an Ed25519 key always encodes")
            .as_bytes()
            .to_vec()
    }

    /// SubjectPublicKeyInfo DER of the public key (the "certificate" of a raw-public-key TLS
    /// handshake, RFC 7250).
    pub(crate) fn spki_der(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_public_key_der()
            .expect("an Ed25519 key always encodes")
            .into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let a = DeviceKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(DEVICE_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = DeviceKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_bytes(), b.public_bytes());
    }

    #[test]
    fn refuses_links_open_modes_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        let path = dir.path().join(DEVICE_KEY_FILE);
        // A dangling link planted where the key goes: never followed, never created through.
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = DeviceKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(e, DeviceKeyError::Symlink { .. }), "{e}");
        assert!(!target.exists(), "the key was written through the link");
        std::fs::remove_file(&path).unwrap();

        DeviceKey::load_or_create(dir.path()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = DeviceKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(e, DeviceKeyError::TooOpen { .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key").unwrap();
        let e = DeviceKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(e, DeviceKeyError::Malformed { .. }), "{e}");
    }

    #[test]
    fn signatures_verify_with_the_public_half() {
        use ed25519_dalek::Verifier;
        let k = DeviceKey::generate();
        let sig = k.sign(b"ctx\0hello");
        k.verifying_key()
            .verify(b"ctx\0hello", &ed25519_dalek::Signature::from_bytes(&sig))
            .unwrap();
    }
}

//! Checks on the local directories that must belong to one user alone: the control socket's
//! directory (both minitorrd and minitorrctl check it) and minitorrd's state directory.
//!
//! Not wire protocol, but shared by the daemon and the CLI, which must apply the *same* rule
//! (one side accepting what the other refuses would be a confusing failure), so it lives here
//! next to [`crate::defaults`], which names these directories.
//!
//! The rule: the directory itself (never a symbolic link to one) is owned by the expected uid
//! and grants nothing to group or others (`mode & 0o077 == 0`, i.e. 0700 or stricter). Only
//! the last component is checked: a parent such as `/tmp` is shared by design, and its sticky
//! bit keeps other users from renaming our directory away.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PrivateDirError {
    #[error("{dir} is a symbolic link; it must be a real directory owned by you with mode 0700 (remove it)")]
    Symlink { dir: PathBuf },
    #[error("{dir} is not a directory")]
    NotADirectory { dir: PathBuf },
    #[error("{dir} is owned by uid {owner}, not by you (uid {expected}); someone else may have planted it — remove it or use another directory")]
    WrongOwner {
        dir: PathBuf,
        owner: u32,
        expected: u32,
    },
    #[error(
        "{dir} has mode {mode:04o}, which lets other users in; it must be 0700 (chmod 700 {dir})"
    )]
    TooOpen { dir: PathBuf, mode: u32 },
    #[error("cannot check {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
}

/// The effective uid of this process: who files we create belong to.
pub fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `Ok` if `dir` is a directory (not a symlink) owned by `expected_uid` with no group/other bits.
pub fn check_private_dir(dir: &Path, expected_uid: u32) -> Result<(), PrivateDirError> {
    let md = std::fs::symlink_metadata(dir).map_err(|source| PrivateDirError::Io {
        dir: dir.to_path_buf(),
        source,
    })?;
    let dir = dir.to_path_buf();
    if md.file_type().is_symlink() {
        return Err(PrivateDirError::Symlink { dir });
    }
    if !md.is_dir() {
        return Err(PrivateDirError::NotADirectory { dir });
    }
    if md.uid() != expected_uid {
        return Err(PrivateDirError::WrongOwner {
            dir,
            owner: md.uid(),
            expected: expected_uid,
        });
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PrivateDirError::TooOpen { dir, mode });
    }
    Ok(())
}

/// Create `dir` (and missing parents) with mode 0700 if it does not exist, then check it as
/// [`check_private_dir`] does for our own uid. `mkdir` never follows a symlink planted at the
/// name (it fails with EEXIST), and the check that follows looks at the entry itself, so a
/// planted link or another user's directory is refused, never used.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PrivateDirError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        // A planted symlink to a non-directory: the check below names the problem.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(PrivateDirError::Io {
                dir: dir.to_path_buf(),
                source,
            })
        }
    }
    check_private_dir(dir, own_uid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_dirs_pass_and_open_or_linked_ones_do_not() {
        let t = tempfile::tempdir().unwrap();
        let me = own_uid();
        let d = t.path().join("run");
        ensure_private_dir(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        check_private_dir(&d, me).unwrap();
        assert!(matches!(
            check_private_dir(&d, me + 1),
            Err(PrivateDirError::WrongOwner { .. })
        ));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        let e = check_private_dir(&d, me).unwrap_err();
        assert!(e.to_string().contains("0750"), "{e}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();

        let link = t.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(matches!(
            ensure_private_dir(&link),
            Err(PrivateDirError::Symlink { .. })
        ));
        let file = t.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            ensure_private_dir(&file),
            Err(PrivateDirError::NotADirectory { .. })
        ));
    }
}

//! Where a download lands, decided the way `cp` decides it — before anything is fetched.
//!
//! [`resolve`] is pure: it sees the file system only through a [`Probe`], so every form is
//! unit-tested without touching a disk. The rules (docs/DOWNLOADS.md, "Destinations"):
//!
//! * an existing directory (named with or without a trailing `/`) receives the file inside it,
//!   under the file's own name;
//! * a path ending in `/` names a directory; if it is missing it is created — only that last
//!   level, like `mkdir` without `-p`: its parent must exist (a typo two levels up is refused
//!   instead of growing a tree);
//! * any other path names the file itself; its parent directory must exist;
//! * a missing or non-directory parent is refused up front (nothing is fetched);
//! * an existing regular file at the final name is never overwritten: the caller compares it
//!   with the tracker's file (size, then piece and whole-file SHA1) and reports an identical
//!   one as already complete, a different one as a clear error;
//! * anything else at the final name (a directory, a symlink — even dangling —, a FIFO) is
//!   refused.
//!
//! What is resolved here is checked again, on handles, by [`super::storage`] (the directory is
//! opened `O_NOFOLLOW` and must be ours; the part file and the final link never follow a link):
//! this module decides, storage enforces.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// What is at a path, as far as the destination rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    Dir,
    File,
    /// A symlink (when not followed), FIFO, socket, device…
    Other,
}

/// The file system as [`resolve`] sees it.
pub trait Probe {
    /// What `path` is, following symlinks (a user may name their directory through a link of
    /// their own; storage then opens its real path).
    fn follow(&self, path: &Path) -> Kind;
    /// What the entry at `path` itself is (a symlink is `Other`, never followed).
    fn entry(&self, path: &Path) -> Kind;
}

/// The real file system.
pub struct Disk;

impl Probe for Disk {
    fn follow(&self, path: &Path) -> Kind {
        // Without a trailing slash: `file/` is a file here (then refused as not a directory),
        // not a missing directory to create.
        let plain: PathBuf = path.components().collect();
        kind_of(std::fs::metadata(plain))
    }
    fn entry(&self, path: &Path) -> Kind {
        kind_of(std::fs::symlink_metadata(path))
    }
}

fn kind_of(md: std::io::Result<std::fs::Metadata>) -> Kind {
    match md {
        Ok(m) if m.is_dir() => Kind::Dir,
        Ok(m) if m.is_file() => Kind::File,
        Ok(_) => Kind::Other,
        Err(_) => Kind::Missing,
    }
}

/// The outcome: the directory the file goes into and the name it gets there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub dir: PathBuf,
    pub name: OsString,
    /// `dir` does not exist yet and is to be created (one level; its parent exists).
    pub create_dir: bool,
    /// A regular file already sits at `dir/name`: compare before doing anything else.
    pub existing_file: bool,
}

impl Resolved {
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DestError {
    #[error("destination {0} is not absolute")]
    NotAbsolute(PathBuf),
    #[error("destination directory {dir} does not exist; create it first (mkdir -p), or end the destination with / to have download_file create its last directory")]
    NoParent { dir: PathBuf },
    #[error("cannot create {dir}: its parent {parent} does not exist; download_file creates only the last directory of a destination ending in / (like mkdir without -p): create the parents first (mkdir -p {parent})")]
    NoGrandparent { dir: PathBuf, parent: PathBuf },
    #[error("destination {0} is not a directory")]
    NotADir(PathBuf),
    #[error("destination {0} is a directory inside the destination; not replacing it")]
    DirInTheWay(PathBuf),
    #[error("{0} already exists and is not a regular file; not overwriting it")]
    OtherInTheWay(PathBuf),
}

/// Decide where `file` goes for the destination `dest` the user gave (absolute; a trailing
/// `/` is meaningful and must have been kept by the CLI).
pub fn resolve(dest: &Path, file: &str, fs: &dyn Probe) -> Result<Resolved, DestError> {
    if !dest.is_absolute() {
        return Err(DestError::NotAbsolute(dest.to_path_buf()));
    }
    let bytes = dest.as_os_str().as_bytes();
    // `dir/`, `dir/.`, `dir/..` and `/` all name a directory.
    let names_dir = bytes.ends_with(b"/")
        || matches!(
            dest.components().next_back(),
            Some(Component::CurDir | Component::ParentDir | Component::RootDir)
        )
        || bytes.ends_with(b"/.");
    let (dir, name, create_dir) = match fs.follow(dest) {
        Kind::Dir => (dest.to_path_buf(), OsString::from(file), false),
        Kind::Missing if names_dir => {
            let parent = parent_of(dest);
            match fs.follow(&parent) {
                Kind::Dir => (dest.to_path_buf(), OsString::from(file), true),
                Kind::Missing => {
                    return Err(DestError::NoGrandparent {
                        dir: dest.to_path_buf(),
                        parent,
                    })
                }
                _ => return Err(DestError::NotADir(parent)),
            }
        }
        _ if names_dir => return Err(DestError::NotADir(dest.to_path_buf())),
        _ => {
            let parent = parent_of(dest);
            let name = dest
                .file_name()
                .expect("not a directory form")
                .to_os_string();
            match fs.follow(&parent) {
                Kind::Dir => (parent, name, false),
                Kind::Missing => return Err(DestError::NoParent { dir: parent }),
                _ => return Err(DestError::NotADir(parent)),
            }
        }
    };
    let resolved = Resolved {
        dir,
        name,
        create_dir,
        existing_file: false,
    };
    if create_dir {
        return Ok(resolved);
    }
    let target = resolved.path();
    match fs.entry(&target) {
        Kind::Missing => Ok(resolved),
        Kind::File => Ok(Resolved {
            existing_file: true,
            ..resolved
        }),
        Kind::Dir => Err(DestError::DirInTheWay(target)),
        Kind::Other => Err(DestError::OtherInTheWay(target)),
    }
}

/// The directory containing `path` (`/` for `/x`), ignoring a trailing slash.
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A file system of a few paths; anything not listed is missing. Entries listed as
    /// `Link(target)` are symlinks: `follow` goes through them, `entry` sees `Other`.
    #[derive(Default)]
    struct Fake(HashMap<PathBuf, Kind>, HashMap<PathBuf, PathBuf>);

    impl Fake {
        fn with(mut self, p: &str, k: Kind) -> Self {
            self.0.insert(p.into(), k);
            self
        }
        fn link(mut self, p: &str, to: &str) -> Self {
            self.1.insert(p.into(), to.into());
            self
        }
    }

    impl Probe for Fake {
        fn follow(&self, path: &Path) -> Kind {
            // Paths with a trailing slash or `.` are the same entry as without.
            let p: PathBuf = path.components().collect();
            match self.1.get(&p) {
                Some(to) => self.follow(to),
                None => *self.0.get(&p).unwrap_or(&Kind::Missing),
            }
        }
        fn entry(&self, path: &Path) -> Kind {
            let p: PathBuf = path.components().collect();
            if self.1.contains_key(&p) {
                return Kind::Other;
            }
            *self.0.get(&p).unwrap_or(&Kind::Missing)
        }
    }

    fn fs() -> Fake {
        Fake::default()
            .with("/", Kind::Dir)
            .with("/home", Kind::Dir)
            .with("/home/a", Kind::Dir)
            .with("/home/a/dl", Kind::Dir)
            .with("/home/a/dl/f.iso", Kind::File)
            .with("/home/a/dl/sub", Kind::Dir)
            .with("/home/a/notes.txt", Kind::File)
            .with("/home/a/fifo", Kind::Other)
            .link("/home/a/dl-link", "/home/a/dl")
            .link("/home/a/dangling", "/nowhere")
    }

    fn ok(dest: &str, file: &str) -> Resolved {
        resolve(Path::new(dest), file, &fs()).unwrap()
    }

    fn err(dest: &str, file: &str) -> DestError {
        resolve(Path::new(dest), file, &fs()).unwrap_err()
    }

    fn at(dir: &str, name: &str, create_dir: bool, existing_file: bool) -> Resolved {
        Resolved {
            dir: dir.into(),
            name: name.into(),
            create_dir,
            existing_file,
        }
    }

    #[test]
    fn an_existing_directory_receives_the_file_inside_it() {
        assert_eq!(
            ok("/home/a/dl", "x.iso"),
            at("/home/a/dl", "x.iso", false, false)
        );
        assert_eq!(
            ok("/home/a/dl/", "x.iso"),
            at("/home/a/dl/", "x.iso", false, false)
        );
        assert_eq!(
            ok("/home/a/dl/.", "x.iso").path(),
            Path::new("/home/a/dl/x.iso")
        );
        assert_eq!(ok("/", "x.iso").path(), Path::new("/x.iso"));
        // Through the user's own link: resolved here, opened by its real path later.
        assert_eq!(ok("/home/a/dl-link", "x.iso").name, "x.iso");
        assert_eq!(ok("/home/a/dl-link/", "x.iso").name, "x.iso");
    }

    #[test]
    fn a_trailing_slash_names_a_directory_created_one_level_deep() {
        assert_eq!(
            ok("/home/a/reports/", "x.iso"),
            at("/home/a/reports/", "x.iso", true, false)
        );
        let e = err("/home/a/no/reports/", "x.iso");
        assert!(matches!(e, DestError::NoGrandparent { .. }), "{e}");
        assert!(e.to_string().contains("mkdir -p /home/a/no"), "{e}");
        // `file/` is not a directory, nor is a path under a file.
        assert_eq!(
            err("/home/a/notes.txt/", "x"),
            DestError::NotADir("/home/a/notes.txt/".into())
        );
        assert_eq!(
            err("/home/a/notes.txt/new/", "x"),
            DestError::NotADir("/home/a/notes.txt".into())
        );
        // `missing/.` and `missing/..` are not created.
        assert!(matches!(
            err("/home/a/missing/..", "x"),
            DestError::NoGrandparent { .. } | DestError::NotADir(_)
        ));
    }

    #[test]
    fn a_plain_path_names_the_file_and_its_parent_must_exist() {
        assert_eq!(
            ok("/home/a/dl/new.iso", "x.iso"),
            at("/home/a/dl", "new.iso", false, false)
        );
        // Without a slash a missing name is a file name, as with cp.
        assert_eq!(
            ok("/home/a/reports", "x.iso"),
            at("/home/a", "reports", false, false)
        );
        let e = err("/home/a/nope/new.iso", "x.iso");
        assert_eq!(
            e,
            DestError::NoParent {
                dir: "/home/a/nope".into()
            }
        );
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert_eq!(
            err("/home/a/notes.txt/new.iso", "x"),
            DestError::NotADir("/home/a/notes.txt".into())
        );
    }

    #[test]
    fn what_sits_at_the_final_name_decides() {
        // A regular file: the caller compares contents.
        assert_eq!(
            ok("/home/a/dl", "f.iso"),
            at("/home/a/dl", "f.iso", false, true)
        );
        assert_eq!(
            ok("/home/a/dl/f.iso", "other"),
            at("/home/a/dl", "f.iso", false, true)
        );
        assert_eq!(
            err("/home/a/dl", "sub"),
            DestError::DirInTheWay("/home/a/dl/sub".into())
        );
        assert_eq!(
            err("/home/a/fifo", "x"),
            DestError::OtherInTheWay("/home/a/fifo".into())
        );
        // A symlink at the final name is never followed, dangling or not.
        assert_eq!(
            err("/home/a/dangling", "x"),
            DestError::OtherInTheWay("/home/a/dangling".into())
        );
    }

    #[test]
    fn relative_destinations_are_refused() {
        assert!(matches!(err("dl/", "x"), DestError::NotAbsolute(_)));
    }
}

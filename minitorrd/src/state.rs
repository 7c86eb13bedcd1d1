//! What the daemon remembers across logout/login and restarts, per user: the files it shares
//! and the downloads it runs. Saved as JSON with write-to-temp + fsync + rename, so a crash
//! leaves either the old or the new state, never a torn file.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use minitorr_proto::types::FileMeta;

use crate::sharing::hasher::FileStamp;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateFile {
    pub users: BTreeMap<String, UserState>,
    /// "User X logged in on this device": after a restart the daemon logs X back in with its
    /// device key (never a stored password). Cleared by logout or a refused device login.
    #[serde(default)]
    pub auto_login: Option<String>,
    /// Why the automatic login ended (revoked, logged out), shown by `status` after a restart.
    #[serde(default)]
    pub auto_login_ended: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserState {
    pub shares: Vec<ShareRecord>,
    pub downloads: Vec<DownloadRecord>,
}

/// A complete file shared from disk (uploaded, or a finished download).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareRecord {
    pub group: String,
    pub path: PathBuf,
    pub stamp: FileStamp,
    /// Shared with the download it came from and the served share (`Arc`): a 100,000-file
    /// tree's listing is ~10 MB and is held once (serialised as a plain `FileMeta`).
    pub meta: Arc<FileMeta>,
    /// Set while the file is withdrawn from the tracker because it changed or vanished on
    /// disk; cleared when it is offered again (it came back with the shared content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<Withdrawn>,
    /// For a shared tree (`meta.tree` set; `path` is its root directory and `stamp` the
    /// root's): every file in layout order, its path on disk under the root and its stamp.
    /// Any file no longer matching withdraws the whole item.
    /// (An `Arc`: the share watcher copies the records every sweep.)
    #[serde(default, skip_serializing_if = "no_files")]
    pub tree_files: Arc<Vec<crate::storage::walk::SharedTreeFile>>,
}

fn no_files(f: &Arc<Vec<crate::storage::walk::SharedTreeFile>>) -> bool {
    f.is_empty()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Withdrawn {
    Changed,
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordState {
    Downloading,
    Complete,
    Failed,
    /// Stopped by `pause`; stays paused across restarts until `resume`.
    Paused,
    /// Waiting for a slot (`max_active_downloads`); started by the queue, also after a restart.
    Queued,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownloadRecord {
    pub group: String,
    pub dest: PathBuf,
    /// The running download's own `Arc` (see [`ShareRecord::meta`]).
    pub meta: Arc<FileMeta>,
    pub state: RecordState,
    pub error: Option<String>,
    /// Verified bytes and pieces when the download last stopped (shown for paused entries;
    /// the part file is re-verified when it resumes, so this is display only).
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub pieces_done: u32,
    /// A selective download's `--only` patterns (empty: the whole item).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
}

impl StateFile {
    pub fn load(path: &Path) -> io::Result<StateFile> {
        match File::open(path) {
            Ok(f) => {
                // Read through a buffer, not into one `Vec` first (tens of MB for a
                // 100,000-file tree, on top of the records being built from it).
                let r = io::BufReader::with_capacity(256 * 1024, f);
                let mut state: StateFile = serde_json::from_reader(r).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                state.normalize_names();
                state.share_listings();
                Ok(state)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StateFile::default()),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        {
            // 0600, and never through a link planted at the temp name (the state dir is
            // checked to be ours and 0700 at startup; this holds even if it were not).
            let f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&tmp)?;
            // Streamed, not built in memory first: a record of a 100,000-file tree is tens of
            // MB of JSON, and a `to_vec` buffer (doubling as it grows) was the downloading
            // daemon's peak RSS when the tree completed (bench/run.py tree scenario).
            let mut w = io::BufWriter::with_capacity(256 * 1024, f);
            serde_json::to_writer(&mut w, self).map_err(io::Error::other)?;
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Shared names are NFC since names were normalised; a state file written before may hold
    /// an NFD name (a file uploaded from its NFD path). Re-sharing it under the NFC form keeps
    /// the local registry's key equal to the tracker's (the files on disk keep their names).
    fn normalize_names(&mut self) {
        for u in self.users.values_mut() {
            let metas = u
                .shares
                .iter_mut()
                .map(|s| &mut s.meta)
                .chain(u.downloads.iter_mut().map(|d| &mut d.meta));
            for meta in metas {
                let nfc = minitorr_proto::names::nfc(&meta.name);
                if nfc != meta.name {
                    Arc::make_mut(meta).name = nfc;
                }
            }
        }
    }

    /// A finished download and the share it became name the same item: after loading they
    /// hold one listing again (serde reads each `Arc` as its own copy), not two.
    fn share_listings(&mut self) {
        for u in self.users.values_mut() {
            let shared: std::collections::HashMap<(&str, &str), &Arc<FileMeta>> = u
                .shares
                .iter()
                .map(|s| ((s.group.as_str(), s.meta.name.as_str()), &s.meta))
                .collect();
            for d in &mut u.downloads {
                if let Some(m) = shared.get(&(d.group.as_str(), d.meta.name.as_str())) {
                    if m.sha1 == d.meta.sha1 {
                        d.meta = Arc::clone(m);
                    }
                }
            }
        }
    }

    pub fn user(&mut self, user: &str) -> &mut UserState {
        self.users.entry(user.to_string()).or_default()
    }
}

impl UserState {
    pub fn upsert_share(&mut self, rec: ShareRecord) {
        self.shares
            .retain(|s| !(s.group == rec.group && s.meta.name == rec.meta.name));
        self.shares.push(rec);
    }

    pub fn remove_share(&mut self, group: &str, file: &str) -> bool {
        let before = self.shares.len();
        self.shares
            .retain(|s| !(s.group == group && s.meta.name == file));
        before != self.shares.len()
    }

    pub fn upsert_download(&mut self, rec: DownloadRecord) {
        self.downloads.retain(|d| d.dest != rec.dest);
        self.downloads.push(rec);
    }

    /// Forget the download to `dest` (cancel, remove).
    pub fn remove_download(&mut self, dest: &Path) -> bool {
        let before = self.downloads.len();
        self.downloads.retain(|d| d.dest != dest);
        before != self.downloads.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minitorr_proto::types::Sha1Hash;

    #[test]
    fn a_state_larger_than_the_write_buffer_is_saved_whole() {
        // save() streams through a 256 KiB buffer: a state of several buffers' worth must
        // come out byte for byte as the in-memory serialisation, and load back.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut st = StateFile::default();
        for i in 0..5000u32 {
            st.user("alice").upsert_share(ShareRecord {
                group: "g1".into(),
                path: format!("/data/some/longer/directory/name/file-{i:06}.bin").into(),
                stamp: FileStamp {
                    size: u64::from(i),
                    mtime_ns: 5,
                    dev: 0,
                    ino: u64::from(i),
                },
                meta: Arc::new(FileMeta {
                    name: format!("file-{i:06}.bin"),
                    size: u64::from(i),
                    piece_size: 16384,
                    sha1: Sha1Hash([3; 20]),
                    pieces: vec![Sha1Hash([4; 20])],
                    tree: None,
                }),
                withdrawn: None,
                tree_files: Default::default(),
            });
        }
        st.save(&path).unwrap();
        let on_disk = fs::read(&path).unwrap();
        assert!(
            on_disk.len() > 3 * 256 * 1024,
            "only {} bytes",
            on_disk.len()
        );
        assert_eq!(on_disk, serde_json::to_vec(&st).unwrap());
        assert_eq!(
            StateFile::load(&path).unwrap().users["alice"].shares.len(),
            5000
        );
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn save_and_load_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(StateFile::load(&path).unwrap().users.is_empty());
        let mut st = StateFile::default();
        let meta = FileMeta {
            name: "a".into(),
            size: 1,
            piece_size: 16384,
            sha1: Sha1Hash([1; 20]),
            pieces: vec![Sha1Hash([2; 20])],
            tree: None,
        };
        st.user("alice").upsert_share(ShareRecord {
            group: "g1".into(),
            path: "/x/a".into(),
            stamp: FileStamp {
                size: 1,
                mtime_ns: 5,
                dev: 0,
                ino: 0,
            },
            meta: meta.clone().into(),
            withdrawn: None,
            tree_files: Default::default(),
        });
        st.user("alice").upsert_share(ShareRecord {
            group: "g1".into(),
            path: "/y/a".into(),
            stamp: FileStamp {
                size: 1,
                mtime_ns: 6,
                dev: 0,
                ino: 0,
            },
            meta: meta.into(),
            withdrawn: None,
            tree_files: Default::default(),
        });
        st.save(&path).unwrap();
        let back = StateFile::load(&path).unwrap();
        assert_eq!(
            back.users["alice"].shares.len(),
            1,
            "same group+name replaces"
        );
        assert_eq!(back.users["alice"].shares[0].path, PathBuf::from("/y/a"));
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn a_finished_download_and_its_share_hold_one_listing_after_loading() {
        // The listing is written once per record, but loaded back as one `Arc` (a
        // 100,000-file tree's is ~10 MB); a tree file whose disk path is its item path does
        // not repeat it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let meta = Arc::new(FileMeta {
            name: "proj".into(),
            size: 1,
            piece_size: 16384,
            sha1: Sha1Hash([1; 20]),
            pieces: vec![Sha1Hash([2; 20])],
            tree: None,
        });
        let stamp = FileStamp {
            size: 1,
            mtime_ns: 5,
            dev: 0,
            ino: 0,
        };
        let mut st = StateFile::default();
        let u = st.user("alice");
        u.upsert_share(ShareRecord {
            group: "g1".into(),
            path: "/x/proj".into(),
            stamp,
            meta: meta.clone(),
            withdrawn: None,
            tree_files: Arc::new(vec![crate::storage::walk::SharedTreeFile {
                disk_path: String::new(),
                stamp,
            }]),
        });
        u.upsert_download(DownloadRecord {
            group: "g1".into(),
            dest: "/x/proj".into(),
            meta,
            state: RecordState::Complete,
            error: None,
            bytes_done: 1,
            pieces_done: 1,
            only: Vec::new(),
        });
        st.save(&path).unwrap();
        assert!(!fs::read_to_string(&path).unwrap().contains("disk_path"));
        let back = StateFile::load(&path).unwrap();
        let u = &back.users["alice"];
        assert!(Arc::ptr_eq(&u.shares[0].meta, &u.downloads[0].meta));
        assert_eq!(u.shares[0].tree_files[0].disk("a/b"), "a/b");
    }

    #[test]
    fn names_from_older_state_files_are_loaded_in_nfc() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut st = StateFile::default();
        st.user("alice").upsert_share(ShareRecord {
            group: "g1".into(),
            path: "/x/cafe\u{301}".into(),
            stamp: FileStamp {
                size: 1,
                mtime_ns: 5,
                dev: 0,
                ino: 0,
            },
            meta: Arc::new(FileMeta {
                name: "cafe\u{301}".into(),
                size: 1,
                piece_size: 16384,
                sha1: Sha1Hash([1; 20]),
                pieces: vec![Sha1Hash([2; 20])],
                tree: None,
            }),
            withdrawn: None,
            tree_files: Default::default(),
        });
        st.save(&path).unwrap();
        let back = StateFile::load(&path).unwrap();
        let rec = &back.users["alice"].shares[0];
        assert_eq!(rec.meta.name, "caf\u{e9}");
        assert_eq!(
            rec.path,
            PathBuf::from("/x/cafe\u{301}"),
            "the path is untouched"
        );
    }
}

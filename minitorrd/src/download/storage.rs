//! The partial file a download writes into: created next to the destination (same filesystem,
//! so finishing is a link, not a copy), preallocated to the exact size (disk-full shows up at
//! start, not at 90 %), written at piece offsets, and moved into place only after the
//! whole-file SHA1 (computed alongside by [`WholeFileHasher`]) matches.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use bytes::Bytes;

use sha1::{Digest, Sha1};

use minitorr_proto::types::{Bitfield, FileMeta, Sha1Hash};

use crate::sharing::hasher::sha1_of;

/// `dir/.name.minitorr-part`: hidden, and never mistaken for the finished file. A name too
/// long for that (file names may be 255 bytes, the file system's limit too) gets a shortened
/// prefix plus a hash of the whole name, so the part file is still unique and stable across
/// restarts (resume finds it again).
pub fn part_path_for(dest: &Path) -> PathBuf {
    const NAME_MAX: usize = 255;
    const SUFFIX: &str = ".minitorr-part";
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let plain = format!(".{name}{SUFFIX}");
    if plain.len() <= NAME_MAX {
        return dest.with_file_name(plain);
    }
    let tag = &sha1_of(name.as_bytes()).to_hex()[..16];
    let room = NAME_MAX - 1 - 1 - tag.len() - SUFFIX.len(); // ".", "~"
    let mut cut = room;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    dest.with_file_name(format!(".{}~{tag}{SUFFIX}", &name[..cut]))
}

pub struct PartFile {
    file: File,
    /// Writers take turns: concurrent pwrites to one file only contend on the inode lock in
    /// the kernel (spinning there cost ~6 % CPU in profiles); hashing stays parallel.
    write_turn: std::sync::Mutex<()>,
    path: PathBuf,
    meta: Arc<FileMeta>,
}

impl PartFile {
    /// Open the partial file, creating and preallocating it if needed. Returns whether it existed
    /// (then its pieces must be re-verified before use).
    pub fn open(path: &Path, meta: Arc<FileMeta>) -> io::Result<(PartFile, bool)> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() != meta.size {
            file.set_len(0)?;
            preallocate(&file, meta.size)?;
        }
        Ok((
            PartFile {
                file,
                write_turn: std::sync::Mutex::new(()),
                path: path.to_path_buf(),
                meta,
            },
            existed,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_piece(&self, piece: u32, data: &[u8]) -> io::Result<()> {
        let _turn = self.write_turn.lock().unwrap_or_else(|e| e.into_inner());
        self.file.write_all_at(data, self.meta.piece_offset(piece))
    }

    pub fn read_piece(&self, piece: u32, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.resize(self.meta.piece_len(piece) as usize, 0);
        self.file.read_exact_at(buf, self.meta.piece_offset(piece))
    }

    /// Re-verify every piece on disk (resume after a crash): only pieces whose hash matches count.
    pub fn scan(&self) -> io::Result<Bitfield> {
        let mut have = Bitfield::new(self.meta.piece_count());
        let mut buf = Vec::new();
        for i in 0..self.meta.piece_count() {
            self.read_piece(i, &mut buf)?;
            if sha1_of(&buf) == self.meta.pieces[i as usize] {
                have.set(i);
            }
        }
        Ok(have)
    }

    /// Move into place without ever replacing an existing file. Not fsynced here: flushing a
    /// large file waits for the disk (1.7 s per GiB on our CI disks), so it happens after the
    /// download is reported complete ([`sync_to_disk`]) and before the completion is recorded
    /// in the state file; after a power loss in between, login re-verifies the file's SHA1.
    pub fn finish(&self, dest: &Path) -> io::Result<()> {
        std::fs::hard_link(&self.path, dest)?;
        std::fs::remove_file(&self.path)
    }
}

/// Flush a finished download and its directory entry to disk (blocking).
pub fn sync_to_disk(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_data()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn preallocate(file: &File, size: u64) -> io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    use nix::fcntl::{fallocate, FallocateFlags};
    use std::os::fd::AsRawFd;
    match fallocate(file.as_raw_fd(), FallocateFlags::empty(), 0, size as i64) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => file.set_len(size),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Messages to the whole-file hasher thread.
enum HashMsg {
    /// Piece verified; its bytes if still in memory (else they are read back from the file).
    Piece(u32, Option<Bytes>),
    /// Every piece has been sent: finish and return the digest.
    Finish,
}

/// Out-of-order pieces kept in memory at most; beyond this they are read back from disk.
const PENDING_BUDGET: usize = 8 * 1024 * 1024;

/// Computes the whole-file SHA1 on its own thread, in file order, while the download runs.
/// Verified pieces are handed over with their bytes (no second read in the common case); the
/// picker keeps completion close to file order, so little has to wait in memory.
pub struct WholeFileHasher {
    tx: mpsc::Sender<HashMsg>,
    /// Bytes handed over and not yet hashed or dropped. Checked when sending, so a hasher
    /// that falls behind (CPU contention) cannot make the channel grow without bound.
    pending: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<io::Result<Sha1Hash>>,
}

impl WholeFileHasher {
    pub fn start(part: Arc<PartFile>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let p = pending.clone();
        let handle = std::thread::Builder::new()
            .name("whole-sha1".into())
            .spawn(move || hash_in_order(&part, rx, &p))?;
        Ok(WholeFileHasher {
            tx,
            pending,
            handle,
        })
    }

    /// A verified piece. Its bytes are kept for the hasher while under the memory budget;
    /// beyond it the hasher reads the piece back from the part file when it gets there.
    pub fn piece(&self, piece: u32, data: Option<Bytes>) {
        let data = data.filter(|d| {
            let before = self.pending.fetch_add(d.len(), Ordering::AcqRel);
            if before + d.len() > PENDING_BUDGET {
                self.pending.fetch_sub(d.len(), Ordering::AcqRel);
                false
            } else {
                true
            }
        });
        let _ = self.tx.send(HashMsg::Piece(piece, data));
    }

    /// Wait for the digest (blocking: call from the blocking pool). All pieces must be sent.
    pub fn finish(self) -> io::Result<Sha1Hash> {
        let _ = self.tx.send(HashMsg::Finish);
        self.handle
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("whole-file hasher panicked")))
    }
}

fn hash_in_order(
    part: &PartFile,
    rx: mpsc::Receiver<HashMsg>,
    pending: &AtomicUsize,
) -> io::Result<Sha1Hash> {
    let n = part.meta.piece_count();
    let mut sha = Sha1::new();
    let mut next = 0u32;
    let mut waiting: BTreeMap<u32, Option<Bytes>> = BTreeMap::new();
    let mut buf = Vec::new();
    let mut finishing = false;
    loop {
        // Hash every consecutive piece we have.
        while let Some(data) = waiting.remove(&next) {
            match data {
                Some(d) => {
                    sha.update(&d);
                    pending.fetch_sub(d.len(), Ordering::AcqRel);
                }
                None => {
                    part.read_piece(next, &mut buf)?;
                    sha.update(&buf);
                }
            }
            next += 1;
        }
        if next == n {
            return Ok(Sha1Hash(sha.finalize().into()));
        }
        if finishing {
            return Err(io::Error::other(format!(
                "piece {next} never arrived at the whole-file hasher"
            )));
        }
        match rx.recv() {
            Ok(HashMsg::Piece(i, data)) if i >= next => {
                if let Some(Some(old)) = waiting.insert(i, data) {
                    pending.fetch_sub(old.len(), Ordering::AcqRel);
                }
            }
            Ok(HashMsg::Piece(_, data)) => {
                pending.fetch_sub(data.map_or(0, |d| d.len()), Ordering::AcqRel);
            }
            Ok(HashMsg::Finish) => finishing = true,
            Err(_) => return Err(io::Error::other("download stopped")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_for(data: &[u8], ps: u32) -> FileMeta {
        FileMeta {
            name: "f".into(),
            size: data.len() as u64,
            piece_size: ps,
            sha1: sha1_of(data),
            pieces: data.chunks(ps as usize).map(sha1_of).collect(),
        }
    }

    #[test]
    fn out_of_order_writes_resume_scan_and_finish() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let meta = Arc::new(meta_for(&data, 16 * 1024));
        let dest = dir.path().join("f");
        let pp = part_path_for(&dest);
        let (part, existed) = PartFile::open(&pp, meta.clone()).unwrap();
        assert!(!existed);
        assert_eq!(
            std::fs::metadata(&pp).unwrap().len(),
            data.len() as u64,
            "exact size, no padding"
        );
        for i in [6u32, 0, 3] {
            let s = meta.piece_offset(i) as usize;
            part.write_piece(i, &data[s..s + meta.piece_len(i) as usize])
                .unwrap();
        }
        drop(part);
        // Reopen as after a crash: exactly the written pieces verify.
        let (part, existed) = PartFile::open(&pp, meta.clone()).unwrap();
        assert!(existed);
        let have = part.scan().unwrap();
        assert_eq!(have.iter_set().collect::<Vec<_>>(), vec![0, 3, 6]);
        for i in 0..meta.piece_count() {
            let s = meta.piece_offset(i) as usize;
            part.write_piece(i, &data[s..s + meta.piece_len(i) as usize])
                .unwrap();
        }
        let part = Arc::new(part);
        let hasher = WholeFileHasher::start(part.clone()).unwrap();
        // Out of order, some with bytes and some to be read back from disk.
        for i in (0..meta.piece_count()).rev() {
            let s = meta.piece_offset(i) as usize;
            let bytes = (i % 2 == 0)
                .then(|| Bytes::copy_from_slice(&data[s..s + meta.piece_len(i) as usize]));
            hasher.piece(i, bytes);
        }
        assert_eq!(hasher.finish().unwrap(), meta.sha1);
        part.finish(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert!(!pp.exists());
    }

    #[test]
    fn part_names_stay_within_name_max_and_distinct() {
        let long_a = format!("{}a.bin", "é".repeat(125));
        let long_b = format!("{}b.bin", "é".repeat(125));
        assert!(long_a.len() <= 255);
        let pa = part_path_for(&Path::new("/d").join(&long_a));
        let pb = part_path_for(&Path::new("/d").join(&long_b));
        for p in [&pa, &pb] {
            let n = p.file_name().unwrap().to_str().unwrap();
            assert!(
                n.len() <= 255 && n.starts_with('.') && n.ends_with(".minitorr-part"),
                "{n}"
            );
        }
        assert_ne!(pa, pb);
        assert_eq!(pa, part_path_for(&Path::new("/d").join(&long_a)), "stable");
        assert_eq!(
            part_path_for(Path::new("/d/x.iso")),
            Path::new("/d/.x.iso.minitorr-part")
        );
    }

    #[test]
    fn finish_never_overwrites_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(meta_for(b"hello", 16 * 1024));
        let dest = dir.path().join("f");
        std::fs::write(&dest, b"mine").unwrap();
        let (part, _) = PartFile::open(&part_path_for(&dest), meta).unwrap();
        assert!(part.finish(&dest).is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"mine");
    }
}

//! Hashing a file for sharing: one sequential read, whole-file SHA1 and piece SHA1s computed at
//! once on their own threads from the same buffers (SHA1 runs ~1.5 GB/s per core, so two passes on
//! one core would double the time to share).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use minitorr_proto::types::{FileMeta, Sha1Hash};

/// Size, modification time and identity (device, inode): cheap evidence that a shared file is
/// unchanged *and is still the same file* — a path swapped for another file or a symlink to
/// one (say, a secret of ours) never matches, so it is re-hashed, not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    /// 0 in state files written before identity was recorded: such a stamp never matches, so
    /// the file is re-hashed once at the next login and the new stamp saved.
    #[serde(default)]
    pub dev: u64,
    #[serde(default)]
    pub ino: u64,
}

impl FileStamp {
    /// Stamp of the entry at `path` itself (a symlink is stamped as a link, never followed).
    pub fn of(path: &Path) -> io::Result<FileStamp> {
        Ok(Self::from_metadata(&std::fs::symlink_metadata(path)?))
    }

    pub fn of_file(file: &File) -> io::Result<FileStamp> {
        Ok(Self::from_metadata(&file.metadata()?))
    }

    fn from_metadata(md: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            size: md.len(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            dev: md.dev(),
            ino: md.ino(),
        }
    }
}

/// Open a file we share without following a symlink at its last component, and check it is a
/// regular file. (The user named the path when sharing; what sits there later may have been
/// swapped by someone who can write into its directory.)
pub fn open_shared(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                io::Error::other(format!(
                    "{} is now a symbolic link; not following it",
                    path.display()
                ))
            } else {
                e
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

/// O_NOFOLLOW | O_NONBLOCK (a FIFO planted at the name must not hang the open).
fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32
}

pub fn sha1_of(data: &[u8]) -> Sha1Hash {
    Sha1Hash(Sha1::digest(data).into())
}

/// A read buffer that returns itself to the pool when the last user drops it.
struct PooledBuf {
    data: Vec<u8>,
    home: mpsc::Sender<Vec<u8>>,
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let _ = self.home.send(std::mem::take(&mut self.data));
    }
}

/// Read up to `buf.len()` bytes, stopping early only at EOF.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Hash `path` as file `name` with `piece_size` pieces. Blocking: run it on the blocking pool.
pub fn hash_file(path: &Path, name: &str, piece_size: u32) -> io::Result<(FileMeta, FileStamp)> {
    let started = std::time::Instant::now();
    let hashed = hash_file_inner(path, name, piece_size);
    if hashed.is_ok() {
        crate::metrics::global().hashed(crate::metrics::Hashing::Share, started.elapsed());
    }
    hashed
}

fn hash_file_inner(path: &Path, name: &str, piece_size: u32) -> io::Result<(FileMeta, FileStamp)> {
    let file = open_shared(path)?;
    let stamp_before = FileStamp::of_file(&file)?;
    let (whole, pieces, size) = hash_open_file(file, piece_size)?;
    // The path must still name the file we read (same inode, unchanged).
    let stamp_after = FileStamp::of(path)?;
    if stamp_after != stamp_before || size != stamp_after.size {
        return Err(io::Error::other(
            "file changed while it was being hashed; try again",
        ));
    }
    let meta = FileMeta {
        name: name.to_string(),
        size,
        piece_size,
        sha1: whole,
        pieces,
        tree: None,
    };
    Ok((meta, stamp_after))
}

/// Files at most this big are hashed on the calling thread (a tree of 10,000 small files
/// must not start 30,000 threads); bigger ones get the reader + two hasher threads.
const INLINE_HASH_MAX: u64 = 4 * 1024 * 1024;

/// Whole-file SHA1, piece SHA1s and size of an open file, in one streaming pass.
pub fn hash_open_file(
    mut file: File,
    piece_size: u32,
) -> io::Result<(Sha1Hash, Vec<Sha1Hash>, u64)> {
    let ps = piece_size as usize;
    if file.metadata()?.len() <= INLINE_HASH_MAX {
        let mut data = Vec::new();
        // One byte more than the limit: a file that grew meanwhile is caught by the caller's
        // stamp check, not silently truncated.
        (&mut file)
            .take(INLINE_HASH_MAX + 1)
            .read_to_end(&mut data)?;
        let pieces = data.chunks(ps).map(sha1_of).collect();
        return Ok((sha1_of(&data), pieces, data.len() as u64));
    }
    let chunk = ps * (4 * 1024 * 1024 / ps).max(1);
    const BUFFERS: usize = 4;

    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..BUFFERS {
        free_tx.send(vec![0u8; chunk]).expect("receiver alive");
    }
    let (piece_tx, piece_rx) = mpsc::sync_channel::<Arc<PooledBuf>>(BUFFERS);
    let (whole_tx, whole_rx) = mpsc::sync_channel::<Arc<PooledBuf>>(BUFFERS);

    // Three threads: a reader (the copy out of the page cache), the whole-file SHA1 and the
    // piece SHA1s, each buffer shared by both hashers and recycled once both are done.
    std::thread::scope(|s| -> io::Result<_> {
        let piece_hasher = s.spawn(move || {
            let mut pieces = Vec::new();
            for buf in piece_rx {
                pieces.extend(buf.data.chunks(ps).map(sha1_of));
            }
            pieces
        });
        let reader = s.spawn(move || -> io::Result<u64> {
            let mut size = 0u64;
            loop {
                let mut data = free_rx.recv().expect("buffers always come back");
                data.resize(chunk, 0);
                let n = read_full(&mut file, &mut data)?;
                if n == 0 {
                    return Ok(size);
                }
                data.truncate(n);
                size += n as u64;
                let buf = Arc::new(PooledBuf {
                    data,
                    home: free_tx.clone(),
                });
                if piece_tx.send(buf.clone()).is_err() || whole_tx.send(buf).is_err() {
                    return Ok(size);
                }
                if n < chunk {
                    return Ok(size);
                }
            }
        });
        let mut whole = Sha1::new();
        for buf in whole_rx {
            whole.update(&buf.data);
        }
        let size = reader.join().expect("reader does not panic")?;
        let pieces = piece_hasher.join().expect("piece hasher does not panic");
        Ok((Sha1Hash(whole.finalize().into()), pieces, size))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn matches_independent_hashes_for_awkward_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0usize, 1, 16 * 1024, 16 * 1024 + 1, 5 * 1024 * 1024 + 7] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let p = dir.path().join(format!("f{size}"));
            File::create(&p).unwrap().write_all(&data).unwrap();
            let (meta, stamp) = hash_file(&p, "f", 16 * 1024).unwrap();
            assert_eq!(meta.size, size as u64);
            assert_eq!(stamp.size, size as u64);
            assert_eq!(meta.sha1, sha1_of(&data));
            let expect: Vec<_> = data.chunks(16 * 1024).map(sha1_of).collect();
            assert_eq!(meta.pieces, expect);
            meta.check().unwrap();
        }
    }
}

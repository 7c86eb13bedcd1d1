//! One seam for "piece bytes on disk", shared by the hasher, the part files of a download, the
//! share registry and the peer server (docs/DOWNLOADS.md, "Storage").
//!
//! An item is a sequence of pieces laid over one or more files ([`item::Layout`]: every file
//! starts a new piece, so a piece never spans two files). [`Storage`] owns that layout and a
//! [`FileSet`] — the open files behind it — and does every piece operation in terms of
//! (file, offset, length):
//! - [`SingleFile`]: one open file (a shared file, or a download's part file);
//! - [`tree::TreeFiles`]: a directory whose files are opened on demand, *relative to the
//!   directory's own handle* with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so a
//!   symlink planted anywhere in the tree (a file, a sub-directory) is never followed, and a
//!   bounded cache of open handles keeps a 100,000-file tree within a few hundred
//!   descriptors.
//!
//! A later on-disk layout (say, one sparse file per item with an index) is one more
//! [`FileSet`]; nothing above this module knows which one it talks to.

pub mod tree;
pub mod walk;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use minitorr_proto::item::{Layout, PieceLocation};
use minitorr_proto::types::{Bitfield, FileMeta};

/// The files behind an item's pieces. `i` is an index into [`Layout::files`].
pub trait FileSet: Send + Sync {
    /// An open handle on file `i` (read-only for shares, read-write for downloads).
    fn file(&self, i: usize) -> io::Result<Arc<File>>;
    /// True if file `i` is still the file that was shared (size, mtime, device, inode). A
    /// file set that does not know (a download's part files) says true.
    fn unchanged(&self, i: usize) -> bool;
    /// Flush written data to disk (blocking).
    fn flush(&self) -> io::Result<()>;
}

/// Pieces over files: the layout plus the files.
pub struct Storage {
    layout: Layout,
    files: Box<dyn FileSet>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("pieces", &self.layout.piece_count())
            .field("files", &self.layout.files().len())
            .finish()
    }
}

impl Storage {
    pub fn new(meta: &FileMeta, files: Box<dyn FileSet>) -> Storage {
        Storage {
            layout: Layout::new(meta),
            files,
        }
    }

    /// One open file holding every piece (a single-file item).
    pub fn single(meta: &FileMeta, file: File) -> Storage {
        Self::new(
            meta,
            Box::new(SingleFile {
                file: Arc::new(file),
            }),
        )
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn piece_count(&self) -> u32 {
        self.layout.piece_count()
    }

    /// Length of `piece` (0 past the end). O(log files).
    pub fn piece_len(&self, piece: u32) -> u32 {
        self.layout.piece_len(piece)
    }

    fn locate(&self, piece: u32) -> io::Result<PieceLocation> {
        self.layout.locate(piece).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("piece {piece} is past the end of the item"),
            )
        })
    }

    /// The open file holding `piece`, the piece's offset in it and its length (for
    /// zero-copy sends and page-cache reads).
    pub fn piece_file(&self, piece: u32) -> io::Result<(Arc<File>, u64, u32)> {
        let loc = self.locate(piece)?;
        Ok((self.files.file(loc.file)?, loc.offset, loc.len))
    }

    /// Read `piece` into `buf` (resized to the piece's length). Blocking.
    pub fn read_piece(&self, piece: u32, buf: &mut Vec<u8>) -> io::Result<()> {
        let (file, offset, len) = self.piece_file(piece)?;
        buf.resize(len as usize, 0);
        file.read_exact_at(buf, offset)
    }

    /// Write a whole piece. Blocking.
    pub fn write_piece(&self, piece: u32, data: &[u8]) -> io::Result<()> {
        let (file, offset, len) = self.piece_file(piece)?;
        if data.len() != len as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("piece {piece} is {len} bytes, not {}", data.len()),
            ));
        }
        file.write_all_at(data, offset)
    }

    pub fn flush(&self) -> io::Result<()> {
        self.files.flush()
    }

    /// The open handle on file `i` of the layout.
    pub fn layout_file(&self, i: usize) -> io::Result<Arc<File>> {
        self.files.file(i)
    }

    /// True if the file holding `piece` is still the one shared.
    pub fn piece_unchanged(&self, piece: u32) -> bool {
        self.layout
            .file_of_piece(piece)
            .is_some_and(|i| self.files.unchanged(i))
    }

    /// Whether every piece of file `i` is in `have` (an empty file always is).
    pub fn file_complete(&self, have: &Bitfield, i: usize) -> bool {
        self.layout.files()[i].pieces().all(|p| have.get(p))
    }

    /// Files whose every piece is in `have`.
    pub fn files_done(&self, have: &Bitfield) -> u32 {
        (0..self.layout.files().len())
            .filter(|&i| self.file_complete(have, i))
            .count() as u32
    }
}

/// One open file holding all the pieces.
pub struct SingleFile {
    file: Arc<File>,
}

impl SingleFile {
    pub fn new(file: File) -> SingleFile {
        SingleFile {
            file: Arc::new(file),
        }
    }
}

impl FileSet for SingleFile {
    fn file(&self, i: usize) -> io::Result<Arc<File>> {
        debug_assert_eq!(i, 0);
        Ok(self.file.clone())
    }
    fn unchanged(&self, _i: usize) -> bool {
        true
    }
    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharing::hasher::sha1_of;

    #[test]
    fn single_file_pieces_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let ps = 16 * 1024;
        let meta = FileMeta {
            name: "f".into(),
            size: data.len() as u64,
            piece_size: ps,
            sha1: sha1_of(&data),
            pieces: data.chunks(ps as usize).map(sha1_of).collect(),
            tree: None,
        };
        let p = dir.path().join("f");
        std::fs::write(&p, vec![0u8; data.len()]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let s = Storage::single(&meta, f);
        for i in (0..s.piece_count()).rev() {
            let off = i as usize * ps as usize;
            let end = (off + ps as usize).min(data.len());
            s.write_piece(i, &data[off..end]).unwrap();
        }
        assert!(s.write_piece(0, b"short").is_err());
        let mut buf = Vec::new();
        s.read_piece(3, &mut buf).unwrap();
        assert_eq!(buf, &data[3 * ps as usize..]);
        assert_eq!(std::fs::read(&p).unwrap(), data);
        assert!(s.read_piece(4, &mut buf).is_err());
    }
}

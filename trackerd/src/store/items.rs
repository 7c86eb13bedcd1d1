//! Items' directory trees in the database (issue #13; migration `20261201033001_items.sql`).
//!
//! A tree is kept in one TEXT column of its `files` row, one line per entry in canonical
//! order (`F <size> <sha1 hex> <path>` or `D <path>`), because it is immutable, always written
//! and read whole, and identified by its digest: a child table would cost 100,000 row inserts to
//! register a big tree and 100,000 row decodes to serve it, for no query anyone makes. Paths
//! never hold control characters ([`minitorr_proto::names`]), so a newline always ends an entry
//! and the text is readable in an operator's `sqlite3` or `psql`.

use std::fmt::Write as _;

use minitorr_proto::item::{EntryKind, Tree, TreeEntry};
use minitorr_proto::types::ItemListing;
use sqlx::Row;

use super::{to_u64, Result, Store, StoreError};

/// The column value for a tree (see the module comment).
pub(super) fn tree_to_text(tree: &Tree) -> String {
    let len: usize = tree.entries.iter().map(|e| e.path.len() + 64).sum();
    let mut s = String::with_capacity(len);
    for e in &tree.entries {
        match e.kind {
            EntryKind::File { size, sha1 } => {
                let _ = writeln!(s, "F {size} {} {}", sha1.to_hex(), e.path);
            }
            EntryKind::Dir => {
                let _ = writeln!(s, "D {}", e.path);
            }
        }
    }
    s
}

/// Parse what [`tree_to_text`] wrote; anything else is `Corrupt` (someone edited the row).
pub(super) fn tree_from_text(s: &str) -> Result<Tree> {
    let corrupt = |line: &str| StoreError::Corrupt(format!("tree entry {line:?}"));
    let mut entries = Vec::with_capacity(s.bytes().filter(|&b| b == b'\n').count());
    for line in s.split_terminator('\n') {
        let entry = match line.split_once(' ') {
            Some(("D", path)) if !path.is_empty() => TreeEntry::dir(path),
            Some(("F", rest)) => {
                let mut parts = rest.splitn(3, ' ');
                let (Some(size), Some(sha1), Some(path)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(corrupt(line));
                };
                let size = size.parse().map_err(|_| corrupt(line))?;
                let sha1 = sha1.parse().map_err(|_| corrupt(line))?;
                if path.is_empty() {
                    return Err(corrupt(line));
                }
                TreeEntry::file(path, size, sha1)
            }
            _ => return Err(corrupt(line)),
        };
        entries.push(entry);
    }
    Ok(Tree { entries })
}

/// The stored tree column (NULL for a single file) as a tree.
pub(super) fn tree_column(text: Option<String>) -> Result<Option<Tree>> {
    text.as_deref().map(tree_from_text).transpose()
}

impl Store {
    /// The listing of `group`'s item `name` (no piece hashes are read), if it has one.
    pub async fn item(&self, group: &str, name: &str) -> Result<Option<ItemListing>> {
        // The stored piece count: the 5 MiB piece list of a big item is not read for a listing.
        let row = sqlx::query(
            "SELECT size, piece_size, sha1, piece_count, tree \
             FROM files WHERE group_name = $1 AND name = $2",
        )
        .bind(group)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let piece_size = to_u64(r.try_get(1)?, "piece size")?;
        let piece_count = to_u64(r.try_get(3)?, "piece count")?;
        Ok(Some(ItemListing {
            group: group.to_string(),
            name: name.to_string(),
            size: to_u64(r.try_get(0)?, "file size")?,
            piece_size: u32::try_from(piece_size)
                .map_err(|_| StoreError::Corrupt(format!("piece size {piece_size}")))?,
            piece_count: u32::try_from(piece_count)
                .map_err(|_| StoreError::Corrupt(format!("piece count {piece_count}")))?,
            sha1: super::files::sha1_from_hex(&r.try_get::<String, _>(2)?)?,
            tree: tree_column(r.try_get(4)?)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minitorr_proto::types::Sha1Hash;

    #[test]
    fn tree_text_round_trip_and_corruption() {
        let mut tree = Tree {
            entries: vec![
                TreeEntry::file("a b/c d.txt", 12, Sha1Hash([7; 20])),
                TreeEntry::dir("empty dir"),
                TreeEntry::file("z", 0, Sha1Hash([0xab; 20])),
            ],
        };
        tree.sort();
        let text = tree_to_text(&tree);
        assert_eq!(
            text.lines().next().unwrap(),
            format!("F 12 {} a b/c d.txt", "07".repeat(20))
        );
        assert_eq!(tree_from_text(&text).unwrap(), tree);
        assert_eq!(tree_from_text("").unwrap(), Tree::default());
        for bad in ["X a\n", "D \n", "F 1 00 a\n", "F x 0000 a\n", "F 1\n"] {
            assert!(tree_from_text(bad).is_err(), "{bad:?} accepted");
        }
    }
}

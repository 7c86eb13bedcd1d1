//! Files shared in groups and who shares them.
//!
//! A file is keyed by (group, name) and exists only while at least one member shares it.
//! Shares are per *user*; which *sessions* of those users are online decides what downloaders
//! are told.

use minitorr_proto::types::{FileMeta, FileSummary, PeerInfo, Sha1Hash};
use sqlx::{Any, Row, Transaction};

use super::{to_i64, to_u64, Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareOutcome {
    NotMember,
    /// Same name, different content hash.
    DifferentSha1,
    /// Same content hash but a different size or piece layout: peers could not exchange pieces.
    DifferentLayout,
    /// Same content hash, but one is a directory tree and the other a single file (a file
    /// whose bytes are a tree's canonical listing has that tree's digest as its SHA1).
    DifferentKind,
    /// A new entry would exceed the registering member's quota.
    QuotaExceeded(QuotaExceeded),
    Shared,
}

fn pieces_to_hex(pieces: &[Sha1Hash]) -> String {
    // One bulk encode (a 1 TiB item has 131,072 pieces: 5 MiB of hex).
    let bytes: Vec<u8> = pieces.iter().flat_map(|p| p.0).collect();
    hex::encode(bytes)
}

fn pieces_from_hex(s: &str) -> Result<Vec<Sha1Hash>> {
    if s.len() % 40 != 0 {
        return Err(StoreError::Corrupt(format!(
            "piece list of {} hex digits",
            s.len()
        )));
    }
    let bytes = hex::decode(s).map_err(|e| StoreError::Corrupt(format!("piece hash: {e}")))?;
    Ok(bytes
        .chunks_exact(20)
        .map(|c| Sha1Hash(c.try_into().expect("chunks of 20")))
        .collect())
}

pub(super) fn sha1_from_hex(s: &str) -> Result<Sha1Hash> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("file sha1 {s:?}: {e}")))
}

/// Remove files of `group` that nobody shares any more, recording a `FileRemoved` event for
/// each (so partial holders still serving it hear about it). Call it last in a transaction (it
/// takes the event id lock).
pub(super) async fn drop_unshared_files(
    tx: &mut Transaction<'static, Any>,
    group: &str,
) -> Result<()> {
    let gone: Vec<String> = sqlx::query_scalar(
        "DELETE FROM files WHERE group_name = $1 AND NOT EXISTS \
           (SELECT 1 FROM shares s WHERE s.group_name = files.group_name AND s.file_name = files.name) \
         RETURNING name",
    )
    .bind(group)
    .fetch_all(&mut **tx)
    .await?;
    for file in gone {
        let kind = minitorr_proto::tracker::EventKind::FileRemoved {
            group: group.to_string(),
            file,
        };
        super::events::emit(tx, &kind, &[]).await?;
    }
    Ok(())
}

/// What one member may register (file entries they created and that still exist). Becoming
/// one more holder of an existing entry is free: it costs the database one small row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Items (entries of `list_files`: a file or a tree) per member in one group.
    pub files_per_group: u64,
    /// Files per member in all groups ([`quota_entries`]: a tree counts each of its files and
    /// empty directories), so the limit also bounds the tree listings a member can store.
    pub files: u64,
    /// Sum of the sizes of a member's entries.
    pub bytes: u64,
    /// Sum of the piece counts of a member's entries (each piece hash is 40 bytes of database).
    pub pieces: u64,
}

impl Quota {
    /// No limit at all (tests of other things, and tools).
    pub const UNLIMITED: Quota = Quota {
        files_per_group: u64::MAX,
        files: u64::MAX,
        bytes: u64::MAX,
        pieces: u64::MAX,
    };
}

/// Which quota a new entry would exceed, with what the member has and the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaExceeded {
    FilesPerGroup { have: u64, limit: u64 },
    Files { have: u64, adding: u64, limit: u64 },
    Bytes { have: u64, adding: u64, limit: u64 },
    Pieces { have: u64, adding: u64, limit: u64 },
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaExceeded::FilesPerGroup { have, limit } => write!(
                f,
                "you registered {have} files in this group; the limit is {limit} per member"
            ),
            QuotaExceeded::Files { have, adding: 0 | 1, limit } => write!(
                f,
                "you registered {have} files in all groups; the limit is {limit} per member"
            ),
            QuotaExceeded::Files { have, adding, limit } => write!(
                f,
                "you registered {have} files in all groups; {adding} more would pass the limit of {limit} per member"
            ),
            QuotaExceeded::Bytes { have, adding, limit } => write!(
                f,
                "your files already claim {have} bytes; {adding} more would pass the limit of {limit} bytes per member"
            ),
            QuotaExceeded::Pieces { have, adding, limit } => write!(
                f,
                "your files already have {have} pieces; {adding} more would pass the limit of {limit} pieces per member"
            ),
        }
    }
}

/// Entries `user` registered: (in `group`, in total, total bytes, total pieces).
async fn registered_by(
    tx: &mut Transaction<'static, Any>,
    user: &str,
    group: &str,
) -> Result<(u64, u64, u64, u64)> {
    // PostgreSQL's SUM of BIGINT is NUMERIC, hence the casts. Piece counts are stored with
    // each entry (`piece_count`, written with the piece list), so no piece list is measured.
    // Files are counted as `quota_entries` (a tree's entries), items per group one by one.
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(CASE WHEN group_name = $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
           CAST(COALESCE(SUM(quota_entries), 0) AS BIGINT), CAST(COALESCE(SUM(size), 0) AS BIGINT), \
           CAST(COALESCE(SUM(piece_count), 0) AS BIGINT) \
         FROM files WHERE registered_by = $1",
    )
    .bind(user)
    .bind(group)
    .fetch_one(&mut **tx)
    .await?;
    Ok((
        to_u64(row.try_get::<i64, _>(0)?, "file count")?,
        to_u64(row.try_get::<i64, _>(1)?, "file count")?,
        to_u64(row.try_get::<i64, _>(2)?, "byte total")?,
        to_u64(row.try_get::<i64, _>(3)?, "piece total")?,
    ))
}

/// Bytes of stored tree listing that count as one entry against `quota_files`.
pub const LISTING_BYTES_PER_ENTRY: usize = 256;

/// What `meta` counts against `quota_files`: 1 for a single file; for a tree one per file or
/// empty directory, or one per [`LISTING_BYTES_PER_ENTRY`] bytes of its stored listing
/// (`listing_len`) if that is more (long paths cost more database), and at least 1.
pub fn quota_entries(meta: &FileMeta, listing_len: usize) -> u64 {
    match &meta.tree {
        None => 1,
        Some(t) => (t
            .entries
            .len()
            .max(listing_len.div_ceil(LISTING_BYTES_PER_ENTRY)) as u64)
            .max(1),
    }
}

fn over_quota(
    quota: &Quota,
    (in_group, files, bytes, pieces): (u64, u64, u64, u64),
    meta: &FileMeta,
    listing_len: usize,
) -> Option<QuotaExceeded> {
    let adding_pieces = meta.pieces.len() as u64;
    let adding_files = quota_entries(meta, listing_len);
    if in_group >= quota.files_per_group {
        Some(QuotaExceeded::FilesPerGroup {
            have: in_group,
            limit: quota.files_per_group,
        })
    } else if files.saturating_add(adding_files) > quota.files {
        Some(QuotaExceeded::Files {
            have: files,
            adding: adding_files,
            limit: quota.files,
        })
    } else if bytes.saturating_add(meta.size) > quota.bytes {
        Some(QuotaExceeded::Bytes {
            have: bytes,
            adding: meta.size,
            limit: quota.bytes,
        })
    } else if pieces.saturating_add(adding_pieces) > quota.pieces {
        Some(QuotaExceeded::Pieces {
            have: pieces,
            adding: adding_pieces,
            limit: quota.pieces,
        })
    } else {
        None
    }
}

async fn existing_file(
    tx: &mut Transaction<'static, Any>,
    group: &str,
    name: &str,
) -> Result<Option<sqlx::any::AnyRow>> {
    Ok(sqlx::query(
        "SELECT sha1, size, piece_size, pieces, CASE WHEN tree IS NULL THEN 0 ELSE 1 END \
         FROM files WHERE group_name = $1 AND name = $2",
    )
    .bind(group)
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?)
}

/// A file entry removed by the group owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedFile {
    /// The name as stored (NFC, or a legacy spelling).
    pub name: String,
    /// Users whose shares were dropped with it (their daemons should stop serving it).
    pub holders: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveOutcome {
    NoGroup,
    NotOwner { owner: String },
    NoFile,
    Removed(RemovedFile),
}

impl Store {
    /// Register that `user` holds `meta` in `group` (complete or partially), creating the file
    /// entry if it is new (within `quota`, counted against `user`). Membership is checked in
    /// the same transaction.
    pub async fn share(
        &self,
        group: &str,
        user: &str,
        meta: &FileMeta,
        complete: bool,
        now: i64,
        quota: &Quota,
    ) -> Result<ShareOutcome> {
        self.share_as(group, user, meta, complete, now, quota, None)
            .await
    }

    /// [`Store::share`] by one session, `holder` (its address and device key): the same
    /// transaction records a `HolderOnline` event, so the group's daemons downloading the file
    /// add that session as a peer within a second instead of at their next `GetFile`.
    #[allow(clippy::too_many_arguments)]
    pub async fn share_as(
        &self,
        group: &str,
        user: &str,
        meta: &FileMeta,
        complete: bool,
        now: i64,
        quota: &Quota,
        holder: Option<&PeerInfo>,
    ) -> Result<ShareOutcome> {
        let size = to_i64(meta.size, "file size")?;
        let sha1 = meta.sha1.to_hex();
        let mut tx = self.begin().await?;
        let member: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM group_members WHERE group_name = $1 AND user_name = $2",
        )
        .bind(group)
        .bind(user)
        .fetch_one(&mut *tx)
        .await?;
        if member == 0 {
            return Ok(ShareOutcome::NotMember);
        }
        let mut row = existing_file(&mut tx, group, &meta.name).await?;
        if row.is_none() {
            // A new entry: only now is the quota (and the hex encoding of the piece list)
            // worth the work.
            let listing = meta.tree.as_ref().map(super::items::tree_to_text);
            let listing_len = listing.as_ref().map_or(0, String::len);
            let have = registered_by(&mut tx, user, group).await?;
            if let Some(q) = over_quota(quota, have, meta, listing_len) {
                return Ok(ShareOutcome::QuotaExceeded(q));
            }
            sqlx::query(
                "INSERT INTO files (group_name, name, size, piece_size, sha1, pieces, created, registered_by, \
                   tree, file_count, quota_entries, piece_count) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (group_name, name) DO NOTHING",
            )
            .bind(group)
            .bind(&meta.name)
            .bind(size)
            .bind(i64::from(meta.piece_size))
            .bind(&sha1)
            .bind(pieces_to_hex(&meta.pieces))
            .bind(now)
            .bind(user)
            .bind(listing)
            .bind(to_i64(meta.file_count() as u64, "file count")?)
            .bind(to_i64(quota_entries(meta, listing_len), "quota entries")?)
            .bind(i64::from(meta.piece_count()))
            .execute(&mut *tx)
            .await?;
            // Ours, or one registered by someone else in between: compare with it either way.
            row = existing_file(&mut tx, group, &meta.name).await?;
        }
        let row = row.ok_or_else(|| StoreError::Corrupt("file entry vanished".into()))?;
        if row.try_get::<String, _>(0)? != sha1 {
            return Ok(ShareOutcome::DifferentSha1);
        }
        // Equal SHA1s of two trees mean equal trees: both passed `FileMeta::check`, which
        // requires the SHA1 to be the digest of the whole listing (every path, size and file
        // SHA1), so the listings need no comparison. What the digest does not cover is compared:
        // the kind (a single file's bytes could be a tree's listing), size, piece size and the
        // piece hashes.
        if (row.try_get::<i64, _>(4)? != 0) != meta.is_tree() {
            return Ok(ShareOutcome::DifferentKind);
        }
        if row.try_get::<i64, _>(1)? != size
            || row.try_get::<i64, _>(2)? != i64::from(meta.piece_size)
            || row.try_get::<String, _>(3)? != pieces_to_hex(&meta.pieces)
        {
            return Ok(ShareOutcome::DifferentLayout);
        }
        sqlx::query(
            "INSERT INTO shares (group_name, file_name, user_name, complete, updated) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (group_name, file_name, user_name) DO UPDATE SET complete = $4, updated = $5",
        )
        .bind(group)
        .bind(&meta.name)
        .bind(user)
        .bind(i64::from(complete))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(peer) = holder {
            let kind = minitorr_proto::tracker::EventKind::HolderOnline {
                group: group.to_string(),
                file: meta.name.clone(),
                peer: PeerInfo {
                    complete,
                    ..peer.clone()
                },
            };
            super::events::emit(&mut tx, &kind, &[]).await?;
        }
        tx.commit().await?;
        Ok(ShareOutcome::Shared)
    }

    /// The owner of `group` (`owner`, checked in the transaction) removes the entry `file`
    /// (tried as given, then as `alt`, e.g. its NFC form) and every share of it.
    pub async fn remove_file(
        &self,
        group: &str,
        owner: &str,
        file: &str,
        alt: Option<&str>,
    ) -> Result<RemoveOutcome> {
        let mut tx = self.begin().await?;
        let stored_owner: Option<String> =
            sqlx::query_scalar("SELECT owner FROM group_info WHERE name = $1")
                .bind(group)
                .fetch_optional(&mut *tx)
                .await?;
        match stored_owner {
            None => return Ok(RemoveOutcome::NoGroup),
            Some(o) if o != owner => return Ok(RemoveOutcome::NotOwner { owner: o }),
            Some(_) => {}
        }
        for name in std::iter::once(file).chain(alt) {
            let holders: Vec<String> = sqlx::query_scalar(
                "SELECT user_name FROM shares WHERE group_name = $1 AND file_name = $2 ORDER BY user_name",
            )
            .bind(group)
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM shares WHERE group_name = $1 AND file_name = $2")
                .bind(group)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query("DELETE FROM files WHERE group_name = $1 AND name = $2")
                .bind(group)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() > 0 {
                // Last, as `events::emit` asks: holders' daemons close the peer connections
                // serving it and forget the share (and tickets for it stop opening anything).
                let kind = minitorr_proto::tracker::EventKind::FileRemoved {
                    group: group.to_string(),
                    file: name.to_string(),
                };
                super::events::emit(&mut tx, &kind, &[]).await?;
                tx.commit().await?;
                return Ok(RemoveOutcome::Removed(RemovedFile {
                    name: name.to_string(),
                    holders,
                }));
            }
        }
        Ok(RemoveOutcome::NoFile)
    }

    /// Remove `user`'s share of `file`; the file goes too if nobody else shares it.
    /// False if the user had no such share.
    pub async fn stop_share(&self, group: &str, file: &str, user: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "DELETE FROM shares WHERE group_name = $1 AND file_name = $2 AND user_name = $3",
        )
        .bind(group)
        .bind(file)
        .bind(user)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        // Downloaders drop every session of `user` as a holder of it at once.
        let gone = minitorr_proto::tracker::EventKind::HolderGone {
            group: group.to_string(),
            file: Some(file.to_string()),
            user: user.to_string(),
            addr: None,
        };
        super::events::emit(&mut tx, &gone, &[]).await?;
        drop_unshared_files(&mut tx, group).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Files of `group` by name, with the number of online sessions (seen at or after
    /// `online_since`) holding each completely or partially.
    pub async fn list_files(&self, group: &str, online_since: i64) -> Result<Vec<FileSummary>> {
        let count = |complete: i64| {
            format!(
                "(SELECT COUNT(*) FROM shares s JOIN sessions x ON x.user_name = s.user_name \
                  WHERE s.group_name = f.group_name AND s.file_name = f.name \
                  AND s.complete = {complete} AND x.last_seen >= $2)"
            )
        };
        let sql = format!(
            "SELECT f.name, f.size, f.piece_size, f.sha1, {}, {}, f.file_count, \
               CASE WHEN f.tree IS NULL THEN 0 ELSE 1 END, f.piece_count FROM files f \
             WHERE f.group_name = $1 ORDER BY f.name",
            count(1),
            count(0)
        );
        let rows = sqlx::query(&sql)
            .bind(group)
            .bind(online_since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FileSummary {
                    group: group.to_string(),
                    name: r.try_get(0)?,
                    size: to_u64(r.try_get(1)?, "file size")?,
                    piece_size: to_u64(r.try_get(2)?, "piece size")? as u32,
                    sha1: sha1_from_hex(&r.try_get::<String, _>(3)?)?,
                    seeders_online: r.try_get::<i64, _>(4)? as u32,
                    partial_online: r.try_get::<i64, _>(5)? as u32,
                    file_count: to_u64(r.try_get(6)?, "file count")?,
                    is_tree: r.try_get::<i64, _>(7)? != 0,
                    piece_count: u32::try_from(to_u64(r.try_get(8)?, "piece count")?)
                        .map_err(|_| StoreError::Corrupt("piece count".into()))?,
                })
            })
            .collect()
    }

    /// Metadata of one file, if `group` has it.
    pub async fn file(&self, group: &str, name: &str) -> Result<Option<FileMeta>> {
        let row = sqlx::query(
            "SELECT size, piece_size, sha1, pieces, tree FROM files WHERE group_name = $1 AND name = $2",
        )
        .bind(group)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let piece_size = to_u64(r.try_get(1)?, "piece size")?;
        let meta = FileMeta {
            name: name.to_string(),
            size: to_u64(r.try_get(0)?, "file size")?,
            piece_size: u32::try_from(piece_size)
                .map_err(|_| StoreError::Corrupt(format!("piece size {piece_size}")))?,
            sha1: sha1_from_hex(&r.try_get::<String, _>(2)?)?,
            pieces: pieces_from_hex(&r.try_get::<String, _>(3)?)?,
            tree: super::items::tree_column(r.try_get(4)?)?,
        };
        Ok(Some(meta))
    }

    /// The SHA1 of one file (or tree), if `group` has it: what `GetHolders` needs, without
    /// loading the piece list and listing.
    pub async fn file_sha1(&self, group: &str, name: &str) -> Result<Option<Sha1Hash>> {
        let row = sqlx::query("SELECT sha1 FROM files WHERE group_name = $1 AND name = $2")
            .bind(group)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| sha1_from_hex(&r.try_get::<String, _>(0)?))
            .transpose()
    }

    /// Online sessions (seen at or after `online_since`) of users sharing the file, except the
    /// session `exclude_token_hash`; complete holders first, then the most recently seen.
    pub async fn file_peers(
        &self,
        group: &str,
        file: &str,
        online_since: i64,
        exclude_token_hash: &str,
    ) -> Result<Vec<PeerInfo>> {
        let rows = sqlx::query(
            "SELECT x.user_name, x.peer_addr, s.complete, x.device_key FROM shares s \
             JOIN sessions x ON x.user_name = s.user_name \
             WHERE s.group_name = $1 AND s.file_name = $2 AND x.last_seen >= $3 AND x.token_hash <> $4 \
             ORDER BY s.complete DESC, x.last_seen DESC, x.user_name, x.peer_addr",
        )
        .bind(group)
        .bind(file)
        .bind(online_since)
        .bind(exclude_token_hash)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PeerInfo {
                    user: r.try_get(0)?,
                    addr: r.try_get(1)?,
                    complete: r.try_get::<i64, _>(2)? != 0,
                    device_key: super::sessions::device_key_from_hex(&r.try_get::<String, _>(3)?)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_hex_round_trip_and_corruption() {
        let p = vec![Sha1Hash([1; 20]), Sha1Hash([0xfe; 20])];
        let s = pieces_to_hex(&p);
        assert_eq!(s.len(), 80);
        assert_eq!(pieces_from_hex(&s).unwrap(), p);
        assert!(pieces_from_hex("").unwrap().is_empty());
        assert!(pieces_from_hex(&s[1..]).is_err());
        assert!(pieces_from_hex(&"zz".repeat(20)).is_err());
    }
}

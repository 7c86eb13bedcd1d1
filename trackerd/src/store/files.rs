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
    Shared,
}

fn pieces_to_hex(pieces: &[Sha1Hash]) -> String {
    let mut s = String::with_capacity(pieces.len() * 40);
    for p in pieces {
        s.push_str(&p.to_hex());
    }
    s
}

fn pieces_from_hex(s: &str) -> Result<Vec<Sha1Hash>> {
    if s.len() % 40 != 0 {
        return Err(StoreError::Corrupt(format!(
            "piece list of {} hex digits",
            s.len()
        )));
    }
    (0..s.len() / 40)
        .map(|i| {
            s[i * 40..(i + 1) * 40]
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("piece hash: {e}")))
        })
        .collect()
}

fn sha1_from_hex(s: &str) -> Result<Sha1Hash> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("file sha1 {s:?}: {e}")))
}

/// Remove files of `group` that nobody shares any more.
pub(super) async fn drop_unshared_files(
    tx: &mut Transaction<'static, Any>,
    group: &str,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM files WHERE group_name = $1 AND NOT EXISTS \
           (SELECT 1 FROM shares s WHERE s.group_name = files.group_name AND s.file_name = files.name)",
    )
    .bind(group)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Register that `user` holds `meta` in `group` (complete or partially), creating the file
    /// entry if it is new. Membership is checked in the same transaction.
    pub async fn share(
        &self,
        group: &str,
        user: &str,
        meta: &FileMeta,
        complete: bool,
        now: i64,
    ) -> Result<ShareOutcome> {
        let size = to_i64(meta.size, "file size")?;
        let sha1 = meta.sha1.to_hex();
        let pieces = pieces_to_hex(&meta.pieces);
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
        // Insert-if-absent, then compare with whatever is there (ours or an earlier sharer's).
        sqlx::query(
            "INSERT INTO files (group_name, name, size, piece_size, sha1, pieces, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (group_name, name) DO NOTHING",
        )
        .bind(group)
        .bind(&meta.name)
        .bind(size)
        .bind(i64::from(meta.piece_size))
        .bind(&sha1)
        .bind(&pieces)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT sha1, size, piece_size, pieces FROM files WHERE group_name = $1 AND name = $2",
        )
        .bind(group)
        .bind(&meta.name)
        .fetch_one(&mut *tx)
        .await?;
        if row.try_get::<String, _>(0)? != sha1 {
            return Ok(ShareOutcome::DifferentSha1);
        }
        if row.try_get::<i64, _>(1)? != size
            || row.try_get::<i64, _>(2)? != i64::from(meta.piece_size)
            || row.try_get::<String, _>(3)? != pieces
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
        tx.commit().await?;
        Ok(ShareOutcome::Shared)
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
            "SELECT f.name, f.size, f.piece_size, f.sha1, {}, {} FROM files f \
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
                })
            })
            .collect()
    }

    /// Metadata of one file, if `group` has it.
    pub async fn file(&self, group: &str, name: &str) -> Result<Option<FileMeta>> {
        let row = sqlx::query(
            "SELECT size, piece_size, sha1, pieces FROM files WHERE group_name = $1 AND name = $2",
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
        };
        Ok(Some(meta))
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

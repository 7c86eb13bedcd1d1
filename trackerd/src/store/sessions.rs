//! Login sessions, keyed by the SHA-256 of their token.
//!
//! A session is valid while `last_seen` is within the session TTL (sliding: every heartbeat
//! moves it) and *online* while `last_seen` is within the peer timeout.

use sqlx::Row;

use super::{Result, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub user: String,
    pub peer_addr: String,
    pub last_seen: i64,
    /// The logged-in daemon's device key (Ed25519 public key).
    pub device_key: [u8; 32],
}

/// Device keys are stored as 64 hex digits.
pub(crate) fn device_key_from_hex(s: &str) -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(s, &mut key)
        .map_err(|e| super::StoreError::Corrupt(format!("session device key: {e}")))?;
    Ok(key)
}

impl Store {
    /// Record a new session, replacing every other session of the same user and device key
    /// (a daemon that logs in again — restarted, or a second login — is one holder, at once,
    /// not one per login until the old sessions time out), and drop sessions that expired
    /// before `expired_before` (done here so the table cannot grow forever without a separate
    /// janitor task). Returns how many sessions of the device were replaced.
    pub async fn create_session(
        &self,
        token_hash: &str,
        user: &str,
        peer_addr: &str,
        device_key: &[u8; 32],
        now: i64,
        expired_before: i64,
    ) -> Result<u64> {
        let mut tx = self.begin().await?;
        let expired = delete_expired(&mut tx, expired_before).await?;
        let replaced: Vec<String> = sqlx::query_scalar(
            "DELETE FROM sessions WHERE user_name = $1 AND device_key = $2 RETURNING peer_addr",
        )
        .bind(user)
        .bind(hex::encode(device_key))
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_name, peer_addr, created, last_seen, device_key) \
             VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(token_hash)
        .bind(user)
        .bind(peer_addr)
        .bind(now)
        .bind(hex::encode(device_key))
        .execute(&mut *tx)
        .await?;
        // Holders that went with the deleted sessions: the device's old address (a daemon that
        // moved; at the same address it is still the holder) and whoever expired.
        let mut gone: Vec<(String, String)> = expired;
        gone.extend(replaced.iter().map(|a| (user.to_string(), a.clone())));
        for (u, a) in dedup(gone) {
            holder_gone(&mut tx, &u, &a, expired_before).await?;
        }
        tx.commit().await?;
        Ok(replaced.len() as u64)
    }

    /// Drop the sessions last seen before `expired_before` (no heartbeat for the session TTL:
    /// the daemon crashed or lost its network) and tell the groups their holders are gone,
    /// as a logout does. Returns how many sessions expired.
    pub async fn expire_sessions(&self, expired_before: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let expired = delete_expired(&mut tx, expired_before).await?;
        let n = expired.len() as u64;
        for (u, a) in dedup(expired) {
            holder_gone(&mut tx, &u, &a, expired_before).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// The session behind `token_hash`, unless it is unknown or was last seen before
    /// `expired_before`.
    pub async fn session(
        &self,
        token_hash: &str,
        expired_before: i64,
    ) -> Result<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT user_name, peer_addr, last_seen, device_key FROM sessions \
             WHERE token_hash = $1 AND last_seen >= $2",
        )
        .bind(token_hash)
        .bind(expired_before)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRow {
                user: r.try_get(0)?,
                peer_addr: r.try_get(1)?,
                last_seen: r.try_get(2)?,
                device_key: device_key_from_hex(&r.try_get::<String, _>(3)?)?,
            })
        })
        .transpose()
    }

    /// Mark the session as seen now (heartbeat); false if it no longer exists.
    ///
    /// `last_seen` is soft state (a lost heartbeat only makes a peer look offline until its
    /// next one), so on SQLite this one write skips the fsync of `synchronous = FULL`: it is
    /// still in the WAL, survives `kill -9`, and is made durable by the next full commit. With
    /// an fsync per heartbeat, 1,000 daemons meant 200 serialized fsyncs per second and p99
    /// latencies above 50 ms for everyone queued behind them (see docs/BENCHMARKS.md).
    pub async fn touch_session(&self, token_hash: &str, now: i64) -> Result<bool> {
        let sqlite = self.begin_write == "BEGIN IMMEDIATE";
        let mut conn = self.pool.acquire().await?;
        if sqlite {
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await?;
        }
        let done = sqlx::query("UPDATE sessions SET last_seen = $2 WHERE token_hash = $1")
            .bind(token_hash)
            .bind(now)
            .execute(&mut *conn)
            .await;
        if sqlite {
            // Never hand a relaxed connection back to the pool: restore, or drop it.
            if sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *conn)
                .await
                .is_err()
            {
                drop(conn.detach());
            }
        }
        Ok(done?.rows_affected() == 1)
    }

    /// Revoke a session (logout) and tell the members of every group where its user shares
    /// something that this session's address holds nothing any more (`HolderGone`), so their
    /// downloads drop it at once. False if it did not exist.
    pub async fn end_session(&self, token_hash: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "DELETE FROM sessions WHERE token_hash = $1 RETURNING user_name, peer_addr",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let (user, addr): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        emit_holder_gone(&mut tx, &user, &addr).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revoke a session (logout); false if it did not exist.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// The user of a session of `device_key` last seen at or after `since` (online), if any:
    /// who a relay connection signed by that key speaks for (trackerd/src/relay/).
    pub async fn online_user_of_device(
        &self,
        device_key: &[u8; 32],
        since: i64,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT user_name FROM sessions WHERE device_key = $1 AND last_seen >= $2 \
             ORDER BY last_seen DESC LIMIT 1",
        )
        .bind(hex::encode(device_key))
        .bind(since)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Delete the sessions last seen before `expired_before`; their (user, address).
async fn delete_expired(tx: &mut Tx, expired_before: i64) -> Result<Vec<(String, String)>> {
    let rows =
        sqlx::query("DELETE FROM sessions WHERE last_seen < $1 RETURNING user_name, peer_addr")
            .bind(expired_before)
            .fetch_all(&mut **tx)
            .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

fn dedup(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v.dedup();
    v
}

/// `user` at `addr` holds nothing any more — unless another live session of the user is at
/// that address (a second login of the same daemon, or another device behind it).
async fn holder_gone(tx: &mut Tx, user: &str, addr: &str, expired_before: i64) -> Result<()> {
    let still: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sessions WHERE user_name = $1 AND peer_addr = $2 AND last_seen >= $3 \
         LIMIT 1",
    )
    .bind(user)
    .bind(addr)
    .bind(expired_before)
    .fetch_optional(&mut **tx)
    .await?;
    if still.is_none() {
        emit_holder_gone(tx, user, addr).await?;
    }
    Ok(())
}

/// One `HolderGone` (at `addr`) per group where `user` shares something, so the members'
/// downloads drop that address at once.
async fn emit_holder_gone(tx: &mut Tx, user: &str, addr: &str) -> Result<()> {
    let groups: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT group_name FROM shares WHERE user_name = $1 ORDER BY group_name",
    )
    .bind(user)
    .fetch_all(&mut **tx)
    .await?;
    for group in groups {
        let gone = minitorr_proto::tracker::EventKind::HolderGone {
            group,
            file: None,
            user: user.to_string(),
            addr: Some(addr.to_string()),
        };
        super::events::emit(tx, &gone, &[]).await?;
    }
    Ok(())
}

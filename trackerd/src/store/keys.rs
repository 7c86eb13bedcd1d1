//! Ticket-signing PUBLIC keys (table `ticket_keys`), and the one-time removal of the legacy
//! private key from `tracker_key`.

use super::{Result, Store, StoreError};

/// A published key: hex public key and when it retires (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyRow {
    pub public_hex: String,
    pub retire_at: Option<i64>,
}

impl Store {
    /// Publish `public_hex` (no-op if already there; an existing retirement is kept).
    pub async fn publish_ticket_key(&self, public_hex: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO ticket_keys (public_hex, created, retire_at) VALUES ($1, $2, NULL) \
             ON CONFLICT (public_hex) DO NOTHING",
        )
        .bind(public_hex)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `None`: not published; `Some(retire_at)` otherwise.
    pub async fn ticket_key(&self, public_hex: &str) -> Result<Option<Option<i64>>> {
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT retire_at FROM ticket_keys WHERE public_hex = $1")
                .bind(public_hex)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(r,)| r))
    }

    /// Keys whose tickets still verify at `now`, oldest first.
    pub async fn valid_ticket_keys(&self, now: i64) -> Result<Vec<PublicKeyRow>> {
        let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT public_hex, retire_at FROM ticket_keys \
             WHERE retire_at IS NULL OR retire_at >= $1 ORDER BY created, public_hex",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(public_hex, retire_at)| PublicKeyRow {
                public_hex,
                retire_at,
            })
            .collect())
    }

    /// Schedule the retirement of `public_hex` at `at` (never later than one already set).
    pub async fn retire_ticket_key(&self, public_hex: &str, at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE ticket_keys SET retire_at = $2 \
             WHERE public_hex = $1 AND (retire_at IS NULL OR retire_at > $2)",
        )
        .bind(public_hex)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Rotation, in one transaction: publish `new_hex`, retire `old_hex` at `retire_at`, and
    /// forget keys retired before `forget_before` (their tickets are long refused).
    pub async fn rotate_ticket_key(
        &self,
        old_hex: &str,
        new_hex: &str,
        now: i64,
        retire_at: i64,
        forget_before: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO ticket_keys (public_hex, created, retire_at) VALUES ($1, $2, NULL) \
             ON CONFLICT (public_hex) DO NOTHING",
        )
        .bind(new_hex)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE ticket_keys SET retire_at = $2 \
             WHERE public_hex = $1 AND (retire_at IS NULL OR retire_at > $2)",
        )
        .bind(old_hex)
        .bind(retire_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM ticket_keys WHERE retire_at < $1")
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The private key an older trackerd kept in the database (hex), if it is still there.
    pub async fn legacy_signing_key(&self) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT secret_hex FROM tracker_key WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Delete the legacy private key and scrub it from the database file: on SQLite a deleted
    /// row's bytes stay in free pages (and in the WAL) until `VACUUM` and a truncating
    /// checkpoint rewrite them; on PostgreSQL `VACUUM` makes the dead row's space reusable
    /// (earlier physical backups still hold it: rotate the key, see OPERATIONS.md).
    pub async fn delete_legacy_signing_key(&self) -> Result<()> {
        sqlx::query("DELETE FROM tracker_key")
            .execute(&self.pool)
            .await?;
        let mut conn = self.pool.acquire().await?;
        if self.begin_write == "BEGIN IMMEDIATE" {
            for stmt in ["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"] {
                sqlx::query(stmt).execute(&mut *conn).await?;
            }
        } else {
            sqlx::query("VACUUM tracker_key")
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// Parse a stored hex public key.
pub fn public_from_hex(hex_str: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out)
        .map_err(|e| StoreError::Corrupt(format!("ticket key '{hex_str}': {e}")))?;
    Ok(out)
}

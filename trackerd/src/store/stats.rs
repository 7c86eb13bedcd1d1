//! Totals for the operators' metrics (`crate::metrics`): counts only, never names.

use super::{Result, Store};

/// What the tracker holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub users: i64,
    /// Sessions heard from since `online_since` (daemons online).
    pub sessions_online: i64,
    pub groups: i64,
    pub files: i64,
}

impl Store {
    /// Counts for the metrics gauges; one read-only round trip per table.
    pub async fn totals(&self, online_since: i64) -> Result<Totals> {
        let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).fetch_one(&self.pool);
        let users = count("SELECT COUNT(*) FROM users").await?;
        let groups = count("SELECT COUNT(*) FROM group_info").await?;
        let files = count("SELECT COUNT(*) FROM files").await?;
        let sessions_online =
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sessions WHERE last_seen >= $1")
                .bind(online_since)
                .fetch_one(&self.pool)
                .await?;
        Ok(Totals {
            users,
            sessions_online,
            groups,
            files,
        })
    }
}

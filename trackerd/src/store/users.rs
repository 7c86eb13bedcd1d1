//! Accounts.

use super::{Result, Store};

impl Store {
    /// Insert a user; false if the name is taken (the existing account is left untouched).
    pub async fn create_user(&self, name: &str, password_hash: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO users (name, password_hash, created) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(password_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The stored PHC string of `name`, if the user exists.
    pub async fn password_hash(&self, name: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT password_hash FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

//! Devices: daemons' keys registered for a user by a password login (table `devices`), and
//! the tracker deployment's identity (table `tracker_identity`).
//!
//! A device's sessions are the sessions of the same user with its key; ending a device (revoke,
//! logout) deletes them in the same transaction that changes its state, so no request of a
//! revoked device is answered after the revocation committed.

use minitorr_proto::types::DeviceState;
use sqlx::Row;

use super::{Result, Store, StoreError};

/// A device as `devices` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub name: String,
    pub device_key: [u8; 32],
    pub created: i64,
    /// Its last login, or its sessions' last heartbeat if later.
    pub last_seen: i64,
    pub last_addr: String,
    pub state: DeviceState,
    /// One of its sessions was heard from at or after `online_since`.
    pub online: bool,
}

fn state_text(s: DeviceState) -> &'static str {
    s.as_str()
}

fn state_from(s: &str) -> Result<DeviceState> {
    match s {
        "active" => Ok(DeviceState::Active),
        "revoked" => Ok(DeviceState::Revoked),
        "logged_out" => Ok(DeviceState::LoggedOut),
        other => Err(StoreError::Corrupt(format!("device state '{other}'"))),
    }
}

/// `wanted`, or `wanted-N` for the smallest N ≥ 2 that none of `taken` has (cut so the result
/// stays within the name length limit).
pub fn free_name(wanted: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == wanted) {
        return wanted.to_string();
    }
    for n in 2u32.. {
        let suffix = format!("-{n}");
        let mut base = wanted.to_string();
        while base.len() + suffix.len() > minitorr_proto::names::MAX_ID_LEN {
            base.pop();
        }
        let candidate = format!("{base}{suffix}");
        if !taken.contains(&candidate) {
            return candidate;
        }
    }
    unreachable!("some suffix is free")
}

impl Store {
    /// This deployment's identity: the one in the database, or `candidate` if there is none
    /// yet (the first tracker to open the database decides; the others read it).
    pub async fn tracker_identity(&self, candidate: &[u8; 32]) -> Result<[u8; 32]> {
        sqlx::query(
            "INSERT INTO tracker_identity (id, identity) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(hex::encode(candidate))
        .execute(&self.pool)
        .await?;
        let hexed: String =
            sqlx::query_scalar("SELECT identity FROM tracker_identity WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        let mut id = [0u8; 32];
        hex::decode_to_slice(&hexed, &mut id)
            .map_err(|e| StoreError::Corrupt(format!("tracker identity: {e}")))?;
        Ok(id)
    }

    /// Register `key` as a device of `user` (or refresh it) after a login from `addr`, and make
    /// it active. `name`: the name to give it (made unique among the user's devices); `None`
    /// keeps an existing device's name and calls a new one `device-<key prefix>`. Returns the
    /// name it has.
    pub async fn register_device(
        &self,
        user: &str,
        key: &[u8; 32],
        name: Option<&str>,
        addr: &str,
        now: i64,
    ) -> Result<String> {
        let key_hex = hex::encode(key);
        let mut tx = self.begin().await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT name FROM devices WHERE user_name = $1 AND device_key = $2")
                .bind(user)
                .bind(&key_hex)
                .fetch_optional(&mut *tx)
                .await?;
        let taken: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM devices WHERE user_name = $1 AND device_key <> $2",
        )
        .bind(user)
        .bind(&key_hex)
        .fetch_all(&mut *tx)
        .await?;
        let wanted = match (name, &existing) {
            (Some(n), _) => n.to_string(),
            (None, Some(old)) => old.clone(),
            (None, None) => format!("device-{}", &key_hex[..8]),
        };
        let name = if existing.as_deref() == Some(wanted.as_str()) {
            wanted
        } else {
            free_name(&wanted, &taken)
        };
        sqlx::query(
            "INSERT INTO devices (user_name, device_key, name, created, last_seen, last_addr, state) \
             VALUES ($1, $2, $3, $4, $4, $5, 'active') \
             ON CONFLICT (user_name, device_key) DO UPDATE SET \
             name = $3, last_seen = $4, last_addr = $5, state = 'active'",
        )
        .bind(user)
        .bind(&key_hex)
        .bind(&name)
        .bind(now)
        .bind(addr)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(name)
    }

    /// The state of `user`'s device `key`, if registered.
    pub async fn device_state(&self, user: &str, key: &[u8; 32]) -> Result<Option<DeviceState>> {
        let s: Option<String> = sqlx::query_scalar(
            "SELECT state FROM devices WHERE user_name = $1 AND device_key = $2",
        )
        .bind(user)
        .bind(hex::encode(key))
        .fetch_optional(&self.pool)
        .await?;
        s.as_deref().map(state_from).transpose()
    }

    /// `user`'s devices by name.
    pub async fn list_devices(&self, user: &str, online_since: i64) -> Result<Vec<DeviceRow>> {
        let rows = sqlx::query(
            "SELECT d.name, d.device_key, d.created, d.last_seen, d.last_addr, d.state, \
             (SELECT MAX(x.last_seen) FROM sessions x \
              WHERE x.user_name = d.user_name AND x.device_key = d.device_key) \
             FROM devices d WHERE d.user_name = $1 ORDER BY d.name",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let session_seen: Option<i64> = r.try_get(6)?;
                let last_seen: i64 = r.try_get(3)?;
                Ok(DeviceRow {
                    name: r.try_get(0)?,
                    device_key: super::sessions::device_key_from_hex(&r.try_get::<String, _>(1)?)?,
                    created: r.try_get(2)?,
                    last_seen: last_seen.max(session_seen.unwrap_or(0)),
                    last_addr: r.try_get(4)?,
                    state: state_from(&r.try_get::<String, _>(5)?)?,
                    online: session_seen.is_some_and(|t| t >= online_since),
                })
            })
            .collect()
    }

    /// End `user`'s device named `name`: set its `state` (revoked or logged out) and delete
    /// every session of it, in one transaction. Returns its key, or `None` if no device of
    /// `user` has that name.
    pub async fn end_device_by_name(
        &self,
        user: &str,
        name: &str,
        state: DeviceState,
    ) -> Result<Option<([u8; 32], u64)>> {
        let mut tx = self.begin().await?;
        let key_hex: Option<String> =
            sqlx::query_scalar("SELECT device_key FROM devices WHERE user_name = $1 AND name = $2")
                .bind(user)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(key_hex) = key_hex else {
            return Ok(None);
        };
        let ended = end_device(&mut tx, user, &key_hex, state).await?;
        tx.commit().await?;
        Ok(Some((
            super::sessions::device_key_from_hex(&key_hex)?,
            ended,
        )))
    }

    /// Like [`Store::end_device_by_name`], by key (a device that is not registered gets no
    /// row, but its sessions end all the same). Returns the sessions ended.
    pub async fn end_device_by_key(
        &self,
        user: &str,
        key: &[u8; 32],
        state: DeviceState,
    ) -> Result<u64> {
        let mut tx = self.begin().await?;
        let ended = end_device(&mut tx, user, &hex::encode(key), state).await?;
        tx.commit().await?;
        Ok(ended)
    }
}

async fn end_device(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user: &str,
    key_hex: &str,
    state: DeviceState,
) -> Result<u64> {
    sqlx::query("UPDATE devices SET state = $3 WHERE user_name = $1 AND device_key = $2")
        .bind(user)
        .bind(key_hex)
        .bind(state_text(state))
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query("DELETE FROM sessions WHERE user_name = $1 AND device_key = $2")
        .bind(user)
        .bind(key_hex)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_names_get_the_smallest_free_suffix_within_the_length_limit() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(free_name("pi", &t(&[])), "pi");
        assert_eq!(free_name("pi", &t(&["pi"])), "pi-2");
        assert_eq!(free_name("pi", &t(&["pi", "pi-2"])), "pi-3");
        let long = "x".repeat(64);
        let got = free_name(&long, &t(&[&long]));
        assert_eq!(got.len(), 64);
        assert!(got.ends_with("-2"));
    }
}

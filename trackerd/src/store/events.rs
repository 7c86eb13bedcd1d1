//! Revocation events (see `proto::tracker::Event`): written in the transaction that makes the
//! change, read by every tracker's subscription tasks, pruned after a retention time.
//!
//! Ids are handed out by bumping the single `event_seq` row, which holds its row lock until the
//! transaction ends: ids therefore commit in increasing order and without holes (a rolled-back
//! transaction rolls its number back too), on SQLite and on a PostgreSQL shared by several
//! trackers. A subscriber that has seen id N has seen everything up to N.

use std::time::{SystemTime, UNIX_EPOCH};

use minitorr_proto::tracker::{Event, EventKind};
use sqlx::{Any, Row, Transaction};

use super::{to_i64, to_u64, Result, Store, StoreError};

/// Unix seconds, for `created` (only used to prune old events, so wall-clock time is right here
/// even when the service runs on an injected test clock).
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// (kind, group, user, file, detail) columns of an event. `detail` carries what the older
/// kinds did not need: a holder's address, device key and completeness.
fn columns(kind: &EventKind) -> (&'static str, &str, &str, &str, String) {
    match kind {
        EventKind::MemberGone { group, user } => ("member_gone", group, user, "", String::new()),
        EventKind::GroupDeleted { group } => ("group_deleted", group, "", "", String::new()),
        EventKind::FileRemoved { group, file } => ("file_removed", group, "", file, String::new()),
        EventKind::Resync => ("resync", "", "", "", String::new()),
        EventKind::HolderOnline { group, file, peer } => (
            "holder_online",
            group,
            &peer.user,
            file,
            format!(
                "{} {} {}",
                u8::from(peer.complete),
                hex::encode(peer.device_key),
                peer.addr
            ),
        ),
        // '' stands for None: file and peer address names are never empty.
        EventKind::HolderGone {
            group,
            file,
            user,
            addr,
        } => (
            "holder_gone",
            group,
            user,
            file.as_deref().unwrap_or(""),
            addr.clone().unwrap_or_default(),
        ),
        // user: who asks; detail: nonce, the asker's key and address, the holder's address.
        EventKind::PunchRequest {
            group,
            file,
            holder_addr,
            from,
            nonce,
        } => (
            "punch_request",
            group,
            &from.user,
            file,
            format!(
                "{} {} {} {}",
                hex::encode(nonce),
                hex::encode(from.device_key),
                from.addr,
                holder_addr
            ),
        ),
    }
}

fn from_columns(
    kind: &str,
    group: String,
    user: String,
    file: String,
    detail: String,
) -> Result<EventKind> {
    let some = |s: String| (!s.is_empty()).then_some(s);
    Ok(match kind {
        "member_gone" => EventKind::MemberGone { group, user },
        "group_deleted" => EventKind::GroupDeleted { group },
        "file_removed" => EventKind::FileRemoved { group, file },
        "holder_online" => {
            let bad = || StoreError::Corrupt(format!("holder event detail {detail:?}"));
            let mut parts = detail.splitn(3, ' ');
            let complete = match parts.next() {
                Some("1") => true,
                Some("0") => false,
                _ => return Err(bad()),
            };
            let key = parts.next().ok_or_else(bad)?;
            let device_key = super::sessions::device_key_from_hex(key)?;
            let addr = parts.next().filter(|a| !a.is_empty()).ok_or_else(bad)?;
            EventKind::HolderOnline {
                group,
                file,
                peer: minitorr_proto::types::PeerInfo {
                    user,
                    addr: addr.to_string(),
                    complete,
                    device_key,
                },
            }
        }
        "holder_gone" => EventKind::HolderGone {
            group,
            file: some(file),
            user,
            addr: some(detail),
        },
        "punch_request" => {
            let bad = || StoreError::Corrupt(format!("punch event detail {detail:?}"));
            let parts: Vec<&str> = detail.split(' ').collect();
            let [nonce, key, from_addr, holder_addr] = parts[..] else {
                return Err(bad());
            };
            let nonce: [u8; 16] = hex::decode(nonce)
                .ok()
                .and_then(|n| n.try_into().ok())
                .ok_or_else(bad)?;
            EventKind::PunchRequest {
                group,
                file,
                holder_addr: holder_addr.to_string(),
                from: minitorr_proto::types::PeerInfo {
                    user,
                    addr: from_addr.to_string(),
                    complete: false,
                    device_key: super::sessions::device_key_from_hex(key)?,
                },
                nonce,
            }
        }
        other => return Err(StoreError::Corrupt(format!("unknown event kind {other:?}"))),
    })
}

/// Record `kind` inside `tx`, visible to the current members of its group plus `also` (members
/// that the same transaction removed). Call it last in a transaction, after every other lock is
/// taken: the `event_seq` row lock is then held only for the commit.
pub(super) async fn emit(
    tx: &mut Transaction<'static, Any>,
    kind: &EventKind,
    also: &[&str],
) -> Result<u64> {
    let (id, group) = insert_event(tx, kind).await?;
    sqlx::query(
        "INSERT INTO event_recipients (event_id, user_name) \
         SELECT $1, user_name FROM group_members WHERE group_name = $2 \
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(group)
    .execute(&mut **tx)
    .await?;
    add_recipients(tx, id, also).await?;
    to_u64(id, "event id")
}

/// Record `kind` inside `tx` for `recipients` only (not the whole group): a punch request
/// concerns one holder.
pub(super) async fn emit_to(
    tx: &mut Transaction<'static, Any>,
    kind: &EventKind,
    recipients: &[&str],
) -> Result<u64> {
    let (id, _) = insert_event(tx, kind).await?;
    add_recipients(tx, id, recipients).await?;
    to_u64(id, "event id")
}

/// The next event id and the event's row (no recipients yet); its id and group.
async fn insert_event<'k>(
    tx: &mut Transaction<'static, Any>,
    kind: &'k EventKind,
) -> Result<(i64, &'k str)> {
    let id: i64 =
        sqlx::query_scalar("UPDATE event_seq SET last = last + 1 WHERE id = 1 RETURNING last")
            .fetch_one(&mut **tx)
            .await?;
    let (k, group, user, file, detail) = columns(kind);
    sqlx::query(
        "INSERT INTO events (id, created, kind, group_name, user_name, file_name, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(unix_now())
    .bind(k)
    .bind(group)
    .bind(user)
    .bind(file)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok((id, group))
}

async fn add_recipients(tx: &mut Transaction<'static, Any>, id: i64, users: &[&str]) -> Result<()> {
    for u in users {
        sqlx::query(
            "INSERT INTO event_recipients (event_id, user_name) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(*u)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Push a `PunchRequest` to `holder`'s user only (issue #14).
    pub async fn punch_request(
        &self,
        group: &str,
        file: &str,
        holder: &minitorr_proto::types::PeerInfo,
        from: minitorr_proto::types::PeerInfo,
        nonce: [u8; 16],
    ) -> Result<u64> {
        let kind = EventKind::PunchRequest {
            group: group.to_string(),
            file: file.to_string(),
            holder_addr: holder.addr.clone(),
            from,
            nonce,
        };
        let mut tx = self.begin().await?;
        let id = emit_to(&mut tx, &kind, &[holder.user.as_str()]).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The id of the last committed event (0 if none ever was).
    pub async fn last_event_id(&self) -> Result<u64> {
        let last: i64 = sqlx::query_scalar("SELECT last FROM event_seq WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        to_u64(last, "event id")
    }

    /// Were events after `after` pruned (so a subscriber resuming there missed some)?
    pub async fn events_lost_after(&self, after: u64) -> Result<bool> {
        let last = self.last_event_id().await?;
        if after >= last {
            return Ok(false);
        }
        let first: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(match first {
            None => true,
            Some(first) => to_u64(first, "event id")? > after + 1,
        })
    }

    /// Up to `limit` events after `after` that `user` may see, oldest first.
    pub async fn events_for(&self, user: &str, after: u64, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT e.id, e.kind, e.group_name, e.user_name, e.file_name, e.created, e.detail \
             FROM events e JOIN event_recipients r ON r.event_id = e.id \
             WHERE r.user_name = $1 AND e.id > $2 ORDER BY e.id LIMIT $3",
        )
        .bind(user)
        .bind(to_i64(after, "event id")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    id: to_u64(r.try_get(0)?, "event id")?,
                    at_unix: to_u64(r.try_get(5)?, "event time")?,
                    kind: from_columns(
                        &r.try_get::<String, _>(1)?,
                        r.try_get(2)?,
                        r.try_get(3)?,
                        r.try_get(4)?,
                        r.try_get(6)?,
                    )?,
                })
            })
            .collect()
    }

    /// Forget events created before `before` (unix seconds); returns how many went.
    pub async fn prune_events(&self, before: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM event_recipients WHERE event_id IN \
             (SELECT id FROM events WHERE created < $1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM events WHERE created < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

//! Groups, memberships and join requests.
//!
//! Checks that decide an outcome (is the caller the owner? is there a pending request?) run
//! inside the same transaction as the change, so two trackers on one database cannot both act
//! on a stale view.

use minitorr_proto::tracker::EventKind;
use minitorr_proto::types::{GroupSummary, Membership};
use sqlx::{Any, Row, Transaction};

use super::{events, Result, Store};

/// The caller's relation to one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub owner: String,
    pub is_member: bool,
    pub has_request: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    NoGroup,
    AlreadyMember,
    AlreadyRequested,
    Requested,
}

/// Result of an owner's decision on a join request (accept or reject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    NoGroup,
    NotOwner,
    NoRequest,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveOutcome {
    NoGroup,
    NotMember,
    /// Left; `new_owner` is set when the owner left and ownership moved.
    Left {
        new_owner: Option<String>,
    },
    /// The caller was the last member: the group, its requests and files are gone.
    GroupDeleted,
}

async fn state_in(
    tx: &mut Transaction<'static, Any>,
    group: &str,
    user: &str,
) -> Result<Option<GroupState>> {
    let row = sqlx::query(
        "SELECT g.owner, \
           (SELECT COUNT(*) FROM group_members m WHERE m.group_name = g.name AND m.user_name = $2), \
           (SELECT COUNT(*) FROM join_requests r WHERE r.group_name = g.name AND r.user_name = $2) \
         FROM group_info g WHERE g.name = $1",
    )
    .bind(group)
    .bind(user)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| {
        Ok(GroupState {
            owner: r.try_get(0)?,
            is_member: r.try_get::<i64, _>(1)? > 0,
            has_request: r.try_get::<i64, _>(2)? > 0,
        })
    })
    .transpose()
}

/// Add `user` to `group` with the next join number (no-op if already a member).
async fn add_member(
    tx: &mut Transaction<'static, Any>,
    group: &str,
    user: &str,
    now: i64,
) -> Result<()> {
    // Bumping the counter locks the group row, so concurrent joins get distinct numbers.
    let seq: i64 = sqlx::query_scalar(
        "UPDATE group_info SET member_seq = member_seq + 1 WHERE name = $1 RETURNING member_seq",
    )
    .bind(group)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO group_members (group_name, user_name, joined, seq) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (group_name, user_name) DO NOTHING",
    )
    .bind(group)
    .bind(user)
    .bind(now)
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Create `group` with `owner` as owner and first member; false if the name is taken.
    pub async fn create_group(&self, group: &str, owner: &str, now: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "INSERT INTO group_info (name, owner, created) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(group)
        .bind(owner)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        add_member(&mut tx, group, owner, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// `user`'s relation to `group`, or `None` if there is no such group.
    pub async fn group_state(&self, group: &str, user: &str) -> Result<Option<GroupState>> {
        let mut tx = self.pool.begin().await?;
        let state = state_in(&mut tx, group, user).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// Every group, by name, as seen by `user`.
    pub async fn list_groups(&self, user: &str) -> Result<Vec<GroupSummary>> {
        let rows = sqlx::query(
            "SELECT g.name, g.owner, \
               (SELECT COUNT(*) FROM group_members m WHERE m.group_name = g.name), \
               (SELECT COUNT(*) FROM files f WHERE f.group_name = g.name), \
               (SELECT COUNT(*) FROM group_members m WHERE m.group_name = g.name AND m.user_name = $1), \
               (SELECT COUNT(*) FROM join_requests r WHERE r.group_name = g.name AND r.user_name = $1) \
             FROM group_info g ORDER BY g.name",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let owner: String = r.try_get(1)?;
                let membership = if owner == user {
                    Membership::Owner
                } else if r.try_get::<i64, _>(4)? > 0 {
                    Membership::Member
                } else if r.try_get::<i64, _>(5)? > 0 {
                    Membership::Pending
                } else {
                    Membership::None
                };
                Ok(GroupSummary {
                    name: r.try_get(0)?,
                    owner,
                    members: r.try_get::<i64, _>(2)? as u32,
                    files: r.try_get::<i64, _>(3)? as u32,
                    membership,
                })
            })
            .collect()
    }

    /// Ask to join `group`.
    pub async fn request_join(&self, group: &str, user: &str, now: i64) -> Result<JoinOutcome> {
        let mut tx = self.begin().await?;
        let outcome = match state_in(&mut tx, group, user).await? {
            None => JoinOutcome::NoGroup,
            Some(s) if s.is_member => JoinOutcome::AlreadyMember,
            Some(s) if s.has_request => JoinOutcome::AlreadyRequested,
            Some(_) => {
                sqlx::query("INSERT INTO join_requests (group_name, user_name, requested) VALUES ($1, $2, $3)")
                    .bind(group)
                    .bind(user)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                JoinOutcome::Requested
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Pending requests of `group`, oldest first (caller checks ownership).
    pub async fn list_requests(&self, group: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT user_name FROM join_requests WHERE group_name = $1 ORDER BY requested, user_name",
        )
        .bind(group)
        .fetch_all(&self.pool)
        .await?)
    }

    /// `owner` accepts (`accept = true`) or rejects `user`'s pending request to join `group`.
    pub async fn decide_request(
        &self,
        group: &str,
        owner: &str,
        user: &str,
        accept: bool,
        now: i64,
    ) -> Result<AcceptOutcome> {
        let mut tx = self.begin().await?;
        let outcome = match state_in(&mut tx, group, owner).await? {
            None => AcceptOutcome::NoGroup,
            Some(s) if s.owner != owner => AcceptOutcome::NotOwner,
            Some(_) => {
                let done = sqlx::query(
                    "DELETE FROM join_requests WHERE group_name = $1 AND user_name = $2",
                )
                .bind(group)
                .bind(user)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    AcceptOutcome::NoRequest
                } else {
                    if accept {
                        add_member(&mut tx, group, user, now).await?;
                    }
                    AcceptOutcome::Done
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// `user` leaves `group`: membership, their shares there, and files nobody shares any more
    /// go; ownership passes to the member who joined first (join order, not clock); the last member
    /// leaving deletes the group (its requests and files cascade).
    pub async fn leave_group(&self, group: &str, user: &str) -> Result<LeaveOutcome> {
        let mut tx = self.begin().await?;
        let state = match state_in(&mut tx, group, user).await? {
            None => return Ok(LeaveOutcome::NoGroup),
            Some(s) if !s.is_member => return Ok(LeaveOutcome::NotMember),
            Some(s) => s,
        };
        let outcome = drop_member(&mut tx, group, user, &state.owner).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// The owner `owner` removes `user` from `group`: exactly what `leave_group` does for
    /// `user` (shares withdrawn, files nobody shares any more dropped), decided in the same
    /// transaction as the ownership check. The owner cannot remove themselves (that is leaving).
    pub async fn remove_member(
        &self,
        group: &str,
        owner: &str,
        user: &str,
    ) -> Result<RemoveMemberOutcome> {
        let mut tx = self.begin().await?;
        let outcome = match state_in(&mut tx, group, owner).await? {
            None => RemoveMemberOutcome::NoGroup,
            Some(s) if s.owner != owner => RemoveMemberOutcome::NotOwner,
            Some(_) if user == owner => RemoveMemberOutcome::IsOwner,
            Some(s) => match state_in(&mut tx, group, user).await? {
                Some(u) if u.is_member => {
                    drop_member(&mut tx, group, user, &s.owner).await?;
                    RemoveMemberOutcome::Removed
                }
                _ => RemoveMemberOutcome::NotMember,
            },
        };
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Result of an owner removing a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveMemberOutcome {
    NoGroup,
    NotOwner,
    /// The owner named themselves.
    IsOwner,
    NotMember,
    Removed,
}

/// Take `user` (a member) out of `group` whose owner is `owner`, recording the revocation
/// events. Event writes come last: they take the event id lock (see `events::emit`).
async fn drop_member(
    tx: &mut Transaction<'static, Any>,
    group: &str,
    user: &str,
    owner: &str,
) -> Result<LeaveOutcome> {
    sqlx::query("DELETE FROM group_members WHERE group_name = $1 AND user_name = $2")
        .bind(group)
        .bind(user)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM shares WHERE group_name = $1 AND user_name = $2")
        .bind(group)
        .bind(user)
        .execute(&mut **tx)
        .await?;
    let next: Option<String> = sqlx::query_scalar(
        "SELECT user_name FROM group_members WHERE group_name = $1 ORDER BY seq, joined, user_name LIMIT 1",
    )
    .bind(group)
    .fetch_optional(&mut **tx)
    .await?;
    let gone = EventKind::MemberGone {
        group: group.to_string(),
        user: user.to_string(),
    };
    let outcome = match next {
        None => {
            sqlx::query("DELETE FROM group_info WHERE name = $1")
                .bind(group)
                .execute(&mut **tx)
                .await?;
            events::emit(tx, &gone, &[user]).await?;
            let deleted = EventKind::GroupDeleted {
                group: group.to_string(),
            };
            events::emit(tx, &deleted, &[user]).await?;
            return Ok(LeaveOutcome::GroupDeleted);
        }
        Some(next) if owner == user => {
            sqlx::query("UPDATE group_info SET owner = $2 WHERE name = $1")
                .bind(group)
                .bind(&next)
                .execute(&mut **tx)
                .await?;
            LeaveOutcome::Left {
                new_owner: Some(next),
            }
        }
        Some(_) => LeaveOutcome::Left { new_owner: None },
    };
    super::files::drop_unshared_files(tx, group).await?;
    events::emit(tx, &gone, &[user]).await?;
    Ok(outcome)
}

impl Store {
    /// Whether `a` and `b` are members of at least one common group (a user shares one with
    /// themself once they are in any group). The relay joins only such pairs.
    pub async fn share_a_group(&self, a: &str, b: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM group_members m1 JOIN group_members m2 \
             ON m1.group_name = m2.group_name WHERE m1.user_name = $1 AND m2.user_name = $2",
        )
        .bind(a)
        .bind(b)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }
}

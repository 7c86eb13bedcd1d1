//! Groups: create, list, join requests, leave.

use minitorr_proto::names;
use minitorr_proto::tracker::{ErrorCode, Response};
use minitorr_proto::types::LeftGroup;

use super::{fail, valid, Caller, Outcome, Service};
use crate::store::{AcceptOutcome, GroupState, JoinOutcome, LeaveOutcome, RemoveMemberOutcome};

impl Service {
    pub(super) async fn create_group(&self, caller: &Caller, group: &str) -> Outcome {
        valid(names::validate_group(group))?;
        let user = &caller.session.user;
        if !self
            .store
            .create_group(group, user, self.now() as i64)
            .await?
        {
            return fail(
                ErrorCode::AlreadyExists,
                format!("group {group} already exists"),
            );
        }
        tracing::info!(user, group, "group created");
        Ok(Response::ok(format!(
            "group {group} created; you are its owner"
        )))
    }

    pub(super) async fn list_groups(&self, caller: &Caller) -> Outcome {
        Ok(Response::Groups(
            self.store.list_groups(&caller.session.user).await?,
        ))
    }

    pub(super) async fn join_group(&self, caller: &Caller, group: &str) -> Outcome {
        valid(names::validate_group(group))?;
        match self
            .store
            .request_join(group, &caller.session.user, self.now() as i64)
            .await?
        {
            JoinOutcome::NoGroup => fail(ErrorCode::NotFound, format!("no group {group}")),
            JoinOutcome::AlreadyMember => fail(
                ErrorCode::AlreadyExists,
                format!("you are already a member of {group}"),
            ),
            JoinOutcome::AlreadyRequested => fail(
                ErrorCode::AlreadyExists,
                format!("you already asked to join {group}"),
            ),
            JoinOutcome::Requested => Ok(Response::ok(format!(
                "asked to join {group}; its owner must accept"
            ))),
        }
    }

    /// The group's state for the caller, or `NotFound`.
    async fn existing_group(
        &self,
        caller: &Caller,
        group: &str,
    ) -> Result<GroupState, super::Fail> {
        match self.store.group_state(group, &caller.session.user).await? {
            Some(s) => Ok(s),
            None => fail(ErrorCode::NotFound, format!("no group {group}")),
        }
    }

    pub(super) async fn list_requests(&self, caller: &Caller, group: &str) -> Outcome {
        valid(names::validate_group(group))?;
        if self.existing_group(caller, group).await?.owner != caller.session.user {
            return fail(ErrorCode::Forbidden, format!("not the owner of {group}"));
        }
        Ok(Response::Requests(self.store.list_requests(group).await?))
    }

    /// Accept or reject `user`'s pending request (owner only).
    pub(super) async fn decide(
        &self,
        caller: &Caller,
        group: &str,
        user: &str,
        accept: bool,
    ) -> Outcome {
        valid(names::validate_group(group))?;
        valid(names::validate_user(user))?;
        let owner = &caller.session.user;
        match self
            .store
            .decide_request(group, owner, user, accept, self.now() as i64)
            .await?
        {
            AcceptOutcome::NoGroup => fail(ErrorCode::NotFound, format!("no group {group}")),
            AcceptOutcome::NotOwner => {
                fail(ErrorCode::Forbidden, format!("not the owner of {group}"))
            }
            AcceptOutcome::NoRequest => fail(
                ErrorCode::NotFound,
                format!("{user} has not asked to join {group}"),
            ),
            AcceptOutcome::Done if accept => {
                tracing::info!(group, user, "join request accepted");
                Ok(Response::ok(format!("{user} is now a member of {group}")))
            }
            AcceptOutcome::Done => Ok(Response::ok(format!(
                "rejected {user}'s request to join {group}"
            ))),
        }
    }

    pub(super) async fn leave_group(&self, caller: &Caller, group: &str) -> Outcome {
        valid(names::validate_group(group))?;
        let user = &caller.session.user;
        match self.store.leave_group(group, user).await? {
            LeaveOutcome::NoGroup => fail(ErrorCode::NotFound, format!("no group {group}")),
            LeaveOutcome::NotMember => fail(
                ErrorCode::NotFound,
                format!("you are not a member of {group}"),
            ),
            LeaveOutcome::Left { new_owner } => {
                if let Some(next) = &new_owner {
                    tracing::info!(
                        group,
                        user,
                        new_owner = next,
                        "owner left; ownership handed over"
                    );
                }
                Ok(Response::LeftGroup(LeftGroup {
                    group: group.to_string(),
                    new_owner,
                    group_deleted: false,
                }))
            }
            LeaveOutcome::GroupDeleted => {
                tracing::info!(group, user, "last member left; group deleted");
                Ok(Response::LeftGroup(LeftGroup {
                    group: group.to_string(),
                    new_owner: None,
                    group_deleted: true,
                }))
            }
        }
    }

    /// The owner removes `user` from `group` (same effect as `user` leaving).
    pub(super) async fn remove_member(&self, caller: &Caller, group: &str, user: &str) -> Outcome {
        valid(names::validate_group(group))?;
        valid(names::validate_user(user))?;
        let owner = &caller.session.user;
        match self.store.remove_member(group, owner, user).await? {
            RemoveMemberOutcome::NoGroup => fail(ErrorCode::NotFound, format!("no group {group}")),
            RemoveMemberOutcome::NotOwner => {
                fail(ErrorCode::Forbidden, format!("not the owner of {group}"))
            }
            RemoveMemberOutcome::IsOwner => fail(
                ErrorCode::BadRequest,
                format!("you own {group}: use leave_group to leave it"),
            ),
            RemoveMemberOutcome::NotMember => fail(
                ErrorCode::NotFound,
                format!("{user} is not a member of {group}"),
            ),
            RemoveMemberOutcome::Removed => {
                tracing::info!(group, user, owner, "member removed by the owner");
                Ok(Response::ok(format!("removed {user} from {group}")))
            }
        }
    }
}

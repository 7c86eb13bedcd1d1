//! Account and group commands that are forwarded to the tracker as they are.

use std::sync::Arc;

use minitorr_proto::control::Response;
use minitorr_proto::tracker::{self, Call};

use super::{unexpected, Daemon, Reply};

fn done(message: impl Into<String>) -> Reply<Response> {
    Ok(Response::Done {
        message: message.into(),
    })
}

impl Daemon {
    pub(super) async fn create_user(&self, user: String, password: String) -> Reply<Response> {
        self.call_with(
            None,
            Call::CreateUser {
                user: user.clone(),
                password,
            },
        )
        .await?;
        done(format!("created user {user}"))
    }

    pub(super) async fn create_group(&self, group: String) -> Reply<Response> {
        self.call(Call::CreateGroup {
            group: group.clone(),
        })
        .await?;
        done(format!("created group {group}; you are its owner"))
    }

    pub(super) async fn join_group(&self, group: String) -> Reply<Response> {
        self.call(Call::JoinGroup {
            group: group.clone(),
        })
        .await?;
        done(format!(
            "asked to join {group}; its owner must accept the request"
        ))
    }

    pub(super) async fn leave_group(self: &Arc<Self>, group: String) -> Reply<Response> {
        let left = match self
            .call(Call::LeaveGroup {
                group: group.clone(),
            })
            .await?
        {
            tracker::Response::LeftGroup(left) => left,
            other => return Err(unexpected(other)),
        };
        // The tracker dropped our shares in the group; stop serving them and forget them.
        self.unshare_group(&group, "left the group");
        self.live.close_group(&group);
        let user = self.current_session()?.user;
        let mut state = self.state.lock().await;
        state.user(&user).shares.retain(|s| s.group != group);
        self.save_state(&state).await;
        Ok(Response::LeftGroup(left))
    }

    pub(super) async fn list_requests(&self, group: String) -> Reply<Response> {
        match self
            .call(Call::ListRequests {
                group: group.clone(),
            })
            .await?
        {
            tracker::Response::Requests(users) => Ok(Response::Requests { group, users }),
            other => Err(unexpected(other)),
        }
    }

    pub(super) async fn accept_request(&self, group: String, user: String) -> Reply<Response> {
        self.call(Call::AcceptRequest {
            group: group.clone(),
            user: user.clone(),
        })
        .await?;
        done(format!("{user} is now a member of {group}"))
    }

    /// Owner only: `user` loses membership like leave_group; the tracker pushes the change to
    /// every member's daemon, whose seeders close `user`'s connections in the group.
    pub(super) async fn remove_member(&self, group: String, user: String) -> Reply<Response> {
        self.call(Call::RemoveMember {
            group: group.clone(),
            user: user.clone(),
        })
        .await?;
        done(format!("removed {user} from {group}"))
    }

    pub(super) async fn reject_request(&self, group: String, user: String) -> Reply<Response> {
        self.call(Call::RejectRequest {
            group: group.clone(),
            user: user.clone(),
        })
        .await?;
        done(format!("rejected {user}'s request to join {group}"))
    }

    pub(super) async fn list_groups(&self) -> Reply<Response> {
        match self.call(Call::ListGroups).await? {
            tracker::Response::Groups(g) => Ok(Response::Groups(g)),
            other => Err(unexpected(other)),
        }
    }

    pub(super) async fn list_files(&self, group: String) -> Reply<Response> {
        match self
            .call(Call::ListFiles {
                group: group.clone(),
            })
            .await?
        {
            tracker::Response::Files(files) => Ok(Response::Files { group, files }),
            other => Err(unexpected(other)),
        }
    }
}

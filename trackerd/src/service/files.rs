//! Files: list, share, stop sharing, get details with peers and a download ticket.

use minitorr_proto::names;
use minitorr_proto::ticket::{Ticket, TicketClaims};
use minitorr_proto::tracker::{ErrorCode, FileDetails, Response};
use minitorr_proto::types::FileMeta;

use super::{fail, valid, Caller, Fail, Outcome, Service};
use crate::store::ShareOutcome;

impl Service {
    /// `NotFound` for an unknown group, `Forbidden` for a non-member.
    async fn require_member(&self, caller: &Caller, group: &str) -> Result<(), Fail> {
        valid(names::validate_group(group))?;
        match self.store.group_state(group, &caller.session.user).await? {
            None => fail(ErrorCode::NotFound, format!("no group {group}")),
            Some(s) if !s.is_member => fail(
                ErrorCode::Forbidden,
                format!("you are not a member of {group}"),
            ),
            Some(_) => Ok(()),
        }
    }

    pub(super) async fn list_files(&self, caller: &Caller, group: &str) -> Outcome {
        self.require_member(caller, group).await?;
        Ok(Response::Files(
            self.store.list_files(group, self.online_since()).await?,
        ))
    }

    pub(super) async fn share(
        &self,
        caller: &Caller,
        group: &str,
        meta: FileMeta,
        complete: bool,
    ) -> Outcome {
        self.require_member(caller, group).await?;
        if let Err(e) = meta.check() {
            return fail(ErrorCode::BadRequest, e);
        }
        if i64::try_from(meta.size).is_err() {
            return fail(
                ErrorCode::BadRequest,
                format!("file size {} is too large", meta.size),
            );
        }
        let user = &caller.session.user;
        let name = &meta.name;
        match self.store.share(group, user, &meta, complete, self.now() as i64).await? {
            // The membership was checked above; this means the user left in between.
            ShareOutcome::NotMember => fail(ErrorCode::Forbidden, format!("you are not a member of {group}")),
            ShareOutcome::DifferentSha1 => {
                fail(ErrorCode::Conflict, format!("{group} already has {name} with a different SHA1"))
            }
            ShareOutcome::DifferentLayout => fail(
                ErrorCode::Conflict,
                format!("{group} already has {name} with the same SHA1 but a different size or piece size"),
            ),
            ShareOutcome::Shared => {
                tracing::debug!(user, group, file = name, complete, "shared");
                Ok(Response::ok(format!("sharing {name} in {group}")))
            }
        }
    }

    pub(super) async fn stop_share(&self, caller: &Caller, group: &str, file: &str) -> Outcome {
        valid(names::validate_group(group))?;
        valid(names::validate_file_name(file))?;
        if !self
            .store
            .stop_share(group, file, &caller.session.user)
            .await?
        {
            return fail(
                ErrorCode::NotFound,
                format!("you are not sharing {file} in {group}"),
            );
        }
        Ok(Response::ok(format!("stopped sharing {file} in {group}")))
    }

    pub(super) async fn get_file(&self, caller: &Caller, group: &str, file: &str) -> Outcome {
        self.require_member(caller, group).await?;
        valid(names::validate_file_name(file))?;
        let Some(meta) = self.store.file(group, file).await? else {
            return fail(ErrorCode::NotFound, format!("{group} has no file {file}"));
        };
        let peers = self
            .store
            .file_peers(group, file, self.online_since(), &caller.token_hash)
            .await?;
        let claims = TicketClaims {
            user: caller.session.user.clone(),
            group: group.to_string(),
            file_name: meta.name.clone(),
            file_sha1: meta.sha1,
            expires_unix: self.now() + self.timing.ticket_ttl_secs,
            // Bound to the asking daemon: only a peer link authenticated with this key can
            // use the ticket.
            device_key: caller.session.device_key,
        };
        let ticket = Ticket::sign(claims, &self.key);
        Ok(Response::File(FileDetails {
            group: group.to_string(),
            meta,
            peers,
            ticket,
        }))
    }
}
